// Sequential: a container that runs named layers in order, forward and backward.
import TensorCore

/// Runs its layers in order. Names become the prefixes of parameter names, as in PyTorch
/// (`conv1.weight`); layers given without names are numbered `0`, `1`, ...
public final class Sequential: Module {
  /// The layers with their names.
  public let layers: [(String, Module)]

  /// A container of named layers.
  public init(_ layers: [(String, Module)]) {
    self.layers = layers
    super.init()
  }

  /// A container of layers named `0`, `1`, ...
  public convenience init(_ layers: [Module]) {
    self.init(layers.enumerated().map { (String($0.offset), $0.element) })
  }

  public override var children: [(String, Module)] { layers }

  /// The layer with this name, if any.
  public subscript(name: String) -> Module? { layers.first { $0.0 == name }?.1 }

  public override var propagatesInputGradient: Bool {
    didSet { layers.first?.1.propagatesInputGradient = propagatesInputGradient }
  }

  public override func outputShape(for s: [Int]) throws -> [Int] {
    var shape = s
    for (name, l) in layers { shape = try named(name) { try l.outputShape(for: shape) } }
    return shape
  }

  /// Runs the layers in order. A `Conv2D` followed by `ReLU(inPlace: true)` runs as one fused
  /// step (the convolution applies the ReLU as it writes its output, and its mask as it reads
  /// the gradient): the same bits, one pass over the activation less each way.
  public override func forward(_ x: Tensor) throws -> Tensor {
    var h = x
    var i = 0
    while i < layers.count {
      let (name, l) = layers[i]
      if let conv = l as? Conv2D, i + 1 < layers.count, let relu = layers[i + 1].1 as? ReLU, relu.inPlace {
        h = try named(name) { try conv.forward(h, fusingReLU: true) }
        i += 2
      } else {
        h = try named(name) { try l.forward(h) }
        i += 1
      }
    }
    return h
  }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    var g = dy
    for (i, (name, l)) in layers.enumerated().reversed() {
      // A ReLU that the convolution before it ran fused: the convolution's backward applies it.
      if l is ReLU, i > 0, let conv = layers[i - 1].1 as? Conv2D, conv.fusedReLU { continue }
      g = try named(name) { try l.backward(g) }
    }
    return g
  }

  /// Runs `body`, adding the child's name to a shape error (`conv2 (Conv2D): expected ...`).
  private func named<T>(_ name: String, _ body: () throws -> T) throws -> T {
    do {
      return try body()
    } catch let TensorError.shapeMismatch(layer, expected, got) where !layer.contains("(") {
      throw TensorError.shapeMismatch(layer: "\(name) (\(layer))", expected: expected, got: got)
    }
  }
}
