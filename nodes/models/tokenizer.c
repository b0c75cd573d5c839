/* CLIP BPE tokenizer: see tokenizer.h for what it reproduces and its limits. */
#include "nodes/models/tokenizer.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/json.h"
#include "nodes/models/tokenizer_unicode.h"

/* The reference keeps merges[1 : 49152 - 256 - 2 + 1] of bpe_simple_vocab_16e6.txt: 48,894 merges. */
#define FR__GZ_MERGES (49152 - 256 - 2)
#define FR__MAX_VOCAB (1 << 20)
#define FR__WORD_MAX_TOKENS 8 /* ComfyUI's max_word_length: longer words may be split across windows */

/* string -> id, open addressing; keys live in the tokenizer's arena */
struct fr__strmap {
  const char **keys;
  int32_t *vals;
  size_t cap; /* power of two */
};

/* (left id, right id) -> merge rank and merged id */
struct fr__pairmap {
  uint64_t *keys; /* (a << 32 | b) + 1; 0 = empty */
  int32_t *rank, *merged;
  size_t cap;
};

struct fr_tokenizer {
  struct fr_arena *arena;
  struct fr__strmap vocab;
  struct fr__pairmap merges;
  const char **tokens; /* id -> string (NULL for holes in a sparse vocab.json) */
  int vocab_size;
  int32_t byte_id[256], byte_end_id[256]; /* single-byte symbols, plain and with "</w>" */
  int32_t bos, eos, pad;
};

/* ---------- hashing ---------- */

static uint64_t fr__hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

static uint64_t fr__hash_u64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}

static size_t fr__pow2_at_least(size_t n) {
  size_t c = 16;
  while (c < n)
    c <<= 1;
  return c;
}

static bool fr__strmap_init(struct fr__strmap *m, size_t n) {
  m->cap = fr__pow2_at_least(n * 2 + 1);
  m->keys = fr_calloc(m->cap, sizeof *m->keys);
  m->vals = fr_calloc(m->cap, sizeof *m->vals);
  return m->keys && m->vals;
}

static int32_t fr__strmap_get(const struct fr__strmap *m, const char *key) {
  if (!m->cap)
    return -1;
  for (size_t i = fr__hash_str(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    if (!m->keys[i])
      return -1;
    if (strcmp(m->keys[i], key) == 0)
      return m->vals[i];
  }
}

/* Inserts or overwrites; the map never fills (sized for 2x its entries up front). */
static void fr__strmap_put(struct fr__strmap *m, const char *key, int32_t val) {
  size_t i = fr__hash_str(key) & (m->cap - 1);
  while (m->keys[i] && strcmp(m->keys[i], key) != 0)
    i = (i + 1) & (m->cap - 1);
  m->keys[i] = key;
  m->vals[i] = val;
}

static bool fr__pairmap_init(struct fr__pairmap *m, size_t n) {
  m->cap = fr__pow2_at_least(n * 2 + 1);
  m->keys = fr_calloc(m->cap, sizeof *m->keys);
  m->rank = fr_calloc(m->cap, sizeof *m->rank);
  m->merged = fr_calloc(m->cap, sizeof *m->merged);
  return m->keys && m->rank && m->merged;
}

static size_t fr__pairmap_slot(const struct fr__pairmap *m, int32_t a, int32_t b) {
  uint64_t k = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
  size_t i = fr__hash_u64(k) & (m->cap - 1);
  while (m->keys[i] && m->keys[i] != k)
    i = (i + 1) & (m->cap - 1);
  return i;
}

/* The first (lowest-rank) definition of a pair wins, as in a dict built from the merges in order. */
static void fr__pairmap_put(struct fr__pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t merged) {
  size_t i = fr__pairmap_slot(m, a, b);
  if (m->keys[i])
    return;
  m->keys[i] = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
  m->rank[i] = rank;
  m->merged[i] = merged;
}

/* ---------- UTF-8 and character classes ---------- */

#define FR__BAD_BYTE 0xFFFFFFFFu /* an invalid UTF-8 byte: kept as one "other" character */

/* Decodes one character at s (n bytes left, n >= 1); *len receives its byte length (1 for a bad byte). */
static uint32_t fr__utf8_decode(const unsigned char *s, size_t n, int *len) {
  uint32_t c = s[0];
  int need;
  uint32_t min;
  if (c < 0x80) {
    *len = 1;
    return c;
  } else if ((c & 0xE0) == 0xC0) {
    need = 1, c &= 0x1F, min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    need = 2, c &= 0x0F, min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    need = 3, c &= 0x07, min = 0x10000;
  } else {
    *len = 1;
    return FR__BAD_BYTE;
  }
  if ((size_t)need >= n) {
    *len = 1;
    return FR__BAD_BYTE;
  }
  for (int i = 1; i <= need; i++) {
    if ((s[i] & 0xC0) != 0x80) {
      *len = 1;
      return FR__BAD_BYTE;
    }
    c = (c << 6) | (s[i] & 0x3F);
  }
  if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) {
    *len = 1;
    return FR__BAD_BYTE;
  }
  *len = need + 1;
  return c;
}

