// AconWorkloads: the fused ACON-C and Meta-ACON-C passes, and the unfused composition a
// framework runs (one pass per operator, temporaries the size of x), each checked against the
// Double reference and then timed against the memcpy roofline.
import ACON
import NN
import TensorCore
import TestSupport

/// The bytes that one element must move at the least: forward reads x and writes y (8 bytes);
/// backward reads x and dy and writes dx (12 bytes).
let aconForwardBytes = 8.0, aconBackwardBytes = 12.0

/// The unfused ACON-C as PyTorch eager runs `acon.py`: one pass per operator, each writing a
/// temporary the size of x. Buffers are allocated once, as a caching allocator would.
final class UnfusedAconC {
  let n: Int, c: Int, hw: Int
  let count: Int
  // Temporaries: p1x, p2x, dpx, βdpx, s = σ(βdpx), dpx·s; saved for backward: dpx, s, x.
  let p1x: Tensor, p2x: Tensor, dpx: Tensor, bdpx: Tensor, s: Tensor, prod: Tensor
  let t1: Tensor, t2: Tensor, t3: Tensor
  let minus: Tensor

  init(n: Int, c: Int, hw: Int) {
    self.n = n
    self.c = c
    self.hw = hw
    count = n * c * hw
    (p1x, p2x, dpx, bdpx, s, prod) = (Tensor(zeros: [count]), Tensor(zeros: [count]), Tensor(zeros: [count]),
      Tensor(zeros: [count]), Tensor(zeros: [count]), Tensor(zeros: [count]))
    (t1, t2, t3) = (Tensor(zeros: [count]), Tensor(zeros: [count]), Tensor(zeros: [count]))
    minus = Tensor(zeros: [c])
  }

  /// A broadcast binary pass: out[i] = op(per-channel value, in[i]).
  private func channelPass(_ perChannel: UnsafePointer<Float>, _ input: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>,
    _ op: @escaping (Float, Float) -> Float) {
    let (n, c, hw) = (n, c, hw)
    let pc = UncheckedSendable(perChannel), i = UncheckedSendable(input), o = UncheckedSendable(out)
    parallelFor(n * c) { r in
      for plane in r {
        let v = pc.value[plane % c]
        for j in 0..<hw { o.value[plane * hw + j] = op(v, i.value[plane * hw + j]) }
      }
    }
    _ = n
  }

  private func pass(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>,
    _ op: @escaping (Float, Float) -> Float) {
    let x = UncheckedSendable(a), y = UncheckedSendable(b), o = UncheckedSendable(out)
    parallelFor(count, minimumChunk: 1 << 14) { r in for k in r { o.value[k] = op(x.value[k], y.value[k]) } }
  }

  /// A per-channel reduction pass: out[c] += Σ a·b over N and HW.
  private func reduce(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
    let (n, c, hw) = (n, c, hw)
    let x = UncheckedSendable(a), y = UncheckedSendable(b), o = UncheckedSendable(out)
    parallelFor(c) { r in
      for ch in r {
        var acc: Float = 0
        for s in 0..<n {
          let base = (s * c + ch) * hw
          for j in 0..<hw { acc += x.value[base + j] * y.value[base + j] }
        }
        o.value[ch] += acc
      }
    }
  }

  /// y = (p1·x − p2·x)·σ(β·(p1·x − p2·x)) + p2·x, one operator per pass.
  func forward(x: Tensor, y: Tensor, p1: Tensor, p2: Tensor, beta: Tensor) {
    channelPass(p1.data, x.data, p1x.data, *)
    channelPass(p2.data, x.data, p2x.data, *)
    pass(p1x.data, p2x.data, dpx.data, -)
    channelPass(beta.data, dpx.data, bdpx.data, *)
    pass(bdpx.data, bdpx.data, s.data) { z, _ in stableSigmoid(z) }
    pass(dpx.data, s.data, prod.data, *)
    pass(prod.data, p2x.data, y.data, +)
  }

