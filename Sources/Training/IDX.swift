// IDX: the (gzipped) IDX format of MNIST and Fashion-MNIST, read through zlib's gz* API,
// and the Fashion-MNIST loader. Also `DataError`, the error type of every data-set loader.
//
// IDX layout: magic 00 00 TYPE NDIMS, then NDIMS big-endian u32 sizes, then the data in C order
// (multi-byte values big-endian). Images: magic 0x00000803, dims [N, 28, 28]; labels 0x00000801, [N].
import CZlib
import TensorCore

/// A data file that is missing, unreadable or malformed. Messages name the file, say what is
/// wrong and what to do about it.
public enum DataError: Error, CustomStringConvertible, Equatable {
  /// The data set (directory or one of its files) is not at `path`; `hint` says how to get it.
  case notFound(dataset: String, path: String, hint: String)
  /// The file could not be opened or read.
  case unreadable(file: String, reason: String)
  /// The file does not start with the expected magic number.
  case badMagic(file: String, got: UInt32, expected: String)
  /// The header's dimensions are unusable (wrong rank, zero, too many elements).
  case badDimensions(file: String, dims: [Int], reason: String)
  /// The file holds fewer data bytes than its header promises.
  case truncated(file: String, expectedBytes: Int, gotBytes: Int)
  /// There are bytes after the data the header describes.
  case trailingData(file: String, expectedBytes: Int)
  /// The compressed stream is damaged.
  case corrupt(file: String, reason: String)
  /// The images file and the labels file disagree on the number of examples.
  case countMismatch(images: String, imageCount: Int, labels: String, labelCount: Int)
  /// A label is not below the number of classes.
  case badLabel(file: String, index: Int, label: Int, classes: Int)
  /// A record file whose size is not a whole number of records.
  case badRecordSize(file: String, size: Int, recordSize: Int)
  /// A record file with the wrong number of records.
  case wrongRecordCount(file: String, records: Int, expected: Int)
  /// Images of the wrong size for this data set.
  case wrongImageSize(file: String, got: [Int], expected: [Int])

  public var description: String {
    switch self {
    case let .notFound(dataset, path, hint):
      return "\(dataset) not found at \(path): \(hint)"
    case let .unreadable(file, reason):
      return "\(file): cannot read: \(reason)"
    case let .badMagic(file, got, expected):
      return "\(file): bad magic number \(hex32(got)), expected \(expected); this is not the right file "
        + "(or it is corrupt): check the path, or re-download the data set"
    case let .badDimensions(file, dims, reason):
      return "\(file): unusable dimensions \(Shape.text(dims)) in the header: \(reason); the file is corrupt: re-download it"
    case let .truncated(file, expected, got):
      return "\(file): truncated: the header promises \(expected) data bytes but only \(got) are present; "
        + "the download was probably interrupted: re-download or reinstall the data set"
    case let .trailingData(file, expected):
      return "\(file): unexpected bytes after the \(expected) data bytes the header describes; "
        + "the file is corrupt or not of this format: re-download it"
    case let .corrupt(file, reason):
      return "\(file): the compressed data is damaged (\(reason)); re-download or reinstall the data set"
    case let .countMismatch(images, n, labels, m):
      return "\(images) has \(n) images but \(labels) has \(m) labels; the two files must belong to the same split "
        + "(train-* with train-*, t10k-* with t10k-*): reinstall the data set"
    case let .badLabel(file, index, label, classes):
      return "\(file): label \(label) of example \(index) is not below \(classes); the file is corrupt "
        + "or belongs to another data set: re-download it"
    case let .badRecordSize(file, size, recordSize):
      return "\(file): \(size) bytes is not a whole number of \(recordSize)-byte records; the file is truncated "
        + "or not of this format: re-download it"
    case let .wrongRecordCount(file, records, expected):
      return "\(file): holds \(records) records, expected \(expected); the file is truncated or from another "
        + "data set: re-download it"
    case let .wrongImageSize(file, got, expected):
      return "\(file): images are \(Shape.text(got)), expected \(Shape.text(expected)); this is another data set"
    }
  }
}

private func hex32(_ v: UInt32) -> String {
  let s = String(v, radix: 16, uppercase: true)
  return "0x" + String(repeating: "0", count: max(0, 8 - s.count)) + s
}

