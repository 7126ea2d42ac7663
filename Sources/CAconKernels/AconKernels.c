// AconKernels.c: the fused ACON-C per-channel loops and the polynomial exp/sigmoid, written once
// with GCC/Clang vector extensions (8 floats) and instantiated twice: an AVX2+FMA variant
// (per-function `target` attribute, FMA for every a·b + c of the exp and the kernels) and a
// portable one (baseline x86-64 / any target, no FMA: the same operations in the same order as
// the former Swift SIMD8 code, so the same elementwise bits; only the sums' order changed). The
// variant is chosen at run time with __builtin_cpu_supports.
//
// Every element goes through the same 8-lane code: a row's last hw mod 8 elements are loaded
// with a mask (zeros in the other lanes) and stored with one, so results never depend on an
// element's position. Vectors go in groups of four, their sigmoids interleaved (see "Groups").
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

// MARK: - Groups of vectors

/// Elements go through the kernels in groups of U vectors of 8 (32 elements), and the U
/// sigmoids of a group are computed step by step together: U independent dependency chains keep
/// the core busy where one chain of ~60 cycles (exp, divide) would leave it waiting. A plane's
/// last hw mod 32 elements are copied into zero-padded buffers of 32 and run through the same
/// code, so an element's result never depends on its position.
enum { U = 4, G = 8 * U };

/// σ(−v[u]) for the U vectors of a group, each step for all U before the next. Lane for lane
/// the operations of `sigmoid_neg`, so the same bits.
INL void sigmoid_neg_group(v8f v[U], const int nu, const int F) {
  const v8f magic = splat(12582912.0f);
  v8f t[U], r[U], r2[U], a[U], b[U], q[U];
  for (int u = 0; u < nu; u++) {
    v[u] = select8(v[u] > splat(88.8f), splat(88.8f), v[u]);
    v[u] = select8(v[u] < splat(-86.5f), splat(-86.5f), v[u]);
  }
  for (int u = 0; u < nu; u++) t[u] = madd(v[u], splat(1.44269504f), magic, F);
  for (int u = 0; u < nu; u++) r[u] = madd(t[u] - magic, splat(-0.693359375f), v[u], F);
  for (int u = 0; u < nu; u++) r[u] = madd(t[u] - magic, splat(2.1219444e-4f), r[u], F);
  for (int u = 0; u < nu; u++) r2[u] = r[u] * r[u];
  for (int u = 0; u < nu; u++) {
    a[u] = madd(r[u], splat(0.1666652113199234f), splat(0.4999999403953552f), F);
    b[u] = madd(r[u], splat(0.008368744514882565f), splat(0.04166839271783829f), F);
  }
  for (int u = 0; u < nu; u++)
    q[u] = madd(madd(r2[u], splat(0.0013814527774229646f), b[u], F), r2[u], a[u], F);
  for (int u = 0; u < nu; u++) {
    v8f p = madd(r2[u], q[u], r[u], F) + 1.0f;
    v8f scale = (v8f)(((v8i)t[u] << 23) + 0x3F000000);  // 2^(n−1)
    v[u] = splat(1.0f) / (splat(1.0f) + (p + p) * scale);
  }
}

/// The partial vector of a plane's rest: lanes where `mask` is set are read, the others read as
/// 0, and no memory behind them is touched (AVX2's masked load; the portable variant copies lane
/// by lane). Its `part` valid lanes are stored one by one: that is quicker than AVX2's masked
/// store on AMD cores for the few lanes of a tail.
/// (The mask goes by pointer: a 32-byte vector passed by value to an AVX2 function from portable
/// code would change the ABI. The function is inlined into the AVX2 variant only.)
__attribute__((target("avx2"))) static inline void load_masked_avx2(
    const float *p, const v8i *mask, v8f *out) {
  *out = __builtin_ia32_maskloadps256((const v8f *)p, *mask);
}

INL v8f load_masked(const float *p, v8i mask, int part, const int F) {
  if (F) {
    v8f v;
    load_masked_avx2(p, &mask, &v);
    return v;
  }
  float b[8] = {0};
  for (int t = 0; t < part; t++) b[t] = p[t];
  return load8(b);
}

