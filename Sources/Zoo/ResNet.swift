// ResNet: the official ResNet-ACON (nmaac/acon, ACON/ResNet_ACON/resnet_acon.py, and
// MetaACON/ResNet_MetaACON/resnet_metaacon.py): bottlenecks with ACON only after the 3×3
// convolution and the stride on the first 1×1 (ResNet-50/101/152), and `BasicBlock_ACON` with
// ACON in both activation slots (ResNet-18/34, torchvision's depths). Every convolution has a bias.
//
// Shapes at 3×224×224: conv1 7×7/2 → [N, 64, 112, 112], maxpool 3/2/1 → 56×56, layer1..layer4
// (the first block of layer2..4 at stride 2) → [N, 512·e, 7, 7], avgpool, fc → [N, classes]
// (e = 1 basic, 4 bottleneck). Under 112 pixels conv1 is 3×3/1 with padding 1 and no max-pool.
import ACON
import NN
import TensorCore

/// `Bottleneck_ACON`: conv1 1×1/stride, bn1, ReLU, conv2 3×3, bn2, `acon`, conv3 1×1 (×4), bn3,
/// plus `downsample` (1×1/stride conv + BN) when the shape changes, then ReLU of the sum.
/// Input `[N, inplanes, H, W]`, output `[N, 4·planes, H/stride, W/stride]` (rounded up).
public final class Bottleneck: Graph {
  /// Channel expansion of the block's output.
  public static let expansion = 4

  /// A bottleneck; `r` is Meta-ACON's reduction ratio.
  public init(inplanes: Int, planes: Int, stride: Int, activation: ZooActivation, r: Int, rng: inout SeededGenerator) {
    super.init()
    let out = planes * Self.expansion
    var h = self("conv1", Conv2D(inChannels: inplanes, outChannels: planes, kernelSize: 1, stride: stride, rng: &rng), input)
    h = self("bn1", BatchNorm2D(channels: planes), h)
    h = self("relu1", ReLU(inPlace: true), h)
    h = self("conv2", Conv2D(inChannels: planes, outChannels: planes, kernelSize: 3, padding: 1, rng: &rng), h)
    h = self("bn2", BatchNorm2D(channels: planes), h)
    h = self("acon", activation.make(channels: planes, r: r, rng: &rng), h)
    h = self("conv3", Conv2D(inChannels: planes, outChannels: out, kernelSize: 1, rng: &rng), h)
    h = self("bn3", BatchNorm2D(channels: out), h)
    var shortcut = input
    if stride != 1 || inplanes != out {
      shortcut = self("downsample", downsampleBranch(inplanes, out, stride, &rng), input)
    }
    output = self("relu", ReLU(inPlace: true), add(h, shortcut))
  }

  public override var typeName: String { "Bottleneck" }
}

/// `BasicBlock_ACON`: conv1 3×3/stride, bn1, `acon1`, conv2 3×3, bn2, plus `downsample` when the
/// shape changes, then `acon2` of the sum. Input `[N, inplanes, H, W]`, output
/// `[N, planes, H/stride, W/stride]` (rounded up).
///
/// The official module registers `acon2` before `downsample` although it runs after it; a
/// `Graph` lists children in execution order, so this block runs one and lists its children
/// in PyTorch's order (`conv1`, `bn1`, `acon1`, `conv2`, `bn2`, `acon2`, `downsample`).
public final class BasicBlock: Module {
  /// Channel expansion of the block's output.
  public static let expansion = 1
  /// The recorded computation.
  public let graph: Graph
  private let ordered: [(String, Module)]

  /// A basic block; `r` is Meta-ACON's reduction ratio.
  public init(inplanes: Int, planes: Int, stride: Int, activation: ZooActivation, r: Int, rng: inout SeededGenerator) {
    let g = Graph()
    let conv1 = Conv2D(inChannels: inplanes, outChannels: planes, kernelSize: 3, stride: stride, padding: 1, rng: &rng)
    let bn1 = BatchNorm2D(channels: planes)
    let acon1 = activation.make(channels: planes, r: r, rng: &rng)
    let conv2 = Conv2D(inChannels: planes, outChannels: planes, kernelSize: 3, padding: 1, rng: &rng)
    let bn2 = BatchNorm2D(channels: planes)
    let acon2 = activation.make(channels: planes, r: r, rng: &rng)
    var list: [(String, Module)] = [("conv1", conv1), ("bn1", bn1), ("acon1", acon1), ("conv2", conv2), ("bn2", bn2),
      ("acon2", acon2)]
    var h = g("conv1", conv1, g.input)
    h = g("bn1", bn1, h)
    h = g("acon1", acon1, h)
    h = g("conv2", conv2, h)
    h = g("bn2", bn2, h)
    var shortcut = g.input
    if stride != 1 || inplanes != planes {
      let ds = downsampleBranch(inplanes, planes, stride, &rng)
      list.append(("downsample", ds))
      shortcut = g("downsample", ds, g.input)
    }
    g.output = g("acon2", acon2, g.add(h, shortcut))
    ordered = list
    graph = g
    super.init()
  }

