// CImageKernels: the image-folder loader's C kernels. A JPEG decode of a rectangle only
// (libjpeg-turbo's libjpeg API: jpeg_crop_scanline for the columns, jpeg_skip_scanlines for the
// rows), whose pixels are the same bytes as TurboJPEG's full decode at those places. libjpeg
// reports errors by longjmp, so the setjmp lives here and failures come back as a return code.
#ifndef CIMAGEKERNELS_H
#define CIMAGEKERNELS_H
#include <stddef.h>
#include <stdint.h>

/// The rectangle a region decode wrote: columns [x, x + width), rows [y, y + height) of the image.
typedef struct {
  int x, y, width, height;
} acon_jpeg_region;

/// The most bytes `acon_jpeg_decode_region` writes for the request x0..<x1 × y0..<y1 of an image
/// `imageWidth` wide: the columns widen to whole iMCUs (at most 32 pixels more) plus a margin, the
/// rows by a margin and one spare row (scratch for the file's last row).
size_t acon_jpeg_region_capacity(int imageWidth, int x0, int x1, int y0, int y1);

/// Decodes the columns x0..<x1 and rows y0..<y1 (full-size pixel coordinates, 0 <= x0 < x1 <=
/// width, 0 <= y0 < y1 <= height) of the baseline or progressive JPEG in `data[0..<size]` as
/// 8-bit RGB (gray expanded to 3 channels; CMYK is refused: decode it whole). The rectangle
/// written, `*region`, contains the request (it grows left and right to iMCU boundaries and a few
/// pixels of margin so the chroma upsampling sees the same neighbours as a full decode): `out`
/// gets region->height rows of region->width * 3 bytes, each byte equal to TurboJPEG's full RGB
/// decode (tjDecompress2, flags 0) at that place. The rest of the file is still entropy-decoded
/// and checked, so a truncated or corrupt file fails as the full decode fails.
/// Returns 0; 1 for a warning (corrupt or truncated data: treat as an error); -1 for an error; -2
/// for a CMYK/YCCK file; with a message in `err[0..<errSize]` (NUL-terminated).
int acon_jpeg_decode_region(const uint8_t *data, size_t size, int x0, int x1, int y0, int y1, uint8_t *out,
                            size_t outSize, acon_jpeg_region *region, char *err, size_t errSize);

/// PIL's antialiased bilinear resize, horizontal pass (ImagingResampleHorizontal_8bpc): `rows`
/// rows of 8-bit RGB, `srcWidth` pixels each, row r at `src + r * srcStride`, into `rows` rows of `outW * 3` bytes at `dst`.
/// Output pixel o sums `bounds[2o + 1]` taps from
/// source pixel `bounds[2o]` with the 22-bit fixed-point weights `k[o * kSize ...]` (all >= 0, and
/// 0 past the pixel's tap count up to kSize; bounds[2o] never decreases with o),
/// plus 2^21, then >> 22 and clips to 0...255: PIL's bytes. AVX2 when the CPU has it.
void acon_resample_horizontal(const uint8_t *src, ptrdiff_t srcStride, int srcWidth, int rows, int outW,
                              const int32_t *k, int kSize, const intptr_t *bounds, uint8_t *dst);

/// The vertical pass (ImagingResampleVertical_8bpc): output row o (of `outH`, `rowBytes` bytes
/// each, at `dst + o * rowBytes`) sums `bounds[2o + 1]` source rows from row `bounds[2o] - firstRow`
/// (row r at `src + r * srcStride`) with the weights `k[o * kSize ...]`, rounded and clipped as above.
void acon_resample_vertical(const uint8_t *src, ptrdiff_t srcStride, intptr_t firstRow, int rowBytes, int outH,
                            const int32_t *k, int kSize, const intptr_t *bounds, uint8_t *dst);

#endif
