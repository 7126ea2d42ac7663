// Dataset: in-memory labelled image sets, per-channel normalisation and a batch loader with
// seeded per-epoch shuffling and (for CIFAR) random-crop/flip augmentation.
//
// The loader is deterministic: the order of epoch e and the augmentation of every sample are
// functions of (seed, e, position), so resuming at any epoch or batch reproduces them exactly.
import TensorCore

/// An in-memory labelled image data set: images `[count, C, H, W]` as raw `UInt8` pixels
/// (0...255, row-major, channel planes), one `UInt8` label per image.
public struct ImageDataset: Sendable {
  /// A short name for logs, e.g. `"fashion-mnist/train"`.
  public var name: String
  /// C, H, W of each image.
  public var channels, height, width: Int
  /// The number of classes; every label is below it.
  public var classes: Int
  /// `count · C · H · W` pixels, image after image.
  public var pixels: [UInt8]
  /// `count` labels in `0..<classes`.
  public var labels: [UInt8]
  /// Human-readable origin, e.g. the directory or `"synthetic(seed: 1)"`.
  public var source: String
  /// The per-channel normalisation this data set is trained with (Fashion-MNIST's and
  /// CIFAR-10's training-set statistics for those; x/255 unless set). Loaders, the trainer and
  /// `evaluate` use it unless given another.
  public var normalization: Normalization

  /// The number of images.
  public var count: Int { labels.count }
  /// Pixels per image: C · H · W.
  public var imageSize: Int { channels * height * width }
  /// The shape of one image, `[C, H, W]`.
  public var imageShape: [Int] { [channels, height, width] }

  /// A data set from its parts.
  /// - Precondition: `pixels.count == labels.count · C · H · W`, and every label is below `classes`.
  public init(
    name: String, channels: Int, height: Int, width: Int, classes: Int, pixels: [UInt8], labels: [UInt8],
    source: String, normalization: Normalization? = nil
  ) {
    precondition(channels > 0 && height > 0 && width > 0 && classes > 0, "ImageDataset \(name): dimensions must be positive")
    precondition(pixels.count == labels.count * channels * height * width,
      "ImageDataset \(name): \(pixels.count) pixels for \(labels.count) images of \(channels)x\(height)x\(width)")
    precondition(labels.allSatisfy { Int($0) < classes }, "ImageDataset \(name): a label is not below \(classes)")
    self.name = name
    self.channels = channels
    self.height = height
    self.width = width
    self.classes = classes
    self.pixels = pixels
    self.labels = labels
    self.source = source
    let norm = normalization ?? .unit(channels: channels)
    precondition(norm.mean.count == channels, "ImageDataset \(name): normalisation for \(norm.mean.count) channels, images have \(channels)")
    self.normalization = norm
  }

  /// Images per class, `[classes]`.
  public var classCounts: [Int] {
    var c = [Int](repeating: 0, count: classes)
    for l in labels { c[Int(l)] += 1 }
    return c
  }

  /// The first `n` images (all of them if there are fewer), e.g. for quick runs.
  public func prefix(_ n: Int) -> ImageDataset {
    let k = Swift.max(0, Swift.min(n, count))
    return ImageDataset(
      name: name, channels: channels, height: height, width: width, classes: classes,
      pixels: Array(pixels[0..<(k * imageSize)]), labels: Array(labels[0..<k]), source: source,
      normalization: normalization)
  }
}

/// Per-channel normalisation of raw pixels: `(x/255 − mean[c]) / std[c]`.
public struct Normalization: Sendable, Equatable {
  /// Per-channel means of x/255, `[C]`.
  public var mean: [Float]
  /// Per-channel standard deviations of x/255, `[C]`, all positive.
  public var std: [Float]

  /// A normalisation with one mean and one std per channel.
  public init(mean: [Float], std: [Float]) {
    precondition(mean.count == std.count && !mean.isEmpty, "Normalization: mean and std need one value per channel")
    precondition(std.allSatisfy { $0 > 0 }, "Normalization: std must be positive")
    self.mean = mean
    self.std = std
  }

  /// The Fashion-MNIST training-set statistics: mean 0.2860, std 0.3530.
  public static let fashionMNIST = Normalization(mean: [0.2860], std: [0.3530])
  /// The CIFAR-10 training-set statistics (RGB).
  public static let cifar10 = Normalization(mean: [0.4914, 0.4822, 0.4465], std: [0.2470, 0.2435, 0.2616])
  /// x/255 only (mean 0, std 1) for `channels` channels.
  public static func unit(channels: Int) -> Normalization {
    Normalization(mean: [Float](repeating: 0, count: channels), std: [Float](repeating: 1, count: channels))
  }

