/* The CUDA backend's context behaviour (the op rows themselves are in test_ops.c):
 *  - built without CUDA: skipped;
 *  - built with CUDA but no usable device (CI, the dev VM): fr_ctx_new("cuda") is FR_E_DEVICE
 *    "no CUDA device", with no context and no leak, also when allocations fail; an unsupported compute
 *    dtype is FR_E_UNSUPPORTED;
 *  - with a device: exact transfers in every dtype, the pool's reuse of freed blocks, device out of memory
 *    as a clean FR_E_NOMEM that leaves the context usable, host allocation failures inside device ops,
 *    tensors that outlive their context, the cuBLASLt descriptor cache past its eviction limit, and conv2d
 *    and attention at sizes that take the chunked and multi-tile paths, against the cpu; recorded replays
 *    (CUDA graphs): inputs written in place, memory kept for the graph, a failed recording; conv2d 3x3 at
 *    SD sizes in F16/BF16 through the tensor-core kernel and through im2col;
 *  - everywhere: the cpu refuses to record, fr_ctx_write. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "kernels/ops.h"
#include "tests/test.h"

#ifndef FLOWRUN_HAVE_CUDA
int main(void) {
  fr_test_skip("flowrun built without CUDA");
  return fr_test_done();
}
#else

static uint64_t rng = 0x2545f4914f6cdd1dULL;
static float urand(void) {
  rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
  return (float)((double)(rng >> 11) / (double)(1ULL << 53) * 2.0 - 1.0);
}
static struct fr_tensor *rand_t(int n, const int64_t *shape, float amp) {
  struct fr_tensor *t = fr_tensor_f32(n, shape);
  for (int64_t i = 0; i < fr_tensor_numel(t); i++)
    ((float *)t->data)[i] = amp * urand();
  return t;
}

static struct fr_ctx *new_ctx(const char *dev, enum fr_dtype dt) {
  struct fr_ctx *c = NULL;
  struct fr_err e;
  enum fr_status st = fr_ctx_new(&(struct fr_ctx_opts){.device = dev, .dtype = dt}, &c, &e);
  CHECKF(st == FR_OK, "%s %s context: %s", dev, fr_dtype_name(dt), e.msg);
  return c;
}

/* Bytes-exact round trips: values k/8 for |k| < 256 are exact in F16, BF16 and F32. */
static void check_transfers(struct fr_ctx *c) {
  const char *dn = fr_dtype_name(fr_ctx_dtype(c));
  struct fr_tensor *h = fr_tensor_f32(2, (int64_t[]){7, 37});
  for (int64_t i = 0; i < fr_tensor_numel(h); i++)
    ((float *)h->data)[i] = (float)((i * 37) % 511 - 255) / 8.0f;
  struct fr_tensor *d = fr_ctx_upload(c, h), *back = fr_ctx_download(c, d);
  CHECKF(d && d->dtype == fr_ctx_dtype(c) && back && back->dtype == FR_F32 &&
             memcmp(back->data, h->data, fr_tensor_nbytes(h)) == 0,
         "F32 upload/download round trip in %s", dn);
  fr_tensor_free(back);
  fr_tensor_free(d);
  for (int k = 0; k < 2; k++) { /* F16 and BF16 host weights, converted on the device */
    enum fr_dtype hdt = k ? FR_BF16 : FR_F16;
    struct fr_tensor *w = fr_tensor_new(hdt, h->ndim, h->shape);
    for (int64_t i = 0; i < fr_tensor_numel(h); i++) {
      float v = ((float *)h->data)[i];
      ((uint16_t *)w->data)[i] = k ? fr_f32_to_bf16(v) : fr_f32_to_f16(v);
    }
    d = fr_ctx_weight(c, w);
    back = fr_ctx_download(c, d);
    CHECKF(back && memcmp(back->data, h->data, fr_tensor_nbytes(h)) == 0, "%s weight into %s",
           fr_dtype_name(hdt), dn);
    fr_tensor_free(back);
    fr_tensor_free(d);
    fr_tensor_free(w);
  }
  struct fr_tensor *ids = fr_tensor_new(FR_I64, 1, (int64_t[]){5});
  for (int i = 0; i < 5; i++)
    ((int64_t *)ids->data)[i] = (int64_t)i * 1000000007LL;
  d = fr_ctx_upload(c, ids);
  back = fr_ctx_download(c, d);
  CHECKF(back && back->dtype == FR_I64 && memcmp(back->data, ids->data, 40) == 0, "I64 ids round trip");
  fr_tensor_free(back);
  fr_tensor_free(d);
  fr_tensor_free(ids);

  /* The pool hands a freed block back for the next request of that size. */
  d = fr_ctx_upload(c, h);
  void *p = d ? d->data : NULL;
  fr_tensor_free(d);
  d = fr_ctx_upload(c, h);
  CHECKF(d && d->data == p, "pool reuses a freed block (%p then %p)", p, d ? d->data : NULL);
  fr_tensor_free(d);
  fr_tensor_free(h);
  CHECK(!fr_ctx_failed(c));
}

