// DepthwiseAVX512.c: the AVX-512 variant of the 3×3, padding 1 depthwise kernels at stride 1, and
// at stride 2 on planes up to 32 wide (the shapes of ShuffleNetV2 and TFNet), chosen at run
// time when the CPU has AVX-512F and VL. At stride 1, planes at least 16 wide run by rows in
// 16-column blocks: each input row's three column taps (masked loads: the lanes outside the row
// are zero, and masked-off lanes never fault) are loaded once and feed the three output rows that
// use them (forward: y rows r + 1, r, r − 1; backward: dW against the x rows above, at and below
// each dy row, then dx from dy rows the same way with the mirrored taps), so a vector of 16
// outputs costs 3 loads and 9 FMAs per pass. 8-wide planes do the same one row per 8-lane vector
// (Zen 4 runs 512-bit FMAs as two 256-bit halves, so this loses nothing). Other widths keep every
// plane as one flat run of 16-float chunks, so that a chunk may span several short rows: tap
// (u, v) of output f = (i, j) is one masked load of x[f + (u−1)·w + v − 1], its mask (from a
// per-call table) zeroing the lanes whose input lies outside the image; dx is the same
// convolution of dy with the mirrored taps, in the same sweep. dW and db sum per lane (output
// column mod 16, or flat position mod 16) over samples, blocks and rows in a fixed order, then
// over the lanes in order 0..15, so the bits do not depend on how the channels are split between
// threads.
// Planes under 8 wide of 1, 2, 4, 8 or 16 floats (TFNet's 4×4 and 2×2 blocks, its last layer's
// [64, 1024, 2, 2]) run in groups instead: a vector holds 16 / (h·w) neighbouring channels of a
// sample, each tap an in-register permute, each lane with its own channel's weights, channels
// outer and samples inner (a 2×2 plane no longer fills a quarter of a vector; the flat path's
// bits, 4–6× faster at 2×2 on 64 samples).
// An 8×8 plane at stride 2 is four vectors: its nine 4×4 tap vectors come from them by shuffles,
// and dx from dy's one vector by shifts and an interleave of dx's four phase planes; a 16-wide
// plane likewise, two output rows (one vector) at a time from five input rows; any other plane
// up to 32 wide one output row at a time (each input row's taps serving two output rows).
// (Stride 2 through the four phase planes of x in memory, each tap a flat shifted load again,
// measured slower than the AVX2 kernels: the split and the merge cost more than they save.)
//
// Shapes: x, dx [n, c, h, w]; y, dy [n, c·m, oh, ow]; weight [c·m, 3, 3]; bias [c·m].
#include "DepthwiseInternal.h"

#include <stdint.h>
#include <string.h>

// 3×3, padding 1, and stride 1 (any h, w) or stride 2 on planes up to 32 wide: an 8×8 plane, a
// 16-wide one with h a multiple of 4 (two 8-wide output rows per vector), any other.
static bool stride2_8x8(const DWGeometry *g) { return g->sh == 2 && g->sw == 2 && g->h == 8 && g->w == 8; }
static bool stride2_w16(const DWGeometry *g) { return g->sh == 2 && g->sw == 2 && g->w == 16 && g->h % 4 == 0; }
// Any other plane up to 32 wide: one output row per vector.
static bool stride2_rows(const DWGeometry *g) { return g->sh == 2 && g->sw == 2 && g->w <= 32; }
static bool stride2_regs(const DWGeometry *g) { return stride2_8x8(g) || stride2_w16(g) || stride2_rows(g); }

bool dw_avx512_handles(const DWGeometry *g) {
  return g->kh == 3 && g->kw == 3 && g->ph == 1 && g->pw == 1 && ((g->sh == 1 && g->sw == 1) || stride2_regs(g));
}

// Chunks of 16 in n floats.
static ptrdiff_t chunks16(ptrdiff_t n) { return (n + 15) / 16; }

// Floats that hold the mask table (uint16 each), rounded up to whole 16-float lines.
static ptrdiff_t mask_floats(const DWGeometry *g) {
  const ptrdiff_t n = chunks16(g->oh * g->ow) * 10;
  return ((n + 1) / 2 + 15) & ~(ptrdiff_t)15;
}

ptrdiff_t dw_avx512_forward_scratch(const DWGeometry *g) {
  if (!dw_avx512_handles(g) || stride2_regs(g)) return 0;
  return mask_floats(g);
}

ptrdiff_t dw_avx512_backward_scratch(const DWGeometry *g, ptrdiff_t channels) {
  if (!dw_avx512_handles(g)) return 0;
  return (stride2_regs(g) ? 0 : mask_floats(g)) + channels * g->m * 160;
}

// The mask table of a stride-1 plane [h, w], 10 entries per chunk k: entry 3u + v has bit l set
// when output f = 16k + l lies in the plane and its tap (u, v) input (i + u − 1, j + v − 1) in the
// image; entry 9 is 1 when the chunk is whole and no tap's row leaves the image (an interior
// chunk: only the column masks, entries 3 and 5, matter).
static void masks_s1(uint16_t *mt, ptrdiff_t h, ptrdiff_t w) {
  const ptrdiff_t n = h * w, nc = chunks16(n);
  for (ptrdiff_t k = 0; k < nc; k++) {
    uint16_t m[10] = {0};
    for (ptrdiff_t l = 0; l < 16; l++) {
      const ptrdiff_t f = 16 * k + l;
      if (f >= n) break;
      const ptrdiff_t i = f / w, j = f % w;
      for (int t = 0; t < 9; t++) {
        const ptrdiff_t r = i + t / 3 - 1, q = j + t % 3 - 1;
        if (r >= 0 && r < h && q >= 0 && q < w) m[t] |= (uint16_t)(1u << l);
      }
    }
    m[9] = m[4] == 0xFFFF && m[1] == 0xFFFF && m[7] == 0xFFFF && m[0] == m[3] && m[6] == m[3] && m[2] == m[5] &&
           m[8] == m[5];
    memcpy(mt + 10 * k, m, sizeof m);
  }
}

// Whether small stride-1 planes run in groups (see dw_avx512_group_small_planes).
static int grouping = 1;

bool dw_avx512_group_small_planes(int enabled) {
  const int was = __atomic_load_n(&grouping, __ATOMIC_RELAXED);
  if (enabled >= 0) __atomic_store_n(&grouping, enabled != 0, __ATOMIC_RELAXED);
  return was != 0;
}

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma")))
#define INLINE512 static inline __attribute__((always_inline, target("avx512f,avx512vl,avx2,fma")))

// p + i as an address, computed without pointer arithmetic: a masked load may start before the
// tensor (its lanes there are masked off and never read).
INLINE512 const float *at(const float *p, ptrdiff_t i) { return (const float *)((uintptr_t)p + (uintptr_t)(i * 4)); }

// The low n lanes (n ≤ 0: none, n ≥ 16: all).
INLINE512 __mmask16 low(ptrdiff_t n) { return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1); }

// MARK: - Stride 1

// Tap t = 3u + v's offset in a flat [h, w] plane: (u − 1)·w + v − 1.
INLINE512 void offsets_s1(ptrdiff_t w, ptrdiff_t off[9]) {
  for (int t = 0; t < 9; t++) off[t] = (t / 3 - 1) * w + t % 3 - 1;
}

// Tap t's input vector for a chunk at p (its mask m[t]); an interior chunk's taps take the column
// masks alone, and the middle column none.
INLINE512 __m512 tap(const uint16_t *m, int t, const float *p, int interior) {
  if (!interior) return _mm512_maskz_loadu_ps(m[t], p);
  if (t % 3 == 1) return _mm512_loadu_ps(p);
  return _mm512_maskz_loadu_ps(m[3 + t % 3], p);
}

