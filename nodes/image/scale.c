/* Scaling, crop, composite and outpaint padding, as ComfyUI defines them (comfy/utils.py common_upscale and
 * bislerp; nodes.py ImageScale, LatentUpscale, ImageCrop, LatentCrop, LatentComposite, ImagePadForOutpaint):
 * see nodes/image/edit.h. The interpolations follow PyTorch's CPU kernels (float32 source coordinates,
 * align_corners False) so a workflow resizes to the same numbers as in ComfyUI. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "nodes/image/edit.h"
#include "nodes/image/edit_util.h"
#include "nodes/image/image.h"

#define FR__MAX_SIDE 16384

const char *const fr_upscale_method_names[] = {"nearest-exact", "bilinear", "area",
                                               "bicubic",       "bislerp",  NULL};
const char *const fr_image_scale_method_names[] = {"nearest-exact", "bilinear", "area",
                                                   "bicubic",       "lanczos",  NULL};

static enum fr_status fr__nomem(struct fr_err *err, const char *what) {
  return fr_errf(err, FR_E_NOMEM, "%s: out of memory", what);
}

/* Python's round() of a float: half to even. */
static int64_t fr__pyround(double v) {
  return (int64_t)nearbyint(v);
}

/* A strided view of one batch item's [C, h, w] values: element (c, y, x) at p[c sc + y sy + x sx]. */
struct fr__plane {
  float *p;
  int64_t sc, sy, sx;
};
#define FR__AT(v, c, y, x) ((v).p[(c) * (v).sc + (y) * (v).sy + (x) * (v).sx])

/* Cubic convolution weight (Keys, a = -0.75 as PyTorch) for distance t. */
static float fr__cubic(float t) {
  const float a = -0.75f;
  t = fabsf(t);
  if (t <= 1.0f)
    return ((a + 2.0f) * t - (a + 3.0f)) * t * t + 1.0f;
  if (t < 2.0f)
    return ((a * t - 5.0f * a) * t + 8.0f * a) * t - 4.0f * a;
  return 0.0f;
}

/* Linear interpolation data of one axis, torch's area_pixel_compute_source_index (align_corners False):
 * source i0, i1 = min(i0 + 1, n - 1) and weight l of i1, for output index i of n_out. */
static void fr__linear_src(int64_t i, int64_t n, int64_t n_out, int64_t *i0, int64_t *i1, float *l) {
  float scale = (float)n / (float)n_out;
  float src = scale * ((float)i + 0.5f) - 0.5f;
  if (src < 0.0f)
    src = 0.0f;
  int64_t k = (int64_t)src;
  if (k > n - 1)
    k = n - 1;
  *i0 = k;
  *i1 = k + (k < n - 1 ? 1 : 0);
  *l = src - (float)k;
}

/* src [C, h, w] -> dst [C, oh, ow] with one of the torch interpolations (not bislerp). */
static void fr__interp(struct fr__plane s, int64_t C, int64_t h, int64_t w, struct fr__plane d, int64_t oh,
                       int64_t ow, enum fr_upscale_method m) {
  float sy = (float)h / (float)oh, sx = (float)w / (float)ow;
  for (int64_t y = 0; y < oh; y++) {
    for (int64_t x = 0; x < ow; x++) {
      if (m == FR_UP_NEAREST_EXACT) {
        /* torch: floorf((dst + 0.5) * scale), the double product rounded to float first */
        int64_t iy = (int64_t)floorf((float)(((double)y + 0.5) * sy));
        int64_t ix = (int64_t)floorf((float)(((double)x + 0.5) * sx));
        iy = iy < h ? iy : h - 1;
        ix = ix < w ? ix : w - 1;
        for (int64_t c = 0; c < C; c++)
          FR__AT(d, c, y, x) = FR__AT(s, c, iy, ix);
      } else if (m == FR_UP_BILINEAR) {
        int64_t y0, y1, x0, x1;
        float ly, lx;
        fr__linear_src(y, h, oh, &y0, &y1, &ly);
        fr__linear_src(x, w, ow, &x0, &x1, &lx);
        for (int64_t c = 0; c < C; c++)
          FR__AT(d, c, y, x) =
              (1.0f - ly) * ((1.0f - lx) * FR__AT(s, c, y0, x0) + lx * FR__AT(s, c, y0, x1)) +
              ly * ((1.0f - lx) * FR__AT(s, c, y1, x0) + lx * FR__AT(s, c, y1, x1));
      } else if (m == FR_UP_BICUBIC) {
        float fy = sy * ((float)y + 0.5f) - 0.5f, fx = sx * ((float)x + 0.5f) - 0.5f;
        float fly = floorf(fy), flx = floorf(fx);
        int64_t iy = (int64_t)fly, ix = (int64_t)flx;
        float ty = fy - fly, tx = fx - flx;
        float wy[4] = {fr__cubic(ty + 1.0f), fr__cubic(ty), fr__cubic(1.0f - ty), fr__cubic(2.0f - ty)};
        float wx[4] = {fr__cubic(tx + 1.0f), fr__cubic(tx), fr__cubic(1.0f - tx), fr__cubic(2.0f - tx)};
        for (int64_t c = 0; c < C; c++) {
          float v = 0.0f;
          for (int j = 0; j < 4; j++) {
            int64_t yy = iy - 1 + j;
            yy = yy < 0 ? 0 : (yy >= h ? h - 1 : yy);
            float row = 0.0f;
            for (int i = 0; i < 4; i++) {
              int64_t xx = ix - 1 + i;
              xx = xx < 0 ? 0 : (xx >= w ? w - 1 : xx);
              row += wx[i] * FR__AT(s, c, yy, xx);
            }
            v += wy[j] * row;
          }
          FR__AT(d, c, y, x) = v;
        }
      } else { /* area: adaptive average pooling */
        int64_t ya = y * h / oh, yb = ((y + 1) * h + oh - 1) / oh;
        int64_t xa = x * w / ow, xb = ((x + 1) * w + ow - 1) / ow;
        for (int64_t c = 0; c < C; c++) {
          float v = 0.0f;
          for (int64_t yy = ya; yy < yb; yy++)
            for (int64_t xx = xa; xx < xb; xx++)
              v += FR__AT(s, c, yy, xx);
          FR__AT(d, c, y, x) = v / (float)(yb - ya) / (float)(xb - xa); /* torch: sum / kh / kw */
        }
      }
    }
  }
}

