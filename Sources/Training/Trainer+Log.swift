// Trainer+Log: the JSONL log, one record per step and per epoch, cut back to the checkpoint on
// resume so that it reads as one uninterrupted run.
import Foundation
import NN
import TensorCore

extension Trainer {
  /// Appends one JSON line to the log; a failed write stops the run with an error naming the file.
  func writeLog(_ record: [String: Any]) throws {
    guard let log else { return }
    var bytes = [UInt8](try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys]))
    bytes.append(UInt8(ascii: "\n"))
    try log.write(bytes)
  }

  /// On resume from step `s` in epoch `e` (0-based), keeps the log records of the run up to its
  /// checkpoint: step records up to `s` and epoch records of the epochs before `e`. What the
  /// killed run logged after its checkpoint is trained again, and logged again, so the log
  /// reads as one uninterrupted run. Rewritten atomically.
  func truncateLog(_ path: String, toStep s: Int, epoch e: Int) throws {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw TensorError.invalidArgument("\(path): cannot read the log file to resume it")
    }
    var kept = Data()
    for line in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
      guard let record = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
        continue  // a line cut short by the kill
      }
      let keep: Bool
      if record["loss"] != nil, let step = record["step"] as? Int {
        keep = step <= s
      } else if let epoch = record["epoch"] as? Int {
        keep = epoch <= e  // epoch records count from 1
      } else {
        keep = false
      }
      if keep {
        kept.append(Data(line))
        kept.append(UInt8(ascii: "\n"))
      }
    }
    try writeFileAtomically(path: path, bytes: [UInt8](kept))
  }

}
