/* Mask operations and nodes, as ComfyUI's comfy_extras/nodes_mask.py defines them (see
 * nodes/image/edit.h for each definition). Masks are F32 [B, H, W] in [0, 1]. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/png.h"
#include "nodes/image/edit.h"
#include "nodes/image/edit_util.h"
#include "nodes/image/image.h"

#define FR__MAX_SIDE 16384

enum fr_status fr_mask_check(const struct fr_tensor *t, const char *what, struct fr_err *err) {
  char s[64];
  if (!t)
    return fr_errf(err, FR_E_INVALID, "%s: no mask", what);
  if (t->dtype != FR_F32 || t->dev != FR_DEV_CPU || t->ndim != 3 || t->shape[0] < 1 || t->shape[1] < 1 ||
      t->shape[2] < 1)
    return fr_errf(err, FR_E_SHAPE, "%s: expected an F32 mask [B, H, W], got %s %s", what,
                   fr_dtype_name(t->dtype), fr_shape_str(t, s, sizeof s));
  return FR_OK;
}

static struct fr_tensor *fr__mask_new(int64_t b, int64_t h, int64_t w) {
  return fr_tensor_f32(3, (int64_t[]){b, h, w});
}

static enum fr_status fr__nomem(struct fr_err *err, const char *what) {
  return fr_errf(err, FR_E_NOMEM, "%s: out of memory", what);
}

enum fr_status fr_mask_load_png(const char *path, int channel, struct fr_tensor **out, struct fr_err *err) {
  *out = NULL;
  if (channel < 0 || channel > 3)
    return fr_errf(err, FR_E_INVALID, "%s: channel %d out of range (0 alpha, 1 red, 2 green, 3 blue)", path,
                   channel);
  struct fr_tensor *px = NULL;
  enum fr_status rc = fr_png_read(path, &px, err);
  if (rc)
    return rc;
  int64_t H = px->shape[0], W = px->shape[1], C = px->shape[2];
  struct fr_tensor *m = fr__mask_new(1, H, W);
  if (!m) {
    fr_tensor_free(px);
    return fr__nomem(err, path);
  }
  const float *s = px->data;
  float *o = m->data;
  for (int64_t i = 0; i < H * W; i++) {
    if (channel == 0) /* alpha: 1 - alpha; no alpha in the file is opaque (ComfyUI converts to RGBA) */
      o[i] = C == 4 ? 1.0f - s[i * C + 3] : 0.0f;
    else /* grey files have their one value in every colour channel */
      o[i] = s[i * C + (C >= 3 ? channel - 1 : 0)];
  }
  fr_tensor_free(px);
  *out = m;
  return FR_OK;
}

enum fr_status fr_image_to_mask(const struct fr_tensor *img, int channel, struct fr_tensor **out,
                                struct fr_err *err) {
  *out = NULL;
  enum fr_status rc = fr_image_check(img, "image to mask", err);
  if (rc)
    return rc;
  static const char *const names[] = {"red", "green", "blue", "alpha"};
  int64_t B = img->shape[0], H = img->shape[1], W = img->shape[2], C = img->shape[3];
  if (channel < 0 || channel > 3 || channel >= C)
    return fr_errf(err, FR_E_INVALID, "image to mask: channel %s: the image has %lld channel%s",
                   channel >= 0 && channel <= 3 ? names[channel] : "?", (long long)C, C == 1 ? "" : "s");
  struct fr_tensor *m = fr__mask_new(B, H, W);
  if (!m)
    return fr__nomem(err, "image to mask");
  const float *s = img->data;
  float *o = m->data;
  for (int64_t i = 0; i < B * H * W; i++)
    o[i] = s[i * C + channel];
  *out = m;
  return FR_OK;
}

enum fr_status fr_mask_to_image(const struct fr_tensor *mask, struct fr_tensor **out, struct fr_err *err) {
  *out = NULL;
  enum fr_status rc = fr_mask_check(mask, "mask to image", err);
  if (rc)
    return rc;
  int64_t n = fr_tensor_numel(mask);
  struct fr_tensor *t = fr_tensor_f32(4, (int64_t[]){mask->shape[0], mask->shape[1], mask->shape[2], 3});
  if (!t)
    return fr__nomem(err, "mask to image");
  const float *s = mask->data;
  float *o = t->data;
  for (int64_t i = 0; i < n; i++)
    o[i * 3] = o[i * 3 + 1] = o[i * 3 + 2] = s[i];
  *out = t;
  return FR_OK;
}

