// AconKernels.c: the fused ACON-C per-channel loops and the polynomial exp/sigmoid. Their body
// (AconKernelsBody.h) is written once with GCC/Clang vector extensions and included here at two
// widths, 8 and 16 floats, which give up to four variants, chosen at run time (on x86-64 by
// __builtin_cpu_supports, or the ACON_KERNELS environment variable, see CAconKernels.h):
//   - AVX-512 (F, BW, DQ, VL) + FMA, 16 lanes, masked loads and stores for a plane's tail
//     (x86-64 only);
//   - AVX2 + FMA, 8 lanes (x86-64 only);
//   - NEON (AArch64 Advanced SIMD, always present there), 8 lanes held in two 128-bit registers,
//     one FMA for every a·b + c: the operations of the AVX2 variant in the same order and the
//     same lanes, sums included, so exactly its bits (aarch64 only);
//   - portable (baseline x86-64 / any target, no FMA), 8 lanes: the same operations in the same
//     order as the former Swift SIMD8 code, so the same elementwise bits on every target.
// The x86 SIMD variants take a per-function `target` attribute; every SIMD variant uses one FMA
// for every a·b + c of the exp and the kernels: lane for lane the same operations, so AVX-512,
// AVX2 and NEON give the same y, dx, σ, e^x and per-element dβ bits; only the per-channel (and
// per-plane) sums of AVX-512 differ in the last bits, because its lanes are reduced in a
// different fixed order (see fixed_order_sum16).
//
// Portability: everything x86-specific (target attributes, AVX2/AVX-512 builtins, cpuid) is
// compiled only where ACON_X86_VARIANTS is 1 (x86-64), the NEON variant only where ACON_NEON is
// 1 (aarch64). Defining ACON_PORTABLE_ONLY leaves only the portable variant (scripts/
// cross-check.sh compiles the file so, to prove that variant needs nothing target-specific).
//
// Contraction is off: an FMA appears exactly where `madd` asks for one, never by the compiler's
// choice, so the bits are fixed per variant.
//
// Exp (after Cephes expf): n = round(x·log2 e) by the 1.5·2²³ magic number; r = x − n·ln2 with
// ln2 split in two (Cody–Waite); e^r ≈ 1 + r + r²·P(r), P of degree 4 (minimax, relative error,
// on [−ln2/2, ln2/2], truncation error 3.1e−9); then p·2ⁿ. `exp_full` scales by two normal
// factors 2^⌊n/2⌋·2^(n−⌊n/2⌋) for gradual underflow; the sigmoid only needs e^v on
// [−86.5, 88.8] and scales by (p + p)·2^(n−1), one normal factor, the same bits there (AVX-512
// does that scaling in one VSCALEFPS, which rounds p·2ⁿ once: the same bits again, checked over
// all 2³² inputs against the shift-and-multiply form).
// Clamps are `v > hi ? hi : v` selects: a comparison with NaN is false, so NaN passes through.
#include "CAconKernels.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__) && !defined(ACON_PORTABLE_ONLY)
#define ACON_X86_VARIANTS 1
#else
#define ACON_X86_VARIANTS 0
#endif
#if defined(__aarch64__) && !defined(ACON_PORTABLE_ONLY)
#define ACON_NEON 1
#else
#define ACON_NEON 0
#endif

#pragma STDC FP_CONTRACT OFF
// The vector helpers are always inlined, so no 32- or 64-byte vector ever crosses a call between
// code of different targets: the ABI difference -Wpsabi warns about cannot arise.
#pragma clang diagnostic ignored "-Wpsabi"

#define INL static inline __attribute__((always_inline))
#if ACON_X86_VARIANTS
#define AVX2 __attribute__((target("avx2,fma")))
#define AVX512_FEATURES "avx512f,avx512bw,avx512dq,avx512vl,fma"
#define AVX512 __attribute__((target(AVX512_FEATURES)))
#define INL512 static inline __attribute__((always_inline, target(AVX512_FEATURES)))
#endif

