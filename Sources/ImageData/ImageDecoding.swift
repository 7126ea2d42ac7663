// ImageDecoding: JPEG through libjpeg-turbo's TurboJPEG API (with scaling on decode; a crop's
// rectangle only through its libjpeg API, CImageKernels) and PNG through libpng (CImageCodecs),
// both to 8-bit RGB as PIL's `convert("RGB")` gives; the file reader; and a JPEG encoder for
// tests and acon-bench.
import CImageCodecs
import CImageKernels
import CTurboJPEG

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The container of an image file, from its first bytes (never from its extension).
public enum ImageFormat: String, Sendable {
  case jpeg, png

  /// The format whose signature starts `bytes`, or nil.
  public static func sniff(_ bytes: UnsafeRawBufferPointer) -> ImageFormat? {
    if bytes.count >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF { return .jpeg }
    let png: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
    if bytes.count >= 8 && (0..<8).allSatisfy({ bytes[$0] == png[$0] }) { return .png }
    return nil
  }
}

/// What a header says: the format and the full size W×H.
public struct ImageHeader: Sendable, Equatable {
  public var format: ImageFormat
  public var width: Int, height: Int
  /// A short description of the pixel layout, e.g. `"JPEG YCbCr 4:2:0"` or `"PNG palette 8-bit"`.
  public var layout: String
}

/// Decodes JPEG and PNG files to `RGBImage`. Holds a TurboJPEG handle, so one decoder per thread;
/// reuse it (the handle and the caller's image buffer are reused from image to image).
public final class ImageDecoder {
  private var tj: tjhandle?
  /// Sizes refused from the header.
  public let limits: ImageLimits
  private var cmyk = [UInt8]()
  private var errorText = [CChar](repeating: 0, count: 256)

  /// A decoder with its own TurboJPEG handle.
  public init(limits: ImageLimits = .standard) {
    self.limits = limits
    tj = tjInitDecompress()
  }

  deinit { if let tj { tjDestroy(tj) } }

  /// A fresh TurboJPEG handle after a failure: libjpeg-turbo 2.1 can leave a handle whose
  /// decompression was aborted mid-stream in a state where the next header read fails
  /// ("two SOI markers"); a new handle costs microseconds and only follows a bad file.
  private func resetJPEG() {
    if let tj { tjDestroy(tj) }
    tj = tjInitDecompress()
  }

  /// The header of the image in `bytes`, checked against the limits.
  /// - Throws: `ImageError` naming `name` for an unknown format, a bad header or a too-large image.
  public func header(_ bytes: UnsafeRawBufferPointer, name: String) throws -> ImageHeader {
    guard !bytes.isEmpty else { throw ImageError(file: name, reason: "the file is empty (0 bytes)") }
    guard let format = ImageFormat.sniff(bytes) else {
      throw ImageError(file: name, reason: "not a JPEG or PNG file (its first bytes are neither signature)")
    }
    let h: ImageHeader
    switch format {
    case .jpeg: h = try jpegHeader(bytes, name: name).header
    case .png: h = try pngHeader(bytes, name: name)
    }
    try limits.check(width: h.width, height: h.height, file: name)
    return h
  }

  /// The size a JPEG of `width`×`height` decodes to at `1/denominator` (TurboJPEG rounds up).
  public static func scaledSize(width: Int, height: Int, denominator: Int) -> (width: Int, height: Int) {
    ((width + denominator - 1) / denominator, (height + denominator - 1) / denominator)
  }

