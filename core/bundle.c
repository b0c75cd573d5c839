#include "core/bundle.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/graph_yaml.h"

#define FR__BUNDLE_MAX_FILES 256
#define FR__BUNDLE_MAX_DEPTH 32

struct fr__bedit {
  size_t off, end;
  const char *name;
};

struct fr__bfile {
  const char *real;  /* realpath; NULL for the top text */
  const char *shown; /* as shown in messages */
  const char *rel;   /* relative to the top graph's folder, for the bundle's comment ("" for the top) */
  const char *dir;
  const char *text;
  size_t len;
  const char *name; /* the inline graph's name */
  struct fr__bedit *edits;
  int n_edits;
  bool done, visiting;
};

struct fr__bundler {
  struct fr_arena *a;
  struct fr_err *err;
  struct fr__bfile files[FR__BUNDLE_MAX_FILES];
  int n_files;
};

static bool fr__is_graph_file(const char *s) {
  size_t n = strlen(s);
  return (n > 5 && !strcmp(s + n - 5, ".yaml")) || (n > 4 && !strcmp(s + n - 4, ".yml"));
}

/* An inline graph name from a file name: its base name without .yaml, [A-Za-z0-9_-] kept, the rest
 * '_', made unique among the names given so far. */
static const char *fr__bname(struct fr__bundler *b, const char *path) {
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  char nm[96];
  size_t k = 0;
  if (!(isalpha((unsigned char)base[0]) || base[0] == '_'))
    nm[k++] = 'g', nm[k++] = '_';
  for (const char *p = base; *p && *p != '.' && k < 80; p++)
    nm[k++] = isalnum((unsigned char)*p) || *p == '-' || *p == '_' ? *p : '_';
  nm[k] = 0;
  char cand[112];
  snprintf(cand, sizeof cand, "%s", nm);
  for (int n = 2;; n++) {
    bool taken = false;
    for (int i = 0; i < b->n_files && !taken; i++)
      taken = b->files[i].name && !strcmp(b->files[i].name, cand);
    if (!taken)
      return fr_arena_strdup(b->a, cand);
    snprintf(cand, sizeof cand, "%s_%d", nm, n);
  }
}

static char *fr__bdirname(struct fr_arena *a, const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash)
    return fr_arena_strdup(a, ".");
  return slash == path ? fr_arena_strdup(a, "/") : fr_arena_strndup(a, path, (size_t)(slash - path));
}

static char *fr__bjoin(struct fr_arena *a, const char *dir, const char *name) {
  if (name[0] == '/' || !dir || !dir[0] || !strcmp(dir, "."))
    return fr_arena_strdup(a, name);
  return fr_arena_printf(a, "%s/%s", dir, name);
}

static enum fr_status fr__bfile_do(struct fr__bundler *b, int fi, int depth);

