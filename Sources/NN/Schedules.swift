// Schedules: learning rate as a function of the step (0-based), as PyTorch's StepLR,
// CosineAnnealingLR, LambdaLR with a linear decay to 0 (the official ACON recipe) and a linear
// warm-up compute it per iteration.
import TensorCore

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// A learning-rate schedule over optimizer steps. Rates are multiples of a base rate, so one
/// schedule serves every parameter group (each scales its own base rate, as PyTorch's
/// schedulers scale each group's `initial_lr`).
public enum LRSchedule: Sendable, Equatable {
  /// The base rate throughout.
  case constant
  /// `base · gamma^⌊step / stepSize⌋` (StepLR; `stepSize` in steps).
  case step(stepSize: Int, gamma: Float)
  /// `minLR + (base − minLR)·(1 + cos(π·step/totalSteps))/2`, held at minLR afterwards (CosineAnnealingLR).
  case cosine(totalSteps: Int, minLR: Float)
  /// `base · (1 − step/totalSteps)`, 0 from `totalSteps` on (LambdaLR with
  /// `lambda step: 1 - step/total`, the official ACON training recipe).
  case linear(totalSteps: Int)

  /// The rate at `step` (0-based) for base rate `base`, after `warmupSteps` steps of linear
  /// warm-up from base/warmupSteps to base; the schedule proper starts after the warm-up, at its
  /// own step 0, and `totalSteps` (cosine, linear) counts the warm-up: the schedule proper spans
  /// `totalSteps − warmupSteps` steps.
  public func learningRate(base: Float, step: Int, warmupSteps: Int = 0) -> Float {
    if step < warmupSteps { return base * Float(step + 1) / Float(warmupSteps) }
    let t = step - warmupSteps
    switch self {
    case .constant:
      return base
    case let .step(stepSize, gamma):
      return base * powf(gamma, Float(t / Swift.max(1, stepSize)))
    case let .cosine(totalSteps, minLR):
      let total = Swift.max(1, totalSteps - warmupSteps)
      let f = Float(Swift.min(t, total)) / Float(total)
      return minLR + (base - minLR) * (1 + cosf(Float.pi * f)) / 2
    case let .linear(totalSteps):
      let total = Swift.max(1, totalSteps - warmupSteps)
      return base * Swift.max(0, 1 - Float(t) / Float(total))
    }
  }
}
