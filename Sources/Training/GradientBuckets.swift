// GradientBuckets: the gradient all-reduce of a data-parallel step, overlapped with the backward
// pass as PyTorch's DDP does it. The packed gradient block is cut into buckets in backward order
// (the last layers' gradients first; the first bucket small, so that communication starts early);
// a bucket's non-blocking all-reduce starts as soon as every module holding its gradients has
// gone back (`Module.backwardHook`), while the layers before them still go back. `finish()`
// starts what is left and waits. Buckets start in the same order on every process, and each
// element is summed once over the processes, so the result is the blocking all-reduce's.
import Collectives
import NN
import TensorCore

final class GradientBuckets {
  private struct Bucket {
    /// Elements of the gradient block, `[lo, hi)`.
    var range: Range<Int>
    /// Parameters of this bucket that have not gone back yet in this pass.
    var pending: Int
    var total: Int
    var operation: PendingCollective?
  }

  private let group: ProcessGroup
  private let block: TensorStorage
  private var buckets: [Bucket] = []
  /// Bucket of each parameter (index in the model's `namedParameters()` order, duplicates removed).
  private var bucketOfParameter: [Int] = []
  private var ready: [Bool] = []
  /// The next bucket to start: buckets start in index order, whatever order they fill in.
  private var next = 0

  /// The buckets of `model`'s gradients, which `block` holds contiguously (`packGradients()`).
  /// `capacityBytes` per bucket (PyTorch's `bucket_cap_mb`), the first at most `firstBytes`.
  /// Hooks every module of the tree.
  init(model: Module, block: TensorStorage, group: ProcessGroup, capacityBytes: Int, firstBytes: Int = 1 << 20) {
    self.group = group
    self.block = block
    // Parameters in packed order, each once, with its place in the block.
    var seen: [ObjectIdentifier: Int] = [:]
    var ranges: [Range<Int>] = []
    for (_, p) in model.namedParameters() where seen[ObjectIdentifier(p)] == nil {
      seen[ObjectIdentifier(p)] = ranges.count
      ranges.append(p.grad.offset..<(p.grad.offset + p.grad.count))
    }
    let covered = ranges.reduce(0) { $0 + $1.count }
    let packed = zip(ranges, ranges.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound }
    guard !ranges.isEmpty, packed, ranges[0].lowerBound == 0, covered == block.capacity else {
      // Not one packed block in parameter order: one bucket for all, started by finish().
      buckets = [Bucket(range: 0..<block.capacity, pending: 1, total: 1)]
      return
    }
    // Buckets from the last parameter back.
    bucketOfParameter = Array(repeating: 0, count: ranges.count)
    var hi = ranges.count
    var bytes = 0
    for i in stride(from: ranges.count - 1, through: 0, by: -1) {
      bytes += ranges[i].count * MemoryLayout<Float>.stride
      let cap = buckets.isEmpty ? Swift.min(firstBytes, capacityBytes) : capacityBytes
      if bytes >= cap || i == 0 {
        buckets.append(Bucket(range: ranges[i].lowerBound..<ranges[hi - 1].upperBound, pending: hi - i, total: hi - i))
        for j in i..<hi { bucketOfParameter[j] = buckets.count - 1 }
        hi = i
        bytes = 0
      }
    }
    ready = Array(repeating: false, count: ranges.count)
    // Every module marks its subtree's parameters ready when its container has run its backward.
    model.visit { m in
      let mine = Array(Set(m.namedParameters().compactMap { seen[ObjectIdentifier($0.1)] })).sorted()
      guard !mine.isEmpty else { return }
      m.backwardHook = { [weak self] in try self?.wentBack(mine) }
    }
  }

  /// Before each backward pass.
  func begin() {
    for i in ready.indices { ready[i] = false }
    for b in buckets.indices {
      buckets[b].pending = buckets[b].total
      buckets[b].operation = nil
    }
    next = 0
  }

  private func wentBack(_ parameters: [Int]) throws {
    for i in parameters where !ready[i] {
      ready[i] = true
      buckets[bucketOfParameter[i]].pending -= 1
    }
    while next < buckets.count, buckets[next].pending == 0 { try start(next) }
    // Open MPI moves non-blocking collectives on inside MPI calls: test the ones in flight.
    for b in 0..<next {
      guard let op = buckets[b].operation else { continue }
      if try !op.test() { break }
    }
  }

  private func start(_ b: Int) throws {
    let r = buckets[b].range
    buckets[b].operation = try group.startAllReduceSum(UnsafeMutableBufferPointer(start: block.pointer + r.lowerBound, count: r.count))
    next = b + 1
  }

  /// After the backward pass: starts the buckets not started yet (gradients of modules that did
  /// not go back through a container), in order, and waits for all.
  func finish() throws {
    while next < buckets.count { try start(next) }
    for b in buckets.indices { try buckets[b].operation?.wait() }
  }
}
