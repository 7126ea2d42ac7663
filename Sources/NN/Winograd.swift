// Winograd: Conv2D's Winograd path for 3×3, stride-1 convolutions without groups (Lavin & Gray
// 2016), with output tiles of m×m, m = 2 (F(2×2, 3×3)) or 4 (F(4×4, 3×3)); P = (m+2)² points.
// Per block of output tiles: the input transform (V = Bᵀ d B per (m+2)×(m+2) patch), P GEMMs
// M_ξ = U_ξ · V_ξ (one per Winograd point ξ, through cblas_sgemm), the output transform
// (Y = Aᵀ M A per m×m tile): 16 multiplications per 4 outputs instead of 36 (2.25× fewer), or 36
// per 16 instead of 144 (4×). dx is the same pass over dy with the rotated, transposed filter;
// dW takes dU_ξ += D_ξ · V_ξᵀ over the blocks (D = A dY Aᵀ) and then dW += Gᵀ dU G. The
// transforms are C kernels (Sources/CWinogradKernels), threaded here over channels; the GEMMs
// run outside any parallel loop. Blocks are sized so that V and M stay in cache
// (`Winograd.blockBytes`), but hold at least `Winograd.minimumBlockTiles` tiles (thin GEMMs cost
// more than the cache misses).
//
// Shapes: x [N, C, H, W], weight [K, C, 3, 3], y [N, K, OH, OW] with OH = H + 2·ph − 2 and
// OW = W + 2·pw − 2 (0 ≤ ph, pw ≤ 2); tiles ⌈OH/m⌉ × ⌈OW/m⌉ per sample; U [P, K, C];
// a block of T tiles has V [P, C, T] and M [P, K, T], their points `wino_point_stride` floats
// apart (C·T or K·T padded to an odd number of cache lines, so that a transform's P streams do
// not share cache sets).
import CWinogradKernels
import TensorCore

/// How `Conv2D` computes a convolution.
public enum ConvAlgorithm: String, Sendable, CaseIterable {
  /// Winograd where it applies and pays (3×3, stride 1, no groups, at least
  /// `Winograd.autoMinimumChannels` input and output channels, and an output of at least 5×5,
  /// or 4×4 with at least 256 channels), im2col + GEMM otherwise: F(4×4, 3×3) on outputs 16 to
  /// 64 wide (and at least 16 high) with at most 128 channels, F(2×2, 3×3) elsewhere.
  case auto
  /// Always im2col + GEMM (the 1×1 path skips im2col).
  case im2col
  /// Winograd F(2×2, 3×3) wherever it applies (3×3, stride 1, no groups, padding ≤ 2, output
  /// at most `Winograd.maximumWidth` wide), im2col elsewhere. Its results differ from im2col's
  /// by Float rounding (docs/winograd.md).
  case winograd
  /// Winograd F(4×4, 3×3) wherever Winograd applies, im2col elsewhere: 4× fewer multiplications
  /// than im2col (F(2×2, 3×3): 2.25×), for rounding errors about ten times F(2×2, 3×3)'s
  /// (docs/winograd.md).
  case winograd4x4
}

/// Winograd F(2×2, 3×3) and F(4×4, 3×3) convolution: the driver of `Conv2D`'s Winograd path.
public enum Winograd {
  /// Bytes of V and M per block of tiles: small enough to stay in the last-level cache between
  /// the transforms and the GEMMs, large enough for the GEMMs to run near sgemm's peak.
  nonisolated(unsafe) public static var blockBytes = 2 << 20
  /// `ConvAlgorithm.auto` picks Winograd only with at least this many input and output channels:
  /// below it the GEMMs are too thin for the saved multiplications to show.
  nonisolated(unsafe) public static var autoMinimumChannels = 16

  /// The widest output map Winograd runs: the transforms keep four (F(4×4): six) rows of the
  /// map on their thread's stack (about 16 · width bytes, 64 KiB here; F(4×4) 96 KiB); wider
  /// maps run im2col.
  public static let maximumWidth = 4096

  /// Whether F(2×2, 3×3) can run a convolution of this shape.
  static func applies(kernel: (Int, Int), stride: (Int, Int), padding: (Int, Int), groups: Int) -> Bool {
    kernel == (3, 3) && stride == (1, 1) && groups == 1 && (0...2).contains(padding.0) && (0...2).contains(padding.1)
  }

  /// The geometry of one pass with m×m output tiles (m = 2 or 4): input [n, c, h, w] with
  /// padding (ph, pw), k output channels.
  static func geometry(n: Int, c: Int, h: Int, w: Int, ph: Int, pw: Int, k: Int, tile m: Int) -> WinoGeometry {
    let oh = h + 2 * ph - 2, ow = w + 2 * pw - 2
    return WinoGeometry(
      n: n, c: c, h: h, w: w, ph: ph, pw: pw, k: k, oh: oh, ow: ow, th: (oh + m - 1) / m, tw: (ow + m - 1) / m, m: m)
  }

  /// The Winograd points of m×m tiles: (m + 2)², 16 or 36.
  static func points(tile m: Int) -> Int { (m + 2) * (m + 2) }

  /// The fewest tiles per block (unless the whole batch has fewer) in a layer with at least 64
  /// input and output channels: a block that fits `blockBytes` would hold so few tiles that the
  /// GEMMs ([K, C] · [C, T]) turn thin and each call's threading costs more than the cache saves
  /// (measured: ResNet's 64-channel 56×56 layer takes 20–28% less time than with 256 tiles, the
  /// 32×32 to 8×8 layers of ResNet-18 the same or a little less). Narrower layers, whose GEMMs are
  /// bound by memory and gain more from V and M staying in cache, take at most 256.
  nonisolated(unsafe) public static var minimumBlockTiles = 1024

