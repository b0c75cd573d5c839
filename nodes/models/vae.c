/* AutoencoderKL (the SD / SDXL VAE) over the ops API. See vae.h for what it promises.
 *
 * Structure (diffusers' Encoder/Decoder, CompVis' ldm.modules.diffusionmodules.model):
 *   encoder: conv_in -> per level: num_res_blocks ResnetBlocks (+ Downsample: pad right/bottom by 1,
 *            3x3 conv stride 2, on all but the last level) -> mid (resnet, attention, resnet) ->
 *            GroupNorm+SiLU -> conv_out (2*z channels) -> quant_conv (1x1)
 *   decoder: post_quant_conv (1x1) -> conv_in -> mid -> per level from the deepest: num_res_blocks+1
 *            ResnetBlocks (+ nearest 2x upsample and 3x3 conv on all but level 0) -> GroupNorm+SiLU ->
 *            conv_out
 * ResnetBlock: x + conv2(silu(gn2(conv1(silu(gn1(x)))))) with a 1x1 shortcut when channels change.
 * Mid attention: single head over the H*W tokens, GroupNorm first, residual added. */
#include "nodes/models/vae.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/json.h"

#define FR__GROUPS 32
#define FR__EPS 1e-6f

/* ---- the mapping table: every parameter group in both spellings ----
 * Formats take (const char *side, int i, int j): side is "encoder" or "decoder". A NULL third column
 * means the older diffusers spelling is the same as the newer one. */
enum fr__vk {
  VK_CONV_IN,
  VK_NORM_OUT,
  VK_CONV_OUT,
  VK_QUANT,
  VK_POST_QUANT,
  VK_DOWN_RES,
  VK_DOWNSAMPLE,
  VK_UP_RES,
  VK_UPSAMPLE,
  VK_MID_RES,
  VK_ATTN_NORM,
  VK_ATTN_Q,
  VK_ATTN_K,
  VK_ATTN_V,
  VK_ATTN_OUT,
  VK_RES_SHORTCUT, /* a suffix under a resnet */
};

static const struct {
  const char *ldm, *diffusers, *diffusers_old;
  int ldm_mid_offset;   /* CompVis numbers mid resnets block_1, block_2 */
  bool diffusers_rev_i; /* diffusers numbers decoder up blocks from the deepest level */
} fr__vae_keys[] = {
    [VK_CONV_IN] = {"%s.conv_in", "%s.conv_in", NULL, 0, false},
    [VK_NORM_OUT] = {"%s.norm_out", "%s.conv_norm_out", NULL, 0, false},
    [VK_CONV_OUT] = {"%s.conv_out", "%s.conv_out", NULL, 0, false},
    [VK_QUANT] = {"quant_conv", "quant_conv", NULL, 0, false},
    [VK_POST_QUANT] = {"post_quant_conv", "post_quant_conv", NULL, 0, false},
    [VK_DOWN_RES] = {"%s.down.%d.block.%d", "%s.down_blocks.%d.resnets.%d", NULL, 0, false},
    [VK_DOWNSAMPLE] = {"%s.down.%d.downsample.conv", "%s.down_blocks.%d.downsamplers.0.conv", NULL, 0, false},
    [VK_UP_RES] = {"%s.up.%d.block.%d", "%s.up_blocks.%d.resnets.%d", NULL, 0, true},
    [VK_UPSAMPLE] = {"%s.up.%d.upsample.conv", "%s.up_blocks.%d.upsamplers.0.conv", NULL, 0, true},
    [VK_MID_RES] = {"%s.mid.block_%d", "%s.mid_block.resnets.%d", NULL, 1, false},
    [VK_ATTN_NORM] = {"%s.mid.attn_1.norm", "%s.mid_block.attentions.0.group_norm", NULL, 0, false},
    [VK_ATTN_Q] = {"%s.mid.attn_1.q", "%s.mid_block.attentions.0.to_q", "%s.mid_block.attentions.0.query", 0,
                   false},
    [VK_ATTN_K] = {"%s.mid.attn_1.k", "%s.mid_block.attentions.0.to_k", "%s.mid_block.attentions.0.key", 0,
                   false},
    [VK_ATTN_V] = {"%s.mid.attn_1.v", "%s.mid_block.attentions.0.to_v", "%s.mid_block.attentions.0.value", 0,
                   false},
    [VK_ATTN_OUT] = {"%s.mid.attn_1.proj_out", "%s.mid_block.attentions.0.to_out.0",
                     "%s.mid_block.attentions.0.proj_attn", 0, false},
    [VK_RES_SHORTCUT] = {"nin_shortcut", "conv_shortcut", NULL, 0, false},
};

enum fr__naming { FR__LDM, FR__DIFFUSERS, FR__DIFFUSERS_OLD };

struct fr__conv {
  struct fr_tensor *w, *b;
};
struct fr__res {
  struct fr__conv n1, c1, n2, c2, sc; /* norms reuse the pair; sc.w NULL when channels stay */
};
struct fr__attn {
  struct fr__conv n, q, k, v, o; /* q/k/v/o weights as [C, C] linear maps */
};
struct fr__mid {
  struct fr__res r1, r2;
  struct fr__attn a;
};

