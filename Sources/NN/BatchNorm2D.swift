// BatchNorm2D: batch normalisation over N·H·W per channel, with PyTorch's conventions
// (momentum 0.1, eps 1e-5, unbiased variance in the running estimate).
//
// Shapes: x [N, C, H, W] or [N, C]; weight (γ), bias (β), running_mean, running_var [C].
import CAconKernels
import CLayerKernels
import TensorCore

/// Batch normalisation per channel.
///
/// ```
/// training:   y = γ · (x − mean_B) / √(var_B + eps) + β      (var_B biased)
///             running_mean ← (1 − m)·running_mean + m·mean_B
///             running_var  ← (1 − m)·running_var  + m·var_B·M/(M − 1),   M = N·H·W
/// evaluation: y = γ · (x − running_mean) / √(running_var + eps) + β
/// ```
/// `momentum` follows PyTorch (0.1 weighs the new batch by 0.1; Keras/Paddle's 0.9 is 1 − this).
/// State names: `weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked`.
///
/// In data-parallel training, `allReduce` makes it synchronised batch norm (PyTorch's
/// SyncBatchNorm): the batch statistics, and in the backward pass the sums of dy and dy·x̂, are
/// those of the global batch over all processes.
public final class BatchNorm2D: Module {
  /// Channels C.
  public let channels: Int
  /// Running-statistics momentum (PyTorch convention).
  public let momentum: Float
  /// Added to the variance.
  public let eps: Float
  /// γ, `[C]`, initialised to 1.
  public let weight: Parameter
  /// β, `[C]`, initialised to 0.
  public let bias: Parameter
  /// `[C]`, initialised to 0.
  public let runningMean: Tensor
  /// `[C]`, initialised to 1.
  public let runningVar: Tensor
  /// Training batches seen.
  public let numBatchesTracked = Int64Box(0)

  private var output: Tensor?
  private var inputGrad: Tensor?
  private var input: Tensor?
  private var mean: [Float]
  private var invStd: [Float]
  private var usedBatchStats = true
  /// Whether the last forward pass applied the `ReLU` that follows this layer in a `Sequential`
  /// or `Graph` to its output (the container fuses the two; backward then takes the ReLU's gradient).
  public private(set) var fusedReLU = false
  /// Per-channel sums exchanged by `allReduce`: `[2·C + 1]` (two sums per channel, then the count);
  /// the local passes' mean and variance, or Σdy and Σdy·(x − mean), in its first 2·C.
  private var sums: [Double]
  /// γ·istd per channel, `[C]`: the scale of the normalisation (and a fused ReLU's mask).
  private var scale: [Float]
  /// The input gradient's constants a, b, d of each channel, `[3·C]` (see inputGradientConstants).
  private var coefficients: [Float]

  /// When set, training sums its statistics over the processes of a data-parallel run: called
  /// with `[2·C + 1]` Doubles (per channel Σx then Σx², or Σdy then Σdy·x̂ going back, then the
  /// element count N·H·W), it must replace each with its sum over all processes, as an MPI
  /// all-reduce does. Every process must run the same layers in the same order. Parameter
  /// gradients stay this process's own share; they are summed with the others' as usual.
  public var allReduce: ((UnsafeMutableBufferPointer<Double>) throws -> Void)?

  /// - Parameters: channels C; momentum (0.1); eps (1e-5).
  public init(channels: Int, momentum: Float = 0.1, eps: Float = 1e-5) {
    precondition(channels > 0, "BatchNorm2D: channels must be positive")
    self.channels = channels
    self.momentum = momentum
    self.eps = eps
    weight = Parameter(Tensor(shape: [channels], repeating: 1), decays: false)
    bias = Parameter(Tensor(zeros: [channels]), decays: false)
    runningMean = Tensor(zeros: [channels])
    runningVar = Tensor(shape: [channels], repeating: 1)
    mean = [Float](repeating: 0, count: channels)
    invStd = [Float](repeating: 1, count: channels)
    sums = [Double](repeating: 0, count: 2 * channels + 1)
    scale = [Float](repeating: 0, count: channels)
    coefficients = [Float](repeating: 0, count: 3 * channels)
  }

