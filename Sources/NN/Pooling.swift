// Pooling: max and average pooling over K×K windows, global and adaptive average pooling.
//
// Shapes: x [N, C, H, W] → y [N, C, OH, OW] with OH = (H + 2·padding − K) / stride + 1.
import CLayerKernels
import TensorCore

/// What max and average pooling share: a K×K window, its stride and padding, and the output
/// shape `[N, C, (H + 2·padding − K) / stride + 1, (W + 2·padding − K) / stride + 1]`.
public class Pool2D: Module {
  /// Window size.
  public let kernelSize: Int
  /// Step between windows (PyTorch's default: the kernel size).
  public let stride: Int
  /// Implicit padding on each side (at most half the kernel).
  public let padding: Int

  init(kernelSize: Int, stride: Int?, padding: Int, name: String) {
    precondition(kernelSize > 0 && (stride ?? 1) > 0 && padding >= 0 && padding <= kernelSize / 2,
      "\(name): kernel and stride must be positive, padding at most kernel/2")
    self.kernelSize = kernelSize
    self.stride = stride ?? kernelSize
    self.padding = padding
  }

  public override func outputShape(for s: [Int]) throws -> [Int] {
    try requireRank(s, 4, layer: typeName, expected: "[N, C, H, W]")
    let k = kernelSize
    guard s[2] + 2 * padding >= k, s[3] + 2 * padding >= k else {
      throw TensorError.shapeMismatch(layer: typeName, expected: "[N, C, H, W] with H, W + 2·\(padding) ≥ \(k)", got: s)
    }
    return [s[0], s[1], (s[2] + 2 * padding - k) / stride + 1, (s[3] + 2 * padding - k) / stride + 1]
  }
}

/// Max pooling over K×K windows. Padding reads as −∞ (PyTorch): it never wins. Backward routes
/// each gradient to the first maximum of its window (a NaN counts as a maximum, the last one
/// winning, as PyTorch's). Runs in parallel over planes.
public final class MaxPool2D: Pool2D {
  private var output: Tensor?
  private var inputGrad: Tensor?
  private var argmax: [Int32] = []
  private var inputShape: [Int] = []

  /// - Parameters: kernelSize K, stride (default K), padding (≤ K/2; reads as −∞).
  public init(kernelSize: Int, stride: Int? = nil, padding: Int = 0) {
    super.init(kernelSize: kernelSize, stride: stride, padding: padding, name: "MaxPool2D")
  }

  public override func forward(_ x: Tensor) throws -> Tensor {
    let ys = try outputShape(for: x.shape)
    let y = reuseOutput(&output, shape: ys)
    inputShape = x.shape
    let (h, w, oh, ow) = (x.shape[2], x.shape[3], ys[2], ys[3])
    let planes = ys[0] * ys[1]
    let (k, s, p) = (kernelSize, stride, padding)
    if argmax.count != y.count { argmax = [Int32](repeating: 0, count: y.count) }
    argmax.withUnsafeMutableBufferPointer { am in
      let xs = UncheckedSendable(x.data), dst = UncheckedSendable(y.data), idx = UncheckedSendable(am.baseAddress!)
      // x [N·C planes of H·W] → y, argmax [N·C planes of OH·OW], in parallel over planes.
      parallelFor(planes, minimumChunk: Swift.max(1, 4096 / Swift.max(1, oh * ow))) { range in
        // PyTorch's rule (CLayerKernels: acon_maxpool_forward): the window's first in-image
        // element, then anything greater and any NaN; padding is never a candidate.
        acon_maxpool_forward(xs.value, dst.value, idx.value, range.lowerBound, range.upperBound, h, w, oh, ow, k, s, p)
      }
    }
    return y
  }

  /// Backward reads only dy and what forward saved (the shape, the argmax): neither x nor y.
  public override var backwardReadsInput: Bool { false }
  public override var backwardReadsOutput: Bool { false }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    guard let y = output, dy.shape == y.shape else {
      throw backwardError(layer: "MaxPool2D.backward", expected: output.map { Shape.text($0.shape) }, got: dy.shape)
    }
    let dx = reuseInputGradient(&inputGrad, shape: inputShape)
    let hw = inputShape[2] * inputShape[3], ohw = y.shape[2] * y.shape[3]
    argmax.withUnsafeBufferPointer { am in
      let idx = UncheckedSendable(am.baseAddress!), gs = UncheckedSendable(dy.data), ds = UncheckedSendable(dx.data)
      // Each plane's gradients go to its own dx plane, in output order.
      parallelFor(y.shape[0] * y.shape[1], minimumChunk: Swift.max(1, 4096 / Swift.max(1, hw))) { range in
        for pl in range {
          let d = ds.value + pl * hw
          d.update(repeating: 0, count: hw)
          for o in (pl * ohw)..<((pl + 1) * ohw) { d[Int(idx.value[o])] += gs.value[o] }
        }
      }
    }
    return dx
  }
}

