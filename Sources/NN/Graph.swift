// Graph: a module that records a small dataflow graph of named child modules and channel
// operations (add, concat, split, shuffle), for networks that are not a chain: ShuffleNetV2
// units, TFNet blocks, ResNet bottlenecks. The recording order is the execution order.
//
// Names: every module node is a child under the name it was recorded with, in recording order,
// so parameters get PyTorch's dotted names (`branch_main.0.weight`, `downsample.1.running_mean`).
// Memory: every value (a module's output, an operation's) comes from the network's activation
// pool and goes back to it once every node that reads it has run, unless a backward pass reads
// it; input gradients (the modules', the operations' and one accumulator per value that feeds
// more than one consumer) come from the network's gradient pool and go back to it once every
// node that reads them has run.
// Backward visits the nodes once each, in reverse; the gradients meeting at a value used twice
// are summed (borrowed when there is only one, so a chain costs no copy).
// Fusion: a Conv2D or BatchNorm2D whose output only the ReLU node after it reads runs with that
// ReLU as one step, as in Sequential (ResNet's bn1 → relu1): the same bits, one pass less each way.
import TensorCore

/// A value inside a `Graph`: the graph's input or one output of a recorded node. Only valid
/// with the graph that made it.
public struct GraphValue: Hashable, Sendable {
  let graph: ObjectIdentifier
  let index: Int
}

/// A network with branches, recorded from ordinary Swift code:
///
/// ```swift
/// let g = Graph()
/// let (proj, x) = g.split(g.input, .evenOdd)         // [N, C, H, W] → 2 × [N, C/2, H, W]
/// let y = g("branch_main", mainBranch, x)            // a child module, named as in PyTorch
/// g.output = g.concat(proj, y)                       // [N, C/2 + C', H, W]
/// ```
///
/// Subclass it to give a block a type name (`final class Bottleneck: Graph`), recording the
/// nodes in the initialiser. Forward runs the nodes in recording order; backward runs each once,
/// in reverse, and sums the gradients of values that feed several nodes. A `Conv2D` or
/// `BatchNorm2D` whose output only the `ReLU` node recorded right after it reads runs fused with
/// it, as in `Sequential` (the same bits; that ReLU's `forward` and `backward` are not called,
/// its `backwardHook` is). Images are `[N, C, H, W]`; the channel operations also take `[N, C]`
/// as 1×1 maps.
///
/// Wiring mistakes (a value from another graph, a name or module used twice, no output) are
/// reported by the first `forward` or `outputShape(for:)` as a `TensorError.invalidArgument`.
open class Graph: Module {
  enum Op {
    case module(String, Module)
    case add
    case concat
    case split(ChannelSplit)
    case shuffle(Int)
  }

  struct Node {
    var op: Op
    var inputs: [Int]
    var outputs: [Int]
  }

  private var nodes: [Node] = []
  /// The node that produces each value (-1 for the graph input), and its consumers' count
  /// (the graph output counts as one).
  private var producer: [Int] = [-1]
  private var consumers: [Int] = [0]
  private var outputIndex: Int?
  private var wiringErrors: [String] = []

  // Runtime state, reused from step to step.
  private var values: [Tensor?] = [nil]
  private var nodeOutputs: [[Tensor?]] = []
  private var nodeGrads: [[Tensor?]] = []
  private var gradSlots: [Tensor?] = [nil]
  private var accumulators: [Tensor?] = [nil]
  private var unusedInputGrad: Tensor?
  /// The `dy` of the backward pass under way (its caller's tensor: never summed into).
  private var incomingGradient: Tensor?
  /// Backward: the gradients that the node going back has finished with (its output gradients,
  /// and contributions summed into another buffer), for the pool to take back.
  private var displaced: [Tensor] = []

  /// An empty graph; record nodes, then set `output`.
  public override init() { super.init() }

  /// The graph's input value (the tensor given to `forward`).
  public var input: GraphValue { GraphValue(graph: ObjectIdentifier(self), index: 0) }

  /// The value `forward` returns. Set it once, after recording the nodes.
  public var output: GraphValue? {
    get { outputIndex.map { GraphValue(graph: ObjectIdentifier(self), index: $0) } }
    set {
      if let old = outputIndex { consumers[old] -= 1 }
      outputIndex = nil
      guard let v = newValue, let i = check(v, "output") else { return }
      outputIndex = i
      consumers[i] += 1
    }
  }

