// AconLayerTests: the ACON layers (AconA, AconB, AconC, MetaAconC) against the Double
// reference and central differences, their names and shapes, the Meta-ACON β network, batch-1
// behaviour, (N, C) inputs, and the seed network's parameter count.
import ACON
import NN
import TensorCore
import TestSupport
import Training
import XCTest

final class AconLayerTests: XCTestCase {
  /// The layer's p1, p2 and β as per-channel arrays (fixed coefficients included).
  private func coefficients(_ layer: AconActivation, channels c: Int) -> (p1: [Float], p2: [Float], beta: [Float]) {
    let p = Dictionary(uniqueKeysWithValues: layer.namedParameters())
    let p1 = p["p1"]?.value.array ?? [Float](repeating: 1, count: c)
    let p2 = p["p2"]?.value.array ?? [Float](repeating: 0, count: c)
    return (p1, p2, p["beta"]!.value.array)
  }

  func testAconCMatchesReferenceOnOddShapes() throws {
    var rng = SeededGenerator(seed: 1)
    for shape in [[1, 1, 1, 1], [2, 3, 7, 7], [3, 5, 1, 1], [1, 13, 5, 3], [4, 64, 7, 7], [5, 7], [2, 9, 2, 9]] {
      let c = shape[1]
      let layer = AconC(channels: c, rng: &rng)
      let x = Tensor.normal(shape, std: 2, using: &rng)
      let y = try layer.forward(x)
      let hw = shape.count == 4 ? shape[2] * shape[3] : 1
      let (p1, p2, beta) = coefficients(layer, channels: c)
      let want = AconReference.forward(x: x.array, n: shape[0], c: c, hw: hw, p1: p1, p2: p2, beta: beta)
      assertClose(y.array, want, rtol: 1e-5, atol: 1e-6, "AconC forward \(shape)")
      let dy = Tensor.normal(shape, using: &rng)
      layer.zeroGrad()
      let dx = try layer.backward(dy)
      let g = AconReference.backward(x: x.array, dy: dy.array, n: shape[0], c: c, hw: hw, p1: p1, p2: p2, beta: beta)
      assertClose(dx.array, g.dx, rtol: 1e-4, atol: 1e-5, "AconC dx \(shape)")
      let params = Dictionary(uniqueKeysWithValues: layer.namedParameters())
      assertClose(params["p1"]!.grad.array, g.dp1, rtol: 1e-4, atol: 1e-4, "AconC dp1 \(shape)")
      assertClose(params["p2"]!.grad.array, g.dp2, rtol: 1e-4, atol: 1e-4, "AconC dp2 \(shape)")
      assertClose(params["beta"]!.grad.array, g.dbeta, rtol: 1e-4, atol: 1e-4, "AconC dbeta \(shape)")
    }
  }

