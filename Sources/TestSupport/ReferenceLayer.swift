// ReferenceLayer: the Double-precision twin of a Module, assembled from the naive references in
// Reference.swift and AconReference.swift: a pure function y = f(x; θ) and its analytic
// vector–Jacobian product. The gradient checker differentiates the twin by central differences
// in Double (tight tolerance) and compares the Float layer's gradients with the twin's.
//
// Every Module of NN and ACON has a twin (`ReferenceLayer(_:)`), Sequential, Graph (and its
// subclasses) and MetaAconC by composition (ReferenceLayer+Graph.swift for graphs); a module of
// another kind needs one written by hand (`init(name:...)`).
import ACON
import NN
import TensorCore

/// A Double twin of a layer: `forward(x, θ)` and `backward(x, θ, dy) → (dx, dθ)`, with θ the
/// parameters in the order (and with the names) of the Module's `namedParameters()`.
public struct ReferenceLayer {
  /// The layer's kind, for messages.
  public var name: String
  /// The parameters' names and values at which the twin is evaluated.
  public var parameters: [(String, DoubleTensor)]
  /// y = f(x; θ).
  public var forward: (DoubleTensor, [DoubleTensor]) -> DoubleTensor
  /// (x, θ, dy) → (dx = dy·∂y/∂x, dθ_k = dy·∂y/∂θ_k), each of its tensor's shape.
  public var backward: (DoubleTensor, [DoubleTensor], DoubleTensor) -> (DoubleTensor, [DoubleTensor])

  /// A twin written by hand.
  public init(
    name: String, parameters: [(String, DoubleTensor)],
    forward: @escaping (DoubleTensor, [DoubleTensor]) -> DoubleTensor,
    backward: @escaping (DoubleTensor, [DoubleTensor], DoubleTensor) -> (DoubleTensor, [DoubleTensor])
  ) {
    self.name = name
    self.parameters = parameters
    self.forward = forward
    self.backward = backward
  }

