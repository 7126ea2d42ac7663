// BlockWorkloads: the building blocks of issue 14. `dwconv.fwdbwd`, the direct depthwise
// convolution (DepthwiseConv2D) forward+backward, as a fraction of the memory roofline (a memcpy
// of the same bytes, the harness's same-footprint ceiling), beside
// `dwconv_im2col.fwdbwd`, the same layer as a grouped Conv2D (groups = C: im2col + one sgemm
// per group); and `conv2d.fwdbwd` with groups 2 and 4 against the same-shape sgemm calls.
// Every row is checked against the Double reference before it is timed.
import Foundation
import NN
import TensorCore
import TestSupport

/// One depthwise convolution to measure: input `[N, C, H, W]`, 3×3, padding 1, the stride.
private struct DepthwiseBenchCase {
  var label: String
  var input: [Int]
  var stride: Int
}

/// ShuffleNetV2-0.5× / TFNet-0.5 shapes at batch 64: the 3×32×32 nets' 16×16 and 8×8 stages
/// (branch widths 24 and 48), and the 224 net's 28×28 stage, at stride 1 and 2.
private func depthwiseCases(quick: Bool) -> [DepthwiseBenchCase] {
  let b = quick ? 16 : 64
  return [
    DepthwiseBenchCase(label: "cifar.16x16.c24", input: [b, 24, 16, 16], stride: 1),
    DepthwiseBenchCase(label: "cifar.16x16.c24", input: [b, 24, 16, 16], stride: 2),
    DepthwiseBenchCase(label: "cifar.8x8.c48", input: [b, 48, 8, 8], stride: 1),
    DepthwiseBenchCase(label: "cifar.8x8.c48", input: [b, 48, 8, 8], stride: 2),
    DepthwiseBenchCase(label: "cifar.4x4.c48", input: [b, 48, 4, 4], stride: 1),
    DepthwiseBenchCase(label: "cifar.2x2.c96", input: [b, 96, 2, 2], stride: 1),
    DepthwiseBenchCase(label: "imagenet.28x28.c48", input: [b, 48, 28, 28], stride: 1),
    DepthwiseBenchCase(label: "imagenet.28x28.c48", input: [b, 48, 28, 28], stride: 2),
  ]
}

/// Forward + backward of `layer` on a batch of 2 of `input`'s sample shape against the Double
/// grouped convolution: y, dx, dW and db.
private func checkAgainstReference(
  _ name: String, _ layer: Module, weight: Parameter, bias: Parameter, input: [Int], stride: Int, padding: Int,
  groups: Int
) throws {
  var rng = SeededGenerator(seed: 11)
  let x = Tensor.uniform([2] + input.dropFirst(), using: &rng)
  let y = try layer.forward(x)
  let dy = Tensor.uniform(y.shape, using: &rng)
  layer.zeroGrad()
  let dx = try layer.backward(dy)
  let xd = DoubleTensor(x), wd = DoubleTensor(weight.value)
  let want = Reference.groupedConv2d(xd, weight: wd, bias: DoubleTensor(bias.value), stride: (stride, stride),
    padding: (padding, padding), groups: groups)
  let g = Reference.groupedConv2dBackward(xd, weight: wd, dy: DoubleTensor(dy), stride: (stride, stride),
    padding: (padding, padding), groups: groups)
  try check("\(name) forward", y.data, want.values, rtol: 1e-4, atol: 1e-4)
  try check("\(name) dx", dx.data, g.dx.values, rtol: 1e-4, atol: 1e-4)
  try check("\(name) dW", weight.grad.data, g.dw.values, rtol: 1e-4, atol: 1e-3)
  try check("\(name) db", bias.grad.data, g.db.values, rtol: 1e-4, atol: 1e-3)
}

/// Seconds per forward + backward of `layer` on x with upstream gradient dy.
private func timeFwdBwd(_ layer: Module, _ x: Tensor, _ dy: Tensor, _ options: BenchOptions) -> Double {
  measure(repetitions: options.repetitions, minSeconds: options.minSeconds) {
    _ = try? layer.forward(x)
    _ = try? layer.backward(dy)
  }
}

/// CPU seconds (all of the process's threads) per forward + backward of `layer`: the median of
/// five runs of `calls` calls each. Beside the wall time it shows the work the kernels do when
/// other processes share the cores (they wait for a core, which wall time counts and this does not).
private func cpuSecondsFwdBwd(_ layer: Module, _ x: Tensor, _ dy: Tensor, calls: Int) -> Double {
  func now() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t)
    return Double(t.tv_sec) + 1e-9 * Double(t.tv_nsec)
  }
  var runs: [Double] = []
  for _ in 0..<5 {
    let t0 = now()
    for _ in 0..<calls {
      _ = try? layer.forward(x)
      _ = try? layer.backward(dy)
    }
    runs.append((now() - t0) / Double(calls))
  }
  return runs.sorted()[2]
}

