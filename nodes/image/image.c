/* Image operations (see nodes/image/image.h). Plain loops over F32 [B, H, W, C]: images are small next to
 * the models, and these run once per graph run. */
#include "nodes/image/image.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/file.h"

#define FR__MAX_SIDE 16384

enum fr_status fr_image_check(const struct fr_tensor *t, const char *what, struct fr_err *err) {
  char s[64];
  if (!t)
    return fr_errf(err, FR_E_INVALID, "%s: no image", what);
  if (t->dtype != FR_F32 || t->dev != FR_DEV_CPU || t->ndim != 4 || t->shape[3] < 1 || t->shape[3] > 4 ||
      t->shape[0] < 1 || t->shape[1] < 1 || t->shape[2] < 1)
    return fr_errf(err, FR_E_SHAPE, "%s: expected an F32 image [B, H, W, C] with C = 1..4, got %s %s", what,
                   fr_dtype_name(t->dtype), fr_shape_str(t, s, sizeof s));
  return FR_OK;
}

static struct fr_tensor *fr__image_new(int64_t b, int64_t h, int64_t w, int64_t c) {
  return fr_tensor_f32(4, (int64_t[]){b, h, w, c});
}

static enum fr_status fr__nomem(struct fr_err *err, const char *what) {
  return fr_errf(err, FR_E_NOMEM, "%s: out of memory", what);
}

static enum fr_status fr__check_size(int width, int height, int batch, const char *what, struct fr_err *err) {
  if (width < 1 || height < 1 || width > FR__MAX_SIDE || height > FR__MAX_SIDE)
    return fr_errf(err, FR_E_INVALID, "%s: size %dx%d out of range (1 to %d a side)", what, width, height,
                   FR__MAX_SIDE);
  if (batch < 1 || batch > 4096)
    return fr_errf(err, FR_E_INVALID, "%s: batch %d out of range (1 to 4096)", what, batch);
  return FR_OK;
}

static float fr__clamp01(float v) {
  return v > 0.0f ? (v < 1.0f ? v : 1.0f) : 0.0f;
}

/* ---- generators ---- */

static int fr__hex(int ch) {
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  ch = tolower(ch);
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  return -1;
}

enum fr_status fr_image_parse_color(const char *s, float rgb[3], struct fr_err *err) {
  size_t n = s ? strlen(s) : 0;
  if (n == 7 && s[0] == '#') {
    for (int i = 0; i < 3; i++) {
      int hi = fr__hex((unsigned char)s[1 + 2 * i]), lo = fr__hex((unsigned char)s[2 + 2 * i]);
      if (hi < 0 || lo < 0)
        goto bad;
      rgb[i] = (float)(hi * 16 + lo) / 255.0f;
    }
    return FR_OK;
  }
  if (n == 4 && s[0] == '#') {
    for (int i = 0; i < 3; i++) {
      int d = fr__hex((unsigned char)s[1 + i]);
      if (d < 0)
        goto bad;
      rgb[i] = (float)(d * 17) / 255.0f;
    }
    return FR_OK;
  }
bad:
  return fr_errf(err, FR_E_INVALID, "colour '%s': expected \"#rrggbb\" or \"#rgb\" in hexadecimal",
                 s ? s : "");
}

enum fr_status fr_image_solid(int width, int height, int batch, const float rgb[3], struct fr_tensor **out,
                              struct fr_err *err) {
  *out = NULL;
  enum fr_status rc = fr__check_size(width, height, batch, "solid image", err);
  if (rc)
    return rc;
  struct fr_tensor *t = fr__image_new(batch, height, width, 3);
  if (!t)
    return fr__nomem(err, "solid image");
  float *p = t->data;
  size_t n = (size_t)batch * height * width;
  for (size_t i = 0; i < n; i++)
    for (int c = 0; c < 3; c++)
      p[i * 3 + c] = fr__clamp01(rgb[c]);
  *out = t;
  return FR_OK;
}

/* SHAPES: what is at pixel centre (x, y) of a w x h canvas, in [0, 1] coordinates scaled by the shorter side
 * so the shapes stay round on non-square images. */
