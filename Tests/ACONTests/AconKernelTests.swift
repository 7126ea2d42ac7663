// AconKernelTests: the fused ACON-C kernels (AconKernels) and their polynomial exp/sigmoid
// (FastMath) against a naive Double reference kept private to this file: values, gradients,
// central finite differences, limit cases, extreme inputs, NaN, accumulation, the saved-σ
// variant, position independence and bit-identical results for 1 and 2 threads. The C kernels
// have an AVX-512 (16 lanes) and an AVX2+FMA (8 lanes) variant on x86-64, a NEON one (8 lanes,
// FMA) on aarch64 and a portable one everywhere; the main tests run on every one the CPU supports
// (testPortableVariant, testAVX2Variant, testAVX512Variant, testNEONVariant), the variants are
// compared with each other (testVariantsAgree, testFastMathVariantsAgree), and each build offers
// exactly its architecture's variants (testVariantsMatchTheArchitecture).
import ACON
import CAconKernels
import TensorCore
import XCTest

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

// MARK: - Problem and naive Double reference

/// One ACON-C problem: x, dy: [N, C, HW]; p1, p2: [C]; beta in `layout`. Stored in Double so
/// that the reference can be perturbed by amounts Float cannot represent.
private struct Problem {
  var n: Int, c: Int, hw: Int
  var layout: AconBetaLayout
  var x: [Double], dy: [Double], p1: [Double], p2: [Double], beta: [Double]

  var count: Int { n * c * hw }

  static func betaCount(_ layout: AconBetaLayout, n: Int, c: Int, hw: Int) -> Int {
    switch layout {
    case .perChannel: return c
    case .perSampleChannel: return n * c
    case .perElement: return n * c * hw
    }
  }

  /// The index into beta of element (nn, ch, i).
  func betaIndex(_ nn: Int, _ ch: Int, _ i: Int) -> Int {
    switch layout {
    case .perChannel: return ch
    case .perSampleChannel: return nn * c + ch
    case .perElement: return (nn * c + ch) * hw + i
    }
  }

  /// Random problem; values are rounded to Float so that kernel and reference see the same data.
  static func random(
    n: Int, c: Int, hw: Int, layout: AconBetaLayout, seed: UInt64,
    betaScale: Float = 1.5, betaMean: Float = 0.5
  ) -> Problem {
    var rng = SeededGenerator(seed: seed)
    func normals(_ k: Int, _ mean: Float = 0, _ std: Float = 1) -> [Double] {
      (0..<k).map { _ in Double(mean + std * rng.nextNormal()) }
    }
    let count = n * c * hw
    return Problem(
      n: n, c: c, hw: hw, layout: layout, x: normals(count, 0, 2), dy: normals(count),
      p1: normals(c), p2: normals(c),
      beta: normals(betaCount(layout, n: n, c: c, hw: hw), betaMean, betaScale))
  }
}

private func refSigmoid(_ t: Double) -> Double {
  if t >= 0 { return 1 / (1 + exp(-t)) }
  let e = exp(t)
  return e / (1 + e)
}

/// The reference's forward and backward, written straight from the formulas.
private struct Reference {
  var y: [Double], dx: [Double], dp1: [Double], dp2: [Double], dbeta: [Double]
  /// Error scales: Σ|dy·x| per channel, Σ|dy|·d²·(w + 0.01) per β entry. (w = s·(1 − s) is
  /// computed from s in Float, so its absolute error is a few 1e−8; with rtol 1e−5 the 0.01
  /// allows 1e−7·|dy|·d² per element.)
  var dpScale: [Double], dbetaScale: [Double]
  /// Per element: |d| + |p2·x| (for y) and |dy|·(|k| + |p2|) (for dx).
  var yScale: [Double], dxScale: [Double]

  init(_ p: Problem) {
    let count = p.count, nb = p.beta.count
    y = [Double](repeating: 0, count: count)
    dx = y
    yScale = y
    dxScale = y
    dp1 = [Double](repeating: 0, count: p.c)
    dp2 = dp1
    dpScale = dp1
    dbeta = [Double](repeating: 0, count: nb)
    dbetaScale = dbeta
    for nn in 0..<p.n {
      for ch in 0..<p.c {
        let k = p.p1[ch] - p.p2[ch], q = p.p2[ch]
        for i in 0..<p.hw {
          let e = (nn * p.c + ch) * p.hw + i, bi = p.betaIndex(nn, ch, i)
          let x = p.x[e], dy = p.dy[e], b = p.beta[bi]
          let d = k * x, t = b * d, s = refSigmoid(t), w = s * (1 - s)
          let g = s * (1 + t * (1 - s))
          y[e] = d * s + q * x
          dx[e] = dy * (k * g + q)
          dp1[ch] += dy * x * g
          dp2[ch] += dy * x * (1 - g)
          dbeta[bi] += dy * d * d * w
          yScale[e] = abs(d) + abs(q * x)
          dxScale[e] = abs(dy) * (abs(k) + abs(q))
          dpScale[ch] += abs(dy * x)
          dbetaScale[bi] += abs(dy) * d * d * (w + 0.01)
        }
      }
    }
  }

  /// L = Σ dy·y, whose gradients are exactly the backward's outputs.
  static func loss(_ p: Problem) -> Double {
    var l = 0.0
    for nn in 0..<p.n {
      for ch in 0..<p.c {
        let k = p.p1[ch] - p.p2[ch]
        for i in 0..<p.hw {
          let e = (nn * p.c + ch) * p.hw + i
          let x = p.x[e], d = k * x
          l += p.dy[e] * (d * refSigmoid(p.beta[p.betaIndex(nn, ch, i)] * d) + p.p2[ch] * x)
        }
      }
    }
    return l
  }
}

// MARK: - Running the kernels

private struct KernelResult {
  var y: [Float], sigmoid: [Float], dx: [Float], dp1: [Float], dp2: [Float], dbeta: [Float]
}

