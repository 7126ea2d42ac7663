// WinogradTests: Conv2D's Winograd paths, F(2×2, 3×3) and F(4×4, 3×3), against the Double
// convolution (Reference.conv2d), forward and backward (dx, dW, db, a fused ReLU), on shapes that
// exercise the tiles' edges: output sizes that are not multiples of the tile, 1×1 and 2×2 maps,
// padding 0, 1 and 2, rectangular padding, C = 1, channels that are not multiples of 8, blocks
// that end mid-sample; finite differences; 1 vs 2 threads; when `.auto` chooses it; the
// F(2×2) filter and tile transforms against their float formulas, bit for bit.
import CWinogradKernels
import NN
import TensorCore
import TestSupport
import XCTest

final class WinogradTests: XCTestCase {
  struct Case: CustomStringConvertible {
    var n, cin, cout, h, w: Int
    var padding: (Int, Int) = (1, 1)
    var bias = true
    var description: String { "N\(n) Cin\(cin) Cout\(cout) \(h)x\(w) p\(padding)\(bias ? "" : " nobias")" }
  }

  static let cases: [Case] = [
    Case(n: 2, cin: 3, cout: 5, h: 6, w: 6),
    Case(n: 3, cin: 7, cout: 9, h: 7, w: 5),  // odd output: the last tile row and column half outside
    Case(n: 2, cin: 1, cout: 1, h: 1, w: 1),  // C = 1, 1×1 map: one tile, three quarters outside
    Case(n: 1, cin: 4, cout: 3, h: 2, w: 2, bias: false),
    Case(n: 2, cin: 5, cout: 6, h: 9, w: 4, padding: (0, 0)),
    Case(n: 2, cin: 3, cout: 4, h: 3, w: 5, padding: (2, 2)),
    Case(n: 2, cin: 6, cout: 2, h: 5, w: 8, padding: (0, 1)),
    Case(n: 4, cin: 17, cout: 19, h: 11, w: 13, padding: (2, 1)),
  ]

  /// The two Winograd algorithms with their output tile.
  static let algorithms: [(ConvAlgorithm, Int)] = [(.winograd, 2), (.winograd4x4, 4)]

  private func make(_ c: Case, seed: UInt64, _ algorithm: ConvAlgorithm) -> (Conv2D, Tensor) {
    var rng = SeededGenerator(seed: seed)
    let conv = Conv2D(inChannels: c.cin, outChannels: c.cout, kernelSize: (3, 3), padding: c.padding, bias: c.bias,
      rng: &rng)
    conv.algorithm = algorithm
    if let b = conv.bias { b.value.fillUniform(-1, 1, using: &rng) }
    let x = Tensor.uniform([c.n, c.cin, c.h, c.w], using: &rng)
    return (conv, x)
  }

  private func reference(_ conv: Conv2D, _ x: Tensor, _ c: Case) -> DoubleTensor {
    Reference.groupedConv2d(DoubleTensor(x), weight: DoubleTensor(conv.weight.value),
      bias: conv.bias.map { DoubleTensor($0.value) }, stride: (1, 1), padding: c.padding, groups: 1)
  }

