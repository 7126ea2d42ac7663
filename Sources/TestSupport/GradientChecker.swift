// GradientChecker: checks a Module's backward pass in two stages (after Caffe's
// `GradientChecker`, include/caffe/test/test_gradient_check_util.hpp, but against a Double twin).
//
// The scalar loss is L = Σ_i w_i·y_i with fixed random weights w (llm.c's "fakeloss"), so
// dL/dy = w exercises every output. The module's Double twin (`ReferenceLayer`) is evaluated at
// the same input and parameters:
//   1. the twin's analytic gradient against central differences of the twin in Double,
//        numeric = (L(θ + h) − L(θ − h)) / (2h),   h = 1e-5,
//      at a tight tolerance: |r − numeric| ≤ 1e-6·max(|r|, |numeric|) + 1e-9·(scale + Σ|w·y|);
//   2. the Float layer's forward output and analytic gradients against the twin's, at a relative
//      tolerance with an absolute floor tied to the tensor's scale (its largest |value|):
//        |a − r| ≤ threshold·|r| + layerAbsoluteTolerance·scale.
// Float central differences cannot resolve gradients below ~1e-3 of the loss's size, so a
// relative error floored at 1 (the old rule) passes any small gradient, right or wrong; here a
// gradient of 1e-4 off by a factor 2 fails.
// Points that sit within h of a kink (ReLU at 0, a max-pool tie) are skipped, either by
// Caffe's explicit rule on the input value or by noticing that the two one-sided differences
// disagree (the function is not smooth on [θ − h, θ + h]).
import NN
import TensorCore
import XCTest

/// Gradient checker for modules: the Double twin by central differences, the Float layer
/// against the twin.
public struct GradientChecker {
  /// The central-difference step h, applied to the Double twin's input and parameters.
  public var stepSize: Double
  /// The Float layer's relative tolerance against the twin: `|a − r| ≤ threshold·|r| + atol`.
  public var threshold: Double
  /// The Float layer's absolute floor as a fraction of the tensor's scale (its largest |r|):
  /// `atol = layerAbsoluteTolerance · max_i |r_i|` (see `vanishingFraction` for a tensor whose
  /// true gradient is 0).
  public var layerAbsoluteTolerance: Double
  /// The twin's relative tolerance against its central differences.
  public var referenceTolerance: Double
  /// The twin's absolute floor against its central differences, as a fraction of the magnitudes
  /// involved (the gradient's scale plus Σ|w·y|, the size of the loss whose rounding h divides).
  public var referenceAbsoluteTolerance: Double
  /// Seed for the loss weights w (and for sampling elements when `maxElementsPerTensor` is set).
  public var seed: UInt64
  /// Caffe's kink: skip *input* elements with `|x − kink| < kinkRange` (elementwise layers).
  public var kink: Float?
  /// See `kink`; defaults to the step size.
  public var kinkRange: Double
  /// Also skip any element where the one-sided differences `(L₊ − L₀)/h` and `(L₀ − L₋)/h`
  /// differ by more than `nonSmoothTolerance · max(|d₊|, |d₋|, scale)`: a kink inside the
  /// stencil, wherever it is in the module (a ReLU or max pool deep inside a network).
  public var skipsNonSmoothPoints: Bool
  /// See `skipsNonSmoothPoints` (default 1e-3). Smooth curvature also separates the one-sided
  /// differences (by about h·L''), which is why `assertGradients` limits the fraction of
  /// skipped points.
  public var nonSmoothTolerance: Double
  /// Check at most this many elements per tensor, chosen at random (nil: every element).
  public var maxElementsPerTensor: Int?
  /// Called before every forward pass, e.g. to rewind a Dropout layer's generator so that all
  /// passes draw the same mask.
  public var beforeForward: ((Module) -> Void)?
  /// The Double twin to check against; nil: `ReferenceLayer(module)` (every NN and ACON layer,
  /// and Sequentials of them).
  public var reference: ReferenceLayer?

