// CAconKernels: the per-channel inner loops of the fused ACON-C kernels and the polynomial
// exp/sigmoid they use, in C so that an AVX2+FMA variant can be selected at run time (SwiftPM
// builds for baseline x86-64). The Swift side (Sources/ACON/AconKernels.swift) does the
// threading and calls one of these per channel. Derivation: docs/acon-backward.md.
#ifndef CACONKERNELS_H
#define CACONKERNELS_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Where a channel's β (and dβ) lives, for `n` planes of `hw` elements.
typedef enum AconBetaMode {
  /// One β for the whole channel at `beta[0]`; dβ is summed over every plane into `dbeta[0]`.
  AconBetaModeChannel = 0,
  /// One β per plane at `beta[j·betaStride]`; dβ of plane j is summed into `dbeta[j·betaStride]`.
  AconBetaModePlane = 1,
  /// One β per element, plane j's row at `beta + j·betaStride`; dβ is accumulated elementwise.
  AconBetaModeElement = 2,
} AconBetaMode;

/// Forward of one channel: for each plane j < n, the hw elements at `x + j·planeStride`
///   d = k·x,  s = σ(β·d),  y = d·s + q·x    (k = p1 − p2, q = p2)
/// y (and sig, unless NULL) at the same offsets are written.
void acon_forward_channel(
    const float *x, float *y, float *sig, ptrdiff_t n, ptrdiff_t hw, ptrdiff_t planeStride,
    float k, float q, const float *beta, ptrdiff_t betaStride, AconBetaMode betaMode);

/// Backward of one channel, planes as for the forward. σ is read from `sig` unless it is NULL
/// (then recomputed, the same bits). dx is overwritten unless NULL. `*dp1`, `*dp2` and dβ
/// (as `betaMode` says) are accumulated (+=). Sums are formed in 8 lanes per plane, added
/// lane-wise over the planes in order and reduced in a fixed order: deterministic.
void acon_backward_channel(
    const float *x, const float *dy, float *dx, const float *sig, ptrdiff_t n, ptrdiff_t hw,
    ptrdiff_t planeStride, float k, float q, const float *beta, float *dbeta,
    ptrdiff_t betaStride, AconBetaMode betaMode, float *dp1, float *dp2);

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
