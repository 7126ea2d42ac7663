// OptimizerTests: SGD (plain, momentum, dampening, Nesterov, weight decay), Adam and AdamW
// against PyTorch's update rules written out in Double (torch.optim docs' pseudo-code), for
// three steps on a tiny parameter with a different gradient each step; a few hand-computed
// literals; the default parameter groups; and state save/restore.
import NN
import TensorCore
import TestSupport
import XCTest

/// PyTorch's optimizers, transcribed from the torch.optim documentation, in Double.
private enum TorchRules {
  static func sgd(theta0: [Double], grads: [[Double]], lr: Double, momentum: Double = 0, dampening: Double = 0,
                  nesterov: Bool = false, weightDecay: Double = 0) -> [Double] {
    var theta = theta0
    var buf: [Double]? = nil
    for g in grads {
      var d = zip(g, theta).map { $0 + weightDecay * $1 }
      if momentum != 0 {
        if let b = buf {
          buf = zip(b, d).map { momentum * $0 + (1 - dampening) * $1 }
        } else {
          buf = d
        }
        d = nesterov ? zip(d, buf!).map { $0 + momentum * $1 } : buf!
      }
      theta = zip(theta, d).map { $0 - lr * $1 }
    }
    return theta
  }

  static func adam(theta0: [Double], grads: [[Double]], lr: Double, beta1: Double = 0.9, beta2: Double = 0.999,
                   eps: Double = 1e-8, weightDecay: Double = 0, decoupled: Bool) -> [Double] {
    var theta = theta0
    var m = [Double](repeating: 0, count: theta.count), v = m
    for (t, g0) in grads.enumerated() {
      let step = Double(t + 1)
      var g = g0
      if decoupled {
        theta = theta.map { $0 * (1 - lr * weightDecay) }
      } else {
        g = zip(g, theta).map { $0 + weightDecay * $1 }
      }
      m = zip(m, g).map { beta1 * $0 + (1 - beta1) * $1 }
      v = zip(v, g).map { beta2 * $0 + (1 - beta2) * $1 * $1 }
      let bc1 = 1 - pow(beta1, step), bc2 = 1 - pow(beta2, step)
      for i in theta.indices {
        let denom = v[i].squareRoot() / bc2.squareRoot() + eps
        theta[i] -= lr / bc1 * m[i] / denom
      }
    }
    return theta
  }
}

final class OptimizerTests: XCTestCase {
  static let theta0: [Float] = [0.5, -1.5, 2.0, 0.25]
  static let grads: [[Float]] = [[0.1, -0.2, 0.3, 0.0], [-0.4, 0.1, 0.25, -0.05], [0.2, 0.2, -0.1, 0.3]]

  /// A [2, 2] parameter (so it decays by default) and the three gradients applied in turn.
  private func run(_ makeOptimizer: ([(String, Parameter)]) -> Optimizer, steps: Int = 3) -> (Parameter, Optimizer) {
    let p = Parameter(Tensor(shape: [2, 2], values: Self.theta0))
    let opt = makeOptimizer([("w", p)])
    for t in 0..<steps {
      for i in 0..<4 { p.grad[i] = Self.grads[t][i] }
      opt.step()
    }
    return (p, opt)
  }

  private var theta0: [Double] { Self.theta0.map(Double.init) }
  private var grads: [[Double]] { Self.grads.map { $0.map(Double.init) } }

  func testSGDPlainHandComputed() {
    // θ − lr·Σg with lr = 0.1: 0.5 − 0.1·(0.1 − 0.4 + 0.2) = 0.51, −1.5 − 0.1·0.1 = −1.51, ...
    let (p, opt) = run { SGD(parameters: $0, learningRate: 0.1) }
    assertClose(p.value.array, [0.51, -1.51, 1.955, 0.225], rtol: 1e-6, atol: 1e-7)
    XCTAssertEqual(opt.stepCount, 3)
    XCTAssertTrue(opt.state.isEmpty, "no momentum buffers without momentum")
  }

  func testSGDMomentumHandComputed() {
    // Constant gradient 0.5, μ = 0.9, lr = 0.1: buffers 0.5, 0.95, 1.355; θ = 1 − 0.1·2.805.
    let p = Parameter(Tensor(shape: [1, 1], values: [1]))
    let opt = SGD(parameters: [("w", p)], learningRate: 0.1, momentum: 0.9)
    for _ in 0..<3 {
      p.grad[0] = 0.5
      opt.step()
    }
    XCTAssertEqual(p.value[0], 0.7195, accuracy: 1e-6)
  }

