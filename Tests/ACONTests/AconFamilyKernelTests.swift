// AconFamilyKernelTests: the fused kernels of the rest of the ACON family, Meta-ACON's
// pixel-wise switch (β = σ(x)) and ACON-FReLU's smooth maximum S(a, b) = (a − b)·σ(β(a − b)) + b,
// against their Double twins in AconReference; the twins' gradients against central finite
// differences; odd shapes (1×1 planes, tails of every length); 1 vs 2 threads, bit for bit;
// every kernel variant the CPU supports against the portable one.
import ACON
import CAconKernels
import TensorCore
import TestSupport
import XCTest

final class AconFamilyKernelTests: XCTestCase {
  /// (planes or N·C, hw) shapes: 1×1, 2×2, and tails of every kind around 8, 16 and 64.
  private let shapes: [(n: Int, c: Int, hw: Int)] = [
    (1, 1, 1), (1, 3, 4), (2, 1, 7), (2, 5, 9), (3, 17, 15), (1, 2, 33), (2, 3, 67), (1, 1, 200),
  ]

  private func floats(_ k: Int, _ rng: inout SeededGenerator, scale: Float = 2) -> [Float] {
    (0..<k).map { _ in scale * rng.nextNormal() }
  }

  // MARK: - Smooth maximum

  private struct SmaxResult { var y: [Float], da: [Float], db: [Float], dbeta: [Float] }

  private func runSmax(_ a: [Float], _ b: [Float], _ dy: [Float], planes: Int, hw: Int, beta: Float)
    -> SmaxResult
  {
    var y = [Float](repeating: .nan, count: a.count), da = y, db = y
    var dbeta = [Float](repeating: 0.5, count: planes)
    AconKernels.smoothMaxForward(a: a, b: b, y: &y, planes: planes, hw: hw, beta: beta)
    AconKernels.smoothMaxBackward(
      a: a, b: b, dy: dy, da: &da, db: &db, planes: planes, hw: hw, beta: beta, dbeta: &dbeta)
    return SmaxResult(y: y, da: da, db: db, dbeta: dbeta.map { $0 - 0.5 })
  }

  func testSmoothMaxMatchesReference() {
    var rng = SeededGenerator(seed: 5)
    for s in shapes {
      for beta: Float in [1, 0.37, -2, 0] {
        let planes = s.n * s.c, count = planes * s.hw
        let a = floats(count, &rng), b = floats(count, &rng), dy = floats(count, &rng, scale: 1)
        let got = runSmax(a, b, dy, planes: planes, hw: s.hw, beta: beta)
        let ry = AconReference.smoothMax(a: a, b: b, beta: Double(beta))
        let rg = AconReference.smoothMaxBackward(a: a, b: b, dy: dy, hw: s.hw, beta: Double(beta))
        let tag = "shape \(s) β \(beta)"
        assertClose(got.y, ry, rtol: 2e-6, atol: 2e-6, tag)
        assertClose(got.da, rg.da, rtol: 2e-6, atol: 2e-6, tag + " da")
        assertClose(got.db, rg.db, rtol: 2e-6, atol: 4e-6, tag + " db")
        assertClose(got.dbeta, rg.dbeta, rtol: 1e-5, atol: 1e-4, tag + " dβ")
      }
    }
  }

