// DepthwiseAVX2Grouped.c: the AVX2 variant's path for 3×3, stride 1, padding 1 depthwise planes
// under 8 wide of 1, 2, 4, 8 or 16 floats (ShuffleNetV2's and TFNet's 4×4 and 2×2 stages at 32×32
// input) in registers. The padded-plane path copies each such plane into a zero border and runs
// its 8-column loops on two or four columns; here one 8-lane vector holds 8 / (h·w) consecutive
// planes of a sample, each tap is one in-register permute of it (the lanes whose input lies
// outside their own plane zeroed by a mask), and each lane carries its own channel's weight. A
// 16-float plane is two vectors: a tap's lane may read the other vector, so each half of a tap is
// two permutes and a blend. The AVX-512 variant's grouped path (DepthwiseAVX512.c) with 8 lanes.
//
// Order: an output is the bias plus the nine taps in order; dx the nine mirrored taps in order;
// dW and db sum per lane over the samples in order, then over each channel's h·w lanes in order,
// so the bits do not depend on how planes (forward) or channels (backward) are split between
// threads. They differ in the last bits from the padded path's, which sums in another order.
//
// Shapes: x, dx [n, c, h, w]; y, dy [n, c, h, w]; weight [c, 3, 3]; bias [c].
#include "DepthwiseInternal.h"

#include <stdint.h>

// Whether small planes run in groups (see dw_avx2_group_small_planes).
static int grouping = 1;

bool dw_avx2_group_small_planes(int enabled) {
  const int was = __atomic_load_n(&grouping, __ATOMIC_RELAXED);
  if (enabled >= 0) __atomic_store_n(&grouping, enabled != 0, __ATOMIC_RELAXED);
  return was != 0;
}

bool dw_avx2_grouped(const DWGeometry *g) {
  const ptrdiff_t hw = g->h * g->w;
  return __atomic_load_n(&grouping, __ATOMIC_RELAXED) && g->kh == 3 && g->kw == 3 && g->sh == 1 && g->sw == 1 &&
         g->ph == 1 && g->pw == 1 && g->m == 1 && g->w < 8 && ((hw <= 8 && 8 % hw == 0) || hw == 16);
}

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX2G __attribute__((target("avx2,fma")))
#define INLINE2 static inline __attribute__((always_inline, target("avx2,fma")))

// For tap t = 3u + v of a plane [h, w]: where lane l reads its input (lane l + (u − 1)·w + v − 1,
// or itself where the input lies outside its plane) and the mask that zeroes those lanes.
typedef struct Taps8 {
  __m256i index[9];
  __m256 mask[9];
} Taps8;

INLINE2 void taps8(const DWGeometry *g, Taps8 *gt) {
  const ptrdiff_t h = g->h, w = g->w, hw = h * w;
  for (int t = 0; t < 9; t++) {
    const ptrdiff_t du = t / 3 - 1, dv = t % 3 - 1;
    int32_t index[8], mask[8];
    for (ptrdiff_t l = 0; l < 8; l++) {
      const ptrdiff_t f = l % hw, i = f / w, j = f % w;
      const int inside = i + du >= 0 && i + du < h && j + dv >= 0 && j + dv < w;
      index[l] = (int32_t)(inside ? l + du * w + dv : l);
      mask[l] = inside ? -1 : 0;
    }
    gt->index[t] = _mm256_loadu_si256((const __m256i *)index);
    gt->mask[t] = _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)mask));
  }
}

// Tap t of the vector v: lane l gets v[index[t][l]], or 0 where its input lies outside its plane.
INLINE2 __m256 tap8(const Taps8 *gt, int t, __m256 v) {
  return _mm256_and_ps(_mm256_permutevar8x32_ps(v, gt->index[t]), gt->mask[t]);
}

// The lanes [lo, hi) as a maskload/maskstore mask.
INLINE2 __m256i lanes8(ptrdiff_t lo, ptrdiff_t hi) {
  const __m256i l = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_and_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)hi), l),
                          _mm256_cmpgt_epi32(l, _mm256_set1_epi32((int)lo - 1)));
}

// Lane l: v[(ch0 + l / hw)·stride + offset] for the group's `channels` channels, 0 past them.
INLINE2 __m256 spread8(const float *v, ptrdiff_t stride, ptrdiff_t offset, ptrdiff_t ch0, ptrdiff_t channels,
                       ptrdiff_t hw) {
  float e[8] = {0};
  for (ptrdiff_t k = 0; k < channels; k++) {
    for (ptrdiff_t r = 0; r < hw; r++) e[k * hw + r] = v[(ch0 + k) * stride + offset];
  }
  return _mm256_loadu_ps(e);
}