/* Device out of memory: a 2^40-element output is FR_E_NOMEM naming the op; the context keeps working. */
static void check_oom(struct fr_ctx *c) {
  struct fr_tensor *ha = fr_tensor_f32(3, (int64_t[]){1, 1 << 20, 1}),
                   *hb = fr_tensor_f32(3, (int64_t[]){1, 1, 1 << 20});
  struct fr_tensor *a = fr_ctx_upload(c, ha), *b = fr_ctx_upload(c, hb);
  struct fr_tensor *y = fr_matmul(c, a, b);
  struct fr_err e;
  enum fr_status st = fr_ctx_status(c, &e);
  CHECKF(y == NULL && st == FR_E_NOMEM && strstr(e.msg, "fr_matmul"), "huge output: status %d '%s'", st,
         st ? e.msg : "");
  printf("device out of memory: %s\n", st ? e.msg : "(none)");
  fr_ctx_clear(c);
  y = fr_silu(c, a);
  CHECKF(y && !fr_ctx_failed(c), "context usable after out of memory");
  fr_tensor_free(y);
  /* Host allocation failures inside device ops and transfers: NULL and FR_E_NOMEM, or success; no leak. */
  for (long k = 1; k <= 4; k++) {
    fr_alloc_fail_at(k);
    y = fr_silu(c, a);
    struct fr_tensor *dl = fr_ctx_download(c, a);
    fr_alloc_fail_at(0);
    st = fr_ctx_status(c, &e);
    CHECKF(st == FR_OK || st == FR_E_NOMEM, "allocation %ld failing: status %d '%s'", k, st, e.msg);
    fr_tensor_free(y);
    fr_tensor_free(dl);
    fr_ctx_clear(c);
  }
  fr_tensor_free(a);
  fr_tensor_free(b);
  fr_tensor_free(ha);
  fr_tensor_free(hb);
}

/* Runs op on the cpu and on cuda (F32) with the same host inputs and compares. */
static void compare(const char *what, struct fr_ctx *cpu, struct fr_ctx *gpu, double tol,
                    struct fr_tensor *(*op)(struct fr_ctx *, struct fr_tensor *const *), int n,
                    struct fr_tensor *const *host) {
  struct fr_tensor *out[2] = {NULL, NULL};
  struct fr_ctx *cs[2] = {cpu, gpu};
  for (int k = 0; k < 2; k++) {
    struct fr_tensor *d[4] = {NULL};
    for (int i = 0; i < n; i++)
      d[i] = fr_ctx_upload(cs[k], host[i]);
    struct fr_tensor *y = op(cs[k], d);
    out[k] = y ? fr_ctx_download(cs[k], y) : NULL;
    fr_tensor_free(y);
    for (int i = 0; i < n; i++)
      fr_tensor_free(d[i]);
    struct fr_err e;
    CHECKF(!fr_ctx_failed(cs[k]), "%s on %s: %s", what, k ? "cuda" : "cpu",
           fr_ctx_status(cs[k], &e) ? e.msg : "");
    fr_ctx_clear(cs[k]);
  }
  if (out[0] && out[1]) {
    double err = fr_test_rel_err(out[1]->data, out[0]->data, (long)fr_tensor_numel(out[0]));
    printf("%-44s cuda F32 vs cpu %.3g (tol %.3g: fp32 both, different summation order)\n", what, err, tol);
    CHECKF(err <= tol, "%s: %.3g > %.3g", what, err, tol);
  }
  fr_tensor_free(out[0]);
  fr_tensor_free(out[1]);
}