static void fr__shapes_pixel(double u, double v, double aspect, float rgb[3]) {
  /* background: a diagonal dark-blue to teal gradient */
  double g = 0.5 * (u / aspect + v);
  rgb[0] = (float)(0.10 + 0.10 * g);
  rgb[1] = (float)(0.15 + 0.45 * g);
  rgb[2] = (float)(0.35 + 0.30 * g);
  /* a warm disc upper left */
  double dx = u - 0.30 * aspect, dy = v - 0.32;
  if (dx * dx + dy * dy < 0.19 * 0.19) {
    rgb[0] = 0.95f, rgb[1] = 0.55f, rgb[2] = 0.15f;
  }
  /* a light square lower right */
  if (fabs(u - 0.68 * aspect) < 0.17 && fabs(v - 0.66) < 0.17) {
    rgb[0] = 0.92f, rgb[1] = 0.92f, rgb[2] = 0.85f;
  }
  /* a yellow triangle upper right: apex (0.72, 0.08), base from (0.55, 0.40) to (0.89, 0.40) */
  double tu = u - 0.72 * aspect, tv = v - 0.08;
  if (tv >= 0 && tv <= 0.32 && fabs(tu) <= tv * (0.17 / 0.32)) {
    rgb[0] = 0.95f, rgb[1] = 0.85f, rgb[2] = 0.20f;
  }
}

enum fr_status fr_image_pattern(enum fr_pattern p, int width, int height, int batch, struct fr_tensor **out,
                                struct fr_err *err) {
  *out = NULL;
  enum fr_status rc = fr__check_size(width, height, batch, "test pattern", err);
  if (rc)
    return rc;
  if (p != FR_PATTERN_SHAPES && p != FR_PATTERN_RADIAL && p != FR_PATTERN_CHECKER)
    return fr_errf(err, FR_E_INVALID, "test pattern: unknown pattern %d", (int)p);
  struct fr_tensor *t = fr__image_new(batch, height, width, 3);
  if (!t)
    return fr__nomem(err, "test pattern");
  float *d = t->data;
  double side = width < height ? width : height, aspect = (double)width / side;
  for (int y = 0; y < height; y++) {
    for (int x = 0; x < width; x++) {
      float rgb[3];
      if (p == FR_PATTERN_SHAPES) {
        double u = (x + 0.5) / side, v = (y + 0.5) / side;
        if (height > width) /* centre the unit square vertically on tall canvases */
          v -= 0.5 * ((double)height / side - 1.0);
        fr__shapes_pixel(u, v, aspect, rgb);
      } else if (p == FR_PATTERN_RADIAL) {
        double dx = (x + 0.5 - 0.5 * width) / (0.5 * side), dy = (y + 0.5 - 0.5 * height) / (0.5 * side);
        double r = sqrt(dx * dx + dy * dy);
        float g = (float)(r < 1.0 ? 1.0 - r : 0.0);
        rgb[0] = rgb[1] = rgb[2] = g;
      } else {
        int cx = (int)((int64_t)x * 8 / width), cy = (int)((int64_t)y * 8 / height);
        rgb[0] = rgb[1] = rgb[2] = ((cx + cy) & 1) ? 1.0f : 0.0f;
      }
      memcpy(d + ((size_t)y * width + x) * 3, rgb, sizeof rgb);
    }
  }
  size_t plane = (size_t)height * width * 3;
  for (int b = 1; b < batch; b++)
    memcpy(d + b * plane, d, plane * sizeof *d);
  *out = t;
  return FR_OK;
}

/* ---- filters ---- */

enum fr__border { FR__CLAMP, FR__REFLECT };

/* Index i of a line of n samples, folded back inside: clamped (edge repeated) or reflected about the edge
 * sample (PyTorch's "reflect": -1 → 1, n → n - 2). */
