// TransformTests: Resize, CenterCrop, resized crops, flips and ColorJitter's adjustments against
// torchvision's functional API on PIL images (fixtures), ToTensor+Normalize against torchvision's
// floats, RandomResizedCrop's parameters (bounds, torchvision's fallback), the pipeline's text.
import Foundation
import TensorCore
import XCTest

@testable import ImageData

final class TransformTests: XCTestCase {
  private func source() throws -> RGBImage {
    var image = RGBImage()
    let bytes = try Fixtures.bytes("source.png")
    try bytes.withUnsafeBytes { _ = try ImageDecoder().decode($0, name: "source.png", into: &image) }
    return image
  }

  private func expected(_ name: String) throws -> (RGBImage, [String: Any]) {
    let e = Fixtures.entries("transforms").first { $0["name"] as? String == name }!
    let w = e["width"] as! Int, h = e["height"] as! Int
    return (RGBImage(width: w, height: h, pixels: try Fixtures.bytes(name + ".rgb")), e)
  }

  /// The tolerance we state: PIL's resampler reimplemented gives its bytes exactly (max difference 0);
  /// the assertion allows 1 level so a libm difference in a weight's last bit would not fail it.
  private func assertClose(_ got: RGBImage, _ want: RGBImage, _ what: String, tolerance: Int = 1, line: UInt = #line) {
    XCTAssertEqual(got.width, want.width, what, line: line)
    XCTAssertEqual(got.height, want.height, what, line: line)
    guard got.width == want.width && got.height == want.height else { return }
    let n = got.width * got.height * 3
    let d = difference(got.pixels[0..<n], want.pixels[0..<n])
    XCTAssertLessThanOrEqual(d.max, tolerance, "\(what): max difference \(d.max), mean \(d.mean)", line: line)
  }

  func testResizeMatchesTorchvisionOnPIL() throws {
    let src = try source()
    let p = ImageProcessor()
    var rng = SeededGenerator(seed: 0)
    for name in ["resize24", "resize7", "resize100"] {
      let (want, e) = try expected(name)
      let got = p.apply([.resize(e["size"] as! Int)], to: src, rng: &rng)
      assertClose(got, want, name)
      XCTAssertEqual(difference(got.pixels[0..<(got.width * got.height * 3)], want.pixels[...]).max, 0, "\(name): not PIL's bytes")
    }
    let (want, _) = try expected("resize30-center20x16")
    assertClose(p.apply([.resize(30), .centerCrop(height: 20, width: 16)], to: src, rng: &rng), want, "resize+center crop")
    let (padded, _) = try expected("center60")
    assertClose(p.apply([.centerCrop(60)], to: src, rng: &rng), padded, "center crop larger than the image (zero padding)", tolerance: 0)
  }

  func testResizedCropAndFlipMatchTorchvision() throws {
    let src = try source()
    let r = Resampler()
    for name in ["resizedcrop", "resizedcrop-up"] {
      let (want, e) = try expected(name)
      let box = e["box"] as! [Int], size = e["size"] as! Int  // top, left, height, width
      var out = RGBImage()
      r.resample(
        src, x: ResampleAxis(crop: box[1], box[1] + box[3], outSize: size), y: ResampleAxis(crop: box[0], box[0] + box[2], outSize: size),
        into: &out)
      assertClose(out, want, name)
    }
    var flipped = src
    PixelOps.flipHorizontally(&flipped)
    assertClose(flipped, try expected("hflip").0, "hflip", tolerance: 0)
  }

  func testColorAdjustmentsMatchPILImageEnhance() throws {
    let src = try source()
    for f in [0.4, 1.3] {
      var b = src, c = src, s = src
      PixelOps.adjustBrightness(&b, factor: f)
      PixelOps.adjustContrast(&c, factor: f)
      PixelOps.adjustSaturation(&s, factor: f)
      assertClose(b, try expected("brightness\(f)").0, "brightness \(f)")
      assertClose(c, try expected("contrast\(f)").0, "contrast \(f)")
      assertClose(s, try expected("saturation\(f)").0, "saturation \(f)")
    }
  }

  func testNormalizeIsTorchvisionsToTensorNormalize() throws {
    let src = try source()
    let p = ImageProcessor()
    var rng = SeededGenerator(seed: 0)
    let crop = p.apply([.centerCrop(32)], to: src, rng: &rng)
    let out = Tensor(zeros: [3, 32, 32])
    p.write(crop, convention: .imageNet, into: out.data)
    let want = try Fixtures.bytes("normalize.f32").withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    XCTAssertEqual(want.count, 3 * 32 * 32)
    for i in 0..<want.count { XCTAssertEqual(out.data[i], want[i], accuracy: 1e-6, "element \(i)") }
    // The official ACON convention: B, G, R planes of the raw bytes.
    p.write(crop, convention: .bgr255, into: out.data)
    for i in 0..<(32 * 32) {
      XCTAssertEqual(out.data[i], Float(crop.pixels[3 * i + 2]))
      XCTAssertEqual(out.data[1024 + i], Float(crop.pixels[3 * i + 1]))
      XCTAssertEqual(out.data[2048 + i], Float(crop.pixels[3 * i]))
    }
  }

