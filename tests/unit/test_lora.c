/* LoraLoader against checkpoints merged by this test.
 *
 * For each layout (kohya with diffusers module names on SD1.5, kohya with SGM names on SDXL including the
 * second encoder's q/k/v in OpenCLIP-G's fused in_proj_weight, LoCon on 3x3 convolutions with and without
 * lora_mid, PEFT lora_A/lora_B, diffusers' older lora.down/lora.up, LyCORIS LoHa (plain and tucker) and
 * LoKr (whole, factored and tucker factors)) the test writes a LoRA file with random factors and, from
 * the same numbers, a merged checkpoint: W + strength x scale x delta worked out here in float64 from the
 * formats' definitions, with its own table of which checkpoint tensor each module names (never flowrun's
 * mapping), stored as F32. The pipeline (TextEncode, a 2-step Sampler) then runs once on the base
 * checkpoint through LoraLoader and once on the merged checkpoint; the latents must agree within 1e-4 of
 * their scale (both are fp32 computations of the same weights up to one fp32 rounding of each merged
 * weight; a wrong module, scale or slice moves them by 1e-3 or more, which the test also checks against
 * the base's output). The Sampler runs at CFG 1: at CFG 4 the tiny random-weight pipeline amplifies
 * 1-ulp weight differences up to 1e-3 (measured: a strength of 0.7 vs 0.7000001 moved the latent by
 * 4e-3), which would test the pipeline's conditioning rather than the merge; at CFG 1 the LoRA and
 * merged runs agree within 1e-6 in every layout. Also: two LoRAs chained, strength 0 = the base bit for bit,
 * unmatched modules reported as a warning naming them, an SDXL LoRA on SD1.5 refused with a message saying
 * so, and a cached re-run after changing only strength_model runs the Sampler but not TextEncode and opens no
 * checkpoint. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/flowrun.h"
#include "core/safetensors.h"
#include "nodes/models/clip.h"
#include "nodes/models/lora.h"
#include "nodes/models/unet_impl.h"
#include "nodes/registry.h"
#include "tests/test.h"

static const char *tmp, *fx;
static char models_tmp[4200], models_fx[4200];

/* ---- random factors ---- */

static uint64_t rng = 88172645463325252ULL;
static double urand(void) { /* xorshift64, uniform in [-1, 1) */
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (double)(rng >> 11) / 4503599627370496.0 - 1.0;
}

/* ---- a LoRA file being written, and the patches it stands for ---- */

struct tens {
  char name[256];
  int ndim;
  int64_t shape[4];
  double *d;
};

struct patch {
  char key[256];      /* the checkpoint tensor */
  int64_t row0, rows; /* rows of it the delta covers (rows < 0: all) */
  bool clip;          /* strength_clip applies, else strength_model */
  double *delta;      /* scaled by alpha / rank, [rows x cols of the tensor] */
  int64_t n;
};

struct lora {
  struct tens t[48];
  int nt;
  struct patch p[16];
  int np;
};

static void lora_free(struct lora *l) {
  for (int i = 0; i < l->nt; i++)
    free(l->t[i].d);
  for (int i = 0; i < l->np; i++)
    free(l->p[i].delta);
  memset(l, 0, sizeof *l);
}

static int64_t numel(int ndim, const int64_t *s) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++)
    n *= s[i];
  return n;
}

/* A random tensor module+suffix of the given shape (amplitude amp); returns its data. */
static double *rnd(struct lora *l, const char *module, const char *suffix, double amp, int ndim, int64_t a,
                   int64_t b, int64_t c, int64_t d) {
  struct tens *t = &l->t[l->nt++];
  snprintf(t->name, sizeof t->name, "%s%s", module, suffix);
  t->ndim = ndim;
  int64_t s[4] = {a, b, c, d};
  memcpy(t->shape, s, sizeof s);
  int64_t n = numel(ndim, s);
  t->d = malloc((size_t)n * sizeof *t->d);
  for (int64_t i = 0; i < n; i++)
    t->d[i] = amp * urand();
  return t->d;
}

static void alpha(struct lora *l, const char *module, double v) {
  struct tens *t = &l->t[l->nt++];
  snprintf(t->name, sizeof t->name, "%s.alpha", module);
  t->ndim = 0;
  t->d = malloc(sizeof *t->d);
  t->d[0] = v;
}

/* C[m, n] = A[m, k] B[k, n], float64. */
static double *mm(const double *a, const double *b, int64_t m, int64_t k, int64_t n) {
  double *c = calloc((size_t)(m * n), sizeof *c);
  for (int64_t i = 0; i < m; i++)
    for (int64_t p = 0; p < k; p++)
      for (int64_t j = 0; j < n; j++)
        c[i * n + j] += a[i * k + p] * b[p * n + j];
  return c;
}

static void add_patch(struct lora *l, const char *key, int64_t row0, int64_t rows, bool clip, double *delta,
                      int64_t n, double scale) {
  struct patch *p = &l->p[l->np++];
  snprintf(p->key, sizeof p->key, "%s", key);
  p->row0 = row0, p->rows = rows, p->clip = clip, p->n = n;
  for (int64_t i = 0; i < n; i++)
    delta[i] *= scale;
  p->delta = delta;
}

/* A plain LoRA module: down [r, in(, kh, kw)], up [out, r(, 1, 1)]; delta = up down x alpha / r
 * (alpha < 0: none, scale 1). names: down and up suffixes. conv: kh = kw = k, 0 for a linear layer. */
static void lora_mod(struct lora *l, const char *module, const char *dn, const char *upn, int64_t out,
                     int64_t in, int64_t r, int k, double al, const char *key, bool clip, int64_t row0,
                     int64_t rows) {
  double *down = k ? rnd(l, module, dn, 0.5, 4, r, in, k, k) : rnd(l, module, dn, 0.5, 2, r, in, 0, 0);
  double *up = k ? rnd(l, module, upn, 0.5, 4, out, r, 1, 1) : rnd(l, module, upn, 0.5, 2, out, r, 0, 0);
  if (al >= 0)
    alpha(l, module, al);
  int64_t cols = in * (k ? k * k : 1);
  add_patch(l, key, row0, rows, clip, mm(up, down, out, r, cols), out * cols, al >= 0 ? al / (double)r : 1.0);
}

/* Tucker: out[p, r, s] = sum_ij t[i, j, s] b[j, r] a[i, p]; t [R, R2, S], b [R2, in], a [R, out]. */
static double *tucker(const double *t, const double *b, const double *a, int64_t R, int64_t R2, int64_t S,
                      int64_t in, int64_t out) {
  double *res = calloc((size_t)(out * in * S), sizeof *res);
  for (int64_t p = 0; p < out; p++)
    for (int64_t r = 0; r < in; r++)
      for (int64_t s = 0; s < S; s++) {
        double acc = 0;
        for (int64_t i = 0; i < R; i++)
          for (int64_t j = 0; j < R2; j++)
            acc += t[(i * R2 + j) * S + s] * b[j * in + r] * a[i * out + p];
        res[(p * in + r) * S + s] = acc;
      }
  return res;
}

