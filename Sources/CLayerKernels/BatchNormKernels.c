// BatchNormKernels: the loops of CLayerKernels.h. One body (16-float vectors of the
// compiler's vector extension, sums in float vectors flushed into 16 Double lanes, a scalar
// tail) is compiled three times: for AVX-512, for AVX2+FMA and for the baseline target, picked
// per call with __builtin_cpu_supports.
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

/// A non-temporal (streaming) store of v at p, which must be 64-byte aligned: the line is written
/// without being read first and is not kept in cache. The same value as st.
BODY void st_nt(float *p, v16 v) { __builtin_nontemporal_store(v, (v16 *)p); }

/// Whether the n planes of a channel, p + i·stride, take streaming stores of full vectors: on
/// x86 (as the ACON kernels; elsewhere never), p and the stride aligned to 64 bytes (then so is
/// every full vector of every plane).
BODY int streamable(const float *p, ptrdiff_t stride) {
#if defined(__x86_64__)
  return ((uintptr_t)p & 63) == 0 && (stride & 15) == 0;
#else
  (void)p;
  (void)stride;
  return 0;
#endif
}

/// After streaming stores: orders them before whatever the caller does next (another thread may
/// read the output once the call returns). Nothing where there are none (x86 only).
static inline void fence_streams(int streamed) {
#if defined(__x86_64__)
  if (streamed) __builtin_ia32_sfence();
#else
  (void)streamed;
#endif
}

BODY v16 splat(float f) { return (v16){f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f}; }

typedef double d8 __attribute__((vector_size(64)));

/// The 16 lanes of v as Doubles: lanes 0–7 in w[0], 8–15 in w[1].
BODY void widen(d8 w[2], v16 v) {
  w[0] = __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), d8);
  w[1] = __builtin_convertvector(__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15), d8);
}

/// Adds the 16 lanes of v, as Doubles, to acc.
BODY void add_wide(d8 acc[2], v16 v) {
  d8 w[2];
  widen(w, v);
  acc[0] += w[0];
  acc[1] += w[1];
}


/// The lanes of acc in a fixed tree (halves folded onto each other).
BODY double lanes(const d8 acc[2]) {
  const d8 v = acc[0] + acc[1];
  return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
}

/// The planes ahead of the current one (at least 512 bytes ahead) whose lines the first pass
/// over a channel's planes prefetches: the planes sit a sample apart, too short a run (256 bytes
/// to a few KB) for the hardware's stream prefetchers to be ahead when the next one starts. On the
/// first-generation Zen (AVX2), one thread, 64 samples of 64 to 1,024 floats: the forward pass 5–15%
/// faster, the backward 10–20% (the same bits; the later passes find the channel in cache).
BODY ptrdiff_t prefetch_planes(ptrdiff_t hw) { return hw >= 128 ? 1 : (128 + hw - 1) / (hw > 0 ? hw : 1); }

/// The 16-float vectors that the sums below add in float lanes before they add those lanes into
/// their Double ones: 16 vectors, 256 floats. Each Double lane then adds partial sums of 16 floats
/// (each off by at most 16 float roundings, about 10⁻⁶ of its terms' magnitudes; BatchNormTests
/// hold the statistics and gradients to 10⁻⁴ of the Double reference, means far from zero
/// included) instead of every float widened: on the first-generation Zen (AVX2), whose 256-bit
/// conversions and Double adds take two µops each, that widening bound the loops. One thread, one channel of 16,384 floats in cache: the
/// statistics and normalisation 0.33 → 0.21 ms, the backward sums and input gradient 0.39 →
/// 0.31 ms.
#define FLUSH 16

