// TrainStepComparison: what the train-step rows (the seed networks' and the zoo's) share. In the
// worker process: the step timed beside its GEMMs alone (the sgemm calls of one step, recorded
// through BLAS.recordingGemms and replayed by GemmReplay, timed interleaved with the step: the
// row's `gemm_fraction`). In the parent: the rounds that alternate our step with PyTorch's eager
// and torch.compile twins (each a fresh process), turned into the row's fields.
import Foundation
import NN
import TensorCore

/// A worker's figures for one train step.
struct StepFigures {
  var batch: Int
  var stepSeconds: Double
  /// Peak RSS (MB) of the worker, read before the GEMM replay's buffers exist.
  var peakRSS: Double
  /// The step's sgemm calls replayed alone: seconds per replay, the number of calls, their FLOPs.
  var gemmSeconds: Double?
  var gemmCalls = 0
  var gemmFlops = 0.0
  /// The user-built row: images/s of the built-in network timed beside it.
  var builtInImagesPerSecond: Double?
  /// The memory-bound passes of one step (`MemoryPasses`): bytes moved at least, seconds, passes.
  var memoryBytes: Double?
  var memorySeconds: Double?
  var memoryPasses = 0.0
  /// The same per kind of pass (`MemoryPasses.byKind`), of the same step.
  var memoryByKind: [String: MemoryPasses.Tally] = [:]
  /// memcpy GB/s over 256 MB (the run's large ceiling), measured in the worker right after the
  /// memory-bound passes, for their fraction: a shared VM's memory speed drifts over a run.
  var memcpyGbps: Double?

  /// The worker's line on stdout, read by `TrainStepRounds.addOurs`.
  var jsonLine: String {
    var fields = ["\"images_per_s\": \(Double(batch) / stepSeconds)", "\"peak_rss_mb\": \(peakRSS)", "\"median_s\": \(stepSeconds)"]
    if let g = gemmSeconds { fields += ["\"gemm_s\": \(g)", "\"gemm_calls\": \(gemmCalls)", "\"gemm_flops\": \(gemmFlops)"] }
    if let b = builtInImagesPerSecond { fields.append("\"builtin_images_per_s\": \(b)") }
    if let b = memoryBytes, let t = memorySeconds {
      fields += ["\"memory_bytes\": \(b)", "\"memory_s\": \(t)", "\"memory_passes\": \(memoryPasses)"]
      if let m = memcpyGbps { fields.append("\"memcpy_gbps\": \(m)") }
      let kinds = memoryByKind.sorted { $0.key < $1.key }.map { k, v in
        "\"\(k)\": {\"bytes\": \(v.bytes), \"s\": \(v.seconds), \"passes\": \(v.passes)}"
      }
      fields.append("\"memory_by_kind\": {" + kinds.joined(separator: ", ") + "}")
    }
    return "{" + fields.joined(separator: ", ") + "}"
  }
}

/// Times `step` and its GEMMs alone: two warm-up steps (workspaces grown), the peak RSS read,
/// one step recorded (its sgemm calls: shapes, transposes, scalars, order, operand aliasing),
/// then the step and the replay of those calls (on buffers of their own, through BLAS.sgemm with
/// this process's threads) timed in turn, repetition by repetition (`measureInterleaved`).
func measureStepAndGemms(_ workload: String, batch: Int, repetitions: Int, minSeconds: Double,
  _ step: @escaping () throws -> Void) throws -> StepFigures
{
  do {
    try step()
    try step()
  } catch {
    throw WorkloadFailure(workload: workload, detail: "\(error)")
  }
  let rss = peakRSSMegabytes()
  let (_, calls) = try BLAS.recordingGemms { try step() }
  let replay = GemmReplay(calls)
  let t = try measureInterleaved(workload, repetitions: repetitions, minSeconds: minSeconds, [step, { replay.run() }])
  // The memory-bound passes: three recorded steps, the median step's time (bytes are the same each step).
  var memory: [MemoryPasses] = []
  for _ in 0..<3 {
    let (_, r) = try MemoryPasses.recording { try step() }
    memory.append(r)
  }
  let mid = memory.sorted { $0.seconds < $1.seconds }[1]
  // Their ceiling, now: the run's large memcpy (256 MB) in this process (after the peak RSS was read).
  let memcpy = try memcpyGbps(trafficBytes: 256 << 20, repetitions: 5, minSeconds: minSeconds)
  return StepFigures(batch: batch, stepSeconds: t[0], peakRSS: rss, gemmSeconds: t[1], gemmCalls: calls.count,
    gemmFlops: replay.flops, memoryBytes: Double(mid.bytes), memorySeconds: mid.seconds, memoryPasses: Double(mid.passes),
    memoryByKind: mid.byKind, memcpyGbps: memcpy)
}

