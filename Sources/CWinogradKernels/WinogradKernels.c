// WinogradKernels.c: the F(2×2, 3×3) transforms (see include/CWinogradKernels.h; F(4×4, 3×3) is
// Winograd4Kernels.c, which the entry points here hand a geometry with m = 4), with
//   Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]      (input: V = Bᵀ d B, 4×4 → 4×4)
//   G  = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]                 (filter: U = G g Gᵀ, 3×3 → 4×4)
//   Aᵀ = [1 1 1 0; 0 1 −1 −1]                          (output: Y = Aᵀ M A, 4×4 → 2×2)
// and for the weight gradient dL/dM = A dY Aᵀ (2×2 → 4×4) and dL/dg = Gᵀ dU G (4×4 → 3×3).
// Point ξ = 4·i + j is row i, column j of the 4×4 matrices.
//
// The tile transforms work a tile row at a time: the 4 input rows it reads (or the 2 output
// rows it writes) go through a zero-padded row buffer on the stack, so the loop over the tiles
// of the row has no bounds tests and vectorises (its loads have stride 2). Each function has a
// baseline body and, on x86-64, an AVX-512 copy of the same body, chosen at run time.
#include "WinogradInternal.h"

ptrdiff_t wino_point_stride(ptrdiff_t elements) {
  // Whole 64-byte lines, an odd number of them: stream ξ starts ξ·(odd) lines after stream 0, so
  // the 16 (or 36) streams of a tile transform fall in different sets of the L1 and L2 caches.
  // A stride of a multiple of 4 KB (64 channels × 128 tiles) put all 16 in one 12-way L1 set:
  // the input transform of ResNet-18's 64-channel layers ran 1.4× slower, the 8×8 maps' 1.8×.
  const ptrdiff_t lines = (elements + 15) / 16;
  return 16 * (lines % 2 == 0 ? lines + 1 : lines);
}

#if defined(__x86_64__)
bool wino_has_avx512(void) {
  static int cached = -1;
  if (cached < 0) cached = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  return cached;
}
bool wino_has_avx2(void) {
  static int cached = -1;
  if (cached < 0) cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return cached;
}
#endif

// MARK: - Filter transforms (small: k·c kernels)
//
// Kernel (o, i) goes through the same float operations in every variant: the AVX-512 copy of the
// forward transform runs 16 kernels i ..< i + 16 of row o in the lanes of a vector (the weights
// gathered), in the order of the scalar body, with contraction off, so its U is the scalar loop's
// bits (4.5× faster on one Zen 4 core); the AVX2 copy does the same with 8 kernels a vector (on
// one first-generation Zen core, 512 × 512 kernels: 16.2 → 4.1 ms). The gradient stays scalar:
// its dw is read and written with stride 9, and gathers and scatters of it ran slower than the
// loop.

// U[·, o, i] = G g Gᵀ for kernel (o, i), one at a time.
INLINE void filter_transform_one(const float *w, ptrdiff_t k, ptrdiff_t c, int flip, ptrdiff_t o, ptrdiff_t i,
                                 float *u) {
  const ptrdiff_t plane = k * c;
  float g[3][3];
  load_filter(w, k, c, o, i, flip, g);
  float t[4][3];  // G g
  for (int b = 0; b < 3; b++) {
    t[0][b] = g[0][b];
    t[1][b] = 0.5f * (g[0][b] + g[1][b] + g[2][b]);
    t[2][b] = 0.5f * (g[0][b] - g[1][b] + g[2][b]);
    t[3][b] = g[2][b];
  }
  float *dst = u + o * c + i;
  for (int a = 0; a < 4; a++) {  // (G g) Gᵀ
    dst[(4 * a + 0) * plane] = t[a][0];
    dst[(4 * a + 1) * plane] = 0.5f * (t[a][0] + t[a][1] + t[a][2]);
    dst[(4 * a + 2) * plane] = 0.5f * (t[a][0] - t[a][1] + t[a][2]);
    dst[(4 * a + 3) * plane] = t[a][2];
  }
}

