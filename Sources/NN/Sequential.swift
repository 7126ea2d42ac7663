// Sequential: a container that runs named layers in order, forward and backward. It runs a
// convolution or a batch norm followed by a ReLU as one fused step, gives every convolution
// inside it one shared scratch workspace, and runs a batch through 1×1 convolutions, batch norms,
// depthwise convolutions and activations in channels-major order (ChannelsMajor.swift): the fast
// path needs nothing from the user.
import TensorCore

/// Runs its layers in order. Names become the prefixes of parameter names, as in PyTorch
/// (`conv1.weight`); layers given without names are numbered `0`, `1`, ...
///
/// The fast path is the default: a `Conv2D` or a `BatchNorm2D` directly followed by a `ReLU`
/// runs as one fused step (the layer applies the ReLU as it writes its output, and its mask as
/// it reads the gradient: the same bits, one pass over the activation less each way), and every
/// `Conv2D` inside the container (nested ones too) shares one `ConvWorkspace`. A container of
/// 1×1 convolutions, batch norms, depthwise convolutions and activations (ShuffleNetV2's
/// branches; see `allowsChannelsMajor`) runs a batch channels-major inside.
public final class Sequential: Module {
  /// The layers with their names.
  public let layers: [(String, Module)]
  /// For each layer index: whether it is a `Conv2D` or `BatchNorm2D` that runs fused with the
  /// `ReLU` after it.
  private let fusesReLU: [Bool]
  /// Whether every layer runs on a channels-major batch (`Module.runsChannelsMajor`, or
  /// `runsChannelsMajorGivenBatch`) and two of them or more are 1×1 convolutions.
  private let channelsMajorCapable: Bool
  /// The batch size N while the last forward ran channels-major.
  private var channelsMajorSamples: Int?
  /// Whether the last forward ran its layers on a channels-major batch (see `allowsChannelsMajor`).
  public var ranChannelsMajor: Bool { channelsMajorSamples != nil }

  /// The channels-major copies of the input and the output gradient, and the NCHW output and
  /// input gradient (from the network's pools).
  private var channelsMajorInput: Tensor?, channelsMajorGradient: Tensor?
  private var channelsMajorOutput: Tensor?, channelsMajorInputGradient: Tensor?
  /// Scratch of the in-place reorders (a plane per thread), and the cycles of the last ones each
  /// way (see `PlaneCycles`).
  private var reorderPlanes: [Float] = []
  private var cyclesToMajor: PlaneCycles?, cyclesFromMajor: PlaneCycles?

  /// Whether a container whose layers all allow it (`Module.runsChannelsMajor`, or
  /// `runsChannelsMajorGivenBatch`: a `DepthwiseConv2D` of channel multiplier 1, `MetaAconC`)
  /// and which holds two 1×1 convolutions or more (ShuffleNetV2's main branches) runs a batch
  /// x [N, C, H, W] (N > 1) channels-major: it copies x once into [1, C, N·H, W] (each channel's
  /// N planes one after the other), runs its layers on that, and reorders the result back to NCHW
  /// (backward likewise with the gradients). Its 1×1
  /// convolutions are then one GEMM over all N·H·W positions instead of one small GEMM per sample
  /// (or the five layout copies of the batched path), and its batch norms read each channel as
  /// one run. A container with one 1×1 convolution gains too little for its second copy of the
  /// input (measured on ShuffleNetV2's `branch_proj` and `conv_last`: the same step time, 9 MB
  /// more at peak). The results are those of the NCHW order up to the order of the sums over the
  /// batch (batch-norm statistics, parameter gradients). True by default; false runs every
  /// container in NCHW order. Set it before training, not while a step runs.
  nonisolated(unsafe) public static var allowsChannelsMajor = true