/// Σ x, or Σ (x − m)² with `squares`, over one channel's n planes in plane order: 16 floats at
/// a time into 16 float lanes, whose partial sums go into 16 Double lanes every FLUSH vectors and
/// at the end (x − m and its square in float, m rounded to float: stats_body corrects for that
/// rounding); the last hw mod 16 of a plane into a Double scalar. The order depends on hw and n
/// only.
BODY double channel_sum(const float *x, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, double m, const int squares) {
  d8 acc[2] = {{0}, {0}};
  double t = 0;
  const float mf = (float)m;
  const v16 mv = splat(mf);
  v16 part = splat(0);
  int parts = 0;
  const ptrdiff_t ahead = prefetch_planes(hw);
  for (ptrdiff_t i = 0; i < n; i++) {
    const float *p = x + i * stride;
    const int fetch = !squares && i + ahead < n;
    ptrdiff_t j = 0;
    for (; j + 16 <= hw; j += 16) {
      if (fetch) __builtin_prefetch(p + ahead * stride + j);
      v16 v = ld(p + j);
      if (squares) {
        v -= mv;
        v *= v;
      }
      part += v;
      if (++parts == FLUSH) {
        add_wide(acc, part);
        part = splat(0);
        parts = 0;
      }
    }
    for (; j < hw; j++) {
      const double d = (double)p[j] - (squares ? (double)mf : 0);
      t += squares ? d * d : d;
    }
  }
  add_wide(acc, part);
  return lanes(acc) + t;
}

/// Σ (x − k) and Σ (x − k)² over one channel's n planes in one pass, in the order of
/// channel_sum (float lanes flushed into Double lanes every FLUSH vectors; x − k and its square
/// in float), prefetching the planes ahead (see prefetch_planes).
BODY void channel_shifted_sums(const float *x, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, float k, double *sum,
                               double *squares) {
  d8 acc[2] = {{0}, {0}}, acc2[2] = {{0}, {0}};
  double t = 0, t2 = 0;
  const v16 kv = splat(k);
  v16 part = splat(0), part2 = splat(0);
  int parts = 0;
  const ptrdiff_t ahead = prefetch_planes(hw);
  for (ptrdiff_t i = 0; i < n; i++) {
    const float *p = x + i * stride;
    const int fetch = i + ahead < n;
    ptrdiff_t j = 0;
    for (; j + 16 <= hw; j += 16) {
      if (fetch) __builtin_prefetch(p + ahead * stride + j);
      const v16 d = ld(p + j) - kv, sq = d * d;  // d·d on its own: never fused with the add (FMA)
      part += d;
      part2 += sq;
      if (++parts == FLUSH) {
        add_wide(acc, part);
        add_wide(acc2, part2);
        part = part2 = splat(0);
        parts = 0;
      }
    }
    for (; j < hw; j++) {
      const double d = (double)p[j] - (double)k;
      t += d;
      t2 += d * d;
    }
  }
  add_wide(acc, part);
  add_wide(acc2, part2);
  *sum = lanes(acc) + t;
  *squares = lanes(acc2) + t2;
}

