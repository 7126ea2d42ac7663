// Reshaping and regularisation layers that move no arithmetic: Flatten and Dropout.
import TensorCore

/// `[N, d1, d2, ...] → [N, d1·d2·...]`, a view of the input (no copy).
public final class Flatten: Module {
  private var inputShape: [Int] = []

  public override init() { super.init() }

  public override func outputShape(for s: [Int]) throws -> [Int] {
    guard s.count >= 1 else { throw TensorError.shapeMismatch(layer: typeName, expected: "[N, ...]", got: s) }
    return [s[0], s.dropFirst().reduce(1, *)]
  }

  public override func forward(_ x: Tensor) throws -> Tensor {
    inputShape = x.shape
    return x.reshaped(try outputShape(for: x.shape))
  }

  /// Backward reads only dy and the input shape: neither x nor y.
  public override var backwardReadsInput: Bool { false }
  public override var backwardReadsOutput: Bool { false }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    guard dy.count == inputShape.reduce(1, *) else {
      throw TensorError.shapeMismatch(layer: "Flatten.backward", expected: Shape.text(try outputShape(for: inputShape)), got: dy.shape)
    }
    return dy.reshaped(inputShape)
  }
}

/// Inverted dropout: in training, zeroes each element with probability `p` and scales the rest
/// by 1/(1−p); in evaluation, the identity. Any shape. The mask comes from the layer's own
/// seeded generator, so runs are reproducible.
public final class Dropout: Module {
  /// The probability of zeroing an element, in [0, 1).
  public let p: Float
  /// The generator that draws masks; save its state to resume a run exactly.
  public var rng: SeededGenerator
  private var mask: Tensor?
  private var output: Tensor?
  private var inputGrad: Tensor?

  /// - Parameters: p, the drop probability in [0, 1); seed for the mask generator.
  public init(p: Float = 0.5, seed: UInt64 = 0) {
    precondition(p >= 0 && p < 1, "Dropout: p must be in [0, 1), got \(p)")
    self.p = p
    self.rng = SeededGenerator(seed: seed)
  }

  public override func forward(_ x: Tensor) throws -> Tensor {
    let y = reuseOutput(&output, shape: x.shape)
    guard isTraining && p > 0 else {
      y.copy(from: x)
      return y
    }
    let m = reuse(&mask, shape: x.shape)
    let scale = 1 / (1 - p)
    let xp = x.data, yp = y.data, mp = m.data
    for i in 0..<x.count {
      mp[i] = rng.nextUniform() < p ? 0 : scale
      yp[i] = xp[i] * mp[i]
    }
    return y
  }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    guard let y = output, dy.shape == y.shape else {
      throw backwardError(layer: "Dropout.backward", expected: output.map { Shape.text($0.shape) }, got: dy.shape)
    }
    let dx = reuseInputGradient(&inputGrad, shape: dy.shape)
    if isTraining && p > 0, let m = mask {
      let dyp = dy.data, mp = m.data, dxp = dx.data
      for i in 0..<dy.count { dxp[i] = dyp[i] * mp[i] }
    } else {
      dx.copy(from: dy)
    }
    return dx
  }
}