static struct fr_tensor *op_conv(struct fr_ctx *c, struct fr_tensor *const *d) {
  return fr_conv2d(c, d[0], d[1], d[2], 1, 1);
}
static struct fr_tensor *op_attn(struct fr_ctx *c, struct fr_tensor *const *d) {
  return fr_attention(c, d[0], d[1], d[2], 5, false);
}
static struct fr_tensor *op_attn_causal(struct fr_ctx *c, struct fr_tensor *const *d) {
  return fr_attention(c, d[0], d[0], d[1], 5, true);
}

static void check_big_paths(struct fr_ctx *cpu, struct fr_ctx *gpu) {
  /* conv2d: C*9*Wo = 4608 * 250 columns per output row, so the 32M-element im2col budget takes 29 rows a
   * chunk: 3 chunks, the later ones at output offsets only 32-byte aligned (a separate cuBLASLt entry). */
  struct fr_tensor *h[3] = {rand_t(4, (int64_t[]){1, 512, 64, 250}, 1.0f),
                            rand_t(4, (int64_t[]){8, 512, 3, 3}, 1.0f / 68.0f),
                            rand_t(1, (int64_t[]){8}, 0.5f)};
  compare("conv2d [1,512,64,250] x [8,512,3,3] chunked", cpu, gpu, 1e-4, op_conv, 3, h);
  for (int i = 0; i < 3; i++)
    fr_tensor_free(h[i]);
  /* attention over 33 key tiles and 66 query blocks, d 64, and causal self-attention */
  struct fr_tensor *a[3] = {rand_t(3, (int64_t[]){2, 1050, 320}, 1.0f),
                            rand_t(3, (int64_t[]){2, 1050, 320}, 1.0f),
                            rand_t(3, (int64_t[]){2, 1050, 320}, 1.0f)};
  compare("attention [2,1050,320] 5 heads", cpu, gpu, 1e-5, op_attn, 3, a);
  compare("attention [2,1050,320] 5 heads causal", cpu, gpu, 1e-5, op_attn_causal, 2, a);
  for (int i = 0; i < 3; i++)
    fr_tensor_free(a[i]);
}

/* Rounds an F32 host tensor through dt (F16 or BF16) in place: what a context of that dtype holds. */
static void round_through(struct fr_tensor *t, enum fr_dtype dt) {
  float *v = t->data;
  for (int64_t i = 0; i < fr_tensor_numel(t); i++)
    v[i] = dt == FR_F16 ? fr_f16_to_f32(fr_f32_to_f16(v[i])) : fr_bf16_to_f32(fr_f32_to_bf16(v[i]));
}

/* conv2d 3x3 at SD sizes in F16 and BF16, by default (the tensor-core kernel for the VAE's 128 channels at
 * 256x256, im2col for the UNet's 320 and 1280), with FLOWRUN_CUDA_CONV=im2col and with =tc (the tensor-core
 * kernel for all three), against the cpu in F32 on the same rounded inputs. Bound: 2 roundings of the
 * output (u = 2^-11 or 2^-8) + 3 x 2e-5 for the fp32 sums (test_ops.c's lowp_tol for a GEMM row). */
