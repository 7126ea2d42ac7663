// CDepthwiseKernels: direct depthwise convolution kernels (forward, dx, dW, db) over ranges of
// planes or channels, in C so that an AVX2+FMA variant can be chosen at run time (SwiftPM builds
// for baseline x86-64). The Swift side (Sources/NN/DepthwiseConv2D.swift) does the threading.
#ifndef CDEPTHWISEKERNELS_H
#define CDEPTHWISEKERNELS_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// The geometry of a depthwise convolution: x [n, c, h, w], weight [c·m, 1, kh, kw],
/// bias [c·m], y [n, c·m, oh, ow]; output channel o reads input channel o / m.
/// oh = (h + 2·ph − kh) / sh + 1 and ow likewise must be ≥ 1 (the caller checks).
typedef struct DWGeometry {
  ptrdiff_t n, c, m, h, w, kh, kw, sh, sw, ph, pw, oh, ow;
} DWGeometry;

/// Floats of scratch memory one call of `dw_forward_planes` needs.
ptrdiff_t dw_forward_scratch(const DWGeometry *g);

/// Forward over output planes [p0, p1) of the n·c·m planes (plane p = sample p / (c·m), output
/// channel p % (c·m)): y = bias + Σ_{u,v} w[o,u,v]·x[n, o/m, i·sh − ph + u, j·sw − pw + v]
/// (zero padding), each element summed as bias first, then taps in (u, v) order. bias may be
/// NULL. `scratch` holds `dw_forward_scratch(g)` floats, private to the call.
void dw_forward_planes(const DWGeometry *g, const float *x, const float *weight, const float *bias, float *y,
                       ptrdiff_t p0, ptrdiff_t p1, float *scratch);

/// Floats of scratch memory one call of `dw_backward_channels` over `channels` channels needs.
ptrdiff_t dw_backward_scratch(const DWGeometry *g, ptrdiff_t channels);

/// Backward over input channels [c0, c1), sample by sample (each sample's planes of those
/// channels are contiguous). Writes dx of
/// those channels (unless dx is NULL) and ACCUMULATES (+=) dweight [c·m, kh, kw] and dbias
/// [c·m] (unless NULL) of their output channels c·m ..< (c+1)·m. Each output channel's sums run
/// in a fixed order (per output column, or per lane of 8-column blocks, over samples and rows;
/// then over those partial sums in order), so the
/// bits do not depend on how the channels are split between calls. `scratch` holds
/// `dw_backward_scratch(g)` floats, private to the call.
void dw_backward_channels(const DWGeometry *g, const float *x, const float *weight, const float *dy, float *dx,
                          float *dweight, float *dbias, ptrdiff_t c0, ptrdiff_t c1, float *scratch);

/// Whether `dw_lanes_forward` and `dw_lanes_backward` run `g`: 3×3, padding 1, stride 1 or 2 on
/// both axes, channel multiplier 1, n > 1 samples (g->c is not read: the calls take one channel).
bool dw_lanes_handles(const DWGeometry *g);

/// Whether DepthwiseConv2D runs `g` (n samples of each channel, NCHW or channels-major) with the
/// lanes kernels rather than the per-plane ones, forward and backward: with the AVX2 variant, on
/// a geometry that `dw_lanes_handles`, except where the per-plane kernels measured faster
/// (stride 2 on 16-wide planes; DepthwiseLanes.c).
bool dw_lanes_preferred(const DWGeometry *g);

/// Floats of scratch memory one call of `dw_lanes_forward` needs: about ((h + 2)·(w + 2) + oh·ow)·8.
ptrdiff_t dw_lanes_forward_scratch(const DWGeometry *g);

/// Floats of scratch memory one call of `dw_lanes_backward` needs: about ((h + 2)·(w + 2) +
/// (oh + 2)·(ow + 2) + h·w + 10)·8.
ptrdiff_t dw_lanes_backward_scratch(const DWGeometry *g);

