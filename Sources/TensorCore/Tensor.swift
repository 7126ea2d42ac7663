// Tensor: contiguous, row-major Float32 storage with a shape (NCHW for images).
//
// A tensor is a reference type: layers own their output and gradient tensors and overwrite
// them on the next call, as Caffe's blobs do. `reshaped(_:)` gives a view that shares storage.
// In debug builds a layer's output handed out by `forward` is retired by the layer's next
// `forward`, and reading a retired output traps (see `reuseOutput(_:shape:owner:)`).
// Large storages ask Linux for transparent huge pages (see `TensorStorage.hugePageRange`).
import Synchronization

#if os(Linux)
import Glibc
#endif

/// The memory behind one or more tensor views. Freed when the last view goes away.
public final class TensorStorage: @unchecked Sendable {
  /// The first element.
  public let pointer: UnsafeMutablePointer<Float>
  /// How many Floats the allocation holds.
  public let capacity: Int
  /// Whether an `ActivationArena` owns this storage (inference-mode activations): a module that
  /// leaves inference mode allocates a buffer of its own again instead of writing into it.
  public internal(set) var isPooled = false

  private static let allocations = Atomic<Int>(0)

  /// How many storages this process has allocated so far (every tensor allocation goes through
  /// here). Tests compare it before and after a training step to prove that a step allocates
  /// no tensor memory once the buffers exist.
  public static var allocationCount: Int { allocations.load(ordering: .relaxed) }

  /// Allocates `capacity` Floats, zero-filled, at a 64-byte (cache line) boundary: vector code
  /// (e.g. the ACON kernels' streaming stores) can then rely on aligned planes.
  ///
  /// On Linux, the whole 2 MiB pages inside a storage of at least `hugePageMinimumBytes` are
  /// advised as transparent huge pages (`madvise(MADV_HUGEPAGE)`) before the zero fill first
  /// touches them. Streaming kernels that walk several tensors at once (the ACON kernels read
  /// three and write two) then cross a page boundary every 2 MiB instead of every 4 KiB, where
  /// the cores' prefetchers stop and restart: the smooth maximum's forward + backward over
  /// 103 MB tensors takes a fifth to a quarter less CPU time (docs/acon-bench.md). Nothing is
  /// allocated beyond the storage itself (only its interior whole pages are advised), and the
  /// advice is a hint: where huge pages are off (`never`), or on other systems, nothing changes.
  public init(capacity: Int) {
    Self.allocations.add(1, ordering: .relaxed)
    self.capacity = capacity
    let bytes = Swift.max(capacity, 1) * 4
    let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
    #if os(Linux)
    if let r = Self.hugePageRange(start: UInt(bitPattern: raw), bytes: bytes) {
      _ = madvise(UnsafeMutableRawPointer(bitPattern: r.lowerBound), Int(r.upperBound - r.lowerBound), MADV_HUGEPAGE)
    }
    #endif
    pointer = raw.bindMemory(to: Float.self, capacity: Swift.max(capacity, 1))
    pointer.initialize(repeating: 0, count: Swift.max(capacity, 1))
  }

  /// The size of a transparent huge page on x86-64 and on AArch64 with 4 KiB base pages: 2 MiB.
  static let hugePageBytes = 1 << 21

  /// Storages of at least this many bytes (8 MiB) get the huge-page advice: at least three
  /// whole huge pages, so the 4 KiB-paged ends are at most 2/5 of it.
  static let hugePageMinimumBytes = 8 << 20

  /// The addresses `[lower, upper)` of the whole huge pages inside an allocation of `bytes`
  /// bytes at `start`, or nil when it is smaller than `hugePageMinimumBytes` (or holds no
  /// whole huge page). The range lies within the allocation, so advising it touches no
  /// neighbouring memory.
  static func hugePageRange(start: UInt, bytes: Int) -> Range<UInt>? {
    guard bytes >= hugePageMinimumBytes else { return nil }
    let (end, overflow) = start.addingReportingOverflow(UInt(bytes))
    guard !overflow else { return nil }
    return wholeHugePages(in: start..<end)
  }

