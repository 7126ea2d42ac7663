// Winograd4Kernels.c: the F(4×4, 3×3) transforms (see include/CWinogradKernels.h, m = 4), with
//   Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0; 0 4 0 −5 0 1]
//                                                           (input: V = Bᵀ d B, 6×6 → 6×6)
//   G  = [¼ 0 0; −⅙ −⅙ −⅙; −⅙ ⅙ −⅙; 1/24 1/12 ⅙; 1/24 −1/12 ⅙; 0 0 1]
//                                                           (filter: U = G g Gᵀ, 3×3 → 6×6)
//   Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1]
//                                                           (output: Y = Aᵀ M A, 6×6 → 4×4)
// and for the weight gradient dL/dM = A dY Aᵀ (4×4 → 6×6) and dL/dg = Gᵀ dU G (6×6 → 3×3).
// Point ξ = 6·i + j is row i, column j of the 6×6 matrices. 36 multiplications per 16 outputs
// instead of 144 (4×; F(2×2, 3×3): 2.25×), for larger rounding errors (docs/winograd.md).
//
// The same structure as WinogradKernels.c: a tile row at a time through a zero-padded row buffer
// (6 input rows, or 4 output rows), baseline and AVX-512 copies of each body. The filter
// transforms work in Double (k·c kernels: cheap) so that U and dW carry one rounding each.
// Contraction is off in the whole file, so every copy (baseline, AVX-512, the row kernels) computes
// the formulas below with the same roundings: the same bits.
#include "WinogradInternal.h"

#pragma STDC FP_CONTRACT OFF

// MARK: - Filter transforms (small: k·c kernels, scalar, in Double)

// (G t)[0..5] for a column t of 3: the filter transform's rows.
INLINE void g_column(double t0, double t1, double t2, double out[6]) {
  out[0] = t0 / 4;
  out[1] = -(t0 + t1 + t2) / 6;
  out[2] = -(t0 - t1 + t2) / 6;
  out[3] = t0 / 24 + t1 / 12 + t2 / 6;
  out[4] = t0 / 24 - t1 / 12 + t2 / 6;
  out[5] = t2;
}

void wino4_filter_transform(const float *w, ptrdiff_t k, ptrdiff_t c, int flip, ptrdiff_t o0, ptrdiff_t o1, float *u) {
  const ptrdiff_t plane = k * c;
  for (ptrdiff_t o = o0; o < o1; o++) {
    for (ptrdiff_t i = 0; i < c; i++) {
      float g[3][3];
      load_filter(w, k, c, o, i, flip, g);
      double t[6][3];  // G g, column by column
      for (int b = 0; b < 3; b++) {
        double col[6];
        g_column(g[0][b], g[1][b], g[2][b], col);
        for (int a = 0; a < 6; a++) t[a][b] = col[a];
      }
      float *dst = u + o * c + i;
      for (int a = 0; a < 6; a++) {  // (G g) Gᵀ, row by row
        double row[6];
        g_column(t[a][0], t[a][1], t[a][2], row);
        for (int b = 0; b < 6; b++) dst[(6 * a + b) * plane] = (float)row[b];
      }
    }
  }
}

// (Gᵀ d)[0..2] for a column d of 6: the filter gradient's rows.
INLINE void gt_column(const double d[6], double out[3]) {
  out[0] = d[0] / 4 - (d[1] + d[2]) / 6 + (d[3] + d[4]) / 24;
  out[1] = (d[2] - d[1]) / 6 + (d[3] - d[4]) / 12;
  out[2] = (d[3] + d[4] - d[1] - d[2]) / 6 + d[5];
}

void wino4_filter_gradient(const float *du, ptrdiff_t k, ptrdiff_t c, ptrdiff_t o0, ptrdiff_t o1, float *dw) {
  const ptrdiff_t plane = k * c;
  for (ptrdiff_t o = o0; o < o1; o++) {
    for (ptrdiff_t i = 0; i < c; i++) {
      const float *src = du + o * c + i;
      double e[3][6];  // Gᵀ dU, column by column
      for (int b = 0; b < 6; b++) {
        double col[6], out[3];
        for (int a = 0; a < 6; a++) col[a] = src[(6 * a + b) * plane];
        gt_column(col, out);
        for (int a = 0; a < 3; a++) e[a][b] = out[a];
      }
      float *dst = dw + (o * c + i) * 9;
      for (int a = 0; a < 3; a++) {  // (Gᵀ dU) G, row by row
        double out[3];
        gt_column(e[a], out);
        for (int b = 0; b < 3; b++) dst[a * 3 + b] += (float)out[b];
      }
    }
  }
}

// MARK: - Tile transforms

