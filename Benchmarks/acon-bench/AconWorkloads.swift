// AconWorkloads: the fused ACON-C and Meta-ACON-C passes, and the unfused composition a
// framework runs (UnfusedAconC: one vectorised pass per operator, temporaries the size of x),
// each checked against the Double reference (forward and every gradient) and then timed against
// the memcpy roofline of the same traffic; where Python has torch, PyTorch eager's and
// torch.compile's ACON-C and Meta-ACON-C on the same shape, for the speed-ups.
import ACON
import NN
import TensorCore
import TestSupport

/// The bytes that one element must move at the least: forward reads x and writes y (8 bytes);
/// backward reads x and dy and writes dx (12 bytes).
let aconForwardBytes = 8.0, aconBackwardBytes = 12.0

/// Runs the ACON workloads for one shape `[N, C, H, W]`.
func aconWorkloads(shape: [Int], bandwidth: Bandwidth, options: BenchOptions, emit: (BenchResult) throws -> Void) throws {
  let (n, c, hw) = (shape[0], shape[1], shape[2] * shape[3])
  let count = n * c * hw
  var rng = SeededGenerator(seed: 42)
  let x = Tensor(zeros: [n, c, shape[2], shape[3]]), dy = Tensor(zeros: x.shape)
  x.fillNormal(using: &rng)
  dy.fillNormal(using: &rng)
  let y = Tensor(zeros: x.shape), dx = Tensor(zeros: x.shape)
  let p1 = Tensor(zeros: [c]), p2 = Tensor(zeros: [c]), beta = Tensor(shape: [c], repeating: 1)
  p1.fillNormal(using: &rng)
  p2.fillNormal(using: &rng)
  let dp1 = Tensor(zeros: [c]), dp2 = Tensor(zeros: [c]), dbeta = Tensor(zeros: [c])
  let elems = Double(count)
  /// The row's figures for `passes`, each pass's minimum traffic in bytes per element.
  func metrics(_ s: Double, passes: [Double]) throws -> [(String, Any)] {
    [("gelems_per_s", elems / s / 1e9)]
      + (try bandwidth.metrics(passBytes: passes.map { elems * $0 }, seconds: s, gbpsKey: "gbytes_per_s",
        fractionKey: "roofline_fraction"))
  }
  let fwdbwdPasses = [aconForwardBytes, aconBackwardBytes]

  // PyTorch eager's and torch.compile's seconds for the same shape, for the rows below.
  func pytorchMetrics(_ layer: String, ours: Double) throws -> [(String, Any)] {
    guard let t = try PyTorch.acon(layer: layer, shape: shape, options: options) else { return [] }
    return [("pytorch_eager_s", t.eager), ("pytorch_compile_s", t.compile), ("speedup_vs_pytorch", t.eager / ours),
      ("speedup_vs_compile", t.compile / ours)]
  }

  // Reference (Double), on the whole tensor.
  let want = AconReference.forward(x: x.array, n: n, c: c, hw: hw, p1: p1.array, p2: p2.array, beta: beta.array)
  let wantGrad = AconReference.backward(x: x.array, dy: dy.array, n: n, c: c, hw: hw, p1: p1.array, p2: p2.array, beta: beta.array)
  let sumTol = 1e-3 * Double(n * hw).squareRoot()
  /// Checks y, dx, dp1, dp2 and dβ (the sums zeroed before the backward pass that made them).
  func checkAll(_ name: String) throws {
    try check("\(name).fwd \(shape)", y.data, want, rtol: 1e-4, atol: 1e-5)
    try check("\(name).bwd dx \(shape)", dx.data, wantGrad.dx, rtol: 1e-4, atol: 1e-5)
    try check("\(name).bwd dp1 \(shape)", dp1.data, wantGrad.dp1, rtol: 1e-3, atol: sumTol)
    try check("\(name).bwd dp2 \(shape)", dp2.data, wantGrad.dp2, rtol: 1e-3, atol: sumTol)
    try check("\(name).bwd dbeta \(shape)", dbeta.data, wantGrad.dbeta, rtol: 1e-3, atol: sumTol)
  }
  func zeroSums() {
    dp1.zero()
    dp2.zero()
    dbeta.zero()
  }

  func fusedForward() {
    AconKernels.forward(x: x.data, y: y.data, n: n, c: c, hw: hw, p1: p1.data, p2: p2.data, beta: beta.data, betaLayout: .perChannel)
  }
  func fusedBackward() {
    AconKernels.backward(x: x.data, dy: dy.data, dx: dx.data, n: n, c: c, hw: hw, p1: p1.data, p2: p2.data, beta: beta.data,
      betaLayout: .perChannel, dp1: dp1.data, dp2: dp2.data, dbeta: dbeta.data)
  }
  var fusedSeconds: Double?
  if options.wants("aconc.fused") {
    fusedForward()
    zeroSums()
    fusedBackward()
    try checkAll("aconc.fused")
    if options.wants("aconc.fused.fwd") {
      let name = "aconc.fused.fwd"
      let s = try measure("\(name) \(shape)", repetitions: options.repetitions, minSeconds: options.minSeconds) { fusedForward() }
      try emit(BenchResult(name: name, shape: shape, medianSeconds: s, metrics: try metrics(s, passes: [aconForwardBytes])))
    }
    if options.wants("aconc.fused.fwdbwd") {
      let name = "aconc.fused.fwdbwd"
      let s = try measure("\(name) \(shape)", repetitions: options.repetitions, minSeconds: options.minSeconds) {
        fusedForward()
        fusedBackward()
      }
      fusedSeconds = s
      try emit(BenchResult(name: name, shape: shape, medianSeconds: s,
        metrics: try metrics(s, passes: fwdbwdPasses) + (try pytorchMetrics("aconc", ours: s))))
    }
    if options.wants("aconc.savedsigmoid.fwdbwd") {
      // The alternative design: save s = σ(β·d) in forward (4 more bytes written, 4 more read).
      let name = "aconc.savedsigmoid.fwdbwd"
      let sig = Tensor(zeros: x.shape)
      func fwd() {
        AconKernels.forwardSavingSigmoid(x: x.data, y: y.data, n: n, c: c, hw: hw, p1: p1.data, p2: p2.data, beta: beta.data,
          betaLayout: .perChannel, sigmoid: sig.data)
      }
      func bwd() {
        AconKernels.backwardFromSigmoid(x: x.data, dy: dy.data, dx: dx.data, n: n, c: c, hw: hw, p1: p1.data, p2: p2.data,
          beta: beta.data, betaLayout: .perChannel, dp1: dp1.data, dp2: dp2.data, dbeta: dbeta.data, sigmoid: sig.data)
      }
      fwd()
      zeroSums()
      bwd()
      try checkAll("aconc.savedsigmoid")
      let s = try measure("\(name) \(shape)", repetitions: options.repetitions, minSeconds: options.minSeconds) {
        fwd()
        bwd()
      }
      try emit(BenchResult(name: name, shape: shape, medianSeconds: s, metrics: try metrics(s, passes: fwdbwdPasses)))
    }
  }
  if options.wants("aconc.unfused.fwdbwd") {
    let name = "aconc.unfused.fwdbwd"
    let u = UnfusedAconC(n: n, c: c, hw: hw)
    u.forward(x: x, y: y, p1: p1, p2: p2, beta: beta)
    zeroSums()
    u.backward(x: x, dy: dy, dx: dx, p1: p1, p2: p2, beta: beta, dp1: dp1, dp2: dp2, dbeta: dbeta)
    try checkAll("aconc.unfused")
    let s = try measure("\(name) \(shape)", repetitions: options.repetitions, minSeconds: options.minSeconds) {
      u.forward(x: x, y: y, p1: p1, p2: p2, beta: beta)
      u.backward(x: x, dy: dy, dx: dx, p1: p1, p2: p2, beta: beta, dp1: dp1, dp2: dp2, dbeta: dbeta)
    }
    // Beside the fused minimum traffic: the passes' own traffic and its rate.
    let passBytes = UnfusedAconC.passBytesPerElement
    var m = try metrics(s, passes: fwdbwdPasses)
    m += [("passes", UnfusedAconC.passes.forward + UnfusedAconC.passes.backward), ("pass_bytes_per_element", passBytes),
      ("pass_gbytes_per_s", elems * passBytes / s / 1e9)]
    if let f = fusedSeconds { m.append(("fused_speedup", s / f)) }
    try emit(BenchResult(name: name, shape: shape, medianSeconds: s, metrics: m))
  }
  if options.wants("metaaconc.fused.fwdbwd") {
    let name = "metaaconc.fused.fwdbwd"
    var mrng = SeededGenerator(seed: 3)
    let meta = MetaAconC(channels: c, rng: &mrng)
    meta.train()
    try checkMetaAcon(meta, x: x, dy: dy, shape: shape)
    let s = try measure("\(name) \(shape)", repetitions: options.repetitions, minSeconds: options.minSeconds) {
      _ = try meta.forward(x)
      _ = try meta.backward(dy)
    }
    // Its minimum traffic: the mean reads x once more (4 bytes) on top of ACON-C's 20.
    try emit(BenchResult(name: name, shape: shape, medianSeconds: s,
      metrics: try metrics(s, passes: [4] + fwdbwdPasses) + (try pytorchMetrics("metaaconc", ours: s))))
  }
}

