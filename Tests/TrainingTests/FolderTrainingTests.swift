// FolderTrainingTests: training streamed from the fixture image folder (FolderTrainingData,
// ImageLoader workers): the checkpoint records the class names, the split and both pipelines,
// and evaluation and prediction through what it records reproduce the trainer's; a resume after
// an interruption gives the same weights bit for bit, with 1 or 2 workers on either side.
import Foundation
import ImageData
import NN
import TensorCore
import TestSupport
import XCTest

@testable import Training

final class FolderTrainingTests: XCTestCase {
  private let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("ImageDataTests/Fixtures/folder").path
  private var tmp: String!

  override func setUpWithError() throws {
    tmp = NSTemporaryDirectory() + "folder-training-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: tmp) }

  private func options(steps: Int? = nil, epochs: Int = 2) -> TrainOptions {
    var o = TrainOptions()
    o.model = "seed-aconc"
    o.epochs = epochs
    o.maxSteps = steps
    o.batchSize = 4
    o.seed = 7
    o.learningRate = 1e-2
    return o
  }

  func testCheckpointRecordsNamesSplitAndPipelines() throws {
    // train/ only: the validation split is carved (30%, seed 5); the official BGR convention and jitter.
    let dir = tmp + "/data"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    try FileManager.default.copyItem(atPath: fixture + "/train", toPath: dir + "/train")
    let fo = FolderDataOptions(imageSize: 16, valSplit: 0.3, workers: 2, seed: 5, colorJitter: 0.4, convention: .bgr255)
    let folder = try FolderTrainingData.load(directory: dir, options: fo)
    XCTAssertEqual(folder.train.count, 7)
    XCTAssertEqual(folder.val.count, 3)
    var o = options()
    o.checkpoint = tmp + "/m.safetensors"
    let t = try Trainer(options: o, folder: folder)
    XCTAssertEqual(t.trainSet.count, 0, "nothing of the folder is held in memory")
    XCTAssertEqual(t.trainSet.imageShape, [3, 16, 16])
    try t.run()
    XCTAssertEqual(t.losses.count, 4)
    let last = try XCTUnwrap(t.epochs.last)
    let wait = try XCTUnwrap(last.dataWait, "a streamed run reports its wait for data")
    XCTAssertTrue((0...1).contains(wait))

    let file = try SafetensorsFile.read(path: o.checkpoint!)
    let meta = try ModelMetadata(strings: file.metadata, file: o.checkpoint!, fallbackModel: nil, fallbackInput: [1, 1, 1],
      fallbackClasses: 1, fallbackNormalization: .unit(channels: 1))
    XCTAssertEqual(meta.data, "folder")
    XCTAssertEqual(meta.classNames, ["Zebra", "ant", "bee"])
    XCTAssertEqual(meta.valSplit, 0.3)
    XCTAssertEqual(meta.splitSeed, 5)
    XCTAssertEqual(meta.trainTransform, ImagePipeline.train(size: 16, jitter: 0.4, convention: .bgr255))
    XCTAssertEqual(meta.evalTransform, ImagePipeline.eval(size: 16, convention: .bgr255))
    XCTAssertTrue(file.metadata["eval_transform"]!.hasSuffix("ToBGRTensor()"), file.metadata["eval_transform"]!)
    XCTAssertEqual(meta.input, [3, 16, 16])
    XCTAssertEqual(meta.classes, 3)

    // `evaluate`: the split and pipeline from the metadata alone give the trainer's numbers.
    let again = try FolderTrainingData.load(
      directory: dir, options: FolderDataOptions(imageSize: meta.input[1], valSplit: meta.valSplit, workers: 1, seed: meta.splitSeed!))
    XCTAssertEqual(again.val.paths, folder.val.paths)
    let net = try ModelFactory.build(meta.model, factories: [.seedModels], input: meta.input, classes: meta.classes, seed: 0)
    try net.loadStateDict(file.tensors, file: o.checkpoint!)
    let loader = ImageLoader(folder: again.val, pipeline: meta.evalTransform!, batchSize: 2, shuffle: false, seed: 0, workers: 1)
    let e = try evaluate(net, on: loader)
    XCTAssertEqual(e.examples, 3)
    XCTAssertEqual(e.accuracy, try XCTUnwrap(last.testAccuracy))
    XCTAssertEqual(e.loss, try XCTUnwrap(last.testLoss), accuracy: 1e-5)

    // `predict`: one image through the recorded pipeline is that image's row of the evaluation batch.
    let x = Tensor(zeros: [1, 3, 16, 16])
    var rng = SeededGenerator(seed: 0)
    let bytes = try ImageFile.read(again.val.paths[0])
    try bytes.withUnsafeBytes { try ImageProcessor().process($0, name: "x", pipeline: meta.evalTransform!, rng: &rng, into: x.data) }
    let batch = Tensor(zeros: [2, 3, 16, 16])
    var labels = [Int32]()
    try loader.batch(0, epoch: 0, into: batch, labels: &labels)
    assertBitwiseEqual(Array(batch.array.prefix(3 * 256)), x.array, "the eval pipeline's image")
    // The BGR convention: plane 0 is blue, values 0–255.
    XCTAssertTrue(x.array.allSatisfy { $0 >= 0 && $0 <= 255 && $0 == $0.rounded() })
  }

  func testMetadataErrorsNameTheKey() {
    let base = ["model": "seed-aconc", "input": "3x16x16", "classes": "3"]
    func error(_ extra: [String: String]) -> String {
      do {
        _ = try ModelMetadata(strings: base.merging(extra) { $1 }, file: "f.safetensors", fallbackModel: nil, fallbackInput: [1, 1, 1],
          fallbackClasses: 1, fallbackNormalization: .unit(channels: 1))
        return "no error"
      } catch { return "\(error)" }
    }
    XCTAssertTrue(error(["class_names": #"["a","b"]"#]).contains("class_names is not a JSON array of 3 strings"))
    XCTAssertTrue(error(["val_split": "0.2"]).contains("no split_seed"))
    XCTAssertTrue(error(["val_split": "2", "split_seed": "1"]).contains("val_split '2'"))
    XCTAssertTrue(error(["eval_transform": "Resize(size=18) | CenterCrop(size=(8, 8)) | ToBGRTensor()"]).contains("metadata eval_transform gives"))
    XCTAssertTrue(error(["train_transform": "Blur(3) | ToBGRTensor()"]).contains("train_transform"))
    XCTAssertEqual(error(["class_names": #"["a","b","c"]"#, "val_split": "0.2", "split_seed": "9"]), "no error")
  }

  func testFolderRunRefusesTheInMemoryAugmentation() throws {
    let folder = try FolderTrainingData.load(directory: fixture, options: FolderDataOptions(imageSize: 16))
    var o = options()
    o.horizontalFlip = true
    XCTAssertThrowsError(try Trainer(options: o, folder: folder)) { e in XCTAssertTrue("\(e)".contains("--flip"), "\(e)") }
  }

  /// An uninterrupted run with `wholeWorkers`, and the same run stopped after 4 steps (mid-epoch
  /// 2, checkpoints every 2) with `firstWorkers`, its model file lost as a kill between the two
  /// writes can leave it, then resumed with `secondWorkers`: the same losses and weights, bit for bit.
  private func assertResumesExactly(wholeWorkers: Int, firstWorkers: Int, secondWorkers: Int) throws {
    func folder(_ workers: Int) throws -> FolderTrainingData {
      try FolderTrainingData.load(directory: fixture, options: FolderDataOptions(imageSize: 16, workers: workers))
    }
    let whole = try Trainer(options: options(epochs: 3), folder: try folder(wholeWorkers))
    try whole.run()
    XCTAssertEqual(whole.losses.count, 9)

    var first = options(steps: 5, epochs: 3)
    first.checkpoint = tmp + "/r-\(firstWorkers)-\(secondWorkers).safetensors"
    first.checkpointEvery = 2
    let part1 = try Trainer(options: first, folder: try folder(firstWorkers))
    try part1.run()
    try FileManager.default.removeItem(atPath: first.checkpoint!)
    var second = first
    second.maxSteps = nil
    second.resume = true
    let part2 = try Trainer(options: second, folder: try folder(secondWorkers))
    XCTAssertEqual(part2.resumedFromStep, 5)
    try part2.run()
    let tag = "workers \(wholeWorkers) vs \(firstWorkers) then \(secondWorkers)"
    assertBitwiseEqual(part1.losses + part2.losses, whole.losses, "losses, \(tag)")
    for ((n, p), (_, q)) in zip(part2.model.namedParameters(), whole.model.namedParameters()) {
      assertBitwiseEqual(p.value.array, q.value.array, "\(n), \(tag)")
    }
    XCTAssertEqual(part2.epochs.last?.testLoss, whole.epochs.last?.testLoss, tag)
  }

  func testResumeIsExactWithOneOrTwoWorkers() throws {
    try assertResumesExactly(wholeWorkers: 1, firstWorkers: 2, secondWorkers: 1)
    try assertResumesExactly(wholeWorkers: 2, firstWorkers: 1, secondWorkers: 2)
  }
}