// dw[o, i] += Gᵀ dU[·, o, i] G for kernel (o, i), one at a time.
INLINE void filter_gradient_one(const float *du, ptrdiff_t k, ptrdiff_t c, ptrdiff_t o, ptrdiff_t i, float *dw) {
  const ptrdiff_t plane = k * c;
  const float *src = du + o * c + i;
  float d[4][4];
  for (int a = 0; a < 4; a++)
    for (int b = 0; b < 4; b++) d[a][b] = src[(4 * a + b) * plane];
  float e[3][4];  // Gᵀ dU
  for (int b = 0; b < 4; b++) {
    e[0][b] = d[0][b] + 0.5f * (d[1][b] + d[2][b]);
    e[1][b] = 0.5f * (d[1][b] - d[2][b]);
    e[2][b] = 0.5f * (d[1][b] + d[2][b]) + d[3][b];
  }
  float *dst = dw + (o * c + i) * 9;
  for (int a = 0; a < 3; a++) {  // (Gᵀ dU) G
    dst[a * 3 + 0] += e[a][0] + 0.5f * (e[a][1] + e[a][2]);
    dst[a * 3 + 1] += 0.5f * (e[a][1] - e[a][2]);
    dst[a * 3 + 2] += 0.5f * (e[a][1] + e[a][2]) + e[a][3];
  }
}

#if defined(__x86_64__)
// Rows o0 ..< o1 of U: 16 kernels of a row at a time, gathered from w (stride 9 floats between
// kernels i and i + 1, or 9·k when flipped), the rest one by one.
AVX512 static void filter_transform_avx512(const float *w, ptrdiff_t k, ptrdiff_t c, int flip, ptrdiff_t o0,
                                           ptrdiff_t o1, float *u) {
#pragma STDC FP_CONTRACT OFF
  const ptrdiff_t plane = k * c;
  const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32((int)(flip ? 9 * k : 9)));
  const __m512 half = _mm512_set1_ps(0.5f);
  for (ptrdiff_t o = o0; o < o1; o++) {
    ptrdiff_t i = 0;
    for (; i + 16 <= c; i += 16) {
      const float *base = flip ? w + (i * k + o) * 9 : w + (o * c + i) * 9;
      __m512 g[3][3];
      for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
          g[a][b] = _mm512_i32gather_ps(idx, base + (flip ? (2 - a) * 3 + (2 - b) : a * 3 + b), 4);
      __m512 t[4][3];
      for (int b = 0; b < 3; b++) {
        t[0][b] = g[0][b];
        t[1][b] = _mm512_mul_ps(half, _mm512_add_ps(_mm512_add_ps(g[0][b], g[1][b]), g[2][b]));
        t[2][b] = _mm512_mul_ps(half, _mm512_add_ps(_mm512_sub_ps(g[0][b], g[1][b]), g[2][b]));
        t[3][b] = g[2][b];
      }
      float *dst = u + o * c + i;
      for (int a = 0; a < 4; a++) {
        _mm512_storeu_ps(dst + (4 * a + 0) * plane, t[a][0]);
        _mm512_storeu_ps(dst + (4 * a + 1) * plane,
                         _mm512_mul_ps(half, _mm512_add_ps(_mm512_add_ps(t[a][0], t[a][1]), t[a][2])));
        _mm512_storeu_ps(dst + (4 * a + 2) * plane,
                         _mm512_mul_ps(half, _mm512_add_ps(_mm512_sub_ps(t[a][0], t[a][1]), t[a][2])));
        _mm512_storeu_ps(dst + (4 * a + 3) * plane, t[a][2]);
      }
    }
    for (; i < c; i++) filter_transform_one(w, k, c, flip, o, i, u);
  }
}


