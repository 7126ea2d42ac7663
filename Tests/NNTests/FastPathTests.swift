// FastPathTests: the fast path needs nothing from the user (issue 15): Sequential and Graph fuse a
// Conv2D or a BatchNorm2D with a plain ReLU after it (same bits as running them apart, in
// training and evaluation, forward and backward), every convolution in a Sequential
// shares one workspace, and the errors name the layer: "backward called before forward", and
// ModelSummary keeps the layer's name in a shape error as Sequential does.
import NN
import TensorCore
import TestSupport
import XCTest

final class FastPathTests: XCTestCase {
  private func convs(_ seed: UInt64) -> (Conv2D, Conv2D) {
    var rng = SeededGenerator(seed: seed)
    return (Conv2D(inChannels: 3, outChannels: 5, kernelSize: 3, padding: 1, rng: &rng),
      Conv2D(inChannels: 5, outChannels: 4, kernelSize: 3, stride: 2, rng: &rng))
  }

  func testConvFollowedByAPlainReLUIsFusedWithTheSameBits() throws {
    let (a1, a2) = convs(1), (b1, b2) = convs(1)
    let fused = Sequential([("c1", a1), ("r1", ReLU()), ("c2", a2), ("r2", ReLU())])
    var rng = SeededGenerator(seed: 2)
    let x = Tensor(zeros: [2, 3, 9, 7])
    x.fillNormal(using: &rng)
    let dyValues = (0..<(2 * 4 * 4 * 3)).map { _ in rng.nextNormal() }
    let y = try fused.forward(x).copy()
    XCTAssertTrue(a1.workspace === a2.workspace, "one workspace for the container's convolutions")
    let dx = try fused.backward(Tensor(shape: [2, 4, 4, 3], values: dyValues)).copy()

    // The same layers run one by one, unfused.
    let r1 = ReLU(), r2 = ReLU()
    var h = try b1.forward(x)
    h = try r1.forward(h)
    h = try b2.forward(h)
    let y2 = try r2.forward(h)
    XCTAssertEqual(y.array, y2.array)
    XCTAssertTrue(y.array.contains(0) && y.array.contains { $0 > 0 })
    var g = try r2.backward(Tensor(shape: [2, 4, 4, 3], values: dyValues))
    g = try b2.backward(g)
    g = try r1.backward(g)
    g = try b1.backward(g)
    XCTAssertEqual(dx.array, g.array)
    XCTAssertEqual(a1.weight.grad.array, b1.weight.grad.array)
    XCTAssertEqual(a2.bias?.grad.array, b2.bias?.grad.array)
  }

  func testFusedSequentialPassesTheGradientCheck() {
    let (c1, c2) = convs(3)
    let net = Sequential([("c1", c1), ("r1", ReLU()), ("c2", c2), ("r2", ReLU())])
    var rng = SeededGenerator(seed: 4)
    let x = Tensor(zeros: [2, 3, 6, 5])
    x.fillNormal(using: &rng)
    GradientChecker(kink: 0, skipsNonSmoothPoints: true).assertGradients(net, input: x, "conv+ReLU fused")
  }

