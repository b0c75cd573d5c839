/* CLIP text encoders over the ops API: see clip.h for the architecture and the layouts read. */
#include "nodes/models/clip.h"

#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/json.h"

/* ---------- loading ---------- */

/* Number of layers: consecutive indices N for which fmt % N names an existing tensor. */
static int fr__count_layers(const struct fr_wsrc *w, const char *fmt) {
  char key[256];
  int n = 0;
  for (;; n++) {
    snprintf(key, sizeof key, fmt, n);
    if (!fr_wsrc_has(w, key))
      return n;
  }
}

/* Head count when no config says it: every real CLIP text encoder has 64-wide heads. Tiny test models
 * (width < 256) follow the fixtures' convention: 8-wide heads in the HF layout (sd15-tiny's config.json:
 * width 32, 4 heads), 16-wide in the OpenCLIP layout (the sdxl_text_encoder_2 golden matches 2 heads only).
 * See clip.h. */
static int fr__default_heads(int width, enum fr_clip_layout layout) {
  if (width >= 256 && width % 64 == 0)
    return width / 64;
  int dim = layout == FR_CLIP_LAYOUT_OPENCLIP ? 16 : 8;
  if (width % dim == 0)
    return width / dim;
  return 1;
}

/* Reads what a diffusers config.json says about the encoder (heads, activation, eps, eos). */
static enum fr_status fr__apply_config(struct fr_clip_config *cfg, const char *json, const char *where,
                                       struct fr_err *err) {
  struct fr_arena *a = fr_arena_new(0);
  if (!a)
    return fr_errf(err, FR_E_NOMEM, "out of memory reading %s/config.json", where);
  struct fr_json *root = NULL;
  enum fr_status rc = fr_json_parse(a, json, strlen(json), 0, &root, err);
  if (rc) {
    fr_err_prefix(err, rc, "%s config.json: ", where);
    fr_arena_free(a);
    return rc;
  }
  int heads = (int)fr_json_num(root, "num_attention_heads", 0);
  if (heads > 0) {
    if (cfg->width % heads)
      rc = fr_errf(err, FR_E_SHAPE, "%s config.json: num_attention_heads %d does not divide the width %d",
                   where, heads, cfg->width);
    cfg->heads = heads;
  }
  const char *act = fr_json_str(root, "hidden_act", NULL);
  if (!rc && act) {
    if (strcmp(act, "quick_gelu") == 0)
      cfg->act = FR_CLIP_ACT_QUICK_GELU;
    else if (strcmp(act, "gelu") == 0)
      cfg->act = FR_CLIP_ACT_GELU;
    else
      rc = fr_errf(err, FR_E_UNSUPPORTED,
                   "%s config.json: hidden_act \"%s\" (flowrun knows quick_gelu and gelu)", where, act);
  }
  cfg->ln_eps = (float)fr_json_num(root, "layer_norm_eps", cfg->ln_eps);
  int eos = (int)fr_json_num(root, "eos_token_id", cfg->eos_id);
  /* transformers: configs from before the eos fix say 2 and take the argmax of the ids */
  cfg->eos_argmax = eos == 2;
  if (eos != 2)
    cfg->eos_id = eos;
  fr_arena_free(a);
  return rc;
}

/* Loads one tensor of shape dims (n of them) into *dst; keeps the first error. */
struct fr__loader {
  struct fr_ctx *c;
  const struct fr_wsrc *w;
  struct fr_err *err;
  enum fr_status rc;
};

static void fr__ld(struct fr__loader *L, struct fr_tensor **dst, const char *name, int ndim, int64_t d0,
                   int64_t d1) {
  if (L->rc)
    return;
  int64_t shape[2] = {d0, d1};
  L->rc = fr_wsrc_load(L->c, L->w, name, ndim, shape, dst, L->err);
}

static void fr__ldf(struct fr__loader *L, struct fr_tensor **dst, int ndim, int64_t d0, int64_t d1,
                    const char *fmt, int i) {
  char key[256];
  snprintf(key, sizeof key, fmt, i);
  fr__ld(L, dst, key, ndim, d0, d1);
}

