// Checkpoint: a model file that holds exactly the model's state_dict in safetensors (so PyTorch
// loads it with load_state_dict(strict=True)), plus a training-state file beside it with the
// optimizer's tensors, the step, epoch and data order, so --resume continues bit for bit. The
// trainer also puts a copy of the weights in the state file (and writes it first), so the state
// file alone defines a resume, even after a kill between the two writes.
import Foundation
import ImageData
import NN
import TensorCore

/// What the model file's `__metadata__` records.
public struct ModelMetadata: Equatable, Sendable {
  /// The model's name: a factory's (`seed-aconc`, …) or any other (`my-net`).
  public var model: String
  /// `[C, H, W]`.
  public var input: [Int]
  /// Output classes.
  public var classes: Int
  /// The input normalisation used in training.
  public var normalization: Normalization
  /// The data set trained on (`fashion-mnist`, `cifar10`, `synthetic`), if known: `evaluate`
  /// then defaults to it.
  public var data: String?
  /// The class names in label order (`class_names`, a JSON array), e.g. a folder's class folders.
  /// A one-output (binary) model has two.
  public var classNames: [String]?
  /// The pipeline training images went through (`train_transform`), e.g. RandomResizedCrop, flip.
  public var trainTransform: ImagePipeline?
  /// The pipeline evaluation and prediction apply (`eval_transform`): resize, centre crop, and the
  /// tensor convention (ImageNet's mean/std or the official BGR 0–255). When present it, not
  /// `normalization`, says how pixels become the model's input.
  public var evalTransform: ImagePipeline?
  /// The share of DIR/train carved out for validation (`val_split`) when there was no DIR/val.
  public var valSplit: Double?
  /// The seed of that split (`split_seed`).
  public var splitSeed: UInt64?

  /// Metadata for a model named `model` taking `[C, H, W]` inputs with `classes` outputs.
  public init(model: String, input: [Int], classes: Int, normalization: Normalization, data: String? = nil) {
    self.model = model
    self.input = input
    self.classes = classes
    self.normalization = normalization
    self.data = data
  }

  /// As safetensors metadata strings.
  public var strings: [String: String] {
    var m = ["format": "pt", "model": model, "input": input.map(String.init).joined(separator: "x"),
     "classes": String(classes),
     "normalization_mean": normalization.mean.map { String($0) }.joined(separator: ","),
     "normalization_std": normalization.std.map { String($0) }.joined(separator: ",")]
    if let data { m["data"] = data }
    if let classNames { m["class_names"] = FolderMetadata.jsonArray(classNames) }
    if let trainTransform { m["train_transform"] = trainTransform.description }
    if let evalTransform { m["eval_transform"] = evalTransform.description }
    if let valSplit { m["val_split"] = String(valSplit) }
    if let splitSeed { m["split_seed"] = String(splitSeed) }
    return m
  }

  /// Parses metadata (ours, of any version); `fallbackModel` is used when the file names none
  /// (a file PyTorch wrote). Any model name is accepted: whoever builds the model checks it.
  public init(strings m: [String: String], file: String, fallbackModel: String?, fallbackInput: [Int], fallbackClasses: Int,
    fallbackNormalization: Normalization) throws {
    if let name = m["model"] {
      guard !name.isEmpty, name.count <= 200 else {
        throw CheckpointError.invalid(file: file, reason: "metadata model name is empty or longer than 200 characters")
      }
      model = name
    } else if let f = fallbackModel {
      model = f
    } else {
      throw CheckpointError.invalid(file: file, reason: "its metadata names no model; pass --model")
    }
    if let s = m["input"] {
      let dims = s.split(separator: "x", omittingEmptySubsequences: false).map { Int($0) ?? -1 }
      guard dims.count == 3, dims.allSatisfy({ $0 > 0 }), dims[0] <= ModelKind.maxChannels,
        dims[1] <= ModelKind.maxSide, dims[2] <= ModelKind.maxSide
      else {
        throw CheckpointError.invalid(
          file: file,
          reason: "metadata input '\(s)' is not CxHxW with positive sizes (at most \(ModelKind.maxChannels) channels "
            + "and \(ModelKind.maxSide) pixels a side)")
      }
      input = dims
    } else {
      input = fallbackInput
    }
    if let s = m["classes"] {
      guard let k = Int(s), k > 0, k <= ModelKind.maxClasses else {
        throw CheckpointError.invalid(
          file: file, reason: "metadata classes '\(s)' is not an integer from 1 to \(ModelKind.maxClasses)")
      }
      classes = k
    } else {
      classes = fallbackClasses
    }
    data = m["data"]
    if let ms = m["normalization_mean"], let ss = m["normalization_std"] {
      let mean = ms.split(separator: ",").compactMap { Float($0) }, std = ss.split(separator: ",").compactMap { Float($0) }
      guard mean.count == input[0], std.count == input[0] else {
        throw CheckpointError.invalid(file: file, reason: "metadata normalisation does not have \(input[0]) channel values")
      }
      guard mean.allSatisfy({ $0.isFinite }), std.allSatisfy({ $0.isFinite && $0 > 0 }) else {
        throw CheckpointError.invalid(
          file: file, reason: "metadata normalisation needs finite means and positive, finite deviations")
      }
      normalization = Normalization(mean: mean, std: std)
    } else {
      normalization = fallbackNormalization
    }
    func pipeline(_ key: String) throws -> ImagePipeline? {
      guard let text = m[key] else { return nil }
      let p: ImagePipeline
      do { p = try ImagePipeline(parsing: text) } catch let e as ImageError {
        throw CheckpointError.invalid(file: file, reason: "metadata \(key): \(e.reason)")
      }
      guard p.outputShape == input else {
        throw CheckpointError.invalid(
          file: file, reason: "metadata \(key) gives \(Shape.text(p.outputShape)) images, but the model takes \(Shape.text(input))")
      }
      return p
    }
    trainTransform = try pipeline("train_transform")
    evalTransform = try pipeline("eval_transform")
    if let text = m["class_names"] {
      let count = classes == 1 ? 2 : classes
      guard let names = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String], names.count == count else {
        throw CheckpointError.invalid(file: file, reason: "metadata class_names is not a JSON array of \(count) strings")
      }
      classNames = names
    }
    if let s = m["val_split"] {
      guard let v = Double(s), v > 0, v < 1 else {
        throw CheckpointError.invalid(file: file, reason: "metadata val_split '\(s)' is not a number between 0 and 1")
      }
      valSplit = v
      guard let seed = m["split_seed"].flatMap(UInt64.init) else {
        throw CheckpointError.invalid(file: file, reason: "metadata has val_split but no split_seed (an unsigned integer)")
      }
      splitSeed = seed
    }
  }
}

