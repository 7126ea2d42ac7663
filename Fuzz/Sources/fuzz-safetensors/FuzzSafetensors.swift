// fuzz-safetensors: libFuzzer entry point for the safetensors reader and the checks of a file
// against a model. The input is a whole file: it is decoded (header, JSON, dtypes, shapes,
// offsets), re-encoded and decoded again (the bytes must round-trip), its metadata is parsed as a
// checkpoint's, and its tensors are loaded strictly into the seed network it names (built once
// per kind, for 1×28×28 inputs and 10 classes). Every failure must be a thrown
// SafetensorsError or CheckpointError; a trap, a crash, a leak or a hang is a bug.
import NN
import Training

/// The three seed networks, built once: building one per input would dominate the run time.
nonisolated(unsafe) let models: [ModelKind: Module] = {
  var m = [ModelKind: Module]()
  for kind in ModelKind.allCases { m[kind] = try! kind.build(input: [1, 28, 28], classes: 10, seed: 0) }
  return m
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafetensors(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
  let bytes = [UInt8](UnsafeRawBufferPointer(start: start, count: count))
  let name = "fuzz.safetensors"
  do {
    let file = try SafetensorsFile.decode(bytes, name: name)
    let encoded = file.encode()
    let again = try SafetensorsFile.decode(encoded, name: "re-encoded")
    precondition(again.encode() == encoded, "decode(encode(file)) does not round-trip")
    let meta = try ModelMetadata(
      strings: file.metadata, file: name, fallbackModel: .seedAconc, fallbackInput: [1, 28, 28],
      fallbackClasses: 10, fallbackNormalization: Normalization(mean: [0.2860], std: [0.3530]))
    try loadStateDict(file.tensors, into: models[meta.model]!, file: name)
  } catch is SafetensorsError {
  } catch is CheckpointError {
  } catch {
    preconditionFailure("unexpected error type: \(error)")
  }
  return 0
}
