// MetaAconVariantTests: Meta-ACON's switching functions beside the channel-wise default:
// MetaAconC without BatchNorm (`batchNorm: false`, any r), MetaAconLayerwise (β_n = σ(mean of
// x[n])) and MetaAconPixelwise (β = σ(x)), each against its Double twin by the gradient checker
// (input and parameter gradients by central differences) on odd shapes, batch 1 in training,
// state_dict names, bad input, and 1 vs 2 threads bit for bit.
import ACON
import NN
import TensorCore
import TestSupport
import XCTest

final class MetaAconVariantTests: XCTestCase {
  private let shapes: [[Int]] = [[1, 3, 2, 2], [2, 1, 1, 1], [3, 17, 2, 3], [2, 5], [1, 1, 3, 3], [2, 3, 5, 5]]

  func testLayerwiseGradientsOnOddShapes() {
    var rng = SeededGenerator(seed: 21)
    for shape in shapes {
      let layer = MetaAconLayerwise(channels: shape[1], rng: &rng)
      XCTAssertTrue(layer.isTraining)
      let x = Tensor.uniform(shape, -2, 2, using: &rng)
      let report = GradientChecker().assertGradients(layer, input: x, "MetaAconLayerwise \(shape)")
      XCTAssertEqual(Set(report?.tensors ?? []), ["input", "p1", "p2"])
    }
  }

  func testPixelwiseGradientsOnOddShapes() {
    var rng = SeededGenerator(seed: 22)
    for shape in shapes {
      let layer = MetaAconPixelwise(channels: shape[1], rng: &rng)
      let x = Tensor.uniform(shape, -2, 2, using: &rng)
      let report = GradientChecker().assertGradients(layer, input: x, "MetaAconPixelwise \(shape)")
      XCTAssertEqual(Set(report?.tensors ?? []), ["input", "p1", "p2"])
    }
  }

  /// The layer-wise β is σ of the per-sample mean (not the saturating sum), and the forward
  /// matches the ACON-C reference with that β.
  func testLayerwiseBetaIsSigmoidOfTheSampleMean() throws {
    var rng = SeededGenerator(seed: 23)
    let (n, c, h, w) = (3, 6, 7, 5)
    let layer = MetaAconLayerwise(channels: c, rng: &rng)
    let x = Tensor.normal([n, c, h, w], using: &rng)
    for i in 0..<(c * h * w) { x.data[i] += 3 }  // sample 0: a large sum, a moderate mean
    let y = try layer.forward(x)
    let per = c * h * w
    let beta = (0..<n).map { s in
      AconReference.sigmoid(x.array[(s * per)..<((s + 1) * per)].map(Double.init).reduce(0, +) / Double(per))
    }
    let got = try XCTUnwrap(layer.lastBeta)
    assertClose(got, beta, rtol: 1e-6, atol: 1e-6, "β")
    XCTAssertLessThan(got[0], 0.999, "β must not saturate on a sum of \(per) values of mean ≈ 3")
    let betaNC = (0..<(n * c)).map { Float(beta[$0 / c]) }
    let want = AconReference.forward(x: x.array, n: n, c: c, hw: h * w, p1: layer.p1.value.array,
      p2: layer.p2.value.array, beta: betaNC)
    assertClose(y.array, want, rtol: 1e-5, atol: 1e-5, "forward")
  }

  /// Samples larger than a cache's share (each sample's two passes, the mean then the kernel,
  /// the kernel then the path through β, run back to back per thread): y, dx and the parameter
  /// gradients still match the twin.
  func testLayerwiseInSeveralBlocksMatchesTwin() throws {
    var rng = SeededGenerator(seed: 28)
    let layer = MetaAconLayerwise(channels: 3, rng: &rng)
    let shape = [3, 3, 101, 223]  // 67 569 elements per sample
    let x = Tensor.normal(shape, using: &rng), dy = Tensor.normal(shape, using: &rng)
    let y = try layer.forward(x)
    layer.zeroGrad()
    let dx = try layer.backward(dy)
    let twin = try ReferenceLayer(layer)
    let theta = twin.parameters.map(\.1)
    assertClose(y, twin.forward(DoubleTensor(x), theta), rtol: 1e-5, atol: 1e-5, "y")
    let (wantDx, wantDp) = twin.backward(DoubleTensor(x), theta, DoubleTensor(dy))
    assertClose(dx, wantDx, rtol: 1e-4, atol: 1e-6, "dx")
    for ((name, p), want) in zip(layer.namedParameters(), wantDp) {
      assertClose(p.grad, want, rtol: 1e-4, atol: 1e-2, name)
    }
  }

