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
    // 3-wide kernels take one pass for all three taps (im2col at stride 2 on short rows, col2im
    // at stride 1): no padding, padding 2 (wider than a tap), a 2-high kernel, rows of 1 and 11.
    ConvGeometry(channels: 2, height: 4, width: 9, kernelH: 3, kernelW: 3, strideH: 1, strideW: 1, padH: 0, padW: 0),
    ConvGeometry(channels: 1, height: 3, width: 2, kernelH: 3, kernelW: 3, strideH: 1, strideW: 1, padH: 2, padW: 2),
    ConvGeometry(channels: 3, height: 6, width: 23, kernelH: 2, kernelW: 3, strideH: 1, strideW: 2, padH: 0, padW: 1),
    ConvGeometry(channels: 2, height: 7, width: 3, kernelH: 3, kernelW: 3, strideH: 2, strideW: 2, padH: 2, padW: 2),
    ConvGeometry(channels: 1, height: 5, width: 1, kernelH: 1, kernelW: 3, strideH: 1, strideW: 2, padH: 0, padW: 1),
    // 3-wide kernels at stride 2 on AVX-512 run 16 output columns a vector in im2col and 16 input
    // columns in col2im: rows of exactly 16 outputs, 18 with padding 2, and 35 (three vectors,
    // the last one partial).
    ConvGeometry(channels: 1, height: 3, width: 33, kernelH: 1, kernelW: 3, strideH: 1, strideW: 2, padH: 0, padW: 0),
    ConvGeometry(channels: 1, height: 4, width: 34, kernelH: 3, kernelW: 3, strideH: 2, strideW: 2, padH: 2, padW: 2),
    ConvGeometry(channels: 2, height: 5, width: 70, kernelH: 3, kernelW: 3, strideH: 2, strideW: 2, padH: 1, padW: 1),
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

  /// The Swift loops that run where CLoweringKernels' AVX-512 loops do not (no AVX-512), on the
  /// same geometries, one sample and a batch, both ways.
  func testLoweringWithoutTheAVX512KernelsMatchesDefinition() {
    let saved = loweringUsesAVX512
    defer { loweringUsesAVX512 = saved }
    loweringUsesAVX512 = false
    testIm2colMatchesDefinition()
    testCol2imMatchesDefinition()
    testBatchedLoweringMatchesDefinitionPerSample()
    testCol2imOverwritesWhenAskedTo()
  }

  /// col2im's AVX-512 loop for 3-wide kernels at stride 2 (rows of 8 columns and more) against the
  /// gather-table loop that runs without it: the same bits, accumulating into dx that holds random
  /// values and −0 (a term is added only where it exists: −0 + 0 would be +0) and overwriting it.
  func testCol2imAVX512KernelHasTheTableLoopsBits() throws {
    try XCTSkipUnless(loweringUsesAVX512, "no AVX-512 here: col2im runs the table loop alone")
    var rng = SeededGenerator(seed: 18)
    let extra = [
      ConvGeometry(channels: 3, height: 32, width: 32, kernelH: 3, kernelW: 3, strideH: 2, strideW: 2, padH: 0, padW: 0),
      ConvGeometry(channels: 2, height: 8, width: 8, kernelH: 3, kernelW: 3, strideH: 2, strideW: 2, padH: 1, padW: 1),
      ConvGeometry(channels: 2, height: 9, width: 17, kernelH: 2, kernelW: 3, strideH: 3, strideW: 2, padH: 1, padW: 2),
      // Rows of 11 and 13 (one partial vector), padding 3 (windows wholly in the padding), and
      // no output row at all (H + 2·ph < KH: the planes are only zeroed).
      ConvGeometry(channels: 2, height: 6, width: 11, kernelH: 3, kernelW: 3, strideH: 2, strideW: 2, padH: 1, padW: 0),
      ConvGeometry(channels: 1, height: 5, width: 13, kernelH: 3, kernelW: 3, strideH: 1, strideW: 2, padH: 3, padW: 3),
      ConvGeometry(channels: 2, height: 1, width: 10, kernelH: 3, kernelW: 3, strideH: 2, strideW: 2, padH: 0, padW: 1),
    ]
    let saved = loweringUsesAVX512
    defer { loweringUsesAVX512 = saved }
    for g in Self.geometries + extra where g.kernelW == 3 && g.strideW == 2 && g.width >= 8 {
      // Rows of the column matrix 5 floats longer than the batch's columns.
      let n = 3, nx = n * g.channels * g.height * g.width, np = n * g.colCols + 5
      let c = randomFloats(g.colRows * np, using: &rng)
      var start = randomFloats(nx, using: &rng)
      for i in stride(from: 0, to: nx, by: 3) { start[i] = -0.0 }
      for accumulate in [true, false] {
        var out: [[Float]] = []
        for kernels in [true, false] {
          loweringUsesAVX512 = kernels
          var dx = start
          c.withUnsafeBufferPointer { cp in
            dx.withUnsafeMutableBufferPointer {
              col2im(cp.baseAddress!, colStride: np, batch: n, g, dx: $0.baseAddress!, accumulate: accumulate)
            }
          }
          out.append(dx)
        }
        assertBitwiseEqual(out[0], out[1], "col2im AVX-512 vs table, accumulate \(accumulate), \(g)")
      }
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

  func testCol2imMatchesDefinition() {
    var rng = SeededGenerator(seed: 15)
    for g in Self.geometries {
      let c = randomFloats(g.colRows * g.colCols, using: &rng)
      var dx = [Float](repeating: 0, count: g.channels * g.height * g.width)
      c.withUnsafeBufferPointer { cp in
        dx.withUnsafeMutableBufferPointer { col2im(cp.baseAddress!, colStride: g.colCols, g, dx: $0.baseAddress!) }
      }
      // At most KH·KW terms per element, in a fixed order: Float rounding only.
      assertClose(dx, Reference.col2im(c.map(Double.init), g), rtol: 1e-6, atol: 1e-6, "\(g)")
    }
  }

  func testBatchedLoweringMatchesDefinitionPerSample() {
    // Three samples side by side in one [K, 3·P] matrix, as Conv2D lays out a batch.
    var rng = SeededGenerator(seed: 16)
    for g in Self.geometries {
      let n = 3, sample = g.channels * g.height * g.width, p = g.colCols, np = n * p
      let x = randomFloats(n * sample, using: &rng), c = randomFloats(g.colRows * np, using: &rng)
      var col = [Float](repeating: .nan, count: g.colRows * np), dx = [Float](repeating: 0, count: n * sample)
      x.withUnsafeBufferPointer { xp in
        col.withUnsafeMutableBufferPointer { im2col(xp.baseAddress!, batch: n, g, col: $0.baseAddress!, colStride: np) }
      }
      c.withUnsafeBufferPointer { cp in
        dx.withUnsafeMutableBufferPointer { col2im(cp.baseAddress!, colStride: np, batch: n, g, dx: $0.baseAddress!) }
      }
      // Sample s's part of a [K, N·P] matrix, as one [K, P] matrix.
      func part(_ m: [Float], _ s: Int) -> [Float] {
        var out: [Float] = []
        for r in 0..<g.colRows {
          let start = r * np + s * p
          out += m[start..<(start + p)]
        }
        return out
      }
      for s in 0..<n {
        let xs: [Double] = x[(s * sample)..<((s + 1) * sample)].map(Double.init)
        assertClose(part(col, s), Reference.im2col(xs, g), rtol: 0, atol: 0, "im2col sample \(s) of \(g)")
        let cs: [Double] = part(c, s).map(Double.init)
        let dxs = Array(dx[(s * sample)..<((s + 1) * sample)])
        assertClose(dxs, Reference.col2im(cs, g), rtol: 1e-6, atol: 1e-6, "col2im sample \(s) of \(g)")
      }
    }
  }

  func testCol2imOverwritesWhenAskedTo() {
    // accumulate: false gives the sums alone, whatever dx held, NaN included, in every path.
    var rng = SeededGenerator(seed: 17)
    for g in Self.geometries {
      let n = 2, nx = g.channels * g.height * g.width, np = n * g.colCols
      let c = randomFloats(g.colRows * np, using: &rng)
      var added = [Float](repeating: 0, count: n * nx), written = [Float](repeating: .nan, count: n * nx)
      c.withUnsafeBufferPointer { cp in
        added.withUnsafeMutableBufferPointer { col2im(cp.baseAddress!, colStride: np, batch: n, g, dx: $0.baseAddress!) }
        written.withUnsafeMutableBufferPointer {
          col2im(cp.baseAddress!, colStride: np, batch: n, g, dx: $0.baseAddress!, accumulate: false)
        }
      }
      XCTAssertTrue(zip(added, written).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(g)")
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
