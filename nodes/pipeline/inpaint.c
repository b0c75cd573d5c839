/* Inpainting: the nodes that attach a noise mask to a latent (VAEEncodeForInpaint, SetLatentNoiseMask),
 * InpaintModelConditioning for the 9-channel inpainting UNets, and the helpers the Sampler uses to honour
 * a noise mask (fr_pipe_prepare_mask) and to build an inpainting UNet's extra input (fr_pipe_concat_cond).
 * The numbers are ComfyUI's (nodes.py, comfy/sampler_helpers.py prepare_mask, comfy/model_base.py
 * concat_cond); docs/pipelines.md describes them. */
#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "nodes/pipeline/pipeline.h"

static enum fr_status fr__oom(struct fr_node_ctx *nc) {
  return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
}

void fr_pipe_bilinear(const float *in, int64_t n, int64_t H, int64_t W, int64_t h, int64_t w, float *out) {
  float sy = (float)H / (float)h, sx = (float)W / (float)w;
  for (int64_t y = 0; y < h; y++) {
    float ry = sy * ((float)y + 0.5f) - 0.5f;
    if (ry < 0)
      ry = 0;
    int64_t y0 = (int64_t)ry;
    if (y0 > H - 1)
      y0 = H - 1;
    int64_t y1 = y0 + (y0 < H - 1 ? 1 : 0);
    float ly1 = ry - (float)y0, ly0 = 1.0f - ly1;
    for (int64_t x = 0; x < w; x++) {
      float rx = sx * ((float)x + 0.5f) - 0.5f;
      if (rx < 0)
        rx = 0;
      int64_t x0 = (int64_t)rx;
      if (x0 > W - 1)
        x0 = W - 1;
      int64_t x1 = x0 + (x0 < W - 1 ? 1 : 0);
      float lx1 = rx - (float)x0, lx0 = 1.0f - lx1;
      for (int64_t p = 0; p < n; p++) {
        const float *s = in + p * H * W;
        out[(p * h + y) * w + x] = ly0 * (lx0 * s[y0 * W + x0] + lx1 * s[y0 * W + x1]) +
                                   ly1 * (lx0 * s[y1 * W + x0] + lx1 * s[y1 * W + x1]);
      }
    }
  }
}

/* Planes of a mask [Bm, 1, H, W] or [Bm, H, W]: *n, *H, *W; false if it is neither. */
static bool fr__mask_dims(const struct fr_tensor *m, int64_t *n, int64_t *H, int64_t *W) {
  if (!m || m->dtype != FR_F32 || (m->ndim != 3 && !(m->ndim == 4 && m->shape[1] == 1)))
    return false;
  *H = m->shape[m->ndim - 2];
  *W = m->shape[m->ndim - 1];
  *n = m->shape[0];
  return *n > 0 && *H > 0 && *W > 0;
}

struct fr_tensor *fr_pipe_prepare_mask(const struct fr_tensor *m, int64_t B, int64_t C, int64_t h,
                                       int64_t w) {
  int64_t n, H, W;
  if (!fr__mask_dims(m, &n, &H, &W))
    return NULL;
  float *r = fr_malloc((size_t)(n * h * w) * sizeof(float)); /* [n, h, w] */
  struct fr_tensor *o = r ? fr_tensor_f32(4, (int64_t[]){B, C, h, w}) : NULL;
  if (!o) {
    fr_free(r);
    return NULL;
  }
  fr_pipe_bilinear(m->data, n, H, W, h, w, r);
  for (int64_t b = 0; b < B; b++) /* repeat_to_batch_size: cycles the mask's batch, cut to B */
    for (int64_t c = 0; c < C; c++)
      memcpy((float *)o->data + (b * C + c) * h * w, r + (b % n) * h * w, (size_t)(h * w) * sizeof(float));
  fr_free(r);
  return o;
}

/* ComfyUI's resize_to_batch_size: index of the source row for output row i of B (of n rows). */
static int64_t fr__batch_src(int64_t i, int64_t n, int64_t B) {
  if (n == B)
    return i;
  int64_t k;
  if (B < n) {
    double scale = (double)(n - 1) / (double)(B - 1 > 0 ? B - 1 : 1);
    k = (int64_t)nearbyint((double)i * scale);
  } else {
    k = (int64_t)floor(((double)i + 0.5) * ((double)n / (double)B));
  }
  return k < n - 1 ? k : n - 1;
}

