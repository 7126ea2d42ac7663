// ThreadsTests: parallelFor visits every index exactly once whatever the thread count, in the
// static chunks, also when nested and when called from several threads at once; the pool follows
// Threads.count; Threads.count round-trips, and the default is the cores this process may use on
// every platform. Each test restores the thread count it found.
import Dispatch
import TensorCore
import XCTest

#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif
#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

final class ThreadsTests: XCTestCase {
  func testParallelForVisitsEveryIndexOnce() {
    let saved = Threads.count
    defer { Threads.count = saved }
    for threads in [1, 2, 3] {
      Threads.count = threads
      XCTAssertEqual(Threads.count, threads)
      for n in [0, 1, 2, 5, 97] {
        for minimumChunk in [1, 4, 1000] {
          var hits = [Int32](repeating: 0, count: n)
          hits.withUnsafeMutableBufferPointer { buf in
            let p = UncheckedSendable(buf.baseAddress)
            parallelFor(n, minimumChunk: minimumChunk) { r in for i in r { p.value![i] += 1 } }
          }
          XCTAssertEqual(hits, [Int32](repeating: 1, count: n), "n=\(n) threads=\(threads) chunk=\(minimumChunk)")
        }
      }
    }
  }

  /// Many sizes and thread counts: each index once, and each in the chunk the static split
  /// `[n·w/chunks, n·(w+1)/chunks)` gives it, over repeated calls (the pool is reused).
  func testParallelForCoversEachIndexOnceInStaticChunks() {
    let saved = Threads.count
    defer { Threads.count = saved }
    for threads in [1, 2, 3, 4, 7] {
      Threads.count = threads
      for n in Array(0...40) + [63, 64, 65, 97, 128, 1000, 4099] {
        for minimumChunk in [1, 3, 16] {
          let chunks = Swift.min(threads, Swift.max(1, n / minimumChunk))
          var hits = [Int32](repeating: 0, count: n)
          var lows = [Int](repeating: -1, count: n)
          hits.withUnsafeMutableBufferPointer { h in
            lows.withUnsafeMutableBufferPointer { l in
              let p = UncheckedSendable((h.baseAddress, l.baseAddress))
              parallelFor(n, minimumChunk: minimumChunk) { r in
                for i in r {
                  p.value.0![i] += 1
                  p.value.1![i] = r.lowerBound
                }
              }
            }
          }
          XCTAssertEqual(hits, [Int32](repeating: 1, count: n), "n=\(n) threads=\(threads) chunk=\(minimumChunk)")
          let expected = (0..<n).map { i in
            let w = (0..<chunks).first { w in n * w / chunks <= i && i < n * (w + 1) / chunks }!
            return n * w / chunks
          }
          XCTAssertEqual(lows, expected, "n=\(n) threads=\(threads) chunk=\(minimumChunk)")
        }
      }
    }
  }

  /// A parallelFor inside a body runs (serially, in its own static chunks) and does not deadlock,
  /// from the caller's chunk and from the workers' chunks alike.
  func testNestedParallelForRunsEveryIndexOnce() {
    let saved = Threads.count
    defer { Threads.count = saved }
    for threads in [2, 3] {
      Threads.count = threads
      let outer = 6, inner = 50
      var hits = [Int32](repeating: 0, count: outer * inner)
      var innerChunks = [Int32](repeating: 0, count: outer)
      hits.withUnsafeMutableBufferPointer { h in
        innerChunks.withUnsafeMutableBufferPointer { c in
          let p = UncheckedSendable((h.baseAddress!, c.baseAddress!))
          for _ in 0..<20 {
            parallelFor(outer) { rows in
              for o in rows {
                parallelFor(inner) { r in
                  p.value.1[o] += 1
                  for i in r { p.value.0[o * inner + i] += 1 }
                }
              }
            }
          }
        }
      }
      XCTAssertEqual(hits, [Int32](repeating: 20, count: outer * inner), "threads=\(threads)")
      // The nested loops kept their static split into `threads` chunks.
      XCTAssertEqual(innerChunks, [Int32](repeating: Int32(20 * threads), count: outer), "threads=\(threads)")
    }
  }

