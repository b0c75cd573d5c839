/* The image functions behind the image nodes, checked numerically against formulas written out here,
 * plus LoadImage's PNG conversion and SaveImage's numbering (never overwriting a file). */
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/file.h"
#include "core/flowrun.h"
#include "nodes/image/image.h"
#include "nodes/registry.h"
#include "tests/test.h"

static const char *tmp;

static struct fr_tensor *img_new(int b, int h, int w, int c) {
  return fr_tensor_f32(4, (int64_t[]){b, h, w, c});
}
static float *px(const struct fr_tensor *t, int b, int y, int x) {
  return (float *)t->data + (((int64_t)b * t->shape[1] + y) * t->shape[2] + x) * t->shape[3];
}

static double max_abs_diff(const struct fr_tensor *a, const struct fr_tensor *b) {
  double m = 0;
  for (int64_t i = 0; i < fr_tensor_numel(a); i++)
    m = fmax(m, fabs(((float *)a->data)[i] - ((float *)b->data)[i]));
  return m;
}

static void test_blur(void) {
  struct fr_err err = {{0}};
  /* a constant image blurs to itself (the kernel is normalised, the edges clamped) */
  struct fr_tensor *c = img_new(2, 9, 11, 3), *out = NULL;
  for (int64_t i = 0; i < fr_tensor_numel(c); i++)
    ((float *)c->data)[i] = 0.3f + 0.1f * (float)(i % 3);
  CHECK_OK(fr_image_blur(c, 4, 1.5, &out, &err), &err);
  double d = out ? max_abs_diff(out, c) : 1;
  printf(
      "blur of a constant image: max change %.2g (tolerance 1e-6: float rounding of a normalised kernel)\n",
      d);
  CHECK(d < 1e-6);
  fr_tensor_free(out);

  /* a bump away from the edges keeps its sum (mean), is symmetric, and spreads as the kernel says */
  struct fr_tensor *imp = img_new(1, 21, 21, 3);
  *px(imp, 0, 10, 10) = 1.0f, px(imp, 0, 10, 10)[1] = 1.0f, px(imp, 0, 10, 10)[2] = 1.0f;
  int r = 3;
  double sigma = 0.8;
  out = NULL;
  CHECK_OK(fr_image_blur(imp, r, sigma, &out, &err), &err);
  if (out) {
    double sum = 0;
    for (int y = 0; y < 21; y++)
      for (int x = 0; x < 21; x++)
        sum += *px(out, 0, y, x);
    printf("blur of an impulse: sum %.7f (expected 1, tolerance 1e-5)\n", sum);
    CHECK(fabs(sum - 1.0) < 1e-5);
    CHECK(fabsf(*px(out, 0, 10, 7) - *px(out, 0, 10, 13)) < 1e-7f &&
          fabsf(*px(out, 0, 7, 10) - *px(out, 0, 13, 10)) < 1e-7f);
    CHECK(*px(out, 0, 10, 6) == 0.0f && *px(out, 0, 14, 10) == 0.0f); /* nothing beyond the radius */
    /* taps at i / r: the neighbour-to-centre ratio is exp(-(1/r)^2 / (2 sigma^2)) */
    double ratio = *px(out, 0, 10, 11) / *px(out, 0, 10, 10);
    double expect = exp(-(1.0 / (r * r)) / (2 * sigma * sigma));
    CHECKF(fabs(ratio - expect) < 1e-5, "ratio %g expected %g", ratio, expect);
  }
  fr_tensor_free(out);

  /* radius 0 is a copy; bad sigma, bad radius and a bad shape are errors */
  out = NULL;
  CHECK_OK(fr_image_blur(imp, 0, 1.0, &out, &err), &err);
  CHECK(out && max_abs_diff(out, imp) == 0);
  fr_tensor_free(out);
  CHECK(fr_image_blur(imp, 2, 0.0, &out, &err) == FR_E_INVALID && out == NULL && strstr(err.msg, "sigma"));
  CHECK(fr_image_blur(imp, -1, 1.0, &out, &err) == FR_E_INVALID && strstr(err.msg, "radius"));
  struct fr_tensor *flat = fr_tensor_f32(2, (int64_t[]){4, 4});
  CHECK(fr_image_blur(flat, 1, 1.0, &out, &err) == FR_E_SHAPE && strstr(err.msg, "[4, 4]"));
  fr_tensor_free(flat);
  fr_tensor_free(imp);
  fr_tensor_free(c);
}

