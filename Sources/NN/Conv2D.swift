// Conv2D: 2-D convolution as im2col + one sgemm over the whole batch (Caffe's lowering,
// batched as in DL4S), with a 1×1/stride-1/no-padding path that skips im2col.
//
// Shapes: x [N, Cin, H, W], weight [Cout, Cin, KH, KW] (PyTorch's layout), bias [Cout],
// y [N, Cout, OH, OW]; K = Cin·KH·KW, P = OH·OW; the column buffer is [K, N·P].
import TensorCore

/// A 2-D convolution over NCHW input.
///
/// ```
/// y[n, o, i, j] = bias[o] + Σ_{c, u, v} weight[o, c, u, v] · x[n, c, i·s − p + u, j·s − p + v]
/// OH = (H + 2·padding − kernelSize) / stride + 1   (likewise OW)
/// ```
/// Parameters are named `weight` `[Cout, Cin, K, K]` and `bias` `[Cout]`.
/// Scratch memory (the column matrix) is kept from call to call.
public final class Conv2D: Module {
  /// Input channels.
  public let inChannels: Int
  /// Output channels.
  public let outChannels: Int
  /// Square kernel size.
  public let kernelSize: Int
  /// Stride in both directions.
  public let stride: Int
  /// Zero padding on each side.
  public let padding: Int
  /// `[Cout, Cin, K, K]`.
  public let weight: Parameter
  /// `[Cout]`, or nil without bias.
  public let bias: Parameter?

  private var output: Tensor?
  private var inputGrad: Tensor?
  private var col: Tensor?  // [K, N·P]
  /// Holds the [Cout, N·P] product before it is scattered to NCHW, and dy gathered back.
  public let workspace: ConvWorkspace
  private var colHolds: Tensor?  // the input whose columns `col` holds, if still valid
  private var input: Tensor?
  private var planeSums: Tensor?  // [N, Cout], the bias gradient's per-plane sums

  /// - Parameters:
  ///   - inChannels: Cin.
  ///   - outChannels: Cout.
  ///   - kernelSize: K, for a K×K window.
  ///   - stride: the step between windows in both directions (PyTorch's `stride`).
  ///   - padding: zero padding on each side (PyTorch's `padding`).
  ///   - bias: whether to add a learnable bias.
  ///   - weightInit: PyTorch's default or orthogonal.
  ///   - workspace: scratch memory; layers of one network can share one (they never run at the
  ///     same time) to save memory. Defaults to a private one.
  ///   - rng: the generator that draws the initial weights.
  public init(
    inChannels: Int, outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
    bias: Bool = true, weightInit: WeightInit = .pytorchDefault, workspace: ConvWorkspace = ConvWorkspace(),
    rng: inout SeededGenerator
  ) {
    precondition(inChannels > 0 && outChannels > 0 && kernelSize > 0 && stride > 0 && padding >= 0,
      "Conv2D: channels, kernel size and stride must be positive and padding non-negative")
    self.inChannels = inChannels
    self.outChannels = outChannels
    self.kernelSize = kernelSize
    self.stride = stride
    self.padding = padding
    self.workspace = workspace
    self.weight = Parameter(Tensor(zeros: [outChannels, inChannels, kernelSize, kernelSize]))
    self.bias = bias ? Parameter(Tensor(zeros: [outChannels]), decays: false) : nil
    super.init()
    weightInit.initialize(weight: weight.value, bias: self.bias?.value, using: &rng)
  }

  public override var localParameters: [(String, Parameter)] {
    var p = [("weight", weight)]
    if let b = bias { p.append(("bias", b)) }
    return p
  }

  private var isPointwise: Bool { kernelSize == 1 && stride == 1 && padding == 0 }

  private func geometry(_ s: [Int]) -> ConvGeometry {
    ConvGeometry(channels: s[1], height: s[2], width: s[3], kernelH: kernelSize, kernelW: kernelSize,
      strideH: stride, strideW: stride, padH: padding, padW: padding)
  }

  public override func outputShape(for s: [Int]) throws -> [Int] {
    let expected = "[N, \(inChannels), H, W]"
    try requireRank(s, 4, layer: typeName, expected: expected)
    guard s[1] == inChannels else { throw TensorError.shapeMismatch(layer: typeName, expected: expected, got: s) }
    let g = geometry(s)
    guard g.outH > 0, g.outW > 0 else {
      throw TensorError.shapeMismatch(
        layer: typeName, expected: "[N, \(inChannels), H, W] with H, W + 2·\(padding) ≥ \(kernelSize)", got: s)
    }
    return [s[0], outChannels, g.outH, g.outW]
  }

