// FuzzRegressionTests: the readers' in-memory entry points that the libFuzzer targets in Fuzz/
// drive (IDX.decode, CIFAR10.decodeBatch, SafetensorsFile.decode with the metadata and state-dict
// checks, and the fuzz-safetensors target itself on its seed corpus), the limits that keep a
// hostile header from allocating without bound, and every input the fuzzers found that once
// misbehaved. Each case must end in a thrown error that names the file.
import CZlib
import Foundation
import NN
import Training
import XCTest

final class FuzzRegressionTests: XCTestCase {
  // MARK: - Helpers

  /// `bytes` as a gzip member, through zlib's gzip writer and a temporary file.
  private func gzip(_ bytes: [UInt8]) throws -> [UInt8] {
    let path = NSTemporaryDirectory() + "FuzzRegressionTests-" + UUID().uuidString + ".gz"
    defer { try? FileManager.default.removeItem(atPath: path) }
    let gz = try XCTUnwrap(gzopen(path, "wb"))
    let n = bytes.withUnsafeBytes { gzwrite(gz, $0.baseAddress, UInt32($0.count)) }
    XCTAssertEqual(Int(n), bytes.count)
    XCTAssertEqual(gzclose(gz), Z_OK)
    return try readFileBytes(path: path)
  }

  /// `assertDataError` whose message must name the file (f.idx or b.bin).
  private func assertDataError(
    _ what: String, file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Void,
    _ check: (DataError) -> Bool
  ) {
    TrainingTests.assertDataError(what, naming: ["f.idx", "b.bin"], file: file, line: line, body, check)
  }

  private func assertCheckpointError(_ strings: [String: String], _ what: String, line: UInt = #line) {
    XCTAssertThrowsError(
      try ModelMetadata(
        strings: strings, file: "m.safetensors", fallbackModel: nil, fallbackInput: [1, 28, 28], fallbackClasses: 10,
        fallbackNormalization: Normalization(mean: [0.286], std: [0.353])), what, line: line
    ) { error in
      XCTAssertTrue(error is CheckpointError, "\(what): \(error)", line: line)
      XCTAssertTrue("\(error)".contains("m.safetensors"), "\(what): \(error)", line: line)
    }
  }

  // MARK: - IDX in memory

  func testIDXDecodesPlainGzipAndConcatenatedMembersAlike() throws {
    let file = idxBytes([2, 3], Array(0..<6))
    let plain = try IDX.decode(file, name: "f.idx")
    XCTAssertEqual(plain.dims, [2, 3])
    XCTAssertEqual(plain.bytes, Array(0..<6))
    let zipped = try IDX.decode(try gzip(file), name: "f.idx")
    XCTAssertEqual(zipped.bytes, plain.bytes)
    // `cat a.gz b.gz`: two members read as one stream, as gzip -d does.
    let twoMembers = try gzip(Array(file[..<5])) + (try gzip(Array(file[5...])))
    let joined = try IDX.decode(twoMembers, name: "f.idx")
    XCTAssertEqual(joined.dims, [2, 3])
    XCTAssertEqual(joined.bytes, plain.bytes)
  }

  func testIDXRejectsDamageInMemory() throws {
    let file = idxBytes([2, 3], Array(0..<6))
    let zipped = try gzip(file)
    assertDataError("junk after the gzip member", { _ = try IDX.decode(zipped + [1, 2, 3], name: "f.idx") }) {
      if case .corrupt = $0 { return true } else { return false }
    }
    assertDataError("gzip cut short", { _ = try IDX.decode(Array(zipped.prefix(zipped.count - 12)), name: "f.idx") }) {
      switch $0 {
      case .truncated, .corrupt: return true
      default: return false
      }
    }
    var flipped = zipped
    flipped[12] ^= 0xFF  // inside the deflate data
    do {
      _ = try IDX.decode(flipped, name: "f.idx")
    } catch let e as DataError {
      XCTAssertTrue(e.description.contains("f.idx"), "\(e)")
    }  // a flipped bit may also decode to other valid bytes; it must never trap
    assertDataError("gzip magic and nothing else", { _ = try IDX.decode([0x1F, 0x8B], name: "f.idx") }) {
      switch $0 {
      case .truncated, .corrupt: return true
      default: return false
      }
    }
  }

