/* UNet weights: the SGM <-> diffusers key mapping, architecture detection and loading.
 *
 * Model code names every tensor by its CompVis/SGM name (input_blocks.4.1.proj_in.weight); for a diffusers
 * file fr__unet_key rewrites the name through one table of block and layer renames, so both layouts fill
 * the same structs. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nodes/models/unet_impl.h"

/* ResBlock layer names: SGM -> diffusers. */
static const char *const fr__res_names[][2] = {
    {"in_layers.0.", "norm1."},  {"in_layers.2.", "conv1."},  {"emb_layers.1.", "time_emb_proj."},
    {"out_layers.0.", "norm2."}, {"out_layers.3.", "conv2."}, {"skip_connection.", "conv_shortcut."},
};

/* Whole-module renames: SGM prefix -> diffusers prefix. */
static const char *const fr__top_names[][2] = {
    {"time_embed.0.", "time_embedding.linear_1."},
    {"time_embed.2.", "time_embedding.linear_2."},
    {"label_emb.0.0.", "add_embedding.linear_1."},
    {"label_emb.0.2.", "add_embedding.linear_2."},
    {"input_blocks.0.0.", "conv_in."},
    {"out.0.", "conv_norm_out."},
    {"out.2.", "conv_out."},
};

static bool fr__starts(const char *s, const char *p) {
  return strncmp(s, p, strlen(p)) == 0;
}

/* "<base><rest>" where rest is a ResBlock-internal SGM name. */
static bool fr__put_res(char *out, size_t n, const char *base, const char *rest) {
  for (size_t i = 0; i < sizeof fr__res_names / sizeof fr__res_names[0]; i++)
    if (fr__starts(rest, fr__res_names[i][0])) {
      int k = snprintf(out, n, "%s%s%s", base, fr__res_names[i][1], rest + strlen(fr__res_names[i][0]));
      return k > 0 && (size_t)k < n;
    }
  return false;
}

/* Parses "<num>.<num>." at s; returns the text after it or NULL. */
static const char *fr__two_ints(const char *s, int *a, int *b) {
  char *e;
  long x = strtol(s, &e, 10);
  if (e == s || *e != '.')
    return NULL;
  s = e + 1;
  long y = strtol(s, &e, 10);
  if (e == s || *e != '.')
    return NULL;
  *a = (int)x, *b = (int)y;
  return e + 1;
}

bool fr__unet_key(const struct fr__usrc *s, const char *sgm, char *out, size_t n) {
  if (!s->diffusers) {
    int k = snprintf(out, n, "%s", sgm);
    return k > 0 && (size_t)k < n;
  }
  for (size_t i = 0; i < sizeof fr__top_names / sizeof fr__top_names[0]; i++)
    if (fr__starts(sgm, fr__top_names[i][0])) {
      int k = snprintf(out, n, "%s%s", fr__top_names[i][1], sgm + strlen(fr__top_names[i][0]));
      return k > 0 && (size_t)k < n;
    }
  int per = s->nr + 1, blk, mod;
  char base[128];
  const char *rest;
  if (fr__starts(sgm, "input_blocks.") && (rest = fr__two_ints(sgm + 13, &blk, &mod)) && blk >= 1) {
    int level = (blk - 1) / per, j = (blk - 1) % per;
    if (j == s->nr) { /* the level's Downsample: input_blocks.I.0.op */
      if (mod != 0 || !fr__starts(rest, "op."))
        return false;
      int k = snprintf(out, n, "down_blocks.%d.downsamplers.0.conv.%s", level, rest + 3);
      return k > 0 && (size_t)k < n;
    }
    if (mod == 0) {
      snprintf(base, sizeof base, "down_blocks.%d.resnets.%d.", level, j);
      return fr__put_res(out, n, base, rest);
    }
    int k = snprintf(out, n, "down_blocks.%d.attentions.%d.%s", level, j, rest);
    return mod == 1 && k > 0 && (size_t)k < n;
  }
  if (fr__starts(sgm, "output_blocks.") && (rest = fr__two_ints(sgm + 14, &blk, &mod))) {
    int level = blk / per, j = blk % per, k;
    if (mod == 0) {
      snprintf(base, sizeof base, "up_blocks.%d.resnets.%d.", level, j);
      return fr__put_res(out, n, base, rest);
    }
    if (fr__starts(rest, "conv.")) /* Upsample: output_blocks.I.1.conv or .2.conv */
      k = snprintf(out, n, "up_blocks.%d.upsamplers.0.conv.%s", level, rest + 5);
    else
      k = snprintf(out, n, "up_blocks.%d.attentions.%d.%s", level, j, rest);
    return k > 0 && (size_t)k < n;
  }
  if (fr__starts(sgm, "middle_block.")) {
    const char *r = sgm + 13;
    int k;
    if (fr__starts(r, "0."))
      return fr__put_res(out, n, "mid_block.resnets.0.", r + 2);
    if (fr__starts(r, "2."))
      return fr__put_res(out, n, "mid_block.resnets.1.", r + 2);
    if (!fr__starts(r, "1."))
      return false;
    k = snprintf(out, n, "mid_block.attentions.0.%s", r + 2);
    return k > 0 && (size_t)k < n;
  }
  return false;
}

