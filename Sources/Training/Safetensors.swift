// Safetensors: reading and writing Hugging Face's safetensors format, byte for byte, and
// PyTorch-style state_dict helpers (`stateDict(of:)`, strict `loadStateDict(_:into:file:)`).
//
// Layout: 8-byte little-endian header length N; N bytes of UTF-8 JSON starting with '{' and
// right-padded with spaces to a multiple of 8; then the data buffer. Header entries:
// `"name": {"dtype": "F32", "shape": [..], "data_offsets": [BEGIN, END]}` (offsets relative to the
// buffer, END exclusive) plus an optional `"__metadata__"` string→string map. Tensors are
// little-endian, row-major, and must tile the buffer exactly. The writer follows the reference
// implementation: no whitespace, `__metadata__` first, entries by dtype alignment (descending)
// then name, so our files match `safetensors.numpy.save_file` byte for byte. A file is read
// header first: the length, the header and the file's size are checked before any tensor data
// is read, and then each tensor is read straight into its array (`read(path:)`); files in memory
// (`decode(_:name:)`) go through the same checks.
import Foundation
import NN
import TensorCore

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// One tensor of a safetensors file. F32 and I64 are read and written as `.f32` and `.i64`. The
/// other dtypes the reader converts arrive as `.converted`, which keeps the file's dtype: F16,
/// BF16 and F64 wrap `.f32` values, and BOOL, U8, I8, I16, U16, I32, U32 wrap `.i64` values.
public enum SafetensorsValue: Equatable, Sendable {
  /// Float32 values, row-major, `shape.product` of them.
  case f32(shape: [Int], values: [Float])
  /// Int64 values, row-major; a scalar has shape `[]` and one value.
  case i64(shape: [Int], values: [Int64])
  /// Values read from a tensor of another dtype: `dtype` as written in the file ("F16", "I32", …)
  /// and `value`, the data widened to `.f32` or `.i64`. Written back, it is `value` (F32 or I64).
  indirect case converted(dtype: String, value: SafetensorsValue)

  /// A copy of a tensor's values with its shape.
  public init(_ tensor: Tensor) { self = .f32(shape: tensor.shape, values: tensor.array) }

  /// The values as `.f32` or `.i64`: a `.converted` value's content, otherwise `self`.
  public var widened: SafetensorsValue {
    if case let .converted(_, v) = self { return v.widened }
    return self
  }

  /// The shape, outermost first (`[]` for a scalar).
  public var shape: [Int] {
    switch self {
    case let .f32(s, _): return s
    case let .i64(s, _): return s
    case let .converted(_, v): return v.shape
    }
  }

  /// The dtype as in the file's header: `"F32"`, `"I64"`, or a `.converted` value's original
  /// dtype (`"F16"`, `"I32"`, …). What `encode` writes is `widened.dtype`.
  public var dtype: String {
    switch self {
    case .f32: return "F32"
    case .i64: return "I64"
    case let .converted(d, _): return d
    }
  }

  /// The number of values stored.
  public var valueCount: Int {
    switch self {
    case let .f32(_, v): return v.count
    case let .i64(_, v): return v.count
    case let .converted(_, v): return v.valueCount
    }
  }

  /// Bytes per element as written: 4 or 8.
  var elementSize: Int {
    switch widened {
    case .i64: return 8
    default: return 4
    }
  }
}

/// A malformed safetensors file, an I/O failure, or a state dict that does not fit a model.
/// Every message names the file, and the tensor where there is one.
public enum SafetensorsError: Error, CustomStringConvertible, Equatable {
  /// The file could not be read or written.
  case io(file: String, reason: String)
  /// Fewer than the 8 bytes of the header length.
  case fileTooShort(file: String, size: Int)
  /// The header length exceeds 100,000,000 bytes (the reference reader's limit).
  case headerTooLarge(file: String, length: UInt64)
  /// The header length runs past the end of the file.
  case headerPastEnd(file: String, length: UInt64, fileSize: Int)
  /// The header is not a JSON object starting with '{'.
  case invalidHeader(file: String, reason: String)
  /// `__metadata__` is not a string→string map.
  case invalidMetadata(file: String, reason: String)
  /// A tensor entry lacks `dtype`, `shape` or `data_offsets`, or has values of the wrong kind.
  case invalidEntry(file: String, tensor: String, reason: String)
  /// A dtype string that the format does not define.
  case unknownDtype(file: String, tensor: String, dtype: String)
  /// A dtype the format defines but this reader does not convert (U64, C64, F8_*, F6_*, F4).
  case unsupportedDtype(file: String, tensor: String, dtype: String)
  /// The shape's element count (or byte count) overflows.
  case shapeOverflow(file: String, tensor: String, shape: [Int])
  /// END − BEGIN differs from element count · dtype size.
  case sizeMismatch(file: String, tensor: String, dtype: String, shape: [Int], expectedBytes: Int, gotBytes: Int)
  /// BEGIN > END, or END beyond the data buffer.
  case offsetsOutOfRange(file: String, tensor: String, begin: Int, end: Int, bufferSize: Int)
  /// Two tensors share bytes.
  case overlap(file: String, tensor: String, other: String)
  /// Unused bytes before a tensor.
  case hole(file: String, tensor: String, begin: Int, previousEnd: Int)
  /// The tensors do not reach the end of the file (8 + N + last END ≠ file size).
  case incompleteBuffer(file: String, covered: Int, bufferSize: Int)
  /// The same tensor name appears twice in the header.
  case duplicateName(file: String, tensor: String)
  /// A state dict does not fit the model (as PyTorch's `load_state_dict(strict=True)`):
  /// missing and unexpected keys, and per-tensor shape or dtype mismatches (one line each).
  case stateDictMismatch(file: String, missing: [String], unexpected: [String], mismatched: [String])

