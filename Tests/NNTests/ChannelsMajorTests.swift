// ChannelsMajorTests: a Sequential of 1×1 convolutions, batch norms, depthwise convolutions and
// activations (ShuffleNetV2's branches) runs a batch channels-major inside, with the results of
// the NCHW order up to the order of the sums: outputs, input and parameter gradients, running
// statistics, in training, evaluation and inference mode, on odd shapes (one channel, 1×1 maps,
// stride 2, sizes that are not multiples of 8); it passes the gradient check; the depthwise
// convolution gives the same y and dx bits in either order; the reorders follow the index map; a wrong shape
// is reported in NCHW terms.
@testable import NN
import TensorCore
import TestSupport
import XCTest

final class ChannelsMajorTests: XCTestCase {
  /// A ShuffleNetV2 branch: 1×1 conv, BN, ReLU (in place), depthwise 3×3 (padding 1), BN, 1×1
  /// conv, BN, ReLU; the same draws for the same seed.
  private func branch(_ c: Int, _ out: Int, stride: Int, bias: Bool, seed: UInt64) -> Sequential {
    var rng = SeededGenerator(seed: seed)
    let bns = [BatchNorm2D(channels: c), BatchNorm2D(channels: c), BatchNorm2D(channels: out)]
    for bn in bns {
      bn.weight.value.fillNormal(using: &rng)
      bn.bias.value.fillNormal(using: &rng)
    }
    return Sequential([
      ("0", Conv2D(inChannels: c, outChannels: c, kernelSize: 1, bias: bias, rng: &rng)), ("1", bns[0]),
      ("2", ReLU(inPlace: true)),
      ("3", DepthwiseConv2D(channels: c, kernelSize: 3, stride: stride, padding: 1, bias: bias, rng: &rng)), ("4", bns[1]),
      ("5", Conv2D(inChannels: c, outChannels: out, kernelSize: 1, bias: bias, rng: &rng)), ("6", bns[2]),
      ("7", ReLU(inPlace: true)),
    ])
  }

