// PoolKernels: MaxPool2D's forward loop (CLayerKernels.h). The zoo's max-pool (3×3, stride 2,
// padding 1) runs 16 output columns of an output row per AVX-512 vector where the CPU has it:
// each input row is two masked loads per 32 columns, and its three column taps (x[2j − 1],
// x[2j], x[2j + 1] for output column j) three permutes, each feeding a select of the value and
// its offset in every lane (taken where the lane has not started, or the tap is greater, or a
// NaN), in the window's row-major order: the same values and argmax as the scalar loop. Where the
// CPU has AVX2 but not AVX-512, the same loop runs 8 columns a vector. On small even planes
// (output rows 2, 4 or 8k wide) both give way to two passes of full vectors, columns then rows,
// which fill every lane whatever the width (on AVX-512 CPUs where a row fills half its lanes or
// fewer). Any other
// pool runs one window at a time; there the cost of a plain loop is the branch on each
// comparison, mispredicted about a third of the time, so the select runs in SSE registers
// instead (and-andnot-or on lane 0), which no compiler turns back into a branch.
//
// Shapes: x [planes, h, w]; y, argmax [planes, oh, ow].
#include "CLayerKernels.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__)
#include <immintrin.h>
#endif

static ptrdiff_t max_p(ptrdiff_t a, ptrdiff_t b) { return a > b ? a : b; }
static ptrdiff_t min_p(ptrdiff_t a, ptrdiff_t b) { return a < b ? a : b; }

// A window's winner so far, and `offer`: take `val` at offset `at` if it is greater or NaN.
#if defined(__SSE2__)
// Lane 0 of xmm registers: the value, its offset, and the masks of the select, so the compiler
// has no scalar select to turn back into a branch.
typedef struct {
  __m128 v;
  __m128i at;
} Best;
static inline Best start(float val, ptrdiff_t at) { return (Best){_mm_set_ss(val), _mm_cvtsi32_si128((int)at)}; }
static inline Best offer(Best b, float val, ptrdiff_t at) {
  const __m128 nv = _mm_set_ss(val);
  const __m128 take = _mm_or_ps(_mm_cmplt_ss(b.v, nv), _mm_cmpunord_ss(nv, nv));
  const __m128i t = _mm_castps_si128(take);
  return (Best){_mm_or_ps(_mm_and_ps(take, nv), _mm_andnot_ps(take, b.v)),
                _mm_or_si128(_mm_and_si128(t, _mm_cvtsi32_si128((int)at)), _mm_andnot_si128(t, b.at))};
}
static inline float value(Best b) { return _mm_cvtss_f32(b.v); }
static inline int offset(Best b) { return _mm_cvtsi128_si32(b.at); }
#else
typedef struct {
  float v;
  ptrdiff_t at;
} Best;
static inline Best start(float val, ptrdiff_t at) { return (Best){val, at}; }
static inline Best offer(Best b, float val, ptrdiff_t at) {
  const int take = (val > b.v) | (val != val);
  return (Best){__builtin_unpredictable(take) ? val : b.v, __builtin_unpredictable(take) ? at : b.at};
}
static inline float value(Best b) { return b.v; }
static inline int offset(Best b) { return (int)b.at; }
#endif

#if defined(__x86_64__)
#define POOL512 static __attribute__((target("avx512f")))
#define POOL512_INLINE static inline __attribute__((always_inline, target("avx512f")))

// The lanes [0, n) of a 16-lane mask (n clamped to 0...16).
static inline __mmask16 lanes(ptrdiff_t n) {
  return n <= 0 ? 0 : n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
}

