// MetaAconChannelsMajorTests: Meta-ACON-C on a batch stored channels-major ([1, C, N·H, W], each
// channel's N planes one after the other, as a channels-major Sequential holds it) gives the NCHW
// order's bits for y, dx and every parameter gradient and running statistic, on odd shapes (one
// channel, 1×1 maps, sizes that are not multiples of 8); a ShuffleNetV2 branch with Meta-ACON runs
// channels-major with the NCHW order's results up to the order of the sums, and passes the
// gradient check; a wrong shape is an error that names the layer.
import ACON
import NN
import TensorCore
import TestSupport
import XCTest

final class MetaAconChannelsMajorTests: XCTestCase {
  /// [N, C, H, W] → [1, C, N·H, W] (or back with `toChannelsMajor: false`), by the index map.
  private func reordered(_ t: Tensor, samples n: Int, toChannelsMajor: Bool) -> Tensor {
    let c = t.shape[1], plane = t.count / (n * c)
    let shape = toChannelsMajor ? [1, c, n * t.shape[2], t.shape[3]] : [n, c, t.shape[2] / n, t.shape[3]]
    var out = [Float](repeating: .nan, count: t.count)
    for s in 0..<n {
      for ch in 0..<c {
        for i in 0..<plane {
          let nchw = (s * c + ch) * plane + i, major = (ch * n + s) * plane + i
          if toChannelsMajor { out[major] = t.data[nchw] } else { out[nchw] = t.data[major] }
        }
      }
    }
    return Tensor(shape: shape, values: out)
  }

  private func bits(_ t: Tensor) -> [UInt32] { t.array.map(\.bitPattern) }

  func testChannelsMajorForwardAndBackwardGiveTheNCHWBits() throws {
    for (shape, bn) in [([3, 5, 7, 3], true), ([2, 1, 1, 1], true), ([4, 3, 1, 1], false), ([2, 20, 4, 4], true),
                        ([5, 17, 3, 9], true)] {
      let label = "\(shape)\(bn ? "" : ", without BatchNorm")"
      var rng = SeededGenerator(seed: 31)
      let nchw = MetaAconC(channels: shape[1], r: 4, useBatchNorm: bn, rng: &rng)
      rng = SeededGenerator(seed: 31)
      let major = MetaAconC(channels: shape[1], r: 4, useBatchNorm: bn, rng: &rng)
      XCTAssertTrue(major.runsChannelsMajorGivenBatch)
      let x = Tensor.normal(shape, using: &rng), dy = Tensor.normal(shape, using: &rng)
      let n = shape[0]
      let y1 = try nchw.forward(x).copy(), dx1 = try nchw.backward(dy).copy()
      let y2 = try major.forward(reordered(x, samples: n, toChannelsMajor: true), channelsMajorSamples: n).copy()
      XCTAssertEqual(y2.shape, [1, shape[1], n * shape[2], shape[3]], label)
      let dx2 = try major.backward(reordered(dy, samples: n, toChannelsMajor: true)).copy()
      XCTAssertEqual(bits(reordered(y2, samples: n, toChannelsMajor: false)), bits(y1), "y, \(label)")
      XCTAssertEqual(bits(reordered(dx2, samples: n, toChannelsMajor: false)), bits(dx1), "dx, \(label)")
      XCTAssertEqual(major.lastBeta.map(bits), nchw.lastBeta.map(bits), "β, \(label)")
      for (a, b) in zip(nchw.namedParameters(), major.namedParameters()) {
        XCTAssertEqual(bits(b.1.grad), bits(a.1.grad), "\(a.0) gradient, \(label)")
      }
      for (a, b) in zip(nchw.namedBuffers(), major.namedBuffers()) {
        if case let (.float(t1), .float(t2)) = (a.1, b.1) { XCTAssertEqual(bits(t2), bits(t1), "\(a.0), \(label)") }
      }
      // An NCHW forward afterwards is NCHW again (backward follows the last forward's layout).
      let y3 = try major.forward(x).copy()
      XCTAssertEqual(y3.shape, shape, label)
      XCTAssertEqual(try major.backward(dy).shape, shape, label)
    }
  }

