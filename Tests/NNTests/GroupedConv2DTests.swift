// GroupedConv2DTests: Conv2D with groups and with rectangular kernels, strides and paddings,
// against the Double grouped convolution (Reference.groupedConv2d), forward and backward, on
// shapes that exercise every path (im2col with N = 1 and N > 1, pointwise with P > 1 and
// P == 1), groups that do not divide 16, depthwise with channel multiplier 2; finite
// differences; PyTorch's weight shape and init bound; 1 vs 2 threads.
import NN
import TensorCore
import TestSupport
import XCTest

/// One grouped/rectangular convolution configuration under test.
struct GroupedConvCase: CustomStringConvertible {
  var n, cin, cout, h, w: Int
  var kernel: (Int, Int)
  var stride: (Int, Int) = (1, 1)
  var padding: (Int, Int) = (0, 0)
  var groups = 1
  var bias = true
  var description: String {
    "N\(n) Cin\(cin) Cout\(cout) \(h)x\(w) k\(kernel) s\(stride) p\(padding) g\(groups)\(bias ? "" : " nobias")"
  }
}

final class GroupedConv2DTests: XCTestCase {
  static let cases: [GroupedConvCase] = [
    GroupedConvCase(n: 2, cin: 6, cout: 9, h: 5, w: 7, kernel: (3, 3), padding: (1, 1), groups: 3),
    GroupedConvCase(n: 1, cin: 10, cout: 5, h: 6, w: 5, kernel: (3, 3), stride: (2, 2), padding: (1, 1), groups: 5),
    GroupedConvCase(n: 3, cin: 4, cout: 4, h: 2, w: 2, kernel: (3, 3), padding: (1, 1), groups: 2),  // 2×2 map
    GroupedConvCase(n: 2, cin: 3, cout: 6, h: 1, w: 1, kernel: (3, 3), padding: (1, 1), groups: 3),  // 1×1 map, m = 2
    GroupedConvCase(n: 2, cin: 5, cout: 10, h: 7, w: 5, kernel: (3, 3), stride: (2, 2), padding: (1, 1), groups: 5),
    GroupedConvCase(n: 2, cin: 6, cout: 4, h: 4, w: 5, kernel: (1, 1), groups: 2),  // grouped pointwise, P > 1
    // Grouped pointwise over a batch (batched GEMMs on copied planes), P = 21 and C/G not a power of 2.
    GroupedConvCase(n: 5, cin: 12, cout: 20, h: 3, w: 7, kernel: (1, 1), groups: 4, bias: false),
    GroupedConvCase(n: 3, cin: 6, cout: 9, h: 1, w: 1, kernel: (1, 1), groups: 3),  // grouped pointwise, P == 1
    GroupedConvCase(n: 1, cin: 4, cout: 6, h: 3, w: 3, kernel: (1, 1), groups: 2, bias: false),  // pointwise, N = 1
    GroupedConvCase(n: 2, cin: 3, cout: 4, h: 5, w: 7, kernel: (1, 3), padding: (0, 1)),  // rectangular, G = 1
    GroupedConvCase(n: 2, cin: 2, cout: 3, h: 7, w: 4, kernel: (3, 1), stride: (2, 1), padding: (1, 0)),
    GroupedConvCase(n: 1, cin: 6, cout: 3, h: 5, w: 6, kernel: (2, 3), stride: (1, 2), padding: (1, 0), groups: 3),
    GroupedConvCase(n: 2, cin: 14, cout: 7, h: 3, w: 5, kernel: (3, 3), stride: (2, 2), padding: (0, 1), groups: 7,
      bias: false),
  ]

  private func make(_ c: GroupedConvCase, seed: UInt64) -> (Conv2D, Tensor) {
    var rng = SeededGenerator(seed: seed)
    let conv = Conv2D(inChannels: c.cin, outChannels: c.cout, kernelSize: c.kernel, stride: c.stride,
      padding: c.padding, groups: c.groups, bias: c.bias, rng: &rng)
    if let b = conv.bias { b.value.fillUniform(-1, 1, using: &rng) }
    let x = Tensor.uniform([c.n, c.cin, c.h, c.w], using: &rng)
    return (conv, x)
  }

  private func reference(_ conv: Conv2D, _ x: Tensor, _ c: GroupedConvCase) -> DoubleTensor {
    Reference.groupedConv2d(DoubleTensor(x), weight: DoubleTensor(conv.weight.value),
      bias: conv.bias.map { DoubleTensor($0.value) }, stride: c.stride, padding: c.padding, groups: c.groups)
  }

  func testWeightShapeAndInitBoundArePyTorchs() {
    var rng = SeededGenerator(seed: 1)
    let conv = Conv2D(inChannels: 6, outChannels: 9, kernelSize: (1, 3), groups: 3, rng: &rng)
    XCTAssertEqual(conv.weight.shape, [9, 2, 1, 3])
    XCTAssertEqual(conv.bias?.shape, [9])
    XCTAssertEqual(conv.namedParameters().map(\.0), ["weight", "bias"])
    // kaiming-uniform(a = √5) gives U(−1/√fan_in, 1/√fan_in) with fan_in = Cin/G·KH·KW = 6.
    let bound = 1 / Float(6).squareRoot()
    let w = conv.weight.value.array, b = conv.bias!.value.array
    XCTAssertTrue(w.allSatisfy { abs($0) <= bound } && b.allSatisfy { abs($0) <= bound })
    XCTAssertGreaterThan(w.map(abs).max()!, 0.8 * bound, "the bound is fan_in = 6's, not Cin·KH·KW = 18's")
  }

