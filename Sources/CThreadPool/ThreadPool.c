// ThreadPool: persistent workers for `parallelFor` (see include/CThreadPool.h).
//
// Protocol. One job at a time: `busy` is a try-lock taken by acon_pool_run; a caller that does
// not get it runs its jobs serially (nested calls and concurrent callers). The job's chunks are
// claimed from one 64-bit word, claim = generation << 32 | jobs << 16 | next, by CAS: the caller
// takes chunk 0, signals the workers (each has a slot whose `seq`, the futex word, it bumps),
// and after chunk 0 claims what is left itself, so a worker that wakes late (a loaded machine)
// finds nothing to do and costs the caller nothing; chunk boundaries stay static, only which
// thread runs a chunk changes. fn and context are written before the release store of claim
// and read after a successful claim, while the job cannot finish (its chunk is not done).
// `pending` counts unfinished chunks 1..<jobs; its release decrements and the caller's acquire
// load order the chunks' writes before whatever follows. Sleeping on both sides is a Dekker
// handshake on sequentially consistent atomics: the sleeper sets its flag and re-checks the
// word before futex_wait; the waker changes the word and then reads the flag.
#define _GNU_SOURCE
#include "CThreadPool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#define ACON_POOL_FUTEX 1
#else
#define ACON_POOL_FUTEX 0
#endif

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax() ((void)0)
#endif

// How long the caller spins for its workers before it sleeps (a worker descheduled by other
// processes should not cost a core).
#define CALLER_SPIN_NS 200000
// After this long a spinning thread calls sched_yield between checks, so that a runnable
// thread on its core (OpenBLAS's, another process's) gets the core.
#define YIELD_AFTER_NS 2000

typedef struct Slot {
  _Atomic uint32_t seq;       // bumped by the caller for each job of this worker (futex word)
  _Atomic uint32_t sleeping;  // 1 while the worker is (about to be) asleep on seq
  pthread_t thread;
  int32_t index;              // 1-based: the job index this worker runs
#if !ACON_POOL_FUTEX
  pthread_mutex_t mutex;
  pthread_cond_t cond;
#endif
} __attribute__((aligned(64))) Slot;

typedef struct Pool {
  _Atomic int busy;                        // the try-lock of acon_pool_run / resize
  int32_t size;                            // workers (guarded by busy)
  Slot *slots;                             // [size], guarded by busy
  // The current job (written under busy before the seq bumps).
  acon_pool_job_fn fn;
  void *context;
  _Atomic int stop;                        // workers exit when they see it with a new seq
  __attribute__((aligned(64))) _Atomic uint64_t claim;  // generation << 32 | jobs << 16 | next
  uint32_t generation;                     // guarded by busy
  __attribute__((aligned(64))) _Atomic uint32_t pending;  // workers still running (futex word)
  _Atomic uint32_t callerSleeping;
  _Atomic int64_t spinNs;
#if !ACON_POOL_FUTEX
  pthread_mutex_t mutex;
  pthread_cond_t cond;
#endif
} Pool;

static Pool pool = {
  .spinNs = ACON_POOL_SPIN_NS,
#if !ACON_POOL_FUTEX
  .mutex = PTHREAD_MUTEX_INITIALIZER,
  .cond = PTHREAD_COND_INITIALIZER,
#endif
};

static inline int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

// Waits while *word == value: spins up to spinNs, then sleeps (sets *sleeping around the sleep).
// Returns the new value (acquire).
static uint32_t wait_while(_Atomic uint32_t *word, uint32_t value, _Atomic uint32_t *sleeping, int64_t spinNs
#if !ACON_POOL_FUTEX
                           , pthread_mutex_t *mutex, pthread_cond_t *cond
#endif
) {
  uint32_t v = atomic_load_explicit(word, memory_order_acquire);
  if (v != value) return v;
  int64_t start = now_ns();
  for (;;) {
    for (int i = 0; i < 32; i++) {
      cpu_relax();
      v = atomic_load_explicit(word, memory_order_acquire);
      if (v != value) return v;
    }
    int64_t elapsed = now_ns() - start;
    if (elapsed >= spinNs) break;
    if (elapsed >= YIELD_AFTER_NS) sched_yield();
  }
  for (;;) {
    atomic_store(sleeping, 1);  // seq_cst: the waker's store to *word and this are ordered
    v = atomic_load(word);
    if (v != value) break;
#if ACON_POOL_FUTEX
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
#else
    pthread_mutex_lock(mutex);
    while (atomic_load(word) == value) pthread_cond_wait(cond, mutex);
    pthread_mutex_unlock(mutex);
#endif
    v = atomic_load_explicit(word, memory_order_acquire);
    if (v != value) break;
  }
  atomic_store(sleeping, 0);
  return atomic_load_explicit(word, memory_order_acquire);
}

// Wakes the thread sleeping on *word (after the caller changed it), if it sleeps.
static void wake(_Atomic uint32_t *word, _Atomic uint32_t *sleeping
#if !ACON_POOL_FUTEX
                 , pthread_mutex_t *mutex, pthread_cond_t *cond
#endif
) {
  if (!atomic_load(sleeping)) return;  // seq_cst, after the seq_cst change of *word
#if ACON_POOL_FUTEX
  (void)word;
  syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
#else
  pthread_mutex_lock(mutex);
  pthread_cond_broadcast(cond);
  pthread_mutex_unlock(mutex);
#endif
}

#if ACON_POOL_FUTEX
#define SLOT_SYNC(s)
#define POOL_SYNC
#else
#define SLOT_SYNC(s) , &(s)->mutex, &(s)->cond
#define POOL_SYNC , &pool.mutex, &pool.cond
#endif

