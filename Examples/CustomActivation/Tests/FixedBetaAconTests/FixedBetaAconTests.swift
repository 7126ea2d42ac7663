// The custom activation's gradients, checked as swift-acon checks its own layers: the Double
// twin (for any AconActivation, built in) against central differences, and the Float layer's
// input and parameter gradients against the twin's, on odd shapes.
import FixedBetaAcon
import NN
import TensorCore
import TestSupport
import XCTest

final class FixedBetaAconTests: XCTestCase {
  func testGradients() {
    var rng = SeededGenerator(seed: 3)
    for shape in [[2, 3, 5, 7], [1, 1, 1, 1], [4, 6]] {
      let layer = FixedBetaAconC(channels: shape[1], beta: 0.7, rng: &rng)
      let x = Tensor.uniform(shape, -3, 3, using: &rng)
      GradientChecker().assertGradients(layer, input: x, "FixedBetaAconC \(shape)")
    }
  }

  func testOnlyTheSlopesAreLearned() {
    var rng = SeededGenerator(seed: 1)
    XCTAssertEqual(FixedBetaAconC(channels: 4, rng: &rng).stateDictNames(), ["p1", "p2"])
  }
}

/// The custom Module of docs/custom-module.md, checked against a Double twin written by hand.
final class ChannelScaleTests: XCTestCase {
  /// y = γ[c]·x, and its gradients, in Double.
  private func twin(_ layer: ChannelScale) -> ReferenceLayer {
    ReferenceLayer(
      name: "ChannelScale", parameters: [("weight", DoubleTensor(layer.weight.value))],
      forward: { x, p in
        let (c, hw) = (x.shape[1], x.shape[2] * x.shape[3])
        return DoubleTensor(shape: x.shape, values: x.values.indices.map { x.values[$0] * p[0].values[($0 / hw) % c] })
      },
      backward: { x, p, dy in
        let (c, hw) = (x.shape[1], x.shape[2] * x.shape[3])
        var dg = DoubleTensor(zeros: p[0].shape)
        for i in x.values.indices { dg.values[(i / hw) % c] += dy.values[i] * x.values[i] }
        let dx = DoubleTensor(shape: x.shape, values: dy.values.indices.map { dy.values[$0] * p[0].values[($0 / hw) % c] })
        return (dx, [dg])
      })
  }

  func testGradients() {
    var rng = SeededGenerator(seed: 5)
    for shape in [[2, 3, 4, 5], [1, 1, 1, 1], [3, 2, 7, 1]] {
      let layer = ChannelScale(channels: shape[1])
      layer.weight.value.fillNormal(using: &rng)
      let x = Tensor.uniform(shape, -2, 2, using: &rng)
      GradientChecker(reference: twin(layer)).assertGradients(layer, input: x, "ChannelScale \(shape)")
    }
  }

  func testResidualNamesAndShapes() throws {
    let block = Residual(Sequential([("scale", ChannelScale(channels: 3)), ("relu", ReLU())]))
    XCTAssertEqual(block.stateDictNames(), ["body.scale.weight"])
    let x = Tensor(shape: [2, 3, 4, 4], repeating: -1)
    XCTAssertEqual(try block.forward(x).array, [Float](repeating: -1, count: 96), "x + relu(−x·1) = x for x < 0")
    XCTAssertEqual(try block.backward(Tensor(shape: [2, 3, 4, 4], repeating: 1)).array, [Float](repeating: 1, count: 96))
  }
}
