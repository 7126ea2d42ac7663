// DepthwiseLanes.c: 3×3 depthwise convolution (padding 1, stride 1 or 2) of one channel's
// samples with the samples in vector lanes, for NN's DepthwiseConv2D, whose batches (NCHW or
// channels-major) hold a channel's sample planes at a fixed stride. Every sample of a channel
// has the same weights, so eight samples' planes, transposed into [H·W, 8] (a vector per
// position), make the convolution one vector FMA per tap and position: no shuffles, no padded
// copies, no masked tails, whatever the plane's width (the per-plane kernels of
// DepthwiseKernels.c vectorise along a row, which a 4- or 8-wide plane fills poorly). The
// transposes in and out are 4×4 blocks in registers; the planes in lanes have a border of zeros
// (as the per-plane kernels' padded copies), so each output and each element of dx takes the
// same operations as there.
//
// Shapes: x [n, h, w] (one channel's planes, x_stride apart), weight [3, 3], y and dy
// [n, oh, ow] (y_stride apart); a group of eight samples in lanes: xt [(h + 2)·(w + 2), 8] and
// dyt [(oh + 2)·(ow + 2), 8] with their borders, yt [oh·ow, 8], dxt [h·w, 8].
#include "CDepthwiseKernels.h"

#include <string.h>

#pragma clang diagnostic ignored "-Wpsabi"

#define INLINE static inline __attribute__((always_inline))
#if defined(__x86_64__)
#define AVX2 __attribute__((target("avx2,fma")))
#else
#define AVX2
#endif

typedef float v8 __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));

INLINE v8 ld8(const float *p) {
  v8 v;
  memcpy(&v, p, sizeof v);
  return v;
}
INLINE void st8(float *p, v8 v) { memcpy(p, &v, sizeof v); }
INLINE v8 splat(float f) { return (v8){f, f, f, f, f, f, f, f}; }
INLINE v4 ld4(const float *p) {
  v4 v;
  memcpy(&v, p, sizeof v);
  return v;
}
INLINE void st4(float *p, v4 v) { memcpy(p, &v, sizeof v); }

/// The lanes of a group: eight samples.
#define LANES 8

bool dw_lanes_handles(const DWGeometry *g) {
  return g->m == 1 && g->kh == 3 && g->kw == 3 && g->ph == 1 && g->pw == 1 && g->sh == g->sw &&
         (g->sh == 1 || g->sh == 2) && g->n > 1;
}

// Measured against the per-plane kernels on one core of a first-generation Zen (AVX2), 64
// samples, best of 12–400 alternating calls, ns an input element, forward / backward. A
// channels-major batch's channel: 16×16 stride 1 1.31 / 2.89 → 1.29 / 2.33; 8×8 1.97 / 4.61 →
// 1.12 / 2.11; 4×4 4.71 / 8.89 → 0.97 / 1.98; 32×32 stride 2 0.83 / 1.51 → 0.58 / 1.31; 8×8 stride 2
// 0.49 / 1.89 → 0.39 / 1.23. An NCHW batch (planes C·H·W apart), TFNet-0.5's layers at 32×32:
// 32×32 stride 2 (16 channels) 0.74 / 1.48 → 0.45 / 1.08; 8×8 (32) 1.96 / 4.36 → 1.04 / 1.92; 4×4
// (64) 3.97 / 8.66 → 1.40 / 2.64; 2×2 (1024) 5.55 / 8.54 → 3.74 / 6.46. But 16×16 at stride 2, which
// the per-plane kernels run straight from the unpadded plane (their direct stride-2 path): 0.47 /
// 1.37 → 0.38 / 0.95 with 24 channels in cache, 0.55 / 1.44 → 0.72 / 1.53 with 192 channels (12 MB)
// from memory, so that geometry stays per plane. The AVX-512 variant keeps its own kernels (not
// measured against these 8-lane ones).
bool dw_lanes_preferred(const DWGeometry *g) {
  if (!dw_lanes_handles(g) || dw_kernels_variant() != DW_VARIANT_AVX2) return false;
  return !(g->sh == 2 && g->w == 16 && g->h % 2 == 0);
}

ptrdiff_t dw_lanes_forward_scratch(const DWGeometry *g) {
  return ((g->h + 2) * (g->w + 2) + g->oh * g->ow) * LANES;
}

ptrdiff_t dw_lanes_backward_scratch(const DWGeometry *g) {
  return ((g->h + 2) * (g->w + 2) + (g->oh + 2) * (g->ow + 2) + g->h * g->w + 10) * LANES;
}

// MARK: - Transposes

