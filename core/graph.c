/* Workflow graphs: YAML -> validated flat graph (graph.h; the format is docs/graph-format.md).
 *
 * Loading runs in three phases:
 *   1. each file is parsed into a YAML tree (graph_yaml.c), once per file;
 *   2. each graph (the top one, then every subgraph used as a node, recursively) is instantiated as a
 *      scope: its params, declared inputs and outputs are read, its real nodes become flat nodes with
 *      ids "outer/inner", literals are typed, range-checked and file-resolved at once, and links are kept
 *      as written (scope, node, output) because they may point at a subgraph's declared output;
 *   3. links are resolved through subgraph outputs to flat nodes, type-checked, and the graph is sorted
 *      topologically (a leftover is a cycle, reported by name).
 * Everything, including the YAML trees, lives in the graph's arena. */
#include "core/graph.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/buf.h"
#include "core/graph_yaml.h"
#include "core/pins.h"
#include "core/roots.h"

#define FR__MAX_NODES 10000 /* flat nodes plus subgraph instances */
#define FR__MAX_NESTING 32  /* subgraphs within subgraphs */
#define FR__MAX_NAMES 1000  /* params or declared inputs or outputs of one graph */

struct fr__file {
  const char *path;     /* as shown in messages */
  const char *disp_dir; /* folder of path, for showing the paths of subgraphs it uses */
  const char *dir;      /* folder for resolving relative names */
  const char *real;     /* realpath, for recursion checks and sharing; NULL for a string */
  struct fr_ynode *root;
  struct fr__file *next;
};

/* A typed primitive before it becomes a binding. */
struct fr__lit {
  const char *type; /* FR_T_INT FLOAT BOOL STRING (an ENUM value is a STRING) */
  int64_t i;
  double f;
  bool b;
  const char *s;
  const char *dir;    /* folder of the file it was written in (relative FR_IN_FILE names) */
  const char *origin; /* "param steps", "input radius", "--set steps", or NULL for a literal */
  const char *pin;    /* written as {file: NAME, sha256: HEX}: HEX normalised (core/pins.h), else NULL */
};

enum fr__skind { FR__S_NONE, FR__S_LIT, FR__S_LINK };

struct fr__scope;
struct fr__src {
  enum fr__skind kind;
  struct fr__lit lit;
  struct fr__scope *scope; /* link: the scope its node name is looked up in */
  const char *node, *out;  /* link as written; out NULL: the first output */
  struct fr_srcpos pos;    /* where it was written (the use of $name for params and inputs) */
  const char *want_type;   /* link passed through a subgraph's declared input of this type */
};

struct fr__param {
  const char *name, *type, *help;
  struct fr__lit def, value;
  struct fr_srcpos pos;
};

struct fr__decl { /* a declared input of a graph used as a node */
  const char *name, *type, *help;
  struct fr__src def; /* FR__S_NONE: required */
  struct fr__src bound;
  struct fr_srcpos pos;
};

struct fr__out { /* a declared output: name -> node.output */
  const char *name, *node, *out;
  struct fr_srcpos pos;
};

struct fr__local {
  const char *id;
  int flat;                /* index into the flat nodes, or -1 for a subgraph */
  struct fr__scope *child; /* subgraph instance */
  const char *type;
  struct fr_srcpos pos;
};

struct fr__scope {
  struct fr__scope *parent, *next;
  struct fr__file *file;
  const char *prefix;          /* "" or "outer/" */
  const char *via;             /* "subgraph edges.yaml used by node 'e' at main.yaml:3:5", or NULL */
  const struct fr_ynode *root; /* its document: file->root, or an inline graph of file's graphs: */
  int depth;
  int n_params, n_decls, n_outs, n_locals;
  struct fr__param *params;
  struct fr__decl *decls;
  struct fr__out *outs;
  struct fr__local *locals; /* sorted by id once all are known */
};

struct fr__fnode {
  struct fr_gnode g;
  struct fr__src *links; /* pending links, spec->n_inputs entries (kind FR__S_LINK or none) */
};

struct fr__ld {
  struct fr_arena *a;
  const struct fr_load_opts *opts;
  const struct fr_registry *reg;
  struct fr_err *err;
  struct fr__file *files;
  struct fr__scope *scopes, *top;
  struct fr__fnode *flat;
  int n_flat, cap_flat;
  int n_counted; /* flat nodes plus subgraph instances, against FR__MAX_NODES */
};

/* ---------------------------------------------------------------- messages */

#define FR__NOMEM(ld) fr_errf((ld)->err, FR_E_NOMEM, "out of memory while loading the graph")

static enum fr_status fr__fail(struct fr__ld *ld, const struct fr__scope *sc, struct fr_srcpos pos,
                               const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Writes "file:line:col: message" (plus where a subgraph was used) and returns FR_E_INVALID. */
static enum fr_status fr__fail(struct fr__ld *ld, const struct fr__scope *sc, struct fr_srcpos pos,
                               const char *fmt, ...) {
  if (!ld->err)
    return FR_E_INVALID;
  char *m = ld->err->msg;
  size_t cap = sizeof ld->err->msg;
  int n = snprintf(m, cap, "%s:%d:%d: ", pos.file ? pos.file : "?", pos.line, pos.col);
  if (n < 0 || (size_t)n >= cap)
    return FR_E_INVALID;
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(m + n, cap - (size_t)n, fmt, ap);
  va_end(ap);
  if (k >= 0 && (size_t)(n + k) < cap && sc && sc->via)
    snprintf(m + n + k, cap - (size_t)(n + k), " (in %s)", sc->via);
  return FR_E_INVALID;
}

/* "a, b, c" for messages that list what would have been valid. */
struct fr__names {
  char s[400];
  size_t len;
};
static void fr__names_add(struct fr__names *nl, const char *name) {
  if (nl->len + 8 >= sizeof nl->s)
    return;
  int k = snprintf(nl->s + nl->len, sizeof nl->s - nl->len, "%s%s", nl->len ? ", " : "", name);
  if (k < 0 || nl->len + (size_t)k >= sizeof nl->s - 5) {
    snprintf(nl->s + nl->len, sizeof nl->s - nl->len, ", ...");
    nl->len = sizeof nl->s - 1;
    return;
  }
  nl->len += (size_t)k;
}
static const char *fr__names_or(struct fr__names *nl, const char *none) {
  return nl->len ? nl->s : none;
}

static struct fr_srcpos fr__pos(const struct fr__scope *sc, const struct fr_ynode *n) {
  return (struct fr_srcpos){sc->file->path, n->line, n->col};
}

/* ---------------------------------------------------------------- small helpers */

static const struct fr_ynode *fr__key(const struct fr_ynode *m, int i) {
  return m->items[2 * i];
}
static const struct fr_ynode *fr__val(const struct fr_ynode *m, int i) {
  return m->items[2 * i + 1];
}

static bool fr__is_null(const struct fr_ynode *n) {
  return n->kind == FR_Y_SCALAR && n->plain &&
         (n->len == 0 || !strcmp(n->s, "~") || !strcmp(n->s, "null") || !strcmp(n->s, "Null") ||
          !strcmp(n->s, "NULL"));
}

/* Node ids and names: [A-Za-z_][A-Za-z0-9_-]* */
static bool fr__is_id(const char *s) {
  if (!(isalpha((unsigned char)s[0]) || s[0] == '_'))
    return false;
  for (const char *p = s + 1; *p; p++)
    if (!(isalnum((unsigned char)*p) || *p == '_' || *p == '-'))
      return false;
  return true;
}

static bool fr__ends_with(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && strcmp(s + a - b, suf) == 0;
}

static const char *fr__describe(const struct fr_ynode *n) {
  if (n->kind == FR_Y_SEQ)
    return "a list";
  if (n->kind == FR_Y_MAP)
    return "a mapping";
  return fr__is_null(n) ? "nothing" : "text";
}

/* A mapping, or NULL for an empty value (`params:` with nothing after it). */
static enum fr_status fr__want_map(struct fr__ld *ld, const struct fr__scope *sc, const struct fr_ynode *n,
                                   const char *what, const struct fr_ynode **out) {
  *out = NULL;
  if (fr__is_null(n))
    return FR_OK;
  if (n->kind != FR_Y_MAP)
    return fr__fail(ld, sc, fr__pos(sc, n), "%s: expected a mapping (name: value), found %s", what,
                    fr__describe(n));
  *out = n;
  return FR_OK;
}

/* Edit distance, case-insensitive, for "did you mean". */
static int fr__distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 64 || lb > 64)
    return INT_MAX;
  int row[65];
  for (size_t j = 0; j <= lb; j++)
    row[j] = (int)j;
  for (size_t i = 1; i <= la; i++) {
    int prev = row[0];
    row[0] = (int)i;
    for (size_t j = 1; j <= lb; j++) {
      int cur = row[j];
      int sub = prev + (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
      int best = row[j] + 1 < row[j - 1] + 1 ? row[j] + 1 : row[j - 1] + 1;
      row[j] = sub < best ? sub : best;
      prev = cur;
    }
  }
  return row[lb];
}

/* ---------------------------------------------------------------- literals */

static bool fr__is_int_text(const char *s) {
  const char *p = s + (*s == '+' || *s == '-');
  if (!isdigit((unsigned char)*p))
    return false;
  while (isdigit((unsigned char)*p))
    p++;
  return *p == 0;
}

static bool fr__is_float_text(const char *s) {
  const char *p = s + (*s == '+' || *s == '-');
  bool digits = false;
  while (isdigit((unsigned char)*p))
    p++, digits = true;
  if (*p == '.')
    for (p++; isdigit((unsigned char)*p); p++)
      digits = true;
  if (!digits)
    return false;
  if (*p == 'e' || *p == 'E') {
    p++;
    p += *p == '+' || *p == '-';
    if (!isdigit((unsigned char)*p))
      return false;
    while (isdigit((unsigned char)*p))
      p++;
  }
  return *p == 0;
}

static int fr__bool_text(const char *s) { /* 1 true, 0 false, -1 neither */
  if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
    return 1;
  if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
    return 0;
  return -1;
}

