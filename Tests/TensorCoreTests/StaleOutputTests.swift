// StaleOutputTests: the debug-build record behind the stale-output trap. `reuseOutput` hands
// out a fresh view each call and retires the previous one (debug builds), never allocating
// storage after the first call; views of a retired output are stale too; the trap's message.
import TensorCore
import XCTest

/// Whether this test binary was built with DEBUG (where stale outputs are tracked).
#if DEBUG
private let tracksStaleOutputs = true
#else
private let tracksStaleOutputs = false
#endif

private final class FakeLayer: OutputOwner {
  var typeName: String { "FakeLayer" }
  var output: Tensor?
  func forward(_ value: Float, shape: [Int] = [2, 3]) -> Tensor {
    let y = reuseOutput(&output, shape: shape, owner: self)
    y.data.update(repeating: value, count: y.count)
    return y
  }
}

final class StaleOutputTests: XCTestCase {
  func testMessageNamesTheLayerAndSaysWhatToDo() {
    XCTAssertEqual(Tensor.staleOutputMessage(layer: "Conv2D", name: "conv1"),
      "Conv2D 'conv1' output read after the layer ran forward again: it is overwritten by each forward; "
        + "call .copy() to keep it")
    XCTAssertEqual(Tensor.staleOutputMessage(layer: "Linear", name: nil),
      "Linear output read after the layer ran forward again: it is overwritten by each forward; "
        + "call .copy() to keep it")
  }

  func testFreshOutputReadsAndOldOneIsStale() {
    let layer = FakeLayer()
    let y1 = layer.forward(1)
    XCTAssertFalse(y1.isStale)
    XCTAssertNil(y1.staleReadMessage)
    XCTAssertEqual(y1.array, [Float](repeating: 1, count: 6))
    let allocations = TensorStorage.allocationCount
    let y2 = layer.forward(2)
    XCTAssertEqual(TensorStorage.allocationCount, allocations, "no storage allocated by the second forward")
    XCTAssertTrue(y2.storage === y1.storage, "the same buffer, overwritten")
    XCTAssertFalse(y2.isStale)
    XCTAssertEqual(y2.array, [Float](repeating: 2, count: 6))
    XCTAssertEqual(y1.isStale, tracksStaleOutputs)
    XCTAssertEqual(y1.staleReadMessage,
      tracksStaleOutputs ? Tensor.staleOutputMessage(layer: "FakeLayer", name: nil) : nil)
    // A view taken of the old output before the next forward is stale with it.
    let layer2 = FakeLayer()
    let a = layer2.forward(3)
    let flat = a.reshaped([6])
    XCTAssertFalse(flat.isStale)
    _ = layer2.forward(4)
    XCTAssertEqual(flat.isStale, tracksStaleOutputs)
  }

  func testContainerNameAppearsInTheMessage() {
    let layer = FakeLayer()
    let y = layer.forward(1)
    y.nameOutput("fc", ownedBy: layer)
    // Another owner's name is ignored.
    y.nameOutput("other", ownedBy: FakeLayer())
    _ = layer.forward(2)
    XCTAssertEqual(y.staleReadMessage, tracksStaleOutputs ? Tensor.staleOutputMessage(layer: "FakeLayer", name: "fc") : nil)
  }

  func testResizedOutputRetiresTheOldOneAndKeepsItsShape() {
    let layer = FakeLayer()
    let y1 = layer.forward(1, shape: [2, 3])
    let y2 = layer.forward(2, shape: [4, 5])
    XCTAssertEqual(y2.shape, [4, 5])
    XCTAssertEqual(y2.array, [Float](repeating: 2, count: 20))
    XCTAssertEqual(y1.isStale, tracksStaleOutputs)
    if tracksStaleOutputs { XCTAssertEqual(y1.shape, [2, 3]) }
  }

  func testCopySurvivesTheNextForward() {
    let layer = FakeLayer()
    let kept = layer.forward(1).clone()
    _ = layer.forward(2)
    XCTAssertFalse(kept.isStale)
    XCTAssertEqual(kept.array, [Float](repeating: 1, count: 6))
  }

  func testPlainTensorsAreNeverStale() {
    var owned: Tensor?
    let t = reuse(&owned, shape: [3])
    _ = reuse(&owned, shape: [3])
    XCTAssertFalse(t.isStale)
    XCTAssertNil(t.staleReadMessage)
  }
}
