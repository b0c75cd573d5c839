/* flowrun bench: see bench.h. A row of fr__rows names a component kind, the architecture its in-memory
 * weights come from and its full-size shape; fr__row_run gives it a fresh context, builds or opens its
 * weights, lets the kind's setup load the model and upload the inputs, runs the warm-up and the timed
 * runs (each ended by fr_ctx_sync) and reads the peak memory. The code path is the same on every device:
 * only the context differs. */
#include "nodes/models/bench.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/safetensors.h"
#include "kernels/ops.h"
#include "nodes/models/clip.h"
#include "nodes/models/controlnet.h"
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

/* ---- the rows ---- */

enum fr__kind { FR__SGEMM, FR__CLIP, FR__UNET, FR__CONTROLNET, FR__VAE, FR__T2I };
enum fr__file { FR__F_SD15, FR__F_SDXL, FR__F_CONTROLNET }; /* which --ckpt* option replaces memory */
enum { FR__P_UNET = 1, FR__P_VAE = 2, FR__P_CLIP = 4 };     /* parts of an in-memory checkpoint */
enum { FR__DEF_CPU = 1, FR__DEF_CUDA = 2, FR__CPU_ONLY = 4 };

struct fr__row {
  const char *name;
  enum fr__kind kind;
  const char *arch;   /* synth architecture of the in-memory weights */
  unsigned parts;     /* which of its components are built */
  enum fr__file file; /* the option naming a file that replaces them */
  int latent;         /* full-size latent side (UNet, ControlNet, VAE input, txt2img); 0: none */
  int batch;          /* default batch */
  unsigned flags;
  double ref_ms, ref_peak_gib; /* PyTorch on an H200 (DESIGN.md); 0: none */
  const char *ref_dtype;
};

#define FR__T2I_STEPS 20
#define FR__TOKENS 77

static const struct fr__row fr__rows[] = {
    {"sgemm", FR__SGEMM, NULL, 0, FR__F_SD15, 0, 0, FR__DEF_CPU | FR__CPU_ONLY, 0, 0, NULL},
    {"clip-l", FR__CLIP, "sd15", FR__P_CLIP, FR__F_SD15, 0, 2, FR__DEF_CPU | FR__DEF_CUDA, 3.75, 0, "fp16"},
    {"unet-sd15", FR__UNET, "sd15", FR__P_UNET, FR__F_SD15, 64, 2, FR__DEF_CPU | FR__DEF_CUDA, 25.6, 1.8,
     "fp16"},
    {"unet-sdxl", FR__UNET, "sdxl", FR__P_UNET, FR__F_SDXL, 128, 2, FR__DEF_CUDA, 61.6, 5.2, "fp16"},
    {"controlnet-sd15", FR__CONTROLNET, "controlnet-sd15", FR__P_UNET, FR__F_CONTROLNET, 64, 2, FR__DEF_CUDA,
     12.8, 0, "fp16"},
    {"vae-512", FR__VAE, "sd15", FR__P_VAE, FR__F_SD15, 64, 1, FR__DEF_CPU | FR__DEF_CUDA, 22.2, 0, "fp16"},
    {"vae-1024", FR__VAE, "sdxl", FR__P_VAE, FR__F_SDXL, 128, 1, FR__DEF_CUDA, 85.5, 0, "bf16"},
    {"txt2img", FR__T2I, "sd15", FR__P_UNET | FR__P_VAE | FR__P_CLIP, FR__F_SD15, 64, 2, 0, 0, 0, NULL},
};
#define FR__NROWS ((int)(sizeof fr__rows / sizeof fr__rows[0]))

/* Names of the rows before they were split by architecture; still accepted by --only. */
static const char *const fr__aliases[][2] = {{"text", "clip-l"}, {"unet", "unet-sd15"}, {"vae", "vae-512"}};

static const char *fr__ref_label = "PyTorch 2.11 eager fp16 SDPA on H200 (VAE 1024: bf16)";

/* ---- state shared by the rows ---- */

struct fr__bench {
  const struct fr_bench_opts *o;
  FILE *out;
  bool cuda;
  enum fr_dtype dtype;
  int runs, warmup, size_div;
  struct fr_checkpoint *files[3]; /* indexed by enum fr__file; NULL: in-memory weights */
  uint16_t *pool;                 /* F16 random values that random weights are slices of */
  int64_t pool_n;
  uint64_t rng;
};

/* One row being measured. */
struct fr__job {
  struct fr__bench *b;
  const struct fr__row *row;
  struct fr_ctx *ctx;
  const struct fr_checkpoint *ck;
  int batch, latent; /* after --batch and --size-div */
  char note[160];    /* printed after the row (txt2img's per-step time) */
};

