// BLASTests: the sgemm wrapper against a triple loop for all four transpose combinations and
// the degenerate sizes (k = 0, m = 1, n = 1), and orthonormalize's QᵀQ = I.
import TensorCore
import TestSupport
import XCTest

final class BLASTests: XCTestCase {
  /// Runs BLAS.sgemm on random operands and compares with Reference.gemm.
  private func checkGemm(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float, beta: Float, seed: UInt64,
    atol: Double = 1e-5, file: StaticString = #filePath, line: UInt = #line
  ) {
    var rng = SeededGenerator(seed: seed)
    let a = randomFloats(m * k, using: &rng), b = randomFloats(k * n, using: &rng)
    var c = randomFloats(m * n, using: &rng)
    let expected = Reference.gemm(
      transA: transA, transB: transB, m: m, n: n, k: k, alpha: Double(alpha),
      a: a.map(Double.init), b: b.map(Double.init), beta: Double(beta), c: c.map(Double.init))
    if beta == 0 { for i in c.indices { c[i] = .nan } }  // beta == 0 must ignore C entirely
    a.withUnsafeBufferPointer { ap in
      b.withUnsafeBufferPointer { bp in
        c.withUnsafeMutableBufferPointer { cp in
          BLAS.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
            a: ap.baseAddress!, b: bp.baseAddress!, beta: beta, c: cp.baseAddress!)
        }
      }
    }
    assertClose(c, expected, rtol: 1e-5, atol: atol,
      "sgemm tA=\(transA) tB=\(transB) m=\(m) n=\(n) k=\(k) alpha=\(alpha) beta=\(beta)", file: file, line: line)
  }

  func testAllFourTransposeCombinations() {
    var seed: UInt64 = 1
    for (m, n, k) in [(5, 7, 3), (13, 3, 9), (1, 17, 5), (6, 1, 4), (1, 1, 1), (16, 16, 16)] {
      for transA in [false, true] {
        for transB in [false, true] {
          checkGemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 1, beta: 0, seed: seed)
          checkGemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: -0.5, beta: 1, seed: seed + 100)
          checkGemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 2, beta: 0.25, seed: seed + 200)
          seed += 1
        }
      }
    }
  }

  func testZeroInnerDimension() {
    for transA in [false, true] {
      for transB in [false, true] {
        // k = 0: C = beta·C; with beta = 0, C becomes exactly 0 even if it held NaN.
        checkGemm(transA: transA, transB: transB, m: 3, n: 4, k: 0, alpha: 1, beta: 0, seed: 7)
        checkGemm(transA: transA, transB: transB, m: 3, n: 4, k: 0, alpha: 1, beta: 0.5, seed: 8)
      }
    }
    var c: [Float] = [.nan, .nan]
    let dummy: [Float] = [0]
    BLAS.sgemm(m: 1, n: 2, k: 0, a: dummy, b: dummy, c: &c)
    XCTAssertEqual(c, [0, 0])
  }

  /// `A[M, K] · B[N, K]ᵀ` into a C of at most `BLAS.smallKernelMaximumProduct` elements runs as
  /// pieces of at most 10⁶ / (M·N) columns (rounded down to a multiple of 128), as even as
  /// multiples of 16 allow; the pieces add up to the whole product with beta applied once (NaN in
  /// C ignored at beta 0). Other layouts, larger products and empty ones run as one call.
  func testLongReductionsIntoSmallProductsRunInPieces() {
    XCTAssertEqual(BLAS.reductionChunk(transA: false, transB: true, m: 24, n: 27, k: 65536), 1536)
    XCTAssertEqual(BLAS.reductionChunk(transA: false, transB: true, m: 32, n: 27, k: 65536), 1152)
    XCTAssertEqual(BLAS.reductionChunk(transA: false, transB: true, m: 30, n: 40, k: 5000), 720)  // M·N = 1200
    XCTAssertEqual(BLAS.reductionChunk(transA: false, transB: true, m: 24, n: 27, k: 1536), 1536)  // one piece
    XCTAssertEqual(BLAS.reductionChunk(transA: false, transB: true, m: 24, n: 27, k: 3072), 1536)  // two whole
    XCTAssertEqual(BLAS.reductionChunk(transA: false, transB: true, m: 1, n: 1201, k: 5000), 5000)
    XCTAssertEqual(BLAS.reductionChunk(transA: false, transB: true, m: 0, n: 27, k: 5000), 5000)
    XCTAssertEqual(BLAS.reductionChunk(transA: true, transB: true, m: 24, n: 27, k: 65536), 65536)
    XCTAssertEqual(BLAS.reductionChunk(transA: false, transB: false, m: 24, n: 27, k: 65536), 65536)
    var seed: UInt64 = 500
    // Pieces of 1264 (the last 1208), 1168 (the last 1105), 672 (the last 656), one of 20,011,
    // 15,008 and 14,992.
    // Sums of k products in [-1, 1): rounding grows as √k (1e-5 absolute is too tight past a few
    // thousand terms, pieces or not).
    for (m, n, k) in [(24, 27, 5000), (24, 27, 4609), (30, 40, 2000), (1, 1, 20_011), (7, 5, 30_000)] {
      let atol = 3e-6 * Double(k).squareRoot()
      checkGemm(transA: false, transB: true, m: m, n: n, k: k, alpha: 1, beta: 0, seed: seed, atol: atol)
      checkGemm(transA: false, transB: true, m: m, n: n, k: k, alpha: -0.5, beta: 1, seed: seed + 1, atol: atol)
      checkGemm(transA: false, transB: true, m: m, n: n, k: k, alpha: 2, beta: 0.25, seed: seed + 2, atol: atol)
      seed += 3
    }
  }

  /// A `beta == 0` call gives the same bits whether the wrapper zeroes C itself and has OpenBLAS
  /// add into it (`BLAS.clearsC`, the default on OpenBLAS's kernel families without AVX-512) or
  /// leaves the zeroing to OpenBLAS: all four layouts, C starting as NaN, products of one element,
  /// odd sizes, a C past the 64 Ki floats that are cleared on one thread (cleared over the pool),
  /// and a long reduction that runs in pieces; a `beta == 1` call is untouched by the setting.
  func testZeroingCItselfGivesOpenBLASsBits() {
    let saved = BLAS.clearsC
    defer { BLAS.clearsC = saved }
    var seed: UInt64 = 900
    let shapes = [(1, 1, 1), (5, 7, 3), (17, 33, 9), (64, 1, 100), (300, 301, 20), (24, 27, 5000)]
    for (m, n, k) in shapes {
      for transA in [false, true] {
        for transB in [false, true] {
          for beta: Float in [0, 1] {
            var rng = SeededGenerator(seed: seed)
            seed += 1
            let a = randomFloats(m * k, using: &rng), b = randomFloats(k * n, using: &rng)
            let start = beta == 0 ? [Float](repeating: .nan, count: m * n) : randomFloats(m * n, using: &rng)
            var outs: [[Float]] = []
            for clears in [true, false] {
              BLAS.clearsC = clears
              var c = start
              BLAS.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: 0.75, a: a, b: b, beta: beta, c: &c)
              outs.append(c)
            }
            XCTAssertFalse(outs[0].contains { $0.isNaN }, "C's NaN must be cleared: \(m)×\(n)×\(k)")
            assertBitwiseEqual(outs[0], outs[1], "tA=\(transA) tB=\(transB) \(m)×\(n)×\(k) beta \(beta): cleared by us vs by OpenBLAS")
          }
        }
      }
    }
  }

  func testEmptyOutputIsANoOp() {
    var c: [Float] = [42]
    let a: [Float] = [1, 2], b: [Float] = [3, 4]
    BLAS.sgemm(m: 0, n: 1, k: 2, a: a, b: b, c: &c)
    BLAS.sgemm(m: 1, n: 0, k: 2, a: a, b: b, c: &c)
    XCTAssertEqual(c, [42])
  }

  /// Checks orthonormality of the rows (wide) or columns (tall), and that R = Qᵀ·A (tall) has a
  /// positive diagonal: the sign convention of torch.nn.init.orthogonal_.
  private func checkOrthonormalize(
    rows: Int, cols: Int, seed: UInt64, file: StaticString = #filePath, line: UInt = #line
  ) throws {
    var rng = SeededGenerator(seed: seed)
    let a = Tensor.normal([rows, cols], using: &rng)
    let q = a.clone()
    try BLAS.orthonormalize(q.data, rows: rows, cols: cols)
    let tall = rows >= cols
    let r = tall ? cols : rows, len = tall ? rows : cols
    // vector v of the orthonormal family, element e.
    func qv(_ v: Int, _ e: Int) -> Double { Double(tall ? q[e * cols + v] : q[v * cols + e]) }
    func av(_ v: Int, _ e: Int) -> Double { Double(tall ? a[e * cols + v] : a[v * cols + e]) }
    var gram = [Double](), identity = [Double]()
    for i in 0..<r {
      for j in 0..<r {
        gram.append((0..<len).reduce(0) { $0 + qv(i, $1) * qv(j, $1) })
        identity.append(i == j ? 1 : 0)
      }
    }
    assertClose(gram.map(Float.init), identity, rtol: 0, atol: 1e-5, "QᵀQ = I for \(rows)×\(cols)", file: file, line: line)
    for i in 0..<r {
      let rii = (0..<len).reduce(0.0) { $0 + qv(i, $1) * av(i, $1) }
      XCTAssertGreaterThan(rii, 0, "R[\(i),\(i)] must be positive", file: file, line: line)
    }
  }

  func testOrthonormalizeTallWideAndSquare() throws {
    try checkOrthonormalize(rows: 9, cols: 4, seed: 1)
    try checkOrthonormalize(rows: 3, cols: 11, seed: 2)
    try checkOrthonormalize(rows: 5, cols: 5, seed: 3)
    try checkOrthonormalize(rows: 1, cols: 6, seed: 4)
    try checkOrthonormalize(rows: 6, cols: 1, seed: 5)
  }

  /// OpenBLAS runs a product this size on one thread whatever the setting, so the bits match.
  /// Larger products are split across threads, and OpenBLAS 0.3.21 then rounds differently
  /// (measured: most elements of a 16×576×72 product differ in the last bits), so only
  /// agreement to rounding holds there. Layers that need bitwise reproducibility across thread
  /// counts cannot get it from this OpenBLAS.
  func testThreadCountChangesOnlyRounding() {
    let saved = Threads.count
    defer { Threads.count = saved }
    for (m, n, k) in [(8, 8, 8), (16, 576, 72)] {
      var rng = SeededGenerator(seed: 77)
      let a = randomFloats(m * k, using: &rng), b = randomFloats(k * n, using: &rng)
      var outs: [[Float]] = []
      for threads in [1, 2] {
        Threads.count = threads
        var c = [Float](repeating: 0, count: m * n)
        BLAS.sgemm(m: m, n: n, k: k, a: a, b: b, c: &c)
        outs.append(c)
      }
      if m * n * k <= 512 {
        assertBitwiseEqual(outs[0], outs[1], "small sgemm, 1 vs 2 threads")
      } else {
        assertClose(outs[0], outs[1].map(Double.init), rtol: 1e-5, atol: 1e-5, "sgemm \(m)×\(n)×\(k), 1 vs 2 threads")
      }
    }
  }

  func testConfigurationStrings() {
    XCTAssertFalse(BLAS.configuration.isEmpty)
    XCTAssertFalse(BLAS.coreName.isEmpty)
  }

  func testKernelNote() {
    let avx512: [Substring] = ["fpu", "avx", "avx2", "fma", "avx512f"]
    let avx2: [Substring] = ["fpu", "avx", "avx2", "fma"]
    let old: [Substring] = ["fpu", "sse3"]
    // OpenBLAS chose wide kernels itself, or the CPU has none wider: nothing to say.
    XCTAssertNil(BLAS.kernelNote(pinned: nil, core: "SkylakeX", cpuFlags: avx512))
    XCTAssertNil(BLAS.kernelNote(pinned: nil, core: "Haswell", cpuFlags: avx2))
    XCTAssertNil(BLAS.kernelNote(pinned: "", core: "Zen", cpuFlags: avx2), "an empty value pins nothing")
    XCTAssertNil(BLAS.kernelNote(pinned: nil, core: "Prescott", cpuFlags: old))
    // Pinned below AVX-512 on a CPU that has it.
    let pinned = BLAS.kernelNote(pinned: "Haswell", core: "Haswell", cpuFlags: avx512)
    XCTAssertTrue(pinned?.contains("OPENBLAS_CORETYPE=Haswell pins OpenBLAS to its Haswell kernels") ?? false, "\(pinned ?? "nil")")
    XCTAssertNil(BLAS.kernelNote(pinned: "SkylakeX", core: "SkylakeX", cpuFlags: avx512))
    XCTAssertNil(BLAS.kernelNote(pinned: "Haswell", core: "Haswell", cpuFlags: avx2), "no wider kernels to pin away from")
    // An OpenBLAS that does not know the CPU falls back to pre-AVX2 kernels.
    let unknown = BLAS.kernelNote(pinned: nil, core: "Prescott", cpuFlags: avx512)
    XCTAssertTrue(unknown?.contains("runs its Prescott kernels, without AVX2, on a CPU with AVX-512") ?? false, "\(unknown ?? "nil")")
    let unknown2 = BLAS.kernelNote(pinned: nil, core: "Nehalem", cpuFlags: avx2)
    XCTAssertTrue(unknown2?.contains("with AVX2") ?? false, "\(unknown2 ?? "nil")")
    // This process: the note agrees with its own inputs.
    XCTAssertEqual(BLAS.kernelNote, BLAS.kernelNote(
      pinned: getenv("OPENBLAS_CORETYPE").map { String(cString: $0) }, core: BLAS.coreName, cpuFlags: cpuinfoFlags()))
  }

  private func cpuinfoFlags() -> [Substring] {
    let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
    return cpuinfo.split(separator: "\n").first { $0.hasPrefix("flags") }?
      .split(whereSeparator: { $0 == " " || $0 == "\t" }) ?? []
  }
}
