// SummaryAndLoadingTests: what `acon-train summary`, `--init`, `evaluate` and `train` rely on for
// the model zoo: the summary's multiply-accumulate column (counted by hand here), its expanded
// rows, loading a DataParallel (`module.`-prefixed) state dict, and BatchNorm at batch 1
// (training: an error in PyTorch's words; evaluation: works).
import Foundation
import NN
import TensorCore
import Training
import XCTest

final class SummaryAndLoadingTests: XCTestCase {
  private var tmp: URL!

  override func setUpWithError() throws {
    tmp = FileManager.default.temporaryDirectory.appendingPathComponent("acon-summary-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws { try? FileManager.default.removeItem(at: tmp) }

  /// conv 3→8 3×3/1 pad 1, [grouped 1×1 conv 8→8 (2 groups), BN, depthwise 3×3/2 pad 1], flatten, linear 128→5.
  private func smallNet() -> Sequential {
    var rng = SeededGenerator(seed: 5)
    return Sequential([
      ("conv", Conv2D(inChannels: 3, outChannels: 8, kernelSize: (3, 3), padding: (1, 1), rng: &rng)),
      ("block", Sequential([
        Conv2D(inChannels: 8, outChannels: 8, kernelSize: (1, 1), groups: 2, rng: &rng),
        BatchNorm2D(channels: 8),
        DepthwiseConv2D(channels: 8, kernelSize: (3, 3), stride: (2, 2), padding: (1, 1), rng: &rng),
      ])),
      ("flatten", Flatten()),
      ("fc", Linear(inFeatures: 128, outFeatures: 5, rng: &rng)),
    ])
  }

  func testSummaryCountsMultiplyAccumulatesPerImage() throws {
    let net = smallNet()
    // Per image: output elements × (Cin/groups)·kH·kW for convolutions, in·out for linear layers.
    let conv = 8 * 8 * 8 * 3 * 9, grouped = 8 * 8 * 8 * 4, depthwise = 8 * 4 * 4 * 9, fc = 128 * 5
    let s = try ModelSummary(model: net, inputShape: [4, 3, 8, 8])
    XCTAssertEqual(s.rows.map(\.name), ["conv", "block", "flatten", "fc"])
    XCTAssertEqual(s.rows.map(\.multiplyAccumulates), [conv, grouped + depthwise, 0, fc])
    XCTAssertEqual(s.totalMultiplyAccumulates, conv + grouped + depthwise + fc)
    XCTAssertEqual(try ModelSummary.multiplyAccumulates(of: net, inputShape: [1, 3, 8, 8]), s.totalMultiplyAccumulates)
    XCTAssertTrue(s.description.contains("MACs/image"), s.description)
    XCTAssertTrue(s.description.contains("Multiply-accumulates per image: 17,664"), s.description)

    let e = try ModelSummary(model: net, inputShape: [4, 3, 8, 8], expandingSequentials: true)
    XCTAssertEqual(e.rows.map(\.name), ["conv", "block.0", "block.1", "block.2", "flatten", "fc"])
    XCTAssertEqual(e.rows.map(\.multiplyAccumulates), [conv, grouped, 0, depthwise, 0, fc])
    XCTAssertEqual(e.rows[3].outputShape, [4, 8, 4, 4])
    XCTAssertEqual(e.totalParameters, s.totalParameters)
    XCTAssertTrue(e.description.contains("block.2 "), e.description)
    // A custom counter replaces the default for every row.
    let c = try ModelSummary(model: net, inputShape: [4, 3, 8, 8]) { m, shape in
      XCTAssertEqual(shape.first, 1, "the counter sees one image")
      return m is Linear ? 7 : 0
    }
    XCTAssertEqual(c.totalMultiplyAccumulates, 7)
  }

  func testDataParallelPrefixIsStrippedWhenEveryKeyHasIt() throws {
    let source = smallNet()
    for (_, p) in source.namedParameters() { for i in 0..<p.value.count { p.value.data[i] = Float(i % 7) * 0.25 - 0.5 } }
    let prefixed = Dictionary(uniqueKeysWithValues: source.stateDict().map { ("module." + $0.key, $0.value) })
    let path = tmp.appendingPathComponent("dp.safetensors").path
    try SafetensorsFile(tensors: prefixed).write(path: path)

    let target = smallNet()
    try Checkpoint.loadModel(target, from: path)
    for ((name, a), (_, b)) in zip(source.namedParameters(), target.namedParameters()) {
      XCTAssertEqual(a.value.array, b.value.array, name)
    }
    let other = smallNet()
    _ = try Checkpoint.load(other, from: path)
    XCTAssertEqual(other.namedParameters().first?.1.value.array, source.namedParameters().first?.1.value.array)

    // Only when every key has it: a mixed file keeps its keys and fails strictly, naming them.
    var mixed = prefixed
    mixed["fc.bias"] = mixed.removeValue(forKey: "module.fc.bias")
    XCTAssertEqual(Set(Checkpoint.strippingDataParallelPrefix(mixed).keys), Set(mixed.keys))
    try SafetensorsFile(tensors: mixed).write(path: path)
    XCTAssertThrowsError(try Checkpoint.loadModel(smallNet(), from: path)) { error in
      XCTAssertTrue("\(error)".contains("module.conv.weight"), "\(error)")
    }
    XCTAssertEqual(Checkpoint.strippingDataParallelPrefix([String: Int]()).count, 0)
  }

  func testBatchNormAtBatchOneTrainsNeverAndEvaluatesFine() throws {
    var rng = SeededGenerator(seed: 9)
    // BatchNorm after global pooling: N·H·W = N.
    let net = Sequential([
      ("conv", Conv2D(inChannels: 1, outChannels: 4, kernelSize: (3, 3), padding: (1, 1), rng: &rng)),
      ("pool", GlobalAvgPool2D()), ("bn", BatchNorm2D(channels: 4)), ("flatten", Flatten()),
      ("fc", Linear(inFeatures: 4, outFeatures: 10, rng: &rng)),
    ])
    let one = Tensor(shape: [1, 1, 16, 16], repeating: 0.5)
    XCTAssertThrowsError(try net.forward(one)) { error in
      let message = "\(error)"
      XCTAssertTrue(message.contains("BatchNorm2D") && message.contains("Expected more than 1 value per channel when training"),
        message)
    }
    XCTAssertEqual(try net.forward(Tensor(shape: [2, 1, 16, 16], repeating: 0.5)).shape, [2, 10])

    let test = SyntheticShapes.make(count: 5, height: 16, width: 16, seed: 2)
    let e = try Training.evaluate(net, on: test, normalization: .unit(channels: 1), batchSize: 1)
    XCTAssertEqual(e.examples, 5)
    XCTAssertTrue(e.loss.isFinite)
    XCTAssertTrue(net.isTraining, "evaluate restores the mode")

    // The trainer stops at the first step of a batch-1 run of Meta-ACON, naming the layer type.
    var o = TrainOptions()
    o.model = ModelKind.seedMeta.rawValue
    o.batchSize = 1
    o.maxSteps = 1
    let train = SyntheticShapes.make(count: 8, height: 16, width: 16, seed: 1)
    let t = try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1))
    XCTAssertThrowsError(try t.run()) { error in
      XCTAssertTrue("\(error)".contains("MetaAconC"), "\(error)")
    }
  }
}