/* bislerp's generate_bilinear_data: for output index i of n_out along an axis of n, the two source
 * indices and the ratio, computed as ComfyUI does (bilinear interpolation of arange(n) and of
 * arange(n) + 1 with the last entry n - 1, in float32). */
static void fr__bislerp_coords(int64_t i, int64_t n, int64_t n_out, int64_t *c1, int64_t *c2, float *r) {
  int64_t i0, i1;
  float l;
  fr__linear_src(i, n, n_out, &i0, &i1, &l);
  float v1 = (1.0f - l) * (float)i0 + l * (float)i1;
  /* arange(n) + 1 with its last entry set back to n - 1 */
  float b0 = i0 < n - 1 ? (float)(i0 + 1) : (float)(n - 1);
  float b1 = i1 < n - 1 ? (float)(i1 + 1) : (float)(n - 1);
  float v2 = (1.0f - l) * b0 + l * b1;
  *r = v1 - floorf(v1);
  *c1 = (int64_t)v1;
  *c2 = (int64_t)v2;
}

/* ComfyUI's slerp of two C-vectors a, b (stride st) with ratio r into o (contiguous). */
static void fr__slerp(const float *a, const float *b, int64_t st, int64_t C, float r, float *o) {
  float na = 0.0f, nb = 0.0f;
  for (int64_t c = 0; c < C; c++) {
    na += a[c * st] * a[c * st];
    nb += b[c * st] * b[c * st];
  }
  na = sqrtf(na);
  nb = sqrtf(nb);
  float dot = 0.0f;
  for (int64_t c = 0; c < C; c++) {
    float an = na == 0.0f ? 0.0f : a[c * st] / na, bn = nb == 0.0f ? 0.0f : b[c * st] / nb;
    dot += an * bn;
  }
  if (dot > 1.0f - 1e-5f) { /* (nearly) the same direction: b1 */
    for (int64_t c = 0; c < C; c++)
      o[c] = a[c * st];
    return;
  }
  if (dot < 1e-5f - 1.0f) { /* opposite: linear */
    for (int64_t c = 0; c < C; c++)
      o[c] = a[c * st] * (1.0f - r) + b[c * st] * r;
    return;
  }
  float omega = acosf(dot), so = sinf(omega);
  float ka = sinf((1.0f - r) * omega) / so, kb = sinf(r * omega) / so, norm = na * (1.0f - r) + nb * r;
  for (int64_t c = 0; c < C; c++) {
    float an = na == 0.0f ? 0.0f : a[c * st] / na, bn = nb == 0.0f ? 0.0f : b[c * st] / nb;
    o[c] = (ka * an + kb * bn) * norm;
  }
}

/* bislerp: src [C, h, w] -> dst [C, oh, ow], slerping along x into tmp [h, ow, C], then along y. */
static enum fr_status fr__bislerp(struct fr__plane s, int64_t C, int64_t h, int64_t w, struct fr__plane d,
                                  int64_t oh, int64_t ow) {
  float *tmp = fr_malloc((size_t)(h * ow * C) * sizeof *tmp), *v = fr_malloc((size_t)C * sizeof *v);
  if (!tmp || !v) {
    fr_free(tmp);
    fr_free(v);
    return FR_E_NOMEM;
  }
  for (int64_t x = 0; x < ow; x++) {
    int64_t c1, c2;
    float r;
    fr__bislerp_coords(x, w, ow, &c1, &c2, &r);
    for (int64_t y = 0; y < h; y++)
      fr__slerp(&FR__AT(s, 0, y, c1), &FR__AT(s, 0, y, c2), s.sc, C, r, tmp + (y * ow + x) * C);
  }
  for (int64_t y = 0; y < oh; y++) {
    int64_t c1, c2;
    float r;
    fr__bislerp_coords(y, h, oh, &c1, &c2, &r);
    for (int64_t x = 0; x < ow; x++) {
      fr__slerp(tmp + (c1 * ow + x) * C, tmp + (c2 * ow + x) * C, 1, C, r, v);
      for (int64_t c = 0; c < C; c++)
        FR__AT(d, c, y, x) = v[c];
    }
  }
  fr_free(tmp);
  fr_free(v);
  return FR_OK;
}

/* ---- PIL's LANCZOS on 8-bit images (Pillow's Resample.c, what ComfyUI's lanczos calls) ---- */

#define FR__PIL_PRECISION 22 /* 32 - 8 - 2 bits */

static double fr__sinc(double x) {
  if (x == 0.0)
    return 1.0;
  x *= M_PI;
  return sin(x) / x;
}
static double fr__lanczos3(double x) {
  return (-3.0 <= x && x < 3.0) ? fr__sinc(x) * fr__sinc(x / 3.0) : 0.0;
}

/* The coefficients of one axis (precompute_coeffs + normalize_coeffs_8bpc): output i reads n[i] inputs from
 * x0[i] with the fixed-point weights k[i ksize ...]. Returns ksize, 0 when out of memory. */
