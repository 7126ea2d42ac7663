// CAconKernels: the inner loops of the fused ACON-C kernels over a range of channels and the
// polynomial exp/sigmoid they use, in C so that an AVX-512 (16 lanes) or AVX2+FMA (8 lanes)
// variant can be selected at run time on x86-64 (SwiftPM builds for baseline x86-64), a NEON one
// (8 lanes, FMA) runs on aarch64, and a portable one builds for any target. The Swift side
// (Sources/ACON/AconKernels.swift) does the threading and calls one of these per range of
// channels. Derivation: docs/acon-backward.md.
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
/// `channelsMajor`: x, y and sig are (c, n, hw) instead, each channel's n planes one after the
/// other (β keeps its [c] or [n, c] layout; not with AconBetaModeElement); the same bits.
/// `stream` (every function here that takes it): store the outputs with non-temporal stores,
/// which write a cache line without reading it first and do not keep it in cache: less memory
/// traffic for an output larger than the cache, slower for one that is read again soon (see
/// acon_kernels_streaming_threshold). Only the x86 SIMD variants stream (on the planes whose
/// outputs are aligned to a vector; others are stored as usual); the results are the same bits.
void acon_forward_channels(
    const float *x, float *y, float *sig, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw,
    bool channelsMajor, ptrdiff_t c0, ptrdiff_t c1, const float *p1, const float *p2,
    const float *beta, AconBetaMode betaMode, bool stream);

/// Backward over channels [c0, c1), tensors (and `channelsMajor`) as for the forward. σ is read
/// from `sig` unless it is NULL (then recomputed, the same bits). dx is overwritten unless NULL. dp1, dp2 ([c]) and
/// dβ (as `betaMode` says) of those channels are accumulated (+=). Sums are formed in the
/// variant's lanes (8 or 16) per plane, added lane-wise over a channel's planes in sample order
/// and reduced in a fixed order: the bits do not depend on how the channels are split between
/// calls (they do, in the last bits, on the variant).
void acon_backward_channels(
    const float *x, const float *dy, float *dx, const float *sig, ptrdiff_t n, ptrdiff_t c,
    ptrdiff_t hw, bool channelsMajor, ptrdiff_t c0, ptrdiff_t c1, const float *p1,
    const float *p2, const float *beta, float *dbeta, AconBetaMode betaMode, float *dp1,
    float *dp2, bool stream);

/// Meta-ACON pixel-wise forward over channels [c0, c1) of contiguous (n, c, hw) x and y:
///   β = σ(x),  d = (p1 − p2)·x,  y = d·σ(β·d) + p2·x      (p1, p2: [c])
/// One read of x, one write of y; both sigmoids use the kernels' polynomial.
void acon_pixelwise_forward_channels(
    const float *x, float *y, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw, ptrdiff_t c0, ptrdiff_t c1,
    const float *p1, const float *p2, bool stream);

/// Meta-ACON pixel-wise backward over channels [c0, c1): with s = σ(β·d), w = s·(1 − s),
/// g = s + β·d·w,
///   dx = dy·((p1 − p2)·g + p2) + dy·d²·w·β·(1 − β)       (the second term: through β = σ(x))
///   dp1 += Σ dy·x·g,   dp2 += Σ dy·x·(1 − g)
/// One read of x and dy; dx overwritten (skipped if NULL); sums as in acon_backward_channels
/// (independent of how channels are split between calls).
void acon_pixelwise_backward_channels(
    const float *x, const float *dy, float *dx, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw,
    ptrdiff_t c0, ptrdiff_t c1, const float *p1, const float *p2, float *dp1, float *dp2,
    bool stream);

/// The smooth maximum over planes [p0, p1) of contiguous planes of hw floats (a, b, y: any
/// number of planes, plane p at p·hw):
///   δ = a − b,  y = δ·σ(β·δ) + b
/// One read of a and b, one write of y. Elementwise, so the planes run as one range of elements
/// (streamed from y's first vector-aligned element on).
void acon_smooth_max_forward_planes(
    const float *a, const float *b, float *y, ptrdiff_t hw, ptrdiff_t p0, ptrdiff_t p1,
    float beta, bool stream);

/// Its backward over planes [p0, p1): with s = σ(β·δ), g = s + β·δ·s·(1 − s),
///   da = dy·g,  db = dy − da   (overwritten)
///   dbeta[p] += Σ over the plane of dy·δ²·s·(1 − s)   (skipped if dbeta is NULL)
/// One read of a, b and dy. Every element's result and every plane's sum is independent of
/// how the planes are split between calls. Streams da and db as one range when dbeta is NULL
/// (and da, db share their alignment), else the planes whose da and db are vector-aligned.
void acon_smooth_max_backward_planes(
    const float *a, const float *b, const float *dy, float *da, float *db, ptrdiff_t hw,
    ptrdiff_t p0, ptrdiff_t p1, float beta, float *dbeta, bool stream);