  public var description: String {
    let corrupt = "the file is corrupt or not a safetensors file"
    switch self {
    case let .io(file, reason):
      return "\(file): \(reason)"
    case let .fileTooShort(file, size):
      return "\(file): only \(size) bytes, fewer than the 8-byte header length; \(corrupt)"
    case let .headerTooLarge(file, length):
      return "\(file): header length \(length) exceeds the limit of 100000000 bytes; \(corrupt)"
    case let .headerPastEnd(file, length, size):
      return "\(file): header length \(length) runs past the end of the \(size)-byte file; the file is truncated or corrupt"
    case let .invalidHeader(file, reason):
      return "\(file): invalid header: \(reason); \(corrupt)"
    case let .invalidMetadata(file, reason):
      return "\(file): invalid __metadata__: \(reason) (it must map strings to strings)"
    case let .invalidEntry(file, tensor, reason):
      return "\(file): tensor \"\(tensor)\": \(reason); \(corrupt)"
    case let .unknownDtype(file, tensor, dtype):
      return "\(file): tensor \"\(tensor)\": unknown dtype \"\(dtype)\""
    case let .unsupportedDtype(file, tensor, dtype):
      return "\(file): tensor \"\(tensor)\": dtype \(dtype) is not supported (supported: F32, I64; F16, BF16, F64 "
        + "are read as F32; BOOL, U8, I8, I16, U16, I32, U32 as I64); convert it first"
    case let .shapeOverflow(file, tensor, shape):
      return "\(file): tensor \"\(tensor)\": shape \(Shape.text(shape)) has too many elements; \(corrupt)"
    case let .sizeMismatch(file, tensor, dtype, shape, expected, got):
      return "\(file): tensor \"\(tensor)\": \(dtype) \(Shape.text(shape)) needs \(expected) bytes but its data_offsets "
        + "span \(got); \(corrupt)"
    case let .offsetsOutOfRange(file, tensor, begin, end, size):
      return "\(file): tensor \"\(tensor)\": data_offsets [\(begin), \(end)] are outside the \(size)-byte data buffer; "
        + "the file is truncated or corrupt"
    case let .overlap(file, tensor, other):
      return "\(file): tensors \"\(other)\" and \"\(tensor)\" overlap; \(corrupt)"
    case let .hole(file, tensor, begin, previousEnd):
      return "\(file): unused bytes \(previousEnd)..<\(begin) before tensor \"\(tensor)\"; \(corrupt)"
    case let .incompleteBuffer(file, covered, size):
      return "\(file): the tensors cover \(covered) bytes but the data buffer has \(size); \(corrupt)"
    case let .duplicateName(file, tensor):
      return "\(file): tensor \"\(tensor)\" appears more than once in the header; \(corrupt)"
    case let .stateDictMismatch(file, missing, unexpected, mismatched):
      var parts = [String]()
      if !missing.isEmpty { parts.append("missing keys: " + missing.joined(separator: ", ")) }
      if !unexpected.isEmpty { parts.append("unexpected keys: " + unexpected.joined(separator: ", ")) }
      parts += mismatched
      return "\(file): the state dict does not fit the model (nothing was loaded): " + parts.joined(separator: "; ")
        + ". Was it saved from a model with another architecture or configuration?"
    }
  }
}

/// A safetensors file in memory: metadata and named tensors.
public struct SafetensorsFile: Equatable, Sendable {
  /// The `__metadata__` map (empty when the file has none).
  public var metadata: [String: String]
  /// The tensors by name.
  public var tensors: [String: SafetensorsValue]

  /// A file with these contents.
  public init(metadata: [String: String] = [:], tensors: [String: SafetensorsValue] = [:]) {
    self.metadata = metadata
    self.tensors = tensors
  }

  /// The largest header the reader accepts (the reference implementation's limit).
  public static let maxHeaderSize: UInt64 = 100_000_000

  /// Bits per element of every dtype the format defines.
  static let dtypeBits: [String: Int] = [
    "BOOL": 8, "U8": 8, "I8": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "F64": 64, "I64": 64, "U64": 64, "C64": 64, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "F8_E8M0": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
  ]
  /// The dtypes this reader converts.
  static let readableDtypes: Set<String> = ["F32", "I64", "F16", "BF16", "F64", "BOOL", "U8", "I8", "I16", "U16", "I32", "U32"]

