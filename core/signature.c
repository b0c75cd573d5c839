#include "core/signature.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "core/alloc.h"
#include "core/file.h"
#include "core/pins.h"

#define FR__SIG_TAG "flowrun-sig/1"

static void fr__key_from_hash(XXH128_hash_t h, struct fr_key *out) {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, h);
  memcpy(out->b, c.digest, 16);
}

void fr_key_hex(const struct fr_key *k, char out[33]) {
  static const char hex[] = "0123456789abcdef";
  for (int i = 0; i < 16; i++) {
    out[2 * i] = hex[k->b[i] >> 4];
    out[2 * i + 1] = hex[k->b[i] & 15];
  }
  out[32] = 0;
}

bool fr_key_equal(const struct fr_key *a, const struct fr_key *b) {
  return memcmp(a->b, b->b, 16) == 0;
}

static bool fr__key_from_hex(const char *s, struct fr_key *out) {
  if (strlen(s) != 32)
    return false;
  for (int i = 0; i < 32; i++) {
    int c = s[i], v;
    if (c >= '0' && c <= '9')
      v = c - '0';
    else if (c >= 'a' && c <= 'f')
      v = c - 'a' + 10;
    else
      return false;
    if (i % 2 == 0)
      out->b[i / 2] = (uint8_t)(v << 4);
    else
      out->b[i / 2] |= (uint8_t)v;
  }
  return true;
}

void fr_fp_memo_free(struct fr_fp_memo *m) {
  if (!m)
    return;
  for (int i = 0; i < m->n; i++)
    fr_free(m->keys[i]);
  fr_free(m->keys);
  fr_free(m->fps);
  memset(m, 0, sizeof *m);
}

const struct fr_key *fr_fp_memo_get(const struct fr_fp_memo *m, const char *key) {
  for (int i = 0; m && i < m->n; i++)
    if (strcmp(m->keys[i], key) == 0)
      return &m->fps[i];
  return NULL;
}

/* Best effort: a memo that cannot grow only costs a second hash later. */
void fr_fp_memo_put(struct fr_fp_memo *m, const char *key, const struct fr_key *fp) {
  if (!m)
    return;
  if (m->n == m->cap) {
    int cap = m->cap ? m->cap * 2 : 8;
    char **keys = fr_realloc(m->keys, (size_t)cap * sizeof *keys);
    if (!keys)
      return;
    m->keys = keys;
    struct fr_key *fps = fr_realloc(m->fps, (size_t)cap * sizeof *fps);
    if (!fps)
      return;
    m->fps = fps;
    m->cap = cap;
  }
  char *k = fr_strdup(key);
  if (!k)
    return;
  m->keys[m->n] = k;
  m->fps[m->n] = *fp;
  m->n++;
}

static void fr__xxh_chunk(void *user, const void *chunk, size_t n) {
  XXH3_128bits_update(user, chunk, n);
}

/* Hashes the file in chunks (fr_read_chunks): no need to map a multi-GB checkpoint. */
static enum fr_status fr__hash_file(const char *path, struct fr_key *out, struct fr_err *err) {
  XXH3_state_t st;
  XXH3_INITSTATE(&st);
  XXH3_128bits_reset(&st);
  enum fr_status rc = fr_read_chunks(path, fr__xxh_chunk, &st, err);
  if (rc == FR_OK)
    fr__key_from_hash(XXH3_128bits_digest(&st), out);
  return rc;
}

enum fr_status fr_file_hash(const char *path, struct fr_key *out, struct fr_err *err) {
  return fr__hash_file(path, out, err);
}

