// RandomTests: SeededGenerator is deterministic, resumable from saved state, and its uniform
// and normal samples have the right range and moments.
import TensorCore
import TestSupport
import XCTest

final class RandomTests: XCTestCase {
  func testSameSeedSameStream() {
    var a = SeededGenerator(seed: 42), b = SeededGenerator(seed: 42)
    for _ in 0..<1000 { XCTAssertEqual(a.next(), b.next()) }
    XCTAssertEqual(a, b)
  }

  func testDifferentSeedsDiffer() {
    var a = SeededGenerator(seed: 1), b = SeededGenerator(seed: 2)
    let xs = (0..<16).map { _ in a.next() }, ys = (0..<16).map { _ in b.next() }
    XCTAssertNotEqual(xs, ys)
    XCTAssertNotEqual(SeededGenerator(seed: 0), SeededGenerator(seed: 1))
  }

  func testStateRoundTripResumesTheStream() {
    var a = SeededGenerator(seed: 7)
    for _ in 0..<13 { _ = a.next() }
    var b = SeededGenerator(state: a.stateWords)
    XCTAssertEqual(a, b)
    for _ in 0..<100 { XCTAssertEqual(a.nextNormal(), b.nextNormal()) }
  }

  func testSeededTensorsAreReproducible() {
    var r1 = SeededGenerator(seed: 5), r2 = SeededGenerator(seed: 5)
    XCTAssertEqual(Tensor.normal([4, 5], using: &r1).array, Tensor.normal([4, 5], using: &r2).array)
    XCTAssertEqual(Tensor.uniform([7], using: &r1).array, Tensor.uniform([7], using: &r2).array)
  }

  func testUniformRange() {
    var rng = SeededGenerator(seed: 3)
    var lo: Float = 1, hi: Float = 0, sum = 0.0
    let n = 20_000
    for _ in 0..<n {
      let u = rng.nextUniform()
      lo = min(lo, u)
      hi = max(hi, u)
      sum += Double(u)
    }
    XCTAssertGreaterThanOrEqual(lo, 0)
    XCTAssertLessThan(hi, 1)
    XCTAssertEqual(sum / Double(n), 0.5, accuracy: 0.01)
    for _ in 0..<1000 {
      let v = rng.nextUniform(-3, 2)
      XCTAssertTrue(v >= -3 && v < 2, "\(v)")
    }
  }

  func testNormalMoments() {
    var rng = SeededGenerator(seed: 2024)
    let n = 100_000
    var s = 0.0, s2 = 0.0
    for _ in 0..<n {
      let v = Double(rng.nextNormal())
      XCTAssertTrue(v.isFinite)
      s += v
      s2 += v * v
    }
    let mean = s / Double(n), std = (s2 / Double(n) - mean * mean).squareRoot()
    // Standard errors: 1/√n ≈ 0.003 for the mean, ≈ 0.0022 for the std.
    XCTAssertEqual(mean, 0, accuracy: 0.015)
    XCTAssertEqual(std, 1, accuracy: 0.015)
  }

  func testFillNormalUsesMeanAndStd() {
    var rng = SeededGenerator(seed: 9)
    let t = Tensor(zeros: [50_000])
    t.fillNormal(mean: 3, std: 0.5, using: &rng)
    let v = t.doubles
    let mean = v.reduce(0, +) / Double(v.count)
    let std = (v.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(v.count)).squareRoot()
    XCTAssertEqual(mean, 3, accuracy: 0.02)
    XCTAssertEqual(std, 0.5, accuracy: 0.01)
  }

  func testNextIntCoversItsRange() {
    var rng = SeededGenerator(seed: 4)
    var seen = Set<Int>()
    for _ in 0..<500 {
      let k = rng.nextInt(below: 7)
      XCTAssertTrue((0..<7).contains(k))
      seen.insert(k)
    }
    XCTAssertEqual(seen.count, 7)
  }
}