  /// Reads and validates a file without holding more than its tensors in memory: the 8-byte
  /// length and the header (at most `maxHeaderSize` bytes) are read and checked first, the
  /// header's offsets against the file's size (fstat), and only then is each tensor's data read
  /// straight into its array. A file whose size disagrees with its header (truncated, or with
  /// bytes after the last tensor) is refused before any tensor storage is allocated.
  /// - Throws: `SafetensorsError` naming `path` (and the tensor, where one is at fault), with the
  ///   same checks and messages as `decode(_:name:)`.
  public static func read(path: String) throws -> SafetensorsFile {
    let file = try ReadOnlyFile(path: path)
    defer { file.close() }
    let header = try file.readHeader()
    let tensors = try decodeTensors(header) { entry, destination in
      try file.read(at: header.dataStart + entry.dataOffsets.lowerBound, into: destination)
    }
    return SafetensorsFile(metadata: header.metadata, tensors: tensors)
  }

  /// Reads and validates a file's header only: its metadata and every tensor's dtype, shape and
  /// place, checked against the file's size exactly as `read(path:)` checks them. No tensor data
  /// is read, so this is cheap for a file of any size.
  /// - Throws: `SafetensorsError` naming `path`.
  public static func readHeader(path: String) throws -> SafetensorsHeader {
    let file = try ReadOnlyFile(path: path)
    defer { file.close() }
    return try file.readHeader()
  }

  /// Writes the file atomically (temporary file, fsync, rename, fsync of the directory).
  /// - Throws: `SafetensorsError.io` naming `path`.
  public func write(path: String) throws {
    do {
      try writeFileAtomically(path: path, bytes: encode())
    } catch let e as FileIOError {
      throw SafetensorsError.io(file: path, reason: "cannot write: \(e.description)")
    }
  }

  // MARK: - Decoding

