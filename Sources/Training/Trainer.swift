// Trainer: the training loop that acon-train runs and other programs can reuse: batches,
// forward, loss, backward, optimizer step, schedule, per-epoch evaluation, JSONL log,
// checkpoints (latest and best) and exact resume, also after a kill at any moment. Data-parallel
// over a ProcessGroup (MPI): each process runs its shard of every global batch, gradients are
// summed in one all-reduce, and only rank 0 logs, evaluates and writes checkpoints.
import Collectives
import Foundation
import NN
import TensorCore

/// Which optimizer to train with.
public enum OptimizerKind: String, CaseIterable, Sendable { case sgd, adam, adamw }
/// Which learning-rate schedule to use.
public enum ScheduleKind: String, CaseIterable, Sendable { case constant, step, cosine, linear }

/// Everything that defines a training run.
public struct TrainOptions: Sendable {
  /// The network to train.
  public var model: ModelKind = .seedAconc
  /// Passes over the training set.
  public var epochs = 1
  /// Stop after this many steps in all (nil: run every epoch to the end).
  public var maxSteps: Int?
  /// Images per step.
  public var batchSize = 64
  /// SGD, Adam or AdamW.
  public var optimizer: OptimizerKind = .adam
  /// The base learning rate.
  public var learningRate: Float = 1e-3
  /// SGD momentum.
  public var momentum: Float = 0.9
  /// Applied to conv and linear weights only (see `ParameterGroup.defaultGroups`). Note that
  /// PyTorch's AdamW defaults to 0.01 (`acon-train --optimizer adamw` does too); set it here.
  public var weightDecay: Float = 0
  /// How the learning rate changes over the steps.
  public var schedule: ScheduleKind = .constant
  /// Steps of linear warm-up before the schedule.
  public var warmupSteps = 0
  /// The step schedule's period in epochs (PyTorch's StepLR `step_size`).
  public var stepSize = 1
  /// The step schedule's factor per period (StepLR's `gamma`).
  public var gamma: Float = 0.1
  /// Cross-entropy label smoothing ε in [0, 1) (multi-class models only).
  public var labelSmoothing: Float = 0
  /// Seeds the initial weights and the data order.
  public var seed: UInt64 = 0
  /// Shuffle the training set each epoch (false: file order).
  public var shuffle = true
  /// Drop each epoch's last, smaller batch.
  public var dropLast = false
  /// Random crop (padding 4) and horizontal flip of training images, as usual for CIFAR-10.
  public var augment = false
  /// The random crop (padding 4) alone, or with `horizontalFlip` (`augment` implies both).
  public var randomCrop = false
  /// The horizontal flip (probability ½) alone, or with `randomCrop`.
  public var horizontalFlip = false

  /// What `augment`, `randomCrop` and `horizontalFlip` ask for.
  public var augmentation: Augmentation {
    Augmentation(cropPadding: augment || randomCrop ? 4 : nil, flip: augment || horizontalFlip)
  }
  /// The model checkpoint path (`.safetensors`); nil: no checkpoints.
  public var checkpoint: String?
  /// Also checkpoint every N steps (nil: at the end of each epoch only).
  public var checkpointEvery: Int?
  /// Continue from `checkpoint`'s state file. When neither it nor the model file exists yet
  /// (a run killed before its first checkpoint), start from scratch: `Trainer.resumedFromStep`
  /// is then nil. A model file without its state file is an error.
  public var resume = false
  /// Start from these weights (a model file, ours or PyTorch's).
  public var initFrom: String?
  /// One JSON record per step and per epoch.
  public var logPath: String?
  /// The data set's name (`fashion-mnist`, `cifar10`, `synthetic`), written into the model
  /// file's metadata as `data` so that `acon-train evaluate` picks the same one.
  public var dataName: String?
  /// Evaluate on the test split after each epoch.
  public var evaluateEachEpoch = true
  /// Check the loss and the gradient norm every step; stop on NaN or Inf, naming the step and
  /// the parameter whose gradient went bad first (in backward order).
  public var checkNumerics = true
  /// Rescale gradients whose global L2 norm exceeds this (PyTorch's `clip_grad_norm_`).
  public var clipGradNorm: Float?
  /// In a data-parallel run, compute every BatchNorm's training statistics (those inside
  /// Meta-ACON's β network included) over the global batch, as one process would
  /// (synchronised batch norm). Without it each process normalises by its own shard.
  public var syncBatchNorm = false

  /// The defaults: seed-aconc, one epoch, Adam at 1e-3, batch 64.
  public init() {}

