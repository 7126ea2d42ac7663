// FReLUDepthwiseFallback: TEMPORARY, FOR CORRECTNESS ONLY. A plain direct depthwise 3×3
// convolution (padding 1, stride 1 or 2, with bias) for AconFReLU's `conv_frelu`, written because
// NN's vectorised `DepthwiseConv2D` (branch `layers`) was not yet on main when AconFReLU was
// built. Replace it by `DepthwiseConv2D(channels: C, kernelSize: 3, stride: s, padding: 1)`
// (one line in AconFReLU.swift) and delete this file; the state_dict (`weight [C, 1, 3, 3]`,
// `bias [C]`) and the initialisation (PyTorch's, U(−1/3, 1/3) for both) are the same.
//
// Shapes: x [N, C, H, W], y [N, C, OH, OW], OH = (H − 1)/s + 1 (3×3, padding 1).
import NN
import TensorCore

/// The depthwise 3×3 convolution of AconFReLU until NN's DepthwiseConv2D replaces it (see the
/// file comment). `y[n, c, i, j] = bias[c] + Σ_{u,v} weight[c, 0, u, v]·x[n, c, i·s − 1 + u, j·s − 1 + v]`.
final class FReLUDepthwiseFallback: Module {
  let channels: Int, stride: Int
  /// `[C, 1, 3, 3]`.
  let weight: Parameter
  /// `[C]`.
  let bias: Parameter

  private var input: Tensor?
  private var output: Tensor?
  private var inputGrad: Tensor?

  init(channels: Int, stride: Int, rng: inout SeededGenerator) {
    self.channels = channels
    self.stride = stride
    weight = Parameter(Tensor(zeros: [channels, 1, 3, 3]))
    bias = Parameter(Tensor(zeros: [channels]), decays: false)
    super.init()
    WeightInit.pytorchDefault.initialize(weight: weight.value, bias: bias.value, using: &rng)
  }

  override var typeName: String { "Conv2d(depthwise, fallback)" }
  override var localParameters: [(String, Parameter)] { [("weight", weight), ("bias", bias)] }

  override func outputShape(for s: [Int]) throws -> [Int] {
    try requireRank(s, 4, layer: "AconFReLU.conv_frelu", expected: "[N, \(channels), H, W]")
    guard s[1] == channels else {
      throw TensorError.shapeMismatch(layer: "AconFReLU.conv_frelu", expected: "[N, \(channels), H, W]", got: s)
    }
    return [s[0], channels, (s[2] - 1) / stride + 1, (s[3] - 1) / stride + 1]
  }

  override func forward(_ x: Tensor) throws -> Tensor {
    let os = try outputShape(for: x.shape)
    input = x
    let y = reuse(&output, shape: os)
    let (c, h, w, oh, ow, s) = (channels, x.shape[2], x.shape[3], os[2], os[3], stride)
    let xs = UncheckedSendable(x.data), ys = UncheckedSendable(y.data)
    let ws = UncheckedSendable(weight.value.data), bs = UncheckedSendable(bias.value.data)
    parallelFor(os[0] * c) { r in
      for plane in r {
        let ch = plane % c, xp = xs.value + plane * h * w, yp = ys.value + plane * oh * ow, k = ws.value + ch * 9
        for i in 0..<oh {
          for j in 0..<ow {
            var acc = bs.value[ch]
            for u in 0..<3 {
              let yy = i * s - 1 + u
              if yy < 0 || yy >= h { continue }
              for v in 0..<3 {
                let xx = j * s - 1 + v
                if xx < 0 || xx >= w { continue }
                acc += k[u * 3 + v] * xp[yy * w + xx]
              }
            }
            yp[i * ow + j] = acc
          }
        }
      }
    }
    return y
  }

  override func backward(_ dy: Tensor) throws -> Tensor {
    guard let x = input, let y = output, dy.shape == y.shape else {
      throw TensorError.shapeMismatch(layer: "AconFReLU.conv_frelu.backward",
        expected: output.map { Shape.text($0.shape) } ?? "a forward pass first", got: dy.shape)
    }
    let dx = reuse(&inputGrad, shape: x.shape)
    let (n, c, h, w, oh, ow, s) = (x.shape[0], channels, x.shape[2], x.shape[3], y.shape[2], y.shape[3], stride)
    let xs = UncheckedSendable(x.data), dys = UncheckedSendable(dy.data), dxs = UncheckedSendable(dx.data)
    let ws = UncheckedSendable(weight.value.data), dws = UncheckedSendable(weight.grad.data)
    let dbs = UncheckedSendable(bias.grad.data)
    let wantDx = propagatesInputGradient
    // Each channel's dW, db and dx planes are owned by one thread; samples in order.
    parallelFor(c) { r in
      for ch in r {
        let k = ws.value + ch * 9
        var dk = [Float](repeating: 0, count: 9)
        var db: Float = 0
        for sample in 0..<n {
          let plane = sample * c + ch
          let xp = xs.value + plane * h * w, gp = dys.value + plane * oh * ow, dxp = dxs.value + plane * h * w
          if wantDx { dxp.update(repeating: 0, count: h * w) }
          for i in 0..<oh {
            for j in 0..<ow {
              let g = gp[i * ow + j]
              db += g
              for u in 0..<3 {
                let yy = i * s - 1 + u
                if yy < 0 || yy >= h { continue }
                for v in 0..<3 {
                  let xx = j * s - 1 + v
                  if xx < 0 || xx >= w { continue }
                  dk[u * 3 + v] += g * xp[yy * w + xx]
                  if wantDx { dxp[yy * w + xx] += g * k[u * 3 + v] }
                }
              }
            }
          }
        }
        for t in 0..<9 { dws.value[ch * 9 + t] += dk[t] }
        dbs.value[ch] += db
      }
    }
    return dx
  }
}
