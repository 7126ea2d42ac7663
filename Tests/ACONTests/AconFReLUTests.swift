// AconFReLUTests: TFNet's ACON-FReLU layer against its Double twin by the gradient checker
// (input and every parameter gradient by central differences) on odd shapes in training and
// evaluation mode, the official module's state_dict names and shapes, output shapes at stride 2
// on odd sizes, bad input, 1 vs 2 threads bit for bit, and the memory-bound passes acon-bench
// records inside it.
import ACON
import NN
import TensorCore
import TestSupport
import Training
import XCTest

final class AconFReLUTests: XCTestCase {
  func testStateDictNamesAreTheOfficialModules() {
    var rng = SeededGenerator(seed: 31)
    let layer = AconFReLU(channels: 5, stride: 2, rng: &rng)
    XCTAssertEqual(layer.namedParameters().map(\.0),
      ["conv_frelu.weight", "conv_frelu.bias", "bn1.weight", "bn1.bias", "bn2.weight", "bn2.bias"])
    XCTAssertEqual(layer.namedParameters().map(\.1.shape), [[5, 1, 3, 3], [5], [5], [5], [5], [5]])
    XCTAssertEqual(Set(stateDict(of: layer).keys), [
      "conv_frelu.weight", "conv_frelu.bias",
      "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked",
      "bn2.weight", "bn2.bias", "bn2.running_mean", "bn2.running_var", "bn2.num_batches_tracked",
    ])
  }

  func testOutputShapes() throws {
    var rng = SeededGenerator(seed: 32)
    for (h, w, s, oh, ow) in [(5, 7, 2, 3, 4), (1, 1, 2, 1, 1), (2, 2, 2, 1, 1), (4, 3, 1, 4, 3), (1, 1, 1, 1, 1)] {
      let layer = AconFReLU(channels: 3, stride: s, rng: &rng)
      XCTAssertEqual(try layer.outputShape(for: [2, 3, h, w]), [2, 3, oh, ow])
      XCTAssertEqual(try layer.forward(Tensor.normal([2, 3, h, w], using: &rng)).shape, [2, 3, oh, ow])
    }
  }

  func testGradientsInTrainingOnOddShapes() {
    var rng = SeededGenerator(seed: 33)
    for (shape, s) in [([2, 1, 3, 3], 1), ([3, 5, 2, 2], 1), ([4, 17, 1, 1], 1), ([2, 3, 5, 5], 2), ([1, 2, 3, 3], 2),
                       ([4, 1, 2, 2], 2), ([1, 3, 4, 5], 2), ([2, 2, 7, 3], 2)] {
      let layer = AconFReLU(channels: shape[1], stride: s, rng: &rng)
      randomizeParameters(layer, -1, 1, using: &rng)
      let report = GradientChecker().assertGradients(layer, input: Tensor.uniform(shape, -2, 2, using: &rng),
        "AconFReLU \(shape) stride \(s) train")
      XCTAssertEqual(Set(report?.tensors ?? []), Set(["input"] + layer.namedParameters().map(\.0)))
    }
  }

  func testGradientsInEvaluationIncludingBatchOneAndOneByOne() {
    var rng = SeededGenerator(seed: 34)
    for (shape, s) in [([1, 3, 1, 1], 1), ([1, 5, 3, 3], 1), ([1, 1, 1, 1], 2), ([2, 3, 5, 5], 2)] {
      let layer = AconFReLU(channels: shape[1], stride: s, rng: &rng)
      randomizeParameters(layer, -1, 1, using: &rng)
      for bn in [layer.bn1, layer.bn2] {
        bn.runningMean.fillUniform(-0.5, 0.5, using: &rng)
        bn.runningVar.fillUniform(0.5, 1.5, using: &rng)
      }
      layer.eval()
      let report = GradientChecker().assertGradients(layer, input: Tensor.uniform(shape, -2, 2, using: &rng),
        "AconFReLU \(shape) stride \(s) eval")
      XCTAssertEqual(Set(report?.tensors ?? []), Set(["input"] + layer.namedParameters().map(\.0)))
    }
  }