const struct fr_st_entry *fr__unet_find(const struct fr__usrc *s, const char *sgm) {
  char key[512];
  if (!fr__unet_key(s, sgm, key, sizeof key))
    return NULL;
  const struct fr_st_entry *e = fr_wsrc_find(&s->w, key);
  /* Some SGM-layout files (the refiner fixture among them) name the added-conditioning MLP with
   * diffusers' add_embedding.linear_1/2: accept either. */
  if (!e && !s->diffusers && fr__starts(sgm, "label_emb.0.")) {
    struct fr__usrc d = *s;
    d.diffusers = true;
    if (fr__unet_key(&d, sgm, key, sizeof key))
      e = fr_wsrc_find(&s->w, key);
  }
  return e;
}

static bool fr__has(const struct fr__usrc *s, const char *fmt, int a, int b) {
  char name[256];
  snprintf(name, sizeof name, fmt, a, b);
  return fr__unet_find(s, name) != NULL;
}

enum fr_status fr__unet_load_t(struct fr__usrc *s, const char *sgm, int ndim, const int64_t *shape,
                               struct fr_tensor **out) {
  *out = NULL;
  char key[512];
  if (!fr__unet_key(s, sgm, key, sizeof key))
    return fr_errf(s->err, FR_E_INTERNAL, "UNet tensor %s has no diffusers name", sgm);
  if (!s->diffusers && fr__starts(sgm, "label_emb.0.") && !fr_wsrc_find(&s->w, key)) {
    struct fr__usrc d = *s;
    d.diffusers = true;
    char alt[512];
    if (fr__unet_key(&d, sgm, alt, sizeof alt) && fr_wsrc_find(&s->w, alt))
      memcpy(key, alt, sizeof key);
  }
  struct fr_unet_impl *im = s->im;
  if (im->n_owned == im->cap_owned) {
    int cap = im->cap_owned ? 2 * im->cap_owned : 256;
    struct fr_tensor **p = fr_realloc(im->owned, (size_t)cap * sizeof *p);
    if (!p)
      return fr_errf(s->err, FR_E_NOMEM, "out of memory loading the UNet");
    im->owned = p, im->cap_owned = cap;
  }
  /* the LoRA key mapping knows the tensor by both layouts' names */
  char dname[512] = "";
  if (s->w.lora) {
    struct fr__usrc d = *s;
    d.diffusers = true;
    if (!fr__unet_key(&d, sgm, dname, sizeof dname))
      dname[0] = 0;
  }
  const char *aka[2] = {sgm, dname};
  enum fr_status rc = fr_wsrc_load_aka(s->c, &s->w, key, aka, dname[0] ? 2 : 1, ndim, shape, out, s->err);
  if (rc)
    return rc;
  im->owned[im->n_owned++] = *out;
  return FR_OK;
}