/* Parses text as a value of a primitive type. On failure writes what was expected into why. */
static bool fr__text_lit(const char *s, const char *type, const char *const *choices, struct fr__lit *out,
                         char *why, size_t whylen) {
  memset(out, 0, sizeof *out);
  if (!strcmp(type, FR_T_INT)) {
    out->type = FR_T_INT;
    if (!fr__is_int_text(s)) {
      snprintf(why, whylen, "expected an integer%s, got '%.80s'",
               fr__is_float_text(s) ? " (no fraction)" : "", s);
      return false;
    }
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno == ERANGE) {
      snprintf(why, whylen, "integer %.80s is out of range [%lld, %lld]", s, LLONG_MIN, LLONG_MAX);
      return false;
    }
    out->i = v;
    return true;
  }
  if (!strcmp(type, FR_T_FLOAT)) {
    out->type = FR_T_FLOAT;
    double v = fr__is_float_text(s) ? strtod(s, NULL) : NAN;
    if (!isfinite(v)) {
      snprintf(why, whylen, "expected a number, got '%.80s'", s);
      return false;
    }
    out->f = v;
    return true;
  }
  if (!strcmp(type, FR_T_BOOL)) {
    out->type = FR_T_BOOL;
    int b = fr__bool_text(s);
    if (b < 0) {
      snprintf(why, whylen, "expected true or false, got '%.80s'", s);
      return false;
    }
    out->b = b;
    return true;
  }
  out->type = FR_T_STRING;
  out->s = s;
  if (!strcmp(type, FR_T_ENUM) && choices) {
    for (const char *const *c = choices; *c; c++)
      if (!strcmp(*c, s))
        return true;
    struct fr__names nl = {0};
    for (const char *const *c = choices; *c; c++)
      fr__names_add(&nl, *c);
    snprintf(why, whylen, "'%.80s' is not one of: %s", s, nl.s);
    return false;
  }
  return true;
}

/* Converts a literal of one type to the type an input expects: equal types, INT to FLOAT, STRING to ENUM
 * (one of the choices). why says what went wrong. */
static bool fr__convert(struct fr__lit *l, const struct fr_input_spec *in, char *why, size_t whylen) {
  const char *want = in->type;
  if (!strcmp(want, FR_T_ENUM) && !strcmp(l->type, FR_T_STRING)) {
    struct fr__lit tmp;
    if (!fr__text_lit(l->s, FR_T_ENUM, in->choices, &tmp, why, whylen))
      return false;
    return true;
  }
  if (!strcmp(want, FR_T_FLOAT) && !strcmp(l->type, FR_T_INT)) {
    l->f = (double)l->i;
    l->type = FR_T_FLOAT;
    return true;
  }
  if (!strcmp(want, l->type))
    return true;
  snprintf(why, whylen, "expected %s, got a value of type %s", want, l->type);
  return false;
}

static bool fr__in_range(const struct fr__lit *l, const struct fr_input_spec *in, char *why, size_t whylen) {
  if (!fr_input_has_range(in))
    return true;
  double v;
  if (!strcmp(l->type, FR_T_INT))
    v = (double)l->i;
  else if (!strcmp(l->type, FR_T_FLOAT))
    v = l->f;
  else
    return true;
  if (v >= in->min && v <= in->max)
    return true;
  if (!strcmp(l->type, FR_T_INT))
    snprintf(why, whylen, "%lld is out of range [%.17g, %.17g]", (long long)l->i, in->min, in->max);
  else
    snprintf(why, whylen, "%.17g is out of range [%.17g, %.17g]", l->f, in->min, in->max);
  return false;
}

static struct fr_value *fr__lit_value(struct fr_arena *a, const struct fr__lit *l) {
  struct fr_value *v = fr_arena_alloc(a, sizeof *v);
  if (!v)
    return NULL;
  v->refcount = 1;
  v->type = l->type;
  if (!strcmp(l->type, FR_T_INT)) {
    v->kind = FR_V_INT;
    v->i = l->i;
  } else if (!strcmp(l->type, FR_T_FLOAT)) {
    v->kind = FR_V_FLOAT;
    v->f = l->f;
  } else if (!strcmp(l->type, FR_T_BOOL)) {
    v->kind = FR_V_BOOL;
    v->b = l->b;
  } else {
    v->kind = FR_V_STRING;
    if (!(v->s = fr_arena_strdup(a, l->s)))
      return NULL;
  }
  return v;
}

/* The type of a param written in short form: plain numbers and booleans are typed, the rest is STRING. */
static const char *fr__infer_type(const struct fr_ynode *n) {
  if (!n->plain)
    return FR_T_STRING;
  if (fr__is_int_text(n->s))
    return FR_T_INT;
  if (fr__is_float_text(n->s))
    return FR_T_FLOAT;
  if (fr__bool_text(n->s) >= 0)
    return FR_T_BOOL;
  return FR_T_STRING;
}

/* ---------------------------------------------------------------- files */

static char *fr__join(struct fr_arena *a, const char *dir, const char *name) {
  if (name[0] == '/' || !dir || !dir[0] || !strcmp(dir, "."))
    return fr_arena_strdup(a, name);
  return fr_arena_printf(a, "%s%s%s", dir, fr__ends_with(dir, "/") ? "" : "/", name);
}

static char *fr__dirname(struct fr_arena *a, const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash)
    return fr_arena_strdup(a, ".");
  if (slash == path)
    return fr_arena_strdup(a, "/");
  return fr_arena_strndup(a, path, (size_t)(slash - path));
}

static bool fr__exists(const char *path, bool dir_ok) {
  struct stat st;
  return stat(path, &st) == 0 && (dir_ok || !S_ISDIR(st.st_mode));
}

/* A pinned model file that is not under its name: the first file of the model folders with that hash
 * (core/pins.h), into *path. FR_E_NOTFOUND when none has it; other errors name the input. */
static enum fr_status fr__find_pinned(struct fr__ld *ld, const struct fr__scope *sc, const struct fr__lit *l,
                                      struct fr_srcpos pos, const char *what, const char **path) {
  char *found = NULL;
  struct fr_err ferr;
  enum fr_status rc = fr_pin_find(ld->opts->model_dirs, ld->opts->n_model_dirs, ld->opts->cache,
                                  ld->opts->memo, l->pin, &found, &ferr);
  if (rc == FR_E_NOTFOUND)
    return rc;
  if (rc == FR_E_NOMEM)
    return FR__NOMEM(ld);
  if (rc != FR_OK)
    return fr__fail(ld, sc, pos, "%s: looking for a file with sha256 %s: %s", what, l->pin, ferr.msg);
  char real[PATH_MAX];
  if (ld->opts->n_read_roots > 0 &&
      fr_roots_check(ld->opts->read_roots, ld->opts->n_read_roots, found, real) != FR_ROOT_INSIDE) {
    fr_free(found); /* a confined graph reads nothing outside its folders, found by hash or not */
    return FR_E_NOTFOUND;
  }
  *path = fr_arena_strdup(ld->a, ld->opts->n_read_roots > 0 ? real : found);
  fr_free(found);
  return *path ? FR_OK : FR__NOMEM(ld);
}

/* A file a confined graph may not read (graph.h read_roots): the message names the file as written and the
 * allowed folders, and is the same whether or not anything exists at that path. */
static enum fr_status fr__fail_outside(struct fr__ld *ld, const struct fr__scope *sc, struct fr_srcpos pos,
                                       const char *what, const char *kind, const char *name) {
  struct fr__names roots = {0};
  for (int i = 0; i < ld->opts->n_read_roots; i++)
    fr__names_add(&roots, ld->opts->read_roots[i]);
  return fr__fail(ld, sc, pos, "%s: %s '%s' is outside the folders this graph may read from (%s)", what, kind,
                  name, fr__names_or(&roots, "none"));
}

/* Resolves the name given to an FR_IN_FILE / FR_IN_MODEL_FILE input (see graph.h). *path is NULL when not
 * found and files are not required; *by_hash tells that a pinned model file was found by its hash. */
static enum fr_status fr__resolve_file(struct fr__ld *ld, const struct fr__scope *sc,
                                       const struct fr_input_spec *in, const struct fr__lit *l,
                                       struct fr_srcpos pos, const char *what, const char **path,
                                       bool *by_hash) {
  *path = NULL;
  *by_hash = false;
  const char *name = l->s;
  bool model = in->flags & FR_IN_MODEL_FILE;
  struct fr__names tried = {0};
  const char *cand[1 + 64];
  int nc = 0;
  if (name[0] == '/') {
    cand[nc++] = name;
  } else if (name[0]) {
    /* each model folder as it is, then its subfolders for this kind of file (ComfyUI's layout) */
    const char *const *subs = fr_model_kind_folders(FR_IN_KIND_OF(in->flags));
    for (int i = 0; model && i < ld->opts->n_model_dirs && nc < 60; i++) {
      const char *dir = ld->opts->model_dirs[i];
      if (!(cand[nc++] = fr__join(ld->a, dir, name)))
        return FR__NOMEM(ld);
      for (int k = 0; subs[k] && nc < 60; k++) {
        char *sub = fr__join(ld->a, dir, subs[k]);
        if (!sub || !(cand[nc++] = fr__join(ld->a, sub, name)))
          return FR__NOMEM(ld);
      }
    }
    if (!(cand[nc++] = fr__join(ld->a, l->dir, name)))
      return FR__NOMEM(ld);
    for (int i = 0; !model && i < ld->opts->n_input_dirs && nc < 64; i++)
      if (!(cand[nc++] = fr__join(ld->a, ld->opts->input_dirs[i], name)))
        return FR__NOMEM(ld);
  }
  bool outside = false;
  for (int i = 0; i < nc; i++) {
    if (ld->opts->n_read_roots > 0) {
      /* Confined: the first candidate inside the roots that exists, as its realpath. */
      char real[PATH_MAX];
      enum fr_root_verdict v = fr_roots_check(ld->opts->read_roots, ld->opts->n_read_roots, cand[i], real);
      outside |= v == FR_ROOT_OUTSIDE;
      if (v == FR_ROOT_INSIDE && fr__exists(real, model)) {
        if (!(*path = fr_arena_strdup(ld->a, real)))
          return FR__NOMEM(ld);
        return FR_OK;
      }
    } else if (fr__exists(cand[i], model)) {
      *path = cand[i];
      return FR_OK;
    }
    fr__names_add(&tried, cand[i]);
  }
  if (outside)
    return fr__fail_outside(ld, sc, pos, what, model ? "model file" : "input file", name);
  if (!ld->opts->require_files)
    return FR_OK;
  if (l->pin && model) {
    enum fr_status rc = fr__find_pinned(ld, sc, l, pos, what, path);
    *by_hash = rc == FR_OK;
    if (rc != FR_E_NOTFOUND)
      return rc;
    return fr__fail(ld, sc, pos,
                    "%s: model file '%s' not found; looked at: %s; and no file in the model folders has "
                    "its pinned sha256 %s",
                    what, name, fr__names_or(&tried, "nothing (empty name)"), l->pin);
  }
  return fr__fail(ld, sc, pos, "%s: %s file '%s' not found; looked at: %s", what, model ? "model" : "input",
                  name, fr__names_or(&tried, "nothing (empty name)"));
}

