// FastMath: a polynomial e^x and the logistic sigmoid built on it, for SIMD8<Float> and for a
// scalar Float, used by the fused ACON kernels (one exp per element).
//
// The scalar functions perform exactly the same IEEE operations in the same order as one SIMD
// lane (no FMA contraction happens in Swift), so a kernel's scalar tail gives the same bits as
// its vector body: results never depend on where an element sits in a row.
//
// Algorithm (Cephes expf, after Moshier): n = round(x·log2 e) by the 1.5·2²³ "magic number"
// trick, r = x − n·ln2 with ln2 split in two (Cody–Waite), e^r ≈ 1 + r + r²·P(r) with a
// degree-4 P fitted (minimax, relative error) on [−ln2/2, ln2/2], then the result is scaled by
// 2ⁿ as 2^⌊n/2⌋ · 2^(n−⌊n/2⌋) so that both factors are normal numbers for every n in
// [−150, 128]: overflow to +inf and gradual underflow to subnormals and 0 come out of the
// final multiply with a single rounding.
//
// Clamps are written `v > hi ? hi : v` (lane-wise `replacing(with:where:)`): a comparison with
// NaN is false, so NaN passes through untouched, where min/max would be free to drop it.

// Constants, written as literals so that they fold into callers in other modules too:
//   88.8, −104        clamp: e^88.8 overflows (n = 128 and the product rounds to +inf);
//                     e^−104 ≈ 6.8e−46 rounds to 0
//   1.442_695_04      log2 e
//   12_582_912        1.5·2²³, the rounding "magic number"; bit pattern 0x4B40_0000
//   0.693_359_375     ln2 high part (355/512, so n·it is exact for |n| ≤ 2¹⁵)
//   −2.121_944_4e−4   ln2 − high part
//   c2…c6             e^r ≈ 1 + r + r²·(c2 + c3·r + c4·r² + c5·r³ + c6·r⁴), minimax for relative
//                     error on |r| ≤ ln2/2 (truncation error 3.1e−9, far below Float rounding)

// MARK: - SIMD8

/// Clamps to `[−104, 88.8]`, the range where `_expCore` is valid; NaN passes through.
@inlinable @inline(__always)
func _expClamp(_ x: SIMD8<Float>) -> SIMD8<Float> {
  var v = x.replacing(with: 88.8, where: x .> 88.8)
  v = v.replacing(with: -104, where: v .< -104)
  return v
}

/// e^v for v already clamped to `[−104, 88.8]` (or NaN).
@inlinable @inline(__always)
func _expCore(_ v: SIMD8<Float>) -> SIMD8<Float> {
  let t = v * 1.442_695_04 + 12_582_912  // magic + n, exactly
  let n = t - 12_582_912
  let r = (v - n * 0.693_359_375) - n * (-2.121_944_4e-4)  // |r| ≤ ln2/2 (+ rounding)
  let r2 = r * r
  var p = r * 0.001_381_452_777_422_964_6 + 0.008_368_744_514_882_565
  p = p * r + 0.041_668_392_717_838_29
  p = p * r + 0.166_665_211_319_923_4
  p = p * r + 0.499_999_940_395_355_2
  p = (r2 * p + r) + 1
  // 2ⁿ = 2^h · 2^(n−h), h = n >> 1; both exponents lie in [−75, 64]. For NaN, p is NaN.
  let ni = unsafeBitCast(t, to: SIMD8<Int32>.self) &- 0x4B40_0000
  let h = ni &>> 1
  let s1 = unsafeBitCast((h &+ 127) &<< 23, to: SIMD8<Float>.self)
  let s2 = unsafeBitCast((ni &- h &+ 127) &<< 23, to: SIMD8<Float>.self)
  return (p * s1) * s2
}

/// e^x, lane-wise, by a polynomial (see the file comment).
///
/// Accuracy: maximum relative error **1.0e−7** (≈ 0.84 ulp of the result; 8.2e−8 measured
/// exhaustively over every Float) for x in `[−87.33, 88.72]`, where e^x is a normal Float.
/// Below that the result is subnormal and its absolute error is at most 1e−7·e^x + 2⁻¹⁴⁹.
/// Limits: x > 88.73 (and +inf) gives +inf, x < −103.98 (and −inf) gives 0, e^0 = 1 exactly,
/// NaN gives NaN.
@inlinable @inline(__always)
public func fastExp(_ x: SIMD8<Float>) -> SIMD8<Float> { _expCore(_expClamp(x)) }

/// σ(x) = 1 / (1 + e^(−x)), lane-wise, with `fastExp`.
///
/// Stable for every input: e^(−x) may be +inf (then σ = 1/inf = 0 exactly) but the division is
/// never inf/inf. σ(x) = 1 exactly for x ≥ 17, 0 exactly for x ≤ −88.8, ½ exactly at 0,
/// NaN for NaN. Relative error ≤ ~2.5e−7 (the exp error plus two roundings).
@inlinable @inline(__always)
public func fastSigmoid(_ x: SIMD8<Float>) -> SIMD8<Float> { 1 / (1 + fastExp(-x)) }

// MARK: - Scalar (bit-identical to one SIMD lane)

@inlinable @inline(__always)
func _expClamp(_ x: Float) -> Float {
  var v = x > 88.8 ? 88.8 : x
  v = v < -104 ? -104 : v
  return v
}

@inlinable @inline(__always)
func _expCore(_ v: Float) -> Float {
  let t = v * 1.442_695_04 + 12_582_912
  let n = t - 12_582_912
  let r = (v - n * 0.693_359_375) - n * (-2.121_944_4e-4)
  let r2 = r * r
  var p = r * 0.001_381_452_777_422_964_6 + 0.008_368_744_514_882_565
  p = p * r + 0.041_668_392_717_838_29
  p = p * r + 0.166_665_211_319_923_4
  p = p * r + 0.499_999_940_395_355_2
  p = (r2 * p + r) + 1
  let ni = Int32(bitPattern: t.bitPattern) &- 0x4B40_0000
  let h = ni &>> 1
  let s1 = Float(bitPattern: UInt32(bitPattern: (h &+ 127) &<< 23))
  let s2 = Float(bitPattern: UInt32(bitPattern: (ni &- h &+ 127) &<< 23))
  return (p * s1) * s2
}

/// e^x for one Float: the same operations as one lane of `fastExp(_: SIMD8<Float>)`, so the
/// same bits. Maximum relative error 1.0e−7 on `[−87.33, 88.72]`; limits as for the SIMD form.
@inlinable @inline(__always)
public func fastExp(_ x: Float) -> Float { _expCore(_expClamp(x)) }

/// σ(x) = 1 / (1 + e^(−x)) for one Float: bit-identical to one lane of
/// `fastSigmoid(_: SIMD8<Float>)`.
@inlinable @inline(__always)
public func fastSigmoid(_ x: Float) -> Float { 1 / (1 + fastExp(-x)) }
