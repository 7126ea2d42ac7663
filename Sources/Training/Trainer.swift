// Trainer: the training loop that acon-train runs and other programs reuse, for any `Module`:
// batches, forward, loss, backward, optimizer and scheduler steps, per-epoch evaluation, JSONL
// log, checkpoints (latest and best) and exact resume, also after a kill at any moment.
// Data-parallel over a ProcessGroup (MPI): each process runs its shard of every global batch,
// gradients are summed in one all-reduce, and only rank 0 logs, evaluates and writes
// checkpoints. The loop is in Trainer+Loop.swift, checkpoints and resume in
// Trainer+Checkpoint.swift, the log in Trainer+Log.swift, evaluation in Evaluation.swift.
import Collectives
import Foundation
import NN
import TensorCore

/// Runs a training job.
/// Trains any `Module` on an image data set, as a PyTorch training script would, with what a
/// long run needs: a NaN/Inf guard naming the step and parameter, gradient clipping, a
/// learning-rate scheduler, a JSONL log, atomic checkpoints (latest and best) with exact resume
/// (also after a kill at any moment), `initFrom` weights, and data-parallel training over a
/// `ProcessGroup`.
///
/// ```swift
/// let data = try DataChoice.auto.load()
/// var options = TrainOptions()
/// options.checkpoint = "runs/net.safetensors"
/// let trainer = try Trainer(model: net, name: "my-net", options: options, train: data.train, test: data.test)
/// try trainer.run()
/// ```
/// The loss defaults to cross-entropy (binary cross-entropy with logits for a one-output model
/// on two classes), the optimizer and the scheduler to those `options` name; pass your own to
/// replace them. The trainer takes over the model: it packs its gradients into one block, shares
/// one convolution workspace and skips the first layer's input gradient (nothing upstream of
/// the data needs it).
public final class Trainer {
  /// The run's settings.
  public let options: TrainOptions
  /// The network being trained.
  public let model: Module
  /// What the checkpoints record about the model (its name, input shape, classes, normalisation).
  public let metadata: ModelMetadata
  /// The training split.
  public let trainSet: ImageDataset
  /// The test split, evaluated after each epoch.
  public let testSet: ImageDataset?
  /// The optimizer over the model's parameters.
  public let optimizer: any Optimizer
  /// Sets the optimizer's learning rate at every step; the trainer steps it after each
  /// optimizer step (and seeks it to the step a resume continues from).
  public let scheduler: LRScheduler
  /// The loss over the model's logits and the labels.
  public let loss: any ClassificationLoss
  /// Called after every step (progress bars).
  public var onStep: ((StepInfo) -> Void)?
  /// Called after every epoch.
  public var onEpoch: ((EpochRecord) -> Void)?
  /// The processes of this run; a single process unless training is data-parallel.
  public let group: ProcessGroup
  /// Seconds spent in the gradient all-reduce in this run (0 for a single process). When it
  /// overlaps the backward pass (`bucketCapMB` > 0), the seconds after backward that it was not
  /// hidden (waiting for the last buckets, and for the slowest process).
  public internal(set) var allReduceSeconds = 0.0
  /// Seconds this process waited for the others before the all-reduce (load imbalance); 0 when
  /// the all-reduce overlaps the backward pass (the wait is then part of `allReduceSeconds`).
  public internal(set) var waitSeconds = 0.0
  /// Every step's loss, in order (including steps replayed from nothing: after a resume this
  /// holds only the steps this run took).
  public internal(set) var losses: [Float] = []
  /// Every epoch's record from this run.
  public internal(set) var epochs: [EpochRecord] = []
  /// The step a `resume` continued from; nil when the run started from scratch (also when
  /// `resume` found no checkpoint yet).
  public internal(set) var resumedFromStep: Int?
  /// Set by a resume whose checkpoint was written with another thread count per process or
  /// another number of processes: the run continues, but not bit for bit (OpenBLAS's sgemm
  /// and the data-parallel sum round differently). Says how to resume exactly.
  public internal(set) var resumeWarning: String?

