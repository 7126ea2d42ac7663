// AconKernelsBody.h: the width-generic body of the fused ACON-C kernels and the polynomial
// exp/sigmoid, included by AconKernels.c once per vector width (8 and 16 lanes). Not a public
// header and not self-contained: the includer defines
//   W         lanes per vector;  VF, VI  the float and int32 vector types of W lanes
//   MASK      a tail mask (which lanes of a partial vector are valid)
//   FN(name)  the width's name for `name` (name##8, name##16): primitives and body alike
//   BODY      the attributes of every function here (always inline; AVX-512 target at 16)
// and the primitives splatW, loadW, storeW, selectW, fixed_order_sumW, tail_maskW, load_partW,
// store_partW and pow2_scaleW (see AconKernels.c). `F` (FMA or not) is a compile-time argument
// throughout.
//
// Every element goes through the same W-lane code: a plane's last hw mod W elements are loaded
// with a mask (zeros in the other lanes) and stored with one, so results never depend on an
// element's position. Vectors go in groups of four, their sigmoids interleaved (see "Groups").

// The width's primitives and this file's functions under width-free names (undone at the end).
#define splat FN(splat)
#define loadv FN(load)
#define storev FN(store)
#define selectv FN(select)
#define fixed_order_sum FN(fixed_order_sum)
#define tail_mask FN(tail_mask)
#define load_part FN(load_part)
#define store_part FN(store_part)
#define madd FN(madd)
#define pow2_scale FN(pow2_scale)
#define exp_reduce FN(exp_reduce)
#define exp_full FN(exp_full)
#define sigmoid_neg FN(sigmoid_neg)
#define sigmoid_neg_group FN(sigmoid_neg_group)
#define Extent FN(Extent)
#define extent FN(extent)
#define load_u FN(load_u)
#define store_u FN(store_u)
#define forward_group FN(forward_group)
#define forward_plane FN(forward_plane)
#define forward_channels FN(forward_channels)
#define Sums FN(Sums)
#define grad FN(grad)
#define backward_group FN(backward_group)
#define backward_plane FN(backward_plane)
#define backward_channels FN(backward_channels)
#define map_channel FN(map_channel)
#define smax_forward_group FN(smax_forward_group)
#define smax_forward_run FN(smax_forward_run)
#define smax_backward_run FN(smax_backward_run)
#define smax_forward_planes FN(smax_forward_planes)
#define smax_backward_group FN(smax_backward_group)
#define smax_backward_planes FN(smax_backward_planes)
#define aligned_nt FN(aligned_nt)
#define add_scalar FN(add_scalar)

/// a·b + c: one FMA (one rounding) in the FMA variants, a multiply and an add otherwise.
BODY VF madd(VF a, VF b, VF c, const int fma) {
  return fma ? __builtin_elementwise_fma(a, b, c) : a * b + c;
}

// MARK: - Exp and sigmoid

/// Range reduction and polynomial: t = magic + n (n = round(v·log2 e)) and p ≈ e^r in
/// [0.70, 1.42], r = v − n·ln2 (NaN for NaN).
BODY VF exp_reduce(VF v, VF *t_out, const int F) {
  const VF magic = splat(12582912.0f);  // 1.5·2²³, bits 0x4B40_0000
  VF t = madd(v, splat(1.44269504f), magic, F);  // magic + n, exactly
  VF n = t - magic;
  VF r = madd(n, splat(-0.693359375f), v, F);  // ln2 high part 355/512: n·it is exact
  r = madd(n, splat(2.1219444e-4f), r, F);      // − n·(ln2 − high part)
  VF r2 = r * r;
  // P(r) = (c2 + c3·r) + r²·((c4 + c5·r) + r²·c6), Estrin's scheme.
  VF a = madd(r, splat(0.1666652113199234f), splat(0.4999999403953552f), F);
  VF b = madd(r, splat(0.008368744514882565f), splat(0.04166839271783829f), F);
  VF q = madd(madd(r2, splat(0.0013814527774229646f), b, F), r2, a, F);
  *t_out = t;
  return madd(r2, q, r, F) + 1.0f;
}

