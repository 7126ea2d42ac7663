// Init: PyTorch's default initialisation for convolutions and linear layers, and orthogonal
// initialisation through LAPACKE's QR.
import TensorCore

/// How a Conv2D or Linear layer initialises its weight.
public enum WeightInit: Sendable, Equatable {
  /// PyTorch's default: kaiming-uniform with a = √5, i.e. U(−b, b) with b = 1/√fan_in.
  case pytorchDefault
  /// An orthogonal matrix over `[out, fan_in]`, scaled by `gain` (`torch.nn.init.orthogonal_`).
  case orthogonal(gain: Float)
}

extension WeightInit {
  /// Fills `weight` (`[out, ...]`, fan_in = count / out) and optionally `bias` (`[out]`).
  /// The bias always gets PyTorch's U(−1/√fan_in, 1/√fan_in).
  public func initialize(weight: Tensor, bias: Tensor?, using rng: inout SeededGenerator) {
    let out = weight.shape[0]
    let fanIn = out == 0 ? 0 : weight.count / out
    let bound: Float = fanIn > 0 ? 1 / Float(fanIn).squareRoot() : 0
    switch self {
    case .pytorchDefault:
      weight.fillUniform(-bound, bound, using: &rng)
    case .orthogonal(let gain):
      weight.fillNormal(using: &rng)
      do {
        try BLAS.orthonormalize(weight.data, rows: out, cols: fanIn)
      } catch {
        preconditionFailure("\(error)")
      }
      for i in 0..<weight.count { weight.data[i] *= gain }
    }
    bias?.fillUniform(-bound, bound, using: &rng)
  }
}