/// The 4×4 transpose of the block whose row k is src + k·ss (4 floats each): column c to
/// dst + c·ds. In 128-bit vectors, which a first-generation Zen shuffles at full rate (its 256-bit
/// shuffles are two µops each, and 8×8 blocks in 256-bit vectors spilled their row pointers).
INLINE void transpose4(const float *src, ptrdiff_t ss, float *dst, ptrdiff_t ds) {
  const v4 r0 = ld4(src), r1 = ld4(src + ss), r2 = ld4(src + 2 * ss), r3 = ld4(src + 3 * ss);
  const v4 t0 = __builtin_shufflevector(r0, r1, 0, 4, 1, 5), t1 = __builtin_shufflevector(r0, r1, 2, 6, 3, 7);
  const v4 t2 = __builtin_shufflevector(r2, r3, 0, 4, 1, 5), t3 = __builtin_shufflevector(r2, r3, 2, 6, 3, 7);
  st4(dst, __builtin_shufflevector(t0, t2, 0, 1, 4, 5));
  st4(dst + ds, __builtin_shufflevector(t0, t2, 2, 3, 6, 7));
  st4(dst + 2 * ds, __builtin_shufflevector(t1, t3, 0, 1, 4, 5));
  st4(dst + 3 * ds, __builtin_shufflevector(t1, t3, 2, 3, 6, 7));
}

/// A plane [h, w] in lanes with a border of one zero position: [(h + 2)·(w + 2), 8], position
/// (r, c) of the image at ((r + 1)·(w + 2) + c + 1)·8.
INLINE float *padded_at(float *t, ptrdiff_t w, ptrdiff_t r, ptrdiff_t c) { return t + ((r + 1) * (w + 2) + c + 1) * LANES; }

/// Zeroes the border positions of a padded plane in lanes (see padded_at).
INLINE void zero_border(float *t, ptrdiff_t h, ptrdiff_t w) {
  const ptrdiff_t pw = w + 2;
  memset(t, 0, (size_t)(pw * LANES) * sizeof(float));
  memset(t + (h + 1) * pw * LANES, 0, (size_t)(pw * LANES) * sizeof(float));
  for (ptrdiff_t r = 1; r <= h; r++) {
    memset(t + r * pw * LANES, 0, LANES * sizeof(float));
    memset(t + (r * pw + w + 1) * LANES, 0, LANES * sizeof(float));
  }
}

/// The image positions of the padded plane in lanes t (see padded_at) ← plane q of rows k <
/// rows (row k at src + k·ld, h·w floats); lanes k ≥ rows zero.
INLINE void to_lanes_padded(const float *src, ptrdiff_t ld, ptrdiff_t rows, ptrdiff_t h, ptrdiff_t w, float *t) {
  if (rows == LANES && w % 4 == 0) {
    // Runs of 4 positions of an image row × 4 samples.
    for (ptrdiff_t r = 0; r < h; r++)
      for (ptrdiff_t c = 0; c < w; c += 4)
        for (ptrdiff_t k = 0; k < LANES; k += 4)
          transpose4(src + k * ld + r * w + c, ld, padded_at(t, w, r, c) + k, LANES);
    return;
  }
  for (ptrdiff_t r = 0; r < h; r++)
    for (ptrdiff_t c = 0; c < w; c++) {
      float *d = padded_at(t, w, r, c);
      for (ptrdiff_t k = 0; k < LANES; k++) d[k] = k < rows ? src[k * ld + r * w + c] : 0.0f;
    }
}

/// Rows k < rows of dst (row k at dst + k·ld, p floats) ← t [p, 8] (lanes k ≥ rows dropped).
INLINE void from_lanes(const float *t, ptrdiff_t p, ptrdiff_t rows, float *dst, ptrdiff_t ld) {
  ptrdiff_t q = 0;
  if (rows == LANES)
    for (; q + 4 <= p; q += 4)
      for (ptrdiff_t k = 0; k < LANES; k += 4) transpose4(t + q * LANES + k, LANES, dst + k * ld + q, ld);
  for (; q < p; q++)
    for (ptrdiff_t k = 0; k < rows; k++) dst[k * ld + q] = t[q * LANES + k];
}

// MARK: - Bodies

