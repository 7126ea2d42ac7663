// PoolKernels: MaxPool2D's forward loop (CLayerKernels.h). One window at a time: the windows of
// the zoo's max-pools (3×3, stride 2) overlap by one column, so a vector of outputs would need
// strided loads on maps as small as 8 wide. What costs in a plain loop is the branch on each
// comparison, mispredicted about a third of the time; the select runs in SSE registers instead
// (and-andnot-or on lane 0), which no compiler turns back into a branch.
//
// Shapes: x [planes, h, w]; y, argmax [planes, oh, ow].
#include "CLayerKernels.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

static ptrdiff_t max_p(ptrdiff_t a, ptrdiff_t b) { return a > b ? a : b; }
static ptrdiff_t min_p(ptrdiff_t a, ptrdiff_t b) { return a < b ? a : b; }

// A window's winner so far, and `offer`: take `val` at offset `at` if it is greater or NaN.
#if defined(__SSE2__)
// Lane 0 of xmm registers: the value, its offset, and the masks of the select, so the compiler
// has no scalar select to turn back into a branch.
typedef struct {
  __m128 v;
  __m128i at;
} Best;
static inline Best start(float val, ptrdiff_t at) { return (Best){_mm_set_ss(val), _mm_cvtsi32_si128((int)at)}; }
static inline Best offer(Best b, float val, ptrdiff_t at) {
  const __m128 nv = _mm_set_ss(val);
  const __m128 take = _mm_or_ps(_mm_cmplt_ss(b.v, nv), _mm_cmpunord_ss(nv, nv));
  const __m128i t = _mm_castps_si128(take);
  return (Best){_mm_or_ps(_mm_and_ps(take, nv), _mm_andnot_ps(take, b.v)),
                _mm_or_si128(_mm_and_si128(t, _mm_cvtsi32_si128((int)at)), _mm_andnot_si128(t, b.at))};
}
static inline float value(Best b) { return _mm_cvtss_f32(b.v); }
static inline int offset(Best b) { return _mm_cvtsi128_si32(b.at); }
#else
typedef struct {
  float v;
  ptrdiff_t at;
} Best;
static inline Best start(float val, ptrdiff_t at) { return (Best){val, at}; }
static inline Best offer(Best b, float val, ptrdiff_t at) {
  const int take = (val > b.v) | (val != val);
  return (Best){__builtin_unpredictable(take) ? val : b.v, __builtin_unpredictable(take) ? at : b.at};
}
static inline float value(Best b) { return b.v; }
static inline int offset(Best b) { return (int)b.at; }
#endif

void acon_maxpool_forward(
    const float *x, float *y, int *argmax, ptrdiff_t p0, ptrdiff_t p1, ptrdiff_t h, ptrdiff_t w, ptrdiff_t oh,
    ptrdiff_t ow, ptrdiff_t k, ptrdiff_t s, ptrdiff_t p) {
  for (ptrdiff_t pl = p0; pl < p1; pl++) {
    const float *xp = x + pl * h * w;
    float *yp = y + pl * oh * ow;
    int *ap = argmax + pl * oh * ow;
    for (ptrdiff_t i = 0; i < oh; i++) {
      // The window's rows and columns inside the image: u in [u0, u1), v in [v0, v1).
      const ptrdiff_t r0 = i * s - p, u0 = max_p(0, -r0), u1 = min_p(k, h - r0);
      for (ptrdiff_t j = 0; j < ow; j++) {
        const ptrdiff_t c0 = j * s - p, v0 = max_p(0, -c0), v1 = min_p(k, w - c0);
        if (u0 >= u1 || v0 >= v1) {  // no in-image element (PyTorch's shape rules exclude it)
          yp[i * ow + j] = -__builtin_inff();
          ap[i * ow + j] = -1;
          continue;
        }
        const ptrdiff_t first = (r0 + u0) * w + c0 + v0;
        Best b = start(xp[first], first);
        for (ptrdiff_t u = u0; u < u1; u++) {
          const ptrdiff_t row = (r0 + u) * w + c0;
          for (ptrdiff_t v = (u == u0 ? v0 + 1 : v0); v < v1; v++) b = offer(b, xp[row + v], row + v);
        }
        yp[i * ow + j] = value(b);
        ap[i * ow + j] = offset(b);
      }
    }
  }
}
