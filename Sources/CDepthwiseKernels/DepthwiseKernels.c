// DepthwiseKernels.c: direct depthwise convolution, forward and backward, over zero-padded
// copies of one plane at a time (in L1/L2), so the inner loops have no bounds checks and
// vectorise over output columns. 3×3 at stride 1 and 2 get loops with the taps unrolled, in
// 8-column vectors with the last block of a row overlapping the one before (dW masks the
// overlapped lanes), stride 2's dx in vectors of 8 (or 4) column pairs, and 4-wide stride-2
// outputs two rows per vector; at stride 1 the forward and dx blocks run two rows at a time (two
// independent FMA chains); any other kernel, stride or padding runs the general loops.
// Each body is compiled twice: for AVX2+FMA (chosen at run time when the CPU has it) and for
// baseline x86-64; both meet the same tests, their last bits differ (FMA contraction);
// dw_kernels_select picks one (for tests). The AVX2 variant runs planes of 1, 2, 4, 8 or 16
// floats in registers (DepthwiseAVX2Grouped.c). Within one variant the bits do not depend on
// how planes or channels are split between threads.
//
// Shapes: x [n, c, h, w], weight [c·m, kh, kw], bias [c·m], y and dy [n, c·m, oh, ow]; padded
// input plane [PH, PW] = [h + 2·ph, w + 2·pw] with the image at (ph, pw).
#include "CDepthwiseKernels.h"
#include "DepthwiseInternal.h"

#include <stdlib.h>
#include <string.h>

// The v8 helpers below take and return 32-byte vectors; they are static and always inlined, so
// the portable variant's different vector-passing ABI (no AVX) never crosses a call.
#pragma clang diagnostic ignored "-Wpsabi"

#define RESTRICT __restrict
#define INLINE static inline __attribute__((always_inline))
#if defined(__x86_64__)
#define AVX2 __attribute__((target("avx2,fma")))
#define HAVE_VARIANTS 1
#else
#define AVX2
#define HAVE_VARIANTS 0
#endif

// Eight floats as one vector (GCC/Clang vector extension: one AVX register in the AVX2 variant,
// two SSE registers in the portable one). Loads are unaligned.
typedef float v8 __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));
INLINE v4 load4(const float *p) {
  v4 v;
  memcpy(&v, p, sizeof v);
  return v;
}
INLINE v8 load8(const float *p) {
  v8 v;
  memcpy(&v, p, sizeof v);
  return v;
}
// p[0], p[2], …, p[14] and p[1], p[3], …, p[15].
INLINE v8 evens8(const float *p) { return __builtin_shufflevector(load8(p), load8(p + 8), 0, 2, 4, 6, 8, 10, 12, 14); }
INLINE v8 odds8(const float *p) { return __builtin_shufflevector(load8(p), load8(p + 8), 1, 3, 5, 7, 9, 11, 13, 15); }
// Stride 2, outputs 4 wide: p[0], p[2], p[4], p[6] then q[0], q[2], q[4], q[6] (two output rows
// in one vector; reads p[0..7] and q[0..7]).
INLINE v8 rows2(const float *p, const float *q) {
  return __builtin_shufflevector(load8(p), load8(q), 0, 2, 4, 6, 8, 10, 12, 14);
}
// Whether a 3×3 stride-2 plane with 4 output columns runs two output rows per vector: an even
// number of rows, and padded rows of ≥ 10 floats so that rows2 stays inside them.
INLINE int two_rows(ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t xs) { return ow == 4 && (oh & 1) == 0 && xs >= 10; }
// The lanes of v added in order 0..7.
INLINE float lane_sum(v8 v) {
  float s = v[0];
  for (int l = 1; l < 8; l++) s += v[l];
  return s;
}


// MARK: - Forward