/* kron(w1 [a, b], w2 [c, d, S]) as [a c, b d S]. */
static double *kron(const double *w1, const double *w2, int64_t a, int64_t b, int64_t c, int64_t d,
                    int64_t S) {
  double *res = malloc((size_t)(a * b * c * d * S) * sizeof *res);
  for (int64_t i = 0; i < a; i++)
    for (int64_t j = 0; j < b; j++)
      for (int64_t k = 0; k < c; k++)
        for (int64_t q = 0; q < d; q++)
          for (int64_t s = 0; s < S; s++)
            res[(i * c + k) * (b * d * S) + (j * d + q) * S + s] = w1[i * b + j] * w2[(k * d + q) * S + s];
  return res;
}

/* ---- the layouts ---- */

#define SD "model.diffusion_model."
#define TE "cond_stage_model.transformer.text_model.encoder.layers."
#define XL_L "conditioner.embedders.0.transformer.text_model.encoder.layers."
#define XL_G "conditioner.embedders.1.model.transformer.resblocks."

static void make_kohya_sd15(struct lora *l) {
  lora_mod(l, "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", ".lora_down.weight",
           ".lora_up.weight", 32, 32, 4, 0, 2.0, SD "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
           false, 0, -1);
  /* proj_in is a 1x1 convolution in SD1.5 files */
  lora_mod(l, "lora_unet_down_blocks_1_attentions_0_proj_in", ".lora_down.weight", ".lora_up.weight", 32, 32,
           4, 1, 4.0, SD "input_blocks.4.1.proj_in.weight", false, 0, -1);
  /* LoCon: a 3x3 convolution */
  lora_mod(l, "lora_unet_down_blocks_0_resnets_0_conv1", ".lora_down.weight", ".lora_up.weight", 32, 32, 4, 3,
           1.0, SD "input_blocks.1.0.in_layers.2.weight", false, 0, -1);
  lora_mod(l, "lora_te_text_model_encoder_layers_0_self_attn_q_proj", ".lora_down.weight", ".lora_up.weight",
           32, 32, 2, 0, -1, TE "0.self_attn.q_proj.weight", true, 0, -1);
  lora_mod(l, "lora_te_text_model_encoder_layers_1_mlp_fc1", ".lora_down.weight", ".lora_up.weight", 64, 32,
           2, 0, 1.0, TE "1.mlp.fc1.weight", true, 0, -1);
}

static void make_kohya_sdxl(struct lora *l) {
  lora_mod(l, "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k", ".lora_down.weight",
           ".lora_up.weight", 64, 64, 4, 0, 8.0, SD "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
           false, 0, -1);
  { /* LoCon with lora_mid: down [4, 128, 1, 1], mid [4, 4, 3, 3], up [64, 4, 1, 1] */
    const char *m = "lora_unet_output_blocks_0_0_in_layers_2";
    double *down = rnd(l, m, ".lora_down.weight", 0.5, 4, 4, 128, 1, 1);
    double *mid = rnd(l, m, ".lora_mid.weight", 0.5, 4, 4, 4, 3, 3);
    double *up = rnd(l, m, ".lora_up.weight", 0.5, 4, 64, 4, 1, 1);
    alpha(l, m, 2.0);
    /* down'[o, i, s] = sum_j mid[o, j, s] down[j, i]: the tucker form with a = identity */
    double eye[16] = {0};
    for (int i = 0; i < 4; i++)
      eye[i * 4 + i] = 1;
    double *dd = tucker(mid, down, eye, 4, 4, 9, 128, 4); /* [4, 128 * 9] */
    add_patch(l, SD "output_blocks.0.0.in_layers.2.weight", 0, -1, false, mm(up, dd, 64, 4, 128 * 9),
              64 * 128 * 9, 2.0 / 4);
    free(dd);
  }
  lora_mod(l, "lora_te1_text_model_encoder_layers_0_self_attn_q_proj", ".lora_down.weight", ".lora_up.weight",
           32, 32, 2, 0, 1.0, XL_L "0.self_attn.q_proj.weight", true, 0, -1);
  static const char *const qkv[3] = {"q", "k", "v"};
  for (int j = 0; j < 3; j++) {
    char m[128];
    snprintf(m, sizeof m, "lora_te2_text_model_encoder_layers_0_self_attn_%s_proj", qkv[j]);
    lora_mod(l, m, ".lora_down.weight", ".lora_up.weight", 32, 32, 2, 0, 1.0 + j,
             XL_G "0.attn.in_proj_weight", true, 32 * j, 32);
  }
  lora_mod(l, "lora_te2_text_model_encoder_layers_0_mlp_fc2", ".lora_down.weight", ".lora_up.weight", 32, 64,
           2, 0, -1, XL_G "0.mlp.c_proj.weight", true, 0, -1);
}

static void make_peft(struct lora *l) {
  lora_mod(l, "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", ".lora_A.weight",
           ".lora_B.weight", 32, 32, 4, 0, 2.0, SD "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
           false, 0, -1);
  lora_mod(l, "text_encoder.text_model.encoder.layers.2.self_attn.out_proj", ".lora_A.weight",
           ".lora_B.weight", 32, 32, 2, 0, 0.5, TE "2.self_attn.out_proj.weight", true, 0, -1);
}

static void make_diffusers_old(struct lora *l) {
  lora_mod(l, "unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0", ".lora.down.weight",
           ".lora.up.weight", 64, 64, 4, 0, -1,
           SD "middle_block.1.transformer_blocks.0.attn1.to_out.0.weight", false, 0, -1);
}