// One input row r of a plane [h, w] offered to the windows of 16 output columns j0 … j0 + 15 of
// one output row, lane l = column j = j0 + l: taps x[r][2j − 1] (not for j = 0: padding),
// x[r][2j], x[r][2j + 1] (where 2j + 1 < w), in that order; best, at, started: each lane's winner
// so far, its offset, whether it has one.
POOL512_INLINE void offer_row(const float *xp, ptrdiff_t r, ptrdiff_t w, ptrdiff_t j0, const __mmask16 valid[3],
                              __m512 *best, __m512i *at, __mmask16 *started) {
  const float *row = xp + r * w, *from = row + 2 * j0;
  const __m512 lo = _mm512_maskz_loadu_ps(lanes(w - 2 * j0), from);
  const __m512 hi = w - 2 * j0 > 16 ? _mm512_maskz_loadu_ps(lanes(w - 2 * j0 - 16), from + 16) : _mm512_setzero_ps();
  const __m512i left = _mm512_setr_epi32(0, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29);
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  __m512 first = _mm512_permutex2var_ps(lo, left, hi);
  // Lane 0's left tap x[2·j0 − 1] lies before this chunk's loads (for j0 > 0).
  if (j0 > 0) first = _mm512_mask_mov_ps(first, 1, _mm512_set1_ps(from[-1]));
  const __m512 taps[3] = {first, _mm512_permutex2var_ps(lo, even, hi), _mm512_permutex2var_ps(lo, odd, hi)};
  // Offset of tap v in lane l: r·w + 2(j0 + l) + v − 1.
  const __m512i base = _mm512_add_epi32(even, _mm512_set1_epi32((int)(r * w + 2 * j0 - 1)));
  for (int v = 0; v < 3; v++) {
    const __m512 t = taps[v];
    const __mmask16 greater = _mm512_cmp_ps_mask(*best, t, _CMP_LT_OQ), isnan = _mm512_cmp_ps_mask(t, t, _CMP_UNORD_Q);
    const __mmask16 take = valid[v] & (__mmask16)(~*started | greater | isnan);
    *best = _mm512_mask_mov_ps(*best, take, t);
    *at = _mm512_mask_mov_epi32(*at, take, _mm512_add_epi32(base, _mm512_set1_epi32(v)));
    *started |= valid[v];
  }
}

// The lanes of the chunk of 16 output columns from j0 (of ow) whose taps lie in the image: column
// 2j − 1 for j ≥ 1, 2j always, 2j + 1 below w; out: the chunk's columns.
POOL512_INLINE __mmask16 chunk_masks(ptrdiff_t w, ptrdiff_t ow, ptrdiff_t j0, __mmask16 valid[3]) {
  const __mmask16 out = lanes(ow - j0);
  valid[0] = (__mmask16)(j0 > 0 ? out : out & ~1u);
  valid[1] = out;
  valid[2] = (__mmask16)(out & lanes(w / 2 - j0));
  return out;
}

// Output row i, columns j0 … j0 + 15 (lanes `out`) of one plane: its windows' rows 2i − 1, 2i,
// 2i + 1 (those inside the plane) offered in order.
POOL512_INLINE void pool_chunk(const float *xp, float *yp, int *ap, ptrdiff_t h, ptrdiff_t w, ptrdiff_t ow,
                               ptrdiff_t i, ptrdiff_t j0, __mmask16 out, const __mmask16 valid[3]) {
  __m512 best = _mm512_set1_ps(-__builtin_inff());
  __m512i at = _mm512_set1_epi32(-1);
  __mmask16 started = 0;
  for (ptrdiff_t r = 2 * i - 1; r <= 2 * i + 1; r++)
    if (r >= 0 && r < h) offer_row(xp, r, w, j0, valid, &best, &at, &started);
  _mm512_mask_storeu_ps(yp + i * ow + j0, out, best);
  _mm512_mask_storeu_epi32(ap + i * ow + j0, out, at);
}

