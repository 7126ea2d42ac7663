// Reference: naive Double-precision twins of every fast kernel and layer, written by definition
// with nested loops (Caffe's `caffe_conv`, llm.c's `matmul_forward_naive`). They are slow and
// obviously right; tests compare the optimised Float code with them.
//
// Layouts match the layers: images NCHW, conv weight [Cout, Cin, K, K], linear weight [out, in].
// Backward functions take dy and return fresh gradients (they never accumulate).
import Foundation
import TensorCore

/// Namespace of naive reference implementations in Double precision.
public enum Reference {
  // MARK: - Matrix products

  /// `C = alpha · op(A) · op(B) + beta · C` by a triple loop, row-major, with BLAS.sgemm's
  /// storage conventions: A is `[K, M]` when `transA` else `[M, K]`; B is `[N, K]` when
  /// `transB` else `[K, N]`; C is `[M, N]`. With `beta == 0`, C's old values are ignored.
  public static func gemm(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Double = 1,
    a: [Double], b: [Double], beta: Double = 0, c: [Double]
  ) -> [Double] {
    var out = [Double](repeating: 0, count: m * n)
    for i in 0..<m {
      for j in 0..<n {
        var s = 0.0
        for p in 0..<k {
          let av = transA ? a[p * m + i] : a[i * k + p]
          let bv = transB ? b[j * k + p] : b[p * n + j]
          s += av * bv
        }
        out[i * n + j] = alpha * s + (beta == 0 ? 0 : beta * c[i * n + j])
      }
    }
    return out
  }

  /// `[M, K] · [K, N] → [M, N]`.
  public static func matmul(_ a: DoubleTensor, _ b: DoubleTensor) -> DoubleTensor {
    precondition(a.shape.count == 2 && b.shape.count == 2 && a.shape[1] == b.shape[0], "matmul shapes")
    let (m, k, n) = (a.shape[0], a.shape[1], b.shape[1])
    return DoubleTensor(shape: [m, n],
      values: gemm(transA: false, transB: false, m: m, n: n, k: k, a: a.values, b: b.values, c: []))
  }

  /// `y[n, o] = bias[o] + Σ_i x[n, i] · w[o, i]`; x `[N, in]`, w `[out, in]`.
  public static func linear(_ x: DoubleTensor, weight w: DoubleTensor, bias: DoubleTensor?) -> DoubleTensor {
    let (n, fin, fout) = (x.shape[0], x.shape[1], w.shape[0])
    precondition(w.shape[1] == fin, "linear: weight \(w.shape) vs input \(x.shape)")
    var y = DoubleTensor(zeros: [n, fout])
    for s in 0..<n {
      for o in 0..<fout {
        var acc = bias?[o] ?? 0
        for i in 0..<fin { acc += x[s * fin + i] * w[o * fin + i] }
        y[s * fout + o] = acc
      }
    }
    return y
  }

  /// Gradients of `linear` for output gradient dy `[N, out]`.
  public static func linearBackward(
    _ x: DoubleTensor, weight w: DoubleTensor, dy: DoubleTensor
  ) -> (dx: DoubleTensor, dw: DoubleTensor, db: DoubleTensor) {
    let (n, fin, fout) = (x.shape[0], x.shape[1], w.shape[0])
    var dx = DoubleTensor(zeros: x.shape), dw = DoubleTensor(zeros: w.shape), db = DoubleTensor(zeros: [fout])
    for s in 0..<n {
      for o in 0..<fout {
        let g = dy[s * fout + o]
        db[o] += g
        for i in 0..<fin {
          dx[s * fin + i] += g * w[o * fin + i]
          dw[o * fin + i] += g * x[s * fin + i]
        }
      }
    }
    return (dx, dw, db)
  }

  // MARK: - Convolution

  /// Output size of a window of size k with stride and padding over `size` inputs (floor mode).
  public static func outSize(_ size: Int, k: Int, stride: Int, padding: Int) -> Int {
    (size + 2 * padding - k) / stride + 1
  }