static int64_t fr__fold(int64_t i, int64_t n, enum fr__border b) {
  if (n == 1)
    return 0;
  if (b == FR__CLAMP)
    return i < 0 ? 0 : (i >= n ? n - 1 : i);
  while (i < 0 || i >= n) {
    if (i < 0)
      i = -i;
    if (i >= n)
      i = 2 * (n - 1) - i;
  }
  return i;
}

/* Convolves every channel of src ([B, H, W, C]) with k (2r + 1 taps) along x then y into dst. */
static enum fr_status fr__separable(const float *src, float *dst, int64_t B, int64_t H, int64_t W, int64_t C,
                                    const float *k, int r, enum fr__border border) {
  float *tmp = fr_malloc((size_t)H * W * C * sizeof *tmp);
  if (!tmp)
    return FR_E_NOMEM;
  for (int64_t b = 0; b < B; b++) {
    const float *s = src + b * H * W * C;
    float *o = dst + b * H * W * C;
    for (int64_t y = 0; y < H; y++)
      for (int64_t x = 0; x < W; x++)
        for (int64_t c = 0; c < C; c++) {
          float acc = 0.0f;
          for (int j = -r; j <= r; j++)
            acc += k[j + r] * s[(y * W + fr__fold(x + j, W, border)) * C + c];
          tmp[(y * W + x) * C + c] = acc;
        }
    for (int64_t y = 0; y < H; y++)
      for (int64_t x = 0; x < W; x++)
        for (int64_t c = 0; c < C; c++) {
          float acc = 0.0f;
          for (int j = -r; j <= r; j++)
            acc += k[j + r] * tmp[(fr__fold(y + j, H, border) * W + x) * C + c];
          o[(y * W + x) * C + c] = acc;
        }
  }
  fr_free(tmp);
  return FR_OK;
}

enum fr_status fr_image_blur(const struct fr_tensor *img, int radius, double sigma, struct fr_tensor **out,
                             struct fr_err *err) {
  *out = NULL;
  enum fr_status rc = fr_image_check(img, "blur", err);
  if (rc)
    return rc;
  if (radius < 0 || radius > 255)
    return fr_errf(err, FR_E_INVALID, "blur: radius %d out of range (0 to 255)", radius);
  if (!(sigma > 0.0) || !isfinite(sigma))
    return fr_errf(err, FR_E_INVALID, "blur: sigma %g must be greater than 0", sigma);
  struct fr_tensor *t = fr_tensor_clone(img);
  if (!t)
    return fr__nomem(err, "blur");
  if (radius == 0) {
    *out = t;
    return FR_OK;
  }
  float k[511];
  double sum = 0.0;
  for (int i = -radius; i <= radius; i++) {
    double x = (double)i / radius; /* taps at -1 … 1, as ComfyUI's linspace(-1, 1, 2r + 1) */
    k[i + radius] = (float)exp(-(x * x) / (2.0 * sigma * sigma));
    sum += k[i + radius];
  }
  for (int i = 0; i < 2 * radius + 1; i++)
    k[i] = (float)(k[i] / sum);
  rc = fr__separable(img->data, t->data, img->shape[0], img->shape[1], img->shape[2], img->shape[3], k,
                     radius, FR__CLAMP);
  if (rc) {
    fr_tensor_free(t);
    return fr__nomem(err, "blur");
  }
  *out = t;
  return FR_OK;
}

/* Cubic convolution weight (Keys, a = -0.75 as PyTorch) for distance t. */
static double fr__cubic(double t) {
  const double a = -0.75;
  t = fabs(t);
  if (t <= 1.0)
    return ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0;
  if (t < 2.0)
    return ((a * t - 5.0 * a) * t + 8.0 * a) * t - 4.0 * a;
  return 0.0;
}

/* Resamples one [h, w, C] plane (cropped view: rows y0.., columns x0.. of a plane of width sw) to [oh, ow,
 * C]. */
