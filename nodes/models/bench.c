/* flowrun bench: see bench.h. Each component is a row of fr__bench_rows: setup loads what it needs
 * (weights converted once into the context: one fp32 working copy beside the mmap'd file), run is the
 * timed forward, teardown frees everything so the next row starts from the same memory. */
#include "nodes/models/bench.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "core/alloc.h"
#include "kernels/ops.h"
#include "nodes/models/clip.h"
#include "nodes/models/synth.h"
#include "nodes/models/unet.h"
#include "nodes/models/vae.h"
#include "nodes/models/weights.h"
#include "nodes/sampling/sampling.h"

/* OpenBLAS' C interface, declared here because the nodes library does not see cblas.h (only the
 * kernels library does); the values are CBLAS' (CblasRowMajor = 101, CblasNoTrans = 111) and the
 * Debian/Ubuntu OpenBLAS uses 32-bit integers. */
void cblas_sgemm(int order, int transa, int transb, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc);
void openblas_set_num_threads(int n);

struct fr__bench {
  const struct fr_bench_opts *o;
  struct fr_ctx *ctx;
  struct fr_checkpoint *ck; /* NULL when no --ckpt was given */
  struct fr_synth_arch arch;
  FILE *out;
};

struct fr__row {
  const char *name;  /* for --only */
  const char *label; /* printed */
  bool needs_ckpt;
  /* prepares *state and the FLOPs of one run */
  enum fr_status (*setup)(struct fr__bench *b, void **state, double *flops, struct fr_err *err);
  enum fr_status (*run)(struct fr__bench *b, void *state, struct fr_err *err);
  void (*teardown)(void *state);
};

static double fr__now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double fr__peak_rss_mib(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0)
    return 0;
  return (double)ru.ru_maxrss / 1024.0; /* ru_maxrss is in KiB on Linux */
}

/* ---- sgemm: plain OpenBLAS, the compute floor every model row is compared with ---- */

#define FR__GEMM_N 2048
struct fr__gemm {
  float *a, *b, *c;
};

static enum fr_status fr__gemm_setup(struct fr__bench *b, void **state, double *flops, struct fr_err *err) {
  struct fr__gemm *g = fr_calloc(1, sizeof *g);
  size_t n = (size_t)FR__GEMM_N * FR__GEMM_N;
  if (g) {
    g->a = fr_malloc(n * sizeof(float));
    g->b = fr_malloc(n * sizeof(float));
    g->c = fr_malloc(n * sizeof(float));
  }
  if (!g || !g->a || !g->b || !g->c) {
    if (g) {
      fr_free(g->a), fr_free(g->b), fr_free(g->c);
    }
    fr_free(g);
    return fr_errf(err, FR_E_NOMEM, "out of memory for the sgemm benchmark");
  }
  for (size_t i = 0; i < n; i++) {
    g->a[i] = (float)((i * 7) % 13) * 0.01f;
    g->b[i] = (float)((i * 5) % 11) * 0.01f;
  }
  if (b->o->threads > 0)
    openblas_set_num_threads(b->o->threads);
  *state = g;
  *flops = 2.0 * FR__GEMM_N * FR__GEMM_N * FR__GEMM_N;
  return FR_OK;
}

static enum fr_status fr__gemm_run(struct fr__bench *b, void *state, struct fr_err *err) {
  struct fr__gemm *g = state;
  cblas_sgemm(101, 111, 111, FR__GEMM_N, FR__GEMM_N, FR__GEMM_N, 1.0f, g->a, FR__GEMM_N, g->b, FR__GEMM_N,
              0.0f, g->c, FR__GEMM_N);
  return FR_OK;
}

static void fr__gemm_teardown(void *state) {
  struct fr__gemm *g = state;
  if (!g)
    return;
  fr_free(g->a), fr_free(g->b), fr_free(g->c);
  fr_free(g);
}

/* ---- VAE decode of a 64x64 latent (512x512 image), batch 1 ---- */

struct fr__vae_state {
  struct fr_vae *vae;
  struct fr_tensor *z;
};

