// Optimizers: SGD (momentum, dampening, Nesterov, weight decay), Adam and AdamW, with
// PyTorch's exact update rules, over parameter groups. By default weights with more than one
// dimension decay and everything else (biases, BatchNorm, ACON's p1, p2, β) does not.
import TensorCore

/// A set of parameters sharing hyperparameters, as one of PyTorch's param groups: a value set
/// here overrides the optimizer's default for these parameters; nil takes the default.
public struct ParameterGroup {
  /// Named parameters.
  public var parameters: [(String, Parameter)]
  /// L2 penalty (SGD, Adam) or decoupled decay (AdamW).
  public var weightDecay: Float
  /// This group's base learning rate (PyTorch's `initial_lr`); nil: the optimizer's.
  /// A schedule scales each group's own base rate (`Optimizer.applySchedule`).
  public var learningRate: Float?
  /// SGD's momentum μ for this group; nil: the optimizer's.
  public var momentum: Float?
  /// SGD's dampening for this group; nil: the optimizer's.
  public var dampening: Float?
  /// SGD's Nesterov switch for this group; nil: the optimizer's.
  public var nesterov: Bool?
  /// Adam's (β1, β2) for this group; nil: the optimizer's.
  public var betas: (Float, Float)?
  /// Adam's eps for this group; nil: the optimizer's.
  public var eps: Float?

  /// A group of named parameters with one weight decay and, optionally, its own learning
  /// rate, SGD momentum/dampening/Nesterov and Adam betas/eps (nil: the optimizer's defaults).
  public init(parameters: [(String, Parameter)], weightDecay: Float, learningRate: Float? = nil,
    momentum: Float? = nil, dampening: Float? = nil, nesterov: Bool? = nil, betas: (Float, Float)? = nil,
    eps: Float? = nil) {
    self.parameters = parameters
    self.weightDecay = weightDecay
    self.learningRate = learningRate
    self.momentum = momentum
    self.dampening = dampening
    self.nesterov = nesterov
    self.betas = betas
    self.eps = eps
  }

  /// Two groups: parameters with `decays` set get `weightDecay`, the others none
  /// (the grouping of the official ACON training code).
  public static func defaultGroups(_ params: [(String, Parameter)], weightDecay: Float) -> [ParameterGroup] {
    [ParameterGroup(parameters: params.filter { $0.1.decays }, weightDecay: weightDecay),
     ParameterGroup(parameters: params.filter { !$0.1.decays }, weightDecay: 0)]
  }
}

/// A first-order optimizer over parameter groups.
public protocol Optimizer: AnyObject {
  /// The learning rate used by the next `step()` for groups without their own rate.
  var learningRate: Float { get set }
  /// The default base rate given at creation (the `initial_lr` of groups without their own).
  var baseLearningRate: Float { get }
  /// The groups, in order.
  var groups: [ParameterGroup] { get }
  /// The rate the next `step()` uses for each group that has its own `learningRate`, by group
  /// index (entries of groups without one are unused). Starts at each group's own rate.
  var groupLearningRates: [Float] { get set }
  /// Steps taken so far.
  var stepCount: Int { get set }
  /// Updates every parameter from its gradient.
  func step()
  /// Per-parameter state (momentum buffers, moments) with names such as
  /// `conv1.weight.exp_avg`, for checkpoints.
  var state: [(String, Tensor)] { get }
  /// Restores one tensor of `state` by its name; false when no parameter owns that name and shape.
  func restore(state name: String, from t: Tensor) -> Bool
}

extension Optimizer {
  /// Sets every group's rate for the step `step` (0-based) of `schedule`, as PyTorch's
  /// schedulers do: each group's rate is the schedule applied to its own base rate (its
  /// `learningRate`, else `baseLearningRate`), and `learningRate` to `baseLearningRate`.
  public func applySchedule(_ schedule: LRSchedule, step: Int, warmupSteps: Int = 0) {
    learningRate = schedule.learningRate(base: baseLearningRate, step: step, warmupSteps: warmupSteps)
    for (i, g) in groups.enumerated() {
      if let own = g.learningRate {
        groupLearningRates[i] = schedule.learningRate(base: own, step: step, warmupSteps: warmupSteps)
      }
    }
  }

  /// The rate the next `step()` uses for group `index`.
  public func learningRate(group index: Int) -> Float {
    groups[index].learningRate == nil ? learningRate : groupLearningRates[index]
  }
}

