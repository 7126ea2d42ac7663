// DepthwiseKernels.c: direct depthwise convolution, forward and backward, over zero-padded
// copies of one plane at a time (in L1/L2), so the inner loops have no bounds checks and
// vectorise over output columns. 3×3 at stride 1 and 2 get loops with the taps unrolled; any
// other kernel, stride or padding runs the general loops. Each body is compiled twice: for
// AVX2+FMA (chosen at run time when the CPU has it) and for baseline x86-64; both meet the same
// tests, their last bits differ (FMA contraction). Within one variant the bits do not depend on
// how planes or channels are split between threads.
//
// Shapes: x [n, c, h, w], weight [c·m, kh, kw], bias [c·m], y and dy [n, c·m, oh, ow]; padded
// input plane [PH, PW] = [h + 2·ph, w + 2·pw] with the image at (ph, pw).
#include "CDepthwiseKernels.h"

#include <stdlib.h>
#include <string.h>

#define RESTRICT __restrict
#define INLINE static inline __attribute__((always_inline))
#if defined(__x86_64__)
#define AVX2 __attribute__((target("avx2,fma")))
#define HAVE_VARIANTS 1
#else
#define AVX2
#define HAVE_VARIANTS 0
#endif

// MARK: - Forward

// One output plane from a padded input plane xp [.., xs] (row stride xs).
INLINE void forward_plane(const float *RESTRICT xp, ptrdiff_t xs, const float *RESTRICT wt, float b,
                          float *RESTRICT y, ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t sh,
                          ptrdiff_t sw) {
  if (kh == 3 && kw == 3) {
    const float w0 = wt[0], w1 = wt[1], w2 = wt[2], w3 = wt[3], w4 = wt[4], w5 = wt[5], w6 = wt[6], w7 = wt[7],
                w8 = wt[8];
    for (ptrdiff_t i = 0; i < oh; i++) {
      const float *r0 = xp + i * sh * xs, *r1 = r0 + xs, *r2 = r1 + xs;
      float *yr = y + i * ow;
      for (ptrdiff_t j = 0; j < ow; j++) {
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

// Copies image plane src [h, w] into the padded buffer dst [PH, PW] at (ph, pw); the border is
// left as it is (zeroed once per call).
INLINE void pad_copy(float *RESTRICT dst, const float *RESTRICT src, const DWGeometry *g) {
  const ptrdiff_t pw_ = g->w + 2 * g->pw;
  for (ptrdiff_t r = 0; r < g->h; r++) memcpy(dst + (r + g->ph) * pw_ + g->pw, src + r * g->w, (size_t)g->w * 4);
}

INLINE void forward_body(const DWGeometry *g, const float *x, const float *weight, const float *bias, float *y,
                         ptrdiff_t p0, ptrdiff_t p1, float *scratch) {
  // x [n, c, h, w] → y planes [p0, p1) of [n, c·m, oh, ow]
  const ptrdiff_t cm = g->c * g->m, hw = g->h * g->w, ohw = g->oh * g->ow, kk = g->kh * g->kw;
  const ptrdiff_t PW = g->w + 2 * g->pw, PH = g->h + 2 * g->ph;
  const int padded = g->ph > 0 || g->pw > 0;
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
INLINE void weight_terms(const float *RESTRICT xp, ptrdiff_t xs, const float *RESTRICT dy, float *RESTRICT acc,
                         ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t sh, ptrdiff_t sw) {
  const ptrdiff_t kk = kh * kw;
  if (kh == 3 && kw == 3) {
    float *RESTRICT a0 = acc, *RESTRICT a1 = a0 + ow, *RESTRICT a2 = a1 + ow, *RESTRICT a3 = a2 + ow,
                    *RESTRICT a4 = a3 + ow, *RESTRICT a5 = a4 + ow, *RESTRICT a6 = a5 + ow, *RESTRICT a7 = a6 + ow,
                    *RESTRICT a8 = a7 + ow, *RESTRICT ab = a8 + ow;
    for (ptrdiff_t i = 0; i < oh; i++) {
      const float *r0 = xp + i * sh * xs, *r1 = r0 + xs, *r2 = r1 + xs;
      const float *d = dy + i * ow;
      for (ptrdiff_t j = 0; j < ow; j++) {
        const ptrdiff_t q = j * sw;
        const float dj = d[j];
        a0[j] += dj * r0[q];
        a1[j] += dj * r0[q + 1];
        a2[j] += dj * r0[q + 2];
        a3[j] += dj * r1[q];
        a4[j] += dj * r1[q + 1];
        a5[j] += dj * r1[q + 2];
        a6[j] += dj * r2[q];
        a7[j] += dj * r2[q + 1];
        a8[j] += dj * r2[q + 2];
        ab[j] += dj;
      }
    }
    return;
  }
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

// Stride 1: dx[r][q] (+)= Σ_{u,v} w[u][v]·dyp[r + ph + kh − 1 − u][q + pw + kw − 1 − v] over a
// dy plane padded by kh − 1 rows and kw − 1 columns on each side (row stride ds). `first`
// overwrites dx, else adds.
INLINE void input_terms_gather(const float *RESTRICT dyp, ptrdiff_t ds, const float *RESTRICT wt,
                               float *RESTRICT dx, ptrdiff_t h, ptrdiff_t w, ptrdiff_t ph, ptrdiff_t pw,
                               ptrdiff_t kh, ptrdiff_t kw, int first) {
  if (kh == 3 && kw == 3) {
    const float w0 = wt[0], w1 = wt[1], w2 = wt[2], w3 = wt[3], w4 = wt[4], w5 = wt[5], w6 = wt[6], w7 = wt[7],
                w8 = wt[8];
    for (ptrdiff_t r = 0; r < h; r++) {
      // Row u of the kernel reads padded dy row r + ph + 2 − u; column q + pw + 2 − v.
      const float *d0 = dyp + (r + ph + 2) * ds + pw + 2, *d1 = d0 - ds, *d2 = d1 - ds;
      float *xr = dx + r * w;
      for (ptrdiff_t q = 0; q < w; q++) {
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

INLINE void weight_terms_dispatch(const float *xp, ptrdiff_t xs, const float *dy, float *acc, const DWGeometry *g) {
  if (g->kh == 3 && g->kw == 3 && g->sh == 1 && g->sw == 1)
    weight_terms(xp, xs, dy, acc, g->oh, g->ow, 3, 3, 1, 1);
  else if (g->kh == 3 && g->kw == 3 && g->sh == 2 && g->sw == 2)
    weight_terms(xp, xs, dy, acc, g->oh, g->ow, 3, 3, 2, 2);
  else
    weight_terms(xp, xs, dy, acc, g->oh, g->ow, g->kh, g->kw, g->sh, g->sw);
}

INLINE void backward_body(const DWGeometry *g, const float *x, const float *weight, const float *dy, float *dx,
                          float *dweight, float *dbias, ptrdiff_t c0, ptrdiff_t c1, float *scratch) {
  // x, dx [n, c, h, w]; dy [n, c·m, oh, ow]; channels [c0, c1) of x, with outputs c·m ..< (c+1)·m
  const ptrdiff_t m = g->m, cm = g->c * m, hw = g->h * g->w, ohw = g->oh * g->ow, ow = g->ow;
  const ptrdiff_t kk = g->kh * g->kw, PW = g->w + 2 * g->pw, PH = g->h + 2 * g->ph;
  const int padded = g->ph > 0 || g->pw > 0, gather = g->sh == 1 && g->sw == 1;
  const ptrdiff_t DW = ow + 2 * (g->kw - 1), DH = g->oh + 2 * (g->kh - 1);
  // scratch: xp [PH, PW] | acc [m, kk + 1, ow] | gather ? dyp [DH, DW] : dxp [PH, PW]
  float *xpad = scratch, *acc = xpad + PH * PW, *buf = acc + m * (kk + 1) * ow;
  if (padded) memset(xpad, 0, (size_t)(PH * PW) * 4);
  if (dx && gather) memset(buf, 0, (size_t)(DH * DW) * 4);
  for (ptrdiff_t ci = c0; ci < c1; ci++) {
    memset(acc, 0, (size_t)(m * (kk + 1) * ow) * 4);
    for (ptrdiff_t nn = 0; nn < g->n; nn++) {
      const float *xplane = x + (nn * g->c + ci) * hw, *xp = xplane;
      ptrdiff_t xs = g->w;
      if (padded) {
        pad_copy(xpad, xplane, g);
        xp = xpad;
        xs = PW;
      }
      float *dxplane = dx ? dx + (nn * g->c + ci) * hw : NULL;
      if (dx && !gather) memset(buf, 0, (size_t)(PH * PW) * 4);
      for (ptrdiff_t jm = 0; jm < m; jm++) {
        const ptrdiff_t o = ci * m + jm;
        const float *dyplane = dy + (nn * cm + o) * ohw, *wt = weight + o * kk;
        weight_terms_dispatch(xp, xs, dyplane, acc + jm * (kk + 1) * ow, g);
        if (!dx) continue;
        if (gather) {
          for (ptrdiff_t i = 0; i < g->oh; i++)
            memcpy(buf + (i + g->kh - 1) * DW + g->kw - 1, dyplane + i * ow, (size_t)ow * 4);
          if (g->kh == 3 && g->kw == 3)
            input_terms_gather(buf, DW, wt, dxplane, g->h, g->w, g->ph, g->pw, 3, 3, jm == 0);
          else
            input_terms_gather(buf, DW, wt, dxplane, g->h, g->w, g->ph, g->pw, g->kh, g->kw, jm == 0);
        } else {
          input_terms_scatter(buf, PW, wt, dyplane, g->oh, ow, g->kh, g->kw, g->sh, g->sw);
        }
      }
      if (dx && !gather)
        for (ptrdiff_t r = 0; r < g->h; r++)
          memcpy(dxplane + r * g->w, buf + (r + g->ph) * PW + g->pw, (size_t)g->w * 4);
    }
    // Reduce each accumulator row over the output columns, in order.
    for (ptrdiff_t jm = 0; jm < m; jm++) {
      const ptrdiff_t o = ci * m + jm;
      const float *a = acc + jm * (kk + 1) * ow;
      for (ptrdiff_t t = 0; t <= kk; t++) {
        float s = 0;
        for (ptrdiff_t j = 0; j < ow; j++) s += a[t * ow + j];
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
  forward_body(g, x, weight, bias, y, p0, p1, scratch);
}
static void forward_portable(const DWGeometry *g, const float *x, const float *weight, const float *bias, float *y,
                             ptrdiff_t p0, ptrdiff_t p1, float *scratch) {
  forward_body(g, x, weight, bias, y, p0, p1, scratch);
}
AVX2 static void backward_avx2(const DWGeometry *g, const float *x, const float *weight, const float *dy, float *dx,
                               float *dweight, float *dbias, ptrdiff_t c0, ptrdiff_t c1, float *scratch) {
  backward_body(g, x, weight, dy, dx, dweight, dbias, c0, c1, scratch);
}
static void backward_portable(const DWGeometry *g, const float *x, const float *weight, const float *dy, float *dx,
                              float *dweight, float *dbias, ptrdiff_t c0, ptrdiff_t c1, float *scratch) {
  backward_body(g, x, weight, dy, dx, dweight, dbias, c0, c1, scratch);
}

bool dw_kernels_use_avx2(void) {
#if HAVE_VARIANTS
  static int state = -1;  // benign race: every thread computes the same value
  if (state < 0) {
    const char *e = getenv("DW_KERNELS");
    const int forced_portable = e && strcmp(e, "portable") == 0;
    __builtin_cpu_init();
    state = !forced_portable && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }
  return state == 1;
#else
  return false;
#endif
}

ptrdiff_t dw_forward_scratch(const DWGeometry *g) { return (g->h + 2 * g->ph) * (g->w + 2 * g->pw); }

ptrdiff_t dw_backward_scratch(const DWGeometry *g) {
  const ptrdiff_t planePad = (g->h + 2 * g->ph) * (g->w + 2 * g->pw);
  const ptrdiff_t dyPad = (g->oh + 2 * (g->kh - 1)) * (g->ow + 2 * (g->kw - 1));
  const ptrdiff_t buf = (g->sh == 1 && g->sw == 1) ? dyPad : planePad;
  return planePad + g->m * (g->kh * g->kw + 1) * g->ow + buf;
}

void dw_forward_planes(const DWGeometry *g, const float *x, const float *weight, const float *bias, float *y,
                       ptrdiff_t p0, ptrdiff_t p1, float *scratch) {
  if (dw_kernels_use_avx2())
    forward_avx2(g, x, weight, bias, y, p0, p1, scratch);
  else
    forward_portable(g, x, weight, bias, y, p0, p1, scratch);
}

void dw_backward_channels(const DWGeometry *g, const float *x, const float *weight, const float *dy, float *dx,
                          float *dweight, float *dbias, ptrdiff_t c0, ptrdiff_t c1, float *scratch) {
  if (dw_kernels_use_avx2())
    backward_avx2(g, x, weight, dy, dx, dweight, dbias, c0, c1, scratch);
  else
    backward_portable(g, x, weight, dy, dx, dweight, dbias, c0, c1, scratch);
}
