/* fr_pin_rewrite (core/pins.h): a graph's text with {file, sha256} pins written in place of the model file
 * names, for `flowrun pin` and the editor's "Pin models" (POST /api/pin). The text is edited, never
 * re-serialised, so comments, quotes and layout stay as the author wrote them. */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/graph.h"
#include "core/graph_yaml.h"
#include "core/node.h"
#include "core/pins.h"

struct fr__edit {
  size_t off, end; /* byte range of the scalar in the text */
  const char *sha256;
};

/* The scalar a pin replaces for a value written as `v`: v itself (a plain name in the file), or for $name
 * the default of the top graph's param `name` (short form or {type, default}; *param is then name). NULL:
 * nothing to pin there (already a pin, a link, a declared input). */
static const struct fr_ynode *fr__pin_target(const struct fr_ynode *root, const struct fr_ynode *v,
                                             const char **param) {
  *param = NULL;
  if (!v || v->kind != FR_Y_SCALAR)
    return NULL;
  if (v->s[0] != '$' || v->s[1] == '$')
    return v;
  const struct fr_ynode *p = fr_ymap_get(fr_ymap_get(root, "params"), v->s + 1);
  if (p && p->kind == FR_Y_MAP)
    p = fr_ymap_get(p, "file") ? NULL : fr_ymap_get(p, "default");
  if (!p || p->kind != FR_Y_SCALAR)
    return NULL;
  *param = v->s + 1;
  return p;
}

static int fr__edit_cmp(const void *a, const void *b) {
  const struct fr__edit *x = a, *y = b;
  return x->off < y->off ? 1 : x->off > y->off ? -1 : 0; /* last first */
}

const char *fr_pin_state_str(enum fr_pin_state s) {
  switch (s) {
  case FR_PIN_PINNED: return "pinned";
  case FR_PIN_ALREADY: return "already pinned";
  case FR_PIN_NOT_FOUND: return "not found";
  case FR_PIN_UNPINNABLE: return "not pinnable";
  }
  return "?";
}

void fr_pin_result_free(struct fr_pin_result *r) {
  if (!r)
    return;
  fr_arena_free(r->arena);
  memset(r, 0, sizeof *r);
}