  public override func forward(_ x: Tensor) throws -> Tensor {
    try forward(x, fusingReLU: false)
  }

  /// Whether the last forward pass applied a ReLU to its output (see `forward(_:fusingReLU:)`).
  private(set) var fusedReLU = false

  /// Forward, optionally with an in-place ReLU folded in: `y = max(conv(x), 0)`, bit for bit what
  /// `ReLU(inPlace: true)` after this layer computes. Backward then takes the gradient with
  /// respect to that ReLU's output and applies its mask (`y > 0`) itself. `Sequential` uses this
  /// for a convolution followed by an in-place ReLU, to save a pass over y forward and over dy
  /// backward.
  func forward(_ x: Tensor, fusingReLU relu: Bool) throws -> Tensor {
    let ys = try outputShape(for: x.shape)
    let y = reuse(&output, shape: ys)
    input = x
    fusedReLU = relu
    let n = ys[0], p = ys[2] * ys[3], cout = outChannels
    let w = weight.value.data
    if isPointwise {
      if p == 1 {
        // y[N, Cout] = x[N, Cin] · Wᵀ
        BLAS.sgemm(transB: true, m: n, n: cout, k: inChannels, a: x.data, b: w, c: y.data)
      } else {
        // y_n[Cout, P] = W[Cout, Cin] · x_n[Cin, P], one sample at a time
        for s in 0..<n {
          BLAS.sgemm(m: cout, n: p, k: inChannels, a: w, b: x.data + s * inChannels * p, c: y.data + s * cout * p)
        }
      }
      addBias(y, n: n, p: p)
      if relu { ReLU.apply(y.data, into: y.data, count: y.count) }
      return y
    }
    let g = geometry(x.shape)
    try fillColumns(x, g)
    let k = g.colRows, np = n * p
    if n == 1 {
      BLAS.sgemm(m: cout, n: p, k: k, a: w, b: col!.data, c: y.data)
    } else {
      // tmp[Cout, N·P] = W[Cout, K] · col[K, N·P], then scatter to y[N, Cout, P], adding the
      // bias and applying a fused ReLU on the way (one pass over y instead of three).
      let t = reuse(&workspace.buffer, shape: [cout, np])
      BLAS.sgemm(m: cout, n: np, k: k, a: w, b: col!.data, c: t.data)
      let src = UncheckedSendable(t.data), dst = UncheckedSendable(y.data)
      let bs = UncheckedSendable(bias?.value.data)
      parallelFor(n) { range in
        for s in range {
          for o in 0..<cout {
            let from = src.value + o * np + s * p, to = dst.value + (s * cout + o) * p
            // Swift.max(v, 0) keeps a NaN, as ReLU does.
            switch (bs.value, relu) {
            case (let b?, true):
              let v = b[o]
              for i in 0..<p { to[i] = Swift.max(from[i] + v, 0) }
            case (let b?, false):
              let v = b[o]
              for i in 0..<p { to[i] = from[i] + v }
            case (nil, true):
              for i in 0..<p { to[i] = Swift.max(from[i], 0) }
            case (nil, false):
              to.update(from: from, count: p)
            }
          }
        }
      }
      return y
    }
    addBias(y, n: n, p: p)
    if relu { ReLU.apply(y.data, into: y.data, count: y.count) }
    return y
  }

  /// im2col of every sample of x into col[K, N·P].
  private func fillColumns(_ x: Tensor, _ g: ConvGeometry) throws {
    let n = x.shape[0], np = n * g.colCols
    let c = reuse(&col, shape: [g.colRows, np])
    im2col(x.data, batch: n, g, col: c.data, colStride: np)
    colHolds = x
  }

