// TFNet: the official TFNet (nmaac/acon, TFNet/network.py): ACON-FReLU blocks with a residual add
// at stride 1 and a concatenation at stride 2 (the ACON-FReLU after it downsamples).
//
// Shapes at 3×224×224: first_conv 3×3/2 + BN + ReLU → [N, int(16·s), 112, 112], four stages of
// [2, 3, 8, 3] blocks (the first of each at stride 2, doubling the channels) → [N, 16·s·16, 7, 7],
// conv_last 1×1 → 1024 + BN + ACON-FReLU, global average, classifier → [N, classes]. Under 112
// pixels the stem has stride 1.
import ACON
import NN
import TensorCore

/// One TFNet block (`TFBlock`): `branch_main` = 1×1 conv, BN, ACON-FReLU, 1×1 conv, BN; then
/// `acon` = ACON-FReLU(x + branch) at stride 1, ACON-FReLU/2(cat[x, branch]) at stride 2.
/// Input `[N, inp, H, W]`, output `[N, inp·stride, H/stride, W/stride]` (rounded up).
public final class TFBlock: Graph {
  /// A block on `inp` channels at stride 1 or 2.
  public init(inp: Int, stride: Int, rng: inout SeededGenerator) {
    super.init()
    let main = self("branch_main", Sequential([
      Conv2D(inChannels: inp, outChannels: inp, kernelSize: 1, rng: &rng), BatchNorm2D(channels: inp),
      AconFReLU(channels: inp, rng: &rng),
      Conv2D(inChannels: inp, outChannels: inp, kernelSize: 1, rng: &rng), BatchNorm2D(channels: inp),
    ]), input)
    let merged = stride == 1 ? add(input, main) : concat(input, main)
    output = self("acon", AconFReLU(channels: inp * stride, stride: stride, rng: &rng), merged)
  }

  public override var typeName: String { "TFBlock" }
}

/// The whole TFNet with the official names (`first_conv.0.weight`, `features.0.branch_main.0.weight`,
/// `features.0.acon.conv_frelu.weight`, …, `conv_last.2.bn2.bias`, `classifier.0.weight`).
/// - Parameters:
///   - size: "0.5", "1.0", "1.5" or "2.0" (the stem width is int(16·size)).
///   - input: `[C, H, W]`.
func tfNet(size: String, input: [Int], classes: Int, rng: inout SeededGenerator) -> Sequential {
  let scale = Double(size)!
  let small = min(input[1], input[2]) < ZooModels.smallInputSide
  var channels = Int(16 * scale)
  var layers: [(String, Module)] = [
    ("first_conv", Sequential([
      Conv2D(inChannels: input[0], outChannels: channels, kernelSize: 3, stride: small ? 1 : 2, padding: 1, rng: &rng),
      BatchNorm2D(channels: channels), ReLU(inPlace: true),
    ]))
  ]
  var blocks: [Module] = []
  for repeats in [2, 3, 8, 3] {
    for i in 0..<repeats {
      blocks.append(TFBlock(inp: channels, stride: i == 0 ? 2 : 1, rng: &rng))
      if i == 0 { channels *= 2 }
    }
  }
  layers.append(("features", Sequential(blocks)))
  let last = 1024
  layers.append(("conv_last", Sequential([
    Conv2D(inChannels: channels, outChannels: last, kernelSize: 1, rng: &rng), BatchNorm2D(channels: last),
    AconFReLU(channels: last, rng: &rng),
  ])))
  layers.append(("globalpool", GlobalAvgPool2D()))
  if scale > 0.5 { layers.append(("dropout", Dropout(p: 0.2, seed: rng.next()))) }
  layers.append(("flatten", Flatten()))
  layers.append(("classifier", Sequential([Linear(inFeatures: last, outFeatures: classes, rng: &rng)])))
  return Sequential(layers)
}
