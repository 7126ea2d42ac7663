// FormatTests: the file formats and data sets of the Training module: safetensors (byte-exact
// vectors, round trips, every corruption the reader must reject, state dicts, interop with the
// Python reference), IDX/Fashion-MNIST, CIFAR-10 binary, synthetic shapes, the batch loader and
// atomic writes. Everything runs on small files made in a temporary directory.
import CZlib
import Foundation
import NN
import TensorCore
import Training
import XCTest

final class FormatTests: XCTestCase {
  private var tempDir = ""

  override func setUpWithError() throws {
    tempDir = NSTemporaryDirectory() + "FormatTests-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: tempDir, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws {
    try? FileManager.default.removeItem(atPath: tempDir)
  }

  // MARK: - Helpers

  /// A safetensors file from a literal header (length = its UTF-8 size, unpadded) and data bytes.
  private func rawFile(_ header: String, data: [UInt8] = []) -> [UInt8] {
    let h = Array(header.utf8)
    var out = [UInt8]()
    for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: UInt64(h.count) >> (8 * UInt64(i)))) }
    return out + h + data
  }

  private func lengthPrefix(_ n: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: n >> (8 * UInt64($0))) } }

  /// Asserts that decoding fails with a `SafetensorsError` accepted by `check`, and that reading
  /// the same bytes from a file (`read(path:)`, which checks the header before reading data, and
  /// `readHeader(path:)`, which reads no data) fails with the very same error.
  private func assertRejects(
    _ bytes: [UInt8], _ what: String, file: StaticString = #filePath, line: UInt = #line,
    _ check: (SafetensorsError) -> Bool
  ) {
    let path = tempDir + "/bad.safetensors"
    var decodeError: SafetensorsError?
    do {
      _ = try SafetensorsFile.decode(bytes, name: path)
      XCTFail("\(what): decoding succeeded", file: file, line: line)
    } catch let e as SafetensorsError {
      decodeError = e
      XCTAssertTrue(check(e), "\(what): wrong error: \(e)", file: file, line: line)
      XCTAssertTrue(e.description.contains("bad.safetensors"), "\(what): message lacks the file name: \(e)",
        file: file, line: line)
    } catch {
      XCTFail("\(what): unexpected error type \(error)", file: file, line: line)
    }
    do {
      try write(path, bytes)
    } catch {
      return XCTFail("\(what): cannot write \(path): \(error)", file: file, line: line)
    }
    XCTAssertThrowsError(try SafetensorsFile.read(path: path), "\(what): read(path:)", file: file, line: line) {
      XCTAssertEqual($0 as? SafetensorsError, decodeError, "\(what): read(path:) and decode disagree", file: file, line: line)
    }
    XCTAssertThrowsError(try SafetensorsFile.readHeader(path: path), "\(what): readHeader(path:)", file: file, line: line) {
      XCTAssertEqual($0 as? SafetensorsError, decodeError, "\(what): readHeader(path:) and decode disagree", file: file, line: line)
    }
  }

  private func f32Bytes(_ v: [Float]) -> [UInt8] { v.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) } }

  /// A small model with every kind of state: conv + BN (buffers) + linear.
  private func smallModel(seed: UInt64) -> Sequential {
    var rng = SeededGenerator(seed: seed)
    return Sequential([
      ("conv", Conv2D(inChannels: 1, outChannels: 2, kernelSize: 3, padding: 1, rng: &rng)),
      ("bn", BatchNorm2D(channels: 2)),
      ("relu", ReLU()),
      ("flat", Flatten()),
      ("fc", Linear(inFeatures: 2 * 4 * 4, outFeatures: 3, rng: &rng)),
    ])
  }

  /// Writes `bytes` gzip-compressed with zlib.
  private func writeGzip(_ path: String, _ bytes: [UInt8]) {
    guard let gz = gzopen(path, "wb") else { return XCTFail("gzopen \(path)") }
    let n = bytes.withUnsafeBytes { gzwrite(gz, $0.baseAddress, UInt32($0.count)) }
    XCTAssertEqual(Int(n), bytes.count)
    XCTAssertEqual(gzclose(gz), Z_OK)
  }

  private func write(_ path: String, _ bytes: [UInt8]) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
  }

  // MARK: - Safetensors: byte-exact vectors from the reference implementation

  func testSafetensorsEmptyFileIsByteExact() throws {
    let bytes = SafetensorsFile().encode()
    XCTAssertEqual(bytes, [8, 0, 0, 0, 0, 0, 0, 0, 0x7B, 0x7D, 32, 32, 32, 32, 32, 32])
    let back = try SafetensorsFile.decode(bytes, name: "empty")
    XCTAssertTrue(back.tensors.isEmpty && back.metadata.isEmpty)
  }

  func testSafetensorsSingleTensorIsByteExact() throws {
    // safetensors/src/tensor.rs `test_serialization`: "attn.0", F32 [1, 2, 3], values 0...5 → N = 64.
    let file = SafetensorsFile(tensors: ["attn.0": .f32(shape: [1, 2, 3], values: [0, 1, 2, 3, 4, 5])])
    let expected: [UInt8] = [
      64, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 46, 48, 34, 58, 123, 34, 100,
      116, 121, 112, 101, 34, 58, 34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34,
      58, 91, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102, 115,
      101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 0, 0, 0, 0, 0, 0, 128, 63,
      0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64,
    ]
    XCTAssertEqual(file.encode(), expected)
    XCTAssertEqual(try SafetensorsFile.decode(expected, name: "attn"), file)
  }

  func testSafetensorsHeaderLayout() throws {
    let file = SafetensorsFile(
      metadata: ["format": "pt", "b": "2"],
      tensors: ["z.weight": .f32(shape: [3], values: [1, 2, 3]), "a.count": .i64(shape: [], values: [9]),
                "m": .f32(shape: [1], values: [4])])
    let bytes = file.encode()
    let n = Int(bytes[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
    XCTAssertEqual(n % 8, 0, "header padded to a multiple of 8")
    let header = String(decoding: bytes[8..<(8 + n)], as: UTF8.self)
    XCTAssertTrue(header.hasPrefix(#"{"__metadata__":{"b":"2","format":"pt"},"a.count":{"dtype":"I64","shape":[],"data_offsets":[0,8]},"m":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},"z.weight":"#), header)
    XCTAssertTrue(header.hasSuffix(" ") || n == header.trimmingCharacters(in: .whitespaces).utf8.count)
    XCTAssertEqual(bytes.count, 8 + n + 8 + 4 + 12)
  }

  func testSafetensorsRoundTripThroughAFile() throws {
    let file = SafetensorsFile(
      metadata: ["format": "pt", "quote\"back\\slash": "line\nbreak\ttab \u{01} é ✓", "": "empty key"],
      tensors: [
        "conv.weight": .f32(shape: [2, 1, 2, 2], values: [1, -2, 3.5, .pi, -0.0, 1e-30, .greatestFiniteMagnitude, -7]),
        "bn.num_batches_tracked": .i64(shape: [], values: [123_456_789_012]),
        "empty": .f32(shape: [0, 3], values: []),
        "empty.i": .i64(shape: [4, 0], values: []),
        "steps": .i64(shape: [3], values: [-1, .max, .min]),
        "ünïcode.name": .f32(shape: [1, 1], values: [.infinity]),
      ])
    let path = tempDir + "/round.safetensors"
    try file.write(path: path)
    let back = try SafetensorsFile.read(path: path)
    XCTAssertEqual(back, file)
    XCTAssertEqual(back.encode(), file.encode(), "encoding is deterministic")
    if case let .f32(_, v)? = back.tensors["conv.weight"] {
      XCTAssertEqual(v[4].sign, .minus, "-0.0 keeps its sign")
    } else {
      XCTFail("conv.weight")
    }
  }

  func testSafetensorsReadsOtherDtypes() throws {
    // F16 [1, -2, 65504, 2^-24], BF16 [1.5], F64 [0.1], I32 [-5], U8 [200], I8 [-3], BOOL [1, 0].
    var data = [UInt8]()
    data += [0x00, 0x3C, 0x00, 0xC0, 0xFF, 0x7B, 0x01, 0x00]  // F16, 0..8
    data += [0xC0, 0x3F]  // BF16 1.5, 8..10
    data += withUnsafeBytes(of: (0.1 as Double).bitPattern.littleEndian, Array.init)  // 10..18
    data += withUnsafeBytes(of: Int32(-5).littleEndian, Array.init)  // 18..22
    data += [200, 0xFD, 1, 0]  // U8 22..23, I8 23..24, BOOL 24..26
    let header = """
      {"h":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[8,10]},\
      "d":{"dtype":"F64","shape":[],"data_offsets":[10,18]},"i":{"dtype":"I32","shape":[1],"data_offsets":[18,22]},\
      "u":{"dtype":"U8","shape":[1],"data_offsets":[22,23]},"s":{"dtype":"I8","shape":[1],"data_offsets":[23,24]},\
      "f":{"dtype":"BOOL","shape":[2],"data_offsets":[24,26]}}
      """
    let file = try SafetensorsFile.decode(rawFile(header, data: data), name: "dtypes")
    // Each keeps the file's dtype and holds its values widened to F32 or I64.
    XCTAssertEqual(file.tensors["h"], .converted(dtype: "F16", value: .f32(shape: [4], values: [1, -2, 65504, 1.0 / 16_777_216])))
    XCTAssertEqual(file.tensors["b"], .converted(dtype: "BF16", value: .f32(shape: [1], values: [1.5])))
    XCTAssertEqual(file.tensors["d"], .converted(dtype: "F64", value: .f32(shape: [], values: [Float(0.1 as Double)])))
    XCTAssertEqual(file.tensors["i"], .converted(dtype: "I32", value: .i64(shape: [1], values: [-5])))
    XCTAssertEqual(file.tensors["u"], .converted(dtype: "U8", value: .i64(shape: [1], values: [200])))
    XCTAssertEqual(file.tensors["s"], .converted(dtype: "I8", value: .i64(shape: [1], values: [-3])))
    XCTAssertEqual(file.tensors["f"], .converted(dtype: "BOOL", value: .i64(shape: [2], values: [1, 0])))
    XCTAssertEqual(file.tensors["h"]?.dtype, "F16")
    XCTAssertEqual(file.tensors["h"]?.shape, [4])
    XCTAssertEqual(file.tensors["h"]?.valueCount, 4)
    XCTAssertEqual(file.tensors["f"]?.widened, .i64(shape: [2], values: [1, 0]))
    // Written back, converted values are F32 and I64, as before.
    let rewritten = try SafetensorsFile.decode(file.encode(), name: "rewritten")
    XCTAssertEqual(rewritten.tensors, file.tensors.mapValues { $0.widened })
    // F16 infinity and NaN.
    let special = try SafetensorsFile.decode(
      rawFile(#"{"x":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#, data: [0x00, 0xFC, 0x00, 0x7E]), name: "special")
    guard case let .f32(_, v)? = special.tensors["x"]?.widened else { return XCTFail("x") }
    XCTAssertEqual(v[0], -.infinity)
    XCTAssertTrue(v[1].isNaN)
  }

  // MARK: - Safetensors: corrupt files

  func testSafetensorsRejectsBadLengthsAndHeaders() {
    assertRejects([1, 2, 3], "3-byte file") { if case .fileTooShort(_, 3) = $0 { return true } else { return false } }
    assertRejects([], "empty file") { if case .fileTooShort(_, 0) = $0 { return true } else { return false } }
    assertRejects(lengthPrefix(100_000_001), "header > 100 MB") {
      if case .headerTooLarge(_, 100_000_001) = $0 { return true } else { return false }
    }
    assertRejects(lengthPrefix(.max) + [0x7B], "header length 2^64-1") {
      if case .headerTooLarge = $0 { return true } else { return false }
    }
    assertRejects(lengthPrefix(100) + Array("{}".utf8), "header past end") {
      if case .headerPastEnd(_, 100, 10) = $0 { return true } else { return false }
    }
    assertRejects(lengthPrefix(0), "empty header") { if case .invalidHeader = $0 { return true } else { return false } }
    assertRejects(rawFile(" {}     "), "leading space") {
      if case .invalidHeader(_, let r) = $0 { return r.contains("'{'") } else { return false }
    }
    assertRejects(rawFile("[]      "), "array header") { if case .invalidHeader = $0 { return true } else { return false } }
    assertRejects(rawFile(#"{"a":"#), "truncated JSON") {
      if case .invalidHeader(_, let r) = $0 { return r.contains("JSON") } else { return false }
    }
    assertRejects(rawFile(#"{"a":1} x"#), "junk after JSON") { if case .invalidHeader = $0 { return true } else { return false } }
    assertRejects(lengthPrefix(6) + [0x7B, 0x22, 0xFF, 0x22, 0x3A, 0x7D], "invalid UTF-8") {
      if case .invalidHeader = $0 { return true } else { return false }
    }
    let deep = "{\"a\":" + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000) + "}"
    assertRejects(rawFile(deep), "100,000 nested arrays") { _ in true }
  }

  func testSafetensorsRejectsBadEntries() {
    let cases: [(String, String, [UInt8], (SafetensorsError) -> Bool)] = [
      ("entry not an object", #"{"w":3}"#, [], { if case .invalidEntry(_, "w", _) = $0 { return true }; return false }),
      ("missing dtype", #"{"w":{"shape":[1],"data_offsets":[0,4]}}"#, [0, 0, 0, 0],
       { if case .invalidEntry(_, "w", let r) = $0 { return r.contains("dtype") }; return false }),
      ("missing shape", #"{"w":{"dtype":"F32","data_offsets":[0,4]}}"#, [0, 0, 0, 0],
       { if case .invalidEntry(_, "w", let r) = $0 { return r.contains("shape") }; return false }),
      ("missing data_offsets", #"{"w":{"dtype":"F32","shape":[1]}}"#, [0, 0, 0, 0],
       { if case .invalidEntry(_, "w", let r) = $0 { return r.contains("data_offsets") }; return false }),
      ("old 'offsets' key", #"{"w":{"dtype":"F32","shape":[1],"offsets":[0,4]}}"#, [0, 0, 0, 0],
       { if case .invalidEntry(_, "w", let r) = $0 { return r.contains("data_offsets") }; return false }),
      ("dtype not a string", #"{"w":{"dtype":32,"shape":[1],"data_offsets":[0,4]}}"#, [0, 0, 0, 0],
       { if case .invalidEntry(_, "w", _) = $0 { return true }; return false }),
      ("negative dim", #"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, [0, 0, 0, 0],
       { if case .invalidEntry(_, "w", _) = $0 { return true }; return false }),
      ("fractional dim", #"{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}"#, [0, 0, 0, 0],
       { if case .invalidEntry(_, "w", _) = $0 { return true }; return false }),
      ("boolean dim", #"{"w":{"dtype":"F32","shape":[true],"data_offsets":[0,4]}}"#, [0, 0, 0, 0],
       { if case .invalidEntry(_, "w", _) = $0 { return true }; return false }),
      ("three offsets", #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#, [0, 0, 0, 0],
       { if case .invalidEntry(_, "w", _) = $0 { return true }; return false }),
      ("huge offset", #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615]}}"#, [0, 0, 0, 0],
       { if case .invalidEntry(_, "w", _) = $0 { return true }; return false }),
      ("unknown dtype", #"{"w":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}"#, [0, 0, 0, 0],
       { if case .unknownDtype(_, "w", "F33") = $0 { return true }; return false }),
      ("unsupported dtype", #"{"w":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}"#, [UInt8](repeating: 0, count: 8),
       { if case .unsupportedDtype(_, "w", "C64") = $0 { return true }; return false }),
      ("shape overflow", #"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#, [0, 0, 0, 0],
       { if case .shapeOverflow(_, "w", _) = $0 { return true }; return false }),
      ("byte count overflow", #"{"w":{"dtype":"I64","shape":[2305843009213693952],"data_offsets":[0,8]}}"#,
       [UInt8](repeating: 0, count: 8), { if case .shapeOverflow(_, "w", _) = $0 { return true }; return false }),
      ("size mismatch", #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, [0, 0, 0, 0],
       { if case .sizeMismatch(_, "w", "F32", [2], 8, 4) = $0 { return true }; return false }),
      ("end past buffer", #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, [0, 0, 0, 0],
       { if case .offsetsOutOfRange(_, "w", 0, 8, 4) = $0 { return true }; return false }),
      ("begin after end", #"{"w":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}"#, [0, 0, 0, 0],
       { if case .offsetsOutOfRange(_, "w", 4, 0, 4) = $0 { return true }; return false }),
      ("overlap", #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
       [UInt8](repeating: 0, count: 12), { if case .overlap(_, "b", "a") = $0 { return true }; return false }),
      ("same offsets twice", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
       [UInt8](repeating: 0, count: 4), { if case .overlap = $0 { return true }; return false }),
      ("hole", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
       [UInt8](repeating: 0, count: 12), { if case .hole(_, "b", 8, 4) = $0 { return true }; return false }),
      ("hole at start", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
       [UInt8](repeating: 0, count: 8), { if case .hole(_, "a", 4, 0) = $0 { return true }; return false }),
      ("trailing bytes", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
       [UInt8](repeating: 0, count: 8), { if case .incompleteBuffer(_, 4, 8) = $0 { return true }; return false }),
      ("data but no tensors", "{}", [1], { if case .incompleteBuffer(_, 0, 1) = $0 { return true }; return false }),
      ("duplicate name", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
       [UInt8](repeating: 0, count: 4), { if case .duplicateName(_, "a") = $0 { return true }; return false }),
      ("duplicate name, escaped", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"\u0061":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
       [UInt8](repeating: 0, count: 4), { if case .duplicateName(_, "a") = $0 { return true }; return false }),
      ("metadata value not a string", #"{"__metadata__":{"k":1}}"#, [],
       { if case .invalidMetadata(_, let r) = $0 { return r.contains("\"k\"") }; return false }),
      ("metadata value an object", #"{"__metadata__":{"k":{"x":"y"}}}"#, [],
       { if case .invalidMetadata = $0 { return true }; return false }),
      ("metadata not an object", #"{"__metadata__":["k"]}"#, [],
       { if case .invalidMetadata = $0 { return true }; return false }),
    ]
    for (what, header, data, check) in cases {
      assertRejects(rawFile(header, data: data), what, check)
    }
    // Sanity: the same shapes of header are accepted when well formed (nested keys named like
    // the top level do not count as duplicates; escaped quotes in names are fine).
    let ok = #"{"__metadata__":{"a":"x"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"q\"{":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}}"#
    XCTAssertNoThrow(try SafetensorsFile.decode(rawFile(ok, data: f32Bytes([2])), name: "ok"))
  }

  func testSafetensorsNeverCrashesOnMutatedFiles() throws {
    let valid = SafetensorsFile(
      metadata: ["format": "pt"],
      tensors: ["w": .f32(shape: [2, 3], values: [1, 2, 3, 4, 5, 6]), "n": .i64(shape: [], values: [3]),
                "e": .f32(shape: [0], values: [])]
    ).encode()
    // Every truncation is rejected.
    for k in 0..<valid.count {
      XCTAssertThrowsError(try SafetensorsFile.decode(Array(valid[0..<k]), name: "t")) {
        XCTAssertTrue($0 is SafetensorsError, "truncated to \(k): \($0)")
      }
    }
    // Random byte flips either decode or throw a SafetensorsError.
    var rng = SeededGenerator(seed: 42)
    for _ in 0..<1500 {
      var b = valid
      for _ in 0..<(1 + rng.nextInt(below: 3)) {
        b[rng.nextInt(below: b.count)] = UInt8(truncatingIfNeeded: rng.next())
      }
      do { _ = try SafetensorsFile.decode(b, name: "m") } catch { XCTAssertTrue(error is SafetensorsError, "\(error)") }
    }
  }

  func testSafetensorsReadMissingFileNamesIt() {
    let path = tempDir + "/nope.safetensors"
    XCTAssertThrowsError(try SafetensorsFile.read(path: path)) {
      guard case .io(let file, _)? = $0 as? SafetensorsError else { return XCTFail("\($0)") }
      XCTAssertEqual(file, path)
      XCTAssertTrue("\($0)".contains(path))
    }
  }

  func testSafetensorsReadRefusesNonRegularFiles() {
    XCTAssertThrowsError(try SafetensorsFile.read(path: tempDir)) {
      XCTAssertEqual($0 as? SafetensorsError, .io(file: tempDir, reason: "cannot read: not a regular file"))
    }
  }

  // MARK: - Safetensors: the header is checked before the data is read

  /// A file with a valid header of one F32 tensor `w` of `elements` values, and `dataBytes` bytes
  /// after it: only the header is written, the rest is a hole (a sparse file, no disk used).
  private func sparseFile(_ name: String, elements: Int, dataBytes: Int) throws -> String {
    let path = tempDir + "/" + name
    var header = Array(#"{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[\#(elements)],"data_offsets":[0,\#(4 * elements)]}}"#.utf8)
    while header.count % 8 != 0 { header.append(UInt8(ascii: " ")) }
    let prefix = lengthPrefix(UInt64(header.count)) + header
    try write(path, prefix)
    XCTAssertEqual(truncate(path, off_t(prefix.count + dataBytes)), 0, "truncate \(path) to extend it")
    return path
  }

  /// The process's peak resident set (VmHWM) in bytes, or nil where /proc is not there.
  private func peakResidentBytes() -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
      return line.split(separator: " ").compactMap { Int($0) }.first.map { $0 * 1024 }
    }
    return nil
  }

  func testSafetensorsReadChecksTheFileSizeBeforeReadingData() throws {
    // A header that declares a 4 GiB tensor over files one byte short of it, four bytes short and
    // eight bytes too long: each is refused from the header and fstat alone, so the peak memory
    // does not grow by the 4 GiB the old whole-file read (or a tensor array) would take.
    let elements = 1 << 30, declared = 4 * elements
    let peakBefore = peakResidentBytes()
    let cases: [(String, Int, (SafetensorsError) -> Bool)] = [
      ("short.safetensors", declared - 1, {
        if case .offsetsOutOfRange(_, "w", 0, declared, declared - 1) = $0 { return true } else { return false }
      }),
      ("short4.safetensors", declared - 4, {
        if case .offsetsOutOfRange(_, "w", 0, declared, declared - 4) = $0 { return true } else { return false }
      }),
      ("long.safetensors", declared + 8, {
        if case .incompleteBuffer(_, declared, declared + 8) = $0 { return true } else { return false }
      }),
    ]
    for (name, dataBytes, check) in cases {
      let path = try sparseFile(name, elements: elements, dataBytes: dataBytes)
      for (how, body) in [("read", { _ = try SafetensorsFile.read(path: path) }),
                          ("readHeader", { _ = try SafetensorsFile.readHeader(path: path) })] as [(String, () throws -> Void)] {
        XCTAssertThrowsError(try body(), "\(name) \(how)") {
          guard let e = $0 as? SafetensorsError else { return XCTFail("\(name) \(how): \($0)") }
          XCTAssertTrue(check(e), "\(name) \(how): wrong error: \(e)")
          XCTAssertTrue(e.description.hasPrefix(path + ": "), "\(name) \(how): the message must name the file: \(e)")
        }
      }
    }
    // When the size agrees, the header alone describes the 4 GiB tensor, without reading it.
    let path = try sparseFile("exact.safetensors", elements: elements, dataBytes: declared)
    let header = try SafetensorsFile.readHeader(path: path)
    XCTAssertEqual(header.metadata, ["format": "pt"])
    XCTAssertEqual(header.entries, [SafetensorsHeader.Entry(name: "w", dtype: "F32", shape: [elements], dataOffsets: 0..<declared)])
    XCTAssertEqual(header.fileSize, header.dataStart + declared)
    if let before = peakBefore, let after = peakResidentBytes() {
      XCTAssertLessThan(after - before, 256 << 20, "checking a 4 GiB file's header must not allocate its data")
    }
  }

  func testSafetensorsReadNamesTheFileForEachBrokenLayout() throws {
    let valid = SafetensorsFile(metadata: ["format": "pt"], tensors: ["w": .f32(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])]).encode()
    let n = Int(valid[0])  // the header is shorter than 256 bytes
    let cases: [(String, [UInt8], String, (SafetensorsError) -> Bool)] = [
      ("more data declared than present", Array(valid.dropLast(4)), "truncated", {
        if case .offsetsOutOfRange(_, "w", 0, 24, 20) = $0 { return true } else { return false }
      }),
      ("trailing garbage", valid + Array("garbage".utf8), "corrupt", {
        if case .incompleteBuffer(_, 24, 31) = $0 { return true } else { return false }
      }),
      ("huge header length", lengthPrefix(1 << 40) + Array(valid[8...]), "exceeds the limit", {
        if case .headerTooLarge(_, 1 << 40) = $0 { return true } else { return false }
      }),
      ("header length at the limit, file shorter", lengthPrefix(SafetensorsFile.maxHeaderSize) + Array(valid[8...]), "truncated", {
        if case .headerPastEnd(_, SafetensorsFile.maxHeaderSize, _) = $0 { return true } else { return false }
      }),
      ("truncated header", Array(valid.prefix(8 + n / 2)), "truncated", {
        if case .headerPastEnd(_, UInt64(n), 8 + n / 2) = $0 { return true } else { return false }
      }),
      ("length prefix cut short", Array(valid.prefix(5)), "fewer than the 8-byte header length", {
        if case .fileTooShort(_, 5) = $0 { return true } else { return false }
      }),
    ]
    for (what, bytes, advice, check) in cases {
      let path = tempDir + "/layout.safetensors"
      try write(path, bytes)
      XCTAssertThrowsError(try SafetensorsFile.read(path: path), what) {
        guard let e = $0 as? SafetensorsError else { return XCTFail("\(what): \($0)") }
        XCTAssertTrue(check(e), "\(what): wrong error: \(e)")
        XCTAssertTrue(e.description.hasPrefix(path + ": "), "\(what): \(e)")
        XCTAssertTrue(e.description.contains(advice), "\(what): \(e)")
      }
    }
    // And the intact file reads back, through read(path:) and readHeader(path:) alike.
    let path = tempDir + "/layout.safetensors"
    try write(path, valid)
    XCTAssertEqual(try SafetensorsFile.read(path: path).tensors["w"], .f32(shape: [2, 3], values: [1, 2, 3, 4, 5, 6]))
    XCTAssertEqual(try SafetensorsFile.readHeader(path: path).entries.map(\.shape), [[2, 3]])
  }

  // MARK: - State dicts

  func testStateDictNamesShapesAndDtypes() {
    let model = smallModel(seed: 1)
    let sd = stateDict(of: model)
    XCTAssertEqual(Set(sd.keys), [
      "conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
      "bn.num_batches_tracked", "fc.weight", "fc.bias",
    ])
    XCTAssertEqual(sd["conv.weight"]?.shape, [2, 1, 3, 3])
    XCTAssertEqual(sd["fc.weight"]?.shape, [3, 32])
    XCTAssertEqual(sd["bn.running_var"], .f32(shape: [2], values: [1, 1]))
    XCTAssertEqual(sd["bn.num_batches_tracked"], .i64(shape: [], values: [0]))
  }

  func testStateDictRoundTripsThroughSafetensors() throws {
    let a = smallModel(seed: 1)
    let bnA = a["bn"] as! BatchNorm2D
    bnA.runningMean[0] = 0.5
    bnA.runningVar[1] = 3
    bnA.numBatchesTracked.value = 42
    bnA.weight.value[1] = -2
    let path = tempDir + "/model.safetensors"
    try SafetensorsFile(metadata: ["format": "pt"], tensors: stateDict(of: a)).write(path: path)

    let b = smallModel(seed: 2)
    XCTAssertNotEqual(stateDict(of: b), stateDict(of: a))
    let loaded = try SafetensorsFile.read(path: path)
    XCTAssertEqual(loaded.metadata, ["format": "pt"])
    try loadStateDict(loaded.tensors, into: b, file: path)
    XCTAssertEqual(stateDict(of: b), stateDict(of: a))
    XCTAssertEqual((b["bn"] as! BatchNorm2D).numBatchesTracked.value, 42)
    // The loaded model computes the same function.
    a.eval()
    b.eval()
    var rng = SeededGenerator(seed: 9)
    let x = Tensor(zeros: [2, 1, 4, 4])
    x.fillNormal(using: &rng)
    XCTAssertEqual(try a.forward(x).array, try b.forward(x).array)
  }

  func testLoadStateDictIsStrictAndAtomic() throws {
    let source = stateDict(of: smallModel(seed: 1))
    let target = smallModel(seed: 2)
    let before = stateDict(of: target)

    func expectMismatch(_ tensors: [String: SafetensorsValue], _ what: String,
                        check: (_ missing: [String], _ unexpected: [String], _ mismatched: [String]) -> Void) {
      XCTAssertThrowsError(try loadStateDict(tensors, into: target, file: "ckpt.safetensors"), what) { error in
        guard case let .stateDictMismatch(file, missing, unexpected, mismatched)? = error as? SafetensorsError else {
          return XCTFail("\(what): \(error)")
        }
        XCTAssertEqual(file, "ckpt.safetensors")
        XCTAssertTrue("\(error)".contains("ckpt.safetensors"))
        check(missing, unexpected, mismatched)
      }
      XCTAssertEqual(stateDict(of: target), before, "\(what): the model must be unchanged")
    }

    var t = source
    t["fc.bias"] = nil
    t["bn.num_batches_tracked"] = nil
    expectMismatch(t, "missing") { m, u, x in
      XCTAssertEqual(Set(m), ["fc.bias", "bn.num_batches_tracked"])
      XCTAssertEqual(u, [])
      XCTAssertEqual(x, [])
    }

    t = source
    t["extra.weight"] = .f32(shape: [1], values: [0])
    t["fc.scale"] = .f32(shape: [1], values: [0])
    expectMismatch(t, "unexpected") { m, u, _ in
      XCTAssertEqual(m, [])
      XCTAssertEqual(u, ["extra.weight", "fc.scale"])
    }

    t = source
    t["fc.weight"] = .f32(shape: [32, 3], values: [Float](repeating: 0, count: 96))
    expectMismatch(t, "wrong shape") { _, _, x in
      XCTAssertEqual(x.count, 1)
      XCTAssertTrue(x[0].contains("fc.weight") && x[0].contains("[3, 32]") && x[0].contains("[32, 3]"), x[0])
    }

    t = source
    t["bn.num_batches_tracked"] = .f32(shape: [], values: [1])
    t["conv.bias"] = .i64(shape: [2], values: [1, 2])
    expectMismatch(t, "wrong dtype") { _, _, x in
      XCTAssertEqual(x.count, 2)
      XCTAssertTrue(x.contains { $0.contains("bn.num_batches_tracked") && $0.contains("I64") })
      XCTAssertTrue(x.contains { $0.contains("conv.bias") && $0.contains("F32") })
    }

    t = source
    t["conv.bias"] = .f32(shape: [2], values: [1])  // inconsistent value count
    expectMismatch(t, "value count") { _, _, x in XCTAssertTrue(x.first?.contains("conv.bias") ?? false) }

    t = source
    t["fc.bias"] = nil
    t["junk"] = .i64(shape: [], values: [1])
    t["conv.weight"] = .f32(shape: [2, 1, 3], values: [Float](repeating: 0, count: 6))
    expectMismatch(t, "everything at once") { m, u, x in
      XCTAssertEqual(m, ["fc.bias"])
      XCTAssertEqual(u, ["junk"])
      XCTAssertEqual(x.count, 1)
    }
  }

  /// A safetensors file of raw little-endian tensors `(name, dtype, shape, bytes)`, laid out in order.
  private func rawTensors(_ entries: [(String, String, [Int], [UInt8])]) -> [UInt8] {
    var offset = 0
    var data = [UInt8]()
    let fields = entries.map { name, dtype, shape, bytes -> String in
      defer { offset += bytes.count }
      data += bytes
      let dims = shape.map(String.init).joined(separator: ",")
      return "\"\(name)\":{\"dtype\":\"\(dtype)\",\"shape\":[\(dims)],\"data_offsets\":[\(offset),\(offset + bytes.count)]}"
    }
    return rawFile("{" + fields.joined(separator: ",") + "}", data: data)
  }

  func testLoadStateDictConvertsFloatsAndNamesTheFilesDtype() throws {
    let target = smallModel(seed: 2)
    let source = stateDict(of: smallModel(seed: 1))
    func le<T: FixedWidthInteger>(_ v: [T]) -> [UInt8] { v.flatMap { withUnsafeBytes(of: $0.littleEndian, Array.init) } }
    /// `source` with some tensors replaced by ones decoded from a file of other dtypes.
    func withReplaced(_ entries: [(String, String, [Int], [UInt8])]) throws -> [String: SafetensorsValue] {
      let decoded = try SafetensorsFile.decode(rawTensors(entries), name: "other.safetensors").tensors
      return source.merging(decoded) { _, new in new }
    }

    // F16, BF16 and F64 float tensors load as F32 (PyTorch's copy_ casts them).
    let half: [Float] = [0.5, -1.25], brain: [Float] = [1.5, -0.375, 2], double: [Double] = [1.5, 0.1]
    let converted = try withReplaced([
      ("conv.bias", "F16", [2], le(half.map { Float16($0).bitPattern })),
      ("fc.bias", "BF16", [3], le(brain.map { UInt16($0.bitPattern >> 16) })),
      ("bn.running_var", "F64", [2], le(double.map(\.bitPattern))),
      ("bn.num_batches_tracked", "I32", [], le([Int32(17)])),
    ])
    XCTAssertEqual(converted["conv.bias"]?.dtype, "F16")
    try loadStateDict(converted, into: target, file: "other.safetensors")
    let loaded = stateDict(of: target)
    XCTAssertEqual(loaded["conv.bias"], .f32(shape: [2], values: half))
    XCTAssertEqual(loaded["fc.bias"], .f32(shape: [3], values: brain))
    XCTAssertEqual(loaded["bn.running_var"], .f32(shape: [2], values: double.map(Float.init)))
    XCTAssertEqual(loaded["bn.num_batches_tracked"], .i64(shape: [], values: [17]))
    XCTAssertEqual(loaded["conv.weight"], source["conv.weight"])

    // Integer or bool data for a float tensor, and a float, bool or narrow count, are errors that
    // name the tensor and the dtype as written in the file; the model keeps every value.
    let before = loaded
    func expectRejected(_ entries: [(String, String, [Int], [UInt8])], _ lines: [String],
                        line: UInt = #line) throws {
      let tensors = try withReplaced(entries)
      XCTAssertThrowsError(try loadStateDict(tensors, into: target, file: "other.safetensors"), line: line) { error in
        guard case let .stateDictMismatch(_, missing, unexpected, mismatched)? = error as? SafetensorsError else {
          return XCTFail("\(error)", line: line)
        }
        XCTAssertEqual(missing + unexpected, [], line: line)
        XCTAssertEqual(Set(mismatched), Set(lines), line: line)
        for l in lines { XCTAssertTrue("\(error)".contains("other.safetensors") && "\(error)".contains(l), line: line) }
      }
      XCTAssertEqual(stateDict(of: target), before, "the model must be unchanged", line: line)
    }
    try expectRejected([("conv.weight", "I32", [2, 1, 3, 3], le([Int32](repeating: 1, count: 18)))],
      ["dtype mismatch for conv.weight: expected F32, got I32"])
    try expectRejected([("fc.bias", "BOOL", [3], [1, 0, 1])], ["dtype mismatch for fc.bias: expected F32, got BOOL"])
    try expectRejected([("bn.running_mean", "U8", [2], [3, 4])], ["dtype mismatch for bn.running_mean: expected F32, got U8"])
    let countError = { (dtype: String) in "dtype mismatch for bn.num_batches_tracked: expected I64 (or I32), got \(dtype)" }
    try expectRejected([("bn.num_batches_tracked", "F32", [], f32Bytes([3]))], [countError("F32")])
    try expectRejected([("bn.num_batches_tracked", "F16", [], le([Float16(3).bitPattern]))], [countError("F16")])
    try expectRejected([("bn.num_batches_tracked", "BOOL", [], [1])], [countError("BOOL")])
    try expectRejected([("bn.num_batches_tracked", "U8", [], [3])], [countError("U8")])
    // All at once, and the dtype is checked before the shape.
    try expectRejected([
      ("conv.bias", "I64", [2], le([Int64(1), 2])), ("fc.weight", "I16", [1], le([Int16(1)])),
      ("bn.num_batches_tracked", "F64", [], le([(1.0 as Double).bitPattern])),
    ], ["dtype mismatch for conv.bias: expected F32, got I64", "dtype mismatch for fc.weight: expected F32, got I16",
        countError("F64")])
  }

  // MARK: - Interop with the Python reference implementation

  func testPythonSafetensorsInterop() throws {
    let run = Interop.run
    guard (try? run(["-c", "import safetensors, numpy"]))?.status == 0 else {
      throw Interop.missing("Python's safetensors and numpy", install: "pip install safetensors numpy")
    }
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .appendingPathComponent("Fixtures/make_safetensors.py").path
    let made = try run([script, tempDir])
    XCTAssertEqual(made.status, 0, "make_safetensors.py failed")

    // Python → Swift.
    let basicPath = tempDir + "/basic.safetensors"
    let basic = try SafetensorsFile.read(path: basicPath)
    XCTAssertEqual(basic.metadata, ["format": "pt"])
    XCTAssertEqual(basic.tensors["conv.weight"], .f32(shape: [2, 1, 3, 3], values: (0..<18).map { Float($0) * 0.5 - 1 }))
    XCTAssertEqual(basic.tensors["conv.bias"], .f32(shape: [2], values: [0.25, -0.75]))
    XCTAssertEqual(basic.tensors["bn.num_batches_tracked"], .i64(shape: [], values: [7]))
    XCTAssertEqual(basic.tensors["steps"], .i64(shape: [3], values: [-3, 0, 1 << 40]))
    XCTAssertEqual(basic.tensors["empty"], .f32(shape: [0, 3], values: []))
    // Our writer reproduces the reference writer's bytes.
    XCTAssertEqual(basic.encode(), try readFileBytes(path: basicPath))

    let mixed = try SafetensorsFile.read(path: tempDir + "/mixed.safetensors")
    XCTAssertEqual(mixed.metadata, ["format": "np", "source": "fixture"])
    XCTAssertEqual(mixed.tensors["half"], .converted(dtype: "F16", value: .f32(shape: [4], values: [1, -2.5, 65504, Float(Float16(0.0001))])))
    XCTAssertEqual(mixed.tensors["double"], .converted(dtype: "F64", value: .f32(shape: [2, 2], values: [1, 2, 3, -0.125])))
    XCTAssertEqual(mixed.tensors["int32"], .converted(dtype: "I32", value: .i64(shape: [3], values: [-2_147_483_648, 5, 2_147_483_647])))
    XCTAssertEqual(mixed.tensors["bytes"], .converted(dtype: "U8", value: .i64(shape: [3], values: [0, 255, 7])))
    XCTAssertEqual(mixed.tensors["flags"], .converted(dtype: "BOOL", value: .i64(shape: [3], values: [1, 0, 1])))

    // Swift → Python.
    let ours = SafetensorsFile(
      metadata: ["format": "pt", "epoch": "3"],
      tensors: stateDict(of: smallModel(seed: 5)).merging(["scalar": .f32(shape: [], values: [2.5])]) { a, _ in a })
    let oursPath = tempDir + "/ours.safetensors"
    try ours.write(path: oursPath)
    let dumped = try run([script, "--dump", oursPath])
    XCTAssertEqual(dumped.status, 0, "python could not read our file")
    let json = try JSONSerialization.jsonObject(with: Data(dumped.out.utf8)) as! [String: Any]
    XCTAssertEqual(json["metadata"] as? [String: String], ["format": "pt", "epoch": "3"])
    let tensors = json["tensors"] as! [String: [String: Any]]
    XCTAssertEqual(Set(tensors.keys), Set(ours.tensors.keys))
    for (name, value) in ours.tensors {
      let t = tensors[name]!
      XCTAssertEqual(t["shape"] as? [Int], value.shape, name)
      XCTAssertEqual(t["dtype"] as? String, value.dtype == "F32" ? "float32" : "int64", name)
      switch value {
      case let .f32(_, v): XCTAssertEqual((t["values"] as! [Double]).map(Float.init), v, name)
      case let .i64(_, v): XCTAssertEqual((t["values"] as! [Int]).map(Int64.init), v, name)
      case .converted: XCTFail("\(name): a state dict holds only F32 and I64")
      }
    }
  }

  // MARK: - IDX and Fashion-MNIST

  func testIDXRoundTripGzippedAndPlain() throws {
    var rng = SeededGenerator(seed: 3)
    let pixels = (0..<(5 * 4 * 3)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
    let labels: [UInt8] = [0, 9, 3, 3, 7]
    writeGzip(tempDir + "/img.gz", idxBytes([5, 4, 3], pixels))
    try write(tempDir + "/lab", idxBytes([5], labels))
    let r = try IDX.read(path: tempDir + "/img.gz")
    XCTAssertEqual(r.type, 0x08)
    XCTAssertEqual(r.dims, [5, 4, 3])
    XCTAssertEqual(r.bytes, pixels)
    XCTAssertEqual(try IDX.read(path: tempDir + "/lab").bytes, labels)

    let f32 = idxBytes([2], [0x3F, 0x80, 0, 0, 0x40, 0, 0, 0], type: 0x0D)  // big-endian 1.0, 2.0
    writeGzip(tempDir + "/f.gz", f32)
    let rf = try IDX.read(path: tempDir + "/f.gz")
    XCTAssertEqual(rf.type, 0x0D)
    XCTAssertEqual(rf.dims, [2])
    XCTAssertEqual(rf.bytes.count, 8)

    let ds = try FashionMNIST.load(imagesFile: tempDir + "/img.gz", labelsFile: tempDir + "/lab")
    XCTAssertEqual(ds.count, 5)
    XCTAssertEqual([ds.channels, ds.height, ds.width], [1, 4, 3])
    XCTAssertEqual(ds.pixels, pixels)
    XCTAssertEqual(ds.labels, labels)
  }

  func testFashionMNISTLoadsADirectory() throws {
    for (prefix, n) in [("train", 6), ("t10k", 2)] {
      let px = [UInt8](repeating: UInt8(n), count: n * 28 * 28)
      writeGzip(tempDir + "/\(prefix)-images-idx3-ubyte.gz", idxBytes([n, 28, 28], px))
      writeGzip(tempDir + "/\(prefix)-labels-idx1-ubyte.gz", idxBytes([n], (0..<n).map { UInt8($0) }))
    }
    let train = try FashionMNIST.load(directory: tempDir, train: true)
    let test = try FashionMNIST.load(directory: tempDir, train: false)
    XCTAssertEqual(train.count, 6)
    XCTAssertEqual(test.count, 2)
    XCTAssertEqual(test.labels, [0, 1])
    XCTAssertEqual(train.source, tempDir)
    XCTAssertEqual(train.imageShape, [1, 28, 28])
  }

  func testFashionMNISTMissingSaysHowToInstall() {
    let missing = tempDir + "/no-such-dir"
    assertDataError("missing directory", { _ = try FashionMNIST.load(directory: missing, train: true) }) {
      $0.description == "Fashion-MNIST not found at \(missing): install it with `apt-get install dataset-fashion-mnist`, "
        + "or use `--data synthetic`"
    }
    // A directory without the files names the missing file.
    assertDataError("missing file", { _ = try FashionMNIST.load(directory: tempDir, train: false) }) {
      if case .notFound(_, let path, _) = $0 { return path.hasSuffix("t10k-images-idx3-ubyte.gz") }
      return false
    }
  }

  func testIDXRejectsCorruptFiles() throws {
    let img = tempDir + "/img.gz", lab = tempDir + "/lab.gz"
    let good = idxBytes([3, 2, 2], [UInt8](repeating: 1, count: 12))
    writeGzip(lab, idxBytes([3], [1, 2, 3]))

    writeGzip(img, Array(good.dropLast(5)))
    assertDataError("truncated data", { _ = try IDX.read(path: img) }) {
      if case .truncated(let f, 12, 7) = $0 { return f == img && $0.description.contains(img) }
      return false
    }
    writeGzip(img, Array(good.prefix(9)))
    assertDataError("truncated header", { _ = try IDX.read(path: img) }) {
      if case .truncated = $0 { return true } else { return false }
    }
    writeGzip(img, good + [0])
    assertDataError("trailing junk", { _ = try IDX.read(path: img) }) {
      if case .trailingData(_, 12) = $0 { return true } else { return false }
    }
    writeGzip(img, [0x12, 0x34, 0x08, 0x03] + good.dropFirst(4))
    assertDataError("bad magic", { _ = try IDX.read(path: img) }) {
      if case .badMagic(_, 0x1234_0803, _) = $0 { return true } else { return false }
    }
    writeGzip(img, [0, 0, 0x07, 3] + good.dropFirst(4))
    assertDataError("unknown type", { _ = try IDX.read(path: img) }) {
      if case .badMagic = $0 { return true } else { return false }
    }
    writeGzip(img, idxBytes([0xFFFF, 0xFFFF, 0xFFFF], []))
    assertDataError("absurd dimensions", { _ = try IDX.read(path: img) }) {
      if case .badDimensions(_, [0xFFFF, 0xFFFF, 0xFFFF], _) = $0 { return true } else { return false }
    }
    // Labels file given as images, and images as labels.
    writeGzip(img, good)
    assertDataError("labels as images", { _ = try FashionMNIST.load(imagesFile: lab, labelsFile: img) }) {
      if case .badMagic(lab, 0x0801, _) = $0 { return true } else { return false }
    }
    assertDataError("images as labels", { _ = try FashionMNIST.load(imagesFile: img, labelsFile: img) }) {
      if case .badMagic(img, 0x0803, _) = $0 { return true } else { return false }
    }
    writeGzip(lab, idxBytes([4], [1, 2, 3, 4]))
    assertDataError("count mismatch", { _ = try FashionMNIST.load(imagesFile: img, labelsFile: lab) }) {
      if case .countMismatch(img, 3, lab, 4) = $0 { return true } else { return false }
    }
    writeGzip(lab, idxBytes([3], [1, 10, 3]))
    assertDataError("label 10", { _ = try FashionMNIST.load(imagesFile: img, labelsFile: lab) }) {
      if case .badLabel(lab, 1, 10, 10) = $0 { return true } else { return false }
    }
    // A damaged gzip stream: cut the compressed file in half.
    writeGzip(img, idxBytes([3, 20, 20], (0..<1200).map { UInt8(truncatingIfNeeded: $0 &* 7919) }))
    let compressed = try readFileBytes(path: img)
    try write(img, Array(compressed.prefix(compressed.count / 2)))
    assertDataError("cut gzip stream", { _ = try IDX.read(path: img) }) {
      switch $0 {
      case .truncated, .corrupt: return true
      default: return false
      }
    }
    assertDataError("missing file", { _ = try IDX.read(path: tempDir + "/none.gz") }) {
      if case .unreadable = $0 { return true } else { return false }
    }
  }

  func testRealFashionMNISTIfInstalled() throws {
    let dir = FashionMNIST.defaultDirectory
    guard FileManager.default.fileExists(atPath: dir + "/train-images-idx3-ubyte.gz") else {
      throw Interop.missing("Fashion-MNIST at \(dir)", install: "apt-get install dataset-fashion-mnist")
    }
    let train = try FashionMNIST.load(train: true)
    let test = try FashionMNIST.load(train: false)
    XCTAssertEqual(train.count, 60_000)
    XCTAssertEqual(test.count, 10_000)
    for ds in [train, test] {
      XCTAssertEqual([ds.channels, ds.height, ds.width], [1, 28, 28])
      XCTAssertEqual(ds.pixels.count, ds.count * 784)
      XCTAssertTrue(ds.labels.allSatisfy { $0 < 10 })
      XCTAssertEqual(ds.classCounts, [Int](repeating: ds.count / 10, count: 10))
    }
    let est = Normalization.estimate(from: train)
    XCTAssertEqual(est.mean[0], Normalization.fashionMNIST.mean[0], accuracy: 0.001)
    XCTAssertEqual(est.std[0], Normalization.fashionMNIST.std[0], accuracy: 0.001)
  }

  // MARK: - CIFAR-10

  private func cifarRecords(_ n: Int, seed: UInt64, label: (Int) -> UInt8 = { UInt8($0 % 10) }) -> [UInt8] {
    var rng = SeededGenerator(seed: seed)
    var out = [UInt8]()
    for i in 0..<n {
      out.append(label(i))
      for _ in 0..<3072 { out.append(UInt8(truncatingIfNeeded: rng.next())) }
    }
    return out
  }

  func testCIFAR10RoundTrip() throws {
    var expectedPixels = [UInt8](), expectedLabels = [UInt8]()
    for (k, name) in CIFAR10.fileNames(train: true).enumerated() {
      let records = cifarRecords(2, seed: UInt64(k))
      try write(tempDir + "/" + name, records)
      for r in 0..<2 {
        expectedLabels.append(records[r * 3073])
        expectedPixels += records[(r * 3073 + 1)..<((r + 1) * 3073)]
      }
    }
    try write(tempDir + "/test_batch.bin", cifarRecords(3, seed: 99))
    let train = try CIFAR10.load(directory: tempDir, train: true, recordsPerFile: nil)
    XCTAssertEqual(train.count, 10)
    XCTAssertEqual(train.imageShape, [3, 32, 32])
    XCTAssertEqual(train.labels, expectedLabels)
    XCTAssertEqual(train.pixels, expectedPixels)
    XCTAssertEqual(try CIFAR10.load(directory: tempDir, train: false, recordsPerFile: 3).count, 3)
    // The real files hold exactly 10,000 records each.
    assertDataError("record count", { _ = try CIFAR10.load(directory: tempDir, train: false) }) {
      if case .wrongRecordCount(_, 3, 10_000) = $0 { return true } else { return false }
    }
  }

  func testCIFAR10RejectsCorruptFiles() throws {
    let path = tempDir + "/test_batch.bin"
    try write(path, Array(cifarRecords(2, seed: 1).dropLast(5)))
    assertDataError("truncated", { _ = try CIFAR10.readBatch(path: path) }) {
      if case .badRecordSize(path, 6141, 3073) = $0 { return $0.description.contains(path) } else { return false }
    }
    try write(path, [])
    assertDataError("empty", { _ = try CIFAR10.readBatch(path: path) }) {
      if case .badRecordSize(path, 0, 3073) = $0 { return true } else { return false }
    }
    try write(path, cifarRecords(3, seed: 1) { $0 == 2 ? 10 : 0 })
    assertDataError("label 10", { _ = try CIFAR10.readBatch(path: path) }) {
      if case .badLabel(path, 2, 10, 10) = $0 { return true } else { return false }
    }
    assertDataError("missing directory", { _ = try CIFAR10.load(directory: tempDir + "/nope", train: true) }) {
      if case .notFound("CIFAR-10", _, _) = $0 { return $0.description.contains("--data-dir") } else { return false }
    }
    assertDataError("missing file", { _ = try CIFAR10.load(directory: tempDir, train: true) }) {
      if case .notFound(_, let p, _) = $0 { return p.hasSuffix("data_batch_1.bin") } else { return false }
    }
  }

  // MARK: - Synthetic shapes

  func testSyntheticShapesAreDeterministic() {
    let a = SyntheticShapes.make(count: 50, seed: 7)
    let b = SyntheticShapes.make(count: 50, seed: 7)
    let c = SyntheticShapes.make(count: 50, seed: 8)
    XCTAssertEqual(a.pixels, b.pixels)
    XCTAssertEqual(a.labels, b.labels)
    XCTAssertNotEqual(a.pixels, c.pixels)
    XCTAssertEqual(a.imageShape, [1, 28, 28])
    XCTAssertEqual(a.classCounts, [Int](repeating: 5, count: 10))
    // A smaller set is a prefix of a larger one.
    let small = SyntheticShapes.make(count: 20, seed: 7)
    XCTAssertEqual(small.pixels, Array(a.pixels[0..<(20 * 784)]))
    // Images are not all alike: the same class differs between samples, and pixels use the range.
    XCTAssertNotEqual(a.pixels[0..<784], a.pixels[(10 * 784)..<(11 * 784)])
    XCTAssertGreaterThan(a.pixels.max()!, 200)
    XCTAssertLessThan(a.pixels.min()!, 30)

    let s = SyntheticShapes.splits(trainCount: 30, testCount: 10, channels: 3, height: 32, width: 32, seed: 1)
    XCTAssertEqual(s.train.count, 30)
    XCTAssertEqual(s.test.count, 10)
    XCTAssertEqual(s.train.imageShape, [3, 32, 32])
    XCTAssertNotEqual(Array(s.train.pixels[0..<3072]), Array(s.test.pixels[0..<3072]))
    XCTAssertEqual(SyntheticShapes.make(count: 12, classes: 4, seed: 1).classCounts, [3, 3, 3, 3])
  }

  func testSyntheticClassesAreSeparable() {
    // Each class's mean image is distinguishable: a nearest-class-mean classifier on
    // 2×-downsampled, per-image-standardised pixels beats chance (10%) clearly. The CNN
    // reaches far higher; this only guards against degenerate classes.
    let train = SyntheticShapes.make(count: 1000, seed: 11)
    let test = SyntheticShapes.make(count: 300, seed: 12)
    func features(_ ds: ImageDataset, _ i: Int) -> [Float] {
      var f = [Float]()
      for y in stride(from: 0, to: 28, by: 2) {
        for x in stride(from: 0, to: 28, by: 2) {
          let base = i * 784 + y * 28 + x
          f.append(Float(Int(ds.pixels[base]) + Int(ds.pixels[base + 1]) + Int(ds.pixels[base + 28]) + Int(ds.pixels[base + 29])))
        }
      }
      let m = f.reduce(0, +) / Float(f.count)
      let s = (f.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Float(f.count)).squareRoot() + 1e-3
      return f.map { ($0 - m) / s }
    }
    var means = [[Float]](repeating: [Float](repeating: 0, count: 196), count: 10)
    for i in 0..<train.count {
      let f = features(train, i)
      for k in 0..<196 { means[Int(train.labels[i])][k] += f[k] / 100 }
    }
    var correct = 0
    for i in 0..<test.count {
      let f = features(test, i)
      let best = (0..<10).min { a, b in
        zip(f, means[a]).map { ($0 - $1) * ($0 - $1) }.reduce(0, +) < zip(f, means[b]).map { ($0 - $1) * ($0 - $1) }.reduce(0, +)
      }!
      if best == Int(test.labels[i]) { correct += 1 }
    }
    XCTAssertGreaterThan(Double(correct) / Double(test.count), 0.25)
  }

  // MARK: - Batch loader

  /// `n` images of 1×1×2 whose pixels encode the index (low byte, high byte).
  private func indexDataset(_ n: Int) -> ImageDataset {
    ImageDataset(
      name: "index", channels: 1, height: 1, width: 2, classes: 10,
      pixels: (0..<n).flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] }, labels: (0..<n).map { UInt8($0 % 10) },
      source: "test")
  }

  /// The image indices of a whole epoch, decoded from the pixels of each batch.
  private func epochIndices(_ loader: BatchLoader) -> [Int] {
    let x = Tensor(zeros: [loader.batchSize, 1, 1, 2])
    var labels = [Int32]()
    var out = [Int]()
    for b in 0..<loader.batchesPerEpoch {
      let n = loader.batch(b, into: x, labels: &labels)
      XCTAssertEqual(labels.count, n)
      for k in 0..<n {
        let i = Int((x[2 * k] * 255).rounded()) + 256 * Int((x[2 * k + 1] * 255).rounded())
        XCTAssertEqual(Int(labels[k]), i % 10)
        out.append(i)
      }
    }
    return out
  }

  func testBatchLoaderShufflesDeterministically() {
    let ds = indexDataset(300)
    let unit = Normalization.unit(channels: 1)
    let a = BatchLoader(dataset: ds, batchSize: 32, shuffle: true, dropLast: false, normalization: unit, seed: 5)
    let e0 = epochIndices(a)
    XCTAssertEqual(e0.sorted(), Array(0..<300), "an epoch is a permutation")
    XCTAssertNotEqual(e0, Array(0..<300))
    XCTAssertEqual(e0, a.order)
    a.startEpoch(1)
    let e1 = epochIndices(a)
    XCTAssertEqual(e1.sorted(), Array(0..<300))
    XCTAssertNotEqual(e1, e0, "each epoch has its own order")
    a.startEpoch(3)
    let e3 = epochIndices(a)

    // A fresh loader that jumps straight to epoch 3 (a resumed run) sees the same order.
    let b = BatchLoader(dataset: ds, batchSize: 32, shuffle: true, dropLast: false, normalization: unit, seed: 5)
    XCTAssertEqual(epochIndices(b), e0)
    b.startEpoch(3)
    XCTAssertEqual(epochIndices(b), e3)
    // Another seed, another order.
    let c = BatchLoader(dataset: ds, batchSize: 32, shuffle: true, dropLast: false, normalization: unit, seed: 6)
    XCTAssertNotEqual(epochIndices(c), e0)
  }

  func testBatchLoaderWithoutShuffleKeepsFileOrderAndDropsLast() {
    let ds = indexDataset(10)
    let unit = Normalization.unit(channels: 1)
    let keep = BatchLoader(dataset: ds, batchSize: 4, shuffle: false, dropLast: false, normalization: unit, seed: 1)
    XCTAssertEqual(keep.batchesPerEpoch, 3)
    XCTAssertEqual(epochIndices(keep), Array(0..<10))
    keep.startEpoch(7)
    XCTAssertEqual(epochIndices(keep), Array(0..<10))

    let x = Tensor(zeros: [4, 1, 1, 2])
    let storage = x.storage
    var labels = [Int32]()
    XCTAssertEqual(keep.batch(2, into: x, labels: &labels), 2)
    XCTAssertEqual(x.shape, [2, 1, 1, 2])
    XCTAssertEqual(labels, [8, 9])
    XCTAssertTrue(x.storage === storage, "a smaller last batch reuses the caller's storage")
    XCTAssertEqual(keep.batch(0, into: x, labels: &labels), 4)
    XCTAssertEqual(x.shape, [4, 1, 1, 2])
    XCTAssertTrue(x.storage === storage)

    let drop = BatchLoader(dataset: ds, batchSize: 4, shuffle: true, dropLast: true, normalization: unit, seed: 1)
    XCTAssertEqual(drop.batchesPerEpoch, 2)
    XCTAssertEqual(drop.samplesPerEpoch, 8)
    let seen = epochIndices(drop)
    XCTAssertEqual(seen.count, 8)
    XCTAssertEqual(Set(seen).count, 8)
    XCTAssertEqual(BatchLoader(dataset: indexDataset(3), batchSize: 4, shuffle: false, dropLast: true,
      normalization: unit, seed: 1).batchesPerEpoch, 0)
  }

  func testBatchLoaderNormalises() {
    let ds = ImageDataset(name: "n", channels: 1, height: 1, width: 3, classes: 2, pixels: [0, 255, 51], labels: [1],
      source: "test")
    let loader = BatchLoader(dataset: ds, batchSize: 1, shuffle: false, dropLast: false,
      normalization: .fashionMNIST, seed: 0)
    let x = Tensor(zeros: [1, 1, 1, 3])
    var labels = [Int32]()
    loader.batch(0, into: x, labels: &labels)
    XCTAssertEqual(x[0], (0 - 0.2860) / 0.3530, accuracy: 1e-6)
    XCTAssertEqual(x[1], (1 - 0.2860) / 0.3530, accuracy: 1e-6)
    XCTAssertEqual(x[2], (0.2 - 0.2860) / 0.3530, accuracy: 1e-6)
    XCTAssertEqual(labels, [1])

    let rgb = ImageDataset(name: "rgb", channels: 3, height: 1, width: 1, classes: 1, pixels: [255, 0, 255], labels: [0],
      source: "test")
    let l3 = BatchLoader(dataset: rgb, batchSize: 1, shuffle: false, dropLast: false, normalization: .cifar10, seed: 0)
    let x3 = Tensor(zeros: [1, 3, 1, 1])
    l3.batch(0, into: x3, labels: &labels)
    XCTAssertEqual(x3.array[0], (1 - 0.4914) / 0.2470, accuracy: 1e-6)
    XCTAssertEqual(x3.array[1], (0 - 0.4822) / 0.2435, accuracy: 1e-6)
    XCTAssertEqual(x3.array[2], (1 - 0.4465) / 0.2616, accuracy: 1e-6)
    XCTAssertEqual(Normalization.cifar10.mean, [0.4914, 0.4822, 0.4465])
    XCTAssertEqual(Normalization.cifar10.std, [0.2470, 0.2435, 0.2616])
  }

  func testAugmentationIsACropOrFlipAndDeterministic() {
    let n = 40, h = 6, w = 5, c = 2
    var rng = SeededGenerator(seed: 1)
    let ds = ImageDataset(
      name: "aug", channels: c, height: h, width: w, classes: 10,
      pixels: (0..<(n * c * h * w)).map { _ in UInt8(1 + rng.nextInt(below: 255)) }, labels: [UInt8](repeating: 0, count: n),
      source: "test")
    let unit = Normalization.unit(channels: c)
    let pad = 2
    // Each augmentation, and what it may do: both, the crop alone, the flip alone.
    for (augment, canShift, canFlip) in [(Augmentation.cropAndFlip(padding: pad), true, true),
      (.crop(padding: pad), true, false), (.flip, false, true)] {
      let a = BatchLoader(dataset: ds, batchSize: 8, shuffle: true, dropLast: false, normalization: unit,
        augment: augment, seed: 3)
      let b = BatchLoader(dataset: ds, batchSize: 8, shuffle: true, dropLast: false, normalization: unit,
        augment: augment, seed: 3)
      a.startEpoch(2)
      b.startEpoch(2)
      let xa = Tensor(zeros: [8, c, h, w]), xb = Tensor(zeros: [8, c, h, w])
      var la = [Int32](), lb = [Int32]()
      var shifted = 0, flipped = 0
      for batch in (0..<a.batchesPerEpoch).reversed() {  // any order gives the same batches
        a.batch(batch, into: xa, labels: &la)
        b.batch(batch, into: xb, labels: &lb)
        XCTAssertEqual(xa.array, xb.array)
        for k in 0..<xa.shape[0] {
          let src = a.order[batch * 8 + k]
          // Find the (dy, dx, flip) that explains the output, among those this augmentation allows.
          var found = false
          let offsets = canShift ? Array(0...(2 * pad)) : [pad]
          search: for dy in offsets {
            for dx in offsets {
              for flip in canFlip ? [false, true] : [false] {
                var ok = true
                check: for ch in 0..<c {
                  for y in 0..<h {
                    for x in 0..<w {
                      let sy = y + dy - pad, sx = (flip ? w - 1 - x : x) + dx - pad
                      let expect: Float = (sy < 0 || sy >= h || sx < 0 || sx >= w)
                        ? 0 : Float(ds.pixels[((src * c + ch) * h + sy) * w + sx]) / 255
                      if abs(xa[((k * c + ch) * h + y) * w + x] - expect) > 1e-6 { ok = false; break check }
                    }
                  }
                }
                if ok {
                  found = true
                  if dy != pad || dx != pad { shifted += 1 }
                  if flip { flipped += 1 }
                  break search
                }
              }
            }
          }
          XCTAssertTrue(found, "\(augment): sample \(k) of batch \(batch) is not an allowed crop/flip of image \(src)")
        }
      }
      if canShift { XCTAssertGreaterThan(shifted, n / 2, "\(augment)") } else { XCTAssertEqual(shifted, 0, "\(augment)") }
      if canFlip {
        XCTAssertGreaterThan(flipped, n / 5, "\(augment)")
        XCTAssertLessThan(flipped, n * 4 / 5, "\(augment)")
      } else {
        XCTAssertEqual(flipped, 0, "\(augment)")
      }
    }
    XCTAssertEqual(Augmentation(cropPadding: 4, flip: true), .standardCIFAR)
    XCTAssertEqual(Augmentation(cropPadding: nil, flip: false), Augmentation.none)
    XCTAssertEqual([Augmentation.none, .crop(padding: 4), .flip, .standardCIFAR].map(\.text), ["none", "crop4", "flip", "crop4+flip"])
  }

  // MARK: - Atomic writes

  func testAtomicWriteReplacesAndLeavesNoTemporaryFiles() throws {
    let path = tempDir + "/state.bin"
    try writeFileAtomically(path: path, bytes: [1, 2, 3])
    XCTAssertEqual(try readFileBytes(path: path), [1, 2, 3])
    try writeFileAtomically(path: path, bytes: Array(repeating: 7, count: 100_000))
    XCTAssertEqual(try readFileBytes(path: path), Array(repeating: 7, count: 100_000))
    try writeFileAtomically(path: path, bytes: [])
    XCTAssertEqual(try readFileBytes(path: path), [])
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: tempDir), ["state.bin"])
    func mode(_ p: String) throws -> Int { (try FileManager.default.attributesOfItem(atPath: p)[.posixPermissions] as! NSNumber).intValue }
    XCTAssertEqual(try mode(path), 0o644, "a new file gets 0644, not mkstemp's 0600")
    try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
    try writeFileAtomically(path: path, bytes: [9])
    XCTAssertEqual(try mode(path), 0o600, "a replaced file keeps its permissions")

    let bad = tempDir + "/no/such/dir/file.bin"
    XCTAssertThrowsError(try writeFileAtomically(path: bad, bytes: [1])) {
      XCTAssertTrue("\($0)".contains(bad), "\($0)")
    }
    XCTAssertThrowsError(try readFileBytes(path: tempDir)) { XCTAssertTrue("\($0)".contains(self.tempDir)) }
    XCTAssertThrowsError(try readFileBytes(path: path, maxBytes: -1))
  }
}
