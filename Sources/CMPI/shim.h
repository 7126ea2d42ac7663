// CMPI shim: Open MPI's C API for Swift (pkg-config ompi-c, apt libopenmpi-dev). Open MPI
// defines MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, MPI_IN_PLACE and the error handlers as macros over
// the addresses of globals, which Swift does not import; these inline functions hand them over.
#include <mpi.h>

static inline MPI_Comm acon_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype acon_mpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype acon_mpi_double(void) { return MPI_DOUBLE; }
static inline MPI_Op acon_mpi_sum(void) { return MPI_SUM; }
static inline MPI_Op acon_mpi_max(void) { return MPI_MAX; }
static inline void *acon_mpi_in_place(void) { return MPI_IN_PLACE; }
static inline MPI_Errhandler acon_mpi_errors_return(void) { return MPI_ERRORS_RETURN; }
static inline int acon_mpi_success(void) { return MPI_SUCCESS; }
static inline int acon_mpi_max_error_string(void) { return MPI_MAX_ERROR_STRING; }
