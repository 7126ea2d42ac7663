// OfficialInit: the initialisations of the official ACON code, applied to a built zoo model by
// walking its modules with PyTorch's dotted names (as `named_modules()` gives them).
//
// ShuffleNetV2 and TFNet (`_initialize_weights`): every convolution's weight N(0, 1/w.shape[1])
// (std 1 for depthwise), N(0, 0.01) where the module's name contains "first" (and, in TFNet,
// "frelu"); convolution biases 0; BatchNorm weight 1, bias 1e-4, running mean 0; Linear weight
// N(0, 0.01), bias 0. ResNet: convolution weights kaiming-normal with fan_out (std √(2/fan_out)),
// their biases PyTorch's default; BatchNorm weight 1, bias 0; Linear PyTorch's default.
import ACON
import NN
import TensorCore

enum OfficialInit {
  /// Calls `body` with every module and its dotted name, parents first (PyTorch's `named_modules`).
  static func walk(_ m: Module, _ prefix: String = "", _ body: (String, Module) -> Void) {
    body(prefix, m)
    for (name, c) in m.children { walk(c, prefix.isEmpty ? name : prefix + "." + name, body) }
  }

  /// ShuffleNetV2's (`tfnet: false`) or TFNet's (`tfnet: true`) `_initialize_weights`.
  static func shuffleStyle(_ model: Module, tfnet: Bool, rng: inout SeededGenerator) {
    walk(model) { name, m in
      let small = name.contains("first") || (tfnet && name.contains("frelu"))
      func conv(_ w: Parameter, _ b: Parameter?) {
        w.value.fillNormal(mean: 0, std: small ? 0.01 : 1 / Float(w.shape[1]), using: &rng)
        b?.value.zero()
      }
      switch m {
      case let c as Conv2D: conv(c.weight, c.bias)
      case let c as DepthwiseConv2D: conv(c.weight, c.bias)
      case let bn as BatchNorm2D:
        bn.weight.value.fill(1)
        bn.bias.value.fill(1e-4)
        bn.runningMean.zero()
      case let l as Linear:
        l.weight.value.fillNormal(mean: 0, std: 0.01, using: &rng)
        l.bias?.value.zero()
      default: break
      }
    }
  }

  /// ResNet's: kaiming-normal (fan_out, ReLU gain) convolution weights; the rest stays at
  /// PyTorch's defaults (BatchNorm 1 and 0 are already the defaults).
  static func resNetStyle(_ model: Module, rng: inout SeededGenerator) {
    walk(model) { _, m in
      guard let c = m as? Conv2D else { return }
      let s = c.weight.shape
      let fanOut = s[0] * s[2] * s[3]
      c.weight.value.fillNormal(mean: 0, std: (2 / Float(fanOut)).squareRoot(), using: &rng)
    }
  }
}

extension Tensor {
  /// Sets every element to `value`.
  fileprivate func fill(_ value: Float) { data.update(repeating: value, count: count) }
}