  /// The twin of `module` at its current parameter values, mode (training or evaluation) and,
  /// for BatchNorm in evaluation, running statistics. `beforeForward` is called (with
  /// `root`) before a Dropout's mask is read, so that the twin uses the mask of the Float pass.
  /// - Throws: `ReferenceLayer.Unsupported` for a module kind without a twin.
  public init(_ module: Module, root: Module? = nil, beforeForward: ((Module) -> Void)? = nil) throws {
    let root = root ?? module
    let params = module.namedParameters().map { ($0.0, DoubleTensor($0.1.value)) }
    switch module {
    case let seq as Sequential:
      let parts = try seq.layers.map { ($0.0, try ReferenceLayer($0.1, root: root, beforeForward: beforeForward)) }
      self = .sequence(parts, name: module.typeName)
    case let graph as Graph: self = try .graph(graph, root: root, beforeForward: beforeForward)
    case let shuffle as ChannelShuffle: self = .channelShuffle(shuffle)
    case let lin as Linear:
      let hasBias = lin.bias != nil
      self.init(name: "Linear", parameters: params,
        forward: { x, p in Reference.linear(x, weight: p[0], bias: hasBias ? p[1] : nil) },
        backward: { x, p, dy in
          let g = Reference.linearBackward(x, weight: p[0], dy: dy)
          return (g.dx, hasBias ? [g.dw, g.db] : [g.dw])
        })
    case let conv as Conv2D:
      self = .convolution("Conv2D", parameters: params, hasBias: conv.bias != nil, strides: conv.strides,
        paddings: conv.paddings, groups: conv.groups)
    case let conv as DepthwiseConv2D:
      // A convolution with groups = C (weight [C·m, 1, KH, KW]).
      self = .convolution("DepthwiseConv2D", parameters: params, hasBias: conv.bias != nil, strides: conv.strides,
        paddings: conv.paddings, groups: conv.inChannels)
    case is SiLU:
      self.init(name: "SiLU", parameters: [], forward: { x, _ in Reference.silu(x) },
        backward: { x, _, dy in (Reference.siluBackward(x, dy: dy), []) })
    case let pool as AdaptiveAvgPool2D:
      let size = (pool.outputSize.height, pool.outputSize.width)
      self.init(name: "AdaptiveAvgPool2D", parameters: [],
        forward: { x, _ in Reference.adaptiveAvgPool2d(x, outputSize: size) },
        backward: { x, _, dy in (Reference.adaptiveAvgPool2dBackward(inputShape: x.shape, dy: dy), []) })
    case let bn as BatchNorm2D:
      self = .batchNorm(bn, parameters: params)
    case is ReLU:
      self.init(name: "ReLU", parameters: [], forward: { x, _ in Reference.relu(x) },
        backward: { x, _, dy in (Reference.reluBackward(x, dy: dy), []) })
    case is Sigmoid:
      self.init(name: "Sigmoid", parameters: [], forward: { x, _ in Reference.sigmoid(x) },
        backward: { x, _, dy in (Reference.sigmoidBackward(x, dy: dy), []) })
    case let pool as MaxPool2D:
      let (k, s, pad) = (pool.kernelSize, pool.stride, pool.padding)
      self.init(name: "MaxPool2D", parameters: [],
        forward: { x, _ in Reference.maxPool2d(x, k: k, stride: s, padding: pad) },
        backward: { x, _, dy in (Reference.maxPool2dBackward(x, dy: dy, k: k, stride: s, padding: pad), []) })
    case let pool as AvgPool2D:
      let (k, s, pad) = (pool.kernelSize, pool.stride, pool.padding)
      self.init(name: "AvgPool2D", parameters: [],
        forward: { x, _ in Reference.avgPool2d(x, k: k, stride: s, padding: pad) },
        backward: { x, _, dy in
          (Reference.avgPool2dBackward(inputShape: x.shape, dy: dy, k: k, stride: s, padding: pad), [])
        })
    case is GlobalAvgPool2D:
      self.init(name: "GlobalAvgPool2D", parameters: [], forward: { x, _ in Reference.globalAvgPool2d(x) },
        backward: { x, _, dy in (Reference.globalAvgPool2dBackward(inputShape: x.shape, dy: dy), []) })
    case is Flatten:
      self.init(name: "Flatten", parameters: [],
        forward: { x, _ in x.reshaped([x.shape[0], x.count / Swift.max(1, x.shape[0])]) },
        backward: { x, _, dy in (dy.reshaped(x.shape), []) })
    case let drop as Dropout:
      self = .dropout(drop, root: root, beforeForward: beforeForward)
    case let acon as AconActivation:
      self = .acon(acon, parameters: params)
    case let meta as MetaAconC:
      self = try .metaAcon(meta, root: root, beforeForward: beforeForward)
    case is MetaAconLayerwise:
      self = .metaAconLayerwise(parameters: params)
    case is MetaAconPixelwise:
      self = .metaAconPixelwise(parameters: params)
    case let frelu as AconFReLU:
      self = try .aconFReLU(frelu, root: root, beforeForward: beforeForward)
    default:
      throw Unsupported(typeName: module.typeName)
    }
  }

  /// A module kind without a Double twin: write one with `init(name:parameters:forward:backward:)`
  /// and pass it to the gradient checker.
  public struct Unsupported: Error, CustomStringConvertible {
    /// The module's type name.
    public var typeName: String
    public var description: String {
      "ReferenceLayer: no Double reference for \(typeName); build one with ReferenceLayer(name:parameters:forward:backward:) "
        + "and pass it as `reference:`"
    }
  }

  // MARK: - Layers

  /// A (grouped) convolution, weight `[Cout, Cin/G, KH, KW]`, bias `[Cout]` if `hasBias`.
  static func convolution(
    _ name: String, parameters: [(String, DoubleTensor)], hasBias: Bool, strides: (height: Int, width: Int),
    paddings: (height: Int, width: Int), groups: Int
  ) -> ReferenceLayer {
    let s = (strides.height, strides.width), pad = (paddings.height, paddings.width)
    return ReferenceLayer(name: name, parameters: parameters,
      forward: { x, p in
        Reference.groupedConv2d(x, weight: p[0], bias: hasBias ? p[1] : nil, stride: s, padding: pad, groups: groups)
      },
      backward: { x, p, dy in
        let r = Reference.groupedConv2dBackward(x, weight: p[0], dy: dy, stride: s, padding: pad, groups: groups)
        return (r.dx, hasBias ? [r.dw, r.db] : [r.dw])
      })
  }

