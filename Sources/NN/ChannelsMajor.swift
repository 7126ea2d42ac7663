// ChannelsMajor: the batch order that `Sequential` runs some containers in, each channel's N
// planes one after the other. A 1×1 convolution is then one GEMM over the whole batch, with no
// layout copies around it, and a batch norm's channel one contiguous run; the container reorders
// its input once on the way in and its output once on the way out (and the gradients likewise).
//
// Shapes: an NCHW batch [N, C, H, W] is stored channels-major as the one-sample tensor
// [1, C, N·H, W]: element (n, c, i, j) at ((c·N + n)·H + i)·W + j.
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

  /// `reorder` in place: planes [N, C, P] to [C, N, P] (`toChannelsMajor`) or back, following the
  /// permutation's cycles: each plane moves once, the first of a cycle through `scratch` (P
  /// floats); `moved` holds N·C flags (any values on entry). One thread.
  static func reorderInPlace(
    _ data: UnsafeMutablePointer<Float>, samples n: Int, channels c: Int, plane p: Int, toChannelsMajor: Bool,
    scratch: UnsafeMutablePointer<Float>, moved: UnsafeMutablePointer<Bool>
  ) {
    let planes = n * c
    moved.update(repeating: false, count: planes)
    // Planes [a, b] transposed to [b, a]: position t = j·a + i takes the plane at i·b + j
    // (channels-major → NCHW: a = C, b = N; NCHW → channels-major: a = N, b = C).
    let (a, b) = toChannelsMajor ? (n, c) : (c, n)
    func source(_ t: Int) -> Int { (t % a) * b + t / a }
    for start in 0..<planes where !moved[start] {
      var t = start, from = source(start)
      if from == start {
        moved[start] = true
        continue
      }
      scratch.update(from: data + start * p, count: p)
      while from != start {
        (data + t * p).update(from: data + from * p, count: p)
        moved[t] = true
        t = from
        from = source(t)
      }
      (data + t * p).update(from: scratch, count: p)
      moved[t] = true
    }
  }
}