  /// Rejects out-of-range values with a message naming the option.
  public func validate() throws {
    func bad(_ s: String) -> TensorError { .invalidArgument(s) }
    guard epochs >= 1 else { throw bad("--epochs must be at least 1, got \(epochs)") }
    guard batchSize >= 1 && batchSize <= 65536 else { throw bad("--batch-size must be in 1...65536, got \(batchSize)") }
    if let m = maxSteps, m < 1 { throw bad("--max-steps must be at least 1, got \(m)") }
    guard learningRate.isFinite && learningRate > 0 else { throw bad("--lr must be a positive number, got \(learningRate)") }
    guard momentum.isFinite && momentum >= 0 && momentum < 1 else { throw bad("--momentum must be in [0, 1), got \(momentum)") }
    guard weightDecay.isFinite && weightDecay >= 0 else { throw bad("--weight-decay must be non-negative, got \(weightDecay)") }
    guard warmupSteps >= 0 else { throw bad("--warmup-steps must be non-negative, got \(warmupSteps)") }
    guard stepSize >= 1 else { throw bad("--step-size must be at least 1 epoch, got \(stepSize)") }
    guard gamma.isFinite && gamma > 0 else { throw bad("--gamma must be a positive number, got \(gamma)") }
    guard labelSmoothing.isFinite && labelSmoothing >= 0 && labelSmoothing < 1 else {
      throw bad("--label-smoothing must be in [0, 1), got \(labelSmoothing)")
    }
    if let e = checkpointEvery, e < 1 { throw bad("--checkpoint-every must be at least 1, got \(e)") }
    if resume && checkpoint == nil { throw bad("--resume needs --checkpoint PATH") }
    if let c = clipGradNorm, !(c.isFinite && c > 0) { throw bad("--clip-grad-norm must be a positive number, got \(c)") }
  }
}

/// One training step's numbers.
public struct StepInfo: Sendable {
  /// Steps completed, from 1.
  public var step: Int
  /// The epoch, from 1.
  public var epoch: Int
  /// Batches done in this epoch.
  public var batchInEpoch: Int
  /// Batches in an epoch.
  public var batchesPerEpoch: Int
  /// The batch loss before the update.
  public var loss: Float
  /// The learning rate of this step.
  public var learningRate: Float
  /// This step's throughput.
  public var imagesPerSecond: Double
}

/// One epoch's numbers.
public struct EpochRecord: Sendable {
  /// The epoch, from 1.
  public var epoch: Int
  /// Mean training loss over the epoch's batches.
  public var trainLoss: Double
  /// Accuracy on the test split, if evaluated.
  public var testAccuracy: Double?
  /// Mean loss on the test split, if evaluated.
  public var testLoss: Double?
  /// The epoch's training throughput.
  public var imagesPerSecond: Double
}

/// Accuracy and mean loss on a data set.
public struct Evaluation: Sendable, Equatable {
  /// Fraction of correct predictions.
  public var accuracy: Double
  /// Mean loss per example.
  public var loss: Double
  /// Examples evaluated.
  public var examples: Int
}

/// Errors that stop training.
public enum TrainingError: Error, CustomStringConvertible {
  /// The loss was NaN or Inf at `step`.
  case nonFiniteLoss(step: Int, loss: Float, checkpoint: String?)
  /// A gradient was NaN or Inf at `step`; `parameter` went bad first in the backward pass.
  case nonFiniteGradient(step: Int, parameter: String, checkpoint: String?)
  /// Labels that the model's loss can't take.
  case badLabels(String)

  public var description: String {
    switch self {
    case let .nonFiniteLoss(step, loss, checkpoint):
      return "training stopped: the loss is \(loss) at step \(step)"
        + (checkpoint.map { "; the last good checkpoint is \($0)" } ?? "")
        + ". Lower --lr, or check the data."
    case let .nonFiniteGradient(step, parameter, checkpoint):
      return "training stopped: the gradient of \(parameter) is NaN or Inf at step \(step) (the first to go bad in "
        + "the backward pass)" + (checkpoint.map { "; the last good checkpoint is \($0)" } ?? "")
        + ". Lower --lr, or try --clip-grad-norm."
    case let .badLabels(s): return s
    }
  }
}