// 3×3, stride 2, padding 1 over planes [p0, p1) of any width: 16 output columns of one output row
// per vector. Planes up to 32 wide (one chunk a row) take their masks once per call; wider ones
// run row by row, chunk by chunk, so that each input row is read left to right.
POOL512 void maxpool_3s2p1_512(const float *x, float *y, int *argmax, ptrdiff_t p0, ptrdiff_t p1, ptrdiff_t h,
                               ptrdiff_t w, ptrdiff_t oh, ptrdiff_t ow) {
  // x [planes, h, w] → y, argmax [planes, oh, ow]
  __mmask16 valid[3];
  if (ow <= 16) {
    const __mmask16 out = chunk_masks(w, ow, 0, valid);
    for (ptrdiff_t pl = p0; pl < p1; pl++)
      for (ptrdiff_t i = 0; i < oh; i++)
        pool_chunk(x + pl * h * w, y + pl * oh * ow, argmax + pl * oh * ow, h, w, ow, i, 0, out, valid);
    return;
  }
  for (ptrdiff_t pl = p0; pl < p1; pl++) {
    for (ptrdiff_t i = 0; i < oh; i++) {
      for (ptrdiff_t j0 = 0; j0 < ow; j0 += 16) {
        const __mmask16 out = chunk_masks(w, ow, j0, valid);
        pool_chunk(x + pl * h * w, y + pl * oh * ow, argmax + pl * oh * ow, h, w, ow, i, j0, out, valid);
      }
    }
  }
}

#define POOL2 static __attribute__((target("avx2")))
#define POOL2_INLINE static inline __attribute__((always_inline, target("avx2")))

// The AVX2 twin of the AVX-512 loop above, 8 output columns a vector: lane masks are vectors of
// all-ones lanes, and the taps come from two loads of 8 columns by shuffles within 128-bit lanes
// and a 64-bit permute. The same tap order and select: the same values and argmax.

// The lanes [0, n) of 8 (n clamped to 0...8), as all-ones lanes.
POOL2_INLINE __m256i lanes8(ptrdiff_t n) {
  const int k = n <= 0 ? 0 : n >= 8 ? 8 : (int)n;
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// As offer_row, for 8 output columns j0 … j0 + 7.
POOL2_INLINE void offer_row8(const float *xp, ptrdiff_t r, ptrdiff_t w, ptrdiff_t j0, const __m256i valid[3],
                             __m256 *best, __m256i *at, __m256i *started) {
  const float *from = xp + r * w + 2 * j0;
  const ptrdiff_t rest = w - 2 * j0;  // ≥ 1: column 2·j0 is in the plane
  const __m256 lo = rest >= 8 ? _mm256_loadu_ps(from) : _mm256_maskload_ps(from, lanes8(rest));
  const __m256 hi = rest >= 16 ? _mm256_loadu_ps(from + 8)
                    : rest > 8 ? _mm256_maskload_ps(from + 8, lanes8(rest - 8))
                               : _mm256_setzero_ps();
  // Within 128-bit lanes: lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6 (and the odd columns); then pairs
  // 0, 2, 1, 3: lo0 lo2 lo4 lo6 hi0 hi2 hi4 hi6, column 2(j0 + l) in lane l.
  const __m256 e = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
  const __m256 o = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
  const __m256 even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0)));
  const __m256 odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), _MM_SHUFFLE(3, 1, 2, 0)));
  // Column 2(j0 + l) − 1: the odd column of lane l − 1; lane 0's, x[2·j0 − 1], lies before the
  // loads (for j0 > 0; at j0 = 0 it is padding, and lane 0's valid[0] is off).
  __m256 left = _mm256_permutevar8x32_ps(odd, _mm256_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6));
  if (j0 > 0) left = _mm256_blend_ps(left, _mm256_set1_ps(from[-1]), 1);
  const __m256 taps[3] = {left, even, odd};
  // Offset of tap v in lane l: r·w + 2(j0 + l) + v − 1.
  const __m256i base = _mm256_add_epi32(_mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14),
                                        _mm256_set1_epi32((int)(r * w + 2 * j0 - 1)));
  const __m256i ones = _mm256_set1_epi32(-1);
  for (int v = 0; v < 3; v++) {
    const __m256 t = taps[v];
    const __m256i greater = _mm256_castps_si256(_mm256_cmp_ps(*best, t, _CMP_LT_OQ));
    const __m256i isnan = _mm256_castps_si256(_mm256_cmp_ps(t, t, _CMP_UNORD_Q));
    const __m256i take =
        _mm256_and_si256(valid[v], _mm256_or_si256(_mm256_xor_si256(*started, ones), _mm256_or_si256(greater, isnan)));
    const __m256 tf = _mm256_castsi256_ps(take);
    *best = _mm256_blendv_ps(*best, t, tf);
    *at = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(*at),
                                               _mm256_castsi256_ps(_mm256_add_epi32(base, _mm256_set1_epi32(v))), tf));
    *started = _mm256_or_si256(*started, valid[v]);
  }
}

