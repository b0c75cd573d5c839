/* Batches: RepeatLatentBatch, LatentFromBatch, ImageBatch, ImageFromBatch, with ComfyUI's semantics
 * (nodes.py): a latent taken out of a batch remembers where it came from ("batch_index", F32 [B]) so the
 * Sampler draws the same noise for it as for the whole batch (ComfyUI's prepare_noise), and its noise
 * mask follows it. */
#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "nodes/image/image.h"
#include "nodes/pipeline/pipeline.h"

static enum fr_status fr__oom(struct fr_node_ctx *nc) {
  return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
}

/* Rows [rows[0], rows[1], ...] (n of them) of t along dim 0: a new tensor [n, ...]. */
static struct fr_tensor *fr__rows(const struct fr_tensor *t, const int64_t *rows, int64_t n) {
  int64_t shape[8];
  memcpy(shape, t->shape, (size_t)t->ndim * sizeof(int64_t));
  shape[0] = n;
  struct fr_tensor *o = fr_tensor_new(t->dtype, t->ndim, shape);
  if (!o)
    return NULL;
  size_t row = fr_tensor_nbytes(t) / (size_t)t->shape[0];
  for (int64_t i = 0; i < n; i++)
    memcpy((char *)o->data + (size_t)i * row, (const char *)t->data + (size_t)rows[i] * row, row);
  return o;
}

/* The batch index of every row of latent lv: its "batch_index" field, or 0 .. B-1. */
static bool fr__batch_index(const struct fr_value *lv, int64_t B, float *out) {
  const struct fr_tensor *bi = fr_value_get_tensor(lv, "batch_index");
  if (bi && (bi->dtype != FR_F32 || fr_tensor_numel(bi) != B))
    return false;
  for (int64_t i = 0; i < B; i++)
    out[i] = bi ? ((const float *)bi->data)[i] : (float)i;
  return true;
}

/* A LATENT value of samples s (taken), noise mask m (taken, may be NULL) and batch index bi (n floats, may
 * be NULL), set as output 0. */
static enum fr_status fr__out_latent(struct fr_node_ctx *nc, struct fr_tensor *s, struct fr_tensor *m,
                                     const float *bi, int64_t n) {
  struct fr_value *v = fr_value_tensor(FR_T_LATENT, "samples", s);
  enum fr_status rc = v ? FR_OK : FR_E_NOMEM;
  if (!rc && m) {
    rc = fr_value_add_tensor(v, "noise_mask", m);
    m = NULL;
  }
  if (!rc && bi) {
    struct fr_tensor *t = fr_tensor_f32(1, (int64_t[]){n});
    if (t)
      memcpy(t->data, bi, (size_t)n * sizeof(float));
    rc = t ? fr_value_add_tensor(v, "batch_index", t) : FR_E_NOMEM;
  }
  fr_tensor_free(m);
  if (rc) {
    fr_value_unref(v);
    return fr__oom(nc);
  }
  return fr_out_set(nc, 0, v);
}

static enum fr_status fr__in_latent(struct fr_node_ctx *nc, const struct fr_value **lv,
                                    const struct fr_tensor **s, const struct fr_tensor **m) {
  *lv = fr_in(nc, "samples");
  *s = *lv ? fr_value_get_tensor(*lv, "samples") : NULL;
  if (!*s || (*s)->ndim != 4 || (*s)->dtype != FR_F32)
    return fr_node_fail(nc, FR_E_INVALID, "input 'samples': expected a LATENT [B, 4, h, w]");
  *m = fr_value_get_tensor(*lv, "noise_mask");
  if (*m && ((*m)->ndim < 3 || (*m)->shape[0] < 1))
    return fr_node_fail(nc, FR_E_SHAPE, "input 'samples': its noise_mask is not [B, 1, H, W]");
  return FR_OK;
}

/* ---- RepeatLatentBatch ---- */

