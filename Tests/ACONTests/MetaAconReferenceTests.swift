// MetaAconReferenceTests: the Double reference of the whole Meta-ACON-C layer
// (AconReference.metaAconC), which acon-bench checks the layer against before timing it: its
// gradients against central differences of its own Double forward at a tight tolerance, and the
// Float layer's forward and every gradient against it.
import ACON
import NN
import TensorCore
import TestSupport
import XCTest

final class MetaAconReferenceTests: XCTestCase {
  /// A layer with every parameter drawn in [−1, 1), its parameters by name, and x, dy.
  private func makeCase(_ shape: [Int], bn: Bool, seed: UInt64)
    -> (meta: MetaAconC, params: [String: [Float]], x: [Float], dy: [Float])
  {
    var rng = SeededGenerator(seed: seed)
    let meta = MetaAconC(channels: shape[1], r: 2, useBatchNorm: bn, rng: &rng)
    randomizeParameters(meta, -1, 1, using: &rng)
    let params = Dictionary(uniqueKeysWithValues: meta.namedParameters().map { ($0.0, $0.1.value.array) })
    return (meta, params, Tensor.normal(shape, using: &rng).array, Tensor.normal(shape, using: &rng).array)
  }

  func testReferenceGradientsMatchCentralDifferences() {
    for (shape, bn) in [([3, 4, 2, 3], true), ([2, 5, 3, 1], false), ([4, 3, 1, 1], true)] {
      let (n, c, hw) = (shape[0], shape[1], shape[2] * shape[3])
      let (_, params, x, dy) = makeCase(shape, bn: bn, seed: 21)
      let ref = AconReference.metaAconC(x: x, dy: dy, n: n, c: c, hw: hw, parameters: params)
      XCTAssertEqual(Set(ref.gradients.keys), Set(params.keys), "every parameter has a gradient")
      // L = Σ dy·y, so that ∂L/∂v is the backward pass's gradient of v.
      func loss(_ x: [Float], _ params: [String: [Float]]) -> Double {
        let y = AconReference.metaAconC(x: x, dy: dy, n: n, c: c, hw: hw, parameters: params).y
        return zip(dy, y).reduce(0) { $0 + Double($1.0) * $1.1 }
      }
      // The step as the Float inputs can hold it: (L(v + h) − L(v − h)) / (v⁺ − v⁻).
      func central(_ v: Float, _ at: (Float) -> Double) -> Double {
        let up = v + 1e-4, down = v - 1e-4
        return (at(up) - at(down)) / (Double(up) - Double(down))
      }
      let scale = max(1, ref.dx.map(abs).max()!)
      for i in 0..<x.count {
        let numeric = central(x[i]) { v in
          var xs = x
          xs[i] = v
          return loss(xs, params)
        }
        XCTAssertEqual(ref.dx[i], numeric, accuracy: 1e-6 * scale, "dx[\(i)] \(shape) bn \(bn)")
      }
      for (name, values) in params {
        let want = ref.gradients[name]!
        let scale = max(1, want.map(abs).max()!)
        for j in 0..<values.count {
          let numeric = central(values[j]) { v in
            var p = params
            p[name]![j] = v
            return loss(x, p)
          }
          XCTAssertEqual(want[j], numeric, accuracy: 1e-6 * scale, "\(name)[\(j)] \(shape) bn \(bn)")
        }
      }
    }
  }

  func testLayerMatchesReference() throws {
    for (shape, bn) in [([4, 8, 3, 3], true), ([3, 6, 5, 2], false), ([2, 5, 1, 1], true), ([5, 1, 7, 3], true)] {
      let (n, c, hw) = (shape[0], shape[1], shape[2] * shape[3])
      let (meta, params, x, dy) = makeCase(shape, bn: bn, seed: 22)
      meta.train()
      meta.zeroGrad()
      let y = try meta.forward(Tensor(shape: shape, values: x))
      let dx = try meta.backward(Tensor(shape: shape, values: dy))
      let ref = AconReference.metaAconC(x: x, dy: dy, n: n, c: c, hw: hw, parameters: params)
      let tag = "\(shape) bn \(bn)"
      assertClose(meta.lastBeta!.array, ref.beta, rtol: 1e-4, atol: 1e-5, "β \(tag)")
      assertClose(y.array, ref.y, rtol: 1e-4, atol: 1e-5, "y \(tag)")
      assertClose(dx.array, ref.dx, rtol: 1e-4, atol: 1e-4, "dx \(tag)")
      let scale = ref.gradients.values.map { $0.map(abs).max()! }.max()!
      for (name, p) in meta.namedParameters() {
        assertClose(p.grad.array, ref.gradients[name]!, rtol: 1e-3, atol: 1e-4 * scale, "\(name) \(tag)")
      }
    }
  }
}
