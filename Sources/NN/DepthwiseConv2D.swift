// DepthwiseConv2D: the depthwise convolution (PyTorch's `nn.Conv2d(C, C·m, k, groups=C)`) by
// direct kernels in C (Sources/CDepthwiseKernels), not im2col + a GEMM per channel: the per-plane
// kernels thread forward over output planes (n, o), the lanes kernels (3×3, padding 1, eight
// samples to a vector) over channels; backward threads over input channels, each channel's dx,
// dW and db written by one thread in a fixed order, so the bits do not depend on the thread count.
//
// Shapes: x [N, C, H, W], weight [C·m, 1, KH, KW], bias [C·m], y [N, C·m, OH, OW];
// output channel o reads input channel o / m (m = the channel multiplier).
import CDepthwiseKernels
import TensorCore

/// A depthwise 2-D convolution: every input channel convolved with its own `m` filters.
///
/// ```
/// y[n, o, i, j] = bias[o] + Σ_{u, v} weight[o, 0, u, v] · x[n, o / m, i·sh − ph + u, j·sw − pw + v]
/// OH = (H + 2·ph − KH) / sh + 1,   OW = (W + 2·pw − KW) / sw + 1
/// ```
/// The state_dict is PyTorch's `nn.Conv2d(C, C·m, (KH, KW), stride, padding, groups=C)`:
/// `weight` `[C·m, 1, KH, KW]` and `bias` `[C·m]`, with the same default initialisation
/// (U(−1/√(KH·KW), 1/√(KH·KW)) for both). 3×3 kernels at stride 1 and 2 run unrolled loops
/// (with AVX2, padding 1 and channel multiplier 1: eight samples of a channel to a vector, the
/// same outputs and dx bit for bit, dW and db to rounding); any other kernel, stride and padding
/// runs general loops.
public final class DepthwiseConv2D: Module {
  /// Input channels C.
  public let inChannels: Int
  /// Filters per input channel, m.
  public let channelMultiplier: Int
  /// Output channels C·m.
  public var outChannels: Int { inChannels * channelMultiplier }
  /// Kernel height and width (KH, KW).
  public let kernelShape: (height: Int, width: Int)
  /// Strides along height and width.
  public let strides: (height: Int, width: Int)
  /// Zero padding along height and width (each side).
  public let paddings: (height: Int, width: Int)
  /// `[C·m, 1, KH, KW]`.
  public let weight: Parameter
  /// `[C·m]`, or nil without bias.
  public let bias: Parameter?

  private var output: Tensor?
  private var inputGrad: Tensor?
  private var input: Tensor?
  /// The batch size N when the last forward ran channels-major (see `forward(_:channelsMajorSamples:)`).
  private var channelsMajorSamples: Int?

  /// A square K×K depthwise convolution.
  /// - Parameters:
  ///   - channels: C, in and (times `channelMultiplier`) out.
  ///   - channelMultiplier: m, filters per input channel (output channels C·m).
  ///   - kernelSize: K.
  ///   - stride: the step between windows along both axes (PyTorch's `stride`).
  ///   - padding: zeros on each side of both axes (PyTorch's `padding`).
  ///   - bias: whether to add a learnable bias.
  ///   - weightInit: PyTorch's default (fan_in = K·K) or orthogonal.
  ///   - rng: the generator that draws the initial weights.
  public convenience init(
    channels: Int, channelMultiplier: Int = 1, kernelSize: Int, stride: Int = 1, padding: Int = 0,
    bias: Bool = true, weightInit: WeightInit = .pytorchDefault, rng: inout SeededGenerator
  ) {
    self.init(channels: channels, channelMultiplier: channelMultiplier, kernelSize: (kernelSize, kernelSize),
      stride: (stride, stride), padding: (padding, padding), bias: bias, weightInit: weightInit, rng: &rng)
  }