  func testIDXHeaderPromisingGigabytesOverAShortFileAllocatesLittle() throws {
    // 10⁹ elements of f64 would be 8 GB: refused by the element limit (10⁹ u8 is allowed, and then
    // the data must really be there: this file is 20 bytes, so it is truncated).
    assertDataError("8 GB of f64", { _ = try IDX.decode(idxBytes([1_000_000_000, 2], [], type: 0x0E), name: "f.idx") }) {
      if case .badDimensions = $0 { return true } else { return false }
    }
    let start = Date()
    assertDataError("1 GB of u8 promised, 4 bytes present", { _ = try IDX.decode(idxBytes([1_000_000_000], [1, 2, 3, 4]), name: "f.idx") }) {
      if case let .truncated(_, expected, got) = $0 { return expected == 1_000_000_000 && got == 4 } else { return false }
    }
    XCTAssertLessThan(Date().timeIntervalSince(start), 5, "a short file must fail fast, not fill a gigabyte first")
  }

  func testFashionMNISTPairChecksInMemory() throws {
    let images = try IDX.decode(idxBytes([2, 2, 2], Array(0..<8)), name: "f.idx")
    let labels = try IDX.decode(idxBytes([2], [1, 9]), name: "l.idx")
    let data = try FashionMNIST.dataset(images: images, imagesName: "f.idx", labels: labels, labelsName: "l.idx")
    XCTAssertEqual(data.count, 2)
    XCTAssertEqual(data.imageShape, [1, 2, 2])
    let badLabels = try IDX.decode(idxBytes([2], [1, 10]), name: "f.idx")
    assertDataError("label 10", {
      _ = try FashionMNIST.dataset(images: images, imagesName: "f.idx", labels: badLabels, labelsName: "f.idx")
    }) { if case .badLabel = $0 { return true } else { return false } }
    let zeroSized = try IDX.decode(idxBytes([2, 0, 2], []), name: "f.idx")
    assertDataError("zero-sized images", {
      _ = try FashionMNIST.dataset(images: zeroSized, imagesName: "f.idx", labels: labels, labelsName: "l.idx")
    }) { if case .badDimensions = $0 { return true } else { return false } }
  }

  // MARK: - CIFAR-10 in memory

  func testCIFARDecodesInMemory() throws {
    let record = [UInt8(7)] + (0..<3072).map { UInt8($0 % 256) }
    let batch = try CIFAR10.decodeBatch(record + record, name: "b.bin")
    XCTAssertEqual(batch.labels, [7, 7])
    XCTAssertEqual(batch.pixels.count, 2 * 3072)
    assertDataError("one byte short", { _ = try CIFAR10.decodeBatch(Array(record.dropLast()), name: "b.bin") }) {
      if case .badRecordSize = $0 { return true } else { return false }
    }
    assertDataError("empty", { _ = try CIFAR10.decodeBatch([], name: "b.bin") }) {
      if case .badRecordSize = $0 { return true } else { return false }
    }
    assertDataError("wrong count", { _ = try CIFAR10.decodeBatch(record, name: "b.bin", expectedRecords: 2) }) {
      if case .wrongRecordCount = $0 { return true } else { return false }
    }
  }

  // MARK: - Checkpoint metadata limits

  func testCheckpointMetadataOutOfRangeIsAnErrorNotATrap() {
    let base = ["model": "seed-aconc", "input": "1x28x28", "classes": "10"]
    for bad in ["0x28x28", "1x28x", "1xx28", "-1x28x28", "1x28x28x1", "1x99999x28", "2000x28x28", "1x28x9999999999999999999999"] {
      assertCheckpointError(base.merging(["input": bad]) { $1 }, "input \(bad)")
    }
    for bad in ["0", "-3", "1000000000", "ten", ""] {
      assertCheckpointError(base.merging(["classes": bad]) { $1 }, "classes \(bad)")
    }
    for (mean, std) in [("0.5", "0"), ("nan", "1"), ("0.5", "-1"), ("0.5", "inf"), ("0.5,0.5", "1")] {
      assertCheckpointError(base.merging(["normalization_mean": mean, "normalization_std": std]) { $1 }, "norm \(mean) \(std)")
    }
    // Any model name loads (a custom network's); building an unknown one is the error.
    assertCheckpointError(["model": ""], "empty model name")
    XCTAssertThrowsError(try ModelFactory.build("seed-nothing", factories: [.seedModels], input: [1, 28, 28], classes: 10, seed: 0)) {
      XCTAssertTrue(String(describing: $0).contains("unknown model 'seed-nothing'; known: seed-relu, seed-aconc, seed-meta"), "\($0)")
    }
    assertCheckpointError(["input": "1x28x28"], "no model and no fallback")
  }

