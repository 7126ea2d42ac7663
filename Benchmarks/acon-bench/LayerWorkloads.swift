// LayerWorkloads: Conv2D and Linear forward+backward, as GFLOP/s and as a fraction of the
// large-square sgemm ceiling, beside the same-shape sgemm calls alone (so the cost of im2col,
// col2im and the layout copies shows); im2col and col2im alone against memcpy of the same
// traffic. Each is checked against its Double reference (forward and every gradient) first.
import NN
import TensorCore
import TestSupport

/// One convolution to measure: input `[N, C, H, W]`, Cout, kernel, stride, padding.
struct ConvCase {
  var label: String
  var input: [Int]
  var outChannels: Int
  var kernel: Int
  var stride: Int
  var padding: Int
}

/// The seed network's four convolutions at batch 64 (input 3×32×32), a 3×3 64→64 layer on 56×56,
/// and (full runs) the 3×3 stride-1 layers of the zoo's resnet18 at batch 64 on 3×32×32, one per
/// stage: where `ConvAlgorithm.auto` chooses between im2col and Winograd.
func convCases(quick: Bool) -> [ConvCase] {
  let b = quick ? 16 : 64
  let stages = quick ? [] : [(64, 32), (128, 16), (256, 8), (512, 4)].map { c, hw in
    ConvCase(label: "resnet18.\(c)@\(hw)x\(hw)", input: [64, c, hw, hw], outChannels: c, kernel: 3, stride: 1, padding: 1)
  }
  return [
    ConvCase(label: "seed.conv1", input: [b, 3, 32, 32], outChannels: 32, kernel: 3, stride: 1, padding: 1),
    ConvCase(label: "seed.conv2", input: [b, 32, 32, 32], outChannels: 64, kernel: 3, stride: 2, padding: 0),
    ConvCase(label: "seed.conv3", input: [b, 64, 15, 15], outChannels: 64, kernel: 3, stride: 2, padding: 0),
    ConvCase(label: "seed.conv4", input: [b, 64, 7, 7], outChannels: 64, kernel: 3, stride: 2, padding: 1),
    ConvCase(label: "resnet.3x3", input: [quick ? 4 : 32, 64, 56, 56], outChannels: 64, kernel: 3, stride: 1, padding: 1),
  ] + stages
}

/// Checks a layer of this geometry against the Double reference on a batch of 2 (forward, dx,
/// dW, db), so that the timed code path is the verified one. Returns the largest error of y,
/// dx and dW relative to the largest reference value: `max |got − want| / max |want|`.
@discardableResult
func checkConv(_ cc: ConvCase, algorithm: ConvAlgorithm = .im2col) throws -> [(String, Any)] {
  var rng = SeededGenerator(seed: 11)
  let shape = [2] + cc.input.dropFirst()
  let conv = Conv2D(inChannels: shape[1], outChannels: cc.outChannels, kernelSize: cc.kernel, stride: cc.stride,
    padding: cc.padding, rng: &rng)
  conv.algorithm = algorithm
  let x = Tensor(zeros: shape)
  x.fillUniform(-1, 1, using: &rng)
  let y = try conv.forward(x)
  let dy = Tensor(zeros: y.shape)
  dy.fillUniform(-1, 1, using: &rng)
  let dx = try conv.backward(dy)
  let xd = DoubleTensor(x), wd = DoubleTensor(conv.weight.value), bd = DoubleTensor(conv.bias!.value)
  let want = Reference.conv2d(xd, weight: wd, bias: bd, stride: cc.stride, padding: cc.padding)
  let grads = Reference.conv2dBackward(xd, weight: wd, dy: DoubleTensor(dy), stride: cc.stride, padding: cc.padding)
  let wantTile: Int? = algorithm == .winograd ? 2 : algorithm == .winograd4x4 ? 4 : nil
  guard conv.winogradTile == wantTile else {
    throw ReferenceMismatch(workload: "conv2d \(cc.label) \(algorithm.rawValue)", detail: "ran the other algorithm")
  }
  try check("conv2d \(cc.label) forward", y.data, want.values, rtol: 1e-4, atol: 1e-4)
  try check("conv2d \(cc.label) dx", dx.data, grads.dx.values, rtol: 1e-4, atol: 1e-4)
  try check("conv2d \(cc.label) dW", conv.weight.grad.data, grads.dw.values, rtol: 1e-4, atol: 1e-3)
  try check("conv2d \(cc.label) db", conv.bias!.grad.data, grads.db.values, rtol: 1e-4, atol: 1e-3)
  func error(_ got: UnsafePointer<Float>, _ want: [Double]) -> Double {
    let scale = want.map(abs).max() ?? 0
    let worst = want.indices.map { abs(Double(got[$0]) - want[$0]) }.max() ?? 0
    return scale > 0 ? worst / scale : worst
  }
  return [("error_y", error(y.data, want.values)), ("error_dx", error(dx.data, grads.dx.values)),
    ("error_dw", error(conv.weight.grad.data, grads.dw.values))]
}

