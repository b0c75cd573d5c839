/* PNG I/O: round trips with text chunks, 16-bit, palette, grey+alpha and interlaced files written with
 * libpng directly, and bad files (none may crash; each gives a clear FR_E_FORMAT naming the file). */
#include <dirent.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "core/alloc.h"
#include "core/png.h"
#include "nodes/image/image.h"
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

  /* 8000 x 8000 RGB: within the limits (0.7 GiB as F32) but far more pixels than the file can hold */
  ihdr[0] = 0, ihdr[1] = 0, ihdr[2] = 0x1F, ihdr[3] = 0x40;
  ihdr[4] = 0, ihdr[5] = 0, ihdr[6] = 0x1F, ihdr[7] = 0x40;
  crc = png_crc(bad + 12, 17);
  bad[29] = (unsigned char)(crc >> 24), bad[30] = (unsigned char)(crc >> 16),
  bad[31] = (unsigned char)(crc >> 8), bad[32] = (unsigned char)crc;
  p = path_in("big.png");
  write_bytes(p, bad, n);
  expect_format_error(p, "8000x8000 declared in a small file");
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

/* ---- files built chunk by chunk ---- */

struct bytes {
  unsigned char *p;
  size_t n;
};

static void put(struct bytes *b, const void *p, size_t n) {
  b->p = realloc(b->p, b->n + n);
  memcpy(b->p + b->n, p, n);
  b->n += n;
}

static void put_be32(struct bytes *b, unsigned long v) {
  unsigned char q[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8),
                        (unsigned char)v};
  put(b, q, 4);
}

/* Appends a chunk: length, type, data, CRC over type and data (corrupt_crc: off by one). */
static void put_chunk(struct bytes *b, const char *type, const void *data, size_t n, int corrupt_crc) {
  put_be32(b, (unsigned long)n);
  size_t at = b->n;
  put(b, type, 4);
  if (n)
    put(b, data, n);
  put_be32(b, png_crc(b->p + at, n + 4) + (corrupt_crc ? 1 : 0));
}

/* A text chunk: "tEXt" key\0text; "zTXt" key\0 0 zlib(text); "iTXt" key\0 1 0 \0 \0 zlib(text) (compressed).
 */
static void put_text(struct bytes *b, const char *type, const char *key, const char *text, size_t tlen,
                     int corrupt_crc) {
  struct bytes d = {0};
  put(&d, key, strlen(key) + 1);
  if (strcmp(type, "tEXt") == 0) {
    put(&d, text, tlen);
  } else {
    if (strcmp(type, "iTXt") == 0)
      put(&d, "\1\0\0\0", 4); /* compressed, method 0, empty language tag, empty translated keyword */
    else
      put(&d, "\0", 1); /* method 0 */
    uLongf zn = compressBound((uLong)tlen);
    unsigned char *z = malloc(zn);
    CHECK(compress(z, &zn, (const Bytef *)text, (uLong)tlen) == Z_OK);
    put(&d, z, zn);
    free(z);
  }
  put_chunk(b, type, d.p, d.n, corrupt_crc);
  free(d.p);
}

/* A valid 4x4 RGB PNG from fr_png_encode, split as: signature + IHDR | IDAT | IEND, with `before` inserted
 * after IHDR and `after` after IDAT. */
static void write_with_chunks(const char *path, const struct bytes *before, const struct bytes *after) {
  struct fr_err err = {{0}};
  struct fr_tensor *img = make_image(4, 4, 3);
  struct fr_buf png = {0};
  CHECK_OK(fr_png_encode(img, NULL, 0, &png, path, &err), &err);
  fr_tensor_free(img);
  const size_t head = 8 + 25, tail = 12; /* signature + IHDR chunk (13 bytes of data); IEND */
  CHECK(png.len > head + tail && memcmp(png.data + head + 4, "IDAT", 4) == 0);
  struct bytes f = {0};
  put(&f, png.data, head);
  if (before && before->n)
    put(&f, before->p, before->n);
  put(&f, png.data + head, png.len - head - tail);
  if (after && after->n)
    put(&f, after->p, after->n);
  put(&f, png.data + png.len - tail, tail);
  write_bytes(path, f.p, f.n);
  free(f.p);
  fr_buf_free(&png);
}

static char *read_text(const char *path, const char *key, enum fr_status *rc, struct fr_err *err) {
  char *s = NULL;
  *rc = fr_png_read_text(path, key, &s, err);
  return s;
}

/* A minimal workflow, padded with a YAML comment of pad bytes. */
static char *workflow(size_t pad, size_t *len) {
  static const char *g = "flowrun: 1\nnodes:\n  p: {type: TestPattern, inputs: {width: 8, height: 8}}\n"
                         "  s: {type: SaveImage, inputs: {images: p, filename_prefix: found}}\n";
  size_t gl = strlen(g);
  char *w = malloc(gl + pad + 3);
  memcpy(w, g, gl);
  w[gl] = '#';
  memset(w + gl + 1, 'x', pad);
  w[gl + 1 + pad] = '\n';
  w[gl + 2 + pad] = 0;
  *len = gl + 2 + pad;
  return w;
}

