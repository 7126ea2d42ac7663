// CompareReport: `compare`'s report from the finished cells: per network family a table (mean
// ± sd accuracy, the paired difference against the family's ReLU cell with its 95% t interval,
// its p-value and Holm's adjustment over the family's comparisons, images/s, peak memory, and
// how far the ACON parameters moved from their initial values), results.md, results.json (one row per model) and report.json (the
// families' statistics and every cell), and the SVG figures (accuracy per epoch with a band over
// seeds, learned ACON coefficients per layer, Meta-ACON's β over the evaluation images).
import Foundation
import Training

/// One model's row of a family table.
struct ModelRow: Codable, Equatable {
  var model: String
  var activation: String
  var params: Int
  var seeds: [Int]
  var finalAccuracies: [Double]
  var accuracyMean: Double
  var accuracySd: Double
  /// The paired difference (this model − the family's ReLU model) over the seeds both ran.
  var versus: String?
  var difference: CompareStats.Paired?
  var imagesPerSecond: Double
  /// The largest VmHWM over this model's cells (bytes).
  var peakRssBytes: Int?
  /// How far its ACON parameters moved from their initial values (nil: no ACON layers, or no
  /// initial values given).
  var drift: ParameterDrift? = nil
}

/// How far a model's ACON parameters moved in training, pooled over its cells, layers and
/// channels: did the network learn its activations, or keep the random ones it started with?
struct ParameterDrift: Codable, Equatable {
  /// Channels pooled (cells × layers × channels).
  var channels: Int
  /// Median of |p1 − p2| at the start (p1, p2 ~ N(0, 1): about 0.95).
  var medianAbsInitialP1MinusP2: Double
  /// Median of |final − initial| of p1 − p2.
  var medianAbsChangeP1MinusP2: Double
  /// Pearson correlation of p1 − p2 at the start and the end, over the pooled channels (1: the
  /// channels kept their initial order and spread).
  var correlationP1MinusP2: Double
  /// Median and largest |final − initial| of ACON-C's β (nil for Meta-ACON: its β is computed).
  var medianAbsChangeBeta: Double?
  var maxAbsChangeBeta: Double?