  func testSGDVariantsMatchPyTorch() {
    let configs: [(String, Float, Float, Bool, Float)] = [
      ("plain", 0, 0, false, 0), ("momentum", 0.9, 0, false, 0), ("dampening", 0.9, 0.5, false, 0),
      ("nesterov", 0.9, 0, true, 0), ("weight decay", 0, 0, false, 0.1),
      ("momentum + decay", 0.8, 0.1, false, 0.05), ("nesterov + decay", 0.9, 0, true, 0.01),
    ]
    for (name, mu, damp, nesterov, wd) in configs {
      let (p, _) = run {
        SGD(parameters: $0, learningRate: 0.05, momentum: mu, dampening: damp, nesterov: nesterov, weightDecay: wd)
      }
      let expected = TorchRules.sgd(theta0: theta0, grads: grads, lr: 0.05, momentum: Double(mu),
        dampening: Double(damp), nesterov: nesterov, weightDecay: Double(wd))
      assertClose(p.value.array, expected, rtol: 1e-6, atol: 1e-7, name)
    }
  }

  func testAdamHandComputed() {
    // With a constant gradient, m̂ = g and v̂ = g², so each step moves θ by lr·g/(|g| + eps) ≈ lr.
    let p = Parameter(Tensor(shape: [1, 2], values: [1, 1]))
    let opt = Adam(parameters: [("w", p)], learningRate: 0.01)
    for _ in 0..<3 {
      p.grad[0] = 0.5
      p.grad[1] = -2
      opt.step()
    }
    XCTAssertEqual(p.value[0], 0.97, accuracy: 1e-6)
    XCTAssertEqual(p.value[1], 1.03, accuracy: 1e-6)
  }

  func testAdamAndAdamWMatchPyTorch() {
    for wd: Float in [0, 0.1] {
      for decoupled in [false, true] {
        let (p, _) = run {
          Adam(groups: [ParameterGroup(parameters: $0, weightDecay: wd)], learningRate: 0.01, decoupled: decoupled)
        }
        let expected = TorchRules.adam(theta0: theta0, grads: grads, lr: 0.01, weightDecay: Double(wd),
          decoupled: decoupled)
        assertClose(p.value.array, expected, rtol: 1e-5, atol: 1e-6, "\(decoupled ? "AdamW" : "Adam") wd \(wd)")
      }
    }
    // Other betas and eps.
    let (p, _) = run {
      Adam(groups: [ParameterGroup(parameters: $0, weightDecay: 0)], learningRate: 0.1, beta1: 0.5, beta2: 0.9,
        eps: 1e-3)
    }
    let expected = TorchRules.adam(theta0: theta0, grads: grads, lr: 0.1, beta1: 0.5, beta2: 0.9, eps: 1e-3,
      decoupled: false)
    assertClose(p.value.array, expected, rtol: 1e-5, atol: 1e-6, "Adam betas (0.5, 0.9), eps 1e-3")
    // The convenience constructors: Adam without decay, AdamW with PyTorch's default 0.01.
    let (a, _) = run { Adam(parameters: $0, learningRate: 0.01) }
    assertClose(a.value.array, TorchRules.adam(theta0: theta0, grads: grads, lr: 0.01, decoupled: false),
      rtol: 1e-5, atol: 1e-6, "Adam default")
    let (w, _) = run { Adam.adamW(parameters: $0, learningRate: 0.01) }
    assertClose(w.value.array,
      TorchRules.adam(theta0: theta0, grads: grads, lr: 0.01, weightDecay: 0.01, decoupled: true),
      rtol: 1e-5, atol: 1e-6, "AdamW default decay")
  }

  /// A model with every kind of parameter: conv weight/bias, BatchNorm γ/β, and linear layers
  /// with a single output and a single input (weights [1, n] and [n, 1]).
  private func mixedModel() -> Sequential {
    var rng = SeededGenerator(seed: 1)
    return Sequential([
      ("conv", Conv2D(inChannels: 2, outChannels: 3, kernelSize: 3, rng: &rng)),
      ("bn", BatchNorm2D(channels: 3)),
      ("flatten", Flatten()),
      ("fc1", Linear(inFeatures: 3, outFeatures: 1, rng: &rng)),
      ("fc2", Linear(inFeatures: 1, outFeatures: 4, rng: &rng)),
      ("pw", Conv2D(inChannels: 1, outChannels: 1, kernelSize: 1, rng: &rng)),
    ])
  }

