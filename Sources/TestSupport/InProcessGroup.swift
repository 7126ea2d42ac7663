// InProcessGroup: a data-parallel process group whose "processes" are threads of the test, so
// the collective logic (synchronised batch norm, gradient averaging) is tested without MPI. The
// all-reduce sums the members' buffers in rank order, like a reduction to one root.
import Collectives
import Foundation

/// `size` members that meet at each collective call; member r is `member(r)`, used on its own
/// thread. Every member must make the same calls in the same order.
public final class InProcessGroup: @unchecked Sendable {
  /// The number of members.
  public let size: Int
  private let condition = NSCondition()
  private var arrived = 0
  private var generation = 0
  private var doubles: [UnsafeMutableBufferPointer<Double>?]
  private var floats: [UnsafeMutableBufferPointer<Float>?]

  /// A group of `size` members.
  public init(size: Int) {
    precondition(size > 0)
    self.size = size
    doubles = Array(repeating: nil, count: size)
    floats = Array(repeating: nil, count: size)
  }

  /// The handle of member `rank` (0 ..< size).
  public func member(_ rank: Int) -> ProcessGroup { Member(group: self, rank: rank) }

  /// Runs `body(member)` for every member on its own thread and waits for all of them; rethrows
  /// the first error. (A member that throws before a collective call leaves the others waiting:
  /// keep bodies simple.)
  public func run(_ body: @escaping @Sendable (ProcessGroup) throws -> Void) throws {
    let finished = DispatchSemaphore(value: 0)
    let errors = UnsafeSendableBox<[Error]>([])
    let lock = NSLock()
    for r in 0..<size {
      let m = UnsafeSendableBox(member(r))
      Thread {
        do { try body(m.value) } catch {
          lock.lock()
          errors.value.append(error)
          lock.unlock()
        }
        finished.signal()
      }.start()
    }
    for _ in 0..<size { finished.wait() }
    if let e = errors.value.first { throw e }
  }

  /// Meets the other members: each deposits its buffer, the last to arrive runs `combine` on all
  /// of them, and everyone leaves together.
  fileprivate func meet(rank: Int, deposit: () -> Void, combine: () -> Void) {
    condition.lock()
    let gen = generation
    deposit()
    arrived += 1
    if arrived == size {
      combine()
      arrived = 0
      generation += 1
      condition.broadcast()
    } else {
      while generation == gen { condition.wait() }
    }
    condition.unlock()
  }

  fileprivate func allReduce(rank: Int, _ buffer: UnsafeMutableBufferPointer<Double>) {
    meet(rank: rank, deposit: { doubles[rank] = buffer }) {
      let all = doubles.map { $0! }
      for i in 0..<buffer.count {
        var s = 0.0
        for b in all { s += b[i] }
        for b in all { b[i] = s }
      }
    }
  }

  fileprivate func allReduce(rank: Int, _ buffer: UnsafeMutableBufferPointer<Float>) {
    meet(rank: rank, deposit: { floats[rank] = buffer }) {
      let all = floats.map { $0! }
      for i in 0..<buffer.count {
        var s: Float = 0
        for b in all { s += b[i] }
        for b in all { b[i] = s }
      }
    }
  }

  fileprivate func broadcast(rank: Int, _ buffer: UnsafeMutableBufferPointer<Float>, root: Int) {
    meet(rank: rank, deposit: { floats[rank] = buffer }) {
      let src = floats[root]!
      for b in floats where b!.baseAddress != src.baseAddress {
        b!.baseAddress!.update(from: src.baseAddress!, count: src.count)
      }
    }
  }

  private final class Member: ProcessGroup {
    let group: InProcessGroup
    let rank: Int
    init(group: InProcessGroup, rank: Int) {
      self.group = group
      self.rank = rank
    }
    var size: Int { group.size }
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws { group.allReduce(rank: rank, buffer) }
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws { group.allReduce(rank: rank, buffer) }
    func broadcast(_ buffer: UnsafeMutableBufferPointer<Float>, root: Int) throws {
      group.broadcast(rank: rank, buffer, root: root)
    }
    func barrier() throws { group.meet(rank: rank, deposit: {}, combine: {}) }
    /// The members are threads of one process: ending the group ends the process.
    func abort(code: Int32) -> Never { exit(code) }
  }
}

/// A mutable box shared by threads under a lock held by its user.
final class UnsafeSendableBox<T>: @unchecked Sendable {
  var value: T
  init(_ value: T) { self.value = value }
}
