// InferenceModeTests: `withInferenceMode` gives the same bits as a normal forward on chains and
// graphs (splits, concatenations, shuffles, residual adds, ACON-FReLU, Meta-ACON), holds fewer
// activation buffers than the network has layers, allocates nothing after its first pass,
// refuses a backward, and leaves training exactly as it was.
import ACON
import NN
import TensorCore
import TestSupport
import Training
import XCTest
import Zoo

final class InferenceModeTests: XCTestCase {
  /// name, input shape: a chain and one model of each graph family, small inputs.
  private let cases: [(String, [Int])] = [
    ("seed-meta", [1, 28, 28]), ("shufflenetv2-0.5x-meta", [3, 16, 16]), ("tfnet-0.5", [3, 16, 16]),
    ("resnet18-aconc", [3, 8, 8]), ("resnet50-swish", [3, 8, 8]),
  ]

  func testSameBitsFewerBuffersNoAllocationAfterFirstPass() throws {
    for (name, shape) in cases {
      var rng = SeededGenerator(seed: 11)
      let m = try buildSeedOrZooModel(name, shape)
      m.eval()
      let x = Tensor.normal([3] + shape, using: &rng)
      let want = try m.forward(x).array
      var layers = 0
      m.visit { if !($0 is Sequential || $0 is Graph) { layers += 1 } }
      try m.withInferenceMode {
        XCTAssertTrue(m.isInInferenceMode)
        let got = try m.forward(x)
        XCTAssertEqual(got.array, want, "\(name): inference mode changed the logits")
        // The pool settles within a pass or two (its buffers only grow), then holds still.
        _ = try m.forward(x)
        let arena = try XCTUnwrap(m.activationArena)
        let storages = arena.storageCount
        XCTAssertLessThan(storages, layers / 2, "\(name): \(storages) pooled buffers for \(layers) layers")
        let before = TensorStorage.allocationCount
        for _ in 0..<3 { XCTAssertEqual(try m.forward(x).array, want, "\(name): a later inference pass differs") }
        XCTAssertEqual(TensorStorage.allocationCount, before, "\(name): an inference pass after the first allocated")
        XCTAssertEqual(arena.storageCount, storages, "\(name): the pool grew from pass to pass")
      }
      XCTAssertFalse(m.isInInferenceMode)
      XCTAssertEqual(try m.forward(x).array, want, "\(name): a forward after inference mode differs")
    }
  }

  func testBackwardAfterAnInferenceForwardThrowsAndTrainingIsUnchanged() throws {
    // ResNet-50 left out here: two copies of it take long to build in a debug build.
    for (name, shape) in cases where !name.hasPrefix("resnet50") {
      var rng = SeededGenerator(seed: 12)
      let x = Tensor.normal([4] + shape, using: &rng)
      let labels = randomLabels(4, classes: 5, using: &rng)
      // Two copies of the network: one goes through inference mode between its training steps.
      let a = try buildSeedOrZooModel(name, shape), b = try buildSeedOrZooModel(name, shape)
      a.packGradients()
      b.packGradients()
      let optA = SGD(parameters: a.namedParameters(), learningRate: 0.01, momentum: 0.9)
      let optB = SGD(parameters: b.namedParameters(), learningRate: 0.01, momentum: 0.9)
      let loss = CrossEntropyLoss()
      for step in 0..<2 {
        for (m, opt) in [(a, optA), (b, optB)] {
          m.zeroGrad()
          let (_, g) = try loss.valueAndGradient(try m.forward(x), labels: labels)
          _ = try m.backward(g)
          opt.step()
        }
        _ = try a.predict(x)
        if step == 0 {
          _ = try a.withInferenceMode { try a.forward(x) }
          XCTAssertThrowsError(try a.backward(Tensor(zeros: [4, 5])), "\(name)") { error in
            XCTAssertTrue("\(error)".contains("inference mode"), "\(name): \(error)")
          }
        }
      }
      for ((ka, pa), (_, pb)) in zip(a.namedParameters(), b.namedParameters()) {
        XCTAssertEqual(pa.value.array, pb.value.array, "\(name): \(ka) differs after inference passes between steps")
      }
    }
  }

  /// A module of the user's own that runs two containers one after the other and reads the
  /// first one's result after the second ran: each container's result stays valid until that
  /// container's next pass.
  private final class TwoBranches: Module {
    let a: Sequential, b: Sequential
    private var output: Tensor?
    init(rng: inout SeededGenerator) {
      a = Sequential([("conv", Conv2D(inChannels: 2, outChannels: 3, kernelSize: 3, padding: 1, rng: &rng)), ("relu", ReLU()),
        ("conv2", Conv2D(inChannels: 3, outChannels: 3, kernelSize: 1, rng: &rng))])
      b = Sequential([("conv", Conv2D(inChannels: 2, outChannels: 3, kernelSize: 3, padding: 1, rng: &rng)), ("silu", SiLU()),
        ("conv2", Conv2D(inChannels: 3, outChannels: 3, kernelSize: 1, rng: &rng))])
      super.init()
    }
    override var children: [(String, Module)] { [("a", a), ("b", b)] }
    override func forward(_ x: Tensor) throws -> Tensor {
      let ya = try a.forward(x)
      let yb = try b.forward(x)
      let y = reuseOutput(&output, shape: ya.shape)
      for i in 0..<y.count { y.data[i] = ya.data[i] * yb.data[i] }
      return y
    }
  }

  func testAModuleOfTheUsersOwnThatRunsTwoContainers() throws {
    var rng = SeededGenerator(seed: 14)
    let m = TwoBranches(rng: &rng)
    let x = Tensor.normal([2, 2, 5, 7], using: &rng)
    let want = try m.forward(x).array
    try m.withInferenceMode {
      for _ in 0..<2 { XCTAssertEqual(try m.forward(x).array, want) }
    }
  }

  func testResultIsOverwrittenByTheNextPassAsAnyOutput() throws {
    let m = try buildSeedOrZooModel("shufflenetv2-0.5x-relu", [3, 16, 16])
    m.eval()
    var rng = SeededGenerator(seed: 13)
    let x1 = Tensor.normal([2, 3, 16, 16], using: &rng), x2 = Tensor.normal([2, 3, 16, 16], using: &rng)
    try m.withInferenceMode {
      let y1 = try m.forward(x1)
      let kept = y1.clone()
      _ = try m.forward(x2)
      #if DEBUG
      XCTAssertTrue(y1.isStale, "the first pass's result must be stale after the second")
      #endif
      XCTAssertEqual(try m.forward(x1).array, kept.array)
    }
  }
}

/// A seed network (`ModelKind`) or a zoo model by name, 5 classes, seed 4: the models these
/// memory tests (inference mode, the gradient pool) run.
func buildSeedOrZooModel(_ name: String, _ shape: [Int]) throws -> Module {
  if let kind = ModelKind(rawValue: name) { return try kind.build(input: shape, classes: 5, seed: 4) }
  return try ZooModels.build(name: name, inputShape: shape, classes: 5, seed: 4)
}