static void check_conv_sizes(struct fr_ctx *cpu) {
  static const int64_t shapes[3][2][4] = {{{2, 320, 64, 64}, {320, 320, 3, 3}},
                                          {{1, 128, 256, 256}, {128, 128, 3, 3}},
                                          {{2, 1280, 8, 8}, {1280, 1280, 3, 3}}};
  const char *was = getenv("FLOWRUN_CUDA_CONV");
  char *saved = was ? strdup(was) : NULL;
  for (int k = 0; k < 2; k++) {
    enum fr_dtype dt = k ? FR_BF16 : FR_F16;
    const double tol = 2 * (k ? 1.0 / 256 : 1.0 / 2048) + 6e-5;
    for (int si = 0; si < 3; si++) {
      const int64_t *xs = shapes[si][0], *ws = shapes[si][1];
      struct fr_tensor *h[3] = {rand_t(4, xs, 1.0f), rand_t(4, ws, 1.0f / sqrtf((float)(ws[1] * 9))),
                                rand_t(1, &ws[0], 0.5f)};
      for (int i = 0; i < 3; i++)
        round_through(h[i], dt);
      struct fr_tensor *ref = NULL;
      {
        struct fr_tensor *d[3];
        for (int i = 0; i < 3; i++)
          d[i] = fr_ctx_upload(cpu, h[i]);
        struct fr_tensor *y = op_conv(cpu, d);
        ref = y ? fr_ctx_download(cpu, y) : NULL;
        fr_tensor_free(y);
        for (int i = 0; i < 3; i++)
          fr_tensor_free(d[i]);
        fr_ctx_clear(cpu);
      }
      static const char *const modes[3] = {NULL, "im2col", "tc"};
      for (int mode = 0; mode < 3 && ref; mode++) {
        const char *mn = modes[mode] ? modes[mode] : "default";
        if (modes[mode])
          setenv("FLOWRUN_CUDA_CONV", modes[mode], 1);
        else
          unsetenv("FLOWRUN_CUDA_CONV");
        struct fr_ctx *gpu = new_ctx("cuda", dt);
        if (!gpu)
          continue;
        struct fr_tensor *d[3];
        for (int i = 0; i < 3; i++)
          d[i] = fr_ctx_upload(gpu, h[i]);
        struct fr_tensor *y = op_conv(gpu, d), *hy = y ? fr_ctx_download(gpu, y) : NULL;
        struct fr_err e;
        CHECKF(hy && !fr_ctx_failed(gpu), "conv2d [%lld, %lld, %lld, %lld] on cuda %s: %s", (long long)xs[0],
               (long long)xs[1], (long long)xs[2], (long long)xs[3], fr_dtype_name(dt),
               fr_ctx_status(gpu, &e) ? e.msg : "no output");
        if (hy) {
          double err = fr_test_rel_err(hy->data, ref->data, (long)fr_tensor_numel(ref));
          printf("conv2d [%lld,%lld,%lld,%lld] x [%lld,%lld,3,3] cuda %-4s %-7s vs cpu %.3g (tol %.3g)\n",
                 (long long)xs[0], (long long)xs[1], (long long)xs[2], (long long)xs[3], (long long)ws[0],
                 (long long)ws[1], fr_dtype_name(dt), mn, err, tol);
          CHECKF(err <= tol, "conv2d %lld channels at %lldx%lld, cuda %s %s: %.3g > %.3g", (long long)xs[1],
                 (long long)xs[2], (long long)xs[3], fr_dtype_name(dt), mn, err, tol);
        }
        fr_tensor_free(hy);
        fr_tensor_free(y);
        for (int i = 0; i < 3; i++)
          fr_tensor_free(d[i]);
        fr_ctx_free(gpu);
      }
      CHECK(ref != NULL);
      fr_tensor_free(ref);
      for (int i = 0; i < 3; i++)
        fr_tensor_free(h[i]);
    }
  }
  if (saved)
    setenv("FLOWRUN_CUDA_CONV", saved, 1);
  else
    unsetenv("FLOWRUN_CUDA_CONV");
  free(saved);
}

