// CThreadPool: the persistent worker threads behind `parallelFor` (Sources/TensorCore/Threads.swift).
// Workers spin for a bounded time after each job (pause, then sched_yield) so that the next
// short loop of a training step finds them awake, then sleep on a futex (Linux) or a condition
// variable (elsewhere). The caller runs job 0 itself; job w (1 ≤ w < jobs) runs on worker w.
#ifndef CTHREADPOOL_H
#define CTHREADPOOL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// A job: `fn(context, w)` for w in 0..<jobs; w = 0 runs on the calling thread.
typedef void (*acon_pool_job_fn)(void *_Nullable context, int32_t w);

/// Runs `fn(context, w)` for every w in 0..<jobs, w = 0 on the caller and the others on the
/// pool's workers, and returns 1 when all have finished. The pool is first resized to
/// `workers` threads (≥ jobs − 1) if it has another size. Returns 0 without running anything
/// when the pool is in use (another thread's job, or a nested call from inside a job): the
/// caller then runs the jobs itself.
int acon_pool_run(int32_t workers, int32_t jobs, acon_pool_job_fn _Nonnull fn, void *_Nullable context);

/// Resizes the pool to `workers` threads (0 stops them all) unless it is in use; returns 1 if
/// it did, 0 if the pool was busy (the next `acon_pool_run` resizes it).
int acon_pool_resize(int32_t workers);

/// The number of worker threads the pool has now, or −1 while it is in use.
int32_t acon_pool_size(void);

/// How long (ns) a worker spins after a job before it sleeps; ≥ 0. Default ACON_POOL_SPIN_NS.
void acon_pool_set_spin_ns(int64_t ns);
int64_t acon_pool_spin_ns(void);

/// The default spin of a worker after a job, in nanoseconds.
#define ACON_POOL_SPIN_NS 100000

#ifdef __cplusplus
}
#endif

#endif
