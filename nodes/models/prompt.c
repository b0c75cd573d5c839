/* Prompt weighting and textual-inversion embeddings (prompt.h): ComfyUI's parse_parentheses,
 * token_weights, escape_important / unescape_important and the window packing of tokenize_with_weights,
 * re-implemented from their definitions. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "nodes/models/prompt.h"

/* Escaped parentheses while parsing: "\0\1" and "\0\2" in ComfyUI; here two bytes that cannot occur in a C
 * string's content position pairs ("\x01\x01" / "\x01\x02"), mapped back after parsing. */
#define FR__ESC 0x01

bool fr_prompt_has_syntax(const char *text) {
  return strchr(text, '(') || strchr(text, ')') || strstr(text, "embedding:");
}

/* ---- parsing ---- */

struct fr__segs {
  struct fr_prompt_seg *v;
  int n, cap;
  bool oom;
};

static void fr__segs_add(struct fr__segs *s, const char *text, size_t len, double w) {
  if (s->oom)
    return;
  if (s->n == s->cap) {
    int cap = s->cap ? s->cap * 2 : 8;
    struct fr_prompt_seg *v = fr_realloc(s->v, (size_t)cap * sizeof *v);
    if (!v) {
      s->oom = true;
      return;
    }
    s->v = v, s->cap = cap;
  }
  /* unescape_important: \x01\x01 -> ')', \x01\x02 -> '(' */
  char *t = fr_malloc(len + 1);
  if (!t) {
    s->oom = true;
    return;
  }
  size_t k = 0;
  for (size_t i = 0; i < len; i++) {
    if (text[i] == FR__ESC && i + 1 < len && (text[i + 1] == 1 || text[i + 1] == 2)) {
      t[k++] = text[i + 1] == 1 ? ')' : '(';
      i++;
    } else {
      t[k++] = text[i];
    }
  }
  t[k] = 0;
  s->v[s->n].text = t;
  s->v[s->n].weight = w;
  s->n++;
}

/* Python's float() of s[0..len): optional white space around a decimal number, "inf", "infinity" or
 * "nan" with an optional sign. */
static bool fr__py_float(const char *s, size_t len, double *out) {
  char buf[64];
  while (len && isspace((unsigned char)*s))
    s++, len--;
  while (len && isspace((unsigned char)s[len - 1]))
    len--;
  if (len == 0 || len >= sizeof buf)
    return false;
  memcpy(buf, s, len);
  buf[len] = 0;
  for (size_t i = 0; i < len; i++) /* strtod also reads hex and nan(...), which Python does not */
    if (buf[i] == 'x' || buf[i] == 'X' || buf[i] == '(')
      return false;
  char *end = NULL;
  double v = strtod(buf, &end);
  if (end != buf + len)
    return false;
  *out = v;
  return true;
}

/* token_weights(s[0..len), w): parse_parentheses splits at top-level groups; a group "(...)" multiplies
 * the weight by 1.1, or takes the number after its last ':' (not at position 0) when that is one. */
static void fr__token_weights(struct fr__segs *out, const char *s, size_t len, double w, int depth) {
  size_t start = 0; /* current item: s[start..i) */
  int nest = 0;
  size_t i = 0;
  /* collect the items of parse_parentheses, then weigh each */
  struct item {
    size_t a, b;
  } *items = NULL;
  int ni = 0, cap = 0;
  for (i = 0; i < len; i++) {
    char ch = s[i];
    bool cut_before = false, cut_after = false;
    if (ch == '(') {
      if (nest == 0)
        cut_before = true; /* "(" starts a new item */
      nest++;
    } else if (ch == ')') {
      nest--;
      if (nest == 0)
        cut_after = true;
    }
    if (cut_before && i > start) {
      if (ni == cap) {
        cap = cap ? cap * 2 : 8;
        struct item *p = fr_realloc(items, (size_t)cap * sizeof *items);
        if (!p) {
          out->oom = true;
          fr_free(items);
          return;
        }
        items = p;
      }
      items[ni].a = start, items[ni].b = i, ni++;
      start = i;
    }
    if (cut_after) {
      if (ni == cap) {
        cap = cap ? cap * 2 : 8;
        struct item *p = fr_realloc(items, (size_t)cap * sizeof *items);
        if (!p) {
          out->oom = true;
          fr_free(items);
          return;
        }
        items = p;
      }
      items[ni].a = start, items[ni].b = i + 1, ni++;
      start = i + 1;
    }
  }
  if (start < len) {
    if (ni == cap) {
      struct item *p = fr_realloc(items, (size_t)(cap + 1) * sizeof *items);
      if (!p) {
        out->oom = true;
        fr_free(items);
        return;
      }
      items = p;
    }
    items[ni].a = start, items[ni].b = len, ni++;
  }
  for (int k = 0; k < ni && !out->oom; k++) {
    const char *x = s + items[k].a;
    size_t n = items[k].b - items[k].a;
    if (n >= 2 && x[0] == '(' && x[n - 1] == ')' && depth < 200) {
      x++, n -= 2;
      double ww = w * 1.1;
      size_t colon = n;
      for (size_t j = n; j-- > 0;)
        if (x[j] == ':') {
          colon = j;
          break;
        }
      double v;
      if (colon < n && colon > 0 && fr__py_float(x + colon + 1, n - colon - 1, &v)) {
        ww = v;
        n = colon;
      }
      fr__token_weights(out, x, n, ww, depth + 1);
    } else {
      fr__segs_add(out, x, n, w);
    }
  }
  fr_free(items);
}

