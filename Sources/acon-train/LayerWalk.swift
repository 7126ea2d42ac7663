// LayerWalk: every layer of a model down to the leaves, with its dotted state_dict name and its
// input and output shapes for one input batch, from the model's structure alone (nothing runs).
// `summary` sums the activations a training step keeps from it (its memory budget), and `train`
// uses it to refuse, before any step, a batch that leaves a BatchNorm with one value per channel.
import ACON
import NN
import TensorCore
import Zoo

/// One visited layer: its dotted name (`features.3.branch_main.2.bn1`), the module and its shapes.
struct LayerVisit {
  var name: String
  var module: Module
  var input: [Int]
  var output: [Int]
}

enum LayerWalk {
  /// Visits every layer of `model` for input `shape` (`[N, C, H, W]`): the leaves, the composite
  /// activations (Meta-ACON-C, ACON-FReLU) after their parts, and each graph operation (add,
  /// concat, split, shuffle) as a visit with no module name. Returns the output shape.
  @discardableResult
  static func walk(_ m: Module, _ s: [Int], name: String = "", _ visit: (LayerVisit) -> Void) throws -> [Int] {
    func child(_ n: String) -> String { name.isEmpty ? n : name + "." + n }
    switch m {
    case let q as Sequential:
      var shape = s
      for (n, l) in q.layers { shape = try walk(l, shape, name: child(n), visit) }
      return shape
    case let b as BasicBlock:
      return try walk(b.graph, s, name: name, visit)
    case let g as Graph:
      var shapes: [GraphValue: [Int]] = [g.input: s]
      for node in g.recordedNodes {
        let ins = node.inputs.map { shapes[$0]! }
        switch node.kind {
        case let .module(n, l):
          shapes[node.outputs[0]] = try walk(l, ins[0], name: child(n), visit)
        case .add, .shuffle:
          shapes[node.outputs[0]] = ins[0]
          visit(LayerVisit(name: "", module: m, input: ins[0], output: ins[0]))
        case .concat:
          var o = ins[0]
          o[1] = ins.reduce(0) { $0 + $1[1] }
          shapes[node.outputs[0]] = o
          visit(LayerVisit(name: "", module: m, input: ins[0], output: o))
        case .split:
          var o = ins[0]
          o[1] /= 2
          for v in node.outputs {
            shapes[v] = o
            visit(LayerVisit(name: "", module: m, input: ins[0], output: o))
          }
        }
      }
      guard let out = g.output, let shape = shapes[out] else { return try g.outputShape(for: s) }
      return shape
    case let a as MetaAconC:
      // The β network runs on the per-channel means, [N, C, 1, 1].
      var h = [s[0], a.channels, 1, 1]
      visit(LayerVisit(name: name, module: m, input: s, output: h))
      for (n, l) in a.children { h = try walk(l, h, name: child(n), visit) }
      let out = try a.outputShape(for: s)
      visit(LayerVisit(name: name, module: m, input: s, output: out))
      return out
    case let a as AconFReLU:
      let out = try a.outputShape(for: s)
      try walk(a.bn1, try walk(a.convFReLU, s, name: child("conv_frelu"), visit), name: child("bn1"), visit)
      if a.stride != 1 { try walk(a.maxPool, s, name: child("maxpool"), visit) }
      visit(LayerVisit(name: name, module: m, input: s, output: out))  // the smooth maximum
      try walk(a.bn2, out, name: child("bn2"), visit)
      return out
    default:
      let out = try m.outputShape(for: s)
      visit(LayerVisit(name: name, module: m, input: s, output: out))
      return out
    }
  }

  /// Elements of the activations one training step keeps for its backward pass at input `shape`:
  /// the input batch and every visited output.
  static func activationElements(_ model: Module, _ shape: [Int]) throws -> Int {
    var total = shape.reduce(1, *)
    try walk(model, shape) { total += $0.output.reduce(1, *) }
    return total
  }

  /// The first BatchNorm2D (by dotted name, with its input shape) that would see a single value
  /// per channel (N·H·W = 1) when `model` trains on inputs of shape `shape`; nil when none does.
  static func singleValueBatchNorm(_ model: Module, _ shape: [Int]) throws -> (name: String, input: [Int])? {
    var found: (String, [Int])?
    try walk(model, shape) { v in
      guard found == nil, v.module is BatchNorm2D else { return }
      let perChannel = v.input[0] * v.input.dropFirst(2).reduce(1, *)
      if perChannel <= 1 { found = (v.name, v.input) }
    }
    return found
  }
}
