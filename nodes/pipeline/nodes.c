/* Pipeline node types other than the samplers: loaders, TextEncode, EmptyLatent, ControlNet, VAEDecode,
 * VAEEncode, and latent / image-data files. Spec tables plus run functions over nodes/models/. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/safetensors.h"
#include "nodes/pipeline/pipeline.h"

static enum fr_status fr__oom(struct fr_node_ctx *nc) {
  return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
}

static enum fr_status fr__set_obj(struct fr_node_ctx *nc, int idx, const char *type, const char *path,
                                  const char *tok, const char *pin) {
  struct fr_pipe_obj *o = fr_pipe_obj_new(type, path, tok);
  if (o && !fr_pipe_obj_set_pin(o, pin)) {
    fr_object_unref(&o->o);
    o = NULL;
  }
  struct fr_value *v = o ? fr_value_object(&o->o) : NULL;
  if (!v)
    return fr__oom(nc);
  return fr_out_set(nc, idx, v);
}

/* ---- CheckpointLoader ---- */

static enum fr_status fr__ckpt_run(struct fr_node_ctx *nc) {
  const char *path = fr_in_path(nc, "ckpt_name");
  if (!path)
    return fr_node_fail(nc, FR_E_INVALID, "input 'ckpt_name': no checkpoint given");
  const char *tok = fr_in_has(nc, "tokenizer") ? fr_in_path(nc, "tokenizer") : NULL;
  const char *pin = fr_in_pin(nc, "ckpt_name");
  enum fr_status rc = fr__set_obj(nc, 0, FR_T_MODEL, path, NULL, pin);
  if (!rc)
    rc = fr__set_obj(nc, 1, FR_T_CLIP, path, tok, pin);
  if (!rc)
    rc = fr__set_obj(nc, 2, FR_T_VAE, path, NULL, pin);
  return rc;
}

static const struct fr_input_spec fr__ckpt_in[] = {
    {"ckpt_name", FR_T_STRING, NULL, 0, -1, NULL, FR_IN_MODEL_FILE | FR_IN_KIND(FR_MODEL_CHECKPOINT),
     "checkpoint: a .safetensors file (SD1.x, SDXL base or refiner) or a diffusers folder, on the model "
     "path"},
    {"tokenizer", FR_T_STRING, NULL, 0, -1, NULL, FR_IN_MODEL_FILE | FR_IN_OPTIONAL | FR_IN_HIDDEN,
     "CLIP tokenizer (folder with vocab.json + merges.txt, or bpe_simple_vocab_16e6.txt.gz); default: "
     "searched beside the checkpoint and one folder up"},
};
static const struct fr_output_spec fr__ckpt_out[] = {
    {"model", FR_T_MODEL, "the diffusion UNet (loaded when first used)"},
    {"clip", FR_T_CLIP, "the text encoder(s) (loaded when first used)"},
    {"vae", FR_T_VAE, "the VAE (loaded when first used)"},
};
const struct fr_node_spec fr_node_checkpoint_loader = {
    "CheckpointLoader",
    1,
    "loaders",
    "Names a checkpoint's UNet, text encoders and VAE; each loads lazily.",
    fr__ckpt_in,
    FR_COUNT(fr__ckpt_in),
    fr__ckpt_out,
    FR_COUNT(fr__ckpt_out),
    0,
    fr__ckpt_run};

/* ---- ControlNetLoader ---- */

static enum fr_status fr__cnl_run(struct fr_node_ctx *nc) {
  const char *path = fr_in_path(nc, "control_net_name");
  if (!path)
    return fr_node_fail(nc, FR_E_INVALID, "input 'control_net_name': no file given");
  return fr__set_obj(nc, 0, FR_T_CONTROL_NET, path, NULL, fr_in_pin(nc, "control_net_name"));
}
static const struct fr_input_spec fr__cnl_in[] = {
    {"control_net_name", FR_T_STRING, NULL, 0, -1, NULL, FR_IN_MODEL_FILE | FR_IN_KIND(FR_MODEL_CONTROLNET),
     "ControlNet: original (control_model.*) or diffusers file/folder, on the model path"},
};
static const struct fr_output_spec fr__cnl_out[] = {{"control_net", FR_T_CONTROL_NET, "the ControlNet"}};
const struct fr_node_spec fr_node_controlnet_loader = {"ControlNetLoader",
                                                       1,
                                                       "loaders",
                                                       "Names a ControlNet file; it loads when first used.",
                                                       fr__cnl_in,
                                                       FR_COUNT(fr__cnl_in),
                                                       fr__cnl_out,
                                                       FR_COUNT(fr__cnl_out),
                                                       0,
                                                       fr__cnl_run};

