// DistributedTrainerTests: data-parallel training without MPI. Two trainers on two threads share
// an InProcessGroup (TestSupport) as two MPI ranks would share the world communicator; each
// trains on its half of every global batch, and after a few steps their weights must equal
// those of one trainer on the whole batch (torch.allclose's rtol 1e-5, atol 1e-8). Meta-ACON's
// BatchNorms need synchronised statistics for that; without them the runs differ, as they should.
// The same equivalence under mpirun -np 2 is scripts/mpi-equivalence.sh.
import Collectives
import Foundation
import NN
import TensorCore
import TestSupport
import Training
import XCTest

final class DistributedTrainerTests: XCTestCase {
  private func options(_ model: ModelKind, sync: Bool) -> TrainOptions {
    var o = TrainOptions()
    o.model = model
    o.maxSteps = 5
    o.batchSize = 16
    o.optimizer = .sgd
    o.learningRate = 0.05
    o.shuffle = false
    o.seed = 4
    o.evaluateEachEpoch = false
    o.syncBatchNorm = sync
    return o
  }

  /// The final weights of a run as one process, and of rank 0 and rank 1 of a 2-member run.
  private func runs(_ model: ModelKind, sync: Bool) throws -> (single: [Float], ranks: [[Float]]) {
    let train = SyntheticShapes.make(count: 64, height: 16, width: 16, seed: 1)
    let norm = Normalization.unit(channels: 1)
    let single = try Trainer(options: options(model, sync: sync), train: train, test: nil, normalization: norm)
    _ = try single.run()
    let weights = Weights(count: 2)
    let opts = options(model, sync: sync)
    try InProcessGroup(size: 2).run { member in
      let t = try Trainer(options: opts, train: train, test: nil, normalization: norm, group: member)
      _ = try t.run()
      weights.set(member.rank, t.model.namedParameters().flatMap { $0.1.value.array })
    }
    return (single.model.namedParameters().flatMap { $0.1.value.array }, [weights.get(0), weights.get(1)])
  }

