// Evaluation: accuracy, top-k accuracy and mean loss of a model on a data set in evaluation
// mode (in memory, or streamed from a folder by an ImageLoader), the accuracy helpers over one
// batch of logits, and inference (`predict`).
import Foundation
import ImageData
import NN
import TensorCore

/// Accuracy and mean loss on a data set.
public struct Evaluation: Sendable, Equatable {
  /// Fraction of correct predictions (top-1).
  public var accuracy: Double
  /// Mean loss per example.
  public var loss: Double
  /// Examples evaluated.
  public var examples: Int
  /// Top-k accuracy for each k asked for (`[5: 0.99]`); the top-1 accuracy is `accuracy`.
  public var topK: [Int: Double] = [:]

  /// An evaluation's numbers.
  public init(accuracy: Double, loss: Double, examples: Int, topK: [Int: Double] = [:]) {
    self.accuracy = accuracy
    self.loss = loss
    self.examples = examples
    self.topK = topK
  }
}

/// The number of rows of `logits` (`[N, K]`, K ≥ 2) whose label is among the `k` largest logits
/// (ties count against: a logit equal to the label's, earlier in the row, ranks before it).
/// For K = 1 (a binary classifier's one logit): rows where `logit > 0` agrees with label 1.
public func correctPredictions(_ logits: Tensor, labels: [Int32], k: Int = 1) throws -> Int {
  guard logits.shape.count == 2, logits.shape[0] == labels.count, k >= 1 else {
    throw TensorError.shapeMismatch(layer: "correctPredictions", expected: "[\(labels.count), K] logits and k ≥ 1", got: logits.shape)
  }
  let n = logits.shape[0], classes = logits.shape[1]
  var correct = 0
  for i in 0..<n {
    let t = Int(labels[i])
    if classes == 1 {
      guard t == 0 || t == 1 else {
        throw TensorError.invalidArgument("a one-output (binary) model needs labels 0 or 1, got \(t) for sample \(i)")
      }
      if (logits.data[i] > 0 ? 1 : 0) == t { correct += 1 }
      continue
    }
    guard t >= 0 && t < classes else {
      throw TensorError.invalidArgument("label \(t) of sample \(i) is outside 0..<\(classes)")
    }
    let row = logits.data + i * classes, target = row[t]
    var above = 0
    for j in 0..<classes where row[j] > target || (row[j] == target && j < t) { above += 1 }
    if above < k { correct += 1 }
  }
  return correct
}

/// The fraction of rows of `logits` `[N, K]` whose label is the largest logit (top-1 accuracy).
public func accuracy(_ logits: Tensor, labels: [Int32]) throws -> Double {
  labels.isEmpty ? 0 : Double(try correctPredictions(logits, labels: labels)) / Double(labels.count)
}

/// The fraction of rows of `logits` `[N, K]` whose label is among the `k` largest logits.
public func topKAccuracy(_ logits: Tensor, labels: [Int32], k: Int) throws -> Double {
  labels.isEmpty ? 0 : Double(try correctPredictions(logits, labels: labels, k: k)) / Double(labels.count)
}

/// Accuracy, top-k accuracies and mean loss of `model` in evaluation mode over the whole
/// `dataset`, in order; the model's mode is restored afterwards. The number of classes comes
/// from the model's logits: `[N, K]` with K = `dataset.classes` is scored with cross-entropy;
/// one logit `[N, 1]` only on a two-class data set, with binary cross-entropy. Any other width
/// is an error naming both.
/// - Parameters:
///   - model: the network, `[N, C, H, W]` images to `[N, K]` logits.
///   - dataset: the images and labels, evaluated in order.
///   - normalization: nil: the data set's own.
///   - batchSize: images per forward pass.
///   - topK: the k of each top-k accuracy to report in `Evaluation.topK`.
public func evaluate(_ model: Module, on dataset: ImageDataset, normalization: Normalization? = nil, batchSize: Int = 256,
  topK: [Int] = []) throws -> Evaluation {
  guard batchSize >= 1 else { throw TensorError.invalidArgument("evaluate: the batch size must be at least 1, got \(batchSize)") }
  let wasTraining = model.isTraining
  model.eval()
  defer { if wasTraining { model.train() } }
  let loader = BatchLoader(dataset: dataset, batchSize: batchSize, normalization: normalization ?? dataset.normalization)
  var score = Scores(name: dataset.name, classes: dataset.classes, topK: topK)
  // Inference mode: no activations kept for backward, a few activation buffers in all.
  try model.withInferenceMode {
    for (x, labels) in loader { try score.add(try model.forward(x), labels: labels) }
  }
  return score.evaluation
}