/// Prefetches the planes of the next group of samples from k0 (rows k0 .. k0 + 7 of n, row k at
/// src + k·ld, p floats) when they are 64 floats or more: the transposes read eight rows at once,
/// which the hardware prefetchers follow poorly, and a stride-2 group's arithmetic is short beside
/// them (one core, 64 samples from memory, ns an input element: 8×8 stride 2 forward 0.68 → 0.48,
/// 8×8 backward 2.56 → 2.21; smaller planes lost, 4×4 backward 1.99 → 2.35, so they go without).
INLINE void prefetch_group(const float *src, ptrdiff_t ld, ptrdiff_t k0, ptrdiff_t n, ptrdiff_t p) {
  if (p < 64) return;
  for (ptrdiff_t k = k0; k < n && k < k0 + LANES; k++)
    for (ptrdiff_t q = 0; q < p; q += 16) __builtin_prefetch(src + k * ld + q);
}

/// The nine taps of a 3×3 window added to a, in (u, v) order, each an FMA: kernel row u reads
/// row pointer x0, x1 or x2 at offsets 0, d and 2·d (d = LANES forward, −LANES in dx's gather).
#define TAPS9(a, w, x0, x1, x2, d)         \
  do {                                     \
    a += w[0] * ld8(x0);                   \
    a += w[1] * ld8((x0) + (d));           \
    a += w[2] * ld8((x0) + 2 * (d));       \
    a += w[3] * ld8(x1);                   \
    a += w[4] * ld8((x1) + (d));           \
    a += w[5] * ld8((x1) + 2 * (d));       \
    a += w[6] * ld8(x2);                   \
    a += w[7] * ld8((x2) + (d));           \
    a += w[8] * ld8((x2) + 2 * (d));       \
  } while (0)

/// y of one group from the padded xt: yt[i·ow + j] = bias + Σ_{u,v} w[u][v]·xt(s·i − 1 + u,
/// s·j − 1 + v), taps in (u, v) order, each an FMA: the per-plane kernels' operations on their
/// padded copies, so the same values. Four outputs of a row at a time, their chains of nine
/// dependent FMAs interleaved tap by tap: one output's chain at a time, the FMAs waiting on each
/// other filled the scheduler of a first-generation Zen (16×16 planes 1.9 → 1.4 ns an element,
/// 8×8 2.2 → 1.4). `s` is a constant (1 or 2) where this is inlined.
INLINE void forward_group(const DWGeometry *g, const float *xt, const float *wt, float bias, float *yt,
                          const ptrdiff_t s) {
  const ptrdiff_t row = (g->w + 2) * LANES, ow = g->ow;
  const v8 b = splat(bias);
  // The weights in registers (the stores into yt could alias wt as far as the compiler knows).
  v8 w[9];
  for (int t = 0; t < 9; t++) w[t] = splat(wt[t]);
  for (ptrdiff_t i = 0; i < g->oh; i++) {
    const float *x0 = xt + s * i * row, *x1 = x0 + row, *x2 = x1 + row;
    float *y = yt + i * ow * LANES;
    ptrdiff_t j = 0;
    for (; j + 4 <= ow; j += 4) {
      v8 a[4] = {b, b, b, b};
      for (int t = 0; t < 9; t++) {
        const float *r = (t < 3 ? x0 : t < 6 ? x1 : x2) + (s * j + t % 3) * LANES;
        for (int k = 0; k < 4; k++) a[k] += w[t] * ld8(r + s * k * LANES);
      }
      for (int k = 0; k < 4; k++) st8(y + (j + k) * LANES, a[k]);
    }
    for (; j < ow; j++) {
      const ptrdiff_t o = s * j * LANES;
      v8 a = b;
      TAPS9(a, w, x0 + o, x1 + o, x2 + o, LANES);
      st8(y + j * LANES, a);
    }
  }
}

/// dW and db terms of one group, added lane by lane into acc [10, 8] (taps 0..8, then the bias):
/// acc[u·3 + v] += dy(i, j)·xt(s·i − 1 + u, s·j − 1 + v), acc[9] += dy(i, j), over the outputs
/// in (i, j) order (xt and dyt padded).
INLINE void weight_group(const DWGeometry *g, const float *xt, const float *dyt, float *acc) {
  const ptrdiff_t s = g->sh, row = (g->w + 2) * LANES, drow = (g->ow + 2) * LANES;
  v8 a[10];
  for (int t = 0; t < 10; t++) a[t] = ld8(acc + t * LANES);
  for (ptrdiff_t i = 0; i < g->oh; i++) {
    const float *x0 = xt + s * i * row, *x1 = x0 + row, *x2 = x1 + row;
    const float *dr = dyt + (i + 1) * drow + LANES;
    for (ptrdiff_t j = 0; j < g->ow; j++) {
      const v8 d = ld8(dr + j * LANES);
      const ptrdiff_t o = s * j * LANES;
      a[0] += d * ld8(x0 + o);
      a[1] += d * ld8(x0 + o + LANES);
      a[2] += d * ld8(x0 + o + 2 * LANES);
      a[3] += d * ld8(x1 + o);
      a[4] += d * ld8(x1 + o + LANES);
      a[5] += d * ld8(x1 + o + 2 * LANES);
      a[6] += d * ld8(x2 + o);
      a[7] += d * ld8(x2 + o + LANES);
      a[8] += d * ld8(x2 + o + 2 * LANES);
      a[9] += d;
    }
  }
  for (int t = 0; t < 10; t++) st8(acc + t * LANES, a[t]);
}

