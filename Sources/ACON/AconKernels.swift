// AconKernels: the fused ACON-C forward and backward passes over NCHW activations. The forward
// reads x once and writes y once; the backward reads x and dy once, writes dx once, and reduces
// the per-channel parameter gradients on the way. Derivation: docs/acon-backward.md.
//
// Names (llm.c style): n, c, hw = batch, channels, H·W; per channel k = p1 − p2, and per element
//   d = k·x,  t = β·d,  s = σ(t),  w = s·(1 − s),  g = s + t·w  (computed as s + β·(d·w))
//   y  = d·s + p2·x
//   dx = dy·(k·g + p2)     dp1 += Σ dy·x·g     dp2 += Σ dy·x·(1 − g)     dβ += Σ dy·d²·w
// dx is overwritten; dp1, dp2 and dβ ACCUMULATE (+=), as every parameter gradient does here.
//
// Layout of the work: this file checks sizes and does the threading, `parallelFor` over
// channels, so each channel's sums have exactly one owner (no atomics). Each thread's range of
// channels goes to one call into CAconKernels (Sources/CAconKernels), C with an AVX-512 (16
// lanes) and an AVX2+FMA (8 lanes) variant on x86-64 chosen at run time, a NEON one (8 lanes,
// FMA) on aarch64 and a portable one (8 lanes) everywhere, which walks the range's planes in
// memory order (sample by sample in NCHW order, channel by channel in channels-major order). There every element runs
// through the same code of the variant's width (a row's tail is masked), sums are kept in the
// variant's lanes per plane, added lane-wise over a channel's planes in sample order and reduced
// in a fixed order: the results are bit-identical for any thread count.
import CAconKernels
import TensorCore

/// Where ACON's switching factor β lives.
public enum AconBetaLayout: Sendable {
  /// `[C]`: one β per channel (ACON-C's learnable β).
  case perChannel
  /// `[N, C]`: one β per sample and channel (Meta-ACON's channel-wise β network).
  case perSampleChannel
  /// `[N, C, HW]`: one β per element (Meta-ACON's pixel-wise variant).
  case perElement
}

/// Fused ACON-C kernels on raw NCHW buffers. Allocation-free; multithreaded over channels.
///
/// ```
/// d = (p1 − p2)·x,   s = σ(β·d),   y = d·s + p2·x
/// ```
/// With `g = s·(1 + β·d·(1 − s))` the backward pass is
/// ```
/// dx = dy·((p1 − p2)·g + p2)
/// dp1 += Σ dy·x·g,   dp2 += Σ dy·x·(1 − g),   dβ += Σ dy·d²·s·(1 − s)
/// ```
/// No NaN or infinity arises for finite inputs unless a true result overflows Float (for
/// example d²·s·(1 − s) with β = 0 and |x| ≈ 1e30). NaN in x propagates to every output it
/// reaches.
public enum AconKernels {

  // MARK: - Public entry points

  /// ACON-C forward: `y = d·σ(β·d) + p2·x` with `d = (p1 − p2)·x`.
  ///
  /// - Parameters:
  ///   - x: `[N, C, HW]`, contiguous NCHW (HW = H·W).
  ///   - y: `[N, C, HW]`, written. May not alias `x` partially (equal pointers are fine).
  ///   - n: N, the samples.
  ///   - c: C, the channels.
  ///   - hw: HW = H·W, the elements of one channel plane (1 for `[N, C]` input).
  ///   - p1: `[C]`.
  ///   - p2: `[C]`.
  ///   - beta: `[C]`, `[N, C]` or `[N, C, HW]` as `betaLayout` says.
  ///   - betaLayout: where β varies: per channel, per sample and channel, or per element.
  ///   - channelsMajor: x and y are `[C, N, HW]` instead (each channel's N planes one after the
  ///     other, as a channels-major `Sequential` holds a batch); β keeps its `[C]` or `[N, C]`
  ///     layout (`.perElement` is NCHW only). Each element gets the same bits as in NCHW order.
  public static func forward(
    x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, n: Int, c: Int, hw: Int,
    p1: UnsafePointer<Float>, p2: UnsafePointer<Float>, beta: UnsafePointer<Float>,
    betaLayout: AconBetaLayout, channelsMajor: Bool = false
  ) {
    forwardImpl(
      x: x, y: y, sig: nil, n: n, c: c, hw: hw, p1: p1, p2: p2, beta: beta, betaLayout: betaLayout,
      channelsMajor: channelsMajor)
  }

