// RegionDecodeTests: the JPEG decode of a crop's rows and columns only (what the training
// pipeline's RandomResizedCrop decodes) is the full decode's bytes at every pixel of the crop,
// for 4:2:0, 4:4:4, gray, progressive and tiny JPEGs, random and edge crops; the pipeline that
// uses it gives the same floats as a full decode followed by the transforms; bad files still fail.
import Foundation
import TensorCore
import XCTest

@testable import ImageData

final class RegionDecodeTests: XCTestCase {
  /// JPEGs to crop: the decoder fixtures and synthetic 4:2:0 files of odd sizes.
  private func jpegs() throws -> [(String, [UInt8])] {
    var files = try ["rgb420.jpg", "rgb444.jpg", "gray.jpg", "progressive.jpg", "tiny.jpg", "cmyk.jpg"].map {
      ($0, try Fixtures.bytes("decode/" + $0))
    }
    let encoder = JPEGEncoder()
    for (w, h, q) in [(500, 375, 90), (203, 131, 95), (17, 9, 75), (1, 1, 90), (64, 33, 50)] {
      files.append(("synthetic-\(w)x\(h).jpg", try encoder.encode(syntheticPicture(width: w, height: h, seed: w), quality: q)))
    }
    return files
  }

  private func crops(width: Int, height: Int, seed: UInt64) -> [(top: Int, left: Int, height: Int, width: Int)] {
    var list: [(top: Int, left: Int, height: Int, width: Int)] = [
      (0, 0, height, width), (0, 0, 1, 1), (height - 1, width - 1, 1, 1), (0, width - 1, height, 1), (height - 1, 0, 1, width),
      (height / 3, width / 3, Swift.max(1, height / 3), Swift.max(1, width / 3)),
    ]
    var rng = SeededGenerator(seed: seed)
    for _ in 0..<40 {
      list.append(
        randomResizedCropParameters(width: width, height: height, scale: 0.01...1, ratio: 0.5...2, rng: &rng))
    }
    return list
  }

  func testRegionDecodeIsTheFullDecodeAtEveryCropPixel() throws {
    let decoder = ImageDecoder()
    var full = RGBImage(), part = RGBImage()
    for (name, bytes) in try jpegs() {
      let header = try bytes.withUnsafeBytes { try decoder.decode($0, name: name, into: &full) }
      for c in crops(width: header.width, height: header.height, seed: UInt64(bytes.count)) {
        let origin = try bytes.withUnsafeBytes { try decoder.decode($0, name: name, into: &part, covering: c) }
        XCTAssertLessThanOrEqual(origin.left, c.left, name)
        XCTAssertLessThanOrEqual(origin.top, c.top, name)
        XCTAssertGreaterThanOrEqual(origin.left + part.width, c.left + c.width, name)
        XCTAssertGreaterThanOrEqual(origin.top + part.height, c.top + c.height, name)
        var mismatches = 0
        for y in c.top..<(c.top + c.height) {
          for x in c.left..<(c.left + c.width) {
            let a = full.pixel(x: x, y: y), b = part.pixel(x: x - origin.left, y: y - origin.top)
            if a != b { mismatches += 1 }
          }
        }
        XCTAssertEqual(mismatches, 0, "\(name) crop \(c): \(mismatches) pixels differ from the full decode")
      }
    }
  }

  /// The whole pipeline (decode of the crop, resize, flip, normalise) against a full decode then
  /// the same transforms with the same draws: the same floats, bit for bit.
  func testPipelineWithRegionDecodeIsTheFullDecodePipeline() throws {
    // No decode scaling: the reference decodes at full size (224 from a 500×375 file is never scaled anyway).
    let pipeline = ImagePipeline(
      [.randomResizedCrop(32), .randomHorizontalFlip(p: 0.5)], convention: .imageNet, decodeScaling: false)
    let processor = ImageProcessor(), reference = ImageProcessor()
    let decoder = ImageDecoder()
    let n = 3 * 32 * 32
    let out = Tensor(zeros: [n]), expected = Tensor(zeros: [n])
    var full = RGBImage()
    for (name, bytes) in try jpegs() {
      _ = try bytes.withUnsafeBytes { try decoder.decode($0, name: name, into: &full) }
      for position in 0..<12 {
        var rng = ImageLoader.sampleGenerator(seed: 7, epoch: 1, position: position)
        try bytes.withUnsafeBytes { try processor.process($0, name: name, pipeline: pipeline, rng: &rng, into: out.data) }
        var rng2 = ImageLoader.sampleGenerator(seed: 7, epoch: 1, position: position)
        let image = reference.apply(pipeline.transforms, to: full, rng: &rng2)
        reference.write(image, convention: pipeline.convention, into: expected.data)
        for i in 0..<n where out.data[i] != expected.data[i] {
          XCTFail("\(name) sample \(position): element \(i) is \(out.data[i]), the full decode's \(expected.data[i])")
          break
        }
      }
    }
  }

  func testRegionDecodeOfABadFileFailsAsTheFullDecode() throws {
    let good = try JPEGEncoder().encode(syntheticPicture(width: 120, height: 90, seed: 3), quality: 90)
    let decoder = ImageDecoder()
    var image = RGBImage()
    // Truncated after two thirds: a crop in the intact top rows still fails (the rest is checked).
    let truncated = Array(good.prefix(good.count * 2 / 3))
    XCTAssertThrowsError(
      try truncated.withUnsafeBytes { try decoder.decode($0, name: "t.jpg", into: &image, covering: (0, 0, 8, 8)) }
    ) { e in
      XCTAssertEqual((e as? ImageError)?.file, "t.jpg")
      XCTAssertTrue("\(e)".contains("JPEG"), "\(e)")
    }
    // Corrupt entropy data after the crop.
    var corrupt = good
    for i in stride(from: corrupt.count * 3 / 4, to: corrupt.count - 4, by: 7) { corrupt[i] = 0xFF }
    XCTAssertThrowsError(
      try corrupt.withUnsafeBytes { try decoder.decode($0, name: "c.jpg", into: &image, covering: (0, 0, 8, 8)) }
    ) { e in XCTAssertEqual((e as? ImageError)?.file, "c.jpg") }
    // The decoder still works after the failures.
    let origin = try good.withUnsafeBytes { try decoder.decode($0, name: "g.jpg", into: &image, covering: (40, 50, 20, 30)) }
    XCTAssertLessThanOrEqual(origin.left, 50)
    XCTAssertLessThanOrEqual(origin.top, 40)
  }
}