// filter_transform_avx512 with 8 kernels a vector (AVX2 gathers), the same operations in the
// same order: the same bits.
AVX2 static void filter_transform_avx2(const float *w, ptrdiff_t k, ptrdiff_t c, int flip, ptrdiff_t o0,
                                       ptrdiff_t o1, float *u) {
#pragma STDC FP_CONTRACT OFF
  // w [k, c, 3, 3] (flipped: [c, k, 3, 3]) → u [16][k][c], rows o0 ..< o1
  const ptrdiff_t plane = k * c;
  const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                         _mm256_set1_epi32((int)(flip ? 9 * k : 9)));
  const __m256 half = _mm256_set1_ps(0.5f);
  for (ptrdiff_t o = o0; o < o1; o++) {
    ptrdiff_t i = 0;
    for (; i + 8 <= c; i += 8) {
      const float *base = flip ? w + (i * k + o) * 9 : w + (o * c + i) * 9;
      __m256 g[3][3];
      for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
          g[a][b] = _mm256_i32gather_ps(base + (flip ? (2 - a) * 3 + (2 - b) : a * 3 + b), idx, 4);
      __m256 t[4][3];
      for (int b = 0; b < 3; b++) {
        t[0][b] = g[0][b];
        t[1][b] = _mm256_mul_ps(half, _mm256_add_ps(_mm256_add_ps(g[0][b], g[1][b]), g[2][b]));
        t[2][b] = _mm256_mul_ps(half, _mm256_add_ps(_mm256_sub_ps(g[0][b], g[1][b]), g[2][b]));
        t[3][b] = g[2][b];
      }
      float *dst = u + o * c + i;
      for (int a = 0; a < 4; a++) {
        _mm256_storeu_ps(dst + (4 * a + 0) * plane, t[a][0]);
        _mm256_storeu_ps(dst + (4 * a + 1) * plane,
                         _mm256_mul_ps(half, _mm256_add_ps(_mm256_add_ps(t[a][0], t[a][1]), t[a][2])));
        _mm256_storeu_ps(dst + (4 * a + 2) * plane,
                         _mm256_mul_ps(half, _mm256_add_ps(_mm256_sub_ps(t[a][0], t[a][1]), t[a][2])));
        _mm256_storeu_ps(dst + (4 * a + 3) * plane, t[a][2]);
      }
    }
    for (; i < c; i++) filter_transform_one(w, k, c, flip, o, i, u);
  }
}
#endif

void wino_filter_transform(const float *w, ptrdiff_t k, ptrdiff_t c, int flip, ptrdiff_t m, ptrdiff_t o0,
                           ptrdiff_t o1, float *u) {
  if (m == 4) {
    wino4_filter_transform(w, k, c, flip, o0, o1, u);
    return;
  }
#if defined(__x86_64__)
  if (wino_has_avx512()) {
    filter_transform_avx512(w, k, c, flip, o0, o1, u);
    return;
  }
  if (wino_has_avx2()) {
    filter_transform_avx2(w, k, c, flip, o0, o1, u);
    return;
  }
#endif
  for (ptrdiff_t o = o0; o < o1; o++)
    for (ptrdiff_t i = 0; i < c; i++) filter_transform_one(w, k, c, flip, o, i, u);
}

void wino_filter_gradient(const float *du, ptrdiff_t k, ptrdiff_t c, ptrdiff_t m, ptrdiff_t o0, ptrdiff_t o1,
                          float *dw) {
  if (m == 4) {
    wino4_filter_gradient(du, k, c, o0, o1, dw);
    return;
  }
  for (ptrdiff_t o = o0; o < o1; o++)
    for (ptrdiff_t i = 0; i < c; i++) filter_gradient_one(du, k, c, o, i, dw);
}

// MARK: - Tile transforms

INLINE void input_body(const WinoGeometry *g, const float *x, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t c0,
                       ptrdiff_t c1, float *v) {
  const ptrdiff_t tw = g->tw, T = rows * tw, bw = 2 * tw + 2, plane = wino_point_stride(g->c * T);
  float buf[4 * bw];
  for (ptrdiff_t ci = c0; ci < c1; ci++) {
    for (ptrdiff_t r = row0; r < row0 + rows; r++) {
      const ptrdiff_t n = r / g->th, th = r % g->th;
      load_rows(x + (n * g->c + ci) * g->h * g->w, g->h, g->w, 2 * th - g->ph, 4, g->pw, bw, buf);
      float *vt = v + ci * T + (r - row0) * tw;
      const float *b0 = buf, *b1 = buf + bw, *b2 = buf + 2 * bw, *b3 = buf + 3 * bw;
      for (ptrdiff_t t = 0; t < tw; t++) {
        const ptrdiff_t j = 2 * t;
        float a[4][4];  // Bᵀ d: the rows combined, column by column
        for (int q = 0; q < 4; q++) {
          a[0][q] = b0[j + q] - b2[j + q];
          a[1][q] = b1[j + q] + b2[j + q];
          a[2][q] = b2[j + q] - b1[j + q];
          a[3][q] = b1[j + q] - b3[j + q];
        }
        for (int i = 0; i < 4; i++) {  // (Bᵀ d) B
          vt[(4 * i + 0) * plane + t] = a[i][0] - a[i][2];
          vt[(4 * i + 1) * plane + t] = a[i][1] + a[i][2];
          vt[(4 * i + 2) * plane + t] = a[i][2] - a[i][1];
          vt[(4 * i + 3) * plane + t] = a[i][1] - a[i][3];
        }
      }
    }
  }
}