static void make_loha(struct lora *l) {
  const char *m = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
  double *w1a = rnd(l, m, ".hada_w1_a", 0.5, 2, 32, 4, 0, 0),
         *w1b = rnd(l, m, ".hada_w1_b", 0.5, 2, 4, 32, 0, 0);
  double *w2a = rnd(l, m, ".hada_w2_a", 0.5, 2, 32, 4, 0, 0),
         *w2b = rnd(l, m, ".hada_w2_b", 0.5, 2, 4, 32, 0, 0);
  alpha(l, m, 2.0);
  double *m1 = mm(w1a, w1b, 32, 4, 32), *m2 = mm(w2a, w2b, 32, 4, 32);
  for (int i = 0; i < 32 * 32; i++)
    m1[i] *= m2[i];
  free(m2);
  add_patch(l, SD "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight", 0, -1, false, m1, 32 * 32,
            2.0 / 4);
  /* tucker on a 3x3 conv: t [4, 4, 3, 3], a [4, out], b [4, in] */
  const char *c = "lora_unet_down_blocks_0_resnets_0_conv1";
  double *t1 = rnd(l, c, ".hada_t1", 0.5, 4, 4, 4, 3, 3), *a1 = rnd(l, c, ".hada_w1_a", 0.5, 2, 4, 32, 0, 0);
  double *b1 = rnd(l, c, ".hada_w1_b", 0.5, 2, 4, 32, 0, 0), *t2 = rnd(l, c, ".hada_t2", 0.5, 4, 4, 4, 3, 3);
  double *a2 = rnd(l, c, ".hada_w2_a", 0.5, 2, 4, 32, 0, 0),
         *b2 = rnd(l, c, ".hada_w2_b", 0.5, 2, 4, 32, 0, 0);
  alpha(l, c, 4.0);
  double *k1 = tucker(t1, b1, a1, 4, 4, 9, 32, 32), *k2 = tucker(t2, b2, a2, 4, 4, 9, 32, 32);
  for (int i = 0; i < 32 * 32 * 9; i++)
    k1[i] *= k2[i];
  free(k2);
  add_patch(l, SD "input_blocks.1.0.in_layers.2.weight", 0, -1, false, k1, 32 * 32 * 9, 4.0 / 4);
}

static void make_lokr(struct lora *l) {
  /* w1 whole [4, 4], w2 = w2_a [8, 2] w2_b [2, 8]: scale alpha / 2 */
  const char *m = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
  double *w1 = rnd(l, m, ".lokr_w1", 0.5, 2, 4, 4, 0, 0);
  double *w2a = rnd(l, m, ".lokr_w2_a", 0.5, 2, 8, 2, 0, 0),
         *w2b = rnd(l, m, ".lokr_w2_b", 0.5, 2, 2, 8, 0, 0);
  alpha(l, m, 1.0);
  double *w2 = mm(w2a, w2b, 8, 2, 8);
  add_patch(l, SD "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight", 0, -1, false,
            kron(w1, w2, 4, 4, 8, 8, 1), 32 * 32, 1.0 / 2);
  free(w2);
  /* 3x3 conv: w1 = w1_a [4, 1] w1_b [1, 4], w2 = tucker(t2 [2, 2, 3, 3], w2_b [2, 8], w2_a [2, 8]):
   * scale alpha / w2_b's rows (the last factored one, as ComfyUI) */
  const char *c = "lora_unet_down_blocks_0_resnets_0_conv1";
  double *w1a = rnd(l, c, ".lokr_w1_a", 0.5, 2, 4, 1, 0, 0),
         *w1b = rnd(l, c, ".lokr_w1_b", 0.5, 2, 1, 4, 0, 0);
  double *t2 = rnd(l, c, ".lokr_t2", 0.5, 4, 2, 2, 3, 3);
  double *b2 = rnd(l, c, ".lokr_w2_b", 0.5, 2, 2, 8, 0, 0), *a2 = rnd(l, c, ".lokr_w2_a", 0.5, 2, 2, 8, 0, 0);
  alpha(l, c, 3.0);
  double *cw1 = mm(w1a, w1b, 4, 1, 4), *cw2 = tucker(t2, b2, a2, 2, 2, 9, 8, 8);
  add_patch(l, SD "input_blocks.1.0.in_layers.2.weight", 0, -1, false, kron(cw1, cw2, 4, 4, 8, 8, 9),
            32 * 32 * 9, 3.0 / 2);
  free(cw1);
  free(cw2);
  /* a text-encoder module, both factors whole and no alpha: scale 1 */
  const char *te = "lora_te_text_model_encoder_layers_1_mlp_fc1";
  double *tw1 = rnd(l, te, ".lokr_w1", 0.5, 2, 8, 4, 0, 0), *tw2 = rnd(l, te, ".lokr_w2", 0.5, 2, 8, 8, 0, 0);
  add_patch(l, TE "1.mlp.fc1.weight", 0, -1, true, kron(tw1, tw2, 8, 4, 8, 8, 1), 64 * 32, 1.0);
}

/* ---- files ---- */

static bool write_lora(const struct lora *l, const char *path) {
  struct fr_st_item items[48];
  struct fr_tensor *ts[48];
  for (int i = 0; i < l->nt; i++) {
    const struct tens *t = &l->t[i];
    ts[i] = fr_tensor_new(FR_F32, t->ndim, t->shape);
    int64_t n = numel(t->ndim, t->shape);
    for (int64_t k = 0; k < n; k++)
      ((float *)ts[i]->data)[k] = (float)t->d[k];
    items[i] = (struct fr_st_item){t->name, ts[i]};
  }
  struct fr_err err = {{0}};
  enum fr_status rc = fr_st_write_file(path, items, l->nt, NULL, NULL, 0, &err);
  CHECK_OK(rc, &err);
  for (int i = 0; i < l->nt; i++)
    fr_tensor_free(ts[i]);
  return rc == FR_OK;
}

/* base + sum over (lora, strengths) of the patches, in float64, patched tensors stored as F32. */
static bool write_merged(const char *base, const struct lora *const *ls, const double *sm, const double *sc,
                         int n, const char *path) {
  struct fr_err err = {{0}};
  struct fr_safetensors *st = NULL;
  CHECK_OK(fr_st_open(base, &st, &err), &err);
  if (!st)
    return false;
  struct fr_st_item *items = calloc((size_t)st->n, sizeof *items);
  struct fr_tensor **ts = calloc((size_t)st->n, sizeof *ts);
  for (int i = 0; i < st->n; i++) {
    const struct fr_st_entry *e = &st->entries[i];
    bool touched = false;
    for (int k = 0; k < n; k++)
      for (int j = 0; j < ls[k]->np; j++)
        touched = touched || !strcmp(ls[k]->p[j].key, e->name);
    struct fr_tensor *v = fr_st_view(e);
    if (!touched) {
      ts[i] = v;
    } else {
      int64_t cnt = numel(e->ndim, e->shape), cols = cnt / e->shape[0];
      double *w = malloc((size_t)cnt * sizeof *w);
      struct fr_tensor *f = fr_tensor_to_f32(v);
      for (int64_t q = 0; q < cnt; q++)
        w[q] = ((float *)f->data)[q];
      fr_tensor_free(f);
      fr_tensor_free(v);
      for (int k = 0; k < n; k++)
        for (int j = 0; j < ls[k]->np; j++) {
          const struct patch *p = &ls[k]->p[j];
          if (strcmp(p->key, e->name))
            continue;
          double s = p->clip ? sc[k] : sm[k];
          CHECKF(p->n == (p->rows < 0 ? cnt : p->rows * cols), "test table: %s: %lld values", p->key,
                 (long long)p->n);
          for (int64_t q = 0; q < p->n; q++)
            w[p->row0 * cols + q] += s * p->delta[q];
        }
      ts[i] = fr_tensor_new(FR_F32, e->ndim, e->shape);
      for (int64_t q = 0; q < cnt; q++)
        ((float *)ts[i]->data)[q] = (float)w[q];
      free(w);
    }
    items[i] = (struct fr_st_item){e->name, ts[i]};
  }
  enum fr_status rc = fr_st_write_file(path, items, st->n, NULL, NULL, 0, &err);
  CHECK_OK(rc, &err);
  for (int i = 0; i < st->n; i++)
    fr_tensor_free(ts[i]);
  free(ts);
  free(items);
  fr_st_close(st);
  return rc == FR_OK;
}

