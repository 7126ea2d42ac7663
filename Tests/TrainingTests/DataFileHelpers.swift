// DataFileHelpers: builders and checks shared by the data-format tests (FormatTests,
// FuzzRegressionTests): the bytes of an IDX file, and the assertion that loading fails with a
// DataError of the expected kind.
import Training
import XCTest

/// An IDX file's bytes: magic 00 00 type rank, big-endian dims, data.
func idxBytes(_ dims: [Int], _ data: [UInt8], type: UInt8 = 0x08) -> [UInt8] {
  var out: [UInt8] = [0, 0, type, UInt8(dims.count)]
  for d in dims { out += [UInt8(d >> 24 & 0xFF), UInt8(d >> 16 & 0xFF), UInt8(d >> 8 & 0xFF), UInt8(d & 0xFF)] }
  return out + data
}

/// Asserts that `body` throws a `DataError` accepted by `check` (and, when `naming` is given,
/// whose message contains one of those file names).
func assertDataError(
  _ what: String, naming names: [String] = [], file: StaticString = #filePath, line: UInt = #line,
  _ body: () throws -> Void, _ check: (DataError) -> Bool
) {
  do {
    try body()
    XCTFail("\(what): no error", file: file, line: line)
  } catch let e as DataError {
    XCTAssertTrue(check(e), "\(what): wrong error: \(e)", file: file, line: line)
    if !names.isEmpty {
      XCTAssertTrue(names.contains { e.description.contains($0) },
        "\(what): the message lacks the file name: \(e)", file: file, line: line)
    }
  } catch {
    XCTFail("\(what): unexpected error type \(error)", file: file, line: line)
  }
}