  /// The optimizer's name in the state file (`adam`, or the type of an optimizer passed in).
  let optimizerName: String
  /// The training batches (in memory, or streamed from a folder).
  let loader: TrainingBatches
  /// The folder a streamed run reads (its metadata goes into every checkpoint).
  let folder: FolderTrainingData?
  /// Evaluates the model after each epoch when the test split is not in memory (a folder's val/).
  let evaluateTest: ((Module) throws -> Evaluation)?
  /// Seconds the loop waited for the loader's next batch in this run, and the steps' seconds in all.
  public internal(set) var dataWaitSeconds = 0.0, stepSeconds = 0.0
  var step = 0  // steps completed
  var startEpoch = 0
  var startBatch = 0
  /// The resumed epoch's train loss sum and example count before `startBatch`.
  var startLossSum = 0.0, startSeen = 0
  var bestAccuracy = -1.0
  let xBatch: Tensor  // the global batch, or this process's rows of it in a data-parallel run
  let gradients: TensorStorage  // every parameter gradient, contiguous (packGradients)
  var buckets: GradientBuckets?  // the all-reduce overlapped with backward (data-parallel)
  var scalars = [Double](repeating: 0, count: 1)
  var labels: [Int32] = []
  var log: CheckedFile?
  var lastCheckpointPath: String?

  /// A run of the network `options.model` names, built by the first of `factories` that
  /// offers it (by default the seed networks) for the data set's input shape and classes (one
  /// output for two classes: binary cross-entropy on one logit, as the seed trains), seeded by
  /// `options.seed`. See `init(model:name:loss:optimizer:scheduler:options:train:test:normalization:group:)`.
  public convenience init(
    options: TrainOptions, train: ImageDataset, test: ImageDataset?, normalization: Normalization? = nil,
    factories: [ModelFactory] = [.seedModels], group: ProcessGroup = SingleProcess()
  ) throws {
    let classes = train.classes == 2 ? 1 : train.classes
    let model = try ModelFactory.build(options.model, factories: factories, input: train.imageShape, classes: classes,
      seed: options.seed)
    try self.init(model: model, name: options.model, options: options, train: train, test: test,
      normalization: normalization, group: group)
  }

  /// Prepares a run of `model` (loading `options.initFrom`, or resuming from `options.checkpoint`).
  /// - Parameters:
  ///   - model: any network taking `[N, C, H, W]` images of `train` and giving `[N, K]` logits,
  ///     K = `train.classes` (or 1 for two classes).
  ///   - name: the model's name in checkpoint metadata (and checked on resume).
  ///   - loss: nil: cross-entropy with `options.labelSmoothing`, or BCE with logits for one output.
  ///   - optimizer: nil: `options.optimizer` at `options.learningRate` over `model.namedParameters()`
  ///     (with the ACON no-decay groups).
  ///   - scheduler: nil: `options.schedule` with `options.warmupSteps`; given, it must be
  ///     attached to `optimizer`.
  ///   - options: the run's settings (epochs, batch size, checkpoints, log, checks, …).
  ///   - train: the training split.
  ///   - test: the test split, evaluated after each epoch (nil: none).
  ///   - normalization: nil: the training split's own.
  ///   - group: several processes (each calling this with the same arguments) train data-parallel:
  ///     rank 0's initial weights are broadcast to the others; `checkpoint` is read by every
  ///     process on resume and written by rank 0 only.
  public convenience init(
    model: Module, name: String = "custom", loss: (any ClassificationLoss)? = nil, optimizer: (any Optimizer)? = nil,
    scheduler: LRScheduler? = nil, options: TrainOptions = TrainOptions(), train: ImageDataset, test: ImageDataset? = nil,
    normalization: Normalization? = nil, group: ProcessGroup = SingleProcess()
  ) throws {
    let normalization = normalization ?? train.normalization
    guard normalization.mean.count == train.channels else {
      throw TensorError.invalidArgument(
        "the normalisation has \(normalization.mean.count) channels, the data set \(train.name) \(train.channels)")
    }
    let batches = InMemoryBatches(BatchLoader(dataset: train, batchSize: options.batchSize, shuffle: options.shuffle,
      dropLast: options.dropLast, normalization: normalization, augment: options.augmentation, seed: options.seed))
    try self.init(model: model, name: name, loss: loss, optimizer: optimizer, scheduler: scheduler, options: options,
      train: train, test: test, normalization: normalization, batches: batches, evaluateTest: nil, folder: nil, group: group)
  }

  /// A run of the network `options.model` names on a folder of images, streamed (see
  /// `init(model:name:loss:optimizer:scheduler:options:folder:group:)`), built by the first of
  /// `factories` that offers it for `[3, S, S]` inputs and the folder's classes.
  public convenience init(
    options: TrainOptions, folder: FolderTrainingData, factories: [ModelFactory] = [.seedModels],
    group: ProcessGroup = SingleProcess()
  ) throws {
    let k = folder.classNames.count
    let model = try ModelFactory.build(options.model, factories: factories, input: folder.imageShape, classes: k == 2 ? 1 : k,
      seed: options.seed)
    try self.init(model: model, name: options.model, options: options, folder: folder, group: group)
  }