  /// A container of named layers.
  public init(_ layers: [(String, Module)]) {
    self.layers = layers
    // Fuse a Conv2D or BatchNorm2D and the ReLU after it when each of the two appears once in
    // this container (a layer used twice would need its own output twice).
    var fuse = [Bool](repeating: false, count: layers.count)
    for i in 0..<Swift.max(0, layers.count - 1)
    where canFuseReLU(after: layers[i].1) && layers[i + 1].1 is ReLU {
      let conv = layers[i].1, relu = layers[i + 1].1
      if layers.filter({ $0.1 === conv || $0.1 === relu }).count == 2, i == 0 || !fuse[i - 1] { fuse[i] = true }
    }
    fusesReLU = fuse
    channelsMajorCapable = layers.filter { ($0.1 as? Conv2D)?.runsChannelsMajor == true }.count >= 2
      && layers.allSatisfy { $0.1.runsChannelsMajor || $0.1.runsChannelsMajorGivenBatch }
    super.init()
    shareConvWorkspace()
  }

  /// A container of layers named `0`, `1`, ...
  public convenience init(_ layers: [Module]) {
    self.init(layers.enumerated().map { (String($0.offset), $0.element) })
  }

  public override var children: [(String, Module)] { layers }

  /// The layer with this name, if any.
  public subscript(name: String) -> Module? { layers.first { $0.0 == name }?.1 }

  public override var propagatesInputGradient: Bool {
    didSet { layers.first?.1.propagatesInputGradient = propagatesInputGradient }
  }

  public override func outputShape(for s: [Int]) throws -> [Int] {
    var shape = s
    for (name, l) in layers { shape = try namingShapeErrors(name) { try l.outputShape(for: shape) } }
    return shape
  }

  /// Runs the layers in order; a `Conv2D` or `BatchNorm2D` followed by a `ReLU` runs as one fused step. The
  /// result is the last layer's output (overwritten by the next call; debug builds name the
  /// layer, e.g. `Linear 'fc'`, when a stale one is read).
  ///
  /// Each layer's output comes from the network's pool of activation buffers and goes back to
  /// it as soon as the next layer has read it, unless the backward pass reads it (the next
  /// layer's `backwardReadsInput`, or its own layer's `backwardReadsOutput`). In inference mode
  /// (`withInferenceMode(_:)`) nothing is kept.
  public override func forward(_ x: Tensor) throws -> Tensor {
    try forward(x, mayOverwriteInput: false)
  }

