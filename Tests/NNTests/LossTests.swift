// LossTests: CrossEntropyLoss, BCEWithLogitsLoss and MSELoss against the Double references,
// their stored gradients against the references and finite differences, and stability for
// logits of ±1e4.
import NN
import TensorCore
import TestSupport
import XCTest

final class LossTests: XCTestCase {
  func testCrossEntropyMatchesReference() throws {
    var rng = SeededGenerator(seed: 1)
    for (n, k) in [(1, 2), (4, 3), (7, 10), (3, 1)] {
      let logits = Tensor.uniform([n, k], -3, 3, using: &rng)
      let labels = randomLabels(n, classes: k, using: &rng)
      let ce = CrossEntropyLoss()
      let loss = try ce(logits, labels: labels)
      let ref = Reference.softmaxCrossEntropy(DoubleTensor(logits), labels: labels.map(Int.init))
      XCTAssertEqual(Double(loss), ref.loss, accuracy: 1e-5 * max(1, ref.loss), "N\(n) K\(k)")
      assertClose(try XCTUnwrap(ce.gradient), ref.gradient, rtol: 1e-5, atol: 1e-7, "N\(n) K\(k)")
    }
  }

  func testCrossEntropyGradientMatchesFiniteDifferences() throws {
    var rng = SeededGenerator(seed: 2)
    let logits = Tensor.uniform([3, 4], -2, 2, using: &rng)
    let labels: [Int32] = [0, 3, 2]
    let ce = CrossEntropyLoss()
    _ = try ce(logits, labels: labels)
    let analytic = try XCTUnwrap(ce.gradient).array
    let numeric = try numericGradient(at: logits, stepSize: 1e-2) { Double(try CrossEntropyLoss()($0, labels: labels)) }
    assertClose(analytic, numeric, rtol: 1e-3, atol: 1e-4)
  }

  func testCrossEntropyIsStableForHugeLogits() throws {
    let logits = Tensor(shape: [3, 3], values: [1e4, -1e4, 0, -1e4, -1e4, 1e4, 1e4, 1e4, -1e4])
    let labels: [Int32] = [1, 2, 0]
    let ce = CrossEntropyLoss()
    let loss = try ce(logits, labels: labels)
    // Sample 0: −log softmax = 2e4; sample 1: 0; sample 2: log 2 (two tied maxima).
    XCTAssertTrue(loss.isFinite)
    XCTAssertEqual(Double(loss), (2e4 + 0 + log(2.0)) / 3, accuracy: 1e-2)
    let g = try XCTUnwrap(ce.gradient)
    XCTAssertTrue(g.array.allSatisfy(\.isFinite))
    let ref = Reference.softmaxCrossEntropy(DoubleTensor(logits), labels: labels.map(Int.init))
    assertClose(g, ref.gradient, rtol: 1e-5, atol: 1e-7)
  }

  func testCrossEntropyRejectsBadLabelsAndShapes() {
    let ce = CrossEntropyLoss()
    XCTAssertThrowsError(try ce(Tensor(zeros: [2, 3]), labels: [0, 3])) { XCTAssertTrue("\($0)".contains("label 3"), "\($0)") }
    XCTAssertThrowsError(try ce(Tensor(zeros: [2, 3]), labels: [0, -1]))
    XCTAssertThrowsError(try ce(Tensor(zeros: [2, 3]), labels: [0]))
    XCTAssertThrowsError(try ce(Tensor(zeros: [6]), labels: [0, 1]))
  }

