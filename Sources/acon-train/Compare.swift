// compare: trains each model with each seed under the same settings, prints a table like the
// paper's (parameters, test accuracy mean ± std, images/s) and writes two SVG plots: test
// accuracy per epoch, and each learned ACON-C curve y(x) per channel beside ReLU and SiLU (for
// Meta-ACON-C with each channel's β averaged over a test batch).
import ACON
import ArgumentParser
import Foundation
import NN
import TensorCore
import Training

struct Compare: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Train several models over several seeds and compare them.")

  @Option(help: "Comma-separated models.") var models: String = "seed-relu,seed-aconc,seed-meta"
  @Option(help: "Seeds per model (0, 1, ...).") var seeds: Int = 3
  @Option(help: "Epochs per run.") var epochs: Int = 5
  @Option(help: "Stop each run after this many steps in all (for smoke tests); the table and plot show the epochs that ran.") var maxSteps: Int?
  @Option(help: "Batch size.") var batchSize: Int = 64
  @Option(help: "Learning rate (Adam).") var lr: Float = 1e-3
  @OptionGroup var dataOptions: DataOptions
  @Option(help: "Directory for the table (results.md, results.json) and the SVG plots.") var out: String = "compare-out"

  func run() throws {
    let kinds = models.split(separator: ",").map { parseModel(String($0)) }
    guard seeds >= 1, epochs >= 1 else { fail("--seeds and --epochs must be at least 1") }
    let data = reporting { try dataOptions.choice().load(directory: dataOptions.dataDir) }
    print("data: \(data.source)")
    // Fail before any training if the outputs can't go there.
    do {
      try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
    } catch {
      fail("\(out): cannot create the --out directory: \((error as NSError).localizedFailureReason ?? error.localizedDescription)")
    }
    guard access(out, W_OK) == 0 else { fail("\(out): the --out directory is not writable: \(String(cString: strerror(errno)))") }
    struct Run { var accuracy: [Double]; var imagesPerSecond: Double; var params: Int }
    var results: [(String, [Run])] = []
    var curves: [(String, [(p1: Float, p2: Float, beta: Float)])] = []
    for kind in kinds {
      var runs: [Run] = []
      for s in 0..<seeds {
        var o = TrainOptions()
        o.model = kind
        o.epochs = epochs
        o.maxSteps = maxSteps
        o.dataName = data.resolved.rawValue
        o.batchSize = batchSize
        o.learningRate = lr
        o.seed = UInt64(s)
        let trainer = reporting {
          try Trainer(options: o, train: data.train, test: data.test, normalization: data.normalization, factories: modelFactories)
        }
        let layers = trainer.model as? Sequential
        let records = reporting { try trainer.run() }
        let acc = records.map { $0.testAccuracy ?? 0 }
        let ips = records.map(\.imagesPerSecond).reduce(0, +) / Double(max(1, records.count))
        print(String(format: "%@ seed %d: test accuracy %@ (%.0f images/s)", kind as NSString, s,
          acc.map { String(format: "%.2f%%", $0 * 100) }.joined(separator: " → "), ips))
        runs.append(Run(accuracy: acc, imagesPerSecond: ips, params: trainer.model.parameterCount))
        if s == 0, let acon = layers?["acon1"] as? AconC {
          let p = Dictionary(uniqueKeysWithValues: acon.namedParameters())
          let c = acon.channels
          curves.append((kind, (0..<c).map { (p["p1"]!.value[$0], p["p2"]!.value[$0], p["beta"]!.value[$0]) }))
        } else if s == 0, let meta = layers?["acon1"] as? MetaAconC, let b = meta.lastBeta, b.shape[0] > 0 {
          // β depends on the input: each channel's mean over the last test batch evaluated.
          let rows = b.shape[0], c = meta.channels
          curves.append((kind, (0..<c).map { ch in
            let beta = (0..<rows).reduce(Float(0)) { $0 + b.data[$1 * c + ch] } / Float(rows)
            return (meta.p1.value[ch], meta.p2.value[ch], beta)
          }))
        }
      }
      results.append((kind, runs))
    }
    // The epochs that ran: all of them, unless --max-steps cut the runs short.
    let ran = results.flatMap { $0.1.map(\.accuracy.count) }.max() ?? 0
    guard ran > 0 else { fail("no epoch ran: --max-steps \(maxSteps ?? 0) leaves nothing to train") }
    // The table.
    var md = "| model | params | test accuracy (mean ± std over \(seeds) seeds, after \(ran) epochs) | images/s |\n|---|---:|---:|---:|\n"
    var json: [[String: Any]] = []
    for (kind, runs) in results {
      let finals = runs.map { $0.accuracy.last ?? 0 }
      let mean = finals.reduce(0, +) / Double(finals.count)
      let std = finals.count > 1 ? (finals.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(finals.count - 1)).squareRoot() : 0
      let ips = runs.map(\.imagesPerSecond).reduce(0, +) / Double(runs.count)
      md += String(format: "| %@ | %d | %.2f ± %.2f %% | %.0f |\n", kind as NSString, runs[0].params, mean * 100, std * 100, ips)
      json.append(["model": kind, "params": runs[0].params, "accuracy_mean": mean, "accuracy_std": std,
        "images_per_s": ips, "accuracy_per_epoch": runs.map(\.accuracy)])
    }
    print(md)
    // Each file is written atomically and checked: a failure names the file and exits non-zero.
    func save(_ name: String, _ text: String) throws {
      try writeFileAtomically(path: (out as NSString).appendingPathComponent(name), bytes: Array(text.utf8))
    }
    reporting {
      try save("results.md", md)
      let data = try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted, .sortedKeys])
      try writeFileAtomically(path: (out as NSString).appendingPathComponent("results.json"), bytes: [UInt8](data))
      // Each epoch's mean over the runs that reached it (a cut-short epoch is not drawn as 0%).
      let series = results.map { kind, runs in
        (kind, (0..<ran).map { e -> Double in
          let reached = runs.filter { $0.accuracy.count > e }.map { $0.accuracy[e] }
          return reached.isEmpty ? .nan : reached.reduce(0, +) / Double(reached.count) * 100
        })
      }
      try save("accuracy.svg", SVGPlot.lines(title: "Test accuracy per epoch (mean over \(seeds) seeds)", xLabel: "epoch",
        yLabel: "accuracy (%)", xs: (1...ran).map(Double.init), series: series))
      for (kind, coeffs) in curves {
        let xs = stride(from: -4.0, through: 4.0, by: 0.1).map { $0 }
        var series: [(String, [Double])] = coeffs.enumerated().map { c, k in
          ("channel \(c)", xs.map { x in
            let d = Double(k.p1 - k.p2) * x
            return d / (1 + exp(-Double(k.beta) * d)) + Double(k.p2) * x
          })
        }
        series.append(("ReLU", xs.map { max($0, 0) }))
        series.append(("SiLU", xs.map { $0 / (1 + exp(-$0)) }))
        let what = kind == ModelKind.seedMeta.rawValue ? "learned Meta-ACON-C curves (β: mean over a test batch)" : "learned ACON-C curves"
        try save("\(kind)-curves.svg", SVGPlot.lines(title: "\(kind): \(what), seed 0", xLabel: "x",
          yLabel: "y", xs: xs, series: series, highlightLast: 2))
      }
    }
    print("wrote \(out)/results.md, results.json, accuracy.svg" + (curves.isEmpty ? "" : " and the ACON curve plots"))
    finishOutput()
  }
}