  func testMetaAconCWithoutBatchNormAndCustomR() throws {
    var rng = SeededGenerator(seed: 24)
    let meta = MetaAconC(channels: 20, r: 4, batchNorm: false, rng: &rng)
    XCTAssertEqual(meta.width, 5)  // max(4, 20/4)
    XCTAssertFalse(meta.useBatchNorm)
    XCTAssertEqual(meta.namedParameters().map(\.0), ["p1", "p2", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"])
    XCTAssertEqual(meta.fc1.weight.shape, [5, 20, 1, 1])
    XCTAssertEqual(meta.fc2.weight.shape, [20, 5, 1, 1])
    XCTAssertTrue(meta.namedBuffers().isEmpty)
    XCTAssertEqual(MetaAconC(channels: 20, r: 8, batchNorm: false, rng: &rng).width, 8)
    // Batch 1 in training, C not a multiple of 16, 1×1 and 2×2 maps.
    for shape in [[1, 20, 2, 2], [1, 20, 1, 1], [2, 20, 3, 1]] {
      randomizeParameters(meta, -1, 1, using: &rng)
      let report = GradientChecker().assertGradients(meta, input: Tensor.uniform(shape, -2, 2, using: &rng),
        "MetaAconC batchNorm: false \(shape)")
      XCTAssertEqual(Set(report?.tensors ?? []), Set(["input"] + meta.namedParameters().map(\.0)))
    }
    let c1 = MetaAconC(channels: 1, r: 16, batchNorm: false, rng: &rng)
    GradientChecker().assertGradients(c1, input: Tensor.uniform([1, 1, 2, 2], -2, 2, using: &rng), "C = 1")
  }

  func testParameterNamesShapesAndBadInput() {
    var rng = SeededGenerator(seed: 25)
    let layers: [Module] = [MetaAconLayerwise(channels: 4, rng: &rng), MetaAconPixelwise(channels: 4, rng: &rng)]
    for layer in layers {
      XCTAssertEqual(layer.namedParameters().map(\.0), ["p1", "p2"])
      XCTAssertEqual(layer.namedParameters().map(\.1.shape), [[1, 4, 1, 1], [1, 4, 1, 1]])
      XCTAssertThrowsError(try layer.forward(Tensor(zeros: [2, 3, 2, 2]))) { error in
        XCTAssertTrue(String(describing: error).contains(layer.typeName), "\(error)")
      }
      XCTAssertThrowsError(try layer.backward(Tensor(zeros: [2, 4, 2, 2]))) { error in
        XCTAssertTrue(String(describing: error).contains(layer.typeName), "\(error)")
      }
    }
  }

  func testOneAndTwoThreadsGiveTheSameBits() throws {
    let saved = Threads.count
    defer { Threads.count = saved }
    var rng = SeededGenerator(seed: 26)
    let shape = [4, 19, 31, 37]
    let x = Tensor.normal(shape, using: &rng), dy = Tensor.normal(shape, using: &rng)
    for make in [{ (r: inout SeededGenerator) -> Module in MetaAconLayerwise(channels: 19, rng: &r) },
                 { (r: inout SeededGenerator) -> Module in MetaAconPixelwise(channels: 19, rng: &r) }] {
      var outs: [[[Float]]] = []
      for threads in [1, 2] {
        Threads.count = threads
        var r = SeededGenerator(seed: 27)
        let layer = make(&r)
        let y = try layer.forward(x).array
        layer.zeroGrad()
        let dx = try layer.backward(dy).array
        outs.append([y, dx] + layer.namedParameters().map { $0.1.grad.array })
      }
      for k in outs[0].indices { assertBitwiseEqual(outs[0][k], outs[1][k], "tensor \(k)") }
    }
  }
}
