// AconReference: the naive Double-precision twin of the fused ACON kernels, written straight
// from the formulas, one element at a time. Tests and acon-bench check the kernels against it.
//
// Shapes: x, dy [N, C, HW]; p1, p2 [C]; β [C] (per channel), [N, C] (per sample and channel)
// or [N, C, HW] (per element).
import Foundation

/// The Double reference of ACON's forward and backward passes.
public enum AconReference {
  /// `y = (p1 − p2)·x·σ(β·(p1 − p2)·x) + p2·x` for every element. `beta` has C, N·C or N·C·HW
  /// values, which selects its layout.
  public static func forward(x: [Float], n: Int, c: Int, hw: Int, p1: [Float], p2: [Float], beta: [Float]) -> [Double] {
    var y = [Double](repeating: 0, count: n * c * hw)
    for s in 0..<n {
      for ch in 0..<c {
        for j in 0..<hw {
          let i = (s * c + ch) * hw + j
          let b = Double(beta[index(beta.count, s, ch, j, n, c, hw)])
          let d = (Double(p1[ch]) - Double(p2[ch])) * Double(x[i])
          y[i] = d * sigmoid(b * d) + Double(p2[ch]) * Double(x[i])
        }
      }
    }
    return y
  }

  /// The gradients for upstream gradient `dy`: dx, dp1 `[C]`, dp2 `[C]` and dβ (β's layout).
  public static func backward(x: [Float], dy: [Float], n: Int, c: Int, hw: Int, p1: [Float], p2: [Float], beta: [Float])
    -> (dx: [Double], dp1: [Double], dp2: [Double], dbeta: [Double])
  {
    var dx = [Double](repeating: 0, count: n * c * hw)
    var dp1 = [Double](repeating: 0, count: c), dp2 = [Double](repeating: 0, count: c)
    var dbeta = [Double](repeating: 0, count: beta.count)
    for s in 0..<n {
      for ch in 0..<c {
        for j in 0..<hw {
          let i = (s * c + ch) * hw + j
          let bi = index(beta.count, s, ch, j, n, c, hw)
          let b = Double(beta[bi]), xv = Double(x[i]), g0 = Double(dy[i])
          let a = Double(p1[ch]) - Double(p2[ch])
          let d = a * xv
          let sg = sigmoid(b * d)
          // ∂y/∂d = σ + d·σ'·β with σ' = σ(1 − σ); y = d·σ(βd) + p2·x.
          let g = sg * (1 + b * d * (1 - sg))
          dx[i] = g0 * (a * g + Double(p2[ch]))
          dp1[ch] += g0 * xv * g
          dp2[ch] += g0 * xv * (1 - g)
          dbeta[bi] += g0 * d * d * sg * (1 - sg)
        }
      }
    }
    return (dx, dp1, dp2, dbeta)
  }

  private static func index(_ count: Int, _ s: Int, _ ch: Int, _ j: Int, _ n: Int, _ c: Int, _ hw: Int) -> Int {
    if count == c { return ch }
    if count == n * c { return s * c + ch }
    precondition(count == n * c * hw, "AconReference: β has \(count) values; expected C, N·C or N·C·HW")
    return (s * c + ch) * hw + j
  }

  /// σ(z) in Double, without overflow.
  public static func sigmoid(_ z: Double) -> Double {
    z >= 0 ? 1 / (1 + exp(-z)) : exp(z) / (1 + exp(z))
  }
}

// MARK: - Meta-ACON pixel-wise and the smooth maximum

extension AconReference {
  /// Meta-ACON pixel-wise: β = σ(x), `y = d·σ(β·d) + p2·x`, d = (p1 − p2)·x. x `[N, C, HW]`.
  public static func pixelwiseForward(x: [Float], n: Int, c: Int, hw: Int, p1: [Float], p2: [Float]) -> [Double] {
    var y = [Double](repeating: 0, count: n * c * hw)
    for i in 0..<(n * c * hw) {
      let ch = (i / hw) % c, xv = Double(x[i]), b = sigmoid(xv)
      let d = (Double(p1[ch]) - Double(p2[ch])) * xv
      y[i] = d * sigmoid(b * d) + Double(p2[ch]) * xv
    }
    return y
  }