// One output plane from a padded input plane xp [.., xs] (row stride xs).
INLINE void forward_plane(const float *RESTRICT xp, ptrdiff_t xs, const float *RESTRICT wt, float b,
                          float *RESTRICT y, ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t sh,
                          ptrdiff_t sw) {
  if (kh == 3 && kw == 3) {
    const float w0 = wt[0], w1 = wt[1], w2 = wt[2], w3 = wt[3], w4 = wt[4], w5 = wt[5], w6 = wt[6], w7 = wt[7],
                w8 = wt[8];
    if (sw == 2 && sh == 2 && two_rows(oh, ow, xs)) {
      // Output rows i and i + 1 in one vector (input rows 2i + u and 2i + 2 + u).
      for (ptrdiff_t i = 0; i < oh; i += 2) {
        const float *r0 = xp + 2 * i * xs, *r1 = r0 + xs, *r2 = r1 + xs, *n = r0 + 2 * xs;
        v8 a = {b, b, b, b, b, b, b, b};
        a += w0 * rows2(r0, n);
        a += w1 * rows2(r0 + 1, n + 1);
        a += w2 * rows2(r0 + 2, n + 2);
        a += w3 * rows2(r1, n + xs);
        a += w4 * rows2(r1 + 1, n + xs + 1);
        a += w5 * rows2(r1 + 2, n + xs + 2);
        a += w6 * rows2(r2, n + 2 * xs);
        a += w7 * rows2(r2 + 1, n + 2 * xs + 1);
        a += w8 * rows2(r2 + 2, n + 2 * xs + 2);
        memcpy(y + i * 4, &a, sizeof a);
      }
      return;
    }
    // 8-column blocks in vectors while they stay inside the padded row (see weight_terms3),
    // then the remaining columns one by one: the same operations in the same order.
    // Vector blocks only at column strides 1 and 2 (3 and up run the scalar loop: until
    // 2026-12-05 they took the stride-2 blocks and gave wrong outputs on rows of 8 or more).
    ptrdiff_t full = 0;
    while (sw <= 2 && full + 8 <= ow && sw * full + (sw == 1 ? 9 : 17) < xs) full += 8;
    const int lastBlock = full >= 8 && full < ow && sw * (ow - 8) + (sw == 1 ? 9 : 17) < xs;
    // The vector blocks first, then each row's remaining columns. At stride 1 the blocks run
    // two rows at a time: a block's nine taps are one chain of dependent FMAs (5 cycles each on
    // a first-generation Zen), and two rows' chains interleaved keep the FMA unit busy (a C
    // harness on one core, best of 8 alternating runs: [64, 48, 8, 8] 0.46 → 0.39 ms and
    // [64, 24, 16, 16] 0.57 → 0.52 ms on a quiet VM, 0.87 → 0.64 ms and 1.09 → 0.91 ms on a
    // loaded one). An odd last row pairs with itself (both chains write the
    // same values to it). The last block of a row may overlap the one before (those columns are
    // written twice with the same values).
    if (sw == 1) {
      for (ptrdiff_t i = 0; i < oh; i += 2) {
        const ptrdiff_t k = i + 1 < oh ? i + 1 : i;
        const float *r0 = xp + i * sh * xs, *r1 = r0 + xs, *r2 = r1 + xs;
        const float *n0 = xp + k * sh * xs, *n1 = n0 + xs, *n2 = n1 + xs;
        float *yr = y + i * ow, *yn = y + k * ow;
#define PAIR3_BLOCK(jj)                                             \
  do {                                                              \
    const ptrdiff_t j_ = (jj);                                      \
    v8 a = {b, b, b, b, b, b, b, b}, c = a;                         \
    a += w0 * load8(r0 + j_);                                       \
    c += w0 * load8(n0 + j_);                                       \
    a += w1 * load8(r0 + j_ + 1);                                   \
    c += w1 * load8(n0 + j_ + 1);                                   \
    a += w2 * load8(r0 + j_ + 2);                                   \
    c += w2 * load8(n0 + j_ + 2);                                   \
    a += w3 * load8(r1 + j_);                                       \
    c += w3 * load8(n1 + j_);                                       \
    a += w4 * load8(r1 + j_ + 1);                                   \
    c += w4 * load8(n1 + j_ + 1);                                   \
    a += w5 * load8(r1 + j_ + 2);                                   \
    c += w5 * load8(n1 + j_ + 2);                                   \
    a += w6 * load8(r2 + j_);                                       \
    c += w6 * load8(n2 + j_);                                       \
    a += w7 * load8(r2 + j_ + 1);                                   \
    c += w7 * load8(n2 + j_ + 1);                                   \
    a += w8 * load8(r2 + j_ + 2);                                   \
    c += w8 * load8(n2 + j_ + 2);                                   \
    memcpy(yr + j_, &a, sizeof a);                                  \
    memcpy(yn + j_, &c, sizeof c);                                  \
  } while (0)
        for (ptrdiff_t j = 0; j < full; j += 8) PAIR3_BLOCK(j);
        if (lastBlock) PAIR3_BLOCK(ow - 8);
#undef PAIR3_BLOCK
      }
    } else {
      for (ptrdiff_t i = 0; i < oh; i++) {
        const float *r0 = xp + i * sh * xs, *r1 = r0 + xs, *r2 = r1 + xs;
        float *yr = y + i * ow;
#define S2_BLOCK(jj)                                                \
  do {                                                              \
    const ptrdiff_t j_ = (jj), q_ = 2 * j_;                         \
    v8 a = {b, b, b, b, b, b, b, b};                                \
    a += w0 * evens8(r0 + q_);                                      \
    a += w1 * odds8(r0 + q_);                                       \
    a += w2 * evens8(r0 + q_ + 2);                                  \
    a += w3 * evens8(r1 + q_);                                      \
    a += w4 * odds8(r1 + q_);                                       \
    a += w5 * evens8(r1 + q_ + 2);                                  \
    a += w6 * evens8(r2 + q_);                                      \
    a += w7 * odds8(r2 + q_);                                       \
    a += w8 * evens8(r2 + q_ + 2);                                  \
    memcpy(yr + j_, &a, sizeof a);                                  \
  } while (0)
        for (ptrdiff_t j = 0; j < full; j += 8) S2_BLOCK(j);
        if (lastBlock) S2_BLOCK(ow - 8);
#undef S2_BLOCK
      }
    }
    const ptrdiff_t j0 = lastBlock ? ow : full;
    for (ptrdiff_t i = 0; i < oh; i++) {
      const float *r0 = xp + i * sh * xs, *r1 = r0 + xs, *r2 = r1 + xs;
      float *yr = y + i * ow;
      for (ptrdiff_t j = j0; j < ow; j++) {
        const ptrdiff_t q = j * sw;
        float a = b;
        a += w0 * r0[q];
        a += w1 * r0[q + 1];
        a += w2 * r0[q + 2];
        a += w3 * r1[q];
        a += w4 * r1[q + 1];
        a += w5 * r1[q + 2];
        a += w6 * r2[q];
        a += w7 * r2[q + 1];
        a += w8 * r2[q + 2];
        yr[j] = a;
      }
    }
    return;
  }
  for (ptrdiff_t i = 0; i < oh; i++) {
    float *yr = y + i * ow;
    for (ptrdiff_t j = 0; j < ow; j++) yr[j] = b;
    for (ptrdiff_t u = 0; u < kh; u++) {
      for (ptrdiff_t v = 0; v < kw; v++) {
        const float wv = wt[u * kw + v];
        const float *r = xp + (i * sh + u) * xs + v;
        for (ptrdiff_t j = 0; j < ow; j++) yr[j] += wv * r[j * sw];
      }
    }
  }
}

INLINE void forward_plane_dispatch(const float *xp, ptrdiff_t xs, const float *wt, float b, float *y,
                                   const DWGeometry *g) {
  if (g->kh == 3 && g->kw == 3 && g->sh == 1 && g->sw == 1)
    forward_plane(xp, xs, wt, b, y, g->oh, g->ow, 3, 3, 1, 1);
  else if (g->kh == 3 && g->kw == 3 && g->sh == 2 && g->sw == 2)
    forward_plane(xp, xs, wt, b, y, g->oh, g->ow, 3, 3, 2, 2);
  else
    forward_plane(xp, xs, wt, b, y, g->oh, g->ow, g->kh, g->kw, g->sh, g->sw);
}

