// kernel-bits.c: runs every kernel variant that this build and CPU support on fixed pseudo-random
// problems and prints a 64-bit FNV-1a hash of all the output bits per variant. scripts/
// cross-check.sh builds it for x86-64 and for aarch64 (run under qemu-aarch64) and compares the
// hashes across architectures: portable must equal portable, NEON must equal AVX2. It also checks,
// within one run, that each variant's exp and σ agree with the portable one to within twice the
// documented bounds (6e−7 relative, plus 2 subnormal steps; a sanity check: the bounds themselves
// are tested by Tests/ACONTests). Exit status 1 on a failed check. Not part of the package: a plain C program linked with Sources/CAconKernels/AconKernels.c.
#include "CAconKernels.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// The inputs must be the same bits on every target: no a·b + c contracted into an FMA here.
#pragma STDC FP_CONTRACT OFF

static uint64_t rng = 0x9E3779B97F4A7C15ull;

/// Uniform in [lo, hi), from a xorshift64* stream.
static float uniform(float lo, float hi) {
  rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
  uint64_t r = rng * 0x2545F4914F6CDD1Dull;
  return lo + (hi - lo) * (float)((r >> 40) * (1.0 / 16777216.0));
}

static void fill(float *p, size_t count, float lo, float hi) {
  for (size_t i = 0; i < count; i++) p[i] = uniform(lo, hi);
}

static uint64_t fnv(uint64_t h, const float *p, size_t count) {
  const unsigned char *b = (const unsigned char *)p;
  for (size_t i = 0; i < count * sizeof(float); i++) h = (h ^ b[i]) * 0x100000001B3ull;
  return h;
}

/// The hash of every output of forward, forward with σ, backward (σ recomputed, with and without
/// dx) and backward from σ, over shapes with full groups, tails and both, and all β layouts; and
/// of Meta-ACON pixel-wise, the smooth maximum (forward and backward) and acon_add_scalar on the
/// same shapes; every call asks for streaming stores (same bits, taken where aligned).
static uint64_t kernel_hash(void) {
  static const int shapes[][3] = {{1, 1, 1}, {2, 3, 7}, {2, 5, 13}, {1, 7, 31}, {3, 3, 49},
                                  {4, 3, 64}, {2, 2, 143}, {1, 70, 9}};
  uint64_t h = 0xCBF29CE484222325ull;
  rng = 0x9E3779B97F4A7C15ull;
  for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
    ptrdiff_t n = shapes[k][0], c = shapes[k][1], hw = shapes[k][2], e = n * c * hw;
    for (int mode = 0; mode < 3; mode++) {
      ptrdiff_t nb = mode == AconBetaModeChannel ? c : mode == AconBetaModePlane ? n * c : e;
      float *x = malloc(sizeof(float) * e), *dy = malloc(sizeof(float) * e);
      float *y = malloc(sizeof(float) * e), *sig = malloc(sizeof(float) * e);
      float *dx = malloc(sizeof(float) * e), *beta = malloc(sizeof(float) * nb);
      float *dbeta = calloc(nb, sizeof(float)), *p1 = malloc(sizeof(float) * c);
      float *p2 = malloc(sizeof(float) * c), *dp1 = calloc(c, sizeof(float));
      float *dp2 = calloc(c, sizeof(float));
      fill(x, e, -6, 6), fill(dy, e, -1, 1), fill(beta, nb, -3, 3);
      fill(p1, c, -2, 2), fill(p2, c, -2, 2);
      acon_forward_channels(x, y, NULL, n, c, hw, false, 0, c, p1, p2, beta, mode, true);
      h = fnv(h, y, e);
      acon_forward_channels(x, y, sig, n, c, hw, false, 0, c, p1, p2, beta, mode, true);
      h = fnv(fnv(h, y, e), sig, e);
      acon_backward_channels(x, dy, dx, NULL, n, c, hw, false, 0, c, p1, p2, beta, dbeta, mode, dp1, dp2, true);
      h = fnv(fnv(fnv(fnv(h, dx, e), dbeta, nb), dp1, c), dp2, c);
      acon_backward_channels(x, dy, NULL, NULL, n, c, hw, false, 0, c, p1, p2, beta, dbeta, mode, dp1, dp2, true);
      h = fnv(fnv(fnv(h, dbeta, nb), dp1, c), dp2, c);
      acon_backward_channels(x, dy, dx, sig, n, c, hw, false, 0, c, p1, p2, beta, dbeta, mode, dp1, dp2, true);
      h = fnv(fnv(fnv(fnv(h, dx, e), dbeta, nb), dp1, c), dp2, c);
      if (mode == AconBetaModeChannel) {
        // Meta-ACON pixel-wise (β = σ(x)); the smooth maximum of x and dy with β = beta[0], its
        // output serving as the upstream gradient of its backward.
        acon_pixelwise_forward_channels(x, y, n, c, hw, 0, c, p1, p2, true);
        acon_pixelwise_backward_channels(x, dy, dx, n, c, hw, 0, c, p1, p2, dp1, dp2, true);
        h = fnv(fnv(fnv(fnv(h, y, e), dx, e), dp1, c), dp2, c);
        float *db = malloc(sizeof(float) * e), *dbp = calloc(n * c, sizeof(float));
        acon_smooth_max_forward_planes(x, dy, y, hw, 0, n * c, beta[0], true);
        acon_smooth_max_backward_planes(x, dy, y, dx, db, hw, 0, n * c, beta[0], dbp, true);
        h = fnv(fnv(fnv(h, dx, e), db, e), dbp, n * c);
        acon_smooth_max_backward_planes(x, dy, y, dx, db, hw, 0, n * c, beta[0], NULL, true);
        acon_add_scalar(dx, db, e, beta[0], true);
        h = fnv(fnv(h, dx, e), db, e);
        free(db), free(dbp);
      }
      free(x), free(dy), free(y), free(sig), free(dx), free(beta), free(dbeta);
      free(p1), free(p2), free(dp1), free(dp2);
    }
  }
  return h;
}

