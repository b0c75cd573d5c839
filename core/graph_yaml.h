/* Internal to the graph loader: a small YAML document tree built from libyaml's event parser.
 *
 * Why not libyaml's own document loader: it accepts duplicate mapping keys, has no depth or size
 * limits, and gives no control over aliases. This tree rejects duplicate keys, caps nesting depth,
 * and shares an aliased node instead of copying it, while counting the size the document would have
 * if every alias were expanded, so an alias bomb is rejected before it costs anything. */
#ifndef FR_GRAPH_YAML_H
#define FR_GRAPH_YAML_H

#include <stdbool.h>
#include <stddef.h>

#include "core/alloc.h"
#include "core/status.h"

#define FR_YAML_MAX_BYTES (4u << 20)  /* document size */
#define FR_YAML_MAX_DEPTH 64          /* nested sequences and mappings */
#define FR_YAML_MAX_EXPANDED 1000000L /* YAML nodes counted with every alias expanded */
#define FR_YAML_MAX_ANCHORS 1000

enum fr_ykind { FR_Y_SCALAR, FR_Y_SEQ, FR_Y_MAP };

struct fr_ynode {
  enum fr_ykind kind;
  int line, col; /* 1-based start of the node */
  /* FR_Y_SCALAR: the text (NUL-terminated, no NUL inside), and whether it was written plain (no quotes,
   * no tag): only plain scalars are numbers, booleans or null. */
  const char *s;
  size_t len;
  bool plain;
  int end_line, end_col; /* FR_Y_SCALAR: 1-based position just past its source text (quotes included) */
  /* FR_Y_SEQ: n items. FR_Y_MAP: n pairs, items[2i] the key (always a scalar), items[2i+1] its value. */
  int n;
  struct fr_ynode **items;
  long weight; /* nodes in this subtree with aliases expanded (saturates above the cap) */
};

/* Parses one YAML document into a tree in arena a. *root is NULL for an empty document. file names the
 * document in messages. Errors: FR_E_FORMAT "file:line:col: YAML syntax error: ..." for what libyaml
 * rejects; FR_E_INVALID "file:line:col: ..." for a duplicate key, a non-scalar key, an unknown anchor,
 * more than one document, or a limit exceeded (size, depth, expanded size, anchors); FR_E_NOMEM. */
enum fr_status fr_yaml_parse(struct fr_arena *a, const char *text, size_t len, const char *file,
                             struct fr_ynode **root, struct fr_err *err);

/* The value under key in mapping m; NULL when m is NULL, not a mapping, or has no such key. */
const struct fr_ynode *fr_ymap_get(const struct fr_ynode *m, const char *key);

/* The byte offset in text of a node's 1-based line and column (libyaml counts columns in characters:
 * UTF-8 continuation bytes are skipped); len when past the end. */
size_t fr_yaml_offset(const char *text, size_t len, int line, int col);

#endif