static void test_resize(void) {
  struct fr_err err = {{0}};
  /* a horizontal ramp sampled at pixel centres, f(x) = (x + 0.5) / W */
  int W = 16, H = 4;
  struct fr_tensor *ramp = img_new(1, H, W, 3), *out = NULL;
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++)
      for (int c = 0; c < 3; c++)
        px(ramp, 0, y, x)[c] = (x + 0.5f) / W;
  const char *names[] = {"bilinear", "bicubic"};
  enum fr_resize_method ms[] = {FR_RESIZE_BILINEAR, FR_RESIZE_BICUBIC};
  /* Bilinear reproduces a linear function exactly. PyTorch's bicubic kernel (a = -0.75) does not: its first
   * moment is off by up to 0.047 pixel (at a quarter-pixel phase), which on a slope of 1/16 per pixel is
   * 0.003. */
  const double tol[] = {1e-5, 0.004};
  const char *why[] = {"bilinear is exact on linear functions",
                       "a = -0.75 shifts by <= 0.047 px x slope 1/16"};
  for (int k = 0; k < 2; k++) {
    int OW = 40; /* upscale 2.5x: interior output pixels land inside the ramp and must stay on it */
    out = NULL;
    CHECK_OK(fr_image_resize(ramp, OW, 3, ms[k], false, &out, &err), &err);
    CHECK(out && out->shape[1] == 3 && out->shape[2] == OW && out->shape[3] == 3);
    if (!out)
      continue;
    double maxd = 0;
    for (int x = 6; x < OW - 6; x++) /* away from the clamped borders */
      maxd = fmax(maxd, fabs(*px(out, 0, 1, x) - (x + 0.5) / OW));
    printf("resize %s of a ramp: max deviation %.2g in the interior (tolerance %g: %s)\n", names[k], maxd,
           tol[k], why[k]);
    CHECK(maxd < tol[k]);
    fr_tensor_free(out);
  }
  /* area halving = the mean of each 2x2 block; nearest doubling repeats pixels */
  struct fr_tensor *sq = img_new(1, 4, 4, 1);
  for (int i = 0; i < 16; i++)
    ((float *)sq->data)[i] = (float)i / 16.0f;
  out = NULL;
  CHECK_OK(fr_image_resize(sq, 2, 2, FR_RESIZE_AREA, false, &out, &err), &err);
  if (out) {
    CHECK(fabsf(*px(out, 0, 0, 0) - (0 + 1 + 4 + 5) / 64.0f) < 1e-6f);
    CHECK(fabsf(*px(out, 0, 1, 1) - (10 + 11 + 14 + 15) / 64.0f) < 1e-6f);
  }
  fr_tensor_free(out);
  out = NULL;
  CHECK_OK(fr_image_resize(sq, 8, 8, FR_RESIZE_NEAREST, false, &out, &err), &err);
  if (out) {
    int bad = 0;
    for (int y = 0; y < 8; y++)
      for (int x = 0; x < 8; x++)
        bad += *px(out, 0, y, x) != *px(sq, 0, y / 2, x / 2);
    CHECKF(bad == 0, "%d nearest pixels wrong", bad);
  }
  fr_tensor_free(out);
  /* 0 keeps the aspect ratio */
  out = NULL;
  CHECK_OK(fr_image_resize(ramp, 8, 0, FR_RESIZE_BILINEAR, false, &out, &err), &err);
  CHECK(out && out->shape[1] == 2 && out->shape[2] == 8);
  fr_tensor_free(out);
  /* centre crop 16x4 → 4x4 keeps the middle 4x4 block: x in 6..9 */
  out = NULL;
  CHECK_OK(fr_image_resize(ramp, 4, 4, FR_RESIZE_NEAREST, true, &out, &err), &err);
  if (out)
    CHECK(fabsf(*px(out, 0, 0, 0) - 6.5f / W) < 1e-6f && fabsf(*px(out, 0, 3, 3) - 9.5f / W) < 1e-6f);
  fr_tensor_free(out);
  /* errors */
  out = NULL;
  CHECK(fr_image_resize(ramp, 0, 0, FR_RESIZE_BILINEAR, false, &out, &err) == FR_E_INVALID && !out &&
        strstr(err.msg, "0x0"));
  CHECK(fr_image_resize(ramp, -5, 10, FR_RESIZE_BILINEAR, false, &out, &err) == FR_E_INVALID);
  CHECK(fr_image_resize(ramp, 20000, 10, FR_RESIZE_BILINEAR, false, &out, &err) == FR_E_INVALID);
  fr_tensor_free(sq);
  fr_tensor_free(ramp);
}

