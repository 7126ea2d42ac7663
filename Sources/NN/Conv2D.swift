// Conv2D: 2-D convolution as im2col + one sgemm over the whole batch (Caffe's lowering,
// batched as in DL4S), with a 1×1/stride-1/no-padding path that skips im2col (without groups
// on planes of `perSampleMinimumPlane` and up, or for one sample; smaller planes and a grouped
// 1×1 over a batch are batched, their "im2col" a copy of planes),
// and Winograd F(2×2, 3×3) for 3×3 stride-1 layers without groups (Winograd.swift; `algorithm`
// and its `.auto` rule choose per layer).
// Grouped convolutions run one sgemm per group on contiguous slices of the same matrices;
// kernels, strides and paddings may be rectangular.
//
// Shapes: x [N, Cin, H, W], weight [Cout, Cin/G, KH, KW] (PyTorch's layout), bias [Cout],
// y [N, Cout, OH, OW]; K = Cin·KH·KW, P = OH·OW; the column buffer is [K, N·P]. Group g owns
// input channels g·Cin/G ..< (g+1)·Cin/G, i.e. rows g·K/G ..< (g+1)·K/G of the column matrix,
// and output channels g·Cout/G ..< (g+1)·Cout/G, i.e. rows of the weight matrix [Cout, K/G].
import CWinogradKernels
import TensorCore

/// A 2-D convolution over NCHW input.
///
/// ```
/// y[n, o, i, j] = bias[o] + Σ_{c, u, v} weight[o, c, u, v] · x[n, g·Cin/G + c, i·sh − ph + u, j·sw − pw + v]
///   with g = o / (Cout/G) the group of output channel o and c in 0..<Cin/G
/// OH = (H + 2·ph − KH) / sh + 1,   OW = (W + 2·pw − KW) / sw + 1
/// ```
/// Parameters are named `weight` `[Cout, Cin/G, KH, KW]` and `bias` `[Cout]`, as PyTorch's
/// `nn.Conv2d(..., groups=G)`. Scratch memory (the column matrix) is kept from call to call
/// in its `workspace`, which the layers of a network share (`shareConvWorkspace()`).
/// For depthwise convolutions (G = Cin) `DepthwiseConv2D` runs direct kernels instead.
public final class Conv2D: Module {
  /// Input channels.
  public let inChannels: Int
  /// Output channels.
  public let outChannels: Int
  /// Kernel height and width (KH, KW).
  public let kernelShape: (height: Int, width: Int)
  /// Strides along height and width (sh, sw).
  public let strides: (height: Int, width: Int)
  /// Zero padding along height (top and bottom) and width (left and right): (ph, pw).
  public let paddings: (height: Int, width: Int)
  /// Groups G: input and output channels split into G groups, each convolved on its own.
  public let groups: Int
  /// The kernel's height KH (its size, for the square kernels of the `Int` initializer).
  public var kernelSize: Int { kernelShape.height }
  /// The stride along the height (the stride, for the `Int` initializer).
  public var stride: Int { strides.height }
  /// The padding along the height (the padding, for the `Int` initializer).
  public var padding: Int { paddings.height }
  /// `[Cout, Cin/G, KH, KW]`.
  public let weight: Parameter
  /// `[Cout]`, or nil without bias.
  public let bias: Parameter?

  private var output: Tensor?
  private var inputGrad: Tensor?
  /// Holds the column matrix [K, N·P], and the [Cout, N·P] product before it is scattered to
  /// NCHW (dy gathered back in backward).
  public internal(set) var workspace: ConvWorkspace
  private var input: Tensor?
  private var planeSums: Tensor?  // [N, Cout], the bias gradient's per-plane sums
  /// The column matrix [K, N·P] of `keptColumnsInput`, kept by a training forward pass for its
  /// backward pass (see `keptColumnsMaximum`); nil input once backward has written over it.
  private var keptColumns: Tensor?
  private var keptColumnsInput: Tensor?
  /// Whether the layer holds the columns of its last input for backward (for tests).
  package var holdsKeptColumns: Bool { keptColumnsInput != nil && keptColumns != nil }
  /// How this layer computes (`.auto`: Winograd for 3×3 stride-1 layers of at least
  /// `Winograd.autoMinimumChannels` channels on maps of 5×5 or more (4×4 from 256 channels),
  /// F(4×4, 3×3) on maps 16 to 64 wide up to 128 channels and F(2×2, 3×3) on the others;
  /// im2col otherwise). Set it before a forward
  /// pass; the backward pass follows the algorithm its forward pass ran.
  public var algorithm: ConvAlgorithm = .auto
  /// Whether the last forward pass ran Winograd (F(2×2, 3×3) or F(4×4, 3×3)).
  public var ranWinograd: Bool { winogradTile != nil }
  /// The output tile of the Winograd pass the last forward ran: 2 (F(2×2, 3×3)) or 4
  /// (F(4×4, 3×3)); nil when it ran im2col.
  public private(set) var winogradTile: Int?