/* ---- runs ---- */

static int loads, patches, textencode_ran, textencode_cached, sampler_ran;
static char warn_text[4096];
static void on_event(void *user, const struct fr_event *ev) {
  (void)user;
  if (ev->kind == FR_EV_INFO && ev->message && !strncmp(ev->message, "loading ", 8))
    loads++;
  if (ev->kind == FR_EV_INFO && ev->message && !strncmp(ev->message, "patching ", 9))
    patches++;
  if (ev->kind == FR_EV_WARNING && ev->message) {
    size_t k = strlen(warn_text);
    snprintf(warn_text + k, sizeof warn_text - k, "%s\n", ev->message);
  }
  bool te = ev->node_type && !strcmp(ev->node_type, "TextEncode");
  if (ev->kind == FR_EV_NODE_START && te)
    textencode_ran++;
  if (ev->kind == FR_EV_NODE_CACHED && te)
    textencode_cached++;
  if (ev->kind == FR_EV_NODE_START && ev->node_type && !strcmp(ev->node_type, "Sampler"))
    sampler_ran++;
}

static struct fr_engine *engine(const char *cache) {
  const char *dirs[2] = {models_tmp, models_fx};
  struct fr_engine_opts o = {.registry = fr_builtin_registry(),
                             .no_cache = cache == NULL,
                             .cache_path = cache,
                             .model_dirs = dirs,
                             .n_model_dirs = 2,
                             .output_dir = tmp,
                             .threads = 2,
                             .on_event = on_event};
  struct fr_engine *e = NULL;
  struct fr_err err = {{0}};
  CHECK_OK(fr_engine_new(&o, &e, &err), &err);
  return e;
}

/* The pipeline on ckpt with the LoRAs loras[0..n) (strengths sm, sc) chained, the latent saved to out.
 * Returns the run's status; its message in err. */
static enum fr_status run(struct fr_engine *e, const char *ckpt, const char *const *loras, const double *sm,
                          const double *sc, int n, bool model_only, const char *out, struct fr_err *err) {
  char yaml[4096];
  int k = snprintf(yaml, sizeof yaml,
                   "flowrun: 1\n"
                   "nodes:\n"
                   "  ckpt: {type: CheckpointLoader, inputs: {ckpt_name: %s}}\n",
                   ckpt);
  const char *model = "ckpt.model", *clip = "ckpt.clip";
  char mbuf[32], cbuf[32];
  for (int i = 0; i < n; i++) {
    if (model_only)
      k += snprintf(
          yaml + k, sizeof yaml - (size_t)k,
          "  l%d: {type: LoraLoaderModelOnly, inputs: {model: %s, lora_name: %s, strength_model: %.17g}}\n",
          i, model, loras[i], sm[i]);
    else
      k += snprintf(
          yaml + k, sizeof yaml - (size_t)k,
          "  l%d: {type: LoraLoader, inputs: {model: %s, clip: %s, lora_name: %s, strength_model: %.17g, "
          "strength_clip: %.17g}}\n",
          i, model, clip, loras[i], sm[i], sc[i]);
    snprintf(mbuf, sizeof mbuf, "l%d.model", i);
    model = mbuf;
    if (!model_only) {
      snprintf(cbuf, sizeof cbuf, "l%d.clip", i);
      clip = cbuf;
    }
  }
  snprintf(yaml + k, sizeof yaml - (size_t)k,
           "  pos: {type: TextEncode, inputs: {clip: %s, text: a photo of a cat}}\n"
           "  neg: {type: TextEncode, inputs: {clip: %s, text: blurry}}\n"
           "  empty: {type: EmptyLatent, inputs: {width: 64, height: 64}}\n"
           "  s: {type: Sampler, inputs: {model: %s, positive: pos, negative: neg, latent: empty, seed: 3, "
           "steps: 2, "
           "cfg: 1}}\n"
           "  save: {type: SaveLatent, inputs: {samples: s, filename: %s}}\n",
           clip, clip, model, out);
  struct fr_graph *g = NULL;
  enum fr_status rc = fr_engine_load_string(e, yaml, strlen(yaml), "lora.yaml", tmp, NULL, 0, &g, err);
  CHECK_OK(rc, err);
  if (rc)
    return rc;
  loads = patches = textencode_ran = textencode_cached = sampler_ran = 0;
  warn_text[0] = 0;
  struct fr_run_summary sum;
  rc = fr_engine_run(e, g, &sum, err);
  fr_graph_free(g);
  return rc;
}

/* The latent a run saved (F32), or NULL. */
static float *latent(const char *name, int64_t *n) {
  char path[4300];
  snprintf(path, sizeof path, "%s/%s", tmp, name);
  struct fr_safetensors *st = NULL;
  struct fr_err err = {{0}};
  CHECK_OK(fr_st_open(path, &st, &err), &err);
  if (!st)
    return NULL;
  const struct fr_st_entry *e = fr_st_find(st, "latent");
  float *out = NULL;
  CHECKF(e && e->dtype == FR_F32, "%s: no F32 latent", path);
  if (e && e->dtype == FR_F32) {
    *n = (int64_t)(e->nbytes / 4);
    out = malloc(e->nbytes);
    memcpy(out, e->data, e->nbytes);
  }
  fr_st_close(st);
  return out;
}