static void test_canny(void) {
  struct fr_err err = {{0}};
  /* a white filled square (rows/cols 12..27) on black, 40x40 */
  int N = 40, a = 12, b = 27;
  struct fr_tensor *img = img_new(1, N, N, 3), *out = NULL;
  for (int y = a; y <= b; y++)
    for (int x = a; x <= b; x++)
      for (int c = 0; c < 3; c++)
        px(img, 0, y, x)[c] = 1.0f;
  CHECK_OK(fr_image_canny(img, 0.4, 0.8, &out, &err), &err);
  CHECK(out && out->shape[3] == 3);
  if (out) {
    int far = 0, sides[4] = {0}, nonbinary = 0, grey = 0;
    for (int y = 0; y < N; y++)
      for (int x = 0; x < N; x++) {
        float v = *px(out, 0, y, x);
        nonbinary += v != 0.0f && v != 1.0f;
        grey += px(out, 0, y, x)[1] != v || px(out, 0, y, x)[2] != v;
        if (v == 0.0f)
          continue;
        /* distance to the square's boundary (between pixel a-1 and a, b and b+1) */
        int dl = abs(x - a) < abs(x - (a - 1)) ? abs(x - a) : abs(x - (a - 1));
        int dr = abs(x - b) < abs(x - (b + 1)) ? abs(x - b) : abs(x - (b + 1));
        int dt = abs(y - a) < abs(y - (a - 1)) ? abs(y - a) : abs(y - (a - 1));
        int db = abs(y - b) < abs(y - (b + 1)) ? abs(y - b) : abs(y - (b + 1));
        int in_y = y >= a - 1 && y <= b + 1, in_x = x >= a - 1 && x <= b + 1;
        int near = (in_y && (dl == 0 || dr == 0)) || (in_x && (dt == 0 || db == 0));
        far += !near;
      }
    /* every side has an edge pixel next to it along its middle */
    for (int t = a + 3; t <= b - 3; t++) {
      sides[0] += *px(out, 0, t, a) == 1.0f || *px(out, 0, t, a - 1) == 1.0f;
      sides[1] += *px(out, 0, t, b) == 1.0f || *px(out, 0, t, b + 1) == 1.0f;
      sides[2] += *px(out, 0, a, t) == 1.0f || *px(out, 0, a - 1, t) == 1.0f;
      sides[3] += *px(out, 0, b, t) == 1.0f || *px(out, 0, b + 1, t) == 1.0f;
    }
    int len = b - a - 5;
    printf("canny square: side coverage %d %d %d %d of %d, %d edge pixels off the border\n", sides[0],
           sides[1], sides[2], sides[3], len, far);
    CHECK(sides[0] == len && sides[1] == len && sides[2] == len && sides[3] == len);
    CHECK(far == 0 && nonbinary == 0 && grey == 0);
  }
  fr_tensor_free(out);
  /* flat regions: a constant image has no edges, whatever its level */
  for (int i = 0; i < N * N * 3; i++)
    ((float *)img->data)[i] = 0.6f;
  out = NULL;
  CHECK_OK(fr_image_canny(img, 0.01, 0.02, &out, &err), &err);
  if (out) {
    double s = 0;
    for (int i = 0; i < N * N * 3; i++)
      s += ((float *)out->data)[i];
    CHECK(s == 0.0);
  }
  fr_tensor_free(out);
  out = NULL;
  CHECK(fr_image_canny(img, 0.8, 0.4, &out, &err) == FR_E_INVALID && !out && strstr(err.msg, "0.8"));
  fr_tensor_free(img);
}

static void test_blend(void) {
  struct fr_err err = {{0}};
  struct fr_tensor *a = img_new(1, 1, 2, 3), *b = img_new(1, 1, 2, 3), *out = NULL;
  /* pixel 0: a = 0.2, b = 0.7; pixel 1: a = 0.8, b = 0.3 (the other branches of overlay / soft light) */
  for (int c = 0; c < 3; c++) {
    px(a, 0, 0, 0)[c] = 0.2f, px(b, 0, 0, 0)[c] = 0.7f;
    px(a, 0, 0, 1)[c] = 0.8f, px(b, 0, 0, 1)[c] = 0.3f;
  }
  /* expected values worked out by hand from the formulas in ComfyUI's ImageBlend */
  struct {
    enum fr_blend_mode m;
    const char *name;
    double p0, p1;
  } cases[] = {
      {FR_BLEND_NORMAL, "normal", 0.7, 0.3},
      {FR_BLEND_MULTIPLY, "multiply", 0.14, 0.24},
      {FR_BLEND_SCREEN, "screen", 0.76, 0.86},
      {FR_BLEND_OVERLAY, "overlay", 0.28, 0.72}, /* 2ab; 1 - 2(1-a)(1-b) = 1 - 2*0.2*0.7 */
      {FR_BLEND_SOFT_LIGHT, "soft_light", 0.2992,
       0.736}, /* a + (2b-1)(g(a)-a), g(0.2)=0.448; a - (1-2b)a(1-a) */
      {FR_BLEND_DIFFERENCE, "difference", 0.5, 0.5},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    for (int half = 0; half < 2; half++) {
      double f = half ? 0.5 : 1.0;
      out = NULL;
      CHECK_OK(fr_image_blend(a, b, f, cases[i].m, &out, &err), &err);
      if (!out)
        continue;
      double e0 = 0.2 * (1 - f) + cases[i].p0 * f, e1 = 0.8 * (1 - f) + cases[i].p1 * f;
      CHECKF(fabs(*px(out, 0, 0, 0) - e0) < 1e-5 && fabs(px(out, 0, 0, 1)[2] - e1) < 1e-5,
             "%s factor %g: got %g %g expected %g %g", cases[i].name, f, *px(out, 0, 0, 0),
             px(out, 0, 0, 1)[2], e0, e1);
      fr_tensor_free(out);
    }
  }
  /* factor 0 gives image1 back; a batch of 1 is repeated */
  struct fr_tensor *b2 = img_new(3, 1, 2, 3);
  out = NULL;
  CHECK_OK(fr_image_blend(a, b2, 0.0, FR_BLEND_SCREEN, &out, &err), &err);
  CHECK(out && out->shape[0] == 3 && *px(out, 2, 0, 1) == 0.8f);
  fr_tensor_free(out);
  /* mismatched sizes: the message gives both */
  struct fr_tensor *big = img_new(1, 5, 7, 3);
  out = NULL;
  CHECK(fr_image_blend(a, big, 0.5, FR_BLEND_NORMAL, &out, &err) == FR_E_SHAPE && !out);
  CHECKF(strstr(err.msg, "[1, 1, 2, 3]") && strstr(err.msg, "[1, 5, 7, 3]"), "message: %s", err.msg);
  CHECK(fr_image_blend(a, b, 1.5, FR_BLEND_NORMAL, &out, &err) == FR_E_INVALID);
  fr_tensor_free(big);
  fr_tensor_free(b2);
  fr_tensor_free(a);
  fr_tensor_free(b);
}