  /// Records `module` as a child named `name` applied to `x`, and returns its output value.
  /// `name` becomes the prefix of the module's parameter names, as a PyTorch attribute or an
  /// `nn.Sequential` index does. Each module instance and each name may be recorded once (a
  /// module owns its output, so it cannot run twice in one pass).
  @discardableResult
  public func callAsFunction(_ name: String, _ module: Module, _ x: GraphValue) -> GraphValue {
    if name.isEmpty || name.contains(".") {
      wiringErrors.append("child name \"\(name)\" must be non-empty and contain no dot")
    }
    for case let .module(other, m) in nodes.map(\.op) {
      if other == name { wiringErrors.append("the name \"\(name)\" is recorded twice") }
      if m === module { wiringErrors.append("\"\(name)\" is the same module instance as \"\(other)\"; create one per use") }
    }
    if x.index == 0 { module.propagatesInputGradient = propagatesInputGradient }
    return record(.module(name, module), [x], outputs: 1)[0]
  }

  /// The elementwise sum of two or more values of equal shape (a residual connection).
  /// Backward hands the incoming gradient to every operand without copying it.
  public func add(_ values: GraphValue...) -> GraphValue {
    if values.count < 2 { wiringErrors.append("add needs at least two values") }
    return record(.add, values, outputs: 1)[0]
  }

  /// Concatenation along channels (`torch.cat(values, 1)`): `[N, C₁, H, W], [N, C₂, H, W], … →
  /// [N, C₁ + C₂ + …, H, W]`. Copies at memory speed; backward copies the slices back.
  public func concat(_ values: GraphValue...) -> GraphValue {
    if values.isEmpty { wiringErrors.append("concat needs at least one value") }
    return record(.concat, values, outputs: 1)[0]
  }

  /// Splits `[N, C, H, W]` (C even) into two `[N, C/2, H, W]` values, as `.halves` or as the
  /// official ShuffleNetV2 code's even/odd `channel_shuffle` (`.evenOdd`: `x[:, 0::2]`,
  /// `x[:, 1::2]`). Backward writes both gradients into one input gradient (zeros for a half
  /// that is not used).
  public func split(_ x: GraphValue, _ mode: ChannelSplit = .halves) -> (GraphValue, GraphValue) {
    let out = record(.split(mode), [x], outputs: 2)
    return (out[0], out[1])
  }

  /// Channel shuffle with `groups` groups, as `ChannelShuffle` (`[N, C, H, W]`, g divides C).
  public func shuffle(_ x: GraphValue, groups: Int) -> GraphValue {
    if groups < 1 { wiringErrors.append("shuffle needs at least one group, got \(groups)") }
    return record(.shuffle(groups), [x], outputs: 1)[0]
  }

  public override var children: [(String, Module)] {
    nodes.compactMap { if case let .module(name, m) = $0.op { return (name, m) } else { return nil } }
  }

  /// The child recorded under `name`, if any.
  public subscript(name: String) -> Module? { children.first { $0.0 == name }?.1 }

  /// The recorded nodes in recording (= execution) order, read-only, for tools that walk the
  /// graph (the Double twin of the gradient checker). Values are named by `GraphValue`s of this
  /// graph: `input` or an earlier node's output; `output` is the value `forward` returns.
  public var recordedNodes: [NodeDescription] {
    nodes.map { node in
      let kind: NodeDescription.Kind
      switch node.op {
      case let .module(name, m): kind = .module(name: name, m)
      case .add: kind = .add
      case .concat: kind = .concat
      case let .split(mode): kind = .split(mode)
      case let .shuffle(g): kind = .shuffle(groups: g)
      }
      let value = { GraphValue(graph: ObjectIdentifier(self), index: $0) }
      return NodeDescription(kind: kind, inputs: node.inputs.map(value), outputs: node.outputs.map(value))
    }
  }