struct fr__kind_ops {
  /* loads the model and uploads the inputs into j->ctx; *flops = FLOPs of one run */
  enum fr_status (*setup)(struct fr__job *j, void **state, double *flops, struct fr_err *err);
  /* one run; when keep is not NULL it receives the main output (a context tensor) for the finite check */
  enum fr_status (*run)(struct fr__job *j, void *state, struct fr_tensor **keep, struct fr_err *err);
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

/* xorshift64*: weights and inputs only have to be finite and small */
static uint64_t fr__rng(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1DULL;
}

static float fr__uniform(uint64_t *s) { /* [-1, 1) */
  return (float)(fr__rng(s) >> 40) * (1.0f / 8388608.0f) - 1.0f;
}

/* ---- in-memory checkpoints from the synth key lists ---- */

/* Random tensors up to this many values are views of a slice of the pool at a random offset (drawing
 * billions of values one by one takes longer than the benchmark); larger ones tile it. */
#define FR__POOL_MAX ((int64_t)1 << 25)

static enum fr_status fr__pool_ensure(struct fr__bench *b, int64_t n, struct fr_err *err) {
  n = n < FR__POOL_MAX ? n : FR__POOL_MAX;
  if (n <= b->pool_n)
    return FR_OK;
  uint16_t *p = fr_realloc(b->pool, (size_t)n * sizeof *p);
  if (!p)
    return fr_errf(err, FR_E_NOMEM, "out of memory for %lld random weight values", (long long)n);
  const float amp = 0.02f * 1.7320508f; /* uniform on [-a, a] has std a / sqrt(3) = 0.02, as synth */
  for (int64_t i = b->pool_n; i < n; i++)
    p[i] = fr_f32_to_f16(fr__uniform(&b->rng) * amp);
  b->pool = p;
  b->pool_n = n;
  return FR_OK;
}

static int64_t fr__numel(const struct fr_synth_tensor *st) {
  int64_t n = 1;
  for (int i = 0; i < st->ndim; i++)
    n *= st->shape[i];
  return n;
}

/* A host tensor for one key: F16 unless the key has a fixed dtype, filled as the list says. */
static struct fr_tensor *fr__weight(struct fr__bench *b, const struct fr_synth_tensor *st) {
  enum fr_dtype dt = st->fixed_dtype ? st->dtype : FR_F16;
  int64_t n = fr__numel(st);
  if (dt == FR_F16 && st->init == FR_SYNTH_RANDOM && n <= b->pool_n) {
    int64_t off = (int64_t)(fr__rng(&b->rng) % (uint64_t)(b->pool_n - n + 1));
    return fr_tensor_view(FR_F16, st->ndim, st->shape, b->pool + off);
  }
  struct fr_tensor *t = fr_tensor_new(dt, st->ndim, st->shape);
  if (!t)
    return NULL;
  for (int64_t i = 0; i < n;) {
    if (dt == FR_F16 && st->init == FR_SYNTH_RANDOM) { /* larger than the pool: tile it */
      int64_t k = n - i < b->pool_n ? n - i : b->pool_n;
      memcpy((uint16_t *)t->data + i, b->pool, (size_t)k * sizeof(uint16_t));
      i += k;
      continue;
    }
    double v = st->init == FR_SYNTH_ONES     ? 1.0
               : st->init == FR_SYNTH_ZEROS  ? 0.0
               : st->init == FR_SYNTH_ARANGE ? (double)i
               : st->init == FR_SYNTH_CONST  ? st->value
                                             : (double)fr__uniform(&b->rng) * 0.02 * 1.7320508;
    switch (dt) {
    case FR_F16: ((uint16_t *)t->data)[i] = fr_f32_to_f16((float)v); break;
    case FR_F32: ((float *)t->data)[i] = (float)v; break;
    case FR_I64: ((int64_t *)t->data)[i] = (int64_t)v; break;
    case FR_I32: ((int32_t *)t->data)[i] = (int32_t)v; break;
    default: fr_tensor_free(t); return NULL; /* synth lists hold no other dtype */
    }
    i++;
  }
  return t;
}

/* A width w of the full-size model scaled by ch / base, rounded to a multiple of 64 (whole 64-wide heads
 * from 256 up; the tiny-model head rules below that), at least 64. */
static int fr__scale_w(int w, int ch, int base) {
  int s = (w * ch / base + 32) / 64 * 64;
  return s < 64 ? 64 : s;
}

/* The synth architecture `name`, shrunk to model_channels ch (0: full size). The VAE's and the text
 * encoders' widths scale with ch / 320 (the VAE's rounded up to a multiple of 32 for its GroupNorms), and
 * the UNet's context and added-conditioning widths follow the encoders, so a shrunk txt2img still fits
 * together. */
static enum fr_status fr__arch(const char *name, int ch, struct fr_synth_arch *a, struct fr_err *err) {
  enum fr_status rc = fr_synth_arch(name, a, err);
  if (rc || !ch || ch == a->unet.ch)
    return rc;
  int base = a->unet.ch;
  a->unet.ch = ch;
  int vch = (a->vae.ch * ch / base + 31) / 32 * 32;
  a->vae.ch = vch < 32 ? 32 : vch;
  for (int i = 0; i < a->n_clip; i++) {
    a->clip[i].width = fr__scale_w(a->clip[i].width, ch, base);
    a->clip[i].ff = 4 * a->clip[i].width;
    if (a->clip[i].proj)
      a->clip[i].proj = a->clip[i].width;
  }
  if (a->unet.adm_in &&
      a->n_clip == 2) /* SDXL: context = CLIP-L ++ OpenCLIP-G; label_emb = G's projection + 6 x 256 */
    a->unet.ctx_dim = a->clip[0].width + a->clip[1].width, a->unet.adm_in = a->clip[1].proj + 6 * 256;
  else /* SD1.5 and its ControlNet: CLIP-L's last state */
    a->unet.ctx_dim = fr__scale_w(a->unet.ctx_dim, ch, base);
  return FR_OK;
}

struct fr__memck {
  struct fr_buf blob; /* a safetensors file, in memory */
  struct fr_safetensors *st;
  struct fr_checkpoint ck;
};

static void fr__memck_free(struct fr__memck *m) {
  fr_st_close(m->st);
  fr_buf_free(&m->blob);
  memset(m, 0, sizeof *m);
}

/* Builds the parts of a row's architecture as an in-memory single-file checkpoint: the synth key list
 * (the real names and shapes), random F16 values, serialised and parsed back, so the normal loaders
 * read it exactly as they read a file. */
static enum fr_status fr__memck_make(struct fr__bench *b, const struct fr__row *row, struct fr__memck *m,
                                     struct fr_err *err) {
  memset(m, 0, sizeof *m);
  struct fr_synth_arch a;
  enum fr_status rc = fr__arch(row->arch, b->o->ch, &a, err);
  if (rc)
    return rc;
  a.has_unet = a.has_unet && (row->parts & FR__P_UNET);
  a.has_vae = a.has_vae && (row->parts & FR__P_VAE);
  a.n_clip = (row->parts & FR__P_CLIP) ? 1 : 0; /* the first encoder: CLIP-L for sd15 */
  a.ldm_extras = false;
  struct fr_synth_list *l = NULL;
  rc = fr_synth_list_build(&a, &l, err);
  if (rc)
    return rc;
  int64_t biggest = 0;
  for (int i = 0; i < l->n; i++)
    if (l->t[i].init == FR_SYNTH_RANDOM && fr__numel(&l->t[i]) > biggest)
      biggest = fr__numel(&l->t[i]);
  rc = fr__pool_ensure(b, biggest, err);
  struct fr_st_item *items = rc ? NULL : fr_calloc((size_t)l->n, sizeof *items);
  struct fr_tensor **host = rc ? NULL : fr_calloc((size_t)l->n, sizeof *host);
  if (!rc && (!items || !host))
    rc = fr_errf(err, FR_E_NOMEM, "out of memory");
  for (int i = 0; !rc && i < l->n; i++) {
    host[i] = fr__weight(b, &l->t[i]);
    if (!host[i])
      rc = fr_errf(err, FR_E_NOMEM, "out of memory making %s", l->t[i].name);
    else
      items[i] = (struct fr_st_item){.name = l->t[i].name, .t = host[i]};
  }
  if (!rc)
    rc = fr_st_serialize(items, l->n, NULL, NULL, 0, &m->blob, err);
  if (!rc)
    rc = fr_st_parse(m->blob.data, m->blob.len, "(in-memory synth weights)", &m->st, err);
  for (int i = 0; host && i < l->n; i++)
    fr_tensor_free(host[i]);
  fr_free(host);
  fr_free(items);
  fr_synth_list_free(l);
  if (rc) {
    fr__memck_free(m);
    return rc;
  }
  m->ck =
      (struct fr_checkpoint){.layout = FR_LAYOUT_SINGLE, .path = "(in-memory synth weights)", .file = m->st};
  return FR_OK;
}

/* ---- inputs ---- */

/* A context tensor of deterministic values offset + [-scale, scale]. */
static struct fr_tensor *fr__input(struct fr_ctx *c, int ndim, const int64_t *shape, float offset,
                                   float scale, uint64_t seed) {
  struct fr_tensor *h = fr_tensor_f32(ndim, shape);
  if (!h)
    return NULL;
  uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1;
  float *p = h->data;
  for (int64_t i = 0; i < fr_tensor_numel(h); i++)
    p[i] = offset + fr__uniform(&s) * scale;
  struct fr_tensor *t = fr_ctx_upload(c, h);
  fr_tensor_free(h);
  return t;
}

static struct fr_tensor *fr__fill(struct fr_ctx *c, int ndim, const int64_t *shape, const float *vals,
                                  int nvals) { /* values repeated */
  struct fr_tensor *h = fr_tensor_f32(ndim, shape);
  if (!h)
    return NULL;
  for (int64_t i = 0; i < fr_tensor_numel(h); i++)
    ((float *)h->data)[i] = vals[i % nvals];
  struct fr_tensor *t = fr_ctx_upload(c, h);
  fr_tensor_free(h);
  return t;
}

/* The context's first error, or out of memory when an allocation failed without one. */
static enum fr_status fr__ctx_err(struct fr_ctx *c, struct fr_err *err) {
  enum fr_status rc = fr_ctx_status(c, err);
  return rc ? rc : fr_errf(err, FR_E_NOMEM, "out of memory");
}

/* Token ids [batch, 77]: BOS, a 20-token prompt (different per row), EOS, padding. The prompt length
 * does not change the work: all 77 positions are computed. */
static int32_t *fr__ids(int batch) {
  int32_t *ids = fr_malloc((size_t)batch * FR__TOKENS * sizeof *ids);
  for (int k = 0; ids && k < batch; k++)
    for (int i = 0; i < FR__TOKENS; i++)
      ids[k * FR__TOKENS + i] = i == 0 ? 49406 : i <= 20 ? 320 + 37 * i + k : 49407;
  return ids;
}

/* ---- analytic FLOPs from the loaded architectures ---- */

static struct fr_synth_unet fr__unet_shape(const struct fr_unet_config *uc) {
  struct fr_synth_unet a = {.ch = uc->model_channels,
                            .levels = uc->levels,
                            .nres = uc->num_res_blocks,
                            .depth_mid = uc->mid_depth,
                            .ctx_dim = uc->context_dim,
                            .linear_proj = uc->linear_proj,
                            .adm_in = uc->adm_in_channels,
                            .in_ch = uc->in_channels,
                            .out_ch = uc->out_channels,
                            .heads = uc->heads,
                            .head_dim = uc->head_dim};
  for (int i = 0; i < uc->levels && i < 4; i++)
    a.mult[i] = uc->channels[i] / uc->model_channels, a.depth[i] = uc->depth[i];
  return a;
}

static struct fr_synth_clip fr__clip_shape(const struct fr_clip_config *cc) {
  return (struct fr_synth_clip){.hf = cc->layout == FR_CLIP_LAYOUT_HF,
                                .width = cc->width,
                                .layers = cc->layers,
                                .ff = cc->mlp,
                                .proj = cc->proj};
}

static struct fr_vae_config fr__vae_cfg(const struct fr_synth_vae *v) {
  struct fr_vae_config c = {.ch = v->ch,
                            .levels = v->levels,
                            .num_res_blocks = v->nres,
                            .in_channels = 3,
                            .out_channels = 3,
                            .z_channels = v->z};
  for (int i = 0; i < v->levels && i < 4; i++)
    c.mult[i] = v->mult[i];
  return c;
}

/* FLOPs of the row at full size, default batch: what PyTorch's figure was measured on. A row's reference
 * is shown only when its own count (from the loaded model and the actual shapes) equals this. */
static double fr__full_flops(const struct fr__row *row) {
  struct fr_synth_arch a;
  if (!row->arch || fr_synth_arch(row->arch, &a, NULL))
    return 0;
  double L = row->latent;
  switch (row->kind) {
  case FR__CLIP: return row->batch * fr_synth_clip_flops(&a.clip[0], FR__TOKENS);
  case FR__UNET: return row->batch * fr_synth_unet_flops(&a.unet, (int)L, (int)L, FR__TOKENS);
  case FR__CONTROLNET: return row->batch * fr_synth_controlnet_flops(&a.unet, (int)L, (int)L, FR__TOKENS);
  case FR__VAE: {
    struct fr_vae_config c = fr__vae_cfg(&a.vae);
    return row->batch * fr_vae_decode_flops(&c, (int)L, (int)L);
  }
  default: return 0;
  }
}

/* ---- sgemm: plain OpenBLAS on the host, the floor the cpu rows are compared with ---- */

#define FR__GEMM_N 2048
struct fr__gemm {
  float *a, *b, *c;
};

static void fr__gemm_teardown(void *state) {
  struct fr__gemm *g = state;
  if (!g)
    return;
  fr_free(g->a), fr_free(g->b), fr_free(g->c);
  fr_free(g);
}

static enum fr_status fr__gemm_setup(struct fr__job *j, void **state, double *flops, struct fr_err *err) {
  struct fr__gemm *g = fr_calloc(1, sizeof *g);
  size_t n = (size_t)FR__GEMM_N * FR__GEMM_N;
  if (g) {
    g->a = fr_malloc(n * sizeof(float));
    g->b = fr_malloc(n * sizeof(float));
    g->c = fr_malloc(n * sizeof(float));
  }
  if (!g || !g->a || !g->b || !g->c) {
    fr__gemm_teardown(g);
    return fr_errf(err, FR_E_NOMEM, "out of memory for the sgemm benchmark");
  }
  for (size_t i = 0; i < n; i++) {
    g->a[i] = (float)((i * 7) % 13) * 0.01f;
    g->b[i] = (float)((i * 5) % 11) * 0.01f;
  }
  if (j->b->o->threads > 0)
    openblas_set_num_threads(j->b->o->threads);
  *state = g;
  *flops = 2.0 * FR__GEMM_N * FR__GEMM_N * FR__GEMM_N;
  return FR_OK;
}

static enum fr_status fr__gemm_run(struct fr__job *j, void *state, struct fr_tensor **keep,
                                   struct fr_err *err) {
  struct fr__gemm *g = state;
  cblas_sgemm(101, 111, 111, FR__GEMM_N, FR__GEMM_N, FR__GEMM_N, 1.0f, g->a, FR__GEMM_N, g->b, FR__GEMM_N,
              0.0f, g->c, FR__GEMM_N);
  return FR_OK;
}

/* The floor paired with one timed run of a cpu row: one 2048^3 sgemm right before the run, so the ratio of
 * the run to the floor is taken in the same seconds (a shared or throttled machine changes speed from minute
 * to minute; a single sgemm row at the start of the process does not see that). Returns GFLOP/s, 0 when the
 * buffers cannot be had. */
static double fr__paired_floor(struct fr__job *j, struct fr__gemm **g) {
  if (!*g) {
    void *st = NULL;
    double fl;
    struct fr_err e = {0};
    if (fr__gemm_setup(j, &st, &fl, &e) != FR_OK)
      return 0;
    *g = st;
  }
  double s = 0;
  for (int i = 0; i < 3; i++) { /* the fastest of three: a call slowed by another process would flatter
                                 * the run's ratio, and other load only ever adds time */
    double t0 = fr__now();
    fr__gemm_run(j, *g, NULL, NULL);
    double t = fr__now() - t0;
    s = i == 0 || t < s ? t : s;
  }
  return s > 0 ? 2.0 * FR__GEMM_N * FR__GEMM_N * FR__GEMM_N / s * 1e-9 : 0;
}

/* ---- CLIP-L over [B, 77] tokens ---- */

struct fr__clip_state {
  struct fr_clip *m;
  int32_t *ids; /* [B, 77] */
};

static void fr__clip_teardown(void *state) {
  struct fr__clip_state *s = state;
  if (!s)
    return;
  fr_clip_free(s->m);
  fr_free(s->ids);
  fr_free(s);
}

static enum fr_status fr__clip_setup(struct fr__job *j, void **state, double *flops, struct fr_err *err) {
  struct fr__clip_state *s = fr_calloc(1, sizeof *s);
  if (!s || !(s->ids = fr__ids(j->batch))) {
    fr__clip_teardown(s);
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  }
  enum fr_status rc = fr_clip_load(j->ctx, j->ck, FR_CLIP_ROLE_L, &s->m, err);
  if (rc) {
    fr__clip_teardown(s);
    return rc;
  }
  struct fr_synth_clip shape = fr__clip_shape(&s->m->cfg);
  *flops = j->batch * fr_synth_clip_flops(&shape, FR__TOKENS);
  *state = s;
  return FR_OK;
}

static enum fr_status fr__clip_run(struct fr__job *j, void *state, struct fr_tensor **keep,
                                   struct fr_err *err) {
  struct fr__clip_state *s = state;
  struct fr_clip_out o = {0};
  enum fr_status rc = fr_clip_encode(j->ctx, s->m, s->ids, j->batch, FR__TOKENS, &o, err);
  if (!rc && keep) {
    *keep = o.last; /* [B, 77, W] */
    o.last = NULL;
  }
  fr_clip_out_free(&o);
  return rc;
}

/* ---- one UNet step: x [B, 4, h, w], t [B], context [B, 77, D] (+ SDXL's added conditioning) ---- */

struct fr__unet_state {
  struct fr_unet *u;
  struct fr_tensor *x, *t, *ctx, *te, *tid;
  /* the step as the sampler runs it where the device records (CUDA graphs): recorded after the first
   * eager forward, replayed by every later run */
  struct fr_recording *rec;
  struct fr_tensor *t_sin, *y, *eps;
  bool eager_only;
};

static void fr__unet_teardown(void *state) {
  struct fr__unet_state *s = state;
  if (!s)
    return;
  fr_tensor_free(s->eps);
  fr_tensor_free(s->t_sin);
  fr_tensor_free(s->y);
  fr_recording_free(s->rec);
  fr_unet_free(s->u);
  fr_tensor_free(s->x);
  fr_tensor_free(s->t);
  fr_tensor_free(s->ctx);
  fr_tensor_free(s->te);
  fr_tensor_free(s->tid);
  fr_free(s);
}

static enum fr_status fr__unet_setup(struct fr__job *j, void **state, double *flops, struct fr_err *err) {
  struct fr__unet_state *s = fr_calloc(1, sizeof *s);
  if (!s)
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  enum fr_status rc = fr_unet_load(j->ctx, j->ck, &s->u, err);
  const struct fr_unet_config *uc = rc ? NULL : &s->u->cfg;
  bool sdxl = strcmp(j->row->arch, "sdxl") == 0;
  if (!rc && (sdxl ? uc->arch != FR_UNET_SDXL : uc->adm_in_channels != 0))
    rc = fr_errf(err, FR_E_INVALID, "%s: the UNet is not an %s UNet (wrong file for this row?)", j->ck->path,
                 sdxl ? "SDXL base" : "SD1.x-type");
  int64_t B = j->batch, S = j->latent;
  if (!rc) {
    s->x = fr__input(j->ctx, 4, (int64_t[]){B, uc->in_channels, S, S}, 0.0f, 1.0f, 1);
    s->ctx = fr__input(j->ctx, 3, (int64_t[]){B, FR__TOKENS, uc->context_dim}, 0.0f, 1.0f, 2);
    s->t = fr__fill(j->ctx, 1, (int64_t[]){B}, (const float[]){500.0f}, 1);
    if (!s->x || !s->ctx || !s->t)
      rc = fr__ctx_err(j->ctx, err);
  }
  if (!rc && sdxl) {
    /* text_embeds [B, P] and the 6 time ids (original size, crop, target size), each embedded 256-wide
     * as in the real models; a model whose label_emb does not fit that (the tiny test files) gets the
     * added-conditioning vector y [B, adm] directly */
    int64_t P = uc->adm_in_channels - 6 * 256;
    float px = (float)(8 * S);
    if (P > 0) {
      s->te = fr__input(j->ctx, 2, (int64_t[]){B, P}, 0.0f, 1.0f, 3);
      s->tid = fr__fill(j->ctx, 2, (int64_t[]){B, 6}, (const float[]){px, px, 0, 0, px, px}, 6);
    } else {
      s->te = fr__input(j->ctx, 2, (int64_t[]){B, uc->adm_in_channels}, 0.0f, 1.0f, 3);
    }
    if (!s->te || (P > 0 && !s->tid))
      rc = fr__ctx_err(j->ctx, err);
  }
  if (rc) {
    fr__unet_teardown(s);
    return rc;
  }
  struct fr_synth_unet a = fr__unet_shape(uc);
  *flops = (double)B * fr_synth_unet_flops(&a, (int)S, (int)S, FR__TOKENS);
  *state = s;
  return FR_OK;
}

static enum fr_status fr__unet_run(struct fr__job *j, void *state, struct fr_tensor **keep,
                                   struct fr_err *err) {
  struct fr__unet_state *s = state;
  struct fr_unet_cond cond = {.context = s->ctx};
  if (s->tid)
    cond.text_embeds = s->te, cond.time_ids = s->tid;
  else
    cond.y = s->te;
  struct fr_tensor *eps = NULL;
  if (s->rec) { /* a replay, as the sampler's steps after its first */
    enum fr_status rc = fr_recording_replay(s->rec, err);
    if (!rc && keep && !(*keep = fr_copy(j->ctx, s->eps)))
      rc = fr__ctx_err(j->ctx, err);
    return rc;
  }
  enum fr_status rc = fr_unet_forward(j->ctx, s->u, s->x, s->t, &cond, NULL, &eps, err);
  if (!rc && keep)
    *keep = eps; /* [B, 4, h, w] */
  else
    fr_tensor_free(eps);
  if (rc || s->eager_only || !fr_ctx_can_record(j->ctx))
    return rc;
  /* record the step once (nothing runs while recording), with the timestep's sinusoid and SDXL's added
   * conditioning made beforehand, as nodes/pipeline/sampler.c does */
  s->eager_only = true; /* unless the recording below succeeds */
  float t = 500.0f;
  s->t_sin = fr_timestep_embedding_f32(j->ctx, &t, 1, s->u->cfg.model_channels, true, 0.0f, 10000.0f);
  if (s->tid)
    s->y = fr_unet_added_cond(j->ctx, s->u, &cond);
  struct fr_err e = {{0}};
  rc = fr_ctx_status(j->ctx, err);
  if (!rc && fr_ctx_record_begin(j->ctx, &e) == FR_OK) {
    struct fr_unet_cond rcond = {.context = s->ctx, .y = s->tid ? s->y : s->te, .t_sin = s->t_sin};
    fr_unet_forward(j->ctx, s->u, s->x, NULL, &rcond, NULL, &s->eps, &e);
    if (fr_ctx_record_end(j->ctx, &s->rec, &e) == FR_OK) {
      s->eager_only = false;
      snprintf(j->note, sizeof j->note,
               "timed runs replay the recorded step (CUDA graph), as the sampler does");
    } else {
      snprintf(j->note, sizeof j->note, "recording failed, eager forwards timed: %.100s", e.msg);
      fr_ctx_clear(j->ctx);
      fr_tensor_free(s->eps);
      s->eps = NULL;
    }
  }
  return rc;
}

/* ---- the ControlNet forward alone: x [B, 4, h, w], hint [B, 3, 8h, 8w] ---- */

struct fr__cn_state {
  struct fr_controlnet *cn;
  struct fr_tensor *x, *t, *ctx, *hint;
};

static void fr__cn_teardown(void *state) {
  struct fr__cn_state *s = state;
  if (!s)
    return;
  fr_controlnet_free(s->cn);
  fr_tensor_free(s->x);
  fr_tensor_free(s->t);
  fr_tensor_free(s->ctx);
  fr_tensor_free(s->hint);
  fr_free(s);
}

static enum fr_status fr__cn_setup(struct fr__job *j, void **state, double *flops, struct fr_err *err) {
  struct fr__cn_state *s = fr_calloc(1, sizeof *s);
  if (!s)
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  enum fr_status rc = fr_controlnet_load(j->ctx, j->ck, &s->cn, err);
  const struct fr_controlnet *cn = s->cn;
  if (!rc && cn->cfg.adm_in_channels)
    rc = fr_errf(err, FR_E_INVALID, "%s: an SDXL ControlNet; this row is the SD1.5 one", j->ck->path);
  int64_t B = j->batch, S = j->latent;
  if (!rc) {
    int64_t H = S * cn->hint_downscale;
    s->x = fr__input(j->ctx, 4, (int64_t[]){B, cn->cfg.in_channels, S, S}, 0.0f, 1.0f, 1);
    s->ctx = fr__input(j->ctx, 3, (int64_t[]){B, FR__TOKENS, cn->cfg.context_dim}, 0.0f, 1.0f, 2);
    s->t = fr__fill(j->ctx, 1, (int64_t[]){B}, (const float[]){500.0f}, 1);
    s->hint = fr__input(j->ctx, 4, (int64_t[]){B, cn->hint_channels, H, H}, 0.5f, 0.5f, 4); /* 0..1 */
    if (!s->x || !s->ctx || !s->t || !s->hint)
      rc = fr__ctx_err(j->ctx, err);
  }
  if (rc) {
    fr__cn_teardown(s);
    return rc;
  }
  struct fr_synth_unet a = fr__unet_shape(&cn->cfg);
  if (cn->n_hint == 8) /* the hint network's widths, from the loaded convs */
    for (int i = 0; i < 4; i++)
      a.hint_ch[i] = (int)cn->hw[2 * i]->shape[0];
  *flops = (double)B * fr_synth_controlnet_flops(&a, (int)S, (int)S, FR__TOKENS);
  *state = s;
  return FR_OK;
}

static enum fr_status fr__cn_run(struct fr__job *j, void *state, struct fr_tensor **keep,
                                 struct fr_err *err) {
  struct fr__cn_state *s = state;
  struct fr_unet_cond cond = {.context = s->ctx};
  struct fr_unet_control ctl = {0};
  enum fr_status rc = fr_controlnet_forward(j->ctx, s->cn, s->x, s->t, &cond, s->hint, 1.0f, &ctl, err);
  if (!rc && keep) {
    *keep = ctl.mid; /* the middle block's residual */
    ctl.mid = NULL;
  }
  fr_unet_control_free(&ctl);
  return rc;
}

/* ---- VAE decode of z [B, 4, h, w] into [B, 3, 8h, 8w] ---- */

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

static enum fr_status fr__vae_setup(struct fr__job *j, void **state, double *flops, struct fr_err *err) {
  struct fr__vae_state *s = fr_calloc(1, sizeof *s);
  if (!s)
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  enum fr_status rc = fr_vae_load(j->ctx, j->ck, &s->vae, err);
  const struct fr_vae_config *cfg = rc ? NULL : fr_vae_config(s->vae);
  if (!rc && !(s->z = fr__input(j->ctx, 4, (int64_t[]){j->batch, cfg->z_channels, j->latent, j->latent}, 0.0f,
                                1.0f, 5)))
    rc = fr__ctx_err(j->ctx, err);
  if (rc) {
    fr__vae_teardown(s);
    return rc;
  }
  *flops = j->batch * fr_vae_decode_flops(cfg, j->latent, j->latent);
  *state = s;
  return FR_OK;
}

static enum fr_status fr__vae_run(struct fr__job *j, void *state, struct fr_tensor **keep,
                                  struct fr_err *err) {
  struct fr__vae_state *s = state;
  struct fr_tensor *img = NULL;
  enum fr_status rc = fr_vae_decode(j->ctx, s->vae, s->z, &img, err);
  if (!rc && keep)
    *keep = img;
  else
    fr_tensor_free(img);
  return rc;
}

/* ---- txt2img: the SD1.5 pipeline, 20 euler steps with CFG (batch-2 UNet forwards) ----
 * Text encoding of prompt and negative (one batch-2 encoder call), 20 sampler steps each one batch-2 UNet
 * forward with the latent downloaded for the sampler's host arithmetic (what the Sampler node does), and
 * the VAE decode: what a Sampler node plus its TextEncode and VAEDecode nodes compute. */

struct fr__t2i_state {
  struct fr_clip *clip;
  struct fr_unet *u;
  struct fr_vae *vae;
  int32_t *ids;          /* [2, 77] */
  struct fr_tensor *ctx; /* [2, 77, D] after encoding */
  struct fr__job *j;
  struct fr_err *err;
};

static void fr__t2i_teardown(void *state) {
  struct fr__t2i_state *s = state;
  if (!s)
    return;
  fr_clip_free(s->clip);
  fr_unet_free(s->u);
  fr_vae_free(s->vae);
  fr_tensor_free(s->ctx);
  fr_free(s->ids);
  fr_free(s);
}

static enum fr_status fr__t2i_setup(struct fr__job *j, void **state, double *flops, struct fr_err *err) {
  struct fr__t2i_state *s = fr_calloc(1, sizeof *s);
  if (!s || !(s->ids = fr__ids(2))) {
    fr__t2i_teardown(s);
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  }
  enum fr_status rc = fr_clip_load(j->ctx, j->ck, FR_CLIP_ROLE_L, &s->clip, err);
  if (!rc)
    rc = fr_unet_load(j->ctx, j->ck, &s->u, err);
  if (!rc)
    rc = fr_vae_load(j->ctx, j->ck, &s->vae, err);
  if (!rc && s->u->cfg.adm_in_channels)
    rc = fr_errf(err, FR_E_UNSUPPORTED, "txt2img: the SD1.5 pipeline row needs an SD1.x checkpoint");
  if (rc) {
    fr__t2i_teardown(s);
    return rc;
  }
  struct fr_synth_unet a = fr__unet_shape(&s->u->cfg);
  struct fr_synth_clip c = fr__clip_shape(&s->clip->cfg);
  *flops = 2.0 * FR__T2I_STEPS * fr_synth_unet_flops(&a, j->latent, j->latent, FR__TOKENS) +
           2.0 * fr_synth_clip_flops(&c, FR__TOKENS) +
           fr_vae_decode_flops(fr_vae_config(s->vae), j->latent, j->latent);
  s->j = j;
  *state = s;
  return FR_OK;
}

static enum fr_status fr__t2i_denoise(void *user, const float *x, int64_t n, double sigma, double t,
                                      float *out) {
  struct fr__t2i_state *s = user;
  struct fr_ctx *c = s->j->ctx;
  int64_t C = s->u->cfg.in_channels, S = s->j->latent;
  struct fr_tensor *hx = fr_tensor_f32(4, (int64_t[]){2, C, S, S}), *ht = fr_tensor_f32(1, (int64_t[]){1});
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
      dx && dt ? fr_unet_forward(c, s->u, dx, dt, &cond, NULL, &eps, s->err) : fr__ctx_err(c, s->err);
  if (!rc && !(he = fr_ctx_download(c, eps)))
    rc = fr__ctx_err(c, s->err);
  fr_tensor_free(dx);
  fr_tensor_free(dt);
  fr_tensor_free(eps);
  if (!rc)
    for (int64_t i = 0; i < n; i++) { /* batch row 0: negative prompt, row 1: prompt */
      const float *e = he->data;
      out[i] = (float)(x[i] - sigma * (e[i] + 7.5 * (e[n + i] - e[i])));
    }
  fr_tensor_free(he);
  return rc;
}

static enum fr_status fr__t2i_run(struct fr__job *j, void *state, struct fr_tensor **keep,
                                  struct fr_err *err) {
  struct fr__t2i_state *s = state;
  s->err = err;
  struct fr_clip_out o = {0};
  enum fr_status rc = fr_clip_encode(j->ctx, s->clip, s->ids, 2, FR__TOKENS, &o, err);
  fr_tensor_free(s->ctx);
  s->ctx = rc ? NULL : o.last;
  o.last = NULL;
  fr_clip_out_free(&o);
  if (rc)
    return rc;
  int64_t C = s->u->cfg.in_channels, S = j->latent, n = C * S * S;
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
  double sample_s = 0;
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
    sample_s = fr__now() - t0;
  }
  if (!rc) {
    struct fr_tensor *hz = fr_tensor_f32(4, (int64_t[]){1, C, S, S}), *z = NULL, *img = NULL;
    if (hz) {
      for (int64_t i = 0; i < n; i++)
        ((float *)hz->data)[i] = x[i] / 0.18215f;
      z = fr_ctx_upload(j->ctx, hz);
    }
    rc = z ? fr_vae_decode(j->ctx, s->vae, z, &img, err) : fr__ctx_err(j->ctx, err);
    fr_tensor_free(hz);
    fr_tensor_free(z);
    if (!rc && keep)
      *keep = img;
    else
      fr_tensor_free(img);
  }
  if (!rc)
    snprintf(j->note, sizeof j->note, "%.2f ms per sampler step (batch-2 UNet forward + latent round trip)",
             sample_s * 1e3 / FR__T2I_STEPS);
  fr_free(x);
  fr_free(ms);
  fr_free(sc);
  return rc;
}