static void test_invert_solid_pattern(void) {
  struct fr_err err = {{0}};
  struct fr_tensor *rgba = img_new(1, 2, 2, 4), *out = NULL;
  for (int i = 0; i < 16; i++)
    ((float *)rgba->data)[i] = (float)i / 16.0f;
  CHECK_OK(fr_image_invert(rgba, &out, &err), &err);
  if (out)
    CHECK(fabsf(*px(out, 0, 1, 1) - (1 - 12 / 16.0f)) < 1e-7f && px(out, 0, 1, 1)[3] == 15 / 16.0f);
  fr_tensor_free(out);
  fr_tensor_free(rgba);

  float rgb[3];
  CHECK_OK(fr_image_parse_color("#FF8000", rgb, &err), &err);
  CHECK(rgb[0] == 1.0f && fabsf(rgb[1] - 128 / 255.0f) < 1e-7f && rgb[2] == 0.0f);
  CHECK_OK(fr_image_parse_color("#abc", rgb, &err), &err);
  CHECK(fabsf(rgb[0] - 0xaa / 255.0f) < 1e-7f && fabsf(rgb[2] - 0xcc / 255.0f) < 1e-7f);
  CHECK(fr_image_parse_color("#12345g", rgb, &err) == FR_E_INVALID && strstr(err.msg, "#12345g"));
  CHECK(fr_image_parse_color("red", rgb, &err) == FR_E_INVALID);
  CHECK(fr_image_parse_color("", rgb, &err) == FR_E_INVALID);
  float col[3] = {0.25f, 0.5f, 1.0f};
  out = NULL;
  CHECK_OK(fr_image_solid(5, 3, 2, col, &out, &err), &err);
  CHECK(out && out->shape[0] == 2 && out->shape[1] == 3 && out->shape[2] == 5 && out->shape[3] == 3);
  if (out)
    CHECK(px(out, 1, 2, 4)[0] == 0.25f && px(out, 1, 2, 4)[1] == 0.5f && px(out, 1, 2, 4)[2] == 1.0f);
  fr_tensor_free(out);
  CHECK(fr_image_solid(0, 3, 1, col, &out, &err) == FR_E_INVALID && strstr(err.msg, "0x3"));

  /* the shapes pattern has structure: several distinct colours and in-range values; checker alternates */
  out = NULL;
  CHECK_OK(fr_image_pattern(FR_PATTERN_SHAPES, 64, 48, 2, &out, &err), &err);
  if (out) {
    int distinct = 0, oob = 0;
    float seen[64][3];
    for (int y = 0; y < 48; y++)
      for (int x = 0; x < 64; x++) {
        const float *p = px(out, 0, y, x);
        oob += p[0] < 0 || p[0] > 1 || p[1] < 0 || p[1] > 1 || p[2] < 0 || p[2] > 1;
        int found = 0;
        for (int k = 0; k < distinct && !found; k++)
          found = fabsf(seen[k][0] - p[0]) < 0.05f && fabsf(seen[k][1] - p[1]) < 0.05f &&
                  fabsf(seen[k][2] - p[2]) < 0.05f;
        if (!found && distinct < 64)
          memcpy(seen[distinct++], p, sizeof seen[0]);
      }
    CHECKF(distinct >= 5 && oob == 0, "%d distinct colours, %d out of range", distinct, oob);
    CHECK(memcmp(px(out, 0, 0, 0), px(out, 1, 0, 0), 64 * 48 * 3 * sizeof(float)) == 0);
  }
  fr_tensor_free(out);
  out = NULL;
  CHECK_OK(fr_image_pattern(FR_PATTERN_CHECKER, 16, 16, 1, &out, &err), &err);
  if (out)
    CHECK(*px(out, 0, 0, 0) == 0.0f && *px(out, 0, 0, 2) == 1.0f && *px(out, 0, 2, 2) == 0.0f);
  fr_tensor_free(out);
  out = NULL;
  CHECK_OK(fr_image_pattern(FR_PATTERN_RADIAL, 21, 21, 1, &out, &err), &err);
  if (out)
    CHECK(*px(out, 0, 10, 10) > 0.9f && *px(out, 0, 0, 0) == 0.0f && *px(out, 0, 10, 5) < *px(out, 0, 10, 8));
  fr_tensor_free(out);
  CHECK(fr_image_pattern(FR_PATTERN_SHAPES, 64, 100000, 1, &out, &err) == FR_E_INVALID);
}