  /// A square K×K convolution.
  /// - Parameters:
  ///   - inChannels: Cin.
  ///   - outChannels: Cout.
  ///   - kernelSize: K, for a K×K window.
  ///   - stride: the step between windows in both directions (PyTorch's `stride`).
  ///   - padding: zero padding on each side (PyTorch's `padding`).
  ///   - groups: G, dividing Cin and Cout (PyTorch's `groups`); the weight is `[Cout, Cin/G, K, K]`.
  ///   - bias: whether to add a learnable bias.
  ///   - weightInit: PyTorch's default (fan_in = Cin/G·K·K) or orthogonal.
  ///   - workspace: scratch memory; layers of one network can share one (they never run at the
  ///     same time) to save memory. Defaults to a private one.
  ///   - rng: the generator that draws the initial weights.
  public convenience init(
    inChannels: Int, outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0, groups: Int = 1,
    bias: Bool = true, weightInit: WeightInit = .pytorchDefault, workspace: ConvWorkspace = ConvWorkspace(),
    rng: inout SeededGenerator
  ) {
    self.init(inChannels: inChannels, outChannels: outChannels, kernelSize: (kernelSize, kernelSize),
      stride: (stride, stride), padding: (padding, padding), groups: groups, bias: bias, weightInit: weightInit,
      workspace: workspace, rng: &rng)
  }

  /// A KH×KW convolution with per-axis strides and paddings, e.g. `kernelSize: (1, 3), padding: (0, 1)`.
  /// - Parameters:
  ///   - inChannels: Cin.
  ///   - outChannels: Cout.
  ///   - kernelSize: (KH, KW).
  ///   - stride: (sh, sw).
  ///   - padding: (ph, pw), zeros on both sides of each axis.
  ///   - groups: G, dividing Cin and Cout (PyTorch's `groups`); the weight is `[Cout, Cin/G, KH, KW]`.
  ///   - bias: whether to add a learnable bias.
  ///   - weightInit: PyTorch's default (fan_in = Cin/G·KH·KW) or orthogonal.
  ///   - workspace: scratch memory, shareable between the layers of one network.
  ///   - rng: the generator that draws the initial weights.
  public init(
    inChannels: Int, outChannels: Int, kernelSize: (Int, Int), stride: (Int, Int) = (1, 1),
    padding: (Int, Int) = (0, 0), groups: Int = 1, bias: Bool = true, weightInit: WeightInit = .pytorchDefault,
    workspace: ConvWorkspace = ConvWorkspace(), rng: inout SeededGenerator
  ) {
    precondition(inChannels > 0 && outChannels > 0 && kernelSize.0 > 0 && kernelSize.1 > 0 && stride.0 > 0
      && stride.1 > 0 && padding.0 >= 0 && padding.1 >= 0,
      "Conv2D: channels, kernel size and stride must be positive and padding non-negative")
    precondition(groups > 0 && inChannels % groups == 0 && outChannels % groups == 0,
      "Conv2D: groups (\(groups)) must be positive and divide inChannels (\(inChannels)) and outChannels (\(outChannels))")
    self.inChannels = inChannels
    self.outChannels = outChannels
    self.kernelShape = (kernelSize.0, kernelSize.1)
    self.strides = (stride.0, stride.1)
    self.paddings = (padding.0, padding.1)
    self.groups = groups
    self.workspace = workspace
    self.weight = Parameter(Tensor(zeros: [outChannels, inChannels / groups, kernelSize.0, kernelSize.1]))
    self.bias = bias ? Parameter(Tensor(zeros: [outChannels]), decays: false) : nil
    super.init()
    weightInit.initialize(weight: weight.value, bias: self.bias?.value, using: &rng)
  }