/* The file index for a subgraph file named `type` in file fi at node n (reading it the first time). */
static enum fr_status fr__bsub(struct fr__bundler *b, int fi, const struct fr_ynode *typen, int depth,
                               int *out) {
  struct fr__bfile *f = &b->files[fi];
  const char *path = fr__bjoin(b->a, f->dir, typen->s);
  if (!path)
    return fr_errf(b->err, FR_E_NOMEM, "out of memory bundling");
  char *real = realpath(path, NULL);
  if (!real)
    return fr_errf(b->err, FR_E_INVALID, "%s:%d:%d: cannot open subgraph file '%s' (%s): %s", f->shown,
                   typen->line, typen->col, typen->s, path, strerror(errno));
  int j = 0;
  while (j < b->n_files && !(b->files[j].real && !strcmp(b->files[j].real, real)))
    j++;
  if (j == b->n_files) {
    if (b->n_files == FR__BUNDLE_MAX_FILES) {
      free(real);
      return fr_errf(b->err, FR_E_UNSUPPORTED, "more than %d subgraph files", FR__BUNDLE_MAX_FILES);
    }
    struct fr__bfile *g = &b->files[b->n_files];
    memset(g, 0, sizeof *g);
    g->real = fr_arena_strdup(b->a, real);
    g->shown =
        fr__bjoin(b->a, b->files[fi].shown[0] ? fr__bdirname(b->a, b->files[fi].shown) : ".", typen->s);
    g->dir = g->real ? fr__bdirname(b->a, g->real) : NULL;
    g->rel = b->files[fi].rel[0] ? fr__bjoin(b->a, fr__bdirname(b->a, b->files[fi].rel), typen->s)
                                 : fr_arena_strdup(b->a, typen->s);
    g->name = fr__bname(b, real);
    free(real);
    if (!g->real || !g->shown || !g->dir || !g->name || !g->rel)
      return fr_errf(b->err, FR_E_NOMEM, "out of memory bundling");
    FILE *fp = fopen(g->real, "rb");
    struct fr_buf t = {0};
    char chunk[65536];
    size_t n;
    while (fp && (n = fread(chunk, 1, sizeof chunk, fp)) > 0 && t.len <= FR_YAML_MAX_BYTES)
      fr_buf_append(&t, chunk, n);
    bool bad = !fp || ferror(fp);
    if (fp)
      fclose(fp);
    if (bad || t.oom || t.len > FR_YAML_MAX_BYTES) {
      fr_buf_free(&t);
      return fr_errf(b->err,
                     bad     ? FR_E_IO
                     : t.oom ? FR_E_NOMEM
                             : FR_E_INVALID,
                     "%s:%d:%d: subgraph file %s: %s", f->shown, typen->line, typen->col, g->shown,
                     bad     ? "cannot read it"
                     : t.oom ? "out of memory"
                             : "larger than 4 MiB");
    }
    g->len = t.len;
    g->text = fr_arena_strndup(b->a, t.data ? t.data : "", t.len);
    fr_buf_free(&t);
    if (!g->text)
      return fr_errf(b->err, FR_E_NOMEM, "out of memory bundling");
    b->n_files++;
  } else {
    free(real);
  }
  if (b->files[j].visiting)
    return fr_errf(b->err, FR_E_INVALID, "%s:%d:%d: subgraph recursion: %s uses itself", f->shown,
                   typen->line, typen->col, b->files[j].shown);
  enum fr_status rc = fr__bfile_do(b, j, depth + 1);
  *out = j;
  return rc;
}