/* ---------------------------------------------------------------- values and links as written */

static enum fr_status fr__unknown_key(struct fr__ld *ld, const struct fr__scope *sc, const struct fr_ynode *k,
                                      const char *where, const char *const *valid);

static enum fr_status fr__parse_link(struct fr__ld *ld, struct fr__scope *sc, const struct fr_ynode *n,
                                     const char *what, struct fr__src *out) {
  if (n->kind != FR_Y_SCALAR || fr__is_null(n))
    return fr__fail(ld, sc, fr__pos(sc, n), "%s: expected a link 'node' or 'node.output', found %s", what,
                    fr__describe(n));
  const char *dot = strchr(n->s, '.');
  const char *node = dot ? fr_arena_strndup(ld->a, n->s, (size_t)(dot - n->s)) : n->s;
  if (!node)
    return FR__NOMEM(ld);
  if (!fr__is_id(node) || (dot && !dot[1]))
    return fr__fail(ld, sc, fr__pos(sc, n), "%s: expected a link 'node' or 'node.output', got '%s'", what,
                    n->s);
  memset(out, 0, sizeof *out);
  out->kind = FR__S_LINK;
  out->scope = sc;
  out->node = node;
  out->out = dot ? dot + 1 : NULL;
  out->pos = fr__pos(sc, n);
  return FR_OK;
}

static struct fr__decl *fr__find_decl(struct fr__scope *sc, const char *name) {
  for (int i = 0; i < sc->n_decls; i++)
    if (!strcmp(sc->decls[i].name, name))
      return &sc->decls[i];
  return NULL;
}
static struct fr__param *fr__find_param(struct fr__scope *sc, const char *name) {
  for (int i = 0; i < sc->n_params; i++)
    if (!strcmp(sc->params[i].name, name))
      return &sc->params[i];
  return NULL;
}

/* A mapping with a `file` key: a pin {file: NAME, sha256: HEX}. */
static bool fr__is_pin(const struct fr_ynode *n) {
  for (int i = 0; n->kind == FR_Y_MAP && i < n->n; i++)
    if (!strcmp(fr__key(n, i)->s, "file"))
      return true;
  return false;
}

/* Reads a pin {file: NAME, sha256: HEX}: *file the name's scalar, *pin the normalised hash (arena). */
static enum fr_status fr__read_pin(struct fr__ld *ld, const struct fr__scope *sc, const struct fr_ynode *n,
                                   const char *what, const struct fr_ynode **file, const char **pin) {
  static const char *const keys[] = {"file", "sha256", NULL};
  const struct fr_ynode *f = NULL, *h = NULL;
  for (int i = 0; i < n->n; i++) {
    const struct fr_ynode *k = fr__key(n, i), *v = fr__val(n, i);
    if (!strcmp(k->s, "file"))
      f = v;
    else if (!strcmp(k->s, "sha256"))
      h = v;
    else
      return fr__unknown_key(ld, sc, k, "in a model pin {file: NAME, sha256: HEX}", keys);
  }
  if (f->kind != FR_Y_SCALAR || fr__is_null(f))
    return fr__fail(ld, sc, fr__pos(sc, f), "%s: file: expected a file name, found %s", what,
                    fr__describe(f));
  if (!h)
    return fr__fail(ld, sc, fr__pos(sc, n), "%s: a pin {file: NAME, sha256: HEX} needs its sha256", what);
  char norm[FR_PIN_FULL_LEN + 1];
  if (h->kind != FR_Y_SCALAR || !fr_pin_parse(h->s, norm))
    return fr__fail(ld, sc, fr__pos(sc, h),
                    "%s: sha256: expected 64 hex digits (the file's SHA-256) or its first 10 (AutoV2), got "
                    "'%.80s'",
                    what, h->kind == FR_Y_SCALAR ? h->s : fr__describe(h));
  *file = f;
  return (*pin = fr_arena_strdup(ld->a, norm)) ? FR_OK : FR__NOMEM(ld);
}

/* Reads what an input is set to: a literal (typed as `type`), $name (a param or declared input of this
 * graph), {from: node.output}, or a link (socket types). Null leaves it unset. */
static enum fr_status fr__parse_src(struct fr__ld *ld, struct fr__scope *sc, const struct fr_ynode *n,
                                    const char *type, const char *const *choices, const char *what,
                                    struct fr__src *out) {
  memset(out, 0, sizeof *out);
  bool socket = !fr_type_is_primitive(type);
  if (n->kind == FR_Y_MAP && fr__is_pin(n)) {
    const struct fr_ynode *file;
    const char *pin;
    enum fr_status rc = fr__read_pin(ld, sc, n, what, &file, &pin);
    if (rc)
      return rc;
    if (strcmp(type, FR_T_STRING))
      return fr__fail(ld, sc, fr__pos(sc, n), "%s: a {file, sha256} pin names a model file; this input is %s",
                      what, type);
    char why[512];
    if (!fr__text_lit(file->s, type, choices, &out->lit, why, sizeof why))
      return fr__fail(ld, sc, fr__pos(sc, file), "%s: %s", what, why);
    out->kind = FR__S_LIT;
    out->lit.dir = sc->file->dir;
    out->lit.pin = pin;
    out->pos = fr__pos(sc, file);
    return FR_OK;
  }
  if (n->kind == FR_Y_MAP) {
    if (n->n != 1 || strcmp(fr__key(n, 0)->s, "from"))
      return fr__fail(ld, sc, fr__pos(sc, n), "%s: expected a value, a link or {from: node.output}", what);
    return fr__parse_link(ld, sc, fr__val(n, 0), what, out);
  }
  if (n->kind == FR_Y_SEQ)
    return fr__fail(ld, sc, fr__pos(sc, n), "%s: expected a %s, found a list", what,
                    socket ? "link 'node' or 'node.output'" : "single value");
  if (fr__is_null(n))
    return FR_OK;
  if (n->s[0] == '$' && n->s[1] != '$') {
    const char *name = n->s + 1;
    struct fr__decl *d = fr__find_decl(sc, name);
    if (d) {
      const struct fr__src *from = d->bound.kind != FR__S_NONE ? &d->bound : &d->def;
      if (from->kind == FR__S_NONE)
        return fr__fail(ld, sc, fr__pos(sc, n),
                        "%s: input $%s of this graph has no value: it has no default and is set only when "
                        "the graph is used as a node",
                        what, name);
      *out = *from;
      if (out->kind == FR__S_LIT)
        out->pos = fr__pos(sc, n);
      return FR_OK;
    }
    struct fr__param *p = fr__find_param(sc, name);
    if (p) {
      if (socket)
        return fr__fail(ld, sc, fr__pos(sc, n), "%s: param $%s is %s, but this input takes a link (%s)", what,
                        name, p->type, type);
      out->kind = FR__S_LIT;
      out->lit = p->value;
      out->pos = fr__pos(sc, n);
      return FR_OK;
    }
    struct fr__names ps = {0}, is = {0};
    for (int i = 0; i < sc->n_params; i++)
      fr__names_add(&ps, sc->params[i].name);
    for (int i = 0; i < sc->n_decls; i++)
      fr__names_add(&is, sc->decls[i].name);
    return fr__fail(ld, sc, fr__pos(sc, n), "%s: no param or input named '%s' (params: %s; inputs: %s)", what,
                    name, fr__names_or(&ps, "none"), fr__names_or(&is, "none"));
  }
  if (socket)
    return fr__parse_link(ld, sc, n, what, out);
  const char *text = n->s[0] == '$' ? n->s + 1 : n->s; /* "$$x" is the literal "$x" */
  char why[512];
  if (!fr__text_lit(text, type, choices, &out->lit, why, sizeof why))
    return fr__fail(ld, sc, fr__pos(sc, n), "%s: %s", what, why);
  out->kind = FR__S_LIT;
  out->lit.dir = sc->file->dir;
  out->pos = fr__pos(sc, n);
  return FR_OK;
}

/* ---------------------------------------------------------------- files and scopes */

static enum fr_status fr__add_file(struct fr__ld *ld, const char *path, const char *dir, const char *real,
                                   const char *text, size_t len, struct fr__file **out) {
  struct fr__file *f = fr_arena_alloc(ld->a, sizeof *f);
  if (!f)
    return FR__NOMEM(ld);
  f->path = path;
  f->dir = dir;
  f->real = real;
  if (!(f->disp_dir = fr__dirname(ld->a, path)))
    return FR__NOMEM(ld);
  enum fr_status rc = fr_yaml_parse(ld->a, text, len, path, &f->root, ld->err);
  if (rc)
    return rc;
  f->next = ld->files;
  ld->files = f;
  *out = f;
  return FR_OK;
}

