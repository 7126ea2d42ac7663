// Summary: a Keras/Paddle-style model summary table (layer, input shape, output shape,
// parameter count, multiply-accumulates per image; then total, trainable and non-trainable
// counts and the total multiply-accumulates).
import TensorCore

/// One row of a model summary.
public struct SummaryRow: Equatable, Sendable {
  /// `"Conv2D-1"`: the type name and its running number among layers of that type.
  public var layer: String
  /// The dotted name in the model, e.g. `"conv1"`.
  public var name: String
  /// Input shape, e.g. `[64, 3, 32, 32]`.
  public var inputShape: [Int]
  /// Output shape.
  public var outputShape: [Int]
  /// Learnable scalars in the layer and its submodules.
  public var parameters: Int
  /// Multiply-accumulates of the layer for one image (the "FLOPs" of the ShuffleNet and ACON
  /// papers): convolutions and linear layers, as the summary's counter counts them.
  public var multiplyAccumulates: Int = 0
}

/// A model summary for one input shape.
public struct ModelSummary: CustomStringConvertible, Sendable {
  /// One row per direct child of a `Sequential` model, one per recorded module of a `Graph`
  /// model (with the shapes at that node), the model itself otherwise.
  public var rows: [SummaryRow]
  /// All learnable scalars.
  public var totalParameters: Int
  /// Learnable scalars (every parameter is trainable here).
  public var trainableParameters: Int
  /// BatchNorm running means and variances, counted as Paddle and Keras count them.
  public var nonTrainableParameters: Int
  /// The rows' multiply-accumulates summed: the model's for one image.
  public var totalMultiplyAccumulates: Int
  /// Whether the table has a column of the rows' names (for expanded summaries).
  public var showsNames = false

  /// Summarises `model` for `inputShape` (`[N, C, H, W]`) without running any arithmetic.
  /// - Parameters:
  ///   - model: the model; a `Sequential` gets a row per layer, a `Graph` a row per recorded module.
  ///   - inputShape: `[N, C, H, W]` (or `[N, F]`).
  ///   - expandingSequentials: give each layer of a `Sequential` child its own row, named
  ///     `parent.child` (recursively), instead of one row for the child; the table then shows the names.
  ///   - multiplyAccumulates: counts a row's multiply-accumulates for one image, given the layer
  ///     and its input shape `[1, C, H, W]` (or `[1, F]`); the default,
  ///     `ModelSummary.multiplyAccumulates(of:inputShape:)`, knows NN's layers. Pass a counter that
  ///     also knows your own layers (the zoo's `MultiplyAccumulates.count` knows ACON's).
  public init(model: Module, inputShape: [Int], expandingSequentials: Bool = false,
    multiplyAccumulates: (Module, [Int]) throws -> Int = ModelSummary.multiplyAccumulates(of:inputShape:)) throws {
    var counters: [String: Int] = [:]
    var rows: [SummaryRow] = []
    func row(_ name: String, _ l: Module, _ input: [Int], _ output: [Int]) throws {
      counters[l.typeName, default: 0] += 1
      let macs = try namingShapeErrors(name) { try multiplyAccumulates(l, [1] + input.dropFirst()) }
      rows.append(SummaryRow(layer: "\(l.typeName)-\(counters[l.typeName]!)", name: name,
        inputShape: input, outputShape: output, parameters: l.parameterCount, multiplyAccumulates: macs))
    }
    if let graph = model as? Graph {
      for m in try graph.moduleShapes(for: inputShape) { try row(m.name, m.module, m.input, m.output) }
    } else {
      func rowsOf(_ layers: [(String, Module)], _ prefix: String, _ input: [Int]) throws -> [Int] {
        var shape = input
        for (name, l) in layers {
          if expandingSequentials, let q = l as? Sequential, !q.layers.isEmpty {
            shape = try namingShapeErrors(name) { try rowsOf(q.layers, prefix + name + ".", shape) }
            continue
          }
          let out = try namingShapeErrors(name) { try l.outputShape(for: shape) }
          try row(prefix + name, l, shape, out)
          shape = out
        }
        return shape
      }
      _ = try rowsOf((model as? Sequential)?.layers ?? [("", model)], "", inputShape)
    }
    showsNames = expandingSequentials
    self.rows = rows
    totalMultiplyAccumulates = rows.reduce(0) { $0 + $1.multiplyAccumulates }
    trainableParameters = model.parameterCount
    nonTrainableParameters = model.namedBuffers().reduce(0) { acc, b in
      if case .float(let t) = b.1 { return acc + t.count }
      return acc
    }
    totalParameters = trainableParameters + nonTrainableParameters
  }