/// e^x for any x: clamps to [−104, 88.8] (e^88.8 rounds to +inf, e^−104 to 0), gradual underflow.
BODY VF exp_full(VF x, const int F) {
  VF v = selectv(x > splat(88.8f), splat(88.8f), x);
  v = selectv(v < splat(-104.0f), splat(-104.0f), v);
  VF t, p = exp_reduce(v, &t, F);
  // 2ⁿ = 2^h·2^(n−h), h = n >> 1; both exponents lie in [−75, 64]. For NaN, p is NaN.
  VI ni = (VI)t - 0x4B400000;
  VI h = ni >> 1;
  VF s1 = (VF)((h + 127) << 23), s2 = (VF)((ni - h + 127) << 23);
  return (p * s1) * s2;
}

/// σ from its negated argument: 1/(1 + e^v), v = −t clamped to [−86.5, 88.8] (σ is exactly 1,
/// resp. 0, beyond; n ≥ −125 keeps 2^(n−1) normal). Same bits as 1/(1 + exp_full(v)).
BODY VF sigmoid_neg(VF v, const int F) {
  v = selectv(v > splat(88.8f), splat(88.8f), v);
  v = selectv(v < splat(-86.5f), splat(-86.5f), v);
  VF t, p = exp_reduce(v, &t, F);
  return splat(1.0f) / (splat(1.0f) + pow2_scale(p, t));  // p·2ⁿ: one rounding, +inf past max
}

// MARK: - Groups of vectors

/// Elements go through the kernels in groups of U = 4 vectors of W (G = 4·W elements), and the U
/// sigmoids of a group are computed step by step together: U independent dependency chains keep
/// the core busy where one chain of ~60 cycles (exp, divide) would leave it waiting. A plane's
/// last hw mod G elements run through the same code as as many vectors as they need, the last
/// one partial (masked), so an element's result never depends on its position.
#define G (U * W)

/// σ(−v[u]) for the U vectors of a group, each step for all U before the next. Lane for lane
/// the operations of `sigmoid_neg`, so the same bits.
BODY void sigmoid_neg_group(VF v[U], const int nu, const int F) {
  const VF magic = splat(12582912.0f);
  VF t[U], r[U], r2[U], a[U], b[U], q[U];
  for (int u = 0; u < nu; u++) {
    v[u] = selectv(v[u] > splat(88.8f), splat(88.8f), v[u]);
    v[u] = selectv(v[u] < splat(-86.5f), splat(-86.5f), v[u]);
  }
  for (int u = 0; u < nu; u++) t[u] = madd(v[u], splat(1.44269504f), magic, F);
  for (int u = 0; u < nu; u++) r[u] = madd(t[u] - magic, splat(-0.693359375f), v[u], F);
  for (int u = 0; u < nu; u++) r[u] = madd(t[u] - magic, splat(2.1219444e-4f), r[u], F);
  for (int u = 0; u < nu; u++) r2[u] = r[u] * r[u];
  for (int u = 0; u < nu; u++) {
    a[u] = madd(r[u], splat(0.1666652113199234f), splat(0.4999999403953552f), F);
    b[u] = madd(r[u], splat(0.008368744514882565f), splat(0.04166839271783829f), F);
  }
  for (int u = 0; u < nu; u++)
    q[u] = madd(madd(r2[u], splat(0.0013814527774229646f), b[u], F), r2[u], a[u], F);
  for (int u = 0; u < nu; u++) {
    VF p = madd(r2[u], q[u], r[u], F) + 1.0f;
    v[u] = splat(1.0f) / (splat(1.0f) + pow2_scale(p, t[u]));
  }
}

