// ZooOfficialTests: the zoo against the official modules — parameter counts (the figures),
// state_dict keys, order and shapes and multiply-accumulates (zoo_keys.json), eval-mode logits of a
// PyTorch-written state, and the losses of SGD steps from the same weights.
import NN
import TensorCore
import TestSupport
import Training
import XCTest
import Zoo

final class ZooOfficialTests: XCTestCase {
  /// The official modules' parameter counts at 3×224×224 and 1000 classes (the figures).
  private let officialCounts: [String: Int] = [
    "shufflenetv2-0.5x-aconc": 1_379_600, "shufflenetv2-0.5x-meta": 1_686_620, "shufflenetv2-1.5x-meta": 3_953_842,
    "tfnet-0.5": 1_344_504, "tfnet-2.0": 3_911_208, "resnet50-aconc": 25_594_920, "resnet50-meta": 25_773_368,
  ]

  func testParameterCountsKeysShapesAndMACsMatchOfficial() throws {
    let lists = try ZooFixtures.keyLists()
    XCTAssertTrue(Set(officialCounts.keys).isSubset(of: Set(lists.keys)))
    for (name, list) in lists.sorted(by: { $0.key < $1.key }) {
      let m = try ZooModels.build(name: name, inputShape: list.input, classes: list.classes, seed: 0)
      if let count = officialCounts[name] {
        XCTAssertEqual(m.parameterCount, count, "\(name): the issue's count")
        XCTAssertEqual(list.parameters, count, "\(name): the official module's count")
      }
      XCTAssertEqual(m.parameterCount, list.parameters, name)
      let want = list.keys.map { entry -> (String, [Int]) in
        guard case let .name(n) = entry[0], case let .shape(s) = entry[1] else { return ("?", []) }
        return (n, s)
      }
      let names = m.stateDictNames()
      XCTAssertEqual(names, want.map(\.0), "\(name): state_dict keys in the official order")
      let state = stateDict(of: m)
      for (key, shape) in want where state[key]?.shape != shape {
        XCTFail("\(name): \(key) has shape \(state[key].map { Shape.text($0.shape) } ?? "none"), official \(Shape.text(shape))")
      }
      XCTAssertEqual(try MultiplyAccumulates.count(m, inputShape: list.input), list.macs, "\(name): multiply-accumulates")
    }
  }

  /// The paper's figures: ShuffleNetV2 0.5× is about 41 MFLOPs (multiply-accumulates) at 224.
  func testShuffleNetMACsNearThePaper() throws {
    let m = try ZooModels.build(name: "shufflenetv2-0.5x-relu", inputShape: [3, 224, 224], classes: 1000, seed: 0)
    let macs = try MultiplyAccumulates.count(m, inputShape: [3, 224, 224])
    XCTAssertEqual(Double(macs) / 1e6, 41, accuracy: 1.0)
  }

  func testPyTorchStateLoadsStrictlyAndEvalLogitsAgree() throws {
    for name in ["shufflenetv2-0.5x-aconc", "shufflenetv2-0.5x-meta", "tfnet-0.5", "resnet18-aconc", "resnet18-meta"] {
      let m = try ZooModels.build(name: name, inputShape: [3, 32, 32], classes: 10, seed: 5)
      let state = try ZooFixtures.state(name)
      XCTAssertEqual(m.stateDictNames().joined(separator: ","), state.metadata["keys_in_order"], name)
      try loadStateDict(state.tensors, into: m, file: name)
      m.eval()
      let io = try SafetensorsFile.read(path: ZooFixtures.dir + "/\(name).io.safetensors")
      let want = try ZooFixtures.f32(io, "logits")
      let scale = want.values.map(abs).max()!
      let y = try m.forward(try ZooFixtures.f32(io, "x").tensor)
      assertClose(y, want, rtol: 1e-4, atol: 1e-4 * scale, "\(name) eval logits")
    }
  }

  func testSGDStepsGiveTheLossesOfPyTorch() throws {
    for name in ["shufflenetv2-0.5x-meta", "tfnet-0.5"] {
      let m = try ZooModels.build(name: name, inputShape: [3, 32, 32], classes: 10, seed: 5)
      try loadStateDict(try ZooFixtures.state(name).tensors, into: m, file: name)
      let sgd = try SafetensorsFile.read(path: ZooFixtures.dir + "/\(name).sgd.safetensors")
      guard case let .i64(_, labels)? = sgd.tensors["labels"] else { return XCTFail("\(name): no labels") }
      let x = try ZooFixtures.f32(sgd, "x").tensor
      // All 5 losses (before each of 4 steps and after the last). The script picked each
      // model's learning rate so that PyTorch's float32 and float64 runs agree to 2e-5 at every
      // one of them, so rounding alone cannot part two correct float32 runs by 1e-4.
      let want = try ZooFixtures.f32(sgd, "losses").values
      XCTAssertEqual(want.count, 5, name)
      let lr = Float(sgd.metadata["lr"] ?? "") ?? .nan
      m.train()
      m.packGradients()
      let opt = SGD(groups: ParameterGroup.defaultGroups(m.namedParameters(), weightDecay: 4e-5), learningRate: lr,
        momentum: 0.9)
      let loss = CrossEntropyLoss(labelSmoothing: 0.1)
      var got: [Float] = []
      for step in 0..<want.count {
        m.zeroGrad()
        got.append(try loss(try m.forward(x), labels: labels.map(Int32.init)))
        if step < want.count - 1 {
          _ = try m.backward(loss.gradient!)
          opt.step()
        }
      }
      assertClose(got, want, rtol: 1e-4, atol: 0, "\(name) losses of SGD steps")
    }
  }
}
