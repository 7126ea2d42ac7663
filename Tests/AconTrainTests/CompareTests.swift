// CompareTests: `acon-train compare`'s grid (a tiny grid of the seed networks on synthetic data
// finishes; a rerun skips the finished cells; a cell cut short resumes from its checkpoint;
// cells are paired), its statistics (Student's t quantile, the paired 95% interval, the paired
// t test's p-value and Holm's adjustment against hand-computed values) and its SVG figures (well-formed XML).
import Foundation
import NN
import TensorCore
import Training
import XCTest

#if canImport(FoundationXML)
  import FoundationXML
#endif

@testable import acon_train

final class CompareStatsTests: XCTestCase {
  func testStudentTQuantilesMatchTheTables() {
    // Two-sided 95%: t(0.975, df) from the standard tables.
    for (df, t) in [(1.0, 12.7062047362), (4, 2.7764451052), (9, 2.2621571628), (30, 2.0422724563)] {
      XCTAssertEqual(CompareStats.studentTQuantile(0.975, df: df), t, accuracy: 1e-8, "df \(df)")
    }
    // Closed forms: df 1 is Cauchy, F(1) = 3/4; df 2: F(t) = 1/2 + t / (2 √(2 + t²)).
    XCTAssertEqual(CompareStats.studentTCDF(1, df: 1), 0.75, accuracy: 1e-12)
    XCTAssertEqual(CompareStats.studentTCDF(1, df: 2), 0.5 + 1 / (2 * 3.0.squareRoot()), accuracy: 1e-12)
    XCTAssertEqual(CompareStats.studentTCDF(-1, df: 2), 0.5 - 1 / (2 * 3.0.squareRoot()), accuracy: 1e-12)
    XCTAssertEqual(CompareStats.studentTCDF(0, df: 7), 0.5, accuracy: 1e-15)
  }

  func testPairedIntervalByHand() {
    // d = b − a = [.01, .02, .01, .00, .03]: mean .014, Σ(d − mean)² = 520e-6, sd = √(130e-6),
    // half width t(.975, 4) · sd / √5 = 0.0141571478: the interval holds 0, not significant.
    let a = [0.90, 0.91, 0.89, 0.92, 0.90], b = [0.91, 0.93, 0.90, 0.92, 0.93]
    let p = CompareStats.paired(a, b)
    XCTAssertEqual(p.n, 5)
    XCTAssertEqual(p.meanDifference, 0.014, accuracy: 1e-12)
    XCTAssertEqual(p.sdDifference, 130e-6.squareRoot(), accuracy: 1e-12)
    XCTAssertEqual(p.low!, 0.014 - 0.0141571478, accuracy: 1e-9)
    XCTAssertEqual(p.high!, 0.014 + 0.0141571478, accuracy: 1e-9)
    XCTAssertFalse(p.significant)
    // d = [.02, .03, .025, .02, .03]: mean .025, sd .005, half width 0.0062083200: significant.
    let q = CompareStats.paired([0, 0, 0, 0, 0], [0.02, 0.03, 0.025, 0.02, 0.03])
    XCTAssertEqual(q.low!, 0.025 - 0.0062083200, accuracy: 1e-9)
    XCTAssertEqual(q.high!, 0.025 + 0.0062083200, accuracy: 1e-9)
    XCTAssertTrue(q.significant)
    // A worse activation: the interval lies below 0, significant too.
    XCTAssertTrue(CompareStats.paired([0.02, 0.03, 0.025, 0.02, 0.03], [0, 0, 0, 0, 0]).significant)
    // One pair: no interval, nothing claimed.
    let one = CompareStats.paired([0.5], [0.6])
    XCTAssertNil(one.low)
    XCTAssertFalse(one.significant)
    XCTAssertEqual(CompareStats.sd([1, 2, 3, 4]), (5.0 / 3).squareRoot(), accuracy: 1e-12)
  }