  /// ACON-C forward that also stores `s = σ(β·d)` for `backwardFromSigmoid`.
  ///
  /// - Parameters:
  ///   - x: `[N, C, HW]`, as for `forward`.
  ///   - y: `[N, C, HW]`, written, as for `forward`.
  ///   - n: N, the samples.
  ///   - c: C, the channels.
  ///   - hw: HW = H·W (1 for `[N, C]` input).
  ///   - p1: `[C]`.
  ///   - p2: `[C]`.
  ///   - beta: `[C]`, `[N, C]` or `[N, C, HW]` as `betaLayout` says.
  ///   - betaLayout: where β varies.
  ///   - sigmoid: `[N, C, HW]`, written with `s`.
  public static func forwardSavingSigmoid(
    x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, n: Int, c: Int, hw: Int,
    p1: UnsafePointer<Float>, p2: UnsafePointer<Float>, beta: UnsafePointer<Float>,
    betaLayout: AconBetaLayout, sigmoid: UnsafeMutablePointer<Float>
  ) {
    forwardImpl(
      x: x, y: y, sig: sigmoid, n: n, c: c, hw: hw, p1: p1, p2: p2, beta: beta,
      betaLayout: betaLayout)
  }

  /// ACON-C backward from the saved input (σ is recomputed, one exp per element).
  ///
  /// ```
  /// g = s·(1 + β·d·(1 − s)),   dx = dy·((p1 − p2)·g + p2)
  /// dp1 += Σ dy·x·g,   dp2 += Σ dy·x·(1 − g),   dβ += Σ dy·d²·s·(1 − s)
  /// ```
  /// - Parameters:
  ///   - x: `[N, C, HW]`, the forward input.
  ///   - dy: `[N, C, HW]`, the gradient of the loss with respect to y.
  ///   - dx: `[N, C, HW]`, overwritten with the input gradient; `nil` skips it.
  ///   - n: N, the samples.
  ///   - c: C, the channels.
  ///   - hw: HW = H·W (1 for `[N, C]` input).
  ///   - p1: `[C]`.
  ///   - p2: `[C]`.
  ///   - beta: `[C]`, `[N, C]` or `[N, C, HW]` as `betaLayout` says.
  ///   - betaLayout: where β varies.
  ///   - dp1: `[C]`, accumulated (`+=`): sums over N and HW.
  ///   - dp2: `[C]`, accumulated (`+=`): sums over N and HW.
  ///   - dbeta: same layout as `beta`, accumulated (`+=`): `.perChannel` sums over N and HW,
  ///     `.perSampleChannel` over HW, `.perElement` is elementwise.
  ///   - channelsMajor: x, dy and dx are `[C, N, HW]`, as for `forward`; the same bits as in
  ///     NCHW order, sums included (each channel's planes are summed in sample order either way).
  public static func backward(
    x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?,
    n: Int, c: Int, hw: Int, p1: UnsafePointer<Float>, p2: UnsafePointer<Float>,
    beta: UnsafePointer<Float>, betaLayout: AconBetaLayout, dp1: UnsafeMutablePointer<Float>,
    dp2: UnsafeMutablePointer<Float>, dbeta: UnsafeMutablePointer<Float>, channelsMajor: Bool = false
  ) {
    backwardImpl(
      x: x, dy: dy, dx: dx, sig: nil, n: n, c: c, hw: hw, p1: p1, p2: p2, beta: beta,
      betaLayout: betaLayout, dp1: dp1, dp2: dp2, dbeta: dbeta, channelsMajor: channelsMajor)
  }

