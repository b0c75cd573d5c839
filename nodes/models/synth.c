/* Synthetic full-size checkpoints: key lists from architecture tables, streamed random data.
 * See synth.h for what it promises. */
#include "nodes/models/synth.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"

/* ---- the real architectures ---- */

enum fr_status fr_synth_arch(const char *name, struct fr_synth_arch *out, struct fr_err *err) {
  memset(out, 0, sizeof *out);
  /* CLIP ViT-L/14 text tower (SD1.5's encoder, SDXL's first) and OpenCLIP ViT-bigG/14 (SDXL's second,
   * the refiner's only one) */
  const struct fr_synth_clip clip_l = {.hf = true,
                                       .vocab = 49408,
                                       .width = 768,
                                       .layers = 12,
                                       .ff = 3072,
                                       .positions = 77,
                                       .position_ids = true};
  const struct fr_synth_clip clip_g = {
      .hf = false, .vocab = 49408, .width = 1280, .layers = 32, .ff = 5120, .positions = 77, .proj = 1280};
  const struct fr_synth_vae vae = {.ch = 128, .levels = 4, .mult = {1, 2, 4, 4}, .nres = 2, .z = 4};
  /* v1-inference.yaml: model_channels 320, attention_resolutions [4, 2, 1], channel_mult [1, 2, 4, 4],
   * num_heads 8, transformer depth 1, context_dim 768 */
  const struct fr_synth_unet sd15 = {.ch = 320,
                                     .levels = 4,
                                     .mult = {1, 2, 4, 4},
                                     .nres = 2,
                                     .depth = {1, 1, 1, 0},
                                     .depth_mid = 1,
                                     .ctx_dim = 768,
                                     .in_ch = 4,
                                     .out_ch = 4,
                                     .heads = 8,
                                     .hint_ch = {16, 32, 96, 256}};
  if (strcmp(name, "sd15") == 0) {
    *out = (struct fr_synth_arch){.name = "sd15",
                                  .has_unet = true,
                                  .has_vae = true,
                                  .unet = sd15,
                                  .vae = vae,
                                  .n_clip = 1,
                                  .ldm_extras = true};
    out->clip[0] = clip_l;
    out->clip[0].prefix = "cond_stage_model.transformer.text_model.";
  } else if (strcmp(name, "sdxl") == 0) {
    /* sd_xl_base.yaml: model_channels 320, channel_mult [1, 2, 4], attention_resolutions [4, 2],
     * transformer_depth [1, 2, 10] (level 0 has no attention), num_head_channels 64, context_dim 2048,
     * adm_in_channels 2816, use_linear_in_transformer */
    *out = (struct fr_synth_arch){.name = "sdxl", .has_unet = true, .has_vae = true, .vae = vae, .n_clip = 2};
    out->unet = (struct fr_synth_unet){.ch = 320,
                                       .levels = 3,
                                       .mult = {1, 2, 4},
                                       .nres = 2,
                                       .depth = {0, 2, 10},
                                       .depth_mid = 10,
                                       .ctx_dim = 2048,
                                       .linear_proj = true,
                                       .adm_in = 2816,
                                       .in_ch = 4,
                                       .out_ch = 4,
                                       .head_dim = 64};
    out->clip[0] = clip_l;
    out->clip[0].prefix = "conditioner.embedders.0.transformer.text_model.";
    out->clip[1] = clip_g;
    out->clip[1].logit_scale = true;
    out->clip[1].prefix = "conditioner.embedders.1.model.";
  } else if (strcmp(name, "sdxl-refiner") == 0) {
    /* sd_xl_refiner.yaml: model_channels 384, channel_mult [1, 2, 4, 4], attention_resolutions [4, 2],
     * transformer_depth 4, num_head_channels 64, context_dim 1280, adm_in_channels 2560 */
    *out = (struct fr_synth_arch){
        .name = "sdxl-refiner", .has_unet = true, .has_vae = true, .vae = vae, .n_clip = 1};
    out->unet = (struct fr_synth_unet){.ch = 384,
                                       .levels = 4,
                                       .mult = {1, 2, 4, 4},
                                       .nres = 2,
                                       .depth = {0, 4, 4, 0},
                                       .depth_mid = 4,
                                       .ctx_dim = 1280,
                                       .linear_proj = true,
                                       .adm_in = 2560,
                                       .in_ch = 4,
                                       .out_ch = 4,
                                       .head_dim = 64};
    out->clip[0] = clip_g;
    out->clip[0].prefix = "conditioner.embedders.0.model.";
  } else if (strcmp(name, "controlnet-sd15") == 0) {
    *out = (struct fr_synth_arch){.name = "controlnet-sd15", .has_unet = true, .unet = sd15};
    out->unet.controlnet = true;
  } else {
    return fr_errf(err, FR_E_INVALID,
                   "unknown architecture '%s' (expected sd15, sdxl, sdxl-refiner or "
                   "controlnet-sd15)",
                   name);
  }
  return FR_OK;
}