// Bᵀ d for a column d0..d5 (also d B for a row): the input transform's six combinations.
#define BT6(d0, d1, d2, d3, d4, d5, out)      \
  do {                                         \
    (out)[0] = 4 * (d0) - 5 * (d2) + (d4);     \
    (out)[1] = (d3) + (d4) - 4 * ((d1) + (d2)); \
    (out)[2] = (d4) - (d3) + 4 * ((d1) - (d2)); \
    (out)[3] = (d4) - (d2) + 2 * ((d3) - (d1)); \
    (out)[4] = (d4) - (d2) + 2 * ((d1) - (d3)); \
    (out)[5] = 4 * (d1) - 5 * (d3) + (d5);     \
  } while (0)

INLINE void input_body(const WinoGeometry *g, const float *x, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t c0,
                       ptrdiff_t c1, float *v) {
  const ptrdiff_t tw = g->tw, T = rows * tw, bw = 4 * tw + 2, plane = wino_point_stride(g->c * T);
  float buf[6 * bw];
  for (ptrdiff_t ci = c0; ci < c1; ci++) {
    for (ptrdiff_t r = row0; r < row0 + rows; r++) {
      const ptrdiff_t n = r / g->th, th = r % g->th;
      load_rows(x + (n * g->c + ci) * g->h * g->w, g->h, g->w, 4 * th - g->ph, 6, g->pw, bw, buf);
      float *vt = v + ci * T + (r - row0) * tw;
      const float *b0 = buf, *b1 = buf + bw, *b2 = buf + 2 * bw, *b3 = buf + 3 * bw, *b4 = buf + 4 * bw,
                  *b5 = buf + 5 * bw;
      for (ptrdiff_t t = 0; t < tw; t++) {
        const ptrdiff_t j = 4 * t;
        float a[6][6];  // Bᵀ d: the rows combined, column by column (a[i][q])
        for (int q = 0; q < 6; q++) {
          float col[6];
          BT6(b0[j + q], b1[j + q], b2[j + q], b3[j + q], b4[j + q], b5[j + q], col);
          for (int i = 0; i < 6; i++) a[i][q] = col[i];
        }
        for (int i = 0; i < 6; i++) {  // (Bᵀ d) B
          float row[6];
          BT6(a[i][0], a[i][1], a[i][2], a[i][3], a[i][4], a[i][5], row);
          for (int q = 0; q < 6; q++) vt[(6 * i + q) * plane + t] = row[q];
        }
      }
    }
  }
}

// Aᵀ m for a column m0..m5 (also m A for a row): the output transform's four combinations.
#define AT4(m0, m1, m2, m3, m4, m5, out)                          \
  do {                                                             \
    (out)[0] = (m0) + ((m1) + (m2)) + ((m3) + (m4));               \
    (out)[1] = ((m1) - (m2)) + 2 * ((m3) - (m4));                  \
    (out)[2] = ((m1) + (m2)) + 4 * ((m3) + (m4));                  \
    (out)[3] = ((m1) - (m2)) + 8 * ((m3) - (m4)) + (m5);           \
  } while (0)

INLINE void output_body(const WinoGeometry *g, const float *m, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t k0,
                        ptrdiff_t k1, const float *bias, int relu, float *y) {
  const ptrdiff_t tw = g->tw, T = rows * tw, plane = wino_point_stride(g->k * T), bw = 4 * tw;
  float buf[4 * bw];
  for (ptrdiff_t o = k0; o < k1; o++) {
    const float bv = bias ? bias[o] : 0.0f;
    for (ptrdiff_t r = row0; r < row0 + rows; r++) {
      const ptrdiff_t n = r / g->th, th = r % g->th;
      const float *mt = m + o * T + (r - row0) * tw;
      for (ptrdiff_t t = 0; t < tw; t++) {
        float s[4][6];  // Aᵀ M, column by column
        for (int q = 0; q < 6; q++) {
          float col[4];
          AT4(mt[q * plane + t], mt[(6 + q) * plane + t], mt[(12 + q) * plane + t], mt[(18 + q) * plane + t],
              mt[(24 + q) * plane + t], mt[(30 + q) * plane + t], col);
          for (int a = 0; a < 4; a++) s[a][q] = col[a];
        }
        for (int a = 0; a < 4; a++) {  // (Aᵀ M) A
          float row[4];
          AT4(s[a][0], s[a][1], s[a][2], s[a][3], s[a][4], s[a][5], row);
          for (int b = 0; b < 4; b++) buf[a * bw + 4 * t + b] = row[b];
        }
      }
      store_rows(buf, bw, 4, y + (n * g->k + o) * g->oh * g->ow, g->oh, g->ow, 4 * th, bv, relu);
    }
  }
}

// A e for a column e0..e3 (also e Aᵀ for a row): the gradient transform's six combinations.
#define A6(e0, e1, e2, e3, out)                      \
  do {                                               \
    (out)[0] = (e0);                                 \
    (out)[1] = ((e0) + (e2)) + ((e1) + (e3));        \
    (out)[2] = ((e0) + (e2)) - ((e1) + (e3));        \
    (out)[3] = ((e0) + 4 * (e2)) + 2 * ((e1) + 4 * (e3)); \
    (out)[4] = ((e0) + 4 * (e2)) - 2 * ((e1) + 4 * (e3)); \
    (out)[5] = (e3);                                 \
  } while (0)