static void fr__utf8_put(struct fr_buf *b, uint32_t c) {
  char s[4];
  if (c < 0x80) {
    s[0] = (char)c;
    fr_buf_append(b, s, 1);
  } else if (c < 0x800) {
    s[0] = (char)(0xC0 | (c >> 6)), s[1] = (char)(0x80 | (c & 0x3F));
    fr_buf_append(b, s, 2);
  } else if (c < 0x10000) {
    s[0] = (char)(0xE0 | (c >> 12)), s[1] = (char)(0x80 | ((c >> 6) & 0x3F)),
    s[2] = (char)(0x80 | (c & 0x3F));
    fr_buf_append(b, s, 3);
  } else {
    s[0] = (char)(0xF0 | (c >> 18)), s[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    s[2] = (char)(0x80 | ((c >> 6) & 0x3F)), s[3] = (char)(0x80 | (c & 0x3F));
    fr_buf_append(b, s, 4);
  }
}

static bool fr__in_ranges(uint32_t c, const uint32_t (*r)[2], size_t n) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (c < r[mid][0])
      hi = mid;
    else if (c > r[mid][1])
      lo = mid + 1;
    else
      return true;
  }
  return false;
}

#define FR__COUNT(a) (sizeof(a) / sizeof((a)[0]))

static bool fr__is_letter(uint32_t c) {
  return c != FR__BAD_BYTE && fr__in_ranges(c, fr__uni_letters, FR__COUNT(fr__uni_letters));
}
static bool fr__is_number(uint32_t c) {
  return c != FR__BAD_BYTE && fr__in_ranges(c, fr__uni_numbers, FR__COUNT(fr__uni_numbers));
}
/* Unicode's White_Space property, which is what transformers' CLIPTokenizer (the `tokenizers` library's
 * Rust regex) matches with \s in its cleanup and its pre-tokenizer pattern. Python's str.isspace() also
 * counts U+001C..U+001F; the Rust \s does not, so they are symbols here (byte-level BPE encodes them). */
static bool fr__is_space(uint32_t c) {
  return (c >= 9 && c <= 13) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

/* Simple (one-to-one) lower-case mapping; U+0130 is handled by the caller (it lowers to two characters). */
static uint32_t fr__lower(uint32_t c) {
  if (c == FR__BAD_BYTE)
    return c;
  size_t lo = 0, hi = FR__COUNT(fr__uni_lower);
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    const int32_t *r = fr__uni_lower[mid];
    if (c < (uint32_t)r[0])
      hi = mid;
    else if (c > (uint32_t)r[1])
      lo = mid + 1;
    else
      return (c - (uint32_t)r[0]) % (uint32_t)r[3] == 0 ? (uint32_t)((int32_t)c + r[2]) : c;
  }
  return c;
}

/* ---------- NFC (what transformers' normalizer does first) ---------- */

enum {
  FR__S0 = 0xAC00,
  FR__L0 = 0x1100,
  FR__V0 = 0x1161,
  FR__T0 = 0x11A7,
  FR__NL = 19,
  FR__NV = 21,
  FR__NT = 28
};
#define FR__NS (FR__NL * FR__NV * FR__NT) /* Hangul syllables: algorithmic (de)composition */

static uint32_t fr__ccc(uint32_t c) {
  if (c < 0x300 || c > 0x10FFFF)
    return 0;
  size_t lo = 0, hi = FR__COUNT(fr__uni_ccc);
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (c < fr__uni_ccc[mid][0])
      hi = mid;
    else if (c > fr__uni_ccc[mid][1])
      lo = mid + 1;
    else
      return fr__uni_ccc[mid][2];
  }
  return 0;
}

/* The composite of a followed by b, or 0. */
static uint32_t fr__compose(uint32_t a, uint32_t b) {
  if (a >= FR__L0 && a < FR__L0 + FR__NL && b >= FR__V0 && b < FR__V0 + FR__NV)
    return FR__S0 + ((a - FR__L0) * FR__NV + (b - FR__V0)) * FR__NT;
  if (a >= FR__S0 && a < FR__S0 + FR__NS && (a - FR__S0) % FR__NT == 0 && b > FR__T0 && b < FR__T0 + FR__NT)
    return a + (b - FR__T0);
  size_t lo = 0, hi = FR__COUNT(fr__uni_comp);
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    const uint32_t *r = fr__uni_comp[mid];
    if (a < r[0] || (a == r[0] && b < r[1]))
      hi = mid;
    else if (a > r[0] || b > r[1])
      lo = mid + 1;
    else
      return r[2];
  }
  return 0;
}

/* Appends c's full canonical decomposition to v (room for 4), returns how many. */
static int fr__decompose(uint32_t c, uint32_t *v) {
  if (c >= FR__S0 && c < FR__S0 + FR__NS) {
    uint32_t i = c - FR__S0, t = i % FR__NT;
    v[0] = FR__L0 + i / (FR__NV * FR__NT);
    v[1] = FR__V0 + i % (FR__NV * FR__NT) / FR__NT;
    v[2] = FR__T0 + t;
    return t ? 3 : 2;
  }
  size_t lo = 0, hi = c < 0xC0 ? 0 : FR__COUNT(fr__uni_decomp);
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (c < fr__uni_decomp[mid][0])
      hi = mid;
    else if (c > fr__uni_decomp[mid][0])
      lo = mid + 1;
    else {
      int n = 0;
      while (n < 4 && fr__uni_decomp[mid][1 + n])
        v[n] = fr__uni_decomp[mid][1 + n], n++;
      return n;
    }
  }
  v[0] = c;
  return 1;
}

/* Unicode normalisation form C of text (UAX #15: full canonical decomposition, canonical ordering of
 * combining marks, canonical composition). An invalid UTF-8 byte is kept as it is (held as 0x80000000 |
 * byte: class 0, composes with nothing). Text without a character from U+0300 up is already NFC and comes
 * back as a copy. Returns a fr_malloc'd string (*len bytes) or NULL (out of memory). */
