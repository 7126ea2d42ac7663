// CopyKernels: the streaming float copy of CCopyKernels.h. SSE's `movntps` is part of baseline
// x86-64, so no run-time dispatch is needed; other architectures fall back to memcpy.
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
