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

#endif