  /// A checker with h = 1e-5, the twin at 1e-6 relative (1e-9 absolute floor), the Float
  /// layer at 1e-4 relative (1e-5 of the tensor's scale absolute), seed 1701.
  public init(
    stepSize: Double = 1e-5, threshold: Double = 1e-4, seed: UInt64 = 1701, kink: Float? = nil,
    kinkRange: Double? = nil, skipsNonSmoothPoints: Bool = false, nonSmoothTolerance: Double? = nil,
    maxElementsPerTensor: Int? = nil, beforeForward: ((Module) -> Void)? = nil,
    layerAbsoluteTolerance: Double = 1e-5, referenceTolerance: Double = 1e-6,
    referenceAbsoluteTolerance: Double = 1e-9, reference: ReferenceLayer? = nil
  ) {
    self.stepSize = stepSize
    self.threshold = threshold
    self.seed = seed
    self.kink = kink
    self.kinkRange = kinkRange ?? stepSize
    self.skipsNonSmoothPoints = skipsNonSmoothPoints
    self.nonSmoothTolerance = nonSmoothTolerance ?? 1e-3
    self.maxElementsPerTensor = maxElementsPerTensor
    self.beforeForward = beforeForward
    self.layerAbsoluteTolerance = layerAbsoluteTolerance
    self.referenceTolerance = referenceTolerance
    self.referenceAbsoluteTolerance = referenceAbsoluteTolerance
    self.reference = reference
  }

  /// Which comparison an element failed.
  public enum Stage: String, Sendable {
    /// The Double twin's analytic gradient against its central difference.
    case reference
    /// The Float layer's analytic gradient against the twin's.
    case layer
    /// The Float layer's output against the twin's (`tensor` is `"output"`).
    case forward
  }

  /// One element whose two values disagree.
  public struct Failure: CustomStringConvertible, Sendable {
    /// `"input"`, `"output"` or the parameter's dotted name.
    public var tensor: String
    /// The flat index in that tensor.
    public var index: Int
    /// The value under test: the twin's analytic gradient (stage `reference`) or the Float
    /// layer's gradient or output (stages `layer`, `forward`).
    public var analytic: Double
    /// What it is checked against: the central difference (stage `reference`) or the twin's
    /// value (stages `layer`, `forward`).
    public var numeric: Double
    /// `|analytic − numeric| / max(|numeric|, atol/rtol)`: the error relative to the value,
    /// with the absolute floor turned into a relative one (fails when above the stage's rtol).
    public var relativeError: Double
    /// The comparison that failed.
    public var stage: Stage = .layer

    public var description: String {
      let against = stage == .reference ? "numeric" : "reference"
      return "\(tensor)[\(index)] (\(stage.rawValue)): \(stage == .reference ? "reference analytic" : "layer") \(analytic), "
        + "\(against) \(numeric) (relative error \(relativeError))"
    }
  }

  /// What a check found.
  public struct Report: Sendable {
    /// Elements compared (both stages; the forward output is not counted).
    public var checked = 0
    /// Elements skipped as kinks.
    public var skipped = 0
    /// Elements out of tolerance, in check order.
    public var failures: [Failure] = []
    /// The largest `relativeError` of the Float layer's gradients against the twin's.
    public var maxRelativeError = 0.0
    /// The largest `relativeError` of the twin's gradients against central differences.
    public var maxReferenceError = 0.0
    /// Names of the tensors checked (`"input"` and parameter names).
    public var tensors: [String] = []
  }

  /// Errors that stop a check before any comparison.
  public struct SetupError: Error, CustomStringConvertible {
    public var description: String
  }

  /// A tensor whose largest true gradient is below this fraction of the largest over all
  /// checked tensors counts as vanishing: its absolute floors use the largest over all.
  public var vanishingFraction = 1e-6

