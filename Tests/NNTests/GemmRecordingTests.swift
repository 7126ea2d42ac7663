// GemmRecordingTests: BLAS.recordingGemms records the sgemm calls of one forward + backward
// step of a small conv net (shapes, transposes, scalars, order), only while it runs; GemmReplay
// lays the recorded operands out with the recorded aliasing and replays the same calls.
import NN
import TensorCore
import TestSupport
import XCTest

final class GemmRecordingTests: XCTestCase {
  /// conv1 3→4 3×3 pad 1 (general path), ReLU, conv2 4→6 3×3 stride 2 (general path, 5×5 → 2×2),
  /// conv3 6→5 1×1 (the pointwise path: one GEMM per sample on its 2×2 plane while
  /// `Conv2D.perSampleMinimumPlane` ≤ 4), flatten, linear 20→3; batch 2.
  private func smallNet() -> Sequential {
    var rng = SeededGenerator(seed: 3)
    return Sequential([
      ("conv1", Conv2D(inChannels: 3, outChannels: 4, kernelSize: 3, padding: 1, rng: &rng)), ("relu1", ReLU()),
      ("conv2", Conv2D(inChannels: 4, outChannels: 6, kernelSize: 3, stride: 2, rng: &rng)), ("relu2", ReLU()),
      ("conv3", Conv2D(inChannels: 6, outChannels: 5, kernelSize: 1, rng: &rng)),
      ("flatten", Flatten()),
      ("linear", Linear(inFeatures: 20, outFeatures: 3, rng: &rng)),
    ])
  }

  func testRecordsTheCallsOfOneStepInOrder() throws {
    let saved = Conv2D.perSampleMinimumPlane
    defer { Conv2D.perSampleMinimumPlane = saved }
    Conv2D.perSampleMinimumPlane = 4
    let net = smallNet()
    var rng = SeededGenerator(seed: 4)
    let x = Tensor(zeros: [2, 3, 5, 5])
    x.fillNormal(using: &rng)
    let loss = CrossEntropyLoss()
    let (_, calls) = try BLAS.recordingGemms {
      net.zeroGrad()
      let (_, g) = try loss.valueAndGradient(try net.forward(x), labels: [0, 2])
      _ = try net.backward(g)
    }
    // N = 2. conv1: P = 25, K = 3·9 = 27; conv2: P = 4, K = 4·9 = 36; conv3: P = 4, per sample.
    let expected = [
      "NN m4 n50 k27 b0",  // conv1: y[4, N·P] = W[4, 27] · col[27, N·P]
      "NN m6 n8 k36 b0",  // conv2: y[6, N·P] = W[6, 36] · col[36, N·P]
      "NN m5 n4 k6 b0", "NN m5 n4 k6 b0",  // conv3: y_n[5, 4] = W[5, 6] · x_n[6, 4], n = 0, 1
      "NT m2 n3 k20 b0",  // linear: y[2, 3] = x[2, 20] · Wᵀ
      "TN m3 n20 k2 b1",  // linear: dW[3, 20] += dyᵀ · x
      "NN m2 n20 k3 b0",  // linear: dx[2, 20] = dy · W
      "NT m5 n6 k4 b1", "TN m6 n4 k5 b0",  // conv3, sample 0: dW += dy_0 · x_0ᵀ; dx_0 = Wᵀ · dy_0
      "NT m5 n6 k4 b1", "TN m6 n4 k5 b0",  // conv3, sample 1
      "NT m6 n36 k8 b1", "TN m36 n8 k6 b0",  // conv2: dW += dyT · colᵀ; dcol = Wᵀ · dyT
      "NT m4 n27 k50 b1", "TN m27 n50 k4 b0",  // conv1
    ]
    XCTAssertEqual(calls.map(\.shape), expected)

    // conv3's per-sample calls read one weight and walk through one input and one output tensor.
    XCTAssertEqual(calls[2].a, calls[3].a)
    XCTAssertEqual(calls[3].b - calls[2].b, UInt(6 * 4 * 4))
    XCTAssertEqual(calls[3].c - calls[2].c, UInt(5 * 4 * 4))
  }

