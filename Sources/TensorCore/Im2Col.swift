// Im2Col: Caffe's im2col/col2im lowering of a 2-D convolution to a matrix product
// (after BVLC/caffe src/caffe/util/im2col.cpp), for one sample or a whole batch. Each has
// several loops to the same bits: copying image rows (stride 1, long rows), a per-element
// gather table (short strided rows), one pass for all three taps of 3-wide kernels (in AVX-512
// at stride 2, CLoweringKernels, both ways), and plane copies for 1×1 windows at stride 1 without padding;
// the entry points pick the fastest measured for the geometry.
//
// col is [C·KH·KW, OH·OW] for one sample, stored with row stride `colStride` so that the
// samples of a batch sit side by side: col[k, n·P + p] for a batched [K, N·P] matrix.
import CLoweringKernels

/// The geometry of a 2-D convolution or pooling window over one `[C, H, W]` sample.
public struct ConvGeometry: Equatable, Sendable {
  /// The input sample's C, H and W.
  public var channels, height, width: Int
  /// The window's height and width.
  public var kernelH, kernelW: Int
  /// The steps between windows.
  public var strideH, strideW: Int
  /// Zero padding on each side.
  public var padH, padW: Int

  /// The geometry of a window over `[channels, height, width]` samples.
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
  /// A 1×1 window at stride 1 without padding: each column-matrix row is an input plane.
  public var isPointwise: Bool {
    kernelH == 1 && kernelW == 1 && strideH == 1 && strideW == 1 && padH == 0 && padW == 0
  }
}

/// Lowers one sample to columns.
/// - Parameters:
///   - x: `[C, H, W]` of one sample.
///   - g: the window's geometry over `[C, H, W]`.
///   - col: `[C·KH·KW, OH·OW]` with row stride `colStride` (≥ OH·OW). Padding reads as 0.
///   - colStride: elements between the starts of consecutive rows of `col`.
public func im2col(
  _ x: UnsafePointer<Float>, _ g: ConvGeometry, col: UnsafeMutablePointer<Float>, colStride: Int
) {
  im2col(x, batch: 1, g, col: col, colStride: colStride)
}

/// Whether im2col and col2im run CLoweringKernels' AVX-512 loops for 3-wide kernels at stride 2:
/// where the CPU has AVX-512 (tests turn it off to check the Swift loops that run elsewhere).
nonisolated(unsafe) package var loweringUsesAVX512 = acon_im2col_w3s2_available()

/// Lowers a batch to one column matrix, in parallel over its rows.
/// - Parameters:
///   - x: `[N, C, H, W]`.
///   - n: N, the samples in the batch.
///   - g: the window's geometry over one `[C, H, W]` sample.
///   - col: `[C·KH·KW, N·OH·OW]` with row stride `colStride` (≥ N·OH·OW): sample s fills
///     columns `s·OH·OW ..< (s+1)·OH·OW` of every row. Padding reads as 0.
///   - colStride: elements between the starts of consecutive rows of `col`.
public func im2col(
  _ x: UnsafePointer<Float>, batch n: Int, _ g: ConvGeometry, col: UnsafeMutablePointer<Float>, colStride: Int
) {
  // Two ways to the same bits. Copying image rows wins where rows are contiguous (stride 1) or
  // long; a per-element gather table wins on short strided rows, where the per-row bookkeeping
  // costs more than the copy (measured on the seed layers, batch 64, one thread: conv1 3×32×32
  // 0.59 → 0.23 ms and conv2 15×15 outputs 1.68 → 1.36 ms by rows; conv3 7×7 outputs 0.61 vs
  // 0.67 ms, conv4 4×4 0.21 vs 0.39 ms for the table). For 3-wide kernels at stride 2 on short
  // rows, filling the three taps' rows in one pass beats the table (conv3, batch 64, two
  // threads: 0.41 → 0.34 ms; `acon-bench --filter im2col`).
  if g.isPointwise {
    pointwiseColumns(x, batch: n, g, col: col, colStride: colStride)
  } else if g.kernelW == 3 && g.strideW == 2 && loweringUsesAVX512 {
    // The same values, 16 output columns a vector (CLoweringKernels): seed conv2 (64×32×32×32 →
    // 15×15), one thread, 2.4 → 1.3 ms; conv3 (→ 7×7) 1.4 → 0.65 ms.
    let xs = UncheckedSendable(x), cs = UncheckedSendable(col)
    parallelFor(g.channels * g.kernelH) { units in
      acon_im2col_w3s2(xs.value, n, g.channels, g.height, g.width, g.kernelH, g.strideH, g.padH, g.padW, g.outH,
        g.outW, cs.value, colStride, units.lowerBound, units.upperBound)
    }
  } else if g.kernelW == 3 && g.strideW == 2 && g.outW < 12 {
    im2colWidth3Stride2(x, batch: n, g, col: col, colStride: colStride)
  } else if g.strideW == 1 || g.outW >= 12 {
    im2colByRows(x, batch: n, g, col: col, colStride: colStride)
  } else {
    im2colByTable(x, batch: n, g, col: col, colStride: colStride)
  }
}

