/* PNG I/O: round trips with text chunks, 16-bit, palette, grey+alpha and interlaced files written with
 * libpng directly, and bad files (none may crash; each gives a clear FR_E_FORMAT naming the file). */
#include <dirent.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/png.h"
#include "tests/test.h"

static const char *tmp;

static char *path_in(const char *name) {
  static char buf[8][4096];
  static int k;
  k = (k + 1) % 8;
  snprintf(buf[k], sizeof buf[k], "%s/%s", tmp, name);
  return buf[k];
}

static void write_bytes(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f)
    return;
  if (n)
    fwrite(data, 1, n, f);
  fclose(f);
}

static unsigned char *read_bytes(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  *n = 0;
  if (!f)
    return NULL;
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *p = malloc((size_t)len + 1);
  if (p && fread(p, 1, (size_t)len, f) == (size_t)len)
    *n = (size_t)len;
  fclose(f);
  return p;
}

/* A deterministic test image [h, w, c] with every 8-bit level representable. */
static struct fr_tensor *make_image(int h, int w, int c) {
  struct fr_tensor *t = fr_tensor_f32(3, (int64_t[]){h, w, c});
  float *p = t->data;
  for (int i = 0; i < h * w * c; i++)
    p[i] = (float)((i * 37 + 11) % 256) / 255.0f;
  return t;
}

/* Number of temporary files fr_png_write left in dir (there should be none). */
static int leftover_tmp(const char *dir) {
  DIR *d = opendir(dir);
  int n = 0;
  struct dirent *e;
  while (d && (e = readdir(d)))
    n += strstr(e->d_name, ".tmp-") != NULL;
  if (d)
    closedir(d);
  return n;
}

/* PNG's CRC-32 (ISO 3309), to patch a chunk after editing it. */
static unsigned long png_crc(const unsigned char *p, size_t n) {
  unsigned long c = 0xffffffffUL;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++)
      c = (c & 1) ? 0xedb88320UL ^ (c >> 1) : c >> 1;
  }
  return c ^ 0xffffffffUL;
}

static void test_round_trip(int c, const char *name) {
  struct fr_err err = {{0}};
  struct fr_tensor *img = make_image(7, 13, c);
  /* YAML with non-ASCII UTF-8 (é, 日本, an emoji) and a newline, as a workflow would have. */
  const char *yaml =
      "version: 1\nnodes:\n  save: {type: SaveImage, prompt: \"caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac "
      "\xf0\x9f\x8c\x8a\"}\n";
  struct fr_png_text texts[] = {{FR_PNG_KEY_WORKFLOW, yaml}, {FR_PNG_KEY_PARAMS, "{\"seed\": 42}"}};
  const char *path = path_in(name);
  CHECK_OK(fr_png_write(path, img, texts, 2, &err), &err);
  struct fr_tensor *back = NULL;
  CHECK_OK(fr_png_read(path, &back, &err), &err);
  CHECKF(back && back->ndim == 3 && back->shape[0] == 7 && back->shape[1] == 13 && back->shape[2] == c,
         "%s: shape", name);
  if (back && back->shape[2] == c) {
    double maxd = 0;
    for (int64_t i = 0; i < fr_tensor_numel(img); i++)
      maxd = fmax(maxd, fabs(((float *)back->data)[i] - ((float *)img->data)[i]));
    /* every source value is k/255, so an 8-bit round trip is exact up to float rounding */
    printf("%s: max round-trip error %.2g (tolerance 1e-6: values are exact 8-bit levels)\n", name, maxd);
    CHECKF(maxd < 1e-6, "%s: max error %g", name, maxd);
  }
  char *s = NULL;
  CHECK_OK(fr_png_read_text(path, FR_PNG_KEY_WORKFLOW, &s, &err), &err);
  CHECKF(s && strcmp(s, yaml) == 0, "%s: workflow text reads back identically", name);
  fr_free(s);
  s = NULL;
  CHECK_OK(fr_png_read_text(path, FR_PNG_KEY_PARAMS, &s, &err), &err);
  CHECK(s && strcmp(s, "{\"seed\": 42}") == 0);
  fr_free(s);
  s = NULL;
  CHECK(fr_png_read_text(path, "absent-key", &s, &err) == FR_E_NOTFOUND && s == NULL);
  CHECK(strstr(err.msg, "absent-key") != NULL);
  fr_tensor_free(back);
  fr_tensor_free(img);
}