/// The m ≤ G elements of a group at p: vector u is full, partial (m mod W lanes, `mask`) or
/// missing (reads as 0, writes nothing). Full groups (m = G) compile to plain loads and stores.
typedef struct {
  ptrdiff_t m;
  MASK mask;
} Extent;

BODY Extent extent(ptrdiff_t m) { return (Extent){m, tail_mask((int)(m % W))}; }

BODY VF load_u(const float *p, int u, Extent e, const int F) {
  if (W * u + W <= e.m) return loadv(p + W * u);
  if (W * u < e.m) return load_part(p + W * u, e.mask, (int)(e.m % W), F);
  return splat(0);
}

/// Stores vector u of a group; with `nt` a full vector goes out as a non-temporal (streaming)
/// store, which needs p + W·u aligned to the vector (see aligned_nt). The value is the same.
BODY void store_u(float *p, int u, Extent e, VF v, const int nt) {
  if (W * u + W <= e.m) {
    if (nt) __builtin_nontemporal_store(v, (VF *)(p + W * u));
    else storev(p + W * u, v);
  } else if (W * u < e.m) {
    store_part(p + W * u, e.mask, (int)(e.m % W), v);
  }
}

/// Whether a plane of hw elements at p can take streaming stores of full vectors: p aligned to
/// a vector (then so is every full vector of its groups). NULL counts as aligned.
BODY int aligned_nt(const float *p) { return ((uintptr_t)p & (W * sizeof(float) - 1)) == 0; }

// MARK: - Forward

/// One group of e.m elements: x → y (and sig); β is −nbv unless perElement, then betaE.
/// With `pixel` (Meta-ACON's pixel-wise switch) β = σ(x) per element, computed here.
BODY void forward_group(
    const float *x, float *y, float *sig, const float *betaE, Extent e, VF kv, VF qv, VF nbv,
    const int nu, const int F, const int hasSig, const int perElement, const int pixel,
    const int nt) {
  VF xv[U], d[U], s[U], pb[U];
  for (int u = 0; u < nu; u++) xv[u] = load_u(x, u, e, F);
  if (pixel) {
    for (int u = 0; u < nu; u++) pb[u] = -xv[u];
    sigmoid_neg_group(pb, nu, F);  // β = σ(x)
  }
  for (int u = 0; u < nu; u++) {
    d[u] = kv * xv[u];
    s[u] = (pixel ? -pb[u] : perElement ? -load_u(betaE, u, e, F) : nbv) * d[u];
  }
  sigmoid_neg_group(s, nu, F);
  for (int u = 0; u < nu; u++) {
    store_u(y, u, e, madd(d[u], s[u], qv * xv[u], F), nt);
    if (hasSig) store_u(sig, u, e, s[u], nt);
  }
}

/// One plane: x, y, sig (hw); β is `b` unless `betaE` (hw) gives one per element. `nt`: full
/// vectors of y and sig are streamed (both aligned).
BODY void forward_plane(
    const float *x, float *y, float *sig, ptrdiff_t hw, float k, float q, float b,
    const float *betaE, const int F, const int hasSig, const int perElement, const int pixel,
    const int nt) {
  const VF kv = splat(k), qv = splat(q), nbv = splat(-b);
  const Extent full = {.m = G};
  ptrdiff_t i = 0;
  for (; i + G <= hw; i += G)
    forward_group(
        x + i, y + i, sig + i, betaE + i, full, kv, qv, nbv, U, F, hasSig, perElement, pixel, nt);
  if (i < hw) {  // the rest: as many vectors as it needs
    Extent e = extent(hw - i);
#define REST(NU) \
  forward_group(                                                                               \
      x + i, y + i, sig + i, betaE + i, e, kv, qv, nbv, NU, F, hasSig, perElement, pixel, nt)
    switch ((hw - i + W - 1) / W) {
    case 1: REST(1); break;
    case 2: REST(2); break;
    case 3: REST(3); break;
    default: REST(4); break;
    }
#undef REST
  }
}