  /// Direct convolution by definition:
  /// `y[n,o,i,j] = b[o] + Σ_{c,u,v} w[o,c,u,v] · x[n, c, i·s − p + u, j·s − p + v]`, zero padding:
  /// `groupedConv2d` with one group and square stride and padding.
  public static func conv2d(
    _ x: DoubleTensor, weight w: DoubleTensor, bias: DoubleTensor?, stride s: Int, padding p: Int
  ) -> DoubleTensor {
    precondition(w.shape[1] == x.shape[1], "conv2d: weight \(w.shape) vs input \(x.shape)")
    return groupedConv2d(x, weight: w, bias: bias, stride: (s, s), padding: (p, p), groups: 1)
  }

  /// Gradients of `conv2d` for output gradient dy `[N, Cout, OH, OW]` (`groupedConv2dBackward`).
  public static func conv2dBackward(
    _ x: DoubleTensor, weight w: DoubleTensor, dy: DoubleTensor, stride s: Int, padding p: Int
  ) -> (dx: DoubleTensor, dw: DoubleTensor, db: DoubleTensor) {
    groupedConv2dBackward(x, weight: w, dy: dy, stride: (s, s), padding: (p, p), groups: 1)
  }

  /// The column matrix of one sample `[C, H, W]` by definition: row `(c·KH + u)·KW + v`,
  /// column `i·OW + j` holds `x[c, i·sH − pH + u, j·sW − pW + v]` (0 outside).
  public static func im2col(_ x: [Double], _ g: ConvGeometry) -> [Double] {
    let (oh, ow) = (g.outH, g.outW)
    var col = [Double](repeating: 0, count: g.colRows * oh * ow)
    for c in 0..<g.channels {
      for u in 0..<g.kernelH {
        for v in 0..<g.kernelW {
          let row = (c * g.kernelH + u) * g.kernelW + v
          for i in 0..<oh {
            for j in 0..<ow {
              let r = i * g.strideH - g.padH + u, q = j * g.strideW - g.padW + v
              if r >= 0 && r < g.height && q >= 0 && q < g.width {
                col[row * oh * ow + i * ow + j] = x[(c * g.height + r) * g.width + q]
              }
            }
          }
        }
      }
    }
    return col
  }

  /// The adjoint of `im2col` by definition: each column entry `col[(c·KH + u)·KW + v, i·OW + j]`
  /// adds into `dx[c, i·sH − pH + u, j·sW − pW + v]` (dropped in the padding). `col` is one
  /// sample's `[C·KH·KW, OH·OW]`; the result is `[C, H, W]`.
  public static func col2im(_ col: [Double], _ g: ConvGeometry) -> [Double] {
    let (oh, ow) = (g.outH, g.outW)
    var dx = [Double](repeating: 0, count: g.channels * g.height * g.width)
    for c in 0..<g.channels {
      for u in 0..<g.kernelH {
        for v in 0..<g.kernelW {
          let row = (c * g.kernelH + u) * g.kernelW + v
          for i in 0..<oh {
            for j in 0..<ow {
              let r = i * g.strideH - g.padH + u, q = j * g.strideW - g.padW + v
              if r >= 0 && r < g.height && q >= 0 && q < g.width {
                dx[(c * g.height + r) * g.width + q] += col[row * oh * ow + i * ow + j]
              }
            }
          }
        }
      }
    }
    return dx
  }

  // MARK: - Pooling

  /// Max pooling, padding reads as −∞ (PyTorch); windows `k × k` with stride and padding.
  public static func maxPool2d(_ x: DoubleTensor, k: Int, stride s: Int, padding p: Int) -> DoubleTensor {
    maxPool2dWithIndices(x, k: k, stride: s, padding: p).y
  }