  /// One recorded node of a `Graph`: what it computes, the values it reads and those it makes.
  public struct NodeDescription {
    /// What a node computes.
    public enum Kind {
      /// The child module recorded as `name`, applied to the node's one input.
      case module(name: String, Module)
      /// The elementwise sum of the inputs (two or more, of one shape).
      case add
      /// `torch.cat(inputs, 1)`.
      case concat
      /// The input's channels in two halves (`ChannelSplit`): two outputs.
      case split(ChannelSplit)
      /// `ChannelShuffle` with this many groups.
      case shuffle(groups: Int)
    }
    /// What the node computes.
    public let kind: Kind
    /// The values it reads, in operand order.
    public let inputs: [GraphValue]
    /// The values it makes (two for a split, else one).
    public let outputs: [GraphValue]
  }

  public override var propagatesInputGradient: Bool {
    didSet {
      for node in nodes where node.inputs.contains(0) {
        if case let .module(_, m) = node.op { m.propagatesInputGradient = propagatesInputGradient }
      }
    }
  }

  // MARK: - Recording

  private func check(_ v: GraphValue, _ what: String) -> Int? {
    guard v.graph == ObjectIdentifier(self), v.index < producer.count else {
      wiringErrors.append("\(what) uses a value of another graph")
      return nil
    }
    return v.index
  }

  private func record(_ op: Op, _ inputs: [GraphValue], outputs: Int) -> [GraphValue] {
    let ins = inputs.compactMap { check($0, describe(op)) }
    for i in ins { consumers[i] += 1 }
    let first = producer.count
    let outs = Array(first..<(first + outputs))
    nodes.append(Node(op: op, inputs: ins, outputs: outs))
    nodeOutputs.append(Array(repeating: nil, count: outputs))
    nodeGrads.append(Array(repeating: nil, count: Swift.max(ins.count, 1)))
    for _ in outs {
      producer.append(nodes.count - 1)
      consumers.append(0)
      values.append(nil)
      gradSlots.append(nil)
      accumulators.append(nil)
    }
    return outs.map { GraphValue(graph: ObjectIdentifier(self), index: $0) }
  }

  /// The kind of a graph operation in `MemoryPasses.byKind`: a module's type name, or the
  /// operation's.
  private static func kind(_ op: Op) -> String {
    switch op {
    case let .module(_, m): return m.typeName
    case .add: return "add"
    case .concat: return "concat"
    case .split: return "split"
    case .shuffle: return "shuffle"
    }
  }

  private func describe(_ op: Op) -> String {
    switch op {
    case let .module(name, m): return "\(name) (\(m.typeName))"
    case .add: return "\(typeName).add"
    case .concat: return "\(typeName).concat"
    case let .split(mode): return "\(typeName).split(\(mode))"
    case let .shuffle(g): return "\(typeName).shuffle(groups: \(g))"
    }
  }

  private func validate() throws {
    var problems = wiringErrors
    if outputIndex == nil { problems.append("no output: set `output` after recording the nodes") }
    for (k, node) in nodes.enumerated() {
      if case let .module(name, m) = node.op, writesInputInPlace(m), let i = node.inputs.first, consumers[i] > 1 {
        problems.append("\(name) (\(m.typeName)) works in place on a value that node \(k)'s siblings also read; "
          + "use a layer that does not work in place there")
      }
    }
    if !problems.isEmpty {
      throw TensorError.invalidArgument("\(typeName): " + problems.joined(separator: "; "))
    }
    fusesReLU = nodes.indices.map(fusesWithNextReLU)
  }

  /// For each node: whether it is a `Conv2D` or `BatchNorm2D` that runs fused with the `ReLU`
  /// node after it (worked out by each validation: the output can be set again).
  private var fusesReLU: [Bool] = []

  /// Whether node k is a ReLU that the node before it ran fused in its last forward pass (the
  /// layer's own flag: a layer run elsewhere since masks nothing).
  private func isFusedReLU(_ k: Int) -> Bool {
    guard k > 0, fusesReLU[k - 1], case let .module(_, layer) = nodes[k - 1].op else { return false }
    return ranFusedWithReLU(layer)
  }

