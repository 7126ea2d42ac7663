// acon-bench: measures every hot path of the package against this machine's own ceilings in
// one run (memcpy bandwidth of the same traffic for the elementwise ACON passes and the
// lowering, sgemm GFLOP/s for convolutions), after checking each workload against its reference,
// and beside PyTorch's eager and compiled twins where Python has torch. Any error fails the run.
// `swift run -c release acon-bench`.
import ACON
import ArgumentParser
import Foundation
import TensorCore
import Training

/// What the workloads need to know about the run.
struct BenchOptions {
  var quick: Bool
  var repetitions: Int
  var filter: String?
  /// The Python with PyTorch for the ACON and train-step comparisons, or "none".
  var python: String
  /// Train-step rounds: ours and PyTorch's, alternated, each in a fresh process.
  var rounds: Int
  /// Seconds torch.compile's first train step (the compilation) may take; 0 skips the compiled twins.
  var compileTimeout: Double = 1200
  var minSeconds: Double { quick ? 0.01 : 0.05 }
  func wants(_ name: String) -> Bool {
    guard let f = filter else { return true }
    return name.contains(f) || f.contains(name)
  }
}

#if DEBUG
  let buildMode = "debug"
#else
  let buildMode = "release"
#endif

@main
struct AconBench: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "acon-bench",
    abstract: "Measure the ACON kernels, convolutions and training steps against this machine's ceilings.")

  @Flag(help: "Print JSON on stdout (progress goes to stderr, on a TTY only).") var json = false
  @Flag(help: "A small configuration for CI smoke runs (under 30 s).") var quick = false
  @Option(help: "Threads for OpenBLAS and the kernels (default: the number of cores).") var threads: Int?
  @Option(help: "Run only workloads whose name contains this.") var filter: String?
  @Option(help: "Timed repetitions per workload; the median is reported.") var repetitions: Int = 7
  @Option(help: "Python with PyTorch, to time the same ACON layers (eager and torch.compile) and training steps (eager and torch.compile) for comparison ('none' skips it; --quick always does).")
  var python = "python3"
  @Option(help: "Rounds of each train-step workload: ours and PyTorch's alternate, each in a fresh process; medians are reported, the speed-up as the median of the rounds' ratios. (default: 3; 1 with --quick)")
  var rounds: Int?
  @Option(help: "Seconds that torch.compile's compilation of one train step may take (past it, the row carries pytorch_compile_error); 0 skips the torch.compile twins of the train steps.")
  var compileTimeout: Double = 1200
  @Option(help: .hidden) var workerTrainStep: String?
  @Option(help: .hidden) var workerInput: String?
  @Flag(help: .hidden) var workerCheck = false
  @Option(help: .hidden) var workerZooTrainStep: String?
  @Option(help: .hidden) var workerBatch: Int?
  @Option(help: ArgumentHelp("Make the timed body of every workload whose name starts with this throw after its first call (to check that a failure fails the run).", visibility: .hidden))
  var injectFailure: String?

  func validate() throws {
    if let t = threads, !(1...256).contains(t) { throw ValidationError("--threads must be in 1...256") }
    if repetitions < 1 { throw ValidationError("--repetitions must be at least 1") }
    if !(compileTimeout >= 0) { throw ValidationError("--compile-timeout must be 0 or more seconds") }
  }

  func run() throws {
    Threads.count = threads ?? Threads.defaultCount
    injectedFailure = injectFailure
    let reps = quick ? min(repetitions, 3) : repetitions
    if let r = rounds, r < 1 { throw ValidationError("--rounds must be at least 1, got \(r)") }
    let options = BenchOptions(quick: quick, repetitions: reps, filter: filter, python: python, rounds: rounds ?? (quick ? 1 : 3),
      compileTimeout: compileTimeout)
    if let name = workerZooTrainStep, let inputText = workerInput {
      let dims = inputText.split(separator: "x").compactMap { Int($0) }
      let batch = workerBatch ?? 64
      let figures = try zooTrainStepWorker(name: name, input: dims, batch: batch, repetitions: reps,
        minSeconds: options.minSeconds, check: workerCheck)
      if let figures { print(figures.jsonLine) }
      return
    }
    if let kindName = workerTrainStep, let inputText = workerInput {
      let dims = inputText.split(separator: "x").compactMap { Int($0) }
      let figures = try trainStepWorker(modelName: kindName, input: dims, batch: 64, repetitions: reps,
        minSeconds: options.minSeconds, check: workerCheck)
      if let figures { print(figures.jsonLine) }
      return
    }
    let tty = isatty(STDERR_FILENO) != 0
    func progress(_ s: String) { if tty { FileHandle.standardError.write(Data((s + "\n").utf8)) } }
    if buildMode == "debug" {
      FileHandle.standardError.write(Data("warning: this is a debug build; its numbers mean nothing. Run `swift run -c release acon-bench`.\n".utf8))
    }
    if let note = BLAS.kernelNote { FileHandle.standardError.write(Data((note + "\n").utf8)) }
    progress("measuring ceilings...")
    let bandwidth = try Bandwidth(largeMegabytes: quick ? 64 : 256, repetitions: reps, minSeconds: options.minSeconds)
    let memcpy = bandwidth.large
    let square = quick ? 1024 : 2048
    let sgemm = try sgemmGflops(m: square, n: square, k: square, repetitions: reps, minSeconds: options.minSeconds, best: true)
    var results: [BenchResult] = []
    func emit(_ r: BenchResult) throws {
      results.append(r)
      progress("\(r.name) \(r.shape): " + r.metrics.map { "\($0.0)=\(format($0.1))" }.joined(separator: " "))
    }
    let shapes = quick ? [[64, 64, 7, 7], [16, 64, 56, 56]] : [[64, 64, 7, 7], [64, 64, 56, 56], [32, 256, 28, 28]]
    for shape in shapes { try aconWorkloads(shape: shape, bandwidth: bandwidth, options: options, emit: emit) }
    try loweringWorkloads(bandwidth: bandwidth, options: options, emit: emit)
    try graphWorkloads(bandwidth: bandwidth, options: options, emit: emit)
    try convWorkloads(sgemmCeiling: sgemm, options: options, emit: emit)
    try blockWorkloads(bandwidth: bandwidth, sgemmCeiling: sgemm, options: options, emit: emit)
    try aconFamilyWorkloads(bandwidth: bandwidth, options: options, emit: emit)
    try trainStepWorkloads(memcpyGbps: memcpy, options: options, emit: emit)
    try zooTrainStepWorkloads(memcpyGbps: memcpy, options: options, emit: emit)
    try dataWorkloads(options: options, emit: emit)

    if json {
      let obj: [String: Any] = ["build": buildMode, "threads": Threads.count,
        "ceilings": ["memcpy_gbps": memcpy, "memcpy_megabytes": bandwidth.largeMegabytes, "sgemm_gflops": sgemm,
                     "sgemm_square": square],
        "machine": ["cores": Threads.defaultCount, "cpu": cpuModel(), "openblas": BLAS.configuration,
                    "openblas_coretype_env": ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"].map { $0 as Any } ?? NSNull(),
                    "acon_kernels": AconKernels.variant],
        "results": results.map(\.json)]
      let data = try JSONSerialization.data(withJSONObject: obj, options: [.prettyPrinted, .sortedKeys])
      print(String(decoding: data, as: UTF8.self))
    } else {
      print("acon-bench (\(buildMode), \(Threads.count) threads; \(cpuModel()); \(BLAS.configuration); ACON kernels \(AconKernels.variant))")
      print(String(format: "ceilings: memcpy %.1f GB/s (read + write, %d MB buffers), sgemm %.1f GFLOP/s (%d²)", memcpy,
        bandwidth.largeMegabytes, sgemm, square))
      for r in results {
        let shape = r.shape.map(String.init).joined(separator: "x")
        print("\(r.name.padding(toLength: 26, withPad: " ", startingAt: 0)) \(shape.padding(toLength: 14, withPad: " ", startingAt: 0)) "
          + String(format: "%10.3f ms  ", r.medianSeconds * 1000) + r.metrics.map { "\($0.0)=\(format($0.1))" }.joined(separator: " "))
      }
    }
  }
}

func format(_ v: Any) -> String {
  if let d = v as? Double { return d >= 100 ? String(format: "%.0f", d) : String(format: "%.3f", d) }
  return "\(v)"
}

/// The CPU model from /proc/cpuinfo.
func cpuModel() -> String {
  guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return "unknown CPU" }
  for line in text.split(separator: "\n") where line.hasPrefix("model name") {
    return line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown CPU"
  }
  return "unknown CPU"
}