  /// Max pooling plus, per output, the flat input index of the *first* maximum in its window
  /// (row-major window order), which is where the gradient goes. A NaN is taken wherever it comes
  /// (PyTorch's rule), so a window with NaNs ends on its last one.
  public static func maxPool2dWithIndices(
    _ x: DoubleTensor, k: Int, stride s: Int, padding p: Int
  ) -> (y: DoubleTensor, argmax: [Int]) {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let oh = outSize(h, k: k, stride: s, padding: p), ow = outSize(w, k: k, stride: s, padding: p)
    var y = DoubleTensor(zeros: [n, c, oh, ow])
    var arg = [Int](repeating: -1, count: y.count)
    for pl in 0..<(n * c) {
      for i in 0..<oh {
        for j in 0..<ow {
          var best = -Double.infinity, at = -1
          for u in 0..<k {
            for v in 0..<k {
              let r = i * s - p + u, q = j * s - p + v
              guard r >= 0 && r < h && q >= 0 && q < w else { continue }
              let idx = (pl * h + r) * w + q
              if at < 0 || x[idx] > best || x[idx].isNaN { best = x[idx]; at = idx }
            }
          }
          let o = (pl * oh + i) * ow + j
          y[o] = best
          arg[o] = at
        }
      }
    }
    return (y, arg)
  }

  /// Gradient of max pooling: each dy goes to its window's first maximum.
  public static func maxPool2dBackward(
    _ x: DoubleTensor, dy: DoubleTensor, k: Int, stride s: Int, padding p: Int
  ) -> DoubleTensor {
    let arg = maxPool2dWithIndices(x, k: k, stride: s, padding: p).argmax
    var dx = DoubleTensor(zeros: x.shape)
    for o in 0..<dy.count { dx[arg[o]] += dy[o] }
    return dx
  }

  /// Average pooling with zero padding counted in the divisor (`count_include_pad=True`):
  /// every window divides by k².
  public static func avgPool2d(_ x: DoubleTensor, k: Int, stride s: Int, padding p: Int) -> DoubleTensor {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let oh = outSize(h, k: k, stride: s, padding: p), ow = outSize(w, k: k, stride: s, padding: p)
    var y = DoubleTensor(zeros: [n, c, oh, ow])
    for pl in 0..<(n * c) {
      for i in 0..<oh {
        for j in 0..<ow {
          var acc = 0.0
          for u in 0..<k {
            for v in 0..<k {
              let r = i * s - p + u, q = j * s - p + v
              if r >= 0 && r < h && q >= 0 && q < w { acc += x[(pl * h + r) * w + q] }
            }
          }
          y[(pl * oh + i) * ow + j] = acc / Double(k * k)
        }
      }
    }
    return y
  }

  /// Gradient of `avgPool2d`.
  public static func avgPool2dBackward(
    inputShape: [Int], dy: DoubleTensor, k: Int, stride s: Int, padding p: Int
  ) -> DoubleTensor {
    let (h, w) = (inputShape[2], inputShape[3])
    let (oh, ow) = (dy.shape[2], dy.shape[3])
    var dx = DoubleTensor(zeros: inputShape)
    for pl in 0..<(inputShape[0] * inputShape[1]) {
      for i in 0..<oh {
        for j in 0..<ow {
          let g = dy[(pl * oh + i) * ow + j] / Double(k * k)
          for u in 0..<k {
            for v in 0..<k {
              let r = i * s - p + u, q = j * s - p + v
              if r >= 0 && r < h && q >= 0 && q < w { dx[(pl * h + r) * w + q] += g }
            }
          }
        }
      }
    }
    return dx
  }

  /// The mean of each `H × W` plane: `[N, C, H, W] → [N, C, 1, 1]`.
  public static func globalAvgPool2d(_ x: DoubleTensor) -> DoubleTensor {
    let (n, c, hw) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
    var y = DoubleTensor(zeros: [n, c, 1, 1])
    for pl in 0..<(n * c) {
      var acc = 0.0
      for i in 0..<hw { acc += x[pl * hw + i] }
      y[pl] = acc / Double(hw)
    }
    return y
  }

  /// Gradient of `globalAvgPool2d`.
  public static func globalAvgPool2dBackward(inputShape: [Int], dy: DoubleTensor) -> DoubleTensor {
    let hw = inputShape[2] * inputShape[3]
    var dx = DoubleTensor(zeros: inputShape)
    for i in 0..<dx.count { dx[i] = dy[i / hw] / Double(hw) }
    return dx
  }

  // MARK: - Batch normalisation

