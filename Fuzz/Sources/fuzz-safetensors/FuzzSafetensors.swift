// fuzz-safetensors: libFuzzer entry point for the safetensors reader and the checks of a file
// against a model. The work is `SafetensorsFuzzTarget.run` (Sources/Training): decode, re-encode
// and decode again (the bytes must round-trip), parse the metadata as a checkpoint's, and load the
// tensors strictly into the seed network the file names (built once per model, for 1×28×28 and
// 3×32×32 inputs and 10 classes), whose state must then equal the file's values. Every failure
// must be a thrown SafetensorsError or CheckpointError; a trap, a crash, a leak or a hang is a bug.
// At exit the target prints how many inputs reached a successful strict load (the copy into the
// network); scripts/fuzz.sh fails the run when none did.
#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif
import Training

/// The seed networks, built once: building them per input would dominate the run time.
nonisolated(unsafe) let target: SafetensorsFuzzTarget = {
  do {
    return try SafetensorsFuzzTarget()
  } catch {
    fatalError("fuzz-safetensors: cannot build the seed networks: \(error)")
  }
}()
nonisolated(unsafe) var inputs = 0
nonisolated(unsafe) var strictLoads = 0
nonisolated(unsafe) var reportRegistered = false

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafetensors(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
  if !reportRegistered {
    reportRegistered = true
    atexit {
      print("fuzz-safetensors: \(strictLoads) of \(inputs) inputs loaded strictly into a seed network")
      fflush(nil)  // every stream: libFuzzer ends the process with exit()
    }
  }
  inputs += 1
  if case .loaded = target.run([UInt8](UnsafeRawBufferPointer(start: start, count: count))) { strictLoads += 1 }
  return 0
}