struct fr_vae {
  struct fr_vae_config cfg;
  /* encoder */
  struct fr__conv e_conv_in, e_down[FR_VAE_MAX_LEVELS], e_norm_out, e_conv_out, quant;
  struct fr__res e_res[FR_VAE_MAX_LEVELS][FR_VAE_MAX_RES];
  struct fr__mid e_mid;
  /* decoder */
  struct fr__conv post_quant, d_conv_in, d_up[FR_VAE_MAX_LEVELS], d_norm_out, d_conv_out;
  struct fr__res d_res[FR_VAE_MAX_LEVELS][FR_VAE_MAX_RES + 1];
  struct fr__mid d_mid;
  /* every loaded tensor, for fr_vae_free */
  struct fr_tensor **all;
  int n_all, cap_all;
};

/* Loader state: sticky status so the long list of loads reads as a list. */
struct fr__ld {
  struct fr_ctx *c;
  struct fr_wsrc w;
  enum fr__naming naming;
  struct fr_vae *vae;
  struct fr_err *err;
  enum fr_status rc;
};

/* Formats the base name (without .weight/.bias) of group k for indices i, j (CompVis meaning). */
static void fr__key(const struct fr__ld *L, char *buf, size_t n, enum fr__vk k, const char *side, int i,
                    int j) {
  const char *fmt = fr__vae_keys[k].ldm;
  int levels = L->vae->cfg.levels;
  if (L->naming != FR__LDM) {
    fmt = fr__vae_keys[k].diffusers;
    if (L->naming == FR__DIFFUSERS_OLD && fr__vae_keys[k].diffusers_old)
      fmt = fr__vae_keys[k].diffusers_old;
    if (fr__vae_keys[k].diffusers_rev_i)
      i = levels - 1 - i;
  } else {
    i += fr__vae_keys[k].ldm_mid_offset;
  }
  snprintf(buf, n, fmt, side, i, j);
}

static bool fr__has(const struct fr__ld *L, const char *base, const char *leaf) {
  char key[600]; /* base (< 512) + leaf */
  snprintf(key, sizeof key, "%s.%s", base, leaf);
  return fr_wsrc_has(&L->w, key);
}

static const struct fr_st_entry *fr__find(const struct fr__ld *L, const char *base, const char *leaf) {
  char key[600]; /* base (< 512) + leaf */
  snprintf(key, sizeof key, "%s.%s", base, leaf);
  return fr_wsrc_find(&L->w, key);
}

static void fr__keep(struct fr__ld *L, struct fr_tensor *t) {
  struct fr_vae *v = L->vae;
  if (v->n_all == v->cap_all) {
    int cap = v->cap_all ? v->cap_all * 2 : 256;
    struct fr_tensor **p = fr_realloc(v->all, (size_t)cap * sizeof *p);
    if (!p) {
      fr_tensor_free(t);
      L->rc = fr_errf(L->err, FR_E_NOMEM, "out of memory loading the VAE");
      return;
    }
    v->all = p, v->cap_all = cap;
  }
  v->all[v->n_all++] = t;
}

/* Loads base.weight with the given shape and base.bias [shape[0]] into *p. */
static void fr__load(struct fr__ld *L, const char *base, int ndim, const int64_t *shape, struct fr__conv *p) {
  if (L->rc)
    return;
  char key[600]; /* base (< 512) + leaf */
  snprintf(key, sizeof key, "%s.weight", base);
  L->rc = fr_wsrc_load(L->c, &L->w, key, ndim, shape, &p->w, L->err);
  if (L->rc)
    return;
  fr__keep(L, p->w);
  if (L->rc)
    return;
  snprintf(key, sizeof key, "%s.bias", base);
  L->rc = fr_wsrc_load(L->c, &L->w, key, 1, shape, &p->b, L->err);
  if (!L->rc)
    fr__keep(L, p->b);
}

static void fr__load_conv(struct fr__ld *L, const char *base, int64_t o, int64_t i, int k,
                          struct fr__conv *p) {
  fr__load(L, base, 4, (int64_t[]){o, i, k, k}, p);
}

static void fr__load_norm(struct fr__ld *L, const char *base, int64_t ch, struct fr__conv *p) {
  fr__load(L, base, 1, (int64_t[]){ch}, p);
}

static void fr__load_res(struct fr__ld *L, const char *base, int64_t cin, int64_t cout, struct fr__res *r) {
  char b[512];
  snprintf(b, sizeof b, "%s.norm1", base);
  fr__load_norm(L, b, cin, &r->n1);
  snprintf(b, sizeof b, "%s.conv1", base);
  fr__load_conv(L, b, cout, cin, 3, &r->c1);
  snprintf(b, sizeof b, "%s.norm2", base);
  fr__load_norm(L, b, cout, &r->n2);
  snprintf(b, sizeof b, "%s.conv2", base);
  fr__load_conv(L, b, cout, cout, 3, &r->c2);
  if (cin != cout) {
    snprintf(b, sizeof b, "%s.%s", base,
             L->naming == FR__LDM ? fr__vae_keys[VK_RES_SHORTCUT].ldm
                                  : fr__vae_keys[VK_RES_SHORTCUT].diffusers);
    fr__load_conv(L, b, cout, cin, 1, &r->sc);
  }
}

