// HugePageTests: large TensorStorages advise their interior 2 MiB pages as transparent huge
// pages, and only those (the range arithmetic, and on Linux the kernel's record of the advice).
import Foundation
import XCTest

@testable import TensorCore

final class HugePageTests: XCTestCase {
  let page = UInt(TensorStorage.hugePageBytes)

  func testRangeIsTheWholeHugePagesInside() throws {
    // Starts 64 bytes past a page boundary, 8 MiB long: pages 1, 2, 3 are whole, 0 and 4 partial.
    let start = 16 * page + 64
    let r = try XCTUnwrap(TensorStorage.hugePageRange(start: start, bytes: 8 << 20))
    XCTAssertEqual(r, (17 * page)..<(20 * page))
    XCTAssertGreaterThanOrEqual(r.lowerBound, start)
    XCTAssertLessThanOrEqual(r.upperBound, start + UInt(8 << 20))
    // Aligned start and length: every page.
    XCTAssertEqual(TensorStorage.hugePageRange(start: 4 * page, bytes: 5 << 21), (4 * page)..<(9 * page))
  }

  func testSmallOrOverflowingAllocationsGetNoAdvice() {
    XCTAssertNil(TensorStorage.hugePageRange(start: 4 * page, bytes: TensorStorage.hugePageMinimumBytes - 1))
    XCTAssertNil(TensorStorage.hugePageRange(start: 0, bytes: 0))
    XCTAssertNil(TensorStorage.hugePageRange(start: UInt.max - page, bytes: 16 << 20))
  }

  func testMapsLinesOfAnonymousPrivateWritableMappingsOnly() {
    XCTAssertEqual(BLAS.anonymousRange("7f518f000000-7f5197000000 rw-p 00000000 00:00 0 \n"),
      0x7f51_8f00_0000..<0x7f51_9700_0000)
    XCTAssertEqual(BLAS.anonymousRange("7f518f000000-7f5197000000 rw-p 00000000 00:00 0"), 0x7f51_8f00_0000..<0x7f51_9700_0000)
    XCTAssertNil(BLAS.anonymousRange("55d0c0a1e000-55d0c0a3f000 rw-p 00000000 00:00 0                          [heap]\n"))
    XCTAssertNil(BLAS.anonymousRange("7ffd1000-7ffd2000 rw-p 00000000 00:00 0 [stack]"))
    XCTAssertNil(BLAS.anonymousRange("7f00000-7f01000 rw-p 00002000 08:01 123456 /usr/lib/libopenblas.so.0"))
    XCTAssertNil(BLAS.anonymousRange("7f00000-7f01000 r--p 00000000 00:00 0"))
    XCTAssertNil(BLAS.anonymousRange("7f00000-7f01000 rw-s 00000000 00:01 17 /dev/zero (deleted)"))
    XCTAssertNil(BLAS.anonymousRange("garbage"))
    XCTAssertNil(BLAS.anonymousRange("2000-1000 rw-p 00000000 00:00 0"))
  }

  func testUncoveredKeepsOnlyTheNewParts() {
    let before: [Range<UInt>] = [0x8000..<0x9000, 0x1000..<0x3000]
    let after: [Range<UInt>] = [0x1000..<0x5000, 0x6000..<0x7000, 0x8000..<0x9000, 0xA000..<0xC000]
    XCTAssertEqual(BLAS.uncovered(after, by: before), [0x3000..<0x5000, 0x6000..<0x7000, 0xA000..<0xC000])
    // A range that grew on both sides keeps both new ends; an old range inside a new one splits it.
    XCTAssertEqual(BLAS.uncovered([0x0..<0x4000], by: [0x1000..<0x2000]), [0x0..<0x1000, 0x2000..<0x4000])
    XCTAssertEqual(BLAS.uncovered([0x0..<0x4000], by: [0x1000..<0x2000, 0x2000..<0x3000]), [0x0..<0x1000, 0x3000..<0x4000])
    XCTAssertEqual(BLAS.uncovered([0x1000..<0x2000], by: [0x0..<0x4000]), [])
    XCTAssertEqual(BLAS.uncovered([0x1000..<0x2000], by: []), [0x1000..<0x2000])
  }