/// Vectors per group (see "Groups" in AconKernelsBody.h); channels whose sums a backward call
/// keeps on the stack at once.
enum { U = 4, CH = 64 };

/// Where plane (j, ch) of an (n, c, hw) tensor starts: NCHW order, or channels-major with `cm`
/// (each channel's n planes one after the other).
INL ptrdiff_t plane_offset(ptrdiff_t j, ptrdiff_t ch, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw, int cm) {
  return cm ? (ch * n + j) * hw : (j * c + ch) * hw;
}

/// β of plane (j, ch): the channel's, the plane's, or the start of the plane's row (NCHW).
INL const float *beta_at(
    const float *beta, ptrdiff_t j, ptrdiff_t ch, ptrdiff_t c, ptrdiff_t hw, AconBetaMode mode) {
  if (mode == AconBetaModeChannel) return beta + ch;
  if (mode == AconBetaModePlane) return beta + j * c + ch;
  return beta + (j * c + ch) * hw;
}

// MARK: - 8 lanes (AVX2, NEON and portable)

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

INL v8f splat8(float a) { return (v8f){a, a, a, a, a, a, a, a}; }

INL v8f load8(const float *p) {
  v8f v;
  memcpy(&v, p, sizeof v);
  return v;
}

INL void store8(float *p, v8f v) { memcpy(p, &v, sizeof v); }

/// m ? a : b, lane-wise, for a comparison mask m.
INL v8f select8(v8i m, v8f a, v8f b) { return (v8f)(((v8i)a & m) | ((v8i)b & ~m)); }

/// The sum of the lanes in a fixed order: ((0+4) + (2+6)) + ((1+5) + (3+7)).
INL float fixed_order_sum8(v8f v) {
  typedef float v4f __attribute__((vector_size(16)));
  typedef float v2f __attribute__((vector_size(8)));
  v4f h = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
  v2f q = __builtin_shufflevector(h, h, 0, 1) + __builtin_shufflevector(h, h, 2, 3);
  return q[0] + q[1];
}

/// The lanes < part of a partial vector, as a comparison mask.
INL v8i tail_mask8(int part) {
  const v8i iota = {0, 1, 2, 3, 4, 5, 6, 7};
  return iota < (v8i){part, part, part, part, part, part, part, part};
}

/// The partial vector of a plane's rest: lanes where `mask` is set are read, the others read as
/// 0, and no memory behind them is touched (AVX2's masked load where F is set on x86-64; NEON and
/// the portable variant copy lane by lane).
/// (The mask goes by pointer: a 32-byte vector passed by value to an AVX2 function from portable
/// code would change the ABI. The function is inlined into the AVX2 variant only.)
#if ACON_X86_VARIANTS
__attribute__((target("avx2"))) static inline void load_masked_avx2(
    const float *p, const v8i *mask, v8f *out) {
  *out = __builtin_ia32_maskloadps256((const v8f *)p, *mask);
}
#endif

INL v8f load_part8(const float *p, v8i mask, int part, const int F) {
#if ACON_X86_VARIANTS
  if (F) {
    v8f v;
    load_masked_avx2(p, &mask, &v);
    return v;
  }
#else
  (void)mask, (void)F;
#endif
  float b[8] = {0};
  for (int t = 0; t < part; t++) b[t] = p[t];
  return load8(b);
}

/// e = p·2ⁿ for t = 1.5·2²³ + n (exp_reduce's t), n in [−125, 128]: p doubled (exact) times the
/// normal 2^(n−1), one rounding; +inf past Float.max.
INL v8f pow2_scale8(v8f p, v8f t) {
  v8f scale = (v8f)(((v8i)t << 23) + 0x3F000000);
  return (p + p) * scale;
}

/// The `part` valid lanes of a partial vector, stored one by one: that is quicker than AVX2's
/// masked store on AMD cores for the few lanes of a tail.
INL void store_part8(float *p, v8i mask, int part, v8f v) {
  (void)mask;
  float b[8];
  store8(b, v);
  for (int t = 0; t < part; t++) p[t] = b[t];
}

