// BatchNormTests: BatchNorm2D against the Double reference in training (batch statistics,
// biased variance) and evaluation (running statistics); PyTorch's running-statistics update
// (momentum 0.1, *unbiased* variance), num_batches_tracked, and the error for a training batch
// with a single value per channel; synchronised batch norm over an in-process group of two.
import CAconKernels
import Collectives
import CLayerKernels
import NN
import TensorCore
import TestSupport
import Foundation
import XCTest

final class BatchNormTests: XCTestCase {
  private func gammaBeta(_ bn: BatchNorm2D) -> ([Double], [Double]) {
    (bn.weight.value.doubles, bn.bias.value.doubles)
  }

  func testTrainingForwardAndBackwardMatchReference() throws {
    var rng = SeededGenerator(seed: 1)
    // N·H·W = 2 would make x̂ = ±1 whatever x is (dx = 0 but for eps): [3, 13, 1, 1] has 3 values per channel.
    for shape in [[4, 3, 5, 7], [3, 13, 1, 1], [1, 3, 2, 3], [5, 3], [2, 1, 3, 3]] {
      let bn = BatchNorm2D(channels: shape[1])
      randomizeParameters(bn, 0.5, 1.5, using: &rng)
      let x = Tensor.uniform(shape, -2, 3, using: &rng)
      let (g, b) = gammaBeta(bn)
      let y = try bn.forward(x)
      assertClose(y, Reference.batchNormTraining(DoubleTensor(x), gamma: g, beta: b), rtol: 1e-4, atol: 1e-5, "\(shape)")
      let dy = Tensor.uniform(shape, using: &rng)
      bn.zeroGrad()
      let dx = try bn.backward(dy)
      let ref = Reference.batchNormTrainingBackward(DoubleTensor(x), gamma: g, dy: DoubleTensor(dy))
      assertClose(dx, ref.dx, rtol: 1e-3, atol: 1e-5, "dx \(shape)")
      assertClose(bn.weight.grad.array, ref.dgamma, rtol: 1e-4, atol: 1e-5, "dγ \(shape)")
      assertClose(bn.bias.grad.array, ref.dbeta, rtol: 1e-4, atol: 1e-5, "dβ \(shape)")
    }
  }