// For a 16-float plane [h, w] (two vectors): tap t's half q (lanes 8q..8q+7) reads position
// S = 8q + l + (u − 1)·w + v − 1 where it lies in the plane: lane S mod 8 of vector S / 8.
typedef struct Taps16 {
  __m256i index[9][2];
  __m256 high[9][2];   // all ones where the source lies in the second vector
  __m256 inside[9][2]; // all ones where the source lies in the plane
} Taps16;

INLINE2 void taps16(const DWGeometry *g, Taps16 *gt) {
  const ptrdiff_t h = g->h, w = g->w;
  for (int t = 0; t < 9; t++) {
    const ptrdiff_t du = t / 3 - 1, dv = t % 3 - 1;
    for (int q = 0; q < 2; q++) {
      int32_t index[8], high[8], inside[8];
      for (ptrdiff_t l = 0; l < 8; l++) {
        const ptrdiff_t f = 8 * q + l, i = f / w, j = f % w;
        const int in = i + du >= 0 && i + du < h && j + dv >= 0 && j + dv < w;
        const ptrdiff_t src = in ? f + du * w + dv : f;
        index[l] = (int32_t)(src % 8);
        high[l] = src >= 8 ? -1 : 0;
        inside[l] = in ? -1 : 0;
      }
      gt->index[t][q] = _mm256_loadu_si256((const __m256i *)index);
      gt->high[t][q] = _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)high));
      gt->inside[t][q] = _mm256_castsi256_ps(_mm256_loadu_si256((const __m256i *)inside));
    }
  }
}

// Half q of tap t of the plane (v0, v1).
INLINE2 __m256 tap16(const Taps16 *gt, int t, int q, __m256 v0, __m256 v1) {
  const __m256 lo = _mm256_permutevar8x32_ps(v0, gt->index[t][q]), hi = _mm256_permutevar8x32_ps(v1, gt->index[t][q]);
  return _mm256_and_ps(_mm256_blendv_ps(lo, hi, gt->high[t][q]), gt->inside[t][q]);
}

// Forward of 16-float planes [p0, p1): one plane, two vectors, at a time.
INLINE2 void forward16(const DWGeometry *g, const float *x, const float *weight, const float *bias, float *y,
                       ptrdiff_t p0, ptrdiff_t p1) {
  Taps16 gt;
  taps16(g, &gt);
  for (ptrdiff_t p = p0; p < p1; p++) {
    const ptrdiff_t ch = p % g->c;
    const __m256 x0 = _mm256_loadu_ps(x + 16 * p), x1 = _mm256_loadu_ps(x + 16 * p + 8);
    for (int q = 0; q < 2; q++) {
      __m256 a = _mm256_set1_ps(bias ? bias[ch] : 0.0f);
      for (int t = 0; t < 9; t++) a = _mm256_fmadd_ps(_mm256_set1_ps(weight[9 * ch + t]), tap16(&gt, t, q, x0, x1), a);
      _mm256_storeu_ps(y + 16 * p + 8 * q, a);
    }
  }
}

// Backward of the 16-float planes of channels [c0, c1): per channel, twenty accumulators (ten
// per half) over the samples in order, then each tap's 16 lanes in order.
INLINE2 void backward16(const DWGeometry *g, const float *x, const float *weight, const float *dy, float *dx,
                        float *dweight, float *dbias, ptrdiff_t c0, ptrdiff_t c1) {
  Taps16 gt;
  taps16(g, &gt);
  for (ptrdiff_t ch = c0; ch < c1; ch++) {
    __m256 wv[9], acc[10][2];
    for (int t = 0; t < 9; t++) wv[t] = _mm256_set1_ps(weight[9 * ch + t]);
    for (int t = 0; t < 10; t++) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    for (ptrdiff_t sn = 0; sn < g->n; sn++) {
      const ptrdiff_t base = (sn * g->c + ch) * 16;
      const __m256 x0 = _mm256_loadu_ps(x + base), x1 = _mm256_loadu_ps(x + base + 8);
      const __m256 d0 = _mm256_loadu_ps(dy + base), d1 = _mm256_loadu_ps(dy + base + 8);
      for (int q = 0; q < 2; q++) {
        const __m256 d = q ? d1 : d0;
        for (int t = 0; t < 9; t++) acc[t][q] = _mm256_fmadd_ps(d, tap16(&gt, t, q, x0, x1), acc[t][q]);
        acc[9][q] = _mm256_add_ps(acc[9][q], d);
      }
      if (!dx) continue;
      for (int q = 0; q < 2; q++) {
        __m256 gx = _mm256_setzero_ps();
        for (int t = 0; t < 9; t++) gx = _mm256_fmadd_ps(wv[t], tap16(&gt, 8 - t, q, d0, d1), gx);
        _mm256_storeu_ps(dx + base + 8 * q, gx);
      }
    }
    for (int t = 0; t < 10; t++) {
      float lanes[16];
      _mm256_storeu_ps(lanes, acc[t][0]);
      _mm256_storeu_ps(lanes + 8, acc[t][1]);
      float s = 0;
      for (int r = 0; r < 16; r++) s += lanes[r];
      if (t < 9)
        dweight[9 * ch + t] += s;
      else if (dbias)
        dbias[ch] += s;
    }
  }
}