enum fr_status fr_mask_invert(const struct fr_tensor *mask, struct fr_tensor **out, struct fr_err *err) {
  *out = NULL;
  enum fr_status rc = fr_mask_check(mask, "invert mask", err);
  if (rc)
    return rc;
  struct fr_tensor *t = fr_tensor_clone(mask);
  if (!t)
    return fr__nomem(err, "invert mask");
  float *p = t->data;
  for (int64_t i = 0; i < fr_tensor_numel(t); i++)
    p[i] = 1.0f - p[i];
  *out = t;
  return FR_OK;
}

enum fr_status fr_mask_grow(const struct fr_tensor *mask, int expand, bool tapered_corners,
                            struct fr_tensor **out, struct fr_err *err) {
  *out = NULL;
  enum fr_status rc = fr_mask_check(mask, "grow mask", err);
  if (rc)
    return rc;
  if (expand < -FR__MAX_SIDE || expand > FR__MAX_SIDE)
    return fr_errf(err, FR_E_INVALID, "grow mask: expand %d out of range (-%d to %d)", expand, FR__MAX_SIDE,
                   FR__MAX_SIDE);
  int64_t B = mask->shape[0], H = mask->shape[1], W = mask->shape[2];
  struct fr_tensor *t = fr_tensor_clone(mask);
  float *tmp = fr_malloc((size_t)(H * W) * sizeof *tmp);
  if (!t || !tmp) {
    fr_tensor_free(t);
    fr_free(tmp);
    return fr__nomem(err, "grow mask");
  }
  bool dilate = expand > 0;
  int passes = abs(expand);
  /* Passes beyond H + W change nothing more: every pixel has then seen the whole mask's extreme. */
  if (passes > H + W)
    passes = (int)(H + W);
  for (int64_t b = 0; b < B; b++) {
    float *p = (float *)t->data + b * H * W;
    for (int pass = 0; pass < passes; pass++) {
      memcpy(tmp, p, (size_t)(H * W) * sizeof *tmp);
      for (int64_t y = 0; y < H; y++)
        for (int64_t x = 0; x < W; x++) {
          float v = tmp[y * W + x];
          for (int dy = -1; dy <= 1; dy++)
            for (int dx = -1; dx <= 1; dx++) {
              if (tapered_corners && dy != 0 && dx != 0)
                continue; /* the cross: corners not in the footprint */
              /* scipy's "reflect" border: index -1 is 0, index n is n - 1 */
              int64_t yy = y + dy < 0 ? 0 : (y + dy >= H ? H - 1 : y + dy);
              int64_t xx = x + dx < 0 ? 0 : (x + dx >= W ? W - 1 : x + dx);
              float u = tmp[yy * W + xx];
              v = dilate ? (u > v ? u : v) : (u < v ? u : v);
            }
          p[y * W + x] = v;
        }
    }
  }
  fr_free(tmp);
  *out = t;
  return FR_OK;
}

enum fr_status fr_mask_feather(const struct fr_tensor *mask, int left, int top, int right, int bottom,
                               struct fr_tensor **out, struct fr_err *err) {
  *out = NULL;
  enum fr_status rc = fr_mask_check(mask, "feather mask", err);
  if (rc)
    return rc;
  if (left < 0 || top < 0 || right < 0 || bottom < 0)
    return fr_errf(err, FR_E_INVALID,
                   "feather mask: left %d, top %d, right %d, bottom %d must not be negative", left, top,
                   right, bottom);
  int64_t B = mask->shape[0], H = mask->shape[1], W = mask->shape[2];
  if (left > W)
    left = (int)W;
  if (right > W)
    right = (int)W;
  if (top > H)
    top = (int)H;
  if (bottom > H)
    bottom = (int)H;
  struct fr_tensor *t = fr_tensor_clone(mask);
  if (!t)
    return fr__nomem(err, "feather mask");
  for (int64_t b = 0; b < B; b++) {
    float *p = (float *)t->data + b * H * W;
    /* in ComfyUI's order: left, right, top, bottom, each a float32 multiply */
    for (int x = 0; x < left; x++)
      for (int64_t y = 0; y < H; y++)
        p[y * W + x] *= (float)((x + 1.0) / left);
    for (int x = 0; x < right; x++)
      for (int64_t y = 0; y < H; y++)
        p[y * W + (W - 1 - x)] *= (float)((x + 1.0) / right);
    for (int y = 0; y < top; y++)
      for (int64_t x = 0; x < W; x++)
        p[y * W + x] *= (float)((y + 1.0) / top);
    for (int y = 0; y < bottom; y++)
      for (int64_t x = 0; x < W; x++)
        p[(H - 1 - y) * W + x] *= (float)((y + 1.0) / bottom);
  }
  *out = t;
  return FR_OK;
}