  /// Per-channel statistics over N·H·W (x `[N, C, H, W]` or `[N, C]`): the mean, the biased
  /// variance (divide by M) and the unbiased one (divide by M − 1), M = N·H·W.
  public static func channelStatistics(
    _ x: DoubleTensor
  ) -> (mean: [Double], biasedVar: [Double], unbiasedVar: [Double]) {
    let (n, c) = (x.shape[0], x.shape[1])
    let hw = x.shape.count == 4 ? x.shape[2] * x.shape[3] : 1
    let m = Double(n * hw)
    var mean = [Double](repeating: 0, count: c), bv = mean, uv = mean
    for ch in 0..<c {
      var s = 0.0
      for b in 0..<n { for i in 0..<hw { s += x[(b * c + ch) * hw + i] } }
      mean[ch] = s / m
      var s2 = 0.0
      for b in 0..<n {
        for i in 0..<hw {
          let d = x[(b * c + ch) * hw + i] - mean[ch]
          s2 += d * d
        }
      }
      bv[ch] = s2 / m
      uv[ch] = s2 / (m - 1)
    }
    return (mean, bv, uv)
  }

  /// Batch normalisation with given per-channel statistics:
  /// `y = γ·(x − mean)/√(var + eps) + β`.
  public static func batchNorm(
    _ x: DoubleTensor, mean: [Double], variance: [Double], gamma: [Double], beta: [Double], eps: Double
  ) -> DoubleTensor {
    let (n, c) = (x.shape[0], x.shape[1])
    let hw = x.shape.count == 4 ? x.shape[2] * x.shape[3] : 1
    var y = DoubleTensor(zeros: x.shape)
    for b in 0..<n {
      for ch in 0..<c {
        let istd = 1 / (variance[ch] + eps).squareRoot()
        for i in 0..<hw {
          let idx = (b * c + ch) * hw + i
          y[idx] = gamma[ch] * (x[idx] - mean[ch]) * istd + beta[ch]
        }
      }
    }
    return y
  }

  /// Training-mode batch normalisation: batch mean and *biased* batch variance.
  public static func batchNormTraining(
    _ x: DoubleTensor, gamma: [Double], beta: [Double], eps: Double = 1e-5
  ) -> DoubleTensor {
    let st = channelStatistics(x)
    return batchNorm(x, mean: st.mean, variance: st.biasedVar, gamma: gamma, beta: beta, eps: eps)
  }

  /// Evaluation-mode batch normalisation: the running statistics.
  public static func batchNormEval(
    _ x: DoubleTensor, gamma: [Double], beta: [Double], runningMean: [Double], runningVar: [Double],
    eps: Double = 1e-5
  ) -> DoubleTensor {
    batchNorm(x, mean: runningMean, variance: runningVar, gamma: gamma, beta: beta, eps: eps)
  }

  /// PyTorch's running-statistics update after one training batch:
  /// `r ← (1 − m)·r + m·stat`, with the *unbiased* variance for `running_var`.
  public static func batchNormRunningUpdate(
    _ x: DoubleTensor, runningMean: [Double], runningVar: [Double], momentum: Double = 0.1
  ) -> (mean: [Double], variance: [Double]) {
    let st = channelStatistics(x)
    let rm = zip(runningMean, st.mean).map { (1 - momentum) * $0 + momentum * $1 }
    let rv = zip(runningVar, st.unbiasedVar).map { (1 - momentum) * $0 + momentum * $1 }
    return (rm, rv)
  }

