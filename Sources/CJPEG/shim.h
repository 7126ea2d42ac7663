// CJPEG shim: libjpeg-turbo's libjpeg API (pkg-config libjpeg, apt libjpeg-dev), which the
// loader's C kernels use to decode only the rows and columns of a JPEG that a crop needs.
#include <stdio.h>
#include <jpeglib.h>
