/* Vectorisable fp32 math loops, included three times by vec.c: compiled for AVX-512, for AVX2+FMA and for
 * the baseline ISA, each with its own FR__V(name) suffix and block width FR__VW (16, 8, 8 floats: one
 * vector register). The loops are branch-free and work on blocks of FR__VW so the compiler vectorises them
 * (including the sums, FR__VW partial sums) without -ffast-math. No include guard on purpose. */

/* exp(x) for fp32: range reduction x = n ln2 + r (|r| <= ln2/2, ln2 split in two parts), Cephes' degree-5
 * minimax polynomial for exp(r), and 2^n built in the exponent bits. About 1 ulp of error over
 * [-87.3, 88.3]. Edges: NaN gives NaN; +inf and anything above 88.7228317 (the largest float whose expf is
 * finite) give +inf, as expf; inputs in (88.3, 88.7228317] give exp(88.3) = 2.1e38 (clamped; expf reaches
 * 3.4e38 there: no caller comes near, softmax feeds x - max <= 0 and SiLU/GELU exp(-|x|)); inputs below
 * -87.3 (including -inf from masks) give exactly 0 (expf gives values under 1.3e-38 there).
 * The clamps come first and are written so that NaN takes them too (a comparison with NaN is false, so
 * `x < c ? x : c` yields c): the float -> int conversion only ever sees n in [-126, 127], which keeps it
 * defined behaviour (UBSan found (int32_t)NaN here). NaN is then put back by adding x - x (0 for finite x,
 * NaN for NaN and +-inf; the two selects after it decide the infinities), cheaper than a compare + blend. */
static inline float FR__V(exp1)(float x) {
  float xc = x < 88.3f ? x : 88.3f; /* NaN and +inf take the upper clamp */
  xc = xc > -87.3f ? xc : -87.3f;
  float n = xc * 1.44269504088896341f;
  n = (n + 12582912.0f) - 12582912.0f; /* round to nearest integer (1.5 * 2^23 trick) */
  float r = xc - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  union {
    int32_t i;
    float f;
  } s;
  s.i = ((int32_t)n + 127) * (1 << 23); /* n in [-126, 127]: a normal power of two */
  float y = p * s.f + (x - x);          /* NaN in, NaN out: a hidden NaN would hide a broken model */
  y = x < -87.3f ? 0.0f : y;
  return x > 88.7228317f ? INFINITY : y;
}

/* erf(x), Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7) with the odd symmetry. */
static inline float FR__V(erf1)(float x) {
  float a = x < 0 ? -x : x;
  float t = 1.0f / (1.0f + 0.3275911f * a);
  float p = 1.061405429f;
  p = p * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  float e = 1.0f - p * t * FR__V(exp1)(-a * a);
  return x < 0 ? -e : e;
}

#ifndef FR__VEC_OWN_SOFTMAX /* an includer with hand-written softmax loops defines these two itself */
/* x[j] = exp(x[j] - m) for j < n; returns the sum of the new values (FR__VW partial sums). */
static float FR__V(exp_sum)(float *x, int64_t n, float m) {
  float acc[FR__VW] = {0};
  int64_t j = 0;
  for (; j + FR__VW <= n; j += FR__VW) {
    for (int k = 0; k < FR__VW; k++) {
      float v = FR__V(exp1)(x[j + k] - m);
      x[j + k] = v;
      acc[k] += v;
    }
  }
  float s = 0;
  for (; j < n; j++) {
    x[j] = FR__V(exp1)(x[j] - m);
    s += x[j];
  }
  for (int k = 0; k < FR__VW; k++)
    s += acc[k];
  return s;
}

/* max of x[0..n) (n >= 1). GCC vector extensions: the compiler will not turn a float max reduction into
 * vector code by itself without -ffinite-math-only. */
static float FR__V(max)(const float *x, int64_t n) {
  typedef float vf __attribute__((vector_size(FR__VW * 4)));
  typedef int32_t vi __attribute__((vector_size(FR__VW * 4)));
  vf acc = x[0] + (vf){0}; /* x[0] in every lane */
  int64_t j = 0;
  for (; j + FR__VW <= n; j += FR__VW) {
    vf v;
    memcpy(&v, x + j, sizeof v);
    vi gt = v > acc;
    acc = (vf)(((vi)v & gt) | ((vi)acc & ~gt));
  }
  float m = x[0];
  for (; j < n; j++)
    m = x[j] > m ? x[j] : m;
  for (int k = 0; k < FR__VW; k++)
    m = acc[k] > m ? acc[k] : m;
  return m;
}
#endif