/* ---- key list builder ---- */

struct fr__b {
  struct fr_synth_list *l;
  enum fr_status rc;
  struct fr_err *err;
};

static struct fr_synth_tensor *fr__add(struct fr__b *b, enum fr_synth_init init, int ndim,
                                       const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static struct fr_synth_tensor *fr__add(struct fr__b *b, enum fr_synth_init init, int ndim,
                                       const int64_t *shape, const char *fmt, ...) {
  if (b->rc)
    return NULL;
  struct fr_synth_list *l = b->l;
  if (l->n == l->cap) {
    int cap = l->cap ? l->cap * 2 : 1024;
    struct fr_synth_tensor *t = fr_realloc(l->t, (size_t)cap * sizeof *t);
    if (!t) {
      b->rc = fr_errf(b->err, FR_E_NOMEM, "out of memory building a key list");
      return NULL;
    }
    l->t = t, l->cap = cap;
  }
  char name[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  struct fr_synth_tensor *t = &l->t[l->n];
  memset(t, 0, sizeof *t);
  t->name = fr_arena_strdup(l->names, name);
  if (!t->name) {
    b->rc = fr_errf(b->err, FR_E_NOMEM, "out of memory building a key list");
    return NULL;
  }
  t->dtype = FR_F32;
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++)
    t->shape[i] = shape[i];
  t->init = init;
  l->n++;
  return t;
}

/* base.weight [o, i] (+ base.bias [o]) */
static void fr__lin(struct fr__b *b, const char *base, int64_t o, int64_t i, bool bias) {
  fr__add(b, FR_SYNTH_RANDOM, 2, (int64_t[]){o, i}, "%s.weight", base);
  if (bias)
    fr__add(b, FR_SYNTH_RANDOM, 1, (int64_t[]){o}, "%s.bias", base);
}

static void fr__conv(struct fr__b *b, const char *base, int64_t o, int64_t i, int k) {
  fr__add(b, FR_SYNTH_RANDOM, 4, (int64_t[]){o, i, k, k}, "%s.weight", base);
  fr__add(b, FR_SYNTH_RANDOM, 1, (int64_t[]){o}, "%s.bias", base);
}

/* GroupNorm/LayerNorm: gain 1, shift 0 so activations keep their scale */
static void fr__norm(struct fr__b *b, const char *base, int64_t c) {
  fr__add(b, FR_SYNTH_ONES, 1, (int64_t[]){c}, "%s.weight", base);
  fr__add(b, FR_SYNTH_ZEROS, 1, (int64_t[]){c}, "%s.bias", base);
}

#define FR__NAME(buf, ...) snprintf(buf, sizeof buf, __VA_ARGS__)

/* openaimodel.ResBlock */
static void fr__unet_res(struct fr__b *b, const char *base, int cin, int cout, int tdim) {
  char n[512];
  FR__NAME(n, "%s.in_layers.0", base);
  fr__norm(b, n, cin);
  FR__NAME(n, "%s.in_layers.2", base);
  fr__conv(b, n, cout, cin, 3);
  FR__NAME(n, "%s.emb_layers.1", base);
  fr__lin(b, n, cout, tdim, true);
  FR__NAME(n, "%s.out_layers.0", base);
  fr__norm(b, n, cout);
  FR__NAME(n, "%s.out_layers.3", base);
  fr__conv(b, n, cout, cout, 3);
  if (cin != cout) {
    FR__NAME(n, "%s.skip_connection", base);
    fr__conv(b, n, cout, cin, 1);
  }
}

/* attention.SpatialTransformer */
static void fr__unet_st(struct fr__b *b, const struct fr_synth_unet *u, const char *base, int c, int depth) {
  char n[512];
  FR__NAME(n, "%s.norm", base);
  fr__norm(b, n, c);
  FR__NAME(n, "%s.proj_in", base);
  if (u->linear_proj)
    fr__lin(b, n, c, c, true);
  else
    fr__conv(b, n, c, c, 1);
  for (int d = 0; d < depth; d++) {
    char tb[256];
    FR__NAME(tb, "%s.transformer_blocks.%d", base, d);
    for (int a = 1; a <= 2; a++) {
      int kv = a == 1 ? c : u->ctx_dim;
      FR__NAME(n, "%s.attn%d.to_q", tb, a);
      fr__lin(b, n, c, c, false);
      FR__NAME(n, "%s.attn%d.to_k", tb, a);
      fr__lin(b, n, c, kv, false);
      FR__NAME(n, "%s.attn%d.to_v", tb, a);
      fr__lin(b, n, c, kv, false);
      FR__NAME(n, "%s.attn%d.to_out.0", tb, a);
      fr__lin(b, n, c, c, true);
    }
    FR__NAME(n, "%s.ff.net.0.proj", tb); /* GEGLU: 2 x 4c */
    fr__lin(b, n, 8 * (int64_t)c, c, true);
    FR__NAME(n, "%s.ff.net.2", tb);
    fr__lin(b, n, c, 4 * (int64_t)c, true);
    for (int k = 1; k <= 3; k++) {
      FR__NAME(n, "%s.norm%d", tb, k);
      fr__norm(b, n, c);
    }
  }
  FR__NAME(n, "%s.proj_out", base);
  if (u->linear_proj)
    fr__lin(b, n, c, c, true);
  else
    fr__conv(b, n, c, c, 1);
}

static void fr__unet(struct fr__b *b, const struct fr_synth_unet *u) {
  const char *P = u->controlnet ? "control_model." : "model.diffusion_model.";
  int tdim = 4 * u->ch;
  char n[512];
  FR__NAME(n, "%stime_embed.0", P);
  fr__lin(b, n, tdim, u->ch, true);
  FR__NAME(n, "%stime_embed.2", P);
  fr__lin(b, n, tdim, tdim, true);
  if (u->adm_in) {
    FR__NAME(n, "%slabel_emb.0.0", P);
    fr__lin(b, n, tdim, u->adm_in, true);
    FR__NAME(n, "%slabel_emb.0.2", P);
    fr__lin(b, n, tdim, tdim, true);
  }
  if (u->controlnet) { /* the hint encoder: 8 convs, three of them stride 2, the last to model_channels */
    const int *h = u->hint_ch;
    const int io[8][2] = {{3, h[0]},    {h[0], h[0]}, {h[0], h[1]}, {h[1], h[1]},
                          {h[1], h[2]}, {h[2], h[2]}, {h[2], h[3]}, {h[3], u->ch}};
    for (int i = 0; i < 8; i++) {
      FR__NAME(n, "%sinput_hint_block.%d", P, 2 * i);
      fr__conv(b, n, io[i][1], io[i][0], 3);
    }
  }
  int chans[32], nch = 0, blk = 0, cur = u->ch;
  FR__NAME(n, "%sinput_blocks.0.0", P);
  fr__conv(b, n, u->ch, u->in_ch, 3);
  chans[nch++] = cur;
  blk = 1;
  for (int l = 0; l < u->levels; l++) {
    int c = u->ch * u->mult[l];
    for (int j = 0; j < u->nres; j++, blk++) {
      FR__NAME(n, "%sinput_blocks.%d.0", P, blk);
      fr__unet_res(b, n, cur, c, tdim);
      cur = c;
      if (u->depth[l]) {
        FR__NAME(n, "%sinput_blocks.%d.1", P, blk);
        fr__unet_st(b, u, n, c, u->depth[l]);
      }
      chans[nch++] = cur;
    }
    if (l != u->levels - 1) {
      FR__NAME(n, "%sinput_blocks.%d.0.op", P, blk);
      fr__conv(b, n, cur, cur, 3);
      chans[nch++] = cur;
      blk++;
    }
  }
  FR__NAME(n, "%smiddle_block.0", P);
  fr__unet_res(b, n, cur, cur, tdim);
  FR__NAME(n, "%smiddle_block.1", P);
  fr__unet_st(b, u, n, cur, u->depth_mid);
  FR__NAME(n, "%smiddle_block.2", P);
  fr__unet_res(b, n, cur, cur, tdim);
  if (u->controlnet) { /* one zero conv per input block, and one after the middle block */
    for (int i = 0; i < nch; i++) {
      FR__NAME(n, "%szero_convs.%d.0", P, i);
      fr__conv(b, n, chans[i], chans[i], 1);
    }
    FR__NAME(n, "%smiddle_block_out.0", P);
    fr__conv(b, n, cur, cur, 1);
    return;
  }
  blk = 0;
  for (int l = u->levels - 1; l >= 0; l--) {
    int c = u->ch * u->mult[l];
    for (int j = 0; j <= u->nres; j++, blk++) {
      int skip = chans[--nch];
      FR__NAME(n, "%soutput_blocks.%d.0", P, blk);
      fr__unet_res(b, n, cur + skip, c, tdim);
      cur = c;
      int sub = 1;
      if (u->depth[l]) {
        FR__NAME(n, "%soutput_blocks.%d.1", P, blk);
        fr__unet_st(b, u, n, c, u->depth[l]);
        sub = 2;
      }
      if (l != 0 && j == u->nres) {
        FR__NAME(n, "%soutput_blocks.%d.%d.conv", P, blk, sub);
        fr__conv(b, n, c, c, 3);
      }
    }
  }
  FR__NAME(n, "%sout.0", P);
  fr__norm(b, n, u->ch);
  FR__NAME(n, "%sout.2", P);
  fr__conv(b, n, u->out_ch, u->ch, 3);
}

/* ldm.modules.diffusionmodules.model.ResnetBlock */
static void fr__vae_res(struct fr__b *b, const char *base, int cin, int cout) {
  char n[512];
  FR__NAME(n, "%s.norm1", base);
  fr__norm(b, n, cin);
  FR__NAME(n, "%s.conv1", base);
  fr__conv(b, n, cout, cin, 3);
  FR__NAME(n, "%s.norm2", base);
  fr__norm(b, n, cout);
  FR__NAME(n, "%s.conv2", base);
  fr__conv(b, n, cout, cout, 3);
  if (cin != cout) {
    FR__NAME(n, "%s.nin_shortcut", base);
    fr__conv(b, n, cout, cin, 1);
  }
}

static void fr__vae_mid(struct fr__b *b, const char *side, int c) {
  char n[512];
  FR__NAME(n, "first_stage_model.%s.mid.block_1", side);
  fr__vae_res(b, n, c, c);
  FR__NAME(n, "first_stage_model.%s.mid.attn_1.norm", side);
  fr__norm(b, n, c);
  static const char *const proj[] = {"q", "k", "v", "proj_out"};
  for (int i = 0; i < 4; i++) {
    FR__NAME(n, "first_stage_model.%s.mid.attn_1.%s", side, proj[i]);
    fr__conv(b, n, c, c, 1); /* single files store them as 1x1 convolutions */
  }
  FR__NAME(n, "first_stage_model.%s.mid.block_2", side);
  fr__vae_res(b, n, c, c);
}

static void fr__vae(struct fr__b *b, const struct fr_synth_vae *v) {
  char n[512];
  int top = v->ch * v->mult[v->levels - 1];
  fr__conv(b, "first_stage_model.encoder.conv_in", v->ch, 3, 3);
  int cur = v->ch;
  for (int l = 0; l < v->levels; l++) {
    int c = v->ch * v->mult[l];
    for (int j = 0; j < v->nres; j++) {
      FR__NAME(n, "first_stage_model.encoder.down.%d.block.%d", l, j);
      fr__vae_res(b, n, cur, c);
      cur = c;
    }
    if (l != v->levels - 1) {
      FR__NAME(n, "first_stage_model.encoder.down.%d.downsample.conv", l);
      fr__conv(b, n, c, c, 3);
    }
  }
  fr__vae_mid(b, "encoder", top);
  fr__norm(b, "first_stage_model.encoder.norm_out", top);
  fr__conv(b, "first_stage_model.encoder.conv_out", 2 * v->z, top, 3);
  fr__conv(b, "first_stage_model.decoder.conv_in", top, v->z, 3);
  fr__vae_mid(b, "decoder", top);
  cur = top;
  for (int l = v->levels - 1; l >= 0; l--) {
    int c = v->ch * v->mult[l];
    for (int j = 0; j <= v->nres; j++) {
      FR__NAME(n, "first_stage_model.decoder.up.%d.block.%d", l, j);
      fr__vae_res(b, n, cur, c);
      cur = c;
    }
    if (l != 0) {
      FR__NAME(n, "first_stage_model.decoder.up.%d.upsample.conv", l);
      fr__conv(b, n, c, c, 3);
    }
  }
  fr__norm(b, "first_stage_model.decoder.norm_out", v->ch * v->mult[0]);
  fr__conv(b, "first_stage_model.decoder.conv_out", 3, v->ch * v->mult[0], 3);
  fr__conv(b, "first_stage_model.quant_conv", 2 * v->z, 2 * v->z, 1);
  fr__conv(b, "first_stage_model.post_quant_conv", v->z, v->z, 1);
}

static void fr__clip(struct fr__b *b, const struct fr_synth_clip *c) {
  const char *P = c->prefix;
  char n[512];
  int64_t W = c->width;
  if (c->hf) {
    fr__add(b, FR_SYNTH_RANDOM, 2, (int64_t[]){c->vocab, W}, "%sembeddings.token_embedding.weight", P);
    fr__add(b, FR_SYNTH_RANDOM, 2, (int64_t[]){c->positions, W}, "%sembeddings.position_embedding.weight", P);
    if (c->position_ids) {
      struct fr_synth_tensor *t =
          fr__add(b, FR_SYNTH_ARANGE, 2, (int64_t[]){1, c->positions}, "%sembeddings.position_ids", P);
      if (t)
        t->dtype = FR_I64, t->fixed_dtype = true;
    }
    static const char *const proj[] = {"k_proj", "v_proj", "q_proj", "out_proj"};
    for (int i = 0; i < c->layers; i++) {
      for (int p = 0; p < 4; p++) {
        FR__NAME(n, "%sencoder.layers.%d.self_attn.%s", P, i, proj[p]);
        fr__lin(b, n, W, W, true);
      }
      FR__NAME(n, "%sencoder.layers.%d.layer_norm1", P, i);
      fr__norm(b, n, W);
      FR__NAME(n, "%sencoder.layers.%d.mlp.fc1", P, i);
      fr__lin(b, n, c->ff, W, true);
      FR__NAME(n, "%sencoder.layers.%d.mlp.fc2", P, i);
      fr__lin(b, n, W, c->ff, true);
      FR__NAME(n, "%sencoder.layers.%d.layer_norm2", P, i);
      fr__norm(b, n, W);
    }
    FR__NAME(n, "%sfinal_layer_norm", P);
    fr__norm(b, n, W);
    return;
  }
  fr__add(b, FR_SYNTH_RANDOM, 2, (int64_t[]){c->positions, W}, "%spositional_embedding", P);
  fr__add(b, FR_SYNTH_RANDOM, 2, (int64_t[]){c->vocab, W}, "%stoken_embedding.weight", P);
  for (int i = 0; i < c->layers; i++) {
    FR__NAME(n, "%stransformer.resblocks.%d.ln_1", P, i);
    fr__norm(b, n, W);
    fr__add(b, FR_SYNTH_RANDOM, 2, (int64_t[]){3 * W, W}, "%stransformer.resblocks.%d.attn.in_proj_weight", P,
            i);
    fr__add(b, FR_SYNTH_RANDOM, 1, (int64_t[]){3 * W}, "%stransformer.resblocks.%d.attn.in_proj_bias", P, i);
    FR__NAME(n, "%stransformer.resblocks.%d.attn.out_proj", P, i);
    fr__lin(b, n, W, W, true);
    FR__NAME(n, "%stransformer.resblocks.%d.ln_2", P, i);
    fr__norm(b, n, W);
    FR__NAME(n, "%stransformer.resblocks.%d.mlp.c_fc", P, i);
    fr__lin(b, n, c->ff, W, true);
    FR__NAME(n, "%stransformer.resblocks.%d.mlp.c_proj", P, i);
    fr__lin(b, n, W, c->ff, true);
  }
  FR__NAME(n, "%sln_final", P);
  fr__norm(b, n, W);
  fr__add(b, FR_SYNTH_RANDOM, 2, (int64_t[]){W, c->proj}, "%stext_projection", P); /* x @ text_projection */
  if (c->logit_scale) {
    struct fr_synth_tensor *t = fr__add(b, FR_SYNTH_CONST, 0, NULL, "%slogit_scale", P);
    if (t)
      t->fixed_dtype = true, t->value = log(100.0); /* CLIP's trained value, exp() = 100 */
  }
}

/* The DDPM buffers of ldm's LatentDiffusion, in its register_schedule order. */
static const char *const fr__sched_names[] = {"betas",
                                              "alphas_cumprod",
                                              "alphas_cumprod_prev",
                                              "sqrt_alphas_cumprod",
                                              "sqrt_one_minus_alphas_cumprod",
                                              "log_one_minus_alphas_cumprod",
                                              "sqrt_recip_alphas_cumprod",
                                              "sqrt_recipm1_alphas_cumprod",
                                              "posterior_variance",
                                              "posterior_log_variance_clipped",
                                              "posterior_mean_coef1",
                                              "posterior_mean_coef2"};

static void fr__extras(struct fr__b *b) {
  for (int i = 0; i < 12; i++) {
    struct fr_synth_tensor *t = fr__add(b, FR_SYNTH_SCHEDULE, 1, (int64_t[]){1000}, "%s", fr__sched_names[i]);
    if (t)
      t->fixed_dtype = true, t->value = i;
  }
  struct fr_synth_tensor *t = fr__add(b, FR_SYNTH_CONST, 0, NULL, "model_ema.decay");
  if (t)
    t->fixed_dtype = true, t->value = 0.9999;
  t = fr__add(b, FR_SYNTH_CONST, 0, NULL, "model_ema.num_updates");
  if (t)
    t->fixed_dtype = true, t->dtype = FR_I32, t->value = 0;
}

enum fr_status fr_synth_list_build(const struct fr_synth_arch *arch, struct fr_synth_list **out,
                                   struct fr_err *err) {
  *out = NULL;
  struct fr_synth_list *l = fr_calloc(1, sizeof *l);
  if (!l || !(l->names = fr_arena_new(0))) {
    fr_free(l);
    return fr_errf(err, FR_E_NOMEM, "out of memory building a key list");
  }
  struct fr__b b = {.l = l, .err = err};
  if (arch->has_unet)
    fr__unet(&b, &arch->unet);
  if (arch->has_vae)
    fr__vae(&b, &arch->vae);
  for (int i = 0; i < arch->n_clip; i++)
    fr__clip(&b, &arch->clip[i]);
  if (arch->ldm_extras)
    fr__extras(&b);
  if (b.rc) {
    fr_synth_list_free(l);
    return b.rc;
  }
  *out = l;
  return FR_OK;
}

void fr_synth_list_free(struct fr_synth_list *l) {
  if (!l)
    return;
  fr_free(l->t);
  fr_arena_free(l->names);
  fr_free(l);
}

static int64_t fr__numel(const struct fr_synth_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++)
    n *= t->shape[i];
  return n;
}

