// Predict: `acon-train predict --checkpoint F IMAGE...` — decodes each image (JPEG or PNG),
// applies the evaluation transforms the checkpoint records (`eval_transform`, else torchvision's
// Resize(H·256/224) + CenterCrop(H, W) with the checkpoint's normalisation), runs the network at
// batch 1 in evaluation and inference mode and prints the top-k classes with their softmax probabilities
// (names from the checkpoint's `class_names`, else from --data-dir DIR/train's folders, else indices).
// With --input-tensor IN --logits-out OUT it instead runs a ready batch (a safetensors tensor
// `input`, no transforms) and writes the raw eval-mode logits, for checks against PyTorch twins.
import ArgumentParser
import Foundation
import ImageData
import NN
import TensorCore
import Training

struct Predict: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Classify images (JPEG or PNG) with a checkpoint: the top-k classes and their probabilities.")

  @Option(help: "Model file (.safetensors), ours or PyTorch's.") var checkpoint: String
  @Argument(help: "Image files (JPEG or PNG).") var images: [String] = []
  @Option(help: "Classes to print per image.") var topK: Int = 5
  @Option(help: "The model, when the file's metadata names none.") var model: String?
  @Option(help: "Class names from DIR/train's folders, when the checkpoint records none.") var dataDir: String?
  @Flag(help: "Print one JSON object.") var json = false
  @Option(help: "Instead of images: a safetensors file whose F32 tensor `input` is a batch [N, C, H, W] of the model's input shape, fed as is (no transforms). Needs --logits-out.")
  var inputTensor: String?
  @Option(help: "With --input-tensor: write the eval-mode logits [N, classes] here (safetensors, tensor `logits`).")
  var logitsOut: String?

  func run() throws {
    if inputTensor != nil || logitsOut != nil { return runTensor() }
    guard !images.isEmpty else { fail("predict: name at least one image file") }
    guard (1...1000).contains(topK) else { fail("--top-k must be in 1...1000, got \(topK)") }
    let file = reporting { try SafetensorsFile.read(path: checkpoint) }
    let meta = reporting {
      try ModelMetadata(strings: file.metadata, file: checkpoint, fallbackModel: model.map(parseModel),
        fallbackInput: [3, 224, 224], fallbackClasses: 1000, fallbackNormalization: FolderDataOptions.normalization)
    }
    guard meta.input[0] == 3 else {
      fail("\(checkpoint): the model takes \(meta.input[0])-channel inputs; predict feeds RGB images (3 channels)")
    }
    let pipeline: ImagePipeline = reporting {
      if let recorded = meta.evalTransform { return recorded }
      let (h, w) = (meta.input[1], meta.input[2])
      return ImagePipeline(
        [.resize(min(h, w) * 256 / 224), .centerCrop(height: h, width: w)],
        convention: .normalize(mean: meta.normalization.mean, std: meta.normalization.std))
    }
    guard pipeline.outputShape == meta.input else {
      fail("\(checkpoint): eval_transform gives \(pipeline.outputShape) but the model takes \(meta.input)")
    }
    let names = meta.classNames ?? classNames(classes: meta.classes)
    let net = reporting { try buildModel(meta.model, input: meta.input, classes: meta.classes, seed: 0) }
    reporting { try loadStateDict(file.tensors, into: net, file: checkpoint) }
    net.eval()
    let processor = ImageProcessor()
    let x = Tensor(zeros: [1] + meta.input)
    var results = [(String, [(Int, Double)])]()
    for path in images {
      var rng = SeededGenerator(seed: 0)
      reporting {
        let bytes = try ImageFile.read(path)
        try bytes.withUnsafeBytes { try processor.process($0, name: path, pipeline: pipeline, rng: &rng, into: x.data) }
      }
      let logits = reporting { try net.withInferenceMode { try net.forward(x) } }
      let z = (0..<logits.count).map { Double(logits.data[$0]) }
      // One logit: a binary classifier (sigmoid); else softmax over the classes.
      let probs: [Double]
      if z.count == 1 {
        let p = 1 / (1 + Foundation.exp(-z[0]))
        probs = [1 - p, p]
      } else {
        let m = z.max()!
        let e = z.map { Foundation.exp($0 - m) }
        let s = e.reduce(0, +)
        probs = e.map { $0 / s }
      }
      let top = probs.enumerated().sorted { $0.element > $1.element || ($0.element == $1.element && $0.offset < $1.offset) }
        .prefix(topK).map { ($0.offset, $0.element) }
      results.append((path, top))
    }
    let label = { (i: Int) in i < names.count ? names[i] : String(i) }
    if json {
      let obj: [[String: Any]] = results.map { r in
        ["image": r.0, "top": r.1.map { ["class": label($0.0), "index": $0.0, "probability": $0.1] as [String: Any] }]
      }
      let data = reporting { try JSONSerialization.data(withJSONObject: ["model": meta.model, "predictions": obj], options: [.sortedKeys, .withoutEscapingSlashes]) }
      print(String(decoding: data, as: UTF8.self))
    } else {
      for r in results {
        print(r.0)
        for (i, p) in r.1 { print(String(format: "  %6.2f%%  %@", p * 100, label(i))) }
      }
    }
    finishOutput()
  }

  /// `--input-tensor IN --logits-out OUT`: the checkpoint's network in evaluation mode on the batch
  /// `input` [N, C, H, W] of IN; OUT gets `logits` [N, classes] as F32.
  private func runTensor() {
    guard let inputPath = inputTensor, let outPath = logitsOut else {
      fail("predict: --input-tensor and --logits-out go together")
    }
    guard images.isEmpty else { fail("predict: give image files or --input-tensor, not both") }
    let file = reporting { try SafetensorsFile.read(path: checkpoint) }
    let meta = reporting {
      try ModelMetadata(strings: file.metadata, file: checkpoint, fallbackModel: model.map(parseModel),
        fallbackInput: [3, 224, 224], fallbackClasses: 1000, fallbackNormalization: FolderDataOptions.normalization)
    }
    let inputs = reporting { try SafetensorsFile.read(path: inputPath) }
    guard case let .f32(shape, values)? = inputs.tensors["input"]?.widened else {
      fail("\(inputPath): no float tensor named 'input'; write the batch [N, C, H, W] under that name")
    }
    guard shape.count == 4, shape[0] >= 1, Array(shape.dropFirst()) == meta.input else {
      fail("\(inputPath): 'input' has shape \(shape), but \(checkpoint) takes [N] + \(meta.input) with N ≥ 1")
    }
    let net = reporting { try buildModel(meta.model, input: meta.input, classes: meta.classes, seed: 0) }
    reporting { try loadStateDict(file.tensors, into: net, file: checkpoint) }
    net.eval()
    let x = Tensor(shape: shape, values: values)
    let logits = reporting { try net.withInferenceMode { try net.forward(x) } }
    reporting { try SafetensorsFile(metadata: ["model": meta.model], tensors: ["logits": SafetensorsValue(logits)]).write(path: outPath) }
    finishOutput()
  }

  /// Without the checkpoint's `class_names`: DIR/train's class folders, else none.
  private func classNames(classes: Int) -> [String] {
    let count = classes == 1 ? 2 : classes
    if let dir = dataDir {
      let folder = reporting { try ImageFolder.scan(root: dir + "/train", skipBadImages: true) }
      guard folder.classes.count == count else {
        fail("\(dir)/train has \(folder.classes.count) classes, the checkpoint \(count)")
      }
      return folder.classes
    }
    return []
  }
}