static void fr__vae_teardown(void *state) {
  struct fr__vae_state *s = state;
  if (!s)
    return;
  fr_vae_free(s->vae);
  fr_tensor_free(s->z);
  fr_free(s);
}

static enum fr_status fr__vae_setup(struct fr__bench *b, void **state, double *flops, struct fr_err *err) {
  struct fr__vae_state *s = fr_calloc(1, sizeof *s);
  if (!s)
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  enum fr_status rc = fr_vae_load(b->ctx, b->ck, &s->vae, err);
  if (rc) {
    fr__vae_teardown(s);
    return rc;
  }
  const struct fr_vae_config *cfg = fr_vae_config(s->vae);
  struct fr_tensor *h = fr_tensor_f32(4, (int64_t[]){1, cfg->z_channels, 64, 64});
  if (h) {
    float *p = h->data;
    uint32_t x = 12345;
    for (int64_t i = 0; i < fr_tensor_numel(h); i++) {
      x = x * 1664525u + 1013904223u;
      p[i] = (float)(x >> 8) / 16777216.0f * 2.0f - 1.0f; /* latents of unit-ish scale */
    }
    s->z = fr_ctx_upload(b->ctx, h);
    fr_tensor_free(h);
  }
  if (!s->z) {
    fr__vae_teardown(s);
    rc = fr_ctx_status(b->ctx, err);
    return rc ? rc : fr_errf(err, FR_E_NOMEM, "out of memory");
  }
  *state = s;
  *flops = fr_vae_decode_flops(cfg, 64, 64);
  return FR_OK;
}

static enum fr_status fr__vae_run(struct fr__bench *b, void *state, struct fr_err *err) {
  struct fr__vae_state *s = state;
  struct fr_tensor *img = NULL;
  enum fr_status rc = fr_vae_decode(b->ctx, s->vae, s->z, &img, err);
  fr_tensor_free(img);
  return rc;
}

/* Deterministic values in [-scale, scale] for benchmark inputs, uploaded to the context. */
static struct fr_tensor *fr__input(struct fr_ctx *c, int ndim, const int64_t *shape, float scale,
                                   uint32_t seed) {
  struct fr_tensor *h = fr_tensor_f32(ndim, shape);
  if (!h)
    return NULL;
  float *p = h->data;
  uint32_t x = seed;
  for (int64_t i = 0; i < fr_tensor_numel(h); i++) {
    x = x * 1664525u + 1013904223u;
    p[i] = ((float)(x >> 8) / 16777216.0f * 2.0f - 1.0f) * scale;
  }
  struct fr_tensor *t = fr_ctx_upload(c, h);
  fr_tensor_free(h);
  return t;
}

/* ---- text encoder(s) of the architecture: 77 tokens, batch 1 ---- */

struct fr__text_state {
  int n;
  struct fr_clip *m[2];
  int32_t ids[77];
};

static void fr__text_teardown(void *state) {
  struct fr__text_state *s = state;
  if (!s)
    return;
  for (int i = 0; i < s->n; i++)
    fr_clip_free(s->m[i]);
  fr_free(s);
}

static enum fr_status fr__text_setup(struct fr__bench *b, void **state, double *flops, struct fr_err *err) {
  struct fr__text_state *s = fr_calloc(1, sizeof *s);
  if (!s)
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  *flops = 0;
  for (int i = 0; i < b->arch.n_clip; i++) {
    enum fr_status rc =
        fr_clip_load(b->ctx, b->ck, b->arch.clip[i].hf ? FR_CLIP_ROLE_L : FR_CLIP_ROLE_G, &s->m[s->n], err);
    if (rc) {
      fr__text_teardown(s);
      return rc;
    }
    const struct fr_clip_config *cc = &s->m[s->n]->cfg;
    struct fr_synth_clip shape = {.hf = cc->layout == FR_CLIP_LAYOUT_HF,
                                  .width = cc->width,
                                  .layers = cc->layers,
                                  .ff = cc->mlp,
                                  .proj = cc->proj};
    *flops += fr_synth_clip_flops(&shape, 77);
    s->n++;
  }
  /* BOS, a 20-token prompt, EOS, padding: the length does not change the work (always 77 positions) */
  s->ids[0] = 49406;
  for (int i = 1; i < 77; i++)
    s->ids[i] = i <= 20 ? 320 + i * 37 : 49407;
  *state = s;
  return FR_OK;
}

