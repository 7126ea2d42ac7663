// CLoweringKernels: C loops of TensorCore's im2col and col2im (Sources/TensorCore/Im2Col.swift)
// where Swift's code generation falls short: the strided gathers and scatters of 3-wide kernels
// at stride 2, which Swift runs one element at a time, run as AVX-512 loads, permutes and masked
// adds where the CPU has them.
#ifndef CLOWERINGKERNELS_H
#define CLOWERINGKERNELS_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Whether acon_im2col_w3s2 and acon_col2im_w3s2 run here (the CPU has AVX-512); else they do nothing.
bool acon_im2col_w3s2_available(void);

/// im2col of 3-wide kernels at stride 2 (width) for units [u0, u1): unit u = (channel u / kh,
/// kernel row u % kh) fills the column rows 3u, 3u + 1, 3u + 2 (kernel columns 0, 1, 2) for
/// every sample: column s·oh·ow + i·ow + j of row 3u + kj is x[s, u / kh, i·sh − ph + u % kh,
/// 2j − pw + kj], 0 where that lies in the padding. The same values as any im2col; 16 output
/// columns per vector (two masked loads of a row's 32 columns and a third for the last tap,
/// three permutes, three masked stores).
/// Shapes: x [n, c, h, w]; col [c·kh·3, col_stride] with col_stride ≥ n·oh·ow.
void acon_im2col_w3s2(
    const float *x, ptrdiff_t n, ptrdiff_t c, ptrdiff_t h, ptrdiff_t w, ptrdiff_t kh, ptrdiff_t sh, ptrdiff_t ph,
    ptrdiff_t pw, ptrdiff_t oh, ptrdiff_t ow, float *col, ptrdiff_t col_stride, ptrdiff_t u0, ptrdiff_t u1);

/// col2im of 3-wide kernels at stride 2 (width) for channels [c0, c1), the adjoint of
/// acon_im2col_w3s2: dx[s, ch, r, w] (+)= the column entries whose window reads it, in the order
/// of kernel offsets (ki, then kj), each term added only where it exists, so every element has
/// the bits of a per-element gather-table loop. With accumulate false each plane is zeroed first.
/// 16 input columns per vector (per tap: one masked load, one permute, one masked add).
/// Shapes: col [c·kh·3, col_stride] with col_stride ≥ n·oh·ow; dx [n, c, h, w].
void acon_col2im_w3s2(
    const float *col, ptrdiff_t col_stride, ptrdiff_t n, ptrdiff_t c, ptrdiff_t h, ptrdiff_t w, ptrdiff_t kh,
    ptrdiff_t sh, ptrdiff_t ph, ptrdiff_t pw, ptrdiff_t oh, ptrdiff_t ow, float *dx, bool accumulate, ptrdiff_t c0,
    ptrdiff_t c1);

#ifdef __cplusplus
}
#endif

#endif
