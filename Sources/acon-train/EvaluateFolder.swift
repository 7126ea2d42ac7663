// EvaluateFolder: `acon-train evaluate --data folder` (or a checkpoint trained on a folder):
// the validation split the checkpoint records (DIR/val, or the same seeded share of DIR/train),
// streamed through the checkpoint's evaluation pipeline, checked against its class names.
import Foundation
import ImageData
import NN
import TensorCore
import Training

extension Evaluate {
  /// Evaluates the checkpoint `file` on the folder `--data-dir` with the pipeline, split and
  /// class names its metadata records (options given on the command line come second: the
  /// split and pipeline are the checkpoint's when it records them).
  func evaluateFolder(_ file: SafetensorsFile) {
    var options = dataOptions.folderOptions()
    let meta = reporting {
      try ModelMetadata(strings: file.metadata, file: checkpoint, fallbackModel: model.map(parseModel),
        fallbackInput: [3, options.imageSize, options.imageSize], fallbackClasses: 1000,
        fallbackNormalization: FolderDataOptions.normalization)
    }
    if let asked = model.map(parseModel), asked != meta.model {
      fail("\(checkpoint): the file holds a \(meta.model) model, not \(asked); drop --model or pick the right file")
    }
    guard modelNames.contains(meta.model) else {
      fail("\(checkpoint): the file holds a model named '\(meta.model)', which acon-train cannot build (it knows "
        + "\(modelNames.joined(separator: ", ")))")
    }
    guard meta.input[0] == 3, meta.input[1] == meta.input[2] else {
      fail("\(checkpoint): the model takes \(Shape.text(meta.input)) inputs; a folder gives 3xSxS images")
    }
    // The checkpoint's split and pipeline; a file without them gets the command line's split and
    // torchvision's evaluation recipe at the model's size with its normalisation.
    if let v = meta.valSplit {
      if let asked = dataOptions.valSplit, asked != v {
        fail("\(checkpoint): the model was validated on \(v) of train/ (split seed \(meta.splitSeed ?? 0)), not --val-split \(asked); drop --val-split")
      }
      options.valSplit = v
      options.seed = meta.splitSeed ?? 0
    }
    options.imageSize = meta.input[1]
    let pipeline = meta.evalTransform
      ?? ImagePipeline.eval(size: meta.input[1], convention: .normalize(mean: meta.normalization.mean, std: meta.normalization.std))
    let folder = reporting { try FolderTrainingData.load(directory: dataOptions.dataDir, options: options) }
    for w in folder.warnings { warn(String(w.dropFirst("warning: ".count))) }
    let outputs = meta.classes == 1 ? 2 : meta.classes
    guard folder.classNames.count == outputs else {
      fail("\(checkpoint): the model has \(outputs) classes, but \(folder.directory)/train has \(folder.classNames.count); pick the folder it was trained on")
    }
    if let names = meta.classNames, names != folder.classNames {
      let k = names.indices.first { names[$0] != folder.classNames[$0] } ?? 0
      fail("\(checkpoint): the model's class \(k) is '\(names[k])', but \(folder.directory)/train's is '\(folder.classNames[k])'; "
        + "labels would not match: pick the folder it was trained on")
    }
    let net = reporting { try buildModel(meta.model, input: meta.input, classes: meta.classes, seed: 0) }
    reporting { try net.loadStateDict(Checkpoint.strippingDataParallelPrefix(file.tensors), file: checkpoint) }
    let loader = ImageLoader(folder: folder.val, pipeline: pipeline, batchSize: batchSize, shuffle: false, seed: 0,
      workers: options.workers, skipBadImages: options.skipBadImages)
    let e = reporting { try Training.evaluate(net, on: loader) }
    let skipped = loader.skippedCount
    for w in loader.takeWarnings() { warn(String(w.dropFirst("warning: ".count))) }
    if json {
      print(String(format: "{\"accuracy\": %.4f, \"loss\": %.4f, \"examples\": %d}", e.accuracy, e.loss, e.examples))
    } else {
      let how = options.valSplit.map { "\(Int(($0 * 100).rounded()))% of train/ (seed \(options.seed))" } ?? "val/"
      print("data: image folder \(folder.directory), validation: \(how), \(folder.val.count) images through \(pipeline)"
        + (skipped > 0 ? " (\(skipped) replaced: they did not decode)" : ""))
      print(String(format: "%@ on %d validation images: accuracy %.2f%%, mean loss %.4f", meta.model as NSString, e.examples,
        e.accuracy * 100, e.loss))
    }
    finishOutput()
  }
}