/* The latent of an all-zero (mid-grey 0.5 after ComfyUI's scaling) image, per channel, that ComfyUI feeds
 * an SD inpainting model when nothing says what the masked image is (blank_inpaint_image_like). */
static const float fr__blank_latent[4] = {0.8223f, -0.6876f, 0.6364f, 0.1380f};

struct fr_tensor *fr_pipe_concat_cond(const struct fr_value *cond, const struct fr_tensor *noise_mask,
                                      const struct fr_tensor *latent, struct fr_err *err) {
  int64_t B = latent->shape[0], C = latent->shape[1], h = latent->shape[2], w = latent->shape[3], hw = h * w;
  const struct fr_tensor *cm = cond ? fr_value_get_tensor(cond, "concat_mask") : NULL;
  const struct fr_tensor *cl = cond ? fr_value_get_tensor(cond, "concat_latent_image") : NULL;
  if (C != 4) {
    fr_errf(err, FR_E_SHAPE, "an inpainting model's latent has 4 channels, this one %lld", (long long)C);
    return NULL;
  }
  if (cl && (cl->ndim != 4 || cl->shape[1] != C || cl->shape[2] != h || cl->shape[3] != w)) {
    char s[64];
    fr_errf(err, FR_E_SHAPE,
            "conditioning 'concat_latent_image' %s does not match the latent [%lld, %lld, %lld, %lld] (give "
            "InpaintModelConditioning the image the latent was made from)",
            fr_shape_str(cl, s, sizeof s), (long long)B, (long long)C, (long long)h, (long long)w);
    return NULL;
  }
  int64_t n = 0, H = 0, W = 0;
  if (cm && !fr__mask_dims(cm, &n, &H, &W)) {
    fr_errf(err, FR_E_SHAPE, "conditioning 'concat_mask': expected [B, 1, H, W] or [B, H, W]");
    return NULL;
  }
  struct fr_tensor *o = fr_tensor_f32(4, (int64_t[]){B, 5, h, w}); /* [B, mask + 4 latent, h, w] */
  float *r = cm ? fr_malloc((size_t)(n * hw) * sizeof(float)) : NULL;
  if (!o || (cm && !r)) {
    fr_tensor_free(o);
    fr_free(r);
    fr_errf(err, FR_E_NOMEM, "out of memory");
    return NULL;
  }
  float *od = o->data;
  if (cm) { /* resized to the latent (when its size differs), rounded, then to the batch */
    if (H == h && W == w)
      memcpy(r, cm->data, (size_t)(n * hw) * sizeof(float));
    else
      fr_pipe_bilinear(cm->data, n, H, W, h, w, r);
    for (int64_t i = 0; i < n * hw; i++)
      r[i] = nearbyintf(r[i]); /* torch.round: half to even */
  }
  for (int64_t b = 0; b < B; b++) {
    float *mo = od + b * 5 * hw, *lo = mo + hw;
    for (int64_t i = 0; i < hw; i++) {
      if (cm)
        mo[i] = r[fr__batch_src(b, n, B) * hw + i];
      else if (noise_mask) /* the prepared mask [B, C, h, w], channel 0 */
        mo[i] = nearbyintf(((const float *)noise_mask->data)[b * C * hw + i]);
      else
        mo[i] = 1.0f;
    }
    for (int64_t c = 0; c < 4; c++)
      for (int64_t i = 0; i < hw; i++) {
        float v;
        if (cl)
          v = ((const float *)cl->data)[(fr__batch_src(b, cl->shape[0], B) * C + c) * hw + i];
        else if (noise_mask)
          v = ((const float *)latent->data)[(b * C + c) * hw + i];
        else
          v = fr__blank_latent[c];
        lo[c * hw + i] = v;
      }
  }
  fr_free(r);
  return o;
}

/* ---- the mask handling shared by VAEEncodeForInpaint and InpaintModelConditioning ---- */

/* The MASK input "mask" resized bilinearly to the image's H0 x W0, cut to the H x W region at (oy, ox):
 * *out [Bm, 1, H, W]. The mask's batch must be 1 or the image's. */