  func testRandomResizedCropFallbackIsTorchvisions() {
    let cases = Fixtures.entries("rrc_fallback")
    XCTAssertGreaterThanOrEqual(cases.count, 7)
    for c in cases {
      let w = c["width"] as! Int, h = c["height"] as! Int
      var rng = SeededGenerator(seed: 3)
      // scale > 1 never fits: all 10 attempts fail, as in the fixture.
      let got = randomResizedCropParameters(width: w, height: h, scale: 2...3, ratio: (3.0 / 4)...(4.0 / 3), rng: &rng)
      XCTAssertEqual([got.top, got.left, got.height, got.width], [c["top"], c["left"], c["h"], c["w"]].map { $0 as! Int }, "\(w)x\(h)")
    }
  }

  func testRandomResizedCropParametersStayInTheirRanges() {
    var rng = SeededGenerator(seed: 11)
    var sawCrop = false
    for k in 0..<2000 {
      let w = 1 + (k * 37) % 600, h = 1 + (k * 53) % 450
      let c = randomResizedCropParameters(width: w, height: h, scale: 0.08...1, ratio: (3.0 / 4)...(4.0 / 3), rng: &rng)
      XCTAssertTrue(c.top >= 0 && c.left >= 0 && c.height > 0 && c.width > 0 && c.top + c.height <= h && c.left + c.width <= w)
      if c.width < w && c.height < h {
        sawCrop = true
        let area = Double(c.width * c.height) / Double(w * h), ratio = Double(c.width) / Double(c.height)
        // Rounding of each side to whole pixels widens the ranges a little on small images.
        if w >= 100 && h >= 100 {
          XCTAssertTrue(area > 0.07 && area <= 1.01, "area fraction \(area)")
          XCTAssertTrue(ratio > 0.72 && ratio < 1.39, "ratio \(ratio)")
        }
      }
    }
    XCTAssertTrue(sawCrop)
  }

  func testPipelineTextRoundTrips() throws {
    let pipelines = [
      ImagePipeline.train(size: 224, jitter: 0.4), ImagePipeline.eval(size: 224), ImagePipeline.train(size: 64, convention: .bgr255),
      ImagePipeline([.resize(80), .centerCrop(height: 64, width: 48)], convention: .imageNet, decodeScaling: false),
    ]
    for p in pipelines {
      let back = try ImagePipeline(parsing: p.description)
      XCTAssertEqual(back, p, p.description)
    }
    XCTAssertEqual(ImagePipeline.eval(size: 224).outputShape, [3, 224, 224])
    XCTAssertEqual(ImagePipeline.eval(size: 224).transforms, [.resize(256), .centerCrop(224)])
    for bad in ["", "Resize(24)", "Resize(24) | Normalize(mean=[1], std=[1])", "Blur(3) | ToBGRTensor()", "CenterCrop(size=(0, 3)) | ToBGRTensor()"] {
      XCTAssertThrowsError(try ImagePipeline(parsing: bad), bad)
    }
  }

  /// Decode scaling changes pixels only by DCT-scaling rounding, never the random choices.
  func testDecodeScalingKeepsTheDrawsAndStaysClose() throws {
    let jpeg = try JPEGEncoder().encode(syntheticPicture(width: 500, height: 375, seed: 4), quality: 90)
    let scaled = ImagePipeline([.resize(64), .centerCrop(56)], convention: .imageNet)
    var exact = scaled
    exact.decodeScaling = false
    let p = ImageProcessor()
    var r1 = SeededGenerator(seed: 1), r2 = SeededGenerator(seed: 1)
    let a = try jpeg.withUnsafeBytes { try p.transformed($0, name: "x.jpg", pipeline: scaled, rng: &r1) }
    let b = try jpeg.withUnsafeBytes { try p.transformed($0, name: "x.jpg", pipeline: exact, rng: &r2) }
    XCTAssertEqual(r1, r2)
    let d = difference(a.pixels[0..<(56 * 56 * 3)], b.pixels[0..<(56 * 56 * 3)])
    XCTAssertLessThan(d.mean, 4, "decode scaling: mean difference \(d.mean)")
    XCTAssertEqual(ImageProcessor.denominator(375, target: 64), 2)
    XCTAssertEqual(ImageProcessor.denominator(375, target: 224), 1)
    XCTAssertEqual(ImageProcessor.denominator(4000, target: 224), 8)
  }

  func testTinyImagesGoThroughEveryTransform() throws {
    let p = ImageProcessor()
    let one = RGBImage(width: 1, height: 1, pixels: [10, 200, 30])
    var rng = SeededGenerator(seed: 5)
    let out = p.apply(
      [.randomResizedCrop(8), .randomHorizontalFlip(p: 0.5), .colorJitter(brightness: 0.4, contrast: 0.4, saturation: 0.4)],
      to: one, rng: &rng)
    XCTAssertEqual([out.width, out.height], [8, 8])
    let r = p.apply([.resize(5), .centerCrop(3)], to: one, rng: &rng)
    XCTAssertEqual([r.width, r.height], [3, 3])
    XCTAssertEqual(Array(r.pixels[0..<3]), [10, 200, 30])
  }