/* Reads a whole file (at most the YAML size limit) into the arena. */
static enum fr_status fr__read_file(struct fr__ld *ld, const char *path, const char *shown, char **text,
                                    size_t *len) {
  FILE *fp = fopen(path, "rb");
  if (!fp)
    return fr_errf(ld->err, FR_E_IO, "%s: cannot open: %s", shown, strerror(errno));
  struct fr_buf b = {0};
  char chunk[65536];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, fp)) > 0 && b.len <= FR_YAML_MAX_BYTES)
    fr_buf_append(&b, chunk, n);
  bool bad = ferror(fp);
  fclose(fp);
  if (bad) {
    fr_buf_free(&b);
    return fr_errf(ld->err, FR_E_IO, "%s: read error", shown);
  }
  if (b.oom) {
    fr_buf_free(&b);
    return FR__NOMEM(ld);
  }
  if (b.len > FR_YAML_MAX_BYTES) {
    fr_buf_free(&b);
    return fr_errf(ld->err, FR_E_INVALID, "%s:1:1: the document is larger than the limit of %u bytes (4 MiB)",
                   shown, FR_YAML_MAX_BYTES);
  }
  *len = b.len;
  *text = fr_arena_strndup(ld->a, b.data ? b.data : "", b.len);
  fr_buf_free(&b);
  return *text ? FR_OK : FR__NOMEM(ld);
}

static bool fr__type_ok(const char *from, const char *to) {
  return !strcmp(from, to) || (!strcmp(from, FR_T_INT) && !strcmp(to, FR_T_FLOAT)) ||
         (!strcmp(from, FR_T_STRING) && !strcmp(to, FR_T_ENUM));
}

static enum fr_status fr__check_graphs(struct fr__ld *ld, const struct fr__scope *sc,
                                       const struct fr_ynode *root, const struct fr_ynode *v);

static const char *const fr__top_keys[] = {"flowrun", "description", "params", "inputs",
                                           "outputs", "nodes",       "graphs", NULL};

static enum fr_status fr__unknown_key(struct fr__ld *ld, const struct fr__scope *sc, const struct fr_ynode *k,
                                      const char *where, const char *const *valid) {
  struct fr__names nl = {0};
  for (const char *const *v = valid; *v; v++)
    fr__names_add(&nl, *v);
  return fr__fail(ld, sc, fr__pos(sc, k), "unknown key '%s' %s; expected one of: %s", k->s, where, nl.s);
}

/* The array for a params / inputs / outputs section of m->n entries, or NULL with *rc set (too many
 * entries, out of memory). */
static void *fr__section(struct fr__ld *ld, const struct fr__scope *sc, const struct fr_ynode *m,
                         const char *what, size_t elem, enum fr_status *rc) {
  if (m->n > FR__MAX_NAMES) {
    *rc = fr__fail(ld, sc, fr__pos(sc, m), "more than %d %s", FR__MAX_NAMES, what);
    return NULL;
  }
  void *p = fr_arena_alloc(ld->a, (size_t)(m->n ? m->n : 1) * elem);
  if (!p)
    *rc = FR__NOMEM(ld);
  return p;
}

static enum fr_status fr__read_params(struct fr__ld *ld, struct fr__scope *sc, const struct fr_ynode *m) {
  if (!m)
    return FR_OK;
  enum fr_status rc;
  if (!(sc->params = fr__section(ld, sc, m, "params", sizeof *sc->params, &rc)))
    return rc;
  static const char *const keys[] = {"type", "default", "help", NULL};
  char why[512];
  for (int i = 0; i < m->n; i++) {
    const struct fr_ynode *k = fr__key(m, i), *v = fr__val(m, i);
    struct fr__param *p = &sc->params[sc->n_params++];
    p->name = k->s;
    p->pos = fr__pos(sc, k);
    if (!fr__is_id(k->s))
      return fr__fail(ld, sc, p->pos, "param name '%s' is not valid; expected letters, digits, _ or -", k->s);
    const struct fr_ynode *defn = v;
    const char *pin = NULL;
    char pwhat[160];
    snprintf(pwhat, sizeof pwhat, "param %s", p->name);
    if (fr__is_pin(v)) { /* name: {file: NAME, sha256: HEX}, a STRING param */
      if ((rc = fr__read_pin(ld, sc, v, pwhat, &defn, &pin)))
        return rc;
      p->type = FR_T_STRING;
    } else if (v->kind == FR_Y_MAP) {
      const struct fr_ynode *type = NULL;
      defn = NULL;
      for (int j = 0; j < v->n; j++) {
        const struct fr_ynode *kk = fr__key(v, j), *vv = fr__val(v, j);
        if (!strcmp(kk->s, "type"))
          type = vv;
        else if (!strcmp(kk->s, "default"))
          defn = vv;
        else if (!strcmp(kk->s, "help"))
          p->help = vv->kind == FR_Y_SCALAR ? vv->s : NULL;
        else
          return fr__unknown_key(ld, sc, kk, "in a param", keys);
      }
      if (!type || type->kind != FR_Y_SCALAR ||
          (strcmp(type->s, FR_T_INT) && strcmp(type->s, FR_T_FLOAT) && strcmp(type->s, FR_T_BOOL) &&
           strcmp(type->s, FR_T_STRING)))
        return fr__fail(ld, sc, fr__pos(sc, type ? type : v),
                        "param %s: expected type: INT, FLOAT, BOOL or STRING", p->name);
      p->type = type->s;
      if (!defn)
        return fr__fail(ld, sc, fr__pos(sc, v), "param %s: expected a default value", p->name);
      if (fr__is_pin(defn)) {
        if (strcmp(p->type, FR_T_STRING))
          return fr__fail(ld, sc, fr__pos(sc, defn), "param %s: a {file, sha256} pin is a STRING, not %s",
                          p->name, p->type);
        if ((rc = fr__read_pin(ld, sc, defn, pwhat, &defn, &pin)))
          return rc;
      }
    } else if (v->kind == FR_Y_SCALAR && !fr__is_null(v)) {
      p->type = fr__infer_type(v);
    }
    if (!defn || defn->kind != FR_Y_SCALAR || fr__is_null(defn))
      return fr__fail(ld, sc, fr__pos(sc, defn ? defn : v),
                      "param %s: expected a value (42, 0.5, true, text) or {type: T, default: value}",
                      p->name);
    if (!fr__text_lit(defn->s, p->type, NULL, &p->def, why, sizeof why))
      return fr__fail(ld, sc, fr__pos(sc, defn), "param %s (%s): %s", p->name, p->type, why);
    p->def.dir = sc->file->dir;
    p->def.pin = pin;
    p->value = p->def;
    if (!(p->def.origin = fr_arena_printf(ld->a, "param %s", p->name)))
      return FR__NOMEM(ld);
    p->value.origin = p->def.origin;
  }
  return FR_OK;
}

static enum fr_status fr__read_decls(struct fr__ld *ld, struct fr__scope *sc, const struct fr_ynode *m) {
  if (!m)
    return FR_OK;
  enum fr_status rc;
  if (!(sc->decls = fr__section(ld, sc, m, "inputs", sizeof *sc->decls, &rc)))
    return rc;
  static const char *const keys[] = {"type", "default", "help", NULL};
  for (int i = 0; i < m->n; i++) {
    const struct fr_ynode *k = fr__key(m, i), *v = fr__val(m, i);
    struct fr__decl *d = &sc->decls[sc->n_decls++];
    d->name = k->s;
    d->pos = fr__pos(sc, k);
    if (!fr__is_id(k->s))
      return fr__fail(ld, sc, d->pos, "input name '%s' is not valid; expected letters, digits, _ or -", k->s);
    if (fr__find_param(sc, k->s))
      return fr__fail(ld, sc, d->pos, "input '%s' has the name of a param; names must be distinct", k->s);
    if (v->kind != FR_Y_MAP)
      return fr__fail(ld, sc, fr__pos(sc, v), "input %s: expected {type: T, default: value, help: text}",
                      d->name);
    const struct fr_ynode *defn = NULL;
    for (int j = 0; j < v->n; j++) {
      const struct fr_ynode *kk = fr__key(v, j), *vv = fr__val(v, j);
      if (!strcmp(kk->s, "type") && vv->kind == FR_Y_SCALAR && fr__is_id(vv->s))
        d->type = vv->s;
      else if (!strcmp(kk->s, "type"))
        return fr__fail(ld, sc, fr__pos(sc, vv), "input %s: expected a type name (IMAGE, INT, ...)", d->name);
      else if (!strcmp(kk->s, "default"))
        defn = vv;
      else if (!strcmp(kk->s, "help"))
        d->help = vv->kind == FR_Y_SCALAR ? vv->s : NULL;
      else
        return fr__unknown_key(ld, sc, kk, "in a graph input", keys);
    }
    if (!d->type)
      return fr__fail(ld, sc, fr__pos(sc, v), "input %s: expected type: T", d->name);
    if (defn && !fr_type_is_primitive(d->type))
      return fr__fail(ld, sc, fr__pos(sc, defn), "input %s: a %s input takes a link and has no default",
                      d->name, d->type);
    char what[160];
    snprintf(what, sizeof what, "default of input %s", d->name);
    if (defn && fr__parse_src(ld, sc, defn, d->type, NULL, what, &d->def))
      return FR_E_INVALID;
    if (d->def.kind == FR__S_LINK)
      return fr__fail(ld, sc, fr__pos(sc, defn), "input %s: a default must be a value, not a link", d->name);
    if (d->def.kind == FR__S_LIT && !(d->def.lit.origin = fr_arena_printf(ld->a, "input %s", d->name)))
      return FR__NOMEM(ld);
  }
  return FR_OK;
}

static enum fr_status fr__read_outs(struct fr__ld *ld, struct fr__scope *sc, const struct fr_ynode *m) {
  if (!m)
    return FR_OK;
  enum fr_status rc;
  if (!(sc->outs = fr__section(ld, sc, m, "outputs", sizeof *sc->outs, &rc)))
    return rc;
  for (int i = 0; i < m->n; i++) {
    const struct fr_ynode *k = fr__key(m, i);
    struct fr__out *o = &sc->outs[sc->n_outs++];
    o->name = k->s;
    if (!fr__is_id(k->s))
      return fr__fail(ld, sc, fr__pos(sc, k),
                      "output name '%s' is not valid; expected letters, digits, _ or -", k->s);
    char what[160];
    snprintf(what, sizeof what, "output %s", o->name);
    struct fr__src s;
    if (fr__parse_link(ld, sc, fr__val(m, i), what, &s))
      return FR_E_INVALID;
    o->node = s.node;
    o->out = s.out;
    o->pos = s.pos;
  }
  return FR_OK;
}