/// Reading IDX files, gzipped or plain (zlib reads plain files transparently).
public enum IDX {
  /// The most elements an IDX file may declare before we refuse to allocate.
  public static let maxElements = 1_000_000_000

  /// Bytes per element for each IDX type code: 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64.
  public static func elementSize(type: UInt8) -> Int? {
    switch type {
    case 0x08, 0x09: return 1
    case 0x0B: return 2
    case 0x0C, 0x0D: return 4
    case 0x0E: return 8
    default: return nil
    }
  }

  /// Reads a whole IDX file.
  /// - Returns: the type code, the dimensions (outermost first) and the raw data bytes
  ///   (`prod(dims) · elementSize` bytes, big-endian for multi-byte types, as stored).
  /// - Throws: `DataError`: unreadable, bad magic (first two bytes not zero, unknown type,
  ///   rank 0 or above 8), bad dimensions (more than `maxElements` elements, checked before
  ///   allocating), truncated, trailing data, or a damaged gzip stream.
  public static func read(path: String) throws -> (type: UInt8, dims: [Int], bytes: [UInt8]) {
    let status = fileStatus(path)
    guard status.exists else { throw DataError.unreadable(file: path, reason: "no such file") }
    guard !status.isDirectory else { throw DataError.unreadable(file: path, reason: "is a directory") }
    guard let gz = gzopen(path, "rb") else {
      throw DataError.unreadable(file: path, reason: systemErrorText())
    }
    defer { gzclose(gz) }
    gzbuffer(gz, 1 << 17)

    var magic = [UInt8](repeating: 0, count: 4)
    let got = try readFully(gz, into: &magic, count: 4, path: path)
    guard got == 4 else { throw DataError.truncated(file: path, expectedBytes: 4, gotBytes: got) }
    let magicWord = UInt32(magic[0]) << 24 | UInt32(magic[1]) << 16 | UInt32(magic[2]) << 8 | UInt32(magic[3])
    let type = magic[2], rank = Int(magic[3])
    guard magic[0] == 0, magic[1] == 0, let elem = elementSize(type: type), (1...8).contains(rank) else {
      throw DataError.badMagic(file: path, got: magicWord, expected: "00 00 TYPE NDIMS (an IDX file)")
    }
    var dimBytes = [UInt8](repeating: 0, count: 4 * rank)
    let gotDims = try readFully(gz, into: &dimBytes, count: 4 * rank, path: path)
    guard gotDims == 4 * rank else {
      throw DataError.truncated(file: path, expectedBytes: 4 * rank, gotBytes: gotDims)
    }
    var dims = [Int]()
    for i in 0..<rank {
      let b = dimBytes[(4 * i)..<(4 * i + 4)].map(Int.init)
      dims.append(b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3])
    }
    var elements = 1
    for d in dims {
      let (p, o) = elements.multipliedReportingOverflow(by: d)
      guard !o, p <= maxElements else {
        throw DataError.badDimensions(file: path, dims: dims, reason: "more than \(maxElements) elements")
      }
      elements = p
    }
    let byteCount = elements * elem
    var bytes = [UInt8](repeating: 0, count: byteCount)
    let gotData = try readFully(gz, into: &bytes, count: byteCount, path: path)
    guard gotData == byteCount else {
      throw DataError.truncated(file: path, expectedBytes: byteCount, gotBytes: gotData)
    }
    var extra = [UInt8](repeating: 0, count: 1)
    if try readFully(gz, into: &extra, count: 1, path: path) != 0 {
      throw DataError.trailingData(file: path, expectedBytes: byteCount)
    }
    return (type, dims, bytes)
  }

  /// Reads up to `count` bytes; returns how many were read (fewer only at end of file).
  private static func readFully(_ gz: gzFile, into buffer: inout [UInt8], count: Int, path: String) throws -> Int {
    var done = 0
    try buffer.withUnsafeMutableBytes { raw in
      while done < count {
        let chunk = Swift.min(count - done, 1 << 30)
        let n = gzread(gz, raw.baseAddress! + done, UInt32(chunk))
        if n < 0 {
          var code: Int32 = 0
          let msg = gzerror(gz, &code).map { String(cString: $0) } ?? "unknown zlib error"
          throw DataError.corrupt(file: path, reason: msg)
        }
        if n == 0 { break }
        done += Int(n)
      }
    }
    if done < count {
      // A gzip stream cut short reports Z_BUF_ERROR ("unexpected end of file"): that is truncation,
      // which the caller reports with byte counts. Anything else is damage.
      var code: Int32 = 0
      let msg = gzerror(gz, &code).map { String(cString: $0) } ?? ""
      if code != Z_OK && code != Z_BUF_ERROR { throw DataError.corrupt(file: path, reason: msg) }
    }
    return done
  }
}

