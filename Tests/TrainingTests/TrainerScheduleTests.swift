// TrainerScheduleTests: the trainer's step schedule with a period and factor (StepLR's
// step_size and gamma), the linear decay to 0, label smoothing, their validation, and their
// place in the settings a resume checks.
import Foundation
import NN
import TensorCore
import TestSupport
import Training
import XCTest

final class TrainerScheduleTests: XCTestCase {
  private var tmp: URL!

  override func setUpWithError() throws {
    tmp = FileManager.default.temporaryDirectory.appendingPathComponent("acon-schedule-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws { try? FileManager.default.removeItem(at: tmp) }

  /// 96 tiny images in batches of 32: 3 steps per epoch.
  private func data() -> (ImageDataset, ImageDataset) {
    (SyntheticShapes.make(count: 96, height: 8, width: 8, seed: 1), SyntheticShapes.make(count: 32, height: 8, width: 8, seed: 2))
  }

  private func options() -> TrainOptions {
    var o = TrainOptions()
    o.model = ModelKind.seedRelu.rawValue
    o.batchSize = 32
    o.seed = 3
    o.evaluateEachEpoch = false
    return o
  }

  /// The learning rate of every step of a run.
  private func rates(_ o: TrainOptions) throws -> [Float] {
    let (train, test) = data()
    let t = try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1))
    var lr: [Float] = []
    t.onStep = { lr.append($0.learningRate) }
    try t.run()
    return lr
  }

  func testStepScheduleHonoursStepSizeAndGamma() throws {
    var o = options()
    o.epochs = 5
    o.learningRate = 0.08
    o.schedule = .step
    o.stepSize = 2
    o.gamma = 0.5
    // StepLR(step_size=2, gamma=0.5) stepped per epoch: epochs 1–2 at 0.08, 3–4 at 0.04, 5 at 0.02.
    let want = [0.08, 0.08, 0.04, 0.04, 0.02].flatMap { [Double](repeating: $0, count: 3) }
    assertClose(try rates(o), want, rtol: 1e-6, atol: 0)
    // The defaults keep the old behaviour: ×0.1 every epoch.
    o.stepSize = 1
    o.gamma = 0.1
    o.epochs = 2
    assertClose(try rates(o), [0.08, 0.08, 0.08, 0.008, 0.008, 0.008], rtol: 1e-6, atol: 0)
  }

  func testLinearScheduleDecaysToZeroOverTheRun() throws {
    var o = options()
    o.epochs = 2
    o.learningRate = 0.06
    o.schedule = .linear
    // 6 steps: 0.06·(1 − t/6).
    assertClose(try rates(o), (0..<6).map { 0.06 * (1 - Double($0) / 6) }, rtol: 1e-6, atol: 1e-9)
    // After 2 warm-up steps (0.03, 0.06), 1 − t/4 over the other 4.
    o.warmupSteps = 2
    assertClose(try rates(o), [0.03, 0.06, 0.06, 0.045, 0.03, 0.015], rtol: 1e-6, atol: 1e-9)
  }

  func testLabelSmoothingChangesTheLossAsPyTorchDoes() throws {
    let (train, test) = data()
    var o = options()
    o.maxSteps = 1
    let plain = try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1))
    try plain.run()
    o.labelSmoothing = 0.2
    let smooth = try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1))
    try smooth.run()
    // Same initial weights and first batch: the smoothed loss is PyTorch's formula on the same
    // logits, which CrossEntropyLoss(labelSmoothing:) computes (tested against its Double twin).
    let model = try XCTUnwrap(ModelKind(rawValue: o.model)).build(input: [1, 8, 8], classes: 10, seed: o.seed)
    let loader = BatchLoader(dataset: train, batchSize: 32, shuffle: true, dropLast: false,
      normalization: .unit(channels: 1), augment: o.augmentation, seed: o.seed)
    loader.startEpoch(0)
    let x = Tensor(zeros: [32, 1, 8, 8])
    var labels: [Int32] = []
    _ = loader.batch(0, into: x, labels: &labels)
    let logits = try model.forward(x)
    XCTAssertEqual(try XCTUnwrap(plain.losses.first), try CrossEntropyLoss()(logits, labels: labels))
    XCTAssertEqual(try XCTUnwrap(smooth.losses.first), try CrossEntropyLoss(labelSmoothing: 0.2)(logits, labels: labels))
    XCTAssertNotEqual(plain.losses.first, smooth.losses.first)
    let binary = SyntheticShapes.make(count: 64, height: 8, width: 8, classes: 2, seed: 1)
    XCTAssertThrowsError(try Trainer(options: o, train: binary, test: nil, normalization: .unit(channels: 1))) {
      XCTAssertTrue("\($0)".contains("--label-smoothing"), "\($0)")
    }
  }

  func testOutOfRangeValuesAreRejectedByName() {
    for (change, name) in [({ (o: inout TrainOptions) in o.stepSize = 0 }, "--step-size"),
                           ({ (o: inout TrainOptions) in o.gamma = 0 }, "--gamma"),
                           ({ (o: inout TrainOptions) in o.gamma = .nan }, "--gamma"),
                           ({ (o: inout TrainOptions) in o.labelSmoothing = 1 }, "--label-smoothing"),
                           ({ (o: inout TrainOptions) in o.labelSmoothing = -0.1 }, "--label-smoothing")] {
      var o = options()
      change(&o)
      XCTAssertThrowsError(try o.validate()) { XCTAssertTrue("\($0)".contains(name), "\($0)") }
    }
  }

  func testResumeChecksTheNewSettings() throws {
    let (train, test) = data()
    var o = options()
    o.epochs = 2
    o.maxSteps = 1
    o.schedule = .step
    o.stepSize = 2
    o.gamma = 0.5
    o.labelSmoothing = 0.1
    o.checkpoint = tmp.appendingPathComponent("s.safetensors").path
    try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1)).run()
    o.resume = true
    o.maxSteps = 2
    for (change, text) in [({ (o: inout TrainOptions) in o.stepSize = 1 }, "step_size 2 (now 1)"),
                           ({ (o: inout TrainOptions) in o.gamma = 0.1 }, "gamma 0.5 (now 0.1)"),
                           ({ (o: inout TrainOptions) in o.labelSmoothing = 0 }, "label_smoothing 0.1 (now unset)"),
                           ({ (o: inout TrainOptions) in o.schedule = .linear }, "schedule step (now linear)")] {
      var changed = o
      change(&changed)
      XCTAssertThrowsError(try Trainer(options: changed, train: train, test: test, normalization: .unit(channels: 1))) {
        XCTAssertTrue("\($0)".contains(text), "\($0)")
      }
    }
    XCTAssertEqual(try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1)).resumedFromStep, 1)
  }
}
