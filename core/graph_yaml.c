/* A YAML document tree from libyaml events, with duplicate-key detection and limits (graph_yaml.h). */
#include "core/graph_yaml.h"

#include <stdlib.h>
#include <string.h>
#include <yaml.h>

struct fr__yframe {
  struct fr_ynode *node;
  struct fr_ynode **items; /* fr_realloc'd while the collection is open */
  int n, cap;
  char *anchor; /* fr_strdup'd, registered when the collection ends */
};

struct fr__yanchor {
  const char *name;
  struct fr_ynode *node;
};

struct fr__yparser {
  struct fr_arena *a;
  const char *file;
  struct fr_err *err;
  struct fr__yframe stack[FR_YAML_MAX_DEPTH + 1];
  int sp; /* open collections */
  struct fr__yanchor anchors[FR_YAML_MAX_ANCHORS];
  int n_anchors;
  struct fr_ynode *root;
};

static enum fr_status fr__yfail(struct fr__yparser *p, int line, int col, const char *what) {
  return fr_errf(p->err, FR_E_INVALID, "%s:%d:%d: %s", p->file, line, col, what);
}

static enum fr_status fr__yanchor_add(struct fr__yparser *p, const char *name, struct fr_ynode *n) {
  if (!name)
    return FR_OK;
  if (p->n_anchors == FR_YAML_MAX_ANCHORS)
    return fr_errf(p->err, FR_E_INVALID, "%s:%d:%d: more than %d YAML anchors", p->file, n->line, n->col,
                   FR_YAML_MAX_ANCHORS);
  const char *copy = fr_arena_strdup(p->a, name);
  if (!copy)
    return FR_E_NOMEM;
  p->anchors[p->n_anchors].name = copy;
  p->anchors[p->n_anchors++].node = n;
  return FR_OK;
}

/* Appends a finished node to the open collection (or makes it the root), counting its expanded size. */
static enum fr_status fr__yadd(struct fr__yparser *p, struct fr_ynode *item, int line, int col) {
  if (p->sp == 0) {
    p->root = item;
    return FR_OK;
  }
  struct fr__yframe *f = &p->stack[p->sp - 1];
  if (f->node->kind == FR_Y_MAP && f->n % 2 == 0 && item->kind != FR_Y_SCALAR)
    return fr__yfail(p, line, col, "expected a plain key (text), found a list or mapping used as a key");
  if (f->n == f->cap) {
    int cap = f->cap ? f->cap * 2 : 8;
    struct fr_ynode **items = fr_realloc(f->items, (size_t)cap * sizeof *items);
    if (!items)
      return FR_E_NOMEM;
    f->items = items;
    f->cap = cap;
  }
  f->items[f->n++] = item;
  f->node->weight += item->weight;
  if (f->node->weight > FR_YAML_MAX_EXPANDED)
    return fr_errf(p->err, FR_E_INVALID,
                   "%s:%d:%d: the document is too large with its aliases expanded (more than %ld YAML "
                   "nodes); use fewer aliases",
                   p->file, line, col, FR_YAML_MAX_EXPANDED);
  return FR_OK;
}

struct fr__ykey {
  const struct fr_ynode *k;
  int idx;
};

static int fr__ykey_cmp(const void *a, const void *b) {
  const struct fr__ykey *x = a, *y = b;
  if (x->k->len != y->k->len)
    return x->k->len < y->k->len ? -1 : 1;
  int c = memcmp(x->k->s, y->k->s, x->k->len);
  if (c)
    return c;
  return x->idx - y->idx;
}