/* Splits OpenCLIP's fused in_proj [3W, ...] into q, k, v along dim 0. */
static void fr__split3(struct fr__loader *L, struct fr_tensor *fused, int64_t w, struct fr_tensor **q,
                       struct fr_tensor **k, struct fr_tensor **v, const char *name) {
  if (L->rc)
    return;
  *q = fr_slice(L->c, fused, 0, 0, w);
  *k = fr_slice(L->c, fused, 0, w, w);
  *v = fr_slice(L->c, fused, 0, 2 * w, w);
  if (!*q || !*k || !*v) {
    L->rc = fr_ctx_status(L->c, L->err);
    if (!L->rc)
      L->rc = fr_errf(L->err, FR_E_NOMEM, "out of memory splitting %s", name);
    fr_err_prefix(L->err, L->rc, "tensor %s%s: ", L->w->prefix, name);
  }
}

static enum fr_status fr__load_hf(struct fr_clip *m, struct fr__loader *L, const char *config_json) {
  struct fr_clip_config *cfg = &m->cfg;
  const struct fr_st_entry *e = fr_wsrc_find(L->w, "embeddings.token_embedding.weight");
  const struct fr_st_entry *p = fr_wsrc_find(L->w, "embeddings.position_embedding.weight");
  const struct fr_st_entry *f = fr_wsrc_find(L->w, "encoder.layers.0.mlp.fc1.weight");
  if (!e || e->ndim != 2)
    return fr_errf(L->err, FR_E_SHAPE, "tensor %sembeddings.token_embedding.weight: expected [vocab, width]",
                   L->w->prefix);
  cfg->vocab = (int)e->shape[0];
  cfg->width = (int)e->shape[1];
  cfg->ctx = p && p->ndim == 2 ? (int)p->shape[0] : 77;
  cfg->mlp = f && f->ndim == 2 ? (int)f->shape[0] : 4 * cfg->width;
  cfg->layers = fr__count_layers(L->w, "encoder.layers.%d.layer_norm1.weight");
  cfg->act = FR_CLIP_ACT_QUICK_GELU;
  cfg->heads = fr__default_heads(cfg->width, FR_CLIP_LAYOUT_HF);
  if (config_json) {
    enum fr_status rc = fr__apply_config(cfg, config_json, m->where, L->err);
    if (rc)
      return rc;
  }
  return FR_OK;
}

static enum fr_status fr__load_weights_hf(struct fr_clip *m, struct fr__loader *L,
                                          const struct fr_wsrc *root) {
  const struct fr_clip_config *cfg = &m->cfg;
  int64_t W = cfg->width, M = cfg->mlp;
  fr__ld(L, &m->tok_emb, "embeddings.token_embedding.weight", 2, cfg->vocab, W);
  fr__ld(L, &m->pos_emb, "embeddings.position_embedding.weight", 2, cfg->ctx, W);
  for (int i = 0; i < cfg->layers && !L->rc; i++) {
    struct fr_clip_layer *l = &m->layer[i];
    const char *pre = "encoder.layers.%d.";
    char fmt[128];
#define FR__L(field, suffix, nd, a, b)                                                                       \
  snprintf(fmt, sizeof fmt, "%s%s", pre, suffix);                                                            \
  fr__ldf(L, &l->field, nd, a, b, fmt, i)
    FR__L(ln1_w, "layer_norm1.weight", 1, W, 0);
    FR__L(ln1_b, "layer_norm1.bias", 1, W, 0);
    FR__L(q_w, "self_attn.q_proj.weight", 2, W, W);
    FR__L(q_b, "self_attn.q_proj.bias", 1, W, 0);
    FR__L(k_w, "self_attn.k_proj.weight", 2, W, W);
    FR__L(k_b, "self_attn.k_proj.bias", 1, W, 0);
    FR__L(v_w, "self_attn.v_proj.weight", 2, W, W);
    FR__L(v_b, "self_attn.v_proj.bias", 1, W, 0);
    FR__L(o_w, "self_attn.out_proj.weight", 2, W, W);
    FR__L(o_b, "self_attn.out_proj.bias", 1, W, 0);
    FR__L(ln2_w, "layer_norm2.weight", 1, W, 0);
    FR__L(ln2_b, "layer_norm2.bias", 1, W, 0);
    FR__L(fc1_w, "mlp.fc1.weight", 2, M, W);
    FR__L(fc1_b, "mlp.fc1.bias", 1, M, 0);
    FR__L(fc2_w, "mlp.fc2.weight", 2, W, M);
    FR__L(fc2_b, "mlp.fc2.bias", 1, W, 0);
#undef FR__L
  }
  fr__ld(L, &m->lnf_w, "final_layer_norm.weight", 1, W, 0);
  fr__ld(L, &m->lnf_b, "final_layer_norm.bias", 1, W, 0);
  if (!L->rc && m->cfg.proj) { /* text_projection sits beside text_model., not inside it */
    const struct fr_wsrc *save = L->w;
    L->w = root;
    fr__ld(L, &m->proj, "text_projection.weight", 2, m->cfg.proj, W);
    L->w = save;
  }
  return L->rc;
}