  /// ACON-C backward that reads `s = σ(β·d)` saved by `forwardSavingSigmoid` instead of
  /// recomputing it. Gives the same bits as `backward`.
  ///
  /// - Parameters:
  ///   - x: `[N, C, HW]`, the forward input.
  ///   - dy: `[N, C, HW]`, the gradient of the loss with respect to y.
  ///   - dx: `[N, C, HW]`, overwritten with the input gradient; `nil` skips it.
  ///   - n: N, the samples.
  ///   - c: C, the channels.
  ///   - hw: HW = H·W (1 for `[N, C]` input).
  ///   - p1: `[C]`.
  ///   - p2: `[C]`.
  ///   - beta: `[C]`, `[N, C]` or `[N, C, HW]` as `betaLayout` says.
  ///   - betaLayout: where β varies.
  ///   - dp1: `[C]`, accumulated (`+=`), as for `backward`.
  ///   - dp2: `[C]`, accumulated (`+=`), as for `backward`.
  ///   - dbeta: same layout as `beta`, accumulated (`+=`), as for `backward`.
  ///   - sigmoid: `[N, C, HW]`, as written by `forwardSavingSigmoid`.
  public static func backwardFromSigmoid(
    x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?,
    n: Int, c: Int, hw: Int, p1: UnsafePointer<Float>, p2: UnsafePointer<Float>,
    beta: UnsafePointer<Float>, betaLayout: AconBetaLayout, dp1: UnsafeMutablePointer<Float>,
    dp2: UnsafeMutablePointer<Float>, dbeta: UnsafeMutablePointer<Float>,
    sigmoid: UnsafePointer<Float>
  ) {
    backwardImpl(
      x: x, dy: dy, dx: dx, sig: sigmoid, n: n, c: c, hw: hw, p1: p1, p2: p2, beta: beta,
      betaLayout: betaLayout, dp1: dp1, dp2: dp2, dbeta: dbeta)
  }

  // MARK: - Variant

  /// The code path the kernels (and `fastExp`/`fastSigmoid`) run on: `"avx512"`, `"avx2"` or
  /// `"portable"` on x86-64, `"neon"` or `"portable"` on aarch64, `"portable"` elsewhere. By
  /// default the widest the CPU supports; the environment variable `ACON_KERNELS` (one of those
  /// names, read when the kernels are first used) caps it.
  public static var variant: String {
    String(cString: acon_kernels_variant_name(acon_kernels_variant()))
  }

  // MARK: - Streaming stores

  /// Whether a call that reads and writes `elements` Floats in all (over the whole tensors, not
  /// one thread's share) stores its outputs non-temporally: from
  /// `acon_kernels_streaming_threshold()` bytes on (by default half the last-level cache). Such
  /// an output would be mostly evicted before the next layer reads it, and streaming saves the
  /// read of every output line that a plain store makes first. The results are the same bits
  /// either way.
  @inline(__always)
  static func streams(elements: Int) -> Bool {
    UInt(elements) &* 4 >= UInt(acon_kernels_streaming_threshold())
  }

  // MARK: - Work split

  /// Channels per worker so that a worker gets at least ~32K elements: below that, waking a
  /// second thread costs more than it saves. Does not affect results.
  @inline(__always)
  static func minimumChannels(n: Int, hw: Int) -> Int {
    Swift.max(1, (1 << 15) / Swift.max(1, n * hw))
  }

  // MARK: - Forward

