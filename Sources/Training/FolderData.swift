// FolderData: `--data folder`, a folder of JPEG/PNG images per class (torchvision's ImageFolder
// layout, Sources/ImageData). Training streams it (FolderTrainingData: ImageLoaders over the
// train and validation splits, through the train and eval pipelines, on worker threads); the
// metadata a checkpoint of such a run records (class names, the split, the pipelines) lets
// `evaluate` and `predict` apply the same. `DataChoice.folder.load` still decodes a folder once
// through the eval pipeline into an in-memory ImageDataset, for programs that want one.
import Dispatch
import ImageData
import TensorCore

/// How `--data folder` reads its directory.
public struct FolderDataOptions: Sendable, Equatable {
  /// The side of the square images the folder is decoded to (`Resize(size·256/224)`, `CenterCrop(size)`).
  public var imageSize: Int
  /// The share of train/ used for validation when DIR/val is absent (nil: none).
  public var valSplit: Double?
  /// Decoding threads.
  public var workers: Int
  /// Skip unreadable images with a counted warning instead of failing.
  public var skipBadImages: Bool
  /// The seed of the validation split.
  public var seed: UInt64
  /// ColorJitter's brightness, contrast and saturation in training (0: none).
  public var colorJitter: Double
  /// How pixels become floats: ImageNet's `Normalize` (default) or the official ACON `ToBGRTensor`.
  public var convention: TensorConvention

  public init(
    imageSize: Int = 64, valSplit: Double? = nil, workers: Int = 2, skipBadImages: Bool = false, seed: UInt64 = 0,
    colorJitter: Double = 0, convention: TensorConvention = .imageNet
  ) {
    self.imageSize = imageSize
    self.valSplit = valSplit
    self.workers = workers
    self.skipBadImages = skipBadImages
    self.seed = seed
    self.colorJitter = colorJitter
    self.convention = convention
  }

  /// ImageNet's statistics, the normalisation of a folder data set (torchvision's `Normalize`).
  public static let normalization = Normalization(mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225])

  /// The evaluation pipeline: `Resize(S·256/224)`, `CenterCrop(S)`, then `convention`.
  public var evalPipeline: ImagePipeline { ImagePipeline.eval(size: imageSize, convention: convention) }

  /// The training pipeline: `RandomResizedCrop(S)`, `RandomHorizontalFlip()`, `ColorJitter` when
  /// `colorJitter` > 0, then `convention`.
  public var trainPipeline: ImagePipeline { ImagePipeline.train(size: imageSize, jitter: colorJitter, convention: convention) }
}

extension Normalization {
  /// The per-channel normalisation nearest to `convention`, for metadata that records one:
  /// `Normalize`'s mean and std; for `ToBGRTensor` (0–255, no mean/std) mean 0 and std 1/255
  /// (the values, though the planes are in B, G, R order: the recorded pipeline says so).
  public init(_ convention: TensorConvention) {
    switch convention {
    case .normalize(let m, let s): self.init(mean: m, std: s)
    case .bgr255: self.init(mean: [0, 0, 0], std: [Float](repeating: 1 / 255, count: 3))
    }
  }
}

/// A folder data set for training, streamed: the train and validation splits (DIR/val, or a
/// seeded share of DIR/train), the pipelines, and `ImageLoader`s over them. Images are decoded
/// on `options.workers` threads ahead of each step; nothing is held in memory but the batches.
public struct FolderTrainingData: Sendable {
  /// The directory (holding train/ and maybe val/).
  public var directory: String
  /// The training split.
  public var train: ImageFolder
  /// The validation split (evaluated after each epoch through `evalPipeline`).
  public var val: ImageFolder
  /// The share of train/ carved out as `val` (nil: DIR/val).
  public var valSplit: Double?
  /// How the folder is read (image size, workers, bad images, jitter, convention, split seed).
  public var options: FolderDataOptions
  /// A sentence saying what was read.
  public var source: String
  /// The files skipped while scanning (with `options.skipBadImages`), one warning each.
  public var warnings: [String]

  /// Class names, label order (sorted by code point).
  public var classNames: [String] { train.classes }
  /// `[3, S, S]`.
  public var imageShape: [Int] { [3, options.imageSize, options.imageSize] }
  /// What training applies (`options.trainPipeline`).
  public var trainPipeline: ImagePipeline { options.trainPipeline }
  /// What evaluation and prediction apply (`options.evalPipeline`).
  public var evalPipeline: ImagePipeline { options.evalPipeline }

