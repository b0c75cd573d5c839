/* Values on the graph's edges, and their cache encoding. See core/value.h.
 *
 * Cache encoding (a safetensors blob, docs/cache.md):
 *   tensors       the data value's tensor fields, in field order, under their field names;
 *   __metadata__  "fr.format": "flowrun.value/1"
 *                 "fr.type":   the value's type name ("IMAGE", "INT", ...)
 *                 "fr.kind":   "int" | "float" | "bool" | "string" | "data"
 *                 "fr.value":  a primitive as text (int: decimal, float: %.17g, bool: true/false)
 *                 "fr.str.<name>": a data value's string field
 * Strings that are not valid UTF-8 cannot travel through JSON unchanged; they are stored hex-encoded
 * under "fr.valuex" / "fr.strx.<name>" instead, so every string round-trips byte for byte. */
#include "core/value.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/safetensors.h"

#define FR__VALUE_FORMAT "flowrun.value/1"

/* ---- type names ---- */

static const char *const fr__known_types[] = {"INT",   "FLOAT", "BOOL",       "STRING",       "ENUM",
                                              "IMAGE", "MASK",  "LATENT",     "CONDITIONING", "MODEL",
                                              "CLIP",  "VAE",   "CONTROL_NET"};

struct fr__interned {
  struct fr__interned *next;
  char name[];
};
static struct fr__interned *fr__interned_head; /* process lifetime: never freed */
static pthread_mutex_t fr__intern_lock = PTHREAD_MUTEX_INITIALIZER;

const char *fr_type_intern(const char *name) {
  if (!name)
    return NULL;
  for (size_t i = 0; i < sizeof fr__known_types / sizeof fr__known_types[0]; i++)
    if (strcmp(fr__known_types[i], name) == 0)
      return fr__known_types[i];
  const char *found = NULL;
  pthread_mutex_lock(&fr__intern_lock);
  for (struct fr__interned *p = fr__interned_head; p && !found; p = p->next)
    if (strcmp(p->name, name) == 0)
      found = p->name;
  if (!found) {
    size_t n = strlen(name);
    struct fr__interned *p = fr_malloc(sizeof *p + n + 1);
    if (p) {
      memcpy(p->name, name, n + 1);
      p->next = fr__interned_head;
      fr__interned_head = p;
      found = p->name;
    }
  }
  pthread_mutex_unlock(&fr__intern_lock);
  return found;
}

/* ---- construction and ownership ---- */

static struct fr_value *fr__value_new(const char *type, enum fr_vkind kind) {
  struct fr_value *v = fr_calloc(1, sizeof *v);
  if (v) {
    v->refcount = 1;
    v->type = type;
    v->kind = kind;
  }
  return v;
}

struct fr_value *fr_value_int(int64_t i) {
  struct fr_value *v = fr__value_new("INT", FR_V_INT);
  if (v)
    v->i = i;
  return v;
}

struct fr_value *fr_value_float(double f) {
  struct fr_value *v = fr__value_new("FLOAT", FR_V_FLOAT);
  if (v)
    v->f = f;
  return v;
}

struct fr_value *fr_value_bool(bool b) {
  struct fr_value *v = fr__value_new("BOOL", FR_V_BOOL);
  if (v)
    v->b = b;
  return v;
}

struct fr_value *fr_value_string(const char *s) {
  struct fr_value *v = fr__value_new("STRING", FR_V_STRING);
  if (v && !(v->s = fr_strdup(s ? s : ""))) {
    fr_free(v);
    return NULL;
  }
  return v;
}

struct fr_value *fr_value_data(const char *type) {
  return fr__value_new(type, FR_V_DATA);
}

struct fr_value *fr_value_object(struct fr_object *o) {
  struct fr_value *v = o ? fr__value_new(o->type, FR_V_OBJECT) : NULL;
  if (!v) {
    fr_object_unref(o); /* the reference was handed over: release it on failure too */
    return NULL;
  }
  v->obj = o;
  return v;
}

struct fr_value *fr_value_tensor(const char *type, const char *field, struct fr_tensor *t) {
  struct fr_value *v = fr_value_data(type);
  if (!v) {
    fr_tensor_free(t);
    return NULL;
  }
  if (fr_value_add_tensor(v, field, t) != FR_OK) {
    fr_value_unref(v);
    return NULL;
  }
  return v;
}

