// Schedules: learning rate as a function of the step (0-based), as PyTorch's StepLR,
// CosineAnnealingLR and a linear warm-up compute it per iteration.
import TensorCore

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// A learning-rate schedule over optimizer steps.
public enum LRSchedule: Sendable, Equatable {
  /// The base rate throughout.
  case constant
  /// `base · gamma^⌊step / stepSize⌋` (StepLR).
  case step(stepSize: Int, gamma: Float)
  /// `minLR + (base − minLR)·(1 + cos(π·step/totalSteps))/2`, held at minLR afterwards (CosineAnnealingLR).
  case cosine(totalSteps: Int, minLR: Float)

  /// The rate at `step` (0-based) for base rate `base`, after `warmupSteps` steps of linear
  /// warm-up from base/warmupSteps to base; the schedule proper starts after the warm-up.
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
    }
  }
}
