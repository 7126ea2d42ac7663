// AtomicFile: whole-file reads and crash-safe writes for checkpoints and data files.
//
// A write goes to a temporary file in the target's directory, is fsync'ed, renamed over the
// target and then the directory is fsync'ed, so a reader sees either the old or the new file,
// never a torn one, even after a power cut.
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
  let slash = path.lastIndex(of: "/")
  let directory: String
  let base: String
  if let s = slash {
    directory = s == path.startIndex ? "/" : String(path[..<s])
    base = String(path[path.index(after: s)...])
  } else {
    directory = "."
    base = path
  }
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

  // Write everything, retrying short writes and EINTR.
  try bytes.withUnsafeBytes { raw in
    var done = 0
    while done < raw.count {
      let n = write(fd, raw.baseAddress! + done, raw.count - done)
      if n < 0 {
        if errno == EINTR { continue }
        throw FileIOError(path: path, operation: "write \(tempPath)", reason: systemErrorText())
      }
      done += n
    }
  }
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

/// Reads a whole regular file into memory.
/// - Parameter maxBytes: refuse (before allocating) files larger than this.
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
