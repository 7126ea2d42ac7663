// ChannelOps: the kernels that move whole channel planes of NCHW tensors without arithmetic
// (concatenation, splits, channel shuffle) and the elementwise sum of a residual connection,
// plus the `ChannelShuffle` layer. Graph.swift wires them into networks.
//
// Every move is one primitive, `ChannelOps.copyPlanes`: plane j of a run goes from source channel
// `srcStart + j·srcStep` to destination channel `dstStart + j·dstStep`, for every sample. With unit
// steps a run is one memcpy per sample; otherwise one memcpy per H·W plane. A move whose source
// and output together (bytes read plus written) reach 3/4 of the last-level cache
// (`streamingThreshold`, from the cache sizes detected at run time) uses streaming stores
// (CCopyKernels) instead of memcpy: the tensors no longer fit the cache, the output leaves it
// either way, and a plain store reads each destination line first, so the copy would move 1.5×
// its bytes. A smaller move stays in the last-level cache, where memcpy's plain stores are the
// fast ones. Measured on a 2-core AMD EPYC (Zen 4) guest with 32 MB of L3 (C, two threads,
// repeated on the same buffers, machine shared): memcpy 1.6–1.9× faster than streaming up to
// 9.6 MB written (the ShuffleNetV2-0.5× stage tensors, which the former 2×L2 rule streamed),
// even at 12 MB, streaming 1.4–2.2× faster from 16 MB written on. glibc's memcpy switches at 3/4
// of its own shared-cache estimate of the bytes copied, but on that guest glibc's estimate is
// 320 MB, so it never streams there.
import CAconKernels
import CCopyKernels
import TensorCore

#if canImport(Glibc)
  import Glibc
#endif

/// How `Graph.split` divides the channels of `[N, C, H, W]` into two `[N, C/2, H, W]` halves.
public enum ChannelSplit: Sendable, Equatable {
  /// Channels `0..<C/2` and `C/2..<C` (`torch.chunk(x, 2, dim=1)`).
  case halves
  /// Even channels `0, 2, 4, …` and odd channels `1, 3, 5, …`: exactly what the official
  /// ShuffleNetV2 code's `channel_shuffle` returns (reshape to `[N·C/2, 2, H·W]`, swap the first
  /// two axes, so that part k is `x[:, k::2]`). It is a channel shuffle with C/2 groups followed
  /// by `.halves`.
  case evenOdd
}

/// Plane-moving and elementwise kernels over raw pointers. Allocation-free; each runs in
/// parallel over disjoint output regions, so results do not depend on the thread count.
public enum ChannelOps {
  /// Copies `count` channel planes of `plane` (= H·W) floats for each of `batch` samples:
  /// plane j goes from `src[s, srcStart + j·srcStep]` to `dst[s, dstStart + j·dstStep]`.
  /// - Shapes: src `[batch, srcChannels, plane]`, dst `[batch, dstChannels, plane]`;
  ///   every addressed channel lies inside its tensor. The regions must not overlap.
  /// A move that writes `streamingThreshold` floats or more uses streaming stores; the bits are
  /// the same.
  public static func copyPlanes(
    from src: UnsafePointer<Float>, srcChannels: Int, srcStart: Int, srcStep: Int = 1,
    to dst: UnsafeMutablePointer<Float>, dstChannels: Int, dstStart: Int, dstStep: Int = 1,
    count: Int, batch: Int, plane: Int
  ) {
    copyPlanes(from: src, srcChannels: srcChannels, srcStart: srcStart, srcStep: srcStep, to: dst,
      dstChannels: dstChannels, dstStart: dstStart, dstStep: dstStep, count: count, batch: batch, plane: plane,
      streaming: usesStreamingStores(floats: batch * count * plane))
  }

