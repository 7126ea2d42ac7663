// MetaAconVariants: the other two switching functions of Meta-ACON's design space (paper,
// Section 3) beside the channel-wise `MetaAconC`: layer-wise (one β per sample from the whole
// layer) and pixel-wise (β = σ(x) for every element). Both keep ACON-C's p1, p2 `[1, C, 1, 1]`.
//
// Shapes: x, y [N, C, H, W] or [N, C]; layer-wise β [N] (held expanded as [N, C] for the fused
// kernel); p1, p2 [1, C, 1, 1].
import NN
import TensorCore

/// Meta-ACON with the **layer-wise** switch: one β per sample, from the whole layer.
///
/// ```
/// m_n = mean over C, H, W of x[n]          β_n = σ(m_n)
/// y = (p1 − p2)·x · σ(β_n·(p1 − p2)·x) + p2·x
/// ```
/// The paper writes the layer-wise switch as β = σ(Σ_{c,h,w} x_{c,h,w}); the official code
/// (nmaac/acon) implements only the channel-wise form (`MetaAconC`). A plain sum saturates σ on
/// any real feature map (a 64×56×56 layer sums 2·10⁵ values, so β is 0 or 1 and its gradient
/// vanishes), so this layer divides the sum by the element count C·H·W: β = σ(mean). That keeps
/// β's argument on the scale of one activation whatever the layer size, needs no extra
/// parameter, and leaves a batch of 1 well defined in training (no BatchNorm).
///
/// Parameters `p1`, `p2` (`[1, C, 1, 1]`, ~ N(0, 1), as ACON-C). Input and output
/// `[N, C, H, W]` or `[N, C]`. The backward pass includes the path through β: every element of
/// sample n gets dβ_n·β_n(1 − β_n)/(C·H·W) added to its gradient.
public final class MetaAconLayerwise: Module {
  /// Channels C.
  public let channels: Int
  /// `[1, C, 1, 1]`, ~ N(0, 1).
  public let p1: Parameter
  /// `[1, C, 1, 1]`, ~ N(0, 1).
  public let p2: Parameter

  private var input: Tensor?
  private var betaNC: Tensor?  // [N, C]: β_n repeated over the channels
  private var dbetaNC: Tensor?  // [N, C]
  private var output: Tensor?
  private var inputGrad: Tensor?

  /// - Parameters:
  ///   - channels: C.
  ///   - rng: draws p1 and p2.
  public init(channels: Int, rng: inout SeededGenerator) {
    precondition(channels > 0, "MetaAconLayerwise: channels must be positive")
    self.channels = channels
    (p1, p2) = aconSlopes(channels: channels, rng: &rng)
  }

  public override var typeName: String { "MetaAconLayerwise" }
  public override var localParameters: [(String, Parameter)] { [("p1", p1), ("p2", p2)] }

  public override func outputShape(for s: [Int]) throws -> [Int] {
    _ = try channelLayout(s, channels: channels, layer: typeName)
    return s
  }

  /// β per sample from the last forward pass, `[N]`.
  public var lastBeta: [Float]? {
    betaNC.map { b in (0..<b.shape[0]).map { b.data[$0 * channels] } }
  }

  /// Samples per block: each block's mean and kernel pass (forward), kernel pass and dx update
  /// (backward) run back to back while the block's x, dy and dx are still in cache, so memory
  /// sees about one read of x and one write of y forward, one read of x and dy and one write of
  /// dx backward. At least one sample; ~64K elements. Does not affect results.
  @inline(__always)
  private func blockSamples(per: Int) -> Int { Swift.max(1, (1 << 16) / Swift.max(1, per)) }