  /// With the default `perSampleMinimumPlane` (256), conv3's 2×2 planes run batched: one GEMM
  /// over [Cin, N·P] forward, and one each for dW and dx backward (6 per-sample calls become 3).
  func testSmallPointwisePlanesRunAsOneGemmOverTheBatch() throws {
    XCTAssertGreaterThan(Conv2D.perSampleMinimumPlane, 4)
    let net = smallNet()
    let x = Tensor(zeros: [2, 3, 5, 5])
    let (_, calls) = try BLAS.recordingGemms {
      let (_, g) = try CrossEntropyLoss().valueAndGradient(try net.forward(x), labels: [0, 2])
      _ = try net.backward(g)
    }
    XCTAssertEqual(calls.map(\.shape), [
      "NN m4 n50 k27 b0", "NN m6 n8 k36 b0",
      "NN m5 n8 k6 b0",  // conv3: tmp[5, N·P] = W[5, 6] · col[6, N·P]
      "NT m2 n3 k20 b0", "TN m3 n20 k2 b1", "NN m2 n20 k3 b0",
      "NT m5 n6 k8 b1", "TN m6 n8 k5 b0",  // conv3: dW += dyT · colᵀ; dcol = Wᵀ · dyT
      "NT m6 n36 k8 b1", "TN m36 n8 k6 b0", "NT m4 n27 k50 b1", "TN m27 n50 k4 b0",
    ])
  }

  func testRecordsOnlyWhileItRuns() throws {
    let a = [Float](repeating: 1, count: 6), b = [Float](repeating: 2, count: 6)
    var c = [Float](repeating: 0, count: 4)
    func product(m: Int, n: Int, k: Int) {
      a.withUnsafeBufferPointer { ap in
        b.withUnsafeBufferPointer { bp in
          c.withUnsafeMutableBufferPointer { cp in
            BLAS.sgemm(m: m, n: n, k: k, a: ap.baseAddress!, b: bp.baseAddress!, c: cp.baseAddress!)
          }
        }
      }
    }
    product(m: 2, n: 2, k: 3)  // not recorded
    let (value, calls) = BLAS.recordingGemms { () -> Int in
      product(m: 1, n: 2, k: 3)
      product(m: 2, n: 2, k: 0)  // k = 0 never reaches OpenBLAS
      product(m: 2, n: 1, k: 2)
      return 7
    }
    product(m: 2, n: 2, k: 1)  // not recorded
    XCTAssertEqual(value, 7)
    XCTAssertEqual(calls.map(\.shape), ["NN m1 n2 k3 b0", "NN m2 n1 k2 b0"])
    XCTAssertEqual(c, [2, 2, 2, 2])  // the last product (k = 1: 1 · 2) ran as ever
    XCTAssertEqual(BLAS.recordingGemms { () }.calls, [])

    struct Stop: Error {}
    XCTAssertThrowsError(try BLAS.recordingGemms { product(m: 1, n: 1, k: 1); throw Stop() })
    XCTAssertEqual(BLAS.recordingGemms { product(m: 1, n: 1, k: 2) }.calls.map(\.shape), ["NN m1 n1 k2 b0"])
  }

