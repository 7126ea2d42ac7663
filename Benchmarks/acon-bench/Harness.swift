// Harness: timing (warm-up, then the median of K repetitions, each long enough to time),
// the machine's ceilings (memcpy bandwidth and sgemm GFLOP/s), results and their JSON form.
import CCopyKernels
import Foundation
import TensorCore
import TestSupport

/// One benchmark result: a name, a shape, the median time, and metrics.
struct BenchResult {
  var name: String
  var shape: [Int]
  var medianSeconds: Double
  var metrics: [(String, Any)]

  var json: [String: Any] {
    var d: [String: Any] = ["name": name, "shape": shape, "median_s": medianSeconds]
    for (k, v) in metrics { d[k] = v }
    return d
  }
}

/// Times `timed` as Caffe and llm.c benchmarks do: warm up, calibrate an inner count so that one
/// repetition takes at least `minSeconds`, then report the median seconds per call (with `best`,
/// the fastest repetition's: what a ceiling is, the most the machine did). An error
/// thrown by `timed` (warm-up or timed) ends the measurement as a `WorkloadFailure` that names
/// `workload`: a failing call is never timed as if it had worked.
func measure(_ workload: String, repetitions: Int, minSeconds: Double, best: Bool = false, _ timed: () throws -> Void) throws -> Double {
  var calls = 0
  func body() throws {
    try timed()
    calls += 1
    if let f = injectedFailure, calls > 1, workload.hasPrefix(f) { throw InjectedFailure() }
  }
  do {
    return try timing(repetitions: repetitions, minSeconds: minSeconds, best: best, body)
  } catch let e as WorkloadFailure {
    throw e
  } catch {
    throw WorkloadFailure(workload: workload, detail: "\(error)")
  }
}

/// The same for a body that cannot fail (the form of the workloads written before errors failed
/// the run; a body that can throw takes the named, throwing form above).
func measure(repetitions: Int, minSeconds: Double, best: Bool = false, _ body: () -> Void) -> Double {
  timing(repetitions: repetitions, minSeconds: minSeconds, best: best, body)
}

/// Warm-up, calibration and the median (or best) of the repetitions, seconds per call.
private func timing(repetitions: Int, minSeconds: Double, best: Bool, _ body: () throws -> Void) rethrows -> Double {
  try body()  // warm-up
  let inner = try calls(lasting: minSeconds, body)
  var samples: [Double] = []
  for _ in 0..<max(1, repetitions) { samples.append(try time(inner, body) / Double(inner)) }
  samples.sort()
  return best ? samples[0] : samples[samples.count / 2]
}

/// `--inject-failure PREFIX` (hidden): the timed bodies of workloads whose name starts with it
/// throw `InjectedFailure` from their second call on, so that a test can see the run fail.
nonisolated(unsafe) var injectedFailure: String?

struct InjectedFailure: Error, CustomStringConvertible {
  var description: String { "a failure injected by --inject-failure" }
}

/// Fails the whole run: a timed workload threw, or its child process failed.
struct WorkloadFailure: Error, CustomStringConvertible {
  var workload: String
  var detail: String
  var description: String { "\(workload): failed (\(detail)); no figure is reported for it" }
}

/// The number of calls of `body` that lasts at least `minSeconds` (calibration).
private func calls(lasting minSeconds: Double, _ body: () throws -> Void) rethrows -> Int {
  var inner = 1
  while true {
    let t = try time(inner, body)
    if t >= minSeconds || inner >= 1 << 20 { return inner }
    inner = max(inner * 2, Int(Double(inner) * minSeconds / max(t, 1e-9) * 1.2))
  }
}

/// `measure` for several bodies timed in turn: each warmed up and calibrated, then every
/// repetition times each body once, one after the other, so that a slow spell of a shared machine
/// hits all of them; the median seconds per call of each. `--inject-failure` applies to the first
/// body, as `measure` applies it.
func measureInterleaved(_ workload: String, repetitions: Int, minSeconds: Double, _ bodies: [() throws -> Void]) throws
  -> [Double]
{
  var firstCalls = 0
  let wrapped: [() throws -> Void] = bodies.enumerated().map { i, body in
    guard i == 0 else { return body }
    return {
      try body()
      firstCalls += 1
      if let f = injectedFailure, firstCalls > 1, workload.hasPrefix(f) { throw InjectedFailure() }
    }
  }
  do {
    for body in wrapped { try body() }  // warm-up
    let inner = try wrapped.map { try calls(lasting: minSeconds, $0) }
    var samples = [[Double]](repeating: [], count: wrapped.count)
    for _ in 0..<max(1, repetitions) {
      for (i, body) in wrapped.enumerated() { samples[i].append(try time(inner[i], body) / Double(inner[i])) }
    }
    return samples.map(median)
  } catch let e as WorkloadFailure {
    throw e
  } catch {
    throw WorkloadFailure(workload: workload, detail: "\(error)")
  }
}