/// Accuracy, top-k accuracies and mean loss of `model` in evaluation mode over every image of
/// `loader`'s folder, batch after batch as its workers decode them (through its pipeline: for
/// evaluation `Resize` + `CenterCrop`); scored as `evaluate(_:on:normalization:batchSize:topK:)`.
/// The model's mode is restored afterwards, and the loader's workers stopped.
/// - Throws: the loader's `ImageError` for an image that does not decode (without
///   `skipBadImages`), or an error naming the shapes when the logits do not fit the classes.
public func evaluate(_ model: Module, on loader: ImageLoader, topK: [Int] = []) throws -> Evaluation {
  let wasTraining = model.isTraining
  model.eval()
  defer {
    loader.stop()
    if wasTraining { model.train() }
  }
  var score = Scores(name: loader.folder.root, classes: loader.folder.classes.count, topK: topK)
  loader.startEpoch(0)
  try model.withInferenceMode {
    while let b = try loader.next() { try score.add(try model.forward(b.x), labels: b.labels) }
  }
  return score.evaluation
}

/// The running sums of an evaluation.
private struct Scores {
  let name: String, classes: Int, topK: [Int]
  let ce = CrossEntropyLoss(), bce = BCEWithLogitsLoss()
  var correct = 0, total = 0, lossSum = 0.0
  var topCorrect: [Int]

  init(name: String, classes: Int, topK: [Int]) {
    self.name = name
    self.classes = classes
    self.topK = topK
    topCorrect = [Int](repeating: 0, count: topK.count)
  }

  /// Scores one batch: `logits` `[b, K]`, b labels.
  mutating func add(_ logits: Tensor, labels: [Int32]) throws {
    let width = logits.shape.count == 2 ? logits.shape[1] : -1
    guard width == classes || (width == 1 && classes == 2) else {
      throw TensorError.invalidArgument(
        "evaluate: the model gives logits of shape \(Shape.text(logits.shape)), but \(name) has \(classes) "
          + "classes: expected [N, \(classes)]" + (classes == 2 ? " or [N, 1]" : ""))
    }
    let loss = width == 1 ? try bce.valueAndGradient(logits, labels: labels).value
      : try ce.valueAndGradient(logits, labels: labels).value
    lossSum += Double(loss) * Double(labels.count)
    correct += try correctPredictions(logits, labels: labels)
    for (i, k) in topK.enumerated() { topCorrect[i] += try correctPredictions(logits, labels: labels, k: k) }
    total += labels.count
  }

  var evaluation: Evaluation {
    var top: [Int: Double] = [:]
    for (i, k) in topK.enumerated() { top[k] = total > 0 ? Double(topCorrect[i]) / Double(total) : 0 }
    return Evaluation(accuracy: total > 0 ? Double(correct) / Double(total) : 0, loss: total > 0 ? lossSum / Double(total) : 0,
      examples: total, topK: top)
  }
}

extension Module {
  /// Inference: the output for `x` in evaluation mode (BatchNorm's running statistics, no
  /// dropout), with the module's mode restored afterwards. As `forward`, the result is owned by
  /// the model and overwritten by its next call: `clone()` it to keep it.
  public func predict(_ x: Tensor) throws -> Tensor {
    let wasTraining = isTraining
    eval()
    defer { if wasTraining { train() } }
    return try forward(x)
  }
}

extension Trainer {
  /// Accuracy and mean loss of `model` in evaluation mode over the whole `dataset`, in order.
  /// `classes` must be the width of the model's logits (1 for a binary classifier); prefer
  /// `evaluate(_:on:normalization:batchSize:topK:)`, which reads it from the model.
  @available(*, deprecated, message: "use evaluate(_:on:normalization:batchSize:topK:)")
  public static func evaluate(model: Module, dataset: ImageDataset, normalization: Normalization, batchSize: Int,
    classes: Int) throws -> Evaluation {
    try Training.evaluate(model, on: dataset, normalization: normalization, batchSize: batchSize)
  }
}
