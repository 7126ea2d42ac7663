// CWinogradKernels: the transforms of Winograd's F(2×2, 3×3) and F(4×4, 3×3) for 3×3, stride-1
// convolutions (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016). Between
// them run one GEMM per Winograd point per block of tiles (16 for F(2×2), 36 for F(4×4)), which
// the Swift side (Sources/NN/Winograd.swift) calls through cblas_sgemm; it also does the
// threading (over channels). In C so that an AVX-512 variant can be chosen at run time (SwiftPM
// builds for baseline x86-64).
//
// Tiles of m×m outputs (m = 2 or 4, the geometry's `m`): output tile (r, tw), with tile row
// r = n·th_count + th, covers output rows m·th ..< m·th + m and columns m·tw ..< m·tw + m of
// sample n, and reads the (m+2)×(m+2) input patch at rows m·th − ph ..< +m+2, columns
// m·tw − pw ..< +m+2 (zero outside the image). A block is the tiles of tile rows
// [row0, row0 + rows), T = rows · tw_count of them, tile t = (r − row0) · tw_count + tw.
// Transformed matrices hold the P = (m+2)² Winograd points ξ outermost: V [P, C, T], M [P, K, T],
// U [P, K, C]. Point ξ of V, M and D starts ξ · wino_point_stride(C·T or K·T) floats in (a few
// floats more than C·T: see there); U's points are packed (ξ · K·C).
#ifndef CWINOGRADKERNELS_H
#define CWINOGRADKERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// The geometry of one F(m×m, 3×3) pass (m = 2 or 4): input [n, c, h, w] with zero padding
/// (ph, pw), output [n, k, oh, ow] with oh = h + 2·ph − 2, ow = w + 2·pw − 2; th = ⌈oh / m⌉,
/// tw = ⌈ow / m⌉.
typedef struct WinoGeometry {
  ptrdiff_t n, c, h, w, ph, pw, k, oh, ow, th, tw, m;
} WinoGeometry;

/// U[ξ, o, i] = (G · w[o, i] · Gᵀ)[ξ] for the weight w [k, c, 3, 3] (o < k, i < c): the
/// forward filter transform of F(m×m, 3×3), U [(m+2)², k, c]. With `flip` != 0, w is read as
/// [c, k, 3, 3] and each kernel rotated by 180°: U[ξ, o, i] from w[i, o, 2 − u, 2 − v], the
/// filter of the convolution that takes dy to dx. Writes rows o0 ..< o1 (U[·, o, ·] for
/// o0 ≤ o < o1), so that callers can split the rows between threads; the bits do not depend on
/// the split.
void wino_filter_transform(const float *w, ptrdiff_t k, ptrdiff_t c, int flip, ptrdiff_t m, ptrdiff_t o0,
                           ptrdiff_t o1, float *u);

/// dw[o, i] += Gᵀ · dU[·, o, i] · G, for dU [(m+2)², k, c] and dw [k, c, 3, 3], rows
/// o0 ≤ o < o1.
void wino_filter_gradient(const float *du, ptrdiff_t k, ptrdiff_t c, ptrdiff_t m, ptrdiff_t o0, ptrdiff_t o1,
                          float *dw);

/// Floats from the start of one Winograd point of V, M or D to the next, for points of
/// `elements` floats (C·T or K·T): `elements` rounded up to whole 64-byte lines, and to an odd
/// number of them, so that the (m+2)² output (or input) streams of a tile transform do not share
/// cache sets, as they would at a multiple of 4 KB.
ptrdiff_t wino_point_stride(ptrdiff_t elements);

/// V[ξ, i, t] = (Bᵀ · d · B)[ξ] of the (m+2)×(m+2) input patch d of channel i of each tile of
/// the block, for channels i in [c0, c1). x [n, c, h, w], V [(m+2)², c, T] with point stride
/// wino_point_stride(c·T).
void wino_input_transform(const WinoGeometry *g, const float *x, ptrdiff_t row0, ptrdiff_t rows,
                          ptrdiff_t c0, ptrdiff_t c1, float *v);

/// y[n, o, m·th + a, m·tw + b] = (Aᵀ · M[·, o, t] · A)[a, b] (+ bias[o]; then max(·, 0) when
/// relu != 0) for output channels [k0, k1), within the image; bias may be NULL.
/// M [(m+2)², k, T] with point stride wino_point_stride(k·T).
void wino_output_transform(const WinoGeometry *g, const float *m, ptrdiff_t row0, ptrdiff_t rows,
                           ptrdiff_t k0, ptrdiff_t k1, const float *bias, int relu, float *y);

/// D[ξ, o, t] = (A · dY · Aᵀ)[ξ] of the m×m block dY of dy [n, k, oh, ow] of each tile (zero
/// outside the output), for channels [k0, k1): the transform whose product with V gives dU.
/// D [(m+2)², k, T] with point stride wino_point_stride(k·T).
void wino_gradient_transform(const WinoGeometry *g, const float *dy, ptrdiff_t row0, ptrdiff_t rows,
                             ptrdiff_t k0, ptrdiff_t k1, float *d);

#ifdef __cplusplus
}
#endif

#endif
