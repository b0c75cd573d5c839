#include "core/json.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct fr__jp {
  struct fr_arena *a;
  const char *s;
  size_t n, pos;
  int max_depth;
  struct fr_err *err;
};

static enum fr_status fr__jerr(struct fr__jp *p, const char *what) {
  return fr_errf(p->err, FR_E_FORMAT, "JSON offset %zu: %s", p->pos, what);
}

static void fr__jws(struct fr__jp *p) {
  while (p->pos < p->n && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' ||
                           p->s[p->pos] == '\r'))
    p->pos++;
}

static int fr__hex4(const char *s) {
  int v = 0;
  for (int i = 0; i < 4; i++) {
    char c = s[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
    if (d < 0)
      return -1;
    v = v * 16 + d;
  }
  return v;
}

static size_t fr__put_utf8(char *d, unsigned cp) {
  if (cp < 0x80) { d[0] = (char)cp; return 1; }
  if (cp < 0x800) { d[0] = (char)(0xc0 | (cp >> 6)); d[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
  if (cp < 0x10000) {
    d[0] = (char)(0xe0 | (cp >> 12)); d[1] = (char)(0x80 | ((cp >> 6) & 0x3f)); d[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  d[0] = (char)(0xf0 | (cp >> 18)); d[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
  d[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); d[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

/* Parses a string starting at the opening quote. The decoded form is never longer than the source. */
static enum fr_status fr__jstring(struct fr__jp *p, const char **out, size_t *out_len) {
  size_t start = ++p->pos, end = start;
  while (end < p->n && p->s[end] != '"') {
    if (p->s[end] == '\\')
      end++;
    end++;
  }
  if (end >= p->n)
    return fr__jerr(p, "unterminated string");
  char *d = fr_arena_alloc(p->a, end - start + 1);
  if (!d)
    return fr_errf(p->err, FR_E_NOMEM, "out of memory parsing JSON");
  size_t k = 0;
  for (size_t i = start; i < end; i++) {
    unsigned char c = (unsigned char)p->s[i];
    if (c < 0x20) {
      p->pos = i;
      return fr__jerr(p, "control character in string");
    }
    if (c != '\\') {
      d[k++] = (char)c;
      continue;
    }
    char e = p->s[++i];
    switch (e) {
    case '"': d[k++] = '"'; break;
    case '\\': d[k++] = '\\'; break;
    case '/': d[k++] = '/'; break;
    case 'b': d[k++] = '\b'; break;
    case 'f': d[k++] = '\f'; break;
    case 'n': d[k++] = '\n'; break;
    case 'r': d[k++] = '\r'; break;
    case 't': d[k++] = '\t'; break;
    case 'u': {
      int cp = i + 4 < end + 1 ? fr__hex4(p->s + i + 1) : -1;
      if (cp < 0) {
        p->pos = i;
        return fr__jerr(p, "bad \\u escape");
      }
      i += 4;
      if (cp >= 0xd800 && cp < 0xdc00 && i + 6 < end + 1 && p->s[i + 1] == '\\' && p->s[i + 2] == 'u') {
        int lo = fr__hex4(p->s + i + 3);
        if (lo >= 0xdc00 && lo < 0xe000) {
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          i += 6;
        }
      }
      if (cp >= 0xd800 && cp < 0xe000)
        cp = 0xfffd;
      k += fr__put_utf8(d + k, (unsigned)cp); /* at most 4 bytes for 6+ source bytes */
      break;
    }
    default: p->pos = i; return fr__jerr(p, "bad escape in string");
    }
  }
  d[k] = 0;
  *out = d;
  *out_len = k;
  p->pos = end + 1;
  return FR_OK;
}

static enum fr_status fr__jvalue(struct fr__jp *p, struct fr_json *v, int depth);

static enum fr_status fr__jcontainer(struct fr__jp *p, struct fr_json *v, int depth, bool object) {
  char close = object ? '}' : ']';
  if (depth >= p->max_depth)
    return fr__jerr(p, "nesting too deep");
  p->pos++;
  int cap = 0;
  v->type = object ? FR_JSON_OBJECT : FR_JSON_ARRAY;
  fr__jws(p);
  if (p->pos < p->n && p->s[p->pos] == close) {
    p->pos++;
    return FR_OK;
  }
  for (;;) {
    if (v->n == cap) {
      int ncap = cap ? cap * 2 : 8;
      struct fr_json *items = fr_arena_alloc(p->a, sizeof *items * (size_t)ncap);
      const char **keys = object ? fr_arena_alloc(p->a, sizeof *keys * (size_t)ncap) : NULL;
      if (!items || (object && !keys))
        return fr_errf(p->err, FR_E_NOMEM, "out of memory parsing JSON");
      if (v->n) {
        memcpy(items, v->items, sizeof *items * (size_t)v->n);
        if (object)
          memcpy(keys, v->keys, sizeof *keys * (size_t)v->n);
      }
      v->items = items;
      v->keys = keys;
      cap = ncap;
    }
    fr__jws(p);
    if (object) {
      if (p->pos >= p->n || p->s[p->pos] != '"')
        return fr__jerr(p, "expected a string key");
      size_t klen;
      enum fr_status rc = fr__jstring(p, &v->keys[v->n], &klen);
      if (rc)
        return rc;
      fr__jws(p);
      if (p->pos >= p->n || p->s[p->pos] != ':')
        return fr__jerr(p, "expected ':'");
      p->pos++;
    }
    enum fr_status rc = fr__jvalue(p, &v->items[v->n], depth + 1);
    if (rc)
      return rc;
    v->n++;
    fr__jws(p);
    if (p->pos < p->n && p->s[p->pos] == ',') {
      p->pos++;
      continue;
    }
    if (p->pos < p->n && p->s[p->pos] == close) {
      p->pos++;
      return FR_OK;
    }
    return fr__jerr(p, object ? "expected ',' or '}'" : "expected ',' or ']'");
  }
}

static enum fr_status fr__jvalue(struct fr__jp *p, struct fr_json *v, int depth) {
  fr__jws(p);
  memset(v, 0, sizeof *v);
  v->offset = p->pos;
  if (p->pos >= p->n)
    return fr__jerr(p, "unexpected end of input");
  char c = p->s[p->pos];
  if (c == '{' || c == '[')
    return fr__jcontainer(p, v, depth, c == '{');
  if (c == '"') {
    v->type = FR_JSON_STRING;
    return fr__jstring(p, &v->str, &v->len);
  }
  static const struct { const char *word; enum fr_json_type type; bool b; } words[] = {
      {"true", FR_JSON_BOOL, true}, {"false", FR_JSON_BOOL, false}, {"null", FR_JSON_NULL, false}};
  for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
    size_t wl = strlen(words[i].word);
    if (p->n - p->pos >= wl && memcmp(p->s + p->pos, words[i].word, wl) == 0) {
      v->type = words[i].type;
      v->b = words[i].b;
      p->pos += wl;
      return FR_OK;
    }
  }
  if (c == '-' || (c >= '0' && c <= '9')) {
    size_t i = p->pos;
    bool integral = true;
    if (p->s[i] == '-')
      i++;
    size_t digits = i;
    while (i < p->n && p->s[i] >= '0' && p->s[i] <= '9')
      i++;
    if (i == digits)
      return fr__jerr(p, "bad number");
    if (i < p->n && p->s[i] == '.') {
      integral = false;
      i++;
      size_t frac = i;
      while (i < p->n && p->s[i] >= '0' && p->s[i] <= '9')
        i++;
      if (i == frac)
        return fr__jerr(p, "bad number");
    }
    if (i < p->n && (p->s[i] == 'e' || p->s[i] == 'E')) {
      integral = false;
      i++;
      if (i < p->n && (p->s[i] == '+' || p->s[i] == '-'))
        i++;
      size_t ex = i;
      while (i < p->n && p->s[i] >= '0' && p->s[i] <= '9')
        i++;
      if (i == ex)
        return fr__jerr(p, "bad number");
    }
    char tmp[64];
    size_t len = i - p->pos;
    if (len >= sizeof tmp)
      return fr__jerr(p, "number too long");
    memcpy(tmp, p->s + p->pos, len);
    tmp[len] = 0;
    v->type = FR_JSON_NUMBER;
    v->num = strtod(tmp, NULL);
    if (integral) {
      errno = 0;
      long long ll = strtoll(tmp, NULL, 10);
      v->is_int = errno == 0;
      v->i = ll;
    }
    p->pos = i;
    return FR_OK;
  }
  return fr__jerr(p, "expected a JSON value");
}

enum fr_status fr_json_parse(struct fr_arena *a, const char *text, size_t len, int max_depth,
                             struct fr_json **out, struct fr_err *err) {
  struct fr__jp p = {a, text, len, 0, max_depth > 0 ? max_depth : 64, err};
  struct fr_json *v = fr_arena_alloc(a, sizeof *v);
  if (!v)
    return fr_errf(err, FR_E_NOMEM, "out of memory parsing JSON");
  enum fr_status rc = fr__jvalue(&p, v, 0);
  if (rc)
    return rc;
  fr__jws(&p);
  if (p.pos != p.n)
    return fr__jerr(&p, "trailing characters after the JSON value");
  *out = v;
  return FR_OK;
}

const struct fr_json *fr_json_get(const struct fr_json *obj, const char *key) {
  if (!obj || obj->type != FR_JSON_OBJECT)
    return NULL;
  for (int i = 0; i < obj->n; i++)
    if (strcmp(obj->keys[i], key) == 0)
      return &obj->items[i];
  return NULL;
}

double fr_json_num(const struct fr_json *obj, const char *key, double def) {
  const struct fr_json *v = fr_json_get(obj, key);
  return v && v->type == FR_JSON_NUMBER ? v->num : def;
}
const char *fr_json_str(const struct fr_json *obj, const char *key, const char *def) {
  const struct fr_json *v = fr_json_get(obj, key);
  return v && v->type == FR_JSON_STRING ? v->str : def;
}
bool fr_json_bool(const struct fr_json *obj, const char *key, bool def) {
  const struct fr_json *v = fr_json_get(obj, key);
  return v && v->type == FR_JSON_BOOL ? v->b : def;
}
