/* The UNet forward pass over the ops API (shared encoder with the ControlNet). Every op returns a new
 * tensor and errors are sticky in the context, so blocks chain ops, free what they no longer need at
 * once (peak memory is the weights plus a few activations and the skip connections) and check the
 * context at the end. */
#include <string.h>

#include "nodes/models/unet_impl.h"

#define FR__GROUPS 32
#define FR__RES_EPS 1e-5f /* ResBlock and output GroupNorm (diffusers norm_eps, ldm GroupNorm32) */
#define FR__XF_EPS 1e-6f  /* the transformer's input GroupNorm (Transformer2DModel, ldm Normalize) */
#define FR__LN_EPS 1e-5f  /* LayerNorms of the transformer blocks */

/* Reshape that tolerates a NULL tensor (an earlier op failed). */
static struct fr_tensor *fr__reshape(struct fr_ctx *c, struct fr_tensor *t, int ndim, const int64_t *shape) {
  if (t && !fr_tensor_reshape(t, ndim, shape)) {
    fr_ctx_fail(c, FR_E_INTERNAL, "UNet: reshape of %lld elements failed", (long long)fr_tensor_numel(t));
    fr_tensor_free(t);
    return NULL;
  }
  return t;
}

/* ResBlock. x [B, Cin, H, W], emb = SiLU(embedding) [B or 1, E] -> [B, Cout, H, W] */
static struct fr_tensor *fr__res(struct fr_ctx *c, const struct fr__ures *r, const struct fr_tensor *x,
                                 const struct fr_tensor *emb) {
  struct fr_tensor *g = fr_group_norm(c, x, FR__GROUPS, r->n1w, r->n1b, FR__RES_EPS, true);
  struct fr_tensor *h = fr_conv2d(c, g, r->c1w, r->c1b, 1, 1); /* [B, Cout, H, W] */
  fr_tensor_free(g);
  struct fr_tensor *e = fr_linear(c, emb, r->ew, r->eb); /* [B, Cout] */
  if (e)
    e = fr__reshape(c, e, 4, (const int64_t[]){e->shape[0], e->shape[1], 1, 1});
  fr_add_inplace(c, h, e);
  fr_tensor_free(e);
  g = fr_group_norm(c, h, FR__GROUPS, r->n2w, r->n2b, FR__RES_EPS, true);
  fr_tensor_free(h);
  h = fr_conv2d(c, g, r->c2w, r->c2b, 1, 1);
  fr_tensor_free(g);
  if (r->skw) {
    struct fr_tensor *s = fr_conv2d(c, x, r->skw, r->skb, 1, 0);
    fr_add_inplace(c, h, s);
    fr_tensor_free(s);
  } else {
    fr_add_inplace(c, h, x);
  }
  if (fr_ctx_failed(c)) {
    fr_tensor_free(h);
    return NULL;
  }
  return h;
}

/* Attention: x [B, T, C], src [B, S, Csrc] (x itself for self-attention) -> [B, T, C] */
static struct fr_tensor *fr__attn(struct fr_ctx *c, const struct fr__uattn *a, const struct fr_tensor *x,
                                  const struct fr_tensor *src, int heads) {
  struct fr_tensor *q = fr_linear(c, x, a->q, NULL);
  struct fr_tensor *k = fr_linear(c, src, a->k, NULL);
  struct fr_tensor *v = fr_linear(c, src, a->v, NULL);
  struct fr_tensor *o = fr_attention(c, q, k, v, heads, false);
  fr_tensor_free(q);
  fr_tensor_free(k);
  fr_tensor_free(v);
  struct fr_tensor *y = fr_linear(c, o, a->o, a->ob);
  fr_tensor_free(o);
  return y;
}

