// AconFamilyWorkloads: the rest of the ACON family's fused passes, each checked against its
// Double reference (AconReference / the ReferenceLayer twins) and then timed against the memcpy
// roofline (memcpy moving the same bytes, Harness.swift's Bandwidth):
//   acon_frelu.fwdbwd           ACON-FReLU's smooth maximum S(a, b) = (a − b)·σ(a − b) + b,
//                               forward (a, b read, y written: 12 B/element) and backward
//                               (a, b, dy read, da, db written: 20 B/element);
//   metaaconc_layerwise.fwdbwd  MetaAconLayerwise forward + backward (x read, y written; x, dy
//                               read, dx written: 20 B/element; the β mean's pass and the dx
//                               update's pass rerun a sample that is still in the thread's cache
//                               and are not counted);
//   metaaconc_pixelwise.fwdbwd  MetaAconPixelwise forward + backward (20 B/element);
//   batchnorm.fwdbwd            BatchNorm2D in training, forward + backward (20 B/element: the
//                               statistics' and the sums' passes reread a channel that is still
//                               in cache and are not counted), the zoo's most frequent pass;
//                               a second row on [64, 256, 4, 4], the small planes of the zoo's
//                               networks at 32×32 (BatchNorm2D's block passes).
// The full run uses [64, 128, 56, 56] (103 MB per tensor: each pass touches 3 to 5 of them, more
// than the last-level cache, 32 MB on the Zen 4 guest); --quick a smaller shape that may sit in cache.
import ACON
import NN
import TensorCore
import TestSupport

/// Runs the ACON-family workloads (see the file comment).
func aconFamilyWorkloads(bandwidth: Bandwidth, options: BenchOptions, emit: (BenchResult) throws -> Void) throws {
  let shape = options.quick ? [16, 64, 28, 28] : [64, 128, 56, 56]
  let (n, c, hw) = (shape[0], shape[1], shape[2] * shape[3])
  let count = n * c * hw
  var rng = SeededGenerator(seed: 1414)
  /// The row's figures for `passes` (forward, backward), each pass's minimum traffic in bytes per
  /// element, over `elems` elements (the main shape's by default).
  func metrics(_ s: Double, passes: [Double], elems: Double = Double(count)) throws -> [(String, Any)] {
    [("gelems_per_s", elems / s / 1e9), ("bytes_per_element", passes.reduce(0, +)), ("kernels", AconKernels.variant)]
      + (try bandwidth.metrics(passBytes: passes.map { elems * $0 }, seconds: s, gbpsKey: "gbytes_per_s",
        fractionKey: "roofline_fraction"))
  }
  /// The planes checked against the Double reference (all of them in a quick run).
  let checkPlanes = Swift.min(n * c, Swift.max(1, (1 << 18) / hw))
  let checkCount = checkPlanes * hw

  if options.wants("acon_frelu.fwdbwd") {
    let a = Tensor(zeros: shape), b = Tensor(zeros: shape), dy = Tensor(zeros: shape)
    a.fillNormal(using: &rng)
    b.fillNormal(using: &rng)
    dy.fillNormal(using: &rng)
    let y = Tensor(zeros: shape), da = Tensor(zeros: shape), db = Tensor(zeros: shape)
    func run() {
      AconKernels.smoothMaxForward(a: a.data, b: b.data, y: y.data, planes: n * c, hw: hw)
      AconKernels.smoothMaxBackward(a: a.data, b: b.data, dy: dy.data, da: da.data, db: db.data, planes: n * c, hw: hw)
    }
    run()
    let pa = Array(a.array.prefix(checkCount)), pb = Array(b.array.prefix(checkCount))
    let ref = AconReference.smoothMaxBackward(a: pa, b: pb, dy: Array(dy.array.prefix(checkCount)), hw: hw)
    try check("acon_frelu.fwdbwd y", y.data, AconReference.smoothMax(a: pa, b: pb), rtol: 2e-6, atol: 2e-6)
    try check("acon_frelu.fwdbwd da", da.data, ref.da, rtol: 2e-6, atol: 2e-6)
    try check("acon_frelu.fwdbwd db", db.data, ref.db, rtol: 2e-6, atol: 4e-6)
    let s = try measure("acon_frelu.fwdbwd", repetitions: options.repetitions, minSeconds: options.minSeconds, run)
    try emit(BenchResult(name: "acon_frelu.fwdbwd", shape: shape, medianSeconds: s,
      metrics: try metrics(s, passes: [12, 20])))
  }

  let smallPlanes = [64, 256, 4, 4]
  for (name, shape, make) in [
    ("metaaconc_layerwise.fwdbwd", shape, { (r: inout SeededGenerator) -> Module in MetaAconLayerwise(channels: c, rng: &r) }),
    ("metaaconc_pixelwise.fwdbwd", shape, { (r: inout SeededGenerator) -> Module in MetaAconPixelwise(channels: c, rng: &r) }),
    ("batchnorm.fwdbwd", shape, { (_: inout SeededGenerator) -> Module in BatchNorm2D(channels: c) }),
  ] + (options.quick ? [] : [
    ("batchnorm.fwdbwd", smallPlanes, { (_: inout SeededGenerator) -> Module in BatchNorm2D(channels: smallPlanes[1]) }),
  ]) where options.wants(name) {
    let layer = make(&rng)
    let x = Tensor(zeros: shape), dy = Tensor(zeros: shape)
    x.fillNormal(using: &rng)
    dy.fillNormal(using: &rng)
    func run() throws -> (Tensor, Tensor) {
      let y = try layer.forward(x)
      return (y, try layer.backward(dy))
    }
    // The check: a small batch through the Double twin (the same code paths as the timed run).
    let small = [Swift.min(n, 2)] + Array(shape.dropFirst())
    let xs = Tensor(shape: small, values: Array(x.array.prefix(small.reduce(1, *))))
    let ds = Tensor(shape: small, values: Array(dy.array.prefix(small.reduce(1, *))))
    layer.zeroGrad()
    let ys = try layer.forward(xs), dxs = try layer.backward(ds)
    let twin = try ReferenceLayer(layer)
    let theta = twin.parameters.map(\.1)
    let wantY = twin.forward(DoubleTensor(xs), theta)
    let (wantDx, wantDp) = twin.backward(DoubleTensor(xs), theta, DoubleTensor(ds))
    try check(name + " y", ys.data, wantY.values, rtol: 1e-5, atol: 1e-5)
    try check(name + " dx", dxs.data, wantDx.values, rtol: 1e-4, atol: 1e-5)
    for ((pname, p), want) in zip(layer.namedParameters(), wantDp) {
      let scale = want.values.map(abs).max() ?? 1
      try check(name + " d" + pname, p.grad.data, want.values, rtol: 1e-4, atol: 1e-5 * Swift.max(1, scale))
    }
    let s = try measure(name, repetitions: options.repetitions, minSeconds: options.minSeconds) { blackHole(try run()) }
    try emit(BenchResult(name: name, shape: shape, medianSeconds: s,
      metrics: try metrics(s, passes: [8, 12], elems: Double(shape.reduce(1, *)))))
  }
}