  // MARK: - Composition

  /// Layers applied in order; parameters named `layer.param`.
  public static func sequence(_ parts: [(String, ReferenceLayer)], name: String = "Sequential") -> ReferenceLayer {
    let counts = parts.map { $0.1.parameters.count }
    let params = parts.flatMap { part in part.1.parameters.map { (part.0 + "." + $0.0, $0.1) } }
    func slices(_ p: [DoubleTensor]) -> [[DoubleTensor]] {
      var out: [[DoubleTensor]] = [], at = 0
      for c in counts { out.append(Array(p[at..<(at + c)])); at += c }
      return out
    }
    return ReferenceLayer(name: name, parameters: params,
      forward: { x, p in
        var h = x
        for (part, ps) in zip(parts, slices(p)) { h = part.1.forward(h, ps) }
        return h
      },
      backward: { x, p, dy in
        let ps = slices(p)
        var inputs: [DoubleTensor] = []
        var h = x
        for (part, q) in zip(parts, ps) { inputs.append(h); h = part.1.forward(h, q) }
        var g = dy
        var grads = [[DoubleTensor]](repeating: [], count: parts.count)
        for i in parts.indices.reversed() {
          let r = parts[i].1.backward(inputs[i], ps[i], g)
          g = r.0
          grads[i] = r.1
        }
        return (g, grads.flatMap { $0 })
      })
  }

  // MARK: - Layers with state

  private static func batchNorm(_ bn: BatchNorm2D, parameters: [(String, DoubleTensor)]) -> ReferenceLayer {
    let eps = Double(bn.eps)
    guard !bn.isTraining else {
      return ReferenceLayer(name: "BatchNorm2D", parameters: parameters,
        forward: { x, p in Reference.batchNormTraining(x, gamma: p[0].values, beta: p[1].values, eps: eps) },
        backward: { x, p, dy in
          let g = Reference.batchNormTrainingBackward(x, gamma: p[0].values, dy: dy, eps: eps)
          return (g.dx, [DoubleTensor(shape: p[0].shape, values: g.dgamma), DoubleTensor(shape: p[1].shape, values: g.dbeta)])
        })
    }
    let mean = bn.runningMean.doubles, variance = bn.runningVar.doubles
    return ReferenceLayer(name: "BatchNorm2D", parameters: parameters,
      forward: { x, p in
        Reference.batchNormEval(x, gamma: p[0].values, beta: p[1].values, runningMean: mean, runningVar: variance, eps: eps)
      },
      backward: { x, p, dy in
        // y = γ·(x − μ)/√(σ² + eps) + β with fixed statistics.
        let (n, c) = (x.shape[0], x.shape[1])
        let hw = x.count / Swift.max(1, n * c)
        var dx = DoubleTensor(zeros: x.shape), dg = DoubleTensor(zeros: p[0].shape), db = DoubleTensor(zeros: p[1].shape)
        for s in 0..<n {
          for ch in 0..<c {
            let istd = 1 / (variance[ch] + eps).squareRoot()
            for j in 0..<hw {
              let i = (s * c + ch) * hw + j
              dx[i] = dy[i] * p[0][ch] * istd
              dg[ch] += dy[i] * (x[i] - mean[ch]) * istd
              db[ch] += dy[i]
            }
          }
        }
        return (dx, [dg, db])
      })
  }

  private static func dropout(_ drop: Dropout, root: Module, beforeForward: ((Module) -> Void)?) -> ReferenceLayer {
    // The mask the Float layer draws, read by passing ones through it (after the same rewind).
    let mask: (DoubleTensor) -> DoubleTensor = { x in
      beforeForward?(root)
      let ones = Tensor(shape: x.shape, repeating: 1)
      guard let m = try? drop.forward(ones) else { preconditionFailure("ReferenceLayer: Dropout rejected \(x.shape)") }
      return DoubleTensor(m)
    }
    return ReferenceLayer(name: "Dropout", parameters: [],
      forward: { x, _ in
        let m = mask(x)
        return DoubleTensor(shape: x.shape, values: zip(x.values, m.values).map { $0 * $1 })
      },
      backward: { x, _, dy in
        let m = mask(x)
        return (DoubleTensor(shape: x.shape, values: zip(dy.values, m.values).map { $0 * $1 }), [])
      })
  }