  func testBCEWithLogitsMatchesReference() throws {
    var rng = SeededGenerator(seed: 3)
    for shape in [[5, 1], [2, 3, 4], [1]] {
      let logits = Tensor.uniform(shape, -4, 4, using: &rng)
      let targets = randomFloats(logits.count, 0, 1, using: &rng)
      let bce = BCEWithLogitsLoss()
      let loss = try bce(logits, targets: targets)
      let ref = Reference.bceWithLogits(DoubleTensor(logits), targets: targets.map(Double.init))
      XCTAssertEqual(Double(loss), ref.loss, accuracy: 1e-5 * max(1, ref.loss), "\(shape)")
      assertClose(try XCTUnwrap(bce.gradient), ref.gradient, rtol: 1e-5, atol: 1e-7, "\(shape)")
      let numeric = try numericGradient(at: logits) { Double(try BCEWithLogitsLoss()($0, targets: targets)) }
      assertClose(try XCTUnwrap(bce.gradient).array, numeric, rtol: 1e-3, atol: 1e-4, "FD \(shape)")
    }
  }

  func testBCEWithLogitsIsStableForHugeLogits() throws {
    let logits = Tensor(shape: [4, 1], values: [1e4, -1e4, 1e4, -1e4])
    let targets: [Float] = [0, 0, 1, 1]
    let bce = BCEWithLogitsLoss()
    let loss = try bce(logits, targets: targets)
    // Confidently wrong costs |z| = 1e4, confidently right costs 0: mean (1e4 + 0 + 0 + 1e4)/4.
    XCTAssertEqual(loss, 5000, accuracy: 1e-2)
    let g = try XCTUnwrap(bce.gradient).array
    XCTAssertEqual(g, [0.25, 0, 0, -0.25])
  }

  func testBCEWithLogitsRejectsMismatchedTargets() {
    XCTAssertThrowsError(try BCEWithLogitsLoss()(Tensor(zeros: [3, 1]), targets: [0, 1]))
  }

  func testMSEMatchesReference() throws {
    var rng = SeededGenerator(seed: 4)
    for shape in [[4, 1], [2, 3, 5], [1]] {
      let y = Tensor.uniform(shape, using: &rng), t = Tensor.uniform(shape, using: &rng)
      let mse = MSELoss()
      let loss = try mse(y, target: t)
      let ref = Reference.mse(DoubleTensor(y), target: DoubleTensor(t))
      XCTAssertEqual(Double(loss), ref.loss, accuracy: 1e-6)
      assertClose(try XCTUnwrap(mse.gradient), ref.gradient, rtol: 1e-6, atol: 1e-7)
      let numeric = try numericGradient(at: y) { Double(try MSELoss()($0, target: t)) }
      assertClose(try XCTUnwrap(mse.gradient).array, numeric, rtol: 1e-3, atol: 1e-5, "FD \(shape)")
    }
    XCTAssertThrowsError(try MSELoss()(Tensor(zeros: [2]), target: Tensor(zeros: [3])))
  }

  func testLossGradientFlowsThroughALinearLayer() throws {
    // dL/dW through backward(loss.gradient) equals a finite difference of the loss in W.
    var rng = SeededGenerator(seed: 5)
    let lin = Linear(inFeatures: 4, outFeatures: 3, rng: &rng)
    let x = Tensor.uniform([5, 4], using: &rng)
    let labels = randomLabels(5, classes: 3, using: &rng)
    let ce = CrossEntropyLoss()
    _ = try ce(try lin.forward(x), labels: labels)
    lin.zeroGrad()
    _ = try lin.backward(try XCTUnwrap(ce.gradient))
    let numeric = try numericGradient(at: lin.weight.value) { _ in
      Double(try CrossEntropyLoss()(try lin.forward(x), labels: labels))
    }
    assertClose(lin.weight.grad.array, numeric, rtol: 1e-3, atol: 1e-4)
  }

  // MARK: - Label smoothing

  /// PyTorch's smoothed cross-entropy in Double: the loss and its gradient, by definition.
  private func smoothedCrossEntropy(_ z: [Double], k: Int, labels: [Int], eps: Double) -> (Double, [Double]) {
    let n = labels.count
    var loss = 0.0, grad = [Double](repeating: 0, count: z.count)
    for s in 0..<n {
      let row = Array(z[s * k..<(s + 1) * k])
      let mx = row.max()!
      let lse = mx + log(row.reduce(0) { $0 + exp($1 - mx) })
      let nll = row.map { lse - $0 }  // −log p_j
      loss += (1 - eps) * nll[labels[s]] + eps / Double(k) * nll.reduce(0, +)
      for j in 0..<k {
        grad[s * k + j] = (exp(row[j] - lse) - ((j == labels[s] ? 1 - eps : 0) + eps / Double(k))) / Double(n)
      }
    }
    return (loss / Double(n), grad)
  }