  /// `copyPlanes`, with the choice of streaming stores made by the caller for the whole
  /// operation (a concatenation's parts together), not for this one move.
  static func copyPlanes(
    from src: UnsafePointer<Float>, srcChannels: Int, srcStart: Int, srcStep: Int = 1,
    to dst: UnsafeMutablePointer<Float>, dstChannels: Int, dstStart: Int, dstStep: Int = 1,
    count: Int, batch: Int, plane: Int, streaming: Bool
  ) {
    precondition(count >= 0 && batch >= 0 && plane >= 0, "copyPlanes: negative size")
    precondition(count == 0 || (srcStart >= 0 && srcStart + (count - 1) * srcStep < srcChannels
      && dstStart >= 0 && dstStart + (count - 1) * dstStep < dstChannels), "copyPlanes: channel out of range")
    let total = batch * count
    if total == 0 || plane == 0 { return }
    let contiguous = srcStep == 1 && dstStep == 1
    let s = UncheckedSendable(src), d = UncheckedSendable(dst)
    // About 16 KB per chunk at least, so small copies stay on one thread.
    parallelFor(total, minimumChunk: Swift.max(1, 4096 / plane)) { r in
      var idx = r.lowerBound
      while idx < r.upperBound {
        let sample = idx / count, j = idx % count
        let run = contiguous ? Swift.min(r.upperBound - idx, count - j) : 1
        let from = s.value + (sample * srcChannels + srcStart + j * srcStep) * plane
        let to = d.value + (sample * dstChannels + dstStart + j * dstStep) * plane
        move(to, from, count: run * plane, streaming: streaming)
        idx += run
      }
      if streaming { acon_copy_fence() }
    }
  }

  /// Moves (a whole concatenation, split or shuffle) that write at least this many floats use
  /// streaming stores; smaller ones use memcpy, so that their output stays in cache. By default
  /// 3/8 of the last-level cache (`acon_last_level_cache_bytes`, detected at run time; 16 MiB if
  /// unknown), in floats: from there on, the bytes read plus written reach 3/4 of that cache.
  /// Any value gives the same bits. Settable for tests and benchmarks (not while a move runs).
  public static var streamingThreshold: Int {
    get { threshold }
    set { threshold = newValue }
  }

  nonisolated(unsafe) private static var threshold: Int = {
    var llc = Int(clamping: acon_last_level_cache_bytes())
    if llc <= 0 { llc = 16 << 20 }
    return Swift.max(1, llc / 8 * 3 / MemoryLayout<Float>.stride)
  }()

  /// Whether a move writing `floats` floats in all uses streaming stores.
  static func usesStreamingStores(floats: Int) -> Bool {
    floats >= streamingThreshold && acon_copy_has_streaming_stores()
  }

  /// Copies `count` floats, bit for bit: streaming stores (the caller fences after its last),
  /// memcpy, or a loop for runs too short for either to pay.
  @inline(__always)
  private static func move(
    _ to: UnsafeMutablePointer<Float>, _ from: UnsafePointer<Float>, count: Int, streaming: Bool
  ) {
    if count < 16 {
      for i in 0..<count { to[i] = from[i] }
    } else if streaming {
      acon_copy_streaming(to, from, count)
    } else {
      memcpy(to, from, count * MemoryLayout<Float>.stride)
    }
  }

  /// Channel shuffle with `groups` groups, as ShuffleNet's (reshape `[N, g, C/g, H·W]`, swap
  /// axes 1 and 2): `y[:, j·g + i] = x[:, i·(C/g) + j]` for i < g, j < C/g. With `inverse`,
  /// the inverse permutation (`y[:, i·(C/g) + j] = x[:, j·g + i]`), which is its backward.
  /// - Shapes: x, y `[batch, channels, plane]`, distinct; `groups` divides `channels`.
  public static func shuffle(
    _ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, batch: Int, channels: Int, plane: Int,
    groups: Int, inverse: Bool = false
  ) {
    precondition(groups > 0 && channels % groups == 0, "shuffle: \(groups) groups do not divide \(channels) channels")
    let per = channels / groups
    let streaming = usesStreamingStores(floats: batch * channels * plane)
    for i in 0..<groups {
      if inverse {
        copyPlanes(from: x, srcChannels: channels, srcStart: i, srcStep: groups, to: y, dstChannels: channels,
          dstStart: i * per, dstStep: 1, count: per, batch: batch, plane: plane, streaming: streaming)
      } else {
        copyPlanes(from: x, srcChannels: channels, srcStart: i * per, srcStep: 1, to: y, dstChannels: channels,
          dstStart: i, dstStep: groups, count: per, batch: batch, plane: plane, streaming: streaming)
      }
    }
  }