/// im2col and col2im of each convolution case alone, batched as Conv2D runs them, as GB/s of
/// traffic (the column matrix written or read once, the input read or updated once) and as a
/// fraction of memcpy moving the same bytes. Both are checked against the Double definitions first.
func loweringWorkloads(bandwidth: Bandwidth, options: BenchOptions, emit: (BenchResult) throws -> Void) throws {
  for cc in convCases(quick: options.quick) where options.wants("im2col") || options.wants("col2im") {
    let n = cc.input[0]
    let g = ConvGeometry(channels: cc.input[1], height: cc.input[2], width: cc.input[3], kernelH: cc.kernel,
      kernelW: cc.kernel, strideH: cc.stride, strideW: cc.stride, padH: cc.padding, padW: cc.padding)
    let sample = g.channels * g.height * g.width, p = g.colCols, np = n * p
    var rng = SeededGenerator(seed: 13)
    let x = Tensor(zeros: cc.input), col = Tensor(zeros: [g.colRows, np]), dx = Tensor(zeros: cc.input)
    x.fillUniform(-1, 1, using: &rng)
    col.fillUniform(-1, 1, using: &rng)
    // Sample 1 of the batch against the definitions: its columns, and its part of col2im.
    let x1 = Array(UnsafeBufferPointer(start: x.data + sample, count: sample)).map(Double.init)
    let c1 = (0..<g.colRows).flatMap { r in (0..<p).map { Double(col.data[r * np + p + $0]) } }
    col2im(col.data, colStride: np, batch: n, g, dx: dx.data, accumulate: false)
    try check("col2im \(cc.label)", dx.data + sample, Reference.col2im(c1, g), rtol: 1e-6, atol: 1e-6)
    im2col(x.data, batch: n, g, col: col.data, colStride: np)
    let got = (0..<g.colRows).flatMap { r in (0..<p).map { Double(col.data[r * np + p + $0]) } }
    try check("im2col \(cc.label)", got.map(Float.init), Reference.im2col(x1, g), rtol: 0, atol: 0)

    let bytes = Double(4 * (g.colRows * np + n * sample))
    let metrics: [(String, Any)] = [("layer", cc.label), ("kernel", cc.kernel), ("stride", cc.stride), ("padding", cc.padding)]
    if options.wants("im2col") {
      let s = try measure("im2col \(cc.label)", repetitions: options.repetitions, minSeconds: options.minSeconds) {
        im2col(x.data, batch: n, g, col: col.data, colStride: np)
      }
      try emit(BenchResult(name: "im2col", shape: cc.input, medianSeconds: s,
        metrics: metrics + (try bandwidth.metrics(trafficBytes: bytes, seconds: s, gbpsKey: "gbps", fractionKey: "memcpy_fraction"))))
    }
    if options.wants("col2im") {
      // As Conv2D runs it: overwriting dx (each plane zeroed in cache just before its sums).
      let s = try measure("col2im \(cc.label)", repetitions: options.repetitions, minSeconds: options.minSeconds) {
        col2im(col.data, colStride: np, batch: n, g, dx: dx.data, accumulate: false)
      }
      try emit(BenchResult(name: "col2im", shape: cc.input, medianSeconds: s,
        metrics: metrics + (try bandwidth.metrics(trafficBytes: bytes, seconds: s, gbpsKey: "gbps", fractionKey: "memcpy_fraction"))))
    }
  }
}

