// acon-train: trains, evaluates, summarises and compares the seed networks (ReLU, ACON-C,
// Meta-ACON-C) on Fashion-MNIST, CIFAR-10 or the built-in synthetic set. With no arguments it
// trains seed-aconc for one epoch on Fashion-MNIST, or on the synthetic set when none is installed.
import ArgumentParser
import Collectives
import Foundation
import ImageData
import NN
import TensorCore
import Training
import Zoo

@main
struct AconTrain: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "acon-train",
    abstract: "Train, evaluate and compare ACON networks on the CPU.",
    subcommands: [Train.self, Evaluate.self, Predict.self, Summary.self, Compare.self],
    defaultSubcommand: Train.self)
}

/// Runs `body`, turning any thrown error into a one-line message and exit code 1.
@discardableResult
func reporting<T>(_ body: () throws -> T) -> T {
  do { return try body() } catch { fail(String(describing: error)) }
}

let stderrIsTTY = isatty(STDERR_FILENO) != 0

struct DataOptions: ParsableArguments {
  @Option(help: "Data set: auto (Fashion-MNIST if installed, else synthetic; `evaluate`: the one the checkpoint names), fashion-mnist, cifar10, synthetic, folder (--data-dir DIR with DIR/train/CLASS/*.jpg).")
  var data: String?
  @Option(help: "Directory of the data set files (default for Fashion-MNIST: /usr/share/datasets/fashion-mnist).")
  var dataDir: String?

  @Option(help: "The share of the training split held out for validation: --data folder when DIR/val is absent, and `compare` on any data set (seeded by --split-seed).")
  var valSplit: Double?
  @Option(help: "The seed of --val-split (default 0; `evaluate`: the checkpoint's).") var splitSeed: UInt64?
  @Option(help: "--data folder: the side of the square images (training: RandomResizedCrop(S); evaluation: Resize(S·256/224), CenterCrop(S)).")
  var imageSize: Int = 64
  @Option(help: "--data folder: decoding threads, ahead of the training step.") var workers: Int = 2
  @Flag(help: "--data folder: skip images that do not decode (a counted warning each) instead of failing.") var skipBadImages = false
  @Option(help: "--data folder: ColorJitter's brightness, contrast and saturation in training (0: none).") var colorJitter: Double = 0
  @Option(help: "--data folder: imagenet (Normalize by ImageNet's mean/std) or bgr255 (the official ACON ToBGRTensor: BGR, 0–255).")
  var convention: String = "imagenet"

  /// Whether `--data` was given.
  var dataGiven: Bool { data != nil }

  /// The `--data folder` options.
  func folderOptions() -> FolderDataOptions {
    guard (1...4096).contains(imageSize) else { fail("--image-size must be in 1...4096, got \(imageSize)") }
    guard (1...256).contains(workers) else { fail("--workers must be in 1...256, got \(workers)") }
    if let v = valSplit, !(v > 0 && v < 1) { fail("--val-split must be between 0 and 1, got \(v)") }
    guard colorJitter >= 0 && colorJitter <= 1 else { fail("--color-jitter must be in 0...1, got \(colorJitter)") }
    let c: TensorConvention
    switch convention {
    case "imagenet": c = .imageNet
    case "bgr255": c = .bgr255
    default: fail("--convention must be imagenet or bgr255, got '\(convention)'")
    }
    return FolderDataOptions(imageSize: imageSize, valSplit: valSplit, workers: workers, skipBadImages: skipBadImages,
      seed: splitSeed ?? 0, colorJitter: colorJitter, convention: c)
  }

  func choice() -> DataChoice {
    guard let c = DataChoice(rawValue: data ?? "auto") else {
      fail("--data must be one of \(DataChoice.allCases.map(\.rawValue).joined(separator: ", ")), got '\(data ?? "")'")
    }
    return c
  }
}

/// The model families `--model` picks from, first match wins: the seed networks, then any other
/// factory added here (one line each).
let modelFactories: [ModelFactory] = [
  .seedModels,
  ModelFactory(names: ZooModels.names) { try ZooModels.build(name: $0, inputShape: $1, classes: $2, seed: $3) },
]

/// Every model name the factories offer, for `--help` and errors.
let modelNames = modelFactories.flatMap(\.names)

/// `s` if a factory offers it; otherwise the run ends with an error listing the names.
func parseModel(_ s: String) -> String {
  guard modelNames.contains(s) else {
    fail("--model must be one of \(modelNames.joined(separator: ", ")), got '\(s)'")
  }
  return s
}