static enum fr_status fr__mask_to_pixels(struct fr_node_ctx *nc, const struct fr_tensor *im, int64_t oy,
                                         int64_t ox, int64_t H, int64_t W, struct fr_tensor **out) {
  const struct fr_value *mv = fr_in(nc, "mask");
  const struct fr_tensor *m = mv ? fr_value_get_tensor(mv, "mask") : NULL;
  int64_t n, Hm, Wm, H0 = im->shape[1], W0 = im->shape[2];
  *out = NULL;
  if (!fr__mask_dims(m, &n, &Hm, &Wm))
    return fr_node_fail(nc, FR_E_INVALID, "input 'mask': expected a MASK [B, H, W]");
  if (n != 1 && n != im->shape[0])
    return fr_node_fail(nc, FR_E_SHAPE, "input 'mask': a batch of %lld masks for %lld images (1 or %lld)",
                        (long long)n, (long long)im->shape[0], (long long)im->shape[0]);
  float *full = fr_malloc((size_t)(n * H0 * W0) * sizeof(float));
  struct fr_tensor *o = full ? fr_tensor_f32(4, (int64_t[]){n, 1, H, W}) : NULL;
  if (!o) {
    fr_free(full);
    return fr__oom(nc);
  }
  fr_pipe_bilinear(m->data, n, Hm, Wm, H0, W0, full);
  for (int64_t p = 0; p < n; p++)
    for (int64_t y = 0; y < H; y++)
      memcpy((float *)o->data + (p * H + y) * W, full + (p * H0 + y + oy) * W0 + ox,
             (size_t)W * sizeof(float));
  fr_free(full);
  *out = o;
  return FR_OK;
}

/* The H x W region at (oy, ox) of image im with its masked pixels (rounded mask 1) set to 0.5: [B, H, W, 3].
 */
static struct fr_tensor *fr__grey_masked(const struct fr_tensor *im, const struct fr_tensor *mask, int64_t oy,
                                         int64_t ox, int64_t H, int64_t W) {
  int64_t B = im->shape[0], W0 = im->shape[2], C0 = im->shape[3], n = mask->shape[0];
  struct fr_tensor *o = fr_tensor_f32(4, (int64_t[]){B, H, W, 3});
  if (!o)
    return NULL;
  for (int64_t b = 0; b < B; b++)
    for (int64_t y = 0; y < H; y++)
      for (int64_t x = 0; x < W; x++) {
        float keep = 1.0f - nearbyintf(((const float *)mask->data)[((b % n) * H + y) * W + x]);
        const float *s = (const float *)im->data + ((b * im->shape[1] + y + oy) * W0 + x + ox) * C0;
        for (int c = 0; c < 3; c++) /* as ComfyUI: (p - 0.5) * keep + 0.5 */
          ((float *)o->data)[((b * H + y) * W + x) * 3 + c] = (s[c] - 0.5f) * keep + 0.5f;
      }
  return o;
}

/* The IMAGE input "pixels" and its crop to multiples of 8 (ComfyUI: offsets (size % 8) / 2). */
static enum fr_status fr__in_pixels(struct fr_node_ctx *nc, const struct fr_tensor **im, int64_t *oy,
                                    int64_t *ox, int64_t *H, int64_t *W) {
  const struct fr_value *iv = fr_in(nc, "pixels");
  *im = iv ? fr_value_get_tensor(iv, "image") : NULL;
  if (!*im || (*im)->ndim != 4 || (*im)->shape[3] < 3)
    return fr_node_fail(nc, FR_E_INVALID, "input 'pixels': expected an IMAGE [B, H, W, 3]");
  int64_t H0 = (*im)->shape[1], W0 = (*im)->shape[2];
  *H = H0 / 8 * 8;
  *W = W0 / 8 * 8;
  if (*H == 0 || *W == 0)
    return fr_node_fail(nc, FR_E_INVALID, "input 'pixels': image %lldx%lld is smaller than 8x8",
                        (long long)W0, (long long)H0);
  *oy = (H0 % 8) / 2;
  *ox = (W0 % 8) / 2;
  return FR_OK;
}

