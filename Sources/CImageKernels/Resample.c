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

// Two rows at once: each 128-bit lane holds one row's pixel as 4 int32 (R, G, B, 0), one
// multiply per tap for both rows and all three channels.
AVX2 static void horizontal_avx2(const uint8_t *src, ptrdiff_t srcStride, int rows, int outW, const int32_t *k,
                                 int kSize, const intptr_t *bounds, uint8_t *dst) {
  const __m256i half = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
  const ptrdiff_t dstStride = (ptrdiff_t)outW * 3;
  int r = 0;
  for (; r + 1 < rows; r += 2) {
    const uint8_t *srow = src + r * srcStride;
    uint8_t *d0 = dst + r * dstStride, *d1 = d0 + dstStride;
    for (int o = 0; o < outW; o++) {
      const uint8_t *p = srow + bounds[2 * o] * 3;
      const intptr_t n = bounds[2 * o + 1];
      const int32_t *kk = k + (ptrdiff_t)o * kSize;
      __m256i acc = half;
      for (intptr_t i = 0; i < n; i++, p += 3) {
        const uint64_t two = (uint64_t)load3(p) | (uint64_t)load3(p + srcStride) << 32;
        const __m256i x = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)two));
        acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(x, _mm256_set1_epi32(kk[i])));
      }
      acc = _mm256_srai_epi32(acc, PRECISION_BITS);
      // int32 → uint16 → uint8 with saturation (PIL's clip): lane 0 bytes 0–3 row r, lane 1 row r+1.
      const __m256i b = _mm256_packus_epi16(_mm256_packus_epi32(acc, acc), _mm256_setzero_si256());
      const uint32_t v0 = (uint32_t)_mm256_extract_epi32(b, 0), v1 = (uint32_t)_mm256_extract_epi32(b, 4);
      // 4-byte stores: the fourth byte is the next pixel's R, written again by it; the last pixel
      // of a row stores 3 (its fourth byte would be the next row's first).
      const size_t bytes = o + 1 < outW ? 4 : 3;
      memcpy(d0 + 3 * o, &v0, bytes);
      memcpy(d1 + 3 * o, &v1, bytes);
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

void acon_resample_horizontal(const uint8_t *src, ptrdiff_t srcStride, int rows, int outW, const int32_t *k, int kSize,
                              const intptr_t *bounds, uint8_t *dst) {
#if defined(__x86_64__)
  if (has_avx2()) {
    horizontal_avx2(src, srcStride, rows, outW, k, kSize, bounds, dst);
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
