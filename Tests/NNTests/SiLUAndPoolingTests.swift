// SiLUAndPoolingTests: SiLU against its Double twin (including saturated inputs and NaN),
// finite differences and thread-count independence; AdaptiveAvgPool2D (to 1×1 and to sizes
// that do not divide the input) against its twin and by finite differences; max pooling 3/2/1
// on odd, 1×1 and 2×2 maps, where padding never wins.
import NN
import TensorCore
import TestSupport
import XCTest

final class SiLUAndPoolingTests: XCTestCase {
  func testSiLUMatchesReference() throws {
    var rng = SeededGenerator(seed: 1)
    let x = Tensor.uniform([3, 5, 7, 11], -12, 12, using: &rng)
    for (i, v) in [Float(-1e4), -100, -88.8, -20, -1e-8, 0, 1e-8, 16.7, 20, 100, 1e4].enumerated() { x[i] = v }
    let silu = SiLU()
    let y = try silu.forward(x)
    assertClose(y, Reference.silu(DoubleTensor(x)), rtol: 1e-6, atol: 1e-7)
    let dy = Tensor.uniform(x.shape, using: &rng)
    let dx = try silu.backward(dy)
    assertClose(dx, Reference.siluBackward(DoubleTensor(x), dy: DoubleTensor(dy)), rtol: 1e-5, atol: 1e-7)
    XCTAssertTrue(y.array.allSatisfy { $0.isFinite } && dx.array.allSatisfy { $0.isFinite })
    // NaN propagates.
    let nan = Tensor(shape: [1, 2], values: [.nan, 1])
    XCTAssertTrue(try silu.forward(nan)[0].isNaN)
  }

  func testSiLUGradient() {
    var rng = SeededGenerator(seed: 2)
    GradientChecker().assertGradients(SiLU(), input: .uniform([2, 3, 3, 5], -6, 6, using: &rng))
    GradientChecker().assertGradients(SiLU(), input: .uniform([1, 1, 1, 1], using: &rng))
  }

  func testSiLUDoesNotDependOnThreadCount() throws {
    let saved = Threads.count
    defer { Threads.count = saved }
    var rng = SeededGenerator(seed: 3)
    let x = Tensor.uniform([2, 5, 101, 67], -8, 8, using: &rng)  // above the parallel chunk size, odd tail
    let dy = Tensor.uniform(x.shape, using: &rng)
    var results: [[Float]] = []
    for threads in [1, 2] {
      Threads.count = threads
      let silu = SiLU()
      results.append(try silu.forward(x).array)
      results.append(try silu.backward(dy).array)
    }
    assertBitwiseEqual(results[0], results[2], "SiLU y with 1 vs 2 threads")
    assertBitwiseEqual(results[1], results[3], "SiLU dx with 1 vs 2 threads")
  }

  func testAdaptiveAvgPoolMatchesReference() throws {
    var rng = SeededGenerator(seed: 4)
    for (shape, size) in [([2, 3, 5, 7], (1, 1)), ([1, 2, 5, 7], (2, 3)), ([2, 1, 7, 5], (3, 3)),
                          ([2, 3, 1, 1], (1, 1)), ([1, 2, 4, 4], (2, 2)), ([1, 1, 2, 3], (4, 5))] {
      let pool = AdaptiveAvgPool2D(outputSize: size)
      let x = Tensor.uniform(shape, using: &rng)
      let y = try pool.forward(x)
      XCTAssertEqual(y.shape, [shape[0], shape[1], size.0, size.1])
      assertClose(y, Reference.adaptiveAvgPool2d(DoubleTensor(x), outputSize: size), rtol: 1e-6, atol: 1e-6, "\(shape) → \(size)")
      let dy = Tensor.uniform(y.shape, using: &rng)
      assertClose(try pool.backward(dy), Reference.adaptiveAvgPool2dBackward(inputShape: shape, dy: DoubleTensor(dy)),
        rtol: 1e-6, atol: 1e-6, "backward \(shape) → \(size)")
      GradientChecker().assertGradients(pool, input: x, "AdaptiveAvgPool2D \(shape) → \(size)")
    }
    // To 1×1 it is the global mean, keeping the 4-D shape.
    let x = Tensor.uniform([2, 3, 4, 5], using: &rng)
    assertClose(try AdaptiveAvgPool2D(outputSize: 1).forward(x).array,
      try GlobalAvgPool2D().forward(x).array.map(Double.init), rtol: 1e-6, atol: 1e-7)
    XCTAssertThrowsError(try AdaptiveAvgPool2D(outputSize: 1).forward(Tensor(zeros: [2, 3])))
  }