/// Runs a training job.
public final class Trainer {
  /// The run's settings.
  public let options: TrainOptions
  /// The network being trained.
  public let model: Sequential
  /// What the checkpoints record about the model.
  public let metadata: ModelMetadata
  /// The training split.
  public let trainSet: ImageDataset
  /// The test split, evaluated after each epoch.
  public let testSet: ImageDataset?
  /// The optimizer over the model's parameters.
  public let optimizer: Optimizer
  /// Called after every step (progress bars).
  public var onStep: ((StepInfo) -> Void)?
  /// Called after every epoch.
  public var onEpoch: ((EpochRecord) -> Void)?
  /// The processes of this run; a single process unless training is data-parallel.
  public let group: ProcessGroup
  /// Seconds spent in the gradient all-reduce in this run (0 for a single process).
  public private(set) var allReduceSeconds = 0.0
  /// Seconds this process waited for the others before the all-reduce (load imbalance).
  public private(set) var waitSeconds = 0.0
  /// Every step's loss, in order (including steps replayed from nothing: after a resume this
  /// holds only the steps this run took).
  public private(set) var losses: [Float] = []
  /// Every epoch's record from this run.
  public private(set) var epochs: [EpochRecord] = []
  /// The step a `resume` continued from; nil when the run started from scratch (also when
  /// `resume` found no checkpoint yet).
  public private(set) var resumedFromStep: Int?
  /// Set by a resume whose checkpoint was written with another thread count per process or
  /// another number of processes: the run continues, but not bit for bit (OpenBLAS's sgemm
  /// and the data-parallel sum round differently). Says how to resume exactly.
  public private(set) var resumeWarning: String?

  private let loader: BatchLoader
  private var step = 0  // steps completed
  private var startEpoch = 0
  private var startBatch = 0
  /// The resumed epoch's train loss sum and example count before `startBatch`.
  private var startLossSum = 0.0, startSeen = 0
  private var bestAccuracy = -1.0
  private let xBatch: Tensor  // the global batch, or this process's rows of it in a data-parallel run
  private let gradients: TensorStorage  // every parameter gradient, contiguous (packGradients)
  private var scalars = [Double](repeating: 0, count: 1)
  private var labels: [Int32] = []
  private var targets: [Float] = []
  private let ce = CrossEntropyLoss()
  private let bce = BCEWithLogitsLoss()
  private var log: CheckedFile?

  /// Prepares a run: builds the model (or loads `initFrom`, or resumes from `checkpoint`).
  /// With a `group` of several processes (each calling this with the same options and data),
  /// rank 0's initial weights are broadcast to the others; `checkpoint` is read by every
  /// process on resume and written by rank 0 only.
  public init(
    options: TrainOptions, train: ImageDataset, test: ImageDataset?, normalization: Normalization,
    group: ProcessGroup = SingleProcess()
  ) throws {
    try options.validate()
    guard options.batchSize >= group.size else {
      throw TensorError.invalidArgument(
        "--batch-size \(options.batchSize) is smaller than the \(group.size) processes: each needs at least one example")
    }
    self.options = options
    self.group = group
    trainSet = train
    testSet = test
    // Two classes train as the seed does: one logit, binary cross-entropy with logits.
    let classes = train.classes == 2 ? 1 : train.classes
    if classes == 1 && options.labelSmoothing != 0 {
      throw TensorError.invalidArgument(
        "--label-smoothing applies to the cross-entropy of 3 or more classes; this data set has 2 (one logit, binary cross-entropy)")
    }
    metadata = ModelMetadata(model: options.model, input: [train.channels, train.height, train.width],
      classes: classes, normalization: normalization, data: options.dataName)
    model = try options.model.build(input: metadata.input, classes: classes, seed: options.seed)
    gradients = model.packGradients()
    let params = model.namedParameters()
    switch options.optimizer {
    case .sgd:
      optimizer = SGD(parameters: params, learningRate: options.learningRate, momentum: options.momentum,
        weightDecay: options.weightDecay)
    case .adam:
      optimizer = Adam(parameters: params, learningRate: options.learningRate, weightDecay: options.weightDecay)
    case .adamw:
      optimizer = Adam.adamW(parameters: params, learningRate: options.learningRate, weightDecay: options.weightDecay)
    }
    loader = BatchLoader(dataset: train, batchSize: options.batchSize, shuffle: options.shuffle,
      dropLast: options.dropLast, normalization: normalization, augment: options.augmentation,
      seed: options.seed)
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
    if options.resume, group.size > 1 { try checkRanksRestoredTheSameState() }
    if group.size > 1 { try joinGroup() }
    if let logPath = options.logPath, group.rank == 0 {
      if let resumed = resumedFromStep, fileStatus(logPath).exists {
        try truncateLog(logPath, toStep: resumed, epoch: startEpoch)
        log = try CheckedFile(appendingTo: logPath, truncate: false, what: "the log file")
      } else {
        log = try CheckedFile(appendingTo: logPath, truncate: true, what: "the log file")
      }
    }
  }