  /// The vectorised per-channel loops (planes of 8×8 and up) and block passes (smaller planes) of
  /// CLayerKernels: planes that are whole vectors, whole vectors plus a tail, and shorter than a
  /// vector; blocks of several channels, a last unit of fewer channels ([5, 70, 2, 2]: units of
  /// 9), positions not a multiple of 16 ([3, 40, 5, 5]), 37 samples (each position's float sums
  /// flushed into Double after 16, 32 and 37 samples: [37, 6, 3, 3]); one sample's long planes, as a
  /// channels-major batch gives them ([1, 2, 96, 130]: 780 float vectors a channel, summed in float
  /// lanes flushed into Double ones every 16, and a tail); a mean far from zero with a tiny spread
  /// (the variance must not cancel); the same bits whatever the thread count.
  func testKernelsOnVectorShapesLargeMeansAndThreadCounts() throws {
    var rng = SeededGenerator(seed: 11)
    for shape in [[3, 5, 16, 16], [2, 3, 9, 9], [2, 3, 7, 7], [4, 2, 1, 33], [2, 17, 3, 11], [64, 1, 1, 1],
                  [5, 70, 2, 2], [3, 40, 5, 5], [16, 300, 1, 1], [4, 19, 4, 4], [37, 6, 3, 3], [1, 2, 96, 130]] {
      for offset in [0.0, 100.0] {
        let bn = BatchNorm2D(channels: shape[1])
        randomizeParameters(bn, 0.5, 1.5, using: &rng)
        let x = Tensor.uniform(shape, -1, 1, using: &rng)
        for i in 0..<x.count { x.data[i] += Float(offset) }
        let (g, b) = gammaBeta(bn)
        let label = "\(shape) offset \(offset)"
        let y = try bn.forward(x)
        // A mean 170 standard deviations from 0: Σx² − (Σx)²/M would lose 4 digits in Float.
        assertClose(y, Reference.batchNormTraining(DoubleTensor(x), gamma: g, beta: b), rtol: 1e-4, atol: 1e-4, "y \(label)")
        let rv = bn.runningVar.array
        let want = Reference.batchNormRunningUpdate(DoubleTensor(x), runningMean: [Double](repeating: 0, count: shape[1]),
          runningVar: [Double](repeating: 1, count: shape[1]), momentum: 0.1)
        assertClose(rv, want.1, rtol: 1e-4, atol: 1e-9, "running_var \(label)")
        let dy = Tensor.uniform(shape, using: &rng)
        bn.zeroGrad()
        let dx = try bn.backward(dy)
        let ref = Reference.batchNormTrainingBackward(DoubleTensor(x), gamma: g, dy: DoubleTensor(dy))
        let scale = ref.dx.values.map(abs).max() ?? 1
        assertClose(dx.array, ref.dx.values, rtol: 1e-3, atol: 1e-3 * scale, "dx \(label)")
        assertClose(bn.weight.grad.array, ref.dgamma, rtol: 1e-3, atol: 1e-4, "dγ \(label)")
        assertClose(bn.bias.grad.array, ref.dbeta, rtol: 1e-4, atol: 1e-5, "dβ \(label)")
      }
    }
    // Thread counts: the same bits (each channel is summed by one thread, in a fixed order).
    let saved = Threads.count
    defer { Threads.count = saved }
    for shape in [[8, 6, 9, 9], [16, 72, 3, 3], [64, 64, 4, 4]] {
      let x = Tensor.uniform(shape, -2, 3, using: &rng), dy = Tensor.uniform(shape, using: &rng)
      var runs: [([Float], [Float], [Float], [Float])] = []
      for threads in [1, 2, 3] {
        Threads.count = threads
        let bn = BatchNorm2D(channels: shape[1])
        let y = try bn.forward(x).array
        let dx = try bn.backward(dy).array
        runs.append((y, dx, bn.weight.grad.array, bn.runningVar.array))
      }
      for t in 1...2 {
        XCTAssertEqual(runs[0].0, runs[t].0, "y with 1 and \(t + 1) threads, \(shape)")
        XCTAssertEqual(runs[0].1, runs[t].1, "dx with 1 and \(t + 1) threads, \(shape)")
        XCTAssertEqual(runs[0].2, runs[t].2, "dγ with 1 and \(t + 1) threads, \(shape)")
        XCTAssertEqual(runs[0].3, runs[t].3, "running_var with 1 and \(t + 1) threads, \(shape)")
      }
    }
  }

  /// The per-channel statistics (planes of 64 floats and more) sum x − k and (x − k)² in one
  /// pass about each channel's first element k, and take a second pass about the mean where k
  /// lies far out (more than 4 standard deviations from the mean): a first element of 10³ or
  /// −10⁵ beside values in [−1, 1] (the second pass), and of 2 beside values in [1, 3] (one pass).
  func testStatisticsAboutTheFirstElementHoldWhereItLiesFarOut() throws {
    var rng = SeededGenerator(seed: 12)
    for shape in [[3, 5, 16, 16], [1, 2, 96, 130], [4, 3, 9, 9]] {
      for (first, low, high) in [(1e3, -1.0, 1.0), (-1e5, -1.0, 1.0), (2.0, 1.0, 3.0)] as [(Float, Float, Float)] {
        let bn = BatchNorm2D(channels: shape[1])
        let x = Tensor.uniform(shape, low, high, using: &rng)
        let plane = shape[2] * shape[3]
        for ch in 0..<shape[1] { x.data[ch * plane] = first }
        let (g, b) = gammaBeta(bn)
        let label = "\(shape) first \(first)"
        assertClose(try bn.forward(x), Reference.batchNormTraining(DoubleTensor(x), gamma: g, beta: b), rtol: 1e-4,
          atol: 1e-4, "y \(label)")
        let want = Reference.batchNormRunningUpdate(DoubleTensor(x), runningMean: [Double](repeating: 0, count: shape[1]),
          runningVar: [Double](repeating: 1, count: shape[1]), momentum: 0.1)
        assertClose(bn.runningMean.array, want.0, rtol: 1e-5, atol: 1e-6, "running_mean \(label)")
        assertClose(bn.runningVar.array, want.1, rtol: 1e-5, atol: 1e-9, "running_var \(label)")
      }
    }
  }