  /// Whether node k is a `Conv2D` or `BatchNorm2D` whose output only the next node reads, and that
  /// node a `ReLU`: the layer then applies the ReLU as it writes its output and the ReLU's mask
  /// in its backward, as in `Sequential` (the same bits as the two layers one after the other,
  /// one pass over the activation less each way).
  private func fusesWithNextReLU(_ k: Int) -> Bool {
    guard k + 1 < nodes.count, case let .module(_, layer) = nodes[k].op, canFuseReLU(after: layer),
      case let .module(_, next) = nodes[k + 1].op, next is ReLU
    else { return false }
    let v = nodes[k].outputs[0]
    return nodes[k + 1].inputs == [v] && consumers[v] == 1
  }

  /// Whether `m` overwrites its input in forward (an in-place ReLU, or a Sequential that starts
  /// with one).
  private func writesInputInPlace(_ m: Module) -> Bool {
    if let r = m as? ReLU { return r.inPlace }
    if let s = m as? Sequential, let first = s.layers.first?.1 { return writesInputInPlace(first) }
    return false
  }

  /// Whether `m`'s backward overwrites its `dy` (an in-place ReLU, or a Sequential that ends with
  /// one that it does not run fused with the layer before).
  private func overwritesGradient(_ m: Module) -> Bool {
    if let r = m as? ReLU { return r.inPlace }
    if let s = m as? Sequential { return s.overwritesIncomingGradient }
    return false
  }

  // MARK: - Shapes

  /// The shape of every value for an input shape, or the first shape error, naming the node.
  func valueShapes(for inputShape: [Int]) throws -> [[Int]] {
    try validate()
    var shapes: [[Int]] = Array(repeating: [], count: producer.count)
    shapes[0] = inputShape
    for node in nodes {
      let ins = node.inputs.map { shapes[$0] }
      let outs = try named(node.op) { try opShapes(node.op, ins) }
      for (v, s) in zip(node.outputs, outs) { shapes[v] = s }
    }
    return shapes
  }

  /// Each module node with its input and output shape, for summaries.
  func moduleShapes(for inputShape: [Int]) throws -> [(name: String, module: Module, input: [Int], output: [Int])] {
    let shapes = try valueShapes(for: inputShape)
    return nodes.compactMap { node in
      guard case let .module(name, m) = node.op else { return nil }
      return (name, m, shapes[node.inputs[0]], shapes[node.outputs[0]])
    }
  }

  public override func outputShape(for s: [Int]) throws -> [Int] {
    try valueShapes(for: s)[outputIndex!]
  }

  private func opShapes(_ op: Op, _ ins: [[Int]]) throws -> [[Int]] {
    switch op {
    case let .module(_, m):
      return [try m.outputShape(for: ins[0])]
    case .add:
      for s in ins.dropFirst() where s != ins[0] {
        throw TensorError.shapeMismatch(layer: "add", expected: Shape.text(ins[0]) + " (the first operand's shape)", got: s)
      }
      return [ins[0]]
    case .concat:
      let first = ins[0]
      try requireImage(first, "concat")
      var c = 0
      for s in ins {
        guard s.count == first.count, s[0] == first[0], s.dropFirst(2).elementsEqual(first.dropFirst(2)) else {
          throw TensorError.shapeMismatch(layer: "concat",
            expected: "[\(first[0]), C" + first.dropFirst(2).map { ", \($0)" }.joined() + "] (as the first operand)", got: s)
        }
        c += s[1]
      }
      var out = first
      out[1] = c
      return [out]
    case .split:
      let s = ins[0]
      try requireImage(s, "split")
      guard s[1] % 2 == 0 else {
        throw TensorError.shapeMismatch(layer: "split", expected: "[N, C, H, W] with C even", got: s)
      }
      var half = s
      half[1] = s[1] / 2
      return [half, half]
    case let .shuffle(g):
      let s = ins[0]
      try requireImage(s, "shuffle")
      guard s[1] % g == 0 else {
        throw TensorError.shapeMismatch(layer: "shuffle", expected: "[N, C, H, W] with C a multiple of \(g)", got: s)
      }
      return [s]
    }
  }

  private func requireImage(_ s: [Int], _ layer: String) throws {
    guard s.count == 4 || s.count == 2 else {
      throw TensorError.shapeMismatch(layer: layer, expected: "[N, C, H, W] or [N, C]", got: s)
    }
  }

  // MARK: - Forward