/// im2col of a 1×1 window at stride 1 without padding: row c of the column matrix is plane c
/// of every sample in turn, one contiguous copy per (c, sample); in parallel over rows.
private func pointwiseColumns(
  _ x: UnsafePointer<Float>, batch n: Int, _ g: ConvGeometry, col: UnsafeMutablePointer<Float>, colStride: Int
) {
  let plane = g.height * g.width, sampleSize = g.channels * plane
  let xs = UncheckedSendable(x), cs = UncheckedSendable(col)
  parallelFor(g.channels, minimumChunk: Swift.max(1, 4096 / Swift.max(1, n * plane))) { rows in
    for c in rows {
      for s in 0..<n {
        (cs.value + c * colStride + s * plane).update(from: xs.value + s * sampleSize + c * plane, count: plane)
      }
    }
  }
}

/// col2im of a 1×1 window at stride 1 without padding (see `pointwiseColumns`): each element
/// of dx gets its one column entry, copied or added; in parallel over channels.
private func pointwiseColumns(
  _ col: UnsafePointer<Float>, colStride: Int, batch n: Int, _ g: ConvGeometry, dx: UnsafeMutablePointer<Float>,
  accumulate: Bool
) {
  let plane = g.height * g.width, sampleSize = g.channels * plane
  let cs = UncheckedSendable(col), ds = UncheckedSendable(dx)
  parallelFor(g.channels, minimumChunk: Swift.max(1, 4096 / Swift.max(1, n * plane))) { channels in
    for c in channels {
      for s in 0..<n {
        let src = cs.value + c * colStride + s * plane, dst = ds.value + s * sampleSize + c * plane
        if accumulate {
          for i in 0..<plane { dst[i] += src[i] }
        } else {
          dst.update(from: src, count: plane)
        }
      }
    }
  }
}

/// im2col by a gather table: the input offset of each of a row's OH·OW outputs, shared by the
/// samples.
private func im2colByTable(
  _ x: UnsafePointer<Float>, batch n: Int, _ g: ConvGeometry, col: UnsafeMutablePointer<Float>, colStride: Int
) {
  let p = g.outH * g.outW
  let kk = g.kernelH * g.kernelW, plane = g.height * g.width, sampleSize = g.channels * plane
  let xs = UncheckedSendable(x), cs = UncheckedSendable(col)
  // Each worker writes whole rows, so its writes stream through contiguous memory. A row's
  // gather pattern (which input offset feeds output column p) is the same for every sample.
  parallelFor(g.colRows) { rows in
    withUnsafeTemporaryAllocation(of: Int32.self, capacity: Swift.max(p, 1)) { table in
      var lastKernelIndex = -1
      for row in rows {
        let c = row / kk, kernelIndex = row % kk
        if kernelIndex != lastKernelIndex {
          fillGatherTable(table.baseAddress!, g, ki: kernelIndex / g.kernelW, kj: kernelIndex % g.kernelW)
          lastKernelIndex = kernelIndex
        }
        let t = table.baseAddress!
        for s in 0..<n {
          let xc = xs.value + s * sampleSize + c * plane
          let dst = cs.value + row * colStride + s * p
          for q in 0..<p {
            let i = t[q]
            // Padding: index −1 reads as 0. Clamp for the load, select for the value.
            let v = xc[Int(Swift.max(i, 0))]
            dst[q] = i >= 0 ? v : 0
          }
        }
      }
    }
  }
}


