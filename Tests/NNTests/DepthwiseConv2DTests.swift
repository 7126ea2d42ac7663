// DepthwiseConv2DTests: the direct depthwise kernels against the Double grouped convolution
// (groups = C) and against Conv2D(groups: C) through im2col, forward, dx, dW and db, on odd
// shapes: C = 1, C not a multiple of 16, 1×1 and 2×2 maps, stride 2 on odd sizes, channel
// multiplier 2, 5×5 and rectangular kernels, padding wider than the kernel's reach, the vector
// paths' edges, the AVX-512 paths (flat chunks, rows of 16 and of 8 lanes, small planes in
// groups of channels); every kernel
// variant this CPU runs against the reference and the portable one; finite differences; PyTorch's state_dict; 1 vs 2 threads give the same bits.
import CDepthwiseKernels
import NN
import TensorCore
import TestSupport
import XCTest

/// One depthwise configuration under test.
struct DepthwiseCase: CustomStringConvertible {
  var n, c, h, w: Int
  var m = 1
  var kernel: (Int, Int) = (3, 3)
  var stride: (Int, Int) = (1, 1)
  var padding: (Int, Int) = (1, 1)
  var bias = true
  var description: String {
    "N\(n) C\(c)×\(m) \(h)x\(w) k\(kernel) s\(stride) p\(padding)\(bias ? "" : " nobias")"
  }
}

