/* The mask, scaling, crop, composite and outpaint functions (nodes/image/edit.h) against values worked out
 * by hand from ComfyUI's definitions (nodes_mask.py, nodes.py, comfy/utils.py common_upscale and bislerp;
 * torch interpolate with align_corners False; scipy grey dilation/erosion): small tensors, exact values. A
 * comparison is exact (==) where the definition's arithmetic is exact in float32, else within 1e-6 (one
 * or two float32 roundings of values of order 1). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/comfy.h"
#include "core/flowrun.h"
#include "core/png.h"
#include "nodes/image/edit.h"
#include "nodes/image/image.h"
#include "nodes/registry.h"
#include "tests/test.h"

static const char *tmp;

static struct fr_tensor *mask_of(int b, int h, int w, const float *v) {
  struct fr_tensor *t = fr_tensor_f32(3, (int64_t[]){b, h, w});
  if (v)
    memcpy(t->data, v, (size_t)(b * h * w) * sizeof(float));
  else
    memset(t->data, 0, (size_t)(b * h * w) * sizeof(float));
  return t;
}
static struct fr_tensor *latent_of(int b, int c, int h, int w, const float *v) {
  struct fr_tensor *t = fr_tensor_f32(4, (int64_t[]){b, c, h, w});
  for (int64_t i = 0; i < fr_tensor_numel(t); i++)
    ((float *)t->data)[i] = v ? v[i] : 0.0f;
  return t;
}
static float at(const struct fr_tensor *t, int64_t i) {
  return ((const float *)t->data)[i];
}

/* Checks t's shape against dims and values against want (n = numel) within tol; prints what is wrong. */
static void expect(const char *what, const struct fr_tensor *t, int ndim, const int64_t *dims,
                   const float *want, double tol) {
  if (!t) {
    CHECKF(0, "%s: no result", what);
    return;
  }
  bool shape_ok = t->ndim == ndim;
  for (int i = 0; shape_ok && i < ndim; i++)
    shape_ok = t->shape[i] == dims[i];
  char s[64];
  CHECKF(shape_ok, "%s: shape %s", what, fr_shape_str(t, s, sizeof s));
  if (!shape_ok || !want)
    return;
  int bad = 0;
  for (int64_t i = 0; i < fr_tensor_numel(t); i++)
    if (!(fabs((double)at(t, i) - want[i]) <= tol)) {
      if (bad++ < 4)
        printf("  %s[%lld] = %.9g, expected %.9g\n", what, (long long)i, at(t, i), want[i]);
    }
  CHECKF(bad == 0, "%s: %d values off (tolerance %g)", what, bad, tol);
}

/* ---- masks ---- */

static void test_mask_basics(void) {
  struct fr_err err = {{0}};
  struct fr_tensor *img = fr_tensor_f32(4, (int64_t[]){1, 1, 2, 4}), *out = NULL;
  float px[] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f};
  memcpy(img->data, px, sizeof px);
  CHECK_OK(fr_image_to_mask(img, 1, &out, &err), &err); /* green */
  expect("ImageToMask green", out, 3, (int64_t[]){1, 1, 2}, (float[]){0.2f, 0.6f}, 0);
  fr_tensor_free(out);
  CHECK_OK(fr_image_to_mask(img, 3, &out, &err), &err); /* alpha */
  expect("ImageToMask alpha", out, 3, (int64_t[]){1, 1, 2}, (float[]){0.4f, 0.8f}, 0);
  fr_tensor_free(out);
  fr_tensor_free(img);
  img = fr_tensor_f32(4, (int64_t[]){1, 1, 1, 3});
  CHECK(fr_image_to_mask(img, 3, &out, &err) == FR_E_INVALID && strstr(err.msg, "alpha") && !out);
  fr_tensor_free(img);

  struct fr_tensor *m = mask_of(2, 1, 2, (float[]){0.0f, 0.25f, 1.0f, 0.75f});
  CHECK_OK(fr_mask_to_image(m, &out, &err), &err);
  expect("MaskToImage", out, 4, (int64_t[]){2, 1, 2, 3},
         (float[]){0, 0, 0, 0.25f, 0.25f, 0.25f, 1, 1, 1, 0.75f, 0.75f, 0.75f}, 0);
  fr_tensor_free(out);
  CHECK_OK(fr_mask_invert(m, &out, &err), &err);
  expect("InvertMask", out, 3, (int64_t[]){2, 1, 2}, (float[]){1.0f, 0.75f, 0.0f, 0.25f}, 0);
  fr_tensor_free(out);
  fr_tensor_free(m);

  m = mask_of(1, 1, 4, (float[]){0.2f, 0.5f, 0.50001f, 0.9f});
  CHECK_OK(fr_mask_threshold(m, 0.5, &out, &err), &err);
  expect("ThresholdMask 0.5 (strictly above)", out, 3, (int64_t[]){1, 1, 4}, (float[]){0, 0, 1, 1}, 0);
  fr_tensor_free(out);
  fr_tensor_free(m);

  CHECK_OK(fr_mask_solid(0.25, 3, 2, &out, &err), &err);
  expect("SolidMask", out, 3, (int64_t[]){1, 2, 3}, (float[]){0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f}, 0);
  fr_tensor_free(out);
  CHECK(fr_mask_solid(1.0, 0, 2, &out, &err) == FR_E_INVALID && !out);
  CHECK(fr_mask_check(img = fr_tensor_f32(2, (int64_t[]){2, 2}), "x", &err) == FR_E_SHAPE);
  fr_tensor_free(img);
}