struct fr_unet_impl *fr__unet_impl_new(void) {
  struct fr_unet_impl *im = fr_calloc(1, sizeof *im);
  if (!im)
    return NULL;
  im->arena = fr_arena_new(0);
  if (!im->arena) {
    fr_free(im);
    return NULL;
  }
  return im;
}

void fr__unet_impl_free(struct fr_unet_impl *im) {
  if (!im)
    return;
  for (int i = 0; i < im->n_owned; i++)
    fr_tensor_free(im->owned[i]);
  fr_free(im->owned);
  fr_arena_free(im->arena);
  fr_free(im);
}

enum fr_status fr__unet_detect_layout(struct fr__usrc *s) {
  if (fr_wsrc_has(&s->w, "input_blocks.0.0.weight")) {
    s->diffusers = false;
    for (int i = 1; i < 64; i++) {
      char name[64];
      snprintf(name, sizeof name, "input_blocks.%d.0.op.weight", i);
      if (fr_wsrc_has(&s->w, name)) {
        s->nr = i - 1;
        return s->nr >= 1 ? FR_OK
                          : fr_errf(s->err, FR_E_UNSUPPORTED, "%s: %s%s right after conv_in: no ResBlocks",
                                    s->w.st->path, s->w.prefix, name);
      }
    }
    return fr_errf(s->err, FR_E_UNSUPPORTED, "%s: no Downsample (%sinput_blocks.N.0.op.weight) found",
                   s->w.st->path, s->w.prefix);
  }
  if (fr_wsrc_has(&s->w, "conv_in.weight")) {
    s->diffusers = true;
    int nr = 0;
    while (nr < 16) {
      char name[64];
      snprintf(name, sizeof name, "down_blocks.0.resnets.%d.conv1.weight", nr);
      if (!fr_wsrc_has(&s->w, name))
        break;
      nr++;
    }
    s->nr = nr;
    return nr >= 1 ? FR_OK
                   : fr_errf(s->err, FR_E_NOTFOUND,
                             "tensor %sdown_blocks.0.resnets.0.conv1.weight: missing from %s", s->w.prefix,
                             s->w.st->path);
  }
  return fr_errf(s->err, FR_E_NOTFOUND,
                 "%s: no UNet weights (neither %sinput_blocks.0.0.weight nor %sconv_in.weight)",
                 s->w.st->path, s->w.prefix, s->w.prefix);
}

/* Shape of a tensor that must exist, for detection; a missing one is the error naming it. */
static enum fr_status fr__shape_of(const struct fr__usrc *s, const char *sgm, const struct fr_st_entry **e) {
  *e = fr__unet_find(s, sgm);
  if (*e)
    return FR_OK;
  char key[512];
  if (!fr__unet_key(s, sgm, key, sizeof key))
    snprintf(key, sizeof key, "%s", sgm);
  return fr_errf(s->err, FR_E_NOTFOUND, "tensor %s%s: missing from %s", s->w.prefix, key, s->w.st->path);
}

/* Transformer blocks under "<blk>.transformer_blocks.N" (0 when the block has no attention). */
static int fr__count_tblocks(const struct fr__usrc *s, const char *blk) {
  int d = 0;
  char name[384];
  for (;;) {
    snprintf(name, sizeof name, "%.300s.transformer_blocks.%d.norm1.weight", blk, d);
    if (!fr__unet_find(s, name))
      return d;
    d++;
  }
}