/* ---- TextEncode ---- */

static struct fr_tensor *fr__row(int n, const float *vals) {
  struct fr_tensor *t = fr_tensor_f32(2, (int64_t[]){1, n});
  if (t)
    memcpy(t->data, vals, (size_t)n * sizeof(float));
  return t;
}

static enum fr_status fr__text_run(struct fr_node_ctx *nc) {
  struct fr_pipe_comp *m;
  enum fr_status rc = fr_pipe_get(nc, "clip", FR_T_CLIP, &m);
  if (rc)
    return rc;
  const char *text = fr_in_str(nc, "text");
  int skip = (int)fr_in_int(nc, "clip_skip");
  /* the clip layer: CLIPSetLastLayer's when the CLIP comes through one, else clip_skip's (SD1.x) or -2 */
  int set = ((const struct fr_pipe_obj *)fr_in(nc, "clip")->obj)->clip_layer;
  struct fr_tensor *ctx = NULL, *pooled = NULL, *tids = NULL;
  if (m->l && !m->g) { /* SD1.x: last hidden state; clip_skip 2: penultimate; final LayerNorm on either */
    rc = fr_pipe_encode_prompt(nc, m, m->l, text, FR_CLIP_EOS, set ? set : -skip, true, "clip_l", &ctx, NULL);
  } else if (m->l && m->g) { /* SDXL base: penultimate of both, concatenated; G's projected pooled */
    struct fr_tensor *hl = NULL, *hg = NULL;
    rc = fr_pipe_encode_prompt(nc, m, m->l, text, FR_CLIP_EOS, set ? set : -2, false, "clip_l", &hl, NULL);
    if (!rc)
      rc = fr_pipe_encode_prompt(nc, m, m->g, text, 0, set ? set : -2, false, "clip_g", &hg, &pooled);
    if (!rc && hl->shape[1] != hg->shape[1])
      rc = fr_node_fail(nc, FR_E_SHAPE, "the two encoders split the prompt into different windows");
    if (!rc) {
      int64_t T = hl->shape[1], wl = hl->shape[2], wg = hg->shape[2];
      ctx = fr_tensor_f32(3, (int64_t[]){1, T, wl + wg});
      if (!ctx)
        rc = fr__oom(nc);
      for (int64_t t = 0; !rc && t < T; t++) {
        memcpy((float *)ctx->data + t * (wl + wg), (float *)hl->data + t * wl, (size_t)wl * 4);
        memcpy((float *)ctx->data + t * (wl + wg) + wl, (float *)hg->data + t * wg, (size_t)wg * 4);
      }
    }
    fr_tensor_free(hl);
    fr_tensor_free(hg);
    if (!rc) { /* original size, crop top-left, target size: (h, w) pairs as diffusers' add_time_ids */
      float v[6] = {(float)fr_in_int(nc, "height"),        (float)fr_in_int(nc, "width"),
                    (float)fr_in_int(nc, "crop_h"),        (float)fr_in_int(nc, "crop_w"),
                    (float)fr_in_int(nc, "target_height"), (float)fr_in_int(nc, "target_width")};
      if (!(tids = fr__row(6, v)))
        rc = fr__oom(nc);
    }
  } else { /* refiner: G only, penultimate; size, crop and aesthetic score */
    rc = fr_pipe_encode_prompt(nc, m, m->g, text, 0, set ? set : -2, false, "clip_g", &ctx, &pooled);
    if (!rc) {
      float v[5] = {(float)fr_in_int(nc, "height"), (float)fr_in_int(nc, "width"),
                    (float)fr_in_int(nc, "crop_h"), (float)fr_in_int(nc, "crop_w"),
                    (float)fr_in_float(nc, "aesthetic_score")};
      if (!(tids = fr__row(5, v)))
        rc = fr__oom(nc);
    }
  }
  if (rc) {
    fr_tensor_free(ctx);
    fr_tensor_free(pooled);
    fr_tensor_free(tids);
    return rc;
  }
  struct fr_value *out = fr_value_tensor(FR_T_CONDITIONING, "context", ctx);
  if (!out || (pooled && fr_value_add_tensor(out, "pooled", pooled)) ||
      (tids && fr_value_add_tensor(out, "time_ids", tids))) {
    if (!out) {
      fr_tensor_free(pooled);
      fr_tensor_free(tids);
    }
    fr_value_unref(out);
    return fr__oom(nc);
  }
  return fr_out_set(nc, 0, out);
}

