// MemoryPassesTests: the memory-bound passes' record (acon-bench's memory_bound_* fields): which
// passes count, the bytes each counts, and that recording changes no result.
import NN
import TensorCore
import TestSupport
import XCTest

final class MemoryPassesTests: XCTestCase {
  func testSequentialCountsItsMemoryBoundLayersOnly() throws {
    var rng = SeededGenerator(seed: 1)
    let net = Sequential([BatchNorm2D(channels: 3), SiLU(), Conv2D(inChannels: 3, outChannels: 5, kernelSize: 3, padding: 1, rng: &rng)])
    let x = Tensor(zeros: [2, 3, 4, 4])
    x.fillUniform(-1, 1, using: &rng)
    let dy = Tensor(zeros: [2, 5, 4, 4])
    dy.fillUniform(-1, 1, using: &rng)
    let plain = try net.forward(x).array
    let plainDx = try net.backward(dy).array
    let ((y, dx), r) = try MemoryPasses.recording { (try net.forward(x).array, try net.backward(dy).array) }
    assertBitwiseEqual(y, plain)
    assertBitwiseEqual(dx, plainDx)
    // BatchNorm and SiLU, each forward (x + y: 96 + 96) and backward (dy + x + dx: 3 · 96);
    // the convolution is a GEMM layer and does not count.
    XCTAssertEqual(r.passes, 4)
    XCTAssertEqual(r.bytes, 4 * (2 * 192 + 2 * 288))
    XCTAssertGreaterThan(r.seconds, 0)
    // Per kind: each layer's forward and backward.
    XCTAssertEqual(Set(r.byKind.keys), ["BatchNorm2D.forward", "BatchNorm2D.backward", "SiLU.forward", "SiLU.backward"])
    XCTAssertEqual(r.byKind["BatchNorm2D.forward"]?.bytes, 4 * 192)
    XCTAssertEqual(r.byKind["SiLU.backward"]?.bytes, 4 * 288)
    assertKindsAddUp(r)
    // Once recording has ended, passes no longer count.
    _ = try net.forward(x)
    _ = try net.backward(dy)
    XCTAssertEqual(r.passes, 4)
  }

  /// A module that wraps a Graph (as ResNet's blocks do) is a container: its inner passes count,
  /// the wrapper's own pass does not (it would count the block's GEMMs as memory-bound).
  final class Wrapper: Module {
    let graph = Graph()
    init(channels: Int, rng: inout SeededGenerator) {
      let h = graph("conv", Conv2D(inChannels: channels, outChannels: channels, kernelSize: 3, padding: 1, rng: &rng), graph.input)
      graph.output = graph.add(graph("relu", ReLU(), h), graph.input)
    }
    override var children: [(String, Module)] { [("graph", graph)] }
    override func forward(_ x: Tensor) throws -> Tensor { try graph.forward(x) }
    override func backward(_ dy: Tensor) throws -> Tensor { try graph.backward(dy) }
  }

  func testAWrapperOfAGraphCountsOnlyItsInnerPasses() throws {
    var rng = SeededGenerator(seed: 3)
    let inner = Wrapper(channels: 4, rng: &rng)
    let net = Sequential([inner, SiLU()])
    let x = Tensor(zeros: [2, 4, 5, 5])
    x.fillUniform(-1, 1, using: &rng)
    let dy = Tensor(zeros: x.shape)
    dy.fillUniform(-1, 1, using: &rng)
    let n = x.count
    let (_, r) = try MemoryPasses.recording {
      _ = try net.forward(x)
      _ = try net.backward(dy)
    }
    // The graph: add forward and the sum of x's two gradients (the ReLU runs fused with the
    // convolution, which is not memory-bound); then SiLU forward and backward. Not the wrapper's
    // pass (which holds the convolution).
    XCTAssertEqual(r.passes, 4)
    XCTAssertEqual(r.bytes, 4 * ((3 * n + 3 * n) + (2 * n + 3 * n)))
    XCTAssertTrue((inner.graph["conv"] as! Conv2D).fusedReLU)
    XCTAssertNil(r.byKind["Wrapper.forward"], "the wrapper counts nothing itself")
    assertKindsAddUp(r)
  }

  func testGraphCountsItsOperations() throws {
    // y = add(relu(x), x): forward relu (x + y) and add (2 inputs + output); backward relu
    // (dy + x + dx), and the two gradients of x summed (two read, one written).
    let g = Graph()
    let h = g("relu", ReLU(), g.input)
    g.output = g.add(h, g.input)
    var rng = SeededGenerator(seed: 2)
    let x = Tensor(zeros: [2, 4, 3, 3])
    x.fillUniform(-1, 1, using: &rng)
    let dy = Tensor(zeros: x.shape)
    dy.fillUniform(-1, 1, using: &rng)
    let n = x.count
    let (_, r) = try MemoryPasses.recording {
      _ = try g.forward(x)
      _ = try g.backward(dy)
    }
    XCTAssertEqual(r.passes, 4)
    XCTAssertEqual(r.bytes, 4 * (2 * n + 3 * n + 3 * n + 3 * n))
    XCTAssertEqual(r.byKind["add.forward"]?.bytes, 4 * 3 * n)
    XCTAssertEqual(r.byKind["add.backward"]?.bytes, 4 * 3 * n, "the two gradients of x summed")
    XCTAssertEqual(r.byKind["ReLU.forward"]?.passes, 1)
    XCTAssertEqual(r.byKind["ReLU.backward"]?.passes, 1)
    assertKindsAddUp(r)
  }

  /// The kinds' bytes, passes and seconds add up to the totals.
  private func assertKindsAddUp(_ r: MemoryPasses, file: StaticString = #filePath, line: UInt = #line) {
    let kinds = r.byKind.values
    XCTAssertEqual(kinds.reduce(0) { $0 + $1.bytes }, r.bytes, file: file, line: line)
    XCTAssertEqual(kinds.reduce(0) { $0 + $1.passes }, r.passes, file: file, line: line)
    XCTAssertEqual(kinds.reduce(0) { $0 + $1.seconds }, r.seconds, accuracy: 1e-9, file: file, line: line)
  }
}