  func testPairedPValueAndHolmByHand() {
    // d = [.01, .02, .03]: mean .02, sd .01, t = .02 / (.01 / √3) = 2√3 with 2 df, where
    // F(t) = 1/2 + t / (2 √(2 + t²)): two-sided p = 1 − 2√3 / √14 = 1 − √(6/7) ≈ 0.0742.
    let three = CompareStats.paired([0.5, 0.5, 0.5], [0.51, 0.52, 0.53])
    XCTAssertEqual(three.p!, 1 - (6.0 / 7).squareRoot(), accuracy: 1e-10)
    XCTAssertFalse(three.significant)
    // The same p for the opposite sign.
    XCTAssertEqual(CompareStats.paired([0.51, 0.52, 0.53], [0.5, 0.5, 0.5]).p!, three.p!, accuracy: 1e-12)
    // p < 0.05 exactly when the 95% interval excludes 0 (the two must agree).
    let a = [0.90, 0.91, 0.89, 0.92, 0.90]
    for b in [[0.91, 0.93, 0.90, 0.92, 0.93], [0.92, 0.93, 0.915, 0.94, 0.93], [0.89, 0.90, 0.89, 0.915, 0.89]] {
      let d = CompareStats.paired(a, b)
      XCTAssertEqual(d.p! < 0.05, d.significant, "\(b): p \(d.p!), CI [\(d.low!), \(d.high!)]")
    }
    // Constant differences: p 0 (nonzero) or 1 (zero); one pair: no p.
    XCTAssertEqual(CompareStats.paired([0, 0], [0.1, 0.1]).p, 0)
    XCTAssertEqual(CompareStats.paired([0.3, 0.4], [0.3, 0.4]).p, 1)
    XCTAssertNil(CompareStats.paired([0.5], [0.6]).p)
    // Holm: sorted .01 · 3 = .03, .03 · 2 = .06, .04 · 1 = .04 → max(.06, .04) = .06; in the input order.
    let adjusted = CompareStats.holm([0.04, 0.01, 0.03])
    for (x, y) in zip(adjusted, [0.06, 0.03, 0.06]) { XCTAssertEqual(x, y, accuracy: 1e-15) }
    XCTAssertEqual(CompareStats.holm([0.6, 0.5]), [1, 1])
    XCTAssertEqual(CompareStats.holm([0.02]), [0.02])
    XCTAssertEqual(CompareStats.holm([]), [])
  }

  func testFamiliesAndReferences() {
    XCTAssertTrue(CompareGrid.family(of: "shufflenetv2-0.5x-aconc") == ("shufflenetv2-0.5x", "aconc"))
    XCTAssertTrue(CompareGrid.family(of: "tfnet-0.5") == ("shufflenetv2-0.5x", "tfnet"))
    XCTAssertTrue(CompareGrid.family(of: "seed-meta") == ("seed", "meta"))
    let names = ["seed-relu", "seed-aconc", "shufflenetv2-0.5x-relu", "tfnet-0.5"]
    XCTAssertEqual(CompareGrid.reluReference(of: "seed-aconc", names: names), "seed-relu")
    XCTAssertNil(CompareGrid.reluReference(of: "seed-relu", names: names))
    XCTAssertEqual(CompareGrid.reluReference(of: "tfnet-0.5", names: names), "shufflenetv2-0.5x-relu")
  }
}

final class CompareGridTests: XCTestCase {
  var out = ""

  override func setUp() {
    out = FileManager.default.temporaryDirectory.appendingPathComponent("acon-compare-\(UUID().uuidString)").path
  }

  override func tearDown() { try? FileManager.default.removeItem(atPath: out) }

  func settings(maxSteps: Int) -> GridSettings {
    GridSettings(recipe: "acon-small", epochs: 2, maxSteps: maxSteps, batchSize: 8, optimizer: "sgd", lr: 0.05, momentum: 0.9,
      weightDecay: 4e-5, schedule: "linear", warmupSteps: 0, labelSmoothing: 0.1, cropPadding: 2, flip: true,
      data: "synthetic", valSplit: 0.25, splitSeed: 0, betaImages: 12)
  }