  ///
  /// Each value comes from the network's pool of activation buffers and goes back to it as soon
  /// as its last reader has run, unless the backward pass reads it (a reader's
  /// `backwardReadsInput`, or its writer's `backwardReadsOutput`). In inference mode
  /// (`withInferenceMode(_:)`) nothing is kept.
  public override func forward(_ x: Tensor) throws -> Tensor {
    try validate()
    let inference = activationArena != nil
    let arena = activationPoolForForward()
    arena.beginPass(self, keeping: x)
    defer { arena.endPass() }
    keptNoActivations = inference
    unread = consumers
    if released.count != values.count { released = [Bool](repeating: false, count: values.count) }
    for v in released.indices { released[v] = false }
    values[0] = x
    for (k, node) in nodes.enumerated() {
      let ins = node.inputs.map { values[$0]! }
      switch node.op {
      case .module where isFusedReLU(k):
        // The ReLU that node k − 1 applied as it wrote its output: its value is that output.
        values[node.outputs[0]] = ins[0]
      case let .module(name, m) where fusesReLU[k]:
        arena.managedOwner = ObjectIdentifier(m)
        let y = try named(node.op) { try forwardFusingReLU(m, ins[0]) }
        y.nameOutput(name, ownedBy: m)
        values[node.outputs[0]] = y
      case let .module(name, m):
        if writesInputInPlace(m) { try checkExclusive(ins[0], at: k) }
        arena.managedOwner = ObjectIdentifier(m)
        let y: Tensor
        if MemoryPasses.active != nil, MemoryPasses.counts(m) {
          y = try MemoryPasses.measure(Self.kind(node.op) + ".forward", { try named(node.op) { try m.forward(ins[0]) } }, elements: { ins[0].count + $0.count })
        } else if let s = m as? Sequential {
          // A Sequential that runs channels-major reorders its input in place when nothing else reads it.
          let exclusive = inputIsExclusive(at: k)
          y = try named(node.op) { try s.forward(ins[0], mayOverwriteInput: exclusive) }
        } else {
          y = try named(node.op) { try m.forward(ins[0]) }
        }
        y.nameOutput(name, ownedBy: m)
        values[node.outputs[0]] = y
      default:
        let shapes = try named(node.op) { try opShapes(node.op, ins.map(\.shape)) }
        arena.managedOwner = ObjectIdentifier(self)
        let outs = shapes.enumerated().map { reuseOutput(&nodeOutputs[k][$0.offset], shape: $0.element) }
        // every input read, every output written (a split or concatenation that only views
        // counts its copies all the same)
        MemoryPasses.measure(Self.kind(node.op) + ".forward", { runForward(node.op, ins, outs) },
          elements: { _ in ins.reduce(0) { $0 + $1.count } + outs.reduce(0) { $0 + $1.count } })
        for (v, t) in zip(node.outputs, outs) { values[v] = t }
      }
      recycleUnread(after: k, arena, inference: inference)
    }
    let y = values[outputIndex!]!
    // The graph's own flags: the readers of x (or of storage that a kept value shares with it),
    // and the writer of the output (or storage the output shares with another kept value).
    let keptValues = values.indices.filter { $0 != 0 && !released[$0] }
    readsInput = readsValue(0) || keptValues.contains { values[$0]?.storage === x.storage }
    readsOutput = (outputIndex == 0 ? readsInput : readsValue(outputIndex!))
      || values.indices.contains { v in v != outputIndex && (v == 0 || !released[v]) && values[v]?.storage === y.storage }
    return y
  }

  /// How many readers of each value have still to run in this pass, and which values went back
  /// to the pool.
  private var unread: [Int] = []
  private var released: [Bool] = []
  /// Whether the last `forward` ran in inference mode, so that no activations are left.
  private var keptNoActivations = false
  /// After a forward pass outside inference mode: whether its backward reads x (or storage a
  /// kept value shares with it), and whether it reads its output.
  private var readsInput = true, readsOutput = true

  public override var backwardReadsInput: Bool { readsInput }
  public override var backwardReadsOutput: Bool { readsOutput }

