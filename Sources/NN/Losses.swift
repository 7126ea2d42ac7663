// Losses: softmax cross-entropy (fused, stable, with label smoothing), binary cross-entropy with logits, and mean
// squared error. Each returns the mean loss over the batch and its gradient with respect to the
// input (`valueAndGradient`), ready for `model.backward`; the gradient is owned by the loss and
// overwritten by its next call.
import TensorCore

#if canImport(Glibc)
  import Glibc
#elseif canImport(Musl)
  import Musl
#elseif canImport(Darwin)
  import Darwin
#endif

/// A loss over class logits and integer labels, as the `Trainer` uses it.
public protocol ClassificationLoss: AnyObject {
  /// The mean loss over the batch and its gradient with respect to `logits` (same shape, owned
  /// by the loss and overwritten by its next call). `labels` holds one class index per row.
  func valueAndGradient(_ logits: Tensor, labels: [Int32]) throws -> (value: Float, gradient: Tensor)
}

/// Softmax cross-entropy over class logits, averaged over the batch, with optional label
/// smoothing ε (PyTorch's `CrossEntropyLoss(label_smoothing=ε)`):
///
/// ```
/// loss = (1/N) Σ_n [ (1 − ε)·(−log p_n[t_n]) + (ε/K) Σ_j (−log p_n[j]) ],   p_n = softmax(z_n)
/// ∂loss/∂z_n = (p_n − ((1 − ε)·onehot(t_n) + ε/K)) / N
/// ```
/// Shapes: logits `[N, K]`, labels `N` integers in `0..<K`.
public final class CrossEntropyLoss: ClassificationLoss {
  /// The gradient with respect to the logits from the last call, `[N, K]`.
  public private(set) var gradient: Tensor?
  /// ε in [0, 1]: the weight moved from the target class to the uniform distribution (0: plain).
  public var labelSmoothing: Float {
    didSet { precondition(labelSmoothing >= 0 && labelSmoothing <= 1, "CrossEntropyLoss: label smoothing must be in [0, 1]") }
  }

  /// A loss with no gradient yet.
  /// - Parameter labelSmoothing: ε in [0, 1] (0: none).
  public init(labelSmoothing: Float = 0) {
    precondition(labelSmoothing >= 0 && labelSmoothing <= 1, "CrossEntropyLoss: label smoothing must be in [0, 1]")
    self.labelSmoothing = labelSmoothing
  }

  /// The mean loss; also stores the gradient in `gradient`.
  public func callAsFunction(_ logits: Tensor, labels: [Int32]) throws -> Float {
    try valueAndGradient(logits, labels: labels).value
  }

  /// The mean loss and its gradient with respect to the logits, `[N, K]` (owned by the loss,
  /// overwritten by its next call): `let (loss, dy) = try ce.valueAndGradient(logits, labels: labels)`,
  /// then `try model.backward(dy)`.
  public func valueAndGradient(_ logits: Tensor, labels: [Int32]) throws -> (value: Float, gradient: Tensor) {
    guard logits.shape.count == 2, logits.shape[0] == labels.count else {
      throw TensorError.shapeMismatch(layer: "CrossEntropyLoss", expected: "[\(labels.count), K] logits", got: logits.shape)
    }
    let n = logits.shape[0], k = logits.shape[1]
    let g = reuse(&gradient, shape: logits.shape)
    let eps = labelSmoothing
    var total = 0.0
    for i in 0..<n {
      let t = Int(labels[i])
      guard t >= 0 && t < k else {
        throw TensorError.invalidArgument("CrossEntropyLoss: label \(t) of sample \(i) is outside 0..<\(k)")
      }
      let z = logits.data + i * k, d = g.data + i * k
      var mx = -Float.infinity
      for j in 0..<k { mx = Swift.max(mx, z[j]) }
      if z[0].isNaN || mx.isNaN { mx = .nan }
      var sum: Float = 0
      for j in 0..<k { d[j] = expf(z[j] - mx); sum += d[j] }
      let logSum = logf(sum)
      let nllTarget = Double(logSum - (z[t] - mx))
      if eps == 0 {
        total += nllTarget
      } else {
        // Σ_j −log p_j = K·log Σ − Σ_j (z_j − max).
        var shifted = 0.0
        for j in 0..<k { shifted += Double(z[j] - mx) }
        let nllAll = Double(k) * Double(logSum) - shifted
        total += (1 - Double(eps)) * nllTarget + Double(eps) / Double(k) * nllAll
      }
      let inv = 1 / (sum * Float(n))
      for j in 0..<k { d[j] *= inv }
      if eps == 0 {
        d[t] -= 1 / Float(n)
      } else {
        let uniform = eps / Float(k) / Float(n)
        for j in 0..<k { d[j] -= uniform }
        d[t] -= (1 - eps) / Float(n)
      }
    }
    return (Float(total / Double(n)), g)
  }
}

