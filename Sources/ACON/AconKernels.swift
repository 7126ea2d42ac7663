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
// Layout of the work: `parallelFor` over channels, so each channel's sums have exactly one
// owner (no atomics); each channel loops over n, then over its contiguous hw plane in SIMD8
// chunks with a scalar tail that performs the same operations (FastMath.swift), so every
// element's result is independent of its position. Sums are kept in SIMD8 lanes per plane,
// added lane-wise into per-channel lanes and reduced in a fixed order: the results are
// bit-identical for any thread count.
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
  ///   - p1, p2: `[C]`.
  ///   - beta: `[C]`, `[N, C]` or `[N, C, HW]` as `betaLayout` says.
  public static func forward(
    x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, n: Int, c: Int, hw: Int,
    p1: UnsafePointer<Float>, p2: UnsafePointer<Float>, beta: UnsafePointer<Float>,
    betaLayout: AconBetaLayout
  ) {
    forwardImpl(
      x: x, y: y, sig: nil, n: n, c: c, hw: hw, p1: p1, p2: p2, beta: beta, betaLayout: betaLayout)
  }

  /// ACON-C forward that also stores `s = σ(β·d)` for `backwardFromSigmoid`.
  ///
  /// - Parameters:
  ///   - x, y, p1, p2, beta, betaLayout: as for `forward`.
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
  ///   - p1, p2: `[C]`; beta: layout as given.
  ///   - dp1, dp2: `[C]`, accumulated (`+=`): sums over N and HW.
  ///   - dbeta: same layout as `beta`, accumulated (`+=`): `.perChannel` sums over N and HW,
  ///     `.perSampleChannel` over HW, `.perElement` is elementwise.
  public static func backward(
    x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?,
    n: Int, c: Int, hw: Int, p1: UnsafePointer<Float>, p2: UnsafePointer<Float>,
    beta: UnsafePointer<Float>, betaLayout: AconBetaLayout, dp1: UnsafeMutablePointer<Float>,
    dp2: UnsafeMutablePointer<Float>, dbeta: UnsafeMutablePointer<Float>
  ) {
    backwardImpl(
      x: x, dy: dy, dx: dx, sig: nil, n: n, c: c, hw: hw, p1: p1, p2: p2, beta: beta,
      betaLayout: betaLayout, dp1: dp1, dp2: dp2, dbeta: dbeta)
  }

  /// ACON-C backward that reads `s = σ(β·d)` saved by `forwardSavingSigmoid` instead of
  /// recomputing it. Gives the same bits as `backward`.
  ///
  /// - Parameters:
  ///   - x, dy, dx, p1, p2, beta, betaLayout, dp1, dp2, dbeta: as for `backward`.
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
    beta: UnsafePointer<Float>, betaLayout: AconBetaLayout
  ) {
    // x, y, sig: (N, C, HW)   p1, p2: (C)   beta: (C) | (N, C) | (N, C, HW)
    precondition(n >= 0 && c >= 0 && hw >= 0, "AconKernels.forward: negative size")
    if n == 0 || c == 0 || hw == 0 { return }
    let xs = UncheckedSendable(x), ys = UncheckedSendable(y), ss = UncheckedSendable(sig)
    let p1s = UncheckedSendable(p1), p2s = UncheckedSendable(p2), bs = UncheckedSendable(beta)
    parallelFor(c, minimumChunk: minimumChannels(n: n, hw: hw)) { range in
      let x = xs.value, y = ys.value, p1 = p1s.value, p2 = p2s.value, beta = bs.value
      for ch in range {
        let k = p1[ch] - p2[ch], q = p2[ch]
        for nn in 0..<n {
          let off = (nn * c + ch) * hw
          let (b, betaE) = planeBeta(beta, betaLayout, nn: nn, ch: ch, c: c, off: off)
          forwardPlane(x + off, y + off, ss.value.map { $0 + off }, hw, k, q, b, betaE)
        }
      }
    }
  }

  /// β of plane (nn, ch): a scalar for `.perChannel` and `.perSampleChannel`, or the plane's
  /// row of `.perElement` β starting at element offset `off`.
  @inline(__always)
  static func planeBeta(
    _ beta: UnsafePointer<Float>, _ layout: AconBetaLayout, nn: Int, ch: Int, c: Int, off: Int
  ) -> (Float, UnsafePointer<Float>?) {
    switch layout {
    case .perChannel: return (beta[ch], nil)
    case .perSampleChannel: return (beta[nn * c + ch], nil)
    case .perElement: return (0, beta + off)
    }
  }

  /// One (n, c) plane of the forward pass.
  /// x, y, sig: (HW); k = p1 − p2 and q = p2 of this channel; b = β of this plane unless
  /// `betaE` (HW) gives one per element.
  @inline(__always)
  static func forwardPlane(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ sig: UnsafeMutablePointer<Float>?,
    _ hw: Int, _ k: Float, _ q: Float, _ b: Float, _ betaE: UnsafePointer<Float>?
  ) {
    let kv = SIMD8<Float>(repeating: k), qv = SIMD8<Float>(repeating: q)
    let nbv = SIMD8<Float>(repeating: -b)
    var i = 0
    while i + 8 <= hw {
      let xv = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
      let nb = betaE.map { -UnsafeRawPointer($0 + i).loadUnaligned(as: SIMD8<Float>.self) } ?? nbv
      let d = kv * xv
      // s = σ(β·d) = 1 / (1 + e^(−β·d)), exactly as fastSigmoid(β·d) computes it.
      let s = 1 / (1 + _expNarrow(_sigmoidClamp(nb * d)))
      let yv = d * s + qv * xv
      UnsafeMutableRawPointer(y + i).storeBytes(of: yv, as: SIMD8<Float>.self)
      if let sig { UnsafeMutableRawPointer(sig + i).storeBytes(of: s, as: SIMD8<Float>.self) }
      i += 8
    }
    // Scalar tail: the same operations as one lane above.
    while i < hw {
      let xv = x[i]
      let nb = betaE.map { -$0[i] } ?? -b
      let d = k * xv
      let s = 1 / (1 + _expNarrow(_sigmoidClamp(nb * d)))
      y[i] = d * s + q * xv
      if let sig { sig[i] = s }
      i += 1
    }
  }

  // MARK: - Backward

  @inline(__always)
  static func backwardImpl(
    x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?,
    sig: UnsafePointer<Float>?, n: Int, c: Int, hw: Int, p1: UnsafePointer<Float>,
    p2: UnsafePointer<Float>, beta: UnsafePointer<Float>, betaLayout: AconBetaLayout,
    dp1: UnsafeMutablePointer<Float>, dp2: UnsafeMutablePointer<Float>,
    dbeta: UnsafeMutablePointer<Float>
  ) {
    // x, dy, dx, sig: (N, C, HW)   p1, p2, dp1, dp2: (C)
    // beta, dbeta: (C) | (N, C) | (N, C, HW)
    precondition(n >= 0 && c >= 0 && hw >= 0, "AconKernels.backward: negative size")
    if n == 0 || c == 0 || hw == 0 { return }
    let xs = UncheckedSendable(x), dys = UncheckedSendable(dy), dxs = UncheckedSendable(dx)
    let ss = UncheckedSendable(sig), p1s = UncheckedSendable(p1), p2s = UncheckedSendable(p2)
    let bs = UncheckedSendable(beta), dp1s = UncheckedSendable(dp1)
    let dp2s = UncheckedSendable(dp2), dbs = UncheckedSendable(dbeta)
    parallelFor(c, minimumChunk: minimumChannels(n: n, hw: hw)) { range in
      let x = xs.value, dy = dys.value, p1 = p1s.value, p2 = p2s.value
      let beta = bs.value, dbeta = dbs.value
      for ch in range {
        let k = p1[ch] - p2[ch], q = p2[ch]
        // Per-channel sums: SIMD8 lanes fed by the vector body, one scalar fed by the tails.
        var acc = Sums()
        for nn in 0..<n {
          let off = (nn * c + ch) * hw
          let dxp = dxs.value.map { $0 + off }, sp = ss.value.map { $0 + off }
          let (b, betaE) = planeBeta(beta, betaLayout, nn: nn, ch: ch, c: c, off: off)
          switch betaLayout {
          case .perChannel:
            backwardPlane(x + off, dy + off, dxp, sp, hw, k, q, b, nil, nil, &acc)
          case .perElement:
            // dβ is elementwise, accumulated in place; only dp1 and dp2 are summed.
            backwardPlane(x + off, dy + off, dxp, sp, hw, k, q, b, betaE, dbeta + off, &acc)
          case .perSampleChannel:
            // dβ[n, c] gets this plane's sum alone: keep it apart from the channel's sums.
            var plane = Sums()
            backwardPlane(x + off, dy + off, dxp, sp, hw, k, q, b, nil, nil, &plane)
            acc.v1 += plane.v1
            acc.v2 += plane.v2
            acc.t1 += plane.t1
            acc.t2 += plane.t2
            dbeta[nn * c + ch] += plane.v3.fixedOrderSum() + plane.t3
          }
        }
        dp1s.value[ch] += acc.v1.fixedOrderSum() + acc.t1
        dp2s.value[ch] += acc.v2.fixedOrderSum() + acc.t2
        if betaLayout == .perChannel { dbeta[ch] += acc.v3.fixedOrderSum() + acc.t3 }
      }
    }
  }

  /// Running sums of dy·x·g (1), dy·x·(1 − g) (2) and dy·d²·w (3): lanes and scalar tails.
  struct Sums {
    var v1 = SIMD8<Float>(), v2 = SIMD8<Float>(), v3 = SIMD8<Float>()
    var t1: Float = 0, t2: Float = 0, t3: Float = 0
  }

  /// One (n, c) plane of the backward pass.
  /// x, dy, dx, sig: (HW); k = p1 − p2 and q = p2 of this channel; b = β of this plane unless
  /// `betaE` (HW) gives one per element, in which case `dbetaE` (HW) is accumulated in place and
  /// `acc`'s third sums stay untouched.
  ///
  /// Without a saved σ the vector part runs in blocks of 64 elements and two passes: σ for the
  /// whole block into an 8-vector stack buffer, then the gradients. The split keeps the long
  /// exp → divide dependency chain in a short loop of its own, which lets the out-of-order core
  /// overlap more of it (about +10% here, +20% with AVX2); the bits are those of the fused loop.
  @inline(__always)
  static func backwardPlane(
    _ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>?,
    _ sig: UnsafePointer<Float>?, _ hw: Int, _ k: Float, _ q: Float, _ b: Float,
    _ betaE: UnsafePointer<Float>?, _ dbetaE: UnsafeMutablePointer<Float>?, _ acc: inout Sums
  ) {
    let kv = SIMD8<Float>(repeating: k), qv = SIMD8<Float>(repeating: q)
    let bv = SIMD8<Float>(repeating: b)
    var a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()

    // β of the 8 elements at i.
    @inline(__always) func beta8(_ i: Int) -> SIMD8<Float> {
      betaE.map { UnsafeRawPointer($0 + i).loadUnaligned(as: SIMD8<Float>.self) } ?? bv
    }
    // s = σ(β·d) of the 8 elements at i, exactly as the forward computes it.
    @inline(__always) func sigmoid8(_ i: Int) -> SIMD8<Float> {
      let d = kv * UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
      return 1 / (1 + _expNarrow(_sigmoidClamp(-beta8(i) * d)))
    }
    // The gradients of the 8 elements at i, given their s.
    @inline(__always) func gradients8(_ i: Int, _ s: SIMD8<Float>) {
      let xv = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
      let dyv = UnsafeRawPointer(dy + i).loadUnaligned(as: SIMD8<Float>.self)
      let d = kv * xv
      let w = s * (1 - s)  // σ'(t), exactly 0 once s has rounded to 0 or 1
      let dw = d * w
      // g = s + t·w with t = β·d, as β·(d·w): finite even where β·d overflows (then w = 0).
      let g = s + beta8(i) * dw
      if let dx {
        let dxv = dyv * (kv * g + qv)
        UnsafeMutableRawPointer(dx + i).storeBytes(of: dxv, as: SIMD8<Float>.self)
      }
      let u = dyv * xv
      let ug = u * g
      a1 += ug
      a2 += u - ug
      // dy·d²·w ordered as (dy·(d·w))·d: 0 (never inf·0) whenever dy or w is 0, even where d²
      // alone would overflow.
      let db = (dyv * dw) * d
      if let dbetaE {
        let old = UnsafeRawPointer(dbetaE + i).loadUnaligned(as: SIMD8<Float>.self)
        UnsafeMutableRawPointer(dbetaE + i).storeBytes(of: old + db, as: SIMD8<Float>.self)
      } else {
        a3 += db
      }
    }

    var i = 0
    if let sig {
      while i + 8 <= hw {
        gradients8(i, UnsafeRawPointer(sig + i).loadUnaligned(as: SIMD8<Float>.self))
        i += 8
      }
    } else {
      withUnsafeTemporaryAllocation(of: SIMD8<Float>.self, capacity: 8) { sBlock in
        while i + 64 <= hw {
          for j in 0..<8 { sBlock[j] = sigmoid8(i + 8 * j) }
          for j in 0..<8 { gradients8(i + 8 * j, sBlock[j]) }
          i += 64
        }
      }
      while i + 8 <= hw {
        gradients8(i, sigmoid8(i))
        i += 8
      }
    }
    acc.v1 += a1
    acc.v2 += a2
    acc.v3 += a3

    // Scalar tail: the same operations as one lane above.
    var t1: Float = 0, t2: Float = 0, t3: Float = 0
    while i < hw {
      let xv = x[i], dyv = dy[i]
      let be = betaE.map { $0[i] } ?? b
      let d = k * xv
      let s = sig.map { $0[i] } ?? 1 / (1 + _expNarrow(_sigmoidClamp(-be * d)))
      let w = s * (1 - s)
      let dw = d * w
      let g = s + be * dw
      if let dx { dx[i] = dyv * (k * g + q) }
      let u = dyv * xv
      let ug = u * g
      t1 += ug
      t2 += u - ug
      let db = (dyv * dw) * d
      if let dbetaE { dbetaE[i] += db } else { t3 += db }
      i += 1
    }
    acc.t1 += t1
    acc.t2 += t2
    acc.t3 += t3
  }
}

extension SIMD8 where Scalar == Float {
  /// The sum of the lanes in a fixed order: ((0+4) + (2+6)) + ((1+5) + (3+7)).
  @inline(__always)
  fileprivate func fixedOrderSum() -> Float {
    let h = lowHalf + highHalf
    let q = h.lowHalf + h.highHalf
    return q[0] + q[1]
  }
}
