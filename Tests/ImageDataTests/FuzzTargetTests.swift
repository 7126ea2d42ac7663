// FuzzTargetTests: the fuzz-image target's own code (ImageFuzzTarget.run) on its seed corpus
// (every file decodes) and on cut and damaged versions of it (every one refused or decoded,
// never a trap).
import Foundation
import XCTest

@testable import ImageData

final class FuzzTargetTests: XCTestCase {
  func testFuzzTargetDecodesItsCorpusAndRefusesDamage() throws {
    let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent().appendingPathComponent("Fuzz/Corpus/image").path
    let files = try FileManager.default.contentsOfDirectory(atPath: corpus).sorted()
    XCTAssertGreaterThanOrEqual(files.count, 10)
    let target = ImageFuzzTarget()
    var rejected = 0
    for f in files {
      let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: corpus + "/" + f)))
      guard case .decoded = target.run(bytes, name: f) else { return XCTFail("\(f) did not decode: \(target.run(bytes))") }
      for cut in [0, 1, 8, 30, bytes.count / 3, bytes.count - 1] {
        if case .rejected = target.run(Array(bytes.prefix(cut)), name: f) { rejected += 1 }
      }
      var flipped = bytes
      for i in stride(from: 7, to: flipped.count, by: 97) { flipped[i] ^= 0x5A }
      _ = target.run(flipped, name: f)
    }
    XCTAssertGreaterThan(rejected, 3 * files.count)
  }
}