  /// `(n, c, hw)` of an `[N, C, H, W]` or `[N, C]` input.
  private static func layout(_ x: DoubleTensor) -> (Int, Int, Int) {
    (x.shape[0], x.shape[1], x.shape.count == 4 ? x.shape[2] * x.shape[3] : 1)
  }

  private static func acon(_ layer: AconActivation, parameters: [(String, DoubleTensor)]) -> ReferenceLayer {
    // The learnable coefficients are parameters; the fixed ones (AconA's p1 = 1 and p2 = 0,
    // AconB's p1 = 1, a custom variant's β) are the layer's own values.
    let names = parameters.map(\.0)
    let fixed = ["p1": DoubleTensor(layer.p1).values, "p2": DoubleTensor(layer.p2).values,
      "beta": DoubleTensor(layer.beta).values]
    func value(_ p: [DoubleTensor], _ name: String) -> [Double] { names.firstIndex(of: name).map { p[$0].values } ?? fixed[name]! }
    return ReferenceLayer(name: layer.typeName, parameters: parameters,
      forward: { x, p in
        let (n, c, hw) = layout(x)
        return DoubleTensor(shape: x.shape,
          values: aconForward(x.values, n: n, c: c, hw: hw, p1: value(p, "p1"), p2: value(p, "p2"), beta: value(p, "beta")))
      },
      backward: { x, p, dy in
        let (n, c, hw) = layout(x)
        let g = aconBackward(x.values, dy: dy.values, n: n, c: c, hw: hw, p1: value(p, "p1"), p2: value(p, "p2"),
          beta: value(p, "beta"))
        let byName = ["p1": g.dp1, "p2": g.dp2, "beta": g.dbeta]
        return (DoubleTensor(shape: x.shape, values: g.dx),
          zip(names, p).map { DoubleTensor(shape: $0.1.shape, values: byName[$0.0]!) })
      })
  }

  private static func metaAcon(_ meta: MetaAconC, root: Module, beforeForward: ((Module) -> Void)?) throws -> ReferenceLayer {
    // β = σ(bn2(fc2(bn1(fc1(mean_HW x))))) per sample and channel; y = ACON-C(x; p1, p2, β).
    var netParts: [(String, ReferenceLayer)] = []
    for (name, m) in meta.children { netParts.append((name, try ReferenceLayer(m, root: root, beforeForward: beforeForward))) }
    let net = sequence(netParts)
    let params = [("p1", DoubleTensor(meta.p1.value)), ("p2", DoubleTensor(meta.p2.value))] + net.parameters
    func betaPre(_ x: DoubleTensor, _ q: [DoubleTensor]) -> (DoubleTensor, DoubleTensor) {
      let (n, c, hw) = layout(x)
      var m = DoubleTensor(zeros: [n, c, 1, 1])
      for i in 0..<(n * c) {
        var acc = 0.0
        for j in 0..<hw { acc += x[i * hw + j] }
        m[i] = acc / Double(hw)
      }
      return (m, net.forward(m, q))
    }
    return ReferenceLayer(name: "MetaAconC", parameters: params,
      forward: { x, p in
        let (n, c, hw) = layout(x)
        let (_, h) = betaPre(x, Array(p.dropFirst(2)))
        let beta = h.values.map(AconReference.sigmoid)
        return DoubleTensor(shape: x.shape,
          values: aconForward(x.values, n: n, c: c, hw: hw, p1: p[0].values, p2: p[1].values, beta: beta))
      },
      backward: { x, p, dy in
        let (n, c, hw) = layout(x)
        let q = Array(p.dropFirst(2))
        let (m, h) = betaPre(x, q)
        let beta = h.values.map(AconReference.sigmoid)
        let g = aconBackward(x.values, dy: dy.values, n: n, c: c, hw: hw, p1: p[0].values, p2: p[1].values, beta: beta)
        let dh = DoubleTensor(shape: h.shape, values: zip(g.dbeta, beta).map { $0 * $1 * (1 - $1) })
        let (dm, dq) = net.backward(m, q, dh)
        var dx = g.dx
        for i in 0..<dx.count { dx[i] += dm[i / hw] / Double(hw) }
        return (DoubleTensor(shape: x.shape, values: dx),
          [DoubleTensor(shape: p[0].shape, values: g.dp1), DoubleTensor(shape: p[1].shape, values: g.dp2)] + dq)
      })
  }