/// The rounds of one train-step row: ours, PyTorch eager's and torch.compile's figures per round.
struct TrainStepRounds {
  var workload: String
  var ours: [(ips: Double, rss: Double, seconds: Double, gemmSeconds: Double?, gemmCalls: Double, gemmFlops: Double)] = []
  /// Per round: the memory-bound passes' bytes, seconds and count, and the memcpy ceiling the
  /// worker measured beside them (`StepFigures`; nil from a worker that did not).
  var memory: [(bytes: Double, seconds: Double, passes: Double, memcpyGbps: Double?)] = []
  /// Per round: the memory-bound passes per kind, `[kind: [bytes, s, passes]]`.
  var memoryByKind: [[String: [String: Double]]] = []
  var builtIn: [Double] = []
  var eager: [(ips: Double, rss: Double)] = []
  var compiled: [(ips: Double, rss: Double, compileSeconds: Double)] = []
  /// Set when torch.compile's twin failed; later rounds then skip it.
  var compileError: String?

  init(workload: String) { self.workload = workload }

  /// Reads a worker's line (`StepFigures.jsonLine`).
  mutating func addOurs(status: Int32, output: Data) throws {
    guard status == 0, let any = try JSONSerialization.jsonObject(with: output) as? [String: Any],
      case let obj = any.compactMapValues({ $0 as? Double }), let ips = obj["images_per_s"], let rss = obj["peak_rss_mb"], let sec = obj["median_s"]
    else {
      throw WorkloadFailure(workload: workload, detail: "its timing process exited with status \(status); its message is above")
    }
    ours.append((ips, rss, sec, obj["gemm_s"], obj["gemm_calls"] ?? 0, obj["gemm_flops"] ?? 0))
    if let b = obj["builtin_images_per_s"] { builtIn.append(b) }
    if let b = obj["memory_bytes"], let t = obj["memory_s"] {
      memory.append((b, t, obj["memory_passes"] ?? 0, obj["memcpy_gbps"]))
    }
    if let k = any["memory_by_kind"] as? [String: [String: Double]] { memoryByKind.append(k) }
  }

  /// One round of PyTorch's twins, eager then compiled (unless the compiled one failed before).
  mutating func addPyTorch(model: String, input: String, batch: Int?, options: BenchOptions) throws {
    if let t = try PyTorch.trainStep(model: model, input: input, batch: batch, options: options) {
      eager.append((t.imagesPerSecond, t.peakRSS))
    }
    guard compileError == nil else { return }
    switch try PyTorch.compiledTrainStep(model: model, input: input, batch: batch, options: options) {
    case .timed(let ips, let rss, let seconds)?: compiled.append((ips, rss, seconds))
    case .failed(let message)?:
      compileError = message
      PyTorch.note("\(workload): torch.compile's twin failed (\(message)); the row says so, the run goes on")
    case nil: break
    }
  }

