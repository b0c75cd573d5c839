/* Workflow graphs: loading YAML, validating it against the node registry, resolving params.
 *
 * The loaded graph is flat: a subgraph used as a node is inlined at load time, its nodes getting ids
 * "outer_id/inner_id" and its declared inputs becoming links or literals. Every node input is bound to
 * a literal value (params already substituted, defaults already filled), to another node's output,
 * or to nothing (an optional input left unset). Everything is allocated in the graph's arena, literal
 * values included: they have refcount 1, belong to the graph and are freed with it, so a user may
 * fr_value_ref/fr_value_unref them in pairs but must never drop the graph's own reference.
 * The file format is docs/graph-format.md. */
#ifndef FR_GRAPH_H
#define FR_GRAPH_H

#include <stdbool.h>

#include "core/alloc.h"
#include "core/cache.h"
#include "core/node.h"
#include "core/status.h"
#include "core/value.h"

#define FR_FORMAT_VERSION 1

struct fr_fp_memo;

struct fr_srcpos {
  const char *file; /* path as given */
  int line, col;    /* 1-based; 0 when unknown (e.g. a default) */
};

enum fr_bind_kind { FR_BIND_NONE, FR_BIND_LITERAL, FR_BIND_LINK };

struct fr_binding {
  enum fr_bind_kind kind;
  struct fr_value *literal; /* FR_BIND_LITERAL: typed as the input (INT/FLOAT/BOOL/STRING; ENUM -> STRING) */
  const char *path;         /* FR_IN_FILE / FR_IN_MODEL_FILE literals: the resolved path, or NULL */
  const char *pin;          /* FR_IN_MODEL_FILE given as {file, sha256}: the sha256 (10 or 64 lowercase
                               hex digits; core/pins.h), checked when the file is first used; or NULL */
  bool pin_found;           /* the file was not found under its name but by its pinned hash (path) */
  int src_node;             /* FR_BIND_LINK: index into graph->nodes */
  int src_output;           /* FR_BIND_LINK: index into that node's spec outputs */
  struct fr_srcpos pos;
};

struct fr_gnode {
  const char *id;
  const struct fr_node_spec *spec;
  struct fr_binding *inputs; /* spec->n_inputs entries, in spec order */
  struct fr_srcpos pos;
  bool has_ui;
  double ui_x, ui_y; /* editor position, kept when the editor saves the file */
};

struct fr_param {
  const char *name;
  const char *type; /* INT FLOAT BOOL STRING */
  struct fr_value *value; /* after --set overrides */
  struct fr_value *def;
  const char *help;
  struct fr_srcpos pos;
};

struct fr_graph {
  struct fr_arena *arena;
  const char *path;        /* file it came from ("<string>" for text) */
  const char *dir;         /* its folder, for relative file inputs */
  const char *yaml;        /* the source text, as read */
  int n_nodes;
  struct fr_gnode *nodes;
  int *order;              /* topological order: indices into nodes, dependencies first; nodes[] itself
                              is in file order (a subgraph's nodes where the subgraph node stands) */
  int n_params;
  struct fr_param *params;
};

/* An override from the command line (--set name=value) or the editor. */
struct fr_override {
  const char *name;
  const char *value; /* literal text, parsed by the param's type */
};

struct fr_load_opts {
  const struct fr_registry *registry;
  const struct fr_override *overrides;
  int n_overrides;
  const char *const *model_dirs; /* search path for FR_IN_MODEL_FILE inputs; may be empty */
  int n_model_dirs;
  const char *const *input_dirs; /* searched for FR_IN_FILE inputs after the graph's folder; may be empty */
  int n_input_dirs;
  /* When n_read_roots > 0, every file the graph reads (FR_IN_FILE / FR_IN_MODEL_FILE inputs, subgraph
   * files, the file given to fr_graph_load_file) must lie inside one of these folders after symlinks are
   * resolved (core/roots.h), else loading fails naming the file as written, with one message whether or
   * not anything exists there; bindings then hold realpaths. Empty: unrestricted (the CLI). */
  const char *const *read_roots;
  int n_read_roots;
  /* When false, a model file that is not found is not an error at load time (validate, editor); the
   * binding's path stays NULL and the node fails when it runs. */
  bool require_files;
  /* Where a pinned model file missing under its name is looked up by hash (only when require_files):
   * the memo of file hashes (core/pins.h); both may be NULL. */
  struct fr_cache *cache;
  struct fr_fp_memo *memo;
};

/* Loads and validates. On failure returns FR_E_FORMAT (YAML syntax) or FR_E_INVALID (anything else)
 * with "file:line:col: what was wrong, what was expected" in err, and *out is NULL. Limits: a document
 * of at most 4 MiB, nesting depth 64, 10,000 nodes, aliases never expanded beyond those bounds. */
enum fr_status fr_graph_load_file(const char *path, const struct fr_load_opts *opts, struct fr_graph **out,
                                  struct fr_err *err);
enum fr_status fr_graph_load_string(const char *text, size_t len, const char *name, const char *dir,
                                    const struct fr_load_opts *opts, struct fr_graph **out,
                                    struct fr_err *err);
void fr_graph_free(struct fr_graph *g);

int fr_graph_find(const struct fr_graph *g, const char *id); /* node index or -1 */
/* The params after overrides as a JSON object {"name": value, ...} in file order (arena-allocated; NULL
 * when out of memory). */
const char *fr_graph_params_json(const struct fr_graph *g);

#endif