  /// β_n = σ(mean over C, H, W of x[n]); y = ACON-C(x; p1, p2, β_n).
  private static func metaAconLayerwise(parameters: [(String, DoubleTensor)]) -> ReferenceLayer {
    func betas(_ x: DoubleTensor, _ n: Int, _ c: Int) -> [Double] {
      let per = x.count / Swift.max(1, n)
      var b = [Double](repeating: 0, count: n * c)
      for s in 0..<n {
        let m = x.values[(s * per)..<((s + 1) * per)].reduce(0, +) / Double(per)
        for ch in 0..<c { b[s * c + ch] = AconReference.sigmoid(m) }
      }
      return b
    }
    return ReferenceLayer(name: "MetaAconLayerwise", parameters: parameters,
      forward: { x, p in
        let (n, c, hw) = layout(x)
        return DoubleTensor(shape: x.shape,
          values: aconForward(x.values, n: n, c: c, hw: hw, p1: p[0].values, p2: p[1].values, beta: betas(x, n, c)))
      },
      backward: { x, p, dy in
        let (n, c, hw) = layout(x)
        let beta = betas(x, n, c)
        let g = aconBackward(x.values, dy: dy.values, n: n, c: c, hw: hw, p1: p[0].values, p2: p[1].values, beta: beta)
        var dx = g.dx
        let per = c * hw
        for s in 0..<n {
          let b = beta[s * c]
          let dm = g.dbeta[(s * c)..<((s + 1) * c)].reduce(0, +) * b * (1 - b) / Double(per)
          for i in (s * per)..<((s + 1) * per) { dx[i] += dm }
        }
        return (DoubleTensor(shape: x.shape, values: dx),
          [DoubleTensor(shape: p[0].shape, values: g.dp1), DoubleTensor(shape: p[1].shape, values: g.dp2)])
      })
  }

  /// β = σ(x) per element; y = ACON-C(x; p1, p2, β), dx including the path through β.
  private static func metaAconPixelwise(parameters: [(String, DoubleTensor)]) -> ReferenceLayer {
    ReferenceLayer(name: "MetaAconPixelwise", parameters: parameters,
      forward: { x, p in
        let (n, c, hw) = layout(x)
        let beta = x.values.map(AconReference.sigmoid)
        return DoubleTensor(shape: x.shape,
          values: aconForward(x.values, n: n, c: c, hw: hw, p1: p[0].values, p2: p[1].values, beta: beta))
      },
      backward: { x, p, dy in
        let (n, c, hw) = layout(x)
        let beta = x.values.map(AconReference.sigmoid)
        let g = aconBackward(x.values, dy: dy.values, n: n, c: c, hw: hw, p1: p[0].values, p2: p[1].values, beta: beta)
        let dx = (0..<x.count).map { g.dx[$0] + g.dbeta[$0] * beta[$0] * (1 - beta[$0]) }
        return (DoubleTensor(shape: x.shape, values: dx),
          [DoubleTensor(shape: p[0].shape, values: g.dp1), DoubleTensor(shape: p[1].shape, values: g.dp2)])
      })
  }