  /// On a data-parallel `--resume`: every rank has restored a step and a state (weights,
  /// BatchNorm statistics, optimizer state, position) from the checkpoint it read; they must all
  /// be rank 0's. Each rank's step and a checksum of its state are gathered on every rank (one
  /// all-reduce, so every rank sees the same verdict and none is left waiting), and any rank
  /// that differs from rank 0 is an error naming both.
  private func checkRanksRestoredTheSameState() throws {
    let n = group.size, r = group.rank
    var mine = [Double](repeating: 0, count: 3 * n)
    let sum = resumedFromStep == nil ? 0 : stateChecksum()
    mine[3 * r] = Double(resumedFromStep ?? -1)
    mine[3 * r + 1] = Double(sum >> 32)
    mine[3 * r + 2] = Double(sum & 0xFFFF_FFFF)
    try mine.withUnsafeMutableBufferPointer { try group.allReduceSum($0) }
    func describe(_ k: Int) -> String {
      let step = Int(mine[3 * k])
      guard step >= 0 else { return "found no checkpoint (it would start from scratch)" }
      let sum = UInt64(mine[3 * k + 1]) << 32 | UInt64(mine[3 * k + 2])
      return "restored step \(step) (state checksum \(String(sum, radix: 16)))"
    }
    for k in 1..<n where mine[3 * k] != mine[0] || mine[3 * k + 1] != mine[1] || mine[3 * k + 2] != mine[2] {
      let path = options.checkpoint.map { Checkpoint(path: $0).statePath } ?? "--checkpoint"
      throw CheckpointError.invalid(file: path,
        reason: "rank \(k) \(describe(k)) but rank 0 \(describe(0)): every rank must resume from the same "
          + "checkpoint; put it where all ranks read the same file (a shared file system) and run again")
    }
  }