  func testForwardAndBackwardMatchReference() throws {
    for (i, c) in Self.cases.enumerated() {
      let (conv, x) = make(c, seed: UInt64(100 + i))
      let y = try conv.forward(x)
      let ref = reference(conv, x, c)
      XCTAssertEqual(y.shape, ref.shape, "\(c)")
      assertClose(y, ref, rtol: 1e-4, atol: 1e-5, "y, \(c)")
      var rng = SeededGenerator(seed: UInt64(300 + i))
      let dy = Tensor.uniform(y.shape, using: &rng)
      conv.zeroGrad()
      let dx = try conv.backward(dy)
      let g = Reference.groupedConv2dBackward(DoubleTensor(x), weight: DoubleTensor(conv.weight.value),
        dy: DoubleTensor(dy), stride: c.stride, padding: c.padding, groups: c.groups)
      assertClose(dx, g.dx, rtol: 1e-4, atol: 1e-5, "dx, \(c)")
      assertClose(conv.weight.grad, g.dw, rtol: 1e-4, atol: 1e-5, "dW, \(c)")
      if let b = conv.bias { assertClose(b.grad, g.db, rtol: 1e-4, atol: 1e-5, "db, \(c)") }
      // With a fused ReLU: Sequential runs a conv before an in-place ReLU as one pass.
      let net = Sequential([conv, ReLU(inPlace: true)])
      assertClose(try net.forward(x), Reference.relu(ref), rtol: 1e-4, atol: 1e-5, "fused ReLU y, \(c)")
      conv.zeroGrad()
      let dxr = try net.backward(dy.clone())
      let gr = Reference.groupedConv2dBackward(DoubleTensor(x), weight: DoubleTensor(conv.weight.value),
        dy: Reference.reluBackward(ref, dy: DoubleTensor(dy)), stride: c.stride, padding: c.padding, groups: c.groups)
      assertClose(dxr, gr.dx, rtol: 1e-4, atol: 1e-5, "fused ReLU dx, \(c)")
      assertClose(conv.weight.grad, gr.dw, rtol: 1e-4, atol: 1e-5, "fused ReLU dW, \(c)")
    }
  }

  func testRectangularWithGroupsOneAgreesWithSquareReference() throws {
    // The Int initializer and the tuple one build the same layer.
    var r1 = SeededGenerator(seed: 5), r2 = SeededGenerator(seed: 5)
    let a = Conv2D(inChannels: 3, outChannels: 4, kernelSize: 3, stride: 2, padding: 1, rng: &r1)
    let b = Conv2D(inChannels: 3, outChannels: 4, kernelSize: (3, 3), stride: (2, 2), padding: (1, 1), rng: &r2)
    var rng = SeededGenerator(seed: 6)
    let x = Tensor.uniform([2, 3, 7, 6], using: &rng)
    assertBitwiseEqual(try a.forward(x).array, try b.forward(x).array)
    assertClose(try a.forward(x), Reference.conv2d(DoubleTensor(x), weight: DoubleTensor(a.weight.value),
      bias: DoubleTensor(a.bias!.value), stride: 2, padding: 1), rtol: 1e-4, atol: 1e-5)
  }

  func testGradientsMatchFiniteDifferences() {
    let small: [GroupedConvCase] = [
      GroupedConvCase(n: 2, cin: 6, cout: 3, h: 4, w: 3, kernel: (3, 3), padding: (1, 1), groups: 3),
      GroupedConvCase(n: 1, cin: 3, cout: 6, h: 5, w: 5, kernel: (3, 3), stride: (2, 2), padding: (1, 1), groups: 3),
      GroupedConvCase(n: 2, cin: 2, cout: 2, h: 1, w: 1, kernel: (3, 3), padding: (1, 1), groups: 2),
      GroupedConvCase(n: 2, cin: 4, cout: 6, h: 2, w: 3, kernel: (1, 1), groups: 2),
      GroupedConvCase(n: 2, cin: 2, cout: 3, h: 3, w: 5, kernel: (1, 3), stride: (1, 2), padding: (0, 1)),
      GroupedConvCase(n: 1, cin: 5, cout: 5, h: 5, w: 4, kernel: (3, 2), stride: (2, 1), padding: (1, 0), groups: 5),
    ]
    for (i, c) in small.enumerated() {
      let (conv, x) = make(c, seed: UInt64(700 + i))
      GradientChecker().assertGradients(conv, input: x, "\(c)")
    }
  }

  func testResultsDoNotDependOnThreadCount() throws {
    let saved = Threads.count
    defer { Threads.count = saved }
    let shapes: [GroupedConvCase] = [
      GroupedConvCase(n: 4, cin: 6, cout: 6, h: 6, w: 6, kernel: (3, 3), padding: (1, 1), groups: 3),
      GroupedConvCase(n: 3, cin: 4, cout: 8, h: 7, w: 5, kernel: (1, 3), stride: (2, 2), padding: (0, 1), groups: 2),
      GroupedConvCase(n: 4, cin: 6, cout: 4, h: 4, w: 4, kernel: (1, 1), groups: 2),
    ]
    for (i, c) in shapes.enumerated() {
      var results: [[[Float]]] = []
      for threads in [1, 2] {
        Threads.count = threads
        let (conv, x) = make(c, seed: UInt64(900 + i))
        var rng = SeededGenerator(seed: UInt64(950 + i))
        let y = try conv.forward(x).array
        let dy = Tensor.uniform(try conv.outputShape(for: x.shape), using: &rng)
        conv.zeroGrad()
        let dx = try conv.backward(dy).array
        results.append([y, dx, conv.weight.grad.array, conv.bias!.grad.array])
      }
      for (j, name) in ["y", "dx", "dW", "db"].enumerated() {
        assertBitwiseEqual(results[0][j], results[1][j], "\(name) with 1 vs 2 threads, \(c)")
      }
    }
  }
}