/* y = x * sigmoid(alpha x): SiLU (alpha 1) and QuickGELU (alpha 1.702). */
static void FR__V(silu)(float *y, const float *x, int64_t n, float alpha) {
  for (int64_t j = 0; j < n; j++)
    y[j] = x[j] / (1.0f + FR__V(exp1)(-alpha * x[j]));
}

static void FR__V(gelu)(float *y, const float *x, int64_t n) {
  for (int64_t j = 0; j < n; j++)
    y[j] = 0.5f * x[j] * (1.0f + FR__V(erf1)(x[j] * 0.70710678118654752f));
}

static void FR__V(geglu)(float *y, const float *h, const float *g, int64_t n) {
  for (int64_t j = 0; j < n; j++)
    y[j] = h[j] * (0.5f * g[j] * (1.0f + FR__V(erf1)(g[j] * 0.70710678118654752f)));
}

/* y = x * sc + sh, then SiLU when silu is set (GroupNorm's per-channel affine). */
static void FR__V(affine_silu)(float *y, const float *x, int64_t n, float sc, float sh, int silu) {
  if (silu) {
    for (int64_t j = 0; j < n; j++) {
      float v = x[j] * sc + sh;
      y[j] = v / (1.0f + FR__V(exp1)(-v));
    }
  } else {
    for (int64_t j = 0; j < n; j++)
      y[j] = x[j] * sc + sh;
  }
}

/* Mean and biased variance of x[0..n) (n >= 1), in double (GroupNorm groups hold up to 40 x 128 x 128
 * values: a float sum would lose digits), two passes, each with FR__VW partial sums so the float -> double
 * conversions and adds vectorise (a single running double sum is one long dependency chain). */
static void FR__V(mean_var)(const float *x, int64_t n, double *mean, double *var) {
  double a[FR__VW] = {0};
  int64_t j = 0;
  for (; j + FR__VW <= n; j += FR__VW)
    for (int k = 0; k < FR__VW; k++)
      a[k] += (double)x[j + k];
  double s = 0;
  for (; j < n; j++)
    s += (double)x[j];
  for (int k = 0; k < FR__VW; k++)
    s += a[k];
  double m = s / (double)n, b[FR__VW] = {0}, v = 0;
  for (j = 0; j + FR__VW <= n; j += FR__VW)
    for (int k = 0; k < FR__VW; k++) {
      double d = (double)x[j + k] - m;
      b[k] += d * d;
    }
  for (; j < n; j++) {
    double d = (double)x[j] - m;
    v += d * d;
  }
  for (int k = 0; k < FR__VW; k++)
    v += b[k];
  *mean = m;
  *var = v / (double)n;
}

/* LayerNorm's output row: y = (x - mean) * rstd, times g and plus b where given (per element). */
static void FR__V(norm_affine)(float *y, const float *x, int64_t n, float mean, float rstd, const float *g,
                               const float *b) {
  if (g && b) {
    for (int64_t j = 0; j < n; j++)
      y[j] = (x[j] - mean) * rstd * g[j] + b[j];
  } else if (g) {
    for (int64_t j = 0; j < n; j++)
      y[j] = (x[j] - mean) * rstd * g[j];
  } else if (b) {
    for (int64_t j = 0; j < n; j++)
      y[j] = (x[j] - mean) * rstd + b[j];
  } else {
    for (int64_t j = 0; j < n; j++)
      y[j] = (x[j] - mean) * rstd;
  }
}

/* x *= s */
static void FR__V(scale)(float *x, int64_t n, float s) {
  for (int64_t j = 0; j < n; j++)
    x[j] *= s;
}

/* y += a x (the direct convolution's inner loop: rows of a few hundred floats) */
static void FR__V(axpy)(float *restrict y, const float *restrict x, int64_t n, float a) {
  int64_t j = 0;
  for (; j + FR__VW <= n; j += FR__VW)
    for (int k = 0; k < FR__VW; k++)
      y[j + k] += a * x[j + k];
  for (; j < n; j++)
    y[j] += a * x[j];
}

static const struct fr_cpu_vec FR__V(table) = {
    FR__V(exp_sum),     FR__V(max),   FR__V(silu),     FR__V(gelu),        FR__V(geglu),
    FR__V(affine_silu), FR__V(scale), FR__V(mean_var), FR__V(norm_affine), FR__V(axpy),
};
