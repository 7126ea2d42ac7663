// ImagePipeline: a list of transforms and a tensor convention (what a checkpoint records, as
// text), and ImageProcessor, which runs one on an image file: decode (a JPEG at 1/2, 1/4 or 1/8
// of its size when the first transform shrinks it at least 2× further anyway; otherwise, under a
// first RandomResizedCrop, only the crop's rows and columns), the transforms in order on 8-bit
// RGB, then the floats `[3, H, W]`.
import TensorCore

/// Transforms applied in order, then a tensor convention. Batches need a fixed output size, so
/// the last geometric transform must be a `RandomResizedCrop` or a `CenterCrop`.
public struct ImagePipeline: Sendable, Equatable, CustomStringConvertible {
  /// The transforms, in order.
  public var transforms: [ImageTransform]
  /// Pixels to floats.
  public var convention: TensorConvention
  /// Whether a JPEG may be decoded at a reduced scale when the first transform (Resize or
  /// RandomResizedCrop) would shrink the decoded picture to at most half its size anyway: the
  /// scaled picture is still ≥ 2× the output on both sides, and the final resize antialiases.
  /// Results then differ from a full decode by DCT-scaling rounding (off: PIL's bytes).
  public var decodeScaling: Bool

  public init(_ transforms: [ImageTransform], convention: TensorConvention, decodeScaling: Bool = true) {
    self.transforms = transforms
    self.convention = convention
    self.decodeScaling = decodeScaling
  }

  /// torchvision's ImageNet training recipe: `RandomResizedCrop(size)`, `RandomHorizontalFlip()`,
  /// optional `ColorJitter(j, j, j)`, then `convention`.
  public static func train(size: Int, jitter: Double = 0, convention: TensorConvention = .imageNet) -> ImagePipeline {
    var t: [ImageTransform] = [.randomResizedCrop(size), .randomHorizontalFlip(p: 0.5)]
    if jitter > 0 { t.append(.colorJitter(brightness: jitter, contrast: jitter, saturation: jitter)) }
    return ImagePipeline(t, convention: convention)
  }

  /// torchvision's evaluation recipe: `Resize(size · 256/224)`, `CenterCrop(size)`, then `convention`.
  public static func eval(size: Int, convention: TensorConvention = .imageNet) -> ImagePipeline {
    ImagePipeline([.resize(size * 256 / 224), .centerCrop(size)], convention: convention)
  }

  /// The output `[3, H, W]` every image gets.
  public var outputShape: [Int] {
    var hw: (Int, Int)? = nil
    for t in transforms {
      switch t {
      case .randomResizedCrop(let s, _, _): hw = (s, s)
      case .centerCrop(let h, let w): hw = (h, w)
      case .resize: hw = nil
      default: break
      }
    }
    guard let hw else { preconditionFailure("ImagePipeline \(self): no fixed output size (end with CenterCrop or RandomResizedCrop)") }
    return [3, hw.0, hw.1]
  }

  /// Whether the pipeline ends in a fixed size (batches need one).
  public var hasFixedOutputSize: Bool {
    var fixed = false
    for t in transforms {
      switch t {
      case .randomResizedCrop, .centerCrop: fixed = true
      case .resize: fixed = false
      default: break
      }
    }
    return fixed
  }

  // MARK: text (checkpoint metadata)

  /// torchvision-like text, e.g. `RandomResizedCrop(size=224, scale=(0.08, 1.0), ratio=(0.75, 1.3333333333333333)) | RandomHorizontalFlip(p=0.5) | Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])`;
  /// `init(parsing:)` reads it back.
  public var description: String {
    var parts = transforms.map { t -> String in
      switch t {
      case .resize(let s): return "Resize(size=\(s))"
      case .centerCrop(let h, let w): return "CenterCrop(size=(\(h), \(w)))"
      case .randomResizedCrop(let s, let sc, let r):
        return "RandomResizedCrop(size=\(s), scale=(\(sc.lowerBound), \(sc.upperBound)), ratio=(\(r.lowerBound), \(r.upperBound)))"
      case .randomHorizontalFlip(let p): return "RandomHorizontalFlip(p=\(p))"
      case .colorJitter(let b, let c, let s): return "ColorJitter(brightness=\(b), contrast=\(c), saturation=\(s))"
      }
    }
    switch convention {
    case .normalize(let m, let s): parts.append("Normalize(mean=\(m), std=\(s))")
    case .bgr255: parts.append("ToBGRTensor()")
    }
    if !decodeScaling { parts.append("NoDecodeScaling()") }
    return parts.joined(separator: " | ")
  }