/// Channels [c0, c1) of (n, c, hw) tensors, or (c, n, hw) ones with `cm` (channels-major), planes
/// in memory order: sample by sample in NCHW order (planes (j, c0) … (j, c1 − 1) are contiguous),
/// channel by channel channels-major, so the memory streams are sequential. With `stream` (a
/// variant that has streaming stores) the planes whose outputs are aligned to a vector store them
/// non-temporally.
BODY void forward_channels(
    const float *x, float *y, float *sig, ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw, const int cm,
    ptrdiff_t c0, ptrdiff_t c1, const float *p1, const float *p2, const float *beta,
    AconBetaMode mode, const int F, const int hasSig, const int perElement, const int pixel,
    const int stream) {
  const ptrdiff_t outer = cm ? c1 - c0 : n, inner = cm ? n : c1 - c0;
  for (ptrdiff_t o = 0; o < outer; o++) {
    for (ptrdiff_t i = 0; i < inner; i++) {
      ptrdiff_t j = cm ? i : o, ch = c0 + (cm ? o : i), off = plane_offset(j, ch, n, c, hw, cm);
      const float *bp = pixel ? NULL : beta_at(beta, j, ch, c, hw, mode);
      float *sp = hasSig ? sig + off : NULL;
      float k = p1[ch] - p2[ch], b = (perElement || pixel) ? 0 : *bp;
      if (stream && aligned_nt(y + off) && aligned_nt(sp))
        forward_plane(x + off, y + off, sp, hw, k, p2[ch], b, bp, F, hasSig, perElement, pixel, 1);
      else
        forward_plane(x + off, y + off, sp, hw, k, p2[ch], b, bp, F, hasSig, perElement, pixel, 0);
    }
  }
}

// MARK: - Backward

/// Per-plane lane sums of dy·x·g (1), dy·x·(1 − g) (2) and dy·d²·w (3).
typedef struct {
  VF a1, a2, a3;
} Sums;

/// The gradients of W elements given their s; returns dx and the dβ terms, adds to the sums.
/// d = k·x, w = s·(1 − s) (exactly 0 once s has rounded to 0 or 1), g = s + β·(d·w) (finite
/// even where β·d overflows), dβ term (dy·(d·w))·d (0, never inf·0, when dy or w is 0).
BODY VF grad(VF xv, VF dyv, VF s, VF bv, VF kv, VF qv, Sums *acc, VF *db_out, const int F) {
  VF d = kv * xv;
  VF w = s * (splat(1.0f) - s);
  VF dw = d * w;
  VF g = madd(bv, dw, s, F);
  VF u = dyv * xv;
  VF ug = u * g;
  acc->a1 += ug;
  acc->a2 += u - ug;  // exact when g ≈ 1 (Sterbenz)
  *db_out = (dyv * dw) * d;
  return dyv * madd(kv, g, qv, F);
}