  /// Checks `module`'s input gradient (unless it does not propagate one, or `checkInput` is
  /// false), every parameter gradient and the forward output at `input`, against the Double
  /// twin (`reference`, else `ReferenceLayer(module)`). The module's parameter gradients are
  /// zeroed and then hold the analytic gradients; a training-mode BatchNorm's running
  /// statistics move with every Float forward pass (they do not affect its training output).
  /// - Returns: the report; `assertGradients` turns it into test failures.
  /// - Throws: when the module has no twin, or the twin disagrees with it on shapes or names.
  public func check(
    _ module: Module, input: Tensor, checkInput: Bool = true, checkParameters: Bool = true
  ) throws -> Report {
    // The Double twin first: a module without one is an error before anything runs.
    let twin = try reference ?? ReferenceLayer(module, beforeForward: beforeForward)
    var rng = SeededGenerator(seed: seed)
    // The Float layer: forward, then backward with dy = w. Parameter gradients accumulate.
    beforeForward?(module)
    let y0 = try module.forward(input)
    let yF = y0.doubles
    let w = (0..<y0.count).map { _ in Double(rng.nextUniform(-1, 1)) }
    module.zeroGrad()
    let dy = Tensor(shape: y0.shape, values: w.map(Float.init))
    let dxF = try module.backward(dy).doubles
    let params = module.namedParameters()
    let paramGradsF = params.map { $0.1.grad.doubles }

    // The Double twin at the same point.
    guard twin.parameters.map(\.0) == params.map(\.0) else {
      throw SetupError(description: "GradientChecker: the reference \(twin.name) has parameters "
        + "\(twin.parameters.map(\.0)), the module \(params.map(\.0))")
    }
    let x = DoubleTensor(input)
    var theta = twin.parameters.map(\.1)
    let yD = twin.forward(x, theta)
    guard yD.count == y0.count else {
      throw SetupError(description: "GradientChecker: the reference \(twin.name) gives \(yD.shape), the module \(y0.shape)")
    }
    let dyD = DoubleTensor(shape: yD.shape, values: w)
    let (dxD, dThetaD) = twin.backward(x, theta, dyD)
    let lossMagnitude = zip(w, yD.values).reduce(0) { $0 + abs($1.0 * $1.1) }
    let l0 = loss(yD, w)

    var report = Report()
    // The forward output, Float against Double.
    let yScale = yD.values.reduce(0) { max($0, abs($1)) }
    for i in 0..<yD.count {
      let (ok, rel) = within(yF[i], yD[i], rtol: threshold, atol: layerAbsoluteTolerance * yScale)
      if !ok {
        report.failures.append(Failure(tensor: "output", index: i, analytic: yF[i], numeric: yD[i], relativeError: rel,
          stage: .forward))
      }
    }

    // (name, Float gradient, twin gradient, which tensor: -1 the input, k parameter k)
    var targets: [(String, [Double], [Double], Int)] = []
    if checkInput && module.propagatesInputGradient { targets.append(("input", dxF, dxD.values, -1)) }
    if checkParameters {
      for (k, (name, _)) in params.enumerated() { targets.append((name, paramGradsF[k], dThetaD[k].values, k)) }
    }

    var xPerturbed = x
    // A tensor whose true gradient vanishes (a bias before a training-mode BatchNorm) holds
    // rounding noise of the size of the gradients it is summed from: measure it against them.
    let globalScale = targets.reduce(0) { m, t in t.2.reduce(m) { max($0, abs($1)) } }
    for (name, floatGrad, refGrad, which) in targets {
      report.tensors.append(name)
      let count = which < 0 ? x.count : theta[which].count
      guard floatGrad.count == count, refGrad.count == count else {
        throw SetupError(description: "GradientChecker: \(name) has \(count) elements, its Float gradient "
          + "\(floatGrad.count), the reference's \(refGrad.count)")
      }
      let tensorScale = refGrad.reduce(0) { max($0, abs($1)) }
      let scale = tensorScale < vanishingFraction * globalScale ? globalScale : tensorScale
      var indices = Array(0..<count)
      if let cap = maxElementsPerTensor, cap < indices.count {
        indices.shuffle(using: &rng)
        indices = Array(indices.prefix(cap)).sorted()
      }
      for i in indices {
        let original = which < 0 ? x[i] : theta[which][i]
        if which < 0, let k = kink, abs(original - Double(k)) < kinkRange {
          report.skipped += 1
          continue
        }
        // Central difference of the twin in Double.
        func lossAt(_ v: Double) -> Double {
          if which < 0 {
            xPerturbed[i] = v
            defer { xPerturbed[i] = original }
            return loss(twin.forward(xPerturbed, theta), w)
          }
          theta[which][i] = v
          defer { theta[which][i] = original }
          return loss(twin.forward(x, theta), w)
        }
        let up = original + stepSize, down = original - stepSize
        let hUp = up - original, hDown = original - down
        let lp = lossAt(up), lm = lossAt(down)
        if skipsNonSmoothPoints {
          let dPlus = (lp - l0) / hUp, dMinus = (l0 - lm) / hDown
          if abs(dPlus - dMinus) > nonSmoothTolerance * max(abs(dPlus), abs(dMinus), scale) {
            report.skipped += 1
            continue
          }
        }
        let numeric = (lp - lm) / (hUp + hDown)
        report.checked += 1
        let (refOK, refRel) = within(refGrad[i], numeric, rtol: referenceTolerance, symmetric: true,
          atol: referenceAbsoluteTolerance * (scale + lossMagnitude))
        report.maxReferenceError = max(report.maxReferenceError, refRel)
        if !refOK {
          report.failures.append(Failure(tensor: name, index: i, analytic: refGrad[i], numeric: numeric,
            relativeError: refRel, stage: .reference))
        }
        let (ok, rel) = within(floatGrad[i], refGrad[i], rtol: threshold, atol: layerAbsoluteTolerance * scale)
        report.maxRelativeError = max(report.maxRelativeError, rel)
        if !ok {
          report.failures.append(Failure(tensor: name, index: i, analytic: floatGrad[i], numeric: refGrad[i],
            relativeError: rel, stage: .layer))
        }
      }
    }
    // Leave the module's cached state matching the unperturbed input.
    beforeForward?(module)
    _ = try module.forward(input)
    return report
  }

