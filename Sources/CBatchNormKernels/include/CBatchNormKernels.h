// CBatchNormKernels: the per-channel loops of BatchNorm2D (Sources/NN/BatchNorm2D.swift), over the
// N planes of one channel of a contiguous [N, C, HW] tensor: its statistics, the normalisation,
// and the two sums and the input gradient of the backward pass. Sums run in vectors of Doubles in
// a fixed order (planes in sample order, then the lanes in a fixed tree), so a result depends
// only on the data, never on which thread runs a channel. An AVX-512 variant
// is chosen at run time where the CPU has it; the portable one runs everywhere else.
#ifndef CBATCHNORMKERNELS_H
#define CBATCHNORMKERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Mean and biased variance of one channel: the n planes x + i·stride, i < n, of hw floats each.
/// Two passes: the mean, then the squared deviations from it (no cancellation whatever the mean).
/// Shapes: x [n, stride] with the plane at offset 0 of each row, hw ≤ stride.
void acon_bn_stats(const float *x, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, double *mean, double *variance);

/// y = (x − mu)·scale + shift over one channel's n planes (x − mu first: exact for x near mu,
/// where x·scale + shift' would round x·scale).   x, y: [n, stride], planes at offset 0.
void acon_bn_normalize(
    const float *x, float *y, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, float mu, float scale, float shift);

/// Σ dy and Σ dy·(x − mu) over one channel's n planes, in Double.   x, dy: [n, stride].
void acon_bn_gradient_sums(
    const float *x, const float *dy, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, float mu, double *sum_dy,
    double *sum_dy_xc);

/// dx = a·dy + b·(x − mu) + d over one channel's n planes (BatchNorm's input gradient with its
/// per-channel constants folded).   x, dy, dx: [n, stride]; dx may be dy.
void acon_bn_input_gradient(
    const float *x, const float *dy, float *dx, ptrdiff_t n, ptrdiff_t stride, ptrdiff_t hw, float mu, float a, float b,
    float d);

#ifdef __cplusplus
}
#endif

#endif