  /// The drift of `cells` from `initial` (keyed `MODEL-seedS`, layers matched by name); nil when
  /// no layer of any cell has initial values.
  static func of(_ cells: [CellResult], initial: [String: [AconLayerStats]]) -> ParameterDrift? {
    var start: [Double] = [], end: [Double] = [], beta: [Double] = []
    for c in cells {
      guard let first = initial["\(c.model)-seed\(c.seed)"] else { continue }
      let byName = Dictionary(first.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
      for l in c.aconLayers {
        guard let i = byName[l.name], i.p1MinusP2.count == l.p1MinusP2.count else { continue }
        start += i.p1MinusP2.map(Double.init)
        end += l.p1MinusP2.map(Double.init)
        if let b0 = i.beta, let b1 = l.beta, b0.count == b1.count { beta += zip(b0, b1).map { abs(Double($1) - Double($0)) } }
      }
    }
    guard !start.isEmpty else { return nil }
    func median(_ v: [Double]) -> Double {
      let s = v.sorted(), n = s.count
      return n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2
    }
    let ms = CompareStats.mean(start), me = CompareStats.mean(end)
    var sxy = 0.0, sxx = 0.0, syy = 0.0
    for (x, y) in zip(start, end) {
      sxy += (x - ms) * (y - me)
      sxx += (x - ms) * (x - ms)
      syy += (y - me) * (y - me)
    }
    return ParameterDrift(channels: start.count, medianAbsInitialP1MinusP2: median(start.map(abs)),
      medianAbsChangeP1MinusP2: median(zip(start, end).map { abs($1 - $0) }),
      correlationP1MinusP2: sxx > 0 && syy > 0 ? sxy / (sxx * syy).squareRoot() : .nan,
      medianAbsChangeBeta: beta.isEmpty ? nil : median(beta), maxAbsChangeBeta: beta.max())
  }
}

/// A family table.
struct FamilyTable: Codable, Equatable {
  var family: String
  var split: String
  var rows: [ModelRow]
}

enum CompareReport {
  /// The family tables of `cells` (models in `models` order; families in order of first
  /// appearance); `initial` (`CompareGrid.initialAconLayers`) gives each row its `drift`.
  static func tables(_ cells: [CellResult], models: [String], initial: [String: [AconLayerStats]] = [:]) -> [FamilyTable] {
    var families: [String] = []
    for m in models where !families.contains(CompareGrid.family(of: m).family) { families.append(CompareGrid.family(of: m).family) }
    return families.map { fam in
      let members = models.filter { CompareGrid.family(of: $0).family == fam }
      let ref = members.first { CompareGrid.family(of: $0).activation == "relu" }
      let refCells = Dictionary(cells.filter { $0.model == ref }.map { ($0.seed, $0.finalAccuracy) }, uniquingKeysWith: { a, _ in a })
      var rows = members.compactMap { m -> ModelRow? in
        let mine = cells.filter { $0.model == m }.sorted { $0.seed < $1.seed }
        guard let first = mine.first else { return nil }
        let acc = mine.map(\.finalAccuracy)
        var diff: CompareStats.Paired?
        if let ref, ref != m {
          let common = mine.filter { refCells[$0.seed] != nil }
          diff = CompareStats.paired(common.map { refCells[$0.seed]! }, common.map(\.finalAccuracy))
        }
        return ModelRow(model: m, activation: CompareGrid.family(of: m).activation, params: first.params, seeds: mine.map(\.seed),
          finalAccuracies: acc, accuracyMean: CompareStats.mean(acc), accuracySd: CompareStats.sd(acc),
          versus: ref == m ? nil : ref, difference: diff, imagesPerSecond: CompareStats.mean(mine.map(\.imagesPerSecond)),
          peakRssBytes: mine.compactMap(\.peakRssBytes).max(), drift: ParameterDrift.of(mine, initial: initial))
      }
      // Holm over the family's comparisons that have a p-value (each activation against ReLU).
      let tested = rows.indices.filter { rows[$0].difference?.p != nil }
      for (i, adjusted) in zip(tested, CompareStats.holm(tested.map { rows[$0].difference!.p! })) {
        rows[i].difference!.pHolm = adjusted
        rows[i].difference!.significantHolm = adjusted < 0.05
      }
      return FamilyTable(family: fam, split: cells.first?.split ?? "test", rows: rows)
    }
  }

  /// A warning when the cells trained with different thread counts (empty otherwise): OpenBLAS
  /// rounds large products differently per thread count, so such cells are not bit for bit the
  /// runs the same command with one count gives (the comparison stays valid, the pairs less tight).
  static func threadsNote(_ cells: [CellResult]) -> String {
    let counts = Dictionary(grouping: cells.compactMap(\.threads), by: { $0 }).mapValues(\.count)
    guard counts.count > 1 else { return "" }
    let list = counts.keys.sorted().map { "\($0) thread\($0 == 1 ? "" : "s"): \(counts[$0]!) cells" }.joined(separator: ", ")
    return "Note: the cells trained with different --threads (\(list)); each count rounds differently.\n\n"
  }

