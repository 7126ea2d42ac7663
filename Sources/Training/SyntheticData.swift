// SyntheticData: procedural, deterministic labelled images for runs without a data set on
// disk (`--data synthetic`), for tests and for benchmarks. Ten classes of distinct shapes and
// textures at random positions, sizes, intensities and colours, with pixel noise: easy for a
// small CNN (well above 80% after an epoch), but not solvable by a fixed pixel template.

import TensorCore

/// Procedurally drawn shapes: a stand-in for MNIST-like and CIFAR-like data.
///
/// Classes (label → shape): 0 disc, 1 ring, 2 filled square, 3 hollow square,
/// 4 horizontal stripes, 5 vertical stripes, 6 diagonal stripes, 7 plus, 8 cross (×), 9 triangle.
/// With fewer classes the first ones are used.
public enum SyntheticShapes {
  /// Names of the classes, by label.
  public static let classNames = [
    "disc", "ring", "square", "hollow square", "horizontal stripes", "vertical stripes", "diagonal stripes",
    "plus", "cross", "triangle",
  ]

  /// Draws `count` images. Image `i` depends only on `(seed, i)` (so a smaller count gives a
  /// prefix of a larger one); labels cycle `0, 1, …, classes−1`, so classes are balanced.
  /// - Parameters: count; channels C (1 greyscale, 3 colour); height H, width W (≥ 8);
  ///   classes (1…10); seed.
  /// - Returns: images `[count, C, H, W]`.
  public static func make(
    count: Int, channels: Int = 1, height: Int = 28, width: Int = 28, classes: Int = 10, seed: UInt64
  ) -> ImageDataset {
    precondition(count >= 0, "SyntheticShapes: count must be non-negative")
    precondition(channels > 0 && height >= 8 && width >= 8, "SyntheticShapes: images must be at least 8x8")
    precondition((1...10).contains(classes), "SyntheticShapes: classes must be in 1...10, got \(classes)")
    let plane = height * width, imageSize = channels * plane
    var pixels = [UInt8](repeating: 0, count: count * imageSize)
    var labels = [UInt8](repeating: 0, count: count)
    var mask = [Float](repeating: 0, count: plane)
    for i in 0..<count {
      var rng = SeededGenerator(seed: dataSeedMix(seed, 0x5348_4150 /* "SHAP" */, UInt64(i)))
      let label = i % classes
      labels[i] = UInt8(label)
      drawMask(label, into: &mask, height: height, width: width, rng: &rng)
      // Colours: foreground bright, background dark, per channel, so colour says nothing about the class.
      var fg = [Float](), bg = [Float]()
      let fgLevel = rng.nextUniform(0.6, 1.0), bgLevel = rng.nextUniform(0.0, 0.25)
      for _ in 0..<channels {
        fg.append(channels == 1 ? fgLevel : rng.nextUniform(0.5, 1.0))
        bg.append(channels == 1 ? bgLevel : rng.nextUniform(0.0, 0.3))
      }
      let noise = rng.nextUniform(0.02, 0.10)
      for c in 0..<channels {
        let base = i * imageSize + c * plane
        for p in 0..<plane {
          let m = mask[p]
          let v = bg[c] + (fg[c] - bg[c]) * m + noise * rng.nextNormal()
          pixels[base + p] = UInt8(Swift.max(0, Swift.min(255, (v * 255).rounded())))
        }
      }
    }
    return ImageDataset(
      name: "synthetic", channels: channels, height: height, width: width, classes: classes, pixels: pixels,
      labels: labels, source: "synthetic shapes (seed \(seed), \(count) images \(channels)x\(height)x\(width))",
      normalization: Normalization(mean: [Float](repeating: 0.5, count: channels), std: [Float](repeating: 0.5, count: channels)))
  }

  /// A training set and a test set drawn with different seeds derived from `seed`.
  /// - Returns: `train` `[trainCount, C, H, W]` and `test` `[testCount, C, H, W]`.
  public static func splits(
    trainCount: Int, testCount: Int, channels: Int = 1, height: Int = 28, width: Int = 28, classes: Int = 10,
    seed: UInt64
  ) -> (train: ImageDataset, test: ImageDataset) {
    var train = make(
      count: trainCount, channels: channels, height: height, width: width, classes: classes,
      seed: dataSeedMix(seed, 0x5452_4149 /* "TRAI" */))
    var test = make(
      count: testCount, channels: channels, height: height, width: width, classes: classes,
      seed: dataSeedMix(seed, 0x5445_5354 /* "TEST" */))
    train.name = "synthetic/train"
    test.name = "synthetic/test"
    train.source = "synthetic shapes (seed \(seed), train split)"
    test.source = "synthetic shapes (seed \(seed), test split)"
    return (train, test)
  }

  /// Draws the shape of `label` into `mask` (values 0...1, `[H, W]`) at a random place and size.
  static func drawMask(_ label: Int, into mask: inout [Float], height h: Int, width w: Int, rng: inout SeededGenerator) {
    let s = Float(Swift.min(h, w))
    let r = s * rng.nextUniform(0.22, 0.36)  // half-extent of the shape
    let t = Swift.max(1.0, s * rng.nextUniform(0.06, 0.09))  // stroke half-width
    let cx = rng.nextUniform(r + 0.5, Float(w) - r - 0.5)
    let cy = rng.nextUniform(r + 0.5, Float(h) - r - 0.5)
    let period = Swift.max(3.0, s * rng.nextUniform(0.18, 0.26))  // stripe period
    let phase = rng.nextUniform(0, period)
    for y in 0..<h {
      for x in 0..<w {
        let dx = Float(x) + 0.5 - cx, dy = Float(y) + 0.5 - cy
        let inBox = abs(dx) <= r && abs(dy) <= r
        var on = false
        switch label {
        case 0: on = (dx * dx + dy * dy).squareRoot() <= r
        case 1: on = abs((dx * dx + dy * dy).squareRoot() - r * 0.85) <= t
        case 2: on = abs(dx) <= r * 0.85 && abs(dy) <= r * 0.85
        case 3: on = inBox && Swift.max(abs(dx), abs(dy)) >= r - 2 * t
        case 4: on = inBox && stripe(dy + r + phase, period)
        case 5: on = inBox && stripe(dx + r + phase, period)
        case 6: on = inBox && stripe((dx + dy) * 0.7071 + 2 * r + phase, period)
        case 7: on = (abs(dx) <= t && abs(dy) <= r) || (abs(dy) <= t && abs(dx) <= r)
        case 8: on = inBox && (abs(dx - dy) <= t * 1.4142 || abs(dx + dy) <= t * 1.4142)
        default: on = dy >= -r && dy <= r && abs(dx) <= (dy + r) * 0.5  // triangle, apex up
        }
        mask[y * w + x] = on ? 1 : 0
      }
    }
  }

  /// Whether `v` falls in the "on" half of a stripe pattern of the given period.
  private static func stripe(_ v: Float, _ period: Float) -> Bool {
    let m = v.truncatingRemainder(dividingBy: period)
    return (m < 0 ? m + period : m) < period * 0.5
  }
}