  /// The per-channel mean and (population) std of x/255 over a whole data set.
  public static func estimate(from dataset: ImageDataset) -> Normalization {
    let c = dataset.channels, plane = dataset.height * dataset.width
    var sum = [Double](repeating: 0, count: c), sq = [Double](repeating: 0, count: c)
    dataset.pixels.withUnsafeBufferPointer { p in
      for i in 0..<dataset.count {
        for ch in 0..<c {
          let base = (i * c + ch) * plane
          var s: UInt64 = 0, s2: UInt64 = 0
          for k in 0..<plane {
            let v = UInt64(p[base + k])
            s += v
            s2 += v * v
          }
          sum[ch] += Double(s)
          sq[ch] += Double(s2)
        }
      }
    }
    let n = Double(Swift.max(1, dataset.count * plane))
    var mean = [Float](), std = [Float]()
    for ch in 0..<c {
      let m = sum[ch] / n / 255
      let v = Swift.max(0, sq[ch] / n / (255 * 255) - m * m)
      mean.append(Float(m))
      std.append(Float(Swift.max(v.squareRoot(), 1e-6)))
    }
    return Normalization(mean: mean, std: std)
  }

  /// `(v/255 − mean[c]) / std[c]` for every byte value: `[C][256]`, flattened channel-major.
  func lookupTable() -> [Float] {
    var t = [Float](repeating: 0, count: mean.count * 256)
    for c in 0..<mean.count {
      for v in 0..<256 { t[c * 256 + v] = (Float(v) / 255 - mean[c]) / std[c] }
    }
    return t
  }
}

/// Training-time augmentation applied by `BatchLoader`.
public enum Augmentation: Sendable, Equatable {
  /// Images pass through unchanged.
  case none
  /// Zero-pad each side by `padding` pixels, take a random H×W crop, and flip horizontally
  /// with probability ½ (torchvision's `RandomCrop(H, padding)` + `RandomHorizontalFlip()`;
  /// padded pixels are raw 0, normalised like any other pixel).
  case cropAndFlip(padding: Int)
  /// The random crop of `cropAndFlip` alone (torchvision's `RandomCrop(H, padding)`).
  case crop(padding: Int)
  /// The horizontal flip of `cropAndFlip` alone, with probability ½ (`RandomHorizontalFlip()`).
  case flip

  /// The usual CIFAR-10 recipe: padding 4, random crop, horizontal flip.
  public static let standardCIFAR = Augmentation.cropAndFlip(padding: 4)

  /// Random crop (padding `cropPadding`, when given) and/or horizontal flip, or `.none`.
  public init(cropPadding: Int?, flip: Bool) {
    switch (cropPadding, flip) {
    case (let p?, true): self = .cropAndFlip(padding: p)
    case (let p?, false): self = .crop(padding: p)
    case (nil, true): self = .flip
    case (nil, false): self = .none
    }
  }

  /// `none`, `crop4`, `flip` or `crop4+flip`.
  public var text: String {
    let (p, f) = parts
    let words = (p.map { ["crop\($0)"] } ?? []) + (f ? ["flip"] : [])
    return words.isEmpty ? "none" : words.joined(separator: "+")
  }

  /// The crop padding (nil: no crop) and whether images may be flipped.
  var parts: (padding: Int?, flip: Bool) {
    switch self {
    case .none: return (nil, false)
    case .cropAndFlip(let p): return (p, true)
    case .crop(let p): return (p, false)
    case .flip: return (nil, true)
    }
  }
}

/// Mixes words into one well-distributed seed (SplitMix64 finaliser over each word).
func dataSeedMix(_ words: UInt64...) -> UInt64 { seedMix(start: 0x6A09_E667_F3BC_C908, words) }