// y [h, w] = b + Σ_t w[t]·x shifted by tap t, bias first, then the taps in order.
INLINE512 void forward_chunk(const float *xk, const ptrdiff_t off[9], const __m512 wv[9], float b, float *yk,
                             const uint16_t *m, int interior) {
  __m512 a = _mm512_set1_ps(b);
  for (int t = 0; t < 9; t++) a = _mm512_fmadd_ps(wv[t], tap(m, t, at(xk, off[t]), interior), a);
  if (interior)
    _mm512_storeu_ps(yk, a);
  else
    _mm512_mask_storeu_ps(yk, m[4], a);
}

INLINE512 void forward_s1(const float *x, ptrdiff_t n, const ptrdiff_t off[9], const __m512 wv[9], float b, float *y,
                          const uint16_t *mt) {
  const ptrdiff_t nc = chunks16(n);
  for (ptrdiff_t k = 0; k < nc; k++) {
    const uint16_t *m = mt + 10 * k;
    if (m[9])
      forward_chunk(x + 16 * k, off, wv, b, y + 16 * k, m, 1);
    else
      forward_chunk(x + 16 * k, off, wv, b, y + 16 * k, m, 0);
  }
}

// One chunk of backward_s1.
INLINE512 void backward_chunk(const float *xk, const float *dk, float *xo, int first, const ptrdiff_t off[9],
                              const __m512 wv[9], __m512 acc[10], const uint16_t *m, int interior) {
  const __m512 d = interior ? _mm512_loadu_ps(dk) : _mm512_maskz_loadu_ps(m[4], dk);
  for (int t = 0; t < 9; t++) acc[t] = _mm512_fmadd_ps(d, tap(m, t, at(xk, off[t]), interior), acc[t]);
  acc[9] = _mm512_add_ps(acc[9], d);
  if (!xo) return;
  __m512 g = first ? _mm512_setzero_ps() : interior ? _mm512_loadu_ps(xo) : _mm512_maskz_loadu_ps(m[4], xo);
  for (int t = 0; t < 9; t++) g = _mm512_fmadd_ps(wv[t], tap(m, 8 - t, at(dk, -off[t]), interior), g);
  if (interior)
    _mm512_storeu_ps(xo, g);
  else
    _mm512_mask_storeu_ps(xo, m[4], g);
}

// One plane's backward at stride 1 in one sweep: acc[t] (lane l) += Σ dy[f]·x[f + off[t]] over the
// plane's outputs f ≡ l (mod 16), acc[9] += dy; dx (unless NULL) = (first ? 0 : dx) +
// Σ_t w[t]·dy[f − off[t]] (tap t's mirror mask).
INLINE512 void backward_s1(const float *x, const float *dy, float *dx, int first, ptrdiff_t n, const ptrdiff_t off[9],
                           const __m512 wv[9], __m512 acc[10], const uint16_t *mt) {
  const ptrdiff_t nc = chunks16(n);
  for (ptrdiff_t k = 0; k < nc; k++) {
    const uint16_t *m = mt + 10 * k;
    float *xo = dx ? dx + 16 * k : NULL;
    if (m[9])
      backward_chunk(x + 16 * k, dy + 16 * k, xo, first, off, wv, acc, m, 1);
    else
      backward_chunk(x + 16 * k, dy + 16 * k, xo, first, off, wv, acc, m, 0);
  }
}

// MARK: - Stride 1 on planes at least 16 wide, by rows

// Whether a stride-1 plane runs by rows (16-column blocks down the rows, each input row's three
// column taps loaded once and used by the three output rows it feeds) rather than flat chunks.
static bool stride1_rows(const DWGeometry *g) { return g->sh == 1 && g->sw == 1 && g->w >= 16; }

// The masks of the 16-column block at column j0 of a row of w: lane l of the left tap reads column
// j0 + l − 1, of the middle j0 + l, of the right j0 + l + 1; each set where that column is in the
// row (the middle mask is also the block's output lanes).
INLINE512 void block_masks(ptrdiff_t w, ptrdiff_t j0, __mmask16 *mL, __mmask16 *mC, __mmask16 *mR) {
  *mC = low(w - j0);
  *mL = (__mmask16)(low(w - j0 + 1) & (j0 == 0 ? 0xFFFE : 0xFFFF));
  *mR = low(w - j0 - 1);
}

// The three column taps of a block at s (s[−1], s[0], s[1] with the block's masks).
INLINE512 void row3(const float *s, __mmask16 mL, __mmask16 mC, __mmask16 mR, __m512 T[3]) {
  T[0] = _mm512_maskz_loadu_ps(mL, at(s, -1));
  T[1] = _mm512_maskz_loadu_ps(mC, s);
  T[2] = _mm512_maskz_loadu_ps(mR, s + 1);
}

// y [h, w] = b + Σ taps, bias first, then the taps in (u, v) order: input row r's taps go to
// output rows r + 1 (u = 0), r (u = 1) and r − 1 (u = 2), so each is loaded once.
INLINE512 void forward_rows_s1(const float *x, ptrdiff_t h, ptrdiff_t w, const __m512 wv[9], float b, float *y) {
  const __m512 bv = _mm512_set1_ps(b);
  for (ptrdiff_t j0 = 0; j0 < w; j0 += 16) {
    __mmask16 mL, mC, mR;
    block_masks(w, j0, &mL, &mC, &mR);
    __m512 T[3], A = bv, B;  // A: output row r − 1, B: output row r (before input row r)
    row3(x + j0, mL, mC, mR, T);
    B = bv;
    for (int v = 0; v < 3; v++) B = _mm512_fmadd_ps(wv[3 + v], T[v], B);
    A = B;  // output row 0 (u = 0, 1 done)
    B = bv;
    for (int v = 0; v < 3; v++) B = _mm512_fmadd_ps(wv[v], T[v], B);  // output row 1, u = 0
    for (ptrdiff_t r = 1; r < h; r++) {
      row3(x + r * w + j0, mL, mC, mR, T);
      __m512 C = bv;
      for (int v = 0; v < 3; v++) A = _mm512_fmadd_ps(wv[6 + v], T[v], A);
      _mm512_mask_storeu_ps(y + (r - 1) * w + j0, mC, A);
      for (int v = 0; v < 3; v++) B = _mm512_fmadd_ps(wv[3 + v], T[v], B);
      for (int v = 0; v < 3; v++) C = _mm512_fmadd_ps(wv[v], T[v], C);
      A = B;
      B = C;
    }
    _mm512_mask_storeu_ps(y + (h - 1) * w + j0, mC, A);
  }
}