/// dx of one group from the padded dyt: dxt[h·w + c] = Σ w[u][v]·dy((h + 1 − u)/s, (c + 1 − v)/s)
/// over the taps whose quotients are whole (all nine at stride 1), in (u, v) order, from 0.
INLINE void input_group(const DWGeometry *g, const float *dyt, const float *wt, float *dxt) {
  const ptrdiff_t W = g->w, drow = (g->ow + 2) * LANES;
  v8 w[9];
  for (int t = 0; t < 9; t++) w[t] = splat(wt[t]);
  if (g->sh == 1) {
    for (ptrdiff_t h = 0; h < g->h; h++) {
      // Kernel row u reads dy row h + 1 − u: padded row h + 2 − u; column v reads padded column
      // c + 2 − v. Four columns at a time, interleaved as in forward_group.
      const float *d0 = dyt + (h + 2) * drow, *d1 = d0 - drow, *d2 = d1 - drow;
      float *dx = dxt + h * W * LANES;
      ptrdiff_t c = 0;
      for (; c + 4 <= W; c += 4) {
        v8 a[4] = {splat(0), splat(0), splat(0), splat(0)};
        for (int t = 0; t < 9; t++) {
          const float *r = (t < 3 ? d0 : t < 6 ? d1 : d2) + (c + 2 - t % 3) * LANES;
          for (int k = 0; k < 4; k++) a[k] += w[t] * ld8(r + k * LANES);
        }
        for (int k = 0; k < 4; k++) st8(dx + (c + k) * LANES, a[k]);
      }
      for (; c < W; c++) {
        const ptrdiff_t o = (c + 2) * LANES;
        v8 a = splat(0);
        TAPS9(a, w, d0 + o, d1 + o, d2 + o, -LANES);
        st8(dx + c * LANES, a);
      }
    }
    return;
  }
  // Stride 2: an even h takes kernel row 1 (dy row h/2), an odd one rows 0 and 2 (dy rows
  // (h + 1)/2 and (h − 1)/2); columns alike. Padded dy rows and columns are one further on.
  for (ptrdiff_t h = 0; h < g->h; h++) {
    int ru[2], nr;
    const float *rp[2];
    if (h % 2 == 0) ru[0] = 1, rp[0] = dyt + (h / 2 + 1) * drow, nr = 1;
    else ru[0] = 0, rp[0] = dyt + ((h + 1) / 2 + 1) * drow, ru[1] = 2, rp[1] = dyt + ((h - 1) / 2 + 1) * drow, nr = 2;
    float *dx = dxt + h * W * LANES;
    for (ptrdiff_t c = 0; c < W; c++) {
      v8 a = splat(0);
      for (int r = 0; r < nr; r++) {
        const float *d = rp[r];
        if (c % 2 == 0) {
          a += w[ru[r] * 3 + 1] * ld8(d + (c / 2 + 1) * LANES);
        } else {
          a += w[ru[r] * 3] * ld8(d + ((c + 1) / 2 + 1) * LANES);
          a += w[ru[r] * 3 + 2] * ld8(d + ((c - 1) / 2 + 1) * LANES);
        }
      }
      st8(dx + c * LANES, a);
    }
  }
}

INLINE void forward_lanes_body(const DWGeometry *g, const float *x, ptrdiff_t xs, const float *weight, float bias,
                               float *y, ptrdiff_t ys, float *scratch) {
  // x [n, h, w] (planes xs apart) → y [n, oh, ow] (planes ys apart), eight samples at a time;
  // scratch: xt padded | yt [oh·ow, 8]
  const ptrdiff_t ohw = g->oh * g->ow;
  float *xt = scratch, *yt = xt + (g->h + 2) * (g->w + 2) * LANES;
  zero_border(xt, g->h, g->w);
  for (ptrdiff_t k0 = 0; k0 < g->n; k0 += LANES) {
    const ptrdiff_t rows = g->n - k0 < LANES ? g->n - k0 : LANES;
    to_lanes_padded(x + k0 * xs, xs, rows, g->h, g->w, xt);
    prefetch_group(x, xs, k0 + LANES, g->n, g->h * g->w);
    if (g->sh == 1) forward_group(g, xt, weight, bias, yt, 1);
    else forward_group(g, xt, weight, bias, yt, 2);
    from_lanes(yt, ohw, rows, y + k0 * ys, ys);
  }
}