final class DepthwiseConv2DTests: XCTestCase {
  static let cases: [DepthwiseCase] = [
    DepthwiseCase(n: 2, c: 5, h: 7, w: 9),  // 3×3 s1 p1
    DepthwiseCase(n: 3, c: 17, h: 7, w: 7, stride: (2, 2)),  // 3×3 s2 p1, odd size
    DepthwiseCase(n: 1, c: 1, h: 5, w: 6, stride: (2, 2)),  // C = 1, batch 1
    DepthwiseCase(n: 2, c: 3, h: 1, w: 1),  // 1×1 map
    DepthwiseCase(n: 2, c: 4, h: 2, w: 2, stride: (2, 2)),  // 2×2 map, stride 2
    DepthwiseCase(n: 2, c: 3, h: 6, w: 5, m: 2),  // channel multiplier 2
    DepthwiseCase(n: 2, c: 3, h: 7, w: 5, m: 2, stride: (2, 2), bias: false),
    DepthwiseCase(n: 2, c: 6, h: 9, w: 8, kernel: (5, 5), padding: (2, 2)),  // k = 5
    DepthwiseCase(n: 1, c: 2, h: 9, w: 7, kernel: (5, 5), stride: (2, 2), padding: (2, 2)),
    DepthwiseCase(n: 2, c: 3, h: 4, w: 6, kernel: (1, 3), padding: (0, 1)),  // rectangular
    DepthwiseCase(n: 2, c: 3, h: 7, w: 6, kernel: (3, 1), stride: (2, 1), padding: (1, 0)),
    DepthwiseCase(n: 2, c: 2, h: 5, w: 5, padding: (0, 0)),  // no padding
    DepthwiseCase(n: 2, c: 2, h: 3, w: 4, padding: (3, 2)),  // padding beyond the kernel's reach
    DepthwiseCase(n: 2, c: 2, h: 6, w: 7, stride: (3, 3), padding: (1, 1)),  // stride 3
    DepthwiseCase(n: 2, c: 2, h: 5, w: 29, stride: (3, 3), padding: (1, 1)),  // stride 3, rows of 10 outputs
    DepthwiseCase(n: 2, c: 19, h: 16, w: 16, m: 1),  // a wider row (vector body plus tail)
    DepthwiseCase(n: 2, c: 3, h: 15, w: 21, stride: (2, 2)),
    // The vector paths' edges: 4-wide outputs two rows per vector (8×8 at stride 2), last blocks
    // overlapping the previous one (widths 12, 28 and 30), the same with multiplier 2 (dx added).
    DepthwiseCase(n: 2, c: 3, h: 8, w: 8, stride: (2, 2)),
    DepthwiseCase(n: 2, c: 2, h: 8, w: 8, m: 2, stride: (2, 2)),
    DepthwiseCase(n: 2, c: 3, h: 5, w: 28),
    DepthwiseCase(n: 2, c: 3, h: 6, w: 28, stride: (2, 2)),
    DepthwiseCase(n: 2, c: 2, h: 4, w: 12, m: 2),
    DepthwiseCase(n: 2, c: 2, h: 5, w: 30, m: 2, stride: (2, 2)),
    DepthwiseCase(n: 1, c: 2, h: 6, w: 29, stride: (2, 2)),
    // Stride 2 straight from the unpadded plane (w = 16, or w = 8 with h a multiple of 4), and a
    // w = 8 plane that is not (h = 6).
    DepthwiseCase(n: 2, c: 3, h: 6, w: 16, stride: (2, 2)),
    DepthwiseCase(n: 2, c: 2, h: 12, w: 16, m: 2, stride: (2, 2)),
    DepthwiseCase(n: 2, c: 3, h: 4, w: 8, stride: (2, 2), bias: false),
    DepthwiseCase(n: 2, c: 3, h: 6, w: 8, stride: (2, 2)),
    // Two 4-wide output rows per vector from the padded-copy path (padding other than 1).
    DepthwiseCase(n: 2, c: 3, h: 9, w: 10, stride: (2, 2), padding: (0, 0)),
    // The AVX-512 stride-1 paths: flat 16-float chunks across rows with masked taps (w < 16, not
    // 8: C = 1, a 2×2 map, widths 4 and 13), rows of 8 lanes (8×8, with multiplier 2 and
    // without bias), by rows (widths 17, 28 and one long row of 40).
    DepthwiseCase(n: 1, c: 1, h: 5, w: 6),
    DepthwiseCase(n: 3, c: 2, h: 2, w: 2),
    DepthwiseCase(n: 2, c: 5, h: 8, w: 8),
    DepthwiseCase(n: 2, c: 3, h: 9, w: 4),
    DepthwiseCase(n: 2, c: 3, h: 3, w: 17),
    DepthwiseCase(n: 2, c: 2, h: 1, w: 40),
    DepthwiseCase(n: 2, c: 3, h: 7, w: 13),
    DepthwiseCase(n: 2, c: 2, h: 8, w: 8, m: 2, bias: false),
    DepthwiseCase(n: 2, c: 2, h: 5, w: 28, m: 2),
    // The AVX-512 stride-2 paths in registers: 8×8 (C = 1 without bias, C = 17) and 16 wide
    // (h a multiple of 4: one, two and four vectors of output rows).
    DepthwiseCase(n: 1, c: 1, h: 8, w: 8, stride: (2, 2), bias: false),
    DepthwiseCase(n: 3, c: 17, h: 8, w: 8, stride: (2, 2)),
    DepthwiseCase(n: 1, c: 1, h: 16, w: 16, stride: (2, 2), bias: false),
    DepthwiseCase(n: 2, c: 3, h: 4, w: 16, stride: (2, 2)),
    DepthwiseCase(n: 2, c: 2, h: 8, w: 16, m: 2, stride: (2, 2)),
    // The AVX-512 stride-1 paths by rows (w ≥ 16: 16-column blocks, the last one partial) and
    // rows of 8 lanes (w = 8): C = 1, C = 17, one and two rows, odd heights, multiplier 2.
    DepthwiseCase(n: 1, c: 1, h: 2, w: 16),
    DepthwiseCase(n: 2, c: 17, h: 3, w: 32, m: 2),
    DepthwiseCase(n: 2, c: 2, h: 9, w: 33, bias: false),
    DepthwiseCase(n: 1, c: 1, h: 7, w: 8),
    DepthwiseCase(n: 2, c: 17, h: 1, w: 8),
    DepthwiseCase(n: 2, c: 3, h: 3, w: 8, m: 2),
    DepthwiseCase(n: 2, c: 2, h: 2, w: 8, m: 2, bias: false),
    DepthwiseCase(n: 2, c: 17, h: 8, w: 8),  // 8×8: constant loop bounds
    // The AVX-512 stride-1 path of small planes in groups (16 / (h·w) channels a vector): 2×2
    // with C not a multiple of 4, 1×2, 2×1, 4×2, 1×4, 4×4 with C = 17 and without bias, 2×4 and
    // 1×1 with C = 33.
    DepthwiseCase(n: 3, c: 7, h: 2, w: 2),
    DepthwiseCase(n: 2, c: 9, h: 1, w: 2),
    DepthwiseCase(n: 2, c: 5, h: 2, w: 1, bias: false),
    DepthwiseCase(n: 2, c: 3, h: 4, w: 2),
    DepthwiseCase(n: 2, c: 6, h: 1, w: 4),
    DepthwiseCase(n: 3, c: 17, h: 4, w: 4, bias: false),
    DepthwiseCase(n: 2, c: 5, h: 2, w: 4),
    DepthwiseCase(n: 2, c: 33, h: 1, w: 1),
    // The AVX2 variant groups 8 / (h·w) channels a vector: also 8×1 (one channel a vector).
    DepthwiseCase(n: 2, c: 3, h: 8, w: 1),
  ]