/* SpatialTransformer. x [B, C, H, W], context [B, S, D] -> [B, C, H, W] */
static struct fr_tensor *fr__xf(struct fr_ctx *c, const struct fr__uxf *xf, const struct fr_tensor *x,
                                const struct fr_tensor *context) {
  if (!x) /* an earlier op failed; the context holds the error */
    return NULL;
  int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
  struct fr_tensor *g = fr_group_norm(c, x, FR__GROUPS, xf->nw, xf->nb, FR__XF_EPS, false);
  struct fr_tensor *p = fr_permute(c, g, (const int[]){0, 2, 3, 1}); /* [B, H, W, C] */
  fr_tensor_free(g);
  p = fr__reshape(c, p, 3, (const int64_t[]){B, H * W, C});
  struct fr_tensor *h = fr_linear(c, p, xf->piw, xf->pib); /* [B, HW, C] */
  fr_tensor_free(p);
  for (int i = 0; i < xf->depth && h; i++) {
    const struct fr__utblock *t = &xf->blk[i];
    struct fr_tensor *n = fr_layer_norm(c, h, t->n1w, t->n1b, FR__LN_EPS);
    struct fr_tensor *a = fr__attn(c, &t->a1, n, n, xf->heads);
    fr_tensor_free(n);
    fr_add_inplace(c, h, a);
    fr_tensor_free(a);
    n = fr_layer_norm(c, h, t->n2w, t->n2b, FR__LN_EPS);
    a = fr__attn(c, &t->a2, n, context, xf->heads);
    fr_tensor_free(n);
    fr_add_inplace(c, h, a);
    fr_tensor_free(a);
    n = fr_layer_norm(c, h, t->n3w, t->n3b, FR__LN_EPS);
    struct fr_tensor *f = fr_linear(c, n, t->ff0w, t->ff0b); /* [B, HW, 2 * inner] */
    fr_tensor_free(n);
    struct fr_tensor *gg = fr_geglu(c, f); /* [B, HW, inner] */
    fr_tensor_free(f);
    f = fr_linear(c, gg, t->ff2w, t->ff2b);
    fr_tensor_free(gg);
    fr_add_inplace(c, h, f);
    fr_tensor_free(f);
    if (fr_ctx_failed(c)) {
      fr_tensor_free(h);
      h = NULL;
    }
  }
  struct fr_tensor *o = fr_linear(c, h, xf->pow, xf->pob);
  fr_tensor_free(h);
  o = fr__reshape(c, o, 4, (const int64_t[]){B, H, W, C});
  struct fr_tensor *r = fr_permute(c, o, (const int[]){0, 3, 1, 2}); /* [B, C, H, W] */
  fr_tensor_free(o);
  fr_add_inplace(c, r, x);
  if (fr_ctx_failed(c)) {
    fr_tensor_free(r);
    return NULL;
  }
  return r;
}

/* True for a host F32 tensor: timesteps and time ids given that way are embedded from their fp32 values
 * (fr_timestep_embedding_f32), never rounded to the compute dtype first (BF16 holds 999 as 1000). On the
 * CPU a host F32 tensor is also a context tensor; both paths give the same bits there. */
static bool fr__host_f32(const struct fr_tensor *t) {
  return t->dev == FR_DEV_CPU && t->dtype == FR_F32 && t->data;
}

