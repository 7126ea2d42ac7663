// IDX: the (gzipped) IDX format of MNIST and Fashion-MNIST, inflated in memory with zlib, and
// the Fashion-MNIST loader. Also `DataError`, the error type of every data-set loader.
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

/// Reading IDX files, gzipped or plain.
public enum IDX {
  /// The most elements an IDX file may declare.
  public static let maxElements = 1_000_000_000

  /// The largest file `read(path:)` accepts (the real files are under 30 MB).
  public static let maxFileBytes = 1 << 32

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

  /// Reads a whole IDX file, gzipped or plain; see `decode(_:name:)`.
  /// - Throws: `DataError`: `.unreadable` (missing, a directory, larger than `maxFileBytes`),
  ///   and every error of `decode`.
  public static func read(path: String) throws -> (type: UInt8, dims: [Int], bytes: [UInt8]) {
    let status = fileStatus(path)
    guard status.exists else { throw DataError.unreadable(file: path, reason: "no such file") }
    guard !status.isDirectory else { throw DataError.unreadable(file: path, reason: "is a directory") }
    let data: [UInt8]
    do {
      data = try readFileBytes(path: path, maxBytes: maxFileBytes)
    } catch let e as FileIOError {
      throw DataError.unreadable(file: path, reason: e.reason)
    }
    return try decode(data, name: path)
  }

  /// Decodes the bytes of an IDX file: gzip (one member or several, as `cat a.gz b.gz` makes)
  /// when they start with the gzip magic 1F 8B, plain otherwise.
  /// - Parameters:
  ///   - data: the file's contents.
  ///   - name: the file name for error messages.
  /// - Returns: the type code, the dimensions (outermost first) and the raw data bytes
  ///   (`prod(dims) · elementSize` bytes, big-endian for multi-byte types, as stored).
  /// - Throws: `DataError`: bad magic (first two bytes not zero, unknown type, rank 0 or above
  ///   8), bad dimensions (more than `maxElements` elements), truncated, trailing data, or a
  ///   damaged gzip stream. Memory grows with the data actually present, never with what a
  ///   header claims.
  public static func decode(_ data: [UInt8], name: String) throws -> (type: UInt8, dims: [Int], bytes: [UInt8]) {
    let source = InflatingReader(data: data, name: name)
    var magic = [UInt8](repeating: 0, count: 4)
    let got = try source.read(into: &magic, count: 4)
    guard got == 4 else { throw DataError.truncated(file: name, expectedBytes: 4, gotBytes: got) }
    let magicWord = UInt32(magic[0]) << 24 | UInt32(magic[1]) << 16 | UInt32(magic[2]) << 8 | UInt32(magic[3])
    let type = magic[2], rank = Int(magic[3])
    guard magic[0] == 0, magic[1] == 0, let elem = elementSize(type: type), (1...8).contains(rank) else {
      throw DataError.badMagic(file: name, got: magicWord, expected: "00 00 TYPE NDIMS (an IDX file)")
    }
    var dimBytes = [UInt8](repeating: 0, count: 4 * rank)
    let gotDims = try source.read(into: &dimBytes, count: 4 * rank)
    guard gotDims == 4 * rank else {
      throw DataError.truncated(file: name, expectedBytes: 4 * rank, gotBytes: gotDims)
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
        throw DataError.badDimensions(file: name, dims: dims, reason: "more than \(maxElements) elements")
      }
      elements = p
    }
    let byteCount = elements * elem
    // Read in chunks, so that a header promising gigabytes over a short file allocates little.
    var bytes = [UInt8]()
    bytes.reserveCapacity(Swift.min(byteCount, 64 << 20))
    var chunk = [UInt8](repeating: 0, count: Swift.min(byteCount, 1 << 16))
    while bytes.count < byteCount {
      let want = Swift.min(chunk.count, byteCount - bytes.count)
      let n = try source.read(into: &chunk, count: want)
      bytes.append(contentsOf: chunk[0..<n])
      if n < want { break }
    }
    guard bytes.count == byteCount else {
      throw DataError.truncated(file: name, expectedBytes: byteCount, gotBytes: bytes.count)
    }
    var extra = [UInt8](repeating: 0, count: 1)
    if try source.read(into: &extra, count: 1) != 0 {
      throw DataError.trailingData(file: name, expectedBytes: byteCount)
    }
    return (type, dims, bytes)
  }
}

/// The bytes of an in-memory file, inflated through zlib when they are gzip, as they are
/// otherwise. Gzip members follow one another; anything else after a member is damage.
final class InflatingReader {
  private let data: [UInt8]
  private let name: String
  private let gzip: Bool
  private var position = 0  // bytes of `data` consumed
  private var stream = z_stream()
  private var inflating = false  // inside a gzip member (stream initialised)

  init(data: [UInt8], name: String) {
    self.data = data
    self.name = name
    gzip = InflatingReader.startsWithGzipMagic(data[...])
  }

  deinit {
    if inflating { inflateEnd(&stream) }
  }

