// compare: runs the experiment grid models × seeds under one recipe (CompareGrid.swift: one
// resumable cell per run, paired across activations), then writes the report
// (CompareReport.swift: per-family tables with the paired difference against ReLU and its 95%
// t interval, results.md/json, report.json; ComparePlots.swift: the SVG figures).
// `--recipe acon-small` is the official ACON recipe scaled down for Fashion-MNIST (issue 19).
import ArgumentParser
import Foundation
import TensorCore
import Training

/// A named set of defaults for `compare` (each option given on the command line wins).
struct CompareRecipe {
  var optimizer: String, lr: Float, momentum: Float, weightDecay: Float, schedule: String, labelSmoothing: Float
  var cropPadding: Int?, flip: Bool, batchSize: Int, epochs: Int

  /// What `compare` did before recipes: Adam at 1e-3, constant, no augmentation, 5 epochs of 64.
  static let plain = CompareRecipe(optimizer: "adam", lr: 1e-3, momentum: 0.9, weightDecay: 0, schedule: "constant",
    labelSmoothing: 0, cropPadding: nil, flip: false, batchSize: 64, epochs: 5)
  /// The official ShuffleNetV2/ACON recipe scaled down: SGD with momentum 0.9, linear decay to
  /// 0, weight decay 4e-5 on conv and linear weights only (biases, BatchNorm and ACON's p1, p2,
  /// β are excluded, as `ParameterGroup.defaultGroups` does), label smoothing 0.1, random crop
  /// with padding 2 and horizontal flip; batch 128, lr 0.1 and 8 epochs (the 6-hour budget of
  /// issue 19 for 5 models × 5 seeds on Fashion-MNIST: docs/compare.md). Choose lr and epochs
  /// on `--val-split` for the ReLU network, then pass them unchanged for the whole grid.
  static let aconSmall = CompareRecipe(optimizer: "sgd", lr: 0.1, momentum: 0.9, weightDecay: 4e-5, schedule: "linear",
    labelSmoothing: 0.1, cropPadding: 2, flip: true, batchSize: 128, epochs: 8)

  static let named: [String: CompareRecipe] = ["acon-small": aconSmall, "plain": plain]
}

