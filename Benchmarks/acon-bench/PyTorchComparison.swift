// PyTorchComparison: runs the PyTorch twins in Benchmarks/pytorch/ as child processes (one per
// workload, so that each has a fresh process and its own peak memory) with the same threads and
// repetitions, and reads their JSON. Whether the Python has torch is probed once: without it the
// rows carry no PyTorch figures (a note on stderr says why); with it, a failing script fails the
// benchmark with its message.
import Foundation
import Synchronization
import TensorCore

enum PyTorch {
  /// The probe's answer, once per run (the benchmark runs its workloads on one thread).
  nonisolated(unsafe) private static var probed: Bool?

  /// Whether `options.python` runs and imports torch (never under --quick or with "none");
  /// when it doesn't, a note on stderr says why.
  static func available(_ options: BenchOptions) -> Bool {
    guard options.python != "none", !options.quick else { return false }
    if let p = probed { return p }
    let result: Bool
    do {
      let (status, _, err, _) = try run(options.python, ["-c", "import torch"])
      if status == 0 {
        result = true
      } else {
        let why = err.contains("No module named") ? "\(options.python) has no torch module" : "\(options.python) -c 'import torch' failed (status \(status))"
        note("\(why); the rows carry no PyTorch comparison (--python PATH names a Python with torch)")
        result = false
      }
    } catch {
      note("could not start \(options.python) (\(error)); the rows carry no PyTorch comparison")
      result = false
    }
    probed = result
    return result
  }

  /// The path of a script in Benchmarks/pytorch/.
  static func script(_ name: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .appendingPathComponent("pytorch/\(name)").path
  }

  /// Runs `python script arguments` and returns its JSON object (the last line of its stdout), or
  /// throws a `WorkloadFailure` naming `workload` with the script's last line of stderr.
  static func runScript(_ name: String, _ arguments: [String], workload: String, options: BenchOptions) throws -> [String: Any] {
    let path = script(name)
    let (status, out, err, _) = try run(options.python, [path] + arguments)
    let lastLine = out.split(separator: "\n").last.map(String.init) ?? ""
    guard status == 0, let obj = try? JSONSerialization.jsonObject(with: Data(lastLine.utf8)) as? [String: Any] else {
      let why = err.split(separator: "\n").last.map(String.init) ?? "no message"
      throw WorkloadFailure(workload: workload,
        detail: "PyTorch's twin \(path) exited with status \(status): \(why) (--python none skips the comparison)")
    }
    return obj
  }

  /// Runs a child process; stdout is read through a pipe, stderr through a temporary file (so
  /// that neither can fill up and block the child while the other is read).
  /// With `timeout`, a child still running after that many seconds is terminated (SIGTERM) and
  /// `timedOut` is true.
  static func run(_ executable: String, _ arguments: [String], timeout: Double? = nil) throws
    -> (status: Int32, out: String, err: String, timedOut: Bool)
  {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = [executable] + arguments
    let errURL = FileManager.default.temporaryDirectory.appendingPathComponent("acon-bench-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).err")
    guard FileManager.default.createFile(atPath: errURL.path, contents: nil) else {
      throw WorkloadFailure(workload: "PyTorch comparison", detail: "cannot create \(errURL.path)")
    }
    defer { try? FileManager.default.removeItem(at: errURL) }
    let errHandle = try FileHandle(forWritingTo: errURL)
    defer { try? errHandle.close() }
    let out = Pipe()
    p.standardOutput = out
    p.standardError = errHandle
    try p.run()
    let expired = Mutex(false)
    let watchdog = DispatchWorkItem {
      if p.isRunning {
        expired.withLock { $0 = true }
        p.terminate()
      }
    }
    if let timeout { DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: watchdog) }
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    watchdog.cancel()
    let err = (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
    return (p.terminationStatus, String(decoding: data, as: UTF8.self), err, expired.withLock { $0 })
  }

  static func note(_ s: String) { FileHandle.standardError.write(Data("note: \(s)\n".utf8)) }