#define W 8
#define VF v8f
#define VI v8i
#define MASK v8i
#define FN(name) name##8
#define BODY INL
#include "AconKernelsBody.h"
#undef W
#undef VF
#undef VI
#undef MASK
#undef FN
#undef BODY

// MARK: - 16 lanes (AVX-512)

#if ACON_X86_VARIANTS

typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

INL512 v16f splat16(float a) { return (v16f){a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a}; }

INL512 v16f load16(const float *p) {
  v16f v;
  memcpy(&v, p, sizeof v);
  return v;
}

INL512 void store16(float *p, v16f v) { memcpy(p, &v, sizeof v); }

INL512 v16f select16(v16i m, v16f a, v16f b) { return (v16f)(((v16i)a & m) | ((v16i)b & ~m)); }

/// The sum of the lanes in a fixed order: lanes i and i + 8 first, then the 8-lane order, i.e.
/// (((0+8) + (4+12)) + ((2+10) + (6+14))) + (((1+9) + (5+13)) + ((3+11) + (7+15))).
INL512 float fixed_order_sum16(v16f v) {
  typedef float v8h __attribute__((vector_size(32)));
  typedef float v4f __attribute__((vector_size(16)));
  typedef float v2f __attribute__((vector_size(8)));
  v8h o = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
          __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  v4f h = __builtin_shufflevector(o, o, 0, 1, 2, 3) + __builtin_shufflevector(o, o, 4, 5, 6, 7);
  v2f q = __builtin_shufflevector(h, h, 0, 1) + __builtin_shufflevector(h, h, 2, 3);
  return q[0] + q[1];
}

/// The lanes < part of a partial vector, as an AVX-512 mask register value.
INL512 uint16_t tail_mask16(int part) { return (uint16_t)((1u << part) - 1); }

/// The partial vector of a plane's rest: one masked load (lanes outside `mask` read as 0, their
/// memory untouched) and one masked store.
INL512 v16f load_part16(const float *p, uint16_t mask, int part, const int F) {
  (void)part, (void)F;
  return __builtin_ia32_loadups512_mask(p, splat16(0), mask);
}

INL512 void store_part16(float *p, uint16_t mask, int part, v16f v) {
  (void)part;
  __builtin_ia32_storeups512_mask(p, v, mask);
}

/// pow2_scale8 in one VSCALEFPS: p·2ⁿ rounded once (n = t − 1.5·2²³, exact), the same bits as
/// the doubling and the multiply by 2^(n−1) for every n in [−125, 128], in fewer operations
/// (rounding: the current direction, 4 = _MM_FROUND_CUR_DIRECTION).
INL512 v16f pow2_scale16(v16f p, v16f t) {
  return __builtin_ia32_scalefps512_mask(p, t - splat16(12582912.0f), splat16(0), 0xFFFF, 4);
}

#define W 16
#define VF v16f
#define VI v16i
#define MASK uint16_t
#define FN(name) name##16
#define BODY INL512
#include "AconKernelsBody.h"
#undef W
#undef VF
#undef VI
#undef MASK
#undef FN
#undef BODY

#endif  // ACON_X86_VARIANTS

// MARK: - Variants

/// After streaming stores: an sfence orders them before whatever the caller does next (another
/// thread reading the output after a join). Streaming is only done by the x86 SIMD variants.
#if ACON_X86_VARIANTS
#define STREAM_FENCE(stream)         \
  do {                               \
    if (stream) __builtin_ia32_sfence(); \
  } while (0)
#else
#define STREAM_FENCE(stream) (void)(stream)
#endif

#define FORWARD_CALL(CHANNELS, S, E)                                                          \
  CHANNELS(x, y, sig, n, c, hw, cm, c0, c1, p1, p2, beta, mode, F, S, E, 0, st)