int64_t fr_synth_list_params(const struct fr_synth_list *l) {
  int64_t n = 0;
  for (int i = 0; i < l->n; i++)
    n += fr__numel(&l->t[i]);
  return n;
}

/* ---- writer ---- */

/* xorshift64*: fast, and plenty for weights that only have to be finite and small */
static inline uint64_t fr__rng(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1DULL;
}

/* Fills the schedule buffer `which` (index into fr__sched_names) as LatentDiffusion computes it from
 * the scaled_linear betas (0.00085 .. 0.012, 1000 steps; v_posterior 0). */
static void fr__schedule(int which, float *out) {
  double ac = 1.0, prev;
  for (int i = 0; i < 1000; i++) {
    double sb = sqrt(0.00085) + (sqrt(0.012) - sqrt(0.00085)) * i / 999.0, beta = sb * sb;
    prev = ac;
    ac *= 1.0 - beta;
    double pv = beta * (1.0 - prev) / (1.0 - ac), v;
    switch (which) {
    case 0: v = beta; break;
    case 1: v = ac; break;
    case 2: v = prev; break;
    case 3: v = sqrt(ac); break;
    case 4: v = sqrt(1.0 - ac); break;
    case 5: v = log(1.0 - ac); break;
    case 6: v = sqrt(1.0 / ac); break;
    case 7: v = sqrt(1.0 / ac - 1.0); break;
    case 8: v = pv; break;
    case 9: v = log(pv > 1e-20 ? pv : 1e-20); break;
    case 10: v = beta * sqrt(prev) / (1.0 - ac); break;
    default: v = (1.0 - prev) * sqrt(1.0 - beta) / (1.0 - ac); break;
    }
    out[i] = (float)v;
  }
}

