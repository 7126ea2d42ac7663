// CCopyKernels: a float copy with non-temporal (streaming) stores, for the channel concatenations
// and splits of Sources/NN/ChannelOps.swift when their output is larger than the cores' caches.
// A plain store first reads the destination's cache line (read for ownership), so a large
// memcpy that misses the caches moves 1.5× its bytes; a streaming store writes whole lines
// without reading them. The Swift side does the threading and picks the threshold.
//
// And the move of one cycle of planes for the in-place reorders of Sources/NN/ChannelsMajor.swift.
#ifndef CCOPYKERNELS_H
#define CCOPYKERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Copies `count` floats from `src` to `dst` (the ranges must not overlap), bit for bit, with
/// streaming stores where the CPU has them (x86 SSE) and `memcpy` elsewhere. The stores are
/// weakly ordered: call `acon_copy_fence` before another thread reads `dst`.
/// Shapes: dst [count], src [count]; any 4-byte alignment.
void acon_copy_streaming(float *dst, const float *src, ptrdiff_t count);

/// Orders this thread's streaming stores before its later stores (x86 `sfence`; nothing elsewhere).
void acon_copy_fence(void);

/// Moves one cycle of planes of `data` in place: plane order[i] takes plane order[i + 1] for
/// i < len − 1, and plane order[len − 1] takes plane order[0] (through `scratch`). Each step reads
/// a plane that no earlier step touched, at an address no hardware prefetcher can guess, so the
/// loop prefetches the first lines of the planes a few steps ahead.
/// Shapes: data [planes, plane], order [len] (distinct plane indices), scratch [plane].
void acon_move_plane_cycle(float *data, const int32_t *order, ptrdiff_t len, ptrdiff_t plane, float *scratch);

/// Whether `acon_copy_streaming` uses streaming stores on this build (else it is `memcpy`).
bool acon_copy_has_streaming_stores(void);

#ifdef __cplusplus
}
#endif

#endif