  @inline(__always)
  static func forwardImpl(
    x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, sig: UnsafeMutablePointer<Float>?,
    n: Int, c: Int, hw: Int, p1: UnsafePointer<Float>, p2: UnsafePointer<Float>,
    beta: UnsafePointer<Float>, betaLayout: AconBetaLayout, channelsMajor: Bool = false
  ) {
    // x, y, sig: (N, C, HW), or (C, N, HW) channels-major   p1, p2: (C)
    // beta: (C) | (N, C) | (N, C, HW)
    precondition(n >= 0 && c >= 0 && hw >= 0, "AconKernels.forward: negative size")
    precondition(!(channelsMajor && betaLayout == .perElement), "AconKernels.forward: per-element β is NCHW only")
    if n == 0 || c == 0 || hw == 0 { return }
    let xs = UncheckedSendable(x), ys = UncheckedSendable(y), ss = UncheckedSendable(sig)
    let p1s = UncheckedSendable(p1), p2s = UncheckedSendable(p2), bs = UncheckedSendable(beta)
    let mode = betaMode(betaLayout)
    let count = n * c * hw
    let stream = streams(elements: count * (2 + (sig == nil ? 0 : 1) + (betaLayout == .perElement ? 1 : 0)))
    parallelFor(c, minimumChunk: minimumChannels(n: n, hw: hw)) { range in
      acon_forward_channels(
        xs.value, ys.value, ss.value, n, c, hw, channelsMajor, range.lowerBound, range.upperBound,
        p1s.value, p2s.value, bs.value, mode, stream)
    }
  }

  @inline(__always)
  static func betaMode(_ layout: AconBetaLayout) -> AconBetaMode {
    switch layout {
    case .perChannel: return AconBetaModeChannel
    case .perSampleChannel: return AconBetaModePlane
    case .perElement: return AconBetaModeElement
    }
  }

  // MARK: - Backward

  @inline(__always)
  static func backwardImpl(
    x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?,
    sig: UnsafePointer<Float>?, n: Int, c: Int, hw: Int, p1: UnsafePointer<Float>,
    p2: UnsafePointer<Float>, beta: UnsafePointer<Float>, betaLayout: AconBetaLayout,
    dp1: UnsafeMutablePointer<Float>, dp2: UnsafeMutablePointer<Float>,
    dbeta: UnsafeMutablePointer<Float>, channelsMajor: Bool = false
  ) {
    // x, dy, dx, sig: (N, C, HW), or (C, N, HW) channels-major   p1, p2, dp1, dp2: (C)
    // beta, dbeta: (C) | (N, C) | (N, C, HW)
    precondition(n >= 0 && c >= 0 && hw >= 0, "AconKernels.backward: negative size")
    precondition(!(channelsMajor && betaLayout == .perElement), "AconKernels.backward: per-element β is NCHW only")
    if n == 0 || c == 0 || hw == 0 { return }
    let xs = UncheckedSendable(x), dys = UncheckedSendable(dy), dxs = UncheckedSendable(dx)
    let ss = UncheckedSendable(sig), p1s = UncheckedSendable(p1), p2s = UncheckedSendable(p2)
    let bs = UncheckedSendable(beta), dp1s = UncheckedSendable(dp1)
    let dp2s = UncheckedSendable(dp2), dbs = UncheckedSendable(dbeta)
    let mode = betaMode(betaLayout)
    let count = n * c * hw
    let stream = streams(
      elements: count * (3 + (sig == nil ? 0 : 1) + (betaLayout == .perElement ? 3 : 0)))
    parallelFor(c, minimumChunk: minimumChannels(n: n, hw: hw)) { range in
      acon_backward_channels(
        xs.value, dys.value, dxs.value, ss.value, n, c, hw, channelsMajor, range.lowerBound,
        range.upperBound, p1s.value, p2s.value, bs.value, dbs.value, mode, dp1s.value, dp2s.value, stream)
    }
  }
}

// MARK: - Meta-ACON pixel-wise and the smooth maximum

extension AconKernels {
  /// Planes per worker so that a worker gets at least ~32K elements. Does not affect results.
  @inline(__always)
  static func minimumPlanes(hw: Int) -> Int { Swift.max(1, (1 << 15) / Swift.max(1, hw)) }

