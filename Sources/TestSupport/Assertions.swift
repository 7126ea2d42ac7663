// Assertions: XCTest helpers that compare Float results with Double references elementwise
// (mlx-swift's rtol/atol habit) and report *where* they differ: the first mismatching index,
// how many mismatch, and the largest error. They forward `file`/`line`, so failures point at
// the calling test, never here.
import TensorCore
import XCTest

/// The outcome of an elementwise comparison; `nil` from `compareClose` means "all close".
public struct CloseMismatch: CustomStringConvertible, Sendable {
  /// The first index where `|a − b| > atol + rtol·|b|` (or a NaN differs).
  public var firstIndex: Int
  /// The two values at `firstIndex`.
  public var actual: Float, expected: Double
  /// How many elements are out of tolerance.
  public var mismatchCount: Int
  /// The largest `|a − b|` over all elements, and where it occurs.
  public var maxError: Double, maxErrorIndex: Int

  public var description: String {
    "\(mismatchCount) element(s) out of tolerance; first at [\(firstIndex)]: got \(actual), "
      + "expected \(expected); max |error| \(maxError) at [\(maxErrorIndex)]"
  }
}

/// Compares `a` with the reference `b`: element i is close when `|a_i − b_i| ≤ atol + rtol·|b_i|`
/// (NaN is close only to NaN, infinities only to themselves).
/// - Returns: nil when every element is close, else the details of the mismatch.
/// - Precondition: equal counts.
public func compareClose(_ a: [Float], _ b: [Double], rtol: Double, atol: Double) -> CloseMismatch? {
  precondition(a.count == b.count, "compareClose: \(a.count) vs \(b.count) elements")
  var first: Int?
  var bad = 0
  var maxErr = 0.0, maxAt = 0
  for i in 0..<a.count {
    let x = Double(a[i]), y = b[i]
    let ok: Bool
    if x.isNaN || y.isNaN {
      ok = x.isNaN && y.isNaN
    } else if x.isInfinite || y.isInfinite {
      ok = x == y
    } else {
      let e = abs(x - y)
      if e > maxErr { maxErr = e; maxAt = i }
      ok = e <= atol + rtol * abs(y)
    }
    if !ok {
      bad += 1
      if first == nil { first = i }
    }
  }
  guard let f = first else { return nil }
  return CloseMismatch(firstIndex: f, actual: a[f], expected: b[f], mismatchCount: bad,
    maxError: maxErr, maxErrorIndex: maxAt)
}

/// Asserts that `a` matches the reference `b` elementwise within `atol + rtol·|b|`, reporting
/// the first mismatching index, the mismatch count and the largest error.
public func assertClose(
  _ a: [Float], _ b: [Double], rtol: Double = 1e-5, atol: Double = 1e-6, _ message: @autoclosure () -> String = "",
  file: StaticString = #filePath, line: UInt = #line
) {
  guard a.count == b.count else {
    XCTFail("assertClose: \(a.count) elements vs \(b.count) expected. \(message())", file: file, line: line)
    return
  }
  if let m = compareClose(a, b, rtol: rtol, atol: atol) {
    XCTFail("assertClose (rtol \(rtol), atol \(atol)): \(m). \(message())", file: file, line: line)
  }
}

/// Asserts equal shapes, then `assertClose` on the elements.
public func assertClose(
  _ a: Tensor, _ b: DoubleTensor, rtol: Double = 1e-5, atol: Double = 1e-6, _ message: @autoclosure () -> String = "",
  file: StaticString = #filePath, line: UInt = #line
) {
  guard a.shape == b.shape else {
    XCTFail("assertClose: shape \(Shape.text(a.shape)) vs expected \(Shape.text(b.shape)). \(message())",
      file: file, line: line)
    return
  }
  assertClose(a.array, b.values, rtol: rtol, atol: atol, message(), file: file, line: line)
}

/// Asserts that two Float arrays are bit-for-bit identical (NaNs with equal payloads included),
/// reporting the first differing index.
public func assertBitwiseEqual(
  _ a: [Float], _ b: [Float], _ message: @autoclosure () -> String = "",
  file: StaticString = #filePath, line: UInt = #line
) {
  guard a.count == b.count else {
    XCTFail("assertBitwiseEqual: \(a.count) vs \(b.count) elements. \(message())", file: file, line: line)
    return
  }
  if let i = a.indices.first(where: { a[$0].bitPattern != b[$0].bitPattern }) {
    let n = a.indices.filter { a[$0].bitPattern != b[$0].bitPattern }.count
    XCTFail("assertBitwiseEqual: \(n) element(s) differ; first at [\(i)]: \(a[i]) vs \(b[i]). \(message())",
      file: file, line: line)
  }
}