static void fr__load_mid(struct fr__ld *L, const char *side, int64_t ch, struct fr__mid *m) {
  char b[512];
  fr__key(L, b, sizeof b, VK_MID_RES, side, 0, 0);
  fr__load_res(L, b, ch, ch, &m->r1);
  fr__key(L, b, sizeof b, VK_MID_RES, side, 1, 0);
  fr__load_res(L, b, ch, ch, &m->r2);
  fr__key(L, b, sizeof b, VK_ATTN_NORM, side, 0, 0);
  fr__load_norm(L, b, ch, &m->a.n);
  static const enum fr__vk proj[4] = {VK_ATTN_Q, VK_ATTN_K, VK_ATTN_V, VK_ATTN_OUT};
  struct fr__conv *dst[4] = {&m->a.q, &m->a.k, &m->a.v, &m->a.o};
  for (int p = 0; p < 4; p++) {
    fr__key(L, b, sizeof b, proj[p], side, 0, 0);
    fr__load(L, b, 2, (int64_t[]){ch, ch}, dst[p]); /* [C, C, 1, 1] in single files is accepted */
  }
}

/* Detects the configuration from keys and shapes. */
static enum fr_status fr__detect(struct fr__ld *L) {
  struct fr_vae_config *cfg = &L->vae->cfg;
  char b[512];
  /* the decoder is required: it is what every pipeline uses */
  fr__key(L, b, sizeof b, VK_CONV_OUT, "decoder", 0, 0);
  const struct fr_st_entry *dout = fr__find(L, b, "weight");
  fr__key(L, b, sizeof b, VK_POST_QUANT, "decoder", 0, 0);
  const struct fr_st_entry *pq = fr__find(L, b, "weight");
  if (!dout || dout->ndim != 4 || !pq || pq->ndim != 4)
    return fr_errf(L->err, FR_E_NOTFOUND,
                   "%s: no VAE decoder found (tensor %sdecoder.conv_out.weight or "
                   "%spost_quant_conv.weight missing or not 4-D)",
                   L->w.st->path, L->w.prefix, L->w.prefix);
  cfg->out_channels = (int)dout->shape[0];
  cfg->ch = (int)dout->shape[1];
  cfg->z_channels = (int)pq->shape[0];
  /* Count levels first in a naming-independent way: diffusers up_blocks.N and CompVis up.N both run
   * 0..levels-1, so counting either works. */
  int levels = 0;
  for (; levels < FR_VAE_MAX_LEVELS + 1; levels++) {
    snprintf(b, sizeof b,
             L->naming == FR__LDM ? "decoder.up.%d.block.0.conv1" : "decoder.up_blocks.%d.resnets.0.conv1",
             levels);
    if (!fr__has(L, b, "weight"))
      break;
  }
  if (levels < 1 || levels > FR_VAE_MAX_LEVELS)
    return fr_errf(L->err, FR_E_UNSUPPORTED, "%s: VAE decoder has %d up blocks (1..%d supported)",
                   L->w.st->path, levels, FR_VAE_MAX_LEVELS);
  cfg->levels = levels;
  int nres = 0;
  for (; nres < FR_VAE_MAX_RES + 2; nres++) {
    fr__key(L, b, sizeof b, VK_UP_RES, "decoder", 0, nres);
    if (!fr__has(L, b, "conv1.weight"))
      break;
  }
  if (nres < 2 || nres > FR_VAE_MAX_RES + 1)
    return fr_errf(L->err, FR_E_UNSUPPORTED, "%s: VAE decoder level 0 has %d res blocks (2..%d supported)",
                   L->w.st->path, nres, FR_VAE_MAX_RES + 1);
  cfg->num_res_blocks = nres - 1;
  for (int i = 0; i < levels; i++) {
    fr__key(L, b, sizeof b, VK_UP_RES, "decoder", i, 0);
    const struct fr_st_entry *e = fr__find(L, b, "conv1.weight");
    if (!e || e->ndim != 4 || cfg->ch <= 0 || e->shape[0] % cfg->ch)
      return fr_errf(L->err, FR_E_SHAPE,
                     "%s: VAE decoder block %s: conv1 output channels are not a multiple of %d",
                     L->w.st->path, b, cfg->ch);
    cfg->mult[i] = (int)(e->shape[0] / cfg->ch);
  }
  fr__key(L, b, sizeof b, VK_CONV_IN, "encoder", 0, 0);
  const struct fr_st_entry *ein = fr__find(L, b, "weight");
  cfg->has_encoder = ein != NULL;
  cfg->in_channels = ein && ein->ndim == 4 ? (int)ein->shape[1] : 3;
  for (int i = 0; i < levels; i++)
    if (cfg->ch * cfg->mult[i] % FR__GROUPS)
      return fr_errf(L->err, FR_E_UNSUPPORTED, "%s: VAE channels %d not divisible into %d groups",
                     L->w.st->path, cfg->ch * cfg->mult[i], FR__GROUPS);
  return FR_OK;
}