static int fr__field_index(const struct fr_value *v, const char *name) {
  if (!v || v->kind != FR_V_DATA || !name)
    return -1;
  for (int i = 0; i < v->n_fields; i++)
    if (strcmp(v->fields[i].name, name) == 0)
      return i;
  return -1;
}

/* Appends a field (name copied, t and s taken over). FR_E_INVALID for a non-data value, a missing or
 * duplicate name; t and s are freed on every failure. */
static enum fr_status fr__add_field(struct fr_value *v, const char *name, struct fr_tensor *t, char *s) {
  enum fr_status rc = FR_OK;
  if (!v || v->kind != FR_V_DATA || !name || fr__field_index(v, name) >= 0 || (!t && !s))
    rc = FR_E_INVALID;
  struct fr_field *f = NULL;
  char *nm = NULL;
  if (!rc) {
    f = fr_realloc(v->fields, sizeof *f * (size_t)(v->n_fields + 1));
    if (f)
      v->fields = f;
    nm = fr_strdup(name);
    if (!f || !nm)
      rc = FR_E_NOMEM;
  }
  if (rc) {
    fr_free(nm);
    fr_tensor_free(t);
    fr_free(s);
    return rc;
  }
  v->fields[v->n_fields++] = (struct fr_field){nm, t, s};
  return FR_OK;
}

enum fr_status fr_value_add_tensor(struct fr_value *v, const char *name, struct fr_tensor *t) {
  if (!t)
    return FR_E_INVALID;
  return fr__add_field(v, name, t, NULL);
}

enum fr_status fr_value_add_string(struct fr_value *v, const char *name, const char *s) {
  char *copy = s ? fr_strdup(s) : NULL;
  if (!copy)
    return s ? FR_E_NOMEM : FR_E_INVALID;
  return fr__add_field(v, name, NULL, copy);
}

const struct fr_tensor *fr_value_get_tensor(const struct fr_value *v, const char *name) {
  int i = fr__field_index(v, name);
  return i >= 0 ? v->fields[i].t : NULL;
}

const char *fr_value_get_string(const struct fr_value *v, const char *name) {
  int i = fr__field_index(v, name);
  return i >= 0 ? v->fields[i].str : NULL;
}

struct fr_value *fr_value_ref(struct fr_value *v) {
  if (v)
    __atomic_add_fetch(&v->refcount, 1, __ATOMIC_RELAXED);
  return v;
}

void fr_value_unref(struct fr_value *v) {
  if (!v || __atomic_sub_fetch(&v->refcount, 1, __ATOMIC_ACQ_REL) > 0)
    return;
  for (int i = 0; i < v->n_fields; i++) {
    fr_free(v->fields[i].name);
    fr_tensor_free(v->fields[i].t);
    fr_free(v->fields[i].str);
  }
  fr_free(v->fields);
  fr_free(v->s);
  fr_object_unref(v->obj);
  fr_free(v);
}

void fr_object_unref(struct fr_object *o) {
  if (o && __atomic_sub_fetch(&o->refcount, 1, __ATOMIC_ACQ_REL) == 0 && o->destroy)
    o->destroy(o);
}

bool fr_value_cacheable(const struct fr_value *v) {
  return v && v->kind != FR_V_OBJECT;
}