INLINE void output_body(const WinoGeometry *g, const float *m, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t k0,
                        ptrdiff_t k1, const float *bias, int relu, float *y) {
  const ptrdiff_t tw = g->tw, T = rows * tw, plane = wino_point_stride(g->k * T), bw = 2 * tw;
  float buf[2 * bw];
  for (ptrdiff_t o = k0; o < k1; o++) {
    const float bv = bias ? bias[o] : 0.0f;
    for (ptrdiff_t r = row0; r < row0 + rows; r++) {
      const ptrdiff_t n = r / g->th, th = r % g->th;
      const float *mt = m + o * T + (r - row0) * tw;
      for (ptrdiff_t t = 0; t < tw; t++) {
        float s[2][4];  // Aᵀ M
        for (int q = 0; q < 4; q++) {
          const float m0 = mt[q * plane + t], m1 = mt[(4 + q) * plane + t];
          const float m2 = mt[(8 + q) * plane + t], m3 = mt[(12 + q) * plane + t];
          s[0][q] = m0 + m1 + m2;
          s[1][q] = m1 - m2 - m3;
        }
        for (int a = 0; a < 2; a++) {  // (Aᵀ M) A
          buf[a * bw + 2 * t] = s[a][0] + s[a][1] + s[a][2];
          buf[a * bw + 2 * t + 1] = s[a][1] - s[a][2] - s[a][3];
        }
      }
      store_rows(buf, bw, 2, y + (n * g->k + o) * g->oh * g->ow, g->oh, g->ow, 2 * th, bv, relu);
    }
  }
}

INLINE void gradient_body(const WinoGeometry *g, const float *dy, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t k0,
                          ptrdiff_t k1, float *d) {
  const ptrdiff_t tw = g->tw, T = rows * tw, bw = 2 * tw, plane = wino_point_stride(g->k * T);
  float buf[2 * bw];
  for (ptrdiff_t o = k0; o < k1; o++) {
    for (ptrdiff_t r = row0; r < row0 + rows; r++) {
      const ptrdiff_t n = r / g->th, th = r % g->th;
      load_rows(dy + (n * g->k + o) * g->oh * g->ow, g->oh, g->ow, 2 * th, 2, 0, bw, buf);
      float *dt = d + o * T + (r - row0) * tw;
      const float *b0 = buf, *b1 = buf + bw;
      for (ptrdiff_t t = 0; t < tw; t++) {
        const float p = b0[2 * t], q = b0[2 * t + 1], rr = b1[2 * t], s = b1[2 * t + 1];
        // A dY: rows (p, q), (p + r, q + s), (p − r, q − s), (−r, −s); then each row (x0, x1)
        // times Aᵀ: (x0, x0 + x1, x0 − x1, −x1).
        const float e[4][2] = {{p, q}, {p + rr, q + s}, {p - rr, q - s}, {-rr, -s}};
        for (int i = 0; i < 4; i++) {
          dt[(4 * i + 0) * plane + t] = e[i][0];
          dt[(4 * i + 1) * plane + t] = e[i][0] + e[i][1];
          dt[(4 * i + 2) * plane + t] = e[i][0] - e[i][1];
          dt[(4 * i + 3) * plane + t] = -e[i][1];
        }
      }
    }
  }
}

#if defined(__x86_64__)
AVX512 NO_CALLS static void input_avx512(const WinoGeometry *g, const float *x, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t c0,
                                ptrdiff_t c1, float *v) {
  input_body(g, x, row0, rows, c0, c1, v);
}