enum fr_status fr_file_fingerprint(struct fr_sig_ctx *ctx, const char *path, struct fr_key *out,
                                   struct fr_err *err) {
  struct stat st;
  if (stat(path, &st) != 0)
    return fr_errf(err, FR_E_IO, "%s: cannot read: %s", path, strerror(errno));
  if (!S_ISREG(st.st_mode))
    return fr_errf(err, FR_E_IO, "%s: not a regular file", path);
  long long mtime_ns = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
  long long ctime_ns = (long long)st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec;
  char memo_key[4200];
  /* inode and change time too: a file replaced, or rewritten with its size and mtime put back, is hashed
   * again (ctime cannot be set back) */
  snprintf(memo_key, sizeof memo_key, "fp|%s|%lld|%lld|%llu|%lld", path, (long long)st.st_size, mtime_ns,
           (unsigned long long)st.st_ino, ctime_ns);

  const struct fr_key *hit = fr_fp_memo_get(ctx->memo, memo_key);
  if (hit) {
    *out = *hit;
    return FR_OK;
  }
  if (ctx->cache) {
    char val[64];
    struct fr_err kerr;
    if (fr_cache_kv_get(ctx->cache, memo_key, val, sizeof val, &kerr) == FR_OK &&
        fr__key_from_hex(val, out)) {
      fr_fp_memo_put(ctx->memo, memo_key, out);
      return FR_OK;
    }
  }
  enum fr_status rc = fr__hash_file(path, out, err);
  if (rc != FR_OK)
    return rc;
  fr_fp_memo_put(ctx->memo, memo_key, out);
  if (ctx->cache) {
    char hex[33];
    fr_key_hex(out, hex);
    struct fr_err kerr;
    /* A failed memo write only means hashing again next time; the key itself is right. */
    (void)fr_cache_kv_put(ctx->cache, memo_key, hex, &kerr);
  }
  return FR_OK;
}

static void fr__put_u64(struct fr_buf *b, uint64_t v) {
  uint8_t x[8];
  for (int i = 0; i < 8; i++)
    x[i] = (uint8_t)(v >> (8 * i));
  fr_buf_append(b, x, 8);
}

static void fr__put_str(struct fr_buf *b, const char *s) {
  size_t n = s ? strlen(s) : 0;
  fr__put_u64(b, n);
  fr_buf_append(b, s ? s : "", n);
}

static void fr__put_key(struct fr_buf *b, const struct fr_key *k) {
  fr_buf_append(b, k->b, 16);
}

static void fr__put_literal(struct fr_buf *b, const struct fr_value *v) {
  if (!v) {
    fr_buf_putc(b, 'n');
    return;
  }
  switch (v->kind) {
  case FR_V_INT:
    fr_buf_putc(b, 'i');
    fr__put_u64(b, (uint64_t)v->i);
    break;
  case FR_V_FLOAT: {
    double d = v->f;
    if (d == 0)
      d = 0; /* -0.0 and 0.0 compute the same */
    uint64_t bits;
    if (isnan(d))
      bits = 0x7ff8000000000000ULL;
    else
      memcpy(&bits, &d, 8);
    fr_buf_putc(b, 'f');
    fr__put_u64(b, bits);
    break;
  }
  case FR_V_BOOL:
    fr_buf_putc(b, 'b');
    fr_buf_putc(b, v->b ? 1 : 0);
    break;
  case FR_V_STRING:
    fr_buf_putc(b, 's');
    fr__put_str(b, v->s);
    break;
  default:
    /* Literals are primitives by the loader's contract; anything else still gets a distinct tag. */
    fr_buf_putc(b, '?');
    fr__put_str(b, v->type);
    break;
  }
}

/* FR_IN_PROMPT: the embedding files a prompt may read, fingerprinted in the order they are named. Every
 * "embedding:" that starts a word (after white space, '(' or the start) names a candidate up to white space,
 * ')', '<' or '['; each candidate is also tried without a weight suffix (":1.2") and without commas around
 * it. More candidates than the run reads only add fingerprints of files that exist; a file that appears or
 * changes changes the key. */
