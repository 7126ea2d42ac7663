// BLAS: the one file that calls OpenBLAS (CBLAS) and LAPACKE. It works out leading dimensions
// for contiguous row-major matrices, so layers never do (Caffe's caffe_cpu_gemm habit), cuts a
// long reduction into a small product into pieces that OpenBLAS runs faster (`reductionChunk`), and lets
// one call into OpenBLAS run at a time: OpenBLAS has a history of wrong results when several
// application threads call it at once (OpenMathLib/OpenBLAS#1755, #2126), and a check of ours
// that trained two networks side by side on two threads once saw a summed gradient go wrong
// (never again in 55 runs; the cause was not pinned down). OpenBLAS parallelises each call
// itself, so serialising callers costs little; an uncontended lock costs nanoseconds.
// It can also record the sgemm calls made while a closure runs (`recordingGemms`), for
// acon-bench's GEMM-alone timing of a training step; off, that costs one nil check under the
// lock that every call takes anyway.
import CBLAS
import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// Row-major matrix routines over contiguous buffers, backed by OpenBLAS.
public enum BLAS {
  /// `C = alpha · op(A) · op(B) + beta · C`, all row-major and contiguous.
  ///
  /// - Parameters:
  ///   - transA: `op(A) = Aᵀ`; A is then stored `[K, M]`, else `[M, K]`.
  ///   - transB: `op(B) = Bᵀ`; B is then stored `[N, K]`, else `[K, N]`.
  ///   - m: rows of `op(A)` and of C.
  ///   - n: columns of `op(B)` and of C.
  ///   - k: columns of `op(A)`, rows of `op(B)`; with `k == 0`, C becomes `beta · C`.
  ///   - alpha: scales the product.
  ///   - a: A, `[M, K]` (or `[K, M]` with `transA`).
  ///   - b: B, `[K, N]` (or `[N, K]` with `transB`).
  ///   - beta: scales the old C; 1 accumulates into it.
  ///   - c: `[M, N]`. With `beta == 0` its old contents are ignored (NaN included).
  public static func sgemm(
    transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
    alpha: Float = 1, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
    beta: Float = 0, c: UnsafeMutablePointer<Float>
  ) {
    _ = tuned
    if m == 0 || n == 0 { return }
    if k == 0 {
      if beta == 0 { c.update(repeating: 0, count: m * n) } else { for i in 0..<(m * n) { c[i] *= beta } }
      return
    }
    let lda = transA ? m : k
    let ldb = transB ? k : n
    let chunk = reductionChunk(transA: transA, transB: transB, m: m, n: n, k: k)
    gate.withLock { recording in
      // With pieces of `chunk` columns: C = alpha·A[:, 0..<chunk]·B[:, 0..<chunk]ᵀ + beta·C, then
      // C += alpha·A[:, chunk..<2·chunk]·B[:, chunk..<2·chunk]ᵀ, … (one piece, the whole call,
      // unless `reductionChunk` cuts it; only NT calls are cut, where a piece of A or B is the same
      // rows starting `k0` floats further on; the other layouts' offsets are never exercised)
      var k0 = 0
      while k0 < k {
        let kc = Swift.min(chunk, k - k0), chunkBeta = k0 == 0 ? beta : 1
        let ak = a + (transA ? k0 * lda : k0), bk = b + (transB ? k0 : k0 * ldb)
        let piece = GemmCall(transA: transA, transB: transB, m: m, n: n, k: kc, lda: lda, ldb: ldb, alpha: alpha,
          beta: chunkBeta, a: UInt(bitPattern: ak), b: UInt(bitPattern: bk), c: UInt(bitPattern: c))
        issue(piece, a: ak, b: bk, c: c, recording: &recording)
        k0 += kc
      }
    }
  }