/// Stochastic gradient descent, as `torch.optim.SGD`:
///
/// ```
/// g = ∇ + wd·θ
/// b = g (first step), else b = μ·b + (1 − dampening)·g
/// g = nesterov ? g + μ·b : b          (when μ ≠ 0)
/// θ = θ − lr·g
/// ```
/// Each group may set its own lr, μ, dampening and Nesterov switch (`ParameterGroup`).
public final class SGD: Optimizer {
  /// The learning rate of the next step, for groups without their own.
  public var learningRate: Float
  /// The default rate given at creation.
  public let baseLearningRate: Float
  /// The next step's rate of each group that has its own (see `Optimizer`).
  public var groupLearningRates: [Float]
  /// Steps taken so far.
  public var stepCount = 0
  /// μ, for groups without their own.
  public let momentum: Float
  /// Dampening of the momentum update (0: none), for groups without their own.
  public let dampening: Float
  /// Nesterov momentum, for groups without their own setting.
  public let nesterov: Bool
  /// The groups.
  public let groups: [ParameterGroup]
  private var buffers: [ObjectIdentifier: Tensor] = [:]

  /// - Parameters: groups (their own values override the defaults that follow); lr; momentum;
  ///   dampening; nesterov (needs momentum > 0, dampening 0, in every group that uses it).
  public init(groups: [ParameterGroup], learningRate: Float, momentum: Float = 0, dampening: Float = 0, nesterov: Bool = false) {
    precondition(learningRate >= 0 && groups.allSatisfy { ($0.learningRate ?? 0) >= 0 },
      "SGD: learning rates must be non-negative")
    for (i, g) in groups.enumerated() where g.nesterov ?? nesterov {
      precondition((g.momentum ?? momentum) > 0 && (g.dampening ?? dampening) == 0,
        "SGD: Nesterov momentum requires a momentum and zero dampening (group \(i))")
    }
    self.groups = groups
    self.learningRate = learningRate
    self.baseLearningRate = learningRate
    self.groupLearningRates = groups.map { $0.learningRate ?? learningRate }
    self.momentum = momentum
    self.dampening = dampening
    self.nesterov = nesterov
  }

  /// SGD over `parameters` in the default decay groups.
  public convenience init(parameters: [(String, Parameter)], learningRate: Float, momentum: Float = 0,
    dampening: Float = 0, nesterov: Bool = false, weightDecay: Float = 0) {
    self.init(groups: ParameterGroup.defaultGroups(parameters, weightDecay: weightDecay), learningRate: learningRate,
      momentum: momentum, dampening: dampening, nesterov: nesterov)
  }

  /// One update of every parameter from its gradient.
  public func step() {
    stepCount += 1
    for (gi, group) in groups.enumerated() {
      let wd = group.weightDecay, lr = learningRate(group: gi)
      let mu = group.momentum ?? momentum, damp = group.dampening ?? dampening, nesterov = group.nesterov ?? self.nesterov
      for (_, p) in group.parameters {
        let theta = p.value.data, grad = p.grad.data, n = p.value.count
        if mu == 0 {
          for i in 0..<n { theta[i] -= lr * (grad[i] + wd * theta[i]) }
          continue
        }
        let id = ObjectIdentifier(p)
        if let b = buffers[id] {
          let bd = b.data
          for i in 0..<n {
            let g = grad[i] + wd * theta[i]
            bd[i] = mu * bd[i] + (1 - damp) * g
            theta[i] -= lr * (nesterov ? g + mu * bd[i] : bd[i])
          }
        } else {
          let b = Tensor(zeros: p.shape)
          let bd = b.data
          for i in 0..<n {
            let g = grad[i] + wd * theta[i]
            bd[i] = g
            theta[i] -= lr * (nesterov ? g + mu * bd[i] : bd[i])
          }
          buffers[id] = b
        }
      }
    }
  }

  /// Momentum buffers named `NAME.momentum_buffer`, each of its parameter's shape.
  public var state: [(String, Tensor)] {
    groups.flatMap { $0.parameters }.compactMap { name, p in
      buffers[ObjectIdentifier(p)].map { (name + ".momentum_buffer", $0) }
    }
  }

  /// Restores a momentum buffer saved under `name + ".momentum_buffer"`.
  public func restore(state name: String, from t: Tensor) -> Bool {
    for (pn, p) in groups.flatMap({ $0.parameters }) where pn + ".momentum_buffer" == name && p.shape == t.shape {
      buffers[ObjectIdentifier(p)] = t.clone()
      return true
    }
    return false
  }
}

/// Adam (`torch.optim.Adam`) or, with `decoupled`, AdamW (`torch.optim.AdamW`):
///
/// ```
/// Adam:  g = ∇ + wd·θ            AdamW: θ = θ·(1 − lr·wd), g = ∇
/// m = β1·m + (1 − β1)·g;  v = β2·v + (1 − β2)·g²
/// θ = θ − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + eps)
/// ```
/// Each group may set its own lr, betas and eps (`ParameterGroup`).
public final class Adam: Optimizer {
  /// The learning rate of the next step, for groups without their own.
  public var learningRate: Float
  /// The default rate given at creation.
  public let baseLearningRate: Float
  /// The next step's rate of each group that has its own (see `Optimizer`).
  public var groupLearningRates: [Float]
  /// Steps taken so far (t in the bias corrections).
  public var stepCount = 0
  /// Decay of the first moment (0.9).
  public let beta1: Float
  /// Decay of the second moment (0.999).
  public let beta2: Float
  /// Added to the denominator (1e-8).
  public let eps: Float
  /// AdamW's decoupled weight decay instead of an L2 term.
  public let decoupled: Bool
  /// The groups.
  public let groups: [ParameterGroup]
  private var moments: [ObjectIdentifier: (Tensor, Tensor)] = [:]