  func testParameterNamesShapesAndInit() {
    var rng = SeededGenerator(seed: 2)
    let c = AconC(channels: 64, rng: &rng)
    XCTAssertEqual(c.namedParameters().map(\.0), ["p1", "p2", "beta"])
    for (_, p) in c.namedParameters() {
      XCTAssertEqual(p.shape, [1, 64, 1, 1])
      XCTAssertFalse(p.decays, "ACON parameters get no weight decay by default")
    }
    XCTAssertEqual(c.namedParameters()[2].1.value.array, [Float](repeating: 1, count: 64))
    // p1, p2 ~ N(0, 1): sample moments over 128 draws.
    let ps = c.namedParameters()[0].1.value.array + c.namedParameters()[1].1.value.array
    let mean = ps.reduce(0, +) / Float(ps.count)
    let std = (ps.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(ps.count)).squareRoot()
    XCTAssertEqual(mean, 0, accuracy: 0.3)
    XCTAssertEqual(std, 1, accuracy: 0.3)
    XCTAssertEqual(AconA(channels: 8).namedParameters().map(\.0), ["beta"])
    XCTAssertEqual(AconB(channels: 8, rng: &rng).namedParameters().map(\.0), ["p2", "beta"])
    let meta = MetaAconC(channels: 64, rng: &rng)
    XCTAssertEqual(meta.width, 16)
    XCTAssertEqual(MetaAconC(channels: 512, rng: &rng).width, 32)
    XCTAssertEqual(meta.namedParameters().map(\.0),
      ["p1", "p2", "fc1.weight", "fc1.bias", "bn1.weight", "bn1.bias", "fc2.weight", "fc2.bias", "bn2.weight", "bn2.bias"])
    XCTAssertEqual(meta.namedParameters().map(\.1.shape),
      [[1, 64, 1, 1], [1, 64, 1, 1], [16, 64, 1, 1], [16], [16], [16], [64, 16, 1, 1], [64], [64], [64]])
    XCTAssertEqual(meta.namedBuffers().map(\.0),
      ["bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked", "bn2.running_mean", "bn2.running_var",
       "bn2.num_batches_tracked"])
    let plain = MetaAconC(channels: 64, useBatchNorm: false, rng: &rng)
    XCTAssertEqual(plain.namedParameters().map(\.0), ["p1", "p2", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"])
  }

  func testFiniteDifferencesAconABC() {
    var rng = SeededGenerator(seed: 3)
    let checker = GradientChecker()
    for shape in [[2, 3, 3, 3], [1, 1, 1, 1], [3, 4]] {
      let c = shape[1]
      let layers: [AconActivation] = [AconC(channels: c, rng: &rng), AconA(channels: c), AconB(channels: c, rng: &rng)]
      for layer in layers {
        // Non-trivial β, so that every term of the gradient matters.
        for (name, p) in layer.namedParameters() where name == "beta" { p.value.fillUniform(0.5, 2, using: &rng) }
        let x = Tensor.uniform(shape, -2, 2, using: &rng)
        checker.assertGradients(layer, input: x, "\(layer.typeName) \(shape)")
      }
    }
  }

  func testFiniteDifferencesMetaAconEveryParameter() {
    var rng = SeededGenerator(seed: 4)
    let checker = GradientChecker()
    for (shape, bn) in [([4, 3, 2, 3], true), ([3, 5, 1, 1], true), ([2, 4, 3, 3], false), ([1, 3, 2, 2], false), ([4, 6], true)] {
      let meta = MetaAconC(channels: shape[1], r: 2, useBatchNorm: bn, rng: &rng)
      randomizeParameters(meta, -1, 1, using: &rng)
      let x = Tensor.uniform(shape, -2, 2, using: &rng)
      let report = checker.assertGradients(meta, input: x, "MetaAconC \(shape) bn \(bn)")
      XCTAssertEqual(Set(report?.tensors ?? []), Set(["input"] + meta.namedParameters().map(\.0)))
    }
  }

  func testMetaAconForwardMatchesReferenceBetaNetwork() throws {
    var rng = SeededGenerator(seed: 5)
    let (n, c, h, w) = (3, 5, 4, 3)
    let meta = MetaAconC(channels: c, r: 2, rng: &rng)
    randomizeParameters(meta, -1, 1, using: &rng)
    let x = Tensor.normal([n, c, h, w], using: &rng)
    let y = try meta.forward(x)
    // β by definition, in Double: mean → fc1 → bn1 (batch stats) → fc2 → bn2 → σ.
    let mean = Reference.globalAvgPool2d(DoubleTensor(x))
    let h1 = Reference.conv2d(mean, weight: DoubleTensor(meta.fc1.weight.value), bias: DoubleTensor(meta.fc1.bias!.value), stride: 1, padding: 0)
    let h2 = Reference.batchNormTraining(h1, gamma: DoubleTensor(meta.bn1!.weight.value).values, beta: DoubleTensor(meta.bn1!.bias.value).values, eps: 1e-5)
    let h3 = Reference.conv2d(h2, weight: DoubleTensor(meta.fc2.weight.value), bias: DoubleTensor(meta.fc2.bias!.value), stride: 1, padding: 0)
    let h4 = Reference.batchNormTraining(h3, gamma: DoubleTensor(meta.bn2!.weight.value).values, beta: DoubleTensor(meta.bn2!.bias.value).values, eps: 1e-5)
    let beta = h4.values.map { Float(AconReference.sigmoid($0)) }
    assertClose(meta.lastBeta!.array, beta.map(Double.init), rtol: 1e-4, atol: 1e-5, "β")
    let want = AconReference.forward(x: x.array, n: n, c: c, hw: h * w, p1: meta.p1.value.array, p2: meta.p2.value.array, beta: beta)
    assertClose(y.array, want, rtol: 1e-4, atol: 1e-5, "MetaAconC forward")
  }

  func testMetaAconBatchOne() throws {
    var rng = SeededGenerator(seed: 6)
    let meta = MetaAconC(channels: 8, rng: &rng)
    let x = Tensor.normal([1, 8, 3, 3], using: &rng)
    XCTAssertThrowsError(try meta.forward(x)) { error in
      let text = String(describing: error)
      XCTAssertTrue(text.contains("MetaAconC") && text.contains("batch of at least 2") && text.contains("eval()"), text)
    }
    meta.eval()
    let y = try meta.forward(x)
    XCTAssertTrue(y.array.allSatisfy(\.isFinite))
    // Without BatchNorm, training at batch 1 works and its gradients check out.
    let plain = MetaAconC(channels: 4, r: 2, useBatchNorm: false, rng: &rng)
    randomizeParameters(plain, -1, 1, using: &rng)
    XCTAssertTrue(plain.isTraining)
    let report = GradientChecker().assertGradients(plain, input: Tensor.normal([1, 4, 2, 2], using: &rng), "batch 1")
    XCTAssertEqual(Set(report?.tensors ?? []), Set(["input"] + plain.namedParameters().map(\.0)))
    XCTAssertEqual(report?.skipped, 0)
    // And with BatchNorm in evaluation mode, batch 1 has gradients too (running statistics).
    let evalReport = GradientChecker().assertGradients(meta, input: x, "batch 1, eval()")
    XCTAssertEqual(evalReport?.tensors.count, 1 + meta.namedParameters().count)
  }

  func testGradientsAccumulateAcrossBackwardCalls() throws {
    var rng = SeededGenerator(seed: 7)
    let layer = AconC(channels: 3, rng: &rng)
    let x = Tensor.normal([2, 3, 2, 2], using: &rng), dy = Tensor.normal([2, 3, 2, 2], using: &rng)
    _ = try layer.forward(x)
    layer.zeroGrad()
    _ = try layer.backward(dy)
    let once = layer.namedParameters().map { $0.1.grad.array }
    _ = try layer.backward(dy)
    let twice = layer.namedParameters().map { $0.1.grad.array }
    for (a, b) in zip(once, twice) { assertClose(b, a.map { 2 * Double($0) }, rtol: 1e-6, atol: 1e-7) }
  }

  func testShapeErrorsNameTheLayer() {
    var rng = SeededGenerator(seed: 8)
    let layer = AconC(channels: 4, rng: &rng)
    XCTAssertThrowsError(try layer.forward(Tensor(zeros: [2, 3, 2, 2]))) { error in
      XCTAssertTrue(String(describing: error).contains("AconC"))
      XCTAssertTrue(String(describing: error).contains("[2, 3, 2, 2]"))
    }
  }

  func testSeedNetworkSummaries() throws {
    let aconc = try ModelKind.seedAconc.build(input: [3, 32, 32], classes: 1, seed: 0)
    let s = try ModelSummary(model: aconc, inputShape: [64, 3, 32, 32])
    XCTAssertEqual(s.trainableParameters, 159_105)
    XCTAssertEqual(s.totalParameters, 159_105)
    XCTAssertTrue(s.rows.contains { $0.layer == "AconC-1" && $0.parameters == 192 && $0.outputShape == [64, 64, 7, 7] })
    XCTAssertTrue(s.description.contains("Total params: 159,105"))
    let relu = try ModelKind.seedRelu.build(input: [3, 32, 32], classes: 1, seed: 0)
    XCTAssertEqual(try ModelSummary(model: relu, inputShape: [64, 3, 32, 32]).totalParameters, 158_913)
    let meta = try ModelKind.seedMeta.build(input: [3, 32, 32], classes: 1, seed: 0)
    let ms = try ModelSummary(model: meta, inputShape: [64, 3, 32, 32])
    // fc1 64·16+16, bn1 32, fc2 16·64+64, bn2 128, p1 + p2 128 on top of the ReLU network.
    XCTAssertEqual(ms.trainableParameters, 158_913 + 1040 + 32 + 1088 + 128 + 128)
    XCTAssertEqual(ms.nonTrainableParameters, 2 * 16 + 2 * 64)
    let names = aconc.namedParameters().map(\.0)
    XCTAssertEqual(names, ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "conv3.weight", "conv3.bias",
      "acon1.p1", "acon1.p2", "acon1.beta", "conv4.weight", "conv4.bias", "linear1.weight", "linear1.bias",
      "linear2.weight", "linear2.bias"])
    let fm = try ModelKind.seedAconc.build(input: [1, 28, 28], classes: 10, seed: 0)
    XCTAssertEqual(try fm.outputShape(for: [5, 1, 28, 28]), [5, 10])
  }

  /// Meta-ACON's own loops (the per-plane means, the fused kernel, σ) give the same bits for
  /// any thread count. The shape is large enough that the fused kernel really splits over two
  /// workers (≥ 2·32K elements), while the β network's 1×1 products (at most 16·32·8
  /// multiply-adds) stay below OpenBLAS's threading threshold: above it OpenBLAS's sgemm
  /// itself rounds differently per thread count (BLASTests), and so would any layer using it.
  func testThreadCountDoesNotChangeMetaAcon() throws {
    let saved = Threads.count
    defer { Threads.count = saved }
    let shape = [8, 32, 17, 17]
    XCTAssertGreaterThanOrEqual(shape.reduce(1, *), 2 * 32 * 1024)
    func run(_ threads: Int) throws -> [Float] {
      Threads.count = threads
      var rng = SeededGenerator(seed: 9)
      let meta = MetaAconC(channels: 32, rng: &rng)
      let x = Tensor.normal(shape, using: &rng), dy = Tensor.normal(shape, using: &rng)
      let y = try meta.forward(x).array
      meta.zeroGrad()
      let dx = try meta.backward(dy).array
      return y + dx + meta.namedParameters().flatMap { $0.1.grad.array }
    }
    assertBitwiseEqual(try run(1), try run(2))
  }
}