  /// The tables in Markdown (accuracies and differences in percentage points).
  static func markdown(_ tables: [FamilyTable], epochs: Int) -> String {
    var md = ""
    for t in tables {
      let n = t.rows.map(\.seeds.count).max() ?? 0
      md += "### \(t.family)\n\n"
      md += "| model | params | \(t.split) accuracy (mean ± sd over \(n) seeds, after \(epochs) epochs) "
        + "| paired Δ vs ReLU (95% CI, t, n−1 df) | p (Holm over \(t.rows.filter { $0.difference?.p != nil }.count)) "
        + "| significant (CI; Holm) | images/s | peak memory |\n"
      md += "|---|---:|---:|---:|---:|:---:|---:|---:|\n"
      for r in t.rows {
        var delta = "—", sig = "—", p = "—"
        if let d = r.difference {
          if let lo = d.low, let hi = d.high {
            delta = String(format: "%+.2f [%+.2f, %+.2f] (n = %d)", d.meanDifference * 100, lo * 100, hi * 100, d.n)
            sig = (d.significant ? "yes" : "no") + "; " + (d.significantHolm.map { $0 ? "yes" : "no" } ?? "—")
            if let raw = d.p { p = String(format: "%.3g (%.3g)", raw, d.pHolm ?? raw) }
          } else {
            delta = d.n == 1 ? String(format: "%+.2f (n = 1, no CI)", d.meanDifference * 100) : "no common seeds"
          }
        } else if r.versus == nil, r.activation == "relu" {
          delta = "(reference)"
        }
        let mem = r.peakRssBytes.map { String(format: "%.0f MB", Double($0) / 1_048_576) } ?? "—"
        md += String(format: "| %@ | %d | %.2f ± %.2f %% | %@ | %@ | %@ | %.0f | %@ |\n", r.model as NSString, r.params,
          r.accuracyMean * 100, r.accuracySd * 100, delta as NSString, p as NSString, sig as NSString, r.imagesPerSecond,
          mem as NSString)
      }
      md += "\n"
      let drifting = t.rows.filter { $0.drift != nil }
      if !drifting.isEmpty {
        md += "How far the ACON parameters moved from their initial values (all cells, layers and channels pooled):\n\n"
        md += "| model | channels | median \\|p1 − p2\\| at start | median \\|Δ(p1 − p2)\\| | corr(start, end) of p1 − p2 "
          + "| median \\|Δβ\\| (largest) |\n|---|---:|---:|---:|---:|---:|\n"
        for r in drifting {
          let d = r.drift!
          let beta = d.medianAbsChangeBeta.map { String(format: "%.4f (%.3f)", $0, d.maxAbsChangeBeta ?? .nan) } ?? "— (computed)"
          md += String(format: "| %@ | %d | %.3f | %.4f | %.4f | %@ |\n", r.model as NSString, d.channels,
            d.medianAbsInitialP1MinusP2, d.medianAbsChangeP1MinusP2, d.correlationP1MinusP2, beta as NSString)
        }
        md += "\n"
      }
    }
    return md
  }

