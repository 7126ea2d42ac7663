// MultiplyAccumulates: the multiply-accumulates (the "FLOPs" of the ShuffleNet and ACON papers)
// of a network for one image, counted from the layer shapes without running anything:
// convolutions (dense, grouped, depthwise, Meta-ACON's fc1/fc2 on 1×1 maps, ACON-FReLU's funnel)
// and linear layers. Biases, BatchNorm, activations, pooling and the channel operations are not
// counted, as in the papers' tables (ShuffleNetV2 0.5× ≈ 41M at 224×224).
import ACON
import NN
import TensorCore

/// Multiply-accumulate counts of networks.
public enum MultiplyAccumulates {
  /// The multiply-accumulates of one forward pass of one image of shape `inputShape` (`[C, H, W]`)
  /// through `model`; throws a shape error naming the layer when the input does not fit.
  public static func count(_ model: Module, inputShape: [Int]) throws -> Int {
    try macs(model, [1] + inputShape).macs
  }

  /// The count for input `s` (`[N, …]`) and the output shape.
  static func macs(_ m: Module, _ s: [Int]) throws -> (macs: Int, output: [Int]) {
    switch m {
    case let c as Conv2D:
      let o = try c.outputShape(for: s)
      return (o.reduce(1, *) * (c.inChannels / c.groups) * c.kernelShape.height * c.kernelShape.width, o)
    case let c as DepthwiseConv2D:
      let o = try c.outputShape(for: s)
      return (o.reduce(1, *) * c.kernelShape.height * c.kernelShape.width, o)
    case let l as Linear:
      let o = try l.outputShape(for: s)
      return (o[0] * l.inFeatures * l.outFeatures, o)
    case let a as AconFReLU:
      return (try macs(a.convFReLU, s).macs, try a.outputShape(for: s))
    case let a as MetaAconC:
      let n = s[0]
      let first = try macs(a.fc1, [n, a.channels, 1, 1])
      return (first.macs + (try macs(a.fc2, first.output).macs), try a.outputShape(for: s))
    case let q as Sequential:
      var total = 0, shape = s
      for (_, l) in q.layers {
        let r = try macs(l, shape)
        total += r.macs
        shape = r.output
      }
      return (total, shape)
    case let b as BasicBlock:
      return try macs(b.graph, s)
    case let g as Graph:
      var shapes: [GraphValue: [Int]] = [g.input: s]
      var total = 0
      for node in g.recordedNodes {
        let ins = node.inputs.map { shapes[$0]! }
        switch node.kind {
        case let .module(_, m):
          let r = try macs(m, ins[0])
          total += r.macs
          shapes[node.outputs[0]] = r.output
        case .add, .shuffle:
          shapes[node.outputs[0]] = ins[0]
        case .concat:
          var o = ins[0]
          o[1] = ins.reduce(0) { $0 + $1[1] }
          shapes[node.outputs[0]] = o
        case .split:
          var o = ins[0]
          o[1] /= 2
          for v in node.outputs { shapes[v] = o }
        }
      }
      guard let out = g.output, let shape = shapes[out] else {
        throw TensorError.invalidArgument("\(g.typeName): no output to count multiply-accumulates to")
      }
      return (total, shape)
    default:
      return (0, try m.outputShape(for: s))
    }
  }
}