/// Runs forward (or forwardSavingSigmoid) and backward (or backwardFromSigmoid) on `p`, with
/// the gradients accumulated into the given initial values. With `channelsMajor`, x and dy go to
/// the kernels as [C, N, HW] and y, σ and dx come back reordered to [N, C, HW].
private func runKernels(
  _ p: Problem, saved: Bool = false, skipDx: Bool = false,
  dp1Init: [Float]? = nil, dp2Init: [Float]? = nil, dbetaInit: [Float]? = nil, backwardCalls: Int = 1,
  channelsMajor: Bool = false
) -> KernelResult {
  precondition(!(channelsMajor && saved), "the saved-σ entry points are NCHW only")
  // Element e = (nn, ch, i) of [N, C, HW] lies at `at(e)` in the kernels' buffers.
  func at(_ e: Int) -> Int {
    guard channelsMajor else { return e }
    let (plane, i) = e.quotientAndRemainder(dividingBy: p.hw), (nn, ch) = plane.quotientAndRemainder(dividingBy: p.c)
    return (ch * p.n + nn) * p.hw + i
  }
  func toKernel(_ v: [Float]) -> [Float] {
    var r = v
    for e in v.indices { r[at(e)] = v[e] }
    return r
  }
  let x = toKernel(p.x.map(Float.init)), dy = toKernel(p.dy.map(Float.init))
  let p1 = p.p1.map(Float.init), p2 = p.p2.map(Float.init), beta = p.beta.map(Float.init)
  // Allocate at least one element so that empty problems still get valid pointers.
  func buffer(_ values: [Float]) -> UnsafeMutablePointer<Float> {
    let b = UnsafeMutablePointer<Float>.allocate(capacity: max(values.count, 1))
    b.initialize(repeating: .nan, count: max(values.count, 1))
    for (i, v) in values.enumerated() { b[i] = v }
    return b
  }
  let count = p.count
  let bx = buffer(x), bdy = buffer(dy), bp1 = buffer(p1), bp2 = buffer(p2), bb = buffer(beta)
  let nans = [Float](repeating: .nan, count: count)
  let by = buffer(nans), bs = buffer(nans), bdx = buffer(nans)
  let bdp1 = buffer(dp1Init ?? [Float](repeating: 0, count: p.c))
  let bdp2 = buffer(dp2Init ?? [Float](repeating: 0, count: p.c))
  let bdb = buffer(dbetaInit ?? [Float](repeating: 0, count: beta.count))
  defer { for b in [bx, bdy, bp1, bp2, bb, by, bs, bdx, bdp1, bdp2, bdb] { b.deallocate() } }
  if saved {
    AconKernels.forwardSavingSigmoid(
      x: bx, y: by, n: p.n, c: p.c, hw: p.hw, p1: bp1, p2: bp2, beta: bb, betaLayout: p.layout,
      sigmoid: bs)
  } else {
    AconKernels.forward(
      x: bx, y: by, n: p.n, c: p.c, hw: p.hw, p1: bp1, p2: bp2, beta: bb, betaLayout: p.layout,
      channelsMajor: channelsMajor)
  }
  for _ in 0..<backwardCalls {
    if saved {
      AconKernels.backwardFromSigmoid(
        x: bx, dy: bdy, dx: skipDx ? nil : bdx, n: p.n, c: p.c, hw: p.hw, p1: bp1, p2: bp2,
        beta: bb, betaLayout: p.layout, dp1: bdp1, dp2: bdp2, dbeta: bdb, sigmoid: bs)
    } else {
      AconKernels.backward(
        x: bx, dy: bdy, dx: skipDx ? nil : bdx, n: p.n, c: p.c, hw: p.hw, p1: bp1, p2: bp2,
        beta: bb, betaLayout: p.layout, dp1: bdp1, dp2: bdp2, dbeta: bdb, channelsMajor: channelsMajor)
    }
  }
  func fromKernel(_ b: UnsafeMutablePointer<Float>) -> [Float] { (0..<count).map { b[at($0)] } }
  return KernelResult(
    y: fromKernel(by), sigmoid: fromKernel(bs), dx: fromKernel(bdx), dp1: bdp1.array(p.c),
    dp2: bdp2.array(p.c), dbeta: bdb.array(beta.count))
}

extension UnsafeMutablePointer where Pointee == Float {
  fileprivate func array(_ count: Int) -> [Float] { Array(UnsafeBufferPointer(start: self, count: count)) }
}

/// Σ dy·y of the Float kernel's forward, accumulated in Double.
private func kernelLoss(_ p: Problem) -> Double {
  let r = runKernels(p)
  var l = 0.0
  for e in 0..<p.count { l += Double(Float(p.dy[e])) * Double(r.y[e]) }
  return l
}

// MARK: - Assertions

private func assertClose(
  _ got: [Float], _ want: [Double], scale: [Double], rtol: Double, _ what: String,
  file: StaticString = #filePath, line: UInt = #line
) {
  XCTAssertEqual(got.count, want.count, "\(what): count", file: file, line: line)
  var worst = 0.0, at = -1
  for i in 0..<min(got.count, want.count) {
    let err = abs(Double(got[i]) - want[i])
    let tol = rtol * (scale[i] + abs(want[i])) + 1e-37
    guard err.isFinite, got[i].isFinite else {
      XCTFail("\(what)[\(i)] = \(got[i]), want \(want[i])", file: file, line: line)
      return
    }
    if err / tol > worst {
      worst = err / tol
      at = i
    }
  }
  if worst > 1 {
    XCTFail(
      "\(what)[\(at)] = \(got[at]), want \(want[at]) (error \(worst)× the tolerance)", file: file,
      line: line)
  }
}

private func bits(_ a: [Float]) -> [UInt32] { a.map(\.bitPattern) }

private func assertSameBits(
  _ a: KernelResult, _ b: KernelResult, _ what: String, compareSums: Bool = true,
  file: StaticString = #filePath, line: UInt = #line
) {
  XCTAssertEqual(bits(a.y), bits(b.y), "\(what): y", file: file, line: line)
  XCTAssertEqual(bits(a.dx), bits(b.dx), "\(what): dx", file: file, line: line)
  if compareSums {
    XCTAssertEqual(bits(a.dp1), bits(b.dp1), "\(what): dp1", file: file, line: line)
    XCTAssertEqual(bits(a.dp2), bits(b.dp2), "\(what): dp2", file: file, line: line)
    XCTAssertEqual(bits(a.dbeta), bits(b.dbeta), "\(what): dbeta", file: file, line: line)
  }
}

private let allLayouts: [AconBetaLayout] = [.perChannel, .perSampleChannel, .perElement]

private let allVariants: [AconKernelVariant] = [
  AconKernelVariantPortable, AconKernelVariantAVX2, AconKernelVariantAVX512, AconKernelVariantNEON,
]

private func variantName(_ v: AconKernelVariant) -> String { String(cString: acon_kernels_variant_name(v)) }

/// Shapes that exercise the full groups (4 vectors: 32 elements at 8 lanes, 64 at 16), the
/// masked tail and both, plus degenerate sizes.
private let shapes: [(n: Int, c: Int, hw: Int)] = [
  (1, 1, 1), (2, 3, 1), (1, 4, 7), (3, 2, 8), (2, 5, 13), (1, 1, 16), (3, 3, 9), (2, 1, 49),
  (1, 7, 31), (4, 3, 64), (1, 2, 100), (2, 1, 143),
]

// MARK: - Tests

final class AconKernelTests: XCTestCase {

  // MARK: FastMath

  /// fastExp's documented bound: relative error ≤ 1.0e−7 where e^x is a normal Float.
  func testFastExpRelativeErrorBound() {
    var xs: [Float] = []
    var v = -87.0
    while v <= 88.0 {  // every 1e−3
      xs.append(Float(v))
      v += 1e-3
    }
    // Edge points: the ends of the normal range, around 0, and a few awkward spots.
    xs += [
      -87.33, -87.3365, 88.72, 88.7228, 88.722_83, -1e-7, 1e-7, -Float.leastNonzeroMagnitude,
      Float.leastNonzeroMagnitude, 0, -0.0, 0.346_573_6, -0.346_573_6, 1, -1, 0.5, 10, -10,
    ]
    var rng = SeededGenerator(seed: 7)
    for _ in 0..<20_000 { xs.append(rng.nextUniform(-87.33, 88.72)) }
    while xs.count % 8 != 0 { xs.append(0) }
    var worst = 0.0, worstX: Float = 0
    for i in stride(from: 0, to: xs.count, by: 8) {
      let vx = SIMD8<Float>(xs[i..<(i + 8)])
      let vy = fastExp(vx)
      for l in 0..<8 {
        let x = vx[l]
        XCTAssertEqual(vy[l].bitPattern, fastExp(x).bitPattern, "scalar vs lane at x = \(x)")
        let want = exp(Double(x))
        guard want >= Double(Float.leastNormalMagnitude), want <= Double(Float.greatestFiniteMagnitude)
        else { continue }
        let rel = abs(Double(vy[l]) / want - 1)
        if rel > worst { (worst, worstX) = (rel, x) }
      }
    }
    XCTAssertLessThanOrEqual(worst, 1.0e-7, "max relative error \(worst) at x = \(worstX)")
  }