  func testBadInputNamesTheLayer() {
    var rng = SeededGenerator(seed: 35)
    let layer = AconFReLU(channels: 4, rng: &rng)
    for shape in [[2, 3, 4, 4], [2, 4, 4], [2, 4, 0, 3]] {
      XCTAssertThrowsError(try layer.forward(Tensor(zeros: shape))) { error in
        XCTAssertTrue(String(describing: error).contains("AconFReLU"), "\(error)")
      }
    }
    XCTAssertThrowsError(try layer.backward(Tensor(zeros: [2, 4, 4, 4]))) { error in
      XCTAssertTrue(String(describing: error).contains("AconFReLU"), "\(error)")
    }
  }

  func testOneAndTwoThreadsGiveTheSameBits() throws {
    let saved = Threads.count
    defer { Threads.count = saved }
    var data = SeededGenerator(seed: 36)
    let x = Tensor.normal([4, 13, 37, 41], using: &data)
    for s in [1, 2] {
      let dy = Tensor.normal([4, 13, (37 - 1) / s + 1, (41 - 1) / s + 1], using: &data)
      var outs: [[[Float]]] = []
      for threads in [1, 2] {
        Threads.count = threads
        var rng = SeededGenerator(seed: 37)
        let layer = AconFReLU(channels: 13, stride: s, rng: &rng)
        let y = try layer.forward(x).array
        layer.zeroGrad()
        let dx = try layer.backward(dy).array
        outs.append([y, dx] + layer.namedParameters().map { $0.1.grad.array })
      }
      for k in outs[0].indices { assertBitwiseEqual(outs[0][k], outs[1][k], "stride \(s) tensor \(k)") }
    }
  }
  /// Inside a Sequential, ACON-FReLU is a container for acon-bench's memory-bound passes: its
  /// funnel's depthwise convolution, bn1, the max-pool (stride 2), the smooth maximum and bn2
  /// count one by one, each with the bytes its tensors take, and the layer itself counts nothing.
  /// Recording changes no result.
  func testMemoryPassesCountEachInnerPass() throws {
    var rng = SeededGenerator(seed: 37)
    for stride in [1, 2] {
      let net = Sequential([AconFReLU(channels: 3, stride: stride, rng: &rng)])
      let x = Tensor.uniform([2, 3, 5, 6], -1, 1, using: &rng)
      let os = try net.outputShape(for: x.shape)
      let dy = Tensor.uniform(os, -1, 1, using: &rng)
      let plain = try net.forward(x).array
      let plainDx = try net.backward(dy).array
      let ((y, dx), r) = try MemoryPasses.recording { (try net.forward(x).array, try net.backward(dy).array) }
      assertBitwiseEqual(y, plain)
      assertBitwiseEqual(dx, plainDx)
      let nx = x.count, ny = os.reduce(1, *), f = 4
      var want: [String: Int] = [
        "AconFReLU.conv_frelu.forward": nx + ny, "AconFReLU.bn1.forward": 2 * ny,
        "AconFReLU.smooth_max.forward": 3 * ny, "AconFReLU.bn2.forward": 2 * ny,
        "AconFReLU.bn2.backward": 3 * ny, "AconFReLU.smooth_max.backward": 5 * ny, "AconFReLU.bn1.backward": 3 * ny,
        "AconFReLU.conv_frelu.backward": ny + 2 * nx, "AconFReLU.add.backward": 3 * nx,
      ]
      if stride == 2 {
        want["AconFReLU.maxpool.forward"] = nx + ny
        want["AconFReLU.maxpool.backward"] = ny + 2 * nx
      }
      XCTAssertEqual(Set(r.byKind.keys), Set(want.keys), "stride \(stride)")
      for (kind, elements) in want {
        XCTAssertEqual(r.byKind[kind]?.bytes, f * elements, "\(kind), stride \(stride)")
        XCTAssertEqual(r.byKind[kind]?.passes, 1, "\(kind), stride \(stride)")
      }
      XCTAssertEqual(r.bytes, f * want.values.reduce(0, +))
      XCTAssertEqual(r.passes, want.count)
    }
  }
}