static const struct fr__kind_ops fr__kinds[] = {
    [FR__SGEMM] = {fr__gemm_setup, fr__gemm_run, fr__gemm_teardown},
    [FR__CLIP] = {fr__clip_setup, fr__clip_run, fr__clip_teardown},
    [FR__UNET] = {fr__unet_setup, fr__unet_run, fr__unet_teardown},
    [FR__CONTROLNET] = {fr__cn_setup, fr__cn_run, fr__cn_teardown},
    [FR__VAE] = {fr__vae_setup, fr__vae_run, fr__vae_teardown},
    [FR__T2I] = {fr__t2i_setup, fr__t2i_run, fr__t2i_teardown},
};

/* ---- measuring one row ---- */

struct fr__result {
  char what[128], note[160];
  enum fr_dtype dtype;
  int batch, warmup, runs;
  bool in_memory, shrunk, finite, have_mem;
  double load_ms, median_ms, min_ms, max_ms, flops, peak_mib, resident_mib, full_flops;
  double floor_ratio; /* cpu model rows: median of run time / its paired floor's time; 0: none */
  enum fr_status rc;
};

static int fr__cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* True when every value of context tensor t is finite (downloads it). */
static bool fr__finite(struct fr_ctx *c, const struct fr_tensor *t) {
  struct fr_tensor *h = fr_ctx_download(c, t);
  bool ok = h != NULL;
  for (int64_t i = 0; ok && i < fr_tensor_numel(h); i++)
    ok = isfinite(((const float *)h->data)[i]);
  fr_tensor_free(h);
  return ok;
}

