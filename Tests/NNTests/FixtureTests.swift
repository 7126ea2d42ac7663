// FixtureTests: forward and backward against files that PyTorch wrote (Fixtures/*.safetensors,
// from Fixtures/make_fixtures.py): a grouped convolution (square and rectangular), a depthwise
// convolution at stride 2 with channel multiplier 2, max pooling 3/2/1 (with a tie), SiLU and
// adaptive average pooling to 1×1. Parameters are loaded by their state_dict names, so the
// layouts are PyTorch's too.
import Foundation
import NN
import TensorCore
import TestSupport
import Training
import XCTest

final class FixtureTests: XCTestCase {
  private func load(_ name: String) throws -> [String: SafetensorsValue] {
    let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .appendingPathComponent("Fixtures/\(name).safetensors").path
    return try SafetensorsFile.read(path: path).tensors
  }

  private func tensor(_ t: [String: SafetensorsValue], _ key: String, file: StaticString = #filePath,
                      line: UInt = #line) throws -> Tensor {
    guard case let .f32(shape, values)? = t[key]?.widened else {
      XCTFail("fixture lacks \(key)", file: file, line: line)
      throw CocoaError(.fileReadCorruptFile)
    }
    return Tensor(shape: shape, values: values)
  }

  /// Loads the module's parameters from the fixture, runs forward and backward with the
  /// fixture's dy, and compares y, dx and every parameter gradient.
  private func check(_ module: Module, _ name: String, tolerance: Double = 1e-5) throws {
    let t = try load(name)
    let params = module.namedParameters()
    for (key, p) in params {
      let v = try tensor(t, key)
      XCTAssertEqual(v.shape, p.shape, "\(name): \(key) shape")
      p.value.data.update(from: v.data, count: v.count)
    }
    let x = try tensor(t, "x")
    let y = try module.forward(x)
    let want = try tensor(t, "y")
    XCTAssertEqual(y.shape, want.shape, "\(name): y shape")
    assertClose(y.array, want.array.map(Double.init), rtol: tolerance, atol: tolerance, "\(name): y")
    module.zeroGrad()
    let dx = try module.backward(try tensor(t, "dy"))
    assertClose(dx.array, try tensor(t, "dx").array.map(Double.init), rtol: tolerance, atol: tolerance, "\(name): dx")
    for (key, p) in params {
      assertClose(p.grad.array, try tensor(t, "grad." + key).array.map(Double.init), rtol: tolerance,
        atol: tolerance, "\(name): grad of \(key)")
    }
  }

  func testGroupedConvolution() throws {
    var rng = SeededGenerator(seed: 1)
    try check(Conv2D(inChannels: 6, outChannels: 9, kernelSize: 3, stride: 1, padding: 1, groups: 3, rng: &rng),
      "grouped_conv")
    try check(Conv2D(inChannels: 4, outChannels: 6, kernelSize: (1, 3), stride: (2, 1), padding: (0, 1), groups: 2,
      rng: &rng), "grouped_conv_rect")
  }

  func testDepthwiseConvolutionStride2() throws {
    var rng = SeededGenerator(seed: 2)
    try check(DepthwiseConv2D(channels: 5, channelMultiplier: 2, kernelSize: 3, stride: 2, padding: 1, rng: &rng),
      "depthwise_conv_s2")
    // The same layer as a grouped Conv2D through im2col.
    try check(Conv2D(inChannels: 5, outChannels: 10, kernelSize: 3, stride: 2, padding: 1, groups: 5, rng: &rng),
      "depthwise_conv_s2")
  }

  func testMaxPool() throws {
    try check(MaxPool2D(kernelSize: 3, stride: 2, padding: 1), "maxpool_3_2_1", tolerance: 0)
    // NaN propagates and takes the gradient; with two NaNs in a window, the later one.
    try check(MaxPool2D(kernelSize: 3, stride: 2, padding: 1), "maxpool_3_2_1_nan", tolerance: 0)
  }

  func testSiLU() throws {
    try check(SiLU(), "silu", tolerance: 1e-5)
  }

  func testAdaptiveAvgPoolTo1x1() throws {
    try check(AdaptiveAvgPool2D(outputSize: 1), "adaptive_avgpool_1")
  }
}