static char *fr__nfc(const char *text, size_t *len) {
  const unsigned char *s = (const unsigned char *)text;
  size_t n = strlen(text);
  bool plain = true;
  for (size_t i = 0; i < n && plain; i++)
    plain = s[i] < 0xCC; /* lead bytes below 0xCC encode characters below U+0300 */
  if (plain) {
    *len = n;
    return fr_strdup(text);
  }
  uint32_t *v = fr_malloc((4 * n + 4) * sizeof *v);
  if (!v)
    return NULL;
  size_t m = 0;
  for (size_t i = 0; i < n;) { /* decompose; insert each combining mark at its canonical place */
    int l;
    uint32_t c = fr__utf8_decode(s + i, n - i, &l), d[4];
    int k = c == FR__BAD_BYTE ? (d[0] = 0x80000000u | s[i], 1) : fr__decompose(c, d);
    for (int j = 0; j < k; j++) {
      uint32_t cc = fr__ccc(d[j]);
      size_t at = m++;
      for (; cc && at > 0 && fr__ccc(v[at - 1]) > cc; at--)
        v[at] = v[at - 1];
      v[at] = d[j];
    }
    i += (size_t)l;
  }
  /* compose each character with the last starter unless a character between them blocks it (a starter, or
   * a mark of the same or a higher class) */
  size_t out = 0, starter = SIZE_MAX;
  uint32_t last_cc = 0;
  for (size_t i = 0; i < m; i++) {
    uint32_t c = v[i], cc = fr__ccc(c);
    if (starter != SIZE_MAX && (out == starter + 1 || (last_cc != 0 && last_cc < cc))) {
      uint32_t comp = fr__compose(v[starter], c);
      if (comp) {
        v[starter] = comp;
        continue;
      }
    }
    if (cc == 0)
      starter = out;
    last_cc = cc;
    v[out++] = c;
  }
  struct fr_buf b = {0};
  for (size_t i = 0; i < out; i++) {
    if (v[i] & 0x80000000u) {
      unsigned char byte = (unsigned char)(v[i] & 0xFF);
      fr_buf_append(&b, &byte, 1);
    } else {
      fr__utf8_put(&b, v[i]);
    }
  }
  fr_free(v);
  if (b.oom) {
    fr_buf_free(&b);
    return NULL;
  }
  if (!b.data) {
    *len = 0;
    return fr_strdup("");
  }
  return fr_buf_take(&b, len);
}

/* ---------- text cleanup ---------- */

/* Collapse white space, strip, lower-case. Returns a fr_malloc'd string or NULL (OOM). No HTML unescaping:
 * open_clip's SimpleTokenizer unescapes entities, but transformers' CLIPTokenizer (what diffusers and
 * ComfyUI run) does not, so "&amp;" stays the three pre-tokens "&", "amp", ";". */
static char *fr__clean(const char *text, size_t *len) {
  struct fr_buf c = {0};
  const unsigned char *s = (const unsigned char *)text;
  size_t n = strlen(text);
  bool pending_space = false;
  for (size_t i = 0; i < n;) {
    int l;
    uint32_t cp = fr__utf8_decode(s + i, n - i, &l);
    if (fr__is_space(cp)) {
      pending_space = c.len > 0; /* leading space is stripped, inner runs become one space */
      i += (size_t)l;
      continue;
    }
    if (pending_space)
      fr_buf_putc(&c, ' ');
    pending_space = false;
    if (cp == FR__BAD_BYTE) {
      fr_buf_append(&c, s + i, 1);
    } else if (cp == 0x130) { /* İ lowers to i + combining dot above */
      fr__utf8_put(&c, 'i');
      fr__utf8_put(&c, 0x307);
    } else {
      fr__utf8_put(&c, fr__lower(cp));
    }
    i += (size_t)l;
  }
  if (c.oom) {
    fr_buf_free(&c);
    return NULL;
  }
  if (!c.data) {
    *len = 0;
    return fr_strdup("");
  }
  return fr_buf_take(&c, len);
}

/* ---------- BPE ---------- */

/* Growable id list with a per-id "starts a white-space separated word" flag (for ComfyUI chunking). */
struct fr__ids {
  int32_t *v;
  unsigned char *word_start;
  int n, cap;
  bool oom;
};

static void fr__ids_push(struct fr__ids *l, int32_t id, bool word_start) {
  if (l->oom)
    return;
  if (l->n == l->cap) {
    int cap = l->cap ? l->cap * 2 : 64;
    int32_t *v = fr_realloc(l->v, (size_t)cap * sizeof *v);
    if (!v) {
      l->oom = true;
      return;
    }
    l->v = v;
    unsigned char *w = fr_realloc(l->word_start, (size_t)cap);
    if (!w) {
      l->oom = true;
      return;
    }
    l->word_start = w;
    l->cap = cap;
  }
  l->v[l->n] = id;
  l->word_start[l->n] = word_start;
  l->n++;
}