static void fr__load_all(struct fr__ld *L) {
  const struct fr_vae_config *cfg = &L->vae->cfg;
  struct fr_vae *v = L->vae;
  char b[512];
  int top = cfg->ch * cfg->mult[cfg->levels - 1];
  int z = cfg->z_channels;
  if (cfg->has_encoder) {
    fr__key(L, b, sizeof b, VK_CONV_IN, "encoder", 0, 0);
    fr__load_conv(L, b, cfg->ch, cfg->in_channels, 3, &v->e_conv_in);
    int cin = cfg->ch;
    for (int i = 0; i < cfg->levels; i++) {
      int cout = cfg->ch * cfg->mult[i];
      for (int j = 0; j < cfg->num_res_blocks; j++) {
        fr__key(L, b, sizeof b, VK_DOWN_RES, "encoder", i, j);
        fr__load_res(L, b, cin, cout, &v->e_res[i][j]);
        cin = cout;
      }
      if (i != cfg->levels - 1) {
        fr__key(L, b, sizeof b, VK_DOWNSAMPLE, "encoder", i, 0);
        fr__load_conv(L, b, cout, cout, 3, &v->e_down[i]);
      }
    }
    fr__load_mid(L, "encoder", top, &v->e_mid);
    fr__key(L, b, sizeof b, VK_NORM_OUT, "encoder", 0, 0);
    fr__load_norm(L, b, top, &v->e_norm_out);
    fr__key(L, b, sizeof b, VK_CONV_OUT, "encoder", 0, 0);
    fr__load_conv(L, b, 2 * z, top, 3, &v->e_conv_out);
    fr__key(L, b, sizeof b, VK_QUANT, "", 0, 0);
    fr__load_conv(L, b, 2 * z, 2 * z, 1, &v->quant);
  }
  fr__key(L, b, sizeof b, VK_POST_QUANT, "", 0, 0);
  fr__load_conv(L, b, z, z, 1, &v->post_quant);
  fr__key(L, b, sizeof b, VK_CONV_IN, "decoder", 0, 0);
  fr__load_conv(L, b, top, z, 3, &v->d_conv_in);
  fr__load_mid(L, "decoder", top, &v->d_mid);
  int cin = top;
  for (int i = cfg->levels - 1; i >= 0; i--) {
    int cout = cfg->ch * cfg->mult[i];
    for (int j = 0; j <= cfg->num_res_blocks; j++) {
      fr__key(L, b, sizeof b, VK_UP_RES, "decoder", i, j);
      fr__load_res(L, b, cin, cout, &v->d_res[i][j]);
      cin = cout;
    }
    if (i != 0) {
      fr__key(L, b, sizeof b, VK_UPSAMPLE, "decoder", i, 0);
      fr__load_conv(L, b, cout, cout, 3, &v->d_up[i]);
    }
  }
  fr__key(L, b, sizeof b, VK_NORM_OUT, "decoder", 0, 0);
  fr__load_norm(L, b, cfg->ch * cfg->mult[0], &v->d_norm_out);
  fr__key(L, b, sizeof b, VK_CONV_OUT, "decoder", 0, 0);
  fr__load_conv(L, b, cfg->out_channels, cfg->ch * cfg->mult[0], 3, &v->d_conv_out);
}

enum fr_status fr_vae_load(struct fr_ctx *c, const struct fr_checkpoint *ck, struct fr_vae **out,
                           struct fr_err *err) {
  *out = NULL;
  struct fr__ld L = {.c = c, .err = err};
  if (ck->layout == FR_LAYOUT_DIFFUSERS) {
    if (!ck->vae)
      return fr_errf(err, FR_E_NOTFOUND, "%s: no vae/ weights in this diffusers folder", ck->path);
    L.w = (struct fr_wsrc){.st = ck->vae, .prefix = ""};
  } else {
    L.w = (struct fr_wsrc){.st = ck->file, .prefix = "first_stage_model."};
    /* a bare VAE file (sdxl_vae.safetensors, vae-ft-mse-840000) has the same keys without the prefix */
    if (!fr_wsrc_has(&L.w, "decoder.conv_in.weight"))
      L.w.prefix = "";
  }
  if (fr_wsrc_has(&L.w, "decoder.up.0.block.0.conv1.weight"))
    L.naming = FR__LDM;
  else if (fr_wsrc_has(&L.w, "decoder.up_blocks.0.resnets.0.conv1.weight"))
    L.naming =
        fr_wsrc_has(&L.w, "decoder.mid_block.attentions.0.query.weight") ? FR__DIFFUSERS_OLD : FR__DIFFUSERS;
  else
    return fr_errf(err, FR_E_NOTFOUND,
                   "%s: no VAE found (neither first_stage_model.decoder.* / decoder.up.N.block.M nor "
                   "decoder.up_blocks.N.resnets.M keys)",
                   L.w.st->path);
  L.vae = fr_calloc(1, sizeof *L.vae);
  if (!L.vae)
    return fr_errf(err, FR_E_NOMEM, "out of memory loading the VAE");
  L.rc = fr__detect(&L);
  if (!L.rc)
    fr__load_all(&L);
  if (L.rc) {
    fr_vae_free(L.vae);
    return L.rc;
  }
  *out = L.vae;
  return FR_OK;
}

