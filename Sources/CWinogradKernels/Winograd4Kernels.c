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
#include "WinogradInternal.h"

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
    input_avx512(g, x, row0, rows, c0, c1, v);
    return;
  }
#endif
  input_base(g, x, row0, rows, c0, c1, v);
}

void wino4_output_transform(const WinoGeometry *g, const float *m, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t k0,
                            ptrdiff_t k1, const float *bias, int relu, float *y) {
#if defined(__x86_64__)
  if (wino_has_avx512()) {
    output_avx512(g, m, row0, rows, k0, k1, bias, relu, y);
    return;
  }
#endif
  output_base(g, m, row0, rows, k0, k1, bias, relu, y);
}

void wino4_gradient_transform(const WinoGeometry *g, const float *dy, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t k0,
                              ptrdiff_t k1, float *d) {
#if defined(__x86_64__)
  if (wino_has_avx512()) {
    gradient_avx512(g, dy, row0, rows, k0, k1, d);
    return;
  }
#endif
  gradient_base(g, dy, row0, rows, k0, k1, d);
}
