// AconStreamingTests: the kernels' streaming (non-temporal) stores, which the Swift entry points
// ask for once a call's tensors outgrow the cache (acon_kernels_streaming_threshold): with the
// threshold forced low and high, every fused kernel (ACON-C forward/backward in every β layout,
// with and without the saved σ; Meta-ACON pixel-wise; the smooth maximum with and without dβ;
// acon_add_scalar; the layer-wise layer) gives the same bits, in every variant the CPU runs, on
// odd shapes and on outputs at every alignment (aligned planes take the streaming path, the
// others the plain one; the smooth maximum peels to the first aligned element). And
// MetaAconLayerwise's two ways of sharing work (whole samples per thread, or one sample's
// channels) give the same bits for 1 and 2 threads and match the Double twin.
import ACON
import CAconKernels
import NN
import TensorCore
import TestSupport
import XCTest

final class AconStreamingTests: XCTestCase {
  /// (n, c, hw): whole vectors only (aligned planes), tails, 1×1, and one large enough for two
  /// threads.
  private let shapes: [(n: Int, c: Int, hw: Int)] = [
    (2, 3, 64), (1, 5, 49), (3, 2, 16), (1, 1, 1), (2, 7, 33), (2, 17, 1024),
  ]

  private func floats(_ k: Int, _ rng: inout SeededGenerator) -> [Float] {
    (0..<k).map { _ in 2 * rng.nextNormal() }
  }

  /// Runs `body` with streaming forced on (threshold 1 byte) or off (never).
  private func withStreaming<T>(_ on: Bool, _ body: () throws -> T) rethrows -> T {
    let saved = acon_kernels_streaming_threshold()
    defer { acon_kernels_set_streaming_threshold(saved) }
    acon_kernels_set_streaming_threshold(on ? 1 : Int.max)
    return try body()
  }

  /// Every kernel's outputs for inputs copied to `offset` floats past a 64-byte boundary (the
  /// outputs too), as arrays.
  private func runAll(n: Int, c: Int, hw: Int, offset: Int, seed: UInt64) -> [[Float]] {
    var rng = SeededGenerator(seed: seed)
    let count = n * c * hw
    func buffer(_ values: [Float]? = nil, _ k: Int = count) -> UnsafeMutablePointer<Float> {
      let t = Tensor(zeros: [k + offset + 16])
      keep.append(t)
      let p = t.data + offset
      if let v = values { for i in 0..<k { p[i] = v[i] } }
      return p
    }
    var keep: [Tensor] = []
    let x = buffer(floats(count, &rng)), dy = buffer(floats(count, &rng)), b = buffer(floats(count, &rng))
    let p1 = buffer(floats(c, &rng), c), p2 = buffer(floats(c, &rng), c)
    let betaE = buffer(floats(count, &rng))
    let betaC = buffer(floats(c, &rng), c), betaP = buffer(floats(n * c, &rng), n * c)
    var out: [[Float]] = []
    func take(_ p: UnsafeMutablePointer<Float>, _ k: Int = count) { out.append(Array(UnsafeBufferPointer(start: p, count: k))) }
    for (layout, beta, nb) in [(AconBetaLayout.perChannel, betaC, c), (.perSampleChannel, betaP, n * c), (.perElement, betaE, count)] {
      let y = buffer(), sig = buffer(), dx = buffer(), dx2 = buffer()
      let dbeta = buffer(nil, nb), dp1 = buffer(nil, c), dp2 = buffer(nil, c)
      AconKernels.forward(x: x, y: y, n: n, c: c, hw: hw, p1: p1, p2: p2, beta: beta, betaLayout: layout)
      take(y)
      AconKernels.forwardSavingSigmoid(
        x: x, y: y, n: n, c: c, hw: hw, p1: p1, p2: p2, beta: beta, betaLayout: layout, sigmoid: sig)
      take(y); take(sig)
      AconKernels.backward(x: x, dy: dy, dx: dx, n: n, c: c, hw: hw, p1: p1, p2: p2, beta: beta,
        betaLayout: layout, dp1: dp1, dp2: dp2, dbeta: dbeta)
      AconKernels.backwardFromSigmoid(x: x, dy: dy, dx: dx2, n: n, c: c, hw: hw, p1: p1, p2: p2,
        beta: beta, betaLayout: layout, dp1: dp1, dp2: dp2, dbeta: dbeta, sigmoid: sig)
      take(dx); take(dx2); take(dbeta, nb); take(dp1, c); take(dp2, c)
    }
    let y = buffer(), dx = buffer(), da = buffer(), db = buffer(), dp1 = buffer(nil, c), dp2 = buffer(nil, c)
    AconKernels.pixelwiseForward(x: x, y: y, n: n, c: c, hw: hw, p1: p1, p2: p2)
    AconKernels.pixelwiseBackward(x: x, dy: dy, dx: dx, n: n, c: c, hw: hw, p1: p1, p2: p2, dp1: dp1, dp2: dp2)
    take(y); take(dx); take(dp1, c); take(dp2, c)
    let planes = n * c, dbeta = buffer(nil, planes)
    AconKernels.smoothMaxForward(a: x, b: b, y: y, planes: planes, hw: hw, beta: 0.7)
    AconKernels.smoothMaxBackward(a: x, b: b, dy: dy, da: da, db: db, planes: planes, hw: hw, beta: 0.7, dbeta: dbeta)
    take(y); take(da); take(db); take(dbeta, planes)
    AconKernels.smoothMaxBackward(a: x, b: b, dy: dy, da: da, db: db, planes: planes, hw: hw)
    take(da); take(db)
    acon_add_scalar(x, y, count, 0.3, acon_kernels_streaming_threshold() == 1)
    take(y)
    XCTAssertEqual(out.last!, (0..<count).map { x[$0] + 0.3 }, "acon_add_scalar")
    acon_add_scalar(y, y, count, -0.3, acon_kernels_streaming_threshold() == 1)  // in place
    take(y)
    return out
  }

