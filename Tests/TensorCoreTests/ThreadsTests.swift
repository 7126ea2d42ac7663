// ThreadsTests: parallelFor visits every index exactly once whatever the thread count, and
// Threads.count round-trips. Each test restores the thread count it found.
import TensorCore
import XCTest

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
}
