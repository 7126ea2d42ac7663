// LayerTests: every layer's forward (and backward) against the naive Double references on
// random and odd shapes (C = 1, 1×1 images, batch 1, stride 2, padding 0/1, 5×7 images, 3 and
// 13 channels): Linear, ReLU, Sigmoid, MaxPool2D, AvgPool2D, GlobalAvgPool2D, Flatten, Dropout
// and Sequential. Conv2D and BatchNorm2D have their own files.
import NN
import TensorCore
import TestSupport
import XCTest

final class LayerTests: XCTestCase {
  // MARK: - Linear

  func testLinearForwardAndBackwardMatchReference() throws {
    var rng = SeededGenerator(seed: 1)
    for (n, fin, fout, bias) in [(1, 5, 3, true), (4, 13, 7, true), (3, 1, 1, true), (2, 9, 4, false), (7, 1024, 3, true)] {
      let lin = Linear(inFeatures: fin, outFeatures: fout, bias: bias, rng: &rng)
      let x = Tensor.uniform([n, fin], using: &rng)
      let ref = Reference.linear(DoubleTensor(x), weight: DoubleTensor(lin.weight.value),
        bias: lin.bias.map { DoubleTensor($0.value) })
      let label = "Linear n\(n) \(fin)→\(fout) bias \(bias)"
      assertClose(try lin.forward(x), ref, rtol: 1e-5, atol: 1e-5, label)
      let dy = Tensor.uniform([n, fout], using: &rng)
      lin.zeroGrad()
      let dx = try lin.backward(dy)
      let g = Reference.linearBackward(DoubleTensor(x), weight: DoubleTensor(lin.weight.value), dy: DoubleTensor(dy))
      assertClose(dx, g.dx, rtol: 1e-5, atol: 1e-5, "dx, \(label)")
      assertClose(lin.weight.grad, g.dw, rtol: 1e-5, atol: 1e-5, "dW, \(label)")
      if let b = lin.bias { assertClose(b.grad, g.db, rtol: 1e-5, atol: 1e-5, "db, \(label)") }
      // Accumulation: a second backward doubles the parameter gradients.
      _ = try lin.backward(dy)
      assertClose(lin.weight.grad.array, g.dw.values.map { 2 * $0 }, rtol: 1e-5, atol: 1e-5, "dW twice, \(label)")
    }
  }

  func testLinearRejectsWrongShapes() {
    var rng = SeededGenerator(seed: 2)
    let lin = Linear(inFeatures: 4, outFeatures: 2, rng: &rng)
    XCTAssertThrowsError(try lin.forward(Tensor(zeros: [3, 5]))) { XCTAssertTrue("\($0)".contains("Linear"), "\($0)") }
    XCTAssertThrowsError(try lin.forward(Tensor(zeros: [3, 2, 2])))
    XCTAssertThrowsError(try lin.backward(Tensor(zeros: [3, 2])), "backward before forward")
  }

  func testLinearPropagatesInputGradientFalseStillComputesParameterGradients() throws {
    var rng = SeededGenerator(seed: 3)
    let lin = Linear(inFeatures: 6, outFeatures: 4, rng: &rng)
    lin.propagatesInputGradient = false
    let x = Tensor.uniform([3, 6], using: &rng), dy = Tensor.uniform([3, 4], using: &rng)
    _ = try lin.forward(x)
    let dx = try lin.backward(dy)
    XCTAssertEqual(dx.array, [Float](repeating: 0, count: 18), "dx is never computed")
    let g = Reference.linearBackward(DoubleTensor(x), weight: DoubleTensor(lin.weight.value), dy: DoubleTensor(dy))
    assertClose(lin.weight.grad, g.dw, rtol: 1e-5, atol: 1e-5)
  }

  // MARK: - Activations

