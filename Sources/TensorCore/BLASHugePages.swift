// BLASHugePages: backs OpenBLAS's own packing buffers with transparent huge pages. OpenBLAS maps
// them itself (mmap) when its threads first run a GEMM, and Linux's default mode (`madvise`) puts
// them on 4 KiB pages; its kernels stream the packed panels of A and B out of them on every call.
// On a 2-core first-generation Zen the same GEMM ([64, 288]·[288, 14400], the seed network's
// conv2) took 14–20 ms with those buffers on 4 KiB pages and 8.5–11 ms on 2 MiB pages
// (docs/acon-bench.md, "Huge pages"). OpenBLAS offers no hook for its buffers, so `BLAS` makes
// OpenBLAS map them (one threaded GEMM), compares the process's anonymous mappings before and
// after, and advises the new ones: MADV_HUGEPAGE for pages faulted later, MADV_COLLAPSE for the
// ones already resident. Both keep the memory's contents, so advising a mapping that is not
// OpenBLAS's costs nothing but its pages' size; where huge pages are off, or off Linux, nothing
// changes.
#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#endif
import CBLAS
import Synchronization

extension BLAS {
  /// The ranges advised so far (whole 2 MiB pages of mappings OpenBLAS made), for tests.
  package static var advisedBufferRanges: [Range<UInt>] { advised.withLock { $0 } }

  private static let advised = Mutex<[Range<UInt>]>([])

  /// Makes OpenBLAS map the buffers of all its threads (one `[256, 256]·[256, 256]` GEMM, which
  /// OpenBLAS splits over every thread it has), then advises the anonymous mappings that appeared
  /// meanwhile as huge pages. Called by `tuned` and after the thread count changes. Linux only;
  /// elsewhere it does nothing.
  static func adviseOpenBLASBuffers() {
    #if os(Linux)
      let before = anonymousMappings()
      let side = 256
      let a = UnsafeMutablePointer<Float>.allocate(capacity: 3 * side * side)
      a.initialize(repeating: 0, count: 3 * side * side)
      gate.withLock { _ in
        // [side, side] = [side, side] · [side, side]; not recorded (it is not the caller's GEMM).
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(side), Int32(side), Int32(side), 1,
          a, Int32(side), a + side * side, Int32(side), 0, a + 2 * side * side, Int32(side))
      }
      a.deinitialize(count: 3 * side * side)
      a.deallocate()
      let fresh = uncovered(anonymousMappings(), by: before)
      var ranges: [Range<UInt>] = []
      for r in fresh {
        guard let whole = TensorStorage.wholeHugePages(in: r) else { continue }
        let p = UnsafeMutableRawPointer(bitPattern: whole.lowerBound), bytes = Int(whole.upperBound - whole.lowerBound)
        // MADV_COLLAPSE (Linux 6.1; 25 in <asm-generic/mman-common.h>, which glibc 2.36 lacks)
        // turns the resident 4 KiB pages into huge pages now and fails, harmlessly, on stretches
        // with none resident; older kernels reject it (EINVAL) and khugepaged collapses later.
        if madvise(p, bytes, MADV_HUGEPAGE) == 0 {
          _ = madvise(p, bytes, 25)
          ranges.append(whole)
        }
      }
      advised.withLock { $0 += ranges }
    #endif
  }

  /// This process's anonymous private read-write mappings, sorted by address, from
  /// `/proc/self/maps` (lines `start-end rw-p offset dev 0` with no path). Empty when the file
  /// cannot be read.
  package static func anonymousMappings() -> [Range<UInt>] {
    #if os(Linux)
      guard let file = fopen("/proc/self/maps", "r") else { return [] }
      defer { fclose(file) }
      var result: [Range<UInt>] = []
      var line: UnsafeMutablePointer<CChar>? = nil
      var capacity = 0
      defer { free(line) }
      while getline(&line, &capacity, file) > 0, let line {
        if let r = anonymousRange(String(cString: line)) { result.append(r) }
      }
      return result.sorted { $0.lowerBound < $1.lowerBound }
    #else
      return []
    #endif
  }

  /// The address range of one `/proc/self/maps` line when it is an anonymous private read-write
  /// mapping (`rw-p`, inode 0, no path such as `[heap]` or `[stack]`), else nil.
  package static func anonymousRange(_ line: String) -> Range<UInt>? {
    let fields = line.split(whereSeparator: \.isWhitespace)
    guard fields.count == 5, fields[1] == "rw-p", fields[4] == "0" else { return nil }
    let bounds = fields[0].split(separator: "-")
    guard bounds.count == 2, let lower = UInt(bounds[0], radix: 16), let upper = UInt(bounds[1], radix: 16),
      lower < upper
    else { return nil }
    return lower..<upper
  }

  /// The parts of the ranges `after` that no range of `before` covers (both sorted or not; the
  /// result is sorted). A mapping that grew keeps only its new part.
  package static func uncovered(_ after: [Range<UInt>], by before: [Range<UInt>]) -> [Range<UInt>] {
    let old = before.sorted { $0.lowerBound < $1.lowerBound }
    var result: [Range<UInt>] = []
    for r in after.sorted(by: { $0.lowerBound < $1.lowerBound }) {
      var start = r.lowerBound
      for o in old where o.upperBound > start && o.lowerBound < r.upperBound {
        if o.lowerBound > start { result.append(start..<o.lowerBound) }
        start = Swift.max(start, o.upperBound)
        if start >= r.upperBound { break }
      }
      if start < r.upperBound { result.append(start..<r.upperBound) }
    }
    return result
  }
}