/// forward_<variant>: forward_channels<W> with F, hasSig and perElement as constants. SV: the
/// variant has streaming stores (x86 SIMD); elsewhere `stream` is ignored.
#define FORWARD_VARIANT(NAME, ATTR, CHANNELS_FN, FV, SV)                                      \
  ATTR static void NAME(                                                                      \
      const float *x, float *y, float *sig, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw, bool cm,  \
      ptrdiff_t c0, ptrdiff_t c1, const float *p1, const float *p2, const float *beta,        \
      AconBetaMode mode, bool stream) {                                                       \
    enum { F = FV };                                                                          \
    const int st = SV && stream;                                                              \
    switch ((sig != NULL) * 2 + (mode == AconBetaModeElement)) {                              \
    case 0: FORWARD_CALL(CHANNELS_FN, 0, 0); break;                                           \
    case 1: FORWARD_CALL(CHANNELS_FN, 0, 1); break;                                           \
    case 2: FORWARD_CALL(CHANNELS_FN, 1, 0); break;                                           \
    default: FORWARD_CALL(CHANNELS_FN, 1, 1); break;                                          \
    }                                                                                         \
    STREAM_FENCE(st);                                                                         \
  }

#if ACON_X86_VARIANTS
FORWARD_VARIANT(forward_avx512, AVX512, forward_channels16, 1, 1)
FORWARD_VARIANT(forward_avx2, AVX2, forward_channels8, 1, 1)
#endif
#if ACON_NEON
FORWARD_VARIANT(forward_neon, , forward_channels8, 1, 0)
#endif
FORWARD_VARIANT(forward_portable, , forward_channels8, 0, 0)

#define BACKWARD_CALL(CHANNELS, S, D, E)                                                      \
  CHANNELS(x, dy, dx, sig, n, c, hw, cm, c0, c1, p1, p2, beta, dbeta, mode, dp1, dp2, F, S, D, E, 0, st)

/// backward_<variant>: backward_channels<W> with F, hasSig, hasDx and perElement as constants.
#define BACKWARD_VARIANT(NAME, ATTR, CHANNELS_FN, FV, SV)                                     \
  ATTR static void NAME(                                                                      \
      const float *x, const float *dy, float *dx, const float *sig, ptrdiff_t n, ptrdiff_t c, \
      ptrdiff_t hw, bool cm, ptrdiff_t c0, ptrdiff_t c1, const float *p1, const float *p2,    \
      const float *beta, float *dbeta, AconBetaMode mode, float *dp1, float *dp2,             \
      bool stream) {                                                                          \
    enum { F = FV };                                                                          \
    const int st = SV && stream;                                                              \
    int pe = mode == AconBetaModeElement;                                                     \
    switch ((sig != NULL) * 4 + (dx != NULL) * 2 + pe) {                                      \
    case 0: BACKWARD_CALL(CHANNELS_FN, 0, 0, 0); break;                                       \
    case 1: BACKWARD_CALL(CHANNELS_FN, 0, 0, 1); break;                                       \
    case 2: BACKWARD_CALL(CHANNELS_FN, 0, 1, 0); break;                                       \
    case 3: BACKWARD_CALL(CHANNELS_FN, 0, 1, 1); break;                                       \
    case 4: BACKWARD_CALL(CHANNELS_FN, 1, 0, 0); break;                                       \
    case 5: BACKWARD_CALL(CHANNELS_FN, 1, 0, 1); break;                                       \
    case 6: BACKWARD_CALL(CHANNELS_FN, 1, 1, 0); break;                                       \
    default: BACKWARD_CALL(CHANNELS_FN, 1, 1, 1); break;                                      \
    }                                                                                         \
    STREAM_FENCE(st);                                                                         \
  }

#if ACON_X86_VARIANTS
BACKWARD_VARIANT(backward_avx512, AVX512, backward_channels16, 1, 1)
BACKWARD_VARIANT(backward_avx2, AVX2, backward_channels8, 1, 1)
#endif
#if ACON_NEON
BACKWARD_VARIANT(backward_neon, , backward_channels8, 1, 0)
#endif
BACKWARD_VARIANT(backward_portable, , backward_channels8, 0, 0)