// input_body for tile rows of at most 16 tiles (maps up to 32 wide), one tile row per vector:
// the four input rows are masked loads of up to 34 columns (three vectors; a lane is a buffer
// column), combined by rows (Bᵀ d) as in input_body, then each combination's columns 2t,
// 2t + 1, 2t + 2 and 2t + 3 of tile t come from two-source permutes and a one-lane shift, so
// every output is the same two float operations on the same operands as input_body's: the
// same bits (contraction off). With the padded point stride, 1.8–2.6× faster than input_body on
// ResNet-18's 32×32, 16×16 and 8×8 layers (one thread); the stride gave most of that.
AVX512 NO_CALLS static void input_rows16_avx512(const WinoGeometry *g, const float *x, ptrdiff_t row0, ptrdiff_t rows,
                                                ptrdiff_t c0, ptrdiff_t c1, float *v) {
#pragma STDC FP_CONTRACT OFF
  const ptrdiff_t tw = g->tw, T = rows * tw, plane = wino_point_stride(g->c * T), bw = 2 * tw + 2;
  const __mmask16 sm = (__mmask16)((1u << tw) - 1u);
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const int vecs = bw > 32 ? 3 : bw > 16 ? 2 : 1;
  for (ptrdiff_t ci = c0; ci < c1; ci++) {
    for (ptrdiff_t r = row0; r < row0 + rows; r++) {
      const ptrdiff_t n = r / g->th, th = r % g->th, y0 = 2 * th - g->ph;
      const float *p = x + (n * g->c + ci) * g->h * g->w;
      __m512 b[4][3];
      for (int a = 0; a < 4; a++)
        for (int k = 0; k < 3; k++)
          b[a][k] = k < vecs ? input_row16(p, g->h, g->w, y0 + a, g->pw, k) : _mm512_setzero_ps();
      __m512 rowsBt[4][3];  // Bᵀ d, by buffer column
      for (int k = 0; k < 3; k++) {
        rowsBt[0][k] = _mm512_sub_ps(b[0][k], b[2][k]);
        rowsBt[1][k] = _mm512_add_ps(b[1][k], b[2][k]);
        rowsBt[2][k] = _mm512_sub_ps(b[2][k], b[1][k]);
        rowsBt[3][k] = _mm512_sub_ps(b[1][k], b[3][k]);
      }
      float *vt = v + ci * T + (r - row0) * tw;
      for (int i = 0; i < 4; i++) {
        const __m512 *a = rowsBt[i];
        const __m512 q0 = _mm512_permutex2var_ps(a[0], even, a[1]);  // lane t: column 2t
        const __m512 q1 = _mm512_permutex2var_ps(a[0], odd, a[1]);   // 2t + 1
        const __m512i hi = _mm512_castps_si512(a[2]);                // columns 32, 33
        const __m512 q2 = _mm512_castsi512_ps(_mm512_alignr_epi32(hi, _mm512_castps_si512(q0), 1));  // 2t + 2
        const __m512 q3 = _mm512_castsi512_ps(
            _mm512_alignr_epi32(_mm512_alignr_epi32(hi, hi, 1), _mm512_castps_si512(q1), 1));  // 2t + 3
        _mm512_mask_storeu_ps(vt + (4 * i + 0) * plane, sm, _mm512_sub_ps(q0, q2));
        _mm512_mask_storeu_ps(vt + (4 * i + 1) * plane, sm, _mm512_add_ps(q1, q2));
        _mm512_mask_storeu_ps(vt + (4 * i + 2) * plane, sm, _mm512_sub_ps(q2, q1));
        _mm512_mask_storeu_ps(vt + (4 * i + 3) * plane, sm, _mm512_sub_ps(q1, q3));
      }
    }
  }
}

