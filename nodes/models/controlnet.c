/* ControlNet: hint network + the UNet encoder (shared code, unet.c) + zero convs. */
#include "nodes/models/controlnet.h"

#include <stdio.h>
#include <string.h>

#include "nodes/models/unet_impl.h"

/* File key of hint conv i (of n): original input_hint_block.{2i} (SiLUs sit at the odd indices);
 * diffusers conv_in, blocks.{i-1}, conv_out. */
static void fr__hint_key(bool diffusers, int i, int n, const char *what, char *out, size_t len) {
  if (!diffusers)
    snprintf(out, len, "input_hint_block.%d.%s", 2 * i, what);
  else if (i == 0)
    snprintf(out, len, "controlnet_cond_embedding.conv_in.%s", what);
  else if (i == n - 1)
    snprintf(out, len, "controlnet_cond_embedding.conv_out.%s", what);
  else
    snprintf(out, len, "controlnet_cond_embedding.blocks.%d.%s", i - 1, what);
}

static enum fr_status fr__cn_load(struct fr__usrc *s, const char *key, int ndim, const int64_t *shape,
                                  struct fr_tensor **out) {
  return fr_wsrc_load(s->c, &s->w, key, ndim, shape, out, s->err);
}

static enum fr_status fr__load_hint(struct fr__usrc *s, struct fr_controlnet *cn) {
  int n = 0;
  char key[160];
  /* count the convs: the original numbering has no gaps at even indices; diffusers' blocks are 0.. */
  if (!s->diffusers) {
    for (;;) {
      snprintf(key, sizeof key, "input_hint_block.%d.weight", 2 * n);
      if (!fr_wsrc_has(&s->w, key))
        break;
      n++;
    }
  } else {
    snprintf(key, sizeof key, "controlnet_cond_embedding.conv_in.weight");
    if (fr_wsrc_has(&s->w, key)) {
      n = 1;
      for (;;) {
        snprintf(key, sizeof key, "controlnet_cond_embedding.blocks.%d.weight", n - 1);
        if (!fr_wsrc_has(&s->w, key))
          break;
        n++;
      }
      n++; /* conv_out */
    }
  }
  if (n < 2 || n > FR_CONTROLNET_MAX_HINT) {
    fr__hint_key(s->diffusers, n < 2 ? 0 : n, n, "weight", key, sizeof key);
    return fr_errf(s->err, FR_E_NOTFOUND, "tensor %s%s: missing from %s (ControlNet hint network)",
                   s->w.prefix, key, s->w.st->path);
  }
  cn->n_hint = n;
  cn->hint_downscale = 1;
  int64_t prev = -1;
  for (int i = 0; i < n; i++) {
    bool last = i == n - 1;
    /* stride 2 on every second conv of the middle part: (c,c) s1 then (c,c') s2, three times */
    cn->hstride[i] = (!last && i > 0 && i % 2 == 0) ? 2 : 1;
    cn->hint_downscale *= cn->hstride[i];
    int64_t o = last ? cn->cfg.model_channels : -1;
    enum fr_status rc;
    fr__hint_key(s->diffusers, i, n, "weight", key, sizeof key);
    if ((rc = fr__cn_load(s, key, 4, (const int64_t[]){o, prev, 3, 3}, &cn->hw[i])))
      return rc;
    o = cn->hw[i]->shape[0];
    if (i == 0)
      cn->hint_channels = (int)cn->hw[i]->shape[1];
    fr__hint_key(s->diffusers, i, n, "bias", key, sizeof key);
    if ((rc = fr__cn_load(s, key, 1, (const int64_t[]){o}, &cn->hb[i])))
      return rc;
    prev = o;
  }
  return FR_OK;
}

