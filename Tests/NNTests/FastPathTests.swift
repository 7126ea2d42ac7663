// FastPathTests: the fast path needs nothing from the user (issue 15): Sequential fuses a
// Conv2D with a plain ReLU after it (same bits as running them apart), every convolution in it
// shares one workspace, and the errors name the layer: "backward called before forward", and
// ModelSummary keeps the layer's name in a shape error as Sequential does.
import NN
import TensorCore
import TestSupport
import XCTest

final class FastPathTests: XCTestCase {
  private func convs(_ seed: UInt64) -> (Conv2D, Conv2D) {
    var rng = SeededGenerator(seed: seed)
    return (Conv2D(inChannels: 3, outChannels: 5, kernelSize: 3, padding: 1, rng: &rng),
      Conv2D(inChannels: 5, outChannels: 4, kernelSize: 3, stride: 2, rng: &rng))
  }

  func testConvFollowedByAPlainReLUIsFusedWithTheSameBits() throws {
    let (a1, a2) = convs(1), (b1, b2) = convs(1)
    let fused = Sequential([("c1", a1), ("r1", ReLU()), ("c2", a2), ("r2", ReLU())])
    var rng = SeededGenerator(seed: 2)
    let x = Tensor(zeros: [2, 3, 9, 7])
    x.fillNormal(using: &rng)
    let dyValues = (0..<(2 * 4 * 4 * 3)).map { _ in rng.nextNormal() }
    let y = try fused.forward(x).copy()
    XCTAssertTrue(a1.workspace === a2.workspace, "one workspace for the container's convolutions")
    let dx = try fused.backward(Tensor(shape: [2, 4, 4, 3], values: dyValues)).copy()

    // The same layers run one by one, unfused.
    let r1 = ReLU(), r2 = ReLU()
    var h = try b1.forward(x)
    h = try r1.forward(h)
    h = try b2.forward(h)
    let y2 = try r2.forward(h)
    XCTAssertEqual(y.array, y2.array)
    XCTAssertTrue(y.array.contains(0) && y.array.contains { $0 > 0 })
    var g = try r2.backward(Tensor(shape: [2, 4, 4, 3], values: dyValues))
    g = try b2.backward(g)
    g = try r1.backward(g)
    g = try b1.backward(g)
    XCTAssertEqual(dx.array, g.array)
    XCTAssertEqual(a1.weight.grad.array, b1.weight.grad.array)
    XCTAssertEqual(a2.bias?.grad.array, b2.bias?.grad.array)
  }

  func testFusedSequentialPassesTheGradientCheck() {
    let (c1, c2) = convs(3)
    let net = Sequential([("c1", c1), ("r1", ReLU()), ("c2", c2), ("r2", ReLU())])
    var rng = SeededGenerator(seed: 4)
    let x = Tensor(zeros: [2, 3, 6, 5])
    x.fillNormal(using: &rng)
    GradientChecker(kink: 0, skipsNonSmoothPoints: true).assertGradients(net, input: x, "conv+ReLU fused")
  }

  func testBackwardBeforeForwardSaysSo() {
    var rng = SeededGenerator(seed: 1)
    let layers: [Module] = [Linear(inFeatures: 2, outFeatures: 3, rng: &rng), ReLU(), MaxPool2D(kernelSize: 2),
      BatchNorm2D(channels: 3), Conv2D(inChannels: 1, outChannels: 2, kernelSize: 3, rng: &rng), GlobalAvgPool2D()]
    for l in layers {
      XCTAssertThrowsError(try l.backward(Tensor(zeros: [2, 3]))) {
        XCTAssertEqual(String(describing: $0), "\(l.typeName).backward: backward called before forward")
      }
    }
  }

  func testSummaryNamesTheLayerInAShapeError() {
    var rng = SeededGenerator(seed: 1)
    let net = Sequential([("conv1", Conv2D(inChannels: 3, outChannels: 4, kernelSize: 3, rng: &rng)), ("flatten", Flatten()),
      ("head", Linear(inFeatures: 10, outFeatures: 2, rng: &rng))])
    XCTAssertThrowsError(try ModelSummary(model: net, inputShape: [1, 3, 8, 8])) {
      XCTAssertTrue(String(describing: $0).hasPrefix("head (Linear): expected input of shape [N, 10]"), "\($0)")
    }
  }
}