  func testFastExpSubnormalRangeAndLimits() {
    // Subnormal results: absolute error ≤ 1e−7·e^x + 2⁻¹⁴⁹.
    var v = -104.0
    while v < -87.33 {
      let x = Float(v)
      let want = exp(Double(x))
      let err = abs(Double(fastExp(x)) - want)
      XCTAssertLessThanOrEqual(err, 1e-7 * want + 0x1p-149, "x = \(x)")
      v += 0.01
    }
    XCTAssertEqual(fastExp(Float(0)), 1)
    XCTAssertEqual(fastExp(Float(-0.0)), 1)
    XCTAssertEqual(fastExp(Float(88.73)), .infinity)
    XCTAssertEqual(fastExp(Float(89)), .infinity)
    XCTAssertEqual(fastExp(Float(1e30)), .infinity)
    XCTAssertEqual(fastExp(Float.greatestFiniteMagnitude), .infinity)
    XCTAssertEqual(fastExp(Float.infinity), .infinity)
    XCTAssertTrue(fastExp(Float(88.72)).isFinite)
    XCTAssertEqual(fastExp(Float(-104)), 0)
    XCTAssertEqual(fastExp(Float(-1e30)), 0)
    XCTAssertEqual(fastExp(-Float.greatestFiniteMagnitude), 0)
    XCTAssertEqual(fastExp(-Float.infinity), 0)
    XCTAssertGreaterThan(fastExp(Float(-103)), 0, "gradual underflow")
    let big = SIMD8<Float>(-.infinity, -1e30, -104, 0, 1, 88.8, 1e30, .infinity)
    let want = SIMD8<Float>(0, 0, 0, 1, fastExp(Float(1)), .infinity, .infinity, .infinity)
    XCTAssertEqual(fastExp(big), want)
  }

  func testFastSigmoidLimitsAccuracyAndStability() {
    for x: Float in [17, 20, 88, 100, 1e4, 1e30, .greatestFiniteMagnitude, .infinity] {
      XCTAssertEqual(fastSigmoid(x), 1, "σ(\(x))")
    }
    for x: Float in [-88.73, -88.8, -89, -100, -1e4, -1e30, -.greatestFiniteMagnitude, -.infinity] {
      XCTAssertEqual(fastSigmoid(x), 0, "σ(\(x))")
    }
    XCTAssertEqual(fastSigmoid(Float(0)), 0.5)
    XCTAssertEqual(fastSigmoid(Float(-0.0)), 0.5)
    XCTAssertGreaterThan(fastSigmoid(Float(-87)), 0)
    // Every finite input gives a finite value in [0, 1]; lanes equal the scalar form, which
    // equals 1 / (1 + fastExp(−x)); the relative error is ≤ 3e−7 while σ is a normal Float.
    var xs: [Float] = [
      .leastNonzeroMagnitude, -.leastNonzeroMagnitude, .leastNormalMagnitude, 1e-30, -1e-30,
      88.8, -88.8, 86.5, -86.5, 86.6, -86.6, 103, -103, 1e38, -1e38,
    ]
    var v = -100.0
    while v <= 30 {
      xs.append(Float(v))
      v += 2.5e-3
    }
    while xs.count % 8 != 0 { xs.append(1) }
    var worst = 0.0
    for i in stride(from: 0, to: xs.count, by: 8) {
      let vx = SIMD8<Float>(xs[i..<(i + 8)])
      let vs = fastSigmoid(vx)
      for l in 0..<8 {
        let x = vx[l], s = vs[l]
        XCTAssertTrue(s.isFinite && s >= 0 && s <= 1, "σ(\(x)) = \(s)")
        XCTAssertEqual(s.bitPattern, fastSigmoid(x).bitPattern, "scalar vs lane at \(x)")
        XCTAssertEqual(s.bitPattern, (1 / (1 + fastExp(-x))).bitPattern, "σ vs 1/(1+e^−x) at \(x)")
        let want = refSigmoid(Double(x))
        if want >= Double(Float.leastNormalMagnitude) { worst = max(worst, abs(Double(s) / want - 1)) }
      }
    }
    XCTAssertLessThanOrEqual(worst, 3e-7)
  }

  func testFastMathPropagatesNaN() {
    let nans: [Float] = [
      .nan, -.nan, Float(nan: 0x1234, signaling: false), Float(bitPattern: 0x7FC0_0001),
      Float(bitPattern: 0xFFFF_FFFF),
    ]
    for n in nans {
      XCTAssertTrue(fastExp(n).isNaN, "exp(\(n.bitPattern))")
      XCTAssertTrue(fastSigmoid(n).isNaN, "σ(\(n.bitPattern))")
      let v = SIMD8<Float>(1, n, -200, n, 200, 0, n, -1)
      let e = fastExp(v), s = fastSigmoid(v)
      for l in 0..<8 {
        XCTAssertEqual(e[l].isNaN, v[l].isNaN, "exp lane \(l)")
        XCTAssertEqual(s[l].isNaN, v[l].isNaN, "σ lane \(l)")
        if !v[l].isNaN {
          XCTAssertEqual(e[l], fastExp(v[l]))
          XCTAssertEqual(s[l], fastSigmoid(v[l]))
        }
      }
    }
  }

  // MARK: Values and gradients against the reference

  func testForwardAndBackwardMatchReference() {
    var seed: UInt64 = 100
    for layout in allLayouts {
      for (n, c, hw) in shapes {
        seed += 1
        let p = Problem.random(n: n, c: c, hw: hw, layout: layout, seed: seed)
        let ref = Reference(p)
        let got = runKernels(p)
        let tag = "\(layout) \(n)x\(c)x\(hw)"
        assertClose(got.y, ref.y, scale: ref.yScale, rtol: 2e-6, "\(tag) y")
        assertClose(got.dx, ref.dx, scale: ref.dxScale, rtol: 2e-6, "\(tag) dx")
        assertClose(got.dp1, ref.dp1, scale: ref.dpScale, rtol: 1e-5, "\(tag) dp1")
        assertClose(got.dp2, ref.dp2, scale: ref.dpScale, rtol: 1e-5, "\(tag) dp2")
        assertClose(got.dbeta, ref.dbeta, scale: ref.dbetaScale, rtol: 1e-5, "\(tag) dbeta")
        // σ saved by the forward is fastSigmoid(β·(p1 − p2)·x), bit for bit.
        let saved = runKernels(p, saved: true)
        for nn in 0..<n {
          for ch in 0..<c {
            for i in 0..<hw {
              let e = (nn * c + ch) * hw + i
              let k = Float(p.p1[ch]) - Float(p.p2[ch])
              let t = Float(p.beta[p.betaIndex(nn, ch, i)]) * (k * Float(p.x[e]))
              XCTAssertEqual(saved.sigmoid[e].bitPattern, fastSigmoid(t).bitPattern, "\(tag) s[\(e)]")
            }
          }
        }
      }
    }
  }