  private func allClose(_ a: [Float], _ b: [Float]) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { abs($0 - $1) <= 1e-8 + 1e-5 * abs($1) }
  }

  func testTwoRanksEqualOneProcess() throws {
    for (model, sync) in [(ModelKind.seedRelu, false), (.seedAconc, false), (.seedMeta, true)] {
      let (single, ranks) = try runs(model, sync: sync)
      XCTAssertEqual(ranks[0], ranks[1], "\(model.rawValue): the ranks' weights must stay identical")
      XCTAssertTrue(allClose(ranks[0], single), "\(model.rawValue): 2 ranks differ from 1 process")
    }
  }

  func testMetaWithoutSynchronisedBatchNormDiffers() throws {
    let (single, ranks) = try runs(.seedMeta, sync: false)
    XCTAssertFalse(allClose(ranks[0], single), "per-shard BatchNorm statistics must change the result")
  }

  /// Every rank resumes with its own `checkpoint` path (as ranks on machines without a shared
  /// file system would); the trainers must all agree with rank 0 or all stop.
  private func resume(_ paths: [String], train: ImageDataset) throws -> [Result<Int?, Error>] {
    let results = Results(count: paths.count)
    var base = options(.seedAconc, sync: false)
    base.maxSteps = 4
    base.resume = true
    let opts = base
    try InProcessGroup(size: paths.count).run { member in
      var o = opts
      o.checkpoint = paths[member.rank]
      do {
        let t = try Trainer(options: o, train: train, test: nil, normalization: .unit(channels: 1), group: member)
        results.set(member.rank, .success(t.resumedFromStep))
      } catch {
        results.set(member.rank, .failure(error))
      }
    }
    return (0..<paths.count).map { results.get($0) }
  }

  func testResumeChecksThatTheRanksRestoredTheSameState() throws {
    let train = SyntheticShapes.make(count: 64, height: 16, width: 16, seed: 1)
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("acon-dist-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    // Two checkpoints of the same run, after 2 and after 3 steps.
    var paths: [Int: String] = [:]
    for steps in [2, 3] {
      var o = options(.seedAconc, sync: false)
      o.maxSteps = steps
      o.checkpoint = dir.appendingPathComponent("s\(steps).safetensors").path
      try Trainer(options: o, train: train, test: nil, normalization: .unit(channels: 1)).run()
      paths[steps] = o.checkpoint!
    }
    // The same file on both ranks: both resume at step 2.
    for r in try resume([paths[2]!, paths[2]!], train: train) { XCTAssertEqual(try r.get(), 2) }
    // Different files: every rank stops, naming both steps and checksums.
    for r in try resume([paths[2]!, paths[3]!], train: train) {
      XCTAssertThrowsError(try r.get()) {
        let m = "\($0)"
        XCTAssertTrue(m.contains(".state.safetensors: rank 1 restored step 3 (state checksum "), m)
        XCTAssertTrue(m.contains(") but rank 0 restored step 2 (state checksum "), m)
      }
    }
    // A rank that finds no checkpoint at all.
    for r in try resume([paths[2]!, dir.appendingPathComponent("none.safetensors").path], train: train) {
      XCTAssertThrowsError(try r.get()) {
        XCTAssertTrue("\($0)".contains("rank 1 found no checkpoint (it would start from scratch) but rank 0 restored step 2"), "\($0)")
      }
    }
    // Same step, different state (rank 1's optimizer state altered): the checksum tells them apart.
    let altered = dir.appendingPathComponent("altered.safetensors").path
    try FileManager.default.copyItem(atPath: paths[2]!, toPath: altered)
    let state = try SafetensorsFile.read(path: Checkpoint(path: paths[2]!).statePath)
    var tensors = state.tensors
    let name = try XCTUnwrap(tensors.keys.sorted().first { $0.hasSuffix(".momentum_buffer") })
    guard case let .f32(shape, values) = tensors[name]! else { return XCTFail("\(name) is not F32") }
    tensors[name] = .f32(shape: shape, values: values.map { $0 * 2 })
    try SafetensorsFile(metadata: state.metadata, tensors: tensors).write(path: Checkpoint(path: altered).statePath)
    for r in try resume([paths[2]!, altered], train: train) {
      XCTAssertThrowsError(try r.get()) {
        let m = "\($0)"
        XCTAssertTrue(m.contains("rank 1 restored step 2 (state checksum ") && m.contains("but rank 0 restored step 2"), m)
      }
    }
  }

  func testBatchSmallerThanTheGroupIsAnError() throws {
    let train = SyntheticShapes.make(count: 8, height: 16, width: 16, seed: 1)
    var o = options(.seedRelu, sync: false)
    o.batchSize = 1
    let member = InProcessGroup(size: 2).member(0)
    XCTAssertThrowsError(try Trainer(options: o, train: train, test: nil, normalization: .unit(channels: 1), group: member)) {
      XCTAssertTrue("\($0)".contains("batch-size"), "\($0)")
    }
  }
}

/// Each member's outcome, one slot each.
private final class Results: @unchecked Sendable {
  private var slots: [Result<Int?, Error>]
  private let lock = NSLock()
  init(count: Int) { slots = Array(repeating: .success(nil), count: count) }
  func set(_ i: Int, _ r: Result<Int?, Error>) {
    lock.lock()
    slots[i] = r
    lock.unlock()
  }
  func get(_ i: Int) -> Result<Int?, Error> { slots[i] }
}

/// Weights written by the members' threads, one slot each.
private final class Weights: @unchecked Sendable {
  private var slots: [[Float]]
  private let lock = NSLock()
  init(count: Int) { slots = Array(repeating: [], count: count) }
  func set(_ i: Int, _ w: [Float]) {
    lock.lock()
    slots[i] = w
    lock.unlock()
  }
  func get(_ i: Int) -> [Float] { slots[i] }
}