// Copies n floats, 8 at a time while they last, then 4, then one by one.
INLINE void copy_row(float *RESTRICT d, const float *RESTRICT s, ptrdiff_t n) {
  ptrdiff_t q = 0;
  for (; q + 8 <= n; q += 8) {
    const v8 v = load8(s + q);
    memcpy(d + q, &v, sizeof v);
  }
  if (q + 4 <= n) {
    const v4 v = load4(s + q);
    memcpy(d + q, &v, sizeof v);
    q += 4;
  }
  for (; q < n; q++) d[q] = s[q];
}

// Copies image plane src [h, w] into the padded buffer dst [PH, PW] at (ph, pw); the border is
// left as it is (zeroed once per call).
INLINE void pad_copy(float *RESTRICT dst, const float *RESTRICT src, const DWGeometry *g) {
  const ptrdiff_t pw_ = g->w + 2 * g->pw, w = g->w;
  for (ptrdiff_t r = 0; r < g->h; r++) {
    float *RESTRICT d = dst + (r + g->ph) * pw_ + g->pw;
    const float *RESTRICT s = src + r * w;
    copy_row(d, s, w);
  }
}

// MARK: - 3×3, stride 2, padding 1 on 8- and 16-wide planes, without the padded copy

// Whether a geometry takes the direct stride-2 path: 3×3, stride 2, padding 1, w = 16 (one
// 8-wide output row per vector) or w = 8 (two 4-wide output rows per vector), h even (so that no
// window reaches below the image) and, at w = 8, a multiple of 4 (an even number of output rows).
INLINE int direct_s2(const DWGeometry *g) {
  return g->kh == 3 && g->kw == 3 && g->sh == 2 && g->sw == 2 && g->ph == 1 && g->pw == 1 &&
         ((g->w == 16 && g->h % 2 == 0) || (g->w == 8 && g->h % 4 == 0));
}

// The three column taps of kernel row u for output row group t (row t at w = 16; rows 2t and
// 2t + 1 at w = 8) of plane x [h, w]: lane (row i, column j) of `mid` holds x[2i − 1 + u][2j]
// (kernel column 1), of `right` x[..][2j + 1] (column 2), of `left` x[..][2j − 1] (column 0,
// zero at j = 0); zeros for input row −1. The same values the padded plane gives.
INLINE void taps_s2(const float *RESTRICT x, ptrdiff_t w, ptrdiff_t t, ptrdiff_t u, v8 *left, v8 *mid,
                    v8 *right) {
  const v8 z = {0, 0, 0, 0, 0, 0, 0, 0};
  v8 e, o;
  if (w == 16) {
    const ptrdiff_t r = 2 * t - 1 + u;
    if (r < 0) {
      *left = *mid = *right = z;
      return;
    }
    e = evens8(x + r * 16);
    o = odds8(x + r * 16);
    *left = __builtin_shufflevector(o, z, 8, 0, 1, 2, 3, 4, 5, 6);
  } else {
    const ptrdiff_t r = 4 * t - 1 + u;  // rows r and r + 2
    const v8 a = r < 0 ? z : load8(x + r * 8), b = load8(x + (r + 2) * 8);
    e = __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14);
    o = __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15);
    *left = __builtin_shufflevector(o, z, 8, 0, 1, 2, 8, 4, 5, 6);
  }
  *mid = e;
  *right = o;
}

// One output plane y [oh, ow] from plane x [h, w] (see direct_s2): the padded path's operations
// in its order.
INLINE void forward_direct_s2(const float *RESTRICT x, ptrdiff_t h, ptrdiff_t w, const float *RESTRICT wt,
                              float b, float *RESTRICT y) {
  const ptrdiff_t groups = w == 16 ? h / 2 : h / 4;
  for (ptrdiff_t t = 0; t < groups; t++) {
    v8 a = {b, b, b, b, b, b, b, b};
    for (ptrdiff_t u = 0; u < 3; u++) {
      v8 l, mdl, r;
      taps_s2(x, w, t, u, &l, &mdl, &r);
      a += wt[3 * u] * l;
      a += wt[3 * u + 1] * mdl;
      a += wt[3 * u + 2] * r;
    }
    memcpy(y + 8 * t, &a, sizeof a);
  }
}

// weight_terms3's accumulation (the same lanes, order and acc layout) for a direct_s2 plane.
INLINE void weight_terms_direct_s2(const float *RESTRICT x, ptrdiff_t h, ptrdiff_t w, const float *RESTRICT dy,
                                   float *RESTRICT acc) {
  v8 a[10];
  for (int t = 0; t < 10; t++) a[t] = load8(acc + 8 * t);
  const ptrdiff_t groups = w == 16 ? h / 2 : h / 4;
  for (ptrdiff_t t = 0; t < groups; t++) {
    const v8 dj = load8(dy + 8 * t);
    for (ptrdiff_t u = 0; u < 3; u++) {
      v8 l, mdl, r;
      taps_s2(x, w, t, u, &l, &mdl, &r);
      a[3 * u] += dj * l;
      a[3 * u + 1] += dj * mdl;
      a[3 * u + 2] += dj * r;
    }
    a[9] += dj;
  }
  for (int t = 0; t < 10; t++) memcpy(acc + 8 * t, &a[t], sizeof(v8));
}

INLINE void forward_body(const DWGeometry *g, const float *x, const float *weight, const float *bias, float *y,
                         ptrdiff_t p0, ptrdiff_t p1, float *scratch) {
  // x [n, c, h, w] → y planes [p0, p1) of [n, c·m, oh, ow]
  const ptrdiff_t cm = g->c * g->m, hw = g->h * g->w, ohw = g->oh * g->ow, kk = g->kh * g->kw;
  const ptrdiff_t PW = g->w + 2 * g->pw, PH = g->h + 2 * g->ph;
  const int padded = g->ph > 0 || g->pw > 0;
  if (direct_s2(g)) {
    for (ptrdiff_t p = p0; p < p1; p++) {
      const ptrdiff_t o = p % cm, src = (p / cm) * g->c + o / g->m;
      forward_direct_s2(x + src * hw, g->h, g->w, weight + o * kk, bias ? bias[o] : 0.0f, y + p * ohw);
    }
    return;
  }
  if (padded) memset(scratch, 0, (size_t)(PH * PW) * 4);
  ptrdiff_t last = -1;
  for (ptrdiff_t p = p0; p < p1; p++) {
    const ptrdiff_t o = p % cm, src = (p / cm) * g->c + o / g->m;
    const float *xp = x + src * hw;
    ptrdiff_t xs = g->w;
    if (padded) {
      if (src != last) pad_copy(scratch, xp, g);
      last = src;
      xp = scratch;
      xs = PW;
    }
    forward_plane_dispatch(xp, xs, weight + o * kk, bias ? bias[o] : 0.0f, y + p * ohw, g);
  }
}