  /// Reads `description`'s text.
  /// - Throws: `ImageError` (file "pipeline") naming the part it cannot read.
  public init(parsing text: String) throws {
    var transforms = [ImageTransform](), convention: TensorConvention? = nil, scaling = true
    for raw in text.split(separator: "|") {
      let part = raw.trimmingCharacters(in: " ")
      guard let open = part.firstIndex(of: "("), part.hasSuffix(")") else {
        throw ImageError(file: "pipeline", reason: "cannot read '\(part)' in '\(text)'")
      }
      let name = String(part[..<open])
      let args = part[part.index(after: open)..<part.index(before: part.endIndex)]
      // The numbers of the arguments, in order (names and brackets are decoration).
      var numbers = [Double]()
      for token in args.split(whereSeparator: { !"0123456789.eE-+".contains($0) }) {
        if let v = Double(token) { numbers.append(v) } else if token.contains(where: \.isNumber) {
          throw ImageError(file: "pipeline", reason: "bad number '\(token)' in '\(part)'")
        }
      }
      func need(_ n: Int) throws {
        guard numbers.count == n else {
          throw ImageError(file: "pipeline", reason: "'\(part)' needs \(n) numbers, has \(numbers.count)")
        }
      }
      func size(_ v: Double) throws -> Int {
        guard v >= 1, v <= 65536, v == v.rounded() else { throw ImageError(file: "pipeline", reason: "bad size \(v) in '\(part)'") }
        return Int(v)
      }
      switch name {
      case "Resize": try need(1); transforms.append(.resize(try size(numbers[0])))
      case "CenterCrop": try need(2); transforms.append(.centerCrop(height: try size(numbers[0]), width: try size(numbers[1])))
      case "RandomResizedCrop":
        try need(5)
        guard numbers[1] > 0, numbers[1] <= numbers[2], numbers[3] > 0, numbers[3] <= numbers[4] else {
          throw ImageError(file: "pipeline", reason: "bad scale or ratio range in '\(part)'")
        }
        transforms.append(.randomResizedCrop(size: try size(numbers[0]), scale: numbers[1]...numbers[2], ratio: numbers[3]...numbers[4]))
      case "RandomHorizontalFlip":
        try need(1)
        guard (0...1).contains(numbers[0]) else { throw ImageError(file: "pipeline", reason: "bad p in '\(part)'") }
        transforms.append(.randomHorizontalFlip(p: numbers[0]))
      case "ColorJitter":
        try need(3)
        guard numbers.allSatisfy({ $0 >= 0 && $0 <= 100 }) else { throw ImageError(file: "pipeline", reason: "bad factor in '\(part)'") }
        transforms.append(.colorJitter(brightness: numbers[0], contrast: numbers[1], saturation: numbers[2]))
      case "Normalize":
        try need(6)
        guard numbers[3...].allSatisfy({ $0 > 0 }) else { throw ImageError(file: "pipeline", reason: "std must be positive in '\(part)'") }
        convention = .normalize(mean: numbers[0..<3].map(Float.init), std: numbers[3..<6].map(Float.init))
      case "ToBGRTensor": try need(0); convention = .bgr255
      case "NoDecodeScaling": try need(0); scaling = false
      default: throw ImageError(file: "pipeline", reason: "unknown transform '\(name)' in '\(text)'")
      }
    }
    guard let convention else { throw ImageError(file: "pipeline", reason: "no Normalize(...) or ToBGRTensor() in '\(text)'") }
    self.init(transforms, convention: convention, decodeScaling: scaling)
    guard hasFixedOutputSize else {
      throw ImageError(file: "pipeline", reason: "'\(text)' has no fixed output size (end with CenterCrop or RandomResizedCrop)")
    }
  }
}

extension Substring {
  fileprivate func trimmingCharacters(in set: String) -> String {
    var s = self[...]
    while let f = s.first, set.contains(f) { s = s.dropFirst() }
    while let l = s.last, set.contains(l) { s = s.dropLast() }
    return String(s)
  }
}

/// Runs pipelines on image files: a decoder, a resampler and scratch images, reused from image to
/// image. One per thread.
public final class ImageProcessor {
  /// The decoder (its limits refuse large images before decoding).
  public let decoder: ImageDecoder
  private let resampler = Resampler()
  private var a = RGBImage(), b = RGBImage()
  private var tables = [TensorConvention: ([Float], [Int])]()
  /// A horizontal flip drawn but not yet applied to `a`: `write` reads the image mirrored
  /// instead (one pass fewer); any other transform, or handing `a` out, applies it first.
  private var mirrored = false

  public init(limits: ImageLimits = .standard) { decoder = ImageDecoder(limits: limits) }