/* The added-conditioning vector y [B, adm_in_channels]: given, or text_embeds ++ embed(time_ids). */
static struct fr_tensor *fr__adm_input(struct fr_ctx *c, const struct fr_unet_config *cfg,
                                       const struct fr_unet_cond *cond) {
  int adm = cfg->adm_in_channels;
  if (cond && cond->y) {
    if (cond->y->ndim != 2 || cond->y->shape[1] != adm) {
      char s[64];
      fr_ctx_fail(c, FR_E_SHAPE, "added conditioning y is %s, expected [B, %d]",
                  fr_shape_str(cond->y, s, sizeof s), adm);
      return NULL;
    }
    return fr_copy(c, cond->y);
  }
  if (!cond || !cond->text_embeds || !cond->time_ids) {
    fr_ctx_fail(c, FR_E_INVALID, "this model (SDXL-type, label_emb input %d) needs text_embeds and time_ids",
                adm);
    return NULL;
  }
  const struct fr_tensor *te = cond->text_embeds, *ti = cond->time_ids;
  if (te->ndim != 2 || ti->ndim != 2 || te->shape[0] != ti->shape[0] || ti->shape[1] < 1) {
    char a[64], b[64];
    fr_ctx_fail(c, FR_E_SHAPE, "text_embeds %s and time_ids %s must be [B, P] and [B, N]",
                fr_shape_str(te, a, sizeof a), fr_shape_str(ti, b, sizeof b));
    return NULL;
  }
  int64_t B = ti->shape[0], N = ti->shape[1], P = te->shape[1];
  int64_t D = (adm - P) / N;
  if (P >= adm || (adm - P) % N || D % 2) {
    fr_ctx_fail(c, FR_E_SHAPE,
                "text_embeds width %lld and %lld time ids do not fit label_emb's input %d "
                "(text_embeds + ids x even embedding width)",
                (long long)P, (long long)N, adm);
    return NULL;
  }
  struct fr_tensor *e = NULL; /* [B*N, D] */
  if (fr__host_f32(ti)) {
    e = fr_timestep_embedding_f32(c, ti->data, B * N, (int)D, true, 0.0f, 10000.0f);
  } else {
    struct fr_tensor *ids = fr_copy(c, ti);
    ids = fr__reshape(c, ids, 1, (const int64_t[]){B * N});
    e = fr_timestep_embedding(c, ids, (int)D, true, 0.0f, 10000.0f);
    fr_tensor_free(ids);
  }
  e = fr__reshape(c, e, 2, (const int64_t[]){B, N * D});
  const struct fr_tensor *parts[2] = {te, e};
  struct fr_tensor *y = e ? fr_concat(c, parts, 2, 1) : NULL; /* [B, P + N*D] */
  fr_tensor_free(e);
  return y;
}

struct fr_tensor *fr_unet_added_cond(struct fr_ctx *c, const struct fr_unet *u,
                                     const struct fr_unet_cond *cond) {
  if (fr_ctx_failed(c))
    return NULL;
  if (u->cfg.adm_in_channels <= 0) {
    fr_ctx_fail(c, FR_E_INVALID, "UNet: this model has no added conditioning");
    return NULL;
  }
  return fr__adm_input(c, &u->cfg, cond);
}

enum fr_status fr__unet_check_t(const char *who, const struct fr_unet_config *cfg, const struct fr_tensor *t,
                                const struct fr_unet_cond *cond, int64_t B, struct fr_err *err) {
  char s[64];
  const struct fr_tensor *ts = cond ? cond->t_sin : NULL;
  if (ts &&
      (ts->ndim != 2 || (ts->shape[0] != 1 && ts->shape[0] != B) || ts->shape[1] != cfg->model_channels))
    return fr_errf(err, FR_E_SHAPE, "%s: t_sin is %s, expected [%lld, %d] or [1, %d]", who,
                   fr_shape_str(ts, s, sizeof s), (long long)B, cfg->model_channels, cfg->model_channels);
  if (!ts && (!t || t->ndim != 1 || (t->shape[0] != 1 && t->shape[0] != B)))
    return fr_errf(err, FR_E_SHAPE, "%s: t is %s, expected [%lld] or [1]", who,
                   t ? fr_shape_str(t, s, sizeof s) : "missing", (long long)B);
  return FR_OK;
}

