// TrainerTests: the training loop on the synthetic set: it learns, it is deterministic, a
// resumed run equals an uninterrupted one bit for bit (also after a kill between checkpoint
// writes, or before the first), checkpoints hold the state_dict with PyTorch's names, and bad
// input stops with a message instead of a crash.
import ACON
import Foundation
import NN
import TensorCore
import TestSupport
import Training
import XCTest

final class TrainerTests: XCTestCase {
  private var tmp: URL!

  override func setUpWithError() throws {
    tmp = FileManager.default.temporaryDirectory.appendingPathComponent("acon-trainer-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws { try? FileManager.default.removeItem(at: tmp) }

  /// Small 16×16 synthetic images keep the debug-build test run short.
  private func data(_ n: Int = 512) -> (ImageDataset, ImageDataset) {
    (SyntheticShapes.make(count: n, height: 16, width: 16, seed: 1), SyntheticShapes.make(count: 256, height: 16, width: 16, seed: 2))
  }

  private func options(_ model: ModelKind, steps: Int? = nil, epochs: Int = 1) -> TrainOptions {
    var o = TrainOptions()
    o.model = model.rawValue
    o.epochs = epochs
    o.maxSteps = steps
    o.batchSize = 32
    o.seed = 3
    return o
  }

  func testLearnsTheSyntheticSet() throws {
    let (train, test) = data(2048)
    var o = options(.seedAconc, epochs: 2)
    o.learningRate = 2e-3
    let t = try Trainer(options: o, train: train, test: test, normalization: Normalization(mean: [0.5], std: [0.5]))
    let records = try t.run()
    let acc = try XCTUnwrap(records.last?.testAccuracy)
    XCTAssertGreaterThan(acc, 0.6, "10 classes: chance is 0.1")
    XCTAssertLessThan(t.losses.suffix(10).reduce(0, +) / 10, t.losses.prefix(5).reduce(0, +) / 5 * 0.6)
  }

  func testSameSeedSameLossesBitForBit() throws {
    let (train, test) = data()
    for model in ModelKind.allCases {
      let a = try Trainer(options: options(model, steps: 6), train: train, test: test, normalization: .unit(channels: 1))
      try a.run()
      let b = try Trainer(options: options(model, steps: 6), train: train, test: test, normalization: .unit(channels: 1))
      try b.run()
      assertBitwiseEqual(a.losses, b.losses, "\(model)")
    }
  }

  func testResumeEqualsUninterrupted() throws {
    let (train, test) = data(256)
    for (model, opt) in [(ModelKind.seedMeta, OptimizerKind.adam), (.seedAconc, .sgd)] {
      var full = options(model, epochs: 2)
      full.optimizer = opt
      full.learningRate = 1e-2
      full.evaluateEachEpoch = false
      let whole = try Trainer(options: full, train: train, test: test, normalization: .unit(channels: 1))
      try whole.run()

      // The same run stopped after 5 steps (mid-epoch), then resumed from its checkpoint.
      var first = full
      first.checkpoint = tmp.appendingPathComponent("\(model.rawValue).safetensors").path
      first.maxSteps = 5
      let part1 = try Trainer(options: first, train: train, test: test, normalization: .unit(channels: 1))
      try part1.run()
      var second = first
      second.maxSteps = nil
      second.resume = true
      let part2 = try Trainer(options: second, train: train, test: test, normalization: .unit(channels: 1))
      try part2.run()
      assertBitwiseEqual(part1.losses + part2.losses, whole.losses, "\(model) \(opt) losses")
      for ((n, p), (_, q)) in zip(part2.model.namedParameters(), whole.model.namedParameters()) {
        assertBitwiseEqual(p.value.array, q.value.array, "\(model) \(n)")
      }
    }
  }

  /// The files a kill can leave, simulated: `damage` edits the checkpoint files of a run stopped
  /// after 6 steps (checkpoints every 2); `--resume` must then reach step 10 exactly like an
  /// uninterrupted run.
  private func assertResumesExactly(after damage: (_ model: String, _ stepFourModel: Data) throws -> Void,
    file: StaticString = #filePath, line: UInt = #line) throws {
    let (train, test) = data(512)
    var full = options(.seedMeta, steps: 10)
    full.evaluateEachEpoch = false
    let whole = try Trainer(options: full, train: train, test: test, normalization: .unit(channels: 1))
    try whole.run()

    var first = full
    first.checkpoint = tmp.appendingPathComponent("k-\(UUID().uuidString).safetensors").path
    first.checkpointEvery = 2
    first.maxSteps = 6
    let part1 = try Trainer(options: first, train: train, test: test, normalization: .unit(channels: 1))
    var stepFour = Data()
    part1.onStep = { info in  // after step 5's update, before any write: the files are step 4's
      if info.step == 5 { stepFour = FileManager.default.contents(atPath: first.checkpoint!) ?? Data() }
    }
    try part1.run()
    XCTAssertFalse(stepFour.isEmpty, file: file, line: line)
    try damage(first.checkpoint!, stepFour)

    var second = first
    second.maxSteps = 10
    second.resume = true
    let part2 = try Trainer(options: second, train: train, test: test, normalization: .unit(channels: 1))
    XCTAssertEqual(part2.resumedFromStep, 6, file: file, line: line)
    try part2.run()
    assertBitwiseEqual(part1.losses + part2.losses, whole.losses, "losses", file: file, line: line)
    for ((n, p), (_, q)) in zip(part2.model.namedParameters(), whole.model.namedParameters()) {
      assertBitwiseEqual(p.value.array, q.value.array, n, file: file, line: line)
    }
    let written = try SafetensorsFile.read(path: first.checkpoint!)
    XCTAssertEqual(written.metadata["step"], "10", file: file, line: line)
  }

  func testResumeAfterAKillBetweenTheStateAndModelWrites() throws {
    // The state file of step 6 with the model file of step 4 beside it.
    try assertResumesExactly { model, stepFour in try stepFour.write(to: URL(fileURLWithPath: model)) }
    // The first checkpoint's state file with no model file yet.
    try assertResumesExactly { model, _ in try FileManager.default.removeItem(atPath: model) }
  }

  func testResumeWithoutACheckpointStartsFromScratch() throws {
    let (train, test) = data(128)
    var o = options(.seedAconc, steps: 3)
    o.evaluateEachEpoch = false
    let plain = try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1))
    try plain.run()
    o.checkpoint = tmp.appendingPathComponent("new/none-yet.safetensors").path
    o.resume = true
    let t = try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1))
    XCTAssertNil(t.resumedFromStep)
    try t.run()
    assertBitwiseEqual(t.losses, plain.losses)
    XCTAssertTrue(FileManager.default.fileExists(atPath: o.checkpoint!))

    // A model file without its training state can't be resumed exactly: say so, don't start over.
    try FileManager.default.removeItem(atPath: Checkpoint(path: o.checkpoint!).statePath)
    XCTAssertThrowsError(try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1))) {
      let text = String(describing: $0)
      XCTAssertTrue(text.contains("none-yet.state.safetensors") && text.contains("--init"), text)
    }
  }

  func testInterruptedWritesAreRemovedAndIgnored() throws {
    let (train, test) = data(64)
    var o = options(.seedRelu, steps: 2)
    o.checkpoint = tmp.appendingPathComponent("m.safetensors").path
    try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1)).run()
    // What writes killed before their rename leave: a torn temporary file beside each target.
    let leftovers = [".m.safetensors.tmp.Ab12Cd", ".m.state.safetensors.tmp.xYz789", ".m.best.safetensors.tmp.000000"]
    let others = [".m.safetensors.tmp.toolong", "m.safetensors.tmp.Ab12Cd", ".other.safetensors.tmp.Ab12Cd"]
    for name in leftovers + others {
      try Data([1, 2, 3]).write(to: tmp.appendingPathComponent(name))
    }
    o.resume = true
    o.maxSteps = 3
    let t = try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1))
    XCTAssertEqual(t.resumedFromStep, 2)
    try t.run()
    let names = Set(try FileManager.default.contentsOfDirectory(atPath: tmp.path))
    XCTAssertEqual(names, Set(["m.safetensors", "m.state.safetensors", "m.best.safetensors"] + others))
    XCTAssertEqual(removeInterruptedWrites(of: tmp.appendingPathComponent("other.safetensors").path), [".other.safetensors.tmp.Ab12Cd"])
  }

  func testEpochEndCheckpointRecordsTheBestAccuracy() throws {
    // The best model is written before the checkpoint that records its accuracy, so a resume
    // after a kill between the two never skips or changes the best file.
    let (train, test) = data(96)
    var o = options(.seedRelu, steps: 2)
    o.checkpoint = tmp.appendingPathComponent("b.safetensors").path
    let t = try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1))
    let accuracy = try XCTUnwrap(try t.run().last?.testAccuracy)
    let state = try SafetensorsFile.read(path: Checkpoint(path: o.checkpoint!).statePath)
    XCTAssertEqual(state.metadata["best_accuracy"], String(accuracy))
    XCTAssertTrue(FileManager.default.fileExists(atPath: Checkpoint(path: o.checkpoint!).bestPath))
  }

  func testStopDuringTheLastEvaluationResumesToTheSameFiles() throws {
    // No checkpoint at the last step before the evaluation and the best model: a run stopped
    // during that evaluation (here by labels that make it throw) resumes from the one before,
    // evaluates and ends with exactly the files of an uninterrupted run.
    let (train, test) = data(256)
    var o = options(.seedAconc, steps: 4)
    o.checkpointEvery = 2
    o.checkpoint = tmp.appendingPathComponent("whole.safetensors").path
    try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1)).run()

    var broken = test
    broken.labels = Array(repeating: 99, count: broken.count)
    var p = o
    p.checkpoint = tmp.appendingPathComponent("stopped.safetensors").path
    XCTAssertThrowsError(try Trainer(options: p, train: train, test: broken, normalization: .unit(channels: 1)).run())
    p.resume = true
    let t = try Trainer(options: p, train: train, test: test, normalization: .unit(channels: 1))
    XCTAssertEqual(t.resumedFromStep, 2)
    try t.run()
    let (a, b) = (Checkpoint(path: o.checkpoint!), Checkpoint(path: p.checkpoint!))
    for (x, y) in [(a.path, b.path), (a.statePath, b.statePath), (a.bestPath, b.bestPath)] {
      XCTAssertEqual(FileManager.default.contents(atPath: x), FileManager.default.contents(atPath: y), y)
    }
  }

  func testCheckpointHoldsTheStateDict() throws {
    let (train, test) = data(128)
    var o = options(.seedMeta, steps: 2)
    o.checkpoint = tmp.appendingPathComponent("m.safetensors").path
    let t = try Trainer(options: o, train: train, test: test, normalization: .fashionMNIST)
    try t.run()
    let file = try SafetensorsFile.read(path: o.checkpoint!)
    XCTAssertEqual(file.metadata["model"], "seed-meta")
    XCTAssertEqual(file.metadata["input"], "1x16x16")
    XCTAssertEqual(file.metadata["classes"], "10")
    XCTAssertEqual(file.metadata["normalization_mean"], "0.286")
    guard case let .f32(shape, _) = file.tensors["conv1.weight"], case let .f32(pshape, _) = file.tensors["acon1.p1"],
      case let .i64(nshape, nvalues) = file.tensors["acon1.bn1.num_batches_tracked"], case let .f32(lshape, _) = file.tensors["linear1.weight"]
    else { return XCTFail("missing tensors: \(file.tensors.keys.sorted())") }
    XCTAssertEqual(shape, [32, 1, 3, 3])
    XCTAssertEqual(pshape, [1, 64, 1, 1])
    XCTAssertEqual(nshape, [])
    XCTAssertEqual(nvalues, [2])
    XCTAssertEqual(lshape, [64, 256])
    XCTAssertEqual(Set(file.tensors.keys), Set(stateDict(of: t.model).keys))
    // The model file alone evaluates like the live model.
    let fresh = try ModelKind.seedMeta.build(input: [1, 16, 16], classes: 10, seed: 99)
    try loadStateDict(file.tensors, into: fresh, file: o.checkpoint!)
    let e1 = try Trainer.evaluate(model: t.model, dataset: test, normalization: .fashionMNIST, batchSize: 32, classes: 10)
    let e2 = try Trainer.evaluate(model: fresh, dataset: test, normalization: .fashionMNIST, batchSize: 32, classes: 10)
    XCTAssertEqual(e1, e2)
    XCTAssertTrue(FileManager.default.fileExists(atPath: Checkpoint(path: o.checkpoint!).statePath))
  }

  func testCheckpointForAnotherModelIsRejected() throws {
    let (train, test) = data(64)
    var o = options(.seedRelu, steps: 1)
    o.checkpoint = tmp.appendingPathComponent("relu.safetensors").path
    try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1)).run()
    let aconc = try ModelKind.seedAconc.build(input: [1, 16, 16], classes: 10, seed: 0)
    XCTAssertThrowsError(try Checkpoint.loadModel(aconc, from: o.checkpoint!)) { error in
      let text = String(describing: error)
      XCTAssertTrue(text.contains("relu.safetensors") && text.contains("acon1.p1"), text)
    }
  }

  func testNonFiniteLossStopsWithTheStep() throws {
    let (train, test) = data(128)
    var o = options(.seedAconc, steps: 4)
    o.checkpoint = tmp.appendingPathComponent("nan.safetensors").path
    let t = try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1))
    let w = t.model.namedParameters().first { $0.0 == "linear2.bias" }!.1
    w.value[0] = .nan
    XCTAssertThrowsError(try t.run()) { error in
      XCTAssertTrue(String(describing: error).contains("step 1"), "\(error)")
    }
    XCTAssertFalse(FileManager.default.fileExists(atPath: o.checkpoint!), "no checkpoint is written after a NaN")
  }

  func testOutOfRangeOptionsAreRejected() {
    let (train, test) = data(32)
    var o = options(.seedRelu)
    o.learningRate = -1
    XCTAssertThrowsError(try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1))) {
      XCTAssertTrue(String(describing: $0).contains("--lr"))
    }
    o = options(.seedRelu)
    o.batchSize = 0
    XCTAssertThrowsError(try o.validate())
    o = options(.seedRelu)
    o.resume = true
    XCTAssertThrowsError(try o.validate()) { XCTAssertTrue(String(describing: $0).contains("--checkpoint")) }
  }

  func testJSONLLog() throws {
    let (train, test) = data(96)
    var o = options(.seedRelu)
    o.logPath = tmp.appendingPathComponent("log.jsonl").path
    try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1)).run()
    let lines = try String(contentsOfFile: o.logPath!, encoding: .utf8).split(separator: "\n")
    XCTAssertEqual(lines.count, 3 + 1)
    let first = try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as! [String: Any]
    XCTAssertEqual(first["step"] as? Int, 1)
    XCTAssertEqual(first["epoch"] as? Int, 1)
    XCTAssertNotNil(first["loss"] as? Double)
    XCTAssertNotNil(first["lr"] as? Double)
    XCTAssertNotNil(first["images_per_s"] as? Double)
    let last = try JSONSerialization.jsonObject(with: Data(lines[3].utf8)) as! [String: Any]
    XCTAssertNotNil(last["test_accuracy"] as? Double)
  }
  func testLogWriteFailureStopsTheRunNamingTheFile() throws {
    let (train, test) = data(96)
    var o = options(.seedRelu, steps: 2)
    o.logPath = "/dev/full"  // opens, but every write fails with ENOSPC
    let t = try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1))
    XCTAssertThrowsError(try t.run()) { XCTAssertTrue("\($0)".hasPrefix("/dev/full: cannot write the log file"), "\($0)") }
    o.logPath = tmp.appendingPathComponent("missing/log.jsonl").path
    XCTAssertThrowsError(try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1))) {
      XCTAssertTrue("\($0)".contains("missing/log.jsonl: cannot open the log file"), "\($0)")
    }
  }

  func testCheckedFileReportsFailedWrites() throws {
    let f = try CheckedFile(appendingTo: "/dev/full", truncate: false, what: "the output")
    XCTAssertThrowsError(try f.write(Array("x\n".utf8))) {
      XCTAssertEqual($0 as? FileIOError, FileIOError(path: "/dev/full", operation: "write the output", reason: String(cString: strerror(ENOSPC))))
    }
    let path = tmp.appendingPathComponent("ok.txt").path
    let g = try CheckedFile(appendingTo: path, truncate: true)
    try g.write(Array("one\n".utf8))
    try g.write(Array("two\n".utf8))
    try g.sync()
    XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), "one\ntwo\n")
  }

  func testShardDecodingEqualsTheWholeBatchsRows() {
    let (train, _) = data(100)
    for aug in [Augmentation.none, .cropAndFlip(padding: 4)] {
      let loader = BatchLoader(dataset: train, batchSize: 32, shuffle: true, dropLast: false, normalization: .unit(channels: 1),
        augment: aug, seed: 7)
      loader.startEpoch(2)
      let whole = Tensor(zeros: [32, 1, 16, 16]), part = Tensor(zeros: [32, 1, 16, 16])
      var labels: [Int32] = [], partLabels: [Int32] = []
      for b in 0..<loader.batchesPerEpoch {
        let n = loader.batch(b, into: whole, labels: &labels)
        let per = 16 * 16
        for rows in [0..<n, 0..<(n / 3), (n / 3)..<(2 * n / 3), (2 * n / 3)..<n, (n - 1)..<n] {
          loader.batch(b, rows: rows, into: part, labels: &partLabels)
          XCTAssertEqual(part.shape, [rows.count, 1, 16, 16])
          XCTAssertEqual(partLabels, Array(labels[rows]), "batch \(b) rows \(rows)")
          XCTAssertEqual(part.array, Array(whole.array[(rows.lowerBound * per)..<(rows.upperBound * per)]),
            "\(aug.text) batch \(b) rows \(rows): a shard must be the whole batch's rows bit for bit")
        }
      }
    }
  }

  func testResumeOnAnotherThreadCountWarnsWithBothCounts() throws {
    let saved = Threads.count
    defer { Threads.count = saved }
    let (train, test) = data(96)
    var o = options(.seedRelu, steps: 2)
    o.checkpoint = tmp.appendingPathComponent("threads.safetensors").path
    Threads.count = 1
    try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1)).run()
    o.maxSteps = 3
    o.resume = true
    let same = try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1))
    XCTAssertEqual(same.resumedFromStep, 2)
    XCTAssertNil(same.resumeWarning, "same thread count: no warning")
    Threads.count = 2
    let other = try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1))
    XCTAssertEqual(other.resumedFromStep, 2)
    let warning = try XCTUnwrap(other.resumeWarning)
    XCTAssertTrue(warning.contains("threads.state.safetensors was written by a run with 1 thread per process (now 2)"), warning)
    XCTAssertTrue(warning.contains("resume with --threads 1"), warning)
  }

  /// A log's step records (step, loss bits) and epoch records (epoch, train loss bits), for
  /// comparing runs; the rates differ from run to run.
  private func logSummary(_ path: String) throws -> (steps: [[Double]], epochs: [[Double]]) {
    var steps: [[Double]] = [], epochs: [[Double]] = []
    for line in try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n") {
      let r = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
      if let loss = r["loss"] as? Double {
        steps.append([Double(try XCTUnwrap(r["step"] as? Int)), loss])
      } else {
        epochs.append([Double(try XCTUnwrap(r["epoch"] as? Int)), try XCTUnwrap(r["train_loss"] as? Double)])
      }
    }
    return (steps, epochs)
  }

  func testResumedLogReadsAsOneUninterruptedRun() throws {
    // 256 examples, batch 32: 8 steps per epoch, 2 epochs. The interrupted run checkpoints every
    // 3 steps; its log is cut at step 11 (a kill after step 11, last checkpoint at step 9), and
    // a second interruption by --max-steps 5 leaves a partial epoch record behind.
    let (train, test) = data(256)
    var full = options(.seedAconc, epochs: 2)
    full.evaluateEachEpoch = false
    full.logPath = tmp.appendingPathComponent("whole.jsonl").path
    try Trainer(options: full, train: train, test: test, normalization: .unit(channels: 1)).run()

    var part = full
    part.logPath = tmp.appendingPathComponent("part.jsonl").path
    part.checkpoint = tmp.appendingPathComponent("log-resume.safetensors").path
    part.checkpointEvery = 3
    part.maxSteps = 5
    try Trainer(options: part, train: train, test: test, normalization: .unit(channels: 1)).run()
    part.resume = true
    part.maxSteps = 11
    let ck = Checkpoint(path: part.checkpoint!)
    var atStep9: [String: Data] = [:]
    let t = try Trainer(options: part, train: train, test: test, normalization: .unit(channels: 1))
    t.onStep = { info in
      if info.step == 10 {  // after step 10's update; the files on disk are step 9's
        for f in [ck.statePath, part.checkpoint!] { atStep9[f] = FileManager.default.contents(atPath: f) }
      }
    }
    try t.run()
    for (f, d) in atStep9 { try d.write(to: URL(fileURLWithPath: f)) }  // the kill
    part.maxSteps = nil
    let last = try Trainer(options: part, train: train, test: test, normalization: .unit(channels: 1))
    XCTAssertEqual(last.resumedFromStep, 9)
    try last.run()

    let want = try logSummary(full.logPath!), got = try logSummary(part.logPath!)
    XCTAssertEqual(got.steps.map { $0[0] }, Array(1...16).map(Double.init), "each step logged once, in order")
    XCTAssertEqual(got.steps.map { $0[1].bitPattern }, want.steps.map { $0[1].bitPattern }, "step losses")
    XCTAssertEqual(got.epochs.map { $0[0] }, [1, 2], "one record per epoch")
    XCTAssertEqual(got.epochs.map { $0[1].bitPattern }, want.epochs.map { $0[1].bitPattern },
      "epoch train losses, resumed mid-epoch included")
  }

  func testInitSeedsAResumeThatFindsNoCheckpoint() throws {
    let (train, test) = data(64)
    var o = options(.seedAconc, steps: 2)
    o.evaluateEachEpoch = false
    let source = tmp.appendingPathComponent("init.safetensors").path
    let donor = try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1))
    try donor.run()
    try Checkpoint.writeModel(donor.model, metadata: donor.metadata, step: 2, to: source)

    o.initFrom = source
    o.checkpoint = tmp.appendingPathComponent("fresh/run.safetensors").path
    o.resume = true
    let t = try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1))
    XCTAssertNil(t.resumedFromStep)
    for ((name, p), (_, q)) in zip(t.model.namedParameters(), donor.model.namedParameters()) {
      assertBitwiseEqual(p.value.array, q.value.array, "\(name) starts from --init")
    }
    // Once it has a checkpoint of its own, --resume continues from that, not from --init.
    try t.run()
    let again = try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1))
    XCTAssertEqual(again.resumedFromStep, 2)
    for ((name, p), (_, q)) in zip(again.model.namedParameters(), t.model.namedParameters()) {
      assertBitwiseEqual(p.value.array, q.value.array, "\(name) from the run's own checkpoint")
    }
  }

  func testResumeWithOtherSettingsNamesThem() throws {
    let (train, test) = data(64)
    var o = options(.seedRelu, steps: 1)
    o.evaluateEachEpoch = false
    o.checkpoint = tmp.appendingPathComponent("settings.safetensors").path
    try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1)).run()
    o.resume = true
    o.maxSteps = 2
    var changed = o
    changed.dropLast = true
    changed.learningRate = 5e-4
    XCTAssertThrowsError(try Trainer(options: changed, train: train, test: test, normalization: .unit(channels: 1))) {
      let text = String(describing: $0)
      XCTAssertTrue(text.contains("drop_last false (now true)") && text.contains("lr 0.001 (now 0.0005)")
        && text.contains("settings.state.safetensors"), text)
    }
    // More epochs or steps with a constant rate is fine.
    o.epochs = 3
    XCTAssertEqual(try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1)).resumedFromStep, 1)
  }


  func testCheckpointRecordsTheDataSet() throws {
    let (train, test) = data(64)
    var o = options(.seedRelu, steps: 1)
    o.evaluateEachEpoch = false
    o.dataName = DataChoice.synthetic.rawValue
    o.checkpoint = tmp.appendingPathComponent("data.safetensors").path
    try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1)).run()
    let file = try SafetensorsFile.read(path: o.checkpoint!)
    XCTAssertEqual(file.metadata["data"], "synthetic")
    let meta = try ModelMetadata(strings: file.metadata, file: o.checkpoint!, fallbackModel: nil, fallbackInput: [],
      fallbackClasses: 1, fallbackNormalization: .unit(channels: 1))
    XCTAssertEqual(meta.data, "synthetic")
    XCTAssertEqual(meta.strings["data"], "synthetic")
  }

  func testAutoWithADirectoryDoesNotFallBack() throws {
    let missing = tmp.appendingPathComponent("no-data-here").path
    XCTAssertThrowsError(try DataChoice.auto.load(directory: missing)) {
      let text = String(describing: $0)
      XCTAssertTrue(text.contains(missing) && text.contains("dataset-fashion-mnist"), text)
    }
    XCTAssertEqual(try DataChoice.synthetic.load(directory: nil, includeTrain: false).resolved, .synthetic)
  }

  func testResumeAfterAKillBetweenTheLastTwoWritesRepairsTheModelFile() throws {
    // The run's last checkpoint: its state file written, its model file still the one before
    // (the kill fell between the two writes). Resuming has nothing left to train, and must still
    // leave the model file of the uninterrupted run.
    let (train, test) = data(128)
    var o = options(.seedAconc, steps: 4)
    o.evaluateEachEpoch = false
    o.checkpoint = tmp.appendingPathComponent("last.safetensors").path
    o.checkpointEvery = 2
    let t = try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1))
    var stepTwo = Data()
    t.onStep = { info in
      if info.step == 3 { stepTwo = FileManager.default.contents(atPath: o.checkpoint!) ?? Data() }
    }
    try t.run()
    let final = try XCTUnwrap(FileManager.default.contents(atPath: o.checkpoint!))
    XCTAssertFalse(stepTwo.isEmpty)
    try stepTwo.write(to: URL(fileURLWithPath: o.checkpoint!))
    o.resume = true
    let resumed = try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1))
    XCTAssertEqual(resumed.resumedFromStep, 4)
    try resumed.run()
    XCTAssertEqual(FileManager.default.contents(atPath: o.checkpoint!), final, "the model file of step 4, byte for byte")
  }

  func testTwoClassesTrainAsTheSeedDoesWithOneLogit() throws {
    let train = SyntheticShapes.make(count: 512, height: 16, width: 16, classes: 2, seed: 1)
    let test = SyntheticShapes.make(count: 256, height: 16, width: 16, classes: 2, seed: 2)
    var o = options(.seedAconc, epochs: 3)
    o.checkpoint = tmp.appendingPathComponent("binary.safetensors").path
    let t = try Trainer(options: o, train: train, test: test, normalization: .unit(channels: 1))
    XCTAssertEqual(t.metadata.classes, 1)
    XCTAssertEqual(t.model.namedParameters().first { $0.0 == "linear2.weight" }?.1.value.shape, [1, 64])
    let records = try t.run()
    let accuracy = try XCTUnwrap(records.last?.testAccuracy)
    XCTAssertGreaterThan(accuracy, 0.8, "binary synthetic shapes: \(records.map { $0.testAccuracy ?? 0 })")
    XCTAssertLessThan(records.last!.trainLoss, records.first!.trainLoss)
    XCTAssertEqual(try SafetensorsFile.read(path: o.checkpoint!).metadata["classes"], "1")
  }
}