/* ---- VAEEncodeForInpaint ---- */

static enum fr_status fr__vefi_run(struct fr_node_ctx *nc) {
  const struct fr_tensor *im;
  int64_t oy, ox, H, W;
  enum fr_status rc = fr__in_pixels(nc, &im, &oy, &ox, &H, &W);
  if (rc)
    return rc;
  struct fr_tensor *mask = NULL, *grey = NULL, *grown = NULL, *lat = NULL;
  if ((rc = fr__mask_to_pixels(nc, im, oy, ox, H, W, &mask)))
    return rc;
  int g = (int)fr_in_int(nc, "grow_mask_by");
  int64_t n = mask->shape[0];
  /* The noise mask: the rounded mask dilated by a g x g box (conv2d with ones, padding ceil((g - 1) / 2),
   * clamped, cut to H x W: the box covers rows y - p .. y - p + g - 1), rounded. */
  grown = fr_tensor_f32(4, (int64_t[]){n, 1, H, W});
  grey = grown ? fr__grey_masked(im, mask, oy, ox, H, W) : NULL;
  if (!grey) {
    rc = fr__oom(nc);
    goto done;
  }
  int p = (g - 1 + 1) / 2; /* ceil((g - 1) / 2) */
  const float *md = mask->data;
  float *gd = grown->data;
  for (int64_t b = 0; b < n; b++)
    for (int64_t y = 0; y < H; y++)
      for (int64_t x = 0; x < W; x++) {
        float v = 0;
        if (g == 0) {
          v = nearbyintf(md[(b * H + y) * W + x]);
        } else {
          for (int64_t yy = y - p; yy < y - p + g && !v; yy++)
            for (int64_t xx = x - p; xx < x - p + g && !v; xx++)
              if (yy >= 0 && yy < H && xx >= 0 && xx < W && nearbyintf(md[(b * H + yy) * W + xx]) >= 1.0f)
                v = 1;
        }
        gd[(b * H + y) * W + x] = v;
      }
  struct fr_pipe_comp *m;
  if ((rc = fr_pipe_get(nc, "vae", FR_T_VAE, &m)) || (rc = fr_pipe_vae_encode(nc, m, grey, 0, 0, H, W, &lat)))
    goto done;
  struct fr_value *v = fr_value_tensor(FR_T_LATENT, "samples", lat);
  lat = NULL;
  if (!v || (rc = fr_value_add_tensor(v, "noise_mask", grown))) {
    grown = v ? NULL : grown;
    fr_value_unref(v);
    rc = fr__oom(nc);
    goto done;
  }
  grown = NULL;
  rc = fr_out_set(nc, 0, v);
done:
  fr_tensor_free(mask);
  fr_tensor_free(grey);
  fr_tensor_free(grown);
  fr_tensor_free(lat);
  return rc;
}

static const struct fr_input_spec fr__vefi_in[] = {
    {"pixels", FR_T_IMAGE, NULL, 0, -1, NULL, 0, "image to inpaint (cropped to multiples of 8)"},
    {"vae", FR_T_VAE, NULL, 0, -1, NULL, 0, "VAE from CheckpointLoader"},
    {"mask", FR_T_MASK, NULL, 0, -1, NULL, 0, "where to repaint (1), resized to the image"},
    {"grow_mask_by", FR_T_INT, "6", 0, 64, NULL, 0,
     "grow the noise mask by a box of this many pixels (seamless edges in latent space)"},
};
static const struct fr_output_spec fr__latent_out[] = {
    {"latent", FR_T_LATENT, "latents [B, 4, h, w] with their noise mask"}};
const struct fr_node_spec fr_node_vae_encode_for_inpaint = {
    "VAEEncodeForInpaint",
    1,
    "latent",
    "Encodes an image with its masked pixels set to grey (0.5) and carries the (grown) mask as the latent's "
    "noise mask: for inpainting models at denoise 1.",
    fr__vefi_in,
    FR_COUNT(fr__vefi_in),
    fr__latent_out,
    FR_COUNT(fr__latent_out),
    0,
    fr__vefi_run};

/* ---- SetLatentNoiseMask ---- */