  /// Prepares a run of `model` on a folder of images, streamed: each step's batch is decoded and
  /// transformed (`folder.trainPipeline`: RandomResizedCrop, flip, ColorJitter, the convention) on
  /// `folder.options.workers` threads ahead of the step, into reused buffers; each epoch ends with
  /// an evaluation of the validation split through `folder.evalPipeline`. The crops and flips are
  /// drawn from (seed, epoch, position), so a resume continues exactly, with any worker count.
  /// The checkpoints record the class names, both pipelines and the split (`ModelMetadata`).
  /// `trainSet` is then an empty data set of the folder's shape and classes, `testSet` nil.
  /// - Throws: as the in-memory initialiser; also when `options` asks for the in-memory
  ///   augmentation (`augment`, `randomCrop`, `horizontalFlip`), which the pipeline replaces.
  public convenience init(
    model: Module, name: String = "custom", loss: (any ClassificationLoss)? = nil, optimizer: (any Optimizer)? = nil,
    scheduler: LRScheduler? = nil, options: TrainOptions = TrainOptions(), folder: FolderTrainingData,
    group: ProcessGroup = SingleProcess()
  ) throws {
    guard options.augmentation == .none else {
      throw TensorError.invalidArgument(
        "--augment, --random-crop and --flip apply to in-memory data sets; a folder trains through its pipeline "
          + "(\(folder.trainPipeline)), which crops and flips already")
    }
    let normalization = Normalization(folder.options.convention)
    let k = folder.classNames.count
    let placeholder = ImageDataset(name: "folder/train", channels: 3, height: folder.options.imageSize, width: folder.options.imageSize,
      classes: k, pixels: [], labels: [], source: folder.directory, normalization: normalization)
    let batches = StreamedBatches(folder.trainLoader(batchSize: options.batchSize, shuffle: options.shuffle,
      dropLast: options.dropLast, seed: options.seed))
    let val = folder.valLoader(batchSize: options.batchSize)
    try self.init(model: model, name: name, loss: loss, optimizer: optimizer, scheduler: scheduler, options: options,
      train: placeholder, test: nil, normalization: normalization, batches: batches,
      evaluateTest: { net in try Training.evaluate(net, on: val) }, folder: folder, group: group)
  }

