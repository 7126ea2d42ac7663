// Module: the base class of every layer. A module owns its parameters, their gradients and
// the activations it caches for the backward pass; it knows its children by name, so that
// parameters get PyTorch's dotted state_dict names (`conv1.weight`, `acon1.bn1.running_mean`).
//
// Conventions: `forward` returns a tensor the module owns (overwritten by the next call; in
// debug builds reading it after the next call traps, see `reuseOutput(_:shape:)`);
// `backward(dy)` belongs to the most recent `forward`, writes the input gradient into a tensor
// from `reuseInputGradient` (the module's own, or the running container's pool's), and
// *accumulates* into parameter gradients. `zeroGrad()` clears them.
import TensorCore

/// A learnable tensor and its gradient, of the same shape.
public final class Parameter {
  /// The value.
  public let value: Tensor
  /// The gradient; backward passes accumulate into it.
  public let grad: Tensor
  /// Whether weight decay applies by default. As in the official ACON training code, only
  /// weights with more than one dimension decay: biases, BatchNorm and ACON's p1, p2, β do not.
  /// A weight of shape `[1, n]` (a linear layer with one output) is a matrix and decays; a
  /// per-channel tensor stored as `[1, C, 1, 1]` must pass `decays: false`.
  public var decays: Bool

  /// A parameter holding `value`, with a zero gradient. `decays` defaults to `rank > 1`.
  public init(_ value: Tensor, decays: Bool? = nil) {
    self.value = value
    self.grad = Tensor(zeros: value.shape)
    self.decays = decays ?? (value.shape.count > 1)
  }

  /// The shape of value and gradient.
  public var shape: [Int] { value.shape }
}

/// A non-learnable piece of module state, saved in checkpoints (BatchNorm's running statistics).
public enum Buffer {
  /// A Float32 tensor such as `running_mean`.
  case float(Tensor)
  /// A 64-bit integer scalar such as `num_batches_tracked`.
  case int64(Int64Box)
}

/// A mutable Int64 shared by reference.
public final class Int64Box {
  /// The value.
  public var value: Int64
  /// A box holding `value`.
  public init(_ value: Int64 = 0) { self.value = value }
}

/// Base class of layers and containers.
open class Module {
  /// Training mode (batch statistics, dropout on) or evaluation mode. Set with `train()`/`eval()`.
  public private(set) var isTraining = true
  /// The pool of activation buffers while in inference mode (`withInferenceMode(_:)`), else nil.
  public internal(set) var activationArena: ActivationArena?
  /// The pool of input-gradient buffers that containers (`Sequential`, `Graph`) hand to their
  /// children in `backward`: made by the outermost container's first `backward` and shared with
  /// every module under it. Nil until then.
  public internal(set) var gradientArena: ActivationArena?
  /// The pool of activation buffers that containers hand to their children in a forward pass
  /// outside inference mode: made by the outermost container's first such `forward` and shared
  /// with every module under it. A child's output goes back to it as soon as no later layer
  /// reads it and no `backward` needs it (see `backwardReadsInput`), so a training step holds
  /// only the activations its backward pass reads. Nil until then.
  public internal(set) var trainingArena: ActivationArena?
  /// Whether `backward` computes the input gradient. The first layer of a network can skip it;
  /// `backward` then returns a tensor whose contents are unspecified.
  public var propagatesInputGradient = true

  /// Called by the container that runs this module (`Sequential`, `Graph`) right after the
  /// module's last `backward` of a pass returns, when its parameter gradients (its children's
  /// included) are final for the pass. Data-parallel training starts all-reducing them here while
  /// the layers before it go back, as PyTorch's DDP does with its gradient buckets. Nil by default;
  /// a module run by a module of the user's own (not a container) is not called.
  public var backwardHook: (() throws -> Void)?

  /// A module in training mode that propagates its input gradient.
  public init() {}

  /// The type name shown in summaries and error messages, e.g. `"Conv2D"`.
  open var typeName: String { String(describing: type(of: self)) }

  /// The output shape for an input shape, or a `TensorError.shapeMismatch` naming this layer.
  open func outputShape(for input: [Int]) throws -> [Int] { input }