// MARK: - Backward

// Accumulates one dy plane's weight and bias terms into acc [kk + 1, ow] (row t = tap t, row kk
// = bias), elementwise per output column: acc[t][j] += Σ_i dy[i][j]·xp[i·sh + u][j·sw + v].
// The general kernel's path.
INLINE void weight_terms(const float *RESTRICT xp, ptrdiff_t xs, const float *RESTRICT dy, float *RESTRICT acc,
                         ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t sh, ptrdiff_t sw) {
  const ptrdiff_t kk = kh * kw;
  for (ptrdiff_t i = 0; i < oh; i++) {
    const float *d = dy + i * ow;
    for (ptrdiff_t u = 0; u < kh; u++) {
      for (ptrdiff_t v = 0; v < kw; v++) {
        float *RESTRICT a = acc + (u * kw + v) * ow;
        const float *r = xp + (i * sh + u) * xs + v;
        for (ptrdiff_t j = 0; j < ow; j++) a[j] += d[j] * r[j * sw];
      }
    }
    float *RESTRICT ab = acc + kk * ow;
    for (ptrdiff_t j = 0; j < ow; j++) ab[j] += d[j];
  }
}

// The 3×3 kernel's weight and bias terms at stride S (1 or 2), held in registers: vector t (ten
// vectors: taps 0..8, then the bias) gathers the terms of output columns j ≡ lane (mod 8) of the
// full 8-column blocks, tail t those of the remaining columns, each in (sample, row, block)
// order. Blocks never read past their padded row (row stride xs).
// acc holds the ten vectors (80 floats, unaligned) and then the ten tail sums.
INLINE void weight_terms3(const float *RESTRICT xp, ptrdiff_t xs, const float *RESTRICT dy, ptrdiff_t oh,
                          ptrdiff_t ow, ptrdiff_t S, float *RESTRICT acc) {
  float *RESTRICT at = acc + 80;
  v8 a0 = load8(acc), a1 = load8(acc + 8), a2 = load8(acc + 16), a3 = load8(acc + 24), a4 = load8(acc + 32),
     a5 = load8(acc + 40), a6 = load8(acc + 48), a7 = load8(acc + 56), a8 = load8(acc + 64), a9 = load8(acc + 72);
  // Block j reads columns S·j .. S·j + 7·S + 2 (+1 at S = 2 for the paired loads).
  if (S == 2 && two_rows(oh, ow, xs)) {
    // Four output columns: rows i and i + 1 in one vector (lane 4·(i mod 2) + j).
    for (ptrdiff_t i = 0; i < oh; i += 2) {
      const float *r0 = xp + 2 * i * xs, *r1 = r0 + xs, *r2 = r1 + xs, *n = r0 + 2 * xs;
      const v8 dj = load8(dy + i * 4);
      a0 += dj * rows2(r0, n);
      a1 += dj * rows2(r0 + 1, n + 1);
      a2 += dj * rows2(r0 + 2, n + 2);
      a3 += dj * rows2(r1, n + xs);
      a4 += dj * rows2(r1 + 1, n + xs + 1);
      a5 += dj * rows2(r1 + 2, n + xs + 2);
      a6 += dj * rows2(r2, n + 2 * xs);
      a7 += dj * rows2(r2 + 1, n + 2 * xs + 1);
      a8 += dj * rows2(r2 + 2, n + 2 * xs + 2);
      a9 += dj;
    }
    oh = 0;  // nothing left for the loops below
  }
  ptrdiff_t full = 0;
  while (full + 8 <= ow && S * full + (S == 1 ? 9 : 17) < xs) full += 8;
  // The remaining columns as one block ending at ow, overlapping the previous one, with the
  // overlapped lanes' dy masked to zero (so each column counts once): lane l of that block holds
  // column ow − 8 + l.
  const int lastBlock = full >= 8 && full < ow && S * (ow - 8) + (S == 1 ? 9 : 17) < xs;
  v8i keep = {0, 0, 0, 0, 0, 0, 0, 0};
  if (lastBlock)
    for (int l = 0; l < 8; l++) keep[l] = ow - 8 + l >= full ? -1 : 0;
  const ptrdiff_t tail0 = lastBlock ? ow : full;
  for (ptrdiff_t i = 0; i < oh; i++) {
    const float *r0 = xp + i * S * xs, *r1 = r0 + xs, *r2 = r1 + xs;
    const float *d = dy + i * ow;
    // One block's terms: output columns j .. j + 7 with dy values dj (reads from q = S·j).
#define WT3_BLOCK(q, dj)                   \
  do {                                     \
    if (S == 1) {                          \
      a0 += dj * load8(r0 + q); \
      a1 += dj * load8(r0 + q + 1); \
      a2 += dj * load8(r0 + q + 2); \
      a3 += dj * load8(r1 + q); \
      a4 += dj * load8(r1 + q + 1); \
      a5 += dj * load8(r1 + q + 2); \
      a6 += dj * load8(r2 + q); \
      a7 += dj * load8(r2 + q + 1); \
      a8 += dj * load8(r2 + q + 2); \
    } else {                               \
      a0 += dj * evens8(r0 + q); \
      a1 += dj * odds8(r0 + q); \
      a2 += dj * evens8(r0 + q + 2); \
      a3 += dj * evens8(r1 + q); \
      a4 += dj * odds8(r1 + q); \
      a5 += dj * evens8(r1 + q + 2); \
      a6 += dj * evens8(r2 + q); \
      a7 += dj * odds8(r2 + q); \
      a8 += dj * evens8(r2 + q + 2); \
    }                                      \
    a9 += dj; \
  } while (0)
    for (ptrdiff_t j = 0; j < full; j += 8) {
      const v8 dj = load8(d + j);
      WT3_BLOCK(j * S, dj);
    }
    if (lastBlock) {
      const v8 dj = (v8)((v8i)load8(d + ow - 8) & keep);
      WT3_BLOCK((ow - 8) * S, dj);
    }
#undef WT3_BLOCK
    for (ptrdiff_t j = tail0; j < ow; j++) {
      const float dj = d[j];
      const ptrdiff_t q = j * S;
      at[0] += dj * r0[q];
      at[1] += dj * r0[q + 1];
      at[2] += dj * r0[q + 2];
      at[3] += dj * r1[q];
      at[4] += dj * r1[q + 1];
      at[5] += dj * r1[q + 2];
      at[6] += dj * r2[q];
      at[7] += dj * r2[q + 1];
      at[8] += dj * r2[q + 2];
      at[9] += dj;
    }
  }
  const v8 all[10] = {a0, a1, a2, a3, a4, a5, a6, a7, a8, a9};
  for (int t = 0; t < 10; t++) memcpy(acc + 8 * t, &all[t], sizeof(v8));
}