static enum fr_status fr__text_run(struct fr__bench *b, void *state, struct fr_err *err) {
  struct fr__text_state *s = state;
  for (int i = 0; i < s->n; i++) {
    struct fr_clip_out o = {0};
    enum fr_status rc = fr_clip_encode(b->ctx, s->m[i], s->ids, 1, 77, &o, err);
    fr_clip_out_free(&o);
    if (rc)
      return rc;
  }
  return FR_OK;
}

/* ---- one UNet forward: 64x64 latent, batch 1, 77-token context ---- */

struct fr__unet_state {
  struct fr_unet *u;
  struct fr_tensor *x, *t, *ctx, *y;
};

static void fr__unet_teardown(void *state) {
  struct fr__unet_state *s = state;
  if (!s)
    return;
  fr_unet_free(s->u);
  fr_tensor_free(s->x);
  fr_tensor_free(s->t);
  fr_tensor_free(s->ctx);
  fr_tensor_free(s->y);
  fr_free(s);
}

static enum fr_status fr__unet_setup(struct fr__bench *b, void **state, double *flops, struct fr_err *err) {
  struct fr__unet_state *s = fr_calloc(1, sizeof *s);
  if (!s)
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  enum fr_status rc = fr_unet_load(b->ctx, b->ck, &s->u, err);
  if (rc) {
    fr__unet_teardown(s);
    return rc;
  }
  const struct fr_unet_config *uc = &s->u->cfg;
  s->x = fr__input(b->ctx, 4, (int64_t[]){1, uc->in_channels, 64, 64}, 1.0f, 1);
  s->ctx = fr__input(b->ctx, 3, (int64_t[]){1, 77, uc->context_dim}, 1.0f, 2);
  struct fr_tensor *th = fr_tensor_f32(1, (int64_t[]){1});
  if (th) {
    ((float *)th->data)[0] = 500.0f;
    s->t = fr_ctx_upload(b->ctx, th);
    fr_tensor_free(th);
  }
  if (uc->adm_in_channels)
    s->y = fr__input(b->ctx, 2, (int64_t[]){1, uc->adm_in_channels}, 1.0f, 3);
  if (!s->x || !s->ctx || !s->t || (uc->adm_in_channels && !s->y)) {
    fr__unet_teardown(s);
    rc = fr_ctx_status(b->ctx, err);
    return rc ? rc : fr_errf(err, FR_E_NOMEM, "out of memory");
  }
  /* FLOPs from the loaded architecture, whatever --arch says */
  struct fr_synth_unet a = {.ch = uc->model_channels,
                            .levels = uc->levels,
                            .nres = uc->num_res_blocks,
                            .depth_mid = uc->mid_depth,
                            .ctx_dim = uc->context_dim,
                            .adm_in = uc->adm_in_channels,
                            .in_ch = uc->in_channels,
                            .out_ch = uc->out_channels};
  for (int i = 0; i < uc->levels && i < 4; i++)
    a.mult[i] = uc->channels[i] / uc->model_channels, a.depth[i] = uc->depth[i];
  *flops = fr_synth_unet_flops(&a, 64, 64, 77);
  *state = s;
  return FR_OK;
}

static enum fr_status fr__unet_run(struct fr__bench *b, void *state, struct fr_err *err) {
  struct fr__unet_state *s = state;
  struct fr_unet_cond cond = {.context = s->ctx, .y = s->y};
  struct fr_tensor *eps = NULL;
  enum fr_status rc = fr_unet_forward(b->ctx, s->u, s->x, s->t, &cond, NULL, &eps, err);
  fr_tensor_free(eps);
  return rc;
}

/* ---- txt2img: the SD1.5 pipeline at 512x512, 20 euler steps with CFG (batch-2 UNet forwards) ----
 * Text encoding of prompt and negative (one batch-2 encoder call), 20 sampler steps each one batch-2 UNet
 * forward, and the VAE decode: what a Sampler node plus its TextEncode and VAEDecode nodes compute. */