/* A copy of data value src without its field `skip` (NULL: all). */
static struct fr_value *fr__copy_without(const struct fr_value *src, const char *skip) {
  struct fr_value *o = fr_value_data(src->type);
  for (int i = 0; o && i < src->n_fields; i++) {
    const struct fr_field *f = &src->fields[i];
    if (skip && !strcmp(f->name, skip))
      continue;
    enum fr_status rc;
    if (f->t) {
      struct fr_tensor *t = fr_tensor_clone(f->t);
      rc = t ? fr_value_add_tensor(o, f->name, t) : FR_E_NOMEM;
    } else {
      rc = fr_value_add_string(o, f->name, f->str ? f->str : "");
    }
    if (rc) {
      fr_value_unref(o);
      o = NULL;
    }
  }
  return o;
}

static enum fr_status fr__slnm_run(struct fr_node_ctx *nc) {
  const struct fr_value *lv = fr_in(nc, "samples"), *mv = fr_in(nc, "mask");
  const struct fr_tensor *s = lv ? fr_value_get_tensor(lv, "samples") : NULL;
  const struct fr_tensor *m = mv ? fr_value_get_tensor(mv, "mask") : NULL;
  int64_t n, H, W;
  if (!s || s->ndim != 4)
    return fr_node_fail(nc, FR_E_INVALID, "input 'samples': expected a LATENT [B, 4, h, w]");
  if (!fr__mask_dims(m, &n, &H, &W))
    return fr_node_fail(nc, FR_E_INVALID, "input 'mask': expected a MASK [B, H, W]");
  struct fr_value *o = fr__copy_without(lv, "noise_mask");
  struct fr_tensor *t = o ? fr_tensor_clone(m) : NULL;
  if (!t) {
    fr_value_unref(o);
    return fr__oom(nc);
  }
  fr_tensor_reshape(t, 4, (int64_t[]){n, 1, H, W}); /* [B, 1, H, W], any size: resized when sampling */
  if (fr_value_add_tensor(o, "noise_mask", t)) {
    fr_value_unref(o);
    return fr__oom(nc);
  }
  return fr_out_set(nc, 0, o);
}
static const struct fr_input_spec fr__slnm_in[] = {
    {"samples", FR_T_LATENT, NULL, 0, -1, NULL, 0, "latents to repaint part of"},
    {"mask", FR_T_MASK, NULL, 0, -1, NULL, 0,
     "where the sampler may change the latent (1); resized to the latent when sampling"},
};
const struct fr_node_spec fr_node_set_latent_noise_mask = {
    "SetLatentNoiseMask",
    1,
    "latent",
    "Attaches a noise mask to latents: the Sampler then only changes them where the mask is 1.",
    fr__slnm_in,
    FR_COUNT(fr__slnm_in),
    fr__latent_out,
    FR_COUNT(fr__latent_out),
    0,
    fr__slnm_run};

/* ---- InpaintModelConditioning ---- */

/* A copy of conditioning c with concat_latent_image and concat_mask set (copies of lat and mask). */
static struct fr_value *fr__with_concat(const struct fr_value *c, const struct fr_tensor *lat,
                                        const struct fr_tensor *mask) {
  struct fr_value *o = fr__copy_without(c, "concat_latent_image");
  struct fr_value *o2 = o ? fr__copy_without(o, "concat_mask") : NULL;
  fr_value_unref(o);
  struct fr_tensor *a = o2 ? fr_tensor_clone(lat) : NULL, *b = o2 ? fr_tensor_clone(mask) : NULL;
  enum fr_status rc = a && b ? FR_OK : FR_E_NOMEM;
  if (!rc) { /* fr_value_add_tensor takes the tensor also on failure */
    rc = fr_value_add_tensor(o2, "concat_latent_image", a);
    a = NULL;
  }
  if (!rc) {
    rc = fr_value_add_tensor(o2, "concat_mask", b);
    b = NULL;
  }
  fr_tensor_free(a);
  fr_tensor_free(b);
  if (rc) {
    fr_value_unref(o2);
    return NULL;
  }
  return o2;
}

