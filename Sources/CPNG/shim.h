// CPNG shim: libpng, for the image-folder data set (read through CImageCodecs, which owns libpng's setjmp).
#include <png.h>
