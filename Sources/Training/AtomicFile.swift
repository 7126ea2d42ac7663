// AtomicFile: whole-file reads and crash-safe writes for checkpoints and data files.
//
// A write goes to a temporary file in the target's directory, is fsync'ed, renamed over the
// target and then the directory is fsync'ed, so a reader sees either the old or the new file,
// never a torn one, even after a power cut. A process killed mid-write leaves only its hidden
// temporary file, which `removeInterruptedWrites(of:)` clears up on the next run.
#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// An I/O failure on a named file: what was being done and the system's reason.
public struct FileIOError: Error, CustomStringConvertible, Equatable {
  /// The file or directory concerned.
  public var path: String
  /// What was being done ("open", "write", "rename to …").
  public var operation: String
  /// The system's explanation (`strerror(errno)`), or a short reason.
  public var reason: String

  /// An error about `path`.
  public init(path: String, operation: String, reason: String) {
    self.path = path
    self.operation = operation
    self.reason = reason
  }

  public var description: String { "\(path): cannot \(operation): \(reason)" }
}

/// `strerror(errno)` as a Swift string.
func systemErrorText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }

/// Writes `bytes` to `path` atomically: the data goes to a temporary file in the same directory
/// (`.NAME.tmp.XXXXXX`), which is fsync'ed and renamed over `path`; then the directory is
/// fsync'ed so the rename itself is durable. On failure the temporary file is removed and the
/// old contents of `path`, if any, are untouched.
/// - Throws: `FileIOError` naming the path and the failing step.
public func writeFileAtomically(path: String, bytes: [UInt8]) throws {
  guard !path.isEmpty else { throw FileIOError(path: path, operation: "write", reason: "empty path") }
  let (directory, base) = splitPath(path)
  guard !base.isEmpty else { throw FileIOError(path: path, operation: "write", reason: "the path names a directory") }

  var template = Array((directory == "/" ? "/" : directory + "/").utf8CString.dropLast())
  template += Array(".\(base).tmp.XXXXXX".utf8CString)  // keeps the terminating NUL
  let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
  guard fd >= 0 else {
    throw FileIOError(path: path, operation: "create a temporary file in \(directory)", reason: systemErrorText())
  }
  let tempPath = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
  var closed = false
  var renamed = false
  defer {
    if !closed { close(fd) }
    if !renamed { unlink(tempPath) }
  }

  try writeAll(fd, bytes, path: path, operation: "write \(tempPath)")
  // mkstemp creates 0600: keep the permissions of the file being replaced, or use 0644.
  var old = stat()
  fchmod(fd, stat(path, &old) == 0 ? old.st_mode & 0o7777 : 0o644)
  guard fsync(fd) == 0 else {
    throw FileIOError(path: path, operation: "fsync \(tempPath)", reason: systemErrorText())
  }
  closed = true
  guard close(fd) == 0 else {
    throw FileIOError(path: path, operation: "close \(tempPath)", reason: systemErrorText())
  }
  guard rename(tempPath, path) == 0 else {
    throw FileIOError(path: path, operation: "rename \(tempPath) over it", reason: systemErrorText())
  }
  renamed = true

  let dfd = open(directory, O_RDONLY | O_DIRECTORY)
  guard dfd >= 0 else {
    throw FileIOError(path: directory, operation: "open the directory to fsync it", reason: systemErrorText())
  }
  defer { close(dfd) }
  guard fsync(dfd) == 0 else {
    throw FileIOError(path: directory, operation: "fsync the directory", reason: systemErrorText())
  }
}

/// Removes the temporary files (`.NAME.tmp.XXXXXX` beside `path`) that interrupted
/// `writeFileAtomically(path:bytes:)` calls left behind: a process killed mid-write cannot remove
/// its own. No reader ever opens them, so they are only wasted space. Call this only while no
/// other process writes `path`. Failures to list or remove are ignored.
/// - Returns: the names of the files removed.
@discardableResult
public func removeInterruptedWrites(of path: String) -> [String] {
  let (directory, base) = splitPath(path)
  guard !base.isEmpty, let dir = opendir(directory) else { return [] }
  defer { closedir(dir) }
  let prefix = Array(".\(base).tmp.".utf8)
  var removed = [String]()
  while let entry = readdir(dir) {
    let name = withUnsafePointer(to: &entry.pointee.d_name) {
      String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
    }
    let bytes = Array(name.utf8)
    guard bytes.count == prefix.count + 6, bytes.starts(with: prefix) else { continue }  // mkstemp's XXXXXX
    if unlink((directory == "/" ? "/" : directory + "/") + name) == 0 { removed.append(name) }
  }
  return removed.sorted()
}