  /// Forward that, with `mayOverwriteInput` (from a container that knows no later node reads x,
  /// and that x is its own value: `Graph`), reorders x in place for a channels-major pass instead
  /// of into a copy: x's storage then holds the channels-major batch, which backward reads
  /// (`backwardReadsInput` is true), and no second buffer of x's size is taken.
  func forward(_ x: Tensor, mayOverwriteInput: Bool) throws -> Tensor {
    let inference = activationArena != nil
    let arena = activationPoolForForward()
    arena.beginPass(self, keeping: x)
    defer { arena.endPass() }
    keptNoActivations = inference
    // Channels-major: h starts as x reordered into [1, C, N·H, W] (a copy, or x itself in place).
    var samples: Int?
    if channelsMajorCapable && Sequential.allowsChannelsMajor && x.shape.count == 4 && x.shape[0] > 1 {
      // A wrong shape fails here, named in NCHW terms, before any layer sees the reordered batch.
      _ = try outputShape(for: x.shape)
      samples = x.shape[0]
    }
    channelsMajorSamples = samples
    var h = x
    if let n = samples, mayOverwriteInput {
      reorderInPlace(x, samples: n, toChannelsMajor: true)
      h = x.reshaped(ChannelsMajor.shape(of: x.shape))
    } else if let n = samples {
      arena.managedOwner = ObjectIdentifier(self)
      let t = reuseOutput(&channelsMajorInput, shape: ChannelsMajor.shape(of: x.shape))
      reorder(x, into: t, samples: n, toChannelsMajor: true, kind: "channels-major.forward")
      h = t
    }
    // The layer that wrote h (nil: h is x, or this container's channels-major copy of it), and
    // the values that backward reads (x among them: a value that views one of these is never
    // given back).
    var producer: Module?, producerName = ""
    var kept = [x]
    // A depthwise convolution or Meta-ACON is told the batch size of a channels-major batch.
    func run(_ l: Module, _ input: Tensor) throws -> Tensor {
      if let n = samples, l.runsChannelsMajorGivenBatch { return try l.forward(input, channelsMajorSamples: n) }
      return try l.forward(input)
    }
    var i = 0
    while i < layers.count {
      let (name, l) = layers[i]
      arena.managedOwner = ObjectIdentifier(l)
      let y: Tensor
      if fusesReLU[i] {
        let input = h
        y = try namingShapeErrors(name) { try forwardFusingReLU(l, input) }
        i += 2
      } else if MemoryPasses.active != nil, MemoryPasses.counts(l) {
        // x read, y written
        let input = h
        y = try MemoryPasses.measure(l.typeName + ".forward", { try namingShapeErrors(name) { try run(l, input) } }, elements: { input.count + $0.count })
        i += 1
      } else {
        let input = h
        y = try namingShapeErrors(name) { try run(l, input) }
        i += 1
      }
      y.nameOutput(name, ownedBy: l)
      // h is read by no later layer (unless y views it; x belongs to the caller), and outside
      // inference mode by no backward either.
      if inference {
        arena.recycle(h, unlessSharedWith: [y, x])
      } else if producer != nil || h !== x {
        if producer?.backwardReadsOutput ?? false || l.backwardReadsInput {
          kept.append(h)
        } else {
          arena.recycle(h, unlessSharedWith: kept + [y])
        }
      }
      producer = l
      producerName = name
      h = y
    }
    if let n = samples {
      // The result back in NCHW order, as the output of the layer that wrote h (tagged as that
      // layer's: a stale read names it, as in NCHW order). Backward never reads it: in place when
      // nothing backward reads shares its storage (no second buffer), else a copy.
      let (lastName, last) = (producerName, producer!)
      let cm = h, shape = ChannelsMajor.batchShape(of: cm.shape, samples: n)
      // Backward reads x's storage when it holds the channels-major input.
      readsInput = !inference && mayOverwriteInput
      readsOutput = false
      if inference || !(last.backwardReadsOutput || kept.contains { $0.storage === cm.storage }) {
        reorderInPlace(cm, samples: n, toChannelsMajor: false)
        return cm.reshaped(shape)
      }
      arena.managedOwner = ObjectIdentifier(last)
      let out = last.reuseOutput(&channelsMajorOutput, shape: shape)
      out.nameOutput(lastName, ownedBy: last)
      reorder(cm, into: out, samples: n, toChannelsMajor: false, kind: "channels-major.forward")
      return out
    }
    // What the container's own flags report: its first reader of x, the writer of its output,
    // and any storage the output or a kept value shares with x or with each other.
    let first = layers.first?.1
    readsInput = first?.backwardReadsInput ?? false || kept.dropFirst().contains { $0.storage === x.storage }
      || (h !== x && h.storage === x.storage)
    readsOutput = producer?.backwardReadsOutput ?? readsInput || kept.dropFirst().contains { $0.storage === h.storage }
    return h
  }

  /// After a forward pass outside inference mode: whether its backward reads x (or a view of
  /// it), and whether it reads its output (or storage the output shares with a kept value).
  private var readsInput = true, readsOutput = true

  public override var backwardReadsInput: Bool { readsInput }
  public override var backwardReadsOutput: Bool { readsOutput }

  /// Whether the last `forward` ran in inference mode, so that no activations are left.
  private var keptNoActivations = false