BODY void stats_body(const float *x, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, double *mean, double *variance) {
  // One pass: the sums of x − k and of its square about k, the channel's first element; then
  // mean = k + Σ(x − k)/count and variance = Σ(x − k)²/count − (mean − k)². The subtraction loses
  // about (mean − k)²/variance times the sums' rounding, and x − k rounds to |x − k|'s precision:
  // where k lies more than 4 standard deviations from the mean (or a result is not finite), two
  // more passes over the channel (which find it in cache up to about 1 MB) take the mean from Σx
  // and the squared deviations from that mean, with no cancellation whatever the mean.
  const double count = (double)n * (double)hw;
  const float k = count > 0 ? x[0] : 0;  // an empty channel: NaN statistics, as 0/0
  double s1, s2;
  channel_shifted_sums(x, n, stride, hw, k, &s1, &s2);
  const double d = s1 / count, v = s2 / count - d * d;
  if (d * d <= 16 * v) {
    *mean = (double)k + d;
    *variance = v;
    return;
  }
  const double mu = channel_sum(x, n, stride, hw, 0, 0) / count;
  *mean = mu;
  // The squares are taken about mu rounded to float, mf = mu − e: Σ(x − mf)²/count = var + e².
  const double e = mu - (double)(float)mu;
  *variance = channel_sum(x, n, stride, hw, mu, 1) / count - e * e;
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

/// With `nt`, full vectors of y go out as streaming stores (y and the stride 64-byte aligned).
BODY void normalize_body(
    const float *x, float *y, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, float mu, float scale, float shift,
    const int fuse_relu, const int nt) {
  const v16 mv = splat(mu), sv = splat(scale), tv = splat(shift);
  for (ptrdiff_t i = 0; i < n; i++) {
    const float *p = x + i * stride;
    float *q = y + i * stride;
    ptrdiff_t j = 0;
    for (; j + 16 <= hw; j += 16) {
      const v16 v = affine(ld(p + j), mv, sv, tv), r = fuse_relu ? relu(v) : v;
      if (nt) st_nt(q + j, r);
      else st(q + j, r);
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
  // As channel_sum: float lanes flushed into Double lanes every FLUSH vectors, dy·(x − mu) formed in float.
  const v16 mv = splat(mu), sv = splat(mask.scale), tv = splat(mask.shift);
  d8 a[2] = {{0}, {0}}, ax[2] = {{0}, {0}};
  v16 part = splat(0), part_x = splat(0);
  int parts = 0;
  double t = 0, tx = 0;
  const ptrdiff_t ahead = prefetch_planes(hw);
  for (ptrdiff_t i = 0; i < n; i++) {
    const float *p = x + i * stride, *d = dy + i * stride;
    const int fetch = i + ahead < n;
    ptrdiff_t j = 0;
    for (; j + 16 <= hw; j += 16) {
      if (fetch) {
        __builtin_prefetch(p + ahead * stride + j);
        __builtin_prefetch(d + ahead * stride + j);
      }
      const v16 x0 = ld(p + j);
      const v16 d0 = mask.on ? pass_mask(ld(d + j), x0, mv, sv, tv) : ld(d + j);
      part += d0;
      part_x += d0 * (x0 - mv);
      if (++parts == FLUSH) {
        add_wide(a, part);
        add_wide(ax, part_x);
        part = part_x = splat(0);
        parts = 0;
      }
    }
    for (; j < hw; j++) {
      const float d0 = mask.on ? pass_mask1(d[j], p[j], mu, mask.scale, mask.shift) : d[j];
      t += (double)d0;
      tx += (double)(d0 * (p[j] - mu));
    }
  }
  add_wide(a, part);
  add_wide(ax, part_x);
  *sum_dy = lanes(a) + t;
  *sum_dy_xc = lanes(ax) + tx;
}

/// With `nt`, full vectors of dx go out as streaming stores (dx and the stride 64-byte aligned).
BODY void input_gradient_body(
    const float *x, const float *dy, float *dx, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, float mu, float a, float b,
    float d, Mask mask, const int nt) {
  const v16 mv = splat(mu), av = splat(a), bv = splat(b), dv = splat(d), sv = splat(mask.scale), tv = splat(mask.shift);
  for (ptrdiff_t i = 0; i < n; i++) {
    const float *p = x + i * stride, *g = dy + i * stride;
    float *o = dx + i * stride;
    ptrdiff_t j = 0;
    for (; j + 16 <= hw; j += 16) {
      const v16 x0 = ld(p + j);
      const v16 g0 = mask.on ? pass_mask(ld(g + j), x0, mv, sv, tv) : ld(g + j);
      const v16 r = av * g0 + (bv * (x0 - mv) + dv);
      if (nt) st_nt(o + j, r);
      else st(o + j, r);
    }
    for (; j < hw; j++) {
      const float g0 = mask.on ? pass_mask1(g[j], p[j], mu, mask.scale, mask.shift) : g[j];
      o[j] = a * g0 + (b * (p[j] - mu) + d);
    }
  }
}

// MARK: Small planes, channels in blocks
//
// Planes of fewer than acon_bn_block_plane_limit floats run channels [c0, c1) of x [n, c, hw] in
// blocks of whole channels, at most BLOCK floats of a sample each (cb − ca = BLOCK / hw channels):
// the block's floats of sample i, x[i, ca..<cb, :], are one contiguous run, read in memory order
// sample after sample. Each position k of the run has its own parameters (its channel's,
// expanded into arrays) and, for the sums, its own float partial sum over FLUSH samples at a time
// in order, added into its own Double accumulator (as the per-channel loops' lanes; one thread,
// 64 samples of [256, 16] and [1024, 4], the statistics and normalisation 1.1 → 0.8 ns an element,
// the backward sums and input gradient 1.45–1.5 → 1.1); a channel's sum then adds its hw positions'
// accumulators in order. So a result depends only on the data, never on how channels are grouped
// into blocks or threads. The elementwise passes compute each element with the same helpers as
// the per-channel loops: the same bits.

#define BLOCK 256

/// The channels of the block that starts at channel ca: up to BLOCK / hw, not past c1.
BODY ptrdiff_t block_end(ptrdiff_t ca, ptrdiff_t c1, ptrdiff_t hw) {
  const ptrdiff_t per = BLOCK / hw;
  return ca + per < c1 ? ca + per : c1;
}

/// e[k] = v[ca + k / hw] for the block's positions k < (cb − ca)·hw.
BODY void expand(float *e, const float *v, ptrdiff_t ca, ptrdiff_t cb, ptrdiff_t hw) {
  for (ptrdiff_t ch = ca; ch < cb; ch++) {
    for (ptrdiff_t j = 0; j < hw; j++) e[(ch - ca) * hw + j] = v[ch];
  }
}

BODY d8 ldd(const double *p) {
  d8 v;
  memcpy(&v, p, sizeof v);
  return v;
}

BODY void std8(double *p, d8 v) { memcpy(p, &v, sizeof v); }

/// part[k] += (run[k] − m[k])² with `squares`, else part[k] += run[k], for k < len, in float (m
/// is read only with `squares`).
BODY void accumulate_run(float *part, const float *run, const float *m, ptrdiff_t len, const int squares) {
  ptrdiff_t k = 0;
  for (; k + 16 <= len; k += 16) {
    v16 v = ld(run + k);
    if (squares) {
      v -= ld(m + k);
      v *= v;
    }
    st(part + k, ld(part + k) + v);
  }
  for (; k < len; k++) {
    const float d = squares ? run[k] - m[k] : run[k];
    part[k] += squares ? d * d : d;
  }
}

/// acc[k] += part[k] as Doubles, then part[k] = 0, for k < len: a block's float partial sums
/// (at most FLUSH samples each, as the per-channel loops' float lanes) into its Double sums.
BODY void flush_block(double *acc, float *part, ptrdiff_t len) {
  ptrdiff_t k = 0;
  for (; k + 16 <= len; k += 16) {
    d8 w[2];
    widen(w, ld(part + k));
    std8(acc + k, ldd(acc + k) + w[0]);
    std8(acc + k + 8, ldd(acc + k + 8) + w[1]);
  }
  for (; k < len; k++) acc[k] += (double)part[k];
  memset(part, 0, (size_t)len * sizeof part[0]);
}

/// Σ over a channel's hw positions of acc, in order.
BODY double channel_total(const double *acc, ptrdiff_t hw) {
  double t = 0;
  for (ptrdiff_t j = 0; j < hw; j++) t += acc[j];
  return t;
}

BODY void stats_block_body(
    const float *x, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw, ptrdiff_t c0, ptrdiff_t c1, double *mean,
    double *variance) {
  // Each position's sum over the samples: FLUSH samples at a time in float, into Double.
  double acc[BLOCK] __attribute__((aligned(64)));
  float part[BLOCK] __attribute__((aligned(64))), m[BLOCK] __attribute__((aligned(64)));
  const double count = (double)n * (double)hw;
  for (ptrdiff_t ca = c0; ca < c1;) {
    const ptrdiff_t cb = block_end(ca, c1, hw), len = (cb - ca) * hw;
    for (int pass = 0; pass < 2; pass++) {
      memset(acc, 0, (size_t)len * sizeof acc[0]);
      memset(part, 0, (size_t)len * sizeof part[0]);
      for (ptrdiff_t i = 0; i < n; i++) {
        const float *run = x + (i * c + ca) * hw;
        if (pass == 0) accumulate_run(part, run, m, len, 0);
        else accumulate_run(part, run, m, len, 1);
        if ((i + 1) % FLUSH == 0 || i + 1 == n) flush_block(acc, part, len);
      }
      for (ptrdiff_t ch = ca; ch < cb; ch++) {
        const double s = channel_total(acc + (ch - ca) * hw, hw) / count;
        if (pass == 0) {
          mean[ch] = s;
          for (ptrdiff_t j = 0; j < hw; j++) m[(ch - ca) * hw + j] = (float)s;
        } else {
          // The squares were taken about the mean rounded to float (as in stats_body).
          const double e = mean[ch] - (double)(float)mean[ch];
          variance[ch] = s - e * e;
        }
      }
    }
    ca = cb;
  }
}

BODY void normalize_block_body(
    const float *x, float *y, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw, ptrdiff_t c0, ptrdiff_t c1, const float *mu,
    const float *scale, const float *shift, const int fuse_relu) {
  float em[BLOCK] __attribute__((aligned(64))), es[BLOCK] __attribute__((aligned(64)));
  float et[BLOCK] __attribute__((aligned(64)));
  for (ptrdiff_t ca = c0; ca < c1;) {
    const ptrdiff_t cb = block_end(ca, c1, hw), len = (cb - ca) * hw;
    expand(em, mu, ca, cb, hw);
    expand(es, scale, ca, cb, hw);
    expand(et, shift, ca, cb, hw);
    for (ptrdiff_t i = 0; i < n; i++) {
      const float *p = x + (i * c + ca) * hw;
      float *q = y + (i * c + ca) * hw;
      ptrdiff_t k = 0;
      for (; k + 16 <= len; k += 16) {
        const v16 v = affine(ld(p + k), ld(em + k), ld(es + k), ld(et + k));
        st(q + k, fuse_relu ? relu(v) : v);
      }
      for (; k < len; k++) {
        const float v = affine1(p[k], em[k], es[k], et[k]);
        q[k] = fuse_relu ? relu1(v) : v;
      }
    }
    ca = cb;
  }
}

BODY void gradient_sums_block_body(
    const float *x, const float *dy, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw, ptrdiff_t c0, ptrdiff_t c1,
    const float *mu, const int masked, const float *scale, const float *shift, double *sum_dy, double *sum_dy_xc) {
  // Each position's sums over the samples: FLUSH samples at a time in float, into Double.
  double a[BLOCK] __attribute__((aligned(64))), ax[BLOCK] __attribute__((aligned(64)));
  float pa[BLOCK] __attribute__((aligned(64))), pax[BLOCK] __attribute__((aligned(64)));
  float em[BLOCK] __attribute__((aligned(64))), es[BLOCK] __attribute__((aligned(64)));
  float et[BLOCK] __attribute__((aligned(64)));
  for (ptrdiff_t ca = c0; ca < c1;) {
    const ptrdiff_t cb = block_end(ca, c1, hw), len = (cb - ca) * hw;
    expand(em, mu, ca, cb, hw);
    if (masked) {
      expand(es, scale, ca, cb, hw);
      expand(et, shift, ca, cb, hw);
    }
    memset(a, 0, (size_t)len * sizeof a[0]);
    memset(ax, 0, (size_t)len * sizeof ax[0]);
    memset(pa, 0, (size_t)len * sizeof pa[0]);
    memset(pax, 0, (size_t)len * sizeof pax[0]);
    for (ptrdiff_t i = 0; i < n; i++) {
      const float *p = x + (i * c + ca) * hw, *d = dy + (i * c + ca) * hw;
      ptrdiff_t k = 0;
      for (; k + 16 <= len; k += 16) {
        const v16 x0 = ld(p + k), mv = ld(em + k);
        const v16 d0 = masked ? pass_mask(ld(d + k), x0, mv, ld(es + k), ld(et + k)) : ld(d + k);
        st(pa + k, ld(pa + k) + d0);
        st(pax + k, ld(pax + k) + d0 * (x0 - mv));
      }
      for (; k < len; k++) {
        const float d0 = masked ? pass_mask1(d[k], p[k], em[k], es[k], et[k]) : d[k];
        pa[k] += d0;
        pax[k] += d0 * (p[k] - em[k]);
      }
      if ((i + 1) % FLUSH == 0 || i + 1 == n) {
        flush_block(a, pa, len);
        flush_block(ax, pax, len);
      }
    }
    for (ptrdiff_t ch = ca; ch < cb; ch++) {
      sum_dy[ch] = channel_total(a + (ch - ca) * hw, hw);
      sum_dy_xc[ch] = channel_total(ax + (ch - ca) * hw, hw);
    }
    ca = cb;
  }
}

BODY void input_gradient_block_body(
    const float *x, const float *dy, float *dx, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw, ptrdiff_t c0, ptrdiff_t c1,
    const float *mu, const float *a, const float *b, const float *d, const int masked, const float *scale,
    const float *shift) {
  float em[BLOCK] __attribute__((aligned(64))), ea[BLOCK] __attribute__((aligned(64)));
  float eb[BLOCK] __attribute__((aligned(64))), ed[BLOCK] __attribute__((aligned(64)));
  float es[BLOCK] __attribute__((aligned(64))), et[BLOCK] __attribute__((aligned(64)));
  for (ptrdiff_t ca = c0; ca < c1;) {
    const ptrdiff_t cb = block_end(ca, c1, hw), len = (cb - ca) * hw;
    expand(em, mu, ca, cb, hw);
    expand(ea, a, ca, cb, hw);
    expand(eb, b, ca, cb, hw);
    expand(ed, d, ca, cb, hw);
    if (masked) {
      expand(es, scale, ca, cb, hw);
      expand(et, shift, ca, cb, hw);
    }
    for (ptrdiff_t i = 0; i < n; i++) {
      const float *p = x + (i * c + ca) * hw, *g = dy + (i * c + ca) * hw;
      float *o = dx + (i * c + ca) * hw;
      ptrdiff_t k = 0;
      for (; k + 16 <= len; k += 16) {
        const v16 x0 = ld(p + k), mv = ld(em + k);
        const v16 g0 = masked ? pass_mask(ld(g + k), x0, mv, ld(es + k), ld(et + k)) : ld(g + k);
        st(o + k, ld(ea + k) * g0 + (ld(eb + k) * (x0 - mv) + ld(ed + k)));
      }
      for (; k < len; k++) {
        const float g0 = masked ? pass_mask1(g[k], p[k], em[k], es[k], et[k]) : g[k];
        o[k] = ea[k] * g0 + (eb[k] * (p[k] - em[k]) + ed[k]);
      }
    }
    ca = cb;
  }
}

// One copy of every body per x86-64 target: the same source built for AVX-512 (16-float vectors
// in one register) or AVX2+FMA (in two), beside the baseline build.
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define BN_VARIANT(SFX, TARGET)                                                                                     \
  TARGET static void stats_##SFX(const float *x, ptrdiff_t n, ptrdiff_t s, ptrdiff_t hw, double *m, double *v) {   \
    stats_body(x, n, s, hw, m, v);                                                                                  \
  }                                                                                                                 \
  TARGET static void normalize_##SFX(const float *x, float *y, ptrdiff_t n, ptrdiff_t s, ptrdiff_t hw, float mu,    \
                                     float a, float b, int r, int nt) {                                             \
    if (nt) normalize_body(x, y, n, s, hw, mu, a, b, r, 1);                                                        \
    else normalize_body(x, y, n, s, hw, mu, a, b, r, 0);                                                           \
  }                                                                                                                 \
  TARGET static void sums_##SFX(const float *x, const float *dy, ptrdiff_t n, ptrdiff_t s, ptrdiff_t hw, float mu, \
                                Mask k, double *a, double *b) {                                                     \
    gradient_sums_body(x, dy, n, s, hw, mu, k, a, b);                                                               \
  }                                                                                                                 \
  TARGET static void dx_##SFX(const float *x, const float *dy, float *dx, ptrdiff_t n, ptrdiff_t s, ptrdiff_t hw,  \
                              float mu, float a, float b, float d, Mask k, int nt) {                                \
    if (nt) input_gradient_body(x, dy, dx, n, s, hw, mu, a, b, d, k, 1);                                           \
    else input_gradient_body(x, dy, dx, n, s, hw, mu, a, b, d, k, 0);                                              \
  }                                                                                                                 \
  TARGET static void stats_block_##SFX(const float *x, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw, ptrdiff_t c0,      \
                                       ptrdiff_t c1, double *m, double *v) {                                        \
    stats_block_body(x, n, c, hw, c0, c1, m, v);                                                                    \
  }                                                                                                                 \
  TARGET static void normalize_block_##SFX(const float *x, float *y, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw,       \
                                           ptrdiff_t c0, ptrdiff_t c1, const float *mu, const float *s,             \
                                           const float *t, int r) {                                                 \
    normalize_block_body(x, y, n, c, hw, c0, c1, mu, s, t, r);                                                      \
  }                                                                                                                 \
  TARGET static void sums_block_##SFX(const float *x, const float *dy, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw,     \
                                      ptrdiff_t c0, ptrdiff_t c1, const float *mu, int k, const float *s,           \
                                      const float *t, double *a, double *b) {                                       \
    gradient_sums_block_body(x, dy, n, c, hw, c0, c1, mu, k, s, t, a, b);                                           \
  }                                                                                                                 \
  TARGET static void dx_block_##SFX(const float *x, const float *dy, float *dx, ptrdiff_t n, ptrdiff_t c,           \
                                    ptrdiff_t hw, ptrdiff_t c0, ptrdiff_t c1, const float *mu, const float *a,     \
                                    const float *b, const float *d, int k, const float *s, const float *t) {       \
    input_gradient_block_body(x, dy, dx, n, c, hw, c0, c1, mu, a, b, d, k, s, t);                                  \
  }
