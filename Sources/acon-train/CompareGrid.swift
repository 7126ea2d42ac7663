// CompareGrid: the experiment grid of `compare`, models × seeds. Each cell is one training run
// in its own directory under --out (cells/MODEL-seedS: checkpoint every --checkpoint-every steps,
// JSONL log, and result.json written atomically when the cell is done), so the same command run
// again skips finished cells and resumes the one a kill interrupted. Cells are paired: a seed
// fixes the data order and augmentation, and every parameter whose name and shape agree with
// the family's ReLU network starts from that network's initial values (the convolutions, BN and
// classifier), so the activations are compared from the same starting point.
import ACON
import Foundation
import NN
import TensorCore
import Training

/// What every cell of a grid shares (recorded in --out/grid.json: a rerun with other values
/// is refused, one with more models or seeds extends the grid).
struct GridSettings: Codable, Equatable {
  var recipe: String?
  var epochs: Int
  var maxSteps: Int?
  var batchSize: Int
  var optimizer: String
  var lr: Float
  var momentum: Float
  var weightDecay: Float
  var schedule: String
  var warmupSteps: Int
  var labelSmoothing: Float
  /// Random-crop padding (nil: no crop).
  var cropPadding: Int?
  var flip: Bool
  /// The data set (resolved: `auto` is recorded as what it found).
  var data: String
  /// The share of train held out for validation, evaluated instead of the test split (nil: test).
  var valSplit: Double?
  var splitSeed: UInt64
  /// Test (or validation) images whose Meta-ACON β is recorded per layer after training.
  var betaImages: Int

  /// The split each epoch is evaluated on.
  var evaluationSplit: String { valSplit == nil ? "test" : "validation" }

  /// The trainer options of one cell.
  func trainOptions(model: String, seed: Int) throws -> TrainOptions {
    var o = TrainOptions()
    o.model = model
    o.seed = UInt64(seed)
    o.epochs = epochs
    o.maxSteps = maxSteps
    o.batchSize = batchSize
    guard let opt = OptimizerKind(rawValue: optimizer) else { throw TensorError.invalidArgument("--optimizer must be sgd, adam or adamw, got '\(optimizer)'") }
    o.optimizer = opt
    o.learningRate = lr
    o.momentum = momentum
    o.weightDecay = weightDecay
    guard let s = ScheduleKind(rawValue: schedule) else { throw TensorError.invalidArgument("--schedule must be constant, step, cosine or linear, got '\(schedule)'") }
    o.schedule = s
    o.warmupSteps = warmupSteps
    o.labelSmoothing = labelSmoothing
    if let p = cropPadding {
      o.randomCrop = true
      o.cropPadding = p
    }
    o.horizontalFlip = flip
    o.dataName = data
    return o
  }
}

/// One ACON layer's learned coefficients across its channels at the end of training.
struct AconLayerStats: Codable, Equatable {
  var name: String
  /// `AconC` (β a parameter) or `MetaAconC` (β from the β network: see `MetaBetaStats`).
  var kind: String
  /// β per channel (nil for Meta-ACON-C).
  var beta: [Float]?
  /// p1 − p2 per channel.
  var p1MinusP2: [Float]
  /// p2 per channel (with p1 − p2 and β it gives the learned curve).
  var p2: [Float]
}

/// One Meta-ACON-C layer's β over the evaluation images: `[images, C]` values summarised.
struct MetaBetaStats: Codable, Equatable {
  var name: String
  var images: Int
  var channels: Int
  var min: Float
  var max: Float
  /// 40 equal bins over [min, max] of every (image, channel) β.
  var histogram: [Int]
  /// Per channel: the mean over images and the standard deviation over images.
  var channelMean: [Float]
  var channelSd: [Float]
  /// The mean over channels of `channelSd`: how much β moves with the input.
  var meanChannelSd: Double
}

