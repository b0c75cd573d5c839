/* Values: construction, refcounts, fields, and the cache encoding (round trips of every kind, and
 * truncated or tampered blobs refused with FR_E_FORMAT, never a crash). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/safetensors.h"
#include "core/value.h"
#include "tests/test.h"

static struct fr_value *round_trip(const struct fr_value *v) {
  struct fr_buf b = {0};
  struct fr_err err = {{0}};
  struct fr_value *r = NULL;
  CHECK_OK(fr_value_serialize(v, &b, &err), &err);
  if (!b.oom && b.len)
    CHECK_OK(fr_value_deserialize(b.data, b.len, &r, &err), &err);
  fr_buf_free(&b);
  return r;
}

static void test_primitives(void) {
  int64_t ints[] = {0, -1, INT64_MAX, INT64_MIN, 42};
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
    struct fr_value *v = fr_value_int(ints[i]), *r = round_trip(v);
    CHECK(r && r->kind == FR_V_INT && r->i == ints[i] && strcmp(r->type, "INT") == 0 && r->refcount == 1);
    fr_value_unref(v);
    fr_value_unref(r);
  }
  double fl[] = {0.1, -0.0, 3.141592653589793, 1e-310, 1.7976931348623157e308, INFINITY, -INFINITY};
  for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++) {
    struct fr_value *v = fr_value_float(fl[i]), *r = round_trip(v);
    CHECKF(r && r->kind == FR_V_FLOAT && memcmp(&r->f, &fl[i], sizeof(double)) == 0, "float %g", fl[i]);
    fr_value_unref(v);
    fr_value_unref(r);
  }
  struct fr_value *v = fr_value_float(NAN), *r = round_trip(v);
  CHECK(r && isnan(r->f));
  fr_value_unref(v);
  fr_value_unref(r);
  for (int b = 0; b < 2; b++) {
    v = fr_value_bool(b);
    r = round_trip(v);
    CHECK(r && r->kind == FR_V_BOOL && r->b == (bool)b && strcmp(r->type, "BOOL") == 0);
    fr_value_unref(v);
    fr_value_unref(r);
  }
  const char *strs[] = {"", "a cat, \"photo\"\n\ttab \\ slash", "ünïcödé ✓ 🐈", "\xff\xfe not utf-8 \xc0\x80",
                        "\x01\x1f control"};
  for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
    v = fr_value_string(strs[i]);
    r = round_trip(v);
    CHECKF(r && r->kind == FR_V_STRING && strcmp(r->s, strs[i]) == 0, "string %zu", i);
    fr_value_unref(v);
    fr_value_unref(r);
  }
  /* A primitive with a non-default type name keeps it, interned. */
  v = fr_value_string("euler");
  v->type = "SAMPLER_NAME";
  r = round_trip(v);
  CHECK(r && strcmp(r->type, "SAMPLER_NAME") == 0 && r->type == fr_type_intern("SAMPLER_NAME"));
  fr_value_unref(v);
  fr_value_unref(r);
}