// output_body for tile rows of at most 16 tiles (maps up to 32 wide), one tile row per vector:
// lane t holds tile t's 16 points (masked loads of M), Aᵀ M A gives four vectors (columns 2t and
// 2t + 1 of the tile's two output rows), two-source permutes interleave them into the output
// rows' two vectors, which take the bias and the ReLU and go straight to y (masked stores: no row
// buffer). Every output is the same float operations on the same operands as output_body and
// store_rows (contraction off; ReLU as a compare, so −0 and NaN come out as there): the same bits.
AVX512 NO_CALLS static void output_rows16_avx512(const WinoGeometry *g, const float *m, ptrdiff_t row0,
                                                 ptrdiff_t rows, ptrdiff_t k0, ptrdiff_t k1, const float *bias,
                                                 int relu, float *y) {
#pragma STDC FP_CONTRACT OFF
  const ptrdiff_t tw = g->tw, T = rows * tw, plane = wino_point_stride(g->k * T), ow = g->ow;
  const __mmask16 sm = (__mmask16)((1u << tw) - 1u), om0 = row_mask16(ow, 0), om1 = row_mask16(ow, 1);
  const __m512i lo = interleave_index(0), hi = interleave_index(1);
  for (ptrdiff_t o = k0; o < k1; o++) {
    const __m512 bv = _mm512_set1_ps(bias ? bias[o] : 0.0f);
    for (ptrdiff_t r = row0; r < row0 + rows; r++) {
      const ptrdiff_t n = r / g->th, th = r % g->th;
      const float *mt = m + o * T + (r - row0) * tw;
      __m512 s[2][4];  // Aᵀ M
      for (int q = 0; q < 4; q++) {
        const __m512 m0 = _mm512_maskz_loadu_ps(sm, mt + q * plane);
        const __m512 m1 = _mm512_maskz_loadu_ps(sm, mt + (4 + q) * plane);
        const __m512 m2 = _mm512_maskz_loadu_ps(sm, mt + (8 + q) * plane);
        const __m512 m3 = _mm512_maskz_loadu_ps(sm, mt + (12 + q) * plane);
        s[0][q] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
        s[1][q] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
      }
      float *dst = y + (n * g->k + o) * g->oh * ow + 2 * th * ow;
      for (int a = 0; a < 2 && 2 * th + a < g->oh; a++, dst += ow) {  // (Aᵀ M) A, + bias, ReLU
        const __m512 e = _mm512_add_ps(_mm512_add_ps(s[a][0], s[a][1]), s[a][2]);  // lane t: column 2t
        const __m512 f = _mm512_sub_ps(_mm512_sub_ps(s[a][1], s[a][2]), s[a][3]);  // 2t + 1
        store_row16(dst, om0, _mm512_permutex2var_ps(e, lo, f), bv, relu);
        if (om1) store_row16(dst + 16, om1, _mm512_permutex2var_ps(e, hi, f), bv, relu);
      }
    }
  }
}