// One plane's backward at stride 1 by rows: acc[3u + v] (lane l) += Σ dy[i][j]·x[i + u − 1][j + v − 1]
// over the outputs of column j ≡ l (mod 16), acc[9] += dy, in (block, row) order; then dx (unless
// NULL) = (first ? 0 : dx) + Σ w[u][v]·dy[r + 1 − u][c + 1 − v], dy row i's taps feeding dx rows
// i + 1, i and i − 1 (u = 2, 1, 0: that order for each dx row).
INLINE512 void backward_rows_s1(const float *x, const float *dy, float *dx, int first, ptrdiff_t h, ptrdiff_t w,
                                const __m512 wv[9], __m512 acc[10]) {
  const __m512 zero = _mm512_setzero_ps();
  for (ptrdiff_t j0 = 0; j0 < w; j0 += 16) {
    __mmask16 mL, mC, mR;
    block_masks(w, j0, &mL, &mC, &mR);
    __m512 P[3] = {zero, zero, zero}, Q[3], N[3];  // x rows i − 1, i, i + 1
    row3(x + j0, mL, mC, mR, Q);
    for (ptrdiff_t i = 0; i < h; i++) {
      if (i + 1 < h)
        row3(x + (i + 1) * w + j0, mL, mC, mR, N);
      else
        N[0] = N[1] = N[2] = zero;
      const __m512 d = _mm512_maskz_loadu_ps(mC, dy + i * w + j0);
      for (int v = 0; v < 3; v++) acc[v] = _mm512_fmadd_ps(d, P[v], acc[v]);
      for (int v = 0; v < 3; v++) acc[3 + v] = _mm512_fmadd_ps(d, Q[v], acc[3 + v]);
      for (int v = 0; v < 3; v++) acc[6 + v] = _mm512_fmadd_ps(d, N[v], acc[6 + v]);
      acc[9] = _mm512_add_ps(acc[9], d);
      for (int v = 0; v < 3; v++) {
        P[v] = Q[v];
        Q[v] = N[v];
      }
    }
    if (!dx) continue;
    // dy row i's mirrored taps: D[0] = dy[i][c + 1] (v = 0), D[1] = dy[i][c], D[2] = dy[i][c − 1].
    __m512 D[3], A, B;  // A: dx row i − 1, B: dx row i (before dy row i)
    A = zero;
    B = first ? zero : _mm512_maskz_loadu_ps(mC, dx + j0);
    for (ptrdiff_t i = 0; i < h; i++) {
      const float *s = dy + i * w + j0;
      D[0] = _mm512_maskz_loadu_ps(mR, s + 1);
      D[1] = _mm512_maskz_loadu_ps(mC, s);
      D[2] = _mm512_maskz_loadu_ps(mL, at(s, -1));
      __m512 C = zero;
      if (i + 1 < h) {
        if (!first) C = _mm512_maskz_loadu_ps(mC, dx + (i + 1) * w + j0);
        for (int v = 0; v < 3; v++) C = _mm512_fmadd_ps(wv[6 + v], D[v], C);
      }
      for (int v = 0; v < 3; v++) B = _mm512_fmadd_ps(wv[3 + v], D[v], B);
      if (i > 0) {
        for (int v = 0; v < 3; v++) A = _mm512_fmadd_ps(wv[v], D[v], A);
        _mm512_mask_storeu_ps(dx + (i - 1) * w + j0, mC, A);
      }
      A = B;
      B = C;
    }
    _mm512_mask_storeu_ps(dx + (h - 1) * w + j0, mC, A);
  }
}

// MARK: - Stride 1 on 8-wide planes, a row per 8-lane vector

// Whether a stride-1 plane is 8 wide: it runs by rows as forward_rows_s1 and backward_rows_s1
// do, one row per 8-lane vector (Zen 4 runs a 512-bit FMA as two 256-bit halves, so 8-lane FMAs
// lose nothing, and each input row's three taps are loaded once; flat 16-float chunks of two rows
// need two more loads or shuffles per vector, measured 1.2× slower).
static bool stride1_w8(const DWGeometry *g) { return g->sh == 1 && g->sw == 1 && g->w == 8; }

// y [h, 8] = b + Σ taps (as forward_rows_s1).
INLINE512 void forward_w8_rows(const float *x, ptrdiff_t h, const float *wt, float b, float *y) {
  __m256 wv[9];
  for (int t = 0; t < 9; t++) wv[t] = _mm256_set1_ps(wt[t]);
  const __m256 bv = _mm256_set1_ps(b);
  __m256 T[3], A, B = bv;
#define ROW8(r)                                                  \
  do {                                                           \
    const float *s_ = x + 8 * (r);                               \
    T[0] = _mm256_maskz_loadu_ps(0xFE, at(s_, -1));              \
    T[1] = _mm256_loadu_ps(s_);                                  \
    T[2] = _mm256_maskz_loadu_ps(0x7F, s_ + 1);                  \
  } while (0)
  ROW8(0);
  for (int v = 0; v < 3; v++) B = _mm256_fmadd_ps(wv[3 + v], T[v], B);
  A = B;
  B = bv;
  for (int v = 0; v < 3; v++) B = _mm256_fmadd_ps(wv[v], T[v], B);
  for (ptrdiff_t r = 1; r < h; r++) {
    ROW8(r);
    __m256 C = bv;
    for (int v = 0; v < 3; v++) A = _mm256_fmadd_ps(wv[6 + v], T[v], A);
    _mm256_storeu_ps(y + 8 * (r - 1), A);
    for (int v = 0; v < 3; v++) B = _mm256_fmadd_ps(wv[3 + v], T[v], B);
    for (int v = 0; v < 3; v++) C = _mm256_fmadd_ps(wv[v], T[v], C);
    A = B;
    B = C;
  }
  _mm256_storeu_ps(y + 8 * (h - 1), A);
}

// backward_rows_s1 for a plane 8 wide in 8-lane vectors: acc[t] (8 lanes) += the dW and db terms
// of output column l; dx (unless NULL; first ? = : +=).
INLINE512 void backward_w8_rows(const float *x, const float *dy, float *dx, int first, ptrdiff_t h, const float *wt,
                                __m256 acc[10]) {
  // Both sweeps with their first and last rows peeled (no branch on the row inside the loops).
  const __m256 zero = _mm256_setzero_ps();
  __m256 P[3] = {zero, zero, zero}, Q[3], T[3];
  ROW8(0);
  for (int v = 0; v < 3; v++) Q[v] = T[v];
#define DW_ROW(i, N)                                                                   \
  do {                                                                                 \
    const __m256 d_ = _mm256_loadu_ps(dy + 8 * (i));                                   \
    for (int v = 0; v < 3; v++) acc[v] = _mm256_fmadd_ps(d_, P[v], acc[v]);            \
    for (int v = 0; v < 3; v++) acc[3 + v] = _mm256_fmadd_ps(d_, Q[v], acc[3 + v]);    \
    for (int v = 0; v < 3; v++) acc[6 + v] = _mm256_fmadd_ps(d_, N[v], acc[6 + v]);    \
    acc[9] = _mm256_add_ps(acc[9], d_);                                                \
  } while (0)
  for (ptrdiff_t i = 0; i + 1 < h; i++) {
    ROW8(i + 1);
    DW_ROW(i, T);
    for (int v = 0; v < 3; v++) {
      P[v] = Q[v];
      Q[v] = T[v];
    }
  }
  {
    const __m256 Z[3] = {zero, zero, zero};
    DW_ROW(h - 1, Z);
  }
#undef DW_ROW
  if (!dx) return;
  __m256 wv[9];
  for (int t = 0; t < 9; t++) wv[t] = _mm256_set1_ps(wt[t]);
  // dy row i's mirrored taps D feed dx rows i − 1 (A, u = 0), i (B, u = 1), i + 1 (C, u = 2).
  __m256 D[3], A, B = first ? zero : _mm256_loadu_ps(dx);
#define DY_TAPS(i)                                           \
  do {                                                       \
    const float *s_ = dy + 8 * (i);                          \
    D[0] = _mm256_maskz_loadu_ps(0x7F, s_ + 1);              \
    D[1] = _mm256_loadu_ps(s_);                              \
    D[2] = _mm256_maskz_loadu_ps(0xFE, at(s_, -1));          \
  } while (0)
  if (h == 1) {
    DY_TAPS(0);
    for (int v = 0; v < 3; v++) B = _mm256_fmadd_ps(wv[3 + v], D[v], B);
    _mm256_storeu_ps(dx, B);
    return;
  }
  DY_TAPS(0);
  {
    __m256 C = first ? zero : _mm256_loadu_ps(dx + 8);
    for (int v = 0; v < 3; v++) C = _mm256_fmadd_ps(wv[6 + v], D[v], C);
    for (int v = 0; v < 3; v++) B = _mm256_fmadd_ps(wv[3 + v], D[v], B);
    A = B;
    B = C;
  }
  for (ptrdiff_t i = 1; i + 1 < h; i++) {
    DY_TAPS(i);
    __m256 C = first ? zero : _mm256_loadu_ps(dx + 8 * (i + 1));
    for (int v = 0; v < 3; v++) C = _mm256_fmadd_ps(wv[6 + v], D[v], C);
    for (int v = 0; v < 3; v++) B = _mm256_fmadd_ps(wv[3 + v], D[v], B);
    for (int v = 0; v < 3; v++) A = _mm256_fmadd_ps(wv[v], D[v], A);
    _mm256_storeu_ps(dx + 8 * (i - 1), A);
    A = B;
    B = C;
  }
  DY_TAPS(h - 1);
  for (int v = 0; v < 3; v++) B = _mm256_fmadd_ps(wv[3 + v], D[v], B);
  for (int v = 0; v < 3; v++) A = _mm256_fmadd_ps(wv[v], D[v], A);
  _mm256_storeu_ps(dx + 8 * (h - 2), A);
  _mm256_storeu_ps(dx + 8 * (h - 1), B);
#undef DY_TAPS
}
#undef ROW8