/// Builds the model `name` with the factories.
func buildModel(_ name: String, input: [Int], classes: Int, seed: UInt64) throws -> Module {
  try ModelFactory.build(name, factories: modelFactories, input: input, classes: classes, seed: seed)
}

struct Train: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Train a network (the default command).")

  @Option(help: ArgumentHelp("The network: \(modelNames.joined(separator: ", ")).")) var model: String = "seed-aconc"
  @OptionGroup var dataOptions: DataOptions
  @Option(help: "Epochs.") var epochs: Int = 1
  @Option(help: "Stop after this many steps.") var maxSteps: Int?
  @Option(help: "Batch size.") var batchSize: Int = 64
  @Option(help: "sgd, adam or adamw.") var optimizer: String = "adam"
  @Option(help: "Learning rate.") var lr: Float = 1e-3
  @Option(help: "SGD momentum.") var momentum: Float = 0.9
  @Option(help: "Weight decay on conv and linear weights (not on biases, BatchNorm or ACON's p1, p2, β). Default: 0.01 with adamw (PyTorch's), else 0.")
  var weightDecay: Float?
  @Option(help: "constant, step (×gamma every --step-size epochs), cosine, or linear (decay to 0 per step, the ACON recipe).")
  var schedule: String = "constant"
  @Option(help: "The step schedule's period in epochs (StepLR's step_size; default 1).") var stepSize: Int?
  @Option(help: "The step schedule's factor per period (StepLR's gamma; default 0.1).") var gamma: Float?
  @Option(help: "Cross-entropy label smoothing in [0, 1) (PyTorch's label_smoothing).") var labelSmoothing: Float = 0
  @Option(help: "Linear warm-up steps.") var warmupSteps: Int = 0
  @Option(help: "Seed for initialisation and shuffling.") var seed: UInt64 = 0
  @Flag(help: "Keep the file order (no shuffling).") var noShuffle = false
  @Flag(help: "Drop the last, smaller batch of each epoch.") var dropLast = false
  @Flag(help: "Augment training images: random crop with padding 4 and horizontal flip (for CIFAR-10).")
  var augment = false
  @Flag(help: "Random crop with padding 4 of training images (alone; --augment does both).") var randomCrop = false
  @Flag(help: "Horizontal flip of training images, with probability 1/2 (alone; --augment does both).") var flip = false
  @Option(help: "Threads for OpenBLAS and the kernels (default: cores; under mpirun, cores / ranks on this machine).")
  var threads: Int?
  @Option(help: "3×3 stride-1 convolutions: auto (Winograd where it pays: 16+ channels on 5×5+ maps, 256+ on 4×4; F(4×4, 3×3) on maps 16 to 64 wide up to 128 channels, F(2×2, 3×3) elsewhere), im2col, winograd (F(2×2, 3×3) wherever it applies) or winograd4x4 (F(4×4, 3×3) wherever it applies).")
  var convAlgorithm: String = "auto"
  @Option(help: "Start from the weights in this model file (ours or PyTorch's).") var `init`: String?
  @Option(help: "Model checkpoint path (.safetensors); a .state.safetensors file goes beside it.") var checkpoint: String?
  @Option(help: "Also checkpoint every N steps.") var checkpointEvery: Int?
  @Flag(help: "Continue from --checkpoint bit for bit; when none exists yet (killed before the first), start from scratch and say so.")
  var resume = false
  @Option(help: "Write a JSONL log here.") var log: String?
  @Option(help: "Rescale gradients whose global L2 norm exceeds this.") var clipGradNorm: Float?
  @Flag(help: "Skip the per-step NaN/Inf check of the loss and gradient norm.") var noCheckNumerics = false
  @Flag(help: """
    Data-parallel training over MPI (start with mpirun -np N; also on when mpirun's environment     is detected). Needs a build with `--traits MPI`.
    """)
  var distributed = false
  @Flag(help: "With several processes, BatchNorm statistics (Meta-ACON's too) over the global batch.")
  var syncBatchnorm = false
  @Option(help: "With several processes, all-reduce gradients in buckets of this many MiB while backward runs (0: all at once after it).")
  var bucketCapMb: Double = 25

  func run() throws {
    if let t = threads {
      guard t >= 1 && t <= 256 else { fail("--threads must be in 1...256, got \(t)") }
      Threads.count = t
    }
    guard let algorithm = ConvAlgorithm(rawValue: convAlgorithm) else {
      fail("--conv-algorithm must be auto, im2col, winograd or winograd4x4, got '\(convAlgorithm)'")
    }
    var o = TrainOptions()
    o.model = parseModel(model)
    o.epochs = epochs
    o.maxSteps = maxSteps
    o.batchSize = batchSize
    guard let opt = OptimizerKind(rawValue: optimizer) else { fail("--optimizer must be sgd, adam or adamw, got '\(optimizer)'") }
    o.optimizer = opt
    o.learningRate = lr
    o.momentum = momentum
    o.weightDecay = weightDecay ?? (opt == .adamw ? 0.01 : 0)
    guard let sch = ScheduleKind(rawValue: schedule) else { fail("--schedule must be constant, step, cosine or linear, got '\(schedule)'") }
    o.schedule = sch
    if sch != .step && (stepSize != nil || gamma != nil) { fail("--step-size and --gamma apply to --schedule step only") }
    o.stepSize = stepSize ?? o.stepSize
    o.gamma = gamma ?? o.gamma
    o.labelSmoothing = labelSmoothing
    o.warmupSteps = warmupSteps
    o.seed = seed
    o.shuffle = !noShuffle
    o.dropLast = dropLast
    o.augment = augment
    o.randomCrop = randomCrop
    o.horizontalFlip = flip
    o.initFrom = `init`
    o.checkpoint = checkpoint
    o.checkpointEvery = checkpointEvery
    o.resume = resume
    o.logPath = log
    o.clipGradNorm = clipGradNorm
    o.checkNumerics = !noCheckNumerics
    o.syncBatchNorm = syncBatchnorm
    o.bucketCapMB = bucketCapMb
    reporting { try o.validate() }
    let group = reporting { try ProcessGroups.make(distributed: distributed, environment: ProcessInfo.processInfo.environment) }
    activeGroup = group
    // In a data-parallel run only rank 0 speaks; the others report errors only.
    let speaks = group.rank == 0
    func say(_ s: String) { if speaks { print(s) } }
    if group.size > 1, threads == nil {
      // Ranks on one machine share its cores: without --threads, each takes its share.
      let local = Int(ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "") ?? 1
      Threads.count = Swift.max(1, Threads.defaultCount / Swift.max(1, local))
    }
    let trainer: Trainer
    if dataOptions.choice() == .folder {
      // A folder streams: decoded and augmented on --workers threads ahead of each step.
      let folder = reporting { try FolderTrainingData.load(directory: dataOptions.dataDir, options: dataOptions.folderOptions()) }
      o.dataName = DataChoice.folder.rawValue
      say("data: \(folder.source)")
      if speaks { for w in folder.warnings { warn(String(w.dropFirst("warning: ".count))) } }
      checkBatchNormBatches(model: o.model, imageShape: folder.imageShape, classes: folder.classNames.count, count: folder.train.count,
        batchSize: batchSize, processes: syncBatchnorm ? 1 : group.size, dropLast: dropLast)
      trainer = reporting { try Trainer(options: o, folder: folder, factories: modelFactories, group: group) }
    } else {
      if dataOptions.valSplit != nil {
        fail("--val-split applies to --data folder (or to `acon-train compare`); `train` on \(dataOptions.choice().rawValue) evaluates on its test split")
      }
      let data = reporting { try dataOptions.choice().load(directory: dataOptions.dataDir, folder: dataOptions.folderOptions()) }
      o.dataName = data.resolved.rawValue
      say("data: \(data.source)")
      checkBatchNormBatches(model: o.model, imageShape: data.train.imageShape, classes: data.train.classes, count: data.train.count,
        batchSize: batchSize, processes: syncBatchnorm ? 1 : group.size, dropLast: dropLast)
      trainer = reporting {
        try Trainer(options: o, train: data.train, test: data.test, normalization: data.normalization,
          factories: modelFactories, group: group)
      }
    }
    trainer.model.setConvolutionAlgorithm(algorithm)
    say("model: \(o.model), \(trainer.model.parameterCount) parameters, conv algorithm \(algorithm.rawValue); \(o.optimizer.rawValue) lr \(o.learningRate), batch \(o.batchSize), \(Threads.count) threads")
    // At a terminal only, so that logs and scripts see the same output everywhere.
    if speaks, isatty(STDERR_FILENO) != 0, let note = BLAS.kernelNote {
      FileHandle.standardError.write(Data((note + "\n").utf8))
    }
    if group.size > 1 {
      say("data-parallel: \(group.size) processes, \(o.batchSize / group.size)–\((o.batchSize + group.size - 1) / group.size) examples each per step"
        + (syncBatchnorm ? ", synchronised BatchNorm" : ""))
    }
    if resume, speaks, let path = checkpoint {
      if let from = trainer.resumedFromStep {
        print("resuming from \(path) at step \(from)")
      } else {
        print("no checkpoint at \(path) yet: starting from scratch")
      }
      if let warning = trainer.resumeWarning {
        warn(warning)
      }
    }
    let start = Date()
    trainer.onStep = { info in
      guard stderrIsTTY, speaks else { return }
      let done = Double(info.batchInEpoch) / Double(max(1, info.batchesPerEpoch))
      let width = 24, filled = Int(done * Double(width))
      let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
      let eta = Double(info.batchesPerEpoch - info.batchInEpoch) * Double(o.batchSize) / max(info.imagesPerSecond, 1)
      var line = String(format: "\repoch %d [%@] step %d/%d loss %.4f %.0f img/s",
        info.epoch, bar, info.batchInEpoch, info.batchesPerEpoch, info.loss, info.imagesPerSecond)
      if let w = info.dataWait { line += String(format: ", waiting for data %.0f%%%@", w * 100, w > 0.1 ? " (data-bound)" : "") }
      line += String(format: " ETA %d:%02d ", Int(eta) / 60, Int(eta) % 60)
      FileHandle.standardError.write(Data(line.utf8))
    }
    trainer.onEpoch = { r in
      guard speaks else { return }
      if stderrIsTTY { FileHandle.standardError.write(Data("\n".utf8)) }
      var line = String(format: "epoch %d: train loss %.4f, %.0f images/s", r.epoch, r.trainLoss, r.imagesPerSecond)
      if let w = r.dataWait {
        line += String(format: " (%.0f%% of the step time waiting for data%@)", w * 100,
          w > 0.1 ? ": data-bound, try more --workers" : "")
      }
      if let a = r.testAccuracy, let l = r.testLoss { line += String(format: ", test accuracy %.2f%%, test loss %.4f", a * 100, l) }
      print(line)
    }
    reporting { try trainer.run() }
    let seconds = Date().timeIntervalSince(start)
    let stepsRun = Double(max(1, trainer.losses.count))
    say(String(format: "done: %d steps in %.1f s (%.1f ms per training step)", trainer.completedSteps, seconds,
      trainer.stepSeconds / stepsRun * 1000) + (checkpoint.map { ", checkpoint \($0)" } ?? ""))
    if group.size > 1 {
      let stepMs = trainer.stepSeconds / stepsRun * 1000, reduceMs = trainer.allReduceSeconds / stepsRun * 1000
      say(String(format: "data-parallel: %.0f global images/s; per step %.1f ms, of which %.1f ms all-reduce%@ (%.1f%%), "
        + "%.2f ms waiting for the slowest process", trainer.epochs.last?.imagesPerSecond ?? 0, stepMs, reduceMs,
        (bucketCapMb > 0 ? " not hidden behind backward" : "") as NSString, 100 * reduceMs / max(stepMs, 1e-9),
        trainer.waitSeconds / stepsRun * 1000))
    }
    finishOutput()
  }
}