/* Writes a PNG with libpng directly: depth 8 or 16, any colour type, optional interlace, optional text chunk
 * of the given compression (tEXt / zTXt / iTXt) placed after the image data. samples are big-endian for 16.
 */
static void write_raw_png(const char *path, int w, int h, int depth, int color, int interlace,
                          const unsigned char *data, size_t rowbytes, const png_color *palette, int npal,
                          const char *key, const char *text, int text_comp) {
  FILE *f = fopen(path, "wb");
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    CHECKF(0, "libpng failed writing %s", path);
    png_destroy_write_struct(&png, &info);
    fclose(f);
    return;
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color, interlace,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (palette)
    png_set_PLTE(png, info, palette, npal);
  png_write_info(png, info);
  png_bytep *rows = malloc(sizeof *rows * (size_t)h);
  for (int y = 0; y < h; y++)
    rows[y] = (png_bytep)data + (size_t)y * rowbytes;
  png_write_image(png, rows);
  free(rows);
  if (key) {
    png_text t = {0};
    t.compression = text_comp;
    t.key = (png_charp)key;
    t.text = (png_charp)text;
    if (text_comp > 0)
      t.itxt_length = strlen(text), t.lang = (png_charp) "", t.lang_key = (png_charp) "";
    else
      t.text_length = strlen(text);
    png_set_text(png, info, &t, 1);
  }
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  fclose(f);
}

static void test_16bit(void) {
  struct fr_err err = {{0}};
  enum { W = 5, H = 3 };
  unsigned char data[H][W * 3 * 2];
  for (int y = 0; y < H; y++)
    for (int i = 0; i < W * 3; i++) {
      unsigned v = (unsigned)((y * 977 + i * 4099 + 1) & 0xffff);
      data[y][2 * i] = (unsigned char)(v >> 8);
      data[y][2 * i + 1] = (unsigned char)(v & 0xff);
    }
  const char *path = path_in("rgb16.png");
  write_raw_png(path, W, H, 16, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, &data[0][0], sizeof data[0], NULL, 0,
                NULL, NULL, 0);
  struct fr_tensor *t = NULL;
  CHECK_OK(fr_png_read(path, &t, &err), &err);
  CHECK(t && t->shape[0] == H && t->shape[1] == W && t->shape[2] == 3);
  if (t) {
    double maxd = 0;
    for (int y = 0; y < H; y++)
      for (int i = 0; i < W * 3; i++) {
        unsigned v = (unsigned)((y * 977 + i * 4099 + 1) & 0xffff);
        maxd = fmax(maxd, fabs(((float *)t->data)[y * W * 3 + i] - v / 65535.0));
      }
    printf("16-bit: max error %.2g vs v/65535 (tolerance 1e-6: float rounding only, no 8-bit loss)\n", maxd);
    CHECK(maxd < 1e-6);
  }
  fr_tensor_free(t);

  /* 16-bit grey+alpha becomes RGBA, zTXt text after the image data */
  unsigned char ga[2][2 * 2 * 2];
  for (int i = 0; i < 16; i++)
    ((unsigned char *)ga)[i] = (unsigned char)(i * 16 + 3);
  path = path_in("ga16.png");
  write_raw_png(path, 2, 2, 16, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_INTERLACE_NONE, &ga[0][0], sizeof ga[0], NULL,
                0, "note", "zipped text after IDAT", PNG_TEXT_COMPRESSION_zTXt);
  t = NULL;
  CHECK_OK(fr_png_read(path, &t, &err), &err);
  CHECK(t && t->shape[2] == 4);
  if (t && t->shape[2] == 4) {
    const float *p = t->data;
    float g = ((ga[0][0] << 8) | ga[0][1]) / 65535.0f, a = ((ga[0][2] << 8) | ga[0][3]) / 65535.0f;
    CHECK(fabsf(p[0] - g) < 1e-6f && fabsf(p[1] - g) < 1e-6f && fabsf(p[2] - g) < 1e-6f &&
          fabsf(p[3] - a) < 1e-6f);
  }
  fr_tensor_free(t);
  char *s = NULL;
  CHECK_OK(fr_png_read_text(path, "note", &s, &err), &err);
  CHECK(s && strcmp(s, "zipped text after IDAT") == 0);
  fr_free(s);
}

