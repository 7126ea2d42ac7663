// Random: a seeded, deterministic generator (xoshiro256**, seeded by SplitMix64) with the
// distributions initialisation and data augmentation need. Its state can be saved and restored.
#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// A seeded, deterministic random number generator (xoshiro256**).
public struct SeededGenerator: RandomNumberGenerator, Sendable, Equatable {
  /// The four 64-bit words of state; save them to resume a stream exactly.
  public var state: (UInt64, UInt64, UInt64, UInt64)

  /// A generator whose stream is fixed by `seed`.
  public init(seed: UInt64) {
    var s = seed
    func splitmix() -> UInt64 {
      s &+= 0x9E37_79B9_7F4A_7C15
      var z = s
      z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
      z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
      return z ^ (z >> 31)
    }
    state = (splitmix(), splitmix(), splitmix(), splitmix())
  }

  /// A generator resumed from saved state words.
  public init(state: [UInt64]) {
    precondition(state.count == 4, "SeededGenerator needs 4 state words")
    self.state = (state[0], state[1], state[2], state[3])
  }

  /// The state as an array of four words.
  public var stateWords: [UInt64] { [state.0, state.1, state.2, state.3] }

  /// Equal when the states are equal (the streams then coincide).
  public static func == (a: SeededGenerator, b: SeededGenerator) -> Bool { a.stateWords == b.stateWords }

  public mutating func next() -> UInt64 {
    let result = ((state.1 &* 5) << 7 | (state.1 &* 5) >> 57) &* 9
    let t = state.1 << 17
    state.2 ^= state.0
    state.3 ^= state.1
    state.1 ^= state.2
    state.0 ^= state.3
    state.2 ^= t
    state.3 = state.3 << 45 | state.3 >> 19
    return result
  }

  /// Uniform in [0, 1), with 24 random bits.
  public mutating func nextUniform() -> Float { Float(next() >> 40) * (1.0 / 16_777_216.0) }

  /// Uniform in [lo, hi).
  public mutating func nextUniform(_ lo: Float, _ hi: Float) -> Float { lo + (hi - lo) * nextUniform() }

  /// Standard normal, by Box–Muller in Double precision.
  public mutating func nextNormal() -> Float {
    let u1 = (Double(next() >> 11) + 1) * (1.0 / 9_007_199_254_740_993.0)  // (0, 1]
    let u2 = Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
    return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
  }

  /// Uniform integer in 0..<n.
  public mutating func nextInt(below n: Int) -> Int { Int(next(upperBound: UInt64(n))) }
}

extension Tensor {
  /// Fills with independent standard normal samples.
  public func fillNormal(mean: Float = 0, std: Float = 1, using rng: inout SeededGenerator) {
    // The pointer and the generator are read once, not per element: in debug builds each access
    // to a class's property is an exclusivity check, and they dominated building a ResNet-50.
    let p = data
    var g = rng
    for i in 0..<count { p[i] = mean + std * g.nextNormal() }
    rng = g
  }

  /// Fills with independent uniform samples in [lo, hi).
  public func fillUniform(_ lo: Float, _ hi: Float, using rng: inout SeededGenerator) {
    let p = data
    var g = rng
    for i in 0..<count { p[i] = g.nextUniform(lo, hi) }
    rng = g
  }
}

/// Mixes `words` into one well-distributed seed, starting from `start`: each word is xored in and
/// passed through SplitMix64's finaliser. Callers that must not share streams pass different
/// `start` constants (the data order and the image transforms do).
public func seedMix(start: UInt64, _ words: [UInt64]) -> UInt64 {
  var h = start
  for w in words {
    h ^= w
    h &+= 0x9E37_79B9_7F4A_7C15
    h = (h ^ (h >> 30)) &* 0xBF58_476D_1CE4_E5B9
    h = (h ^ (h >> 27)) &* 0x94D0_49BB_1331_11EB
    h ^= h >> 31
  }
  return h
}