static void test_data(void) {
  struct fr_tensor *img = fr_tensor_f32(4, (int64_t[]){1, 3, 2, 3});
  for (int i = 0; i < 18; i++)
    ((float *)img->data)[i] = (float)i / 17.0f;
  struct fr_value *v = fr_value_tensor("IMAGE", "image", img);
  CHECK(v && v->kind == FR_V_DATA && v->n_fields == 1);
  struct fr_tensor *ids = fr_tensor_new(FR_I64, 2, (int64_t[]){1, 77});
  ((int64_t *)ids->data)[76] = 49407;
  struct fr_tensor *h = fr_tensor_new(FR_F16, 0, NULL);
  *(uint16_t *)h->data = 0x3c00;
  struct fr_tensor *empty = fr_tensor_new(FR_U8, 1, (int64_t[]){0});
  struct fr_err err = {{0}};
  CHECK(fr_value_add_tensor(v, "ids", ids) == FR_OK);
  CHECK(fr_value_add_tensor(v, "scale", h) == FR_OK);
  CHECK(fr_value_add_tensor(v, "empty", empty) == FR_OK);
  CHECK(fr_value_add_string(v, "prompt", "a photo of a cat") == FR_OK);
  CHECK(fr_value_add_string(v, "raw", "\x80\x81") == FR_OK);
  CHECK(fr_value_add_string(v, "blank", "") == FR_OK);
  /* duplicates and misuse are refused (and the tensor still freed: ASan would report a leak) */
  CHECK(fr_value_add_tensor(v, "image", fr_tensor_f32(1, (int64_t[]){1})) == FR_E_INVALID);
  CHECK(fr_value_add_string(v, "prompt", "x") == FR_E_INVALID);
  CHECK(fr_value_add_tensor(v, "null", NULL) == FR_E_INVALID);
  struct fr_value *iv = fr_value_int(1);
  CHECK(fr_value_add_string(iv, "x", "y") == FR_E_INVALID);
  CHECK(fr_value_get_tensor(iv, "x") == NULL);
  fr_value_unref(iv);
  CHECK(v->n_fields == 7);

  struct fr_value *r = round_trip(v);
  CHECK(r && r->kind == FR_V_DATA && strcmp(r->type, "IMAGE") == 0 && r->n_fields == 7);
  if (r) {
    const char *order[] = {"image", "ids", "scale", "empty", "prompt", "raw", "blank"};
    for (int i = 0; i < 7; i++)
      CHECKF(strcmp(r->fields[i].name, order[i]) == 0, "field %d is %s", i, r->fields[i].name);
    const char *tn[] = {"image", "ids", "scale", "empty"};
    for (int i = 0; i < 4; i++) {
      const struct fr_tensor *a = fr_value_get_tensor(v, tn[i]), *b = fr_value_get_tensor(r, tn[i]);
      CHECKF(b && b->dtype == a->dtype && b->ndim == a->ndim && fr_tensor_same_shape(a, b) && b->owns_data &&
                 memcmp(a->data, b->data, fr_tensor_nbytes(a)) == 0,
             "tensor %s", tn[i]);
    }
    CHECK(strcmp(fr_value_get_string(r, "prompt"), "a photo of a cat") == 0);
    CHECK(strcmp(fr_value_get_string(r, "raw"), "\x80\x81") == 0);
    CHECK(strcmp(fr_value_get_string(r, "blank"), "") == 0);
    CHECK(fr_value_get_string(r, "image") == NULL && fr_value_get_tensor(r, "prompt") == NULL);
    CHECK(fr_value_get_tensor(r, "absent") == NULL);
  }
  fr_value_unref(r);

  /* refcounts: a second reference keeps the value alive */
  CHECK(fr_value_ref(v) == v && v->refcount == 2);
  fr_value_unref(v);
  CHECK(v->refcount == 1 && fr_value_get_tensor(v, "image") != NULL);
  fr_value_unref(v);

  /* an empty data value with a custom type */
  v = fr_value_data("MY_THING");
  r = round_trip(v);
  CHECK(r && r->kind == FR_V_DATA && r->n_fields == 0 && strcmp(r->type, "MY_THING") == 0);
  fr_value_unref(v);
  fr_value_unref(r);
  (void)err;
}

static int destroyed;
static void obj_destroy(struct fr_object *o) {
  destroyed++;
  fr_free(o->identity);
  fr_free(o);
}

static void test_object(void) {
  struct fr_object *o = fr_calloc(1, sizeof *o);
  o->refcount = 1;
  o->type = "MODEL";
  o->identity = fr_strdup("sd15-tiny.safetensors:abc");
  o->destroy = obj_destroy;
  struct fr_value *v = fr_value_object(o);
  CHECK(v && v->kind == FR_V_OBJECT && v->obj == o && strcmp(v->type, "MODEL") == 0);
  CHECK(!fr_value_cacheable(v));
  struct fr_buf b = {0};
  struct fr_err err = {{0}};
  CHECK(fr_value_serialize(v, &b, &err) == FR_E_INVALID && strstr(err.msg, "MODEL"));
  fr_buf_free(&b);
  fr_value_ref(v);
  fr_value_unref(v);
  CHECK(destroyed == 0);
  fr_value_unref(v);
  CHECK(destroyed == 1);
  struct fr_value *iv = fr_value_int(3);
  CHECK(fr_value_cacheable(iv));
  fr_value_unref(iv);
  fr_value_unref(NULL);
  CHECK(fr_type_intern("IMAGE") == fr_type_intern("IMAGE"));
  CHECK(fr_type_intern("X_Y") == fr_type_intern("X_Y"));
}