/// pixel_forward_<variant> / pixel_backward_<variant>: Meta-ACON pixel-wise (β = σ(x)), no
/// saved σ; smax_forward_<variant> / smax_backward_<variant>: the smooth maximum over planes;
/// add_scalar_<variant>: dst = src + v. SV as for FORWARD_VARIANT.
#define EXTRA_VARIANTS(SUFFIX, ATTR, W_, FV, SV)                                                \
  ATTR static void pixel_forward_##SUFFIX(                                                    \
      const float *x, float *y, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw, ptrdiff_t c0,         \
      ptrdiff_t c1, const float *p1, const float *p2, bool stream) {                          \
    const int st = SV && stream;                                                              \
    forward_channels##W_(                                                                     \
        x, y, NULL, n, c, hw, 0, c0, c1, p1, p2, NULL, AconBetaModeElement, FV, 0, 0, 1, st); \
    STREAM_FENCE(st);                                                                         \
  }                                                                                           \
  ATTR static void pixel_backward_##SUFFIX(                                                   \
      const float *x, const float *dy, float *dx, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw,     \
      ptrdiff_t c0, ptrdiff_t c1, const float *p1, const float *p2, float *dp1, float *dp2,   \
      bool stream) {                                                                          \
    const int st = SV && stream;                                                              \
    if (dx)                                                                                   \
      backward_channels##W_(x, dy, dx, NULL, n, c, hw, 0, c0, c1, p1, p2, NULL, NULL,         \
                            AconBetaModeElement, dp1, dp2, FV, 0, 1, 0, 1, st);               \
    else                                                                                      \
      backward_channels##W_(x, dy, NULL, NULL, n, c, hw, 0, c0, c1, p1, p2, NULL, NULL,       \
                            AconBetaModeElement, dp1, dp2, FV, 0, 0, 0, 1, 0);                \
    STREAM_FENCE(st);                                                                         \
  }                                                                                           \
  ATTR static void smax_forward_##SUFFIX(                                                     \
      const float *a, const float *b, float *y, ptrdiff_t hw, ptrdiff_t p0, ptrdiff_t p1,     \
      float beta, bool stream) {                                                              \
    const int st = SV && stream;                                                              \
    if (st) smax_forward_planes##W_(a, b, y, hw, p0, p1, beta, FV, 1);                        \
    else smax_forward_planes##W_(a, b, y, hw, p0, p1, beta, FV, 0);                           \
    STREAM_FENCE(st);                                                                         \
  }                                                                                           \
  ATTR static void smax_backward_##SUFFIX(                                                    \
      const float *a, const float *b, const float *dy, float *da, float *db, ptrdiff_t hw,    \
      ptrdiff_t p0, ptrdiff_t p1, float beta, float *dbeta, bool stream) {                    \
    const int st = SV && stream;                                                              \
    if (st) smax_backward_planes##W_(a, b, dy, da, db, hw, p0, p1, beta, dbeta, FV, 1);       \
    else smax_backward_planes##W_(a, b, dy, da, db, hw, p0, p1, beta, dbeta, FV, 0);          \
    STREAM_FENCE(st);                                                                         \
  }                                                                                           \
  ATTR static void add_scalar_##SUFFIX(                                                       \
      const float *src, float *dst, ptrdiff_t count, float v, bool stream) {                  \
    const int st = SV && stream;                                                              \
    if (st) add_scalar##W_(src, dst, count, v, 1);                                            \
    else add_scalar##W_(src, dst, count, v, 0);                                               \
    STREAM_FENCE(st);                                                                         \
  }

#if ACON_X86_VARIANTS
EXTRA_VARIANTS(avx512, AVX512, 16, 1, 1)
EXTRA_VARIANTS(avx2, AVX2, 8, 1, 1)
#endif
#if ACON_NEON
EXTRA_VARIANTS(neon, , 8, 1, 0)
#endif
EXTRA_VARIANTS(portable, , 8, 0, 0)