#define FR__T2I_STEPS 20

struct fr__t2i_state {
  struct fr_clip *clip;
  struct fr_unet *u;
  struct fr_vae *vae;
  int32_t ids[2 * 77];
  struct fr_tensor *ctx; /* [2, 77, D] after encoding */
  struct fr__bench *b;
  struct fr_err *err;
  double sample_s;
};

static void fr__t2i_teardown(void *state) {
  struct fr__t2i_state *s = state;
  if (!s)
    return;
  fr_clip_free(s->clip);
  fr_unet_free(s->u);
  fr_vae_free(s->vae);
  fr_tensor_free(s->ctx);
  fr_free(s);
}

static enum fr_status fr__t2i_setup(struct fr__bench *b, void **state, double *flops, struct fr_err *err) {
  struct fr__t2i_state *s = fr_calloc(1, sizeof *s);
  if (!s)
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  enum fr_status rc = fr_clip_load(b->ctx, b->ck, FR_CLIP_ROLE_L, &s->clip, err);
  if (!rc)
    rc = fr_unet_load(b->ctx, b->ck, &s->u, err);
  if (!rc)
    rc = fr_vae_load(b->ctx, b->ck, &s->vae, err);
  if (!rc && s->u->cfg.adm_in_channels)
    rc = fr_errf(err, FR_E_UNSUPPORTED, "txt2img: the SD1.5 pipeline row needs an SD1.x checkpoint");
  if (rc) {
    fr__t2i_teardown(s);
    return rc;
  }
  for (int k = 0; k < 2; k++) /* BOS, 8 word tokens, EOS, padding */
    for (int i = 0; i < 77; i++)
      s->ids[k * 77 + i] = i == 0 ? 49406 : i <= 8 ? 320 + 37 * i + k : 49407;
  const struct fr_unet_config *uc = &s->u->cfg;
  struct fr_synth_unet a = {.ch = uc->model_channels,
                            .levels = uc->levels,
                            .nres = uc->num_res_blocks,
                            .depth_mid = uc->mid_depth,
                            .ctx_dim = uc->context_dim,
                            .adm_in = uc->adm_in_channels,
                            .in_ch = uc->in_channels,
                            .out_ch = uc->out_channels};
  for (int i = 0; i < uc->levels && i < 4; i++)
    a.mult[i] = uc->channels[i] / uc->model_channels, a.depth[i] = uc->depth[i];
  *flops = 2.0 * FR__T2I_STEPS * fr_synth_unet_flops(&a, 64, 64, 77) +
           fr_vae_decode_flops(fr_vae_config(s->vae), 64, 64);
  s->b = b;
  *state = s;
  return FR_OK;
}

static enum fr_status fr__t2i_denoise(void *user, const float *x, int64_t n, double sigma, double t,
                                      float *out) {
  struct fr__t2i_state *s = user;
  struct fr_ctx *c = s->b->ctx;
  struct fr_tensor *hx = fr_tensor_f32(4, (int64_t[]){2, 4, 64, 64}), *ht = fr_tensor_f32(1, (int64_t[]){1});
  if (!hx || !ht) {
    fr_tensor_free(hx);
    fr_tensor_free(ht);
    return fr_errf(s->err, FR_E_NOMEM, "out of memory");
  }
  float k = (float)(1.0 / sqrt(sigma * sigma + 1.0));
  for (int64_t i = 0; i < n; i++)
    ((float *)hx->data)[i] = ((float *)hx->data)[n + i] = x[i] * k;
  ((float *)ht->data)[0] = (float)t;
  struct fr_tensor *dx = fr_ctx_upload(c, hx), *dt = fr_ctx_upload(c, ht), *eps = NULL, *he = NULL;
  fr_tensor_free(hx);
  fr_tensor_free(ht);
  struct fr_unet_cond cond = {.context = s->ctx};
  enum fr_status rc =
      dx && dt ? fr_unet_forward(c, s->u, dx, dt, &cond, NULL, &eps, s->err) : fr_ctx_status(c, s->err);
  if (!rc && !(he = fr_ctx_download(c, eps)))
    rc = fr_ctx_status(c, s->err);
  fr_tensor_free(dx);
  fr_tensor_free(dt);
  fr_tensor_free(eps);
  if (!rc)
    for (int64_t i = 0; i < n; i++) {
      const float *e = he->data;
      out[i] = (float)(x[i] - sigma * (e[i] + 7.5 * (e[n + i] - e[i])));
    }
  fr_tensor_free(he);
  return rc;
}