static void test_palette_grey_interlaced(void) {
  struct fr_err err = {{0}};
  /* palette, 2 bits per index, interlaced, with a tEXt chunk */
  png_color pal[4] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {10, 20, 30}};
  enum { W = 9, H = 9 };
  unsigned char idx[H][(W * 2 + 7) / 8];
  memset(idx, 0, sizeof idx);
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) {
      int v = (x + y) % 4;
      idx[y][x / 4] |= (unsigned char)(v << (6 - 2 * (x % 4)));
    }
  const char *path = path_in("pal.png");
  write_raw_png(path, W, H, 2, PNG_COLOR_TYPE_PALETTE, PNG_INTERLACE_ADAM7, &idx[0][0], sizeof idx[0], pal, 4,
                "Comment", "plain tEXt", PNG_TEXT_COMPRESSION_NONE);
  struct fr_tensor *t = NULL;
  CHECK_OK(fr_png_read(path, &t, &err), &err);
  CHECK(t && t->shape[0] == H && t->shape[1] == W && t->shape[2] == 3);
  if (t && t->shape[2] == 3) {
    int bad = 0;
    for (int y = 0; y < H; y++)
      for (int x = 0; x < W; x++) {
        const png_color *c = &pal[(x + y) % 4];
        const float *p = (const float *)t->data + (y * W + x) * 3;
        bad += fabsf(p[0] - c->red / 255.0f) > 1e-6f || fabsf(p[1] - c->green / 255.0f) > 1e-6f ||
               fabsf(p[2] - c->blue / 255.0f) > 1e-6f;
      }
    CHECKF(bad == 0, "%d palette pixels wrong", bad);
  }
  fr_tensor_free(t);
  char *s = NULL;
  CHECK_OK(fr_png_read_text(path, "Comment", &s, &err), &err);
  CHECK(s && strcmp(s, "plain tEXt") == 0);
  fr_free(s);

  /* 4-bit grey expands to 8 bits, one channel */
  unsigned char g4[2][1] = {{0xF0}, {0x5A}};
  path = path_in("grey4.png");
  write_raw_png(path, 2, 2, 4, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, &g4[0][0], 1, NULL, 0, NULL, NULL, 0);
  t = NULL;
  CHECK_OK(fr_png_read(path, &t, &err), &err);
  CHECK(t && t->shape[2] == 1);
  if (t && t->shape[2] == 1) {
    const float *p = t->data;
    CHECK(fabsf(p[0] - 1.0f) < 1e-6f && fabsf(p[1]) < 1e-6f && fabsf(p[2] - 0x55 / 255.0f) < 1e-6f &&
          fabsf(p[3] - 0xAA / 255.0f) < 1e-6f);
  }
  fr_tensor_free(t);
}

