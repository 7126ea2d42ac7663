// Conv2DTests: Conv2D against the direct Double convolution, forward and backward, on odd
// shapes that exercise every path: the im2col path with N = 1 and N > 1, the pointwise path
// with P == 1 and P > 1 (per sample and batched), stride 2, padding 0/1, C = 1, 1×1 images. Also: gradients agree with
// finite differences, parameter gradients accumulate, propagatesInputGradient = false skips dx,
// results do not depend on the thread count, and columns kept from forward to backward give
// the shared workspace's results.
import NN
import TensorCore
import TestSupport
import XCTest

/// One convolution configuration under test.
struct ConvCase: CustomStringConvertible {
  var n, cin, cout, h, w, k, stride, padding: Int
  var bias = true
  var description: String {
    "N\(n) Cin\(cin) Cout\(cout) \(h)x\(w) k\(k) s\(stride) p\(padding)\(bias ? "" : " nobias")"
  }
}

final class Conv2DTests: XCTestCase {
  static let cases: [ConvCase] = [
    ConvCase(n: 2, cin: 3, cout: 13, h: 5, w: 7, k: 3, stride: 1, padding: 1),  // general, N > 1
    ConvCase(n: 1, cin: 1, cout: 3, h: 5, w: 7, k: 3, stride: 2, padding: 0),  // C = 1, batch 1, stride 2
    ConvCase(n: 3, cin: 13, cout: 3, h: 1, w: 1, k: 3, stride: 1, padding: 1),  // 1×1 image, all padding
    ConvCase(n: 2, cin: 3, cout: 5, h: 6, w: 5, k: 1, stride: 1, padding: 0),  // pointwise, P > 1
    ConvCase(n: 4, cin: 5, cout: 3, h: 1, w: 1, k: 1, stride: 1, padding: 0),  // pointwise, P == 1
    ConvCase(n: 1, cin: 4, cout: 2, h: 3, w: 5, k: 1, stride: 1, padding: 0, bias: false),  // pointwise, N = 1
    ConvCase(n: 2, cin: 2, cout: 4, h: 7, w: 5, k: 1, stride: 2, padding: 0),  // k = 1 but strided: im2col
    ConvCase(n: 2, cin: 3, cout: 4, h: 5, w: 7, k: 3, stride: 2, padding: 1, bias: false),
    ConvCase(n: 1, cin: 3, cout: 8, h: 4, w: 4, k: 3, stride: 1, padding: 1),  // im2col, N = 1
    ConvCase(n: 2, cin: 2, cout: 3, h: 3, w: 3, k: 3, stride: 1, padding: 0),  // 1×1 output
    ConvCase(n: 2, cin: 1, cout: 1, h: 1, w: 1, k: 1, stride: 1, padding: 1),  // k = 1 with padding
    ConvCase(n: 2, cin: 2, cout: 3, h: 7, w: 8, k: 2, stride: 3, padding: 1),  // even kernel, stride > kernel
  ]

  private func make(_ c: ConvCase, seed: UInt64) -> (Conv2D, Tensor) {
    var rng = SeededGenerator(seed: seed)
    let conv = Conv2D(inChannels: c.cin, outChannels: c.cout, kernelSize: c.k, stride: c.stride,
      padding: c.padding, bias: c.bias, rng: &rng)
    if let b = conv.bias { b.value.fillUniform(-1, 1, using: &rng) }  // not just ±1/√fan_in
    let x = Tensor.uniform([c.n, c.cin, c.h, c.w], using: &rng)
    return (conv, x)
  }

  private func reference(_ conv: Conv2D, _ x: Tensor) -> DoubleTensor {
    Reference.conv2d(DoubleTensor(x), weight: DoubleTensor(conv.weight.value),
      bias: conv.bias.map { DoubleTensor($0.value) }, stride: conv.stride, padding: conv.padding)
  }

  func testForwardMatchesDirectConvolution() throws {
    var rng = SeededGenerator(seed: 99)
    for (i, c) in Self.cases.enumerated() {
      let (conv, x) = make(c, seed: UInt64(100 + i))
      let y = try conv.forward(x)
      let ref = reference(conv, x)
      XCTAssertEqual(try conv.outputShape(for: x.shape), ref.shape, "\(c)")
      assertClose(y, ref, rtol: 1e-4, atol: 1e-5, "\(c)")
      // A second call with other values reuses the buffers and must not remember the first.
      x.fillUniform(-2, 2, using: &rng)
      assertClose(try conv.forward(x), reference(conv, x), rtol: 1e-4, atol: 1e-5, "second call, \(c)")
    }
  }