INL void store_part(float *p, int part, v8f v) {
  float b[8];
  store8(b, v);
  for (int t = 0; t < part; t++) p[t] = b[t];
}

/// The m ≤ G elements of a group at p: vector u is full, partial (m mod 8 lanes, `mask`) or
/// missing (reads as 0, writes nothing). Full groups (m = G) compile to plain loads and stores.
typedef struct {
  ptrdiff_t m;
  v8i mask;
} Extent;

INL Extent extent(ptrdiff_t m) {
  const v8i iota = {0, 1, 2, 3, 4, 5, 6, 7};
  int part = (int)(m % 8);
  return (Extent){m, iota < (v8i){part, part, part, part, part, part, part, part}};
}

INL v8f load_u(const float *p, int u, Extent e, const int F) {
  if (8 * u + 8 <= e.m) return load8(p + 8 * u);
  if (8 * u < e.m) return load_masked(p + 8 * u, e.mask, (int)(e.m % 8), F);
  return splat(0);
}

INL void store_u(float *p, int u, Extent e, v8f v) {
  if (8 * u + 8 <= e.m) store8(p + 8 * u, v);
  else if (8 * u < e.m) store_part(p + 8 * u, (int)(e.m % 8), v);
}

// MARK: - Forward

/// One group of e.m elements: x → y (and sig); β is −nbv unless perElement, then betaE.
INL void forward_group(
    const float *x, float *y, float *sig, const float *betaE, Extent e, v8f kv, v8f qv, v8f nbv,
    const int nu, const int F, const int hasSig, const int perElement) {
  v8f xv[U], d[U], s[U];
  for (int u = 0; u < nu; u++) {
    xv[u] = load_u(x, u, e, F);
    d[u] = kv * xv[u];
    s[u] = (perElement ? -load_u(betaE, u, e, F) : nbv) * d[u];
  }
  sigmoid_neg_group(s, nu, F);
  for (int u = 0; u < nu; u++) {
    store_u(y, u, e, madd(d[u], s[u], qv * xv[u], F));
    if (hasSig) store_u(sig, u, e, s[u]);
  }
}

/// One plane: x, y, sig (hw); β is `b` unless `betaE` (hw) gives one per element.
INL void forward_plane(
    const float *x, float *y, float *sig, ptrdiff_t hw, float k, float q, float b,
    const float *betaE, const int F, const int hasSig, const int perElement) {
  const v8f kv = splat(k), qv = splat(q), nbv = splat(-b);
  const Extent full = {G, {0}};
  ptrdiff_t i = 0;
  for (; i + G <= hw; i += G)
    forward_group(x + i, y + i, sig + i, betaE + i, full, kv, qv, nbv, U, F, hasSig, perElement);
  if (i < hw) {  // the rest: as many vectors as it needs
    Extent e = extent(hw - i);
#define REST(NU) \
  forward_group(x + i, y + i, sig + i, betaE + i, e, kv, qv, nbv, NU, F, hasSig, perElement)
    switch ((hw - i + 7) / 8) {
    case 1: REST(1); break;
    case 2: REST(2); break;
    case 3: REST(3); break;
    default: REST(4); break;
    }
#undef REST
  }
}

/// β of plane (j, ch): the channel's, the plane's, or the start of the plane's row.
INL const float *beta_at(
    const float *beta, ptrdiff_t j, ptrdiff_t ch, ptrdiff_t c, ptrdiff_t hw, AconBetaMode mode) {
  if (mode == AconBetaModeChannel) return beta + ch;
  if (mode == AconBetaModePlane) return beta + j * c + ch;
  return beta + (j * c + ch) * hw;
}

/// Channels [c0, c1) of (n, c, hw) tensors, sample by sample: planes (j, c0) … (j, c1 − 1) are
/// contiguous, so the memory streams are sequential.
INL void forward_channels(
    const float *x, float *y, float *sig, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw, ptrdiff_t c0,
    ptrdiff_t c1, const float *p1, const float *p2, const float *beta, AconBetaMode mode,
    const int F, const int hasSig, const int perElement) {
  for (ptrdiff_t j = 0; j < n; j++) {
    for (ptrdiff_t ch = c0; ch < c1; ch++) {
      ptrdiff_t off = (j * c + ch) * hw;
      const float *bp = beta_at(beta, j, ch, c, hw, mode);
      forward_plane(
          x + off, y + off, hasSig ? sig + off : NULL, hw, p1[ch] - p2[ch], p2[ch],
          perElement ? 0 : *bp, bp, F, hasSig, perElement);
    }
  }
}

