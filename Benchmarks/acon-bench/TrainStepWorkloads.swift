// TrainStepWorkloads: one whole training step (forward, loss, backward, Adam) of the seed
// networks at batch 64, as images/s, with the peak resident memory. Each network runs in a
// child process of its own, so that its peak memory is its own and not the benchmark's; that
// process also times the step's GEMMs alone (`gemm_fraction`, TrainStepComparison.swift). Where
// Python has PyTorch, its eager and torch.compile twins (Benchmarks/pytorch/train_step.py) run
// the same step on the same machine right after, and the row gets PyTorch's images/s and our
// speed-ups. Rounds alternate the three (`--rounds`), and the medians are reported. `seed-relu-userbuilt` is
// seed-relu as a user builds it through the public API in the obvious way (plain `ReLU()`s in a
// `Sequential`, default workspaces, no flags set), prepared as the Trainer prepares any model
// (`prepareForTraining()`), timed in one process with the built-in one, their steps alternating
// (`ratio_vs_builtin`, the median of the rounds' ratios; its peak RSS holds both networks): the
// fast path must be the default (goal: within 3%).
import ACON
import Foundation
import NN
import TensorCore
import TestSupport
import Training

/// Runs in a child process: with `check`, verifies the network against the Double reference and
/// a central difference and returns; otherwise times training steps and returns images/s and
/// the peak RSS in MB (VmHWM of this fresh process, so that the reference check's memory is not
/// counted). Errors thrown by a timed step fail the process, and so the benchmark.
func trainStepWorker(modelName model: String, input: [Int], batch: Int, repetitions: Int, minSeconds: Double, check: Bool) throws -> StepFigures? {
  if model == userBuiltSeedRelu && !check {
    return try userBuiltAgainstBuiltIn(input: input, batch: batch, repetitions: repetitions)
  }
  let classes = 10
  let net: Sequential
  if model == userBuiltSeedRelu {
    net = try userBuiltSeedReluNetwork(input: input, classes: classes, seed: 1)
  } else {
    guard let kind = ModelKind(rawValue: model) else { throw WorkloadFailure(workload: "train_step", detail: "unknown model \(model)") }
    net = try kind.build(input: input, classes: classes, seed: 1)
  }
  // The user-built network gets what the Trainer gives any model (the built-in one has it already).
  if model == userBuiltSeedRelu { net.prepareForTraining() } else { net.packGradients() }
  let params = net.namedParameters()
  let opt = Adam(parameters: params, learningRate: 1e-3)
  var rng = SeededGenerator(seed: 2)
  let x = Tensor(zeros: [batch] + input)
  x.fillNormal(using: &rng)
  let labels = (0..<batch).map { _ in Int32(rng.nextInt(below: classes)) }
  let loss = CrossEntropyLoss()

  if check { try checkTrainStep(net, model: model, x: x, labels: labels, input: input, rng: &rng) ; return nil }
  return try measureStepAndGemms("train_step.\(model) \(input)", batch: batch, repetitions: repetitions, minSeconds: minSeconds) {
    net.zeroGrad()
    let y = try net.forward(x)
    let (_, g) = try loss.valueAndGradient(y, labels: labels)
    _ = try net.backward(g)
    opt.step()
  }
}

/// The user-built seed-relu and the built-in one in one process, on the same batch, their
/// training steps alternating (A B B A …) after two warm-up steps each, so that both see the same
/// memory, frequency and neighbours: images/s of each (medians of single steps, at least 15 of
/// each) and the peak RSS of the process that holds both.
private func userBuiltAgainstBuiltIn(input: [Int], batch: Int, repetitions: Int) throws -> StepFigures {
  let classes = 10
  let user = try userBuiltSeedReluNetwork(input: input, classes: classes, seed: 1)
  user.prepareForTraining()
  let builtIn = try ModelKind.seedRelu.build(input: input, classes: classes, seed: 1)
  builtIn.packGradients()
  var rng = SeededGenerator(seed: 2)
  let x = Tensor(zeros: [batch] + input)
  x.fillNormal(using: &rng)
  let labels = (0..<batch).map { _ in Int32(rng.nextInt(below: classes)) }
  let loss = CrossEntropyLoss()
  let steps: [() throws -> Void] = [user, builtIn].map { net in
    let opt = Adam(parameters: net.namedParameters(), learningRate: 1e-3)
    return {
      net.zeroGrad()
      let (_, g) = try loss.valueAndGradient(try net.forward(x), labels: labels)
      _ = try net.backward(g)
      opt.step()
    }
  }
  var times: [[Double]] = [[], []]
  for step in steps { for _ in 0..<2 { try step() } }
  for r in 0..<max(15, repetitions) {
    for k in (r % 2 == 0 ? [0, 1] : [1, 0]) {
      let start = DispatchTime.now().uptimeNanoseconds
      try steps[k]()
      times[k].append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }
  }
  return StepFigures(batch: batch, stepSeconds: median(times[0]), peakRSS: peakRSSMegabytes(),
    builtInImagesPerSecond: Double(batch) / median(times[1]))
}

