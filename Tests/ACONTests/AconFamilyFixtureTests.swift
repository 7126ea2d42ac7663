// AconFamilyFixtureTests: the ACON family's layers against files that PyTorch wrote
// (Fixtures/*.safetensors, from Fixtures/make_fixtures.py): Meta-ACON channel-wise with and
// without BatchNorm, layer-wise and pixel-wise, and ACON-FReLU (TFNet) at stride 1 and 2 in
// training and evaluation mode. The module's state is loaded strictly by its state_dict names
// (so the names and layouts are PyTorch's); then y, dx, every parameter gradient and (with
// BatchNorm) the updated running statistics are compared.
import ACON
import Foundation
import NN
import TensorCore
import TestSupport
import Training
import XCTest

/// A fixture without an expected float tensor: the test fails with this error.
private struct FixtureError: Error, CustomStringConvertible {
  var key: String
  var description: String { "the fixture has no float tensor \(key); rerun Fixtures/make_fixtures.py" }
}

final class AconFamilyFixtureTests: XCTestCase {
  private static let dataKeys: Set<String> = ["x", "dy", "y", "dx"]

  private func load(_ name: String) throws -> [String: SafetensorsValue] {
    let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .appendingPathComponent("Fixtures/\(name).safetensors").path
    return try SafetensorsFile.read(path: path).tensors
  }

  private func floats(_ t: [String: SafetensorsValue], _ key: String) throws -> Tensor {
    guard case let .f32(shape, values)? = t[key]?.widened else { throw FixtureError(key: key) }
    return Tensor(shape: shape, values: values)
  }

  /// Loads `module`'s state from fixture `name`, runs forward and backward in the fixture's mode,
  /// and compares everything PyTorch recorded.
  private func check(_ module: Module, _ name: String, training: Bool, rtol: Double = 2e-5, atol: Double = 2e-5)
    throws
  {
    let t = try load(name)
    let state = t.filter { !Self.dataKeys.contains($0.key) && !$0.key.hasPrefix("grad.") && !$0.key.hasPrefix("after.") }
    try loadStateDict(state, into: module, file: name)  // strict: the names must be PyTorch's
    if training { module.train() } else { module.eval() }
    let x = try floats(t, "x")
    let y = try module.forward(x)
    let want = try floats(t, "y")
    XCTAssertEqual(y.shape, want.shape, "\(name): y shape")
    assertClose(y.array, want.doubles, rtol: rtol, atol: atol, "\(name): y")
    module.zeroGrad()
    let dx = try module.backward(try floats(t, "dy"))
    assertClose(dx.array, try floats(t, "dx").doubles, rtol: rtol, atol: atol, "\(name): dx")
    for (key, p) in module.namedParameters() {
      guard t["grad." + key] != nil else { XCTFail("\(name): no gradient of \(key) in the fixture"); continue }
      assertClose(p.grad.array, try floats(t, "grad." + key).doubles, rtol: rtol, atol: atol, "\(name): grad of \(key)")
    }
    for (key, b) in module.namedBuffers() {
      switch (b, t["after." + key]?.widened) {
      case let (.float(v), .f32(_, values)?):
        assertClose(v.array, values.map(Double.init), rtol: rtol, atol: atol, "\(name): \(key) after forward")
      case let (.int64(box), .i64(_, values)?):
        XCTAssertEqual(box.value, values[0], "\(name): \(key) after forward")
      default:
        XCTFail("\(name): buffer \(key) missing or of another type in the fixture")
      }
    }
  }

  func testMetaAconChannelwiseWithBatchNorm() throws {
    var rng = SeededGenerator(seed: 1)
    try check(MetaAconC(channels: 20, r: 4, batchNorm: true, rng: &rng), "metaaconc_bn", training: true, rtol: 1e-4, atol: 1e-4)
  }

  func testMetaAconChannelwiseWithoutBatchNormAtBatchOne() throws {
    var rng = SeededGenerator(seed: 2)
    try check(MetaAconC(channels: 20, r: 4, batchNorm: false, rng: &rng), "metaaconc_nobn", training: true)
  }

  func testMetaAconLayerwise() throws {
    var rng = SeededGenerator(seed: 3)
    try check(MetaAconLayerwise(channels: 5, rng: &rng), "metaacon_layerwise", training: true)
    try check(MetaAconLayerwise(channels: 17, rng: &rng), "metaacon_layerwise_b3", training: true)
  }

  func testMetaAconPixelwise() throws {
    var rng = SeededGenerator(seed: 4)
    try check(MetaAconPixelwise(channels: 3, rng: &rng), "metaacon_pixelwise", training: true)
  }

  func testAconFReLUStrideOneAndTwoInTrainingAndEvaluation() throws {
    var rng = SeededGenerator(seed: 5)
    try check(AconFReLU(channels: 3, stride: 1, rng: &rng), "acon_frelu_s1_train", training: true, rtol: 1e-4, atol: 1e-4)
    try check(AconFReLU(channels: 3, stride: 2, rng: &rng), "acon_frelu_s2_train", training: true, rtol: 1e-4, atol: 1e-4)
    try check(AconFReLU(channels: 3, stride: 1, rng: &rng), "acon_frelu_s1_eval", training: false)
    try check(AconFReLU(channels: 3, stride: 2, rng: &rng), "acon_frelu_s2_eval", training: false)
  }
}
