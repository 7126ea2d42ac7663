// DepthwiseInternal.h: what the kernel files of CDepthwiseKernels share and the module does not
// export: the AVX-512 variant's entry points (DepthwiseAVX512.c) and the AVX2 variant's grouped
// path (DepthwiseAVX2Grouped.c), called by the dispatch in DepthwiseKernels.c.
#ifndef CDEPTHWISE_INTERNAL_H
#define CDEPTHWISE_INTERNAL_H

#include "CDepthwiseKernels.h"

/// Whether the AVX-512 variant has a path of its own for `g`: 3×3, padding 1, stride 1 (any
/// h and w) or stride 2 on planes up to 32 wide. Other geometries run the AVX2 bodies.
bool dw_avx512_handles(const DWGeometry *g);

/// Floats of scratch memory `dw_avx512_forward` needs (0 when it does not handle g).
ptrdiff_t dw_avx512_forward_scratch(const DWGeometry *g);

/// Floats of scratch memory `dw_avx512_backward` over `channels` channels needs.
ptrdiff_t dw_avx512_backward_scratch(const DWGeometry *g, ptrdiff_t channels);

/// dw_forward_planes for a geometry that `dw_avx512_handles` (x86-64 with AVX-512F and VL only).
void dw_avx512_forward(const DWGeometry *g, const float *x, const float *weight, const float *bias, float *y,
                       ptrdiff_t p0, ptrdiff_t p1, float *scratch);

/// dw_backward_channels for a geometry that `dw_avx512_handles` (x86-64 with AVX-512F and VL only).
void dw_avx512_backward(const DWGeometry *g, const float *x, const float *weight, const float *dy, float *dx,
                        float *dweight, float *dbias, ptrdiff_t c0, ptrdiff_t c1, float *scratch);

/// Whether the AVX2 variant runs `g` in channel groups (DepthwiseAVX2Grouped.c): 3×3, stride 1,
/// padding 1, no channel multiplier, planes under 8 wide of 1, 2, 4, 8 or 16 floats.
bool dw_avx2_grouped(const DWGeometry *g);

#if defined(__x86_64__)
/// dw_forward_planes for a geometry that `dw_avx2_grouped` (x86-64 with AVX2 and FMA only).
void dw_avx2_forward_grouped(const DWGeometry *g, const float *x, const float *weight, const float *bias, float *y,
                             ptrdiff_t p0, ptrdiff_t p1);

/// dw_backward_channels for a geometry that `dw_avx2_grouped` (x86-64 with AVX2 and FMA only).
void dw_avx2_backward_grouped(const DWGeometry *g, const float *x, const float *weight, const float *dy, float *dx,
                              float *dweight, float *dbias, ptrdiff_t c0, ptrdiff_t c1);
#endif

#endif