INLINE void gradient_body(const WinoGeometry *g, const float *dy, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t k0,
                          ptrdiff_t k1, float *d) {
  const ptrdiff_t tw = g->tw, T = rows * tw, bw = 4 * tw, plane = wino_point_stride(g->k * T);
  float buf[4 * bw];
  for (ptrdiff_t o = k0; o < k1; o++) {
    for (ptrdiff_t r = row0; r < row0 + rows; r++) {
      const ptrdiff_t n = r / g->th, th = r % g->th;
      load_rows(dy + (n * g->k + o) * g->oh * g->ow, g->oh, g->ow, 4 * th, 4, 0, bw, buf);
      float *dt = d + o * T + (r - row0) * tw;
      const float *e0 = buf, *e1 = buf + bw, *e2 = buf + 2 * bw, *e3 = buf + 3 * bw;
      for (ptrdiff_t t = 0; t < tw; t++) {
        const ptrdiff_t j = 4 * t;
        float f[6][4];  // A dY, column by column
        for (int q = 0; q < 4; q++) {
          float col[6];
          A6(e0[j + q], e1[j + q], e2[j + q], e3[j + q], col);
          for (int i = 0; i < 6; i++) f[i][q] = col[i];
        }
        for (int i = 0; i < 6; i++) {  // (A dY) Aᵀ
          float row[6];
          A6(f[i][0], f[i][1], f[i][2], f[i][3], row);
          for (int q = 0; q < 6; q++) dt[(6 * i + q) * plane + t] = row[q];
        }
      }
    }
  }
}

// MARK: - AVX-512 row kernels: one tile row (up to 16 tiles, maps up to 64 wide) per vector

#if defined(__x86_64__)
// Lane t of phase r: column 4t + r of a row held as four vectors v0..v3 (columns 0..63): lanes
// 0..7 from v0, v1 and lanes 8..15 from v2, v3, by two two-source permutes and a blend.
AVX512 __attribute__((always_inline)) static inline __m512 phase4(__m512 v0, __m512 v1, __m512 v2, __m512 v3,
                                                                  __m512i index) {
  return _mm512_mask_blend_ps((__mmask16)0xFF00, _mm512_permutex2var_ps(v0, index, v1),
                              _mm512_permutex2var_ps(v2, index, v3));
}

// phase4's permute index for phase r: lane t holds r + 4·(t mod 8).
AVX512 __attribute__((always_inline)) static inline __m512i phase4_index(int r) {
  return _mm512_add_epi32(_mm512_set1_epi32(r),
                          _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28));
}

// BT6 on vectors: the same float operations in the same order.
AVX512 __attribute__((always_inline)) static inline void bt6_vec(const __m512 d[6], __m512 out[6]) {
  const __m512 four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f), two = _mm512_set1_ps(2.0f);
  out[0] = _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(four, d[0]), _mm512_mul_ps(five, d[2])), d[4]);
  out[1] = _mm512_sub_ps(_mm512_add_ps(d[3], d[4]), _mm512_mul_ps(four, _mm512_add_ps(d[1], d[2])));
  out[2] = _mm512_add_ps(_mm512_sub_ps(d[4], d[3]), _mm512_mul_ps(four, _mm512_sub_ps(d[1], d[2])));
  out[3] = _mm512_add_ps(_mm512_sub_ps(d[4], d[2]), _mm512_mul_ps(two, _mm512_sub_ps(d[3], d[1])));
  out[4] = _mm512_add_ps(_mm512_sub_ps(d[4], d[2]), _mm512_mul_ps(two, _mm512_sub_ps(d[1], d[3])));
  out[5] = _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(four, d[1]), _mm512_mul_ps(five, d[3])), d[5]);
}

// AT4 on vectors.
AVX512 __attribute__((always_inline)) static inline void at4_vec(const __m512 m[6], __m512 out[4]) {
  const __m512 two = _mm512_set1_ps(2.0f), four = _mm512_set1_ps(4.0f), eight = _mm512_set1_ps(8.0f);
  const __m512 s12 = _mm512_add_ps(m[1], m[2]), d12 = _mm512_sub_ps(m[1], m[2]);
  const __m512 s34 = _mm512_add_ps(m[3], m[4]), d34 = _mm512_sub_ps(m[3], m[4]);
  out[0] = _mm512_add_ps(_mm512_add_ps(m[0], s12), s34);
  out[1] = _mm512_add_ps(d12, _mm512_mul_ps(two, d34));
  out[2] = _mm512_add_ps(s12, _mm512_mul_ps(four, s34));
  out[3] = _mm512_add_ps(_mm512_add_ps(d12, _mm512_mul_ps(eight, d34)), m[5]);
}

