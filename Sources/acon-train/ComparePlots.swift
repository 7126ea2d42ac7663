// ComparePlots: the SVG figures of `compare`, written by hand (no dependency): line plots
// with an optional band per series (accuracy per epoch, mean and min–max over seeds, and the
// learned ACON curves), and grids of small histograms (one panel per layer).
import Foundation

/// A minimal SVG line plot: axes, ticks, one polyline per series, and a legend.
enum SVGPlot {
  /// `s` with XML's special characters escaped.
  static func escape(_ s: String) -> String {
    s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
      .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
  }

  /// A line plot of `series` (name, one y per x) over `xs`; the last `highlightLast` series are
  /// references (dashed, dark). `bands[i]`, when given, is a (low, high) pair per x shaded
  /// around series i.
  static func lines(title: String, xLabel: String, yLabel: String, xs: [Double], series: [(String, [Double])],
    highlightLast: Int = 0, bands: [(low: [Double], high: [Double])?] = []) -> String {
    let w = 720.0, h = 480.0, left = 70.0, right = 170.0, top = 40.0, bottom = 50.0
    let ys = (series.flatMap(\.1) + bands.flatMap { ($0?.low ?? []) + ($0?.high ?? []) }).filter(\.isFinite)
    var (ymin, ymax) = (ys.min() ?? 0, ys.max() ?? 1)
    if ymax - ymin < 1e-9 { ymin -= 1; ymax += 1 }
    let pad = (ymax - ymin) * 0.05
    ymin -= pad
    ymax += pad
    let xmin = xs.first ?? 0, xmax = max(xs.last ?? 1, xmin + 1e-9)
    func px(_ x: Double) -> Double { left + (x - xmin) / (xmax - xmin) * (w - left - right) }
    func py(_ y: Double) -> Double { top + (ymax - y) / (ymax - ymin) * (h - top - bottom) }
    let palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
    var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">\n"
    s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    s += "<text x=\"\(w / 2)\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">\(escape(title))</text>\n"
    s += "<line x1=\"\(left)\" y1=\"\(h - bottom)\" x2=\"\(w - right)\" y2=\"\(h - bottom)\" stroke=\"black\"/>\n"
    s += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(h - bottom)\" stroke=\"black\"/>\n"
    for i in 0...5 {
      let yv = ymin + (ymax - ymin) * Double(i) / 5, xv = xmin + (xmax - xmin) * Double(i) / 5
      s += "<text x=\"\(left - 6)\" y=\(String(format: "\"%.1f\"", py(yv) + 4)) text-anchor=\"end\">\(String(format: "%.2f", yv))</text>\n"
      s += "<text x=\(String(format: "\"%.1f\"", px(xv))) y=\"\(h - bottom + 16)\" text-anchor=\"middle\">\(String(format: "%.1f", xv))</text>\n"
    }
    s += "<text x=\"\((left + w - right) / 2)\" y=\"\(h - 12)\" text-anchor=\"middle\">\(escape(xLabel))</text>\n"
    s += "<text x=\"16\" y=\"\(h / 2)\" transform=\"rotate(-90 16 \(h / 2))\" text-anchor=\"middle\">\(escape(yLabel))</text>\n"
    let legendEvery = max(1, series.count / 20)
    for (i, (name, values)) in series.enumerated() {
      let isRef = i >= series.count - highlightLast
      let color = isRef ? (i == series.count - 1 ? "black" : "#555") : palette[i % palette.count]
      if i < bands.count, let band = bands[i] {
        let upper = zip(xs, band.high).filter { $0.1.isFinite }.map { String(format: "%.1f,%.1f", px($0.0), py($0.1)) }
        let lower = zip(xs, band.low).filter { $0.1.isFinite }.map { String(format: "%.1f,%.1f", px($0.0), py($0.1)) }
        if !upper.isEmpty {
          s += "<polygon fill=\"\(color)\" fill-opacity=\"0.18\" stroke=\"none\" points=\"\((upper + lower.reversed()).joined(separator: " "))\"/>\n"
        }
      }
      let points = zip(xs, values).filter { $0.1.isFinite }.map { String(format: "%.1f,%.1f", px($0.0), py($0.1)) }.joined(separator: " ")
      let width = isRef ? 2.5 : (highlightLast > 0 ? 0.8 : 2)
      let dash = isRef ? " stroke-dasharray=\"6 3\"" : ""
      s += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"\(width)\"\(dash) points=\"\(points)\"/>\n"
      if isRef || i % legendEvery == 0 && i / legendEvery < 20 {
        let ly = top + 14 * Double(isRef ? 21 + (i - (series.count - highlightLast)) : i / legendEvery)
        s += "<line x1=\"\(w - right + 10)\" y1=\"\(ly)\" x2=\"\(w - right + 30)\" y2=\"\(ly)\" stroke=\"\(color)\" stroke-width=\"2\"\(dash)/>\n"
        s += "<text x=\"\(w - right + 35)\" y=\"\(ly + 4)\">\(escape(name))</text>\n"
      }
    }
    return s + "</svg>\n"
  }

  /// One histogram panel: a title, the range [low, high] and equal-width bin counts.
  struct Histogram {
    var title: String
    var low: Double
    var high: Double
    var counts: [Int]

    /// `values` in `bins` equal bins over their own range (a single value: a bin of width 1).
    init(title: String, values: [Double], bins: Int = 20) {
      let v = values.filter(\.isFinite)
      var lo = v.min() ?? 0, hi = v.max() ?? 1
      if hi - lo < 1e-12 { lo -= 0.5; hi += 0.5 }
      var c = [Int](repeating: 0, count: bins)
      for x in v { c[min(bins - 1, max(0, Int((x - lo) / (hi - lo) * Double(bins))))] += 1 }
      self.init(title: title, low: lo, high: hi, counts: c)
    }

    init(title: String, low: Double, high: Double, counts: [Int]) {
      self.title = title
      self.low = low
      self.high = high
      self.counts = counts
    }
  }

  /// Small histograms in a grid, `columns` per row, each on its own x range (printed below it);
  /// bar heights are relative to each panel's largest bin. A vertical line marks x = `mark`
  /// where it falls inside a panel's range.
  static func histograms(title: String, note: String, panels: [Histogram], columns: Int = 5, mark: Double? = nil) -> String {
    let pw = 200.0, ph = 120.0, top = 56.0
    let rows = max(1, (panels.count + columns - 1) / columns)
    let w = pw * Double(columns) + 20, h = top + ph * Double(rows) + 10
    var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" font-family=\"sans-serif\" font-size=\"10\">\n"
    s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    s += "<text x=\"\(w / 2)\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">\(escape(title))</text>\n"
    s += "<text x=\"\(w / 2)\" y=\"40\" text-anchor=\"middle\" font-size=\"11\">\(escape(note))</text>\n"
    for (i, p) in panels.enumerated() {
      let x0 = 10 + pw * Double(i % columns), y0 = top + ph * Double(i / columns)
      let bx = x0 + 8, bw = pw - 16, by = y0 + 16, bh = ph - 44
      s += "<text x=\"\(x0 + pw / 2)\" y=\"\(y0 + 10)\" text-anchor=\"middle\" font-size=\"9\">\(escape(p.title))</text>\n"
      s += "<line x1=\"\(bx)\" y1=\"\(by + bh)\" x2=\"\(bx + bw)\" y2=\"\(by + bh)\" stroke=\"black\"/>\n"
      let peak = Double(max(1, p.counts.max() ?? 1)), n = Double(max(1, p.counts.count))
      for (j, c) in p.counts.enumerated() where c > 0 {
        let hgt = Double(c) / peak * bh
        s += String(format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#1f77b4\"/>\n",
          bx + bw * Double(j) / n, by + bh - hgt, max(0.5, bw / n - 0.5), hgt)
      }
      if let m = mark, m > p.low, m < p.high {
        let mx = bx + (m - p.low) / (p.high - p.low) * bw
        s += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#d62728\" stroke-dasharray=\"3 2\"/>\n",
          mx, by, mx, by + bh)
      }
      s += "<text x=\"\(bx)\" y=\"\(by + bh + 12)\">\(String(format: "%.3g", p.low))</text>\n"
      s += "<text x=\"\(bx + bw)\" y=\"\(by + bh + 12)\" text-anchor=\"end\">\(String(format: "%.3g", p.high))</text>\n"
    }
    return s + "</svg>\n"
  }
}