  #if os(Linux)
  /// After BLAS's first GEMM, the mappings OpenBLAS made for its packing buffers carry the
  /// kernel's `hg` flag (MADV_HUGEPAGE), in whole 2 MiB pages, where the kernel has transparent
  /// huge pages at all; and a GEMM after the advice still gives the right product.
  func testOpenBLASBuffersAreAdvised() throws {
    guard let mode = try? String(contentsOfFile: "/sys/kernel/mm/transparent_hugepage/enabled", encoding: .utf8),
      !mode.contains("[never]")
    else { throw XCTSkip("no transparent huge pages on this kernel") }
    let a: [Float] = [1, 2, 3, 4], b: [Float] = [5, 6, 7, 8]
    var c = [Float](repeating: .nan, count: 4)
    BLAS.sgemm(transA: false, transB: false, m: 2, n: 2, k: 2, alpha: 1, a: a, b: b, beta: 0, c: &c)
    XCTAssertEqual(c, [19, 22, 43, 50])
    let ranges = BLAS.advisedBufferRanges
    XCTAssertFalse(ranges.isEmpty, "OpenBLAS mapped no buffer that BLAS advised")
    for r in ranges {
      XCTAssertEqual(r.lowerBound % page, 0)
      XCTAssertEqual(r.upperBound % page, 0)
      let flags = try XCTUnwrap(try vmFlags(containing: r.lowerBound), "no mapping holds \(String(r.lowerBound, radix: 16))")
      XCTAssertTrue(flags.contains("hg"), "VmFlags of an advised OpenBLAS buffer: \(flags)")
    }
  }

  /// The mapping that holds a 32 MiB storage carries the kernel's `hg` flag (MADV_HUGEPAGE)
  /// where the kernel has transparent huge pages at all; a 1 MiB storage is not advised.
  func testLargeStorageIsAdvised() throws {
    guard let mode = try? String(contentsOfFile: "/sys/kernel/mm/transparent_hugepage/enabled", encoding: .utf8),
      !mode.contains("[never]")
    else { throw XCTSkip("no transparent huge pages on this kernel") }
    let large = TensorStorage(capacity: 8 << 20)
    let r = try XCTUnwrap(
      TensorStorage.hugePageRange(start: UInt(bitPattern: large.pointer), bytes: large.capacity * 4))
    let flags = try withExtendedLifetime(large) {
      try XCTUnwrap(try vmFlags(containing: r.lowerBound), "no mapping holds \(String(r.lowerBound, radix: 16))")
    }
    XCTAssertTrue(flags.contains("hg"), "VmFlags of the storage's mapping: \(flags)")
    XCTAssertEqual(large.pointer[large.capacity - 1], 0, "still zero-filled")
  }

  /// The VmFlags words of the /proc/self/smaps mapping that contains `address`.
  /// (Read line by line with getline: /proc files report a size of 0.)
  private func vmFlags(containing address: UInt) throws -> [Substring]? {
    guard let f = fopen("/proc/self/smaps", "r") else { throw XCTSkip("no /proc/self/smaps") }
    defer { fclose(f) }
    var buffer: UnsafeMutablePointer<CChar>?
    var size = 0
    defer { free(buffer) }
    var inside = false
    while getline(&buffer, &size, f) > 0, let b = buffer {
      let line = String(cString: b).trimmingCharacters(in: .newlines)
      let words = line.split(separator: " ")
      if let first = words.first, first.contains("-"), !first.hasSuffix(":") {
        let ends = first.split(separator: "-").compactMap { UInt($0, radix: 16) }
        inside = ends.count == 2 && ends[0] <= address && address < ends[1]
      } else if inside, words.first == "VmFlags:" {
        return Array(words.dropFirst())
      }
    }
    return nil
  }
  #endif
}