static enum fr_status fr__t2i_run(struct fr__bench *b, void *state, struct fr_err *err) {
  struct fr__t2i_state *s = state;
  s->err = err;
  struct fr_clip_out o = {0};
  enum fr_status rc = fr_clip_encode(b->ctx, s->clip, s->ids, 2, 77, &o, err);
  fr_tensor_free(s->ctx);
  s->ctx = rc ? NULL : o.last;
  o.last = NULL;
  fr_clip_out_free(&o);
  if (rc)
    return rc;
  int64_t n = 4 * 64 * 64;
  float *x = fr_malloc((size_t)n * sizeof(float));
  struct fr_model_sched *ms = fr_malloc(sizeof *ms);
  struct fr_schedule *sc = fr_malloc(sizeof *sc);
  if (!x || !ms || !sc) {
    fr_free(x);
    fr_free(ms);
    fr_free(sc);
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  }
  fr_model_sched_sd(ms);
  rc = fr_schedule_make(ms, "normal", FR__T2I_STEPS, 1.0, NULL, sc, err);
  if (!rc) {
    struct fr_torch_gen g;
    fr_torch_gen_seed(&g, 0);
    fr_torch_randn(&g, x, n);
    double k = sqrt(1.0 + sc->sigmas[0] * sc->sigmas[0]);
    for (int64_t i = 0; i < n; i++)
      x[i] = (float)(x[i] * k);
    struct fr_sampler_io io = {.denoise = fr__t2i_denoise, .denoise_user = s, .model = ms, .eta = 1.0};
    double t0 = fr__now();
    rc = fr_sample("euler", &io, sc, x, n, err);
    s->sample_s = fr__now() - t0;
  }
  if (!rc) {
    struct fr_tensor *hz = fr_tensor_f32(4, (int64_t[]){1, 4, 64, 64}), *z = NULL, *img = NULL;
    if (hz) {
      for (int64_t i = 0; i < n; i++)
        ((float *)hz->data)[i] = x[i] / 0.18215f;
      z = fr_ctx_upload(b->ctx, hz);
    }
    rc = z ? fr_vae_decode(b->ctx, s->vae, z, &img, err) : fr_errf(err, FR_E_NOMEM, "out of memory");
    fr_tensor_free(hz);
    fr_tensor_free(z);
    fr_tensor_free(img);
  }
  if (!rc)
    fprintf(b->out, "  txt2img: %.2f s per sampler step (batch-2 UNet forward), %.1f s for 20 steps\n",
            s->sample_s / FR__T2I_STEPS, s->sample_s);
  fr_free(x);
  fr_free(ms);
  fr_free(sc);
  return rc;
}

/* The table, in pipeline order. The pipelines issue adds a 20-step txt2img row. */
static const struct fr__row fr__bench_rows[] = {
    {"sgemm", "OpenBLAS sgemm 2048^3", false, fr__gemm_setup, fr__gemm_run, fr__gemm_teardown},
    {"text", "text encoder(s), 77 tokens", true, fr__text_setup, fr__text_run, fr__text_teardown},
    {"unet", "UNet forward 64x64, batch 1", true, fr__unet_setup, fr__unet_run, fr__unet_teardown},
    {"vae", "VAE decode 64x64 -> 512x512", true, fr__vae_setup, fr__vae_run, fr__vae_teardown},
    {"txt2img", "SD1.5 txt2img 512x512 20 steps", true, fr__t2i_setup, fr__t2i_run, fr__t2i_teardown},
};

static bool fr__selected(const char *only, const char *name) {
  if (!only)
    return true;
  size_t n = strlen(name);
  for (const char *p = only; *p;) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len == n && strncmp(p, name, n) == 0)
      return true;
    p += len + (e ? 1 : 0);
  }
  return false;
}

