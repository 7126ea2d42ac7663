// SafetensorsFuzzTarget: the body of the fuzz-safetensors libFuzzer target (Fuzz/), kept in the
// library so that the regression tests run exactly what the fuzzer runs on each corpus file. An
// input is a whole model file: it is decoded, re-encoded and decoded again (the bytes must
// round-trip), its metadata is parsed as a checkpoint's, and its tensors are loaded strictly into
// the seed network it names; after a successful load the network's state must equal the file's
// values bit for bit. Every rejection must be a thrown SafetensorsError or CheckpointError.
import NN

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The fuzz-safetensors target: the seed networks, built once, and the checks run on one input.
/// Not thread-safe (a load writes into the shared networks); libFuzzer runs one input at a time.
public final class SafetensorsFuzzTarget {
  /// What the target did with one input.
  public enum Outcome: Equatable, Sendable {
    /// Refused, with the error's message (a `SafetensorsError` or `CheckpointError`).
    case rejected(String)
    /// Loaded strictly into the network its metadata describes: the tensors were copied into it.
    case loaded(ModelMetadata)
  }

  /// The input shapes `[C, H, W]` and class counts a network is built for, for each seed model:
  /// Fashion-MNIST's and CIFAR-10's. A file whose metadata asks for another configuration is
  /// checked against the model's first configuration (so its shapes mismatch): building a
  /// network for whatever a file says would let an input allocate without bound.
  public static let configurations: [(input: [Int], classes: Int)] = [([1, 28, 28], 10), ([3, 32, 32], 10)]

  /// The model assumed when a file's metadata names none (as in a file PyTorch wrote).
  public static let fallbackModel = ModelKind.seedAconc.rawValue
  /// The normalisation assumed when a file's metadata gives none.
  public static let fallbackNormalization = Normalization.fashionMNIST

  private var models = [String: Module]()

  /// Builds every seed model in every configuration (weights from seed 0).
  public init() throws {
    for kind in ModelKind.allCases {
      for c in Self.configurations {
        models[Self.key(kind, c.input, c.classes)] = try kind.build(input: c.input, classes: c.classes, seed: 0)
      }
    }
  }

  private static func key(_ kind: ModelKind, _ input: [Int], _ classes: Int) -> String {
    "\(kind.rawValue) \(input) \(classes)"
  }

  /// The network a file with this metadata is loaded into: the one built for its configuration,
  /// or the model's first configuration when none was built for it.
  public func model(for meta: ModelMetadata) -> Module {
    if let kind = ModelKind(rawValue: meta.model), let m = models[Self.key(kind, meta.input, meta.classes)] { return m }
    let first = Self.configurations[0]
    return models[Self.key(ModelKind(rawValue: meta.model) ?? .seedAconc, first.input, first.classes)]!
  }

  /// Runs the checks on one input, named `name` in error messages.
  /// - Returns: whether the file was rejected (and why) or loaded.
  /// - Precondition: the file round-trips through `encode` and `decode`; a loaded network holds
  ///   exactly the file's values; every error is a `SafetensorsError` or `CheckpointError`. A
  ///   failed precondition is the bug the fuzzer reports.
  public func run(_ bytes: [UInt8], name: String = "fuzz.safetensors") -> Outcome {
    do {
      let file = try SafetensorsFile.decode(bytes, name: name)
      let encoded = file.encode()
      let again = try SafetensorsFile.decode(encoded, name: "re-encoded")
      precondition(Self.sameBytes(again.encode(), encoded), "decode(encode(file)) does not round-trip")
      let meta = try ModelMetadata(
        strings: file.metadata, file: name, fallbackModel: Self.fallbackModel,
        fallbackInput: Self.configurations[0].input, fallbackClasses: Self.configurations[0].classes,
        fallbackNormalization: Self.fallbackNormalization)
      let net = model(for: meta)
      try loadStateDict(file.tensors, into: net, file: name)
      let state = stateDict(of: net)
      precondition(state.count == file.tensors.count, "a strict load left keys out")
      for (key, value) in state {
        precondition(file.tensors[key].map { Self.sameBits($0.widened, value) } == true,
          "after a strict load, \(key) differs from the file's values")
      }
      return .loaded(meta)
    } catch let e as SafetensorsError {
      return .rejected(e.description)
    } catch let e as CheckpointError {
      return .rejected(e.description)
    } catch {
      preconditionFailure("unexpected error type: \(error)")
    }
  }

  /// Same shape, kind and bit patterns (so NaN payloads and -0.0 count).
  private static func sameBits(_ a: SafetensorsValue, _ b: SafetensorsValue) -> Bool {
    switch (a, b) {
    case let (.f32(sa, va), .f32(sb, vb)): return sa == sb && sameBytes(va, vb)
    case let (.i64(sa, va), .i64(sb, vb)): return sa == sb && sameBytes(va, vb)
    default: return false
    }
  }

  /// Whether two arrays hold the same bytes: one memcmp, where an element-wise loop would run the
  /// fuzzer's comparison hooks once per element of a half-megabyte input.
  private static func sameBytes<T>(_ a: [T], _ b: [T]) -> Bool {
    a.count == b.count
      && a.withUnsafeBytes { x in
        b.withUnsafeBytes { y in x.isEmpty || memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0 }
      }
  }
}