static void test_grow_mask(void) {
  struct fr_err err = {{0}};
  struct fr_tensor *out = NULL;
  float dot[25] = {0};
  dot[12] = 1.0f;
  struct fr_tensor *m = mask_of(1, 5, 5, dot);
  /* one pass of the 3x3 cross: the centre and its 4 neighbours */
  CHECK_OK(fr_mask_grow(m, 1, true, &out, &err), &err);
  float cross[25] = {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0};
  expect("GrowMask +1 cross", out, 3, (int64_t[]){1, 5, 5}, cross, 0);
  fr_tensor_free(out);
  /* the square: the 3x3 block */
  CHECK_OK(fr_mask_grow(m, 1, false, &out, &err), &err);
  float block[25] = {0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0};
  expect("GrowMask +1 square", out, 3, (int64_t[]){1, 5, 5}, block, 0);
  fr_tensor_free(out);
  /* two cross passes: the diamond |dx| + |dy| <= 2 */
  CHECK_OK(fr_mask_grow(m, 2, true, &out, &err), &err);
  float diamond[25];
  for (int y = 0; y < 5; y++)
    for (int x = 0; x < 5; x++)
      diamond[y * 5 + x] = abs(x - 2) + abs(y - 2) <= 2 ? 1.0f : 0.0f;
  expect("GrowMask +2 cross", out, 3, (int64_t[]){1, 5, 5}, diamond, 0);
  fr_tensor_free(out);
  fr_tensor_free(m);
  /* erosion of the 3x3 block: the centre only (cross and square alike) */
  m = mask_of(1, 5, 5, block);
  CHECK_OK(fr_mask_grow(m, -1, true, &out, &err), &err);
  expect("GrowMask -1 cross", out, 3, (int64_t[]){1, 5, 5}, dot, 0);
  fr_tensor_free(out);
  CHECK_OK(fr_mask_grow(m, -1, false, &out, &err), &err);
  expect("GrowMask -1 square", out, 3, (int64_t[]){1, 5, 5}, dot, 0);
  fr_tensor_free(out);
  fr_tensor_free(m);
  /* borders reflect (the edge pixel repeats): eroding an all-ones mask with one hole in the corner loses the
   * corner's cross neighbours only, nothing along the edges */
  float ones[16];
  for (int i = 0; i < 16; i++)
    ones[i] = 1.0f;
  ones[0] = 0.0f;
  m = mask_of(1, 4, 4, ones);
  CHECK_OK(fr_mask_grow(m, -1, true, &out, &err), &err);
  float want[16];
  for (int i = 0; i < 16; i++)
    want[i] = 1.0f;
  want[0] = want[1] = want[4] = 0.0f;
  expect("GrowMask -1 at the border", out, 3, (int64_t[]){1, 4, 4}, want, 0);
  fr_tensor_free(out);
  fr_tensor_free(m);
  /* grey values: dilation is the max over the footprint, per batch item */
  m = mask_of(2, 1, 3, (float[]){0.2f, 0.7f, 0.1f, 0.3f, 0.0f, 0.6f});
  CHECK_OK(fr_mask_grow(m, 1, true, &out, &err), &err);
  expect("GrowMask grey", out, 3, (int64_t[]){2, 1, 3}, (float[]){0.7f, 0.7f, 0.7f, 0.3f, 0.6f, 0.6f}, 0);
  fr_tensor_free(out);
  CHECK_OK(fr_mask_grow(m, -1, true, &out, &err), &err);
  expect("GrowMask grey erosion", out, 3, (int64_t[]){2, 1, 3}, (float[]){0.2f, 0.1f, 0.1f, 0.0f, 0.0f, 0.0f},
         0);
  fr_tensor_free(out);
  fr_tensor_free(m);
}

static void test_feather_mask(void) {
  struct fr_err err = {{0}};
  struct fr_tensor *out = NULL;
  float ones[24];
  for (int i = 0; i < 24; i++)
    ones[i] = 1.0f;
  struct fr_tensor *m = mask_of(1, 4, 6, ones);
  /* left 2: columns x 1/2, 2/2; right 3: columns from the right x 1/3, 2/3, 3/3; top 1: x 1; bottom 2: the
   * last row x 1/2, the one before x 1 */
  CHECK_OK(fr_mask_feather(m, 2, 1, 3, 2, &out, &err), &err);
  float col[6] = {0.5f, 1.0f, 1.0f, 1.0f, 2.0f / 3.0f, 1.0f / 3.0f}, row[4] = {1, 1, 1, 0.5f};
  float want[24];
  for (int y = 0; y < 4; y++)
    for (int x = 0; x < 6; x++)
      want[y * 6 + x] = col[x] * row[y];
  expect("FeatherMask", out, 3, (int64_t[]){1, 4, 6}, want, 1e-6);
  fr_tensor_free(out);
  /* a side larger than the mask is clamped to it: left 10 on 6 columns is (x + 1) / 6 */
  CHECK_OK(fr_mask_feather(m, 10, 0, 0, 0, &out, &err), &err);
  for (int y = 0; y < 4; y++)
    for (int x = 0; x < 6; x++)
      want[y * 6 + x] = (x + 1) / 6.0f;
  expect("FeatherMask clamped", out, 3, (int64_t[]){1, 4, 6}, want, 1e-6);
  fr_tensor_free(out);
  fr_tensor_free(m);
}

static void test_mask_composite(void) {
  struct fr_err err = {{0}};
  struct fr_tensor *out = NULL;
  float half[12];
  for (int i = 0; i < 12; i++)
    half[i] = 0.5f;
  struct fr_tensor *d = mask_of(1, 3, 4, half), *s = mask_of(1, 2, 2, (float[]){1.0f, 0.25f, 0.5f, 0.75f});
  /* source at x 3, y 1: only its first column lands, on destination (1, 3) and (2, 3) */
  struct {
    enum fr_mask_op op;
    float v1, v2; /* destination (1, 3) = 0.5 op 1, (2, 3) = 0.5 op 0.5 */
    const char *name;
  } cases[] = {
      {FR_MASK_MULTIPLY, 0.5f, 0.25f, "multiply"},
      {FR_MASK_ADD, 1.0f, 1.0f, "add (clamped)"},
      {FR_MASK_SUBTRACT, 0.0f, 0.0f, "subtract (clamped)"},
      /* and/or/xor round half to even: 0.5 is false, 1 true */
      {FR_MASK_AND, 0.0f, 0.0f, "and"},
      {FR_MASK_OR, 1.0f, 0.0f, "or"},
      {FR_MASK_XOR, 1.0f, 0.0f, "xor"},
  };
  for (int c = 0; c < 6; c++) {
    CHECK_OK(fr_mask_composite(d, s, 3, 1, cases[c].op, &out, &err), &err);
    float want[12];
    for (int i = 0; i < 12; i++)
      want[i] = 0.5f;
    want[1 * 4 + 3] = cases[c].v1;
    want[2 * 4 + 3] = cases[c].v2;
    char what[64];
    snprintf(what, sizeof what, "MaskComposite %s", cases[c].name);
    expect(what, out, 3, (int64_t[]){1, 3, 4}, want, 0);
    fr_tensor_free(out);
  }
  /* and at 1.5 rounds to 2 (true), 2.5 would be 2 too: checked with values in range: 0.6 rounds to 1 */
  fr_tensor_free(s);
  s = mask_of(1, 1, 1, (float[]){0.6f});
  fr_tensor_free(d);
  d = mask_of(2, 1, 2, (float[]){0.6f, 0.4f, 0.0f, 1.0f});
  CHECK_OK(fr_mask_composite(d, s, 0, 0, FR_MASK_AND, &out, &err), &err);
  expect("MaskComposite and, source batch repeated", out, 3, (int64_t[]){2, 1, 2},
         (float[]){1.0f, 0.4f, 0.0f, 1.0f}, 0);
  fr_tensor_free(out);
  /* a source wholly outside leaves the destination as it was */
  CHECK_OK(fr_mask_composite(d, s, 5, 0, FR_MASK_MULTIPLY, &out, &err), &err);
  expect("MaskComposite outside", out, 3, (int64_t[]){2, 1, 2}, (float[]){0.6f, 0.4f, 0.0f, 1.0f}, 0);
  fr_tensor_free(out);
  fr_tensor_free(s);
  fr_tensor_free(d);
}