static void fr__resample(const float *s, int64_t sw, int64_t x0, int64_t y0, int64_t h, int64_t w, int64_t C,
                         float *o, int64_t oh, int64_t ow, enum fr_resize_method m) {
  double sy = (double)h / oh, sx = (double)w / ow;
#define SRC(yy, xx, cc) s[((y0 + (yy)) * sw + x0 + (xx)) * C + (cc)]
  for (int64_t y = 0; y < oh; y++) {
    for (int64_t x = 0; x < ow; x++) {
      for (int64_t c = 0; c < C; c++) {
        double v = 0.0;
        if (m == FR_RESIZE_NEAREST) {
          int64_t iy = (int64_t)floor((y + 0.5) * sy), ix = (int64_t)floor((x + 0.5) * sx);
          v = SRC(iy < h ? iy : h - 1, ix < w ? ix : w - 1, c);
        } else if (m == FR_RESIZE_BILINEAR) {
          double fy = (y + 0.5) * sy - 0.5, fx = (x + 0.5) * sx - 0.5;
          if (fy < 0)
            fy = 0;
          if (fx < 0)
            fx = 0;
          int64_t iy = (int64_t)fy, ix = (int64_t)fx;
          double ty = fy - iy, tx = fx - ix;
          int64_t iy1 = iy + 1 < h ? iy + 1 : h - 1, ix1 = ix + 1 < w ? ix + 1 : w - 1;
          if (iy > h - 1)
            iy = h - 1;
          if (ix > w - 1)
            ix = w - 1;
          v = (1 - ty) * ((1 - tx) * SRC(iy, ix, c) + tx * SRC(iy, ix1, c)) +
              ty * ((1 - tx) * SRC(iy1, ix, c) + tx * SRC(iy1, ix1, c));
        } else if (m == FR_RESIZE_BICUBIC) {
          double fy = (y + 0.5) * sy - 0.5, fx = (x + 0.5) * sx - 0.5;
          int64_t iy = (int64_t)floor(fy), ix = (int64_t)floor(fx);
          double ty = fy - iy, tx = fx - ix;
          for (int j = -1; j <= 2; j++) {
            double wy = fr__cubic(j - ty);
            int64_t yy = fr__fold(iy + j, h, FR__CLAMP);
            double row = 0.0;
            for (int i = -1; i <= 2; i++)
              row += fr__cubic(i - tx) * SRC(yy, fr__fold(ix + i, w, FR__CLAMP), c);
            v += wy * row;
          }
        } else { /* area: adaptive average pooling */
          int64_t ya = y * h / oh, yb = ((y + 1) * h + oh - 1) / oh;
          int64_t xa = x * w / ow, xb = ((x + 1) * w + ow - 1) / ow;
          for (int64_t yy = ya; yy < yb; yy++)
            for (int64_t xx = xa; xx < xb; xx++)
              v += SRC(yy, xx, c);
          v /= (double)((yb - ya) * (xb - xa));
        }
        o[(y * ow + x) * C + c] = fr__clamp01((float)v);
      }
    }
  }
#undef SRC
}

enum fr_status fr_image_resize(const struct fr_tensor *img, int width, int height, enum fr_resize_method m,
                               bool crop_center, struct fr_tensor **out, struct fr_err *err) {
  *out = NULL;
  enum fr_status rc = fr_image_check(img, "resize", err);
  if (rc)
    return rc;
  int64_t B = img->shape[0], H = img->shape[1], W = img->shape[2], C = img->shape[3];
  if (width < 0 || height < 0 || (width == 0 && height == 0))
    return fr_errf(err, FR_E_INVALID,
                   "resize: target %dx%d is invalid (at least one side must be positive; 0 keeps the aspect)",
                   width, height);
  if (m < FR_RESIZE_NEAREST || m > FR_RESIZE_AREA)
    return fr_errf(err, FR_E_INVALID, "resize: unknown method %d", (int)m);
  int64_t ow = width, oh = height;
  if (ow == 0)
    ow = (int64_t)llround((double)W * oh / H);
  if (oh == 0)
    oh = (int64_t)llround((double)H * ow / W);
  if (ow < 1)
    ow = 1;
  if (oh < 1)
    oh = 1;
  if (ow > FR__MAX_SIDE || oh > FR__MAX_SIDE)
    return fr_errf(err, FR_E_INVALID, "resize: target %lldx%lld larger than %d a side", (long long)ow,
                   (long long)oh, FR__MAX_SIDE);
  /* ComfyUI's centre crop: cut the sides that make the aspect ratios differ. */
  int64_t x0 = 0, y0 = 0, cw = W, ch = H;
  if (crop_center) {
    double old_aspect = (double)W / H, new_aspect = (double)ow / oh;
    if (old_aspect > new_aspect)
      x0 = (int64_t)llround((W - W * (new_aspect / old_aspect)) / 2.0);
    else if (old_aspect < new_aspect)
      y0 = (int64_t)llround((H - H * (old_aspect / new_aspect)) / 2.0);
    cw = W - 2 * x0;
    ch = H - 2 * y0;
    if (cw < 1 || ch < 1)
      x0 = y0 = 0, cw = W, ch = H;
  }
  struct fr_tensor *t = fr__image_new(B, oh, ow, C);
  if (!t)
    return fr__nomem(err, "resize");
  for (int64_t b = 0; b < B; b++)
    fr__resample((const float *)img->data + b * H * W * C, W, x0, y0, ch, cw, C,
                 (float *)t->data + b * oh * ow * C, oh, ow, m);
  *out = t;
  return FR_OK;
}