static const struct fr_input_spec fr__text_in[] = {
    {"clip", FR_T_CLIP, NULL, 0, -1, NULL, 0, "text encoder(s) from CheckpointLoader"},
    {"text", FR_T_STRING, "", 0, -1, NULL, FR_IN_MULTILINE | FR_IN_PROMPT,
     "the prompt (longer than 75 tokens: more windows)"},
    {"clip_skip", FR_T_INT, "1", 1, 2, NULL, 0,
     "SD1.x: 1 = last layer, 2 = penultimate (SDXL always uses 2)"},
    {"width", FR_T_INT, "1024", 0, 16384, NULL, 0,
     "SDXL: original width conditioning; 0: the sampled image's width, as ComfyUI's CLIPTextEncode"},
    {"height", FR_T_INT, "1024", 0, 16384, NULL, 0,
     "SDXL: original height conditioning; 0: the sampled image's height"},
    {"crop_w", FR_T_INT, "0", 0, 16384, NULL, 0, "SDXL: crop left conditioning"},
    {"crop_h", FR_T_INT, "0", 0, 16384, NULL, 0, "SDXL: crop top conditioning"},
    {"target_width", FR_T_INT, "1024", 0, 16384, NULL, 0,
     "SDXL base: target width conditioning; 0: the original width"},
    {"target_height", FR_T_INT, "1024", 0, 16384, NULL, 0,
     "SDXL base: target height conditioning; 0: the original height"},
    {"aesthetic_score", FR_T_FLOAT, "6.0", 0, 10, NULL, 0, "SDXL refiner: aesthetic score (negatives: 2.5)"},
};
static const struct fr_output_spec fr__cond_out[] = {
    {"conditioning", FR_T_CONDITIONING, "text conditioning"}};
const struct fr_node_spec fr_node_text_encode = {
    "TextEncode",
    2, /* 2: the tokenizer as transformers': no HTML unescaping, NFC, U+001C..1F not white space */
    "conditioning",
    "Encodes a prompt with the checkpoint's text encoder(s) (SD1.x, SDXL base and refiner detected).",
    fr__text_in,
    FR_COUNT(fr__text_in),
    fr__cond_out,
    FR_COUNT(fr__cond_out),
    0,
    fr__text_run};

/* ---- EmptyLatent ---- */

static enum fr_status fr__empty_run(struct fr_node_ctx *nc) {
  int64_t w = fr_in_int(nc, "width"), h = fr_in_int(nc, "height"), b = fr_in_int(nc, "batch");
  if (fr_in_has(nc, "batch_size")) /* ComfyUI's EmptyLatentImage name for it */
    b = fr_in_int(nc, "batch_size");
  if (w % 8 || h % 8)
    return fr_node_fail(nc, FR_E_INVALID, "width %lld and height %lld must be multiples of 8", (long long)w,
                        (long long)h);
  struct fr_tensor *t = fr_tensor_f32(4, (int64_t[]){b, 4, h / 8, w / 8});
  struct fr_value *v = t ? fr_value_tensor(FR_T_LATENT, "samples", t) : NULL;
  return v ? fr_out_set(nc, 0, v) : fr__oom(nc);
}
static const struct fr_input_spec fr__empty_in[] = {
    {"width", FR_T_INT, "512", 8, 16384, NULL, 0, "image width in pixels (multiple of 8)"},
    {"height", FR_T_INT, "512", 8, 16384, NULL, 0, "image height in pixels (multiple of 8)"},
    {"batch", FR_T_INT, "1", 1, 64, NULL, 0, "images per batch"},
    {"batch_size", FR_T_INT, NULL, 1, 64, NULL, FR_IN_OPTIONAL | FR_IN_HIDDEN,
     "ComfyUI's name for batch (EmptyLatentImage); overrides batch when set"},
};
static const struct fr_output_spec fr__latent_out[] = {{"latent", FR_T_LATENT, "latents [B, 4, h, w]"}};
const struct fr_node_spec fr_node_empty_latent = {"EmptyLatent",
                                                  1,
                                                  "latent",
                                                  "A zero latent of an image size (the start of txt2img).",
                                                  fr__empty_in,
                                                  FR_COUNT(fr__empty_in),
                                                  fr__latent_out,
                                                  FR_COUNT(fr__latent_out),
                                                  0,
                                                  fr__empty_run};

/* ---- ControlNet (apply) ---- */

static enum fr_status fr__copy_fields(struct fr_value *dst, const struct fr_value *src) {
  for (int i = 0; i < src->n_fields; i++) {
    const struct fr_field *f = &src->fields[i];
    enum fr_status rc;
    if (f->t) {
      struct fr_tensor *t = fr_tensor_clone(f->t);
      rc = t ? fr_value_add_tensor(dst, f->name, t) : FR_E_NOMEM;
    } else
      rc = fr_value_add_string(dst, f->name, f->str ? f->str : "");
    if (rc)
      return rc;
  }
  return FR_OK;
}

