// ActivationArena: the pool of activation buffers behind inference mode. A container
// (`Sequential`, `Graph`) running in inference mode takes its children's outputs from the pool
// and gives each back as soon as no later layer reads it, so that a forward pass holds a few
// activations at a time instead of one per layer, and still allocates nothing once the pool has
// grown to the network's widest point.

/// A pool of reusable tensor storage for forward passes that keep no activations for backward.
///
/// Modules use it through `Module.withInferenceMode(_:)`; a custom container can do what
/// `Sequential` does: `beginForward(self)`/`endForward()` around its pass, `managedOwner =
/// ObjectIdentifier(child)` before each child's forward, and `recycle(_:unlessSharedWith:)` when a
/// child's output is no longer read.
/// Storages handed out during an outermost pass (a container's `forward` that no other
/// container's pass encloses) stay in use until that container's next outermost pass begins:
/// then they are free again and, in debug builds, the tensors handed out become stale. So a
/// result is valid until its container's next `forward`, as any layer's output, also when a
/// custom module runs two containers one after the other. Not thread-safe: one pass at a time.
public final class ActivationArena {
  /// Storage free for the taking, and storage handed out, with the container whose outermost
  /// pass took it.
  private var free: [TensorStorage] = []
  private var inUse: [(storage: TensorStorage, pass: ObjectIdentifier)] = []
  /// Debug builds: the tags of the outputs handed out, retired when their pass's container
  /// begins its next outermost pass.
  private var handedOut: [(tag: OutputTag, pass: ObjectIdentifier)] = []
  /// The container running the outermost pass.
  private var outermost: ObjectIdentifier?
  /// How many container passes are running (nested containers count once each).
  public private(set) var depth = 0
  /// The module whose next output comes from the pool: set by the running container just before
  /// it calls that child's `forward`.
  public var managedOwner: ObjectIdentifier?

  /// An empty pool.
  public init() {}

  /// Float32 elements held by the pool, free or in use: the activation memory of inference.
  public var capacity: Int { free.reduce(0) { $0 + $1.capacity } + inUse.reduce(0) { $0 + $1.storage.capacity } }
  /// How many storages the pool holds.
  public var storageCount: Int { free.count + inUse.count }

  /// `managedOwner` as each running pass found it, restored when the pass ends.
  private var enclosingOwners: [ObjectIdentifier?] = []

  /// Marks the start of `container`'s forward pass. An outermost pass frees every storage that
  /// the same container's previous outermost pass handed out (its results are overwritten from
  /// now on, as any layer's output). `endForward()` restores `managedOwner` as it is now.
  public func beginForward(_ container: AnyObject) {
    enclosingOwners.append(managedOwner)
    if depth == 0 {
      let id = ObjectIdentifier(container)
      outermost = id
      free += inUse.filter { $0.pass == id }.map(\.storage)
      inUse.removeAll { $0.pass == id }
      for h in handedOut where h.pass == id { h.tag.isRetired = true }
      handedOut.removeAll { $0.pass == id }
    }
    depth += 1
  }

  /// Marks the end of a container's forward pass (also when it throws), and gives
  /// `managedOwner` back its value from before the pass (the enclosing container's child).
  public func endForward() {
    depth -= 1
    managedOwner = enclosingOwners.removeLast()
  }

  /// Whether the output of `owner`'s running `forward` comes from the pool.
  public func manages(_ owner: AnyObject) -> Bool { depth > 0 && managedOwner == ObjectIdentifier(owner) }

  /// An output tensor of `shape` on pooled storage (the best fitting free storage, or a new one),
  /// stored into `existing` in place of the owner's previous buffer.
  public func output(_ existing: inout Tensor?, shape: [Int], owner: any OutputOwner) -> Tensor {
    let n = Shape.elementCountOrTrap(shape)
    // The smallest free storage that holds n elements; else the largest, grown.
    var pick: Int?
    for (i, s) in free.enumerated() where s.capacity >= n {
      if pick == nil || s.capacity < free[pick!].capacity { pick = i }
    }
    let storage: TensorStorage
    if let i = pick {
      storage = free.remove(at: i)
    } else {
      if let largest = free.indices.max(by: { free[$0].capacity < free[$1].capacity }) { free.remove(at: largest) }
      storage = TensorStorage(capacity: n)
      storage.isPooled = true
    }
    inUse.append((storage, outermost!))
    #if DEBUG
    existing?.outputTag?.isRetired = true
    let tag = OutputTag(owner: owner)
    handedOut.append((tag, outermost!))
    #else
    let tag: OutputTag? = nil
    #endif
    let t = Tensor(shape: shape, count: n, storage: storage, offset: 0, outputTag: tag)
    existing = t
    return t
  }

  /// Gives `t`'s storage back to the pool once no later layer reads it, unless one of `live`
  /// (the values still to be read) views the same storage. Tensors not from this pool are left
  /// alone (the container's input, a layer's own buffer). Debug builds retire `t`, so that a
  /// later read of it traps.
  public func recycle(_ t: Tensor, unlessSharedWith live: [Tensor]) {
    guard t.storage.isPooled, !live.contains(where: { $0.storage === t.storage }),
      let i = inUse.firstIndex(where: { $0.storage === t.storage })
    else { return }
    free.append(inUse.remove(at: i).storage)
    #if DEBUG
    t.outputTag?.isRetired = true
    #endif
  }
}