  /// The designated initialiser behind the public ones: `batches` gives the training batches,
  /// `evaluateTest` (else `test`) the evaluation after each epoch, `folder` its metadata.
  init(
    model: Module, name: String, loss: (any ClassificationLoss)?, optimizer: (any Optimizer)?,
    scheduler: LRScheduler?, options: TrainOptions, train: ImageDataset, test: ImageDataset?,
    normalization: Normalization, batches: TrainingBatches, evaluateTest: ((Module) throws -> Evaluation)?,
    folder: FolderTrainingData?, group: ProcessGroup
  ) throws {
    try options.validate()
    guard options.batchSize >= group.size else {
      throw TensorError.invalidArgument(
        "--batch-size \(options.batchSize) is smaller than the \(group.size) processes: each needs at least one example")
    }
    self.options = options
    self.group = group
    self.model = model
    trainSet = train
    testSet = test
    // The model's outputs: from its output shape where it knows it, else the data set's classes
    // (one for two classes, as the seed trains).
    var outputs = train.classes == 2 ? 1 : train.classes
    if let shape = try? model.outputShape(for: [1] + train.imageShape), shape.count == 2 { outputs = shape[1] }
    guard outputs == train.classes || (outputs == 1 && train.classes == 2) else {
      throw TensorError.invalidArgument(
        "\(name) gives \(outputs) outputs, but the data set \(train.name) has \(train.classes) classes; build it with "
          + "\(train.classes) outputs (or 1 for two classes)")
    }
    if outputs == 1 && options.labelSmoothing != 0 {
      throw TensorError.invalidArgument(
        "--label-smoothing applies to the cross-entropy of 3 or more classes; this data set has 2 (one logit, binary cross-entropy)")
    }
    var metadata = ModelMetadata(model: name, input: train.imageShape, classes: outputs, normalization: normalization,
      data: options.dataName ?? (folder != nil ? DataChoice.folder.rawValue : nil))
    folder?.record(in: &metadata)
    self.metadata = metadata
    self.folder = folder
    self.evaluateTest = evaluateTest
    gradients = model.prepareForTraining()
    if let loss {
      self.loss = loss
    } else if outputs == 1 {
      self.loss = BCEWithLogitsLoss()
    } else {
      self.loss = CrossEntropyLoss(labelSmoothing: options.labelSmoothing)
    }
    if let optimizer {
      self.optimizer = optimizer
      optimizerName = String(describing: type(of: optimizer)).lowercased()
    } else {
      let params = model.namedParameters()
      switch options.optimizer {
      case .sgd:
        self.optimizer = SGD(parameters: params, learningRate: options.learningRate, momentum: options.momentum,
          weightDecay: options.weightDecay)
      case .adam:
        self.optimizer = Adam(parameters: params, learningRate: options.learningRate, weightDecay: options.weightDecay)
      case .adamw:
        self.optimizer = Adam.adamW(parameters: params, learningRate: options.learningRate, weightDecay: options.weightDecay)
      }
      optimizerName = options.optimizer.rawValue
    }
    loader = batches
    if let scheduler {
      guard scheduler.optimizer === self.optimizer else {
        throw TensorError.invalidArgument("Trainer: the scheduler is attached to another optimizer than the trainer's")
      }
      self.scheduler = scheduler
    } else {
      let all = options.epochs * loader.batchesPerEpoch
      let total = options.maxSteps.map { Swift.min($0, all) } ?? all
      let schedule: LRSchedule
      switch options.schedule {
      case .constant: schedule = .constant
      case .step: schedule = .step(stepSize: options.stepSize * Swift.max(1, loader.batchesPerEpoch), gamma: options.gamma)
      case .cosine: schedule = .cosine(totalSteps: total, minLR: 0)
      case .linear: schedule = .linear(totalSteps: total)
      }
      self.scheduler = LRScheduler(self.optimizer, schedule: schedule, warmupSteps: options.warmupSteps)
    }
    xBatch = Tensor(zeros: [options.batchSize, train.channels, train.height, train.width])
    if let path = options.checkpoint, group.rank == 0 {
      // Fail now, not after an epoch of training, if the checkpoint can't be written there.
      let dir = (path as NSString).deletingLastPathComponent
      if !dir.isEmpty {
        do {
          try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
          throw CheckpointError.invalid(file: path, reason: "cannot create its directory \(dir): \(error.localizedDescription)")
        }
      }
      // This run is now the only writer of these files: drop what writes killed mid-way left.
      let ck = Checkpoint(path: path)
      for file in [ck.statePath, path, ck.bestPath] { removeInterruptedWrites(of: file) }
    }
    if options.resume, let path = options.checkpoint {
      let ck = Checkpoint(path: path)
      if fileStatus(ck.statePath).exists {
        try restore(from: ck)
        resumedFromStep = step
        // A kill between the state file's write and the model file's leaves the model file a
        // checkpoint behind (or missing). The state holds the weights: write the model file
        // again now, so that a resume with nothing left to train still leaves the files of an
        // uninterrupted run.
        if group.rank == 0, (try? SafetensorsFile.read(path: path))?.metadata["step"] != String(step) {
          try Checkpoint.writeModel(model, metadata: metadata, step: step, to: path)
        }
      } else if fileStatus(path).exists {
        throw CheckpointError.invalid(file: path, reason: "its training state \(ck.statePath) is missing, so the run "
          + "cannot resume exactly; start from these weights with --init \(path) instead of --resume")
      }
    }
    // --init seeds a run that has no checkpoint of its own yet: a fresh one, or a --resume
    // killed before its first checkpoint (then the same command starts over from --init).
    if let initPath = options.initFrom, resumedFromStep == nil {
      _ = try Checkpoint.loadModel(model, from: initPath)
    }
    self.scheduler.seek(to: step)
    if options.resume, group.size > 1 { try checkRanksRestoredTheSameState() }
    if group.size > 1 {
      try joinGroup()
      if options.bucketCapMB > 0 {
        buckets = GradientBuckets(model: model, block: gradients, group: group,
          capacityBytes: Int(options.bucketCapMB * 1_048_576))
      }
    }
    if let logPath = options.logPath, group.rank == 0 {
      if let resumed = resumedFromStep, fileStatus(logPath).exists {
        try truncateLog(logPath, toStep: resumed, epoch: startEpoch)
        log = try CheckedFile(appendingTo: logPath, truncate: false, what: "the log file")
      } else {
        log = try CheckedFile(appendingTo: logPath, truncate: true, what: "the log file")
      }
    }
  }
}

extension Module {
  /// What the `Trainer` does to any model before training it, for a training loop of your own:
  /// the first layer skips its input gradient (the input is data: nothing upstream needs it,
  /// as a PyTorch input that does not require grad), every `Conv2D` shares one scratch
  /// workspace (`shareConvWorkspace()`), and every parameter gradient moves into one block
  /// (`packGradients()`, so that `zeroGrad()`, clipping and an all-reduce are single passes).
  /// Changes no result. Returns the gradient block.
  @discardableResult
  public func prepareForTraining() -> TensorStorage {
    propagatesInputGradient = false
    shareConvWorkspace()
    return packGradients()
  }
}