  public override var localParameters: [(String, Parameter)] {
    var p = [("weight", weight)]
    if let b = bias { p.append(("bias", b)) }
    return p
  }

  /// A 1×1 kernel at stride 1 without padding: the same on a channels-major batch (see
  /// `Module.runsChannelsMajor`), where it is one GEMM (per group) over all N·H·W positions.
  public override var runsChannelsMajor: Bool { isPointwise }

  private var isPointwise: Bool {
    kernelShape.height == 1 && kernelShape.width == 1 && strides.height == 1 && strides.width == 1
      && paddings.height == 0 && paddings.width == 0
  }

  /// Output planes (P = OH·OW) from which an ungrouped 1×1 convolution over a batch runs one
  /// GEMM per sample on x and y in place; smaller planes take the batched path, one GEMM over
  /// [Cin, N·P]. ShuffleNetV2-0.5× at 32×32 has 1×1 layers on 32×32 down to 4×4 maps: per
  /// sample those on 8×8 and 4×4 are GEMMs like [Cout, Cin]·[Cin, 16], and the step made 6,917
  /// sgemm calls at 54 GFLOP/s; with the 8×8 and 4×4 layers batched, 2,003 calls at 81, and the
  /// step 10–20% faster despite the layout copies (acon-bench's train steps, alternating 256 and
  /// 0 on the same binary; 1,024, which batches the 16×16 layers too, was no better on
  /// tfnet-0.5, and resnet50 at 224, whose small planes are 7×7 and 14×14, was not slower).
  /// 1 keeps every layer on the per-sample path, `Int.max` batches every one. Set it before
  /// training, not while a step runs.
  nonisolated(unsafe) public static var perSampleMinimumPlane = 256

  /// The largest column matrix, in floats (K·N·P, K = Cin·KH·KW over all groups), that a layer
  /// with at most `keptColumnsMaximumOutputs` output channels per group keeps from a training
  /// forward pass to its backward pass in a buffer of its own, instead of filling the shared
  /// workspace's and running im2col again in backward (which only the network's last im2col
  /// layer, whose columns are still in the workspace, skips). Backward's weight gradient then
  /// reads the columns forward built. im2col writes K·N·P floats for GEMMs of 2·(Cout/G)·K·N·P
  /// flops, so the pass saved weighs most beside narrow layers: the seed network's convolutions
  /// (32 and 64 outputs) at 3×32×32, batch 64, keep 15 MB more, conv1–conv3 skip an im2col each,
  /// and its steps take 2–3% less time; ResNet-18's stride-2 layers (128 to 512 outputs) would
  /// keep 36 MB for no measurable gain. Layers whose kernel is 1×1 at stride 1 without padding
  /// never keep theirs (the "im2col" of a batched 1×1 is a copy of x's planes). A pass that does
  /// not keep its columns (evaluation mode, a larger batch) frees the layer's. 0 keeps none: the
  /// workspace's memory only. Set it before training, not while a step runs.
  nonisolated(unsafe) public static var keptColumnsMaximum = 8 << 20

  /// The most output channels per group of a layer that keeps its columns (see
  /// `keptColumnsMaximum`).
  nonisolated(unsafe) public static var keptColumnsMaximumOutputs = 64

  /// Whether a training pass over x [N, Cin, H, W] keeps its column matrix (see
  /// `keptColumnsMaximum`).
  private func keepsColumns(_ g: ConvGeometry, n: Int) -> Bool {
    isTraining && !isPointwise && outChannels / groups <= Conv2D.keptColumnsMaximumOutputs
      && g.colRows * n * g.colCols <= Conv2D.keptColumnsMaximum
  }

