// CImageCodecs: the libpng reader behind ImageData's PNG decoder. libpng reports errors by
// longjmp, which Swift cannot catch, so the setjmp lives here and every failure comes back as a
// return code and a message.
#ifndef CIMAGECODECS_H
#define CIMAGECODECS_H
#include <stddef.h>
#include <stdint.h>

/// What a PNG header says.
typedef struct {
  uint32_t width, height;
  int bitDepth;   ///< 1, 2, 4, 8 or 16
  int colorType;  ///< PNG_COLOR_TYPE_*: 0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA
  int interlaced; ///< 1 for Adam7
} acon_png_info;

/// Reads the signature and IHDR of the PNG in `data[0..<size]`.
/// Returns 0, or -1 with a message in `err[0..<errSize]` (NUL-terminated).
int acon_png_read_info(const uint8_t *data, size_t size, acon_png_info *info, char *err, size_t errSize);

/// Decodes the PNG in `data[0..<size]` into `out`, `height` rows of `width * 3` bytes (8-bit RGB,
/// row-major), expanded as PIL's convert("RGB"): palette to its colours, gray (1/2/4/8 bits)
/// replicated into R, G, B, alpha dropped, 16-bit samples to their high byte.
/// `width` and `height` must be the header's (read first with acon_png_read_info); `outSize` must be
/// at least width * height * 3. Returns 0, or -1 with a message in `err`.
int acon_png_decode_rgb(const uint8_t *data, size_t size, uint32_t width, uint32_t height, uint8_t *out,
                        size_t outSize, char *err, size_t errSize);

#endif
