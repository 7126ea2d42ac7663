// JPEGRegion: a JPEG decode of a rectangle with libjpeg-turbo's libjpeg API (see CImageKernels.h).
#include "CImageKernels.h"

#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>

// Pixels decoded beyond the request on each side: h2v2 "fancy" upsampling reads one chroma
// sample (two pixels) to each side, and the decoded rectangle's own edges are treated as image
// edges, so the margin keeps the request's pixels away from them.
// Rows need none: libjpeg decodes the context rows of the upsampling itself when it skips.
enum { kMargin = 8, kRowMargin = 0 };

typedef struct {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
  int warned;
  char *err;
  size_t errSize;
} region_error;

static void region_error_exit(j_common_ptr cinfo) {
  region_error *e = (region_error *)cinfo->err;
  char text[JMSG_LENGTH_MAX];
  (*cinfo->err->format_message)(cinfo, text);
  snprintf(e->err, e->errSize, "%s", text);
  longjmp(e->jump, 1);
}

// Warnings (level -1) are kept: the first one's text, and the call fails as TurboJPEG's does.
static void region_emit_message(j_common_ptr cinfo, int level) {
  region_error *e = (region_error *)cinfo->err;
  if (level < 0 && !e->warned) {
    char text[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, text);
    snprintf(e->err, e->errSize, "%s", text);
    e->warned = 1;
  }
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

size_t acon_jpeg_region_capacity(int imageWidth, int x0, int x1, int y0, int y1) {
  (void)x0;
  int w = x1 - x0 + 2 * kMargin + 32;
  if (w > imageWidth) w = imageWidth;
  int rows = y1 - y0 + 2 * kRowMargin + 1;  // + a spare row for the file's last one
  return (size_t)w * (size_t)rows * 3;
}

int acon_jpeg_decode_region(const uint8_t *data, size_t size, int x0, int x1, int y0, int y1, uint8_t *out,
                            size_t outSize, acon_jpeg_region *region, char *err, size_t errSize) {
  struct jpeg_decompress_struct cinfo;
  region_error jerr;
  memset(&cinfo, 0, sizeof cinfo);
  cinfo.err = jpeg_std_error(&jerr.pub);
  jerr.pub.error_exit = region_error_exit;
  jerr.pub.emit_message = region_emit_message;
  jerr.warned = 0;
  jerr.err = err;
  jerr.errSize = errSize;
  if (errSize > 0) err[0] = 0;
  if (setjmp(jerr.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return -1;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, (unsigned long)size);
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    snprintf(err, errSize, "CMYK JPEG: decode it whole");
    jpeg_destroy_decompress(&cinfo);
    return -2;
  }
  int w = (int)cinfo.image_width, h = (int)cinfo.image_height;
  if (x0 < 0 || x1 > w || x0 >= x1 || y0 < 0 || y1 > h || y0 >= y1) {
    snprintf(err, errSize, "region %d..<%d x %d..<%d outside the %dx%d image", x0, x1, y0, y1, w, h);
    jpeg_destroy_decompress(&cinfo);
    return -1;
  }
  cinfo.out_color_space = JCS_RGB;  // TurboJPEG's TJPF_RGB (gray expands to 3 channels)
  jpeg_start_decompress(&cinfo);
  // Columns: the request plus the margin, widened by libjpeg to whole iMCUs on the left.
  int cx0 = clampi(x0 - kMargin, 0, w), cx1 = clampi(x1 + kMargin, 0, w);
  JDIMENSION xoff = (JDIMENSION)cx0, cw = (JDIMENSION)(cx1 - cx0);
  if (cx0 > 0 || cx1 < w) jpeg_crop_scanline(&cinfo, &xoff, &cw);
  int ry0 = clampi(y0 - kRowMargin, 0, h), ry1 = clampi(y1 + kRowMargin, 0, h);
  size_t stride = (size_t)cw * 3;
  if (stride * (size_t)(ry1 - ry0 + 1) > outSize) {
    snprintf(err, errSize, "region buffer of %zu bytes is too small for %u x %d pixels", outSize, cw, ry1 - ry0 + 1);
    jpeg_destroy_decompress(&cinfo);
    return -1;
  }
  if (ry0 > 0) jpeg_skip_scanlines(&cinfo, (JDIMENSION)ry0);
  while ((int)cinfo.output_scanline < ry1) {
    JSAMPROW row = out + stride * (size_t)((int)cinfo.output_scanline - ry0);
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  // The rest is entropy-decoded only (no IDCT or colour conversion), for its errors: skipped but
  // for its last row, which is read (skipping to the very end would skip the decoding too).
  if ((int)cinfo.output_scanline < h) {
    if ((int)cinfo.output_scanline < h - 1) jpeg_skip_scanlines(&cinfo, (JDIMENSION)(h - 1 - (int)cinfo.output_scanline));
    JSAMPROW row = out + stride * (size_t)(ry1 - ry0);  // the spare row after the region
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  region->x = (int)xoff;
  region->y = ry0;
  region->width = (int)cw;
  region->height = ry1 - ry0;
  return jerr.warned ? 1 : 0;
}
