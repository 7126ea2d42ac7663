// Trainer+Loop: the training loop itself: batches (this process's shard of each in a
// data-parallel run), forward, loss, backward, the gradient all-reduce (overlapped with backward
// in buckets, see GradientBuckets), the NaN guard and
// clipping, the optimizer and scheduler steps, per-epoch evaluation, the best model.
import Collectives
import Foundation
import NN
import TensorCore

extension Trainer {
  /// Starts every process from rank 0's weights and BatchNorm statistics, and hooks the
  /// BatchNorms up to the group when `syncBatchNorm` is set.
  func joinGroup() throws {
    for (_, p) in model.namedParameters() {
      try group.broadcast(UnsafeMutableBufferPointer(start: p.value.data, count: p.value.count), root: 0)
    }
    for (_, b) in model.namedBuffers() {
      if case let .float(t) = b { try group.broadcast(UnsafeMutableBufferPointer(start: t.data, count: t.count), root: 0) }
    }
    if options.syncBatchNorm {
      let g = group
      model.visit { m in
        if let bn = m as? BatchNorm2D { bn.allReduce = { try g.allReduceSum($0) } }
      }
    }
  }

  /// Rows `lo ..< hi` of a global batch of `n` that this process trains on.
  func shard(of n: Int) -> Range<Int> {
    (n * group.rank / group.size)..<(n * (group.rank + 1) / group.size)
  }

  /// Steps completed, counting those before a resume.
  public var completedSteps: Int { step }

  /// The steps this run trains in all: every epoch's batches, or `maxSteps` if fewer.
  var totalSteps: Int {
    let all = options.epochs * loader.batchesPerEpoch
    return options.maxSteps.map { Swift.min($0, all) } ?? all
  }

