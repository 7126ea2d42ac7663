// ImageTransforms: torchvision's transforms with their names and semantics on PIL images —
// Resize (shorter side), CenterCrop, RandomResizedCrop, RandomHorizontalFlip, ColorJitter
// (brightness, contrast, saturation) — and the tensor conventions (ToTensor + Normalize, or the
// official ACON one: BGR, 0–255, no mean/std). Random choices come from a SeededGenerator the
// caller seeds per sample, so the same (seed, epoch, position) gives the same crop and flip.
import TensorCore

/// One transform of a pipeline, as torchvision names it.
public enum ImageTransform: Sendable, Equatable {
  /// `Resize(size)`: the shorter side to `size`, the longer to ⌊size · long / short⌋ (antialiased bilinear).
  case resize(Int)
  /// `CenterCrop((height, width))`: the centre, offsets rounded as torchvision does; zero-padded
  /// when the image is smaller.
  case centerCrop(height: Int, width: Int)
  /// `RandomResizedCrop(size, scale, ratio)`: a random area fraction in `scale` and log-uniform
  /// aspect ratio in `ratio`, 10 attempts, then torchvision's central fallback; resized to size×size.
  case randomResizedCrop(size: Int, scale: ClosedRange<Double>, ratio: ClosedRange<Double>)
  /// `RandomHorizontalFlip(p)`.
  case randomHorizontalFlip(p: Double)
  /// `ColorJitter(brightness, contrast, saturation)`: factors uniform in [max(0, 1 − v), 1 + v],
  /// applied in a random order (PIL's ImageEnhance); 0 turns one off.
  case colorJitter(brightness: Double, contrast: Double, saturation: Double)

  /// torchvision's defaults: `RandomResizedCrop(size)` with scale 0.08–1, ratio 3/4–4/3.
  public static func randomResizedCrop(_ size: Int) -> ImageTransform {
    .randomResizedCrop(size: size, scale: 0.08...1, ratio: (3.0 / 4)...(4.0 / 3))
  }

  /// `CenterCrop(size)`: a square crop.
  public static func centerCrop(_ size: Int) -> ImageTransform { .centerCrop(height: size, width: size) }

  /// Whether the transform draws random numbers.
  public var isRandom: Bool {
    switch self {
    case .resize, .centerCrop: return false
    case .randomResizedCrop, .randomHorizontalFlip, .colorJitter: return true
    }
  }
}

/// How 8-bit RGB pixels become the network's floats, `[3, H, W]`.
public enum TensorConvention: Sendable, Equatable {
  /// torchvision's `ToTensor()` then `Normalize(mean, std)`: RGB planes, `(v/255 − mean[c]) / std[c]`.
  case normalize(mean: [Float], std: [Float])
  /// The official ACON code's `ToBGRTensor()`: B, G, R planes, values 0–255, no mean or std.
  case bgr255

  /// ImageNet's statistics, as torchvision's examples use them.
  public static let imageNet = TensorConvention.normalize(mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225])

  /// `[3][256]`: the float of each byte value in each output plane (plane p reads source channel `sourceChannel[p]`).
  func table() -> (lut: [Float], sourceChannel: [Int]) {
    var t = [Float](repeating: 0, count: 3 * 256)
    switch self {
    case .normalize(let mean, let std):
      for c in 0..<3 {
        for v in 0..<256 { t[c * 256 + v] = (Float(v) / 255 - mean[c]) / std[c] }
      }
      return (t, [0, 1, 2])
    case .bgr255:
      for c in 0..<3 {
        for v in 0..<256 { t[c * 256 + v] = Float(v) }
      }
      return (t, [2, 1, 0])
    }
  }
}