static enum fr_dtype fr__dt(const struct fr_synth_tensor *t, enum fr_dtype dtype) {
  return t->fixed_dtype ? t->dtype : dtype;
}

static enum fr_status fr__header(const struct fr_synth_list *l, enum fr_dtype dtype, struct fr_buf *h,
                                 struct fr_err *err) {
  fr_buf_puts(h, "{\"__metadata__\":{\"format\":\"pt\",\"flowrun\":\"synth: random weights\"}");
  size_t off = 0;
  for (int i = 0; i < l->n; i++) {
    const struct fr_synth_tensor *t = &l->t[i];
    size_t nb = (size_t)fr__numel(t) * fr_dtype_size(fr__dt(t, dtype));
    fr_buf_putc(h, ',');
    fr_buf_json_str(h, t->name);
    fr_buf_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", fr_dtype_name(fr__dt(t, dtype)));
    for (int d = 0; d < t->ndim; d++)
      fr_buf_printf(h, "%s%lld", d ? "," : "", (long long)t->shape[d]);
    fr_buf_printf(h, "],\"data_offsets\":[%zu,%zu]}", off, off + nb);
    off += nb;
  }
  fr_buf_putc(h, '}');
  while (h->len % 8) /* 8-byte aligned data, as the safetensors writer does */
    fr_buf_putc(h, ' ');
  if (h->oom)
    return fr_errf(err, FR_E_NOMEM, "out of memory building the safetensors header");
  return FR_OK;
}

