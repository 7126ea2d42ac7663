// GradientChecker: central-difference checks of a Module's backward pass, after Caffe's
// `GradientChecker` (include/caffe/test/test_gradient_check_util.hpp).
//
// The scalar loss is L = Σ_i w_i·y_i with fixed random weights w (llm.c's "fakeloss"), so
// dL/dy = w exercises every output. One forward + backward gives the analytic gradients (the
// parameter gradients are zeroed first, since backward accumulates); then every checked input and
// parameter element is nudged by ±h, the Float forward pass is re-run, L is summed in Double, and
//   numeric = (L(θ + h) − L(θ − h)) / (2h)
// is compared with the analytic value relative to max(|analytic|, |numeric|, 1).
// Points that sit within h of a kink (ReLU at 0, a max-pool tie) are skipped, either by
// Caffe's explicit rule on the input value or by noticing that the two one-sided differences
// disagree (the function is not smooth on [θ − h, θ + h]).
import NN
import TensorCore
import XCTest

/// Central-difference gradient checker for modules (Caffe's `GradientChecker`).
public struct GradientChecker {
  /// The step h. The actual step is the Float-rounded difference, which is what gets divided by.
  public var stepSize: Double
  /// The allowed `|analytic − numeric| / max(|analytic|, |numeric|, 1)`.
  public var threshold: Double
  /// Seed for the loss weights w (and for sampling elements when `maxElementsPerTensor` is set).
  public var seed: UInt64
  /// Caffe's kink: skip *input* elements with `|x − kink| < kinkRange` (elementwise layers).
  public var kink: Float?
  /// See `kink`; defaults to the step size.
  public var kinkRange: Double
  /// Also skip any element where the one-sided differences `(L₊ − L₀)/h` and `(L₀ − L₋)/h`
  /// differ by more than `nonSmoothTolerance · max(|d₊|, |d₋|, 1)`: a kink inside the stencil,
  /// wherever it is in the module (a ReLU or max pool deep inside a network).
  public var skipsNonSmoothPoints: Bool
  /// See `skipsNonSmoothPoints`. Defaults to `threshold`: a kink that changes the slope by
  /// less than this cannot push the central difference out of tolerance, and a larger one is
  /// caught. Smooth curvature also separates the one-sided differences (by about h·L''), which
  /// is why `assertGradients` limits the fraction of skipped points.
  public var nonSmoothTolerance: Double
  /// Check at most this many elements per tensor, chosen at random (nil: every element).
  public var maxElementsPerTensor: Int?
  /// Called before every forward pass, e.g. to rewind a Dropout layer's generator so that all
  /// passes draw the same mask.
  public var beforeForward: ((Module) -> Void)?

  /// A checker with Caffe's defaults (h = 1e-2, threshold 1e-3, seed 1701).
  public init(
    stepSize: Double = 1e-2, threshold: Double = 1e-3, seed: UInt64 = 1701, kink: Float? = nil,
    kinkRange: Double? = nil, skipsNonSmoothPoints: Bool = false, nonSmoothTolerance: Double? = nil,
    maxElementsPerTensor: Int? = nil, beforeForward: ((Module) -> Void)? = nil
  ) {
    self.stepSize = stepSize
    self.threshold = threshold
    self.seed = seed
    self.kink = kink
    self.kinkRange = kinkRange ?? stepSize
    self.skipsNonSmoothPoints = skipsNonSmoothPoints
    self.nonSmoothTolerance = nonSmoothTolerance ?? threshold
    self.maxElementsPerTensor = maxElementsPerTensor
    self.beforeForward = beforeForward
  }

  /// One element whose analytic and numeric derivatives disagree.
  public struct Failure: CustomStringConvertible, Sendable {
    /// `"input"` or the parameter's dotted name.
    public var tensor: String
    /// The flat index in that tensor.
    public var index: Int
    /// The backward pass's value.
    public var analytic: Double
    /// The central difference.
    public var numeric: Double
    /// `|analytic − numeric| / max(|analytic|, |numeric|, 1)`.
    public var relativeError: Double

    public var description: String {
      "\(tensor)[\(index)]: analytic \(analytic), numeric \(numeric) (relative error \(relativeError))"
    }
  }