static void fr__describe(const struct fr__job *j, const struct fr__result *r, char *out, size_t n) {
  int B = j->batch, S = j->latent, P = 8 * S;
  switch (j->row->kind) {
  case FR__SGEMM: snprintf(out, n, "cblas_sgemm %d^3 (OpenBLAS), host", FR__GEMM_N); break;
  case FR__CLIP: snprintf(out, n, "CLIP-L text encoder, [%d, %d] tokens", B, FR__TOKENS); break;
  case FR__UNET:
    snprintf(out, n, "%s UNet step, [%d, 4, %d, %d]%s", strcmp(j->row->arch, "sdxl") ? "SD1.5" : "SDXL", B, S,
             S, strcmp(j->row->arch, "sdxl") ? "" : " + added cond");
    break;
  case FR__CONTROLNET:
    snprintf(out, n, "SD1.5 ControlNet, [%d, 4, %d, %d], hint %dx%d", B, S, S, P, P);
    break;
  case FR__VAE: snprintf(out, n, "VAE decode [%d, 4, %d, %d] -> %dx%d", B, S, S, P, P); break;
  case FR__T2I: snprintf(out, n, "SD1.5 txt2img %dx%d, %d euler steps, CFG", P, P, FR__T2I_STEPS); break;
  }
  if (r->in_memory && j->b->o->ch) {
    size_t len = strlen(out);
    snprintf(out + len, n - len, ", ch %d", j->b->o->ch);
  }
}