  /// - Parameters: groups; lr (1e-3); betas (0.9, 0.999); eps (1e-8); decoupled (AdamW).
  public init(groups: [ParameterGroup], learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999,
    eps: Float = 1e-8, decoupled: Bool = false) {
    precondition(learningRate >= 0 && eps >= 0 && (0..<1).contains(beta1) && (0..<1).contains(beta2),
      "Adam: invalid hyperparameters")
    for (i, g) in groups.enumerated() {
      let (b1, b2) = g.betas ?? (beta1, beta2)
      precondition((g.learningRate ?? 0) >= 0 && (g.eps ?? 0) >= 0 && (0..<1).contains(b1) && (0..<1).contains(b2),
        "Adam: invalid hyperparameters in group \(i)")
    }
    self.groups = groups
    self.learningRate = learningRate
    self.baseLearningRate = learningRate
    self.groupLearningRates = groups.map { $0.learningRate ?? learningRate }
    self.beta1 = beta1
    self.beta2 = beta2
    self.eps = eps
    self.decoupled = decoupled
  }

  /// Adam over `parameters` in the default decay groups (weight decay 0, as PyTorch's Adam).
  public convenience init(parameters: [(String, Parameter)], learningRate: Float = 1e-3, weightDecay: Float = 0) {
    self.init(groups: ParameterGroup.defaultGroups(parameters, weightDecay: weightDecay), learningRate: learningRate)
  }

  /// AdamW over `parameters` in the default decay groups (weight decay 0.01, as PyTorch's AdamW).
  public static func adamW(parameters: [(String, Parameter)], learningRate: Float = 1e-3, weightDecay: Float = 0.01) -> Adam {
    Adam(groups: ParameterGroup.defaultGroups(parameters, weightDecay: weightDecay), learningRate: learningRate, decoupled: true)
  }

  /// One update of every parameter from its gradient.
  public func step() {
    stepCount += 1
    let t = Float(stepCount)
    for (gi, group) in groups.enumerated() {
      let (b1, b2) = group.betas ?? (beta1, beta2)
      let eps = group.eps ?? self.eps, lr = learningRate(group: gi)
      let bc1 = 1 - powf(b1, t), bc2 = 1 - powf(b2, t)
      let stepSize = lr / bc1, bc2Sqrt = bc2.squareRoot()
      let wd = group.weightDecay
      for (_, p) in group.parameters {
        let id = ObjectIdentifier(p)
        let (m, v) = moments[id] ?? (Tensor(zeros: p.shape), Tensor(zeros: p.shape))
        moments[id] = (m, v)
        let theta = p.value.data, grad = p.grad.data, md = m.data, vd = v.data
        for i in 0..<p.value.count {
          var g = grad[i]
          if decoupled { theta[i] *= 1 - lr * wd } else { g += wd * theta[i] }
          md[i] = b1 * md[i] + (1 - b1) * g
          vd[i] = b2 * vd[i] + (1 - b2) * g * g
          theta[i] -= stepSize * md[i] / (vd[i].squareRoot() / bc2Sqrt + eps)
        }
      }
    }
  }

  /// Moments named `NAME.exp_avg` and `NAME.exp_avg_sq`, each of its parameter's shape.
  public var state: [(String, Tensor)] {
    groups.flatMap { $0.parameters }.flatMap { name, p -> [(String, Tensor)] in
      guard let (m, v) = moments[ObjectIdentifier(p)] else { return [] }
      return [(name + ".exp_avg", m), (name + ".exp_avg_sq", v)]
    }
  }

  /// Restores moments saved under `name.exp_avg` and `name.exp_avg_sq`.
  public func restore(state name: String, from t: Tensor) -> Bool {
    for (pn, p) in groups.flatMap({ $0.parameters }) where p.shape == t.shape {
      let id = ObjectIdentifier(p)
      let pair = moments[id] ?? (Tensor(zeros: p.shape), Tensor(zeros: p.shape))
      if name == pn + ".exp_avg" { pair.0.copy(from: t); moments[id] = pair; return true }
      if name == pn + ".exp_avg_sq" { pair.1.copy(from: t); moments[id] = pair; return true }
    }
    return false
  }
}

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif
