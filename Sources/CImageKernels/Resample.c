// Resample: the two passes of PIL's antialiased bilinear resize on 8-bit RGB (see
// CImageKernels.h), in 22-bit fixed point exactly as PIL rounds, vectorised with AVX2 when the CPU
// has it (a portable loop otherwise; both give the same bytes, the tests compare them with the
// Swift reference in ImageData's Resampler).
#include "CImageKernels.h"

#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define PRECISION_BITS 22
#define INLINE static inline __attribute__((always_inline))

INLINE uint8_t clip8(int32_t v) {
  int32_t s = v >> PRECISION_BITS;
  return s < 0 ? 0 : s > 255 ? 255 : (uint8_t)s;
}

// The three bytes of a pixel as the low 24 bits of a word (two loads: never past the pixel).
INLINE uint32_t load3(const uint8_t *p) {
  uint16_t lo;
  memcpy(&lo, p, 2);
  return (uint32_t)lo | (uint32_t)p[2] << 16;
}

static void horizontal_generic(const uint8_t *src, ptrdiff_t srcStride, int rows, int outW, const int32_t *k, int kSize,
                               const intptr_t *bounds, uint8_t *dst) {
  const int32_t half = 1 << (PRECISION_BITS - 1);
  for (int r = 0; r < rows; r++) {
    const uint8_t *srow = src + r * srcStride;
    uint8_t *drow = dst + (ptrdiff_t)r * outW * 3;
    for (int o = 0; o < outW; o++) {
      const uint8_t *p = srow + bounds[2 * o] * 3;
      const int32_t *kk = k + (ptrdiff_t)o * kSize;
      int32_t s0 = half, s1 = half, s2 = half;
      for (intptr_t i = 0; i < bounds[2 * o + 1]; i++, p += 3) {
        s0 += p[0] * kk[i];
        s1 += p[1] * kk[i];
        s2 += p[2] * kk[i];
      }
      drow[3 * o] = clip8(s0);
      drow[3 * o + 1] = clip8(s1);
      drow[3 * o + 2] = clip8(s2);
    }
  }
}

// Output columns per block of the vertical pass (the accumulators stay in registers or L1).
enum { kBlock = 128 };

#define VERTICAL_BODY                                                                         \
  const int32_t half = 1 << (PRECISION_BITS - 1);                                             \
  for (int o = 0; o < outH; o++) {                                                            \
    const uint8_t *base = src + (bounds[2 * o] - firstRow) * srcStride;                       \
    const intptr_t n = bounds[2 * o + 1];                                                     \
    const int32_t *kk = k + (ptrdiff_t)o * kSize;                                             \
    uint8_t *drow = dst + (ptrdiff_t)o * rowBytes;                                            \
    for (int c0 = 0; c0 < rowBytes; c0 += kBlock) {                                           \
      const int m = rowBytes - c0 < kBlock ? rowBytes - c0 : kBlock;                          \
      int32_t acc[kBlock];                                                                    \
      for (int j = 0; j < kBlock; j++) acc[j] = half;                                         \
      for (intptr_t i = 0; i < n; i++) {                                                      \
        const uint8_t *row = base + i * srcStride + c0;                                       \
        const int32_t w = kk[i];                                                              \
        if (m == kBlock) {                                                                    \
          for (int j = 0; j < kBlock; j++) acc[j] += row[j] * w;                              \
        } else {                                                                              \
          for (int j = 0; j < m; j++) acc[j] += row[j] * w;                                   \
        }                                                                                     \
      }                                                                                       \
      for (int j = 0; j < m; j++) {                                                           \
        int32_t s = acc[j] >> PRECISION_BITS;                                                 \
        drow[c0 + j] = (uint8_t)(s < 0 ? 0 : s > 255 ? 255 : s);                              \
      }                                                                                       \
    }                                                                                         \
  }

static void vertical_generic(const uint8_t *src, ptrdiff_t srcStride, intptr_t firstRow, int rowBytes, int outH,
                             const int32_t *k, int kSize, const intptr_t *bounds, uint8_t *dst) {
  VERTICAL_BODY
}

#if defined(__x86_64__)
#define AVX2 __attribute__((target("avx2")))
#undef INLINE
#define INLINE static inline __attribute__((always_inline))

// A pixel pair (the same column of two rows) as 8 int32: R, G, B and one byte of the next pixel
// (its weight is multiplied in but never stored: lane 3 of each half is dropped at the end).
#define PAIR(p, stride)                                                                                   \
  _mm256_cvtepu8_epi32(_mm_unpacklo_epi32(_mm_cvtsi32_si128(load4(p)), _mm_cvtsi32_si128(load4((p) + (stride)))))

// Two rows' 16 bytes from p: row r in the low 128-bit lane, row r+1 in the high one.
#define LOAD2(p, stride) \
  _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(p))), \
                          _mm_loadu_si128((const __m128i *)((p) + (stride))), 1)

// Tap i's pixel (bytes 3i, 3i+1, 3i+2 of each lane) zero-extended to int32 R, G, B, 0 (-1: zero).
#define T(i) 3 * i, -1, -1, -1, 3 * i + 1, -1, -1, -1, 3 * i + 2, -1, -1, -1, -1, -1, -1, -1
static const int8_t kTapShuffle[5][32] = {{T(0), T(0)}, {T(1), T(1)}, {T(2), T(2)}, {T(3), T(3)}, {T(4), T(4)}};
#undef T

INLINE int32_t load4(const uint8_t *p) {
  int32_t v;
  memcpy(&v, p, 4);
  return v;
}

// Stores the R, G, B of both rows' pixel from a pair accumulator (>> 22, clipped to 0...255).
AVX2 INLINE void store_pair(__m256i acc, uint8_t *d0, uint8_t *d1) {
  acc = _mm256_srai_epi32(acc, PRECISION_BITS);
  // int32 → uint16 → uint8 with saturation (PIL's clip): lane 0 bytes 0–2 row r, lane 1 row r+1.
  const __m256i b = _mm256_packus_epi16(_mm256_packus_epi32(acc, acc), _mm256_setzero_si256());
  const uint32_t v0 = (uint32_t)_mm256_extract_epi32(b, 0), v1 = (uint32_t)_mm256_extract_epi32(b, 4);
  memcpy(d0, &v0, 3);
  memcpy(d1, &v1, 3);
}