static int fr__cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

enum fr_status fr_bench_run(const struct fr_bench_opts *o, FILE *out, struct fr_err *err) {
  struct fr__bench b = {.o = o, .out = out};
  const int nrows = (int)(sizeof fr__bench_rows / sizeof fr__bench_rows[0]);
  int runs = o->runs > 0 ? o->runs : 3;
  enum fr_status rc = fr_synth_arch(o->arch ? o->arch : "sd15", &b.arch, err);
  if (rc)
    return rc;
  if (o->only) { /* an unknown name is a usage error, not a silently empty run */
    for (const char *p = o->only; *p;) {
      const char *e = strchr(p, ',');
      size_t len = e ? (size_t)(e - p) : strlen(p);
      bool known = false;
      for (int r = 0; r < nrows; r++)
        known =
            known || (strlen(fr__bench_rows[r].name) == len && strncmp(p, fr__bench_rows[r].name, len) == 0);
      if (!known)
        return fr_errf(err, FR_E_INVALID,
                       "--only: unknown component '%.*s' (known: sgemm, text, unet, vae, txt2img)", (int)len,
                       p);
      p += len + (e ? 1 : 0);
    }
  }
  struct fr_ctx_opts co = {.device = o->device ? o->device : "cpu", .dtype = FR_F32, .threads = o->threads};
  rc = fr_ctx_new(&co, &b.ctx, err);
  if (rc)
    return rc;
  if (o->ckpt) {
    rc = fr_checkpoint_open(o->ckpt, &b.ck, err);
    if (rc) {
      fr_ctx_free(b.ctx);
      return rc;
    }
  }
  fprintf(out, "flowrun bench: arch %s, checkpoint %s, device %s, threads %d, median of %d runs\n",
          b.arch.name, o->ckpt ? o->ckpt : "(none)", fr_ctx_device_name(b.ctx), o->threads, runs);
  fprintf(out, "%-30s %10s %10s %10s %10s %12s\n", "component", "load ms", "ms", "GFLOP", "GFLOP/s",
          "peak RSS MiB");
  for (int r = 0; r < nrows && !rc; r++) {
    const struct fr__row *row = &fr__bench_rows[r];
    if (!fr__selected(o->only, row->name))
      continue;
    if (!o->only && !strcmp(row->name, "txt2img")) { /* minutes on a CPU: only when asked for */
      fprintf(out, "%-30s skipped: takes minutes; ask for it with --only txt2img\n", row->label);
      continue;
    }
    if (row->needs_ckpt && !b.ck) {
      fprintf(out, "%-30s skipped: needs --ckpt (flowrun synth %s FILE makes one)\n", row->label,
              b.arch.name);
      continue;
    }
    void *state = NULL;
    double flops = 0, t0 = fr__now();
    rc = row->setup(&b, &state, &flops, err);
    double load_ms = (fr__now() - t0) * 1e3;
    double *ms = fr_calloc((size_t)runs, sizeof *ms);
    if (!rc && !ms)
      rc = fr_errf(err, FR_E_NOMEM, "out of memory");
    for (int i = 0; !rc && i < runs; i++) {
      t0 = fr__now();
      rc = row->run(&b, state, err);
      ms[i] = (fr__now() - t0) * 1e3;
    }
    if (!rc) {
      qsort(ms, (size_t)runs, sizeof *ms, fr__cmp_double);
      double med = runs % 2 ? ms[runs / 2] : 0.5 * (ms[runs / 2 - 1] + ms[runs / 2]);
      fprintf(out, "%-30s %10.1f %10.1f %10.1f %10.1f %12.0f\n", row->label, load_ms, med, flops / 1e9,
              flops / 1e9 / (med / 1e3), fr__peak_rss_mib());
      fflush(out);
    } else {
      fr_err_prefix(err, rc, "%s: ", row->label);
    }
    fr_free(ms);
    if (state)
      row->teardown(state);
  }
  fr_checkpoint_close(b.ck);
  fr_ctx_free(b.ctx);
  return rc;
}