/// One group of e.m elements: x, dy → dx; sig read if hasSig; β is `bv` unless perElement, then
/// from betaE, and dβ is accumulated into dbetaE; otherwise into acc->a3. Missing and padding
/// lanes (x = dy = 0) add +0 to every sum.
/// With `pixel`, β = σ(x) is recomputed here, no dβ is kept, and dx gains the path through β:
/// dx += dβ·β·(1 − β) (dβ = dy·d²·w, the usual dβ term).
BODY void backward_group(
    const float *x, const float *dy, float *dx, const float *sig, const float *betaE,
    float *dbetaE, Extent e, VF kv, VF qv, VF bv, Sums *acc, const int nu, const int F,
    const int hasSig, const int hasDx, const int perElement, const int pixel, const int nt) {
  VF xv[U], bev[U], s[U];
  for (int u = 0; u < nu; u++) xv[u] = load_u(x, u, e, F);
  if (pixel) {
    for (int u = 0; u < nu; u++) bev[u] = -xv[u];
    sigmoid_neg_group(bev, nu, F);  // β = σ(x)
  }
  for (int u = 0; u < nu; u++) {
    if (!pixel) bev[u] = perElement ? load_u(betaE, u, e, F) : bv;
    s[u] = hasSig ? load_u(sig, u, e, F) : -bev[u] * (kv * xv[u]);
  }
  if (!hasSig) sigmoid_neg_group(s, nu, F);
  for (int u = 0; u < nu; u++) {
    VF db, dxv = grad(xv[u], load_u(dy, u, e, F), s[u], bev[u], kv, qv, acc, &db, F);
    if (pixel) {
      if (hasDx) store_u(dx, u, e, madd(db, bev[u] * (splat(1.0f) - bev[u]), dxv, F), nt);
    } else {
      if (hasDx) store_u(dx, u, e, dxv, nt);
      if (perElement) store_u(dbetaE, u, e, load_u(dbetaE, u, e, F) + db, 0);
      else acc->a3 += db;
    }
  }
}

/// One plane: x, dy, dx, sig, betaE, dbetaE (hw). β is `b` unless perElement. `nt`: full
/// vectors of dx are streamed (dx aligned).
BODY void backward_plane(
    const float *x, const float *dy, float *dx, const float *sig, ptrdiff_t hw, float k, float q,
    float b, const float *betaE, float *dbetaE, Sums *acc, const int F, const int hasSig,
    const int hasDx, const int perElement, const int pixel, const int nt) {
  const VF kv = splat(k), qv = splat(q), bv = splat(b);
  const Extent full = {.m = G};
  ptrdiff_t i = 0;
  for (; i + G <= hw; i += G)
    backward_group(
        x + i, dy + i, dx + i, sig + i, betaE + i, dbetaE + i, full, kv, qv, bv, acc, U, F,
        hasSig, hasDx, perElement, pixel, nt);
  if (i < hw) {  // the rest: as many vectors as it needs
    Extent e = extent(hw - i);
#define REST(NU)                                                                              \
  backward_group(x + i, dy + i, dx + i, sig + i, betaE + i, dbetaE + i, e, kv, qv, bv, acc, NU, \
                 F, hasSig, hasDx, perElement, pixel, nt)
    switch ((hw - i + W - 1) / W) {
    case 1: REST(1); break;
    case 2: REST(2); break;
    case 3: REST(3); break;
    default: REST(4); break;
    }
#undef REST
  }
}