static enum fr_status fr__cn_run(struct fr_node_ctx *nc) {
  const struct fr_value *cond = fr_in(nc, "conditioning"), *img = fr_in(nc, "image"),
                        *cnv = fr_in(nc, "control_net");
  const struct fr_tensor *it = img ? fr_value_get_tensor(img, "image") : NULL;
  if (!cond || !fr_value_get_tensor(cond, "context"))
    return fr_node_fail(nc, FR_E_INVALID, "input 'conditioning': no CONDITIONING connected");
  if (!it || it->ndim != 4 || it->shape[3] < 3)
    return fr_node_fail(nc, FR_E_INVALID, "input 'image': expected an IMAGE [B, H, W, 3]");
  if (!cnv || cnv->kind != FR_V_OBJECT)
    return fr_node_fail(nc, FR_E_INVALID, "input 'control_net': no CONTROL_NET connected");
  const struct fr_pipe_obj *o = (const struct fr_pipe_obj *)cnv->obj;
  int k = 0;
  char name[64];
  for (;; k++) {
    snprintf(name, sizeof name, "control.%d.path", k);
    if (!fr_value_get_string(cond, name))
      break;
  }
  struct fr_value *out = fr_value_data(FR_T_CONDITIONING);
  if (!out)
    return fr__oom(nc);
  enum fr_status rc = fr__copy_fields(out, cond);
  /* RGB only, first image of the batch: [1, H, W, 3] */
  struct fr_tensor *t = rc ? NULL : fr_tensor_f32(4, (int64_t[]){1, it->shape[1], it->shape[2], 3});
  if (!rc && !t)
    rc = FR_E_NOMEM;
  if (t) {
    int64_t px = it->shape[1] * it->shape[2], c = it->shape[3];
    for (int64_t p = 0; p < px; p++)
      for (int ch = 0; ch < 3; ch++)
        ((float *)t->data)[p * 3 + ch] = ((const float *)it->data)[p * c + ch];
    snprintf(name, sizeof name, "control.%d.image", k);
    rc = fr_value_add_tensor(out, name, t);
  }
  const char *keys[4] = {"path", "strength", "start", "end"};
  char vals[4][4200];
  snprintf(vals[0], sizeof vals[0], "%s", o->path);
  snprintf(vals[1], sizeof vals[1], "%.17g", fr_in_float(nc, "strength"));
  snprintf(vals[2], sizeof vals[2], "%.17g", fr_in_float(nc, "start_percent"));
  snprintf(vals[3], sizeof vals[3], "%.17g", fr_in_float(nc, "end_percent"));
  for (int i = 0; !rc && i < 4; i++) {
    snprintf(name, sizeof name, "control.%d.%s", k, keys[i]);
    rc = fr_value_add_string(out, name, vals[i]);
  }
  if (rc) {
    fr_value_unref(out);
    return fr__oom(nc);
  }
  return fr_out_set(nc, 0, out);
}
static const struct fr_input_spec fr__cn_in[] = {
    {"conditioning", FR_T_CONDITIONING, NULL, 0, -1, NULL, 0, "conditioning to add the control to"},
    {"control_net", FR_T_CONTROL_NET, NULL, 0, -1, NULL, 0, "from ControlNetLoader"},
    {"image", FR_T_IMAGE, NULL, 0, -1, NULL, 0,
     "control image (edges, depth ...), 8x the latent size, [0, 1]"},
    {"strength", FR_T_FLOAT, "1.0", 0, 10, NULL, 0,
     "residual scale (diffusers' controlnet_conditioning_scale)"},
    {"start_percent", FR_T_FLOAT, "0.0", 0, 1, NULL, 0, "fraction of sampling at which the control starts"},
    {"end_percent", FR_T_FLOAT, "1.0", 0, 1, NULL, 0, "fraction of sampling at which it stops"},
};
const struct fr_node_spec fr_node_controlnet_apply = {
    "ControlNet",
    1,
    "conditioning",
    "Adds a ControlNet application (image, strength, start/end) to a conditioning; apply it to both the "
    "positive and the negative to control both halves of CFG, as diffusers does.",
    fr__cn_in,
    FR_COUNT(fr__cn_in),
    fr__cond_out,
    FR_COUNT(fr__cond_out),
    0,
    fr__cn_run};

/* ---- VAEDecode ---- */