// gradient_body for tile rows of at most 16 tiles (maps up to 32 wide), one tile row per vector:
// the tile row's two dy rows are masked loads (zero outside the map, as load_rows), split into
// their even and odd columns by two-source permutes (lane t: p, q, r, s of tile t), then the same
// float operations as gradient_body (negation as a sign flip, as C's unary minus): the same bits.
AVX512 NO_CALLS static void gradient_rows16_avx512(const WinoGeometry *g, const float *dy, ptrdiff_t row0,
                                                   ptrdiff_t rows, ptrdiff_t k0, ptrdiff_t k1, float *d) {
#pragma STDC FP_CONTRACT OFF
  const ptrdiff_t tw = g->tw, T = rows * tw, plane = wino_point_stride(g->k * T), ow = g->ow;
  const __mmask16 sm = (__mmask16)((1u << tw) - 1u), om0 = row_mask16(ow, 0), om1 = row_mask16(ow, 1);
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
  for (ptrdiff_t o = k0; o < k1; o++) {
    for (ptrdiff_t r = row0; r < row0 + rows; r++) {
      const ptrdiff_t n = r / g->th, th = r % g->th;
      const float *src = dy + (n * g->k + o) * g->oh * ow + 2 * th * ow;
      __m512 ev[2], od[2];  // rows 2th and 2th + 1: lane t holds columns 2t and 2t + 1
      for (int a = 0; a < 2; a++, src += ow) {
        __m512 v0 = _mm512_setzero_ps(), v1 = _mm512_setzero_ps();
        if (2 * th + a < g->oh) {
          v0 = _mm512_maskz_loadu_ps(om0, src);
          v1 = om1 ? _mm512_maskz_loadu_ps(om1, src + 16) : v1;
        }
        ev[a] = _mm512_permutex2var_ps(v0, even, v1);
        od[a] = _mm512_permutex2var_ps(v0, odd, v1);
      }
      const __m512 p = ev[0], q = od[0], rr = ev[1], s = od[1];
      const __m512 e[4][2] = {{p, q},
                              {_mm512_add_ps(p, rr), _mm512_add_ps(q, s)},
                              {_mm512_sub_ps(p, rr), _mm512_sub_ps(q, s)},
                              {_mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(rr), sign)),
                               _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(s), sign))}};
      float *dt = d + o * T + (r - row0) * tw;
      for (int i = 0; i < 4; i++) {
        _mm512_mask_storeu_ps(dt + (4 * i + 0) * plane, sm, e[i][0]);
        _mm512_mask_storeu_ps(dt + (4 * i + 1) * plane, sm, _mm512_add_ps(e[i][0], e[i][1]));
        _mm512_mask_storeu_ps(dt + (4 * i + 2) * plane, sm, _mm512_sub_ps(e[i][0], e[i][1]));
        _mm512_mask_storeu_ps(dt + (4 * i + 3) * plane, sm,
                              _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(e[i][1]), sign)));
      }
    }
  }
}
#endif
#if defined(__x86_64__)
// The AVX2 output transform of F(2×2, 3×3), as F(4×4)'s (Winograd4Kernels.c): eight consecutive
// tiles of the block per vector, rows under 16 tiles in chunks of 8 / gcd(tw, 8) tile rows, the
// tiles past the last whole vector one by one; each tile's 16 points are contiguous loads of M,
// combined (Aᵀ M A) as output_body does, and its two columns of its two output rows go to its
// tile row's buffer as 64-bit stores, which store_rows moves to y (bias, ReLU): the same bits.
// One Zen 1 core, batch 64, ms a call: 256 channels at 8×8 4.2 → 3.2, 512 at 4×4 4.6 → 2.6. The
// input and gradient transforms stay on their bodies: built the same way, their 128-bit loads of
// each tile's columns lie 8 bytes apart, across the halves of the stores that just wrote the
// combined rows, and ran slower than the bodies (8×8: 3.7 → 7.3 ms).
AVX2 NO_CALLS static void output_avx2(const WinoGeometry *g, const float *m, ptrdiff_t row0, ptrdiff_t rows,
                                      ptrdiff_t k0, ptrdiff_t k1, const float *bias, int relu, float *y) {
  // m [16][k][T] → y [n, k, oh, ow]; buf [rc][2][bw]: a chunk's tile rows' output rows
  const ptrdiff_t tw = g->tw, T = rows * tw, plane = wino_point_stride(g->k * T), bw = 2 * tw;
  const ptrdiff_t rc = chunk_rows(tw);
  float buf[rc * 2 * bw];
  ptrdiff_t off[rc * tw];
  tile_offsets(tw, rc, 2 * bw, 2, off);
  for (ptrdiff_t o = k0; o < k1; o++) {
    const float bv = bias ? bias[o] : 0.0f;
    for (ptrdiff_t r = row0; r < row0 + rows; r += rc) {
      const ptrdiff_t nr = chunk_length(r, row0 + rows, rc), tiles = nr * tw;
      const float *mt = m + o * T + (r - row0) * tw;
      ptrdiff_t l0 = 0;
      for (; l0 + 8 <= tiles; l0 += 8) {
        v8f s[2][4];  // Aᵀ M
        for (int q = 0; q < 4; q++) {
          const v8f m0 = (v8f)_mm256_loadu_ps(mt + q * plane + l0), m1 = (v8f)_mm256_loadu_ps(mt + (4 + q) * plane + l0);
          const v8f m2 = (v8f)_mm256_loadu_ps(mt + (8 + q) * plane + l0), m3 = (v8f)_mm256_loadu_ps(mt + (12 + q) * plane + l0);
          s[0][q] = m0 + m1 + m2;
          s[1][q] = m1 - m2 - m3;
        }
        for (int a = 0; a < 2; a++) {  // (Aᵀ M) A: columns 2t and 2t + 1 of output row a
          const v8f e = s[a][0] + s[a][1] + s[a][2], f = s[a][1] - s[a][2] - s[a][3];
          const __m256 lo = _mm256_unpacklo_ps((__m256)e, (__m256)f);  // tiles 0, 1 | 4, 5
          const __m256 hi = _mm256_unpackhi_ps((__m256)e, (__m256)f);  // tiles 2, 3 | 6, 7
          const __m128 pairs[4] = {_mm256_castps256_ps128(lo), _mm256_castps256_ps128(hi), _mm256_extractf128_ps(lo, 1),
                                   _mm256_extractf128_ps(hi, 1)};
          for (int h = 0; h < 4; h++) {  // tiles 2h, 2h + 1
            _mm_storel_pi((__m64 *)(buf + a * bw + off[l0 + 2 * h]), pairs[h]);
            _mm_storeh_pi((__m64 *)(buf + a * bw + off[l0 + 2 * h + 1]), pairs[h]);
          }
        }
      }
      for (; l0 < tiles; l0++) {
        float s[2][4], *dst = buf + off[l0];
        for (int q = 0; q < 4; q++) {
          const float m0 = mt[q * plane + l0], m1 = mt[(4 + q) * plane + l0];
          const float m2 = mt[(8 + q) * plane + l0], m3 = mt[(12 + q) * plane + l0];
          s[0][q] = m0 + m1 + m2;
          s[1][q] = m1 - m2 - m3;
        }
        for (int a = 0; a < 2; a++) {
          dst[a * bw] = s[a][0] + s[a][1] + s[a][2];
          dst[a * bw + 1] = s[a][1] - s[a][2] - s[a][3];
        }
      }
      for (ptrdiff_t k = 0; k < nr; k++) {
        const ptrdiff_t n = (r + k) / g->th, th = (r + k) % g->th;
        store_rows(buf + k * 2 * bw, bw, 2, y + (n * g->k + o) * g->oh * g->ow, g->oh, g->ow, 2 * th, bv, relu);
      }
    }
  }
}