static enum fr_status fr__row_run(struct fr__bench *b, const struct fr__row *row, struct fr__result *r,
                                  struct fr_err *err) {
  memset(r, 0, sizeof *r);
  struct fr__job j = {.b = b, .row = row};
  bool t2i = row->kind == FR__T2I;
  j.batch = t2i ? 2 : b->o->batch > 0 ? b->o->batch : row->batch;
  j.latent = row->latent / b->size_div;
  r->batch = j.batch;
  r->runs = b->o->runs > 0 ? b->o->runs : t2i ? 1 : b->runs;
  r->warmup = b->o->warmup >= 0 ? b->o->warmup : t2i ? 0 : 1;
  /* the SDXL VAE overflows in fp16: VAE rows decode in bf16 where the context is 16-bit, f32 otherwise */
  r->dtype = row->kind == FR__VAE && b->dtype != FR_F32 ? FR_BF16 : b->dtype;
  r->full_flops = fr__full_flops(row);
  r->in_memory = row->kind != FR__SGEMM && !b->files[row->file];
  fr__describe(&j, r, r->what, sizeof r->what);

  struct fr__memck mem = {0};
  void *state = NULL;
  double *ms = fr_calloc((size_t)r->runs, sizeof *ms);
  struct fr_tensor *keep = NULL;
  const struct fr__kind_ops *k = &fr__kinds[row->kind];
  enum fr_status rc = ms ? FR_OK : fr_errf(err, FR_E_NOMEM, "out of memory");
  double t0 = fr__now();
  if (!rc && row->kind != FR__SGEMM) {
    struct fr_ctx_opts co = {.device = b->o->device, .dtype = r->dtype, .threads = b->o->threads};
    rc = fr_ctx_new(&co, &j.ctx, err);
    if (!rc && r->in_memory) {
      rc = fr__memck_make(b, row, &mem, err);
      j.ck = &mem.ck;
    } else {
      j.ck = b->files[row->file];
    }
  }
  if (!rc)
    rc = k->setup(&j, &state, &r->flops, err);
  if (!rc && j.ctx)
    rc = fr_ctx_sync(j.ctx, err);
  fr__memck_free(&mem); /* the weights are context tensors now (converted or uploaded copies) */
  r->load_ms = (fr__now() - t0) * 1e3;
  struct fr_ctx_mem m0 = {0}, m1 = {0};
  /* peak from here; on the cpu the process's peak RSS (weights, heap, the mapping) says more than the
   * tensor pool's counters */
  r->have_mem = !rc && j.ctx && strcmp(fr_ctx_device_name(j.ctx), "cpu") != 0 &&
                fr_ctx_mem_stats(j.ctx, true, &m0, NULL) == FR_OK;
  bool paired = !rc && j.ctx && strcmp(fr_ctx_device_name(j.ctx), "cpu") == 0 && row->kind != FR__T2I;
  struct fr__gemm *floor_g = NULL;
  double *ratio = paired ? fr_calloc((size_t)r->runs, sizeof *ratio) : NULL;
  for (int i = -r->warmup; !rc && i < r->runs; i++) {
    double floor_gflops = ratio && i >= 0 ? fr__paired_floor(&j, &floor_g) : 0;
    t0 = fr__now();
    rc = k->run(&j, state, i == r->runs - 1 ? &keep : NULL, err);
    if (!rc && j.ctx)
      rc = fr_ctx_sync(j.ctx, err);
    if (i >= 0)
      ms[i] = (fr__now() - t0) * 1e3;
    if (i >= 0 && ratio) /* the run's time over the time its FLOPs take at the paired floor's rate */
      ratio[i] = floor_gflops > 0 ? ms[i] * 1e-3 / (r->flops * 1e-9 / floor_gflops) : 0;
  }
  fr__gemm_teardown(floor_g);
  if (!rc && ratio && ratio[0] > 0) {
    qsort(ratio, (size_t)r->runs, sizeof *ratio, fr__cmp_double);
    int n = r->runs;
    r->floor_ratio = n % 2 ? ratio[n / 2] : 0.5 * (ratio[n / 2 - 1] + ratio[n / 2]);
  }
  fr_free(ratio);
  if (!rc) {
    qsort(ms, (size_t)r->runs, sizeof *ms, fr__cmp_double);
    int n = r->runs;
    r->median_ms = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
    r->min_ms = ms[0];
    r->max_ms = ms[n - 1];
    if (r->have_mem && fr_ctx_mem_stats(j.ctx, false, &m1, NULL) == FR_OK) {
      r->peak_mib = (double)m1.peak / (1 << 20);
      r->resident_mib = (double)m0.in_use / (1 << 20);
    } else {
      r->have_mem = false;
      r->peak_mib = fr__peak_rss_mib();
    }
    r->finite = !keep || fr__finite(j.ctx, keep); /* after reading the peak: nothing of it counts */
    r->shrunk = r->full_flops <= 0 || fabs(r->flops - r->full_flops) > 1e-9 * r->full_flops;
  }
  snprintf(r->note, sizeof r->note, "%s", j.note);
  fr_tensor_free(keep);
  if (state)
    k->teardown(state);
  fr_free(ms);
  fr_ctx_free(j.ctx);
  r->rc = rc;
  if (rc)
    fr_err_prefix(err, rc, "%s: ", row->name);
  return rc;
}