enum fr_status fr_mask_solid(double value, int width, int height, struct fr_tensor **out,
                             struct fr_err *err) {
  *out = NULL;
  if (width < 1 || height < 1 || width > FR__MAX_SIDE || height > FR__MAX_SIDE)
    return fr_errf(err, FR_E_INVALID, "solid mask: size %dx%d out of range (1 to %d a side)", width, height,
                   FR__MAX_SIDE);
  if (!isfinite(value))
    return fr_errf(err, FR_E_INVALID, "solid mask: value %g is not a number", value);
  struct fr_tensor *t = fr__mask_new(1, height, width);
  if (!t)
    return fr__nomem(err, "solid mask");
  float *p = t->data;
  for (int64_t i = 0; i < (int64_t)width * height; i++)
    p[i] = (float)value;
  *out = t;
  return FR_OK;
}

enum fr_status fr_mask_threshold(const struct fr_tensor *mask, double value, struct fr_tensor **out,
                                 struct fr_err *err) {
  *out = NULL;
  enum fr_status rc = fr_mask_check(mask, "threshold mask", err);
  if (rc)
    return rc;
  struct fr_tensor *t = fr_tensor_clone(mask);
  if (!t)
    return fr__nomem(err, "threshold mask");
  float *p = t->data;
  /* torch compares the float32 mask with the Python float as a float32 scalar */
  float v = (float)value;
  for (int64_t i = 0; i < fr_tensor_numel(t); i++)
    p[i] = p[i] > v ? 1.0f : 0.0f;
  *out = t;
  return FR_OK;
}

/* torch.round(x).bool(): half to even, then nonzero. */
static bool fr__round_bool(float x) {
  return nearbyintf(x) != 0.0f;
}

enum fr_status fr_mask_composite(const struct fr_tensor *dst, const struct fr_tensor *src, int x, int y,
                                 enum fr_mask_op op, struct fr_tensor **out, struct fr_err *err) {
  *out = NULL;
  enum fr_status rc = fr_mask_check(dst, "mask composite destination", err);
  if (!rc)
    rc = fr_mask_check(src, "mask composite source", err);
  if (rc)
    return rc;
  if (x < 0 || y < 0)
    return fr_errf(err, FR_E_INVALID, "mask composite: x %d and y %d must not be negative", x, y);
  if (op < FR_MASK_MULTIPLY || op > FR_MASK_XOR)
    return fr_errf(err, FR_E_INVALID, "mask composite: unknown operation %d", (int)op);
  int64_t Bd = dst->shape[0], Bs = src->shape[0];
  if (Bd != Bs && Bd != 1 && Bs != 1)
    return fr_errf(
        err, FR_E_SHAPE,
        "mask composite: destination has %lld masks and source %lld: they need the same count or 1",
        (long long)Bd, (long long)Bs);
  int64_t B = Bd > Bs ? Bd : Bs, H = dst->shape[1], W = dst->shape[2], Hs = src->shape[1], Ws = src->shape[2];
  struct fr_tensor *t = fr__mask_new(B, H, W);
  if (!t)
    return fr__nomem(err, "mask composite");
  int64_t right = x + Ws < W ? x + Ws : W, bottom = y + Hs < H ? y + Hs : H;
  for (int64_t b = 0; b < B; b++) {
    const float *d = (const float *)dst->data + (Bd == 1 ? 0 : b) * H * W;
    const float *s = (const float *)src->data + (Bs == 1 ? 0 : b) * Hs * Ws;
    float *o = (float *)t->data + b * H * W;
    for (int64_t i = 0; i < H * W; i++)
      o[i] = d[i];
    for (int64_t yy = y; yy < bottom; yy++)
      for (int64_t xx = x; xx < right; xx++) {
        float a = o[yy * W + xx], v = s[(yy - y) * Ws + (xx - x)], r = a;
        switch (op) {
        case FR_MASK_MULTIPLY: r = a * v; break;
        case FR_MASK_ADD: r = a + v; break;
        case FR_MASK_SUBTRACT: r = a - v; break;
        case FR_MASK_AND: r = (fr__round_bool(a) && fr__round_bool(v)) ? 1.0f : 0.0f; break;
        case FR_MASK_OR: r = (fr__round_bool(a) || fr__round_bool(v)) ? 1.0f : 0.0f; break;
        case FR_MASK_XOR: r = (fr__round_bool(a) != fr__round_bool(v)) ? 1.0f : 0.0f; break;
        }
        o[yy * W + xx] = r;
      }
    for (int64_t i = 0; i < H * W; i++)
      o[i] = o[i] < 0.0f ? 0.0f : (o[i] > 1.0f ? 1.0f : o[i]);
  }
  *out = t;
  return FR_OK;
}