/* One layout: LoRA files ls (strengths sm, sc) chained on base vs. the checkpoint merged here. */
static void check_layout(const char *what, const char *base, const struct lora *const *ls, const double *sm,
                         const double *sc, int n, bool model_only) {
  char base_path[4500], merged[4600], mname[300], files[4][300], outs[3][300], p[4600];
  const char *names[4];
  snprintf(base_path, sizeof base_path, "%s/%.200s", models_fx, base);
  snprintf(mname, sizeof mname, "merged-%.200s.safetensors", what);
  snprintf(merged, sizeof merged, "%s/%s", models_tmp, mname);
  for (int i = 0; i < n; i++) {
    snprintf(files[i], sizeof files[i], "lora-%.200s-%d.safetensors", what, i);
    snprintf(p, sizeof p, "%s/%.299s", models_tmp, files[i]);
    if (!write_lora(ls[i], p))
      return;
    names[i] = files[i];
  }
  if (!write_merged(base_path, ls, sm, model_only ? (const double[4]){0, 0, 0, 0} : sc, n, merged))
    return;
  for (int i = 0; i < 3; i++)
    snprintf(outs[i], sizeof outs[i], "out-%.200s-%d.safetensors", what, i);
  struct fr_engine *e = engine(NULL);
  struct fr_err err = {{0}};
  if (!e)
    return;
  CHECK_OK(run(e, base, names, sm, sc, n, model_only, outs[0], &err), &err);
  CHECKF(!strstr(warn_text, "LoRA"), "%s: unexpected LoRA warning: %s", what, warn_text);
  CHECK_OK(run(e, mname, NULL, NULL, NULL, 0, false, outs[1], &err), &err);
  CHECK_OK(run(e, base, NULL, NULL, NULL, 0, false, outs[2], &err), &err);
  fr_engine_free(e);
  int64_t n0 = 0, n1 = 0, n2 = 0;
  float *a = latent(outs[0], &n0), *b = latent(outs[1], &n1), *c = latent(outs[2], &n2);
  if (a && b && c && n0 == n1 && n1 == n2) {
    double rel = fr_test_rel_err(a, b, (long)n0), moved = fr_test_rel_err(c, b, (long)n0);
    printf("%-14s LoRA vs merged: %.2e; base vs merged: %.2e\n", what, rel, moved);
    /* fp32 on both sides, weights equal up to one rounding each: 1e-4 of the latent's scale */
    CHECKF(rel <= 1e-4, "%s: LoRA vs merged checkpoint: rel err %.3e > 1e-4", what, rel);
    CHECKF(moved >= 1e-3, "%s: the LoRA barely changes the result (%.3e): the test could not fail", what,
           moved);
  }
  free(a);
  free(b);
  free(c);
}

static void test_layouts(void) {
  struct lora a = {0}, b = {0}, c = {0}, d = {0}, h = {0}, k = {0};
  make_kohya_sd15(&a);
  make_kohya_sdxl(&b);
  make_peft(&c);
  make_diffusers_old(&d);
  make_loha(&h);
  make_lokr(&k);
  const double s1[1] = {1}, sm[1] = {0.8}, sc[1] = {1.3};
  check_layout("kohya-sd15", "sd15-tiny.safetensors", (const struct lora *[]){&a}, sm, sc, 1, false);
  if (fr_test_have_fixture(fx, "models/sdxl-tiny.safetensors"))
    check_layout("kohya-sdxl", "sdxl-tiny.safetensors", (const struct lora *[]){&b}, s1, sc, 1, false);
  check_layout("peft", "sd15-tiny.safetensors", (const struct lora *[]){&c}, s1, s1, 1, false);
  check_layout("diffusers-old", "sd15-tiny.safetensors", (const struct lora *[]){&d}, sm, s1, 1, false);
  check_layout("loha", "sd15-tiny.safetensors", (const struct lora *[]){&h}, s1, s1, 1, false);
  check_layout("lokr", "sd15-tiny.safetensors", (const struct lora *[]){&k}, sm, sc, 1, false);
  /* two chained, one with a negative strength; and LoraLoaderModelOnly (the text encoder untouched) */
  check_layout("chain", "sd15-tiny.safetensors", (const struct lora *[]){&a, &c}, (const double[]){0.7, -0.5},
               (const double[]){1.2, 0.6}, 2, false);
  check_layout("model-only", "sd15-tiny.safetensors", (const struct lora *[]){&a}, sm, s1, 1, true);
  lora_free(&a);
  lora_free(&b);
  lora_free(&c);
  lora_free(&d);
  lora_free(&h);
  lora_free(&k);
}

/* The same LoRA files on the diffusers folder of the same model (diffusers key names under unet/ and
 * text_encoder/; CheckpointLoader cannot name a folder in a graph yet, so the components are loaded
 * directly): every module matches, and the patched weights equal those loaded from the single file (the
 * two layouts hold the same fp16 values). */
/* Relative error between two loaded weights of n values, whatever their dtypes (on the CPU unpatched
 * F16 weights stay F16, LoRA-patched ones are F32): both compared as fp32. */
static double weights_rel_err(const struct fr_tensor *a, const struct fr_tensor *b, int64_t n) {
  struct fr_tensor *fa = fr_tensor_to_f32(a), *fb = fr_tensor_to_f32(b);
  double e = fa && fb ? fr_test_rel_err(fa->data, fb->data, (long)n) : INFINITY;
  fr_tensor_free(fa);
  fr_tensor_free(fb);
  return e;
}

static int count_modules(const char *lora_file, enum fr_lora_space sp) {
  struct fr_lora_set *s = fr_lora_set_new();
  struct fr_err err = {{0}};
  CHECK_OK(fr_lora_set_add(s, lora_file, 1, &err), &err);
  int n = fr_lora_modules(s, sp);
  fr_lora_set_free(s);
  return n;
}

