// UnfusedAconC: ACON-C as a framework's eager mode runs `acon.py`, the baseline that the fused
// kernels are compared with: one whole-tensor pass per operator, each a tight loop the compiler
// vectorises (σ by the kernels' own vectorised polynomial), split over the threads in chunks of
// at least 32768 elements (PyTorch's grain size), writing a temporary the size of x; backward as
// autograd runs the same graph, one pass per operator's backward, parameter gradients as a
// product pass and a per-channel sum. Temporaries are allocated once and reused as a caching
// allocator would, so that "fused vs unfused" measures fusion and nothing else.
//
// Shapes: x, y, dy, dx [N, C, HW]; p1, p2, β and their gradients [C].
import CAconKernels
import TensorCore

/// Whole-tensor passes over contiguous Float buffers.
enum Pass {
  /// PyTorch's `at::internal::GRAIN_SIZE`: the least elements a thread is given.
  static let grain = 32_768

  /// Splits `0..<count` over the threads and runs `body(lo, hi)` on each part.
  @inline(__always) static func chunks(_ count: Int, _ body: (Int, Int) -> Void) {
    parallelFor(count, minimumChunk: grain) { r in body(r.lowerBound, r.upperBound) }
  }

  /// o = a · b, elementwise.
  static func mul(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ o: UnsafeMutablePointer<Float>, count: Int) {
    chunks(count) { lo, hi in for i in lo..<hi { o[i] = a[i] * b[i] } }
  }

  /// o = a + b, elementwise.
  static func add(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ o: UnsafeMutablePointer<Float>, count: Int) {
    chunks(count) { lo, hi in for i in lo..<hi { o[i] = a[i] + b[i] } }
  }

  /// o = σ(a), elementwise (the ACON kernels' vectorised σ, as torch.sigmoid is vectorised).
  static func sigmoid(_ a: UnsafePointer<Float>, _ o: UnsafeMutablePointer<Float>, count: Int) {
    chunks(count) { lo, hi in acon_sigmoid(a + lo, o + lo, hi - lo) }
  }

  /// o = g · s · (1 − s): the backward of σ from its output s (`sigmoid_backward`).
  static func sigmoidBackward(_ g: UnsafePointer<Float>, _ s: UnsafePointer<Float>, _ o: UnsafeMutablePointer<Float>, count: Int) {
    chunks(count) { lo, hi in for i in lo..<hi { o[i] = g[i] * (s[i] * (1 - s[i])) } }
  }

  /// o[n, c, :] = v[c] · a[n, c, :]: a per-channel broadcast multiply over `planes` = N·C planes.
  static func scale(_ v: UnsafePointer<Float>, _ a: UnsafePointer<Float>, _ o: UnsafeMutablePointer<Float>, planes: Int, c: Int, hw: Int) {
    parallelFor(planes, minimumChunk: max(1, grain / hw)) { r in
      for plane in r {
        let k = v[plane % c], src = a + plane * hw, dst = o + plane * hw
        for j in 0..<hw { dst[j] = k * src[j] }
      }
    }
  }

  /// out[c] = Σ over N and HW of a[n, c, :] (`sum_to_size` of a broadcast parameter's gradient):
  /// per plane in 8 lanes, planes added in sample order.
  static func channelSum(_ a: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, n: Int, c: Int, hw: Int) {
    parallelFor(c, minimumChunk: max(1, grain / max(1, n * hw))) { r in
      for ch in r {
        var acc: Float = 0
        for s in 0..<n { acc += contiguousSum(a + (s * c + ch) * hw, count: hw) }
        out[ch] = acc
      }
    }
  }
}

/// The unfused ACON-C: `d = (p1 − p2)·x; y = d·σ(β·d) + p2·x`, one operator per pass.
final class UnfusedAconC {
  let n: Int, c: Int, hw: Int, count: Int
  /// Saved by forward for backward (as autograd saves them): d = k·x and s = σ(β·d).
  let d: Tensor, s: Tensor
  /// Scratch, reused between passes once a temporary is dead.
  let t1: Tensor, t2: Tensor, ta: Tensor, tb: Tensor, tc: Tensor, td: Tensor, te: Tensor
  /// k = p1 − p2, and per-channel sums.
  let k: Tensor, sumA: Tensor, sumB: Tensor

