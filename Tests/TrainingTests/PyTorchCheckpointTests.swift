// PyTorchCheckpointTests: a seed-aconc state_dict written by Python's `safetensors` package, as a
// PyTorch user would save it (no model metadata), loads strictly into our network and gives the
// logits that numpy computes by definition. Skipped, with a message, where Python lacks the packages.
import Foundation
import NN
import TensorCore
import TestSupport
import Training
import XCTest

final class PyTorchCheckpointTests: XCTestCase {
  func testPythonWrittenCheckpointGivesTheExpectedLogits() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("acon-py-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/seed_checkpoint.py").path
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", script, dir]
    p.standardError = FileHandle.nullDevice
    try p.run()
    p.waitUntilExit()
    if p.terminationStatus == 3 {
      throw XCTSkip("Python packages `safetensors` and `numpy` are not installed (pip install safetensors numpy)")
    }
    XCTAssertEqual(p.terminationStatus, 0, "seed_checkpoint.py failed")

    let ckpt = dir + "/seed-aconc.safetensors"
    let file = try SafetensorsFile.read(path: ckpt)
    // No model in the metadata: the caller names it, as `acon-train evaluate --model` does.
    let meta = try ModelMetadata(strings: file.metadata, file: ckpt, fallbackModel: .seedAconc, fallbackInput: [1, 8, 8],
      fallbackClasses: 3, fallbackNormalization: .unit(channels: 1))
    XCTAssertThrowsError(try ModelMetadata(strings: file.metadata, file: ckpt, fallbackModel: nil, fallbackInput: [1, 8, 8],
      fallbackClasses: 3, fallbackNormalization: .unit(channels: 1))) {
      XCTAssertTrue(String(describing: $0).contains("--model"))
    }
    let model = try meta.model.build(input: meta.input, classes: meta.classes, seed: 0)
    try loadStateDict(file.tensors, into: model, file: ckpt)
    model.eval()
    let io = try SafetensorsFile.read(path: dir + "/io.safetensors")
    guard case let .f32(xs, xv) = io.tensors["input"], case let .f32(_, logits) = io.tensors["logits"] else {
      return XCTFail("io.safetensors lacks input or logits")
    }
    let y = try model.forward(Tensor(shape: xs, values: xv))
    XCTAssertEqual(y.shape, [2, 3])
    assertClose(y.array, logits.map(Double.init), rtol: 1e-4, atol: 1e-5)
  }
}
