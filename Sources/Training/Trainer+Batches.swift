// Trainer+Batches: where the training loop's batches come from. In memory (Fashion-MNIST,
// CIFAR-10, the synthetic set: BatchLoader normalises and augments the bytes on the calling
// thread) or streamed (a folder of images: ImageLoader decodes and transforms on worker threads
// ahead of the step, into reused batch buffers). Both are deterministic in (seed, epoch, position),
// so a resume continues exactly whatever the worker count.
import Foundation
import ImageData
import NN
import TensorCore

/// The training batches of one run, an epoch at a time.
protocol TrainingBatches: AnyObject {
  /// Batches per epoch.
  var batchesPerEpoch: Int { get }
  /// Images in the training split.
  var examples: Int { get }
  /// Whether batches are decoded ahead on worker threads (the step may wait for them).
  var streams: Bool { get }
  /// Images in batch `index`.
  func size(ofBatch index: Int) -> Int
  /// Positions the source at batch `fromBatch` of `epoch`; `batch` is then called for
  /// `fromBatch`, `fromBatch + 1`, … in order.
  func startEpoch(_ epoch: Int, fromBatch: Int)
  /// Rows `rows` of batch `index`: `[rows.count, C, H, W]` floats, either `scratch` (resized) or
  /// the source's own buffer, valid until the next call; `labels` set to their labels.
  func batch(_ index: Int, rows: Range<Int>, scratch: Tensor, labels: inout [Int32]) throws -> Tensor
  /// Ends the epoch (before its last batch too): worker threads stop.
  func stop()
  /// Warnings since the last call (skipped images), each once.
  func takeWarnings() -> [String]
}

/// An in-memory data set's batches (BatchLoader: the bytes, normalised and augmented per batch).
final class InMemoryBatches: TrainingBatches {
  let loader: BatchLoader
  init(_ loader: BatchLoader) { self.loader = loader }
  var batchesPerEpoch: Int { loader.batchesPerEpoch }
  var examples: Int { loader.dataset.count }
  var streams: Bool { false }
  func size(ofBatch index: Int) -> Int { loader.size(ofBatch: index) }
  func startEpoch(_ epoch: Int, fromBatch: Int) { loader.startEpoch(epoch) }
  func batch(_ index: Int, rows: Range<Int>, scratch: Tensor, labels: inout [Int32]) throws -> Tensor {
    loader.batch(index, rows: rows, into: scratch, labels: &labels)
    return scratch
  }
  func stop() {}
  func takeWarnings() -> [String] { [] }
}

/// A folder's batches, decoded by an ImageLoader's workers ahead of the step.
final class StreamedBatches: TrainingBatches {
  let loader: ImageLoader
  init(_ loader: ImageLoader) { self.loader = loader }
  var batchesPerEpoch: Int { loader.batchesPerEpoch }
  var examples: Int { loader.folder.count }
  var streams: Bool { true }
  func size(ofBatch index: Int) -> Int { loader.size(ofBatch: index) }
  func startEpoch(_ epoch: Int, fromBatch: Int) { loader.startEpoch(epoch, fromBatch: fromBatch) }

  func batch(_ index: Int, rows: Range<Int>, scratch: Tensor, labels: inout [Int32]) throws -> Tensor {
    guard let b = try loader.next() else { preconditionFailure("StreamedBatches: the epoch ended before batch \(index)") }
    precondition(b.index == index, "StreamedBatches: the loader gave batch \(b.index), the loop asked for \(index)")
    if rows == 0..<b.labels.count {
      labels = b.labels
      return b.x
    }
    // A data-parallel process's rows of the whole batch (every process decodes the whole batch).
    let per = loader.sampleShape.reduce(1, *)
    scratch.resize(to: [rows.count] + loader.sampleShape)
    (scratch.data).update(from: b.x.data + rows.lowerBound * per, count: rows.count * per)
    labels = Array(b.labels[rows])
    return scratch
  }

  func stop() { loader.stop() }
  func takeWarnings() -> [String] { loader.takeWarnings() }
}
