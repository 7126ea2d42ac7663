// Activations: ReLU, Sigmoid and SiLU as layers. ReLU's backward uses its saved output; Sigmoid's
// uses its saved output too (σ' = y(1 − y)), as Caffe's neuron layers do; SiLU's recomputes σ
// from its saved input, as PyTorch's does.
import CAconKernels
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

  /// Elementwise: the same on a channels-major batch (see `Module.runsChannelsMajor`).
  public override var runsChannelsMajor: Bool { true }

  public override func forward(_ x: Tensor) throws -> Tensor {
    let y = inPlace ? x : reuseOutput(&output, shape: x.shape)
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

  /// Backward masks dy with the saved output; it reads the input only as that output (in place).
  public override var backwardReadsInput: Bool { inPlace }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    guard let y = output, dy.shape == y.shape else {
      throw backwardError(layer: "ReLU.backward", expected: output.map { Shape.text($0.shape) }, got: dy.shape)
    }
    let dx = inPlace ? dy : reuseInputGradient(&inputGrad, shape: y.shape)
    ReLU.mask(dy.data, by: y.data, into: dx.data, count: y.count)
    return dx
  }
}

/// `y = 1 / (1 + e^(−x))`, any shape, computed without overflow for large |x|.
public final class Sigmoid: Module {
  private var output: Tensor?
  private var inputGrad: Tensor?

  public override init() { super.init() }

  /// Elementwise: the same on a channels-major batch (see `Module.runsChannelsMajor`).
  public override var runsChannelsMajor: Bool { true }

  public override func forward(_ x: Tensor) throws -> Tensor {
    let y = reuseOutput(&output, shape: x.shape)
    let xp = x.data, yp = y.data
    for i in 0..<x.count { yp[i] = stableSigmoid(xp[i]) }
    return y
  }

  /// Backward reads the saved output (σ' = y(1 − y)), not the input.
  public override var backwardReadsInput: Bool { false }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    guard let y = output, dy.shape == y.shape else {
      throw backwardError(layer: "Sigmoid.backward", expected: output.map { Shape.text($0.shape) }, got: dy.shape)
    }
    let dx = reuseInputGradient(&inputGrad, shape: y.shape)
    let yp = y.data, dyp = dy.data, dxp = dx.data
    for i in 0..<y.count {
      let s = yp[i]
      dxp[i] = dyp[i] * s * (1 - s)
    }
    return dx
  }
}

/// σ(x) without overflow: e^(−|x|) never exceeds 1.
@inlinable public func stableSigmoid(_ x: Float) -> Float {
  let e = expf(-Swift.abs(x))
  return x >= 0 ? 1 / (1 + e) : e / (1 + e)
}

/// SiLU (Swish, PyTorch's `nn.SiLU`): `y = x·σ(x)`, any shape. Backward:
/// `dx = dy·σ(x)·(1 + x·(1 − σ(x)))`, with σ recomputed from the saved input.
///
/// σ is the ACON kernels' vectorised polynomial sigmoid (`acon_sigmoid` in CAconKernels,
/// relative error ≤ 3e−7, stable for every input: σ = 0 exactly below −88.7, 1 above 16.7), run
/// over blocks of 1024 elements that stay in L1 while the product is formed: one read of x
/// and one write of y forward, one read of x and dy and one write of dx backward.
public final class SiLU: Module {
  private var output: Tensor?
  private var inputGrad: Tensor?
  private var input: Tensor?

  public override init() { super.init() }

  /// Elementwise: the same on a channels-major batch (see `Module.runsChannelsMajor`).
  public override var runsChannelsMajor: Bool { true }

  public override func forward(_ x: Tensor) throws -> Tensor {
    let y = reuseOutput(&output, shape: x.shape)
    input = x
    let xs = UncheckedSendable(x.data), ys = UncheckedSendable(y.data)
    // x, y: (count); elementwise, so any split gives the same bits.
    SiLU.blocks(x.count) { i, len, s in
      acon_sigmoid(xs.value + i, s, len)
      let xp = xs.value + i, yp = ys.value + i
      for k in 0..<len { yp[k] = xp[k] * s[k] }
    }
    return y
  }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    guard let x = input, let y = output, dy.shape == y.shape else {
      throw backwardError(layer: "SiLU.backward", expected: output.map { Shape.text($0.shape) }, got: dy.shape)
    }
    let dx = reuseInputGradient(&inputGrad, shape: x.shape)
    let xs = UncheckedSendable(x.data), gs = UncheckedSendable(dy.data), ds = UncheckedSendable(dx.data)
    // x, dy, dx: (count)
    SiLU.blocks(x.count) { i, len, s in
      acon_sigmoid(xs.value + i, s, len)
      let xp = xs.value + i, gp = gs.value + i, dp = ds.value + i
      for k in 0..<len {
        let sk = s[k]
        dp[k] = gp[k] * (sk * (1 + xp[k] * (1 - sk)))
      }
    }
    return dx
  }

  /// Runs `body(start, length, sigmoidBuffer)` over `0..<count` in blocks of at most 1024, in
  /// parallel, each worker with its own 1024-float buffer.
  private static func blocks(_ count: Int, _ body: (Int, Int, UnsafeMutablePointer<Float>) -> Void) {
    parallelFor(count, minimumChunk: 1 << 15) { r in
      withUnsafeTemporaryAllocation(of: Float.self, capacity: 1024) { buf in
        var i = r.lowerBound
        while i < r.upperBound {
          let len = Swift.min(1024, r.upperBound - i)
          body(i, len, buf.baseAddress!)
          i += len
        }
      }
    }
  }
}