/// A finished cell, as cells/MODEL-seedS/result.json holds it.
struct CellResult: Codable, Equatable {
  var model: String
  var family: String
  var activation: String
  var seed: Int
  var params: Int
  /// The network whose initial values this cell shares where names and shapes agree (nil: none).
  var sharedInitWith: String?
  var sharedParameters: Int
  /// `test` or `validation`.
  var split: String
  var accuracyPerEpoch: [Double]
  var trainLossPerEpoch: [Double]
  var finalAccuracy: Double
  var steps: Int
  /// Mean training throughput over the epochs (images/s).
  var imagesPerSecond: Double
  /// The process's peak resident set (VmHWM, bytes) during the cell, reset before it through
  /// /proc/self/clear_refs; it includes the data set held in memory (nil: not readable).
  var peakRssBytes: Int?
  /// Wall time of the cell in the run that finished it (a resumed cell: the last part only).
  var seconds: Double
  var aconLayers: [AconLayerStats]
  var metaBeta: [MetaBetaStats]
  /// The threads the cell trained with (`--threads`; OpenBLAS's rounding of large products
  /// depends on it). nil in results written before it was recorded.
  var threads: Int? = nil
}

enum CompareGrid {
  static let activations = ["relu", "swish", "aconc", "meta", "acona", "aconb"]

  /// (family, activation) of a model name: `shufflenetv2-0.5x-aconc` → (`shufflenetv2-0.5x`,
  /// `aconc`); `tfnet-0.5` → (`shufflenetv2-0.5x`, `tfnet`): TFNet is ShuffleNetV2 0.5× with
  /// ACON-FReLU, compared with it at equal width.
  static func family(of model: String) -> (family: String, activation: String) {
    let parts = model.split(separator: "-").map(String.init)
    if parts.count == 2, parts[0] == "tfnet" { return ("shufflenetv2-\(parts[1])x", "tfnet") }
    if parts.count >= 2, activations.contains(parts.last!) {
      return (parts.dropLast().joined(separator: "-"), parts.last!)
    }
    return (model, model)
  }

  /// The ReLU network of `model`'s family (nil when it is that network or has none).
  static func reluReference(of model: String, names: [String]) -> String? {
    let f = family(of: model)
    let ref = f.family + "-relu"
    return ref != model && names.contains(ref) ? ref : nil
  }

  /// Builds `model` with `seed` and copies into it the initial values of every parameter whose
  /// name and shape agree in `reference` built with the same seed (nil: none; TFNet and
  /// ShuffleNetV2 share no names that mean the same and get no reference). Returns the number
  /// of parameter tensors copied.
  static func buildPaired(_ model: String, reference: String?, input: [Int], classes: Int, seed: UInt64,
    build: (String, [Int], Int, UInt64) throws -> Module) throws -> (Module, Int) {
    let net = try build(model, input, classes, seed)
    guard let reference, !model.hasPrefix("tfnet") else { return (net, 0) }
    let donor = try build(reference, input, classes, seed)
    let given = Dictionary(donor.namedParameters(), uniquingKeysWith: { a, _ in a })
    var copied = 0
    for (name, p) in net.namedParameters() {
      guard let q = given[name], q.value.shape == p.value.shape else { continue }
      p.value.data.update(from: q.value.data, count: p.value.count)
      copied += 1
    }
    return (net, copied)
  }

  /// Each ACON layer's β and p1 − p2 per channel as every cell with ACON layers started: the
  /// cell's network built again from its seed (as `runCell` builds it, paired with its ReLU
  /// reference), keyed `MODEL-seedS`. Building is deterministic and cheap, so cells need not
  /// store their initial values.
  static func initialAconLayers(_ cells: [CellResult], input: [Int], classes: Int, names: [String],
    build: (String, [Int], Int, UInt64) throws -> Module) throws -> [String: [AconLayerStats]] {
    var out: [String: [AconLayerStats]] = [:]
    for c in cells where !c.aconLayers.isEmpty {
      let (net, _) = try buildPaired(c.model, reference: reluReference(of: c.model, names: names), input: input,
        classes: classes, seed: UInt64(c.seed), build: build)
      out["\(c.model)-seed\(c.seed)"] = aconLayers(net).0
    }
    return out
  }

