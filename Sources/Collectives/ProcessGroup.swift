// ProcessGroup: the processes of a data-parallel run and the few collective operations training
// needs (all-reduce in place, broadcast, barrier), over MPI when the package is built with the
// `MPI` trait (`swift build --traits MPI`), and a one-process group otherwise. Nothing here
// allocates per call: the buffers are the caller's. `startAllReduceSum` is the non-blocking
// all-reduce that lets a data-parallel step sum gradients while backward still runs.
#if MPI
  import CMPI
#endif
#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// A failed collective operation, or a distributed run that this build can't do.
public struct ProcessGroupError: Error, CustomStringConvertible, Equatable {
  /// What went wrong and what to do about it.
  public var message: String
  /// An error with `message`.
  public init(_ message: String) { self.message = message }
  public var description: String { message }
}

/// The processes of a data-parallel run: `size` of them, this one being `rank` (0 ..< size).
/// Every process must call each collective operation in the same order with the same counts.
public protocol ProcessGroup: AnyObject {
  /// This process's index, 0 ..< size. Rank 0 logs, evaluates and writes checkpoints.
  var rank: Int { get }
  /// The number of processes.
  var size: Int { get }
  /// Sums `buffer` (`[count]`) over all processes, in place: every process ends with the sum.
  func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws
  /// Sums `buffer` (`[count]`) of Doubles over all processes, in place.
  func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws
  /// Starts summing `buffer` (`[count]`) over all processes, in place, and returns at once (a
  /// non-blocking all-reduce, MPI_Iallreduce). Don't read or write `buffer` until the returned
  /// operation's `wait()` returns. Every process must start the same operations in the same order.
  func startAllReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> PendingCollective
  /// Copies `buffer` (`[count]`) of process `root` into every other process's `buffer`.
  func broadcast(_ buffer: UnsafeMutableBufferPointer<Float>, root: Int) throws
  /// Returns once every process has called it.
  func barrier() throws
  /// Ends the whole job now with exit status `code`: every process of the group, including those
  /// waiting in a collective operation (MPI_Abort), or this process alone when it is the only
  /// one. The error path of a run: print the message first; it never finalises MPI, which would
  /// wait for processes that sit in a collective.
  func abort(code: Int32) -> Never
}

/// A collective operation in progress (`ProcessGroup.startAllReduceSum(_:)`).
public protocol PendingCollective: AnyObject {
  /// Whether it has finished, without waiting. With MPI, testing is also what moves the
  /// operation on (Open MPI progresses non-blocking collectives inside MPI calls).
  func test() throws -> Bool
  /// Returns when it has finished.
  func wait() throws
}

/// A collective operation that finished before it was returned.
public final class FinishedCollective: PendingCollective {
  /// A finished operation.
  public init() {}
  public func test() throws -> Bool { true }
  public func wait() throws {}
}

extension ProcessGroup {
  /// The blocking all-reduce, already finished when it returns: groups without non-blocking
  /// collectives (one process, threads of a test) overlap nothing but give the same sums.
  public func startAllReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> PendingCollective {
    try allReduceSum(buffer)
    return FinishedCollective()
  }
}

/// A group of one process: every collective operation is the identity.
public final class SingleProcess: ProcessGroup {
  /// The group of this process alone.
  public init() {}
  public var rank: Int { 0 }
  public var size: Int { 1 }
  public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {}
  public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws {}
  public func broadcast(_ buffer: UnsafeMutableBufferPointer<Float>, root: Int) throws {}
  public func barrier() throws {}
  /// Exits the process with `code` (after flushing stdio, as `exit` does).
  public func abort(code: Int32) -> Never { exit(code) }
}

/// Choosing the group for a run.
public enum ProcessGroups {
  /// Whether this build has MPI support (the package's `MPI` trait).
  public static var mpiAvailable: Bool {
    #if MPI
      return true
    #else
      return false
    #endif
  }

  /// Whether this process was started by `mpirun`/`mpiexec` (Open MPI, MPICH or PMI sets the
  /// size of the job in the environment).
  public static func launchedByMPI(environment: [String: String]) -> Bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"].contains { environment[$0] != nil }
  }

  /// The group for a run: MPI's world when `distributed` is asked for or the process was started
  /// by `mpirun`, a single process otherwise.
  /// - Throws: `ProcessGroupError` when a distributed run is asked for (or `mpirun` started us)
  ///   but this build has no MPI, or MPI fails to start.
  public static func make(distributed: Bool, environment: [String: String]) throws -> ProcessGroup {
    guard distributed || launchedByMPI(environment: environment) else { return SingleProcess() }
    #if MPI
      return try MPIProcessGroup.world()
    #else
      throw ProcessGroupError(
        "this acon-train was built without MPI, so it can't train "
          + (distributed ? "with --distributed" : "under mpirun (each process would train alone)")
          + ": install libopenmpi-dev and build with `swift build -c release --traits MPI`")
    #endif
  }
}