/// The rows of issue 14's building blocks (see the file comment).
func blockWorkloads(bandwidth: Bandwidth, sgemmCeiling: Double, options: BenchOptions, emit: (BenchResult) throws -> Void) throws {
  if options.wants("dwconv.fwdbwd") || options.wants("dwconv_im2col.fwdbwd") {
    for dc in depthwiseCases(quick: options.quick) {
      let c = dc.input[1], s = dc.stride
      var rng = SeededGenerator(seed: 5)
      let dw = DepthwiseConv2D(channels: c, kernelSize: 3, stride: s, padding: 1, rng: &rng)
      let grouped = Conv2D(inChannels: c, outChannels: c, kernelSize: 3, stride: s, padding: 1, groups: c, rng: &rng)
      try checkAgainstReference("dwconv \(dc.label) s\(s)", dw, weight: dw.weight, bias: dw.bias!, input: dc.input,
        stride: s, padding: 1, groups: c)
      try checkAgainstReference("dwconv_im2col \(dc.label) s\(s)", grouped, weight: grouped.weight,
        bias: grouped.bias!, input: dc.input, stride: s, padding: 1, groups: c)
      let x = Tensor.uniform(dc.input, using: &rng)
      let yShape = try dw.outputShape(for: dc.input)
      let dy = Tensor.uniform(yShape, using: &rng)
      // The roofline's traffic: x and dy read, y and dx written (weights stay in cache).
      let bytes = Double(4 * 2 * (x.count + dy.count))
      let direct = timeFwdBwd(dw, x, dy, options)
      let lowered = timeFwdBwd(grouped, x, dy, options)
      let cpu = cpuSecondsFwdBwd(dw, x, dy, calls: max(1, Int(0.02 / max(direct, 1e-6))))
      let common: [(String, Any)] = [("layer", dc.label), ("kernel", 3), ("stride", s), ("padding", 1), ("groups", c)]
      // roofline_fraction: of a memcpy moving the same bytes (its same-footprint ceiling).
      try emit(BenchResult(name: "dwconv.fwdbwd", shape: dc.input, medianSeconds: direct, metrics: common
        + (try bandwidth.metrics(trafficBytes: bytes, seconds: direct, gbpsKey: "gbps", fractionKey: "roofline_fraction"))
        + [("speedup_vs_im2col", lowered / direct), ("kernels", DepthwiseConv2D.kernelVariant),
          ("cpu_ms", cpu * 1e3)]))
      try emit(BenchResult(name: "dwconv_im2col.fwdbwd", shape: dc.input, medianSeconds: lowered, metrics: common
        + (try bandwidth.metrics(trafficBytes: bytes, seconds: lowered, gbpsKey: "gbps", fractionKey: "roofline_fraction"))))
    }
  }
  if options.wants("conv2d.fwdbwd") {
    let b = options.quick ? 16 : 64
    // 3×3 convolutions of the seed net's widths split in groups, and a grouped 1×1 (ShuffleNetV1-style).
    let cases: [(label: String, input: [Int], cout: Int, k: Int, stride: Int, padding: Int)] = [
      ("grouped.16x16.c64", [b, 64, 16, 16], 64, 3, 1, 1),
      ("grouped.8x8.c128", [b, 128, 8, 8], 128, 3, 1, 1),
      ("grouped.16x16.c128.1x1", [b, 128, 16, 16], 128, 1, 1, 0),
    ]
    for cc in cases {
      for groups in [2, 4] {
        var rng = SeededGenerator(seed: 9)
        let conv = Conv2D(inChannels: cc.input[1], outChannels: cc.cout, kernelSize: cc.k, stride: cc.stride,
          padding: cc.padding, groups: groups, rng: &rng)
        try checkAgainstReference("conv2d \(cc.label) g\(groups)", conv, weight: conv.weight, bias: conv.bias!,
          input: cc.input, stride: cc.stride, padding: cc.padding, groups: groups)
        let x = Tensor.uniform(cc.input, using: &rng)
        let yShape = try conv.outputShape(for: cc.input)
        let dy = Tensor.uniform(yShape, using: &rng)
        let s = timeFwdBwd(conv, x, dy, options)
        // Per group, three GEMMs of 2·(Cout/G)·(K/G)·(N·P) flops: forward, dW and dcol.
        let m = cc.cout / groups, k = cc.input[1] / groups * cc.k * cc.k, np = yShape[0] * yShape[2] * yShape[3]
        let flops = Double(groups) * 3 * 2 * Double(m) * Double(k) * Double(np)
        let gemmOnly = groupedGemmTriple(groups: groups, m: m, k: k, np: np, options: options)
        let gflops = flops / s / 1e9
        try emit(BenchResult(name: "conv2d.fwdbwd", shape: cc.input, medianSeconds: s, metrics: [
          ("layer", cc.label), ("out_channels", cc.cout), ("kernel", cc.k), ("stride", cc.stride),
          ("padding", cc.padding), ("groups", groups), ("gflops", gflops), ("sgemm_fraction", gflops / sgemmCeiling),
          ("same_shape_sgemm_gflops", flops / gemmOnly / 1e9),
          ("same_shape_sgemm_ratio", gemmOnly / s),
        ]))
      }
    }
  }
}

/// Seconds for the G × three GEMMs of a grouped layer's forward+backward alone (per group:
/// [M,K]·[K,NP], [M,NP]·[NP,K], [K,M]·[M,NP]), on the same contiguous slices Conv2D uses.
private func groupedGemmTriple(groups: Int, m: Int, k: Int, np: Int, options: BenchOptions) -> Double {
  let w = Tensor(zeros: [groups * m * k]), col = Tensor(zeros: [groups * k * np])
  let y = Tensor(zeros: [groups * m * np]), dw = Tensor(zeros: [groups * m * k])
  var rng = SeededGenerator(seed: 1)
  w.fillUniform(-1, 1, using: &rng)
  col.fillUniform(-1, 1, using: &rng)
  y.fillUniform(-1, 1, using: &rng)
  return measure(repetitions: options.repetitions, minSeconds: options.minSeconds) {
    for g in 0..<groups {
      let wg = w.data + g * m * k, cg = col.data + g * k * np, yg = y.data + g * m * np
      BLAS.sgemm(m: m, n: np, k: k, a: wg, b: cg, c: yg)
      BLAS.sgemm(transB: true, m: m, n: k, k: np, a: yg, b: cg, beta: 1, c: dw.data + g * m * k)
      BLAS.sgemm(transA: true, m: k, n: np, k: m, a: wg, b: yg, c: cg)
    }
  }
}