/* Writes tensor t's data: random values are generated chunk by chunk into buf (cap bytes). */
static bool fr__write_tensor(FILE *f, const struct fr_synth_tensor *t, enum fr_dtype dtype, uint64_t *rng,
                             float *tmp, void *buf, size_t cap_elems) {
  enum fr_dtype dt = fr__dt(t, dtype);
  int64_t n = fr__numel(t);
  if (t->init == FR_SYNTH_ARANGE || dt == FR_I32 || dt == FR_I64) {
    for (int64_t i = 0; i < n; i++) {
      int64_t v = t->init == FR_SYNTH_ARANGE ? i : (int64_t)t->value;
      if (dt == FR_I64) {
        if (fwrite(&v, 8, 1, f) != 1)
          return false;
      } else {
        int32_t v32 = (int32_t)v;
        if (fwrite(&v32, 4, 1, f) != 1)
          return false;
      }
    }
    return true;
  }
  const float amp = 0.02f * 1.7320508f; /* uniform on [-a, a] has std a / sqrt(3) = 0.02 */
  for (int64_t done = 0; done < n;) {
    size_t k = (size_t)(n - done) < cap_elems ? (size_t)(n - done) : cap_elems;
    if (t->init == FR_SYNTH_SCHEDULE) {
      fr__schedule((int)t->value, tmp); /* 1000 values, k == 1000 */
    } else {
      for (size_t i = 0; i < k; i++) {
        switch (t->init) {
        case FR_SYNTH_ONES: tmp[i] = 1.0f; break;
        case FR_SYNTH_ZEROS: tmp[i] = 0.0f; break;
        case FR_SYNTH_CONST: tmp[i] = (float)t->value; break;
        default: tmp[i] = ((float)(fr__rng(rng) >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f) * amp; break;
        }
      }
    }
    const void *src = tmp;
    size_t es = fr_dtype_size(dt);
    if (dt == FR_F16 || dt == FR_BF16) {
      uint16_t *o = buf;
      for (size_t i = 0; i < k; i++)
        o[i] = dt == FR_F16 ? fr_f32_to_f16(tmp[i]) : fr_f32_to_bf16(tmp[i]);
      src = o;
    }
    if (fwrite(src, es, k, f) != k)
      return false;
    done += (int64_t)k;
  }
  return true;
}

enum fr_status fr_synth_write(const struct fr_synth_list *l, const char *path, enum fr_dtype dtype,
                              uint64_t seed, void (*progress)(int done, int total, void *user), void *user,
                              struct fr_err *err) {
  if (dtype != FR_F32 && dtype != FR_F16 && dtype != FR_BF16)
    return fr_errf(err, FR_E_INVALID, "synth: dtype %s is not F32, F16 or BF16", fr_dtype_name(dtype));
  struct fr_buf h = {0};
  enum fr_status rc = fr__header(l, dtype, &h, err);
  if (rc) {
    fr_buf_free(&h);
    return rc;
  }
  size_t plen = strlen(path);
  char *tmpname = fr_malloc(plen + 16);
  const size_t cap = 1 << 18; /* elements per chunk: 1 MiB of f32 */
  float *tmp = fr_malloc(cap * sizeof(float));
  void *buf = fr_malloc(cap * sizeof(uint16_t));
  if (!tmpname || !tmp || !buf) {
    rc = fr_errf(err, FR_E_NOMEM, "out of memory writing %s", path);
    goto done;
  }
  snprintf(tmpname, plen + 16, "%s.tmp.XXXXXX", path);
  int fd = mkstemp(tmpname);
  if (fd < 0) {
    rc = fr_errf(err, FR_E_IO, "%s: cannot create a temporary file beside it: %s", path, strerror(errno));
    goto done;
  }
  fchmod(fd, 0644); /* mkstemp makes it 0600; a checkpoint is an ordinary readable file */
  FILE *f = fdopen(fd, "wb");
  if (!f) {
    close(fd);
    unlink(tmpname);
    rc = fr_errf(err, FR_E_IO, "%s: %s", tmpname, strerror(errno));
    goto done;
  }
  uint64_t hl = h.len;
  unsigned char le[8];
  for (int i = 0; i < 8; i++)
    le[i] = (unsigned char)(hl >> (8 * i));
  bool ok = fwrite(le, 1, 8, f) == 8 && fwrite(h.data, 1, h.len, f) == h.len;
  uint64_t rng = seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
  if (!rng)
    rng = 1;
  for (int i = 0; ok && i < l->n; i++) {
    ok = fr__write_tensor(f, &l->t[i], dtype, &rng, tmp, buf, cap);
    if (progress)
      progress(i + 1, l->n, user);
  }
  int saved = errno;
  ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
  if (!ok)
    saved = errno;
  if (fclose(f) != 0 && ok) {
    ok = false;
    saved = errno;
  }
  if (ok && rename(tmpname, path) != 0) {
    ok = false;
    saved = errno;
  }
  if (!ok) {
    unlink(tmpname);
    rc = fr_errf(err, FR_E_IO, "%s: write failed: %s", path, strerror(saved));
  }
done:
  fr_free(tmpname);
  fr_free(tmp);
  fr_free(buf);
  fr_buf_free(&h);
  return rc;
}

/* ---- FLOP counts ---- */

static double fr__st_flops(const struct fr_synth_unet *u, double c, double T, int depth, double L) {
  double f = 2 * (2.0 * T * c * c); /* proj_in, proj_out */
  for (int d = 0; d < depth; d++) {
    f += 4 * 2.0 * T * c * c + 2 * 2.0 * T * T * c;                                /* self-attention */
    f += 2 * 2.0 * T * c * c + 2 * 2.0 * L * u->ctx_dim * c + 2 * 2.0 * T * L * c; /* cross-attention */
    f += 2.0 * T * c * 8 * c + 2.0 * T * 4 * c * c;                                /* GEGLU feed-forward */
  }
  return f;
}

static double fr__res_flops(double cin, double cout, double T, double tdim) {
  double f = 2.0 * cin * cout * 9 * T + 2.0 * cout * cout * 9 * T + 2.0 * tdim * cout;
  if (cin != cout)
    f += 2.0 * cin * cout * T;
  return f;
}

double fr_synth_unet_flops(const struct fr_synth_unet *u, int h, int w, int ctx_len) {
  double tdim = 4.0 * u->ch, T = (double)h * w, L = ctx_len;
  double f =
      2.0 * u->ch * tdim + 2.0 * tdim * tdim + (u->adm_in ? 2.0 * u->adm_in * tdim + 2.0 * tdim * tdim : 0);
  f += 2.0 * u->in_ch * u->ch * 9 * T;
  int chans[32], nch = 0, cur = u->ch;
  chans[nch++] = cur;
  for (int l = 0; l < u->levels; l++) {
    int c = u->ch * u->mult[l];
    for (int j = 0; j < u->nres; j++) {
      f += fr__res_flops(cur, c, T, tdim);
      cur = c;
      if (u->depth[l])
        f += fr__st_flops(u, c, T, u->depth[l], L);
      chans[nch++] = cur;
    }
    if (l != u->levels - 1) {
      T /= 4;
      f += 2.0 * cur * cur * 9 * T; /* stride-2 conv at the lower resolution */
      chans[nch++] = cur;
    }
  }
  f += 2 * fr__res_flops(cur, cur, T, tdim) + fr__st_flops(u, cur, T, u->depth_mid, L);
  if (u->controlnet)
    return f;
  for (int l = u->levels - 1; l >= 0; l--) {
    int c = u->ch * u->mult[l];
    for (int j = 0; j <= u->nres; j++) {
      f += fr__res_flops(cur + chans[--nch], c, T, tdim);
      cur = c;
      if (u->depth[l])
        f += fr__st_flops(u, c, T, u->depth[l], L);
      if (l != 0 && j == u->nres) {
        T *= 4;
        f += 2.0 * c * c * 9 * T; /* conv after the nearest upsample */
      }
    }
  }
  f += 2.0 * u->ch * u->out_ch * 9 * T;
  return f;
}

double fr_synth_clip_flops(const struct fr_synth_clip *c, int tokens) {
  double T = tokens, W = c->width;
  double per = 4 * 2.0 * T * W * W + 2 * 2.0 * T * T * W + 2 * 2.0 * T * W * c->ff;
  return per * c->layers + (c->hf ? 0 : 2.0 * W * c->proj);
}

double fr_synth_controlnet_flops(const struct fr_synth_unet *u, int h, int w, int ctx_len) {
  struct fr_synth_unet enc = *u;
  enc.controlnet = true;
  double f = fr_synth_unet_flops(&enc, h, w, ctx_len); /* time embedding, encoder, middle block */
  /* hint network over the [3, 8h, 8w] image: 8 3x3 convs, those at 2, 4, 6 with stride 2 */
  const int *hc = u->hint_ch;
  const int io[8][2] = {{3, hc[0]},     {hc[0], hc[0]}, {hc[0], hc[1]}, {hc[1], hc[1]},
                        {hc[1], hc[2]}, {hc[2], hc[2]}, {hc[2], hc[3]}, {hc[3], u->ch}};
  double H = 8.0 * h, W = 8.0 * w;
  for (int i = 0; i < 8; i++) {
    if (i == 2 || i == 4 || i == 6)
      H /= 2, W /= 2;
    f += 2.0 * io[i][0] * io[i][1] * 9 * H * W;
  }
  /* zero convs: a 1x1 conv on every skip connection (conv_in, each res block, each downsample) and on
   * the middle block's output */
  double T = (double)h * w;
  int cur = u->ch;
  f += 2.0 * cur * cur * T;
  for (int l = 0; l < u->levels; l++) {
    cur = u->ch * u->mult[l];
    f += u->nres * 2.0 * cur * cur * T;
    if (l != u->levels - 1) {
      T /= 4;
      f += 2.0 * cur * cur * T;
    }
  }
  return f + 2.0 * cur * cur * T;
}