  func testLabelSmoothingHandDerived() throws {
    // One sample, logits (0, ln 3, ln 4): p = (1/8, 3/8, 4/8), target 0, ε = 0.1, K = 3.
    // loss = 0.9·ln 8 + (0.1/3)·(ln 8 + ln(8/3) + ln 2); gradient p − (0.9·onehot + 0.1/3).
    let logits = Tensor(shape: [1, 3], values: [0, Float(log(3.0)), Float(log(4.0))])
    let ce = CrossEntropyLoss(labelSmoothing: 0.1)
    let loss = try ce(logits, labels: [0])
    let want = 0.9 * log(8.0) + 0.1 / 3 * (log(8.0) + log(8.0 / 3) + log(2.0))
    XCTAssertEqual(Double(loss), want, accuracy: 1e-6)
    assertClose(try XCTUnwrap(ce.gradient).array, [1.0 / 8 - 0.9 - 0.1 / 3, 3.0 / 8 - 0.1 / 3, 4.0 / 8 - 0.1 / 3],
      rtol: 1e-6, atol: 1e-7)
    // ε = 1: the target does not matter; uniform logits then give loss ln K and gradient 0.
    let uniform = CrossEntropyLoss(labelSmoothing: 1)
    XCTAssertEqual(Double(try uniform(Tensor(shape: [2, 4], repeating: 0.7), labels: [1, 3])), log(4.0), accuracy: 1e-6)
    XCTAssertTrue(try XCTUnwrap(uniform.gradient).array.allSatisfy { abs($0) < 1e-7 })
  }

  func testLabelSmoothingMatchesItsDoubleReferenceAndFiniteDifferences() throws {
    var rng = SeededGenerator(seed: 6)
    for (n, k, eps) in [(4, 3, 0.1), (3, 10, 0.25), (1, 2, 0.5), (5, 1, 0.2)] {
      let logits = Tensor.uniform([n, k], -3, 3, using: &rng)
      let labels = randomLabels(n, classes: k, using: &rng)
      let z = logits.doubles, lab = labels.map(Int.init)
      let (refLoss, refGrad) = smoothedCrossEntropy(z, k: k, labels: lab, eps: Double(Float(eps)))
      // The Double reference's gradient against Double central differences (h = 1e-5).
      for i in 0..<z.count {
        var up = z, down = z
        up[i] += 1e-5
        down[i] -= 1e-5
        let numeric = (smoothedCrossEntropy(up, k: k, labels: lab, eps: Double(Float(eps))).0
          - smoothedCrossEntropy(down, k: k, labels: lab, eps: Double(Float(eps))).0) / 2e-5
        XCTAssertEqual(refGrad[i], numeric, accuracy: 1e-9 + 1e-6 * abs(numeric), "reference FD N\(n) K\(k) [\(i)]")
      }
      // The Float loss against the reference.
      let ce = CrossEntropyLoss(labelSmoothing: Float(eps))
      let loss = try ce(logits, labels: labels)
      XCTAssertEqual(Double(loss), refLoss, accuracy: 1e-6 * max(1, refLoss), "N\(n) K\(k) ε \(eps)")
      assertClose(try XCTUnwrap(ce.gradient).array, refGrad, rtol: 1e-5, atol: 1e-7, "N\(n) K\(k) ε \(eps)")
      // ε = 0 is the plain loss, bit for bit.
      let plain = CrossEntropyLoss(), zero = CrossEntropyLoss(labelSmoothing: 0)
      XCTAssertEqual(try plain(logits, labels: labels), try zero(logits, labels: labels))
    }
  }
}
