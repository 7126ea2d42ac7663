// BackwardHookTests: `Module.backwardHook`, which data-parallel training uses to all-reduce
// gradients while backward runs. Sequential and Graph call a child's hook once per pass, right
// after its backward, when its parameter gradients (its children's too) are final: in reverse
// order of the forward pass, and before the layers in front of it go back.
import NN
import TensorCore
import TestSupport
import XCTest

final class BackwardHookTests: XCTestCase {
  func testHooksRunOnceAfterEachBackwardInReverseOrder() throws {
    var rng = SeededGenerator(seed: 7)
    // A residual block as a Graph: y = conv_b(relu(conv_a(x))) + x.
    let block = Graph()
    let a = block("conv_a", Conv2D(inChannels: 3, outChannels: 3, kernelSize: 3, padding: 1, rng: &rng), block.input)
    let r = block("relu", ReLU(), a)
    let b = block("conv_b", Conv2D(inChannels: 3, outChannels: 3, kernelSize: 3, padding: 1, rng: &rng), r)
    block.output = block.add(b, block.input)
    let net = Sequential([
      ("conv1", Conv2D(inChannels: 2, outChannels: 3, kernelSize: 3, stride: 2, padding: 1, rng: &rng)),
      ("bn1", BatchNorm2D(channels: 3)),
      ("relu", ReLU()),
      ("block", block),
      ("flatten", Flatten()),
      ("fc", Linear(inFeatures: 3 * 3 * 3, outFeatures: 4, rng: &rng)),
    ])
    var events: [String] = []
    // At each hook: the module's weight gradient is already written, and conv1's (the first
    // layer's) is still zero unless the hook is conv1's or the whole net's.
    let conv1Grad = (net["conv1"] as! Conv2D).weight.grad
    net.visit { m in
      let name = m === net ? "net" : net.namedChildren(of: m)
      m.backwardHook = {
        let mine = m.namedParameters().map { $0.1.grad.array }.joined()
        XCTAssertTrue(mine.isEmpty || mine.contains { $0 != 0 }, "\(name): hook before its gradients")
        let first = conv1Grad.array.contains { $0 != 0 }
        XCTAssertEqual(first, ["conv1", "net"].contains(name), "\(name): conv1's gradient at its hook")
        events.append(name)
      }
    }
    let x = Tensor.normal([2, 2, 5, 5], using: &rng)
    net.zeroGrad()
    let y = try net.forward(x)
    _ = try net.backward(Tensor(shape: y.shape, values: Array(repeating: 1, count: y.count)))
    // The outer container is run by no container: it has no caller to call its hook. The ReLU
    // that Sequential runs fused with bn1 gets its hook all the same, in its place.
    XCTAssertEqual(events, ["fc", "flatten", "block.conv_b", "block.relu", "block.conv_a", "block", "relu", "bn1", "conv1"])
    // Again, with the gradients zeroed: the same calls, once each.
    events = []
    net.zeroGrad()
    _ = try net.forward(x)
    _ = try net.backward(Tensor(shape: y.shape, values: Array(repeating: 1, count: y.count)))
    XCTAssertEqual(events.count, 9)
  }
}

private extension Sequential {
  /// The dotted name of `m` under this container ("block.conv_a").
  func namedChildren(of m: Module) -> String {
    func find(_ node: Module, _ prefix: String) -> String? {
      for (name, c) in node.children {
        if c === m { return prefix + name }
        if let found = find(c, prefix + name + ".") { return found }
      }
      return nil
    }
    return find(self, "") ?? "?"
  }
}