  /// Decodes `bytes` and runs `pipeline`, writing `[3, H, W]` floats (H, W from `outputShape`) to `out`.
  /// Random transforms draw from `rng` in the pipeline's order.
  /// - Throws: `ImageError` naming `name` for anything the decoder refuses.
  public func process(
    _ bytes: UnsafeRawBufferPointer, name: String, pipeline: ImagePipeline, rng: inout SeededGenerator,
    into out: UnsafeMutablePointer<Float>
  ) throws {
    try run(bytes, name: name, pipeline: pipeline, rng: &rng)
    let shape = pipeline.outputShape
    precondition(a.height == shape[1] && a.width == shape[2], "ImageProcessor: the pipeline ended at \(a.width)x\(a.height)")
    write(a, convention: pipeline.convention, mirrored: mirrored, into: out)
    mirrored = false
  }

  /// Decodes `bytes` and runs the transforms of `pipeline` (not the tensor convention).
  /// The returned image is the processor's scratch buffer: copy it before the next call.
  public func transformed(_ bytes: UnsafeRawBufferPointer, name: String, pipeline: ImagePipeline, rng: inout SeededGenerator)
    throws -> RGBImage
  {
    try run(bytes, name: name, pipeline: pipeline, rng: &rng)
    applyPendingFlip()
    return a
  }

  /// Decodes and transforms into `a`, a last horizontal flip possibly left pending (`mirrored`).
  private func run(_ bytes: UnsafeRawBufferPointer, name: String, pipeline: ImagePipeline, rng: inout SeededGenerator) throws {
    mirrored = false
    var rest = pipeline.transforms[...]
    let header = try decoder.header(bytes, name: name)
    let scaling = pipeline.decodeScaling && header.format == .jpeg
    switch rest.first {
    case .randomResizedCrop(let size, let scale, let ratio)?:
      let c = randomResizedCropParameters(width: header.width, height: header.height, scale: scale, ratio: ratio, rng: &rng)
      let d = scaling ? Self.denominator(Swift.min(c.width, c.height), target: size) : 1
      if d == 1 {
        // Only the crop's rows and columns are decoded (a JPEG's: the same bytes there as a full
        // decode, so this is PIL's crop-then-resize whether or not decode scaling is on).
        let origin = try decoder.decode(bytes, name: name, into: &a, covering: c)
        let left = c.left - origin.left, top = c.top - origin.top
        resampler.resample(
          a, x: ResampleAxis(crop: left, left + c.width, outSize: size), y: ResampleAxis(crop: top, top + c.height, outSize: size),
          into: &b)
        swap(&a, &b)
      } else {
        try decoder.decode(bytes, name: name, into: &a, scaleDenominator: d)
        resample(full: header, crop: c, outW: size, outH: size)
      }
      rest = rest.dropFirst()
    case .resize(let size)? where scaling:
      let o = resizedSize(width: header.width, height: header.height, shorter: size)
      let d = Self.denominator(Swift.min(header.width, header.height), target: size)
      try decoder.decode(bytes, name: name, into: &a, scaleDenominator: d)
      resample(full: header, crop: (0, 0, header.height, header.width), outW: o.width, outH: o.height)
      rest = rest.dropFirst()
    default:
      try decoder.decode(bytes, name: name, into: &a)
    }
    apply(rest, rng: &rng)
  }

  private func applyPendingFlip() {
    if mirrored { PixelOps.flipHorizontally(&a) }
    mirrored = false
  }

  /// Runs `transforms` on a decoded image (what `transformed` does after decoding).
  public func apply(_ transforms: [ImageTransform], to image: RGBImage, rng: inout SeededGenerator) -> RGBImage {
    a = image
    mirrored = false
    apply(transforms[...], rng: &rng)
    applyPendingFlip()
    return a
  }

  /// The largest of 8, 4, 2 (else 1) at which a side `side` still covers twice `target`.
  static func denominator(_ side: Int, target: Int) -> Int {
    for d in [8, 4, 2] where side / d >= 2 * target { return d }
    return 1
  }

  /// Resamples crop `c` (in full-size coordinates) of the picture decoded in `a` (at full size or
  /// reduced) to outW×outH, into `a`.
  private func resample(full: ImageHeader, crop c: (top: Int, left: Int, height: Int, width: Int), outW: Int, outH: Int) {
    let sx = Double(a.width) / Double(full.width), sy = Double(a.height) / Double(full.height)
    func axis(_ start: Int, _ length: Int, _ s: Double, _ size: Int, _ out: Int) -> ResampleAxis {
      if s == 1 { return ResampleAxis(crop: start, start + length, outSize: out) }
      let x0 = Double(start) * s, x1 = Double(start + length) * s
      let lo = Int(x0.rounded(.down)), hi = Swift.min(size, Swift.max(lo + 1, Int(x1.rounded(.up))))
      return ResampleAxis(start: x0, end: x1, lo: lo, hi: hi, outSize: out)
    }
    resampler.resample(
      a, x: axis(c.left, c.width, sx, a.width, outW), y: axis(c.top, c.height, sy, a.height, outH), into: &b)
    swap(&a, &b)
  }