  /// F(2×2)'s U = G g Gᵀ and dw += Gᵀ dU G are the float formulas of WinogradKernels.c, in their
  /// order, bit for bit, whichever variant runs (the AVX-512 copy does 16 kernels per vector, AVX2's 8) and
  /// however the rows are split: channel counts below, at and past 16, flipped or not.
  func testFilterTransformsAreTheFloatFormulasBitForBit() {
    var rng = SeededGenerator(seed: 77)
    for (k, c) in [(1, 1), (3, 5), (17, 16), (4, 33), (2, 48)] {
      let w = Tensor.uniform([k, c, 3, 3], -3, 3, using: &rng).array
      for flip in [0, 1] {
        // w is read as [k, c, 3, 3], or flipped as [c, k, 3, 3] rotated by 180° (the dx pass's filter)
        let (kk, cc) = flip == 1 ? (c, k) : (k, c)
        var u = [Float](repeating: .nan, count: 16 * kk * cc)
        w.withUnsafeBufferPointer { wp in
          u.withUnsafeMutableBufferPointer { up in
            for (o0, o1) in [(0, kk / 3), (kk / 3, kk)] {
              wino_filter_transform(wp.baseAddress!, kk, cc, Int32(flip), 2, o0, o1, up.baseAddress!)
            }
          }
        }
        var expected = [Float](repeating: 0, count: 16 * kk * cc)
        for o in 0..<kk {
          for i in 0..<cc {
            func g(_ a: Int, _ b: Int) -> Float {
              flip == 1 ? w[(i * kk + o) * 9 + (2 - a) * 3 + (2 - b)] : w[(o * cc + i) * 9 + a * 3 + b]
            }
            var t = [[Float]](repeating: [0, 0, 0], count: 4)
            for b in 0..<3 {
              t[0][b] = g(0, b)
              t[1][b] = 0.5 * (g(0, b) + g(1, b) + g(2, b))
              t[2][b] = 0.5 * (g(0, b) - g(1, b) + g(2, b))
              t[3][b] = g(2, b)
            }
            for a in 0..<4 {
              let row: [Float] = [t[a][0], 0.5 * (t[a][0] + t[a][1] + t[a][2]), 0.5 * (t[a][0] - t[a][1] + t[a][2]), t[a][2]]
              for b in 0..<4 { expected[(4 * a + b) * kk * cc + o * cc + i] = row[b] }
            }
          }
        }
        assertBitwiseEqual(u, expected, "U, k \(kk) c \(cc) flip \(flip)")
      }
      // dw [k, c, 3, 3] += Gᵀ dU G, from a start that is not zero
      let du = Tensor.uniform([16, k, c], -2, 2, using: &rng).array
      let start = Tensor.uniform([k, c, 3, 3], -1, 1, using: &rng).array
      var dw = start
      du.withUnsafeBufferPointer { dp in
        dw.withUnsafeMutableBufferPointer { wp in
          for (o0, o1) in [(0, k / 2), (k / 2, k)] {
            wino_filter_gradient(dp.baseAddress!, k, c, 2, o0, o1, wp.baseAddress!)
          }
        }
      }
      var expected = start
      for o in 0..<k {
        for i in 0..<c {
          func d(_ a: Int, _ b: Int) -> Float { du[(4 * a + b) * k * c + o * c + i] }
          var e = [[Float]](repeating: [0, 0, 0, 0], count: 3)
          for b in 0..<4 {
            e[0][b] = d(0, b) + 0.5 * (d(1, b) + d(2, b))
            e[1][b] = 0.5 * (d(1, b) - d(2, b))
            e[2][b] = 0.5 * (d(1, b) + d(2, b)) + d(3, b)
          }
          for a in 0..<3 {
            let base = (o * c + i) * 9 + a * 3
            expected[base] += e[a][0] + 0.5 * (e[a][1] + e[a][2])
            expected[base + 1] += 0.5 * (e[a][1] - e[a][2])
            expected[base + 2] += 0.5 * (e[a][1] + e[a][2]) + e[a][3]
          }
        }
      }
      assertBitwiseEqual(dw, expected, "dw, k \(k) c \(c)")
    }
  }

  /// The float formulas of one tile size's transforms, in the kernels' order of operations:
  /// `input` gives V = Bᵀ d B ((m+2)² points, row by row) of the patch d(a, b), `output` gives
  /// Aᵀ M A (m×m, row by row) of the points M(i, j), `gradient` gives D = A dY Aᵀ ((m+2)²) of the
  /// output block e(a, b).
  private struct TileTwins {
    let m: Int
    let input: ((Int, Int) -> Float) -> [Float]
    let output: ((Int, Int) -> Float) -> [Float]
    let gradient: ((Int, Int) -> Float) -> [Float]
  }