  public override var typeName: String { "BasicBlock" }
  public override var children: [(String, Module)] { ordered }
  public override func setMode(training: Bool) {
    super.setMode(training: training)
    graph.setMode(training: training)
  }
  public override func outputShape(for s: [Int]) throws -> [Int] { try graph.outputShape(for: s) }
  public override func forward(_ x: Tensor) throws -> Tensor {
    if graph.propagatesInputGradient != propagatesInputGradient { graph.propagatesInputGradient = propagatesInputGradient }
    sharePools(with: graph)
    return try graph.forward(x)
  }
  public override func backward(_ dy: Tensor) throws -> Tensor {
    sharePools(with: graph)
    return try graph.backward(dy)
  }
}

/// `downsample`: 1×1 convolution at `stride` (with bias, as the official conv1x1) and BatchNorm.
private func downsampleBranch(_ inp: Int, _ out: Int, _ stride: Int, _ rng: inout SeededGenerator) -> Sequential {
  Sequential([
    Conv2D(inChannels: inp, outChannels: out, kernelSize: 1, stride: stride, rng: &rng), BatchNorm2D(channels: out),
  ])
}

/// The ResNet depths: blocks per layer and whether the blocks are bottlenecks.
enum ResNetDepths {
  static func layers(_ depth: Int) -> (blocks: [Int], bottleneck: Bool)? {
    switch depth {
    case 18: return ([2, 2, 2, 2], false)
    case 34: return ([3, 4, 6, 3], false)
    case 50: return ([3, 4, 6, 3], true)
    case 101: return ([3, 4, 23, 3], true)
    case 152: return ([3, 8, 36, 3], true)
    default: return nil
    }
  }
}

/// The whole ResNet with the official names (`conv1.weight`, `bn1.*`, `layer1.0.conv1.weight`,
/// `layer2.0.downsample.0.weight`, `fc.weight`). `input` is `[C, H, W]`.
func resNet(depth: Int, activation: ZooActivation, input: [Int], classes: Int, rng: inout SeededGenerator) -> Sequential {
  let (blocks, bottleneck) = ResNetDepths.layers(depth)!
  let r = 16
  let small = min(input[1], input[2]) < ZooModels.smallInputSide
  var layers: [(String, Module)] = [
    ("conv1", small
      ? Conv2D(inChannels: input[0], outChannels: 64, kernelSize: 3, stride: 1, padding: 1, rng: &rng)
      : Conv2D(inChannels: input[0], outChannels: 64, kernelSize: 7, stride: 2, padding: 3, rng: &rng)),
    ("bn1", BatchNorm2D(channels: 64)), ("relu", ReLU(inPlace: true)),
  ]
  if !small { layers.append(("maxpool", MaxPool2D(kernelSize: 3, stride: 2, padding: 1))) }
  let expansion = bottleneck ? Bottleneck.expansion : BasicBlock.expansion
  var inplanes = 64
  for (k, (planes, count)) in zip([64, 128, 256, 512], blocks).enumerated() {
    var stage: [Module] = []
    for i in 0..<count {
      let stride = i == 0 && k > 0 ? 2 : 1
      stage.append(bottleneck
        ? Bottleneck(inplanes: inplanes, planes: planes, stride: stride, activation: activation, r: r, rng: &rng)
        : BasicBlock(inplanes: inplanes, planes: planes, stride: stride, activation: activation, r: r, rng: &rng))
      inplanes = planes * expansion
    }
    layers.append(("layer\(k + 1)", Sequential(stage)))
  }
  layers.append(("avgpool", GlobalAvgPool2D()))
  layers.append(("flatten", Flatten()))
  layers.append(("fc", Linear(inFeatures: 512 * expansion, outFeatures: classes, rng: &rng)))
  return Sequential(layers)
}