/// Cuts a data set into batches of normalised floats.
///
/// Call `startEpoch(e)` and then `batch(i, into:labels:)` for `i` in `0..<batchesPerEpoch`.
/// With `shuffle`, the order of epoch `e` is a Fisher–Yates permutation drawn from a
/// `SeededGenerator` seeded by `(seed, e)`; without it the file order is kept. Augmentation of the
/// sample at position `p` of epoch `e` is drawn from `(seed, e, p)`, so batches can be produced in
/// any order and an interrupted run resumed at any epoch reproduces them.
/// The caller owns the output tensor and label array; they are resized in place (no allocation
/// once they have held a full batch).
///
/// A loader is also a sequence of batches, as PyTorch's `DataLoader`:
/// ```swift
/// let loader = BatchLoader(data.train, batchSize: 64, shuffle: true)
/// for (x, labels) in loader { ... }   // x: [B, C, H, W] normalised, labels: B class indices
/// ```
/// Each `for` loop runs the next epoch (0, 1, 2, …, each with its own seeded order;
/// `startEpoch(_:)` sets the epoch the next loop runs). The loop reuses one tensor: **the batch
/// `x` is overwritten by the next iteration**, so copy it (`x.clone()`) to keep it.
public final class BatchLoader: Sequence {
  /// The data set.
  public let dataset: ImageDataset
  /// Images per batch B.
  public let batchSize: Int
  /// Whether each epoch uses a fresh seeded permutation.
  public let shuffle: Bool
  /// Whether a final incomplete batch is skipped.
  public let dropLast: Bool
  /// Applied to every pixel.
  public let normalization: Normalization
  /// Applied to every image.
  public let augment: Augmentation
  /// The seed that fixes every epoch's order and augmentation.
  public let seed: UInt64
  /// The current epoch (set by `startEpoch`).
  public private(set) var epoch: Int = 0
  /// The current epoch's order: position → image index, a permutation of `0..<count`.
  public private(set) var order: [Int]

  private let table: [Float]

  /// - Parameters:
  ///   - dataset: the images.
  ///   - batchSize: B > 0.
  ///   - shuffle: permute each epoch (seeded); `false` keeps the data set's order.
  ///   - dropLast: skip a final batch smaller than B.
  ///   - normalization: one mean/std per channel of the data set.
  ///   - augment: `.none`, `.cropAndFlip(padding:)`, `.crop(padding:)` or `.flip`.
  ///   - seed: fixes the permutations and the augmentation.
  /// The loader starts at epoch 0.
  public init(
    dataset: ImageDataset, batchSize: Int, shuffle: Bool = false, dropLast: Bool = false, normalization: Normalization? = nil,
    augment: Augmentation = .none, seed: UInt64 = 0
  ) {
    let normalization = normalization ?? dataset.normalization
    precondition(batchSize > 0, "BatchLoader: batch size must be positive")
    precondition(normalization.mean.count == dataset.channels,
      "BatchLoader: normalisation has \(normalization.mean.count) channels, data set \(dataset.name) has \(dataset.channels)")
    if let p = augment.parts.padding { precondition(p >= 0, "BatchLoader: padding must be non-negative") }
    self.dataset = dataset
    self.batchSize = batchSize
    self.shuffle = shuffle
    self.dropLast = dropLast
    self.normalization = normalization
    self.augment = augment
    self.seed = seed
    self.order = Array(0..<dataset.count)
    self.table = normalization.lookupTable()
    startEpoch(0)
  }

  /// A loader over `dataset` with its own normalisation (see the designated initialiser).
  public convenience init(_ dataset: ImageDataset, batchSize: Int, shuffle: Bool = false, dropLast: Bool = false,
    augment: Augmentation = .none, seed: UInt64 = 0) {
    self.init(dataset: dataset, batchSize: batchSize, shuffle: shuffle, dropLast: dropLast, normalization: nil,
      augment: augment, seed: seed)
  }

  /// The epoch the next `for` loop over the loader runs.
  private var nextEpoch = 0

  /// Starts the next epoch and iterates its batches; see the type's documentation.
  public func makeIterator() -> Iterator {
    startEpoch(nextEpoch)
    nextEpoch = epoch + 1
    return Iterator(loader: self)
  }

  /// The batches of one epoch, in order: `(x, labels)` with `x` `[b, C, H, W]` (b ≤ B) reused
  /// from batch to batch.
  public struct Iterator: IteratorProtocol {
    let loader: BatchLoader
    let x: Tensor
    var labels: [Int32] = []
    var index = 0

    init(loader: BatchLoader) {
      self.loader = loader
      let d = loader.dataset
      x = Tensor(zeros: [loader.batchSize, d.channels, d.height, d.width])
    }

    /// The next batch, or nil at the end of the epoch. `x` is the same tensor every time.
    public mutating func next() -> (x: Tensor, labels: [Int32])? {
      guard index < loader.batchesPerEpoch else { return nil }
      loader.batch(index, into: x, labels: &labels)
      index += 1
      return (x, labels)
    }
  }

  /// Batches per epoch: ⌊count/B⌋ with `dropLast`, else ⌈count/B⌉.
  public var batchesPerEpoch: Int {
    dropLast ? dataset.count / batchSize : (dataset.count + batchSize - 1) / batchSize
  }

  /// Images used per epoch (all, or all but the dropped remainder).
  public var samplesPerEpoch: Int { dropLast ? batchesPerEpoch * batchSize : dataset.count }