// 3×3, stride 2, padding 1 over planes [p0, p1): 8 output columns of one output row per vector,
// row by row, chunk by chunk (as chunk_masks and pool_chunk above).
POOL2 void maxpool_3s2p1_avx2(const float *x, float *y, int *argmax, ptrdiff_t p0, ptrdiff_t p1, ptrdiff_t h,
                              ptrdiff_t w, ptrdiff_t oh, ptrdiff_t ow) {
  // x [planes, h, w] → y, argmax [planes, oh, ow]
  for (ptrdiff_t pl = p0; pl < p1; pl++) {
    const float *xp = x + pl * h * w;
    float *yp = y + pl * oh * ow;
    int *ap = argmax + pl * oh * ow;
    for (ptrdiff_t i = 0; i < oh; i++) {
      for (ptrdiff_t j0 = 0; j0 < ow; j0 += 8) {
        const __m256i out = lanes8(ow - j0);
        // The taps inside the plane: column 2j − 1 for j ≥ 1, 2j always, 2j + 1 below w.
        const __m256i valid[3] = {j0 > 0 ? out : _mm256_andnot_si256(lanes8(1), out), out,
                                  _mm256_and_si256(out, lanes8(w / 2 - j0))};
        __m256 best = _mm256_set1_ps(-__builtin_inff());
        __m256i at = _mm256_set1_epi32(-1), started = _mm256_setzero_si256();
        for (ptrdiff_t r = 2 * i - 1; r <= 2 * i + 1; r++)
          if (r >= 0 && r < h) offer_row8(xp, r, w, j0, valid, &best, &at, &started);
        if (ow - j0 >= 8) {  // a masked store costs several times a plain one on some CPUs (Zen 1)
          _mm256_storeu_ps(yp + i * ow + j0, best);
          _mm256_storeu_si256((__m256i *)(ap + i * ow + j0), at);
        } else {
          _mm256_maskstore_ps(yp + i * ow + j0, out, best);
          _mm256_maskstore_epi32(ap + i * ow + j0, out, at);
        }
      }
    }
  }
}

// The 3×3/2/1 max-pool in two passes over each plane, every vector full whatever the width: for
// planes of even h and w whose output rows (ow = w/2 columns) are 2, 4 or a multiple of 8 wide,
// and whose column pass fits its scratch.
//   Columns: hx[r][j], ha[r][j] = the best of x[r][2j − 1] (not for j = 0), x[r][2j], x[r][2j + 1]
//   and its offset, for every input row r: flat over the plane, q = r·ow + j, the taps are
//   x[2q − 1], x[2q], x[2q + 1], so 8 consecutive q are 16 consecutive floats whatever ow is.
//   Rows: y[i][j] = the best of hx[2i − 1][j] (not for i = 0), hx[2i][j], hx[2i + 1][j].
// Each row's first maximum, then the first row whose maximum is the window's, is the window's
// first maximum in row-major order; a NaN, taken wherever it comes, ends as the last NaN in that
// order: the same values and argmax as the loops above.
enum { SEPARABLE_SCRATCH = 2048 };  // floats of hx (and ints of ha) for one plane: h·ow at most

