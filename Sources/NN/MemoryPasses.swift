// MemoryPasses: what acon-bench's train-step rows report for the memory-bound part of a step
// (issue 17): while `MemoryPasses.recording` runs, Sequential and Graph time every pass of their
// memory-bound children (every layer but the GEMM layers Conv2D and Linear, and containers,
// which count their own children) and of the graph's adds, concatenations, splits and shuffles,
// and count the bytes each pass must move at least: forward reads its input(s) once and writes
// its output(s) once; backward reads dy and the input once and writes dx once. Bytes over time,
// against memcpy, is how close those passes run to memory speed. A pass inside which other
// passes were recorded (a module that wraps a Graph or a Sequential, as ResNet's blocks do) is
// a container too and counts nothing itself: its inner passes did. A module that runs a GEMM
// itself, outside a container (Meta-ACON's two 1×1 convolutions on [N, C, 1, 1]), counts as one
// memory-bound pass, GEMM included. A module that runs several memory-bound passes of its own
// (ACON-FReLU: its funnel's depthwise convolution, two BatchNorms, a max-pool and the smooth
// maximum) records each of them, and so counts as a container. Off, a pass costs one load of a
// nil static.
#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Times and counts the bytes of a training step's memory-bound passes (see the file comment).
public final class MemoryPasses {
  /// Bytes the recorded passes read and wrote (the minimum each pass needs: every tensor once).
  public private(set) var bytes = 0
  /// Seconds the recorded passes took, wall clock.
  public private(set) var seconds = 0.0
  /// The passes recorded.
  public private(set) var passes = 0

  /// What one kind of pass moved and took.
  public struct Tally: Sendable {
    /// Bytes read and written, at least.
    public var bytes = 0
    /// Seconds, wall clock.
    public var seconds = 0.0
    /// Passes recorded.
    public var passes = 0
  }

  /// The same figures per kind of pass: a layer's type name with `.forward` or `.backward`
  /// (`"BatchNorm2D.forward"`, `"DepthwiseConv2D.backward"`; `"BatchNorm2D+ReLU.forward"` for a
  /// batch norm that a `Sequential` runs fused with its ReLU), or the graph's own operations
  /// (`"concat.forward"`, `"split.backward"`, `"shuffle.forward"`, `"add.backward"`: gradients
  /// summed where a value feeds several nodes).
  public private(set) var byKind: [String: Tally] = [:]

  nonisolated(unsafe) static var active: MemoryPasses?
  /// Whether a pass was recorded since the innermost running `measure` began.
  private var innerPass = false

  private init() {}

  /// Runs `body` (one or more training steps, on this thread) and returns what its memory-bound
  /// passes moved and took. Not reentrant.
  public static func recording<T>(_ body: () throws -> T) rethrows -> (T, MemoryPasses) {
    let r = MemoryPasses()
    active = r
    defer { active = nil }
    return (try body(), r)
  }

  /// Whether a child's passes count: not a container (its children count) and not a GEMM layer.
  static func counts(_ m: Module) -> Bool {
    !(m is Sequential || m is Graph || m is Conv2D || m is Linear)
  }

  /// Runs `body`, adding its time and `elements(result)` Floats of traffic when recording, under
  /// `kind` (see `byKind`).
  @inline(__always)
  package static func measure<T>(_ kind: @autoclosure () -> String, _ body: () throws -> T, elements: (T) -> Int) rethrows -> T {
    guard let r = active else { return try body() }
    r.innerPass = false
    // For the enclosing pass, if any: this one (or its inner ones) counted.
    defer { r.innerPass = true }
    let t0 = now()
    let v = try body()
    let dt = now() - t0
    guard !r.innerPass else { return v }  // a container: its inner passes counted
    let b = elements(v) * MemoryLayout<Float>.size
    r.seconds += dt
    r.bytes += b
    r.passes += 1
    r.byKind[kind(), default: Tally()].add(bytes: b, seconds: dt)
    return v
  }

  private static func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
  }
}

extension MemoryPasses.Tally {
  mutating func add(bytes b: Int, seconds dt: Double) {
    bytes += b
    seconds += dt
    passes += 1
  }
}
