// Resample: PIL's antialiased bilinear resize (Image.resize(size, BILINEAR, box)), the one
// torchvision's Resize, RandomResizedCrop and resized_crop run on PIL images: separable, a
// horizontal pass into 8-bit rows and a vertical pass, triangle filter widened by the scale
// factor when shrinking, weights in 22-bit fixed point, rounded and clipped to 0...255 after
// each pass. Given the same 8-bit input it gives PIL's bytes (the tests compare). The passes run
// as C kernels (CImageKernels, AVX2); the Swift loops here are their reference (`reference: true`).
import CImageKernels

/// One axis of a resample: a source interval `[start, end)` (fractional when the source was
/// decoded at a reduced scale) mapped onto `outSize` pixels, reading only pixels in `lo..<hi`.
public struct ResampleAxis: Sendable, Equatable {
  public var start: Double, end: Double
  public var lo: Int, hi: Int
  public var outSize: Int

  /// - Precondition: `0 <= lo < hi`, `start < end`, `outSize > 0`.
  public init(start: Double, end: Double, lo: Int, hi: Int, outSize: Int) {
    precondition(lo >= 0 && lo < hi && start < end && outSize > 0, "ResampleAxis: empty interval or output")
    self.start = start
    self.end = end
    self.lo = lo
    self.hi = hi
    self.outSize = outSize
  }

  /// The whole of `lo..<hi` (a crop of whole pixels, or the whole image) onto `outSize` pixels.
  public init(crop lo: Int, _ hi: Int, outSize: Int) {
    self.init(start: Double(lo), end: Double(hi), lo: lo, hi: hi, outSize: outSize)
  }

  /// Whether the resample of this axis copies (same size, whole pixels).
  var isIdentity: Bool { start == Double(lo) && end == Double(hi) && hi - lo == outSize }
}

/// PIL's bilinear resampler with its coefficient and row buffers kept from call to call (one per thread).
public final class Resampler {
  private static let precisionBits = 22
  private var kx = [Int32](), ky = [Int32]()
  private var bx = [Int](), by = [Int]()
  private var temp = [UInt8]()
  private var accumulator = [Int32]()
  /// Whether the passes run as the Swift reference loops (one row at a time) instead of the C kernels.
  let reference: Bool

  public init() { reference = false }

  /// `reference: true` runs the Swift loops (the tests compare them with the kernels).
  init(reference: Bool) { self.reference = reference }

  /// Resamples `x` × `y` of `src` into `dst` (reshaped to `x.outSize`×`y.outSize`).
  /// - Precondition: `x.hi <= src.width`, `y.hi <= src.height`.
  public func resample(_ src: RGBImage, x: ResampleAxis, y: ResampleAxis, into dst: inout RGBImage) {
    precondition(x.hi <= src.width && y.hi <= src.height, "Resampler: the interval leaves the image")
    dst.reshape(width: x.outSize, height: y.outSize)
    let kxSize = Self.coefficients(x, into: &kx, bounds: &bx)
    let kySize = Self.coefficients(y, into: &ky, bounds: &by)
    let outW = x.outSize, outH = y.outSize
    let needH = !x.isIdentity, needV = !y.isIdentity
    // Source rows the vertical pass reads.
    let firstRow = by[0], lastRow = by[2 * (outH - 1)] + by[2 * (outH - 1) + 1]
    let rows = lastRow - firstRow
    if accumulator.count < outW * 3 { accumulator = [Int32](repeating: 0, count: outW * 3) }
    accumulator.withUnsafeMutableBufferPointer { accBuffer in
      let acc = accBuffer.baseAddress!
      src.pixels.withUnsafeBufferPointer { sp in
        dst.pixels.withUnsafeMutableBufferPointer { dp in
          let s = sp.baseAddress!, d = dp.baseAddress!
          if needH {
            if temp.count < rows * outW * 3 { temp = [UInt8](repeating: 0, count: rows * outW * 3) }
            temp.withUnsafeMutableBufferPointer { tp in
              kx.withUnsafeBufferPointer { k in
                bx.withUnsafeBufferPointer { b in
                  let rowStart = s + firstRow * src.width * 3
                  if reference {
                    Self.horizontal(
                      rowStart, srcStride: src.width * 3, rows: rows, outW: outW, k: k.baseAddress!, kSize: kxSize,
                      bounds: b.baseAddress!, dst: tp.baseAddress!)
                  } else {
                    acon_resample_horizontal(
                      rowStart, src.width * 3, Int32(src.width), Int32(rows), Int32(outW), k.baseAddress!, Int32(kxSize), b.baseAddress!,
                      tp.baseAddress!)
                  }
                }
              }
              let t = UnsafePointer(tp.baseAddress!)
              if needV {
                verticalPass(t, stride: outW * 3, firstRow: firstRow, outW: outW, outH: outH, kSize: kySize, dst: d, acc: acc)
              } else {
                (d).update(from: t, count: outW * outH * 3)
              }
            }
          } else {
            // Columns are copied: read the source rows at the crop's column offset.
            let base = s + x.lo * 3
            if needV {
              verticalPass(base, stride: src.width * 3, firstRow: 0, outW: outW, outH: outH, kSize: kySize, dst: d, acc: acc)
            } else {
              for r in 0..<outH { (d + r * outW * 3).update(from: base + (y.lo + r) * src.width * 3, count: outW * 3) }
            }
          }
        }
      }
    }
  }