  func testRunningStatisticsUseMomentumAndUnbiasedVariance() throws {
    var rng = SeededGenerator(seed: 2)
    let bn = BatchNorm2D(channels: 3)
    XCTAssertEqual(bn.runningMean.array, [0, 0, 0])
    XCTAssertEqual(bn.runningVar.array, [1, 1, 1])
    XCTAssertEqual(bn.numBatchesTracked.value, 0)
    var rm = [0.0, 0, 0], rv = [1.0, 1, 1]
    for step in 1...3 {
      // M = 2·2·3 = 12 values per channel: the unbiased factor 12/11 is clearly visible.
      let x = Tensor.uniform([2, 3, 2, 3], -1, 4, using: &rng)
      _ = try bn.forward(x)
      (rm, rv) = Reference.batchNormRunningUpdate(DoubleTensor(x), runningMean: rm, runningVar: rv, momentum: 0.1)
      assertClose(bn.runningMean.array, rm, rtol: 1e-5, atol: 1e-6, "running_mean after \(step)")
      assertClose(bn.runningVar.array, rv, rtol: 1e-5, atol: 1e-6, "running_var after \(step)")
      XCTAssertEqual(bn.numBatchesTracked.value, Int64(step))
    }
    // The biased variance would give a visibly different running_var.
    let x = Tensor(shape: [2, 1, 1, 1], values: [0, 2])  // mean 1, biased var 1, unbiased var 2
    let one = BatchNorm2D(channels: 1)
    _ = try one.forward(x)
    XCTAssertEqual(one.runningMean[0], 0.1, accuracy: 1e-7)
    XCTAssertEqual(one.runningVar[0], 0.9 + 0.1 * 2, accuracy: 1e-6)
  }

  func testEvaluationUsesRunningStatisticsAndLeavesThemAlone() throws {
    var rng = SeededGenerator(seed: 3)
    let bn = BatchNorm2D(channels: 3)
    randomizeParameters(bn, 0.5, 1.5, using: &rng)
    for _ in 0..<3 { _ = try bn.forward(Tensor.uniform([4, 3, 3, 3], -1, 3, using: &rng)) }
    bn.eval()
    let rm = bn.runningMean.doubles, rv = bn.runningVar.doubles, tracked = bn.numBatchesTracked.value
    let (g, b) = gammaBeta(bn)
    for shape in [[2, 3, 5, 7], [1, 3, 1, 1], [3, 3]] {
      let x = Tensor.uniform(shape, using: &rng)
      assertClose(try bn.forward(x),
        Reference.batchNormEval(DoubleTensor(x), gamma: g, beta: b, runningMean: rm, runningVar: rv),
        rtol: 1e-5, atol: 1e-6, "\(shape)")
      // Backward through fixed statistics: dx = γ·dy/√(var + eps).
      let dy = Tensor.uniform(shape, using: &rng)
      let dx = try bn.backward(dy)
      let c = shape[1], hw = shape.count == 4 ? shape[2] * shape[3] : 1
      let expected = (0..<dy.count).map { i -> Double in
        let ch = (i / hw) % c
        return g[ch] * Double(dy[i]) / (rv[ch] + 1e-5).squareRoot()
      }
      assertClose(dx.array, expected, rtol: 1e-5, atol: 1e-6, "eval dx \(shape)")
    }
    XCTAssertEqual(bn.runningMean.doubles, rm)
    XCTAssertEqual(bn.runningVar.doubles, rv)
    XCTAssertEqual(bn.numBatchesTracked.value, tracked, "evaluation does not count batches")
  }