/* BPE over one pre-token's bytes; appends the resulting ids. sym is scratch of at least n entries. */
static void fr__bpe(const struct fr_tokenizer *tok, const unsigned char *s, size_t n, int32_t *sym,
                    struct fr__ids *out, bool word_start) {
  size_t m = n;
  for (size_t i = 0; i < n; i++)
    sym[i] = i + 1 == n ? tok->byte_end_id[s[i]] : tok->byte_id[s[i]];
  for (;;) {
    int32_t best = INT32_MAX, a = -1, b = -1, merged = -1;
    for (size_t i = 0; i + 1 < m; i++) {
      size_t k = fr__pairmap_slot(&tok->merges, sym[i], sym[i + 1]);
      if (tok->merges.keys[k] && tok->merges.rank[k] < best) {
        best = tok->merges.rank[k];
        a = sym[i], b = sym[i + 1], merged = tok->merges.merged[k];
      }
    }
    if (a < 0)
      break;
    size_t w = 0; /* merge every occurrence of (a, b), left to right */
    for (size_t i = 0; i < m;) {
      if (i + 1 < m && sym[i] == a && sym[i + 1] == b) {
        sym[w++] = merged;
        i += 2;
      } else {
        sym[w++] = sym[i++];
      }
    }
    m = w;
  }
  for (size_t i = 0; i < m; i++)
    fr__ids_push(out, sym[i], word_start && i == 0);
}

static bool fr__starts_with(const char *s, size_t n, const char *p) {
  size_t k = strlen(p);
  return n >= k && memcmp(s, p, k) == 0;
}

