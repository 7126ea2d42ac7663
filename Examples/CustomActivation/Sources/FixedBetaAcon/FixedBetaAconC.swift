// FixedBetaAconC: ACON-C with its switching factor β fixed instead of learned,
//   y = (p1 − p2)·x·σ(β·(p1 − p2)·x) + p2·x,   p1, p2 learnable [1, C, 1, 1], β a constant,
// written on swift-acon's open AconActivation: the fused kernels do the work, and the
// state_dict holds only what is learned (`p1`, `p2`).
import ACON
import NN
import TensorCore

/// ACON-C with a fixed β. Input and output `[N, C, H, W]` or `[N, C]`; parameters `p1`, `p2`
/// `[1, C, 1, 1]`, drawn from N(0, 1) as ACON-C's.
public final class FixedBetaAconC: AconActivation {
  /// The fixed switching factor.
  public let fixedBeta: Float

  /// - Parameters: channels C; beta, the fixed β (1: at p1 = 1, p2 = 0 this is SiLU); rng.
  public init(channels: Int, beta: Float = 1, rng: inout SeededGenerator) {
    let shape = [1, channels, 1, 1]
    let p1 = Tensor(zeros: shape), p2 = Tensor(zeros: shape)
    p1.fillNormal(using: &rng)
    p2.fillNormal(using: &rng)
    fixedBeta = beta
    super.init(channels: channels, p1: p1, p2: p2, beta: Tensor(shape: shape, repeating: beta), learnable: ["p1", "p2"])
  }

  public override var typeName: String { "FixedBetaAconC" }
}