  func testReLUForwardAndBackward() throws {
    var rng = SeededGenerator(seed: 4)
    for shape in [[2, 3, 5, 7], [1, 1, 1, 1], [4, 13], [3]] {
      let relu = ReLU()
      let x = Tensor.uniform(shape, using: &rng)
      x[0] = 0  // the kink: max(0, 0) = 0, gradient 0
      let y = try relu.forward(x)
      assertClose(y, Reference.relu(DoubleTensor(x)), rtol: 0, atol: 0, "\(shape)")
      let dy = Tensor.uniform(shape, using: &rng)
      assertClose(try relu.backward(dy), Reference.reluBackward(DoubleTensor(x), dy: DoubleTensor(dy)), rtol: 0, atol: 0)
    }
  }

  func testReLUPropagatesNaN() throws {
    let y = try ReLU().forward(Tensor(shape: [3], values: [.nan, -1, 2]))
    XCTAssertTrue(y[0].isNaN)
    XCTAssertEqual(y[1], 0)
    XCTAssertEqual(y[2], 2)
  }

  func testSigmoidForwardAndBackward() throws {
    var rng = SeededGenerator(seed: 5)
    for shape in [[2, 3, 5, 7], [1, 1, 1, 1], [4, 13]] {
      let sig = Sigmoid()
      let x = Tensor.uniform(shape, -6, 6, using: &rng)
      assertClose(try sig.forward(x), Reference.sigmoid(DoubleTensor(x)), rtol: 1e-6, atol: 1e-7, "\(shape)")
      let dy = Tensor.uniform(shape, using: &rng)
      assertClose(try sig.backward(dy), Reference.sigmoidBackward(DoubleTensor(x), dy: DoubleTensor(dy)),
        rtol: 1e-5, atol: 1e-7, "\(shape)")
    }
  }

  func testSigmoidIsStableForLargeInputs() throws {
    let x = Tensor(shape: [6], values: [-1e4, -100, -20, 20, 100, 1e4])
    let y = try Sigmoid().forward(x)
    XCTAssertTrue(y.array.allSatisfy { $0.isFinite && $0 >= 0 && $0 <= 1 })
    XCTAssertEqual(y[0], 0)
    XCTAssertEqual(y[5], 1)
    XCTAssertEqual(Double(y[2]), Reference.sigmoid(-20), accuracy: 1e-12)
    XCTAssertEqual(stableSigmoid(0), 0.5)
  }

  // MARK: - Pooling

  /// (k, stride, padding) pool configurations, including floor-mode leftovers on 5×7 images.
  static let poolCases: [(Int, Int?, Int)] = [(2, nil, 0), (3, 2, 1), (3, 1, 1), (1, 1, 0), (2, 1, 1), (3, 3, 0), (3, 2, 0)]
  static let poolShapes: [[Int]] = [[2, 3, 5, 7], [1, 1, 6, 6], [2, 13, 3, 3], [1, 2, 1, 1]]

  func testMaxPoolMatchesReference() throws {
    var rng = SeededGenerator(seed: 6)
    for (k, s, p) in Self.poolCases {
      for shape in Self.poolShapes where shape[2] + 2 * p >= k && shape[3] + 2 * p >= k {
        let pool = MaxPool2D(kernelSize: k, stride: s, padding: p)
        let x = Tensor.uniform(shape, using: &rng)
        let label = "MaxPool k\(k) s\(s ?? k) p\(p) \(shape)"
        let stride = s ?? k
        assertClose(try pool.forward(x), Reference.maxPool2d(DoubleTensor(x), k: k, stride: stride, padding: p),
          rtol: 0, atol: 0, label)
        let dy = Tensor.uniform(try pool.outputShape(for: shape), using: &rng)
        assertClose(try pool.backward(dy),
          Reference.maxPool2dBackward(DoubleTensor(x), dy: DoubleTensor(dy), k: k, stride: stride, padding: p),
          rtol: 1e-6, atol: 1e-7, label)
      }
    }
  }