  /// The row's fields (the speed-ups are medians of the rounds' ratios, with their extremes).
  /// `memcpyGbps`: the run's memcpy ceiling, for the memory-bound passes' fraction where a round's
  /// worker measured none of its own.
  func metrics(memcpyGbps: Double) -> [(String, Any)] {
    var m: [(String, Any)] = [("images_per_s", median(ours.map(\.ips))), ("peak_rss_mb", ours.map(\.rss).max()!),
      ("rounds", ours.count)]
    if !builtIn.isEmpty {
      let ratios = zip(ours, builtIn).map { $0.ips / $1 }
      m += [("builtin_images_per_s", median(builtIn)), ("ratio_vs_builtin", median(ratios)),
        ("ratio_min", ratios.min()!), ("ratio_max", ratios.max()!)]
    }
    let gemm = ours.compactMap { o in o.gemmSeconds.map { (fraction: $0 / o.seconds, seconds: $0, calls: o.gemmCalls, flops: o.gemmFlops) } }
    if gemm.count == ours.count, !gemm.isEmpty {
      let fractions = gemm.map(\.fraction), seconds = median(gemm.map(\.seconds))
      m += [("gemm_fraction", median(fractions)), ("gemm_fraction_min", fractions.min()!),
        ("gemm_fraction_max", fractions.max()!), ("gemm_s", seconds), ("gemm_calls", Int(gemm[0].calls)),
        ("gemm_gflops", gemm[0].flops / seconds / 1e9)]
    }
    if memory.count == ours.count, !memory.isEmpty {
      // What the step's memory-bound passes (every layer but Conv2D and Linear, and the graph's
      // operations) move at least, over the time they take, against memcpy: each round's against
      // the memcpy its worker measured right after them.
      let rates = memory.map { $0.bytes / $0.seconds / 1e9 }
      let ceilings = memory.map { $0.memcpyGbps ?? memcpyGbps }
      let fractions = zip(rates, ceilings).map { $0 / $1 }
      m += [("memory_bound_bytes", memory[0].bytes), ("memory_bound_passes", Int(memory[0].passes)),
        ("memory_bound_s", median(memory.map(\.seconds))), ("memory_bound_share", median(zip(memory, ours).map { $0.seconds / $1.seconds })),
        ("memory_bound_gbps", median(rates)), ("memory_bound_memcpy_gbps", median(ceilings)),
        ("memory_bound_fraction", median(fractions)), ("memory_bound_fraction_min", fractions.min()!),
        ("memory_bound_fraction_max", fractions.max()!)]
      if memoryByKind.count == memory.count {
        // Per kind of pass, from the round whose memory-bound time is the median: its share of
        // that time, and its bytes over its time against memcpy.
        let mid = memory.indices.sorted { memory[$0].seconds < memory[$1].seconds }[memory.count / 2]
        var kinds: [String: Any] = [:]
        for (k, v) in memoryByKind[mid] {
          let b = v["bytes"] ?? 0, s = v["s"] ?? 0
          kinds[k] = ["bytes": b, "s": s, "passes": Int(v["passes"] ?? 0), "share_of_memory_bound": s / memory[mid].seconds,
            "fraction": s > 0 ? b / s / 1e9 / ceilings[mid] : 0]
        }
        m.append(("memory_bound_by_kind", kinds))
      }
    }
    if eager.count == ours.count {
      let ratios = zip(ours, eager).map { $0.ips / $1.ips }
      m += [("pytorch_images_per_s", median(eager.map(\.ips))), ("speedup_vs_pytorch", median(ratios)),
        ("speedup_vs_pytorch_min", ratios.min()!), ("speedup_vs_pytorch_max", ratios.max()!),
        ("pytorch_peak_rss_mb", eager.map(\.rss).max()!)]
    }
    if let e = compileError {
      m.append(("pytorch_compile_error", e))
    } else if compiled.count == ours.count {
      let ratios = zip(ours, compiled).map { $0.ips / $1.ips }
      m += [("pytorch_compile_images_per_s", median(compiled.map(\.ips))), ("speedup_vs_compile", median(ratios)),
        ("speedup_vs_compile_min", ratios.min()!), ("speedup_vs_compile_max", ratios.max()!),
        ("pytorch_compile_peak_rss_mb", compiled.map(\.rss).max()!),
        ("pytorch_compile_build_s", compiled.map(\.compileSeconds).max()!)]
    }
    return m
  }
}