  /// Gradients of training-mode batch normalisation, by the textbook formula
  /// `dx = γ·istd·(dy − mean(dy) − x̂·mean(dy·x̂))`, `dγ = Σ dy·x̂`, `dβ = Σ dy`.
  public static func batchNormTrainingBackward(
    _ x: DoubleTensor, gamma: [Double], dy: DoubleTensor, eps: Double = 1e-5
  ) -> (dx: DoubleTensor, dgamma: [Double], dbeta: [Double]) {
    let (n, c) = (x.shape[0], x.shape[1])
    let hw = x.shape.count == 4 ? x.shape[2] * x.shape[3] : 1
    let m = Double(n * hw)
    let st = channelStatistics(x)
    var dx = DoubleTensor(zeros: x.shape)
    var dg = [Double](repeating: 0, count: c), db = dg
    for ch in 0..<c {
      let istd = 1 / (st.biasedVar[ch] + eps).squareRoot()
      var sdy = 0.0, sdyx = 0.0
      for b in 0..<n {
        for i in 0..<hw {
          let idx = (b * c + ch) * hw + i
          sdy += dy[idx]
          sdyx += dy[idx] * (x[idx] - st.mean[ch]) * istd
        }
      }
      dg[ch] = sdyx
      db[ch] = sdy
      for b in 0..<n {
        for i in 0..<hw {
          let idx = (b * c + ch) * hw + i
          let xhat = (x[idx] - st.mean[ch]) * istd
          dx[idx] = gamma[ch] * istd * (dy[idx] - sdy / m - xhat * sdyx / m)
        }
      }
    }
    return (dx, dg, db)
  }

  // MARK: - Elementwise activations

  /// `max(x, 0)` elementwise.
  public static func relu(_ x: DoubleTensor) -> DoubleTensor {
    DoubleTensor(shape: x.shape, values: x.values.map { max($0, 0) })
  }

  /// `dy · [x > 0]` elementwise.
  public static func reluBackward(_ x: DoubleTensor, dy: DoubleTensor) -> DoubleTensor {
    DoubleTensor(shape: x.shape, values: zip(x.values, dy.values).map { $0 > 0 ? $1 : 0 })
  }

  /// `1 / (1 + e^(−x))` elementwise.
  public static func sigmoid(_ x: DoubleTensor) -> DoubleTensor {
    DoubleTensor(shape: x.shape, values: x.values.map(sigmoid))
  }

  /// `σ(x)` for one value, without overflow.
  public static func sigmoid(_ x: Double) -> Double {
    x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x))
  }

  /// `dy · σ(x)(1 − σ(x))` elementwise.
  public static func sigmoidBackward(_ x: DoubleTensor, dy: DoubleTensor) -> DoubleTensor {
    DoubleTensor(shape: x.shape, values: zip(x.values, dy.values).map { let s = sigmoid($0); return $1 * s * (1 - s) })
  }

  // MARK: - Losses

  /// Mean softmax cross-entropy over a batch of logits `[N, K]` with integer labels, and its
  /// gradient `(softmax − onehot)/N`. Uses the log-sum-exp shift, so ±1e4 logits are exact.
  public static func softmaxCrossEntropy(
    _ logits: DoubleTensor, labels: [Int]
  ) -> (loss: Double, gradient: DoubleTensor) {
    let (n, k) = (logits.shape[0], logits.shape[1])
    var grad = DoubleTensor(zeros: logits.shape)
    var total = 0.0
    for s in 0..<n {
      let row = (0..<k).map { logits[s * k + $0] }
      let mx = row.max() ?? 0
      let sum = row.reduce(0) { $0 + exp($1 - mx) }
      let lse = mx + log(sum)
      total += lse - row[labels[s]]
      for j in 0..<k {
        grad[s * k + j] = (exp(row[j] - lse) - (j == labels[s] ? 1 : 0)) / Double(n)
      }
    }
    return (total / Double(n), grad)
  }

  /// Mean binary cross-entropy on logits, `−[t·log σ(z) + (1 − t)·log(1 − σ(z))]`, written
  /// stably as `max(z,0) − z·t + log(1 + e^(−|z|))`, and its gradient `(σ(z) − t)/M`.
  public static func bceWithLogits(
    _ logits: DoubleTensor, targets: [Double]
  ) -> (loss: Double, gradient: DoubleTensor) {
    let m = Double(logits.count)
    var grad = DoubleTensor(zeros: logits.shape)
    var total = 0.0
    for i in 0..<logits.count {
      let z = logits[i], t = targets[i]
      total += max(z, 0) - z * t + log1p(exp(-abs(z)))
      grad[i] = (sigmoid(z) - t) / m
    }
    return (total / m, grad)
  }

  /// Mean squared error `(1/M) Σ (y − t)²` and its gradient `2(y − t)/M`.
  public static func mse(_ y: DoubleTensor, target: DoubleTensor) -> (loss: Double, gradient: DoubleTensor) {
    let m = Double(y.count)
    var grad = DoubleTensor(zeros: y.shape)
    var total = 0.0
    for i in 0..<y.count {
      let d = y[i] - target[i]
      total += d * d
      grad[i] = 2 * d / m
    }
    return (total / m, grad)
  }
}

