/* The persistent output cache: SQLite, keyed by 16-byte XXH3-128 keys, values are opaque blobs.
 *
 * The cache knows bytes and keys only. WAL mode; one transaction per stored output; every blob carries
 * a checksum (XXH3-64) that is verified on read: a corrupt or truncated entry is reported through the
 * warning callback, deleted, and returned as a miss, never a crash. A size limit is kept by evicting
 * least-recently-used entries. Several processes may share one file (busy timeout, retries).
 *
 * Readers never wait for a writer: WAL mode, and nothing on the read path writes (fr_cache_get keeps the
 * LRU stamps of what it read in memory; they, bad entries to delete and busy memo writes go into the
 * next put's transaction or fr_cache_flush, which never waits for a lock).
 *
 * A cache that cannot be written degrades instead of failing the run: a read-only file or file system
 * makes it read-only at open, a full disk (or an I/O error) at the first failed write; a cache whose
 * file cannot be opened or created (with opts.degrade) is disabled. Each handle warns about that once;
 * later puts are silently not stored. */
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
  /* Called for problems that are not errors (a corrupt entry dropped, a cache that became read-only). */
  void (*warn)(void *user, const char *msg);
  void *user;
  /* A cache that cannot be opened at all (its folder or file cannot be created or opened) is not an
   * error: fr_cache_open returns a disabled cache (every look-up a miss, every put a no-op) after one
   * warning. What a run wants; the `flowrun cache` commands want the error. Files that are not flowrun
   * caches are refused either way. */
  bool degrade;
};

enum fr_cache_mode {
  FR_CACHE_RW,  /* normal */
  FR_CACHE_RO,  /* read-only file or file system, or a write failed (disk full): reads only */
  FR_CACHE_OFF, /* disabled (opts.degrade and the cache could not be opened): nothing is read or stored */
};

struct fr_cache;

/* Opens (creating the file and its folder if needed). */
enum fr_status fr_cache_open(const char *path, const struct fr_cache_opts *opts, struct fr_cache **out,
                             struct fr_err *err);
void fr_cache_close(struct fr_cache *c);

/* Default location: $XDG_CACHE_HOME/flowrun/cache.sqlite, else ~/.cache/flowrun/cache.sqlite. Writes
 * into buf; returns false if neither variable is usable. */
bool fr_cache_default_path(char *buf, size_t n);

enum fr_cache_mode fr_cache_mode(const struct fr_cache *c);
/* Entries this handle's puts evicted to keep the size limit, since it was opened (gc not counted). */
int64_t fr_cache_evictions(const struct fr_cache *c);

/* FR_OK with a blob the caller frees (fr_free), FR_E_NOTFOUND on a miss (also for an entry that failed
 * its checksum, which is then dropped), FR_E_CACHE on a database failure. Records the LRU stamp in
 * memory (written by the next put or fr_cache_flush): a read never writes, so it never waits. */
enum fr_status fr_cache_get(struct fr_cache *c, const struct fr_key *key, void **blob, size_t *len,
                            struct fr_err *err);
/* Presence without reading the blob (the planner's question). The checksum is not verified here: an
 * entry reported present can still turn out bad on fr_cache_get (a miss then), so callers must handle
 * that miss like any other. */
bool fr_cache_has(struct fr_cache *c, const struct fr_key *key);
/* Stores (replacing), then evicts least-recently-used entries down to the limit, all in one
 * transaction (which also writes the pending LRU stamps and drops): on failure (FR_E_CACHE) the
 * database is as it was before. A blob larger than the whole limit is not stored: a warning, and
 * FR_OK. A cache that cannot be written (disk full, read-only, I/O error) turns read-only with one
 * warning, and FR_OK: the value is simply not stored. In a read-only or disabled cache: FR_OK, nothing
 * stored. */
enum fr_status fr_cache_put(struct fr_cache *c, const struct fr_key *key, const void *blob, size_t len,
                            struct fr_err *err);

/* Marks an entry bad (a value that decodes to the wrong type): it is a miss from now on for this handle
 * and is deleted without waiting (now if the database is free, else with the next write). */
void fr_cache_drop(struct fr_cache *c, const struct fr_key *key);
/* Writes what reads left pending (LRU stamps, drops, memos) in one short transaction if the database
 * is free right now; if another connection holds the write lock it does nothing (the stamps wait for
 * the next put). Never waits. Called by the engine at the end of a run and by fr_cache_close. */
void fr_cache_flush(struct fr_cache *c);

struct fr_cache_stats {
  int64_t entries, bytes, max_bytes;
  int64_t file_bytes; /* database file size on disk */
};
/* A disabled cache reports zeros. clear and gc fail (FR_E_CACHE, saying why) on a read-only or
 * disabled cache. */
enum fr_status fr_cache_stats(struct fr_cache *c, struct fr_cache_stats *st, struct fr_err *err);
enum fr_status fr_cache_clear(struct fr_cache *c, struct fr_err *err);
/* Evicts down to the limit, verifies every checksum (dropping bad entries) and vacuums. */
enum fr_status fr_cache_gc(struct fr_cache *c, int64_t *dropped, struct fr_err *err);

/* A small string key-value table beside the entries, e.g. file fingerprints memoised by
 * "path|size|mtime". get: FR_OK and the value copied into val (NUL-terminated, truncated to n), or
 * FR_E_NOTFOUND. put never waits: when another connection holds the write lock the pair is kept in
 * memory (get sees it) and written with the next write transaction; FR_OK without storing on a
 * read-only or disabled cache. */
enum fr_status fr_cache_kv_get(struct fr_cache *c, const char *key, char *val, size_t n, struct fr_err *err);
enum fr_status fr_cache_kv_put(struct fr_cache *c, const char *key, const char *val, struct fr_err *err);

/* Test hook for fault injection: the n-th SQLite write operation from now fails (only that one; each
 * write statement and each commit counts as one, the advisory pending writes (LRU stamps, drops,
 * memos written in a later transaction) do not; 0 disables). An injected failure is FR_E_CACHE, not a
 * degradation. */
void fr_cache_fail_at(struct fr_cache *c, long n);

#endif
