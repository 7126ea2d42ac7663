// DepthwiseLanesTests: the depthwise kernels that run one channel's samples eight to a vector
// (CDepthwiseKernels' dw_lanes_*) against the Double reference and against the per-plane
// kernels, in every kernel variant this CPU runs: odd shapes (1×1 and 2×1 maps, widths that are
// not multiples of 4, sample counts that are not multiples of 8, stride 2 on odd sizes), planes
// next to each other (channels-major) and a channel of an NCHW batch, dx skipped, gradients that
// accumulate; the geometries it runs and where it is chosen.
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
        dw_lanes_forward(&g, x.data, h * w, weight.data, bias, y.data, g.oh * g.ow, &scratch)
        dw_forward_planes(&g, x.data, weight.data, &b, yPlanes.data, 0, n, &scratch)
        assertClose(y, ref, rtol: 1e-5, atol: 1e-5, "y, \(label)")
        XCTAssertEqual(y.array, yPlanes.array, "y against the per-plane kernels, \(label)")

        // Backward into gradients that already hold 0.5 (they accumulate), then without dx.
        let dx = Tensor(zeros: [n, 1, h, w]), dxPlanes = Tensor(zeros: [n, 1, h, w])
        let dW = Tensor(shape: [9], repeating: 0.5), dWPlanes = Tensor(shape: [9], repeating: 0.5)
        var db: Float = 0.5, dbPlanes: Float = 0.5
        dw_lanes_backward(&g, x.data, h * w, weight.data, dy.data, g.oh * g.ow, dx.data, dW.data, &db, &scratch)
        dw_backward_channels(&g, x.data, weight.data, dy.data, dxPlanes.data, dWPlanes.data, &dbPlanes, 0, 1,
          &scratch)
        assertClose(dx, grads.dx, rtol: 1e-5, atol: 1e-5, "dx, \(label)")
        // The lanes kernels run where they are chosen (`dw_lanes_preferred`: the AVX2 variant) with
        // the per-plane kernels' dx bits. AVX-512's own per-plane kernel for stride-1 rows adds dy
        // row i's taps into dx rows i + 1, i and i − 1 in that order, which differs from theirs in
        // the last bits on such planes (16×16 here): there, to rounding.
        if variant == "avx512" && s == 1 {
          assertClose(dx.array, dxPlanes.array.map(Double.init), rtol: 1e-6, atol: 1e-6,
            "dx against the per-plane kernels, \(label)")
        } else {
          XCTAssertEqual(dx.array, dxPlanes.array, "dx against the per-plane kernels, \(label)")
        }
        assertClose(dW.array, grads.dw.values.map { $0 + 0.5 }, rtol: 1e-5, atol: 1e-5, "dW, \(label)")
        assertClose([db], grads.db.values.map { $0 + 0.5 }, rtol: 1e-5, atol: 1e-5, "db, \(label)")
        // Without dx or db: the same dW as with them.
        let dW0 = Tensor(zeros: [9]), dW1 = Tensor(zeros: [9])
        var db0: Float = 0
        dw_lanes_backward(&g, x.data, h * w, weight.data, dy.data, g.oh * g.ow, dx.data, dW0.data, &db0, &scratch)
        dw_lanes_backward(&g, x.data, h * w, weight.data, dy.data, g.oh * g.ow, nil, dW1.data, nil, &scratch)
        XCTAssertEqual(dW1.array, dW0.array, "dW without dx or db, \(label)")

        // The same planes as channel 1 of an NCHW batch [n, 3, ·, ·] (planes 3·h·w apart): the same
        // bits, and channels 0 and 2 untouched.
        let (hw, ohw) = (h * w, g.oh * g.ow)
        let x3 = Self.channel1(of: x, hw), dy3 = Self.channel1(of: dy, ohw)
        let y3 = Tensor(shape: [n, 3, g.oh, g.ow], repeating: 7), dx3 = Tensor(shape: [n, 3, h, w], repeating: 7)
        let dW3 = Tensor(shape: [9], repeating: 0.5)
        var db3: Float = 0.5
        dw_lanes_forward(&g, x3.data + hw, 3 * hw, weight.data, bias, y3.data + ohw, 3 * ohw, &scratch)
        dw_lanes_backward(&g, x3.data + hw, 3 * hw, weight.data, dy3.data + ohw, 3 * ohw, dx3.data + hw, dW3.data, &db3,
          &scratch)
        XCTAssertEqual(y3.array, Self.channel1(of: y, ohw).array, "y from an NCHW batch, \(label)")
        XCTAssertEqual(dx3.array, Self.channel1(of: dx, hw).array, "dx into an NCHW batch, \(label)")
        XCTAssertEqual(dW3.array, dW.array, "dW from an NCHW batch, \(label)")
        XCTAssertEqual(db3, db, "db from an NCHW batch, \(label)")
      }
    }
  }

  /// [n, 1, ·, ·] (planes of `plane` floats) → [n, 3, ·, ·] holding them as channel 1, 7 elsewhere.
  private static func channel1(of t: Tensor, _ plane: Int) -> Tensor {
    let n = t.shape[0], out = Tensor(shape: [n, 3] + t.shape[2...], repeating: 7)
    for k in 0..<n {
      for e in 0..<plane { out.data[(3 * k + 1) * plane + e] = t.data[k * plane + e] }
    }
    return out
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

    // Chosen with the AVX2 variant only, and there not for stride 2 on 16-wide planes (the
    // per-plane kernels' direct path is faster on data from memory).
    defer { DepthwiseConv2D.selectKernelVariant(nil) }
    var s1 = geometry(64, 8, 8, 1), s2 = geometry(64, 32, 32, 2), s2w16 = geometry(64, 16, 16, 2)
    var noPadding = geometry(64, 8, 8, 1)
    (noPadding.ph, noPadding.pw, noPadding.oh, noPadding.ow) = (0, 0, 6, 6)
    if DepthwiseConv2D.selectKernelVariant("avx2") {
      XCTAssertTrue(dw_lanes_preferred(&s1))
      XCTAssertTrue(dw_lanes_preferred(&s2))
      XCTAssertFalse(dw_lanes_preferred(&s2w16))
      XCTAssertFalse(dw_lanes_preferred(&noPadding), "a geometry it does not run")
    }
    XCTAssertTrue(DepthwiseConv2D.selectKernelVariant("portable"))
    XCTAssertFalse(dw_lanes_preferred(&s1), "the portable variant keeps the per-plane kernels")
  }
}