static enum fr_status fr__repeat_run(struct fr_node_ctx *nc) {
  const struct fr_value *lv;
  const struct fr_tensor *s, *m;
  enum fr_status rc = fr__in_latent(nc, &lv, &s, &m);
  if (rc)
    return rc;
  int64_t amount = fr_in_int(nc, "amount"), B = s->shape[0], n = B * amount;
  int64_t *rows = fr_malloc((size_t)n * sizeof(int64_t));
  float *bi = fr_malloc((size_t)n * sizeof(float)), *src = fr_malloc((size_t)B * sizeof(float));
  struct fr_tensor *os = NULL, *om = NULL;
  if (!rows || !bi || !src) {
    rc = fr__oom(nc);
    goto done;
  }
  if (!fr__batch_index(lv, B, src)) {
    rc = fr_node_fail(nc, FR_E_SHAPE, "input 'samples': batch_index does not match the batch");
    goto done;
  }
  /* the copies' batch indices follow the originals' (offset by their span), as ComfyUI */
  float lo = src[0], hi = src[0];
  for (int64_t i = 0; i < B; i++)
    lo = src[i] < lo ? src[i] : lo, hi = src[i] > hi ? src[i] : hi;
  for (int64_t i = 0; i < n; i++) {
    rows[i] = i % B;
    bi[i] = src[i % B] + (float)(i / B) * (hi - lo + 1);
  }
  os = fr__rows(s, rows, n);
  if (m && m->shape[0] > 1) { /* a per-sample mask: repeated to the batch, then with the samples */
    for (int64_t i = 0; i < n; i++)
      rows[i] = (i % B) % m->shape[0];
    om = fr__rows(m, rows, n);
  } else if (m) {
    om = fr_tensor_clone(m);
  }
  if (!os || (m && !om)) {
    rc = fr__oom(nc);
    goto done;
  }
  bool has_bi = fr_value_get_tensor(lv, "batch_index") != NULL;
  rc = fr__out_latent(nc, os, om, has_bi ? bi : NULL, n);
  os = om = NULL;
done:
  fr_tensor_free(os);
  fr_tensor_free(om);
  fr_free(rows);
  fr_free(bi);
  fr_free(src);
  return rc;
}
static const struct fr_input_spec fr__repeat_in[] = {
    {"samples", FR_T_LATENT, NULL, 0, -1, NULL, 0, "latents to repeat"},
    {"amount", FR_T_INT, "1", 1, 64, NULL, 0, "copies of the whole batch"},
};
static const struct fr_output_spec fr__latent_out[] = {{"latent", FR_T_LATENT, "latents [B, 4, h, w]"}};
const struct fr_node_spec fr_node_repeat_latent_batch = {
    "RepeatLatentBatch",
    1,
    "latent",
    "Repeats a latent batch amount times (with its noise mask).",
    fr__repeat_in,
    FR_COUNT(fr__repeat_in),
    fr__latent_out,
    FR_COUNT(fr__latent_out),
    0,
    fr__repeat_run};

/* ---- LatentFromBatch ---- */

/* ComfyUI's clamping of (batch_index, length) to a batch of B: first index at most B - 1, length at most
 * what is left. */
static void fr__clamp_range(int64_t B, int64_t *idx, int64_t *len) {
  if (*idx > B - 1)
    *idx = B - 1;
  if (*len > B - *idx)
    *len = B - *idx;
}

static enum fr_status fr__from_batch_run(struct fr_node_ctx *nc) {
  const struct fr_value *lv;
  const struct fr_tensor *s, *m;
  enum fr_status rc = fr__in_latent(nc, &lv, &s, &m);
  if (rc)
    return rc;
  int64_t B = s->shape[0], idx = fr_in_int(nc, "batch_index"), len = fr_in_int(nc, "length");
  fr__clamp_range(B, &idx, &len);
  int64_t *rows = fr_malloc((size_t)len * sizeof(int64_t));
  float *src = fr_malloc((size_t)B * sizeof(float)), *bi = fr_malloc((size_t)len * sizeof(float));
  struct fr_tensor *os = NULL, *om = NULL;
  if (!rows || !src || !bi) {
    rc = fr__oom(nc);
    goto done;
  }
  if (!fr__batch_index(lv, B, src)) {
    rc = fr_node_fail(nc, FR_E_SHAPE, "input 'samples': batch_index does not match the batch");
    goto done;
  }
  for (int64_t i = 0; i < len; i++) {
    rows[i] = idx + i;
    bi[i] = src[idx + i];
  }
  os = fr__rows(s, rows, len);
  if (m && m->shape[0] == 1) {
    om = fr_tensor_clone(m);
  } else if (m) { /* repeated to the batch (cycling), then the same rows */
    for (int64_t i = 0; i < len; i++)
      rows[i] = (idx + i) % m->shape[0];
    om = fr__rows(m, rows, len);
  }
  if (!os || (m && !om)) {
    rc = fr__oom(nc);
    goto done;
  }
  rc = fr__out_latent(nc, os, om, bi, len);
  os = om = NULL;
done:
  fr_tensor_free(os);
  fr_tensor_free(om);
  fr_free(rows);
  fr_free(src);
  fr_free(bi);
  return rc;
}
static const struct fr_input_spec fr__from_batch_in[] = {
    {"samples", FR_T_LATENT, NULL, 0, -1, NULL, 0, "a batch of latents"},
    {"batch_index", FR_T_INT, "0", 0, 63, NULL, 0, "first latent to take (0-based)"},
    {"length", FR_T_INT, "1", 1, 64, NULL, 0, "how many"},
};
const struct fr_node_spec fr_node_latent_from_batch = {
    "LatentFromBatch",
    1,
    "latent",
    "Takes latents out of a batch; they keep their batch index, so a Sampler gives them the noise they "
    "had in the batch.",
    fr__from_batch_in,
    FR_COUNT(fr__from_batch_in),
    fr__latent_out,
    FR_COUNT(fr__latent_out),
    0,
    fr__from_batch_run};

