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

extension AconReference {
  /// Meta-ACON-C's forward and backward passes in Double, composed of the references above:
  /// m = mean_HW(x) `[N, C, 1, 1]`, h = bn2(fc2(bn1(fc1(m)))) (fc1, fc2 1×1 convolutions with
  /// bias, BatchNorm in training mode with batch statistics, eps 1e-5, or left out), β = σ(h)
  /// `[N, C]`, y = ACON-C(x; p1, p2, β); then, for the upstream gradient dy, back through the
  /// same chain: dx (the ACON share plus the mean's share), and every parameter's gradient.
  ///
  /// `parameters` holds the layer's parameters by their state-dict names, as `MetaAconC`
  /// registers them: `fc1.weight` `[W, C, 1, 1]`, `fc1.bias` `[W]`, `bn1.weight`, `bn1.bias` `[W]`
  /// (both BatchNorms present or both absent), `fc2.weight` `[C, W, 1, 1]`, `fc2.bias` `[C]`,
  /// `bn2.weight`, `bn2.bias` `[C]`, `p1`, `p2` `[C]`. x, dy `[N, C, HW]`. The gradients come
  /// back under the same names. Everything after the inputs is Double, β included.
  public static func metaAconC(x: [Float], dy: [Float], n: Int, c: Int, hw: Int, parameters: [String: [Float]])
    -> (y: [Double], beta: [Double], dx: [Double], gradients: [String: [Double]])
  {
    func p(_ name: String) -> [Float] {
      guard let v = parameters[name] else { preconditionFailure("AconReference.metaAconC: no parameter \(name)") }
      return v
    }
    func d(_ name: String, _ shape: [Int]) -> DoubleTensor { DoubleTensor(shape: shape, values: p(name).map(Double.init)) }
    let width = p("fc1.bias").count
    let bn = parameters["bn1.weight"] != nil
    let w1 = d("fc1.weight", [width, c, 1, 1]), b1 = d("fc1.bias", [width])
    let w2 = d("fc2.weight", [c, width, 1, 1]), b2 = d("fc2.bias", [c])
    // Forward through the β network.
    var mean = DoubleTensor(zeros: [n, c, 1, 1])
    for plane in 0..<(n * c) {
      var acc = 0.0
      for j in 0..<hw { acc += Double(x[plane * hw + j]) }
      mean[plane] = acc / Double(hw)
    }
    let h1 = Reference.conv2d(mean, weight: w1, bias: b1, stride: 1, padding: 0)
    let h2 = bn ? Reference.batchNormTraining(h1, gamma: d("bn1.weight", [width]).values, beta: d("bn1.bias", [width]).values) : h1
    let h3 = Reference.conv2d(h2, weight: w2, bias: b2, stride: 1, padding: 0)
    let h4 = bn ? Reference.batchNormTraining(h3, gamma: d("bn2.weight", [c]).values, beta: d("bn2.bias", [c]).values) : h3
    let beta = h4.values.map { sigmoid($0) }
    // ACON-C with one β per plane, forward and backward as in `forward` and `backward`, in Double.
    let p1 = p("p1").map(Double.init), p2 = p("p2").map(Double.init)
    var y = [Double](repeating: 0, count: n * c * hw), dx = y
    var dp1 = [Double](repeating: 0, count: c), dp2 = dp1, dbeta = [Double](repeating: 0, count: n * c)
    for plane in 0..<(n * c) {
      let ch = plane % c, b = beta[plane], a = p1[ch] - p2[ch]
      for j in 0..<hw {
        let i = plane * hw + j
        let xv = Double(x[i]), g0 = Double(dy[i]), dv = a * xv
        let sg = sigmoid(b * dv)
        y[i] = dv * sg + p2[ch] * xv
        let g = sg * (1 + b * dv * (1 - sg))
        dx[i] = g0 * (a * g + p2[ch])
        dp1[ch] += g0 * xv * g
        dp2[ch] += g0 * xv * (1 - g)
        dbeta[plane] += g0 * dv * dv * sg * (1 - sg)
      }
    }
    // Then back through σ, bn2, fc2, bn1, fc1 and the mean.
    var g = DoubleTensor(shape: [n, c, 1, 1], values: (0..<(n * c)).map { dbeta[$0] * beta[$0] * (1 - beta[$0]) })
    var grads: [String: [Double]] = ["p1": dp1, "p2": dp2]
    if bn {
      let b = Reference.batchNormTrainingBackward(h3, gamma: d("bn2.weight", [c]).values, dy: g)
      g = b.dx
      grads["bn2.weight"] = b.dgamma
      grads["bn2.bias"] = b.dbeta
    }
    let f2 = Reference.conv2dBackward(h2, weight: w2, dy: g, stride: 1, padding: 0)
    g = f2.dx
    grads["fc2.weight"] = f2.dw.values
    grads["fc2.bias"] = f2.db.values
    if bn {
      let b = Reference.batchNormTrainingBackward(h1, gamma: d("bn1.weight", [width]).values, dy: g)
      g = b.dx
      grads["bn1.weight"] = b.dgamma
      grads["bn1.bias"] = b.dbeta
    }
    let f1 = Reference.conv2dBackward(mean, weight: w1, dy: g, stride: 1, padding: 0)
    g = f1.dx
    grads["fc1.weight"] = f1.dw.values
    grads["fc1.bias"] = f1.db.values
    for plane in 0..<(n * c) {
      let share = g[plane] / Double(hw)
      for j in 0..<hw { dx[plane * hw + j] += share }
    }
    return (y, beta, dx, grads)
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