  /// Parses and validates the bytes of a file held in memory. `name` is used in error messages.
  /// The checks (and their order) are those of `read(path:)`, which shares them:
  /// `headerLength(prefix:fileSize:name:)` and `parseHeader(_:fileSize:name:)`.
  public static func decode(_ bytes: [UInt8], name: String) throws -> SafetensorsFile {
    let n = try headerLength(prefix: bytes.prefix(8), fileSize: bytes.count, name: name)
    let header = try parseHeader(bytes[8..<(8 + n)], fileSize: bytes.count, name: name)
    let tensors = bytes.withUnsafeBytes { raw in
      decodeTensors(header) { entry, destination in
        let start = header.dataStart + entry.dataOffsets.lowerBound
        destination.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[start..<(start + destination.count)]))
      }
    }
    return SafetensorsFile(metadata: header.metadata, tensors: tensors)
  }

  /// The header length N from a file's first 8 bytes, checked before anything is allocated: the
  /// file has the 8 bytes, N ≤ 100,000,000 and N ≤ `fileSize` − 8.
  /// - Parameter prefix: the file's first bytes (at least 8 when `fileSize` ≥ 8).
  static func headerLength(prefix: some Collection<UInt8>, fileSize: Int, name: String) throws -> Int {
    guard fileSize >= 8, prefix.count >= 8 else { throw SafetensorsError.fileTooShort(file: name, size: fileSize) }
    var n: UInt64 = 0
    for (i, b) in prefix.prefix(8).enumerated() { n |= UInt64(b) << (8 * UInt64(i)) }
    guard n <= maxHeaderSize else { throw SafetensorsError.headerTooLarge(file: name, length: n) }
    guard n <= UInt64(fileSize - 8) else {
      throw SafetensorsError.headerPastEnd(file: name, length: n, fileSize: fileSize)
    }
    return Int(n)
  }

  /// Parses and validates the header JSON (the N bytes after the length) of a `fileSize`-byte file.
  ///
  /// Checks, in order: the header starts with '{' and is a JSON object; no duplicate names;
  /// `__metadata__` maps strings to strings; each entry has `dtype` (known and readable),
  /// `shape` (non-negative integers, no overflow) and `data_offsets` (two integers, BEGIN ≤ END ≤
  /// buffer size, END − BEGIN = elements · dtype size); the entries tile the buffer from 0 with
  /// no overlap or hole and end exactly at its end (buffer size = `fileSize` − 8 − N).
  static func parseHeader(_ header: ArraySlice<UInt8>, fileSize: Int, name: String) throws -> SafetensorsHeader {
    let headerLength = header.count
    guard header.first == UInt8(ascii: "{") else {
      throw SafetensorsError.invalidHeader(
        file: name, reason: headerLength == 0 ? "empty header" : "the header does not start with '{'")
    }
    let object: Any
    do {
      object = try JSONSerialization.jsonObject(with: Data(header), options: [])
    } catch {
      let detail = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? "\(error)"
      throw SafetensorsError.invalidHeader(file: name, reason: "not valid JSON (\(detail))")
    }
    guard let dict = object as? [String: Any] else {
      throw SafetensorsError.invalidHeader(file: name, reason: "the header is not a JSON object")
    }
    // JSONSerialization keeps the last of duplicate keys silently; count the keys ourselves.
    let rawKeys = topLevelKeys(header)
    if rawKeys.count != dict.count {
      var seen = Set<String>()
      for raw in rawKeys {
        let key = decodeJSONString(raw) ?? String(decoding: raw, as: UTF8.self)
        if !seen.insert(key).inserted { throw SafetensorsError.duplicateName(file: name, tensor: key) }
      }
    }

    var metadata = [String: String]()
    if let m = dict["__metadata__"] {
      guard let map = m as? [String: Any] else {
        throw SafetensorsError.invalidMetadata(file: name, reason: "it is not a JSON object")
      }
      for key in map.keys.sorted() {
        guard let s = map[key] as? String, !(map[key] is NSNumber) else {
          throw SafetensorsError.invalidMetadata(file: name, reason: "the value of \"\(key)\" is not a string")
        }
        metadata[key] = s
      }
    }

    let dataStart = 8 + headerLength
    let bufferSize = fileSize - dataStart
    var entries = [SafetensorsHeader.Entry]()
    for key in dict.keys.sorted() where key != "__metadata__" {
      guard let e = dict[key] as? [String: Any] else {
        throw SafetensorsError.invalidEntry(file: name, tensor: key, reason: "the entry is not a JSON object")
      }
      guard let dtypeAny = e["dtype"] else {
        throw SafetensorsError.invalidEntry(file: name, tensor: key, reason: "missing \"dtype\"")
      }
      guard let dtype = dtypeAny as? String, !(dtypeAny is NSNumber) else {
        throw SafetensorsError.invalidEntry(file: name, tensor: key, reason: "\"dtype\" is not a string")
      }
      guard let shapeAny = e["shape"] else {
        throw SafetensorsError.invalidEntry(file: name, tensor: key, reason: "missing \"shape\"")
      }
      guard let shapeList = shapeAny as? [Any], let shape = intList(shapeList) else {
        throw SafetensorsError.invalidEntry(
          file: name, tensor: key, reason: "\"shape\" is not a list of non-negative integers")
      }
      guard let offsetsAny = e["data_offsets"] else {
        throw SafetensorsError.invalidEntry(file: name, tensor: key, reason: "missing \"data_offsets\"")
      }
      guard let offsetList = offsetsAny as? [Any], let offsets = intList(offsetList), offsets.count == 2 else {
        throw SafetensorsError.invalidEntry(
          file: name, tensor: key, reason: "\"data_offsets\" is not a list of two non-negative integers")
      }
      guard let bits = dtypeBits[dtype] else {
        throw SafetensorsError.unknownDtype(file: name, tensor: key, dtype: dtype)
      }
      guard readableDtypes.contains(dtype) else {
        throw SafetensorsError.unsupportedDtype(file: name, tensor: key, dtype: dtype)
      }
      var elements = 1
      for d in shape {
        let (p, o) = elements.multipliedReportingOverflow(by: d)
        guard !o else { throw SafetensorsError.shapeOverflow(file: name, tensor: key, shape: shape) }
        elements = p
      }
      let (byteCount, o) = elements.multipliedReportingOverflow(by: bits / 8)
      guard !o else { throw SafetensorsError.shapeOverflow(file: name, tensor: key, shape: shape) }
      let begin = offsets[0], end = offsets[1]
      guard begin <= end, end <= bufferSize else {
        throw SafetensorsError.offsetsOutOfRange(
          file: name, tensor: key, begin: begin, end: end, bufferSize: bufferSize)
      }
      guard end - begin == byteCount else {
        throw SafetensorsError.sizeMismatch(
          file: name, tensor: key, dtype: dtype, shape: shape, expectedBytes: byteCount, gotBytes: end - begin)
      }
      entries.append(SafetensorsHeader.Entry(name: key, dtype: dtype, shape: shape, dataOffsets: begin..<end))
    }

    // The entries, sorted by offsets, must tile the buffer: each starts where the previous ended.
    entries.sort { a, b in
      (a.dataOffsets.lowerBound, a.dataOffsets.upperBound, a.name) < (b.dataOffsets.lowerBound, b.dataOffsets.upperBound, b.name)
    }
    var covered = 0
    var previous = ""
    for e in entries {
      let begin = e.dataOffsets.lowerBound
      if begin < covered { throw SafetensorsError.overlap(file: name, tensor: e.name, other: previous) }
      if begin > covered {
        throw SafetensorsError.hole(file: name, tensor: e.name, begin: begin, previousEnd: covered)
      }
      covered = e.dataOffsets.upperBound
      previous = e.name
    }
    guard covered == bufferSize else {
      throw SafetensorsError.incompleteBuffer(file: name, covered: covered, bufferSize: bufferSize)
    }
    return SafetensorsHeader(metadata: metadata, entries: entries, dataStart: dataStart, fileSize: fileSize)
  }

  /// The tensors of a validated header, each decoded from the bytes that `fill` puts into a
  /// buffer of exactly its size (`entry.dataOffsets.count` bytes). F32 and I64 (on little-endian
  /// machines) are filled straight into their arrays, so the peak memory is the tensors themselves
  /// plus, for a converted dtype, one tensor's raw bytes.
  static func decodeTensors(
    _ header: SafetensorsHeader, fill: (SafetensorsHeader.Entry, UnsafeMutableRawBufferPointer) throws -> Void
  ) rethrows -> [String: SafetensorsValue] {
    var tensors = [String: SafetensorsValue](minimumCapacity: header.entries.count)
    for e in header.entries {
      let v = try decodeValues(dtype: e.dtype, shape: e.shape, byteCount: e.dataOffsets.count) { try fill(e, $0) }
      tensors[e.name] = e.dtype == v.dtype ? v : .converted(dtype: e.dtype, value: v)
    }
    return tensors
  }
  /// Integers from a JSON list, or nil if any is not a non-negative integer (booleans and
  /// floating-point numbers such as `1.0` are refused, as serde does).
  private static func intList(_ list: [Any]) -> [Int]? {
    var out = [Int]()
    out.reserveCapacity(list.count)
    for item in list {
      guard let num = item as? NSNumber else { return nil }
      let kind = String(cString: num.objCType)
      guard kind != "c", kind != "B", kind != "d", kind != "f", let v = item as? Int, v >= 0 else { return nil }
      out.append(v)
    }
    return out
  }

  /// The raw (still escaped) bytes of each key of the top-level JSON object, in order.
  /// Assumes `json` is valid JSON (JSONSerialization has accepted it).
  private static func topLevelKeys(_ json: ArraySlice<UInt8>) -> [ArraySlice<UInt8>] {
    var keys = [ArraySlice<UInt8>]()
    var depth = 0, inString = false, escaped = false, expectingKey = false, capturing = false
    var keyStart = json.startIndex
    for i in json.indices {
      let b = json[i]
      if inString {
        if escaped {
          escaped = false
        } else if b == UInt8(ascii: "\\") {
          escaped = true
        } else if b == UInt8(ascii: "\"") {
          inString = false
          if capturing {
            keys.append(json[keyStart..<i])
            capturing = false
          }
        }
        continue
      }
      switch b {
      case UInt8(ascii: "{"):
        depth += 1
        if depth == 1 { expectingKey = true }
      case UInt8(ascii: "["):
        depth += 1
      case UInt8(ascii: "}"), UInt8(ascii: "]"):
        depth -= 1
      case UInt8(ascii: ","):
        if depth == 1 { expectingKey = true }
      case UInt8(ascii: "\""):
        inString = true
        if depth == 1 && expectingKey {
          capturing = true
          expectingKey = false
          keyStart = i + 1
        }
      default:
        break
      }
    }
    return keys
  }

  /// Unescapes the body of a JSON string.
  private static func decodeJSONString(_ raw: ArraySlice<UInt8>) -> String? {
    if !raw.contains(UInt8(ascii: "\\")) { return String(decoding: raw, as: UTF8.self) }
    let quoted = Data([UInt8(ascii: "\"")] + raw + [UInt8(ascii: "\"")])
    return (try? JSONSerialization.jsonObject(with: quoted, options: [.fragmentsAllowed])) as? String
  }

  /// One tensor's values, widened to `.f32` or `.i64`, from the `byteCount` little-endian bytes
  /// that `fill` writes into the buffer it is given. F32 and I64 are filled in place (on
  /// little-endian machines); the other dtypes go through one temporary buffer of raw bytes.
  private static func decodeValues(
    dtype: String, shape: [Int], byteCount: Int, fill: (UnsafeMutableRawBufferPointer) throws -> Void
  ) rethrows -> SafetensorsValue {
    #if _endian(little)
      if dtype == "F32" {
        return .f32(shape: shape, values: try [Float](unsafeUninitializedCapacity: byteCount / 4) { buf, done in
          try fill(UnsafeMutableRawBufferPointer(buf))
          done = byteCount / 4
        })
      }
      if dtype == "I64" {
        return .i64(shape: shape, values: try [Int64](unsafeUninitializedCapacity: byteCount / 8) { buf, done in
          try fill(UnsafeMutableRawBufferPointer(buf))
          done = byteCount / 8
        })
      }
    #endif
    let raw = try [UInt8](unsafeUninitializedCapacity: byteCount) { buf, done in
      try fill(UnsafeMutableRawBufferPointer(buf))
      done = byteCount
    }
    return raw.withUnsafeBytes { convertValues($0, dtype: dtype, shape: shape) }
  }

  /// Little-endian bytes of a validated entry → values, widened to `.f32` or `.i64`.
  private static func convertValues(_ raw: UnsafeRawBufferPointer, dtype: String, shape: [Int]) -> SafetensorsValue {
    func floats(_ size: Int, _ convert: (UnsafeRawBufferPointer, Int) -> Float) -> SafetensorsValue {
      let n = raw.count / size
      return .f32(shape: shape, values: [Float](unsafeUninitializedCapacity: n) { buf, done in
        for i in 0..<n { buf[i] = convert(raw, i * size) }
        done = n
      })
    }
    func ints(_ size: Int, _ convert: (UnsafeRawBufferPointer, Int) -> Int64) -> SafetensorsValue {
      let n = raw.count / size
      return .i64(shape: shape, values: [Int64](unsafeUninitializedCapacity: n) { buf, done in
        for i in 0..<n { buf[i] = convert(raw, i * size) }
        done = n
      })
    }
    func u16(_ r: UnsafeRawBufferPointer, _ o: Int) -> UInt16 { UInt16(littleEndian: r.loadUnaligned(fromByteOffset: o, as: UInt16.self)) }
    func u32(_ r: UnsafeRawBufferPointer, _ o: Int) -> UInt32 { UInt32(littleEndian: r.loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
    func u64(_ r: UnsafeRawBufferPointer, _ o: Int) -> UInt64 { UInt64(littleEndian: r.loadUnaligned(fromByteOffset: o, as: UInt64.self)) }
    switch dtype {
    case "F32": return floats(4) { Float(bitPattern: u32($0, $1)) }
    case "F64": return floats(8) { Float(Double(bitPattern: u64($0, $1))) }
    case "F16": return floats(2) { halfToFloat(u16($0, $1)) }
    case "BF16": return floats(2) { Float(bitPattern: UInt32(u16($0, $1)) << 16) }
    case "I64": return ints(8) { Int64(bitPattern: u64($0, $1)) }
    case "I32": return ints(4) { Int64(Int32(bitPattern: u32($0, $1))) }
    case "U32": return ints(4) { Int64(u32($0, $1)) }
    case "I16": return ints(2) { Int64(Int16(bitPattern: u16($0, $1))) }
    case "U16": return ints(2) { Int64(u16($0, $1)) }
    case "I8": return ints(1) { Int64(Int8(bitPattern: $0[$1])) }
    case "U8": return ints(1) { Int64($0[$1]) }
    case "BOOL": return ints(1) { $0[$1] != 0 ? 1 : 0 }
    default: preconditionFailure("convertValues: \(dtype) passed validation but has no decoder")
    }
  }

  /// IEEE 754 half → single precision (exact).
  static func halfToFloat(_ h: UInt16) -> Float {
    let sign: UInt32 = UInt32(h >> 15) << 31
    let exponent = Int((h >> 10) & 0x1F)
    let mantissa = UInt32(h & 0x3FF)
    if exponent == 0 {
      let v = Float(mantissa) / 16_777_216  // mantissa · 2^-24
      return sign == 0 ? v : -v
    }
    if exponent == 31 { return Float(bitPattern: sign | 0x7F80_0000 | mantissa << 13) }
    return Float(bitPattern: sign | UInt32(exponent - 15 + 127) << 23 | mantissa << 13)
  }

  // MARK: - Encoding

  /// The file's bytes: header (compact JSON, `__metadata__` first when non-empty, entries by
  /// dtype alignment descending — I64 before F32 — then by name, padded with spaces to a
  /// multiple of 8), then the data in the same order. A `.converted` value is written widened,
  /// as F32 or I64.
  /// - Precondition: each value holds exactly `shape.product` values; no tensor is named `__metadata__`.
  public func encode() -> [UInt8] {
    let names = tensors.keys.sorted { a, b in
      let sa = tensors[a]!.elementSize, sb = tensors[b]!.elementSize
      if sa != sb { return sa > sb }
      return a.utf8.lexicographicallyPrecedes(b.utf8)
    }
    var json = "{"
    var first = true
    if !metadata.isEmpty {
      json += "\"__metadata__\":{"
      let keys = metadata.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
      json += keys.map { jsonString($0) + ":" + jsonString(metadata[$0]!) }.joined(separator: ",")
      json += "}"
      first = false
    }
    var offset = 0
    for name in names {
      let v = tensors[name]!.widened
      precondition(name != "__metadata__", "safetensors: a tensor cannot be named __metadata__")
      let elements = v.shape.reduce(1, *)
      precondition(v.valueCount == elements,
        "safetensors: tensor \"\(name)\" has shape \(Shape.text(v.shape)) but \(v.valueCount) values")
      let size = elements * v.elementSize
      if !first { json += "," }
      first = false
      json += jsonString(name) + ":{\"dtype\":\"\(v.dtype)\",\"shape\":["
        + v.shape.map(String.init).joined(separator: ",") + "],\"data_offsets\":[\(offset),\(offset + size)]}"
      offset += size
    }
    json += "}"
    var header = Array(json.utf8)
    while header.count % 8 != 0 { header.append(UInt8(ascii: " ")) }

    var out = [UInt8]()
    out.reserveCapacity(8 + header.count + offset)
    let n = UInt64(header.count)
    for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: n >> (8 * UInt64(i)))) }
    out += header
    for name in names {
      switch tensors[name]!.widened {
      case let .f32(_, values):
        #if _endian(little)
          values.withUnsafeBytes { out += $0 }
        #else
          for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { out += $0 } }
        #endif
      case let .i64(_, values):
        #if _endian(little)
          values.withUnsafeBytes { out += $0 }
        #else
          for v in values { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        #endif
      case .converted:
        preconditionFailure("widened is never .converted")
      }
    }
    return out
  }

  /// A JSON string literal escaped as serde_json does.
  private func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
      switch u {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      case "\u{08}": out += "\\b"
      case "\u{0C}": out += "\\f"
      default:
        if u.value < 0x20 {
          let hex = String(u.value, radix: 16)
          out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        } else {
          out.unicodeScalars.append(u)
        }
      }
    }
    return out + "\""
  }
}