static enum fr_status fr__vae_decode_run(struct fr_node_ctx *nc) {
  const struct fr_value *lv = fr_in(nc, "samples");
  const struct fr_tensor *s = lv ? fr_value_get_tensor(lv, "samples") : NULL;
  if (!s || s->ndim != 4)
    return fr_node_fail(nc, FR_E_INVALID, "input 'samples': expected a LATENT [B, 4, h, w]");
  struct fr_pipe_comp *m;
  enum fr_status rc = fr_pipe_get(nc, "vae", FR_T_VAE, &m);
  if (rc)
    return rc;
  struct fr_tensor *z = fr_tensor_to_f32(s);
  if (!z)
    return fr__oom(nc);
  /* a bare VAE file (VAELoader) has no factor of its own: the sampler's model family says which */
  const char *fmt = fr_value_get_string(lv, "latent_format");
  float inv = 1.0f / (m->vae_scale_guessed && fmt && !strcmp(fmt, "sdxl") ? 0.13025f : m->vae_scale);
  for (int64_t i = 0; i < fr_tensor_numel(z); i++)
    ((float *)z->data)[i] *= inv;
  int tile = (int)fr_in_int(nc, "tile_size") / 8, used = 0;
  if (fr_node_low_memory(nc) && (tile == 0 || tile > FR_VAE_FALLBACK_TILE / 2)) {
    /* run again after running out of memory: straight to tiles of 32 latents (256 px) */
    tile = FR_VAE_FALLBACK_TILE / 2;
    if (z->shape[2] > tile || z->shape[3] > tile)
      fr_node_warn(nc,
                   "low memory: decoding in %dx%d-latent tiles (%d px, overlap %d px); seams may differ "
                   "slightly from a whole decode",
                   tile, tile, tile * 8, tile / 4 * 8);
  }
  if (tile > 0 && z->shape[2] <= tile && z->shape[3] <= tile)
    tile = 0; /* one tile covers it: the whole decode */
  struct fr_err err = {{0}};
  struct fr_tensor *img = NULL;
  rc = fr_vae_decode_host(m->c, m->vae, z, tile, &img, &used, &err);
  if (!rc && used != tile) /* the device ran out of memory: tiles instead, say so */
    fr_node_warn(nc,
                 "out of device memory decoding %lldx%lld latents %s; decoded in %dx%d-latent tiles "
                 "(%d px, overlap %d px) instead: seams may differ slightly from a whole decode",
                 (long long)z->shape[3], (long long)z->shape[2], tile ? "in tiles" : "whole", used, used,
                 used * 8, used / 4 * 8);
  fr_tensor_free(z);
  if (rc)
    return fr_node_fail(nc, rc, "%s", err.msg);
  /* NaN/inf in the latent, else from the decoder (broken VAE weights, an fp16 overflow); NaN stays NaN in
   * the IMAGE below (the clamp lets it through) so SaveImage sees it too */
  if (!fr_node_warn_nonfinite(nc, "input 'samples'", s))
    fr_node_warn_nonfinite(nc, "the decoded image", img);
  /* [B, 3, H, W] in [-1, 1] -> IMAGE [B, H, W, 3] in [0, 1] */
  int64_t B = img->shape[0], H = img->shape[2], W = img->shape[3];
  struct fr_tensor *o = fr_tensor_f32(4, (int64_t[]){B, H, W, 3});
  if (!o) {
    fr_tensor_free(img);
    return fr__oom(nc);
  }
  for (int64_t b = 0; b < B; b++)
    for (int c = 0; c < 3; c++)
      for (int64_t p = 0; p < H * W; p++) {
        float v = (((float *)img->data)[(b * 3 + c) * H * W + p] + 1.0f) * 0.5f;
        ((float *)o->data)[(b * H * W + p) * 3 + c] = v < 0 ? 0 : v > 1 ? 1 : v;
      }
  fr_tensor_free(img);
  struct fr_value *v = fr_value_tensor(FR_T_IMAGE, "image", o);
  return v ? fr_out_set(nc, 0, v) : fr__oom(nc);
}
static const struct fr_input_spec fr__vae_decode_in[] = {
    {"samples", FR_T_LATENT, NULL, 0, -1, NULL, 0, "latents (scaled, as samplers produce them)"},
    {"vae", FR_T_VAE, NULL, 0, -1, NULL, 0, "VAE from CheckpointLoader"},
    {"tile_size", FR_T_INT, "0", 0, 4096, NULL, 0,
     "0: decode whole; else decode in tiles of this many pixels (64 or more) to bound memory"},
};
static const struct fr_output_spec fr__image_out[] = {{"image", FR_T_IMAGE, "decoded image [B, H, W, 3]"}};
const struct fr_node_spec fr_node_vae_decode = {
    "VAEDecode",
    1,
    "latent",
    "Decodes latents into an image (optionally in tiles for large images).",
    fr__vae_decode_in,
    FR_COUNT(fr__vae_decode_in),
    fr__image_out,
    FR_COUNT(fr__image_out),
    0,
    fr__vae_decode_run};

