// ZooWorkloads: one whole training step (forward, softmax cross-entropy, backward, SGD with
// momentum 0.9) of the zoo's networks, as images/s with the peak resident memory, each in a child
// process of its own (as TrainStepWorkloads). Where Python has PyTorch, the eager twin
// (Benchmarks/pytorch/train_step.py with zoo_nets.py, the same structures) runs the same step
// right after, and the row gets PyTorch's images/s and our speed-up. Rounds alternate the two.
import Foundation
import NN
import TensorCore
import Zoo

/// The zoo rows: name, input [C, H, W], batch.
let zooTrainStepRows: [(name: String, input: [Int], batch: Int)] = [
  ("shufflenetv2-0.5x-relu", [3, 32, 32], 64), ("shufflenetv2-0.5x-aconc", [3, 32, 32], 64),
  ("shufflenetv2-0.5x-meta", [3, 32, 32], 64), ("tfnet-0.5", [3, 32, 32], 64),
  ("resnet18-relu", [3, 32, 32], 64), ("resnet18-aconc", [3, 32, 32], 64), ("resnet18-meta", [3, 32, 32], 64),
  ("resnet50-aconc", [3, 224, 224], 16),
]

/// Runs in a child process: with `check`, three steps on one batch must give finite losses;
/// otherwise times steps and returns images/s and the peak RSS in MB.
func zooTrainStepWorker(name: String, input: [Int], batch: Int, repetitions: Int, minSeconds: Double, check: Bool) throws
  -> (Double, Double)
{
  let classes = 10
  let net = try ZooModels.build(name: name, inputShape: input, classes: classes, seed: 1)
  net.packGradients()
  let opt = SGD(groups: ParameterGroup.defaultGroups(net.namedParameters(), weightDecay: 0), learningRate: 0.01, momentum: 0.9)
  var rng = SeededGenerator(seed: 2)
  let x = Tensor(zeros: [batch] + input)
  x.fillNormal(using: &rng)
  let labels = (0..<batch).map { _ in Int32(rng.nextInt(below: classes)) }
  let loss = CrossEntropyLoss()
  let workload = "train_step.\(name) \(input)"
  func step() throws -> Float {
    net.zeroGrad()
    let value = try loss(try net.forward(x), labels: labels)
    guard let g = loss.gradient else { throw WorkloadFailure(workload: workload, detail: "the loss kept no gradient") }
    _ = try net.backward(g)
    opt.step()
    return value
  }
  if check {
    for k in 0..<3 {
      let v = try step()
      guard v.isFinite else { throw ReferenceMismatch(workload: workload, detail: "step \(k) gave loss \(v)") }
    }
    return (0, 0)
  }
  let s = try measure(workload, repetitions: repetitions, minSeconds: minSeconds) { _ = try step() }
  return (Double(batch) / s, peakRSSMegabytes())
}

func zooTrainStepWorkloads(options: BenchOptions, emit: (BenchResult) throws -> Void) throws {
  // --quick (CI smoke runs): the two smallest networks at batch 16 only.
  let rows = options.quick
    ? zooTrainStepRows.filter { $0.name == "shufflenetv2-0.5x-aconc" || $0.name == "tfnet-0.5" }.map { ($0.name, $0.input, 16) }
    : zooTrainStepRows
  for (name, input, batch) in rows where options.wants("train_step.\(name)") {
    let inputText = input.map(String.init).joined(separator: "x")
    let workload = "train_step.\(name) \(inputText)"
    func worker(_ extra: [String]) throws -> (Int32, Data) {
      try runSelfAsWorker(["--worker-zoo-train-step", name, "--worker-input", inputText, "--worker-batch", String(batch),
        "--threads", String(Threads.count), "--repetitions", String(options.repetitions)] + (options.quick ? ["--quick"] : [])
        + (injectedFailure.map { ["--inject-failure", $0] } ?? []) + extra)
    }
    let (checkStatus, _) = try worker(["--worker-check"])
    guard checkStatus == 0 else {
      throw ReferenceMismatch(workload: workload, detail: "the check's process exited with status \(checkStatus); its message is above")
    }
    var ours: [(ips: Double, rss: Double, seconds: Double)] = [], torch: [(ips: Double, rss: Double)] = []
    for _ in 0..<options.rounds {
      let (status, data) = try worker([])
      guard status == 0, let obj = try JSONSerialization.jsonObject(with: data) as? [String: Double],
        let ips = obj["images_per_s"], let rss = obj["peak_rss_mb"], let sec = obj["median_s"]
      else {
        throw WorkloadFailure(workload: workload, detail: "its timing process exited with status \(status); its message is above")
      }
      ours.append((ips, rss, sec))
      if PyTorch.available(options) {
        let obj = try PyTorch.runScript("train_step.py", ["--model", name, "--input", inputText, "--batch", String(batch),
          "--threads", String(Threads.count), "--repetitions", String(options.repetitions)],
          workload: "pytorch." + workload, options: options)
        guard let tips = obj["images_per_s"] as? Double, let trss = obj["peak_rss_mb"] as? Double else {
          throw WorkloadFailure(workload: "pytorch." + workload, detail: "train_step.py printed no images_per_s and peak_rss_mb")
        }
        torch.append((tips, trss))
      }
    }
    var metrics: [(String, Any)] = [("input", inputText), ("batch", batch), ("images_per_s", median(ours.map(\.ips))),
      ("peak_rss_mb", ours.map(\.rss).max()!), ("rounds", options.rounds)]
    if torch.count == ours.count {
      let ratios = zip(ours, torch).map { $0.ips / $1.ips }
      metrics += [("pytorch_images_per_s", median(torch.map(\.ips))), ("speedup_vs_pytorch", median(ratios)),
        ("speedup_min", ratios.min()!), ("speedup_max", ratios.max()!), ("pytorch_peak_rss_mb", torch.map(\.rss).max()!)]
    }
    try emit(BenchResult(name: "train_step.\(name)", shape: [batch] + input, medianSeconds: median(ours.map(\.seconds)),
      metrics: metrics))
  }
}
