// WinogradInternal.h: what the F(2×2, 3×3) and F(4×4, 3×3) kernels share: the attributes that
// build a body twice (baseline and AVX-512, chosen at run time), the filter's kernel read (plain or
// rotated), the zero-padded row copy that the tile transforms read through and the output rows'
// store (bias, fused ReLU), the AVX-512 row kernels' masked row load and lane masks, and the AVX2
// kernels' transposes of 8 tiles' columns. Not part of the module's interface.
#ifndef WINOGRAD_INTERNAL_H
#define WINOGRAD_INTERNAL_H

#include "CWinogradKernels.h"

#include <stdbool.h>

#define INLINE static inline __attribute__((always_inline))
// The tile transforms keep their short row copies as loops (see load_rows).
#define NO_CALLS __attribute__((no_builtin("memset", "memcpy")))

#if defined(__x86_64__)
#include <immintrin.h>
#include <stdint.h>

#define AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma")))
#define AVX2 __attribute__((target("avx2,fma")))
// Whether the CPU runs the AVX-512 copies (AVX-512F and VL).
bool wino_has_avx512(void);
// Whether the CPU runs the AVX2 copies (AVX2 and FMA; F(4×4, 3×3)'s tile transforms) where it has
// no AVX-512.
bool wino_has_avx2(void);

// Columns 16k ..< 16k + 16 of a tile row's input buffer (input_body's buf) for row y of the
// plane p [h, w]: buffer column j is the plane's column j − pw, zero outside the plane (masked
// lanes are neither read nor faulted on, so the address may lie outside the tensor: it is formed
// as an integer).
AVX512 __attribute__((always_inline)) static inline __m512 input_row16(
    const float *p, ptrdiff_t h, ptrdiff_t w, ptrdiff_t y, ptrdiff_t pw, int k) {
  const ptrdiff_t j0 = 16 * (ptrdiff_t)k;
  ptrdiff_t lo = pw - j0, hi = pw + w - j0;  // the lanes inside the plane: [lo, hi)
  lo = lo < 0 ? 0 : lo;
  hi = hi > 16 ? 16 : hi;
  if (y < 0 || y >= h || lo >= hi) return _mm512_setzero_ps();
  const __mmask16 m = (__mmask16)(((1u << hi) - 1u) & ~((1u << lo) - 1u));
  return _mm512_maskz_loadu_ps(m, (const float *)((uintptr_t)(p + y * w) + (uintptr_t)((j0 - pw) * 4)));
}

// The permute index that interleaves two vectors a and b (a's lanes in sources 0–15, b's in
// 16–31): lane 2t ← a[t + 8·half], lane 2t + 1 ← b[t + 8·half].
AVX512 __attribute__((always_inline)) static inline __m512i interleave_index(int half) {
  const __m512i t = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  const __m512i fromB = _mm512_setr_epi32(0, 16, 0, 16, 0, 16, 0, 16, 0, 16, 0, 16, 0, 16, 0, 16);
  return _mm512_add_epi32(_mm512_add_epi32(t, fromB), _mm512_set1_epi32(8 * half));
}

// store_rows on 16 columns: v + bias, then (relu != 0) v if v > 0 or NaN, else +0 (−0 included),
// as a compare (a max would turn NaN into 0), into the lanes of mask.
AVX512 __attribute__((always_inline)) static inline void store_row16(float *dst, __mmask16 mask, __m512 v, __m512 bias,
                                                                     int relu) {
  v = _mm512_add_ps(v, bias);
  if (relu) v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NLE_UQ), v);
  _mm512_mask_storeu_ps(dst, mask, v);
}

// The AVX2 kernels' vectors of 8 consecutive tiles (see Winograd4Kernels.c's AVX2 section).
typedef float v8f __attribute__((vector_size(32)));

// Lane l of q[k]: column k of the four at at[l] (l < 8): 128-bit loads paired (l, l + 4), then a
// 4×4 transpose in each 128-bit half.
AVX2 __attribute__((always_inline)) static inline void quarters8(const float *const at[8], v8f q[4]) {
  const __m256 a0 = _mm256_loadu2_m128(at[4], at[0]), a1 = _mm256_loadu2_m128(at[5], at[1]);
  const __m256 a2 = _mm256_loadu2_m128(at[6], at[2]), a3 = _mm256_loadu2_m128(at[7], at[3]);
  const __m256 t0 = _mm256_unpacklo_ps(a0, a1), t1 = _mm256_unpackhi_ps(a0, a1);
  const __m256 t2 = _mm256_unpacklo_ps(a2, a3), t3 = _mm256_unpackhi_ps(a2, a3);
  q[0] = (v8f)_mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  q[1] = (v8f)_mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  q[2] = (v8f)_mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  q[3] = (v8f)_mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
}

// The inverse: column k of the four at at[l] from lane l of r[k].
AVX2 __attribute__((always_inline)) static inline void unquarters8(const v8f r[4], float *const at[8]) {
  const __m256 t0 = _mm256_unpacklo_ps((__m256)r[0], (__m256)r[1]), t1 = _mm256_unpackhi_ps((__m256)r[0], (__m256)r[1]);
  const __m256 t2 = _mm256_unpacklo_ps((__m256)r[2], (__m256)r[3]), t3 = _mm256_unpackhi_ps((__m256)r[2], (__m256)r[3]);
  _mm256_storeu2_m128(at[4], at[0], _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)));
  _mm256_storeu2_m128(at[5], at[1], _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2)));
  _mm256_storeu2_m128(at[6], at[2], _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)));
  _mm256_storeu2_m128(at[7], at[3], _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2)));
}

