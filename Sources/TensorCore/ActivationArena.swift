// ActivationArena: a pool of buffers that a container hands to its children for one pass and
// takes back as soon as nothing later reads them. Three uses: inference mode's forward pass (each
// child's output goes back once the next layer has read it, so a pass holds a few activations
// instead of one per layer), the training forward pass (an output goes back once the next layer
// has read it if no backward reads it either), and every training backward pass (each child's
// input gradient goes back once the layer before it has gone back, so a network holds a few
// gradients instead of one per layer). Once the pool has grown to the network's widest point it
// allocates nothing.

/// A pool of reusable tensor storage for the buffers of one pass that no later pass reads:
/// forward outputs in inference mode, training outputs that backward does not read, input
/// gradients in backward.
///
/// Modules use it through every container's `forward` and `backward`; a
/// custom container can do what `Sequential` does: `beginPass(self)`/`endPass()` around its pass,
/// `managedOwner = ObjectIdentifier(child)` before each child runs, and
/// `recycle(_:unlessSharedWith:)` when a child's result is no longer read.
/// Storages handed out during an outermost pass (a container's `forward` or `backward` that no
/// other container's pass encloses) stay in use until that container's next outermost pass of
/// the pool begins: then they are free again and, in debug builds, the tensors handed out become
/// stale. So a result is valid until its container's next pass, as any layer's output, also
/// when a custom module runs two containers one after the other. Not thread-safe: one pass at a
/// time.
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
  /// The module whose next result comes from the pool: set by the running container just before
  /// it calls that child's `forward` (or `backward`).
  public var managedOwner: ObjectIdentifier?

  /// An empty pool.
  public init() {}

  /// Float32 elements held by the pool, free or in use: the activation memory of inference.
  public var capacity: Int { free.reduce(0) { $0 + $1.capacity } + inUse.reduce(0) { $0 + $1.storage.capacity } }
  /// How many storages the pool holds.
  public var storageCount: Int { free.count + inUse.count }
  /// How many buffers the running outermost pass (or the last one) has asked for: compare it
  /// with `storageCount` to see how many of them shared storage.
  public var requestCount: Int { requests }

  /// `managedOwner` as each running pass found it, restored when the pass ends.
  private var enclosingOwners: [ObjectIdentifier?] = []
  /// The storage each request of the last outermost pass of each container got, in request
  /// order, and the running pass's request count: a pass that makes the same requests and gives
  /// the same buffers back as its predecessor gets the same storages (none allocated, and each
  /// layer's buffer where it was).
  /// (Identifiers only: a storage the pool dropped is freed; should its address come back, the
  /// capacity check and the free list keep the pick valid.)
  private var plans: [ObjectIdentifier: [ObjectIdentifier]] = [:]
  private var requests = 0

  /// Marks the start of `container`'s pass. An outermost pass frees every storage that the same
  /// container's previous outermost pass handed out (its results are overwritten from now on,
  /// as any layer's output), except the storage of `input`, the tensor the pass starts from: a
  /// container's last result fed back into it stays intact (and, in debug builds, readable)
  /// until the pass after. `endPass()` restores `managedOwner` as it is now.
  public func beginPass(_ container: AnyObject, keeping input: Tensor? = nil) {
    enclosingOwners.append(managedOwner)
    if depth == 0 {
      let id = ObjectIdentifier(container)
      outermost = id
      let keep = input?.storage, keepTag = input?.outputTag
      free += inUse.filter { $0.pass == id && $0.storage !== keep }.map(\.storage)
      inUse.removeAll { $0.pass == id && $0.storage !== keep }
      for h in handedOut where h.pass == id && h.tag !== keepTag { h.tag.isRetired = true }
      handedOut.removeAll { $0.pass == id && $0.tag !== keepTag }
      requests = 0
    }
    depth += 1
  }

  /// Marks the end of a container's pass (also when it throws), and gives
  /// `managedOwner` back its value from before the pass (the enclosing container's child).
  public func endPass() {
    depth -= 1
    managedOwner = enclosingOwners.removeLast()
  }

  /// Whether the result of `owner`'s running `forward` (or `backward`) comes from the pool.
  public func manages(_ owner: AnyObject) -> Bool { depth > 0 && managedOwner == ObjectIdentifier(owner) }

  /// An output tensor of `shape` on pooled storage (the best fitting free storage, or a new one),
  /// stored into `existing` in place of the owner's previous buffer.
  public func output(_ existing: inout Tensor?, shape: [Int], owner: any OutputOwner) -> Tensor {
    let n = Shape.elementCountOrTrap(shape)
    let request = requests
    requests += 1
    // The storage this request got in the last pass, if it is free and large enough; else the
    // smallest free storage that holds n elements; else the largest, grown.
    let pass = outermost!
    var pick: Int?
    if let plan = plans[pass], request < plan.count {
      pick = free.firstIndex { ObjectIdentifier($0) == plan[request] && $0.capacity >= n }
    }
    if pick == nil {
      for (i, s) in free.enumerated() where s.capacity >= n {
        if pick == nil || s.capacity < free[pick!].capacity { pick = i }
      }
    }
    let storage: TensorStorage
    if let i = pick {
      storage = free.remove(at: i)
    } else {
      storage = TensorStorage(capacity: n)
      storage.isPooled = true
      if let largest = free.indices.max(by: { free[$0].capacity < free[$1].capacity }) {
        // The new storage takes the dropped one's place in the plans: it is larger, and the
        // dropped one's uses all ended before this one's begin.
        let old = ObjectIdentifier(free.remove(at: largest)), new = ObjectIdentifier(storage)
        for k in Array(plans.keys) { plans[k] = plans[k]!.map { $0 == old ? new : $0 } }
      }
    }
    if request < plans[pass, default: []].count {
      plans[pass]![request] = ObjectIdentifier(storage)
    } else {
      plans[pass, default: []].append(ObjectIdentifier(storage))
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
