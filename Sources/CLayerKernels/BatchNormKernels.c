// BatchNormKernels: the loops of CLayerKernels.h. One body (16-float vectors of the
// compiler's vector extension, sums in 16 Double lanes, a scalar tail) is compiled twice: for
// AVX-512 and for the baseline target, picked per call with __builtin_cpu_supports.
//
// Shapes throughout: one channel's n planes of hw floats, plane i at p + i·stride.
#include "CLayerKernels.h"

#include <stdint.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64)));

// Every function taking or returning a v16 is always inlined into its caller: no call passes one
// between code of different targets, so the ABI difference -Wpsabi warns about cannot arise.
#pragma clang diagnostic ignored "-Wpsabi"

#define BODY static inline __attribute__((always_inline))

BODY v16 ld(const float *p) {
  v16 v;
  memcpy(&v, p, sizeof v);
  return v;
}

BODY void st(float *p, v16 v) { memcpy(p, &v, sizeof v); }

BODY v16 splat(float f) { return (v16){f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f}; }

typedef double d8 __attribute__((vector_size(64)));

/// The 16 lanes of v as Doubles, minus m: lanes 0–7 in w[0], 8–15 in w[1].
BODY void widen(d8 w[2], v16 v, double m) {
  const d8 md = {m, m, m, m, m, m, m, m};
  w[0] = __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), d8) - md;
  w[1] = __builtin_convertvector(__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15), d8) - md;
}

/// Adds the 16 lanes of v, as Doubles, to acc.
BODY void add_wide(d8 acc[2], v16 v) {
  d8 w[2];
  widen(w, v, 0);
  acc[0] += w[0];
  acc[1] += w[1];
}

/// Adds (v − m)² lane by lane to acc, the difference and the square in Double.
BODY void add_wide_squares(d8 acc[2], v16 v, double m) {
  d8 w[2];
  widen(w, v, m);
  acc[0] += w[0] * w[0];
  acc[1] += w[1] * w[1];
}

/// The lanes of acc in a fixed tree (halves folded onto each other).
BODY double lanes(const d8 acc[2]) {
  const d8 v = acc[0] + acc[1];
  return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
}

/// Σ x, or Σ (x − m)² with `squares`, over one channel's n planes in plane order: 16 floats at
/// a time into 16 Double lanes (x − m and its square in Double), the last hw mod 16 of a plane
/// into a Double scalar. As exact as a Double loop (the old Swift one: its results differ from
/// these in the last bits only), at no cost in time: the loads bound these loops.
BODY double channel_sum(const float *x, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, double m, const int squares) {
  d8 acc[2] = {{0}, {0}};
  double t = 0;
  for (ptrdiff_t i = 0; i < n; i++) {
    const float *p = x + i * stride;
    ptrdiff_t j = 0;
    for (; j + 16 <= hw; j += 16) {
      if (squares) add_wide_squares(acc, ld(p + j), m);
      else add_wide(acc, ld(p + j));
    }
    for (; j < hw; j++) {
      const double d = (double)p[j] - m;
      t += squares ? d * d : d;
    }
  }
  return lanes(acc) + t;
}

BODY void stats_body(const float *x, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, double *mean, double *variance) {
  // Two passes over the channel (the second finds it in cache up to about 1 MB): the mean, then
  // the squared deviations from it.
  const double count = (double)n * (double)hw;
  const double mu = channel_sum(x, n, stride, hw, 0, 0) / count;
  *mean = mu;
  *variance = channel_sum(x, n, stride, hw, mu, 1) / count;
}

/// One element of the normalisation, (x − mu)·scale + shift: the forward pass and the masks of
/// a fused ReLU's backward compute it with these two helpers, so that both round alike.
BODY v16 affine(v16 x, v16 mv, v16 sv, v16 tv) { return (x - mv) * sv + tv; }
BODY float affine1(float x, float mu, float scale, float shift) { return (x - mu) * scale + shift; }

typedef int32_t i16 __attribute__((vector_size(64)));

/// ReLU as `ReLU` computes it (Swift.max(v, 0)): 0 where v ≤ 0 (also for −0), NaN kept.
BODY v16 relu(v16 v) { return (v16)((i16)v & ~(i16)(v <= splat(0))); }
BODY float relu1(float v) { return 0 >= v ? 0 : v; }

/// dy where the fused ReLU's output (x − mu)·scale + shift is > 0, else 0.
BODY v16 pass_mask(v16 d, v16 x, v16 mv, v16 sv, v16 tv) {
  return (v16)((i16)d & (i16)(affine(x, mv, sv, tv) > splat(0)));
}
BODY float pass_mask1(float d, float x, float mu, float scale, float shift) {
  return affine1(x, mu, scale, shift) > 0 ? d : 0;
}

BODY void normalize_body(
    const float *x, float *y, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, float mu, float scale, float shift,
    const int fuse_relu) {
  const v16 mv = splat(mu), sv = splat(scale), tv = splat(shift);
  for (ptrdiff_t i = 0; i < n; i++) {
    const float *p = x + i * stride;
    float *q = y + i * stride;
    ptrdiff_t j = 0;
    for (; j + 16 <= hw; j += 16) {
      const v16 v = affine(ld(p + j), mv, sv, tv);
      st(q + j, fuse_relu ? relu(v) : v);
    }
    for (; j < hw; j++) {
      const float v = affine1(p[j], mu, scale, shift);
      q[j] = fuse_relu ? relu1(v) : v;
    }
  }
}