// MARK: - Branching: channel concatenation, splits, channel shuffle, residual add

extension Reference {
  /// `torch.cat(xs, 1)`: `[N, C₁, …], [N, C₂, …] → [N, C₁ + C₂ + …, …]` (rank 2 or 4, equal
  /// other dimensions), element by element.
  public static func concatChannels(_ xs: [DoubleTensor]) -> DoubleTensor {
    let first = xs[0].shape
    let n = first[0], plane = first.dropFirst(2).reduce(1, *)
    let c = xs.reduce(0) { $0 + $1.shape[1] }
    var shape = first
    shape[1] = c
    var y = DoubleTensor(zeros: shape)
    var start = 0
    for x in xs {
      precondition(x.shape[0] == n && Array(x.shape.dropFirst(2)) == Array(first.dropFirst(2)), "concat shapes")
      let cx = x.shape[1]
      for s in 0..<n {
        for ch in 0..<cx {
          for p in 0..<plane { y[(s * c + start + ch) * plane + p] = x[(s * cx + ch) * plane + p] }
        }
      }
      start += cx
    }
    return y
  }

  /// Channels `start, start + step, …` (`count` of them) of `[N, C, …]`: `x[:, start::step]`.
  public static func sliceChannels(_ x: DoubleTensor, start: Int, step: Int = 1, count: Int) -> DoubleTensor {
    let n = x.shape[0], c = x.shape[1], plane = x.shape.dropFirst(2).reduce(1, *)
    var shape = x.shape
    shape[1] = count
    var y = DoubleTensor(zeros: shape)
    for s in 0..<n {
      for j in 0..<count {
        for p in 0..<plane { y[(s * count + j) * plane + p] = x[(s * c + start + j * step) * plane + p] }
      }
    }
    return y
  }

  /// The official ShuffleNetV2 `channel_shuffle` literally: view `[N, C, H, W]` as
  /// `[N·C/2, 2, H·W]`, permute to `[2, N·C/2, H·W]`, view as `[2, N, C/2, H, W]` and return the
  /// two slices. With `evenOdd: false`, the halves `x[:, :C/2]` and `x[:, C/2:]` instead.
  public static func splitChannels(_ x: DoubleTensor, evenOdd: Bool) -> (DoubleTensor, DoubleTensor) {
    let n = x.shape[0], c = x.shape[1], plane = x.shape.dropFirst(2).reduce(1, *)
    precondition(c % 2 == 0, "split: odd channel count")
    if !evenOdd {
      return (sliceChannels(x, start: 0, count: c / 2), sliceChannels(x, start: c / 2, count: c / 2))
    }
    var shape = x.shape
    shape[1] = c / 2
    var parts = [DoubleTensor(zeros: shape), DoubleTensor(zeros: shape)]
    let rows = n * c / 2
    for k in 0..<2 {
      for r in 0..<rows {
        // [rows, 2, plane] → [2, rows, plane]: part k, row r is input row r, slot k.
        for p in 0..<plane { parts[k][r * plane + p] = x[(r * 2 + k) * plane + p] }
      }
    }
    return (parts[0], parts[1])
  }

  /// The input gradient of `splitChannels` for the gradients of its two parts (nil: unused, zero).
  public static func splitChannelsBackward(
    _ d0: DoubleTensor?, _ d1: DoubleTensor?, inputShape: [Int], evenOdd: Bool
  ) -> DoubleTensor {
    let n = inputShape[0], c = inputShape[1], plane = inputShape.dropFirst(2).reduce(1, *), half = c / 2
    var dx = DoubleTensor(zeros: inputShape)
    for (k, d) in [d0, d1].enumerated() {
      guard let d else { continue }
      for s in 0..<n {
        for j in 0..<half {
          let ch = evenOdd ? 2 * j + k : k * half + j
          for p in 0..<plane { dx[(s * c + ch) * plane + p] += d[(s * half + j) * plane + p] }
        }
      }
    }
    return dx
  }