  private func make(_ c: DepthwiseCase, seed: UInt64) -> (DepthwiseConv2D, Tensor) {
    var rng = SeededGenerator(seed: seed)
    let conv = DepthwiseConv2D(channels: c.c, channelMultiplier: c.m, kernelSize: c.kernel, stride: c.stride,
      padding: c.padding, bias: c.bias, rng: &rng)
    if let b = conv.bias { b.value.fillUniform(-1, 1, using: &rng) }
    let x = Tensor.uniform([c.n, c.c, c.h, c.w], using: &rng)
    return (conv, x)
  }

  /// y, dx, dW and db (empty without bias) of a layer and input made from `seed`, with a dy drawn
  /// from `dySeed`.
  private func forwardAndBackward(_ c: DepthwiseCase, seed: UInt64, dySeed: UInt64) throws -> [[Float]] {
    let (conv, x) = make(c, seed: seed)
    var rng = SeededGenerator(seed: dySeed)
    let y = try conv.forward(x).array
    let dy = Tensor.uniform(try conv.outputShape(for: x.shape), using: &rng)
    conv.zeroGrad()
    let dx = try conv.backward(dy).array
    return [y, dx, conv.weight.grad.array, conv.bias?.grad.array ?? []]
  }

  func testStateDictIsPyTorchs() {
    var rng = SeededGenerator(seed: 1)
    let conv = DepthwiseConv2D(channels: 6, channelMultiplier: 2, kernelSize: 3, stride: 2, padding: 1, rng: &rng)
    XCTAssertEqual(conv.namedParameters().map(\.0), ["weight", "bias"])
    XCTAssertEqual(conv.weight.shape, [12, 1, 3, 3])
    XCTAssertEqual(conv.bias?.shape, [12])
    XCTAssertEqual(conv.outChannels, 12)
    let bound = Float(1) / 3  // 1/√(fan_in), fan_in = 1·3·3
    XCTAssertTrue(conv.weight.value.array.allSatisfy { abs($0) <= bound })
    XCTAssertGreaterThan(conv.weight.value.array.map(abs).max()!, 0.7 * bound)
    XCTAssertEqual(try conv.outputShape(for: [4, 6, 7, 7]), [4, 12, 4, 4])
    XCTAssertThrowsError(try conv.outputShape(for: [4, 5, 7, 7]))
    XCTAssertThrowsError(try conv.forward(Tensor(zeros: [1, 6, 7])))
  }

  func testForwardAndBackwardMatchReference() throws {
    for (i, c) in Self.cases.enumerated() {
      let (conv, x) = make(c, seed: UInt64(100 + i))
      let y = try conv.forward(x)
      let ref = Reference.groupedConv2d(DoubleTensor(x), weight: DoubleTensor(conv.weight.value),
        bias: conv.bias.map { DoubleTensor($0.value) }, stride: c.stride, padding: c.padding, groups: c.c)
      XCTAssertEqual(y.shape, ref.shape, "\(c)")
      assertClose(y, ref, rtol: 1e-5, atol: 1e-5, "y, \(c)")
      var rng = SeededGenerator(seed: UInt64(300 + i))
      let dy = Tensor.uniform(y.shape, using: &rng)
      conv.zeroGrad()
      let dx = try conv.backward(dy)
      let g = Reference.groupedConv2dBackward(DoubleTensor(x), weight: DoubleTensor(conv.weight.value),
        dy: DoubleTensor(dy), stride: c.stride, padding: c.padding, groups: c.c)
      assertClose(dx, g.dx, rtol: 1e-5, atol: 1e-5, "dx, \(c)")
      assertClose(conv.weight.grad, g.dw, rtol: 1e-5, atol: 1e-5, "dW, \(c)")
      if let b = conv.bias { assertClose(b.grad, g.db, rtol: 1e-5, atol: 1e-5, "db, \(c)") }
      // Gradients accumulate: a second backward adds the same again.
      _ = try conv.backward(dy)
      assertClose(conv.weight.grad, DoubleTensor(shape: g.dw.shape, values: g.dw.values.map { 2 * $0 }),
        rtol: 1e-5, atol: 1e-5, "dW twice, \(c)")
    }
  }

