// AconKernels.c: the fused ACON-C per-channel loops and the polynomial exp/sigmoid, written once
// with GCC/Clang vector extensions (8 floats) and instantiated twice: an AVX2+FMA variant
// (per-function `target` attribute, FMA for every a·b + c of the exp and the kernels) and a
// portable one (baseline x86-64 / any target, no FMA: the same operations in the same order as
// the former Swift SIMD8 code, so the same elementwise bits; only the sums' order changed). The
// variant is chosen at run time with __builtin_cpu_supports.
//
// Every element goes through the same 8-lane code: a row's last hw mod 8 elements are copied
// into a zero-padded 8-float buffer, so results never depend on an element's position.
// Contraction is off: an FMA appears exactly where `madd` asks for one, never by the compiler's
// choice, so the bits are fixed per variant.
//
// Exp (after Cephes expf): n = round(x·log2 e) by the 1.5·2²³ magic number; r = x − n·ln2 with
// ln2 split in two (Cody–Waite); e^r ≈ 1 + r + r²·P(r), P of degree 4 (minimax, relative error,
// on [−ln2/2, ln2/2], truncation error 3.1e−9); then p·2ⁿ. `exp_full` scales by two normal
// factors 2^⌊n/2⌋·2^(n−⌊n/2⌋) for gradual underflow; the sigmoid only needs e^v on
// [−86.5, 88.8] and scales by (p + p)·2^(n−1), one normal factor, the same bits there.
// Clamps are `v > hi ? hi : v` selects: a comparison with NaN is false, so NaN passes through.
#include "CAconKernels.h"

#include <stdint.h>
#include <string.h>

#pragma STDC FP_CONTRACT OFF
// The 8-float helpers below are always inlined, so no 32-byte vector ever crosses a call between
// the portable and AVX2 code: the ABI difference -Wpsabi warns about cannot arise.
#pragma clang diagnostic ignored "-Wpsabi"

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

#define INL static inline __attribute__((always_inline))
#define AVX2 __attribute__((target("avx2,fma")))

// MARK: - 8-lane helpers

INL v8f splat(float a) { return (v8f){a, a, a, a, a, a, a, a}; }

INL v8f load8(const float *p) {
  v8f v;
  memcpy(&v, p, sizeof v);
  return v;
}

INL void store8(float *p, v8f v) { memcpy(p, &v, sizeof v); }

/// a·b + c: one FMA (one rounding) in the AVX2 variant, a multiply and an add otherwise.
INL v8f madd(v8f a, v8f b, v8f c, const int fma) {
  return fma ? __builtin_elementwise_fma(a, b, c) : a * b + c;
}

/// m ? a : b, lane-wise, for a comparison mask m.
INL v8f select8(v8i m, v8f a, v8f b) { return (v8f)(((v8i)a & m) | ((v8i)b & ~m)); }

/// The sum of the lanes in a fixed order: ((0+4) + (2+6)) + ((1+5) + (3+7)).
INL float fixed_order_sum(v8f v) {
  typedef float v4f __attribute__((vector_size(16)));
  typedef float v2f __attribute__((vector_size(8)));
  v4f h = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
  v2f q = __builtin_shufflevector(h, h, 0, 1) + __builtin_shufflevector(h, h, 2, 3);
  return q[0] + q[1];
}

// MARK: - Exp and sigmoid

/// Range reduction and polynomial: t = magic + n (n = round(v·log2 e)) and p ≈ e^r in
/// [0.70, 1.42], r = v − n·ln2 (NaN for NaN).
INL v8f exp_reduce(v8f v, v8f *t_out, const int F) {
  const v8f magic = splat(12582912.0f);  // 1.5·2²³, bits 0x4B40_0000
  v8f t = madd(v, splat(1.44269504f), magic, F);  // magic + n, exactly
  v8f n = t - magic;
  v8f r = madd(n, splat(-0.693359375f), v, F);  // ln2 high part 355/512: n·it is exact
  r = madd(n, splat(2.1219444e-4f), r, F);      // − n·(ln2 − high part)
  v8f r2 = r * r;
  // P(r) = (c2 + c3·r) + r²·((c4 + c5·r) + r²·c6), Estrin's scheme.
  v8f a = madd(r, splat(0.1666652113199234f), splat(0.4999999403953552f), F);
  v8f b = madd(r, splat(0.008368744514882565f), splat(0.04166839271783829f), F);
  v8f q = madd(madd(r2, splat(0.0013814527774229646f), b, F), r2, a, F);
  *t_out = t;
  return madd(r2, q, r, F) + 1.0f;
}

