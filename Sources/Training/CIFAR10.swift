// CIFAR10: the binary version of CIFAR-10 (`cifar-10-batches-bin`): data_batch_1..5.bin for
// training, test_batch.bin for testing. Each file is 10,000 records of 3073 bytes, no header:
// one label byte (0–9), then 3072 pixels: the 32×32 R plane, then G, then B (already CHW).

/// The CIFAR-10 data set, binary version. No system package ships it: pass its directory.
public enum CIFAR10 {
  /// Bytes per record: 1 label + 3·32·32 pixels.
  public static let recordSize = 3073
  /// Records in each official batch file.
  public static let recordsPerFile = 10_000
  /// What to do when the files are missing.
  public static let installHint =
    "download the binary version (cifar-10-binary.tar.gz from the CIFAR-10 page), unpack it and pass "
    + "its `cifar-10-batches-bin` directory with `--data-dir`, or use `--data synthetic`"
  /// Class names, by label (as in `batches.meta.txt`).
  public static let classNames = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
  ]

  /// The file names of a split.
  public static func fileNames(train: Bool) -> [String] {
    train ? (1...5).map { "data_batch_\($0).bin" } : ["test_batch.bin"]
  }

  /// Loads one split from a `cifar-10-batches-bin` directory.
  /// - Parameters:
  ///   - directory: holds `data_batch_1.bin` … `data_batch_5.bin` and `test_batch.bin`.
  ///   - train: 50,000 training images (5 files) or the 10,000 test images.
  ///   - recordsPerFile: how many records each file must hold (10,000 for the real data set;
  ///     `nil` accepts any positive whole number of records, for small test files).
  /// - Returns: images `[N, 3, 32, 32]`, labels in `0..<10`, in file order.
  /// - Throws: `DataError`: `.notFound` (directory or file), `.badRecordSize` (truncated),
  ///   `.wrongRecordCount`, `.badLabel`.
  public static func load(directory: String, train: Bool, recordsPerFile: Int? = CIFAR10.recordsPerFile) throws
    -> ImageDataset
  {
    let status = fileStatus(directory)
    guard status.exists, status.isDirectory else {
      throw DataError.notFound(dataset: "CIFAR-10", path: directory, hint: installHint)
    }
    var pixels = [UInt8](), labels = [UInt8]()
    for name in fileNames(train: train) {
      let path = directory + "/" + name
      guard fileStatus(path).exists else { throw DataError.notFound(dataset: "CIFAR-10", path: path, hint: installHint) }
      let batch = try readBatch(path: path, expectedRecords: recordsPerFile)
      pixels += batch.pixels
      labels += batch.labels
    }
    return ImageDataset(
      name: "cifar10/" + (train ? "train" : "test"), channels: 3, height: 32, width: 32, classes: 10,
      pixels: pixels, labels: labels, source: directory, normalization: .cifar10)
  }

  /// Reads one batch file.
  /// - Parameters:
  ///   - path: the file, e.g. `data_batch_1.bin`.
  ///   - expectedRecords: the required record count, or `nil` for any positive count.
  /// - Returns: pixels `[n, 3, 32, 32]` and `n` labels.
  /// - Throws: `DataError`: `.unreadable`, `.badRecordSize` (empty, or not a multiple of 3073
  ///   bytes: truncated), `.wrongRecordCount`, `.badLabel` (label > 9).
  public static func readBatch(path: String, expectedRecords: Int? = nil) throws -> (pixels: [UInt8], labels: [UInt8]) {
    let bytes: [UInt8]
    do {
      // The real files are 30,730,000 bytes; refuse anything far larger before reading it.
      bytes = try readFileBytes(path: path, maxBytes: 64 * recordsPerFile * recordSize)
    } catch let e as FileIOError {
      throw DataError.unreadable(file: path, reason: e.reason)
    }
    return try decodeBatch(bytes, name: path, expectedRecords: expectedRecords)
  }

  /// Decodes the bytes of one batch file: records of a label byte (below 10) and 3072 pixel
  /// bytes (1024 red, 1024 green, 1024 blue, each row-major 32×32).
  /// - Parameters:
  ///   - bytes: the file's contents.
  ///   - path: the file name for error messages (the argument `name:`).
  ///   - expectedRecords: the required record count, or `nil` for any positive count.
  /// - Returns: pixels `[n, 3, 32, 32]` and `n` labels.
  /// - Throws: `DataError`: `.badRecordSize` (empty, or not a multiple of 3073 bytes:
  ///   truncated), `.wrongRecordCount`, `.badLabel` (label > 9).
  public static func decodeBatch(_ bytes: [UInt8], name path: String, expectedRecords: Int? = nil) throws
    -> (pixels: [UInt8], labels: [UInt8])
  {
    guard !bytes.isEmpty, bytes.count % recordSize == 0 else {
      throw DataError.badRecordSize(file: path, size: bytes.count, recordSize: recordSize)
    }
    let n = bytes.count / recordSize
    if let e = expectedRecords, n != e { throw DataError.wrongRecordCount(file: path, records: n, expected: e) }
    var labels = [UInt8](repeating: 0, count: n)
    var pixels = [UInt8](repeating: 0, count: n * (recordSize - 1))
    try bytes.withUnsafeBufferPointer { src in
      try pixels.withUnsafeMutableBufferPointer { dst in
        for i in 0..<n {
          let label = src[i * recordSize]
          guard label < 10 else { throw DataError.badLabel(file: path, index: i, label: Int(label), classes: 10) }
          labels[i] = label
          (dst.baseAddress! + i * (recordSize - 1)).update(
            from: src.baseAddress! + i * recordSize + 1, count: recordSize - 1)
        }
      }
    }
    return (pixels, labels)
  }
}