BN_VARIANT(512, __attribute__((target("avx512f"))))
BN_VARIANT(avx2, __attribute__((target("avx2,fma"))))
#define HAS512() __builtin_cpu_supports("avx512f")
#define HAS2() (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
#else
#define HAS512() 0
#define HAS2() 0
#define stats_512 stats_body
#define normalize_512 normalize_body
#define sums_512 gradient_sums_body
#define dx_512 input_gradient_body
#define stats_block_512 stats_block_body
#define normalize_block_512 normalize_block_body
#define sums_block_512 gradient_sums_block_body
#define dx_block_512 input_gradient_block_body
#define stats_avx2 stats_body
#define normalize_avx2 normalize_body
#define sums_avx2 gradient_sums_body
#define dx_avx2 input_gradient_body
#define stats_block_avx2 stats_block_body
#define normalize_block_avx2 normalize_block_body
#define sums_block_avx2 gradient_sums_block_body
#define dx_block_avx2 input_gradient_block_body
#endif

void acon_bn_stats(const float *x, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, double *mean, double *variance) {
  if (HAS512()) stats_512(x, n, stride, hw, mean, variance);
  else if (HAS2()) stats_avx2(x, n, stride, hw, mean, variance);
  else stats_body(x, n, stride, hw, mean, variance);
}