/* Collects the edits of file fi (its `type: FILE.yaml` scalars) and bundles what it uses, depth first. */
static enum fr_status fr__bfile_do(struct fr__bundler *b, int fi, int depth) {
  if (b->files[fi].done)
    return FR_OK;
  if (depth > FR__BUNDLE_MAX_DEPTH)
    return fr_errf(b->err, FR_E_INVALID, "%s: subgraphs nested more than %d deep", b->files[fi].shown,
                   FR__BUNDLE_MAX_DEPTH);
  b->files[fi].visiting = true;
  struct fr_ynode *root = NULL;
  enum fr_status rc =
      fr_yaml_parse(b->a, b->files[fi].text, b->files[fi].len, b->files[fi].shown, &root, b->err);
  if (rc != FR_OK)
    return rc;
  if (fi > 0) {
    const char *t = b->files[fi].text;
    for (const char *p = t; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
      if (!strncmp(p, "---", 3) || !strncmp(p, "...", 3) || *p == '%')
        return fr_errf(b->err, FR_E_UNSUPPORTED,
                       "%s: a YAML directive or document marker (---, ..., %%) cannot be bundled; remove it",
                       b->files[fi].shown);
    if (fr_ymap_get(root, "graphs"))
      return fr_errf(b->err, FR_E_UNSUPPORTED,
                     "%s: a subgraph file with its own graphs: cannot be bundled yet; use its subgraph files",
                     b->files[fi].shown);
  }
  /* Nodes of the document and of its inline graphs (the top text may have some). */
  const struct fr_ynode *docs[1 + 512];
  int n_docs = 0;
  docs[n_docs++] = root;
  const struct fr_ynode *gs = fr_ymap_get(root, "graphs");
  for (int i = 0; gs && gs->kind == FR_Y_MAP && i < gs->n && n_docs < 513; i++)
    docs[n_docs++] = gs->items[2 * i + 1];
  int cap = 0;
  for (int d = 0; d < n_docs; d++) {
    const struct fr_ynode *nodes = fr_ymap_get(docs[d], "nodes");
    for (int i = 0; nodes && nodes->kind == FR_Y_MAP && i < nodes->n; i++) {
      const struct fr_ynode *typen = fr_ymap_get(nodes->items[2 * i + 1], "type");
      if (!typen || typen->kind != FR_Y_SCALAR || !fr__is_graph_file(typen->s))
        continue;
      if (gs)
        return fr_errf(
            b->err, FR_E_UNSUPPORTED,
            "%s:%d:%d: this graph has inline graphs (graphs:) and uses a graph file: bundling both "
            "is not supported yet",
            b->files[fi].shown, typen->line, typen->col);
      int j;
      if ((rc = fr__bsub(b, fi, typen, depth, &j)) != FR_OK)
        return rc;
      struct fr__bfile *f = &b->files[fi];
      if (f->n_edits == cap) {
        cap = cap ? 2 * cap : 8;
        struct fr__bedit *e = fr_arena_alloc(b->a, (size_t)cap * sizeof *e);
        if (!e)
          return fr_errf(b->err, FR_E_NOMEM, "out of memory bundling");
        if (f->n_edits)
          memcpy(e, f->edits, (size_t)f->n_edits * sizeof *e);
        f->edits = e;
      }
      size_t off = fr_yaml_offset(f->text, f->len, typen->line, typen->col);
      size_t end = fr_yaml_offset(f->text, f->len, typen->end_line, typen->end_col);
      if (end <= off || typen->line != typen->end_line)
        return fr_errf(b->err, FR_E_UNSUPPORTED, "%s:%d:%d: write the subgraph file name on one line",
                       f->shown, typen->line, typen->col);
      f->edits[f->n_edits++] = (struct fr__bedit){off, end, b->files[j].name};
    }
  }
  b->files[fi].visiting = false;
  b->files[fi].done = true;
  return FR_OK;
}

static int fr__bedit_cmp(const void *x, const void *y) {
  const struct fr__bedit *a = x, *b = y;
  return a->off < b->off ? -1 : a->off > b->off;
}

/* Appends file f's text with its edits applied, each line prefixed by indent (empty lines stay empty). */
static void fr__bemit(struct fr_buf *o, struct fr__bfile *f, const char *indent) {
  if (f->n_edits > 1)
    qsort(f->edits, (size_t)f->n_edits, sizeof *f->edits, fr__bedit_cmp);
  struct fr_buf t = {0};
  size_t at = 0;
  for (int e = 0; e < f->n_edits; e++) {
    fr_buf_append(&t, f->text + at, f->edits[e].off - at);
    fr_buf_puts(&t, f->edits[e].name);
    at = f->edits[e].end;
  }
  fr_buf_append(&t, f->text + at, f->len - at);
  if (!t.len || t.data[t.len - 1] != '\n')
    fr_buf_putc(&t, '\n');
  if (t.oom) {
    o->oom = true;
    fr_buf_free(&t);
    return;
  }
  for (size_t i = 0; i < t.len;) {
    const char *nl = memchr(t.data + i, '\n', t.len - i);
    size_t n = (size_t)(nl - (t.data + i));
    if (n && indent[0])
      fr_buf_puts(o, indent);
    fr_buf_append(o, t.data + i, n + 1);
    i += n + 1;
  }
  fr_buf_free(&t);
}

enum fr_status fr_bundle(const char *text, size_t len, const char *name, const char *dir, char **out,
                         size_t *out_len, struct fr_err *err) {
  *out = NULL;
  *out_len = 0;
  struct fr__bundler *b = fr_calloc(1, sizeof *b);
  struct fr_arena *a = fr_arena_new(0);
  if (!b || !a) {
    fr_free(b);
    fr_arena_free(a);
    return fr_errf(err, FR_E_NOMEM, "out of memory bundling");
  }
  b->a = a;
  b->err = err;
  b->files[0] = (struct fr__bfile){
      .shown = name ? name : "<string>", .rel = "", .dir = dir ? dir : ".", .text = text, .len = len};
  b->n_files = 1;
  enum fr_status rc = fr__bfile_do(b, 0, 0);
  struct fr_buf o = {0};
  if (rc == FR_OK) {
    fr__bemit(&o, &b->files[0], "");
    if (b->n_files > 1) {
      fr_buf_puts(&o, "graphs: # bundled by flowrun bundle: the subgraph files this graph uses\n");
      for (int i = 1; i < b->n_files; i++) {
        fr_buf_printf(&o, "  %s: # %s\n", b->files[i].name, b->files[i].rel);
        fr__bemit(&o, &b->files[i], "    ");
      }
    } else {
      o.len = 0; /* no subgraph file: the text as it was */
      fr_buf_append(&o, text, len);
    }
    fr_buf_putc(&o, 0);
    if (o.oom)
      rc = fr_errf(err, FR_E_NOMEM, "out of memory bundling");
  }
  if (rc == FR_OK) {
    *out = o.data;
    *out_len = o.len - 1;
  } else {
    fr_buf_free(&o);
  }
  fr_arena_free(a);
  fr_free(b);
  return rc;
}
