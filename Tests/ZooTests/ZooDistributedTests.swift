// ZooDistributedTests: data-parallel training of a zoo model without MPI, as the seed models'
// DistributedTrainerTests: two trainers on two threads share an InProcessGroup (TestSupport) as
// two MPI ranks share the world communicator, each on half of every global batch, with
// synchronised BatchNorm statistics; their weights must equal one trainer's on the whole batch.
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

  /// Three SGD steps of shufflenetv2-0.5x-aconc at 1×16×16, global batch 16, in file order.
  private func options() -> TrainOptions {
    var o = TrainOptions()
    o.model = "shufflenetv2-0.5x-aconc"
    o.maxSteps = 3
    o.batchSize = 16
    o.optimizer = .sgd
    o.learningRate = 0.01
    o.shuffle = false
    o.seed = 4
    o.evaluateEachEpoch = false
    o.syncBatchNorm = true
    return o
  }

  func testTwoRanksEqualOneProcessForAZooModel() throws {
    let train = SyntheticShapes.make(count: 64, height: 16, width: 16, seed: 1)
    let norm = Normalization.unit(channels: 1)
    let opts = options()
    let single = try Trainer(options: opts, train: train, test: nil, normalization: norm, factories: [zoo])
    _ = try single.run()
    let want = single.model.namedParameters().flatMap { $0.1.value.array }
    let ranks = RankWeights()
    let factory = zoo
    try InProcessGroup(size: 2).run { member in
      let t = try Trainer(options: opts, train: train, test: nil, normalization: norm, factories: [factory], group: member)
      _ = try t.run()
      ranks.set(member.rank, t.model.namedParameters().flatMap { $0.1.value.array })
    }
    let (r0, r1) = (ranks.get(0), ranks.get(1))
    XCTAssertEqual(r0, r1, "the ranks' weights must stay identical")
    XCTAssertEqual(r0.count, want.count)
    // torch.allclose's rule (rtol 1e-5, atol 1e-8): the runs differ only by the summation order.
    let outside = zip(r0, want).filter { abs($0 - $1) > 1e-8 + 1e-5 * abs($1) }.count
    XCTAssertEqual(outside, 0, "2 ranks differ from 1 process in \(outside) of \(want.count) weights")
    XCTAssertNotEqual(want, try ZooModels.build(name: opts.model, inputShape: [1, 16, 16], classes: 10, seed: 4)
      .namedParameters().flatMap { $0.1.value.array }, "the steps must change the weights")
  }
}

/// Each rank's final weights, set from the rank's thread.
private final class RankWeights: @unchecked Sendable {
  private let lock = NSLock()
  private var values: [Int: [Float]] = [:]
  func set(_ rank: Int, _ w: [Float]) { lock.lock(); values[rank] = w; lock.unlock() }
  func get(_ rank: Int) -> [Float] { lock.lock(); defer { lock.unlock() }; return values[rank] ?? [] }
}