  public override func forward(_ x: Tensor) throws -> Tensor {
    let (n, hw) = try channelLayout(x.shape, channels: channels, layer: typeName)
    let c = channels, per = c * hw
    input = x
    let b = reuse(&betaNC, shape: [n, c])
    let y = reuse(&output, shape: x.shape)
    let xs = UncheckedSendable(x.data), bs = UncheckedSendable(b.data)
    let step = blockSamples(per: per)
    for s0 in stride(from: 0, to: n, by: step) {
      let m = Swift.min(step, n - s0)
      // Plane sums in parallel (b holds them for a moment), then each sample's in channel order:
      // the same bits for any thread count.
      parallelFor(m * c, minimumChunk: Swift.max(1, (1 << 15) / Swift.max(1, hw))) { r in
        for i in r { bs.value[s0 * c + i] = contiguousSum(xs.value + (s0 * c + i) * hw, count: hw) }
      }
      for s in s0..<(s0 + m) {
        let beta = stableSigmoid(contiguousSum(b.data + s * c, count: c) / Float(per))
        for ch in 0..<c { b.data[s * c + ch] = beta }
      }
      AconKernels.forward(
        x: x.data + s0 * per, y: y.data + s0 * per, n: m, c: c, hw: hw, p1: p1.value.data,
        p2: p2.value.data, beta: b.data + s0 * c, betaLayout: .perSampleChannel)
    }
    return y
  }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    guard let x = input, let b = betaNC, dy.shape == x.shape else {
      throw backwardError(layer: typeName + ".backward",
        expected: input.map { Shape.text($0.shape) }, got: dy.shape)
    }
    let n = x.shape[0], c = channels, hw = x.shape.count == 4 ? x.shape[2] * x.shape[3] : 1
    let per = c * hw
    let dx = reuse(&inputGrad, shape: x.shape)
    let db = reuse(&dbetaNC, shape: [n, c])
    db.zero()
    let dxs = UncheckedSendable(dx.data)
    let step = blockSamples(per: per)
    for s0 in stride(from: 0, to: n, by: step) {
      let m = Swift.min(step, n - s0)
      AconKernels.backward(
        x: x.data + s0 * per, dy: dy.data + s0 * per,
        dx: propagatesInputGradient ? dx.data + s0 * per : nil, n: m, c: c, hw: hw,
        p1: p1.value.data, p2: p2.value.data, beta: b.data + s0 * c, betaLayout: .perSampleChannel,
        dp1: p1.grad.data, dp2: p2.grad.data, dbeta: db.data + s0 * c)
      guard propagatesInputGradient else { continue }
      // dx[s, :] += dβ_s·β_s(1 − β_s)/(C·HW), dβ_s = Σ_c dβ[s, c] in channel order.
      var add = [Float](repeating: 0, count: m)
      for k in 0..<m {
        let s = s0 + k, beta = b.data[s * c]
        add[k] = contiguousSum(db.data + s * c, count: c) * beta * (1 - beta) / Float(per)
      }
      add.withUnsafeBufferPointer { a in
        let av = UncheckedSendable(a.baseAddress!)
        parallelFor(m * per, minimumChunk: 1 << 15) { r in
          var i = r.lowerBound
          while i < r.upperBound {  // one sample's part of the range at a time
            let k = i / per, end = Swift.min(r.upperBound, (k + 1) * per), v = av.value[k]
            let p = dxs.value + s0 * per
            for j in i..<end { p[j] += v }
            i = end
          }
        }
      }
    }
    return dx
  }
}

/// Meta-ACON with the **pixel-wise** switch: β = σ(x) for every element.
///
/// ```
/// β = σ(x),   d = (p1 − p2)·x,   y = d·σ(β·d) + p2·x
/// dx = dy·((p1 − p2)·g + p2) + dy·d²·s(1 − s)·β(1 − β)     s = σ(β·d), g = s + β·d·s(1 − s)
/// ```
/// The paper's pixel-wise form (Section 3; not in the official code). β depends on x, so the
/// gradient also flows into x through β: the fused backward (one read of x and dy, one write
/// of dx) includes that term. Parameters `p1`, `p2` (`[1, C, 1, 1]`, ~ N(0, 1)). Input and
/// output `[N, C, H, W]` or `[N, C]`; works at any batch size, in training too.
public final class MetaAconPixelwise: Module {
  /// Channels C.
  public let channels: Int
  /// `[1, C, 1, 1]`, ~ N(0, 1).
  public let p1: Parameter
  /// `[1, C, 1, 1]`, ~ N(0, 1).
  public let p2: Parameter

  private var input: Tensor?
  private var output: Tensor?
  private var inputGrad: Tensor?

  /// - Parameters:
  ///   - channels: C.
  ///   - rng: draws p1 and p2.
  public init(channels: Int, rng: inout SeededGenerator) {
    precondition(channels > 0, "MetaAconPixelwise: channels must be positive")
    self.channels = channels
    (p1, p2) = aconSlopes(channels: channels, rng: &rng)
  }

  public override var typeName: String { "MetaAconPixelwise" }
  public override var localParameters: [(String, Parameter)] { [("p1", p1), ("p2", p2)] }

  public override func outputShape(for s: [Int]) throws -> [Int] {
    _ = try channelLayout(s, channels: channels, layer: typeName)
    return s
  }

  public override func forward(_ x: Tensor) throws -> Tensor {
    let (n, hw) = try channelLayout(x.shape, channels: channels, layer: typeName)
    input = x
    let y = reuse(&output, shape: x.shape)
    AconKernels.pixelwiseForward(
      x: x.data, y: y.data, n: n, c: channels, hw: hw, p1: p1.value.data, p2: p2.value.data)
    return y
  }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    guard let x = input, dy.shape == x.shape else {
      throw backwardError(layer: typeName + ".backward",
        expected: input.map { Shape.text($0.shape) }, got: dy.shape)
    }
    let n = x.shape[0], hw = x.shape.count == 4 ? x.shape[2] * x.shape[3] : 1
    let dx = reuse(&inputGrad, shape: x.shape)
    AconKernels.pixelwiseBackward(
      x: x.data, dy: dy.data, dx: propagatesInputGradient ? dx.data : nil, n: n, c: channels,
      hw: hw, p1: p1.value.data, p2: p2.value.data, dp1: p1.grad.data, dp2: p2.grad.data)
    return dx
  }
}