static void test_load_image_mask(void) {
  struct fr_err err = {{0}};
  /* an 8-bit RGBA PNG with known values k / 255 */
  struct fr_tensor *px = fr_tensor_f32(3, (int64_t[]){1, 2, 4});
  float v[8] = {10, 20, 30, 255, 40, 50, 60, 51};
  for (int i = 0; i < 8; i++)
    ((float *)px->data)[i] = v[i] / 255.0f;
  char path[4200];
  snprintf(path, sizeof path, "%.4000s/mask.png", tmp);
  CHECK_OK(fr_png_write(path, px, NULL, 0, &err), &err);
  fr_tensor_free(px);
  struct fr_tensor *out = NULL;
  CHECK_OK(fr_mask_load_png(path, 0, &out, &err), &err); /* alpha: 1 - alpha */
  expect("LoadImageMask alpha", out, 3, (int64_t[]){1, 1, 2}, (float[]){0.0f, 1.0f - 51 / 255.0f}, 1e-6);
  fr_tensor_free(out);
  CHECK_OK(fr_mask_load_png(path, 2, &out, &err), &err); /* green */
  expect("LoadImageMask green", out, 3, (int64_t[]){1, 1, 2}, (float[]){20 / 255.0f, 50 / 255.0f}, 1e-6);
  fr_tensor_free(out);
  /* an RGB file: alpha is opaque, so the alpha mask is 0 */
  px = fr_tensor_f32(3, (int64_t[]){1, 1, 3});
  ((float *)px->data)[0] = 1.0f;
  snprintf(path, sizeof path, "%.4000s/rgb.png", tmp);
  CHECK_OK(fr_png_write(path, px, NULL, 0, &err), &err);
  fr_tensor_free(px);
  CHECK_OK(fr_mask_load_png(path, 0, &out, &err), &err);
  expect("LoadImageMask alpha of RGB", out, 3, (int64_t[]){1, 1, 1}, (float[]){0.0f}, 0);
  fr_tensor_free(out);
  snprintf(path, sizeof path, "%.4000s/missing.png", tmp);
  CHECK(fr_mask_load_png(path, 1, &out, &err) != FR_OK && strstr(err.msg, "missing.png") && !out);
}

/* ---- scaling ---- */

/* Keys' cubic weight with a = -0.75, in double: the independent reference for bicubic. */
static double keys(double t) {
  const double a = -0.75;
  t = fabs(t);
  if (t <= 1)
    return ((a + 2) * t - (a + 3)) * t * t + 1;
  if (t < 2)
    return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a;
  return 0;
}

static void test_interpolate(void) {
  struct fr_err err = {{0}};
  struct fr_tensor *out = NULL;
  /* nearest-exact 2 -> 4: sources floor((i + 0.5) / 2) = 0 0 1 1; 4 -> 3: floor((i + 0.5) 4/3) = 0 2 3 */
  struct fr_tensor *x = latent_of(1, 1, 1, 2, (float[]){3, 7});
  CHECK_OK(fr_common_upscale(x, 4, 1, FR_UP_NEAREST_EXACT, false, &out, &err), &err);
  expect("nearest-exact 2->4", out, 4, (int64_t[]){1, 1, 1, 4}, (float[]){3, 3, 7, 7}, 0);
  fr_tensor_free(out);
  /* bilinear 2 -> 4: sources 0.25 i - 0.125 clamped: 0, 0.25, 0.75, 1 (clamped at the end) */
  CHECK_OK(fr_common_upscale(x, 4, 1, FR_UP_BILINEAR, false, &out, &err), &err);
  expect("bilinear 2->4", out, 4, (int64_t[]){1, 1, 1, 4}, (float[]){3, 4, 6, 7}, 1e-6);
  fr_tensor_free(out);
  /* bicubic 2 -> 4 of (0, 1): out[0] = keys(1.25) (taps -2..1 clamped: only index 1 is 1), out[1] =
   * keys(0.75) + keys(1.75) = 0.2265625; symmetric: out[2] = 1 - out[1], out[3] = 1 - out[0] */
  fr_tensor_free(x);
  x = latent_of(1, 1, 1, 2, (float[]){0, 1});
  CHECK_OK(fr_common_upscale(x, 4, 1, FR_UP_BICUBIC, false, &out, &err), &err);
  CHECK(fabs(keys(1.25) + 0.10546875) < 1e-15 && fabs(keys(0.75) + keys(1.75) - 0.2265625) < 1e-15);
  expect("bicubic 2->4 (overshoot kept in a latent)", out, 4, (int64_t[]){1, 1, 1, 4},
         (float[]){-0.10546875f, 0.2265625f, 0.7734375f, 1.10546875f}, 1e-6);
  fr_tensor_free(out);
  fr_tensor_free(x);
  x = latent_of(1, 1, 1, 4, (float[]){0, 1, 2, 3});
  CHECK_OK(fr_common_upscale(x, 3, 1, FR_UP_NEAREST_EXACT, false, &out, &err), &err);
  expect("nearest-exact 4->3", out, 4, (int64_t[]){1, 1, 1, 3}, (float[]){0, 2, 3}, 0);
  fr_tensor_free(out);
  /* area 4 -> 3: windows [0, 2), [1, 3), [2, 4) (floor(i 4/3), ceil((i + 1) 4/3)) */
  CHECK_OK(fr_common_upscale(x, 3, 1, FR_UP_AREA, false, &out, &err), &err);
  expect("area 4->3", out, 4, (int64_t[]){1, 1, 1, 3}, (float[]){0.5f, 1.5f, 2.5f}, 0);
  fr_tensor_free(out);
  fr_tensor_free(x);
  /* 2-D bilinear 2x2 -> 4x4 is the outer product of the 1-D weights (0/1, 1/4, 3/4, 1) */
  x = latent_of(1, 1, 2, 2, (float[]){1, 2, 3, 5});
  CHECK_OK(fr_common_upscale(x, 4, 4, FR_UP_BILINEAR, false, &out, &err), &err);
  float want[16];
  double wy[4] = {0, 0.25, 0.75, 1};
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 4; j++)
      want[i * 4 + j] =
          (float)((1 - wy[i]) * ((1 - wy[j]) * 1 + wy[j] * 2) + wy[i] * ((1 - wy[j]) * 3 + wy[j] * 5));
  expect("bilinear 2x2->4x4", out, 4, (int64_t[]){1, 1, 4, 4}, want, 1e-6);
  fr_tensor_free(out);
  fr_tensor_free(x);
  /* 2-D bicubic 3x3 -> 5x4 against the definition in double (sources (i + 0.5) in/out - 0.5, taps clamped) */
  float src[9] = {0.1f, 0.9f, 0.3f, 0.5f, 0.2f, 0.8f, 0.7f, 0.4f, 0.6f};
  x = latent_of(1, 1, 3, 3, src);
  CHECK_OK(fr_common_upscale(x, 4, 5, FR_UP_BICUBIC, false, &out, &err), &err);
  float wb[20];
  for (int oy = 0; oy < 5; oy++)
    for (int ox = 0; ox < 4; ox++) {
      double fy = (oy + 0.5) * 3 / 5.0 - 0.5, fx = (ox + 0.5) * 3 / 4.0 - 0.5, v = 0;
      int iy = (int)floor(fy), ix = (int)floor(fx);
      for (int j = -1; j <= 2; j++)
        for (int i = -1; i <= 2; i++) {
          int yy = iy + j < 0 ? 0 : (iy + j > 2 ? 2 : iy + j),
              xx = ix + i < 0 ? 0 : (ix + i > 2 ? 2 : ix + i);
          v += keys(j - (fy - iy)) * keys(i - (fx - ix)) * src[yy * 3 + xx];
        }
      wb[oy * 4 + ox] = (float)v;
    }
  expect("bicubic 3x3->5x4", out, 4, (int64_t[]){1, 1, 5, 4}, wb, 1e-6);
  fr_tensor_free(out);
  /* the IMAGE layout gives the same numbers per channel, clamped to [0, 1] */
  struct fr_tensor *img = fr_tensor_f32(4, (int64_t[]){1, 3, 3, 2});
  for (int i = 0; i < 9; i++) {
    ((float *)img->data)[i * 2] = src[i];
    ((float *)img->data)[i * 2 + 1] = 1.0f - src[i];
  }
  CHECK_OK(fr_image_scale(img, 4, 5, FR_UP_BICUBIC, false, &out, &err), &err);
  float wi[40];
  for (int i = 0; i < 20; i++) {
    wi[i * 2] = fminf(fmaxf(wb[i], 0.0f), 1.0f);
    wi[i * 2 + 1] = fminf(fmaxf(1.0f - wb[i], 0.0f), 1.0f);
  }
  expect("ImageScale bicubic (channels last, clamped)", out, 4, (int64_t[]){1, 5, 4, 2}, wi, 2e-6);
  fr_tensor_free(out);
  CHECK(fr_image_scale(img, 4, 5, FR_UP_BISLERP, false, &out, &err) == FR_E_INVALID && !out);
  fr_tensor_free(img);
  fr_tensor_free(x);
}