// Stride 2, 3×3, padding 1: dx[r][q] (+)= Σ over the taps that reach it, read from a dy plane
// padded by one zero row and column on each side (dq points at dy[0][0], row stride ds). Input
// row r + 1 is reached by kernel rows u ≡ r + 1 (mod 2): u = 0 and 2 from dy rows (r+1)/2 and
// (r+1)/2 − 1 when r is odd, u = 1 from dy row r/2 when r is even; likewise columns: even
// q = 2k takes v = 1 from dy column k, odd q = 2k + 1 takes v = 0 from column k + 1 and v = 2
// from column k.
INLINE void input_terms_s2(const float *RESTRICT dq, ptrdiff_t ds, const float *RESTRICT wt, float *RESTRICT dx,
                           ptrdiff_t h, ptrdiff_t w, int first) {
  for (ptrdiff_t r = 0; r < h; r++) {
    float *xr = dx + r * w;
    const ptrdiff_t R = r + 1;
    // Up to two (kernel row, dy row) pairs; the second's weights are 0 when there is one.
    const float *da, *db;
    float a0, a1, a2, b0, b1, b2;
    if ((R & 1) == 0) {
      da = dq + (R / 2) * ds;
      db = dq + (R / 2 - 1) * ds;
      a0 = wt[0], a1 = wt[1], a2 = wt[2], b0 = wt[6], b1 = wt[7], b2 = wt[8];
    } else {
      da = dq + ((R - 1) / 2) * ds;
      db = da;
      a0 = wt[3], a1 = wt[4], a2 = wt[5], b0 = 0, b1 = 0, b2 = 0;
    }
    const ptrdiff_t pairs = w / 2;
    // Blocks of 8 pairs (16 columns) in vectors, the same operations in the same order as the
    // scalar loop; when overwriting, a last block ending at `pairs` overlaps the previous one.
    const ptrdiff_t full = pairs & ~(ptrdiff_t)7, blocks = first && pairs > 8 && full < pairs ? full + 8 : full;
    for (ptrdiff_t kb = 0; kb < blocks; kb += 8) {
      const ptrdiff_t k = kb < full ? kb : pairs - 8;
      v8 e = {0, 0, 0, 0, 0, 0, 0, 0}, o = e;
      if (!first) {
        e = evens8(xr + 2 * k);
        o = odds8(xr + 2 * k);
      }
      const v8 dak = load8(da + k), dak1 = load8(da + k + 1), dbk = load8(db + k), dbk1 = load8(db + k + 1);
      e += a1 * dak;
      e += b1 * dbk;
      o += a0 * dak1;
      o += a2 * dak;
      o += b0 * dbk1;
      o += b2 * dbk;
      const v8 lo = __builtin_shufflevector(e, o, 0, 8, 1, 9, 2, 10, 3, 11);
      const v8 hi = __builtin_shufflevector(e, o, 4, 12, 5, 13, 6, 14, 7, 15);
      memcpy(xr + 2 * k, &lo, sizeof lo);
      memcpy(xr + 2 * k + 8, &hi, sizeof hi);
    }
    ptrdiff_t k0 = blocks > full ? pairs : full;
    if (pairs - k0 >= 4) {
      // Four pairs (8 columns) in half vectors, the same operations in the same order.
      const ptrdiff_t k = k0;
      v4 e = {0, 0, 0, 0}, o = e;
      if (!first) {
        const v8 prev = load8(xr + 2 * k);
        e = __builtin_shufflevector(prev, prev, 0, 2, 4, 6);
        o = __builtin_shufflevector(prev, prev, 1, 3, 5, 7);
      }
      const v4 dak = load4(da + k), dak1 = load4(da + k + 1), dbk = load4(db + k), dbk1 = load4(db + k + 1);
      e += a1 * dak;
      e += b1 * dbk;
      o += a0 * dak1;
      o += a2 * dak;
      o += b0 * dbk1;
      o += b2 * dbk;
      const v8 eo = __builtin_shufflevector(e, o, 0, 4, 1, 5, 2, 6, 3, 7);
      memcpy(xr + 2 * k, &eo, sizeof eo);
      k0 += 4;
    }
    for (ptrdiff_t k = k0; k < pairs; k++) {
      const float e = (first ? 0.0f : xr[2 * k]) + a1 * da[k] + b1 * db[k];
      const float o = (first ? 0.0f : xr[2 * k + 1]) + a0 * da[k + 1] + a2 * da[k] + b0 * db[k + 1] + b2 * db[k];
      xr[2 * k] = e;
      xr[2 * k + 1] = o;
    }
    if (w & 1) {
      const ptrdiff_t k = pairs;
      xr[2 * k] = (first ? 0.0f : xr[2 * k]) + a1 * da[k] + b1 * db[k];
    }
  }
}