/* Reads a graph's header: format version, keys, params (with overrides for the top graph), declared
 * inputs and outputs. *nodes is its nodes mapping (NULL when empty). */
static enum fr_status fr__scope_header(struct fr__ld *ld, struct fr__scope *sc,
                                       const struct fr_ynode **nodes) {
  const struct fr_ynode *root = sc->root ? sc->root : sc->file->root;
  struct fr_srcpos top = {sc->file->path, 1, 1};
  *nodes = NULL;
  if (!root || root->kind != FR_Y_MAP || root->n == 0)
    return fr__fail(ld, sc, root ? fr__pos(sc, root) : top,
                    "expected a mapping that starts with 'flowrun: %d' (the format version)",
                    FR_FORMAT_VERSION);
  const struct fr_ynode *k0 = fr__key(root, 0), *v0 = fr__val(root, 0);
  if (strcmp(k0->s, "flowrun"))
    return fr__fail(ld, sc, fr__pos(sc, k0),
                    "expected 'flowrun: %d' (the format version) as the first key, found '%s'",
                    FR_FORMAT_VERSION, k0->s);
  if (v0->kind != FR_Y_SCALAR || !v0->plain || !fr__is_int_text(v0->s) ||
      strtol(v0->s, NULL, 10) != FR_FORMAT_VERSION)
    return fr__fail(ld, sc, fr__pos(sc, v0),
                    "format version '%s' is not supported; this flowrun reads version %d",
                    v0->kind == FR_Y_SCALAR ? v0->s : "(not text)", FR_FORMAT_VERSION);
  const struct fr_ynode *params = NULL, *decls = NULL, *outs = NULL;
  enum fr_status rc;
  for (int i = 1; i < root->n; i++) {
    const struct fr_ynode *k = fr__key(root, i), *v = fr__val(root, i);
    if (!strcmp(k->s, "description")) {
      if (v->kind != FR_Y_SCALAR)
        return fr__fail(ld, sc, fr__pos(sc, v), "description: expected text, found %s", fr__describe(v));
    } else if (!strcmp(k->s, "params")) {
      if ((rc = fr__want_map(ld, sc, v, "params", &params)))
        return rc;
    } else if (!strcmp(k->s, "inputs")) {
      if ((rc = fr__want_map(ld, sc, v, "inputs", &decls)))
        return rc;
    } else if (!strcmp(k->s, "outputs")) {
      if ((rc = fr__want_map(ld, sc, v, "outputs", &outs)))
        return rc;
    } else if (!strcmp(k->s, "nodes")) {
      if ((rc = fr__want_map(ld, sc, v, "nodes", nodes)))
        return rc;
    } else if (!strcmp(k->s, "graphs")) {
      if ((rc = fr__check_graphs(ld, sc, root, v)))
        return rc;
    } else {
      return fr__unknown_key(ld, sc, k, "at the top level", fr__top_keys);
    }
  }
  if ((rc = fr__read_params(ld, sc, params)) || (rc = fr__read_decls(ld, sc, decls)) ||
      (rc = fr__read_outs(ld, sc, outs)))
    return rc;
  if (sc->parent)
    return FR_OK;
  /* --set overrides apply to the top graph's params only. */
  for (int i = 0; i < ld->opts->n_overrides; i++) {
    const struct fr_override *o = &ld->opts->overrides[i];
    struct fr__param *p = o->name ? fr__find_param(sc, o->name) : NULL;
    if (!p) {
      struct fr__names nl = {0};
      for (int j = 0; j < sc->n_params; j++)
        fr__names_add(&nl, sc->params[j].name);
      return fr_errf(ld->err, FR_E_INVALID, "%s: --set %s: this graph has no param '%s'; its params are: %s",
                     sc->file->path, o->name ? o->name : "(null)", o->name ? o->name : "(null)",
                     fr__names_or(&nl, "none"));
    }
    char why[512];
    const char *text = o->value ? o->value : "";
    if (!fr__text_lit(text, p->type, NULL, &p->value, why, sizeof why))
      return fr__fail(ld, sc, p->pos, "--set %s=%s: param %s is %s: %s", o->name, text, p->name, p->type,
                      why);
    if (p->value.s && !(p->value.s = fr_arena_strdup(ld->a, p->value.s)))
      return FR__NOMEM(ld);
    p->value.dir = sc->file->dir;
    /* The pinned name itself keeps its pin (a picture re-run passes every param back); another drops it. */
    if (p->def.pin && p->value.s && !strcmp(p->value.s, p->def.s))
      p->value.pin = p->def.pin;
    if (!(p->value.origin = fr_arena_printf(ld->a, "--set %s", p->name)))
      return FR__NOMEM(ld);
  }
  return FR_OK;
}

static int fr__local_cmp(const void *a, const void *b) {
  return strcmp(((const struct fr__local *)a)->id, ((const struct fr__local *)b)->id);
}

static struct fr__local *fr__find_local(struct fr__scope *sc, const char *id) {
  struct fr__local key = {.id = id};
  return bsearch(&key, sc->locals, (size_t)sc->n_locals, sizeof key, fr__local_cmp);
}

static enum fr_status fr__count(struct fr__ld *ld, const struct fr__scope *sc, struct fr_srcpos pos) {
  if (++ld->n_counted > FR__MAX_NODES)
    return fr__fail(ld, sc, pos,
                    "more than %d nodes (counting the nodes of subgraphs and the subgraphs themselves)",
                    FR__MAX_NODES);
  return FR_OK;
}

static enum fr_status fr__scope_nodes(struct fr__ld *ld, struct fr__scope *sc, const struct fr_ynode *nodes);

/* Makes the literal of a node input final: converted to the input's type, range-checked, its file resolved.
 */
static enum fr_status fr__bind_lit(struct fr__ld *ld, struct fr__scope *sc, struct fr_gnode *g, int idx,
                                   const struct fr__src *s) {
  const struct fr_input_spec *in = &g->spec->inputs[idx];
  struct fr__lit l = s->lit;
  char why[512], what[300];
  snprintf(what, sizeof what, "input %s of node %s (%s)", in->name, g->id, g->spec->name);
  if (!fr__convert(&l, in, why, sizeof why) || !fr__in_range(&l, in, why, sizeof why)) {
    if (l.origin)
      return fr__fail(ld, sc, s->pos, "%s: value of %s: %s", what, l.origin, why);
    return fr__fail(ld, sc, s->pos, "%s: %s", what, why);
  }
  if (l.pin && !(in->flags & FR_IN_MODEL_FILE))
    return fr__fail(ld, sc, s->pos, "%s: a {file, sha256} pin is for model file inputs only%s%s", what,
                    l.origin ? "; the value comes from " : "", l.origin ? l.origin : "");
  struct fr_binding *b = &g->inputs[idx];
  b->kind = FR_BIND_LITERAL;
  b->pos = s->pos;
  b->pin = l.pin;
  if (!(b->literal = fr__lit_value(ld->a, &l)))
    return FR__NOMEM(ld);
  if ((in->flags & (FR_IN_FILE | FR_IN_MODEL_FILE)) && !strcmp(l.type, FR_T_STRING)) {
    enum fr_status rc = fr__resolve_file(ld, sc, in, &l, s->pos, what, &b->path, &b->pin_found);
    if (rc)
      return rc;
  }
  return FR_OK;
}

static enum fr_status fr__real_node(struct fr__ld *ld, struct fr__scope *sc, struct fr__local *loc,
                                    const struct fr_node_spec *spec, const struct fr_ynode *inputs,
                                    const struct fr_ynode *ui) {
  if (ld->n_flat == ld->cap_flat) {
    int cap = ld->cap_flat ? ld->cap_flat * 2 : 16;
    struct fr__fnode *f = fr_arena_alloc(ld->a, (size_t)cap * sizeof *f);
    if (!f)
      return FR__NOMEM(ld);
    if (ld->n_flat)
      memcpy(f, ld->flat, (size_t)ld->n_flat * sizeof *f);
    ld->flat = f;
    ld->cap_flat = cap;
  }
  loc->flat = ld->n_flat;
  struct fr__fnode *fn = &ld->flat[ld->n_flat++];
  struct fr_gnode *g = &fn->g;
  g->spec = spec;
  g->pos = loc->pos;
  if (!(g->id = fr_arena_printf(ld->a, "%s%s", sc->prefix, loc->id)))
    return FR__NOMEM(ld);
  int n_in = spec->n_inputs;
  g->inputs = fr_arena_alloc(ld->a, (size_t)(n_in ? n_in : 1) * sizeof *g->inputs);
  fn->links = fr_arena_alloc(ld->a, (size_t)(n_in ? n_in : 1) * sizeof *fn->links);
  struct fr__src *srcs = fr_arena_alloc(ld->a, (size_t)(n_in ? n_in : 1) * sizeof *srcs);
  if (!g->inputs || !fn->links || !srcs)
    return FR__NOMEM(ld);
  char what[300];
  for (int i = 0; inputs && i < inputs->n; i++) {
    const struct fr_ynode *k = fr__key(inputs, i);
    int idx = fr_spec_input_index(spec, k->s);
    if (idx < 0) {
      struct fr__names nl = {0};
      for (int j = 0; j < n_in; j++)
        fr__names_add(&nl, spec->inputs[j].name);
      return fr__fail(ld, sc, fr__pos(sc, k), "node %s (%s) has no input '%s'; its inputs are: %s", g->id,
                      spec->name, k->s, fr__names_or(&nl, "none"));
    }
    const struct fr_input_spec *in = &spec->inputs[idx];
    snprintf(what, sizeof what, "input %s of node %s (%s)", in->name, g->id, spec->name);
    enum fr_status rc = fr__parse_src(ld, sc, fr__val(inputs, i), in->type, in->choices, what, &srcs[idx]);
    if (rc)
      return rc;
  }
  for (int idx = 0; idx < n_in; idx++) {
    const struct fr_input_spec *in = &spec->inputs[idx];
    struct fr__src *s = &srcs[idx];
    enum fr_status rc;
    if (s->kind == FR__S_NONE && in->def && fr_type_is_primitive(in->type)) {
      char why[512];
      if (!fr__text_lit(in->def, in->type, in->choices, &s->lit, why, sizeof why))
        return fr_errf(ld->err, FR_E_INTERNAL, "node type %s: default '%s' of input %s is invalid: %s",
                       spec->name, in->def, in->name, why);
      s->kind = FR__S_LIT;
      s->lit.dir = sc->file->dir;
      s->pos = (struct fr_srcpos){sc->file->path, 0, 0};
    }
    if (s->kind == FR__S_NONE) {
      if (!(in->flags & FR_IN_OPTIONAL))
        return fr__fail(ld, sc, g->pos, "node %s (%s): missing required input '%s' (%s)", g->id, spec->name,
                        in->name, in->type);
      g->inputs[idx].kind = FR_BIND_NONE;
    } else if (s->kind == FR__S_LINK) {
      fn->links[idx] = *s;
    } else if ((rc = fr__bind_lit(ld, sc, g, idx, s))) {
      return rc;
    }
  }
  if (ui) {
    static const char *const keys[] = {"x", "y", NULL};
    for (int i = 0; i < ui->n; i++) {
      const struct fr_ynode *k = fr__key(ui, i), *v = fr__val(ui, i);
      if (strcmp(k->s, "x") && strcmp(k->s, "y"))
        return fr__unknown_key(ld, sc, k, "in ui", keys);
      if (v->kind != FR_Y_SCALAR || !v->plain || !fr__is_float_text(v->s) || !isfinite(strtod(v->s, NULL)))
        return fr__fail(ld, sc, fr__pos(sc, v), "ui.%s of node %s: expected a number", k->s, g->id);
      *(k->s[0] == 'x' ? &g->ui_x : &g->ui_y) = strtod(v->s, NULL);
    }
    g->has_ui = true;
  }
  return FR_OK;
}