static void test_load(void) {
  struct fr_err err = {{0}};
  char path[4200];
  snprintf(path, sizeof path, "%s/rgba.png", tmp);
  struct fr_tensor *src = fr_tensor_f32(3, (int64_t[]){2, 3, 4});
  for (int i = 0; i < 24; i++)
    ((float *)src->data)[i] = (float)((i * 40) % 256) / 255.0f;
  CHECK_OK(fr_png_write(path, src, NULL, 0, &err), &err);
  struct fr_tensor *img = NULL, *mask = NULL;
  CHECK_OK(fr_image_load_png(path, &img, &mask, &err), &err);
  CHECK(img && img->ndim == 4 && img->shape[0] == 1 && img->shape[1] == 2 && img->shape[2] == 3 &&
        img->shape[3] == 3);
  CHECK(mask && mask->ndim == 3 && mask->shape[1] == 2 && mask->shape[2] == 3);
  if (img && mask) {
    const float *s = src->data;
    double d = 0;
    for (int i = 0; i < 6; i++) {
      for (int c = 0; c < 3; c++)
        d = fmax(d, fabs(((float *)img->data)[i * 3 + c] - s[i * 4 + c]));
      d = fmax(d, fabs(((float *)mask->data)[i] - (1.0f - s[i * 4 + 3])));
    }
    CHECKF(d < 1e-6, "load RGBA: max error %g (mask = 1 - alpha)", d);
  }
  fr_tensor_free(img);
  fr_tensor_free(mask);
  /* grey without alpha: RGB replicated, mask all zero */
  struct fr_tensor *g = fr_tensor_f32(3, (int64_t[]){2, 2, 1});
  ((float *)g->data)[3] = 1.0f;
  snprintf(path, sizeof path, "%s/grey.png", tmp);
  CHECK_OK(fr_png_write(path, g, NULL, 0, &err), &err);
  img = mask = NULL;
  CHECK_OK(fr_image_load_png(path, &img, &mask, &err), &err);
  if (img && mask)
    CHECK(*px(img, 0, 1, 1) == 1.0f && px(img, 0, 1, 1)[2] == 1.0f && ((float *)mask->data)[3] == 0.0f);
  fr_tensor_free(img);
  fr_tensor_free(mask);
  snprintf(path, sizeof path, "%s/missing.png", tmp);
  img = mask = NULL;
  CHECK(fr_image_load_png(path, &img, &mask, &err) == FR_E_NOTFOUND && !img && !mask);
  fr_tensor_free(g);
  fr_tensor_free(src);
}

static int file_exists(const char *dir, const char *name) {
  char p[4400];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  return access(p, F_OK) == 0;
}