  /// conv, BN, ReLU (in place), BN, ReLU: both BN+ReLU pairs fused in the container, against the
  /// same five layers run one by one. Odd shapes: one channel, 1×1 and 21-element planes (one
  /// vector and a tail), 32-element planes (two vectors).
  func testBatchNormFollowedByAReLUIsFusedWithTheSameBits() throws {
    // The bits of the NCHW order (a channels-major container sums in another order:
    // ChannelsMajorTests).
    Sequential.allowsChannelsMajor = false
    defer { Sequential.allowsChannelsMajor = true }
    func layers(_ c: Int) -> [(String, Module)] {
      var rng = SeededGenerator(seed: 7)
      let bn1 = BatchNorm2D(channels: c), bn2 = BatchNorm2D(channels: c)
      for bn in [bn1, bn2] {
        bn.weight.value.fillNormal(using: &rng)
        bn.bias.value.fillNormal(using: &rng)
        // Channel 0 clips about half its values whatever the draw.
        bn.weight.value.data[0] = 1
        bn.bias.value.data[0] = 0.2
      }
      return [("conv", Conv2D(inChannels: 2, outChannels: c, kernelSize: 1, rng: &rng)), ("bn1", bn1),
        ("relu1", ReLU(inPlace: true)), ("bn2", bn2), ("relu2", ReLU())]
    }
    for (shape, training) in [([3, 2, 7, 3], true), ([2, 2, 1, 1], true), ([4, 2, 4, 8], true), ([3, 2, 7, 3], false)] {
      for c in [1, 5] {
        let fusedLayers = layers(c), apartLayers = layers(c)
        let net = Sequential(fusedLayers)
        if !training {
          for l in fusedLayers + apartLayers { l.1.eval() }
          // Running statistics that are not the identity.
          for (l1, l2) in zip(fusedLayers, apartLayers) {
            guard let b1 = l1.1 as? BatchNorm2D, let b2 = l2.1 as? BatchNorm2D else { continue }
            for b in [b1, b2] {
              for i in 0..<c { b.runningMean.data[i] = 0.3 + 0.1 * Float(i); b.runningVar.data[i] = 0.5 + Float(i) }
            }
          }
        }
        var rng = SeededGenerator(seed: 8)
        let x = Tensor.uniform(shape, using: &rng)
        let yShape = [shape[0], c, shape[2], shape[3]]
        let dyValues = (0..<yShape.reduce(1, *)).map { _ in rng.nextNormal() }
        let y = try net.forward(x).copy()
        let dx = try net.backward(Tensor(shape: yShape, values: dyValues)).copy()
        for name in ["bn1", "bn2"] {
          XCTAssertTrue((net[name] as! BatchNorm2D).fusedReLU, "\(name) ran fused, \(shape) c \(c)")
        }

        var h = x
        for (_, l) in apartLayers { h = try l.forward(h) }
        let label = "\(shape), c \(c), \(training ? "training" : "evaluation")"
        XCTAssertEqual(y.array, h.array, "y, \(label)")
        XCTAssertTrue(y.array.contains(0) && y.array.contains { $0 > 0 }, "the ReLU clips some values, \(label)")
        var g = Tensor(shape: yShape, values: dyValues)
        for (_, l) in apartLayers.reversed() { g = try l.backward(g) }
        XCTAssertEqual(dx.array, g.array, "dx, \(label)")
        for (l1, l2) in zip(fusedLayers, apartLayers) {
          for (p1, p2) in zip(l1.1.namedParameters(), l2.1.namedParameters()) {
            XCTAssertEqual(p1.1.grad.array, p2.1.grad.array, "\(l1.0).\(p1.0) gradient, \(label)")
          }
          if let b1 = l1.1 as? BatchNorm2D, let b2 = l2.1 as? BatchNorm2D {
            XCTAssertEqual(b1.runningMean.array, b2.runningMean.array, "\(l1.0) running mean, \(label)")
            XCTAssertEqual(b1.runningVar.array, b2.runningVar.array, "\(l1.0) running var, \(label)")
          }
        }
      }
    }
  }

  /// Values the ReLU decides on exactly: a channel whose normalised values include exact zeros
  /// (its mean is 0, γ = 1, β = 0), where a mask of y ≥ 0 would pass dy; and a channel with a NaN,
  /// which both ways carry through forward and stop in the mask. Both with synchronised batch
  /// norm too (an all-reduce over one process), whose statistics take the other path.
  func testFusedBatchNormReLUDecidesZerosAndNaNAsTheReLUDoes() throws {
    for (h, w) in [(1, 5), (4, 8)] {
      for synchronised in [false, true] {
        let hw = h * w
        var values = [Float]()
        for s in 0..<2 {
          // channel 0: -2, -1, 0, 1, 2, ... (mean 0 over both samples); channel 1: one NaN
          values += (0..<hw).map { Float(($0 % 5) - 2) * (s == 0 ? 1 : -1) }
          values += (0..<hw).map { $0 == 3 && s == 1 ? .nan : Float($0) * 0.5 }
        }
        let x = Tensor(shape: [2, 2, h, w], values: values)
        let dy = Tensor(shape: [2, 2, h, w], values: (0..<values.count).map { Float($0 % 7) - 2.5 })
        func run(fused: Bool) throws -> ([UInt32], [UInt32], [UInt32]) {
          let bn = BatchNorm2D(channels: 2), relu = ReLU()
          if synchronised { bn.allReduce = { _ in } }
          let net = fused ? Sequential([("bn", bn), ("relu", relu)]) : Sequential([("bn", bn), ("pool", MaxPool2D(kernelSize: 1)), ("relu", relu)])
          let y = try net.forward(x).copy()
          let dx = try net.backward(dy).copy()
          XCTAssertEqual(bn.fusedReLU, fused)
          return (y.array.map(\.bitPattern), dx.array.map(\.bitPattern), bn.weight.grad.array.map(\.bitPattern))
        }
        let (y1, dx1, dg1) = try run(fused: true), (y2, dx2, dg2) = try run(fused: false)
        let label = "\(h)×\(w)\(synchronised ? ", synchronised" : "")"
        XCTAssertEqual(y1, y2, "y, \(label)")
        XCTAssertEqual(dx1, dx2, "dx, \(label)")
        XCTAssertEqual(dg1, dg2, "dγ, \(label)")
        XCTAssertTrue(y1[0..<hw].contains(0), "channel 0 has exact zeros, \(label)")
        XCTAssertTrue(y1[hw..<(2 * hw)].contains { Float(bitPattern: $0).isNaN }, "channel 1 carries the NaN, \(label)")
      }
    }
  }

