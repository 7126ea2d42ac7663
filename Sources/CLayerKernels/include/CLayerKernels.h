// CLayerKernels: C loops of NN's layers where Swift's code generation falls short
// (Sources/NN/BatchNorm2D.swift, Sources/NN/Pooling.swift).
//
// BatchNorm2D's per-channel passes, over the N planes of one channel of a contiguous [N, C, HW]
// tensor: its statistics, the normalisation, and the two sums and the input gradient of the
// backward pass. The per-channel loops sum in float vectors added into vectors of Doubles every
// 256 floats, the block passes in a float per position added into a Double per position every 16
// samples; both in a fixed order (planes in sample
// order, then the lanes in a fixed tree), so a result depends only on the data, never on which
// thread runs a channel. An AVX-512 or AVX2+FMA variant is chosen at run time where the CPU has
// it; the portable one runs everywhere else.
//
// MaxPool2D's forward over whole planes, with the argmax its backward routes gradients by (AVX-512
// and AVX2 variants for the zoo's 3×3/2/1 max-pool).
#ifndef CLAYERKERNELS_H
#define CLAYERKERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Mean and biased variance of one channel: the n planes x + i·stride, i < n, of hw floats each.
/// One pass of the sums of x − k and (x − k)² about the channel's first element k, whose
/// difference loses (mean − k)²/variance times their rounding; where that factor passes 16, two
/// more passes: the mean, then the squared deviations from it (no cancellation whatever the mean).
/// Shapes: x [n, stride] with the plane at offset 0 of each row, hw ≤ stride.
void acon_bn_stats(const float *x, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, double *mean, double *variance);

/// y = (x − mu)·scale + shift over one channel's n planes (x − mu first: exact for x near mu,
/// where x·scale + shift' would round x·scale); with `relu` ≠ 0, then max(y, 0) as `ReLU` takes
/// it (0 for y ≤ 0, NaN kept). With `stream` ≠ 0, y goes out with non-temporal (streaming)
/// stores where y and the stride are aligned to 64 bytes (x86 only; others are stored as usual):
/// each line written without being read first and not kept in cache, for an output too large
/// for the cache. The same bits either way; the call fences its streaming stores before it
/// returns.   x, y: [n, stride], planes at offset 0.
void acon_bn_normalize(
    const float *x, float *y, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, float mu, float scale, float shift,
    int relu, int stream);

/// Σ dy and Σ dy·(x − mu) over one channel's n planes (float partial sums added in Double). With `relu` ≠ 0, dy is the
/// gradient at the output of a ReLU fused into the forward pass: each element counts only where
/// (x − mu)·scale + shift, recomputed as acon_bn_normalize computed it, is > 0.   x, dy: [n, stride].
void acon_bn_gradient_sums(
    const float *x, const float *dy, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, float mu, int relu, float scale,
    float shift, double *sum_dy, double *sum_dy_xc);

/// dx = a·dy + b·(x − mu) + d over one channel's n planes (BatchNorm's input gradient with its
/// per-channel constants folded); `relu`, `scale`, `shift` mask dy as in acon_bn_gradient_sums;
/// `stream` stores dx as acon_bn_normalize stores y.   x, dy, dx: [n, stride]; dx may be dy.
void acon_bn_input_gradient(
    const float *x, const float *dy, float *dx, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, float mu, float a, float b,
    float d, int relu, float scale, float shift, int stream);

/// The floats of one sample that a block of the passes below holds (whole channels).
extern const ptrdiff_t acon_bn_block_floats;

/// Planes of fewer floats than this (0 < hw < 64) run in blocks; the passes below run other
/// planes through the per-channel loops above, channel by channel (the same bits as calling them).
extern const ptrdiff_t acon_bn_block_plane_limit;

/// The four passes above over channels [c0, c1) of a contiguous x [n, c, hw] at once. Small planes
/// (see acon_bn_block_plane_limit) run in blocks of whole channels (acon_bn_block_floats / hw of them)
/// read sample after sample in memory order, each position with its channel's parameters and its
/// own sums (16 samples at a time in float, then in Double). The per-channel loops read one
/// channel's n short planes at a stride of c·hw floats, one vector or less at a time (4 ns an
/// element at hw = 4); these read the memory in order. Sums add each position over the samples in order, then a channel's hw
/// positions in order: the result depends on the data only, not on c0, c1 or the thread; the
/// elementwise passes give the per-channel loops' bits. Per-channel arrays (mean, variance, mu,
/// scale, shift, a, b, d, sum_dy, sum_dy_xc) are indexed by channel, [c]; entries c0..<c1 are
/// read or written. `stream` reaches the per-channel loops only (blocks store as usual).
/// x, y, dy, dx: [n, c, hw]; dx may be dy.
void acon_bn_stats_block(
    const float *x, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw, ptrdiff_t c0, ptrdiff_t c1, double *mean, double *variance);
void acon_bn_normalize_block(
    const float *x, float *y, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw, ptrdiff_t c0, ptrdiff_t c1, const float *mu,
    const float *scale, const float *shift, int relu, int stream);
void acon_bn_gradient_sums_block(
    const float *x, const float *dy, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw, ptrdiff_t c0, ptrdiff_t c1,
    const float *mu, int relu, const float *scale, const float *shift, double *sum_dy, double *sum_dy_xc);
void acon_bn_input_gradient_block(
    const float *x, const float *dy, float *dx, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw, ptrdiff_t c0, ptrdiff_t c1,
    const float *mu, const float *a, const float *b, const float *d, int relu, const float *scale,
    const float *shift, int stream);

/// Max pooling of planes [p0, p1) of x [planes, h, w] into y and argmax [planes, oh, ow]
/// (kernel k, stride s, padding p, as PyTorch's MaxPool2D): each window starts from its first
/// in-image element and takes any greater one and any NaN (the last NaN wins); padding is never a
/// candidate. argmax holds the winner's offset within its input plane (−1 for a window with no
/// in-image element, which PyTorch's shape rules exclude). The choice is a select, not a branch:
/// which element wins is data-dependent and unpredictable. k = 3, s = 2, p = 1 runs a row of
/// outputs per vector where the CPU has AVX-512 or AVX2, and on even planes whose output rows are
/// 2, 4 or a multiple of 8 wide (h·w/2 ≤ 2048), in two passes of full vectors: each input row's
/// best of three columns, then each output's best of three rows (the same values and argmax).
void acon_maxpool_forward(
    const float *x, float *y, int *argmax, ptrdiff_t p0, ptrdiff_t p1, ptrdiff_t h, ptrdiff_t w, ptrdiff_t oh,
    ptrdiff_t ow, ptrdiff_t k, ptrdiff_t s, ptrdiff_t p);

#ifdef __cplusplus
}
#endif

#endif