/// e^x for any x: clamps to [−104, 88.8] (e^88.8 rounds to +inf, e^−104 to 0), gradual underflow.
INL v8f exp_full(v8f x, const int F) {
  v8f v = select8(x > splat(88.8f), splat(88.8f), x);
  v = select8(v < splat(-104.0f), splat(-104.0f), v);
  v8f t, p = exp_reduce(v, &t, F);
  // 2ⁿ = 2^h·2^(n−h), h = n >> 1; both exponents lie in [−75, 64]. For NaN, p is NaN.
  v8i ni = (v8i)t - 0x4B400000;
  v8i h = ni >> 1;
  v8f s1 = (v8f)((h + 127) << 23), s2 = (v8f)((ni - h + 127) << 23);
  return (p * s1) * s2;
}

/// σ from its negated argument: 1/(1 + e^v), v = −t clamped to [−86.5, 88.8] (σ is exactly 1,
/// resp. 0, beyond; n ≥ −125 keeps 2^(n−1) normal). Same bits as 1/(1 + exp_full(v)).
INL v8f sigmoid_neg(v8f v, const int F) {
  v = select8(v > splat(88.8f), splat(88.8f), v);
  v = select8(v < splat(-86.5f), splat(-86.5f), v);
  v8f t, p = exp_reduce(v, &t, F);
  v8f scale = (v8f)(((v8i)t << 23) + 0x3F000000);  // 2^(n−1)
  v8f e = (p + p) * scale;  // p·2ⁿ, one rounding; +inf past Float.max
  return splat(1.0f) / (splat(1.0f) + e);
}

// MARK: - Forward

/// y and s of 8 elements. nb = −β.
INL v8f forward8(v8f xv, v8f nb, v8f kv, v8f qv, v8f *s_out, const int F) {
  v8f d = kv * xv;
  v8f s = sigmoid_neg(nb * d, F);
  *s_out = s;
  return madd(d, s, qv * xv, F);
}

/// One plane: x, y, sig (hw); β is `b` unless `betaE` (hw) gives one per element.
INL void forward_plane(
    const float *x, float *y, float *sig, ptrdiff_t hw, float k, float q, float b,
    const float *betaE, const int F, const int hasSig, const int perElement) {
  const v8f kv = splat(k), qv = splat(q), nbv = splat(-b);
  ptrdiff_t i = 0;
  for (; i + 8 <= hw; i += 8) {
    v8f s, yv = forward8(load8(x + i), perElement ? -load8(betaE + i) : nbv, kv, qv, &s, F);
    store8(y + i, yv);
    if (hasSig) store8(sig + i, s);
  }
  if (i < hw) {  // tail, zero-padded to 8 lanes
    size_t m = (size_t)(hw - i) * sizeof(float);
    float xb[8] = {0}, bb[8] = {0}, yb[8], sb[8];
    memcpy(xb, x + i, m);
    if (perElement) memcpy(bb, betaE + i, m);
    v8f s, yv = forward8(load8(xb), perElement ? -load8(bb) : nbv, kv, qv, &s, F);
    store8(yb, yv);
    store8(sb, s);
    memcpy(y + i, yb, m);
    if (hasSig) memcpy(sig + i, sb, m);
  }
}

INL void forward_channel(
    const float *x, float *y, float *sig, ptrdiff_t n, ptrdiff_t hw, ptrdiff_t planeStride,
    float k, float q, const float *beta, ptrdiff_t betaStride, AconBetaMode mode, const int F,
    const int hasSig, const int perElement) {
  for (ptrdiff_t j = 0; j < n; j++) {
    ptrdiff_t off = j * planeStride;
    const float *bp = mode == AconBetaModeChannel ? beta : beta + j * betaStride;
    forward_plane(
        x + off, y + off, hasSig ? sig + off : NULL, hw, k, q, perElement ? 0 : *bp, bp, F,
        hasSig, perElement);
  }
}