static enum fr_status fr__put_prompt_files(struct fr_sig_ctx *ctx, struct fr_buf *b, const char *text,
                                           struct fr_err *err) {
  const char *const *subs = fr_model_kind_folders(FR_MODEL_EMBEDDING);
  for (const char *p = strstr(text, "embedding:"); p; p = strstr(p + 1, "embedding:")) {
    if (p > text && !isspace((unsigned char)p[-1]) && p[-1] != '(')
      continue;
    const char *q = p + strlen("embedding:");
    size_t n = strcspn(q, " \t\r\n\v\f)<[");
    char names[3][512];
    snprintf(names[0], sizeof names[0], "%.*s", (int)(n < 511 ? n : 511), q);
    snprintf(names[1], sizeof names[1], "%s", names[0]);
    char *colon = strrchr(names[1], ':');
    if (colon)
      *colon = 0;
    for (int k = 2; k < 3; k++) { /* commas around the weightless name */
      const char *a = names[1] + strspn(names[1], ",");
      size_t len = strlen(a);
      while (len && a[len - 1] == ',')
        len--;
      snprintf(names[k], sizeof names[k], "%.*s", (int)len, a);
    }
    for (int k = 0; k < 3; k++) {
      if (!names[k][0] || strstr(names[k], "..") || names[k][0] == '/' ||
          (k && !strcmp(names[k], names[k - 1])))
        continue;
      for (int d = 0; d < ctx->n_model_dirs; d++)
        for (int s = 0; subs[s]; s++)
          for (int e = 0; e < 2; e++) {
            char path[4600];
            snprintf(path, sizeof path, "%s/%s/%s%s", ctx->model_dirs[d], subs[s], names[k],
                     e ? ".safetensors" : "");
            struct stat st;
            if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
              continue;
            struct fr_key fp;
            enum fr_status rc = fr_file_fingerprint(ctx, path, &fp, err);
            if (rc)
              return rc;
            fr_buf_putc(b, 'E');
            fr__put_str(b, path);
            fr__put_key(b, &fp);
          }
    }
  }
  return FR_OK;
}

/* Whether an input counts for output `output` (< 0: the node signature, every input counts). */
static bool fr__counts(const struct fr_input_spec *in, int output) {
  return output < 0 || !(in->flags & FR_IN_ONLY_OUTPUT) || FR_IN_OUTPUT_OF(in->flags) == output;
}

static enum fr_status fr__encode(struct fr_sig_ctx *ctx, const struct fr_graph *g, int idx, int output,
                                 const struct fr_key *sigs, struct fr_buf *b, struct fr_err *err) {
  const struct fr_gnode *n = &g->nodes[idx];
  const struct fr_node_spec *s = n->spec;
  fr__put_str(b, FR__SIG_TAG);
  fr__put_str(b, s->name);
  fr__put_u64(b, (uint64_t)(int64_t)s->version);
  if (output >= 0) {
    fr_buf_putc(b, 'D');
    fr__put_u64(b, (uint64_t)output);
  }

  int *ord = fr_malloc((size_t)(s->n_inputs ? s->n_inputs : 1) * sizeof *ord);
  if (!ord)
    return fr_errf(err, FR_E_NOMEM, "node %s: out of memory computing its signature", n->id);
  /* Insertion sort by name: a handful of inputs, and no shared state (engines may run in threads). */
  for (int i = 0; i < s->n_inputs; i++) {
    int j = i;
    for (; j > 0 && strcmp(s->inputs[ord[j - 1]].name, s->inputs[i].name) > 0; j--)
      ord[j] = ord[j - 1];
    ord[j] = i;
  }

  fr__put_u64(b, (uint64_t)s->n_inputs);
  for (int k = 0; k < s->n_inputs; k++) {
    int i = ord[k];
    const struct fr_input_spec *in = &s->inputs[i];
    const struct fr_binding *bd = &n->inputs[i];
    if (!fr__counts(in, output))
      continue;
    fr__put_str(b, in->name);
    if (bd->kind == FR_BIND_LINK) {
      fr_buf_putc(b, 'K');
      const struct fr_key *const *ls = (const struct fr_key *const *)ctx->link_sigs;
      fr__put_key(b, ls && ls[bd->src_node] ? &ls[bd->src_node][bd->src_output] : &sigs[bd->src_node]);
      fr__put_u64(b, (uint64_t)bd->src_output);
    } else if (bd->kind == FR_BIND_LITERAL && (in->flags & (FR_IN_FILE | FR_IN_MODEL_FILE)) && bd->path) {
      struct fr_key fp;
      enum fr_status rc = bd->pin ? fr_pin_check(ctx->cache, ctx->memo, bd->path, bd->pin, err) : FR_OK;
      if (rc == FR_OK)
        rc = fr_file_fingerprint(ctx, bd->path, &fp, err);
      if (rc != FR_OK) {
        fr_free(ord);
        return fr_err_prefix(err, rc, "node %s (%s): input %s: ", n->id, s->name, in->name);
      }
      fr_buf_putc(b, 'F');
      fr__put_key(b, &fp);
    } else if (bd->kind == FR_BIND_LITERAL) {
      fr_buf_putc(b, 'L');
      fr__put_literal(b, bd->literal);
      if ((in->flags & FR_IN_PROMPT) && bd->literal->kind == FR_V_STRING && bd->literal->s) {
        enum fr_status rc = fr__put_prompt_files(ctx, b, bd->literal->s, err);
        if (rc != FR_OK) {
          fr_free(ord);
          return fr_err_prefix(err, rc, "node %s (%s): input %s: ", n->id, s->name, in->name);
        }
      }
    } else {
      fr_buf_putc(b, 'N');
    }
  }
  fr_free(ord);

  fr__put_str(b, ctx->device ? ctx->device : "cpu");
  fr__put_str(b, ctx->dtype ? ctx->dtype : "");
  if (s->flags & FR_NODE_OUTPUT) {
    fr_buf_putc(b, 'O');
    fr__put_str(b, ctx->output_dir ? ctx->output_dir : ".");
  }
  if (s->flags & FR_NODE_NONDETERMINISTIC) {
    fr_buf_putc(b, 'R');
    fr__put_u64(b, ctx->nonce[0]);
    fr__put_u64(b, ctx->nonce[1]);
  }
  if (b->oom)
    return fr_errf(err, FR_E_NOMEM, "node %s: out of memory computing its signature", n->id);
  return FR_OK;
}