static int separable_fits(ptrdiff_t h, ptrdiff_t w) {
  const ptrdiff_t ow = w / 2;
  return h % 2 == 0 && w % 2 == 0 && h * ow <= SEPARABLE_SCRATCH &&
         ((ow % 8 == 0 && ow > 0) || ow == 4 || (ow == 2 && h % 4 == 0));
}

// best, at ← t, ta in the lanes where t is greater or NaN.
POOL2_INLINE void take8(__m256 *best, __m256i *at, __m256 t, __m256i ta) {
  const __m256 m = _mm256_or_ps(_mm256_cmp_ps(*best, t, _CMP_LT_OQ), _mm256_cmp_ps(t, t, _CMP_UNORD_Q));
  *best = _mm256_blendv_ps(*best, t, m);
  *at = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(*at), _mm256_castsi256_ps(ta), m));
}
POOL2_INLINE void take4(__m128 *best, __m128i *at, __m128 t, __m128i ta) {
  const __m128 m = _mm_or_ps(_mm_cmplt_ps(*best, t), _mm_cmpunord_ps(t, t));
  *best = _mm_blendv_ps(*best, t, m);
  *at = _mm_castps_si128(_mm_blendv_ps(_mm_castsi128_ps(*at), _mm_castsi128_ps(ta), m));
}

// The column pass over one plane: x [h, w] → hx, ha [h, ow], h·ow a multiple of 8.
POOL2_INLINE void separable_columns(const float *xp, float *hx, int *ha, ptrdiff_t h, ptrdiff_t ow) {
  // Lanes whose column 2j − 1 is in the plane (j = q mod ow ≠ 0): for ow = 2 or 4 the same in
  // every vector; for ow ≥ 8 all but lane 0 of a vector that starts a row.
  const __m256 inner = _mm256_castsi256_ps(
      ow == 2 ? _mm256_setr_epi32(0, -1, 0, -1, 0, -1, 0, -1)
      : ow == 4 ? _mm256_setr_epi32(0, -1, -1, -1, 0, -1, -1, -1) : _mm256_setr_epi32(0, -1, -1, -1, -1, -1, -1, -1));
  const __m256 all = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  const __m256i lane2 = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14), one = _mm256_set1_epi32(1);
  ptrdiff_t j0 = 0;  // q0 mod ow, for ow ≥ 8
  for (ptrdiff_t q0 = 0; q0 < h * ow; q0 += 8) {
    const float *from = xp + 2 * q0;
    const __m256 lo = _mm256_loadu_ps(from), hi = _mm256_loadu_ps(from + 8);
    // lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6 (and the odd columns), then pairs 0, 2, 1, 3.
    const __m256 e = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
    const __m256 o = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
    const __m256 even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0)));
    const __m256 odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), _MM_SHUFFLE(3, 1, 2, 0)));
    // Column 2q − 1 is lane l − 1's odd column; lane 0's, x[2·q0 − 1], lies before the loads.
    __m256 left = _mm256_permutevar8x32_ps(odd, _mm256_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6));
    __m256 hasLeft = inner;
    if (ow >= 8) {
      if (j0 != 0) {
        left = _mm256_blend_ps(left, _mm256_set1_ps(from[-1]), 1);
        hasLeft = all;
      }
      j0 = j0 + 8 == ow ? 0 : j0 + 8;
    }
    const __m256i atEven = _mm256_add_epi32(lane2, _mm256_set1_epi32((int)(2 * q0)));
    // Start from the left tap where it is in the plane, else from the middle one (offered again:
    // taken or not, the same value and offset).
    __m256 best = _mm256_blendv_ps(even, left, hasLeft);
    __m256i at = _mm256_castps_si256(_mm256_blendv_ps(
        _mm256_castsi256_ps(atEven), _mm256_castsi256_ps(_mm256_sub_epi32(atEven, one)), hasLeft));
    take8(&best, &at, even, atEven);
    take8(&best, &at, odd, _mm256_add_epi32(atEven, one));
    _mm256_store_ps(hx + q0, best);
    _mm256_store_si256((__m256i *)(ha + q0), at);
  }
}