static enum fr_status fr__load_weights_openclip(struct fr_clip *m, struct fr__loader *L) {
  struct fr_clip_config *cfg = &m->cfg;
  const struct fr_st_entry *e = fr_wsrc_find(L->w, "token_embedding.weight");
  const struct fr_st_entry *p = fr_wsrc_find(L->w, "positional_embedding");
  const struct fr_st_entry *f = fr_wsrc_find(L->w, "transformer.resblocks.0.mlp.c_fc.weight");
  const struct fr_st_entry *tp = fr_wsrc_find(L->w, "text_projection");
  if (!e || e->ndim != 2)
    return fr_errf(L->err, FR_E_SHAPE, "tensor %stoken_embedding.weight: expected [vocab, width]",
                   L->w->prefix);
  cfg->vocab = (int)e->shape[0];
  cfg->width = (int)e->shape[1];
  cfg->ctx = p && p->ndim == 2 ? (int)p->shape[0] : 77;
  cfg->mlp = f && f->ndim == 2 ? (int)f->shape[0] : 4 * cfg->width;
  cfg->proj = tp && tp->ndim == 2 ? (int)tp->shape[1] : 0;
  cfg->layers = fr__count_layers(L->w, "transformer.resblocks.%d.ln_1.weight");
  cfg->act = FR_CLIP_ACT_GELU;
  cfg->heads = fr__default_heads(cfg->width, FR_CLIP_LAYOUT_OPENCLIP);
  if (cfg->layers < 1)
    return fr_errf(L->err, FR_E_NOTFOUND, "tensor %stransformer.resblocks.0.ln_1.weight: missing from %s",
                   L->w->prefix, L->w->st->path);
  m->layer = fr_calloc((size_t)cfg->layers, sizeof *m->layer);
  if (!m->layer)
    return fr_errf(L->err, FR_E_NOMEM, "out of memory loading %s", m->where);
  int64_t W = cfg->width, M = cfg->mlp;
  fr__ld(L, &m->tok_emb, "token_embedding.weight", 2, cfg->vocab, W);
  fr__ld(L, &m->pos_emb, "positional_embedding", 2, cfg->ctx, W);
  for (int i = 0; i < cfg->layers && !L->rc; i++) {
    struct fr_clip_layer *l = &m->layer[i];
    struct fr_tensor *in_w = NULL, *in_b = NULL;
    char name[128];
    fr__ldf(L, &in_w, 2, 3 * W, W, "transformer.resblocks.%d.attn.in_proj_weight", i);
    fr__ldf(L, &in_b, 1, 3 * W, 0, "transformer.resblocks.%d.attn.in_proj_bias", i);
    snprintf(name, sizeof name, "transformer.resblocks.%d.attn.in_proj_weight", i);
    fr__split3(L, in_w, W, &l->q_w, &l->k_w, &l->v_w, name);
    snprintf(name, sizeof name, "transformer.resblocks.%d.attn.in_proj_bias", i);
    fr__split3(L, in_b, W, &l->q_b, &l->k_b, &l->v_b, name);
    fr_tensor_free(in_w);
    fr_tensor_free(in_b);
    fr__ldf(L, &l->o_w, 2, W, W, "transformer.resblocks.%d.attn.out_proj.weight", i);
    fr__ldf(L, &l->o_b, 1, W, 0, "transformer.resblocks.%d.attn.out_proj.bias", i);
    fr__ldf(L, &l->ln1_w, 1, W, 0, "transformer.resblocks.%d.ln_1.weight", i);
    fr__ldf(L, &l->ln1_b, 1, W, 0, "transformer.resblocks.%d.ln_1.bias", i);
    fr__ldf(L, &l->ln2_w, 1, W, 0, "transformer.resblocks.%d.ln_2.weight", i);
    fr__ldf(L, &l->ln2_b, 1, W, 0, "transformer.resblocks.%d.ln_2.bias", i);
    fr__ldf(L, &l->fc1_w, 2, M, W, "transformer.resblocks.%d.mlp.c_fc.weight", i);
    fr__ldf(L, &l->fc1_b, 1, M, 0, "transformer.resblocks.%d.mlp.c_fc.bias", i);
    fr__ldf(L, &l->fc2_w, 2, W, M, "transformer.resblocks.%d.mlp.c_proj.weight", i);
    fr__ldf(L, &l->fc2_b, 1, W, 0, "transformer.resblocks.%d.mlp.c_proj.bias", i);
  }
  fr__ld(L, &m->lnf_w, "ln_final.weight", 1, W, 0);
  fr__ld(L, &m->lnf_b, "ln_final.bias", 1, W, 0);
  if (!L->rc && cfg->proj) { /* stored [W, P] for x @ proj; kept as the linear weight [P, W] */
    struct fr_tensor *t = NULL;
    fr__ld(L, &t, "text_projection", 2, W, cfg->proj);
    if (!L->rc) {
      m->proj = fr_permute(L->c, t, (const int[]){1, 0});
      if (!m->proj) {
        L->rc = fr_ctx_status(L->c, L->err);
        if (!L->rc)
          L->rc = fr_errf(L->err, FR_E_NOMEM, "out of memory loading %stext_projection", L->w->prefix);
      }
    }
    fr_tensor_free(t);
  }
  return L->rc;
}