static void test_save(void) {
  struct fr_err err = {{0}};
  char dir[1024], p[4096];
  snprintf(dir, sizeof dir, "%.900s/out/sub", tmp); /* does not exist yet: created */
  struct fr_tensor *imgs = img_new(2, 4, 5, 3);
  for (int64_t i = 0; i < fr_tensor_numel(imgs); i++)
    ((float *)imgs->data)[i] = (float)(i % 7) / 7.0f;
  const char *yaml = "nodes: {s: {type: SaveImage}} # \xc3\xbc";
  struct fr_png_text tx[] = {{FR_PNG_KEY_WORKFLOW, yaml}, {FR_PNG_KEY_PARAMS, "{}"}};
  char *files = NULL;
  CHECK_OK(fr_image_save_png(dir, "img", imgs, tx, 2, &files, &err), &err);
  snprintf(p, sizeof p, "%s/img_00001.png\n%s/img_00002.png", dir, dir);
  CHECKF(files && strcmp(files, p) == 0, "files: %s", files ? files : "(null)");
  fr_free(files);
  /* existing files (one a stranger's non-PNG) are never overwritten; numbering continues after the highest */
  snprintf(p, sizeof p, "%s/img_00007.png", dir);
  FILE *f = fopen(p, "w");
  fputs("precious", f);
  fclose(f);
  snprintf(p, sizeof p, "%s/imgx_00050.png", dir); /* another prefix does not count */
  fclose(fopen(p, "w"));
  files = NULL;
  CHECK_OK(fr_image_save_png(dir, "img", imgs, tx, 2, &files, &err), &err);
  CHECK(files && strstr(files, "img_00008.png") && strstr(files, "img_00009.png"));
  fr_free(files);
  snprintf(p, sizeof p, "%s/img_00007.png", dir);
  char buf[32] = {0};
  f = fopen(p, "r");
  CHECK(f && fgets(buf, sizeof buf, f) && strcmp(buf, "precious") == 0);
  if (f)
    fclose(f);
  CHECK(file_exists(dir, "img_00001.png") && file_exists(dir, "img_00002.png") &&
        !file_exists(dir, "img_00003.png"));
  /* the workflow reads back from a saved file */
  snprintf(p, sizeof p, "%s/img_00009.png", dir);
  char *s = NULL;
  CHECK_OK(fr_png_read_text(p, FR_PNG_KEY_WORKFLOW, &s, &err), &err);
  CHECK(s && strcmp(s, yaml) == 0);
  fr_free(s);
  struct fr_tensor *back = NULL;
  CHECK_OK(fr_png_read(p, &back, &err), &err);
  if (back) {
    double d = 0;
    for (int i = 0; i < 60; i++)
      d = fmax(d, fabs(((float *)back->data)[i] - ((float *)imgs->data)[60 + i]));
    printf("saved image 2 of 2: max error %.3g (tolerance 0.5/255: 8-bit quantisation)\n", d);
    CHECK(d <= 0.5 / 255 + 1e-6);
  }
  fr_tensor_free(back);
  /* bad prefixes write nothing */
  files = NULL;
  CHECK(fr_image_save_png(dir, "../escape", imgs, NULL, 0, &files, &err) == FR_E_INVALID && !files);
  CHECK(strstr(err.msg, "../escape") != NULL);
  CHECK(fr_image_save_png(dir, ".hidden", imgs, NULL, 0, &files, &err) == FR_E_INVALID);
  CHECK(fr_image_save_png(dir, "", imgs, NULL, 0, &files, &err) == FR_E_INVALID);
  /* the output folder is a file */
  snprintf(p, sizeof p, "%s/img_00001.png", dir);
  CHECK(fr_image_save_png(p, "img", imgs, NULL, 0, &files, &err) == FR_E_IO && !files);
  /* out of memory at each allocation: a clean error and no claimed-but-empty file left behind */
  int clean = 1;
  for (long k = 1; k < 12; k++) {
    files = NULL;
    fr_alloc_fail_at(k);
    enum fr_status rc = fr_image_save_png(dir, "oom", imgs, tx, 2, &files, &err);
    fr_alloc_fail_at(0);
    clean &= rc == FR_OK || (rc == FR_E_NOMEM && files == NULL);
    fr_free(files);
  }
  CHECK(clean);
  DIR *d = opendir(dir);
  struct dirent *e;
  int empty = 0;
  while (d && (e = readdir(d))) {
    struct stat sb;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    if (strncmp(e->d_name, "oom_", 4) == 0 && stat(p, &sb) == 0 && sb.st_size == 0)
      empty++;
  }
  if (d)
    closedir(d);
  CHECKF(empty == 0, "%d empty claimed files left", empty);
  fr_tensor_free(imgs);
}

/* Allocation failures in the filters: FR_E_NOMEM, no output, no leak (ASan). */
static void test_filters_oom(void) {
  struct fr_err err = {{0}};
  struct fr_tensor *img = NULL, *out;
  fr_image_pattern(FR_PATTERN_SHAPES, 24, 24, 1, &img, &err);
  int clean = 1;
  for (long k = 1; k < 10; k++) {
    enum fr_status rc[5];
    struct fr_tensor *outs[5] = {0};
    fr_alloc_fail_at(k);
    rc[0] = fr_image_blur(img, 2, 1.0, &outs[0], &err);
    fr_alloc_fail_at(k);
    rc[1] = fr_image_canny(img, 0.4, 0.8, &outs[1], &err);
    fr_alloc_fail_at(k);
    rc[2] = fr_image_resize(img, 10, 10, FR_RESIZE_BICUBIC, true, &outs[2], &err);
    fr_alloc_fail_at(k);
    rc[3] = fr_image_blend(img, img, 0.5, FR_BLEND_OVERLAY, &outs[3], &err);
    fr_alloc_fail_at(k);
    rc[4] = fr_image_invert(img, &outs[4], &err);
    fr_alloc_fail_at(0);
    for (int i = 0; i < 5; i++) {
      clean &= rc[i] == FR_OK ? outs[i] != NULL : (rc[i] == FR_E_NOMEM && outs[i] == NULL);
      fr_tensor_free(outs[i]);
    }
  }
  CHECK(clean);
  out = NULL;
  fr_tensor_free(out);
  fr_tensor_free(img);
}