  /// The addresses of the whole huge pages inside `r` (rounded inwards to `hugePageBytes`), or
  /// nil when it holds none.
  static func wholeHugePages(in r: Range<UInt>) -> Range<UInt>? {
    let page = UInt(hugePageBytes)
    let lower = (r.lowerBound + page - 1) / page * page, upper = r.upperBound / page * page
    return lower < upper ? lower..<upper : nil
  }

  deinit { UnsafeMutableRawPointer(pointer).deallocate() }
}

/// A contiguous Float32 tensor with a row-major shape. Images are `[N, C, H, W]`.
///
/// A layer's `forward` returns a tensor the layer owns and overwrites on its next `forward`
/// (no allocation per step). Keep a result across calls with `copy()`. In debug builds a result
/// read after its layer ran `forward` again traps, naming the layer (`isStale` tells without
/// trapping); release builds do no check at all.
public final class Tensor: @unchecked Sendable {
  /// The shape, outermost dimension first.
  public private(set) var shape: [Int]
  /// The number of elements: the product of `shape`.
  public private(set) var count: Int
  /// The storage this tensor views.
  public private(set) var storage: TensorStorage

  /// Where this view starts in `storage`, in elements.
  public private(set) var offset: Int = 0

  /// Debug builds only: who handed this tensor out as a layer output, and whether that layer
  /// has overwritten it since. Views made by `reshaped(_:)` share it. Always nil in release.
  @usableFromInline var outputTag: OutputTag?

  /// The first element, for kernels. `count` elements are valid.
  ///
  /// In debug builds, taking it from a layer output that the layer has overwritten since
  /// (`isStale`) traps with a message naming the layer. Kernels take it once per call, so the
  /// check costs one branch per call in debug and nothing in release.
  @inlinable public var data: UnsafeMutablePointer<Float> {
    #if DEBUG
    if let tag = outputTag, tag.isRetired { tag.trap() }
    #endif
    return storage.pointer + offset
  }

  /// Whether this is a layer's output that the layer has overwritten since it was returned (its
  /// `forward` ran again): reading it now gives the newer pass's values, so debug builds trap
  /// on `data`. Always false in release builds, which keep no record.
  public var isStale: Bool { outputTag?.isRetired ?? false }

  /// The message a read of this tensor traps with when it `isStale`; nil otherwise.
  public var staleReadMessage: String? {
    guard let tag = outputTag, tag.isRetired else { return nil }
    return tag.message
  }

  /// Debug builds: the owner's name for messages, e.g. `"conv1"`, when this tensor is the
  /// current output of `owner`; containers (`Sequential`, `Graph`) call this with their child's
  /// name. Does nothing in release builds or when another module handed the tensor out.
  public func nameOutput(_ name: String, ownedBy owner: AnyObject) {
    #if DEBUG
    if let tag = outputTag, tag.owner === owner, !tag.isRetired { tag.name = name }
    #endif
  }

  /// The message of the trap for reading a stale output of the layer `layer` (a type name such
  /// as `"Conv2D"`), named `name` by its container when known.
  public static func staleOutputMessage(layer: String, name: String?) -> String {
    let who = name.map { "\(layer) '\($0)'" } ?? layer
    return "\(who) output read after the layer ran forward again: it is overwritten by each forward; "
      + "call .copy() to keep it"
  }

  /// A zero-filled tensor of the given shape.
  /// - Precondition: every dimension is non-negative and the element count does not overflow;
  ///   use `Shape.elementCount(_:)` first on shapes that come from files.
  public init(zeros shape: [Int]) {
    let n = Shape.elementCountOrTrap(shape)
    self.shape = shape
    self.count = n
    self.storage = TensorStorage(capacity: n)
  }