/* Rejects a mapping that has the same key twice (libyaml does not), naming the later one. */
static enum fr_status fr__ycheck_dups(struct fr__yparser *p, const struct fr_ynode *m) {
  int n = m->n;
  if (n < 2)
    return FR_OK;
  struct fr__ykey *keys = fr_malloc((size_t)n * sizeof *keys);
  if (!keys)
    return FR_E_NOMEM;
  for (int i = 0; i < n; i++)
    keys[i] = (struct fr__ykey){m->items[2 * i], i};
  qsort(keys, (size_t)n, sizeof *keys, fr__ykey_cmp);
  int first = -1, second = -1;
  for (int i = 1; i < n; i++) {
    const struct fr_ynode *a = keys[i - 1].k, *b = keys[i].k;
    if (a->len == b->len && memcmp(a->s, b->s, a->len) == 0 && (second < 0 || keys[i].idx < second)) {
      first = keys[i - 1].idx;
      second = keys[i].idx;
    }
  }
  fr_free(keys);
  if (second < 0)
    return FR_OK;
  const struct fr_ynode *k1 = m->items[2 * first], *k2 = m->items[2 * second];
  return fr_errf(p->err, FR_E_INVALID,
                 "%s:%d:%d: duplicate key '%s' (first defined at line %d); keys must be unique", p->file,
                 k2->line, k2->col, k2->s, k1->line);
}

static struct fr_ynode *fr__ynew(struct fr__yparser *p, enum fr_ykind kind, const yaml_mark_t *m) {
  struct fr_ynode *n = fr_arena_alloc(p->a, sizeof *n);
  if (n) {
    n->kind = kind;
    n->line = (int)m->line + 1;
    n->col = (int)m->column + 1;
    n->weight = 1;
  }
  return n;
}

static enum fr_status fr__yevent(struct fr__yparser *p, const yaml_event_t *ev, int *docs) {
  const yaml_mark_t *m = &ev->start_mark;
  int line = (int)m->line + 1, col = (int)m->column + 1;
  enum fr_status rc;
  switch (ev->type) {
  case YAML_DOCUMENT_START_EVENT:
    if (++*docs > 1)
      return fr__yfail(p, line, col, "a second YAML document; a graph file holds exactly one document");
    return FR_OK;
  case YAML_SCALAR_EVENT: {
    struct fr_ynode *n = fr__ynew(p, FR_Y_SCALAR, m);
    if (!n)
      return FR_E_NOMEM;
    const char *v = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    if (memchr(v, 0, len))
      return fr__yfail(p, line, col, "text with a NUL character; expected text without \\0");
    char *s = fr_arena_strndup(p->a, v, len);
    if (!s)
      return FR_E_NOMEM;
    n->s = s;
    n->len = len;
    n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !ev->data.scalar.tag;
    n->end_line = (int)ev->end_mark.line + 1;
    n->end_col = (int)ev->end_mark.column + 1;
    if ((rc = fr__yanchor_add(p, (const char *)ev->data.scalar.anchor, n)))
      return rc;
    return fr__yadd(p, n, line, col);
  }
  case YAML_SEQUENCE_START_EVENT:
  case YAML_MAPPING_START_EVENT: {
    if (p->sp == FR_YAML_MAX_DEPTH)
      return fr_errf(p->err, FR_E_INVALID, "%s:%d:%d: nesting deeper than %d levels", p->file, line, col,
                     FR_YAML_MAX_DEPTH);
    bool map = ev->type == YAML_MAPPING_START_EVENT;
    struct fr_ynode *n = fr__ynew(p, map ? FR_Y_MAP : FR_Y_SEQ, m);
    if (!n)
      return FR_E_NOMEM;
    const yaml_char_t *anchor = map ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor;
    struct fr__yframe *f = &p->stack[p->sp++];
    memset(f, 0, sizeof *f);
    f->node = n;
    if (anchor && !(f->anchor = fr_strdup((const char *)anchor)))
      return FR_E_NOMEM;
    return FR_OK;
  }
  case YAML_SEQUENCE_END_EVENT:
  case YAML_MAPPING_END_EVENT: {
    struct fr__yframe *f = &p->stack[p->sp - 1];
    struct fr_ynode *n = f->node;
    if (f->n) {
      n->items = fr_arena_alloc(p->a, (size_t)f->n * sizeof *n->items);
      if (!n->items)
        return FR_E_NOMEM;
      memcpy(n->items, f->items, (size_t)f->n * sizeof *n->items);
    }
    n->n = n->kind == FR_Y_MAP ? f->n / 2 : f->n;
    if (n->kind == FR_Y_MAP && (rc = fr__ycheck_dups(p, n)))
      return rc;
    /* Registered only now, so an alias inside its own anchor's node (a cycle) is an unknown anchor. */
    rc = fr__yanchor_add(p, f->anchor, n);
    fr_free(f->items);
    fr_free(f->anchor);
    p->sp--;
    if (rc)
      return rc;
    return fr__yadd(p, n, n->line, n->col);
  }
  case YAML_ALIAS_EVENT: {
    const char *name = (const char *)ev->data.alias.anchor;
    for (int i = p->n_anchors - 1; i >= 0; i--)
      if (strcmp(p->anchors[i].name, name) == 0)
        return fr__yadd(p, p->anchors[i].node, line, col);
    return fr_errf(p->err, FR_E_INVALID, "%s:%d:%d: alias *%s refers to no anchor &%s defined before it",
                   p->file, line, col, name, name);
  }
  default: return FR_OK;
  }
}