/* lanczos as ComfyUI: the image quantised to 8 bits and resized by PIL's LANCZOS. Worked by hand:
 *  - 2 -> 4 of (0, 255): scale 1/2, taps at distance (i + 0.5)/2 - 0.5 - x; for output 1 (centre 0.75) the
 *    weights L(-0.25) = 0.890067 and L(0.75) = 0.270189 (L(x) = sinc(x) sinc(x/3)) normalise to 0.767130 and
 *    0.232870, so 255 x 0.232870 = 59.38 -> 59 (22-bit fixed point, +1/2, truncated); output 2 mirrors it:
 *    195.62 -> 196; outputs 0 and 3 overshoot (-44.7, 299.7) and clip to 0 and 255;
 *  - 4 -> 2 of (0, 0, 255, 255): scale 2 widens the support to 6 and halves the distances: output 0 (centre
 *    1) weighs the 4 inputs L(-0.25), L(0.25), L(0.75), L(1.25) = 0.890067, 0.890067, 0.270189, -0.132871,
 *    so 255 (0.270189 - 0.132871) / 1.917452 = 18.26 -> 18, and output 1 236.74 -> 237;
 *  - an axis whose size does not change is not filtered at all (PIL skips that pass). */
static void test_lanczos(void) {
  struct fr_err err = {{0}};
  struct fr_tensor *out = NULL, *img = fr_tensor_f32(4, (int64_t[]){1, 1, 2, 1});
  ((float *)img->data)[0] = 0.0f;
  ((float *)img->data)[1] = 1.0f;
  CHECK_OK(fr_image_scale(img, 4, 1, FR_UP_LANCZOS, false, &out, &err), &err);
  expect("lanczos 2->4", out, 4, (int64_t[]){1, 1, 4, 1}, (float[]){0, 59 / 255.0f, 196 / 255.0f, 1}, 1e-7);
  fr_tensor_free(out);
  fr_tensor_free(img);
  img = fr_tensor_f32(4, (int64_t[]){1, 2, 1, 1}); /* the same along y */
  ((float *)img->data)[0] = 0.0f;
  ((float *)img->data)[1] = 1.0f;
  CHECK_OK(fr_image_scale(img, 1, 4, FR_UP_LANCZOS, false, &out, &err), &err);
  expect("lanczos 2->4 along y", out, 4, (int64_t[]){1, 4, 1, 1}, (float[]){0, 59 / 255.0f, 196 / 255.0f, 1},
         1e-7);
  fr_tensor_free(out);
  fr_tensor_free(img);
  img = fr_tensor_f32(4, (int64_t[]){1, 1, 4, 3});
  for (int i = 0; i < 12; i++) /* 0.999 quantises to 254 (255 x 0.999 = 254.7, truncated) */
    ((float *)img->data)[i] = i < 6 ? 0.0f : (i % 3 == 2 ? 0.999f : 1.0f);
  CHECK_OK(fr_image_scale(img, 2, 1, FR_UP_LANCZOS, false, &out, &err), &err);
  /* channel 2 of the right half is 254: 254 x 0.071615 = 18.19 -> 18, 254 x 0.928385 = 235.81 -> 236 */
  expect("lanczos 4->2", out, 4, (int64_t[]){1, 1, 2, 3},
         (float[]){18 / 255.0f, 18 / 255.0f, 18 / 255.0f, 237 / 255.0f, 237 / 255.0f, 236 / 255.0f}, 1e-7);
  fr_tensor_free(out);
  /* the size unchanged: no filtering, only the 8-bit quantisation */
  CHECK_OK(fr_image_scale(img, 4, 1, FR_UP_LANCZOS, false, &out, &err), &err);
  float q[12];
  for (int i = 0; i < 12; i++)
    q[i] = i < 6 ? 0.0f : (i % 3 == 2 ? 254 / 255.0f : 1.0f);
  expect("lanczos same size", out, 4, (int64_t[]){1, 1, 4, 3}, q, 1e-7);
  fr_tensor_free(out);
  fr_tensor_free(img);
  /* not for latents */
  struct fr_tensor *x = latent_of(1, 4, 2, 2, NULL);
  CHECK(fr_common_upscale(x, 4, 4, FR_UP_LANCZOS, false, &out, &err) == FR_E_INVALID && !out);
  fr_tensor_free(x);
}