/* ---- nodes ---- */

static enum fr_status fr__fail(struct fr_node_ctx *nc, enum fr_status rc, const struct fr_err *err) {
  return fr_node_fail(nc, rc, "%s", err->msg);
}

/* Finishes a node that made one MASK: fails with err's message or sets output 0. */
static enum fr_status fr__mask_done(struct fr_node_ctx *nc, enum fr_status rc, struct fr_tensor *t,
                                    const struct fr_err *err) {
  if (rc)
    return fr__fail(nc, rc, err);
  return fr__edit_out(nc, 0, FR_T_MASK, "mask", t);
}

static const struct fr_output_spec fr__mask_out[] = {{"mask", FR_T_MASK, "the resulting mask [B, H, W]"}};
static const struct fr_input_spec fr__mask_in[] = {
    {"mask", FR_T_MASK, NULL, 0, -1, NULL, 0, "mask [B, H, W]"},
};

/* LoadImageMask */
static const char *const fr__lim_channels[] = {"alpha", "red", "green", "blue", NULL};
static enum fr_status fr__load_image_mask_run(struct fr_node_ctx *nc) {
  const char *path = fr_in_path(nc, "image");
  if (!path)
    return fr_node_fail(nc, FR_E_INVALID, "input 'image': no file given");
  struct fr_err err;
  struct fr_tensor *t;
  enum fr_status rc = fr_mask_load_png(path, fr__edit_choice(nc, "channel", fr__lim_channels), &t, &err);
  return fr__mask_done(nc, rc, t, &err);
}
static const struct fr_input_spec fr__load_image_mask_in[] = {
    {"image", FR_T_STRING, NULL, 0, -1, NULL, FR_IN_FILE, "PNG file, relative to the graph's folder"},
    {"channel", FR_T_ENUM, "alpha", 0, -1, fr__lim_channels, 0,
     "alpha gives 1 - alpha (opaque when the file has none); a colour channel its value"},
};
const struct fr_node_spec fr_node_load_image_mask = {
    "LoadImageMask",
    1,
    "mask",
    "One channel of a PNG file as a mask.",
    fr__load_image_mask_in,
    FR_COUNT(fr__load_image_mask_in),
    fr__mask_out,
    1,
    0,
    fr__load_image_mask_run,
};

/* ImageToMask */
static const char *const fr__itm_channels[] = {"red", "green", "blue", "alpha", NULL};
static enum fr_status fr__image_to_mask_run(struct fr_node_ctx *nc) {
  const struct fr_tensor *img;
  enum fr_status rc = fr__edit_in(nc, "image", "image", &img);
  if (rc)
    return rc;
  struct fr_err err;
  struct fr_tensor *t;
  rc = fr_image_to_mask(img, fr__edit_choice(nc, "channel", fr__itm_channels), &t, &err);
  return fr__mask_done(nc, rc, t, &err);
}
static const struct fr_input_spec fr__image_to_mask_in[] = {
    {"image", FR_T_IMAGE, NULL, 0, -1, NULL, 0, "image [B, H, W, C]"},
    {"channel", FR_T_ENUM, "red", 0, -1, fr__itm_channels, 0, "the channel that becomes the mask"},
};
const struct fr_node_spec fr_node_image_to_mask = {
    "ImageToMask",
    1,
    "mask",
    "One channel of an image as a mask.",
    fr__image_to_mask_in,
    FR_COUNT(fr__image_to_mask_in),
    fr__mask_out,
    1,
    0,
    fr__image_to_mask_run,
};