/* ---- ImageBatch / ImageFromBatch ---- */

static enum fr_status fr__in_image(struct fr_node_ctx *nc, const char *name, const struct fr_tensor **t) {
  const struct fr_value *v = fr_in(nc, name);
  *t = v ? fr_value_get_tensor(v, "image") : NULL;
  struct fr_err err = {{0}};
  if (!*t)
    return fr_node_fail(nc, FR_E_INVALID, "input '%s': no IMAGE connected", name);
  if (fr_image_check(*t, name, &err))
    return fr_node_fail(nc, FR_E_SHAPE, "input %s", err.msg);
  return FR_OK;
}

static enum fr_status fr__image_batch_run(struct fr_node_ctx *nc) {
  const struct fr_tensor *a, *b;
  enum fr_status rc = fr__in_image(nc, "image1", &a);
  if (!rc)
    rc = fr__in_image(nc, "image2", &b);
  if (rc)
    return rc;
  if (a->shape[3] != b->shape[3])
    return fr_node_fail(nc, FR_E_SHAPE, "input 'image2': %lld channels, image1 has %lld",
                        (long long)b->shape[3], (long long)a->shape[3]);
  struct fr_tensor *rb = NULL;
  struct fr_err err = {{0}};
  if (a->shape[1] != b->shape[1] || a->shape[2] != b->shape[2]) { /* ComfyUI: bilinear, centre crop */
    if ((rc = fr_image_resize(b, (int)a->shape[2], (int)a->shape[1], FR_RESIZE_BILINEAR, true, &rb, &err)))
      return fr_node_fail(nc, rc, "input 'image2': %s", err.msg);
    b = rb;
  }
  int64_t Ba = a->shape[0], Bb = b->shape[0];
  struct fr_tensor *o = fr_tensor_f32(4, (int64_t[]){Ba + Bb, a->shape[1], a->shape[2], a->shape[3]});
  if (o) {
    memcpy(o->data, a->data, fr_tensor_nbytes(a));
    memcpy((char *)o->data + fr_tensor_nbytes(a), b->data, fr_tensor_nbytes(b));
  }
  fr_tensor_free(rb);
  struct fr_value *v = o ? fr_value_tensor(FR_T_IMAGE, "image", o) : NULL;
  return v ? fr_out_set(nc, 0, v) : fr__oom(nc);
}
static const struct fr_input_spec fr__image_batch_in[] = {
    {"image1", FR_T_IMAGE, NULL, 0, -1, NULL, 0, "first images"},
    {"image2", FR_T_IMAGE, NULL, 0, -1, NULL, 0,
     "appended after them (resized bilinearly with a centre crop to image1's size when it differs)"},
};
static const struct fr_output_spec fr__image_out[] = {{"image", FR_T_IMAGE, "images [B, H, W, C]"}};
const struct fr_node_spec fr_node_image_batch = {"ImageBatch",
                                                 1,
                                                 "image",
                                                 "Joins two image batches into one.",
                                                 fr__image_batch_in,
                                                 FR_COUNT(fr__image_batch_in),
                                                 fr__image_out,
                                                 FR_COUNT(fr__image_out),
                                                 0,
                                                 fr__image_batch_run};

static enum fr_status fr__image_from_batch_run(struct fr_node_ctx *nc) {
  const struct fr_tensor *im;
  enum fr_status rc = fr__in_image(nc, "image", &im);
  if (rc)
    return rc;
  int64_t B = im->shape[0], idx = fr_in_int(nc, "batch_index"), len = fr_in_int(nc, "length");
  fr__clamp_range(B, &idx, &len);
  int64_t *rows = fr_malloc((size_t)len * sizeof(int64_t));
  for (int64_t i = 0; rows && i < len; i++)
    rows[i] = idx + i;
  struct fr_tensor *o = rows ? fr__rows(im, rows, len) : NULL;
  fr_free(rows);
  struct fr_value *v = o ? fr_value_tensor(FR_T_IMAGE, "image", o) : NULL;
  return v ? fr_out_set(nc, 0, v) : fr__oom(nc);
}
static const struct fr_input_spec fr__image_from_batch_in[] = {
    {"image", FR_T_IMAGE, NULL, 0, -1, NULL, 0, "a batch of images"},
    {"batch_index", FR_T_INT, "0", 0, 4095, NULL, 0, "first image to take (0-based)"},
    {"length", FR_T_INT, "1", 1, 4096, NULL, 0, "how many"},
};
const struct fr_node_spec fr_node_image_from_batch = {"ImageFromBatch",
                                                      1,
                                                      "image",
                                                      "Takes images out of a batch.",
                                                      fr__image_from_batch_in,
                                                      FR_COUNT(fr__image_from_batch_in),
                                                      fr__image_out,
                                                      FR_COUNT(fr__image_out),
                                                      0,
                                                      fr__image_from_batch_run};
