// GradientPoolTests: a training step takes every input gradient from one pool that containers
// share (Sequential, Graph, ResNet's BasicBlock, ACON-FReLU), and every output from one training
// pool: the step holds a few gradient buffers instead of one per layer and shares the storage of
// outputs that backward does not read, gives the same bits step after step, allocates nothing
// after the first step, and a layer run on its own afterwards writes into a buffer of its own.
import ACON
import NN
import TensorCore
import TestSupport
import Training
import XCTest
import Zoo

final class GradientPoolTests: XCTestCase {
  /// name, input shape: one model of each family, small inputs, batch 4.
  private let cases: [(String, [Int])] = [
    ("seed-aconc", [1, 28, 28]), ("shufflenetv2-0.5x-relu", [3, 16, 16]), ("shufflenetv2-0.5x-meta", [3, 16, 16]),
    ("tfnet-0.5", [3, 16, 16]), ("resnet18-relu", [3, 8, 8]), ("resnet50-aconc", [3, 8, 8]),
  ]

  func testFewBuffersSameBitsNoAllocationAfterFirstStep() throws {
    for (name, shape) in cases {
      var rng = SeededGenerator(seed: 12)
      let m = try buildSeedOrZooModel(name, shape)
      m.packGradients()
      let x = Tensor.normal([4] + shape, using: &rng)
      let labels: [Int32] = [0, 3, 1, 4]
      let loss = CrossEntropyLoss()
      func step() throws -> (grads: [Float], dx: [Float]) {
        m.zeroGrad()
        _ = try loss(try m.forward(x), labels: labels)
        let dx = try m.backward(try XCTUnwrap(loss.gradient))
        return (m.namedParameters().flatMap { $0.1.grad.array }, dx.array)
      }
      let first = try step()
      let arena = try XCTUnwrap(m.gradientArena, name)
      // Every module under the network, and the graph inside each BasicBlock, shares the pool.
      m.visit { XCTAssertTrue($0.gradientArena === arena, "\(name): \($0.typeName) has a pool of its own") }
      m.visit { if let b = $0 as? BasicBlock { XCTAssertTrue(b.graph.gradientArena === arena, "\(name): BasicBlock's graph") } }
      var layers = 0
      m.visit { if !($0 is Sequential || $0 is Graph) { layers += 1 } }
      let storages = arena.storageCount
      XCTAssertLessThan(storages, layers / 4, "\(name): \(storages) pooled gradient buffers for \(layers) layers")
      let before = TensorStorage.allocationCount
      for k in 0..<2 {
        let again = try step()
        XCTAssertEqual(again.grads, first.grads, "\(name): step \(k + 2)'s parameter gradients differ")
        XCTAssertEqual(again.dx, first.dx, "\(name): step \(k + 2)'s input gradient differs")
      }
      XCTAssertEqual(TensorStorage.allocationCount, before, "\(name): a step after the first allocated")
      XCTAssertEqual(arena.storageCount, storages, "\(name): the pool grew from step to step")
      // The forward pass's outputs come from one training pool too, and those that backward
      // does not read share storage.
      let pool = try XCTUnwrap(m.trainingArena, name)
      m.visit { XCTAssertTrue($0.trainingArena === pool, "\(name): \($0.typeName) has a training pool of its own") }
      m.visit { if let b = $0 as? BasicBlock { XCTAssertTrue(b.graph.trainingArena === pool, "\(name): BasicBlock's graph") } }
      XCTAssertLessThan(pool.storageCount, pool.requestCount, "\(name): no output shared storage")
    }
  }

  /// The network's input gradient stays valid until its next backward, and a child layer run on
  /// its own afterwards writes its input gradient into a buffer of its own, not into the pool's.
  func testInputGradientSurvivesAChildRunOnItsOwn() throws {
    var rng = SeededGenerator(seed: 13)
    let conv = Conv2D(inChannels: 3, outChannels: 6, kernelSize: 3, padding: 1, rng: &rng)
    let net = Sequential([
      ("conv", conv), ("bn", BatchNorm2D(channels: 6)), ("act", AconC(channels: 6, rng: &rng)),
      ("conv2", Conv2D(inChannels: 6, outChannels: 4, kernelSize: 1, rng: &rng)),
    ])
    let x = Tensor.normal([2, 3, 5, 5], using: &rng)
    let y = try net.forward(x)
    let dy = Tensor.normal(y.shape, using: &rng)
    let dx = try net.backward(dy)
    XCTAssertTrue(dx.storage.isPooled)
    let want = dx.array
    let y1 = try conv.forward(x)
    let dx1 = try conv.backward(Tensor.normal(y1.shape, using: &rng))
    XCTAssertFalse(dx1.storage.isPooled, "a layer run on its own wrote into the pool")
    XCTAssertEqual(dx.array, want, "the network's input gradient changed")
  }

  /// The zoo's ReLU blocks end with an in-place ReLU, whose backward overwrites its dy: the block
  /// copies a gradient that is its caller's or that another pending value shares first.
  func testInPlaceReLUBlocksLeaveTheirCallersGradientAlone() throws {
    var rng = SeededGenerator(seed: 14)
    let bottleneck = Bottleneck(inplanes: 8, planes: 2, stride: 1, activation: .relu, r: 16, rng: &rng)
    let basic = BasicBlock(inplanes: 4, planes: 4, stride: 1, activation: .relu, r: 16, rng: &rng)
    for (block, shape) in [(bottleneck as Module, [2, 8, 3, 5]), (basic, [2, 4, 3, 5])] {
      let x = Tensor.uniform(shape, using: &rng)
      let y = try block.forward(x)
      let dy = Tensor.uniform(y.shape, using: &rng)
      let before = dy.array
      _ = try block.backward(dy)
      XCTAssertEqual(dy.array, before, "\(block.typeName).backward wrote into its dy")
    }
    // A residual around the block: the add hands one gradient to the block and to the input.
    let g = Graph()
    g.output = g.add(g.input, g("block", Bottleneck(inplanes: 8, planes: 2, stride: 1, activation: .relu, r: 16,
      rng: &rng), g.input))
    GradientChecker(skipsNonSmoothPoints: true, layerAbsoluteTolerance: 1e-4).assertGradients(
      g, input: .uniform([2, 8, 3, 5], using: &rng), "x + bottleneck(x)")
  }
}