  func testReplayKeepsTheRecordedAliasingAndComputesTheSameProducts() throws {
    // Two products: t[2, 3] = A[2, 4] · B[4, 3], then u[2, 2] += 0.5 · t[2, 3] · B'ᵀ[3, 2], B' the
    // [2, 3] of floats 2..<8 of B (inside the first call's B), the first call's C the second's A.
    var rng = SeededGenerator(seed: 5)
    let a = Tensor(zeros: [8]), b = Tensor(zeros: [12]), t = Tensor(zeros: [6]), u = Tensor(zeros: [4])
    a.fillNormal(using: &rng)
    b.fillNormal(using: &rng)
    let (_, calls) = BLAS.recordingGemms {
      BLAS.sgemm(m: 2, n: 3, k: 4, a: a.data, b: b.data, c: t.data)
      BLAS.sgemm(transB: true, m: 2, n: 2, k: 3, alpha: 0.5, a: t.data, b: b.data + 2, beta: 1, c: u.data)
    }
    XCTAssertEqual(calls.map(\.shape), ["NN m2 n3 k4 b0", "NT m2 n2 k3 b1 a0.5"])
    let replay = GemmReplay(calls)
    // The union of the memory touched: a (32 bytes), b (48, the second call's slice inside it),
    // t (24) and u (16), each a tensor of its own.
    XCTAssertEqual(replay.bytes, 32 + 48 + 24 + 16)
    XCTAssertEqual(replay.flops, 2 * 2 * 3 * 4 + 2 * 2 * 2 * 3)
    XCTAssertEqual(replay.calls, calls)
    let before = replay.snapshot(calls[1].c, count: 4)
    replay.run()
    // The replay's own operands: the second product, recomputed in Double from them, matches.
    let ra = replay.snapshot(calls[0].a, count: 8), rb = replay.snapshot(calls[0].b, count: 12)
    let rt = replay.snapshot(calls[0].c, count: 6), ru = replay.snapshot(calls[1].c, count: 4)
    let wantT = Reference.gemm(transA: false, transB: false, m: 2, n: 3, k: 4, alpha: 1, a: ra.map(Double.init),
      b: rb.map(Double.init), beta: 0, c: [Double](repeating: 0, count: 6))
    assertClose(rt, wantT, rtol: 1e-5, atol: 1e-6, "replayed t")
    let wantU = Reference.gemm(transA: false, transB: true, m: 2, n: 2, k: 3, alpha: 0.5, a: rt.map(Double.init),
      b: Array(rb[2..<8]).map(Double.init), beta: 1, c: before.map(Double.init))
    assertClose(ru, wantU, rtol: 1e-5, atol: 1e-6, "replayed u")
  }

  /// A long reduction into a small product (`BLAS.reductionChunk`) reaches OpenBLAS as pieces:
  /// the recording has each piece with its leading dimensions, and the replay runs the pieces on
  /// operands laid out with the same strides, to the same product.
  func testRecordsAndReplaysTheReductionsPieces() throws {
    var rng = SeededGenerator(seed: 9)
    let (m, n, k) = (24, 27, 5000)
    let a = Tensor(zeros: [m, k]), b = Tensor(zeros: [n, k]), c = Tensor(zeros: [m, n])
    a.fillNormal(using: &rng)
    b.fillNormal(using: &rng)
    let (_, calls) = BLAS.recordingGemms {
      BLAS.sgemm(transB: true, m: m, n: n, k: k, a: a.data, b: b.data, c: c.data)
    }
    // At most 1536 columns a piece (10⁶ / 648), so four, as even as multiples of 16 allow.
    XCTAssertEqual(calls.map(\.shape), [
      "NT m24 n27 k1264 b0 lda5000 ldb5000", "NT m24 n27 k1264 b1 lda5000 ldb5000",
      "NT m24 n27 k1264 b1 lda5000 ldb5000", "NT m24 n27 k1208 b1 lda5000 ldb5000",
    ])
    XCTAssertEqual(calls.map { $0.a - calls[0].a }, [0, 1264, 2528, 3792].map { UInt($0 * 4) })
    XCTAssertEqual(calls.map { $0.b - calls[0].b }, [0, 1264, 2528, 3792].map { UInt($0 * 4) })
    let replay = GemmReplay(calls)
    // The replay's calls are recorded in turn, on the replay's buffers.
    let (_, again) = BLAS.recordingGemms { replay.run() }
    XCTAssertEqual(again.map(\.shape), calls.map(\.shape))
    XCTAssertNotEqual(again[0].a, calls[0].a)
    XCTAssertEqual(replay.bytes, 4 * (m * k + n * k + m * n))
    XCTAssertEqual(replay.flops, 2 * Double(m * n * k))
    replay.run()
    let ra = replay.snapshot(calls[0].a, count: m * k), rb = replay.snapshot(calls[0].b, count: n * k)
    let want = Reference.gemm(transA: false, transB: true, m: m, n: n, k: k, alpha: 1, a: ra.map(Double.init),
      b: rb.map(Double.init), beta: 0, c: [Double](repeating: 0, count: m * n))
    assertClose(replay.snapshot(calls[0].c, count: m * n), want, rtol: 1e-5, atol: 1e-4, "replayed pieces")
  }
}