final class NumericGuardTests: XCTestCase {
  func testNonFiniteGradientNamesTheParameter() throws {
    let train = SyntheticShapes.make(count: 64, height: 16, width: 16, seed: 1)
    var o = TrainOptions()
    o.model = ModelKind.seedAconc.rawValue
    o.maxSteps = 2
    o.batchSize = 32
    let t = try Trainer(options: o, train: train, test: nil, normalization: .unit(channels: 1))
    // An infinite β breaks ACON-C's gradients (β·d = ∞·0 at d = 0): the first bad gradient in
    // backward order is one of acon1's.
    let beta = t.model.namedParameters().first { $0.0 == "acon1.beta" }!.1
    beta.value[0] = .infinity
    XCTAssertThrowsError(try t.run()) { error in
      let text = String(describing: error)
      XCTAssertTrue(text.contains("step 1"), text)
      XCTAssertTrue(text.contains("gradient of acon1."), text)
    }
  }

  func testClippingBoundsTheStep() throws {
    let train = SyntheticShapes.make(count: 64, height: 16, width: 16, seed: 1)
    var o = TrainOptions()
    o.model = ModelKind.seedRelu.rawValue
    o.maxSteps = 1
    o.batchSize = 32
    o.optimizer = .sgd
    o.momentum = 0
    o.learningRate = 1
    o.clipGradNorm = 1e-3
    let t = try Trainer(options: o, train: train, test: nil, normalization: .unit(channels: 1))
    let before = t.model.namedParameters().flatMap { $0.1.value.array }
    try t.run()
    let after = t.model.namedParameters().flatMap { $0.1.value.array }
    let step = zip(before, after).map { Double($0 - $1) * Double($0 - $1) }.reduce(0, +).squareRoot()
    XCTAssertLessThanOrEqual(step, 1.01e-3, "SGD with lr 1 moves by the clipped gradient norm")
    XCTAssertGreaterThan(step, 0.5e-3)
    o.clipGradNorm = -1
    XCTAssertThrowsError(try o.validate())
  }
}