  func runGrid(_ s: GridSettings, models: [String], seeds: Int, progress: @escaping (String) -> Void = { _ in }) throws
    -> (cells: [CellResult], trained: [String], elsewhere: [String]) {
    let data = SyntheticShapes.make(count: 64, seed: 1)
    let (train, val) = try CompareGrid.split(data, share: s.valSplit!, seed: s.splitSeed)
    return try CompareGrid.runGrid(models: models, seeds: seeds, settings: s, out: out, checkpointEvery: 1, train: train,
      eval: val, normalization: data.normalization, names: modelNames, build: buildModel, progress: progress)
  }

  func testTinyGridFinishesSkipsWhatIsDoneAndWritesTheReport() throws {
    let models = ["seed-relu", "seed-aconc", "seed-meta"]
    let s = settings(maxSteps: 10)  // 48 training images, batch 8: 6 steps per epoch, 2 epochs cut at 10 steps
    try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
    try CompareGrid.checkManifest(out, s)
    let first = try runGrid(s, models: models, seeds: 2)
    XCTAssertEqual(first.trained, ["seed-relu-seed0", "seed-aconc-seed0", "seed-meta-seed0", "seed-relu-seed1", "seed-aconc-seed1", "seed-meta-seed1"])
    for c in first.cells {
      XCTAssertEqual(c.accuracyPerEpoch.count, 2, c.model)
      XCTAssertEqual(c.steps, 10, c.model)
      XCTAssertEqual(c.split, "validation")
      XCTAssertTrue(c.imagesPerSecond > 0)
      // The checkpoints are gone once the result is safe; the log stays.
      let dir = CompareGrid.cellDirectory(out, model: c.model, seed: c.seed)
      XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/checkpoint.safetensors"))
      XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/log.jsonl"))
    }
    let aconc = first.cells.first { $0.model == "seed-aconc" }!
    XCTAssertEqual(aconc.sharedInitWith, "seed-relu")
    XCTAssertGreaterThan(aconc.sharedParameters, 0)
    XCTAssertEqual(aconc.aconLayers.first?.beta?.count, aconc.aconLayers.first?.p1MinusP2.count)
    let meta = first.cells.first { $0.model == "seed-meta" }!
    XCTAssertFalse(meta.metaBeta.isEmpty)
    XCTAssertEqual(meta.metaBeta[0].images, 12)
    XCTAssertEqual(meta.metaBeta[0].histogram.reduce(0, +), 12 * meta.metaBeta[0].channels)

    // The same grid again: nothing trains, the results read back equal.
    let again = try runGrid(s, models: models, seeds: 2)
    XCTAssertEqual(again.trained, [])
    XCTAssertEqual(again.cells, first.cells)
    // One more seed extends it: only the new cells train.
    XCTAssertEqual(try runGrid(s, models: models, seeds: 3).trained, ["seed-relu-seed2", "seed-aconc-seed2", "seed-meta-seed2"])
    // Other settings in the same --out are refused, naming what differs.
    var other = s
    other.lr = 0.1
    XCTAssertThrowsError(try CompareGrid.checkManifest(out, other)) { e in
      XCTAssertTrue("\(e)".contains("\"lr\""), "\(e)")
    }

    // The report: tables with the paired difference, and well-formed SVGs.
    let written = try CompareReport.write(first.cells, models: models, settings: s, out: out)
    let tables = CompareReport.tables(first.cells, models: models)
    XCTAssertEqual(tables.count, 1)
    XCTAssertEqual(tables[0].rows.map(\.model), models)
    XCTAssertNil(tables[0].rows[0].difference)
    XCTAssertEqual(tables[0].rows[1].difference?.n, 2)
    let relu = first.cells.filter { $0.model == "seed-relu" }.map(\.finalAccuracy)
    let ac = first.cells.filter { $0.model == "seed-aconc" }.map(\.finalAccuracy)
    var expected = CompareStats.paired(relu, ac)
    let tested = tables[0].rows.compactMap { $0.difference?.p }
    expected.pHolm = CompareStats.holm(tested)[0]
    expected.significantHolm = expected.pHolm! < 0.05
    XCTAssertEqual(tables[0].rows[1].difference, expected)
    for name in ["results.md", "results.json", "report.json", "accuracy.svg", "accuracy-seed.svg", "seed-aconc-beta.svg",
      "seed-aconc-p1-p2.svg", "seed-meta-beta-over-images.svg", "seed-meta-curves.svg"] {
      XCTAssertTrue(written.contains(name), name)
    }
    for name in written where name.hasSuffix(".svg") {
      let data = try XCTUnwrap(FileManager.default.contents(atPath: out + "/" + name))
      let parser = XMLParser(data: data)
      XCTAssertTrue(parser.parse(), "\(name): \(String(describing: parser.parserError))")
      XCTAssertFalse(String(decoding: data, as: UTF8.self).lowercased().contains("nan"), name)
    }
  }

