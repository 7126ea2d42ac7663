// Im2ColKernels: the loops of CLoweringKernels.h.
//
// Shapes: x and dx [n, c, h, w]; col [c·kh·3, col_stride], sample s in columns s·oh·ow ..< (s+1)·oh·ow.
#include "CLoweringKernels.h"

#include <string.h>

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>

#define LOWER512 static inline __attribute__((always_inline, target("avx512f")))

// The lanes [0, k) of a 16-lane mask (k clamped to 0...16).
LOWER512 __mmask16 lanes(ptrdiff_t k) {
  return k <= 0 ? 0 : k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << k) - 1);
}

// Columns start … start + 15 of a row w wide, 0 outside [0, w) (masked-off lanes are not read).
// A start before the row (the padding of its first vector) loads from the row itself and moves
// its columns up by −start lanes, so no pointer before the row is formed.
LOWER512 __m512 load_columns(const float *row, ptrdiff_t start, ptrdiff_t w) {
  if (start >= 0) return _mm512_maskz_loadu_ps(lanes(w - start), row + start);
  if (start <= -16) return _mm512_setzero_ps();
  const __m512 v = _mm512_maskz_loadu_ps(lanes(w), row);  // columns 0 … 15
  const __m512i up = _mm512_sub_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                      _mm512_set1_epi32((int)-start));
  return _mm512_maskz_permutexvar_ps((__mmask16)~lanes(-start), up, v);  // lane l: column l + start
}

__attribute__((target("avx512f"))) static void im2col_w3s2_512(
    const float *x, ptrdiff_t n, ptrdiff_t c, ptrdiff_t h, ptrdiff_t w, ptrdiff_t kh, ptrdiff_t sh, ptrdiff_t ph,
    ptrdiff_t pw, ptrdiff_t oh, ptrdiff_t ow, float *col, ptrdiff_t col_stride, ptrdiff_t u0, ptrdiff_t u1) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  // Lanes 0–14 of the third tap: elements 2, 4, …, 30 (lane 15, element 32, comes from a third load).
  const __m512i third = _mm512_setr_epi32(2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 0);
  const ptrdiff_t p = oh * ow;
  for (ptrdiff_t u = u0; u < u1; u++) {
    const ptrdiff_t ch = u / kh, ki = u % kh;
    for (ptrdiff_t s = 0; s < n; s++) {
      const float *plane = x + (s * c + ch) * h * w;
      float *a = col + 3 * u * col_stride + s * p, *b = a + col_stride, *e = b + col_stride;
      for (ptrdiff_t i = 0; i < oh; i++) {
        const ptrdiff_t r = i * sh - ph + ki, o = i * ow;
        if (r < 0 || r >= h) {
          memset(a + o, 0, (size_t)ow * sizeof(float));
          memset(b + o, 0, (size_t)ow * sizeof(float));
          memset(e + o, 0, (size_t)ow * sizeof(float));
          continue;
        }
        const float *row = plane + r * w;
        for (ptrdiff_t j0 = 0; j0 < ow; j0 += 16) {
          // Lane l is output column j0 + l; its taps are the row's columns start + 2l + 0, 1, 2.
          const ptrdiff_t start = 2 * j0 - pw;
          const __m512 lo = load_columns(row, start, w), hi = load_columns(row, start + 16, w);
          const __m512 last = load_columns(row, start + 32, w);
          const __m512 t0 = _mm512_permutex2var_ps(lo, even, hi), t1 = _mm512_permutex2var_ps(lo, odd, hi);
          __m512 t2 = _mm512_permutex2var_ps(lo, third, hi);
          t2 = _mm512_mask_broadcastss_ps(t2, (__mmask16)0x8000, _mm512_castps512_ps128(last));
          const __mmask16 m = lanes(ow - j0);
          _mm512_mask_storeu_ps(a + o + j0, m, t0);
          _mm512_mask_storeu_ps(b + o + j0, m, t1);
          _mm512_mask_storeu_ps(e + o + j0, m, t2);
        }
      }
    }
  }
}