  /// A tensor of the given shape filled with `values` (row-major).
  public convenience init(shape: [Int], values: [Float]) {
    self.init(zeros: shape)
    precondition(values.count == count, "Tensor(shape: \(shape)) needs \(count) values, got \(values.count)")
    values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: count) }
  }

  /// A tensor of the given shape with every element `value`.
  public convenience init(shape: [Int], repeating value: Float) {
    self.init(zeros: shape)
    data.update(repeating: value, count: count)
  }

  @usableFromInline init(shape: [Int], count: Int, storage: TensorStorage, offset: Int, outputTag: OutputTag? = nil) {
    self.shape = shape
    self.count = count
    self.storage = storage
    self.offset = offset
    self.outputTag = outputTag
  }

  /// Moves this tensor's contents into `storage` at `offset` and makes it a view there, so that
  /// many tensors can share one allocation (all gradients zeroed in one pass, say).
  public func rebind(to newStorage: TensorStorage, offset newOffset: Int) {
    precondition(newOffset >= 0 && newOffset + count <= newStorage.capacity, "rebind out of range")
    (newStorage.pointer + newOffset).update(from: data, count: count)
    storage = newStorage
    offset = newOffset
  }

  /// A view of the same storage with another shape of the same element count.
  public func reshaped(_ newShape: [Int]) -> Tensor {
    let n = Shape.elementCountOrTrap(newShape)
    precondition(n == count, "cannot reshape \(shape) to \(newShape)")
    return Tensor(shape: newShape, count: n, storage: storage, offset: offset, outputTag: outputTag)
  }

  /// Gives this tensor a new shape, reallocating only when the storage is too small.
  /// The contents are unspecified afterwards unless the element count is unchanged.
  public func resize(to newShape: [Int]) {
    if newShape == shape { return }
    let n = Shape.elementCountOrTrap(newShape)
    if offset + n > storage.capacity {
      storage = TensorStorage(capacity: n)
      offset = 0
    }
    shape = newShape
    count = n
  }

  /// Sets every element to zero.
  public func zero() { data.update(repeating: 0, count: count) }

  /// Copies the elements of `other`, which must have the same count.
  public func copy(from other: Tensor) {
    precondition(other.count == count, "copy: \(other.shape) into \(shape)")
    data.update(from: other.data, count: count)
  }

  /// The elements as an array (row-major).
  public var array: [Float] { Array(UnsafeBufferPointer(start: data, count: count)) }

  /// Element access by flat index.
  @inlinable public subscript(i: Int) -> Float {
    get { data[i] }
    set { data[i] = newValue }
  }

  /// An independent copy.
  public func clone() -> Tensor {
    let t = Tensor(zeros: shape)
    t.copy(from: self)
    return t
  }
}

/// Returns `existing` resized to `shape`, or a new tensor when there is none: the way layers
/// keep their output and gradient buffers from step to step without allocating.
@inlinable public func reuse(_ existing: inout Tensor?, shape: [Int]) -> Tensor {
  if let t = existing {
    t.resize(to: shape)
    return t
  }
  let t = Tensor(zeros: shape)
  existing = t
  return t
}

/// What a layer is, for the message of a stale-output trap: `Module` conforms.
public protocol OutputOwner: AnyObject {
  /// The type name shown in messages, e.g. `"Conv2D"`.
  var typeName: String { get }
}

/// Debug-build record of one output handed out by a layer's `forward`.
public final class OutputTag: @unchecked Sendable {
  /// The layer that owns the storage.
  public private(set) weak var owner: (any OutputOwner)?
  /// The owner's type name, kept for the message should the owner be gone.
  let ownerType: String
  /// The name a container gave the owner, if any.
  public internal(set) var name: String?
  /// Set when the owner's next `forward` overwrote the storage.
  public internal(set) var isRetired = false

  init(owner: any OutputOwner) {
    self.owner = owner
    ownerType = owner.typeName
  }

