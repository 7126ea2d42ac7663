// CompareStats: the statistics of `compare`'s report: mean and sample standard deviation, and
// the paired difference of two cells over the seeds they share with its 95% confidence interval
// from Student's t distribution (n − 1 degrees of freedom), whose quantile is computed here from
// the regularised incomplete beta function (no table, any df).
import Foundation

enum CompareStats {
  /// The mean of `xs` (nan when empty).
  static func mean(_ xs: [Double]) -> Double { xs.isEmpty ? .nan : xs.reduce(0, +) / Double(xs.count) }

  /// The sample standard deviation (n − 1 in the denominator; 0 for one value, nan for none).
  static func sd(_ xs: [Double]) -> Double {
    guard xs.count > 1 else { return xs.isEmpty ? .nan : 0 }
    let m = mean(xs)
    return (xs.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(xs.count - 1)).squareRoot()
  }

  /// A paired comparison: `b − a` per pair, its mean, sd, the CI and whether it excludes 0.
  struct Paired: Equatable, Codable {
    var n: Int
    var meanDifference: Double
    var sdDifference: Double
    /// The two-sided confidence interval of the mean difference (nil for fewer than 2 pairs).
    var low: Double?
    var high: Double?
    /// The t quantile used (nil for fewer than 2 pairs).
    var t: Double?
    /// Whether the interval excludes 0 (false for fewer than 2 pairs: nothing can be said).
    var significant: Bool
    /// The two-sided p-value of the paired t test (nil for fewer than 2 pairs; 0 when every
    /// difference is the same nonzero value, 1 when all are 0).
    var p: Double? = nil
    /// `p` adjusted by Holm's method over the comparisons of one family table (set by the
    /// report; nil until then).
    var pHolm: Double? = nil
    /// Whether `pHolm` is below 1 − level: the difference holds with the family-wise error
    /// rate controlled (nil until the report sets `pHolm`).
    var significantHolm: Bool? = nil
  }

  /// The paired difference `b[i] − a[i]` with its `level` (0.95) two-sided confidence interval
  /// mean ± t(1 − α/2, n − 1) · sd / √n.
  /// - Precondition: `a.count == b.count`.
  static func paired(_ a: [Double], _ b: [Double], level: Double = 0.95) -> Paired {
    precondition(a.count == b.count, "CompareStats.paired: \(a.count) and \(b.count) values")
    let d = zip(a, b).map { $1 - $0 }
    let m = mean(d), s = sd(d), n = d.count
    guard n >= 2 else { return Paired(n: n, meanDifference: m, sdDifference: s, low: nil, high: nil, t: nil, significant: false) }
    let t = studentTQuantile(1 - (1 - level) / 2, df: Double(n - 1))
    let half = t * s / Double(n).squareRoot()
    let (lo, hi) = (m - half, m + half)
    let p: Double
    if s > 0 {
      p = min(1, 2 * studentTCDF(-abs(m) / (s / Double(n).squareRoot()), df: Double(n - 1)))
    } else {
      p = m == 0 ? 1 : 0
    }
    return Paired(n: n, meanDifference: m, sdDifference: s, low: lo, high: hi, t: t, significant: lo > 0 || hi < 0, p: p)
  }

  /// Holm's step-down adjustment of `ps` (in their order): the i-th smallest p becomes
  /// max over j ≤ i of min(1, (m − j + 1) · p_(j)), for m = `ps.count`. A comparison whose
  /// adjusted p is below α is significant with the family-wise error rate at most α.
  static func holm(_ ps: [Double]) -> [Double] {
    let order = ps.indices.sorted { ps[$0] < ps[$1] }
    var adjusted = [Double](repeating: 1, count: ps.count)
    var running = 0.0
    for (rank, i) in order.enumerated() {
      running = max(running, min(1, Double(ps.count - rank) * ps[i]))
      adjusted[i] = running
    }
    return adjusted
  }

  /// P(T ≤ t) for Student's t with `df` degrees of freedom.
  static func studentTCDF(_ t: Double, df: Double) -> Double {
    let x = df / (df + t * t)
    let tail = 0.5 * regularizedIncompleteBeta(x, a: df / 2, b: 0.5)
    return t >= 0 ? 1 - tail : tail
  }

  /// The `p` quantile of Student's t with `df` degrees of freedom (bisection on the CDF, to
  /// 1e-12), for p in (0, 1).
  static func studentTQuantile(_ p: Double, df: Double) -> Double {
    precondition(p > 0 && p < 1 && df > 0, "studentTQuantile: p in (0, 1) and df > 0")
    var lo = -1.0, hi = 1.0
    while studentTCDF(lo, df: df) > p { lo *= 2 }
    while studentTCDF(hi, df: df) < p { hi *= 2 }
    for _ in 0..<200 where hi - lo > 1e-12 {
      let mid = (lo + hi) / 2
      if studentTCDF(mid, df: df) < p { lo = mid } else { hi = mid }
    }
    return (lo + hi) / 2
  }

  /// I_x(a, b), by the continued fraction of Numerical Recipes' `betacf` (Lentz's method),
  /// using the symmetry I_x(a, b) = 1 − I_{1−x}(b, a) where it converges faster.
  static func regularizedIncompleteBeta(_ x: Double, a: Double, b: Double) -> Double {
    if x <= 0 { return 0 }
    if x >= 1 { return 1 }
    let lbeta = lgamma(a + b) - lgamma(a) - lgamma(b)
    let front = exp(lbeta + a * log(x) + b * log(1 - x))
    if x < (a + 1) / (a + b + 2) { return front * continuedFraction(x, a, b) / a }
    return 1 - front * continuedFraction(1 - x, b, a) / b
  }

  private static func continuedFraction(_ x: Double, _ a: Double, _ b: Double) -> Double {
    let tiny = 1e-300
    var c = 1.0, d = 1 - (a + b) * x / (a + 1)
    if abs(d) < tiny { d = tiny }
    d = 1 / d
    var h = d
    for m in 1...300 {
      let m = Double(m)
      var num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
      for step in 0..<2 {
        d = 1 + num * d
        if abs(d) < tiny { d = tiny }
        c = 1 + num / c
        if abs(c) < tiny { c = tiny }
        d = 1 / d
        h *= d * c
        if step == 0 { num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)) }
      }
      if abs(d * c - 1) < 1e-15 { break }
    }
    return h
  }
}