void acon_bn_normalize(
    const float *x, float *y, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, float mu, float scale, float shift,
    int relu, int stream) {
  const int nt = stream && streamable(y, stride);
  if (HAS512()) normalize_512(x, y, n, stride, hw, mu, scale, shift, relu != 0, nt);
  else if (HAS2()) normalize_avx2(x, y, n, stride, hw, mu, scale, shift, relu != 0, nt);
  else if (nt) normalize_body(x, y, n, stride, hw, mu, scale, shift, relu != 0, 1);
  else normalize_body(x, y, n, stride, hw, mu, scale, shift, relu != 0, 0);
  fence_streams(nt);
}

void acon_bn_gradient_sums(
    const float *x, const float *dy, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, float mu, int relu, float scale,
    float shift, double *sum_dy, double *sum_dy_xc) {
  const Mask k = {relu != 0, scale, shift};
  if (HAS512()) sums_512(x, dy, n, stride, hw, mu, k, sum_dy, sum_dy_xc);
  else if (HAS2()) sums_avx2(x, dy, n, stride, hw, mu, k, sum_dy, sum_dy_xc);
  else gradient_sums_body(x, dy, n, stride, hw, mu, k, sum_dy, sum_dy_xc);
}

void acon_bn_input_gradient(
    const float *x, const float *dy, float *dx, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, float mu, float a, float b,
    float d, int relu, float scale, float shift, int stream) {
  const Mask k = {relu != 0, scale, shift};
  const int nt = stream && streamable(dx, stride);
  if (HAS512()) dx_512(x, dy, dx, n, stride, hw, mu, a, b, d, k, nt);
  else if (HAS2()) dx_avx2(x, dy, dx, n, stride, hw, mu, a, b, d, k, nt);
  else if (nt) input_gradient_body(x, dy, dx, n, stride, hw, mu, a, b, d, k, 1);
  else input_gradient_body(x, dy, dx, n, stride, hw, mu, a, b, d, k, 0);
  fence_streams(nt);
}