  /// The gradient formulas themselves, by central differences of L = Σ dy·y in Double.
  func testReferenceGradientsByFiniteDifferencesInDouble() {
    for (li, layout) in allLayouts.enumerated() {
      let p = Problem.random(n: 2, c: 3, hw: 5, layout: layout, seed: 900 + UInt64(li))
      let ref = Reference(p)
      func check(_ analytic: Double, _ perturb: (inout Problem, Double) -> Void, _ what: String) {
        let h = 1e-5
        var plus = p, minus = p
        perturb(&plus, h)
        perturb(&minus, -h)
        let numeric = (Reference.loss(plus) - Reference.loss(minus)) / (2 * h)
        XCTAssertEqual(
          analytic, numeric, accuracy: 1e-6 * max(1, abs(analytic)), "\(layout) \(what)")
      }
      for e in 0..<p.count { check(ref.dx[e], { $0.x[e] += $1 }, "dx[\(e)]") }
      for ch in 0..<p.c {
        check(ref.dp1[ch], { $0.p1[ch] += $1 }, "dp1[\(ch)]")
        check(ref.dp2[ch], { $0.p2[ch] += $1 }, "dp2[\(ch)]")
      }
      for j in 0..<p.beta.count { check(ref.dbeta[j], { $0.beta[j] += $1 }, "dbeta[\(j)]") }
    }
  }

  /// The Float kernel's backward against central differences of its own forward.
  func testKernelGradientsByFiniteDifferencesInFloat() {
    for (li, layout) in allLayouts.enumerated() {
      let p = Problem.random(n: 2, c: 2, hw: 11, layout: layout, seed: 950 + UInt64(li))
      let got = runKernels(p)
      func check(_ analytic: Float, _ field: WritableKeyPath<Problem, [Double]>, _ i: Int, _ what: String) {
        // Step 1e−2 (Caffe's GradientChecker), rounded so that the step is exact in Float.
        var plus = p, minus = p
        let v0 = Float(p[keyPath: field][i])
        let vp = v0 + 1e-2, vm = v0 - 1e-2
        plus[keyPath: field][i] = Double(vp)
        minus[keyPath: field][i] = Double(vm)
        let numeric = (kernelLoss(plus) - kernelLoss(minus)) / Double(vp - vm)
        let a = Double(analytic)
        XCTAssertEqual(a, numeric, accuracy: 2e-3 * max(1, abs(a), abs(numeric)), "\(layout) \(what)")
      }
      for e in 0..<p.count { check(got.dx[e], \.x, e, "dx[\(e)]") }
      for ch in 0..<p.c {
        check(got.dp1[ch], \.p1, ch, "dp1[\(ch)]")
        check(got.dp2[ch], \.p2, ch, "dp2[\(ch)]")
      }
      for j in 0..<p.beta.count { check(got.dbeta[j], \.beta, j, "dbeta[\(j)]") }
    }
  }

  // MARK: Limit cases

  /// β = 0: y = (p1 + p2)·x/2, g = ½, so dx = dy·(p1 + p2)/2, dp1 = dp2 = Σ dy·x/2 and
  /// dβ = Σ dy·d²/4.
  func testBetaZeroIsTheMeanOfTheTwoLines() {
    for layout in allLayouts {
      var p = Problem.random(n: 2, c: 3, hw: 13, layout: layout, seed: 31)
      p.beta = p.beta.map { _ in 0 }
      let got = runKernels(p)
      var dp1 = [Double](repeating: 0, count: p.c), dpScale = dp1
      var dbeta = [Double](repeating: 0, count: p.beta.count), dbScale = dbeta
      for nn in 0..<p.n {
        for ch in 0..<p.c {
          let a = Double(Float(p.p1[ch])), b = Double(Float(p.p2[ch]))
          for i in 0..<p.hw {
            let e = (nn * p.c + ch) * p.hw + i
            let x = p.x[e], dy = p.dy[e]
            XCTAssertEqual(Double(got.y[e]), (a + b) * x / 2, accuracy: 1e-6 * (abs(a) + abs(b)) * abs(x))
            XCTAssertEqual(Double(got.dx[e]), dy * (a + b) / 2, accuracy: 1e-6 * (abs(a) + abs(b)) * abs(dy))
            dp1[ch] += dy * x / 2
            dpScale[ch] += abs(dy * x)
            dbeta[p.betaIndex(nn, ch, i)] += dy * (a - b) * (a - b) * x * x / 4
            dbScale[p.betaIndex(nn, ch, i)] += abs(dy) * (a - b) * (a - b) * x * x
          }
        }
      }
      for ch in 0..<p.c {
        XCTAssertEqual(Double(got.dp1[ch]), dp1[ch], accuracy: 1e-5 * dpScale[ch])
        XCTAssertEqual(Double(got.dp2[ch]), dp1[ch], accuracy: 1e-5 * dpScale[ch])
      }
      for j in 0..<p.beta.count {
        XCTAssertEqual(Double(got.dbeta[j]), dbeta[j], accuracy: 1e-5 * dbScale[j])
      }
    }
  }

  /// p1 = 1, p2 = 0, β = 1: SiLU, y = x·σ(x), dy/dx = σ(x)·(1 + x·(1 − σ(x))).
  func testSiLUCase() {
    for layout in allLayouts {
      var p = Problem.random(n: 2, c: 2, hw: 21, layout: layout, seed: 41)
      p.p1 = p.p1.map { _ in 1 }
      p.p2 = p.p2.map { _ in 0 }
      p.beta = p.beta.map { _ in 1 }
      let got = runKernels(p)
      for e in 0..<p.count {
        let x = p.x[e], s = refSigmoid(x)
        XCTAssertEqual(Double(got.y[e]), x * s, accuracy: 1e-6 * max(1, abs(x)), "y[\(e)]")
        XCTAssertEqual(
          Double(got.dx[e]), p.dy[e] * s * (1 + x * (1 - s)), accuracy: 3e-6 * max(1, abs(p.dy[e])),
          "dx[\(e)]")
      }
    }
  }

