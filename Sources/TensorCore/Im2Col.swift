// Im2Col: Caffe's im2col/col2im lowering of a 2-D convolution to a matrix product
// (after BVLC/caffe src/caffe/util/im2col.cpp), for one sample at a time.
//
// col is [C·KH·KW, OH·OW] for one sample, stored with row stride `colStride` so that the
// samples of a batch sit side by side: col[k, n·P + p] for a batched [K, N·P] matrix.

/// The geometry of a 2-D convolution or pooling window over one `[C, H, W]` sample.
public struct ConvGeometry: Equatable, Sendable {
  public var channels, height, width: Int
  public var kernelH, kernelW: Int
  public var strideH, strideW: Int
  public var padH, padW: Int

  public init(
    channels: Int, height: Int, width: Int, kernelH: Int, kernelW: Int,
    strideH: Int, strideW: Int, padH: Int, padW: Int
  ) {
    self.channels = channels
    self.height = height
    self.width = width
    self.kernelH = kernelH
    self.kernelW = kernelW
    self.strideH = strideH
    self.strideW = strideW
    self.padH = padH
    self.padW = padW
  }

  /// `(H + 2·padH − KH) / strideH + 1`, or 0 when the window does not fit.
  public var outH: Int { height + 2 * padH < kernelH ? 0 : (height + 2 * padH - kernelH) / strideH + 1 }
  /// `(W + 2·padW − KW) / strideW + 1`, or 0 when the window does not fit.
  public var outW: Int { width + 2 * padW < kernelW ? 0 : (width + 2 * padW - kernelW) / strideW + 1 }
  /// Rows of the column matrix: `C·KH·KW`.
  public var colRows: Int { channels * kernelH * kernelW }
  /// Columns of the column matrix for one sample: `OH·OW`.
  public var colCols: Int { outH * outW }
}

/// Lowers one sample to columns.
/// - Parameters:
///   - x: `[C, H, W]` of one sample.
///   - col: `[C·KH·KW, OH·OW]` with row stride `colStride` (≥ OH·OW). Padding reads as 0.
public func im2col(
  _ x: UnsafePointer<Float>, _ g: ConvGeometry, col: UnsafeMutablePointer<Float>, colStride: Int
) {
  let oh = g.outH, ow = g.outW
  var row = 0
  for c in 0..<g.channels {
    let xc = x + c * g.height * g.width
    for ki in 0..<g.kernelH {
      for kj in 0..<g.kernelW {
        let dst = col + row * colStride
        for i in 0..<oh {
          let h = i * g.strideH - g.padH + ki
          let drow = dst + i * ow
          if h < 0 || h >= g.height {
            drow.update(repeating: 0, count: ow)
            continue
          }
          let xrow = xc + h * g.width
          // w = j·strideW − padW + kj must lie in [0, W).
          for j in 0..<ow {
            let w = j * g.strideW - g.padW + kj
            drow[j] = (w >= 0 && w < g.width) ? xrow[w] : 0
          }
        }
        row += 1
      }
    }
  }
}

/// Adds columns back into one sample: the adjoint of `im2col`.
/// - Parameters:
///   - col: `[C·KH·KW, OH·OW]` with row stride `colStride`.
///   - dx: `[C, H, W]` of one sample; accumulated into (`+=`), so zero it first.
public func col2im(
  _ col: UnsafePointer<Float>, colStride: Int, _ g: ConvGeometry, dx: UnsafeMutablePointer<Float>
) {
  let oh = g.outH, ow = g.outW
  var row = 0
  for c in 0..<g.channels {
    let dxc = dx + c * g.height * g.width
    for ki in 0..<g.kernelH {
      for kj in 0..<g.kernelW {
        let src = col + row * colStride
        for i in 0..<oh {
          let h = i * g.strideH - g.padH + ki
          if h < 0 || h >= g.height { continue }
          let srow = src + i * ow
          let xrow = dxc + h * g.width
          for j in 0..<ow {
            let w = j * g.strideW - g.padW + kj
            if w >= 0 && w < g.width { xrow[w] += srow[j] }
          }
        }
        row += 1
      }
    }
  }
}