  /// What a check found.
  public struct Report: Sendable {
    /// Elements compared.
    public var checked = 0
    /// Elements skipped as kinks.
    public var skipped = 0
    /// Elements out of tolerance, in check order.
    public var failures: [Failure] = []
    /// The largest relative error among compared elements.
    public var maxRelativeError = 0.0
    /// Names of the tensors checked (`"input"` and parameter names).
    public var tensors: [String] = []
  }

  /// Checks `module`'s input gradient (unless it does not propagate one, or `checkInput` is
  /// false) and every parameter gradient at `input`. The module's parameter gradients are
  /// zeroed and then hold the analytic gradients; a training-mode BatchNorm's running
  /// statistics move with every forward pass (they do not affect its training output).
  /// - Returns: the report; `assertGradients` turns it into test failures.
  public func check(
    _ module: Module, input: Tensor, checkInput: Bool = true, checkParameters: Bool = true
  ) throws -> Report {
    var rng = SeededGenerator(seed: seed)
    // Analytic pass. Parameter gradients accumulate, so clear them first.
    beforeForward?(module)
    let y0 = try module.forward(input)
    let outShape = y0.shape
    let w = (0..<y0.count).map { _ in Double(rng.nextUniform(-1, 1)) }
    let l0 = loss(y0, w)
    module.zeroGrad()
    let dy = Tensor(shape: outShape, values: w.map(Float.init))
    let dxTensor = try module.backward(dy)
    let dx = dxTensor.doubles
    let params = module.namedParameters()
    let paramGrads = params.map { $0.1.grad.doubles }

    var report = Report()
    var targets: [(String, Tensor, [Double], Bool)] = []
    if checkInput && module.propagatesInputGradient { targets.append(("input", input, dx, true)) }
    if checkParameters {
      for (i, (name, p)) in params.enumerated() { targets.append((name, p.value, paramGrads[i], false)) }
    }

    for (name, t, analytic, isInput) in targets {
      report.tensors.append(name)
      var indices = Array(0..<t.count)
      if let cap = maxElementsPerTensor, cap < indices.count {
        indices.shuffle(using: &rng)
        indices = Array(indices.prefix(cap)).sorted()
      }
      for i in indices {
        let original = t[i]
        if isInput, let k = kink, abs(Double(original) - Double(k)) < kinkRange {
          report.skipped += 1
          continue
        }
        let up = Float(Double(original) + stepSize), down = Float(Double(original) - stepSize)
        t[i] = up
        beforeForward?(module)
        let lp = loss(try module.forward(input), w)
        t[i] = down
        beforeForward?(module)
        let lm = loss(try module.forward(input), w)
        t[i] = original
        let hUp = Double(up) - Double(original), hDown = Double(original) - Double(down)
        if skipsNonSmoothPoints {
          let dPlus = (lp - l0) / hUp, dMinus = (l0 - lm) / hDown
          if abs(dPlus - dMinus) > nonSmoothTolerance * max(abs(dPlus), abs(dMinus), 1) {
            report.skipped += 1
            continue
          }
        }
        let numeric = (lp - lm) / (hUp + hDown)
        let a = analytic[i]
        let rel = abs(a - numeric) / max(abs(a), abs(numeric), 1)
        report.checked += 1
        report.maxRelativeError = max(report.maxRelativeError, rel)
        if !(rel <= threshold) {
          report.failures.append(Failure(tensor: name, index: i, analytic: a, numeric: numeric, relativeError: rel))
        }
      }
    }
    // Leave the module's cached state matching the unperturbed input.
    beforeForward?(module)
    _ = try module.forward(input)
    return report
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
      let shown = report.failures.prefix(5).map(\.description).joined(separator: "; ")
      XCTFail("gradient check: \(report.failures.count) of \(report.checked) elements out of tolerance "
        + "\(threshold) (max relative error \(report.maxRelativeError)): \(shown). \(message())",
        file: file, line: line)
    }
    return report
  }

  private func loss(_ y: Tensor, _ w: [Double]) -> Double {
    var s = 0.0
    for i in 0..<y.count { s += w[i] * Double(y[i]) }
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