  private func assertClose(_ a: [Float], _ b: [Float], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, what, file: file, line: line)
    let worst = zip(a, b).map { abs($0 - $1) / Swift.max(1, abs($1)) }.max() ?? 0
    XCTAssertLessThan(worst, 2e-5, what, file: file, line: line)
  }

  /// The same branch run in NCHW order and channels-major: one step forward and backward in
  /// training (then evaluation with the running statistics it left), compared value by value.
  func testABranchRunsChannelsMajorWithTheResultsOfTheNCHWOrder() throws {
    let cases: [(shape: [Int], out: Int, stride: Int, bias: Bool)] = [
      ([3, 4, 7, 5], 6, 1, false), ([2, 1, 1, 1], 1, 1, true), ([4, 6, 9, 9], 5, 2, false), ([2, 3, 8, 16], 3, 1, true),
      ([5, 2, 4, 4], 2, 2, true),
    ]
    for (shape, out, stride, bias) in cases {
      let label = "\(shape) → \(out), stride \(stride)\(bias ? ", bias" : "")"
      let nchw = branch(shape[1], out, stride: stride, bias: bias, seed: 11)
      let major = branch(shape[1], out, stride: stride, bias: bias, seed: 11)
      var rng = SeededGenerator(seed: 12)
      let x = Tensor.uniform(shape, using: &rng)
      let ys = try major.outputShape(for: shape)
      let dy = Tensor(shape: ys, values: (0..<ys.reduce(1, *)).map { _ in rng.nextNormal() })

      Sequential.allowsChannelsMajor = false
      let y1 = try nchw.forward(x).copy()
      let dx1 = try nchw.backward(dy).copy()
      XCTAssertFalse(nchw.ranChannelsMajor, label)
      Sequential.allowsChannelsMajor = true
      let y2 = try major.forward(x).copy()
      let dx2 = try major.backward(dy).copy()
      XCTAssertTrue(major.ranChannelsMajor, label)
      XCTAssertEqual(y2.shape, ys, label)
      XCTAssertEqual(dx2.shape, shape, label)

      assertClose(y2.array, y1.array, "y, \(label)")
      assertClose(dx2.array, dx1.array, "dx, \(label)")
      for (p1, p2) in zip(nchw.namedParameters(), major.namedParameters()) {
        assertClose(p2.1.grad.array, p1.1.grad.array, "\(p1.0) gradient, \(label)")
      }
      for (b1, b2) in zip(nchw.namedBuffers(), major.namedBuffers()) {
        switch (b1.1, b2.1) {
        case let (.float(t1), .float(t2)): assertClose(t2.array, t1.array, "\(b1.0), \(label)")
        case let (.int64(n1), .int64(n2)): XCTAssertEqual(n2.value, n1.value, "\(b1.0), \(label)")
        default: XCTFail("\(b1.0): buffers of different kinds, \(label)")
        }
      }

      // Evaluation with those running statistics, and inference mode (nothing kept).
      nchw.eval()
      major.eval()
      Sequential.allowsChannelsMajor = false
      let e1 = try nchw.forward(x).copy()
      Sequential.allowsChannelsMajor = true
      let e2 = try major.forward(x).copy()
      let e3 = try major.withInferenceMode { try major.forward(x).copy() }
      XCTAssertTrue(major.ranChannelsMajor, label)
      assertClose(e2.array, e1.array, "evaluation y, \(label)")
      XCTAssertEqual(e3.array, e2.array, "inference mode, \(label)")
    }
  }

  /// One sample, a container with a layer that cannot run channels-major (a 3×3 convolution), or
  /// with one 1×1 convolution only, runs in NCHW order.
  func testOneSampleAndOtherLayersStayInNCHWOrder() throws {
    var rng = SeededGenerator(seed: 13)
    let b = branch(3, 4, stride: 1, bias: false, seed: 14)
    _ = try b.forward(.uniform([1, 3, 5, 5], using: &rng))
    XCTAssertFalse(b.ranChannelsMajor, "one sample")
    _ = try b.forward(.uniform([2, 3, 5, 5], using: &rng))
    XCTAssertTrue(b.ranChannelsMajor, "two samples")
    let mixed = Sequential([Conv2D(inChannels: 3, outChannels: 3, kernelSize: 1, rng: &rng), BatchNorm2D(channels: 3),
      Conv2D(inChannels: 3, outChannels: 2, kernelSize: 3, padding: 1, rng: &rng)])
    _ = try mixed.forward(.uniform([2, 3, 5, 5], using: &rng))
    XCTAssertFalse(mixed.ranChannelsMajor, "a 3×3 convolution")
    let noConv = Sequential([BatchNorm2D(channels: 3), ReLU()])
    _ = try noConv.forward(.uniform([2, 3, 5, 5], using: &rng))
    XCTAssertFalse(noConv.ranChannelsMajor, "no 1×1 convolution to gain from")
    let one = Sequential([DepthwiseConv2D(channels: 3, kernelSize: 3, padding: 1, rng: &rng), BatchNorm2D(channels: 3),
      Conv2D(inChannels: 3, outChannels: 2, kernelSize: 1, rng: &rng), BatchNorm2D(channels: 2), ReLU()])
    _ = try one.forward(.uniform([2, 3, 5, 5], using: &rng))
    XCTAssertFalse(one.ranChannelsMajor, "one 1×1 convolution (ShuffleNetV2's branch_proj)")
  }

  /// (Without biases: before a batch norm their gradient is zero, and its float value noise.)
  func testAChannelsMajorBranchPassesTheGradientCheck() {
    for stride in [1, 2] {
      let net = branch(3, 2, stride: stride, bias: false, seed: 15)
      var rng = SeededGenerator(seed: 16)
      GradientChecker(skipsNonSmoothPoints: true).assertGradients(
        net, input: .uniform([3, 3, 5, 6], using: &rng), "channels-major branch, stride \(stride)")
      XCTAssertTrue(net.ranChannelsMajor)
    }
  }

  /// The depthwise convolution's channels-major pass (the lanes kernels where they are chosen,
  /// else the per-plane ones) gives the NCHW pass's bits, reordered, for y and dx (each element the
  /// same taps in the same order), and its dW and db to rounding (the lanes kernels sum them lane by
  /// lane): 8 samples or not, 4×4 maps, stride 2 on 16-wide planes (kept per plane) and 32-wide.
  func testDepthwiseConvolutionChannelsMajorGivesTheNCHWValues() throws {
    for (shape, stride) in [([3, 5, 9, 7], 1), ([2, 4, 16, 16], 2), ([4, 3, 1, 1], 1), ([2, 2, 8, 8], 2),
                            ([9, 3, 4, 4], 1), ([8, 2, 32, 32], 2)] {
      let label = "\(shape), stride \(stride)"
      var rng = SeededGenerator(seed: 17)
      let a = DepthwiseConv2D(channels: shape[1], kernelSize: 3, stride: stride, padding: 1, rng: &rng)
      rng = SeededGenerator(seed: 17)
      let b = DepthwiseConv2D(channels: shape[1], kernelSize: 3, stride: stride, padding: 1, rng: &rng)
      let x = Tensor.uniform(shape, using: &rng)
      let ys = try a.outputShape(for: shape)
      let dy = Tensor(shape: ys, values: (0..<ys.reduce(1, *)).map { _ in rng.nextNormal() })
      // Through a container of the depthwise layer between two 1×1 convolutions of identity weights.
      let netA = Sequential([("in", identity(shape[1])), ("dw", a), ("out", identity(shape[1]))])
      let netB = Sequential([("in", identity(shape[1])), ("dw", b), ("out", identity(shape[1]))])
      Sequential.allowsChannelsMajor = false
      let y1 = try netA.forward(x).copy()
      let dx1 = try netA.backward(dy).copy()
      Sequential.allowsChannelsMajor = true
      let y2 = try netB.forward(x).copy()
      let dx2 = try netB.backward(dy).copy()
      XCTAssertTrue(netB.ranChannelsMajor, label)
      XCTAssertEqual(y2.array, y1.array, "y, \(label)")
      XCTAssertEqual(dx2.array, dx1.array, "dx, \(label)")
      assertClose(b.weight.grad.array, a.weight.grad.array, "dW, \(label)")
      assertClose(b.bias?.grad.array ?? [], a.bias?.grad.array ?? [], "db, \(label)")
    }
  }

  /// A 1×1 convolution with identity weights and no bias: y = x exactly (one product by 1 and
  /// sums of zeros).
  private func identity(_ c: Int) -> Conv2D {
    var rng = SeededGenerator(seed: 1)
    let conv = Conv2D(inChannels: c, outChannels: c, kernelSize: 1, bias: false, rng: &rng)
    conv.weight.value.zero()
    for i in 0..<c { conv.weight.value.data[i * c + i] = 1 }
    return conv
  }

  /// In a Graph, a branch reorders its input in place when nothing else reads that value (a
  /// split's half that only the branch reads), and copies it when the value is read later (by a
  /// concatenation) or by another node's backward (a depthwise convolution's): the same results as
  /// the NCHW order in each case.
  func testInAGraphABranchReordersItsInputInPlaceOnlyWhenNothingElseReadsIt() throws {
    // kind 0: split → branch → concat(pass, branch); 1: concat(x, branch(x)); 2: a depthwise
    // convolution reads x before the branch does.
    func network(_ kind: Int) -> (Graph, Sequential) {
      var rng = SeededGenerator(seed: 21)
      let g = Graph(), b = branch(3, 3, stride: 1, bias: false, seed: 22)
      let (pass, x) = g.split(g.input, .evenOdd)
      switch kind {
      case 0: g.output = g.concat(pass, g("branch", b, x))
      case 1: g.output = g.concat(x, g("branch", b, x))
      default:
        let d = g("dw", DepthwiseConv2D(channels: 3, kernelSize: 3, padding: 1, rng: &rng), x)
        g.output = g.concat(d, g("branch", b, x))
      }
      return (g, b)
    }
    for (kind, inPlace) in [(0, true), (1, false), (2, false)] {
      var rng = SeededGenerator(seed: 23)
      let x = Tensor.uniform([3, 6, 5, 7], using: &rng), x0 = x.copy()
      let (g1, _) = network(kind), (g2, b2) = network(kind)
      let ys = try g1.outputShape(for: x.shape)
      let dy = Tensor(shape: ys, values: (0..<ys.reduce(1, *)).map { _ in rng.nextNormal() })
      Sequential.allowsChannelsMajor = false
      let y1 = try g1.forward(x).copy()
      let dx1 = try g1.backward(dy).copy()
      Sequential.allowsChannelsMajor = true
      for step in 0..<2 {  // the second pass reuses the first one's buffers
        let y2 = try g2.forward(x).copy()
        XCTAssertTrue(b2.ranChannelsMajor)
        XCTAssertEqual(b2.backwardReadsInput, inPlace, "kind \(kind): the branch reads x's storage only when it reordered it in place")
        let dx2 = try g2.backward(dy).copy()
        assertClose(y2.array, y1.array, "y, kind \(kind), step \(step)")
        assertClose(dx2.array, dx1.array, "dx, kind \(kind), step \(step)")
      }
      XCTAssertEqual(x.array, x0.array, "kind \(kind): the caller's input is left alone")
    }
  }

  /// The reorders, copying and in place, both ways, against the index map element by element:
  /// NCHW (s, c, i) at (s·C + c)·P + i, channels-major at (c·N + s)·P + i. ShuffleNetV2's shapes
  /// at batch 64 split the in-place cycles over two threads (64 × 96: two long cycles; 64 × 128:
  /// hundreds of short ones).
  func testReordersMatchTheIndexMap() {
    let saved = Threads.count
    defer { Threads.count = saved }
    Threads.count = 2
    for (n, c, p) in [(3, 5, 7), (1, 4, 3), (4, 1, 2), (64, 24, 1), (2, 3, 16), (6, 6, 5), (64, 96, 16), (64, 128, 4),
                      (64, 48, 64)] {
      let count = n * c * p
      let nchw = (0..<count).map { Float($0) }
      var major = [Float](repeating: -1, count: count)
      for s in 0..<n {
        for ch in 0..<c {
          for i in 0..<p { major[(ch * n + s) * p + i] = nchw[(s * c + ch) * p + i] }
        }
      }
      var out = [Float](repeating: -1, count: count), back = [Float](repeating: -1, count: count)
      ChannelsMajor.reorder(nchw, into: &out, samples: n, channels: c, plane: p, toChannelsMajor: true)
      ChannelsMajor.reorder(out, into: &back, samples: n, channels: c, plane: p, toChannelsMajor: false)
      XCTAssertEqual(out, major, "copy to channels-major, [\(n), \(c), \(p)]")
      XCTAssertEqual(back, nchw, "copy back, [\(n), \(c), \(p)]")
      var data = nchw, scratch = [Float](repeating: 0, count: 2 * p)
      let to = PlaneCycles(samples: n, channels: c, toChannelsMajor: true)
      let from = PlaneCycles(samples: n, channels: c, toChannelsMajor: false)
      // Every plane that moves is in one cycle, once.
      XCTAssertEqual(Set(to.planes).count, to.planes.count, "[\(n), \(c)]")
      XCTAssertEqual(to.planes.count, from.planes.count, "[\(n), \(c)]")
      ChannelsMajor.reorderInPlace(&data, plane: p, cycles: to, scratch: &scratch)
      XCTAssertEqual(data, major, "in place to channels-major, [\(n), \(c), \(p)]")
      ChannelsMajor.reorderInPlace(&data, plane: p, cycles: from, scratch: &scratch)
      XCTAssertEqual(data, nchw, "in place back, [\(n), \(c), \(p)]")
    }
  }

  func testAWrongShapeIsReportedInNCHWTerms() {
    let b = branch(3, 4, stride: 1, bias: false, seed: 18)
    var rng = SeededGenerator(seed: 19)
    XCTAssertThrowsError(try b.forward(.uniform([2, 5, 4, 4], using: &rng))) { error in
      let text = "\(error)"
      XCTAssertTrue(text.contains("0 (Conv2D)") && text.contains("[2, 5, 4, 4]"), text)
    }
  }
}