/* A blob built by hand with the given metadata and optionally one tensor. */
static void expect_tampered(const char *label, int n_meta, const char *const *k, const char *const *val,
                            bool with_tensor, const char *want) {
  float x = 1;
  struct fr_tensor *t = fr_tensor_view(FR_F32, 1, (int64_t[]){1}, &x);
  struct fr_st_item it = {"t", t};
  struct fr_buf b = {0};
  struct fr_err err = {{0}};
  CHECK_OK(fr_st_serialize(&it, with_tensor, k, val, n_meta, &b, &err), &err);
  struct fr_value *r = (void *)1;
  enum fr_status rc = fr_value_deserialize(b.data, b.len, &r, &err);
  CHECKF(rc == FR_E_FORMAT && r == NULL, "%s: rc %d (%s)", label, rc, err.msg);
  CHECKF(strstr(err.msg, want) != NULL, "%s: '%s' not in: %s", label, want, err.msg);
  fr_buf_free(&b);
  fr_tensor_free(t);
}

static void test_tampered(void) {
#define M(...) (const char *const[]){__VA_ARGS__}
  expect_tampered("no format", 2, M("fr.type", "fr.kind"), M("INT", "int"), false, "fr.format");
  expect_tampered("future format", 3, M("fr.format", "fr.type", "fr.kind"),
                  M("flowrun.value/9", "INT", "int"), false, "flowrun.value/9");
  expect_tampered("object kind", 3, M("fr.format", "fr.type", "fr.kind"),
                  M("flowrun.value/1", "MODEL", "object"), false, "fr.kind");
  expect_tampered("bad type name", 4, M("fr.format", "fr.type", "fr.kind", "fr.value"),
                  M("flowrun.value/1", "IN T;", "int", "1"), false, "fr.type");
  expect_tampered("int not a number", 4, M("fr.format", "fr.type", "fr.kind", "fr.value"),
                  M("flowrun.value/1", "INT", "int", "12x"), false, "integer");
  expect_tampered("int overflow", 4, M("fr.format", "fr.type", "fr.kind", "fr.value"),
                  M("flowrun.value/1", "INT", "int", "99999999999999999999"), false, "integer");
  expect_tampered("float junk", 4, M("fr.format", "fr.type", "fr.kind", "fr.value"),
                  M("flowrun.value/1", "FLOAT", "float", ""), false, "number");
  expect_tampered("bool junk", 4, M("fr.format", "fr.type", "fr.kind", "fr.value"),
                  M("flowrun.value/1", "BOOL", "bool", "yes"), false, "true or false");
  expect_tampered("missing primitive", 3, M("fr.format", "fr.type", "fr.kind"),
                  M("flowrun.value/1", "INT", "int"), false, "without fr.value");
  expect_tampered("tensor on an int", 4, M("fr.format", "fr.type", "fr.kind", "fr.value"),
                  M("flowrun.value/1", "INT", "int", "1"), true, "tensor t");
  expect_tampered("unknown key", 4, M("fr.format", "fr.type", "fr.kind", "evil"),
                  M("flowrun.value/1", "IMAGE", "data", "1"), false, "evil");
  expect_tampered("bad hex", 4, M("fr.format", "fr.type", "fr.kind", "fr.valuex"),
                  M("flowrun.value/1", "STRING", "string", "abc"), false, "hex");
  expect_tampered("hex NUL", 4, M("fr.format", "fr.type", "fr.kind", "fr.strx.s"),
                  M("flowrun.value/1", "IMAGE", "data", "6100"), false, "hex");
  expect_tampered("string field shadows tensor", 4, M("fr.format", "fr.type", "fr.kind", "fr.str.t"),
                  M("flowrun.value/1", "IMAGE", "data", "x"), true, "field t");
  expect_tampered("duplicate kind", 4, M("fr.format", "fr.type", "fr.kind", "fr.kind"),
                  M("flowrun.value/1", "IMAGE", "data", "int"), false, "twice");
  expect_tampered("two payloads", 5, M("fr.format", "fr.type", "fr.kind", "fr.value", "fr.valuex"),
                  M("flowrun.value/1", "STRING", "string", "a", "62"), false, "more than one");
  expect_tampered("value on data", 4, M("fr.format", "fr.type", "fr.kind", "fr.value"),
                  M("flowrun.value/1", "IMAGE", "data", "1"), false, "fr.value");
#undef M
}