private func time(_ n: Int, _ body: () throws -> Void) rethrows -> Double {
  let start = DispatchTime.now().uptimeNanoseconds
  for _ in 0..<n { try body() }
  return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

/// Prevents the optimiser from removing work whose result is otherwise unused.
@inline(never) func blackHole<T>(_ x: T) { withExtendedLifetime(x) {} }

/// Memory bandwidth: a copy of `trafficBytes / 2` bytes (so `trafficBytes` read plus written),
/// counting the bytes read plus the bytes written, in GB/s, from the fastest of the repetitions
/// of two copies: glibc's memcpy, and a copy with streaming (non-temporal) stores
/// (`acon_copy_streaming`). glibc only streams above a very large threshold (99 MB here), and
/// our own kernels stream past the caches, so the ceiling is the faster of the two: a fraction
/// above 1 would only mean the ceiling was too low. Copies in `Threads.count` parallel chunks,
/// since the elementwise kernels it bounds also run on every thread. Repeated on the same
/// buffers, as a workload is: what fits in a cache stays there on both sides.
func memcpyGbps(trafficBytes: Int, repetitions: Int, minSeconds: Double) throws -> Double {
  let n = max(1, trafficBytes / 8)
  let a = Tensor(zeros: [n]), b = Tensor(zeros: [n])
  for i in stride(from: 0, to: n, by: 1024) { a.data[i] = Float(i) }
  let src = UncheckedSendable(a.data), dst = UncheckedSendable(b.data)
  let plain = try measure("memcpy \(2 * n * 4) bytes", repetitions: repetitions, minSeconds: minSeconds, best: true) {
    parallelFor(Threads.count) { r in
      for w in r {
        let lo = n * w / Threads.count, hi = n * (w + 1) / Threads.count
        memcpy(dst.value + lo, src.value + lo, (hi - lo) * 4)
      }
    }
  }
  var seconds = plain
  if acon_copy_has_streaming_stores() {
    let streaming = try measure("streaming copy \(2 * n * 4) bytes", repetitions: repetitions, minSeconds: minSeconds,
      best: true) {
      parallelFor(Threads.count) { r in
        for w in r {
          let lo = n * w / Threads.count, hi = n * (w + 1) / Threads.count
          acon_copy_streaming(dst.value + lo, src.value + lo, hi - lo)
          acon_copy_fence()
        }
      }
    }
    seconds = min(plain, streaming)
  }
  blackHole(b.data[n / 2])
  return Double(2 * n * 4) / seconds / 1e9
}

/// The bandwidth ceilings of one run: memcpy over a buffer far beyond the last-level cache (the
/// machine's DRAM figure), and memcpy of exactly a workload's minimum traffic (its own ceiling:
/// a tensor that stays in a cache is bounded by the cache's bandwidth, not by DRAM's), measured
/// right after each workload that it bounds; a byte count's ceiling is the best of its
/// measurements so far, so that a slow spell of a shared machine does not lower it.
final class Bandwidth {
  /// memcpy GB/s over `largeMegabytes` (read + write).
  let large: Double
  let largeMegabytes: Int
  private let repetitions: Int, minSeconds: Double
  private var sameFootprint: [Int: Double] = [:]

  init(largeMegabytes: Int, repetitions: Int, minSeconds: Double) throws {
    self.largeMegabytes = largeMegabytes
    self.repetitions = repetitions
    self.minSeconds = minSeconds
    large = try memcpyGbps(trafficBytes: largeMegabytes * 2_000_000, repetitions: repetitions, minSeconds: 0.05)
  }

  /// memcpy GB/s when the copy moves `trafficBytes` (read + write) in all, as the workload does.
  func ceiling(trafficBytes: Double) throws -> Double {
    let key = Int(trafficBytes)
    let v = max(sameFootprint[key] ?? 0, try memcpyGbps(trafficBytes: key, repetitions: repetitions, minSeconds: minSeconds))
    sameFootprint[key] = v
    return v
  }

  /// The row's bandwidth figures for a workload that moves `trafficBytes` in `seconds`:
  /// `gbps` (its own throughput), `memcpy_same_footprint_gbps` (its ceiling), `fraction`
  /// (of that ceiling) and `memcpy_large_gbps` (the DRAM figure, for reference).
  func metrics(trafficBytes: Double, seconds: Double, gbpsKey: String, fractionKey: String) throws -> [(String, Any)] {
    try metrics(passBytes: [trafficBytes], seconds: seconds, gbpsKey: gbpsKey, fractionKey: fractionKey)
  }

  /// The same for a workload of several passes over memory one after another (a forward pass,
  /// then a backward pass), `passBytes[i]` the minimum traffic of pass i: its ceiling is the time
  /// of one same-footprint memcpy per pass (each pass's data may fit a cache that all of them
  /// together would not), so the fraction stays ≤ 1 for a workload that moves no more than that.
  func metrics(passBytes: [Double], seconds: Double, gbpsKey: String, fractionKey: String) throws -> [(String, Any)] {
    let total = passBytes.reduce(0, +)
    var ceilingSeconds = 0.0
    for bytes in passBytes { ceilingSeconds += bytes / (try ceiling(trafficBytes: bytes) * 1e9) }
    let gbps = total / seconds / 1e9
    return [(gbpsKey, gbps), ("memcpy_same_footprint_gbps", total / ceilingSeconds / 1e9),
      (fractionKey, ceilingSeconds / seconds), ("memcpy_large_gbps", large)]
  }
}

/// sgemm GFLOP/s on an m×k by k×n product (2·m·n·k flops), from the fastest repetition with
/// `best` (for a ceiling) or the median.
func sgemmGflops(m: Int, n: Int, k: Int, transA: Bool = false, transB: Bool = false, repetitions: Int, minSeconds: Double,
  best: Bool = false) throws -> Double {
  let a = Tensor(zeros: [m * k]), b = Tensor(zeros: [k * n]), c = Tensor(zeros: [m * n])
  var rng = SeededGenerator(seed: 7)
  a.fillUniform(-1, 1, using: &rng)
  b.fillUniform(-1, 1, using: &rng)
  let s = try measure("sgemm \(m)x\(n)x\(k)", repetitions: repetitions, minSeconds: minSeconds, best: best) {
    BLAS.sgemm(transA: transA, transB: transB, m: m, n: n, k: k, a: a.data, b: b.data, c: c.data)
  }
  return 2 * Double(m) * Double(n) * Double(k) / s / 1e9
}

/// Peak resident set size of this program in MB: VmHWM from /proc/self/status. (getrusage's
/// ru_maxrss is no good in a child process: Linux carries the parent's high-water mark across
/// the spawn and exec into it.)
func peakRSSMegabytes() -> Double {
  guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return .nan }
  for line in text.split(separator: "\n") where line.hasPrefix("VmHWM:") {
    let kb = line.split(separator: " ").compactMap { Double($0) }.first ?? .nan
    return kb / 1024
  }
  return .nan
}