static enum fr_status fr__load_zero(struct fr__usrc *s, struct fr_controlnet *cn) {
  int ch[FR_UNET_MAX_SKIPS];
  int ns = fr__unet_skip_channels(&cn->cfg, ch);
  char key[128];
  enum fr_status rc;
  for (int i = 0; i < ns; i++) {
    int64_t C = ch[i];
    snprintf(key, sizeof key, s->diffusers ? "controlnet_down_blocks.%d.weight" : "zero_convs.%d.0.weight",
             i);
    if ((rc = fr__cn_load(s, key, 4, (const int64_t[]){C, C, 1, 1}, &cn->zw[i])))
      return rc;
    snprintf(key, sizeof key, s->diffusers ? "controlnet_down_blocks.%d.bias" : "zero_convs.%d.0.bias", i);
    if ((rc = fr__cn_load(s, key, 1, (const int64_t[]){C}, &cn->zb[i])))
      return rc;
  }
  int64_t C = cn->cfg.channels[cn->cfg.levels - 1];
  if ((rc = fr__cn_load(s, s->diffusers ? "controlnet_mid_block.weight" : "middle_block_out.0.weight", 4,
                        (const int64_t[]){C, C, 1, 1}, &cn->mw)) ||
      (rc = fr__cn_load(s, s->diffusers ? "controlnet_mid_block.bias" : "middle_block_out.0.bias", 1,
                        (const int64_t[]){C}, &cn->mb)))
    return rc;
  return FR_OK;
}

enum fr_status fr_controlnet_load(struct fr_ctx *c, const struct fr_checkpoint *ck,
                                  struct fr_controlnet **out, struct fr_err *err) {
  *out = NULL;
  struct fr__usrc s = {.c = c, .err = err};
  const struct fr_safetensors *st = ck->controlnet ? ck->controlnet : ck->file;
  if (!st)
    return fr_errf(err, FR_E_NOTFOUND, "%s: no ControlNet weights", ck->path);
  if (fr_st_find(st, "control_model.input_blocks.0.0.weight"))
    s.w = (struct fr_wsrc){.st = st, .prefix = "control_model."};
  else
    s.w = (struct fr_wsrc){.st = st, .prefix = ""};
  enum fr_status rc = fr__unet_detect_layout(&s);
  if (rc)
    return fr_err_prefix(err, rc, "ControlNet: ");
  struct fr_controlnet *cn = fr_calloc(1, sizeof *cn);
  s.im = cn ? fr__unet_impl_new() : NULL;
  if (!s.im) {
    fr_free(cn);
    return fr_errf(err, FR_E_NOMEM, "out of memory loading the ControlNet of %s", ck->path);
  }
  cn->impl = s.im;
  rc = fr__unet_detect(&s, &cn->cfg);
  if (!rc)
    rc = fr__unet_load_encoder(&s, &cn->cfg);
  if (!rc)
    rc = fr__load_hint(&s, cn);
  if (!rc)
    rc = fr__load_zero(&s, cn);
  if (rc) {
    fr_controlnet_free(cn);
    return rc;
  }
  *out = cn;
  return FR_OK;
}

void fr_controlnet_free(struct fr_controlnet *cn) {
  if (!cn)
    return;
  fr__unet_impl_free(cn->impl);
  for (int i = 0; i < FR_CONTROLNET_MAX_HINT; i++) {
    fr_tensor_free(cn->hw[i]);
    fr_tensor_free(cn->hb[i]);
  }
  for (int i = 0; i < FR_UNET_MAX_SKIPS; i++) {
    fr_tensor_free(cn->zw[i]);
    fr_tensor_free(cn->zb[i]);
  }
  fr_tensor_free(cn->mw);
  fr_tensor_free(cn->mb);
  fr_free(cn);
}

/* hint [B, 3, 8h, 8w] -> [B, model_channels, h, w]: conv+SiLU ..., last conv without activation. */
static struct fr_tensor *fr__hint(struct fr_ctx *c, const struct fr_controlnet *cn,
                                  const struct fr_tensor *hint) {
  struct fr_tensor *h = NULL;
  for (int i = 0; i < cn->n_hint; i++) {
    struct fr_tensor *y = fr_conv2d(c, i ? h : hint, cn->hw[i], cn->hb[i], cn->hstride[i], 1);
    fr_tensor_free(h);
    h = y;
    if (i < cn->n_hint - 1) {
      y = fr_silu(c, h);
      fr_tensor_free(h);
      h = y;
    }
  }
  return h;
}