const ptrdiff_t acon_bn_block_floats = BLOCK;

// Planes below this many floats run in blocks. The per-channel loops take 1–2.7 ns an element per
// pass at 4×4 and below, the blocks 0.13–0.33 (one thread, 64 samples); from 8×8 on the two are
// even, and above it the per-channel loops are ahead.
const ptrdiff_t acon_bn_block_plane_limit = 64;

// Planes of 8×8 and up, and empty ones, run the per-channel loops, channel by channel.
#define OUTSIDE_BLOCKS(hw) ((hw) <= 0 || (hw) >= acon_bn_block_plane_limit)

void acon_bn_stats_block(
    const float *x, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw, ptrdiff_t c0, ptrdiff_t c1, double *mean, double *variance) {
  if (OUTSIDE_BLOCKS(hw)) {
    for (ptrdiff_t ch = c0; ch < c1; ch++) acon_bn_stats(x + ch * hw, n, c * hw, hw, mean + ch, variance + ch);
  } else if (HAS512()) stats_block_512(x, n, c, hw, c0, c1, mean, variance);
  else if (HAS2()) stats_block_avx2(x, n, c, hw, c0, c1, mean, variance);
  else stats_block_body(x, n, c, hw, c0, c1, mean, variance);
}

void acon_bn_normalize_block(
    const float *x, float *y, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw, ptrdiff_t c0, ptrdiff_t c1, const float *mu,
    const float *scale, const float *shift, int relu, int stream) {
  if (OUTSIDE_BLOCKS(hw)) {
    for (ptrdiff_t ch = c0; ch < c1; ch++)
      acon_bn_normalize(x + ch * hw, y + ch * hw, n, c * hw, hw, mu[ch], scale[ch], shift[ch], relu, stream);
  } else if (HAS512()) normalize_block_512(x, y, n, c, hw, c0, c1, mu, scale, shift, relu != 0);
  else if (HAS2()) normalize_block_avx2(x, y, n, c, hw, c0, c1, mu, scale, shift, relu != 0);
  else normalize_block_body(x, y, n, c, hw, c0, c1, mu, scale, shift, relu != 0);
}

