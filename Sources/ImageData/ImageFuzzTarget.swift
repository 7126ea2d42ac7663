// ImageFuzzTarget: the body of the fuzz-image libFuzzer target (Fuzz/), kept in the library so
// the regression tests run exactly what the fuzzer runs. An input is an image file: its header
// is read, it is decoded (full size and at 1/2), and a training pipeline (RandomResizedCrop,
// flip, ColorJitter, normalisation) and an evaluation pipeline (Resize, CenterCrop, ACON's BGR
// convention) run on it. Every rejection must be a thrown ImageError; every output finite.
import TensorCore

/// The fuzz-image target. Not thread-safe; libFuzzer runs one input at a time.
public final class ImageFuzzTarget {
  /// What the target did with one input.
  public enum Outcome: Equatable, Sendable {
    /// Refused with the error's message.
    case rejected(String)
    /// Decoded (W×H) and transformed by both pipelines.
    case decoded(width: Int, height: Int)
  }

  /// Small limits, so an input cannot ask for more memory or time than a fuzzing run allows.
  public static let limits = ImageLimits(maxPixels: 4_000_000, maxFileBytes: 4 << 20)
  private let processor = ImageProcessor(limits: ImageFuzzTarget.limits)
  private let train = ImagePipeline.train(size: 32, jitter: 0.4)
  private let eval = ImagePipeline([.resize(40), .centerCrop(32)], convention: .bgr255)
  private let out = Tensor(zeros: [3, 32, 32])
  private var image = RGBImage()

  public init() {}

  /// Runs the checks on one input.
  /// - Precondition: every error is an `ImageError`; every output float is finite and within the
  ///   convention's range. A failed precondition is the bug the fuzzer reports.
  public func run(_ bytes: [UInt8], name: String = "fuzz-input") -> Outcome {
    do {
      let header = try bytes.withUnsafeBytes { try processor.decoder.header($0, name: name) }
      try bytes.withUnsafeBytes { _ = try processor.decoder.decode($0, name: name, into: &image, scaleDenominator: 2) }
      precondition(header.format == .png || image.width == (header.width + 1) / 2, "a 1/2 decode has the wrong width")
      for (k, pipeline) in [train, eval].enumerated() {
        var rng = SeededGenerator(seed: UInt64(bytes.count &* 31 &+ k))
        try bytes.withUnsafeBytes { try processor.process($0, name: name, pipeline: pipeline, rng: &rng, into: out.data) }
        let bound: Float = k == 0 ? 3 : 255
        for i in 0..<out.count {
          let v = out.data[i]
          precondition(v.isFinite && v >= -bound && v <= bound, "output \(i) is \(v)")
        }
      }
      return .decoded(width: header.width, height: header.height)
    } catch let e as ImageError {
      return .rejected(e.description)
    } catch {
      preconditionFailure("unexpected error type: \(error)")
    }
  }
}
