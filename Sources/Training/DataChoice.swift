// DataChoice: which data set a run uses (Fashion-MNIST, CIFAR-10, the synthetic set, or
// "auto": Fashion-MNIST when installed, else synthetic), loaded with its normalisation.
import Foundation

/// A data set selected by name on the command line.
public enum DataChoice: String, CaseIterable, Sendable {
  /// Fashion-MNIST when its files are installed, the synthetic set otherwise.
  case auto
  case fashionMNIST = "fashion-mnist"
  case cifar10
  case synthetic
  /// A folder of images per class (DIR/train/CLASS/*.jpg, DIR/val/CLASS/*; see FolderData.swift).
  case folder

  /// The default directory of each real data set.
  public var defaultDirectory: String? {
    switch self {
    case .auto, .fashionMNIST: return "/usr/share/datasets/fashion-mnist"
    case .cifar10: return nil
    case .synthetic, .folder: return nil
    }
  }

  /// Train and test splits, the normalisation, a sentence saying where the data came from, and
  /// the data set it resolved to (`auto` becomes `fashion-mnist` or `synthetic`). Each split
  /// carries its class count (`classes`) and normalisation (`normalization`).
  /// With `includeTrain: false` (evaluation) the training split is not read: `train` is then
  /// empty (0 images of the right size). `directory` nil means the data set's default directory
  /// (Fashion-MNIST: /usr/share/datasets/fashion-mnist; CIFAR-10 has none). `auto` with a
  /// `directory` means Fashion-MNIST there: a directory the user names that holds no data set
  /// is an error, not a silent fallback.
  /// `folder` reads DIR as `folder` says (image size, validation split, workers, bad images).
  public func load(directory: String? = nil, includeTrain: Bool = true, folder: FolderDataOptions = FolderDataOptions()) throws
    -> (train: ImageDataset, test: ImageDataset, normalization: Normalization, source: String, resolved: DataChoice)
  {
    switch self {
    case .auto:
      if let directory { return try DataChoice.fashionMNIST.load(directory: directory, includeTrain: includeTrain) }
      let dir = DataChoice.fashionMNIST.defaultDirectory!
      let probe = (dir as NSString).appendingPathComponent("train-images-idx3-ubyte.gz")
      if FileManager.default.fileExists(atPath: probe) {
        return try DataChoice.fashionMNIST.load(directory: dir, includeTrain: includeTrain)
      }
      var r = try DataChoice.synthetic.load(directory: nil, includeTrain: includeTrain)
      r.source = "built-in synthetic data set (Fashion-MNIST not found at \(dir); install it with `apt-get install dataset-fashion-mnist`)"
      return r
    case .fashionMNIST:
      let dir = directory ?? defaultDirectory!
      let test = try FashionMNIST.load(directory: dir, train: false)
      let train = includeTrain ? try FashionMNIST.load(directory: dir, train: true) : test.prefix(0)
      return (train, test, .fashionMNIST, "Fashion-MNIST from \(dir) (\(DataChoice.counts(train, test)))", .fashionMNIST)
    case .cifar10:
      guard let dir = directory else {
        throw DataError.notFound(dataset: "CIFAR-10", path: "(no --data-dir)", hint: "pass --data-dir pointing at the cifar-10-batches-bin directory")
      }
      let test = try CIFAR10.load(directory: dir, train: false)
      let train = includeTrain ? try CIFAR10.load(directory: dir, train: true) : test.prefix(0)
      return (train, test, .cifar10, "CIFAR-10 from \(dir) (\(DataChoice.counts(train, test)))", .cifar10)
    case .folder:
      let r = try DataChoice.loadFolder(directory: directory, options: folder, includeTrain: includeTrain)
      for w in r.warnings.prefix(20) { FileHandle.standardError.write(Data((w + "\n").utf8)) }
      if r.warnings.count > 20 { FileHandle.standardError.write(Data("warning: … and \(r.warnings.count - 20) more skipped\n".utf8)) }
      return (r.train, r.test, r.normalization, r.source, .folder)
    case .synthetic:
      let test = SyntheticShapes.make(count: 1000, seed: 2)
      let train = includeTrain ? SyntheticShapes.make(count: 6000, seed: 1) : test.prefix(0)
      return (train, test, test.normalization,
        "built-in synthetic data set (\(DataChoice.counts(train, test)) of 10 procedural shapes)", .synthetic)
    }
  }

  /// "N train, M test images", or "M test images" when the training split was not read.
  private static func counts(_ train: ImageDataset, _ test: ImageDataset) -> String {
    train.count > 0 ? "\(train.count) train, \(test.count) test images" : "\(test.count) test images"
  }
}
