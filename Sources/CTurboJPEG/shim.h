// CTurboJPEG shim: libjpeg-turbo's TurboJPEG API (decode with scaling, encode), for the image-folder data set.
#include <turbojpeg.h>