  /// Decodes the image in `bytes` into `image` (its buffer reused).
  /// - Parameters:
  ///   - scaleDenominator: 1, 2, 4 or 8: a JPEG is decoded at 1/d of its size by TurboJPEG's DCT
  ///     scaling (`scaledSize`); PNGs ignore it (always full size).
  /// - Returns: the header (full size).
  /// - Throws: `ImageError` naming `name`: corrupt, truncated or empty data, an unknown format,
  ///   an image over the limits (refused before any allocation).
  @discardableResult
  public func decode(_ bytes: UnsafeRawBufferPointer, name: String, into image: inout RGBImage, scaleDenominator: Int = 1)
    throws -> ImageHeader
  {
    precondition([1, 2, 4, 8].contains(scaleDenominator), "ImageDecoder: scale 1/\(scaleDenominator) is not 1, 1/2, 1/4 or 1/8")
    guard !bytes.isEmpty else { throw ImageError(file: name, reason: "the file is empty (0 bytes)") }
    guard let format = ImageFormat.sniff(bytes) else {
      throw ImageError(file: name, reason: "not a JPEG or PNG file (its first bytes are neither signature)")
    }
    switch format {
    case .jpeg:
      let (h, colorspace) = try jpegHeader(bytes, name: name)
      try limits.check(width: h.width, height: h.height, file: name)
      try decodeJPEG(bytes, header: h, colorspace: colorspace, name: name, into: &image, scale: scaleDenominator)
      return h
    case .png:
      let h = try pngHeader(bytes, name: name)
      try limits.check(width: h.width, height: h.height, file: name)
      image.reshape(width: h.width, height: h.height)
      var err = [CChar](repeating: 0, count: 256)
      let rc = image.pixels.withUnsafeMutableBufferPointer { out in
        acon_png_decode_rgb(
          bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), bytes.count, UInt32(h.width), UInt32(h.height),
          out.baseAddress!, out.count, &err, err.count)
      }
      if rc != 0 { throw ImageError(file: name, reason: "corrupt PNG: \(Self.string(err))") }
      return h
    }
  }

  /// Decodes only what covers `crop` (full-size coordinates) of the image in `bytes` into `image`:
  /// a JPEG's rows and columns of the crop and a few around it (libjpeg's cropped decode, the
  /// same bytes as the full decode at every place it writes: the tests compare); a PNG, or a CMYK
  /// JPEG, whole. The rest of a JPEG is still entropy-decoded, so a truncated or corrupt file
  /// fails as `decode` fails.
  /// - Returns: where `image` sits in the full image: its pixel (0, 0) is the full image's (left, top).
  /// - Precondition: the crop lies inside the image (as `randomResizedCropParameters` gives).
  /// - Throws: `ImageError` naming `name`, as `decode(_:name:into:scaleDenominator:)`.
  public func decode(
    _ bytes: UnsafeRawBufferPointer, name: String, into image: inout RGBImage,
    covering crop: (top: Int, left: Int, height: Int, width: Int)
  ) throws -> (left: Int, top: Int) {
    guard !bytes.isEmpty, ImageFormat.sniff(bytes) == .jpeg else {
      try decode(bytes, name: name, into: &image)
      return (0, 0)
    }
    let (h, colorspace) = try jpegHeader(bytes, name: name)
    try limits.check(width: h.width, height: h.height, file: name)
    precondition(
      crop.left >= 0 && crop.top >= 0 && crop.width > 0 && crop.height > 0 && crop.left + crop.width <= h.width
        && crop.top + crop.height <= h.height, "ImageDecoder: crop \(crop) outside the \(h.width)x\(h.height) image \(name)")
    if colorspace == Int32(TJCS_CMYK.rawValue) || colorspace == Int32(TJCS_YCCK.rawValue) {
      try decodeJPEG(bytes, header: h, colorspace: colorspace, name: name, into: &image, scale: 1)
      return (0, 0)
    }
    let x0 = Int32(crop.left), x1 = Int32(crop.left + crop.width), y0 = Int32(crop.top), y1 = Int32(crop.top + crop.height)
    let capacity = acon_jpeg_region_capacity(Int32(h.width), x0, x1, y0, y1)
    image.reshape(width: capacity / 3, height: 1)
    var region = acon_jpeg_region()
    let rc = image.pixels.withUnsafeMutableBufferPointer { out in
      errorText.withUnsafeMutableBufferPointer { e in
        acon_jpeg_decode_region(
          bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), bytes.count, x0, x1, y0, y1, out.baseAddress!, out.count,
          &region, e.baseAddress!, e.count)
      }
    }
    guard rc == 0 else {
      let kind = rc == 1 ? "corrupt or truncated JPEG" : "corrupt JPEG"
      throw ImageError(file: name, reason: "\(kind): \(Self.string(errorText))")
    }
    image.width = Int(region.width)
    image.height = Int(region.height)
    return (Int(region.x), Int(region.y))
  }

  /// Reads and decodes the file at `path` (see `decode(_:name:into:scaleDenominator:)`).
  @discardableResult
  public func decode(file path: String, into image: inout RGBImage, scaleDenominator: Int = 1) throws -> ImageHeader {
    let bytes = try ImageFile.read(path, limits: limits)
    return try bytes.withUnsafeBytes { try decode($0, name: path, into: &image, scaleDenominator: scaleDenominator) }
  }

  // MARK: - JPEG

  private func jpegHeader(_ bytes: UnsafeRawBufferPointer, name: String) throws -> (header: ImageHeader, colorspace: Int32) {
    guard let tj else { throw ImageError(file: name, reason: "TurboJPEG could not start (out of memory)") }
    var w: Int32 = 0, h: Int32 = 0, sub: Int32 = 0, cs: Int32 = 0
    let src = bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
    guard bytes.count <= Int(UInt32.max),
      tjDecompressHeader3(tj, src, UInt(bytes.count), &w, &h, &sub, &cs) == 0
    else {
      let message = String(cString: tjGetErrorStr2(tj))
      resetJPEG()
      throw ImageError(file: name, reason: "corrupt JPEG header: \(message)")
    }
    guard w > 0 && h > 0 else { throw ImageError(file: name, reason: "corrupt JPEG header: no image size (truncated file?)") }
    let spaces = ["RGB", "YCbCr", "gray", "CMYK", "YCCK"]
    let subs = ["4:4:4", "4:2:2", "4:2:0", "gray", "4:4:0", "4:1:1"]
    let layout = "JPEG \(cs >= 0 && cs < 5 ? spaces[Int(cs)] : "?") \(sub >= 0 && sub < 6 ? subs[Int(sub)] : "?")"
    return (ImageHeader(format: .jpeg, width: Int(w), height: Int(h), layout: layout), cs)
  }

  private func decodeJPEG(
    _ bytes: UnsafeRawBufferPointer, header: ImageHeader, colorspace: Int32, name: String, into image: inout RGBImage,
    scale: Int
  ) throws {
    let (w, h) = Self.scaledSize(width: header.width, height: header.height, denominator: scale)
    let src = bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)
    let isCMYK = colorspace == Int32(TJCS_CMYK.rawValue) || colorspace == Int32(TJCS_YCCK.rawValue)
    image.reshape(width: w, height: h)
    var rc: Int32
    if isCMYK {
      // TurboJPEG gives CMYK as stored; Adobe's files (what PIL and Photoshop write) store it
      // inverted, so R = C'·K'/255 with C' = 255 − C as PIL's "CMYK;I" then convert("RGB").
      if cmyk.count < w * h * 4 { cmyk = [UInt8](repeating: 0, count: w * h * 4) }
      rc = cmyk.withUnsafeMutableBufferPointer {
        tjDecompress2(tj, src, UInt(bytes.count), $0.baseAddress, Int32(w), 0, Int32(h), Int32(TJPF_CMYK.rawValue), 0)
      }
      if rc == 0 {
        cmyk.withUnsafeBufferPointer { c in
          image.pixels.withUnsafeMutableBufferPointer { o in
            for i in 0..<(w * h) {
              let k = Int(c[4 * i + 3])
              for ch in 0..<3 { o[3 * i + ch] = UInt8((Int(c[4 * i + ch]) * k + 127) / 255) }
            }
          }
        }
      }
    } else {
      rc = image.pixels.withUnsafeMutableBufferPointer {
        tjDecompress2(tj, src, UInt(bytes.count), $0.baseAddress, Int32(w), 0, Int32(h), Int32(TJPF_RGB.rawValue), 0)
      }
    }
    if rc != 0 {
      // Warnings (premature end of data, corrupt entropy data) count as errors: the pixels are partly invented.
      let kind = tjGetErrorCode(tj) == Int32(TJERR_WARNING.rawValue) ? "corrupt or truncated JPEG" : "corrupt JPEG"
      let message = String(cString: tjGetErrorStr2(tj))
      resetJPEG()
      throw ImageError(file: name, reason: "\(kind): \(message)")
    }
  }

  // MARK: - PNG

  private func pngHeader(_ bytes: UnsafeRawBufferPointer, name: String) throws -> ImageHeader {
    var info = acon_png_info()
    var err = [CChar](repeating: 0, count: 256)
    guard acon_png_read_info(bytes.baseAddress!.assumingMemoryBound(to: UInt8.self), bytes.count, &info, &err, err.count) == 0
    else { throw ImageError(file: name, reason: "corrupt PNG header: \(Self.string(err))") }
    let kinds = [0: "gray", 2: "RGB", 3: "palette", 4: "gray+alpha", 6: "RGBA"]
    return ImageHeader(
      format: .png, width: Int(info.width), height: Int(info.height),
      layout: "PNG \(kinds[Int(info.colorType)] ?? "?") \(info.bitDepth)-bit\(info.interlaced != 0 ? " interlaced" : "")")
  }

  private static func string(_ c: [CChar]) -> String {
    let bytes = c.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
    return String(decoding: bytes, as: UTF8.self)
  }
}