// 3×3, stride 2, padding 1 over planes [p0, p1) that separable_fits: the column pass into
// scratch, then the row pass, plane by plane.
POOL2 void maxpool_3s2p1_separable(const float *x, float *y, int *argmax, ptrdiff_t p0, ptrdiff_t p1, ptrdiff_t h,
                                   ptrdiff_t w, ptrdiff_t oh, ptrdiff_t ow) {
  // x [planes, h, w] → hx, ha [h, ow] (per plane) → y, argmax [planes, oh, ow]; oh = h/2, ow = w/2
  _Alignas(32) float hx[SEPARABLE_SCRATCH];
  _Alignas(32) int ha[SEPARABLE_SCRATCH];
  for (ptrdiff_t pl = p0; pl < p1; pl++) {
    separable_columns(x + pl * h * w, hx, ha, h, ow);
    float *yp = y + pl * oh * ow;
    int *ap = argmax + pl * oh * ow;
    if (ow == 2) {
      // Two output rows a vector: A = hx rows 2i, 2i + 1, B = rows 2i + 2, 2i + 3 (two columns
      // each); rows 2i and 2i + 2 are the middle taps, 2i + 1 and 2i + 3 the lower, and the upper
      // ones (2i − 1, 2i + 1) the previous lower's second half and this lower's first.
      __m128 prevLo = _mm_setzero_ps();
      __m128i prevLoAt = _mm_setzero_si128();
      for (ptrdiff_t i = 0; i < oh; i += 2) {
        const __m128 a = _mm_load_ps(hx + 4 * i), b = _mm_load_ps(hx + 4 * i + 4);
        const __m128 aa = _mm_castsi128_ps(_mm_load_si128((const __m128i *)(ha + 4 * i)));
        const __m128 ba = _mm_castsi128_ps(_mm_load_si128((const __m128i *)(ha + 4 * i + 4)));
        const __m128 mid = _mm_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0)), low = _mm_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2));
        const __m128i midAt = _mm_castps_si128(_mm_shuffle_ps(aa, ba, _MM_SHUFFLE(1, 0, 1, 0)));
        const __m128i lowAt = _mm_castps_si128(_mm_shuffle_ps(aa, ba, _MM_SHUFFLE(3, 2, 3, 2)));
        __m128 best = _mm_shuffle_ps(prevLo, low, _MM_SHUFFLE(1, 0, 3, 2));
        __m128i at = _mm_castps_si128(_mm_shuffle_ps(_mm_castsi128_ps(prevLoAt), _mm_castsi128_ps(lowAt),
                                                     _MM_SHUFFLE(1, 0, 3, 2)));
        if (i == 0) {  // row −1 is padding: start output row 0 from its middle tap
          best = _mm_blend_ps(best, mid, 3);
          at = _mm_castps_si128(_mm_blend_ps(_mm_castsi128_ps(at), _mm_castsi128_ps(midAt), 3));
        }
        take4(&best, &at, mid, midAt);
        take4(&best, &at, low, lowAt);
        _mm_storeu_ps(yp + 2 * i, best);
        _mm_storeu_si128((__m128i *)(ap + 2 * i), at);
        prevLo = low;
        prevLoAt = lowAt;
      }
    } else if (ow == 4) {
      for (ptrdiff_t i = 0; i < oh; i++) {
        const float *mid = hx + 2 * i * 4;
        const int *midAt = ha + 2 * i * 4;
        __m128 best = _mm_load_ps(i == 0 ? mid : mid - 4);
        __m128i at = _mm_load_si128((const __m128i *)(i == 0 ? midAt : midAt - 4));
        take4(&best, &at, _mm_load_ps(mid), _mm_load_si128((const __m128i *)midAt));
        take4(&best, &at, _mm_load_ps(mid + 4), _mm_load_si128((const __m128i *)(midAt + 4)));
        _mm_storeu_ps(yp + 4 * i, best);
        _mm_storeu_si128((__m128i *)(ap + 4 * i), at);
      }
    } else {
      for (ptrdiff_t i = 0; i < oh; i++) {
        const float *mid = hx + 2 * i * ow;
        const int *midAt = ha + 2 * i * ow;
        for (ptrdiff_t j = 0; j < ow; j += 8) {
          __m256 best = _mm256_load_ps(i == 0 ? mid + j : mid - ow + j);
          __m256i at = _mm256_load_si256((const __m256i *)(i == 0 ? midAt + j : midAt - ow + j));
          take8(&best, &at, _mm256_load_ps(mid + j), _mm256_load_si256((const __m256i *)(midAt + j)));
          take8(&best, &at, _mm256_load_ps(mid + ow + j), _mm256_load_si256((const __m256i *)(midAt + ow + j)));
          _mm256_storeu_ps(yp + i * ow + j, best);
          _mm256_storeu_si256((__m256i *)(ap + i * ow + j), at);
        }
      }
    }
  }
}
#endif