  func testDefaultGroupsDecayOnlyMultiDimensionalWeights() {
    let params = mixedModel().namedParameters()
    let groups = ParameterGroup.defaultGroups(params, weightDecay: 5e-4)
    XCTAssertEqual(groups.count, 2)
    XCTAssertEqual(groups[0].weightDecay, 5e-4)
    XCTAssertEqual(groups[1].weightDecay, 0)
    // As in the official ACON/ShuffleNet training code: decay iff the tensor has more than one
    // dimension. Linear weights of shape [1, n] and [n, 1] are matrices too.
    XCTAssertEqual(groups[0].parameters.map(\.0), ["conv.weight", "fc1.weight", "fc2.weight", "pw.weight"])
    XCTAssertEqual(groups[1].parameters.map(\.0), ["conv.bias", "bn.weight", "bn.bias", "fc1.bias", "fc2.bias", "pw.bias"])
  }

  func testWeightDecayTouchesOnlyTheDecayGroup() {
    let model = mixedModel()
    let params = model.namedParameters()
    let before = params.map { $0.1.value.array }
    model.zeroGrad()
    SGD(parameters: params, learningRate: 0.1, weightDecay: 0.5).step()  // θ ← θ·(1 − 0.05) where it decays
    for (i, (name, p)) in params.enumerated() {
      let expected = before[i].map { Double($0) * (p.decays ? 0.95 : 1) }
      assertClose(p.value.array, expected, rtol: 1e-6, atol: 0, name)
    }
  }

  func testSGDStateRoundTrip() {
    let (p, opt) = run({ SGD(parameters: $0, learningRate: 0.05, momentum: 0.9) }, steps: 2)
    let sgd = opt as! SGD
    XCTAssertEqual(sgd.state.map(\.0), ["w.momentum_buffer"])
    // A fresh optimizer on a copy of θ, given the saved buffer, continues identically.
    let q = Parameter(p.value.clone())
    let resumed = SGD(parameters: [("w", q)], learningRate: 0.05, momentum: 0.9)
    XCTAssertTrue(resumed.restore(state: "w.momentum_buffer", from: sgd.state[0].1))
    XCTAssertFalse(resumed.restore(state: "other.momentum_buffer", from: sgd.state[0].1))
    for i in 0..<4 { p.grad[i] = Self.grads[2][i]; q.grad[i] = Self.grads[2][i] }
    sgd.step()
    resumed.step()
    assertBitwiseEqual(q.value.array, p.value.array)
  }

  func testAdamStateRoundTrip() {
    let (p, opt) = run({ Adam.adamW(parameters: $0, learningRate: 0.01, weightDecay: 0.1) }, steps: 2)
    let adam = opt as! Adam
    XCTAssertEqual(adam.state.map(\.0), ["w.exp_avg", "w.exp_avg_sq"])
    let q = Parameter(p.value.clone())
    let resumed = Adam.adamW(parameters: [("w", q)], learningRate: 0.01, weightDecay: 0.1)
    for (name, t) in adam.state { XCTAssertTrue(resumed.restore(state: name, from: t), name) }
    resumed.stepCount = adam.stepCount
    for i in 0..<4 { p.grad[i] = Self.grads[2][i]; q.grad[i] = Self.grads[2][i] }
    adam.step()
    resumed.step()
    assertBitwiseEqual(q.value.array, p.value.array)
  }

  // MARK: - Per-group hyperparameters

  /// Two parameters with fixed per-step gradients, and a copy of each.
  private func twoParameters() -> (a: Parameter, b: Parameter, a2: Parameter, b2: Parameter) {
    let a = Parameter(Tensor(shape: [2, 2], values: Self.theta0))
    let b = Parameter(Tensor(shape: [4], values: [0.3, -1.2, 2, 0.05]))
    return (a, b, Parameter(a.value.clone()), Parameter(b.value.clone()))
  }

  private func setGradients(_ params: [Parameter], step k: Int) {
    for p in params {
      for i in 0..<4 { p.grad[i] = Self.grads[k % Self.grads.count][i] * Float(1 + i % 2) }
    }
  }