#if ACON_X86_VARIANTS
AVX512 static void exp_avx512(const float *x, float *y, ptrdiff_t c) { map_channel16(x, y, c, 1, 0); }
AVX2 static void exp_avx2(const float *x, float *y, ptrdiff_t c) { map_channel8(x, y, c, 1, 0); }
AVX512 static void sigmoid_avx512(const float *x, float *y, ptrdiff_t c) { map_channel16(x, y, c, 1, 1); }
AVX2 static void sigmoid_avx2(const float *x, float *y, ptrdiff_t c) { map_channel8(x, y, c, 1, 1); }
#endif
#if ACON_NEON
static void exp_neon(const float *x, float *y, ptrdiff_t c) { map_channel8(x, y, c, 1, 0); }
static void sigmoid_neon(const float *x, float *y, ptrdiff_t c) { map_channel8(x, y, c, 1, 1); }
#endif
static void exp_portable(const float *x, float *y, ptrdiff_t c) { map_channel8(x, y, c, 0, 0); }
static void sigmoid_portable(const float *x, float *y, ptrdiff_t c) { map_channel8(x, y, c, 0, 1); }

// MARK: - Dispatch

typedef void ForwardFn(
    const float *, float *, float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, bool, ptrdiff_t, ptrdiff_t,
    const float *, const float *, const float *, AconBetaMode, bool);
typedef void BackwardFn(
    const float *, const float *, float *, const float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, bool,
    ptrdiff_t, ptrdiff_t, const float *, const float *, const float *, float *, AconBetaMode,
    float *, float *, bool);
typedef void MapFn(const float *, float *, ptrdiff_t);
typedef void PixelForwardFn(
    const float *, float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, const float *,
    const float *, bool);
typedef void PixelBackwardFn(
    const float *, const float *, float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t, ptrdiff_t,
    const float *, const float *, float *, float *, bool);
typedef void SmaxForwardFn(
    const float *, const float *, float *, ptrdiff_t, ptrdiff_t, ptrdiff_t, float, bool);
typedef void SmaxBackwardFn(
    const float *, const float *, const float *, float *, float *, ptrdiff_t, ptrdiff_t,
    ptrdiff_t, float, float *, bool);
typedef void AddScalarFn(const float *, float *, ptrdiff_t, float, bool);

/// The names, as ACON_KERNELS spells them, of every variant on every target.
static const char *const variant_names[] = {
    [AconKernelVariantPortable] = "portable",
    [AconKernelVariantAVX2] = "avx2",
    [AconKernelVariantAVX512] = "avx512",
    [AconKernelVariantNEON] = "neon",
};

enum { VARIANT_COUNT = sizeof variant_names / sizeof variant_names[0] };