/// The crop torchvision's `RandomResizedCrop.get_params` picks for a `width`×`height` image:
/// up to 10 draws of an area fraction (uniform in `scale`) and an aspect ratio (log-uniform in
/// `ratio`), sides rounded half to even (Python's `round`); the first that fits is placed
/// uniformly; otherwise the central crop clamped to the ratio range.
/// - Returns: (top, left, height, width) of the crop.
public func randomResizedCropParameters(
  width: Int, height: Int, scale: ClosedRange<Double>, ratio: ClosedRange<Double>, rng: inout SeededGenerator
) -> (top: Int, left: Int, height: Int, width: Int) {
  let area = Double(width * height)
  let logLo = Foundation_log(ratio.lowerBound), logHi = Foundation_log(ratio.upperBound)
  for _ in 0..<10 {
    let target = area * (scale.lowerBound + (scale.upperBound - scale.lowerBound) * rng.nextDouble())
    let aspect = Foundation_exp(logLo + (logHi - logLo) * rng.nextDouble())
    let w = Int((target * aspect).squareRoot().rounded(.toNearestOrEven))
    let h = Int((target / aspect).squareRoot().rounded(.toNearestOrEven))
    if w > 0 && w <= width && h > 0 && h <= height {
      let i = rng.nextInt(below: height - h + 1)
      let j = rng.nextInt(below: width - w + 1)
      return (i, j, h, w)
    }
  }
  return randomResizedCropFallback(width: width, height: height, ratio: ratio)
}

/// torchvision's fallback when no draw fits: the whole image, cut to the nearest ratio bound.
public func randomResizedCropFallback(width: Int, height: Int, ratio: ClosedRange<Double>)
  -> (top: Int, left: Int, height: Int, width: Int)
{
  let inRatio = Double(width) / Double(height)
  var w = width, h = height
  if inRatio < ratio.lowerBound {
    h = Int((Double(w) / ratio.lowerBound).rounded(.toNearestOrEven))
  } else if inRatio > ratio.upperBound {
    w = Int((Double(h) * ratio.upperBound).rounded(.toNearestOrEven))
  }
  return ((height - h) / 2, (width - w) / 2, h, w)
}

/// torchvision's output size of `Resize(size)` for a `width`×`height` image: the shorter side
/// becomes `size`, the longer ⌊size · long / short⌋.
public func resizedSize(width: Int, height: Int, shorter size: Int) -> (width: Int, height: Int) {
  if width <= height {
    return (size, Swift.max(1, Int(Double(size) * Double(height) / Double(width))))
  }
  return (Swift.max(1, Int(Double(size) * Double(width) / Double(height))), size)
}

/// torchvision's CenterCrop offsets in the image (negative where the crop sticks out): a crop
/// larger than the image first pads it by ⌊(h − H)/2⌋ above and ⌊(w − W)/2⌋ left (the rest below
/// and right), then takes `int(round((H' − h) / 2))`, `int(round((W' − w) / 2))` of the padded image.
public func centerCropOffsets(width: Int, height: Int, cropWidth: Int, cropHeight: Int) -> (top: Int, left: Int) {
  let padTop = cropHeight > height ? (cropHeight - height) / 2 : 0
  let padLeft = cropWidth > width ? (cropWidth - width) / 2 : 0
  let h2 = Swift.max(height, cropHeight), w2 = Swift.max(width, cropWidth)
  let top = Int((Double(h2 - cropHeight) / 2).rounded(.toNearestOrEven))
  let left = Int((Double(w2 - cropWidth) / 2).rounded(.toNearestOrEven))
  return (top - padTop, left - padLeft)
}

// The few libm calls, without importing Foundation into the data path.
#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif
@inline(__always) func Foundation_log(_ x: Double) -> Double { log(x) }
@inline(__always) func Foundation_exp(_ x: Double) -> Double { exp(x) }

extension SeededGenerator {
  /// A uniform Double in [0, 1) from 53 random bits.
  public mutating func nextDouble() -> Double { Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }
}

// MARK: - Pixel operations (PIL semantics, in place on 8-bit RGB)

/// The pixel operations of the transforms, on `RGBImage`s in place.
public enum PixelOps {
  /// `hflip`: mirror each row.
  public static func flipHorizontally(_ image: inout RGBImage) {
    let w = image.width, h = image.height
    image.pixels.withUnsafeMutableBufferPointer { p in
      for y in 0..<h {
        let row = p.baseAddress! + y * w * 3
        var a = 0, b = w - 1
        while a < b {
          for c in 0..<3 { swap(&row[3 * a + c], &row[3 * b + c]) }
          a += 1
          b -= 1
        }
      }
    }
  }