/// Reading image files whole, with clear errors (missing, a folder, a symlink loop, too large).
public enum ImageFile {
  /// The bytes of the file at `path`.
  /// - Throws: `ImageError` naming the path: cannot open (with the system's reason, e.g. "Too many
  ///   levels of symbolic links" for a loop), not a regular file, larger than `limits.maxFileBytes`.
  public static func read(_ path: String, limits: ImageLimits = .standard) throws -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw ImageError(file: path, reason: "cannot open: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0 else { throw ImageError(file: path, reason: "cannot stat: \(String(cString: strerror(errno)))") }
    guard (st.st_mode & S_IFMT) == S_IFREG else { throw ImageError(file: path, reason: "not a regular file") }
    let size = Int(st.st_size)
    guard size <= limits.maxFileBytes else {
      throw ImageError(file: path, reason: "the file is \(size) bytes, more than the limit of \(limits.maxFileBytes)")
    }
    var bytes = [UInt8](repeating: 0, count: size)
    var done = 0
    while done < size {
      let n = bytes.withUnsafeMutableBytes { systemRead(fd, $0.baseAddress! + done, size - done) }
      if n < 0 && errno == EINTR { continue }
      guard n > 0 else {
        throw ImageError(file: path, reason: n == 0 ? "the file shrank while being read" : "read failed: \(String(cString: strerror(errno)))")
      }
      done += n
    }
    return bytes
  }
}