  /// Whether the 1×1 path that runs GEMMs on x and y in place (no column matrix) runs for a
  /// batch of N samples of P = OH·OW: without groups for one sample, for P == 1 (one GEMM over
  /// the batch) and from `perSampleMinimumPlane` on; with groups only for one sample
  /// with P > 1 (one GEMM per group). Other 1×1 layers over a batch take the batched
  /// path: per-sample (and per-group) GEMMs ([Cout/G, Cin/G]·[Cin/G, P], 3·N·G calls) are too
  /// small for OpenBLAS to run near its peak (it runs the smallest on one thread and pays a
  /// thread hand-off per call on the others: acon-bench's 16×16 c128 1×1 rows ran at 0.45–0.52
  /// of sgemm), while the batched GEMMs over [Cin/G, N·P] are the same-shape sgemm's shapes;
  /// the price is the layout copies (x gathered into columns, y
  /// scattered, dy gathered, dx scattered), which run in parallel and fold in the bias, its
  /// gradient and a fused ReLU. For P == 1 the groups' slices of x are not contiguous either.
  private func usesPointwisePath(n: Int, p: Int) -> Bool {
    guard isPointwise else { return false }
    if groups > 1 { return n == 1 && p > 1 }
    return n == 1 || p == 1 || p >= Conv2D.perSampleMinimumPlane
  }

  /// The Winograd output tile (2 or 4) of a forward pass producing [N, Cout, oh, ow], or nil
  /// for im2col.
  private func chooseWinogradTile(oh: Int, ow: Int) -> Int? {
    guard Winograd.applies(kernel: kernelShape, stride: strides, padding: paddings, groups: groups),
      ow <= Winograd.maximumWidth
    else { return nil }
    switch algorithm {
    case .im2col: return nil
    case .winograd: return 2
    case .winograd4x4: return 4
    case .auto:
      // Measured (one thread, acon-bench's conv2d rows and the zoo's layers): Winograd wins from
      // 16 channels on maps of 5×5 and up; on 4×4 only from 256 channels (at 64 it takes 1.4×
      // im2col's time: the 16 GEMMs over 4 tiles per sample are too thin); below 4×4 never.
      // F(4×4) beats F(2×2) on maps 16 to 64 wide up to 128 channels (ResNet's 56×56, 32×32 and
      // 16×16 layers: 0.8–0.9× its time), where its transforms run a tile row per vector; on
      // 8×8 maps F(2×2) stays ahead.
      let channels = Swift.min(inChannels, outChannels), side = Swift.min(oh, ow)
      guard channels >= Winograd.autoMinimumChannels && (side >= 5 || (side == 4 && channels >= 256)) else {
        return nil
      }
      return side >= 16 && ow <= 64 && Swift.max(inChannels, outChannels) <= 128 ? 4 : 2
    }
  }

  /// The Winograd geometry (m×m tiles) of this layer's forward pass over x [N, Cin, H, W].
  private func winogradGeometry(_ s: [Int], tile m: Int) -> WinoGeometry {
    Winograd.geometry(n: s[0], c: inChannels, h: s[2], w: s[3], ph: paddings.height, pw: paddings.width, k: outChannels,
      tile: m)
  }

  private func geometry(_ s: [Int]) -> ConvGeometry {
    ConvGeometry(channels: s[1], height: s[2], width: s[3], kernelH: kernelShape.height, kernelW: kernelShape.width,
      strideH: strides.height, strideW: strides.width, padH: paddings.height, padW: paddings.width)
  }

  public override func outputShape(for s: [Int]) throws -> [Int] {
    let expected = "[N, \(inChannels), H, W]"
    try requireRank(s, 4, layer: typeName, expected: expected)
    guard s[1] == inChannels else { throw TensorError.shapeMismatch(layer: typeName, expected: expected, got: s) }
    let g = geometry(s)
    guard g.outH > 0, g.outW > 0 else {
      throw TensorError.shapeMismatch(
        layer: typeName,
        expected: "[N, \(inChannels), H, W] with H + 2·\(paddings.height) ≥ \(kernelShape.height) and "
          + "W + 2·\(paddings.width) ≥ \(kernelShape.width)", got: s)
    }
    return [s[0], outChannels, g.outH, g.outW]
  }

  public override func forward(_ x: Tensor) throws -> Tensor {
    try forward(x, fusingReLU: false)
  }

  /// Whether the last forward pass applied the `ReLU` that follows this layer in a `Sequential`
  /// or `Graph` to its output (the container fuses the two; backward then takes the ReLU's
  /// gradient).
  public private(set) var fusedReLU = false

