// FolderData: `--data folder`, a folder of JPEG/PNG images per class (torchvision's ImageFolder
// layout, Sources/ImageData), decoded on worker threads through torchvision's evaluation
// transforms (Resize, CenterCrop) into an in-memory ImageDataset at a fixed size, so today's
// Trainer and BatchLoader train on it (with --flip / --random-crop as augmentation); and the
// metadata a checkpoint of such a run records (class names, the split, the pipelines) for
// `evaluate` and `predict`.
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

  public init(imageSize: Int = 64, valSplit: Double? = nil, workers: Int = 2, skipBadImages: Bool = false, seed: UInt64 = 0) {
    self.imageSize = imageSize
    self.valSplit = valSplit
    self.workers = workers
    self.skipBadImages = skipBadImages
    self.seed = seed
  }

  /// ImageNet's statistics, the normalisation of a folder data set (torchvision's `Normalize`).
  public static let normalization = Normalization(mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225])

  /// The pipeline images are decoded with (evaluation: resize, centre crop; `Normalize` by ImageNet's statistics).
  public var evalPipeline: ImagePipeline { ImagePipeline.eval(size: imageSize) }
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
