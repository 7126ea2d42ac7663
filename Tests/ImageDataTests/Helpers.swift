// Helpers: the fixture folder, its manifest, temporary folders, and small byte utilities.
import Foundation
import ImageData
import XCTest

enum Fixtures {
  static let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path

  static func path(_ name: String) -> String { dir + "/" + name }

  static func bytes(_ name: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path(name)))) }

  nonisolated(unsafe) static let manifest: [String: Any] = {
    let data = try! Data(contentsOf: URL(fileURLWithPath: dir + "/manifest.json"))
    return try! JSONSerialization.jsonObject(with: data) as! [String: Any]
  }()

  static func entries(_ key: String) -> [[String: Any]] { manifest[key] as? [[String: Any]] ?? [] }
}

/// A fresh temporary folder, removed at the end of the test.
func temporaryFolder(_ test: XCTestCase) throws -> String {
  let dir = NSTemporaryDirectory() + "imagedata-\(UUID().uuidString)"
  try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
  test.addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
  return dir
}

func write(_ bytes: [UInt8], to path: String) throws {
  try FileManager.default.createDirectory(
    atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
  try Data(bytes).write(to: URL(fileURLWithPath: path))
}

/// The largest absolute difference and the mean absolute difference of two byte arrays.
func difference(_ a: ArraySlice<UInt8>, _ b: ArraySlice<UInt8>) -> (max: Int, mean: Double) {
  precondition(a.count == b.count)
  var m = 0, s = 0
  for (x, y) in zip(a, b) {
    let d = abs(Int(x) - Int(y))
    m = max(m, d)
    s += d
  }
  return (m, Double(s) / Double(max(1, a.count)))
}

/// PNG's CRC-32 (for patching a header in a test).
func crc32(_ bytes: ArraySlice<UInt8>) -> UInt32 {
  var c: UInt32 = 0xFFFF_FFFF
  for b in bytes {
    c ^= UInt32(b)
    for _ in 0..<8 { c = (c >> 1) ^ (0xEDB8_8320 & (0 &- (c & 1))) }
  }
  return ~c
}

/// A synthetic RGB picture with edges and texture.
func syntheticPicture(width: Int, height: Int, seed: Int) -> RGBImage {
  var p = [UInt8](repeating: 0, count: width * height * 3)
  for y in 0..<height {
    for x in 0..<width {
      let i = (y * width + x) * 3
      p[i] = UInt8((x * 255 / max(1, width - 1) + seed * 31) % 256)
      p[i + 1] = UInt8(128 + Int(100 * sin(Double(x + seed) / 5 + Double(y) / 7)))
      p[i + 2] = (x - width / 2) * (x - width / 2) + (y - height / 2) * (y - height / 2) < (min(width, height) / 3) * (min(width, height) / 3) ? 220 : 30
    }
  }
  return RGBImage(width: width, height: height, pixels: p)
}
