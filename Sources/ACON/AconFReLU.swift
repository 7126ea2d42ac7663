// AconFReLU: TFNet's ACON-FReLU activation (nmaac/acon, TFNet/network.py), the ACON smooth
// maximum of x (or its 3×3/2 max-pool) and a funnel, a BatchNormed depthwise 3×3 convolution of x,
// with the smooth maximum fused in one C kernel (AconKernels.smoothMaxForward/Backward).
//
// Shapes: x [N, C, H, W]; a, b, z, y [N, C, OH, OW] with OH = H, OW = W at stride 1 and
// OH = (H − 1)/2 + 1, OW = (W − 1)/2 + 1 at stride 2 (3×3 kernels, padding 1).
import NN
import TensorCore

/// ACON-FReLU (TFNet): the smooth maximum of x and its funnel condition, then BatchNorm.
///
/// ```
/// a = x                        (stride 1)      a = maxpool_3×3/2, padding 1 (x)   (stride 2)
/// b = bn1(conv_frelu(x))       conv_frelu: depthwise 3×3, stride s, padding 1, with bias
/// y = bn2((a − b)·σ(a − b) + b)
/// ```
/// The state_dict is the official `Acon_FReLU`'s: `conv_frelu.weight [C, 1, 3, 3]`,
/// `conv_frelu.bias [C]`, `bn1.*` and `bn2.*` (BatchNorm2D's `weight`, `bias`, `running_mean`,
/// `running_var`, `num_batches_tracked`); the max-pool has no state. Initialisation is PyTorch's
/// defaults (TFNet's `_initialize_weights` draws conv_frelu from N(0, 0.01) and sets BN biases to
/// 1e−4: a model builder can do that). Input `[N, C, H, W]`, output `[N, C, OH, OW]`. In training,
/// bn1 and bn2 use batch statistics and need more than one value per channel (N·OH·OW > 1).
public final class AconFReLU: Module {
  /// Channels C.
  public let channels: Int
  /// 1 or 2.
  public let stride: Int
  /// The funnel: a depthwise 3×3 convolution with bias, stride `stride`, padding 1
  /// (`weight [C, 1, 3, 3]`, `bias [C]`).
  public let convFReLU: DepthwiseConv2D
  /// BatchNorm of the funnel.
  public let bn1: BatchNorm2D
  /// The 3×3/2 max-pool (padding 1) of x at stride 2.
  public let maxPool: MaxPool2D
  /// BatchNorm of the output.
  public let bn2: BatchNorm2D

  private var input: Tensor?
  private var a: Tensor?  // x, or the max-pool's output (owned by maxPool)
  private var b: Tensor?  // bn1's output
  private var z: Tensor?  // the smooth maximum
  private var db: Tensor?

  /// - Parameters:
  ///   - channels: C (in and out).
  ///   - stride: 1 (a = x) or 2 (a = 3×3/2 max-pool of x, and the funnel at stride 2).
  ///   - rng: draws conv_frelu's weight and bias.
  public init(channels: Int, stride: Int = 1, rng: inout SeededGenerator) {
    precondition(channels > 0, "AconFReLU: channels must be positive")
    precondition(stride == 1 || stride == 2, "AconFReLU: stride must be 1 or 2, got \(stride)")
    self.channels = channels
    self.stride = stride
    convFReLU = DepthwiseConv2D(channels: channels, kernelSize: 3, stride: stride, padding: 1, rng: &rng)
    bn1 = BatchNorm2D(channels: channels)
    maxPool = MaxPool2D(kernelSize: 3, stride: 2, padding: 1)
    bn2 = BatchNorm2D(channels: channels)
  }

  public override var typeName: String { "AconFReLU" }
  /// Registration order of the official module: conv_frelu, bn1, maxpool, bn2.
  public override var children: [(String, Module)] {
    [("conv_frelu", convFReLU), ("bn1", bn1), ("maxpool", maxPool), ("bn2", bn2)]
  }

  public override func outputShape(for s: [Int]) throws -> [Int] {
    let expected = "[N, \(channels), H, W]"
    try requireRank(s, 4, layer: typeName, expected: expected)
    guard s[1] == channels, s[2] > 0, s[3] > 0 else {
      throw TensorError.shapeMismatch(layer: typeName, expected: expected, got: s)
    }
    return [s[0], channels, (s[2] - 1) / stride + 1, (s[3] - 1) / stride + 1]
  }

  // Each pass is one of acon-bench's memory-bound passes (MemoryPasses, while it records): every
  // input read once, every output written once (forward), or dy and the input read and dx
  // written (backward); the smooth maximum reads a and b and writes z (3 tensors), and going back
  // reads a, b, dz and writes da, db (5).