  /// WinogradKernels.c's F(2×2, 3×3) formulas.
  private static var twins2: TileTwins {
    TileTwins(
      m: 2,
      input: { d in
        var a = [[Float]](repeating: [0, 0, 0, 0], count: 4)  // Bᵀ d, column by column
        for q in 0..<4 {
          a[0][q] = d(0, q) - d(2, q)
          a[1][q] = d(1, q) + d(2, q)
          a[2][q] = d(2, q) - d(1, q)
          a[3][q] = d(1, q) - d(3, q)
        }
        var v = [Float]()  // (Bᵀ d) B, row by row
        for i in 0..<4 {
          let e: [Float] = [a[i][0] - a[i][2], a[i][1] + a[i][2], a[i][2] - a[i][1], a[i][1] - a[i][3]]
          v += e
        }
        return v
      },
      output: { mm in
        var y = [Float]()
        for a in 0..<2 {
          let sa: [Float] = (0..<4).map { q in a == 0 ? mm(0, q) + mm(1, q) + mm(2, q) : mm(1, q) - mm(2, q) - mm(3, q) }
          let row: [Float] = [sa[0] + sa[1] + sa[2], sa[1] - sa[2] - sa[3]]
          y += row
        }
        return y
      },
      gradient: { e in
        let (p, q, r, s) = (e(0, 0), e(0, 1), e(1, 0), e(1, 1))
        let rows: [(Float, Float)] = [(p, q), (p + r, q + s), (p - r, q - s), (-r, -s)]  // A dY
        var d = [Float]()
        for (x0, x1) in rows {
          let row: [Float] = [x0, x0 + x1, x0 - x1, -x1]  // times Aᵀ
          d += row
        }
        return d
      })
  }

  /// Winograd4Kernels.c's F(4×4, 3×3) formulas (its BT6, AT4 and A6 on columns, then on rows).
  private static var twins4: TileTwins {
    func bt6(_ d: [Float]) -> [Float] {
      [4 * d[0] - 5 * d[2] + d[4], d[3] + d[4] - 4 * (d[1] + d[2]), d[4] - d[3] + 4 * (d[1] - d[2]),
       d[4] - d[2] + 2 * (d[3] - d[1]), d[4] - d[2] + 2 * (d[1] - d[3]), 4 * d[1] - 5 * d[3] + d[5]]
    }
    func at4(_ m: [Float]) -> [Float] {
      [m[0] + (m[1] + m[2]) + (m[3] + m[4]), (m[1] - m[2]) + 2 * (m[3] - m[4]), (m[1] + m[2]) + 4 * (m[3] + m[4]),
       (m[1] - m[2]) + 8 * (m[3] - m[4]) + m[5]]
    }
    func a6(_ e: [Float]) -> [Float] {
      [e[0], (e[0] + e[2]) + (e[1] + e[3]), (e[0] + e[2]) - (e[1] + e[3]), (e[0] + 4 * e[2]) + 2 * (e[1] + 4 * e[3]),
       (e[0] + 4 * e[2]) - 2 * (e[1] + 4 * e[3]), e[3]]
    }
    // f applied to each column of a rows×cols block, then to each row of the result.
    func twoPass(_ f: ([Float]) -> [Float], rows: Int, cols: Int, _ x: (Int, Int) -> Float) -> [Float] {
      let columns = (0..<cols).map { q in f((0..<rows).map { x($0, q) }) }  // columns[q][i]
      return (0..<columns[0].count).flatMap { i in f((0..<cols).map { columns[$0][i] }) }
    }
    return TileTwins(
      m: 4, input: { twoPass(bt6, rows: 6, cols: 6, $0) }, output: { twoPass(at4, rows: 6, cols: 6, $0) },
      gradient: { twoPass(a6, rows: 4, cols: 4, $0) })
  }

