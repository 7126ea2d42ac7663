// ZooDistributedTests: data-parallel training of a zoo model without MPI, as the seed models'
// DistributedTrainerTests: two trainers on two threads share an InProcessGroup (TestSupport) as
// two MPI ranks share the world communicator, each on half of every global batch; with
// synchronised BatchNorm statistics their weights must equal one trainer's on the whole batch.
// One step: ShuffleNetV2's 50 BatchNorms make a few SGD steps so sensitive to rounding that two
// correct runs part fast (here, as measured when this test was written: 6.7e-5 of max(|w|, 1e-3)
// after one step, 5e-4 after two, 1e-2 after three; PyTorch's float32 and float64 runs part so
// too, docs/zoo.md).
// After one step the weights differ by lr × the rounding of the all-reduced gradients and of the
// global statistics (Σx, Σx² over the ranks); per-rank statistics part them far more. One process
// takes small planes' statistics in BatchNorm's block passes, the ranks in its per-channel loops
// (the synchronised path), both summing floats before Doubles: measured at ab83b0d, the largest
// difference after one step is 3.8e-6 (1.1e-3 of max(|w|, 1e-3), 1.5e-5 of the largest change of
// a weight, 0.25), on weights near zero, hence atol 5e-6.
// `--resume` of a zoo model is exercised by scripts/kill-safety.sh and scripts/cli-checks.sh.
import Collectives
import Foundation
import NN
import TensorCore
import TestSupport
import Training
import XCTest
import Zoo

final class ZooDistributedTests: XCTestCase {
  private let zoo = ModelFactory(names: ZooModels.names) {
    try ZooModels.build(name: $0, inputShape: $1, classes: $2, seed: $3)
  }

  /// One SGD step of shufflenetv2-0.5x-aconc at 1×16×16, global batch 16, in file order: the
  /// initial weights, one process's and each of 2 ranks' final weights.
  private func runs(sync: Bool) throws -> (initial: [Float], single: [Float], ranks: [[Float]]) {
    var o = TrainOptions()
    o.model = "shufflenetv2-0.5x-aconc"
    o.maxSteps = 1
    o.batchSize = 16
    o.optimizer = .sgd
    o.learningRate = 0.01
    o.shuffle = false
    o.seed = 4
    o.evaluateEachEpoch = false
    o.syncBatchNorm = sync
    let opts = o
    let train = SyntheticShapes.make(count: 64, height: 16, width: 16, seed: 1)
    let norm = Normalization.unit(channels: 1)
    let single = try Trainer(options: opts, train: train, test: nil, normalization: norm, factories: [zoo])
    let initial = single.model.namedParameters().flatMap { $0.1.value.array }
    _ = try single.run()
    let ranks = RankWeights()
    let factory = zoo
    try InProcessGroup(size: 2).run { member in
      let t = try Trainer(options: opts, train: train, test: nil, normalization: norm, factories: [factory], group: member)
      _ = try t.run()
      ranks.set(member.rank, t.model.namedParameters().flatMap { $0.1.value.array })
    }
    return (initial, single.model.namedParameters().flatMap { $0.1.value.array }, [ranks.get(0), ranks.get(1)])
  }

  /// How many of `a` lie outside rtol 2e-4, atol 5e-6 of `b`.
  private func outside(_ a: [Float], _ b: [Float]) -> Int {
    zip(a, b).filter { abs($0 - $1) > 5e-6 + 2e-4 * abs($1) }.count
  }

  func testTwoRanksEqualOneProcessForAZooModel() throws {
    let (initial, single, ranks) = try runs(sync: true)
    XCTAssertEqual(ranks[0], ranks[1], "the ranks' weights must stay identical")
    XCTAssertEqual(ranks[0].count, single.count)
    XCTAssertEqual(outside(ranks[0], single), 0, "2 ranks differ from 1 process")
    XCTAssertGreaterThan(outside(single, initial), single.count / 10, "the step must change the weights")
  }

  func testPerRankBatchNormStatisticsDiffer() throws {
    let (_, single, ranks) = try runs(sync: false)
    XCTAssertGreaterThan(outside(ranks[0], single), 100, "per-shard BatchNorm statistics must change the result")
  }
}

/// Each rank's final weights, set from the rank's thread.
private final class RankWeights: @unchecked Sendable {
  private let lock = NSLock()
  private var values: [Int: [Float]] = [:]
  func set(_ rank: Int, _ w: [Float]) { lock.lock(); values[rank] = w; lock.unlock() }
  func get(_ rank: Int) -> [Float] { lock.lock(); defer { lock.unlock() }; return values[rank] ?? [] }
}