enum fr_status fr_image_canny(const struct fr_tensor *img, double low, double high, struct fr_tensor **out,
                              struct fr_err *err) {
  *out = NULL;
  enum fr_status rc = fr_image_check(img, "canny", err);
  if (rc)
    return rc;
  if (!(low >= 0.0) || !(high >= low) || !isfinite(high))
    return fr_errf(err, FR_E_INVALID, "canny: thresholds low %g, high %g: need 0 <= low <= high", low, high);
  int64_t B = img->shape[0], H = img->shape[1], W = img->shape[2], C = img->shape[3];
  size_t n = (size_t)H * W;
  float *grey = fr_malloc(n * sizeof *grey), *blur = fr_malloc(n * sizeof *blur);
  float *mag = fr_malloc(n * sizeof *mag);
  unsigned char *dir = fr_malloc(n), *state = fr_malloc(n);
  int64_t *stack = fr_malloc(n * sizeof *stack);
  struct fr_tensor *t = fr__image_new(B, H, W, 3);
  if (!grey || !blur || !mag || !dir || !state || !stack || !t) {
    rc = fr__nomem(err, "canny");
    goto done;
  }
  /* kornia's 5-tap Gaussian, sigma 1 (pixel units) */
  float k[5];
  double ks = 0.0;
  for (int i = -2; i <= 2; i++)
    ks += (k[i + 2] = (float)exp(-(double)(i * i) / 2.0));
  for (int i = 0; i < 5; i++)
    k[i] = (float)(k[i] / ks);
  /* neighbour offsets for directions 0..7 at 45-degree steps, y pointing down (kornia's NMS kernels) */
  static const int ddx[8] = {1, 1, 0, -1, -1, -1, 0, 1}, ddy[8] = {0, 1, 1, 1, 0, -1, -1, -1};
  for (int64_t b = 0; b < B; b++) {
    const float *s = (const float *)img->data + b * H * W * C;
    for (size_t i = 0; i < n; i++)
      grey[i] = C >= 3 ? 0.299f * s[i * C] + 0.587f * s[i * C + 1] + 0.114f * s[i * C + 2] : s[i * C];
    rc = fr__separable(grey, blur, 1, H, W, 1, k, 2, FR__REFLECT);
    if (rc) {
      rc = fr__nomem(err, "canny");
      goto done;
    }
    /* Sobel with replicated borders */
#define P(yy, xx) blur[fr__fold(yy, H, FR__CLAMP) * W + fr__fold(xx, W, FR__CLAMP)]
    for (int64_t y = 0; y < H; y++)
      for (int64_t x = 0; x < W; x++) {
        double gx = (P(y - 1, x + 1) + 2.0 * P(y, x + 1) + P(y + 1, x + 1)) -
                    (P(y - 1, x - 1) + 2.0 * P(y, x - 1) + P(y + 1, x - 1));
        double gy = (P(y + 1, x - 1) + 2.0 * P(y + 1, x) + P(y + 1, x + 1)) -
                    (P(y - 1, x - 1) + 2.0 * P(y - 1, x) + P(y - 1, x + 1));
        mag[y * W + x] = (float)sqrt(gx * gx + gy * gy + 1e-6);
        double a = atan2(gy, gx) * (180.0 / M_PI);
        int d = (int)lround(a / 45.0); /* -4..4 */
        dir[y * W + x] = (unsigned char)((d % 8 + 8) % 8);
      }
#undef P
    /* Non-maximum suppression (outside the image counts as 0) and double threshold. A pixel must exceed its
     * neighbour on one side and at least equal the other: kornia asks for strictly greater on both, which
     * drops both pixels of a symmetric edge two pixels wide (e.g. a blurred sharp step); this keeps one of
     * them. */
    size_t top = 0;
    for (int64_t y = 0; y < H; y++)
      for (int64_t x = 0; x < W; x++) {
        size_t i = (size_t)(y * W + x);
        int d = dir[i];
        int64_t y1 = y + ddy[d], x1 = x + ddx[d], y2 = y - ddy[d], x2 = x - ddx[d];
        float m1 = (y1 >= 0 && y1 < H && x1 >= 0 && x1 < W) ? mag[y1 * W + x1] : 0.0f;
        float m2 = (y2 >= 0 && y2 < H && x2 >= 0 && x2 < W) ? mag[y2 * W + x2] : 0.0f;
        float m = mag[i];
        state[i] = 0;
        if (!(m > m1 && m >= m2))
          continue;
        if (m > high) {
          state[i] = 2;
          stack[top++] = (int64_t)i;
        } else if (m > low) {
          state[i] = 1;
        }
      }
    /* Hysteresis: weak pixels 8-connected to a strong one become strong. */
    while (top > 0) {
      int64_t i = stack[--top], y = i / W, x = i % W;
      for (int dy = -1; dy <= 1; dy++)
        for (int dx = -1; dx <= 1; dx++) {
          int64_t yy = y + dy, xx = x + dx;
          if (yy < 0 || yy >= H || xx < 0 || xx >= W || state[yy * W + xx] != 1)
            continue;
          state[yy * W + xx] = 2;
          stack[top++] = yy * W + xx;
        }
    }
    float *o = (float *)t->data + b * H * W * 3;
    for (size_t i = 0; i < n; i++)
      o[i * 3] = o[i * 3 + 1] = o[i * 3 + 2] = state[i] == 2 ? 1.0f : 0.0f;
  }
  *out = t;
  t = NULL;
done:
  fr_tensor_free(t);
  fr_free(grey);
  fr_free(blur);
  fr_free(mag);
  fr_free(dir);
  fr_free(state);
  fr_free(stack);
  return rc;
}