struct Compare: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Train several models over several seeds and compare them (resumable: run the same command again).")

  @Option(help: "Comma-separated models.") var models: String = "seed-relu,seed-aconc,seed-meta"
  @Option(help: "Seeds per model (0, 1, ..., N-1); the same seeds for every model, so cells are paired.") var seeds: Int = 3
  @Option(help: "Defaults for the options below: plain (Adam 1e-3, 5 epochs) or acon-small (the official recipe scaled down: SGD 0.9, linear decay, wd 4e-5, label smoothing 0.1, crop 2 + flip, batch 128).")
  var recipe: String = "plain"
  @Option(help: "Epochs per run.") var epochs: Int?
  @Option(help: "Stop each run after this many steps in all (for smoke tests); the table and plot show the epochs that ran.") var maxSteps: Int?
  @Option(help: "Batch size.") var batchSize: Int?
  @Option(help: "Optimizer: sgd, adam or adamw.") var optimizer: String?
  @Option(help: "Learning rate.") var lr: Float?
  @Option(help: "SGD momentum.") var momentum: Float?
  @Option(help: "Weight decay (conv and linear weights only).") var weightDecay: Float?
  @Option(help: "Learning-rate schedule: constant, step, cosine or linear (to 0).") var schedule: String?
  @Option(help: "Linear warm-up steps.") var warmupSteps: Int = 0
  @Option(help: "Cross-entropy label smoothing.") var labelSmoothing: Float?
  @Option(help: "Random crop of training images with this zero padding (0: none).") var cropPadding: Int?
  @Option(help: "Horizontal flip of training images: on or off.") var flip: String?
  @Option(help: "Meta-ACON: test (or validation) images whose β is recorded per layer after training.") var betaImages: Int = 1000
  @Option(help: "Checkpoint each running cell every N steps (and at each epoch's end), for resume after a kill.")
  var checkpointEvery: Int = 200
  @Option(help: "Threads for OpenBLAS and the kernels (default: cores). Several processes of the same command share the grid out (a cell's lock file says who runs it): on 2 cores, 2 processes of --threads 1 train faster than 1 of 2.")
  var threads: Int?
  @OptionGroup var dataOptions: DataOptions
  @Option(help: "Directory of the cells (cells/MODEL-seedS), the tables (results.md, results.json, report.json) and the SVG plots.")
  var out: String = "compare-out"

  /// The grid's settings from the recipe and the options given.
  func settings(data: String) throws -> GridSettings {
    guard let r = CompareRecipe.named[recipe] else {
      throw CompareError("--recipe must be one of \(CompareRecipe.named.keys.sorted().joined(separator: ", ")), got '\(recipe)'")
    }
    let crop = cropPadding.map { $0 == 0 ? nil : $0 } ?? r.cropPadding
    var f = r.flip
    if let flip {
      guard flip == "on" || flip == "off" else { throw CompareError("--flip must be on or off, got '\(flip)'") }
      f = flip == "on"
    }
    if let v = dataOptions.valSplit, !(v > 0 && v < 1) { throw CompareError("--val-split must be between 0 and 1, got \(v)") }
    guard betaImages >= 0 else { throw CompareError("--beta-images must be non-negative, got \(betaImages)") }
    guard checkpointEvery >= 1 else { throw CompareError("--checkpoint-every must be at least 1, got \(checkpointEvery)") }
    return GridSettings(recipe: recipe, epochs: epochs ?? r.epochs, maxSteps: maxSteps, batchSize: batchSize ?? r.batchSize,
      optimizer: optimizer ?? r.optimizer, lr: lr ?? r.lr, momentum: momentum ?? r.momentum, weightDecay: weightDecay ?? r.weightDecay,
      schedule: schedule ?? r.schedule, warmupSteps: warmupSteps, labelSmoothing: labelSmoothing ?? r.labelSmoothing,
      cropPadding: crop, flip: f, data: data, valSplit: dataOptions.valSplit, splitSeed: dataOptions.splitSeed ?? 0,
      betaImages: betaImages)
  }

  func run() throws {
    if let t = threads {
      guard t >= 1 && t <= 256 else { fail("--threads must be in 1...256, got \(t)") }
      Threads.count = t
    }
    let kinds = models.split(separator: ",").map { parseModel(String($0)) }
    guard seeds >= 1 else { fail("--seeds must be at least 1") }
    guard Set(kinds).count == kinds.count else { fail("--models names a model twice") }
    guard dataOptions.choice() != .folder else { fail("compare trains on in-memory data sets (fashion-mnist, cifar10, synthetic), not --data folder") }
    let data = reporting { try dataOptions.choice().load(directory: dataOptions.dataDir) }
    let settings = reporting { try self.settings(data: data.resolved.rawValue) }
    reporting { try settings.trainOptions(model: kinds[0], seed: 0).validate() }
    print("data: \(data.source)")
    // Fail before any training if the outputs can't go there.
    do {
      try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
    } catch {
      fail("\(out): cannot create the --out directory: \((error as NSError).localizedFailureReason ?? error.localizedDescription)")
    }
    guard access(out, W_OK) == 0 else { fail("\(out): the --out directory is not writable: \(String(cString: strerror(errno)))") }
    reporting { try CompareGrid.checkManifest(out, settings) }
    var train = data.train, eval = data.test
    if let v = settings.valSplit {
      (train, eval) = reporting { try CompareGrid.split(data.train, share: v, seed: settings.splitSeed) }
      print("validation: \(eval.count) of the \(data.train.count) training images (split seed \(settings.splitSeed)); the test split is not used")
    }
    let grid = reporting {
      try CompareGrid.runGrid(models: kinds, seeds: seeds, settings: settings, out: out, checkpointEvery: checkpointEvery,
        train: train, eval: eval, normalization: data.normalization, names: modelNames, build: buildModel, progress: progressLine)
    }
    guard grid.elsewhere.isEmpty else {
      // The process that finishes the last cell writes the report.
      print("\(grid.elsewhere.count) cell(s) still running in another process (\(grid.elsewhere.joined(separator: ", "))): "
        + "the one that finishes last writes the report; or run the same command again when they are done")
      finishOutput()
      return
    }
    let cells = grid.cells
    guard cells.contains(where: { !$0.accuracyPerEpoch.isEmpty }) else {
      fail("no epoch ran: --max-steps \(maxSteps ?? 0) leaves nothing to train")
    }
    let classes = train.classes == 2 ? 1 : train.classes
    let initial = reporting {
      try CompareGrid.initialAconLayers(cells, input: train.imageShape, classes: classes, names: modelNames, build: buildModel)
    }
    let written = reporting { try CompareReport.write(cells, models: kinds, settings: settings, out: out, initial: initial) }
    print(CompareReport.markdown(CompareReport.tables(cells, models: kinds, initial: initial),
      epochs: cells.map(\.accuracyPerEpoch.count).max() ?? 0))
    print("wrote \(out)/: \(written.joined(separator: ", ")); the cells' results and logs are in \(out)/cells")
    finishOutput()
  }
}

/// An error whose description is its message (for `reporting`).
struct CompareError: Error, CustomStringConvertible {
  var description: String
  init(_ s: String) { description = s }
}
