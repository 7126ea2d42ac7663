// ZooWorkloads: one whole training step (forward, softmax cross-entropy, backward, SGD with
// momentum 0.9) of the zoo's networks, as images/s with the peak resident memory, each in a child
// process of its own (as TrainStepWorkloads), with the step's GEMMs alone (`gemm_fraction`).
// Where Python has PyTorch, the eager and torch.compile twins (Benchmarks/pytorch/train_step.py
// with zoo_nets.py, the same structures) run the same step right after, and the row gets
// PyTorch's images/s and our speed-ups. Rounds alternate the three.
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
  -> StepFigures?
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
    return nil
  }
  return try measureStepAndGemms(workload, batch: batch, repetitions: repetitions, minSeconds: minSeconds) { _ = try step() }
}

func zooTrainStepWorkloads(memcpyGbps: Double, options: BenchOptions, emit: (BenchResult) throws -> Void) throws {
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
    var rounds = TrainStepRounds(workload: workload)
    for _ in 0..<options.rounds {
      let (status, data) = try worker([])
      try rounds.addOurs(status: status, output: data)
      try rounds.addPyTorch(model: name, input: inputText, batch: batch, options: options)
    }
    try emit(BenchResult(name: "train_step.\(name)", shape: [batch] + input, medianSeconds: median(rounds.ours.map(\.seconds)),
      metrics: [("input", inputText), ("batch", batch)] + rounds.metrics(memcpyGbps: memcpyGbps)))
  }
}