// A6 on vectors.
AVX512 __attribute__((always_inline)) static inline void a6_vec(const __m512 e[4], __m512 out[6]) {
  const __m512 two = _mm512_set1_ps(2.0f), four = _mm512_set1_ps(4.0f);
  const __m512 s02 = _mm512_add_ps(e[0], e[2]), s13 = _mm512_add_ps(e[1], e[3]);
  const __m512 f02 = _mm512_add_ps(e[0], _mm512_mul_ps(four, e[2]));
  const __m512 f13 = _mm512_mul_ps(two, _mm512_add_ps(e[1], _mm512_mul_ps(four, e[3])));
  out[0] = e[0];
  out[1] = _mm512_add_ps(s02, s13);
  out[2] = _mm512_sub_ps(s02, s13);
  out[3] = _mm512_add_ps(f02, f13);
  out[4] = _mm512_sub_ps(f02, f13);
  out[5] = e[3];
}

// input_body for tile rows of at most 16 tiles: the six input rows are masked loads of up to 66
// buffer columns (five vectors, a lane a column), combined by rows (Bᵀ d) as input_body does,
// then each combination's columns 4t + q of tile t (q = 0..5) come from phase4 (q < 4) and a
// one-lane shift of phases 0 and 1 (q = 4, 5), and the columns are combined (d B). Every output
// is the same float operations on the same operands as input_body's: the same bits.
AVX512 NO_CALLS static void input_rows16_avx512(const WinoGeometry *g, const float *x, ptrdiff_t row0, ptrdiff_t rows,
                                                ptrdiff_t c0, ptrdiff_t c1, float *v) {
  const ptrdiff_t tw = g->tw, T = rows * tw, plane = wino_point_stride(g->c * T), bw = 4 * tw + 2;
  const __mmask16 sm = (__mmask16)((1u << tw) - 1u);
  const int vecs = (int)((bw + 15) / 16);
  const __m512i index[4] = {phase4_index(0), phase4_index(1), phase4_index(2), phase4_index(3)};
  for (ptrdiff_t ci = c0; ci < c1; ci++) {
    for (ptrdiff_t r = row0; r < row0 + rows; r++) {
      const ptrdiff_t n = r / g->th, th = r % g->th, y0 = 4 * th - g->ph;
      const float *p = x + (n * g->c + ci) * g->h * g->w;
      __m512 b[6][5];  // input rows y0 ..< y0 + 6, by buffer column
      for (int a = 0; a < 6; a++)
        for (int k = 0; k < 5; k++)
          b[a][k] = k < vecs ? input_row16(p, g->h, g->w, y0 + a, g->pw, k) : _mm512_setzero_ps();
      __m512 rowsBt[6][5];  // Bᵀ d, by buffer column
      for (int k = 0; k < 5; k++) {
        const __m512 col[6] = {b[0][k], b[1][k], b[2][k], b[3][k], b[4][k], b[5][k]};
        __m512 out[6];
        bt6_vec(col, out);
        for (int i = 0; i < 6; i++) rowsBt[i][k] = out[i];
      }
      float *vt = v + ci * T + (r - row0) * tw;
      for (int i = 0; i < 6; i++) {
        const __m512 *a = rowsBt[i];
        __m512 q[6];  // lane t: column 4t + q of combination i
        for (int ph = 0; ph < 4; ph++) q[ph] = phase4(a[0], a[1], a[2], a[3], index[ph]);
        const __m512i last = _mm512_castps_si512(a[4]);  // columns 64, 65
        q[4] = _mm512_castsi512_ps(_mm512_alignr_epi32(last, _mm512_castps_si512(q[0]), 1));
        q[5] = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_alignr_epi32(last, last, 1),
                                                       _mm512_castps_si512(q[1]), 1));
        __m512 out[6];  // (Bᵀ d) B
        bt6_vec(q, out);
        for (int j = 0; j < 6; j++) _mm512_mask_storeu_ps(vt + (6 * i + j) * plane, sm, out[j]);
      }
    }
  }
}

