// Threads: the single knob for parallelism (OpenBLAS's threads and our own loops), and the
// static-chunked parallel loop that our elementwise and im2col kernels use.
//
// Never call sgemm from inside `parallelFor`: OpenBLAS runs its own threads.
import CBLAS
import Dispatch

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
  /// Setting it calls `openblas_set_num_threads`. Not thread-safe: set it before training.
  public static var count: Int {
    get { current }
    set {
      let n = Swift.max(1, newValue)
      current = n
      BLAS.setThreadCount(n)
    }
  }
}

/// Runs `body(range)` over `0..<n`, split into at most `Threads.count` contiguous chunks that
/// run in parallel. Chunk boundaries depend on the thread count, so a body must write only
/// to locations owned by its indices; then results do not depend on the thread count.
public func parallelFor(_ n: Int, minimumChunk: Int = 1, _ body: (Range<Int>) -> Void) {
  if n <= 0 { return }
  let workers = Swift.min(Threads.count, Swift.max(1, n / Swift.max(1, minimumChunk)))
  if workers <= 1 {
    body(0..<n)
    return
  }
  withoutActuallyEscaping(body) { body in
    let task = UncheckedSendable(body)
    DispatchQueue.concurrentPerform(iterations: workers) { w in
      let lo = n * w / workers, hi = n * (w + 1) / workers
      if lo < hi { task.value(lo..<hi) }
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