  /// PIL's `convert("L")` of one pixel: (R·19595 + G·38470 + B·7471 + 2¹⁵) >> 16.
  @inline(__always) public static func luma(_ r: UInt8, _ g: UInt8, _ b: UInt8) -> UInt8 {
    let r32 = Int(r) * 19595, g32 = Int(g) * 38470, b32 = Int(b) * 7471
    return UInt8(truncatingIfNeeded: (r32 + g32 + b32 + 0x8000) >> 16)
  }

  /// PIL's `Image.blend(a, b, α)` per byte: `a + α(b − a)` in float, clipped, truncated.
  @inline(__always) static func blend(_ a: Float, _ b: UInt8, _ alpha: Float) -> UInt8 {
    let t = a + alpha * (Float(b) - a)
    return t <= 0 ? 0 : t >= 255 ? 255 : UInt8(t)
  }

  /// torchvision's `adjust_brightness` (PIL `ImageEnhance.Brightness`): blend with black.
  public static func adjustBrightness(_ image: inout RGBImage, factor: Double) {
    let f = Float(factor), n = image.width * image.height * 3
    image.pixels.withUnsafeMutableBufferPointer { p in
      for i in 0..<n { p[i] = blend(0, p[i], f) }
    }
  }

  /// torchvision's `adjust_contrast` (PIL `ImageEnhance.Contrast`): blend with the gray image of
  /// the rounded mean of `convert("L")`.
  public static func adjustContrast(_ image: inout RGBImage, factor: Double) {
    let f = Float(factor), n = image.width * image.height
    image.pixels.withUnsafeMutableBufferPointer { p in
      var sum = 0
      for i in 0..<n { sum += Int(luma(p[3 * i], p[3 * i + 1], p[3 * i + 2])) }
      let mean = Float(Int(Double(sum) / Double(Swift.max(1, n)) + 0.5))
      for i in 0..<(3 * n) { p[i] = blend(mean, p[i], f) }
    }
  }

  /// torchvision's `adjust_saturation` (PIL `ImageEnhance.Color`): blend with the image's gray.
  public static func adjustSaturation(_ image: inout RGBImage, factor: Double) {
    let f = Float(factor), n = image.width * image.height
    image.pixels.withUnsafeMutableBufferPointer { p in
      for i in 0..<n {
        let l = Float(luma(p[3 * i], p[3 * i + 1], p[3 * i + 2]))
        for c in 0..<3 { p[3 * i + c] = blend(l, p[3 * i + c], f) }
      }
    }
  }

  /// A `height`×`width` window at (top, left) of `src` into `dst`; outside `src` is 0
  /// (torchvision pads a crop larger than the image with zeros).
  public static func crop(_ src: RGBImage, top: Int, left: Int, height: Int, width: Int, into dst: inout RGBImage) {
    dst.reshape(width: width, height: height)
    src.pixels.withUnsafeBufferPointer { s in
      dst.pixels.withUnsafeMutableBufferPointer { d in
        for y in 0..<height {
          let sy = top + y
          let row = d.baseAddress! + y * width * 3
          guard sy >= 0 && sy < src.height else {
            row.update(repeating: 0, count: width * 3)
            continue
          }
          let x0 = Swift.max(0, -left), x1 = Swift.min(width, src.width - left)
          if x0 > 0 { row.update(repeating: 0, count: Swift.min(width, x0) * 3) }
          if x1 > x0 { (row + x0 * 3).update(from: s.baseAddress! + (sy * src.width + left + x0) * 3, count: (x1 - x0) * 3) }
          if x1 < width { (row + Swift.max(x0, x1) * 3).update(repeating: 0, count: (width - Swift.max(x0, x1)) * 3) }
        }
      }
    }
  }
}
