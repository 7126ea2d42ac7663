// TrainOptions: what defines a training run (the optimizer, schedule, data order, checkpoints,
// log, numerics checks), its per-step and per-epoch records, and the errors that stop it.
import NN
import TensorCore

/// Which optimizer to train with.
public enum OptimizerKind: String, CaseIterable, Sendable { case sgd, adam, adamw }
/// Which learning-rate schedule to use.
public enum ScheduleKind: String, CaseIterable, Sendable { case constant, step, cosine, linear }

/// Everything that defines a training run.
public struct TrainOptions: Sendable {
  /// The network to build by name (`Trainer(options:train:test:)` looks it up in its model
  /// factories; the seed networks by default). A trainer given a model ignores it.
  public var model = "seed-aconc"
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
  /// Random crop (padding `cropPadding`) and horizontal flip of training images, as usual for CIFAR-10.
  public var augment = false
  /// The random crop (padding `cropPadding`) alone, or with `horizontalFlip` (`augment` implies both).
  public var randomCrop = false
  /// The zero padding on each side before the random crop (torchvision's `RandomCrop(H, padding)`);
  /// 4 as for CIFAR-10, 2 for 28×28 Fashion-MNIST.
  public var cropPadding = 4
  /// The horizontal flip (probability ½) alone, or with `randomCrop`.
  public var horizontalFlip = false

  /// What `augment`, `randomCrop` and `horizontalFlip` ask for.
  public var augmentation: Augmentation {
    Augmentation(cropPadding: augment || randomCrop ? cropPadding : nil, flip: augment || horizontalFlip)
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
  /// In a data-parallel run, the size in MiB of the gradient buckets whose all-reduce starts
  /// while backward still runs (PyTorch DDP's `bucket_cap_mb`; the first bucket is at most
  /// 1 MiB). 0 all-reduces every gradient at once after the backward pass.
  public var bucketCapMB: Double = 25

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
    guard bucketCapMB.isFinite && bucketCapMB >= 0 else { throw bad("--bucket-cap-mb must be a non-negative number, got \(bucketCapMB)") }
    guard labelSmoothing.isFinite && labelSmoothing >= 0 && labelSmoothing < 1 else {
      throw bad("--label-smoothing must be in [0, 1), got \(labelSmoothing)")
    }
    guard cropPadding >= 1 && cropPadding <= 64 else { throw bad("the crop padding must be in 1...64, got \(cropPadding)") }
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
  /// For streamed data (a folder): the fraction of this epoch's step time so far spent waiting
  /// for the loader's next batch (above 0.1 the run is data-bound: more `--workers` would help);
  /// nil for in-memory data.
  public var dataWait: Double?
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
  /// For streamed data: the fraction of the epoch's step time spent waiting for the loader
  /// (nil for in-memory data).
  public var dataWait: Double?
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
