// Im2ColTests: im2col against its definition, col2im as its exact adjoint
// (⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩), and the batched column layout (colStride > OH·OW).
import TensorCore
import TestSupport
import XCTest

final class Im2ColTests: XCTestCase {
  /// Odd geometries: C = 1, 1×1 spatial, stride 2, padding 0/1/2, kernel 1 and 3, 5×7 images.
  static let geometries: [ConvGeometry] = [
    ConvGeometry(channels: 3, height: 5, width: 7, kernelH: 3, kernelW: 3, strideH: 1, strideW: 1, padH: 1, padW: 1),
    ConvGeometry(channels: 1, height: 5, width: 7, kernelH: 3, kernelW: 3, strideH: 2, strideW: 2, padH: 0, padW: 0),
    ConvGeometry(channels: 2, height: 1, width: 1, kernelH: 3, kernelW: 3, strideH: 1, strideW: 1, padH: 1, padW: 1),
    ConvGeometry(channels: 4, height: 6, width: 6, kernelH: 1, kernelW: 1, strideH: 1, strideW: 1, padH: 0, padW: 0),
    ConvGeometry(channels: 3, height: 7, width: 5, kernelH: 1, kernelW: 1, strideH: 2, strideW: 2, padH: 0, padW: 0),
    ConvGeometry(channels: 2, height: 8, width: 9, kernelH: 3, kernelW: 2, strideH: 2, strideW: 3, padH: 1, padW: 0),
    ConvGeometry(channels: 1, height: 4, width: 4, kernelH: 5, kernelW: 5, strideH: 1, strideW: 1, padH: 2, padW: 2),
    ConvGeometry(channels: 2, height: 5, width: 6, kernelH: 3, kernelW: 3, strideH: 2, strideW: 2, padH: 1, padW: 1),
    ConvGeometry(channels: 1, height: 7, width: 7, kernelH: 5, kernelW: 5, strideH: 2, strideW: 2, padH: 2, padW: 2),
    ConvGeometry(channels: 2, height: 3, width: 2, kernelH: 3, kernelW: 3, strideH: 3, strideW: 3, padH: 1, padW: 1),
    // Rows of 12 or more outputs take the row-copy path at any stride: stride 2 and 3 with and
    // without padding, and a window wider than the padding.
    ConvGeometry(channels: 2, height: 5, width: 27, kernelH: 3, kernelW: 3, strideH: 2, strideW: 2, padH: 1, padW: 1),
    ConvGeometry(channels: 1, height: 4, width: 29, kernelH: 3, kernelW: 3, strideH: 2, strideW: 2, padH: 0, padW: 0),
    ConvGeometry(channels: 2, height: 6, width: 40, kernelH: 2, kernelW: 5, strideH: 1, strideW: 3, padH: 0, padW: 2),
    ConvGeometry(channels: 1, height: 3, width: 13, kernelH: 3, kernelW: 7, strideH: 1, strideW: 1, padH: 1, padW: 3),
  ]

  func testGeometryOutputSizes() {
    let g = ConvGeometry(channels: 3, height: 32, width: 32, kernelH: 3, kernelW: 3, strideH: 2, strideW: 2, padH: 0, padW: 0)
    XCTAssertEqual(g.outH, 15)
    XCTAssertEqual(g.outW, 15)
    XCTAssertEqual(g.colRows, 27)
    XCTAssertEqual(g.colCols, 225)
    let tooSmall = ConvGeometry(
      channels: 1, height: 2, width: 2, kernelH: 3, kernelW: 3, strideH: 1, strideW: 1, padH: 0, padW: 0)
    XCTAssertEqual(tooSmall.outH, 0)
    XCTAssertEqual(tooSmall.outW, 0)
  }

