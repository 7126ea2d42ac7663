// fuzz-image: libFuzzer entry point for the image decoders and transforms. The work is
// `ImageFuzzTarget.run` (Sources/ImageData): header, decode at full size and at 1/2 (TurboJPEG's
// DCT scaling), a training pipeline (RandomResizedCrop, flip, ColorJitter, Normalize) and an
// evaluation one (Resize, CenterCrop, BGR 0–255). Every failure must be a thrown ImageError; a
// trap, a crash, a leak or a hang is a bug. At exit the target prints how many inputs decoded;
// scripts/fuzz.sh fails the run when none did.
#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif
import ImageData

nonisolated(unsafe) let target = ImageFuzzTarget()
nonisolated(unsafe) var inputs = 0
nonisolated(unsafe) var decoded = 0
nonisolated(unsafe) var reportRegistered = false

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzImage(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
  if !reportRegistered {
    reportRegistered = true
    atexit {
      print("fuzz-image: \(decoded) of \(inputs) inputs decoded and transformed")
      fflush(nil)
    }
  }
  inputs += 1
  if case .decoded = target.run([UInt8](UnsafeRawBufferPointer(start: start, count: count))) { decoded += 1 }
  return 0
}
