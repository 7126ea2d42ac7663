// Tensor: contiguous, row-major Float32 storage with a shape (NCHW for images).
//
// A tensor is a reference type: layers own their output and gradient tensors and overwrite
// them on the next call, as Caffe's blobs do. `reshaped(_:)` gives a view that shares storage.
import Synchronization

/// The memory behind one or more tensor views. Freed when the last view goes away.
public final class TensorStorage: @unchecked Sendable {
  /// The first element.
  public let pointer: UnsafeMutablePointer<Float>
  /// How many Floats the allocation holds.
  public let capacity: Int

  private static let allocations = Atomic<Int>(0)

  /// How many storages this process has allocated so far (every tensor allocation goes through
  /// here). Tests compare it before and after a training step to prove that a step allocates
  /// no tensor memory once the buffers exist.
  public static var allocationCount: Int { allocations.load(ordering: .relaxed) }

  /// Allocates `capacity` Floats, zero-filled, at a 64-byte (cache line) boundary: vector code
  /// (e.g. the ACON kernels' streaming stores) can then rely on aligned planes.
  public init(capacity: Int) {
    Self.allocations.add(1, ordering: .relaxed)
    self.capacity = capacity
    let raw = UnsafeMutableRawPointer.allocate(byteCount: Swift.max(capacity, 1) * 4, alignment: 64)
    pointer = raw.bindMemory(to: Float.self, capacity: Swift.max(capacity, 1))
    pointer.initialize(repeating: 0, count: Swift.max(capacity, 1))
  }

  deinit { UnsafeMutableRawPointer(pointer).deallocate() }
}

/// A contiguous Float32 tensor with a row-major shape. Images are `[N, C, H, W]`.
public final class Tensor: @unchecked Sendable {
  /// The shape, outermost dimension first.
  public private(set) var shape: [Int]
  /// The number of elements: the product of `shape`.
  public private(set) var count: Int
  /// The storage this tensor views.
  public private(set) var storage: TensorStorage

  /// Where this view starts in `storage`, in elements.
  public private(set) var offset: Int = 0

  /// The first element, for kernels. `count` elements are valid.
  @inlinable public var data: UnsafeMutablePointer<Float> { storage.pointer + offset }

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

  private init(shape: [Int], count: Int, storage: TensorStorage, offset: Int) {
    self.shape = shape
    self.count = count
    self.storage = storage
    self.offset = offset
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
    return Tensor(shape: newShape, count: n, storage: storage, offset: offset)
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