/// dst[i] = src[i] + v for `count` floats, from the last to the first (src's most recently
/// written end is the likeliest to be in cache); dst may equal src. With `stream`, dst's
/// vector-aligned part is stored non-temporally. The same bits in every variant.
void acon_add_scalar(const float *src, float *dst, ptrdiff_t count, float v, bool stream);

/// The size in bytes of the last-level cache (the highest-level data or unified cache of CPU 0):
/// from Linux's /sys/devices/system/cpu/cpu0/cache, else sysconf's level-3 (or level-2) size,
/// else 0 (unknown). Read once. /sys comes first because it is what the kernel found in the CPU's
/// cache descriptors, while glibc's sysconf can disagree in a virtual machine (on one AMD EPYC
/// guest: 320 MB from sysconf, 32 MB from /sys and lscpu). ChannelOps (Sources/NN) derives its
/// copy threshold from it too.
size_t acon_last_level_cache_bytes(void);

/// The footprint (bytes read plus written by one call over the whole tensors) from which the
/// Swift entry points (Sources/ACON/AconKernels.swift) ask for streaming stores: by default half
/// the last-level cache (acon_last_level_cache_bytes; 16 MiB if it is unknown), since an output
/// that large is mostly evicted before the next layer reads it. (Lower than the copies' 3/4 in
/// Sources/NN/ChannelOps.swift: on the Zen 4 guest, shared and loaded, the smooth maximum with
/// streaming stores ran forward + backward 1.3–1.6× faster than without on tensors of 4.8–19 MB,
/// footprints of 14–96 MB per pass.)
size_t acon_kernels_streaming_threshold(void);

/// Sets that threshold (1: always stream; SIZE_MAX: never). For tests and benchmarks; not
/// thread-safe against running kernels.
void acon_kernels_set_streaming_threshold(size_t bytes);

/// e^x for `count` floats (the kernels' polynomial; see FastMath.swift for its bounds).
void acon_exp(const float *x, float *y, ptrdiff_t count);

/// σ(x) = 1/(1 + e^(−x)) for `count` floats, exactly as the kernels compute s.
void acon_sigmoid(const float *x, float *y, ptrdiff_t count);

/// The code paths of the kernels and of acon_exp/acon_sigmoid: one body, compiled per target.
/// x86-64 builds have portable, AVX2 and AVX-512; aarch64 builds portable and NEON; any other
/// target (or a build with ACON_PORTABLE_ONLY defined) portable alone. Every variant meets the
/// documented error bounds; their bits differ as noted.
typedef enum AconKernelVariant {
  /// Any target: 8 lanes, a multiply and an add for every a·b + c. The same bits on every target.
  AconKernelVariantPortable = 0,
  /// x86-64 AVX2 + FMA: 8 lanes, one FMA for every a·b + c.
  AconKernelVariantAVX2 = 1,
  /// x86-64 AVX-512 (F, BW, DQ, VL) + FMA: 16 lanes, masked loads and stores for a plane's tail.
  /// The same y, dx, σ, e^x and per-element dβ bits as AVX2; sums over lanes (dp1, dp2, and dβ
  /// per channel or plane) are reduced in a different fixed order, so they differ in the last bits.
  AconKernelVariantAVX512 = 2,
  /// aarch64 Advanced SIMD: 8 lanes (two 128-bit registers), one FMA for every a·b + c, the
  /// AVX2 variant's operations in its order: the same bits as AVX2, sums included.
  AconKernelVariantNEON = 3,
} AconKernelVariant;

/// Whether this build and this CPU (and OS) can run `variant`. The portable variant is always
/// supported; AVX2 and AVX-512 never off x86-64, NEON never off aarch64 (and always on it).
bool acon_kernels_variant_supported(AconKernelVariant variant);

/// The variant in use. By default the widest one the CPU supports; the environment variable
/// `ACON_KERNELS` (`portable`, `avx2`, `avx512` or `neon`, read once, when the kernels are first
/// used) caps it: the widest supported variant at or below the named one, in the order
/// portable < avx2 < avx512 on x86-64 and portable < neon on aarch64. Other values, and names
/// of another architecture's variants, are ignored.
AconKernelVariant acon_kernels_variant(void);

/// The variant that would be chosen without acon_kernels_set_variant (CPU and `ACON_KERNELS`).
AconKernelVariant acon_kernels_default_variant(void);

/// Selects `variant`; returns false, changing nothing, if the CPU does not support it. For
/// tests and benchmarks; not thread-safe against running kernels.
bool acon_kernels_set_variant(AconKernelVariant variant);

/// The name of `variant`, as `ACON_KERNELS` spells it: "portable", "avx2", "avx512" or "neon"
/// (also for a variant this target does not build); "unknown" for any other value.
const char *acon_kernels_variant_name(AconKernelVariant variant);

#ifdef __cplusplus
}
#endif

#endif