  /// Checks V, y (bias, ReLU or not; −0, NaN and negative sums included) and D of one tile size
  /// against its twins, bit for bit, on values with full mantissas (uniform draws divided by 3, so
  /// that a changed order of operations shows), in blocks of 1, 2 and all tile rows (blocks that
  /// start and end mid-sample).
  private func checkTileTransforms(_ twins: TileTwins, seed: UInt64, shapes: [(Int, Int, Int, Int, Int, Int, Int)]) {
    let m = twins.m, points = (m + 2) * (m + 2)
    var rng = SeededGenerator(seed: seed)
    for (n, c, k, h, w, ph, pw) in shapes {  // (n, c, k, h, w, ph, pw)
      let oh = h + 2 * ph - 2, ow = w + 2 * pw - 2, th = (oh + m - 1) / m, tw = (ow + m - 1) / m
      var g = WinoGeometry(n: n, c: c, h: h, w: w, ph: ph, pw: pw, k: k, oh: oh, ow: ow, th: th, tw: tw, m: m)
      let x = Tensor.uniform([n, c, h, w], -3, 3, using: &rng).array.map { $0 / 3 }
      var dy = Tensor.uniform([n, k, oh, ow], -3, 3, using: &rng).array.map { $0 / 3 }
      dy[0] = -0.0
      let bias = Tensor.uniform([k], -1, 1, using: &rng).array.enumerated().map { $0.offset == 0 ? -0.0 : $0.element }
      let rowsAll = n * th
      for rowsPerBlock in Set([1, 2, rowsAll]) {
        var row0 = 0
        while row0 < rowsAll {
          let rows = min(rowsPerBlock, rowsAll - row0), t = rows * tw
          let vp = wino_point_stride(c * t), mp = wino_point_stride(k * t)
          let what = "F(\(m)×\(m)): n \(n) c \(c) k \(k) \(h)×\(w) pad (\(ph), \(pw)), rows \(row0)..<\(row0 + rows)"
          // V against Bᵀ d B, point by point
          var v = [Float](repeating: .nan, count: points * vp)
          x.withUnsafeBufferPointer { xp in
            v.withUnsafeMutableBufferPointer { wino_input_transform(&g, xp.baseAddress!, row0, rows, 0, c, $0.baseAddress!) }
          }
          var gotV = [Float](), wantV = [Float]()
          for ci in 0..<c {
            for r in row0..<(row0 + rows) {
              let s = r / th, y0 = m * (r % th) - ph
              for tt in 0..<tw {
                wantV += twins.input { a, b in
                  let yy = y0 + a, xx = m * tt - pw + b
                  return yy >= 0 && yy < h && xx >= 0 && xx < w ? x[((s * c + ci) * h + yy) * w + xx] : 0
                }
                gotV += (0..<points).map { v[$0 * vp + ci * t + (r - row0) * tw + tt] }
              }
            }
          }
          assertBitwiseEqual(gotV, wantV, "V, \(what)")
          // y against Aᵀ M A + bias, then ReLU or not; M with −0 and NaN among its values
          var mv = Tensor.uniform([points * mp], -2, 2, using: &rng).array.map { $0 / 3 }
          for xi in 0..<points { mv[xi * mp] = -0.0 }  // channel 0, tile 0: −0 + bias −0 at column 0
          mv[min(5, mv.count - 1)] = .nan
          for relu in [Int32(0), 1] {
            let start = Tensor.uniform([n, k, oh, ow], using: &rng).array
            var y = start
            mv.withUnsafeBufferPointer { mb in
              bias.withUnsafeBufferPointer { bp in
                y.withUnsafeMutableBufferPointer {
                  wino_output_transform(&g, mb.baseAddress!, row0, rows, 0, k, bp.baseAddress!, relu, $0.baseAddress!)
                }
              }
            }
            var want = start
            for o in 0..<k {
              for r in row0..<(row0 + rows) {
                let s = r / th, y0 = m * (r % th)
                for tt in 0..<tw {
                  let out = twins.output { i, j in mv[(i * (m + 2) + j) * mp + o * t + (r - row0) * tw + tt] }
                  for a in 0..<m {
                    for b in 0..<m where y0 + a < oh && m * tt + b < ow {
                      let value = out[a * m + b] + bias[o]
                      want[((s * k + o) * oh + y0 + a) * ow + m * tt + b] = relu == 0 || value.isNaN || value > 0 ? value : 0
                    }
                  }
                }
              }
            }
            assertBitwiseEqual(y, want, "y, relu \(relu), \(what)")
          }
          // D against A dY Aᵀ, zero outside the output
          var dd = [Float](repeating: .nan, count: points * mp)
          dy.withUnsafeBufferPointer { dp in
            dd.withUnsafeMutableBufferPointer {
              wino_gradient_transform(&g, dp.baseAddress!, row0, rows, 0, k, $0.baseAddress!)
            }
          }
          var gotD = [Float](), wantD = [Float]()
          for o in 0..<k {
            for r in row0..<(row0 + rows) {
              let s = r / th, y0 = m * (r % th)
              for tt in 0..<tw {
                wantD += twins.gradient { a, b in
                  let yy = y0 + a, xx = m * tt + b
                  return yy < oh && xx < ow ? dy[((s * k + o) * oh + yy) * ow + xx] : 0
                }
                gotD += (0..<points).map { dd[$0 * mp + o * t + (r - row0) * tw + tt] }
              }
            }
          }
          assertBitwiseEqual(gotD, wantD, "D, \(what)")
          row0 += rows
        }
      }
    }
  }

