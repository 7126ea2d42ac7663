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

/// A learning-rate scheduler attached to an optimizer, as PyTorch's `torch.optim.lr_scheduler`:
/// creating it sets the optimizer's rates for step 0, and each `step()` (called after
/// `optimizer.step()`) moves them to the next step. Every parameter group follows the schedule
/// from its own base rate (its `learningRate`, else the optimizer's `baseLearningRate`).
///
/// ```swift
/// let scheduler = LRScheduler.cosineAnnealing(optimizer, totalSteps: 1000)
/// for (x, labels) in loader { ...; optimizer.step(); scheduler.step() }
/// ```
/// Steps count optimizer steps (iterations), not epochs: StepLR's period is `stepSize` steps.
public final class LRScheduler {
  /// The optimizer whose rates this sets.
  public let optimizer: any Optimizer
  /// The rate as a function of the step.
  public let schedule: LRSchedule
  /// Steps of linear warm-up before the schedule proper.
  public let warmupSteps: Int
  /// Steps taken (PyTorch's `last_epoch`): the optimizer's rates are those of this step.
  public private(set) var stepCount = 0

  /// Attaches `schedule` (after `warmupSteps` steps of linear warm-up) to `optimizer` and sets
  /// its rates for step 0.
  public init(_ optimizer: any Optimizer, schedule: LRSchedule, warmupSteps: Int = 0) {
    precondition(warmupSteps >= 0, "LRScheduler: warmupSteps must be non-negative")
    self.optimizer = optimizer
    self.schedule = schedule
    self.warmupSteps = warmupSteps
    apply()
  }

  /// PyTorch's `StepLR(optimizer, step_size, gamma)`: the rate times `gamma` every `stepSize` steps.
  public static func stepLR(_ optimizer: any Optimizer, stepSize: Int, gamma: Float = 0.1, warmupSteps: Int = 0) -> LRScheduler {
    LRScheduler(optimizer, schedule: .step(stepSize: stepSize, gamma: gamma), warmupSteps: warmupSteps)
  }

  /// PyTorch's `CosineAnnealingLR(optimizer, T_max, eta_min)` over `totalSteps` steps (warm-up included).
  public static func cosineAnnealing(_ optimizer: any Optimizer, totalSteps: Int, minLR: Float = 0, warmupSteps: Int = 0)
    -> LRScheduler
  {
    LRScheduler(optimizer, schedule: .cosine(totalSteps: totalSteps, minLR: minLR), warmupSteps: warmupSteps)
  }

  /// A linear decay to 0 over `totalSteps` steps (warm-up included): the official ACON recipe,
  /// PyTorch's `LambdaLR(optimizer, lambda step: 1 - step / total)`.
  public static func linearDecay(_ optimizer: any Optimizer, totalSteps: Int, warmupSteps: Int = 0) -> LRScheduler {
    LRScheduler(optimizer, schedule: .linear(totalSteps: totalSteps), warmupSteps: warmupSteps)
  }

  /// The optimizer's default rate for the next `optimizer.step()`.
  public var learningRate: Float { optimizer.learningRate }

  /// Advances one step and sets the optimizer's rates for it.
  public func step() {
    stepCount += 1
    apply()
  }

  /// Sets the step directly (a resumed run) and the optimizer's rates for it.
  public func seek(to step: Int) {
    precondition(step >= 0, "LRScheduler: step must be non-negative")
    stepCount = step
    apply()
  }

  private func apply() { optimizer.applySchedule(schedule, step: stepCount, warmupSteps: warmupSteps) }
}