// Stride 1: dx[r][q] (+)= Σ_{u,v} w[u][v]·dyp[r + ph + kh − 1 − u][q + pw + kw − 1 − v] over a
// dy plane padded by kh − 1 rows and kw − 1 columns on each side (row stride ds). `first`
// overwrites dx, else adds.
INLINE void input_terms_gather(const float *RESTRICT dyp, ptrdiff_t ds, const float *RESTRICT wt,
                               float *RESTRICT dx, ptrdiff_t h, ptrdiff_t w, ptrdiff_t ph, ptrdiff_t pw,
                               ptrdiff_t kh, ptrdiff_t kw, int first) {
  if (kh == 3 && kw == 3) {
    const float w0 = wt[0], w1 = wt[1], w2 = wt[2], w3 = wt[3], w4 = wt[4], w5 = wt[5], w6 = wt[6], w7 = wt[7],
                w8 = wt[8];
    // Blocks of 8 read columns q − 2 .. q + 7 of the padded rows, all inside them. When
    // overwriting, the remaining columns run as one block ending at w that overlaps the previous
    // one (rewriting its columns with the same values).
    const ptrdiff_t full = w & ~(ptrdiff_t)7, overlap = first && w > 8 && full < w;
    const ptrdiff_t tail0 = overlap ? w : full;
    // The blocks two rows at a time, their chains of FMAs interleaved (as in forward_plane: the
    // backward of [64, 48, 8, 8] 1.49 → 1.14 ms on a loaded VM, no change on a quiet one, where
    // its time is dW's sums and the padded copies), an odd last row paired with itself (both
    // chains read it before either writes, so it gets one update); each element's operations in
    // the same order as the remaining columns' loop below.
    for (ptrdiff_t r = 0; r < h; r += 2) {
      const ptrdiff_t k = r + 1 < h ? r + 1 : r;
      // Row u of the kernel reads padded dy row r + ph + 2 − u; column q + pw + 2 − v.
      const float *d0 = dyp + (r + ph + 2) * ds + pw + 2, *d1 = d0 - ds, *d2 = d1 - ds;
      const float *e0 = dyp + (k + ph + 2) * ds + pw + 2, *e1 = e0 - ds, *e2 = e1 - ds;
      float *xr = dx + r * w, *xn = dx + k * w;
#define PAIR_GATHER3_BLOCK(qq)                        \
  do {                                                \
    const ptrdiff_t q_ = (qq);                        \
    v8 a = {0, 0, 0, 0, 0, 0, 0, 0}, c = a;           \
    if (!first) {                                     \
      a = load8(xr + q_);                             \
      c = load8(xn + q_);                             \
    }                                                 \
    a += w0 * load8(d0 + q_);                         \
    c += w0 * load8(e0 + q_);                         \
    a += w1 * load8(d0 + q_ - 1);                     \
    c += w1 * load8(e0 + q_ - 1);                     \
    a += w2 * load8(d0 + q_ - 2);                     \
    c += w2 * load8(e0 + q_ - 2);                     \
    a += w3 * load8(d1 + q_);                         \
    c += w3 * load8(e1 + q_);                         \
    a += w4 * load8(d1 + q_ - 1);                     \
    c += w4 * load8(e1 + q_ - 1);                     \
    a += w5 * load8(d1 + q_ - 2);                     \
    c += w5 * load8(e1 + q_ - 2);                     \
    a += w6 * load8(d2 + q_);                         \
    c += w6 * load8(e2 + q_);                         \
    a += w7 * load8(d2 + q_ - 1);                     \
    c += w7 * load8(e2 + q_ - 1);                     \
    a += w8 * load8(d2 + q_ - 2);                     \
    c += w8 * load8(e2 + q_ - 2);                     \
    memcpy(xr + q_, &a, sizeof a);                    \
    memcpy(xn + q_, &c, sizeof c);                    \
  } while (0)
      for (ptrdiff_t q = 0; q < full; q += 8) PAIR_GATHER3_BLOCK(q);
      if (overlap) PAIR_GATHER3_BLOCK(w - 8);
#undef PAIR_GATHER3_BLOCK
    }
    for (ptrdiff_t r = 0; r < h; r++) {
      const float *d0 = dyp + (r + ph + 2) * ds + pw + 2, *d1 = d0 - ds, *d2 = d1 - ds;
      float *xr = dx + r * w;
      for (ptrdiff_t q = tail0; q < w; q++) {
        float a = first ? 0.0f : xr[q];
        a += w0 * d0[q];
        a += w1 * d0[q - 1];
        a += w2 * d0[q - 2];
        a += w3 * d1[q];
        a += w4 * d1[q - 1];
        a += w5 * d1[q - 2];
        a += w6 * d2[q];
        a += w7 * d2[q - 1];
        a += w8 * d2[q - 2];
        xr[q] = a;
      }
    }
    return;
  }
  for (ptrdiff_t r = 0; r < h; r++) {
    float *xr = dx + r * w;
    if (first)
      for (ptrdiff_t q = 0; q < w; q++) xr[q] = 0;
    for (ptrdiff_t u = 0; u < kh; u++) {
      for (ptrdiff_t v = 0; v < kw; v++) {
        const float wv = wt[u * kw + v];
        const float *d = dyp + (r + ph + kh - 1 - u) * ds + pw + kw - 1 - v;
        for (ptrdiff_t q = 0; q < w; q++) xr[q] += wv * d[q];
      }
    }
  }
}

// Any stride: dxp[i·sh + u][j·sw + v] += w[u][v]·dy[i][j] into the padded plane dxp (row
// stride xs).
INLINE void input_terms_scatter(float *RESTRICT dxp, ptrdiff_t xs, const float *RESTRICT wt,
                                const float *RESTRICT dy, ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t kh, ptrdiff_t kw,
                                ptrdiff_t sh, ptrdiff_t sw) {
  for (ptrdiff_t i = 0; i < oh; i++) {
    const float *d = dy + i * ow;
    for (ptrdiff_t u = 0; u < kh; u++) {
      for (ptrdiff_t v = 0; v < kw; v++) {
        const float wv = wt[u * kw + v];
        float *r = dxp + (i * sh + u) * xs + v;
        for (ptrdiff_t j = 0; j < ow; j++) r[j * sw] += wv * d[j];
      }
    }
  }
}

