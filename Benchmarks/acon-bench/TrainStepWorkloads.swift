// TrainStepWorkloads: one whole training step (forward, loss, backward, Adam) of the seed
// networks at batch 64, as images/s, with the peak resident memory. Each network runs in a
// child process of its own, so that its peak memory is its own and not the benchmark's.
import Foundation
import NN
import TensorCore
import Training

/// Runs in the child process: checks the network's gradient against a central difference along
/// a random direction, then times training steps. Returns images/s and peak RSS in MB.
func trainStepWorker(model: ModelKind, input: [Int], batch: Int, repetitions: Int, minSeconds: Double) throws -> (Double, Double) {
  let classes = 10
  let net = try model.build(input: input, classes: classes, seed: 1)
  net.packGradients()
  let params = net.namedParameters()
  let opt = Adam(parameters: params, learningRate: 1e-3)
  var rng = SeededGenerator(seed: 2)
  let x = Tensor(zeros: [batch] + input)
  x.fillNormal(using: &rng)
  let labels = (0..<batch).map { _ in Int32(rng.nextInt(below: classes)) }
  let loss = CrossEntropyLoss()

  // Reference check: d/dh L(θ + h·v) at h = 0 by central difference equals ⟨∇L, v⟩.
  net.zeroGrad()
  _ = try loss(try net.forward(x), labels: labels)
  _ = try net.backward(loss.gradient!)
  var dirs: [[Float]] = []
  var analytic = 0.0, norm = 0.0
  for (_, p) in params {
    let v = (0..<p.value.count).map { _ in rng.nextNormal() }
    dirs.append(v)
    for i in 0..<v.count { analytic += Double(v[i]) * Double(p.grad.data[i]); norm += Double(v[i] * v[i]) }
  }
  let h = Float(1e-2 / norm.squareRoot())
  func lossAt(_ t: Float) throws -> Double {
    for (k, (_, p)) in params.enumerated() { for i in 0..<p.value.count { p.value.data[i] += t * dirs[k][i] } }
    defer { for (k, (_, p)) in params.enumerated() { for i in 0..<p.value.count { p.value.data[i] -= t * dirs[k][i] } } }
    return Double(try loss(try net.forward(x), labels: labels))
  }
  let numeric = (try lossAt(h) - lossAt(-h)) / (2 * Double(h))
  guard abs(numeric - analytic) <= 0.05 * max(abs(analytic), 1e-3) else {
    throw ReferenceMismatch(workload: "train_step.\(model.rawValue)",
      detail: "directional derivative \(analytic) vs central difference \(numeric)")
  }

  let s = measure(repetitions: repetitions, minSeconds: minSeconds) {
    net.zeroGrad()
    guard let y = try? net.forward(x), (try? loss(y, labels: labels)) != nil, (try? net.backward(loss.gradient!)) != nil else {
      return
    }
    opt.step()
  }
  return (Double(batch) / s, peakRSSMegabytes())
}

func trainStepWorkloads(options: BenchOptions, emit: (BenchResult) throws -> Void) throws {
  for input in [[3, 32, 32], [1, 28, 28]] {
    for kind in ModelKind.allCases where options.wants("train_step.\(kind.rawValue)") {
      let inputText = input.map(String.init).joined(separator: "x")
      let exe = URL(fileURLWithPath: CommandLine.arguments[0]).path
      let p = Process()
      p.executableURL = URL(fileURLWithPath: exe.hasPrefix("/") ? exe : FileManager.default.currentDirectoryPath + "/" + exe)
      p.arguments = ["--worker-train-step", kind.rawValue, "--worker-input", inputText, "--threads", String(Threads.count),
        "--repetitions", String(options.repetitions)] + (options.quick ? ["--quick"] : [])
      let pipe = Pipe()
      p.standardOutput = pipe
      try p.run()
      let data = pipe.fileHandleForReading.readDataToEndOfFile()
      p.waitUntilExit()
      guard p.terminationStatus == 0,
        let obj = try JSONSerialization.jsonObject(with: data) as? [String: Double],
        let ips = obj["images_per_s"], let rss = obj["peak_rss_mb"], let sec = obj["median_s"]
      else {
        throw ReferenceMismatch(workload: "train_step.\(kind.rawValue)", detail: "the worker process failed (status \(p.terminationStatus))")
      }
      try emit(BenchResult(name: "train_step.\(kind.rawValue)", shape: [64] + input, medianSeconds: sec, metrics: [
        ("input", inputText), ("images_per_s", ips), ("peak_rss_mb", rss),
      ]))
    }
  }
}