/* MaskToImage */
static enum fr_status fr__mask_to_image_run(struct fr_node_ctx *nc) {
  const struct fr_tensor *m;
  enum fr_status rc = fr__edit_in(nc, "mask", "mask", &m);
  if (rc)
    return rc;
  struct fr_err err;
  struct fr_tensor *t;
  rc = fr_mask_to_image(m, &t, &err);
  if (rc)
    return fr__fail(nc, rc, &err);
  return fr__edit_out(nc, 0, FR_T_IMAGE, "image", t);
}
static const struct fr_output_spec fr__mask_to_image_out[] = {
    {"image", FR_T_IMAGE, "grey image [B, H, W, 3]"}};
const struct fr_node_spec fr_node_mask_to_image = {
    "MaskToImage",         1, "mask", "A mask as a grey RGB image.", fr__mask_in, 1,
    fr__mask_to_image_out, 1, 0,      fr__mask_to_image_run,
};

/* InvertMask */
static enum fr_status fr__invert_mask_run(struct fr_node_ctx *nc) {
  const struct fr_tensor *m;
  enum fr_status rc = fr__edit_in(nc, "mask", "mask", &m);
  if (rc)
    return rc;
  struct fr_err err;
  struct fr_tensor *t;
  rc = fr_mask_invert(m, &t, &err);
  return fr__mask_done(nc, rc, t, &err);
}
const struct fr_node_spec fr_node_invert_mask = {
    "InvertMask", 1, "mask", "1 - mask.", fr__mask_in, 1, fr__mask_out, 1, 0, fr__invert_mask_run,
};

/* GrowMask */
static enum fr_status fr__grow_mask_run(struct fr_node_ctx *nc) {
  const struct fr_tensor *m;
  enum fr_status rc = fr__edit_in(nc, "mask", "mask", &m);
  if (rc)
    return rc;
  struct fr_err err;
  struct fr_tensor *t;
  rc = fr_mask_grow(m, (int)fr_in_int(nc, "expand"), fr_in_bool(nc, "tapered_corners"), &t, &err);
  return fr__mask_done(nc, rc, t, &err);
}
static const struct fr_input_spec fr__grow_mask_in[] = {
    {"mask", FR_T_MASK, NULL, 0, -1, NULL, 0, "mask [B, H, W]"},
    {"expand", FR_T_INT, "0", -16384, 16384, NULL, 0,
     "pixels to grow (grey dilation) or, negative, to shrink (grey erosion)"},
    {"tapered_corners", FR_T_BOOL, "true", 0, -1, NULL, 0, "true: 3x3 cross footprint; false: 3x3 square"},
};
const struct fr_node_spec fr_node_grow_mask = {
    "GrowMask",
    1,
    "mask",
    "Grows or shrinks a mask by whole pixels.",
    fr__grow_mask_in,
    FR_COUNT(fr__grow_mask_in),
    fr__mask_out,
    1,
    0,
    fr__grow_mask_run,
};

/* FeatherMask */
static enum fr_status fr__feather_mask_run(struct fr_node_ctx *nc) {
  const struct fr_tensor *m;
  enum fr_status rc = fr__edit_in(nc, "mask", "mask", &m);
  if (rc)
    return rc;
  struct fr_err err;
  struct fr_tensor *t;
  rc = fr_mask_feather(m, (int)fr_in_int(nc, "left"), (int)fr_in_int(nc, "top"), (int)fr_in_int(nc, "right"),
                       (int)fr_in_int(nc, "bottom"), &t, &err);
  return fr__mask_done(nc, rc, t, &err);
}
static const struct fr_input_spec fr__feather_mask_in[] = {
    {"mask", FR_T_MASK, NULL, 0, -1, NULL, 0, "mask [B, H, W]"},
    {"left", FR_T_INT, "0", 0, 16384, NULL, 0, "columns faded in from the left edge"},
    {"top", FR_T_INT, "0", 0, 16384, NULL, 0, "rows faded in from the top edge"},
    {"right", FR_T_INT, "0", 0, 16384, NULL, 0, "columns faded in from the right edge"},
    {"bottom", FR_T_INT, "0", 0, 16384, NULL, 0, "rows faded in from the bottom edge"},
};
const struct fr_node_spec fr_node_feather_mask = {
    "FeatherMask",
    1,
    "mask",
    "Fades a mask linearly towards its edges.",
    fr__feather_mask_in,
    FR_COUNT(fr__feather_mask_in),
    fr__mask_out,
    1,
    0,
    fr__feather_mask_run,
};