/// Fails, before any step or file, when a training batch would leave a BatchNorm2D of `model`
/// with one value per channel (N·H·W = 1: a batch of 1 at a 1×1 map, Meta-ACON's β network at
/// any size), naming the layer and the fix; PyTorch stops there too, mid-run. `processes` is the
/// number of shares each batch is split into for BatchNorm's statistics (1 with synchronised BN).
func checkBatchNormBatches(model name: String, imageShape: [Int], classes: Int, count: Int, batchSize: Int, processes: Int,
  dropLast: Bool) {
  guard let net = try? buildModel(name, input: imageShape, classes: classes, seed: 0) else { return }  // the trainer reports it
  var batches = [(batchSize / max(1, processes), "--batch-size \(batchSize)" + (processes > 1 ? " over \(processes) processes" : ""),
    "use --batch-size \(2 * max(1, processes)) or more (evaluation works at any batch size)")]
  let last = count % batchSize
  if !dropLast, last > 0, processes == 1 {
    batches.append((last, "the last batch of each epoch (\(count) examples, --batch-size \(batchSize))",
      "pass --drop-last or another --batch-size"))
  }
  for (n, what, fix) in batches where n >= 1 {
    guard let bn = (try? LayerWalk.singleValueBatchNorm(net, [n] + imageShape)) ?? nil else { continue }
    fail("\(name): training with \(what) gives BatchNorm2D '\(bn.name)' one value per channel (input \(Shape.text(bn.input))), "
      + "and batch statistics need more than one (PyTorch: \"Expected more than 1 value per channel when training\"); \(fix)")
  }
}