  func testForwardAfterBatchSizeChange() throws {
    // The same layer sees N = 3, then N = 1, then N = 2: scratch buffers shrink and grow.
    var rng = SeededGenerator(seed: 7)
    let conv = Conv2D(inChannels: 3, outChannels: 4, kernelSize: 3, stride: 1, padding: 1, rng: &rng)
    for n in [3, 1, 2] {
      let x = Tensor.uniform([n, 3, 5, 5], using: &rng)
      assertClose(try conv.forward(x), reference(conv, x), rtol: 1e-4, atol: 1e-5, "N=\(n)")
    }
  }

  func testInputViewAtAnOffset() throws {
    // Kernels must honour a view's offset: put x in the middle of a larger allocation.
    let c = Self.cases[0]
    let (conv, x0) = make(c, seed: 150)
    let storage = TensorStorage(capacity: x0.count + 11)
    let x = x0.clone()
    x.rebind(to: storage, offset: 7)
    XCTAssertEqual(x.offset, 7)
    assertClose(try conv.forward(x), reference(conv, x0), rtol: 1e-4, atol: 1e-5)
    var rng = SeededGenerator(seed: 151)
    let dy = Tensor.uniform(try conv.outputShape(for: x.shape), using: &rng)
    conv.zeroGrad()
    let ref = Reference.conv2dBackward(DoubleTensor(x0), weight: DoubleTensor(conv.weight.value),
      dy: DoubleTensor(dy), stride: c.stride, padding: c.padding)
    assertClose(try conv.backward(dy), ref.dx, rtol: 1e-4, atol: 1e-5)
    assertClose(conv.weight.grad, ref.dw, rtol: 1e-4, atol: 1e-5)
  }

  func testBackwardMatchesReference() throws {
    for (i, c) in Self.cases.enumerated() {
      let (conv, x) = make(c, seed: UInt64(200 + i))
      var rng = SeededGenerator(seed: UInt64(300 + i))
      let y = try conv.forward(x)
      _ = try assertBackwardMatchesReference(conv, x, Tensor.uniform(y.shape, using: &rng), c, "\(c)")
    }
  }

  /// Runs backward of `conv` (after its forward of x) on dy from zeroed gradients, checks dx, dW and
  /// db against the Double reference, and returns dx.
  private func assertBackwardMatchesReference(_ conv: Conv2D, _ x: Tensor, _ dy: Tensor, _ c: ConvCase,
    _ label: String, file: StaticString = #filePath, line: UInt = #line
  ) throws -> Tensor {
    conv.zeroGrad()
    let dx = try conv.backward(dy)
    let ref = Reference.conv2dBackward(DoubleTensor(x), weight: DoubleTensor(conv.weight.value),
      dy: DoubleTensor(dy), stride: c.stride, padding: c.padding)
    assertClose(dx, ref.dx, rtol: 1e-4, atol: 1e-5, "dx, \(label)", file: file, line: line)
    assertClose(conv.weight.grad, ref.dw, rtol: 1e-4, atol: 1e-5, "dW, \(label)", file: file, line: line)
    if let b = conv.bias { assertClose(b.grad, ref.db, rtol: 1e-4, atol: 1e-5, "db, \(label)", file: file, line: line) }
    return dx
  }

