// GradientCheckTests: gradient checks (TestSupport's GradientChecker: the Double twin by
// central differences, the Float layer against the twin) of every layer's input and parameter
// gradients, on small shapes so that every element is perturbed. ReLU uses Caffe's kink rule on its input; max pooling uses well-separated inputs
// plus the non-smoothness detector; networks with ReLUs inside use the detector.
import NN
import TensorCore
import TestSupport
import XCTest

final class GradientCheckTests: XCTestCase {
  func testLinear() {
    var rng = SeededGenerator(seed: 1)
    for (n, fin, fout, bias) in [(3, 5, 4, true), (1, 1, 1, true), (2, 7, 3, false)] {
      let lin = Linear(inFeatures: fin, outFeatures: fout, bias: bias, rng: &rng)
      GradientChecker().assertGradients(lin, input: .uniform([n, fin], using: &rng), "Linear \(fin)→\(fout)")
    }
  }

  func testConv2D() {
    var rng = SeededGenerator(seed: 2)
    for (n, cin, cout, h, w, k, s, p) in [(2, 2, 3, 5, 4, 3, 1, 1), (1, 1, 2, 5, 5, 3, 2, 0), (2, 3, 2, 2, 3, 1, 1, 0),
                                          (3, 2, 2, 1, 1, 1, 1, 0), (1, 2, 1, 1, 1, 3, 1, 1)] {
      let conv = Conv2D(inChannels: cin, outChannels: cout, kernelSize: k, stride: s, padding: p, rng: &rng)
      GradientChecker().assertGradients(conv, input: .uniform([n, cin, h, w], using: &rng), "Conv2D k\(k) s\(s) p\(p)")
    }
  }

  func testReLU() {
    var rng = SeededGenerator(seed: 3)
    let x = Tensor.uniform([2, 3, 4, 5], using: &rng)
    x[0] = 3e-6  // within h = 1e-5 of the kink at 0: a central difference there would be wrong
    x[1] = -4e-6
    let report = GradientChecker(kink: 0).assertGradients(ReLU(), input: x)
    XCTAssertGreaterThanOrEqual(report?.skipped ?? 0, 2, "the points at the kink are skipped")
    XCTAssertEqual((report?.checked ?? 0) + (report?.skipped ?? 0), x.count)
  }

  func testSigmoid() {
    var rng = SeededGenerator(seed: 4)
    GradientChecker().assertGradients(Sigmoid(), input: .uniform([2, 3, 3, 5], -4, 4, using: &rng))
  }

  func testMaxPool2D() {
    var rng = SeededGenerator(seed: 5)
    let cases = [(2, 2, 0, [2, 2, 4, 5]), (3, 2, 1, [1, 3, 5, 7]), (3, 1, 1, [1, 2, 4, 4]), (2, 1, 1, [2, 1, 3, 3])]
    for (k, s, p, shape) in cases {
      // Pairwise gaps of 0.05 > 2h: no perturbation ties two window elements.
      let x = Tensor.wellSeparated(shape, spacing: 0.05, using: &rng)
      GradientChecker(skipsNonSmoothPoints: true)
        .assertGradients(MaxPool2D(kernelSize: k, stride: s, padding: p), input: x, maxSkippedFraction: 0,
          "MaxPool k\(k) s\(s) p\(p)")
    }
  }

  func testAvgPool2D() {
    var rng = SeededGenerator(seed: 6)
    for (k, s, p) in [(2, 2, 0), (3, 2, 1), (3, 1, 1)] {
      GradientChecker().assertGradients(AvgPool2D(kernelSize: k, stride: s, padding: p),
        input: .uniform([2, 2, 5, 4], using: &rng), "AvgPool k\(k) s\(s) p\(p)")
    }
  }

  func testGlobalAvgPool2D() {
    var rng = SeededGenerator(seed: 7)
    GradientChecker().assertGradients(GlobalAvgPool2D(), input: .uniform([2, 3, 3, 5], using: &rng))
    GradientChecker().assertGradients(GlobalAvgPool2D(), input: .uniform([1, 2, 1, 1], using: &rng))
  }