/* Runs `$FLOWRUN picture --no-cache --output dir` (FLOWRUN: the CLI under test, set by ctest); its exit
 * status, or -1 when FLOWRUN is not set (then that part is skipped). stderr goes to errfile. */
static int run_cli(const char *picture, const char *dir, const char *errfile) {
  const char *cli = getenv("FLOWRUN");
  if (!cli || !*cli) {
    printf("part skipped: FLOWRUN not set, the CLI is not run on %s\n", picture);
    return -1;
  }
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "'%s' '%s' --no-cache --output '%s' >/dev/null 2>'%s'", cli, picture, dir,
           errfile);
  int st = system(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* Text chunks are found wherever they are: after 1100 other text chunks (libpng keeps 1000, so the workflow
 * was "not found" before), in a zTXt that inflates past libpng's 8 MB, in a compressed iTXt, after a chunk
 * with our key and a bad CRC (skipped); a text over FR_PNG_MAX_TEXT_BYTES is refused naming that limit. */
static void test_text_chunks(void) {
  struct fr_err err = {{0}};
  enum fr_status rc;
  size_t wl;
  char *wf = workflow(0, &wl);

  /* 1100 tEXt chunks before the image data and 1100 after it, the workflow last */
  struct bytes before = {0}, after = {0};
  for (int i = 0; i < 1100; i++) {
    char k[32];
    snprintf(k, sizeof k, "junk%d", i);
    put_text(&before, "tEXt", k, "v", 1, 0);
    put_text(&after, "tEXt", k, "w", 1, 0);
  }
  put_text(&after, "tEXt", FR_PNG_KEY_WORKFLOW, wf, wl, 0);
  const char *p = path_in("many-chunks.png");
  write_with_chunks(p, &before, &after);
  char *s = read_text(p, FR_PNG_KEY_WORKFLOW, &rc, &err);
  CHECKF(rc == FR_OK && s && strcmp(s, wf) == 0, "after 2200 text chunks: status %d %s", rc, err.msg);
  fr_free(s);
  struct fr_tensor *t = NULL;
  CHECK_OK(fr_png_read(p, &t, &err), &err); /* the image still reads */
  fr_tensor_free(t);
  char out[4200], errf[4200];
  snprintf(out, sizeof out, "%s/cli-out", tmp);
  snprintf(errf, sizeof errf, "%s/cli.err", tmp);
  int st = run_cli(p, out, errf);
  if (st >= 0) {
    char *e = fr_test_read_file(errf, NULL);
    CHECKF(st == 0, "flowrun many-chunks.png: exit %d: %s", st, e ? e : "");
    free(e);
    char f1[4400];
    snprintf(f1, sizeof f1, "%s/found_00001.png", out);
    CHECKF(access(f1, F_OK) == 0, "flowrun many-chunks.png ran the workflow (%s)", f1);
  }
  free(before.p);
  free(after.p);

  /* a zTXt of 9 MB (libpng drops compressed texts past 8 MB), and a compressed iTXt: read back exactly */
  size_t bl;
  char *big = workflow(9000000, &bl);
  before = (struct bytes){0};
  put_text(&before, "zTXt", FR_PNG_KEY_WORKFLOW, big, bl, 0);
  p = path_in("big-ztxt.png");
  write_with_chunks(p, &before, NULL);
  s = read_text(p, FR_PNG_KEY_WORKFLOW, &rc, &err);
  CHECKF(rc == FR_OK && s && strlen(s) == bl && memcmp(s, big, bl) == 0, "9 MB zTXt: status %d %s", rc,
         err.msg);
  fr_free(s);
  /* through the CLI: found, then refused by the graph loader's own 4 MiB limit, which it names */
  st = run_cli(p, out, errf);
  if (st >= 0) {
    char *e = fr_test_read_file(errf, NULL);
    CHECKF(st == 2 && e && strstr(e, "4 MiB") && !strstr(e, "no flowrun workflow"),
           "flowrun big-ztxt.png: exit %d: %s", st, e ? e : "");
    free(e);
  }
  free(before.p);
  before = (struct bytes){0};
  put_text(&before, "iTXt", FR_PNG_KEY_PARAMS, "{\"seed\": 7}", 11, 0);
  put_text(&before, "iTXt", FR_PNG_KEY_WORKFLOW, big, 3000000, 0);
  p = path_in("itxt.png");
  write_with_chunks(p, &before, NULL);
  s = read_text(p, FR_PNG_KEY_WORKFLOW, &rc, &err);
  CHECKF(rc == FR_OK && s && strlen(s) == 3000000 && memcmp(s, big, 3000000) == 0, "iTXt: status %d %s", rc,
         err.msg);
  fr_free(s);
  s = read_text(p, FR_PNG_KEY_PARAMS, &rc, &err);
  CHECK(rc == FR_OK && s && strcmp(s, "{\"seed\": 7}") == 0);
  fr_free(s);
  free(before.p);
  free(big);

  /* our key with a bad CRC first: skipped, the valid one after it is returned */
  before = (struct bytes){0};
  put_text(&before, "tEXt", FR_PNG_KEY_WORKFLOW, "damaged", 7, 1);
  put_text(&before, "zTXt", FR_PNG_KEY_WORKFLOW, wf, wl, 0);
  p = path_in("bad-crc-text.png");
  write_with_chunks(p, &before, NULL);
  s = read_text(p, FR_PNG_KEY_WORKFLOW, &rc, &err);
  CHECKF(rc == FR_OK && s && strcmp(s, wf) == 0, "after a bad CRC: status %d %s", rc, err.msg);
  fr_free(s);
  free(before.p);

  /* over the limit: refused with the limit named, not "not found" */
  size_t hl = (size_t)FR_PNG_MAX_TEXT_BYTES + 10;
  char *huge = malloc(hl);
  memset(huge, 'y', hl);
  before = (struct bytes){0};
  put_text(&before, "zTXt", FR_PNG_KEY_WORKFLOW, huge, hl, 0);
  free(huge);
  p = path_in("huge-text.png");
  write_with_chunks(p, &before, NULL);
  free(before.p);
  s = read_text(p, FR_PNG_KEY_WORKFLOW, &rc, &err);
  CHECKF(rc == FR_E_UNSUPPORTED && !s && strstr(err.msg, "FR_PNG_MAX_TEXT_BYTES") &&
             strstr(err.msg, "64 MiB") && strstr(err.msg, "huge-text.png"),
         "text over the limit: status %d %s", rc, err.msg);
  free(wf);
}

/* A tiny file whose IHDR declares 16384x16384 16-bit RGBA (4 GiB as F32): refused from the header, before
 * anything is allocated, with the limit named; also through LoadImage's reader. 8192x8192 RGBA 8-bit is
 * exactly the limit (1 GiB as F32): not refused by it (the small file fails the size check instead). */
static void test_huge_image(void) {
  struct fr_err err = {{0}};
  unsigned char ihdr[13] = {0, 0, 0x40, 0, 0, 0, 0x40, 0, 16, 6, 0, 0, 0}; /* 16384, 16384, 16 bits, RGBA */
  unsigned char row[] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
  uLongf zn = 64;
  unsigned char z[64];
  CHECK(compress(z, &zn, row, sizeof row) == Z_OK);
  struct bytes f = {0};
  put(&f, "\x89PNG\r\n\x1a\n", 8);
  put_chunk(&f, "IHDR", ihdr, 13, 0);
  put_chunk(&f, "IDAT", z, zn, 0);
  put_chunk(&f, "IEND", NULL, 0, 0);
  const char *p = path_in("huge-16bit-rgba.png");
  write_bytes(p, f.p, f.n);
  struct fr_tensor *t = NULL;
  enum fr_status rc = fr_png_read(p, &t, &err);
  printf("16384x16384 16-bit RGBA -> %s\n", err.msg);
  CHECKF(rc == FR_E_UNSUPPORTED && !t && strstr(err.msg, "huge-16bit-rgba.png") &&
             strstr(err.msg, "16384x16384") && strstr(err.msg, "FR_PNG_MAX_DECODED_BYTES") &&
             strstr(err.msg, "1 GiB"),
         "status %d: %s", rc, err.msg);
  struct fr_tensor *img = NULL, *mask = NULL;
  rc = fr_image_load_png(p, &img, &mask, &err);
  CHECKF(rc == FR_E_UNSUPPORTED && !img && !mask && strstr(err.msg, "FR_PNG_MAX_DECODED_BYTES"),
         "LoadImage: status %d: %s", rc, err.msg);
  /* at the limit: 8192x8192 RGBA 8-bit is 1 GiB as F32, exactly FR_PNG_MAX_DECODED_BYTES */
  CHECK((double)8192 * 8192 * 4 * 4 == (double)FR_PNG_MAX_DECODED_BYTES);
  unsigned char at[13] = {0, 0, 0x20, 0, 0, 0, 0x20, 0, 8, 6, 0, 0, 0};
  free(f.p);
  f = (struct bytes){0};
  put(&f, "\x89PNG\r\n\x1a\n", 8);
  put_chunk(&f, "IHDR", at, 13, 0);
  put_chunk(&f, "IDAT", z, zn, 0);
  put_chunk(&f, "IEND", NULL, 0, 0);
  p = path_in("at-limit.png");
  write_bytes(p, f.p, f.n);
  free(f.p);
  rc = fr_png_read(p, &t, &err);
  CHECKF(rc == FR_E_FORMAT && !t && !strstr(err.msg, "FR_PNG_MAX_DECODED_BYTES"), "at the limit: %d %s", rc,
         err.msg);
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
  test_text_chunks();
  test_huge_image();
  CHECKF(leftover_tmp(tmp) == 0, "temporary files left in %s", tmp);
  return fr_test_done();
}