  /// The channels of one unit of the parallel loops, which run CLayerKernels' `acon_bn_*_block`
  /// passes over a unit's channels at once: on planes under `acon_bn_block_plane_limit` floats
  /// whole blocks (at most `acon_bn_block_floats` floats a sample) and at least 8 units where C
  /// allows; on larger or empty planes, where the passes run channel by channel, one channel.
  /// Depends on C and H·W only, so results do not depend on the thread count.
  private static func unitChannels(c: Int, hw: Int) -> Int {
    guard hw > 0 && hw < acon_bn_block_plane_limit else { return 1 }
    return Swift.max(1, Swift.min(acon_bn_block_floats / hw, (c + 7) / 8))
  }

  /// Whether a pass that reads and writes `elements` floats in all (over the whole tensors)
  /// stores its output with streaming stores: from `acon_kernels_streaming_threshold()` bytes on
  /// (half the last-level cache by default), as the ACON kernels do. Such an output is mostly
  /// evicted before the next layer reads it, and streaming skips the read of each line that a
  /// plain store makes first; the stats (forward) and sums (backward) of a unit leave its inputs
  /// in cache for the second read, so the pass then moves one read and one write per element
  /// instead of two reads and a write. The same bits either way (per-channel loops on planes
  /// aligned to 64 bytes only; see `acon_bn_normalize`).
  package static func streams(elements: Int) -> Bool {
    UInt(elements) &* 4 >= UInt(acon_kernels_streaming_threshold())
  }

  /// The minimum units per thread of the parallel loops: at least 16,384 floats each.
  private static func minimumUnits(per: Int, n: Int, hw: Int) -> Int {
    Swift.max(1, 16_384 / Swift.max(1, per * n * hw))
  }

  public override var localParameters: [(String, Parameter)] { [("weight", weight), ("bias", bias)] }
  public override var localBuffers: [(String, Buffer)] {
    [("running_mean", .float(runningMean)), ("running_var", .float(runningVar)),
     ("num_batches_tracked", .int64(numBatchesTracked))]
  }

  public override func outputShape(for s: [Int]) throws -> [Int] {
    _ = try channelLayout(s, channels: channels, layer: typeName)
    return s
  }

  public override func forward(_ x: Tensor) throws -> Tensor {
    try forward(x, fusingReLU: false)
  }

