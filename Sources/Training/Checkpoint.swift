// Checkpoint: a model file that holds exactly the model's state_dict in safetensors (so PyTorch
// loads it with load_state_dict(strict=True)), plus a training-state file beside it with the
// optimizer's tensors, the step, epoch and data order, so --resume continues bit for bit. The
// trainer also puts a copy of the weights in the state file (and writes it first), so the state
// file alone defines a resume, even after a kill between the two writes.
import Foundation
import NN
import TensorCore

/// What the model file's `__metadata__` records.
public struct ModelMetadata: Equatable, Sendable {
  /// `seed-relu`, `seed-aconc` or `seed-meta`.
  public var model: ModelKind
  /// `[C, H, W]`.
  public var input: [Int]
  /// Output classes.
  public var classes: Int
  /// The input normalisation used in training.
  public var normalization: Normalization
  /// The data set trained on (`fashion-mnist`, `cifar10`, `synthetic`), if known: `evaluate`
  /// then defaults to it.
  public var data: String?

  /// Metadata for a `model` taking `[C, H, W]` inputs with `classes` outputs.
  public init(model: ModelKind, input: [Int], classes: Int, normalization: Normalization, data: String? = nil) {
    self.model = model
    self.input = input
    self.classes = classes
    self.normalization = normalization
    self.data = data
  }

  /// As safetensors metadata strings.
  public var strings: [String: String] {
    var m = ["format": "pt", "model": model.rawValue, "input": input.map(String.init).joined(separator: "x"),
     "classes": String(classes),
     "normalization_mean": normalization.mean.map { String($0) }.joined(separator: ","),
     "normalization_std": normalization.std.map { String($0) }.joined(separator: ",")]
    if let data { m["data"] = data }
    return m
  }

  /// Parses metadata; `fallbackModel` is used when the file names none (a file PyTorch wrote).
  public init(strings m: [String: String], file: String, fallbackModel: ModelKind?, fallbackInput: [Int], fallbackClasses: Int,
    fallbackNormalization: Normalization) throws {
    if let name = m["model"] {
      guard let kind = ModelKind(rawValue: name) else {
        throw CheckpointError.invalid(file: file, reason: "metadata names unknown model '\(name)'; known: \(ModelKind.allCases.map(\.rawValue).joined(separator: ", "))")
      }
      model = kind
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
    try SafetensorsFile(metadata: meta, tensors: stateDict(of: model)).write(path: path)
  }

  /// Loads a model file strictly into `model` (names, shapes and dtypes must match exactly).
  public static func loadModel(_ model: Module, from path: String) throws -> [String: String] {
    let file = try SafetensorsFile.read(path: path)
    try loadStateDict(file.tensors, into: model, file: path)
    return file.metadata
  }
}
