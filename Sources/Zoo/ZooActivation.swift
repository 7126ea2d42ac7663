// ZooActivation: the four activations of the zoo's variants (ReLU, Swish, ACON-C, Meta-ACON-C),
// made for the slots where the official ACON code puts ACON.
import ACON
import NN
import TensorCore

/// The activation a zoo model puts in its ACON slots (the model name's last part).
public enum ZooActivation: String, CaseIterable, Sendable {
  /// `ReLU(inPlace: true)` (no parameters), as the official code's `nn.ReLU(inplace=True)`: every
  /// slot follows a BatchNorm or a residual sum, whose output nothing else reads.
  case relu
  /// `SiLU`, x·σ(x) (no parameters).
  case swish
  /// `AconC`: `p1`, `p2`, `beta`, each `[1, C, 1, 1]`.
  case aconc
  /// `MetaAconC` with BatchNorm (the official module): `p1`, `p2` `[1, C, 1, 1]`, `fc1`, `bn1`,
  /// `fc2`, `bn2` with hidden width max(r, C/r).
  case meta

  /// A new activation module for `channels` channels; `r` is Meta-ACON's reduction ratio.
  /// Input and output `[N, C, H, W]`.
  public func make(channels: Int, r: Int, rng: inout SeededGenerator) -> Module {
    switch self {
    case .relu: return ReLU(inPlace: true)
    case .swish: return SiLU()
    case .aconc: return AconC(channels: channels, rng: &rng)
    case .meta: return MetaAconC(channels: channels, r: r, rng: &rng)
    }
  }
}