  /// Large |β| switches hard: β = 1e4 gives max(p1·x, p2·x), β = −1e4 gives min, with the
  /// gradient of whichever line is chosen and dβ = 0 (s is exactly 0 or 1).
  func testLargeBetaIsMaxOrMin() {
    for sign in [1.0, -1.0] {
      for layout in allLayouts {
        var p = Problem.random(n: 2, c: 3, hw: 17, layout: layout, seed: 51)
        p.beta = p.beta.map { _ in sign * 1e4 }
        // |p1 − p2| ≥ 0.7 and |x| ≥ 0.1 keep |β·d| ≥ 700, far past where σ saturates in Float.
        p.p1 = [0.8, -0.3, 1.5]
        p.p2 = [0.1, 0.9, -1.25]
        for e in 0..<p.count where abs(p.x[e]) < 0.1 { p.x[e] = p.x[e] < 0 ? -0.1 : 0.1 }
        p.x = p.x.map { Double(Float($0)) }
        let got = runKernels(p)
        var dp1 = [Double](repeating: 0, count: p.c), dp2 = dp1
        for nn in 0..<p.n {
          for ch in 0..<p.c {
            let a = Double(Float(p.p1[ch])), b = Double(Float(p.p2[ch]))
            for i in 0..<p.hw {
              let e = (nn * p.c + ch) * p.hw + i
              let x = p.x[e], dy = p.dy[e]
              let first = sign > 0 ? a * x > b * x : a * x < b * x
              let want = first ? a * x : b * x
              XCTAssertEqual(Double(got.y[e]), want, accuracy: 1e-6 * (abs(a) + abs(b)) * abs(x), "y[\(e)]")
              XCTAssertEqual(Double(got.dx[e]), dy * (first ? a : b), accuracy: 1e-6 * abs(dy) * (abs(a) + abs(b)))
              if first { dp1[ch] += dy * x } else { dp2[ch] += dy * x }
            }
          }
        }
        for ch in 0..<p.c {
          XCTAssertEqual(Double(got.dp1[ch]), dp1[ch], accuracy: 1e-5 * max(1, abs(dp1[ch])))
          XCTAssertEqual(Double(got.dp2[ch]), dp2[ch], accuracy: 1e-5 * max(1, abs(dp2[ch])))
        }
        XCTAssertEqual(got.dbeta, [Float](repeating: 0, count: p.beta.count), "dβ = 0 once σ saturates")
      }
    }
  }

  // MARK: Accumulation, variants, determinism

  func testBackwardAccumulatesParameterGradients() {
    for layout in allLayouts {
      let p = Problem.random(n: 3, c: 4, hw: 13, layout: layout, seed: 61)
      let once = runKernels(p), twice = runKernels(p, backwardCalls: 2)
      // a + a = 2a exactly, so the sums double bit for bit; dx is overwritten, not summed.
      XCTAssertEqual(bits(twice.dp1), bits(once.dp1.map { $0 * 2 }))
      XCTAssertEqual(bits(twice.dp2), bits(once.dp2.map { $0 * 2 }))
      XCTAssertEqual(bits(twice.dbeta), bits(once.dbeta.map { $0 * 2 }))
      XCTAssertEqual(bits(twice.dx), bits(once.dx))
      // Onto nonzero initial values: init + once.
      let i1 = (0..<p.c).map { Float($0) + 0.5 }, i2 = (0..<p.c).map { -Float($0) - 0.25 }
      let ib = (0..<p.beta.count).map { Float($0 % 5) - 2 }
      let onto = runKernels(p, dp1Init: i1, dp2Init: i2, dbetaInit: ib)
      XCTAssertEqual(bits(onto.dp1), bits(zip(i1, once.dp1).map { $0 + $1 }))
      XCTAssertEqual(bits(onto.dp2), bits(zip(i2, once.dp2).map { $0 + $1 }))
      XCTAssertEqual(bits(onto.dbeta), bits(zip(ib, once.dbeta).map { $0 + $1 }))
    }
  }

  func testSkippingDxLeavesParameterGradientsUnchanged() {
    for layout in allLayouts {
      let p = Problem.random(n: 2, c: 3, hw: 19, layout: layout, seed: 71)
      let full = runKernels(p), noDx = runKernels(p, skipDx: true)
      XCTAssertEqual(bits(full.dp1), bits(noDx.dp1))
      XCTAssertEqual(bits(full.dp2), bits(noDx.dp2))
      XCTAssertEqual(bits(full.dbeta), bits(noDx.dbeta))
      XCTAssertTrue(noDx.dx.allSatisfy(\.isNaN), "dx untouched when nil")
    }
  }

  func testSavedSigmoidVariantEqualsRecompute() {
    for layout in allLayouts {
      for (n, c, hw) in shapes {
        let p = Problem.random(n: n, c: c, hw: hw, layout: layout, seed: 81 + UInt64(n * 100 + hw))
        assertSameBits(runKernels(p), runKernels(p, saved: true), "\(layout) \(n)x\(c)x\(hw)")
      }
    }
  }

  /// Each element's y and dx are the same bits whether it is computed in a full group, a full
  /// vector of the rest or a row's masked tail: [1, C, 77] against the same values laid out as
  /// [77, C, 1] (77 = 64 + 13 = 2·32 + 13).
  func testResultsDoNotDependOnPositionInTheRow() {
    var rng = SeededGenerator(seed: 91)
    let c = 2, len = 77
    let p1: [Double] = [0.7, -1.3], p2: [Double] = [0.2, 0.9], beta: [Double] = [1.1, -2.5]
    let x = (0..<(c * len)).map { _ in Double(2 * rng.nextNormal()) }
    let dy = (0..<(c * len)).map { _ in Double(rng.nextNormal()) }
    let rows = Problem(n: 1, c: c, hw: len, layout: .perChannel, x: x, dy: dy, p1: p1, p2: p2, beta: beta)
    // Transpose to [len, c, 1]: element (0, ch, i) moves to (i, ch, 0).
    var tx = x, tdy = dy
    for ch in 0..<c {
      for i in 0..<len {
        tx[i * c + ch] = x[ch * len + i]
        tdy[i * c + ch] = dy[ch * len + i]
      }
    }
    let cols = Problem(n: len, c: c, hw: 1, layout: .perChannel, x: tx, dy: tdy, p1: p1, p2: p2, beta: beta)
    let a = runKernels(rows), b = runKernels(cols)
    for ch in 0..<c {
      for i in 0..<len {
        XCTAssertEqual(a.y[ch * len + i].bitPattern, b.y[i * c + ch].bitPattern, "y (\(ch), \(i))")
        XCTAssertEqual(a.dx[ch * len + i].bitPattern, b.dx[i * c + ch].bitPattern, "dx (\(ch), \(i))")
      }
    }
  }

  /// β given per channel, per (n, c) or per element with the same values: identical y, dx,
  /// dp1 and dp2 bits; dβ sums agree.
  func testBetaLayoutsAgreeWhenBroadcast() {
    let base = Problem.random(n: 3, c: 4, hw: 21, layout: .perChannel, seed: 95)
    var perSample = base, perElement = base
    perSample.layout = .perSampleChannel
    perSample.beta = (0..<(base.n * base.c)).map { base.beta[$0 % base.c] }
    perElement.layout = .perElement
    perElement.beta = (0..<base.count).map { base.beta[($0 / base.hw) % base.c] }
    let a = runKernels(base), b = runKernels(perSample), e = runKernels(perElement)
    assertSameBits(a, b, "perSampleChannel", compareSums: false)
    assertSameBits(a, e, "perElement", compareSums: false)
    XCTAssertEqual(bits(a.dp1), bits(b.dp1))
    XCTAssertEqual(bits(a.dp2), bits(b.dp2))
    XCTAssertEqual(bits(a.dp1), bits(e.dp1))
    XCTAssertEqual(bits(a.dp2), bits(e.dp2))
    for ch in 0..<base.c {
      var fromSample = 0.0, fromElement = 0.0
      for nn in 0..<base.n {
        fromSample += Double(b.dbeta[nn * base.c + ch])
        for i in 0..<base.hw { fromElement += Double(e.dbeta[(nn * base.c + ch) * base.hw + i]) }
      }
      let want = Double(a.dbeta[ch]), tol = 1e-5 * max(1, abs(want))
      XCTAssertEqual(fromSample, want, accuracy: tol)
      XCTAssertEqual(fromElement, want, accuracy: tol)
    }
  }

