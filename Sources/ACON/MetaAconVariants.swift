// MetaAconVariants: the other two switching functions of Meta-ACON's design space (paper,
// Section 3) beside the channel-wise `MetaAconC`: layer-wise (one β per sample from the whole
// layer) and pixel-wise (β = σ(x) for every element). Both keep ACON-C's p1, p2 `[1, C, 1, 1]`.
//
// Shapes: x, y [N, C, H, W] or [N, C]; layer-wise β [N] (held expanded as [N, C] for the fused
// kernel); p1, p2 [1, C, 1, 1].
import CAconKernels
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

  private var dp1Part: Tensor?  // [N, C]: each sample's dp1 (and dp2) per channel
  private var dp2Part: Tensor?
  private var scratch: Tensor?  // [workers, C·HW]: a sample's dx before the path through β

  /// How the samples are shared out: whole samples per thread (each thread runs a sample's two
  /// passes back to back, so the second finds the sample in its own cache, with no wait between
  /// passes), or, with fewer samples than threads, one sample at a time with its channels split.
  /// Does not affect results: every sum is formed per plane and then in channel and sample
  /// order, whoever computes it.
  private func workers(n: Int, per: Int) -> Int {
    Swift.min(Threads.count, n, Swift.max(1, n * per / (1 << 15)))
  }

  public override func forward(_ x: Tensor) throws -> Tensor {
    let (n, hw) = try channelLayout(x.shape, channels: channels, layer: typeName)
    let c = channels, per = c * hw
    input = x
    let b = reuse(&betaNC, shape: [n, c])
    let y = reuseOutput(&output, shape: x.shape)
    let xs = UncheckedSendable(x.data), ys = UncheckedSendable(y.data), bs = UncheckedSendable(b.data)
    let p1s = UncheckedSendable(p1.value.data), p2s = UncheckedSendable(p2.value.data)
    let stream = AconKernels.streams(elements: 2 * n * per)
    // Pass 1 over sample s, channels r: plane sums (b holds them for a moment).
    func sums(_ s: Int, _ r: Range<Int>) {
      for ch in r { bs.value[s * c + ch] = contiguousSum(xs.value + (s * c + ch) * hw, count: hw) }
    }
    // Between the passes: β_s from the plane sums in channel order.
    func beta(_ s: Int) {
      let v = stableSigmoid(contiguousSum(bs.value + s * c, count: c) / Float(per))
      for ch in 0..<c { bs.value[s * c + ch] = v }
    }
    // Pass 2: the fused kernel on sample s, channels r.
    func kernel(_ s: Int, _ r: Range<Int>) {
      acon_forward_channels(
        xs.value + s * per, ys.value + s * per, nil, 1, c, hw, false, r.lowerBound, r.upperBound,
        p1s.value, p2s.value, bs.value + s * c, AconBetaModePlane, stream)
    }
    let w = workers(n: n, per: per)
    if n >= Threads.count {
      parallelFor(w) { wr in
        for k in wr {
          for s in (n * k / w)..<(n * (k + 1) / w) {
            sums(s, 0..<c)
            beta(s)
            kernel(s, 0..<c)
          }
        }
      }
    } else {
      let minCh = AconKernels.minimumChannels(n: 1, hw: hw)
      for s in 0..<n {
        parallelFor(c, minimumChunk: minCh) { r in sums(s, r) }
        beta(s)
        parallelFor(c, minimumChunk: minCh) { r in kernel(s, r) }
      }
    }
    return y
  }

  /// Backward reads the saved input (and its β), not the output.
  public override var backwardReadsOutput: Bool { false }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    guard let x = input, let b = betaNC, dy.shape == x.shape else {
      throw backwardError(layer: typeName + ".backward",
        expected: input.map { Shape.text($0.shape) }, got: dy.shape)
    }
    let n = x.shape[0], c = channels, hw = x.shape.count == 4 ? x.shape[2] * x.shape[3] : 1
    let per = c * hw
    let dx = reuseInputGradient(&inputGrad, shape: x.shape)
    let db = reuse(&dbetaNC, shape: [n, c])
    let q1 = reuse(&dp1Part, shape: [n, c]), q2 = reuse(&dp2Part, shape: [n, c])
    db.zero()
    q1.zero()
    q2.zero()
    let w = workers(n: n, per: per)
    let sampleParallel = n >= Threads.count
    let wantDx = propagatesInputGradient
    let tmp = reuse(&scratch, shape: [wantDx ? (sampleParallel ? w : 1) : 1, wantDx ? per : 1])
    let xs = UncheckedSendable(x.data), dys = UncheckedSendable(dy.data)
    let dxs = UncheckedSendable(dx.data), ts = UncheckedSendable(tmp.data)
    let bs = UncheckedSendable(b.data), dbs = UncheckedSendable(db.data)
    let q1s = UncheckedSendable(q1.data), q2s = UncheckedSendable(q2.data)
    let p1s = UncheckedSendable(p1.value.data), p2s = UncheckedSendable(p2.value.data)
    let stream = AconKernels.streams(elements: 3 * n * per)
    // Pass 1 over sample s, channels r: the fused kernel, its dx into the scratch t (the sample's
    // part of it), its dp1, dp2 and dβ per plane into q1, q2 and db.
    func kernel(_ s: Int, _ r: Range<Int>, _ t: UnsafeMutablePointer<Float>) {
      acon_backward_channels(
        xs.value + s * per, dys.value + s * per, wantDx ? t : nil, nil, 1, c, hw, false, r.lowerBound,
        r.upperBound, p1s.value, p2s.value, bs.value + s * c, dbs.value + s * c,
        AconBetaModePlane, q1s.value + s * c, q2s.value + s * c, false)
    }
    // Between the passes: the path through β, dβ_s·β_s(1 − β_s)/(C·HW), dβ_s = Σ_c dβ[s, c]
    // in channel order.
    func through(_ s: Int) -> Float {
      let beta = bs.value[s * c]
      return contiguousSum(dbs.value + s * c, count: c) * beta * (1 - beta) / Float(per)
    }
    // Pass 2: dx = t + that, elements [lo, hi) of sample s (t's most recent end first).
    func finish(_ s: Int, _ lo: Int, _ hi: Int, _ t: UnsafeMutablePointer<Float>, _ v: Float) {
      acon_add_scalar(t + lo, dxs.value + s * per + lo, hi - lo, v, stream)
    }
    if sampleParallel {
      parallelFor(w) { wr in
        for k in wr {
          let t = ts.value + (wantDx ? k * per : 0)
          for s in (n * k / w)..<(n * (k + 1) / w) {
            kernel(s, 0..<c, t)
            if wantDx { finish(s, 0, per, t, through(s)) }
          }
        }
      }
    } else {
      let minCh = AconKernels.minimumChannels(n: 1, hw: hw)
      for s in 0..<n {
        parallelFor(c, minimumChunk: minCh) { r in kernel(s, r, ts.value) }
        guard wantDx else { continue }
        let v = through(s)
        parallelFor(c, minimumChunk: minCh) { r in finish(s, r.lowerBound * hw, r.upperBound * hw, ts.value, v) }
      }
    }
    // dp1, dp2: each channel's per-sample sums in sample order.
    for s in 0..<n {
      for ch in 0..<c {
        p1.grad.data[ch] += q1.data[s * c + ch]
        p2.grad.data[ch] += q2.data[s * c + ch]
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
    let y = reuseOutput(&output, shape: x.shape)
    AconKernels.pixelwiseForward(
      x: x.data, y: y.data, n: n, c: channels, hw: hw, p1: p1.value.data, p2: p2.value.data)
    return y
  }

  /// Backward reads the saved input (β = σ(x) comes from it), not the output.
  public override var backwardReadsOutput: Bool { false }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    guard let x = input, dy.shape == x.shape else {
      throw backwardError(layer: typeName + ".backward",
        expected: input.map { Shape.text($0.shape) }, got: dy.shape)
    }
    let n = x.shape[0], hw = x.shape.count == 4 ? x.shape[2] * x.shape[3] : 1
    let dx = reuseInputGradient(&inputGrad, shape: x.shape)
    AconKernels.pixelwiseBackward(
      x: x.data, dy: dy.data, dx: propagatesInputGradient ? dx.data : nil, n: n, c: channels,
      hw: hw, p1: p1.value.data, p2: p2.value.data, dp1: p1.grad.data, dp2: p2.grad.data)
    return dx
  }
}