void fr_vae_free(struct fr_vae *vae) {
  if (!vae)
    return;
  for (int i = 0; i < vae->n_all; i++)
    fr_tensor_free(vae->all[i]);
  fr_free(vae->all);
  fr_free(vae);
}

const struct fr_vae_config *fr_vae_config(const struct fr_vae *vae) {
  return &vae->cfg;
}

/* ---- forward ---- */

static struct fr_tensor *fr__resnet(struct fr_ctx *c, const struct fr__res *r, const struct fr_tensor *x) {
  struct fr_tensor *h = fr_group_norm(c, x, FR__GROUPS, r->n1.w, r->n1.b, FR__EPS, true); /* [B, Ci, H, W] */
  struct fr_tensor *t = fr_conv2d(c, h, r->c1.w, r->c1.b, 1, 1);                          /* [B, Co, H, W] */
  fr_tensor_free(h);
  h = fr_group_norm(c, t, FR__GROUPS, r->n2.w, r->n2.b, FR__EPS, true);
  fr_tensor_free(t);
  t = fr_conv2d(c, h, r->c2.w, r->c2.b, 1, 1);
  fr_tensor_free(h);
  if (r->sc.w) {
    struct fr_tensor *s = fr_conv2d(c, x, r->sc.w, r->sc.b, 1, 0); /* 1x1: [B, Co, H, W] */
    fr_add_inplace(c, t, s);
    fr_tensor_free(s);
  } else {
    fr_add_inplace(c, t, x);
  }
  return t;
}

static struct fr_tensor *fr__attn(struct fr_ctx *c, const struct fr__attn *a, const struct fr_tensor *x) {
  if (!x)
    return NULL;
  int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
  struct fr_tensor *h = fr_group_norm(c, x, FR__GROUPS, a->n.w, a->n.b, FR__EPS, false); /* [B, C, H, W] */
  struct fr_tensor *tok = fr_permute(c, h, (const int[]){0, 2, 3, 1});                   /* [B, H, W, C] */
  fr_tensor_free(h);
  if (tok)
    fr_tensor_reshape(tok, 3, (int64_t[]){B, H * W, C}); /* [B, HW, C] */
  struct fr_tensor *q = fr_linear(c, tok, a->q.w, a->q.b);
  struct fr_tensor *k = fr_linear(c, tok, a->k.w, a->k.b);
  struct fr_tensor *v = fr_linear(c, tok, a->v.w, a->v.b);
  fr_tensor_free(tok);
  struct fr_tensor *att = fr_attention(c, q, k, v, 1, false); /* [B, HW, C] */
  fr_tensor_free(q);
  fr_tensor_free(k);
  fr_tensor_free(v);
  struct fr_tensor *o = fr_linear(c, att, a->o.w, a->o.b);
  fr_tensor_free(att);
  if (o)
    fr_tensor_reshape(o, 4, (int64_t[]){B, H, W, C});
  struct fr_tensor *y = fr_permute(c, o, (const int[]){0, 3, 1, 2}); /* [B, C, H, W] */
  fr_tensor_free(o);
  fr_add_inplace(c, y, x);
  return y;
}

static struct fr_tensor *fr__mid(struct fr_ctx *c, const struct fr__mid *m, const struct fr_tensor *x) {
  struct fr_tensor *h = fr__resnet(c, &m->r1, x);
  struct fr_tensor *t = fr__attn(c, &m->a, h);
  fr_tensor_free(h);
  h = fr__resnet(c, &m->r2, t);
  fr_tensor_free(t);
  return h;
}

/* Takes ownership of x; returns the next tensor (x freed). */
static struct fr_tensor *fr__step(struct fr_tensor *x, struct fr_tensor *y) {
  fr_tensor_free(x);
  return y;
}

static enum fr_status fr__check_input(struct fr_ctx *c, const struct fr_tensor *x, int64_t ch, int64_t mult,
                                      const char *what, struct fr_err *err) {
  if (!x || x->ndim != 4 || x->shape[1] != ch || x->shape[2] % mult || x->shape[3] % mult ||
      x->shape[0] < 1 || x->shape[2] < 1 || x->shape[3] < 1) {
    char have[128] = "(null)";
    if (x)
      fr_shape_str(x, have, sizeof have);
    return fr_errf(err, FR_E_SHAPE, "VAE %s: expected [B, %lld, H, W]%s, got %s", what, (long long)ch,
                   mult > 1 ? " with H and W multiples of the downsampling factor" : "", have);
  }
  if (x->dtype != fr_ctx_dtype(c))
    return fr_errf(err, FR_E_INVALID, "VAE %s: dtype %s, the context computes in %s", what,
                   fr_dtype_name(x->dtype), fr_dtype_name(fr_ctx_dtype(c)));
  return FR_OK;
}