static enum fr_status fr__imc_run(struct fr_node_ctx *nc) {
  const struct fr_value *pos = fr_in(nc, "positive"), *neg = fr_in(nc, "negative");
  if (!pos || !fr_value_get_tensor(pos, "context"))
    return fr_node_fail(nc, FR_E_INVALID, "input 'positive': no CONDITIONING connected");
  if (!neg || !fr_value_get_tensor(neg, "context"))
    return fr_node_fail(nc, FR_E_INVALID, "input 'negative': no CONDITIONING connected");
  const struct fr_tensor *im;
  int64_t oy, ox, H, W;
  enum fr_status rc = fr__in_pixels(nc, &im, &oy, &ox, &H, &W);
  if (rc)
    return rc;
  struct fr_tensor *mask = NULL, *grey = NULL, *concat = NULL, *orig = NULL;
  struct fr_value *po = NULL, *no = NULL, *lo = NULL;
  if ((rc = fr__mask_to_pixels(nc, im, oy, ox, H, W, &mask)))
    return rc;
  struct fr_pipe_comp *m;
  if ((rc = fr_pipe_get(nc, "vae", FR_T_VAE, &m)))
    goto done;
  if (!(grey = fr__grey_masked(im, mask, oy, ox, H, W))) {
    rc = fr__oom(nc);
    goto done;
  }
  /* the masked image's latent (the model's concat input) and the whole image's (what is sampled) */
  if ((rc = fr_pipe_vae_encode(nc, m, grey, 0, 0, H, W, &concat)) ||
      (rc = fr_pipe_vae_encode(nc, m, im, oy, ox, H, W, &orig)))
    goto done;
  po = fr__with_concat(pos, concat, mask);
  no = po ? fr__with_concat(neg, concat, mask) : NULL;
  if (no) {
    lo = fr_value_tensor(FR_T_LATENT, "samples", orig);
    orig = NULL;
  }
  if (lo && fr_in_bool(nc, "noise_mask")) {
    struct fr_tensor *t = fr_tensor_clone(mask);
    if (!t || fr_value_add_tensor(lo, "noise_mask", t)) {
      fr_value_unref(lo);
      lo = NULL;
    }
  }
  if (!lo) {
    rc = fr__oom(nc);
    goto done;
  }
  rc = fr_out_set(nc, 0, po);
  po = NULL;
  if (!rc)
    rc = fr_out_set(nc, 1, no);
  no = NULL;
  if (!rc)
    rc = fr_out_set(nc, 2, lo);
  lo = NULL;
done:
  fr_value_unref(po);
  fr_value_unref(no);
  fr_value_unref(lo);
  fr_tensor_free(mask);
  fr_tensor_free(grey);
  fr_tensor_free(concat);
  fr_tensor_free(orig);
  return rc;
}
static const struct fr_input_spec fr__imc_in[] = {
    {"positive", FR_T_CONDITIONING, NULL, 0, -1, NULL, 0, "positive conditioning"},
    {"negative", FR_T_CONDITIONING, NULL, 0, -1, NULL, 0, "negative conditioning"},
    {"vae", FR_T_VAE, NULL, 0, -1, NULL, 0, "VAE from CheckpointLoader"},
    {"pixels", FR_T_IMAGE, NULL, 0, -1, NULL, 0, "image to inpaint (cropped to multiples of 8)"},
    {"mask", FR_T_MASK, NULL, 0, -1, NULL, 0, "where to repaint (1), resized to the image"},
    {"noise_mask", FR_T_BOOL, "true", 0, -1, NULL, 0,
     "also attach the mask to the latent, so the Sampler keeps the rest of the image"},
};
static const struct fr_output_spec fr__imc_out[] = {
    {"positive", FR_T_CONDITIONING, "positive with the mask and the masked image's latent"},
    {"negative", FR_T_CONDITIONING, "negative with the same"},
    {"latent", FR_T_LATENT, "the whole image's latent (with the noise mask)"},
};
const struct fr_node_spec fr_node_inpaint_model_conditioning = {
    "InpaintModelConditioning",
    1,
    "conditioning",
    "Gives an inpainting model (9-channel UNet) the mask and the masked image's latent through both "
    "conditionings, and the image's latent to sample.",
    fr__imc_in,
    FR_COUNT(fr__imc_in),
    fr__imc_out,
    FR_COUNT(fr__imc_out),
    0,
    fr__imc_run};