/* ---- serialisation ---- */

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static bool fr__utf8_valid(const unsigned char *s) {
  while (*s) {
    unsigned c = *s, n, cp;
    if (c < 0x80) {
      s++;
      continue;
    }
    if (c >= 0xc2 && c <= 0xdf)
      n = 1, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
      n = 2, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
      n = 3, cp = c & 0x07;
    else
      return false;
    for (unsigned k = 1; k <= n; k++) {
      if ((s[k] & 0xc0) != 0x80)
        return false;
      cp = cp << 6 | (s[k] & 0x3f);
    }
    if ((n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
      return false;
    s += n + 1;
  }
  return true;
}

static const char fr__hexd[] = "0123456789abcdef";

/* A lowercase hex copy of s (fr_malloc), or NULL when out of memory. */
static char *fr__hex(const char *s) {
  size_t n = strlen(s);
  char *h = fr_malloc(2 * n + 1);
  if (!h)
    return NULL;
  for (size_t i = 0; i < n; i++) {
    h[2 * i] = fr__hexd[(unsigned char)s[i] >> 4];
    h[2 * i + 1] = fr__hexd[(unsigned char)s[i] & 15];
  }
  h[2 * n] = 0;
  return h;
}

/* Decodes hex into a new string; false for odd length, a non-hex digit or a decoded NUL. */
static bool fr__unhex(const char *h, char **out) {
  size_t n = strlen(h);
  *out = NULL;
  if (n % 2)
    return false;
  char *s = fr_malloc(n / 2 + 1);
  if (!s)
    return true; /* caller sees NULL: out of memory */
  for (size_t i = 0; i < n / 2; i++) {
    const char *a = strchr(fr__hexd, h[2 * i]), *b = strchr(fr__hexd, h[2 * i + 1]);
    if (!h[2 * i] || !h[2 * i + 1] || !a || !b || (a == fr__hexd && b == fr__hexd)) {
      fr_free(s);
      return false;
    }
    s[i] = (char)((a - fr__hexd) << 4 | (b - fr__hexd));
  }
  s[n / 2] = 0;
  *out = s;
  return true;
}

static const char *fr__kind_name(enum fr_vkind k) {
  switch (k) {
  case FR_V_INT: return "int";
  case FR_V_FLOAT: return "float";
  case FR_V_BOOL: return "bool";
  case FR_V_STRING: return "string";
  case FR_V_DATA: return "data";
  case FR_V_OBJECT: return "object";
  }
  return "?";
}

/* Metadata under construction: parallel key/value arrays that own their strings. */
struct fr__meta {
  char **k, **v;
  int n, cap;
  bool oom;
};

static void fr__meta_add(struct fr__meta *m, const char *prefix, const char *name, char *val_owned) {
  char *key = NULL;
  if (!m->oom && val_owned) {
    size_t pl = strlen(prefix), nl = name ? strlen(name) : 0;
    key = fr_malloc(pl + nl + 1);
    if (key) {
      memcpy(key, prefix, pl);
      if (nl)
        memcpy(key + pl, name, nl);
      key[pl + nl] = 0;
    }
  }
  if (!m->oom && key && m->n == m->cap) {
    int nc = m->cap ? m->cap * 2 : 8;
    char **nk = fr_realloc(m->k, sizeof *nk * (size_t)nc);
    if (nk)
      m->k = nk;
    char **nv = nk ? fr_realloc(m->v, sizeof *nv * (size_t)nc) : NULL;
    if (nv)
      m->v = nv;
    if (nk && nv)
      m->cap = nc;
  }
  if (m->oom || !key || !val_owned || m->n == m->cap) {
    m->oom = true;
    fr_free(key);
    fr_free(val_owned);
    return;
  }
  m->k[m->n] = key;
  m->v[m->n++] = val_owned;
}

/* Adds a string under prefix+name, or hex-encoded under hexprefix+name when it is not valid UTF-8. */
static void fr__meta_add_str(struct fr__meta *m, const char *prefix, const char *hexprefix, const char *name,
                             const char *s) {
  if (fr__utf8_valid((const unsigned char *)s))
    fr__meta_add(m, prefix, name, fr_strdup(s));
  else
    fr__meta_add(m, hexprefix, name, fr__hex(s));
}

static void fr__meta_free(struct fr__meta *m) {
  for (int i = 0; i < m->n; i++) {
    fr_free(m->k[i]);
    fr_free(m->v[i]);
  }
  fr_free(m->k);
  fr_free(m->v);
}

enum fr_status fr_value_serialize(const struct fr_value *v, struct fr_buf *out, struct fr_err *err) {
  if (!v || !v->type)
    return fr_errf(err, FR_E_INVALID, "cannot serialise a missing value");
  if (!fr_value_cacheable(v))
    return fr_errf(err, FR_E_INVALID, "value of type %s is an in-memory object and cannot be cached",
                   v->type);
  struct fr__meta m = {0};
  fr__meta_add(&m, "fr.format", NULL, fr_strdup(FR__VALUE_FORMAT));
  fr__meta_add(&m, "fr.type", NULL, fr_strdup(v->type));
  fr__meta_add(&m, "fr.kind", NULL, fr_strdup(fr__kind_name(v->kind)));
  char num[64];
  struct fr_st_item *items = NULL;
  int n_items = 0;
  switch (v->kind) {
  case FR_V_INT:
    snprintf(num, sizeof num, "%lld", (long long)v->i);
    fr__meta_add(&m, "fr.value", NULL, fr_strdup(num));
    break;
  case FR_V_FLOAT:
    snprintf(num, sizeof num, "%.17g", v->f);
    fr__meta_add(&m, "fr.value", NULL, fr_strdup(num));
    break;
  case FR_V_BOOL: fr__meta_add(&m, "fr.value", NULL, fr_strdup(v->b ? "true" : "false")); break;
  case FR_V_STRING: fr__meta_add_str(&m, "fr.value", "fr.valuex", NULL, v->s ? v->s : ""); break;
  case FR_V_DATA:
    items = fr_malloc(sizeof *items * (size_t)(v->n_fields ? v->n_fields : 1));
    if (!items)
      m.oom = true;
    for (int i = 0; items && i < v->n_fields; i++) {
      if (v->fields[i].t)
        items[n_items++] = (struct fr_st_item){v->fields[i].name, v->fields[i].t};
      else
        fr__meta_add_str(&m, "fr.str.", "fr.strx.", v->fields[i].name, v->fields[i].str);
    }
    break;
  case FR_V_OBJECT: break; /* refused above */
  }
  enum fr_status rc;
  if (m.oom)
    rc = fr_errf(err, FR_E_NOMEM, "out of memory serialising a %s value", v->type);
  else
    rc = fr_st_serialize(items, n_items, (const char *const *)m.k, (const char *const *)m.v, m.n, out, err);
  if (rc && rc != FR_E_NOMEM)
    fr_err_prefix(err, rc, "value of type %s: ", v->type);
  fr_free(items);
  fr__meta_free(&m);
  return rc;
}

static bool fr__type_name_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 64)
    return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
      return false;
  }
  return true;
}