enum fr_status fr_controlnet_forward(struct fr_ctx *c, const struct fr_controlnet *cn,
                                     const struct fr_tensor *x, const struct fr_tensor *t,
                                     const struct fr_unet_cond *cond, const struct fr_tensor *hint,
                                     float scale, struct fr_unet_control *out, struct fr_err *err) {
  memset(out, 0, sizeof *out);
  if (fr_ctx_failed(c))
    return fr_ctx_status(c, err);
  const struct fr_unet_config *cfg = &cn->cfg;
  char s1[64], s2[64];
  int64_t mult = (int64_t)1 << (cfg->levels - 1);
  if (!x || x->ndim != 4 || x->shape[1] != cfg->in_channels || x->shape[2] % mult || x->shape[3] % mult)
    return fr_errf(err, FR_E_SHAPE, "ControlNet: x is %s, expected [B, %d, h, w] with h, w multiples of %lld",
                   x ? fr_shape_str(x, s1, sizeof s1) : "missing", cfg->in_channels, (long long)mult);
  int64_t B = x->shape[0], d = cn->hint_downscale;
  if (!hint || hint->ndim != 4 || hint->shape[0] != B || hint->shape[1] != cn->hint_channels ||
      hint->shape[2] != x->shape[2] * d || hint->shape[3] != x->shape[3] * d)
    return fr_errf(err, FR_E_SHAPE,
                   "ControlNet: hint image is %s, expected [%lld, %d, %lld, %lld] (%lldx the latent %s)",
                   hint ? fr_shape_str(hint, s1, sizeof s1) : "missing", (long long)B, cn->hint_channels,
                   (long long)(x->shape[2] * d), (long long)(x->shape[3] * d), (long long)d,
                   fr_shape_str(x, s2, sizeof s2));
  if (fr__unet_check_t("ControlNet", cfg, t, cond, B, err))
    return FR_E_SHAPE;
  const struct fr_tensor *context = cond ? cond->context : NULL;
  if (!context || context->ndim != 3 || context->shape[0] != B || context->shape[2] != cfg->context_dim)
    return fr_errf(err, FR_E_SHAPE, "ControlNet: context is %s, expected [%lld, T, %d]",
                   context ? fr_shape_str(context, s1, sizeof s1) : "missing", (long long)B,
                   cfg->context_dim);

  struct fr_tensor *emb = fr__unet_embed(c, cn->impl, cfg, t, cond);
  struct fr_tensor *g = emb ? fr__hint(c, cn, hint) : NULL; /* [B, mc, h, w] */
  struct fr_tensor *hs[FR_UNET_MAX_SKIPS] = {0}, *mid = NULL;
  if (g)
    fr__unet_encode(c, cn->impl, cfg, x, emb, context, g, hs, &mid);
  fr_tensor_free(g);
  fr_tensor_free(emb);
  int ns = mid ? fr_unet_num_skips(cfg) : 0;
  for (int i = 0; i < ns; i++) {
    struct fr_tensor *r = fr_conv2d(c, hs[i], cn->zw[i], cn->zb[i], 1, 0);
    fr_tensor_free(hs[i]);
    if (r && scale != 1.0f) {
      struct fr_tensor *sr = fr_affine(c, r, scale, 0.0f);
      fr_tensor_free(r);
      r = sr;
    }
    out->down[i] = r;
  }
  out->n_down = ns;
  if (mid) {
    struct fr_tensor *r = fr_conv2d(c, mid, cn->mw, cn->mb, 1, 0);
    fr_tensor_free(mid);
    if (r && scale != 1.0f) {
      struct fr_tensor *sr = fr_affine(c, r, scale, 0.0f);
      fr_tensor_free(r);
      r = sr;
    }
    out->mid = r;
  }
  if (fr_ctx_failed(c) || !out->mid) {
    fr_unet_control_free(out);
    enum fr_status rc = fr_ctx_status(c, err);
    return fr_err_prefix(err, rc ? rc : FR_E_INTERNAL, "ControlNet forward: ");
  }
  return FR_OK;
}