  /// ShuffleNet's channel shuffle by its definition: view `[N, C, …]` as `[N, g, C/g, plane]`,
  /// swap axes 1 and 2, view back. With `inverse`, the inverse permutation (its backward).
  public static func channelShuffle(_ x: DoubleTensor, groups g: Int, inverse: Bool = false) -> DoubleTensor {
    let n = x.shape[0], c = x.shape[1], plane = x.shape.dropFirst(2).reduce(1, *)
    precondition(c % g == 0, "channelShuffle: \(g) does not divide \(c)")
    let per = c / g
    var y = DoubleTensor(zeros: x.shape)
    for s in 0..<n {
      for i in 0..<g {
        for j in 0..<per {
          let grouped = (s * g + i) * per + j  // [N, g, C/g] index
          let swapped = (s * per + j) * g + i  // [N, C/g, g] index
          for p in 0..<plane {
            if inverse {
              y[grouped * plane + p] = x[swapped * plane + p]
            } else {
              y[swapped * plane + p] = x[grouped * plane + p]
            }
          }
        }
      }
    }
    return y
  }

  /// The elementwise sum of tensors of one shape (a residual connection).
  public static func add(_ xs: [DoubleTensor]) -> DoubleTensor {
    var y = DoubleTensor(zeros: xs[0].shape)
    for x in xs {
      precondition(x.shape == y.shape, "add shapes")
      for i in 0..<y.count { y[i] += x[i] }
    }
    return y
  }
}

// MARK: - Grouped and depthwise convolution, SiLU, adaptive average pooling (issue 14)

extension Reference {
  /// Grouped convolution with rectangular kernels, strides and paddings, by definition:
  /// `y[n,o,i,j] = b[o] + Σ_{c<Cin/G, u, v} w[o,c,u,v] · x[n, g·Cin/G + c, i·sh − ph + u, j·sw − pw + v]`
  /// with `g = o / (Cout/G)`, zero padding. x `[N, Cin, H, W]`, w `[Cout, Cin/G, KH, KW]`,
  /// b `[Cout]`; depthwise is G = Cin (w `[Cin·m, 1, KH, KW]`).
  public static func groupedConv2d(
    _ x: DoubleTensor, weight w: DoubleTensor, bias: DoubleTensor?, stride: (Int, Int), padding: (Int, Int),
    groups: Int
  ) -> DoubleTensor {
    let (n, cin, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (cout, cinG, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3])
    precondition(cinG * groups == cin && cout % groups == 0, "groupedConv2d: weight \(w.shape) vs input \(x.shape)")
    let (sh, sw) = stride, (ph, pw) = padding
    let oh = (h + 2 * ph - kh) / sh + 1, ow = (wd + 2 * pw - kw) / sw + 1, coutG = cout / groups
    var y = DoubleTensor(zeros: [n, cout, oh, ow])
    for b in 0..<n {
      for o in 0..<cout {
        let c0 = (o / coutG) * cinG
        for i in 0..<oh {
          for j in 0..<ow {
            var acc = bias?[o] ?? 0
            for c in 0..<cinG {
              for u in 0..<kh {
                let r = i * sh - ph + u
                if r < 0 || r >= h { continue }
                for v in 0..<kw {
                  let q = j * sw - pw + v
                  if q < 0 || q >= wd { continue }
                  acc += w[((o * cinG + c) * kh + u) * kw + v] * x[((b * cin + c0 + c) * h + r) * wd + q]
                }
              }
            }
            y[((b * cout + o) * oh + i) * ow + j] = acc
          }
        }
      }
    }
    return y
  }