  public override func backward(_ dy: Tensor) throws -> Tensor {
    if keptNoActivations {
      throw TensorError.invalidArgument("\(typeName).backward: the last forward ran in inference mode "
        + "(withInferenceMode), which keeps no activations; run forward outside it before backward")
    }
    // Each layer's input gradient comes from the pool and goes back once the layer before has
    // read it.
    let arena = gradientPoolForBackward()
    arena.beginPass(self, keeping: dy)
    defer { arena.endPass() }
    var g = dy
    if let n = channelsMajorSamples {
      arena.managedOwner = ObjectIdentifier(self)
      let t = reuseInputGradient(&channelsMajorGradient, shape: ChannelsMajor.shape(of: dy.shape))
      reorder(dy, into: t, samples: n, toChannelsMajor: true, kind: "channels-major.backward")
      g = t
    }
    for (i, (name, l)) in layers.enumerated().reversed() {
      // A ReLU that the layer before it ran fused: that layer's backward applies it. Its hook
      // still runs, in its place (a ReLU has no gradients of its own to wait for).
      if l is ReLU, i > 0, ranFused(i - 1) {
        if let hook = l.backwardHook, !layers[..<i].contains(where: { $0.1 === l }) { try hook() }
        continue
      }
      arena.managedOwner = ObjectIdentifier(l)
      // dy and x read, dx written (for the memory-bound passes' figure)
      let gIn = g, counted = MemoryPasses.active != nil && MemoryPasses.counts(l)
      // g is the input gradient a later layer of this container returned (not the caller's dy):
      // nothing reads it once this layer is done, so the layer may write over it.
      let own = g.storage !== dy.storage
      if let bn = l as? BatchNorm2D {
        // BatchNorm then writes its own input gradient over it (one activation-sized buffer
        // less per BatchNorm that is not the last layer; same values).
        g = try MemoryPasses.measure(bn.fusedReLU ? "BatchNorm2D+ReLU.backward" : bn.typeName + ".backward",
          { try namingShapeErrors(name) { try bn.backward(gIn, overwriting: own) } }, elements: { gIn.count + 2 * $0.count })
      } else if let conv = l as? Conv2D {
        // A fused ReLU's mask goes over g in place only then.
        g = try namingShapeErrors(name) { try conv.backward(gIn, overwriting: own) }
      } else if counted {
        g = try MemoryPasses.measure(l.typeName + ".backward", { try namingShapeErrors(name) { try l.backward(gIn) } }, elements: { gIn.count + 2 * $0.count })
      } else {
        g = try namingShapeErrors(name) { try l.backward(g) }
      }
      // gIn is read by no earlier layer (unless g is written over it; dy is the caller's).
      arena.recycle(gIn, unlessSharedWith: [g, dy])
      // The last backward of this layer in the pass (the first in order, for a layer listed twice).
      if let hook = l.backwardHook, !layers[..<i].contains(where: { $0.1 === l }) { try hook() }
    }
    if let n = channelsMajorSamples {
      arena.managedOwner = ObjectIdentifier(self)
      let cm = g, dx = reuseInputGradient(&channelsMajorInputGradient, shape: ChannelsMajor.batchShape(of: cm.shape, samples: n))
      reorder(cm, into: dx, samples: n, toChannelsMajor: false, kind: "channels-major.backward")
      arena.recycle(cm, unlessSharedWith: [dx, dy])
      return dx
    }
    return g
  }

  /// Whether layer i ran fused with the ReLU after it in the last forward pass.
  private func ranFused(_ i: Int) -> Bool {
    fusesReLU[i] && ranFusedWithReLU(layers[i].1)
  }

  /// Whether backward writes over the `dy` it is given: when the last layer is an in-place
  /// `ReLU` that runs on its own (or a `Sequential` whose backward does so). A ReLU run fused
  /// with the layer before leaves dy alone: that layer masks it into a buffer of its own.
  var overwritesIncomingGradient: Bool {
    // A channels-major pass runs backward on its own reordered copy of dy.
    guard let last = layers.last?.1, channelsMajorSamples == nil else { return false }
    if let r = last as? ReLU { return r.inPlace && !(layers.count >= 2 && fusesReLU[layers.count - 2]) }
    if let s = last as? Sequential { return s.overwritesIncomingGradient }
    return false
  }

  /// Copies `from` (N samples, NCHW or channels-major) into `to` in the other order, counted as a
  /// pass of `kind`.
  private func reorder(_ from: Tensor, into to: Tensor, samples n: Int, toChannelsMajor: Bool, kind: String) {
    let c = from.shape[1]
    MemoryPasses.measure(kind, {
      ChannelsMajor.reorder(from.data, into: to.data, samples: n, channels: c, plane: from.count / c / n,
        toChannelsMajor: toChannelsMajor)
    }, elements: { _ in 2 * from.count })
  }