  /// The reduction length of each OpenBLAS call that `sgemm` makes of one call of its own: `k`
  /// (one call) except for a long reduction into a small C of `A[M, K] · B[N, K]ᵀ`: the weight
  /// gradient of a layer with few channels and taps over many columns, such as a first layer on 3
  /// channels (`[Cout, Cin·KH·KW]` over N·P columns: the seed network's and ShuffleNetV2's, [32 or
  /// 24, 27] over 65,536), and any other call of that form (a Winograd or grouped layer of few
  /// channels over many tiles or positions, a linear layer with few outputs over many inputs).
  /// OpenBLAS 0.3.21 runs such a call on its threads, which split the 27 columns of C, at 36–50
  /// GFLOP/s here (twice the time of the layer's forward GEMM); cut into reductions of at most
  /// 10⁶ / (M·N) columns, each piece goes to its small-matrix kernel (which its SkylakeX-class
  /// kernels take for this layout when M·N·K ≤ 10⁶, M·N ≤ 1200 and K ≥ 32), which runs the
  /// pieces one after the other on one thread at 67–86 GFLOP/s (two threads, medians of 31:
  /// [32, 27] over 65,536 columns in 1.38–1.49 ms against 2.25–2.52, [24, 27] in 0.98–1.26
  /// against 2.37). The pieces are as even as a multiple of 16 columns allows (65,536 columns
  /// into [32, 27]: 56 of 1,152 and one of 1,024), so none is short, and they add into C in
  /// order: the sum is the same whatever the thread count, though not the bits of one call.
  /// Splitting the rows of a larger C as well ([64, 27] as two [32, 27]) gained nothing. Other
  /// OpenBLAS builds may lack the small-matrix kernel; there the pieces take the threaded path,
  /// each as fast as the whole (measured here: pieces of 2048 and 4096 columns, which this build
  /// runs threaded, ran as fast as the one call).
  package static func reductionChunk(transA: Bool, transB: Bool, m: Int, n: Int, k: Int) -> Int {
    guard !transA, transB, m > 0, n > 0, m * n <= smallKernelMaximumProduct else { return k }
    let limit = 1_000_000 / (m * n) / 128 * 128  // ≥ 768 columns
    guard k > limit else { return k }
    let pieces = (k + limit - 1) / limit, even = (k + pieces - 1) / pieces
    return (even + 15) / 16 * 16  // a multiple of 16, ≤ limit (itself a multiple of 128)
  }

  /// The largest M·N of an `A · Bᵀ` product that `reductionChunk` cuts (see there).
  package static let smallKernelMaximumProduct = 1200

  /// Runs `call` (as `recordingGemms` recorded it: one OpenBLAS call, its leading dimensions
  /// included) on the operands `a`, `b`, `c`, for `GemmReplay`; recorded in turn while
  /// `recordingGemms` runs. A call with a zero size (never recorded) does nothing.
  package static func sgemm(_ call: GemmCall, a: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>) {
    _ = tuned
    guard call.m > 0, call.n > 0, call.k > 0 else { return }
    var replayed = call
    (replayed.a, replayed.b, replayed.c) = (UInt(bitPattern: a), UInt(bitPattern: b), UInt(bitPattern: c))
    gate.withLock { recording in issue(replayed, a: a, b: b, c: c, recording: &recording) }
  }

  /// The one call into OpenBLAS's sgemm, made under `gate`: `call` (whose addresses are those of
  /// `a`, `b`, `c`) is appended to `recording` while `recordingGemms` runs, then run.
  private static func issue(
    _ call: GemmCall, a: UnsafePointer<Float>, b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>,
    recording: inout [GemmCall]?
  ) {
    if recording != nil { recording!.append(call) }
    var beta = call.beta
    if beta == 0 && clearsC {
      clear(c, count: call.m * call.n)
      beta = 1
    }
    cblas_sgemm(
      CblasRowMajor, call.transA ? CblasTrans : CblasNoTrans, call.transB ? CblasTrans : CblasNoTrans,
      Int32(call.m), Int32(call.n), Int32(call.k), call.alpha, a, Int32(call.lda), b, Int32(call.ldb), beta,
      c, Int32(call.n))
  }