enum fr_status fr_clip_load_from(struct fr_ctx *c, const struct fr_wsrc *w, const char *config_json,
                                 struct fr_clip **out, struct fr_err *err) {
  *out = NULL;
  struct fr_clip *m = fr_calloc(1, sizeof *m);
  if (!m)
    return fr_errf(err, FR_E_NOMEM, "out of memory loading a text encoder");
  const char *pre = w->prefix ? w->prefix : "";
  snprintf(m->where, sizeof m->where, "%s (%s*)", w->st ? w->st->path : "(no file)", pre);
  m->cfg.ln_eps = 1e-5f;
  m->cfg.eos_id = 49407;
  struct fr__loader L = {c, w, err, FR_OK};
  enum fr_status rc;
  if (fr_wsrc_has(w, "token_embedding.weight")) {
    m->cfg.layout = FR_CLIP_LAYOUT_OPENCLIP;
    rc = fr__load_weights_openclip(m, &L);
  } else {
    /* transformers' layout, with or without the text_model. level */
    char tm[512];
    snprintf(tm, sizeof tm, "%stext_model.", pre);
    struct fr_wsrc inner = {w->st, tm, w->lora, w->space};
    if (!fr_wsrc_has(&inner, "embeddings.token_embedding.weight"))
      inner.prefix = pre;
    L.w = &inner;
    m->cfg.layout = FR_CLIP_LAYOUT_HF;
    rc = fr__load_hf(m, &L, config_json);
    const struct fr_st_entry *tp = fr_wsrc_find(w, "text_projection.weight");
    if (!rc && tp)
      m->cfg.proj = tp->ndim == 2 ? (int)tp->shape[0] : -1;
    if (!rc && m->cfg.proj < 0)
      rc = fr_errf(err, FR_E_SHAPE, "tensor %stext_projection.weight: expected [proj, %d], file has %d dims",
                   pre, m->cfg.width, tp->ndim);
    if (!rc && m->cfg.layers < 1)
      rc = fr_errf(err, FR_E_NOTFOUND, "tensor %sencoder.layers.0.layer_norm1.weight: missing from %s",
                   inner.prefix, w->st->path);
    if (!rc) {
      m->layer = fr_calloc((size_t)m->cfg.layers, sizeof *m->layer);
      rc = m->layer ? fr__load_weights_hf(m, &L, w)
                    : fr_errf(err, FR_E_NOMEM, "out of memory loading %s", m->where);
    }
  }
  if (!rc && (m->cfg.heads < 1 || m->cfg.width % m->cfg.heads))
    rc = fr_errf(err, FR_E_SHAPE, "%s: %d heads do not divide the width %d", m->where, m->cfg.heads,
                 m->cfg.width);
  if (rc) {
    fr_clip_free(m);
    return rc;
  }
  *out = m;
  return FR_OK;
}