  /// Its gradients: dx (with the path through β = σ(x)), dp1 `[C]`, dp2 `[C]`.
  public static func pixelwiseBackward(x: [Float], dy: [Float], n: Int, c: Int, hw: Int, p1: [Float], p2: [Float])
    -> (dx: [Double], dp1: [Double], dp2: [Double])
  {
    var dx = [Double](repeating: 0, count: n * c * hw)
    var dp1 = [Double](repeating: 0, count: c), dp2 = [Double](repeating: 0, count: c)
    for i in 0..<(n * c * hw) {
      let ch = (i / hw) % c, xv = Double(x[i]), g0 = Double(dy[i])
      let b = sigmoid(xv), a = Double(p1[ch]) - Double(p2[ch]), d = a * xv
      let s = sigmoid(b * d), w = s * (1 - s)
      let g = s + b * d * w
      // y(x) = d(x)·σ(β(x)·d(x)) + p2·x: ∂y/∂x = a·g + p2 + d²·w·β'(x).
      dx[i] = g0 * (a * g + Double(p2[ch]) + d * d * w * b * (1 - b))
      dp1[ch] += g0 * xv * g
      dp2[ch] += g0 * xv * (1 - g)
    }
    return (dx, dp1, dp2)
  }

  /// The smooth maximum S(a, b) = (a − b)·σ(β·(a − b)) + b, elementwise.
  public static func smoothMax(a: [Float], b: [Float], beta: Double = 1) -> [Double] {
    (0..<a.count).map { i in
      let d = Double(a[i]) - Double(b[i])
      return d * sigmoid(beta * d) + Double(b[i])
    }
  }

  /// Its gradients: da, db and dβ per plane of `hw` elements (`[a.count / hw]`).
  public static func smoothMaxBackward(a: [Float], b: [Float], dy: [Float], hw: Int, beta: Double = 1)
    -> (da: [Double], db: [Double], dbeta: [Double])
  {
    var da = [Double](repeating: 0, count: a.count), db = da
    var dbeta = [Double](repeating: 0, count: hw == 0 ? 0 : a.count / hw)
    for i in 0..<a.count {
      let d = Double(a[i]) - Double(b[i]), g0 = Double(dy[i])
      let s = sigmoid(beta * d), w = s * (1 - s)
      let g = s + beta * d * w
      da[i] = g0 * g
      db[i] = g0 * (1 - g)
      dbeta[i / hw] += g0 * d * d * w
    }
    return (da, db, dbeta)
  }
}

// MARK: - Depthwise 3×3 convolution (ACON-FReLU's funnel)

extension AconReference {
  /// Depthwise 3×3 convolution with padding 1: x `[N, C, H, W]`, weight `[C, 1, 3, 3]`, bias
  /// `[C]`, y `[N, C, (H − 1)/s + 1, (W − 1)/s + 1]`.
  public static func depthwiseConv3x3(_ x: DoubleTensor, weight: DoubleTensor, bias: DoubleTensor, stride s: Int)
    -> DoubleTensor
  {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let oh = (h - 1) / s + 1, ow = (w - 1) / s + 1
    var y = DoubleTensor(zeros: [n, c, oh, ow])
    for plane in 0..<(n * c) {
      let ch = plane % c
      for i in 0..<oh {
        for j in 0..<ow {
          var acc = bias[ch]
          for u in 0..<3 {
            for v in 0..<3 {
              let yy = i * s - 1 + u, xx = j * s - 1 + v
              if yy >= 0 && yy < h && xx >= 0 && xx < w { acc += weight[ch * 9 + u * 3 + v] * x[(plane * h + yy) * w + xx] }
            }
          }
          y[(plane * oh + i) * ow + j] = acc
        }
      }
    }
    return y
  }

  /// Its gradients for upstream `dy` `[N, C, OH, OW]`: dx `[N, C, H, W]`, dw `[C, 1, 3, 3]`, db `[C]`.
  public static func depthwiseConv3x3Backward(_ x: DoubleTensor, weight: DoubleTensor, dy: DoubleTensor, stride s: Int)
    -> (dx: DoubleTensor, dw: DoubleTensor, db: DoubleTensor)
  {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (oh, ow) = (dy.shape[2], dy.shape[3])
    var dx = DoubleTensor(zeros: x.shape), dw = DoubleTensor(zeros: weight.shape), db = DoubleTensor(zeros: [c])
    for plane in 0..<(n * c) {
      let ch = plane % c
      for i in 0..<oh {
        for j in 0..<ow {
          let g = dy[(plane * oh + i) * ow + j]
          db[ch] += g
          for u in 0..<3 {
            for v in 0..<3 {
              let yy = i * s - 1 + u, xx = j * s - 1 + v
              guard yy >= 0 && yy < h && xx >= 0 && xx < w else { continue }
              let xi = (plane * h + yy) * w + xx
              dw[ch * 9 + u * 3 + v] += g * x[xi]
              dx[xi] += g * weight[ch * 9 + u * 3 + v]
            }
          }
        }
      }
    }
    return (dx, dw, db)
  }
}