/// Average pooling over K×K windows. Zero padding counts in the divisor (PyTorch's
/// `count_include_pad=True`), so every window divides by K².
public final class AvgPool2D: Pool2D {
  private var output: Tensor?
  private var inputGrad: Tensor?
  private var inputShape: [Int] = []

  /// - Parameters: kernelSize K, stride (default K), padding (≤ K/2; reads as 0).
  public init(kernelSize: Int, stride: Int? = nil, padding: Int = 0) {
    super.init(kernelSize: kernelSize, stride: stride, padding: padding, name: "AvgPool2D")
  }

  public override func forward(_ x: Tensor) throws -> Tensor {
    let ys = try outputShape(for: x.shape)
    let y = reuseOutput(&output, shape: ys)
    inputShape = x.shape
    let (h, w, oh, ow) = (x.shape[2], x.shape[3], ys[2], ys[3])
    let scale = 1 / Float(kernelSize * kernelSize)
    let x0 = x.data, y0 = y.data
    for pl in 0..<(ys[0] * ys[1]) {
      let xp = x0 + pl * h * w
      for i in 0..<oh {
        for j in 0..<ow {
          var acc: Float = 0
          for u in 0..<kernelSize {
            let r = i * stride - padding + u
            if r < 0 || r >= h { continue }
            for v in 0..<kernelSize {
              let c = j * stride - padding + v
              if c >= 0 && c < w { acc += xp[r * w + c] }
            }
          }
          y0[pl * oh * ow + i * ow + j] = acc * scale
        }
      }
    }
    return y
  }

  /// Backward reads only dy and the input shape: neither x nor y.
  public override var backwardReadsInput: Bool { false }
  public override var backwardReadsOutput: Bool { false }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    guard let y = output, dy.shape == y.shape else {
      throw backwardError(layer: "AvgPool2D.backward", expected: output.map { Shape.text($0.shape) }, got: dy.shape)
    }
    let dx = reuseInputGradient(&inputGrad, shape: inputShape)
    dx.zero()
    let (h, w, oh, ow) = (inputShape[2], inputShape[3], y.shape[2], y.shape[3])
    let scale = 1 / Float(kernelSize * kernelSize)
    for pl in 0..<(y.shape[0] * y.shape[1]) {
      let dxp = dx.data + pl * h * w
      for i in 0..<oh {
        for j in 0..<ow {
          let g = dy.data[pl * oh * ow + i * ow + j] * scale
          for u in 0..<kernelSize {
            let r = i * stride - padding + u
            if r < 0 || r >= h { continue }
            for v in 0..<kernelSize {
              let c = j * stride - padding + v
              if c >= 0 && c < w { dxp[r * w + c] += g }
            }
          }
        }
      }
    }
    return dx
  }
}

/// Global average pooling: `[N, C, H, W] → [N, C, 1, 1]`, the mean of each plane
/// (PyTorch's `AdaptiveAvgPool2d(1)`).
public final class GlobalAvgPool2D: Module {
  private var output: Tensor?
  private var inputGrad: Tensor?
  private var inputShape: [Int] = []

  public override init() { super.init() }

  public override func outputShape(for s: [Int]) throws -> [Int] {
    try requireRank(s, 4, layer: typeName, expected: "[N, C, H, W]")
    return [s[0], s[1], 1, 1]
  }

  public override func forward(_ x: Tensor) throws -> Tensor {
    let ys = try outputShape(for: x.shape)
    let y = reuseOutput(&output, shape: ys)
    inputShape = x.shape
    let hw = x.shape[2] * x.shape[3]
    let xp = x.data, yp = y.data
    for pl in 0..<(ys[0] * ys[1]) {
      yp[pl] = hw > 0 ? contiguousSum(xp + pl * hw, count: hw) / Float(hw) : 0
    }
    return y
  }

  /// Backward reads only dy and the input shape: neither x nor y.
  public override var backwardReadsInput: Bool { false }
  public override var backwardReadsOutput: Bool { false }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    guard let y = output, dy.shape == y.shape else {
      throw backwardError(layer: "GlobalAvgPool2D.backward", expected: output.map { Shape.text($0.shape) }, got: dy.shape)
    }
    let dx = reuseInputGradient(&inputGrad, shape: inputShape)
    let hw = inputShape[2] * inputShape[3]
    for pl in 0..<y.count {
      let g = dy.data[pl] / Float(hw)
      (dx.data + pl * hw).update(repeating: g, count: hw)
    }
    return dx
  }
}

