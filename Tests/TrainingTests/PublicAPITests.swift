// PublicAPITests: the library as a PyTorch user writes it (issue 15): any Module trained by the
// Trainer with checkpoints and exact resume, checkpoint metadata naming any model, state dicts
// as methods, data sets that know their classes and normalisation, loaders as sequences, the
// evaluation helpers, LR schedulers attached to the optimizer, losses that return value and
// gradient, the automatic fast path (conv + ReLU fusion, one workspace), and clear errors.
import ACON
import Foundation
import NN
import TensorCore
import TestSupport
import Training
import XCTest

final class PublicAPITests: XCTestCase {
  private var tmp: URL!

  override func setUpWithError() throws {
    tmp = FileManager.default.temporaryDirectory.appendingPathComponent("acon-api-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws { try? FileManager.default.removeItem(at: tmp) }

  /// The custom CNN: conv → BatchNorm → AconC → max-pool → conv → MetaAconC → global pool → linear.
  private func customNet(classes: Int = 10, seed: UInt64 = 7) -> Sequential {
    var rng = SeededGenerator(seed: seed)
    return Sequential([
      ("conv1", Conv2D(inChannels: 1, outChannels: 8, kernelSize: 3, padding: 1, rng: &rng)),
      ("bn1", BatchNorm2D(channels: 8)),
      ("acon1", AconC(channels: 8, rng: &rng)),
      ("pool1", MaxPool2D(kernelSize: 2)),
      ("conv2", Conv2D(inChannels: 8, outChannels: 16, kernelSize: 3, stride: 2, padding: 1, rng: &rng)),
      ("acon2", MetaAconC(channels: 16, rng: &rng)),
      ("pool2", GlobalAvgPool2D()),
      ("flatten", Flatten()),
      ("fc", Linear(inFeatures: 16, outFeatures: classes, rng: &rng)),
    ])
  }

  private func data() -> (train: ImageDataset, test: ImageDataset) {
    (SyntheticShapes.make(count: 192, height: 16, width: 16, seed: 1), SyntheticShapes.make(count: 64, height: 16, width: 16, seed: 2))
  }

  private func weights(_ m: Module) -> [[Float]] { m.namedParameters().map { $0.1.value.array } }

  // MARK: - Trainer with any Module

  func testCustomModuleTrainsCheckpointsAndResumesBitForBit() throws {
    let (train, test) = data()
    var o = TrainOptions()
    o.epochs = 2
    o.batchSize = 32
    o.schedule = .step
    o.gamma = 0.5
    o.clipGradNorm = 5
    o.checkpoint = tmp.appendingPathComponent("a/net.safetensors").path
    o.logPath = tmp.appendingPathComponent("a/log.jsonl").path
    let whole = try Trainer(model: customNet(), name: "my-net", options: o, train: train, test: test)
    try whole.run()
    XCTAssertEqual(whole.losses.count, 12)
    XCTAssertTrue(whole.losses.allSatisfy(\.isFinite))

    // The same run cut after 5 steps, then resumed from its checkpoint by a fresh model.
    var cut = o
    cut.checkpoint = tmp.appendingPathComponent("b/net.safetensors").path
    cut.logPath = tmp.appendingPathComponent("b/log.jsonl").path
    cut.checkpointEvery = 5
    cut.maxSteps = 5
    let first = try Trainer(model: customNet(), name: "my-net", options: cut, train: train, test: test)
    try first.run()
    var rest = cut
    rest.maxSteps = nil
    rest.resume = true
    let second = try Trainer(model: customNet(seed: 99), name: "my-net", options: rest, train: train, test: test)
    XCTAssertEqual(second.resumedFromStep, 5)
    try second.run()
    XCTAssertEqual(first.losses + second.losses, whole.losses)
    XCTAssertEqual(weights(second.model), weights(whole.model))

    // The checkpoint names the model and records what evaluating it needs.
    let meta = try Checkpoint.load(customNet(seed: 5), from: o.checkpoint!)
    XCTAssertEqual(meta.model, "my-net")
    XCTAssertEqual(meta.input, [1, 16, 16])
    XCTAssertEqual(meta.classes, 10)
    XCTAssertEqual(meta.normalization, train.normalization)

    // Resuming under another model name is refused, naming both.
    var other = rest
    other.checkpoint = o.checkpoint
    XCTAssertThrowsError(try Trainer(model: customNet(), name: "other-net", options: other, train: train, test: test)) {
      XCTAssertTrue(String(describing: $0).contains("model my-net"), "\($0)")
    }
  }

  func testTrainerTakesItsOwnLossOptimizerAndScheduler() throws {
    let (train, _) = data()
    let net = customNet()
    let optimizer = SGD(parameters: net.namedParameters(), learningRate: 0.1, momentum: 0.9)
    let scheduler = LRScheduler.stepLR(optimizer, stepSize: 2, gamma: 0.5)
    var o = TrainOptions()
    o.maxSteps = 5
    o.batchSize = 32
    let t = try Trainer(model: net, loss: CrossEntropyLoss(labelSmoothing: 0.1), optimizer: optimizer, scheduler: scheduler,
      options: o, train: train)
    var rates: [Float] = []
    t.onStep = { rates.append($0.learningRate) }
    try t.run()
    XCTAssertEqual(rates, [0.1, 0.1, 0.05, 0.05, 0.025])
    XCTAssertEqual(optimizer.stepCount, 5)
    XCTAssertFalse(net.propagatesInputGradient, "the trainer skips the first layer's input gradient")

    let elsewhere = LRScheduler(SGD(parameters: net.namedParameters(), learningRate: 1), schedule: .constant)
    XCTAssertThrowsError(try Trainer(model: customNet(), optimizer: optimizer, scheduler: elsewhere, options: o, train: train))
  }

  func testTrainerRejectsAModelWithTheWrongNumberOfOutputs() {
    let (train, _) = data()
    XCTAssertThrowsError(try Trainer(model: customNet(classes: 7), name: "seven", train: train)) {
      XCTAssertTrue(String(describing: $0).contains("seven gives 7 outputs, but the data set synthetic has 10 classes"), "\($0)")
    }
  }

  func testModelFactoriesBuildByName() throws {
    let tiny = ModelFactory(names: ["tiny"]) { _, input, classes, seed in
      var rng = SeededGenerator(seed: seed)
      return Sequential([("flatten", Flatten()), ("fc", Linear(inFeatures: input.reduce(1, *), outFeatures: classes, rng: &rng))])
    }
    let (train, test) = data()
    var o = TrainOptions()
    o.model = "tiny"
    o.maxSteps = 2
    o.batchSize = 32
    let t = try Trainer(options: o, train: train, test: test, factories: [.seedModels, tiny])
    try t.run()
    XCTAssertEqual(t.metadata.model, "tiny")
    XCTAssertEqual(t.model.namedParameters().map(\.0), ["fc.weight", "fc.bias"])
    o.model = "huge"
    XCTAssertThrowsError(try Trainer(options: o, train: train, test: test, factories: [.seedModels, tiny])) {
      XCTAssertEqual(String(describing: $0), "unknown model 'huge'; known: seed-relu, seed-aconc, seed-meta, tiny")
    }
  }

  func testTheSeedNetworkBuiltAsAUserWouldIsTheBuiltInOne() throws {
    // seed-relu through the public API in the obvious way: plain ReLU()s, default workspaces.
    var rng = SeededGenerator(seed: 1)
    let user = Sequential([
      ("conv1", Conv2D(inChannels: 3, outChannels: 32, kernelSize: 3, padding: 1, rng: &rng)), ("relu1", ReLU()),
      ("conv2", Conv2D(inChannels: 32, outChannels: 64, kernelSize: 3, stride: 2, rng: &rng)), ("relu2", ReLU()),
      ("conv3", Conv2D(inChannels: 64, outChannels: 64, kernelSize: 3, stride: 2, rng: &rng)), ("relu3", ReLU()),
      ("conv4", Conv2D(inChannels: 64, outChannels: 64, kernelSize: 3, stride: 2, padding: 1, rng: &rng)), ("relu4", ReLU()),
      ("flatten", Flatten()), ("linear1", Linear(inFeatures: 1024, outFeatures: 64, rng: &rng)), ("relu5", ReLU()),
      ("linear2", Linear(inFeatures: 64, outFeatures: 10, rng: &rng)),
    ])
    let builtIn = try ModelKind.seedRelu.build(input: [3, 32, 32], classes: 10, seed: 1)
    XCTAssertEqual(user.stateDictNames(), builtIn.stateDictNames())
    XCTAssertEqual(weights(user), weights(builtIn))
    let convs = user.layers.compactMap { $0.1 as? Conv2D }
    XCTAssertTrue(convs.allSatisfy { $0.workspace === convs[0].workspace }, "one shared workspace by default")
    let x = Tensor(zeros: [4, 3, 32, 32])
    x.fillNormal(using: &rng)
    let labels: [Int32] = [1, 5, 9, 0]
    for net in [user, builtIn] {
      net.packGradients()
      net.zeroGrad()
      let (_, g) = try CrossEntropyLoss().valueAndGradient(try net.forward(x), labels: labels)
      _ = try net.backward(g)
    }
    XCTAssertEqual(try user.forward(x).array, try builtIn.forward(x).array)
    XCTAssertEqual(user.namedParameters().map { $0.1.grad.array }, builtIn.namedParameters().map { $0.1.grad.array })
  }

  // MARK: - Checkpoints and state dicts

  func testOldMetadataStillLoads() throws {
    // A model file as the CLI wrote it before model names were free-form.
    let net = try ModelKind.seedAconc.build(input: [1, 16, 16], classes: 10, seed: 1)
    let path = tmp.appendingPathComponent("old.safetensors").path
    let old = ["format": "pt", "model": "seed-aconc", "input": "1x16x16", "classes": "10", "normalization_mean": "0.5",
      "normalization_std": "0.5", "step": "3"]
    try SafetensorsFile(metadata: old, tensors: stateDict(of: net)).write(path: path)
    let fresh = try ModelKind.seedAconc.build(input: [1, 16, 16], classes: 10, seed: 2)
    let meta = try Checkpoint.load(fresh, from: path)
    XCTAssertEqual(meta, ModelMetadata(model: "seed-aconc", input: [1, 16, 16], classes: 10,
      normalization: Normalization(mean: [0.5], std: [0.5])))
    XCTAssertEqual(weights(fresh), weights(net))
  }

  func testStateDictMethodsStrictAndNot() throws {
    let a = customNet(seed: 1), b = customNet(seed: 2)
    var state = a.stateDict()
    XCTAssertEqual(Set(state.keys), Set(a.stateDictNames()))
    XCTAssertTrue(state.keys.contains("bn1.num_batches_tracked"))
    let loaded = try b.loadStateDict(state)
    XCTAssertTrue(loaded.missing.isEmpty && loaded.unexpected.isEmpty)
    XCTAssertEqual(weights(b), weights(a))

    // Fine-tuning: a new head of another size, loaded non-strictly.
    state["extra.weight"] = .f32(shape: [1], values: [0])
    state["fc.weight"] = nil
    state["fc.bias"] = nil
    let c = customNet(classes: 3, seed: 3)
    let headBefore = c.namedParameters().filter { $0.0.hasPrefix("fc.") }.map { $0.1.value.array }
    XCTAssertThrowsError(try c.loadStateDict(state)) {
      XCTAssertTrue(String(describing: $0).contains("fc.weight"), "\($0)")
    }
    let r = try c.loadStateDict(state, strict: false)
    XCTAssertEqual(r.missing, ["fc.weight", "fc.bias"])
    XCTAssertEqual(r.unexpected, ["extra.weight"])
    XCTAssertEqual(c.namedParameters().filter { $0.0.hasPrefix("fc.") }.map { $0.1.value.array }, headBefore)
    XCTAssertEqual(c.namedParameters().first { $0.0 == "conv1.weight" }?.1.value.array, a.namedParameters()[0].1.value.array)
    // A present key of the wrong shape is an error even when not strict, and changes nothing.
    state["conv1.weight"] = .f32(shape: [1], values: [0])
    XCTAssertThrowsError(try customNet().loadStateDict(state, strict: false)) {
      XCTAssertTrue(String(describing: $0).contains("conv1.weight"), "\($0)")
    }
  }

  // MARK: - Data

  func testDataSetsKnowClassesAndNormalisation() throws {
    let d = try DataChoice.synthetic.load()
    XCTAssertEqual(d.train.classes, 10)
    XCTAssertEqual(d.train.normalization, Normalization(mean: [0.5], std: [0.5]))
    XCTAssertEqual(d.test.normalization, d.normalization)
    XCTAssertEqual(SyntheticShapes.make(count: 4, channels: 3, seed: 1).normalization.mean, [0.5, 0.5, 0.5])
    XCTAssertEqual(SyntheticShapes.make(count: 4, seed: 1).prefix(2).normalization, d.train.normalization)
    if FileManager.default.fileExists(atPath: "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") {
      let f = try DataChoice.fashionMNIST.load(includeTrain: false)
      XCTAssertEqual(f.test.normalization, .fashionMNIST)
    }
  }

  func testLoaderIteratesAsASequenceReusingItsBatch() throws {
    let ds = SyntheticShapes.make(count: 70, height: 8, width: 8, seed: 1)
    let loader = BatchLoader(ds, batchSize: 32, shuffle: true, seed: 4)
    var sizes: [Int] = [], seen: [Int32] = []
    var first: Tensor?
    for (x, labels) in loader {
      if first == nil { first = x } else { XCTAssertTrue(first === x, "the batch tensor is reused") }
      sizes.append(x.shape[0])
      XCTAssertEqual(x.shape, [labels.count, 1, 8, 8])
      seen += labels
    }
    XCTAssertEqual(sizes, [32, 32, 6])
    XCTAssertEqual(loader.epoch, 0)
    // The same as the indexed API, and the next loop is the next epoch.
    let reference = BatchLoader(dataset: ds, batchSize: 32, shuffle: true, dropLast: false, normalization: ds.normalization, seed: 4)
    let x = Tensor(zeros: [32, 1, 8, 8])
    var labels: [Int32] = [], want: [Int32] = []
    for b in 0..<reference.batchesPerEpoch {
      reference.batch(b, into: x, labels: &labels)
      want += labels
    }
    XCTAssertEqual(seen, want)
    var again: [Int32] = []
    for (_, l) in loader { again += l }
    XCTAssertEqual(loader.epoch, 1)
    XCTAssertNotEqual(again, seen, "epoch 1 is reshuffled")
    XCTAssertEqual(again.sorted(), seen.sorted())
  }

  // MARK: - Evaluation

  func testAccuracyHelpers() throws {
    let logits = Tensor(shape: [3, 4], values: [0, 3, 2, 1, 5, 1, 1, 0, 0, 0, 0, 9])
    let labels: [Int32] = [2, 0, 1]
    XCTAssertEqual(try accuracy(logits, labels: labels), 1.0 / 3)
    XCTAssertEqual(try topKAccuracy(logits, labels: labels, k: 2), 2.0 / 3)
    XCTAssertEqual(try topKAccuracy(logits, labels: labels, k: 4), 1)
    XCTAssertThrowsError(try accuracy(logits, labels: [0, 1]))
    XCTAssertEqual(try accuracy(Tensor(shape: [2, 1], values: [0.3, -1]), labels: [1, 1]), 0.5)
  }

  func testEvaluateReadsTheClassesFromTheModel() throws {
    let (_, test) = data()
    let net = customNet()
    net.train()
    let e = try evaluate(net, on: test, batchSize: 24, topK: [10])
    XCTAssertEqual(e.examples, 64)
    XCTAssertEqual(e.topK[10], 1)
    XCTAssertTrue(net.isTraining, "the mode is restored")
    // The deprecated form gives the same numbers.
    let old = try Trainer.evaluate(model: net, dataset: test, normalization: test.normalization, batchSize: 24, classes: 10)
    XCTAssertEqual(old.accuracy, e.accuracy)
    XCTAssertEqual(old.loss, e.loss)
    // One logit on ten classes is no longer scored as binary: it is an error.
    XCTAssertThrowsError(try evaluate(customNet(classes: 1), on: test)) {
      XCTAssertTrue(String(describing: $0).contains("expected [N, 10]"), "\($0)")
    }
  }

  func testPredictRunsInEvaluationModeAndRestoresIt() throws {
    let net = customNet()
    let x = Tensor(zeros: [2, 1, 16, 16])
    var rng = SeededGenerator(seed: 1)
    x.fillNormal(using: &rng)
    let y = try net.predict(x).copy()
    XCTAssertTrue(net.isTraining)
    net.eval()
    XCTAssertEqual(try net.forward(x).array, y.array)
  }

  // MARK: - Schedulers and losses

  func testSchedulerFollowsPyTorchsFormulas() {
    let p = Parameter(Tensor(zeros: [2]))
    let opt = Adam(groups: [ParameterGroup(parameters: [("w", p)], weightDecay: 0),
      ParameterGroup(parameters: [("v", Parameter(Tensor(zeros: [1])))], weightDecay: 0, learningRate: 1)], learningRate: 0.1)
    let s = LRScheduler.cosineAnnealing(opt, totalSteps: 4, minLR: 0.02)
    var rates: [Float] = [], own: [Float] = []
    for _ in 0..<6 {
      rates.append(s.learningRate)
      own.append(opt.learningRate(group: 1))
      s.step()
    }
    for (i, r) in rates.enumerated() {
      let t = Float(min(i, 4)) / 4
      XCTAssertEqual(r, 0.02 + (0.1 - 0.02) * (1 + cos(.pi * t)) / 2, accuracy: 1e-6)
      XCTAssertEqual(own[i], 0.02 + (1 - 0.02) * (1 + cos(.pi * t)) / 2, accuracy: 1e-6, "each group from its own base rate")
    }
    let w = LRScheduler.linearDecay(opt, totalSteps: 6, warmupSteps: 2)
    var lin: [Float] = []
    for _ in 0..<6 {
      lin.append(w.learningRate)
      w.step()
    }
    XCTAssertEqual(lin, [0.05, 0.1, 0.1, 0.075, 0.05, 0.025])
    w.seek(to: 1)
    XCTAssertEqual(opt.learningRate, 0.1)
  }

  func testLossesReturnValueAndGradient() throws {
    let logits = Tensor(shape: [2, 3], values: [1, 2, 3, 0, -1, 0.5])
    let ce = CrossEntropyLoss()
    let (value, grad) = try ce.valueAndGradient(logits, labels: [2, 0])
    XCTAssertEqual(value, try CrossEntropyLoss()(logits, labels: [2, 0]))
    XCTAssertTrue(grad === ce.gradient)
    let twin = Reference.softmaxCrossEntropy(DoubleTensor(logits), labels: [2, 0])
    XCTAssertEqual(Double(value), twin.loss, accuracy: 1e-6)
    for i in 0..<6 { XCTAssertEqual(Double(grad.data[i]), twin.gradient.values[i], accuracy: 1e-6) }
    let bce = BCEWithLogitsLoss()
    let one = Tensor(shape: [2, 1], values: [0.5, -2])
    let (b, g) = try bce.valueAndGradient(one, labels: [1, 0])
    XCTAssertEqual(b, try BCEWithLogitsLoss()(one, targets: [1, 0]))
    XCTAssertEqual(g.array, bce.gradient?.array)
    XCTAssertThrowsError(try bce.valueAndGradient(one, labels: [1, 2])) {
      XCTAssertTrue(String(describing: $0).contains("labels 0 or 1, got 2"), "\($0)")
    }
  }
}