  func testBuildRefusesSizesBeyondTheLimits() {
    XCTAssertThrowsError(try ModelKind.seedAconc.build(input: [1, 28, 28], classes: ModelKind.maxClasses + 1, seed: 0))
    XCTAssertThrowsError(try ModelKind.seedRelu.build(input: [ModelKind.maxChannels + 1, 28, 28], classes: 10, seed: 0))
    XCTAssertThrowsError(try ModelKind.seedMeta.build(input: [1, ModelKind.maxSide + 1, 28], classes: 10, seed: 0))
    XCTAssertNoThrow(try ModelKind.seedMeta.build(input: [3, 32, 32], classes: 10, seed: 0))
  }

  // MARK: - The fuzz-safetensors target on its seed corpus

  /// Runs the fuzz target's own code (`SafetensorsFuzzTarget.run`, what fuzz-safetensors calls)
  /// on every file of its seed corpus. The whole state dicts (`seed-MODEL-CxHxW`, made by
  /// Fuzz/make_corpus.py) must load strictly, so the fuzzer starts from inputs that reach the
  /// copy into a network; the others must be rejected with a message naming the file.
  func testSafetensorsFuzzTargetLoadsTheSeedModelsOfItsCorpus() throws {
    let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent().appendingPathComponent("Fuzz/Corpus/safetensors").path
    let names = try FileManager.default.contentsOfDirectory(atPath: corpus).sorted()
    let target = try SafetensorsFuzzTarget()
    var loaded = [String]()
    for name in names {
      let bytes = try readFileBytes(path: corpus + "/" + name)
      switch target.run(bytes, name: name) {
      case let .loaded(meta):
        loaded.append(name)
        XCTAssertEqual("\(meta.model)-\(meta.input.map(String.init).joined(separator: "x"))", name)
        XCTAssertEqual(meta.classes, 10, name)
        // The network now holds the file's values: the copy happened.
        let file = try SafetensorsFile.decode(bytes, name: name)
        XCTAssertEqual(stateDict(of: target.model(for: meta)), file.tensors, name)
      case let .rejected(message):
        XCTAssertTrue(message.hasPrefix(name + ": "), "\(name): \(message)")
      }
    }
    let expected = ModelKind.allCases.flatMap { kind in
      SafetensorsFuzzTarget.configurations.map { "\(kind.rawValue)-\($0.input.map(String.init).joined(separator: "x"))" }
    }
    XCTAssertEqual(loaded, expected.sorted(), "the seed-model files of the corpus must load strictly, and only they")
  }

  func testSafetensorsFuzzTargetRejectsAConfigurationItHasNoNetworkFor() throws {
    // A valid seed-relu state dict for 3x32x32 inputs with metadata claiming 20 classes: the
    // target has no network for it, checks it against the 1x28x28 one and reports the mismatch.
    let target = try SafetensorsFuzzTarget()
    let net = try ModelKind.seedRelu.build(input: [3, 32, 32], classes: 20, seed: 1)
    var meta = ModelMetadata(model: ModelKind.seedRelu.rawValue, input: [3, 32, 32], classes: 20, normalization: .cifar10).strings
    meta["step"] = "1"
    let bytes = SafetensorsFile(metadata: meta, tensors: stateDict(of: net)).encode()
    guard case let .rejected(message) = target.run(bytes, name: "c.safetensors") else { return XCTFail("loaded") }
    XCTAssertTrue(message.hasPrefix("c.safetensors: the state dict does not fit the model"), message)
    XCTAssertTrue(message.contains("size mismatch for linear2.weight"), message)
  }
}