/* 1-based line and column of a byte offset (libyaml reports reader errors by offset). */
static void fr__yoffset_pos(const char *text, size_t len, size_t off, int *line, int *col) {
  *line = 1;
  *col = 1;
  for (size_t i = 0; i < off && i < len; i++) {
    if (text[i] == '\n') {
      ++*line;
      *col = 1;
    } else {
      ++*col;
    }
  }
}

enum fr_status fr_yaml_parse(struct fr_arena *a, const char *text, size_t len, const char *file,
                             struct fr_ynode **root, struct fr_err *err) {
  *root = NULL;
  if (len > FR_YAML_MAX_BYTES)
    return fr_errf(err, FR_E_INVALID, "%s:1:1: the document is %zu bytes; the limit is %u bytes (4 MiB)",
                   file, len, FR_YAML_MAX_BYTES);
  struct fr__yparser *p = fr_calloc(1, sizeof *p);
  if (!p)
    return FR_E_NOMEM;
  p->a = a;
  p->file = file;
  p->err = err;
  yaml_parser_t yp;
  if (!yaml_parser_initialize(&yp)) {
    fr_free(p);
    return FR_E_NOMEM;
  }
  yaml_parser_set_input_string(&yp, (const unsigned char *)text, len);
  enum fr_status rc = FR_OK;
  int docs = 0;
  for (bool done = false; !done && rc == FR_OK;) {
    yaml_event_t ev;
    if (!yaml_parser_parse(&yp, &ev)) {
      if (yp.error == YAML_MEMORY_ERROR) {
        rc = FR_E_NOMEM;
        break;
      }
      int line = (int)yp.problem_mark.line + 1, col = (int)yp.problem_mark.column + 1;
      if (yp.error == YAML_READER_ERROR)
        fr__yoffset_pos(text, len, yp.problem_offset, &line, &col);
      rc = fr_errf(err, FR_E_FORMAT, "%s:%d:%d: YAML syntax error: %s%s%s%s", file, line, col,
                   yp.problem ? yp.problem : "malformed YAML", yp.context ? " (" : "",
                   yp.context ? yp.context : "", yp.context ? ")" : "");
      break;
    }
    done = ev.type == YAML_STREAM_END_EVENT;
    rc = fr__yevent(p, &ev, &docs);
    yaml_event_delete(&ev);
  }
  if (rc == FR_E_NOMEM)
    fr_errf(err, FR_E_NOMEM, "%s: out of memory while reading YAML", file);
  for (int i = 0; i < p->sp; i++) {
    fr_free(p->stack[i].items);
    fr_free(p->stack[i].anchor);
  }
  if (rc == FR_OK)
    *root = p->root;
  yaml_parser_delete(&yp);
  fr_free(p);
  return rc;
}

const struct fr_ynode *fr_ymap_get(const struct fr_ynode *m, const char *key) {
  for (int i = 0; m && m->kind == FR_Y_MAP && i < m->n; i++)
    if (!strcmp(m->items[2 * i]->s, key))
      return m->items[2 * i + 1];
  return NULL;
}

size_t fr_yaml_offset(const char *text, size_t len, int line, int col) {
  size_t i = 0;
  for (int l = 1; l < line && i < len; i++)
    if (text[i] == '\n')
      l++;
  for (int c = 1; c < col && i < len && text[i] != '\n'; c++) {
    i++;
    while (i < len && ((unsigned char)text[i] & 0xC0) == 0x80) /* UTF-8 continuation bytes */
      i++;
  }
  return i;
}