#define FORWARD_VARIANT(NAME, ATTR, F)                                                        \
  ATTR static void NAME(                                                                      \
      const float *x, float *y, float *sig, ptrdiff_t n, ptrdiff_t hw, ptrdiff_t planeStride, \
      float k, float q, const float *beta, ptrdiff_t betaStride, AconBetaMode mode) {          \
    int pe = mode == AconBetaModeElement;                                                     \
    if (sig) {                                                                                \
      if (pe) forward_channel(x, y, sig, n, hw, planeStride, k, q, beta, betaStride, mode, F, 1, 1); \
      else forward_channel(x, y, sig, n, hw, planeStride, k, q, beta, betaStride, mode, F, 1, 0); \
    } else {                                                                                  \
      if (pe) forward_channel(x, y, sig, n, hw, planeStride, k, q, beta, betaStride, mode, F, 0, 1); \
      else forward_channel(x, y, sig, n, hw, planeStride, k, q, beta, betaStride, mode, F, 0, 0); \
    }                                                                                         \
  }

FORWARD_VARIANT(forward_avx2, AVX2, 1)
FORWARD_VARIANT(forward_portable, , 0)

// MARK: - Backward

/// Per-plane lane sums of dy·x·g (1), dy·x·(1 − g) (2) and dy·d²·w (3).
typedef struct {
  v8f a1, a2, a3;
} Sums;

/// The gradients of 8 elements given their s; returns dx and the dβ terms, adds to the sums.
/// d = k·x, w = s·(1 − s) (exactly 0 once s has rounded to 0 or 1), g = s + β·(d·w) (finite
/// even where β·d overflows), dβ term (dy·(d·w))·d (0, never inf·0, when dy or w is 0).
INL v8f grad8(
    v8f xv, v8f dyv, v8f s, v8f bv, v8f kv, v8f qv, Sums *acc, v8f *db_out, const int F) {
  v8f d = kv * xv;
  v8f w = s * (splat(1.0f) - s);
  v8f dw = d * w;
  v8f g = madd(bv, dw, s, F);
  v8f u = dyv * xv;
  v8f ug = u * g;
  acc->a1 += ug;
  acc->a2 += u - ug;  // exact when g ≈ 1 (Sterbenz)
  *db_out = (dyv * dw) * d;
  return dyv * madd(kv, g, qv, F);
}