  /// An ungrouped 1×1 convolution over a batch runs per sample (planes of
  /// `perSampleMinimumPlane` and up) or batched over [Cin, N·P] (smaller planes): both paths,
  /// forced for every shape here (P = 1, 4, 30, 300; with and without bias),
  /// match the Double reference forward and backward, and give each other's results.
  func testPointwiseLayersPerSampleAndBatched() throws {
    let saved = Conv2D.perSampleMinimumPlane
    defer { Conv2D.perSampleMinimumPlane = saved }
    let shapes: [ConvCase] = [
      ConvCase(n: 3, cin: 5, cout: 7, h: 2, w: 2, k: 1, stride: 1, padding: 0),
      ConvCase(n: 2, cin: 3, cout: 5, h: 6, w: 5, k: 1, stride: 1, padding: 0, bias: false),
      ConvCase(n: 2, cin: 9, cout: 4, h: 15, w: 20, k: 1, stride: 1, padding: 0),
      ConvCase(n: 4, cin: 1, cout: 3, h: 1, w: 1, k: 1, stride: 1, padding: 0),
    ]
    for (i, c) in shapes.enumerated() {
      var results: [[[Float]]] = []
      for minimum in [1, Int.max] {
        Conv2D.perSampleMinimumPlane = minimum
        let (conv, x) = make(c, seed: UInt64(1100 + i))
        var rng = SeededGenerator(seed: UInt64(1200 + i))
        let y = try conv.forward(x)
        assertClose(y, reference(conv, x), rtol: 1e-4, atol: 1e-5, "forward, minimum \(minimum), \(c)")
        let dx = try assertBackwardMatchesReference(conv, x, Tensor.uniform(y.shape, using: &rng), c,
          "minimum \(minimum), \(c)")
        results.append([y.array, dx.array, conv.weight.grad.array])
      }
      for (a, b) in zip(results[0], results[1]) { assertClose(a, b.map(Double.init), rtol: 1e-5, atol: 1e-6, "paths, \(c)") }
    }
  }

  func testGradientsMatchFiniteDifferences() {
    // Small shapes: every input and parameter element is perturbed.
    let small: [ConvCase] = [
      ConvCase(n: 2, cin: 2, cout: 3, h: 4, w: 5, k: 3, stride: 1, padding: 1),
      ConvCase(n: 1, cin: 1, cout: 2, h: 5, w: 5, k: 3, stride: 2, padding: 0),
      ConvCase(n: 2, cin: 3, cout: 2, h: 3, w: 2, k: 1, stride: 1, padding: 0),
      ConvCase(n: 3, cin: 3, cout: 2, h: 1, w: 1, k: 1, stride: 1, padding: 0),
      ConvCase(n: 2, cin: 2, cout: 2, h: 5, w: 4, k: 3, stride: 2, padding: 1, bias: false),
    ]
    for (i, c) in small.enumerated() {
      let (conv, x) = make(c, seed: UInt64(400 + i))
      GradientChecker().assertGradients(conv, input: x, "\(c)")
    }
  }

  func testParameterGradientsAccumulateAcrossBackwardCalls() throws {
    for (i, c) in Self.cases.enumerated() {
      let (conv, x) = make(c, seed: UInt64(500 + i))
      var rng = SeededGenerator(seed: UInt64(600 + i))
      let y = try conv.forward(x)
      let dy = Tensor.uniform(y.shape, using: &rng)
      conv.zeroGrad()
      let dx1 = try conv.backward(dy).array
      let dx2 = try conv.backward(dy).array  // a second backward of the same forward
      let ref = Reference.conv2dBackward(DoubleTensor(x), weight: DoubleTensor(conv.weight.value),
        dy: DoubleTensor(dy), stride: c.stride, padding: c.padding)
      assertClose(conv.weight.grad, DoubleTensor(shape: ref.dw.shape, values: ref.dw.values.map { 2 * $0 }),
        rtol: 1e-4, atol: 1e-5, "dW after two backward calls, \(c)")
      if let b = conv.bias {
        assertClose(b.grad, DoubleTensor(shape: [c.cout], values: ref.db.values.map { 2 * $0 }),
          rtol: 1e-4, atol: 1e-5, "db after two backward calls, \(c)")
      }
      // The input gradient is overwritten, not accumulated.
      assertClose(dx1, ref.dx.values, rtol: 1e-4, atol: 1e-5, "first dx, \(c)")
      assertClose(dx2, ref.dx.values, rtol: 1e-4, atol: 1e-5, "second dx, \(c)")
    }
  }

  func testZeroGradClearsAccumulatedGradients() throws {
    let (conv, x) = make(Self.cases[0], seed: 1)
    let y = try conv.forward(x)
    _ = try conv.backward(Tensor(shape: y.shape, repeating: 1))
    XCTAssertTrue(conv.weight.grad.array.contains { $0 != 0 })
    conv.zeroGrad()
    XCTAssertTrue(conv.namedParameters().allSatisfy { $0.1.grad.array.allSatisfy { $0 == 0 } })
  }