enum fr_status fr_vae_decode(struct fr_ctx *c, const struct fr_vae *vae, const struct fr_tensor *z,
                             struct fr_tensor **img, struct fr_err *err) {
  *img = NULL;
  const struct fr_vae_config *cfg = &vae->cfg;
  enum fr_status rc = fr__check_input(c, z, cfg->z_channels, 1, "decode input latent", err);
  if (rc)
    return rc;
  if (fr_ctx_failed(c))
    return fr_ctx_status(c, err);
  struct fr_tensor *h = fr_conv2d(c, z, vae->post_quant.w, vae->post_quant.b, 1, 0); /* [B, z, h, w] */
  h = fr__step(h, fr_conv2d(c, h, vae->d_conv_in.w, vae->d_conv_in.b, 1, 1));        /* [B, top, h, w] */
  h = fr__step(h, fr__mid(c, &vae->d_mid, h));
  for (int i = cfg->levels - 1; i >= 0; i--) {
    for (int j = 0; j <= cfg->num_res_blocks; j++)
      h = fr__step(h, fr__resnet(c, &vae->d_res[i][j], h)); /* [B, ch*mult[i], ., .] */
    if (i != 0) {
      h = fr__step(h, fr_upsample_nearest2x(c, h));
      h = fr__step(h, fr_conv2d(c, h, vae->d_up[i].w, vae->d_up[i].b, 1, 1));
    }
  }
  h = fr__step(h, fr_group_norm(c, h, FR__GROUPS, vae->d_norm_out.w, vae->d_norm_out.b, FR__EPS, true));
  h = fr__step(h, fr_conv2d(c, h, vae->d_conv_out.w, vae->d_conv_out.b, 1, 1)); /* [B, 3, 8h, 8w] */
  if (fr_ctx_failed(c) || !h) {
    fr_tensor_free(h);
    rc = fr_ctx_status(c, err);
    return fr_err_prefix(err, rc ? rc : FR_E_INTERNAL, "VAE decode: ");
  }
  *img = h;
  return FR_OK;
}

/* ---- decoding host latents: whole, tiled, and tiled as the fallback when the device is full ---- */

/* Whole decode of host z [B, C, h, w] -> new host F32 [B, 3, 8h, 8w]. The context is cleared on error
 * (the caller may retry in tiles). */
static enum fr_status fr__decode_host(struct fr_ctx *c, const struct fr_vae *vae, const struct fr_tensor *z,
                                      struct fr_tensor **out, struct fr_err *err) {
  *out = NULL;
  struct fr_tensor *dz = fr_ctx_upload(c, z), *img = NULL;
  enum fr_status rc = dz ? fr_vae_decode(c, vae, dz, &img, err) : fr_ctx_status(c, err);
  if (!rc && !(*out = fr_ctx_download(c, img)))
    rc = fr_ctx_status(c, err);
  fr_tensor_free(dz);
  fr_tensor_free(img);
  if (!rc && !*out)
    rc = fr_errf(err, FR_E_NOMEM, "VAE decode: out of memory");
  if (rc)
    fr_ctx_clear(c);
  return rc;
}

/* Blend weight of tile pixel p (of n along one axis) whose tile starts at a shared edge when lo and ends
 * at one when hi: ramps 1/(ov+1) ... ov/(ov+1) across an overlap of ov pixels, 1 elsewhere, so the
 * weights of two overlapping tiles sum to 1 at every pixel of the overlap. */
static float fr__ramp(int64_t p, int64_t n, int64_t ov, bool lo, bool hi) {
  float w = 1.0f;
  if (lo && p < ov)
    w = (float)(p + 1) / (float)(ov + 1);
  if (hi && p >= n - ov)
    w = fminf(w, (float)(n - p) / (float)(ov + 1));
  return w;
}