/// Checks Meta-ACON-C's forward (y), backward (dx) and every parameter's gradient against the
/// Double reference of the whole layer (`AconReference.metaAconC`) on the timed tensors.
func checkMetaAcon(_ meta: MetaAconC, x: Tensor, dy: Tensor, shape: [Int]) throws {
  let (n, c, hw) = (shape[0], shape[1], shape[2] * shape[3])
  let name = "metaaconc.fused"
  meta.zeroGrad()
  let y = try meta.forward(x)
  let dx = try meta.backward(dy)
  let params = meta.namedParameters()
  let ref = AconReference.metaAconC(x: x.array, dy: dy.array, n: n, c: c, hw: hw,
    parameters: Dictionary(uniqueKeysWithValues: params.map { ($0.0, $0.1.value.array) }))
  try check("\(name).fwd \(shape)", y.data, ref.y, rtol: 1e-4, atol: 1e-5)
  // dx carries the mean's share, which comes back through two BatchNorms in Float.
  try check("\(name).bwd dx \(shape)", dx.data, ref.dx, rtol: 1e-4, atol: 1e-5)
  // Sums over up to N·HW terms: an absolute tolerance on the scale of the layer's gradients
  // (fc1.bias's gradient is exactly 0, BatchNorm following it, and comes out as Float noise).
  let scale = ref.gradients.values.map { $0.map(abs).max() ?? 0 }.max() ?? 0
  for (pname, p) in params {
    guard let want = ref.gradients[pname] else {
      throw ReferenceMismatch(workload: "\(name).bwd \(pname) \(shape)", detail: "the reference has no gradient for it")
    }
    try check("\(name).bwd \(pname) \(shape)", p.grad.data, want, rtol: 1e-3, atol: 1e-4 * scale)
  }
}
