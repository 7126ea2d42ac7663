// StaleOutputTests (NN): a layer's forward result is overwritten by its next forward; in debug
// builds the old result is stale (reading it traps: here checked through `isStale` and the
// message, which name the layer and its container name), `copy()` keeps a result, and the
// library's own passes (Sequential, Graph, backward, the fused Conv2D + ReLU) read no stale
// tensor.
import NN
import TensorCore
import TestSupport
import XCTest

#if DEBUG
private let tracksStaleOutputs = true
#else
private let tracksStaleOutputs = false
#endif

final class NNStaleOutputTests: XCTestCase {
  private func message(_ layer: String, _ name: String?) -> String? {
    tracksStaleOutputs ? Tensor.staleOutputMessage(layer: layer, name: name) : nil
  }

  func testLayerOutputGoesStaleAtTheNextForward() throws {
    var rng = SeededGenerator(seed: 3)
    let layers: [Module] = [
      Linear(inFeatures: 4, outFeatures: 3, rng: &rng), ReLU(), Sigmoid(), Dropout(p: 0.5, seed: 1),
    ]
    for layer in layers {
      let x1 = Tensor.uniform([2, 4], using: &rng), x2 = Tensor.uniform([2, 4], using: &rng)
      let y1 = try layer.forward(x1)
      XCTAssertFalse(y1.isStale, layer.typeName)
      let first = y1.array  // a fresh output reads
      let y2 = try layer.forward(x2)
      XCTAssertFalse(y2.isStale, layer.typeName)
      XCTAssertNotEqual(y2.array, first, layer.typeName)
      XCTAssertEqual(y1.isStale, tracksStaleOutputs, layer.typeName)
      XCTAssertEqual(y1.staleReadMessage, message(layer.typeName, nil))
    }
  }

  func testCopyKeepsAnOutputAcrossForwards() throws {
    var rng = SeededGenerator(seed: 4)
    let lin = Linear(inFeatures: 5, outFeatures: 2, rng: &rng)
    let x1 = Tensor.uniform([3, 5], using: &rng), x2 = Tensor.uniform([3, 5], using: &rng)
    let y1 = try lin.forward(x1)
    let expected = y1.array
    let kept = y1.copy()
    let y2 = try lin.forward(x2)
    XCTAssertFalse(kept.isStale)
    XCTAssertEqual(kept.array, expected)
    XCTAssertNotEqual(y2.array, expected)
    XCTAssertEqual(try lin.forward(x1).array, expected)
  }

  func testSequentialNamesTheLastLayerAndTrainsWithoutStaleReads() throws {
    var rng = SeededGenerator(seed: 5)
    let model = Sequential([
      ("conv1", Conv2D(inChannels: 1, outChannels: 3, kernelSize: 3, padding: 1, rng: &rng)),
      ("relu1", ReLU(inPlace: true)),  // fused with conv1
      ("pool", MaxPool2D(kernelSize: 2)),
      ("flat", Flatten()),
      ("fc", Linear(inFeatures: 12, outFeatures: 2, rng: &rng)),
    ])
    let x = Tensor.uniform([2, 1, 4, 4], using: &rng)
    var outputs: [Tensor] = []
    for _ in 0..<3 {  // training steps: forward then backward; backward reads cached activations
      let y = try model.forward(x)
      XCTAssertFalse(y.isStale)
      _ = y.array
      _ = try model.backward(Tensor(shape: y.shape, repeating: 1))
      outputs.append(y)
    }
    XCTAssertEqual(outputs[0].staleReadMessage, message("Linear", "fc"))
    XCTAssertEqual(outputs[1].isStale, tracksStaleOutputs)
    XCTAssertFalse(outputs[2].isStale)

    // A model ending on the fused convolution names the convolution.
    let convNet = Sequential([
      ("conv1", Conv2D(inChannels: 1, outChannels: 2, kernelSize: 1, rng: &rng)), ("relu1", ReLU(inPlace: true)),
    ])
    let c1 = try convNet.forward(x)
    _ = try convNet.forward(x)
    XCTAssertEqual(c1.staleReadMessage, message("Conv2D", "conv1"))
  }

  func testFlattenedViewOfAnOutputGoesStaleWithIt() throws {
    var rng = SeededGenerator(seed: 6)
    let conv = Conv2D(inChannels: 2, outChannels: 3, kernelSize: 1, rng: &rng)
    let flat = Flatten()
    let x = Tensor.uniform([1, 2, 3, 3], using: &rng)
    let y = try flat.forward(try conv.forward(x))
    XCTAssertFalse(y.isStale)
    _ = try conv.forward(x)
    XCTAssertEqual(y.staleReadMessage, message("Conv2D", nil))
  }

  func testGraphNamesItsNodesAndRunsWithoutStaleReads() throws {
    var rng = SeededGenerator(seed: 7)
    let g = Graph()
    let a = g("conv_a", Conv2D(inChannels: 2, outChannels: 2, kernelSize: 1, rng: &rng), g.input)
    let b = g("relu", ReLU(), a)
    g.output = g("proj", Conv2D(inChannels: 2, outChannels: 2, kernelSize: 1, rng: &rng), g.add(a, b))
    let x = Tensor.uniform([2, 2, 3, 3], using: &rng)
    let y1 = try g.forward(x)
    _ = try g.backward(Tensor(shape: y1.shape, repeating: 1))
    let y2 = try g.forward(x)
    _ = try g.backward(Tensor(shape: y2.shape, repeating: 1))
    XCTAssertFalse(y2.isStale)
    XCTAssertEqual(y1.staleReadMessage, message("Conv2D", "proj"))

    // A graph whose output is one of its own operations (an add) names the graph.
    let h = Graph()
    let c = h("conv", Conv2D(inChannels: 2, outChannels: 2, kernelSize: 1, rng: &rng), h.input)
    h.output = h.add(c, h.input)
    let z1 = try h.forward(x)
    XCTAssertFalse(z1.isStale)
    _ = try h.forward(x)
    XCTAssertEqual(z1.staleReadMessage, message("Graph", nil))
  }
}
