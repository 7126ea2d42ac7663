// CBLAS shim: OpenBLAS's CBLAS interface (with openblas_set_num_threads) and LAPACKE.
// Header search paths come from pkg-config (openblas); lapacke.h lives in the default include path.
#include <cblas.h>
#include <lapacke.h>