  func testPropagatesInputGradientFalseSkipsDx() throws {
    for (i, c) in Self.cases.enumerated() {
      let (conv, x) = make(c, seed: UInt64(700 + i))
      var rng = SeededGenerator(seed: UInt64(800 + i))
      let y = try conv.forward(x)
      let xBefore = x.array
      conv.propagatesInputGradient = false
      conv.zeroGrad()
      let dy = Tensor.uniform(y.shape, using: &rng)
      // Without propagation the returned tensor is unspecified (no dx buffer is even kept); the
      // input must be left alone, and dW and db must still be right.
      _ = try conv.backward(dy)
      assertBitwiseEqual(x.array, xBefore, "the input must not change, \(c)")
      let ref = Reference.conv2dBackward(DoubleTensor(x), weight: DoubleTensor(conv.weight.value),
        dy: DoubleTensor(dy), stride: c.stride, padding: c.padding)
      assertClose(conv.weight.grad, ref.dw, rtol: 1e-4, atol: 1e-5, "dW, \(c)")
      if let b = conv.bias { assertClose(b.grad, ref.db, rtol: 1e-4, atol: 1e-5, "db, \(c)") }
      // A second backward (the column buffer is still valid) accumulates as usual.
      _ = try conv.backward(dy)
      assertClose(conv.weight.grad, DoubleTensor(shape: ref.dw.shape, values: ref.dw.values.map { 2 * $0 }),
        rtol: 1e-4, atol: 1e-5, "dW twice, \(c)")
    }
  }

  /// Runs forward and backward of case `c` with `threads` threads; returns y, dx, dW, db.
  private func runWithThreads(_ c: ConvCase, threads: Int, seed: UInt64) throws -> [[Float]] {
    Threads.count = threads
    let (conv, x) = make(c, seed: seed)
    var rng = SeededGenerator(seed: seed &+ 1)
    let y = try conv.forward(x).array
    let dy = Tensor.uniform(try conv.outputShape(for: x.shape), using: &rng)
    conv.zeroGrad()
    let dx = try conv.backward(dy).array
    return [y, dx, conv.weight.grad.array, conv.bias!.grad.array]
  }

  /// Our own parallel loops (im2col, the batch gather/scatter, col2im, ReLU) write disjoint
  /// regions, so they give identical bits for any thread count. These shapes keep every sgemm
  /// below OpenBLAS's threading threshold while `parallelFor` still splits the batch in two.
  func testResultsDoNotDependOnThreadCount() throws {
    let saved = Threads.count
    defer { Threads.count = saved }
    let shapes: [ConvCase] = [
      ConvCase(n: 4, cin: 2, cout: 3, h: 6, w: 6, k: 3, stride: 1, padding: 1),
      ConvCase(n: 3, cin: 3, cout: 2, h: 7, w: 5, k: 3, stride: 2, padding: 0),
      ConvCase(n: 4, cin: 3, cout: 4, h: 4, w: 4, k: 1, stride: 1, padding: 0),
    ]
    for (i, c) in shapes.enumerated() {
      let one = try runWithThreads(c, threads: 1, seed: UInt64(900 + 2 * i))
      let two = try runWithThreads(c, threads: 2, seed: UInt64(900 + 2 * i))
      for (j, name) in ["y", "dx", "dW", "db"].enumerated() {
        assertBitwiseEqual(one[j], two[j], "\(name) with 1 vs 2 threads, \(c)")
      }
    }
    let relu = ReLU()
    var rng = SeededGenerator(seed: 5)
    let x = Tensor.uniform([2, 4, 100, 100], using: &rng)  // above ReLU's parallel chunk size
    Threads.count = 1
    let y1 = try relu.forward(x).array
    Threads.count = 2
    assertBitwiseEqual(y1, try relu.forward(x).array, "ReLU with 1 vs 2 threads")
  }

  /// Above OpenBLAS's threading threshold, OpenBLAS 0.3.21's sgemm itself rounds differently
  /// with 1 and 2 threads (see BLASTests), so larger convolutions agree to rounding only.
  func testLargeShapesAgreeAcrossThreadCountsToRounding() throws {
    let saved = Threads.count
    defer { Threads.count = saved }
    let c = ConvCase(n: 4, cin: 8, cout: 16, h: 12, w: 12, k: 3, stride: 1, padding: 1)
    let one = try runWithThreads(c, threads: 1, seed: 42)
    let two = try runWithThreads(c, threads: 2, seed: 42)
    for (j, name) in ["y", "dx", "dW", "db"].enumerated() {
      assertClose(one[j], two[j].map(Double.init), rtol: 1e-5, atol: 1e-5, "\(name) with 1 vs 2 threads")
    }
  }