static void expect_format_error(const char *path, const char *what) {
  struct fr_err err = {{0}};
  struct fr_tensor *t = NULL;
  enum fr_status rc = fr_png_read(path, &t, &err);
  CHECKF(rc == FR_E_FORMAT && t == NULL, "%s: status %d (%s)", what, rc, err.msg);
  printf("%s -> %s\n", what, err.msg);
  CHECKF(strstr(err.msg, path) != NULL, "%s: message names the file: %s", what, err.msg);
  char *s = NULL;
  rc = fr_png_read_text(path, FR_PNG_KEY_WORKFLOW, &s, &err);
  CHECKF((rc == FR_E_FORMAT || rc == FR_E_NOTFOUND) && s == NULL, "%s: read_text status %d", what, rc);
}

static void test_bad_files(void) {
  struct fr_err err = {{0}};
  /* a good file to damage */
  struct fr_tensor *img = make_image(64, 64, 3);
  const char *good = path_in("good.png");
  CHECK_OK(fr_png_write(good, img, NULL, 0, &err), &err);
  fr_tensor_free(img);
  size_t n;
  unsigned char *bytes = read_bytes(good, &n);
  CHECK(bytes && n > 100);

  const char *p = path_in("empty.png");
  write_bytes(p, "", 0);
  expect_format_error(p, "zero-size file");

  p = path_in("garbage.png");
  write_bytes(p, "this is not a png file at all, just text\n", 41);
  expect_format_error(p, "garbage");

  p = path_in("sigonly.png");
  write_bytes(p, bytes, 8);
  expect_format_error(p, "signature only");

  size_t cuts[] = {20, 33, 50, n / 2, n - 13};
  for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
    char name[64];
    snprintf(name, sizeof name, "trunc%zu.png", cuts[i]);
    p = path_in(name);
    write_bytes(p, bytes, cuts[i]);
    expect_format_error(p, name);
  }

  /* a corrupted byte inside the image data: the chunk CRC no longer matches */
  unsigned char *bad = malloc(n);
  memcpy(bad, bytes, n);
  bad[n / 2] ^= 0x5a;
  p = path_in("flipped.png");
  write_bytes(p, bad, n);
  expect_format_error(p, "corrupted IDAT");

  /* a huge declared size (100000 x 100000) with a correct CRC: refused by the size limits, no allocation */
  memcpy(bad, bytes, n);
  unsigned char *ihdr = bad + 16; /* 8 signature + 4 length + 4 "IHDR" */
  ihdr[0] = 0, ihdr[1] = 0x01, ihdr[2] = 0x86, ihdr[3] = 0xA0;
  ihdr[4] = 0, ihdr[5] = 0x01, ihdr[6] = 0x86, ihdr[7] = 0xA0;
  unsigned long crc = png_crc(bad + 12, 17);
  bad[29] = (unsigned char)(crc >> 24), bad[30] = (unsigned char)(crc >> 16),
  bad[31] = (unsigned char)(crc >> 8), bad[32] = (unsigned char)crc;
  p = path_in("huge.png");
  write_bytes(p, bad, n);
  expect_format_error(p, "huge declared size");

  /* 16000 x 16000: within the limits but far more pixels than the file can hold */
  ihdr[0] = 0, ihdr[1] = 0, ihdr[2] = 0x3E, ihdr[3] = 0x80;
  ihdr[4] = 0, ihdr[5] = 0, ihdr[6] = 0x3E, ihdr[7] = 0x80;
  crc = png_crc(bad + 12, 17);
  bad[29] = (unsigned char)(crc >> 24), bad[30] = (unsigned char)(crc >> 16),
  bad[31] = (unsigned char)(crc >> 8), bad[32] = (unsigned char)crc;
  p = path_in("big.png");
  write_bytes(p, bad, n);
  expect_format_error(p, "16000x16000 declared in a small file");
  free(bad);
  free(bytes);

  /* missing file: not found, naming it */
  struct fr_tensor *t = NULL;
  p = path_in("does-not-exist.png");
  CHECK(fr_png_read(p, &t, &err) == FR_E_NOTFOUND && strstr(err.msg, "does-not-exist.png"));
  /* a folder */
  CHECK(fr_png_read(tmp, &t, &err) == FR_E_IO && t == NULL);
}