  func testBitIdenticalForOneAndTwoThreads() {
    let saved = Threads.count
    defer { Threads.count = saved }
    // Large enough that parallelFor really uses two workers (≥ 2·32K elements).
    for layout in allLayouts {
      let p = Problem.random(n: 2, c: 17, hw: 2053, layout: layout, seed: 97)
      Threads.count = 1
      let one = runKernels(p), oneSaved = runKernels(p, saved: true)
      Threads.count = 2
      let two = runKernels(p), twoSaved = runKernels(p, saved: true)
      assertSameBits(one, two, "\(layout) recompute")
      assertSameBits(oneSaved, twoSaved, "\(layout) saved σ")
      assertSameBits(one, twoSaved, "\(layout) saved σ vs recompute")
    }
  }

  /// A batch stored channels-major ([C, N, HW], as a channels-major `Sequential` holds it) gives
  /// the NCHW order's bits: y and dx (reordered), dp1, dp2 and dβ (each channel's planes are
  /// summed in sample order either way), with one thread and two, without dx too.
  func testChannelsMajorLayoutGivesTheNCHWBits() {
    let saved = Threads.count
    defer { Threads.count = saved }
    for layout in [AconBetaLayout.perChannel, .perSampleChannel] {
      for s in shapes + [(n: 2, c: 17, hw: 2053), (n: 9, c: 70, hw: 16)] {
        let p = Problem.random(n: s.n, c: s.c, hw: s.hw, layout: layout, seed: 101)
        let nchw = runKernels(p), nchwNoDx = runKernels(p, skipDx: true)
        for threads in [1, 2] {
          Threads.count = threads
          let what = "\(layout) \(s), \(threads) thread(s)"
          assertSameBits(runKernels(p, channelsMajor: true), nchw, "channels-major, \(what)")
          let noDx = runKernels(p, skipDx: true, channelsMajor: true)
          assertSameBits(
            KernelResult(y: noDx.y, sigmoid: [], dx: [], dp1: noDx.dp1, dp2: noDx.dp2, dbeta: noDx.dbeta),
            KernelResult(y: nchwNoDx.y, sigmoid: [], dx: [], dp1: nchwNoDx.dp1, dp2: nchwNoDx.dp2, dbeta: nchwNoDx.dbeta),
            "channels-major without dx, \(what)")
        }
      }
    }
  }

  // MARK: Extreme inputs

  /// Huge and tiny |x|, β from 0 to ±3e38, realistic |p| ≤ 10: never NaN or inf except where
  /// the exact result itself overflows Float.
  func testExtremeInputsStayFinite() {
    let xs: [Float] = [
      1e30, -1e30, 3e29, -1e20, 1e10, -7, 1, -0.5, 1e-20, -1e-38, 0x1p-133, -0x1p-148, 0, -0.0,
      .leastNonzeroMagnitude, .leastNormalMagnitude,
    ]
    let betas: [Float] = [0, 1, -1, 1e4, -1e4, 1e-30, 1e30, -3e38, .greatestFiniteMagnitude]
    let ps: [(Float, Float)] = [(10, -10), (-10, 10), (1, 0), (0.25, 0.25), (3, 7), (-10, -10)]
    var rng = SeededGenerator(seed: 111)
    for layout in allLayouts {
      for beta in betas {
        let c = ps.count, hw = xs.count, n = 2
        let p = Problem(
          n: n, c: c, hw: hw, layout: layout,
          x: (0..<(n * c * hw)).map { Double(xs[$0 % hw]) },
          dy: (0..<(n * c * hw)).map { _ in Double(rng.nextNormal()) },
          p1: ps.map { Double($0.0) }, p2: ps.map { Double($0.1) },
          beta: [Double](repeating: Double(beta), count: Problem.betaCount(layout, n: n, c: c, hw: hw)))
        let got = runKernels(p), ref = Reference(p)
        let tag = "\(layout) β = \(beta)"
        for e in 0..<p.count {
          XCTAssertTrue(got.y[e].isFinite, "\(tag) y[\(e)] = \(got.y[e]) for x = \(p.x[e])")
          XCTAssertTrue(got.dx[e].isFinite, "\(tag) dx[\(e)] = \(got.dx[e]) for x = \(p.x[e])")
        }
        XCTAssertTrue(got.dp1.allSatisfy(\.isFinite), "\(tag) dp1 \(got.dp1)")
        XCTAssertTrue(got.dp2.allSatisfy(\.isFinite), "\(tag) dp2 \(got.dp2)")
        assertClose(got.y, ref.y, scale: ref.yScale, rtol: 2e-6, "\(tag) y")
        assertClose(got.dx, ref.dx, scale: ref.dxScale, rtol: 2e-6, "\(tag) dx")
        assertClose(got.dp1, ref.dp1, scale: ref.dpScale, rtol: 1e-5, "\(tag) dp1")
        assertClose(got.dp2, ref.dp2, scale: ref.dpScale, rtol: 1e-5, "\(tag) dp2")
        // dβ = Σ dy·d²·w: wherever the exact sum fits in Float, it must be finite and right.
        for j in 0..<p.beta.count where ref.dbetaScale[j] < 1e37 {
          XCTAssertTrue(got.dbeta[j].isFinite, "\(tag) dbeta[\(j)] = \(got.dbeta[j])")
          XCTAssertEqual(
            Double(got.dbeta[j]), ref.dbeta[j], accuracy: 1e-5 * (ref.dbetaScale[j] + abs(ref.dbeta[j])) + 1e-37,
            "\(tag) dbeta[\(j)]")
        }
      }
    }
  }

  /// β = 0 and |x| = 1e30: dβ = Σ dy·d²/4 ≈ 1e62 truly overflows Float. It must come out as
  /// +inf (all dy > 0 here), not NaN, and everything else stays finite.
  func testTrueOverflowOfDBetaIsInfinityNotNaN() {
    let p = Problem(
      n: 1, c: 1, hw: 11, layout: .perChannel, x: (0..<11).map { $0 % 2 == 0 ? 1e30 : -1e30 },
      dy: [Double](repeating: 0.5, count: 11), p1: [3], p2: [-2], beta: [0])
    let got = runKernels(p)
    XCTAssertEqual(got.dbeta[0], .infinity)
    XCTAssertTrue(got.y.allSatisfy(\.isFinite) && got.dx.allSatisfy(\.isFinite))
    XCTAssertTrue(got.dp1[0].isFinite && got.dp2[0].isFinite)
    // dy = 0 on such elements contributes exactly 0, never 0·inf.
    var q = p
    q.dy = q.dy.map { _ in 0 }
    let zero = runKernels(q)
    XCTAssertEqual(zero.dbeta[0], 0)
    XCTAssertEqual(zero.dp1[0], 0)
    XCTAssertEqual(zero.dp2[0], 0)
  }