  /// Computes the output. The result is owned by the module and overwritten by the next call:
  /// keep it with `copy()`. Debug builds catch the mistake: reading a result after the module
  /// ran `forward` again traps with "Conv2D 'conv1' output read after the layer ran forward
  /// again: …" (`Tensor.isStale` tells without trapping). Release builds check nothing.
  /// Subclasses get their output buffer from `reuseOutput(_:shape:)`.
  open func forward(_ x: Tensor) throws -> Tensor {
    preconditionFailure("\(typeName) does not override forward(_:)")
  }

  /// Back-propagates `dy` (the gradient of the loss with respect to the last output) through
  /// the last `forward`: accumulates parameter gradients and returns the input gradient.
  open func backward(_ dy: Tensor) throws -> Tensor {
    preconditionFailure("\(typeName) does not override backward(_:)")
  }

  /// Whether `backward` reads the values of the input of the last `forward` (its shape aside).
  /// A container gives a child's input back to its pool once every layer that reads it has run
  /// forward, unless this is true for a layer that reads it, or `backwardReadsOutput` for the
  /// layer that wrote it. True by default, which is always safe; a layer that overrides it with
  /// `false` promises that its backward reads no element of that tensor.
  open var backwardReadsInput: Bool { true }

  /// Whether `backward` reads the values of the output of the last `forward` (as ReLU's mask
  /// does). True by default; see `backwardReadsInput`.
  open var backwardReadsOutput: Bool { true }

  /// Whether this module computes the same result on a batch stored channels-major: x
  /// [N, C, H, W] given as the one-sample tensor [1, C, N·H, W] that holds each channel's N
  /// planes one after the other, the result reordered likewise. True for layers whose output at a
  /// position depends only on that position's channels and on per-channel statistics over the
  /// whole batch: elementwise and per-channel activations, `BatchNorm2D` (its statistics run over
  /// N·H·W values either way), 1×1 convolutions at stride 1 without padding. `Sequential` runs a
  /// container of such layers (and those that `runsChannelsMajorGivenBatch`) on one
  /// channels-major copy of its input (see `Sequential.allowsChannelsMajor`). False by default.
  open var runsChannelsMajor: Bool { false }

  /// Whether this module computes the same result on a channels-major batch (see
  /// `runsChannelsMajor`) when it is told the batch size, through
  /// `forward(_:channelsMajorSamples:)`: a layer whose work keeps the samples apart, such as a
  /// depthwise convolution (its window must not cross from one sample's plane into the next) or
  /// Meta-ACON (one β per sample). False by default.
  open var runsChannelsMajorGivenBatch: Bool { false }

  /// Forward on a channels-major batch of `n` samples: x `[1, C, N·H, W]` holding each channel's
  /// N planes one after the other, the result `[1, C', N·H', W']` likewise; `backward` then takes
  /// and returns gradients in that layout. `Sequential` calls it on the layers whose
  /// `runsChannelsMajorGivenBatch` is true. The default runs `forward(_:)`, which is right for
  /// a layer that `runsChannelsMajor`.
  open func forward(_ x: Tensor, channelsMajorSamples n: Int) throws -> Tensor { try forward(x) }

  /// This module's own parameters (not its children's), in registration order.
  open var localParameters: [(String, Parameter)] { [] }
  /// This module's own buffers (not its children's).
  open var localBuffers: [(String, Buffer)] { [] }
  /// Named submodules.
  open var children: [(String, Module)] { [] }

  /// Called when the mode changes; containers forward it to their children.
  open func setMode(training: Bool) { isTraining = training }
}

extension Module: OutputOwner {}

extension Module {
  /// The buffer `forward` writes its result into and returns: `reuse(&output, shape:)` (no
  /// allocation after the first call) that, in debug builds, also makes results returned by
  /// earlier calls stale, so that reading one traps with a message naming this module.
  /// Use `reuse(_:shape:)` for everything else a module owns (gradients, caches, scratch).
  ///
  /// The output of a child that a container is running comes from the container's pool of
  /// activation buffers instead (inference mode's, `withInferenceMode(_:)`, or the training
  /// pool, `trainingArena`).
  public func reuseOutput(_ output: inout Tensor?, shape: [Int]) -> Tensor {
    if let arena = activationArena ?? trainingArena, arena.manages(self) {
      return arena.output(&output, shape: shape, owner: self)
    }
    // Run on its own after a container ran it: the pooled buffer is not this module's to overwrite.
    if let o = output, o.storage.isPooled { output = nil }
    return TensorCore.reuseOutput(&output, shape: shape, owner: self)
  }