  /// Forward, optionally with an in-place ReLU folded in: `y = max(conv(x), 0)`, bit for bit what
  /// `ReLU(inPlace: true)` after this layer computes. Backward then takes the gradient with
  /// respect to that ReLU's output and applies its mask (`y > 0`) itself. `Sequential` uses this
  /// for a convolution followed by an in-place ReLU, to save a pass over y forward and over dy
  /// backward.
  func forward(_ x: Tensor, fusingReLU relu: Bool) throws -> Tensor {
    let ys = try outputShape(for: x.shape)
    let y = reuseOutput(&output, shape: ys)
    input = x
    fusedReLU = relu
    let n = ys[0], p = ys[2] * ys[3], cout = outChannels
    let w = weight.value.data
    let groupCount = groups, coutG = cout / groupCount, cinG = inChannels / groupCount
    winogradTile = chooseWinogradTile(oh: ys[2], ow: ys[3])
    if let m = winogradTile {
      // U [P, Cout, Cin], then y = Aᵀ[(U · V)]A tile by tile, with the bias and a fused ReLU
      let u = reuse(&workspace.winogradU, shape: [Winograd.points(tile: m), cout, inChannels]).data
      Winograd.transformFilter(w, k: cout, c: inChannels, flipped: false, tile: m, into: u)
      Winograd.convolve(winogradGeometry(x.shape, tile: m), x: x.data, u: u, bias: bias?.value.data, relu: relu,
        y: y.data, workspace: workspace)
      return y
    }
    if usesPointwisePath(n: n, p: p) {
      if p == 1 {
        // y[N, Cout] = x[N, Cin] · Wᵀ  (groups == 1 here)
        BLAS.sgemm(transB: true, m: n, n: cout, k: inChannels, a: x.data, b: w, c: y.data)
      } else {
        // y_n[Cout, P] = W[Cout, Cin] · x_n[Cin, P], one sample at a time; with groups (N = 1),
        // the group's rows of W, x_n and y_n: y_n,g[Cout/G, P] = W_g[Cout/G, Cin/G] · x_n,g[Cin/G, P]
        for s in 0..<n {
          for gi in 0..<groupCount {
            BLAS.sgemm(m: coutG, n: p, k: cinG, a: w + gi * coutG * cinG,
              b: x.data + (s * inChannels + gi * cinG) * p, c: y.data + (s * cout + gi * coutG) * p)
          }
        }
      }
      addBias(y, n: n, p: p)
      if relu { ReLU.apply(y.data, into: y.data, count: y.count) }
      return y
    }
    let g = geometry(x.shape)
    let col = try fillColumns(x, g)
    let k = g.colRows, np = n * p, kG = k / groupCount
    if n == 1 {
      // y_g[Cout/G, P] = W_g[Cout/G, K/G] · col_g[K/G, P], one GEMM per group
      for gi in 0..<groupCount {
        BLAS.sgemm(m: coutG, n: p, k: kG, a: w + gi * coutG * kG, b: col.data + gi * kG * p,
          c: y.data + gi * coutG * p)
      }
    } else {
      // tmp[Cout, N·P] = W[Cout, K] · col[K, N·P] (by groups: tmp_g = W_g · col_g), then
      // scatter to y[N, Cout, P], adding the bias and applying a fused ReLU on the way (one
      // pass over y instead of three).
      let t = reuse(&workspace.buffer, shape: [cout, np])
      for gi in 0..<groupCount {
        BLAS.sgemm(m: coutG, n: np, k: kG, a: w + gi * coutG * kG, b: col.data + gi * kG * np,
          c: t.data + gi * coutG * np)
      }
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

  /// im2col of every sample of x into columns [K, N·P]: the layer's own kept columns in a
  /// training pass that keeps them (`keptColumnsMaximum`), else the workspace's, which then
  /// hold this layer's columns of x.
  @discardableResult
  private func fillColumns(_ x: Tensor, _ g: ConvGeometry) throws -> Tensor {
    let n = x.shape[0], np = n * g.colCols
    let c: Tensor
    if keepsColumns(g, n: n) {
      c = reuse(&keptColumns, shape: [g.colRows, np])
      keptColumnsInput = x
    } else {
      (keptColumns, keptColumnsInput) = (nil, nil)
      c = reuse(&workspace.columns, shape: [g.colRows, np])
      (workspace.columnsOwner, workspace.columnsInput) = (self, x)
    }
    im2col(x.data, batch: n, g, col: c.data, colStride: np)
    return c
  }

  /// The columns of x: the layer's kept ones, or the workspace's when this layer filled them
  /// last (the last convolution of a forward pass, at the start of backward), else filled again.
  private func columns(of x: Tensor, _ g: ConvGeometry) throws -> Tensor {
    if keptColumnsInput === x, let c = keptColumns { return c }
    if workspace.columnsOwner === self, workspace.columnsInput === x, let c = workspace.columns { return c }
    return try fillColumns(x, g)
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

  /// Backward reads the saved input (its columns); the output only for a fused ReLU's mask.
  public override var backwardReadsOutput: Bool { fusedReLU }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    try backward(dy, overwriting: false)
  }

  /// Backward that, with `overwriting`, may apply a fused ReLU's mask to `dy` in place (for a
  /// container that knows nothing reads dy afterwards: `Sequential`); without it, dy is left as
  /// it is and the masked gradient goes to the shared workspace.
  func backward(_ incoming: Tensor, overwriting: Bool) throws -> Tensor {
    guard let x = input, let ys = output?.shape, incoming.shape == ys else {
      throw backwardError(layer: typeName + ".backward",
        expected: output.map { Shape.text($0.shape) }, got: incoming.shape)
    }
    let n = ys[0], p = ys[2] * ys[3], cout = outChannels, cin = inChannels
    let w = weight.value.data, dw = weight.grad.data
    let groupCount = groups, coutG = cout / groupCount, cinG = cin / groupCount
    let pointwise = usesPointwisePath(n: n, p: p), winograd = winogradTile != nil
    // With a fused ReLU, dy is the gradient at the ReLU's output y: pass it where y > 0. The
    // general path below does that while it gathers dy; the others do it here: in place, as
    // `ReLU(inPlace: true)` would, when the caller allows it, else into the workspace.
    let reluMask = fusedReLU ? output!.data : nil
    var dy = incoming
    if let y = reluMask, pointwise || winograd || n == 1 {
      if !overwriting { dy = reuse(&workspace.maskedGradient, shape: incoming.shape) }
      ReLU.mask(incoming.data, by: y, into: dy.data, count: dy.count)
    }
    // db[o] += Σ_s (sum of plane (s, o)), over s in order. The general path below takes the
    // plane sums while it gathers dy (each plane is then in cache); the others take them here.
    func accumulateBias(_ planeSum: (Int, Int) -> Float) {
      guard let db = bias?.grad.data else { return }
      for s in 0..<n {
        for o in 0..<cout { db[o] += planeSum(s, o) }
      }
    }
    // The first layer of a network skips dx altogether: no buffer, no work.
    let dx = propagatesInputGradient ? reuseInputGradient(&inputGrad, shape: x.shape) : x
    if pointwise || winograd || n == 1 {
      accumulateBias { s, o in contiguousSum(dy.data + (s * cout + o) * p, count: p) }
    }
    if let m = winogradTile {
      // dW += Gᵀ (Σ D · Vᵀ) G; dx = the convolution of dy (padding 2 − p) with the rotated,
      // transposed filter, by the same F(m×m, 3×3) pass as forward
      let g = winogradGeometry(x.shape, tile: m)
      Winograd.filterGradient(g, x: x.data, dy: dy.data, dw: dw, workspace: workspace)
      guard propagatesInputGradient else { return dx }
      let gx = Winograd.geometry(
        n: n, c: cout, h: ys[2], w: ys[3], ph: 2 - paddings.height, pw: 2 - paddings.width, k: cin, tile: m)
      let u = reuse(&workspace.winogradU, shape: [Winograd.points(tile: m), cin, cout]).data
      Winograd.transformFilter(w, k: cin, c: cout, flipped: true, tile: m, into: u)
      Winograd.convolve(gx, x: dy.data, u: u, bias: nil, relu: false, y: dx.data, workspace: workspace)
      return dx
    }
    if pointwise {
      if p == 1 {
        // dW[Cout, Cin] += dyᵀ[Cout, N] · x[N, Cin];  dx[N, Cin] = dy[N, Cout] · W[Cout, Cin]  (groups == 1)
        BLAS.sgemm(transA: true, m: cout, n: cin, k: n, a: dy.data, b: x.data, beta: 1, c: dw)
        if propagatesInputGradient { BLAS.sgemm(m: n, n: cin, k: cout, a: dy.data, b: w, c: dx.data) }
      } else {
        for s in 0..<n {
          for gi in 0..<groupCount {
            // dW_g += dy_n,g[Cout/G, P] · x_n,gᵀ[P, Cin/G];  dx_n,g[Cin/G, P] = W_gᵀ · dy_n,g
            let dys = dy.data + (s * cout + gi * coutG) * p, xs = x.data + (s * cin + gi * cinG) * p
            let wg = gi * coutG * cinG
            BLAS.sgemm(transB: true, m: coutG, n: cinG, k: p, a: dys, b: xs, beta: 1, c: dw + wg)
            if propagatesInputGradient {
              BLAS.sgemm(transA: true, m: cinG, n: p, k: coutG, a: w + wg, b: dys, c: dx.data + (s * cin + gi * cinG) * p)
            }
          }
        }
      }
      return dx
    }
    let g = geometry(x.shape)
    let col = try columns(of: x, g)
    let k = g.colRows, np = n * p, kG = k / groupCount
    // dyT[Cout, N·P] gathered from dy[N, Cout, P]
    let dyT: UnsafeMutablePointer<Float>
    if n == 1 {
      dyT = dy.data
    } else {
      let t = reuse(&workspace.buffer, shape: [cout, np])
      // The plane sums [N, Cout] feed the bias gradient only: none without a bias.
      let sums = bias == nil ? nil : reuse(&planeSums, shape: [n, cout])
      let src = UncheckedSendable(dy.data), dst = UncheckedSendable(t.data), ps = UncheckedSendable(sums?.data)
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
            if let sum = ps.value { sum[s * cout + o] = contiguousSum(to, count: p) }
          }
        }
      }
      if let sums { accumulateBias { s, o in sums.data[s * cout + o] } }
      dyT = t.data
    }
    // dW[Cout, K/G] += dyT[Cout, N·P] · colᵀ[N·P, K], by groups: dW_g += dyT_g · col_gᵀ
    for gi in 0..<groupCount {
      BLAS.sgemm(transB: true, m: coutG, n: kG, k: np, a: dyT + gi * coutG * np, b: col.data + gi * kG * np,
        beta: 1, c: dw + gi * coutG * kG)
    }
    guard propagatesInputGradient else { return dx }
    // dcol[K, N·P] = Wᵀ[K, Cout] · dyT, into the column buffer (by groups: dcol_g = W_gᵀ · dyT_g), then col2im
    for gi in 0..<groupCount {
      BLAS.sgemm(transA: true, m: kG, n: np, k: coutG, a: w + gi * coutG * kG, b: dyT + gi * coutG * np,
        c: col.data + gi * kG * np)
    }
    // dcol is written over the columns: they no longer hold x's (the workspace's, when they
    // were these, still hold another layer's otherwise).
    if col === workspace.columns {
      workspace.columnsOwner = nil
      workspace.columnsInput = nil
    }
    keptColumnsInput = nil
    col2im(col.data, colStride: np, batch: n, g, dx: dx.data, accumulate: false)
    return dx
  }
}