/* The registry holds the image and primitive nodes with sane specs (defaults within ranges, enums listed). */
static void test_registry(void) {
  const struct fr_registry *r = fr_builtin_registry();
  const char *want[] = {"LoadImage",  "SaveImage",  "ImageResize", "ImageBlur",   "Canny",
                        "ImageBlend", "SolidImage", "TestPattern", "ImageInvert", "Int",
                        "Float",      "String",     "Boolean",     "Seed"};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    CHECKF(fr_registry_find(r, want[i]) != NULL, "%s registered", want[i]);
  for (int i = 0; i < r->n; i++) {
    const struct fr_node_spec *s = r->specs[i];
    CHECKF(s->run && s->version >= 1 && s->n_outputs >= 1, "%s", s->name);
    for (int j = 0; j < s->n_inputs; j++) {
      const struct fr_input_spec *in = &s->inputs[j];
      if (in->def && (strcmp(in->type, FR_T_INT) == 0 || strcmp(in->type, FR_T_FLOAT) == 0) &&
          in->min <= in->max) {
        double v = atof(in->def);
        CHECKF(v >= in->min && v <= in->max, "%s.%s default %s in range", s->name, in->name, in->def);
      }
      if (strcmp(in->type, FR_T_ENUM) == 0) {
        int ok = in->choices != NULL && in->def != NULL;
        int found = 0;
        for (int k = 0; ok && in->choices[k]; k++)
          found |= strcmp(in->choices[k], in->def) == 0;
        CHECKF(ok && found, "%s.%s enum default among choices", s->name, in->name);
      }
    }
  }
  const struct fr_node_spec *save = fr_registry_find(r, "SaveImage");
  CHECK(save && (save->flags & FR_NODE_OUTPUT) && fr_spec_output_index(save, "files") == 0);
}

/* The demo graph end to end through the engine: it loads (with its subgraph), runs with no input file, writes
 * a PNG holding the workflow, caches everything on a second run, and re-writes the file when it is deleted.
 */
static int g_outputs;
static void on_event(void *user, const struct fr_event *ev) {
  (void)user;
  if (ev->kind == FR_EV_OUTPUT)
    g_outputs++;
  if (ev->kind == FR_EV_ERROR)
    printf("error event: %s\n", ev->message);
}

static void test_demo_graph(void) {
  const char *src = getenv("FR_SRC");
  if (!src) {
    printf("demo graph: FR_SRC not set (run under ctest), not checked\n");
    return;
  }
  char graph[4096], cache[4096], outdir[4096], png[4200];
  snprintf(graph, sizeof graph, "%s/graphs/image-demo.yaml", src);
  snprintf(cache, sizeof cache, "%.2000s/cache.sqlite", tmp);
  snprintf(outdir, sizeof outdir, "%.2000s/demo-out", tmp);
  struct fr_err err = {{0}};
  struct fr_engine_opts o = {
      .registry = fr_builtin_registry(), .cache_path = cache, .output_dir = outdir, .on_event = on_event};
  struct fr_engine *e = NULL;
  CHECK_OK(fr_engine_new(&o, &e, &err), &err);
  if (!e)
    return;
  struct fr_override ov[] = {{"size", "96"}}; /* small: the test stays fast */
  struct fr_graph *g = NULL;
  CHECK_OK(fr_engine_load(e, graph, ov, 1, &g, &err), &err);
  if (g) {
    struct fr_run_summary sum = {0};
    CHECK_OK(fr_engine_run(e, g, &sum, &err), &err);
    CHECKF(sum.executed == 5 && sum.cached == 0, "first run: %d executed, %d cached", sum.executed,
           sum.cached);
    snprintf(png, sizeof png, "%s/flowrun-demo_00001.png", outdir);
    struct fr_tensor *img = NULL;
    CHECK_OK(fr_png_read(png, &img, &err), &err);
    CHECK(img && img->shape[0] == 96 && img->shape[1] == 96 && img->shape[2] == 3);
    fr_tensor_free(img);
    char *yaml = NULL, *params = NULL;
    CHECK_OK(fr_png_read_text(png, FR_PNG_KEY_WORKFLOW, &yaml, &err), &err);
    /* The bundled form: the subgraph file inlined under graphs:, the node naming it by its inline name. */
    CHECKF(yaml && strstr(yaml, "\n    type: edges\n") && strstr(yaml, "\ngraphs:") &&
               strstr(yaml, "\n  edges: # blocks/edges.yaml\n") &&
               !strstr(yaml, "    type: blocks/edges.yaml\n"),
           "%s", yaml ? yaml : "");
    CHECK_OK(fr_png_read_text(png, FR_PNG_KEY_PARAMS, &params, &err), &err);
    CHECKF(params && strstr(params, "\"size\"") && strstr(params, "96"), "params: %s", params ? params : "");
    fr_free(yaml);
    fr_free(params);
    /* unchanged: nothing runs, the file is reported again */
    g_outputs = 0;
    CHECK_OK(fr_engine_run(e, g, &sum, &err), &err);
    CHECKF(sum.executed == 0 && g_outputs == 1, "second run: %d executed, %d outputs", sum.executed,
           g_outputs);
    /* the file deleted: SaveImage alone runs again and writes it */
    unlink(png);
    CHECK_OK(fr_engine_run(e, g, &sum, &err), &err);
    CHECKF(sum.executed == 1 && access(png, F_OK) == 0, "after delete: %d executed", sum.executed);
    fr_graph_free(g);
  }
  /* an edited param re-runs the block and what follows, not the pattern */
  struct fr_override ov2[] = {{"size", "96"}, {"high", "0.5"}};
  g = NULL;
  CHECK_OK(fr_engine_load(e, graph, ov2, 2, &g, &err), &err);
  if (g) {
    struct fr_run_summary sum = {0};
    CHECK_OK(fr_engine_run(e, g, &sum, &err), &err);
    CHECKF(sum.executed == 3, "after --set high: %d executed (canny, blend, save)", sum.executed);
    snprintf(png, sizeof png, "%s/flowrun-demo_00002.png", outdir);
    CHECK(access(png, F_OK) == 0);
    fr_graph_free(g);
  }
  /* a failing node: sizes that do not match give both shapes, and no file is written */
  const char *bad = "flowrun: 1\n"
                    "nodes:\n"
                    "  a: {type: SolidImage, inputs: {width: 8, height: 8, color: \"#123\"}}\n"
                    "  b: {type: TestPattern, inputs: {width: 9, height: 8}}\n"
                    "  m: {type: ImageBlend, inputs: {image1: a, image2: b}}\n"
                    "  s: {type: SaveImage, inputs: {images: m, filename_prefix: bad}}\n";
  g = NULL;
  CHECK_OK(fr_engine_load_string(e, bad, strlen(bad), "<bad>", NULL, NULL, 0, &g, &err), &err);
  if (g) {
    struct fr_run_summary sum = {0};
    enum fr_status rc = fr_engine_run(e, g, &sum, &err);
    CHECKF(rc == FR_E_SHAPE && strstr(err.msg, "[1, 8, 8, 3]") && strstr(err.msg, "[1, 8, 9, 3]"), "%d %s",
           rc, err.msg);
    snprintf(png, sizeof png, "%s/bad_00001.png", outdir);
    CHECK(access(png, F_OK) != 0);
    fr_graph_free(g);
  }
  fr_engine_free(e);
}