  /// Forward with, when `relu`, a ReLU applied to the output as it is written (`Sequential` runs
  /// a BatchNorm followed by a ReLU this way): the ReLU's result, one pass over the activation
  /// less. Backward then takes the gradient at the ReLU's output and masks it where the
  /// normalised value, recomputed from x, is ≤ 0: no pass of the ReLU's either, and the same
  /// bits as the two layers one after the other.
  func forward(_ x: Tensor, fusingReLU relu: Bool) throws -> Tensor {
    let (n, hw) = try channelLayout(x.shape, channels: channels, layer: typeName)
    let c = channels
    let m = n * hw
    if isTraining && m <= 1 {
      throw TensorError.invalidArgument(
        "\(typeName): training needs more than one value per channel to compute batch statistics (N·H·W > 1; "
          + "PyTorch: \"Expected more than 1 value per channel when training\"), "
          + "got input \(Shape.text(x.shape)); use a batch of 2 or more, or switch to evaluation mode (eval())")
    }
    let y = reuseOutput(&output, shape: x.shape)
    input = x
    usedBatchStats = isTraining
    fusedReLU = relu
    if isTraining, let reduce = allReduce {
      try synchronisedForward(x, y: y, n: n, hw: hw, reduce: reduce)
      numBatchesTracked.value += 1
      return y
    }
    let xs = UncheckedSendable(x.data), ys = UncheckedSendable(y.data)
    let g = UncheckedSendable(weight.value.data), b = UncheckedSendable(bias.value.data)
    let rm = UncheckedSendable(runningMean.data), rv = UncheckedSendable(runningVar.data)
    let training = isTraining, mom = momentum, eps = self.eps
    let stream: Int32 = BatchNorm2D.streams(elements: x.count + y.count) ? 1 : 0
    // Units of `per` channels (see unitChannels).
    let per = BatchNorm2D.unitChannels(c: c, hw: hw), units = (c + per - 1) / per
    mean.withUnsafeMutableBufferPointer { meanBuf in
      invStd.withUnsafeMutableBufferPointer { istdBuf in
        scale.withUnsafeMutableBufferPointer { scaleBuf in
          sums.withUnsafeMutableBufferPointer { sumBuf in
            let mb = UncheckedSendable(meanBuf.baseAddress!), sb = UncheckedSendable(istdBuf.baseAddress!)
            let kb = UncheckedSendable(scaleBuf.baseAddress!), stats = UncheckedSendable(sumBuf.baseAddress!)
            parallelFor(units, minimumChunk: BatchNorm2D.minimumUnits(per: per, n: n, hw: hw)) { range in
              for unit in range {
                let c0 = unit * per, c1 = Swift.min(c, c0 + per)
                // x, y: [N, C, HW]; stats: mean [C] then variance [C], Doubles
                if training { acon_bn_stats_block(xs.value, n, c, hw, c0, c1, stats.value, stats.value + c) }
                for ch in c0..<c1 {
                  var mu: Float, istd: Float
                  if training {
                    let md = stats.value[ch], variance = stats.value[c + ch]
                    mu = Float(md)
                    istd = Float(1 / (variance + Double(eps)).squareRoot())
                    rm.value[ch] = (1 - mom) * rm.value[ch] + mom * mu
                    rv.value[ch] = (1 - mom) * rv.value[ch] + mom * Float(variance * Double(m) / Double(m - 1))
                  } else {
                    mu = rm.value[ch]
                    istd = 1 / (rv.value[ch] + eps).squareRoot()
                  }
                  mb.value[ch] = mu
                  sb.value[ch] = istd
                  kb.value[ch] = g.value[ch] * istd
                }
                acon_bn_normalize_block(xs.value, ys.value, n, c, hw, c0, c1, mb.value, kb.value, b.value, relu ? 1 : 0,
                  stream)
              }
            }
          }
        }
      }
    }
    if training { numBatchesTracked.value += 1 }
    return y
  }

  /// Per-channel statistics over N·H·W values: the same on a channels-major batch (see
  /// `Module.runsChannelsMajor`), up to the order of the sums.
  public override var runsChannelsMajor: Bool { true }