struct Evaluate: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Accuracy and mean loss of a checkpoint on the test split.")

  @Option(help: "Model file (.safetensors), ours or PyTorch's.") var checkpoint: String
  @Option(help: "The model, when the file's metadata names none.") var model: String?
  @OptionGroup var dataOptions: DataOptions
  @Option(help: "Batch size.") var batchSize: Int = 64
  @Flag(help: "Print one JSON object.") var json = false

  func run() throws {
    guard batchSize >= 1 && batchSize <= 65536 else { fail("--batch-size must be in 1...65536, got \(batchSize)") }
    let file = reporting { try SafetensorsFile.read(path: checkpoint) }
    // Without --data, the data set the file was trained on (our files record it), else auto.
    var choice = dataOptions.choice()
    if !dataOptions.dataGiven, let name = file.metadata["data"] {
      guard let recorded = DataChoice(rawValue: name), recorded != .auto else {
        fail("\(checkpoint): metadata names unknown data set '\(name)'; pass --data")
      }
      choice = recorded
    }
    if choice == .folder { return evaluateFolder(file) }
    let data = reporting { try choice.load(directory: dataOptions.dataDir, includeTrain: false, folder: dataOptions.folderOptions()) }
    let meta = reporting {
      try ModelMetadata(strings: file.metadata, file: checkpoint, fallbackModel: model.map(parseModel),
        fallbackInput: [data.test.channels, data.test.height, data.test.width], fallbackClasses: data.test.classes,
        fallbackNormalization: data.normalization)
    }
    if let asked = model.map(parseModel), asked != meta.model {
      fail("\(checkpoint): the file holds a \(meta.model) model, not \(asked); drop --model or pick the right file")
    }
    guard meta.input == [data.test.channels, data.test.height, data.test.width] else {
      fail("\(checkpoint): the model takes \(meta.input.map(String.init).joined(separator: "x")) inputs, but the data set has \(data.test.channels)x\(data.test.height)x\(data.test.width)")
    }
    // One output is a binary classifier, for two-class data.
    guard meta.classes == data.test.classes || (meta.classes == 1 && data.test.classes == 2) else {
      fail("\(checkpoint): the model has \(meta.classes) classes, but the data set has \(data.test.classes); pick the data set it was trained on with --data")
    }
    guard modelNames.contains(meta.model) else {
      fail("\(checkpoint): the file holds a model named '\(meta.model)', which acon-train cannot build (it knows "
        + "\(modelNames.joined(separator: ", "))); load it in your own program with model.loadStateDict")
    }
    let net = reporting { try buildModel(meta.model, input: meta.input, classes: meta.classes, seed: 0) }
    reporting { try net.loadStateDict(Checkpoint.strippingDataParallelPrefix(file.tensors), file: checkpoint) }
    let e = reporting {
      try Training.evaluate(net, on: data.test, normalization: meta.normalization, batchSize: batchSize)
    }
    if json {
      print(String(format: "{\"accuracy\": %.4f, \"loss\": %.4f, \"examples\": %d}", e.accuracy, e.loss, e.examples))
    } else {
      print("data: \(data.source)")
      print(String(format: "%@ on %d test images: accuracy %.2f%%, mean loss %.4f", meta.model as NSString, e.examples, e.accuracy * 100, e.loss))
    }
    finishOutput()
  }
}