/// One plane: x, dy, dx, sig, betaE, dbetaE (hw). β is `b` unless perElement; then dβ is
/// accumulated into dbetaE, otherwise into acc->a3.
INL void backward_plane(
    const float *x, const float *dy, float *dx, const float *sig, ptrdiff_t hw, float k, float q,
    float b, const float *betaE, float *dbetaE, Sums *acc, const int F, const int hasSig,
    const int hasDx, const int perElement) {
  const v8f kv = splat(k), qv = splat(q), bv = splat(b);
  ptrdiff_t i = 0;
  if (!hasSig) {
    // Blocks of 64: σ of the block first, then the gradients. The short exp → divide loop lets
    // the out-of-order core overlap more of its latency; the bits are those of the fused loop.
    for (; i + 64 <= hw; i += 64) {
      v8f sb[8];
      for (int j = 0; j < 8; j++) {
        v8f be = perElement ? load8(betaE + i + 8 * j) : bv;
        sb[j] = sigmoid_neg(-be * (kv * load8(x + i + 8 * j)), F);
      }
      for (int j = 0; j < 8; j++) {
        ptrdiff_t o = i + 8 * j;
        v8f xv = load8(x + o), be = perElement ? load8(betaE + o) : bv;
        v8f db, dxv = grad8(xv, load8(dy + o), sb[j], be, kv, qv, acc, &db, F);
        if (hasDx) store8(dx + o, dxv);
        if (perElement) store8(dbetaE + o, load8(dbetaE + o) + db);
        else acc->a3 += db;
      }
    }
  }
  for (; i + 8 <= hw; i += 8) {
    v8f xv = load8(x + i), be = perElement ? load8(betaE + i) : bv;
    v8f s = hasSig ? load8(sig + i) : sigmoid_neg(-be * (kv * xv), F);
    v8f db, dxv = grad8(xv, load8(dy + i), s, be, kv, qv, acc, &db, F);
    if (hasDx) store8(dx + i, dxv);
    if (perElement) store8(dbetaE + i, load8(dbetaE + i) + db);
    else acc->a3 += db;
  }
  if (i < hw) {  // tail, zero-padded: x = dy = 0 adds +0 to every sum
    size_t m = (size_t)(hw - i) * sizeof(float);
    float xb[8] = {0}, dyb[8] = {0}, sb[8] = {0}, bb[8] = {0}, dbb[8] = {0}, dxb[8];
    memcpy(xb, x + i, m);
    memcpy(dyb, dy + i, m);
    if (hasSig) memcpy(sb, sig + i, m);
    if (perElement) {
      memcpy(bb, betaE + i, m);
      memcpy(dbb, dbetaE + i, m);
    }
    v8f xv = load8(xb), be = perElement ? load8(bb) : bv;
    v8f s = hasSig ? load8(sb) : sigmoid_neg(-be * (kv * xv), F);
    v8f db, dxv = grad8(xv, load8(dyb), s, be, kv, qv, acc, &db, F);
    store8(dxb, dxv);
    if (hasDx) memcpy(dx + i, dxb, m);
    if (perElement) {
      store8(dbb, load8(dbb) + db);
      memcpy(dbetaE + i, dbb, m);
    } else {
      acc->a3 += db;
    }
  }
}

INL void backward_channel(
    const float *x, const float *dy, float *dx, const float *sig, ptrdiff_t n, ptrdiff_t hw,
    ptrdiff_t planeStride, float k, float q, const float *beta, float *dbeta,
    ptrdiff_t betaStride, AconBetaMode mode, float *dp1, float *dp2, const int F,
    const int hasSig, const int hasDx, const int perElement) {
  v8f c1 = splat(0), c2 = splat(0), c3 = splat(0);
  for (ptrdiff_t j = 0; j < n; j++) {
    ptrdiff_t off = j * planeStride;
    ptrdiff_t boff = mode == AconBetaModeChannel ? 0 : j * betaStride;
    Sums plane = {splat(0), splat(0), splat(0)};
    backward_plane(
        x + off, dy + off, hasDx ? dx + off : NULL, hasSig ? sig + off : NULL, hw, k, q,
        perElement ? 0 : beta[boff], beta + boff, dbeta + boff, &plane, F, hasSig, hasDx,
        perElement);
    c1 += plane.a1;
    c2 += plane.a2;
    if (mode == AconBetaModePlane) dbeta[boff] += fixed_order_sum(plane.a3);
    else c3 += plane.a3;
  }
  *dp1 += fixed_order_sum(c1);
  *dp2 += fixed_order_sum(c2);
  if (mode == AconBetaModeChannel) *dbeta += fixed_order_sum(c3);
}

#define BACKWARD_CALL(S, D, E)                                                               \
  backward_channel(x, dy, dx, sig, n, hw, planeStride, k, q, beta, dbeta, betaStride, mode, \
                   dp1, dp2, F, S, D, E)

#define BACKWARD_VARIANT(NAME, ATTR, FV)                                                      \
  ATTR static void NAME(                                                                      \
      const float *x, const float *dy, float *dx, const float *sig, ptrdiff_t n, ptrdiff_t hw, \
      ptrdiff_t planeStride, float k, float q, const float *beta, float *dbeta,               \
      ptrdiff_t betaStride, AconBetaMode mode, float *dp1, float *dp2) {                      \
    enum { F = FV };                                                                          \
    int pe = mode == AconBetaModeElement;                                                     \
    switch ((sig != NULL) * 4 + (dx != NULL) * 2 + pe) {                                     \
    case 0: BACKWARD_CALL(0, 0, 0); break;                                                    \
    case 1: BACKWARD_CALL(0, 0, 1); break;                                                    \
    case 2: BACKWARD_CALL(0, 1, 0); break;                                                    \
    case 3: BACKWARD_CALL(0, 1, 1); break;                                                    \
    case 4: BACKWARD_CALL(1, 0, 0); break;                                                    \
    case 5: BACKWARD_CALL(1, 0, 1); break;                                                    \
    case 6: BACKWARD_CALL(1, 1, 0); break;                                                    \
    default: BACKWARD_CALL(1, 1, 1); break;                                                   \
    }                                                                                         \
  }