  private func apply(_ transforms: ArraySlice<ImageTransform>, rng: inout SeededGenerator) {
    for t in transforms {
      if case .randomHorizontalFlip = t {} else { applyPendingFlip() }
      switch t {
      case .resize(let size):
        let o = resizedSize(width: a.width, height: a.height, shorter: size)
        resampler.resample(
          a, x: ResampleAxis(crop: 0, a.width, outSize: o.width), y: ResampleAxis(crop: 0, a.height, outSize: o.height), into: &b)
        swap(&a, &b)
      case .centerCrop(let h, let w):
        if h == a.height && w == a.width { continue }
        let o = centerCropOffsets(width: a.width, height: a.height, cropWidth: w, cropHeight: h)
        PixelOps.crop(a, top: o.top, left: o.left, height: h, width: w, into: &b)
        swap(&a, &b)
      case .randomResizedCrop(let size, let scale, let ratio):
        let c = randomResizedCropParameters(width: a.width, height: a.height, scale: scale, ratio: ratio, rng: &rng)
        resampler.resample(
          a, x: ResampleAxis(crop: c.left, c.left + c.width, outSize: size),
          y: ResampleAxis(crop: c.top, c.top + c.height, outSize: size), into: &b)
        swap(&a, &b)
      case .randomHorizontalFlip(let p):
        if rng.nextDouble() < p { mirrored.toggle() }
      case .colorJitter(let bv, let cv, let sv):
        // torchvision: a random order of the four adjustments, then each factor (hue is not offered).
        var order = [0, 1, 2, 3]
        for i in stride(from: 3, to: 0, by: -1) { order.swapAt(i, rng.nextInt(below: i + 1)) }
        func factor(_ v: Double) -> Double? {
          v > 0 ? Swift.max(0, 1 - v) + (1 + v - Swift.max(0, 1 - v)) * rng.nextDouble() : nil
        }
        let fb = factor(bv), fc = factor(cv), fs = factor(sv)
        for k in order {
          switch k {
          case 0: if let fb { PixelOps.adjustBrightness(&a, factor: fb) }
          case 1: if let fc { PixelOps.adjustContrast(&a, factor: fc) }
          case 2: if let fs { PixelOps.adjustSaturation(&a, factor: fs) }
          default: break
          }
        }
      }
    }
  }

  /// `[3, H, W]` floats of `image` by `convention`.
  public func write(_ image: RGBImage, convention: TensorConvention, into out: UnsafeMutablePointer<Float>) {
    write(image, convention: convention, mirrored: false, into: out)
  }

  /// `[3, H, W]` floats of `image` (mirrored left to right when `mirrored`) by `convention`: one
  /// pass over the interleaved pixels, each byte through its plane's table.
  private func write(_ image: RGBImage, convention: TensorConvention, mirrored: Bool, into out: UnsafeMutablePointer<Float>) {
    let (lut, src) = tables[convention] ?? {
      let t = convention.table()
      tables[convention] = t
      return t
    }()
    let w = image.width, h = image.height, n = w &* h
    let c0 = src[0], c1 = src[1], c2 = src[2]
    image.pixels.withUnsafeBufferPointer { p in
      lut.withUnsafeBufferPointer { l in
        let t0 = l.baseAddress!, t1 = t0 + 256, t2 = t0 + 512
        for y in 0..<h {
          let row = p.baseAddress! + y &* w &* 3
          let d0 = out + y &* w, d1 = d0 + n, d2 = d1 + n
          if mirrored {
            var s = row + (w &- 1) &* 3
            for x in 0..<w {
              d0[x] = t0[Int(s[c0])]
              d1[x] = t1[Int(s[c1])]
              d2[x] = t2[Int(s[c2])]
              s -= 3
            }
          } else {
            var s = row
            for x in 0..<w {
              d0[x] = t0[Int(s[c0])]
              d1[x] = t1[Int(s[c1])]
              d2[x] = t2[Int(s[c2])]
              s += 3
            }
          }
        }
      }
    }
  }
}

extension TensorConvention: Hashable {
  public func hash(into h: inout Hasher) {
    switch self {
    case .normalize(let m, let s): h.combine(0); h.combine(m); h.combine(s)
    case .bgr255: h.combine(1)
    }
  }
}