  /// The buffer `backward` writes the input gradient into and returns (use it in place of
  /// `reuse(&inputGrad, shape:)`). When a container runs this module's `backward`, the buffer
  /// comes from the container's pool of gradient buffers, which takes it back once the layer
  /// before has read it: a network then holds a few input gradients at a time instead of one per
  /// layer, as PyTorch frees them. Otherwise (the module run on its own) it is the module's own,
  /// reused from call to call. Either way the returned gradient is valid until the caller's next
  /// `backward`; the contents on return are unspecified (write every element).
  public func reuseInputGradient(_ grad: inout Tensor?, shape: [Int]) -> Tensor {
    if let arena = gradientArena, arena.manages(self) {
      // Not kept in `grad`: the pool may drop the storage later (then nothing holds it), and the
      // previous gradient may still be the pass's dy (a layer listed twice), so it is not retired.
      grad = nil
      var handedOut: Tensor?
      return arena.output(&handedOut, shape: shape, owner: self)
    }
    // The pool's buffer is not this module's to overwrite outside a container's pass.
    if let g = grad, g.storage.isPooled { grad = nil }
    return reuse(&grad, shape: shape)
  }

  /// For a custom module that runs a container it does not list among its `children` (to list
  /// the parameters in another order, as ResNet's `BasicBlock` does): call it at the start of
  /// `forward` and `backward`, so that `inner` and every module under it take their buffers from
  /// this module's pools (activations, backward's input gradients) as a listed child would.
  /// Three comparisons when nothing changed.
  public func sharePools(with inner: Module) {
    if inner.activationArena !== activationArena {
      let arena = activationArena
      inner.visit { $0.activationArena = arena }
    }
    if let arena = gradientArena, inner.gradientArena !== arena { inner.visit { $0.gradientArena = arena } }
    if let arena = trainingArena, inner.trainingArena !== arena { inner.visit { $0.trainingArena = arena } }
  }

  /// Containers: the activation pool for a `forward`: inference mode's, or the training pool,
  /// made and given to every module in this subtree when there is none yet (this container is
  /// the outermost one).
  func activationPoolForForward() -> ActivationArena {
    if let arena = activationArena ?? trainingArena { return arena }
    let arena = ActivationArena()
    visit { $0.trainingArena = arena }
    return arena
  }

  /// Containers: the gradient pool for a `backward`, made and given to every module in this
  /// subtree when there is none yet (this container is the outermost one).
  func gradientPoolForBackward() -> ActivationArena {
    if let arena = gradientArena { return arena }
    let arena = ActivationArena()
    visit { $0.gradientArena = arena }
    return arena
  }

  /// Runs `body` in inference mode, as PyTorch's `torch.inference_mode()`: the forward passes of
  /// `Sequential` and `Graph` containers in this module keep no activations for a backward pass.
  /// Each child's output goes back to a shared pool as soon as no later layer reads it, so a
  /// pass holds a few activations at a time (a chain: about the two largest) instead of one per
  /// layer, and allocates nothing once the pool has grown. Results are the same bits as outside.
  ///
  /// Inside, a container's output is valid until its next `forward` (as always); its `backward`
  /// throws, since the activations are gone. Combine with `eval()` for BatchNorm's running
  /// statistics and no dropout, as `evaluate(_:on:normalization:batchSize:topK:)` does. On
  /// leaving, the layers take their outputs from the training pool again (or, run on their own,
  /// from buffers of their own).
  /// Nested calls share the outer pool.
  public func withInferenceMode<T>(_ body: () throws -> T) rethrows -> T {
    if activationArena != nil { return try body() }
    let arena = ActivationArena()
    visit { $0.activationArena = arena }
    defer { visit { $0.activationArena = nil } }
    return try body()
  }

  /// Whether this module is inside `withInferenceMode(_:)`.
  public var isInInferenceMode: Bool { activationArena != nil }

  /// Switches this module and all submodules to training mode.
  public func train() { visit { $0.setMode(training: true) } }
  /// Switches this module and all submodules to evaluation mode.
  public func eval() { visit { $0.setMode(training: false) } }