#define FR__BLOB "cached value"

/* Parses a primitive's text; FR_E_FORMAT when it does not read as the kind says. */
static enum fr_status fr__parse_primitive(struct fr_value *v, const char *text, struct fr_err *err) {
  char *end = NULL;
  errno = 0;
  switch (v->kind) {
  case FR_V_INT: {
    long long x = strtoll(text, &end, 10);
    if (!*text || *end || errno)
      return fr_errf(err, FR_E_FORMAT, FR__BLOB ": \"%.40s\" is not an integer", text);
    v->i = x;
    return FR_OK;
  }
  case FR_V_FLOAT: {
    double x = strtod(text, &end);
    if (!*text || *end || (errno && errno != ERANGE))
      return fr_errf(err, FR_E_FORMAT, FR__BLOB ": \"%.40s\" is not a number", text);
    v->f = x;
    return FR_OK;
  }
  case FR_V_BOOL:
    if (strcmp(text, "true") != 0 && strcmp(text, "false") != 0)
      return fr_errf(err, FR_E_FORMAT, FR__BLOB ": \"%.40s\" is not true or false", text);
    v->b = text[0] == 't';
    return FR_OK;
  default: return fr_errf(err, FR_E_INTERNAL, FR__BLOB ": not a primitive");
  }
}

