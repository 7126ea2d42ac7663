// RGBImage: a decoded picture (8-bit RGB, row-major, interleaved), the errors of the image path,
// and the limits that refuse an image before anything is allocated for it.

/// A decoded image: `height` rows of `width` RGB triples, `pixels[(y · width + x) · 3 + c]`.
/// The pixel array is reused from decode to decode (its capacity only grows).
public struct RGBImage: Sendable, Equatable {
  /// Width W and height H in pixels.
  public var width: Int, height: Int
  /// `H · W · 3` bytes (R, G, B per pixel), possibly followed by spare capacity.
  public var pixels: [UInt8]

  /// An image from its parts. - Precondition: `pixels.count >= width · height · 3`.
  public init(width: Int, height: Int, pixels: [UInt8]) {
    precondition(width >= 0 && height >= 0 && pixels.count >= width * height * 3, "RGBImage: too few pixels")
    self.width = width
    self.height = height
    self.pixels = pixels
  }

  /// An empty image (0×0) whose buffer grows on first use.
  public init() { self.init(width: 0, height: 0, pixels: []) }

  /// Makes room for `width · height · 3` bytes (reusing the buffer) and sets the size.
  mutating func reshape(width: Int, height: Int) {
    let n = width * height * 3
    if pixels.count < n { pixels.append(contentsOf: repeatElement(0, count: n - pixels.count)) }
    self.width = width
    self.height = height
  }

  /// The pixel (r, g, b) at column x, row y.
  public func pixel(x: Int, y: Int) -> (UInt8, UInt8, UInt8) {
    let i = (y * width + x) * 3
    return (pixels[i], pixels[i + 1], pixels[i + 2])
  }
}

/// A file of the image path that cannot be used: it names the file and says why and what to do.
public struct ImageError: Error, CustomStringConvertible, Equatable, Sendable {
  /// The file (or folder) at fault.
  public var file: String
  /// What is wrong with it.
  public var reason: String

  public init(file: String, reason: String) {
    self.file = file
    self.reason = reason
  }

  public var description: String { "\(file): \(reason)" }
}

/// Sizes above which an image is refused from its header alone, before any pixel memory exists.
public struct ImageLimits: Sendable, Equatable {
  /// At most this many pixels (W · H). The default is PIL's DecompressionBombError threshold,
  /// 2 · 89,478,485 = 178,956,970 (a 20000×20000 image is refused).
  public var maxPixels: Int
  /// At most this many bytes in a file (default 256 MiB).
  public var maxFileBytes: Int

  public init(maxPixels: Int = 178_956_970, maxFileBytes: Int = 256 << 20) {
    self.maxPixels = maxPixels
    self.maxFileBytes = maxFileBytes
  }

  /// The defaults.
  public static let standard = ImageLimits()

  /// Throws when a `width`×`height` image is empty or too large.
  func check(width: Int, height: Int, file: String) throws {
    guard width > 0, height > 0 else {
      throw ImageError(file: file, reason: "the header says the image is \(width)x\(height) pixels (empty)")
    }
    guard width.multipliedReportingOverflow(by: height).partialValue <= maxPixels,
      width <= maxPixels, height <= maxPixels
    else {
      throw ImageError(
        file: file,
        reason: "the image is \(width)x\(height) = \(width * height) pixels, more than the limit of \(maxPixels) "
          + "(refused before decoding; shrink it, or raise ImageLimits.maxPixels)")
    }
  }
}