  /// Autograd's backward through the same graph: dx, and dp1, dp2, dβ accumulated.
  func backward(x: Tensor, dy: Tensor, dx: Tensor, p1: Tensor, p2: Tensor, beta: Tensor, dp1: Tensor, dp2: Tensor, dbeta: Tensor) {
    pass(dy.data, s.data, t1.data, *)  // ∂/∂dpx through the product: dy·s
    pass(dy.data, dpx.data, t2.data, *)  // ∂/∂s: dy·dpx
    pass(t2.data, s.data, t3.data) { g, sg in g * sg * (1 - sg) }  // ∂/∂(β·dpx)
    reduce(t3.data, dpx.data, into: dbeta.data)  // dβ
    channelPass(beta.data, t3.data, t2.data, *)  // β·∂/∂(β·dpx)
    pass(t1.data, t2.data, t1.data, +)  // total ∂/∂dpx
    reduce(t1.data, x.data, into: dp1.data)  // dp1 = Σ ∂dpx·x
    reduce(dy.data, x.data, into: dp2.data)  // dp2 += Σ dy·x (the + p2·x branch) ...
    minus.zero()
    reduce(t1.data, x.data, into: minus.data)  // ... − Σ ∂dpx·x
    for ch in 0..<c { dp2.data[ch] -= minus.data[ch] }
    channelPass(p1.data, t1.data, t2.data, *)  // p1·∂dpx
    channelPass(p2.data, t1.data, t3.data, *)  // p2·∂dpx
    pass(t2.data, t3.data, t2.data, -)
    channelPass(p2.data, dy.data, t3.data, *)  // p2·dy
    pass(t2.data, t3.data, dx.data, +)
  }
}