  func testShapeErrorsNameTheLayer() throws {
    var rng = SeededGenerator(seed: 1)
    let conv = Conv2D(inChannels: 3, outChannels: 4, kernelSize: 3, rng: &rng)
    XCTAssertThrowsError(try conv.backward(Tensor(zeros: [1, 4, 3, 3]))) { error in
      XCTAssertTrue("\(error)".contains("Conv2D"), "\(error)")
    }
    XCTAssertThrowsError(try conv.forward(Tensor(zeros: [1, 2, 5, 5]))) { error in
      XCTAssertTrue("\(error)".contains("Conv2D"), "\(error)")
    }
    XCTAssertThrowsError(try conv.forward(Tensor(zeros: [1, 3, 2, 2])), "window larger than the padded image")
    XCTAssertThrowsError(try conv.forward(Tensor(zeros: [3, 5, 5])), "rank 3")
    _ = try conv.forward(Tensor(zeros: [1, 3, 5, 5]))
    XCTAssertThrowsError(try conv.backward(Tensor(zeros: [1, 4, 2, 2])), "dy of the wrong shape")
  }

  func testDefaultInitialisationBounds() {
    var rng = SeededGenerator(seed: 3)
    let conv = Conv2D(inChannels: 4, outChannels: 6, kernelSize: 3, rng: &rng)
    let bound: Float = 1 / (36 as Float).squareRoot()
    XCTAssertTrue(conv.weight.value.array.allSatisfy { abs($0) <= bound })
    XCTAssertTrue(conv.bias!.value.array.allSatisfy { abs($0) <= bound })
    XCTAssertGreaterThan(conv.weight.value.array.map(abs).max()!, bound * 0.8, "spread over the range")
  }

  func testOrthogonalInitialisation() {
    var rng = SeededGenerator(seed: 4)
    // [6, 2·3·3 = 18]: wide, so the 6 rows are orthonormal, then scaled by the gain.
    let conv = Conv2D(inChannels: 2, outChannels: 6, kernelSize: 3, weightInit: .orthogonal(gain: 2), rng: &rng)
    let w = conv.weight.value.doubles
    for i in 0..<6 {
      for j in 0..<6 {
        let dot = (0..<18).reduce(0.0) { $0 + w[i * 18 + $1] * w[j * 18 + $1] }
        XCTAssertEqual(dot, i == j ? 4 : 0, accuracy: 1e-4)
      }
    }
  }

  // MARK: - Fused ReLU