/// The entry points of each variant, indexed by AconKernelVariant; all NULL for a variant that
/// this target does not compile.
static const struct {
  ForwardFn *forward;
  BackwardFn *backward;
  MapFn *exp, *sigmoid;
  PixelForwardFn *pixel_forward;
  PixelBackwardFn *pixel_backward;
  SmaxForwardFn *smax_forward;
  SmaxBackwardFn *smax_backward;
  AddScalarFn *add_scalar;
} variants[VARIANT_COUNT] = {
#define ENTRIES(V)                                                                             \
  {forward_##V, backward_##V, exp_##V, sigmoid_##V, pixel_forward_##V, pixel_backward_##V,      \
   smax_forward_##V, smax_backward_##V, add_scalar_##V}
    [AconKernelVariantPortable] = ENTRIES(portable),
#if ACON_X86_VARIANTS
    [AconKernelVariantAVX2] = ENTRIES(avx2),
    [AconKernelVariantAVX512] = ENTRIES(avx512),
#endif
#if ACON_NEON
    [AconKernelVariantNEON] = ENTRIES(neon),
#endif
#undef ENTRIES
};

/// Whether this build of the file contains `v` (whatever the CPU).
static bool variant_compiled(int v) {
  return v >= 0 && v < VARIANT_COUNT && variants[v].forward != NULL;
}

bool acon_kernels_variant_supported(AconKernelVariant variant) {
  if (!variant_compiled((int)variant)) return false;
  switch (variant) {
  case AconKernelVariantPortable: return true;
#if ACON_X86_VARIANTS
  case AconKernelVariantAVX2:
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  case AconKernelVariantAVX512:
    // __builtin_cpu_supports also checks that the OS saves the zmm and mask registers.
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("fma");
#endif
#if ACON_NEON
  // Advanced SIMD, FMA included, is part of every AArch64 CPU that Linux, macOS or Windows run on.
  case AconKernelVariantNEON: return true;
#endif
  default: return false;
  }
}

/// The widest supported variant, capped by ACON_KERNELS if it names one this target compiles
/// (the order is portable < avx2 < avx512 on x86-64, portable < neon on aarch64).
static AconKernelVariant default_variant(void) {
  int best = VARIANT_COUNT - 1;
  const char *env = getenv("ACON_KERNELS");
  if (env) {
    for (int v = 0; v < VARIANT_COUNT; v++) {
      if (variant_compiled(v) && strcmp(env, variant_names[v]) == 0) best = v;
    }
  }
  while (best > 0 && !acon_kernels_variant_supported((AconKernelVariant)best)) best--;
  return (AconKernelVariant)best;
}

/// The variant in use, −1 until first needed. Read with relaxed atomics; set once lazily (every
/// thread computes the same value) or by acon_kernels_set_variant.
static int current_variant = -1;

static int variant(void) {
  int v = __atomic_load_n(&current_variant, __ATOMIC_RELAXED);
  if (v < 0) {
    v = default_variant();
    __atomic_store_n(&current_variant, v, __ATOMIC_RELAXED);
  }
  return v;
}

AconKernelVariant acon_kernels_variant(void) { return (AconKernelVariant)variant(); }

AconKernelVariant acon_kernels_default_variant(void) { return default_variant(); }

bool acon_kernels_set_variant(AconKernelVariant v) {
  if ((unsigned)v >= VARIANT_COUNT || !acon_kernels_variant_supported(v)) return false;
  __atomic_store_n(&current_variant, (int)v, __ATOMIC_RELAXED);
  return true;
}

const char *acon_kernels_variant_name(AconKernelVariant v) {
  return (unsigned)v < VARIANT_COUNT ? variant_names[v] : "unknown";
}

void acon_forward_channels(
    const float *x, float *y, float *sig, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw,
    bool channelsMajor, ptrdiff_t c0, ptrdiff_t c1, const float *p1, const float *p2,
    const float *beta, AconBetaMode betaMode, bool stream) {
  variants[variant()].forward(
      x, y, sig, n, c, hw, channelsMajor, c0, c1, p1, p2, beta, betaMode, stream);
}

void acon_backward_channels(
    const float *x, const float *dy, float *dx, const float *sig, ptrdiff_t n, ptrdiff_t c,
    ptrdiff_t hw, bool channelsMajor, ptrdiff_t c0, ptrdiff_t c1, const float *p1,
    const float *p2, const float *beta, float *dbeta, AconBetaMode betaMode, float *dp1,
    float *dp2, bool stream) {
  variants[variant()].backward(
      x, dy, dx, sig, n, c, hw, channelsMajor, c0, c1, p1, p2, beta, dbeta, betaMode, dp1, dp2,
      stream);
}

void acon_exp(const float *x, float *y, ptrdiff_t count) { variants[variant()].exp(x, y, count); }

void acon_sigmoid(const float *x, float *y, ptrdiff_t count) {
  variants[variant()].sigmoid(x, y, count);
}

void acon_pixelwise_forward_channels(
    const float *x, float *y, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw, ptrdiff_t c0, ptrdiff_t c1,
    const float *p1, const float *p2, bool stream) {
  variants[variant()].pixel_forward(x, y, n, c, hw, c0, c1, p1, p2, stream);
}

void acon_pixelwise_backward_channels(
    const float *x, const float *dy, float *dx, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw,
    ptrdiff_t c0, ptrdiff_t c1, const float *p1, const float *p2, float *dp1, float *dp2,
    bool stream) {
  variants[variant()].pixel_backward(x, dy, dx, n, c, hw, c0, c1, p1, p2, dp1, dp2, stream);
}

void acon_smooth_max_forward_planes(
    const float *a, const float *b, float *y, ptrdiff_t hw, ptrdiff_t p0, ptrdiff_t p1,
    float beta, bool stream) {
  variants[variant()].smax_forward(a, b, y, hw, p0, p1, beta, stream);
}

void acon_smooth_max_backward_planes(
    const float *a, const float *b, const float *dy, float *da, float *db, ptrdiff_t hw,
    ptrdiff_t p0, ptrdiff_t p1, float beta, float *dbeta, bool stream) {
  variants[variant()].smax_backward(a, b, dy, da, db, hw, p0, p1, beta, dbeta, stream);
}

void acon_add_scalar(const float *src, float *dst, ptrdiff_t count, float v, bool stream) {
  variants[variant()].add_scalar(src, dst, count, v, stream);
}

/// The size of CPU 0's highest-level data or unified cache as Linux describes it in
/// /sys/devices/system/cpu/cpu0/cache/index<i>/ (files level, type and size, e.g. "32768K");
/// 0 if there is no such description.
static size_t sysfs_last_level_cache(void) {
  size_t best = 0;
  long best_level = 0;
  for (int i = 0; i < 16; i++) {
    char path[80], text[32];
    long level = 0;
    size_t size = 0;
    char unit = 0;
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", i);
    FILE *f = fopen(path, "r");
    if (!f) break;  // the indices are consecutive
    int ok = fscanf(f, "%ld", &level) == 1;
    fclose(f);
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/type", i);
    if (!ok || !(f = fopen(path, "r"))) continue;
    ok = fgets(text, sizeof text, f) != NULL && strncmp(text, "Instruction", 11) != 0;
    fclose(f);
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
    if (!ok || !(f = fopen(path, "r"))) continue;
    ok = fscanf(f, "%zu%c", &size, &unit) >= 1;
    fclose(f);
    if (!ok) continue;
    if (unit == 'K') size <<= 10;
    else if (unit == 'M') size <<= 20;
    else if (unit == 'G') size <<= 30;
    if (level > best_level || (level == best_level && size > best)) best = size, best_level = level;
  }
  return best;
}

/// The last-level cache in bytes; SIZE_MAX until first needed.
static size_t last_level_cache = SIZE_MAX;

size_t acon_last_level_cache_bytes(void) {
  size_t bytes = __atomic_load_n(&last_level_cache, __ATOMIC_RELAXED);
  if (bytes == SIZE_MAX) {
    bytes = sysfs_last_level_cache();
    long v = -1;
#ifdef _SC_LEVEL3_CACHE_SIZE
    if (bytes == 0) v = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (bytes == 0 && v <= 0) v = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    if (bytes == 0 && v > 0) bytes = (size_t)v;
    __atomic_store_n(&last_level_cache, bytes, __ATOMIC_RELAXED);
  }
  return bytes;
}

/// The streaming threshold in bytes; 0 until first needed (then half the last-level cache).
static size_t streaming_threshold = 0;

size_t acon_kernels_streaming_threshold(void) {
  size_t t = __atomic_load_n(&streaming_threshold, __ATOMIC_RELAXED);
  if (t == 0) {
    size_t llc = acon_last_level_cache_bytes();
    t = llc > 0 ? llc / 2 : (size_t)16 << 20;
    if (t == 0) t = 1;
    __atomic_store_n(&streaming_threshold, t, __ATOMIC_RELAXED);
  }
  return t;
}

void acon_kernels_set_streaming_threshold(size_t bytes) {
  __atomic_store_n(&streaming_threshold, bytes == 0 ? 1 : bytes, __ATOMIC_RELAXED);
}