  /// The twin's analytic gradients against central differences of the twin's forward.
  func testSmoothMaxTwinByFiniteDifferences() {
    var rng = SeededGenerator(seed: 6)
    let hw = 5, count = 15, beta = 0.8
    let a = floats(count, &rng), b = floats(count, &rng), dy = floats(count, &rng, scale: 1)
    let g = AconReference.smoothMaxBackward(a: a, b: b, dy: dy, hw: hw, beta: beta)
    func loss(_ a: [Double], _ b: [Double], _ beta: Double) -> Double {
      var l = 0.0
      for i in 0..<count {
        let d = a[i] - b[i]
        l += Double(dy[i]) * (d * AconReference.sigmoid(beta * d) + b[i])
      }
      return l
    }
    let ad = a.map(Double.init), bd = b.map(Double.init), h = 1e-6
    for i in 0..<count {
      var ap = ad, am = ad, bp = bd, bm = bd
      ap[i] += h; am[i] -= h; bp[i] += h; bm[i] -= h
      XCTAssertEqual((loss(ap, bd, beta) - loss(am, bd, beta)) / (2 * h), g.da[i], accuracy: 1e-7)
      XCTAssertEqual((loss(ad, bp, beta) - loss(ad, bm, beta)) / (2 * h), g.db[i], accuracy: 1e-7)
    }
    let numeric = (loss(ad, bd, beta + h) - loss(ad, bd, beta - h)) / (2 * h)
    XCTAssertEqual(numeric, g.dbeta.reduce(0, +), accuracy: 1e-6)
  }

  /// The saturated ends: S(a, b) → max(a, b) for β → ∞, min for β → −∞, the mean at β = 0.
  func testSmoothMaxLimits() {
    let a: [Float] = [3, -1, 0.5, 1e30, -1e30], b: [Float] = [1, 2, 0.5, 0, 0]
    var y = [Float](repeating: 0, count: 5)
    AconKernels.smoothMaxForward(a: a, b: b, y: &y, planes: 1, hw: 5, beta: 1e6)
    XCTAssertEqual(y, zip(a, b).map { max($0, $1) })
    AconKernels.smoothMaxForward(a: a, b: b, y: &y, planes: 1, hw: 5, beta: -1e6)
    XCTAssertEqual(y, zip(a, b).map { min($0, $1) })
    AconKernels.smoothMaxForward(a: a, b: b, y: &y, planes: 5, hw: 1, beta: 0)
    for i in 0..<3 { XCTAssertEqual(y[i], (a[i] + b[i]) / 2, accuracy: 1e-6) }
  }

  // MARK: - Pixel-wise Meta-ACON

  private struct PixelResult { var y: [Float], dx: [Float], dp1: [Float], dp2: [Float] }

  private func runPixel(_ x: [Float], _ dy: [Float], _ p1: [Float], _ p2: [Float], n: Int, c: Int, hw: Int)
    -> PixelResult
  {
    var y = [Float](repeating: .nan, count: x.count), dx = y
    var dp1 = [Float](repeating: 0.25, count: c), dp2 = dp1
    AconKernels.pixelwiseForward(x: x, y: &y, n: n, c: c, hw: hw, p1: p1, p2: p2)
    AconKernels.pixelwiseBackward(
      x: x, dy: dy, dx: &dx, n: n, c: c, hw: hw, p1: p1, p2: p2, dp1: &dp1, dp2: &dp2)
    return PixelResult(y: y, dx: dx, dp1: dp1.map { $0 - 0.25 }, dp2: dp2.map { $0 - 0.25 })
  }

  func testPixelwiseMatchesReference() {
    var rng = SeededGenerator(seed: 7)
    for s in shapes {
      let count = s.n * s.c * s.hw
      let x = floats(count, &rng), dy = floats(count, &rng, scale: 1)
      let p1 = floats(s.c, &rng, scale: 1), p2 = floats(s.c, &rng, scale: 1)
      let got = runPixel(x, dy, p1, p2, n: s.n, c: s.c, hw: s.hw)
      let ry = AconReference.pixelwiseForward(x: x, n: s.n, c: s.c, hw: s.hw, p1: p1, p2: p2)
      let rg = AconReference.pixelwiseBackward(x: x, dy: dy, n: s.n, c: s.c, hw: s.hw, p1: p1, p2: p2)
      assertClose(got.y, ry, rtol: 2e-6, atol: 2e-6, "shape \(s) y")
      assertClose(got.dx, rg.dx, rtol: 4e-6, atol: 4e-6, "shape \(s) dx")
      let scale = Double(s.n * s.hw) * 4
      assertClose(got.dp1, rg.dp1, rtol: 1e-5, atol: 2e-6 * scale, "shape \(s) dp1")
      assertClose(got.dp2, rg.dp2, rtol: 1e-5, atol: 2e-6 * scale, "shape \(s) dp2")
    }
  }

