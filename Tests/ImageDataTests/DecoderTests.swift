// DecoderTests: every decoder fixture against PIL's convert("RGB") bytes, DCT-scaled decoding,
// and every bad input (empty, truncated, corrupt, not an image, huge, a symlink loop).
import Foundation
import XCTest

@testable import ImageData

final class DecoderTests: XCTestCase {
  /// PNGs decode to PIL's bytes exactly; JPEGs (libjpeg-turbo here and in Pillow's wheel, the
  /// same accurate integer DCT and fancy upsampling) to within 2 levels.
  func testEveryFixtureDecodesAsPILConvertRGB() throws {
    let decoder = ImageDecoder()
    var image = RGBImage()
    let cases = Fixtures.entries("decode")
    XCTAssertGreaterThanOrEqual(cases.count, 17)
    for c in cases {
      let file = c["file"] as! String
      let bytes = try Fixtures.bytes("decode/" + file)
      let expected = try Fixtures.bytes("decode/" + file + ".rgb")
      let header = try bytes.withUnsafeBytes { try decoder.decode($0, name: file, into: &image) }
      XCTAssertEqual(header.width, c["width"] as? Int, file)
      XCTAssertEqual(header.height, c["height"] as? Int, file)
      XCTAssertEqual(image.width * image.height * 3, expected.count, file)
      let d = difference(image.pixels[0..<expected.count], expected[...])
      if file.hasSuffix(".png") {
        XCTAssertEqual(d.max, 0, "\(file) (\(c["note"] ?? "")): differs from PIL by up to \(d.max)")
      } else {
        XCTAssertLessThanOrEqual(d.max, 2, "\(file): differs from PIL by up to \(d.max)")
        XCTAssertLessThanOrEqual(d.mean, 0.5, file)
      }
    }
  }

  func testScaledJPEGDecodeHasTurboJPEGSizesAndStaysClose() throws {
    let decoder = ImageDecoder()
    let picture = syntheticPicture(width: 203, height: 131, seed: 1)
    let jpeg = try JPEGEncoder().encode(picture, quality: 95)
    var full = RGBImage(), half = RGBImage()
    _ = try jpeg.withUnsafeBytes { try decoder.decode($0, name: "p.jpg", into: &full) }
    for d in [2, 4, 8] {
      _ = try jpeg.withUnsafeBytes { try decoder.decode($0, name: "p.jpg", into: &half, scaleDenominator: d) }
      XCTAssertEqual(half.width, (203 + d - 1) / d)
      XCTAssertEqual(half.height, (131 + d - 1) / d)
    }
    // 1/2 against a 2×2 box average of the full decode (interior pixels).
    _ = try jpeg.withUnsafeBytes { try decoder.decode($0, name: "p.jpg", into: &half, scaleDenominator: 2) }
    var total = 0.0, n = 0
    for y in 2..<(half.height - 2) {
      for x in 2..<(half.width - 2) {
        for c in 0..<3 {
          var s = 0
          for dy in 0..<2 { for dx in 0..<2 { s += Int(full.pixels[((2 * y + dy) * full.width + 2 * x + dx) * 3 + c]) } }
          total += abs(Double(s) / 4 - Double(half.pixels[(y * half.width + x) * 3 + c]))
          n += 1
        }
      }
    }
    XCTAssertLessThan(total / Double(n), 6, "a 1/2 DCT-scaled decode should be close to a box-filtered full decode")
  }

  private func assertRefused(_ bytes: [UInt8], name: String, _ words: [String], line: UInt = #line) {
    let decoder = ImageDecoder()
    var image = RGBImage()
    XCTAssertThrowsError(try bytes.withUnsafeBytes { try decoder.decode($0, name: name, into: &image) }, line: line) { e in
      guard let e = e as? ImageError else { return XCTFail("not an ImageError: \(e)", line: line) }
      XCTAssertEqual(e.file, name, line: line)
      for w in words { XCTAssertTrue(e.description.contains(w), "'\(e)' lacks '\(w)'", line: line) }
    }
  }

  func testBadInputsAreClearErrors() throws {
    let jpeg = try Fixtures.bytes("decode/rgb420.jpg"), png = try Fixtures.bytes("decode/rgb.png")
    assertRefused([], name: "empty.jpg", ["empty"])
    assertRefused(Array("hello, not an image".utf8), name: "text.jpg", ["not a JPEG or PNG"])
    assertRefused(Array(jpeg.prefix(jpeg.count / 2)), name: "half.jpg", ["JPEG"])
    assertRefused(Array(jpeg.prefix(40)), name: "head.jpg", ["JPEG"])
    var garbage = jpeg
    for i in stride(from: 200, to: garbage.count - 2, by: 3) { garbage[i] = UInt8(truncatingIfNeeded: i &* 131) }
    assertRefused(garbage, name: "garbage.jpg", ["JPEG"])
    assertRefused(Array(png.prefix(png.count - 30)), name: "cut.png", ["PNG"])
    assertRefused(Array(png.prefix(20)), name: "sig.png", ["PNG"])
    var badCRC = png
    badCRC[40] ^= 0xFF
    assertRefused(badCRC, name: "crc.png", ["PNG"])
  }

  /// A 20000×20000 header is refused from the header, before any pixel memory (the files are
  /// real fixtures with their size fields patched).
  func testHugeImagesAreRefusedBeforeDecoding() throws {
    var jpeg = try Fixtures.bytes("decode/rgb420.jpg")
    // SOF0 (FF C0): length(2) precision(1) height(2) width(2)
    let sof = (0..<(jpeg.count - 1)).first { jpeg[$0] == 0xFF && jpeg[$0 + 1] == 0xC0 }!
    for (k, v) in [(5, 20000), (7, 20000)] {
      jpeg[sof + k] = UInt8(v >> 8)
      jpeg[sof + k + 1] = UInt8(v & 0xFF)
    }
    assertRefused(jpeg, name: "huge.jpg", ["20000x20000", "limit"])
    var png = try Fixtures.bytes("decode/rgb.png")
    for k in [16, 20] { png.replaceSubrange(k..<(k + 4), with: [0, 0, 0x4E, 0x20]) }  // 20000
    let crc = crc32(png[12..<29])
    png.replaceSubrange(29..<33, with: [UInt8(crc >> 24), UInt8((crc >> 16) & 0xFF), UInt8((crc >> 8) & 0xFF), UInt8(crc & 0xFF)])
    assertRefused(png, name: "huge.png", ["20000x20000", "limit"])
    let decoder = ImageDecoder()
    XCTAssertThrowsError(try png.withUnsafeBytes { try decoder.header($0, name: "huge.png") })
  }

  func testSymlinkLoopAndMissingFilesNameTheFile() throws {
    let dir = try temporaryFolder(self)
    try FileManager.default.createSymbolicLink(atPath: dir + "/a.jpg", withDestinationPath: dir + "/b.jpg")
    try FileManager.default.createSymbolicLink(atPath: dir + "/b.jpg", withDestinationPath: dir + "/a.jpg")
    XCTAssertThrowsError(try ImageFile.read(dir + "/a.jpg")) { e in
      XCTAssertEqual((e as? ImageError)?.file, dir + "/a.jpg")
      XCTAssertTrue("\(e)".contains("symbolic links"), "\(e)")
    }
    XCTAssertThrowsError(try ImageFile.read(dir + "/none.jpg")) { e in XCTAssertTrue("\(e)".contains("none.jpg")) }
    XCTAssertThrowsError(try ImageFile.read(dir)) { e in XCTAssertTrue("\(e)".contains("not a regular file"), "\(e)") }
  }
}
