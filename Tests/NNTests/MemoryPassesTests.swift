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
    // Off, nothing is recorded anywhere.
    let (_, none) = MemoryPasses.recording { 0 }
    _ = try net.forward(x)
    XCTAssertEqual(none.passes, 0)
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
  }
}
