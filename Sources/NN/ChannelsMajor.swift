// ChannelsMajor: the batch order that `Sequential` runs some containers in, each channel's N
// planes one after the other. A 1×1 convolution is then one GEMM over the whole batch, with no
// layout copies around it, and a batch norm's channel one contiguous run; the container reorders
// its input once on the way in and its output once on the way out (and the gradients likewise).
//
// Shapes: an NCHW batch [N, C, H, W] is stored channels-major as the one-sample tensor
// [1, C, N·H, W]: element (n, c, i, j) at ((c·N + n)·H + i)·W + j.
import CCopyKernels
import TensorCore

enum ChannelsMajor {
  /// The channels-major shape [1, C, N·H, W] of an NCHW shape [N, C, H, W].
  static func shape(of s: [Int]) -> [Int] { [1, s[1], s[0] * s[2], s[3]] }

  /// The NCHW shape [N, C, H, W] of a channels-major shape [1, C, N·H, W] holding N samples.
  static func batchShape(of s: [Int], samples n: Int) -> [Int] { [n, s[1], s[2] / n, s[3]] }

  /// Copies the planes of `from` into `to`, reordering them between NCHW [N, C, P] and
  /// channels-major [C, N, P] (P = H·W): `toChannelsMajor` reads NCHW and writes channels-major,
  /// otherwise the reverse. Both hold N·C·P floats. In parallel over channels.
  static func reorder(
    _ from: UnsafePointer<Float>, into to: UnsafeMutablePointer<Float>, samples n: Int, channels c: Int, plane p: Int,
    toChannelsMajor: Bool
  ) {
    let src = UncheckedSendable(from), dst = UncheckedSendable(to)
    parallelFor(c, minimumChunk: Swift.max(1, 16384 / Swift.max(1, n * p))) { range in
      for ci in range {
        for s in 0..<n {
          // plane (s, ci): at (s·C + ci)·P in NCHW, at (ci·N + s)·P channels-major
          let nchw = (s * c + ci) * p, major = (ci * n + s) * p
          if toChannelsMajor {
            (dst.value + major).update(from: src.value + nchw, count: p)
          } else {
            (dst.value + nchw).update(from: src.value + major, count: p)
          }
        }
      }
    }
  }

  /// `reorder` in place: planes [N, C, P] to [C, N, P] (`cycles.toChannelsMajor`) or back,
  /// following the permutation's cycles (`PlaneCycles`, worked out once per shape): each plane
  /// moves once, the first of a cycle through a scratch plane. The cycles are split over up to
  /// `Threads.count` workers by their total length, each with its own scratch plane; the result is
  /// the same bits whatever the split. `scratch` holds `Threads.count`·P floats.
  static func reorderInPlace(
    _ data: UnsafeMutablePointer<Float>, plane p: Int, cycles: PlaneCycles, scratch: UnsafeMutablePointer<Float>
  ) {
    let count = cycles.starts.count - 1, total = cycles.starts[count]
    guard count > 0 else { return }
    // Workers of at least 16 Ki floats moved each (as `reorder`), at most one per cycle.
    let workers = Swift.min(Threads.count, count, Swift.max(1, total * p / 16_384))
    let base = UncheckedSendable(data), spare = UncheckedSendable(scratch)
    cycles.planes.withUnsafeBufferPointer { order in
      cycles.starts.withUnsafeBufferPointer { starts in
        let o = UncheckedSendable(order.baseAddress!), st = UncheckedSendable(starts)
        // Worker w takes the cycles that start in [w·total/workers, (w + 1)·total/workers) of
        // the list: from the first cycle starting at or past w·total/workers.
        func firstCycle(_ w: Int) -> Int {
          let bound = w * total / workers
          var (lo, hi) = (0, count)
          while lo < hi {
            let mid = (lo + hi) / 2
            if st.value[mid] < bound { lo = mid + 1 } else { hi = mid }
          }
          return lo
        }
        parallelFor(workers, minimumChunk: 1) { range in
          for w in range {
            let tmp = spare.value + w * p
            for cycle in firstCycle(w)..<(w + 1 == workers ? count : firstCycle(w + 1)) {
              // planes t0, t1, …, tL−1: t_i takes t_i+1's plane, the last takes t0's.
              let lo = st.value[cycle], hi = st.value[cycle + 1]
              acon_move_plane_cycle(base.value, o.value + lo, hi - lo, p, tmp)
            }
          }
        }
      }
    }
  }
}

/// The cycles of the plane permutation that reorders N·C planes in place between NCHW and
/// channels-major (`ChannelsMajor.reorderInPlace`), in the order their planes move: cycle k is
/// `planes[starts[k]..<starts[k + 1]]`, whose position `planes[i]` takes the plane at
/// `planes[i + 1]`, and its last the plane at its first. Planes that stay put are left out.
struct PlaneCycles {
  /// Batch size N and channels C.
  let samples: Int, channels: Int
  /// NCHW → channels-major, or back.
  let toChannelsMajor: Bool
  /// The moving planes, cycle after cycle.
  let planes: [Int32]
  /// Where each cycle starts in `planes`, then `planes.count`.
  let starts: [Int]

  /// The cycles of the reorder of `samples`·`channels` planes.
  init(samples n: Int, channels c: Int, toChannelsMajor: Bool) {
    (samples, channels, self.toChannelsMajor) = (n, c, toChannelsMajor)
    // Planes [a, b] transposed to [b, a]: position t = j·a + i takes the plane at i·b + j
    // (channels-major → NCHW: a = C, b = N; NCHW → channels-major: a = N, b = C).
    let (a, b) = toChannelsMajor ? (n, c) : (c, n)
    func source(_ t: Int) -> Int { (t % a) * b + t / a }
    var moved = [Bool](repeating: false, count: n * c)
    var planes: [Int32] = [], starts: [Int] = []
    for start in 0..<(n * c) where !moved[start] && source(start) != start {
      starts.append(planes.count)
      var t = start
      repeat {
        planes.append(Int32(t))
        moved[t] = true
        t = source(t)
      } while t != start
    }
    starts.append(planes.count)
    (self.planes, self.starts) = (planes, starts)
  }

  /// Whether these are the cycles of that reorder.
  func matches(samples n: Int, channels c: Int, toChannelsMajor: Bool) -> Bool {
    samples == n && channels == c && self.toChannelsMajor == toChannelsMajor
  }
}
