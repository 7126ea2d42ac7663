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

#if defined(__x86_64__)
bool wino_has_avx512(void) {
  static int cached = -1;
  if (cached < 0) cached = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  return cached;
}
#endif

// MARK: - Filter transforms (small: k·c kernels, scalar)

void wino_filter_transform(const float *w, ptrdiff_t k, ptrdiff_t c, int flip, ptrdiff_t m, float *u) {
  if (m == 4) {
    wino4_filter_transform(w, k, c, flip, u);
    return;
  }
  const ptrdiff_t plane = k * c;
  for (ptrdiff_t o = 0; o < k; o++) {
    for (ptrdiff_t i = 0; i < c; i++) {
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
  }
}

void wino_filter_gradient(const float *du, ptrdiff_t k, ptrdiff_t c, ptrdiff_t m, float *dw) {
  if (m == 4) {
    wino4_filter_gradient(du, k, c, dw);
    return;
  }
  const ptrdiff_t plane = k * c;
  for (ptrdiff_t o = 0; o < k; o++) {
    for (ptrdiff_t i = 0; i < c; i++) {
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
  }
}

// MARK: - Tile transforms

INLINE void input_body(const WinoGeometry *g, const float *x, ptrdiff_t row0, ptrdiff_t rows, ptrdiff_t c0,
                       ptrdiff_t c1, float *v) {
  const ptrdiff_t tw = g->tw, T = rows * tw, bw = 2 * tw + 2, plane = g->c * T;
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
  const ptrdiff_t tw = g->tw, T = rows * tw, plane = g->k * T, bw = 2 * tw;
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
  const ptrdiff_t tw = g->tw, T = rows * tw, bw = 2 * tw, plane = g->k * T;
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
    input_avx512(g, x, row0, rows, c0, c1, v);
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
    output_avx512(g, m, row0, rows, k0, k1, bias, relu, y);
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
    gradient_avx512(g, dy, row0, rows, k0, k1, d);
    return;
  }
#endif
  gradient_base(g, dy, row0, rows, k0, k1, d);
}