// MARK: - Stride 2 on 8×8 planes, in registers

// The nine tap vectors of an 8×8 plane x at stride 2: lane 4i + j of T[3u + v] holds
// x[2i − 1 + u][2j − 1 + v] (zero outside the plane), from the plane's four vectors by shuffles:
// the even rows (u = 1), the odd rows (u = 2) and the odd rows one row down (u = 0, row −1 zero),
// then their even, odd and left-shifted odd columns.
INLINE512 void taps8(const float *x, __m512 T[9]) {
  const __m512 z0 = _mm512_loadu_ps(x), z1 = _mm512_loadu_ps(x + 16), z2 = _mm512_loadu_ps(x + 32);
  const __m512 z3 = _mm512_loadu_ps(x + 48), zero = _mm512_setzero_ps();
  const __m512 e0 = _mm512_shuffle_f32x4(z0, z1, 0x44), e1 = _mm512_shuffle_f32x4(z2, z3, 0x44);  // rows 0, 2 | 4, 6
  const __m512 o0 = _mm512_shuffle_f32x4(z0, z1, 0xEE), o1 = _mm512_shuffle_f32x4(z2, z3, 0xEE);  // rows 1, 3 | 5, 7
  const __m512 p0 = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(o0), _mm512_castps_si512(zero), 8));
  const __m512 p1 = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(o1), _mm512_castps_si512(o0), 8));
  const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const __m512i lf = _mm512_setr_epi32(0, 1, 3, 5, 0, 9, 11, 13, 0, 17, 19, 21, 0, 25, 27, 29);
  const __m512 lo[3] = {p0, e0, o0}, hi[3] = {p1, e1, o1};  // rows −1, 1, 3, 5 | 0, 2, 4, 6 | 1, 3, 5, 7
  for (int u = 0; u < 3; u++) {
    T[3 * u] = _mm512_maskz_permutex2var_ps(0xEEEE, lo[u], lf, hi[u]);
    T[3 * u + 1] = _mm512_permutex2var_ps(lo[u], ev, hi[u]);
    T[3 * u + 2] = _mm512_permutex2var_ps(lo[u], od, hi[u]);
  }
}

// dx [8, 8] (first ? = : +=) the gradient from dy [4, 4] (lane 4i + j): its phase planes
// q[A][B] (dx[2i + A][2j + B]) summed, taps in order, from dy shifted by 0 or +1 row and column,
// then interleaved into four vectors of two rows.
INLINE512 void input_terms8(const float *dy, const __m512 wv[9], float *dx, int first) {
  const __m512 d = _mm512_loadu_ps(dy);
  const __m512i di = _mm512_castps_si512(d), zi = _mm512_setzero_si512();
  const __m512 d01 = _mm512_castsi512_ps(_mm512_maskz_alignr_epi32(0x7777, zi, di, 1));  // dy[i][j + 1]
  const __m512 d10 = _mm512_castsi512_ps(_mm512_alignr_epi32(zi, di, 4));                 // dy[i + 1][j]
  const __m512 d11 = _mm512_castsi512_ps(_mm512_maskz_alignr_epi32(0x7777, zi, di, 5));  // dy[i + 1][j + 1]
  const __m512 q00 = _mm512_mul_ps(wv[4], d);
  const __m512 q01 = _mm512_fmadd_ps(wv[5], d, _mm512_mul_ps(wv[3], d01));
  const __m512 q10 = _mm512_fmadd_ps(wv[7], d, _mm512_mul_ps(wv[1], d10));
  __m512 q11 = _mm512_mul_ps(wv[0], d11);
  q11 = _mm512_fmadd_ps(wv[2], d10, q11);
  q11 = _mm512_fmadd_ps(wv[6], d01, q11);
  q11 = _mm512_fmadd_ps(wv[8], d, q11);
  const __m512i il = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i ih = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  const __m512 el = _mm512_permutex2var_ps(q00, il, q01), eh = _mm512_permutex2var_ps(q00, ih, q01);  // rows 0, 2 | 4, 6
  const __m512 ol = _mm512_permutex2var_ps(q10, il, q11), oh = _mm512_permutex2var_ps(q10, ih, q11);  // rows 1, 3 | 5, 7
  __m512 r[4] = {_mm512_shuffle_f32x4(el, ol, 0x44), _mm512_shuffle_f32x4(el, ol, 0xEE),
                 _mm512_shuffle_f32x4(eh, oh, 0x44), _mm512_shuffle_f32x4(eh, oh, 0xEE)};
  for (int t = 0; t < 4; t++) {
    if (!first) r[t] = _mm512_add_ps(_mm512_loadu_ps(dx + 16 * t), r[t]);
    _mm512_storeu_ps(dx + 16 * t, r[t]);
  }
}

// The nine tap vectors of output rows 2t and 2t + 1 of a 16-wide plane x at stride 2: lane
// 8·(i − 2t) + j of T[3u + v] holds x[2i − 1 + u][2j − 1 + v] (zero outside the plane), from the
// input rows 4t − 1 + u and 4t + 1 + u by one two-source shuffle each.
INLINE512 void taps16(const float *x, ptrdiff_t t, __m512 T[9]) {
  __m512 rows[5];  // input rows 4t − 1 ..< 4t + 4
  rows[0] = t == 0 ? _mm512_setzero_ps() : _mm512_loadu_ps(x + (4 * t - 1) * 16);
  for (int k = 1; k < 5; k++) rows[k] = _mm512_loadu_ps(x + (4 * t - 1 + k) * 16);
  const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const __m512i lf = _mm512_setr_epi32(0, 1, 3, 5, 7, 9, 11, 13, 0, 17, 19, 21, 23, 25, 27, 29);
  for (int u = 0; u < 3; u++) {
    T[3 * u] = _mm512_maskz_permutex2var_ps(0xFEFE, rows[u], lf, rows[u + 2]);
    T[3 * u + 1] = _mm512_permutex2var_ps(rows[u], ev, rows[u + 2]);
    T[3 * u + 2] = _mm512_permutex2var_ps(rows[u], od, rows[u + 2]);
  }
}

// dx rows 4t ..< 4t + 4 of a 16-wide plane (first ? = : +=) the gradient from dy rows 2t and
// 2t + 1 (dt) and the next two (dn, zero past the plane), as input_terms8 (rows of 8 here).
INLINE512 void input_terms16(__m512 dt, __m512 dn, const __m512 wv[9], float *dx, int first) {
  const __m512i ti = _mm512_castps_si512(dt), ni = _mm512_castps_si512(dn);
  const __m512 d = dt;
  const __m512 d01 = _mm512_castsi512_ps(_mm512_maskz_alignr_epi32(0x7F7F, ni, ti, 1));  // dy[i][j + 1]
  const __m512 d10 = _mm512_castsi512_ps(_mm512_alignr_epi32(ni, ti, 8));                 // dy[i + 1][j]
  const __m512 d11 = _mm512_castsi512_ps(_mm512_maskz_alignr_epi32(0x7F7F, ni, ti, 9));  // dy[i + 1][j + 1]
  const __m512 q00 = _mm512_mul_ps(wv[4], d);
  const __m512 q01 = _mm512_fmadd_ps(wv[5], d, _mm512_mul_ps(wv[3], d01));
  const __m512 q10 = _mm512_fmadd_ps(wv[7], d, _mm512_mul_ps(wv[1], d10));
  __m512 q11 = _mm512_mul_ps(wv[0], d11);
  q11 = _mm512_fmadd_ps(wv[2], d10, q11);
  q11 = _mm512_fmadd_ps(wv[6], d01, q11);
  q11 = _mm512_fmadd_ps(wv[8], d, q11);
  const __m512i il = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i ih = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  __m512 r[4] = {_mm512_permutex2var_ps(q00, il, q01), _mm512_permutex2var_ps(q10, il, q11),
                 _mm512_permutex2var_ps(q00, ih, q01), _mm512_permutex2var_ps(q10, ih, q11)};
  for (int k = 0; k < 4; k++) {
    if (!first) r[k] = _mm512_add_ps(_mm512_loadu_ps(dx + 16 * k), r[k]);
    _mm512_storeu_ps(dx + 16 * k, r[k]);
  }
}