  private func addBias(_ y: Tensor, n: Int, p: Int) {
    guard let b = bias?.value.data else { return }
    let cout = outChannels
    for s in 0..<n {
      for o in 0..<cout {
        let row = y.data + (s * cout + o) * p
        let v = b[o]
        for i in 0..<p { row[i] += v }
      }
    }
  }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    guard let x = input, let ys = output?.shape, dy.shape == ys else {
      throw TensorError.shapeMismatch(layer: typeName + ".backward",
        expected: output.map { Shape.text($0.shape) } ?? "a forward pass first", got: dy.shape)
    }
    let n = ys[0], p = ys[2] * ys[3], cout = outChannels, cin = inChannels
    let w = weight.value.data, dw = weight.grad.data
    // With a fused ReLU, dy is the gradient at the ReLU's output y: pass it where y > 0. The
    // general path below does that while it gathers dy; the others do it here, in place, as
    // `ReLU(inPlace: true)` would.
    let reluMask = fusedReLU ? output!.data : nil
    if let y = reluMask, isPointwise || n == 1 { ReLU.mask(dy.data, by: y, into: dy.data, count: dy.count) }
    // db[o] += Σ_s (sum of plane (s, o)), over s in order. The general path below takes the
    // plane sums while it gathers dy (each plane is then in cache); the others take them here.
    func accumulateBias(_ planeSum: (Int, Int) -> Float) {
      guard let db = bias?.grad.data else { return }
      for s in 0..<n {
        for o in 0..<cout { db[o] += planeSum(s, o) }
      }
    }
    // The first layer of a network skips dx altogether: no buffer, no work.
    let dx = propagatesInputGradient ? reuse(&inputGrad, shape: x.shape) : x
    if isPointwise || n == 1 {
      accumulateBias { s, o in contiguousSum(dy.data + (s * cout + o) * p, count: p) }
    }
    if isPointwise {
      if p == 1 {
        // dW[Cout, Cin] += dyᵀ[Cout, N] · x[N, Cin];  dx[N, Cin] = dy[N, Cout] · W[Cout, Cin]
        BLAS.sgemm(transA: true, m: cout, n: cin, k: n, a: dy.data, b: x.data, beta: 1, c: dw)
        if propagatesInputGradient { BLAS.sgemm(m: n, n: cin, k: cout, a: dy.data, b: w, c: dx.data) }
      } else {
        for s in 0..<n {
          let dys = dy.data + s * cout * p
          // dW += dy_n[Cout, P] · x_nᵀ[P, Cin];  dx_n[Cin, P] = Wᵀ · dy_n
          BLAS.sgemm(transB: true, m: cout, n: cin, k: p, a: dys, b: x.data + s * cin * p, beta: 1, c: dw)
          if propagatesInputGradient {
            BLAS.sgemm(transA: true, m: cin, n: p, k: cout, a: w, b: dys, c: dx.data + s * cin * p)
          }
        }
      }
      return dx
    }
    let g = geometry(x.shape)
    if colHolds !== x { try fillColumns(x, g) }
    let k = g.colRows, np = n * p
    // dyT[Cout, N·P] gathered from dy[N, Cout, P]
    let dyT: UnsafeMutablePointer<Float>
    if n == 1 {
      dyT = dy.data
    } else {
      let t = reuse(&workspace.buffer, shape: [cout, np])
      let sums = reuse(&planeSums, shape: [n, cout])
      let src = UncheckedSendable(dy.data), dst = UncheckedSendable(t.data), ps = UncheckedSendable(sums.data)
      let mask = UncheckedSendable(reluMask)
      parallelFor(n) { range in
        for s in range {
          for o in 0..<cout {
            let plane = src.value + (s * cout + o) * p, to = dst.value + o * np + s * p
            if let y = mask.value {
              let yp = y + (s * cout + o) * p
              for i in 0..<p { to[i] = ReLU.mask(plane[i], by: yp[i]) }
            } else {
              to.update(from: plane, count: p)
            }
            ps.value[s * cout + o] = contiguousSum(to, count: p)
          }
        }
      }
      accumulateBias { s, o in sums.data[s * cout + o] }
      dyT = t.data
    }
    // dW[Cout, K] += dyT[Cout, N·P] · colᵀ[N·P, K]
    BLAS.sgemm(transB: true, m: cout, n: k, k: np, a: dyT, b: col!.data, beta: 1, c: dw)
    guard propagatesInputGradient else { return dx }
    // dcol[K, N·P] = Wᵀ[K, Cout] · dyT, into the column buffer, then col2im
    BLAS.sgemm(transA: true, m: k, n: np, k: cout, a: w, b: dyT, c: col!.data)
    colHolds = nil
    col2im(col!.data, colStride: np, batch: n, g, dx: dx.data, accumulate: false)
    return dx
  }
}

/// Scratch memory for `Conv2D`: the `[Cout, N·P]` matrix between the GEMM and the NCHW layout.
/// Convolutions of one network run one at a time, so they can share a single workspace.
/// Not for layers that run concurrently on different threads.
public final class ConvWorkspace {
  var buffer: Tensor?
  /// An empty workspace; it grows to the largest product it is asked to hold.
  public init() {}
}
