/* safetensors reader/writer: round trips, every malformed-file case the reader must refuse (with the
 * file and tensor named, never a crash), allocation failures, and every fixture file parsing. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/alloc.h"
#include "core/safetensors.h"
#include "tests/test.h"

/* A file image: u64 header length, the header text as given, then data_len bytes 0..255 repeating. */
static unsigned char *make_blob(const char *header, size_t data_len, size_t *len) {
  size_t hl = strlen(header);
  *len = 8 + hl + data_len;
  unsigned char *b = malloc(*len);
  for (int i = 0; i < 8; i++)
    b[i] = (unsigned char)((uint64_t)hl >> (8 * i));
  memcpy(b + 8, header, hl);
  for (size_t i = 0; i < data_len; i++)
    b[8 + hl + i] = (unsigned char)i;
  return b;
}

/* Parses header+data and expects FR_E_FORMAT with every string of want[] in the message. */
static void expect_bad(const char *label, const char *header, size_t data_len, const char *want1,
                       const char *want2) {
  size_t len;
  unsigned char *b = make_blob(header, data_len, &len);
  struct fr_safetensors *st = (void *)1;
  struct fr_err err = {{0}};
  enum fr_status rc = fr_st_parse(b, len, "bad.safetensors", &st, &err);
  CHECKF(rc == FR_E_FORMAT, "%s: rc %d (%s)", label, rc, err.msg);
  CHECKF(st == NULL, "%s: out not cleared", label);
  CHECKF(strstr(err.msg, "bad.safetensors") != NULL, "%s: file not named: %s", label, err.msg);
  if (want1)
    CHECKF(strstr(err.msg, want1) != NULL, "%s: '%s' not in: %s", label, want1, err.msg);
  if (want2)
    CHECKF(strstr(err.msg, want2) != NULL, "%s: '%s' not in: %s", label, want2, err.msg);
  free(b);
}