enum fr_status fr_vae_decode_tiled(struct fr_ctx *c, const struct fr_vae *vae, const struct fr_tensor *z,
                                   int tile, int overlap, struct fr_tensor **out, struct fr_err *err) {
  *out = NULL;
  if (!z || z->ndim != 4 || z->dtype != FR_F32 || z->dev != FR_DEV_CPU) {
    char s[96] = "(null)";
    if (z)
      fr_shape_str(z, s, sizeof s);
    return fr_errf(err, FR_E_INVALID, "VAE tiled decode: latents %s: expected a host F32 [B, C, h, w]", s);
  }
  if (tile < 1 || overlap < 0 || overlap >= tile)
    return fr_errf(err, FR_E_INVALID,
                   "VAE tiled decode: tile %d, overlap %d: need tile >= 1, 0 <= overlap < tile", tile,
                   overlap);
  int64_t B = z->shape[0], C = z->shape[1], h = z->shape[2], w = z->shape[3];
  if (h <= tile && w <= tile) /* one tile covers it: exactly the whole decode */
    return fr__decode_host(c, vae, z, out, err);
  int64_t f = (int64_t)1 << (vae->cfg.levels - 1); /* 8: pixels per latent */
  int64_t H = h * f, W = w * f, OV = overlap * f, stride = tile - overlap;
  struct fr_tensor *acc = fr_tensor_f32(4, (int64_t[]){B, 3, H, W}); /* sum of weight x tile */
  float *wsum = fr_calloc((size_t)(H * W), sizeof(float));
  enum fr_status rc = acc && wsum ? FR_OK : fr_errf(err, FR_E_NOMEM, "VAE tiled decode: out of memory");
  if (acc)
    memset(acc->data, 0, fr_tensor_nbytes(acc));
  for (int64_t y0 = 0; !rc && y0 < h; y0 += stride) {
    int64_t th = y0 + tile > h ? h - y0 : tile;
    for (int64_t x0 = 0; !rc && x0 < w; x0 += stride) {
      int64_t tw = x0 + tile > w ? w - x0 : tile;
      struct fr_tensor *zt = fr_tensor_f32(4, (int64_t[]){B, C, th, tw}), *it = NULL; /* the tile's latents */
      if (!zt) {
        rc = fr_errf(err, FR_E_NOMEM, "VAE tiled decode: out of memory");
        break;
      }
      for (int64_t bc = 0; bc < B * C; bc++)
        for (int64_t y = 0; y < th; y++)
          memcpy((float *)zt->data + (bc * th + y) * tw, (const float *)z->data + (bc * h + y0 + y) * w + x0,
                 (size_t)tw * sizeof(float));
      rc = fr__decode_host(c, vae, zt, &it, err); /* [B, 3, th*f, tw*f] */
      fr_tensor_free(zt);
      if (rc)
        break;
      int64_t PH = th * f, PW = tw * f;
      for (int64_t y = 0; y < PH; y++) {
        float wy = fr__ramp(y, PH, OV, y0 > 0, y0 + th < h); /* ramps only on edges shared with a tile */
        for (int64_t x = 0; x < PW; x++) {
          float wt = wy * fr__ramp(x, PW, OV, x0 > 0, x0 + tw < w);
          int64_t gy = y0 * f + y, gx = x0 * f + x;
          wsum[gy * W + gx] += wt;
          for (int64_t bc = 0; bc < B * 3; bc++)
            ((float *)acc->data)[(bc * H + gy) * W + gx] +=
                wt * ((const float *)it->data)[(bc * PH + y) * PW + x];
        }
      }
      fr_tensor_free(it);
      if (x0 + tw >= w)
        break;
    }
    if (y0 + th >= h)
      break;
  }
  if (!rc)
    for (int64_t bc = 0; bc < B * 3; bc++)
      for (int64_t p = 0; p < H * W; p++)
        ((float *)acc->data)[bc * H * W + p] /= wsum[p];
  fr_free(wsum);
  if (rc) {
    fr_tensor_free(acc);
    return fr_err_prefix(err, rc, "VAE tiled decode (%d-latent tiles): ", tile);
  }
  *out = acc;
  return FR_OK;
}

enum fr_status fr_vae_decode_host(struct fr_ctx *c, const struct fr_vae *vae, const struct fr_tensor *z,
                                  int tile, struct fr_tensor **out, int *used_tile, struct fr_err *err) {
  *out = NULL;
  *used_tile = 0;
  if (!z || z->ndim != 4 || z->dtype != FR_F32 || z->dev != FR_DEV_CPU) {
    char s[96] = "(null)";
    if (z)
      fr_shape_str(z, s, sizeof s);
    return fr_errf(err, FR_E_INVALID, "VAE decode: latents %s: expected a host F32 [B, C, h, w]", s);
  }
  int64_t side = z->shape[2] > z->shape[3] ? z->shape[2] : z->shape[3];
  if (tile > 0 && side <= tile)
    tile = 0; /* one tile covers it */
  enum fr_status rc = tile > 0 ? fr_vae_decode_tiled(c, vae, z, tile, tile / 4, out, err)
                               : fr__decode_host(c, vae, z, out, err);
  /* Out of device memory: smaller tiles (ComfyUI's fallback is 64-latent tiles overlapping by 16),
   * halving while tiles still split the image. */
  static const int fallback[] = {FR_VAE_FALLBACK_TILE, FR_VAE_FALLBACK_TILE / 2, FR_VAE_FALLBACK_TILE / 4};
  for (size_t i = 0; rc == FR_E_NOMEM && i < sizeof fallback / sizeof fallback[0]; i++) {
    if (fallback[i] >= side || (tile > 0 && fallback[i] >= tile))
      continue;
    tile = fallback[i];
    rc = fr_vae_decode_tiled(c, vae, z, tile, tile / 4, out, err);
  }
  if (!rc)
    *used_tile = tile;
  return rc;
}