// Which 3×3 fast path a geometry takes: 1 (stride 1), 2 (stride 2), or 0 (the general loops).
INLINE int fast3(const DWGeometry *g) {
  if (g->kh != 3 || g->kw != 3) return 0;
  if (g->sh == 1 && g->sw == 1) return 1;
  if (g->sh == 2 && g->sw == 2) return 2;
  return 0;
}

INLINE void backward_body(const DWGeometry *g, const float *x, const float *weight, const float *dy, float *dx,
                          float *dweight, float *dbias, ptrdiff_t c0, ptrdiff_t c1, float *scratch) {
  // x, dx [n, c, h, w]; dy [n, c·m, oh, ow]; channels [c0, c1) of x, with outputs c·m ..< (c+1)·m
  const ptrdiff_t m = g->m, cm = g->c * m, hw = g->h * g->w, ohw = g->oh * g->ow, ow = g->ow;
  const ptrdiff_t kk = g->kh * g->kw, PW = g->w + 2 * g->pw, PH = g->h + 2 * g->ph;
  const int f3 = fast3(g), padded = g->ph > 0 || g->pw > 0, direct = direct_s2(g);
  // dx by: a gather over a padded dy plane (stride 1), the parity gather (3×3, stride 2,
  // padding 1), or a scatter into a padded dx plane (anything else).
  const int gather = g->sh == 1 && g->sw == 1, parity = f3 == 2 && g->ph == 1 && g->pw == 1;
  const ptrdiff_t DW = ow + 2 * (g->kw - 1), DH = g->oh + 2 * (g->kh - 1), DQ = ow + 2;
  const ptrdiff_t accPer = f3 ? 90 : (kk + 1) * ow;
  // Samples outer, channels inner: a call reads runs of c1 − c0 consecutive planes (the hardware
  // prefetcher streams them), not one plane per sample and channel strided by the sample size
  // (measured 2.5× slower: latency-bound); no software prefetch (it cost more than it gained).
  // Each channel's accumulators persist across samples.
  const ptrdiff_t nch = c1 - c0;
  // scratch: xp [PH, PW] | acc [nch, m, accPer] | gather ? dyp [DH, DW] : parity ? dyq [oh + 2, DQ] : dxp [PH, PW]
  float *xpad = scratch, *accAll = xpad + PH * PW, *buf = accAll + nch * m * accPer;
  if (padded) memset(xpad, 0, (size_t)(PH * PW) * 4);
  if (dx && gather) memset(buf, 0, (size_t)(DH * DW) * 4);
  if (dx && parity) memset(buf, 0, (size_t)((g->oh + 2) * DQ) * 4);
  const int scatter = dx && !gather && !parity;
  memset(accAll, 0, (size_t)(nch * m * accPer) * 4);
  for (ptrdiff_t nn = 0; nn < g->n; nn++) {
    for (ptrdiff_t ci = c0; ci < c1; ci++) {
      float *acc = accAll + (ci - c0) * m * accPer;
      const float *xplane = x + (nn * g->c + ci) * hw, *xp = xplane;
      ptrdiff_t xs = g->w;
      if (padded && !direct) {
        pad_copy(xpad, xplane, g);
        xp = xpad;
        xs = PW;
      }
      float *dxplane = dx ? dx + (nn * g->c + ci) * hw : NULL;
      if (scatter) memset(buf, 0, (size_t)(PH * PW) * 4);
      for (ptrdiff_t jm = 0; jm < m; jm++) {
        const ptrdiff_t o = ci * m + jm;
        const float *dyplane = dy + (nn * cm + o) * ohw, *wt = weight + o * kk;
        if (direct)
          weight_terms_direct_s2(xplane, g->h, g->w, dyplane, acc + jm * accPer);
        else if (f3 == 1)
          weight_terms3(xp, xs, dyplane, g->oh, ow, 1, acc + jm * accPer);
        else if (f3 == 2)
          weight_terms3(xp, xs, dyplane, g->oh, ow, 2, acc + jm * accPer);
        else
          weight_terms(xp, xs, dyplane, acc + jm * accPer, g->oh, ow, g->kh, g->kw, g->sh, g->sw);
        if (!dx) continue;
        if (gather) {
          for (ptrdiff_t i = 0; i < g->oh; i++) {
            float *RESTRICT d = buf + (i + g->kh - 1) * DW + g->kw - 1;
            const float *RESTRICT sr = dyplane + i * ow;
            copy_row(d, sr, ow);
          }
          if (f3)
            input_terms_gather(buf, DW, wt, dxplane, g->h, g->w, g->ph, g->pw, 3, 3, jm == 0);
          else
            input_terms_gather(buf, DW, wt, dxplane, g->h, g->w, g->ph, g->pw, g->kh, g->kw, jm == 0);
        } else if (parity) {
          for (ptrdiff_t i = 0; i < g->oh; i++) {
            float *RESTRICT d = buf + (i + 1) * DQ + 1;
            const float *RESTRICT sr = dyplane + i * ow;
            copy_row(d, sr, ow);
          }
          input_terms_s2(buf + DQ + 1, DQ, wt, dxplane, g->h, g->w, jm == 0);
        } else {
          input_terms_scatter(buf, PW, wt, dyplane, g->oh, ow, g->kh, g->kw, g->sh, g->sw);
        }
      }
      if (scatter)
        for (ptrdiff_t r = 0; r < g->h; r++)
          memcpy(dxplane + r * g->w, buf + (r + g->ph) * PW + g->pw, (size_t)g->w * 4);
    }
  }
  // Reduce each output channel's accumulators in a fixed order.
  for (ptrdiff_t ci = c0; ci < c1; ci++) {
    const float *acc = accAll + (ci - c0) * m * accPer;
    for (ptrdiff_t jm = 0; jm < m; jm++) {
      const ptrdiff_t o = ci * m + jm;
      const float *a = acc + jm * accPer;
      for (ptrdiff_t t = 0; t <= kk; t++) {
        float s = 0;
        if (f3) {
          s = lane_sum(load8(a + 8 * t)) + a[80 + t];
        } else {
          for (ptrdiff_t j = 0; j < ow; j++) s += a[t * ow + j];
        }
        if (t < kk)
          dweight[o * kk + t] += s;
        else if (dbias)
          dbias[o] += s;
      }
    }
  }
}