static enum fr_status fr__sub_scope(struct fr__ld *ld, struct fr__scope *sc, struct fr__local *loc,
                                    const struct fr_ynode *typen, const struct fr_ynode *inputs,
                                    struct fr__file *f, const struct fr_ynode *root);

/* Instantiates the graph file named by a node's type (a .yaml/.yml path) as a child scope. */
static enum fr_status fr__sub_node(struct fr__ld *ld, struct fr__scope *sc, struct fr__local *loc,
                                   const struct fr_ynode *typen, const struct fr_ynode *inputs) {
  const char *type = typen->s;
  struct fr_srcpos tpos = fr__pos(sc, typen);
  if (sc->depth + 1 > FR__MAX_NESTING)
    return fr__fail(ld, sc, tpos, "subgraphs nested more than %d deep", FR__MAX_NESTING);
  const char *path = fr__join(ld->a, sc->file->dir, type);
  const char *shown = fr__join(ld->a, sc->file->disp_dir, type);
  if (!path || !shown)
    return FR__NOMEM(ld);
  char inside[PATH_MAX];
  if (ld->opts->n_read_roots > 0) {
    enum fr_root_verdict v = fr_roots_check(ld->opts->read_roots, ld->opts->n_read_roots, path, inside);
    char what[300];
    snprintf(what, sizeof what, "node %s", loc->id);
    if (v == FR_ROOT_OUTSIDE)
      return fr__fail_outside(ld, sc, tpos, what, "subgraph file", type);
    if (v == FR_ROOT_INSIDE)
      path = inside; /* read what was checked, not the path again (a link swapped in between) */
  }
  char *real = realpath(path, NULL);
  if (!real)
    return fr__fail(ld, sc, tpos, "node %s: cannot open subgraph file '%s' (%s): %s", loc->id, type, path,
                    strerror(errno));
  const char *areal = fr_arena_strdup(ld->a, real);
  free(real);
  if (!areal)
    return FR__NOMEM(ld);
  for (const struct fr__scope *s = sc; s; s = s->parent) {
    if (!s->file->real || strcmp(s->file->real, areal))
      continue;
    struct fr_buf chain = {0};
    fr_buf_puts(&chain, shown);
    for (const struct fr__scope *t = sc; t; t = t->parent) {
      fr_buf_printf(&chain, " <- %s", t->file->path);
      if (t == s)
        break;
    }
    enum fr_status rc =
        chain.oom ? FR__NOMEM(ld)
                  : fr__fail(ld, sc, tpos, "node %s: subgraph recursion: %s; a graph cannot use itself",
                             loc->id, chain.data);
    fr_buf_free(&chain);
    return rc;
  }
  struct fr__file *f = ld->files;
  while (f && !(f->real && !strcmp(f->real, areal)))
    f = f->next;
  enum fr_status rc;
  if (!f) {
    char *text;
    size_t len;
    const char *dir = fr__dirname(ld->a, areal);
    if (!dir)
      return FR__NOMEM(ld);
    if ((rc = fr__read_file(ld, areal, shown, &text, &len)) == FR_E_IO) {
      char msg[FR_ERR_MAX];
      snprintf(msg, sizeof msg, "%s", ld->err ? ld->err->msg : "read error");
      return fr__fail(ld, sc, tpos, "node %s: %s", loc->id, msg);
    }
    if (rc || (rc = fr__add_file(ld, shown, dir, areal, text, len, &f)))
      return rc;
  }
  return fr__sub_scope(ld, sc, loc, typen, inputs, f, f->root);
}

/* Instantiates a graph document (root, in file f: a graph file, or an inline graph of f's graphs:) as
 * the child scope of node loc. */
static enum fr_status fr__sub_scope(struct fr__ld *ld, struct fr__scope *sc, struct fr__local *loc,
                                    const struct fr_ynode *typen, const struct fr_ynode *inputs,
                                    struct fr__file *f, const struct fr_ynode *root) {
  const char *type = typen->s;
  struct fr_srcpos tpos = fr__pos(sc, typen);
  enum fr_status rc;
  struct fr__scope *child = fr_arena_alloc(ld->a, sizeof *child);
  if (!child)
    return FR__NOMEM(ld);
  child->parent = sc;
  child->file = f;
  child->root = root;
  child->depth = sc->depth + 1;
  child->next = ld->scopes;
  ld->scopes = child;
  child->prefix = fr_arena_printf(ld->a, "%s%s/", sc->prefix, loc->id);
  child->via = root == f->root ? fr_arena_printf(ld->a, "subgraph %s used by node %s%s at %s:%d:%d", f->path,
                                                 sc->prefix, loc->id, tpos.file, tpos.line, tpos.col)
                               : fr_arena_printf(ld->a, "inline graph %s used by node %s%s at %s:%d:%d", type,
                                                 sc->prefix, loc->id, tpos.file, tpos.line, tpos.col);
  if (!child->prefix || !child->via)
    return FR__NOMEM(ld);
  loc->child = child;
  const struct fr_ynode *nodes;
  if ((rc = fr__scope_header(ld, child, &nodes)))
    return rc;
  char what[300];
  for (int i = 0; inputs && i < inputs->n; i++) {
    const struct fr_ynode *k = fr__key(inputs, i);
    struct fr__decl *d = fr__find_decl(child, k->s);
    if (!d) {
      struct fr__names nl = {0};
      for (int j = 0; j < child->n_decls; j++)
        fr__names_add(&nl, child->decls[j].name);
      return fr__fail(ld, sc, fr__pos(sc, k), "node %s (%s) has no input '%s'; its inputs are: %s", loc->id,
                      type, k->s, fr__names_or(&nl, "none"));
    }
    snprintf(what, sizeof what, "input %s of node %s (%s)", d->name, loc->id, type);
    if ((rc = fr__parse_src(ld, sc, fr__val(inputs, i), d->type, NULL, what, &d->bound)))
      return rc;
    if (d->bound.kind == FR__S_LINK)
      d->bound.want_type = d->type;
    else if (d->bound.kind == FR__S_LIT && !d->bound.lit.origin &&
             !(d->bound.lit.origin = fr_arena_printf(ld->a, "input %s of node %s", d->name, loc->id)))
      return FR__NOMEM(ld);
  }
  for (int j = 0; j < child->n_decls; j++) {
    const struct fr__decl *d = &child->decls[j];
    if (d->bound.kind == FR__S_NONE && d->def.kind == FR__S_NONE)
      return fr__fail(ld, sc, loc->pos, "node %s (%s): missing required input '%s' (%s)", loc->id, type,
                      d->name, d->type);
  }
  return fr__scope_nodes(ld, child, nodes);
}

/* ---------------------------------------------------------------- inline graphs (bundles) */

/* The graphs: mapping at the top of a file's document, or NULL. */
static const struct fr_ynode *fr__graphs_of(const struct fr__file *f) {
  const struct fr_ynode *r = f->root;
  for (int i = 0; r && r->kind == FR_Y_MAP && i < r->n; i++)
    if (!strcmp(fr__key(r, i)->s, "graphs") && fr__val(r, i)->kind == FR_Y_MAP)
      return fr__val(r, i);
  return NULL;
}

/* The inline graph a node type names: an entry of the graphs: of the file the node is written in. */
static const struct fr_ynode *fr__inline_graph(const struct fr__scope *sc, const char *type) {
  const struct fr_ynode *gs = fr__graphs_of(sc->file);
  for (int i = 0; gs && i < gs->n; i++)
    if (!strcmp(fr__key(gs, i)->s, type))
      return fr__val(gs, i);
  return NULL;
}