  /// Trains until the epochs or `maxSteps` run out. Returns the per-epoch records.
  @discardableResult
  public func run() throws -> [EpochRecord] {
    for epoch in startEpoch..<options.epochs {
      if step >= totalSteps { break }
      model.train()
      let first = epoch == startEpoch ? startBatch : 0
      loader.startEpoch(epoch, fromBatch: first)
      // Workers stop when the epoch is left early (the step cap, an error).
      defer { loader.stop() }
      var lossSum = epoch == startEpoch ? startLossSum : 0, seen = epoch == startEpoch ? startSeen : 0
      let epochStart = DispatchTime.now().uptimeNanoseconds
      var epochWait = 0.0, epochSteps = 0.0
      var b = first
      while b < loader.batchesPerEpoch && step < totalSteps {
        let t0 = DispatchTime.now().uptimeNanoseconds
        // Data-parallel: this process decodes only its rows of the global batch of n (the same
        // images, crops and flips one process draws for those positions). The loader resizes
        // xBatch to [rows, C, H, W], reusing its storage.
        let n = loader.size(ofBatch: b)
        let rows = shard(of: n)
        guard !rows.isEmpty else {
          throw TensorError.invalidArgument(
            "batch \(b + 1) has \(n) examples, fewer than the \(group.size) processes; use --drop-last or a smaller --batch-size")
        }
        let x = try loader.batch(b, rows: rows, scratch: xBatch, labels: &labels)
        let waited = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        if group.rank == 0 {
          for w in loader.takeWarnings() { FileHandle.standardError.write(Data((w + "\n").utf8)) }
        }
        let lr = scheduler.learningRate
        model.zeroGrad()
        let logits = try model.forward(x)
        var (loss, grad) = try self.loss.valueAndGradient(logits, labels: labels)
        if group.size > 1 {
          // The global batch's mean loss is Σ (n_r/n)·loss_r: scale this share, then sum.
          let share = Float(rows.count) / Float(n)
          for i in 0..<grad.count { grad.data[i] *= share }
          try scalars.withUnsafeMutableBufferPointer { buf in
            buf[0] = Double(loss) * Double(share)
            try group.allReduceSum(buf)
          }
          loss = Float(scalars[0])
        }
        guard loss.isFinite else {
          throw TrainingError.nonFiniteLoss(step: step + 1, loss: loss, checkpoint: lastCheckpointPath)
        }
        buckets?.begin()
        _ = try model.backward(grad)
        if let buckets {
          // Most buckets went while backward ran: wait for the rest.
          let r0 = DispatchTime.now().uptimeNanoseconds
          try buckets.finish()
          allReduceSeconds += Double(DispatchTime.now().uptimeNanoseconds - r0) / 1e9
        } else if group.size > 1 {
          // One all-reduce over every gradient (contiguous since packGradients). The barrier
          // first separates waiting for the slowest process from the all-reduce itself.
          let w0 = DispatchTime.now().uptimeNanoseconds
          try group.barrier()
          let r0 = DispatchTime.now().uptimeNanoseconds
          try group.allReduceSum(UnsafeMutableBufferPointer(start: gradients.pointer, count: gradients.capacity))
          let r1 = DispatchTime.now().uptimeNanoseconds
          waitSeconds += Double(r0 - w0) / 1e9
          allReduceSeconds += Double(r1 - r0) / 1e9
        }
        if options.checkNumerics || options.clipGradNorm != nil { try guardGradients(step: step + 1) }
        optimizer.step()
        scheduler.step()
        step += 1
        b += 1
        let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        epochWait += waited
        epochSteps += dt
        dataWaitSeconds += waited
        stepSeconds += dt
        let info = StepInfo(step: step, epoch: epoch + 1, batchInEpoch: b, batchesPerEpoch: loader.batchesPerEpoch,
          loss: loss, learningRate: lr, imagesPerSecond: Double(n) / dt,
          dataWait: loader.streams ? epochWait / Swift.max(epochSteps, 1e-9) : nil)
        losses.append(loss)
        lossSum += Double(loss) * Double(n)
        seen += n
        try writeLog(["step": step, "epoch": epoch + 1, "loss": Double(loss), "lr": Double(lr), "images_per_s": info.imagesPerSecond])
        onStep?(info)
        // Mid-epoch only, and not at the last step: the checkpoint after the loop (which follows
        // the evaluation and the best model) covers those, and a resume from one written here
        // would skip that end-of-epoch work.
        if let every = options.checkpointEvery, step % every == 0, b < loader.batchesPerEpoch, step < totalSteps {
          try saveCheckpoint(epoch: epoch, nextBatch: b, lossSum: lossSum, seen: seen)
        }
      }
      let seconds = Double(DispatchTime.now().uptimeNanoseconds - epochStart) / 1e9
      let finished = b >= loader.batchesPerEpoch
      loader.stop()
      var record = EpochRecord(epoch: epoch + 1, trainLoss: seen > 0 ? lossSum / Double(seen) : .nan,
        testAccuracy: nil, testLoss: nil, imagesPerSecond: Double(seen) / Swift.max(seconds, 1e-9),
        dataWait: loader.streams && epochSteps > 0 ? epochWait / epochSteps : nil)
      if options.evaluateEachEpoch, group.rank == 0, evaluateTest != nil || testSet != nil {
        let e: Evaluation
        if let evaluateTest {
          e = try evaluateTest(model)
        } else {
          e = try Training.evaluate(model, on: testSet!, normalization: metadata.normalization, batchSize: options.batchSize)
        }
        record.testAccuracy = e.accuracy
        record.testLoss = e.loss
      }
      epochs.append(record)
      var entry: [String: Any] = ["epoch": epoch + 1, "train_loss": record.trainLoss, "images_per_s": record.imagesPerSecond, "steps": step]
      if let w = record.dataWait { entry["data_wait"] = w }
      if let a = record.testAccuracy, let l = record.testLoss {
        entry["test_accuracy"] = a
        entry["test_loss"] = l
      }
      try writeLog(entry)
      // The best model before the checkpoint that records its accuracy: a kill between the two
      // replays the epoch's end from the previous checkpoint and writes the same best file again.
      if let a = record.testAccuracy, a > bestAccuracy, let path = options.checkpoint, group.rank == 0 {
        bestAccuracy = a
        try Checkpoint.writeModel(model, metadata: metadata, step: step, to: Checkpoint(path: path).bestPath)
      }
      // Checkpoint: the next position is the start of the next epoch, or mid-epoch if maxSteps cut it.
      if finished {
        try saveCheckpoint(epoch: epoch + 1, nextBatch: 0)
      } else {
        try saveCheckpoint(epoch: epoch, nextBatch: b, lossSum: lossSum, seen: seen)
      }
      onEpoch?(record)
    }
    try log?.sync()
    return epochs
  }


  /// The global gradient norm: checked for NaN/Inf, and clipped when asked.
  func guardGradients(step: Int) throws {
    let params = model.namedParameters()
    var sumSquares = 0.0
    for (_, p) in params {
      for i in 0..<p.grad.count { sumSquares += Double(p.grad.data[i]) * Double(p.grad.data[i]) }
    }
    let norm = sumSquares.squareRoot()
    if options.checkNumerics && !norm.isFinite {
      // Backward runs from the output: the bad gradient nearest the output came first.
      let bad = params.last { (_, p) in (0..<p.grad.count).contains { !p.grad.data[$0].isFinite } }
      throw TrainingError.nonFiniteGradient(step: step, parameter: bad?.0 ?? "(unknown)", checkpoint: lastCheckpointPath)
    }
    if let maxNorm = options.clipGradNorm, norm.isFinite {
      let coef = Double(maxNorm) / (norm + 1e-6)
      if coef < 1 {
        for (_, p) in params { for i in 0..<p.grad.count { p.grad.data[i] *= Float(coef) } }
      }
    }
  }

}