  func testEveryKernelVariantMatchesReferenceAndPortable() throws {
    let variants = DepthwiseConv2D.supportedKernelVariants
    XCTAssertTrue(variants.contains("portable"))
    XCTAssertTrue(variants.contains(DepthwiseConv2D.kernelVariant))
    XCTAssertFalse(DepthwiseConv2D.selectKernelVariant("no-such-variant"))
    defer { DepthwiseConv2D.selectKernelVariant(nil) }
    for (i, c) in Self.cases.enumerated() {
      // y, dx, dW, db of each variant, the portable one first.
      var results: [[[Float]]] = []
      for v in ["portable"] + variants.filter({ $0 != "portable" }) {
        XCTAssertTrue(DepthwiseConv2D.selectKernelVariant(v))
        XCTAssertEqual(DepthwiseConv2D.kernelVariant, v)
        let (conv, x) = make(c, seed: UInt64(1100 + i))
        let y = try conv.forward(x)
        var rng = SeededGenerator(seed: UInt64(1200 + i))
        let dy = Tensor.uniform(y.shape, using: &rng)
        conv.zeroGrad()
        let dx = try conv.backward(dy)
        let ref = Reference.groupedConv2d(DoubleTensor(x), weight: DoubleTensor(conv.weight.value),
          bias: conv.bias.map { DoubleTensor($0.value) }, stride: c.stride, padding: c.padding, groups: c.c)
        let g = Reference.groupedConv2dBackward(DoubleTensor(x), weight: DoubleTensor(conv.weight.value),
          dy: DoubleTensor(dy), stride: c.stride, padding: c.padding, groups: c.c)
        assertClose(y, ref, rtol: 1e-5, atol: 1e-5, "y, \(v), \(c)")
        assertClose(dx, g.dx, rtol: 1e-5, atol: 1e-5, "dx, \(v), \(c)")
        assertClose(conv.weight.grad, g.dw, rtol: 1e-5, atol: 1e-5, "dW, \(v), \(c)")
        if let b = conv.bias { assertClose(b.grad, g.db, rtol: 1e-5, atol: 1e-5, "db, \(v), \(c)") }
        results.append([y.array, dx.array, conv.weight.grad.array, conv.bias?.grad.array ?? []])
      }
      // dW and db are long sums that the variants add in different orders (per output column,
      // per lane of 8 or 16 columns, by rows or by flat chunks): they agree to the reference's
      // tolerance; y and dx (nine terms each) to a tighter one.
      for r in results.dropFirst() {
        for (j, name) in ["y", "dx", "dW", "db"].enumerated() {
          assertClose(r[j], results[0][j].map(Double.init), rtol: 1e-5, atol: j < 2 ? 1e-6 : 1e-5,
            "\(name) against portable, \(c)")
        }
      }
    }
  }

  func testAgreesWithGroupedConv2D() throws {
    // The same layer through Conv2D(groups: C), i.e. im2col + one sgemm per group.
    let c = DepthwiseCase(n: 3, c: 6, h: 9, w: 7, m: 2, stride: (2, 2))
    let (dw, x) = make(c, seed: 17)
    var rng = SeededGenerator(seed: 18)
    let conv = Conv2D(inChannels: 6, outChannels: 12, kernelSize: 3, stride: 2, padding: 1, groups: 6, rng: &rng)
    conv.weight.value.data.update(from: dw.weight.value.data, count: dw.weight.value.count)
    conv.bias!.value.data.update(from: dw.bias!.value.data, count: 12)
    let want = try conv.forward(x).array.map(Double.init)
    assertClose(try dw.forward(x).array, want, rtol: 1e-5, atol: 1e-5)
    let dy = Tensor.uniform(try dw.outputShape(for: x.shape), using: &rng)
    conv.zeroGrad()
    dw.zeroGrad()
    let wantDx = try conv.backward(dy).array.map(Double.init)
    assertClose(try dw.backward(dy).array, wantDx, rtol: 1e-5, atol: 1e-5)
    assertClose(dw.weight.grad.array, conv.weight.grad.array.map(Double.init), rtol: 1e-5, atol: 1e-5)
  }