  /// dx without the path through β would be wrong: the twin's dx against central differences.
  func testPixelwiseTwinByFiniteDifferences() {
    var rng = SeededGenerator(seed: 8)
    let n = 2, c = 3, hw = 2, count = n * c * hw
    let x = floats(count, &rng), dy = floats(count, &rng, scale: 1)
    let p1 = floats(c, &rng, scale: 1), p2 = floats(c, &rng, scale: 1)
    let g = AconReference.pixelwiseBackward(x: x, dy: dy, n: n, c: c, hw: hw, p1: p1, p2: p2)
    func loss(_ x: [Double], _ p1: [Double], _ p2: [Double]) -> Double {
      var l = 0.0
      for i in 0..<count {
        let ch = (i / hw) % c, b = AconReference.sigmoid(x[i]), d = (p1[ch] - p2[ch]) * x[i]
        l += Double(dy[i]) * (d * AconReference.sigmoid(b * d) + p2[ch] * x[i])
      }
      return l
    }
    let xd = x.map(Double.init), p1d = p1.map(Double.init), p2d = p2.map(Double.init), h = 1e-6
    for i in 0..<count {
      var xp = xd, xm = xd
      xp[i] += h; xm[i] -= h
      XCTAssertEqual((loss(xp, p1d, p2d) - loss(xm, p1d, p2d)) / (2 * h), g.dx[i], accuracy: 1e-7)
    }
    for ch in 0..<c {
      var pp = p1d, pm = p1d
      pp[ch] += h; pm[ch] -= h
      XCTAssertEqual((loss(xd, pp, p2d) - loss(xd, pm, p2d)) / (2 * h), g.dp1[ch], accuracy: 1e-7)
      pp = p2d; pm = p2d
      pp[ch] += h; pm[ch] -= h
      XCTAssertEqual((loss(xd, p1d, pp) - loss(xd, p1d, pm)) / (2 * h), g.dp2[ch], accuracy: 1e-7)
    }
  }

  func testPixelwiseSkippingDxKeepsParameterGradients() {
    var rng = SeededGenerator(seed: 9)
    let n = 2, c = 5, hw = 19, count = n * c * hw
    let x = floats(count, &rng), dy = floats(count, &rng), p1 = floats(c, &rng), p2 = floats(c, &rng)
    let full = runPixel(x, dy, p1, p2, n: n, c: c, hw: hw)
    var dp1 = [Float](repeating: 0.25, count: c), dp2 = dp1
    AconKernels.pixelwiseBackward(x: x, dy: dy, dx: nil, n: n, c: c, hw: hw, p1: p1, p2: p2, dp1: &dp1, dp2: &dp2)
    assertBitwiseEqual(dp1.map { $0 - 0.25 }, full.dp1)
    assertBitwiseEqual(dp2.map { $0 - 0.25 }, full.dp2)
  }

  // MARK: - Threads and variants