  /// FNV-1a over the bits of what a resume restores: the weights, the BatchNorm statistics, the
  /// optimizer's state and step count, and the position in the data.
  private func stateChecksum() -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    func mix(_ w: UInt64) {
      h ^= w
      h &*= 0x0000_0100_0000_01B3
    }
    func mix(_ t: Tensor) {
      mix(UInt64(t.count))
      for i in 0..<t.count { mix(UInt64(t.data[i].bitPattern)) }
    }
    for (_, p) in model.namedParameters() { mix(p.value) }
    for (_, b) in model.namedBuffers() { if case let .float(t) = b { mix(t) } }
    for (_, t) in optimizer.state { mix(t) }
    for v in [step, optimizer.stepCount, startEpoch, startBatch, startSeen] { mix(UInt64(bitPattern: Int64(v))) }
    mix(startLossSum.bitPattern)
    mix(bestAccuracy.bitPattern)
    return h
  }

  /// On resume from step `s` in epoch `e` (0-based), keeps the log records of the run up to its
  /// checkpoint: step records up to `s` and epoch records of the epochs before `e`. What the
  /// killed run logged after its checkpoint is trained again, and logged again, so the log
  /// reads as one uninterrupted run. Rewritten atomically.
  private func truncateLog(_ path: String, toStep s: Int, epoch e: Int) throws {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw TensorError.invalidArgument("\(path): cannot read the log file to resume it")
    }
    var kept = Data()
    for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
      guard let record = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
        continue  // a line cut short by the kill
      }
      let keep: Bool
      if record["loss"] != nil, let step = record["step"] as? Int {
        keep = step <= s
      } else if let epoch = record["epoch"] as? Int {
        keep = epoch <= e  // epoch records count from 1
      } else {
        keep = false
      }
      if keep {
        kept.append(Data(line))
        kept.append(UInt8(ascii: "\n"))
      }
    }
    try writeFileAtomically(path: path, bytes: [UInt8](kept))
  }

  /// Starts every process from rank 0's weights and BatchNorm statistics, and hooks the
  /// BatchNorms up to the group when `syncBatchNorm` is set.
  private func joinGroup() throws {
    for (_, p) in model.namedParameters() {
      try group.broadcast(UnsafeMutableBufferPointer(start: p.value.data, count: p.value.count), root: 0)
    }
    for (_, b) in model.namedBuffers() {
      if case let .float(t) = b { try group.broadcast(UnsafeMutableBufferPointer(start: t.data, count: t.count), root: 0) }
    }
    if options.syncBatchNorm {
      let g = group
      model.visit { m in
        if let bn = m as? BatchNorm2D { bn.allReduce = { try g.allReduceSum($0) } }
      }
    }
  }

  /// Rows `lo ..< hi` of a global batch of `n` that this process trains on.
  private func shard(of n: Int) -> Range<Int> {
    (n * group.rank / group.size)..<(n * (group.rank + 1) / group.size)
  }

  /// Steps completed, counting those before a resume.
  public var completedSteps: Int { step }

  private var totalSteps: Int {
    let all = options.epochs * loader.batchesPerEpoch
    return options.maxSteps.map { Swift.min($0, all) } ?? all
  }

  private func learningRate(at step: Int) -> Float {
    let schedule: LRSchedule
    switch options.schedule {
    case .constant: schedule = .constant
    case .step: schedule = .step(stepSize: options.stepSize * Swift.max(1, loader.batchesPerEpoch), gamma: options.gamma)
    case .cosine: schedule = .cosine(totalSteps: totalSteps, minLR: 0)
    case .linear: schedule = .linear(totalSteps: totalSteps)
    }
    return schedule.learningRate(base: options.learningRate, step: step, warmupSteps: options.warmupSteps)
  }

  /// Trains until the epochs or `maxSteps` run out. Returns the per-epoch records.
  @discardableResult
  public func run() throws -> [EpochRecord] {
    let classes = metadata.classes
    for epoch in startEpoch..<options.epochs {
      if step >= totalSteps { break }
      model.train()
      loader.startEpoch(epoch)
      let first = epoch == startEpoch ? startBatch : 0
      var lossSum = epoch == startEpoch ? startLossSum : 0, seen = epoch == startEpoch ? startSeen : 0
      let epochStart = DispatchTime.now().uptimeNanoseconds
      var b = first
      while b < loader.batchesPerEpoch && step < totalSteps {
        let t0 = DispatchTime.now().uptimeNanoseconds
        // Data-parallel: this process decodes only its rows of the global batch of n (the same
        // images, crops and flips one process draws for those positions). The loader resizes
        // xBatch to [rows, C, H, W], reusing its storage.
        let n = loader.size(ofBatch: b)
        let rows = shard(of: n)
        guard !rows.isEmpty else {
          throw TensorError.invalidArgument(
            "batch \(b + 1) has \(n) examples, fewer than the \(group.size) processes; use --drop-last or a smaller --batch-size")
        }
        loader.batch(b, rows: rows, into: xBatch, labels: &labels)
        let x = xBatch
        let localLabels = labels
        let lr = learningRate(at: step)
        optimizer.learningRate = lr
        model.zeroGrad()
        let logits = try model.forward(x)
        var (loss, grad) = try lossAndGradient(logits, labels: localLabels, n: rows.count, classes: classes)
        if group.size > 1 {
          // The global batch's mean loss is Σ (n_r/n)·loss_r: scale this share, then sum.
          let share = Float(rows.count) / Float(n)
          for i in 0..<grad.count { grad.data[i] *= share }
          try scalars.withUnsafeMutableBufferPointer { buf in
            buf[0] = Double(loss) * Double(share)
            try group.allReduceSum(buf)
          }
          loss = Float(scalars[0])
        }
        guard loss.isFinite else {
          throw TrainingError.nonFiniteLoss(step: step + 1, loss: loss, checkpoint: lastCheckpointPath)
        }
        _ = try model.backward(grad)
        if group.size > 1 {
          // One all-reduce over every gradient (contiguous since packGradients). The barrier
          // first separates waiting for the slowest process from the all-reduce itself.
          let w0 = DispatchTime.now().uptimeNanoseconds
          try group.barrier()
          let r0 = DispatchTime.now().uptimeNanoseconds
          try group.allReduceSum(UnsafeMutableBufferPointer(start: gradients.pointer, count: gradients.capacity))
          let r1 = DispatchTime.now().uptimeNanoseconds
          waitSeconds += Double(r0 - w0) / 1e9
          allReduceSeconds += Double(r1 - r0) / 1e9
        }
        if options.checkNumerics || options.clipGradNorm != nil { try guardGradients(step: step + 1) }
        optimizer.step()
        step += 1
        b += 1
        let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        let info = StepInfo(step: step, epoch: epoch + 1, batchInEpoch: b, batchesPerEpoch: loader.batchesPerEpoch,
          loss: loss, learningRate: lr, imagesPerSecond: Double(n) / dt)
        losses.append(loss)
        lossSum += Double(loss) * Double(n)
        seen += n
        try writeLog(["step": step, "epoch": epoch + 1, "loss": Double(loss), "lr": Double(lr), "images_per_s": info.imagesPerSecond])
        onStep?(info)
        // Mid-epoch only, and not at the last step: the checkpoint after the loop (which follows
        // the evaluation and the best model) covers those, and a resume from one written here
        // would skip that end-of-epoch work.
        if let every = options.checkpointEvery, step % every == 0, b < loader.batchesPerEpoch, step < totalSteps {
          try saveCheckpoint(epoch: epoch, nextBatch: b, lossSum: lossSum, seen: seen)
        }
      }
      let seconds = Double(DispatchTime.now().uptimeNanoseconds - epochStart) / 1e9
      let finished = b >= loader.batchesPerEpoch
      var record = EpochRecord(epoch: epoch + 1, trainLoss: seen > 0 ? lossSum / Double(seen) : .nan,
        testAccuracy: nil, testLoss: nil, imagesPerSecond: Double(seen) / Swift.max(seconds, 1e-9))
      if options.evaluateEachEpoch, group.rank == 0, let test = testSet {
        let e = try Trainer.evaluate(model: model, dataset: test, normalization: metadata.normalization,
          batchSize: options.batchSize, classes: classes)
        record.testAccuracy = e.accuracy
        record.testLoss = e.loss
      }
      epochs.append(record)
      var entry: [String: Any] = ["epoch": epoch + 1, "train_loss": record.trainLoss, "images_per_s": record.imagesPerSecond, "steps": step]
      if let a = record.testAccuracy, let l = record.testLoss {
        entry["test_accuracy"] = a
        entry["test_loss"] = l
      }
      try writeLog(entry)
      // The best model before the checkpoint that records its accuracy: a kill between the two
      // replays the epoch's end from the previous checkpoint and writes the same best file again.
      if let a = record.testAccuracy, a > bestAccuracy, let path = options.checkpoint, group.rank == 0 {
        bestAccuracy = a
        try Checkpoint.writeModel(model, metadata: metadata, step: step, to: Checkpoint(path: path).bestPath)
      }
      // Checkpoint: the next position is the start of the next epoch, or mid-epoch if maxSteps cut it.
      if finished {
        try saveCheckpoint(epoch: epoch + 1, nextBatch: 0)
      } else {
        try saveCheckpoint(epoch: epoch, nextBatch: b, lossSum: lossSum, seen: seen)
      }
      onEpoch?(record)
    }
    try log?.sync()
    return epochs
  }

  private var lastCheckpointPath: String?

  /// The global gradient norm: checked for NaN/Inf, and clipped when asked.
  private func guardGradients(step: Int) throws {
    let params = model.namedParameters()
    var sumSquares = 0.0
    for (_, p) in params {
      for i in 0..<p.grad.count { sumSquares += Double(p.grad.data[i]) * Double(p.grad.data[i]) }
    }
    let norm = sumSquares.squareRoot()
    if options.checkNumerics && !norm.isFinite {
      // Backward runs from the output: the bad gradient nearest the output came first.
      let bad = params.last { (_, p) in (0..<p.grad.count).contains { !p.grad.data[$0].isFinite } }
      throw TrainingError.nonFiniteGradient(step: step, parameter: bad?.0 ?? "(unknown)", checkpoint: lastCheckpointPath)
    }
    if let maxNorm = options.clipGradNorm, norm.isFinite {
      let coef = Double(maxNorm) / (norm + 1e-6)
      if coef < 1 {
        for (_, p) in params { for i in 0..<p.grad.count { p.grad.data[i] *= Float(coef) } }
      }
    }
  }

  private func lossAndGradient(_ logits: Tensor, labels: [Int32], n: Int, classes: Int) throws -> (Float, Tensor) {
    let lab = Array(labels.prefix(n))
    if classes == 1 {
      targets.removeAll(keepingCapacity: true)
      for l in lab {
        guard l == 0 || l == 1 else { throw TrainingError.badLabels("a one-output (binary) model needs labels 0 or 1, got \(l)") }
        targets.append(Float(l))
      }
      let loss = try bce(logits, targets: targets)
      return (loss, bce.gradient!)
    }
    ce.labelSmoothing = options.labelSmoothing
    let loss = try ce(logits, labels: lab)
    return (loss, ce.gradient!)
  }

  /// Accuracy and mean loss of `model` in evaluation mode over the whole `dataset`, in order.
  public static func evaluate(model: Module, dataset: ImageDataset, normalization: Normalization, batchSize: Int,
    classes: Int) throws -> Evaluation {
    let wasTraining = model.isTraining
    model.eval()
    defer { if wasTraining { model.train() } }
    let loader = BatchLoader(dataset: dataset, batchSize: batchSize, shuffle: false, dropLast: false,
      normalization: normalization, seed: 0)
    loader.startEpoch(0)
    let x = Tensor(zeros: [batchSize, dataset.channels, dataset.height, dataset.width])
    var labels: [Int32] = []
    var correct = 0, total = 0
    var lossSum = 0.0
    let ce = CrossEntropyLoss(), bce = BCEWithLogitsLoss()
    for b in 0..<loader.batchesPerEpoch {
      let n = loader.batch(b, into: x, labels: &labels)
      let logits = try model.forward(x)
      let lab = Array(labels.prefix(n))
      if classes == 1 {
        lossSum += Double(try bce(logits, targets: lab.map { Float($0) })) * Double(n)
        for i in 0..<n where (logits.data[i] > 0 ? 1 : 0) == lab[i] { correct += 1 }
      } else {
        lossSum += Double(try ce(logits, labels: lab)) * Double(n)
        for i in 0..<n {
          var best = 0
          for j in 1..<classes where logits.data[i * classes + j] > logits.data[i * classes + best] { best = j }
          if best == Int(lab[i]) { correct += 1 }
        }
      }
      total += n
    }
    return Evaluation(accuracy: total > 0 ? Double(correct) / Double(total) : 0, loss: total > 0 ? lossSum / Double(total) : 0,
      examples: total)
  }

  // MARK: - Checkpoints

  /// Prefix of the model's state_dict in the state file (`model/conv1.weight`); the optimizer's
  /// tensors have no prefix (`conv1.weight.exp_avg`).
  private static let modelPrefix = "model/"

  /// Writes the state file, then the model file. The state file holds everything a resume needs,
  /// the weights included, so a kill between the two writes (a model file one checkpoint behind,
  /// or none yet) still resumes exactly; each file is replaced atomically.
  /// `lossSum` and `seen` are the epoch's running train loss sum and example count so far, so
  /// that a resume mid-epoch reports the same epoch train loss as an uninterrupted run.
  private func saveCheckpoint(epoch: Int, nextBatch: Int, lossSum: Double = 0, seen: Int = 0) throws {
    guard let path = options.checkpoint, group.rank == 0 else { return }
    let ck = Checkpoint(path: path)
    var tensors: [String: SafetensorsValue] = [:]
    for (name, t) in optimizer.state { tensors[name] = .f32(shape: t.shape, values: t.array) }
    for (name, v) in stateDict(of: model) { tensors[Trainer.modelPrefix + name] = v }
    let meta: [String: String] = [
      "step": String(step), "epoch": String(epoch), "next_batch": String(nextBatch),
      "optimizer": options.optimizer.rawValue, "optimizer_steps": String(optimizer.stepCount),
      "seed": String(options.seed), "batch_size": String(options.batchSize), "model": options.model.rawValue,
      "best_accuracy": String(bestAccuracy), "settings": trajectorySettings,
      "epoch_loss_sum": String(lossSum.bitPattern), "epoch_examples": String(seen),
      "threads": String(Threads.count), "processes": String(group.size),
    ]
    try SafetensorsFile(metadata: meta, tensors: tensors).write(path: ck.statePath)
    try Checkpoint.writeModel(model, metadata: metadata, step: step, to: path)
    lastCheckpointPath = path
  }

  private func restore(from ck: Checkpoint) throws {
    let state = try SafetensorsFile.read(path: ck.statePath)
    let m = state.metadata
    guard let s = m["step"].flatMap(Int.init), let e = m["epoch"].flatMap(Int.init), let nb = m["next_batch"].flatMap(Int.init),
      let os = m["optimizer_steps"].flatMap(Int.init)
    else { throw CheckpointError.invalid(file: ck.statePath, reason: "missing step, epoch, next_batch or optimizer_steps in its metadata") }
    guard m["optimizer"] == options.optimizer.rawValue, m["model"] == options.model.rawValue,
      m["batch_size"] == String(options.batchSize), m["seed"] == String(options.seed)
    else {
      throw CheckpointError.invalid(file: ck.statePath,
        reason: "was written by a run with other settings (model \(m["model"] ?? "?"), optimizer \(m["optimizer"] ?? "?"), batch size \(m["batch_size"] ?? "?"), seed \(m["seed"] ?? "?")); resume with the same ones")
    }
    // Files from before "settings" was written carry none; then only the above is checked.
    if let saved = m["settings"], saved != trajectorySettings {
      let mine = Trainer.settingsMap(trajectorySettings), theirs = Trainer.settingsMap(saved)
      let differ = Set(mine.keys).union(theirs.keys).sorted().filter { mine[$0] != theirs[$0] }
        .map { "\($0) \(theirs[$0] ?? "unset") (now \(mine[$0] ?? "unset"))" }
      throw CheckpointError.invalid(file: ck.statePath,
        reason: "was written by a run with other settings: \(differ.joined(separator: ", ")); resume with the same ones, "
          + "or start a new run from its weights with --init \(ck.path)")
    }
    var weights: [String: SafetensorsValue] = [:], optimizerState: [String: SafetensorsValue] = [:]
    for (name, v) in state.tensors {
      if name.hasPrefix(Trainer.modelPrefix) {
        weights[String(name.dropFirst(Trainer.modelPrefix.count))] = v
      } else {
        optimizerState[name] = v
      }
    }
    if !weights.isEmpty {
      try loadStateDict(weights, into: model, file: ck.statePath)
    } else {
      // A state file from before the weights went into it: the model file must be of its step.
      let modelMeta = try Checkpoint.loadModel(model, from: ck.path)
      guard modelMeta["step"] == String(s) else {
        throw CheckpointError.invalid(file: ck.path, reason: "its step (\(modelMeta["step"] ?? "none")) does not match the state file's (\(s)); the pair is inconsistent")
      }
    }
    for (name, v) in optimizerState {
      guard case let .f32(shape, values) = v else { throw CheckpointError.invalid(file: ck.statePath, reason: "tensor \(name) is not F32") }
      let t = Tensor(shape: shape, values: values)
      guard optimizer.restore(state: name, from: t) else { throw CheckpointError.invalid(file: ck.statePath, reason: "optimizer state \(name) \(Shape.text(shape)) matches no parameter") }
    }
    optimizer.stepCount = os
    step = s
    startEpoch = e
    startBatch = nb
    startLossSum = m["epoch_loss_sum"].flatMap(UInt64.init).map(Double.init(bitPattern:)) ?? 0
    startSeen = m["epoch_examples"].flatMap(Int.init) ?? 0
    bestAccuracy = m["best_accuracy"].flatMap(Double.init) ?? -1
    lastCheckpointPath = ck.path
    // Files from before these were recorded carry neither: nothing to compare.
    let threads = m["threads"].flatMap(Int.init), processes = m["processes"].flatMap(Int.init)
    var changes: [String] = [], causes: [String] = [], fixes: [String] = []
    if let t = threads, t != Threads.count {
      changes.append("\(t) thread\(t == 1 ? "" : "s") per process (now \(Threads.count))")
      causes.append("OpenBLAS's sgemm rounds differently per thread count")
      fixes.append("--threads \(t)")
    }
    if let p = processes, p != group.size {
      changes.append("\(p) process\(p == 1 ? "" : "es") (now \(group.size))")
      causes.append("the batch's gradient is summed in another order")
      fixes.append("\(p) process\(p == 1 ? "" : "es")")
    }
    if !changes.isEmpty {
      resumeWarning = "\(ck.statePath) was written by a run with \(changes.joined(separator: " and ")): "
        + causes.joined(separator: " and ") + ", so this run goes on correctly but not bit for bit as an "
        + "uninterrupted one would; resume with \(fixes.joined(separator: " and ")) for that"
    }
  }

  /// The options besides model, optimizer, batch size and seed that shape the run's losses,
  /// as `key=value` pairs joined by `;`, checked on resume. The number of epochs and the step
  /// cap count only where the schedule depends on them (cosine), so a constant-rate run can be
  /// resumed with more epochs.
  private var trajectorySettings: String {
    var pairs: [(String, String)] = [
      ("lr", "\(options.learningRate)"), ("momentum", "\(options.momentum)"), ("weight_decay", "\(options.weightDecay)"),
      ("schedule", options.schedule.rawValue), ("warmup_steps", "\(options.warmupSteps)"),
      ("shuffle", "\(options.shuffle)"), ("drop_last", "\(options.dropLast)"), ("augment", options.augmentation.text),
      ("clip_grad_norm", options.clipGradNorm.map { "\($0)" } ?? "none"),
      ("train_examples", "\(trainSet.count)"), ("input", Shape.text(metadata.input)), ("classes", "\(metadata.classes)"),
    ]
    if options.schedule == .cosine || options.schedule == .linear { pairs.append(("total_steps", "\(totalSteps)")) }
    if options.schedule == .step { pairs += [("step_size", "\(options.stepSize)"), ("gamma", "\(options.gamma)")] }
    if options.labelSmoothing != 0 { pairs.append(("label_smoothing", "\(options.labelSmoothing)")) }
    return pairs.map { "\($0.0)=\($0.1)" }.joined(separator: ";")
  }

  private static func settingsMap(_ text: String) -> [String: String] {
    var m: [String: String] = [:]
    for pair in text.split(separator: ";") {
      let kv = pair.split(separator: "=", maxSplits: 1)
      if kv.count == 2 { m[String(kv[0])] = String(kv[1]) }
    }
    return m
  }

  /// Appends one JSON line to the log; a failed write stops the run with an error naming the file.
  private func writeLog(_ record: [String: Any]) throws {
    guard let log else { return }
    var bytes = [UInt8](try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys]))
    bytes.append(UInt8(ascii: "\n"))
    try log.write(bytes)
  }
}