/// Scratch memory for `Conv2D`: the column matrix `[K, N·P]` and the `[Cout, N·P]` matrix
/// between the GEMM and the NCHW layout. Convolutions of one network run one at a time, so they
/// can share a single workspace: it then holds the largest column matrix of the network once,
/// instead of one per layer. A layer's backward reuses the columns when it was the last to fill
/// them (the last convolution of the forward pass) and runs im2col again otherwise, unless the
/// layer kept its own (`Conv2D.keptColumnsMaximum`).
/// Not for layers that run concurrently on different threads.
public final class ConvWorkspace {
  var buffer: Tensor?
  var columns: Tensor?
  /// The layer and input whose columns `columns` holds, while they are valid.
  weak var columnsOwner: Conv2D?
  var columnsInput: Tensor?
  /// Winograd F(2×2, 3×3): the filter transform U [16, Cout, Cin] (dU in backward), and one
  /// block's V [16, Cin, T] and M [16, Cout, T] (D in backward).
  var winogradU: Tensor?
  var winogradV: Tensor?
  var winogradM: Tensor?
  /// A fused ReLU's masked gradient, when the layer may not write it over its dy.
  var maskedGradient: Tensor?
  /// An empty workspace; it grows to the largest product it is asked to hold.
  public init() {}
}