// One 16-wide plane's backward at stride 2 (h a multiple of 4), two output rows per vector:
// dW and db terms into acc, dx (unless NULL; first ? = : +=).
INLINE512 void backward_w16(const float *xplane, const float *dyplane, float *dxplane, int first, ptrdiff_t h,
                            const __m512 wv[9], __m512 acc[10]) {
  const ptrdiff_t groups = h / 4;
  __m512 dn = _mm512_loadu_ps(dyplane);
  for (ptrdiff_t t = 0; t < groups; t++) {
    __m512 T[9];
    taps16(xplane, t, T);
    const __m512 d = dn;
    dn = t + 1 < groups ? _mm512_loadu_ps(dyplane + 16 * (t + 1)) : _mm512_setzero_ps();
    for (int k = 0; k < 9; k++) acc[k] = _mm512_fmadd_ps(d, T[k], acc[k]);
    acc[9] = _mm512_add_ps(acc[9], d);
    if (dxplane) input_terms16(d, dn, wv, dxplane + 64 * t, first);
  }
}

// One 8×8 plane's backward at stride 2: dW and db terms into acc, dx (unless NULL).
INLINE512 void backward_8x8(const float *xplane, const float *dyplane, float *dxplane, int first, const __m512 wv[9],
                            __m512 acc[10]) {
  __m512 T[9];
  taps8(xplane, T);
  const __m512 d = _mm512_loadu_ps(dyplane);
  for (int t = 0; t < 9; t++) acc[t] = _mm512_fmadd_ps(d, T[t], acc[t]);
  acc[9] = _mm512_add_ps(acc[9], d);
  if (dxplane) input_terms8(dyplane, wv, dxplane, first);
}

// MARK: - Stride 2 on planes up to 32 wide, a row per vector

// The three column taps of row r of plane x [h, w] (w ≤ 32) for output columns j (lane j):
// x[r][2j − 1] (zero at j = 0), x[r][2j], x[r][2j + 1]; zero for a row outside the plane and for
// columns past the row (so lanes past the output row are zero too).
INLINE512 void row_taps(const float *x, ptrdiff_t r, ptrdiff_t h, ptrdiff_t w, __m512 T3[3]) {
  if (r < 0 || r >= h) {
    T3[0] = T3[1] = T3[2] = _mm512_setzero_ps();
    return;
  }
  const float *s = x + r * w;
  const __m512 lo = _mm512_maskz_loadu_ps(low(w), s), hi = _mm512_maskz_loadu_ps(low(w - 16), at(s, 16));
  const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const __m512i lf = _mm512_setr_epi32(0, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29);
  T3[0] = _mm512_maskz_permutex2var_ps(0xFFFE, lo, lf, hi);
  T3[1] = _mm512_permutex2var_ps(lo, ev, hi);
  T3[2] = _mm512_permutex2var_ps(lo, od, hi);
}

// y [oh, ow] = b + Σ taps, row by row; the taps of input row 2i + 1 serve output rows i (u = 2)
// and i + 1 (u = 0).
INLINE512 void forward_rows(const float *x, ptrdiff_t h, ptrdiff_t w, ptrdiff_t oh, ptrdiff_t ow, const __m512 wv[9],
                            float b, float *y) {
  __m512 A[3], B[3], C[3];
  row_taps(x, -1, h, w, A);
  for (ptrdiff_t i = 0; i < oh; i++) {
    row_taps(x, 2 * i, h, w, B);
    row_taps(x, 2 * i + 1, h, w, C);
    __m512 a = _mm512_set1_ps(b);
    for (int v = 0; v < 3; v++) a = _mm512_fmadd_ps(wv[v], A[v], a);
    for (int v = 0; v < 3; v++) a = _mm512_fmadd_ps(wv[3 + v], B[v], a);
    for (int v = 0; v < 3; v++) a = _mm512_fmadd_ps(wv[6 + v], C[v], a);
    _mm512_mask_storeu_ps(y + i * ow, low(ow), a);
    for (int v = 0; v < 3; v++) A[v] = C[v];
  }
}

// dx row r (first ? = : +=) the interleave of two phase rows: column 2j from e, 2j + 1 from o.
INLINE512 void store_interleaved(float *d, ptrdiff_t w, __m512 e, __m512 o, int first) {
  const __m512i il = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i ih = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  __m512 lo = _mm512_permutex2var_ps(e, il, o), hi = _mm512_permutex2var_ps(e, ih, o);
  const __mmask16 ml = low(w), mh = low(w - 16);
  if (!first) {
    lo = _mm512_add_ps(_mm512_maskz_loadu_ps(ml, d), lo);
    hi = _mm512_add_ps(_mm512_maskz_loadu_ps(mh, at(d, 16)), hi);
  }
  _mm512_mask_storeu_ps(d, ml, lo);
  if (mh) _mm512_mask_storeu_ps(d + 16, mh, hi);
}

// One plane's backward, row by row, in two sweeps: dW and db terms into acc from the taps of x,
// then dx (unless NULL) from dx's phase rows (as input_terms8: dy row i and i + 1, each also
// shifted by a column). One sweep doing both held 33 vectors live and spilled.
INLINE512 void backward_rows(const float *x, const float *dy, float *dx, int first, ptrdiff_t h, ptrdiff_t w,
                             ptrdiff_t oh, ptrdiff_t ow, const __m512 wv[9], __m512 acc[10]) {
  const __m512 zero = _mm512_setzero_ps();
  const __m512i zi = _mm512_setzero_si512();
  __m512 A[3], B[3], C[3];
  row_taps(x, -1, h, w, A);
  for (ptrdiff_t i = 0; i < oh; i++) {
    row_taps(x, 2 * i, h, w, B);
    row_taps(x, 2 * i + 1, h, w, C);
    const __m512 d = _mm512_maskz_loadu_ps(low(ow), dy + i * ow);
    for (int v = 0; v < 3; v++) acc[v] = _mm512_fmadd_ps(d, A[v], acc[v]);
    for (int v = 0; v < 3; v++) acc[3 + v] = _mm512_fmadd_ps(d, B[v], acc[3 + v]);
    for (int v = 0; v < 3; v++) acc[6 + v] = _mm512_fmadd_ps(d, C[v], acc[6 + v]);
    acc[9] = _mm512_add_ps(acc[9], d);
    for (int v = 0; v < 3; v++) A[v] = C[v];
  }
  if (!dx) return;
  __m512 dn = _mm512_maskz_loadu_ps(low(ow), dy);
  for (ptrdiff_t i = 0; i < oh; i++) {
    const __m512 d = dn;
    dn = i + 1 < oh ? _mm512_maskz_loadu_ps(low(ow), dy + (i + 1) * ow) : zero;
    // Lanes past the row are zero, so a shift by one column brings in zero at j = ow − 1.
    const __m512 d01 = _mm512_castsi512_ps(_mm512_alignr_epi32(zi, _mm512_castps_si512(d), 1));
    const __m512 d10 = dn;
    const __m512 d11 = _mm512_castsi512_ps(_mm512_alignr_epi32(zi, _mm512_castps_si512(dn), 1));
    const __m512 q00 = _mm512_mul_ps(wv[4], d);
    const __m512 q01 = _mm512_fmadd_ps(wv[5], d, _mm512_mul_ps(wv[3], d01));
    const __m512 q10 = _mm512_fmadd_ps(wv[7], d, _mm512_mul_ps(wv[1], d10));
    __m512 q11 = _mm512_mul_ps(wv[0], d11);
    q11 = _mm512_fmadd_ps(wv[2], d10, q11);
    q11 = _mm512_fmadd_ps(wv[6], d01, q11);
    q11 = _mm512_fmadd_ps(wv[8], d, q11);
    store_interleaved(dx + 2 * i * w, w, q00, q01, first);
    if (2 * i + 1 < h) store_interleaved(dx + (2 * i + 1) * w, w, q10, q11, first);
  }
}