static void test_sizes(void) {
  struct fr_err err = {{0}};
  struct fr_tensor *out = NULL;
  /* LatentUpscale: pixel sizes, at least 64, then // 8 */
  struct fr_tensor *x = latent_of(1, 4, 8, 12, NULL);
  CHECK_OK(fr_latent_upscale(x, 130, 70, FR_UP_NEAREST_EXACT, false, &out, &err), &err);
  expect("LatentUpscale 130x70 -> 16x8", out, 4, (int64_t[]){1, 4, 8, 16}, NULL, 0);
  fr_tensor_free(out);
  CHECK_OK(fr_latent_upscale(x, 20, 30, FR_UP_NEAREST_EXACT, false, &out, &err), &err);
  expect("LatentUpscale 20x30 -> at least 64: 8x8", out, 4, (int64_t[]){1, 4, 8, 8}, NULL, 0);
  fr_tensor_free(out);
  /* width 0: height max(64, 36) = 64, width round(12 * 64 / 8) = 96 -> 12 */
  CHECK_OK(fr_latent_upscale(x, 0, 36, FR_UP_BILINEAR, false, &out, &err), &err);
  expect("LatentUpscale width 0", out, 4, (int64_t[]){1, 4, 8, 12}, NULL, 0);
  fr_tensor_free(out);
  /* height 0: width 200, height round(8 * 200 / 12) = round(133.33) = 133 -> 16; width 200 -> 25 */
  CHECK_OK(fr_latent_upscale(x, 200, 0, FR_UP_BILINEAR, false, &out, &err), &err);
  expect("LatentUpscale height 0", out, 4, (int64_t[]){1, 4, 16, 25}, NULL, 0);
  fr_tensor_free(out);
  fr_tensor_free(x);
  /* LatentUpscaleBy rounds half to even: 10 x 1.25 = 12.5 -> 12, 6 x 1.25 = 7.5 -> 8 */
  x = latent_of(1, 4, 6, 10, NULL);
  CHECK_OK(fr_latent_upscale_by(x, 1.25, FR_UP_BISLERP, &out, &err), &err);
  expect("LatentUpscaleBy 1.25 half to even", out, 4, (int64_t[]){1, 4, 8, 12}, NULL, 0);
  fr_tensor_free(out);
  CHECK(fr_latent_upscale_by(x, 0.01, FR_UP_BILINEAR, &out, &err) == FR_E_INVALID && !out);
  fr_tensor_free(x);
  /* ImageScaleBy: 6 x 0.75 = 4.5 -> 4, 2 x 0.75 = 1.5 -> 2 */
  struct fr_tensor *img = fr_tensor_f32(4, (int64_t[]){1, 2, 6, 3});
  memset(img->data, 0, fr_tensor_nbytes(img));
  CHECK_OK(fr_image_scale_by(img, 0.75, FR_UP_AREA, &out, &err), &err);
  expect("ImageScaleBy 0.75", out, 4, (int64_t[]){1, 2, 4, 3}, NULL, 0);
  fr_tensor_free(out);
  /* ImageScale width 0 follows the height: round(6 * 5 / 2) = 15 */
  CHECK_OK(fr_image_scale(img, 0, 5, FR_UP_NEAREST_EXACT, false, &out, &err), &err);
  expect("ImageScale width 0", out, 4, (int64_t[]){1, 5, 15, 3}, NULL, 0);
  fr_tensor_free(out);
  fr_tensor_free(img);
  /* crop center: 7x2 to aspect 1 cuts round((7 - 2) / 2) = round(2.5) = 2 columns a side (half to even),
   * leaving columns 2..4, then nearest-exact 3 -> 2 picks floor((i + 0.5) 1.5) = 0, 2 */
  float v[14];
  for (int i = 0; i < 14; i++)
    v[i] = (float)i;
  x = latent_of(1, 1, 2, 7, v);
  CHECK_OK(fr_common_upscale(x, 2, 2, FR_UP_NEAREST_EXACT, true, &out, &err), &err);
  expect("crop center", out, 4, (int64_t[]){1, 1, 2, 2}, (float[]){2, 4, 9, 11}, 0);
  fr_tensor_free(out);
  fr_tensor_free(x);
}

static void test_bislerp(void) {
  struct fr_err err = {{0}};
  struct fr_tensor *out = NULL;
  const double s1 = sin(M_PI / 8), s3 = sin(3 * M_PI / 8);
  /* along x, 2 -> 4, channel vectors a = (2, 0) and b = (0, 1): ratios 0, 0.25, 0.75, 0 with sources
   * (0, 1), (0, 1), (0, 1), (1, 1); slerp of the unit vectors (angle pi/2) times the lerped norm */
  struct fr_tensor *x = latent_of(1, 2, 1, 2, (float[]){2, 0, 0, 1});
  CHECK_OK(fr_latent_upscale_by(x, 2.0, FR_UP_BISLERP, &out, &err), &err);
  /* upscale_by 2 also doubles the height 1 -> 2: the vertical pass repeats the rows (sources (0, 0)) */
  double n1 = 2 * 0.75 + 1 * 0.25, n2 = 2 * 0.25 + 1 * 0.75;
  float row0[4] = {2, (float)(n1 * s3), (float)(n2 * s1), 0},
        row1[4] = {0, (float)(n1 * s1), (float)(n2 * s3), 1};
  float want[16];
  for (int y = 0; y < 2; y++)
    for (int i = 0; i < 4; i++) {
      want[0 * 8 + y * 4 + i] = row0[i];
      want[1 * 8 + y * 4 + i] = row1[i];
    }
  expect("bislerp along x", out, 4, (int64_t[]){1, 2, 2, 4}, want, 1e-6);
  fr_tensor_free(out);
  fr_tensor_free(x);
  /* along y, with opposite vectors: a lerp (ComfyUI's edge case), 0.75 a + 0.25 b at the second row */
  x = latent_of(1, 2, 2, 1, (float[]){1, -1, 0, 0});
  CHECK_OK(fr_common_upscale(x, 1, 4, FR_UP_BISLERP, false, &out, &err), &err);
  expect("bislerp along y, opposite", out, 4, (int64_t[]){1, 2, 4, 1},
         (float[]){1, 0.5f, -0.5f, -1, 0, 0, 0, 0}, 1e-6);
  fr_tensor_free(out);
  fr_tensor_free(x);
  /* a zero vector: its normalised form is 0, so the result is sin(r pi/2) b_hat times the lerped norm */
  x = latent_of(1, 2, 1, 2, (float[]){0, 0, 0, 4});
  CHECK_OK(fr_common_upscale(x, 4, 1, FR_UP_BISLERP, false, &out, &err), &err);
  expect("bislerp from zero", out, 4, (int64_t[]){1, 2, 1, 4},
         (float[]){0, 0, 0, 0, 0, (float)(s1 * 1.0), (float)(s3 * 3.0), 4}, 1e-6);
  fr_tensor_free(out);
  fr_tensor_free(x);
}