  /// Full-tensor passes (forward, backward) and the bytes they move per element: each
  /// elementwise pass reads its operands and writes its result once (4 bytes each), a channel
  /// sum reads once.
  static let passes = (forward: 6, backward: 14)
  static let passBytesPerElement = 56.0 + 132.0

  init(n: Int, c: Int, hw: Int) {
    (self.n, self.c, self.hw) = (n, c, hw)
    count = n * c * hw
    func buffer() -> Tensor { Tensor(zeros: [n * c * hw]) }
    (d, s) = (buffer(), buffer())
    (t1, t2, ta, tb, tc, td, te) = (buffer(), buffer(), buffer(), buffer(), buffer(), buffer(), buffer())
    (k, sumA, sumB) = (Tensor(zeros: [c]), Tensor(zeros: [c]), Tensor(zeros: [c]))
  }

  /// y = d·σ(β·d) + p2·x with d = (p1 − p2)·x: six passes.
  func forward(x: Tensor, y: Tensor, p1: Tensor, p2: Tensor, beta: Tensor) {
    let planes = n * c
    for ch in 0..<c { k.data[ch] = p1.data[ch] - p2.data[ch] }  // [C]
    Pass.scale(k.data, x.data, d.data, planes: planes, c: c, hw: hw)  // d = k·x
    Pass.scale(beta.data, d.data, t1.data, planes: planes, c: c, hw: hw)  // t = β·d
    Pass.sigmoid(t1.data, s.data, count: count)  // s = σ(t)
    Pass.mul(d.data, s.data, t1.data, count: count)  // a = d·s (t is dead)
    Pass.scale(p2.data, x.data, t2.data, planes: planes, c: c, hw: hw)  // b = p2·x
    Pass.add(t1.data, t2.data, y.data, count: count)  // y = a + b
  }

  /// Autograd's backward of the forward graph: dx overwritten, dp1, dp2, dβ accumulated (+=).
  func backward(x: Tensor, dy: Tensor, dx: Tensor, p1: Tensor, p2: Tensor, beta: Tensor, dp1: Tensor, dp2: Tensor, dbeta: Tensor) {
    let planes = n * c
    // b = p2·x: ∂x = p2·dy; ∂p2 = Σ dy·x.
    Pass.scale(p2.data, dy.data, ta.data, planes: planes, c: c, hw: hw)
    Pass.mul(dy.data, x.data, tb.data, count: count)
    Pass.channelSum(tb.data, into: sumB.data, n: n, c: c, hw: hw)
    // a = d·s: ∂d = dy·s; ∂s = dy·d.
    Pass.mul(dy.data, s.data, tc.data, count: count)
    Pass.mul(dy.data, d.data, tb.data, count: count)
    // s = σ(t): ∂t = ∂s·s(1 − s).
    Pass.sigmoidBackward(tb.data, s.data, td.data, count: count)
    // t = β·d: ∂d += β·∂t; ∂β = Σ ∂t·d.
    Pass.scale(beta.data, td.data, tb.data, planes: planes, c: c, hw: hw)
    Pass.mul(td.data, d.data, te.data, count: count)
    Pass.channelSum(te.data, into: sumA.data, n: n, c: c, hw: hw)
    for ch in 0..<c { dbeta.data[ch] += sumA.data[ch] }
    Pass.add(tc.data, tb.data, td.data, count: count)  // ∂d, accumulated from its two uses
    // d = k·x: ∂x += k·∂d; ∂k = Σ ∂d·x; k = p1 − p2.
    Pass.scale(k.data, td.data, tb.data, planes: planes, c: c, hw: hw)
    Pass.mul(td.data, x.data, tc.data, count: count)
    Pass.channelSum(tc.data, into: sumA.data, n: n, c: c, hw: hw)
    Pass.add(ta.data, tb.data, dx.data, count: count)  // ∂x, accumulated from its two uses
    for ch in 0..<c {
      dp1.data[ch] += sumA.data[ch]
      dp2.data[ch] += sumB.data[ch] - sumA.data[ch]
    }
  }
}
