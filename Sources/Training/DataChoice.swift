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

  /// The default directory of each real data set.
  public var defaultDirectory: String? {
    switch self {
    case .auto, .fashionMNIST: return "/usr/share/datasets/fashion-mnist"
    case .cifar10: return nil
    case .synthetic: return nil
    }
  }

  /// Train and test splits, the normalisation, and a sentence saying where the data came from.
  public func load(directory: String?, augment: Bool = false) throws -> (train: ImageDataset, test: ImageDataset, normalization: Normalization, source: String) {
    switch self {
    case .auto:
      let dir = directory ?? DataChoice.fashionMNIST.defaultDirectory!
      let probe = (dir as NSString).appendingPathComponent("train-images-idx3-ubyte.gz")
      if FileManager.default.fileExists(atPath: probe) { return try DataChoice.fashionMNIST.load(directory: dir) }
      var r = try DataChoice.synthetic.load(directory: nil)
      r.source = "built-in synthetic data set (Fashion-MNIST not found at \(dir); install it with `apt-get install dataset-fashion-mnist`)"
      return r
    case .fashionMNIST:
      let dir = directory ?? defaultDirectory!
      let train = try FashionMNIST.load(directory: dir, train: true)
      let test = try FashionMNIST.load(directory: dir, train: false)
      return (train, test, .fashionMNIST, "Fashion-MNIST from \(dir) (\(train.count) train, \(test.count) test images)")
    case .cifar10:
      guard let dir = directory else {
        throw DataError.notFound(dataset: "CIFAR-10", path: "(no --data-dir)", hint: "pass --data-dir pointing at the cifar-10-batches-bin directory")
      }
      let train = try CIFAR10.load(directory: dir, train: true)
      let test = try CIFAR10.load(directory: dir, train: false)
      return (train, test, .cifar10, "CIFAR-10 from \(dir) (\(train.count) train, \(test.count) test images)")
    case .synthetic:
      let train = SyntheticShapes.make(count: 6000, seed: 1)
      let test = SyntheticShapes.make(count: 1000, seed: 2)
      return (train, test, Normalization(mean: [0.5], std: [0.5]),
        "built-in synthetic data set (\(train.count) train, \(test.count) test images of 10 procedural shapes)")
    }
  }
}