/* Checks a graphs: section (its entries are checked in full where they are used, like graph files). */
static enum fr_status fr__check_graphs(struct fr__ld *ld, const struct fr__scope *sc,
                                       const struct fr_ynode *root, const struct fr_ynode *v) {
  if (root != sc->file->root)
    return fr__fail(ld, sc, fr__pos(sc, v), "graphs: only the top of a file defines inline graphs");
  const struct fr_ynode *gs;
  enum fr_status rc = fr__want_map(ld, sc, v, "graphs", &gs);
  for (int i = 0; rc == FR_OK && gs && i < gs->n; i++) {
    const struct fr_ynode *k = fr__key(gs, i);
    if (!fr__is_id(k->s))
      return fr__fail(
          ld, sc, fr__pos(sc, k),
          "inline graph name '%s' is not valid; expected letters, digits, _ or - (starting with a "
          "letter or _)",
          k->s);
    if (fr_registry_find(ld->reg, k->s))
      return fr__fail(ld, sc, fr__pos(sc, k), "inline graph '%s' has the name of a node type; rename it",
                      k->s);
    if (fr__val(gs, i)->kind != FR_Y_MAP)
      return fr__fail(
          ld, sc, fr__pos(sc, fr__val(gs, i)),
          "inline graph %s: expected a graph (flowrun: %d, params, inputs, outputs, nodes), found %s", k->s,
          FR_FORMAT_VERSION, fr__describe(fr__val(gs, i)));
  }
  return rc;
}

/* Instantiates an inline graph (an entry of the file's graphs:) as the child scope of node loc. */
static enum fr_status fr__inline_node(struct fr__ld *ld, struct fr__scope *sc, struct fr__local *loc,
                                      const struct fr_ynode *typen, const struct fr_ynode *inputs,
                                      const struct fr_ynode *root) {
  struct fr_srcpos tpos = fr__pos(sc, typen);
  if (sc->depth + 1 > FR__MAX_NESTING)
    return fr__fail(ld, sc, tpos, "subgraphs nested more than %d deep", FR__MAX_NESTING);
  for (const struct fr__scope *s = sc; s; s = s->parent)
    if (s->file == sc->file && s->root == root)
      return fr__fail(ld, sc, tpos, "node %s: inline graph recursion: %s uses itself", loc->id, typen->s);
  return fr__sub_scope(ld, sc, loc, typen, inputs, sc->file, root);
}

static enum fr_status fr__scope_nodes(struct fr__ld *ld, struct fr__scope *sc, const struct fr_ynode *nodes) {
  if (!nodes)
    return FR_OK;
  sc->locals = fr_arena_alloc(ld->a, (size_t)(nodes->n ? nodes->n : 1) * sizeof *sc->locals);
  if (!sc->locals)
    return FR__NOMEM(ld);
  enum fr_status rc;
  for (int i = 0; i < nodes->n; i++) {
    const struct fr_ynode *k = fr__key(nodes, i);
    if (!fr__is_id(k->s))
      return fr__fail(
          ld, sc, fr__pos(sc, k),
          "node id '%s' is not valid; expected letters, digits, _ or - (starting with a letter or _)", k->s);
    if ((rc = fr__count(ld, sc, fr__pos(sc, k))))
      return rc;
    sc->locals[i] = (struct fr__local){.id = k->s, .flat = -1, .pos = fr__pos(sc, k)};
  }
  sc->n_locals = nodes->n;
  /* Locals are looked up by id from now on (links of this scope and of its parent); the YAML order is
   * kept in `nodes`. Duplicate ids were rejected by the YAML reader. */
  qsort(sc->locals, (size_t)sc->n_locals, sizeof *sc->locals, fr__local_cmp);
  static const char *const keys[] = {"type", "inputs", "ui", NULL};
  for (int i = 0; i < nodes->n; i++) {
    const struct fr_ynode *k = fr__key(nodes, i), *v = fr__val(nodes, i);
    struct fr__local *loc = fr__find_local(sc, k->s);
    if (v->kind != FR_Y_MAP)
      return fr__fail(ld, sc, fr__pos(sc, v),
                      "node %s: expected a mapping {type: T, inputs: {...}}, found %s", k->s,
                      fr__describe(v));
    const struct fr_ynode *type = NULL, *inputs = NULL, *ui = NULL;
    for (int j = 0; j < v->n; j++) {
      rc = FR_OK;
      const struct fr_ynode *kk = fr__key(v, j), *vv = fr__val(v, j);
      if (!strcmp(kk->s, "type"))
        type = vv;
      else if (!strcmp(kk->s, "inputs"))
        rc = fr__want_map(ld, sc, vv, "inputs", &inputs);
      else if (!strcmp(kk->s, "ui"))
        rc = fr__want_map(ld, sc, vv, "ui", &ui);
      else
        return fr__unknown_key(ld, sc, kk, "in a node", keys);
      if (rc)
        return rc;
    }
    if (!type || type->kind != FR_Y_SCALAR || fr__is_null(type))
      return fr__fail(ld, sc, fr__pos(sc, type ? type : k),
                      "node %s: expected type: NodeType (or a .yaml file)", k->s);
    loc->type = type->s;
    const struct fr_ynode *inl = fr__inline_graph(sc, type->s);
    if (inl) {
      rc = fr__inline_node(ld, sc, loc, type, inputs, inl);
    } else if (fr__ends_with(type->s, ".yaml") || fr__ends_with(type->s, ".yml")) {
      rc = fr__sub_node(ld, sc, loc, type, inputs);
    } else {
      const struct fr_node_spec *spec = fr_registry_find(ld->reg, type->s);
      if (!spec) {
        const char *best = NULL;
        int bestd = INT_MAX;
        for (int j = 0; j < ld->reg->n; j++) {
          int d = fr__distance(type->s, ld->reg->specs[j]->name);
          if (d < bestd)
            bestd = d, best = ld->reg->specs[j]->name;
        }
        int limit = (int)strlen(type->s) / 3 > 2 ? (int)strlen(type->s) / 3 : 2;
        if (best && bestd <= limit)
          return fr__fail(ld, sc, fr__pos(sc, type), "unknown node type '%s'; did you mean '%s'?", type->s,
                          best);
        return fr__fail(ld, sc, fr__pos(sc, type), "unknown node type '%s' (`flowrun nodes` lists the types)",
                        type->s);
      }
      rc = fr__real_node(ld, sc, loc, spec, inputs, ui);
    }
    if (rc)
      return rc;
  }
  return FR_OK;
}

/* ---------------------------------------------------------------- links, order */

/* Finds the flat node and output a link names, following subgraph outputs. *out_type is its type. */
static enum fr_status fr__resolve(struct fr__ld *ld, struct fr__scope *sc, const char *node, const char *out,
                                  struct fr_srcpos pos, int *flat, int *oidx) {
  struct fr__local *loc = fr__find_local(sc, node);
  if (!loc) {
    struct fr__names nl = {0};
    for (int i = 0; i < sc->n_locals; i++)
      fr__names_add(&nl, sc->locals[i].id);
    return fr__fail(ld, sc, pos, "link to '%s%s%s': no node named '%s' here (nodes: %s)", node,
                    out ? "." : "", out ? out : "", node, fr__names_or(&nl, "none"));
  }
  if (loc->flat >= 0) {
    const struct fr_node_spec *spec = ld->flat[loc->flat].g.spec;
    int i = out ? fr_spec_output_index(spec, out) : (spec->n_outputs ? 0 : -1);
    if (i < 0) {
      struct fr__names nl = {0};
      for (int j = 0; j < spec->n_outputs; j++)
        fr__names_add(&nl, spec->outputs[j].name);
      return fr__fail(ld, sc, pos, "node %s (%s) has no output '%s'; its outputs are: %s", node, spec->name,
                      out ? out : "(first)", fr__names_or(&nl, "none"));
    }
    *flat = loc->flat;
    *oidx = i;
    return FR_OK;
  }
  struct fr__scope *c = loc->child;
  const struct fr__out *o = NULL;
  for (int i = 0; i < c->n_outs && !o; i++)
    if (!out || !strcmp(c->outs[i].name, out))
      o = &c->outs[i];
  if (!o) {
    struct fr__names nl = {0};
    for (int j = 0; j < c->n_outs; j++)
      fr__names_add(&nl, c->outs[j].name);
    return fr__fail(ld, sc, pos, "node %s (%s) has no output '%s'; its outputs are: %s", node, loc->type,
                    out ? out : "(first)", fr__names_or(&nl, "none"));
  }
  return fr__resolve(ld, c, o->node, o->out, o->pos, flat, oidx);
}

static enum fr_status fr__link_all(struct fr__ld *ld) {
  for (int n = 0; n < ld->n_flat; n++) {
    struct fr__fnode *fn = &ld->flat[n];
    const struct fr_node_spec *spec = fn->g.spec;
    for (int i = 0; i < spec->n_inputs; i++) {
      const struct fr__src *s = &fn->links[i];
      if (s->kind != FR__S_LINK)
        continue;
      int src, o;
      enum fr_status rc = fr__resolve(ld, s->scope, s->node, s->out, s->pos, &src, &o);
      if (rc)
        return rc;
      const struct fr_gnode *from = &ld->flat[src].g;
      const char *otype = from->spec->outputs[o].type, *itype = spec->inputs[i].type;
      if (!fr__type_ok(otype, itype) || (s->want_type && !fr__type_ok(otype, s->want_type)))
        return fr__fail(ld, s->scope, s->pos, "input %s of node %s (%s) takes %s, but %s.%s is %s",
                        spec->inputs[i].name, fn->g.id, spec->name,
                        s->want_type && fr__type_ok(otype, itype) ? s->want_type : itype, from->id,
                        from->spec->outputs[o].name, otype);
      struct fr_binding *b = &fn->g.inputs[i];
      b->kind = FR_BIND_LINK;
      b->src_node = src;
      b->src_output = o;
      b->pos = s->pos;
    }
  }
  /* Declared outputs that no one links to still have to name something real. */
  for (struct fr__scope *sc = ld->scopes; sc; sc = sc->next)
    for (int i = 0; i < sc->n_outs; i++) {
      int src, o;
      enum fr_status rc = fr__resolve(ld, sc, sc->outs[i].node, sc->outs[i].out, sc->outs[i].pos, &src, &o);
      if (rc)
        return rc;
    }
  return FR_OK;
}

/* Kahn's algorithm over links, in file order; a leftover node lies on or behind a cycle, which is
 * reported by walking back along links until a node repeats. */