  func testMaxPoolRoutesTiesToTheFirstMaximum() throws {
    let pool = MaxPool2D(kernelSize: 2)
    let x = Tensor(shape: [1, 1, 2, 2], values: [1, 3, 3, 2])
    XCTAssertEqual(try pool.forward(x).array, [3])
    XCTAssertEqual(try pool.backward(Tensor(shape: [1, 1, 1, 1], values: [5])).array, [0, 5, 0, 0])
    // Negative inputs with padding: padding is −∞, never the maximum.
    let pad = MaxPool2D(kernelSize: 3, stride: 1, padding: 1)
    let neg = Tensor(shape: [1, 1, 1, 1], values: [-4])
    XCTAssertEqual(try pad.forward(neg).array, [-4])
  }

  /// PyTorch's rule with NaN and infinities: any NaN is taken (the last NaN of the window wins,
  /// and a NaN is never replaced by a number), −∞ everywhere routes to the first in-image
  /// element (padding is never a candidate).
  func testMaxPoolNaNAndInfinities() throws {
    let pool = MaxPool2D(kernelSize: 3, stride: 2, padding: 1)
    // One 3×3 window at the centre of a 3×3 image (p = 1: output 2×2; the window of output
    // (1, 1) covers rows 1–2, columns 1–2).
    let nan = Float.nan, inf = Float.infinity
    let x = Tensor(shape: [1, 1, 3, 3], values: [
      1, nan, 2,
      nan, 5, 9,
      3, 4, 8,
    ])
    let y = try pool.forward(x).array
    // (0, 0): rows 0–1, columns 0–1: 1, NaN, NaN, 5: the last NaN (offset 3).
    // (0, 1): rows 0–1, columns 1–2: NaN, 2, 5, 9: the NaN (offset 1) stays.
    // (1, 0): rows 1–2, columns 0–1: NaN, 5, 3, 4: offset 3.  (1, 1): 5, 9, 4, 8: 9 (offset 5).
    XCTAssertTrue(y[0].isNaN && y[1].isNaN && y[2].isNaN)
    XCTAssertEqual(y[3], 9)
    let dx = try pool.backward(Tensor(shape: [1, 1, 2, 2], values: [1, 10, 100, 1000])).array
    XCTAssertEqual(dx, [0, 10, 0, 101, 0, 1000, 0, 0, 0])
    // All −∞: the first in-image element of each window, never padding.
    let ninf = Tensor(shape: [1, 1, 3, 3], repeating: -inf)
    XCTAssertEqual(try pool.forward(ninf).array, [-inf, -inf, -inf, -inf])
    XCTAssertEqual(try pool.backward(Tensor(shape: [1, 1, 2, 2], values: [1, 10, 100, 1000])).array,
      [1, 10, 0, 100, 1000, 0, 0, 0, 0])
    // +∞ wins over numbers; a later +∞ does not replace the first; equal values keep the first.
    let pinf = Tensor(shape: [1, 1, 3, 3], values: [inf, inf, 0, 0, 0, 0, 0, 0, 0])
    XCTAssertEqual(try pool.forward(pinf).array, [inf, inf, 0, 0])
    XCTAssertEqual(try pool.backward(Tensor(shape: [1, 1, 2, 2], values: [1, 10, 100, 1000])).array,
      [1, 10, 0, 100, 1000, 0, 0, 0, 0])
  }

  func testAvgPoolMatchesReferenceCountingPadding() throws {
    var rng = SeededGenerator(seed: 7)
    for (k, s, p) in Self.poolCases {
      for shape in Self.poolShapes where shape[2] + 2 * p >= k && shape[3] + 2 * p >= k {
        let pool = AvgPool2D(kernelSize: k, stride: s, padding: p)
        let x = Tensor.uniform(shape, using: &rng)
        let stride = s ?? k
        let label = "AvgPool k\(k) s\(stride) p\(p) \(shape)"
        assertClose(try pool.forward(x), Reference.avgPool2d(DoubleTensor(x), k: k, stride: stride, padding: p),
          rtol: 1e-6, atol: 1e-7, label)
        let dy = Tensor.uniform(try pool.outputShape(for: shape), using: &rng)
        assertClose(try pool.backward(dy),
          Reference.avgPool2dBackward(inputShape: shape, dy: DoubleTensor(dy), k: k, stride: stride, padding: p),
          rtol: 1e-6, atol: 1e-7, label)
      }
    }
    // count_include_pad: a corner window of a 3×3 pool with padding 1 over ones is 4/9.
    let y = try AvgPool2D(kernelSize: 3, stride: 1, padding: 1).forward(Tensor(shape: [1, 1, 2, 2], repeating: 1))
    assertClose(y.array, [4.0 / 9, 4.0 / 9, 4.0 / 9, 4.0 / 9], rtol: 1e-6, atol: 0)
  }