#if MPI
  /// MPI's world communicator. MPI is initialised once per process (by the first `world()`) and
  /// finalised at a normal exit; errors come back as `ProcessGroupError` instead of aborting the
  /// job, so the message names the operation, and a run that fails then calls `abort(code:)`
  /// (MPI_Abort), never MPI_Finalize. If another process of the job dies, `mpirun` ends the job.
  public final class MPIProcessGroup: ProcessGroup {
    public let rank: Int
    public let size: Int
    private let comm: MPI_Comm

    nonisolated(unsafe) private static var shared: MPIProcessGroup?

    /// The world group, initialising MPI on first use.
    public static func world() throws -> MPIProcessGroup {
      if let g = shared { return g }
      var initialized: Int32 = 0
      MPI_Initialized(&initialized)
      if initialized == 0 {
        // Only the calling thread talks to MPI; our worker threads never do.
        var provided: Int32 = 0
        try check(MPI_Init_thread(nil, nil, Int32(MPI_THREAD_FUNNELED), &provided), "MPI_Init_thread")
        atexit {
          var finalized: Int32 = 0
          MPI_Finalized(&finalized)
          if finalized == 0 { MPI_Finalize() }
        }
      }
      guard let comm = acon_mpi_comm_world() else { throw ProcessGroupError("MPI has no world communicator") }
      try check(MPI_Comm_set_errhandler(comm, acon_mpi_errors_return()), "MPI_Comm_set_errhandler")
      var r: Int32 = 0, s: Int32 = 0
      try check(MPI_Comm_rank(comm, &r), "MPI_Comm_rank")
      try check(MPI_Comm_size(comm, &s), "MPI_Comm_size")
      let g = MPIProcessGroup(comm: comm, rank: Int(r), size: Int(s))
      shared = g
      return g
    }

    private init(comm: MPI_Comm, rank: Int, size: Int) {
      self.comm = comm
      self.rank = rank
      self.size = size
    }

    fileprivate static func check(_ code: Int32, _ what: String) throws {
      guard code != acon_mpi_success() else { return }
      var text = [CChar](repeating: 0, count: Int(acon_mpi_max_error_string()) + 1)
      var length: Int32 = 0
      MPI_Error_string(code, &text, &length)
      let message = String(decoding: text.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
      throw ProcessGroupError(
        "\(what) failed: \(message); another process of the job may have died (see mpirun's output)")
    }

    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
      try chunks(buffer.count) { offset, count in
        try MPIProcessGroup.check(
          MPI_Allreduce(acon_mpi_in_place(), buffer.baseAddress! + offset, count, acon_mpi_float(), acon_mpi_sum(), comm),
          "MPI_Allreduce of \(buffer.count) floats")
      }
    }

    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws {
      try chunks(buffer.count) { offset, count in
        try MPIProcessGroup.check(
          MPI_Allreduce(acon_mpi_in_place(), buffer.baseAddress! + offset, count, acon_mpi_double(), acon_mpi_sum(), comm),
          "MPI_Allreduce of \(buffer.count) doubles")
      }
    }

    public func startAllReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> PendingCollective {
      let op = MPIPendingCollective(what: "MPI_Iallreduce of \(buffer.count) floats")
      try chunks(buffer.count) { offset, count in
        var request: MPI_Request?
        try MPIProcessGroup.check(
          MPI_Iallreduce(acon_mpi_in_place(), buffer.baseAddress! + offset, count, acon_mpi_float(), acon_mpi_sum(), comm,
            &request),
          op.what)
        op.requests.append(request)
      }
      return op
    }

    /// The requests of one `startAllReduceSum` (one per 2³¹-element piece).
    final class MPIPendingCollective: PendingCollective {
      let what: String
      var requests: [MPI_Request?] = []
      init(what: String) { self.what = what }

      func test() throws -> Bool {
        var done: Int32 = 0
        try MPIProcessGroup.check(MPI_Testall(Int32(requests.count), &requests, &done, nil), what)
        return done != 0
      }

      func wait() throws {
        try MPIProcessGroup.check(MPI_Waitall(Int32(requests.count), &requests, nil), what)
      }
    }

    public func broadcast(_ buffer: UnsafeMutableBufferPointer<Float>, root: Int) throws {
      try chunks(buffer.count) { offset, count in
        try MPIProcessGroup.check(
          MPI_Bcast(buffer.baseAddress! + offset, count, acon_mpi_float(), Int32(root), comm),
          "MPI_Bcast of \(buffer.count) floats from rank \(root)")
      }
    }

    public func barrier() throws {
      try MPIProcessGroup.check(MPI_Barrier(comm), "MPI_Barrier")
    }

    /// MPI_Abort on the world: mpirun ends every rank and exits non-zero. stdout is flushed
    /// first (MPI_Abort does not run the C library's exit handlers).
    public func abort(code: Int32) -> Never {
      fflush(nil)  // every output stream
      MPI_Abort(comm, code)
      // MPI_Abort should not return; if it does, leave without MPI_Finalize.
      _exit(code)
    }

    /// MPI counts are Int32: larger buffers go in pieces.
    private func chunks(_ total: Int, _ body: (Int, Int32) throws -> Void) throws {
      var offset = 0
      repeat {
        let count = Swift.min(total - offset, Int(Int32.max))
        if count > 0 { try body(offset, Int32(count)) }
        offset += count
      } while offset < total
    }
  }
#endif