/// The name of the user-built seed-relu row.
let userBuiltSeedRelu = "seed-relu-userbuilt"

/// seed-relu as a user writes it from the README: the layers in a `Sequential`, plain `ReLU()`s,
/// each `Conv2D` with its default workspace, no flags; the same parameters in the same order
/// and the same initial weights as `ModelKind.seedRelu.build`.
func userBuiltSeedReluNetwork(input: [Int], classes: Int, seed: UInt64) throws -> Sequential {
  var rng = SeededGenerator(seed: seed)
  let features: [(String, Module)] = [
    ("conv1", Conv2D(inChannels: input[0], outChannels: 32, kernelSize: 3, padding: 1, rng: &rng)), ("relu1", ReLU()),
    ("conv2", Conv2D(inChannels: 32, outChannels: 64, kernelSize: 3, stride: 2, rng: &rng)), ("relu2", ReLU()),
    ("conv3", Conv2D(inChannels: 64, outChannels: 64, kernelSize: 3, stride: 2, rng: &rng)), ("relu3", ReLU()),
    ("conv4", Conv2D(inChannels: 64, outChannels: 64, kernelSize: 3, stride: 2, padding: 1, rng: &rng)), ("relu4", ReLU()),
    ("flatten", Flatten()),
  ]
  let width = try Sequential(features).outputShape(for: [1] + input)[1]
  return Sequential(features + [
    ("linear1", Linear(inFeatures: width, outFeatures: 64, rng: &rng)), ("relu5", ReLU()),
    ("linear2", Linear(inFeatures: 64, outFeatures: classes, rng: &rng)),
  ])
}

private func checkTrainStep(_ net: Sequential, model: String, x: Tensor, labels: [Int32], input: [Int], rng: inout SeededGenerator) throws {
  let params = net.namedParameters()
  let loss = CrossEntropyLoss()
  // Reference check of the forward pass: the same network on 8 samples, layer by layer in Double.
  let probe = Tensor(shape: [8] + input, values: Array(x.array.prefix(8 * input.reduce(1, *))))
  let logits = try net.forward(probe)
  let want = try referenceForward(net, DoubleTensor(probe))
  try check("train_step.\(model) forward", logits.data, want.values, rtol: 1e-3, atol: 1e-4)

  // Sanity check of the backward pass: the directional derivative ⟨∇L, v⟩ against a central
  // difference of the Float loss. ReLU kinks and Float rounding limit this to a coarse 10%;
  // the per-layer finite-difference tests are the precise check.
  net.zeroGrad()
  _ = try net.backward(try loss.valueAndGradient(try net.forward(x), labels: labels).gradient)
  var dirs: [[Float]] = []
  var analytic = 0.0, norm = 0.0
  for (_, p) in params {
    let v = (0..<p.value.count).map { _ in rng.nextNormal() }
    dirs.append(v)
    for i in 0..<v.count { analytic += Double(v[i]) * Double(p.grad.data[i]); norm += Double(v[i] * v[i]) }
  }
  let h = Float(1e-2 / norm.squareRoot())
  func lossAt(_ t: Float) throws -> Double {
    let saved = params.map { $0.1.value.array }
    for (k, (_, p)) in params.enumerated() { for i in 0..<p.value.count { p.value.data[i] += t * dirs[k][i] } }
    defer { for (k, (_, p)) in params.enumerated() { p.value.data.update(from: saved[k], count: saved[k].count) } }
    return Double(try loss(try net.forward(x), labels: labels))
  }
  let numeric = (try lossAt(h) - lossAt(-h)) / (2 * Double(h))
  guard abs(numeric - analytic) <= 0.1 * max(abs(analytic), 1e-3) else {
    throw ReferenceMismatch(workload: "train_step.\(model)",
      detail: "directional derivative \(analytic) vs central difference \(numeric)")
  }

}