static void test_bad_headers(void) {
  expect_bad("unknown dtype", "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2,
             "tensor w", "F8_E4M3");
  expect_bad("shape x dtype != bytes",
             "{\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24,
             "tensor a.weight", "24 bytes");
  expect_bad("offsets outside", "{\"bias\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 16,
             "tensor bias", "outside");
  expect_bad("begin > end", "{\"x\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]}}", 8, "tensor x",
             "begin");
  expect_bad("overlap",
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
             "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
             16, "tensor b", "overlaps tensor a");
  expect_bad("overlap hidden behind a short tensor",
             "{\"big\":{\"dtype\":\"U8\",\"shape\":[32],\"data_offsets\":[0,32]},"
             "\"small\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]},"
             "\"late\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[16,20]}}",
             32, "overlaps tensor big", NULL);
  expect_bad("negative dim", "{\"n\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0,
             "tensor n", "shape[0]");
  expect_bad("fractional dim", "{\"n\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,0]}}", 0,
             "tensor n", "shape[0]");
  expect_bad("too many dims", "{\"d\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}",
             1, "tensor d", "dimensions");
  expect_bad("shape overflow",
             "{\"o\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 0,
             "tensor o", "overflow");
  expect_bad("missing dtype", "{\"m\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "tensor m", "dtype");
  expect_bad("missing offsets", "{\"m\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1, "tensor m", "data_offsets");
  expect_bad("three offsets", "{\"m\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 2,
             "tensor m", "data_offsets");
  expect_bad("entry not object", "{\"m\":[1,2]}", 0, "tensor m", NULL);
  expect_bad("duplicate name",
             "{\"dup\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
             "\"dup\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
             2, "tensor dup", "twice");
  expect_bad("bad JSON", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],", 4, "header", "JSON");
  expect_bad("trailing garbage", "{}x", 0, "header", NULL);
  expect_bad("header not an object", "[1, 2]", 0, "not a JSON object", NULL);
  expect_bad("metadata value not a string", "{\"__metadata__\":{\"format\":1}}", 0, "format", "not a string");
  expect_bad("metadata not an object", "{\"__metadata__\":\"pt\"}", 0, "__metadata__", NULL);
  expect_bad("deep nesting", "{\"w\":[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]}", 0, "header", NULL);
}

static void test_bad_lengths(void) {
  struct fr_safetensors *st;
  struct fr_err err = {{0}};
  unsigned char b[16] = {0};
  CHECK(fr_st_parse(b, 5, "short.safetensors", &st, &err) == FR_E_FORMAT && strstr(err.msg, "short"));
  /* header length 1 */
  b[0] = 1;
  CHECK(fr_st_parse(b, 16, "one.safetensors", &st, &err) == FR_E_FORMAT && strstr(err.msg, "too small"));
  /* header length past the end of the file */
  b[0] = 200;
  CHECK(fr_st_parse(b, 16, "past.safetensors", &st, &err) == FR_E_FORMAT && strstr(err.msg, "past the end"));
  /* huge header length: 2^63, and just over the 100 MiB bound */
  memset(b, 0, 8);
  b[7] = 0x80;
  CHECK(fr_st_parse(b, 16, "huge.safetensors", &st, &err) == FR_E_FORMAT && strstr(err.msg, "limit"));
  uint64_t over = 100u * 1024 * 1024 + 1;
  for (int i = 0; i < 8; i++)
    b[i] = (unsigned char)(over >> (8 * i));
  CHECK(fr_st_parse(b, 16, "huge.safetensors", &st, &err) == FR_E_FORMAT && strstr(err.msg, "limit"));
}

/* Writes a valid file, then checks truncations of it on disk: each one is refused, naming the tensor
 * once the header is intact. */
static void test_truncated_files(const char *dir) {
  float v[6] = {1, 2, 3, 4, 5, 6};
  struct fr_tensor *t = fr_tensor_view(FR_F32, 2, (int64_t[]){2, 3}, v);
  struct fr_st_item it = {"layer.weight", t};
  struct fr_buf b = {0};
  struct fr_err err = {{0}};
  CHECK_OK(fr_st_serialize(&it, 1, NULL, NULL, 0, &b, &err), &err);
  char path[4200];
  snprintf(path, sizeof path, "%s/trunc.safetensors", dir);
  size_t cuts[] = {b.len - 1, b.len - 24, b.len - 25, 20, 8, 3, 0};
  for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
    FILE *f = fopen(path, "wb");
    fwrite(b.data, 1, cuts[k], f);
    fclose(f);
    struct fr_safetensors *st = NULL;
    enum fr_status rc = fr_st_open(path, &st, &err);
    CHECKF(rc == FR_E_FORMAT && st == NULL, "cut at %zu: rc %d", cuts[k], rc);
    CHECKF(strstr(err.msg, "trunc.safetensors") != NULL, "cut at %zu: %s", cuts[k], err.msg);
    if (cuts[k] >= b.len - 24)
      CHECKF(strstr(err.msg, "layer.weight") != NULL, "cut at %zu: %s", cuts[k], err.msg);
  }
  struct fr_safetensors *st = NULL;
  snprintf(path, sizeof path, "%s/missing.safetensors", dir);
  CHECK(fr_st_open(path, &st, &err) == FR_E_NOTFOUND && strstr(err.msg, "missing.safetensors"));
  CHECK(fr_st_open(dir, &st, &err) == FR_E_IO);
  fr_buf_free(&b);
  fr_tensor_free(t);
}

static void test_round_trip(const char *dir) {
  float f32[6] = {1.5f, -2, 3.25f, 0, 1e-8f, 65504};
  uint16_t f16[5] = {0x3c00, 0xc000, 0x7bff, 0, 0x8001};
  int64_t i64 = -1234567890123LL;
  uint8_t boolv[3] = {1, 0, 1};
  double f64[2] = {3.141592653589793, -0.0};
  struct fr_tensor *ts[] = {
      fr_tensor_view(FR_F32, 2, (int64_t[]){2, 3}, f32),
      fr_tensor_view(FR_F16, 1, (int64_t[]){5}, f16),
      fr_tensor_view(FR_I64, 0, NULL, &i64),
      fr_tensor_view(FR_U8, 1, (int64_t[]){0}, NULL),
      fr_tensor_view(FR_BOOL, 1, (int64_t[]){3}, boolv),
      fr_tensor_view(FR_F64, 3, (int64_t[]){1, 2, 1}, f64),
  };
  const char *names[] = {"model.w", "half \"quoted\"", "scalar", "empty", "mask", "unicode é ✓"};
  int n = 6;
  struct fr_st_item items[6];
  for (int i = 0; i < n; i++)
    items[i] = (struct fr_st_item){names[i], ts[i]};
  const char *mk[] = {"format", "note"}, *mv[] = {"pt", "line1\nline2 \"q\" \\"};
  char path[4200];
  snprintf(path, sizeof path, "%s/rt.safetensors", dir);
  struct fr_err err = {{0}};
  CHECK_OK(fr_st_write_file(path, items, n, mk, mv, 2, &err), &err);

  struct fr_safetensors *st = NULL;
  CHECK_OK(fr_st_open(path, &st, &err), &err);
  if (!st)
    return;
  CHECK(st->n == n);
  CHECK(st->n_meta == 2);
  CHECK(fr_st_meta(st, "format") && strcmp(fr_st_meta(st, "format"), "pt") == 0);
  CHECK(fr_st_meta(st, "note") && strcmp(fr_st_meta(st, "note"), mv[1]) == 0);
  CHECK(fr_st_meta(st, "absent") == NULL);
  for (int i = 0; i < n; i++) {
    const struct fr_st_entry *e = fr_st_find(st, names[i]);
    CHECKF(e != NULL, "tensor %s not found", names[i]);
    if (!e)
      continue;
    CHECK(e == &st->entries[i]); /* file order kept */
    CHECK(e->dtype == ts[i]->dtype && e->ndim == ts[i]->ndim);
    CHECK(memcmp(e->shape, ts[i]->shape, sizeof e->shape) == 0);
    CHECK(e->nbytes == fr_tensor_nbytes(ts[i]));
    CHECKF((uintptr_t)e->data % 8 == 0, "tensor %s data not 8-byte aligned", names[i]);
    CHECK(e->nbytes == 0 || memcmp(e->data, ts[i]->data, e->nbytes) == 0);
    struct fr_tensor *v = fr_st_view(e);
    CHECK(v && v->data == e->data && !v->owns_data);
    fr_tensor_free(v);
  }
  CHECK(fr_st_find(st, "nope") == NULL);
  fr_st_close(st);

  /* Atomic replace: overwrite with one tensor, no temporary file left behind. */
  CHECK_OK(fr_st_write_file(path, items, 1, NULL, NULL, 0, &err), &err);
  CHECK_OK(fr_st_open(path, &st, &err), &err);
  if (st) {
    CHECK(st->n == 1 && st->n_meta == 0);
    fr_st_close(st);
  }
  DIR *d = opendir(dir);
  int others = 0;
  for (struct dirent *de; d && (de = readdir(d));)
    if (strstr(de->d_name, ".tmp"))
      others++;
  if (d)
    closedir(d);
  CHECK(others == 0);

  /* Writer refusals. */
  snprintf(path, sizeof path, "%s/no/such/folder/x.safetensors", dir);
  CHECK(fr_st_write_file(path, items, 1, NULL, NULL, 0, &err) == FR_E_IO && strstr(err.msg, "x.safetensors"));
  struct fr_st_item dup[2] = {{"same", ts[0]}, {"same", ts[1]}};
  struct fr_buf b = {0};
  CHECK(fr_st_serialize(dup, 2, NULL, NULL, 0, &b, &err) == FR_E_INVALID && strstr(err.msg, "same"));
  struct fr_st_item reserved = {"__metadata__", ts[0]};
  CHECK(fr_st_serialize(&reserved, 1, NULL, NULL, 0, &b, &err) == FR_E_INVALID);
  fr_buf_free(&b);
  for (int i = 0; i < n; i++)
    fr_tensor_free(ts[i]);
}

/* Many tensors: every name found through the hash index. */
static void test_many(void) {
  enum { N = 3000 };
  static uint8_t data[N];
  static char names[N][32];
  struct fr_st_item *items = malloc(sizeof *items * N);
  struct fr_tensor **ts = malloc(sizeof *ts * N);
  for (int i = 0; i < N; i++) {
    data[i] = (uint8_t)(i * 7);
    snprintf(names[i], sizeof names[i], "model.layers.%d.weight", i);
    ts[i] = fr_tensor_view(FR_U8, 1, (int64_t[]){1}, &data[i]);
    items[i] = (struct fr_st_item){names[i], ts[i]};
  }
  struct fr_buf b = {0};
  struct fr_err err = {{0}};
  CHECK_OK(fr_st_serialize(items, N, NULL, NULL, 0, &b, &err), &err);
  struct fr_safetensors *st = NULL;
  CHECK_OK(fr_st_parse(b.data, b.len, NULL, &st, &err), &err);
  int found = 0;
  for (int i = 0; st && i < N; i++) {
    const struct fr_st_entry *e = fr_st_find(st, names[i]);
    found += e && *(const uint8_t *)e->data == data[i];
  }
  CHECK(found == N);
  CHECK(st && strcmp(st->path, "<memory>") == 0);
  fr_st_close(st);
  fr_buf_free(&b);
  for (int i = 0; i < N; i++)
    fr_tensor_free(ts[i]);
  free(ts);
  free(items);
}

/* A writer that does not align: data starting at an odd offset still reads correctly via fr_st_view. */
static void test_misaligned(void) {
  const char *hdr = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1,9]}}";
  size_t len;
  unsigned char *b = make_blob(hdr, 9, &len);
  float want[2] = {1.5f, -7};
  memcpy(b + len - 8, want, 8);
  struct fr_safetensors *st = NULL;
  struct fr_err err = {{0}};
  CHECK_OK(fr_st_parse(b, len, "odd", &st, &err), &err);
  if (st) {
    struct fr_tensor *t = fr_st_view(&st->entries[0]);
    CHECK(t && ((float *)t->data)[0] == 1.5f && ((float *)t->data)[1] == -7);
    fr_tensor_free(t);
    fr_st_close(st);
  }
  free(b);
}