  /// F(2×2)'s tile transforms are the float formulas of WinogradKernels.c, in their order, bit for
  /// bit, whichever variant runs (the AVX-512 copies take rows of up to 16 tiles in one vector):
  /// maps 1 to 37 wide (odd, 16 and 32 tiles, past 16), padding 0 to 2.
  func testTileTransformsAreTheFloatFormulasBitForBit() {
    checkTileTransforms(Self.twins2, seed: 78, shapes: [
      (2, 3, 2, 1, 1, 1, 1), (1, 2, 3, 5, 6, 1, 0), (2, 1, 2, 8, 8, 1, 1), (1, 2, 1, 7, 31, 1, 1),
      (2, 2, 2, 6, 32, 1, 1), (1, 1, 3, 4, 33, 0, 2), (1, 2, 2, 3, 37, 2, 1), (3, 3, 1, 9, 16, 0, 0)])
  }

  /// F(4×4)'s tile transforms are the float formulas of Winograd4Kernels.c (contraction off), bit
  /// for bit, on rows of 1 to 17 tiles: the AVX-512 row kernels (up to 16 tiles, maps up to 64
  /// wide) and the wider maps' body alike, padding 0 to 2.
  func testF4x4TileTransformsAreTheFloatFormulasBitForBit() {
    checkTileTransforms(Self.twins4, seed: 79, shapes: [
      (2, 3, 2, 1, 1, 1, 1), (1, 2, 3, 5, 6, 1, 0), (2, 1, 2, 8, 8, 1, 1), (1, 2, 1, 7, 31, 1, 1),
      (2, 2, 2, 6, 32, 1, 1), (1, 1, 3, 4, 33, 0, 2), (1, 2, 2, 9, 61, 2, 1), (1, 1, 2, 6, 64, 1, 1),
      (1, 2, 1, 5, 66, 0, 0), (1, 1, 1, 6, 67, 1, 1)])
  }