  func testPoolShapeErrors() {
    XCTAssertThrowsError(try MaxPool2D(kernelSize: 3).forward(Tensor(zeros: [1, 1, 2, 2]))) {
      XCTAssertTrue("\($0)".contains("MaxPool2D"), "\($0)")
    }
    XCTAssertThrowsError(try AvgPool2D(kernelSize: 2).forward(Tensor(zeros: [4, 4])))
    XCTAssertThrowsError(try GlobalAvgPool2D().forward(Tensor(zeros: [4, 4])))
  }

  func testGlobalAvgPoolMatchesReference() throws {
    var rng = SeededGenerator(seed: 8)
    for shape in [[2, 3, 5, 7], [1, 1, 1, 1], [3, 13, 2, 2], [1, 4, 7, 1]] {
      let gap = GlobalAvgPool2D()
      let x = Tensor.uniform(shape, using: &rng)
      assertClose(try gap.forward(x), Reference.globalAvgPool2d(DoubleTensor(x)), rtol: 1e-6, atol: 1e-7, "\(shape)")
      let dy = Tensor.uniform([shape[0], shape[1], 1, 1], using: &rng)
      assertClose(try gap.backward(dy), Reference.globalAvgPool2dBackward(inputShape: shape, dy: DoubleTensor(dy)),
        rtol: 1e-6, atol: 1e-7, "\(shape)")
    }
  }

  // MARK: - Flatten and Dropout

  func testFlattenIsAViewBothWays() throws {
    var rng = SeededGenerator(seed: 9)
    let flat = Flatten()
    let x = Tensor.uniform([2, 3, 5, 7], using: &rng)
    let y = try flat.forward(x)
    XCTAssertEqual(y.shape, [2, 105])
    XCTAssertEqual(y.array, x.array)
    XCTAssertTrue(y.storage === x.storage, "no copy")
    let dy = Tensor.uniform([2, 105], using: &rng)
    let dx = try flat.backward(dy)
    XCTAssertEqual(dx.shape, [2, 3, 5, 7])
    XCTAssertEqual(dx.array, dy.array)
    XCTAssertEqual(try flat.outputShape(for: [4, 1, 1, 1]), [4, 1])
    XCTAssertThrowsError(try flat.backward(Tensor(zeros: [2, 104])))
  }

  func testDropoutTrainingMaskAndScale() throws {
    let p: Float = 0.3
    let drop = Dropout(p: p, seed: 11)
    let x = Tensor(shape: [10_000], repeating: 2)
    let y = try drop.forward(x)
    let scaled = 2 / (1 - p)
    var dropped = 0
    for v in y.array {
      if v == 0 { dropped += 1 } else { XCTAssertEqual(v, scaled, accuracy: 1e-6) }
    }
    XCTAssertEqual(Double(dropped) / 10_000, Double(p), accuracy: 0.02)
    // Backward uses the same mask: dx = dy·mask.
    let dy = Tensor(shape: [10_000], repeating: 1)
    let dx = try drop.backward(dy)
    for i in 0..<10_000 { XCTAssertEqual(dx[i] == 0, y[i] == 0) }
    XCTAssertEqual(dx.array.first { $0 != 0 } ?? 0, 1 / (1 - p), accuracy: 1e-6)
  }

