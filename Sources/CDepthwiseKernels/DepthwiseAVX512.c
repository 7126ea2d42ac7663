// DepthwiseAVX512.c: the AVX-512 variant of the 3×3, stride 1, padding 1 depthwise kernels (the
// stride-1 shapes of ShuffleNetV2 and TFNet), chosen at run time when the CPU has AVX-512F. Every
// plane is one flat run of 16-float chunks, so that a chunk may span several short rows (an 8×8
// map fills 4 whole vectors) and no padded copy is made: tap (u, v) of output f = (i, j) is one
// masked load of x[f + (u−1)·w + v − 1], its mask (from a per-call table) zeroing the lanes whose
// input lies outside the image (masked-off lanes never fault). dx is the same convolution of dy
// with the mirrored taps. The backward pass is one sweep per plane: every chunk of dy feeds both
// dW (against shifted x) and dx (shifted dy). dW and db sum per lane (output position mod 16) over
// samples and chunks, then over the lanes in order 0..15, so the bits do not depend on how the
// channels are split between threads.
// (Stride 2 through the four phase planes of x, each tap a flat shifted load again, measured
// slower than the AVX2 kernels on 8×8 to 28×28 maps: the split and the merge cost more than they
// save; stride 2 runs the AVX2 kernels.)
//
// Shapes: x, dx, y, dy [n, c·(1 or m), h, w]; weight [c·m, 3, 3]; bias [c·m].
#include "DepthwiseInternal.h"

#include <stdint.h>
#include <string.h>

bool dw_avx512_handles(const DWGeometry *g) {
  return g->kh == 3 && g->kw == 3 && g->ph == 1 && g->pw == 1 && g->sh == 1 && g->sw == 1;
}

// Chunks of 16 in n floats.
static ptrdiff_t chunks16(ptrdiff_t n) { return (n + 15) / 16; }

// Floats that hold the mask table (uint16 each), rounded up to whole 16-float lines.
static ptrdiff_t mask_floats(const DWGeometry *g) {
  const ptrdiff_t n = chunks16(g->oh * g->ow) * 9;
  return ((n + 1) / 2 + 15) & ~(ptrdiff_t)15;
}

ptrdiff_t dw_avx512_forward_scratch(const DWGeometry *g) {
  if (!dw_avx512_handles(g)) return 0;
  return mask_floats(g);
}

ptrdiff_t dw_avx512_backward_scratch(const DWGeometry *g, ptrdiff_t channels) {
  if (!dw_avx512_handles(g)) return 0;
  return mask_floats(g) + channels * g->m * 160;
}

// The mask table of a stride-1 plane [h, w]: entry 9k + 3u + v has bit l set when output
// f = 16k + l lies in the plane and its tap (u, v) input (i + u − 1, j + v − 1) in the image.
static void masks_s1(uint16_t *mt, ptrdiff_t h, ptrdiff_t w) {
  const ptrdiff_t n = h * w, nc = chunks16(n);
  for (ptrdiff_t k = 0; k < nc; k++) {
    uint16_t m[9] = {0};
    for (ptrdiff_t l = 0; l < 16; l++) {
      const ptrdiff_t f = 16 * k + l;
      if (f >= n) break;
      const ptrdiff_t i = f / w, j = f % w;
      for (int t = 0; t < 9; t++) {
        const ptrdiff_t r = i + t / 3 - 1, q = j + t % 3 - 1;
        if (r >= 0 && r < h && q >= 0 && q < w) m[t] |= (uint16_t)(1u << l);
      }
    }
    memcpy(mt + 9 * k, m, sizeof m);
  }
}

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,avx2,fma")))
#define INLINE512 static inline __attribute__((always_inline, target("avx512f,avx2,fma")))

// p + i as an address, computed without pointer arithmetic: a masked load may start before the
// tensor (its lanes there are masked off and never read).
INLINE512 const float *at(const float *p, ptrdiff_t i) { return (const float *)((uintptr_t)p + (uintptr_t)(i * 4)); }

// MARK: - Stride 1

// Tap t = 3u + v's offset in a flat [h, w] plane: (u − 1)·w + v − 1.
INLINE512 void offsets_s1(ptrdiff_t w, ptrdiff_t off[9]) {
  for (int t = 0; t < 9; t++) off[t] = (t / 3 - 1) * w + t % 3 - 1;
}

// y [h, w] = b + Σ_t w[t]·x shifted by tap t, bias first, then the taps in order.
INLINE512 void forward_s1(const float *x, ptrdiff_t n, const ptrdiff_t off[9], const __m512 wv[9], float b, float *y,
                          const uint16_t *mt) {
  const ptrdiff_t nc = chunks16(n);
  for (ptrdiff_t k = 0; k < nc; k++) {
    const uint16_t *m = mt + 9 * k;
    const float *xk = x + 16 * k;
    __m512 a = _mm512_set1_ps(b);
    for (int t = 0; t < 9; t++) a = _mm512_fmadd_ps(wv[t], _mm512_maskz_loadu_ps(m[t], at(xk, off[t])), a);
    _mm512_mask_storeu_ps(y + 16 * k, m[4], a);
  }
}