  /// Meta-ACON pixel-wise forward, β = σ(x) per element:
  /// ```
  /// d = (p1 − p2)·x,   y = d·σ(σ(x)·d) + p2·x
  /// ```
  /// One read of x and one write of y; multithreaded over channels (same bits for any count).
  /// - Parameters:
  ///   - x: `[N, C, HW]`, contiguous.
  ///   - y: `[N, C, HW]`, written (may equal `x`, not overlap it partially).
  ///   - n: N, the samples.
  ///   - c: C, the channels.
  ///   - hw: H·W (1 for `[N, C]` input).
  ///   - p1: `[C]`.
  ///   - p2: `[C]`.
  public static func pixelwiseForward(
    x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, n: Int, c: Int, hw: Int,
    p1: UnsafePointer<Float>, p2: UnsafePointer<Float>
  ) {
    // x, y: (N, C, HW)   p1, p2: (C)
    precondition(n >= 0 && c >= 0 && hw >= 0, "AconKernels.pixelwiseForward: negative size")
    if n == 0 || c == 0 || hw == 0 { return }
    let xs = UncheckedSendable(x), ys = UncheckedSendable(y)
    let p1s = UncheckedSendable(p1), p2s = UncheckedSendable(p2)
    let stream = streams(elements: 2 * n * c * hw)
    parallelFor(c, minimumChunk: minimumChannels(n: n, hw: hw)) { r in
      acon_pixelwise_forward_channels(
        xs.value, ys.value, n, c, hw, r.lowerBound, r.upperBound, p1s.value, p2s.value, stream)
    }
  }

  /// Meta-ACON pixel-wise backward. With β = σ(x), s = σ(β·d), w = s·(1 − s), g = s + β·d·w:
  /// ```
  /// dx = dy·((p1 − p2)·g + p2) + dy·d²·w·β·(1 − β)      (the last term: through β = σ(x))
  /// dp1 += Σ dy·x·g,   dp2 += Σ dy·x·(1 − g)
  /// ```
  /// One read of x and dy, one write of dx; sums per channel in a fixed order (same bits for
  /// any thread count).
  /// - Parameters:
  ///   - x: `[N, C, HW]`, the forward input.
  ///   - dy: `[N, C, HW]`, the gradient of the loss with respect to y.
  ///   - dx: `[N, C, HW]`, overwritten; `nil` skips it.
  ///   - n: N, the samples.
  ///   - c: C, the channels.
  ///   - hw: H·W (1 for `[N, C]` input).
  ///   - p1: `[C]`.
  ///   - p2: `[C]`.
  ///   - dp1: `[C]`, accumulated (`+=`): sums over N and HW.
  ///   - dp2: `[C]`, accumulated (`+=`): sums over N and HW.
  public static func pixelwiseBackward(
    x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?,
    n: Int, c: Int, hw: Int, p1: UnsafePointer<Float>, p2: UnsafePointer<Float>,
    dp1: UnsafeMutablePointer<Float>, dp2: UnsafeMutablePointer<Float>
  ) {
    // x, dy, dx: (N, C, HW)   p1, p2, dp1, dp2: (C)
    precondition(n >= 0 && c >= 0 && hw >= 0, "AconKernels.pixelwiseBackward: negative size")
    if n == 0 || c == 0 || hw == 0 { return }
    let xs = UncheckedSendable(x), dys = UncheckedSendable(dy), dxs = UncheckedSendable(dx)
    let p1s = UncheckedSendable(p1), p2s = UncheckedSendable(p2)
    let dp1s = UncheckedSendable(dp1), dp2s = UncheckedSendable(dp2)
    let stream = streams(elements: 3 * n * c * hw)
    parallelFor(c, minimumChunk: minimumChannels(n: n, hw: hw)) { r in
      acon_pixelwise_backward_channels(
        xs.value, dys.value, dxs.value, n, c, hw, r.lowerBound, r.upperBound, p1s.value,
        p2s.value, dp1s.value, dp2s.value, stream)
    }
  }