/* ---- printing ---- */

static void fr__print_header(struct fr__bench *b) {
  const struct fr_bench_opts *o = b->o;
  FILE *f = b->out;
  char warm[32], runs[32];
  if (o->warmup >= 0)
    snprintf(warm, sizeof warm, "%d", o->warmup);
  else
    snprintf(warm, sizeof warm, "1 (txt2img 0)");
  if (o->runs > 0)
    snprintf(runs, sizeof runs, "%d", o->runs);
  else
    snprintf(runs, sizeof runs, "%d (txt2img 1)", b->runs);
  fprintf(f,
          "flowrun bench: device %s, dtype %s%s, threads %d, warm-up runs %s, then the median of %s runs\n",
          o->device, fr_dtype_name(b->dtype), b->dtype == FR_F32 ? "" : " (VAE rows: BF16)", o->threads, warm,
          runs);
  fprintf(f, "weights: random F16 from the synth key lists, in memory");
  if (o->ckpt)
    fprintf(f, "; clip-l, unet-sd15, vae-512, txt2img from %s", o->ckpt);
  if (o->ckpt_sdxl)
    fprintf(f, "; unet-sdxl, vae-1024 from %s", o->ckpt_sdxl);
  if (o->ckpt_controlnet)
    fprintf(f, "; controlnet-sd15 from %s", o->ckpt_controlnet);
  fputc('\n', f);
  if (b->cuda)
    fprintf(f,
            "peak: device memory in use at its highest over the row's runs (weights + activations + "
            "workspace; fresh context per row)\nreference: %s\n",
            fr__ref_label);
  else
    fprintf(f,
            "peak: the process's peak resident memory so far (getrusage; it only grows from row to row)\n");
  fprintf(f, "%-16s %-52s %-5s %8s %10s %10s %10s %9s %9s", "row", "component", "dtype", "load s",
          "median ms", "min ms", "GFLOP", b->cuda ? "TFLOP/s" : "GFLOP/s", b->cuda ? "peak MiB" : "RSS MiB");
  fprintf(f, "%s\n", b->cuda ? "  torch ms  ratio" : "  x floor");
  fflush(f);
}