#define FORWARD_CALL(S, E) \
  forward_channels(x, y, sig, n, c, hw, c0, c1, p1, p2, beta, mode, F, S, E)

#define FORWARD_VARIANT(NAME, ATTR, FV)                                                       \
  ATTR static void NAME(                                                                      \
      const float *x, float *y, float *sig, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw,           \
      ptrdiff_t c0, ptrdiff_t c1, const float *p1, const float *p2, const float *beta,        \
      AconBetaMode mode) {                                                                    \
    enum { F = FV };                                                                          \
    switch ((sig != NULL) * 2 + (mode == AconBetaModeElement)) {                              \
    case 0: FORWARD_CALL(0, 0); break;                                                        \
    case 1: FORWARD_CALL(0, 1); break;                                                        \
    case 2: FORWARD_CALL(1, 0); break;                                                        \
    default: FORWARD_CALL(1, 1); break;                                                       \
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

/// One group of e.m elements: x, dy → dx; sig read if hasSig; β is `bv` unless perElement, then
/// from betaE, and dβ is accumulated into dbetaE; otherwise into acc->a3. Missing and padding
/// lanes (x = dy = 0) add +0 to every sum.
INL void backward_group(
    const float *x, const float *dy, float *dx, const float *sig, const float *betaE,
    float *dbetaE, Extent e, v8f kv, v8f qv, v8f bv, Sums *acc, const int nu, const int F, const int hasSig,
    const int hasDx, const int perElement) {
  v8f xv[U], bev[U], s[U];
  for (int u = 0; u < nu; u++) {
    xv[u] = load_u(x, u, e, F);
    bev[u] = perElement ? load_u(betaE, u, e, F) : bv;
    s[u] = hasSig ? load_u(sig, u, e, F) : -bev[u] * (kv * xv[u]);
  }
  if (!hasSig) sigmoid_neg_group(s, nu, F);
  for (int u = 0; u < nu; u++) {
    v8f db, dxv = grad8(xv[u], load_u(dy, u, e, F), s[u], bev[u], kv, qv, acc, &db, F);
    if (hasDx) store_u(dx, u, e, dxv);
    if (perElement) store_u(dbetaE, u, e, load_u(dbetaE, u, e, F) + db);
    else acc->a3 += db;
  }
}

/// One plane: x, dy, dx, sig, betaE, dbetaE (hw). β is `b` unless perElement.
INL void backward_plane(
    const float *x, const float *dy, float *dx, const float *sig, ptrdiff_t hw, float k, float q,
    float b, const float *betaE, float *dbetaE, Sums *acc, const int F, const int hasSig,
    const int hasDx, const int perElement) {
  const v8f kv = splat(k), qv = splat(q), bv = splat(b);
  const Extent full = {G, {0}};
  ptrdiff_t i = 0;
  for (; i + G <= hw; i += G)
    backward_group(
        x + i, dy + i, dx + i, sig + i, betaE + i, dbetaE + i, full, kv, qv, bv, acc, U, F,
        hasSig, hasDx, perElement);
  if (i < hw) {  // the rest: as many vectors as it needs
    Extent e = extent(hw - i);
#define REST(NU)                                                                              \
  backward_group(x + i, dy + i, dx + i, sig + i, betaE + i, dbetaE + i, e, kv, qv, bv, acc, NU, \
                 F, hasSig, hasDx, perElement)
    switch ((hw - i + 7) / 8) {
    case 1: REST(1); break;
    case 2: REST(2); break;
    case 3: REST(3); break;
    default: REST(4); break;
    }
#undef REST
  }
}

/// Channels [c0, c1) of (n, c, hw) tensors, sample by sample as in the forward pass, in chunks
/// of up to CH channels whose sums wait on the stack. Each channel's sums run over its planes in
/// sample order, whatever the chunk: the bits do not depend on how channels are split.
enum { CH = 64 };

INL void backward_channels(
    const float *x, const float *dy, float *dx, const float *sig, ptrdiff_t n, ptrdiff_t c,
    ptrdiff_t hw, ptrdiff_t c0, ptrdiff_t c1, const float *p1, const float *p2,
    const float *beta, float *dbeta, AconBetaMode mode, float *dp1, float *dp2, const int F,
    const int hasSig, const int hasDx, const int perElement) {
  for (ptrdiff_t cb = c0; cb < c1; cb += CH) {
    ptrdiff_t ce = cb + CH < c1 ? cb + CH : c1;
    Sums acc[CH];  // per channel: dp1, dp2 and (channel mode) dβ lanes
    for (ptrdiff_t ch = cb; ch < ce; ch++) acc[ch - cb] = (Sums){splat(0), splat(0), splat(0)};
    for (ptrdiff_t j = 0; j < n; j++) {
      for (ptrdiff_t ch = cb; ch < ce; ch++) {
        ptrdiff_t off = (j * c + ch) * hw;
        const float *bp = beta_at(beta, j, ch, c, hw, mode);
        float *dbp = dbeta + (bp - beta);
        Sums plane = {splat(0), splat(0), splat(0)};
        backward_plane(
            x + off, dy + off, hasDx ? dx + off : NULL, hasSig ? sig + off : NULL, hw,
            p1[ch] - p2[ch], p2[ch], perElement ? 0 : *bp, bp, dbp, &plane, F, hasSig, hasDx,
            perElement);
        Sums *a = &acc[ch - cb];
        a->a1 += plane.a1;
        a->a2 += plane.a2;
        if (mode == AconBetaModePlane) *dbp += fixed_order_sum(plane.a3);
        else a->a3 += plane.a3;
      }
    }
    for (ptrdiff_t ch = cb; ch < ce; ch++) {
      dp1[ch] += fixed_order_sum(acc[ch - cb].a1);
      dp2[ch] += fixed_order_sum(acc[ch - cb].a2);
      if (mode == AconBetaModeChannel) dbeta[ch] += fixed_order_sum(acc[ch - cb].a3);
    }
  }
}

#define BACKWARD_CALL(S, D, E)                                                            \
  backward_channels(x, dy, dx, sig, n, c, hw, c0, c1, p1, p2, beta, dbeta, mode, dp1, dp2, \
                    F, S, D, E)

#define BACKWARD_VARIANT(NAME, ATTR, FV)                                                      \
  ATTR static void NAME(                                                                      \
      const float *x, const float *dy, float *dx, const float *sig, ptrdiff_t n, ptrdiff_t c, \
      ptrdiff_t hw, ptrdiff_t c0, ptrdiff_t c1, const float *p1, const float *p2,             \
      const float *beta, float *dbeta, AconBetaMode mode, float *dp1, float *dp2) {           \
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

void acon_forward_channels(
    const float *x, float *y, float *sig, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw, ptrdiff_t c0,
    ptrdiff_t c1, const float *p1, const float *p2, const float *beta, AconBetaMode betaMode) {
  (avx2() ? forward_avx2 : forward_portable)(x, y, sig, n, c, hw, c0, c1, p1, p2, beta, betaMode);
}

void acon_backward_channels(
    const float *x, const float *dy, float *dx, const float *sig, ptrdiff_t n, ptrdiff_t c,
    ptrdiff_t hw, ptrdiff_t c0, ptrdiff_t c1, const float *p1, const float *p2,
    const float *beta, float *dbeta, AconBetaMode betaMode, float *dp1, float *dp2) {
  (avx2() ? backward_avx2 : backward_portable)(
      x, dy, dx, sig, n, c, hw, c0, c1, p1, p2, beta, dbeta, betaMode, dp1, dp2);
}

void acon_exp(const float *x, float *y, ptrdiff_t count) {
  (avx2() ? exp_avx2 : exp_portable)(x, y, count);
}

void acon_sigmoid(const float *x, float *y, ptrdiff_t count) {
  (avx2() ? sigmoid_avx2 : sigmoid_portable)(x, y, count);
}
