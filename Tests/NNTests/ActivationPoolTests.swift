// ActivationPoolTests: a training forward pass gives an output back to the network's pool once
// the next layer has read it, when no backward pass reads it (`backwardReadsInput`,
// `backwardReadsOutput`); what backward reads, and any storage a kept value shares, stays.
import NN
import TensorCore
import TestSupport
import XCTest

final class ActivationPoolTests: XCTestCase {
  /// Channel shuffles read neither their input nor their output in backward: a chain of four
  /// needs two buffers, and its results are those of the four run on their own.
  func testAChainThatBackwardDoesNotReadHoldsTwoBuffers() throws {
    var rng = SeededGenerator(seed: 31)
    let net = Sequential((0..<4).map { _ in ChannelShuffle(groups: 3) as Module })
    let apart = (0..<4).map { _ in ChannelShuffle(groups: 3) }
    let x = Tensor.uniform([2, 6, 3, 5], using: &rng)
    for pass in 0..<2 {
      let y = try net.forward(x)
      let arena = try XCTUnwrap(net.trainingArena)
      XCTAssertEqual(arena.requestCount, 4, "pass \(pass)")
      XCTAssertEqual(arena.storageCount, 2, "pass \(pass): four outputs in \(arena.storageCount) buffers")
      var want = x
      for s in apart { want = try s.forward(want) }
      XCTAssertEqual(y.array, want.array, "pass \(pass) forward")
      let dy = Tensor.uniform(y.shape, using: &rng)
      var wantDx = dy
      for s in apart.reversed() { wantDx = try s.backward(wantDx) }
      XCTAssertEqual(try net.backward(dy).array, wantDx.array, "pass \(pass) backward")
    }
  }

  /// Outputs that backward reads stay (BatchNorm reads its input; a ReLU its output), the rest go
  /// back: finite differences of the whole chain agree, and the pool holds fewer buffers than
  /// the chain asked for.
  func testWhatBackwardReadsStaysTheRestIsShared() throws {
    var rng = SeededGenerator(seed: 32)
    let net = Sequential([
      BatchNorm2D(channels: 6), ChannelShuffle(groups: 2), ChannelShuffle(groups: 3), BatchNorm2D(channels: 6),
      ChannelShuffle(groups: 2), Sigmoid(), ChannelShuffle(groups: 3), ChannelShuffle(groups: 2),
      BatchNorm2D(channels: 6), ChannelShuffle(groups: 3), ChannelShuffle(groups: 2),
    ])
    GradientChecker().assertGradients(net, input: .uniform([3, 6, 2, 3], using: &rng), "BN/shuffle/sigmoid chain")
    let arena = try XCTUnwrap(net.trainingArena)
    XCTAssertLessThan(arena.storageCount, arena.requestCount)
  }

  /// A view of a kept value is never given back while that value is kept: Sigmoid's output,
  /// flattened (a view), then read by operations that read nothing in backward, in a Graph and
  /// in nested Sequentials; later outputs would otherwise take its storage.
  func testAViewOfAKeptValueKeepsItsStorage() throws {
    var rng = SeededGenerator(seed: 33)
    let g = Graph()
    let f = g("flatten", Flatten(), g("sigmoid", Sigmoid(), g.input))
    let c = g.concat(f, f)
    g.output = g.shuffle(g.shuffle(g.shuffle(c, groups: 2), groups: 3), groups: 2)
    GradientChecker().assertGradients(g, input: .uniform([2, 3, 2, 2], using: &rng), "graph: flatten(sigmoid(x))")

    let inner = Sequential([Sigmoid(), Flatten()])
    let outer = Sequential([inner, ChannelShuffle(groups: 2), ChannelShuffle(groups: 3), ChannelShuffle(groups: 2)])
    GradientChecker().assertGradients(outer, input: .uniform([2, 3, 2, 2], using: &rng), "nested: flatten(sigmoid(x))")
    XCTAssertTrue(inner.backwardReadsOutput, "the inner Sequential's output views Sigmoid's kept output")

    let flat = Sequential([Sigmoid(), Flatten(), ChannelShuffle(groups: 2), ChannelShuffle(groups: 3), ChannelShuffle(groups: 2)])
    GradientChecker().assertGradients(flat, input: .uniform([2, 3, 2, 2], using: &rng), "chain: flatten(sigmoid(x))")
  }

  /// An identity (an empty Sequential) that hands a kept value on as its own output, or a
  /// graph's input to a reader, makes its container report that backward reads it (review
  /// findings: the kept storage was given back and overwritten).
  func testAnIdentityPassesOnWhatBackwardReads() throws {
    var rng = SeededGenerator(seed: 35)
    let inner = Sequential([Sigmoid(), Sequential([] as [Module])])
    let net = Sequential([inner, ChannelShuffle(groups: 2), ChannelShuffle(groups: 2), ChannelShuffle(groups: 2)])
    GradientChecker().assertGradients(net, input: .uniform([3, 4], using: &rng), "sigmoid, identity, shuffles")
    XCTAssertTrue(inner.backwardReadsOutput)

    let g = Graph()
    g.output = g("fc", Linear(inFeatures: 6, outFeatures: 5, rng: &rng), g("id", Sequential([] as [Module]), g.input))
    let outer = Sequential([
      Linear(inFeatures: 4, outFeatures: 6, rng: &rng), g, Linear(inFeatures: 5, outFeatures: 6, rng: &rng),
    ])
    GradientChecker().assertGradients(outer, input: .uniform([3, 4], using: &rng), "linear, graph(identity, linear), linear")
    XCTAssertTrue(g.backwardReadsInput)
  }

  /// A network's result fed back into it (`net(net(x))`) is intact while the second pass reads
  /// it: its storage stays out of the pool for that pass (as before pooling, the result itself
  /// is overwritten when its own layer runs again).
  func testAResultFedBackIsIntactWhileRead() throws {
    var rng = SeededGenerator(seed: 36)
    let l1 = Linear(inFeatures: 4, outFeatures: 4, rng: &rng), l2 = Linear(inFeatures: 4, outFeatures: 4, rng: &rng)
    let net = Sequential([l1, ReLU(), l2])
    let x = Tensor.uniform([3, 4], using: &rng)
    let y = try net.forward(x)
    let first = DoubleTensor(y)
    let z = try net.forward(y)
    let w1 = DoubleTensor(l1.weight.value), b1 = DoubleTensor(l1.bias!.value)
    let w2 = DoubleTensor(l2.weight.value), b2 = DoubleTensor(l2.bias!.value)
    var want = Reference.linear(first, weight: w1, bias: b1)
    want = Reference.linear(Reference.relu(want), weight: w2, bias: b2)
    assertClose(z.array, want.values, rtol: 1e-5, atol: 1e-6, "net(net(x))")
  }

  /// A network's output stays valid until its next forward, also when a layer's output came
  /// from the pool; a layer run on its own afterwards writes into a buffer of its own.
  func testOutputSurvivesALayerRunOnItsOwn() throws {
    var rng = SeededGenerator(seed: 34)
    let bn = BatchNorm2D(channels: 4)
    let net = Sequential([bn, ChannelShuffle(groups: 2), ChannelShuffle(groups: 2)])
    let x = Tensor.uniform([2, 4, 3, 3], using: &rng)
    let y = try net.forward(x)
    XCTAssertTrue(y.storage.isPooled)
    let want = y.array
    let alone = try bn.forward(x)
    XCTAssertFalse(alone.storage.isPooled, "a layer run on its own wrote into the pool")
    XCTAssertEqual(y.array, want, "the network's output changed")
  }
}