void fr_prompt_segs_free(struct fr_prompt_seg *segs, int n) {
  for (int i = 0; segs && i < n; i++)
    fr_free(segs[i].text);
  fr_free(segs);
}

enum fr_status fr_prompt_parse(const char *text, struct fr_prompt_seg **segs, int *n, struct fr_err *err) {
  *segs = NULL;
  *n = 0;
  size_t len = strlen(text);
  char *esc = fr_malloc(len + 1); /* escape_important: "\)" -> \x01\x01, "\(" -> \x01\x02 */
  if (!esc)
    return fr_errf(err, FR_E_NOMEM, "out of memory parsing the prompt");
  size_t k = 0;
  for (size_t i = 0; i < len; i++) {
    if (text[i] == '\\' && (text[i + 1] == ')' || text[i + 1] == '(')) {
      esc[k++] = FR__ESC;
      esc[k++] = text[i + 1] == ')' ? 1 : 2;
      i++;
    } else {
      esc[k++] = text[i];
    }
  }
  struct fr__segs s = {0};
  fr__token_weights(&s, esc, k, 1.0, 0);
  fr_free(esc);
  if (s.oom) {
    fr_prompt_segs_free(s.v, s.n);
    return fr_errf(err, FR_E_NOMEM, "out of memory parsing the prompt");
  }
  *segs = s.v;
  *n = s.n;
  return FR_OK;
}

/* ---- tokens and windows ---- */

struct fr__tok {
  int32_t id; /* or vocab + k: row k of the extra vectors */
  float w;
};

struct fr__group {
  struct fr__tok *t;
  int n;
};

struct fr__state {
  struct fr__group *g;
  int ng, capg;
  float *extra;
  int n_extra, width;
  bool oom;
};

static void fr__add_group(struct fr__state *st, struct fr__tok *t, int n) {
  if (st->oom || n == 0) {
    fr_free(t);
    return;
  }
  if (st->ng == st->capg) {
    int cap = st->capg ? st->capg * 2 : 16;
    struct fr__group *g = fr_realloc(st->g, (size_t)cap * sizeof *g);
    if (!g) {
      st->oom = true;
      fr_free(t);
      return;
    }
    st->g = g, st->capg = cap;
  }
  st->g[st->ng].t = t;
  st->g[st->ng].n = n;
  st->ng++;
}

/* A word's tokens (ids without BOS/EOS) at weight w as one group. */
static enum fr_status fr__word(struct fr__state *st, const struct fr_tokenizer *tok, const char *word,
                               int32_t pad, double w, struct fr_err *err) {
  int32_t *ids = NULL;
  int n = 0;
  enum fr_status rc = fr_tokenizer_encode(tok, word, pad, &ids, &n, err);
  if (rc)
    return rc;
  struct fr__tok *t = n > 2 ? fr_malloc((size_t)(n - 2) * sizeof *t) : NULL;
  if (n > 2 && !t) {
    fr_free(ids);
    return fr_errf(err, FR_E_NOMEM, "out of memory tokenizing the prompt");
  }
  for (int i = 1; i < n - 1; i++)
    t[i - 1].id = ids[i], t[i - 1].w = (float)w;
  fr_free(ids);
  fr__add_group(st, t, n - 2);
  return st->oom ? fr_errf(err, FR_E_NOMEM, "out of memory tokenizing the prompt") : FR_OK;
}