  /// `torch.cat(parts, 1)` into `y`: `[N, C₁, H, W], [N, C₂, H, W], … → [N, C₁ + C₂ + …, H, W]`
  /// (or `[N, C]`). One parallel loop over y's planes, one memcpy per part and sample.
  /// - Precondition: the shapes agree (`Graph` checks them and throws first).
  public static func concat(_ parts: [Tensor], into y: Tensor) {
    let (n, plane) = batchAndPlane(y)
    var start = 0
    for t in parts {
      let c = t.shape[1]
      precondition(t.count == n * c * plane, "concat: \(Shape.text(t.shape)) does not fit \(Shape.text(y.shape))")
      start += c
    }
    precondition(start == y.shape[1], "concat: the parts have \(start) channels, the output \(y.shape[1])")
    withUnsafeTemporaryAllocation(of: Part.self, capacity: parts.count) { list in
      for (k, t) in parts.enumerated() { list[k] = Part(data: t.data, channels: t.shape[1]) }
      tile(whole: y.data, channels: y.shape[1], parts: UnsafeBufferPointer(list), batch: n, plane: plane,
        gather: true, streaming: usesStreamingStores(floats: y.count))
    }
  }

  /// The backward of `concat`: slice `dy` `[N, ΣCᵢ, H, W]` back into `grads` (`[N, Cᵢ, H, W]`
  /// each, in order); a nil entry skips that slice.
  public static func concatBackward(_ dy: Tensor, into grads: [Tensor?]) {
    let (n, plane) = batchAndPlane(dy)
    let streaming = usesStreamingStores(floats: grads.reduce(0) { $0 + ($1?.count ?? 0) })
    withUnsafeTemporaryAllocation(of: Part.self, capacity: grads.count) { list in
      // A nil entry takes no channels (its width is unknown), as before.
      for (k, g) in grads.enumerated() { list[k] = Part(data: g?.data, channels: g?.shape[1] ?? 0) }
      tile(whole: dy.data, channels: dy.shape[1], parts: UnsafeBufferPointer(list), batch: n, plane: plane,
        gather: false, streaming: streaming)
    }
  }

  /// Splits `x` `[N, C, H, W]` (C even) into `a` and `b`, `[N, C/2, H, W]` each, as `mode` says.
  public static func split(_ x: Tensor, _ mode: ChannelSplit, into a: Tensor, _ b: Tensor) {
    let (n, plane) = batchAndPlane(x)
    let c = x.shape[1], half = c / 2
    precondition(c % 2 == 0 && a.count == x.count / 2 && b.count == x.count / 2, "split: shapes")
    if mode == .evenOdd {
      interleave(x.data, a.data, b.data, pairs: n * half, plane: plane, splitting: true)
      return
    }
    withUnsafeTemporaryAllocation(of: Part.self, capacity: 2) { list in
      list[0] = Part(data: a.data, channels: half)
      list[1] = Part(data: b.data, channels: half)
      tile(whole: x.data, channels: c, parts: UnsafeBufferPointer(list), batch: n, plane: plane, gather: false,
        streaming: usesStreamingStores(floats: x.count))
    }
  }

