// CopyKernels: the streaming float copy of CCopyKernels.h (SSE's `movntps` is part of baseline
// x86-64, so no run-time dispatch is needed; other architectures fall back to memcpy), and the
// move of a cycle of planes.
#include "CCopyKernels.h"

#include <stdint.h>
#include <string.h>

#if defined(__SSE__)
#include <xmmintrin.h>
#define ACON_HAS_STREAM 1
#else
#define ACON_HAS_STREAM 0
#endif

void acon_copy_streaming(float *dst, const float *src, ptrdiff_t count) {
  if (count <= 0) return;
#if ACON_HAS_STREAM
  // Plain copies up to the first 64-byte line boundary of dst, then one whole line (16 floats)
  // per step with streaming stores, then the tail.
  ptrdiff_t head = (ptrdiff_t)(((64 - ((uintptr_t)dst & 63)) & 63) / sizeof(float));
  if (head > count) head = count;
  if ((uintptr_t)dst & 3) head = count;  // not float-aligned: no vector stores at all
  memcpy(dst, src, (size_t)head * sizeof(float));
  ptrdiff_t i = head;
  for (; i + 16 <= count; i += 16) {
    __m128 a = _mm_loadu_ps(src + i), b = _mm_loadu_ps(src + i + 4);
    __m128 c = _mm_loadu_ps(src + i + 8), d = _mm_loadu_ps(src + i + 12);
    _mm_stream_ps(dst + i, a);
    _mm_stream_ps(dst + i + 4, b);
    _mm_stream_ps(dst + i + 8, c);
    _mm_stream_ps(dst + i + 12, d);
  }
  memcpy(dst + i, src + i, (size_t)(count - i) * sizeof(float));
#else
  memcpy(dst, src, (size_t)count * sizeof(float));
#endif
}

void acon_copy_fence(void) {
#if ACON_HAS_STREAM
  _mm_sfence();
#endif
}

bool acon_copy_has_streaming_stores(void) { return ACON_HAS_STREAM != 0; }

void acon_move_plane_cycle(float *data, const int32_t *order, ptrdiff_t len, ptrdiff_t plane, float *scratch) {
  // data [planes, plane]: plane order[i] ← plane order[i + 1], the last ← the first.
  if (len <= 0) return;
  enum { AHEAD = 4, LINES = 4 };  // planes ahead; lines of each (the stream prefetchers take the rest)
  const size_t bytes = (size_t)plane * sizeof(float);
  const ptrdiff_t fetch = plane < 16 * LINES ? plane : 16 * LINES;
  for (ptrdiff_t i = 1; i <= AHEAD && i < len; i++)
    for (ptrdiff_t j = 0; j < fetch; j += 16) __builtin_prefetch(data + (ptrdiff_t)order[i] * plane + j);
  memcpy(scratch, data + (ptrdiff_t)order[0] * plane, bytes);
  for (ptrdiff_t i = 0; i + 1 < len; i++) {
    if (i + 1 + AHEAD < len)
      for (ptrdiff_t j = 0; j < fetch; j += 16) __builtin_prefetch(data + (ptrdiff_t)order[i + 1 + AHEAD] * plane + j);
    memcpy(data + (ptrdiff_t)order[i] * plane, data + (ptrdiff_t)order[i + 1] * plane, bytes);
  }
  memcpy(data + (ptrdiff_t)order[len - 1] * plane, scratch, bytes);
}