static void test_diffusers_folder(void) {
  if (!fr_test_have_fixture(fx, "models/sd15-tiny/model_index.json"))
    return;
  struct fr_ctx *c = NULL;
  struct fr_err err = {{0}};
  struct fr_ctx_opts o = {.device = "cpu", .dtype = FR_F32, .threads = 2};
  CHECK_OK(fr_ctx_new(&o, &c, &err), &err);
  char files[2][4400], ckpts[2][4400];
  snprintf(files[0], sizeof files[0], "%s/lora-kohya-sd15-0.safetensors", models_tmp);
  snprintf(files[1], sizeof files[1], "%s/lora-peft-0.safetensors", models_tmp);
  snprintf(ckpts[0], sizeof ckpts[0], "%s/sd15-tiny.safetensors", models_fx);
  snprintf(ckpts[1], sizeof ckpts[1], "%s/sd15-tiny", models_fx);
  int want_u = count_modules(files[0], FR_LORA_UNET) + count_modules(files[1], FR_LORA_UNET);
  int want_l = count_modules(files[0], FR_LORA_CLIP_L) + count_modules(files[1], FR_LORA_CLIP_L);
  struct fr_unet *u[2] = {0};
  struct fr_clip *l[2] = {0};
  for (int k = 0; c && k < 2; k++) {
    struct fr_checkpoint *ck = NULL;
    CHECK_OK(fr_checkpoint_open(ckpts[k], &ck, &err), &err);
    struct fr_lora_set *s = fr_lora_set_new();
    CHECK_OK(fr_lora_set_add(s, files[0], 0.8, &err), &err);
    CHECK_OK(fr_lora_set_add(s, files[1], -0.6, &err), &err);
    if (!ck)
      break;
    struct fr_checkpoint pk = *ck;
    pk.lora = s;
    CHECK_OK(fr_unet_load(c, &pk, &u[k], &err), &err);
    CHECK_OK(fr_clip_load(c, &pk, FR_CLIP_ROLE_L, &l[k], &err), &err);
    int got_u = fr_lora_applied(s, FR_LORA_UNET), got_l = fr_lora_applied(s, FR_LORA_CLIP_L);
    printf("%s: %d of %d UNet and %d of %d CLIP modules applied\n", k ? "diffusers folder" : "single file",
           got_u, want_u, got_l, want_l);
    CHECKF(got_u == want_u && got_l == want_l && want_u == 4 && want_l == 3,
           "%s: %d/%d UNet, %d/%d CLIP modules", ckpts[k], got_u, want_u, got_l, want_l);
    fr_lora_set_free(s);
    fr_checkpoint_close(ck);
  }
  if (u[0] && u[1] && l[0] && l[1]) {
    const struct fr_unet_impl *a = u[0]->impl, *b = u[1]->impl;
    double worst = 0;
    CHECK(a->n_owned == b->n_owned);
    for (int i = 0; i < a->n_owned && i < b->n_owned; i++) {
      int64_t n = fr_tensor_numel(a->owned[i]);
      CHECK(n == fr_tensor_numel(b->owned[i]));
      double e = weights_rel_err(b->owned[i], a->owned[i], n);
      worst = e > worst ? e : worst;
    }
    for (int i = 0; i < l[0]->cfg.layers; i++) {
      const struct fr_clip_layer *x = &l[0]->layer[i], *y = &l[1]->layer[i];
      const struct fr_tensor *tx[4] = {x->q_w, x->fc1_w, x->o_w, x->k_w},
                             *ty[4] = {y->q_w, y->fc1_w, y->o_w, y->k_w};
      for (int j = 0; j < 4; j++) {
        double e = weights_rel_err(ty[j], tx[j], fr_tensor_numel(tx[j]));
        worst = e > worst ? e : worst;
      }
    }
    printf("patched weights, diffusers folder vs single file: %.2e\n", worst);
    CHECKF(worst <= 1e-6, "patched weights differ between the layouts: %.2e", worst);
  }
  for (int k = 0; k < 2; k++) {
    fr_unet_free(u[k]);
    fr_clip_free(l[k]);
  }
  fr_ctx_free(c);
}

/* Allocation failures while opening LoRA files and merging every form (LoCon, LoCon with lora_mid, LoHa
 * with tucker, LoKr with tucker): a clean FR_E_NOMEM every time, nothing leaks (ASan's leak check). */
static void test_alloc_failures(void) {
  static const char *const names[] = {"lora-kohya-sd15-0", "lora-loha-0", "lora-lokr-0", "lora-kohya-sdxl-0"};
  char files[4][4400], ck15[4400], ckxl[4400];
  for (int i = 0; i < 4; i++)
    snprintf(files[i], sizeof files[i], "%s/%s.safetensors", models_tmp, names[i]);
  snprintf(ck15, sizeof ck15, "%s/sd15-tiny.safetensors", models_fx);
  snprintf(ckxl, sizeof ckxl, "%s/sdxl-tiny.safetensors", models_fx);
  if (access(files[3], F_OK) != 0)
    return;
  struct fr_safetensors *st15 = NULL, *stxl = NULL;
  struct fr_err err = {{0}};
  CHECK_OK(fr_st_open(ck15, &st15, &err), &err);
  CHECK_OK(fr_st_open(ckxl, &stxl, &err), &err);
  static const struct {
    int xl;
    enum fr_lora_space sp;
    const char *key, *sgm, *dif;
  } t[] = {{0, FR_LORA_UNET, SD "input_blocks.1.0.in_layers.2.weight", "input_blocks.1.0.in_layers.2.weight",
            "down_blocks.0.resnets.0.conv1.weight"},
           {0, FR_LORA_UNET, SD "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
            "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"},
           {0, FR_LORA_CLIP_L, TE "1.mlp.fc1.weight", NULL, NULL},
           {1, FR_LORA_UNET, SD "output_blocks.0.0.in_layers.2.weight",
            "output_blocks.0.0.in_layers.2.weight", "up_blocks.0.resnets.0.conv1.weight"},
           {1, FR_LORA_CLIP_G, XL_G "0.attn.in_proj_weight", NULL, NULL}};
  int nomem = 0;
  for (long n = 1; n < 100000 && st15 && stxl; n++) {
    fr_alloc_fail_at(n);
    struct fr_lora_set *s[2] = {fr_lora_set_new(), fr_lora_set_new()};
    enum fr_status rc = s[0] && s[1] ? FR_OK : FR_E_NOMEM;
    for (int i = 0; !rc && i < 3; i++)
      rc = fr_lora_set_add(s[0], files[i], 0.5, &err);
    if (!rc)
      rc = fr_lora_set_add(s[1], files[3], 0.5, &err);
    int patched = 0;
    for (size_t i = 0; !rc && i < sizeof t / sizeof t[0]; i++) {
      const struct fr_safetensors *st = t[i].xl ? stxl : st15;
      const char *aka[2] = {t[i].sgm, t[i].dif};
      struct fr_tensor *w = NULL;
      rc = fr_lora_patch(s[t[i].xl], t[i].sp, t[i].key, aka, t[i].sgm ? 2 : 0, fr_st_find(st, t[i].key), &w,
                         &err);
      patched += w != NULL;
      fr_tensor_free(w);
    }
    fr_lora_set_free(s[0]);
    fr_lora_set_free(s[1]);
    fr_alloc_fail_at(0);
    if (!rc) {
      CHECKF(patched == 5, "fault injection: %d of 5 tensors patched", patched);
      break;
    }
    nomem += rc == FR_E_NOMEM;
    if (rc != FR_E_NOMEM) {
      CHECKF(0, "allocation %ld failing gave %s: %s", n, fr_status_str(rc), err.msg);
      break;
    }
  }
  printf("fault injection: %d allocations failed cleanly\n", nomem);
  CHECKF(nomem > 20, "fault injection reached %d allocations", nomem);
  fr_st_close(st15);
  fr_st_close(stxl);
}

/* LoRA patches travel with the handle through the nodes that change another setting of it
 * (CLIPSetLastLayer, ModelSamplingDiscrete), before or after LoraLoader: at their defaults for SD1.5 (last
 * layer, eps) all three graphs compute the same thing, and the LoRA still moves the result. */
