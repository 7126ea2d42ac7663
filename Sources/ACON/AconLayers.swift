// ACON layers with per-channel parameters: AconA (Swish with a learnable β), AconB (a
// learnable lower slope p) and AconC (learnable p1, p2, β), over the fused kernels in
// AconKernels.swift. Only the input x is kept for the backward pass; σ is recomputed.
//
// Shapes: x, y [N, C, H, W] or [N, C] (after a linear layer, H = W = 1);
// p1, p2, β [1, C, 1, 1] as in the reference PyTorch code.
import NN
import TensorCore

/// The ACON family's per-channel activation
///
/// ```
/// y = (p1 − p2)·x · σ(β·(p1 − p2)·x) + p2·x
/// ```
/// with p1, p2 and β of shape `[1, C, 1, 1]`, each either learnable or fixed. `AconA`, `AconB`
/// and `AconC` choose which are learnable; a variant of your own picks its own values and
/// learnable set, e.g. ACON-C with a fixed β = 1:
///
/// ```swift
/// let c = 16
/// let fixedBeta = AconActivation(channels: c,
///   p1: Tensor(shape: [1, c, 1, 1], repeating: 1), p2: Tensor(shape: [1, c, 1, 1], repeating: 0.25),
///   beta: Tensor(shape: [1, c, 1, 1], repeating: 1), learnable: ["p1", "p2"])   // state_dict: p1, p2
/// ```
/// The class is open: a subclass can add behaviour around `forward` and `backward`.
open class AconActivation: Module {
  /// Channels C.
  public let channels: Int
  /// p1, p2 and β, `[1, C, 1, 1]` each (a learnable one is its parameter's value).
  public let p1: Tensor, p2: Tensor, beta: Tensor
  // Gradients of fixed coefficients land in scratch and are dropped.
  let dp1: Tensor, dp2: Tensor, dbeta: Tensor
  private let learnable: [(String, Parameter)]
  private var output: Tensor?
  private var inputGrad: Tensor?
  private var input: Tensor?

  /// An ACON activation over `channels` channels with the given coefficients, each of shape
  /// `[1, C, 1, 1]` (the tensors are used, not copied); those named in `learnable` (`"p1"`,
  /// `"p2"`, `"beta"`) are parameters, with those state_dict names and no weight decay, the
  /// others stay fixed.
  public init(channels: Int, p1: Tensor, p2: Tensor, beta: Tensor, learnable names: Set<String>) {
    precondition(channels > 0, "ACON: channels must be positive")
    for (name, t) in [("p1", p1), ("p2", p2), ("beta", beta)] {
      precondition(t.shape == [1, channels, 1, 1], "ACON: \(name) must have shape [1, \(channels), 1, 1], got \(t.shape)")
    }
    precondition(names.isSubset(of: ["p1", "p2", "beta"]), "ACON: learnable names must be among p1, p2, beta, got \(names.sorted())")
    self.channels = channels
    var params: [(String, Parameter)] = []
    func coefficient(_ name: String, _ t: Tensor) -> (Tensor, Tensor) {
      if names.contains(name) {
        let p = Parameter(t, decays: false)
        params.append((name, p))
        return (p.value, p.grad)
      }
      return (t, Tensor(zeros: t.shape))
    }
    (self.p1, dp1) = coefficient("p1", p1)
    (self.p2, dp2) = coefficient("p2", p2)
    (self.beta, dbeta) = coefficient("beta", beta)
    learnable = params
  }

  open override var localParameters: [(String, Parameter)] { learnable }

  open override func outputShape(for s: [Int]) throws -> [Int] {
    _ = try channelLayout(s, channels: channels, layer: typeName)
    return s
  }

  open override func forward(_ x: Tensor) throws -> Tensor {
    let (n, hw) = try channelLayout(x.shape, channels: channels, layer: typeName)
    let y = reuseOutput(&output, shape: x.shape)
    input = x
    AconKernels.forward(x: x.data, y: y.data, n: n, c: channels, hw: hw, p1: p1.data, p2: p2.data,
      beta: beta.data, betaLayout: .perChannel)
    return y
  }