  func testFlatten() {
    var rng = SeededGenerator(seed: 8)
    GradientChecker().assertGradients(Flatten(), input: .uniform([2, 3, 2, 2], using: &rng))
  }

  func testDropoutWithAFixedMask() {
    var rng = SeededGenerator(seed: 9)
    let drop = Dropout(p: 0.4, seed: 77)
    let saved = drop.rng
    // Rewind the mask generator before every forward pass, so all passes use one mask.
    let checker = GradientChecker(beforeForward: { ($0 as! Dropout).rng = saved })
    checker.assertGradients(drop, input: .uniform([3, 4, 5], using: &rng))
  }

  func testBatchNormTraining() {
    var rng = SeededGenerator(seed: 10)
    // Not N·H·W = 2 per channel: there x̂ = ±1 whatever x is, and the true input gradient is 0
    // but for eps. [3, 2, 1, 1] keeps the 1×1 maps with 3 values per channel.
    for shape in [[3, 2, 2, 3], [4, 3], [3, 2, 1, 1]] {
      let bn = BatchNorm2D(channels: shape[1])
      randomizeParameters(bn, 0.5, 1.5, using: &rng)
      GradientChecker()
        .assertGradients(bn, input: .uniform(shape, -2, 2, using: &rng), "\(shape)")
    }
  }

  func testBatchNormEvaluation() throws {
    var rng = SeededGenerator(seed: 11)
    let bn = BatchNorm2D(channels: 3)
    randomizeParameters(bn, 0.5, 1.5, using: &rng)
    _ = try bn.forward(.uniform([4, 3, 2, 2], -1, 3, using: &rng))
    bn.eval()
    GradientChecker().assertGradients(bn, input: .uniform([2, 3, 2, 3], using: &rng))
  }

  func testSmallConvNetWithReLUAndPooling() {
    var rng = SeededGenerator(seed: 12)
    let net = Sequential([
      ("conv1", Conv2D(inChannels: 2, outChannels: 3, kernelSize: 3, padding: 1, rng: &rng)),
      ("bn1", BatchNorm2D(channels: 3)),
      ("relu1", ReLU()),
      ("pool", MaxPool2D(kernelSize: 2)),
      ("conv2", Conv2D(inChannels: 3, outChannels: 2, kernelSize: 1, rng: &rng)),
      ("act", Sigmoid()),
      ("gap", GlobalAvgPool2D()),
      ("flatten", Flatten()),
      ("fc", Linear(inFeatures: 2, outFeatures: 2, rng: &rng)),
    ])
    GradientChecker(skipsNonSmoothPoints: true)
      .assertGradients(net, input: .uniform([2, 2, 4, 4], using: &rng))
  }

  /// y = 3x (or `factor`·x) with a backward that multiplies by `backwardFactor`, and its
  /// correct Double twin y = `factor`·x.
  private final class BrokenScale: Module {
    let factor: Float, backwardFactor: Float
    var out: Tensor?, grad: Tensor?
    init(factor: Float = 3, backwardFactor: Float) {
      self.factor = factor
      self.backwardFactor = backwardFactor
    }
    override func forward(_ x: Tensor) throws -> Tensor {
      let y = reuse(&out, shape: x.shape)
      for i in 0..<x.count { y[i] = factor * x[i] }
      return y
    }
    override func backward(_ dy: Tensor) throws -> Tensor {
      let dx = reuse(&grad, shape: dy.shape)
      for i in 0..<dy.count { dx[i] = backwardFactor * dy[i] }
      return dx
    }
    var twin: ReferenceLayer {
      let f = Double(factor)
      return ReferenceLayer(name: "Scale", parameters: [],
        forward: { x, _ in DoubleTensor(shape: x.shape, values: x.values.map { f * $0 }) },
        backward: { _, _, dy in (DoubleTensor(shape: dy.shape, values: dy.values.map { f * $0 }), []) })
    }
  }