  func testNaNInXPropagatesOnlyWhereItShould() {
    for layout in allLayouts {
      let p = Problem.random(n: 2, c: 3, hw: 21, layout: layout, seed: 121)
      var q = p
      let bad = (1 * p.c + 1) * p.hw + 4  // n = 1, c = 1, i = 4: in a full vector
      let badTail = (0 * p.c + 2) * p.hw + 19  // n = 0, c = 2, i = 19: in the masked tail
      q.x[bad] = .nan
      q.x[badTail] = .nan
      let a = runKernels(p), b = runKernels(q)
      for e in 0..<p.count {
        if e == bad || e == badTail {
          XCTAssertTrue(b.y[e].isNaN && b.dx[e].isNaN, "\(layout) element \(e)")
        } else {
          XCTAssertEqual(a.y[e].bitPattern, b.y[e].bitPattern, "\(layout) y[\(e)]")
          XCTAssertEqual(a.dx[e].bitPattern, b.dx[e].bitPattern, "\(layout) dx[\(e)]")
        }
      }
      XCTAssertTrue(b.dp1[1].isNaN && b.dp2[1].isNaN && b.dp1[2].isNaN && b.dp2[2].isNaN)
      XCTAssertEqual(bits([b.dp1[0], b.dp2[0]]), bits([a.dp1[0], a.dp2[0]]), "channel 0 untouched")
      switch layout {
      case .perChannel: XCTAssertTrue(b.dbeta[1].isNaN && b.dbeta[2].isNaN && !b.dbeta[0].isNaN)
      case .perSampleChannel: XCTAssertTrue(b.dbeta[1 * p.c + 1].isNaN && b.dbeta[2].isNaN && !b.dbeta[1].isNaN)
      case .perElement: XCTAssertTrue(b.dbeta[bad].isNaN && b.dbeta[badTail].isNaN && !b.dbeta[bad + 1].isNaN)
      }
    }
  }

  // MARK: Every variant

  /// Runs `body` with `variant` forced, then restores the variant in use before; throws XCTSkip
  /// when the CPU cannot run it.
  private func withVariant(_ variant: AconKernelVariant, _ body: () throws -> Void) throws {
    guard acon_kernels_variant_supported(variant) else {
      throw XCTSkip("this CPU cannot run the \(variantName(variant)) variant")
    }
    let saved = acon_kernels_variant()
    defer { XCTAssertTrue(acon_kernels_set_variant(saved)) }
    XCTAssertTrue(acon_kernels_set_variant(variant))
    XCTAssertEqual(acon_kernels_variant(), variant)
    try body()
  }

  /// The checks that every variant must pass (the other tests run them on the default one).
  private func runAllChecks() {
    testFastExpRelativeErrorBound()
    testFastExpSubnormalRangeAndLimits()
    testFastSigmoidLimitsAccuracyAndStability()
    testFastMathPropagatesNaN()
    testForwardAndBackwardMatchReference()
    testKernelGradientsByFiniteDifferencesInFloat()
    testBetaZeroIsTheMeanOfTheTwoLines()
    testSiLUCase()
    testLargeBetaIsMaxOrMin()
    testBackwardAccumulatesParameterGradients()
    testSkippingDxLeavesParameterGradientsUnchanged()
    testSavedSigmoidVariantEqualsRecompute()
    testResultsDoNotDependOnPositionInTheRow()
    testBetaLayoutsAgreeWhenBroadcast()
    testBitIdenticalForOneAndTwoThreads()
    testChannelsMajorLayoutGivesTheNCHWBits()
    testExtremeInputsStayFinite()
    testTrueOverflowOfDBetaIsInfinityNotNaN()
    testNaNInXPropagatesOnlyWhereItShould()
    testEmptyShapesDoNothing()
  }

  /// The portable (8 lanes, no FMA) variant, forced: the same checks as the default one.
  func testPortableVariant() throws { try withVariant(AconKernelVariantPortable) { runAllChecks() } }

  /// The AVX2+FMA (8 lanes) variant, forced (it is not the default on a CPU with AVX-512).
  func testAVX2Variant() throws { try withVariant(AconKernelVariantAVX2) { runAllChecks() } }

  /// The AVX-512 (16 lanes) variant, forced (the default where the CPU has it, unless
  /// ACON_KERNELS caps it).
  func testAVX512Variant() throws { try withVariant(AconKernelVariantAVX512) { runAllChecks() } }

  /// The NEON (8 lanes, FMA) variant, forced (the default on aarch64 unless ACON_KERNELS caps it).
  func testNEONVariant() throws { try withVariant(AconKernelVariantNEON) { runAllChecks() } }

  /// A build offers exactly its architecture's variants: AVX2 and AVX-512 (as the CPU has them)
  /// on x86-64, NEON (always) on aarch64, the portable one everywhere; another architecture's
  /// variant is neither supported nor selectable, and ACON_KERNELS naming it is ignored.
  func testVariantsMatchTheArchitecture() {
    let saved = acon_kernels_variant()
    defer { XCTAssertTrue(acon_kernels_set_variant(saved)) }
    #if arch(x86_64)
      let foreign = [AconKernelVariantNEON]
    #elseif arch(arm64)
      let foreign = [AconKernelVariantAVX2, AconKernelVariantAVX512]
      XCTAssertTrue(acon_kernels_variant_supported(AconKernelVariantNEON))
    #else
      let foreign = [AconKernelVariantAVX2, AconKernelVariantAVX512, AconKernelVariantNEON]
    #endif
    XCTAssertTrue(acon_kernels_variant_supported(AconKernelVariantPortable))
    let widest = allVariants.last { acon_kernels_variant_supported($0) }!
    let oldEnv = getenv("ACON_KERNELS").map { String(cString: $0) }
    defer {
      if let oldEnv { setenv("ACON_KERNELS", oldEnv, 1) } else { unsetenv("ACON_KERNELS") }
    }
    for v in foreign {
      XCTAssertFalse(acon_kernels_variant_supported(v), variantName(v))
      XCTAssertFalse(acon_kernels_set_variant(v), variantName(v))
      XCTAssertNotEqual(acon_kernels_variant(), v)
      setenv("ACON_KERNELS", variantName(v), 1)
      XCTAssertEqual(acon_kernels_default_variant(), widest, "ACON_KERNELS=\(variantName(v))")
    }
    // The architecture's own names cap the choice; "portable" always gives the portable variant.
    setenv("ACON_KERNELS", "portable", 1)
    XCTAssertEqual(acon_kernels_default_variant(), AconKernelVariantPortable)
    for v in allVariants where acon_kernels_variant_supported(v) {
      setenv("ACON_KERNELS", variantName(v), 1)
      XCTAssertEqual(acon_kernels_default_variant(), v, "ACON_KERNELS=\(variantName(v))")
    }
  }