  /// Every case, with the blocks at their default size and at one tile row per block.
  func testForwardAndBackwardMatchReference() throws {
    let saved = Winograd.blockBytes, savedTiles = Winograd.minimumBlockTiles
    defer { Winograd.blockBytes = saved; Winograd.minimumBlockTiles = savedTiles }
    for (algorithm, tile) in Self.algorithms {
      for blockBytes in [saved, 1] {
        Winograd.blockBytes = blockBytes
        // Without the 256-tile floor, so that blockBytes 1 really gives one tile row per block
        // (dW accumulated over blocks, blocks that start and end inside a sample).
        Winograd.minimumBlockTiles = blockBytes == saved ? savedTiles : 1
        for (i, c) in Self.cases.enumerated() {
          // F(4×4, 3×3) rounds more (its transforms reach 8 and 5/4): its error stays within 1e-5
          // of the largest reference value, F(2×2, 3×3)'s within 1e-5 absolute.
          func atol(_ ref: DoubleTensor) -> Double { tile == 2 ? 1e-5 : 1e-5 * Swift.max(1, ref.values.map(abs).max() ?? 0) }
          let (conv, x) = make(c, seed: UInt64(100 + i), algorithm)
          let y = try conv.forward(x)
          XCTAssertEqual(conv.winogradTile, tile, "\(c)")
          let ref = reference(conv, x, c)
          XCTAssertEqual(y.shape, ref.shape, "\(c)")
          assertClose(y, ref, rtol: 1e-4, atol: atol(ref), "y, \(c), block \(blockBytes), F(\(tile))")
          var rng = SeededGenerator(seed: UInt64(300 + i))
          let dy = Tensor.uniform(y.shape, using: &rng)
          conv.zeroGrad()
          let dx = try conv.backward(dy)
          let g = Reference.groupedConv2dBackward(DoubleTensor(x), weight: DoubleTensor(conv.weight.value),
            dy: DoubleTensor(dy), stride: (1, 1), padding: c.padding, groups: 1)
          assertClose(dx, g.dx, rtol: 1e-4, atol: atol(g.dx), "dx, \(c), block \(blockBytes), F(\(tile))")
          assertClose(conv.weight.grad, g.dw, rtol: 1e-4, atol: atol(g.dw), "dW, \(c), block \(blockBytes), F(\(tile))")
          if let b = conv.bias { assertClose(b.grad, g.db, rtol: 1e-4, atol: atol(g.db), "db, \(c)") }
          // Gradients accumulate: a second backward adds the same again.
          _ = try conv.backward(dy)
          let dw2 = DoubleTensor(shape: g.dw.shape, values: g.dw.values.map { 2 * $0 })
          assertClose(conv.weight.grad, dw2, rtol: 1e-4, atol: atol(dw2), "2·dW, \(c)")
          // With a fused ReLU (a conv before an in-place ReLU in a Sequential).
          let net = Sequential([conv, ReLU(inPlace: true)])
          assertClose(try net.forward(x), Reference.relu(ref), rtol: 1e-4, atol: atol(ref), "fused ReLU y, \(c)")
          conv.zeroGrad()
          let dxr = try net.backward(dy.clone())
          let gr = Reference.groupedConv2dBackward(DoubleTensor(x), weight: DoubleTensor(conv.weight.value),
            dy: Reference.reluBackward(ref, dy: DoubleTensor(dy)), stride: (1, 1), padding: c.padding, groups: 1)
          assertClose(dxr, gr.dx, rtol: 1e-4, atol: atol(gr.dx), "fused ReLU dx, \(c)")
          assertClose(conv.weight.grad, gr.dw, rtol: 1e-4, atol: atol(gr.dw), "fused ReLU dW, \(c)")
        }
      }
    }
  }

  func testGradientsMatchFiniteDifferences() {
    let small: [Case] = [
      Case(n: 2, cin: 2, cout: 3, h: 3, w: 5),
      Case(n: 1, cin: 1, cout: 2, h: 1, w: 1),
      Case(n: 2, cin: 3, cout: 2, h: 4, w: 3, padding: (0, 2)),
    ]
    for (algorithm, tile) in Self.algorithms {
      for (i, c) in small.enumerated() {
        let (conv, x) = make(c, seed: UInt64(700 + i), algorithm)
        GradientChecker().assertGradients(conv, input: x, "\(c), F(\(tile))")
        XCTAssertEqual(conv.winogradTile, tile, "\(c)")
      }
    }
  }