/// The masks of a fused ReLU (see acon_bn_gradient_sums); `on` is 0 when there is none.
typedef struct Mask {
  int on;
  float scale, shift;
} Mask;

BODY void gradient_sums_body(
    const float *x, const float *dy, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, float mu, Mask mask, double *sum_dy,
    double *sum_dy_xc) {
  // As channel_sum: Double lanes, dy·(x − mu) formed in float.
  const v16 mv = splat(mu), sv = splat(mask.scale), tv = splat(mask.shift);
  d8 a[2] = {{0}, {0}}, ax[2] = {{0}, {0}};
  double t = 0, tx = 0;
  for (ptrdiff_t i = 0; i < n; i++) {
    const float *p = x + i * stride, *d = dy + i * stride;
    ptrdiff_t j = 0;
    for (; j + 16 <= hw; j += 16) {
      const v16 x0 = ld(p + j);
      const v16 d0 = mask.on ? pass_mask(ld(d + j), x0, mv, sv, tv) : ld(d + j);
      add_wide(a, d0);
      add_wide(ax, d0 * (x0 - mv));
    }
    for (; j < hw; j++) {
      const float d0 = mask.on ? pass_mask1(d[j], p[j], mu, mask.scale, mask.shift) : d[j];
      t += (double)d0;
      tx += (double)(d0 * (p[j] - mu));
    }
  }
  *sum_dy = lanes(a) + t;
  *sum_dy_xc = lanes(ax) + tx;
}

BODY void input_gradient_body(
    const float *x, const float *dy, float *dx, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, float mu, float a, float b,
    float d, Mask mask) {
  const v16 mv = splat(mu), av = splat(a), bv = splat(b), dv = splat(d), sv = splat(mask.scale), tv = splat(mask.shift);
  for (ptrdiff_t i = 0; i < n; i++) {
    const float *p = x + i * stride, *g = dy + i * stride;
    float *o = dx + i * stride;
    ptrdiff_t j = 0;
    for (; j + 16 <= hw; j += 16) {
      const v16 x0 = ld(p + j);
      const v16 g0 = mask.on ? pass_mask(ld(g + j), x0, mv, sv, tv) : ld(g + j);
      st(o + j, av * g0 + (bv * (x0 - mv) + dv));
    }
    for (; j < hw; j++) {
      const float g0 = mask.on ? pass_mask1(g[j], p[j], mu, mask.scale, mask.shift) : g[j];
      o[j] = a * g0 + (b * (p[j] - mu) + d);
    }
  }
}

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define AVX512 __attribute__((target("avx512f")))
#define HAS512() __builtin_cpu_supports("avx512f")
AVX512 static void stats_512(const float *x, ptrdiff_t n, ptrdiff_t s, ptrdiff_t hw, double *m, double *v) {
  stats_body(x, n, s, hw, m, v);
}
AVX512 static void normalize_512(
    const float *x, float *y, ptrdiff_t n, ptrdiff_t s, ptrdiff_t hw, float mu, float a, float b, int r) {
  normalize_body(x, y, n, s, hw, mu, a, b, r);
}
AVX512 static void sums_512(const float *x, const float *dy, ptrdiff_t n, ptrdiff_t s, ptrdiff_t hw, float mu, Mask k,
                            double *a, double *b) {
  gradient_sums_body(x, dy, n, s, hw, mu, k, a, b);
}
AVX512 static void dx_512(const float *x, const float *dy, float *dx, ptrdiff_t n, ptrdiff_t s, ptrdiff_t hw, float mu,
                          float a, float b, float d, Mask k) {
  input_gradient_body(x, dy, dx, n, s, hw, mu, a, b, d, k);
}
#else
#define HAS512() 0
#define stats_512 stats_body
#define normalize_512 normalize_body
#define sums_512 gradient_sums_body
#define dx_512 input_gradient_body
#endif

void acon_bn_stats(const float *x, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, double *mean, double *variance) {
  if (HAS512()) stats_512(x, n, stride, hw, mean, variance);
  else stats_body(x, n, stride, hw, mean, variance);
}

void acon_bn_normalize(
    const float *x, float *y, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, float mu, float scale, float shift,
    int relu) {
  if (HAS512()) normalize_512(x, y, n, stride, hw, mu, scale, shift, relu != 0);
  else normalize_body(x, y, n, stride, hw, mu, scale, shift, relu != 0);
}

void acon_bn_gradient_sums(
    const float *x, const float *dy, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, float mu, int relu, float scale,
    float shift, double *sum_dy, double *sum_dy_xc) {
  const Mask k = {relu != 0, scale, shift};
  if (HAS512()) sums_512(x, dy, n, stride, hw, mu, k, sum_dy, sum_dy_xc);
  else gradient_sums_body(x, dy, n, stride, hw, mu, k, sum_dy, sum_dy_xc);
}

void acon_bn_input_gradient(
    const float *x, const float *dy, float *dx, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, float mu, float a, float b,
    float d, int relu, float scale, float shift) {
  const Mask k = {relu != 0, scale, shift};
  if (HAS512()) dx_512(x, dy, dx, n, stride, hw, mu, a, b, d, k);
  else input_gradient_body(x, dy, dx, n, stride, hw, mu, a, b, d, k);
}