// MARK: - Entry points

INLINE512 void load_weights(const float *wt, __m512 wv[9]) {
  for (int t = 0; t < 9; t++) wv[t] = _mm512_set1_ps(wt[t]);
}

// Backward samples outer (runs of consecutive planes), the accumulators loaded and stored at every
// plane, over planes of one kind (a constant, so that each call is its own loop): 0 rows at
// stride 2 on planes up to 32 wide, 1 rows at stride 1 on planes at least 16 wide, 2 8-wide planes
// at stride 1 (not 8×8: that one runs channels outer), 3 the flat stride-1 path (off, mt its tap
// offsets and mask table). accAll [c1 − c0, m, 10, 16] is accumulated into.
INLINE512 void backward_samples_outer(const DWGeometry *g, const float *x, const float *weight, const float *dy,
                                      float *dx, ptrdiff_t c0, ptrdiff_t c1, float *accAll, const ptrdiff_t off[9],
                                      const uint16_t *mt, const int kind) {
  // x, dx [n, c, h, w]; dy [n, c·m, oh, ow]
  const ptrdiff_t m = g->m, cm = g->c * m, n = g->h * g->w, on = g->oh * g->ow;
  for (ptrdiff_t nn = 0; nn < g->n; nn++) {
    for (ptrdiff_t ci = c0; ci < c1; ci++) {
      const float *xplane = x + (nn * g->c + ci) * n;
      float *dxplane = dx ? dx + (nn * g->c + ci) * n : NULL;
      for (ptrdiff_t jm = 0; jm < m; jm++) {
        const ptrdiff_t o = ci * m + jm;
        float *accp = accAll + ((ci - c0) * m + jm) * 160;
        const float *dyplane = dy + (nn * cm + o) * on;
        __m512 acc[10], wv[9];
        for (int t = 0; t < 10; t++) acc[t] = _mm512_loadu_ps(accp + 16 * t);
        load_weights(weight + 9 * o, wv);
        if (kind == 0) {
          backward_rows(xplane, dyplane, dxplane, jm == 0, g->h, g->w, g->oh, g->ow, wv, acc);
        } else if (kind == 1) {
          backward_rows_s1(xplane, dyplane, dxplane, jm == 0, g->h, g->w, wv, acc);
        } else if (kind == 2) {
          __m256 a8[10];
          for (int t = 0; t < 10; t++) a8[t] = _mm512_castps512_ps256(acc[t]);
          backward_w8_rows(xplane, dyplane, dxplane, jm == 0, g->h, weight + 9 * o, a8);
          for (int t = 0; t < 10; t++) acc[t] = _mm512_zextps256_ps512(a8[t]);
        } else {
          backward_s1(xplane, dyplane, dxplane, jm == 0, n, off, wv, acc, mt);
        }
        for (int t = 0; t < 10; t++) _mm512_storeu_ps(accp + 16 * t, acc[t]);
      }
    }
  }
}

// backward_samples_outer for the kind, in a function of its own: its loop keeps the weights,
// taps and accumulators in registers (inside dw_avx512_backward, beside the other paths, the rows
// loops spilled: with data in L2, the stride-2 28×28 backward took 1.25× as long, the stride-1
// one 1.07×).
AVX512 static void backward_samples_outer_kind(const DWGeometry *g, const float *x, const float *weight,
                                               const float *dy, float *dx, ptrdiff_t c0, ptrdiff_t c1, float *accAll,
                                               const ptrdiff_t off[9], const uint16_t *mt, int kind) {
  switch (kind) {
    case 0: backward_samples_outer(g, x, weight, dy, dx, c0, c1, accAll, off, mt, 0); break;
    case 1: backward_samples_outer(g, x, weight, dy, dx, c0, c1, accAll, off, mt, 1); break;
    case 2: backward_samples_outer(g, x, weight, dy, dx, c0, c1, accAll, off, mt, 2); break;
    default: backward_samples_outer(g, x, weight, dy, dx, c0, c1, accAll, off, mt, 3);
  }
}

// Backward channels outer, each output channel's ten accumulators in registers for the whole
// batch, over planes of one kind (a constant, so that each call is its own loop): 0 8×8 and 1
// 16-wide at stride 2, 2 stride-1 rows, 3 rows at stride 2, 4 the flat stride-1 path (off, mt
// its tap offsets and mask table). accAll [c1 − c0, m, 10, 16] is written.
INLINE512 void backward_channels_outer(const DWGeometry *g, const float *x, const float *weight, const float *dy,
                                       float *dx, ptrdiff_t c0, ptrdiff_t c1, float *accAll, const ptrdiff_t off[9],
                                       const uint16_t *mt, const int kind) {
  // x, dx [n, c, h, w]; dy [n, c·m, oh, ow]
  const ptrdiff_t m = g->m, cm = g->c * m, n = g->h * g->w, on = g->oh * g->ow;
  for (ptrdiff_t ci = c0; ci < c1; ci++) {
    for (ptrdiff_t jm = 0; jm < m; jm++) {
      const ptrdiff_t o = ci * m + jm;
      __m512 acc[10], wv[9];
      for (int t = 0; t < 10; t++) acc[t] = _mm512_setzero_ps();
      load_weights(weight + 9 * o, wv);
      for (ptrdiff_t nn = 0; nn < g->n; nn++) {
        const float *xplane = x + (nn * g->c + ci) * n, *dyplane = dy + (nn * cm + o) * on;
        float *dxplane = dx ? dx + (nn * g->c + ci) * n : NULL;
        const int first = jm == 0;
        if (kind == 0)
          backward_8x8(xplane, dyplane, dxplane, first, wv, acc);
        else if (kind == 1)
          backward_w16(xplane, dyplane, dxplane, first, g->h, wv, acc);
        else if (kind == 2)
          backward_rows_s1(xplane, dyplane, dxplane, first, g->h, g->w, wv, acc);
        else if (kind == 3)
          backward_rows(xplane, dyplane, dxplane, first, g->h, g->w, g->oh, g->ow, wv, acc);
        else
          backward_s1(xplane, dyplane, dxplane, first, n, off, wv, acc, mt);
      }
      float *accp = accAll + ((ci - c0) * m + jm) * 160;
      for (int t = 0; t < 10; t++) _mm512_storeu_ps(accp + 16 * t, acc[t]);
    }
  }
}

// MARK: - Stride 1 on planes of 1, 2, 4, 8 or 16 floats, several channels per vector

// Whether a stride-1 plane runs in groups: planes under 8 wide whose size divides 16, without a
// channel multiplier. One vector then holds 16 / (h·w) consecutive planes of a sample (channels
// next to each other in memory), each tap one in-register permute of that vector (the lanes whose
// input lies outside their own plane zeroed), each lane with its own channel's weight: a 2×2
// plane no longer takes a vector of its own at a quarter of the lanes. Every output keeps the
// flat path's order (bias, then the taps in order), and every dW and db lane its sum over the
// samples in order, so the results are the flat path's bits.
static bool grouped_s1(const DWGeometry *g) {
  const ptrdiff_t hw = g->h * g->w;
  return __atomic_load_n(&grouping, __ATOMIC_RELAXED) && g->sh == 1 && g->sw == 1 && g->m == 1 && g->w < 8 &&
         hw <= 16 && 16 % hw == 0;
}

// Per-call tables of a grouped plane [h, w]: for tap t, the lanes whose input lies in their own
// plane (mask[t]) and where each lane's input sits in the vector (index[t]: lane l + (u − 1)·w +
// v − 1; lane l itself where masked off).
typedef struct GroupTaps {
  __mmask16 mask[9];
  __m512i index[9];
} GroupTaps;