enum fr_status fr_clip_load(struct fr_ctx *c, const struct fr_checkpoint *ck, enum fr_clip_role role,
                            struct fr_clip **out, struct fr_err *err) {
  *out = NULL;
  const char *name = role == FR_CLIP_ROLE_L ? "CLIP-L" : "OpenCLIP-G";
  enum fr_lora_space space = role == FR_CLIP_ROLE_L ? FR_LORA_CLIP_L : FR_LORA_CLIP_G;
  if (ck->layout == FR_LAYOUT_DIFFUSERS) {
    const struct fr_safetensors *st = role == FR_CLIP_ROLE_L ? ck->text_encoder : ck->text_encoder_2;
    const char *cfg = role == FR_CLIP_ROLE_L ? ck->text_encoder_config : ck->text_encoder_2_config;
    if (!st)
      return fr_errf(err, FR_E_NOTFOUND, "%s: no %s text encoder (%s/model.safetensors)", ck->path, name,
                     role == FR_CLIP_ROLE_L ? "text_encoder" : "text_encoder_2");
    struct fr_wsrc w = {st, "", ck->lora, space};
    return fr_clip_load_from(c, &w, cfg, out, err);
  }
  /* single file: the first prefix under which an encoder's token embedding exists */
  /* "" last: a standalone CLIP-L file (text_model.* keys) */
  static const char *const l_prefixes[] = {"cond_stage_model.transformer.",
                                           "conditioner.embedders.0.transformer.", ""};
  static const char *const g_prefixes[] = {"conditioner.embedders.1.model.",
                                           "conditioner.embedders.0.model."};
  const char *const *pre = role == FR_CLIP_ROLE_L ? l_prefixes : g_prefixes;
  size_t n = role == FR_CLIP_ROLE_L ? sizeof l_prefixes / sizeof *pre : sizeof g_prefixes / sizeof *pre;
  char tried[1024] = "";
  for (size_t i = 0; i < n; i++) {
    struct fr_wsrc w = {ck->file, pre[i], ck->lora, space};
    char tm[512];
    snprintf(tm, sizeof tm, "%stext_model.", pre[i]);
    struct fr_wsrc inner = {.st = ck->file, .prefix = tm};
    bool hf = fr_wsrc_has(&inner, "embeddings.token_embedding.weight") ||
              fr_wsrc_has(&w, "embeddings.token_embedding.weight");
    bool oc = fr_wsrc_has(&w, "token_embedding.weight");
    /* SD1.5 / SDXL's CLIP-L are HF-layout; G is OpenCLIP-layout in SGM files */
    if ((role == FR_CLIP_ROLE_L && hf) || (role == FR_CLIP_ROLE_G && oc))
      return fr_clip_load_from(c, &w, NULL, out, err);
    size_t k = strlen(tried);
    snprintf(tried + k, sizeof tried - k, "%s%s*", k ? ", " : "", pre[i][0] ? pre[i] : "(no prefix) ");
  }
  return fr_errf(err, FR_E_NOTFOUND, "%s: no %s text encoder (looked for %s)", ck->path, name, tried);
}

static void fr__layer_free(struct fr_clip_layer *l) {
  struct fr_tensor **t[] = {&l->ln1_w, &l->ln1_b, &l->q_w,   &l->q_b,  &l->k_w,   &l->k_b,
                            &l->v_w,   &l->v_b,   &l->o_w,   &l->o_b,  &l->ln2_w, &l->ln2_b,
                            &l->fc1_w, &l->fc1_b, &l->fc2_w, &l->fc2_b};
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
    fr_tensor_free(*t[i]);
}

void fr_clip_free(struct fr_clip *m) {
  if (!m)
    return;
  if (m->layer)
    for (int i = 0; i < m->cfg.layers; i++)
      fr__layer_free(&m->layer[i]);
  fr_free(m->layer);
  fr_tensor_free(m->tok_emb);
  fr_tensor_free(m->pos_emb);
  fr_tensor_free(m->lnf_w);
  fr_tensor_free(m->lnf_b);
  fr_tensor_free(m->proj);
  fr_free(m);
}

