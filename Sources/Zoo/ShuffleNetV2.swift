// ShuffleNetV2: the official ShuffleNetV2-ACON / -MetaACON network (nmaac/acon,
// ACON/ShuffleNetV2_ACON/network.py and MetaACON/ShuffleNet_MetaACON/network.py), with ReLU,
// Swish, ACON-C or Meta-ACON-C in every activation slot, built from Graph units.
//
// Shapes at 3×224×224: first_conv 3×3/2 → [N, 24, 112, 112], maxpool 3/2/1 → 56×56, three
// stages of [4, 8, 4] units (the first of each at stride 2) → 7×7, conv_last 1×1 → 1024 (2048 at
// 2.0×), global average, classifier → [N, classes]. Under 112 pixels (the smaller side) the stem
// has stride 1 and no max-pool.
import ACON
import NN
import TensorCore

/// The ShuffleNetV2 widths: the stem, the three stages and conv_last, per width multiplier.
enum ShuffleNetV2Widths {
  static func channels(_ size: String) -> [Int]? {
    switch size {
    case "0.5": return [24, 48, 96, 192, 1024]
    case "1.0": return [24, 116, 232, 464, 1024]
    case "1.5": return [24, 176, 352, 704, 1024]
    case "2.0": return [24, 244, 488, 976, 2048]
    default: return nil
    }
  }
}

/// One ShuffleNetV2 unit (`ShuffleV2Block_ACON`): at stride 1 the input's even channels pass
/// through and the odd ones enter `branch_main`; at stride 2 the whole input enters both
/// `branch_main` and `branch_proj`. Output `cat[pass or branch_proj, branch_main]`.
/// Input `[N, C, H, W]` (C = `inp` at stride 2, 2·`inp` at stride 1), output `[N, oup, H', W']`.
public final class ShuffleV2Block: Graph {
  /// A unit; `inp` is the channel count entering the branches, `mid` the main branch's width.
  public init(inp: Int, oup: Int, mid: Int, stride: Int, activation: ZooActivation, r: Int, rng: inout SeededGenerator) {
    super.init()
    let outputs = oup - inp
    let (pass, x) = stride == 1 ? split(input, .evenOdd) : (input, input)
    let main = self("branch_main", Sequential([
      Conv2D(inChannels: inp, outChannels: mid, kernelSize: 1, rng: &rng), BatchNorm2D(channels: mid),
      activation.make(channels: mid, r: r, rng: &rng),
      DepthwiseConv2D(channels: mid, kernelSize: 3, stride: stride, padding: 1, rng: &rng), BatchNorm2D(channels: mid),
      Conv2D(inChannels: mid, outChannels: outputs, kernelSize: 1, rng: &rng), BatchNorm2D(channels: outputs),
      activation.make(channels: outputs, r: r, rng: &rng),
    ]), x)
    if stride == 1 {
      output = concat(pass, main)
    } else {
      let proj = self("branch_proj", Sequential([
        DepthwiseConv2D(channels: inp, kernelSize: 3, stride: stride, padding: 1, rng: &rng), BatchNorm2D(channels: inp),
        Conv2D(inChannels: inp, outChannels: inp, kernelSize: 1, rng: &rng), BatchNorm2D(channels: inp),
        activation.make(channels: inp, r: r, rng: &rng),
      ]), pass)
      output = concat(proj, main)
    }
  }

  public override var typeName: String { "ShuffleV2Block" }
}

/// The whole ShuffleNetV2 with the official state_dict names (`first_conv.0.weight`,
/// `features.0.branch_main.0.weight`, …, `conv_last.0.weight`, `classifier.0.weight`).
/// - Parameters:
///   - size: "0.5", "1.0", "1.5" or "2.0".
///   - input: `[C, H, W]`.
func shuffleNetV2(size: String, activation: ZooActivation, input: [Int], classes: Int, rng: inout SeededGenerator) -> Sequential {
  let widths = ShuffleNetV2Widths.channels(size)!
  let r = size == "0.5" ? 8 : 16
  let small = min(input[1], input[2]) < ZooModels.smallInputSide
  var channels = widths[0]
  var layers: [(String, Module)] = [
    ("first_conv", Sequential([
      Conv2D(inChannels: input[0], outChannels: channels, kernelSize: 3, stride: small ? 1 : 2, padding: 1, rng: &rng),
      BatchNorm2D(channels: channels), activation.make(channels: channels, r: r, rng: &rng),
    ]))
  ]
  if !small { layers.append(("maxpool", MaxPool2D(kernelSize: 3, stride: 2, padding: 1))) }
  var units: [Module] = []
  for (stage, repeats) in [4, 8, 4].enumerated() {
    let out = widths[stage + 1]
    for i in 0..<repeats {
      units.append(i == 0
        ? ShuffleV2Block(inp: channels, oup: out, mid: out / 2, stride: 2, activation: activation, r: r, rng: &rng)
        : ShuffleV2Block(inp: channels / 2, oup: out, mid: out / 2, stride: 1, activation: activation, r: r, rng: &rng))
      channels = out
    }
  }
  layers.append(("features", Sequential(units)))
  let last = widths[4]
  layers.append(("conv_last", Sequential([
    Conv2D(inChannels: channels, outChannels: last, kernelSize: 1, rng: &rng), BatchNorm2D(channels: last),
    activation.make(channels: last, r: r, rng: &rng),
  ])))
  layers.append(("globalpool", GlobalAvgPool2D()))
  if size == "2.0" { layers.append(("dropout", Dropout(p: 0.2, seed: rng.next()))) }
  layers.append(("flatten", Flatten()))
  layers.append(("classifier", Sequential([Linear(inFeatures: last, outFeatures: classes, rng: &rng)])))
  return Sequential(layers)
}
