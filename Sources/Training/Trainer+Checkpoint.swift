// Trainer+Checkpoint: atomic checkpoints (the state file with the optimizer, position and a copy
// of the weights, then the model file) and exact resume from them, with the checks that a
// resume continues the same run (settings, and in a data-parallel run every rank's state).
import Collectives
import Foundation
import NN
import TensorCore

extension Trainer {

  // MARK: - Checkpoints

  /// Prefix of the model's state_dict in the state file (`model/conv1.weight`); the optimizer's
  /// tensors have no prefix (`conv1.weight.exp_avg`).
  static let modelPrefix = "model/"

  /// Writes the state file, then the model file. The state file holds everything a resume needs,
  /// the weights included, so a kill between the two writes (a model file one checkpoint behind,
  /// or none yet) still resumes exactly; each file is replaced atomically.
  /// `lossSum` and `seen` are the epoch's running train loss sum and example count so far, so
  /// that a resume mid-epoch reports the same epoch train loss as an uninterrupted run.
  func saveCheckpoint(epoch: Int, nextBatch: Int, lossSum: Double = 0, seen: Int = 0) throws {
    guard let path = options.checkpoint, group.rank == 0 else { return }
    let ck = Checkpoint(path: path)
    var tensors: [String: SafetensorsValue] = [:]
    for (name, t) in optimizer.state { tensors[name] = .f32(shape: t.shape, values: t.array) }
    for (name, v) in model.stateDict() { tensors[Trainer.modelPrefix + name] = v }
    let meta: [String: String] = [
      "step": String(step), "epoch": String(epoch), "next_batch": String(nextBatch),
      "optimizer": optimizerName, "optimizer_steps": String(optimizer.stepCount),
      "seed": String(options.seed), "batch_size": String(options.batchSize), "model": metadata.model,
      "best_accuracy": String(bestAccuracy), "settings": trajectorySettings,
      "epoch_loss_sum": String(lossSum.bitPattern), "epoch_examples": String(seen),
      "threads": String(Threads.count), "processes": String(group.size),
    ]
    try SafetensorsFile(metadata: meta, tensors: tensors).write(path: ck.statePath)
    try Checkpoint.writeModel(model, metadata: metadata, step: step, to: path)
    lastCheckpointPath = path
  }

  func restore(from ck: Checkpoint) throws {
    let state = try SafetensorsFile.read(path: ck.statePath)
    let m = state.metadata
    guard let s = m["step"].flatMap(Int.init), let e = m["epoch"].flatMap(Int.init), let nb = m["next_batch"].flatMap(Int.init),
      let os = m["optimizer_steps"].flatMap(Int.init)
    else { throw CheckpointError.invalid(file: ck.statePath, reason: "missing step, epoch, next_batch or optimizer_steps in its metadata") }
    guard m["optimizer"] == optimizerName, m["model"] == metadata.model,
      m["batch_size"] == String(options.batchSize), m["seed"] == String(options.seed)
    else {
      throw CheckpointError.invalid(file: ck.statePath,
        reason: "was written by a run with other settings (model \(m["model"] ?? "?"), optimizer \(m["optimizer"] ?? "?"), batch size \(m["batch_size"] ?? "?"), seed \(m["seed"] ?? "?")); resume with the same ones")
    }
    // Files from before "settings" was written carry none; then only the above is checked.
    if let saved = m["settings"], saved != trajectorySettings {
      let mine = Trainer.settingsMap(trajectorySettings), theirs = Trainer.settingsMap(saved)
      let differ = Set(mine.keys).union(theirs.keys).sorted().filter { mine[$0] != theirs[$0] }
        .map { "\($0) \(theirs[$0] ?? "unset") (now \(mine[$0] ?? "unset"))" }
      throw CheckpointError.invalid(file: ck.statePath,
        reason: "was written by a run with other settings: \(differ.joined(separator: ", ")); resume with the same ones, "
          + "or start a new run from its weights with --init \(ck.path)")
    }
    var weights: [String: SafetensorsValue] = [:], optimizerState: [String: SafetensorsValue] = [:]
    for (name, v) in state.tensors {
      if name.hasPrefix(Trainer.modelPrefix) {
        weights[String(name.dropFirst(Trainer.modelPrefix.count))] = v
      } else {
        optimizerState[name] = v
      }
    }
    if !weights.isEmpty {
      try model.loadStateDict(weights, file: ck.statePath)
    } else {
      // A state file from before the weights went into it: the model file must be of its step.
      let modelMeta = try Checkpoint.loadModel(model, from: ck.path)
      guard modelMeta["step"] == String(s) else {
        throw CheckpointError.invalid(file: ck.path, reason: "its step (\(modelMeta["step"] ?? "none")) does not match the state file's (\(s)); the pair is inconsistent")
      }
    }
    for (name, v) in optimizerState {
      guard case let .f32(shape, values) = v else { throw CheckpointError.invalid(file: ck.statePath, reason: "tensor \(name) is not F32") }
      let t = Tensor(shape: shape, values: values)
      guard optimizer.restore(state: name, from: t) else { throw CheckpointError.invalid(file: ck.statePath, reason: "optimizer state \(name) \(Shape.text(shape)) matches no parameter") }
    }
    optimizer.stepCount = os
    step = s
    startEpoch = e
    startBatch = nb
    startLossSum = m["epoch_loss_sum"].flatMap(UInt64.init).map(Double.init(bitPattern:)) ?? 0
    startSeen = m["epoch_examples"].flatMap(Int.init) ?? 0
    bestAccuracy = m["best_accuracy"].flatMap(Double.init) ?? -1
    lastCheckpointPath = ck.path
    // Files from before these were recorded carry neither: nothing to compare.
    let threads = m["threads"].flatMap(Int.init), processes = m["processes"].flatMap(Int.init)
    var changes: [String] = [], causes: [String] = [], fixes: [String] = []
    if let t = threads, t != Threads.count {
      changes.append("\(t) thread\(t == 1 ? "" : "s") per process (now \(Threads.count))")
      causes.append("OpenBLAS's sgemm rounds differently per thread count")
      fixes.append("--threads \(t)")
    }
    if let p = processes, p != group.size {
      changes.append("\(p) process\(p == 1 ? "" : "es") (now \(group.size))")
      causes.append("the batch's gradient is summed in another order")
      fixes.append("\(p) process\(p == 1 ? "" : "es")")
    }
    if !changes.isEmpty {
      resumeWarning = "\(ck.statePath) was written by a run with \(changes.joined(separator: " and ")): "
        + causes.joined(separator: " and ") + ", so this run goes on correctly but not bit for bit as an "
        + "uninterrupted one would; resume with \(fixes.joined(separator: " and ")) for that"
    }
  }