  /// Scans DIR/train and DIR/val (or carves `options.valSplit` of train/, seeded by `options.seed`).
  /// - Throws: `ImageError` naming the folder or file (see `ImageFolderSplits.load`), also when
  ///   there is no validation split, or `DataError` without a directory.
  public static func load(directory: String?, options: FolderDataOptions) throws -> FolderTrainingData {
    guard let dir = directory else {
      throw DataError.notFound(dataset: "folder", path: "(no --data-dir)", hint: "pass --data-dir DIR with DIR/train/CLASS/IMAGE.jpg")
    }
    let splits = try ImageFolderSplits.load(
      directory: dir, valSplit: options.valSplit, seed: options.seed, skipBadImages: options.skipBadImages)
    guard let val = splits.val else {
      throw ImageError(file: dir, reason: "no val/ folder: add DIR/val/CLASS/… or pass --val-split F (e.g. 0.1)")
    }
    let warnings = (splits.train.skipped + val.skipped).map { "warning: skipped \($0)" }
    let how = splits.valSplit.map { ", validation: \(Int(($0 * 100).rounded()))% of train/ (seed \(options.seed))" } ?? ""
    let skipped = warnings.isEmpty ? "" : ", \(warnings.count) skipped"
    let source = "image folder \(dir) (\(splits.train.classes.count) classes, \(splits.train.count) train, \(val.count) "
      + "validation images at \(options.imageSize)x\(options.imageSize), streamed by \(options.workers) worker"
      + "\(options.workers == 1 ? "" : "s")\(how)\(skipped))"
    return FolderTrainingData(
      directory: dir, train: splits.train, val: val, valSplit: splits.valSplit, options: options, source: source, warnings: warnings)
  }

  /// The loader of training batches: `trainPipeline`, seeded by `seed` (order and augmentation).
  public func trainLoader(batchSize: Int, shuffle: Bool, dropLast: Bool, seed: UInt64) -> ImageLoader {
    ImageLoader(folder: train, pipeline: trainPipeline, batchSize: batchSize, shuffle: shuffle, dropLast: dropLast, seed: seed,
      workers: options.workers, skipBadImages: options.skipBadImages)
  }

  /// The loader of the validation split, in order, through `evalPipeline`.
  public func valLoader(batchSize: Int) -> ImageLoader {
    ImageLoader(folder: val, pipeline: evalPipeline, batchSize: batchSize, shuffle: false, seed: 0,
      workers: options.workers, skipBadImages: options.skipBadImages)
  }

  /// What a checkpoint of a run on this folder records beside the model: the class names, both
  /// pipelines, the split (when carved), and the normalisation nearest to the convention.
  public func record(in metadata: inout ModelMetadata) {
    metadata.classNames = classNames
    metadata.trainTransform = trainPipeline
    metadata.evalTransform = evalPipeline
    metadata.valSplit = valSplit
    metadata.splitSeed = valSplit == nil ? nil : options.seed
    metadata.normalization = Normalization(options.convention)
  }
}

/// The checkpoint metadata keys of a folder data set.
public enum FolderMetadata {
  /// `class_names` (a JSON array, index order), `val_split` and `split_seed` (when carved from
  /// train/), `eval_transform` (ImagePipeline text, what `predict` applies).
  public static func strings(classes: [String], valSplit: Double?, seed: UInt64, eval: ImagePipeline) -> [String: String] {
    var m = ["class_names": jsonArray(classes), "eval_transform": eval.description]
    if let v = valSplit {
      m["val_split"] = String(v)
      m["split_seed"] = String(seed)
    }
    return m
  }

  /// A JSON array of strings.
  public static func jsonArray(_ names: [String]) -> String {
    "[" + names.map { name -> String in
      var s = "\""
      for u in name.unicodeScalars {
        switch u {
        case "\"": s += "\\\""
        case "\\": s += "\\\\"
        case _ where u.value < 0x20: s += String(format4: u.value)
        default: s.unicodeScalars.append(u)
        }
      }
      return s + "\""
    }.joined(separator: ",") + "]"
  }
}

extension String {
  fileprivate init(format4 v: UInt32) {
    let hex = String(v, radix: 16)
    self = "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
  }
}

