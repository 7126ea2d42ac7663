// ZooModels: the model zoo by name — ShuffleNetV2, TFNet and ResNet as the official ACON code
// defines them — with the official state_dict names and initialisation, for any input size
// (under 112 pixels the stem keeps its width but not its stride or max-pool) and class count.
import ACON
import NN
import TensorCore

/// A name that is not a zoo model, or an input the zoo cannot build for.
public enum ZooError: Error, CustomStringConvertible, Equatable {
  /// The name is not a zoo model; `valid` lists the names that are.
  case unknownModel(String, valid: [String])
  /// The input shape or class count cannot be used.
  case invalidInput(model: String, reason: String)

  public var description: String {
    switch self {
    case let .unknownModel(name, valid):
      return "unknown model \"\(name)\"; the zoo has: " + valid.joined(separator: ", ")
    case let .invalidInput(model, reason):
      return "\(model): \(reason)"
    }
  }
}

/// The zoo's networks by name:
/// - `shufflenetv2-{0.5,1.0,1.5,2.0}x-{relu,swish,aconc,meta}` (official ShuffleNetV2-ACON;
///   Meta-ACON's r is 8 at 0.5×, 16 otherwise; dropout 0.2 at 2.0×),
/// - `tfnet-{0.5,1.0,1.5,2.0}` (official TFNet with ACON-FReLU; dropout 0.2 above 0.5),
/// - `resnet{18,34,50,101,152}-{relu,swish,aconc,meta}` (official ResNet-ACON; basic blocks for
///   18 and 34 with the activation in both slots, bottlenecks with it after the 3×3 conv).
///
/// Inputs are `[N, C, H, W]` for `inputShape = [C, H, W]`; outputs `[N, classes]` logits.
public enum ZooModels {
  /// Inputs whose smaller side is under this many pixels get a stride-1 stem without max-pool.
  public static let smallInputSide = 112
  /// Limits on what `build` accepts (beyond any real use, and small enough to never allocate
  /// without bound from a file's metadata).
  public static let maxChannels = 1024, maxSide = 4096, maxClasses = 100_000

  static let sizes = ["0.5", "1.0", "1.5", "2.0"]
  static let depths = [18, 34, 50, 101, 152]

  /// Every model name, ShuffleNetV2 first, then TFNet, then ResNet.
  public static var names: [String] {
    sizes.flatMap { s in ZooActivation.allCases.map { "shufflenetv2-\(s)x-\($0.rawValue)" } }
      + sizes.map { "tfnet-\($0)" }
      + depths.flatMap { d in ZooActivation.allCases.map { "resnet\(d)-\($0.rawValue)" } }
  }

  /// Whether `name` is a zoo model.
  public static func contains(_ name: String) -> Bool { names.contains(name) }

  /// Builds the model `name` for inputs `[N] + inputShape` (`inputShape` = `[C, H, W]`) and
  /// `classes` logits, with the official initialisation drawn from `seed`. The model starts in
  /// training mode and does not propagate the gradient into its input.
  /// - Throws: `ZooError.unknownModel` (listing the valid names) or `ZooError.invalidInput`.
  public static func build(name: String, inputShape: [Int], classes: Int, seed: UInt64) throws -> Module {
    guard contains(name) else { throw ZooError.unknownModel(name, valid: names) }
    guard inputShape.count == 3, inputShape.allSatisfy({ $0 > 0 }), classes > 0 else {
      throw ZooError.invalidInput(model: name,
        reason: "the input must be C×H×W with positive sizes and at least one class, got \(Shape.text(inputShape)) and \(classes) classes")
    }
    guard inputShape[0] <= maxChannels, inputShape[1] <= maxSide, inputShape[2] <= maxSide, classes <= maxClasses else {
      throw ZooError.invalidInput(model: name,
        reason: "input \(Shape.text(inputShape)) or \(classes) classes beyond the limits (at most \(maxChannels) channels, "
          + "\(maxSide)×\(maxSide) pixels, \(maxClasses) classes)")
    }
    var rng = SeededGenerator(seed: seed)
    let parts = name.split(separator: "-").map(String.init)
    let model: Sequential
    if parts[0] == "shufflenetv2" {
      model = shuffleNetV2(size: String(parts[1].dropLast()), activation: ZooActivation(rawValue: parts[2])!,
        input: inputShape, classes: classes, rng: &rng)
      OfficialInit.shuffleStyle(model, tfnet: false, rng: &rng)
    } else if parts[0] == "tfnet" {
      model = tfNet(size: parts[1], input: inputShape, classes: classes, rng: &rng)
      OfficialInit.shuffleStyle(model, tfnet: true, rng: &rng)
    } else {
      model = resNet(depth: Int(parts[0].dropFirst("resnet".count))!, activation: ZooActivation(rawValue: parts[1])!,
        input: inputShape, classes: classes, rng: &rng)
      OfficialInit.resNetStyle(model, rng: &rng)
    }
    model.propagatesInputGradient = false
    do {
      _ = try model.outputShape(for: [1] + inputShape)
    } catch {
      throw ZooError.invalidInput(model: name, reason: "input \(Shape.text(inputShape)) does not fit: \(error)")
    }
    return model
  }
}
