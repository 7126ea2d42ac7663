// ShuffleUnitFixtureTests: a ShuffleNetV2-ACON unit written with `Graph` against PyTorch.
// Fixtures/shufflenet_unit/make_shufflenet_unit.py (run once with torch; the files are committed,
// so this test needs no Python) saved the official block's state_dict, an input, the training-mode
// output, an output gradient, the input and parameter gradients, and the BatchNorm running
// statistics after the step. The state loads strictly and the keys come in PyTorch's order.
// As in the script, the "dw" 3×3 convolutions are ordinary ones until depthwise convolution lands.
import ACON
import Foundation
import NN
import TensorCore
import TestSupport
import Training
import XCTest

/// The official ShuffleV2Block_ACON with ordinary 3×3 convolutions where it has depthwise ones.
private func shuffleV2AconUnit(inp: Int, oup: Int, mid: Int, stride: Int, rng: inout SeededGenerator) -> Graph {
  let g = Graph()
  let (proj, x) = stride == 1 ? g.split(g.input, .evenOdd) : (g.input, g.input)
  let main = g("branch_main", Sequential([
    Conv2D(inChannels: inp, outChannels: mid, kernelSize: 1, rng: &rng), BatchNorm2D(channels: mid),
    AconC(channels: mid, rng: &rng),
    Conv2D(inChannels: mid, outChannels: mid, kernelSize: 3, stride: stride, padding: 1, rng: &rng),
    BatchNorm2D(channels: mid),
    Conv2D(inChannels: mid, outChannels: oup - inp, kernelSize: 1, rng: &rng), BatchNorm2D(channels: oup - inp),
    AconC(channels: oup - inp, rng: &rng),
  ]), x)
  guard stride == 2 else {
    g.output = g.concat(proj, main)
    return g
  }
  let p = g("branch_proj", Sequential([
    Conv2D(inChannels: inp, outChannels: inp, kernelSize: 3, stride: 2, padding: 1, rng: &rng), BatchNorm2D(channels: inp),
    Conv2D(inChannels: inp, outChannels: inp, kernelSize: 1, rng: &rng), BatchNorm2D(channels: inp),
    AconC(channels: inp, rng: &rng),
  ]), proj)
  g.output = g.concat(p, main)
  return g
}

final class ShuffleUnitFixtureTests: XCTestCase {
  private let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("Fixtures/shufflenet_unit").path

  private func f32(_ file: SafetensorsFile, _ name: String) throws -> DoubleTensor {
    guard case let .f32(shape, values)? = file.tensors[name] else {
      throw TensorError.invalidArgument("fixture tensor \(name) is missing or not F32")
    }
    return DoubleTensor(shape: shape, values: values.map(Double.init))
  }

  func testUnitsMatchPyTorch() throws {
    for (inp, oup, mid, stride) in [(3, 6, 4, 1), (3, 8, 4, 2)] {
      var rng = SeededGenerator(seed: 0)
      let unit = shuffleV2AconUnit(inp: inp, oup: oup, mid: mid, stride: stride, rng: &rng)
      let statePath = dir + "/unit_s\(stride)_state.safetensors"
      let state = try SafetensorsFile.read(path: statePath)
      XCTAssertEqual(unit.stateDictNames().joined(separator: ","), state.metadata["keys_in_order"],
        "stride \(stride): state_dict keys in PyTorch's order")
      try loadStateDict(state.tensors, into: unit, file: statePath)
      let io = try SafetensorsFile.read(path: dir + "/unit_s\(stride)_io.safetensors")
      let x = try f32(io, "x").tensor
      unit.zeroGrad()
      let y = try unit.forward(x)
      assertClose(y, try f32(io, "y"), rtol: 1e-4, atol: 1e-5, "stride \(stride) y")
      let dx = try unit.backward(try f32(io, "dy").tensor)
      assertClose(dx, try f32(io, "dx"), rtol: 1e-4, atol: 1e-5, "stride \(stride) dx")
      for (name, p) in unit.namedParameters() {
        assertClose(p.grad, try f32(io, "grad." + name), rtol: 1e-3, atol: 1e-4, "stride \(stride) grad \(name)")
      }
      for (name, b) in unit.namedBuffers() {
        guard case let .float(t) = b else { continue }
        assertClose(t, try f32(io, "after." + name), rtol: 1e-5, atol: 1e-6, "stride \(stride) \(name)")
      }
    }
  }
}