  func testVariantSelection() {
    let saved = acon_kernels_variant()
    defer { XCTAssertTrue(acon_kernels_set_variant(saved)) }
    XCTAssertTrue(acon_kernels_variant_supported(AconKernelVariantPortable))
    XCTAssertEqual(variantName(AconKernelVariantPortable), "portable")
    XCTAssertEqual(variantName(AconKernelVariantAVX2), "avx2")
    XCTAssertEqual(variantName(AconKernelVariantAVX512), "avx512")
    XCTAssertEqual(variantName(AconKernelVariantNEON), "neon")
    XCTAssertEqual(variantName(AconKernelVariant(rawValue: 7)), "unknown")
    XCTAssertEqual(AconKernels.variant, variantName(acon_kernels_variant()))
    // AVX-512 implies AVX2 here, and the default is the widest supported variant unless
    // ACON_KERNELS caps it.
    if acon_kernels_variant_supported(AconKernelVariantAVX512) {
      XCTAssertTrue(acon_kernels_variant_supported(AconKernelVariantAVX2))
    }
    if getenv("ACON_KERNELS") == nil {
      let widest = allVariants.last { acon_kernels_variant_supported($0) }
      XCTAssertEqual(acon_kernels_default_variant(), widest)
    }
    for v in allVariants {
      XCTAssertEqual(acon_kernels_set_variant(v), acon_kernels_variant_supported(v))
      if acon_kernels_variant_supported(v) { XCTAssertEqual(acon_kernels_variant(), v) }
    }
    // An unknown variant is refused and changes nothing.
    XCTAssertTrue(acon_kernels_set_variant(AconKernelVariantPortable))
    XCTAssertFalse(acon_kernels_set_variant(AconKernelVariant(rawValue: 7)))
    XCTAssertFalse(acon_kernels_variant_supported(AconKernelVariant(rawValue: 7)))
    XCTAssertEqual(acon_kernels_variant(), AconKernelVariantPortable)
  }

  /// Every pair of supported variants agrees: AVX2 and AVX-512 (both FMA, the same operations
  /// lane for lane) give the same y, σ, dx and per-element dβ bits, and sums equal to within
  /// rounding (their lanes are reduced in different orders); with the portable variant (no FMA)
  /// everything agrees to within rounding.
  func testVariantsAgree() throws {
    let supported = allVariants.filter { acon_kernels_variant_supported($0) }
    guard supported.count > 1 else { throw XCTSkip("this CPU runs only the portable variant") }
    let saved = acon_kernels_variant()
    defer { XCTAssertTrue(acon_kernels_set_variant(saved)) }
    func run(_ v: AconKernelVariant, _ p: Problem, saved: Bool) -> KernelResult {
      XCTAssertTrue(acon_kernels_set_variant(v))
      return runKernels(p, saved: saved)
    }
    var seed: UInt64 = 141
    for layout in allLayouts {
      for (n, c, hw) in [(3, 4, 37), (2, 3, 49), (2, 2, 143), (1, 5, 8)] {
        seed += 1
        let p = Problem.random(n: n, c: c, hw: hw, layout: layout, seed: seed)
        let ref = Reference(p)
        for savedSigmoid in [false, true] {
          let results = supported.map { run($0, p, saved: savedSigmoid) }
          for i in 0..<supported.count {
            for j in (i + 1)..<supported.count {
              let a = results[i], b = results[j]
              let tag = "\(variantName(supported[i])) vs \(variantName(supported[j])) \(layout) \(n)x\(c)x\(hw)"
              let bothFMA = supported[i] != AconKernelVariantPortable
              func close(_ x: [Float], _ y: [Float], _ scale: [Double], _ rtol: Double, _ what: String) {
                XCTAssertEqual(x.count, y.count)
                for k in 0..<min(x.count, y.count) {
                  let tol = rtol * (scale[k] + abs(Double(y[k]))) + 1e-37
                  XCTAssertEqual(Double(x[k]), Double(y[k]), accuracy: tol, "\(tag) \(what)[\(k)]")
                }
              }
              if bothFMA {
                XCTAssertEqual(bits(a.y), bits(b.y), "\(tag) y")
                XCTAssertEqual(bits(a.dx), bits(b.dx), "\(tag) dx")
                if savedSigmoid { XCTAssertEqual(bits(a.sigmoid), bits(b.sigmoid), "\(tag) σ") }
                if layout == .perElement { XCTAssertEqual(bits(a.dbeta), bits(b.dbeta), "\(tag) dβ") }
              } else {
                close(a.y, b.y, ref.yScale, 1e-6, "y")
                close(a.dx, b.dx, ref.dxScale, 1e-6, "dx")
              }
              close(a.dp1, b.dp1, ref.dpScale, 1e-6, "dp1")
              close(a.dp2, b.dp2, ref.dpScale, 1e-6, "dp2")
              close(a.dbeta, b.dbeta, ref.dbetaScale, 1e-6, "dbeta")
            }
          }
        }
      }
    }
  }

  /// acon_exp and acon_sigmoid of AVX2 and AVX-512 give the same bits for every 257th Float bit
  /// pattern (16.7 million values, all exponents, ±inf and NaNs; NaN in, NaN out), run as arrays
  /// of odd lengths so that full vectors and masked tails both occur. The sigmoid's final p·2ⁿ is
  /// one VSCALEFPS in AVX-512 and an exponent shift and a multiply in AVX2: this pins the two to
  /// the same bits. (Their error bounds are checked per variant by testAVX2Variant and
  /// testAVX512Variant.)
  func testFastMathVariantsAgree() throws {
    for v in [AconKernelVariantAVX2, AconKernelVariantAVX512] where !acon_kernels_variant_supported(v) {
      throw XCTSkip("this CPU cannot run the \(variantName(v)) variant")
    }
    let saved = acon_kernels_variant()
    defer { XCTAssertTrue(acon_kernels_set_variant(saved)) }
    let chunk = 65_521
    var x = [Float](repeating: 0, count: chunk)
    var e2 = x, e5 = x, s2 = x, s5 = x
    var pattern: UInt64 = 0, mismatches = 0
    while pattern <= UInt64(UInt32.max) {
      var m = 0
      while m < chunk && pattern <= UInt64(UInt32.max) {
        x[m] = Float(bitPattern: UInt32(pattern))
        pattern += 257
        m += 1
      }
      XCTAssertTrue(acon_kernels_set_variant(AconKernelVariantAVX2))
      acon_exp(x, &e2, m)
      acon_sigmoid(x, &s2, m)
      XCTAssertTrue(acon_kernels_set_variant(AconKernelVariantAVX512))
      acon_exp(x, &e5, m)
      acon_sigmoid(x, &s5, m)
      for k in 0..<m {
        let same =
          (e2[k].bitPattern == e5[k].bitPattern || (e2[k].isNaN && e5[k].isNaN && x[k].isNaN))
          && (s2[k].bitPattern == s5[k].bitPattern || (s2[k].isNaN && s5[k].isNaN && x[k].isNaN))
        if !same {
          mismatches += 1
          if mismatches <= 5 { XCTFail("x = \(x[k]) (\(x[k].bitPattern)): exp \(e2[k]) vs \(e5[k]), σ \(s2[k]) vs \(s5[k])") }
        }
      }
    }
    XCTAssertEqual(mismatches, 0)
  }

  func testEmptyShapesDoNothing() {
    for layout in allLayouts {
      for (n, c, hw) in [(0, 3, 5), (2, 0, 5), (2, 3, 0)] {
        let p = Problem.random(n: n, c: c, hw: hw, layout: layout, seed: 131)
        let got = runKernels(p, dp1Init: [Float](repeating: 7, count: c), dp2Init: [Float](repeating: 8, count: c))
        XCTAssertEqual(got.dp1, [Float](repeating: 7, count: c))
        XCTAssertEqual(got.dp2, [Float](repeating: 8, count: c))
        XCTAssertTrue(got.dbeta.allSatisfy { $0 == 0 })
      }
    }
  }
}