/* Every allocation failing in turn: a clean FR_E_NOMEM, never a crash or leak (ASan checks leaks). */
static void test_alloc_failures(void) {
  float v[4] = {0};
  struct fr_tensor *t = fr_tensor_view(FR_F32, 1, (int64_t[]){4}, v);
  struct fr_st_item items[2] = {{"a", t}, {"b", t}};
  const char *k = "k", *val = "v";
  struct fr_buf b = {0};
  struct fr_err err = {{0}};
  CHECK_OK(fr_st_serialize(items, 2, &k, &val, 1, &b, &err), &err);
  int nomem = 0, ok_at = 0;
  for (long n = 1; n < 200 && !ok_at; n++) {
    struct fr_safetensors *st = NULL;
    fr_alloc_fail_at(n);
    enum fr_status rc = fr_st_parse(b.data, b.len, "f", &st, &err);
    fr_alloc_fail_at(0);
    if (rc == FR_OK)
      ok_at = (int)n;
    else
      nomem += rc == FR_E_NOMEM;
    fr_st_close(st);
    struct fr_buf o = {0};
    fr_alloc_fail_at(n);
    rc = fr_st_serialize(items, 2, &k, &val, 1, &o, &err);
    fr_alloc_fail_at(0);
    CHECK(rc == FR_OK || rc == FR_E_NOMEM);
    fr_buf_free(&o);
  }
  CHECK(ok_at > 1 && nomem == ok_at - 1);
  fr_buf_free(&b);
  fr_tensor_free(t);
}