enum { STRIDE = 4099, CHUNK = 65521 };

/// exp and σ of every 4099th Float bit pattern (all exponents, ±inf, NaNs), in odd-length
/// arrays so that full vectors and tails both occur; NaN results are hashed as one canonical NaN.
/// With `ref` (the portable results, same order), also checks |a − r| ≤ 6e−7·|r| + 2·2^−149.
static uint64_t fastmath_hash(float *keep_e, float *keep_s, const float *ref_e, const float *ref_s,
                              int *bad) {
  static float x[CHUNK], ye[CHUNK], ys[CHUNK];
  uint64_t h = 0xCBF29CE484222325ull, pattern = 0;
  size_t at = 0;
  while (pattern <= UINT32_MAX) {
    ptrdiff_t m = 0;
    for (; m < CHUNK && pattern <= UINT32_MAX; m++, pattern += STRIDE) {
      uint32_t bits = (uint32_t)pattern;
      memcpy(&x[m], &bits, 4);
    }
    acon_exp(x, ye, m);
    acon_sigmoid(x, ys, m);
    for (ptrdiff_t i = 0; i < m; i++, at++) {
      if (isnan(ye[i])) ye[i] = NAN;
      if (isnan(ys[i])) ys[i] = NAN;
      if (keep_e) keep_e[at] = ye[i], keep_s[at] = ys[i];
      if (ref_e) {
        const float a[2] = {ye[i], ys[i]}, r[2] = {ref_e[at], ref_s[at]};
        for (int t = 0; t < 2; t++) {
          int ok = isnan(r[t])  ? isnan(a[t])
                   : a[t] == r[t] ? 1
                                  : fabsf(a[t] - r[t]) <= 6e-7f * fabsf(r[t]) + 2 * 0x1p-149f;
          if (!ok && (*bad)++ < 5)
            fprintf(stderr, "%s(%a) = %a, portable %a\n", t ? "sigmoid" : "exp", x[i], a[t], r[t]);
        }
      }
    }
    h = fnv(fnv(h, ye, m), ys, m);
  }
  return h;
}

int main(void) {
  const size_t total = (size_t)(UINT32_MAX / STRIDE) + 1;
  float *pe = malloc(sizeof(float) * total), *ps = malloc(sizeof(float) * total);
  int bad = 0;
  for (int v = 0; v < 4; v++) {
    if (!acon_kernels_variant_supported((AconKernelVariant)v)) continue;
    if (!acon_kernels_set_variant((AconKernelVariant)v)) {
      fprintf(stderr, "cannot select %s\n", acon_kernels_variant_name(v));
      return 1;
    }
    uint64_t kh = kernel_hash();
    uint64_t fh = v == AconKernelVariantPortable ? fastmath_hash(pe, ps, NULL, NULL, &bad)
                                                 : fastmath_hash(NULL, NULL, pe, ps, &bad);
    printf("%s %016llx %016llx\n", acon_kernels_variant_name(v), (unsigned long long)kh,
           (unsigned long long)fh);
  }
  free(pe), free(ps);
  if (bad) fprintf(stderr, "%d values outside the tolerance\n", bad);
  return bad != 0;
}