static enum fr_status fr__toposort(struct fr__ld *ld, int **order_out) {
  int n = ld->n_flat;
  size_t sz = (size_t)(n ? n : 1) * sizeof(int);
  int *order = fr_arena_alloc(ld->a, sz), *indeg = fr_arena_alloc(ld->a, sz),
      *start = fr_arena_alloc(ld->a, sz + sizeof(int));
  int n_edges = 0;
  for (int v = 0; v < n; v++)
    for (int i = 0; i < ld->flat[v].g.spec->n_inputs; i++)
      n_edges += ld->flat[v].g.inputs[i].kind == FR_BIND_LINK;
  int *adj = fr_arena_alloc(ld->a, (size_t)(n_edges ? n_edges : 1) * sizeof(int));
  if (!order || !indeg || !start || !adj)
    return FR__NOMEM(ld);
  /* Successor lists in CSR form: start[u]..start[u+1] in adj. */
  for (int v = 0; v < n; v++)
    for (int i = 0; i < ld->flat[v].g.spec->n_inputs; i++)
      if (ld->flat[v].g.inputs[i].kind == FR_BIND_LINK) {
        start[ld->flat[v].g.inputs[i].src_node + 1]++;
        indeg[v]++;
      }
  for (int u = 0; u < n; u++)
    start[u + 1] += start[u];
  int *fill = fr_arena_alloc(ld->a, sz);
  if (!fill)
    return FR__NOMEM(ld);
  for (int v = 0; v < n; v++)
    for (int i = 0; i < ld->flat[v].g.spec->n_inputs; i++)
      if (ld->flat[v].g.inputs[i].kind == FR_BIND_LINK) {
        int u = ld->flat[v].g.inputs[i].src_node;
        adj[start[u] + fill[u]++] = v;
      }
  int head = 0, tail = 0;
  for (int v = 0; v < n; v++)
    if (!indeg[v])
      order[tail++] = v;
  while (head < tail) {
    int u = order[head++];
    for (int e = start[u]; e < start[u + 1]; e++)
      if (--indeg[adj[e]] == 0)
        order[tail++] = adj[e];
  }
  if (tail == n) {
    *order_out = order;
    return FR_OK;
  }
  int v = 0;
  while (!indeg[v])
    v++;
  /* Walk back along links from v through nodes still waiting; mark the step at which each was seen. */
  int *seen = fill;
  memset(seen, 0, sz);
  int step = 0;
  while (!seen[v]) {
    seen[v] = ++step;
    const struct fr_gnode *g = &ld->flat[v].g;
    int next = -1;
    for (int i = 0; i < g->spec->n_inputs && next < 0; i++)
      if (g->inputs[i].kind == FR_BIND_LINK && indeg[g->inputs[i].src_node])
        next = g->inputs[i].src_node;
    v = next; /* always found: a waiting node has a waiting predecessor */
  }
  /* v is on the cycle; following back links from v returns to v. Print it forward: a -> b -> ... -> a. */
  int len = 0, cyc[64];
  int u = v;
  do {
    if (len < 64)
      cyc[len++] = u;
    const struct fr_gnode *g = &ld->flat[u].g;
    int next = -1;
    for (int i = 0; i < g->spec->n_inputs && next < 0; i++)
      if (g->inputs[i].kind == FR_BIND_LINK && indeg[g->inputs[i].src_node] && seen[g->inputs[i].src_node])
        next = g->inputs[i].src_node;
    u = next;
  } while (u != v && u >= 0 && len < 64);
  struct fr_buf b = {0};
  for (int i = len - 1; i >= 0; i--)
    fr_buf_printf(&b, "%s -> ", ld->flat[cyc[i]].g.id);
  fr_buf_puts(&b, ld->flat[cyc[len - 1]].g.id);
  if (b.oom) {
    fr_buf_free(&b);
    return FR__NOMEM(ld);
  }
  const struct fr_gnode *g0 = &ld->flat[cyc[len - 1]].g;
  enum fr_status rc = fr__fail(ld, NULL, g0->pos, "cycle: %s; links must not form a loop", b.data);
  fr_buf_free(&b);
  return rc;
}

/* ---------------------------------------------------------------- public */

static enum fr_status fr__load(const char *text, size_t len, const char *name, const char *dir,
                               const char *real, const struct fr_load_opts *opts, struct fr_graph **out,
                               struct fr_err *err) {
  *out = NULL;
  if (!opts || !opts->registry)
    return fr_errf(err, FR_E_INVALID, "fr_graph_load: no node registry given");
  struct fr_arena *a = fr_arena_new(0);
  struct fr__ld *ld = a ? fr_arena_alloc(a, sizeof *ld) : NULL;
  struct fr_graph *g = a ? fr_arena_alloc(a, sizeof *g) : NULL;
  if (!ld || !g) {
    fr_arena_free(a);
    return fr_errf(err, FR_E_NOMEM, "out of memory while loading the graph");
  }
  ld->a = a;
  ld->opts = opts;
  ld->reg = opts->registry;
  ld->err = err;
  g->arena = a;
  enum fr_status rc = FR_OK;
  g->path = fr_arena_strdup(a, name ? name : "<string>");
  g->dir = fr_arena_strdup(a, dir ? dir : ".");
  g->yaml = fr_arena_strndup(a, text, len);
  struct fr__scope *top = fr_arena_alloc(a, sizeof *top);
  if (!g->path || !g->dir || !g->yaml || !top) {
    rc = FR__NOMEM(ld);
    goto fail;
  }
  top->prefix = "";
  ld->top = ld->scopes = top;
  const struct fr_ynode *nodes;
  if ((rc = fr__add_file(ld, g->path, g->dir, real ? fr_arena_strdup(a, real) : NULL, g->yaml, len,
                         &top->file)) ||
      (rc = fr__scope_header(ld, top, &nodes)) || (rc = fr__scope_nodes(ld, top, nodes)) ||
      (rc = fr__link_all(ld)) || (rc = fr__toposort(ld, &g->order)))
    goto fail;
  g->n_nodes = ld->n_flat;
  g->nodes = fr_arena_alloc(a, (size_t)(ld->n_flat ? ld->n_flat : 1) * sizeof *g->nodes);
  g->params = fr_arena_alloc(a, (size_t)(top->n_params ? top->n_params : 1) * sizeof *g->params);
  if (!g->nodes || !g->params) {
    rc = FR__NOMEM(ld);
    goto fail;
  }
  for (int i = 0; i < ld->n_flat; i++)
    g->nodes[i] = ld->flat[i].g;
  for (int i = 0; i < top->n_params; i++) {
    const struct fr__param *p = &top->params[i];
    struct fr_param *q = &g->params[g->n_params++];
    q->name = p->name;
    q->type = p->type;
    q->help = p->help;
    q->pos = p->pos;
    if (!(q->value = fr__lit_value(a, &p->value)) || !(q->def = fr__lit_value(a, &p->def))) {
      rc = FR__NOMEM(ld);
      goto fail;
    }
  }
  *out = g;
  return FR_OK;
fail:
  if (rc == FR_E_NOMEM)
    fr_errf(err, FR_E_NOMEM, "%s: out of memory while loading the graph", name ? name : "<string>");
  fr_arena_free(a);
  return rc;
}

enum fr_status fr_graph_load_string(const char *text, size_t len, const char *name, const char *dir,
                                    const struct fr_load_opts *opts, struct fr_graph **out,
                                    struct fr_err *err) {
  return fr__load(text, len, name, dir, NULL, opts, out, err);
}

enum fr_status fr_graph_load_file(const char *path, const struct fr_load_opts *opts, struct fr_graph **out,
                                  struct fr_err *err) {
  *out = NULL;
  struct fr_arena *a = fr_arena_new(0);
  if (!a)
    return fr_errf(err, FR_E_NOMEM, "out of memory while loading the graph");
  struct fr__ld ld = {.a = a, .err = err};
  char *text = NULL, *real = NULL;
  size_t len = 0;
  enum fr_status rc = FR_OK;
  char inside[PATH_MAX];
  if (opts && opts->n_read_roots > 0 &&
      fr_roots_check(opts->read_roots, opts->n_read_roots, path, inside) == FR_ROOT_OUTSIDE)
    rc = fr_errf(err, FR_E_INVALID, "%s: outside the folders this graph may read from", path);
  if (rc == FR_OK)
    rc = fr__read_file(&ld, path, path, &text, &len);
  if (rc == FR_OK && !(real = realpath(path, NULL)))
    rc = fr_errf(err, FR_E_IO, "%s: cannot resolve the path: %s", path, strerror(errno));
  char *dir = rc == FR_OK ? fr__dirname(a, real) : NULL;
  if (rc == FR_OK && !dir)
    rc = fr_errf(err, FR_E_NOMEM, "out of memory while loading the graph");
  if (rc == FR_OK)
    rc = fr__load(text, len, path, dir, real, opts, out, err);
  free(real);
  fr_arena_free(a);
  return rc;
}

void fr_graph_free(struct fr_graph *g) {
  if (g)
    fr_arena_free(g->arena);
}

int fr_graph_find(const struct fr_graph *g, const char *id) {
  for (int i = 0; i < g->n_nodes; i++)
    if (!strcmp(g->nodes[i].id, id))
      return i;
  return -1;
}

const char *fr_graph_params_json(const struct fr_graph *g) {
  struct fr_buf b = {0};
  fr_buf_putc(&b, '{');
  for (int i = 0; i < g->n_params; i++) {
    const struct fr_value *v = g->params[i].value;
    if (i)
      fr_buf_puts(&b, ", ");
    fr_buf_json_str(&b, g->params[i].name);
    fr_buf_puts(&b, ": ");
    switch (v->kind) {
    case FR_V_INT: fr_buf_printf(&b, "%lld", (long long)v->i); break;
    case FR_V_FLOAT: fr_buf_printf(&b, "%.17g", v->f); break;
    case FR_V_BOOL: fr_buf_puts(&b, v->b ? "true" : "false"); break;
    default: fr_buf_json_str(&b, v->s ? v->s : ""); break;
    }
  }
  fr_buf_putc(&b, '}');
  const char *s = b.oom ? NULL : fr_arena_strndup(g->arena, b.data, b.len);
  fr_buf_free(&b);
  return s;
}