  /// The smooth maximum of ACON-FReLU (TFNet), elementwise over `planes` planes of `hw`:
  /// ```
  /// S(a, b) = (a − b)·σ(β·(a − b)) + b
  /// ```
  /// One read of a and b, one write of y; multithreaded over planes (same bits for any count).
  /// - Parameters:
  ///   - a: `[planes, hw]` (e.g. `[N·C, H·W]`).
  ///   - b: `[planes, hw]`.
  ///   - y: `[planes, hw]`, written (may equal `a` or `b`, not overlap them partially).
  ///   - planes: the number of planes (N·C).
  ///   - hw: elements per plane (H·W).
  ///   - beta: β (1 in ACON-FReLU).
  public static func smoothMaxForward(
    a: UnsafePointer<Float>, b: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
    planes: Int, hw: Int, beta: Float = 1
  ) {
    // a, b, y: (planes, hw)
    precondition(planes >= 0 && hw >= 0, "AconKernels.smoothMaxForward: negative size")
    if planes == 0 || hw == 0 { return }
    let As = UncheckedSendable(a), bs = UncheckedSendable(b), ys = UncheckedSendable(y)
    let stream = streams(elements: 3 * planes * hw)
    parallelFor(planes, minimumChunk: minimumPlanes(hw: hw)) { r in
      acon_smooth_max_forward_planes(
        As.value, bs.value, ys.value, hw, r.lowerBound, r.upperBound, beta, stream)
    }
  }

  /// The smooth maximum's backward. With δ = a − b, s = σ(β·δ), g = s + β·δ·s·(1 − s):
  /// ```
  /// da = dy·g,   db = dy − da,   dβ[p] += Σ over plane p of dy·δ²·s·(1 − s)
  /// ```
  /// One read of a, b and dy; da and db overwritten. Same bits for any thread count.
  /// - Parameters:
  ///   - a: `[planes, hw]`, the forward input a.
  ///   - b: `[planes, hw]`, the forward input b.
  ///   - dy: `[planes, hw]`, the gradient of the loss with respect to y.
  ///   - da: `[planes, hw]`, overwritten (must not alias a, b or dy).
  ///   - db: `[planes, hw]`, overwritten (must not alias a, b or dy).
  ///   - planes: the number of planes (N·C).
  ///   - hw: elements per plane (H·W).
  ///   - beta: β.
  ///   - dbeta: `[planes]`, accumulated (`+=`) per plane; `nil` skips it (β fixed). Sum it in
  ///     a fixed order for a scalar dβ.
  public static func smoothMaxBackward(
    a: UnsafePointer<Float>, b: UnsafePointer<Float>, dy: UnsafePointer<Float>,
    da: UnsafeMutablePointer<Float>, db: UnsafeMutablePointer<Float>, planes: Int, hw: Int,
    beta: Float = 1, dbeta: UnsafeMutablePointer<Float>? = nil
  ) {
    // a, b, dy, da, db: (planes, hw)   dbeta: (planes)
    precondition(planes >= 0 && hw >= 0, "AconKernels.smoothMaxBackward: negative size")
    if planes == 0 || hw == 0 { return }
    let As = UncheckedSendable(a), bs = UncheckedSendable(b), dys = UncheckedSendable(dy)
    let das = UncheckedSendable(da), dbs = UncheckedSendable(db), dbetas = UncheckedSendable(dbeta)
    let stream = streams(elements: 5 * planes * hw)
    parallelFor(planes, minimumChunk: minimumPlanes(hw: hw)) { r in
      acon_smooth_max_backward_planes(
        As.value, bs.value, dys.value, das.value, dbs.value, hw, r.lowerBound, r.upperBound, beta,
        dbetas.value, stream)
    }
  }
}