  /// ACON-FReLU: a = x or maxpool_3/2/1(x); b = bn1(dwconv3×3(x)); y = bn2(S(a, b)) with the
  /// smooth maximum S(a, b) = (a − b)·σ(a − b) + b. The convolution, bn1 and bn2 are their
  /// children's twins (BatchNorm in the module's mode).
  private static func aconFReLU(_ m: AconFReLU, root: Module, beforeForward: ((Module) -> Void)?) throws -> ReferenceLayer {
    let conv = try ReferenceLayer(m.convFReLU, root: root, beforeForward: beforeForward)
    let bn1 = try ReferenceLayer(m.bn1, root: root, beforeForward: beforeForward)
    let bn2 = try ReferenceLayer(m.bn2, root: root, beforeForward: beforeForward)
    let params = m.namedParameters().map { ($0.0, DoubleTensor($0.1.value)) }
    let s = m.stride
    // θ: conv_frelu.weight, conv_frelu.bias, bn1.weight, bn1.bias, bn2.weight, bn2.bias.
    func parts(_ x: DoubleTensor, _ p: [DoubleTensor]) -> (a: DoubleTensor, c: DoubleTensor, b: DoubleTensor, z: DoubleTensor) {
      let a = s == 2 ? Reference.maxPool2d(x, k: 3, stride: 2, padding: 1) : x
      let c = conv.forward(x, [p[0], p[1]])
      let b = bn1.forward(c, [p[2], p[3]])
      let z = DoubleTensor(shape: a.shape, values: (0..<a.count).map { i in
        let d = a[i] - b[i]
        return d * AconReference.sigmoid(d) + b[i]
      })
      return (a, c, b, z)
    }
    return ReferenceLayer(name: "AconFReLU", parameters: params,
      forward: { x, p in bn2.forward(parts(x, p).z, [p[4], p[5]]) },
      backward: { x, p, dy in
        let (a, c, b, z) = parts(x, p)
        let (dz, dbn2) = bn2.backward(z, [p[4], p[5]], dy)
        var da = DoubleTensor(zeros: a.shape), db = DoubleTensor(zeros: a.shape)
        for i in 0..<a.count {
          let d = a[i] - b[i], sg = AconReference.sigmoid(d)
          let g = sg + d * sg * (1 - sg)
          da[i] = dz[i] * g
          db[i] = dz[i] * (1 - g)
        }
        let (dc, dbn1) = bn1.backward(c, [p[2], p[3]], db)
        let (dxc, dconv) = conv.backward(x, [p[0], p[1]], dc)
        let dxa = s == 2 ? Reference.maxPool2dBackward(x, dy: da, k: 3, stride: 2, padding: 1) : da
        let dx = DoubleTensor(shape: x.shape, values: zip(dxc.values, dxa.values).map { $0 + $1 })
        return (dx, dconv + dbn1 + dbn2)
      })
  }

  // MARK: - ACON in Double (the formulas of AconReference, with Double coefficients)

  /// `y = (p1 − p2)·x·σ(β(p1 − p2)x) + p2·x`; β has C, N·C or N·C·HW values.
  static func aconForward(_ x: [Double], n: Int, c: Int, hw: Int, p1: [Double], p2: [Double], beta: [Double]) -> [Double] {
    var y = [Double](repeating: 0, count: x.count)
    for s in 0..<n {
      for ch in 0..<c {
        let a = p1[ch] - p2[ch]
        for j in 0..<hw {
          let i = (s * c + ch) * hw + j
          let b = beta.count == c ? beta[ch] : beta.count == n * c ? beta[s * c + ch] : beta[i]
          let d = a * x[i]
          y[i] = d * AconReference.sigmoid(b * d) + p2[ch] * x[i]
        }
      }
    }
    return y
  }

  /// dx, dp1 `[C]`, dp2 `[C]` and dβ (β's layout) of `aconForward` for upstream `dy`.
  static func aconBackward(_ x: [Double], dy: [Double], n: Int, c: Int, hw: Int, p1: [Double], p2: [Double],
    beta: [Double]) -> (dx: [Double], dp1: [Double], dp2: [Double], dbeta: [Double]) {
    var dx = [Double](repeating: 0, count: x.count)
    var dp1 = [Double](repeating: 0, count: c), dp2 = dp1, dbeta = [Double](repeating: 0, count: beta.count)
    for s in 0..<n {
      for ch in 0..<c {
        let a = p1[ch] - p2[ch]
        for j in 0..<hw {
          let i = (s * c + ch) * hw + j
          let bi = beta.count == c ? ch : beta.count == n * c ? s * c + ch : i
          let b = beta[bi]
          let d = a * x[i], sg = AconReference.sigmoid(b * d)
          let g = sg * (1 + b * d * (1 - sg))  // ∂[d·σ(βd)]/∂d
          dx[i] = dy[i] * (a * g + p2[ch])
          dp1[ch] += dy[i] * x[i] * g
          dp2[ch] += dy[i] * x[i] * (1 - g)
          dbeta[bi] += dy[i] * d * d * sg * (1 - sg)
        }
      }
    }
    return (dx, dp1, dp2, dbeta)
  }
}