  /// The acon-train binary beside the test bundle (SwiftPM builds both into the same directory;
  /// on Linux the bundle URL is that directory, on macOS the .xctest bundle inside it).
  var binary: String {
    let bundle = Bundle(for: CompareGridTests.self).bundleURL
    let candidates = [bundle, bundle.deletingLastPathComponent()].map { $0.appendingPathComponent("acon-train").path }
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
  }

  func compare(_ out: String, wait: Bool = true) throws -> Process {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: binary)
    p.arguments = ["compare", "--recipe", "acon-small", "--models", "seed-relu,seed-aconc", "--seeds", "1", "--epochs", "2",
      "--max-steps", "24", "--batch-size", "8", "--data", "synthetic", "--checkpoint-every", "1", "--beta-images", "0",
      "--out", out]
    let log = FileHandle(forWritingAtPath: "/dev/null")
    p.standardOutput = Pipe()
    p.standardError = log
    try p.run()
    if wait { p.waitUntilExit() }
    return p
  }

  func output(_ p: Process) -> String {
    String(decoding: (p.standardOutput as! Pipe).fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
  }

  func testACellLockedByAnotherProcessIsLeftToIt() throws {
    let models = ["seed-relu", "seed-aconc"]
    let s = settings(maxSteps: 4)
    try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
    try CompareGrid.checkManifest(out, s)
    // Another holder of the lock (flock locks belong to the open file, so a second open in this
    // process conflicts as another process's would).
    let dir = CompareGrid.cellDirectory(out, model: "seed-aconc", seed: 0)
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    var held: CellLock? = try XCTUnwrap(try CellLock(directory: dir))
    XCTAssertNil(try CellLock(directory: dir), "a held lock is taken twice")
    let first = try runGrid(s, models: models, seeds: 2)
    XCTAssertEqual(first.trained, ["seed-relu-seed0", "seed-relu-seed1", "seed-aconc-seed1"])
    XCTAssertEqual(first.elsewhere, ["seed-aconc-seed0"])
    XCTAssertEqual(first.cells.map { "\($0.model)-seed\($0.seed)" }, ["seed-relu-seed0", "seed-relu-seed1", "seed-aconc-seed1"])
    XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/result.json"))
    // The holder ends: the next run takes the cell, and the grid is whole, in grid order.
    held = nil
    XCTAssertNil(held)
    let second = try runGrid(s, models: models, seeds: 2)
    XCTAssertEqual(second.trained, ["seed-aconc-seed0"])
    XCTAssertEqual(second.elsewhere, [])
    XCTAssertEqual(second.cells.map { "\($0.model)-seed\($0.seed)" }, ["seed-relu-seed0", "seed-aconc-seed0", "seed-relu-seed1", "seed-aconc-seed1"])
  }

  func testDriftIsMeasuredFromTheCellsOwnInitialValues() throws {
    // With a learning rate that moves nothing (1e-30 · g rounds away against p ~ 1), every ACON
    // parameter ends where it started: the rebuilt initial values must be the cell's own, so
    // the drift is exactly 0 and the correlation 1.
    var s = settings(maxSteps: 4)
    s.lr = 1e-30
    let models = ["seed-relu", "seed-aconc", "seed-meta"]
    try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
    try CompareGrid.checkManifest(out, s)
    let data = SyntheticShapes.make(count: 64, seed: 1)
    let (train, val) = try CompareGrid.split(data, share: s.valSplit!, seed: s.splitSeed)
    let r = try runGrid(s, models: models, seeds: 2)
    let initial = try CompareGrid.initialAconLayers(r.cells, input: train.imageShape, classes: train.classes == 2 ? 1 : train.classes,
      names: modelNames, build: buildModel)
    XCTAssertEqual(Set(initial.keys), ["seed-aconc-seed0", "seed-aconc-seed1", "seed-meta-seed0", "seed-meta-seed1"])
    XCTAssertGreaterThan(val.count, 0)
    let rows = CompareReport.tables(r.cells, models: models, initial: initial)[0].rows
    XCTAssertNil(rows[0].drift, "ReLU has no ACON parameters")
    for row in rows.dropFirst() {
      let d = try XCTUnwrap(row.drift, row.model)
      XCTAssertEqual(d.channels, 2 * r.cells.first { $0.model == row.model }!.aconLayers.map(\.p1MinusP2.count).reduce(0, +))
      XCTAssertEqual(d.medianAbsChangeP1MinusP2, 0, row.model)
      XCTAssertEqual(d.correlationP1MinusP2, 1, accuracy: 1e-12, row.model)
      XCTAssertGreaterThan(d.medianAbsInitialP1MinusP2, 0.2, "p1, p2 ~ N(0, 1)")
    }
    XCTAssertEqual(rows[1].drift?.maxAbsChangeBeta, 0)
    XCTAssertNil(rows[2].drift?.medianAbsChangeBeta, "Meta-ACON's β is computed, not a parameter")
    XCTAssertTrue(CompareReport.markdown(CompareReport.tables(r.cells, models: models, initial: initial), epochs: 1)
      .contains("How far the ACON parameters moved"))
  }

  func testDriftByHand() {
    func cell(_ seed: Int, _ d: [Float], beta: [Float]?) -> CellResult {
      CellResult(model: "m-aconc", family: "m", activation: "aconc", seed: seed, params: 1, sharedInitWith: nil, sharedParameters: 0,
        split: "test", accuracyPerEpoch: [0.5], trainLossPerEpoch: [1], finalAccuracy: 0.5, steps: 1, imagesPerSecond: 1,
        peakRssBytes: nil, seconds: 1, aconLayers: [AconLayerStats(name: "a", kind: "AconC", beta: beta, p1MinusP2: d, p2: d)],
        metaBeta: [])
    }
    let initial = ["m-aconc-seed0": [AconLayerStats(name: "a", kind: "AconC", beta: [1, 1], p1MinusP2: [1, -2], p2: [0, 0])],
      "m-aconc-seed1": [AconLayerStats(name: "a", kind: "AconC", beta: [1, 1], p1MinusP2: [3, 0.5], p2: [0, 0])]]
    // Start (1, −2, 3, 0.5), end (1.5, −2, 2, 0.5): |Δ| (0.5, 0, 1, 0), median 0.25; |start|
    // (1, 2, 3, 0.5), median 1.5; |Δβ| (0, 0.5, 0.25, 0), median 0.125, largest 0.5.
    let d = ParameterDrift.of([cell(0, [1.5, -2], beta: [1, 1.5]), cell(1, [2, 0.5], beta: [0.75, 1])], initial: initial)!
    XCTAssertEqual(d.channels, 4)
    XCTAssertEqual(d.medianAbsChangeP1MinusP2, 0.25)
    XCTAssertEqual(d.medianAbsInitialP1MinusP2, 1.5)
    XCTAssertEqual(d.medianAbsChangeBeta, 0.125)
    XCTAssertEqual(d.maxAbsChangeBeta, 0.5)
    // Pearson's r of (1, −2, 3, 0.5) and (1.5, −2, 2, 0.5), from its definition.
    let x: [Double] = [1, -2, 3, 0.5], y: [Double] = [1.5, -2, 2, 0.5]
    let mx = x.reduce(0, +) / 4, my = y.reduce(0, +) / 4
    let sxy = zip(x, y).map { ($0 - mx) * ($1 - my) }.reduce(0, +)
    let r = sxy / (x.map { ($0 - mx) * ($0 - mx) }.reduce(0, +) * y.map { ($0 - my) * ($0 - my) }.reduce(0, +)).squareRoot()
    XCTAssertEqual(d.correlationP1MinusP2, r, accuracy: 1e-12)
    XCTAssertGreaterThan(r, 0.9)
    XCTAssertNil(ParameterDrift.of([cell(2, [1, 1], beta: nil)], initial: initial), "no initial values for seed 2")
  }

  func testACellWhoseProcessEndedMeanwhileRunsHereAndLeftoversGo() throws {
    let models = ["seed-relu", "seed-aconc"]
    let s = settings(maxSteps: 4)
    try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
    try CompareGrid.checkManifest(out, s)
    let dir = CompareGrid.cellDirectory(out, model: "seed-aconc", seed: 0)
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    var held: CellLock? = try XCTUnwrap(try CellLock(directory: dir))
    // The holder ends (a killed process) right after the grid has left the cell to it: the
    // grid's last pass finds the lock free and runs the cell itself.
    var lines: [String] = []
    let r = try runGrid(s, models: models, seeds: 2) { line in
      lines.append(line)
      if line.hasPrefix("seed-aconc seed 0: running in another process") { held = nil }
    }
    XCTAssertNil(held)
    XCTAssertEqual(r.trained, ["seed-relu-seed0", "seed-relu-seed1", "seed-aconc-seed1", "seed-aconc-seed0"])
    XCTAssertEqual(r.elsewhere, [])
    XCTAssertEqual(r.cells.map { "\($0.model)-seed\($0.seed)" }, ["seed-relu-seed0", "seed-aconc-seed0", "seed-relu-seed1", "seed-aconc-seed1"])
    XCTAssertTrue(lines.contains { $0.contains("seed-aconc seed 0: the process that ran it has ended") }, "\(lines)")
    XCTAssertEqual(Set(r.cells.map(\.threads)), [Threads.count], "each result records its thread count")
    // Checkpoints a kill left beside a finished result go when the grid reads the cell back.
    let leftover = dir + "/checkpoint.state.safetensors"
    XCTAssertTrue(FileManager.default.createFile(atPath: leftover, contents: Data([1, 2, 3])))
    let again = try runGrid(s, models: models, seeds: 2)
    XCTAssertEqual(again.trained, [])
    XCTAssertFalse(FileManager.default.fileExists(atPath: leftover))
    // Cells of different thread counts get a note in results.md.
    var mixed = r.cells
    mixed[0].threads = 7
    XCTAssertTrue(CompareReport.threadsNote(mixed).contains("different --threads"), CompareReport.threadsNote(mixed))
    XCTAssertEqual(CompareReport.threadsNote(r.cells), "")
  }

  func testAKilledGridResumesAndEndsAsAnUninterruptedOne() throws {
    guard FileManager.default.isExecutableFile(atPath: binary) else {
      XCTFail("\(binary) is missing: build the acon-train product with the tests (swift build --build-tests)")
      return
    }
    // Kill -9 while the second cell runs (its checkpoint exists, its result not yet).
    let killed = out + "/killed"
    let p = try compare(killed, wait: false)
    let ck = CompareGrid.cellDirectory(killed, model: "seed-aconc", seed: 0) + "/checkpoint.state.safetensors"
    let deadline = Date().addingTimeInterval(600)
    while !FileManager.default.fileExists(atPath: ck) && p.isRunning && Date() < deadline { usleep(20_000) }
    usleep(300_000)
    XCTAssertTrue(p.isRunning, "the grid ended before it could be killed")
    kill(p.processIdentifier, SIGKILL)
    p.waitUntilExit()
    XCTAssertNotNil(CompareGrid.finishedResult(killed, model: "seed-relu", seed: 0))
    XCTAssertNil(CompareGrid.finishedResult(killed, model: "seed-aconc", seed: 0))
    // The same command again: the finished cell is skipped, the killed one resumes.
    let again = try compare(killed)
    let text = output(again)
    XCTAssertEqual(again.terminationStatus, 0, text)
    XCTAssertTrue(text.contains("seed-relu seed 0: done"), text)
    XCTAssertTrue(text.contains("resumed seed-aconc seed 0 at step"), text)
    // An uninterrupted grid ends the same, bit for bit.
    let whole = try compare(out + "/whole")
    XCTAssertEqual(whole.terminationStatus, 0)
    for m in ["seed-relu", "seed-aconc"] {
      let a = try XCTUnwrap(CompareGrid.finishedResult(killed, model: m, seed: 0))
      let b = try XCTUnwrap(CompareGrid.finishedResult(out + "/whole", model: m, seed: 0))
      XCTAssertEqual(a.steps, 24, m)
      XCTAssertEqual(a.accuracyPerEpoch, b.accuracyPerEpoch, m)
      XCTAssertEqual(a.trainLossPerEpoch, b.trainLossPerEpoch, m)
      XCTAssertEqual(a.aconLayers, b.aconLayers, m)
    }
    XCTAssertTrue(FileManager.default.fileExists(atPath: killed + "/results.md"))
  }

  func testPairedCellsShareTheReluInitialWeights() throws {
    // Same seed: every parameter whose name and shape agree starts equal; ACON's own differ.
    let (a, copied) = try CompareGrid.buildPaired("shufflenetv2-0.5x-meta", reference: "shufflenetv2-0.5x-relu",
      input: [1, 28, 28], classes: 10, seed: 3, build: buildModel)
    let relu = try buildModel("shufflenetv2-0.5x-relu", input: [1, 28, 28], classes: 10, seed: 3)
    let r = Dictionary(uniqueKeysWithValues: relu.namedParameters())
    var same = 0
    for (name, p) in a.namedParameters() {
      guard let q = r[name] else { continue }
      XCTAssertEqual(p.value.shape, q.value.shape, name)
      XCTAssertEqual(Array(UnsafeBufferPointer(start: p.value.data, count: p.value.count)),
        Array(UnsafeBufferPointer(start: q.value.data, count: q.value.count)), name)
      same += 1
    }
    XCTAssertEqual(same, copied)
    XCTAssertEqual(copied, relu.namedParameters().count, "every ReLU parameter has its twin in the Meta-ACON net")
    // Without pairing, the builder's one stream would give the Meta-ACON net other conv weights.
    let unpaired = try buildModel("shufflenetv2-0.5x-meta", input: [1, 28, 28], classes: 10, seed: 3)
    let differs = unpaired.namedParameters().contains { name, p in
      guard let q = r[name], p.value.count > 1 else { return false }
      return Array(UnsafeBufferPointer(start: p.value.data, count: p.value.count))
        != Array(UnsafeBufferPointer(start: q.value.data, count: q.value.count))
    }
    XCTAssertTrue(differs)
  }

  func testValidationSplitIsFixedAndDisjoint() throws {
    let data = SyntheticShapes.make(count: 100, seed: 1)
    let (t1, v1) = try CompareGrid.split(data, share: 0.2, seed: 5)
    let (t2, v2) = try CompareGrid.split(data, share: 0.2, seed: 5)
    XCTAssertEqual(v1.count, 20)
    XCTAssertEqual(t1.count, 80)
    XCTAssertEqual(v1.pixels, v2.pixels)
    XCTAssertEqual(t1.labels, t2.labels)
    XCTAssertEqual(t1.labels.count + v1.labels.count, data.count)
    XCTAssertThrowsError(try CompareGrid.split(data, share: 0.001, seed: 0))
  }
}