// col2im of 3-wide kernels at stride 2, output-stationary along each input row: for kernel row
// ki and output row i, input row r = i·sh − ph + ki takes, at column w (q = w + pw), the term of
// tap kj from output column (q − kj) / 2 where q − kj is even and that column exists. Kernel rows
// in order, taps in order (0 and 2 on even q, 1 on odd), each added by a masked add only where
// it exists: every element's sum has the terms, order and bits of the gather-table loop. A plane
// is walked in strips of 16 columns, so each tap's load offset, masks and permutation are worked
// out once per strip and serve every row of it.
__attribute__((target("avx512f"))) static void col2im_w3s2_512(
    const float *col, ptrdiff_t col_stride, ptrdiff_t n, ptrdiff_t c, ptrdiff_t h, ptrdiff_t w, ptrdiff_t kh,
    ptrdiff_t sh, ptrdiff_t ph, ptrdiff_t pw, ptrdiff_t oh, ptrdiff_t ow, float *dx, bool accumulate, ptrdiff_t c0,
    ptrdiff_t c1) {
  // Lane l of a tap whose first lane has parity par reads element (par + l) / 2 of its load.
  const __m512i half0 = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  const __m512i half1 = _mm512_setr_epi32(0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8);
  const ptrdiff_t p = oh * ow, plane = h * w;
  for (ptrdiff_t ch = c0; ch < c1; ch++) {
    for (ptrdiff_t s = 0; s < n; s++) {
      float *dxc = dx + (s * c + ch) * plane;
      if (!accumulate) memset(dxc, 0, (size_t)plane * sizeof(float));
      for (ptrdiff_t w0 = 0; w0 < w; w0 += 16) {
        const __mmask16 in_row = lanes(w - w0);
        // Tap kj, lane l: d = w0 + pw − kj + l; the term exists where d is even and
        // 0 ≤ d ≤ 2·ow − 2, and comes from output column d / 2 = base + (par + l) / 2. The load
        // starts at column start = base clamped to [0, ow] (base ≥ −1, so no pointer leaves the
        // row's part of col) and the permutation shifts by base − start; lanes whose column is
        // outside [0, ow) are not in `exists`, so what they pick does not matter.
        ptrdiff_t start[3];
        __mmask16 exists[3], loaded[3];
        __m512i index[3];
        for (int kj = 0; kj < 3; kj++) {
          const ptrdiff_t d0 = w0 + pw - kj;
          const ptrdiff_t base = d0 >= 0 ? d0 / 2 : -((1 - d0) / 2);  // floor(d0 / 2)
          const ptrdiff_t par = d0 - 2 * base;
          start[kj] = base < 0 ? 0 : base > ow ? ow : base;
          exists[kj] = (__mmask16)((par ? 0xAAAA : 0x5555) & lanes(2 * ow - 1 - d0) & ~lanes(-d0) & in_row);
          loaded[kj] = lanes(ow - start[kj]);
          index[kj] = _mm512_add_epi32(par ? half1 : half0, _mm512_set1_epi32((int)(base - start[kj])));
        }
        for (ptrdiff_t ki = 0; ki < kh; ki++) {
          const float *a = col + 3 * (ch * kh + ki) * col_stride + s * p;
          const float *b = a + col_stride, *e = b + col_stride;
          for (ptrdiff_t i = 0; i < oh; i++) {
            const ptrdiff_t r = i * sh - ph + ki;
            if (r < 0 || r >= h) continue;
            float *row = dxc + r * w + w0;
            const ptrdiff_t o = i * ow;
            __m512 v = _mm512_maskz_loadu_ps(in_row, row);
            v = _mm512_mask_add_ps(v, exists[0], v,
                                   _mm512_permutexvar_ps(index[0], _mm512_maskz_loadu_ps(loaded[0], a + o + start[0])));
            v = _mm512_mask_add_ps(v, exists[1], v,
                                   _mm512_permutexvar_ps(index[1], _mm512_maskz_loadu_ps(loaded[1], b + o + start[1])));
            v = _mm512_mask_add_ps(v, exists[2], v,
                                   _mm512_permutexvar_ps(index[2], _mm512_maskz_loadu_ps(loaded[2], e + o + start[2])));
            _mm512_mask_storeu_ps(row, in_row, v);
          }
        }
      }
    }
  }
}

bool acon_im2col_w3s2_available(void) { return __builtin_cpu_supports("avx512f"); }

void acon_col2im_w3s2(
    const float *col, ptrdiff_t col_stride, ptrdiff_t n, ptrdiff_t c, ptrdiff_t h, ptrdiff_t w, ptrdiff_t kh,
    ptrdiff_t sh, ptrdiff_t ph, ptrdiff_t pw, ptrdiff_t oh, ptrdiff_t ow, float *dx, bool accumulate, ptrdiff_t c0,
    ptrdiff_t c1) {
  if (__builtin_cpu_supports("avx512f")) col2im_w3s2_512(col, col_stride, n, c, h, w, kh, sh, ph, pw, oh, ow, dx, accumulate, c0, c1);
}

void acon_im2col_w3s2(
    const float *x, ptrdiff_t n, ptrdiff_t c, ptrdiff_t h, ptrdiff_t w, ptrdiff_t kh, ptrdiff_t sh, ptrdiff_t ph,
    ptrdiff_t pw, ptrdiff_t oh, ptrdiff_t ow, float *col, ptrdiff_t col_stride, ptrdiff_t u0, ptrdiff_t u1) {
  if (__builtin_cpu_supports("avx512f")) im2col_w3s2_512(x, n, c, h, w, kh, sh, ph, pw, oh, ow, col, col_stride, u0, u1);
}
#else
bool acon_im2col_w3s2_available(void) { return false; }

void acon_col2im_w3s2(
    const float *col, ptrdiff_t col_stride, ptrdiff_t n, ptrdiff_t c, ptrdiff_t h, ptrdiff_t w, ptrdiff_t kh,
    ptrdiff_t sh, ptrdiff_t ph, ptrdiff_t pw, ptrdiff_t oh, ptrdiff_t ow, float *dx, bool accumulate, ptrdiff_t c0,
    ptrdiff_t c1) {
  (void)col, (void)col_stride, (void)n, (void)c, (void)h, (void)w, (void)kh, (void)sh, (void)ph, (void)pw;
  (void)oh, (void)ow, (void)dx, (void)accumulate, (void)c0, (void)c1;
}

void acon_im2col_w3s2(
    const float *x, ptrdiff_t n, ptrdiff_t c, ptrdiff_t h, ptrdiff_t w, ptrdiff_t kh, ptrdiff_t sh, ptrdiff_t ph,
    ptrdiff_t pw, ptrdiff_t oh, ptrdiff_t ow, float *col, ptrdiff_t col_stride, ptrdiff_t u0, ptrdiff_t u1) {
  (void)x, (void)n, (void)c, (void)h, (void)w, (void)kh, (void)sh, (void)ph, (void)pw, (void)oh, (void)ow;
  (void)col, (void)col_stride, (void)u0, (void)u1;
}
#endif
