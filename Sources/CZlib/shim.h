// CZlib shim: zlib's gzip reader, used for the gzipped IDX files of (Fashion-)MNIST.
#include <zlib.h>