  func testFusedBatchNormReLUPassesTheGradientCheck() {
    var rng = SeededGenerator(seed: 9)
    let bn = BatchNorm2D(channels: 3)
    bn.bias.value.fillNormal(using: &rng)
    let net = Sequential([("conv", Conv2D(inChannels: 2, outChannels: 3, kernelSize: 3, stride: 2, padding: 1, rng: &rng)),
      ("bn", bn), ("relu", ReLU(inPlace: true))])
    GradientChecker(skipsNonSmoothPoints: true).assertGradients(net, input: .uniform([3, 2, 5, 5], using: &rng), "BN+ReLU fused")
    XCTAssertTrue(bn.fusedReLU)
  }

  /// A Sequential that ends with BN and an in-place ReLU runs them fused and leaves its dy alone;
  /// one whose in-place ReLU follows a layer it cannot fuse with writes over it, and a residual
  /// around either still gets the right input gradient.
  func testASequentialWritesOverItsGradientOnlyWhenItsLastReLURunsAlone() throws {
    var rng = SeededGenerator(seed: 10)
    let fused = Sequential([("bn", BatchNorm2D(channels: 3)), ("relu", ReLU(inPlace: true))])
    let apart = Sequential([("pool", MaxPool2D(kernelSize: 1)), ("relu", ReLU(inPlace: true))])
    let x = Tensor.uniform([2, 3, 3, 4], using: &rng)
    for (block, writes) in [(fused, false), (apart, true)] {
      _ = try block.forward(x)
      let dy = Tensor.uniform([2, 3, 3, 4], using: &rng), before = dy.array
      _ = try block.backward(dy)
      XCTAssertEqual(dy.array != before, writes, "\(block.layers.map(\.0)): backward wrote into its dy")
    }
    for (name, block) in [("fused", fused), ("apart", apart)] {
      let g = Graph()
      g.output = g.add(g.input, g("block", block, g.input))
      GradientChecker(skipsNonSmoothPoints: true).assertGradients(g, input: .uniform([2, 3, 3, 4], using: &rng), "x + \(name)(x)")
    }
  }

  /// A convolution fused with the ReLU after it masks the gradient in place on its Winograd,
  /// 1×1 and one-sample paths, but never the dy its container was given: a Sequential that ends
  /// with the pair leaves the caller's dy alone (ReLU in place or not), and a residual around it,
  /// whose add hands one gradient to both sides, gets the right input gradient.
  func testAFusedConvolutionLeavesItsCallersGradientAlone() throws {
    var rng = SeededGenerator(seed: 11)
    let cases: [(String, Sequential, [Int])] = [
      ("3x3 Winograd", Sequential([("conv", Conv2D(inChannels: 16, outChannels: 16, kernelSize: 3, padding: 1, rng: &rng)),
        ("relu", ReLU(inPlace: true))]), [2, 16, 6, 6]),
      ("1x1, one sample", Sequential([("conv", Conv2D(inChannels: 5, outChannels: 5, kernelSize: 1, rng: &rng)),
        ("relu", ReLU())]), [1, 5, 3, 4]),
      ("1x1, 16x16 planes", Sequential([("conv", Conv2D(inChannels: 4, outChannels: 4, kernelSize: 1, rng: &rng)),
        ("relu", ReLU(inPlace: true))]), [2, 4, 16, 16]),
    ]
    for (name, block, shape) in cases {
      let x = Tensor.uniform(shape, using: &rng)
      let y = try block.forward(x)
      let dy = Tensor.uniform(y.shape, using: &rng), before = dy.array
      let dx = try block.backward(dy).copy()
      XCTAssertEqual(dy.array, before, "\(name): backward wrote into its dy")
      // The same gradient from the pair run apart.
      let conv = block["conv"] as! Conv2D, relu = ReLU()
      _ = try relu.forward(try conv.forward(x))
      XCTAssertEqual(dx.array, try conv.backward(try relu.backward(dy)).array, "\(name): dx")
      let g = Graph()
      g.output = g.add(g.input, g("block", block, g.input))
      GradientChecker(skipsNonSmoothPoints: true, maxElementsPerTensor: 48).assertGradients(
        g, input: .uniform(shape, using: &rng), "x + \(name)(x)")
    }
  }