  public override func forward(_ x: Tensor) throws -> Tensor {
    let os = try outputShape(for: x.shape)
    input = x
    let funnel = try MemoryPasses.measure("AconFReLU.conv_frelu.forward", { try convFReLU.forward(x) },
      elements: { x.count + $0.count })
    let bt = try MemoryPasses.measure("AconFReLU.bn1.forward", { try bn1.forward(funnel) },
      elements: { funnel.count + $0.count })
    let at = stride == 2
      ? try MemoryPasses.measure("AconFReLU.maxpool.forward", { try maxPool.forward(x) }, elements: { x.count + $0.count })
      : x
    guard at.shape == os, bt.shape == os else {
      throw TensorError.shapeMismatch(layer: typeName + " (funnel vs max-pool)", expected: Shape.text(os), got: bt.shape)
    }
    a = at
    b = bt
    let zt = reuse(&z, shape: os)
    MemoryPasses.measure("AconFReLU.smooth_max.forward", {
      AconKernels.smoothMaxForward(a: at.data, b: bt.data, y: zt.data, planes: os[0] * os[1], hw: os[2] * os[3])
    }, elements: { 3 * zt.count })
    return try MemoryPasses.measure("AconFReLU.bn2.forward", { try bn2.forward(zt) }, elements: { zt.count + $0.count })
  }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    guard let x = input, let at = a, let bt = b, let zt = z, dy.shape == zt.shape else {
      throw backwardError(layer: typeName + ".backward",
        expected: z.map { Shape.text($0.shape) }, got: dy.shape)
    }
    // Run by a container, this layer is one too: each child's input gradient (and db) comes from
    // the container's pool and goes back as soon as the next step has read it. Run on its own, it
    // keeps its children's buffers (a pass of its own would hold pooled storage until its next).
    let arena = gradientArena.flatMap { $0.depth > 0 ? $0 : nil }
    arena?.beginPass(self)
    defer { arena?.endPass() }
    func child<T>(_ m: Module, _ body: () throws -> T) rethrows -> T {
      arena?.managedOwner = ObjectIdentifier(m)
      defer { arena?.managedOwner = ObjectIdentifier(self) }
      return try body()
    }
    arena?.managedOwner = ObjectIdentifier(self)
    // da overwrites dz in bn2's gradient buffer (the kernel reads each dy vector before it
    // writes that da vector), and dx is summed into a child's input gradient: two activation-sized
    // buffers fewer per layer, the same bits.
    let dz = try MemoryPasses.measure("AconFReLU.bn2.backward", { try child(bn2) { try bn2.backward(dy) } },
      elements: { dy.count + 2 * $0.count })
    let dat = dz, dbt = reuseInputGradient(&db, shape: zt.shape)
    MemoryPasses.measure("AconFReLU.smooth_max.backward", {
      AconKernels.smoothMaxBackward(
        a: at.data, b: bt.data, dy: dz.data, da: dat.data, db: dbt.data, planes: zt.shape[0] * zt.shape[1],
        hw: zt.shape[2] * zt.shape[3])
    }, elements: { 5 * zt.count })
    convFReLU.propagatesInputGradient = propagatesInputGradient
    maxPool.propagatesInputGradient = propagatesInputGradient
    let dbn1 = try MemoryPasses.measure("AconFReLU.bn1.backward", { try child(bn1) { try bn1.backward(dbt) } },
      elements: { dbt.count + 2 * $0.count })
    arena?.recycle(dbt, unlessSharedWith: [dbn1, dy])
    let dxConv = try MemoryPasses.measure("AconFReLU.conv_frelu.backward",
      { try child(convFReLU) { try convFReLU.backward(dbn1) } }, elements: { dbn1.count + 2 * $0.count })
    arena?.recycle(dbn1, unlessSharedWith: [dxConv, dy])
    guard propagatesInputGradient else {
      arena?.recycle(dat, unlessSharedWith: [dxConv, dy])
      return dxConv
    }
    // dx = dx through the funnel + dx through a, into the buffer of one of them (both [N, C, H, W]).
    let (dx, other) = stride == 2
      ? (try MemoryPasses.measure("AconFReLU.maxpool.backward", { try child(maxPool) { try maxPool.backward(dat) } },
        elements: { dat.count + 2 * $0.count }), dxConv)
      : (dxConv, dat)
    guard dx.shape == x.shape, other.shape == x.shape else {
      throw backwardError(layer: typeName + ".backward", expected: Shape.text(x.shape), got: dx.shape)
    }
    let o = UncheckedSendable(dx.data), q = UncheckedSendable(other.data)
    MemoryPasses.measure("AconFReLU.add.backward", {
      parallelFor(x.count, minimumChunk: 1 << 15) { r in
        for i in r { o.value[i] += q.value[i] }
      }
    }, elements: { 3 * x.count })
    arena?.recycle(other, unlessSharedWith: [dx, dy])
    if stride == 2 { arena?.recycle(dat, unlessSharedWith: [dx, dy]) }
    return dx
  }
}