/* More distinct GEMM shapes than the descriptor cache holds (256): eviction must keep results right. */
static void check_gemm_cache(struct fr_ctx *c) {
  struct fr_tensor *hw = rand_t(2, (int64_t[]){8, 16}, 0.25f), *w = fr_ctx_weight(c, hw);
  int bad = 0;
  double worst = 0;
  for (int M = 1; M <= 300; M++) {
    struct fr_tensor *hx = rand_t(2, (int64_t[]){M, 16}, 1.0f), *x = fr_ctx_upload(c, hx);
    struct fr_tensor *y = fr_linear(c, x, w, NULL), *hy = y ? fr_ctx_download(c, y) : NULL;
    if (!hy) {
      bad++;
    } else {
      for (int i = 0; i < M; i++)
        for (int o = 0; o < 8; o++) {
          double s = 0;
          for (int k = 0; k < 16; k++)
            s += (double)((float *)hx->data)[i * 16 + k] * ((float *)hw->data)[o * 16 + k];
          worst = fmax(worst, fabs(((float *)hy->data)[i * 8 + o] - s));
        }
    }
    fr_tensor_free(hy);
    fr_tensor_free(y);
    fr_tensor_free(x);
    fr_tensor_free(hx);
  }
  printf("300 linear shapes through the descriptor cache: max abs err %.3g (tol 1e-5: fp32, K 16)\n", worst);
  CHECKF(bad == 0 && worst <= 1e-5, "gemm cache: %d failed, max err %.3g", bad, worst);
  fr_ctx_clear(c);
  fr_tensor_free(w);
  fr_tensor_free(hw);
}

/* ---- recorded replays ---- */

/* y = silu(x w^T + b) + x; temporaries freed inside, as model code does */
static struct fr_tensor *rec_step(struct fr_ctx *c, const struct fr_tensor *x, const struct fr_tensor *w,
                                  const struct fr_tensor *b) {
  struct fr_tensor *h = fr_linear(c, x, w, b), *s = fr_silu(c, h);
  fr_tensor_free(h);
  struct fr_tensor *y = fr_add(c, s, x);
  fr_tensor_free(s);
  return y;
}
static double rec_ref_err(const float *hx, const float *hw, const float *hb, const float *y) {
  double worst = 0;
  for (int i = 0; i < 4; i++)
    for (int o = 0; o < 16; o++) {
      double a = hb[o];
      for (int k = 0; k < 16; k++)
        a += (double)hx[i * 16 + k] * hw[o * 16 + k];
      worst = fmax(worst, fabs(y[i * 16 + o] - (a / (1.0 + exp(-a)) + hx[i * 16 + o])));
    }
  return worst;
}

/* The cpu cannot record (callers run eagerly); fr_ctx_write works everywhere. */
static void check_recording_cpu(void) {
  struct fr_ctx *c = new_ctx("cpu", FR_F32);
  if (!c)
    return;
  struct fr_err e;
  CHECK(!fr_ctx_can_record(c));
  enum fr_status st = fr_ctx_record_begin(c, &e);
  CHECKF(st == FR_E_UNSUPPORTED && !fr_ctx_failed(c), "cpu record_begin: %d %s", st, e.msg);
  struct fr_tensor *h = rand_t(2, (int64_t[]){4, 16}, 1.0f), *h2 = rand_t(2, (int64_t[]){4, 16}, 1.0f);
  struct fr_tensor *d = fr_ctx_upload(c, h);
  CHECK_OK(fr_ctx_write(c, d, h2, &e), &e);
  struct fr_tensor *back = fr_ctx_download(c, d);
  CHECK(back && memcmp(back->data, h2->data, fr_tensor_nbytes(h2)) == 0);
  struct fr_tensor *wrong = rand_t(2, (int64_t[]){4, 15}, 1.0f);
  st = fr_ctx_write(c, d, wrong, &e);
  CHECKF(st == FR_E_INVALID && strstr(e.msg, "[4, 15]"), "write of another shape: %d %s", st, e.msg);
  fr_tensor_free(wrong);
  fr_tensor_free(back);
  fr_tensor_free(d);
  fr_tensor_free(h);
  fr_tensor_free(h2);
  fr_ctx_free(c);
}

