/* The CPU engine's memory: 16-bit weights stay 16-bit and compute against fp32 references, and the
 * size-class pool's peak is the live set.
 *
 * 1. Every 16-bit -> fp32 converter this CPU can run (scalar, F16C, AVX-512) against the definition of the
 *    formats worked out here (sign, exponent, mantissa in float64): bit-exact, including subnormals, inf,
 *    NaN and -0, at lengths that leave a tail after the vector loop.
 * 2. fr_ctx_weight keeps an F16/BF16 matrix 16-bit on the CPU, a vector becomes F32.
 * 3. fr_linear, fr_conv2d (3x3 pad 1, stride 2, 1x1), fr_embedding and fr_slice with F16 and BF16 weights
 *    against float64 references computed here from the same 16-bit values, including shapes big enough to
 *    be split into several weight panels (kernels/cpu/gemm.c, FR__WPANEL_BUDGET = 16 M floats), with one
 *    image and with two (the merged-batch conv path).
 *    Tolerance: max |y - ref| / max |ref| <= 1e-5: the only error is fp32 accumulation over K <= 18432
 *    terms (~ sqrt(K) * 2^-24 ~ 8e-6 worst case on random data; measured ~1e-7); a wrong panel offset or a
 *    mis-converted weight gives errors of order 1.
 * 4. The pool: a chain of ops of one size, freeing as it goes, peaks at the live set (two tensors plus the
 *    input), not the sum of the chain's outputs; the freed blocks are reused (cached).
 *
 * The converter the ops use is chosen once per process: the best the CPU has, or FR_CPU_ISA (scalar | f16c |
 * avx512). ctest runs this program once per value (test_cpu_mem_scalar, _f16c, _avx512) so each path runs
 * the ops; the test checks the forced one is in use where the CPU supports it. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu.h"
#include "kernels/ops.h"
#include "tests/test.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double urand(void) { /* [-1, 1) */
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (double)(rng >> 11) / (double)(1ull << 52) - 1.0;
}

/* The IEEE half and bfloat16 definitions, in float64. */
static double f16_def(uint16_t h) {
  int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
  return s ? -v : v;
}
static double bf16_def(uint16_t b) {
  int s = b >> 15, e = (b >> 7) & 255, m = b & 127;
  double v = e == 0 ? ldexp(m, -133) : e == 255 ? (m ? NAN : INFINITY) : ldexp(128 + m, e - 134);
  return s ? -v : v;
}
static double half_def(enum fr_dtype dt, uint16_t v) {
  return dt == FR_F16 ? f16_def(v) : bf16_def(v);
}

/* A 16-bit value near x (truncating the fp32 for BF16; for F16 the nearest normal found by search would
 * do as well, any 16-bit pattern is a fine test value): random data in the weight's own format. */
static uint16_t to_half(enum fr_dtype dt, double x) {
  if (dt == FR_BF16) {
    float f = (float)x;
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
  }
  /* F16: sign, then a normal value with exponent from frexp; small values flush to subnormal steps */
  uint16_t s = x < 0 ? 0x8000 : 0;
  double a = fabs(x);
  if (a < ldexp(1, -14))
    return s | (uint16_t)(a / ldexp(1, -24));
  int e;
  double m = frexp(a, &e); /* a = m 2^e, m in [0.5, 1) */
  int mant = (int)((m * 2 - 1) * 1024);
  return s | (uint16_t)((e - 1 + 15) << 10) | (uint16_t)mant;
}

static struct fr_tensor *half_tensor(enum fr_dtype dt, int ndim, const int64_t *shape, double scale) {
  struct fr_tensor *t = fr_tensor_new(dt, ndim, shape);
  uint16_t *p = t->data;
  for (int64_t i = 0; i < fr_tensor_numel(t); i++)
    p[i] = to_half(dt, urand() * scale);
  return t;
}
static struct fr_tensor *f32_tensor(int ndim, const int64_t *shape) {
  struct fr_tensor *t = fr_tensor_new(FR_F32, ndim, shape);
  float *p = t->data;
  for (int64_t i = 0; i < fr_tensor_numel(t); i++)
    p[i] = (float)urand();
  return t;
}
static double wv(const struct fr_tensor *w, int64_t i) {
  return half_def(w->dtype, ((const uint16_t *)w->data)[i]);
}