  /// Winograd and im2col compute the same convolution; their Float results differ by rounding
  /// only, far below the tolerance the Double reference allows either.
  func testAgreesWithIm2colOnAResNetLayer() throws {
    var rng = SeededGenerator(seed: 3)
    let conv = Conv2D(inChannels: 64, outChannels: 64, kernelSize: 3, padding: 1, bias: false, rng: &rng)
    let x = Tensor.uniform([2, 64, 14, 14], using: &rng)
    let dy = Tensor.uniform([2, 64, 14, 14], using: &rng)
    var out: [ConvAlgorithm: [[Float]]] = [:]
    for a in [ConvAlgorithm.im2col, .winograd, .winograd4x4] {
      conv.algorithm = a
      let y = try conv.forward(x).array
      XCTAssertEqual(conv.ranWinograd, a != .im2col)
      conv.zeroGrad()
      let dx = try conv.backward(dy).array
      out[a] = [y, dx, conv.weight.grad.array]
    }
    // F(4×4, 3×3)'s transforms have entries up to 8 and 5/4: about ten times F(2×2, 3×3)'s error.
    for (a, bound) in [(ConvAlgorithm.winograd, 2e-6), (.winograd4x4, 2e-5)] {
      for (j, name) in ["y", "dx", "dW"].enumerated() {
        let ref = out[.im2col]![j], got = out[a]![j]
        let scale = ref.map(abs).max()!
        let err = zip(ref, got).map { abs($0 - $1) }.max()!
        XCTAssertLessThan(err / scale, Float(bound), "\(name): \(a) vs im2col, max |Δ| / max |v|")
      }
    }
  }

  func testResultsDoNotDependOnThreadCount() throws {
    let saved = Threads.count, savedBlock = Winograd.blockBytes, savedTiles = Winograd.minimumBlockTiles
    defer { Threads.count = saved; Winograd.blockBytes = savedBlock; Winograd.minimumBlockTiles = savedTiles }
    Winograd.blockBytes = 64 << 10  // several blocks
    Winograd.minimumBlockTiles = 1
    let c = Case(n: 4, cin: 12, cout: 20, h: 13, w: 9)
    for (algorithm, tile) in Self.algorithms {
      var results: [[[Float]]] = []
      for threads in [1, 2] {
        Threads.count = threads
        let (conv, x) = make(c, seed: 900, algorithm)
        var rng = SeededGenerator(seed: 950)
        let y = try conv.forward(x).array
        let dy = Tensor.uniform(try conv.outputShape(for: x.shape), using: &rng)
        conv.zeroGrad()
        let dx = try conv.backward(dy).array
        results.append([y, dx, conv.weight.grad.array, conv.bias!.grad.array])
      }
      for (j, name) in ["y", "dx", "dW", "db"].enumerated() {
        assertBitwiseEqual(results[0][j], results[1][j], "\(name) with 1 vs 2 threads, \(c), F(\(tile))")
      }
    }
  }

