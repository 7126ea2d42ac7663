// Models: the seed tutorial's small CNN with ReLU, ACON-C or Meta-ACON-C after conv3,
// adapted to any input size and class count, with the seed's parameter names.
//
// conv1 3×3/1 pad 1 (→32) · ReLU · conv2 3×3/2 (→64) · ReLU · conv3 3×3/2 (→64) · act ·
// conv4 3×3/2 pad 1 (→64) · ReLU · flatten · linear1 (→64) · ReLU · linear2 (→classes)
import ACON
import NN
import TensorCore

/// The networks `acon-train` knows by name.
public enum ModelKind: String, CaseIterable, Sendable {
  /// The seed network with ReLU everywhere.
  case seedRelu = "seed-relu"
  /// ACON-C after conv3 (`acon1.p1`, `acon1.p2`, `acon1.beta`).
  case seedAconc = "seed-aconc"
  /// Meta-ACON-C after conv3 (`acon1.fc1`, `acon1.bn1`, `acon1.fc2`, `acon1.bn2`, `acon1.p1`, `acon1.p2`).
  case seedMeta = "seed-meta"

  /// The largest input channel count, image side and class count `build` accepts: far beyond
  /// any use of these small networks, and small enough that a file's metadata can never make us
  /// allocate without bound.
  public static let maxChannels = 1024, maxSide = 4096, maxClasses = 100_000

  /// Builds the network for inputs `[N, C, H, W]` with `input = [C, H, W]` and `classes` outputs
  /// (one output means a binary classifier trained with BCE on logits, as in the seed).
  /// Throws when the input is too small for the four convolutions.
  public func build(input: [Int], classes: Int, seed: UInt64) throws -> Sequential {
    guard input.count == 3, input.allSatisfy({ $0 > 0 }), classes > 0 else {
      throw TensorError.invalidArgument("\(rawValue): input must be C×H×W with positive sizes and classes ≥ 1, got \(input) and \(classes)")
    }
    guard input[0] <= ModelKind.maxChannels, input[1] <= ModelKind.maxSide, input[2] <= ModelKind.maxSide,
      classes <= ModelKind.maxClasses
    else {
      throw TensorError.invalidArgument(
        "\(rawValue): input \(Shape.text(input)) or \(classes) classes beyond the limits of these networks "
          + "(at most \(ModelKind.maxChannels) channels, \(ModelKind.maxSide)×\(ModelKind.maxSide) pixels, "
          + "\(ModelKind.maxClasses) classes)")
    }
    var rng = SeededGenerator(seed: seed)
    // Built as any user would: Sequential fuses each convolution with the ReLU after it and
    // gives the convolutions one shared workspace; the trainer skips conv1's input gradient.
    let conv1 = Conv2D(inChannels: input[0], outChannels: 32, kernelSize: 3, stride: 1, padding: 1, rng: &rng)
    let conv2 = Conv2D(inChannels: 32, outChannels: 64, kernelSize: 3, stride: 2, padding: 0, rng: &rng)
    let conv3 = Conv2D(inChannels: 64, outChannels: 64, kernelSize: 3, stride: 2, padding: 0, rng: &rng)
    let act: (String, Module)
    switch self {
    case .seedRelu: act = ("relu3", ReLU())
    case .seedAconc: act = ("acon1", AconC(channels: 64, rng: &rng))
    case .seedMeta: act = ("acon1", MetaAconC(channels: 64, rng: &rng))
    }
    let conv4 = Conv2D(inChannels: 64, outChannels: 64, kernelSize: 3, stride: 2, padding: 1, rng: &rng)
    let head: [(String, Module)] = [("conv1", conv1), ("relu1", ReLU()), ("conv2", conv2),
      ("relu2", ReLU()), ("conv3", conv3), act, ("conv4", conv4), ("relu4", ReLU()),
      ("flatten", Flatten())]
    let features = try Sequential(head).outputShape(for: [1] + input)
    let linear1 = Linear(inFeatures: features[1], outFeatures: 64, rng: &rng)
    let linear2 = Linear(inFeatures: 64, outFeatures: classes, rng: &rng)
    let model = Sequential(head + [("linear1", linear1), ("relu5", ReLU()), ("linear2", linear2)])
    // Nothing upstream of conv1 needs a gradient (the trainer sets this too).
    model.propagatesInputGradient = false
    return model
  }
}