/// im2col by image rows: output row i of column row (c, ki, kj) is input row i·sh − ph + ki at
/// columns j·sw − pw + kj, one contiguous copy for stride 1.
private func im2colByRows(
  _ x: UnsafePointer<Float>, batch n: Int, _ g: ConvGeometry, col: UnsafeMutablePointer<Float>, colStride: Int
) {
  let oh = g.outH, ow = g.outW, p = oh * ow
  let kk = g.kernelH * g.kernelW, plane = g.height * g.width, sampleSize = g.channels * plane
  let xs = UncheckedSendable(x), cs = UncheckedSendable(col)
  // Each worker writes whole rows, so its writes stream through contiguous memory; zeros where
  // the window lies in the padding.
  parallelFor(g.colRows) { rows in
    for row in rows {
      let c = row / kk, ki = (row % kk) / g.kernelW, kj = row % g.kernelW
      let (ilo, ihi) = g.rowWindow(ki), (jlo, jhi) = g.columnWindow(kj), m = jhi - jlo
      for s in 0..<n {
        let xc = xs.value + s * sampleSize + c * plane
        let dst = cs.value + row * colStride + s * p
        for i in 0..<oh {
          let d = dst + i * ow
          guard i >= ilo && i < ihi && m > 0 else {
            d.update(repeating: 0, count: ow)
            continue
          }
          // The input element of output column jlo + j is src[j·sw].
          let src = xc + (i * g.strideH - g.padH + ki) * g.width + jlo * g.strideW - g.padW + kj
          for j in 0..<jlo { d[j] = 0 }
          switch g.strideW {
          case 1: copyStrided(d + jlo, src, count: m, stride: 1)
          case 2: copyStrided(d + jlo, src, count: m, stride: 2)
          default: copyStrided(d + jlo, src, count: m, stride: g.strideW)
          }
          for j in jhi..<ow { d[j] = 0 }
        }
      }
    }
  }
}

/// For kernel offset (ki, kj): the input offset `h·W + w` that feeds each output position
/// `i·OW + j`, or −1 where it falls in the padding. `table` holds OH·OW entries.
@inline(__always) func fillGatherTable(_ table: UnsafeMutablePointer<Int32>, _ g: ConvGeometry, ki: Int, kj: Int) {
  let ow = g.outW
  for i in 0..<g.outH {
    let h = i * g.strideH - g.padH + ki
    for j in 0..<ow {
      let w = j * g.strideW - g.padW + kj
      table[i * ow + j] = (h >= 0 && h < g.height && w >= 0 && w < g.width) ? Int32(h * g.width + w) : -1
    }
  }
}

/// `d[j] = src[j·stride]` for j in 0..<count (inlined, so a constant stride specialises it).
@inline(__always) private func copyStrided(
  _ d: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, count: Int, stride: Int
) {
  for j in 0..<count { d[j] = src[j &* stride] }
}

/// `d[j·stride] += src[j]` for j in 0..<count.
@inline(__always) private func addStrided(
  _ d: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, count: Int, stride: Int
) {
  for j in 0..<count { d[j &* stride] += src[j] }
}

extension ConvGeometry {
  /// The output rows `lo..<hi` whose input row `i·strideH − padH + ki` lies inside the image.
  @inline(__always) func rowWindow(_ ki: Int) -> (Int, Int) {
    Self.window(out: outH, size: height, stride: strideH, pad: padH, offset: ki)
  }

  /// The output columns `lo..<hi` whose input column `j·strideW − padW + kj` lies inside the image.
  @inline(__always) func columnWindow(_ kj: Int) -> (Int, Int) {
    Self.window(out: outW, size: width, stride: strideW, pad: padW, offset: kj)
  }