// MARK: - Variants and entry points

AVX2 static void forward_avx2(const DWGeometry *g, const float *x, const float *weight, const float *bias, float *y,
                              ptrdiff_t p0, ptrdiff_t p1, float *scratch) {
#if defined(__x86_64__)
  if (dw_avx2_grouped(g)) {
    dw_avx2_forward_grouped(g, x, weight, bias, y, p0, p1);
    return;
  }
#endif
  forward_body(g, x, weight, bias, y, p0, p1, scratch);
}
static void forward_portable(const DWGeometry *g, const float *x, const float *weight, const float *bias, float *y,
                             ptrdiff_t p0, ptrdiff_t p1, float *scratch) {
  forward_body(g, x, weight, bias, y, p0, p1, scratch);
}
AVX2 static void backward_avx2(const DWGeometry *g, const float *x, const float *weight, const float *dy, float *dx,
                               float *dweight, float *dbias, ptrdiff_t c0, ptrdiff_t c1, float *scratch) {
#if defined(__x86_64__)
  if (dw_avx2_grouped(g)) {
    dw_avx2_backward_grouped(g, x, weight, dy, dx, dweight, dbias, c0, c1);
    return;
  }
#endif
  backward_body(g, x, weight, dy, dx, dweight, dbias, c0, c1, scratch);
}
static void backward_portable(const DWGeometry *g, const float *x, const float *weight, const float *dy, float *dx,
                              float *dweight, float *dbias, ptrdiff_t c0, ptrdiff_t c1, float *scratch) {
  backward_body(g, x, weight, dy, dx, dweight, dbias, c0, c1, scratch);
}

// The variant that runs: -1 until first asked (then the default choice), else DW_VARIANT_*.
// Relaxed atomics: threads that ask at once all compute and store the same default;
// dw_kernels_select is for tests, between calls.
static int chosen = -1;

bool dw_kernels_supports(int variant) {
  if (variant == DW_VARIANT_PORTABLE) return true;
#if HAVE_VARIANTS
  if (variant == DW_VARIANT_AVX2 || variant == DW_VARIANT_AVX512) {
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return variant == DW_VARIANT_AVX2 ? avx2 : avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  }
#endif
  return false;
}

int dw_kernels_variant(void) {
  int v = __atomic_load_n(&chosen, __ATOMIC_RELAXED);
  if (v < 0) {
    const char *e = getenv("DW_KERNELS");
    const int forced_portable = e && strcmp(e, "portable") == 0;
    v = DW_VARIANT_PORTABLE;
    if (!forced_portable)
      for (int c = DW_VARIANT_COUNT - 1; c > DW_VARIANT_PORTABLE; c--)
        if (dw_kernels_supports(c)) {
          v = c;
          break;
        }
    __atomic_store_n(&chosen, v, __ATOMIC_RELAXED);
  }
  return v;
}

bool dw_kernels_select(int variant) {
  if (variant >= 0 && !dw_kernels_supports(variant)) return false;
  __atomic_store_n(&chosen, variant < 0 ? -1 : variant, __ATOMIC_RELAXED);
  return true;
}

bool dw_kernels_use_avx2(void) { return dw_kernels_variant() >= DW_VARIANT_AVX2; }

// Scratch sizes cover every variant (the variant may change between the query and the call).
ptrdiff_t dw_forward_scratch(const DWGeometry *g) {
  const ptrdiff_t planePad = (g->h + 2 * g->ph) * (g->w + 2 * g->pw), v512 = dw_avx512_forward_scratch(g);
  return planePad > v512 ? planePad : v512;
}

ptrdiff_t dw_backward_scratch(const DWGeometry *g, ptrdiff_t channels) {
  const ptrdiff_t planePad = (g->h + 2 * g->ph) * (g->w + 2 * g->pw);
  const ptrdiff_t dyPad = (g->oh + 2 * (g->kh - 1)) * (g->ow + 2 * (g->kw - 1));
  const ptrdiff_t buf = (g->sh == 1 && g->sw == 1) ? dyPad : planePad;  // the parity path's dyq fits in planePad
  const ptrdiff_t acc = g->m * (g->kh * g->kw + 1) * g->ow, acc3 = g->m * 90;
  const ptrdiff_t v2 = planePad + channels * (acc > acc3 ? acc : acc3) + buf;
  const ptrdiff_t v512 = dw_avx512_backward_scratch(g, channels);
  return v2 > v512 ? v2 : v512;
}

void dw_forward_planes(const DWGeometry *g, const float *x, const float *weight, const float *bias, float *y,
                       ptrdiff_t p0, ptrdiff_t p1, float *scratch) {
  const int v = dw_kernels_variant();
  if (v == DW_VARIANT_AVX512 && dw_avx512_handles(g))
    dw_avx512_forward(g, x, weight, bias, y, p0, p1, scratch);
  else if (v >= DW_VARIANT_AVX2)
    forward_avx2(g, x, weight, bias, y, p0, p1, scratch);
  else
    forward_portable(g, x, weight, bias, y, p0, p1, scratch);
}

void dw_backward_channels(const DWGeometry *g, const float *x, const float *weight, const float *dy, float *dx,
                          float *dweight, float *dbias, ptrdiff_t c0, ptrdiff_t c1, float *scratch) {
  const int v = dw_kernels_variant();
  if (v == DW_VARIANT_AVX512 && dw_avx512_handles(g))
    dw_avx512_backward(g, x, weight, dy, dx, dweight, dbias, c0, c1, scratch);
  else if (v >= DW_VARIANT_AVX2)
    backward_avx2(g, x, weight, dy, dx, dweight, dbias, c0, c1, scratch);
  else
    backward_portable(g, x, weight, dy, dx, dweight, dbias, c0, c1, scratch);
}