static void test_with_settings(void) {
  static const char *const tails = "  pos: {type: TextEncode, inputs: {clip: %s, text: a photo of a cat}}\n"
                                   "  neg: {type: TextEncode, inputs: {clip: %s, text: blurry}}\n"
                                   "  empty: {type: EmptyLatent, inputs: {width: 64, height: 64}}\n"
                                   "  s: {type: Sampler, inputs: {model: %s, positive: pos, negative: neg, "
                                   "latent: empty, seed: 3, steps: 2, "
                                   "cfg: 1}}\n"
                                   "  save: {type: SaveLatent, inputs: {samples: s, filename: %s}}\n";
  static const char *const head =
      "flowrun: 1\nnodes:\n"
      "  ckpt: {type: CheckpointLoader, inputs: {ckpt_name: sd15-tiny.safetensors}}\n";
  static const char *const lora_after = "  l: {type: LoraLoader, inputs: {model: ckpt.model, clip: "
                                        "ckpt.clip, lora_name: lora-kohya-sd15-0.safetensors, "
                                        "strength_model: 0.8, strength_clip: 1.3}}\n";
  char yaml[3][4096];
  int k = snprintf(yaml[0], sizeof yaml[0], "%s%s", head, lora_after);
  snprintf(yaml[0] + k, sizeof yaml[0] - (size_t)k, tails, "l.clip", "l.clip", "l.model",
           "set-0.safetensors");
  k = snprintf(yaml[1], sizeof yaml[1],
               "%s%s  layer: {type: CLIPSetLastLayer, inputs: {clip: l.clip, stop_at_clip_layer: -1}}\n"
               "  ms: {type: ModelSamplingDiscrete, inputs: {model: l.model, sampling: eps}}\n",
               head, lora_after);
  snprintf(yaml[1] + k, sizeof yaml[1] - (size_t)k, tails, "layer", "layer", "ms", "set-1.safetensors");
  k = snprintf(
      yaml[2], sizeof yaml[2],
      "%s  layer: {type: CLIPSetLastLayer, inputs: {clip: ckpt.clip, stop_at_clip_layer: -1}}\n"
      "  ms: {type: ModelSamplingDiscrete, inputs: {model: ckpt.model, sampling: eps}}\n"
      "  l: {type: LoraLoader, inputs: {model: ms, clip: layer, lora_name: lora-kohya-sd15-0.safetensors, "
      "strength_model: 0.8, strength_clip: 1.3}}\n",
      head);
  snprintf(yaml[2] + k, sizeof yaml[2] - (size_t)k, tails, "l.clip", "l.clip", "l.model",
           "set-2.safetensors");
  struct fr_engine *e = engine(NULL);
  if (!e)
    return;
  struct fr_err err = {{0}};
  for (int i = 0; i < 3; i++) {
    struct fr_graph *g = NULL;
    CHECK_OK(fr_engine_load_string(e, yaml[i], strlen(yaml[i]), "settings.yaml", tmp, NULL, 0, &g, &err),
             &err);
    if (!g)
      continue;
    struct fr_run_summary sum;
    CHECK_OK(fr_engine_run(e, g, &sum, &err), &err);
    fr_graph_free(g);
  }
  CHECK_OK(run(e, "sd15-tiny.safetensors", NULL, NULL, NULL, 0, false, "set-base.safetensors", &err), &err);
  fr_engine_free(e);
  int64_t n[4] = {0};
  float *x[4] = {latent("set-0.safetensors", &n[0]), latent("set-1.safetensors", &n[1]),
                 latent("set-2.safetensors", &n[2]), latent("set-base.safetensors", &n[3])};
  if (x[0] && x[1] && x[2] && x[3] && n[0] == n[1] && n[0] == n[2] && n[0] == n[3]) {
    double e1 = fr_test_rel_err(x[1], x[0], (long)n[0]), e2 = fr_test_rel_err(x[2], x[0], (long)n[0]),
           moved = fr_test_rel_err(x[3], x[0], (long)n[0]);
    printf("with CLIPSetLastLayer / ModelSamplingDiscrete after: %.2e, before: %.2e (LoRA moves it %.2e)\n",
           e1, e2, moved);
    CHECKF(e1 <= 1e-6 && e2 <= 1e-6 && moved >= 1e-3,
           "settings and LoRA: after %.2e, before %.2e, moved %.2e", e1, e2, moved);
  }
  for (int i = 0; i < 4; i++)
    free(x[i]);
}

/* Strength 0 is the base bit for bit; unmatched modules warn; an SDXL LoRA on SD1.5 is refused. */
static void test_zero_unmatched_wrong_base(void) {
  struct lora a = {0};
  make_kohya_sd15(&a);
  /* two modules that name nothing in SD1.5 */
  lora_mod(&a, "lora_unet_no_such_block_proj", ".lora_down.weight", ".lora_up.weight", 8, 8, 2, 0, 1, "none",
           false, 0, -1);
  lora_mod(&a, "lora_foo_bar", ".lora_down.weight", ".lora_up.weight", 8, 8, 2, 0, 1, "none", false, 0, -1);
  char p[4400];
  snprintf(p, sizeof p, "%s/lora-extra.safetensors", models_tmp);
  bool ok = write_lora(&a, p);
  lora_free(&a);
  struct lora b = {0};
  make_kohya_sdxl(&b);
  snprintf(p, sizeof p, "%s/lora-xl.safetensors", models_tmp);
  ok = ok && write_lora(&b, p);
  lora_free(&b);
  struct fr_engine *e = ok ? engine(NULL) : NULL;
  if (!e)
    return;
  struct fr_err err = {{0}};
  const char *extra[1] = {"lora-extra.safetensors"}, *xl[1] = {"lora-xl.safetensors"};
  const double zero[1] = {0}, one[1] = {1};
  CHECK_OK(run(e, "sd15-tiny.safetensors", NULL, NULL, NULL, 0, false, "zero-base.safetensors", &err), &err);
  CHECK_OK(run(e, "sd15-tiny.safetensors", extra, zero, zero, 1, false, "zero-lora.safetensors", &err), &err);
  int64_t n0 = 0, n1 = 0;
  float *x = latent("zero-base.safetensors", &n0), *y = latent("zero-lora.safetensors", &n1);
  CHECKF(x && y && n0 == n1 && !memcmp(x, y, (size_t)n0 * sizeof *x), "strength 0 differs from no LoRA");
  free(x);
  free(y);

  CHECK_OK(run(e, "sd15-tiny.safetensors", extra, one, one, 1, false, "extra.safetensors", &err), &err);
  printf("unmatched: %s", warn_text);
  CHECKF(strstr(warn_text, "lora-extra.safetensors: 2 of 5 modules matched nothing") &&
             strstr(warn_text, "lora_unet_no_such_block_proj") && strstr(warn_text, "lora_foo_bar"),
         "unmatched modules: warnings '%s'", warn_text);

  enum fr_status rc = run(e, "sd15-tiny.safetensors", xl, one, one, 1, false, "xl.safetensors", &err);
  printf("wrong base: %s\n", err.msg);
  CHECKF(rc != FR_OK && strstr(err.msg, "another base model") && strstr(err.msg, "lora-xl.safetensors"),
         "an SDXL LoRA on SD1.5: status %d, '%s'", rc, err.msg);
  /* the UNet part alone: its modules' names exist in SD1.5, their shapes do not */
  rc = run(e, "sd15-tiny.safetensors", xl, one, one, 1, true, "xl-unet.safetensors", &err);
  printf("wrong base, UNet: %s\n", err.msg);
  CHECKF(rc != FR_OK && strstr(err.msg, "another base model") && strstr(err.msg, "[64, 64] update") &&
             strstr(err.msg, "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"),
         "an SDXL LoRA's UNet part on SD1.5: status %d, '%s'", rc, err.msg);
  /* factors that do not chain: an error naming the module, not a crash */
  struct lora bad = {0};
  rnd(&bad, "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", ".lora_down.weight", 0.5,
      2, 4, 32, 0, 0);
  rnd(&bad, "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", ".lora_up.weight", 0.5, 2,
      32, 3, 0, 0);
  snprintf(p, sizeof p, "%s/lora-bad.safetensors", models_tmp);
  if (write_lora(&bad, p)) {
    const char *bl[1] = {"lora-bad.safetensors"};
    rc = run(e, "sd15-tiny.safetensors", bl, one, one, 1, true, "bad.safetensors", &err);
    CHECKF(rc != FR_OK &&
               strstr(err.msg, "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q") &&
               strstr(err.msg, "do not chain"),
           "factors that do not chain: status %d, '%s'", rc, err.msg);
  }
  lora_free(&bad);
  fr_engine_free(e);
}

