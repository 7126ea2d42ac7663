// ModelTests: whole networks. The seed network's summary (158,913 parameters and PyTorch's
// shapes and names), a small conv net overfitting one fixed batch with Adam, and gradient
// packing: packGradients keeps values, shares one allocation, and zeroGrad clears it all.
import NN
import TensorCore
import TestSupport
import XCTest

final class ModelTests: XCTestCase {
  /// The seed network: four 3×3 convolutions and two linear layers on 32×32 RGB images.
  static func seedNetwork(rng: inout SeededGenerator) -> Sequential {
    Sequential([
      ("conv1", Conv2D(inChannels: 3, outChannels: 32, kernelSize: 3, stride: 1, padding: 1, rng: &rng)),
      ("relu1", ReLU()),
      ("conv2", Conv2D(inChannels: 32, outChannels: 64, kernelSize: 3, stride: 2, padding: 0, rng: &rng)),
      ("relu2", ReLU()),
      ("conv3", Conv2D(inChannels: 64, outChannels: 64, kernelSize: 3, stride: 2, padding: 0, rng: &rng)),
      ("relu3", ReLU()),
      ("conv4", Conv2D(inChannels: 64, outChannels: 64, kernelSize: 3, stride: 2, padding: 1, rng: &rng)),
      ("relu4", ReLU()),
      ("flatten", Flatten()),
      ("linear1", Linear(inFeatures: 1024, outFeatures: 64, rng: &rng)),
      ("relu5", ReLU()),
      ("linear2", Linear(inFeatures: 64, outFeatures: 1, rng: &rng)),
    ])
  }

  func testSeedNetworkSummary() throws {
    var rng = SeededGenerator(seed: 1)
    let net = Self.seedNetwork(rng: &rng)
    let summary = try ModelSummary(model: net, inputShape: [64, 3, 32, 32])
    XCTAssertEqual(summary.totalParameters, 158_913)
    XCTAssertEqual(summary.trainableParameters, 158_913)
    XCTAssertEqual(summary.nonTrainableParameters, 0)
    XCTAssertEqual(net.parameterCount, 158_913)
    XCTAssertEqual(summary.rows.count, 12)
    let convAndLinear = summary.rows.filter { $0.layer.hasPrefix("Conv2D") || $0.layer.hasPrefix("Linear") }
    XCTAssertEqual(convAndLinear.map(\.outputShape),
      [[64, 32, 32, 32], [64, 64, 15, 15], [64, 64, 7, 7], [64, 64, 4, 4], [64, 64], [64, 1]])
    XCTAssertEqual(convAndLinear.map(\.parameters), [896, 18_496, 36_928, 36_928, 65_600, 65])
    XCTAssertEqual(summary.rows.first { $0.name == "flatten" }?.outputShape, [64, 1024])
    XCTAssertEqual(summary.rows.map(\.layer).prefix(4), ["Conv2D-1", "ReLU-1", "Conv2D-2", "ReLU-2"])
    XCTAssertEqual(summary.rows.map(\.name), net.layers.map(\.0))
    // Each row's input is the previous row's output.
    for i in 1..<summary.rows.count { XCTAssertEqual(summary.rows[i].inputShape, summary.rows[i - 1].outputShape) }
    XCTAssertTrue(summary.description.contains("Total params: 158,913"), summary.description)
    XCTAssertThrowsError(try ModelSummary(model: net, inputShape: [64, 3, 28, 28]), "28×28 does not flatten to 1024")
  }

  func testSeedNetworkParameterNamesAndShapes() {
    var rng = SeededGenerator(seed: 1)
    let params = Self.seedNetwork(rng: &rng).namedParameters()
    let expected: [(String, [Int])] = [
      ("conv1.weight", [32, 3, 3, 3]), ("conv1.bias", [32]),
      ("conv2.weight", [64, 32, 3, 3]), ("conv2.bias", [64]),
      ("conv3.weight", [64, 64, 3, 3]), ("conv3.bias", [64]),
      ("conv4.weight", [64, 64, 3, 3]), ("conv4.bias", [64]),
      ("linear1.weight", [64, 1024]), ("linear1.bias", [64]),
      ("linear2.weight", [1, 64]), ("linear2.bias", [1]),
    ]
    XCTAssertEqual(params.map(\.0), expected.map(\.0))
    XCTAssertEqual(params.map(\.1.shape), expected.map(\.1))
    XCTAssertEqual(params.filter { $0.1.decays }.map(\.0),
      ["conv1.weight", "conv2.weight", "conv3.weight", "conv4.weight", "linear1.weight", "linear2.weight"])
  }

  func testSeedNetworkForwardShapeOnASmallBatch() throws {
    var rng = SeededGenerator(seed: 2)
    let net = Self.seedNetwork(rng: &rng)
    let x = Tensor.uniform([2, 3, 32, 32], using: &rng)
    let y = try net.forward(x)
    XCTAssertEqual(y.shape, [2, 1])
    XCTAssertTrue(y.array.allSatisfy(\.isFinite))
    let dx = try net.backward(Tensor(shape: [2, 1], repeating: 1))
    XCTAssertEqual(dx.shape, [2, 3, 32, 32])
  }