/// Forward of ONE channel's n samples: x [n, h, w] → y [n, oh, ow], sample k's plane at
/// x + k·x_stride and y + k·y_stride (h·w and oh·ow in a channels-major batch's channel; C·h·w
/// and C·oh·ow in an NCHW batch, x and y then pointing at the channel's first plane),
/// y = bias + Σ_{u,v} w[u, v]·x[i·s − 1 + u, j·s − 1 + v] over the taps inside the image, in
/// (u, v) order: the values `dw_forward_planes` gives. Eight samples at a time in vector lanes
/// (DepthwiseLanes.c). weight [3, 3]. `scratch` holds `dw_lanes_forward_scratch(g)` floats,
/// private to the call. Only for a geometry that `dw_lanes_handles`.
void dw_lanes_forward(const DWGeometry *g, const float *x, ptrdiff_t x_stride, const float *weight, float bias,
                      float *y, ptrdiff_t y_stride, float *scratch);

/// Backward of ONE channel's n samples: dy [n, oh, ow] (planes y_stride apart) → dx [n, h, w]
/// (planes x_stride apart, as x's; unless dx is NULL), and ACCUMULATES (+=) dweight [3, 3] and
/// *dbias (unless NULL). dx is each element's taps in (u, v) order from 0; dW and db sum each
/// lane (sample mod 8) over the groups of eight samples and the outputs in order, then the eight
/// lanes in order: the bits depend on n, h and w only. `scratch` holds
/// `dw_lanes_backward_scratch(g)` floats. Only for a geometry that `dw_lanes_handles`.
void dw_lanes_backward(const DWGeometry *g, const float *x, ptrdiff_t x_stride, const float *weight, const float *dy,
                       ptrdiff_t y_stride, float *dx, float *dweight, float *dbias, float *scratch);

/// The kernel variants: the portable C (baseline x86-64, or the target's baseline elsewhere),
/// AVX2+FMA (x86-64 only, when the CPU has both) and AVX-512 (x86-64 with AVX-512F and VL too: its
/// own kernels for 3×3, padding 1 at stride 1 and at stride 2 on planes up to 32 wide; the AVX2
/// ones for any other geometry).
enum { DW_VARIANT_PORTABLE = 0, DW_VARIANT_AVX2 = 1, DW_VARIANT_AVX512 = 2, DW_VARIANT_COUNT = 3 };

/// Whether this build and CPU can run `variant`.
bool dw_kernels_supports(int variant);

/// The variant that runs: AVX-512 when the CPU has it, else AVX2+FMA when it has that, else the portable
/// one; set `DW_KERNELS=portable` in the environment to force the portable variant.
int dw_kernels_variant(void);

/// For tests: whether the AVX-512 variant runs stride-1 3×3 planes under 8 wide of 1, 2, 4, 8 or
/// 16 floats several channels to a vector (the default) rather than one plane to a vector, the
/// same bits either way. `enabled` 1 or 0 sets it from the next call on (between calls, never
/// during one), −1 leaves it; returns the setting before the call.
bool dw_avx512_group_small_planes(int enabled);

/// For tests and measurements: whether the AVX2 variant runs stride-1 3×3 planes under 8 wide of
/// 1, 2, 4, 8 or 16 floats in registers, several channels to a vector (the default), rather than
/// through its padded plane copies; the results agree to rounding (the sums run in another
/// order). `enabled` 1 or 0 sets it from the next call on (between calls), −1 leaves it; returns
/// the setting before.
bool dw_avx2_group_small_planes(int enabled);

/// Makes `variant` run from the next call on (for tests, between calls, never during one);
/// −1 restores the default choice. False (and no change) when the variant is not supported.
bool dw_kernels_select(int variant);

/// Whether the AVX2+FMA or the AVX-512 variant runs (else the portable one).
bool dw_kernels_use_avx2(void);

#ifdef __cplusplus
}
#endif

#endif