struct fr_tensor *fr__unet_embed(struct fr_ctx *c, const struct fr_unet_impl *im,
                                 const struct fr_unet_config *cfg, const struct fr_tensor *t,
                                 const struct fr_unet_cond *cond) {
  const struct fr_tensor *ts = cond ? cond->t_sin : NULL; /* given: [N, model_channels] */
  struct fr_tensor *te =                                  /* [N, model_channels] */
      ts ? NULL
      : fr__host_f32(t)
          ? fr_timestep_embedding_f32(c, t->data, t->shape[0], cfg->model_channels, true, 0.0f, 10000.0f)
          : fr_timestep_embedding(c, t, cfg->model_channels, true, 0.0f, 10000.0f);
  struct fr_tensor *h = fr_linear(c, ts ? ts : te, im->te0w, im->te0b);
  fr_tensor_free(te);
  struct fr_tensor *s = fr_silu(c, h);
  fr_tensor_free(h);
  struct fr_tensor *emb = fr_linear(c, s, im->te2w, im->te2b); /* [N, E] */
  fr_tensor_free(s);
  if (im->le0w && emb) {
    struct fr_tensor *y = fr__adm_input(c, cfg, cond);
    h = fr_linear(c, y, im->le0w, im->le0b);
    fr_tensor_free(y);
    s = fr_silu(c, h);
    fr_tensor_free(h);
    h = fr_linear(c, s, im->le2w, im->le2b); /* [B, E] */
    fr_tensor_free(s);
    struct fr_tensor *sum = fr_add(c, emb, h); /* t may be [1]: broadcast */
    fr_tensor_free(h);
    fr_tensor_free(emb);
    emb = sum;
  }
  s = fr_silu(c, emb);
  fr_tensor_free(emb);
  return s;
}

void fr__unet_encode(struct fr_ctx *c, const struct fr_unet_impl *im, const struct fr_unet_config *cfg,
                     const struct fr_tensor *x, const struct fr_tensor *emb, const struct fr_tensor *context,
                     const struct fr_tensor *hint, struct fr_tensor **hs, struct fr_tensor **mid) {
  int k = 0;
  *mid = NULL;
  struct fr_tensor *h = fr_conv2d(c, x, im->cinw, im->cinb, 1, 1); /* [B, mc, H, W] */
  if (hint)
    fr_add_inplace(c, h, hint);
  hs[k++] = h;
  for (int n = 1; n < im->n_in; n++) {
    const struct fr__ublock *b = &im->in[n];
    if (b->sw) {
      h = fr_conv2d(c, h, b->sw, b->sb, 2, 1); /* Downsample: [B, C, H/2, W/2] */
    } else {
      h = fr__res(c, b->res, h, emb);
      if (b->xf) {
        struct fr_tensor *a = fr__xf(c, b->xf, h, context);
        fr_tensor_free(h);
        h = a;
      }
    }
    hs[k++] = h;
  }
  h = fr__res(c, im->mres0, h, emb);
  if (im->mxf) {
    struct fr_tensor *a = fr__xf(c, im->mxf, h, context);
    fr_tensor_free(h);
    h = a;
  }
  struct fr_tensor *m = fr__res(c, im->mres1, h, emb);
  fr_tensor_free(h);
  if (fr_ctx_failed(c)) {
    fr_tensor_free(m);
    for (int i = 0; i < k; i++) {
      fr_tensor_free(hs[i]);
      hs[i] = NULL;
    }
    return;
  }
  (void)cfg;
  *mid = m;
}

/* Checks the caller's tensors before any op runs, so a bad input is a clear message, not an op error. */
static enum fr_status fr__check_inputs(struct fr_ctx *c, const struct fr_unet *u, const struct fr_tensor *x,
                                       const struct fr_tensor *t, const struct fr_unet_cond *cond,
                                       const struct fr_unet_control *control) {
  const struct fr_unet_config *cfg = &u->cfg;
  char s[64];
  int64_t mult = (int64_t)1 << (cfg->levels - 1);
  if (!x || x->ndim != 4 || x->shape[1] != cfg->in_channels || x->shape[2] % mult || x->shape[3] % mult)
    return fr_ctx_fail(c, FR_E_SHAPE, "UNet: x is %s, expected [B, %d, h, w] with h, w multiples of %lld",
                       x ? fr_shape_str(x, s, sizeof s) : "missing", cfg->in_channels, (long long)mult);
  int64_t B = x->shape[0];
  struct fr_err te;
  if (fr__unet_check_t("UNet", cfg, t, cond, B, &te))
    return fr_ctx_fail(c, FR_E_SHAPE, "%s", te.msg);
  const struct fr_tensor *ctx = cond ? cond->context : NULL;
  bool needs_ctx = cfg->mid_depth > 0;
  for (int l = 0; l < cfg->levels; l++)
    needs_ctx = needs_ctx || cfg->depth[l] > 0;
  if (needs_ctx && (!ctx || ctx->ndim != 3 || ctx->shape[0] != B || ctx->shape[2] != cfg->context_dim))
    return fr_ctx_fail(c, FR_E_SHAPE, "UNet: context is %s, expected [%lld, T, %d]",
                       ctx ? fr_shape_str(ctx, s, sizeof s) : "missing", (long long)B, cfg->context_dim);
  if (control && control->n_down != fr_unet_num_skips(cfg))
    return fr_ctx_fail(c, FR_E_SHAPE, "UNet: %d ControlNet down residuals, this UNet has %d skip connections",
                       control->n_down, fr_unet_num_skips(cfg));
  return FR_OK;
}