/* How many entries of dir start with prefix (e.g. "k_": numbered files SaveImage would make). */
static int count_prefixed(const char *dir, const char *prefix) {
  DIR *d = opendir(dir);
  int n = 0;
  struct dirent *e;
  while (d && (e = readdir(d)))
    n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
  if (d)
    closedir(d);
  return n;
}

static void kill_self(const char *tmp_path) {
  (void)tmp_path;
  raise(SIGKILL);
}

static char stranger_path[4200];
/* Another process takes the first number while our file is being written. */
static void stranger_takes_name(const char *tmp_path) {
  (void)tmp_path;
  FILE *f = fopen(stranger_path, "wx");
  if (f) {
    fputs("stranger", f);
    fclose(f);
  }
}

/* A process killed in the middle of writing a PNG leaves no numbered file (before: an empty
 * <prefix>_00001.png claimed with O_EXCL stayed behind, and a later run with the cache "found" it); a name
 * taken by someone else while we write is left alone and the next number is used. */
static void test_save_killed(void) {
  struct fr_err err = {{0}};
  char dir[1024];
  snprintf(dir, sizeof dir, "%.900s/killed", tmp);
  CHECK_OK(fr_mkdirs(dir, &err), &err);
  struct fr_tensor *imgs = img_new(1, 16, 16, 3);
  for (int64_t i = 0; i < fr_tensor_numel(imgs); i++)
    ((float *)imgs->data)[i] = (float)(i % 5) / 5.0f;
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    fr_write_temp_hook(kill_self); /* SIGKILL half-way through the file's bytes */
    char *files = NULL;
    fr_image_save_png(dir, "k", imgs, NULL, 0, &files, &err);
    _exit(3); /* not reached when the hook ran */
  }
  int status = 0;
  CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
  CHECKF(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child status %d: killed mid-write", status);
  CHECKF(count_prefixed(dir, "k_") == 0, "a numbered file is left after a kill mid-write");

  /* The name is taken by a stranger while we write: theirs stays, ours gets the next number. */
  snprintf(stranger_path, sizeof stranger_path, "%s/k_00001.png", dir);
  fr_write_temp_hook(stranger_takes_name);
  char *files = NULL;
  CHECK_OK(fr_image_save_png(dir, "k", imgs, NULL, 0, &files, &err), &err);
  fr_write_temp_hook(NULL);
  CHECKF(files && strstr(files, "/k_00002.png") && !strchr(files, '\n'), "files: %s",
         files ? files : "(null)");
  fr_free(files);
  char *theirs = fr_test_read_file(stranger_path, NULL);
  CHECKF(theirs && strcmp(theirs, "stranger") == 0, "the stranger's file was replaced");
  free(theirs);
  struct fr_tensor *back = NULL, *mask = NULL;
  char p[4400];
  snprintf(p, sizeof p, "%s/k_00002.png", dir);
  CHECK_OK(fr_image_load_png(p, &back, &mask, &err), &err);
  if (back)
    CHECK(max_abs_diff(back, imgs) < 0.5 / 255 + 1e-6); /* 8-bit rounding: half a level */
  fr_tensor_free(back);
  fr_tensor_free(mask);
  fr_tensor_free(imgs);
}

int main(void) {
  tmp = fr_test_tmpdir("test_image_nodes");
  test_blur();
  test_resize();
  test_canny();
  test_blend();
  test_invert_solid_pattern();
  test_load();
  test_save();
  test_save_killed();
  test_filters_oom();
  test_registry();
  test_demo_graph();
  return fr_test_done();
}