/// Channels [c0, c1) of (n, c, hw) tensors, or (c, n, hw) ones with `cm`, in memory order as in
/// the forward pass, in chunks of up to CH channels whose sums wait on the stack. Each channel's
/// sums run over its planes in sample order, whatever the chunk and the layout: the bits do not
/// depend on how channels are split, nor on the layout. With `stream`, dx of planes aligned to a
/// vector is stored non-temporally.
BODY void backward_channels(
    const float *x, const float *dy, float *dx, const float *sig, ptrdiff_t n, ptrdiff_t c,
    ptrdiff_t hw, const int cm, ptrdiff_t c0, ptrdiff_t c1, const float *p1, const float *p2,
    const float *beta, float *dbeta, AconBetaMode mode, float *dp1, float *dp2, const int F,
    const int hasSig, const int hasDx, const int perElement, const int pixel, const int stream) {
  for (ptrdiff_t cb = c0; cb < c1; cb += CH) {
    ptrdiff_t ce = cb + CH < c1 ? cb + CH : c1;
    Sums acc[CH];  // per channel: dp1, dp2 and (channel mode) dβ lanes
    for (ptrdiff_t ch = cb; ch < ce; ch++) acc[ch - cb] = (Sums){splat(0), splat(0), splat(0)};
    const ptrdiff_t outer = cm ? ce - cb : n, inner = cm ? n : ce - cb;
    for (ptrdiff_t o = 0; o < outer; o++) {
      for (ptrdiff_t i = 0; i < inner; i++) {
        ptrdiff_t j = cm ? i : o, ch = cb + (cm ? o : i), off = plane_offset(j, ch, n, c, hw, cm);
        const float *bp = pixel ? NULL : beta_at(beta, j, ch, c, hw, mode);
        float *dbp = pixel ? NULL : dbeta + (bp - beta);
        Sums plane = {splat(0), splat(0), splat(0)};
        float *dxp = hasDx ? dx + off : NULL;
        const float *sp = hasSig ? sig + off : NULL;
        float k = p1[ch] - p2[ch], b = (perElement || pixel) ? 0 : *bp;
        if (stream && hasDx && aligned_nt(dxp))
          backward_plane(x + off, dy + off, dxp, sp, hw, k, p2[ch], b, bp, dbp, &plane, F, hasSig,
                         hasDx, perElement, pixel, 1);
        else
          backward_plane(x + off, dy + off, dxp, sp, hw, k, p2[ch], b, bp, dbp, &plane, F, hasSig,
                         hasDx, perElement, pixel, 0);
        Sums *a = &acc[ch - cb];
        a->a1 += plane.a1;
        a->a2 += plane.a2;
        if (pixel) continue;
        if (mode == AconBetaModePlane) *dbp += fixed_order_sum(plane.a3);
        else a->a3 += plane.a3;
      }
    }
    for (ptrdiff_t ch = cb; ch < ce; ch++) {
      dp1[ch] += fixed_order_sum(acc[ch - cb].a1);
      dp2[ch] += fixed_order_sum(acc[ch - cb].a2);
      if (!pixel && mode == AconBetaModeChannel) dbeta[ch] += fixed_order_sum(acc[ch - cb].a3);
    }
  }
}

// MARK: - Smooth maximum S(a, b) = (a − b)·σ(β·(a − b)) + b

/// One group of e.m elements: a, b → y.
BODY void smax_forward_group(
    const float *a, const float *b, float *y, Extent e, VF nbv, const int nu, const int F,
    const int nt) {
  VF bv[U], dl[U], s[U];
  for (int u = 0; u < nu; u++) {
    bv[u] = load_u(b, u, e, F);
    dl[u] = load_u(a, u, e, F) - bv[u];
    s[u] = nbv * dl[u];
  }
  sigmoid_neg_group(s, nu, F);
  for (int u = 0; u < nu; u++) store_u(y, u, e, madd(dl[u], s[u], bv[u], F), nt);
}

/// The elements [0, m) at a, b, y, in groups from a: y = δ·σ(β·δ) + b, δ = a − b.
BODY void smax_forward_run(
    const float *a, const float *b, float *y, ptrdiff_t m, VF nbv, const int F, const int nt) {
  const Extent full = {.m = G};
  ptrdiff_t i = 0;
  for (; i + G <= m; i += G) smax_forward_group(a + i, b + i, y + i, full, nbv, U, F, nt);
  if (i < m) {
    Extent e = extent(m - i);
    switch ((m - i + W - 1) / W) {
    case 1: smax_forward_group(a + i, b + i, y + i, e, nbv, 1, F, nt); break;
    case 2: smax_forward_group(a + i, b + i, y + i, e, nbv, 2, F, nt); break;
    case 3: smax_forward_group(a + i, b + i, y + i, e, nbv, 3, F, nt); break;
    default: smax_forward_group(a + i, b + i, y + i, e, nbv, 4, F, nt); break;
    }
  }
}