/* ---------- forward ---------- */

/* One pre-LN layer: x + attn(ln1(x)), then + mlp(ln2(x)). x [B, T, W] -> new [B, T, W]. */
static struct fr_tensor *fr__layer(struct fr_ctx *c, const struct fr_clip *m, const struct fr_clip_layer *l,
                                   const struct fr_tensor *x) {
  const struct fr_clip_config *cfg = &m->cfg;
  struct fr_tensor *h = fr_layer_norm(c, x, l->ln1_w, l->ln1_b, cfg->ln_eps); /* [B, T, W] */
  struct fr_tensor *q = fr_linear(c, h, l->q_w, l->q_b);                      /* [B, T, W] */
  struct fr_tensor *k = fr_linear(c, h, l->k_w, l->k_b);
  struct fr_tensor *v = fr_linear(c, h, l->v_w, l->v_b);
  fr_tensor_free(h);
  struct fr_tensor *a = fr_attention(c, q, k, v, cfg->heads, true); /* [B, T, W], causal */
  fr_tensor_free(q);
  fr_tensor_free(k);
  fr_tensor_free(v);
  struct fr_tensor *o = fr_linear(c, a, l->o_w, l->o_b);
  fr_tensor_free(a);
  struct fr_tensor *x1 = fr_add(c, x, o); /* [B, T, W] */
  fr_tensor_free(o);
  h = fr_layer_norm(c, x1, l->ln2_w, l->ln2_b, cfg->ln_eps);
  struct fr_tensor *f = fr_linear(c, h, l->fc1_w, l->fc1_b); /* [B, T, M] */
  fr_tensor_free(h);
  struct fr_tensor *g = cfg->act == FR_CLIP_ACT_GELU ? fr_gelu(c, f) : fr_quick_gelu(c, f);
  fr_tensor_free(f);
  struct fr_tensor *y = fr_linear(c, g, l->fc2_w, l->fc2_b); /* [B, T, W] */
  fr_tensor_free(g);
  if (x1 && y && !fr_add_inplace(c, x1, y)) {
    fr_tensor_free(x1);
    x1 = NULL;
  }
  fr_tensor_free(y);
  return x1;
}

enum fr_status fr_clip_encode(struct fr_ctx *c, const struct fr_clip *m, const int32_t *ids, int batch,
                              int len, struct fr_clip_out *out, struct fr_err *err) {
  return fr_clip_encode_ex(c, m, ids, batch, len, NULL, out, err);
}