struct Summary: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Print the model summary table: shapes, parameters, multiply-accumulates and the training memory budget.")

  @Option(help: ArgumentHelp("The network: \(modelNames.joined(separator: ", ")).")) var model: String = "seed-aconc"
  @Option(help: "Input as CxHxW.") var input: String = "3x32x32"
  @Option(help: "Output classes (1: binary, as in the seed).") var classes: Int = 1
  @Option(name: [.customLong("batch-size"), .customLong("batch")], help: "Batch size of the shapes and the memory budget.")
  var batchSize: Int = 64
  @Option(help: "The optimizer of the memory budget: sgd (with --momentum), adam or adamw.") var optimizer: String = "adam"
  @Option(help: "SGD momentum (0: no momentum buffer).") var momentum: Float = 0.9
  @Flag(help: "Print one JSON object: the totals, the memory budget, each row, and every state_dict entry with its shape.")
  var json = false

  func run() throws {
    let dims = input.split(separator: "x", omittingEmptySubsequences: false).map { Int($0) ?? -1 }
    guard dims.count == 3, dims.allSatisfy({ $0 > 0 }) else { fail("--input must look like 3x32x32, got '\(input)'") }
    guard classes >= 1 else { fail("--classes must be at least 1, got \(classes)") }
    guard (1...65536).contains(batchSize) else { fail("--batch-size must be in 1...65536, got \(batchSize)") }
    guard let opt = OptimizerKind(rawValue: optimizer) else { fail("--optimizer must be sgd, adam or adamw, got '\(optimizer)'") }
    let name = parseModel(model)
    let net = reporting { try buildModel(name, input: dims, classes: classes, seed: 0) }
    let s = reporting {
      try ModelSummary(model: net, inputShape: [batchSize] + dims, expandingSequentials: !name.hasPrefix("seed-")) { m, shape in
        try MultiplyAccumulates.count(m, inputShape: Array(shape.dropFirst()))
      }
    }
    let budget = reporting {
      try MemoryBudget(model: net, inputShape: [batchSize] + dims, optimizer: opt, momentum: momentum)
    }
    if json {
      var shapes: [String: (String, [Int])] = [:]
      for (n, p) in net.namedParameters() { shapes[n] = ("F32", p.shape) }
      for (n, b) in net.namedBuffers() {
        switch b {
        case .float(let t): shapes[n] = ("F32", t.shape)
        case .int64: shapes[n] = ("I64", [])
        }
      }
      let entries: [[String: Any]] = net.stateDictNames().map { ["name": $0, "dtype": shapes[$0]?.0 ?? "F32", "shape": shapes[$0]?.1 ?? []] }
      let rows: [[String: Any]] = s.rows.map {
        ["layer": $0.layer, "name": $0.name, "input": $0.inputShape, "output": $0.outputShape, "parameters": $0.parameters,
         "multiply_accumulates": $0.multiplyAccumulates]
      }
      let object: [String: Any] = [
        "model": name, "input": dims, "classes": classes, "batch_size": batchSize,
        "parameters": s.trainableParameters, "non_trainable": s.nonTrainableParameters,
        "multiply_accumulates": s.totalMultiplyAccumulates,
        "memory_budget_bytes": ["weights": budget.weights, "gradients": budget.gradients,
          "optimizer_state": budget.optimizerState, "activations": budget.activations, "total": budget.total,
          "optimizer": opt.rawValue],
        "rows": rows, "state_dict": entries,
      ]
      let data = reporting { try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) }
      print(String(decoding: data, as: UTF8.self))
    } else {
      print(s)
      print(budget.line(batchSize: batchSize, optimizer: opt))
    }
    finishOutput()
  }
}

