// CImageCodecs: libpng's reader with its setjmp kept in C (see include/CImageCodecs.h).
#include "CImageCodecs.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  const uint8_t *data;
  size_t size, offset;
  char *err;
  size_t errSize;
} reader_state;

static void on_error(png_structp png, png_const_charp message) {
  reader_state *s = (reader_state *)png_get_error_ptr(png);
  if (s && s->err && s->errSize > 0) snprintf(s->err, s->errSize, "%s", message);
  png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp message) {
  (void)png;
  (void)message;  // Warnings (an unknown chunk, a bad CRC in an ancillary chunk) are not failures.
}

static void on_read(png_structp png, png_bytep out, png_size_t count) {
  reader_state *s = (reader_state *)png_get_io_ptr(png);
  if (count > s->size - s->offset) png_error(png, "the file ends inside the image data (truncated)");
  memcpy(out, s->data + s->offset, count);
  s->offset += count;
}

static void set_err(char *err, size_t errSize, const char *message) {
  if (err && errSize > 0) snprintf(err, errSize, "%s", message);
}

int acon_png_read_info(const uint8_t *data, size_t size, acon_png_info *info, char *err, size_t errSize) {
  if (size < 8 || png_sig_cmp(data, 0, 8) != 0) {
    set_err(err, errSize, "not a PNG file (no PNG signature)");
    return -1;
  }
  reader_state s = {data, size, 0, err, errSize};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &s, on_error, on_warning);
  if (!png) {
    set_err(err, errSize, "libpng: out of memory");
    return -1;
  }
  png_infop pinfo = png_create_info_struct(png);
  if (!pinfo) {
    png_destroy_read_struct(&png, NULL, NULL);
    set_err(err, errSize, "libpng: out of memory");
    return -1;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &pinfo, NULL);
    return -1;
  }
  png_set_read_fn(png, &s, on_read);
  // No size limit here: the caller refuses large images from these numbers before any allocation.
  png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
  png_read_info(png, pinfo);
  info->width = png_get_image_width(png, pinfo);
  info->height = png_get_image_height(png, pinfo);
  info->bitDepth = png_get_bit_depth(png, pinfo);
  info->colorType = png_get_color_type(png, pinfo);
  info->interlaced = png_get_interlace_type(png, pinfo) != PNG_INTERLACE_NONE;
  png_destroy_read_struct(&png, &pinfo, NULL);
  return 0;
}

int acon_png_decode_rgb(const uint8_t *data, size_t size, uint32_t width, uint32_t height, uint8_t *out,
                        size_t outSize, char *err, size_t errSize) {
  if (size < 8 || png_sig_cmp(data, 0, 8) != 0) {
    set_err(err, errSize, "not a PNG file (no PNG signature)");
    return -1;
  }
  if (width == 0 || height == 0 || (size_t)width * height * 3 > outSize) {
    set_err(err, errSize, "output buffer too small for the image");
    return -1;
  }
  reader_state s = {data, size, 0, err, errSize};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &s, on_error, on_warning);
  if (!png) {
    set_err(err, errSize, "libpng: out of memory");
    return -1;
  }
  png_infop pinfo = png_create_info_struct(png);
  // volatile: modified between setjmp and longjmp.
  png_bytep *volatile rows = NULL;
  if (!pinfo) {
    png_destroy_read_struct(&png, NULL, NULL);
    set_err(err, errSize, "libpng: out of memory");
    return -1;
  }
  if (setjmp(png_jmpbuf(png))) {
    free((void *)rows);
    png_destroy_read_struct(&png, &pinfo, NULL);
    return -1;
  }
  png_set_read_fn(png, &s, on_read);
  png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
  png_read_info(png, pinfo);
  if (png_get_image_width(png, pinfo) != width || png_get_image_height(png, pinfo) != height) {
    png_error(png, "the header changed between reads");
  }
  int colorType = png_get_color_type(png, pinfo);
  int bitDepth = png_get_bit_depth(png, pinfo);
  if (bitDepth == 16) png_set_strip_16(png);  // the high byte, as PIL reads 16-bit RGB
  if (colorType == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (colorType == PNG_COLOR_TYPE_GRAY && bitDepth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (colorType == PNG_COLOR_TYPE_GRAY || colorType == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
  png_set_strip_alpha(png);  // also the alpha palette expansion adds from tRNS
  png_set_interlace_handling(png);
  png_read_update_info(png, pinfo);
  if (png_get_rowbytes(png, pinfo) != (size_t)width * 3 || png_get_channels(png, pinfo) != 3 ||
      png_get_bit_depth(png, pinfo) != 8) {
    png_error(png, "libpng did not expand this image to 8-bit RGB");
  }
  rows = (png_bytep *)malloc(sizeof(png_bytep) * height);
  if (!rows) png_error(png, "out of memory for the row table");
  for (uint32_t y = 0; y < height; y++) rows[y] = out + (size_t)y * width * 3;
  png_read_image(png, (png_bytepp)rows);
  png_read_end(png, NULL);
  free((void *)rows);
  png_destroy_read_struct(&png, &pinfo, NULL);
  return 0;
}