/// A minimal SVG line plot: axes, ticks, one polyline per series, and a legend.
enum SVGPlot {
  static func lines(title: String, xLabel: String, yLabel: String, xs: [Double], series: [(String, [Double])],
    highlightLast: Int = 0) -> String {
    let w = 720.0, h = 480.0, left = 70.0, right = 170.0, top = 40.0, bottom = 50.0
    let ys = series.flatMap(\.1).filter(\.isFinite)
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
    s += "<text x=\"\(w / 2)\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">\(title)</text>\n"
    s += "<line x1=\"\(left)\" y1=\"\(h - bottom)\" x2=\"\(w - right)\" y2=\"\(h - bottom)\" stroke=\"black\"/>\n"
    s += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(h - bottom)\" stroke=\"black\"/>\n"
    for i in 0...5 {
      let yv = ymin + (ymax - ymin) * Double(i) / 5, xv = xmin + (xmax - xmin) * Double(i) / 5
      s += "<text x=\"\(left - 6)\" y=\(String(format: "\"%.1f\"", py(yv) + 4)) text-anchor=\"end\">\(String(format: "%.2f", yv))</text>\n"
      s += "<text x=\(String(format: "\"%.1f\"", px(xv))) y=\"\(h - bottom + 16)\" text-anchor=\"middle\">\(String(format: "%.1f", xv))</text>\n"
    }
    s += "<text x=\"\((left + w - right) / 2)\" y=\"\(h - 12)\" text-anchor=\"middle\">\(xLabel)</text>\n"
    s += "<text x=\"16\" y=\"\(h / 2)\" transform=\"rotate(-90 16 \(h / 2))\" text-anchor=\"middle\">\(yLabel)</text>\n"
    let legendEvery = max(1, series.count / 20)
    for (i, (name, values)) in series.enumerated() {
      let isRef = i >= series.count - highlightLast
      let color = isRef ? (i == series.count - 1 ? "black" : "#555") : palette[i % palette.count]
      let points = zip(xs, values).filter { $0.1.isFinite }.map { String(format: "%.1f,%.1f", px($0.0), py($0.1)) }.joined(separator: " ")
      let width = isRef ? 2.5 : (highlightLast > 0 ? 0.8 : 2)
      let dash = isRef ? " stroke-dasharray=\"6 3\"" : ""
      s += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"\(width)\"\(dash) points=\"\(points)\"/>\n"
      if isRef || i % legendEvery == 0 && i / legendEvery < 20 {
        let ly = top + 14 * Double(isRef ? 21 + (i - (series.count - highlightLast)) : i / legendEvery)
        s += "<line x1=\"\(w - right + 10)\" y1=\"\(ly)\" x2=\"\(w - right + 30)\" y2=\"\(ly)\" stroke=\"\(color)\" stroke-width=\"2\"\(dash)/>\n"
        s += "<text x=\"\(w - right + 35)\" y=\"\(ly + 4)\">\(name)</text>\n"
      }
    }
    return s + "</svg>\n"
  }
}