/* Record once, replay with new inputs written in place; tensors made and written between replays are
 * never touched by a replay (the graph's memory stays reserved); a download while recording fails the
 * recording cleanly and the context goes on eagerly. */
static void check_recording(struct fr_ctx *c) {
  const char *dn = fr_dtype_name(fr_ctx_dtype(c));
  CHECK(fr_ctx_can_record(c));
  double tol = fr_ctx_dtype(c) == FR_F32 ? 1e-5 : fr_ctx_dtype(c) == FR_F16 ? 2e-2 : 1e-1; /* |y| < ~6 */
  struct fr_tensor *hw = rand_t(2, (int64_t[]){16, 16}, 0.25f), *hb = rand_t(1, (int64_t[]){16}, 0.5f);
  struct fr_tensor *hx = rand_t(2, (int64_t[]){4, 16}, 1.0f);
  struct fr_tensor *w = fr_ctx_weight(c, hw), *b = fr_ctx_weight(c, hb), *x = fr_ctx_upload(c, hx);
  struct fr_tensor *warm = rec_step(c, x, w, b); /* eager first: warms the pool and the GEMM cache */
  fr_tensor_free(warm);
  struct fr_err e;
  enum fr_status st = fr_ctx_record_begin(c, &e);
  CHECKF(st == FR_OK, "%s record_begin: %s", dn, e.msg);
  struct fr_tensor *y = rec_step(c, x, w, b);
  struct fr_recording *rec = NULL;
  st = fr_ctx_record_end(c, &rec, &e);
  CHECKF(st == FR_OK && rec && y, "%s record_end: %d %s", dn, st, e.msg);
  for (int it = 0; rec && y && it < 3; it++) {
    struct fr_tensor *nx = rand_t(2, (int64_t[]){4, 16}, 1.0f);
    for (int64_t i = 0; i < fr_tensor_numel(nx); i++) /* values the storage dtype holds exactly */
      ((float *)nx->data)[i] = roundf(((float *)nx->data)[i] * 64.0f) / 64.0f;
    /* a live tensor made between replays, the size of the recording's temporaries */
    struct fr_tensor *hj = rand_t(2, (int64_t[]){4, 16}, 100.0f);
    for (int64_t i = 0; i < fr_tensor_numel(hj); i++)
      ((float *)hj->data)[i] = roundf(((float *)hj->data)[i]);
    struct fr_tensor *junk = fr_ctx_upload(c, hj);
    CHECK_OK(fr_ctx_write(c, x, nx, &e), &e);
    CHECK_OK(fr_recording_replay(rec, &e), &e);
    struct fr_tensor *hy = fr_ctx_download(c, y), *hj2 = fr_ctx_download(c, junk);
    double err = hy ? rec_ref_err(nx->data, hw->data, hb->data, hy->data) : INFINITY;
    printf("%s replay %d: max abs err %.3g (tol %.3g)\n", dn, it, err, tol);
    CHECKF(err <= tol, "%s replay %d: %.3g > %.3g", dn, it, err, tol);
    CHECKF(hj2 && memcmp(hj2->data, hj->data, fr_tensor_nbytes(hj)) == 0,
           "%s replay %d wrote into a tensor made after the recording", dn, it);
    fr_tensor_free(hy);
    fr_tensor_free(hj2);
    fr_tensor_free(junk);
    fr_tensor_free(hj);
    fr_tensor_free(nx);
  }
  fr_tensor_free(y);
  fr_recording_free(rec);
  /* a download while recording: the recording fails, nothing leaks, eager work goes on */
  st = fr_ctx_record_begin(c, &e);
  CHECKF(st == FR_OK, "%s second record_begin: %s", dn, e.msg);
  struct fr_tensor *dl = fr_ctx_download(c, x);
  st = fr_ctx_record_end(c, &rec, &e);
  CHECKF(st != FR_OK && rec == NULL, "%s download while recording: %d %s", dn, st, st ? e.msg : "");
  printf("download while recording: %s\n", st ? e.msg : "(no error)");
  fr_tensor_free(dl);
  fr_ctx_clear(c);
  y = rec_step(c, x, w, b);
  struct fr_tensor *hy = y ? fr_ctx_download(c, y) : NULL;
  CHECKF(hy && !fr_ctx_failed(c), "%s eager after a failed recording", dn);
  fr_tensor_free(hy);
  fr_tensor_free(y);
  fr_tensor_free(x);
  fr_tensor_free(w);
  fr_tensor_free(b);
  fr_tensor_free(hx);
  fr_tensor_free(hw);
  fr_tensor_free(hb);
  fr_ctx_clear(c);
}

