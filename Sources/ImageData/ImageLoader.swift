// ImageLoader: batches of an ImageFolder through a pipeline, decoded ahead of the training step
// by worker threads into reused batch buffers (a bounded queue of `prefetch` batches per worker).
// Sample p of epoch e is image order[p] with random draws seeded by (seed, e, p), so batches are
// the same bits whatever the worker count, and a resumed run continues exactly.
import Foundation
import TensorCore

/// One batch handed out by `ImageLoader.next()`: valid until the next call of `next()`.
public struct ImageBatch {
  /// The batch's index in the epoch.
  public var index: Int
  /// `[b, 3, H, W]` floats.
  public var x: Tensor
  /// b labels.
  public var labels: [Int32]
}

/// Worker threads decoding an ImageFolder ahead into reused batch buffers.
///
/// `startEpoch(e)` then `next()` until nil. Worker w (of N) fills batches w, w+N, …, each into
/// one of its `prefetch` buffers, so at most N·prefetch batches wait. A bad image is a thrown
/// `ImageError` from `next()` naming the file; with `skipBadImages` its slot is filled by the next
/// image of the data set that decodes (same random draws) and `skippedCount` grows.
public final class ImageLoader: @unchecked Sendable {
  /// The images.
  public let folder: ImageFolder
  /// The transforms and the tensor convention.
  public let pipeline: ImagePipeline
  /// B, and whether an incomplete last batch is dropped.
  public let batchSize: Int, dropLast: Bool
  /// Whether each epoch is a seeded permutation.
  public let shuffle: Bool
  /// The seed of the order and the augmentation.
  public let seed: UInt64
  /// Worker threads N (≥ 1) and buffers per worker.
  public let workers: Int, prefetch: Int
  /// Replace undecodable images instead of failing.
  public let skipBadImages: Bool
  /// `[3, H, W]`.
  public let sampleShape: [Int]

  private let limits: ImageLimits
  private let cond = NSCondition()
  // Guarded by `cond`:
  private var epoch = 0, firstBatch = 0, generation = 0
  private var order: [Int]
  private var slots: [Slot]
  private var running = 0
  private var consumed = -1  // last batch handed out (its slot is released by the next call)
  private var nextBatch = 0
  private var badFiles = Set<String>()
  private var warnings = [String]()
  // Timing (consumer side).
  private var waited = 0.0, started = 0.0

  private final class Slot {
    var batch = -1  // the batch it holds or is being filled with
    var ready = false
    var error: ImageError?
    let x: Tensor
    var labels = [Int32]()
    init(shape: [Int]) { x = Tensor(zeros: shape) }
  }

  /// - Parameters:
  ///   - workers: decoding threads (≥ 1).
  ///   - prefetch: buffers per worker (≥ 1): batches decoded ahead of the consumer.
  public init(
    folder: ImageFolder, pipeline: ImagePipeline, batchSize: Int, shuffle: Bool, dropLast: Bool = false, seed: UInt64,
    workers: Int = 2, prefetch: Int = 2, skipBadImages: Bool = false, limits: ImageLimits = .standard
  ) {
    precondition(batchSize > 0 && workers > 0 && prefetch > 0, "ImageLoader: batch size, workers and prefetch must be positive")
    precondition(pipeline.hasFixedOutputSize, "ImageLoader: pipeline \(pipeline) has no fixed output size")
    self.folder = folder
    self.pipeline = pipeline
    self.batchSize = batchSize
    self.shuffle = shuffle
    self.dropLast = dropLast
    self.seed = seed
    self.workers = workers
    self.prefetch = prefetch
    self.skipBadImages = skipBadImages
    self.limits = limits
    self.sampleShape = pipeline.outputShape
    self.order = Array(0..<folder.count)
    self.slots = (0..<(workers * prefetch)).map { _ in Slot(shape: [batchSize] + pipeline.outputShape) }
  }

  deinit { stop() }

  /// Batches per epoch: ⌊n/B⌋ with `dropLast`, else ⌈n/B⌉.
  public var batchesPerEpoch: Int { dropLast ? folder.count / batchSize : (folder.count + batchSize - 1) / batchSize }

  /// Images in batch `index`.
  public func size(ofBatch index: Int) -> Int { Swift.min(batchSize, folder.count - index * batchSize) }

  /// The epoch's order (position → image index): a seeded Fisher–Yates permutation of (seed, epoch).
  public static func order(count: Int, seed: UInt64, epoch: Int, shuffle: Bool) -> [Int] {
    var o = Array(0..<count)
    guard shuffle, count > 1 else { return o }
    var rng = SeededGenerator(seed: imageSeedMix(seed, 0x5348_5546, UInt64(bitPattern: Int64(epoch))))
    for i in stride(from: count - 1, to: 0, by: -1) { o.swapAt(i, rng.nextInt(below: i + 1)) }
    return o
  }

  /// The random draws of sample `position` of `epoch`.
  public static func sampleGenerator(seed: UInt64, epoch: Int, position: Int) -> SeededGenerator {
    SeededGenerator(seed: imageSeedMix(seed, 0x494D_4746 /* "IMGF" */, UInt64(bitPattern: Int64(epoch)), UInt64(position)))
  }