/* max |got - ref| / max |ref| */
static double nerr(const struct fr_tensor *got, const double *ref, int64_t n) {
  const float *g = got->data;
  double d = 0, m = 0;
  for (int64_t i = 0; i < n; i++) {
    d = fmax(d, fabs(g[i] - ref[i]));
    m = fmax(m, fabs(ref[i]));
  }
  return m > 0 ? d / m : d;
}

static void test_converters(void) {
  fr_cpu_half_fn fns[4];
  const char *names[4];
  int n = fr_cpu_half_all(fns, names, 4);
  CHECK(n >= 1 && strcmp(names[0], "scalar") == 0);
  enum { N = 65536 + 13 }; /* every 16-bit pattern, then a tail that no vector width divides */
  uint16_t *src = malloc(N * sizeof *src);
  float *dst = malloc(N * sizeof *dst);
  for (int i = 0; i < N; i++)
    src[i] = (uint16_t)(i < 65536 ? i : i * 7919);
  for (int dti = 0; dti < 2; dti++) {
    enum fr_dtype dt = dti ? FR_BF16 : FR_F16;
    for (int k = 0; k < n; k++) {
      for (int off = 0; off < 3; off++) { /* unaligned starts and odd lengths */
        memset(dst, 0xff, N * sizeof *dst);
        fns[k](dst + off, src + off, (size_t)(N - 2 * off), dt);
        long bad = 0;
        for (int i = off; i < N - off; i++) {
          double want = half_def(dt, src[i]);
          bool ok =
              isnan(want) ? isnan(dst[i]) : (double)dst[i] == want && !signbit(dst[i]) == !signbit(want);
          if (!ok && !bad)
            printf("%s %s: 0x%04x gives %.9g, the definition %.9g\n", names[k], fr_dtype_name(dt), src[i],
                   (double)dst[i], want);
          bad += !ok;
        }
        CHECKF(bad == 0, "%s %s offset %d: %ld values differ from the definition", names[k],
               fr_dtype_name(dt), off, bad);
      }
    }
  }
  printf("converters: %d checked bit-exact (", n);
  for (int k = 0; k < n; k++)
    printf("%s%s", k ? ", " : "", names[k]);
  printf(")\n");
  free(src);
  free(dst);
}

/* y [M, N] = x [M, K] w^T + b with a 16-bit w. */
static void check_linear(struct fr_ctx *c, enum fr_dtype dt, int64_t M, int64_t N, int64_t K, bool bias) {
  struct fr_tensor *xh = f32_tensor(2, (int64_t[]){M, K});
  struct fr_tensor *wh = half_tensor(dt, 2, (int64_t[]){N, K}, 0.5);
  struct fr_tensor *bh = bias ? f32_tensor(1, (int64_t[]){N}) : NULL;
  struct fr_tensor *x = fr_ctx_upload(c, xh), *w = fr_ctx_weight(c, wh),
                   *b = bh ? fr_ctx_weight(c, bh) : NULL;
  CHECKF(w && w->dtype == dt, "linear weight [%lld, %lld] kept %s", (long long)N, (long long)K,
         fr_dtype_name(dt));
  struct fr_tensor *y = fr_linear(c, x, w, b);
  struct fr_tensor *yh = y ? fr_ctx_download(c, y) : NULL;
  CHECK(yh != NULL);
  if (yh) {
    double *ref = malloc((size_t)(M * N) * sizeof *ref);
    const float *xp = xh->data;
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) {
        double s = bh ? ((const float *)bh->data)[j] : 0;
        for (int64_t k = 0; k < K; k++)
          s += (double)xp[i * K + k] * wv(wh, j * K + k);
        ref[i * N + j] = s;
      }
    double e = nerr(yh, ref, M * N);
    printf("linear %s [%lld, %lld] x [%lld, %lld]%s: %.2e\n", fr_dtype_name(dt), (long long)M, (long long)K,
           (long long)N, (long long)K, bias ? " + b" : "", e);
    CHECKF(e <= 1e-5, "linear %s [%lld,%lld]: error %.2e", fr_dtype_name(dt), (long long)N, (long long)K, e);
    free(ref);
  }
  fr_tensor_free(yh);
  fr_tensor_free(y);
  fr_tensor_free(x);
  fr_tensor_free(w);
  fr_tensor_free(b);
  fr_tensor_free(xh);
  fr_tensor_free(wh);
  fr_tensor_free(bh);
}