  /// `j` is in `lo..<hi` exactly when `0 ≤ j < out` and `0 ≤ j·stride − pad + offset < size`.
  @inline(__always) static func window(out: Int, size: Int, stride: Int, pad: Int, offset: Int) -> (Int, Int) {
    let below = pad - offset  // j·stride ≥ below
    let lo = Swift.min(out, below <= 0 ? 0 : (below + stride - 1) / stride)
    let last = size - 1 + pad - offset  // j·stride ≤ last
    let hi = last < 0 ? 0 : Swift.min(out, last / stride + 1)
    return (lo, Swift.max(lo, hi))
  }
}

/// Adds columns back into one sample: the adjoint of `im2col`.
/// - Parameters:
///   - col: `[C·KH·KW, OH·OW]` with row stride `colStride`.
///   - colStride: elements between the starts of consecutive rows of `col`.
///   - g: the window's geometry over `[C, H, W]`.
///   - dx: `[C, H, W]` of one sample; accumulated into (`+=`), so zero it first.
public func col2im(
  _ col: UnsafePointer<Float>, colStride: Int, _ g: ConvGeometry, dx: UnsafeMutablePointer<Float>
) {
  col2im(col, colStride: colStride, batch: 1, g, dx: dx)
}

/// Adds a batch's columns back into it, in parallel over channels: the adjoint of the batched
/// `im2col`. Each element's sum runs in a fixed order (kernel offsets in order, at most one term
/// each), whatever the thread count.
/// - Parameters:
///   - col: `[C·KH·KW, N·OH·OW]` with row stride `colStride`.
///   - colStride: elements between the starts of consecutive rows of `col`.
///   - n: N, the samples in the batch.
///   - g: the window's geometry over one `[C, H, W]` sample.
///   - dx: `[N, C, H, W]`; accumulated into (`+=`), so zero it first, or pass
///     `accumulate: false` to overwrite it (each plane is then zeroed just before its sums,
///     while it is in cache, which saves a pass over dx).
///   - accumulate: add into `dx` (the default) or overwrite it.
public func col2im(
  _ col: UnsafePointer<Float>, colStride: Int, batch n: Int, _ g: ConvGeometry, dx: UnsafeMutablePointer<Float>,
  accumulate: Bool = true
) {
  // As for im2col, rows where they are contiguous (conv1 0.57 → 0.27 ms; on strided rows the
  // table is as fast or faster), and the same bits either way. For 3-wide kernels at stride 1,
  // one output-stationary pass per input row beats rows (resnet.3x3, batch 32, two threads:
  // 9.7 → 7.7 ms; one thread 17.5 → 11.7 ms). At stride 2 the same idea in Swift measured slower
  // than the table; in AVX-512 it is faster from 8 columns on.
  if g.isPointwise {
    pointwiseColumns(col, colStride: colStride, batch: n, g, dx: dx, accumulate: accumulate)
  } else if g.kernelW == 3 && g.strideW == 1 {
    col2imWidth3Stride1(col, colStride: colStride, batch: n, g, dx: dx, accumulate: accumulate)
  } else if g.kernelW == 3 && g.strideW == 2 && g.width >= 8 && loweringUsesAVX512 {
    // Output-stationary along each input row, 16 columns a vector (CLoweringKernels), the same
    // bits as the table: seed conv2 (64×32×32×32 → 15×15), two threads, 1.36–1.52 → 0.38–0.42 ms;
    // conv3 (15 wide) 0.45 → 0.19–0.20 ms. On rows under 8 columns the table is ahead (conv4,
    // 7 wide: 0.155 against 0.21 ms; one thread in C, 64 channels of 5 to 17 square: even at 8).
    let cs = UncheckedSendable(col), ds = UncheckedSendable(dx)
    parallelFor(g.channels) { channels in
      acon_col2im_w3s2(cs.value, colStride, n, g.channels, g.height, g.width, g.kernelH, g.strideH, g.padH, g.padW,
        g.outH, g.outW, ds.value, accumulate, channels.lowerBound, channels.upperBound)
    }
  } else if g.strideW == 1 {
    col2imByRows(col, colStride: colStride, batch: n, g, dx: dx, accumulate: accumulate)
  } else {
    col2imByTable(col, colStride: colStride, batch: n, g, dx: dx, accumulate: accumulate)
  }
}

