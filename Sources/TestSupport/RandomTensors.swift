// RandomTensors: seeded random inputs for tests, drawn from TensorCore's SeededGenerator so
// every failure reproduces. Includes "well separated" tensors whose elements differ pairwise
// by a margin, for max-pool checks that must not sit on a tie (a kink).
import NN
import TensorCore

extension Tensor {
  /// A tensor of independent uniform samples in `[lo, hi)`.
  public static func uniform(
    _ shape: [Int], _ lo: Float = -1, _ hi: Float = 1, using rng: inout SeededGenerator
  ) -> Tensor {
    let t = Tensor(zeros: shape)
    t.fillUniform(lo, hi, using: &rng)
    return t
  }

  /// A tensor of independent normal samples.
  public static func normal(
    _ shape: [Int], mean: Float = 0, std: Float = 1, using rng: inout SeededGenerator
  ) -> Tensor {
    let t = Tensor(zeros: shape)
    t.fillNormal(mean: mean, std: std, using: &rng)
    return t
  }

  /// A tensor whose elements are a random permutation of `offset + spacing·{0, 1, …, count−1}`,
  /// shifted to be centred on zero: all elements differ pairwise by at least `spacing`.
  /// Use it where ties are kinks (max pooling) and a finite-difference step must not cross one.
  public static func wellSeparated(
    _ shape: [Int], spacing: Float = 0.05, using rng: inout SeededGenerator
  ) -> Tensor {
    let t = Tensor(zeros: shape)
    var values = (0..<t.count).map { Float($0) * spacing - Float(t.count - 1) * spacing / 2 }
    values.shuffle(using: &rng)
    for i in 0..<t.count { t[i] = values[i] }
    return t
  }
}

/// An array of independent uniform samples in `[lo, hi)`.
public func randomFloats(_ n: Int, _ lo: Float = -1, _ hi: Float = 1, using rng: inout SeededGenerator) -> [Float] {
  (0..<n).map { _ in rng.nextUniform(lo, hi) }
}

/// `n` labels uniform in `0..<classes`.
public func randomLabels(_ n: Int, classes: Int, using rng: inout SeededGenerator) -> [Int32] {
  (0..<n).map { _ in Int32(rng.nextInt(below: classes)) }
}

/// Overwrites every parameter of `module` with uniform samples in `[lo, hi)`, e.g. to give a
/// BatchNorm non-trivial γ and β before a check.
public func randomizeParameters(
  _ module: Module, _ lo: Float = -1, _ hi: Float = 1, using rng: inout SeededGenerator
) {
  for (_, p) in module.namedParameters() { p.value.fillUniform(lo, hi, using: &rng) }
}
