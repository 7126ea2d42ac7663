// FastMath: a polynomial e^x and the logistic sigmoid built on it, for SIMD8<Float> and for a
// scalar Float, used by the fused ACON kernels (one exp per element).
//
// The scalar functions perform exactly the same IEEE operations in the same order as one SIMD
// lane (Swift never contracts a·b + c into an FMA), so a kernel's scalar tail gives the same
// bits as its vector body: results never depend on where an element sits in a row.
//
// Algorithm (after Cephes expf): n = round(x·log2 e) by the 1.5·2²³ "magic number" trick;
// r = x − n·ln2 with ln2 split in two (Cody–Waite); e^r ≈ 1 + r + r²·P(r) with a degree-4 P
// fitted (minimax, relative error) on [−ln2/2, ln2/2]; then p·2ⁿ.
//   - fastExp scales by 2^⌊n/2⌋ · 2^(n−⌊n/2⌋), two normal factors for every n in [−150, 128],
//     so overflow to +inf and gradual underflow to subnormals and 0 come out of the final
//     multiply with a single rounding.
//   - fastSigmoid only needs e^v on [−86.5, 88.8] (below, 1 + e^v rounds to 1 anyway), so it
//     scales by (p + p)·2^(n−1), one normal factor: 5 fewer vector operations, same bits.
// All clamps are written `v > hi ? hi : v` (lane-wise `replacing(with:where:)`): a comparison
// with NaN is false, so NaN passes through untouched, where min/max could drop it. (LLVM still
// compiles them to minps/maxps, with the operand order that keeps NaN.)
//
// Constants, written as literals so that they fold into callers in other modules too:
//   1.442_695_04      log2 e
//   12_582_912        1.5·2²³, the rounding magic number; bit pattern 0x4B40_0000. All its set
//                     bits are at or above bit 22, so bits(magic + n) << 23 == n << 23 (mod 2³²)
//   0.693_359_375     ln2, high part (355/512, so n·it is exact for |n| ≤ 2¹⁵)
//   −2.121_944_4e−4   ln2 − high part
//   c2…c6             e^r ≈ 1 + r + r²·(c2 + c3·r + c4·r² + c5·r³ + c6·r⁴); truncation error
//                     3.1e−9 on |r| ≤ ln2/2, far below Float rounding

// MARK: - Shared steps (SIMD8)

/// Range reduction and polynomial: returns `t = magic + n` (n = round(v·log2 e), in t's low
/// mantissa bits) and `p ≈ e^r`, r = v − n·ln2, p in [0.70, 1.42] (NaN for NaN).
@inlinable @inline(__always)
func _expReduce(_ v: SIMD8<Float>) -> (t: SIMD8<Float>, p: SIMD8<Float>) {
  let t = v * 1.442_695_04 + 12_582_912  // magic + n, exactly
  let n = t - 12_582_912
  let r = (v - n * 0.693_359_375) - n * (-2.121_944_4e-4)  // |r| ≤ ln2/2 (+ rounding)
  let r2 = r * r
  // P(r) = (c2 + c3·r) + r²·((c4 + c5·r) + r²·c6), Estrin's scheme: a shorter dependency
  // chain than Horner's for the same operation count.
  let a = r * 0.166_665_211_319_923_4 + 0.499_999_940_395_355_2
  let b = r * 0.008_368_744_514_882_565 + 0.041_668_392_717_838_29
  let q = (r2 * 0.001_381_452_777_422_964_6 + b) * r2 + a
  return (t, (r2 * q + r) + 1)
}

/// Clamps to `[−104, 88.8]`, the domain of `_expCore`; NaN passes through.
@inlinable @inline(__always)
func _expClamp(_ x: SIMD8<Float>) -> SIMD8<Float> {
  let v = x.replacing(with: 88.8, where: x .> 88.8)  // e^88.8: n = 128, rounds to +inf
  return v.replacing(with: -104, where: v .< -104)  // e^−104 ≈ 6.8e−46 rounds to 0
}

/// e^v for v in `[−104, 88.8]` (or NaN), with gradual underflow.
@inlinable @inline(__always)
func _expCore(_ v: SIMD8<Float>) -> SIMD8<Float> {
  let (t, p) = _expReduce(v)
  // 2ⁿ = 2^h · 2^(n−h), h = n >> 1; both exponents lie in [−75, 64]. For NaN, p is NaN.
  let ni = unsafeBitCast(t, to: SIMD8<Int32>.self) &- 0x4B40_0000
  let h = ni &>> 1
  let s1 = unsafeBitCast((h &+ 127) &<< 23, to: SIMD8<Float>.self)
  let s2 = unsafeBitCast((ni &- h &+ 127) &<< 23, to: SIMD8<Float>.self)
  return (p * s1) * s2
}