static float fr__blend1(float a, float b, enum fr_blend_mode m) {
  switch (m) {
  case FR_BLEND_NORMAL: return b;
  case FR_BLEND_MULTIPLY: return a * b;
  case FR_BLEND_SCREEN: return 1.0f - (1.0f - a) * (1.0f - b);
  case FR_BLEND_OVERLAY: return a <= 0.5f ? 2.0f * a * b : 1.0f - 2.0f * (1.0f - a) * (1.0f - b);
  case FR_BLEND_SOFT_LIGHT: {
    if (b <= 0.5f)
      return a - (1.0f - 2.0f * b) * a * (1.0f - a);
    float g = a <= 0.25f ? ((16.0f * a - 12.0f) * a + 4.0f) * a : sqrtf(a);
    return a + (2.0f * b - 1.0f) * (g - a);
  }
  case FR_BLEND_DIFFERENCE: return fabsf(a - b);
  }
  return b;
}

enum fr_status fr_image_blend(const struct fr_tensor *a, const struct fr_tensor *b, double factor,
                              enum fr_blend_mode mode, struct fr_tensor **out, struct fr_err *err) {
  *out = NULL;
  enum fr_status rc = fr_image_check(a, "blend image1", err);
  if (!rc)
    rc = fr_image_check(b, "blend image2", err);
  if (rc)
    return rc;
  char sa[64], sb[64];
  if (a->shape[1] != b->shape[1] || a->shape[2] != b->shape[2] || a->shape[3] != b->shape[3] ||
      (a->shape[0] != b->shape[0] && a->shape[0] != 1 && b->shape[0] != 1))
    return fr_errf(err, FR_E_SHAPE,
                   "blend: image1 is %s and image2 is %s: they need the same height, width and channels "
                   "(resize one with ImageResize)",
                   fr_shape_str(a, sa, sizeof sa), fr_shape_str(b, sb, sizeof sb));
  if (!(factor >= 0.0 && factor <= 1.0))
    return fr_errf(err, FR_E_INVALID, "blend: blend_factor %g out of range (0 to 1)", factor);
  if (mode < FR_BLEND_NORMAL || mode > FR_BLEND_DIFFERENCE)
    return fr_errf(err, FR_E_INVALID, "blend: unknown mode %d", (int)mode);
  int64_t B = a->shape[0] > b->shape[0] ? a->shape[0] : b->shape[0];
  size_t plane = (size_t)(a->shape[1] * a->shape[2] * a->shape[3]);
  struct fr_tensor *t = fr__image_new(B, a->shape[1], a->shape[2], a->shape[3]);
  if (!t)
    return fr__nomem(err, "blend");
  float f = (float)factor;
  for (int64_t i = 0; i < B; i++) {
    const float *pa = (const float *)a->data + (a->shape[0] == 1 ? 0 : i) * plane;
    const float *pb = (const float *)b->data + (b->shape[0] == 1 ? 0 : i) * plane;
    float *o = (float *)t->data + i * plane;
    for (size_t j = 0; j < plane; j++)
      o[j] = fr__clamp01(pa[j] * (1.0f - f) + fr__blend1(pa[j], pb[j], mode) * f);
  }
  *out = t;
  return FR_OK;
}