BACKWARD_VARIANT(backward_avx2, AVX2, 1)
BACKWARD_VARIANT(backward_portable, , 0)

// MARK: - Exp and sigmoid over arrays

INL void map_channel(const float *x, float *y, ptrdiff_t count, const int F, const int sigmoid) {
  ptrdiff_t i = 0;
  for (; i + 8 <= count; i += 8) {
    v8f v = load8(x + i);
    store8(y + i, sigmoid ? sigmoid_neg(-v, F) : exp_full(v, F));
  }
  if (i < count) {
    size_t m = (size_t)(count - i) * sizeof(float);
    float b[8] = {0};
    memcpy(b, x + i, m);
    v8f v = load8(b);
    store8(b, sigmoid ? sigmoid_neg(-v, F) : exp_full(v, F));
    memcpy(y + i, b, m);
  }
}

AVX2 static void exp_avx2(const float *x, float *y, ptrdiff_t c) { map_channel(x, y, c, 1, 0); }
static void exp_portable(const float *x, float *y, ptrdiff_t c) { map_channel(x, y, c, 0, 0); }
AVX2 static void sigmoid_avx2(const float *x, float *y, ptrdiff_t c) { map_channel(x, y, c, 1, 1); }
static void sigmoid_portable(const float *x, float *y, ptrdiff_t c) { map_channel(x, y, c, 0, 1); }

// MARK: - Dispatch

static bool cpu_has_avx2_fma(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

/// 1 when the AVX2+FMA variants run. Read with relaxed atomics; set once lazily (every thread
/// computes the same value) or by acon_kernels_set_avx2_enabled.
static int use_avx2 = -1;

static bool avx2(void) {
  int v = __atomic_load_n(&use_avx2, __ATOMIC_RELAXED);
  if (v < 0) {
    v = cpu_has_avx2_fma();
    __atomic_store_n(&use_avx2, v, __ATOMIC_RELAXED);
  }
  return v;
}

bool acon_kernels_using_avx2(void) { return avx2(); }

void acon_kernels_set_avx2_enabled(bool enabled) {
  __atomic_store_n(&use_avx2, enabled && cpu_has_avx2_fma(), __ATOMIC_RELAXED);
}

void acon_forward_channel(
    const float *x, float *y, float *sig, ptrdiff_t n, ptrdiff_t hw, ptrdiff_t planeStride,
    float k, float q, const float *beta, ptrdiff_t betaStride, AconBetaMode betaMode) {
  (avx2() ? forward_avx2 : forward_portable)(
      x, y, sig, n, hw, planeStride, k, q, beta, betaStride, betaMode);
}

void acon_backward_channel(
    const float *x, const float *dy, float *dx, const float *sig, ptrdiff_t n, ptrdiff_t hw,
    ptrdiff_t planeStride, float k, float q, const float *beta, float *dbeta,
    ptrdiff_t betaStride, AconBetaMode betaMode, float *dp1, float *dp2) {
  (avx2() ? backward_avx2 : backward_portable)(
      x, dy, dx, sig, n, hw, planeStride, k, q, beta, dbeta, betaStride, betaMode, dp1, dp2);
}

void acon_exp(const float *x, float *y, ptrdiff_t count) {
  (avx2() ? exp_avx2 : exp_portable)(x, y, count);
}

void acon_sigmoid(const float *x, float *y, ptrdiff_t count) {
  (avx2() ? sigmoid_avx2 : sigmoid_portable)(x, y, count);
}