/// Clamps to `[−86.5, 88.8]`, the domain of `_expNarrow`; NaN passes through.
@inlinable @inline(__always)
func _sigmoidClamp(_ x: SIMD8<Float>) -> SIMD8<Float> {
  let v = x.replacing(with: 88.8, where: x .> 88.8)
  return v.replacing(with: -86.5, where: v .< -86.5)  // n ≥ −125, so 2^(n−1) is normal
}

/// e^v for v in `[−86.5, 88.8]` (or NaN): the same bits as `_expCore` there.
@inlinable @inline(__always)
func _expNarrow(_ v: SIMD8<Float>) -> SIMD8<Float> {
  let (t, p) = _expReduce(v)
  // 2^(n−1) built directly: bits(t) << 23 == n << 23, plus the exponent bias 126.
  let scale = unsafeBitCast(
    (unsafeBitCast(t, to: SIMD8<Int32>.self) &<< 23) &+ 0x3F00_0000, to: SIMD8<Float>.self)
  return (p + p) * scale  // 2p·2^(n−1) = p·2ⁿ, one rounding; +inf past Float.max
}

// MARK: - Public SIMD8

/// e^x, lane-wise, by a polynomial (see the file comment).
///
/// Accuracy: maximum relative error **1.0e−7** (≈ 0.84 ulp; 8.3e−8 measured exhaustively over
/// every Float in the range) for x in `[−87.33, 88.72]`, where e^x is a normal Float. Below
/// that the result is subnormal, with absolute error at most 1e−7·e^x + 2⁻¹⁴⁹.
/// Limits: x > 88.73 (and +inf) gives +inf, x < −103.98 (and −inf) gives 0, e^0 = 1 exactly,
/// NaN gives NaN.
@inlinable @inline(__always)
public func fastExp(_ x: SIMD8<Float>) -> SIMD8<Float> { _expCore(_expClamp(x)) }

/// σ(x) = 1 / (1 + e^(−x)), lane-wise; the same bits as `1 / (1 + fastExp(-x))`.
///
/// Stable for every input: e^(−x) may be +inf (then σ = 1/inf = 0 exactly) but never inf/inf.
/// σ(x) = 1 exactly for x ≥ 16.7, 0 exactly for x < −88.73, ½ exactly at 0; NaN gives NaN.
/// Relative error ≤ 3e−7 (the exp error plus two roundings).
@inlinable @inline(__always)
public func fastSigmoid(_ x: SIMD8<Float>) -> SIMD8<Float> {
  1 / (1 + _expNarrow(_sigmoidClamp(-x)))
}

// MARK: - Scalar (bit-identical to one SIMD lane)

@inlinable @inline(__always)
func _expReduce(_ v: Float) -> (t: Float, p: Float) {
  let t = v * 1.442_695_04 + 12_582_912
  let n = t - 12_582_912
  let r = (v - n * 0.693_359_375) - n * (-2.121_944_4e-4)
  let r2 = r * r
  let a = r * 0.166_665_211_319_923_4 + 0.499_999_940_395_355_2
  let b = r * 0.008_368_744_514_882_565 + 0.041_668_392_717_838_29
  let q = (r2 * 0.001_381_452_777_422_964_6 + b) * r2 + a
  return (t, (r2 * q + r) + 1)
}

@inlinable @inline(__always)
func _expClamp(_ x: Float) -> Float {
  let v = x > 88.8 ? 88.8 : x
  return v < -104 ? -104 : v
}

@inlinable @inline(__always)
func _expCore(_ v: Float) -> Float {
  let (t, p) = _expReduce(v)
  let ni = Int32(bitPattern: t.bitPattern) &- 0x4B40_0000
  let h = ni &>> 1
  let s1 = Float(bitPattern: UInt32(bitPattern: (h &+ 127) &<< 23))
  let s2 = Float(bitPattern: UInt32(bitPattern: (ni &- h &+ 127) &<< 23))
  return (p * s1) * s2
}

@inlinable @inline(__always)
func _sigmoidClamp(_ x: Float) -> Float {
  let v = x > 88.8 ? 88.8 : x
  return v < -86.5 ? -86.5 : v
}

@inlinable @inline(__always)
func _expNarrow(_ v: Float) -> Float {
  let (t, p) = _expReduce(v)
  let scale = Float(bitPattern: (t.bitPattern &<< 23) &+ 0x3F00_0000)
  return (p + p) * scale
}

// MARK: - Public scalar

/// e^x for one Float: the same operations as one lane of `fastExp(_: SIMD8<Float>)`, so the
/// same bits. Maximum relative error 1.0e−7 on `[−87.33, 88.72]`; limits as for the SIMD form.
@inlinable @inline(__always)
public func fastExp(_ x: Float) -> Float { _expCore(_expClamp(x)) }

/// σ(x) = 1 / (1 + e^(−x)) for one Float: bit-identical to one lane of
/// `fastSigmoid(_: SIMD8<Float>)`, and to `1 / (1 + fastExp(-x))`.
@inlinable @inline(__always)
public func fastSigmoid(_ x: Float) -> Float { 1 / (1 + _expNarrow(_sigmoidClamp(-x))) }