  /// `Tensor.staleOutputMessage` for this owner.
  var message: String { Tensor.staleOutputMessage(layer: owner?.typeName ?? ownerType, name: name) }

  /// Traps with `message`.
  @usableFromInline func trap() -> Never { preconditionFailure(message) }
}

/// `reuse(_:shape:)` for the output a layer's `forward` returns. Release builds: exactly
/// `reuse`. Debug builds: returns a new view of the same storage, tagged with `owner`, and
/// retires the view the previous call returned, so that reading that one (`data`, a subscript,
/// `array`, `copy()`) traps with `Tensor.staleOutputMessage` instead of silently giving this
/// pass's values. Only a small view object is allocated (in debug), never storage.
@inlinable public func reuseOutput(_ existing: inout Tensor?, shape: [Int], owner: any OutputOwner) -> Tensor {
  #if DEBUG
  return reuseOutputDebug(&existing, shape: shape, owner: owner)
  #else
  return reuse(&existing, shape: shape)
  #endif
}

@usableFromInline func reuseOutputDebug(_ existing: inout Tensor?, shape: [Int], owner: any OutputOwner) -> Tensor {
  guard let old = existing else {
    let t = Tensor(zeros: shape)
    t.outputTag = OutputTag(owner: owner)
    existing = t
    return t
  }
  // The caller may still hold `old` (and views of it): retire it, keep its shape as it was.
  old.outputTag?.isRetired = true
  let fresh = Tensor(shape: old.shape, count: old.count, storage: old.storage, offset: old.offset,
    outputTag: OutputTag(owner: owner))
  fresh.resize(to: shape)
  existing = fresh
  return fresh
}

/// Shape arithmetic that reports overflow instead of trapping.
public enum Shape {
  /// The product of the dimensions, or an error for a negative dimension or an overflow.
  public static func elementCount(_ shape: [Int], name: String = "tensor") throws -> Int {
    var n = 1
    for d in shape {
      guard d >= 0 else { throw TensorError.invalidShape(name: name, shape: shape, reason: "negative dimension") }
      let (p, o) = n.multipliedReportingOverflow(by: d)
      guard !o, p <= Int(Int32.max) * 16 else {
        throw TensorError.invalidShape(name: name, shape: shape, reason: "element count overflows")
      }
      n = p
    }
    return n
  }

  @usableFromInline static func elementCountOrTrap(_ shape: [Int]) -> Int {
    do { return try elementCount(shape) } catch { preconditionFailure("\(error)") }
  }

  /// `"[64, 3, 32, 32]"`-style text for messages and tables.
  public static func text(_ shape: [Int]) -> String {
    "[" + shape.map(String.init).joined(separator: ", ") + "]"
  }
}

/// Errors about tensors and layers. Each message names the layer or tensor and both shapes.
public enum TensorError: Error, CustomStringConvertible, Equatable {
  /// A layer got an input of the wrong shape.
  case shapeMismatch(layer: String, expected: String, got: [Int])
  /// A shape that can't be used: a negative dimension or an element count that overflows.
  case invalidShape(name: String, shape: [Int], reason: String)
  /// An argument outside its valid range.
  case invalidArgument(String)

  public var description: String {
    switch self {
    case let .shapeMismatch(layer, expected, got):
      return "\(layer): expected input of shape \(expected), got \(Shape.text(got))"
    case let .invalidShape(name, shape, reason):
      return "\(name): invalid shape \(Shape.text(shape)): \(reason)"
    case let .invalidArgument(message):
      return message
    }
  }
}

/// The sum of `count` contiguous Floats, in eight interleaved partial sums combined in a fixed
/// order: vectorisable, and the same bits on every call and thread count.
@inlinable public func contiguousSum(_ p: UnsafePointer<Float>, count: Int) -> Float {
  var acc = SIMD8<Float>()
  var i = 0
  while i + 8 <= count {
    acc += UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self)
    i += 8
  }
  var tail: Float = 0
  while i < count {
    tail += p[i]
    i += 1
  }
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}