/// Runs the ACON workloads for one shape `[N, C, H, W]`.
func aconWorkloads(shape: [Int], memcpy: Double, options: BenchOptions, emit: (BenchResult) throws -> Void) throws {
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
  func metrics(_ s: Double, bytesPerElement: Double) -> [(String, Any)] {
    let gbps = elems * bytesPerElement / s / 1e9
    return [("gelems_per_s", elems / s / 1e9), ("gbytes_per_s", gbps), ("roofline_fraction", gbps / memcpy)]
  }

  // Reference (Double), on the whole tensor.
  let want = AconReference.forward(x: x.array, n: n, c: c, hw: hw, p1: p1.array, p2: p2.array, beta: beta.array)
  let wantGrad = AconReference.backward(x: x.array, dy: dy.array, n: n, c: c, hw: hw, p1: p1.array, p2: p2.array, beta: beta.array)

  func fusedForward() {
    AconKernels.forward(x: x.data, y: y.data, n: n, c: c, hw: hw, p1: p1.data, p2: p2.data, beta: beta.data, betaLayout: .perChannel)
  }
  func fusedBackward() {
    AconKernels.backward(x: x.data, dy: dy.data, dx: dx.data, n: n, c: c, hw: hw, p1: p1.data, p2: p2.data, beta: beta.data,
      betaLayout: .perChannel, dp1: dp1.data, dp2: dp2.data, dbeta: dbeta.data)
  }
  let sumTol = 1e-3 * Double(n * hw).squareRoot()
  if options.wants("aconc.fused") {
    fusedForward()
    try check("aconc.fused.fwd \(shape)", y.data, want, rtol: 1e-4, atol: 1e-5)
    dp1.zero(); dp2.zero(); dbeta.zero()
    fusedBackward()
    try check("aconc.fused.bwd dx \(shape)", dx.data, wantGrad.dx, rtol: 1e-4, atol: 1e-5)
    try check("aconc.fused.bwd dp1 \(shape)", dp1.data, wantGrad.dp1, rtol: 1e-3, atol: sumTol)
    try check("aconc.fused.bwd dp2 \(shape)", dp2.data, wantGrad.dp2, rtol: 1e-3, atol: sumTol)
    try check("aconc.fused.bwd dbeta \(shape)", dbeta.data, wantGrad.dbeta, rtol: 1e-3, atol: sumTol)
    if options.wants("aconc.fused.fwd") {
      let s = measure(repetitions: options.repetitions, minSeconds: options.minSeconds) { fusedForward() }
      try emit(BenchResult(name: "aconc.fused.fwd", shape: shape, medianSeconds: s, metrics: metrics(s, bytesPerElement: aconForwardBytes)))
    }
    if options.wants("aconc.fused.fwdbwd") {
      let s = measure(repetitions: options.repetitions, minSeconds: options.minSeconds) { fusedForward(); fusedBackward() }
      try emit(BenchResult(name: "aconc.fused.fwdbwd", shape: shape, medianSeconds: s,
        metrics: metrics(s, bytesPerElement: aconForwardBytes + aconBackwardBytes)))
    }
    if options.wants("aconc.savedsigmoid.fwdbwd") {
      // The alternative design: save s = σ(β·d) in forward (4 more bytes written, 4 more read).
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
      dp1.zero()
      bwd()
      try check("aconc.savedsigmoid.fwd \(shape)", y.data, want, rtol: 1e-4, atol: 1e-5)
      try check("aconc.savedsigmoid.bwd dx \(shape)", dx.data, wantGrad.dx, rtol: 1e-4, atol: 1e-5)
      try check("aconc.savedsigmoid.bwd dp1 \(shape)", dp1.data, wantGrad.dp1, rtol: 1e-3, atol: sumTol)
      let s = measure(repetitions: options.repetitions, minSeconds: options.minSeconds) { fwd(); bwd() }
      try emit(BenchResult(name: "aconc.savedsigmoid.fwdbwd", shape: shape, medianSeconds: s,
        metrics: metrics(s, bytesPerElement: aconForwardBytes + aconBackwardBytes)))
    }
  }
  if options.wants("aconc.unfused.fwdbwd") {
    let u = UnfusedAconC(n: n, c: c, hw: hw)
    u.forward(x: x, y: y, p1: p1, p2: p2, beta: beta)
    try check("aconc.unfused.fwd \(shape)", y.data, want, rtol: 1e-4, atol: 1e-5)
    dp1.zero(); dp2.zero(); dbeta.zero()
    u.backward(x: x, dy: dy, dx: dx, p1: p1, p2: p2, beta: beta, dp1: dp1, dp2: dp2, dbeta: dbeta)
    try check("aconc.unfused.bwd dx \(shape)", dx.data, wantGrad.dx, rtol: 1e-4, atol: 1e-5)
    try check("aconc.unfused.bwd dp1 \(shape)", dp1.data, wantGrad.dp1, rtol: 1e-3, atol: sumTol)
    try check("aconc.unfused.bwd dp2 \(shape)", dp2.data, wantGrad.dp2, rtol: 1e-3, atol: sumTol)
    try check("aconc.unfused.bwd dbeta \(shape)", dbeta.data, wantGrad.dbeta, rtol: 1e-3, atol: sumTol)
    let s = measure(repetitions: options.repetitions, minSeconds: options.minSeconds) {
      u.forward(x: x, y: y, p1: p1, p2: p2, beta: beta)
      u.backward(x: x, dy: dy, dx: dx, p1: p1, p2: p2, beta: beta, dp1: dp1, dp2: dp2, dbeta: dbeta)
    }
    try emit(BenchResult(name: "aconc.unfused.fwdbwd", shape: shape, medianSeconds: s,
      metrics: metrics(s, bytesPerElement: aconForwardBytes + aconBackwardBytes)))
  }
  if options.wants("metaaconc.fused.fwdbwd") {
    var mrng = SeededGenerator(seed: 3)
    let meta = MetaAconC(channels: c, rng: &mrng)
    meta.train()
    // Reference: β from the layer's own β network (checked in the unit tests), then the Double ACON.
    let out = try meta.forward(x)
    let betaNC = meta.lastBeta!.array
    let mp1 = meta.p1.value.array, mp2 = meta.p2.value.array
    let wantMeta = AconReference.forward(x: x.array, n: n, c: c, hw: hw, p1: mp1, p2: mp2, beta: betaNC)
    try check("metaaconc.fused.fwd \(shape)", out.data, wantMeta, rtol: 1e-4, atol: 1e-5)
    let s = measure(repetitions: options.repetitions, minSeconds: options.minSeconds) {
      _ = try? meta.forward(x)
      _ = try? meta.backward(dy)
    }
    // Its minimum traffic: the mean reads x once more (4 bytes) on top of ACON-C's 20.
    try emit(BenchResult(name: "metaaconc.fused.fwdbwd", shape: shape, medianSeconds: s,
      metrics: metrics(s, bytesPerElement: aconForwardBytes + aconBackwardBytes + 4)))
  }
}