enum fr_status fr_signature_encode(struct fr_sig_ctx *ctx, const struct fr_graph *g, int idx,
                                   const struct fr_key *sigs, struct fr_buf *b, struct fr_err *err) {
  return fr__encode(ctx, g, idx, -1, sigs, b, err);
}

static enum fr_status fr__sign(struct fr_sig_ctx *ctx, const struct fr_graph *g, int idx, int output,
                               const struct fr_key *sigs, struct fr_key *out, struct fr_err *err) {
  struct fr_buf b = {0};
  enum fr_status rc = fr__encode(ctx, g, idx, output, sigs, &b, err);
  if (rc == FR_OK)
    fr__key_from_hash(XXH3_128bits(b.data, b.len), out);
  fr_buf_free(&b);
  return rc;
}

enum fr_status fr_signature_node(struct fr_sig_ctx *ctx, const struct fr_graph *g, int idx,
                                 const struct fr_key *sigs, struct fr_key *out, struct fr_err *err) {
  return fr__sign(ctx, g, idx, -1, sigs, out, err);
}

enum fr_status fr_signature_link(struct fr_sig_ctx *ctx, const struct fr_graph *g, int idx, int output,
                                 const struct fr_key *sigs, struct fr_key *out, struct fr_err *err) {
  const struct fr_node_spec *s = g->nodes[idx].spec;
  bool split = false;
  for (int i = 0; i < s->n_inputs; i++)
    split = split || (s->inputs[i].flags & FR_IN_ONLY_OUTPUT);
  if (!split) {
    *out = sigs[idx];
    return FR_OK;
  }
  return fr__sign(ctx, g, idx, output, sigs, out, err);
}

void fr_signature_output(const struct fr_key *sig, int output, struct fr_key *out) {
  uint8_t x[16 + 4 + 4];
  memcpy(x, sig->b, 16);
  memcpy(x + 16, "out/", 4);
  for (int i = 0; i < 4; i++)
    x[20 + i] = (uint8_t)((uint32_t)output >> (8 * i));
  fr__key_from_hash(XXH3_128bits(x, sizeof x), out);
}
