/* The persistent output cache: SQLite, keyed by 16-byte XXH3-128 keys, values are opaque blobs.
 *
 * The cache knows bytes and keys only. WAL mode; one transaction per stored output; every blob carries
 * a checksum (XXH3-64) that is verified on read: a corrupt or truncated entry is reported through the
 * warning callback, deleted, and returned as a miss, never a crash. A size limit is kept by evicting
 * least-recently-used entries. Several processes may share one file (busy timeout, retries). */
#ifndef FR_CACHE_H
#define FR_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

struct fr_key {
  uint8_t b[16];
};

struct fr_cache_opts {
  int64_t max_bytes; /* 0: default 10 GiB; < 0: unlimited */
  /* Called for problems that are not errors (a corrupt entry dropped). */
  void (*warn)(void *user, const char *msg);
  void *user;
};

struct fr_cache;

/* Opens (creating the file and its folder if needed). */
enum fr_status fr_cache_open(const char *path, const struct fr_cache_opts *opts, struct fr_cache **out,
                             struct fr_err *err);
void fr_cache_close(struct fr_cache *c);

/* Default location: $XDG_CACHE_HOME/flowrun/cache.sqlite, else ~/.cache/flowrun/cache.sqlite. Writes
 * into buf; returns false if neither variable is usable. */
bool fr_cache_default_path(char *buf, size_t n);

/* FR_OK with a blob the caller frees (fr_free), FR_E_NOTFOUND on a miss (also for an entry that failed
 * its checksum, which is then dropped), FR_E_CACHE on a database failure. Updates the LRU stamp. */
enum fr_status fr_cache_get(struct fr_cache *c, const struct fr_key *key, void **blob, size_t *len,
                            struct fr_err *err);
/* Presence without reading the blob (the planner's question). The checksum is not verified here: an
 * entry reported present can still turn out bad on fr_cache_get (a miss then), so callers must handle
 * that miss like any other. */
bool fr_cache_has(struct fr_cache *c, const struct fr_key *key);
/* Stores (replacing), then evicts least-recently-used entries down to the limit, all in one
 * transaction: on failure (FR_E_CACHE) the database is as it was before. A blob larger than the whole
 * limit is not stored: a warning, and FR_OK. */
enum fr_status fr_cache_put(struct fr_cache *c, const struct fr_key *key, const void *blob, size_t len,
                            struct fr_err *err);

struct fr_cache_stats {
  int64_t entries, bytes, max_bytes;
  int64_t file_bytes; /* database file size on disk */
};
enum fr_status fr_cache_stats(struct fr_cache *c, struct fr_cache_stats *st, struct fr_err *err);
enum fr_status fr_cache_clear(struct fr_cache *c, struct fr_err *err);
/* Evicts down to the limit, verifies every checksum (dropping bad entries) and vacuums. */
enum fr_status fr_cache_gc(struct fr_cache *c, int64_t *dropped, struct fr_err *err);

/* A small string key-value table beside the entries, e.g. file fingerprints memoised by
 * "path|size|mtime". get: FR_OK and the value copied into val (NUL-terminated, truncated to n), or
 * FR_E_NOTFOUND. */
enum fr_status fr_cache_kv_get(struct fr_cache *c, const char *key, char *val, size_t n, struct fr_err *err);
enum fr_status fr_cache_kv_put(struct fr_cache *c, const char *key, const char *val, struct fr_err *err);

/* Test hook for fault injection: the n-th SQLite write operation from now fails (only that one; each
 * write statement and each commit counts as one; 0 disables). */
void fr_cache_fail_at(struct fr_cache *c, long n);

#endif
