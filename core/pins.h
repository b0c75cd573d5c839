/* Model pins: a model input given as {file: NAME, sha256: HEX} names the weights it wants by content
 * (docs/graph-format.md, "Pins"). HEX is the full SHA-256 of the file (64 hex digits) or its first 10
 * digits (Civitai's and A1111's "AutoV2" short hash).
 *
 * SHA-256s of files are memoised like the cache's XXH3 fingerprints: in the cache's kv table under
 * "sha256|<absolute path>|<size>|<mtime ns>|<inode>|<ctime ns>" when a cache is open, and in the process's
 * fingerprint memo, so a file version is hashed once. That memo is also the index of the model folders that
 * finding a file by hash and `flowrun models --hash` use: a folder is hashed once, then only its new or
 * changed files. */
#ifndef FR_PINS_H
#define FR_PINS_H

#include <stdbool.h>

#include "core/cache.h"
#include "core/signature.h"
#include "core/status.h"

#define FR_PIN_SHORT_LEN 10
#define FR_PIN_FULL_LEN 64

/* A pin as written (10 or 64 hex digits, either case) into lowercase out; false when it is neither. */
bool fr_pin_parse(const char *text, char out[FR_PIN_FULL_LEN + 1]);
/* True when sha256 (64 lowercase digits) starts with pin (10 or 64 lowercase digits). */
bool fr_pin_matches(const char *pin, const char *sha256);

/* The SHA-256 of the file at path as 64 lowercase hex digits, memoised (above). cache and memo may be
 * NULL. FR_E_IO naming the path when it cannot be read. */
enum fr_status fr_pin_file_sha256(struct fr_cache *cache, struct fr_fp_memo *memo, const char *path,
                                  char out[FR_PIN_FULL_LEN + 1], struct fr_err *err);

/* Checks that the file at path has the pinned content. FR_E_INVALID "PATH: its sha256 is ACTUAL, but the
 * graph pins PIN ..." on a mismatch; FR_E_IO when the file cannot be read. */
enum fr_status fr_pin_check(struct fr_cache *cache, struct fr_fp_memo *memo, const char *path,
                            const char *pin, struct fr_err *err);

/* Calls fn for every regular file under the folders (recursively, at most 8 levels, in name order;
 * hidden entries skipped) with its SHA-256 (NULL when hash is false: then no file is read) and size; fn
 * returns false to stop the walk. A folder that does not exist is skipped; a file that cannot be read
 * is FR_E_IO. */
typedef bool (*fr_pin_index_fn)(void *user, const char *path, const char *sha256, long long size);
enum fr_status fr_pin_index(const char *const *dirs, int n_dirs, bool hash, struct fr_cache *cache,
                            struct fr_fp_memo *memo, fr_pin_index_fn fn, void *user, struct fr_err *err);

/* The first file under the folders (in fr_pin_index's order) whose SHA-256 matches pin: *out is
 * fr_strdup'd (the caller fr_frees it). FR_E_NOTFOUND when none does. */
enum fr_status fr_pin_find(const char *const *dirs, int n_dirs, struct fr_cache *cache,
                           struct fr_fp_memo *memo, const char *pin, char **out, struct fr_err *err);

/* ------------------------------------------------------------------ pinning a graph's text */

struct fr_graph;
struct fr_load_opts;

/* What fr_pin_rewrite did with one model-file input of the graph's own nodes (in file order). */
enum fr_pin_state {
  FR_PIN_PINNED,     /* resolved and hashed: the text now has {file: NAME, sha256: HEX} there */
  FR_PIN_ALREADY,    /* it was a pin already (sha256 is the pin as written, normalised) */
  FR_PIN_NOT_FOUND,  /* no such file in the model folders (only when loaded with require_files false) */
  FR_PIN_UNPINNABLE, /* the name is not one scalar on one line (an alias, a block scalar): left alone */
};

struct fr_pin_item {
  enum fr_pin_state state;
  const char *node, *input; /* node id and input name */
  const char *param;        /* the value was $param: the pin went into that param's default; else NULL */
  const char *file;         /* the file name as written (may be empty) */
  const char *path;         /* PINNED, ALREADY: the resolved file; else NULL */
  const char *sha256;       /* PINNED: 64 hex digits; ALREADY: the pin (10 or 64); else NULL */
  int line, col;            /* where the name (or the value) is in the text, 1-based */
};

struct fr_pin_result {
  char *text; /* the pinned YAML (NUL-terminated); the input text itself when nothing was pinned */
  size_t len;
  struct fr_pin_item *items;
  int n_items, n_pinned;
  struct fr_arena *arena; /* owns text, items and their strings */
};

/* Pins every model file that graph g's own nodes and top-level params name by plain file name: the
 * scalar in g->yaml becomes {file: NAME, sha256: HEX} (a $param value pins the param's default), and
 * nothing else of the text changes (comments, layout, quotes). g must have been loaded from its text
 * with opts; files are hashed through opts->cache / opts->memo (fr_pin_file_sha256), and the rewritten
 * text must load again with opts (a check of the edit). out->items says what happened to each input,
 * also when an error is returned after some were looked at. Errors: FR_E_IO naming a file that cannot be
 * hashed, FR_E_INVALID "the pinned graph does not load (a bug): ...", FR_E_NOMEM. Free out with
 * fr_pin_result_free, whatever the status. */
enum fr_status fr_pin_rewrite(const struct fr_graph *g, const struct fr_load_opts *opts,
                              struct fr_pin_result *out, struct fr_err *err);
void fr_pin_result_free(struct fr_pin_result *r);
/* "pinned", "already pinned", "not found", "not pinnable" */
const char *fr_pin_state_str(enum fr_pin_state s);

#endif