// Claims the next chunk of the current job, or returns −1 when none is left.
static int32_t claim_chunk(void) {
  uint64_t c = atomic_load_explicit(&pool.claim, memory_order_acquire);
  for (;;) {
    uint32_t jobs = (uint32_t)(c >> 16) & 0xffff, next = (uint32_t)c & 0xffff;
    if (next >= jobs) return -1;
    if (atomic_compare_exchange_weak_explicit(&pool.claim, &c, c + 1, memory_order_acq_rel, memory_order_acquire))
      return (int32_t)next;
  }
}

static void *worker_main(void *arg) {
  Slot *slot = arg;
#if defined(__linux__)
  char name[16];
  snprintf(name, sizeof name, "acon-pool-%d", (int)slot->index);
  pthread_setname_np(pthread_self(), name);
#endif
  uint32_t seen = 0;  // seq starts at 0; the first job may be handed over before this thread runs
  for (;;) {
    int64_t spin = atomic_load_explicit(&pool.spinNs, memory_order_relaxed);
    seen = wait_while(&slot->seq, seen, &slot->sleeping, spin SLOT_SYNC(slot));
    if (atomic_load_explicit(&pool.stop, memory_order_acquire)) break;
    int32_t w;
    while ((w = claim_chunk()) >= 0) {
      pool.fn(pool.context, w);
      if (atomic_fetch_sub(&pool.pending, 1) == 1) wake(&pool.pending, &pool.callerSleeping POOL_SYNC);
    }
  }
  return NULL;
}

static inline int try_lock(void) {
  int expected = 0;
  return atomic_compare_exchange_strong_explicit(&pool.busy, &expected, 1, memory_order_acquire,
                                                 memory_order_relaxed);
}

static inline void unlock(void) { atomic_store_explicit(&pool.busy, 0, memory_order_release); }

// Stops and joins all workers, then starts `workers` new ones. Called with busy held.
static void resize_locked(int32_t workers) {
  if (workers < 0) workers = 0;
  if (workers == pool.size) return;
  if (pool.size > 0) {
    atomic_store(&pool.stop, 1);
    for (int32_t i = 0; i < pool.size; i++) {
      Slot *s = &pool.slots[i];
      atomic_fetch_add(&s->seq, 1);
      wake(&s->seq, &s->sleeping SLOT_SYNC(s));
    }
    for (int32_t i = 0; i < pool.size; i++) {
      pthread_join(pool.slots[i].thread, NULL);
#if !ACON_POOL_FUTEX
      pthread_mutex_destroy(&pool.slots[i].mutex);
      pthread_cond_destroy(&pool.slots[i].cond);
#endif
    }
    free(pool.slots);
    pool.slots = NULL;
    pool.size = 0;
    atomic_store(&pool.stop, 0);
  }
  if (workers == 0) return;
  Slot *slots = aligned_alloc(64, sizeof(Slot) * (size_t)workers);
  if (!slots) return;  // no workers: acon_pool_run reports busy and the caller runs serially
  int32_t started = 0;
  for (int32_t i = 0; i < workers; i++) {
    Slot *s = &slots[i];
    atomic_init(&s->seq, 0);
    atomic_init(&s->sleeping, 0);
    s->index = i + 1;
#if !ACON_POOL_FUTEX
    pthread_mutex_init(&s->mutex, NULL);
    pthread_cond_init(&s->cond, NULL);
#endif
    if (pthread_create(&s->thread, NULL, worker_main, s) != 0) break;
    started++;
  }
  pool.slots = slots;
  pool.size = started;
}

int acon_pool_run(int32_t workers, int32_t jobs, acon_pool_job_fn fn, void *context) {
  if (jobs <= 0) return 1;
  if (!try_lock()) return 0;
  resize_locked(workers);
  if (jobs - 1 > pool.size || jobs > 0xffff) {
    unlock();
    return 0;
  }
  pool.fn = fn;
  pool.context = context;
  atomic_store_explicit(&pool.pending, (uint32_t)(jobs - 1), memory_order_relaxed);
  pool.generation++;
  atomic_store_explicit(&pool.claim, (uint64_t)pool.generation << 32 | (uint64_t)jobs << 16 | 1,
                        memory_order_release);  // publishes fn, context, pending; chunk 0 is ours
  for (int32_t i = 0; i < jobs - 1; i++) {
    Slot *s = &pool.slots[i];
    atomic_fetch_add(&s->seq, 1);  // seq_cst; then reads sleeping
    wake(&s->seq, &s->sleeping SLOT_SYNC(s));
  }
  fn(context, 0);
  int32_t w;
  while ((w = claim_chunk()) >= 0) {
    fn(context, w);
    atomic_fetch_sub_explicit(&pool.pending, 1, memory_order_relaxed);
  }
  uint32_t left = atomic_load_explicit(&pool.pending, memory_order_acquire);
  while (left != 0)
    left = wait_while(&pool.pending, left, &pool.callerSleeping, CALLER_SPIN_NS POOL_SYNC);
  unlock();
  return 1;
}

int acon_pool_resize(int32_t workers) {
  if (!try_lock()) return 0;
  resize_locked(workers);
  unlock();
  return 1;
}

int32_t acon_pool_size(void) {
  // Read under the lock; −1 while the pool is in use.
  if (!try_lock()) return -1;
  int32_t n = pool.size;
  unlock();
  return n;
}

void acon_pool_set_spin_ns(int64_t ns) { atomic_store_explicit(&pool.spinNs, ns < 0 ? 0 : ns, memory_order_relaxed); }

int64_t acon_pool_spin_ns(void) { return atomic_load_explicit(&pool.spinNs, memory_order_relaxed); }