  /// Gradients of `groupedConv2d` for output gradient dy `[N, Cout, OH, OW]`, by the same loops.
  public static func groupedConv2dBackward(
    _ x: DoubleTensor, weight w: DoubleTensor, dy: DoubleTensor, stride: (Int, Int), padding: (Int, Int),
    groups: Int
  ) -> (dx: DoubleTensor, dw: DoubleTensor, db: DoubleTensor) {
    let (n, cin, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (cout, cinG, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3])
    let (sh, sw) = stride, (ph, pw) = padding
    let (oh, ow) = (dy.shape[2], dy.shape[3]), coutG = cout / groups
    var dx = DoubleTensor(zeros: x.shape), dw = DoubleTensor(zeros: w.shape), db = DoubleTensor(zeros: [cout])
    for b in 0..<n {
      for o in 0..<cout {
        let c0 = (o / coutG) * cinG
        for i in 0..<oh {
          for j in 0..<ow {
            let g = dy[((b * cout + o) * oh + i) * ow + j]
            db[o] += g
            for c in 0..<cinG {
              for u in 0..<kh {
                let r = i * sh - ph + u
                if r < 0 || r >= h { continue }
                for v in 0..<kw {
                  let q = j * sw - pw + v
                  if q < 0 || q >= wd { continue }
                  let wi = ((o * cinG + c) * kh + u) * kw + v, xi = ((b * cin + c0 + c) * h + r) * wd + q
                  dw[wi] += g * x[xi]
                  dx[xi] += g * w[wi]
                }
              }
            }
          }
        }
      }
    }
    return (dx, dw, db)
  }

  /// SiLU (Swish): `x·σ(x)` elementwise.
  public static func silu(_ x: DoubleTensor) -> DoubleTensor {
    DoubleTensor(shape: x.shape, values: x.values.map { $0 * sigmoid($0) })
  }

  /// Gradient of SiLU: `dy · σ(x)·(1 + x·(1 − σ(x)))` elementwise.
  public static func siluBackward(_ x: DoubleTensor, dy: DoubleTensor) -> DoubleTensor {
    DoubleTensor(shape: x.shape, values: zip(x.values, dy.values).map { v, g in
      let s = sigmoid(v)
      return g * s * (1 + v * (1 - s))
    })
  }

  /// Adaptive average pooling as PyTorch's `AdaptiveAvgPool2d((OH, OW))`: output row i averages
  /// input rows `⌊i·H/OH⌋ ..< ⌈(i+1)·H/OH⌉` (likewise columns). `[N, C, H, W] → [N, C, OH, OW]`.
  public static func adaptiveAvgPool2d(_ x: DoubleTensor, outputSize: (Int, Int)) -> DoubleTensor {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (oh, ow) = outputSize
    var y = DoubleTensor(zeros: [n, c, oh, ow])
    for pl in 0..<(n * c) {
      for i in 0..<oh {
        let r0 = i * h / oh, r1 = ((i + 1) * h + oh - 1) / oh
        for j in 0..<ow {
          let q0 = j * w / ow, q1 = ((j + 1) * w + ow - 1) / ow
          var acc = 0.0
          for r in r0..<r1 { for q in q0..<q1 { acc += x[(pl * h + r) * w + q] } }
          y[(pl * oh + i) * ow + j] = acc / Double((r1 - r0) * (q1 - q0))
        }
      }
    }
    return y
  }

  /// Gradient of `adaptiveAvgPool2d`: each dy spreads evenly over its window.
  public static func adaptiveAvgPool2dBackward(inputShape: [Int], dy: DoubleTensor) -> DoubleTensor {
    let (h, w) = (inputShape[2], inputShape[3]), (oh, ow) = (dy.shape[2], dy.shape[3])
    var dx = DoubleTensor(zeros: inputShape)
    for pl in 0..<(inputShape[0] * inputShape[1]) {
      for i in 0..<oh {
        let r0 = i * h / oh, r1 = ((i + 1) * h + oh - 1) / oh
        for j in 0..<ow {
          let q0 = j * w / ow, q1 = ((j + 1) * w + ow - 1) / ow
          let g = dy[(pl * oh + i) * ow + j] / Double((r1 - r0) * (q1 - q0))
          for r in r0..<r1 { for q in q0..<q1 { dx[(pl * h + r) * w + q] += g } }
        }
      }
    }
    return dx
  }
}