extension DataChoice {
  /// Reads DIR (train/ and val/, or train/ split by `options.valSplit`) and decodes every image
  /// to `[3, size, size]` bytes. The test split is val/ (or the carved share).
  /// - Throws: `ImageError` for the folder or a file (see `ImageFolderSplits.load`), or
  ///   `DataError` when there is no validation split to evaluate on.
  static func loadFolder(directory: String?, options: FolderDataOptions, includeTrain: Bool) throws
    -> (train: ImageDataset, test: ImageDataset, normalization: Normalization, source: String, resolved: DataChoice, classNames: [String], warnings: [String])
  {
    guard let dir = directory else {
      throw DataError.notFound(dataset: "folder", path: "(no --data-dir)", hint: "pass --data-dir DIR with DIR/train/CLASS/IMAGE.jpg")
    }
    let splits = try ImageFolderSplits.load(
      directory: dir, valSplit: options.valSplit, seed: options.seed, skipBadImages: options.skipBadImages)
    guard splits.train.classes.count <= 256 else {
      throw ImageError(file: dir, reason: "\(splits.train.classes.count) classes; --data folder holds at most 256 in memory")
    }
    guard let val = splits.val else {
      throw ImageError(file: dir, reason: "no val/ folder: add DIR/val/CLASS/… or pass --val-split F (e.g. 0.1)")
    }
    var warnings = (splits.train.skipped + val.skipped).map { "warning: skipped \($0)" }
    let test = try decode(val, name: "folder/val", options: options, warnings: &warnings)
    let train = includeTrain ? try decode(splits.train, name: "folder/train", options: options, warnings: &warnings) : test.prefix(0)
    let how = splits.valSplit.map { ", validation: \(Int(($0 * 100).rounded()))% of train/ (seed \(options.seed))" } ?? ""
    let skipped = warnings.isEmpty ? "" : ", \(warnings.count) skipped"
    let source = "image folder \(dir) (\(splits.train.classes.count) classes, \(train.count > 0 ? "\(train.count) train, " : "")\(test.count) validation images at \(options.imageSize)x\(options.imageSize)\(how)\(skipped))"
    return (train, test, FolderDataOptions.normalization, source, .folder, splits.train.classes, warnings)
  }

  /// Decodes `folder` through the evaluation pipeline on `options.workers` threads into bytes `[n, 3, S, S]`.
  private static func decode(_ folder: ImageFolder, name: String, options: FolderDataOptions, warnings: inout [String]) throws -> ImageDataset {
    let s = options.imageSize, plane = s * s, n = folder.count
    var pixels = [UInt8](repeating: 0, count: n * 3 * plane)
    var ok = [Bool](repeating: true, count: n)
    let transforms = options.evalPipeline.transforms
    let workers = Swift.max(1, Swift.min(options.workers, n))
    var errors = [ImageError?](repeating: nil, count: workers)
    pixels.withUnsafeMutableBufferPointer { px in
      ok.withUnsafeMutableBufferPointer { okp in
        errors.withUnsafeMutableBufferPointer { ep in
          let p = UncheckedSendable((px.baseAddress!, okp.baseAddress!, ep.baseAddress!))
          DispatchQueue.concurrentPerform(iterations: workers) { w in
            let (out, good, errs) = p.value
            let processor = ImageProcessor()
            var rng = SeededGenerator(seed: 0)  // the evaluation transforms draw nothing
            for i in stride(from: w, to: n, by: workers) {
              do {
                let bytes = try ImageFile.read(folder.paths[i])
                let img = try bytes.withUnsafeBytes {
                  try processor.transformed($0, name: folder.paths[i], pipeline: ImagePipeline(transforms, convention: .bgr255), rng: &rng)
                }
                let dst = out + i * 3 * plane
                for k in 0..<plane {
                  for c in 0..<3 { dst[c * plane + k] = img.pixels[3 * k + c] }
                }
              } catch let e as ImageError {
                good[i] = false
                if errs[w] == nil { errs[w] = e }
              } catch {
                good[i] = false
                if errs[w] == nil { errs[w] = ImageError(file: folder.paths[i], reason: "\(error)") }
              }
            }
          }
        }
      }
    }
    if let e = errors.compactMap({ $0 }).first, !options.skipBadImages {
      throw ImageError(file: e.file, reason: e.reason + " (pass --skip-bad-images to skip such files)")
    }
    var keptPixels = [UInt8](), labels = [UInt8]()
    keptPixels.reserveCapacity(pixels.count)
    for i in 0..<n {
      if ok[i] {
        keptPixels += pixels[(i * 3 * plane)..<((i + 1) * 3 * plane)]
        labels.append(UInt8(folder.labels[i]))
      } else {
        warnings.append("warning: skipped \(folder.paths[i]): it did not decode")
      }
    }
    guard !labels.isEmpty else { throw ImageError(file: folder.root, reason: "no image decodes") }
    return ImageDataset(
      name: name, channels: 3, height: s, width: s, classes: folder.classes.count, pixels: keptPixels, labels: labels, source: folder.root)
  }
}