  /// The options besides model, optimizer, batch size and seed that shape the run's losses,
  /// as `key=value` pairs joined by `;`, checked on resume. The number of epochs and the step
  /// cap count only where the schedule depends on them (cosine), so a constant-rate run can be
  /// resumed with more epochs.
  var trajectorySettings: String {
    var pairs: [(String, String)] = [
      ("lr", "\(options.learningRate)"), ("momentum", "\(options.momentum)"), ("weight_decay", "\(options.weightDecay)"),
      ("schedule", options.schedule.rawValue), ("warmup_steps", "\(options.warmupSteps)"),
      ("shuffle", "\(options.shuffle)"), ("drop_last", "\(options.dropLast)"), ("augment", options.augmentation.text),
      ("clip_grad_norm", options.clipGradNorm.map { "\($0)" } ?? "none"),
      ("train_examples", "\(loader.examples)"), ("input", Shape.text(metadata.input)), ("classes", "\(metadata.classes)"),
    ]
    if let folder { pairs.append(("train_transform", folder.trainPipeline.description)) }
    if options.schedule == .cosine || options.schedule == .linear { pairs.append(("total_steps", "\(totalSteps)")) }
    if options.schedule == .step { pairs += [("step_size", "\(options.stepSize)"), ("gamma", "\(options.gamma)")] }
    if options.labelSmoothing != 0 { pairs.append(("label_smoothing", "\(options.labelSmoothing)")) }
    return pairs.map { "\($0.0)=\($0.1)" }.joined(separator: ";")
  }

  static func settingsMap(_ text: String) -> [String: String] {
    var m: [String: String] = [:]
    for pair in text.split(separator: ";") {
      let kv = pair.split(separator: "=", maxSplits: 1)
      if kv.count == 2 { m[String(kv[0])] = String(kv[1]) }
    }
    return m
  }

  /// On a data-parallel `--resume`: every rank has restored a step and a state (weights,
  /// BatchNorm statistics, optimizer state, position) from the checkpoint it read; they must all
  /// be rank 0's. Each rank's step and a checksum of its state are gathered on every rank (one
  /// all-reduce, so every rank sees the same verdict and none is left waiting), and any rank
  /// that differs from rank 0 is an error naming both.
  func checkRanksRestoredTheSameState() throws {
    let n = group.size, r = group.rank
    var mine = [Double](repeating: 0, count: 3 * n)
    let sum = resumedFromStep == nil ? 0 : stateChecksum()
    mine[3 * r] = Double(resumedFromStep ?? -1)
    mine[3 * r + 1] = Double(sum >> 32)
    mine[3 * r + 2] = Double(sum & 0xFFFF_FFFF)
    try mine.withUnsafeMutableBufferPointer { try group.allReduceSum($0) }
    func describe(_ k: Int) -> String {
      let step = Int(mine[3 * k])
      guard step >= 0 else { return "found no checkpoint (it would start from scratch)" }
      let sum = UInt64(mine[3 * k + 1]) << 32 | UInt64(mine[3 * k + 2])
      return "restored step \(step) (state checksum \(String(sum, radix: 16)))"
    }
    for k in 1..<n where mine[3 * k] != mine[0] || mine[3 * k + 1] != mine[1] || mine[3 * k + 2] != mine[2] {
      let path = options.checkpoint.map { Checkpoint(path: $0).statePath } ?? "--checkpoint"
      throw CheckpointError.invalid(file: path,
        reason: "rank \(k) \(describe(k)) but rank 0 \(describe(0)): every rank must resume from the same "
          + "checkpoint; put it where all ranks read the same file (a shared file system) and run again")
    }
  }

  /// FNV-1a over the bits of what a resume restores: the weights, the BatchNorm statistics, the
  /// optimizer's state and step count, and the position in the data.
  func stateChecksum() -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    func mix(_ w: UInt64) {
      h ^= w
      h &*= 0x0000_0100_0000_01B3
    }
    func mix(_ t: Tensor) {
      mix(UInt64(t.count))
      for i in 0..<t.count { mix(UInt64(t.data[i].bitPattern)) }
    }
    for (_, p) in model.namedParameters() { mix(p.value) }
    for (_, b) in model.namedBuffers() { if case let .float(t) = b { mix(t) } }
    for (_, t) in optimizer.state { mix(t) }
    for v in [step, optimizer.stepCount, startEpoch, startBatch, startSeen] { mix(UInt64(bitPattern: Int64(v))) }
    mix(startLossSum.bitPattern)
    mix(bestAccuracy.bitPattern)
    return h
  }
}