  /// A fixed split of `train`: `share` of its images (chosen by a seeded permutation, kept in
  /// file order) for validation, the rest for training.
  static func split(_ train: ImageDataset, share: Double, seed: UInt64) throws -> (train: ImageDataset, val: ImageDataset) {
    guard share > 0 && share < 1 else { throw TensorError.invalidArgument("--val-split must be between 0 and 1, got \(share)") }
    let n = train.count, k = Int((Double(n) * share).rounded())
    guard k >= 1 && k < n else {
      throw TensorError.invalidArgument("--val-split \(share) of \(n) training images leaves an empty split")
    }
    var order = Array(0..<n)
    var rng = SeededGenerator(seed: seedMix(start: 0x5641_4C53_504C_4954, [seed]))
    for i in stride(from: n - 1, to: 0, by: -1) { order.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
    let valSet = Set(order[0..<k])
    func subset(_ idx: [Int], _ suffix: String) -> ImageDataset {
      var px: [UInt8] = []
      px.reserveCapacity(idx.count * train.imageSize)
      for i in idx { px += train.pixels[(i * train.imageSize)..<((i + 1) * train.imageSize)] }
      return ImageDataset(name: train.name + suffix, channels: train.channels, height: train.height, width: train.width,
        classes: train.classes, pixels: px, labels: idx.map { train.labels[$0] }, source: train.source,
        normalization: train.normalization)
    }
    return (subset((0..<n).filter { !valSet.contains($0) }, "-minus-val"), subset((0..<n).filter { valSet.contains($0) }, "-val"))
  }

  /// The directory of one cell.
  static func cellDirectory(_ out: String, model: String, seed: Int) -> String {
    (out as NSString).appendingPathComponent("cells/\(model)-seed\(seed)")
  }

  /// The finished result of a cell, or nil when it has none (not run, or killed before its end).
  static func finishedResult(_ out: String, model: String, seed: Int) -> CellResult? {
    let path = (cellDirectory(out, model: model, seed: seed) as NSString).appendingPathComponent("result.json")
    guard let data = FileManager.default.contents(atPath: path) else { return nil }
    return try? decoder.decode(CellResult.self, from: data)
  }

  static var encoder: JSONEncoder {
    let e = JSONEncoder()
    e.outputFormatting = [.prettyPrinted, .sortedKeys]
    e.keyEncodingStrategy = .convertToSnakeCase
    e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    return e
  }

  static var decoder: JSONDecoder {
    let d = JSONDecoder()
    d.keyDecodingStrategy = .convertFromSnakeCase
    d.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    return d
  }

  /// Records `settings` in out/grid.json, or checks them against what a previous run recorded.
  static func checkManifest(_ out: String, _ settings: GridSettings) throws {
    let path = (out as NSString).appendingPathComponent("grid.json")
    if let data = FileManager.default.contents(atPath: path) {
      guard let old = try? decoder.decode(GridSettings.self, from: data) else {
        throw TensorError.invalidArgument("\(path): not a grid record of compare; use another --out or remove it")
      }
      guard old == settings else {
        let a = String(decoding: try encoder.encode(old), as: UTF8.self)
        let b = String(decoding: try encoder.encode(settings), as: UTF8.self)
        let differ = zip(a.split(separator: "\n"), b.split(separator: "\n")).filter { $0 != $1 }.map { "\($0.0.trimmingCharacters(in: .whitespaces)) (now \($0.1.trimmingCharacters(in: .whitespaces)))" }
        throw TensorError.invalidArgument("\(out) holds a grid trained with other settings: \(differ.joined(separator: "; ")). "
          + "Use the same options to resume it, or another --out")
      }
      return
    }
    try writeFileAtomically(path: path, bytes: [UInt8](try encoder.encode(settings)))
  }

  /// Runs one cell to its end (resuming its checkpoint if a previous run left one) and writes
  /// its result.json atomically; returns the result.
  static func runCell(model: String, seed: Int, settings: GridSettings, out: String, checkpointEvery: Int?,
    train: ImageDataset, eval: ImageDataset, normalization: Normalization, names: [String],
    build: (String, [Int], Int, UInt64) throws -> Module, progress: @escaping (String) -> Void) throws -> CellResult {
    let dir = cellDirectory(out, model: model, seed: seed)
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    var o = try settings.trainOptions(model: model, seed: seed)
    o.checkpoint = (dir as NSString).appendingPathComponent("checkpoint.safetensors")
    o.checkpointEvery = checkpointEvery
    o.resume = true
    o.logPath = (dir as NSString).appendingPathComponent("log.jsonl")
    let reference = reluReference(of: model, names: names)
    let classes = train.classes == 2 ? 1 : train.classes
    let (net, shared) = try buildPaired(model, reference: reference, input: train.imageShape, classes: classes,
      seed: UInt64(seed), build: build)
    let peakReset = resetPeakRSS()
    let start = DispatchTime.now().uptimeNanoseconds
    let trainer = try Trainer(model: net, name: model, options: o, train: train, test: eval, normalization: normalization)
    if let s = trainer.resumedFromStep { progress("  resumed \(model) seed \(seed) at step \(s)") }
    trainer.onEpoch = { r in
      progress(String(format: "  %@ seed %d epoch %d: train loss %.4f, %@ accuracy %.2f%% (%.0f images/s)", model as NSString, seed,
        r.epoch, r.trainLoss, settings.evaluationSplit as NSString, (r.testAccuracy ?? .nan) * 100, r.imagesPerSecond))
    }
    _ = try trainer.run()
    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    let peak = peakReset ? peakRSS() : nil
    // The epochs of the whole run, the killed parts included: the log reads as one run.
    let epochs = try epochRecords(o.logPath!)
    let f = family(of: model)
    let (acon, meta) = try aconStatistics(net, on: eval, normalization: normalization, images: settings.betaImages)
    let result = CellResult(model: model, family: f.family, activation: f.activation, seed: seed, params: net.parameterCount,
      sharedInitWith: shared > 0 ? reference : nil, sharedParameters: shared, split: settings.evaluationSplit,
      accuracyPerEpoch: epochs.map(\.accuracy), trainLossPerEpoch: epochs.map(\.loss), finalAccuracy: epochs.last?.accuracy ?? .nan,
      steps: epochs.last?.steps ?? 0, imagesPerSecond: CompareStats.mean(epochs.map(\.imagesPerSecond)), peakRssBytes: peak,
      seconds: seconds, aconLayers: acon, metaBeta: meta, threads: Threads.count)
    try writeFileAtomically(path: (dir as NSString).appendingPathComponent("result.json"), bytes: [UInt8](try encoder.encode(result)))
    // The result is safe: the checkpoints (tens of MB per cell) are no longer needed.
    let ck = Checkpoint(path: o.checkpoint!)
    for file in [o.checkpoint!, ck.statePath, ck.bestPath] { try? FileManager.default.removeItem(atPath: file) }
    return result
  }

  /// Every cell of models × seeds (seeds outer: an interrupted grid has every model at the same
  /// number of seeds): a finished one is read back, the others run (the one a kill interrupted
  /// resumes from its checkpoint). A cell another process is running (it holds the cell's lock,
  /// `CellLock`) is left to it: the same command started in several processes shares the grid out.
  /// Returns the cells finished (by this or another process), the names of those trained in this
  /// call, and the names of those still running elsewhere when this call ended.
  static func runGrid(models: [String], seeds: Int, settings: GridSettings, out: String, checkpointEvery: Int?,
    train: ImageDataset, eval: ImageDataset, normalization: Normalization, names: [String],
    build: (String, [Int], Int, UInt64) throws -> Module, progress: @escaping (String) -> Void) throws
    -> (cells: [CellResult], trained: [String], elsewhere: [String]) {
    var cells: [CellResult?] = [], trained: [String] = [], skipped: [(index: Int, model: String, seed: Int)] = []
    /// The cell's result: read back if done, else trained here; nil if another process holds its lock.
    func attempt(_ model: String, _ s: Int, retry: Bool) throws -> CellResult? {
      let dir = cellDirectory(out, model: model, seed: s)
      if let done = finishedResult(out, model: model, seed: s) {
        if !retry { progress(String(format: "%@ seed %d: done (%.2f%%), skipped", model as NSString, s, done.finalAccuracy * 100)) }
        removeLeftoverCheckpoints(dir)
        return done
      }
      try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
      guard let lock = try CellLock(directory: dir) else { return nil }
      defer { lock.release() }
      // Another process may have finished it between the check above and the lock.
      if let done = finishedResult(out, model: model, seed: s) { return done }
      if retry { progress("\(model) seed \(s): the process that ran it has ended without finishing it; running it here") }
      let r = try runCell(model: model, seed: s, settings: settings, out: out, checkpointEvery: checkpointEvery,
        train: train, eval: eval, normalization: normalization, names: names, build: build, progress: progress)
      let peak = r.peakRssBytes.map { String(format: ", peak %.0f MB", Double($0) / 1_048_576) } ?? ""
      progress(String(format: "%@ seed %d: %@ accuracy %@ (%.0f images/s%@, %.0f s)", model as NSString, s, r.split as NSString,
        r.accuracyPerEpoch.map { String(format: "%.2f%%", $0 * 100) }.joined(separator: " → "), r.imagesPerSecond, peak, r.seconds))
      trained.append("\(model)-seed\(s)")
      return r
    }
    for s in 0..<seeds {
      for model in models {
        if let r = try attempt(model, s, retry: false) {
          cells.append(r)
        } else {
          progress("\(model) seed \(s): running in another process, left to it")
          skipped.append((cells.count, model, s))
          cells.append(nil)
        }
      }
    }
    // The cells left to other processes: those finished since are read back; one whose lock is
    // free now (its process was killed) runs here; the rest are still running elsewhere.
    var elsewhere: [String] = []
    for c in skipped {
      if let r = try attempt(c.model, c.seed, retry: true) { cells[c.index] = r } else { elsewhere.append("\(c.model)-seed\(c.seed)") }
    }
    return (cells.compactMap { $0 }, trained, elsewhere)
  }

  /// Removes the checkpoints a finished cell may still hold (a kill between its result.json and
  /// their removal), unless another process holds the cell's lock.
  static func removeLeftoverCheckpoints(_ dir: String) {
    let ck = Checkpoint(path: (dir as NSString).appendingPathComponent("checkpoint.safetensors"))
    let files = [ck.path, ck.statePath, ck.bestPath].filter { FileManager.default.fileExists(atPath: $0) }
    guard !files.isEmpty, let lock = try? CellLock(directory: dir) else { return }
    defer { lock.release() }
    for file in files { try? FileManager.default.removeItem(atPath: file) }
  }

  /// The epoch records of a cell's JSONL log, in order.
  static func epochRecords(_ path: String) throws -> [(accuracy: Double, loss: Double, imagesPerSecond: Double, steps: Int)] {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw TensorError.invalidArgument("\(path): cannot read the cell's log")
    }
    var out: [(Double, Double, Double, Int)] = []
    for line in data.split(separator: UInt8(ascii: "\n")) {
      guard let r = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any], r["train_loss"] != nil else { continue }
      out.append(((r["test_accuracy"] as? Double) ?? .nan, (r["train_loss"] as? Double) ?? .nan, (r["images_per_s"] as? Double) ?? .nan,
        (r["steps"] as? Int) ?? 0))
    }
    return out
  }

  /// Every module of `m` with its dotted name, parents first.
  static func walk(_ m: Module, _ prefix: String = "", _ body: (String, Module) -> Void) {
    body(prefix, m)
    for (name, c) in m.children { walk(c, prefix.isEmpty ? name : prefix + "." + name, body) }
  }

  /// Each ACON layer's β (ACON-C) and p1 − p2 and p2 per channel, and the Meta-ACON-C layers,
  /// with their dotted names.
  static func aconLayers(_ model: Module) -> ([AconLayerStats], [(String, MetaAconC)]) {
    var acon: [AconLayerStats] = []
    var metas: [(String, MetaAconC)] = []
    walk(model) { name, m in
      if let a = m as? AconActivation {
        let c = a.channels
        acon.append(AconLayerStats(name: name, kind: "AconC", beta: (0..<c).map { a.beta.data[$0] },
          p1MinusP2: (0..<c).map { a.p1.data[$0] - a.p2.data[$0] }, p2: (0..<c).map { a.p2.data[$0] }))
      } else if let a = m as? MetaAconC {
        acon.append(AconLayerStats(name: name, kind: "MetaAconC", beta: nil,
          p1MinusP2: (0..<a.channels).map { a.p1.value.data[$0] - a.p2.value.data[$0] },
          p2: (0..<a.channels).map { a.p2.value.data[$0] }))
        metas.append((name, a))
      }
    }
    return (acon, metas)
  }

  /// Each ACON layer's β and p1 − p2 per channel, and each Meta-ACON-C layer's β over the first
  /// `images` images of `dataset` (the model in eval mode, batches of 100).
  static func aconStatistics(_ model: Module, on dataset: ImageDataset, normalization: Normalization, images: Int) throws
    -> ([AconLayerStats], [MetaBetaStats]) {
    let (acon, metas) = aconLayers(model)
    guard !metas.isEmpty, images > 0 else { return (acon, []) }
    var betas = metas.map { _ in [Float]() }  // [images · C] per layer
    let wasTraining = model.isTraining
    model.eval()
    defer { if wasTraining { model.train() } }
    let loader = BatchLoader(dataset: dataset.prefix(images), batchSize: 100, normalization: normalization)
    for (x, _) in loader {
      _ = try model.forward(x)
      for (i, (name, m)) in metas.enumerated() {
        guard let b = m.lastBeta, b.shape == [x.shape[0], m.channels] else {
          throw TensorError.invalidArgument("\(name): Meta-ACON-C kept no β of shape [\(x.shape[0]), \(m.channels)] after its forward pass")
        }
        betas[i] += UnsafeBufferPointer(start: b.data, count: b.count)
      }
    }
    let meta = zip(metas, betas).map { (nm, v) -> MetaBetaStats in
      let c = nm.1.channels, n = v.count / c
      let lo = v.min() ?? 0, hi = v.max() ?? 0
      var hist = [Int](repeating: 0, count: 40)
      for x in v { hist[Swift.min(39, Swift.max(0, Int((x - lo) / Swift.max(hi - lo, 1e-12) * 40)))] += 1 }
      var means = [Float](), sds = [Float]()
      for ch in 0..<c {
        let col = (0..<n).map { Double(v[$0 * c + ch]) }
        means.append(Float(CompareStats.mean(col)))
        sds.append(Float(CompareStats.sd(col)))
      }
      return MetaBetaStats(name: nm.0, images: n, channels: c, min: lo, max: hi, histogram: hist, channelMean: means,
        channelSd: sds, meanChannelSd: CompareStats.mean(sds.map(Double.init)))
    }
    return (acon, meta)
  }

  /// Resets the process's peak resident set (VmHWM) to the current one; false where Linux's
  /// /proc/self/clear_refs is not writable.
  static func resetPeakRSS() -> Bool {
    guard let h = FileHandle(forWritingAtPath: "/proc/self/clear_refs") else { return false }
    defer { try? h.close() }
    return (try? h.write(contentsOf: Data("5".utf8))) != nil
  }

  /// VmHWM of /proc/self/status in bytes (nil where unreadable).
  static func peakRSS() -> Int? {
    guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
    for line in s.split(separator: "\n") where line.hasPrefix("VmHWM:") {
      let kb = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) }
      return kb.map { $0 * 1024 }
    }
    return nil
  }
}

/// A cell's lock: `flock` on CELL/lock, held while a process runs the cell. The kernel drops it
/// when the process ends, killed or not, so a lock never outlives its holder.
final class CellLock {
  private var fd: Int32

  /// Takes the lock of the cell in `directory`; nil when another process holds it.
  init?(directory: String) throws {
    let path = (directory as NSString).appendingPathComponent("lock")
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
    guard fd >= 0 else {
      throw TensorError.invalidArgument("\(path): cannot open the cell's lock file: \(String(cString: strerror(errno)))")
    }
    if flock(fd, LOCK_EX | LOCK_NB) != 0 {
      let e = errno
      close(fd)
      fd = -1
      if e == EWOULDBLOCK { return nil }
      throw TensorError.invalidArgument("\(path): cannot lock the cell: \(String(cString: strerror(e)))")
    }
  }

  /// Releases the lock (also done when the lock is deallocated).
  func release() {
    if fd >= 0 { close(fd) }
    fd = -1
  }

  deinit { release() }
}