#endif
NO_CALLS static void input_base(const WinoGeometry *g, const float *x, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t c0,
                       ptrdiff_t c1, float *v) {
  input_body(g, x, row0, rows, c0, c1, v);
}
void wino_input_transform(const WinoGeometry *g, const float *x, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t c0,
                          ptrdiff_t c1, float *v) {
  if (g->m == 4) {
    wino4_input_transform(g, x, row0, rows, c0, c1, v);
    return;
  }
#if defined(__x86_64__)
  if (wino_has_avx512()) {
    if (g->tw <= 16) input_rows16_avx512(g, x, row0, rows, c0, c1, v);
    else input_avx512(g, x, row0, rows, c0, c1, v);
    return;
  }
#endif
  input_base(g, x, row0, rows, c0, c1, v);
}

#if defined(__x86_64__)
AVX512 NO_CALLS static void output_avx512(const WinoGeometry *g, const float *m, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t k0,
                                 ptrdiff_t k1, const float *bias, int relu, float *y) {
  output_body(g, m, row0, rows, k0, k1, bias, relu, y);
}
#endif
NO_CALLS static void output_base(const WinoGeometry *g, const float *m, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t k0,
                        ptrdiff_t k1, const float *bias, int relu, float *y) {
  output_body(g, m, row0, rows, k0, k1, bias, relu, y);
}
void wino_output_transform(const WinoGeometry *g, const float *m, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t k0,
                           ptrdiff_t k1, const float *bias, int relu, float *y) {
  if (g->m == 4) {
    wino4_output_transform(g, m, row0, rows, k0, k1, bias, relu, y);
    return;
  }
#if defined(__x86_64__)
  if (wino_has_avx512()) {
    if (g->tw <= 16) output_rows16_avx512(g, m, row0, rows, k0, k1, bias, relu, y);
    else output_avx512(g, m, row0, rows, k0, k1, bias, relu, y);
    return;
  }
  if (wino_has_avx2()) {
    output_avx2(g, m, row0, rows, k0, k1, bias, relu, y);
    return;
  }
#endif
  output_base(g, m, row0, rows, k0, k1, bias, relu, y);
}

#if defined(__x86_64__)
AVX512 NO_CALLS static void gradient_avx512(const WinoGeometry *g, const float *dy, ptrdiff_t row0, ptrdiff_t rows,
                                   ptrdiff_t k0, ptrdiff_t k1, float *d) {
  gradient_body(g, dy, row0, rows, k0, k1, d);
}
#endif
NO_CALLS static void gradient_base(const WinoGeometry *g, const float *dy, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t k0,
                          ptrdiff_t k1, float *d) {
  gradient_body(g, dy, row0, rows, k0, k1, d);
}
void wino_gradient_transform(const WinoGeometry *g, const float *dy, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t k0,
                             ptrdiff_t k1, float *d) {
  if (g->m == 4) {
    wino4_gradient_transform(g, dy, row0, rows, k0, k1, d);
    return;
  }
#if defined(__x86_64__)
  if (wino_has_avx512()) {
    if (g->tw <= 16) gradient_rows16_avx512(g, dy, row0, rows, k0, k1, d);
    else gradient_avx512(g, dy, row0, rows, k0, k1, d);
    return;
  }
#endif
  gradient_base(g, dy, row0, rows, k0, k1, d);
}
