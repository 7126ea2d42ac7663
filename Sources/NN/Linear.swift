// Linear: a fully connected layer on sgemm.
//
// Shapes: x [N, in], weight [out, in] (PyTorch's layout), bias [out], y [N, out].
import TensorCore

/// A fully connected layer: `y = x · weightᵀ + bias`.
///
/// Parameters are named `weight` `[out, in]` and `bias` `[out]`.
public final class Linear: Module {
  /// Input features.
  public let inFeatures: Int
  /// Output features.
  public let outFeatures: Int
  /// `[out, in]`.
  public let weight: Parameter
  /// `[out]`, or nil.
  public let bias: Parameter?

  private var output: Tensor?
  private var inputGrad: Tensor?
  private var input: Tensor?

  /// - Parameters:
  ///   - inFeatures: the size of each input row.
  ///   - outFeatures: the size of each output row.
  ///   - bias: whether to add a learnable bias.
  ///   - weightInit: PyTorch's default U(−1/√in, 1/√in), or orthogonal.
  ///   - rng: the generator that draws the initial weights.
  public init(
    inFeatures: Int, outFeatures: Int, bias: Bool = true, weightInit: WeightInit = .pytorchDefault,
    rng: inout SeededGenerator
  ) {
    precondition(inFeatures > 0 && outFeatures > 0, "Linear: feature counts must be positive")
    self.inFeatures = inFeatures
    self.outFeatures = outFeatures
    self.weight = Parameter(Tensor(zeros: [outFeatures, inFeatures]))
    self.bias = bias ? Parameter(Tensor(zeros: [outFeatures]), decays: false) : nil
    super.init()
    weightInit.initialize(weight: weight.value, bias: self.bias?.value, using: &rng)
  }

  public override var localParameters: [(String, Parameter)] {
    var p = [("weight", weight)]
    if let b = bias { p.append(("bias", b)) }
    return p
  }

  public override func outputShape(for s: [Int]) throws -> [Int] {
    guard s.count == 2, s[1] == inFeatures else {
      throw TensorError.shapeMismatch(layer: typeName, expected: "[N, \(inFeatures)]", got: s)
    }
    return [s[0], outFeatures]
  }

  public override func forward(_ x: Tensor) throws -> Tensor {
    let ys = try outputShape(for: x.shape)
    let y = reuseOutput(&output, shape: ys)
    input = x
    let n = ys[0]
    // y[N, out] = x[N, in] · Wᵀ[in, out]
    BLAS.sgemm(transB: true, m: n, n: outFeatures, k: inFeatures, a: x.data, b: weight.value.data, c: y.data)
    if let b = bias?.value.data {
      for s in 0..<n {
        let row = y.data + s * outFeatures
        for o in 0..<outFeatures { row[o] += b[o] }
      }
    }
    return y
  }

  /// Backward reads the saved input (and the parameters), not the output.
  public override var backwardReadsOutput: Bool { false }

  public override func backward(_ dy: Tensor) throws -> Tensor {
    guard let x = input, let ys = output?.shape, dy.shape == ys else {
      throw backwardError(layer: typeName + ".backward",
        expected: output.map { Shape.text($0.shape) }, got: dy.shape)
    }
    let n = ys[0]
    // dW[out, in] += dyᵀ[out, N] · x[N, in]
    BLAS.sgemm(transA: true, m: outFeatures, n: inFeatures, k: n, a: dy.data, b: x.data, beta: 1, c: weight.grad.data)
    if let db = bias?.grad.data {
      for s in 0..<n {
        let row = dy.data + s * outFeatures
        for o in 0..<outFeatures { db[o] += row[o] }
      }
    }
    let dx = reuseInputGradient(&inputGrad, shape: x.shape)
    if propagatesInputGradient {
      // dx[N, in] = dy[N, out] · W[out, in]
      BLAS.sgemm(m: n, n: inFeatures, k: outFeatures, a: dy.data, b: weight.value.data, c: dx.data)
    }
    return dx
  }
}