/// Fails the whole run: a workload disagreed with its reference.
struct ReferenceMismatch: Error, CustomStringConvertible {
  var workload: String
  var detail: String
  var description: String { "\(workload): result differs from its reference (\(detail)); not timed" }
}

/// Checks `got` against `want` with a relative-plus-absolute tolerance.
func check(_ workload: String, _ got: UnsafePointer<Float>, _ want: [Double], rtol: Double, atol: Double) throws {
  let values = Array(UnsafeBufferPointer(start: got, count: want.count))
  if let m = compareClose(values, want, rtol: rtol, atol: atol) {
    throw ReferenceMismatch(workload: workload, detail: m.description)
  }
}

/// Runs this benchmark binary again as a worker process with `arguments`, its standard error
/// passed through; returns its exit status and standard output. (Train steps run in fresh
/// processes so that each one's peak resident memory is its own.)
func runSelfAsWorker(_ arguments: [String]) throws -> (Int32, Data) {
  let exe = URL(fileURLWithPath: CommandLine.arguments[0]).path
  let p = Process()
  p.executableURL = URL(fileURLWithPath: exe.hasPrefix("/") ? exe : FileManager.default.currentDirectoryPath + "/" + exe)
  p.arguments = arguments
  let pipe = Pipe()
  p.standardOutput = pipe
  try p.run()
  let data = pipe.fileHandleForReading.readDataToEndOfFile()
  p.waitUntilExit()
  return (p.terminationStatus, data)
}