  func testCheckerCatchesAWrongGradient() throws {
    // A layer whose backward is off by a factor must fail the check: the checker can fail.
    var rng = SeededGenerator(seed: 13)
    let layer = BrokenScale(backwardFactor: 2.9)
    let report = try GradientChecker(reference: layer.twin).check(layer, input: .uniform([2, 3], using: &rng))
    XCTAssertEqual(report.checked, 6)
    XCTAssertEqual(report.failures.count, 6)
    XCTAssertTrue(report.failures.allSatisfy { $0.stage == .layer })
    XCTAssertGreaterThan(report.maxRelativeError, 0.01)
  }

  func testCheckerCatchesAWrongSmallGradientTheOldRulePassed() throws {
    // y = 1e-4·x with a backward that returns twice the true gradient (2e-4·dy). The old rule,
    // |a − n| / max(|a|, |n|, 1) ≤ 1e-3, passes it: the error is at most 1e-4. The new one fails it.
    var rng = SeededGenerator(seed: 14)
    let layer = BrokenScale(factor: 1e-4, backwardFactor: 2e-4)
    let x = Tensor.uniform([3, 4], using: &rng)
    let report = try GradientChecker(reference: layer.twin).check(layer, input: x)
    XCTAssertEqual(report.checked, 12)
    XCTAssertEqual(report.failures.filter { $0.stage == .layer }.count, 12, "every element fails")
    XCTAssertTrue(report.failures.allSatisfy { $0.stage == .layer }, "the twin itself is right: \(report.failures)")
    for f in report.failures {
      let old = abs(f.analytic - f.numeric) / max(abs(f.analytic), abs(f.numeric), 1)
      XCTAssertLessThan(old, 1e-3, "the old tolerance passed \(f)")
      XCTAssertEqual(f.analytic / f.numeric, 2, accuracy: 1e-6)
    }
    // The right gradient at the same magnitude passes.
    let right = BrokenScale(factor: 1e-4, backwardFactor: 1e-4)
    XCTAssertTrue(try GradientChecker(reference: right.twin).check(right, input: x).failures.isEmpty)
  }

  func testCheckerCatchesAWrongReference() throws {
    // A twin whose backward disagrees with its own forward fails the Double stage, at 1e-4.
    var rng = SeededGenerator(seed: 15)
    let layer = BrokenScale(factor: 1e-4, backwardFactor: 1e-4)
    let wrongTwin = ReferenceLayer(name: "WrongScale", parameters: [],
      forward: { x, _ in DoubleTensor(shape: x.shape, values: x.values.map { 1e-4 * $0 }) },
      backward: { _, _, dy in (DoubleTensor(shape: dy.shape, values: dy.values.map { 1.01e-4 * $0 }), []) })
    let report = try GradientChecker(reference: wrongTwin).check(layer, input: .uniform([2, 3], using: &rng))
    XCTAssertEqual(report.failures.filter { $0.stage == .reference }.count, 6)
    XCTAssertGreaterThan(report.maxReferenceError, 0.005)
  }

  func testCheckerCatchesAWrongForward() throws {
    // The Float forward pass is checked against the twin too: y = 3.01x against y = 3x fails.
    var rng = SeededGenerator(seed: 16)
    let layer = BrokenScale(factor: 3.01, backwardFactor: 3.01)
    let report = try GradientChecker(reference: BrokenScale(factor: 3, backwardFactor: 3).twin)
      .check(layer, input: .uniform([2, 3], using: &rng))
    XCTAssertEqual(report.failures.filter { $0.stage == .forward }.count, 6)
  }

  func testModulesWithoutATwinAreAnErrorNotAPass() {
    final class Unknown: Module {}
    XCTAssertThrowsError(try GradientChecker().check(Unknown(), input: Tensor(zeros: [1, 2]))) { error in
      XCTAssertTrue("\(error)".contains("no Double reference for Unknown"), "\(error)")
    }
  }
}