  /// Whether the backward pass reads value v: a module that reads it reads its input, or the
  /// module that wrote it reads its output (operations read neither: only shapes).
  /// A ReLU run fused with the layer before it reads nothing (that layer's backward masks).
  /// Node `skipped`'s reading, if any, is left out.
  private func readsValue(_ v: Int, apartFrom skipped: Int = -1) -> Bool {
    if v != 0, !isFusedReLU(producer[v]), case let .module(_, m) = nodes[producer[v]].op, m.backwardReadsOutput {
      return true
    }
    return nodes.indices.contains { k in
      guard k != skipped, nodes[k].inputs.contains(v), !isFusedReLU(k), case let .module(_, m) = nodes[k].op else {
        return false
      }
      return m.backwardReadsInput
    }
  }

  /// Gives back to the pool every value that node `k` read for the last time, and its outputs
  /// that nothing reads, unless the backward pass reads it (outside inference mode) or a value
  /// still to be read (outside inference mode: any kept value) views the same storage.
  private func recycleUnread(after k: Int, _ arena: ActivationArena, inference: Bool) {
    var dead: [Int] = []
    for v in nodes[k].inputs {
      unread[v] -= 1
      if unread[v] == 0, v != 0 { dead.append(v) }
    }
    dead += nodes[k].outputs.filter { unread[$0] == 0 }
    if !inference { dead.removeAll { readsValue($0) } }
    guard !dead.isEmpty else { return }
    let live = values.indices.compactMap { v -> Tensor? in
      if v == 0 { return values[v] }
      guard producer[v] <= k, !dead.contains(v) else { return nil }
      return (inference ? unread[v] > 0 : !released[v]) ? values[v] : nil
    }
    for v in dead {
      if let t = values[v] { arena.recycle(t, unlessSharedWith: live) }
      released[v] = true
    }
  }

  /// Whether node k's module may overwrite its input: a value of this graph (not its caller's
  /// input, not its output) that no later node reads and no other node's backward reads, and
  /// whose storage no other value that is read later (or is the caller's input) shares.
  private func inputIsExclusive(at k: Int) -> Bool {
    let v = nodes[k].inputs[0]
    func readLater(_ u: Int) -> Bool { u == outputIndex || nodes[(k + 1)...].contains { $0.inputs.contains(u) } }
    // Node k's own reading aside (from the last pass, it would say yes once k reordered in place).
    guard v != 0, !readLater(v), !readsValue(v, apartFrom: k), let t = values[v] else { return false }
    for u in 0..<values.count where u != v && producer[u] < k {
      if let other = values[u], other.storage === t.storage, u == 0 || readLater(u) || readsValue(u, apartFrom: k) {
        return false
      }
    }
    return true
  }

  /// An in-place layer may only overwrite storage that no later node reads.
  private func checkExclusive(_ t: Tensor, at k: Int) throws {
    // Values made by this node or later ones still hold the last pass's tensors: skip them.
    for v in 0..<values.count where v != nodes[k].inputs[0] && producer[v] < k {
      guard let other = values[v], other.storage === t.storage else { continue }
      let readLater = v == outputIndex || nodes[(k + 1)...].contains { $0.inputs.contains(v) }
      if readLater {
        throw TensorError.invalidArgument("\(typeName): \(describe(nodes[k].op)) works in place on memory that a later node "
          + "reads; use a layer that does not work in place there")
      }
    }
  }

  private func runForward(_ op: Op, _ ins: [Tensor], _ outs: [Tensor]) {
    let y = outs[0]
    switch op {
    case .module:
      break
    case .add:
      ChannelOps.add(ins[0].data, ins[1].data, into: y.data, count: y.count)
      for t in ins.dropFirst(2) { ChannelOps.add(y.data, t.data, into: y.data, count: y.count) }
    case .concat:
      ChannelOps.concat(ins, into: y)
    case let .split(mode):
      ChannelOps.split(ins[0], mode, into: outs[0], outs[1])
    case let .shuffle(g):
      let (n, plane) = ChannelOps.batchAndPlane(y)
      ChannelOps.shuffle(ins[0].data, into: y.data, batch: n, channels: y.shape[1], plane: plane, groups: g)
    }
  }

  // MARK: - Backward

