// ReferenceLayer+Graph: the Double twins of `ChannelShuffle` and of every `Graph` (subclasses
// such as a ResNet bottleneck included), built automatically as Sequential's is by composition.
// A graph's twin replays its recorded nodes in Double: each module node through that module's
// own twin (recursively: graphs and Sequentials inside graphs), add/concat/split/shuffle through
// the naive functions of Reference.swift. Backward visits the nodes in reverse, skips a node
// whose outputs reach nothing downstream, and sums the gradients where a value has several
// readers: the semantics of `Graph.backward`, written without its buffer reuse.
import NN
import TensorCore

extension ReferenceLayer {
  /// The twin of `ChannelShuffle`: `Reference.channelShuffle`, backward its inverse.
  static func channelShuffle(_ layer: ChannelShuffle) -> ReferenceLayer {
    let g = layer.groups
    return ReferenceLayer(name: layer.typeName, parameters: [],
      forward: { x, _ in Reference.channelShuffle(x, groups: g) },
      backward: { _, _, dy in (Reference.channelShuffle(dy, groups: g, inverse: true), []) })
  }

  /// One node of a graph's twin: the Double operation, the values it reads and makes.
  private struct Step {
    enum Op {
      /// A module node's twin and the range of the graph twin's θ that holds its parameters.
      case module(ReferenceLayer, Range<Int>)
      case add
      case concat
      case split(evenOdd: Bool)
      case shuffle(groups: Int)
    }
    var op: Op
    var inputs: [GraphValue]
    var outputs: [GraphValue]
  }

  /// The twin of `graph`: its recorded nodes replayed in Double. Parameters are named
  /// `child.param`, children in recording order (the order of `namedParameters()`). A subclass
  /// that computes anything beyond its recorded nodes (own parameters, an overridden
  /// `forward`) needs a twin written by hand.
  /// - Throws: `ReferenceLayer.Unsupported` for a module node without a twin, or
  ///   `TensorError.invalidArgument` for a graph without an output or reading a value that no
  ///   earlier node makes.
  static func graph(_ graph: Graph, root: Module, beforeForward: ((Module) -> Void)?) throws -> ReferenceLayer {
    guard let output = graph.output else {
      throw TensorError.invalidArgument("\(graph.typeName): no output: set `output` after recording the nodes")
    }
    guard graph.localParameters.isEmpty else { throw Unsupported(typeName: graph.typeName) }
    var steps: [Step] = []
    var parameters: [(String, DoubleTensor)] = []
    let input = graph.input
    var known: Set<GraphValue> = [input]
    for node in graph.recordedNodes {
      guard node.inputs.allSatisfy(known.contains) else {
        throw TensorError.invalidArgument("\(graph.typeName): a node reads a value that no earlier node makes")
      }
      let op: Step.Op
      switch node.kind {
      case let .module(name, module):
        let twin = try ReferenceLayer(module, root: root, beforeForward: beforeForward)
        op = .module(twin, parameters.count..<(parameters.count + twin.parameters.count))
        parameters += twin.parameters.map { (name + "." + $0.0, $0.1) }
      case .add: op = .add
      case .concat: op = .concat
      case let .split(mode): op = .split(evenOdd: mode == .evenOdd)
      case let .shuffle(groups): op = .shuffle(groups: groups)
      }
      steps.append(Step(op: op, inputs: node.inputs, outputs: node.outputs))
      known.formUnion(node.outputs)
    }
    guard known.contains(output) else {
      throw TensorError.invalidArgument("\(graph.typeName): the output is not a value of this graph")
    }

    /// Every value of the graph at input `x` and parameters `p`.
    func values(_ x: DoubleTensor, _ p: [DoubleTensor]) -> [GraphValue: DoubleTensor] {
      var v: [GraphValue: DoubleTensor] = [input: x]
      for step in steps {
        let ins = step.inputs.map { v[$0]! }
        let outs: [DoubleTensor]
        switch step.op {
        case let .module(twin, range): outs = [twin.forward(ins[0], Array(p[range]))]
        case .add: outs = [Reference.add(ins)]
        case .concat: outs = [Reference.concatChannels(ins)]
        case let .split(evenOdd):
          let (a, b) = Reference.splitChannels(ins[0], evenOdd: evenOdd)
          outs = [a, b]
        case let .shuffle(groups): outs = [Reference.channelShuffle(ins[0], groups: groups)]
        }
        for (value, t) in zip(step.outputs, outs) { v[value] = t }
      }
      return v
    }

    return ReferenceLayer(name: graph.typeName, parameters: parameters,
      forward: { x, p in values(x, p)[output]! },
      backward: { x, p, dy in
        let v = values(x, p)
        var grads: [GraphValue: DoubleTensor] = [output: dy]
        // A parameter of a node that reaches nothing downstream keeps a zero gradient.
        var dp = p.map { DoubleTensor(zeros: $0.shape) }
        func contribute(_ g: DoubleTensor, to value: GraphValue) {
          grads[value] = grads[value].map { Reference.add([$0, g]) } ?? g
        }
        for step in steps.reversed() {
          let gs = step.outputs.map { grads[$0] }
          if gs.allSatisfy({ $0 == nil }) { continue }
          let ins = step.inputs.map { v[$0]! }
          switch step.op {
          case let .module(twin, range):
            let (dx, dq) = twin.backward(ins[0], Array(p[range]), gs[0]!)
            for (k, d) in zip(range, dq) { dp[k] = d }
            contribute(dx, to: step.inputs[0])
          case .add:
            for value in step.inputs { contribute(gs[0]!, to: value) }
          case .concat:
            var start = 0
            for (value, t) in zip(step.inputs, ins) {
              contribute(Reference.sliceChannels(gs[0]!, start: start, count: t.shape[1]), to: value)
              start += t.shape[1]
            }
          case let .split(evenOdd):
            contribute(Reference.splitChannelsBackward(gs[0], gs[1], inputShape: ins[0].shape, evenOdd: evenOdd),
              to: step.inputs[0])
          case let .shuffle(groups):
            contribute(Reference.channelShuffle(gs[0]!, groups: groups, inverse: true), to: step.inputs[0])
          }
        }
        return (grads[input] ?? DoubleTensor(zeros: x.shape), dp)
      })
  }
}