/// `path`'s directory ("." when it has none) and last component ("" when it ends in "/").
private func splitPath(_ path: String) -> (directory: String, base: String) {
  guard let s = path.lastIndex(of: "/") else { return (".", path) }
  return (s == path.startIndex ? "/" : String(path[..<s]), String(path[path.index(after: s)...]))
}

/// Reads a whole regular file into memory.
/// - Parameters:
///   - path: the file.
///   - maxBytes: refuse (before allocating) files larger than this.
/// - Throws: `FileIOError` naming the path (missing file, not a regular file, read error, too large).
public func readFileBytes(path: String, maxBytes: Int = Int.max) throws -> [UInt8] {
  let fd = open(path, O_RDONLY)
  guard fd >= 0 else { throw FileIOError(path: path, operation: "open", reason: systemErrorText()) }
  defer { close(fd) }
  var st = stat()
  guard fstat(fd, &st) == 0 else { throw FileIOError(path: path, operation: "stat", reason: systemErrorText()) }
  guard (st.st_mode & S_IFMT) == S_IFREG else {
    throw FileIOError(path: path, operation: "read", reason: "not a regular file")
  }
  let size = Int(st.st_size)
  guard size <= maxBytes else {
    throw FileIOError(path: path, operation: "read", reason: "file is \(size) bytes, more than the limit of \(maxBytes)")
  }
  var bytes = [UInt8](repeating: 0, count: size)
  var done = 0
  try bytes.withUnsafeMutableBytes { raw in
    while done < size {
      let n = read(fd, raw.baseAddress! + done, size - done)
      if n < 0 {
        if errno == EINTR { continue }
        throw FileIOError(path: path, operation: "read", reason: systemErrorText())
      }
      if n == 0 { break }
      done += n
    }
  }
  if done < size { bytes.removeSubrange(done...) }  // the file shrank while we read it
  return bytes
}

/// Whether `path` exists, and whether it is a directory.
func fileStatus(_ path: String) -> (exists: Bool, isDirectory: Bool) {
  var st = stat()
  guard stat(path, &st) == 0 else { return (false, false) }
  return (true, (st.st_mode & S_IFMT) == S_IFDIR)
}

/// A file written by appending, where every write is checked: a failed or short write (a full
/// disk, `/dev/full`, a quota) throws `FileIOError` naming the file instead of trapping or being
/// dropped. For the JSONL log and other outputs that are written as a run goes, not atomically.
public final class CheckedFile {
  /// The file written.
  public let path: String
  /// What the file is, for messages ("the log file").
  public let what: String
  private var fd: Int32

  /// Opens `path` for appending (creating it with mode 0644), emptied first when `truncate`.
  /// - Throws: `FileIOError` naming the path when it can't be opened for writing.
  public init(appendingTo path: String, truncate: Bool, what: String = "the file") throws {
    self.path = path
    self.what = what
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0o644)
    guard fd >= 0 else { throw FileIOError(path: path, operation: "open \(what) for writing", reason: systemErrorText()) }
  }

  deinit { if fd >= 0 { close(fd) } }

  /// Appends all of `bytes`, retrying short writes and EINTR.
  /// - Throws: `FileIOError` naming the path on any write error.
  public func write(_ bytes: [UInt8]) throws {
    try writeAll(fd, bytes, path: path, operation: "write \(what)")
  }

  /// Flushes the file to stable storage (fsync), so a late I/O error surfaces here. Files that
  /// can't be synced (pipes, character devices: EINVAL, ENOTSUP, EROFS) are taken as written.
  /// - Throws: `FileIOError` naming the path.
  public func sync() throws {
    guard fsync(fd) == 0 else {
      let code = errno
      if code == EINVAL || code == ENOTSUP || code == EROFS { return }
      throw FileIOError(path: path, operation: "sync \(what) to disk", reason: systemErrorText(code))
    }
  }
}

/// The C library's `write(2)`, reachable from inside `CheckedFile`, whose own `write` hides it.
private func posixWrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int { write(fd, buffer, count) }

/// Writes all of `bytes` to `fd`, retrying short writes and EINTR.
/// - Throws: `FileIOError` with `path` and `operation` on a write error or a write that makes no progress.
private func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String, operation: String) throws {
  try bytes.withUnsafeBytes { raw in
    var done = 0
    while done < raw.count {
      let n = posixWrite(fd, raw.baseAddress! + done, raw.count - done)
      if n < 0 {
        if errno == EINTR { continue }
        throw FileIOError(path: path, operation: operation, reason: systemErrorText())
      }
      if n == 0 { throw FileIOError(path: path, operation: operation, reason: "the write made no progress") }
      done += n
    }
  }
}
