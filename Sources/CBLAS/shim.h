// CBLAS shim: OpenBLAS's CBLAS interface (with openblas_set_num_threads) and LAPACKE.
// Header search paths come from pkg-config (openblas); lapacke.h lives in the default include path.
// liblapacke is linked by TensorCore on Linux (Homebrew's libopenblas contains LAPACKE).
#include <cblas.h>
#include <lapacke.h>

// Two symbols that OpenBLAS exports but does not declare in cblas.h. BLAS.swift uses them once,
// at start-up, to make idle OpenBLAS threads sleep at once instead of spinning for ~2^28 cycles
// (OPENBLAS_THREAD_TIMEOUT), which would steal the cores from our own parallel loops.
void openblas_read_env(void);
int blas_thread_shutdown_(void);