  /// `Sequential` runs Conv2D → ReLU(inPlace: true) as one fused step. It must give exactly
  /// the bits of the two layers run one after the other: output, dx, dW and db, on the general
  /// path (batch > 1), batch 1, a pointwise convolution, without bias, and with NaN and zero
  /// pre-activations.
  func testFusedReLUGivesTheBitsOfConvThenReLU() throws {
    let cases: [(n: Int, cin: Int, cout: Int, k: Int, stride: Int, pad: Int, bias: Bool)] = [
      (3, 2, 5, 3, 1, 1, true), (1, 3, 4, 3, 2, 0, true), (4, 3, 2, 1, 1, 0, true), (2, 1, 3, 3, 2, 1, false),
      (5, 2, 1, 1, 1, 0, false),
    ]
    for c in cases {
      var rng = SeededGenerator(seed: 31)
      func build() -> (Conv2D, Sequential) {
        var r = SeededGenerator(seed: 32)
        let conv = Conv2D(inChannels: c.cin, outChannels: c.cout, kernelSize: c.k, stride: c.stride, padding: c.pad,
          bias: c.bias, rng: &r)
        // The first layer skips dx by default; keep it to compare it.
        let net = Sequential([("conv", conv), ("relu", ReLU(inPlace: true)), ("flatten", Flatten())])
        net.propagatesInputGradient = true
        return (conv, net)
      }
      let (fusedConv, fused) = build()
      let (plainConv, _) = build()
      plainConv.propagatesInputGradient = true
      let plainReLU = ReLU(inPlace: true)
      let x = Tensor.uniform([c.n, c.cin, 6, 5], using: &rng)
      x.data[0] = .nan
      let label = "fused ReLU \(c)"

      let yFused = try fused.forward(x)
      let yPlain = try plainReLU.forward(try plainConv.forward(x))
      XCTAssertEqual(yFused.count, yPlain.count, label)
      XCTAssertTrue(zip(yFused.array, yPlain.array).allSatisfy { $0.bitPattern == $1.bitPattern }, "y, \(label)")
      XCTAssertTrue(yPlain.array.contains { $0.isNaN }, "the NaN propagates, \(label)")
      XCTAssertTrue(yPlain.array.contains(0), "some outputs are clamped, \(label)")

      let dy = Tensor.uniform(yFused.shape, using: &rng)
      let dyCopy = Tensor(shape: yPlain.shape, values: dy.array)
      let dxFused = try fused.backward(dy)
      let dxPlain = try plainConv.backward(try plainReLU.backward(dyCopy))
      func same(_ a: Tensor, _ b: Tensor, _ what: String) {
        XCTAssertEqual(a.shape, b.shape, "\(what), \(label)")
        XCTAssertTrue(zip(a.array, b.array).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(what), \(label)")
      }
      same(dxFused, dxPlain, "dx")
      same(fusedConv.weight.grad, plainConv.weight.grad, "dW")
      if c.bias { same(fusedConv.bias!.grad, plainConv.bias!.grad, "db") }

      // An unfused forward afterwards (the layer used on its own) must not apply the mask.
      _ = try fusedConv.forward(x)
      fusedConv.zeroGrad()
      plainConv.zeroGrad()
      let dyConv = Tensor(shape: yPlain.shape, values: dy.array)
      same(try fusedConv.backward(dyConv), try plainConv.backward(dyConv), "dx unfused after fused")
    }
  }

  /// A training pass keeps its columns (`Conv2D.keptColumnsMaximum`) in a buffer of the layer's
  /// own, which backward's weight gradient reads instead of running im2col again: conv1's
  /// backward GEMM reads the buffer its forward GEMM read, no longer the workspace that conv2
  /// filled after it; with nothing kept (0) both layers share the workspace. Either way the
  /// outputs, the input gradient and every parameter gradient are the same bits, over two steps.
  func testKeptColumnsGiveTheWorkspacesResults() throws {
    let saved = Conv2D.keptColumnsMaximum
    defer { Conv2D.keptColumnsMaximum = saved }
    XCTAssertGreaterThan(Conv2D.keptColumnsMaximum, 27 * 2 * 5 * 5)
    var results: [[[Float]]] = []
    for maximum in [saved, 0] {
      Conv2D.keptColumnsMaximum = maximum
      var rng = SeededGenerator(seed: 7)
      let conv1 = Conv2D(inChannels: 3, outChannels: 4, kernelSize: 3, padding: 1, rng: &rng)
      let conv2 = Conv2D(inChannels: 4, outChannels: 6, kernelSize: 3, stride: 2, rng: &rng)
      let net = Sequential([("conv1", conv1), ("act", Sigmoid()), ("conv2", conv2)])
      var out: [[Float]] = []
      for step in 0..<2 {
        let x = Tensor.uniform([2, 3, 5, 5], using: &rng)
        let (_, calls) = try BLAS.recordingGemms {
          let y = try net.forward(x)
          net.zeroGrad()
          out.append(y.array)
          out.append(try net.backward(Tensor.uniform(y.shape, using: &rng)).array)
        }
        // forward conv1, conv2; backward conv2 (dW, dcol), conv1 (dW, dcol)
        XCTAssertEqual(calls.map(\.shape), [
          "NN m4 n50 k27 b0", "NN m6 n8 k36 b0", "NT m6 n36 k8 b1", "TN m36 n8 k6 b0", "NT m4 n27 k50 b1",
          "TN m27 n50 k4 b0",
        ], "step \(step), maximum \(maximum)")
        guard calls.count == 6 else { continue }
        XCTAssertEqual(calls[4].b, calls[0].b, "conv1's dW reads its forward columns, maximum \(maximum)")
        if maximum == 0 {
          XCTAssertEqual(calls[1].b, calls[0].b, "one shared workspace, step \(step)")
        } else {
          XCTAssertNotEqual(calls[1].b, calls[0].b, "conv1 keeps its own columns, step \(step)")
        }
      }
      out += net.namedParameters().map { $0.1.grad.array }
      results.append(out)
    }
    XCTAssertEqual(results[0].count, results[1].count)
    for (i, (a, b)) in zip(results[0], results[1]).enumerated() {
      XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern), "result \(i): kept columns against the workspace's")
    }
  }

  /// Kept columns are used only for the input they were made from, as it was: a first layer
  /// (no input gradient, so backward leaves its columns intact) whose input tensor is then
  /// rewritten in place and run in evaluation mode (through the workspace) computes its next
  /// weight gradient from the new values, as the Double reference does.
  func testKeptColumnsAreNotReusedForAnotherPass() throws {
    for (i, c) in Self.cases.enumerated() where c.k > 1 {
      let (conv, x) = make(c, seed: UInt64(1500 + i))
      conv.propagatesInputGradient = false
      var rng = SeededGenerator(seed: UInt64(1600 + i))
      let dy = Tensor.uniform(try conv.outputShape(for: x.shape), using: &rng)
      _ = try conv.forward(x)
      _ = try conv.backward(dy)
      let fresh = Tensor.uniform(x.shape, using: &rng)
      x.copy(from: fresh)
      conv.eval()
      _ = try conv.forward(x)
      conv.train()
      conv.zeroGrad()
      _ = try conv.backward(dy)
      let ref = Reference.conv2dBackward(DoubleTensor(fresh), weight: DoubleTensor(conv.weight.value),
        dy: DoubleTensor(dy), stride: c.stride, padding: c.padding)
      assertClose(conv.weight.grad, ref.dw, rtol: 1e-4, atol: 1e-5, "dW after an evaluation pass, \(c)")
    }
  }

  /// Which layers keep their columns: im2col layers in training of at most
  /// `keptColumnsMaximumOutputs` outputs per group (batch 1 and groups too, 1×1 at stride 2),
  /// not a 1×1 at stride 1 (batched: a copy of x), not in evaluation mode (which frees them), and
  /// none once backward has written dcol over them; each gives the workspace's bits.
  func testWhichLayersKeepTheirColumns() throws {
    let saved = Conv2D.keptColumnsMaximum
    defer { Conv2D.keptColumnsMaximum = saved }
    XCTAssertEqual(Conv2D.keptColumnsMaximumOutputs, 64)
    let layers: [(cin: Int, cout: Int, k: Int, stride: Int, groups: Int, n: Int, keeps: Bool)] = [
      (4, 6, 3, 1, 1, 2, true),
      (4, 6, 3, 2, 2, 1, true),  // batch 1, groups
      (4, 128, 3, 1, 2, 2, true),  // 64 outputs per group
      (4, 130, 3, 1, 2, 2, false),  // 65 per group
      (4, 65, 3, 1, 1, 2, false),
      (4, 6, 1, 1, 1, 2, false),  // 1×1 at stride 1, 5×5 planes: batched, its "im2col" a copy
      (4, 6, 1, 2, 1, 2, true),  // 1×1 at stride 2: im2col
    ]
    for (i, l) in layers.enumerated() {
      var results: [[[Float]]] = []
      for maximum in [saved, 0] {
        Conv2D.keptColumnsMaximum = maximum
        var rng = SeededGenerator(seed: UInt64(1900 + i))
        let conv = Conv2D(inChannels: l.cin, outChannels: l.cout, kernelSize: (l.k, l.k), stride: (l.stride, l.stride),
          padding: (l.k / 2, l.k / 2), groups: l.groups, rng: &rng)
        let x = Tensor.uniform([l.n, l.cin, 5, 5], using: &rng)
        let label = "layer \(i) \(l), maximum \(maximum)"
        let y = try conv.forward(x).array
        XCTAssertEqual(conv.holdsKeptColumns, l.keeps && maximum > 0, "after forward, \(label)")
        let dy = Tensor.uniform(try conv.outputShape(for: x.shape), using: &rng)
        let dx = try conv.backward(dy).array
        XCTAssertFalse(conv.holdsKeptColumns, "after backward, \(label)")
        _ = try conv.forward(x)
        XCTAssertEqual(conv.holdsKeptColumns, l.keeps && maximum > 0, "after a second forward, \(label)")
        conv.eval()
        let yEval = try conv.forward(x).array
        XCTAssertFalse(conv.holdsKeptColumns, "in evaluation mode, \(label)")
        results.append([y, dx, conv.weight.grad.array, conv.bias!.grad.array, yEval])
      }
      for (j, name) in ["y", "dx", "dW", "db", "y in evaluation mode"].enumerated() {
        assertBitwiseEqual(results[0][j], results[1][j], "\(name), kept columns against the workspace's, layer \(i)")
      }
    }
  }
}