/// col2im by image rows (see `im2colByRows`).
private func col2imByRows(
  _ col: UnsafePointer<Float>, colStride: Int, batch n: Int, _ g: ConvGeometry, dx: UnsafeMutablePointer<Float>,
  accumulate: Bool
) {
  let ow = g.outW, p = g.outH * ow, kk = g.kernelH * g.kernelW
  let plane = g.height * g.width, sampleSize = g.channels * plane
  let cs = UncheckedSendable(col), ds = UncheckedSendable(dx)
  parallelFor(g.channels) { channels in
    for c in channels {
      for s in 0..<n {
        let dxc = ds.value + s * sampleSize + c * plane
        if !accumulate { dxc.update(repeating: 0, count: plane) }
        for k in 0..<kk {
          let ki = k / g.kernelW, kj = k % g.kernelW
          let (ilo, ihi) = g.rowWindow(ki), (jlo, jhi) = g.columnWindow(kj), m = jhi - jlo
          if m == 0 { continue }
          let src = cs.value + (c * kk + k) * colStride + s * p
          for i in ilo..<ihi {
            // Output column jlo + j of row i adds into d[j·sw] of input row i·sh − ph + ki.
            let d = dxc + (i * g.strideH - g.padH + ki) * g.width + jlo * g.strideW - g.padW + kj
            let from = src + i * ow + jlo
            switch g.strideW {
            case 1: addStrided(d, from, count: m, stride: 1)
            case 2: addStrided(d, from, count: m, stride: 2)
            default: addStrided(d, from, count: m, stride: g.strideW)
            }
          }
        }
      }
    }
  }
}

/// col2im by gather tables, one per kernel offset (see `im2colByTable`).
private func col2imByTable(
  _ col: UnsafePointer<Float>, colStride: Int, batch n: Int, _ g: ConvGeometry, dx: UnsafeMutablePointer<Float>,
  accumulate: Bool
) {
  let p = g.outH * g.outW, kk = g.kernelH * g.kernelW
  let plane = g.height * g.width, sampleSize = g.channels * plane
  let cs = UncheckedSendable(col), ds = UncheckedSendable(dx)
  parallelFor(g.channels) { channels in
    withUnsafeTemporaryAllocation(of: Int32.self, capacity: Swift.max(kk * p, 1)) { tables in
      for k in 0..<kk { fillGatherTable(tables.baseAddress! + k * p, g, ki: k / g.kernelW, kj: k % g.kernelW) }
      for c in channels {
        for s in 0..<n {
          let dxc = ds.value + s * sampleSize + c * plane
          if !accumulate { dxc.update(repeating: 0, count: plane) }
          for k in 0..<kk {
            let src = cs.value + (c * kk + k) * colStride + s * p
            let t = tables.baseAddress! + k * p
            for q in 0..<p where t[q] >= 0 { dxc[Int(t[q])] += src[q] }
          }
        }
      }
    }
  }
}

// MARK: - 3-wide kernels