/// A safetensors header validated against the size of its file: the metadata and where each
/// tensor's bytes lie. `SafetensorsFile.readHeader(path:)` returns it without reading any tensor
/// data; `read(path:)` and `decode(_:name:)` check every file through it before they copy data.
public struct SafetensorsHeader: Equatable, Sendable {
  /// One tensor's entry in the header.
  public struct Entry: Equatable, Sendable {
    /// The tensor's name.
    public var name: String
    /// The dtype as written in the file (`"F32"`, `"F16"`, …): always one the reader converts.
    public var dtype: String
    /// The shape, outermost first (`[]` for a scalar).
    public var shape: [Int]
    /// The tensor's bytes within the data buffer (relative to `dataStart`, END exclusive).
    public var dataOffsets: Range<Int>

    /// An entry with these fields.
    public init(name: String, dtype: String, shape: [Int], dataOffsets: Range<Int>) {
      self.name = name
      self.dtype = dtype
      self.shape = shape
      self.dataOffsets = dataOffsets
    }
  }

  /// The `__metadata__` map (empty when the file has none).
  public var metadata: [String: String]
  /// The tensors in the order of their data; they tile the data buffer exactly.
  public var entries: [Entry]
  /// Where the data buffer starts in the file: 8 + the header length.
  public var dataStart: Int
  /// The file's size in bytes: `dataStart` + the data buffer's size.
  public var fileSize: Int
}