enum fr_status fr_unet_forward(struct fr_ctx *c, const struct fr_unet *u, const struct fr_tensor *x,
                               const struct fr_tensor *t, const struct fr_unet_cond *cond,
                               const struct fr_unet_control *control, struct fr_tensor **eps,
                               struct fr_err *err) {
  *eps = NULL;
  if (fr_ctx_failed(c))
    return fr_ctx_status(c, err);
  const struct fr_unet_config *cfg = &u->cfg;
  const struct fr_unet_impl *im = u->impl;
  if (fr__check_inputs(c, u, x, t, cond, control))
    return fr_ctx_status(c, err);
  const struct fr_tensor *context = cond ? cond->context : NULL;
  struct fr_tensor *emb = fr__unet_embed(c, im, cfg, t, cond); /* [B or 1, E] */
  struct fr_tensor *hs[FR_UNET_MAX_SKIPS] = {0}, *h = NULL;
  if (emb)
    fr__unet_encode(c, im, cfg, x, emb, context, NULL, hs, &h);
  int k = h ? fr_unet_num_skips(cfg) : 0;
  if (h && control) { /* diffusers: residuals added to every skip and to the middle block's output */
    for (int i = 0; i < k; i++)
      fr_add_inplace(c, hs[i], control->down[i]);
    if (control->mid)
      fr_add_inplace(c, h, control->mid);
  }
  for (int n = 0; n < im->n_out && h; n++) {
    const struct fr__ublock *b = &im->out[n];
    const struct fr_tensor *parts[2] = {h, hs[--k]};
    struct fr_tensor *cat = fr_concat(c, parts, 2, 1); /* [B, C + Cskip, H, W] */
    fr_tensor_free(h);
    fr_tensor_free(hs[k]);
    hs[k] = NULL;
    h = fr__res(c, b->res, cat, emb);
    fr_tensor_free(cat);
    if (b->xf) {
      struct fr_tensor *a = fr__xf(c, b->xf, h, context);
      fr_tensor_free(h);
      h = a;
    }
    if (b->sw) {
      struct fr_tensor *up = fr_upsample_nearest2x(c, h); /* [B, C, 2H, 2W] */
      fr_tensor_free(h);
      h = fr_conv2d(c, up, b->sw, b->sb, 1, 1);
      fr_tensor_free(up);
    }
  }
  for (int i = 0; i < k; i++)
    fr_tensor_free(hs[i]);
  fr_tensor_free(emb);
  struct fr_tensor *g = fr_group_norm(c, h, FR__GROUPS, im->onw, im->onb, FR__RES_EPS, true);
  fr_tensor_free(h);
  struct fr_tensor *out = fr_conv2d(c, g, im->ocw, im->ocb, 1, 1); /* [B, out_channels, H, W] */
  fr_tensor_free(g);
  if (fr_ctx_failed(c) || !out) {
    fr_tensor_free(out);
    enum fr_status rc = fr_ctx_status(c, err);
    return fr_err_prefix(err, rc ? rc : FR_E_INTERNAL, "UNet forward: ");
  }
  *eps = out;
  return FR_OK;
}
