// fuzz-cifar: libFuzzer entry point for the CIFAR-10 batch reader. The input is one batch file
// (records of a label byte and 3072 pixel bytes), decoded with any record count and then with the
// count of a small file; the decoded sizes must agree with the record count. Every failure must
// be a thrown DataError; a trap, a crash, a leak or a hang is a bug.
import Training

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCIFAR(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
  let bytes = [UInt8](UnsafeRawBufferPointer(start: start, count: count))
  for expected in [nil, 1] as [Int?] {
    do {
      let batch = try CIFAR10.decodeBatch(bytes, name: "data_batch_1.bin", expectedRecords: expected)
      precondition(batch.pixels.count == batch.labels.count * (CIFAR10.recordSize - 1), "pixel count")
      precondition(batch.labels.allSatisfy { $0 < 10 }, "a label above 9 passed")
    } catch is DataError {
    } catch {
      preconditionFailure("unexpected error type: \(error)")
    }
  }
  return 0
}