/// A regular file open for reading, for `SafetensorsFile.read(path:)`: positioned reads of
/// exact sizes, each error a `SafetensorsError.io` naming the file.
/// `close(2)`, under a name that `ReadOnlyFile.close()` does not shadow.
private func closeDescriptor(_ fd: Int32) { _ = close(fd) }

private struct ReadOnlyFile {
  let path: String
  let fd: Int32
  /// The size fstat reported when the file was opened.
  let size: Int

  init(path: String) throws {
    fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw SafetensorsError.io(file: path, reason: "cannot open: \(systemErrorText())") }
    var st = stat()
    guard fstat(fd, &st) == 0 else {
      let reason = systemErrorText()
      closeDescriptor(fd)
      throw SafetensorsError.io(file: path, reason: "cannot stat: \(reason)")
    }
    guard (st.st_mode & S_IFMT) == S_IFREG else {
      closeDescriptor(fd)
      throw SafetensorsError.io(file: path, reason: "cannot read: not a regular file")
    }
    self.path = path
    size = Int(st.st_size)
  }

  func close() { closeDescriptor(fd) }

  /// Fills `destination` with the file's bytes from `offset` on.
  /// - Throws: `SafetensorsError.io` on a read error, or when the file ends early (it shrank
  ///   after it was opened).
  func read(at offset: Int, into destination: UnsafeMutableRawBufferPointer) throws {
    var done = 0
    while done < destination.count {
      let n = pread(fd, destination.baseAddress! + done, destination.count - done, off_t(offset + done))
      if n < 0 {
        if errno == EINTR { continue }
        throw SafetensorsError.io(file: path, reason: "cannot read: \(systemErrorText())")
      }
      if n == 0 {
        throw SafetensorsError.io(
          file: path,
          reason: "the file ends at byte \(offset + done) but was \(size) bytes when opened; another program "
            + "changed it while it was read: read it again once it is complete")
      }
      done += n
    }
  }

  /// Reads and validates the length and the header, checked against the file's size before the
  /// header itself is read (so at most `maxHeaderSize` bytes are allocated here).
  func readHeader() throws -> SafetensorsHeader {
    var prefix = [UInt8](repeating: 0, count: Swift.min(size, 8))
    try prefix.withUnsafeMutableBytes { try read(at: 0, into: $0) }
    let n = try SafetensorsFile.headerLength(prefix: prefix, fileSize: size, name: path)
    var json = [UInt8](repeating: 0, count: n)
    try json.withUnsafeMutableBytes { try read(at: 8, into: $0) }
    return try SafetensorsFile.parseHeader(json[...], fileSize: size, name: path)
  }
}