  /// A KH×KW depthwise convolution with per-axis strides and paddings.
  /// - Parameters:
  ///   - channels: C, in and (times `channelMultiplier`) out.
  ///   - channelMultiplier: m, filters per input channel (output channels C·m).
  ///   - kernelSize: (KH, KW).
  ///   - stride: (sh, sw).
  ///   - padding: (ph, pw), zeros on both sides of each axis.
  ///   - bias: whether to add a learnable bias.
  ///   - weightInit: PyTorch's default (fan_in = KH·KW) or orthogonal.
  ///   - rng: the generator that draws the initial weights.
  public init(
    channels: Int, channelMultiplier: Int = 1, kernelSize: (Int, Int), stride: (Int, Int) = (1, 1),
    padding: (Int, Int) = (0, 0), bias: Bool = true, weightInit: WeightInit = .pytorchDefault,
    rng: inout SeededGenerator
  ) {
    precondition(channels > 0 && channelMultiplier > 0 && kernelSize.0 > 0 && kernelSize.1 > 0 && stride.0 > 0
      && stride.1 > 0 && padding.0 >= 0 && padding.1 >= 0,
      "DepthwiseConv2D: channels, multiplier, kernel size and stride must be positive and padding non-negative")
    inChannels = channels
    self.channelMultiplier = channelMultiplier
    kernelShape = (kernelSize.0, kernelSize.1)
    strides = (stride.0, stride.1)
    paddings = (padding.0, padding.1)
    weight = Parameter(Tensor(zeros: [channels * channelMultiplier, 1, kernelSize.0, kernelSize.1]))
    self.bias = bias ? Parameter(Tensor(zeros: [channels * channelMultiplier]), decays: false) : nil
    super.init()
    weightInit.initialize(weight: weight.value, bias: self.bias?.value, using: &rng)
  }

  /// The names of the kernel variants, indexed as the C side's `DW_VARIANT_*`.
  private static let variantNames = ["portable", "avx2", "avx512"]

  /// The kernel variants this build and CPU can run: `"portable"` always, `"avx2"` (AVX2+FMA) on
  /// x86-64 CPUs that have it, `"avx512"` (its own 3×3, stride 1, padding 1 kernels, the AVX2 ones
  /// for other geometries) on those that also have AVX-512F and AVX-512VL.
  public static var supportedKernelVariants: [String] {
    variantNames.indices.filter { dw_kernels_supports(Int32($0)) }.map { variantNames[$0] }
  }

  /// The kernel variant that runs (the fastest supported one unless `DW_KERNELS=portable` is set
  /// in the environment or `selectKernelVariant` chose another).
  public static var kernelVariant: String { variantNames[Int(dw_kernels_variant())] }

  /// Makes every DepthwiseConv2D run the kernel variant `name` from the next call on (for tests:
  /// never while a forward or backward runs); nil restores the default choice.
  /// - Parameter name: one of `supportedKernelVariants`, or nil.
  /// - Returns: false (and nothing changes) when `name` is not a supported variant.
  @discardableResult public static func selectKernelVariant(_ name: String?) -> Bool {
    guard let name else { return dw_kernels_select(-1) }
    guard let i = variantNames.firstIndex(of: name) else { return false }
    return dw_kernels_select(Int32(i))
  }

  public override var localParameters: [(String, Parameter)] {
    var p = [("weight", weight)]
    if let b = bias { p.append(("bias", b)) }
    return p
  }

  private func geometry(_ s: [Int]) -> DWGeometry {
    let (kh, kw) = kernelShape, (sh, sw) = strides, (ph, pw) = paddings
    let oh = s[2] + 2 * ph < kh ? 0 : (s[2] + 2 * ph - kh) / sh + 1
    let ow = s[3] + 2 * pw < kw ? 0 : (s[3] + 2 * pw - kw) / sw + 1
    return DWGeometry(n: s[0], c: s[1], m: channelMultiplier, h: s[2], w: s[3], kh: kh, kw: kw, sh: sh, sw: sw,
      ph: ph, pw: pw, oh: oh, ow: ow)
  }

  public override func outputShape(for s: [Int]) throws -> [Int] {
    let expected = "[N, \(inChannels), H, W]"
    try requireRank(s, 4, layer: typeName, expected: expected)
    guard s[1] == inChannels else { throw TensorError.shapeMismatch(layer: typeName, expected: expected, got: s) }
    let g = geometry(s)
    guard g.oh > 0, g.ow > 0 else {
      throw TensorError.shapeMismatch(layer: typeName,
        expected: "[N, \(inChannels), H, W] with H + 2·\(paddings.height) ≥ \(kernelShape.height) and "
          + "W + 2·\(paddings.width) ≥ \(kernelShape.width)", got: s)
    }
    return [s[0], outChannels, g.oh, g.ow]
  }

