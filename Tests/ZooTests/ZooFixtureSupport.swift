// ZooFixtureSupport: reading the ZooTests fixtures (Fixtures/make_zoo_fixtures.py wrote them from
// the official modules), and rebuilding the ResNet-18 tensors that the script generated instead
// of committing (a counter-based generator, checked against PyTorch's CRC-32 of each tensor).
import CZlib
import Foundation
import NN
import TensorCore
import TestSupport
import Training
import XCTest
import Zoo

enum ZooFixtures {
  static let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path

  /// One model of zoo_keys.json.
  struct KeyList: Decodable {
    let input: [Int]
    let classes: Int
    let parameters: Int
    let macs: Int
    let keys: [[KeyOrShape]]
  }

  /// A key list entry is `[name, shape]`.
  enum KeyOrShape: Decodable {
    case name(String)
    case shape([Int])
    init(from decoder: Decoder) throws {
      let c = try decoder.singleValueContainer()
      if let s = try? c.decode(String.self) { self = .name(s) } else { self = .shape(try c.decode([Int].self)) }
    }
  }

  static func keyLists() throws -> [String: KeyList] {
    let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/zoo_keys.json"))
    return try JSONDecoder().decode([String: KeyList].self, from: data)
  }

  static func f32(_ file: SafetensorsFile, _ name: String) throws -> DoubleTensor {
    guard case let .f32(shape, values)? = file.tensors[name]?.widened else {
      throw TensorError.invalidArgument("fixture tensor \(name) is missing or not F32")
    }
    return DoubleTensor(shape: shape, values: values.map(Double.init))
  }

  /// The fixture state of `name` with any generated tensors rebuilt; fails the test when a
  /// rebuilt tensor's CRC-32 differs from PyTorch's.
  static func state(_ name: String) throws -> SafetensorsFile {
    var file = try SafetensorsFile.read(path: dir + "/\(name).state.safetensors")
    guard let spec = file.metadata["generated"] else { return file }
    guard let entries = try JSONSerialization.jsonObject(with: Data(spec.utf8)) as? [[Any]] else {
      throw TensorError.invalidArgument("\(name): bad `generated` metadata")
    }
    let order = file.metadata["keys_in_order"]!.split(separator: ",").map(String.init)
    for e in entries {
      let key = e[0] as! String, shape = (e[1] as! [NSNumber]).map(\.intValue)
      let bound = Float(bitPattern: (e[2] as! NSNumber).uint32Value), crc = (e[3] as! NSNumber).uint32Value
      let index = order.firstIndex(of: key)!
      let values = generated(tensor: index, count: shape.reduce(1, *), bound: bound)
      let got = values.withUnsafeBytes { UInt32(crc32(0, $0.bindMemory(to: UInt8.self).baseAddress, uInt($0.count))) }
      XCTAssertEqual(got, crc, "\(name): rebuilt \(key) differs from the tensor PyTorch used")
      file.tensors[key] = .f32(shape: shape, values: values)
    }
    return file
  }

  /// make_zoo_fixtures.py's generator: splitmix64(k << 32 | i), top 24 bits → u, (2u − 1)·bound.
  static func generated(tensor k: Int, count: Int, bound: Float) -> [Float] {
    [Float](unsafeUninitializedCapacity: count) { buf, n in
      for i in 0..<count {
        var z = (UInt64(k) << 32 | UInt64(i)) &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        let u = Float(z >> 40) * (1.0 / 16_777_216.0)
        buf[i] = (u * 2 - 1) * bound
      }
      n = count
    }
  }
}