int main(void) {
  struct fr_ctx *c = NULL;
  struct fr_err e;
  enum fr_status st = fr_ctx_new(&(struct fr_ctx_opts){.device = "cuda", .dtype = FR_F64}, &c, &e);
  CHECKF(st == FR_E_UNSUPPORTED && c == NULL && strstr(e.msg, "F64"), "cuda F64: %d %s", st, e.msg);
  for (long k = 1; k <= 3; k++) { /* host allocations failing while creating: a clean error, no leak */
    fr_alloc_fail_at(k);
    st = fr_ctx_new(&(struct fr_ctx_opts){.device = "cuda", .dtype = FR_F16}, &c, &e);
    fr_alloc_fail_at(0);
    CHECKF((st == FR_OK) == (c != NULL) && (st == FR_OK || st == FR_E_NOMEM || st == FR_E_DEVICE),
           "cuda ctx with allocation %ld failing: %d %s", k, st, e.msg);
    fr_ctx_free(c);
    c = NULL;
  }
  check_recording_cpu();
  st = fr_ctx_new(&(struct fr_ctx_opts){.device = "cuda", .dtype = FR_F16}, &c, &e);
  if (st != FR_OK) {
    CHECKF(st == FR_E_DEVICE && c == NULL && strstr(e.msg, "no CUDA device"), "no device: %d '%s'", st,
           e.msg);
    printf("fr_ctx_new(cuda) without a device: %s\n", e.msg);
    printf("device checks skipped: no CUDA device\n");
    return fr_test_done();
  }
  fr_ctx_free(c);
  enum fr_dtype dts[3] = {FR_F32, FR_F16, FR_BF16};
  for (int i = 0; i < 3; i++) {
    c = new_ctx("cuda", dts[i]);
    if (!c)
      continue;
    check_transfers(c);
    check_oom(c);
    if (dts[i] == FR_F32)
      check_gemm_cache(c);
    check_recording(c);
    fr_ctx_free(c);
  }
  /* A tensor may outlive its context: freeing it afterwards returns its memory to the driver. */
  c = new_ctx("cuda", FR_F16);
  struct fr_tensor *h = fr_tensor_f32(1, (int64_t[]){1000});
  struct fr_tensor *d = c ? fr_ctx_upload(c, h) : NULL;
  CHECK(d != NULL);
  fr_ctx_free(c);
  fr_tensor_free(d);
  fr_tensor_free(h);
  struct fr_ctx *cpu = new_ctx("cpu", FR_F32), *gpu = new_ctx("cuda", FR_F32);
  if (cpu && gpu)
    check_big_paths(cpu, gpu);
  if (cpu)
    check_conv_sizes(cpu);
  fr_ctx_free(cpu);
  fr_ctx_free(gpu);
  return fr_test_done();
}
#endif