/// Planes [p0, p1) of hw elements each: y = δ·σ(β·δ) + b, δ = a − b. Every element's result is
/// independent of its position, so the planes run as one range of elements; with `stream`, the
/// elements before y's first vector-aligned address go first, then the rest with streaming
/// stores of its full vectors.
BODY void smax_forward_planes(
    const float *a, const float *b, float *y, ptrdiff_t hw, ptrdiff_t p0, ptrdiff_t p1,
    float beta, const int F, const int stream) {
  const VF nbv = splat(-beta);
  ptrdiff_t o = p0 * hw, m = (p1 - p0) * hw;
  ptrdiff_t head = stream ? (ptrdiff_t)((-(uintptr_t)(y + o) & (W * sizeof(float) - 1)) / sizeof(float)) : m;
  if (stream && ((uintptr_t)(y + o) & (sizeof(float) - 1)) == 0 && head < m) {
    smax_forward_run(a + o, b + o, y + o, head, nbv, F, 0);
    o += head;
    smax_forward_run(a + o, b + o, y + o, m - head, nbv, F, 1);
  } else {
    smax_forward_run(a + o, b + o, y + o, m, nbv, F, 0);
  }
}

/// One group: a, b, dy → da = dy·g, db = dy − da with g = s + β·δ·w, w = s·(1 − s); the dβ
/// terms dy·δ²·w go to the lanes of *acc. Padding lanes add +0.
BODY void smax_backward_group(
    const float *a, const float *b, const float *dy, float *da, float *db, Extent e, VF bv,
    VF *acc, const int nu, const int F, const int nt) {
  VF dl[U], s[U];
  for (int u = 0; u < nu; u++) {
    dl[u] = load_u(a, u, e, F) - load_u(b, u, e, F);
    s[u] = -bv * dl[u];
  }
  sigmoid_neg_group(s, nu, F);
  for (int u = 0; u < nu; u++) {
    VF dyv = load_u(dy, u, e, F);
    VF dw = dl[u] * (s[u] * (splat(1.0f) - s[u]));
    VF dav = dyv * madd(bv, dw, s[u], F);
    store_u(da, u, e, dav, nt);
    store_u(db, u, e, dyv - dav, nt);
    *acc += (dyv * dw) * dl[u];
  }
}

/// The elements [0, m) at a, b, dy, da, db, in groups from a; the dβ terms go to *acc's lanes.
BODY void smax_backward_run(
    const float *a, const float *b, const float *dy, float *da, float *db, ptrdiff_t m, VF bv,
    VF *acc, const int F, const int nt) {
  const Extent full = {.m = G};
  ptrdiff_t i = 0;
  for (; i + G <= m; i += G)
    smax_backward_group(a + i, b + i, dy + i, da + i, db + i, full, bv, acc, U, F, nt);
  if (i < m) {
    Extent e = extent(m - i);
#define REST(NU) smax_backward_group(a + i, b + i, dy + i, da + i, db + i, e, bv, acc, NU, F, nt)
    switch ((m - i + W - 1) / W) {
    case 1: REST(1); break;
    case 2: REST(2); break;
    case 3: REST(3); break;
    default: REST(4); break;
    }
#undef REST
  }
}