/* ---- crop, composite, outpaint ---- */

static void test_crop_composite(void) {
  struct fr_err err = {{0}};
  struct fr_tensor *out = NULL;
  struct fr_tensor *img = fr_tensor_f32(4, (int64_t[]){1, 4, 5, 1});
  for (int i = 0; i < 20; i++)
    ((float *)img->data)[i] = (float)i / 20.0f;
  /* x 3, y 2, 4x4: clipped to 2x2 */
  CHECK_OK(fr_image_crop(img, 4, 4, 3, 2, &out, &err), &err);
  expect("ImageCrop clipped", out, 4, (int64_t[]){1, 2, 2, 1},
         (float[]){13 / 20.f, 14 / 20.f, 18 / 20.f, 19 / 20.f}, 0);
  fr_tensor_free(out);
  /* x past the edge: x = W - 1 */
  CHECK_OK(fr_image_crop(img, 8, 1, 10, 0, &out, &err), &err);
  expect("ImageCrop x past the edge", out, 4, (int64_t[]){1, 1, 1, 1}, (float[]){4 / 20.f}, 0);
  fr_tensor_free(out);
  fr_tensor_free(img);

  /* LatentCrop on [1, 1, 10, 12]: x 40 -> 5, capped at 12 - 8 = 4; y 8 -> 1; 64x16 -> 8x2 */
  float v[120];
  for (int i = 0; i < 120; i++)
    v[i] = (float)i;
  struct fr_tensor *x = latent_of(1, 1, 10, 12, v);
  CHECK_OK(fr_latent_crop(x, 64, 16, 40, 8, &out, &err), &err);
  float want[16];
  for (int r = 0; r < 2; r++)
    for (int c = 0; c < 8; c++)
      want[r * 8 + c] = (float)((1 + r) * 12 + 4 + c);
  expect("LatentCrop", out, 4, (int64_t[]){1, 1, 2, 8}, want, 0);
  fr_tensor_free(out);
  fr_tensor_free(x);

  /* LatentComposite without feather: from pasted at (16, 8) px = (2, 1) latent, clipped at the edge */
  struct fr_tensor *to = latent_of(1, 1, 3, 4, NULL),
                   *from = latent_of(1, 1, 2, 3, (float[]){1, 2, 3, 4, 5, 6});
  CHECK_OK(fr_latent_composite(to, from, 16, 8, 0, &out, &err), &err);
  expect("LatentComposite", out, 4, (int64_t[]){1, 1, 3, 4}, (float[]){0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 4, 5},
         0);
  fr_tensor_free(out);
  fr_tensor_free(to);
  fr_tensor_free(from);
  /* feather 16 px = 2 latent pixels, all four sides inner: the mask is r(y) r(x) with r = (1/2, 1, 1, 1/2);
   * result = from mask + to (1 - mask) */
  float twos[36];
  for (int i = 0; i < 36; i++)
    twos[i] = 2.0f;
  float ones[16];
  for (int i = 0; i < 16; i++)
    ones[i] = 1.0f;
  to = latent_of(1, 1, 6, 6, twos);
  from = latent_of(1, 1, 4, 4, ones);
  CHECK_OK(fr_latent_composite(to, from, 8, 8, 16, &out, &err), &err);
  float r[4] = {0.5f, 1, 1, 0.5f}, wc[36];
  for (int i = 0; i < 36; i++)
    wc[i] = 2.0f;
  for (int y = 0; y < 4; y++)
    for (int xx = 0; xx < 4; xx++) {
      float mk = r[y] * r[xx];
      wc[(1 + y) * 6 + 1 + xx] = mk + 2.0f * (1 - mk);
    }
  expect("LatentComposite feathered", out, 4, (int64_t[]){1, 1, 6, 6}, wc, 1e-6);
  fr_tensor_free(out);
  /* at (0, 0) the top and left sides touch the border: not feathered */
  CHECK_OK(fr_latent_composite(to, from, 0, 0, 16, &out, &err), &err);
  float r2[4] = {1, 1, 1, 0.5f};
  for (int i = 0; i < 36; i++)
    wc[i] = 2.0f;
  for (int y = 0; y < 4; y++)
    for (int xx = 0; xx < 4; xx++) {
      float mk = r2[y] * r2[xx];
      wc[y * 6 + xx] = mk + 2.0f * (1 - mk);
    }
  expect("LatentComposite feathered at the corner", out, 4, (int64_t[]){1, 1, 6, 6}, wc, 1e-6);
  fr_tensor_free(out);
  fr_tensor_free(to);
  fr_tensor_free(from);
}

static void test_pad_outpaint(void) {
  struct fr_err err = {{0}};
  struct fr_tensor *img = fr_tensor_f32(4, (int64_t[]){1, 6, 6, 3}), *out = NULL, *mask = NULL;
  for (int i = 0; i < 108; i++)
    ((float *)img->data)[i] = 0.2f;
  /* left 2, bottom 1, feathering 2 (2 * 2 < 6): d = min(6 - i, j) (top and right not padded count as
   * far), mask ((2 - d) / 2)^2 for d < 2: 1 at d 0, 0.25 at d 1 */
  CHECK_OK(fr_image_pad_for_outpaint(img, 2, 0, 0, 1, 2, &out, &mask, &err), &err);
  expect("ImagePadForOutpaint image", out, 4, (int64_t[]){1, 7, 8, 3}, NULL, 0);
  expect("ImagePadForOutpaint mask", mask, 3, (int64_t[]){1, 7, 8}, NULL, 0);
  if (out && mask) {
    CHECK(at(out, (0 * 8 + 0) * 3) == 0.5f && at(out, (6 * 8 + 5) * 3 + 2) == 0.5f);
    CHECK(at(out, (0 * 8 + 2) * 3) == 0.2f && at(out, (5 * 8 + 7) * 3 + 1) == 0.2f);
    float want[56];
    for (int y = 0; y < 7; y++)
      for (int x = 0; x < 8; x++)
        want[y * 8 + x] = 1.0f; /* the new area */
    for (int i = 0; i < 6; i++)
      for (int j = 0; j < 6; j++) {
        int d = 6 - i < j ? 6 - i : j;
        want[i * 8 + 2 + j] = d == 0 ? 1.0f : (d == 1 ? 0.25f : 0.0f);
      }
    expect("ImagePadForOutpaint mask values", mask, 3, (int64_t[]){1, 7, 8}, want, 0);
  }
  fr_tensor_free(out);
  fr_tensor_free(mask);
  /* feathering 3 is not below half the side (2 * 3 = 6): no fade, the old image is 0 */
  CHECK_OK(fr_image_pad_for_outpaint(img, 0, 1, 0, 0, 3, &out, &mask, &err), &err);
  if (mask) {
    float want[42];
    for (int i = 0; i < 42; i++)
      want[i] = i < 6 ? 1.0f : 0.0f;
    expect("ImagePadForOutpaint no feather", mask, 3, (int64_t[]){1, 7, 6}, want, 0);
  }
  fr_tensor_free(out);
  fr_tensor_free(mask);
  fr_tensor_free(img);
}