enum fr_status fr__unet_detect(struct fr__usrc *s, struct fr_unet_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  const struct fr_st_entry *e;
  enum fr_status rc;
  if ((rc = fr__shape_of(s, "input_blocks.0.0.weight", &e)))
    return rc;
  if (e->ndim != 4)
    return fr_errf(s->err, FR_E_SHAPE, "tensor %s: conv_in weight is not 4-D", e->name);
  cfg->model_channels = (int)e->shape[0];
  cfg->in_channels = (int)e->shape[1];
  if ((rc = fr__shape_of(s, "time_embed.0.weight", &e)))
    return rc;
  if (e->ndim != 2 || e->shape[1] != cfg->model_channels)
    return fr_errf(s->err, FR_E_SHAPE, "tensor %s: expected [*, %d] (model channels), file has %lld dims",
                   e->name, cfg->model_channels, (long long)e->ndim);
  cfg->time_embed_dim = (int)e->shape[0];
  cfg->num_res_blocks = s->nr;
  int per = s->nr + 1;
  while (cfg->levels < FR_UNET_MAX_LEVELS &&
         fr__has(s, "input_blocks.%d.0.in_layers.0.weight", cfg->levels * per + 1, 0))
    cfg->levels++;
  if (cfg->levels < 2)
    return fr_errf(s->err, FR_E_UNSUPPORTED, "%s: UNet with %d level(s) is not supported", s->w.st->path,
                   cfg->levels);
  for (int l = 0; l < cfg->levels; l++) {
    char name[256];
    snprintf(name, sizeof name, "input_blocks.%d.0.out_layers.3.weight", l * per + 1);
    if ((rc = fr__shape_of(s, name, &e)))
      return rc;
    cfg->channels[l] = (int)e->shape[0];
    snprintf(name, sizeof name, "input_blocks.%d.1", l * per + 1);
    cfg->depth[l] = fr__count_tblocks(s, name);
  }
  cfg->mid_depth = fr__count_tblocks(s, "middle_block.1");
  /* context dim and projection kind from the first transformer */
  const char *first = NULL;
  char fname[256];
  for (int l = 0; l < cfg->levels && !first; l++)
    if (cfg->depth[l]) {
      snprintf(fname, sizeof fname, "input_blocks.%d.1", l * per + 1);
      first = fname;
    }
  if (!first && cfg->mid_depth)
    first = "middle_block.1";
  if (first) {
    char name[300];
    snprintf(name, sizeof name, "%s.transformer_blocks.0.attn2.to_k.weight", first);
    if ((rc = fr__shape_of(s, name, &e)))
      return rc;
    cfg->context_dim = (int)e->shape[1];
    snprintf(name, sizeof name, "%s.proj_in.weight", first);
    if ((rc = fr__shape_of(s, name, &e)))
      return rc;
    cfg->linear_proj = e->ndim == 2;
  }
  const struct fr_st_entry *le = fr__unet_find(s, "label_emb.0.0.weight");
  cfg->adm_in_channels = le && le->ndim == 2 ? (int)le->shape[1] : 0;
  /* Heads (docs/models-unet.md): SD1.x (1x1-conv projections) has 8 heads at every level. Models with
   * linear projections (SD2, SDXL, refiner) have 64-dim heads; their channels are multiples of 64 (320,
   * 384). The tiny test models (32 channels) follow diffusers' configs with head dim = model_channels / 2
   * (SDXL tiny: channels 32/64/64, heads 2/4/4), so a model whose channel count is not a multiple of 64
   * takes that. */
  if (!cfg->linear_proj) {
    cfg->heads = 8;
  } else {
    cfg->head_dim = cfg->model_channels % 64 == 0 ? 64 : cfg->model_channels / 2;
    if (cfg->head_dim <= 0)
      cfg->head_dim = 1;
  }
  if (cfg->adm_in_channels)
    cfg->arch = cfg->levels == 4 ? FR_UNET_SDXL_REFINER : FR_UNET_SDXL;
  else
    cfg->arch = cfg->linear_proj ? FR_UNET_SD2 : FR_UNET_SD15;
  return FR_OK;
}

int fr_unet_heads(const struct fr_unet_config *cfg, int level) {
  if (cfg->head_dim > 0)
    return cfg->channels[level] / cfg->head_dim > 0 ? cfg->channels[level] / cfg->head_dim : 1;
  return cfg->heads;
}

int fr_unet_num_skips(const struct fr_unet_config *cfg) {
  return cfg->levels * (cfg->num_res_blocks + 1);
}

int fr__unet_skip_channels(const struct fr_unet_config *cfg, int *out) {
  int ns = 0, ch = cfg->model_channels;
  out[ns++] = ch;
  for (int l = 0; l < cfg->levels; l++)
    for (int j = 0; j <= cfg->num_res_blocks; j++) {
      if (j == cfg->num_res_blocks && l == cfg->levels - 1)
        break;
      if (j < cfg->num_res_blocks)
        ch = cfg->channels[l];
      out[ns++] = ch;
    }
  return ns;
}