  public override func backward(_ dy: Tensor) throws -> Tensor {
    if keptNoActivations {
      throw TensorError.invalidArgument("\(typeName).backward: the last forward ran in inference mode "
        + "(withInferenceMode), which keeps no activations; run forward outside it before backward")
    }
    guard let out = outputIndex, let y = values[out] else {
      throw TensorError.invalidArgument("\(typeName).backward: no forward pass to go back through")
    }
    guard dy.shape == y.shape else {
      throw TensorError.shapeMismatch(layer: "\(typeName).backward", expected: Shape.text(y.shape), got: dy.shape)
    }
    // Input gradients (the children's and the graph's own) come from the pool and go back once
    // every node that reads them has run.
    let arena = gradientPoolForBackward()
    arena.beginPass(self, keeping: dy)
    defer { arena.endPass() }
    for v in 0..<gradSlots.count { gradSlots[v] = nil }
    gradSlots[out] = dy
    incomingGradient = dy
    defer { incomingGradient = nil }
    for k in nodes.indices.reversed() {
      let node = nodes[k]
      let grads = node.outputs.map { gradSlots[$0] }
      if grads.allSatisfy({ $0 == nil }) { continue }  // nothing downstream reads this node
      let wantsInput = node.inputs.map { $0 != 0 || propagatesInputGradient }
      displaced = grads.compactMap { $0 }
      // Once node k has gone back (also when it wants no input gradient), its output gradients
      // and contributions summed into another buffer are read by no node still to run, unless a
      // pending gradient shares their storage.
      defer {
        let live = gradSlots.indices.compactMap { u in u == 0 || producer[u] < k ? gradSlots[u] : nil } + [dy]
        for t in displaced { arena.recycle(t, unlessSharedWith: live) }
      }
      arena.managedOwner = ObjectIdentifier(self)
      switch node.op {
      case let .module(_, m) where isFusedReLU(k):
        // A ReLU that node k − 1 ran fused: that node's backward applies its mask, to the same
        // gradient. Its hook still runs, in its place (a ReLU has no gradients of its own).
        try m.backwardHook?()
        try contribute(grads[0]!, to: node.inputs[0], from: node.op, node: k)
      case let .module(_, m):
        var g = grads[0]!
        if overwritesGradient(m) { g = try exclusiveGradient(g, value: node.outputs[0]) }
        arena.managedOwner = ObjectIdentifier(m)
        let gIn = g
        let dx: Tensor
        if let bn = m as? BatchNorm2D, bn.fusedReLU {
          dx = try MemoryPasses.measure("BatchNorm2D+ReLU.backward", { try named(node.op) { try m.backward(gIn) } },
            elements: { gIn.count + 2 * $0.count })
        } else if MemoryPasses.active != nil, MemoryPasses.counts(m) {
          dx = try MemoryPasses.measure(Self.kind(node.op) + ".backward", { try named(node.op) { try m.backward(gIn) } }, elements: { gIn.count + 2 * $0.count })
        } else {
          dx = try named(node.op) { try m.backward(gIn) }
        }
        try m.backwardHook?()  // a module runs at one node only (a wiring rule)
        arena.managedOwner = ObjectIdentifier(self)
        if wantsInput[0] { try contribute(dx, to: node.inputs[0], from: node.op, node: k) } else { displaced.append(dx) }
      case .add:
        for (i, v) in node.inputs.enumerated() where wantsInput[i] { try contribute(grads[0]!, to: v, from: node.op, node: k) }
      case .concat:
        let parts: [Tensor?] = node.inputs.enumerated().map { i, v in
          wantsInput[i] ? reuseInputGradient(&nodeGrads[k][i], shape: values[v]!.shape) : nil
        }
        MemoryPasses.measure(Self.kind(node.op) + ".backward", { ChannelOps.concatBackward(grads[0]!, into: parts) },
          elements: { _ in 2 * grads[0]!.count })
        for (i, v) in node.inputs.enumerated() {
          if let dx = parts[i] { try contribute(dx, to: v, from: node.op, node: k) }
        }
      case let .split(mode):
        guard wantsInput[0] else { continue }
        let dx = reuseInputGradient(&nodeGrads[k][0], shape: values[node.inputs[0]]!.shape)
        MemoryPasses.measure(Self.kind(node.op) + ".backward", { ChannelOps.splitBackward(grads[0], grads[1], mode, into: dx) }, elements: { _ in 2 * dx.count })
        try contribute(dx, to: node.inputs[0], from: node.op, node: k)
      case let .shuffle(groups):
        guard wantsInput[0] else { continue }
        let g = grads[0]!
        let dx = reuseInputGradient(&nodeGrads[k][0], shape: g.shape)
        let (n, plane) = ChannelOps.batchAndPlane(g)
        MemoryPasses.measure(Self.kind(node.op) + ".backward", {
          ChannelOps.shuffle(g.data, into: dx.data, batch: n, channels: g.shape[1], plane: plane, groups: groups,
            inverse: true)
        }, elements: { _ in 2 * g.count })
        try contribute(dx, to: node.inputs[0], from: node.op, node: k)
      }
    }
    displaced = []
    arena.managedOwner = ObjectIdentifier(self)
    if let dx = gradSlots[0], propagatesInputGradient { return dx }
    // The input feeds nothing that reaches the output, or its gradient is not wanted.
    let dx = reuseInputGradient(&unusedInputGrad, shape: values[0]!.shape)
    if propagatesInputGradient { dx.zero() }
    return dx
  }