// output_body for tile rows of at most 16 tiles (maps up to 64 wide): lane t holds tile t's 36
// points (masked loads of M), Aᵀ M A gives 16 vectors (row a, column 4t + b of the tile row's
// outputs), two rounds of two-source permutes interleave each row's four into the output row's
// four vectors, which take the bias and the ReLU and go straight to y (masked stores, no row
// buffer). The same float operations as output_body and store_rows (ReLU as a compare, so −0
// and NaN come out as there): the same bits.
AVX512 NO_CALLS static void output_rows16_avx512(const WinoGeometry *g, const float *m, ptrdiff_t row0,
                                                 ptrdiff_t rows, ptrdiff_t k0, ptrdiff_t k1, const float *bias,
                                                 int relu, float *y) {
  const ptrdiff_t tw = g->tw, T = rows * tw, plane = wino_point_stride(g->k * T), ow = g->ow;
  const __mmask16 sm = (__mmask16)((1u << tw) - 1u);
  const __mmask16 om[4] = {row_mask16(ow, 0), row_mask16(ow, 1), row_mask16(ow, 2), row_mask16(ow, 3)};
  const __m512i pairLo = interleave_index(0), pairHi = interleave_index(1);  // lanes 2t, 2t + 1 ← a[t], b[t]
  // quads from two pair vectors: lanes 4u..4u+3 ← first[2u], first[2u+1], second[2u], second[2u+1]
  const __m512i quadLo = _mm512_setr_epi32(0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23);
  const __m512i quadHi = _mm512_setr_epi32(8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31);
  for (ptrdiff_t o = k0; o < k1; o++) {
    const __m512 bv = _mm512_set1_ps(bias ? bias[o] : 0.0f);
    for (ptrdiff_t r = row0; r < row0 + rows; r++) {
      const ptrdiff_t n = r / g->th, th = r % g->th;
      const float *mt = m + o * T + (r - row0) * tw;
      __m512 s[4][6];  // Aᵀ M, column by column
      for (int q = 0; q < 6; q++) {
        __m512 col[6], out[4];
        for (int i = 0; i < 6; i++) col[i] = _mm512_maskz_loadu_ps(sm, mt + (6 * i + q) * plane);
        at4_vec(col, out);
        for (int a = 0; a < 4; a++) s[a][q] = out[a];
      }
      float *dst = y + (n * g->k + o) * g->oh * ow + 4 * th * ow;
      for (int a = 0; a < 4 && 4 * th + a < g->oh; a++, dst += ow) {  // (Aᵀ M) A, + bias, ReLU
        __m512 e[4];  // lane t: column 4t + b
        at4_vec(s[a], e);
        const __m512 p01lo = _mm512_permutex2var_ps(e[0], pairLo, e[1]), p01hi = _mm512_permutex2var_ps(e[0], pairHi, e[1]);
        const __m512 p23lo = _mm512_permutex2var_ps(e[2], pairLo, e[3]), p23hi = _mm512_permutex2var_ps(e[2], pairHi, e[3]);
        __m512 out[4] = {_mm512_permutex2var_ps(p01lo, quadLo, p23lo), _mm512_permutex2var_ps(p01lo, quadHi, p23lo),
                         _mm512_permutex2var_ps(p01hi, quadLo, p23hi), _mm512_permutex2var_ps(p01hi, quadHi, p23hi)};
        for (int k = 0; k < 4 && om[k]; k++) store_row16(dst + 16 * k, om[k], out[k], bv, relu);
      }
    }
  }
}

// gradient_body for tile rows of at most 16 tiles (maps up to 64 wide): the tile row's four dy
// rows are masked loads (zero outside the map, as load_rows), split by phase4 into lane t's
// columns 4t..4t + 3, then the same float operations as gradient_body: the same bits.
AVX512 NO_CALLS static void gradient_rows16_avx512(const WinoGeometry *g, const float *dy, ptrdiff_t row0,
                                                   ptrdiff_t rows, ptrdiff_t k0, ptrdiff_t k1, float *d) {
  const ptrdiff_t tw = g->tw, T = rows * tw, plane = wino_point_stride(g->k * T), ow = g->ow;
  const __mmask16 sm = (__mmask16)((1u << tw) - 1u);
  const __mmask16 om[4] = {row_mask16(ow, 0), row_mask16(ow, 1), row_mask16(ow, 2), row_mask16(ow, 3)};
  const __m512i index[4] = {phase4_index(0), phase4_index(1), phase4_index(2), phase4_index(3)};
  for (ptrdiff_t o = k0; o < k1; o++) {
    for (ptrdiff_t r = row0; r < row0 + rows; r++) {
      const ptrdiff_t n = r / g->th, th = r % g->th;
      const float *src = dy + (n * g->k + o) * g->oh * ow + 4 * th * ow;
      __m512 e[4][4];  // e[row a][column phase q]: lane t holds dY[a][q] of tile t
      for (int a = 0; a < 4; a++, src += ow) {
        __m512 v[4];
        for (int k = 0; k < 4; k++)
          v[k] = 4 * th + a < g->oh && om[k] ? _mm512_maskz_loadu_ps(om[k], src + 16 * k) : _mm512_setzero_ps();
        for (int q = 0; q < 4; q++) e[a][q] = phase4(v[0], v[1], v[2], v[3], index[q]);
      }
      __m512 f[6][4];  // A dY, column by column
      for (int q = 0; q < 4; q++) {
        const __m512 col[4] = {e[0][q], e[1][q], e[2][q], e[3][q]};
        __m512 out[6];
        a6_vec(col, out);
        for (int i = 0; i < 6; i++) f[i][q] = out[i];
      }
      float *dt = d + o * T + (r - row0) * tw;
      for (int i = 0; i < 6; i++) {  // (A dY) Aᵀ
        __m512 out[6];
        a6_vec(f[i], out);
        for (int j = 0; j < 6; j++) _mm512_mask_storeu_ps(dt + (6 * i + j) * plane, sm, out[j]);
      }
    }
  }
}
#endif