  /// A `Graph` fuses a Conv2D or BatchNorm2D with the ReLU node after it when only that ReLU
  /// reads the layer's output, as `Sequential` does: the same bits as the twin graph whose ReLUs
  /// sit inside one-layer Sequentials (which it cannot fuse). The graph: conv → BN → ReLU (in
  /// place) → 1×1 conv → ReLU → BN, whose output both a ReLU and the add read (not fused), and
  /// optionally BN → ReLU read only by an add (nothing keeps it for backward) → ReLU. Two steps
  /// (the second on the pool's reused buffers). Odd shapes: one channel, 1×1 planes, 21-element
  /// planes; training and evaluation.
  func testGraphFusesALayerWithTheReLUAfterItWithTheSameBits() throws {
    func build(_ c: Int, wrapped: Bool, endsWithReLU: Bool) -> (Graph, [String: Module]) {
      var rng = SeededGenerator(seed: 11)
      var layers: [String: Module] = [:]
      let g = Graph()
      func node(_ name: String, _ m: Module, _ v: GraphValue) -> GraphValue {
        layers[name] = m
        return m is ReLU && wrapped ? g(name, Sequential([("0", m)]), v) : g(name, m, v)
      }
      func batchNorm() -> BatchNorm2D {
        let bn = BatchNorm2D(channels: c)
        bn.weight.value.fillNormal(using: &rng)
        bn.bias.value.fillNormal(using: &rng)
        bn.weight.value.data[0] = 1  // channel 0 clips about half its values whatever the draw
        bn.bias.value.data[0] = 0.2
        return bn
      }
      var h = node("conv1", Conv2D(inChannels: 2, outChannels: c, kernelSize: 3, padding: 1, rng: &rng), g.input)
      h = node("relu1", ReLU(inPlace: true), node("bn1", batchNorm(), h))
      h = node("relu2", ReLU(), node("conv2", Conv2D(inChannels: c, outChannels: c, kernelSize: 1, rng: &rng), h))
      let b2 = node("bn2", batchNorm(), h)
      h = g.add(node("relu3", ReLU(), b2), b2)
      if endsWithReLU { h = node("relu5", ReLU(), g.add(node("relu4", ReLU(), node("bn3", batchNorm(), h)), h)) }
      g.output = h
      return (g, layers)
    }
    for (shape, training) in [([3, 2, 7, 3], true), ([2, 2, 1, 1], true), ([3, 2, 7, 3], false)] {
      for c in [1, 5] {
        for endsWithReLU in [false, true] {
          let label = "\(shape), c \(c), \(training ? "training" : "evaluation")\(endsWithReLU ? ", ends with a ReLU" : "")"
          var rng = SeededGenerator(seed: 12)
          let x = Tensor.uniform(shape, using: &rng)
          let dyValues = (0..<(shape[0] * c * shape[2] * shape[3])).map { _ in rng.nextNormal() }
          func run(wrapped: Bool) throws -> (y: [Float], dx: [Float], net: Graph, layers: [String: Module]) {
            let (net, layers) = build(c, wrapped: wrapped, endsWithReLU: endsWithReLU)
            if !training {
              net.eval()
              for case let bn as BatchNorm2D in layers.values {
                for i in 0..<c { bn.runningMean.data[i] = 0.3 + 0.1 * Float(i); bn.runningVar.data[i] = 0.5 + Float(i) }
              }
            }
            var hooks = 0
            layers["relu1"]!.backwardHook = { hooks += 1 }
            var y: [Float] = [], dx: [Float] = []
            for _ in 0..<2 {
              net.zeroGrad()
              y = try net.forward(x).array
              dx = try net.backward(Tensor(shape: [shape[0], c, shape[2], shape[3]], values: dyValues)).array
            }
            XCTAssertEqual(hooks, 2, "relu1's hook ran once a step, \(label)")
            return (y, dx, net, layers)
          }
          let fused = try run(wrapped: false), apart = try run(wrapped: true)
          XCTAssertTrue((fused.layers["bn1"] as! BatchNorm2D).fusedReLU, "bn1 ran fused, \(label)")
          XCTAssertTrue((fused.layers["conv2"] as! Conv2D).fusedReLU, "conv2 ran fused, \(label)")
          XCTAssertFalse((fused.layers["bn2"] as! BatchNorm2D).fusedReLU, "bn2 (read twice) ran apart, \(label)")
          XCTAssertEqual((fused.layers["bn3"] as? BatchNorm2D)?.fusedReLU, endsWithReLU ? true : nil, label)
          XCTAssertFalse((apart.layers["bn1"] as! BatchNorm2D).fusedReLU, "the twin runs apart, \(label)")
          if training && endsWithReLU {
            XCTAssertTrue(fused.y.contains(0) && fused.y.contains { $0 > 0 }, "the last ReLU clips some values, \(label)")
          }
          assertBitwiseEqual(fused.y, apart.y, "y, \(label)")
          assertBitwiseEqual(fused.dx, apart.dx, "dx, \(label)")
          for ((name, p1), (_, p2)) in zip(fused.net.namedParameters(), apart.net.namedParameters()) {
            assertBitwiseEqual(p1.grad.array, p2.grad.array, "\(name) gradient, \(label)")
          }
          for ((name, b1), (_, b2)) in zip(fused.net.namedBuffers(), apart.net.namedBuffers()) {
            if case let .float(t1) = b1, case let .float(t2) = b2 { assertBitwiseEqual(t1.array, t2.array, "\(name), \(label)") }
          }
        }
      }
    }
  }