/* "embedding:NAME": the vectors as one group; what follows the name that is not part of it (from a '<' or
 * '[', or commas after it) is returned in *leftover (a pointer into word, "" when none). ComfyUI's
 * _try_get_embedding. A missing embedding is a warning and no tokens. */
static enum fr_status fr__embedding(struct fr__state *st, const char *word, int vocab, double w,
                                    const struct fr_prompt_embeddings *emb, char *name, size_t name_cap,
                                    const char **leftover, struct fr_err *err) {
  const char *p = word + strlen("embedding:");
  size_t n = strcspn(p, "<[");
  *leftover = p + n;
  if (n >= name_cap)
    n = name_cap - 1;
  memcpy(name, p, n);
  name[n] = 0;
  float *vecs = NULL;
  int nv = 0;
  struct fr_err e2 = {{0}};
  enum fr_status rc = emb->lookup(emb->user, name, st->width, &vecs, &nv, &e2);
  if (rc == FR_E_NOTFOUND) {
    size_t a = strspn(name, ","), b = strlen(name);
    while (b > a && name[b - 1] == ',')
      b--;
    if (b - a < strlen(name)) { /* "embedding:name," : the name without commas; as many bytes left over */
      char stripped[512];
      snprintf(stripped, sizeof stripped, "%.*s", (int)(b - a), name + a);
      memset(&e2, 0, sizeof e2);
      rc = emb->lookup(emb->user, stripped, st->width, &vecs, &nv, &e2);
      *leftover = word + strlen("embedding:") + (b - a);
    }
  }
  if (rc == FR_E_NOTFOUND || rc == FR_E_SHAPE || rc == FR_E_FORMAT) {
    if (emb->warn) {
      char msg[1200];
      snprintf(msg, sizeof msg, "embedding:%s %s, ignoring (%s)", name,
               rc == FR_E_NOTFOUND ? "does not exist" : "cannot be used", e2.msg);
      emb->warn(emb->user, msg);
    }
    return FR_OK;
  }
  if (rc) {
    *err = e2;
    return rc;
  }
  float *ex = fr_realloc(st->extra, (size_t)(st->n_extra + nv) * (size_t)st->width * sizeof(float));
  struct fr__tok *t = fr_malloc((size_t)nv * sizeof *t);
  if (ex)
    st->extra = ex;
  if (!ex || !t) {
    fr_free(vecs);
    fr_free(t);
    return fr_errf(err, FR_E_NOMEM, "out of memory for embedding %s", name);
  }
  memcpy(st->extra + (size_t)st->n_extra * (size_t)st->width, vecs,
         (size_t)nv * (size_t)st->width * sizeof(float));
  fr_free(vecs);
  for (int i = 0; i < nv; i++)
    t[i].id = vocab + st->n_extra + i, t[i].w = (float)w;
  st->n_extra += nv;
  fr__add_group(st, t, nv);
  return st->oom ? fr_errf(err, FR_E_NOMEM, "out of memory tokenizing the prompt") : FR_OK;
}

void fr_prompt_tokens_free(struct fr_prompt_tokens *t) {
  if (!t)
    return;
  fr_free(t->ids);
  fr_free(t->weights);
  fr_free(t->extra);
  memset(t, 0, sizeof *t);
}

/* Packs the groups into windows (tokenize_with_weights' batching with max_length 77, an end token,
 * max_word_length 8, padding to 77). */