  func testSingleValuePerChannelInTrainingThrowsAClearError() throws {
    var rng = SeededGenerator(seed: 4)
    let bn = BatchNorm2D(channels: 3)
    for shape in [[1, 3, 1, 1], [1, 3]] {
      XCTAssertThrowsError(try bn.forward(Tensor(zeros: shape))) { error in
        let message = "\(error)"
        XCTAssertTrue(message.contains("BatchNorm2D"), message)
        XCTAssertTrue(message.contains("more than one value per channel"), message)
      }
    }
    XCTAssertEqual(bn.numBatchesTracked.value, 0)
    XCTAssertEqual(bn.runningVar.array, [1, 1, 1], "a rejected batch changes nothing")
    // One sample with several pixels is fine, and so is one value per channel in evaluation.
    _ = try bn.forward(Tensor.uniform([1, 3, 2, 1], using: &rng))
    bn.eval()
    XCTAssertEqual(try bn.forward(Tensor(zeros: [1, 3, 1, 1])).shape, [1, 3, 1, 1])
  }

  /// Empty batches and empty planes in evaluation mode give empty results, as PyTorch's do (and
  /// never reach the block passes, whose unit sizes divide by H·W and N·H·W).
  func testEvaluationOnEmptyTensors() throws {
    for shape in [[0, 3, 4, 4], [2, 3, 0, 4], [0, 3]] {
      let bn = BatchNorm2D(channels: 3)
      bn.eval()
      let y = try bn.forward(Tensor(zeros: shape))
      XCTAssertEqual(y.shape, shape)
      XCTAssertEqual(try bn.backward(Tensor(zeros: shape)).shape, shape)
    }
  }

  /// The block passes' C entry points on planes they cannot hold (H·W over
  /// acon_bn_block_floats) run the per-channel loops: the same bits.
  func testBlockPassesFallBackOnLargePlanes() {
    var rng = SeededGenerator(seed: 17)
    let n = 3, c = 4, hw = acon_bn_block_floats + 44, count = n * c * hw
    let x = Tensor.uniform([count], -2, 3, using: &rng), dy = Tensor.uniform([count], using: &rng)
    let mu: [Float] = [0.1, 0.2, -0.3, 0.4], scale: [Float] = [1.1, 0.9, 1.3, 0.7], shift: [Float] = [0, 0.1, -0.2, 0.3]
    var m1 = [Double](repeating: 0, count: c), v1 = m1, m2 = m1, v2 = m1
    acon_bn_stats_block(x.data, n, c, hw, 1, c, &m1, &v1)
    for ch in 1..<c { acon_bn_stats(x.data + ch * hw, n, c * hw, hw, &m2[ch], &v2[ch]) }
    XCTAssertEqual(m1, m2)
    XCTAssertEqual(v1, v2)
    let y1 = Tensor(zeros: [count]), y2 = Tensor(zeros: [count])
    acon_bn_normalize_block(x.data, y1.data, n, c, hw, 1, c, mu, scale, shift, 1, 0)
    for ch in 1..<c { acon_bn_normalize(x.data + ch * hw, y2.data + ch * hw, n, c * hw, hw, mu[ch], scale[ch], shift[ch], 1, 0) }
    assertBitwiseEqual(y1.array, y2.array)
    var s1 = [Double](repeating: 0, count: c), t1 = s1, s2 = s1, t2 = s1
    acon_bn_gradient_sums_block(x.data, dy.data, n, c, hw, 1, c, mu, 1, scale, shift, &s1, &t1)
    for ch in 1..<c {
      acon_bn_gradient_sums(x.data + ch * hw, dy.data + ch * hw, n, c * hw, hw, mu[ch], 1, scale[ch], shift[ch], &s2[ch], &t2[ch])
    }
    XCTAssertEqual(s1, s2)
    XCTAssertEqual(t1, t2)
    acon_bn_input_gradient_block(x.data, dy.data, y1.data, n, c, hw, 1, c, mu, scale, shift, mu, 1, scale, shift, 0)
    for ch in 1..<c {
      acon_bn_input_gradient(x.data + ch * hw, dy.data + ch * hw, y2.data + ch * hw, n, c * hw, hw, mu[ch], scale[ch],
        shift[ch], mu[ch], 1, scale[ch], shift[ch], 0)
    }
    assertBitwiseEqual(y1.array, y2.array)
  }