  func testWithoutInputGradientStillGivesParameterGradients() throws {
    // The general path, and the AVX-512 stride-1 and stride-2 (8×8, 16 wide) paths.
    for c in [DepthwiseCase(n: 2, c: 3, h: 5, w: 5, stride: (2, 2)), DepthwiseCase(n: 2, c: 3, h: 6, w: 7),
              DepthwiseCase(n: 2, c: 2, h: 8, w: 8, m: 2, stride: (2, 2)),
              DepthwiseCase(n: 2, c: 3, h: 8, w: 16, stride: (2, 2))] {
      try checkWithoutInputGradient(c)
    }
  }

  private func checkWithoutInputGradient(_ c: DepthwiseCase) throws {
    let (conv, x) = make(c, seed: 21)
    conv.propagatesInputGradient = false
    let xBefore = x.array
    let y = try conv.forward(x)
    var rng = SeededGenerator(seed: 22)
    let dy = Tensor.uniform(y.shape, using: &rng)
    conv.zeroGrad()
    _ = try conv.backward(dy)
    assertBitwiseEqual(x.array, xBefore, "the input must not change, \(c)")
    let g = Reference.groupedConv2dBackward(DoubleTensor(x), weight: DoubleTensor(conv.weight.value),
      dy: DoubleTensor(dy), stride: c.stride, padding: c.padding, groups: c.c)
    assertClose(conv.weight.grad, g.dw, rtol: 1e-5, atol: 1e-5, "dW, \(c)")
    if let b = conv.bias { assertClose(b.grad, g.db, rtol: 1e-5, atol: 1e-5, "db, \(c)") }
  }

  func testGradientsMatchFiniteDifferences() {
    let small: [DepthwiseCase] = [
      DepthwiseCase(n: 2, c: 3, h: 4, w: 5),
      DepthwiseCase(n: 1, c: 1, h: 5, w: 5, stride: (2, 2)),
      DepthwiseCase(n: 2, c: 2, h: 1, w: 1),
      DepthwiseCase(n: 2, c: 2, h: 2, w: 2, m: 2, stride: (2, 2)),
      DepthwiseCase(n: 1, c: 2, h: 5, w: 4, kernel: (1, 3), stride: (1, 2), padding: (0, 1)),
      DepthwiseCase(n: 1, c: 3, h: 6, w: 6, kernel: (5, 5), stride: (2, 2), padding: (2, 2)),
      DepthwiseCase(n: 1, c: 1, h: 3, w: 17),  // by rows (AVX-512)
      DepthwiseCase(n: 1, c: 2, h: 3, w: 8, m: 2),  // rows of 8 lanes (AVX-512)
    ]
    for (i, c) in small.enumerated() {
      let (conv, x) = make(c, seed: UInt64(700 + i))
      GradientChecker().assertGradients(conv, input: x, "\(c)")
    }
  }