  /// Stops the current epoch's workers and starts decoding `epoch` from batch `fromBatch`.
  public func startEpoch(_ epoch: Int, fromBatch: Int = 0) {
    stop()
    cond.lock()
    self.epoch = epoch
    self.firstBatch = fromBatch
    self.nextBatch = fromBatch
    self.consumed = -1
    self.order = Self.order(count: folder.count, seed: seed, epoch: epoch, shuffle: shuffle)
    for s in slots {
      s.batch = -1
      s.ready = false
      s.error = nil
    }
    generation += 1
    let gen = generation
    running = workers
    waited = 0
    started = Self.now()
    cond.unlock()
    for w in 0..<workers {
      let t = Thread { [self] in self.work(worker: w, generation: gen) }
      t.name = "ImageLoader worker \(w)"
      t.start()
    }
  }

  /// The next batch of the epoch (nil at its end). The previous batch's buffers are released.
  /// - Throws: the `ImageError` of the first image of the batch that failed (without `skipBadImages`).
  public func next() throws -> ImageBatch? {
    cond.lock()
    defer { cond.unlock() }
    if consumed >= 0 { slot(for: consumed).batch = -2; slot(for: consumed).ready = false; cond.broadcast() }
    consumed = -1
    guard nextBatch < batchesPerEpoch else { return nil }
    let b = nextBatch
    let s = slot(for: b)
    let t0 = Self.now()
    while !(s.batch == b && s.ready) { cond.wait() }
    waited += Self.now() - t0
    nextBatch += 1
    consumed = b
    if let e = s.error { throw e }
    return ImageBatch(index: b, x: s.x, labels: s.labels)
  }

  /// The fraction of the time since `startEpoch` that `next()` spent waiting for images.
  public var waitFraction: Double {
    cond.lock()
    defer { cond.unlock() }
    let total = Self.now() - started
    return total > 0 ? Swift.min(1, waited / total) : 0
  }

  /// Whether the run waits for data: `next()` waited more than 10% of the time.
  public var isDataBound: Bool { waitFraction > 0.1 }

  /// Images replaced because they did not decode (with `skipBadImages`), and the messages (one per file).
  public var skippedCount: Int {
    cond.lock()
    defer { cond.unlock() }
    return badFiles.count
  }

  /// The warnings of skipped files since the last call (each file once), e.g. for a log.
  public func takeWarnings() -> [String] {
    cond.lock()
    defer { cond.unlock() }
    let w = warnings
    warnings.removeAll()
    return w
  }

  /// Fills `x` (`[b, 3, H, W]`) and `labels` with batch `index` of `epoch` on the calling thread
  /// (evaluation and tests): the same bits as the workers give.
  public func batch(_ index: Int, epoch: Int, into x: Tensor, labels: inout [Int32]) throws {
    let order = Self.order(count: folder.count, seed: seed, epoch: epoch, shuffle: shuffle)
    let processor = ImageProcessor(limits: limits)
    try fill(index, epoch: epoch, order: order, x: x, labels: &labels, processor: processor)
  }

  private func slot(for batch: Int) -> Slot {
    let k = batch - firstBatch
    return slots[(k % workers) * prefetch + (k / workers) % prefetch]
  }

  /// Stops the workers of the current epoch (waits for them). Call it when abandoning an epoch
  /// before its end: workers hold the loader until their epoch is done or stopped.
  public func stop() {
    cond.lock()
    generation += 1
    cond.broadcast()
    while running > 0 { cond.wait() }
    cond.unlock()
  }

  private static func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
  }

  private func work(worker w: Int, generation gen: Int) {
    let processor = ImageProcessor(limits: limits)
    cond.lock()
    let order = self.order, ep = epoch, from = firstBatch, total = batchesPerEpoch
    cond.unlock()
    var b = from + w
    defer {
      cond.lock()
      running -= 1
      cond.broadcast()
      cond.unlock()
    }
    while b < total {
      let s: Slot
      cond.lock()
      while generation == gen && !(slot(for: b).batch < 0 && !slot(for: b).ready) { cond.wait() }
      if generation != gen {
        cond.unlock()
        return
      }
      s = slot(for: b)
      s.batch = b
      cond.unlock()
      var error: ImageError? = nil
      var labels = s.labels
      do {
        try fill(b, epoch: ep, order: order, x: s.x, labels: &labels, processor: processor)
      } catch let e as ImageError {
        error = e
      } catch {
        preconditionFailure("ImageLoader: unexpected error \(error)")
      }
      cond.lock()
      s.labels = labels
      s.error = error
      s.ready = true
      cond.broadcast()
      cond.unlock()
      b += workers
    }
  }

  private func fill(_ index: Int, epoch: Int, order: [Int], x: Tensor, labels: inout [Int32], processor: ImageProcessor) throws {
    let n = size(ofBatch: index)
    x.resize(to: [n] + sampleShape)
    labels.removeAll(keepingCapacity: true)
    let per = sampleShape.reduce(1, *)
    for r in 0..<n {
      let position = index * batchSize + r
      var candidate = order[position]
      var attempts = 0
      while true {
        var rng = Self.sampleGenerator(seed: seed, epoch: epoch, position: position)
        let path = folder.paths[candidate]
        do {
          let bytes = try ImageFile.read(path, limits: limits)
          try bytes.withUnsafeBytes {
            try processor.process($0, name: path, pipeline: pipeline, rng: &rng, into: x.data + r * per)
          }
          labels.append(Int32(folder.labels[candidate]))
          break
        } catch let e as ImageError {
          guard skipBadImages else { throw e }
          cond.lock()
          if badFiles.insert(path).inserted { warnings.append("warning: skipped \(e.description)") }
          cond.unlock()
          attempts += 1
          guard attempts < folder.count else {
            throw ImageError(file: folder.root, reason: "no image of the data set decodes")
          }
          candidate = (candidate + 1) % folder.count
        }
      }
    }
  }
}