// MARK: - State dicts

/// A model's state as named tensors, with PyTorch's names and dtypes: every parameter as F32
/// with its shape (`conv.weight` `[Cout, Cin, K, K]`, …), BatchNorm's `running_mean` and
/// `running_var` as F32 `[C]`, and `num_batches_tracked` as an I64 scalar (shape `[]`).
public func stateDict(of model: Module) -> [String: SafetensorsValue] {
  var out = [String: SafetensorsValue]()
  for (name, p) in model.namedParameters() { out[name] = SafetensorsValue(p.value) }
  for (name, b) in model.namedBuffers() {
    switch b {
    case .float(let t): out[name] = SafetensorsValue(t)
    case .int64(let box): out[name] = .i64(shape: [], values: [box.value])
    }
  }
  return out
}

/// The file dtypes a float parameter or buffer loads from: F32, and F16, BF16 and F64 converted to
/// F32, as PyTorch's `copy_` casts them. Integer and bool data for a float tensor is an error.
let floatStateDtypes: Set<String> = ["F32", "F16", "BF16", "F64"]

/// The file dtypes an integer buffer (`num_batches_tracked`) loads from: I64, as PyTorch saves it,
/// and I32, as some exporters narrow it. Floats, bool and the narrower or unsigned integers are errors.
let integerStateDtypes: Set<String> = ["I64", "I32"]