  /// Adds a gradient contribution to value `v`: borrowed when it is the first; when it is not,
  /// summed into the first in place if that is scratch no one reads any more (see
  /// `canSumInPlace`), else into the graph's own accumulator for `v`.
  private func contribute(_ g: Tensor, to v: Int, from op: Op, node k: Int) throws {
    guard let current = gradSlots[v] else {
      gradSlots[v] = g
      return
    }
    guard current.shape == g.shape else {
      throw TensorError.shapeMismatch(layer: "\(describe(op)).backward", expected: Shape.text(current.shape), got: g.shape)
    }
    // two gradients read, their sum written
    if canSumInPlace(current, value: v, other: g, node: k) {
      MemoryPasses.measure("add.backward", { ChannelOps.add(current.data, g.data, into: current.data, count: current.count) },
        elements: { _ in 3 * current.count })
      displaced.append(g)
      return
    }
    let acc = reuseInputGradient(&accumulators[v], shape: g.shape)
    MemoryPasses.measure("add.backward", { ChannelOps.add(current.data, g.data, into: acc.data, count: acc.count) }, elements: { _ in 3 * acc.count })
    gradSlots[v] = acc
    displaced += [current, g]
  }

  /// Whether `current`, the gradient borrowed for value `v`, can take the sum in place during
  /// node `k`'s backward: it is the input gradient a node of this graph returned (not the `dy`
  /// the caller passed in, which the caller owns, nor the other contribution), and no other
  /// value still waiting for its backward (value 0, or one made by a node before `k`) holds the
  /// same storage. Nodes hand out scratch that only their next backward overwrites, so nothing
  /// else reads it; this saves one buffer per residual join (same values: the same addition).
  private func canSumInPlace(_ current: Tensor, value v: Int, other g: Tensor, node k: Int) -> Bool {
    guard current.storage !== incomingGradient?.storage, current.storage !== g.storage else { return false }
    return !gradSlots.indices.contains { u in
      u != v && gradSlots[u].map { $0.storage === current.storage } == true && (u == 0 || producer[u] < k)
    }
  }

  /// The gradient of value `v`, copied into the graph's accumulator for `v` when its storage is
  /// also the pending gradient of another value (an add hands one tensor to all its operands) or
  /// the caller's `dy`: an in-place layer's backward would overwrite it.
  private func exclusiveGradient(_ g: Tensor, value v: Int) throws -> Tensor {
    let shared = g.storage === incomingGradient?.storage || gradSlots.indices.contains { u in
      u != v && gradSlots[u].map { $0.storage === g.storage } == true && (u == 0 || producer[u] < producer[v])
    }
    guard shared else { return g }
    let acc = reuseInputGradient(&accumulators[v], shape: g.shape)
    acc.copy(from: g)
    gradSlots[v] = acc
    return acc
  }

  /// Runs `body`, adding the node's name to a shape error (`conv2 (Conv2D): expected ...`).
  private func named<T>(_ op: Op, _ body: () throws -> T) throws -> T {
    do {
      return try body()
    } catch let TensorError.shapeMismatch(layer, expected, got) where !layer.contains("(") {
      let label: String
      if case let .module(name, _) = op { label = "\(name) (\(layer))" } else { label = "\(typeName).\(layer)" }
      throw TensorError.shapeMismatch(layer: label, expected: expected, got: got)
    }
  }
}