// Two rows at once: each 128-bit lane holds one row's pixel as 4 int32 (R, G, B, x), one
// multiply per tap for both rows and all three channels. Four output pixels go together (four
// independent sums, so the multiply-add latency overlaps), each over the group's largest tap
// count: the weights past a pixel's own count are 0 (coefficients() pads with zeros), so the sums
// are unchanged. With at most 5 taps each output pixel's 16 bytes of both rows are loaded once and
// each tap's pixel is one byte shuffle away; otherwise each tap loads 4 bytes per row. Both read
// past the last tap, so they only run where that stays inside the row; the right edge takes one
// pixel at a time with 3-byte reads.
AVX2 static void horizontal_avx2(const uint8_t *src, ptrdiff_t srcStride, int srcWidth, int rows, int outW,
                                 const int32_t *k, int kSize, const intptr_t *bounds, uint8_t *dst) {
  const __m256i half = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
  const ptrdiff_t dstStride = (ptrdiff_t)outW * 3;
  int r = 0;
  for (; r + 1 < rows; r += 2) {
    const uint8_t *srow = src + r * srcStride;
    uint8_t *d0 = dst + r * dstStride, *d1 = d0 + dstStride;
    int o = 0;
    for (; o + 4 <= outW; o += 4) {
      intptr_t m = bounds[2 * o + 1];
      for (int j = 1; j < 4; j++) m = bounds[2 * (o + j) + 1] > m ? bounds[2 * (o + j) + 1] : m;
      if (m > kSize || bounds[2 * (o + 3)] + m > srcWidth - 1) break;
      const int32_t *k0 = k + (ptrdiff_t)o * kSize;
      if (m <= 5 && (bounds[2 * (o + 3)] + 6) <= srcWidth) {
        // 16 bytes (5 pixels and a byte) of both rows per output pixel, one shuffle per tap.
        __m256i s0 = LOAD2(srow + bounds[2 * o] * 3, srcStride), s1 = LOAD2(srow + bounds[2 * o + 2] * 3, srcStride);
        __m256i s2 = LOAD2(srow + bounds[2 * o + 4] * 3, srcStride), s3 = LOAD2(srow + bounds[2 * o + 6] * 3, srcStride);
        __m256i a0 = half, a1 = half, a2 = half, a3 = half;
        for (intptr_t i = 0; i < m; i++) {
          const __m256i sh = _mm256_loadu_si256((const __m256i *)kTapShuffle[i]);
          a0 = _mm256_add_epi32(a0, _mm256_mullo_epi32(_mm256_shuffle_epi8(s0, sh), _mm256_set1_epi32(k0[i])));
          a1 = _mm256_add_epi32(a1, _mm256_mullo_epi32(_mm256_shuffle_epi8(s1, sh), _mm256_set1_epi32(k0[kSize + i])));
          a2 = _mm256_add_epi32(a2, _mm256_mullo_epi32(_mm256_shuffle_epi8(s2, sh), _mm256_set1_epi32(k0[2 * kSize + i])));
          a3 = _mm256_add_epi32(a3, _mm256_mullo_epi32(_mm256_shuffle_epi8(s3, sh), _mm256_set1_epi32(k0[3 * kSize + i])));
        }
        store_pair(a0, d0 + 3 * o, d1 + 3 * o);
        store_pair(a1, d0 + 3 * o + 3, d1 + 3 * o + 3);
        store_pair(a2, d0 + 3 * o + 6, d1 + 3 * o + 6);
        store_pair(a3, d0 + 3 * o + 9, d1 + 3 * o + 9);
        continue;
      }
      const uint8_t *p0 = srow + bounds[2 * o] * 3, *p1 = srow + bounds[2 * o + 2] * 3;
      const uint8_t *p2 = srow + bounds[2 * o + 4] * 3, *p3 = srow + bounds[2 * o + 6] * 3;
      __m256i a0 = half, a1 = half, a2 = half, a3 = half;
      for (intptr_t i = 0; i < m; i++) {
        a0 = _mm256_add_epi32(a0, _mm256_mullo_epi32(PAIR(p0 + 3 * i, srcStride), _mm256_set1_epi32(k0[i])));
        a1 = _mm256_add_epi32(a1, _mm256_mullo_epi32(PAIR(p1 + 3 * i, srcStride), _mm256_set1_epi32(k0[kSize + i])));
        a2 = _mm256_add_epi32(a2, _mm256_mullo_epi32(PAIR(p2 + 3 * i, srcStride), _mm256_set1_epi32(k0[2 * kSize + i])));
        a3 = _mm256_add_epi32(a3, _mm256_mullo_epi32(PAIR(p3 + 3 * i, srcStride), _mm256_set1_epi32(k0[3 * kSize + i])));
      }
      store_pair(a0, d0 + 3 * o, d1 + 3 * o);
      store_pair(a1, d0 + 3 * o + 3, d1 + 3 * o + 3);
      store_pair(a2, d0 + 3 * o + 6, d1 + 3 * o + 6);
      store_pair(a3, d0 + 3 * o + 9, d1 + 3 * o + 9);
    }
    for (; o < outW; o++) {
      const uint8_t *p = srow + bounds[2 * o] * 3;
      const intptr_t n = bounds[2 * o + 1];
      const int32_t *kk = k + (ptrdiff_t)o * kSize;
      __m256i acc = half;
      for (intptr_t i = 0; i < n; i++, p += 3) {
        const uint64_t two = (uint64_t)load3(p) | (uint64_t)load3(p + srcStride) << 32;
        const __m256i x = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)two));
        acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(x, _mm256_set1_epi32(kk[i])));
      }
      store_pair(acc, d0 + 3 * o, d1 + 3 * o);
    }
  }
  if (r < rows) horizontal_generic(src + r * srcStride, srcStride, rows - r, outW, k, kSize, bounds, dst + r * dstStride);
}

AVX2 static void vertical_avx2(const uint8_t *src, ptrdiff_t srcStride, intptr_t firstRow, int rowBytes, int outH,
                               const int32_t *k, int kSize, const intptr_t *bounds, uint8_t *dst) {
  VERTICAL_BODY
}

static int has_avx2(void) { return __builtin_cpu_supports("avx2"); }
#endif

void acon_resample_horizontal(const uint8_t *src, ptrdiff_t srcStride, int srcWidth, int rows, int outW,
                              const int32_t *k, int kSize, const intptr_t *bounds, uint8_t *dst) {
#if defined(__x86_64__)
  if (has_avx2()) {
    horizontal_avx2(src, srcStride, srcWidth, rows, outW, k, kSize, bounds, dst);
    return;
  }
#endif
  horizontal_generic(src, srcStride, rows, outW, k, kSize, bounds, dst);
}

void acon_resample_vertical(const uint8_t *src, ptrdiff_t srcStride, intptr_t firstRow, int rowBytes, int outH,
                            const int32_t *k, int kSize, const intptr_t *bounds, uint8_t *dst) {
#if defined(__x86_64__)
  if (has_avx2()) {
    vertical_avx2(src, srcStride, firstRow, rowBytes, outH, k, kSize, bounds, dst);
    return;
  }
#endif
  vertical_generic(src, srcStride, firstRow, rowBytes, outH, k, kSize, bounds, dst);
}