// MARK: - AVX2 kernels: eight tiles per vector
//
// Eight consecutive tiles of the block per vector, whatever the row width: each tile's four
// columns are a 128-bit load from its own tile row's buffer, and a transpose puts column 4t + q of
// the eight in the lanes of one vector (quarters8). Rows under 16 tiles go in chunks of
// 8 / gcd(tw, 8) tile rows, a whole number of vectors (rows of 4 tiles: two; of 7: eight), wider
// ones row by row; the tiles past the last whole vector go one by one. Every output is the same
// float operations on the same operands as the bodies above (contraction is off): the same bits.
// One Zen 1 core, ms a call over a batch, body → AVX2, input / output / gradient: 64 channels at
// 32×32, batch 64: 24.0 → 14.2, 17.7 → 8.3, 13.8 → 13.4; 128 at 16×16: 12.2 → 8.2, 9.0 → 4.8,
// 7.5 → 6.6; 64 at 56×56, batch 16: 16.2 → 10.0, 13.0 → 7.6, 10.9 → 8.0.

#if defined(__x86_64__)
// Bᵀ d of tile row r's six input rows (channel ci) over whole columns, in place: bt [6][bw].
AVX2 __attribute__((always_inline)) static inline void input_rows_bt(const WinoGeometry *g, const float *x, ptrdiff_t ci,
                                                                     ptrdiff_t r, ptrdiff_t bw, float *bt) {
  const ptrdiff_t n = r / g->th, th = r % g->th;
  load_rows(x + (n * g->c + ci) * g->h * g->w, g->h, g->w, 4 * th - g->ph, 6, g->pw, bw, bt);
  for (ptrdiff_t j = 0; j < bw; j += 8) {  // bw: whole vectors; each column read, then written
    v8f d[6], out[6];
    for (int a = 0; a < 6; a++) d[a] = (v8f)_mm256_loadu_ps(bt + a * bw + j);
    BT6(d[0], d[1], d[2], d[3], d[4], d[5], out);
    for (int i = 0; i < 6; i++) _mm256_storeu_ps(bt + i * bw + j, (__m256)out[i]);
  }
}

// (Bᵀ d) B of one tile whose combination i starts at a[i·bw], into vt[(6i + k)·plane].
INLINE void input_tile_b(const float *a, ptrdiff_t bw, float *vt, ptrdiff_t plane) {
  for (int i = 0; i < 6; i++, a += bw) {
    float out[6];
    BT6(a[0], a[1], a[2], a[3], a[4], a[5], out);
    for (int k = 0; k < 6; k++) vt[(6 * i + k) * plane] = out[k];
  }
}

AVX2 NO_CALLS static void input_avx2(const WinoGeometry *g, const float *x, ptrdiff_t row0, ptrdiff_t rows,
                                     ptrdiff_t c0, ptrdiff_t c1, float *v) {
  // x [n, c, h, w] → v [36][c][T]; bt [rc][6][bw]: a chunk's tile rows' input rows, combined in place
  const ptrdiff_t tw = g->tw, T = rows * tw, plane = wino_point_stride(g->c * T);
  const ptrdiff_t bw = (4 * tw + 2 + 7) / 8 * 8, rc = chunk_rows(tw);
  float bt[rc * 6 * bw];
  ptrdiff_t off[rc * tw];
  tile_offsets(tw, rc, 6 * bw, 4, off);
  for (ptrdiff_t ci = c0; ci < c1; ci++) {
    for (ptrdiff_t r = row0; r < row0 + rows; r += rc) {
      const ptrdiff_t nr = chunk_length(r, row0 + rows, rc), tiles = nr * tw;
      for (ptrdiff_t k = 0; k < nr; k++) input_rows_bt(g, x, ci, r + k, bw, bt + k * 6 * bw);
      float *vt = v + ci * T + (r - row0) * tw;
      ptrdiff_t l0 = 0;
      for (; l0 + 8 <= tiles; l0 += 8) {
        for (int i = 0; i < 6; i++) {
          // Tile l0 + l's combination i: columns 4t ..< 4t + 4, and 4t + 4 ..< 4t + 8 (the loads
          // 16 bytes apart, as the halves of the stores that wrote bt: each is forwarded whole).
          const float *at[8], *next[8];
          for (int l = 0; l < 8; l++) {
            at[l] = bt + i * bw + off[l0 + l];
            next[l] = at[l] + 4;
          }
          v8f q[6], hi[4], out[6];
          quarters8(at, q);
          quarters8(next, hi);
          q[4] = hi[0];
          q[5] = hi[1];
          BT6(q[0], q[1], q[2], q[3], q[4], q[5], out);
          for (int k = 0; k < 6; k++) _mm256_storeu_ps(vt + (6 * i + k) * plane + l0, (__m256)out[k]);
        }
      }
      for (; l0 < tiles; l0++) input_tile_b(bt + off[l0], bw, vt + l0, plane);
    }
  }
}

