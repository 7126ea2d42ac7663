// GemmReplay: runs a recorded sequence of sgemm calls (`BLAS.recordingGemms`) again on buffers
// of its own, with the same shapes, leading dimensions, transposes, scalars and order, through `BLAS.sgemm` (so with
// the same OpenBLAS threads). acon-bench times it beside the training step it was recorded from
// (the step's `gemm_fraction`). Operands that overlapped in the recorded run overlap the same way
// in the replay (one buffer per stretch of memory the calls touched, at the same offsets and the
// same alignment within 64 bytes): a weight read by every per-sample GEMM is one buffer, the
// samples' slices walk through one tensor, a column matrix reused by the next layer is reused
// here. The buffers start with small random values (no NaN, no subnormals), not the step's data.

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

package final class GemmReplay {
  /// The recorded calls, in order.
  package let calls: [BLAS.GemmCall]
  /// Bytes of the buffers the replay allocated (the union of the memory the calls touched).
  package let bytes: Int
  /// Floating-point operations of one replay: Σ 2·m·n·k.
  package let flops: Double

  /// One allocation per stretch of memory: its base pointer, and the recorded address range it stands for.
  private var regions: [(allocation: UnsafeMutableRawPointer, base: UnsafeMutableRawPointer, start: UInt, end: UInt)] = []
  /// Each call's operands in the replay's buffers.
  private var operands: [(a: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>)] = []

  /// Lays out buffers for `calls` (from `BLAS.recordingGemms`) and fills them.
  package init(_ calls: [BLAS.GemmCall]) {
    self.calls = calls
    flops = calls.reduce(0) { $0 + 2 * Double($1.m) * Double($1.n) * Double($1.k) }
    // [start, end) of every operand: from its first float to its last (row-major, rows `lda` or
    // `ldb` floats apart; C contiguous).
    var spans: [(start: UInt, end: UInt)] = []
    for call in calls {
      let floats = call.spans
      spans.append((call.a, call.a + UInt(floats.a * 4)))
      spans.append((call.b, call.b + UInt(floats.b * 4)))
      spans.append((call.c, call.c + UInt(floats.c * 4)))
    }
    // Merge the overlapping spans into regions.
    var merged: [(start: UInt, end: UInt)] = []
    for s in spans.sorted(by: { $0.start < $1.start }) {
      if let last = merged.last, s.start < last.end {
        merged[merged.count - 1].end = max(last.end, s.end)
      } else {
        merged.append(s)
      }
    }
    var total = 0
    var state: UInt32 = 0x9E37_79B9
    for r in merged {
      let size = Int(r.end - r.start), skew = Int(r.start % 64)
      var p: UnsafeMutableRawPointer?
      guard posix_memalign(&p, 64, size + skew) == 0, let allocation = p else {
        fatalError("GemmReplay: cannot allocate \(size + skew) bytes")
      }
      let base = allocation + skew
      // Values in [-1, 1) from a xorshift generator, over the whole region (a recorded address
      // need not be a multiple of 4 from the region's start; in practice it always is).
      let floats = base.bindMemory(to: Float.self, capacity: size / 4)
      for i in 0..<(size / 4) {
        state ^= state << 13
        state ^= state >> 17
        state ^= state << 5
        floats[i] = Float(Int32(bitPattern: state)) / 2_147_483_648
      }
      regions.append((allocation, base, r.start, r.end))
      total += size
    }
    bytes = total
    operands = calls.map { call in
      (UnsafePointer(address(call.a).assumingMemoryBound(to: Float.self)),
       UnsafePointer(address(call.b).assumingMemoryBound(to: Float.self)),
       address(call.c).assumingMemoryBound(to: Float.self))
    }
  }

  /// Where the replay keeps the byte at recorded address `x`.
  private func address(_ x: UInt) -> UnsafeMutableRawPointer {
    // The last region that starts at or before x holds it.
    var lo = 0, hi = regions.count - 1
    while lo < hi {
      let mid = (lo + hi + 1) / 2
      if regions[mid].start <= x { lo = mid } else { hi = mid - 1 }
    }
    precondition(regions[lo].start <= x && x < regions[lo].end, "GemmReplay: an address outside the recorded operands")
    return regions[lo].base + Int(x - regions[lo].start)
  }

  /// The replay's `count` floats that stand for those at recorded address `x` (for tests).
  package func snapshot(_ x: UInt, count: Int) -> [Float] {
    let p = address(x).assumingMemoryBound(to: Float.self)
    return Array(UnsafeBufferPointer(start: p, count: count))
  }

  deinit {
    for r in regions { free(r.allocation) }
  }

  /// Runs every call once, in order, through `BLAS.sgemm(_:a:b:c:)` (each one OpenBLAS call, as recorded).
  package func run() {
    for (call, o) in zip(calls, operands) {
      BLAS.sgemm(call, a: o.a, b: o.b, c: o.c)
    }
  }
}
