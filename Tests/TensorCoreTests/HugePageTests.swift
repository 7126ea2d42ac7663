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

  #if os(Linux)
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
