// PyTorchCheckpointTests: seed-aconc and seed-meta state_dicts written by Python's `safetensors`
// package, as a PyTorch user would save them (no model metadata), load strictly into our networks
// and give the logits (and, for Meta-ACON-C, the β) that numpy computes by definition in eval
// mode. Skipped, with a message, where Python lacks the packages (a failure under CI).
import ACON
import Foundation
import NN
import TensorCore
import TestSupport
import Training
import XCTest

/// A tensor the fixture should have written.
private struct MissingTensor: Error, CustomStringConvertible {
  let name: String
  var description: String { "\(name) is missing or not F32" }
}

final class PyTorchCheckpointTests: XCTestCase {
  private var dir = ""

  override func setUpWithError() throws {
    dir = FileManager.default.temporaryDirectory.appendingPathComponent("acon-py-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws {
    try? FileManager.default.removeItem(atPath: dir)
  }

  /// Runs Fixtures/seed_checkpoint.py into `dir`, or skips when Python lacks its packages.
  private func writeFixtures() throws {
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/seed_checkpoint.py").path
    let (status, _) = try Interop.run([script, dir])
    if status == 3 {
      throw Interop.missing("Python's safetensors and numpy", install: "pip install safetensors numpy")
    }
    XCTAssertEqual(status, 0, "seed_checkpoint.py failed")
  }

  /// The F32 tensor `name` of `file`; throws (failing the test) when there is none.
  private func f32(_ file: SafetensorsFile, _ name: String) throws -> (shape: [Int], values: [Float]) {
    guard case let .f32(shape, values)? = file.tensors[name] else { throw MissingTensor(name: name) }
    return (shape, values)
  }

  func testPythonWrittenCheckpointGivesTheExpectedLogits() throws {
    try writeFixtures()
    let ckpt = dir + "/seed-aconc.safetensors"
    let file = try SafetensorsFile.read(path: ckpt)
    // No model in the metadata: the caller names it, as `acon-train evaluate --model` does.
    let meta = try ModelMetadata(strings: file.metadata, file: ckpt, fallbackModel: ModelKind.seedAconc.rawValue, fallbackInput: [1, 8, 8],
      fallbackClasses: 3, fallbackNormalization: .unit(channels: 1))
    XCTAssertThrowsError(try ModelMetadata(strings: file.metadata, file: ckpt, fallbackModel: nil, fallbackInput: [1, 8, 8],
      fallbackClasses: 3, fallbackNormalization: .unit(channels: 1))) {
      XCTAssertTrue(String(describing: $0).contains("--model"))
    }
    let model = try XCTUnwrap(ModelKind(rawValue: meta.model)).build(input: meta.input, classes: meta.classes, seed: 0)
    try loadStateDict(file.tensors, into: model, file: ckpt)
    model.eval()
    let io = try SafetensorsFile.read(path: dir + "/io.safetensors")
    let (xs, xv) = try f32(io, "input"), logits = try f32(io, "logits").values
    let y = try model.forward(Tensor(shape: xs, values: xv))
    XCTAssertEqual(y.shape, [2, 3])
    assertClose(y.array, logits.map(Double.init), rtol: 1e-4, atol: 1e-5)
  }

  func testPythonWrittenMetaAconCheckpointGivesTheExpectedBetaAndLogits() throws {
    try writeFixtures()
    let ckpt = dir + "/seed-meta.safetensors"
    let file = try SafetensorsFile.read(path: ckpt)
    XCTAssertEqual(file.metadata, ["format": "pt"])
    // As PyTorch saves it: num_batches_tracked an I64 scalar, everything else F32.
    XCTAssertEqual(file.tensors["acon1.bn1.num_batches_tracked"], .i64(shape: [], values: [1234]))
    XCTAssertEqual(file.tensors["acon1.bn2.num_batches_tracked"], .i64(shape: [], values: [5678]))
    XCTAssertEqual(try f32(file, "acon1.fc1.weight").shape, [16, 64, 1, 1], "Meta-ACON width max(16, 64/16)")
    XCTAssertEqual(try f32(file, "acon1.bn2.running_var").shape, [64])

    let meta = try ModelMetadata(strings: file.metadata, file: ckpt, fallbackModel: ModelKind.seedMeta.rawValue, fallbackInput: [1, 16, 16],
      fallbackClasses: 3, fallbackNormalization: .unit(channels: 1))
    let model = try XCTUnwrap(ModelKind(rawValue: meta.model)).build(input: meta.input, classes: meta.classes, seed: 0)
    XCTAssertNotEqual(stateDict(of: model), file.tensors)
    try loadStateDict(file.tensors, into: model, file: ckpt)
    // Every tensor arrived, BatchNorm's statistics and counts included.
    XCTAssertEqual(stateDict(of: model), file.tensors)
    guard let acon = model["acon1"] as? MetaAconC, let bn1 = acon.bn1, let bn2 = acon.bn2 else {
      return XCTFail("acon1 is not a Meta-ACON-C with BatchNorm")
    }
    XCTAssertEqual(bn1.numBatchesTracked.value, 1234)
    XCTAssertEqual(bn2.numBatchesTracked.value, 5678)
    XCTAssertEqual(bn1.runningMean.array, try f32(file, "acon1.bn1.running_mean").values)
    XCTAssertEqual(bn1.runningVar.array, try f32(file, "acon1.bn1.running_var").values)
    XCTAssertEqual(bn2.weight.value.array, try f32(file, "acon1.bn2.weight").values)
    XCTAssertEqual(bn2.bias.value.array, try f32(file, "acon1.bn2.bias").values)
    XCTAssertFalse(bn1.runningVar.array.allSatisfy { $0 == 1 }, "the fixture's statistics must be non-trivial")

    model.eval()
    let io = try SafetensorsFile.read(path: dir + "/io-meta.safetensors")
    let (xs, xv) = try f32(io, "input"), beta = try f32(io, "beta"), logits = try f32(io, "logits").values
    XCTAssertEqual(xs, [2, 1, 16, 16])
    let y = try model.forward(Tensor(shape: xs, values: xv))
    XCTAssertEqual(y.shape, [2, 3])
    guard let b = acon.lastBeta else { return XCTFail("no β after a forward pass") }
    XCTAssertEqual(b.shape, beta.shape)
    assertClose(b.array, beta.values.map(Double.init), rtol: 1e-4, atol: 1e-6)
    assertClose(y.array, logits.map(Double.init), rtol: 1e-4, atol: 1e-5)
    // Evaluation mode leaves the running statistics alone.
    XCTAssertEqual(stateDict(of: model), file.tensors)
  }
}
