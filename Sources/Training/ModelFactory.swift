// ModelFactory: networks built by name, for the command line and checkpoints: a list of names
// and one function `(name, input [C, H, W], classes, seed) throws -> Module`. The seed networks
// are one factory (`ModelFactory.seedModels`); other model families add theirs.
import NN
import TensorCore

/// Builds networks by name. A factory offers `names` and builds any of them for an input shape
/// `[C, H, W]`, a class count (1: one logit, a binary classifier) and a seed.
public struct ModelFactory: Sendable {
  /// The names this factory builds, in the order `--help` lists them.
  public let names: [String]
  /// Builds the network `name` (one of `names`) for `input` `[C, H, W]`, `classes` outputs and
  /// `seed`; throws an error naming the model when the shapes don't fit it.
  public let build: @Sendable (_ name: String, _ input: [Int], _ classes: Int, _ seed: UInt64) throws -> Module

  /// A factory of `names`, built by `build`.
  public init(names: [String], build: @escaping @Sendable (String, [Int], Int, UInt64) throws -> Module) {
    self.names = names
    self.build = build
  }

  /// Builds `name` with the first of `factories` that offers it; an unknown name is an error
  /// listing every name they offer.
  public static func build(_ name: String, factories: [ModelFactory], input: [Int], classes: Int, seed: UInt64) throws
    -> Module
  {
    guard let f = factories.first(where: { $0.names.contains(name) }) else {
      throw TensorError.invalidArgument(
        "unknown model '\(name)'; known: \(factories.flatMap(\.names).joined(separator: ", "))")
    }
    return try f.build(name, input, classes, seed)
  }

  /// The seed networks (`seed-relu`, `seed-aconc`, `seed-meta`; see `ModelKind`).
  public static let seedModels = ModelFactory(names: ModelKind.allCases.map(\.rawValue)) { name, input, classes, seed in
    guard let kind = ModelKind(rawValue: name) else {
      throw TensorError.invalidArgument("unknown model '\(name)'; known: \(ModelKind.allCases.map(\.rawValue).joined(separator: ", "))")
    }
    return try kind.build(input: input, classes: classes, seed: seed)
  }
}