  /// The fused graph above passes the finite-difference check of its input and parameter gradients.
  func testGraphWithFusedReLUsPassesTheGradientCheck() {
    var rng = SeededGenerator(seed: 13)
    let g = Graph()
    let bn = BatchNorm2D(channels: 3)
    bn.bias.value.fillNormal(using: &rng)
    var h = g("conv1", Conv2D(inChannels: 2, outChannels: 3, kernelSize: 3, stride: 2, padding: 1, rng: &rng), g.input)
    h = g("relu1", ReLU(inPlace: true), g("bn", bn, h))
    let conv2 = Conv2D(inChannels: 3, outChannels: 3, kernelSize: 1, rng: &rng)
    g.output = g.add(g("relu2", ReLU(), g("conv2", conv2, h)), h)
    GradientChecker(skipsNonSmoothPoints: true).assertGradients(g, input: .uniform([3, 2, 5, 5], using: &rng), "Graph, fused")
    XCTAssertTrue(bn.fusedReLU && conv2.fusedReLU)
  }

  func testBackwardBeforeForwardSaysSo() {
    var rng = SeededGenerator(seed: 1)
    let layers: [Module] = [Linear(inFeatures: 2, outFeatures: 3, rng: &rng), ReLU(), MaxPool2D(kernelSize: 2),
      BatchNorm2D(channels: 3), Conv2D(inChannels: 1, outChannels: 2, kernelSize: 3, rng: &rng), GlobalAvgPool2D()]
    for l in layers {
      XCTAssertThrowsError(try l.backward(Tensor(zeros: [2, 3]))) {
        XCTAssertEqual(String(describing: $0), "\(l.typeName).backward: backward called before forward")
      }
    }
  }

  func testSummaryNamesTheLayerInAShapeError() {
    var rng = SeededGenerator(seed: 1)
    let net = Sequential([("conv1", Conv2D(inChannels: 3, outChannels: 4, kernelSize: 3, rng: &rng)), ("flatten", Flatten()),
      ("head", Linear(inFeatures: 10, outFeatures: 2, rng: &rng))])
    XCTAssertThrowsError(try ModelSummary(model: net, inputShape: [1, 3, 8, 8])) {
      XCTAssertTrue(String(describing: $0).hasPrefix("head (Linear): expected input of shape [N, 10]"), "\($0)")
    }
  }
}
