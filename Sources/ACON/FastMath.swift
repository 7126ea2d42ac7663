// FastMath: the polynomial e^x and the logistic sigmoid of the fused ACON kernels, for
// SIMD8<Float> and for a scalar Float. The implementation is C (CAconKernels, AconKernels.c:
// exp_reduce, exp_full, sigmoid_neg), shared with the kernels so that the tests here check the
// very code the kernels run; these wrappers exist for tests and for callers who want the
// kernels' exact σ. They are not meant for hot loops (one C call per SIMD8 or Float).
//
// Algorithm (after Cephes expf): n = round(x·log2 e) by the 1.5·2²³ "magic number" trick;
// r = x − n·ln2 with ln2 split in two (Cody–Waite); e^r ≈ 1 + r + r²·P(r) with a degree-4 P
// fitted (minimax, relative error) on [−ln2/2, ln2/2], truncation error 3.1e−9; then p·2ⁿ,
// as two normal factors 2^⌊n/2⌋·2^(n−⌊n/2⌋) so that overflow to +inf and gradual underflow come
// out of the last multiply with a single rounding. On a CPU with AVX2 and FMA (8 lanes) or
// AVX-512 (16 lanes) every a·b + c is one FMA, the same bits in both; elsewhere it is a multiply
// and an add. The two give slightly different bits (both within the bounds below); on one
// machine the results are fixed, and a scalar equals a lane.
// Clamps compare (`v > hi ? hi : v`), so NaN passes through.
import CAconKernels

/// e^x, lane-wise, by a polynomial (see the file comment).
///
/// Accuracy: maximum relative error **1.0e−7** for x in `[−87.33, 88.72]`, where e^x is a normal
/// Float (measured exhaustively over every Float there: 8.6e−8 with FMA, 8.3e−8 without). Below
/// that the result is subnormal, with absolute error at most 1e−7·e^x + 2⁻¹⁴⁹.
/// Limits: x > 88.73 (and +inf) gives +inf, x < −103.98 (and −inf) gives 0, e^0 = 1 exactly,
/// NaN gives NaN.
public func fastExp(_ x: SIMD8<Float>) -> SIMD8<Float> { apply8(acon_exp, x) }

/// σ(x) = 1 / (1 + e^(−x)), lane-wise; the same bits as `1 / (1 + fastExp(-x))`, and as the s
/// that the ACON kernels compute for t = x.
///
/// Stable for every input: e^(−x) may be +inf (then σ = 1/inf = 0 exactly) but never inf/inf.
/// σ(x) = 1 exactly for x ≥ 16.7, 0 exactly for x < −88.73, ½ exactly at 0; NaN gives NaN.
/// Relative error ≤ 3e−7 (the exp error plus two roundings; 1.5e−7 measured over every Float in
/// `[−87.33, 88.72]`, with or without FMA).
public func fastSigmoid(_ x: SIMD8<Float>) -> SIMD8<Float> { apply8(acon_sigmoid, x) }

/// e^x for one Float: the same bits as one lane of `fastExp(_: SIMD8<Float>)`. Maximum relative
/// error 1.0e−7 on `[−87.33, 88.72]`; limits as for the SIMD form.
public func fastExp(_ x: Float) -> Float { apply1(acon_exp, x) }

/// σ(x) = 1 / (1 + e^(−x)) for one Float: bit-identical to one lane of
/// `fastSigmoid(_: SIMD8<Float>)`, and to `1 / (1 + fastExp(-x))`.
public func fastSigmoid(_ x: Float) -> Float { apply1(acon_sigmoid, x) }

private typealias ArrayFunction = (UnsafePointer<Float>?, UnsafeMutablePointer<Float>?, Int) -> Void

private func apply8(_ f: ArrayFunction, _ x: SIMD8<Float>) -> SIMD8<Float> {
  var input = x, output = SIMD8<Float>()
  withUnsafePointer(to: &input) { i in
    withUnsafeMutablePointer(to: &output) { o in
      i.withMemoryRebound(to: Float.self, capacity: 8) { ip in
        o.withMemoryRebound(to: Float.self, capacity: 8) { op in f(ip, op, 8) }
      }
    }
  }
  return output
}

private func apply1(_ f: ArrayFunction, _ x: Float) -> Float {
  var input = x, output: Float = 0
  f(&input, &output, 1)
  return output
}