static enum fr_status fr__pack(struct fr__state *st, int32_t pad, struct fr_prompt_tokens *out,
                               struct fr_err *err) {
  int cap = 4;
  int32_t *ids = fr_malloc((size_t)cap * FR_CLIP_CTX * sizeof *ids);
  float *ws = fr_malloc((size_t)cap * FR_CLIP_CTX * sizeof *ws);
  int nw = 1, len = 0; /* current window: nw - 1, len tokens in it */
  if (!ids || !ws)
    goto oom;
  ids[0] = FR_CLIP_BOS, ws[0] = 1, len = 1;
#define FR__PUT(id_, w_)                                                                                     \
  (ids[(nw - 1) * FR_CLIP_CTX + len] = (id_), ws[(nw - 1) * FR_CLIP_CTX + len] = (w_), len++)
  for (int g = 0; g < st->ng; g++) {
    const struct fr__tok *t = st->g[g].t;
    int n = st->g[g].n;
    bool large = n >= 8;
    while (n > 0) {
      if (n + len > FR_CLIP_CTX - 1) {
        int remaining = FR_CLIP_CTX - len - 1;
        if (large) { /* split the word: what fits, EOS */
          for (int i = 0; i < remaining; i++)
            FR__PUT(t[i].id, t[i].w);
          FR__PUT(FR_CLIP_EOS, 1.0f);
          t += remaining, n -= remaining;
        } else { /* EOS and padding; the word goes to the next window */
          FR__PUT(FR_CLIP_EOS, 1.0f);
          while (len < FR_CLIP_CTX)
            FR__PUT(pad, 1.0f);
        }
        if (nw == cap) {
          cap *= 2;
          int32_t *ni = fr_realloc(ids, (size_t)cap * FR_CLIP_CTX * sizeof *ids);
          if (ni)
            ids = ni;
          float *nws = ni ? fr_realloc(ws, (size_t)cap * FR_CLIP_CTX * sizeof *ws) : NULL;
          if (nws)
            ws = nws;
          if (!ni || !nws)
            goto oom;
        }
        nw++, len = 0;
        FR__PUT(FR_CLIP_BOS, 1.0f);
      } else {
        for (int i = 0; i < n; i++)
          FR__PUT(t[i].id, t[i].w);
        n = 0;
      }
    }
  }
  FR__PUT(FR_CLIP_EOS, 1.0f);
  while (len < FR_CLIP_CTX)
    FR__PUT(pad, 1.0f);
#undef FR__PUT
  out->n_windows = nw;
  out->ids = ids;
  out->weights = ws;
  out->has_weights = false;
  for (int i = 0; i < nw * FR_CLIP_CTX; i++)
    if (ws[i] != 1.0f)
      out->has_weights = true;
  return FR_OK;
oom:
  fr_free(ids);
  fr_free(ws);
  return fr_errf(err, FR_E_NOMEM, "out of memory tokenizing the prompt");
}

enum fr_status fr_prompt_tokenize(const struct fr_tokenizer *tok, const char *text, int32_t pad, int vocab,
                                  int width, const struct fr_prompt_embeddings *emb,
                                  struct fr_prompt_tokens *out, struct fr_err *err) {
  memset(out, 0, sizeof *out);
  struct fr_prompt_seg *segs = NULL;
  int nseg = 0;
  enum fr_status rc = fr_prompt_parse(text, &segs, &nseg, err);
  if (rc)
    return rc;
  struct fr__state st = {.width = width};
  for (int s = 0; s < nseg && !rc; s++) {
    /* words: split at ' ' after newlines became spaces, empty ones dropped */
    char *seg = segs[s].text;
    for (char *c = seg; *c; c++)
      if (*c == '\n')
        *c = ' ';
    char *save = NULL;
    for (char *word = strtok_r(seg, " ", &save); word && !rc; word = strtok_r(NULL, " ", &save)) {
      if (emb && !strncmp(word, "embedding:", 10)) {
        char name[512];
        const char *left = "";
        rc = fr__embedding(&st, word, vocab, segs[s].weight, emb, name, sizeof name, &left, err);
        if (rc || !*left)
          continue;
        word = (char *)left;
      }
      rc = fr__word(&st, tok, word, pad, segs[s].weight, err);
    }
  }
  fr_prompt_segs_free(segs, nseg);
  if (!rc && st.oom)
    rc = fr_errf(err, FR_E_NOMEM, "out of memory tokenizing the prompt");
  if (!rc)
    rc = fr__pack(&st, pad, out, err);
  for (int g = 0; g < st.ng; g++)
    fr_free(st.g[g].t);
  fr_free(st.g);
  if (rc) {
    fr_free(st.extra);
    fr_prompt_tokens_free(out);
    return rc;
  }
  out->extra = st.extra;
  out->n_extra = st.n_extra;
  return FR_OK;
}