  func testBitIdenticalForOneAndTwoThreads() {
    let saved = Threads.count
    defer { Threads.count = saved }
    var rng = SeededGenerator(seed: 10)
    let n = 2, c = 19, hw = 2053, count = n * c * hw
    let x = floats(count, &rng), dy = floats(count, &rng), b = floats(count, &rng)
    let p1 = floats(c, &rng), p2 = floats(c, &rng)
    Threads.count = 1
    let s1 = runSmax(x, b, dy, planes: n * c, hw: hw, beta: 1), q1 = runPixel(x, dy, p1, p2, n: n, c: c, hw: hw)
    Threads.count = 2
    let s2 = runSmax(x, b, dy, planes: n * c, hw: hw, beta: 1), q2 = runPixel(x, dy, p1, p2, n: n, c: c, hw: hw)
    assertBitwiseEqual(s1.y, s2.y); assertBitwiseEqual(s1.da, s2.da)
    assertBitwiseEqual(s1.db, s2.db); assertBitwiseEqual(s1.dbeta, s2.dbeta)
    assertBitwiseEqual(q1.y, q2.y); assertBitwiseEqual(q1.dx, q2.dx)
    assertBitwiseEqual(q1.dp1, q2.dp1); assertBitwiseEqual(q1.dp2, q2.dp2)
  }

  /// Every variant this CPU runs: passes the reference checks, and is within a few ulps of the
  /// portable variant (SIMD variants use FMA; AVX2, AVX-512 and NEON agree elementwise bit for bit).
  func testEveryVariantAgreesWithPortable() throws {
    let saved = acon_kernels_variant()
    defer { XCTAssertTrue(acon_kernels_set_variant(saved)) }
    var rng = SeededGenerator(seed: 11)
    let n = 2, c = 7, hw = 45, count = n * c * hw
    let x = floats(count, &rng), dy = floats(count, &rng), b = floats(count, &rng)
    let p1 = floats(c, &rng), p2 = floats(c, &rng)
    XCTAssertTrue(acon_kernels_set_variant(AconKernelVariantPortable))
    let sp = runSmax(x, b, dy, planes: n * c, hw: hw, beta: 1), pp = runPixel(x, dy, p1, p2, n: n, c: c, hw: hw)
    var fma: [(SmaxResult, PixelResult)] = []
    let all = [AconKernelVariantAVX2, AconKernelVariantAVX512, AconKernelVariantNEON]
    for v in all where acon_kernels_variant_supported(v) {
      XCTAssertTrue(acon_kernels_set_variant(v))
      let tag = String(cString: acon_kernels_variant_name(v))
      testSmoothMaxMatchesReference()
      testPixelwiseMatchesReference()
      testPixelwiseSkippingDxKeepsParameterGradients()
      let sv = runSmax(x, b, dy, planes: n * c, hw: hw, beta: 1), pv = runPixel(x, dy, p1, p2, n: n, c: c, hw: hw)
      assertClose(sv.y, sp.y.map(Double.init), rtol: 1e-6, atol: 1e-6, tag)
      assertClose(sv.da, sp.da.map(Double.init), rtol: 1e-6, atol: 1e-6, tag)
      assertClose(sv.db, sp.db.map(Double.init), rtol: 1e-6, atol: 2e-6, tag)
      assertClose(sv.dbeta, sp.dbeta.map(Double.init), rtol: 1e-5, atol: 1e-5, tag)
      assertClose(pv.y, pp.y.map(Double.init), rtol: 1e-6, atol: 1e-6, tag)
      assertClose(pv.dx, pp.dx.map(Double.init), rtol: 2e-6, atol: 2e-6, tag)
      assertClose(pv.dp1, pp.dp1.map(Double.init), rtol: 1e-5, atol: 1e-5, tag)
      assertClose(pv.dp2, pp.dp2.map(Double.init), rtol: 1e-5, atol: 1e-5, tag)
      fma.append((sv, pv))
    }
    // The FMA variants share the elementwise bits.
    for k in fma.indices.dropFirst() {
      assertBitwiseEqual(fma[k].0.y, fma[0].0.y); assertBitwiseEqual(fma[k].0.da, fma[0].0.da)
      assertBitwiseEqual(fma[k].1.y, fma[0].1.y); assertBitwiseEqual(fma[k].1.dx, fma[0].1.dx)
    }
    XCTAssertTrue(acon_kernels_set_variant(AconKernelVariantPortable))
    testSmoothMaxMatchesReference()
    testPixelwiseMatchesReference()
  }
}