  /// Tile rows per block: V and M of one block within `blockBytes`, but at least the tile floor
  /// (`minimumBlockTiles`, at most 256 below 64 channels) and one row, at most the whole batch.
  static func blockRows(_ g: WinoGeometry) -> Int {
    let perRow = points(tile: g.m) * (g.c + g.k) * g.tw * MemoryLayout<Float>.size
    let floor = Swift.min(g.c, g.k) >= 64 ? minimumBlockTiles : Swift.min(minimumBlockTiles, 256)
    let byBytes = blockBytes / Swift.max(1, perRow), byTiles = (floor + g.tw - 1) / Swift.max(1, g.tw)
    return Swift.max(1, Swift.min(g.n * g.th, Swift.max(byBytes, byTiles)))
  }

  /// The forward filter transform U [P, K, C] of weight [K, C, 3, 3] for m×m tiles; with
  /// `flipped`, weight is read as [C, K, 3, 3] rotated by 180°: the filter that takes
  /// dy [N, C, ·] to dx [N, K, ·].
  static func transformFilter(_ w: UnsafePointer<Float>, k: Int, c: Int, flipped: Bool, tile m: Int,
    into u: UnsafeMutablePointer<Float>) {
    // Rows of U split between the threads (kernels are independent: the same bits for any split).
    parallelFor(k, minimumChunk: Swift.max(1, 4096 / Swift.max(1, c))) { r in
      wino_filter_transform(w, k, c, flipped ? 1 : 0, m, r.lowerBound, r.upperBound, u)
    }
  }

  /// y [n, k, oh, ow] = the 3×3 convolution of x [n, c, h, w] whose filter transform is
  /// u [P, k, c] (+ bias [k], then ReLU when `relu`). Overwrites y.
  static func convolve(_ g: WinoGeometry, x: UnsafePointer<Float>, u: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
    relu: Bool, y: UnsafeMutablePointer<Float>, workspace: ConvWorkspace) {
    let blockRows = blockRows(g), rowCount = g.n * g.th, points = points(tile: g.m)
    let v = reuse(&workspace.winogradV, shape: [points, wino_point_stride(g.c * blockRows * g.tw)]).data
    let m = reuse(&workspace.winogradM, shape: [points, wino_point_stride(g.k * blockRows * g.tw)]).data
    var row0 = 0
    while row0 < rowCount {
      let rows = Swift.min(blockRows, rowCount - row0), t = rows * g.tw, r0 = row0
      // V [P, C, T]
      parallelFor(g.c) { cs in
        var gl = g
        wino_input_transform(&gl, x, r0, rows, cs.lowerBound, cs.upperBound, v)
      }
      // M_ξ [K, T] = U_ξ [K, C] · V_ξ [C, T] (V's and M's points a padded stride apart)
      let vs = wino_point_stride(g.c * t), ms = wino_point_stride(g.k * t)
      for xi in 0..<points {
        BLAS.sgemm(m: g.k, n: t, k: g.c, a: u + xi * g.k * g.c, b: v + xi * vs, c: m + xi * ms)
      }
      // y tiles of the block = Aᵀ M A (+ bias, ReLU)
      parallelFor(g.k) { ks in
        var gl = g
        wino_output_transform(&gl, m, r0, rows, ks.lowerBound, ks.upperBound, bias, relu ? 1 : 0, y)
      }
      row0 += rows
    }
  }

  /// dw [k, c, 3, 3] += the weight gradient of the 3×3 convolution of x [n, c, h, w] for the
  /// output gradient dy [n, k, oh, ow]: dU_ξ [K, C] = Σ_blocks D_ξ [K, T] · V_ξᵀ [T, C], then
  /// dw += Gᵀ dU G.
  static func filterGradient(_ g: WinoGeometry, x: UnsafePointer<Float>, dy: UnsafePointer<Float>,
    dw: UnsafeMutablePointer<Float>, workspace: ConvWorkspace) {
    let blockRows = blockRows(g), rowCount = g.n * g.th, points = points(tile: g.m)
    let v = reuse(&workspace.winogradV, shape: [points, wino_point_stride(g.c * blockRows * g.tw)]).data
    let d = reuse(&workspace.winogradM, shape: [points, wino_point_stride(g.k * blockRows * g.tw)]).data
    let du = reuse(&workspace.winogradU, shape: [points, g.k, g.c]).data
    var row0 = 0
    while row0 < rowCount {
      let rows = Swift.min(blockRows, rowCount - row0), t = rows * g.tw, r0 = row0
      parallelFor(g.c) { cs in
        var gl = g
        wino_input_transform(&gl, x, r0, rows, cs.lowerBound, cs.upperBound, v)
      }
      parallelFor(g.k) { ks in
        var gl = g
        wino_gradient_transform(&gl, dy, r0, rows, ks.lowerBound, ks.upperBound, d)
      }
      // dU_ξ [K, C] (+)= D_ξ [K, T] · V_ξᵀ [T, C]; the first block overwrites
      let vs = wino_point_stride(g.c * t), ds = wino_point_stride(g.k * t)
      for xi in 0..<points {
        BLAS.sgemm(transB: true, m: g.k, n: g.c, k: t, a: d + xi * ds, b: v + xi * vs,
          beta: row0 == 0 ? 0 : 1, c: du + xi * g.k * g.c)
      }
      row0 += rows
    }
    parallelFor(g.k, minimumChunk: Swift.max(1, 4096 / Swift.max(1, g.c))) { r in
      wino_filter_gradient(du, g.k, g.c, g.m, r.lowerBound, r.upperBound, dw)
    }
  }
}