  /// The backward of `split`: writes `da` and `db` (`[N, C/2, H, W]`) into their channels of
  /// `dx` (`[N, C, H, W]`); a nil part's channels get zeros.
  public static func splitBackward(_ da: Tensor?, _ db: Tensor?, _ mode: ChannelSplit, into dx: Tensor) {
    let (n, plane) = batchAndPlane(dx)
    let c = dx.shape[1], half = c / 2
    if mode == .evenOdd, let da, let db {
      precondition(da.count == dx.count / 2 && db.count == dx.count / 2, "splitBackward: shapes")
      interleave(dx.data, da.data, db.data, pairs: n * half, plane: plane, splitting: false)
      return
    }
    if da == nil || db == nil { dx.zero() }
    let streaming = usesStreamingStores(floats: dx.count)
    precondition((da?.count ?? dx.count / 2) == dx.count / 2 && (db?.count ?? dx.count / 2) == dx.count / 2,
      "splitBackward: shapes")
    if mode == .halves {
      withUnsafeTemporaryAllocation(of: Part.self, capacity: 2) { list in
        list[0] = Part(data: da?.data, channels: half)
        list[1] = Part(data: db?.data, channels: half)
        tile(whole: dx.data, channels: c, parts: UnsafeBufferPointer(list), batch: n, plane: plane, gather: true,
          streaming: streaming)
      }
      return
    }
    for part in 0..<2 {
      guard let g = part == 0 ? da : db else { continue }
      copyPlanes(from: g.data, srcChannels: half, srcStart: 0, to: dx.data, dstChannels: c, dstStart: part,
        dstStep: 2, count: half, batch: n, plane: plane, streaming: streaming)
    }
  }

  /// One part of a concatenation or split: its data (`[N, channels, plane]`; nil: skipped) and
  /// its channel count.
  struct Part {
    var data: UnsafeMutablePointer<Float>?
    var channels: Int
  }

  /// Moves between `whole` (`[batch, channels, plane]`) and `parts`, whose channels tile the
  /// whole's in order (channels past the last part are left alone), in ONE parallel loop over
  /// the whole's planes: `gather` copies parts → whole (a concatenation), otherwise whole →
  /// parts (a split). One dispatch instead of one per part: at ShuffleNetV2's sizes a copy
  /// takes ~0.1 ms, where a second wake-up of the threads is a large share.
  /// - Shapes: whole `[batch, channels, plane]`, part k `[batch, parts[k].channels, plane]`.
  private static func tile(
    whole: UnsafeMutablePointer<Float>, channels: Int, parts: UnsafeBufferPointer<Part>, batch: Int, plane: Int,
    gather: Bool, streaming: Bool
  ) {
    let tiled = Swift.min(channels, parts.reduce(0) { $0 + $1.channels })
    if batch == 0 || plane == 0 || tiled == 0 { return }
    let w = UncheckedSendable(whole), ps = UncheckedSendable(parts)
    parallelFor(batch * channels, minimumChunk: Swift.max(1, 4096 / plane)) { r in
      var idx = r.lowerBound
      while idx < r.upperBound {
        let sample = idx / channels, ch = idx % channels
        if ch >= tiled {  // no part here: on to the next sample
          idx += channels - ch
          continue
        }
        var start = 0, k = 0
        while ch >= start + ps.value[k].channels { start += ps.value[k].channels; k += 1 }
        let c = ps.value[k].channels
        let run = Swift.min(r.upperBound - idx, start + c - ch)
        if let p = ps.value[k].data {
          let inWhole = w.value + idx * plane, inPart = p + (sample * c + ch - start) * plane
          if gather {
            move(inWhole, inPart, count: run * plane, streaming: streaming)
          } else {
            move(inPart, inWhole, count: run * plane, streaming: streaming)
          }
        }
        idx += run
      }
      if streaming { acon_copy_fence() }
    }
  }