  /// Whether a `beta == 0` call zeroes C itself and then asks OpenBLAS to add into it (`beta = 1`)
  /// rather than letting OpenBLAS zero it. OpenBLAS 0.3.21 zeroes C before its kernel adds the
  /// product into it, and on every x86-64 kernel family but its AVX-512 ones (SkylakeX, Cooperlake,
  /// Sapphire Rapids) it does so one float at a time (`gemm_beta.S`, scalar `movss` stores). On a
  /// 2-core Zen (AVX2) that loop was 11.7% of ShuffleNetV2's training step (`perf`), more than
  /// all its BatchNorm passes. The AVX-512 families keep their vector loop and their small-matrix
  /// kernels for `beta == 0`, which never read C. The product is the same either way: OpenBLAS adds
  /// its kernel's result into a zeroed C in both cases.
  package nonisolated(unsafe) static var clearsC: Bool = {
    !["skylakex", "cooperlake", "sapphirerapids"].contains(coreName.lowercased())
  }()

  /// Zeroes `c[0..<count]`: on this thread up to 64 Ki floats, past that split over `parallelFor`
  /// (each chunk a plain memset; no sgemm runs inside it).
  private static func clear(_ c: UnsafeMutablePointer<Float>, count: Int) {
    let chunk = 1 << 16
    if count <= chunk {
      c.update(repeating: 0, count: count)
      return
    }
    let base = UncheckedSendable(c)
    parallelFor((count + chunk - 1) / chunk, minimumChunk: 1) { blocks in
      let lo = blocks.lowerBound * chunk, hi = Swift.min(count, blocks.upperBound * chunk)
      (base.value + lo).update(repeating: 0, count: hi - lo)
    }
  }

  /// One call into OpenBLAS at a time (see the file's header); while `recordingGemms` runs, it
  /// also holds the sgemm calls recorded so far.
  static let gate = Mutex<[GemmCall]?>(nil)

  /// One `sgemm` call that reached OpenBLAS, as `recordingGemms` saw it: its shape, transposes
  /// and scalars, and the addresses of its operands, so that a replay can give operands that
  /// shared memory in the recorded run shared memory again. A is `[M, K]` (`[K, M]` transposed)
  /// with rows `lda` floats apart, B `[K, N]` (`[N, K]`) with rows `ldb` apart, C `[M, N]`
  /// contiguous; the leading dimensions exceed the row lengths only in the pieces of a split
  /// reduction (`reductionChunk`).
  package struct GemmCall: Equatable, Sendable {
    package var transA: Bool, transB: Bool
    package var m: Int, n: Int, k: Int
    package var lda: Int, ldb: Int
    package var alpha: Float, beta: Float
    package var a: UInt, b: UInt, c: UInt

    /// A call on contiguous operands unless `lda`/`ldb` say otherwise.
    package init(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, lda: Int? = nil, ldb: Int? = nil,
      alpha: Float, beta: Float, a: UInt, b: UInt, c: UInt)
    {
      (self.transA, self.transB, self.m, self.n, self.k, self.alpha, self.beta) = (transA, transB, m, n, k, alpha, beta)
      (self.lda, self.ldb) = (lda ?? (transA ? m : k), ldb ?? (transB ? k : n))
      (self.a, self.b, self.c) = (a, b, c)
    }

    /// The floats from A's first to its last element, B's, and C's.
    package var spans: (a: Int, b: Int, c: Int) {
      let (aRows, aCols) = transA ? (k, m) : (m, k), (bRows, bCols) = transB ? (n, k) : (k, n)
      return ((aRows - 1) * lda + aCols, (bRows - 1) * ldb + bCols, m * n)
    }

    /// The call without its addresses, e.g. `"NT m64 n10 k1024 b0"` (N: as stored, T: transposed;
    /// `b` is beta; `lda`/`ldb` only where rows are not contiguous), for comparing call sequences.
    package var shape: String {
      let contiguous = (lda: transA ? m : k, ldb: transB ? k : n)
      return "\(transA ? "T" : "N")\(transB ? "T" : "N") m\(m) n\(n) k\(k) b\(beta == 0 ? "0" : beta == 1 ? "1" : "\(beta)")"
        + (alpha == 1 ? "" : " a\(alpha)") + (lda == contiguous.lda ? "" : " lda\(lda)")
        + (ldb == contiguous.ldb ? "" : " ldb\(ldb)")
    }
  }

