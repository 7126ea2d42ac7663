// Summary: a Keras/Paddle-style model summary table (layer, input shape, output shape,
// parameter count; then total, trainable and non-trainable counts).
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

  /// Summarises `model` for `inputShape` (`[N, C, H, W]`) without running any arithmetic.
  public init(model: Module, inputShape: [Int]) throws {
    var counters: [String: Int] = [:]
    var rows: [SummaryRow] = []
    func row(_ name: String, _ l: Module, _ input: [Int], _ output: [Int]) {
      counters[l.typeName, default: 0] += 1
      rows.append(SummaryRow(layer: "\(l.typeName)-\(counters[l.typeName]!)", name: name,
        inputShape: input, outputShape: output, parameters: l.parameterCount))
    }
    if let graph = model as? Graph {
      for m in try graph.moduleShapes(for: inputShape) { row(m.name, m.module, m.input, m.output) }
    } else {
      let layers: [(String, Module)] = (model as? Sequential)?.layers ?? [("", model)]
      var shape = inputShape
      for (name, l) in layers {
        let out = try namingShapeErrors(name) { try l.outputShape(for: shape) }
        row(name, l, shape, out)
        shape = out
      }
    }
    self.rows = rows
    trainableParameters = model.parameterCount
    nonTrainableParameters = model.namedBuffers().reduce(0) { acc, b in
      if case .float(let t) = b.1 { return acc + t.count }
      return acc
    }
    totalParameters = trainableParameters + nonTrainableParameters
  }

  /// The table, as Paddle's `Model.summary` prints it.
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
    let rule = String(repeating: "-", count: 75)
    var lines = [rule, pad("Layer (type)", 16) + pad("Input Shape", 22) + pad("Output Shape", 22) + pad("Param #", 15), String(repeating: "=", count: 75)]
    for r in rows {
      lines.append(pad(r.layer, 16) + pad(Shape.text(r.inputShape), 22) + pad(Shape.text(r.outputShape), 22)
        + pad(grouped(r.parameters), 15))
    }
    lines.append(String(repeating: "=", count: 75))
    lines.append("Total params: \(grouped(totalParameters))")
    lines.append("Trainable params: \(grouped(trainableParameters))")
    lines.append("Non-trainable params: \(grouped(nonTrainableParameters))")
    lines.append(rule)
    return lines.joined(separator: "\n")
  }
}
