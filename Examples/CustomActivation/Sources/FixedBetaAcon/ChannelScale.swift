// ChannelScale and Residual: a custom leaf Module and a custom container, written as
// docs/custom-module.md explains (forward, backward, parameters, children, owned outputs).
import NN
import TensorCore

/// y[n, c, i] = γ[c] · x[n, c, i]: a learnable per-channel scale. Input and output
/// `[N, C, H, W]`; parameter `weight` γ `[C]`, initialised to 1.
public final class ChannelScale: Module {
  public let channels: Int
  public let weight: Parameter
  private var input: Tensor?  // kept for the backward pass (the caller owns it)
  private var output: Tensor?, inputGrad: Tensor?  // owned, reused from step to step

  public init(channels: Int) {
    self.channels = channels
    weight = Parameter(Tensor(shape: [channels], repeating: 1), decays: false)
    super.init()
  }

  public override var localParameters: [(String, Parameter)] { [("weight", weight)] }

  public override func outputShape(for s: [Int]) throws -> [Int] {
    guard s.count == 4, s[1] == channels else {
      throw TensorError.shapeMismatch(layer: typeName, expected: "[N, \(channels), H, W]", got: s)
    }
    return s
  }

  public override func forward(_ x: Tensor) throws -> Tensor {
    _ = try outputShape(for: x.shape)
    let y = reuseOutput(&output, shape: x.shape)  // no allocation after the first step
    let hw = x.shape[2] * x.shape[3]
    for n in 0..<x.shape[0] {
      for c in 0..<channels {
        let base = (n * channels + c) * hw, g = weight.value.data[c]
        for i in 0..<hw { y.data[base + i] = g * x.data[base + i] }
      }
    }
    input = x
    return y
  }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    guard let x = input, dy.shape == x.shape else {
      throw backwardError(layer: typeName + ".backward", expected: input.map { Shape.text($0.shape) }, got: dy.shape)
    }
    let dx = reuseInputGradient(&inputGrad, shape: x.shape)
    let hw = x.shape[2] * x.shape[3]
    for n in 0..<x.shape[0] {
      for c in 0..<channels {
        let base = (n * channels + c) * hw, g = weight.value.data[c]
        var dg: Float = 0
        for i in 0..<hw {
          dg += dy.data[base + i] * x.data[base + i]
          dx.data[base + i] = g * dy.data[base + i]
        }
        weight.grad.data[c] += dg  // parameter gradients accumulate
      }
    }
    return dx
  }
}

/// y = x + body(x): a container. Its children give the parameter names (`body.0.weight`, …).
public final class Residual: Module {
  public let body: Module
  private var output: Tensor?, inputGrad: Tensor?

  public init(_ body: Module) {
    self.body = body
    super.init()
  }

  public override var children: [(String, Module)] { [("body", body)] }

  public override func outputShape(for s: [Int]) throws -> [Int] {
    let out = try body.outputShape(for: s)
    guard out == s else { throw TensorError.shapeMismatch(layer: "Residual.body", expected: Shape.text(s), got: out) }
    return s
  }

  public override func forward(_ x: Tensor) throws -> Tensor {
    let b = try body.forward(x)  // owned by the body: read it before its next forward
    let y = reuseOutput(&output, shape: x.shape)
    for i in 0..<x.count { y.data[i] = x.data[i] + b.data[i] }
    return y
  }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    let db = try body.backward(dy)
    let dx = reuseInputGradient(&inputGrad, shape: dy.shape)
    for i in 0..<dy.count { dx.data[i] = dy.data[i] + db.data[i] }
    return dx
  }
}