enum fr_status fr_vae_encode(struct fr_ctx *c, const struct fr_vae *vae, const struct fr_tensor *img,
                             struct fr_tensor **mean, struct fr_tensor **logvar, struct fr_err *err) {
  *mean = *logvar = NULL;
  const struct fr_vae_config *cfg = &vae->cfg;
  if (!cfg->has_encoder)
    return fr_errf(err, FR_E_UNSUPPORTED, "VAE encode: this checkpoint has no VAE encoder weights");
  int64_t factor = (int64_t)1 << (cfg->levels - 1);
  enum fr_status rc = fr__check_input(c, img, cfg->in_channels, factor, "encode input image", err);
  if (rc)
    return rc;
  if (fr_ctx_failed(c))
    return fr_ctx_status(c, err);
  struct fr_tensor *h = fr_conv2d(c, img, vae->e_conv_in.w, vae->e_conv_in.b, 1, 1); /* [B, ch, H, W] */
  for (int i = 0; i < cfg->levels; i++) {
    for (int j = 0; j < cfg->num_res_blocks; j++)
      h = fr__step(h, fr__resnet(c, &vae->e_res[i][j], h));
    if (i != cfg->levels - 1) {
      /* diffusers' Downsample2D(padding=0): pad right and bottom by one, then a stride-2 3x3 conv */
      h = fr__step(h, fr_pad2d(c, h, 0, 1, 0, 1, 0.0f));
      h = fr__step(h, fr_conv2d(c, h, vae->e_down[i].w, vae->e_down[i].b, 2, 0));
    }
  }
  h = fr__step(h, fr__mid(c, &vae->e_mid, h));
  h = fr__step(h, fr_group_norm(c, h, FR__GROUPS, vae->e_norm_out.w, vae->e_norm_out.b, FR__EPS, true));
  h = fr__step(h, fr_conv2d(c, h, vae->e_conv_out.w, vae->e_conv_out.b, 1, 1)); /* [B, 2z, h, w] */
  h = fr__step(h, fr_conv2d(c, h, vae->quant.w, vae->quant.b, 1, 0));
  struct fr_tensor *m = fr_slice(c, h, 1, 0, cfg->z_channels);
  struct fr_tensor *lv = fr_slice(c, h, 1, cfg->z_channels, cfg->z_channels);
  fr_tensor_free(h);
  /* clamp logvar to [-30, 20] on the host: a tiny tensor, and no clamp op is needed for it */
  struct fr_tensor *host = fr_ctx_download(c, lv);
  fr_tensor_free(lv);
  lv = NULL;
  if (host) {
    float *p = host->data;
    for (int64_t n = fr_tensor_numel(host), i = 0; i < n; i++)
      p[i] = p[i] < -30.0f ? -30.0f : p[i] > 20.0f ? 20.0f : p[i];
    lv = fr_ctx_upload(c, host);
    fr_tensor_free(host);
  }
  if (fr_ctx_failed(c) || !m || !lv) {
    fr_tensor_free(m);
    fr_tensor_free(lv);
    rc = fr_ctx_status(c, err);
    return fr_err_prefix(err, rc ? rc : FR_E_NOMEM, "VAE encode: ");
  }
  *mean = m;
  *logvar = lv;
  return FR_OK;
}

float fr_vae_scaling_factor(const struct fr_checkpoint *ck) {
  if (ck->layout == FR_LAYOUT_DIFFUSERS) {
    if (!ck->vae_config)
      return 0.0f;
    struct fr_arena *a = fr_arena_new(0);
    struct fr_json *j = NULL;
    float f = 0.0f;
    if (a && fr_json_parse(a, ck->vae_config, strlen(ck->vae_config), 0, &j, NULL) == FR_OK)
      f = (float)fr_json_num(j, "scaling_factor", 0.0);
    fr_arena_free(a);
    return f;
  }
  const struct fr_safetensors *st = ck->file;
  if (!st)
    return 0.0f;
  for (int i = 0; i < st->n; i++) {
    const char *k = st->entries[i].name;
    if (strncmp(k, "conditioner.embedders.", 22) == 0)
      return 0.13025f;
    if (strncmp(k, "cond_stage_model.", 17) == 0)
      return 0.18215f;
  }
  return 0.0f;
}

/* ---- FLOP count ---- */

static double fr__conv_flops(double cin, double cout, double k, double h, double w) {
  return 2.0 * cin * cout * k * k * h * w;
}

static double fr__res_flops(double cin, double cout, double h, double w) {
  double f = fr__conv_flops(cin, cout, 3, h, w) + fr__conv_flops(cout, cout, 3, h, w);
  if (cin != cout)
    f += fr__conv_flops(cin, cout, 1, h, w);
  return f;
}

double fr_vae_decode_flops(const struct fr_vae_config *cfg, int h, int w) {
  double top = (double)cfg->ch * cfg->mult[cfg->levels - 1], z = cfg->z_channels;
  double H = h, W = w, T = H * W;
  double f = fr__conv_flops(z, z, 1, H, W) + fr__conv_flops(z, top, 3, H, W);
  /* mid: two resnets, attention (4 projections + QK^T + AV) */
  f += 2 * fr__res_flops(top, top, H, W) + 4 * 2.0 * T * top * top + 2 * 2.0 * T * T * top;
  double cin = top;
  for (int i = cfg->levels - 1; i >= 0; i--) {
    double cout = (double)cfg->ch * cfg->mult[i];
    for (int j = 0; j <= cfg->num_res_blocks; j++) {
      f += fr__res_flops(cin, cout, H, W);
      cin = cout;
    }
    if (i != 0) {
      H *= 2, W *= 2;
      f += fr__conv_flops(cout, cout, 3, H, W);
    }
  }
  f += fr__conv_flops(cin, cfg->out_channels, 3, H, W);
  return f;
}