  /// Streaming stores (`BatchNorm2D.streams(elements:)`, forced here by a threshold of 1 byte)
  /// give the bits of plain stores: y, dx, dγ, dβ and the running statistics, with and without a
  /// fused ReLU, in training and evaluation, synchronised too, with dx written over the incoming
  /// gradient (a layer after the BN); on planes that stream (64, 80 and 256 floats: every plane
  /// aligned), on 100-float planes (channels 0 and 4 of 8 aligned, each with a 4-float tail; the
  /// others store as usual), on small planes (blocks) and C = 1. The C entry points on an output
  /// that starts mid-line store as usual.
  func testStreamingStoresGiveThePlainStoresBits() throws {
    let saved = acon_kernels_streaming_threshold()
    defer { acon_kernels_set_streaming_threshold(saved) }
    for shape in [[3, 5, 8, 8], [2, 3, 16, 16], [3, 4, 8, 10], [2, 8, 10, 10], [4, 6, 2, 3], [2, 1, 8, 8]] {
      for (training, synchronised, relu) in [(true, false, false), (true, false, true), (false, false, true), (true, true, true)] {
        func run(streaming: Bool) throws -> [[Float]] {
          acon_kernels_set_streaming_threshold(streaming ? 1 : Int.max)
          var rng = SeededGenerator(seed: 18)
          let bn = BatchNorm2D(channels: shape[1])
          bn.weight.value.fillNormal(using: &rng)
          bn.bias.value.fillNormal(using: &rng)
          if synchronised { bn.allReduce = { _ in } }
          if !training { bn.eval() }
          let net = Sequential([("bn", bn)] + (relu ? [("relu", ReLU())] : []) + [("silu", SiLU())])
          let x = Tensor.uniform(shape, -2, 3, using: &rng), dy = Tensor.uniform(shape, using: &rng)
          XCTAssertEqual(BatchNorm2D.streams(elements: 2 * x.count), streaming)
          let y = try net.forward(x).array
          let dx = try net.backward(dy).array
          XCTAssertEqual(bn.fusedReLU, relu)
          return [y, dx, bn.weight.grad.array, bn.bias.grad.array, bn.runningMean.array, bn.runningVar.array]
        }
        let plain = try run(streaming: false), streamed = try run(streaming: true)
        for (i, what) in ["y", "dx", "dγ", "dβ", "running mean", "running var"].enumerated() {
          assertBitwiseEqual(streamed[i], plain[i], "\(what), \(shape), training \(training), sync \(synchronised), relu \(relu)")
        }
      }
    }
    // An output 4 floats past a line boundary: no streaming stores (they need 64-byte alignment).
    var rng = SeededGenerator(seed: 19)
    let n = 2, hw = 64, x = Tensor.uniform([n * hw + 4], using: &rng), dy = Tensor.uniform([n * hw + 4], using: &rng)
    let y1 = Tensor(zeros: [n * hw + 4]), y2 = Tensor(zeros: [n * hw + 4])
    acon_bn_normalize(x.data + 4, y1.data + 4, n, hw, hw, 0.1, 1.2, -0.3, 0, 1)
    acon_bn_normalize(x.data + 4, y2.data + 4, n, hw, hw, 0.1, 1.2, -0.3, 0, 0)
    assertBitwiseEqual(y1.array, y2.array, "normalize, unaligned")
    acon_bn_input_gradient(x.data + 4, dy.data + 4, y1.data + 4, n, hw, hw, 0.1, 0.9, 0.2, -0.1, 1, 1.2, -0.3, 1)
    acon_bn_input_gradient(x.data + 4, dy.data + 4, y2.data + 4, n, hw, hw, 0.1, 0.9, 0.2, -0.1, 1, 1.2, -0.3, 0)
    assertBitwiseEqual(y1.array, y2.array, "input gradient, unaligned")
  }

  func testShapeErrors() {
    let bn = BatchNorm2D(channels: 3)
    XCTAssertThrowsError(try bn.forward(Tensor(zeros: [2, 4, 2, 2]))) { XCTAssertTrue("\($0)".contains("BatchNorm2D")) }
    XCTAssertThrowsError(try bn.forward(Tensor(zeros: [2, 3, 2])))
    XCTAssertThrowsError(try bn.backward(Tensor(zeros: [2, 3])), "backward before forward")
  }