/* ---- VAEEncode ---- */

enum fr_status fr_pipe_vae_encode(struct fr_node_ctx *nc, struct fr_pipe_comp *m, const struct fr_tensor *im,
                                  int64_t oy, int64_t ox, int64_t H, int64_t W, struct fr_tensor **out) {
  *out = NULL;
  int64_t B = im->shape[0], H0 = im->shape[1], W0 = im->shape[2], C0 = im->shape[3];
  struct fr_tensor *x = fr_tensor_f32(4, (int64_t[]){B, 3, H, W}); /* [B, 3, H, W] in [-1, 1] */
  if (!x)
    return fr__oom(nc);
  for (int64_t b = 0; b < B; b++)
    for (int c = 0; c < 3; c++)
      for (int64_t y = 0; y < H; y++)
        for (int64_t xx = 0; xx < W; xx++)
          ((float *)x->data)[((b * 3 + c) * H + y) * W + xx] =
              ((const float *)im->data)[((b * H0 + y + oy) * W0 + xx + ox) * C0 + c] * 2.0f - 1.0f;
  struct fr_err err = {{0}};
  struct fr_tensor *dx = fr_ctx_upload(m->c, x), *mean = NULL, *logvar = NULL, *hm = NULL;
  fr_tensor_free(x);
  enum fr_status rc = dx ? fr_vae_encode(m->c, m->vae, dx, &mean, &logvar, &err) : fr_ctx_status(m->c, &err);
  if (!rc && !(hm = fr_ctx_download(m->c, mean)))
    rc = fr_ctx_status(m->c, &err);
  fr_tensor_free(dx);
  fr_tensor_free(mean);
  fr_tensor_free(logvar);
  if (rc || !hm) {
    fr_ctx_clear(m->c);
    fr_tensor_free(hm);
    return rc ? fr_node_fail(nc, rc, "%s", err.msg) : fr__oom(nc);
  }
  for (int64_t i = 0; i < fr_tensor_numel(hm); i++) /* the mean, not a sample: deterministic, as ComfyUI */
    ((float *)hm->data)[i] *= m->vae_scale;
  *out = hm;
  return FR_OK;
}

static enum fr_status fr__vae_encode_run(struct fr_node_ctx *nc) {
  const struct fr_value *iv = fr_in(nc, "pixels");
  const struct fr_tensor *im = iv ? fr_value_get_tensor(iv, "image") : NULL;
  if (!im || im->ndim != 4 || im->shape[3] < 3)
    return fr_node_fail(nc, FR_E_INVALID, "input 'pixels': expected an IMAGE [B, H, W, 3]");
  int64_t H0 = im->shape[1], W0 = im->shape[2];
  int64_t H = H0 / 8 * 8, W = W0 / 8 * 8; /* crop to multiples of 8, as ComfyUI does */
  if (H == 0 || W == 0)
    return fr_node_fail(nc, FR_E_INVALID, "input 'pixels': image %lldx%lld is smaller than 8x8",
                        (long long)W0, (long long)H0);
  struct fr_pipe_comp *m;
  enum fr_status rc = fr_pipe_get(nc, "vae", FR_T_VAE, &m);
  if (rc)
    return rc;
  struct fr_tensor *hm;
  if ((rc = fr_pipe_vae_encode(nc, m, im, (H0 - H) / 2, (W0 - W) / 2, H, W, &hm)))
    return rc;
  struct fr_value *v = fr_value_tensor(FR_T_LATENT, "samples", hm);
  /* a bare VAE file: SD1.x's factor assumed; an SDXL Sampler rescales such a latent to its own */
  if (v && m->vae_scale_guessed && fr_value_add_string(v, "latent_format", "sd1-assumed")) {
    fr_value_unref(v);
    v = NULL;
  }
  return v ? fr_out_set(nc, 0, v) : fr__oom(nc);
}
static const struct fr_input_spec fr__vae_encode_in[] = {
    {"pixels", FR_T_IMAGE, NULL, 0, -1, NULL, 0, "image to encode (cropped to multiples of 8)"},
    {"vae", FR_T_VAE, NULL, 0, -1, NULL, 0, "VAE from CheckpointLoader"},
};
const struct fr_node_spec fr_node_vae_encode = {
    "VAEEncode",
    1,
    "latent",
    "Encodes an image into latents (the distribution's mean, scaled), for img2img.",
    fr__vae_encode_in,
    FR_COUNT(fr__vae_encode_in),
    fr__latent_out,
    FR_COUNT(fr__latent_out),
    0,
    fr__vae_encode_run};

