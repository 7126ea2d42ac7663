// fuzz-idx: libFuzzer entry point for the IDX reader. The input is split in two at a position
// given by its first two bytes, into an images file and a labels file; both are decoded (gzip or
// plain) and, when both decode, checked as a Fashion-MNIST-style pair. Every failure must be a
// thrown DataError; a trap, a crash, a leak or a hang is a bug.
import Training

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzIDX(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
  let bytes = [UInt8](UnsafeRawBufferPointer(start: start, count: count))
  guard bytes.count >= 2 else { return 0 }
  let split = 2 + Swift.min(Int(bytes[0]) << 8 | Int(bytes[1]), bytes.count - 2)
  let images = Array(bytes[2..<split]), labels = Array(bytes[split...])
  do {
    let img = try IDX.decode(images, name: "images")
    let lab = try IDX.decode(labels, name: "labels")
    let data = try FashionMNIST.dataset(images: img, imagesName: "images", labels: lab, labelsName: "labels")
    precondition(data.pixels.count == data.count * data.height * data.width, "pixel count disagrees with the shape")
  } catch is DataError {
  } catch {
    preconditionFailure("unexpected error type: \(error)")
  }
  return 0
}