  func testResultsDoNotDependOnThreadCount() throws {
    let saved = Threads.count
    defer { Threads.count = saved }
    let shapes: [DepthwiseCase] = [
      DepthwiseCase(n: 16, c: 6, h: 16, w: 16),  // 96 planes: both loops split
      DepthwiseCase(n: 3, c: 5, h: 15, w: 15, stride: (2, 2)),
      DepthwiseCase(n: 2, c: 4, h: 9, w: 11, m: 2, kernel: (5, 3), padding: (2, 1)),
      DepthwiseCase(n: 64, c: 7, h: 16, w: 16, stride: (2, 2)),  // 448 planes of 8×8
      DepthwiseCase(n: 16, c: 6, h: 8, w: 8, stride: (2, 2)),  // 4-wide outputs, two rows per vector
      DepthwiseCase(n: 8, c: 6, h: 12, w: 28, m: 2),  // overlapping last blocks
      DepthwiseCase(n: 16, c: 7, h: 8, w: 8),  // rows of 8 lanes, constant bounds (AVX-512)
      DepthwiseCase(n: 4, c: 5, h: 11, w: 13, m: 2),  // chunks across row ends, multiplier 2
      DepthwiseCase(n: 8, c: 5, h: 7, w: 8, m: 2),  // rows of 8 lanes, odd height
      DepthwiseCase(n: 4, c: 5, h: 6, w: 40),  // by rows, a partial last block
      DepthwiseCase(n: 16, c: 6, h: 4, w: 4, m: 2),  // planes of ≤ 64 floats, channels outer
      DepthwiseCase(n: 16, c: 6, h: 7, w: 7, stride: (2, 2)),  // the same by rows at stride 2
      // Small planes in groups of channels: 2 threads split the planes (forward) inside a sample
      // and inside a group of 4 channels, and the channels (backward) inside a group.
      DepthwiseCase(n: 41, c: 101, h: 2, w: 2),
      DepthwiseCase(n: 47, c: 27, h: 4, w: 4),
    ]
    for (i, c) in shapes.enumerated() {
      var results: [[[Float]]] = []
      for threads in [1, 2] {
        Threads.count = threads
        results.append(try forwardAndBackward(c, seed: UInt64(900 + i), dySeed: UInt64(950 + i)))
      }
      for (j, name) in ["y", "dx", "dW", "db"].enumerated() {
        assertBitwiseEqual(results[0][j], results[1][j], "\(name) with 1 vs 2 threads, \(c)")
      }
    }
  }

  /// The AVX2 variant runs stride-1 planes of 1, 2, 4, 8 or 16 floats in registers (several to a
  /// vector); through its padded plane copies (`dw_avx2_group_small_planes(0)`) the results agree to
  /// rounding (dW and db sum in another order), in one piece and in two. The layer runs these
  /// shapes (more than one sample) through the lanes kernels with AVX2, so this calls the per-plane
  /// kernels directly (`perPlaneKernels`); the layer reaches the grouped path with one sample or
  /// more channels per filter. (The grouped results against the Double reference, through the
  /// kernels' entry points: DepthwiseLanesTests, which holds them to the lanes kernels' bits.)
  func testAVX2SmallPlanesInGroupsAgreeWithPaddedPlanes() throws {
    guard DepthwiseConv2D.supportedKernelVariants.contains("avx2") else {
      throw XCTSkip("the CPU has no AVX2")
    }
    let shapes: [DepthwiseCase] = [
      DepthwiseCase(n: 41, c: 101, h: 2, w: 2),
      DepthwiseCase(n: 23, c: 91, h: 2, w: 4),
      DepthwiseCase(n: 91, c: 95, h: 1, w: 2, bias: false),
      DepthwiseCase(n: 9, c: 37, h: 1, w: 1),
      DepthwiseCase(n: 3, c: 7, h: 4, w: 2),
      DepthwiseCase(n: 5, c: 3, h: 8, w: 1),
      DepthwiseCase(n: 2, c: 1, h: 2, w: 2),
      DepthwiseCase(n: 47, c: 27, h: 4, w: 4),  // 16 floats: two vectors a plane
      DepthwiseCase(n: 5, c: 3, h: 8, w: 2, bias: false),
      DepthwiseCase(n: 3, c: 2, h: 16, w: 1),
    ]
    try compareGrouping(variant: "avx2", setGrouping: { dw_avx2_group_small_planes($0) }, shapes: shapes, seed: 2700,
      run: perPlaneKernels) {
      grouped, padded, label in
      for (j, name) in ["y", "dx", "dW", "db"].enumerated() {
        assertClose(grouped[j], padded[j].map(Double.init), rtol: 1e-5, atol: j < 2 ? 1e-6 : 1e-5,
          "\(name), grouped vs padded planes, \(label)")
      }
    }
  }