/* The nodes through the engine: an outpaint and mask chain on a synthetic image writes the expected sizes,
 * and every new node type is registered under its ComfyUI name. */
static void test_engine(void) {
  static const char *const names[] = {
      "LoadImageMask", "ImageToMask",    "MaskToImage",         "InvertMask",    "GrowMask",
      "FeatherMask",   "SolidMask",      "ThresholdMask",       "MaskComposite", "ImageScale",
      "ImageScaleBy",  "ImageCrop",      "ImagePadForOutpaint", "LatentUpscale", "LatentUpscaleBy",
      "LatentCrop",    "LatentComposite"};
  for (int i = 0; i < (int)(sizeof names / sizeof *names); i++)
    CHECKF(fr_registry_find(fr_builtin_registry(), names[i]) != NULL, "%s registered", names[i]);
  char cache[4200], outdir[4200], png[4300];
  snprintf(cache, sizeof cache, "%.4000s/cache.sqlite", tmp);
  snprintf(outdir, sizeof outdir, "%.4000s/out", tmp);
  struct fr_err err = {{0}};
  struct fr_engine_opts o = {.registry = fr_builtin_registry(), .cache_path = cache, .output_dir = outdir};
  struct fr_engine *e = NULL;
  CHECK_OK(fr_engine_new(&o, &e, &err), &err);
  if (!e)
    return;
  const char *yaml =
      "flowrun: 1\n"
      "nodes:\n"
      "  p: {type: TestPattern, inputs: {width: 40, height: 24}}\n"
      "  s: {type: ImageScaleBy, inputs: {image: p, upscale_method: bilinear, scale_by: 0.5}}\n"
      "  c: {type: ImageCrop, inputs: {image: s, width: 16, height: 8, x: 2, y: 1}}\n"
      "  o: {type: ImagePadForOutpaint, inputs: {image: c, left: 8, top: 0, right: 0, bottom: 4, "
      "feathering: 2}}\n"
      "  g: {type: GrowMask, inputs: {mask: o.mask, expand: -1, tapered_corners: false}}\n"
      "  sm: {type: SolidMask, inputs: {value: 0.5, width: 24, height: 12}}\n"
      "  mc: {type: MaskComposite, inputs: {destination: g, source: sm, operation: add}}\n"
      "  t: {type: ThresholdMask, inputs: {mask: mc, value: 0.9}}\n"
      "  i: {type: MaskToImage, inputs: {mask: t}}\n"
      "  save: {type: SaveImage, inputs: {images: i, filename_prefix: edit}}\n"
      "  save2: {type: SaveImage, inputs: {images: o.image, filename_prefix: padded}}\n";
  struct fr_graph *g = NULL;
  CHECK_OK(fr_engine_load_string(e, yaml, strlen(yaml), "<edit>", NULL, NULL, 0, &g, &err), &err);
  if (g) {
    struct fr_run_summary sum = {0};
    CHECK_OK(fr_engine_run(e, g, &sum, &err), &err);
    struct fr_tensor *a = NULL, *b = NULL;
    snprintf(png, sizeof png, "%s/edit_00001.png", outdir);
    CHECK_OK(fr_png_read(png, &a, &err), &err);
    snprintf(png, sizeof png, "%s/padded_00001.png", outdir);
    CHECK_OK(fr_png_read(png, &b, &err), &err);
    /* 40x24 / 2 = 20x12, crop 16x8 (clipped by nothing), padded to 24x12 */
    CHECK(a && a->shape[0] == 12 && a->shape[1] == 24);
    CHECK(b && b->shape[0] == 12 && b->shape[1] == 24);
    if (a) /* the padded corner is masked, the middle of the old image is not */
      CHECK(at(a, 0) == 1.0f && at(a, (4 * 24 + 16) * 3) == 0.0f);
    fr_tensor_free(a);
    fr_tensor_free(b);
    fr_graph_free(g);
  }
  fr_engine_free(e);
}

/* A ComfyUI API-format workflow of these nodes imports (same names, inputs, choices and output slots:
 * ImagePadForOutpaint's slot 1 is its mask) and runs. */
static void test_comfy_import(void) {
  const char *json =
      "{\"1\": {\"class_type\": \"SolidMask\", \"inputs\": {\"value\": 0.5, \"width\": 40, \"height\": 24}},"
      " \"2\": {\"class_type\": \"MaskToImage\", \"inputs\": {\"mask\": [\"1\", 0]}},"
      " \"3\": {\"class_type\": \"ImageScale\", \"inputs\": {\"image\": [\"2\", 0], \"upscale_method\": "
      "\"lanczos\", \"width\": 20, \"height\": 0, \"crop\": \"disabled\"}},"
      " \"4\": {\"class_type\": \"ImagePadForOutpaint\", \"inputs\": {\"image\": [\"3\", 0], \"left\": 4, "
      "\"top\": 0, \"right\": 0, \"bottom\": 2, \"feathering\": 40}},"
      " \"5\": {\"class_type\": \"GrowMask\", \"inputs\": {\"mask\": [\"4\", 1], \"expand\": 1, "
      "\"tapered_corners\": false}},"
      " \"6\": {\"class_type\": \"MaskComposite\", \"inputs\": {\"destination\": [\"5\", 0], \"source\": "
      "[\"1\", 0], \"x\": 0, \"y\": 0, \"operation\": \"xor\"}},"
      " \"7\": {\"class_type\": \"MaskToImage\", \"inputs\": {\"mask\": [\"6\", 0]}},"
      " \"8\": {\"class_type\": \"SaveImage\", \"inputs\": {\"images\": [\"7\", 0], \"filename_prefix\": "
      "\"imported\"}}}";
  struct fr_buf yaml = {0};
  struct fr_err err = {{0}};
  CHECK_OK(fr_comfy_import(fr_builtin_registry(), json, strlen(json), "edit.json", &yaml, NULL, &err), &err);
  char outdir[4200], png[4300];
  snprintf(outdir, sizeof outdir, "%.4000s/imported", tmp);
  struct fr_engine_opts o = {.registry = fr_builtin_registry(), .no_cache = true, .output_dir = outdir};
  struct fr_engine *e = NULL;
  CHECK_OK(fr_engine_new(&o, &e, &err), &err);
  struct fr_graph *g = NULL;
  if (e && yaml.len)
    CHECK_OK(fr_engine_load_string(e, yaml.data, yaml.len, "<imported>", NULL, NULL, 0, &g, &err), &err);
  if (g) {
    struct fr_run_summary sum = {0};
    CHECK_OK(fr_engine_run(e, g, &sum, &err), &err);
    struct fr_tensor *a = NULL;
    snprintf(png, sizeof png, "%s/imported_00001.png", outdir);
    CHECK_OK(fr_png_read(png, &a, &err), &err);
    /* 40x24 scaled to width 20 (height round(24 * 20 / 40) = 12), padded by 4 left and 2 below: 24x14 */
    CHECK(a && a->shape[0] == 14 && a->shape[1] == 24);
    fr_tensor_free(a);
    fr_graph_free(g);
  }
  fr_engine_free(e);
  fr_buf_free(&yaml);
}