  /// Per-channel coefficients: the same on a channels-major batch (see
  /// `Module.runsChannelsMajor`). A subclass whose coefficients depend on the sample overrides
  /// this with `false`.
  open override var runsChannelsMajor: Bool { true }

  /// Backward reads the saved input (and p1, p2, β), not the output. A subclass whose backward
  /// reads its output overrides this with `true`.
  open override var backwardReadsOutput: Bool { false }

  open override func backward(_ dy: Tensor) throws -> Tensor {
    guard let x = input, dy.shape == x.shape else {
      throw backwardError(layer: typeName + ".backward",
        expected: input.map { Shape.text($0.shape) }, got: dy.shape)
    }
    let dx = reuseInputGradient(&inputGrad, shape: x.shape)
    let (n, hw) = (x.shape[0], x.shape.count == 4 ? x.shape[2] * x.shape[3] : 1)
    AconKernels.backward(x: x.data, dy: dy.data, dx: propagatesInputGradient ? dx.data : nil,
      n: n, c: channels, hw: hw, p1: p1.data, p2: p2.data, beta: beta.data, betaLayout: .perChannel,
      dp1: dp1.data, dp2: dp2.data, dbeta: dbeta.data)
    return dx
  }
}

/// ACON-C, the general form: learnable p1, p2 and β per channel.
///
/// ```
/// y = (p1 − p2)·x · σ(β·(p1 − p2)·x) + p2·x
/// ```
/// Parameters `p1`, `p2` ~ N(0, 1) and `beta` = 1, each `[1, C, 1, 1]` (the reference `acon.py`).
/// Input and output `[N, C, H, W]` or `[N, C]`.
public final class AconC: AconActivation {
  /// - Parameters: channels C; rng draws p1 and p2.
  public init(channels: Int, rng: inout SeededGenerator) {
    let (p1, p2) = aconSlopes(channels: channels, rng: &rng)
    super.init(channels: channels, p1: p1.value, p2: p2.value, beta: Tensor(shape: [1, channels, 1, 1], repeating: 1),
      learnable: ["p1", "p2", "beta"])
  }
  public override var typeName: String { "AconC" }
}

/// ACON-A: Swish with a learnable switching factor, `y = x·σ(β·x)` (p1 = 1, p2 = 0 fixed).
/// Parameter `beta` `[1, C, 1, 1]`, initialised to 1. Input and output `[N, C, H, W]` or `[N, C]`.
public final class AconA: AconActivation {
  /// - Parameters: channels C.
  public init(channels: Int) {
    let s = [1, channels, 1, 1]
    super.init(channels: channels, p1: Tensor(shape: s, repeating: 1), p2: Tensor(zeros: s),
      beta: Tensor(shape: s, repeating: 1), learnable: ["beta"])
  }
  public override var typeName: String { "AconA" }
}

/// ACON-B: `y = (1 − p)·x · σ(β·(1 − p)·x) + p·x` (p1 = 1 fixed, p2 = p learnable).
/// Parameters `p2` (the slope p, ~ N(0, 1)) and `beta` (= 1), each `[1, C, 1, 1]`.
/// Input and output `[N, C, H, W]` or `[N, C]`.
public final class AconB: AconActivation {
  /// - Parameters: channels C; rng draws p.
  public init(channels: Int, rng: inout SeededGenerator) {
    let s = [1, channels, 1, 1]
    let p = Tensor(zeros: s)
    p.fillNormal(using: &rng)
    super.init(channels: channels, p1: Tensor(shape: s, repeating: 1), p2: p,
      beta: Tensor(shape: s, repeating: 1), learnable: ["p2", "beta"])
  }
  public override var typeName: String { "AconB" }
}

/// The slopes p1 and p2 of an ACON layer as acon.py draws them: p1 then p2, each `[1, C, 1, 1]`
/// ~ N(0, 1), exempt from weight decay (the official no-decay group).
func aconSlopes(channels: Int, rng: inout SeededGenerator) -> (p1: Parameter, p2: Parameter) {
  let s = [1, channels, 1, 1]
  let a = Tensor(zeros: s), b = Tensor(zeros: s)
  a.fillNormal(using: &rng)
  b.fillNormal(using: &rng)
  return (Parameter(a, decays: false), Parameter(b, decays: false))
}