/* y [B, O, Ho, Wo] = conv2d(x [B, C, H, W], w [O, C, k, k] 16-bit, b) */
static void check_conv(struct fr_ctx *c, enum fr_dtype dt, int64_t B, int64_t C, int64_t H, int64_t W,
                       int64_t O, int64_t k, int stride, int pad) {
  struct fr_tensor *xh = f32_tensor(4, (int64_t[]){B, C, H, W});
  struct fr_tensor *wh = half_tensor(dt, 4, (int64_t[]){O, C, k, k}, 0.5);
  struct fr_tensor *bh = f32_tensor(1, (int64_t[]){O});
  struct fr_tensor *x = fr_ctx_upload(c, xh), *w = fr_ctx_weight(c, wh), *b = fr_ctx_weight(c, bh);
  CHECK(w && w->dtype == dt);
  struct fr_tensor *y = fr_conv2d(c, x, w, b, stride, pad);
  struct fr_tensor *yh = y ? fr_ctx_download(c, y) : NULL;
  CHECK(yh != NULL);
  if (yh) {
    int64_t Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1, n = B * O * Ho * Wo;
    double *ref = malloc((size_t)n * sizeof *ref);
    const float *xp = xh->data;
    for (int64_t bi = 0; bi < B; bi++)
      for (int64_t o = 0; o < O; o++)
        for (int64_t oh = 0; oh < Ho; oh++)
          for (int64_t ow = 0; ow < Wo; ow++) {
            double s = ((const float *)bh->data)[o];
            for (int64_t ci = 0; ci < C; ci++)
              for (int64_t i = 0; i < k; i++)
                for (int64_t j = 0; j < k; j++) {
                  int64_t ih = oh * stride - pad + i, iw = ow * stride - pad + j;
                  if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                    s += (double)xp[((bi * C + ci) * H + ih) * W + iw] *
                         wv(wh, ((o * C + ci) * k + i) * k + j);
                }
            ref[((bi * O + o) * Ho + oh) * Wo + ow] = s;
          }
    double e = nerr(yh, ref, n);
    printf("conv2d %s [%lld, %lld, %lld, %lld] * [%lld, %lld, %lld, %lld] stride %d pad %d: %.2e\n",
           fr_dtype_name(dt), (long long)B, (long long)C, (long long)H, (long long)W, (long long)O,
           (long long)C, (long long)k, (long long)k, stride, pad, e);
    CHECKF(e <= 1e-5, "conv2d %s O %lld C %lld k %lld: error %.2e", fr_dtype_name(dt), (long long)O,
           (long long)C, (long long)k, e);
    free(ref);
  }
  fr_tensor_free(yh);
  fr_tensor_free(y);
  fr_tensor_free(x);
  fr_tensor_free(w);
  fr_tensor_free(b);
  fr_tensor_free(xh);
  fr_tensor_free(wh);
  fr_tensor_free(bh);
}