/// Copies a state dict into a model, strictly, like PyTorch's `load_state_dict(strict=True)`:
/// every parameter and buffer of the model must be present with the same shape and a fitting
/// dtype, and there must be no other keys. Parameters and float buffers take F32, or F16, BF16
/// or F64 converted to F32 (as PyTorch's `copy_` casts); integer buffers take an I64 (or I32)
/// scalar. All problems are collected into one `SafetensorsError.stateDictMismatch` naming
/// `file` and every offending tensor, with dtypes as written in the file ("dtype mismatch for
/// conv1.weight: expected F32, got I32"); in that case the model is left unchanged.
public func loadStateDict(_ tensors: [String: SafetensorsValue], into model: Module, file: String) throws {
  try loadStateDict(tensors, into: model, file: file, strict: true)
}

extension Module {
  /// This module's state_dict, as PyTorch's `state_dict()`: every parameter as F32 with its
  /// shape (`conv1.weight` `[Cout, Cin, K, K]`, …), BatchNorm's `running_mean`/`running_var`
  /// as F32 `[C]` and `num_batches_tracked` as an I64 scalar. Copies of the values: later
  /// training does not change them. Write it with `SafetensorsFile(tensors:).write(path:)`.
  public func stateDict() -> [String: SafetensorsValue] { Training.stateDict(of: self) }

  /// Copies `tensors` into this module's parameters and buffers, as PyTorch's
  /// `load_state_dict(state_dict, strict)`. With `strict` every parameter and buffer must be
  /// present and there must be no other keys; without it missing and unexpected keys are
  /// skipped and returned. Either way a present key of the wrong shape or dtype is an error,
  /// and on any error the module is left unchanged. `file` names the source in error messages.
  /// - Returns: the missing keys and the unexpected keys (both empty when `strict`).
  @discardableResult
  public func loadStateDict(_ tensors: [String: SafetensorsValue], strict: Bool = true, file: String = "state dict") throws
    -> (missing: [String], unexpected: [String])
  {
    try Training.loadStateDict(tensors, into: self, file: file, strict: strict)
  }
}

/// The loader behind `loadStateDict`: strict, or skipping (and returning) missing and unexpected keys.
@discardableResult
func loadStateDict(_ tensors: [String: SafetensorsValue], into model: Module, file: String, strict: Bool) throws
  -> (missing: [String], unexpected: [String])
{
  let params = model.namedParameters()
  let buffers = model.namedBuffers()
  var expectedNames = Set<String>()
  var missing = [String](), mismatched = [String]()

  // `wanted` is how the message names the accepted dtypes.
  func check(_ name: String, expected: String, accepted: Set<String>, wanted: String, shape: [Int]) {
    expectedNames.insert(name)
    guard let v = tensors[name] else {
      missing.append(name)
      return
    }
    // `accepted` lists file dtypes; the widened kind must agree too, for hand-made `.converted` values.
    if !accepted.contains(v.dtype) || v.widened.dtype != expected {
      mismatched.append("dtype mismatch for \(name): expected \(wanted), got \(v.dtype)")
    } else if v.shape != shape {
      mismatched.append("size mismatch for \(name): expected shape \(Shape.text(shape)), got \(Shape.text(v.shape))")
    } else if v.valueCount != shape.reduce(1, *) {
      mismatched.append("\(name): shape \(Shape.text(shape)) but \(v.valueCount) values")
    }
  }
  for (name, p) in params { check(name, expected: "F32", accepted: floatStateDtypes, wanted: "F32", shape: p.shape) }
  for (name, b) in buffers {
    switch b {
    case .float(let t): check(name, expected: "F32", accepted: floatStateDtypes, wanted: "F32", shape: t.shape)
    case .int64: check(name, expected: "I64", accepted: integerStateDtypes, wanted: "I64 (or I32)", shape: [])
    }
  }
  let unexpected = tensors.keys.filter { !expectedNames.contains($0) }.sorted()
  guard (!strict || (missing.isEmpty && unexpected.isEmpty)), mismatched.isEmpty else {
    throw SafetensorsError.stateDictMismatch(file: file, missing: strict ? missing : [], unexpected: strict ? unexpected : [],
      mismatched: mismatched)
  }

  func copy(_ values: [Float], into t: Tensor) {
    values.withUnsafeBufferPointer { t.data.update(from: $0.baseAddress!, count: t.count) }
  }
  for (name, p) in params {
    if case let .f32(_, values)? = tensors[name]?.widened, !values.isEmpty { copy(values, into: p.value) }
  }
  for (name, b) in buffers {
    switch (b, tensors[name]?.widened) {
    case let (.float(t), .f32(_, values)?): if !values.isEmpty { copy(values, into: t) }
    case let (.int64(box), .i64(_, values)?): box.value = values[0]
    default: break
    }
  }
  return (missing, unexpected)
}