  func testSGDGroupsWithTheirOwnHyperparametersEqualSeparateOptimizers() {
    let (a, b, a2, b2) = twoParameters()
    // Group 0 overrides lr, momentum and Nesterov; group 1 overrides lr and dampening only.
    let both = SGD(groups: [
      ParameterGroup(parameters: [("a", a)], weightDecay: 0.1, learningRate: 0.05, momentum: 0.8, nesterov: true),
      ParameterGroup(parameters: [("b", b)], weightDecay: 0, learningRate: 0.2, dampening: 0.3),
    ], learningRate: 0.01, momentum: 0.5)
    let onlyA = SGD(groups: [ParameterGroup(parameters: [("a", a2)], weightDecay: 0.1)], learningRate: 0.05,
      momentum: 0.8, nesterov: true)
    let onlyB = SGD(groups: [ParameterGroup(parameters: [("b", b2)], weightDecay: 0)], learningRate: 0.2,
      momentum: 0.5, dampening: 0.3)
    for k in 0..<4 {
      setGradients([a, b, a2, b2], step: k)
      both.step(); onlyA.step(); onlyB.step()
    }
    assertBitwiseEqual(a.value.array, a2.value.array, "group 0")
    assertBitwiseEqual(b.value.array, b2.value.array, "group 1")
    // And the update is PyTorch's for each group's own values.
    let expectedA = TorchRules.sgd(theta0: Self.theta0.map(Double.init), grads: (0..<4).map { k in
      (0..<4).map { Double(Self.grads[k % Self.grads.count][$0]) * Double(1 + $0 % 2) } },
      lr: Double(Float(0.05)), momentum: Double(Float(0.8)), nesterov: true, weightDecay: Double(Float(0.1)))
    assertClose(a.value.array, expectedA, rtol: 1e-5, atol: 1e-6, "group 0 against PyTorch's rule")
  }

  func testAdamGroupsWithTheirOwnLearningRateAndBetasEqualSeparateOptimizers() {
    for decoupled in [false, true] {
      let (a, b, a2, b2) = twoParameters()
      let both = Adam(groups: [
        ParameterGroup(parameters: [("a", a)], weightDecay: 0.1, learningRate: 0.05, betas: (0.5, 0.9)),
        ParameterGroup(parameters: [("b", b)], weightDecay: 0.01, eps: 1e-3),
      ], learningRate: 0.002, beta1: 0.8, beta2: 0.99, decoupled: decoupled)
      let onlyA = Adam(groups: [ParameterGroup(parameters: [("a", a2)], weightDecay: 0.1)], learningRate: 0.05,
        beta1: 0.5, beta2: 0.9, decoupled: decoupled)
      let onlyB = Adam(groups: [ParameterGroup(parameters: [("b", b2)], weightDecay: 0.01)], learningRate: 0.002,
        beta1: 0.8, beta2: 0.99, eps: 1e-3, decoupled: decoupled)
      for k in 0..<4 {
        setGradients([a, b, a2, b2], step: k)
        both.step(); onlyA.step(); onlyB.step()
      }
      assertBitwiseEqual(a.value.array, a2.value.array, "group 0, decoupled \(decoupled)")
      assertBitwiseEqual(b.value.array, b2.value.array, "group 1, decoupled \(decoupled)")
    }
  }

  func testScheduleScalesEachGroupsOwnBaseRate() {
    let (a, b, a2, b2) = twoParameters()
    let both = SGD(groups: [
      ParameterGroup(parameters: [("a", a)], weightDecay: 0, learningRate: 0.4, momentum: 0.9),
      ParameterGroup(parameters: [("b", b)], weightDecay: 0),
    ], learningRate: 0.1)
    let onlyA = SGD(groups: [ParameterGroup(parameters: [("a", a2)], weightDecay: 0)], learningRate: 0.4, momentum: 0.9)
    let onlyB = SGD(groups: [ParameterGroup(parameters: [("b", b2)], weightDecay: 0)], learningRate: 0.1)
    let schedule = LRSchedule.linear(totalSteps: 6)
    for k in 0..<6 {
      for opt in [both, onlyA, onlyB] as [Optimizer] { opt.applySchedule(schedule, step: k, warmupSteps: 2) }
      // Warm-up 1/2, 2/2, then 1 − t/4 for t = 0...3: each group's own base times the factor.
      let factor: Float = k < 2 ? Float(k + 1) / 2 : 1 - Float(k - 2) / 4
      XCTAssertEqual(both.learningRate(group: 0), 0.4 * factor, accuracy: 1e-7, "step \(k)")
      XCTAssertEqual(both.learningRate(group: 1), 0.1 * factor, accuracy: 1e-7, "step \(k)")
      XCTAssertEqual(both.learningRate, 0.1 * factor, accuracy: 1e-7)
      setGradients([a, b, a2, b2], step: k)
      both.step(); onlyA.step(); onlyB.step()
    }
    assertBitwiseEqual(a.value.array, a2.value.array, "group with its own rate")
    assertBitwiseEqual(b.value.array, b2.value.array, "group on the default rate")
    XCTAssertEqual(both.baseLearningRate, 0.1)
  }
}