  /// Reorders the planes of `t` (N samples, NCHW or channels-major) in place, counted as a
  /// channels-major pass.
  private func reorderInPlace(_ t: Tensor, samples n: Int, toChannelsMajor: Bool) {
    let c = t.shape[1], plane = t.count / c / n
    var cached = toChannelsMajor ? cyclesToMajor : cyclesFromMajor
    if !(cached?.matches(samples: n, channels: c, toChannelsMajor: toChannelsMajor) ?? false) {
      cached = PlaneCycles(samples: n, channels: c, toChannelsMajor: toChannelsMajor)
      if toChannelsMajor { cyclesToMajor = cached } else { cyclesFromMajor = cached }
    }
    let cycles = cached!
    if reorderPlanes.count < Threads.count * plane {
      reorderPlanes = [Float](repeating: 0, count: Threads.count * plane)
    }
    reorderPlanes.withUnsafeMutableBufferPointer { scratch in
      MemoryPasses.measure("channels-major.forward", {
        ChannelsMajor.reorderInPlace(t.data, plane: plane, cycles: cycles, scratch: scratch.baseAddress!)
      }, elements: { _ in 2 * t.count })
    }
  }
}

/// Runs `body`, adding the child's name to a shape error (`conv2 (Conv2D): expected ...`).
func namingShapeErrors<T>(_ name: String, _ body: () throws -> T) throws -> T {
  do {
    return try body()
  } catch let TensorError.shapeMismatch(layer, expected, got) where !layer.contains("(") && !name.isEmpty {
    throw TensorError.shapeMismatch(layer: "\(name) (\(layer))", expected: expected, got: got)
  }
}

extension Module {
  /// Gives every `Conv2D` in this module and its descendants the workspace of the first one, so
  /// that the network holds one scratch buffer (the largest any of its convolutions needs)
  /// instead of one per layer. Convolutions of one network run one after the other, so sharing
  /// changes no result. `Sequential` does this when it is built; call it on any other container.
  /// Not for modules whose convolutions run concurrently on different threads.
  public func shareConvWorkspace() {
    var shared: ConvWorkspace?
    visit { m in
      guard let conv = m as? Conv2D else { return }
      if let ws = shared { conv.workspace = ws } else { shared = conv.workspace }
    }
  }

  /// Sets the algorithm of every `Conv2D` in the tree (`.auto`, `.im2col`, `.winograd` or `.winograd4x4`).
  public func setConvolutionAlgorithm(_ algorithm: ConvAlgorithm) {
    visit { m in (m as? Conv2D)?.algorithm = algorithm }
  }
}

// MARK: - ReLU fusion (shared with Graph)

/// Whether `layer` can run fused with a `ReLU` after it: a `Conv2D` or a `BatchNorm2D`.
func canFuseReLU(after layer: Module) -> Bool { layer is Conv2D || layer is BatchNorm2D }

/// Forward of a `Conv2D` or `BatchNorm2D` (see `canFuseReLU(after:)`) with the ReLU after it applied
/// as the output is written; a batch norm's pass counts as `BatchNorm2D+ReLU.forward` (x read, y
/// written). Shapes as the layer's.
func forwardFusingReLU(_ layer: Module, _ x: Tensor) throws -> Tensor {
  guard let bn = layer as? BatchNorm2D else { return try (layer as! Conv2D).forward(x, fusingReLU: true) }
  return try MemoryPasses.measure("BatchNorm2D+ReLU.forward", { try bn.forward(x, fusingReLU: true) },
    elements: { x.count + $0.count })
}

/// Whether `layer`'s last forward pass applied a fused ReLU (false for layers that cannot fuse).
func ranFusedWithReLU(_ layer: Module) -> Bool {
  (layer as? BatchNorm2D)?.fusedReLU ?? (layer as? Conv2D)?.fusedReLU ?? false
}