  /// Sets the order for `epoch`, a pure function of `(seed, epoch)`.
  public func startEpoch(_ epoch: Int) {
    self.epoch = epoch
    nextEpoch = epoch
    let n = dataset.count
    for i in 0..<n { order[i] = i }
    guard shuffle, n > 1 else { return }
    var rng = SeededGenerator(seed: dataSeedMix(seed, 0x5348_5546 /* "SHUF" */, UInt64(bitPattern: Int64(epoch))))
    order.withUnsafeMutableBufferPointer { o in
      for i in stride(from: n - 1, to: 0, by: -1) {
        let j = rng.nextInt(below: i + 1)
        o.swapAt(i, j)
      }
    }
  }

  /// The number of images in batch `index` of the current epoch.
  public func size(ofBatch index: Int) -> Int {
    precondition(index >= 0 && index < batchesPerEpoch, "BatchLoader: batch \(index) outside 0..<\(batchesPerEpoch)")
    return Swift.min(batchSize, dataset.count - index * batchSize)
  }

  /// Fills `x` with batch `index` of the current epoch and `labels` with its labels.
  /// - Parameters:
  ///   - index: the batch, in `0..<batchesPerEpoch`.
  ///   - x: resized in place to `[b, C, H, W]`, b = the returned batch size (≤ B);
  ///     normalised floats.
  ///   - labels: set to the b labels as `Int32`, reusing its capacity.
  /// - Returns: b.
  @discardableResult
  public func batch(_ index: Int, into x: Tensor, labels: inout [Int32]) -> Int {
    let b = size(ofBatch: index)
    batch(index, rows: 0..<b, into: x, labels: &labels)
    return b
  }

  /// Fills `x` with rows `rows` of batch `index` of the current epoch (a data-parallel process's
  /// shard) and `labels` with their labels, decoding only those images: row k is bit for bit
  /// row `rows.lowerBound + k` of the whole batch (same image, crop and flip).
  /// - Parameters:
  ///   - index: the batch, from 0 (in the epoch's order).
  ///   - rows: a range within `0..<size(ofBatch: index)`.
  ///   - x: resized in place to `[rows.count, C, H, W]`; normalised floats.
  ///   - labels: set to the `rows.count` labels as `Int32`, reusing its capacity.
  public func batch(_ index: Int, rows: Range<Int>, into x: Tensor, labels: inout [Int32]) {
    let b = size(ofBatch: index)
    precondition(rows.lowerBound >= 0 && rows.upperBound <= b, "BatchLoader: rows \(rows) outside batch \(index)'s 0..<\(b)")
    let c = dataset.channels, h = dataset.height, w = dataset.width
    let imageSize = c * h * w, plane = h * w
    x.resize(to: [rows.count, c, h, w])
    labels.removeAll(keepingCapacity: true)
    labels.reserveCapacity(batchSize)
    let out = x.data
    dataset.pixels.withUnsafeBufferPointer { px in
      table.withUnsafeBufferPointer { lut in
        for k in 0..<rows.count {
          let position = index * batchSize + rows.lowerBound + k
          let src = order[position]
          labels.append(Int32(dataset.labels[src]))
          let dst = out + k * imageSize
          let img = px.baseAddress! + src * imageSize
          switch augment {
          case .none:
            for ch in 0..<c {
              let l = lut.baseAddress! + ch * 256
              let s = img + ch * plane, d = dst + ch * plane
              for i in 0..<plane { d[i] = l[Int(s[i])] }
            }
          case .cropAndFlip, .crop, .flip:
            // Draws in a fixed order (crop offsets, then the flip), each only when enabled.
            let (padding, flips) = augment.parts
            var rng = SeededGenerator(
              seed: dataSeedMix(seed, 0x4155_4731 /* "AUG1" */, UInt64(bitPattern: Int64(epoch)), UInt64(position)))
            let pad = padding ?? 0
            let dy = padding != nil ? rng.nextInt(below: 2 * pad + 1) : 0
            let dx = padding != nil ? rng.nextInt(below: 2 * pad + 1) : 0
            let flip = flips && rng.next() & 1 == 1
            for ch in 0..<c {
              let l = lut.baseAddress! + ch * 256
              let s = img + ch * plane, d = dst + ch * plane
              let zero = l[0]
              for y in 0..<h {
                let sy = y + dy - pad  // row in the unpadded image
                let row = d + y * w
                if sy < 0 || sy >= h {
                  for xx in 0..<w { row[xx] = zero }
                  continue
                }
                let srow = s + sy * w
                for xx in 0..<w {
                  let ox = flip ? (w - 1 - xx) : xx  // flip the crop
                  let sx = ox + dx - pad
                  row[xx] = (sx < 0 || sx >= w) ? zero : l[Int(srow[sx])]
                }
              }
            }
          }
        }
      }
    }
  }
}
