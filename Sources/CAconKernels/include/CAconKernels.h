// CAconKernels: the inner loops of the fused ACON-C kernels over a range of channels and the
// polynomial exp/sigmoid they use, in C so that an AVX2+FMA variant can be selected at run time
// (SwiftPM builds for baseline x86-64). The Swift side (Sources/ACON/AconKernels.swift) does the
// threading and calls one of these per range of channels. Derivation: docs/acon-backward.md.
#ifndef CACONKERNELS_H
#define CACONKERNELS_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Where β (and dβ, laid out alike) lives for an (n, c, hw) tensor.
typedef enum AconBetaMode {
  /// `[c]`: one β per channel; dβ is summed over the channel's n·hw elements.
  AconBetaModeChannel = 0,
  /// `[n, c]`: one β per plane; dβ of a plane is summed over its hw elements.
  AconBetaModePlane = 1,
  /// `[n, c, hw]`: one β per element; dβ is accumulated elementwise.
  AconBetaModeElement = 2,
} AconBetaMode;

/// Forward over channels [c0, c1) of contiguous (n, c, hw) tensors x and y (and sig, unless
/// NULL), with k = p1 − p2 and q = p2 of the channel:
///   d = k·x,  s = σ(β·d),  y = d·s + q·x
/// Only those channels' elements of y and sig are written. p1, p2: [c]; β as `betaMode` says.
void acon_forward_channels(
    const float *x, float *y, float *sig, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw, ptrdiff_t c0,
    ptrdiff_t c1, const float *p1, const float *p2, const float *beta, AconBetaMode betaMode);

/// Backward over channels [c0, c1), tensors as for the forward. σ is read from `sig` unless it
/// is NULL (then recomputed, the same bits). dx is overwritten unless NULL. dp1, dp2 ([c]) and
/// dβ (as `betaMode` says) of those channels are accumulated (+=). Sums are formed in 8 lanes
/// per plane, added lane-wise over a channel's planes in sample order and reduced in a fixed
/// order: the bits do not depend on how the channels are split between calls.
void acon_backward_channels(
    const float *x, const float *dy, float *dx, const float *sig, ptrdiff_t n, ptrdiff_t c,
    ptrdiff_t hw, ptrdiff_t c0, ptrdiff_t c1, const float *p1, const float *p2,
    const float *beta, float *dbeta, AconBetaMode betaMode, float *dp1, float *dp2);

/// e^x for `count` floats (the kernels' polynomial; see FastMath.swift for its bounds).
void acon_exp(const float *x, float *y, ptrdiff_t count);

/// σ(x) = 1/(1 + e^(−x)) for `count` floats, exactly as the kernels compute s.
void acon_sigmoid(const float *x, float *y, ptrdiff_t count);

/// Whether the AVX2+FMA variants are in use (the CPU supports them and they are enabled).
bool acon_kernels_using_avx2(void);

/// Enables (the default) or disables the AVX2+FMA variants; enabling has no effect on a CPU
/// without AVX2 and FMA. For tests of the portable path; not thread-safe against running kernels.
void acon_kernels_set_avx2_enabled(bool enabled);

#ifdef __cplusplus
}
#endif

#endif