/* fr_embedding from a 16-bit table, and a slice of a 16-bit weight (stays 16-bit) used in a linear. */
static void check_table_and_slice(struct fr_ctx *c, enum fr_dtype dt) {
  struct fr_tensor *th = half_tensor(dt, 2, (int64_t[]){50, 24}, 2.0);
  struct fr_tensor *t = fr_ctx_weight(c, th);
  int32_t idv[5] = {0, 49, 7, 7, 13};
  struct fr_tensor *idh = fr_tensor_view(FR_I32, 1, (int64_t[]){5}, idv);
  struct fr_tensor *ids = fr_ctx_upload(c, idh);
  struct fr_tensor *y = fr_embedding(c, ids, t), *yh = y ? fr_ctx_download(c, y) : NULL;
  CHECK(yh != NULL);
  long bad = 0;
  for (int i = 0; yh && i < 5; i++)
    for (int j = 0; j < 24; j++)
      bad += ((const float *)yh->data)[i * 24 + j] != (float)wv(th, idv[i] * 24 + j);
  CHECKF(bad == 0, "embedding %s: %ld values differ", fr_dtype_name(dt), bad);
  /* rows 10..19 of the table as a weight [10, 24]: y = x s^T */
  struct fr_tensor *s = fr_slice(c, t, 0, 10, 10);
  CHECK(s && s->dtype == dt);
  struct fr_tensor *xh = f32_tensor(2, (int64_t[]){3, 24}), *x = fr_ctx_upload(c, xh);
  struct fr_tensor *z = fr_linear(c, x, s, NULL), *zh = z ? fr_ctx_download(c, z) : NULL;
  CHECK(zh != NULL);
  if (zh) {
    double ref[30];
    for (int i = 0; i < 3; i++)
      for (int j = 0; j < 10; j++) {
        double acc = 0;
        for (int k = 0; k < 24; k++)
          acc += (double)((const float *)xh->data)[i * 24 + k] * wv(th, (10 + j) * 24 + k);
        ref[i * 10 + j] = acc;
      }
    double e = nerr(zh, ref, 30);
    CHECKF(e <= 1e-5, "linear on a slice of a %s weight: error %.2e", fr_dtype_name(dt), e);
  }
  /* an op without a 16-bit path widens a 16-bit weight operand: x [3, 24] + the table's row 0 */
  struct fr_tensor *r0 = fr_slice(c, t, 0, 0, 1), *sum = r0 ? fr_add(c, x, r0) : NULL;
  struct fr_tensor *sh = sum ? fr_ctx_download(c, sum) : NULL;
  CHECK(sh != NULL);
  bad = 0;
  for (int i = 0; sh && i < 3; i++)
    for (int j = 0; j < 24; j++)
      bad += ((const float *)sh->data)[i * 24 + j] !=
             (float)((double)((const float *)xh->data)[i * 24 + j] + wv(th, j));
  CHECKF(bad == 0, "add of a %s weight row: %ld values differ", fr_dtype_name(dt), bad);
  struct fr_tensor *all[] = {th, t, idh, ids, y, yh, s, xh, x, z, zh, r0, sum, sh};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    fr_tensor_free(all[i]);
}

/* The pool's size class of n bytes: n rounded up to a multiple of 2^(k-3), k = floor(log2 n). */
static size_t class_size(size_t n) {
  int k = 0;
  while (((size_t)2 << k) <= n)
    k++;
  size_t step = (size_t)1 << (k - 3);
  return (n + step - 1) / step * step;
}