  /// Runs `body` and returns, beside its result, every `sgemm` call that reached OpenBLAS while it
  /// ran, in order (calls with `m`, `n` or `k` zero never do). Calls from any thread are recorded,
  /// so run nothing else that calls sgemm meanwhile. Recordings do not nest.
  package static func recordingGemms<T>(_ body: () throws -> T) rethrows -> (result: T, calls: [GemmCall]) {
    gate.withLock { recording in
      precondition(recording == nil, "BLAS.recordingGemms does not nest")
      recording = []
    }
    let result: T
    do {
      result = try body()
    } catch {
      gate.withLock { $0 = nil }
      throw error
    }
    let calls = gate.withLock { recording -> [GemmCall] in
      defer { recording = nil }
      return recording ?? []
    }
    return (result, calls)
  }

  /// Sets OpenBLAS's thread count. Use `Threads.count`, which also sizes our own loops.
  static func setThreadCount(_ n: Int) {
    _ = tuned
    openblas_set_num_threads(Int32(n))
    // New threads map new buffers.
    adviseOpenBLASBuffers()
  }

  /// Runs once before the first BLAS call. Idle OpenBLAS threads spin for 2^28 cycles by
  /// default (about 0.1 s) after every call, and on a small machine they then compete with our
  /// own `parallelFor` workers for the cores; measured here, a training step was 25–30% slower.
  /// Unless the user set `OPENBLAS_THREAD_TIMEOUT` themselves, set it to its minimum (2^4
  /// cycles) and restart OpenBLAS's thread pool so that it reads the new value. Then back
  /// OpenBLAS's packing buffers with huge pages (`adviseOpenBLASBuffers`).
  ///
  /// Linux only (Glibc or Musl). On Apple platforms libopenblas.dylib exports only the symbols
  /// of its `exports/osx.def` list, which lacks `openblas_read_env` and `blas_thread_shutdown_`,
  /// and OpenBLAS reads its environment when it is loaded, so setting the variable now would
  /// change nothing: users there set `OPENBLAS_THREAD_TIMEOUT=4` themselves (see the README).
  private static let tuned: Void = {
    #if canImport(Glibc) || canImport(Musl)
      if getenv("OPENBLAS_THREAD_TIMEOUT") == nil {
        setenv("OPENBLAS_THREAD_TIMEOUT", "4", 0)
        openblas_read_env()
        _ = blas_thread_shutdown_()
      }
    #endif
    adviseOpenBLASBuffers()
  }()

  /// OpenBLAS's build configuration, e.g. `"OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64"`.
  public static var configuration: String { String(cString: openblas_get_config()) }

  /// The kernel family OpenBLAS chose for this CPU, e.g. `"Zen"`.
  public static var coreName: String { String(cString: openblas_get_corename()) }

  /// A warning when OpenBLAS runs kernels narrower than this CPU's vectors, else nil: when the
  /// environment pins it (`OPENBLAS_CORETYPE`) to kernels without AVX-512 on a CPU that has it, or
  /// when OpenBLAS does not recognise the CPU and falls back to pre-AVX2 kernels (OpenBLAS 0.3.21
  /// runs Prescott, SSE3, on an Emerald Rapids Xeon). Every sgemm, so every convolution, then runs
  /// well below what the machine can give (a 2-core Zen 5 pinned to Haswell: 244 vs 444 GFLOP/s
  /// at 2048²). We never change the user's environment; we say so.
  public static var kernelNote: String? {
    kernelNote(pinned: getenv("OPENBLAS_CORETYPE").map { String(cString: $0) }, core: coreName, cpuFlags: cpuFlags)
  }