/* Cleanup, pre-tokenisation and BPE of one piece of text between special tokens; appends its ids. */
static enum fr_status fr__encode_segment(const struct fr_tokenizer *tok, const char *text, size_t len,
                                         bool word_start, struct fr__ids *out, struct fr_err *err) {
  char *raw = fr_strndup(text, len);
  size_t n = 0;
  char *nfc = raw ? fr__nfc(raw, &n) : NULL; /* transformers: NFC, then white space, then lower case */
  char *t = nfc ? fr__clean(nfc, &n) : NULL;
  int32_t *sym = t ? fr_malloc((n + 1) * sizeof *sym) : NULL;
  fr_free(raw);
  fr_free(nfc);
  if (!sym) {
    fr_free(t);
    return fr_errf(err, FR_E_NOMEM, "out of memory tokenizing a %zu-byte prompt", len);
  }
  const unsigned char *s = (const unsigned char *)t;
  for (size_t i = 0; i < n;) {
    int l;
    uint32_t c = fr__utf8_decode(s + i, n - i, &l);
    if (fr__is_space(c)) { /* after cleanup only single spaces remain */
      word_start = true;
      i += (size_t)l;
      continue;
    }
    size_t start = i;
    if (c == '\'') {
      static const char *const contr[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
      size_t k = 0;
      for (size_t j = 0; j < FR__COUNT(contr) && !k; j++)
        if (fr__starts_with(t + i, n - i, contr[j]))
          k = strlen(contr[j]);
      if (k) {
        fr__bpe(tok, s + i, k, sym, out, word_start);
        word_start = false;
        i += k;
        continue;
      }
    }
    if (fr__is_letter(c)) {
      i += (size_t)l;
      while (i < n && fr__is_letter(fr__utf8_decode(s + i, n - i, &l)))
        i += (size_t)l;
    } else if (fr__is_number(c)) {
      i += (size_t)l;
    } else {
      i += (size_t)l;
      while (i < n) {
        uint32_t d = fr__utf8_decode(s + i, n - i, &l);
        if (fr__is_space(d) || fr__is_letter(d) || fr__is_number(d))
          break;
        i += (size_t)l;
      }
    }
    fr__bpe(tok, s + start, i - start, sym, out, word_start);
    word_start = false;
  }
  fr_free(sym);
  fr_free(t);
  return FR_OK;
}

/* Content ids (no BOS/EOS added) of text. As transformers does, special tokens are split out of the raw
 * text before any cleanup: <|startoftext|>, <|endoftext|> and the pad token when it is another token (SDXL's
 * tokenizer_2 pads with "!", so every "!" in a prompt becomes id 0 there). */
static enum fr_status fr__encode(const struct fr_tokenizer *tok, const char *text, int32_t pad_id,
                                 struct fr__ids *out, struct fr_err *err) {
  const char *special[3] = {"<|startoftext|>", "<|endoftext|>", NULL};
  int32_t special_id[3] = {tok->bos, tok->eos, pad_id};
  if (pad_id >= 0 && pad_id < tok->vocab_size && pad_id != tok->bos && pad_id != tok->eos &&
      tok->tokens[pad_id])
    special[2] = tok->tokens[pad_id];
  if (!text)
    text = "";
  size_t seg = 0, len = strlen(text);
  bool word_start = true;
  enum fr_status rc = FR_OK;
  for (size_t i = 0; i <= len && !rc;) {
    int hit = -1;
    for (int k = 0; k < 3 && hit < 0 && i < len; k++)
      if (special[k] && special[k][0] && strncmp(text + i, special[k], strlen(special[k])) == 0)
        hit = k;
    if (hit < 0 && i < len) {
      i++;
      continue;
    }
    if (i > seg)
      rc = fr__encode_segment(tok, text + seg, i - seg, word_start, out, err);
    if (hit < 0)
      break;
    /* a special token starts a word when white space (or nothing) precedes it */
    word_start =
        i == 0 || text[i - 1] == ' ' || text[i - 1] == '\t' || text[i - 1] == '\n' || text[i - 1] == '\r';
    fr__ids_push(out, special_id[hit], word_start);
    i += strlen(special[hit]);
    seg = i;
    word_start = i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r');
  }
  if (!rc && out->oom)
    rc = fr_errf(err, FR_E_NOMEM, "out of memory tokenizing a prompt");
  return rc;
}

enum fr_status fr_tokenizer_encode(const struct fr_tokenizer *tok, const char *text, int32_t pad_id,
                                   int32_t **ids, int *n, struct fr_err *err) {
  *ids = NULL;
  *n = 0;
  if (pad_id < 0)
    pad_id = tok->pad;
  struct fr__ids l = {0};
  fr__ids_push(&l, tok->bos, false);
  enum fr_status rc = fr__encode(tok, text, pad_id, &l, err);
  if (!rc) {
    fr__ids_push(&l, tok->eos, false);
    if (l.oom)
      rc = fr_errf(err, FR_E_NOMEM, "out of memory tokenizing a prompt");
  }
  fr_free(l.word_start);
  if (rc) {
    fr_free(l.v);
    return rc;
  }
  *ids = l.v;
  *n = l.n;
  return FR_OK;
}

enum fr_status fr_tokenizer_window(const struct fr_tokenizer *tok, const char *text, int32_t pad_id,
                                   int32_t *out, int *n_tokens, struct fr_err *err) {
  int32_t *ids;
  int n;
  if (pad_id < 0)
    pad_id = tok->pad;
  enum fr_status rc = fr_tokenizer_encode(tok, text, pad_id, &ids, &n, err);
  if (rc)
    return rc;
  int content = n - 2 < FR_CLIP_CHUNK ? n - 2 : FR_CLIP_CHUNK;
  out[0] = tok->bos;
  memcpy(out + 1, ids + 1, (size_t)content * sizeof *out);
  out[1 + content] = tok->eos;
  for (int i = 2 + content; i < FR_CLIP_CTX; i++)
    out[i] = pad_id;
  if (n_tokens)
    *n_tokens = n;
  fr_free(ids);
  return FR_OK;
}

enum fr_status fr_tokenizer_chunks(const struct fr_tokenizer *tok, const char *text, int32_t pad_id,
                                   int32_t **ids, int *n_windows, struct fr_err *err) {
  *ids = NULL;
  *n_windows = 0;
  if (pad_id < 0)
    pad_id = tok->pad;
  struct fr__ids l = {0}, w = {0};
  enum fr_status rc = fr__encode(tok, text, pad_id, &l, err);
  if (rc)
    goto done;
  int fill = 0; /* ids in the current window, BOS included */
  fr__ids_push(&w, tok->bos, false);
  fill = 1;
  for (int i = 0; i < l.n;) {
    int j = i + 1; /* the word is l.v[i..j) */
    while (j < l.n && !l.word_start[j])
      j++;
    bool large = j - i >= FR__WORD_MAX_TOKENS;
    while (i < j) {
      if (j - i + fill > FR_CLIP_CTX - 1) {
        int room = FR_CLIP_CTX - 1 - fill;
        if (large) { /* split the word: fill this window to the brim */
          for (int k = 0; k < room; k++)
            fr__ids_push(&w, l.v[i + k], false);
          i += room;
          fill += room;
        }
        fr__ids_push(&w, tok->eos, false);
        for (fill++; fill < FR_CLIP_CTX; fill++)
          fr__ids_push(&w, pad_id, false);
        fr__ids_push(&w, tok->bos, false);
        fill = 1;
      } else {
        for (; i < j; i++, fill++)
          fr__ids_push(&w, l.v[i], false);
      }
    }
  }
  fr__ids_push(&w, tok->eos, false);
  for (fill++; fill < FR_CLIP_CTX; fill++)
    fr__ids_push(&w, pad_id, false);
  if (w.oom) {
    rc = fr_errf(err, FR_E_NOMEM, "out of memory tokenizing a prompt");
    goto done;
  }
  *ids = w.v;
  *n_windows = w.n / FR_CLIP_CTX;
  w.v = NULL;
done:
  fr_free(l.v);
  fr_free(l.word_start);
  fr_free(w.v);
  fr_free(w.word_start);
  return rc;
}

/* ---------- loading ---------- */

/* Reads a whole file, transparently gunzipping (zlib's gzread passes plain files through). */
static enum fr_status fr__read_file(const char *path, char **data, size_t *len, struct fr_err *err) {
  *data = NULL;
  *len = 0;
  gzFile f = gzopen(path, "rb");
  if (!f)
    return fr_errf(err, FR_E_IO, "%s: cannot open", path);
  struct fr_buf b = {0};
  char chunk[65536];
  enum fr_status rc = FR_OK;
  for (;;) {
    int k = gzread(f, chunk, sizeof chunk);
    if (k < 0) {
      int errnum;
      const char *msg = gzerror(f, &errnum);
      rc = fr_errf(err, FR_E_FORMAT, "%s: read failed (%s)", path, msg ? msg : "gzip error");
      break;
    }
    if (k == 0)
      break;
    fr_buf_append(&b, chunk, (size_t)k);
    if (b.len > (size_t)256 << 20) {
      rc = fr_errf(err, FR_E_FORMAT, "%s: larger than 256 MiB, not a tokenizer file", path);
      break;
    }
  }
  /* a gzip stream cut short reads as data up to the cut; only gzclose tells */
  if (gzclose(f) == Z_BUF_ERROR && !rc)
    rc = fr_errf(err, FR_E_FORMAT, "%s: truncated (the gzip stream ends early)", path);
  if (!rc && b.oom)
    rc = fr_errf(err, FR_E_NOMEM, "out of memory reading %s", path);
  if (rc) {
    fr_buf_free(&b);
    return rc;
  }
  if (!b.data) {
    *data = fr_strdup("");
    if (!*data)
      return fr_errf(err, FR_E_NOMEM, "out of memory reading %s", path);
    return FR_OK;
  }
  *data = fr_buf_take(&b, len);
  return FR_OK;
}

static bool fr__is_file(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}
static bool fr__is_dir(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* GPT-2/CLIP's byte -> printable character table: printable Latin-1 bytes map to themselves, the other 68
 * bytes to U+0100.. in byte order. order[] lists bytes in the reference's vocabulary order. */
static void fr__byte_chars(uint32_t cp[256], int order[256]) {
  int k = 0, extra = 0;
  bool printable[256];
  for (int b = 0; b < 256; b++)
    printable[b] = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  for (int b = 0; b < 256; b++)
    if (printable[b])
      cp[b] = (uint32_t)b, order[k++] = b;
  for (int b = 0; b < 256; b++)
    if (!printable[b])
      cp[b] = 256u + (uint32_t)extra++, order[k++] = b;
}

static enum fr_status fr__tok_alloc(struct fr_tokenizer **out, int vocab_cap, struct fr_err *err) {
  struct fr_tokenizer *tok = fr_calloc(1, sizeof *tok);
  if (tok)
    tok->arena = fr_arena_new(0);
  if (tok && tok->arena)
    tok->tokens = fr_calloc((size_t)vocab_cap, sizeof *tok->tokens);
  if (!tok || !tok->arena || !tok->tokens || !fr__strmap_init(&tok->vocab, (size_t)vocab_cap)) {
    fr_tokenizer_free(tok);
    return fr_errf(err, FR_E_NOMEM, "out of memory loading a tokenizer");
  }
  *out = tok;
  return FR_OK;
}

/* Fills byte_id/byte_end_id from the vocabulary; every byte symbol must be present. */
static enum fr_status fr__tok_bytes(struct fr_tokenizer *tok, const char *what, struct fr_err *err) {
  uint32_t cp[256];
  int order[256];
  fr__byte_chars(cp, order);
  for (int b = 0; b < 256; b++) {
    char s[16];
    struct fr_buf u = {0};
    fr__utf8_put(&u, cp[b]);
    if (u.oom)
      return fr_errf(err, FR_E_NOMEM, "out of memory loading %s", what);
    snprintf(s, sizeof s, "%s", u.data);
    fr_buf_free(&u);
    tok->byte_id[b] = fr__strmap_get(&tok->vocab, s);
    strcat(s, "</w>");
    tok->byte_end_id[b] = fr__strmap_get(&tok->vocab, s);
    if (tok->byte_id[b] < 0 || tok->byte_end_id[b] < 0)
      return fr_errf(err, FR_E_FORMAT, "%s: byte symbol for 0x%02x missing from the vocabulary", what, b);
  }
  tok->bos = fr__strmap_get(&tok->vocab, "<|startoftext|>");
  tok->eos = fr__strmap_get(&tok->vocab, "<|endoftext|>");
  if (tok->bos < 0 || tok->eos < 0)
    return fr_errf(err, FR_E_FORMAT, "%s: <|startoftext|> or <|endoftext|> missing from the vocabulary",
                   what);
  tok->pad = tok->eos;
  return FR_OK;
}

static enum fr_status fr__tok_add(struct fr_tokenizer *tok, const char *s, size_t n, int32_t id,
                                  const char *what) {
  char *k = fr_arena_strndup(tok->arena, s, n);
  if (!k)
    return FR_E_NOMEM;
  (void)what;
  fr__strmap_put(&tok->vocab, k, id);
  tok->tokens[id] = k;
  return FR_OK;
}

/* Parses merges text: optional "#version" first line, then "A B" per line, at most max_merges (< 0: all).
 * When build_vocab, each merge also defines the next token id (A+B), as the original file is used. */
static enum fr_status fr__tok_merges(struct fr_tokenizer *tok, const char *text, size_t len, int max_merges,
                                     bool build_vocab, const char *path, struct fr_err *err) {
  /* The original file's first line is a header whatever it says (the reference drops merges[0]); a
   * merges.txt starts with "#version" or directly with merges. */
  size_t lines = 1;
  for (size_t i = 0; i < len; i++)
    lines += text[i] == '\n';
  if (!fr__pairmap_init(&tok->merges, lines))
    return fr_errf(err, FR_E_NOMEM, "out of memory loading %s", path);
  int rank = 0;
  size_t lineno = 0;
  char buf[1024];
  for (size_t i = 0; i < len && (max_merges < 0 || rank < max_merges);) {
    const char *e = memchr(text + i, '\n', len - i);
    size_t n = e ? (size_t)(e - (text + i)) : len - i;
    const char *line = text + i;
    i += n + 1;
    lineno++;
    if (n && line[n - 1] == '\r')
      n--;
    if (lineno == 1 && (build_vocab || (n >= 8 && memcmp(line, "#version", 8) == 0)))
      continue;
    if (n == 0)
      continue;
    const char *sp = memchr(line, ' ', n);
    if (!sp || sp == line || sp + 1 == line + n || memchr(sp + 1, ' ', (size_t)(line + n - sp - 1)) ||
        n + 1 >= sizeof buf)
      return fr_errf(err, FR_E_FORMAT, "%s:%zu: expected two symbols separated by one space", path, lineno);
    size_t la = (size_t)(sp - line), lb = n - la - 1;
    memcpy(buf, line, la);
    buf[la] = 0;
    int32_t a = fr__strmap_get(&tok->vocab, buf);
    memcpy(buf, sp + 1, lb);
    buf[lb] = 0;
    int32_t b = fr__strmap_get(&tok->vocab, buf);
    memcpy(buf, line, la);
    memcpy(buf + la, sp + 1, lb);
    buf[la + lb] = 0;
    if (build_vocab) {
      if (a < 0 || b < 0)
        return fr_errf(err, FR_E_FORMAT, "%s:%zu: merge of a symbol not defined by an earlier line", path,
                       lineno);
      if (tok->vocab_size >= FR__MAX_VOCAB)
        return fr_errf(err, FR_E_FORMAT, "%s: too many merges", path);
      if (fr__tok_add(tok, buf, la + lb, tok->vocab_size, path))
        return fr_errf(err, FR_E_NOMEM, "out of memory loading %s", path);
      tok->vocab_size++;
    }
    int32_t m = fr__strmap_get(&tok->vocab, buf);
    if (a < 0 || b < 0 || m < 0)
      return fr_errf(err, FR_E_FORMAT,
                     "%s:%zu: merge '%.*s' uses or makes a token missing from the vocabulary", path, lineno,
                     (int)n, line);
    fr__pairmap_put(&tok->merges, a, b, rank++, m);
  }
  if (rank == 0)
    return fr_errf(err, FR_E_FORMAT, "%s: no merges (not a CLIP BPE merges file)", path);
  return FR_OK;
}

/* The original merges file: rebuild the vocabulary as open_clip does. */
static enum fr_status fr__load_bpe_file(const char *path, struct fr_tokenizer **out, struct fr_err *err) {
  char *text;
  size_t len;
  enum fr_status rc = fr__read_file(path, &text, &len, err);
  if (rc)
    return rc;
  struct fr_tokenizer *tok = NULL;
  rc = fr__tok_alloc(&tok, FR__MAX_VOCAB, err);
  if (rc) {
    fr_free(text);
    return rc;
  }
  uint32_t cp[256];
  int order[256];
  fr__byte_chars(cp, order);
  for (int pass = 0; pass < 2 && !rc; pass++) {
    for (int i = 0; i < 256 && !rc; i++) {
      struct fr_buf u = {0};
      fr__utf8_put(&u, cp[order[i]]);
      if (pass)
        fr_buf_puts(&u, "</w>");
      if (u.oom || fr__tok_add(tok, u.data, u.len, tok->vocab_size++, path))
        rc = fr_errf(err, FR_E_NOMEM, "out of memory loading %s", path);
      fr_buf_free(&u);
    }
  }
  if (!rc)
    rc = fr__tok_merges(tok, text, len, FR__GZ_MERGES, true, path, err);
  if (!rc) {
    if (fr__tok_add(tok, "<|startoftext|>", 15, tok->vocab_size++, path) ||
        fr__tok_add(tok, "<|endoftext|>", 13, tok->vocab_size++, path))
      rc = fr_errf(err, FR_E_NOMEM, "out of memory loading %s", path);
  }
  if (!rc)
    rc = fr__tok_bytes(tok, path, err);
  fr_free(text);
  if (rc) {
    fr_tokenizer_free(tok);
    return rc;
  }
  *out = tok;
  return FR_OK;
}

/* pad_token from a tokenizer_config.json or special_tokens_map.json: a string or {"content": ...}. */
static const char *fr__config_pad(struct fr_arena *a, const char *path) {
  char *text;
  size_t len;
  struct fr_err e;
  if (!fr__is_file(path) || fr__read_file(path, &text, &len, &e))
    return NULL;
  struct fr_json *root = NULL;
  const char *pad = NULL;
  if (fr_json_parse(a, text, len, 0, &root, &e) == FR_OK) {
    const struct fr_json *p = fr_json_get(root, "pad_token");
    if (p && p->type == FR_JSON_OBJECT)
      p = fr_json_get(p, "content");
    if (p && p->type == FR_JSON_STRING)
      pad = p->str;
  }
  fr_free(text);
  return pad;
}

static enum fr_status fr__load_folder(const char *dir, struct fr_tokenizer **out, struct fr_err *err) {
  char vpath[4200], mpath[4200], cpath[4200];
  snprintf(vpath, sizeof vpath, "%s/vocab.json", dir);
  snprintf(mpath, sizeof mpath, "%s/merges.txt", dir);
  if (!fr__is_file(vpath))
    return fr_errf(err, FR_E_NOTFOUND, "%s: no vocab.json in this folder", dir);
  if (!fr__is_file(mpath))
    return fr_errf(err, FR_E_NOTFOUND, "%s: no merges.txt in this folder", dir);
  char *vtext = NULL, *mtext = NULL;
  size_t vlen, mlen;
  struct fr_tokenizer *tok = NULL;
  struct fr_arena *ja = NULL;
  enum fr_status rc = fr__read_file(vpath, &vtext, &vlen, err);
  if (!rc)
    rc = fr__read_file(mpath, &mtext, &mlen, err);
  struct fr_json *root = NULL;
  if (!rc) {
    ja = fr_arena_new(1 << 20);
    rc = ja ? fr_json_parse(ja, vtext, vlen, 0, &root, err) : fr_errf(err, FR_E_NOMEM, "out of memory");
    if (rc == FR_E_FORMAT)
      fr_err_prefix(err, rc, "%s: ", vpath);
  }
  if (!rc && root->type != FR_JSON_OBJECT)
    rc = fr_errf(err, FR_E_FORMAT, "%s: expected an object of token -> id", vpath);
  int max_id = -1;
  for (int i = 0; !rc && i < root->n; i++) {
    const struct fr_json *v = &root->items[i];
    if (v->type != FR_JSON_NUMBER || !v->is_int || v->i < 0 || v->i >= FR__MAX_VOCAB)
      rc = fr_errf(err, FR_E_FORMAT, "%s: token \"%s\": id is not an integer in [0, %d)", vpath,
                   root->keys[i], FR__MAX_VOCAB);
    else if (v->i > max_id)
      max_id = (int)v->i;
  }
  if (!rc)
    rc = fr__tok_alloc(&tok, max_id + 1 > root->n ? max_id + 1 : root->n, err);
  for (int i = 0; !rc && i < root->n; i++)
    if (fr__tok_add(tok, root->keys[i], strlen(root->keys[i]), (int32_t)root->items[i].i, vpath))
      rc = fr_errf(err, FR_E_NOMEM, "out of memory loading %s", vpath);
  if (!rc) {
    tok->vocab_size = max_id + 1;
    rc = fr__tok_bytes(tok, vpath, err);
  }
  if (!rc)
    rc = fr__tok_merges(tok, mtext, mlen, -1, false, mpath, err);
  if (!rc) {
    snprintf(cpath, sizeof cpath, "%s/tokenizer_config.json", dir);
    const char *pad = fr__config_pad(ja, cpath);
    if (!pad) {
      snprintf(cpath, sizeof cpath, "%s/special_tokens_map.json", dir);
      pad = fr__config_pad(ja, cpath);
    }
    if (pad) {
      int32_t id = fr__strmap_get(&tok->vocab, pad);
      if (id < 0)
        rc = fr_errf(err, FR_E_FORMAT, "%s: pad_token \"%s\" is not in the vocabulary", cpath, pad);
      else
        tok->pad = id;
    }
  }
  fr_arena_free(ja);
  fr_free(vtext);
  fr_free(mtext);
  if (rc) {
    fr_tokenizer_free(tok);
    return rc;
  }
  *out = tok;
  return FR_OK;
}

enum fr_status fr_tokenizer_load(const char *path, struct fr_tokenizer **out, struct fr_err *err) {
  *out = NULL;
  if (fr__is_dir(path)) {
    char sub[4200], v[4300];
    snprintf(v, sizeof v, "%s/vocab.json", path);
    if (fr__is_file(v))
      return fr__load_folder(path, out, err);
    snprintf(sub, sizeof sub, "%s/tokenizer", path);
    if (fr__is_dir(sub))
      return fr__load_folder(sub, out, err);
    return fr_errf(err, FR_E_NOTFOUND, "%s: neither vocab.json + merges.txt nor a tokenizer/ folder", path);
  }
  if (fr__is_file(path))
    return fr__load_bpe_file(path, out, err);
  return fr_errf(err, FR_E_NOTFOUND, "%s: no such tokenizer file or folder", path);
}

void fr_tokenizer_free(struct fr_tokenizer *tok) {
  if (!tok)
    return;
  fr_free(tok->vocab.keys);
  fr_free(tok->vocab.vals);
  fr_free(tok->merges.keys);
  fr_free(tok->merges.rank);
  fr_free(tok->merges.merged);
  fr_free(tok->tokens);
  fr_arena_free(tok->arena);
  fr_free(tok);
}

int fr_tokenizer_vocab_size(const struct fr_tokenizer *tok) {
  return tok->vocab_size;
}
int32_t fr_tokenizer_pad_id(const struct fr_tokenizer *tok) {
  return tok->pad;
}
int32_t fr_tokenizer_token_id(const struct fr_tokenizer *tok, const char *token) {
  return fr__strmap_get(&tok->vocab, token);
}

enum fr_status fr_tokenizer_find(const char *const *dirs, int n_dirs, char *out, size_t n,
                                 struct fr_err *err) {
  static const char *const subs[] = {"", "/tokenizer", "/bpe_simple_vocab_16e6.txt.gz",
                                     "/clip/bpe_simple_vocab_16e6.txt.gz"};
  struct fr_buf looked = {0};
  for (int d = 0; d < n_dirs; d++) {
    if (!dirs[d] || !dirs[d][0])
      continue;
    for (size_t s = 0; s < FR__COUNT(subs); s++) {
      char p[4200], v[4300], m[4300];
      snprintf(p, sizeof p, "%s%s", dirs[d], subs[s]);
      bool hit;
      if (s < 2) { /* a tokenizer folder */
        snprintf(v, sizeof v, "%s/vocab.json", p);
        snprintf(m, sizeof m, "%s/merges.txt", p);
        hit = fr__is_file(v) && fr__is_file(m);
        fr_buf_printf(&looked, "%s  %s/{vocab.json,merges.txt}", looked.len ? "\n" : "", p);
      } else {
        hit = fr__is_file(p);
        fr_buf_printf(&looked, "%s  %s", looked.len ? "\n" : "", p);
      }
      if (hit) {
        fr_buf_free(&looked);
        if (strlen(p) >= n)
          return fr_errf(err, FR_E_INVALID, "tokenizer path too long: %s", p);
        memcpy(out, p, strlen(p) + 1);
        return FR_OK;
      }
    }
  }
  enum fr_status rc =
      fr_errf(err, FR_E_NOTFOUND, "no CLIP tokenizer found; looked for:\n%s",
              looked.len ? looked.data : "  (no search folders: set FLOWRUN_MODELS or pass --tokenizer)");
  fr_buf_free(&looked);
  return rc;
}