static int walk(const char *dir, int *bad) {
  DIR *d = opendir(dir);
  if (!d)
    return 0;
  int count = 0;
  for (struct dirent *de; (de = readdir(d));) {
    if (de->d_name[0] == '.')
      continue;
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
    struct stat sb;
    if (stat(p, &sb) != 0)
      continue;
    if (S_ISDIR(sb.st_mode)) {
      count += walk(p, bad);
      continue;
    }
    size_t l = strlen(p);
    if (l < 12 || strcmp(p + l - 12, ".safetensors") != 0)
      continue;
    struct fr_safetensors *st = NULL;
    struct fr_err err = {{0}};
    enum fr_status rc = fr_st_open(p, &st, &err);
    CHECKF(rc == FR_OK, "%s", err.msg);
    if (rc == FR_OK) {
      count++;
      for (int i = 0; i < st->n; i++)
        if (fr_st_find(st, st->entries[i].name) != &st->entries[i])
          (*bad)++;
    } else {
      (*bad)++;
    }
    fr_st_close(st);
  }
  closedir(d);
  return count;
}

static void test_fixtures(void) {
  const char *fx = fr_test_fixtures();
  if (!fx)
    return;
  char p[4200];
  int bad = 0, n = 0;
  snprintf(p, sizeof p, "%s/models", fx);
  n += walk(p, &bad);
  snprintf(p, sizeof p, "%s/golden", fx);
  n += walk(p, &bad);
  printf("fixtures: %d safetensors files parsed, %d bad\n", n, bad);
  CHECK(n > 0 && bad == 0);
}

int main(void) {
  const char *dir = fr_test_tmpdir("safetensors");
  char d[4096];
  snprintf(d, sizeof d, "%s", dir);
  test_bad_headers();
  test_bad_lengths();
  test_truncated_files(d);
  test_round_trip(d);
  test_many();
  test_misaligned();
  test_alloc_failures();
  test_fixtures();
  return fr_test_done();
}
