// OfficialWeights: the key clean-up that the official checkpoints need. They were saved from
// `nn.DataParallel`, so every key carries a `module.` prefix (`module.first_conv.0.weight`);
// scripts/convert_official.py strips it when it writes safetensors, and this strips it from any
// state dict read elsewhere.

/// Helpers for state dicts saved by the official ACON code.
public enum OfficialWeights {
  /// The prefix `nn.DataParallel` puts before every key.
  public static let dataParallelPrefix = "module."

  /// The state dict with the `module.` prefix removed from every key that has it (as PyTorch's
  /// `consume_prefix_in_state_dict_if_present`); keys without it are kept as they are.
  /// - Throws: `ZooError.invalidInput` when a stripped key collides with another key of the dict
  ///   (`module.fc.weight` and `fc.weight` both present), naming both and `file`.
  public static func strippingDataParallelPrefix<Value>(_ tensors: [String: Value], file: String) throws -> [String: Value] {
    var out = [String: Value](minimumCapacity: tensors.count)
    for (key, value) in tensors {
      let stripped = key.hasPrefix(dataParallelPrefix) ? String(key.dropFirst(dataParallelPrefix.count)) : key
      if out[stripped] != nil {
        throw ZooError.invalidInput(model: file,
          reason: "the keys \"\(stripped)\" and \"\(dataParallelPrefix + stripped)\" name the same tensor once the "
            + "DataParallel prefix is removed; keep one of them")
      }
      out[stripped] = value
    }
    return out
  }
}