  func testStreamingStoresGiveTheSameBitsInEveryVariant() {
    let saved = acon_kernels_variant()
    defer { XCTAssertTrue(acon_kernels_set_variant(saved)) }
    let all = [AconKernelVariantPortable, AconKernelVariantAVX2, AconKernelVariantAVX512, AconKernelVariantNEON]
    for v in all where acon_kernels_variant_supported(v) {
      XCTAssertTrue(acon_kernels_set_variant(v))
      let tag = String(cString: acon_kernels_variant_name(v))
      for (k, s) in shapes.enumerated() {
        for offset in [0, 3, 8] {
          let plain = withStreaming(false) { runAll(n: s.n, c: s.c, hw: s.hw, offset: offset, seed: UInt64(40 + k)) }
          let streamed = withStreaming(true) { runAll(n: s.n, c: s.c, hw: s.hw, offset: offset, seed: UInt64(40 + k)) }
          XCTAssertEqual(plain.count, streamed.count)
          for (i, (a, b)) in zip(plain, streamed).enumerated() {
            assertBitwiseEqual(a, b, "\(tag) \(s) offset \(offset) output \(i)")
          }
        }
      }
    }
  }

  /// MetaAconLayerwise forward and backward: y, dx, dp1, dp2.
  private func layerwise(_ shape: [Int], _ x: Tensor, _ dy: Tensor) throws -> [[Float]] {
    var r = SeededGenerator(seed: 31)
    let layer = MetaAconLayerwise(channels: shape[1], rng: &r)
    let y = try layer.forward(x).array
    layer.zeroGrad()
    let dx = try layer.backward(dy).array
    return [y, dx, layer.p1.grad.array, layer.p2.grad.array, layer.lastBeta ?? []]
  }

  /// The default threshold is half the detected last-level cache (16 MiB if none is detected),
  /// and the detection is stable: read once, the same value on every call.
  func testDefaultThresholdIsHalfTheLastLevelCache() {
    let llc = acon_last_level_cache_bytes()
    XCTAssertEqual(acon_last_level_cache_bytes(), llc)
    let saved = acon_kernels_streaming_threshold()
    defer { acon_kernels_set_streaming_threshold(saved) }
    XCTAssertEqual(saved, llc > 0 ? llc / 2 : 16 << 20)
    acon_kernels_set_streaming_threshold(0)  // 0 means 1 (always stream), never "recompute"
    XCTAssertEqual(acon_kernels_streaming_threshold(), 1)
  }

  /// Batches smaller than, equal to and larger than the thread count (one sample's channels
  /// split, whole samples per thread, an uneven share), with streaming on and off: the same bits
  /// for 1 and 2 threads, and the Double twin's values.
  func testLayerwiseSharesWorkWithTheSameBits() throws {
    let saved = Threads.count
    defer { Threads.count = saved }
    var rng = SeededGenerator(seed: 30)
    for shape in [[1, 19, 61, 67], [2, 5, 64, 64], [3, 7, 41, 43], [5, 3, 1, 1], [1, 1, 1, 1], [3, 33]] {
      let x = Tensor.normal(shape, using: &rng), dy = Tensor.normal(shape, using: &rng)
      var runs: [[[Float]]] = []
      for threads in [1, 2] {
        for stream in [false, true] {
          Threads.count = threads
          runs.append(try withStreaming(stream) { try layerwise(shape, x, dy) })
        }
      }
      for run in runs.dropFirst() {
        for k in run.indices { assertBitwiseEqual(runs[0][k], run[k], "\(shape) output \(k)") }
      }
      var r = SeededGenerator(seed: 31)
      let layer = MetaAconLayerwise(channels: shape[1], rng: &r)
      let twin = try ReferenceLayer(layer)
      let theta = twin.parameters.map(\.1)
      let wantY = twin.forward(DoubleTensor(x), theta)
      let (wantDx, wantDp) = twin.backward(DoubleTensor(x), theta, DoubleTensor(dy))
      assertClose(runs[0][0], wantY.values, rtol: 1e-5, atol: 1e-5, "\(shape) y")
      assertClose(runs[0][1], wantDx.values, rtol: 1e-4, atol: 1e-5, "\(shape) dx")
      for (k, want) in wantDp.enumerated() {
        let scale = want.values.map(abs).max() ?? 1
        assertClose(runs[0][2 + k], want.values, rtol: 1e-4, atol: 1e-5 * Swift.max(1, scale), "\(shape) dp\(k + 1)")
      }
    }
  }
}
