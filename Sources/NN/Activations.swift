// Activations: ReLU and Sigmoid as layers. ReLU's backward uses its saved output; Sigmoid's
// uses its saved output too (σ' = y(1 − y)), as Caffe's neuron layers do.
import TensorCore

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// `y = max(x, 0)`, any shape. Backward passes `dy` where `y > 0`.
///
/// With `inPlace` (PyTorch's `ReLU(inplace=True)`), forward overwrites its input and backward
/// overwrites the incoming gradient, saving two tensors of x's size. Use it only where nothing
/// else reads the input after this layer: in a `Sequential` after a convolution or linear layer,
/// whose backward passes need their input and dy but not their output.
public final class ReLU: Module {
  /// Whether forward and backward work in place.
  public let inPlace: Bool
  private var output: Tensor?
  private var inputGrad: Tensor?

  /// - Parameter inPlace: overwrite the input and the incoming gradient (see above).
  public init(inPlace: Bool = false) {
    self.inPlace = inPlace
    super.init()
  }

  public override func forward(_ x: Tensor) throws -> Tensor {
    let y = inPlace ? x : reuse(&output, shape: x.shape)
    if inPlace { output = x }
    ReLU.apply(x.data, into: y.data, count: x.count)
    return y
  }

  /// `y[i] = max(x[i], 0)` for `i` in `0..<count`, in parallel; `y` may be `x`. NaN propagates
  /// (`Swift.max(NaN, 0)` returns its first argument). Also run by `Conv2D` for a fused ReLU.
  static func apply(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
    let src = UncheckedSendable(x), dst = UncheckedSendable(y)
    parallelFor(count, minimumChunk: 1 << 15) { r in
      for i in r { dst.value[i] = Swift.max(src.value[i], 0) }
    }
  }

  /// `dx[i] = y[i] > 0 ? dy[i] : 0` for `i` in `0..<count`, in parallel; `dx` may be `dy`.
  /// Also run by `Conv2D` for a fused ReLU.
  static func mask(_ dy: UnsafePointer<Float>, by y: UnsafePointer<Float>, into dx: UnsafeMutablePointer<Float>, count: Int) {
    let ys = UncheckedSendable(y), g = UncheckedSendable(dy), d = UncheckedSendable(dx)
    parallelFor(count, minimumChunk: 1 << 15) { r in
      for i in r { d.value[i] = ReLU.mask(g.value[i], by: ys.value[i]) }
    }
  }

  /// One element of the mask: loads both, so that loops over it are branch-free, vectorised selects.
  @inline(__always) static func mask(_ dy: Float, by y: Float) -> Float { y > 0 ? dy : 0 }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    guard let y = output, dy.shape == y.shape else {
      throw TensorError.shapeMismatch(layer: "ReLU.backward", expected: output.map { Shape.text($0.shape) } ?? "a forward pass first", got: dy.shape)
    }
    let dx = inPlace ? dy : reuse(&inputGrad, shape: y.shape)
    ReLU.mask(dy.data, by: y.data, into: dx.data, count: y.count)
    return dx
  }
}

/// `y = 1 / (1 + e^(−x))`, any shape, computed without overflow for large |x|.
public final class Sigmoid: Module {
  private var output: Tensor?
  private var inputGrad: Tensor?

  public override init() { super.init() }

  public override func forward(_ x: Tensor) throws -> Tensor {
    let y = reuse(&output, shape: x.shape)
    for i in 0..<x.count { y.data[i] = stableSigmoid(x.data[i]) }
    return y
  }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    guard let y = output, dy.shape == y.shape else {
      throw TensorError.shapeMismatch(layer: "Sigmoid.backward", expected: output.map { Shape.text($0.shape) } ?? "a forward pass first", got: dy.shape)
    }
    let dx = reuse(&inputGrad, shape: y.shape)
    for i in 0..<y.count {
      let s = y.data[i]
      dx.data[i] = dy.data[i] * s * (1 - s)
    }
    return dx
  }
}

/// σ(x) without overflow: e^(−|x|) never exceeds 1.
@inlinable public func stableSigmoid(_ x: Float) -> Float {
  let e = expf(-Swift.abs(x))
  return x >= 0 ? 1 / (1 + e) : e / (1 + e)
}