final class ScheduleTests: XCTestCase {
  func testStepSchedule() {
    let s = LRSchedule.step(stepSize: 3, gamma: 0.1)
    let rates = (0..<8).map { s.learningRate(base: 0.1, step: $0) }
    assertClose(rates, [0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001], rtol: 1e-6, atol: 0)
  }

  func testCosineSchedule() {
    let s = LRSchedule.cosine(totalSteps: 10, minLR: 0.001)
    let expected = [0, 2, 5, 8, 10, 12].map { t -> Double in
      0.001 + (0.1 - 0.001) * (1 + cos(Double.pi * Double(min(t, 10)) / 10)) / 2
    }
    let rates = [0, 2, 5, 8, 10, 12].map { s.learningRate(base: 0.1, step: $0) }
    assertClose(rates, expected, rtol: 1e-5, atol: 1e-7)
    XCTAssertEqual(rates[0], 0.1, accuracy: 1e-7)
    XCTAssertEqual(rates[2], 0.0505, accuracy: 1e-6, "halfway: the midpoint of base and minLR")
    XCTAssertEqual(rates[5], 0.001, accuracy: 1e-7, "held at minLR after totalSteps")
  }

  func testLinearWarmupThenSchedule() {
    // 4 warm-up steps: base·1/4, 2/4, 3/4, 4/4; then the schedule starts from its own step 0.
    let c = LRSchedule.constant
    assertClose((0..<6).map { c.learningRate(base: 0.2, step: $0, warmupSteps: 4) }, [0.05, 0.1, 0.15, 0.2, 0.2, 0.2],
      rtol: 1e-6, atol: 0)
    let s = LRSchedule.step(stepSize: 2, gamma: 0.5)
    assertClose((3..<9).map { s.learningRate(base: 0.2, step: $0, warmupSteps: 4) }, [0.2, 0.2, 0.2, 0.1, 0.1, 0.05],
      rtol: 1e-6, atol: 0)
    // Cosine over totalSteps = 14 including 4 warm-up steps: 10 cosine steps after warm-up.
    let cos = LRSchedule.cosine(totalSteps: 14, minLR: 0)
    XCTAssertEqual(cos.learningRate(base: 0.2, step: 4, warmupSteps: 4), 0.2, accuracy: 1e-7)
    XCTAssertEqual(cos.learningRate(base: 0.2, step: 9, warmupSteps: 4), 0.1, accuracy: 1e-6)
    XCTAssertEqual(cos.learningRate(base: 0.2, step: 14, warmupSteps: 4), 0, accuracy: 1e-7)
  }

  func testStepScheduleWithStepSizeAndGamma() {
    // StepLR(step_size=2, gamma=0.5) in epochs of 3 steps: the rate halves every 6 steps.
    let s = LRSchedule.step(stepSize: 6, gamma: 0.5)
    let rates = (0..<14).map { s.learningRate(base: 0.8, step: $0) }
    let expected = (0..<14).map { 0.8 * pow(0.5, Double($0 / 6)) }
    assertClose(rates, expected, rtol: 1e-7, atol: 0)
  }

  func testLinearScheduleDecaysToZero() {
    // LambdaLR(lambda t: 1 − t/T) with T = 5: 1, 0.8, 0.6, 0.4, 0.2, then 0 from T on.
    let s = LRSchedule.linear(totalSteps: 5)
    let rates = (0..<8).map { s.learningRate(base: 0.5, step: $0) }
    assertClose(rates, [0.5, 0.4, 0.3, 0.2, 0.1, 0, 0, 0], rtol: 1e-6, atol: 0)
    // With 2 warm-up steps: 0.25, 0.5, then 1 − t/3 over the 3 remaining steps.
    let w = (0..<6).map { s.learningRate(base: 0.5, step: $0, warmupSteps: 2) }
    assertClose(w, [0.25, 0.5, 0.5, 0.5 * 2 / 3, 0.5 / 3, 0], rtol: 1e-6, atol: 1e-8)
  }
}