enum fr_status fr_clip_encode_ex(struct fr_ctx *c, const struct fr_clip *m, const int32_t *ids, int batch,
                                 int len, const struct fr_clip_encode_opts *opts, struct fr_clip_out *out,
                                 struct fr_err *err) {
  static const struct fr_clip_encode_opts none = {0};
  if (!opts)
    opts = &none;
  memset(out, 0, sizeof *out);
  const struct fr_clip_config *cfg = &m->cfg;
  int n_ids = cfg->vocab + (opts->extra ? opts->n_extra : 0);
  int hidden_at = opts->hidden_layer < 0 ? cfg->layers + opts->hidden_layer : -1; /* output of layer i */
  if (opts->hidden_layer < 0 && hidden_at < 0)
    return fr_errf(err, FR_E_INVALID, "%s: clip layer %d asked for, the encoder has %d layers", m->where,
                   opts->hidden_layer, cfg->layers);
  if (batch < 1 || len < 1 || len > cfg->ctx)
    return fr_errf(err, FR_E_SHAPE, "text encoder input [%d, %d]: expected [B >= 1, 1..%d]", batch, len,
                   cfg->ctx);
  if (cfg->layers < 2)
    return fr_errf(err, FR_E_UNSUPPORTED, "%s: %d layer(s), the penultimate state needs 2", m->where,
                   cfg->layers);
  int64_t *eos = fr_malloc((size_t)batch * sizeof *eos);
  if (!eos)
    return fr_errf(err, FR_E_NOMEM, "out of memory encoding text");
  for (int b = 0; b < batch; b++) {
    const int32_t *row = ids + (size_t)b * (size_t)len;
    int at = -1, amax = 0;
    for (int t = 0; t < len; t++) {
      if (row[t] < 0 || row[t] >= n_ids) {
        fr_free(eos);
        return fr_errf(err, FR_E_INVALID, "token id %d at [%d, %d] is outside the vocabulary (%d)", row[t], b,
                       t, cfg->vocab);
      }
      if (at < 0 && row[t] == cfg->eos_id)
        at = t;
      if (row[t] > row[amax])
        amax = t;
    }
    eos[b] = cfg->eos_argmax || at < 0 ? amax : at;
  }

  /* ops record a NULL input as an error of their own, so allocation failures outside ops stop here */
  struct fr_tensor *idt = fr_tensor_view(FR_I32, 2, (int64_t[]){batch, len}, (void *)ids);
  struct fr_tensor *dev_ids = idt ? fr_ctx_upload(c, idt) : NULL;
  fr_tensor_free(idt);
  if (!dev_ids) {
    fr_free(eos);
    enum fr_status rc = fr_ctx_status(c, err);
    if (!rc)
      return fr_errf(err, FR_E_NOMEM, "text encoder %s: out of memory", m->where);
    return fr_err_prefix(err, rc, "text encoder %s: ", m->where);
  }
  struct fr_tensor *table = NULL; /* [V + E, W]: the token embeddings, then the textual-inversion rows */
  if (opts->extra && opts->n_extra > 0) {
    struct fr_tensor *he =
        fr_tensor_view(FR_F32, 2, (int64_t[]){opts->n_extra, cfg->width}, (void *)opts->extra);
    struct fr_tensor *de = he ? fr_ctx_weight(c, he) : NULL; /* in the compute dtype, as the table */
    fr_tensor_free(he);
    const struct fr_tensor *parts[2] = {m->tok_emb, de};
    table = de ? fr_concat(c, parts, 2, 0) : NULL;
    fr_tensor_free(de);
  }
  struct fr_tensor *x = fr_embedding(c, dev_ids, table ? table : m->tok_emb); /* [B, T, W] */
  fr_tensor_free(table);
  fr_tensor_free(dev_ids);
  /* positions 0..len-1: the first len rows of the table */
  struct fr_tensor *pos = fr_slice(c, m->pos_emb, 0, 0, len); /* [T, W] */
  if (x && pos && !fr_add_inplace(c, x, pos)) {
    fr_tensor_free(x);
    x = NULL;
  }
  fr_tensor_free(pos);
  struct fr_tensor *pen = NULL, *hid = NULL;
  for (int i = 0; i < cfg->layers && x; i++) {
    if (i == cfg->layers - 1)
      pen = fr_copy(c, x); /* hidden_states[-2]: the last layer's input */
    struct fr_tensor *y = fr__layer(c, m, &m->layer[i], x);
    fr_tensor_free(x);
    x = y;
    if (i == hidden_at && x)
      hid = fr_copy(c, x);
  }
  struct fr_tensor *last = fr_layer_norm(c, x, m->lnf_w, m->lnf_b, cfg->ln_eps); /* [B, T, W] */
  fr_tensor_free(x);
  struct fr_tensor *pooled = fr_gather_rows(c, last, eos);                       /* [B, W] */
  struct fr_tensor *proj = m->proj ? fr_linear(c, pooled, m->proj, NULL) : NULL; /* [B, P] */
  fr_free(eos);
  enum fr_status rc = fr_ctx_status(c, err);
  if (!rc && (!last || !pen || !pooled || (m->proj && !proj) || (hidden_at >= 0 && !hid)))
    rc = fr_errf(err, FR_E_NOMEM, "out of memory encoding text");
  if (rc) {
    fr_err_prefix(err, rc, "text encoder %s: ", m->where);
    fr_tensor_free(hid);
    fr_tensor_free(last);
    fr_tensor_free(pen);
    fr_tensor_free(pooled);
    fr_tensor_free(proj);
    return rc;
  }
  out->last = last;
  out->penultimate = pen;
  out->pooled = pooled;
  out->projected = proj;
  out->hidden = hid;
  return FR_OK;
}

void fr_clip_out_free(struct fr_clip_out *o) {
  if (!o)
    return;
  fr_tensor_free(o->last);
  fr_tensor_free(o->penultimate);
  fr_tensor_free(o->pooled);
  fr_tensor_free(o->projected);
  fr_tensor_free(o->hidden);
  memset(o, 0, sizeof *o);
}
