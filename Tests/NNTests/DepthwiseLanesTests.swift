// DepthwiseLanesTests: the channels-major depthwise kernels that run one channel's samples eight
// to a vector (CDepthwiseKernels' dw_lanes_*) against the Double reference and against the
// per-plane kernels, in every kernel variant this CPU runs: odd shapes (1×1 and 2×1 maps, widths
// that are not multiples of 4, sample counts that are not multiples of 8, stride 2 on odd sizes),
// dx skipped, gradients that accumulate; the geometries it runs and where it is chosen.
import CDepthwiseKernels
import NN
import TensorCore
import TestSupport
import XCTest

final class DepthwiseLanesTests: XCTestCase {
  /// (samples, height, width, stride)
  static let cases: [(Int, Int, Int, Int)] = [
    (2, 1, 1, 1), (2, 1, 1, 2), (3, 2, 1, 2), (13, 7, 5, 1), (13, 9, 7, 2), (8, 4, 4, 1), (64, 4, 4, 1),
    (9, 8, 8, 2), (16, 16, 16, 1), (8, 6, 12, 1), (11, 12, 8, 2), (17, 5, 16, 2), (10, 32, 32, 2), (5, 3, 4, 1),
  ]

  private func geometry(_ n: Int, _ h: Int, _ w: Int, _ s: Int) -> DWGeometry {
    DWGeometry(n: n, c: 1, m: 1, h: h, w: w, kh: 3, kw: 3, sh: s, sw: s, ph: 1, pw: 1, oh: (h - 1) / s + 1,
      ow: (w - 1) / s + 1)
  }

  func testLanesKernelsMatchTheReferenceAndThePerPlaneKernels() throws {
    defer { DepthwiseConv2D.selectKernelVariant(nil) }
    for variant in DepthwiseConv2D.supportedKernelVariants {
      XCTAssertTrue(DepthwiseConv2D.selectKernelVariant(variant))
      for (i, (n, h, w, s)) in Self.cases.enumerated() {
        let label = "\(variant), N\(n) \(h)x\(w) stride \(s)"
        var g = geometry(n, h, w, s)
        XCTAssertTrue(dw_lanes_handles(&g), label)
        var rng = SeededGenerator(seed: UInt64(40 + i))
        let x = Tensor.uniform([n, 1, h, w], using: &rng)
        let weight = Tensor.uniform([1, 1, 3, 3], using: &rng)
        let bias = Float.random(in: -1...1, using: &rng)
        let dy = Tensor.uniform([n, 1, g.oh, g.ow], using: &rng)
        let ref = Reference.groupedConv2d(DoubleTensor(x), weight: DoubleTensor(weight),
          bias: DoubleTensor(shape: [1], values: [Double(bias)]), stride: (s, s), padding: (1, 1), groups: 1)
        let grads = Reference.groupedConv2dBackward(DoubleTensor(x), weight: DoubleTensor(weight),
          dy: DoubleTensor(dy), stride: (s, s), padding: (1, 1), groups: 1)

        // Forward: the reference, and the per-plane kernels' values.
        var scratch = [Float](repeating: .nan, count: max(dw_lanes_forward_scratch(&g), dw_lanes_backward_scratch(&g),
          dw_forward_scratch(&g), dw_backward_scratch(&g, 1)))
        let y = Tensor(zeros: [n, 1, g.oh, g.ow]), yPlanes = Tensor(zeros: [n, 1, g.oh, g.ow])
        var b = bias
        dw_lanes_forward(&g, x.data, weight.data, bias, y.data, &scratch)
        dw_forward_planes(&g, x.data, weight.data, &b, yPlanes.data, 0, n, &scratch)
        assertClose(y, ref, rtol: 1e-5, atol: 1e-5, "y, \(label)")
        XCTAssertEqual(y.array, yPlanes.array, "y against the per-plane kernels, \(label)")

        // Backward into gradients that already hold 0.5 (they accumulate), then without dx.
        let dx = Tensor(zeros: [n, 1, h, w]), dxPlanes = Tensor(zeros: [n, 1, h, w])
        let dW = Tensor(shape: [9], repeating: 0.5), dWPlanes = Tensor(shape: [9], repeating: 0.5)
        var db: Float = 0.5, dbPlanes: Float = 0.5
        dw_lanes_backward(&g, x.data, weight.data, dy.data, dx.data, dW.data, &db, &scratch)
        dw_backward_channels(&g, x.data, weight.data, dy.data, dxPlanes.data, dWPlanes.data, &dbPlanes, 0, 1,
          &scratch)
        assertClose(dx, grads.dx, rtol: 1e-5, atol: 1e-5, "dx, \(label)")
        XCTAssertEqual(dx.array, dxPlanes.array, "dx against the per-plane kernels, \(label)")
        assertClose(dW.array, grads.dw.values.map { $0 + 0.5 }, rtol: 1e-5, atol: 1e-5, "dW, \(label)")
        assertClose([db], grads.db.values.map { $0 + 0.5 }, rtol: 1e-5, atol: 1e-5, "db, \(label)")
        // Without dx or db: the same dW as with them.
        let dW0 = Tensor(zeros: [9]), dW1 = Tensor(zeros: [9])
        var db0: Float = 0
        dw_lanes_backward(&g, x.data, weight.data, dy.data, dx.data, dW0.data, &db0, &scratch)
        dw_lanes_backward(&g, x.data, weight.data, dy.data, nil, dW1.data, nil, &scratch)
        XCTAssertEqual(dW1.array, dW0.array, "dW without dx or db, \(label)")
      }
    }
  }

  func testTheGeometriesItRuns() {
    var g = geometry(4, 8, 8, 1)
    XCTAssertTrue(dw_lanes_handles(&g))
    g.n = 1
    XCTAssertFalse(dw_lanes_handles(&g), "one sample")
    g = geometry(4, 8, 8, 1)
    (g.ph, g.pw, g.oh, g.ow) = (0, 0, 6, 6)
    XCTAssertFalse(dw_lanes_handles(&g), "no padding")
    g = geometry(4, 9, 9, 3)
    XCTAssertFalse(dw_lanes_handles(&g), "stride 3")
    g = geometry(4, 8, 8, 1)
    g.m = 2
    XCTAssertFalse(dw_lanes_handles(&g), "channel multiplier 2")

    // Chosen for the channels-major pass with the AVX2 variant only, and there not for stride 2
    // on 16-wide planes (the per-plane kernels' direct path is faster).
    defer { DepthwiseConv2D.selectKernelVariant(nil) }
    var s1 = geometry(64, 8, 8, 1), s2 = geometry(64, 32, 32, 2), s2w16 = geometry(64, 16, 16, 2)
    if DepthwiseConv2D.selectKernelVariant("avx2") {
      XCTAssertTrue(dw_lanes_preferred(&s1))
      XCTAssertTrue(dw_lanes_preferred(&s2))
      XCTAssertFalse(dw_lanes_preferred(&s2w16))
    }
    XCTAssertTrue(DepthwiseConv2D.selectKernelVariant("portable"))
    XCTAssertFalse(dw_lanes_preferred(&s1), "the portable variant keeps the per-plane kernels")
  }
}