/* The latent nodes keep a LATENT's other fields (a noise_mask) as ComfyUI's dict copy does: a producer node
 * defined here makes a latent with a noise_mask and a string field, an output node here records what reaches
 * it through LatentUpscaleBy, LatentCrop and LatentComposite (samples_to's fields). */
static int seen_h, seen_w, seen_mask_ok, seen_str_ok;
static enum fr_status masked_run(struct fr_node_ctx *nc) {
  struct fr_tensor *s = latent_of(1, 4, 16, 16, NULL), *m = mask_of(1, 16, 16, NULL);
  for (int i = 0; i < 256; i++)
    ((float *)m->data)[i] = (float)(i % 3) / 2.0f;
  struct fr_value *v = fr_value_tensor(FR_T_LATENT, "samples", s);
  if (!v || fr_value_add_tensor(v, "noise_mask", m) || fr_value_add_string(v, "note", "kept")) {
    fr_value_unref(v);
    return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
  }
  return fr_out_set(nc, 0, v);
}
static enum fr_status inspect_run(struct fr_node_ctx *nc) {
  const struct fr_value *v = fr_in(nc, "latent");
  const struct fr_tensor *s = v ? fr_value_get_tensor(v, "samples") : NULL,
                         *m = v ? fr_value_get_tensor(v, "noise_mask") : NULL;
  const char *note = v ? fr_value_get_string(v, "note") : NULL;
  seen_h = s ? (int)s->shape[2] : -1;
  seen_w = s ? (int)s->shape[3] : -1;
  seen_mask_ok = m && m->ndim == 3 && m->shape[1] == 16 && m->shape[2] == 16 && ((float *)m->data)[4] == 0.5f;
  seen_str_ok = note && strcmp(note, "kept") == 0;
  return fr_out_set(nc, 0, fr_value_string(""));
}
static const struct fr_output_spec masked_out[] = {{.name = "latent", .type = FR_T_LATENT}};
static const struct fr_node_spec masked_spec = {
    .name = "MaskedLatent", .version = 1, .outputs = masked_out, .n_outputs = 1, .run = masked_run};
static const struct fr_input_spec inspect_in[] = {{.name = "latent", .type = FR_T_LATENT}};
static const struct fr_output_spec inspect_out[] = {{.name = "files", .type = FR_T_STRING}};
static const struct fr_node_spec inspect_spec = {.name = "Inspect",
                                                 .version = 1,
                                                 .inputs = inspect_in,
                                                 .n_inputs = 1,
                                                 .outputs = inspect_out,
                                                 .n_outputs = 1,
                                                 .flags = FR_NODE_OUTPUT,
                                                 .run = inspect_run};

static void test_latent_fields(void) {
  const struct fr_registry *b = fr_builtin_registry();
  const struct fr_node_spec *specs[] = {&masked_spec,
                                        &inspect_spec,
                                        fr_registry_find(b, "LatentUpscaleBy"),
                                        fr_registry_find(b, "LatentCrop"),
                                        fr_registry_find(b, "LatentComposite"),
                                        fr_registry_find(b, "LatentUpscale")};
  struct fr_registry reg = {specs, 6};
  struct fr_err err = {{0}};
  struct fr_engine_opts o = {.registry = &reg, .no_cache = true};
  struct fr_engine *e = NULL;
  CHECK_OK(fr_engine_new(&o, &e, &err), &err);
  if (!e)
    return;
  static const char *const cases[][2] = {
      {"  op: {type: LatentUpscaleBy, inputs: {samples: src, upscale_method: bislerp, scale_by: 1.5}}\n",
       "24 24"},
      {"  op: {type: LatentUpscale, inputs: {samples: src, width: 64, height: 96}}\n", "12 8"},
      {"  op: {type: LatentCrop, inputs: {samples: src, width: 64, height: 64, x: 8, y: 16}}\n", "8 8"},
      {"  op: {type: LatentComposite, inputs: {samples_to: src, samples_from: src, x: 64, y: 0}}\n", "16 16"},
  };
  for (int i = 0; i < 4; i++) {
    char yaml[1024];
    snprintf(
        yaml, sizeof yaml,
        "flowrun: 1\nnodes:\n  src: {type: MaskedLatent}\n%s  out: {type: Inspect, inputs: {latent: op}}\n",
        cases[i][0]);
    struct fr_graph *g = NULL;
    seen_h = seen_w = -1;
    seen_mask_ok = seen_str_ok = 0;
    CHECK_OK(fr_engine_load_string(e, yaml, strlen(yaml), "<latent>", NULL, NULL, 0, &g, &err), &err);
    if (!g)
      continue;
    struct fr_run_summary sum = {0};
    CHECK_OK(fr_engine_run(e, g, &sum, &err), &err);
    char got[32];
    snprintf(got, sizeof got, "%d %d", seen_h, seen_w);
    CHECKF(strcmp(got, cases[i][1]) == 0 && seen_mask_ok && seen_str_ok,
           "case %d: samples %s (want %s), noise_mask kept %d, string field kept %d", i, got, cases[i][1],
           seen_mask_ok, seen_str_ok);
    fr_graph_free(g);
  }
  fr_engine_free(e);
}

int main(void) {
  tmp = fr_test_tmpdir("test_edit_nodes");
  test_mask_basics();
  test_grow_mask();
  test_feather_mask();
  test_mask_composite();
  test_load_image_mask();
  test_interpolate();
  test_sizes();
  test_lanczos();
  test_bislerp();
  test_crop_composite();
  test_pad_outpaint();
  test_engine();
  test_latent_fields();
  test_comfy_import();
  return fr_test_done();
}