  func testDropoutIsReproducibleAndIdentityInEval() throws {
    var rng = SeededGenerator(seed: 12)
    let x = Tensor.uniform([3, 4, 5], using: &rng)
    let a = try Dropout(p: 0.5, seed: 3).forward(x).array
    let b = try Dropout(p: 0.5, seed: 3).forward(x).array
    XCTAssertEqual(a, b, "same seed, same mask")
    let drop = Dropout(p: 0.5, seed: 3)
    drop.eval()
    XCTAssertEqual(try drop.forward(x).array, x.array)
    XCTAssertEqual(try drop.backward(x).array, x.array)
    let none = Dropout(p: 0, seed: 1)
    XCTAssertEqual(try none.forward(x).array, x.array, "p = 0 is the identity in training too")
  }

  // MARK: - Sequential

  /// conv(3→4, k3, p1) → ReLU → maxpool 2 → conv(4→5, k1) → sigmoid → avgpool(3, s2, p1) →
  /// flatten → linear → the same chain computed with the references.
  func testSequentialMatchesChainedReferences() throws {
    var rng = SeededGenerator(seed: 13)
    let conv1 = Conv2D(inChannels: 3, outChannels: 4, kernelSize: 3, padding: 1, rng: &rng)
    let conv2 = Conv2D(inChannels: 4, outChannels: 5, kernelSize: 1, rng: &rng)
    let lin = Linear(inFeatures: 5 * 2 * 2, outFeatures: 3, rng: &rng)
    let net = Sequential([
      ("conv1", conv1), ("relu1", ReLU()), ("pool1", MaxPool2D(kernelSize: 2)), ("conv2", conv2),
      ("act2", Sigmoid()), ("pool2", AvgPool2D(kernelSize: 3, stride: 2, padding: 1)), ("flatten", Flatten()),
      ("fc", lin),
    ])
    let x = Tensor.uniform([2, 3, 6, 7], using: &rng)
    let y = try net.forward(x)
    var h = Reference.conv2d(DoubleTensor(x), weight: DoubleTensor(conv1.weight.value),
      bias: DoubleTensor(conv1.bias!.value), stride: 1, padding: 1)
    h = Reference.maxPool2d(Reference.relu(h), k: 2, stride: 2, padding: 0)
    h = Reference.conv2d(h, weight: DoubleTensor(conv2.weight.value), bias: DoubleTensor(conv2.bias!.value),
      stride: 1, padding: 0)
    h = Reference.avgPool2d(Reference.sigmoid(h), k: 3, stride: 2, padding: 1)
    h = h.reshaped([2, h.count / 2])
    h = Reference.linear(h, weight: DoubleTensor(lin.weight.value), bias: DoubleTensor(lin.bias!.value))
    assertClose(y, h, rtol: 1e-4, atol: 1e-5)
    XCTAssertEqual(try net.outputShape(for: x.shape), [2, 3])
    XCTAssertEqual(net.namedParameters().map(\.0),
      ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc.weight", "fc.bias"])
    XCTAssertTrue(net["conv2"] === conv2)
    XCTAssertNil(net["nope"])
  }

  func testSequentialNamesUnnamedLayersByIndexAndSetsModes() {
    var rng = SeededGenerator(seed: 14)
    let bn = BatchNorm2D(channels: 2)
    let net = Sequential([Conv2D(inChannels: 1, outChannels: 2, kernelSize: 1, rng: &rng), bn, ReLU()])
    XCTAssertEqual(net.namedParameters().map(\.0), ["0.weight", "0.bias", "1.weight", "1.bias"])
    XCTAssertEqual(net.namedBuffers().map(\.0), ["1.running_mean", "1.running_var", "1.num_batches_tracked"])
    net.eval()
    XCTAssertFalse(bn.isTraining)
    XCTAssertFalse(net.isTraining)
    net.train()
    XCTAssertTrue(bn.isTraining)
  }

  func testSequentialPropagatesInputGradientReachesTheFirstLayer() {
    var rng = SeededGenerator(seed: 15)
    let first = Conv2D(inChannels: 1, outChannels: 2, kernelSize: 1, rng: &rng), second = ReLU()
    let net = Sequential([first, second])
    net.propagatesInputGradient = false
    XCTAssertFalse(first.propagatesInputGradient)
    XCTAssertTrue(second.propagatesInputGradient, "inner layers still pass gradients on")
  }
}