// One plane's backward at stride 1 in one sweep: acc[t] (lane l) += Σ dy[f]·x[f + off[t]] over the
// plane's outputs f ≡ l (mod 16), acc[9] += dy; dx (unless NULL) = (first ? 0 : dx) +
// Σ_t w[t]·dy[f − off[t]] (tap t's mirror mask).
INLINE512 void backward_s1(const float *x, const float *dy, float *dx, int first, ptrdiff_t n, const ptrdiff_t off[9],
                           const __m512 wv[9], __m512 acc[10], const uint16_t *mt) {
  const ptrdiff_t nc = chunks16(n);
  for (ptrdiff_t k = 0; k < nc; k++) {
    const uint16_t *m = mt + 9 * k;
    const float *xk = x + 16 * k, *dk = dy + 16 * k;
    const __m512 d = _mm512_maskz_loadu_ps(m[4], dk);
    for (int t = 0; t < 9; t++) acc[t] = _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(m[t], at(xk, off[t])), acc[t]);
    acc[9] = _mm512_add_ps(acc[9], d);
    if (dx) {
      float *xo = dx + 16 * k;
      __m512 g = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m[4], xo);
      for (int t = 0; t < 9; t++) g = _mm512_fmadd_ps(wv[t], _mm512_maskz_loadu_ps(m[8 - t], at(dk, -off[t])), g);
      _mm512_mask_storeu_ps(xo, m[4], g);
    }
  }
}

// MARK: - Entry points

INLINE512 void load_weights(const float *wt, __m512 wv[9]) {
  for (int t = 0; t < 9; t++) wv[t] = _mm512_set1_ps(wt[t]);
}

AVX512 void dw_avx512_forward(const DWGeometry *g, const float *x, const float *weight, const float *bias, float *y,
                              ptrdiff_t p0, ptrdiff_t p1, float *scratch) {
  // x [n, c, h, w] → y planes [p0, p1) of [n, c·m, h, w]; scratch: the mask table
  const ptrdiff_t cm = g->c * g->m, n = g->h * g->w;
  uint16_t *mt = (uint16_t *)scratch;
  ptrdiff_t off[9];
  masks_s1(mt, g->h, g->w);
  offsets_s1(g->w, off);
  for (ptrdiff_t p = p0; p < p1; p++) {
    const ptrdiff_t o = p % cm, src = (p / cm) * g->c + o / g->m;
    __m512 wv[9];
    load_weights(weight + 9 * o, wv);
    forward_s1(x + src * n, n, off, wv, bias ? bias[o] : 0.0f, y + p * n, mt);
  }
}

AVX512 void dw_avx512_backward(const DWGeometry *g, const float *x, const float *weight, const float *dy, float *dx,
                               float *dweight, float *dbias, ptrdiff_t c0, ptrdiff_t c1, float *scratch) {
  // x, dx [n, c, h, w]; dy [n, c·m, h, w]; channels [c0, c1) of x, with outputs c·m ..< (c+1)·m
  const ptrdiff_t m = g->m, cm = g->c * m, n = g->h * g->w, nch = c1 - c0;
  // scratch: acc [nch, m, 10, 16] | mask table
  float *accAll = scratch;
  uint16_t *mt = (uint16_t *)(accAll + nch * m * 160);
  ptrdiff_t off[9];
  masks_s1(mt, g->h, g->w);
  offsets_s1(g->w, off);
  memset(accAll, 0, (size_t)(nch * m * 160) * 4);
  // Samples outer, channels inner (as the AVX2 body: runs of consecutive planes).
  for (ptrdiff_t nn = 0; nn < g->n; nn++) {
    for (ptrdiff_t ci = c0; ci < c1; ci++) {
      const float *xplane = x + (nn * g->c + ci) * n;
      float *dxplane = dx ? dx + (nn * g->c + ci) * n : NULL;
      for (ptrdiff_t jm = 0; jm < m; jm++) {
        const ptrdiff_t o = ci * m + jm;
        float *accp = accAll + ((ci - c0) * m + jm) * 160;
        __m512 acc[10], wv[9];
        for (int t = 0; t < 10; t++) acc[t] = _mm512_loadu_ps(accp + 16 * t);
        load_weights(weight + 9 * o, wv);
        backward_s1(xplane, dy + (nn * cm + o) * n, dxplane, jm == 0, n, off, wv, acc, mt);
        for (int t = 0; t < 10; t++) _mm512_storeu_ps(accp + 16 * t, acc[t]);
      }
    }
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