  func testMaxPool3Stride2Padding1() throws {
    var rng = SeededGenerator(seed: 5)
    for shape in [[2, 3, 7, 9], [1, 1, 1, 1], [2, 2, 2, 2], [1, 17, 5, 6]] {
      // All negative: a padded position, read as 0, would win every border window.
      let x = Tensor.uniform(shape, -3, -1, using: &rng)
      let pool = MaxPool2D(kernelSize: 3, stride: 2, padding: 1)
      let y = try pool.forward(x)
      assertClose(y, Reference.maxPool2d(DoubleTensor(x), k: 3, stride: 2, padding: 1), rtol: 0, atol: 0, "\(shape)")
      XCTAssertTrue(y.array.allSatisfy { $0 < -0.99 }, "padding never wins, \(shape)")
      let dy = Tensor.uniform(y.shape, using: &rng)
      assertClose(try pool.backward(dy), Reference.maxPool2dBackward(DoubleTensor(x), dy: DoubleTensor(dy), k: 3,
        stride: 2, padding: 1), rtol: 1e-6, atol: 1e-6, "backward \(shape)")
      let sep = Tensor.wellSeparated(shape, spacing: 0.05, using: &rng)
      GradientChecker(stepSize: 1e-2, skipsNonSmoothPoints: true)
        .assertGradients(pool, input: sep, maxSkippedFraction: 0, "MaxPool 3/2/1 \(shape)")
    }
  }

  /// The 3×3/2/1 max-pool runs 16 output columns a vector with AVX-512 and 8 with AVX2, in two
  /// passes (columns, then rows) on even planes whose output rows are 2, 4 or a multiple of 8
  /// wide, and one window at a time elsewhere: every width from 1 to 36 and some past 64, with
  /// ties, −∞ and NaN (the first maximum of each window wins, or its last NaN, and its argmax
  /// routes the gradient), against the Double twin.
  func testMaxPool3Stride2Padding1EveryWidth() throws {
    var rng = SeededGenerator(seed: 8)
    // Widths past 32 and 64 take two and three vectors of 16 output columns a row (AVX2: past 16, 32, …).
    for w in Array(1...36) + [47, 63, 64, 65, 66, 79] {
      // Even heights 4, 8 and 12 with even widths take the two-pass loop (output rows 2 wide need
      // an even number of them: 4 and 12 do, 2 does not).
      for h in [1, 2, 4, 5, 8, 12] {
        let shape = [2, 3, h, w]
        // Values from {NaN, −∞, 0, 1, 2}: many ties, windows that are −∞ throughout, and NaNs.
        let x = Tensor(shape: shape, values: (0..<(2 * 3 * h * w)).map { _ in
          let v = Int.random(in: 0..<6, using: &rng)
          return v == 0 ? -Float.infinity : v == 5 ? .nan : Float(v - 1)
        })
        let pool = MaxPool2D(kernelSize: 3, stride: 2, padding: 1)
        let y = try pool.forward(x)
        let ref = Reference.maxPool2d(DoubleTensor(x), k: 3, stride: 2, padding: 1)
        XCTAssertEqual(y.array.map { $0.isNaN ? "NaN" : "\($0)" }, ref.values.map { $0.isNaN ? "NaN" : "\(Float($0))" },
          "forward \(shape)")
        // Distinct gradients (powers of two: exact sums), so each one's destination shows.
        let dy = Tensor(shape: y.shape, values: (0..<y.count).map { Float(1 << ($0 % 20)) })
        assertClose(try pool.backward(dy), Reference.maxPool2dBackward(DoubleTensor(x), dy: DoubleTensor(dy), k: 3,
          stride: 2, padding: 1), rtol: 0, atol: 0, "backward \(shape)")
      }
    }
  }

  func testPoolingDoesNotDependOnThreadCount() throws {
    let saved = Threads.count
    defer { Threads.count = saved }
    var rng = SeededGenerator(seed: 6)
    let x = Tensor.uniform([8, 16, 17, 15], using: &rng)  // 128 planes: above every chunk size, so the loops split
    var results: [[Float]] = []
    for threads in [1, 2] {
      Threads.count = threads
      for layer in [MaxPool2D(kernelSize: 3, stride: 2, padding: 1), AdaptiveAvgPool2D(outputSize: (2, 3)),
                    AdaptiveAvgPool2D(outputSize: 1)] as [Module] {
        let y = try layer.forward(x)
        var g = SeededGenerator(seed: 7)
        results.append(y.array)
        results.append(try layer.backward(.uniform(y.shape, using: &g)).array)
      }
    }
    for i in 0..<6 { assertBitwiseEqual(results[i], results[i + 6], "output \(i) with 1 vs 2 threads") }
  }
}