  /// The vertical pass: the C kernel, or the Swift reference.
  private func verticalPass(
    _ src: UnsafePointer<UInt8>, stride: Int, firstRow: Int, outW: Int, outH: Int, kSize: Int,
    dst: UnsafeMutablePointer<UInt8>, acc: UnsafeMutablePointer<Int32>
  ) {
    if reference {
      Self.vertical(src, stride: stride, firstRow: firstRow, outW: outW, outH: outH, ky: ky, kSize: kSize, by: by, dst: dst, acc: acc)
      return
    }
    ky.withUnsafeBufferPointer { k in
      by.withUnsafeBufferPointer { b in
        acon_resample_vertical(src, stride, firstRow, Int32(outW * 3), Int32(outH), k.baseAddress!, Int32(kSize), b.baseAddress!, dst)
      }
    }
  }

  /// PIL's precompute_coeffs + normalize_coeffs_8bpc: for each output pixel the first source
  /// index and the tap count in `bounds`, and `kSize` fixed-point weights in `k`.
  private static func coefficients(_ a: ResampleAxis, into k: inout [Int32], bounds: inout [Int]) -> Int {
    let scale = (a.end - a.start) / Double(a.outSize)
    let filterScale = Swift.max(scale, 1)
    let support = 1.0 * filterScale  // the triangle's support is 1
    let kSize = Int(support.rounded(.up)) * 2 + 1
    if k.count < a.outSize * kSize { k = [Int32](repeating: 0, count: a.outSize * kSize) }
    if bounds.count < 2 * a.outSize { bounds = [Int](repeating: 0, count: 2 * a.outSize) }
    var w = [Double](repeating: 0, count: kSize)
    let ss = 1.0 / filterScale
    let one = Double(1 << precisionBits)
    for o in 0..<a.outSize {
      let center = a.start + (Double(o) + 0.5) * scale
      var xmin = Int((center - support + 0.5).rounded(.towardZero))
      if xmin < a.lo { xmin = a.lo }
      var xmax = Int((center + support + 0.5).rounded(.towardZero))
      if xmax > a.hi { xmax = a.hi }
      xmax -= xmin
      if xmax < 0 { xmax = 0 }
      var ww = 0.0
      for i in 0..<xmax {
        let t = abs((Double(i + xmin) - center + 0.5) * ss)
        w[i] = t < 1 ? 1 - t : 0
        ww += w[i]
      }
      for i in 0..<kSize {
        var v = i < xmax ? w[i] : 0
        if i < xmax && ww != 0 { v /= ww }
        k[o * kSize + i] = Int32(v < 0 ? (-0.5 + v * one).rounded(.towardZero) : (0.5 + v * one).rounded(.towardZero))
      }
      bounds[2 * o] = xmin
      bounds[2 * o + 1] = xmax
    }
    return kSize
  }

  @inline(__always) private static func clip8(_ v: Int32) -> UInt8 {
    let s = v >> Int32(precisionBits)
    return s < 0 ? 0 : s > 255 ? 255 : UInt8(truncatingIfNeeded: s)
  }

  // The reference horizontal pass: rows × [srcW·3] → rows × [outW·3], one row and one channel
  // at a time. Wrapping index arithmetic: the sizes were checked when the images were made.
  private static func horizontal(
    _ src: UnsafePointer<UInt8>, srcStride: Int, rows: Int, outW: Int, k: UnsafePointer<Int32>, kSize: Int,
    bounds: UnsafePointer<Int>, dst: UnsafeMutablePointer<UInt8>
  ) {
    let half = Int32(1 << (precisionBits - 1))
    let dstStride = outW &* 3
    var r = 0
    while r < rows {
      let srow = src + r &* srcStride, drow = dst + r &* dstStride
      for o in 0..<outW {
        let xmin = bounds[2 &* o], n = bounds[2 &* o &+ 1]
        let kk = k + o &* kSize
        var s0 = half, s1 = half, s2 = half
        var p = srow + xmin &* 3
        for i in 0..<n {
          let w = kk[i]
          s0 &+= Int32(p[0]) &* w
          s1 &+= Int32(p[1]) &* w
          s2 &+= Int32(p[2]) &* w
          p += 3
        }
        let d = drow + 3 &* o
        d[0] = clip8(s0)
        d[1] = clip8(s1)
        d[2] = clip8(s2)
      }
      r &+= 1
    }
  }

  // The reference vertical pass: [rows][outW·3] (row r of `src` is source row firstRow + r) → outH × [outW·3]. Each output
  // row accumulates whole source rows (contiguous, vectorisable), tap after tap.
  private static func vertical(
    _ src: UnsafePointer<UInt8>, stride: Int, firstRow: Int, outW: Int, outH: Int, ky: [Int32], kSize: Int, by: [Int],
    dst: UnsafeMutablePointer<UInt8>, acc: UnsafeMutablePointer<Int32>
  ) {
    let half = Int32(1 << (precisionBits - 1))
    let n3 = outW * 3
    ky.withUnsafeBufferPointer { kp in
      for o in 0..<outH {
        let ymin = by[2 * o] - firstRow, n = by[2 * o + 1]
        let kk = kp.baseAddress! + o * kSize
        acc.update(repeating: half, count: n3)
        for i in 0..<n {
          let w = kk[i]
          let row = src + (ymin + i) * stride
          for c in 0..<n3 { acc[c] &+= Int32(row[c]) &* w }
        }
        let drow = dst + o * n3
        for c in 0..<n3 { drow[c] = clip8(acc[c]) }
      }
    }
  }
}