/// The network's output by the Double references, layer by layer (training-mode BatchNorm).
func referenceForward(_ net: Sequential, _ input: DoubleTensor) throws -> DoubleTensor {
  var h = input
  for (name, layer) in net.layers {
    switch layer {
    case let c as Conv2D:
      h = Reference.conv2d(h, weight: DoubleTensor(c.weight.value), bias: c.bias.map { DoubleTensor($0.value) },
        stride: c.stride, padding: c.padding)
    case is ReLU:
      h = Reference.relu(h)
    case is Flatten:
      h = h.reshaped([h.shape[0], h.count / h.shape[0]])
    case let l as Linear:
      h = Reference.linear(h, weight: DoubleTensor(l.weight.value), bias: l.bias.map { DoubleTensor($0.value) })
    case let a as AconC:
      let p = Dictionary(uniqueKeysWithValues: a.namedParameters().map { ($0.0, $0.1.value.array) })
      let x = h.values.map(Float.init)
      h = DoubleTensor(shape: h.shape, values: AconReference.forward(x: x, n: h.shape[0], c: h.shape[1],
        hw: h.shape[2] * h.shape[3], p1: p["p1"]!, p2: p["p2"]!, beta: p["beta"]!))
    case let m as MetaAconC:
      var b = Reference.globalAvgPool2d(h)
      b = Reference.conv2d(b, weight: DoubleTensor(m.fc1.weight.value), bias: DoubleTensor(m.fc1.bias!.value), stride: 1, padding: 0)
      if let bn = m.bn1 { b = Reference.batchNormTraining(b, gamma: DoubleTensor(bn.weight.value).values, beta: DoubleTensor(bn.bias.value).values) }
      b = Reference.conv2d(b, weight: DoubleTensor(m.fc2.weight.value), bias: DoubleTensor(m.fc2.bias!.value), stride: 1, padding: 0)
      if let bn = m.bn2 { b = Reference.batchNormTraining(b, gamma: DoubleTensor(bn.weight.value).values, beta: DoubleTensor(bn.bias.value).values) }
      let beta = b.values.map { Float(AconReference.sigmoid($0)) }
      h = DoubleTensor(shape: h.shape, values: AconReference.forward(x: h.values.map(Float.init), n: h.shape[0], c: h.shape[1],
        hw: h.shape[2] * h.shape[3], p1: m.p1.value.array, p2: m.p2.value.array, beta: beta))
    default:
      throw ReferenceMismatch(workload: "train_step", detail: "no reference for layer \(name) (\(layer.typeName))")
    }
  }
  return h
}

func trainStepWorkloads(memcpyGbps: Double, options: BenchOptions, emit: (BenchResult) throws -> Void) throws {
  for input in [[3, 32, 32], [1, 28, 28]] {
    let names = [ModelKind.seedRelu.rawValue, userBuiltSeedRelu, ModelKind.seedAconc.rawValue, ModelKind.seedMeta.rawValue]
    for kind in names where options.wants("train_step.\(kind)") {
      let torchTwin = kind == userBuiltSeedRelu ? ModelKind.seedRelu.rawValue : kind
      let inputText = input.map(String.init).joined(separator: "x")
      func worker(_ extra: [String]) throws -> (Int32, Data) {
        try runSelfAsWorker(["--worker-train-step", kind, "--worker-input", inputText, "--threads", String(Threads.count),
          "--repetitions", String(options.repetitions)] + (options.quick ? ["--quick"] : [])
          + (injectedFailure.map { ["--inject-failure", $0] } ?? []) + extra)
      }
      let (checkStatus, _) = try worker(["--worker-check"])
      guard checkStatus == 0 else {
        throw ReferenceMismatch(workload: "train_step.\(kind) \(inputText)",
          detail: "the reference check's process exited with status \(checkStatus); its message is above")
      }
      // Rounds alternate ours, PyTorch eager's and torch.compile's, each a fresh process, so that
      // a slow spell of this shared machine hits both sides of a round's ratio.
      var rounds = TrainStepRounds(workload: "train_step.\(kind) \(inputText)")
      for _ in 0..<options.rounds {
        let (status, data) = try worker([])
        try rounds.addOurs(status: status, output: data)
        // The user-built row's process times the built-in network beside it (builtIn).
        if kind == userBuiltSeedRelu { continue }
        try rounds.addPyTorch(model: torchTwin, input: inputText, batch: nil, options: options)
      }
      try emit(BenchResult(name: "train_step.\(kind)", shape: [64] + input, medianSeconds: median(rounds.ours.map(\.seconds)),
        metrics: [("input", inputText)] + rounds.metrics(memcpyGbps: memcpyGbps)))
    }
  }
}

/// The median of a non-empty list (the mean of the middle two for an even count).
func median(_ xs: [Double]) -> Double {
  let s = xs.sorted()
  return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}
