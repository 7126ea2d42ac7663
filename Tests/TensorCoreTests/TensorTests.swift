// TensorTests: shapes and storage. Overflowing or negative shapes are rejected with an error,
// views share storage, and resize/reuse keep allocations when they can.
import TensorCore
import TestSupport
import XCTest

final class TensorTests: XCTestCase {
  func testElementCountOfOrdinaryShapes() throws {
    XCTAssertEqual(try Shape.elementCount([2, 3, 4]), 24)
    XCTAssertEqual(try Shape.elementCount([]), 1)
    XCTAssertEqual(try Shape.elementCount([0, 5]), 0)
    XCTAssertEqual(try Shape.elementCount([64, 3, 32, 32]), 196_608)
  }

  func testOverflowingShapeIsRejectedWithAnError() {
    XCTAssertThrowsError(try Shape.elementCount([Int.max, 2], name: "big")) { error in
      guard case let TensorError.invalidShape(name, shape, reason) = error else {
        return XCTFail("unexpected error \(error)")
      }
      XCTAssertEqual(name, "big")
      XCTAssertEqual(shape, [Int.max, 2])
      XCTAssertTrue(reason.contains("overflow"), reason)
    }
    // Does not overflow Int, but is far beyond any allocation we allow.
    XCTAssertThrowsError(try Shape.elementCount([1 << 20, 1 << 20]))
    XCTAssertThrowsError(try Shape.elementCount([1 << 32, 1 << 32, 4]))
  }

  func testNegativeDimensionIsRejected() {
    XCTAssertThrowsError(try Shape.elementCount([3, -1])) { error in
      XCTAssertTrue("\(error)".contains("negative"), "\(error)")
    }
  }

  func testInitialisers() {
    let z = Tensor(zeros: [2, 3])
    XCTAssertEqual(z.shape, [2, 3])
    XCTAssertEqual(z.count, 6)
    XCTAssertEqual(z.array, [Float](repeating: 0, count: 6))
    let v = Tensor(shape: [3], values: [1, 2, 3])
    XCTAssertEqual(v.array, [1, 2, 3])
    XCTAssertEqual(v[1], 2)
    let r = Tensor(shape: [2, 2], repeating: 7)
    XCTAssertEqual(r.array, [7, 7, 7, 7])
    let empty = Tensor(zeros: [0, 4])
    XCTAssertEqual(empty.count, 0)
    XCTAssertEqual(empty.array, [])
    XCTAssertEqual(Tensor(shape: [3, 0], values: []).count, 0)
  }

  func testReshapedViewSharesStorage() {
    let t = Tensor(shape: [2, 3], values: [0, 1, 2, 3, 4, 5])
    let v = t.reshaped([3, 2])
    XCTAssertEqual(v.shape, [3, 2])
    XCTAssertTrue(v.storage === t.storage)
    XCTAssertEqual(v.data, t.data)
    v[4] = 40
    XCTAssertEqual(t[4], 40, "a write through the view is seen by the original")
    t[0] = -1
    XCTAssertEqual(v[0], -1, "and the other way round")
    XCTAssertEqual(t.shape, [2, 3], "the original keeps its shape")
  }

  func testRebindMovesContentsIntoSharedStorage() {
    let a = Tensor(shape: [2], values: [1, 2]), b = Tensor(shape: [3], values: [3, 4, 5])
    let s = TensorStorage(capacity: 5)
    a.rebind(to: s, offset: 0)
    b.rebind(to: s, offset: 2)
    XCTAssertEqual(a.array, [1, 2])
    XCTAssertEqual(b.array, [3, 4, 5])
    XCTAssertEqual(Array(UnsafeBufferPointer(start: s.pointer, count: 5)), [1, 2, 3, 4, 5])
    b.zero()
    XCTAssertEqual(a.array, [1, 2], "zeroing one view leaves its neighbour alone")
    // A reshaped view of a rebound tensor keeps the offset.
    let bv = b.reshaped([3, 1])
    bv[0] = 9
    XCTAssertEqual(s.pointer[2], 9)
  }

  func testResizeReusesStorageWhenItFits() {
    let t = Tensor(shape: [4, 4], repeating: 1)
    let original = t.storage
    t.resize(to: [2, 3])
    XCTAssertEqual(t.shape, [2, 3])
    XCTAssertEqual(t.count, 6)
    XCTAssertTrue(t.storage === original, "shrinking keeps the allocation")
    t.resize(to: [4, 4])
    XCTAssertTrue(t.storage === original, "growing back within capacity keeps it too")
    t.resize(to: [5, 5])
    XCTAssertFalse(t.storage === original, "growing past the capacity reallocates")
    XCTAssertGreaterThanOrEqual(t.storage.capacity, 25)
    XCTAssertEqual(t.count, 25)
  }

  func testResizeToTheSameShapeKeepsContents() {
    let t = Tensor(shape: [2, 2], values: [1, 2, 3, 4])
    t.resize(to: [2, 2])
    XCTAssertEqual(t.array, [1, 2, 3, 4])
    t.resize(to: [4])
    XCTAssertEqual(t.array, [1, 2, 3, 4], "same element count: contents are kept")
  }

  func testReuseCreatesOnceThenResizes() {
    var slot: Tensor?
    let a = reuse(&slot, shape: [3, 2])
    XCTAssertTrue(slot === a)
    XCTAssertEqual(a.shape, [3, 2])
    let b = reuse(&slot, shape: [2, 2])
    XCTAssertTrue(a === b, "the same tensor object comes back")
    XCTAssertEqual(b.shape, [2, 2])
    XCTAssertTrue(b.storage === a.storage)
  }

  func testCloneAndCopyAreIndependent() {
    let t = Tensor(shape: [3], values: [1, 2, 3])
    let c = t.clone()
    c[0] = 100
    XCTAssertEqual(t[0], 1)
    XCTAssertFalse(c.storage === t.storage)
    let d = Tensor(zeros: [1, 3])
    d.copy(from: t)
    XCTAssertEqual(d.array, [1, 2, 3])
    XCTAssertEqual(d.shape, [1, 3])
  }

  func testErrorMessagesNameTheLayerAndShapes() {
    let e = TensorError.shapeMismatch(layer: "Conv2D", expected: "[N, 3, H, W]", got: [2, 4, 5, 5])
    XCTAssertEqual(e.description, "Conv2D: expected input of shape [N, 3, H, W], got [2, 4, 5, 5]")
    XCTAssertEqual(Shape.text([64, 3, 32, 32]), "[64, 3, 32, 32]")
  }
}
