// MetaAconC: ACON-C whose switching factor β is computed from the input by a small network,
// β = σ(bn2(fc2(bn1(fc1(mean_HW(x)))))), one β per (sample, channel). The backward pass runs
// through that network and adds the mean's share into dx.
//
// Shapes: x, y [N, C, H, W] or [N, C] (or channels-major [1, C, N·H, W] inside a Sequential);
// mean m [N, C, 1, 1]; hidden [N, W, 1, 1] with W = max(r, C/r); β [N, C]; p1, p2 [1, C, 1, 1].
import NN
import TensorCore

/// Meta-ACON-C: ACON-C with a β generated per sample and channel.
///
/// ```
/// β = σ(bn2(fc2(bn1(fc1(mean_HW(x))))))          fc1: 1×1 conv C → W, fc2: W → C, W = max(r, C/r)
/// y = (p1 − p2)·x · σ(β·(p1 − p2)·x) + p2·x
/// ```
/// Submodules `fc1`, `bn1`, `fc2`, `bn2` and parameters `p1`, `p2` (~ N(0, 1), `[1, C, 1, 1]`), as in
/// the reference `acon.py`. There is no nonlinearity between fc1 and fc2. With
/// `useBatchNorm: false` the BatchNorms are left out (the YOLOv5 variant, which trains more
/// stably and works at batch 1). In training mode with BatchNorm, a batch of 1 is an error:
/// BatchNorm over `[1, W, 1, 1]` has one value per channel. In evaluation mode it works.
/// Input and output `[N, C, H, W]` or `[N, C]`.
public final class MetaAconC: Module {
  /// Channels C.
  public let channels: Int
  /// Hidden width max(r, C/r).
  public let width: Int
  /// Whether bn1 and bn2 are present.
  public let useBatchNorm: Bool
  /// 1×1 convolution C → width, with bias.
  public let fc1: Conv2D
  /// BatchNorm over the hidden width (nil without BatchNorm).
  public let bn1: BatchNorm2D?
  /// 1×1 convolution width → C, with bias.
  public let fc2: Conv2D
  /// BatchNorm over C (nil without BatchNorm).
  public let bn2: BatchNorm2D?
  /// `[1, C, 1, 1]`, ~ N(0, 1).
  public let p1: Parameter
  /// `[1, C, 1, 1]`, ~ N(0, 1).
  public let p2: Parameter

  private var mean: Tensor?  // [N, C, 1, 1]
  private var beta: Tensor?  // [N, C]
  private var dbeta: Tensor?  // [N, C, 1, 1]
  private var output: Tensor?
  private var inputGrad: Tensor?
  private var input: Tensor?
  /// The batch size N while the last forward ran on a channels-major batch, else nil.
  private var channelsMajorSamples: Int?

  /// - Parameters:
  ///   - channels: C.
  ///   - r: the reduction ratio (16); the hidden width is max(r, C/r).
  ///   - useBatchNorm: keep bn1 and bn2 (the paper's form) or leave them out (YOLOv5's).
  ///   - rng: draws the convolutions' weights and p1, p2.
  public init(channels: Int, r: Int = 16, useBatchNorm: Bool = true, rng: inout SeededGenerator) {
    precondition(channels > 0 && r > 0, "MetaAconC: channels and r must be positive")
    self.channels = channels
    self.width = Swift.max(r, channels / r)
    self.useBatchNorm = useBatchNorm
    // Registration order of acon.py: fc1, bn1, fc2, bn2, then p1, p2.
    fc1 = Conv2D(inChannels: channels, outChannels: width, kernelSize: 1, rng: &rng)
    bn1 = useBatchNorm ? BatchNorm2D(channels: width) : nil
    fc2 = Conv2D(inChannels: width, outChannels: channels, kernelSize: 1, rng: &rng)
    bn2 = useBatchNorm ? BatchNorm2D(channels: channels) : nil
    (p1, p2) = aconSlopes(channels: channels, rng: &rng)
  }

  /// The same layer with the option spelled `batchNorm:`: `MetaAconC(channels: C, r: 16,
  /// batchNorm: false, rng: &rng)` is the BN-less switch (β = σ(fc2(fc1(mean_HW x))), state_dict
  /// `fc1.weight [W, C, 1, 1]`, `fc1.bias [W]`, `fc2.weight [C, W, 1, 1]`, `fc2.bias [C]`, `p1`,
  /// `p2`), which trains at batch 1.
  /// - Parameters:
  ///   - channels: C.
  ///   - r: the reduction ratio; the hidden width is max(r, C/r).
  ///   - batchNorm: keep bn1 and bn2 (`true`, the paper's and acon.py's form) or not.
  ///   - rng: draws the convolutions' weights and p1, p2.
  public convenience init(channels: Int, r: Int = 16, batchNorm: Bool, rng: inout SeededGenerator) {
    self.init(channels: channels, r: r, useBatchNorm: batchNorm, rng: &rng)
  }

  public override var typeName: String { "MetaAconC" }
  public override var localParameters: [(String, Parameter)] { [("p1", p1), ("p2", p2)] }
  public override var children: [(String, Module)] {
    var c: [(String, Module)] = [("fc1", fc1)]
    if let bn1 { c.append(("bn1", bn1)) }
    c.append(("fc2", fc2))
    if let bn2 { c.append(("bn2", bn2)) }
    return c
  }

  /// The β network in order.
  private var betaNet: [Module] { children.map { $0.1 } }

  public override func outputShape(for s: [Int]) throws -> [Int] {
    _ = try channelLayout(s, channels: channels, layer: typeName)
    return s
  }