/* ---- SaveLatent / LoadLatent / SaveImageData / LoadImageData ---- */

/* Writes tensor t under key to <output dir>/<filename> and sets output 0 ("files") to its path. */
static enum fr_status fr__save_tensor(struct fr_node_ctx *nc, const struct fr_tensor *t) {
  const char *fname = fr_in_str(nc, "filename"), *key = fr_in_str(nc, "key");
  if (!fname[0] || strstr(fname, ".."))
    return fr_node_fail(nc, FR_E_INVALID, "input 'filename': '%s' must be a name inside the output folder",
                        fname);
  if (!key[0])
    return fr_node_fail(nc, FR_E_INVALID, "input 'key': empty tensor name");
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", fr_node_output_dir(nc), fname);
  struct fr_st_item it = {key, t};
  const char *mk[1] = {"format"}, *mv[1] = {"flowrun"};
  struct fr_err err = {{0}};
  enum fr_status rc = fr_st_write_file(path, &it, 1, mk, mv, 1, &err);
  if (rc)
    return fr_node_fail(nc, rc, "%s", err.msg);
  struct fr_value *v = fr_value_string(path);
  return v ? fr_out_set(nc, 0, v) : fr__oom(nc);
}

static enum fr_status fr__save_latent_run(struct fr_node_ctx *nc) {
  const struct fr_value *v = fr_in(nc, "samples");
  const struct fr_tensor *t = v ? fr_value_get_tensor(v, "samples") : NULL;
  if (!t)
    return fr_node_fail(nc, FR_E_INVALID, "input 'samples': no LATENT connected");
  return fr__save_tensor(nc, t);
}

static enum fr_status fr__save_image_data_run(struct fr_node_ctx *nc) {
  const struct fr_value *v = fr_in(nc, "images");
  const struct fr_tensor *t = v ? fr_value_get_tensor(v, "image") : NULL;
  if (!t)
    return fr_node_fail(nc, FR_E_INVALID, "input 'images': no IMAGE connected");
  return fr__save_tensor(nc, t);
}

/* Reads tensor `key` of the file input "file" as F32. */
static enum fr_status fr__load_tensor(struct fr_node_ctx *nc, struct fr_tensor **out) {
  const char *path = fr_in_path(nc, "file"), *key = fr_in_str(nc, "key");
  *out = NULL;
  if (!path)
    return fr_node_fail(nc, FR_E_INVALID, "input 'file': no file given");
  struct fr_safetensors *st = NULL;
  struct fr_err err = {{0}};
  enum fr_status rc = fr_st_open(path, &st, &err);
  if (rc)
    return fr_node_fail(nc, rc, "%s", err.msg);
  const struct fr_st_entry *e = fr_st_find(st, key);
  if (!e) {
    char names[512] = "";
    for (int i = 0; i < st->n && strlen(names) < 400; i++)
      snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
               st->entries[i].name);
    rc = fr_node_fail(nc, FR_E_NOTFOUND, "%s: no tensor '%s' (it has: %s)", path, key, names);
  } else if (e->ndim != 4 ||
             !(e->dtype == FR_F32 || e->dtype == FR_F16 || e->dtype == FR_BF16 || e->dtype == FR_F64)) {
    rc = fr_node_fail(nc, FR_E_SHAPE, "%s: tensor '%s' must be a 4-D float tensor, is %s with %d dims", path,
                      key, fr_dtype_name(e->dtype), e->ndim);
  } else {
    struct fr_tensor *view = fr_st_view(e);
    *out = view ? fr_tensor_to_f32(view) : NULL;
    fr_tensor_free(view);
    if (!*out)
      rc = fr__oom(nc);
  }
  fr_st_close(st);
  return rc;
}

static enum fr_status fr__load_latent_run(struct fr_node_ctx *nc) {
  struct fr_tensor *t;
  enum fr_status rc = fr__load_tensor(nc, &t);
  if (rc)
    return rc;
  struct fr_value *v = fr_value_tensor(FR_T_LATENT, "samples", t);
  return v ? fr_out_set(nc, 0, v) : fr__oom(nc);
}