/* ---- module loaders: every shape follows from the detected config ---- */

#define FR__S(...) ((const int64_t[]){__VA_ARGS__})

static enum fr_status fr__ld(struct fr__usrc *s, struct fr_tensor **out, int ndim, const int64_t *shape,
                             const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static enum fr_status fr__ld(struct fr__usrc *s, struct fr_tensor **out, int ndim, const int64_t *shape,
                             const char *fmt, ...) {
  char name[384];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  return fr__unet_load_t(s, name, ndim, shape, out);
}

static enum fr_status fr__load_res(struct fr__usrc *s, const char *p, int cin, int cout, int ted,
                                   struct fr__ures **out) {
  struct fr__ures *r = fr_arena_alloc(s->im->arena, sizeof *r);
  if (!r)
    return fr_errf(s->err, FR_E_NOMEM, "out of memory loading the UNet");
  enum fr_status rc;
  if ((rc = fr__ld(s, &r->n1w, 1, FR__S(cin), "%s.in_layers.0.weight", p)) ||
      (rc = fr__ld(s, &r->n1b, 1, FR__S(cin), "%s.in_layers.0.bias", p)) ||
      (rc = fr__ld(s, &r->c1w, 4, FR__S(cout, cin, 3, 3), "%s.in_layers.2.weight", p)) ||
      (rc = fr__ld(s, &r->c1b, 1, FR__S(cout), "%s.in_layers.2.bias", p)) ||
      (rc = fr__ld(s, &r->ew, 2, FR__S(cout, ted), "%s.emb_layers.1.weight", p)) ||
      (rc = fr__ld(s, &r->eb, 1, FR__S(cout), "%s.emb_layers.1.bias", p)) ||
      (rc = fr__ld(s, &r->n2w, 1, FR__S(cout), "%s.out_layers.0.weight", p)) ||
      (rc = fr__ld(s, &r->n2b, 1, FR__S(cout), "%s.out_layers.0.bias", p)) ||
      (rc = fr__ld(s, &r->c2w, 4, FR__S(cout, cout, 3, 3), "%s.out_layers.3.weight", p)) ||
      (rc = fr__ld(s, &r->c2b, 1, FR__S(cout), "%s.out_layers.3.bias", p)))
    return rc;
  if (cin != cout) {
    if ((rc = fr__ld(s, &r->skw, 4, FR__S(cout, cin, 1, 1), "%s.skip_connection.weight", p)) ||
        (rc = fr__ld(s, &r->skb, 1, FR__S(cout), "%s.skip_connection.bias", p)))
      return rc;
  }
  *out = r;
  return FR_OK;
}

static enum fr_status fr__load_attn(struct fr__usrc *s, const char *p, int ch, int kv, struct fr__uattn *a) {
  enum fr_status rc;
  if ((rc = fr__ld(s, &a->q, 2, FR__S(ch, ch), "%s.to_q.weight", p)) ||
      (rc = fr__ld(s, &a->k, 2, FR__S(ch, kv), "%s.to_k.weight", p)) ||
      (rc = fr__ld(s, &a->v, 2, FR__S(ch, kv), "%s.to_v.weight", p)) ||
      (rc = fr__ld(s, &a->o, 2, FR__S(ch, ch), "%s.to_out.0.weight", p)) ||
      (rc = fr__ld(s, &a->ob, 1, FR__S(ch), "%s.to_out.0.bias", p)))
    return rc;
  return FR_OK;
}

static enum fr_status fr__load_xf(struct fr__usrc *s, const struct fr_unet_config *cfg, const char *p, int ch,
                                  int level, struct fr__uxf **out) {
  int depth = fr__count_tblocks(s, p);
  struct fr__uxf *x = fr_arena_alloc(s->im->arena, sizeof *x);
  struct fr__utblock *b = fr_arena_alloc(s->im->arena, sizeof *b * (size_t)(depth ? depth : 1));
  if (!x || !b)
    return fr_errf(s->err, FR_E_NOMEM, "out of memory loading the UNet");
  x->ch = ch, x->depth = depth, x->blk = b;
  x->heads = fr_unet_heads(cfg, level);
  if (ch % x->heads)
    return fr_errf(s->err, FR_E_UNSUPPORTED, "UNet block %s: %d channels do not split into %d heads", p, ch,
                   x->heads);
  enum fr_status rc;
  if (!depth) {
    char name[300];
    snprintf(name, sizeof name, "%s.transformer_blocks.0.norm1.weight", p);
    const struct fr_st_entry *e;
    return fr__shape_of(s, name, &e);
  }
  /* proj_in/out: [C, C] (linear) or [C, C, 1, 1] (conv); fr_wsrc_load accepts either for [C, C]. */
  if ((rc = fr__ld(s, &x->nw, 1, FR__S(ch), "%s.norm.weight", p)) ||
      (rc = fr__ld(s, &x->nb, 1, FR__S(ch), "%s.norm.bias", p)) ||
      (rc = fr__ld(s, &x->piw, 2, FR__S(ch, ch), "%s.proj_in.weight", p)) ||
      (rc = fr__ld(s, &x->pib, 1, FR__S(ch), "%s.proj_in.bias", p)) ||
      (rc = fr__ld(s, &x->pow, 2, FR__S(ch, ch), "%s.proj_out.weight", p)) ||
      (rc = fr__ld(s, &x->pob, 1, FR__S(ch), "%s.proj_out.bias", p)))
    return rc;
  for (int i = 0; i < depth; i++) {
    char q[320], a[360];
    snprintf(q, sizeof q, "%.280s.transformer_blocks.%d", p, i);
    struct fr__utblock *t = &b[i];
    /* the feed-forward inner width (4 x ch for SD) is read from the file */
    snprintf(a, sizeof a, "%s.ff.net.0.proj.weight", q);
    const struct fr_st_entry *e;
    if ((rc = fr__shape_of(s, a, &e)))
      return rc;
    int64_t ff2 = e->ndim == 2 ? e->shape[0] : -1;
    if (ff2 <= 0 || ff2 % 2)
      return fr_errf(s->err, FR_E_SHAPE, "tensor %s: expected [2*inner, %d]", e->name, ch);
    if ((rc = fr__ld(s, &t->n1w, 1, FR__S(ch), "%s.norm1.weight", q)) ||
        (rc = fr__ld(s, &t->n1b, 1, FR__S(ch), "%s.norm1.bias", q)) ||
        (rc = fr__ld(s, &t->n2w, 1, FR__S(ch), "%s.norm2.weight", q)) ||
        (rc = fr__ld(s, &t->n2b, 1, FR__S(ch), "%s.norm2.bias", q)) ||
        (rc = fr__ld(s, &t->n3w, 1, FR__S(ch), "%s.norm3.weight", q)) ||
        (rc = fr__ld(s, &t->n3b, 1, FR__S(ch), "%s.norm3.bias", q)))
      return rc;
    snprintf(a, sizeof a, "%s.attn1", q);
    if ((rc = fr__load_attn(s, a, ch, ch, &t->a1)))
      return rc;
    snprintf(a, sizeof a, "%s.attn2", q);
    if ((rc = fr__load_attn(s, a, ch, cfg->context_dim, &t->a2)))
      return rc;
    if ((rc = fr__ld(s, &t->ff0w, 2, FR__S(ff2, ch), "%s.ff.net.0.proj.weight", q)) ||
        (rc = fr__ld(s, &t->ff0b, 1, FR__S(ff2), "%s.ff.net.0.proj.bias", q)) ||
        (rc = fr__ld(s, &t->ff2w, 2, FR__S(ch, ff2 / 2), "%s.ff.net.2.weight", q)) ||
        (rc = fr__ld(s, &t->ff2b, 1, FR__S(ch), "%s.ff.net.2.bias", q)))
      return rc;
  }
  *out = x;
  return FR_OK;
}

enum fr_status fr__unet_load_encoder(struct fr__usrc *s, const struct fr_unet_config *cfg) {
  struct fr_unet_impl *im = s->im;
  int mc = cfg->model_channels, ted = cfg->time_embed_dim, per = cfg->num_res_blocks + 1;
  enum fr_status rc;
  if ((rc = fr__ld(s, &im->te0w, 2, FR__S(ted, mc), "time_embed.0.weight")) ||
      (rc = fr__ld(s, &im->te0b, 1, FR__S(ted), "time_embed.0.bias")) ||
      (rc = fr__ld(s, &im->te2w, 2, FR__S(ted, ted), "time_embed.2.weight")) ||
      (rc = fr__ld(s, &im->te2b, 1, FR__S(ted), "time_embed.2.bias")) ||
      (rc = fr__ld(s, &im->cinw, 4, FR__S(mc, cfg->in_channels, 3, 3), "input_blocks.0.0.weight")) ||
      (rc = fr__ld(s, &im->cinb, 1, FR__S(mc), "input_blocks.0.0.bias")))
    return rc;
  if (cfg->adm_in_channels) {
    if ((rc = fr__ld(s, &im->le0w, 2, FR__S(ted, cfg->adm_in_channels), "label_emb.0.0.weight")) ||
        (rc = fr__ld(s, &im->le0b, 1, FR__S(ted), "label_emb.0.0.bias")) ||
        (rc = fr__ld(s, &im->le2w, 2, FR__S(ted, ted), "label_emb.0.2.weight")) ||
        (rc = fr__ld(s, &im->le2b, 1, FR__S(ted), "label_emb.0.2.bias")))
      return rc;
  }
  int ch = mc, n = 1;
  for (int l = 0; l < cfg->levels; l++) {
    for (int j = 0; j < per; j++, n++) {
      struct fr__ublock *b = &im->in[n];
      char p[64];
      snprintf(p, sizeof p, "input_blocks.%d", n);
      if (j == cfg->num_res_blocks) {
        if (l == cfg->levels - 1)
          break; /* the last level has no Downsample */
        if ((rc = fr__ld(s, &b->sw, 4, FR__S(ch, ch, 3, 3), "%s.0.op.weight", p)) ||
            (rc = fr__ld(s, &b->sb, 1, FR__S(ch), "%s.0.op.bias", p)))
          return rc;
        continue;
      }
      char q[80];
      snprintf(q, sizeof q, "%s.0", p);
      if ((rc = fr__load_res(s, q, ch, cfg->channels[l], ted, &b->res)))
        return rc;
      ch = cfg->channels[l];
      snprintf(q, sizeof q, "%s.1", p);
      if (cfg->depth[l] && (rc = fr__load_xf(s, cfg, q, ch, l, &b->xf)))
        return rc;
    }
  }
  im->n_in = n;
  if ((rc = fr__load_res(s, "middle_block.0", ch, ch, ted, &im->mres0)))
    return rc;
  if (cfg->mid_depth) {
    if ((rc = fr__load_xf(s, cfg, "middle_block.1", ch, cfg->levels - 1, &im->mxf)) ||
        (rc = fr__load_res(s, "middle_block.2", ch, ch, ted, &im->mres1)))
      return rc;
  } else if ((rc = fr__load_res(s, "middle_block.1", ch, ch, ted, &im->mres1))) {
    return rc;
  }
  return FR_OK;
}

/* The decoder: output blocks (res blocks take the concatenated skip), out norm and conv. */
static enum fr_status fr__load_decoder(struct fr__usrc *s, const struct fr_unet_config *cfg) {
  struct fr_unet_impl *im = s->im;
  int per = cfg->num_res_blocks + 1, ted = cfg->time_embed_dim, mc = cfg->model_channels;
  int skip_ch[FR_UNET_MAX_SKIPS];
  int ns = fr__unet_skip_channels(cfg, skip_ch), ch = cfg->channels[cfg->levels - 1];
  (void)mc;
  enum fr_status rc;
  int n = 0;
  for (int l = cfg->levels - 1; l >= 0; l--) {
    for (int j = 0; j < per; j++, n++) {
      struct fr__ublock *b = &im->out[n];
      char p[64], q[80];
      snprintf(p, sizeof p, "output_blocks.%d", n);
      int cin = ch + skip_ch[--ns], cout = cfg->channels[l];
      snprintf(q, sizeof q, "%s.0", p);
      if ((rc = fr__load_res(s, q, cin, cout, ted, &b->res)))
        return rc;
      ch = cout;
      int next = 1;
      snprintf(q, sizeof q, "%s.1", p);
      if (cfg->depth[l]) {
        if ((rc = fr__load_xf(s, cfg, q, ch, l, &b->xf)))
          return rc;
        next = 2;
      }
      if (j == per - 1 && l > 0) {
        if ((rc = fr__ld(s, &b->sw, 4, FR__S(ch, ch, 3, 3), "%s.%d.conv.weight", p, next)) ||
            (rc = fr__ld(s, &b->sb, 1, FR__S(ch), "%s.%d.conv.bias", p, next)))
          return rc;
      }
    }
  }
  im->n_out = n;
  if ((rc = fr__ld(s, &im->onw, 1, FR__S(ch), "out.0.weight")) ||
      (rc = fr__ld(s, &im->onb, 1, FR__S(ch), "out.0.bias")) ||
      (rc = fr__ld(s, &im->ocw, 4, FR__S(cfg->out_channels, ch, 3, 3), "out.2.weight")) ||
      (rc = fr__ld(s, &im->ocb, 1, FR__S(cfg->out_channels), "out.2.bias")))
    return rc;
  return FR_OK;
}

enum fr_status fr_unet_load(struct fr_ctx *c, const struct fr_checkpoint *ck, struct fr_unet **out,
                            struct fr_err *err) {
  *out = NULL;
  struct fr__usrc s = {.c = c, .err = err};
  if (ck->layout == FR_LAYOUT_DIFFUSERS) {
    if (!ck->unet)
      return fr_errf(err, FR_E_NOTFOUND, "%s: no unet/ weights in this diffusers folder", ck->path);
    s.w = (struct fr_wsrc){ck->unet, "", ck->lora, FR_LORA_UNET};
  } else if (ck->file && fr_st_find(ck->file, "model.diffusion_model.input_blocks.0.0.weight")) {
    s.w = (struct fr_wsrc){ck->file, "model.diffusion_model.", ck->lora, FR_LORA_UNET};
  } else if (ck->file) { /* a bare UNet file, SGM or diffusers keys */
    s.w = (struct fr_wsrc){ck->file, "", ck->lora, FR_LORA_UNET};
  } else {
    return fr_errf(err, FR_E_NOTFOUND, "%s: no UNet weights", ck->path);
  }
  enum fr_status rc = fr__unet_detect_layout(&s);
  if (rc)
    return rc;
  struct fr_unet *u = fr_calloc(1, sizeof *u);
  s.im = u ? fr__unet_impl_new() : NULL;
  if (!s.im) {
    fr_free(u);
    return fr_errf(err, FR_E_NOMEM, "out of memory loading the UNet of %s", ck->path);
  }
  u->impl = s.im;
  rc = fr__unet_detect(&s, &u->cfg);
  const struct fr_st_entry *e = NULL;
  if (!rc && !(e = fr__unet_find(&s, "out.2.weight")))
    rc = fr__shape_of(&s, "out.2.weight", &e);
  if (!rc) {
    u->cfg.out_channels = e->ndim == 4 ? (int)e->shape[0] : 0;
    rc = fr__unet_load_encoder(&s, &u->cfg);
  }
  if (!rc)
    rc = fr__load_decoder(&s, &u->cfg);
  if (rc) {
    fr_unet_free(u);
    return rc;
  }
  *out = u;
  return FR_OK;
}

void fr_unet_free(struct fr_unet *u) {
  if (!u)
    return;
  fr__unet_impl_free(u->impl);
  fr_free(u);
}

void fr_unet_control_free(struct fr_unet_control *ctl) {
  if (!ctl)
    return;
  for (int i = 0; i < ctl->n_down; i++)
    fr_tensor_free(ctl->down[i]);
  fr_tensor_free(ctl->mid);
  memset(ctl, 0, sizeof *ctl);
}