  /// Several threads calling parallelFor at once (as the ranks of an in-process group do): each
  /// call covers its own indices exactly once, whichever of them gets the pool.
  func testConcurrentCallersFromSeveralThreads() {
    let saved = Threads.count
    defer { Threads.count = saved }
    Threads.count = 2
    let callers = 4, rounds = 300, n = 257
    var hits = [Int32](repeating: 0, count: callers * n)
    hits.withUnsafeMutableBufferPointer { h in
      let p = UncheckedSendable(h.baseAddress!)
      DispatchQueue.concurrentPerform(iterations: callers) { c in
        for round in 0..<rounds {
          parallelFor(n, minimumChunk: 1 + round % 5) { r in
            for i in r { p.value[c * n + i] += 1 }
          }
        }
      }
    }
    XCTAssertEqual(hits, [Int32](repeating: Int32(rounds), count: callers * n))
  }

  /// Changing Threads.count resizes the pool to count − 1 workers, and loops keep working
  /// across the changes (also back to 1 thread, which stops the workers).
  func testThreadCountChangesResizeThePool() {
    let saved = Threads.count
    defer { Threads.count = saved }
    for threads in [3, 1, 2, 5, 2, 1, 4] {
      Threads.count = threads
      XCTAssertEqual(Threads.poolWorkers, threads - 1, "threads=\(threads)")
      for n in [1, 2, 9, 100] {
        var hits = [Int32](repeating: 0, count: n)
        hits.withUnsafeMutableBufferPointer { h in
          let p = UncheckedSendable(h.baseAddress!)
          parallelFor(n) { r in for i in r { p.value[i] += 1 } }
        }
        XCTAssertEqual(hits, [Int32](repeating: 1, count: n), "threads=\(threads) n=\(n)")
      }
      XCTAssertEqual(Threads.poolWorkers, threads - 1, "threads=\(threads) after the loops")
    }
  }

  /// The workers' writes are visible to the caller when parallelFor returns, loop after loop
  /// (a chain of dependent loops with no other synchronization).
  func testConsecutiveLoopsSeeEachOthersWrites() {
    let saved = Threads.count
    defer { Threads.count = saved }
    Threads.count = 2
    let n = 64
    var a = [Int](repeating: 0, count: n), b = [Int](repeating: 0, count: n)
    a.withUnsafeMutableBufferPointer { pa in
      b.withUnsafeMutableBufferPointer { pb in
        let p = UncheckedSendable((pa.baseAddress!, pb.baseAddress!))
        for step in 0..<500 {
          // Each index reads the other chunk's value of the previous loop.
          parallelFor(n) { r in for i in r { p.value.1[i] = p.value.0[n - 1 - i] + 1 } }
          parallelFor(n) { r in for i in r { p.value.0[i] = p.value.1[n - 1 - i] } }
          if p.value.0[0] != step + 1 { break }
        }
      }
    }
    XCTAssertEqual(a, [Int](repeating: 500, count: n))
  }

  func testThreadCountIsAtLeastOne() {
    let saved = Threads.count
    defer { Threads.count = saved }
    Threads.count = 0
    XCTAssertEqual(Threads.count, 1)
    XCTAssertGreaterThanOrEqual(Threads.defaultCount, 1)
  }

  /// The default is the machine's cores on every platform (not 1 off Glibc, as it once was):
  /// ProcessInfo's active processor count, which never exceeds the online cores.
  func testDefaultCountIsTheCoresThisProcessMayUse() {
    XCTAssertEqual(Threads.defaultCount, Swift.max(1, ProcessInfo.processInfo.activeProcessorCount))
    #if canImport(Glibc) || canImport(Musl) || canImport(Darwin)
      let online = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
      XCTAssertGreaterThanOrEqual(Threads.defaultCount, 1)
      XCTAssertLessThanOrEqual(Threads.defaultCount, Swift.max(1, online))
    #endif
  }
}