/// im2col for kernels 3 wide at stride 2 on short rows: one pass over each input row fills the
/// three column rows (c, ki, 0), (c, ki, 1), (c, ki, 2) of an output row, so the bookkeeping is
/// paid once per three rows and the interior loop has no branches. Same values as the others.
// x [N, C, H, W] → col [C·KH·3, N·P] (row stride colStride), for g.kernelW == 3, g.strideW == 2.
private func im2colWidth3Stride2(
  _ x: UnsafePointer<Float>, batch n: Int, _ g: ConvGeometry, col: UnsafeMutablePointer<Float>, colStride: Int
) {
  let oh = g.outH, ow = g.outW, p = oh * ow, kh = g.kernelH, wd = g.width, pw = g.padW
  let plane = g.height * wd, sampleSize = g.channels * plane
  // Output columns jlo..<jhi have all three taps 2j − pw + 0, 1, 2 inside the row.
  let jlo = Swift.min(ow, (pw + 1) / 2), last = wd - 3 + pw
  let jhi = Swift.max(jlo, last < 0 ? 0 : Swift.min(ow, last / 2 + 1))
  let xs = UncheckedSendable(x), cs = UncheckedSendable(col)
  // A unit is (c, ki): the three column rows (c·KH + ki)·3 + 0, 1, 2.
  parallelFor(g.channels * kh) { units in
    for unit in units {
      let c = unit / kh, ki = unit % kh
      let (ilo, ihi) = g.rowWindow(ki)
      for s in 0..<n {
        let xc = xs.value + s * sampleSize + c * plane
        let a = cs.value + 3 * unit * colStride + s * p, b = a + colStride, e = b + colStride
        for i in 0..<oh {
          let o = i * ow
          guard i >= ilo && i < ihi else {
            (a + o).update(repeating: 0, count: ow)
            (b + o).update(repeating: 0, count: ow)
            (e + o).update(repeating: 0, count: ow)
            continue
          }
          // Tap kj of output column j reads row[2j − pw + kj].
          let row = xc + (i * g.strideH - g.padH + ki) * wd
          @inline(__always) func tap(_ j: Int, _ kj: Int) -> Float {
            let w = 2 * j - pw + kj
            return w >= 0 && w < wd ? row[w] : 0
          }
          for j in 0..<jlo { a[o + j] = tap(j, 0); b[o + j] = tap(j, 1); e[o + j] = tap(j, 2) }
          let base = row - pw
          for j in jlo..<jhi {
            a[o + j] = base[2 &* j]
            b[o + j] = base[2 &* j &+ 1]
            e[o + j] = base[2 &* j &+ 2]
          }
          for j in jhi..<ow { a[o + j] = tap(j, 0); b[o + j] = tap(j, 1); e[o + j] = tap(j, 2) }
        }
      }
    }
  }
}

/// col2im for kernels 3 wide at stride 1, output-stationary along each input row: element w
/// of an input row takes the terms of kernel row ki in kj order, A[w+pw], B[w+pw−1], C[w+pw−2]
/// (where those output columns exist), so each element's sum runs in the same order as in the
/// other paths (kernel offsets in order) and the interior loop has no branches.
// col [C·KH·3, N·P] (row stride colStride) → dx [N, C, H, W] (+=), for g.kernelW == 3, g.strideW == 1.
private func col2imWidth3Stride1(
  _ col: UnsafePointer<Float>, colStride: Int, batch n: Int, _ g: ConvGeometry, dx: UnsafeMutablePointer<Float>,
  accumulate: Bool
) {
  let oh = g.outH, ow = g.outW, p = oh * ow, kh = g.kernelH, wd = g.width, pw = g.padW
  let plane = g.height * wd, sampleSize = g.channels * plane
  // All three terms exist for w in wlo..<whi.
  let wlo = Swift.min(wd, Swift.max(0, 2 - pw)), whi = Swift.max(wlo, Swift.min(wd, ow - pw))
  let cs = UncheckedSendable(col), ds = UncheckedSendable(dx)
  parallelFor(g.channels) { channels in
    for c in channels {
      for s in 0..<n {
        let dxc = ds.value + s * sampleSize + c * plane
        if !accumulate { dxc.update(repeating: 0, count: plane) }
        for ki in 0..<kh {
          let (ilo, ihi) = g.rowWindow(ki)
          let first = cs.value + 3 * (c * kh + ki) * colStride + s * p
          for i in ilo..<ihi {
            let r = dxc + (i * g.strideH - g.padH + ki) * wd
            let a = first + i * ow, b = a + colStride, e = b + colStride
            @inline(__always) func element(_ w: Int) {
              var v = r[w]
              let j = w + pw
              if j < ow { v += a[j] }
              if j >= 1 && j - 1 < ow { v += b[j - 1] }
              if j >= 2 && j - 2 < ow { v += e[j - 2] }
              r[w] = v
            }
            for w in 0..<wlo { element(w) }
            let a0 = a + pw, b0 = b + pw - 1, e0 = e + pw - 2
            for w in wlo..<whi { r[w] = ((r[w] + a0[w]) + b0[w]) + e0[w] }
            for w in whi..<wd { element(w) }
          }
        }
      }
    }
  }
}