  /// The even/odd split in one sequential pass over the whole tensor: pair p of planes
  /// (`whole[2p]`, `whole[2p + 1]`) goes to `a[p]` and `b[p]` (`splitting`), or comes back from
  /// them. Since C is even, the pairs never straddle samples.
  /// - Shapes: whole `[pairs · 2, plane]`; a, b `[pairs, plane]`.
  private static func interleave(
    _ whole: UnsafeMutablePointer<Float>, _ a: UnsafeMutablePointer<Float>, _ b: UnsafeMutablePointer<Float>,
    pairs: Int, plane: Int, splitting: Bool
  ) {
    let w = UncheckedSendable(whole), pa = UncheckedSendable(a), pb = UncheckedSendable(b)
    let streaming = usesStreamingStores(floats: 2 * pairs * plane)
    parallelFor(pairs, minimumChunk: Swift.max(1, 2048 / Swift.max(plane, 1))) { r in
      for p in r {
        let pair = w.value + 2 * p * plane, x = pa.value + p * plane, y = pb.value + p * plane
        if plane >= 16 {
          if splitting {
            move(x, pair, count: plane, streaming: streaming)
            move(y, pair + plane, count: plane, streaming: streaming)
          } else {
            move(pair, x, count: plane, streaming: streaming)
            move(pair + plane, y, count: plane, streaming: streaming)
          }
        } else {
          for i in 0..<plane {
            if splitting {
              x[i] = pair[i]
              y[i] = pair[plane + i]
            } else {
              pair[i] = x[i]
              pair[plane + i] = y[i]
            }
          }
        }
      }
      if streaming { acon_copy_fence() }
    }
  }

  /// N and H·W of an `[N, C, H, W]` or `[N, C]` tensor.
  static func batchAndPlane(_ t: Tensor) -> (Int, Int) {
    (t.shape[0], t.shape.count == 4 ? t.shape[2] * t.shape[3] : 1)
  }

  /// `y[i] = a[i] + b[i]` for i < count, in parallel; `y` may be `a` or `b`.
  public static func add(
    _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int
  ) {
    let pa = UncheckedSendable(a), pb = UncheckedSendable(b), py = UncheckedSendable(y)
    parallelFor(count, minimumChunk: 1 << 15) { r in
      for i in r { py.value[i] = pa.value[i] + pb.value[i] }
    }
  }
}

/// ShuffleNet's channel shuffle with `groups` groups as a layer:
/// `[N, C, H, W] → [N, C, H, W]` with `y[:, j·g + i] = x[:, i·(C/g) + j]` (PyTorch:
/// `x.view(N, g, C/g, H, W).transpose(1, 2).reshape(N, C, H, W)`). `[N, C]` inputs work as
/// 1×1 maps. No parameters; backward applies the inverse permutation.
public final class ChannelShuffle: Module {
  /// The number of groups g; it must divide the channel count.
  public let groups: Int
  private var output: Tensor?
  private var inputGrad: Tensor?

  /// - Parameter groups: g ≥ 1.
  public init(groups: Int) {
    precondition(groups > 0, "ChannelShuffle: groups must be positive, got \(groups)")
    self.groups = groups
    super.init()
  }

  public override func outputShape(for s: [Int]) throws -> [Int] {
    guard s.count == 4 || s.count == 2, s[1] % groups == 0 else {
      throw TensorError.shapeMismatch(layer: typeName, expected: "[N, C, H, W] with C a multiple of \(groups)", got: s)
    }
    return s
  }

  public override func forward(_ x: Tensor) throws -> Tensor {
    _ = try outputShape(for: x.shape)
    let y = reuseOutput(&output, shape: x.shape)
    ChannelOps.shuffle(x.data, into: y.data, batch: x.shape[0], channels: x.shape[1],
      plane: x.count / Swift.max(1, x.shape[0] * x.shape[1]), groups: groups)
    return y
  }

  /// Backward reads only dy: neither x nor y.
  public override var backwardReadsInput: Bool { false }
  public override var backwardReadsOutput: Bool { false }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    guard let y = output, dy.shape == y.shape else {
      throw backwardError(layer: "ChannelShuffle.backward", expected: output.map { Shape.text($0.shape) }, got: dy.shape)
    }
    let dx = reuseInputGradient(&inputGrad, shape: dy.shape)
    if propagatesInputGradient {
      ChannelOps.shuffle(dy.data, into: dx.data, batch: dy.shape[0], channels: dy.shape[1],
        plane: dy.count / Swift.max(1, dy.shape[0] * dy.shape[1]), groups: groups, inverse: true)
    }
    return dx
  }
}