  /// PyTorch's seconds for ACON-C (`layer` "aconc") or Meta-ACON-C ("metaaconc") forward +
  /// backward on `shape`, eager and compiled (Benchmarks/pytorch/acon.py), or nil without torch.
  static func acon(layer: String, shape: [Int], options: BenchOptions) throws -> (eager: Double, compile: Double)? {
    guard available(options) else { return nil }
    let workload = "pytorch.\(layer).fwdbwd \(shape)"
    let obj = try runScript("acon.py", ["--layer", layer, "--shape", shape.map(String.init).joined(separator: "x"),
      "--threads", String(Threads.count), "--repetitions", String(options.repetitions),
      "--min-seconds", String(options.minSeconds)], workload: workload, options: options)
    guard let eager = obj["eager_s"] as? Double, let compiled = obj["compile_s"] as? Double else {
      throw WorkloadFailure(workload: workload, detail: "acon.py printed no eager_s and compile_s")
    }
    return (eager, compiled)
  }

  /// PyTorch eager's images/s and peak RSS (MB, VmHWM of its own fresh process) for one train
  /// step (Benchmarks/pytorch/train_step.py), or nil without torch. `batch`: the zoo rows' (the
  /// seed rows' is always 64).
  static func trainStep(model: String, input: String, batch: Int? = nil, options: BenchOptions) throws
    -> (imagesPerSecond: Double, peakRSS: Double)?
  {
    guard available(options) else { return nil }
    let workload = "pytorch.train_step.\(model) \(input)"
    let obj = try runScript("train_step.py", trainStepArguments(model: model, input: input, batch: batch, options: options),
      workload: workload, options: options)
    guard let ips = obj["images_per_s"] as? Double, let rss = obj["peak_rss_mb"] as? Double else {
      throw WorkloadFailure(workload: workload, detail: "train_step.py printed no images_per_s and peak_rss_mb")
    }
    return (ips, rss)
  }

  private static func trainStepArguments(model: String, input: String, batch: Int?, options: BenchOptions) -> [String] {
    ["--model", model, "--input", input, "--threads", String(Threads.count), "--repetitions", String(options.repetitions)]
      + (batch.map { ["--batch", String($0)] } ?? [])
  }

  /// What torch.compile's twin of a train step gave.
  enum CompiledStep {
    /// Images/s of the compiled step, its process's peak RSS (MB), and the seconds of its first
    /// step, the compilation (not in the images/s).
    case timed(imagesPerSecond: Double, peakRSS: Double, compileSeconds: Double)
    /// The compilation failed, timed out, or disagreed with eager (the script's message).
    case failed(String)
  }

  /// torch.compile's twin of one train step (train_step.py --compile, a fresh process), or nil
  /// without torch or with `--compile-timeout 0`. A failure of the twin is returned, not thrown:
  /// the row says so and the run goes on. The script bounds the compilation by
  /// `options.compileTimeout`; this process kills it when it has not finished
  /// `compileTimeout + 900` s after its start (the timing after the compilation included).
  static func compiledTrainStep(model: String, input: String, batch: Int? = nil, options: BenchOptions) throws
    -> CompiledStep?
  {
    guard options.compileTimeout > 0, available(options) else { return nil }
    let arguments = [script("train_step.py")] + trainStepArguments(model: model, input: input, batch: batch, options: options)
      + ["--compile", "--compile-timeout", String(options.compileTimeout)]
    let (status, out, err, timedOut) = try run(options.python, arguments, timeout: options.compileTimeout + 900)
    let obj = out.split(separator: "\n").last.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    if status == 0, let obj, let ips = obj["images_per_s"] as? Double, let rss = obj["peak_rss_mb"] as? Double,
      let build = obj["compile_build_s"] as? Double
    {
      return .timed(imagesPerSecond: ips, peakRSS: rss, compileSeconds: build)
    }
    if timedOut { return .failed("killed after \(Int(options.compileTimeout + 900)) s") }
    if let message = obj?["error"] as? String { return .failed(message) }
    let why = err.split(separator: "\n").last.map(String.init) ?? "no message"
    return .failed("train_step.py --compile exited with status \(status): \(why)")
  }
}