func convWorkloads(sgemmCeiling: Double, options: BenchOptions, emit: (BenchResult) throws -> Void) throws {
  for cc in convCases(quick: options.quick) where options.wants("conv2d.fwdbwd") {
    // Three GEMMs of 2·Cout·K·(N·P) flops each: forward, dW and dcol (im2col's, and the direct
    // convolution's count, by which Winograd's effective GFLOP/s are counted too).
    let yShape = [cc.input[0], cc.outChannels, (cc.input[2] + 2 * cc.padding - cc.kernel) / cc.stride + 1,
      (cc.input[3] + 2 * cc.padding - cc.kernel) / cc.stride + 1]
    let k = cc.input[1] * cc.kernel * cc.kernel, np = yShape[0] * yShape[2] * yShape[3], m = cc.outChannels
    let flops = 3 * 2 * Double(m) * Double(k) * Double(np)
    let gemmOnly = try gemmTriple(m: m, k: k, np: np, options: options)
    let winograd = cc.kernel == 3 && cc.stride == 1 && cc.padding <= 2
    for algorithm in winograd ? [ConvAlgorithm.im2col, .winograd, .winograd4x4] : [.im2col] {
      let errors = try checkConv(cc, algorithm: algorithm)
      var rng = SeededGenerator(seed: 5)
      let conv = Conv2D(inChannels: cc.input[1], outChannels: cc.outChannels, kernelSize: cc.kernel, stride: cc.stride,
        padding: cc.padding, rng: &rng)
      conv.algorithm = algorithm
      let x = Tensor(zeros: cc.input)
      x.fillUniform(-1, 1, using: &rng)
      let dy = Tensor(zeros: yShape)
      dy.fillUniform(-1, 1, using: &rng)
      let s = try measure("conv2d.fwdbwd \(cc.label) \(algorithm.rawValue)", repetitions: options.repetitions,
        minSeconds: options.minSeconds) {
        _ = try conv.forward(x)
        _ = try conv.backward(dy)
      }
      let gflops = flops / s / 1e9
      try emit(BenchResult(name: "conv2d.fwdbwd", shape: cc.input, medianSeconds: s, metrics: [
        ("layer", cc.label), ("algorithm", algorithm.rawValue), ("out_channels", cc.outChannels), ("kernel", cc.kernel),
        ("stride", cc.stride), ("padding", cc.padding), ("gflops", gflops), ("sgemm_fraction", gflops / sgemmCeiling),
        ("same_shape_sgemm_gflops", flops / gemmOnly / 1e9), ("same_shape_sgemm_fraction", flops / gemmOnly / 1e9 / sgemmCeiling),
        // The layer's (effective) GFLOP/s over its three GEMMs' alone: ≤ 1 for im2col; Winograd's
        // goal is ≥ 1.3 on resnet.3x3.
        ("same_shape_sgemm_ratio", gemmOnly / s),
      ] + errors))
    }
  }
  if options.wants("linear.fwdbwd") {
    let (n, fin, fout) = (64, 1024, 64)
    var rng = SeededGenerator(seed: 9)
    let lin = Linear(inFeatures: fin, outFeatures: fout, rng: &rng)
    let x = Tensor(zeros: [n, fin]), dy = Tensor(zeros: [n, fout])
    x.fillUniform(-1, 1, using: &rng)
    dy.fillUniform(-1, 1, using: &rng)
    lin.zeroGrad()
    let y = try lin.forward(x)
    let dx = try lin.backward(dy)
    let (xd, wd) = (DoubleTensor(x), DoubleTensor(lin.weight.value))
    let want = Reference.linear(xd, weight: wd, bias: DoubleTensor(lin.bias!.value))
    let grads = Reference.linearBackward(xd, weight: wd, dy: DoubleTensor(dy))
    try check("linear forward", y.data, want.values, rtol: 1e-4, atol: 1e-4)
    try check("linear dx", dx.data, grads.dx.values, rtol: 1e-4, atol: 1e-4)
    try check("linear dW", lin.weight.grad.data, grads.dw.values, rtol: 1e-4, atol: 1e-3)
    try check("linear db", lin.bias!.grad.data, grads.db.values, rtol: 1e-4, atol: 1e-3)
    let s = try measure("linear.fwdbwd", repetitions: options.repetitions, minSeconds: options.minSeconds) {
      _ = try lin.forward(x)
      _ = try lin.backward(dy)
    }
    let flops = 3 * 2 * Double(n) * Double(fin) * Double(fout)
    let gemmOnly = try gemmTriple(m: fout, k: fin, np: n, options: options)
    let gflops = flops / s / 1e9
    try emit(BenchResult(name: "linear.fwdbwd", shape: [n, fin], medianSeconds: s, metrics: [
      ("layer", "seed.linear1"), ("out_features", fout), ("gflops", gflops), ("sgemm_fraction", gflops / sgemmCeiling),
      ("same_shape_sgemm_gflops", flops / gemmOnly / 1e9),
    ]))
  }
}

/// Seconds for the three GEMMs of a layer's forward+backward alone: [M,K]·[K,NP], [M,NP]·[NP,K], [K,M]·[M,NP].
private func gemmTriple(m: Int, k: Int, np: Int, options: BenchOptions) throws -> Double {
  let w = Tensor(zeros: [m * k]), col = Tensor(zeros: [k * np]), y = Tensor(zeros: [m * np]), dw = Tensor(zeros: [m * k])
  var rng = SeededGenerator(seed: 1)
  w.fillUniform(-1, 1, using: &rng)
  col.fillUniform(-1, 1, using: &rng)
  y.fillUniform(-1, 1, using: &rng)
  return try measure("sgemm triple \(m)x\(k)x\(np)", repetitions: options.repetitions, minSeconds: options.minSeconds) {
    BLAS.sgemm(m: m, n: np, k: k, a: w.data, b: col.data, c: y.data)
    BLAS.sgemm(transB: true, m: m, n: k, k: np, a: y.data, b: col.data, beta: 1, c: dw.data)
    BLAS.sgemm(transA: true, m: k, n: np, k: m, a: w.data, b: y.data, c: col.data)
  }
}