  /// β from the last forward pass, `[N, C]`.
  public var lastBeta: Tensor? { beta }

  /// One β per sample: a channels-major batch runs through `forward(_:channelsMajorSamples:)`.
  public override var runsChannelsMajorGivenBatch: Bool { true }

  public override func forward(_ x: Tensor) throws -> Tensor {
    let (n, hw) = try channelLayout(x.shape, channels: channels, layer: typeName)
    channelsMajorSamples = nil
    return try run(x, samples: n, hw: hw)
  }

  /// Forward over a batch of N samples stored channels-major (as `Sequential` runs it, see
  /// `Module.runsChannelsMajorGivenBatch`): x `[1, C, N·H, W]`, each channel's N planes one
  /// after the other, → y likewise. The means, β and y, and in `backward` every gradient, are
  /// the bits of `forward(_:)` on the NCHW batch (each plane summed alike, each channel's planes
  /// in sample order), reordered.
  public override func forward(_ x: Tensor, channelsMajorSamples n: Int) throws -> Tensor {
    guard n > 0, x.shape.count == 4, x.shape[0] == 1, x.shape[1] == channels, x.shape[2] % n == 0 else {
      throw TensorError.shapeMismatch(
        layer: typeName, expected: "[1, \(channels), N·H, W] holding \(n) samples channels-major", got: x.shape)
    }
    channelsMajorSamples = n
    return try run(x, samples: n, hw: x.shape[2] / n * x.shape[3])
  }

  /// Index into `[N, C]` (β, the means) of plane q of x in memory order: q itself in NCHW order,
  /// (q mod N)·C + q / N channels-major.
  @inline(__always)
  private static func sampleChannel(ofPlane q: Int, samples n: Int, channels c: Int, channelsMajor: Bool) -> Int {
    channelsMajor ? (q % n) * c + q / n : q
  }

  /// The forward pass on N samples of HW elements a plane, NCHW or (with `channelsMajorSamples`)
  /// channels-major.
  private func run(_ x: Tensor, samples n: Int, hw: Int) throws -> Tensor {
    let c = channels, major = channelsMajorSamples != nil
    if isTraining && useBatchNorm && n < 2 {
      throw TensorError.invalidArgument(
        "MetaAconC: training with BatchNorm in the β network needs a batch of at least 2 (bn1 and bn2 "
          + "normalise a [N, \(width), 1, 1] tensor over N, and one sample has no variance); got input "
          + "\(Shape.text(x.shape)). Use a larger batch, eval() for inference, or MetaAconC(useBatchNorm: false)")
    }
    input = x
    // m[s, ch] = mean over HW of x's plane of sample s, channel ch (planes q in memory order).
    let m = reuse(&mean, shape: [n, c, 1, 1])
    let xs = UncheckedSendable(x.data), ms = UncheckedSendable(m.data)
    parallelFor(n * c, minimumChunk: 64) { range in
      for q in range {
        let i = MetaAconC.sampleChannel(ofPlane: q, samples: n, channels: c, channelsMajor: major)
        ms.value[i] = contiguousSum(xs.value + q * hw, count: hw) / Float(hw)
      }
    }
    var h = m
    for layer in betaNet { h = try layer.forward(h) }
    let b = reuse(&beta, shape: [n, c])
    for i in 0..<(n * c) { b.data[i] = stableSigmoid(h.data[i]) }
    let y = reuseOutput(&output, shape: x.shape)
    AconKernels.forward(x: x.data, y: y.data, n: n, c: c, hw: hw, p1: p1.value.data, p2: p2.value.data,
      beta: b.data, betaLayout: .perSampleChannel, channelsMajor: major)
    return y
  }

  /// Backward reads the saved input (and its β), not the output.
  public override var backwardReadsOutput: Bool { false }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    guard let x = input, let b = beta, dy.shape == x.shape else {
      throw backwardError(layer: typeName + ".backward",
        expected: input.map { Shape.text($0.shape) }, got: dy.shape)
    }
    let n = channelsMajorSamples ?? x.shape[0], c = channels, hw = x.count / (n * c)
    let major = channelsMajorSamples != nil
    let dx = reuseInputGradient(&inputGrad, shape: x.shape)
    let db = reuse(&dbeta, shape: [n, c, 1, 1])
    db.zero()
    // The β network always needs dβ; dx only if requested.
    AconKernels.backward(x: x.data, dy: dy.data, dx: propagatesInputGradient ? dx.data : nil,
      n: n, c: c, hw: hw, p1: p1.value.data, p2: p2.value.data, beta: b.data, betaLayout: .perSampleChannel,
      dp1: p1.grad.data, dp2: p2.grad.data, dbeta: db.data, channelsMajor: major)
    // Through the sigmoid: dh = dβ·β(1 − β).
    for i in 0..<(n * c) {
      let s = b.data[i]
      db.data[i] *= s * (1 - s)
    }
    var g = db
    let net = betaNet
    for (i, layer) in net.enumerated().reversed() {
      layer.propagatesInputGradient = i > 0 || propagatesInputGradient
      g = try layer.backward(g)
    }
    guard propagatesInputGradient else { return dx }
    // The mean's share: dx[s, ch, :] += dm[s, ch] / HW (planes q in memory order).
    let gs = UncheckedSendable(g.data), dxs = UncheckedSendable(dx.data)
    parallelFor(n * c, minimumChunk: 64) { range in
      for q in range {
        let i = MetaAconC.sampleChannel(ofPlane: q, samples: n, channels: c, channelsMajor: major)
        let v = gs.value[i] / Float(hw)
        let p = dxs.value + q * hw
        for j in 0..<hw { p[j] += v }
      }
    }
    return dx
  }
}