static enum fr_status fr__load_image_data_run(struct fr_node_ctx *nc) {
  struct fr_tensor *t;
  enum fr_status rc = fr__load_tensor(nc, &t);
  if (rc)
    return rc;
  bool chw = !strcmp(fr_in_str(nc, "layout"), "BCHW");
  int64_t B = t->shape[0], C = chw ? t->shape[1] : t->shape[3], H = chw ? t->shape[2] : t->shape[1],
          W = chw ? t->shape[3] : t->shape[2];
  if (C != 3 && C != 4) {
    fr_tensor_free(t);
    return fr_node_fail(nc, FR_E_SHAPE, "tensor '%s': %lld channels in %s layout; an image has 3 or 4",
                        fr_in_str(nc, "key"), (long long)C, chw ? "BCHW" : "BHWC");
  }
  if (chw) {
    struct fr_tensor *o = fr_tensor_f32(4, (int64_t[]){B, H, W, C});
    if (!o) {
      fr_tensor_free(t);
      return fr__oom(nc);
    }
    for (int64_t b = 0; b < B; b++)
      for (int64_t c = 0; c < C; c++)
        for (int64_t p = 0; p < H * W; p++)
          ((float *)o->data)[(b * H * W + p) * C + c] = ((float *)t->data)[(b * C + c) * H * W + p];
    fr_tensor_free(t);
    t = o;
  }
  struct fr_value *v = fr_value_tensor(FR_T_IMAGE, "image", t);
  return v ? fr_out_set(nc, 0, v) : fr__oom(nc);
}

static const struct fr_output_spec fr__files_out[] = {
    {"files", FR_T_STRING, "the file written: absolute path, a tab, XXH3-128 of its bytes"}};
static const struct fr_input_spec fr__save_latent_in[] = {
    {"samples", FR_T_LATENT, NULL, 0, -1, NULL, 0, "latents to save"},
    {"filename", FR_T_STRING, "latent.safetensors", 0, -1, NULL, 0,
     "file name in the output folder (replaced)"},
    {"key", FR_T_STRING, "latent", 0, -1, NULL, 0, "tensor name in the file"},
};
const struct fr_node_spec fr_node_save_latent = {
    "SaveLatent",       1,
    "latent",           "Writes latents to a safetensors file (F32 [B, 4, h, w]).",
    fr__save_latent_in, FR_COUNT(fr__save_latent_in),
    fr__files_out,      FR_COUNT(fr__files_out),
    FR_NODE_OUTPUT,     fr__save_latent_run};
static const struct fr_input_spec fr__load_latent_in[] = {
    {"file", FR_T_STRING, NULL, 0, -1, NULL, FR_IN_FILE, "safetensors file, relative to the graph's folder"},
    {"key", FR_T_STRING, "latent", 0, -1, NULL, 0, "tensor name in the file (4-D float)"},
};
const struct fr_node_spec fr_node_load_latent = {
    "LoadLatent",
    1,
    "latent",
    "Reads latents [B, 4, h, w] from a safetensors file, tensor chosen by key.",
    fr__load_latent_in,
    FR_COUNT(fr__load_latent_in),
    fr__latent_out,
    FR_COUNT(fr__latent_out),
    0,
    fr__load_latent_run};
static const struct fr_input_spec fr__save_image_data_in[] = {
    {"images", FR_T_IMAGE, NULL, 0, -1, NULL, 0, "images to save at full precision"},
    {"filename", FR_T_STRING, "image.safetensors", 0, -1, NULL, 0,
     "file name in the output folder (replaced)"},
    {"key", FR_T_STRING, "image", 0, -1, NULL, 0, "tensor name in the file"},
};
const struct fr_node_spec fr_node_save_image_data = {
    "SaveImageData",
    1,
    "image",
    "Writes images as F32 [B, H, W, C] in [0, 1] to a safetensors file (no rounding).",
    fr__save_image_data_in,
    FR_COUNT(fr__save_image_data_in),
    fr__files_out,
    FR_COUNT(fr__files_out),
    FR_NODE_OUTPUT,
    fr__save_image_data_run};
static const char *const fr__layouts[] = {"BHWC", "BCHW", NULL};
static const struct fr_input_spec fr__load_image_data_in[] = {
    {"file", FR_T_STRING, NULL, 0, -1, NULL, FR_IN_FILE, "safetensors file, relative to the graph's folder"},
    {"key", FR_T_STRING, "image", 0, -1, NULL, 0, "tensor name in the file (4-D float, values in [0, 1])"},
    {"layout", FR_T_ENUM, "BHWC", 0, -1, fr__layouts, 0, "BHWC (flowrun, ComfyUI) or BCHW (PyTorch)"},
};
const struct fr_node_spec fr_node_load_image_data = {
    "LoadImageData",
    1,
    "image",
    "Reads an image tensor from a safetensors file at full precision.",
    fr__load_image_data_in,
    FR_COUNT(fr__load_image_data_in),
    fr__image_out,
    FR_COUNT(fr__image_out),
    0,
    fr__load_image_data_run};
