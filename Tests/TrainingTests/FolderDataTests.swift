// FolderDataTests: `--data folder` (DataChoice.folder): the fixture folder decoded into memory
// through the evaluation transforms, labels by sorted class names, a carved validation split,
// the checkpoint metadata strings, and clear errors.
import Foundation
import ImageData
import TensorCore
import XCTest

@testable import Training

final class FolderDataTests: XCTestCase {
  private let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("ImageDataTests/Fixtures/folder").path

  func testFolderLoadsThroughTheEvalTransforms() throws {
    let options = FolderDataOptions(imageSize: 16, workers: 3)
    let d = try DataChoice.folder.load(directory: dir, folder: options)
    XCTAssertEqual(d.resolved, .folder)
    XCTAssertEqual(d.train.count, 10)
    XCTAssertEqual(d.test.count, 3)
    XCTAssertEqual(d.train.classes, 3)
    XCTAssertEqual(d.train.imageShape, [3, 16, 16])
    XCTAssertEqual(d.test.labels, [0, 1, 2])
    XCTAssertEqual(d.normalization, FolderDataOptions.normalization)
    // Image 0 of train/ is train/Zebra/img0.jpg: its pixels are the processor's, as planes.
    let splits = try ImageFolderSplits.load(directory: dir)
    let bytes = try ImageFile.read(splits.train.paths[0])
    var rng = SeededGenerator(seed: 0)
    let img = try bytes.withUnsafeBytes {
      try ImageProcessor().transformed($0, name: "x", pipeline: options.evalPipeline, rng: &rng)
    }
    for k in 0..<(16 * 16) {
      for c in 0..<3 { XCTAssertEqual(d.train.pixels[c * 256 + k], img.pixels[3 * k + c]) }
    }
    // One worker gives the same bytes.
    let one = try DataChoice.folder.load(directory: dir, folder: FolderDataOptions(imageSize: 16, workers: 1))
    XCTAssertEqual(one.train.pixels, d.train.pixels)
  }

  func testValSplitAndErrors() throws {
    let tmp = NSTemporaryDirectory() + "folderdata-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: tmp) }
    try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
    try FileManager.default.copyItem(atPath: dir + "/train", toPath: tmp + "/train")
    XCTAssertThrowsError(try DataChoice.folder.load(directory: tmp)) { e in XCTAssertTrue("\(e)".contains("--val-split"), "\(e)") }
    let d = try DataChoice.folder.load(directory: tmp, folder: FolderDataOptions(imageSize: 8, valSplit: 0.3, seed: 4))
    XCTAssertEqual(d.train.count + d.test.count, 10)
    XCTAssertEqual(d.test.count, 3)
    XCTAssertTrue(d.source.contains("30% of train/"), d.source)
    XCTAssertThrowsError(try DataChoice.folder.load(directory: nil))
    let m = FolderMetadata.strings(classes: ["Zebra", "a\"b"], valSplit: 0.3, seed: 4, eval: .eval(size: 8))
    XCTAssertEqual(m["class_names"], #"["Zebra","a\"b"]"#)
    XCTAssertEqual(m["val_split"], "0.3")
    XCTAssertEqual(try ImagePipeline(parsing: m["eval_transform"]!), .eval(size: 8))
  }
}
