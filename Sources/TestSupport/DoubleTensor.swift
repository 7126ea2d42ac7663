// DoubleTensor: a plain shape + [Double] pair, the currency of the naive references in
// Reference.swift. Row-major, NCHW for images, exactly like TensorCore's Tensor, but in Double
// precision and with value semantics, so references can be written as nested loops by definition.
import TensorCore

/// A row-major Double-precision array with a shape, for reference computations.
public struct DoubleTensor: Equatable, Sendable {
  /// The shape, outermost dimension first.
  public var shape: [Int]
  /// The elements, row-major; `values.count` equals the product of `shape`.
  public var values: [Double]

  /// A tensor of the given shape and values.
  /// - Precondition: `values.count` is the product of `shape`.
  public init(shape: [Int], values: [Double]) {
    precondition(values.count == shape.reduce(1, *),
      "DoubleTensor: shape \(shape) needs \(shape.reduce(1, *)) values, got \(values.count)")
    self.shape = shape
    self.values = values
  }

  /// A zero-filled tensor.
  public init(zeros shape: [Int]) {
    self.init(shape: shape, values: [Double](repeating: 0, count: shape.reduce(1, *)))
  }

  /// The exact Double image of a Float tensor (every Float is representable).
  public init(_ t: Tensor) {
    self.init(shape: t.shape, values: t.array.map(Double.init))
  }

  /// The number of elements.
  public var count: Int { values.count }

  /// Element access by flat index.
  public subscript(i: Int) -> Double {
    get { values[i] }
    set { values[i] = newValue }
  }

  /// The elements rounded to Float, as a TensorCore tensor of the same shape.
  public var tensor: Tensor { Tensor(shape: shape, values: values.map(Float.init)) }

  /// The same values under another shape of equal element count.
  public func reshaped(_ newShape: [Int]) -> DoubleTensor {
    DoubleTensor(shape: newShape, values: values)
  }
}

extension Tensor {
  /// The elements widened to Double.
  public var doubles: [Double] { array.map(Double.init) }
}