/// Binary cross-entropy on logits, averaged over all elements (PyTorch's `BCEWithLogitsLoss`).
///
/// ```
/// loss = (1/M) Σ max(z, 0) − z·t + log(1 + e^(−|z|))      ∂loss/∂z = (σ(z) − t) / M
/// ```
/// Shapes: logits any shape with M elements (`[N, 1]` for one class); targets M values in [0, 1].
public final class BCEWithLogitsLoss: ClassificationLoss {
  /// The gradient with respect to the logits from the last call.
  public private(set) var gradient: Tensor?
  private var labelTargets: [Float] = []
  /// A loss with no gradient yet.
  public init() {}

  /// The mean loss; also stores the gradient in `gradient`.
  public func callAsFunction(_ logits: Tensor, targets: [Float]) throws -> Float {
    try valueAndGradient(logits, targets: targets).value
  }

  /// For a one-logit binary classifier (`[N, 1]` logits): labels 0 or 1 as targets. Any other
  /// label is an error naming it.
  public func valueAndGradient(_ logits: Tensor, labels: [Int32]) throws -> (value: Float, gradient: Tensor) {
    labelTargets.removeAll(keepingCapacity: true)
    for (i, l) in labels.enumerated() {
      guard l == 0 || l == 1 else {
        throw TensorError.invalidArgument("BCEWithLogitsLoss: a one-output (binary) model needs labels 0 or 1, got \(l) for sample \(i)")
      }
      labelTargets.append(Float(l))
    }
    return try valueAndGradient(logits, targets: labelTargets)
  }

  /// The mean loss and its gradient with respect to the logits (same shape; owned by the loss,
  /// overwritten by its next call).
  public func valueAndGradient(_ logits: Tensor, targets: [Float]) throws -> (value: Float, gradient: Tensor) {
    guard logits.count == targets.count else {
      throw TensorError.shapeMismatch(layer: "BCEWithLogitsLoss", expected: "\(targets.count) logits", got: logits.shape)
    }
    let m = logits.count
    let g = reuse(&gradient, shape: logits.shape)
    var total = 0.0
    for i in 0..<m {
      let z = logits.data[i], t = targets[i]
      total += Double(Swift.max(z, 0) - z * t + log1pf(expf(-Swift.abs(z))))
      g.data[i] = (stableSigmoid(z) - t) / Float(m)
    }
    return (Float(total / Double(m)), g)
  }
}

/// Mean squared error over all elements (PyTorch's `MSELoss`).
///
/// ```
/// loss = (1/M) Σ (y − t)²      ∂loss/∂y = 2 (y − t) / M
/// ```
/// Shapes: predictions and targets of the same shape.
public final class MSELoss {
  /// The gradient with respect to the predictions from the last call.
  public private(set) var gradient: Tensor?
  /// A loss with no gradient yet.
  public init() {}

  /// The mean loss; also stores the gradient in `gradient`.
  public func callAsFunction(_ prediction: Tensor, target: Tensor) throws -> Float {
    try valueAndGradient(prediction, target: target).value
  }

  /// The mean loss and its gradient with respect to the predictions (same shape; owned by the
  /// loss, overwritten by its next call).
  public func valueAndGradient(_ prediction: Tensor, target: Tensor) throws -> (value: Float, gradient: Tensor) {
    guard prediction.shape == target.shape else {
      throw TensorError.shapeMismatch(layer: "MSELoss", expected: Shape.text(target.shape), got: prediction.shape)
    }
    let m = prediction.count
    let g = reuse(&gradient, shape: prediction.shape)
    var total = 0.0
    for i in 0..<m {
      let d = prediction.data[i] - target.data[i]
      total += Double(d * d)
      g.data[i] = 2 * d / Float(m)
    }
    return (Float(total / Double(m)), g)
  }
}