static void fr__print_row(struct fr__bench *b, const struct fr__row *row, const struct fr__result *r,
                          const struct fr_err *err) {
  FILE *f = b->out;
  bool ref = b->cuda && row->ref_ms > 0 && !r->shrunk;
  if (b->o->json) {
    struct fr_buf j = {0};
    fr_buf_puts(&j, "{\"row\":");
    fr_buf_json_str(&j, row->name);
    fr_buf_puts(&j, ",\"component\":");
    fr_buf_json_str(&j, r->what);
    fr_buf_printf(
        &j, ",\"device\":\"%s\",\"dtype\":\"%s\",\"batch\":%d,\"latent\":%d,\"weights\":", b->o->device,
        row->kind == FR__SGEMM ? "F32" : fr_dtype_name(r->dtype), r->batch, row->latent / b->size_div);
    fr_buf_json_str(&j, row->kind == FR__SGEMM ? "" : r->in_memory ? "in-memory" : b->files[row->file]->path);
    if (r->rc) {
      fr_buf_puts(&j, ",\"ok\":false,\"error\":");
      fr_buf_json_str(&j, err->msg);
    } else {
      double rate = r->flops / (r->median_ms * 1e-3);
      fr_buf_printf(
          &j,
          ",\"ok\":true,\"warmup\":%d,\"runs\":%d,\"load_ms\":%.3f,\"median_ms\":%.4f,\"min_ms\":%.4f,"
          "\"max_ms\":%.4f,\"gflop\":%.4f,\"tflops\":%.5f,\"finite\":%s,\"full_size\":%s",
          r->warmup, r->runs, r->load_ms, r->median_ms, r->min_ms, r->max_ms, r->flops * 1e-9, rate * 1e-12,
          r->finite ? "true" : "false", r->shrunk ? "false" : "true");
      if (r->note[0]) {
        fr_buf_puts(&j, ",\"note\":");
        fr_buf_json_str(&j, r->note);
      }
      if (r->have_mem)
        fr_buf_printf(&j, ",\"peak_device_mib\":%.1f,\"resident_before_runs_mib\":%.1f", r->peak_mib,
                      r->resident_mib);
      else
        fr_buf_printf(&j, ",\"peak_rss_mib\":%.1f", r->peak_mib);
      if (r->floor_ratio > 0)
        fr_buf_printf(&j, ",\"floor_ratio\":%.3f", r->floor_ratio);
      if (ref) {
        fr_buf_printf(&j, ",\"ref_ms\":%.2f,\"ref_dtype\":\"%s\",\"ratio\":%.3f", row->ref_ms, row->ref_dtype,
                      r->median_ms / row->ref_ms);
        if (row->ref_peak_gib > 0)
          fr_buf_printf(&j, ",\"ref_peak_gib\":%.1f", row->ref_peak_gib);
        fr_buf_puts(&j, ",\"ref\":");
        fr_buf_json_str(&j, fr__ref_label);
      }
    }
    fr_buf_putc(&j, '}');
    if (!j.oom)
      fprintf(f, "%s\n", j.data);
    fr_buf_free(&j);
    fflush(f);
    return;
  }
  const char *dt = row->kind == FR__SGEMM ? "F32" : fr_dtype_name(r->dtype);
  if (r->rc) {
    fprintf(f, "%-16s %-52s %-5s FAILED: %s\n", row->name, r->what, dt, err->msg);
    fflush(f);
    return;
  }
  double rate = r->flops / (r->median_ms * 1e-3) * (b->cuda ? 1e-12 : 1e-9);
  fprintf(f, "%-16s %-52s %-5s %8.2f %10.2f %10.2f %10.1f %9.2f %9.0f", row->name, r->what, dt,
          r->load_ms * 1e-3, r->median_ms, r->min_ms, r->flops * 1e-9, rate, r->peak_mib);
  if (ref)
    fprintf(f, " %9.2f %5.2fx", row->ref_ms, r->median_ms / row->ref_ms);
  if (r->floor_ratio > 0)
    fprintf(f, " %7.2fx", r->floor_ratio);
  fputc('\n', f);
  if (r->have_mem) {
    fprintf(f, "%-16s peak %.2f GiB, %.2f GiB of it held before the runs (weights, inputs, workspace)", "",
            r->peak_mib / 1024, r->resident_mib / 1024);
    if (ref && row->ref_peak_gib > 0)
      fprintf(f, "; PyTorch %.1f GiB", row->ref_peak_gib);
    fputc('\n', f);
  }
  if (r->note[0])
    fprintf(f, "%-16s %s\n", "", r->note);
  if (!r->finite)
    fprintf(f, "%-16s warning: the output has NaN or Inf values (overflow in %s?)\n", "", dt);
  fflush(f);
}