// output_body, 8 tiles a vector: each tile's 36 points are contiguous loads of M (consecutive
// tiles of the block), combined (Aᵀ M A) as output_body does; unquarters8 puts each tile's 4×4
// outputs into its tile row's buffer rows, which store_rows moves to y (bias, ReLU).
AVX2 NO_CALLS static void output_avx2(const WinoGeometry *g, const float *m, ptrdiff_t row0, ptrdiff_t rows,
                                      ptrdiff_t k0, ptrdiff_t k1, const float *bias, int relu, float *y) {
  // m [36][k][T] → y [n, k, oh, ow]; buf [rc][4][bw]: a chunk's tile rows' output rows
  const ptrdiff_t tw = g->tw, T = rows * tw, plane = wino_point_stride(g->k * T), bw = 4 * tw;
  const ptrdiff_t rc = chunk_rows(tw);
  float buf[rc * 4 * bw];
  ptrdiff_t off[rc * tw];
  tile_offsets(tw, rc, 4 * bw, 4, off);
  for (ptrdiff_t o = k0; o < k1; o++) {
    const float bv = bias ? bias[o] : 0.0f;
    for (ptrdiff_t r = row0; r < row0 + rows; r += rc) {
      const ptrdiff_t nr = chunk_length(r, row0 + rows, rc), tiles = nr * tw;
      const float *mt = m + o * T + (r - row0) * tw;
      ptrdiff_t l0 = 0;
      for (; l0 + 8 <= tiles; l0 += 8) {
        v8f s[4][6];  // Aᵀ M, column by column
        for (int q = 0; q < 6; q++) {
          v8f p[6], col[4];
          for (int i = 0; i < 6; i++) p[i] = (v8f)_mm256_loadu_ps(mt + (6 * i + q) * plane + l0);
          AT4(p[0], p[1], p[2], p[3], p[4], p[5], col);
          for (int a = 0; a < 4; a++) s[a][q] = col[a];
        }
        for (int a = 0; a < 4; a++) {  // (Aᵀ M) A: output row a, columns 4t ..< 4t + 4
          v8f row[4];
          AT4(s[a][0], s[a][1], s[a][2], s[a][3], s[a][4], s[a][5], row);
          float *at[8];
          for (int l = 0; l < 8; l++) at[l] = buf + a * bw + off[l0 + l];
          unquarters8(row, at);
        }
      }
      for (; l0 < tiles; l0++) {
        float s[4][6], *dst = buf + off[l0];
        for (int q = 0; q < 6; q++) {
          float col[4];
          AT4(mt[q * plane + l0], mt[(6 + q) * plane + l0], mt[(12 + q) * plane + l0], mt[(18 + q) * plane + l0],
              mt[(24 + q) * plane + l0], mt[(30 + q) * plane + l0], col);
          for (int a = 0; a < 4; a++) s[a][q] = col[a];
        }
        for (int a = 0; a < 4; a++) {
          float row[4];
          AT4(s[a][0], s[a][1], s[a][2], s[a][3], s[a][4], s[a][5], row);
          for (int b = 0; b < 4; b++) dst[a * bw + b] = row[b];
        }
      }
      for (ptrdiff_t k = 0; k < nr; k++) {
        const ptrdiff_t n = (r + k) / g->th, th = (r + k) % g->th;
        store_rows(buf + k * 4 * bw, bw, 4, y + (n * g->k + o) * g->oh * g->ow, g->oh, g->ow, 4 * th, bv, relu);
      }
    }
  }
}