#if canImport(Glibc)
  private let systemRead = Glibc.read
#elseif canImport(Darwin)
  private let systemRead = Darwin.read
#endif

/// Encodes RGB images as JPEG with TurboJPEG (tests, fixtures at run time, acon-bench).
public final class JPEGEncoder {
  private let tj: tjhandle?

  public init() { tj = tjInitCompress() }
  deinit { if let tj { tjDestroy(tj) } }

  /// The JPEG file of `image` at `quality` (1–100), chroma subsampled 4:2:0.
  public func encode(_ image: RGBImage, quality: Int = 90) throws -> [UInt8] {
    guard let tj else { throw ImageError(file: "(JPEG encoder)", reason: "TurboJPEG could not start") }
    var out: UnsafeMutablePointer<UInt8>? = nil
    var size: UInt = 0
    let rc = image.pixels.withUnsafeBufferPointer {
      tjCompress2(tj, $0.baseAddress, Int32(image.width), 0, Int32(image.height), Int32(TJPF_RGB.rawValue), &out, &size,
        Int32(TJSAMP_420.rawValue), Int32(quality), 0)
    }
    defer { if let out { tjFree(out) } }
    guard rc == 0, let out else {
      throw ImageError(file: "(JPEG encoder)", reason: String(cString: tjGetErrorStr2(tj)))
    }
    return Array(UnsafeBufferPointer(start: out, count: Int(size)))
  }
}