  private static func startsWithGzipMagic(_ bytes: ArraySlice<UInt8>) -> Bool {
    bytes.count >= 2 && bytes[bytes.startIndex] == 0x1F && bytes[bytes.startIndex + 1] == 0x8B
  }

  /// Reads up to `count` bytes into the front of `buffer` (count ≤ buffer.count); returns how
  /// many were read: fewer only at the end of the data.
  /// - Throws: `DataError.corrupt` for a damaged gzip stream or bytes after the last member.
  func read(into buffer: inout [UInt8], count: Int) throws -> Int {
    precondition(count <= buffer.count)
    if !gzip {
      let n = Swift.min(count, data.count - position)
      buffer.withUnsafeMutableBufferPointer { out in
        data.withUnsafeBufferPointer { src in
          out.baseAddress!.update(from: src.baseAddress! + position, count: n)
        }
      }
      position += n
      return n
    }
    var produced = 0
    while produced < count {
      if !inflating {
        if position == data.count { break }  // the end of the last member
        guard InflatingReader.startsWithGzipMagic(data[position...]) else {
          throw DataError.corrupt(file: name, reason: "\(data.count - position) bytes after the gzip data are not gzip")
        }
        stream = z_stream()
        let status = inflateInit2_(&stream, 16 + MAX_WBITS, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
        guard status == Z_OK else { throw DataError.corrupt(file: name, reason: "zlib could not start (\(status))") }
        inflating = true
      }
      let availableIn = Swift.min(data.count - position, Int(UInt32.max))
      let room = Swift.min(count - produced, 1 << 30)
      let status = data.withUnsafeBufferPointer { src in
        buffer.withUnsafeMutableBufferPointer { out in
          stream.next_in = UnsafeMutablePointer(mutating: src.baseAddress! + position)
          stream.avail_in = UInt32(availableIn)
          stream.next_out = out.baseAddress! + produced
          stream.avail_out = UInt32(room)
          return inflate(&stream, Z_NO_FLUSH)
        }
      }
      position += availableIn - Int(stream.avail_in)
      produced += room - Int(stream.avail_out)
      switch status {
      case Z_OK:
        continue
      case Z_STREAM_END:
        inflateEnd(&stream)
        inflating = false
      case Z_BUF_ERROR where stream.avail_in == 0:
        return produced  // the data ends inside a member: truncated, as the caller reports
      default:
        let reason = stream.msg.map { String(cString: $0) } ?? "zlib error \(status)"
        throw DataError.corrupt(file: name, reason: reason)
      }
    }
    return produced
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
    ds.normalization = .fashionMNIST
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
    try checkImages(img, name: imagesFile)
    let lab = try IDX.read(path: labelsFile)
    return try dataset(images: img, imagesName: imagesFile, labels: lab, labelsName: labelsFile, classes: classes)
  }

  /// Checks that a decoded IDX file holds u8 images `[N, H, W]` with H, W > 0.
  static func checkImages(_ img: (type: UInt8, dims: [Int], bytes: [UInt8]), name: String) throws {
    let imgMagic = UInt32(img.type) << 8 | UInt32(img.dims.count)
    guard imgMagic == 0x0000_0803 else {
      throw DataError.badMagic(file: name, got: imgMagic, expected: "0x00000803 (u8 images [N, H, W])")
    }
    guard img.dims[1] > 0, img.dims[2] > 0 else {
      throw DataError.badDimensions(file: name, dims: img.dims, reason: "zero-sized images")
    }
  }

  /// The data set of two decoded IDX files (as `IDX.decode` returns them): images u8
  /// `[N, H, W]` and labels u8 `[N]` below `classes`.
  /// - Returns: images `[N, 1, H, W]`, named after `imagesName`.
  /// - Throws: `DataError`: bad magic, zero-sized images, count mismatch, a label not below
  ///   `classes`.
  public static func dataset(
    images img: (type: UInt8, dims: [Int], bytes: [UInt8]), imagesName: String,
    labels lab: (type: UInt8, dims: [Int], bytes: [UInt8]), labelsName: String, classes: Int = 10
  ) throws -> ImageDataset {
    try checkImages(img, name: imagesName)
    let labMagic = UInt32(lab.type) << 8 | UInt32(lab.dims.count)
    guard labMagic == 0x0000_0801 else {
      throw DataError.badMagic(file: labelsName, got: labMagic, expected: "0x00000801 (u8 labels [N])")
    }
    guard img.dims[0] == lab.dims[0] else {
      throw DataError.countMismatch(images: imagesName, imageCount: img.dims[0], labels: labelsName, labelCount: lab.dims[0])
    }
    if let bad = lab.bytes.firstIndex(where: { Int($0) >= classes }) {
      throw DataError.badLabel(file: labelsName, index: bad, label: Int(lab.bytes[bad]), classes: classes)
    }
    return ImageDataset(
      name: imagesName, channels: 1, height: img.dims[1], width: img.dims[2], classes: classes,
      pixels: img.bytes, labels: lab.bytes, source: imagesName)
  }
}