  func testIm2colMatchesDefinition() {
    var rng = SeededGenerator(seed: 11)
    for g in Self.geometries {
      let x = randomFloats(g.channels * g.height * g.width, using: &rng)
      var col = [Float](repeating: .nan, count: g.colRows * g.colCols)
      x.withUnsafeBufferPointer { xp in
        col.withUnsafeMutableBufferPointer { cp in im2col(xp.baseAddress!, g, col: cp.baseAddress!, colStride: g.colCols) }
      }
      assertClose(col, Reference.im2col(x.map(Double.init), g), rtol: 0, atol: 0, "\(g)")
    }
  }

  func testBatchedLayoutWritesOnlyItsColumns() {
    // Two samples side by side: sample s owns columns s·P ..< (s+1)·P of each row.
    let g = Self.geometries[0]
    let p = g.colCols, np = 2 * p
    var rng = SeededGenerator(seed: 12)
    let x0 = randomFloats(g.channels * g.height * g.width, using: &rng)
    let x1 = randomFloats(g.channels * g.height * g.width, using: &rng)
    var col = [Float](repeating: 99, count: g.colRows * np)
    col.withUnsafeMutableBufferPointer { cp in
      x1.withUnsafeBufferPointer { im2col($0.baseAddress!, g, col: cp.baseAddress! + p, colStride: np) }
    }
    let ref1 = Reference.im2col(x1.map(Double.init), g)
    for r in 0..<g.colRows {
      for j in 0..<p {
        XCTAssertEqual(col[r * np + j], 99, "sample 0's columns untouched")
        XCTAssertEqual(Double(col[r * np + p + j]), ref1[r * p + j])
      }
    }
    col.withUnsafeMutableBufferPointer { cp in
      x0.withUnsafeBufferPointer { im2col($0.baseAddress!, g, col: cp.baseAddress!, colStride: np) }
    }
    let ref0 = Reference.im2col(x0.map(Double.init), g)
    for r in 0..<g.colRows {
      for j in 0..<p { XCTAssertEqual(Double(col[r * np + j]), ref0[r * p + j]) }
    }
  }

  func testCol2imIsTheAdjointOfIm2col() {
    var rng = SeededGenerator(seed: 13)
    for g in Self.geometries {
      let nx = g.channels * g.height * g.width, nc = g.colRows * g.colCols
      let x = randomFloats(nx, using: &rng), c = randomFloats(nc, using: &rng)
      var colX = [Float](repeating: 0, count: nc), dx = [Float](repeating: 0, count: nx)
      x.withUnsafeBufferPointer { xp in
        colX.withUnsafeMutableBufferPointer { im2col(xp.baseAddress!, g, col: $0.baseAddress!, colStride: g.colCols) }
      }
      c.withUnsafeBufferPointer { cp in
        dx.withUnsafeMutableBufferPointer { col2im(cp.baseAddress!, colStride: g.colCols, g, dx: $0.baseAddress!) }
      }
      let lhs = zip(colX, c).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
      let rhs = zip(x, dx).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
      XCTAssertEqual(lhs, rhs, accuracy: 1e-4 * max(1, abs(lhs)), "⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩ for \(g)")
    }
  }

  func testCol2imAccumulates() {
    let g = Self.geometries[0]
    let nx = g.channels * g.height * g.width, nc = g.colRows * g.colCols
    var rng = SeededGenerator(seed: 14)
    let c = randomFloats(nc, using: &rng)
    var once = [Float](repeating: 0, count: nx), twice = [Float](repeating: 1, count: nx)
    c.withUnsafeBufferPointer { cp in
      once.withUnsafeMutableBufferPointer { col2im(cp.baseAddress!, colStride: g.colCols, g, dx: $0.baseAddress!) }
      twice.withUnsafeMutableBufferPointer { col2im(cp.baseAddress!, colStride: g.colCols, g, dx: $0.baseAddress!) }
    }
    assertClose(twice, once.map { Double($0) + 1 }, rtol: 1e-6, atol: 1e-6, "col2im adds into dx")
  }
}
