// CWinogradKernels: the transforms of Winograd's F(2×2, 3×3) for 3×3, stride-1 convolutions
// (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016). Between them run
// 16 GEMMs per block of tiles, which the Swift side (Sources/NN/Winograd.swift) calls through
// cblas_sgemm; it also does the threading (over channels). In C so that an AVX-512 variant can
// be chosen at run time (SwiftPM builds for baseline x86-64).
//
// Tiles: output tile (r, tw), with tile row r = n·th_count + th, covers outputs rows 2·th, 2·th+1
// and columns 2·tw, 2·tw+1 of sample n, and reads the 4×4 input patch at rows 2·th − ph ..< +4,
// columns 2·tw − pw ..< +4 (zero outside the image). A block is the tiles of tile rows
// [row0, row0 + rows), T = rows · tw_count of them, tile t = (r − row0) · tw_count + tw.
// Transformed matrices hold the 16 Winograd points ξ outermost: V [16, C, T], M [16, K, T],
// U [16, K, C].
#ifndef CWINOGRADKERNELS_H
#define CWINOGRADKERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// The geometry of one F(2×2, 3×3) pass: input [n, c, h, w] with zero padding (ph, pw),
/// output [n, k, oh, ow] with oh = h + 2·ph − 2, ow = w + 2·pw − 2; th = ⌈oh / 2⌉, tw = ⌈ow / 2⌉.
typedef struct WinoGeometry {
  ptrdiff_t n, c, h, w, ph, pw, k, oh, ow, th, tw;
} WinoGeometry;

/// U[ξ, o, i] = (G · w[o, i] · Gᵀ)[ξ] for the weight w [k, c, 3, 3] (o < k, i < c): the
/// forward filter transform, U [16, k, c]. With `flip` != 0, w is read as [c, k, 3, 3] and
/// each kernel rotated by 180°: U[ξ, o, i] from w[i, o, 2 − u, 2 − v], the filter of the
/// convolution that takes dy to dx.
void wino_filter_transform(const float *w, ptrdiff_t k, ptrdiff_t c, int flip, float *u);

/// dw[o, i] += Gᵀ · dU[·, o, i] · G, for dU [16, k, c] and dw [k, c, 3, 3].
void wino_filter_gradient(const float *du, ptrdiff_t k, ptrdiff_t c, float *dw);

/// V[ξ, i, t] = (Bᵀ · d · B)[ξ] of the 4×4 input patch d of channel i of each tile of the block,
/// for channels i in [c0, c1). x [n, c, h, w], V [16, c, T].
void wino_input_transform(const WinoGeometry *g, const float *x, ptrdiff_t row0, ptrdiff_t rows,
                          ptrdiff_t c0, ptrdiff_t c1, float *v);

/// y[n, o, 2·th + a, 2·tw + b] = (Aᵀ · M[·, o, t] · A)[a, b] (+ bias[o]; then max(·, 0) when
/// relu != 0) for output channels [k0, k1), within the image; bias may be NULL. M [16, k, T].
void wino_output_transform(const WinoGeometry *g, const float *m, ptrdiff_t row0, ptrdiff_t rows,
                           ptrdiff_t k0, ptrdiff_t k1, const float *bias, int relu, float *y);

/// D[ξ, o, t] = (A · dY · Aᵀ)[ξ] of the 2×2 block dY of dy [n, k, oh, ow] of each tile (zero
/// outside the output), for channels [k0, k1): the transform whose product with V gives dU.
void wino_gradient_transform(const WinoGeometry *g, const float *dy, ptrdiff_t row0, ptrdiff_t rows,
                             ptrdiff_t k0, ptrdiff_t k1, float *d);

#ifdef __cplusplus
}
#endif

#endif