/// Adaptive average pooling, PyTorch's `AdaptiveAvgPool2d((OH, OW))`: `[N, C, H, W] →
/// [N, C, OH, OW]`, output row i averaging input rows `⌊i·H/OH⌋ ..< ⌈(i+1)·H/OH⌉` (likewise
/// columns). `AdaptiveAvgPool2D(outputSize: 1)` keeps the 4-D shape `[N, C, 1, 1]` (the mean
/// of each plane, as `GlobalAvgPool2D`). Runs in parallel over planes.
public final class AdaptiveAvgPool2D: Module {
  /// (OH, OW).
  public let outputSize: (height: Int, width: Int)
  private var output: Tensor?
  private var inputGrad: Tensor?
  private var inputShape: [Int] = []

  /// Pools every plane to `outputSize × outputSize`.
  public convenience init(outputSize: Int) { self.init(outputSize: (outputSize, outputSize)) }

  /// Pools every plane to OH × OW.
  public init(outputSize: (Int, Int)) {
    precondition(outputSize.0 > 0 && outputSize.1 > 0, "AdaptiveAvgPool2D: output size must be positive")
    self.outputSize = (outputSize.0, outputSize.1)
    super.init()
  }

  public override func outputShape(for s: [Int]) throws -> [Int] {
    try requireRank(s, 4, layer: typeName, expected: "[N, C, H, W]")
    guard s[2] > 0, s[3] > 0 else {
      throw TensorError.shapeMismatch(layer: typeName, expected: "[N, C, H, W] with H, W ≥ 1", got: s)
    }
    return [s[0], s[1], outputSize.height, outputSize.width]
  }

  /// Input rows (or columns) `lo..<hi` of output row i: PyTorch's start and end index.
  @inline(__always) private static func bin(_ i: Int, _ size: Int, _ out: Int) -> (Int, Int) {
    (i * size / out, ((i + 1) * size + out - 1) / out)
  }

  public override func forward(_ x: Tensor) throws -> Tensor {
    let ys = try outputShape(for: x.shape)
    let y = reuseOutput(&output, shape: ys)
    inputShape = x.shape
    let (h, w, oh, ow) = (x.shape[2], x.shape[3], ys[2], ys[3])
    let xs = UncheckedSendable(x.data), dst = UncheckedSendable(y.data)
    // x [N·C planes of H·W] → y [N·C planes of OH·OW]
    parallelFor(ys[0] * ys[1], minimumChunk: Swift.max(1, 8192 / (h * w))) { planes in
      for pl in planes {
        let xp = xs.value + pl * h * w, yp = dst.value + pl * oh * ow
        if oh == 1 && ow == 1 {
          yp[0] = contiguousSum(xp, count: h * w) / Float(h * w)
          continue
        }
        for i in 0..<oh {
          let (r0, r1) = Self.bin(i, h, oh)
          for j in 0..<ow {
            let (q0, q1) = Self.bin(j, w, ow)
            var acc: Float = 0
            for r in r0..<r1 { for q in q0..<q1 { acc += xp[r * w + q] } }
            yp[i * ow + j] = acc / Float((r1 - r0) * (q1 - q0))
          }
        }
      }
    }
    return y
  }

  /// Backward reads only dy and the input shape: neither x nor y.
  public override var backwardReadsInput: Bool { false }
  public override var backwardReadsOutput: Bool { false }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    guard let y = output, dy.shape == y.shape else {
      throw backwardError(layer: "AdaptiveAvgPool2D.backward", expected: output.map { Shape.text($0.shape) }, got: dy.shape)
    }
    let dx = reuseInputGradient(&inputGrad, shape: inputShape)
    let (h, w, oh, ow) = (inputShape[2], inputShape[3], y.shape[2], y.shape[3])
    let gs = UncheckedSendable(dy.data), ds = UncheckedSendable(dx.data)
    // dy [N·C planes of OH·OW] → dx [N·C planes of H·W]; bins may overlap, so accumulate.
    parallelFor(y.shape[0] * y.shape[1], minimumChunk: Swift.max(1, 8192 / (h * w))) { planes in
      for pl in planes {
        let dxp = ds.value + pl * h * w, gp = gs.value + pl * oh * ow
        if oh == 1 && ow == 1 {
          dxp.update(repeating: gp[0] / Float(h * w), count: h * w)
          continue
        }
        dxp.update(repeating: 0, count: h * w)
        for i in 0..<oh {
          let (r0, r1) = Self.bin(i, h, oh)
          for j in 0..<ow {
            let (q0, q1) = Self.bin(j, w, ow)
            let g = gp[i * ow + j] / Float((r1 - r0) * (q1 - q0))
            for r in r0..<r1 { for q in q0..<q1 { dxp[r * w + q] += g } }
          }
        }
      }
    }
    return dx
  }
}