void acon_maxpool_forward(
    const float *x, float *y, int *argmax, ptrdiff_t p0, ptrdiff_t p1, ptrdiff_t h, ptrdiff_t w, ptrdiff_t oh,
    ptrdiff_t ow, ptrdiff_t k, ptrdiff_t s, ptrdiff_t p) {
#if defined(__x86_64__)
  // The two-pass loop where its vectors are full and the AVX-512 one would fill half its lanes
  // or fewer (on an AVX2 CPU, wherever it applies).
  const int avx512 = __builtin_cpu_supports("avx512f");
  if (k == 3 && s == 2 && p == 1 && separable_fits(h, w) && (!avx512 || ow <= 8) && __builtin_cpu_supports("avx2")) {
    maxpool_3s2p1_separable(x, y, argmax, p0, p1, h, w, oh, ow);
    return;
  }
  if (k == 3 && s == 2 && p == 1 && avx512) {
    maxpool_3s2p1_512(x, y, argmax, p0, p1, h, w, oh, ow);
    return;
  }
  if (k == 3 && s == 2 && p == 1 && __builtin_cpu_supports("avx2")) {
    maxpool_3s2p1_avx2(x, y, argmax, p0, p1, h, w, oh, ow);
    return;
  }
#endif
  for (ptrdiff_t pl = p0; pl < p1; pl++) {
    const float *xp = x + pl * h * w;
    float *yp = y + pl * oh * ow;
    int *ap = argmax + pl * oh * ow;
    for (ptrdiff_t i = 0; i < oh; i++) {
      // The window's rows and columns inside the image: u in [u0, u1), v in [v0, v1).
      const ptrdiff_t r0 = i * s - p, u0 = max_p(0, -r0), u1 = min_p(k, h - r0);
      for (ptrdiff_t j = 0; j < ow; j++) {
        const ptrdiff_t c0 = j * s - p, v0 = max_p(0, -c0), v1 = min_p(k, w - c0);
        if (u0 >= u1 || v0 >= v1) {  // no in-image element (PyTorch's shape rules exclude it)
          yp[i * ow + j] = -__builtin_inff();
          ap[i * ow + j] = -1;
          continue;
        }
        const ptrdiff_t first = (r0 + u0) * w + c0 + v0;
        Best b = start(xp[first], first);
        for (ptrdiff_t u = u0; u < u1; u++) {
          const ptrdiff_t row = (r0 + u) * w + c0;
          for (ptrdiff_t v = (u == u0 ? v0 + 1 : v0); v < v1; v++) b = offer(b, xp[row + v], row + v);
        }
        yp[i * ow + j] = value(b);
        ap[i * ow + j] = offset(b);
      }
    }
  }
}