AVX2G void dw_avx2_forward_grouped(const DWGeometry *g, const float *x, const float *weight, const float *bias,
                                   float *y, ptrdiff_t p0, ptrdiff_t p1) {
  // x [n, c, h, w] → y planes [p0, p1) of [n, c, h, w]; channel groups outer (weights spread once
  // a group), samples inner
  const ptrdiff_t c = g->c, hw = g->h * g->w, per = 8 / hw;
  if (hw == 16) {
    forward16(g, x, weight, bias, y, p0, p1);
    return;
  }
  Taps8 gt;
  taps8(g, &gt);
  const ptrdiff_t s0 = p0 / c, s1 = (p1 + c - 1) / c;
  // within one sample, only the groups the range touches
  const ptrdiff_t first = s1 - s0 == 1 ? (p0 - s0 * c) / per * per : 0, last = s1 - s0 == 1 ? p1 - s0 * c : c;
  for (ptrdiff_t ch = first; ch < last; ch += per) {
    const ptrdiff_t k = per < c - ch ? per : c - ch;
    __m256 wv[9];
    for (int t = 0; t < 9; t++) wv[t] = spread8(weight, 9, t, ch, k, hw);
    const __m256 b = bias ? spread8(bias, 1, 0, ch, k, hw) : _mm256_setzero_ps();
    for (ptrdiff_t sn = s0; sn < s1; sn++) {
      // this group's planes of sample sn that lie in [p0, p1)
      const ptrdiff_t base = sn * c + ch, lo = base > p0 ? base : p0, hi = base + k < p1 ? base + k : p1;
      if (lo >= hi) continue;
      const __m256i lanes = lanes8((lo - base) * hw, (hi - base) * hw);
      const __m256 xv = _mm256_maskload_ps(x + base * hw, lanes);
      __m256 a = b;
      for (int t = 0; t < 9; t++) a = _mm256_fmadd_ps(wv[t], tap8(&gt, t, xv), a);
      _mm256_maskstore_ps(y + base * hw, lanes, a);
    }
  }
}

AVX2G void dw_avx2_backward_grouped(const DWGeometry *g, const float *x, const float *weight, const float *dy,
                                    float *dx, float *dweight, float *dbias, ptrdiff_t c0, ptrdiff_t c1) {
  // channels [c0, c1): dweight [c, 9] and dbias [c] (+)=, dx [n, c, h, w] (unless NULL) =;
  // groups outer, the ten accumulators (taps, then bias) in registers over the whole batch
  const ptrdiff_t c = g->c, hw = g->h * g->w, per = 8 / hw;
  if (hw == 16) {
    backward16(g, x, weight, dy, dx, dweight, dbias, c0, c1);
    return;
  }
  Taps8 gt;
  taps8(g, &gt);
  for (ptrdiff_t ch = c0; ch < c1; ch += per) {
    const ptrdiff_t k = per < c1 - ch ? per : c1 - ch;
    const __m256i lanes = lanes8(0, k * hw);
    __m256 wv[9], acc[10];
    for (int t = 0; t < 9; t++) wv[t] = spread8(weight, 9, t, ch, k, hw);
    for (int t = 0; t < 10; t++) acc[t] = _mm256_setzero_ps();
    for (ptrdiff_t sn = 0; sn < g->n; sn++) {
      const ptrdiff_t base = (sn * c + ch) * hw;
      const __m256 xv = _mm256_maskload_ps(x + base, lanes), d = _mm256_maskload_ps(dy + base, lanes);
      for (int t = 0; t < 9; t++) acc[t] = _mm256_fmadd_ps(d, tap8(&gt, t, xv), acc[t]);
      acc[9] = _mm256_add_ps(acc[9], d);
      if (!dx) continue;
      // dx[f] = Σ_t w[t]·dy[f − off[t]]: tap 8 − t of dy, whose lanes are the outputs that read f
      __m256 gx = _mm256_setzero_ps();
      for (int t = 0; t < 9; t++) gx = _mm256_fmadd_ps(wv[t], tap8(&gt, 8 - t, d), gx);
      _mm256_maskstore_ps(dx + base, lanes, gx);
    }
    float sums[10][8];
    for (int t = 0; t < 10; t++) _mm256_storeu_ps(sums[t], acc[t]);
    for (ptrdiff_t j = 0; j < k; j++) {
      for (int t = 0; t < 10; t++) {
        float s = 0;
        for (ptrdiff_t r = 0; r < hw; r++) s += sums[t][j * hw + r];
        if (t < 9)
          dweight[(ch + j) * 9 + t] += s;
        else if (dbias)
          dbias[ch + j] += s;
      }
    }
  }
}
#endif