  /// Calls `body` on this module and every descendant, parents first.
  public func visit(_ body: (Module) -> Void) {
    body(self)
    for (_, c) in children { c.visit(body) }
  }

  /// Every parameter with its dotted name, own parameters first, then children's (PyTorch order).
  public func namedParameters(prefix: String = "") -> [(String, Parameter)] {
    var out = localParameters.map { (prefix + $0.0, $0.1) }
    for (name, c) in children { out += c.namedParameters(prefix: prefix + name + ".") }
    return out
  }

  /// Every buffer with its dotted name.
  public func namedBuffers(prefix: String = "") -> [(String, Buffer)] {
    var out = localBuffers.map { (prefix + $0.0, $0.1) }
    for (name, c) in children { out += c.namedBuffers(prefix: prefix + name + ".") }
    return out
  }

  /// The names of PyTorch's `state_dict()` in its order: module by module, parents first and
  /// children in registration order, each module's parameters and then its buffers
  /// (`conv1.weight`, `conv1.bias`, `bn1.weight`, `bn1.bias`, `bn1.running_mean`, …).
  public func stateDictNames(prefix: String = "") -> [String] {
    var out = localParameters.map { prefix + $0.0 } + localBuffers.map { prefix + $0.0 }
    for (name, c) in children { out += c.stateDictNames(prefix: prefix + name + ".") }
    return out
  }

  /// The number of learnable scalars.
  public var parameterCount: Int { namedParameters().reduce(0) { $0 + $1.1.value.count } }

  /// Sets every parameter gradient to zero. After `packGradients()` this is one memset.
  public func zeroGrad() {
    let params = namedParameters()
    if let first = params.first?.1.grad.storage, params.allSatisfy({ $0.1.grad.storage === first }) {
      first.pointer.update(repeating: 0, count: first.capacity)
      return
    }
    for (_, p) in params { p.grad.zero() }
  }

  /// Moves every parameter gradient into one contiguous allocation, in `namedParameters()`
  /// order, so that zeroing, clipping and all-reducing gradients are single passes.
  /// Returns that storage.
  @discardableResult
  public func packGradients() -> TensorStorage {
    let params = namedParameters()
    let total = params.reduce(0) { $0 + $1.1.grad.count }
    let storage = TensorStorage(capacity: total)
    var offset = 0
    for (_, p) in params {
      p.grad.rebind(to: storage, offset: offset)
      offset += p.grad.count
    }
    return storage
  }
}

/// Throws a shape error naming `layer` unless `shape` has `rank` dimensions.
@inlinable public func requireRank(_ shape: [Int], _ rank: Int, layer: String, expected: String) throws {
  if shape.count != rank { throw TensorError.shapeMismatch(layer: layer, expected: expected, got: shape) }
}

/// Checks that `shape` is `[N, C, H, W]` or `[N, C]` (H = W = 1) with C = `channels`, the inputs
/// of per-channel layers (BatchNorm, ACON), and returns N and H·W; otherwise a shape error
/// naming `layer`.
public func channelLayout(_ shape: [Int], channels: Int, layer: String) throws -> (n: Int, hw: Int) {
  guard shape.count == 4 || shape.count == 2, shape[1] == channels else {
    throw TensorError.shapeMismatch(layer: layer, expected: "[N, \(channels), H, W] or [N, \(channels)]", got: shape)
  }
  return (shape[0], shape.count == 4 ? shape[2] * shape[3] : 1)
}

/// The error of a `backward(dy)` whose `dy` does not fit the last forward pass: a shape error
/// naming `layer` and the `expected` gradient shape, or, when there was no forward pass yet
/// (`expected` is nil), "`layer`: backward called before forward".
public func backwardError(layer: String, expected: String?, got: [Int]) -> TensorError {
  guard let expected else { return .invalidArgument("\(layer): backward called before forward") }
  return .shapeMismatch(layer: layer, expected: expected, got: got)
}

extension Tensor {
  /// An independent copy (`clone()`): what to keep of a layer's output or a loader's batch,
  /// which the next `forward` (or the next batch) overwrites. The copy is never stale.
  public func copy() -> Tensor { clone() }
}