INLINE512 void group_taps(const DWGeometry *g, GroupTaps *gt) {
  const ptrdiff_t h = g->h, w = g->w, hw = h * w;
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int t = 0; t < 9; t++) {
    const int du = t / 3 - 1, dv = t % 3 - 1;
    unsigned plane = 0;  // bit f: position f = (i, j) of one plane has tap t's input in the image
    for (ptrdiff_t i = 0; i < h; i++) {
      for (ptrdiff_t j = 0; j < w; j++) {
        plane |= (unsigned)(i + du >= 0 && i + du < h && j + dv >= 0 && j + dv < w) << (i * w + j);
      }
    }
    unsigned mk = 0;
    for (ptrdiff_t l = 0; l < 16; l += hw) mk |= plane << l;
    gt->mask[t] = (__mmask16)mk;
    // lane l reads lane l + du·w + dv where the mask lets it, else itself
    const __m512i shifted = _mm512_add_epi32(lane, _mm512_set1_epi32((int)(du * w + dv)));
    gt->index[t] = _mm512_mask_mov_epi32(lane, (__mmask16)mk, shifted);
  }
}

// Lane l of the result: v[(ch0 + l / hw)·stride + offset] for the group's `channels` channels, 0
// past them: a bias (stride 1) or tap `offset` of the weights [c, 3, 3] (stride 9), per lane.
INLINE512 __m512 spread(const float *v, ptrdiff_t stride, ptrdiff_t offset, ptrdiff_t ch0, ptrdiff_t channels,
                        ptrdiff_t hw) {
  float e[16] = {0};
  for (ptrdiff_t k = 0; k < channels; k++) {
    for (ptrdiff_t r = 0; r < hw; r++) e[k * hw + r] = v[(ch0 + k) * stride + offset];
  }
  return _mm512_loadu_ps(e);
}

// wv[t] = spread of tap t of the group's weights.
INLINE512 void group_weights(const float *weight, ptrdiff_t ch0, ptrdiff_t channels, ptrdiff_t hw, __m512 wv[9]) {
  for (int t = 0; t < 9; t++) wv[t] = spread(weight, 9, t, ch0, channels, hw);
}

// Forward over planes [p0, p1): channel groups outer (weights spread once a group), samples inner.
INLINE512 void forward_grouped(const DWGeometry *g, const float *x, const float *weight, const float *bias, float *y,
                               ptrdiff_t p0, ptrdiff_t p1) {
  const ptrdiff_t c = g->c, hw = g->h * g->w, per = 16 / hw;
  GroupTaps gt;
  group_taps(g, &gt);
  const ptrdiff_t s0 = p0 / c, s1 = (p1 + c - 1) / c;
  // within one sample, only the groups the range touches
  const ptrdiff_t first = s1 - s0 == 1 ? (p0 - s0 * c) / per * per : 0, last = s1 - s0 == 1 ? p1 - s0 * c : c;
  for (ptrdiff_t ch = first; ch < last; ch += per) {
    const ptrdiff_t k = per < c - ch ? per : c - ch;
    __m512 wv[9], b = bias ? spread(bias, 1, 0, ch, k, hw) : _mm512_setzero_ps();
    group_weights(weight, ch, k, hw, wv);
    for (ptrdiff_t sn = s0; sn < s1; sn++) {
      // this group's planes of sample sn that lie in [p0, p1)
      const ptrdiff_t base = sn * c + ch, lo = base > p0 ? base : p0, hi = base + k < p1 ? base + k : p1;
      if (lo >= hi) continue;
      const __mmask16 lanes = (__mmask16)(low((hi - base) * hw) & ~low((lo - base) * hw));
      const __m512 xv = _mm512_maskz_loadu_ps(lanes, x + base * hw);
      __m512 a = b;
      for (int t = 0; t < 9; t++)
        a = _mm512_fmadd_ps(wv[t], _mm512_maskz_permutexvar_ps(gt.mask[t], gt.index[t], xv), a);
      _mm512_mask_storeu_ps(y + base * hw, lanes, a);
    }
  }
}

// Backward over channels [c0, c1): groups outer, the ten accumulators in registers for the whole
// batch; dx (unless NULL) = Σ_t w[t]·dy[f − off[t]] by the mirrored taps; acc [nch, 10, 16] gets
// each channel's lanes (its hw positions, then zeros), as the flat path leaves them.
INLINE512 void backward_grouped(const DWGeometry *g, const float *x, const float *weight, const float *dy, float *dx,
                                ptrdiff_t c0, ptrdiff_t c1, float *accAll) {
  const ptrdiff_t c = g->c, hw = g->h * g->w, per = 16 / hw;
  GroupTaps gt;
  group_taps(g, &gt);
  for (ptrdiff_t ch = c0; ch < c1; ch += per) {
    const ptrdiff_t k = per < c1 - ch ? per : c1 - ch;
    const __mmask16 lanes = low(k * hw);
    __m512 wv[9], acc[10];
    group_weights(weight, ch, k, hw, wv);
    for (int t = 0; t < 10; t++) acc[t] = _mm512_setzero_ps();
    for (ptrdiff_t sn = 0; sn < g->n; sn++) {
      const ptrdiff_t base = (sn * c + ch) * hw;
      const __m512 xv = _mm512_maskz_loadu_ps(lanes, x + base), d = _mm512_maskz_loadu_ps(lanes, dy + base);
      for (int t = 0; t < 9; t++)
        acc[t] = _mm512_fmadd_ps(d, _mm512_maskz_permutexvar_ps(gt.mask[t], gt.index[t], xv), acc[t]);
      acc[9] = _mm512_add_ps(acc[9], d);
      if (!dx) continue;
      __m512 gx = _mm512_setzero_ps();
      for (int t = 0; t < 9; t++)
        gx = _mm512_fmadd_ps(wv[t], _mm512_maskz_permutexvar_ps(gt.mask[8 - t], gt.index[8 - t], d), gx);
      _mm512_mask_storeu_ps(dx + base, lanes, gx);
    }
    for (ptrdiff_t j = 0; j < k; j++) {
      float *accp = accAll + (ch + j - c0) * 160;
      const __mmask16 mine = (__mmask16)(low((j + 1) * hw) & ~low(j * hw));
      for (int t = 0; t < 10; t++) {
        // channel j's lanes moved down to lanes 0..hw−1, zeros above
        const __m512 v = _mm512_maskz_compress_ps(mine, acc[t]);
        _mm512_storeu_ps(accp + 16 * t, v);
      }
    }
  }
}

// The planes [p0, p1) of [n, c·m] in order, as (output plane p, output channel o, input plane
// src), counted up without a division per plane.
#define FOR_PLANES(g, p0, p1, p, o, src)                                                                   \
  for (ptrdiff_t p = (p0), o = (p0) % ((g)->c * (g)->m), jm_ = o % (g)->m,                                 \
                 src = ((p0) / ((g)->c * (g)->m)) * (g)->c + o / (g)->m;                                    \
       p < (p1); p++, o = o + 1 == (g)->c * (g)->m ? 0 : o + 1, src += jm_ + 1 == (g)->m,                   \
                 jm_ = jm_ + 1 == (g)->m ? 0 : jm_ + 1)

