// GraphWorkloads: the channel concatenation and split that `Graph` runs (ShuffleNetV2's
// split → branch → concat), as GB/s of traffic (every element read once and written once) and
// as a fraction of a memcpy of the same footprint (the large memcpy beside it).
// Each is checked against its Double twin first. Their backward passes are the same copies the
// other way round (concat's backward is a split into halves, the split's backward a concat).
import Foundation
import NN
import TensorCore
import TestSupport

/// A concatenation or split to measure: the two parts' shape `[N, C/2, H, W]`.
private struct ChannelCase {
  var label: String
  var part: [Int]
}

/// ShuffleNetV2-0.5× units at batch 64 on the 224 network's 28×28 and 14×14 stages (24 + 24 and
/// 48 + 48 channels), and a larger 56×56 map.
private func channelCases(quick: Bool) -> [ChannelCase] {
  let b = quick ? 16 : 64
  return [
    ChannelCase(label: "shufflenetv2_0.5x.stage2", part: [b, 24, 28, 28]),
    ChannelCase(label: "shufflenetv2_0.5x.stage3", part: [b, 48, 14, 14]),
    ChannelCase(label: "large", part: [b, 32, 56, 56]),
  ]
}

/// The `concat` and `split` rows (split in both modes: `even_odd` as the official ShuffleNetV2
/// `channel_shuffle`, and `halves`).
func graphWorkloads(bandwidth: Bandwidth, options: BenchOptions, emit: (BenchResult) throws -> Void) throws {
  for cc in channelCases(quick: options.quick) where options.wants("concat") || options.wants("split") {
    var whole = cc.part
    whole[1] *= 2
    var rng = SeededGenerator(seed: 21)
    let a = Tensor.uniform(cc.part, using: &rng), b = Tensor.uniform(cc.part, using: &rng)
    let x = Tensor.uniform(whole, using: &rng), y = Tensor(zeros: whole)
    let pa = Tensor(zeros: cc.part), pb = Tensor(zeros: cc.part)
    let bytes = Double(2 * 4 * x.count)  // read once, written once
    func row(_ name: String, _ s: Double, _ extra: [(String, Any)]) throws {
      try emit(BenchResult(name: name, shape: whole, medianSeconds: s, metrics: [("layer", cc.label)] + extra
        + (try bandwidth.metrics(trafficBytes: bytes, seconds: s, gbpsKey: "gbps", fractionKey: "roofline_fraction"))
        + [("zero_copy", false)]))
    }
    if options.wants("concat") {
      ChannelOps.concat([a, b], into: y)
      try check("concat \(cc.label)", y.data, Reference.concatChannels([DoubleTensor(a), DoubleTensor(b)]).values,
        rtol: 0, atol: 0)
      let parts = [a, b]
      let s = measure(repetitions: options.repetitions, minSeconds: options.minSeconds) {
        ChannelOps.concat(parts, into: y)
      }
      try row("concat", s, [("parts", 2)])
    }
    if options.wants("split") {
      for (mode, label) in [(ChannelSplit.evenOdd, "even_odd"), (.halves, "halves")] {
        ChannelOps.split(x, mode, into: pa, pb)
        let want = Reference.splitChannels(DoubleTensor(x), evenOdd: mode == .evenOdd)
        try check("split \(label) \(cc.label) part 0", pa.data, want.0.values, rtol: 0, atol: 0)
        try check("split \(label) \(cc.label) part 1", pb.data, want.1.values, rtol: 0, atol: 0)
        let s = measure(repetitions: options.repetitions, minSeconds: options.minSeconds) {
          ChannelOps.split(x, mode, into: pa, pb)
        }
        try row("split", s, [("mode", label)])
      }
    }
  }
}