  func testStateNamesAndDecay() {
    let bn = BatchNorm2D(channels: 4)
    XCTAssertEqual(bn.namedParameters().map(\.0), ["weight", "bias"])
    XCTAssertEqual(bn.namedBuffers().map(\.0), ["running_mean", "running_var", "num_batches_tracked"])
    XCTAssertFalse(bn.weight.decays)
    XCTAssertFalse(bn.bias.decays)
    XCTAssertEqual(bn.weight.value.array, [1, 1, 1, 1])
    XCTAssertEqual(bn.bias.value.array, [0, 0, 0, 0])
  }

  /// Synchronised batch norm: two members, each with a shard of the batch (uneven: 2 and 4
  /// samples), compute exactly what one layer computes on the whole batch: outputs, dx, running
  /// statistics, and γ/β gradients whose sum over the members is the whole batch's.
  func testSynchronisedBatchNormEqualsTheGlobalBatch() throws {
    for shape in [[6, 3, 4, 5], [6, 5]] {
      var rng = SeededGenerator(seed: 11)
      let c = shape[1], per = shape.dropFirst().reduce(1, *)
      let x = Tensor.uniform(shape, -2, 3, using: &rng), dy = Tensor.uniform(shape, using: &rng)
      let whole = BatchNorm2D(channels: c)
      randomizeParameters(whole, 0.5, 1.5, using: &rng)
      let gamma = whole.weight.value.array, beta = whole.bias.value.array
      let yWhole = try whole.forward(x)
      whole.zeroGrad()
      let dxWhole = try whole.backward(dy)

      let shards = [0..<2, 2..<6]
      let results = UnsafeSendableResults(count: 2)
      let group = InProcessGroup(size: 2)
      try group.run { member in
        let r = member.rank, rows = shards[r]
        let bn = BatchNorm2D(channels: c)
        bn.weight.value.copy(from: Tensor(shape: [c], values: gamma))
        bn.bias.value.copy(from: Tensor(shape: [c], values: beta))
        bn.allReduce = { try member.allReduceSum($0) }
        let xs = Tensor(shape: [rows.count] + shape.dropFirst(), values: Array(x.array[(rows.lowerBound * per)..<(rows.upperBound * per)]))
        let dys = Tensor(shape: [rows.count] + shape.dropFirst(), values: Array(dy.array[(rows.lowerBound * per)..<(rows.upperBound * per)]))
        let y = try bn.forward(xs)
        bn.zeroGrad()
        let dx = try bn.backward(dys)
        results.set(r, (y.array, dx.array, bn.weight.grad.array, bn.bias.grad.array, bn.runningMean.array + bn.runningVar.array))
      }
      let (y0, dx0, dg0, db0, run0) = results.get(0), (y1, dx1, dg1, db1, run1) = results.get(1)
      assertClose(y0 + y1, yWhole.array.map(Double.init), rtol: 1e-5, atol: 1e-6, "y \(shape)")
      assertClose(dx0 + dx1, dxWhole.array.map(Double.init), rtol: 1e-4, atol: 1e-6, "dx \(shape)")
      assertClose(zip(dg0, dg1).map { $0 + $1 }, whole.weight.grad.array.map(Double.init), rtol: 1e-4, atol: 1e-6, "dγ \(shape)")
      assertClose(zip(db0, db1).map { $0 + $1 }, whole.bias.grad.array.map(Double.init), rtol: 1e-4, atol: 1e-6, "dβ \(shape)")
      let runWhole = (whole.runningMean.array + whole.runningVar.array).map(Double.init)
      assertClose(run0, runWhole, rtol: 1e-5, atol: 1e-6, "running statistics, member 0")
      XCTAssertEqual(run0, run1, "both members keep the same running statistics")
    }
  }
}

/// Results written by the members' threads, one slot each.
private final class UnsafeSendableResults: @unchecked Sendable {
  typealias Slot = ([Float], [Float], [Float], [Float], [Float])
  private var slots: [Slot?]
  private let lock = NSLock()
  init(count: Int) { slots = Array(repeating: nil, count: count) }
  func set(_ i: Int, _ v: Slot) {
    lock.lock()
    slots[i] = v
    lock.unlock()
  }
  func get(_ i: Int) -> Slot { slots[i]! }
}