  /// A ShuffleNetV2 main branch with Meta-ACON: 1×1 conv, BN, Meta-ACON, depthwise 3×3, BN, 1×1
  /// conv, BN, Meta-ACON; the same draws for the same seed.
  private func branch(_ c: Int, _ out: Int, stride: Int, seed: UInt64) -> Sequential {
    var rng = SeededGenerator(seed: seed)
    return Sequential([
      ("0", Conv2D(inChannels: c, outChannels: c, kernelSize: 1, bias: false, rng: &rng)), ("1", BatchNorm2D(channels: c)),
      ("2", MetaAconC(channels: c, r: 2, rng: &rng)),
      ("3", DepthwiseConv2D(channels: c, kernelSize: 3, stride: stride, padding: 1, bias: false, rng: &rng)),
      ("4", BatchNorm2D(channels: c)),
      ("5", Conv2D(inChannels: c, outChannels: out, kernelSize: 1, bias: false, rng: &rng)), ("6", BatchNorm2D(channels: out)),
      ("7", MetaAconC(channels: out, r: 2, rng: &rng)),
    ])
  }

  private func assertClose(_ a: [Float], _ b: [Float], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, what, file: file, line: line)
    let worst = zip(a, b).map { abs($0 - $1) / Swift.max(1, abs($1)) }.max() ?? 0
    XCTAssertLessThan(worst, 2e-5, what, file: file, line: line)
  }

  func testABranchWithMetaAconRunsChannelsMajorWithTheNCHWResults() throws {
    defer { Sequential.allowsChannelsMajor = true }
    for (shape, out, stride) in [([3, 4, 7, 5], 6, 1), ([2, 1, 1, 1], 1, 1), ([4, 6, 9, 9], 5, 2), ([2, 3, 8, 16], 3, 1)] {
      let label = "\(shape) → \(out), stride \(stride)"
      let nchw = branch(shape[1], out, stride: stride, seed: 32), major = branch(shape[1], out, stride: stride, seed: 32)
      var rng = SeededGenerator(seed: 33)
      let x = Tensor.uniform(shape, -2, 2, using: &rng)
      let ys = try major.outputShape(for: shape)
      let dy = Tensor.normal(ys, using: &rng)
      Sequential.allowsChannelsMajor = false
      let y1 = try nchw.forward(x).copy(), dx1 = try nchw.backward(dy).copy()
      XCTAssertFalse(nchw.ranChannelsMajor, label)
      Sequential.allowsChannelsMajor = true
      let y2 = try major.forward(x).copy(), dx2 = try major.backward(dy).copy()
      XCTAssertTrue(major.ranChannelsMajor, label)
      XCTAssertEqual(y2.shape, ys, label)
      assertClose(y2.array, y1.array, "y, \(label)")
      assertClose(dx2.array, dx1.array, "dx, \(label)")
      // (The β networks' fc biases feed a batch norm: their gradient is zero, its float value noise.)
      for (a, b) in zip(nchw.namedParameters(), major.namedParameters()) where !a.0.hasSuffix(".bias") {
        assertClose(b.1.grad.array, a.1.grad.array, "\(a.0) gradient, \(label)")
      }
    }
  }

  func testAChannelsMajorBranchWithMetaAconPassesTheGradientCheck() {
    for stride in [1, 2] {
      let net = branch(3, 2, stride: stride, seed: 34)
      var rng = SeededGenerator(seed: 35)
      GradientChecker().assertGradients(
        net, input: .uniform([3, 3, 5, 6], -2, 2, using: &rng), "channels-major Meta-ACON branch, stride \(stride)")
      XCTAssertTrue(net.ranChannelsMajor)
    }
  }

  func testAWrongChannelsMajorShapeIsAnErrorThatNamesTheLayer() {
    var rng = SeededGenerator(seed: 36)
    let meta = MetaAconC(channels: 3, rng: &rng)
    for (shape, n) in [([1, 3, 7, 2], 2), ([2, 3, 4, 2], 2), ([1, 4, 4, 2], 2), ([1, 3, 4, 2], 0)] {
      XCTAssertThrowsError(try meta.forward(Tensor(zeros: shape), channelsMajorSamples: n), "\(shape), \(n) samples") { error in
        XCTAssertTrue("\(error)".contains("MetaAconC"), "\(error)")
      }
    }
  }
}