// The tile rows of the chunk from tile row r of a block ending at `end`: rc, or fewer at the end.
INLINE ptrdiff_t chunk_length(ptrdiff_t r, ptrdiff_t end, ptrdiff_t rc) { return r + rc <= end ? rc : end - r; }

// Where tile l of a chunk starts in a buffer of tile rows `rowFloats` apart, tiles `tileFloats`
// apart: off[l] for l < rc·tw.
INLINE void tile_offsets(ptrdiff_t tw, ptrdiff_t rc, ptrdiff_t rowFloats, ptrdiff_t tileFloats, ptrdiff_t *off) {
  for (ptrdiff_t k = 0; k < rc; k++)
    for (ptrdiff_t t = 0; t < tw; t++) off[k * tw + t] = k * rowFloats + tileFloats * t;
}

// Tile rows per chunk: for rows under 16 tiles, lcm(tw, 8) tiles (at most 120), a whole number of
// vectors; wider rows one at a time.
INLINE ptrdiff_t chunk_rows(ptrdiff_t tw) {
  if (tw >= 16) return 1;
  ptrdiff_t a = tw, b = 8;
  while (b) {
    const ptrdiff_t t = a % b;
    a = b;
    b = t;
  }
  return 8 / a;
}

// The columns [16k, 16k + 16) of an output row ow wide that lie inside it, as a lane mask.
INLINE __mmask16 row_mask16(ptrdiff_t ow, int k) {
  const ptrdiff_t n = ow - 16 * (ptrdiff_t)k;
  return n <= 0 ? 0 : n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u);
}
#endif

// F(4×4, 3×3) (Winograd4Kernels.c): the entry points of CWinogradKernels.h for m = 4.
void wino4_filter_transform(const float *w, ptrdiff_t k, ptrdiff_t c, int flip, ptrdiff_t o0, ptrdiff_t o1, float *u);
void wino4_filter_gradient(const float *du, ptrdiff_t k, ptrdiff_t c, ptrdiff_t o0, ptrdiff_t o1, float *dw);
void wino4_input_transform(const WinoGeometry *g, const float *x, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t c0,
                           ptrdiff_t c1, float *v);
void wino4_output_transform(const WinoGeometry *g, const float *m, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t k0,
                            ptrdiff_t k1, const float *bias, int relu, float *y);
void wino4_gradient_transform(const WinoGeometry *g, const float *dy, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t k0,
                              ptrdiff_t k1, float *d);

// Kernel (o, i) of the weight w [k, c, 3, 3] into g; with flip != 0, w is read as [c, k, 3, 3] and
// the kernel rotated by 180° (the filter that takes dy to dx).
INLINE void load_filter(const float *w, ptrdiff_t k, ptrdiff_t c, ptrdiff_t o, ptrdiff_t i, int flip, float g[3][3]) {
  const float *src = flip ? w + (i * k + o) * 9 : w + (o * c + i) * 9;
  for (int a = 0; a < 3; a++)
    for (int b = 0; b < 3; b++) g[a][b] = flip ? src[(2 - a) * 3 + (2 - b)] : src[a * 3 + b];
}

// Copies input rows y0 ..< y0 + rowsN of plane p [h, w] into buf [rowsN, bw], column j of buf
// from column j − pw of the plane, zero outside the plane. Plain loops, not memset/memcpy: the
// rows are short (tens of floats) and the calls would cost more than the copies.
INLINE void load_rows(const float *p, ptrdiff_t h, ptrdiff_t w, ptrdiff_t y0, int rowsN, ptrdiff_t pw, ptrdiff_t bw,
                      float *buf) {
  const ptrdiff_t j0 = pw > 0 ? pw : 0, j1 = pw + w < bw ? pw + w : bw;  // columns of buf inside the plane
  for (int a = 0; a < rowsN; a++) {
    float *row = buf + a * bw;
    const ptrdiff_t y = y0 + a;
    if (y < 0 || y >= h || j1 <= j0) {
#pragma clang loop vectorize(enable)
      for (ptrdiff_t j = 0; j < bw; j++) row[j] = 0.0f;
      continue;
    }
    const float *src = p + y * w;  // row y; buf column j is its column j − pw (j0 ≤ j < j1)
    for (ptrdiff_t j = 0; j < j0; j++) row[j] = 0.0f;
#pragma clang loop vectorize(enable)
    for (ptrdiff_t j = j0; j < j1; j++) row[j] = src[j - pw];
    for (ptrdiff_t j = j1; j < bw; j++) row[j] = 0.0f;
  }
}

// Writes the output rows of one tile row: rows a ..< rowsN of buf [rowsN, bw] go to rows y0 + a of
// plane [oh, ow] (those inside it), each element + bias, then max(·, 0) when relu != 0 (NaN stays
// NaN, as ReLU's max(v, 0) keeps it).
INLINE void store_rows(const float *buf, ptrdiff_t bw, int rowsN, float *plane, ptrdiff_t oh, ptrdiff_t ow,
                       ptrdiff_t y0, float bias, int relu) {
  for (int a = 0; a < rowsN; a++) {
    const ptrdiff_t yy = y0 + a;
    if (yy >= oh) break;
    float *dst = plane + yy * ow;
    const float *src = buf + a * bw;
    if (relu) {
      for (ptrdiff_t j = 0; j < ow; j++) {
        const float v = src[j] + bias;
        dst[j] = v != v ? v : (v > 0 ? v : 0.0f);
      }
    } else {
      for (ptrdiff_t j = 0; j < ow; j++) dst[j] = src[j] + bias;
    }
  }
}

#endif