INLINE void backward_lanes_body(const DWGeometry *g, const float *x, ptrdiff_t xs, const float *weight,
                                const float *dy, ptrdiff_t ys, float *dx, float *dweight, float *dbias, float *scratch) {
  // x, dx [n, h, w] (planes xs apart); dy [n, oh, ow] (planes ys apart); dweight [9] +=, dbias [1] +=
  // scratch: xt padded | dyt padded | dxt [h·w, 8] | acc [10, 8]
  const ptrdiff_t hw = g->h * g->w;
  float *xt = scratch, *dyt = xt + (g->h + 2) * (g->w + 2) * LANES;
  float *dxt = dyt + (g->oh + 2) * (g->ow + 2) * LANES, *acc = dxt + hw * LANES;
  zero_border(xt, g->h, g->w);
  zero_border(dyt, g->oh, g->ow);
  memset(acc, 0, 10 * LANES * sizeof(float));
  for (ptrdiff_t k0 = 0; k0 < g->n; k0 += LANES) {
    const ptrdiff_t rows = g->n - k0 < LANES ? g->n - k0 : LANES;
    to_lanes_padded(x + k0 * xs, xs, rows, g->h, g->w, xt);
    to_lanes_padded(dy + k0 * ys, ys, rows, g->oh, g->ow, dyt);
    prefetch_group(x, xs, k0 + LANES, g->n, hw);
    prefetch_group(dy, ys, k0 + LANES, g->n, g->oh * g->ow);
    weight_group(g, xt, dyt, acc);
    if (dx) {
      input_group(g, dyt, weight, dxt);
      from_lanes(dxt, hw, rows, dx + k0 * xs, xs);
    }
  }
  // Each tap's eight lanes in order (lanes of absent samples hold zeros).
  for (int t = 0; t < 10; t++) {
    float sum = acc[t * LANES];
    for (int k = 1; k < LANES; k++) sum += acc[t * LANES + k];
    if (t < 9) dweight[t] += sum;
    else if (dbias) *dbias += sum;
  }
}

// MARK: - Variants and entry points

AVX2 static void forward_lanes_avx2(const DWGeometry *g, const float *x, ptrdiff_t xs, const float *weight, float bias,
                                    float *y, ptrdiff_t ys, float *scratch) {
  forward_lanes_body(g, x, xs, weight, bias, y, ys, scratch);
}
static void forward_lanes_portable(const DWGeometry *g, const float *x, ptrdiff_t xs, const float *weight, float bias,
                                   float *y, ptrdiff_t ys, float *scratch) {
  forward_lanes_body(g, x, xs, weight, bias, y, ys, scratch);
}
AVX2 static void backward_lanes_avx2(const DWGeometry *g, const float *x, ptrdiff_t xs, const float *weight,
                                     const float *dy, ptrdiff_t ys, float *dx, float *dweight, float *dbias,
                                     float *scratch) {
  backward_lanes_body(g, x, xs, weight, dy, ys, dx, dweight, dbias, scratch);
}
static void backward_lanes_portable(const DWGeometry *g, const float *x, ptrdiff_t xs, const float *weight,
                                    const float *dy, ptrdiff_t ys, float *dx, float *dweight, float *dbias,
                                    float *scratch) {
  backward_lanes_body(g, x, xs, weight, dy, ys, dx, dweight, dbias, scratch);
}

void dw_lanes_forward(const DWGeometry *g, const float *x, ptrdiff_t x_stride, const float *weight, float bias,
                      float *y, ptrdiff_t y_stride, float *scratch) {
  if (dw_kernels_variant() >= DW_VARIANT_AVX2)
    forward_lanes_avx2(g, x, x_stride, weight, bias, y, y_stride, scratch);
  else
    forward_lanes_portable(g, x, x_stride, weight, bias, y, y_stride, scratch);
}

void dw_lanes_backward(const DWGeometry *g, const float *x, ptrdiff_t x_stride, const float *weight, const float *dy,
                       ptrdiff_t y_stride, float *dx, float *dweight, float *dbias, float *scratch) {
  if (dw_kernels_variant() >= DW_VARIANT_AVX2)
    backward_lanes_avx2(g, x, x_stride, weight, dy, y_stride, dx, dweight, dbias, scratch);
  else
    backward_lanes_portable(g, x, x_stride, weight, dy, y_stride, dx, dweight, dbias, scratch);
}