static int fr__pil_coeffs(int64_t in, int64_t out, int64_t **x0, int64_t **n, int32_t **k) {
  double scale = (double)in / (double)out, filterscale = scale < 1.0 ? 1.0 : scale,
         support = 3.0 * filterscale;
  int ksize = (int)ceil(support) * 2 + 1;
  *x0 = fr_malloc((size_t)out * sizeof **x0);
  *n = fr_malloc((size_t)out * sizeof **n);
  *k = fr_malloc((size_t)out * (size_t)ksize * sizeof **k);
  double *w = fr_malloc((size_t)ksize * sizeof *w);
  if (!*x0 || !*n || !*k || !w) {
    fr_free(w);
    return 0;
  }
  for (int64_t i = 0; i < out; i++) {
    double center = ((double)i + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
    int64_t xmin = (int64_t)(center - support + 0.5), xmax = (int64_t)(center + support + 0.5);
    if (xmin < 0)
      xmin = 0;
    if (xmax > in)
      xmax = in;
    xmax -= xmin;
    for (int64_t x = 0; x < xmax; x++)
      ww += (w[x] = fr__lanczos3(((double)(x + xmin) - center + 0.5) * ss));
    for (int64_t x = 0; x < ksize; x++) {
      double v = x < xmax && ww != 0.0 ? w[x] / ww : (x < xmax ? w[x] : 0.0);
      (*k)[i * ksize + x] =
          (int32_t)(v < 0 ? -0.5 + v * (1 << FR__PIL_PRECISION) : 0.5 + v * (1 << FR__PIL_PRECISION));
    }
    (*x0)[i] = xmin;
    (*n)[i] = xmax;
  }
  fr_free(w);
  return ksize;
}

static uint8_t fr__clip8(int64_t v) {
  if (v >= ((int64_t)1 << FR__PIL_PRECISION << 8))
    return 255;
  if (v <= 0)
    return 0;
  return (uint8_t)(v >> FR__PIL_PRECISION);
}

/* One pass along an axis of 8-bit [lines, in, C] data (stride: elements between neighbours along the axis;
 * line_stride between lines) into [lines, out, C]. */
static enum fr_status fr__pil_pass(const uint8_t *src, int64_t lines, int64_t in, int64_t C, int64_t s_line,
                                   int64_t s_ax, uint8_t *dst, int64_t out, int64_t d_line, int64_t d_ax) {
  int64_t *x0, *n;
  int32_t *k;
  int ksize = fr__pil_coeffs(in, out, &x0, &n, &k);
  enum fr_status rc = ksize ? FR_OK : FR_E_NOMEM;
  for (int64_t l = 0; ksize && l < lines; l++)
    for (int64_t i = 0; i < out; i++)
      for (int64_t c = 0; c < C; c++) {
        int64_t ss = (int64_t)1 << (FR__PIL_PRECISION - 1);
        for (int64_t x = 0; x < n[i]; x++)
          ss += (int64_t)src[l * s_line + (x0[i] + x) * s_ax + c] * k[i * ksize + x];
        dst[l * d_line + i * d_ax + c] = fr__clip8(ss);
      }
  fr_free(x0);
  fr_free(n);
  fr_free(k);
  return rc;
}

/* ComfyUI's lanczos on one image region: s [h, w, C] (row stride sy) -> d [oh, ow, C] (contiguous). */
static enum fr_status fr__lanczos_image(const float *s, int64_t sy, int64_t h, int64_t w, int64_t C, float *d,
                                        int64_t oh, int64_t ow) {
  uint8_t *a = fr_malloc((size_t)(h * w * C)), *b = fr_malloc((size_t)(h * ow * C)),
          *o = fr_malloc((size_t)(oh * ow * C));
  enum fr_status rc = a && b && o ? FR_OK : FR_E_NOMEM;
  for (int64_t y = 0; !rc && y < h; y++)
    for (int64_t i = 0; i < w * C; i++) {
      float v = 255.0f * s[y * sy + i]; /* np.clip(255. * x, 0, 255).astype(uint8): truncated */
      a[y * w * C + i] = (uint8_t)(v > 0.0f ? (v < 255.0f ? v : 255.0f) : 0.0f);
    }
  const uint8_t *cur = a;
  if (!rc && ow != w) { /* horizontal: lines are rows */
    rc = fr__pil_pass(a, h, w, C, w * C, C, b, ow, ow * C, C);
    cur = b;
  }
  if (!rc && oh != h) /* vertical: lines are columns (and channels) */
    rc = fr__pil_pass(cur, ow, h, C, C, ow * C, o, oh, C, ow * C);
  else if (!rc)
    memcpy(o, cur, (size_t)(oh * ow * C));
  for (int64_t i = 0; !rc && i < oh * ow * C; i++)
    d[i] = (float)o[i] / 255.0f;
  fr_free(a);
  fr_free(b);
  fr_free(o);
  return rc;
}

/* common_upscale over a batch whose items are strided planes: channels_last is the IMAGE layout
 * [B, H, W, C], else [B, C, H, W]. */
static enum fr_status fr__common_upscale(const struct fr_tensor *x, bool channels_last, int width, int height,
                                         enum fr_upscale_method m, bool crop_center, struct fr_tensor **out,
                                         struct fr_err *err) {
  *out = NULL;
  if (m < FR_UP_NEAREST_EXACT || m > FR_UP_LANCZOS || (m == FR_UP_LANCZOS && !channels_last))
    return fr_errf(err, FR_E_INVALID, "upscale: unknown method %d (lanczos is for images)", (int)m);
  if (width < 1 || height < 1 || width > FR__MAX_SIDE || height > FR__MAX_SIDE)
    return fr_errf(err, FR_E_INVALID, "upscale: target %dx%d out of range (1 to %d a side)", width, height,
                   FR__MAX_SIDE);
  int64_t B = x->shape[0], C = channels_last ? x->shape[3] : x->shape[1];
  int64_t H = channels_last ? x->shape[1] : x->shape[2], W = channels_last ? x->shape[2] : x->shape[3];
  int64_t x0 = 0, y0 = 0;
  if (crop_center) {
    double old_aspect = (double)W / (double)H, new_aspect = (double)width / (double)height;
    if (old_aspect > new_aspect)
      x0 = fr__pyround((W - W * (new_aspect / old_aspect)) / 2.0);
    else if (old_aspect < new_aspect)
      y0 = fr__pyround((H - H * (old_aspect / new_aspect)) / 2.0);
  }
  int64_t h = H - 2 * y0, w = W - 2 * x0;
  if (h < 1 || w < 1)
    return fr_errf(err, FR_E_INVALID, "upscale: centre crop of %lldx%lld to aspect %dx%d leaves nothing",
                   (long long)W, (long long)H, width, height);
  int64_t shape[4] = {B, C, height, width};
  if (channels_last)
    shape[1] = height, shape[2] = width, shape[3] = C;
  struct fr_tensor *t = fr_tensor_f32(4, shape);
  if (!t)
    return fr__nomem(err, "upscale");
  for (int64_t b = 0; b < B; b++) {
    float *sp = (float *)x->data + b * C * H * W, *dp = (float *)t->data + b * C * height * width;
    struct fr__plane s, d;
    if (channels_last) {
      s = (struct fr__plane){sp + (y0 * W + x0) * C, 1, W * C, C};
      d = (struct fr__plane){dp, 1, (int64_t)width * C, C};
    } else {
      s = (struct fr__plane){sp + y0 * W + x0, H * W, W, 1};
      d = (struct fr__plane){dp, (int64_t)height * width, width, 1};
    }
    if (m == FR_UP_LANCZOS) {
      if (fr__lanczos_image(s.p, s.sy, h, w, C, d.p, height, width) != FR_OK) {
        fr_tensor_free(t);
        return fr__nomem(err, "upscale");
      }
    } else if (m == FR_UP_BISLERP) {
      if (fr__bislerp(s, C, h, w, d, height, width) != FR_OK) {
        fr_tensor_free(t);
        return fr__nomem(err, "upscale");
      }
    } else {
      fr__interp(s, C, h, w, d, height, width, m);
    }
  }
  *out = t;
  return FR_OK;
}

static enum fr_status fr__check_latent(const struct fr_tensor *t, const char *what, struct fr_err *err) {
  char s[64];
  if (!t || t->dtype != FR_F32 || t->dev != FR_DEV_CPU || t->ndim != 4 || t->shape[0] < 1 ||
      t->shape[1] < 1 || t->shape[2] < 1 || t->shape[3] < 1)
    return fr_errf(err, FR_E_SHAPE, "%s: expected latent samples F32 [B, C, h, w], got %s", what,
                   t ? fr_shape_str(t, s, sizeof s) : "nothing");
  return FR_OK;
}

enum fr_status fr_common_upscale(const struct fr_tensor *x, int width, int height, enum fr_upscale_method m,
                                 bool crop_center, struct fr_tensor **out, struct fr_err *err) {
  *out = NULL;
  enum fr_status rc = fr__check_latent(x, "upscale", err);
  return rc ? rc : fr__common_upscale(x, false, width, height, m, crop_center, out, err);
}

static void fr__clamp01(struct fr_tensor *t) {
  float *p = t->data;
  for (int64_t i = 0; i < fr_tensor_numel(t); i++)
    p[i] = p[i] < 0.0f ? 0.0f : (p[i] > 1.0f ? 1.0f : p[i]);
}

enum fr_status fr_image_scale(const struct fr_tensor *img, int width, int height, enum fr_upscale_method m,
                              bool crop_center, struct fr_tensor **out, struct fr_err *err) {
  *out = NULL;
  enum fr_status rc = fr_image_check(img, "image scale", err);
  if (rc)
    return rc;
  if (m == FR_UP_BISLERP)
    return fr_errf(err, FR_E_INVALID, "image scale: bislerp is for latents (LatentUpscale)");
  if (width < 0 || height < 0)
    return fr_errf(err, FR_E_INVALID, "image scale: width %d, height %d must not be negative", width, height);
  int64_t H = img->shape[1], W = img->shape[2];
  if (width == 0 && height == 0) {
    *out = fr_tensor_clone(img);
    return *out ? FR_OK : fr__nomem(err, "image scale");
  }
  if (width == 0) {
    int64_t v = fr__pyround((double)W * height / (double)H);
    width = (int)(v < 1 ? 1 : (v > FR__MAX_SIDE + 1 ? FR__MAX_SIDE + 1 : v));
  } else if (height == 0) {
    int64_t v = fr__pyround((double)H * width / (double)W);
    height = (int)(v < 1 ? 1 : (v > FR__MAX_SIDE + 1 ? FR__MAX_SIDE + 1 : v));
  }
  rc = fr__common_upscale(img, true, width, height, m, crop_center, out, err);
  if (!rc)
    fr__clamp01(*out);
  return rc;
}

/* round(n scale_by) as a size, or an error naming what. */
static enum fr_status fr__scaled(int64_t n, double scale_by, const char *what, int *out, struct fr_err *err) {
  if (!(scale_by > 0.0) || !isfinite(scale_by))
    return fr_errf(err, FR_E_INVALID, "%s: scale_by %g must be greater than 0", what, scale_by);
  double v = nearbyint((double)n * scale_by);
  if (v < 1 || v > FR__MAX_SIDE)
    return fr_errf(err, FR_E_INVALID, "%s: %lld x %g gives %.0f, out of range (1 to %d)", what, (long long)n,
                   scale_by, v, FR__MAX_SIDE);
  *out = (int)v;
  return FR_OK;
}

enum fr_status fr_image_scale_by(const struct fr_tensor *img, double scale_by, enum fr_upscale_method m,
                                 struct fr_tensor **out, struct fr_err *err) {
  *out = NULL;
  enum fr_status rc = fr_image_check(img, "image scale by", err);
  int w = 0, h = 0;
  if (!rc)
    rc = fr__scaled(img->shape[2], scale_by, "image scale by", &w, err);
  if (!rc)
    rc = fr__scaled(img->shape[1], scale_by, "image scale by", &h, err);
  return rc ? rc : fr_image_scale(img, w, h, m, false, out, err);
}

enum fr_status fr_latent_upscale(const struct fr_tensor *samples, int width, int height,
                                 enum fr_upscale_method m, bool crop_center, struct fr_tensor **out,
                                 struct fr_err *err) {
  *out = NULL;
  enum fr_status rc = fr__check_latent(samples, "latent upscale", err);
  if (rc)
    return rc;
  if (width < 0 || height < 0 || width > FR__MAX_SIDE || height > FR__MAX_SIDE)
    return fr_errf(err, FR_E_INVALID, "latent upscale: width %d, height %d out of range (0 to %d)", width,
                   height, FR__MAX_SIDE);
  if (width == 0 && height == 0) {
    *out = fr_tensor_clone(samples);
    return *out ? FR_OK : fr__nomem(err, "latent upscale");
  }
  int64_t h = samples->shape[2], w = samples->shape[3];
  int64_t W = width, H = height;
  if (W == 0) {
    H = H > 64 ? H : 64;
    W = fr__pyround((double)w * H / (double)h);
    W = W > 64 ? W : 64;
  } else if (H == 0) {
    W = W > 64 ? W : 64;
    H = fr__pyround((double)h * W / (double)w);
    H = H > 64 ? H : 64;
  } else {
    W = W > 64 ? W : 64;
    H = H > 64 ? H : 64;
  }
  if (W > FR__MAX_SIDE || H > FR__MAX_SIDE)
    return fr_errf(err, FR_E_INVALID, "latent upscale: %lldx%lld pixels is larger than %d a side",
                   (long long)W, (long long)H, FR__MAX_SIDE);
  return fr__common_upscale(samples, false, (int)(W / 8), (int)(H / 8), m, crop_center, out, err);
}

enum fr_status fr_latent_upscale_by(const struct fr_tensor *samples, double scale_by,
                                    enum fr_upscale_method m, struct fr_tensor **out, struct fr_err *err) {
  *out = NULL;
  enum fr_status rc = fr__check_latent(samples, "latent upscale by", err);
  int w = 0, h = 0;
  if (!rc)
    rc = fr__scaled(samples->shape[3], scale_by, "latent upscale by", &w, err);
  if (!rc)
    rc = fr__scaled(samples->shape[2], scale_by, "latent upscale by", &h, err);
  return rc ? rc : fr__common_upscale(samples, false, w, h, m, false, out, err);
}

/* ---- crop, composite, outpaint ---- */

/* Copies rows y0..y0+h, columns x0..x0+w of every [H, W] plane with `inner` floats a pixel ([B, H, W, C]
 * images: inner C, planes B; latents: inner 1, planes B C). */
static struct fr_tensor *fr__crop(const struct fr_tensor *t, int64_t planes, int64_t H, int64_t W,
                                  int64_t inner, int64_t y0, int64_t x0, int64_t h, int64_t w, int ndim,
                                  const int64_t *shape) {
  struct fr_tensor *o = fr_tensor_f32(ndim, shape);
  if (!o)
    return NULL;
  for (int64_t p = 0; p < planes; p++)
    for (int64_t y = 0; y < h; y++)
      memcpy((float *)o->data + (p * h + y) * w * inner,
             (const float *)t->data + ((p * H + y0 + y) * W + x0) * inner,
             (size_t)(w * inner) * sizeof(float));
  return o;
}

enum fr_status fr_image_crop(const struct fr_tensor *img, int width, int height, int x, int y,
                             struct fr_tensor **out, struct fr_err *err) {
  *out = NULL;
  enum fr_status rc = fr_image_check(img, "image crop", err);
  if (rc)
    return rc;
  if (width < 1 || height < 1 || x < 0 || y < 0)
    return fr_errf(err, FR_E_INVALID,
                   "image crop: width %d and height %d must be at least 1, x %d and y %d "
                   "at least 0",
                   width, height, x, y);
  int64_t B = img->shape[0], H = img->shape[1], W = img->shape[2], C = img->shape[3];
  int64_t x0 = x < W - 1 ? x : W - 1, y0 = y < H - 1 ? y : H - 1;
  int64_t w = x0 + width < W ? width : W - x0, h = y0 + height < H ? height : H - y0;
  *out = fr__crop(img, B, H, W, C, y0, x0, h, w, 4, (int64_t[]){B, h, w, C});
  return *out ? FR_OK : fr__nomem(err, "image crop");
}

enum fr_status fr_latent_crop(const struct fr_tensor *samples, int width, int height, int x, int y,
                              struct fr_tensor **out, struct fr_err *err) {
  *out = NULL;
  enum fr_status rc = fr__check_latent(samples, "latent crop", err);
  if (rc)
    return rc;
  if (width < 8 || height < 8 || x < 0 || y < 0)
    return fr_errf(err, FR_E_INVALID,
                   "latent crop: width %d and height %d must be at least 8, x %d and y %d "
                   "at least 0",
                   width, height, x, y);
  int64_t B = samples->shape[0], C = samples->shape[1], h = samples->shape[2], w = samples->shape[3];
  int64_t x0 = x / 8, y0 = y / 8;
  /* ComfyUI keeps at least 8 latent pixels (64 image pixels) right of and below the corner; on a latent
   * smaller than that the corner is 0 (ComfyUI would index from the end). */
  if (x0 > w - 8)
    x0 = w - 8 > 0 ? w - 8 : 0;
  if (y0 > h - 8)
    y0 = h - 8 > 0 ? h - 8 : 0;
  int64_t nw = width / 8, nh = height / 8;
  nw = x0 + nw < w ? nw : w - x0;
  nh = y0 + nh < h ? nh : h - y0;
  *out = fr__crop(samples, B * C, h, w, 1, y0, x0, nh, nw, 4, (int64_t[]){B, C, nh, nw});
  return *out ? FR_OK : fr__nomem(err, "latent crop");
}

enum fr_status fr_latent_composite(const struct fr_tensor *to, const struct fr_tensor *from, int x, int y,
                                   int feather, struct fr_tensor **out, struct fr_err *err) {
  *out = NULL;
  enum fr_status rc = fr__check_latent(to, "latent composite samples_to", err);
  if (!rc)
    rc = fr__check_latent(from, "latent composite samples_from", err);
  if (rc)
    return rc;
  if (x < 0 || y < 0 || feather < 0)
    return fr_errf(err, FR_E_INVALID, "latent composite: x %d, y %d and feather %d must not be negative", x,
                   y, feather);
  char s1[64], s2[64];
  int64_t B = to->shape[0], C = to->shape[1], H = to->shape[2], W = to->shape[3];
  if ((from->shape[0] != B && from->shape[0] != 1) || from->shape[1] != C)
    return fr_errf(
        err, FR_E_SHAPE,
        "latent composite: samples_from %s does not fit samples_to %s (same channels, and the same "
        "batch or 1)",
        fr_shape_str(from, s1, sizeof s1), fr_shape_str(to, s2, sizeof s2));
  struct fr_tensor *t = fr_tensor_clone(to);
  if (!t)
    return fr__nomem(err, "latent composite");
  int64_t x0 = x / 8, y0 = y / 8, f = feather / 8, Hf = from->shape[2], Wf = from->shape[3];
  /* the visible part of samples_from: from[:, :, :H - y0, :W - x0] */
  int64_t h = Hf < H - y0 ? Hf : H - y0, w = Wf < W - x0 ? Wf : W - x0;
  if (h <= 0 || w <= 0) {
    *out = t;
    return FR_OK;
  }
  float *mask = fr_malloc((size_t)(h * w) * sizeof *mask);
  if (!mask) {
    fr_tensor_free(t);
    return fr__nomem(err, "latent composite");
  }
  for (int64_t i = 0; i < h * w; i++)
    mask[i] = 1.0f;
  for (int64_t k = 0; k < f; k++) {
    float a = (float)((1.0 / (double)f) * (double)(k + 1)); /* ComfyUI's (1.0 / feather) * (t + 1) */
    for (int64_t i = 0; i < w; i++) {
      if (y0 != 0 && k < h)
        mask[k * w + i] *= a;
      if (y0 + h < H && h - 1 - k >= 0)
        mask[(h - 1 - k) * w + i] *= a;
    }
    for (int64_t j = 0; j < h; j++) {
      if (x0 != 0 && k < w)
        mask[j * w + k] *= a;
      if (x0 + w < W && w - 1 - k >= 0)
        mask[j * w + (w - 1 - k)] *= a;
    }
  }
  for (int64_t b = 0; b < B; b++)
    for (int64_t c = 0; c < C; c++) {
      float *d = (float *)t->data + ((b * C + c) * H + y0) * W + x0;
      const float *s = (const float *)from->data + ((from->shape[0] == 1 ? 0 : b) * C + c) * Hf * Wf;
      for (int64_t j = 0; j < h; j++)
        for (int64_t i = 0; i < w; i++) {
          float mk = mask[j * w + i];
          d[j * W + i] = f == 0 ? s[j * Wf + i] : s[j * Wf + i] * mk + d[j * W + i] * (1.0f - mk);
        }
    }
  fr_free(mask);
  *out = t;
  return FR_OK;
}

enum fr_status fr_image_pad_for_outpaint(const struct fr_tensor *img, int left, int top, int right,
                                         int bottom, int feathering, struct fr_tensor **image,
                                         struct fr_tensor **mask, struct fr_err *err) {
  *image = *mask = NULL;
  enum fr_status rc = fr_image_check(img, "pad for outpaint", err);
  if (rc)
    return rc;
  if (left < 0 || top < 0 || right < 0 || bottom < 0 || feathering < 0)
    return fr_errf(
        err, FR_E_INVALID,
        "pad for outpaint: left %d, top %d, right %d, bottom %d, feathering %d must not be negative", left,
        top, right, bottom, feathering);
  int64_t B = img->shape[0], H = img->shape[1], W = img->shape[2], C = img->shape[3];
  int64_t NH = H + top + bottom, NW = W + left + right;
  if (NH > FR__MAX_SIDE || NW > FR__MAX_SIDE)
    return fr_errf(err, FR_E_INVALID, "pad for outpaint: result %lldx%lld is larger than %d a side",
                   (long long)NW, (long long)NH, FR__MAX_SIDE);
  struct fr_tensor *ni = fr_tensor_f32(4, (int64_t[]){B, NH, NW, C});
  struct fr_tensor *m = fr_tensor_f32(3, (int64_t[]){1, NH, NW});
  if (!ni || !m) {
    fr_tensor_free(ni);
    fr_tensor_free(m);
    return fr__nomem(err, "pad for outpaint");
  }
  float *o = ni->data, *mp = m->data;
  for (int64_t i = 0; i < fr_tensor_numel(ni); i++)
    o[i] = 0.5f;
  for (int64_t b = 0; b < B; b++)
    for (int64_t yy = 0; yy < H; yy++)
      memcpy(o + ((b * NH + top + yy) * NW + left) * C, (const float *)img->data + (b * H + yy) * W * C,
             (size_t)(W * C) * sizeof(float));
  for (int64_t i = 0; i < NH * NW; i++)
    mp[i] = 1.0f;
  bool feather = feathering > 0 && (int64_t)feathering * 2 < H && (int64_t)feathering * 2 < W;
  for (int64_t i = 0; i < H; i++)
    for (int64_t j = 0; j < W; j++) {
      float v = 0.0f;
      if (feather) {
        int64_t dt = top != 0 ? i : H, db = bottom != 0 ? H - i : H;
        int64_t dl = left != 0 ? j : W, dr = right != 0 ? W - j : W;
        int64_t d = dt < db ? dt : db;
        d = d < dl ? d : dl;
        d = d < dr ? d : dr;
        if (d < feathering) {
          double u = (double)(feathering - d) / feathering;
          v = (float)(u * u);
        }
      }
      mp[(top + i) * NW + left + j] = v;
    }
  *image = ni;
  *mask = m;
  return FR_OK;
}

/* ---- nodes ---- */

static enum fr_status fr__fail(struct fr_node_ctx *nc, enum fr_status rc, const struct fr_err *err) {
  return fr_node_fail(nc, rc, "%s", err->msg);
}

/* A LATENT like `in` (every other field kept: ComfyUI copies the dict, so a noise_mask stays as it is) with
 * samples replaced by t (taken), set as output 0. */
static enum fr_status fr__out_latent_like(struct fr_node_ctx *nc, const struct fr_value *in,
                                          struct fr_tensor *t) {
  struct fr_value *v = fr_value_tensor(FR_T_LATENT, "samples", t);
  for (int i = 0; v && i < in->n_fields; i++) {
    const struct fr_field *f = &in->fields[i];
    if (strcmp(f->name, "samples") == 0)
      continue;
    enum fr_status rc;
    if (f->t) {
      struct fr_tensor *c = fr_tensor_clone(f->t);
      rc = c ? fr_value_add_tensor(v, f->name, c) : FR_E_NOMEM;
    } else {
      rc = fr_value_add_string(v, f->name, f->str);
    }
    if (rc) {
      fr_value_unref(v);
      v = NULL;
    }
  }
  if (!v)
    return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
  return fr_out_set(nc, 0, v);
}

static const struct fr_output_spec fr__image_out[] = {{"image", FR_T_IMAGE, "the resulting image"}};
static const struct fr_output_spec fr__latent_out[] = {
    {"latent", FR_T_LATENT, "the resulting latent (other fields, e.g. noise_mask, kept)"}};
static const char *const fr__crop_modes[] = {"disabled", "center", NULL};

/* ImageScale's upscale_method: lanczos is FR_UP_LANCZOS, the others their index. */
static enum fr_upscale_method fr__image_method(struct fr_node_ctx *nc) {
  int i = fr__edit_choice(nc, "upscale_method", fr_image_scale_method_names);
  return i == 4 ? FR_UP_LANCZOS : (enum fr_upscale_method)i;
}

/* ImageScale */
static enum fr_status fr__image_scale_run(struct fr_node_ctx *nc) {
  const struct fr_tensor *img;
  enum fr_status rc = fr__edit_in(nc, "image", "image", &img);
  if (rc)
    return rc;
  struct fr_err err;
  struct fr_tensor *t;
  rc = fr_image_scale(img, (int)fr_in_int(nc, "width"), (int)fr_in_int(nc, "height"), fr__image_method(nc),
                      fr__edit_choice(nc, "crop", fr__crop_modes) == 1, &t, &err);
  if (rc)
    return fr__fail(nc, rc, &err);
  return fr__edit_out(nc, 0, FR_T_IMAGE, "image", t);
}
static const struct fr_input_spec fr__image_scale_in[] = {
    {"image", FR_T_IMAGE, NULL, 0, -1, NULL, 0, "image to scale"},
    {"upscale_method", FR_T_ENUM, "nearest-exact", 0, -1, fr_image_scale_method_names, 0,
     "torch interpolate mode (align_corners false); area = adaptive average pooling"},
    {"width", FR_T_INT, "512", 0, 16384, NULL, 0, "target width; 0 follows height keeping the aspect ratio"},
    {"height", FR_T_INT, "512", 0, 16384, NULL, 0, "target height; 0 follows width keeping the aspect ratio"},
    {"crop", FR_T_ENUM, "disabled", 0, -1, fr__crop_modes, 0,
     "center: cut to the target's aspect ratio first"},
};
const struct fr_node_spec fr_node_image_scale = {
    "ImageScale",
    1,
    "image",
    "Scales an image to a size (ComfyUI's Upscale Image).",
    fr__image_scale_in,
    FR_COUNT(fr__image_scale_in),
    fr__image_out,
    1,
    0,
    fr__image_scale_run,
};

/* ImageScaleBy */
static enum fr_status fr__image_scale_by_run(struct fr_node_ctx *nc) {
  const struct fr_tensor *img;
  enum fr_status rc = fr__edit_in(nc, "image", "image", &img);
  if (rc)
    return rc;
  struct fr_err err;
  struct fr_tensor *t;
  rc = fr_image_scale_by(img, fr_in_float(nc, "scale_by"), fr__image_method(nc), &t, &err);
  if (rc)
    return fr__fail(nc, rc, &err);
  return fr__edit_out(nc, 0, FR_T_IMAGE, "image", t);
}
static const struct fr_input_spec fr__image_scale_by_in[] = {
    {"image", FR_T_IMAGE, NULL, 0, -1, NULL, 0, "image to scale"},
    {"upscale_method", FR_T_ENUM, "nearest-exact", 0, -1, fr_image_scale_method_names, 0,
     "torch interpolate mode (align_corners false)"},
    {"scale_by", FR_T_FLOAT, "1.0", 0.01, 8.0, NULL, 0, "factor; sizes rounded half to even"},
};
const struct fr_node_spec fr_node_image_scale_by = {
    "ImageScaleBy",
    1,
    "image",
    "Scales an image by a factor.",
    fr__image_scale_by_in,
    FR_COUNT(fr__image_scale_by_in),
    fr__image_out,
    1,
    0,
    fr__image_scale_by_run,
};

/* LatentUpscale */
static enum fr_status fr__latent_upscale_run(struct fr_node_ctx *nc) {
  const struct fr_tensor *s;
  enum fr_status rc = fr__edit_in(nc, "samples", "samples", &s);
  if (rc)
    return rc;
  struct fr_err err;
  struct fr_tensor *t;
  rc = fr_latent_upscale(
      s, (int)fr_in_int(nc, "width"), (int)fr_in_int(nc, "height"),
      (enum fr_upscale_method)fr__edit_choice(nc, "upscale_method", fr_upscale_method_names),
      fr__edit_choice(nc, "crop", fr__crop_modes) == 1, &t, &err);
  if (rc)
    return fr__fail(nc, rc, &err);
  return fr__out_latent_like(nc, fr_in(nc, "samples"), t);
}
static const struct fr_input_spec fr__latent_upscale_in[] = {
    {"samples", FR_T_LATENT, NULL, 0, -1, NULL, 0, "latent to scale"},
    {"upscale_method", FR_T_ENUM, "nearest-exact", 0, -1, fr_upscale_method_names, 0,
     "torch interpolate mode (align_corners false), or bislerp (slerp of channel vectors)"},
    {"width", FR_T_INT, "512", 0, 16384, NULL, 0,
     "target width in pixels (at least 64, then // 8); 0 follows height"},
    {"height", FR_T_INT, "512", 0, 16384, NULL, 0,
     "target height in pixels (at least 64, then // 8); 0 follows width"},
    {"crop", FR_T_ENUM, "disabled", 0, -1, fr__crop_modes, 0,
     "center: cut to the target's aspect ratio first"},
};
const struct fr_node_spec fr_node_latent_upscale = {
    "LatentUpscale",
    1,
    "latent",
    "Scales a latent to a size in pixels (hires fix).",
    fr__latent_upscale_in,
    FR_COUNT(fr__latent_upscale_in),
    fr__latent_out,
    1,
    0,
    fr__latent_upscale_run,
};

/* LatentUpscaleBy */
static enum fr_status fr__latent_upscale_by_run(struct fr_node_ctx *nc) {
  const struct fr_tensor *s;
  enum fr_status rc = fr__edit_in(nc, "samples", "samples", &s);
  if (rc)
    return rc;
  struct fr_err err;
  struct fr_tensor *t;
  rc = fr_latent_upscale_by(
      s, fr_in_float(nc, "scale_by"),
      (enum fr_upscale_method)fr__edit_choice(nc, "upscale_method", fr_upscale_method_names), &t, &err);
  if (rc)
    return fr__fail(nc, rc, &err);
  return fr__out_latent_like(nc, fr_in(nc, "samples"), t);
}
static const struct fr_input_spec fr__latent_upscale_by_in[] = {
    {"samples", FR_T_LATENT, NULL, 0, -1, NULL, 0, "latent to scale"},
    {"upscale_method", FR_T_ENUM, "nearest-exact", 0, -1, fr_upscale_method_names, 0,
     "torch interpolate mode (align_corners false), or bislerp"},
    {"scale_by", FR_T_FLOAT, "1.5", 0.01, 8.0, NULL, 0, "factor; latent sizes rounded half to even"},
};
const struct fr_node_spec fr_node_latent_upscale_by = {
    "LatentUpscaleBy",
    1,
    "latent",
    "Scales a latent by a factor (hires fix).",
    fr__latent_upscale_by_in,
    FR_COUNT(fr__latent_upscale_by_in),
    fr__latent_out,
    1,
    0,
    fr__latent_upscale_by_run,
};

/* ImageCrop */
static enum fr_status fr__image_crop_run(struct fr_node_ctx *nc) {
  const struct fr_tensor *img;
  enum fr_status rc = fr__edit_in(nc, "image", "image", &img);
  if (rc)
    return rc;
  struct fr_err err;
  struct fr_tensor *t;
  rc = fr_image_crop(img, (int)fr_in_int(nc, "width"), (int)fr_in_int(nc, "height"), (int)fr_in_int(nc, "x"),
                     (int)fr_in_int(nc, "y"), &t, &err);
  if (rc)
    return fr__fail(nc, rc, &err);
  return fr__edit_out(nc, 0, FR_T_IMAGE, "image", t);
}
static const struct fr_input_spec fr__image_crop_in[] = {
    {"image", FR_T_IMAGE, NULL, 0, -1, NULL, 0, "image to crop"},
    {"width", FR_T_INT, "512", 1, 16384, NULL, 0, "width of the region (clipped to the image)"},
    {"height", FR_T_INT, "512", 1, 16384, NULL, 0, "height of the region (clipped to the image)"},
    {"x", FR_T_INT, "0", 0, 16384, NULL, 0, "left edge (at most width - 1)"},
    {"y", FR_T_INT, "0", 0, 16384, NULL, 0, "top edge (at most height - 1)"},
};
const struct fr_node_spec fr_node_image_crop = {
    "ImageCrop",
    1,
    "image",
    "Cuts a rectangle out of an image.",
    fr__image_crop_in,
    FR_COUNT(fr__image_crop_in),
    fr__image_out,
    1,
    0,
    fr__image_crop_run,
};

/* LatentCrop */
static enum fr_status fr__latent_crop_run(struct fr_node_ctx *nc) {
  const struct fr_tensor *s;
  enum fr_status rc = fr__edit_in(nc, "samples", "samples", &s);
  if (rc)
    return rc;
  struct fr_err err;
  struct fr_tensor *t;
  rc = fr_latent_crop(s, (int)fr_in_int(nc, "width"), (int)fr_in_int(nc, "height"), (int)fr_in_int(nc, "x"),
                      (int)fr_in_int(nc, "y"), &t, &err);
  if (rc)
    return fr__fail(nc, rc, &err);
  return fr__out_latent_like(nc, fr_in(nc, "samples"), t);
}
static const struct fr_input_spec fr__latent_crop_in[] = {
    {"samples", FR_T_LATENT, NULL, 0, -1, NULL, 0, "latent to crop"},
    {"width", FR_T_INT, "512", 64, 16384, NULL, 0, "width in pixels (// 8 in the latent)"},
    {"height", FR_T_INT, "512", 64, 16384, NULL, 0, "height in pixels (// 8 in the latent)"},
    {"x", FR_T_INT, "0", 0, 16384, NULL, 0, "left edge in pixels (// 8)"},
    {"y", FR_T_INT, "0", 0, 16384, NULL, 0, "top edge in pixels (// 8)"},
};
const struct fr_node_spec fr_node_latent_crop = {
    "LatentCrop",
    1,
    "latent",
    "Cuts a rectangle out of a latent (sizes in pixels).",
    fr__latent_crop_in,
    FR_COUNT(fr__latent_crop_in),
    fr__latent_out,
    1,
    0,
    fr__latent_crop_run,
};

/* LatentComposite */
static enum fr_status fr__latent_composite_run(struct fr_node_ctx *nc) {
  const struct fr_tensor *to, *from;
  enum fr_status rc = fr__edit_in(nc, "samples_to", "samples", &to);
  if (!rc)
    rc = fr__edit_in(nc, "samples_from", "samples", &from);
  if (rc)
    return rc;
  struct fr_err err;
  struct fr_tensor *t;
  rc = fr_latent_composite(to, from, (int)fr_in_int(nc, "x"), (int)fr_in_int(nc, "y"),
                           (int)fr_in_int(nc, "feather"), &t, &err);
  if (rc)
    return fr__fail(nc, rc, &err);
  return fr__out_latent_like(nc, fr_in(nc, "samples_to"), t);
}
static const struct fr_input_spec fr__latent_composite_in[] = {
    {"samples_to", FR_T_LATENT, NULL, 0, -1, NULL, 0, "latent pasted into (its other fields are kept)"},
    {"samples_from", FR_T_LATENT, NULL, 0, -1, NULL, 0, "latent pasted"},
    {"x", FR_T_INT, "0", 0, 16384, NULL, 0, "left edge in pixels (// 8)"},
    {"y", FR_T_INT, "0", 0, 16384, NULL, 0, "top edge in pixels (// 8)"},
    {"feather", FR_T_INT, "0", 0, 16384, NULL, 0, "linear fade in pixels (// 8) on inner edges"},
};
const struct fr_node_spec fr_node_latent_composite = {
    "LatentComposite",
    1,
    "latent",
    "Pastes one latent into another at a position.",
    fr__latent_composite_in,
    FR_COUNT(fr__latent_composite_in),
    fr__latent_out,
    1,
    0,
    fr__latent_composite_run,
};

/* ImagePadForOutpaint */
static enum fr_status fr__pad_outpaint_run(struct fr_node_ctx *nc) {
  const struct fr_tensor *img;
  enum fr_status rc = fr__edit_in(nc, "image", "image", &img);
  if (rc)
    return rc;
  struct fr_err err;
  struct fr_tensor *t, *m;
  rc = fr_image_pad_for_outpaint(img, (int)fr_in_int(nc, "left"), (int)fr_in_int(nc, "top"),
                                 (int)fr_in_int(nc, "right"), (int)fr_in_int(nc, "bottom"),
                                 (int)fr_in_int(nc, "feathering"), &t, &m, &err);
  if (rc)
    return fr__fail(nc, rc, &err);
  rc = fr__edit_out(nc, 0, FR_T_IMAGE, "image", t);
  if (rc) {
    fr_tensor_free(m);
    return rc;
  }
  return fr__edit_out(nc, 1, FR_T_MASK, "mask", m);
}
static const struct fr_input_spec fr__pad_outpaint_in[] = {
    {"image", FR_T_IMAGE, NULL, 0, -1, NULL, 0, "image to extend"},
    {"left", FR_T_INT, "0", 0, 16384, NULL, 0, "pixels added on the left"},
    {"top", FR_T_INT, "0", 0, 16384, NULL, 0, "pixels added on top"},
    {"right", FR_T_INT, "0", 0, 16384, NULL, 0, "pixels added on the right"},
    {"bottom", FR_T_INT, "0", 0, 16384, NULL, 0, "pixels added at the bottom"},
    {"feathering", FR_T_INT, "40", 0, 16384, NULL, 0,
     "width of the mask's quadratic fade into the old image along padded sides"},
};
static const struct fr_output_spec fr__pad_outpaint_out[] = {
    {"image", FR_T_IMAGE, "the padded image, new area grey 0.5"},
    {"mask", FR_T_MASK, "[1, H, W]: 1 on the new area, fading into the old image"},
};
const struct fr_node_spec fr_node_image_pad_for_outpaint = {
    "ImagePadForOutpaint",
    1,
    "image",
    "Extends an image past its borders and masks the new area (outpainting).",
    fr__pad_outpaint_in,
    FR_COUNT(fr__pad_outpaint_in),
    fr__pad_outpaint_out,
    2,
    0,
    fr__pad_outpaint_run,
};