AVX512 void dw_avx512_forward(const DWGeometry *g, const float *x, const float *weight, const float *bias, float *y,
                              ptrdiff_t p0, ptrdiff_t p1, float *scratch) {
  // x [n, c, h, w] → y planes [p0, p1) of [n, c·m, oh, ow]; scratch: the mask table (flat stride 1)
  if (grouped_s1(g)) {
    forward_grouped(g, x, weight, bias, y, p0, p1);
    return;
  }
  const ptrdiff_t n = g->h * g->w, on = g->oh * g->ow;
  const int kind = stride2_w16(g) ? 1 : stride2_8x8(g) ? 2 : stride2_rows(g) ? 3 : stride1_w8(g) ? 4
                   : stride1_rows(g) ? 5 : 0;
  uint16_t *mt = (uint16_t *)scratch;
  ptrdiff_t off[9];
  if (kind == 0) {
    masks_s1(mt, g->h, g->w);
    offsets_s1(g->w, off);
  }
  FOR_PLANES(g, p0, p1, p, o, src) {
    __m512 wv[9];
    load_weights(weight + 9 * o, wv);
    const float b = bias ? bias[o] : 0.0f;
    const float *xs = x + src * n;
    float *yp = y + p * on;
    switch (kind) {
      case 1:
        for (ptrdiff_t t = 0; t < g->h / 4; t++) {
          __m512 T[9];
          taps16(xs, t, T);
          __m512 a = _mm512_set1_ps(b);
          for (int k = 0; k < 9; k++) a = _mm512_fmadd_ps(wv[k], T[k], a);
          _mm512_storeu_ps(yp + 16 * t, a);
        }
        break;
      case 2: {
        __m512 T[9];
        taps8(xs, T);
        __m512 a = _mm512_set1_ps(b);
        for (int t = 0; t < 9; t++) a = _mm512_fmadd_ps(wv[t], T[t], a);
        _mm512_storeu_ps(yp, a);
        break;
      }
      case 3:
        forward_rows(xs, g->h, g->w, g->oh, g->ow, wv, b, yp);
        break;
      case 4:
        if (g->h == 8)  // the common 8×8 map, with constant loop bounds (measured 1.15× faster)
          forward_w8_rows(xs, 8, weight + 9 * o, b, yp);
        else
          forward_w8_rows(xs, g->h, weight + 9 * o, b, yp);
        break;
      case 5:
        forward_rows_s1(xs, g->h, g->w, wv, b, yp);
        break;
      default:
        forward_s1(xs, n, off, wv, b, yp, mt);
    }
  }
}

AVX512 void dw_avx512_backward(const DWGeometry *g, const float *x, const float *weight, const float *dy, float *dx,
                               float *dweight, float *dbias, ptrdiff_t c0, ptrdiff_t c1, float *scratch) {
  // x, dx [n, c, h, w]; dy [n, c·m, oh, ow]; channels [c0, c1) of x, with outputs c·m ..< (c+1)·m
  const ptrdiff_t m = g->m, cm = g->c * m, n = g->h * g->w, on = g->oh * g->ow, nch = c1 - c0;
  // Stride 2: 1 (8×8), 2 (16 wide), 3 (a row per vector), or 0 (stride 1).
  const int s2 = stride2_8x8(g) ? 1 : stride2_w16(g) ? 2 : stride2_rows(g) ? 3 : 0;
  // scratch: acc [nch, m, 10, 16] | mask table (stride 1)
  float *accAll = scratch;
  uint16_t *mt = (uint16_t *)(accAll + nch * m * 160);
  ptrdiff_t off[9];
  const int rows1 = stride1_rows(g), w8 = stride1_w8(g);
  if (!s2 && !rows1 && !w8) {
    masks_s1(mt, g->h, g->w);
    offsets_s1(g->w, off);
  }
  // The sums run in the same order (per output channel: samples, then blocks, rows or chunks)
  // whichever loop is outer. Small planes (below) and 16-wide planes at stride 2: channels
  // outer, each output channel's ten accumulators in registers for the whole batch; the others:
  // samples outer, channels inner (runs of consecutive planes, as the AVX2 body), the accumulators
  // loaded and stored at every plane. Each measured the faster (the 28×28 planes 1.4× faster
  // samples outer at stride 2).
  if (grouped_s1(g)) {
    backward_grouped(g, x, weight, dy, dx, c0, c1, accAll);
  } else if (w8 && g->h == 8) {
    // 8×8 at stride 1: channels outer as well, the accumulators in registers (in the release
    // build's -O2, 1.7× faster than samples outer).
    for (ptrdiff_t ci = c0; ci < c1; ci++) {
      for (ptrdiff_t jm = 0; jm < m; jm++) {
        const ptrdiff_t o = ci * m + jm;
        __m256 a8[10];
        for (int t = 0; t < 10; t++) a8[t] = _mm256_setzero_ps();
        for (ptrdiff_t nn = 0; nn < g->n; nn++) {
          const float *xplane = x + (nn * g->c + ci) * n, *dyplane = dy + (nn * cm + o) * on;
          float *dxplane = dx ? dx + (nn * g->c + ci) * n : NULL;
          if (jm == 0)
            backward_w8_rows(xplane, dyplane, dxplane, 1, 8, weight + 9 * o, a8);
          else
            backward_w8_rows(xplane, dyplane, dxplane, 0, 8, weight + 9 * o, a8);
        }
        float *accp = accAll + ((ci - c0) * m + jm) * 160;
        for (int t = 0; t < 10; t++) _mm512_storeu_ps(accp + 16 * t, _mm512_zextps256_ps512(a8[t]));
      }
    }
  } else if ((rows1 && n <= 256) || s2 == 1 || s2 == 2 || ((s2 == 3 || (!s2 && !w8)) && n <= 64)) {
    // Channels outer likewise for stride-1 rows of planes up to 256 floats (16×16: 1.2× faster;
    // 28×28 planes 1.5× slower, strided across the samples of a tensor far larger than L2), 8×8
    // and 16-wide planes at stride 2, and planes of at most 64 floats on the flat stride-1 path
    // (such as 3×3 or 7×5; 4×4 and 2×2 ran here before they ran in groups) or by rows at stride 2
    // (on 64 samples, one thread: 2.1× and 1.1–1.4× faster, one or two vectors a plane having
    // made the accumulators' loads and stores most of the work).
    // (Each kind its own copy of the loop: one loop choosing per plane measured 5–30% slower.)
    switch (s2 == 1 ? 0 : s2 == 2 ? 1 : rows1 ? 2 : s2 == 3 ? 3 : 4) {
      case 0: backward_channels_outer(g, x, weight, dy, dx, c0, c1, accAll, off, mt, 0); break;
      case 1: backward_channels_outer(g, x, weight, dy, dx, c0, c1, accAll, off, mt, 1); break;
      case 2: backward_channels_outer(g, x, weight, dy, dx, c0, c1, accAll, off, mt, 2); break;
      case 3: backward_channels_outer(g, x, weight, dy, dx, c0, c1, accAll, off, mt, 3); break;
      default: backward_channels_outer(g, x, weight, dy, dx, c0, c1, accAll, off, mt, 4);
    }
  } else {
    memset(accAll, 0, (size_t)(nch * m * 160) * 4);
    backward_samples_outer_kind(g, x, weight, dy, dx, c0, c1, accAll, off, mt, s2 == 3 ? 0 : rows1 ? 1 : w8 ? 2 : 3);
  }
  // Each output channel's lanes in order 0..15.
  for (ptrdiff_t ci = c0; ci < c1; ci++) {
    for (ptrdiff_t jm = 0; jm < m; jm++) {
      const ptrdiff_t o = ci * m + jm;
      const float *a = accAll + ((ci - c0) * m + jm) * 160;
      for (int t = 0; t < 10; t++) {
        float s = a[16 * t];
        for (int l = 1; l < 16; l++) s += a[16 * t + l];
        if (t < 9)
          dweight[o * 9 + t] += s;
        else if (dbias)
          dbias[o] += s;
      }
    }
  }
}

#else

// Not x86-64: never chosen (dw_kernels_supports says no); defined so the module links.
void dw_avx512_forward(const DWGeometry *g, const float *x, const float *weight, const float *bias, float *y,
                       ptrdiff_t p0, ptrdiff_t p1, float *scratch) {
  (void)g, (void)x, (void)weight, (void)bias, (void)y, (void)p0, (void)p1, (void)scratch;
  (void)masks_s1;
}
void dw_avx512_backward(const DWGeometry *g, const float *x, const float *weight, const float *dy, float *dx,
                        float *dweight, float *dbias, ptrdiff_t c0, ptrdiff_t c1, float *scratch) {
  (void)g, (void)x, (void)weight, (void)dy, (void)dx, (void)dweight, (void)dbias, (void)c0, (void)c1, (void)scratch;
}

#endif
