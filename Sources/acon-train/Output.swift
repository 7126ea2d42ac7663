// Output: how acon-train ends and what it checks on the way out. An error prints one line and
// ends the run (in a data-parallel run, the whole job, at once); everything printed to stdout
// must have reached it before the exit status says success.
import Collectives

#if canImport(Glibc)
  @preconcurrency import Glibc  // stdout and stderr, which Swift 6 otherwise sees as shared mutable state
#elseif canImport(Darwin)
  @preconcurrency import Darwin
#endif

/// The processes of the running `train`, once it has joined them: `fail` ends them all.
nonisolated(unsafe) var activeGroup: ProcessGroup?

/// Prints `message` to stderr and exits non-zero: the CLI's one way to fail. In a data-parallel
/// run the message names the rank, and the whole job ends at once (`ProcessGroup.abort`,
/// MPI_Abort, never MPI_Finalize): the other ranks may be waiting in a collective operation for
/// this one, and would otherwise wait forever.
func fail(_ message: String) -> Never {
  fflush(stdout)
  let group = activeGroup
  let who = group.map { $0.size > 1 ? "rank \($0.rank) of \($0.size): " : "" } ?? ""
  fputs("error: \(who)\(message)\n", stderr)
  fflush(stderr)
  if let group { group.abort(code: 1) }
  exit(1)
}

/// Prints `message` to stderr as a warning, after what stdout holds so far.
func warn(_ message: String) {
  fflush(stdout)
  fputs("warning: \(message)\n", stderr)
}

/// Prints `line` to stdout at once (progress reaches a log file as it happens).
func progressLine(_ line: String) {
  print(line)
  fflush(stdout)
}

/// Flushes stdout and checks that everything printed reached it (`evaluate --json > file` on a
/// full disk must not exit 0); otherwise fails, naming where stdout goes.
func finishOutput() {
  errno = 0
  let flushed = fflush(stdout) == 0
  let code = errno
  guard !flushed || ferror(stdout) != 0 else { return }
  var target = [CChar](repeating: 0, count: 4097)
  let n = readlink("/proc/self/fd/1", &target, 4096)
  let name = n > 0 ? " (" + String(decoding: target.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self) + ")" : ""
  fail("standard output\(name): cannot write what was printed: " + (code != 0 ? String(cString: strerror(code)) : "write error"))
}
