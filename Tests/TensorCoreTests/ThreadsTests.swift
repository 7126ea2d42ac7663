// ThreadsTests: parallelFor visits every index exactly once whatever the thread count, and
// Threads.count round-trips, and the default is the cores this process may use on every platform.
// Each test restores the thread count it found.
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