void acon_bn_gradient_sums_block(
    const float *x, const float *dy, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw, ptrdiff_t c0, ptrdiff_t c1,
    const float *mu, int relu, const float *scale, const float *shift, double *sum_dy, double *sum_dy_xc) {
  if (OUTSIDE_BLOCKS(hw)) {
    for (ptrdiff_t ch = c0; ch < c1; ch++)
      acon_bn_gradient_sums(x + ch * hw, dy + ch * hw, n, c * hw, hw, mu[ch], relu, relu ? scale[ch] : 0,
                            relu ? shift[ch] : 0, sum_dy + ch, sum_dy_xc + ch);
  } else if (HAS512()) sums_block_512(x, dy, n, c, hw, c0, c1, mu, relu != 0, scale, shift, sum_dy, sum_dy_xc);
  else if (HAS2()) sums_block_avx2(x, dy, n, c, hw, c0, c1, mu, relu != 0, scale, shift, sum_dy, sum_dy_xc);
  else gradient_sums_block_body(x, dy, n, c, hw, c0, c1, mu, relu != 0, scale, shift, sum_dy, sum_dy_xc);
}

void acon_bn_input_gradient_block(
    const float *x, const float *dy, float *dx, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw, ptrdiff_t c0, ptrdiff_t c1,
    const float *mu, const float *a, const float *b, const float *d, int relu, const float *scale,
    const float *shift, int stream) {
  if (OUTSIDE_BLOCKS(hw)) {
    for (ptrdiff_t ch = c0; ch < c1; ch++)
      acon_bn_input_gradient(x + ch * hw, dy + ch * hw, dx + ch * hw, n, c * hw, hw, mu[ch], a[ch], b[ch], d[ch], relu,
                             relu ? scale[ch] : 0, relu ? shift[ch] : 0, stream);
  } else if (HAS512()) dx_block_512(x, dy, dx, n, c, hw, c0, c1, mu, a, b, d, relu != 0, scale, shift);
  else if (HAS2()) dx_block_avx2(x, dy, dx, n, c, hw, c0, c1, mu, a, b, d, relu != 0, scale, shift);
  else input_gradient_block_body(x, dy, dx, n, c, hw, c0, c1, mu, a, b, d, relu != 0, scale, shift);
}