  /// Backward reads the saved input (and the statistics), not the output: a fused ReLU's mask
  /// is recomputed from the input.
  public override var backwardReadsOutput: Bool { false }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    try backward(dy, overwriting: false)
  }

  /// Backward that, with `overwriting`, writes the input gradient over `dy` and returns it (for
  /// a container that knows nothing reads dy afterwards: `Sequential`). Each element of dx needs
  /// only the same element of dy once the channel's sums are taken, so the values are those of
  /// `backward(_:)`. A dy that shares the input's storage is never overwritten.
  func backward(_ dy: Tensor, overwriting: Bool) throws -> Tensor {
    guard let x = input, dy.shape == x.shape else {
      throw backwardError(layer: "BatchNorm2D.backward", expected: input.map { Shape.text($0.shape) }, got: dy.shape)
    }
    let n = x.shape[0], c = channels, hw = x.shape.count == 4 ? x.shape[2] * x.shape[3] : 1
    let m = Double(n * hw)
    let dx = overwriting && dy.storage !== x.storage ? dy : reuseInputGradient(&inputGrad, shape: x.shape)
    let xs = UncheckedSendable(x.data), dys = UncheckedSendable(dy.data), dxs = UncheckedSendable(dx.data)
    let g = UncheckedSendable(weight.value.data), b = UncheckedSendable(bias.value.data)
    let dg = UncheckedSendable(weight.grad.data), db = UncheckedSendable(bias.grad.data)
    let batchStats = usedBatchStats, propagate = propagatesInputGradient, relu = fusedReLU
    if batchStats, let reduce = allReduce {
      try synchronisedBackward(x, dy: dy, dx: dx, n: n, hw: hw, reduce: reduce)
      return dx
    }
    let stream: Int32 = BatchNorm2D.streams(elements: 3 * x.count) ? 1 : 0
    let per = BatchNorm2D.unitChannels(c: c, hw: hw), units = (c + per - 1) / per
    mean.withUnsafeBufferPointer { meanBuf in
      invStd.withUnsafeBufferPointer { istdBuf in
        scale.withUnsafeMutableBufferPointer { scaleBuf in
          sums.withUnsafeMutableBufferPointer { sumBuf in
            coefficients.withUnsafeMutableBufferPointer { coefBuf in
              let mb = UncheckedSendable(meanBuf.baseAddress!), sb = UncheckedSendable(istdBuf.baseAddress!)
              let kb = UncheckedSendable(scaleBuf.baseAddress!), sp = UncheckedSendable(sumBuf.baseAddress!)
              let cf = UncheckedSendable(coefBuf.baseAddress!)
              parallelFor(units, minimumChunk: BatchNorm2D.minimumUnits(per: per, n: n, hw: hw)) { range in
                for unit in range {
                  let c0 = unit * per, c1 = Swift.min(c, c0 + per)
                  // x, dy, dx: [N, C, HW]; sp: Σdy [C] then Σdy·(x − mean) [C]; cf: a, b, d [C] each.
                  // kb: γ·istd, the scale forward normalised with (and a fused ReLU's mask).
                  for ch in c0..<c1 { kb.value[ch] = g.value[ch] * sb.value[ch] }
                  acon_bn_gradient_sums_block(xs.value, dys.value, n, c, hw, c0, c1, mb.value, relu ? 1 : 0, kb.value,
                    b.value, sp.value, sp.value + c)
                  for ch in c0..<c1 {
                    let istd = sb.value[ch], sdy = sp.value[ch], sdyx = sp.value[c + ch] * Double(istd)
                    dg.value[ch] += Float(sdyx)
                    db.value[ch] += Float(sdy)
                    // Batch statistics: dx = γ·istd·(dy − mean(dy) − x̂·mean(dy·x̂)); running: dx = γ·istd·dy.
                    let a = batchStats ? Float(sdy / m) : 0, bq = batchStats ? Float(sdyx / m) : 0
                    (cf.value[ch], cf.value[c + ch], cf.value[2 * c + ch]) = BatchNorm2D.inputGradientConstants(
                      istd: istd, k: kb.value[ch], a: a, b: bq)
                  }
                  if propagate {
                    acon_bn_input_gradient_block(xs.value, dys.value, dxs.value, n, c, hw, c0, c1, mb.value, cf.value,
                      cf.value + c, cf.value + 2 * c, relu ? 1 : 0, kb.value, b.value, stream)
                  }
                }
              }
            }
          }
        }
      }
    }
    return dx
  }

  // MARK: - Synchronised batch statistics

  /// Training forward with the global batch's statistics: local Σx and Σx² per channel, summed
  /// over the processes, then mean = Σx/M and var = Σx²/M − mean² (Doubles), M the global count.
  private func synchronisedForward(
    _ x: Tensor, y: Tensor, n: Int, hw: Int,
    reduce: (UnsafeMutableBufferPointer<Double>) throws -> Void
  ) throws {
    // x, y: [N, C, HW]   sums: [2C + 1]
    let c = channels
    let xs = UncheckedSendable(x.data), ys = UncheckedSendable(y.data)
    try sums.withUnsafeMutableBufferPointer { sumBuf in
      let sp = UncheckedSendable(sumBuf.baseAddress!)
      parallelFor(c) { range in
        for ch in range {
          // Σx and Σx² (Doubles) from this process's mean and variance
          var md = 0.0, variance = 0.0
          acon_bn_stats(xs.value + ch * hw, n, c * hw, hw, &md, &variance)
          let count = Double(n * hw)
          let s = md * count, s2 = (variance + md * md) * count
          sp.value[ch] = s
          sp.value[c + ch] = s2
        }
      }
      sumBuf[2 * c] = Double(n * hw)
      try reduce(sumBuf)  // outside parallelFor: a collective call runs on the calling thread
    }
    let m = sums[2 * c]
    guard m > 1 else {
      throw TensorError.invalidArgument(
        "\(typeName): the global batch has \(Int(m)) value(s) per channel; training needs more than one")
    }
    let g = weight.value.data, b = bias.value.data, rm = runningMean.data, rv = runningVar.data
    for ch in 0..<c {
      let md = sums[ch] / m
      let variance = Swift.max(sums[c + ch] / m - md * md, 0)
      mean[ch] = Float(md)
      invStd[ch] = Float(1 / (variance + Double(eps)).squareRoot())
      rm[ch] = (1 - momentum) * rm[ch] + momentum * mean[ch]
      rv[ch] = (1 - momentum) * rv[ch] + momentum * Float(variance * m / (m - 1))
    }
    let gs = UncheckedSendable(g), bs = UncheckedSendable(b), relu = fusedReLU
    let stream = BatchNorm2D.streams(elements: x.count + y.count)
    mean.withUnsafeBufferPointer { meanBuf in
      invStd.withUnsafeBufferPointer { istdBuf in
        let mb = UncheckedSendable(meanBuf.baseAddress!), sb = UncheckedSendable(istdBuf.baseAddress!)
        parallelFor(c) { range in
          for ch in range {
            BatchNorm2D.normalize(xs.value, ys.value, n: n, c: c, hw: hw, ch: ch, mu: mb.value[ch],
              scale: gs.value[ch] * sb.value[ch], shift: bs.value[ch], relu: relu, stream: stream)
          }
        }
      }
    }
  }

  /// Training backward with the global batch's sums of dy and dy·x̂; γ's and β's gradients get
  /// only this process's share (the gradient all-reduce adds the others').
  private func synchronisedBackward(
    _ x: Tensor, dy: Tensor, dx: Tensor, n: Int, hw: Int,
    reduce: (UnsafeMutableBufferPointer<Double>) throws -> Void
  ) throws {
    // x, dy, dx: [N, C, HW]   sums: [2C + 1]
    let c = channels
    let xs = UncheckedSendable(x.data), dys = UncheckedSendable(dy.data), dxs = UncheckedSendable(dx.data)
    let g = UncheckedSendable(weight.value.data), b = UncheckedSendable(bias.value.data)
    let dg = UncheckedSendable(weight.grad.data), db = UncheckedSendable(bias.grad.data)
    let relu = fusedReLU, stream = BatchNorm2D.streams(elements: 3 * x.count)
    // The fused ReLU's mask of channel ch, from the scale and shift its forward used.
    func mask(_ ch: Int, istd: Float) -> ReLUMask? { relu ? ReLUMask(scale: g.value[ch] * istd, shift: b.value[ch]) : nil }
    try mean.withUnsafeBufferPointer { meanBuf in
      try invStd.withUnsafeBufferPointer { istdBuf in
        let mb = UncheckedSendable(meanBuf.baseAddress!), sb = UncheckedSendable(istdBuf.baseAddress!)
        try sums.withUnsafeMutableBufferPointer { sumBuf in
          let sp = UncheckedSendable(sumBuf.baseAddress!)
          parallelFor(c) { range in
            for ch in range {
              let (sdy, sdyx) = BatchNorm2D.gradientSums(
                xs.value, dys.value, n: n, c: c, hw: hw, ch: ch, mu: mb.value[ch], istd: sb.value[ch],
                relu: mask(ch, istd: sb.value[ch]))
              dg.value[ch] += Float(sdyx)
              db.value[ch] += Float(sdy)
              sp.value[ch] = sdy
              sp.value[c + ch] = sdyx
            }
          }
          sumBuf[2 * c] = Double(n * hw)
          try reduce(sumBuf)
          guard propagatesInputGradient else { return }
          let m = sumBuf[2 * c]
          parallelFor(c) { range in
            for ch in range {
              let istd = sb.value[ch]
              BatchNorm2D.writeInputGradient(
                xs.value, dys.value, dxs.value, n: n, c: c, hw: hw, ch: ch, mu: mb.value[ch], istd: istd,
                k: g.value[ch] * istd, a: Float(sp.value[ch] / m), b: Float(sp.value[c + ch] / m),
                relu: mask(ch, istd: istd), stream: stream)
            }
          }
        }
      }
    }
  }

  // MARK: - Per-channel loops of the synchronised path (CLayerKernels)

  /// A fused ReLU's mask for one channel: the scale γ·istd and shift β that forward normalised
  /// with (from the same stored istd and the same γ and β, so the same Floats), from which
  /// backward recomputes (x − mu)·scale + shift.
  private struct ReLUMask {
    let scale: Float, shift: Float
  }

  /// y = (x − mu)·scale + shift over channel ch, then max(y, 0) with `relu`; `stream` as in
  /// `streams(elements:)`.   x, y: [N, C, HW]
  @inline(__always)
  private static func normalize(
    _ x: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>, n: Int, c: Int, hw: Int, ch: Int,
    mu: Float, scale: Float, shift: Float, relu: Bool, stream: Bool
  ) {
    acon_bn_normalize(x + ch * hw, y + ch * hw, n, c * hw, hw, mu, scale, shift, relu ? 1 : 0, stream ? 1 : 0)
  }

  /// (Σdy, Σdy·x̂) over channel ch, x̂ = (x − mu)·istd; with `relu`, dy counts only where the fused
  /// ReLU passed it.   x, dy: [N, C, HW]
  @inline(__always)
  private static func gradientSums(
    _ x: UnsafeMutablePointer<Float>, _ dy: UnsafeMutablePointer<Float>, n: Int, c: Int, hw: Int, ch: Int,
    mu: Float, istd: Float, relu: ReLUMask?
  ) -> (Double, Double) {
    var sdy = 0.0, sdyxc = 0.0
    acon_bn_gradient_sums(x + ch * hw, dy + ch * hw, n, c * hw, hw, mu, relu == nil ? 0 : 1,
      relu?.scale ?? 0, relu?.shift ?? 0, &sdy, &sdyxc)
    return (sdy, sdyxc * Double(istd))
  }

  /// dx = k·(dy − a − x̂·b) over channel ch, x̂ = (x − mu)·istd, as k·dy − (k·istd·b)·(x − mu) − k·a;
  /// with `relu`, dy masked as in `gradientSums`; `stream` as in `streams(elements:)`.
  /// x, dy, dx: [N, C, HW] (dx may be dy)
  @inline(__always)
  private static func writeInputGradient(
    _ x: UnsafeMutablePointer<Float>, _ dy: UnsafeMutablePointer<Float>, _ dx: UnsafeMutablePointer<Float>,
    n: Int, c: Int, hw: Int, ch: Int, mu: Float, istd: Float, k: Float, a: Float, b: Float, relu: ReLUMask?,
    stream: Bool
  ) {
    let (ka, kb, kd) = inputGradientConstants(istd: istd, k: k, a: a, b: b)
    acon_bn_input_gradient(
      x + ch * hw, dy + ch * hw, dx + ch * hw, n, c * hw, hw, mu, ka, kb, kd, relu == nil ? 0 : 1, relu?.scale ?? 0,
      relu?.shift ?? 0, stream ? 1 : 0)
  }

  /// The kernels' constants of dx = k·(dy − a − x̂·b) = k·dy + (−k·istd·b)·(x − mu) + (−k·a).
  @inline(__always)
  private static func inputGradientConstants(istd: Float, k: Float, a: Float, b: Float) -> (Float, Float, Float) {
    (k, Float(-Double(k) * Double(istd) * Double(b)), Float(-Double(k) * Double(a)))
  }
}