  /// NN's multiply-accumulate counter: for an input of shape `inputShape` (`[N, …]`), a
  /// `Conv2D` counts output elements × (Cin / groups) × kH × kW, a `DepthwiseConv2D` output
  /// elements × kH × kW, a `Linear` N × in × out, a `Sequential` or `Graph` the sum over the
  /// layers it runs; everything else (biases, BatchNorm, activations, pooling) counts 0, as in
  /// the papers' tables. Throws the layer's shape error when the input does not fit.
  /// - Parameters:
  ///   - model: the layer or model.
  ///   - inputShape: its input shape `[N, C, H, W]` (or `[N, F]`); the count is for all N images.
  public static func multiplyAccumulates(of model: Module, inputShape: [Int]) throws -> Int {
    let m = model, s = inputShape
    switch m {
    case let c as Conv2D:
      return try c.outputShape(for: s).reduce(1, *) * (c.inChannels / c.groups) * c.kernelShape.height * c.kernelShape.width
    case let c as DepthwiseConv2D:
      return try c.outputShape(for: s).reduce(1, *) * c.kernelShape.height * c.kernelShape.width
    case let l as Linear:
      return try l.outputShape(for: s)[0] * l.inFeatures * l.outFeatures
    case let q as Sequential:
      var total = 0, shape = s
      for (name, l) in q.layers {
        total += try namingShapeErrors(name) { try multiplyAccumulates(of: l, inputShape: shape) }
        shape = try namingShapeErrors(name) { try l.outputShape(for: shape) }
      }
      return total
    case let g as Graph:
      return try g.moduleShapes(for: s).reduce(0) { acc, node in
        acc + (try namingShapeErrors(node.name) { try multiplyAccumulates(of: node.module, inputShape: node.input) })
      }
    default:
      _ = try m.outputShape(for: s)
      return 0
    }
  }

  /// The table, as Paddle's `Model.summary` prints it, with a multiply-accumulates column.
  public var description: String {
    func grouped(_ n: Int) -> String {
      let s = String(n)
      var out = ""
      for (i, ch) in s.enumerated() {
        if i > 0 && (s.count - i) % 3 == 0 { out += "," }
        out.append(ch)
      }
      return out
    }
    func pad(_ s: String, _ w: Int) -> String {
      let total = Swift.max(0, w - s.count), left = total / 2
      return String(repeating: " ", count: left) + s + String(repeating: " ", count: total - left)
    }
    let nameWidth = showsNames ? (rows.map(\.name.count).max() ?? 0) + 2 : 0
    func left(_ s: String) -> String { showsNames ? s + String(repeating: " ", count: Swift.max(0, nameWidth - s.count)) : "" }
    let width = 92 + nameWidth
    let rule = String(repeating: "-", count: width)
    var lines = [rule, left("Name") + pad("Layer (type)", 18) + pad("Input Shape", 22) + pad("Output Shape", 22)
      + pad("Param #", 14) + pad("MACs/image", 16), String(repeating: "=", count: width)]
    for r in rows {
      lines.append(left(r.name) + pad(r.layer, 18) + pad(Shape.text(r.inputShape), 22) + pad(Shape.text(r.outputShape), 22)
        + pad(grouped(r.parameters), 14) + pad(grouped(r.multiplyAccumulates), 16))
    }
    lines.append(String(repeating: "=", count: width))
    lines.append("Total params: \(grouped(totalParameters))")
    lines.append("Trainable params: \(grouped(trainableParameters))")
    lines.append("Non-trainable params: \(grouped(nonTrainableParameters))")
    lines.append("Multiply-accumulates per image: \(grouped(totalMultiplyAccumulates))"
      + " (\(String(Double(totalMultiplyAccumulates / 10_000) / 100)) M)")
    lines.append(rule)
    return lines.joined(separator: "\n")
  }
}