/* SolidMask */
static enum fr_status fr__solid_mask_run(struct fr_node_ctx *nc) {
  struct fr_err err;
  struct fr_tensor *t;
  enum fr_status rc = fr_mask_solid(fr_in_float(nc, "value"), (int)fr_in_int(nc, "width"),
                                    (int)fr_in_int(nc, "height"), &t, &err);
  return fr__mask_done(nc, rc, t, &err);
}
static const struct fr_input_spec fr__solid_mask_in[] = {
    {"value", FR_T_FLOAT, "1.0", 0.0, 1.0, NULL, 0, "the mask's value everywhere"},
    {"width", FR_T_INT, "512", 1, 16384, NULL, 0, "width in pixels"},
    {"height", FR_T_INT, "512", 1, 16384, NULL, 0, "height in pixels"},
};
const struct fr_node_spec fr_node_solid_mask = {
    "SolidMask",
    1,
    "mask",
    "A mask [1, height, width] of one value.",
    fr__solid_mask_in,
    FR_COUNT(fr__solid_mask_in),
    fr__mask_out,
    1,
    0,
    fr__solid_mask_run,
};

/* ThresholdMask */
static enum fr_status fr__threshold_mask_run(struct fr_node_ctx *nc) {
  const struct fr_tensor *m;
  enum fr_status rc = fr__edit_in(nc, "mask", "mask", &m);
  if (rc)
    return rc;
  struct fr_err err;
  struct fr_tensor *t;
  rc = fr_mask_threshold(m, fr_in_float(nc, "value"), &t, &err);
  return fr__mask_done(nc, rc, t, &err);
}
static const struct fr_input_spec fr__threshold_mask_in[] = {
    {"mask", FR_T_MASK, NULL, 0, -1, NULL, 0, "mask [B, H, W]"},
    {"value", FR_T_FLOAT, "0.5", 0.0, 1.0, NULL, 0, "pixels above it become 1, the rest 0"},
};
const struct fr_node_spec fr_node_threshold_mask = {
    "ThresholdMask",
    1,
    "mask",
    "1 where the mask is above a value, else 0.",
    fr__threshold_mask_in,
    FR_COUNT(fr__threshold_mask_in),
    fr__mask_out,
    1,
    0,
    fr__threshold_mask_run,
};

/* MaskComposite */
static const char *const fr__mask_ops[] = {"multiply", "add", "subtract", "and", "or", "xor", NULL};
static enum fr_status fr__mask_composite_run(struct fr_node_ctx *nc) {
  const struct fr_tensor *d, *s;
  enum fr_status rc = fr__edit_in(nc, "destination", "mask", &d);
  if (!rc)
    rc = fr__edit_in(nc, "source", "mask", &s);
  if (rc)
    return rc;
  struct fr_err err;
  struct fr_tensor *t;
  rc = fr_mask_composite(d, s, (int)fr_in_int(nc, "x"), (int)fr_in_int(nc, "y"),
                         (enum fr_mask_op)fr__edit_choice(nc, "operation", fr__mask_ops), &t, &err);
  return fr__mask_done(nc, rc, t, &err);
}
static const struct fr_input_spec fr__mask_composite_in[] = {
    {"destination", FR_T_MASK, NULL, 0, -1, NULL, 0, "mask written into"},
    {"source", FR_T_MASK, NULL, 0, -1, NULL, 0, "mask combined into destination at (x, y)"},
    {"x", FR_T_INT, "0", 0, 16384, NULL, 0, "left edge of source in destination"},
    {"y", FR_T_INT, "0", 0, 16384, NULL, 0, "top edge of source in destination"},
    {"operation", FR_T_ENUM, "multiply", 0, -1, fr__mask_ops, 0,
     "how the overlap combines; and/or/xor on values rounded to 0 or 1"},
};
const struct fr_node_spec fr_node_mask_composite = {
    "MaskComposite",
    1,
    "mask",
    "Combines a source mask into a destination mask at a position.",
    fr__mask_composite_in,
    FR_COUNT(fr__mask_composite_in),
    fr__mask_out,
    1,
    0,
    fr__mask_composite_run,
};