// gradient_body, 8 tiles a vector: each tile row's four dy rows combined by rows (A dY) over whole
// columns, then the columns 4t + q of 8 consecutive tiles by quarters8, combined (· Aᵀ).
AVX2 NO_CALLS static void gradient_avx2(const WinoGeometry *g, const float *dy, ptrdiff_t row0, ptrdiff_t rows,
                                        ptrdiff_t k0, ptrdiff_t k1, float *d) {
  // dy [n, k, oh, ow] → d [36][k][T]; fa [rc][6][bw]: a chunk's tile rows' four dy rows, then in
  // place their six combinations
  const ptrdiff_t tw = g->tw, T = rows * tw, bw = 4 * tw, plane = wino_point_stride(g->k * T);
  const ptrdiff_t rc = chunk_rows(tw);
  float fa[rc * 6 * bw];
  ptrdiff_t off[rc * tw];
  tile_offsets(tw, rc, 6 * bw, 4, off);
  for (ptrdiff_t o = k0; o < k1; o++) {
    for (ptrdiff_t r = row0; r < row0 + rows; r += rc) {
      const ptrdiff_t nr = chunk_length(r, row0 + rows, rc), tiles = nr * tw;
      for (ptrdiff_t k = 0; k < nr; k++) {
        const ptrdiff_t n = (r + k) / g->th, th = (r + k) % g->th;
        float *f = fa + k * 6 * bw;
        load_rows(dy + (n * g->k + o) * g->oh * g->ow, g->oh, g->ow, 4 * th, 4, 0, bw, f);
        ptrdiff_t j = 0;
        for (; j + 8 <= bw; j += 8) {  // A dY, 8 columns at a time, then the last 4; each column read, then written
          v8f e[4], out[6];
          for (int a = 0; a < 4; a++) e[a] = (v8f)_mm256_loadu_ps(f + a * bw + j);
          A6(e[0], e[1], e[2], e[3], out);
          for (int i = 0; i < 6; i++) _mm256_storeu_ps(f + i * bw + j, (__m256)out[i]);
        }
        for (; j < bw; j++) {
          const float e0 = f[j], e1 = f[bw + j], e2 = f[2 * bw + j], e3 = f[3 * bw + j];
          float out[6];
          A6(e0, e1, e2, e3, out);
          for (int i = 0; i < 6; i++) f[i * bw + j] = out[i];
        }
      }
      float *dt = d + o * T + (r - row0) * tw;
      ptrdiff_t l0 = 0;
      for (; l0 + 8 <= tiles; l0 += 8) {
        for (int i = 0; i < 6; i++) {
          const float *at[8];
          for (int l = 0; l < 8; l++) at[l] = fa + i * bw + off[l0 + l];
          v8f q[4], out[6];
          quarters8(at, q);
          A6(q[0], q[1], q[2], q[3], out);
          for (int k = 0; k < 6; k++) _mm256_storeu_ps(dt + (6 * i + k) * plane + l0, (__m256)out[k]);
        }
      }
      for (; l0 < tiles; l0++) {
        const float *f = fa + off[l0];
        for (int i = 0; i < 6; i++, f += bw) {
          float out[6];
          A6(f[0], f[1], f[2], f[3], out);
          for (int k = 0; k < 6; k++) dt[(6 * i + k) * plane + l0] = out[k];
        }
      }
    }
  }
}
#endif

// MARK: - Entry points: the AVX-512 copy where the CPU has it

#if defined(__x86_64__)
AVX512 NO_CALLS static void input_avx512(const WinoGeometry *g, const float *x, ptrdiff_t row0, ptrdiff_t rows,
                                         ptrdiff_t c0, ptrdiff_t c1, float *v) {
  input_body(g, x, row0, rows, c0, c1, v);
}
AVX512 NO_CALLS static void output_avx512(const WinoGeometry *g, const float *m, ptrdiff_t row0, ptrdiff_t rows,
                                          ptrdiff_t k0, ptrdiff_t k1, const float *bias, int relu, float *y) {
  output_body(g, m, row0, rows, k0, k1, bias, relu, y);
}
AVX512 NO_CALLS static void gradient_avx512(const WinoGeometry *g, const float *dy, ptrdiff_t row0, ptrdiff_t rows,
                                            ptrdiff_t k0, ptrdiff_t k1, float *d) {
  gradient_body(g, dy, row0, rows, k0, k1, d);
}
#endif
NO_CALLS static void input_base(const WinoGeometry *g, const float *x, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t c0,
                                ptrdiff_t c1, float *v) {
  input_body(g, x, row0, rows, c0, c1, v);
}
NO_CALLS static void output_base(const WinoGeometry *g, const float *m, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t k0,
                                 ptrdiff_t k1, const float *bias, int relu, float *y) {
  output_body(g, m, row0, rows, k0, k1, bias, relu, y);
}
NO_CALLS static void gradient_base(const WinoGeometry *g, const float *dy, ptrdiff_t row0, ptrdiff_t rows,
                                   ptrdiff_t k0, ptrdiff_t k1, float *d) {
  gradient_body(g, dy, row0, rows, k0, k1, d);
}

void wino4_input_transform(const WinoGeometry *g, const float *x, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t c0,
                           ptrdiff_t c1, float *v) {
#if defined(__x86_64__)
  if (wino_has_avx512()) {
    if (g->tw <= 16) input_rows16_avx512(g, x, row0, rows, c0, c1, v);
    else input_avx512(g, x, row0, rows, c0, c1, v);
    return;
  }
  if (wino_has_avx2()) {
    input_avx2(g, x, row0, rows, c0, c1, v);
    return;
  }
#endif
  input_base(g, x, row0, rows, c0, c1, v);
}

void wino4_output_transform(const WinoGeometry *g, const float *m, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t k0,
                            ptrdiff_t k1, const float *bias, int relu, float *y) {
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

void wino4_gradient_transform(const WinoGeometry *g, const float *dy, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t k0,
                              ptrdiff_t k1, float *d) {
#if defined(__x86_64__)
  if (wino_has_avx512()) {
    if (g->tw <= 16) gradient_rows16_avx512(g, dy, row0, rows, k0, k1, d);
    else gradient_avx512(g, dy, row0, rows, k0, k1, d);
    return;
  }
  if (wino_has_avx2()) {
    gradient_avx2(g, dy, row0, rows, k0, k1, d);
    return;
  }
#endif
  gradient_base(g, dy, row0, rows, k0, k1, d);
}