  /// Whether `|a − r| ≤ rtol·|r| + atol` (with `symmetric`, `rtol·max(|a|, |r|)`), and the
  /// relative error `|a − r| / max(|r|, atol/rtol)`.
  private func within(_ a: Double, _ r: Double, rtol: Double, symmetric: Bool = false, atol: Double) -> (Bool, Double) {
    let err = abs(a - r)
    let mag = symmetric ? max(abs(a), abs(r)) : abs(r)
    let ok = err <= rtol * mag + atol
    let rel = err / max(mag, atol / rtol, Double.leastNormalMagnitude)
    return (ok, rel)
  }

  /// Runs `check` and fails the calling test for each mismatch (the first few are listed),
  /// when nothing was compared, or when more than `maxSkippedFraction` of the elements were
  /// skipped as kinks (so a kink rule cannot quietly hide a broken backward pass).
  @discardableResult
  public func assertGradients(
    _ module: Module, input: Tensor, checkInput: Bool = true, checkParameters: Bool = true,
    maxSkippedFraction: Double = 0.25, _ message: @autoclosure () -> String = "",
    file: StaticString = #filePath, line: UInt = #line
  ) -> Report? {
    let report: Report
    do {
      report = try check(module, input: input, checkInput: checkInput, checkParameters: checkParameters)
    } catch {
      XCTFail("gradient check threw \(error). \(message())", file: file, line: line)
      return nil
    }
    let total = report.checked + report.skipped
    if report.checked == 0 {
      XCTFail("gradient check compared no elements (\(report.skipped) skipped). \(message())", file: file, line: line)
    } else if Double(report.skipped) > maxSkippedFraction * Double(total) {
      XCTFail("gradient check skipped \(report.skipped) of \(total) elements as kinks. \(message())",
        file: file, line: line)
    }
    if !report.failures.isEmpty {
      var shown = report.failures.prefix(5).map(\.description).joined(separator: "; ")
      if stepSize > 1e-4 && report.failures.contains(where: { $0.stage == .reference }) {
        shown += " (h = \(stepSize) is large for central differences in Double: their error grows as h²; the default is 1e-5)"
      }
      XCTFail("gradient check: \(report.failures.count) of \(report.checked) elements out of tolerance "
        + "(reference \(referenceTolerance), layer \(threshold); max relative errors: reference "
        + "\(report.maxReferenceError), layer \(report.maxRelativeError)): \(shown). \(message())",
        file: file, line: line)
    }
    return report
  }

  private func loss(_ y: DoubleTensor, _ w: [Double]) -> Double {
    var s = 0.0
    for i in 0..<y.count { s += w[i] * y[i] }
    return s
  }
}

/// The central-difference gradient of a scalar function of a tensor, for losses and other
/// functions that are not Modules: element i is `(f(x + h·e_i) − f(x − h·e_i)) / (2h)`, with
/// the Float-rounded step. `x` is restored afterwards.
public func numericGradient(
  at x: Tensor, stepSize h: Double = 1e-2, _ f: (Tensor) throws -> Double
) rethrows -> [Double] {
  var g = [Double](repeating: 0, count: x.count)
  for i in 0..<x.count {
    let original = x[i]
    let up = Float(Double(original) + h), down = Float(Double(original) - h)
    x[i] = up
    let fp = try f(x)
    x[i] = down
    let fm = try f(x)
    x[i] = original
    g[i] = (fp - fm) / (Double(up) - Double(down))
  }
  return g
}