  /// Writes results.md, results.json, report.json and the SVG figures into `out`; returns the
  /// names of the files written. Each write is atomic; a failure names the file.
  @discardableResult
  static func write(_ cells: [CellResult], models: [String], settings: GridSettings, out: String,
    initial: [String: [AconLayerStats]] = [:]) throws -> [String] {
    var written: [String] = []
    func save(_ name: String, _ bytes: [UInt8]) throws {
      try writeFileAtomically(path: (out as NSString).appendingPathComponent(name), bytes: bytes)
      written.append(name)
    }
    let ran = cells.map(\.accuracyPerEpoch.count).max() ?? 0
    let tables = tables(cells, models: models, initial: initial)
    try save("results.md", Array((threadsNote(cells) + markdown(tables, epochs: ran)).utf8))
    // One row per model (the format earlier versions wrote), then everything in report.json.
    let rows: [[String: Any]] = tables.flatMap(\.rows).map { r in
      let mine = cells.filter { $0.model == r.model }.sorted { $0.seed < $1.seed }
      return ["model": r.model, "params": r.params, "accuracy_mean": r.accuracyMean, "accuracy_std": r.accuracySd,
        "images_per_s": r.imagesPerSecond, "accuracy_per_epoch": mine.map(\.accuracyPerEpoch)]
    }
    try save("results.json", [UInt8](try JSONSerialization.data(withJSONObject: rows, options: [.prettyPrinted, .sortedKeys])))
    struct Report: Codable { var settings: GridSettings; var tables: [FamilyTable]; var cells: [CellResult] }
    try save("report.json", [UInt8](try CompareGrid.encoder.encode(Report(settings: settings, tables: tables, cells: cells))))

    // Accuracy per epoch: every model on one plot, then one per family with mean ± sd bands.
    guard ran > 0 else { return written }
    let xs = (1...ran).map(Double.init)
    func curve(_ model: String) -> (mean: [Double], low: [Double], high: [Double]) {
      let mine = cells.filter { $0.model == model }
      var m: [Double] = [], lo: [Double] = [], hi: [Double] = []
      for e in 0..<ran {
        let v = mine.filter { $0.accuracyPerEpoch.count > e }.map { $0.accuracyPerEpoch[e] * 100 }.filter(\.isFinite)
        let mu = v.isEmpty ? .nan : CompareStats.mean(v), sd = v.count > 1 ? CompareStats.sd(v) : 0
        m.append(mu)
        lo.append(mu - sd)
        hi.append(mu + sd)
      }
      return (m, lo, hi)
    }
    let present = models.filter { m in cells.contains { $0.model == m } }
    let seeds = Set(cells.map(\.seed)).count
    let split = settings.evaluationSplit
    try save("accuracy.svg", Array(SVGPlot.lines(title: "\(split.capitalized) accuracy per epoch (mean over \(seeds) seeds)",
      xLabel: "epoch", yLabel: "accuracy (%)", xs: xs, series: present.map { ($0, curve($0).mean) }).utf8))
    for t in tables {
      let ms = t.rows.map(\.model)
      let cs = ms.map(curve)
      try save("accuracy-\(t.family).svg", Array(SVGPlot.lines(
        title: "\(t.family): \(split) accuracy per epoch (mean ± sd over seeds)", xLabel: "epoch", yLabel: "accuracy (%)",
        xs: xs, series: zip(ms, cs).map { ($0, $1.mean) }, bands: cs.map { ($0.low, $0.high) }).utf8))
    }

    // Learned coefficients per ACON layer, pooled over seeds.
    for m in present {
      let mine = cells.filter { $0.model == m }.sorted { $0.seed < $1.seed }
      guard let first = mine.first, !first.aconLayers.isEmpty else { continue }
      let layers = first.aconLayers.map(\.name)
      func pooled(_ name: String, _ pick: (AconLayerStats) -> [Float]?) -> [Double] {
        mine.flatMap { c in c.aconLayers.first { $0.name == name }.flatMap(pick)?.map(Double.init) ?? [] }
      }
      let note = "per layer, across channels, pooled over \(mine.count) seed(s), at the end of training"
      if first.aconLayers.contains(where: { $0.beta != nil }) {
        try save("\(m)-beta.svg", Array(SVGPlot.histograms(title: "\(m): learned β per ACON layer", note: note + " (red: β = 0, linear)",
          panels: layers.map { SVGPlot.Histogram(title: $0, values: pooled($0) { $0.beta }) }, mark: 0).utf8))
      }
      try save("\(m)-p1-p2.svg", Array(SVGPlot.histograms(title: "\(m): learned p1 − p2 per ACON layer", note: note + " (red: 0)",
        panels: layers.map { SVGPlot.Histogram(title: $0, values: pooled($0) { $0.p1MinusP2 }) }, mark: 0).utf8))
      // Meta-ACON: β over the evaluation images, per layer (the lowest seed).
      if !first.metaBeta.isEmpty {
        let panels = first.metaBeta.map { b in
          SVGPlot.Histogram(title: String(format: "%@ · sd %.3f", b.name as NSString, b.meanChannelSd),
            low: Double(b.min), high: Double(b.max), counts: b.histogram)
        }
        try save("\(m)-beta-over-images.svg", Array(SVGPlot.histograms(title: "\(m): β over \(split) images per Meta-ACON layer",
          note: "every (image, channel) β of \(first.metaBeta[0].images) images, seed \(first.seed); sd: the mean over channels of β's sd over images",
          panels: panels, mark: 0).utf8))
      }
      // The learned curves of the first ACON layer (lowest seed), beside ReLU and SiLU.
      let l = first.aconLayers[0]
      let betas: [Float]? = l.beta ?? first.metaBeta.first { $0.name == l.name }?.channelMean
      if let betas {
        let xsCurve = stride(from: -4.0, through: 4.0, by: 0.1).map { $0 }
        var series: [(String, [Double])] = (0..<l.p2.count).map { c in
          let d = Double(l.p1MinusP2[c]), p2 = Double(l.p2[c]), b = Double(betas[c])
          return ("channel \(c)", xsCurve.map { x in d * x / (1 + exp(-b * d * x)) + p2 * x })
        }
        series.append(("ReLU", xsCurve.map { max($0, 0) }))
        series.append(("SiLU", xsCurve.map { $0 / (1 + exp(-$0)) }))
        let what = l.beta == nil ? "learned Meta-ACON-C curves (β: mean over \(split) images)" : "learned ACON-C curves"
        try save("\(m)-curves.svg", Array(SVGPlot.lines(title: "\(m) \(l.name): \(what), seed \(first.seed)", xLabel: "x",
          yLabel: "y", xs: xsCurve, series: series, highlightLast: 2).utf8))
      }
    }
    return written
  }
}