static void test_write_errors(void) {
  struct fr_err err = {{0}};
  struct fr_tensor *img = make_image(4, 4, 3);
  /* writing into a folder that does not exist fails cleanly */
  CHECK(fr_png_write(path_in("no/such/dir/x.png"), img, NULL, 0, &err) == FR_E_IO);
  CHECK(strstr(err.msg, "x.png") != NULL);
  /* a wrong shape is rejected */
  struct fr_tensor *bad = fr_tensor_f32(2, (int64_t[]){4, 4});
  CHECK(fr_png_write(path_in("bad.png"), bad, NULL, 0, &err) == FR_E_INVALID);
  fr_tensor_free(bad);
  /* an invalid text key (empty) is rejected before anything is written */
  struct fr_png_text tx = {"", "v"};
  CHECK(fr_png_write(path_in("badkey.png"), img, &tx, 1, &err) == FR_E_INVALID);
  CHECK(access(path_in("badkey.png"), F_OK) != 0);
  /* overwriting keeps a valid file, and no temporary file is left behind */
  const char *p = path_in("atomic.png");
  CHECK_OK(fr_png_write(p, img, NULL, 0, &err), &err);
  CHECK_OK(fr_png_write(p, img, NULL, 0, &err), &err);
  struct fr_tensor *back = NULL;
  CHECK_OK(fr_png_read(p, &back, &err), &err);
  fr_tensor_free(back);
  /* values out of range and NaN are clamped, not wrapped */
  float *d = img->data;
  d[0] = -3.0f, d[1] = 7.0f, d[2] = NAN;
  CHECK_OK(fr_png_write(p, img, NULL, 0, &err), &err);
  back = NULL;
  CHECK_OK(fr_png_read(p, &back, &err), &err);
  if (back)
    CHECK(((float *)back->data)[0] == 0.0f && ((float *)back->data)[1] == 1.0f &&
          ((float *)back->data)[2] == 0.0f);
  fr_tensor_free(back);
  fr_tensor_free(img);
}

/* Out-of-memory at every allocation of a read and a write: a clean error, never a crash (ASan checks leaks).
 */
static void test_alloc_failures(void) {
  struct fr_err err = {{0}};
  struct fr_tensor *img = make_image(8, 8, 4);
  const char *p = path_in("oom.png");
  struct fr_png_text tx = {FR_PNG_KEY_WORKFLOW, "x: 1"};
  CHECK_OK(fr_png_write(p, img, &tx, 1, &err), &err);
  int clean = 1;
  for (long k = 1; k < 20; k++) {
    struct fr_tensor *t = NULL;
    fr_alloc_fail_at(k);
    enum fr_status rc = fr_png_read(p, &t, &err);
    fr_alloc_fail_at(0);
    if (rc == FR_OK)
      fr_tensor_free(t);
    else
      clean &= rc == FR_E_NOMEM && t == NULL;
    char *s = NULL;
    fr_alloc_fail_at(k);
    rc = fr_png_read_text(p, FR_PNG_KEY_WORKFLOW, &s, &err);
    fr_alloc_fail_at(0);
    if (rc == FR_OK)
      fr_free(s);
    else
      clean &= rc == FR_E_NOMEM && s == NULL;
    fr_alloc_fail_at(k);
    rc = fr_png_write(path_in("oom2.png"), img, &tx, 1, &err);
    fr_alloc_fail_at(0);
    clean &= rc == FR_OK || rc == FR_E_NOMEM;
  }
  CHECK(clean);
  fr_tensor_free(img);
}

int main(void) {
  tmp = fr_test_tmpdir("test_png");
  test_round_trip(3, "rgb.png");
  test_round_trip(4, "rgba.png");
  test_round_trip(1, "grey.png");
  test_16bit();
  test_palette_grey_interlaced();
  test_bad_files();
  test_write_errors();
  test_alloc_failures();
  CHECKF(leftover_tmp(tmp) == 0, "temporary files left in %s", tmp);
  return fr_test_done();
}