  public override func forward(_ x: Tensor) throws -> Tensor {
    let ys = try outputShape(for: x.shape)
    let y = reuseOutput(&output, shape: ys)
    input = x
    channelsMajorSamples = nil
    var g = geometry(x.shape)
    if dw_lanes_preferred(&g) {
      forwardLanes(x, y, geometry: g, planes: channelPlanes(g, channelsMajor: false))
      return y
    }
    let planes = ys[0] * ys[1], scratch = dw_forward_scratch(&g), geo = g
    let xs = UncheckedSendable(x.data), ws = UncheckedSendable(weight.value.data)
    let bs = UncheckedSendable(bias?.value.data), dst = UncheckedSendable(y.data)
    // x [N, C, H, W] → y [N, C·m, OH, OW], in parallel over output planes.
    parallelFor(planes, minimumChunk: Swift.max(1, 8192 / Swift.max(1, geo.oh * geo.ow))) { range in
      withUnsafeTemporaryAllocation(of: Float.self, capacity: Swift.max(1, scratch)) { buf in
        var gg = geo
        dw_forward_planes(&gg, xs.value, ws.value, bs.value, dst.value, range.lowerBound, range.upperBound,
          buf.baseAddress!)
      }
    }
    return y
  }

  /// Channel multiplier 1: a channels-major batch runs through `forward(_:channelsMajorSamples:)`.
  public override var runsChannelsMajorGivenBatch: Bool { channelMultiplier == 1 }

  /// Forward over a batch of N samples stored channels-major (as `Sequential` runs it, see
  /// `Module.runsChannelsMajorGivenBatch`): x [1, C, N·H, W], each channel's N planes one after the other,
  /// → y [1, C, N·OH, OW] likewise. Channel c's planes are then the one-channel batch
  /// [N, 1, H, W] at c·N·H·W, with channel c's weight and bias: 3×3 layers of padding 1 at
  /// stride 1 or 2 run it with eight samples in vector lanes (`dw_lanes_forward`, where
  /// `dw_lanes_preferred` says it is the faster), others with the per-plane kernels; either way
  /// each output takes the same operations as in `forward(_:)`, so the same bits. `backward`
  /// follows the layout of the last forward. Channel multiplier 1 only.
  public override func forward(_ x: Tensor, channelsMajorSamples n: Int) throws -> Tensor {
    let expected = "[1, \(inChannels), N·H, W] holding \(n) samples channels-major"
    guard channelMultiplier == 1, n > 0, x.shape.count == 4, x.shape[0] == 1, x.shape[2] % n == 0 else {
      throw TensorError.shapeMismatch(layer: typeName, expected: expected, got: x.shape)
    }
    let s = try outputShape(for: [n, x.shape[1], x.shape[2] / n, x.shape[3]])
    let y = reuseOutput(&output, shape: [1, s[1], n * s[2], s[3]])
    input = x
    channelsMajorSamples = n
    var g = geometry([n, 1, x.shape[2] / n, x.shape[3]])
    let c = inChannels, hw = g.h * g.w, ohw = g.oh * g.ow, kk = g.kh * g.kw
    if dw_lanes_preferred(&g) {
      forwardLanes(x, y, geometry: g, planes: channelPlanes(g, channelsMajor: true))
      return y
    }
    let xs = UncheckedSendable(x.data), ws = UncheckedSendable(weight.value.data)
    let bs = UncheckedSendable(bias?.value.data), dst = UncheckedSendable(y.data)
    let scratch = dw_forward_scratch(&g), geo = g
    // planes q = c·N + s of x [C, N, H, W] → y [C, N, OH, OW], in parallel over planes; a
    // range runs channel by channel.
    parallelFor(c * n, minimumChunk: Swift.max(1, 8192 / Swift.max(1, ohw))) { range in
      withUnsafeTemporaryAllocation(of: Float.self, capacity: Swift.max(1, scratch)) { buf in
        var gg = geo, q = range.lowerBound
        while q < range.upperBound {
          let ci = q / n, end = Swift.min(range.upperBound, (ci + 1) * n)
          dw_forward_planes(&gg, xs.value + ci * n * hw, ws.value + ci * kk, bs.value.map { $0 + ci }, dst.value + ci * n * ohw,
            q - ci * n, end - ci * n, buf.baseAddress!)
          q = end
        }
      }
    }
    return y
  }

  /// Where one channel's N sample planes lie, in floats: channel c's first plane of x (and dx) at
  /// c·x, sample k's k·xSample further; of y (and dy) at c·y and k·ySample.
  private struct ChannelPlanes { let x, xSample, y, ySample: Int }

  /// Channel c's planes in an NCHW batch (x at c·H·W, C·H·W apart; y at c·m·OH·OW, C·m·OH·OW
  /// apart) or a channels-major one (x at c·N·H·W, H·W apart; y at c·N·OH·OW, OH·OW apart); `g`
  /// is the batch's geometry (one channel for channels-major, its n the samples).
  private func channelPlanes(_ g: DWGeometry, channelsMajor: Bool) -> ChannelPlanes {
    let hw = g.h * g.w, ohw = g.oh * g.ow
    return channelsMajor
      ? ChannelPlanes(x: g.n * hw, xSample: hw, y: g.n * ohw, ySample: ohw)
      : ChannelPlanes(x: hw, xSample: inChannels * hw, y: channelMultiplier * ohw, ySample: outChannels * ohw)
  }