/* ---- options and the driver ---- */

static const struct fr__row *fr__find_row(const char *name, size_t len) {
  for (int i = 0; i < (int)(sizeof fr__aliases / sizeof fr__aliases[0]); i++)
    if (strlen(fr__aliases[i][0]) == len && strncmp(name, fr__aliases[i][0], len) == 0)
      name = fr__aliases[i][1], len = strlen(name);
  for (int r = 0; r < FR__NROWS; r++)
    if (strlen(fr__rows[r].name) == len && strncmp(name, fr__rows[r].name, len) == 0)
      return &fr__rows[r];
  return NULL;
}

/* Marks the rows to run in sel[]; FR_E_INVALID for an unknown name or a row the device cannot run. */
static enum fr_status fr__select(const struct fr__bench *b, bool *sel, struct fr_err *err) {
  const char *only = b->o->only;
  for (int r = 0; r < FR__NROWS; r++)
    sel[r] = !only && (fr__rows[r].flags & (b->cuda ? FR__DEF_CUDA : FR__DEF_CPU));
  if (!only)
    return FR_OK;
  if (!*only)
    return fr_errf(err, FR_E_INVALID, "--only: empty list");
  for (const char *p = only;;) {
    const char *e = strchr(p, ',');
    size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len == 3 && strncmp(p, "all", 3) == 0) {
      for (int r = 0; r < FR__NROWS; r++)
        sel[r] = sel[r] || !(b->cuda && (fr__rows[r].flags & FR__CPU_ONLY));
    } else {
      const struct fr__row *row = fr__find_row(p, len);
      if (!row)
        return fr_errf(err, FR_E_INVALID,
                       "--only: unknown row '%.*s' (known: sgemm, clip-l, unet-sd15, unet-sdxl, "
                       "controlnet-sd15, vae-512, vae-1024, txt2img, all; aliases text, unet, vae)",
                       (int)len, p);
      if (b->cuda && (row->flags & FR__CPU_ONLY))
        return fr_errf(err, FR_E_INVALID,
                       "--only %s: a cpu-only row (OpenBLAS on the host); use --device cpu", row->name);
      sel[row - fr__rows] = true;
    }
    if (!e)
      break;
    p = e + 1;
  }
  return FR_OK;
}

static enum fr_status fr__check_opts(const struct fr_bench_opts *o, struct fr__bench *b, struct fr_err *err) {
  if (strcmp(o->device, "cpu") != 0 && strcmp(o->device, "cuda") != 0)
    return fr_errf(err, FR_E_INVALID, "--device '%s': unknown (expected cpu or cuda)", o->device);
  b->cuda = strcmp(o->device, "cuda") == 0;
  const char *dt = o->dtype ? o->dtype : b->cuda ? "f16" : "f32";
  if (!fr_compute_dtype_from_option(dt, &b->dtype))
    return fr_errf(err, FR_E_INVALID, "--dtype '%s': expected f32, f16 or bf16", dt);
  if (!b->cuda && b->dtype != FR_F32)
    return fr_errf(err, FR_E_INVALID,
                   "--dtype %s: the cpu backend computes in f32 only (f16 and bf16 need --device cuda)", dt);
  if (o->ch && (o->ch < 32 || o->ch > 1280 || o->ch % 32))
    return fr_errf(err, FR_E_INVALID, "--ch %d: expected a multiple of 32 from 32 to 1280 (full size: 320)",
                   o->ch);
  b->size_div = o->size_div > 1 ? o->size_div : 1;
  if (b->size_div != 1 && b->size_div != 2 && b->size_div != 4 && b->size_div != 8)
    return fr_errf(err, FR_E_INVALID, "--size-div %d: expected 1, 2, 4 or 8", o->size_div);
  if (o->batch < 0 || o->batch > 64)
    return fr_errf(err, FR_E_INVALID, "--batch %d: expected 1 to 64", o->batch);
  b->runs = b->cuda ? 10 : 3;
  return FR_OK;
}

enum fr_status fr_bench_run(const struct fr_bench_opts *opts, FILE *out, struct fr_err *err) {
  struct fr_bench_opts o = *opts;
  if (!o.device)
    o.device = "cpu";
  struct fr__bench b = {.o = &o, .out = out, .rng = 0x5D15C0DEu};
  bool sel[FR__NROWS];
  enum fr_status rc = fr__check_opts(&o, &b, err);
  if (!rc)
    rc = fr__select(&b, sel, err);
  if (rc)
    return rc;
  /* the device (and its dtype) first: no weights are built for a device that is not there */
  struct fr_ctx *probe = NULL;
  rc = fr_ctx_new(&(struct fr_ctx_opts){.device = o.device, .dtype = b.dtype, .threads = o.threads}, &probe,
                  err);
  fr_ctx_free(probe);
  if (rc)
    return rc;
  const char *paths[3] = {o.ckpt, o.ckpt_sdxl, o.ckpt_controlnet};
  for (int i = 0; i < 3 && !rc; i++)
    if (paths[i])
      rc = fr_checkpoint_open(paths[i], &b.files[i], err);
  if (!rc && !o.json)
    fr__print_header(&b);
  enum fr_status first = rc;
  struct fr_err row_err = {{0}};
  for (int r = 0; r < FR__NROWS && !rc; r++) {
    if (!sel[r])
      continue;
    struct fr__result res;
    enum fr_status rrc = fr__row_run(&b, &fr__rows[r], &res, &row_err);
    fr__print_row(&b, &fr__rows[r], &res, &row_err);
    if (rrc && !first) {
      first = rrc;
      *err = row_err;
    }
  }
  for (int i = 0; i < 3; i++)
    fr_checkpoint_close(b.files[i]);
  fr_free(b.pool);
  return first;
}