  /// `kernelNote` for a given `OPENBLAS_CORETYPE` value, OpenBLAS kernel family and CPU flags
  /// (the words of /proc/cpuinfo's `flags` line).
  public static func kernelNote(pinned: String?, core: String, cpuFlags: [Substring]) -> String? {
    let avx512Kernels: Set = ["skylakex", "cooperlake", "sapphirerapids", "zen4", "zen5"]
    let avx2Kernels = avx512Kernels.union(["haswell", "zen", "excavator"])
    let kernels = core.lowercased()
    if let pinned, !pinned.isEmpty {
      guard cpuFlags.contains("avx512f"), !avx512Kernels.contains(kernels) else { return nil }
      return "note: OPENBLAS_CORETYPE=\(pinned) pins OpenBLAS to its \(core) kernels on a CPU with AVX-512, "
        + "so sgemm (and every convolution) runs below what this machine can do; unset it to let OpenBLAS choose"
    }
    guard cpuFlags.contains("avx2"), cpuFlags.contains("fma"), !avx2Kernels.contains(kernels) else { return nil }
    let widest = cpuFlags.contains("avx512f") ? "AVX-512" : "AVX2"
    return "note: this OpenBLAS does not know this CPU and runs its \(core) kernels, without AVX2, on a CPU with "
      + "\(widest), so sgemm (and every convolution) runs far below what this machine can do; a newer OpenBLAS "
      + "knows it (OPENBLAS_CORETYPE=Haswell\(widest == "AVX-512" ? " or SkylakeX" : "") chooses kernels by hand)"
  }

  /// The first `flags` line of /proc/cpuinfo, split into words (empty where there is none: off
  /// Linux, and on aarch64 Linux, whose line is `Features`; neither has AVX-512).
  private static var cpuFlags: [Substring] {
    #if os(Linux) && (canImport(Glibc) || canImport(Musl))
      guard let f = fopen("/proc/cpuinfo", "r") else { return [] }
      defer { fclose(f) }
      var line: UnsafeMutablePointer<CChar>? = nil
      var size = 0
      defer { free(line) }
      while getline(&line, &size, f) > 0, let l = line {
        let text = String(cString: l)
        if text.hasPrefix("flags") { return text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }) }
      }
    #endif
    return []
  }

  /// Fills `q` (`[rows, cols]`, row-major) with a matrix whose rows (if rows ≤ cols) or columns
  /// (otherwise) are orthonormal: the Q factor of a QR decomposition of `q`'s current contents,
  /// with signs fixed so that R's diagonal is positive (as `torch.nn.init.orthogonal_` does).
  /// Uses LAPACKE's `sgeqrf` and `sorgqr`.
  public static func orthonormalize(_ q: UnsafeMutablePointer<Float>, rows: Int, cols: Int) throws {
    // QR of the tall orientation: T is [tm, tn] with tm >= tn, stored column-major for LAPACK.
    let tall = rows >= cols
    let tm = tall ? rows : cols, tn = tall ? cols : rows
    // Column-major [tm, tn]: element (i, j) at i + j*tm. For tall, T = q; else T = qᵀ.
    var t = [Float](repeating: 0, count: tm * tn)
    for r in 0..<rows {
      for c in 0..<cols {
        let (i, j) = tall ? (r, c) : (c, r)
        t[i + j * tm] = q[r * cols + c]
      }
    }
    var tau = [Float](repeating: 0, count: tn)
    var info = gate.withLock { _ in LAPACKE_sgeqrf(LAPACK_COL_MAJOR, Int32(tm), Int32(tn), &t, Int32(tm), &tau) }
    guard info == 0 else { throw TensorError.invalidArgument("orthogonal init: sgeqrf failed (info \(info))") }
    var diagSign = [Float](repeating: 1, count: tn)
    for j in 0..<tn { diagSign[j] = t[j + j * tm] < 0 ? -1 : 1 }
    info = gate.withLock { _ in LAPACKE_sorgqr(LAPACK_COL_MAJOR, Int32(tm), Int32(tn), Int32(tn), &t, Int32(tm), &tau) }
    guard info == 0 else { throw TensorError.invalidArgument("orthogonal init: sorgqr failed (info \(info))") }
    for r in 0..<rows {
      for c in 0..<cols {
        let (i, j) = tall ? (r, c) : (c, r)
        q[r * cols + c] = t[i + j * tm] * diagSign[j]
      }
    }
  }
}