/* Every prefix of a real blob, and every single-byte change in its header: FR_E_FORMAT or (for a
 * harmless change) FR_OK, never a crash; ASan/UBSan watch the reads. */
static void test_fuzzish(void) {
  struct fr_value *v = fr_value_tensor("LATENT", "samples", fr_tensor_f32(4, (int64_t[]){1, 4, 2, 2}));
  fr_value_add_string(v, "note", "hi");
  struct fr_buf b = {0};
  struct fr_err err = {{0}};
  CHECK_OK(fr_value_serialize(v, &b, &err), &err);
  int bad = 0, ok = 0;
  for (size_t n = 0; n < b.len; n++) {
    struct fr_value *r = NULL;
    enum fr_status rc = fr_value_deserialize(b.data, n, &r, &err);
    bad += rc != FR_E_FORMAT || r != NULL;
  }
  CHECKF(bad == 0, "%d truncations not refused", bad);
  size_t hlen = (size_t)(unsigned char)b.data[0] | (size_t)(unsigned char)b.data[1] << 8;
  unsigned char *copy = malloc(b.len);
  bad = 0;
  for (size_t i = 0; i < 8 + hlen; i++) {
    for (int flip = 1; flip < 256; flip <<= 3) {
      memcpy(copy, b.data, b.len);
      copy[i] ^= (unsigned char)flip;
      struct fr_value *r = NULL;
      enum fr_status rc = fr_value_deserialize(copy, b.len, &r, &err);
      if (rc == FR_OK)
        ok++;
      else
        bad += rc != FR_E_FORMAT && rc != FR_E_NOMEM;
      fr_value_unref(r);
    }
  }
  CHECKF(bad == 0, "%d header changes gave an unexpected status", bad);
  printf("header bit flips: %d of %zu accepted (whitespace, names)\n", ok, (8 + hlen) * 3);
  free(copy);
  fr_buf_free(&b);
  fr_value_unref(v);
}

static void test_alloc_failures(void) {
  struct fr_value *v = fr_value_tensor("IMAGE", "image", fr_tensor_f32(4, (int64_t[]){1, 2, 2, 3}));
  fr_value_add_string(v, "s", "\xff");
  struct fr_buf b = {0};
  struct fr_err err = {{0}};
  CHECK_OK(fr_value_serialize(v, &b, &err), &err);
  bool ser_ok = false, de_ok = false;
  int bad = 0;
  for (long n = 1; n < 400 && !(ser_ok && de_ok); n++) {
    struct fr_buf o = {0};
    fr_alloc_fail_at(n);
    enum fr_status rc = fr_value_serialize(v, &o, &err);
    fr_alloc_fail_at(0);
    ser_ok |= rc == FR_OK;
    bad += rc != FR_OK && rc != FR_E_NOMEM;
    fr_buf_free(&o);
    struct fr_value *r = NULL;
    fr_alloc_fail_at(n);
    rc = fr_value_deserialize(b.data, b.len, &r, &err);
    fr_alloc_fail_at(0);
    de_ok |= rc == FR_OK;
    bad += rc != FR_OK && rc != FR_E_NOMEM;
    fr_value_unref(r);
    struct fr_value *c = NULL;
    fr_alloc_fail_at(n);
    c = fr_value_tensor("IMAGE", "image", fr_tensor_f32(1, (int64_t[]){3}));
    if (c)
      fr_value_add_string(c, "x", "y");
    fr_alloc_fail_at(0);
    fr_value_unref(c);
  }
  CHECK(ser_ok && de_ok && bad == 0);
  fr_buf_free(&b);
  fr_value_unref(v);
}

int main(void) {
  test_primitives();
  test_data();
  test_object();
  test_tampered();
  test_fuzzish();
  test_alloc_failures();
  return fr_test_done();
}
