// FolderLoaderTests: the folder layout (class order, labels, extensions, sniffed content), the
// seeded validation split, bad folders and files (empty class, zero-byte, truncated, symlink
// loop, wrong content) with and without skipBadImages, and the loader's determinism across
// worker counts.
import Foundation
import TensorCore
import XCTest

@testable import ImageData

final class FolderLoaderTests: XCTestCase {
  private var folderDir: String { Fixtures.path("folder") }

  func testClassesSortedByCodePointAndLabels() throws {
    let s = try ImageFolderSplits.load(directory: folderDir)
    XCTAssertEqual(s.train.classes, ["Zebra", "ant", "bee"])  // Python's sorted(): upper case first
    XCTAssertEqual(s.train.count, 10)  // 3 per class, the PNG named .jpg, not notes.txt
    XCTAssertEqual(s.train.labels, [0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    XCTAssertTrue(s.train.paths.allSatisfy { ImageFolder.hasImageExtension($0) })
    for (p, l) in zip(s.train.paths, s.train.labels) { XCTAssertTrue(p.contains("/train/\(s.train.classes[l])/"), p) }
    XCTAssertEqual(s.val?.count, 3)
    XCTAssertEqual(s.val?.labels, [0, 1, 2])
    XCTAssertNil(s.valSplit)
    XCTAssertTrue(s.train.paths.contains { $0.hasSuffix("bee/actually-png.jpg") })
  }

  private func makeFolder(_ layout: [String: [String]]) throws -> String {
    let dir = try temporaryFolder(self)
    let jpeg = try JPEGEncoder().encode(syntheticPicture(width: 30, height: 20, seed: 1))
    for (cls, files) in layout {
      try FileManager.default.createDirectory(atPath: "\(dir)/train/\(cls)", withIntermediateDirectories: true)
      for f in files { try write(jpeg, to: "\(dir)/train/\(cls)/\(f)") }
    }
    return dir
  }

  func testValSplitIsSeededAndDisjoint() throws {
    let dir = try makeFolder(["a": (0..<10).map { "\($0).jpg" }, "b": (0..<10).map { "\($0).jpg" }])
    let s1 = try ImageFolderSplits.load(directory: dir, valSplit: 0.25, seed: 7)
    let s2 = try ImageFolderSplits.load(directory: dir, valSplit: 0.25, seed: 7)
    let s3 = try ImageFolderSplits.load(directory: dir, valSplit: 0.25, seed: 8)
    XCTAssertEqual(s1.val?.paths, s2.val?.paths)
    XCTAssertNotEqual(s1.val?.paths, s3.val?.paths)
    XCTAssertEqual(s1.val?.count, 5)
    XCTAssertEqual(s1.train.count, 15)
    XCTAssertEqual(Set(s1.train.paths + s1.val!.paths).count, 20)
    XCTAssertEqual(s1.valSplit, 0.25)
    XCTAssertNil(try ImageFolderSplits.load(directory: dir).val)
    XCTAssertThrowsError(try ImageFolderSplits.load(directory: dir, valSplit: 1.5))
  }

  func testBadFoldersAndFilesAreErrorsOrCountedWarnings() throws {
    let dir = try makeFolder(["a": ["1.jpg", "2.jpg"], "b": ["1.jpg"], "empty": []])
    XCTAssertThrowsError(try ImageFolderSplits.load(directory: dir)) { e in
      XCTAssertTrue("\(e)".contains("empty") && "\(e)".contains("no .jpg"), "\(e)")
    }
    try write([], to: "\(dir)/train/a/zero.jpg")
    try write(Array("text".utf8), to: "\(dir)/train/b/text.png")
    try FileManager.default.createSymbolicLink(atPath: "\(dir)/train/b/loop1.jpg", withDestinationPath: "\(dir)/train/b/loop2.jpg")
    try FileManager.default.createSymbolicLink(atPath: "\(dir)/train/b/loop2.jpg", withDestinationPath: "\(dir)/train/b/loop1.jpg")
    let s = try ImageFolderSplits.load(directory: dir, skipBadImages: true)
    XCTAssertEqual(s.train.classes, ["a", "b", "empty"])
    XCTAssertEqual(s.train.count, 3)
    // The empty class, zero.jpg, text.png and both links of the loop.
    XCTAssertEqual(s.train.skipped.count, 5, "\(s.train.skipped)")
    let reasons = s.train.skipped.map(\.description).joined(separator: "\n")
    for w in ["zero.jpg: the file is empty", "text.png: not a JPEG or PNG", "loop1.jpg", "symbolic links", "class 'empty'"] {
      XCTAssertTrue(reasons.contains(w), "missing '\(w)' in\n\(reasons)")
    }
    // Without skipping, each is an error naming the file.
    try FileManager.default.removeItem(atPath: "\(dir)/train/empty")
    XCTAssertThrowsError(try ImageFolderSplits.load(directory: dir)) { e in
      XCTAssertTrue("\(e)".contains("--skip-bad-images") || "\(e)".contains("loop"), "\(e)")
    }
    XCTAssertThrowsError(try ImageFolderSplits.load(directory: dir + "/nothing")) { e in XCTAssertTrue("\(e)".contains("no train/")) }
  }

  private func batches(_ loader: ImageLoader, epoch: Int) throws -> [([Float], [Int32])] {
    loader.startEpoch(epoch)
    var out = [([Float], [Int32])]()
    while let b = try loader.next() {
      out.append((Array(UnsafeBufferPointer(start: b.x.data, count: b.x.count)), b.labels))
      XCTAssertEqual(b.index, out.count - 1)
    }
    return out
  }

  func testLoaderIsTheSameBitsForAnyWorkerCount() throws {
    let s = try ImageFolderSplits.load(directory: folderDir)
    let pipeline = ImagePipeline.train(size: 24, jitter: 0.4)
    var reference: [[([Float], [Int32])]] = []
    for (workers, prefetch) in [(1, 1), (2, 2), (3, 1)] {
      let loader = ImageLoader(folder: s.train, pipeline: pipeline, batchSize: 4, shuffle: true, seed: 9, workers: workers, prefetch: prefetch)
      XCTAssertEqual(loader.batchesPerEpoch, 3)
      let epochs = [try batches(loader, epoch: 0), try batches(loader, epoch: 1)]
      if reference.isEmpty {
        reference = epochs
        XCTAssertNotEqual(epochs[0].map(\.0), epochs[1].map(\.0), "epochs draw different crops")
        XCTAssertEqual(epochs[0].map(\.1.count), [4, 4, 2])
        continue
      }
      for e in 0..<2 {
        for (a, b) in zip(epochs[e], reference[e]) {
          XCTAssertEqual(a.0, b.0, "workers \(workers): different pixels")
          XCTAssertEqual(a.1, b.1)
        }
      }
    }
    // The synchronous path gives the workers' bits; resuming at batch 2 gives batch 2.
    let loader = ImageLoader(folder: s.train, pipeline: pipeline, batchSize: 4, shuffle: true, seed: 9, workers: 2)
    let x = Tensor(zeros: [1])
    var labels = [Int32]()
    try loader.batch(1, epoch: 1, into: x, labels: &labels)
    XCTAssertEqual(Array(UnsafeBufferPointer(start: x.data, count: x.count)), reference[1][1].0)
    loader.startEpoch(1, fromBatch: 2)
    let b = try loader.next()!
    XCTAssertEqual(b.index, 2)
    XCTAssertEqual(Array(UnsafeBufferPointer(start: b.x.data, count: b.x.count)), reference[1][2].0)
    XCTAssertNil(try loader.next())
    XCTAssertTrue((0...1).contains(loader.waitFraction))
  }

  func testLoaderReportsOrSkipsAnImageThatFailsToDecode() throws {
    let dir = try makeFolder(["a": ["1.jpg", "2.jpg", "3.jpg"], "b": ["1.jpg", "2.jpg"]])
    let good = try Fixtures.bytes("decode/rgb420.jpg")
    try write(Array(good.prefix(good.count * 2 / 3)), to: "\(dir)/train/b/0-truncated.jpg")  // the header is intact
    let strict = try ImageFolderSplits.load(directory: dir)
    XCTAssertEqual(strict.train.count, 6)
    let pipeline = ImagePipeline.eval(size: 16)
    let loader = ImageLoader(folder: strict.train, pipeline: pipeline, batchSize: 3, shuffle: false, seed: 0, workers: 2)
    loader.startEpoch(0)
    XCTAssertNotNil(try loader.next())
    XCTAssertThrowsError(try loader.next()) { e in XCTAssertTrue("\(e)".contains("0-truncated.jpg"), "\(e)") }
    let lenient = ImageLoader(
      folder: strict.train, pipeline: pipeline, batchSize: 3, shuffle: false, seed: 0, workers: 2, skipBadImages: true)
    lenient.startEpoch(0)
    var n = 0
    while let b = try lenient.next() { n += b.labels.count }
    XCTAssertEqual(n, 6)
    XCTAssertEqual(lenient.skippedCount, 1)
    XCTAssertEqual(lenient.takeWarnings().count, 1)
  }
}