  /// The AVX-512 variant runs small stride-1 planes several channels to a vector; one plane to a
  /// vector (`dw_avx512_group_small_planes(0)`) gives the same bits: y, dx, dW and db, with 1
  /// thread and with 2, which split the planes (forward) and the channels (backward) inside a
  /// group of 4 (2×2), 2 (2×4) and 8 (1×2) channels.
  func testSmallPlanesInGroupsGiveOnePlaneAVectorsBits() throws {
    guard DepthwiseConv2D.supportedKernelVariants.contains("avx512") else {
      throw XCTSkip("the CPU has no AVX-512: the grouped path does not run")
    }
    let shapes: [DepthwiseCase] = [
      DepthwiseCase(n: 41, c: 101, h: 2, w: 2),
      DepthwiseCase(n: 23, c: 91, h: 2, w: 4),
      DepthwiseCase(n: 91, c: 95, h: 1, w: 2, bias: false),
      DepthwiseCase(n: 47, c: 27, h: 4, w: 4),
      DepthwiseCase(n: 9, c: 37, h: 1, w: 1),
      DepthwiseCase(n: 3, c: 7, h: 4, w: 2),
    ]
    try compareGrouping(variant: "avx512", setGrouping: { dw_avx512_group_small_planes($0) }, shapes: shapes, seed: 1700) {
      grouped, onePlane, label in
      for (j, name) in ["y", "dx", "dW", "db"].enumerated() {
        assertBitwiseEqual(grouped[j], onePlane[j], "\(name), grouped vs one plane a vector, \(label)")
      }
    }
  }

  /// y, dx, dW and db (empty without bias) as `forwardAndBackward` makes them, from the per-plane
  /// C kernels called directly: `dw_forward_planes` over the planes and `dw_backward_channels` over
  /// the channels, each in `Threads.count` pieces, as the layer's threads split them.
  private func perPlaneKernels(_ c: DepthwiseCase, seed: UInt64, dySeed: UInt64) throws -> [[Float]] {
    let (conv, x) = make(c, seed: seed)
    let ys = try conv.outputShape(for: x.shape)
    var rng = SeededGenerator(seed: dySeed)
    let dy = Tensor.uniform(ys, using: &rng)
    var g = DWGeometry(n: c.n, c: c.c, m: c.m, h: c.h, w: c.w, kh: c.kernel.0, kw: c.kernel.1, sh: c.stride.0,
      sw: c.stride.1, ph: c.padding.0, pw: c.padding.1, oh: ys[2], ow: ys[3])
    let y = Tensor(zeros: ys), dx = Tensor(zeros: x.shape)
    let dW = Tensor(zeros: conv.weight.shape), db = Tensor(zeros: [c.c * c.m])
    var scratch = [Float](repeating: .nan, count: max(1, dw_forward_scratch(&g), dw_backward_scratch(&g, c.c)))
    let parts = Threads.count, planes = c.n * c.c * c.m
    for k in 0..<parts {
      dw_forward_planes(&g, x.data, conv.weight.value.data, conv.bias?.value.data, y.data, planes * k / parts,
        planes * (k + 1) / parts, &scratch)
    }
    for k in 0..<parts {
      dw_backward_channels(&g, x.data, conv.weight.value.data, dy.data, dx.data, dW.data, c.bias ? db.data : nil,
        c.c * k / parts, c.c * (k + 1) / parts, &scratch)
    }
    return [y.array, dx.array, dW.array, c.bias ? db.array : []]
  }

  /// With `variant` selected, each shape's y, dx, dW and db (from `run`: the layer unless said)
  /// with small planes grouped (`setGrouping(1)`) and not (`setGrouping(0)`), with 1 thread and
  /// with 2, handed to `compare` (grouped first); restores the thread count, the grouping and the
  /// variant.
  private func compareGrouping(
    variant: String, setGrouping: (Int32) -> Bool, shapes: [DepthwiseCase], seed: UInt64,
    run: ((DepthwiseCase, UInt64, UInt64) throws -> [[Float]])? = nil,
    _ compare: (_ grouped: [[Float]], _ ungrouped: [[Float]], _ label: String) -> Void
  ) throws {
    let run = run ?? { try self.forwardAndBackward($0, seed: $1, dySeed: $2) }
    let savedThreads = Threads.count
    defer {
      Threads.count = savedThreads
      _ = setGrouping(1)
      DepthwiseConv2D.selectKernelVariant(nil)
    }
    XCTAssertTrue(DepthwiseConv2D.selectKernelVariant(variant))
    for (i, c) in shapes.enumerated() {
      for threads in [1, 2] {
        Threads.count = threads
        var results: [[[Float]]] = []
        for grouped: Int32 in [1, 0] {
          _ = setGrouping(grouped)
          results.append(try run(c, seed + UInt64(i), seed + 100 + UInt64(i)))
        }
        compare(results[0], results[1], "\(threads) threads, \(c)")
      }
    }
  }
}