enum fr_status fr_image_invert(const struct fr_tensor *img, struct fr_tensor **out, struct fr_err *err) {
  *out = NULL;
  enum fr_status rc = fr_image_check(img, "invert", err);
  if (rc)
    return rc;
  struct fr_tensor *t = fr_tensor_clone(img);
  if (!t)
    return fr__nomem(err, "invert");
  int64_t C = img->shape[3], colour = C == 4 ? 3 : (C == 2 ? 1 : C);
  size_t px = (size_t)(fr_tensor_numel(img) / C);
  float *p = t->data;
  for (size_t i = 0; i < px; i++)
    for (int64_t c = 0; c < colour; c++)
      p[i * C + c] = 1.0f - p[i * C + c];
  *out = t;
  return FR_OK;
}

/* ---- files ---- */

enum fr_status fr_image_load_png(const char *path, struct fr_tensor **image, struct fr_tensor **mask,
                                 struct fr_err *err) {
  *image = *mask = NULL;
  struct fr_tensor *px = NULL;
  enum fr_status rc = fr_png_read(path, &px, err);
  if (rc)
    return rc;
  int64_t H = px->shape[0], W = px->shape[1], C = px->shape[2];
  struct fr_tensor *img = fr__image_new(1, H, W, 3);
  struct fr_tensor *m = fr_tensor_f32(3, (int64_t[]){1, H, W});
  if (!img || !m) {
    fr_tensor_free(px);
    fr_tensor_free(img);
    fr_tensor_free(m);
    return fr_errf(err, FR_E_NOMEM, "%s: out of memory", path);
  }
  const float *s = px->data;
  float *o = img->data, *mo = m->data;
  for (int64_t i = 0; i < H * W; i++) {
    for (int c = 0; c < 3; c++)
      o[i * 3 + c] = s[i * C + (C >= 3 ? c : 0)];
    mo[i] = C == 4 ? 1.0f - s[i * C + 3] : 0.0f;
  }
  fr_tensor_free(px);
  *image = img;
  *mask = m;
  return FR_OK;
}

