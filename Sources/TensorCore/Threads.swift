// Threads: the single knob for parallelism (OpenBLAS's threads and our own loops), and the
// static-chunked parallel loop that our elementwise and im2col kernels use.
//
// `parallelFor` runs on a persistent pool (Sources/CThreadPool): Threads.count − 1 workers that
// spin briefly after each loop (so the next short kernel of a training step finds them awake)
// and then sleep; the caller runs chunk 0. Never call sgemm from inside `parallelFor`: OpenBLAS
// runs its own threads.
import CBLAS
import CThreadPool

#if canImport(FoundationEssentials)
  import FoundationEssentials  // ProcessInfo, without the rest of Foundation
#else
  import Foundation
#endif

/// The process-wide thread count for OpenBLAS and for `parallelFor`.
public enum Threads {
  nonisolated(unsafe) private static var current: Int = {
    let n = defaultCount
    BLAS.setThreadCount(n)
    return n
  }()

  /// The number of cores this process may run on (`ProcessInfo.activeProcessorCount`: on Linux
  /// the CPUs of its affinity mask and cgroup quota, on macOS the active cores), at least 1.
  public static var defaultCount: Int {
    Swift.max(1, ProcessInfo.processInfo.activeProcessorCount)
  }

  /// How many threads OpenBLAS and `parallelFor` use. Defaults to the number of cores.
  /// Setting it calls `openblas_set_num_threads` and resizes `parallelFor`'s pool to
  /// `count − 1` workers (or, if a loop is running, lets the next loop resize it).
  /// Not thread-safe: set it before training.
  public static var count: Int {
    get { current }
    set {
      let n = Swift.max(1, newValue)
      current = n
      BLAS.setThreadCount(n)
      _ = acon_pool_resize(Int32(clamping: n - 1))
    }
  }

  /// The number of worker threads `parallelFor`'s pool holds now (`count − 1` after the first
  /// parallel loop or a change of `count`), or nil while a loop runs on it.
  public static var poolWorkers: Int? {
    let n = acon_pool_size()
    return n < 0 ? nil : Int(n)
  }
}

/// What the pool's workers run: chunk `w` of `0..<n` split into `chunks`.
private struct ParallelForJob {
  let n: Int
  let chunks: Int
  let body: (Range<Int>) -> Void

  func run(_ w: Int) {
    let lo = n * w / chunks, hi = n * (w + 1) / chunks
    if lo < hi { body(lo..<hi) }
  }
}

/// Runs `body(range)` over `0..<n`, split into at most `Threads.count` contiguous chunks that
/// run in parallel. Chunk boundaries depend on the thread count, so a body must write only
/// to locations owned by its indices; then results do not depend on the thread count.
///
/// One loop runs on the pool at a time. A call made while the pool is in use (from inside a
/// body, or from another thread during a loop) runs the same chunks one after another on its
/// own thread: it neither waits nor deadlocks, and gives the same results.
public func parallelFor(_ n: Int, minimumChunk: Int = 1, _ body: (Range<Int>) -> Void) {
  if n <= 0 { return }
  let threads = Threads.count
  let chunks = Swift.min(threads, Swift.max(1, n / Swift.max(1, minimumChunk)))
  if chunks <= 1 {
    body(0..<n)
    return
  }
  withoutActuallyEscaping(body) { body in
    var job = ParallelForJob(n: n, chunks: chunks, body: body)
    let ran = withUnsafeMutablePointer(to: &job) { p in
      acon_pool_run(Int32(clamping: threads - 1), Int32(clamping: chunks), { context, w in
        context!.assumingMemoryBound(to: ParallelForJob.self).pointee.run(Int(w))
      }, p)
    }
    if ran == 0 {
      for w in 0..<chunks { job.run(w) }
    }
  }
}

/// Wraps a value that is shared across `parallelFor` workers by design (pointers into
/// disjoint regions, a closure that writes disjoint regions).
public struct UncheckedSendable<T>: @unchecked Sendable {
  /// The wrapped value.
  public let value: T
  /// Wraps `value`; the caller vouches that concurrent use is safe.
  public init(_ value: T) { self.value = value }
}