  func testAutoChoosesWinogradWhereItApplies() throws {
    var rng = SeededGenerator(seed: 1)
    func ran(_ cin: Int, _ cout: Int, _ hw: Int, kernel: Int = 3, stride: Int = 1, padding: Int = 1, groups: Int = 1,
      _ algorithm: ConvAlgorithm = .auto) throws -> Bool {
      let conv = Conv2D(inChannels: cin, outChannels: cout, kernelSize: kernel, stride: stride, padding: padding,
        groups: groups, rng: &rng)
      conv.algorithm = algorithm
      _ = try conv.forward(Tensor.uniform([1, cin, hw, hw], using: &rng))
      return conv.ranWinograd
    }
    XCTAssertTrue(try ran(16, 16, 8))
    XCTAssertFalse(try ran(3, 16, 8), "3 input channels: im2col")
    XCTAssertFalse(try ran(16, 16, 2), "2×2 output: im2col")
    XCTAssertFalse(try ran(64, 64, 4), "4×4 output, 64 channels: im2col")
    XCTAssertTrue(try ran(256, 256, 4), "4×4 output, 256 channels: Winograd")
    XCTAssertTrue(try ran(16, 16, 5))
    XCTAssertFalse(try ran(16, 16, 8, stride: 2), "stride 2 never runs Winograd")
    XCTAssertFalse(try ran(16, 16, 8, groups: 2, .winograd), "groups never run Winograd")
    XCTAssertFalse(try ran(16, 16, 8, kernel: 5, padding: 2, .winograd), "5×5 never runs Winograd")
    XCTAssertFalse(try ran(16, 16, 8, padding: 3, .winograd), "padding 3 never runs Winograd")
    XCTAssertTrue(try ran(3, 16, 2, .winograd), ".winograd runs it wherever it applies")
    XCTAssertTrue(try ran(3, 16, 2, .winograd4x4), ".winograd4x4 runs it wherever it applies")
    XCTAssertFalse(try ran(16, 16, 8, .im2col))
    // The tile .auto picks: F(4×4) on maps 16 to 64 wide up to 128 channels, F(2×2) elsewhere.
    func tile(_ c: Int, _ h: Int, _ w: Int) throws -> Int? {
      let conv = Conv2D(inChannels: c, outChannels: c, kernelSize: 3, padding: 1, rng: &rng)
      _ = try conv.forward(Tensor.uniform([1, c, h, w], using: &rng))
      return conv.winogradTile
    }
    XCTAssertEqual(try tile(64, 32, 32), 4, "ResNet-18's 64-channel 32×32 layer")
    XCTAssertEqual(try tile(128, 16, 16), 4, "128 channels at 16×16")
    XCTAssertEqual(try tile(64, 56, 56), 4, "ResNet's 56×56 layer")
    XCTAssertEqual(try tile(16, 64, 64), 4, "64 wide: the widest F(4×4) row kernel")
    XCTAssertEqual(try tile(16, 16, 65), 2, "65 wide: F(2×2)")
    XCTAssertEqual(try tile(16, 15, 32), 2, "15 high: F(2×2)")
    XCTAssertEqual(try tile(256, 16, 16), 2, "256 channels: F(2×2)")
    XCTAssertEqual(try tile(128, 8, 8), 2, "8×8: F(2×2)")
    // Wider outputs than Winograd.maximumWidth run im2col (the transforms' rows live on the stack),
    // and give the same result as the Double reference.
    let wide = Conv2D(inChannels: 1, outChannels: 1, kernelSize: 3, rng: &rng)
    wide.algorithm = .winograd
    let xw = Tensor.uniform([1, 1, 3, Winograd.maximumWidth + 3], using: &rng)
    let yw = try wide.forward(xw)
    XCTAssertFalse(wide.ranWinograd, "an output \(yw.shape[3]) wide runs im2col")
    let refW = Reference.groupedConv2d(DoubleTensor(xw), weight: DoubleTensor(wide.weight.value),
      bias: wide.bias.map { DoubleTensor($0.value) }, stride: (1, 1), padding: (0, 0), groups: 1)
    assertClose(yw, refW, rtol: 1e-4, atol: 1e-5, "wide map")
    _ = try wide.forward(Tensor.uniform([1, 1, 3, Winograd.maximumWidth + 2], using: &rng))
    XCTAssertTrue(wide.ranWinograd, "exactly maximumWidth wide: Winograd")
    // The whole tree at once.
    let net = Sequential([Conv2D(inChannels: 16, outChannels: 16, kernelSize: 3, padding: 1, rng: &rng), ReLU()])
    net.setConvolutionAlgorithm(.im2col)
    XCTAssertEqual((net.layers[0].1 as! Conv2D).algorithm, .im2col)
  }
}