/* Builds the value described by a parsed blob. */
static enum fr_status fr__value_from_st(const struct fr_safetensors *st, struct fr_value **out,
                                        struct fr_err *err) {
  const char *fmt = fr_st_meta(st, "fr.format"), *type = fr_st_meta(st, "fr.type"),
             *kind = fr_st_meta(st, "fr.kind");
  if (!fmt || strcmp(fmt, FR__VALUE_FORMAT) != 0)
    return fr_errf(err, FR_E_FORMAT, FR__BLOB ": fr.format is %s%s%s, expected " FR__VALUE_FORMAT,
                   fmt ? "\"" : "", fmt ? fmt : "missing", fmt ? "\"" : "");
  if (!type || !fr__type_name_ok(type))
    return fr_errf(err, FR_E_FORMAT, FR__BLOB ": missing or invalid fr.type");
  static const enum fr_vkind kinds[] = {FR_V_INT, FR_V_FLOAT, FR_V_BOOL, FR_V_STRING, FR_V_DATA};
  int k = -1;
  for (int i = 0; kind && i < 5; i++)
    if (strcmp(kind, fr__kind_name(kinds[i])) == 0)
      k = i;
  if (k < 0)
    return fr_errf(err, FR_E_FORMAT, FR__BLOB ": missing or unknown fr.kind");
  const char *itype = fr_type_intern(type);
  struct fr_value *v = itype ? fr__value_new(itype, kinds[k]) : NULL;
  if (!v)
    return fr_errf(err, FR_E_NOMEM, FR__BLOB ": out of memory");
  enum fr_status rc = FR_OK;
  bool have_primitive = false;
  if (v->kind != FR_V_DATA && st->n > 0)
    rc = fr_errf(err, FR_E_FORMAT, FR__BLOB ": a %s value carries tensor %s", kind, st->entries[0].name);
  /* Tensors first, then string fields: the order fr_value_serialize gives a typical value back. */
  for (int i = 0; !rc && v->kind == FR_V_DATA && i < st->n; i++) {
    const struct fr_st_entry *e = &st->entries[i];
    struct fr_tensor *t = fr_tensor_new(e->dtype, e->ndim, e->shape);
    if (t && e->nbytes)
      memcpy(t->data, e->data, e->nbytes);
    if (!t || (rc = fr__add_field(v, e->name, t, NULL)) != FR_OK)
      rc = fr_errf(err, FR_E_NOMEM, FR__BLOB ": out of memory for tensor %s", e->name);
  }
  /* Every metadata key must be one this encoding writes: anything else means a tampered blob. */
  for (int i = 0; !rc && i < st->n_meta; i++) {
    const char *key = st->meta_keys[i], *val = st->meta_values[i];
    bool prim = v->kind != FR_V_DATA;
    if (strcmp(key, "fr.format") == 0 || strcmp(key, "fr.type") == 0 || strcmp(key, "fr.kind") == 0) {
      if (fr_st_meta(st, key) != val) /* fr_st_meta returns the first: a later copy is a duplicate */
        rc = fr_errf(err, FR_E_FORMAT, FR__BLOB ": metadata key %s appears twice", key);
    } else if (prim && (strcmp(key, "fr.value") == 0 || strcmp(key, "fr.valuex") == 0)) {
      if (have_primitive) {
        rc = fr_errf(err, FR_E_FORMAT, FR__BLOB ": more than one primitive payload");
      } else if (v->kind == FR_V_STRING) {
        bool ok = key[8] ? fr__unhex(val, &v->s) : (v->s = fr_strdup(val), true);
        if (!ok)
          rc = fr_errf(err, FR_E_FORMAT, FR__BLOB ": %s is not valid hex", key);
        else if (!v->s)
          rc = fr_errf(err, FR_E_NOMEM, FR__BLOB ": out of memory");
      } else if (key[8]) {
        rc = fr_errf(err, FR_E_FORMAT, FR__BLOB ": fr.valuex on a %s value", kind);
      } else {
        rc = fr__parse_primitive(v, val, err);
      }
      have_primitive = true;
    } else if (!prim && (strncmp(key, "fr.str.", 7) == 0 || strncmp(key, "fr.strx.", 8) == 0)) {
      bool hex = key[6] == 'x';
      const char *name = key + (hex ? 8 : 7);
      char *s = NULL;
      bool ok = hex ? fr__unhex(val, &s) : (s = fr_strdup(val), true);
      if (!ok)
        rc = fr_errf(err, FR_E_FORMAT, FR__BLOB ": %s is not valid hex", key);
      else if (!s)
        rc = fr_errf(err, FR_E_NOMEM, FR__BLOB ": out of memory");
      else if (fr__field_index(v, name) >= 0) {
        fr_free(s);
        rc = fr_errf(err, FR_E_FORMAT, FR__BLOB ": field %s appears twice (tensor and string?)", name);
      } else if ((rc = fr__add_field(v, name, NULL, s)) != FR_OK)
        rc =
            fr_errf(err, rc, FR__BLOB ": field %s: %s", name, rc == FR_E_NOMEM ? "out of memory" : "invalid");
    } else {
      rc =
          fr_errf(err, FR_E_FORMAT, FR__BLOB ": unexpected metadata key \"%.64s\" for a %s value", key, kind);
    }
  }
  if (!rc && v->kind != FR_V_DATA && !have_primitive)
    rc = fr_errf(err, FR_E_FORMAT, FR__BLOB ": a %s value without fr.value", kind);
  if (rc) {
    fr_value_unref(v);
    return rc;
  }
  *out = v;
  return FR_OK;
}

enum fr_status fr_value_deserialize(const void *blob, size_t len, struct fr_value **out, struct fr_err *err) {
  *out = NULL;
  struct fr_safetensors *st = NULL;
  enum fr_status rc = fr_st_parse(blob, len, FR__BLOB, &st, err);
  if (rc)
    return rc;
  rc = fr__value_from_st(st, out, err);
  fr_st_close(st);
  return rc;
}
