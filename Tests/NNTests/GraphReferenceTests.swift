// GraphReferenceTests: the automatic Double twin of a Graph (ReferenceLayer+Graph.swift) under
// the strict gradient checker: graphs and Sequentials nested in graphs, a branch that does not
// reach the output, a value read by a module node and a shuffle at once; and the twin's errors
// (no output, a subclass with parameters of its own).
import NN
import TensorCore
import TestSupport
import XCTest

/// A graph subclass with a parameter outside its recorded nodes: its twin cannot be derived.
private final class ScaledGraph: Graph {
  let scale = Parameter(Tensor(shape: [1], values: [2]))
  override var localParameters: [(String, Parameter)] { [("scale", scale)] }
}

final class GraphReferenceTests: XCTestCase {
  func testTwinOfGraphsAndSequentialsNestedInAGraph() {
    var rng = SeededGenerator(seed: 21)
    let g = Graph()
    let stem = g("stem", Conv2D(inChannels: 3, outChannels: 4, kernelSize: 3, padding: 1, rng: &rng), g.input)
    let unit = g("unit", shuffleV2Unit(inp: 2, oup: 4, mid: 3, stride: 1, rng: &rng), stem)       // Graph in Graph
    let tail = g("tail", Sequential([
      ChannelShuffle(groups: 2),
      Bottleneck(inplanes: 4, planes: 1, rng: &rng),                                               // Graph in Sequential
    ]), g.shuffle(unit, groups: 2))
    let dead = g("dead", Conv2D(inChannels: 4, outChannels: 2, kernelSize: 1, rng: &rng), stem)  // reaches nothing
    _ = dead
    g.output = g.add(tail, unit, stem)
    randomizeParameters(g, 0.5, 1.5, using: &rng)
    g.eval()  // fixed statistics: Bottleneck's planes = 1 conv3 keeps a gradient (see GraphTests)
    let report = GradientChecker(skipsNonSmoothPoints: true)
      .assertGradients(g, input: .uniform([2, 3, 3, 2], using: &rng), "nested")
    XCTAssertEqual(report?.tensors.first, "input")
    XCTAssertTrue(report?.tensors.contains("unit.branch_main.0.weight") == true)
    XCTAssertTrue(report?.tensors.contains("tail.1.conv3.weight") == true)
  }

  func testTwinGivesZeroGradientsToABranchThatReachesNothing() throws {
    var rng = SeededGenerator(seed: 22)
    let g = Graph()
    let (a, b) = g.split(g.input, .halves)
    _ = g("unused", Linear(inFeatures: 2, outFeatures: 3, rng: &rng), b)
    g.output = g("used", Linear(inFeatures: 2, outFeatures: 3, rng: &rng), a)
    let twin = try ReferenceLayer(g)
    XCTAssertEqual(twin.name, "Graph")
    XCTAssertEqual(twin.parameters.map(\.0), g.namedParameters().map(\.0))
    let x = DoubleTensor(Tensor.uniform([2, 4], using: &rng))
    let theta = twin.parameters.map(\.1)
    let dy = DoubleTensor(Tensor.uniform([2, 3], using: &rng))
    let (dx, dTheta) = twin.backward(x, theta, dy)
    XCTAssertEqual(dTheta[0].values, [Double](repeating: 0, count: 6), "unused.weight")
    XCTAssertEqual(dTheta[1].values, [0, 0, 0], "unused.bias")
    XCTAssertNotEqual(dTheta[2].values, [Double](repeating: 0, count: 6), "used.weight")
    // The unused half of the split gets a zero input gradient.
    for s in 0..<2 { XCTAssertEqual([dx[s * 4 + 2], dx[s * 4 + 3]], [0, 0]) }
    GradientChecker().assertGradients(g, input: x.tensor, "split with an unused half")
  }

  func testTwinErrors() {
    let noOutput = Graph()
    _ = noOutput("relu", ReLU(), noOutput.input)
    XCTAssertThrowsError(try ReferenceLayer(noOutput)) { error in
      XCTAssertTrue("\(error)".contains("no output"), "\(error)")
    }
    let scaled = ScaledGraph()
    scaled.output = scaled("relu", ReLU(), scaled.input)
    XCTAssertThrowsError(try ReferenceLayer(scaled)) { error in
      XCTAssertTrue("\(error)".contains("ScaledGraph"), "\(error)")
    }
  }
}