/// Planes [p0, p1): da, db overwritten; dbeta[p] += the plane's Σ dy·δ²·w unless dbeta is NULL
/// (each plane's sum in its own lanes, groups from the plane's start). Without dbeta the planes
/// run as one range of elements, and with `stream` da and db are streamed once both are
/// vector-aligned (the head before that first; da and db must then share their alignment).
BODY void smax_backward_planes(
    const float *a, const float *b, const float *dy, float *da, float *db, ptrdiff_t hw,
    ptrdiff_t p0, ptrdiff_t p1, float beta, float *dbeta, const int F, const int stream) {
  const VF bv = splat(beta);
  if (!dbeta) {
    VF acc = splat(0);
    ptrdiff_t o = p0 * hw, m = (p1 - p0) * hw;
    const uintptr_t vec = W * sizeof(float);
    ptrdiff_t head = (ptrdiff_t)((-(uintptr_t)(da + o) & (vec - 1)) / sizeof(float));
    if (stream && ((uintptr_t)(da + o) & (sizeof(float) - 1)) == 0 &&
        ((uintptr_t)(da + o) & (vec - 1)) == ((uintptr_t)(db + o) & (vec - 1)) && head < m) {
      smax_backward_run(a + o, b + o, dy + o, da + o, db + o, head, bv, &acc, F, 0);
      o += head;
      smax_backward_run(a + o, b + o, dy + o, da + o, db + o, m - head, bv, &acc, F, 1);
    } else {
      smax_backward_run(a + o, b + o, dy + o, da + o, db + o, m, bv, &acc, F, 0);
    }
    return;
  }
  for (ptrdiff_t p = p0; p < p1; p++) {
    ptrdiff_t o = p * hw;
    VF acc = splat(0);
    int nt = stream && aligned_nt(da + o) && aligned_nt(db + o);
    if (nt) smax_backward_run(a + o, b + o, dy + o, da + o, db + o, hw, bv, &acc, F, 1);
    else smax_backward_run(a + o, b + o, dy + o, da + o, db + o, hw, bv, &acc, F, 0);
    dbeta[p] += fixed_order_sum(acc);
  }
}

/// dst[i] = src[i] + v for i in [0, m), from the last element to the first (the most recently
/// written part of src, likelier in cache, first); with `stream` the vector-aligned part of dst
/// takes streaming stores. One rounding per element: the same bits in any order.
BODY void add_scalar(const float *src, float *dst, ptrdiff_t m, float v, const int nt_ok) {
  const uintptr_t vec = W * sizeof(float);
  ptrdiff_t head = (ptrdiff_t)((-(uintptr_t)dst & (vec - 1)) / sizeof(float));
  if (!nt_ok || ((uintptr_t)dst & (sizeof(float) - 1)) != 0 || head > m) head = m;
  ptrdiff_t body = (m - head) / W * W, i = m;
  const VF vv = splat(v);
  for (; i > head + body; i--) dst[i - 1] = src[i - 1] + v;
  for (; i > head; i -= W) __builtin_nontemporal_store(loadv(src + i - W) + vv, (VF *)(dst + i - W));
  for (; i >= W; i -= W) storev(dst + i - W, loadv(src + i - W) + vv);
  for (; i > 0; i--) dst[i - 1] = src[i - 1] + v;
}

// MARK: - Exp and sigmoid over arrays

/// y = e^x (or σ(x)) for `count` floats; the last count mod W go through one partial vector.
BODY void map_channel(const float *x, float *y, ptrdiff_t count, const int F, const int sigmoid) {
  ptrdiff_t i = 0;
  for (; i + W <= count; i += W) {
    VF v = loadv(x + i);
    storev(y + i, sigmoid ? sigmoid_neg(-v, F) : exp_full(v, F));
  }
  if (i < count) {
    Extent e = extent(count - i);
    VF v = load_u(x + i, 0, e, F);
    store_u(y + i, 0, e, sigmoid ? sigmoid_neg(-v, F) : exp_full(v, F), 0);
  }
}

#undef splat
#undef loadv
#undef storev
#undef selectv
#undef fixed_order_sum
#undef tail_mask
#undef load_part
#undef store_part
#undef madd
#undef pow2_scale
#undef exp_reduce
#undef exp_full
#undef sigmoid_neg
#undef sigmoid_neg_group
#undef Extent
#undef extent
#undef load_u
#undef store_u
#undef forward_group
#undef forward_plane
#undef forward_channels
#undef Sums
#undef grad
#undef backward_group
#undef backward_plane
#undef backward_channels
#undef map_channel
#undef smax_forward_group
#undef smax_forward_planes
#undef smax_backward_group
#undef smax_backward_planes
#undef smax_forward_run
#undef smax_backward_run
#undef aligned_nt
#undef add_scalar
#undef G