  func testSummaryCountsBatchNormStatisticsAsNonTrainable() throws {
    var rng = SeededGenerator(seed: 3)
    let net = Sequential([("conv", Conv2D(inChannels: 3, outChannels: 8, kernelSize: 3, rng: &rng)),
                          ("bn", BatchNorm2D(channels: 8))])
    let s = try ModelSummary(model: net, inputShape: [1, 3, 8, 8])
    XCTAssertEqual(s.trainableParameters, 3 * 8 * 9 + 8 + 16)
    XCTAssertEqual(s.nonTrainableParameters, 16)
    XCTAssertEqual(s.totalParameters, s.trainableParameters + 16)
  }

  /// conv → ReLU → conv → ReLU → flatten → linear, on 8 random 3×8×8 images with 3 classes.
  func testSmallConvNetOverfitsOneBatch() throws {
    var rng = SeededGenerator(seed: 4)
    let net = Sequential([
      ("conv1", Conv2D(inChannels: 3, outChannels: 8, kernelSize: 3, padding: 1, rng: &rng)),
      ("relu1", ReLU()),
      ("conv2", Conv2D(inChannels: 8, outChannels: 8, kernelSize: 3, stride: 2, padding: 1, rng: &rng)),
      ("relu2", ReLU()),
      ("flatten", Flatten()),
      ("fc", Linear(inFeatures: 8 * 4 * 4, outFeatures: 3, rng: &rng)),
    ])
    let x = Tensor.normal([8, 3, 8, 8], using: &rng)
    let labels: [Int32] = [0, 1, 2, 0, 1, 2, 0, 1]
    let ce = CrossEntropyLoss()
    let opt = Adam(parameters: net.namedParameters(), learningRate: 1e-2)
    var losses: [Float] = []
    for _ in 0..<100 {
      let loss = try ce(try net.forward(x), labels: labels)
      losses.append(loss)
      net.zeroGrad()
      _ = try net.backward(try XCTUnwrap(ce.gradient))
      opt.step()
      if loss < 0.05 * losses[0] { break }
    }
    XCTAssertEqual(Double(losses[0]), log(3.0), accuracy: 0.3, "starts near chance")
    XCTAssertLessThan(losses.last!, 0.05 * losses[0], "loss \(losses.first!) → \(losses.last!) in \(losses.count) steps")
    XCTAssertTrue(losses.allSatisfy(\.isFinite))
    let predictions = try net.forward(x)
    for s in 0..<8 {
      let row = (0..<3).map { predictions[s * 3 + $0] }
      XCTAssertEqual(row.firstIndex(of: row.max()!), Int(labels[s]), "sample \(s) is memorised")
    }
  }

  func testPackGradientsThenZeroGradClearsEverything() throws {
    var rng = SeededGenerator(seed: 5)
    let net = Sequential([
      ("conv", Conv2D(inChannels: 2, outChannels: 3, kernelSize: 3, padding: 1, rng: &rng)),
      ("bn", BatchNorm2D(channels: 3)),
      ("relu", ReLU()),
      ("flatten", Flatten()),
      ("fc", Linear(inFeatures: 3 * 4 * 4, outFeatures: 2, rng: &rng)),
    ])
    let x = Tensor.uniform([2, 2, 4, 4], using: &rng)
    let dy = Tensor.uniform([2, 2], using: &rng)
    _ = try net.forward(x)
    _ = try net.backward(dy)
    let params = net.namedParameters()
    let before = params.map { $0.1.grad.array }
    XCTAssertTrue(before.allSatisfy { $0.contains { $0 != 0 } }, "every parameter got a gradient")

    let storage = net.packGradients()
    XCTAssertEqual(storage.capacity, net.parameterCount)
    var offset = 0
    for (i, (name, p)) in params.enumerated() {
      XCTAssertTrue(p.grad.storage === storage, name)
      XCTAssertEqual(p.grad.offset, offset, name)
      XCTAssertEqual(p.grad.array, before[i], "packing keeps \(name)'s gradient")
      offset += p.grad.count
    }

    net.zeroGrad()
    XCTAssertTrue(UnsafeBufferPointer(start: storage.pointer, count: storage.capacity).allSatisfy { $0 == 0 })
    XCTAssertTrue(params.allSatisfy { $0.1.grad.array.allSatisfy { $0 == 0 } })

    // Layers write into the packed storage from now on: the same backward gives the same grads.
    _ = try net.forward(x)
    _ = try net.backward(dy)
    for (i, (name, p)) in params.enumerated() {
      assertClose(p.grad.array, before[i].map(Double.init), rtol: 1e-6, atol: 1e-7, "after packing, \(name)")
    }
    net.zeroGrad()
    XCTAssertTrue(params.allSatisfy { $0.1.grad.array.allSatisfy { $0 == 0 } })
  }
}