static void test_pool(void) {
  struct fr_ctx *c = NULL;
  struct fr_err err = {{0}};
  CHECK_OK(fr_ctx_new(&(struct fr_ctx_opts){.device = "cpu", .threads = 1}, &c, &err), &err);
  if (!c)
    return;
  const int64_t shape[2] = {3, 100000}; /* 1.2 MB: pooled, not a power of two (class 1,310,720 bytes) */
  size_t cls = class_size(3 * 100000 * 4);
  struct fr_tensor *xh = f32_tensor(2, shape), *x = fr_ctx_upload(c, xh);
  struct fr_ctx_mem m = {0};
  CHECK_OK(fr_ctx_mem_stats(c, true, &m, &err), &err);
  CHECKF(m.in_use == cls && m.peak == cls, "after the upload: in_use %zu, peak %zu, expected %zu", m.in_use,
         m.peak, cls);
  /* y_{i+1} = silu(y_i), freeing y_i: at most x + two chain tensors live at once */
  struct fr_tensor *y = fr_silu(c, x);
  for (int i = 0; i < 20 && y; i++) {
    struct fr_tensor *z = fr_silu(c, y);
    fr_tensor_free(y);
    y = z;
  }
  CHECK(y != NULL);
  CHECK_OK(fr_ctx_mem_stats(c, false, &m, &err), &err);
  printf("pool: 21 outputs of %zu bytes, peak %zu (x + 2 live), in use %zu, cached %zu\n", cls, m.peak,
         m.in_use, m.cached);
  CHECKF(m.peak == 3 * cls, "peak %zu, expected the live set 3 x %zu (not the sum of 21 outputs)", m.peak,
         cls);
  CHECKF(m.in_use == 2 * cls && m.cached == cls, "in use %zu (expected 2 x %zu), cached %zu", m.in_use, cls,
         m.cached);
  /* a different size misses: the kept block goes back to the heap first, so the pool holds the live set */
  struct fr_tensor *oh = fr_tensor_new(FR_F32, 2, (int64_t[]){7, 100000});
  memset(oh->data, 0, fr_tensor_nbytes(oh));
  struct fr_tensor *o = fr_ctx_upload(c, oh);
  CHECK_OK(fr_ctx_mem_stats(c, false, &m, &err), &err);
  size_t cls7 = class_size(7 * 100000 * 4);
  CHECKF(m.cached == 0 && m.in_use == 2 * cls + cls7 && m.peak == 2 * cls + cls7,
         "after a miss: cached %zu (expected 0), in use %zu, peak %zu (expected %zu)", m.cached, m.in_use,
         m.peak, 2 * cls + cls7);
  fr_tensor_free(o);
  fr_tensor_free(oh);
  fr_tensor_free(y);
  /* a tensor may outlive its context: freeing it afterwards is clean (ASan) */
  fr_ctx_free(c);
  fr_tensor_free(x);
  fr_tensor_free(xh);
}

int main(void) {
  test_converters();
  const char *name = NULL, *want = getenv("FR_CPU_ISA");
  fr_cpu_half(&name);
  fr_cpu_half_fn fns[4];
  const char *names[4];
  int n = fr_cpu_half_all(fns, names, 4);
  bool supported = false;
  for (int i = 0; want && i < n; i++)
    supported = supported || strcmp(names[i], want) == 0;
  printf("ops convert with: %s (FR_CPU_ISA=%s)\n", name, want ? want : "");
  if (want && supported)
    CHECKF(strcmp(name, want) == 0, "FR_CPU_ISA=%s but %s is in use", want, name);
  else if (want)
    printf("this CPU lacks %s: the fallback %s runs\n", want, name);

  struct fr_ctx *c = NULL;
  struct fr_err err = {{0}};
  CHECK_OK(fr_ctx_new(&(struct fr_ctx_opts){.device = "cpu", .threads = 2}, &c, &err), &err);
  if (c) {
    /* a vector weight becomes F32 */
    struct fr_tensor *vh = half_tensor(FR_F16, 1, (int64_t[]){8}, 1.0), *v = fr_ctx_weight(c, vh);
    CHECK(v && v->dtype == FR_F32);
    fr_tensor_free(v);
    fr_tensor_free(vh);
    for (int d = 0; d < 2; d++) {
      enum fr_dtype dt = d ? FR_BF16 : FR_F16;
      check_linear(c, dt, 5, 33, 40, true);
      check_linear(c, dt, 3, 16400, 1024, false); /* 16.8 M weights: panels of 16384 rows, then 16 */
      check_conv(c, dt, 2, 5, 9, 7, 6, 3, 1, 1);
      check_conv(c, dt, 1, 4, 9, 9, 3, 3, 2, 1);
      check_conv(c, dt, 2, 8, 5, 5, 7, 1, 1, 0);
      check_conv(c, dt, 2, 6, 7, 5, 3, 3, 1, 1);      /* 3 outputs: the direct path */
      check_conv(c, dt, 1, 2048, 2, 2, 920, 3, 1, 1); /* [920, 18432] = 16.96 M: panels of 896, then 24 */
      check_conv(c, dt, 2, 2048, 2, 2, 920, 3, 1, 1); /* the same with both images in one sgemm per panel */
      check_table_and_slice(c, dt);
    }
    CHECK(!fr_ctx_failed(c));
    fr_ctx_free(c);
  }
  test_pool();
  return fr_test_done();
}