/// Errors about checkpoint files. Each names the file.
public enum CheckpointError: Error, CustomStringConvertible {
  /// The file can't be used, for `reason`.
  case invalid(file: String, reason: String)

  public var description: String {
    switch self {
    case let .invalid(file, reason): return "\(file): \(reason)"
    }
  }
}

/// Paths and I/O of one checkpoint: the model file and its training-state file.
public struct Checkpoint: Sendable {
  /// The model file (`.safetensors`).
  public var path: String

  /// The checkpoint whose model file is `path`.
  public init(path: String) { self.path = path }

  /// The training-state file beside the model file: `NAME.state.safetensors`.
  public var statePath: String {
    let base = path.hasSuffix(".safetensors") ? String(path.dropLast(".safetensors".count)) : path
    return base + ".state.safetensors"
  }

  /// The best-so-far model file: `NAME.best.safetensors`.
  public var bestPath: String {
    let base = path.hasSuffix(".safetensors") ? String(path.dropLast(".safetensors".count)) : path
    return base + ".best.safetensors"
  }

  /// Writes the model file atomically.
  public static func writeModel(_ model: Module, metadata: ModelMetadata, step: Int, to path: String) throws {
    var meta = metadata.strings
    meta["step"] = String(step)
    try SafetensorsFile(metadata: meta, tensors: model.stateDict()).write(path: path)
  }

  /// The prefix `nn.DataParallel` puts before every key of a model it wraps (`module.conv1.weight`).
  public static let dataParallelPrefix = "module."

  /// `tensors` with the `module.` prefix of a PyTorch `nn.DataParallel` state dict removed, when
  /// every key carries it (as PyTorch's `consume_prefix_in_state_dict_if_present`); otherwise
  /// unchanged, so a model whose own first child is named `module` still loads as it was saved.
  public static func strippingDataParallelPrefix<Value>(_ tensors: [String: Value]) -> [String: Value] {
    guard !tensors.isEmpty, tensors.keys.allSatisfy({ $0.hasPrefix(dataParallelPrefix) }) else { return tensors }
    return Dictionary(uniqueKeysWithValues: tensors.map { (String($0.key.dropFirst(dataParallelPrefix.count)), $0.value) })
  }

  /// Loads a model file strictly into `model` (names, shapes and dtypes must match exactly; a
  /// file whose every key carries DataParallel's `module.` prefix loads without it).
  @discardableResult
  public static func loadModel(_ model: Module, from path: String) throws -> [String: String] {
    let file = try SafetensorsFile.read(path: path)
    try model.loadStateDict(strippingDataParallelPrefix(file.tensors), file: path)
    return file.metadata
  }

  /// Saves `model`'s state_dict atomically to `path` with metadata naming it `name` and the
  /// data set it takes: input `[C, H, W]`, classes (the logits' width) and normalisation from
  /// `dataset` (a one-output model on two classes records 1). PyTorch loads the file with
  /// `load_state_dict(strict=True)`; `Checkpoint.load` reads it back.
  public static func save(_ model: Module, name: String, dataset: ImageDataset, to path: String, step: Int = 0) throws {
    var classes = dataset.classes
    if let s = try? model.outputShape(for: [1] + dataset.imageShape), s.count == 2 { classes = s[1] }
    let meta = ModelMetadata(model: name, input: dataset.imageShape, classes: classes, normalization: dataset.normalization)
    try writeModel(model, metadata: meta, step: step, to: path)
  }

  /// Loads a model file into `model` (strictly: names, shapes and dtypes must match; a file
  /// whose every key carries DataParallel's `module.` prefix loads without it) and returns its
  /// metadata (a file without ours, as PyTorch writes it, gets `fallback`'s).
  @discardableResult
  public static func load(_ model: Module, from path: String, fallback: ModelMetadata? = nil) throws -> ModelMetadata {
    let file = try SafetensorsFile.read(path: path)
    try model.loadStateDict(strippingDataParallelPrefix(file.tensors), file: path)
    return try ModelMetadata(strings: file.metadata, file: path, fallbackModel: fallback?.model ?? "unnamed",
      fallbackInput: fallback?.input ?? [1, 1, 1], fallbackClasses: fallback?.classes ?? 1,
      fallbackNormalization: fallback?.normalization ?? .unit(channels: fallback?.input.first ?? 1))
  }
}