/* The highest NNNNN among dir/<prefix>_NNNNN.png, or 0. */
static long fr__highest_number(const char *dir, const char *prefix) {
  DIR *d = opendir(dir);
  if (!d)
    return 0;
  size_t pl = strlen(prefix);
  long best = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    const char *nm = e->d_name;
    if (strncmp(nm, prefix, pl) != 0 || nm[pl] != '_')
      continue;
    const char *num = nm + pl + 1;
    char *end;
    if (!isdigit((unsigned char)*num))
      continue;
    errno = 0;
    long v = strtol(num, &end, 10);
    if (errno == 0 && strcmp(end, ".png") == 0 && v > best)
      best = v;
  }
  closedir(d);
  return best;
}

enum fr_status fr_image_save_png(const char *dir, const char *prefix, const struct fr_tensor *images,
                                 const struct fr_png_text *texts, int n_texts, char **files,
                                 struct fr_err *err) {
  *files = NULL;
  enum fr_status rc = fr_image_check(images, "save", err);
  if (rc)
    return rc;
  if (images->shape[3] == 2)
    return fr_errf(err, FR_E_SHAPE, "save: cannot write a 2-channel image");
  if (!prefix || !*prefix || prefix[0] == '.' || strchr(prefix, '/') || strchr(prefix, '\\') ||
      strlen(prefix) > 200)
    return fr_errf(
        err, FR_E_INVALID,
        "save: filename_prefix '%s' must be a plain name (no '/', not starting with '.', at most 200 "
        "characters)",
        prefix ? prefix : "");
  if (!dir || !*dir)
    dir = ".";
  rc = fr_mkdirs(dir, err);
  if (rc)
    return rc;
  int64_t B = images->shape[0], H = images->shape[1], W = images->shape[2], C = images->shape[3];
  size_t cap = (size_t)B * (strlen(dir) + strlen(prefix) + 32) + 1, len = 0;
  char *list = fr_malloc(cap);
  char *path = fr_malloc(strlen(dir) + strlen(prefix) + 32);
  if (!list || !path) {
    fr_free(list);
    fr_free(path);
    return fr_errf(err, FR_E_NOMEM, "save: out of memory");
  }
  list[0] = '\0';
  long next = fr__highest_number(dir, prefix) + 1;
  for (int64_t b = 0; b < B && rc == FR_OK; b++) {
    /* The whole file is encoded and written under a temporary name first, then linked to the first free
     * <prefix>_NNNNN.png (link fails on a name that exists, so two processes saving at once get different
     * numbers and nothing is overwritten). Killed at any point, the folder holds no empty or partial PNG
     * under a numbered name. */
    struct fr_tensor *view =
        fr_tensor_view(FR_F32, 3, (int64_t[]){H, W, C}, (float *)images->data + b * H * W * C);
    if (!view) {
      rc = fr_errf(err, FR_E_NOMEM, "save: out of memory");
      break;
    }
    struct fr_buf png = {0};
    sprintf(path, "%s/%s_%05ld.png", dir, prefix, next);
    rc = fr_png_encode(view, texts, n_texts, &png, path, err);
    fr_tensor_free(view);
    char *tmp = NULL;
    if (rc == FR_OK) {
      sprintf(path, "%s/%s", dir, prefix);
      rc = fr_write_temp(path, png.data, png.len, &tmp, err);
    }
    fr_buf_free(&png);
    for (bool taken = true; rc == FR_OK && taken;) {
      sprintf(path, "%s/%s_%05ld.png", dir, prefix, next++);
      rc = fr_publish_temp(tmp, path, false, &taken, err);
    }
    if (rc != FR_OK && tmp)
      unlink(tmp);
    fr_free(tmp);
    if (rc)
      break;
    len += (size_t)sprintf(list + len, "%s%s", len ? "\n" : "", path);
  }
  fr_free(path);
  if (rc) {
    fr_free(list);
    return rc;
  }
  *files = list;
  return FR_OK;
}