  func testAFlipLeftToTheTensorWriteIsTheFlippedImage() throws {
    // process() leaves a last flip to the tensor write, which reads each row mirrored: the same
    // floats as transformed() (which flips the pixels) and then write(), at odd sizes, with a
    // flip before another transform, twice, and in both conventions.
    let bytes = try ImageFile.read(Fixtures.dir + "/folder/train/ant/img0.jpg")
    let cases: [[ImageTransform]] = [
      [.resize(9), .centerCrop(height: 7, width: 5), .randomHorizontalFlip(p: 1)],
      [.resize(9), .centerCrop(height: 1, width: 1), .randomHorizontalFlip(p: 1)],
      [.randomResizedCrop(6), .randomHorizontalFlip(p: 1), .colorJitter(brightness: 0.4, contrast: 0.4, saturation: 0.4)],
      [.resize(8), .randomHorizontalFlip(p: 1), .randomHorizontalFlip(p: 1), .centerCrop(3)],
      [.resize(8), .randomHorizontalFlip(p: 1), .centerCrop(height: 4, width: 3), .randomHorizontalFlip(p: 1)],
    ]
    let p = ImageProcessor(), q = ImageProcessor()
    for t in cases {
      for convention in [TensorConvention.imageNet, .bgr255] {
        let pipeline = ImagePipeline(t, convention: convention)
        let shape = pipeline.outputShape, n = shape.reduce(1, *)
        var fused = [Float](repeating: .nan, count: n), reference = [Float](repeating: .nan, count: n)
        var r1 = SeededGenerator(seed: 9), r2 = SeededGenerator(seed: 9)
        try bytes.withUnsafeBytes { raw in
          try fused.withUnsafeMutableBufferPointer { try p.process(raw, name: "x", pipeline: pipeline, rng: &r1, into: $0.baseAddress!) }
          let image = try q.transformed(raw, name: "x", pipeline: pipeline, rng: &r2)
          reference.withUnsafeMutableBufferPointer { q.write(image, convention: convention, into: $0.baseAddress!) }
        }
        XCTAssertEqual(fused, reference, "\(pipeline)")
        if t == cases[0] {
          // Not vacuous: without the flip the floats differ.
          var unflipped = [Float](repeating: .nan, count: n), r3 = SeededGenerator(seed: 9)
          let plain = ImagePipeline(Array(t.dropLast()), convention: convention)
          try bytes.withUnsafeBytes { raw in
            try unflipped.withUnsafeMutableBufferPointer { try p.process(raw, name: "x", pipeline: plain, rng: &r3, into: $0.baseAddress!) }
          }
          XCTAssertNotEqual(unflipped, fused)
        }
      }
    }
  }

  func testResampleKernelsGiveTheReferenceBytes() {
    // The C kernels (AVX2 horizontal pass two rows at a time, blocked vertical pass) against the
    // Swift reference loops, one row and one channel at a time, on random pictures, crops and
    // sizes (shrinking by up to 40×, enlarging, 1×1, odd widths, the data.folder sizes), white included.
    var rng = SeededGenerator(seed: 21)
    let kernels = Resampler(), reference = Resampler(reference: true)
    for trial in 0..<120 {
      let big = trial % 4 == 3
      let w = 1 + rng.nextInt(below: big ? 500 : 200), h = 1 + rng.nextInt(below: big ? 375 : 40)
      let pixels = (0..<(w * h * 3)).map { _ in trial % 10 == 0 ? 255 : UInt8(truncatingIfNeeded: rng.nextInt(below: 256)) }
      let img = RGBImage(width: w, height: h, pixels: pixels)
      let left = rng.nextInt(below: w), width = 1 + rng.nextInt(below: w - left)
      let top = rng.nextInt(below: h), height = 1 + rng.nextInt(below: h - top)
      let outW = big ? 224 : 1 + rng.nextInt(below: 60), outH = big ? 224 : 1 + rng.nextInt(below: 30)
      let x = ResampleAxis(crop: left, left + width, outSize: outW), y = ResampleAxis(crop: top, top + height, outSize: outH)
      var a = RGBImage(), b = RGBImage()
      kernels.resample(img, x: x, y: y, into: &a)
      reference.resample(img, x: x, y: y, into: &b)
      XCTAssertEqual(a.pixels[0..<(outW * outH * 3)], b.pixels[0..<(outW * outH * 3)], "\(w)x\(h) crop \(width)x\(height) to \(outW)x\(outH)")
      if trial % 10 == 0 { XCTAssertEqual(Set(a.pixels[0..<(outW * outH * 3)]), [255], "white stays white") }
    }
  }
}