  /// Forward by the lanes kernels: x → y, in parallel over channels, each channel's N samples in
  /// one call (`dw_lanes_forward`); `g` a geometry that `dw_lanes_handles` (its n the samples).
  private func forwardLanes(_ x: Tensor, _ y: Tensor, geometry g: DWGeometry, planes p: ChannelPlanes) {
    var g = g
    let scratch = dw_lanes_forward_scratch(&g), geo = g, kk = g.kh * g.kw
    let xs = UncheckedSendable(x.data), ws = UncheckedSendable(weight.value.data)
    let bs = UncheckedSendable(bias?.value.data), dst = UncheckedSendable(y.data)
    parallelFor(inChannels, minimumChunk: Swift.max(1, 8192 / Swift.max(1, g.n * g.oh * g.ow))) { range in
      withUnsafeTemporaryAllocation(of: Float.self, capacity: scratch) { buf in
        var gg = geo
        for ci in range {
          dw_lanes_forward(&gg, xs.value + ci * p.x, p.xSample, ws.value + ci * kk, bs.value.map { $0[ci] } ?? 0,
            dst.value + ci * p.y, p.ySample, buf.baseAddress!)
        }
      }
    }
  }

  /// Backward reads the saved input (and the parameters), not the output.
  public override var backwardReadsOutput: Bool { false }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    guard let x = input, let ys = output?.shape, dy.shape == ys else {
      throw backwardError(layer: typeName + ".backward",
        expected: output.map { Shape.text($0.shape) }, got: dy.shape)
    }
    // The first layer of a network skips dx altogether.
    let dx = propagatesInputGradient ? reuseInputGradient(&inputGrad, shape: x.shape) : x
    // The batch's geometry (channels-major: one channel of N samples) and channel c's planes.
    let n = channelsMajorSamples ?? x.shape[0], channelsMajor = channelsMajorSamples != nil
    var g = geometry(channelsMajor ? [n, 1, x.shape[2] / n, x.shape[3]] : x.shape)
    let p = channelPlanes(g, channelsMajor: channelsMajor), hw = g.h * g.w
    let lanes = dw_lanes_preferred(&g), geo = g, kk = g.kh * g.kw
    let xs = UncheckedSendable(x.data), ws = UncheckedSendable(weight.value.data), dys = UncheckedSendable(dy.data)
    let dxs = UncheckedSendable(propagatesInputGradient ? dx.data : nil)
    let dws = UncheckedSendable(weight.grad.data), dbs = UncheckedSendable(bias?.grad.data)
    // dy [N, C·m, OH, OW] → dx [N, C, H, W] (channels-major: [1, C, N·OH, OW] → [1, C, N·H, W]),
    // dW [C·m, 1, KH, KW] +=, db [C·m] +=, in parallel over input channels (each owns its output
    // channels' dW and db).
    parallelFor(inChannels, minimumChunk: Swift.max(1, 8192 / Swift.max(1, n * hw))) { range in
      var gg = geo
      let scratch = lanes ? dw_lanes_backward_scratch(&gg) : dw_backward_scratch(&gg, channelsMajor ? 1 : range.count)
      withUnsafeTemporaryAllocation(of: Float.self, capacity: Swift.max(1, scratch)) { buf in
        if !lanes && !channelsMajor {
          // NCHW: the per-plane kernels take the channel range themselves.
          dw_backward_channels(&gg, xs.value, ws.value, dys.value, dxs.value, dws.value, dbs.value,
            range.lowerBound, range.upperBound, buf.baseAddress!)
          return
        }
        for ci in range {
          let x = xs.value + ci * p.x, w = ws.value + ci * kk, dy = dys.value + ci * p.y
          let dx = dxs.value.map { $0 + ci * p.x }, dw = dws.value + ci * kk, db = dbs.value.map { $0 + ci }
          if lanes {
            dw_lanes_backward(&gg, x, p.xSample, w, dy, p.ySample, dx, dw, db, buf.baseAddress!)
          } else {
            // channels-major: channel ci is the one-channel batch [N, 1, H, W].
            dw_backward_channels(&gg, x, w, dy, dx, dw, db, 0, 1, buf.baseAddress!)
          }
        }
      }
    }
    return dx
  }
}