/// The memory a training step needs: the weights (parameters and BatchNorm statistics), their
/// gradients, the optimizer's state, and the activations one batch keeps for its backward pass.
struct MemoryBudget {
  var weights = 0, gradients = 0, optimizerState = 0, activations = 0
  var total: Int { weights + gradients + optimizerState + activations }

  /// The budget of `model` on batches of shape `inputShape` (`[N, C, H, W]`), 4-byte floats.
  init(model: Module, inputShape: [Int], optimizer: OptimizerKind, momentum: Float) throws {
    let params = model.parameterCount
    let buffers = model.namedBuffers().reduce(0) { acc, b in
      if case .float(let t) = b.1 { return acc + t.count }
      return acc + 2  // an Int64 counter
    }
    weights = (params + buffers) * 4
    gradients = params * 4
    switch optimizer {
    case .sgd: optimizerState = momentum != 0 ? params * 4 : 0  // the momentum buffer
    case .adam, .adamw: optimizerState = 2 * params * 4  // exp_avg and exp_avg_sq
    }
    activations = try LayerWalk.activationElements(model, inputShape) * 4
  }

  /// `Memory budget (batch 64, adam): weights 5.5 MB + … = 123.4 MB`.
  func line(batchSize: Int, optimizer: OptimizerKind) -> String {
    func mb(_ b: Int) -> String { String(format: "%.1f MB", Double(b) / 1_048_576) }
    return "Memory budget (batch \(batchSize), \(optimizer.rawValue)): weights \(mb(weights)) + gradients \(mb(gradients))"
      + " + optimizer state \(mb(optimizerState)) + activations \(mb(activations)) = \(mb(total))"
  }
}