enum fr_status fr_pin_rewrite(const struct fr_graph *g, const struct fr_load_opts *opts,
                              struct fr_pin_result *out, struct fr_err *err) {
  memset(out, 0, sizeof *out);
  struct fr_arena *ar = out->arena = fr_arena_new(0);
  if (!ar)
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  const char *text = g->yaml;
  size_t len = strlen(text);
  struct fr_ynode *root = NULL;
  enum fr_status rc = fr_yaml_parse(ar, text, len, g->path, &root, err);
  if (rc != FR_OK)
    return rc;
  const struct fr_ynode *nodes = fr_ymap_get(root, "nodes");
  int cap = 0;
  for (int i = 0; i < g->n_nodes; i++)
    cap += g->nodes[i].spec->n_inputs;
  struct fr__edit *edits = fr_arena_alloc(ar, (size_t)(cap + 1) * sizeof *edits);
  out->items = fr_arena_alloc(ar, (size_t)(cap + 1) * sizeof *out->items);
  if (!edits || !out->items)
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  int n_edits = 0;
  for (int i = 0; nodes && nodes->kind == FR_Y_MAP && i < nodes->n; i++) {
    int idx = fr_graph_find(g, nodes->items[2 * i]->s); /* a top-level real node (not a subgraph) */
    if (idx < 0)
      continue;
    const struct fr_gnode *gn = &g->nodes[idx];
    const struct fr_ynode *inputs = fr_ymap_get(nodes->items[2 * i + 1], "inputs");
    for (int k = 0; k < gn->spec->n_inputs; k++) {
      const struct fr_binding *b = &gn->inputs[k];
      if (!(gn->spec->inputs[k].flags & FR_IN_MODEL_FILE) || b->kind != FR_BIND_LITERAL)
        continue;
      struct fr_pin_item it = {.node = gn->id,
                               .input = gn->spec->inputs[k].name,
                               .path = b->path,
                               .line = b->pos.line,
                               .col = b->pos.col};
      const struct fr_ynode *v = fr_ymap_get(inputs, gn->spec->inputs[k].name);
      if (b->pin) {
        it.state = FR_PIN_ALREADY;
        if (v && v->kind == FR_Y_SCALAR && v->s[0] == '$' && v->s[1] != '$')
          it.param = v->s + 1;
        it.sha256 = b->pin;
        it.file = b->literal && b->literal->s ? b->literal->s : "";
        bool seen = false; /* a pinned param that several inputs use is reported once */
        for (int j = 0; it.param && j < out->n_items; j++)
          seen = seen || (out->items[j].param && !strcmp(out->items[j].param, it.param));
        if (!seen)
          out->items[out->n_items++] = it;
        continue;
      }
      const struct fr_ynode *t = fr__pin_target(root, v, &it.param);
      if (!t)
        continue;
      size_t off = fr_yaml_offset(text, len, t->line, t->col),
             end = fr_yaml_offset(text, len, t->end_line, t->end_col);
      bool dup = false;
      for (int e = 0; e < n_edits; e++)
        dup = dup || edits[e].off == off;
      if (dup) /* a param that several inputs use is pinned (and reported) once */
        continue;
      it.file = t->s;
      it.line = t->line;
      it.col = t->col;
      if (!b->path) {
        it.state = FR_PIN_NOT_FOUND;
        out->items[out->n_items++] = it;
        continue;
      }
      /* The source text must be this scalar (not an alias, a block scalar or a multi-line one). */
      if (end <= off || t->line != t->end_line ||
          (t->plain && (end - off != t->len || memcmp(text + off, t->s, t->len)))) {
        it.state = FR_PIN_UNPINNABLE;
        out->items[out->n_items++] = it;
        continue;
      }
      char sha[FR_PIN_FULL_LEN + 1];
      if ((rc = fr_pin_file_sha256(opts->cache, opts->memo, b->path, sha, err)) != FR_OK)
        return rc;
      if (!(it.sha256 = fr_arena_strdup(ar, sha)))
        return fr_errf(err, FR_E_NOMEM, "out of memory");
      it.state = FR_PIN_PINNED;
      out->items[out->n_items++] = it;
      edits[n_edits++] = (struct fr__edit){off, end, it.sha256};
    }
  }
  out->n_pinned = n_edits;
  qsort(edits, (size_t)n_edits, sizeof *edits, fr__edit_cmp);
  /* Built from the end of the text backwards, so each edit's offsets are those of the original. */
  struct fr_buf acc = {0};
  size_t upto = len; /* text[upto..len) is already in place (reversed pieces are joined below) */
  const char **pieces = fr_arena_alloc(ar, (size_t)(2 * n_edits + 1) * sizeof *pieces);
  size_t *plens = fr_arena_alloc(ar, (size_t)(2 * n_edits + 1) * sizeof *plens);
  if (!pieces || !plens)
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  int np = 0;
  for (int e = 0; e < n_edits; e++) {
    pieces[np] = text + edits[e].end;
    plens[np++] = upto - edits[e].end;
    char *pin = fr_arena_printf(ar, "{file: %.*s, sha256: %s}", (int)(edits[e].end - edits[e].off),
                                text + edits[e].off, edits[e].sha256);
    if (!pin)
      return fr_errf(err, FR_E_NOMEM, "out of memory");
    pieces[np] = pin;
    plens[np++] = strlen(pin);
    upto = edits[e].off;
  }
  pieces[np] = text;
  plens[np++] = upto;
  for (int p = np - 1; p >= 0; p--)
    fr_buf_append(&acc, pieces[p], plens[p]);
  if (acc.oom || !(out->text = fr_arena_strndup(ar, acc.data ? acc.data : "", acc.len))) {
    fr_buf_free(&acc);
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  }
  out->len = acc.len;
  fr_buf_free(&acc);
  /* What is handed back must load, with the same files: a check of the edit, not of the user's graph. */
  struct fr_graph *g2 = NULL;
  rc = fr_graph_load_string(out->text, out->len, g->path, g->dir, opts, &g2, err);
  fr_graph_free(g2);
  if (rc != FR_OK && rc != FR_E_NOMEM)
    return fr_err_prefix(err, FR_E_INVALID, "the pinned graph does not load (a bug): ");
  return rc;
}