/* A cached re-run after changing only strength_model: the Sampler runs, TextEncode comes from the cache,
 * and the checkpoint is not opened again (no "loading" event; the model is patched from the open one). */
static void test_rerun(void) {
  struct lora a = {0};
  make_kohya_sd15(&a);
  char p[4400], cache[4300];
  snprintf(p, sizeof p, "%s/lora-rerun.safetensors", models_tmp);
  bool ok = write_lora(&a, p);
  lora_free(&a);
  snprintf(cache, sizeof cache, "%s/cache.sqlite", tmp);
  struct fr_engine *e = ok ? engine(cache) : NULL;
  if (!e)
    return;
  struct fr_err err = {{0}};
  const char *l[1] = {"lora-rerun.safetensors"};
  const double s1[1] = {1}, s2[1] = {0.5};
  CHECK_OK(run(e, "sd15-tiny.safetensors", l, s1, s1, 1, false, "rerun1.safetensors", &err), &err);
  printf("first run: %d loads, %d patched, TextEncode ran %d\n", loads, patches, textencode_ran);
  CHECKF(loads >= 1 && patches == 2 && textencode_ran == 2, "first run: %d loads, %d patched, %d TextEncode",
         loads, patches, textencode_ran);
  CHECK_OK(run(e, "sd15-tiny.safetensors", l, s2, s1, 1, false, "rerun2.safetensors", &err), &err);
  printf("strength_model changed: %d loads, %d patched, TextEncode ran %d cached %d, Sampler ran %d\n", loads,
         patches, textencode_ran, textencode_cached, sampler_ran);
  CHECKF(loads == 0, "strength_model change opened the checkpoint again (%d loading events)", loads);
  CHECKF(patches == 1 && sampler_ran == 1, "strength_model change: %d patched, Sampler ran %d", patches,
         sampler_ran);
  CHECKF(textencode_ran == 0 && textencode_cached == 2, "strength_model change: TextEncode ran %d, cached %d",
         textencode_ran, textencode_cached);
  /* strength_clip changed: TextEncode runs again (and so does the Sampler, its conditioning changed) */
  CHECK_OK(run(e, "sd15-tiny.safetensors", l, s2, s2, 1, false, "rerun3.safetensors", &err), &err);
  CHECKF(textencode_ran == 2 && loads == 0, "strength_clip change: TextEncode ran %d, %d loads",
         textencode_ran, loads);
  fr_engine_free(e);
}

/* The shared graphs run as they are on the tiny models with the LoRA files test_layouts wrote. */
static void test_graphs(void) {
  const char *src = getenv("FR_SRC");
  if (!src) {
    printf("part skipped: FR_SRC not set (the graphs/ folder)\n");
    return;
  }
  static const struct {
    const char *graph, *ckpt, *lora;
  } cases[] = {{"sd15-lora.yaml", "sd15-tiny.safetensors", "lora-kohya-sd15-0.safetensors"},
               {"sdxl-lora.yaml", "sdxl-tiny.safetensors", "lora-kohya-sdxl-0.safetensors"}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char path[4300], lp[4500];
    snprintf(path, sizeof path, "%s/graphs/%s", src, cases[i].graph);
    snprintf(lp, sizeof lp, "%s/%s", models_tmp, cases[i].lora);
    if (access(lp, F_OK) != 0)
      continue; /* its layout was skipped */
    struct fr_engine *e = engine(NULL);
    if (!e)
      return;
    struct fr_override ov[] = {{"ckpt", cases[i].ckpt}, {"lora", cases[i].lora}, {"width", "64"},
                               {"height", "64"},        {"steps", "2"},          {"strength_model", "0.7"}};
    struct fr_graph *g = NULL;
    struct fr_err err = {{0}};
    CHECK_OK(fr_engine_load(e, path, ov, (int)(sizeof ov / sizeof ov[0]), &g, &err), &err);
    if (g) {
      struct fr_run_summary sum;
      patches = 0;
      warn_text[0] = 0;
      CHECK_OK(fr_engine_run(e, g, &sum, &err), &err);
      CHECKF(patches == 2 && !warn_text[0], "%s: %d components patched, warnings '%s'", cases[i].graph,
             patches, warn_text);
      fr_graph_free(g);
    }
    fr_engine_free(e);
  }
}

int main(void) {
  tmp = fr_test_tmpdir("test_lora");
  fx = fr_test_fixtures();
  if (!fx || !fr_test_have_fixture(fx, "models/sd15-tiny.safetensors"))
    return fr_test_done();
  snprintf(models_fx, sizeof models_fx, "%s/models", fx);
  snprintf(models_tmp, sizeof models_tmp, "%s/models", tmp);
  mkdir(models_tmp, 0755);
  /* the merged checkpoints find the CLIP tokenizers one folder up, as the fixtures' own do */
  char link[4300], target[4300];
  static const char *const toks[2] = {"tokenizer", "tokenizer_2"};
  for (int i = 0; i < 2; i++) {
    snprintf(link, sizeof link, "%s/%s", tmp, toks[i]);
    snprintf(target, sizeof target, "%s/%s", fx, toks[i]);
    if (symlink(target, link) != 0)
      printf("note: no %s link (%s)\n", toks[i], target);
  }
  test_layouts();
  test_graphs();
  test_diffusers_folder();
  test_with_settings();
  test_alloc_failures();
  test_zero_unmatched_wrong_base();
  test_rerun();
  return fr_test_done();
}