/// The Fashion-MNIST data set (Zalando): 28×28 greyscale clothing images in 10 classes,
/// 60,000 for training and 10,000 for testing, as gzipped IDX files.
public enum FashionMNIST {
  /// Where the Debian package `dataset-fashion-mnist` installs the files.
  public static let defaultDirectory = "/usr/share/datasets/fashion-mnist"
  /// What to do when the files are missing.
  public static let installHint = "install it with `apt-get install dataset-fashion-mnist`, or use `--data synthetic`"
  /// Class names, by label.
  public static let classNames = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
  ]

  /// Loads one split.
  /// - Parameters:
  ///   - directory: holds `{train,t10k}-images-idx3-ubyte.gz` and `{train,t10k}-labels-idx1-ubyte.gz`
  ///     (the uncompressed names without `.gz` work too).
  ///   - train: the 60,000-image training split, or the 10,000-image test split.
  /// - Returns: images `[N, 1, 28, 28]`, labels in `0..<10`.
  /// - Throws: `DataError` (`.notFound` with the install hint when the directory or a file is missing).
  public static func load(directory: String = defaultDirectory, train: Bool) throws -> ImageDataset {
    let status = fileStatus(directory)
    guard status.exists, status.isDirectory else {
      throw DataError.notFound(dataset: "Fashion-MNIST", path: directory, hint: installHint)
    }
    let prefix = train ? "train" : "t10k"
    let images = try locate(directory, "\(prefix)-images-idx3-ubyte")
    let labels = try locate(directory, "\(prefix)-labels-idx1-ubyte")
    var ds = try load(imagesFile: images, labelsFile: labels, classes: 10)
    ds.name = "fashion-mnist/" + (train ? "train" : "test")
    ds.source = directory
    return ds
  }

  private static func locate(_ directory: String, _ base: String) throws -> String {
    let gz = directory + "/" + base + ".gz"
    if fileStatus(gz).exists { return gz }
    let plain = directory + "/" + base
    if fileStatus(plain).exists { return plain }
    throw DataError.notFound(dataset: "Fashion-MNIST", path: gz, hint: installHint)
  }

  /// Loads any MNIST-style pair of IDX files: images u8 `[N, H, W]` (magic 0x00000803) and
  /// labels u8 `[N]` (magic 0x00000801).
  /// - Returns: images `[N, 1, H, W]`, named after the images file.
  /// - Throws: `DataError`: bad magic, dimensions, truncation, trailing data, count mismatch,
  ///   labels not below `classes`.
  public static func load(imagesFile: String, labelsFile: String, classes: Int = 10) throws -> ImageDataset {
    let img = try IDX.read(path: imagesFile)
    let imgMagic = UInt32(img.type) << 8 | UInt32(img.dims.count)
    guard imgMagic == 0x0000_0803 else {
      throw DataError.badMagic(file: imagesFile, got: imgMagic, expected: "0x00000803 (u8 images [N, H, W])")
    }
    guard img.dims[1] > 0, img.dims[2] > 0 else {
      throw DataError.badDimensions(file: imagesFile, dims: img.dims, reason: "zero-sized images")
    }
    let lab = try IDX.read(path: labelsFile)
    let labMagic = UInt32(lab.type) << 8 | UInt32(lab.dims.count)
    guard labMagic == 0x0000_0801 else {
      throw DataError.badMagic(file: labelsFile, got: labMagic, expected: "0x00000801 (u8 labels [N])")
    }
    guard img.dims[0] == lab.dims[0] else {
      throw DataError.countMismatch(images: imagesFile, imageCount: img.dims[0], labels: labelsFile, labelCount: lab.dims[0])
    }
    if let bad = lab.bytes.firstIndex(where: { Int($0) >= classes }) {
      throw DataError.badLabel(file: labelsFile, index: bad, label: Int(lab.bytes[bad]), classes: classes)
    }
    return ImageDataset(
      name: imagesFile, channels: 1, height: img.dims[1], width: img.dims[2], classes: classes,
      pixels: img.bytes, labels: lab.bytes, source: imagesFile)
  }
}
