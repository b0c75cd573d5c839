/* The persistent output cache on SQLite. See core/cache.h for the promises and docs/cache.md for the
 * file layout.
 *
 * Schema (version 1):
 *   flowrun_schema(version)               one row; identifies the file as a flowrun cache
 *   entries(key BLOB PRIMARY KEY, blob, size, checksum, created, last_used)
 *                                         checksum = XXH3-64 of blob; times in microseconds since 1970
 *   kv(key TEXT PRIMARY KEY, value TEXT)  small memos (file fingerprints)
 *
 * Robustness rules: a file that is not an SQLite database, or a database with other tables, is
 * refused without being written to (not even the journal mode changes). Every stored output is one
 * IMMEDIATE transaction (insert + eviction + commit) so a failure at any step rolls back to the
 * previous consistent state. Busy databases (other flowrun processes) are waited for: SQLite's busy
 * timeout first, then a bounded retry loop for the cases the busy handler does not cover. */
#include "core/cache.h"

#include <errno.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/alloc.h"

#define FR__SCHEMA_VERSION 1
#define FR__DEFAULT_MAX ((int64_t)10 << 30)
#define FR__BUSY_TIMEOUT_MS 10000
#define FR__BUSY_RETRIES 20

struct fr_cache {
  sqlite3 *db;
  char *path;
  int64_t max_bytes; /* < 0: unlimited */
  void (*warn)(void *user, const char *msg);
  void *user;
  long fail_at, writes; /* fault injection: fail write number fail_at (counted from fr_cache_fail_at) */
  int64_t last_stamp;   /* keeps this connection's LRU stamps strictly increasing */
  enum fr_cache_mode mode;
  int last_code;        /* SQLite's extended code of the last database failure (0: none or injected) */
  bool warned_degraded; /* the one warning about a cache that cannot be written was given */
  int64_t evicted;      /* entries evicted by this handle's committed puts (fr_cache_evictions) */
  /* Writes kept off the read path, done in the next write transaction (a put) or by fr_cache_flush:
   * LRU stamps of entries read, entries found bad, file fingerprint memos that met a busy database. */
  struct fr__touch {
    struct fr_key key;
    int64_t stamp;
  } * touched;
  int n_touched, cap_touched;
  struct fr_key *drops;
  int n_drops, cap_drops;
  struct fr__kvp {
    char *k, *v;
  } * kvs;
  int n_kvs, cap_kvs;
};

/* At most this many pending LRU stamps; beyond it a flush is tried, and if the database is busy the
 * stamps are forgotten (they are advisory: eviction order only). */
#define FR__MAX_PENDING 4096

/* ---- helpers ---- */

static void fr__warnf(struct fr_cache *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fr__warnf(struct fr_cache *c, const char *fmt, ...) {
  if (!c->warn)
    return;
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  c->warn(c->user, msg);
}

static void fr__hexkey(const struct fr_key *k, char out[33]) {
  static const char d[] = "0123456789abcdef";
  for (int i = 0; i < 16; i++) {
    out[2 * i] = d[k->b[i] >> 4];
    out[2 * i + 1] = d[k->b[i] & 15];
  }
  out[32] = 0;
}

static int64_t fr__now_us(struct fr_cache *c) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t t = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
  if (t <= c->last_stamp)
    t = c->last_stamp + 1;
  c->last_stamp = t;
  return t;
}

/* The fault-injection gate, called before every statement that writes. */
static bool fr__write_allowed(struct fr_cache *c) {
  if (c->fail_at <= 0)
    return true;
  if (++c->writes == c->fail_at) {
    c->fail_at = 0;
    return false;
  }
  return true;
}

static void fr__backoff(int attempt) {
  struct timespec ts = {0, (long)(1 + attempt % 10) * 2000000L}; /* 2..20 ms */
  nanosleep(&ts, NULL);
}

static bool fr__busy(int rc) {
  return (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
}

/* sqlite3_step with retries on BUSY; the statement is reset before each retry. */
static int fr__step(sqlite3_stmt *s) {
  for (int attempt = 0;; attempt++) {
    int rc = sqlite3_step(s);
    if (!fr__busy(rc) || attempt >= FR__BUSY_RETRIES)
      return rc;
    sqlite3_reset(s);
    fr__backoff(attempt);
  }
}

static enum fr_status fr__dberr(struct fr_cache *c, struct fr_err *err, const char *what) {
  c->last_code = sqlite3_extended_errcode(c->db);
  return fr_errf(err, FR_E_CACHE, "cache %s: %s: %s", c->path, what, sqlite3_errmsg(c->db));
}

/* Runs SQL without results, retrying on BUSY. */
static int fr__exec(struct fr_cache *c, const char *sql) {
  for (int attempt = 0;; attempt++) {
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
    if (!fr__busy(rc) || attempt >= FR__BUSY_RETRIES)
      return rc;
    fr__backoff(attempt);
  }
}

static enum fr_status fr__prepare(struct fr_cache *c, const char *sql, sqlite3_stmt **s, struct fr_err *err) {
  for (int attempt = 0;; attempt++) {
    int rc = sqlite3_prepare_v2(c->db, sql, -1, s, NULL);
    if (rc == SQLITE_OK)
      return FR_OK;
    if (!fr__busy(rc) || attempt >= FR__BUSY_RETRIES)
      return fr__dberr(c, err, "prepare");
    fr__backoff(attempt);
  }
}

static enum fr_status fr__begin(struct fr_cache *c, struct fr_err *err) {
  if (fr__exec(c, "BEGIN IMMEDIATE") != SQLITE_OK)
    return fr__dberr(c, err, "begin");
  return FR_OK;
}

static void fr__rollback(struct fr_cache *c) {
  if (!sqlite3_get_autocommit(c->db))
    sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
}

static enum fr_status fr__commit(struct fr_cache *c, struct fr_err *err) {
  if (!fr__write_allowed(c)) {
    fr__rollback(c);
    return fr_errf(err, FR_E_CACHE, "cache %s: commit: injected failure", c->path);
  }
  if (fr__exec(c, "COMMIT") != SQLITE_OK) {
    enum fr_status rc = fr__dberr(c, err, "commit");
    fr__rollback(c);
    return rc;
  }
  return FR_OK;
}

/* Steps a write statement once (through the fault-injection gate) and finalizes it. */
static enum fr_status fr__write_stmt(struct fr_cache *c, sqlite3_stmt *s, const char *what,
                                     struct fr_err *err) {
  enum fr_status rc = FR_OK;
  if (!fr__write_allowed(c))
    rc = fr_errf(err, FR_E_CACHE, "cache %s: %s: injected failure", c->path, what);
  else if (fr__step(s) != SQLITE_DONE)
    rc = fr__dberr(c, err, what);
  sqlite3_finalize(s);
  return rc;
}

/* Failures that mean "this cache cannot be written here" (rather than a bug or a busy database). */
static bool fr__cant_write(int code) {
  switch (code & 0xff) {
  case SQLITE_FULL:
  case SQLITE_READONLY:
  case SQLITE_IOERR:
  case SQLITE_CANTOPEN:
  case SQLITE_PERM: return true;
  default: return false;
  }
}

static const char *fr__why_not_writable(int code) {
  switch (code & 0xff) {
  case SQLITE_FULL: return "the disk is full";
  case SQLITE_READONLY: return "it is read-only";
  case SQLITE_IOERR: return "an I/O error";
  case SQLITE_CANTOPEN: return "its files cannot be opened for writing";
  case SQLITE_PERM: return "permission denied";
  default: return "it cannot be written";
  }
}

/* Turns the cache read-only (or off) and warns once per handle. why: what went wrong, in words. */
static void fr__degrade(struct fr_cache *c, enum fr_cache_mode mode, const char *why) {
  if (mode > c->mode)
    c->mode = mode;
  if (c->warned_degraded)
    return;
  c->warned_degraded = true;
  if (c->mode == FR_CACHE_OFF)
    fr__warnf(c, "cache %s: %s; running without a cache (nothing is read from it or stored in it)", c->path,
              why);
  else
    fr__warnf(c, "cache %s: %s; using it read-only (cached results are read, new ones are not stored)",
              c->path, why);
}

/* The pending lists (see struct fr_cache). Allocation failures just lose the pending item: all of
 * them are advisory. */
static bool fr__grow(void **arr, int *cap, int n, size_t elem) {
  if (n < *cap)
    return true;
  int nc = *cap ? *cap * 2 : 16;
  void *p = fr_realloc(*arr, elem * (size_t)nc);
  if (!p)
    return false;
  *arr = p;
  *cap = nc;
  return true;
}

static bool fr__is_dropped(const struct fr_cache *c, const struct fr_key *key) {
  for (int i = 0; i < c->n_drops; i++)
    if (memcmp(c->drops[i].b, key->b, 16) == 0)
      return true;
  return false;
}

static void fr__clear_pending(struct fr_cache *c) {
  for (int i = 0; i < c->n_kvs; i++) {
    fr_free(c->kvs[i].k);
    fr_free(c->kvs[i].v);
  }
  c->n_kvs = 0;
  c->n_touched = 0;
  c->n_drops = 0;
}

/* Inside a write transaction: writes the pending stamps, drops and memos, then forgets them. A failed
 * statement is skipped (all of it is advisory), unless it ended the transaction (SQLite rolls back on
 * a full disk or an I/O error): then that code is returned and the caller's transaction is gone. */
static int fr__apply_pending(struct fr_cache *c) {
  static const char *const sql[3] = {"DELETE FROM entries WHERE key=?",
                                     "UPDATE entries SET last_used=max(last_used, ?) WHERE key=?",
                                     "INSERT OR REPLACE INTO kv(key, value) VALUES(?, ?)"};
  int n[3] = {c->n_drops, c->n_touched, c->n_kvs};
  int code = SQLITE_OK;
  for (int w = 0; w < 3 && code == SQLITE_OK; w++) {
    sqlite3_stmt *s;
    if (n[w] == 0 || sqlite3_prepare_v2(c->db, sql[w], -1, &s, NULL) != SQLITE_OK)
      continue;
    for (int i = 0; i < n[w]; i++) {
      sqlite3_reset(s);
      if (w == 0) {
        sqlite3_bind_blob(s, 1, c->drops[i].b, 16, SQLITE_STATIC);
      } else if (w == 1) {
        sqlite3_bind_int64(s, 1, c->touched[i].stamp);
        sqlite3_bind_blob(s, 2, c->touched[i].key.b, 16, SQLITE_STATIC);
      } else {
        sqlite3_bind_text(s, 1, c->kvs[i].k, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, c->kvs[i].v, -1, SQLITE_STATIC);
      }
      int rc = sqlite3_step(s);
      if (rc != SQLITE_DONE && sqlite3_get_autocommit(c->db)) {
        code = sqlite3_extended_errcode(c->db);
        break;
      }
    }
    sqlite3_finalize(s);
  }
  fr__clear_pending(c);
  return code;
}

void fr_cache_flush(struct fr_cache *c) {
  if (!c || c->mode != FR_CACHE_RW || (c->n_touched == 0 && c->n_drops == 0 && c->n_kvs == 0))
    return;
  /* One attempt with no busy wait: if another connection writes right now, the stamps wait. */
  sqlite3_busy_timeout(c->db, 0);
  int code = sqlite3_exec(c->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  if (code == SQLITE_OK) {
    code = fr__apply_pending(c);
    if (code == SQLITE_OK && (code = sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL)) != SQLITE_OK)
      code = sqlite3_extended_errcode(c->db);
    fr__rollback(c);
  } else {
    code = sqlite3_extended_errcode(c->db);
    if (c->n_touched >= FR__MAX_PENDING || c->n_kvs >= FR__MAX_PENDING)
      fr__clear_pending(c);
  }
  sqlite3_busy_timeout(c->db, FR__BUSY_TIMEOUT_MS);
  if (fr__cant_write(code)) {
    char why[256];
    snprintf(why, sizeof why, "cannot be written (%s: %s)", fr__why_not_writable(code), sqlite3_errstr(code));
    fr__degrade(c, FR_CACHE_RO, why);
  }
}

void fr_cache_drop(struct fr_cache *c, const struct fr_key *key) {
  if (!c || c->mode == FR_CACHE_OFF || fr__is_dropped(c, key))
    return;
  if (fr__grow((void **)&c->drops, &c->cap_drops, c->n_drops, sizeof *c->drops))
    c->drops[c->n_drops++] = *key;
  fr_cache_flush(c);
}

enum fr_cache_mode fr_cache_mode(const struct fr_cache *c) {
  return c ? c->mode : FR_CACHE_OFF;
}

int64_t fr_cache_evictions(const struct fr_cache *c) {
  return c ? c->evicted : 0;
}

/* ---- opening ---- */

/* mkdir -p of the folder that holds path. */
static enum fr_status fr__make_parent(const char *path, struct fr_err *err) {
  char *dir = fr_strdup(path);
  if (!dir)
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  char *slash = strrchr(dir, '/');
  enum fr_status rc = FR_OK;
  if (slash && slash != dir) {
    *slash = 0;
    for (char *p = dir + 1; rc == FR_OK; p++) {
      if (*p != '/' && *p != 0)
        continue;
      char keep = *p;
      *p = 0;
      if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        rc = fr_errf(err, FR_E_CACHE, "cache %s: cannot create folder %s: %s", path, dir, strerror(errno));
      *p = keep;
      if (!keep)
        break;
    }
  }
  fr_free(dir);
  return rc;
}

static const char fr__schema_sql[] =
    "CREATE TABLE flowrun_schema(version INTEGER NOT NULL);"
    "INSERT INTO flowrun_schema VALUES(1);"
    "CREATE TABLE entries(key BLOB PRIMARY KEY, blob BLOB NOT NULL, size INTEGER NOT NULL,"
    " checksum INTEGER NOT NULL, created INTEGER NOT NULL, last_used INTEGER NOT NULL);"
    "CREATE INDEX entries_lru ON entries(last_used);"
    "CREATE TABLE kv(key TEXT PRIMARY KEY, value TEXT NOT NULL);";

/* What the file holds: 0 no tables (new), 1 a flowrun cache of our version, or an error. */
static enum fr_status fr__inspect(struct fr_cache *c, bool *fresh, struct fr_err *err) {
  sqlite3_stmt *s;
  int rc = SQLITE_OK;
  for (int attempt = 0;; attempt++) {
    rc = sqlite3_prepare_v2(c->db, "SELECT name FROM sqlite_master WHERE type='table'", -1, &s, NULL);
    if (!fr__busy(rc) || attempt >= FR__BUSY_RETRIES)
      break;
    fr__backoff(attempt);
  }
  if ((rc & 0xff) == SQLITE_NOTADB || (rc & 0xff) == SQLITE_CORRUPT)
    return fr_errf(err, FR_E_CACHE,
                   "cache %s: not an SQLite database (or damaged); refusing to touch it. Use "
                   "another --cache path or remove the file",
                   c->path);
  if (rc != SQLITE_OK)
    return fr__dberr(c, err, "reading the schema");
  int n_tables = 0;
  bool has_schema = false, has_entries = false, has_kv = false;
  char foreign[128] = "";
  while ((rc = fr__step(s)) == SQLITE_ROW) {
    const char *name = (const char *)sqlite3_column_text(s, 0);
    if (!name)
      continue;
    n_tables++;
    if (strcmp(name, "flowrun_schema") == 0)
      has_schema = true;
    else if (strcmp(name, "entries") == 0)
      has_entries = true;
    else if (strcmp(name, "kv") == 0)
      has_kv = true;
    else if (!foreign[0])
      snprintf(foreign, sizeof foreign, "%s", name);
  }
  sqlite3_finalize(s);
  if ((rc & 0xff) == SQLITE_NOTADB || (rc & 0xff) == SQLITE_CORRUPT)
    return fr_errf(err, FR_E_CACHE,
                   "cache %s: not an SQLite database (or damaged); refusing to touch it. Use "
                   "another --cache path or remove the file",
                   c->path);
  if (rc != SQLITE_DONE)
    return fr__dberr(c, err, "reading the schema");
  *fresh = n_tables == 0;
  if (*fresh)
    return FR_OK;
  if (!has_schema)
    return fr_errf(err, FR_E_CACHE,
                   "cache %s: an SQLite database that is not a flowrun cache (it has table "
                   "\"%s\"); refusing to change it",
                   c->path, foreign[0] ? foreign : "?");
  if (fr__prepare(c, "SELECT version FROM flowrun_schema", &s, err))
    return FR_E_CACHE;
  int64_t version = -1;
  if ((rc = fr__step(s)) == SQLITE_ROW)
    version = sqlite3_column_int64(s, 0);
  sqlite3_finalize(s);
  if (version != FR__SCHEMA_VERSION)
    return fr_errf(err, FR_E_CACHE, "cache %s: schema version %lld, this flowrun reads version %d%s", c->path,
                   (long long)version, FR__SCHEMA_VERSION,
                   version > FR__SCHEMA_VERSION ? " (written by a newer flowrun)" : "");
  if (!has_entries || !has_kv || foreign[0])
    return fr_errf(err, FR_E_CACHE,
                   "cache %s: flowrun cache with unexpected tables (%s); refusing to change it", c->path,
                   foreign[0] ? foreign : "entries or kv missing");
  return FR_OK;
}

/* "file:" URI of path with immutable=1: the only way SQLite reads a WAL database on a read-only file
 * system whose -shm file does not exist (it cannot create one). Safe there: nobody can change the
 * file through a read-only mount while we read it, and every blob is checksummed anyway. */
static char *fr__immutable_uri(const char *path) {
  size_t n = strlen(path);
  char *u = fr_malloc(3 * n + 32);
  if (!u)
    return NULL;
  char *o = u + sprintf(u, "file:");
  for (const char *p = path; *p; p++) {
    if (*p == '%' || *p == '?' || *p == '#')
      o += sprintf(o, "%%%02x", (unsigned char)*p);
    else
      *o++ = *p;
  }
  strcpy(o, "?immutable=1");
  return u;
}

/* Opens c->db read-only (the file exists but cannot be opened for writing). */
static int fr__open_ro(struct fr_cache *c, bool immutable) {
  sqlite3_close_v2(c->db);
  c->db = NULL;
  char *uri = immutable ? fr__immutable_uri(c->path) : NULL;
  if (immutable && !uri)
    return SQLITE_NOMEM;
  int rc = sqlite3_open_v2(immutable ? uri : c->path, &c->db,
                           SQLITE_OPEN_READONLY | (immutable ? SQLITE_OPEN_URI : 0), NULL);
  fr_free(uri);
  if (c->db) {
    sqlite3_busy_timeout(c->db, FR__BUSY_TIMEOUT_MS);
    sqlite3_extended_result_codes(c->db, 1);
  }
  return rc;
}

/* An error message without its "cache PATH: " prefix (the degrade warning names the path itself). */
static const char *fr__reason(const struct fr_cache *c, const struct fr_err *err) {
  if (!err)
    return "no details";
  size_t n = strlen(c->path);
  if (strncmp(err->msg, "cache ", 6) == 0 && strncmp(err->msg + 6, c->path, n) == 0 &&
      strncmp(err->msg + 6 + n, ": ", 2) == 0)
    return err->msg + 6 + n + 2;
  return err->msg;
}

/* With opts.degrade: the cache cannot be opened; hand back a disabled one after the warning. */
static enum fr_status fr__open_off(struct fr_cache *c, struct fr_cache **out, const char *why) {
  sqlite3_close_v2(c->db);
  c->db = NULL;
  fr__degrade(c, FR_CACHE_OFF, why);
  fr__clear_pending(c);
  *out = c;
  return FR_OK;
}

enum fr_status fr_cache_open(const char *path, const struct fr_cache_opts *opts, struct fr_cache **out,
                             struct fr_err *err) {
  *out = NULL;
  if (!path || !*path)
    return fr_errf(err, FR_E_INVALID, "cache: empty path");
  struct fr_cache *c = fr_calloc(1, sizeof *c);
  if (!c || !(c->path = fr_strdup(path))) {
    fr_free(c);
    return fr_errf(err, FR_E_NOMEM, "cache %s: out of memory", path);
  }
  int64_t mb = opts ? opts->max_bytes : 0;
  c->max_bytes = mb == 0 ? FR__DEFAULT_MAX : mb;
  bool degrade = opts && opts->degrade;
  if (opts) {
    c->warn = opts->warn;
    c->user = opts->user;
  }
  enum fr_status rc = fr__make_parent(path, err);
  if (rc == FR_E_CACHE && degrade)
    return fr__open_off(c, out, fr__reason(c, err));
  if (rc)
    goto fail;
  struct stat sb;
  bool exists = stat(path, &sb) == 0;
  if (exists && !S_ISREG(sb.st_mode)) {
    rc = fr_errf(err, FR_E_CACHE, "cache %s: not a regular file", path);
    goto fail;
  }
  int src = sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
  if (src == SQLITE_OK) {
    sqlite3_busy_timeout(c->db, FR__BUSY_TIMEOUT_MS);
    sqlite3_extended_result_codes(c->db, 1);
    /* SQLite opens a file it may not write (a read-only file or file system) read-only. */
    if (sqlite3_db_readonly(c->db, "main") == 1)
      c->mode = FR_CACHE_RO;
  } else if (exists && fr__open_ro(c, false) == SQLITE_OK) {
    c->mode = FR_CACHE_RO;
  } else {
    char why[512];
    snprintf(why, sizeof why, "cannot open or create it: %s",
             c->db ? sqlite3_errmsg(c->db) : "out of memory");
    if (degrade)
      return fr__open_off(c, out, why);
    rc = fr_errf(err, FR_E_CACHE, "cache %s: %s", path, why);
    goto fail;
  }
  bool fresh = false;
  rc = fr__inspect(c, &fresh, err);
  if (rc == FR_E_CACHE && c->mode == FR_CACHE_RO && fr__cant_write(c->last_code)) {
    /* A WAL database on a read-only file system: SQLite cannot create the -shm file it reads through. */
    if (fr__open_ro(c, true) == SQLITE_OK)
      rc = fr__inspect(c, &fresh, err);
  }
  if (rc == FR_E_CACHE && degrade && fr__cant_write(c->last_code))
    return fr__open_off(c, out, fr__reason(c, err));
  if (rc)
    goto fail;
  if (c->mode == FR_CACHE_RO) {
    if (fresh) /* an empty file that we may not give a schema: nothing to read either */
      return fr__open_off(c, out, "an empty file that cannot be written");
    fr__degrade(c, FR_CACHE_RO, "the file or its file system is read-only");
    *out = c;
    return FR_OK;
  }
  if (fresh) {
    /* Create under the write lock, then look again: another process may have created it meanwhile. */
    if ((rc = fr__begin(c, err)))
      goto fail_create;
    if ((rc = fr__inspect(c, &fresh, err))) {
      fr__rollback(c);
      goto fail;
    }
    if (fresh && sqlite3_exec(c->db, fr__schema_sql, NULL, NULL, NULL) != SQLITE_OK) {
      rc = fr__dberr(c, err, "creating the schema");
      fr__rollback(c);
      goto fail_create;
    }
    if (fr__exec(c, "COMMIT") != SQLITE_OK) {
      rc = fr__dberr(c, err, "creating the schema");
      fr__rollback(c);
      goto fail_create;
    }
  }
  /* WAL lets readers (the planner in another process) proceed while one process writes; NORMAL
   * synchronous keeps the database consistent on power loss at the price of the last commits, which is
   * what a cache can afford. */
  sqlite3_stmt *s;
  if ((rc = fr__prepare(c, "PRAGMA journal_mode=WAL", &s, err)))
    goto fail;
  int step = fr__step(s);
  const char *mode = step == SQLITE_ROW ? (const char *)sqlite3_column_text(s, 0) : NULL;
  bool wal = mode && strcmp(mode, "wal") == 0;
  sqlite3_finalize(s);
  if (!wal)
    fr__warnf(c, "cache %s: WAL mode unavailable (%s); concurrent use will be slower", path,
              step == SQLITE_ROW ? mode ? mode : "?" : sqlite3_errmsg(c->db));
  fr__exec(c, "PRAGMA synchronous=NORMAL");
  *out = c;
  return FR_OK;
fail_create:
  /* A disk that is full (or read-only) before the schema exists: nothing to read, so disabled. */
  if (degrade && fr__cant_write(c->last_code))
    return fr__open_off(c, out, fr__reason(c, err));
fail:
  fr_cache_close(c);
  return rc;
}

void fr_cache_close(struct fr_cache *c) {
  if (!c)
    return;
  fr_cache_flush(c);
  fr__clear_pending(c);
  fr_free(c->touched);
  fr_free(c->drops);
  fr_free(c->kvs);
  sqlite3_close_v2(c->db); /* NULL is fine */
  fr_free(c->path);
  fr_free(c);
}

bool fr_cache_default_path(char *buf, size_t n) {
  const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
  int w;
  if (xdg && xdg[0] == '/') /* the XDG spec ignores relative values */
    w = snprintf(buf, n, "%s/flowrun/cache.sqlite", xdg);
  else if (home && home[0])
    w = snprintf(buf, n, "%s/.cache/flowrun/cache.sqlite", home);
  else
    return false;
  return w > 0 && (size_t)w < n;
}

void fr_cache_fail_at(struct fr_cache *c, long n) {
  c->fail_at = n;
  c->writes = 0;
}

/* ---- entries ---- */

/* Checks a row's blob against its size and checksum; on mismatch warns and returns false. */
static bool fr__verify(struct fr_cache *c, const struct fr_key *key, const void *blob, int64_t got,
                       int64_t size, int64_t sum) {
  char hex[33];
  if (got != size) {
    fr__hexkey(key, hex);
    fr__warnf(c, "cache entry %s: truncated (%lld of %lld bytes), dropped", hex, (long long)got,
              (long long)size);
    return false;
  }
  if (XXH3_64bits(blob, (size_t)got) != (uint64_t)sum) {
    fr__hexkey(key, hex);
    fr__warnf(c, "cache entry %s: checksum mismatch, dropped", hex);
    return false;
  }
  return true;
}

enum fr_status fr_cache_get(struct fr_cache *c, const struct fr_key *key, void **blob, size_t *len,
                            struct fr_err *err) {
  *blob = NULL;
  *len = 0;
  if (c->mode == FR_CACHE_OFF || fr__is_dropped(c, key))
    return FR_E_NOTFOUND;
  sqlite3_stmt *s;
  if (fr__prepare(c, "SELECT blob, size, checksum FROM entries WHERE key=?", &s, err))
    return FR_E_CACHE;
  sqlite3_bind_blob(s, 1, key->b, 16, SQLITE_STATIC);
  int rc = fr__step(s);
  if (rc == SQLITE_DONE) {
    sqlite3_finalize(s);
    return FR_E_NOTFOUND;
  }
  if (rc != SQLITE_ROW) {
    enum fr_status r = fr__dberr(c, err, "get");
    sqlite3_finalize(s);
    return r;
  }
  const void *p = sqlite3_column_blob(s, 0);
  int64_t got = sqlite3_column_bytes(s, 0);
  bool ok = fr__verify(c, key, p, got, sqlite3_column_int64(s, 1), sqlite3_column_int64(s, 2));
  void *copy = ok ? fr_malloc((size_t)got) : NULL;
  if (copy && got)
    memcpy(copy, p, (size_t)got);
  sqlite3_finalize(s);
  if (!ok) {
    fr_cache_drop(c, key);
    return FR_E_NOTFOUND;
  }
  if (!copy)
    return fr_errf(err, FR_E_NOMEM, "cache %s: out of memory for a %lld-byte entry", c->path, (long long)got);
  /* The LRU stamp is advisory and kept in memory: a read never writes, so it never waits for a writer.
   * Too many pending stamps: write them now if the database is free, else forget them. */
  if (c->mode == FR_CACHE_RW) {
    if (c->n_touched >= FR__MAX_PENDING)
      fr_cache_flush(c);
    if (c->n_touched < FR__MAX_PENDING &&
        fr__grow((void **)&c->touched, &c->cap_touched, c->n_touched, sizeof *c->touched))
      c->touched[c->n_touched++] = (struct fr__touch){*key, fr__now_us(c)};
  }
  *blob = copy;
  *len = (size_t)got;
  return FR_OK;
}

bool fr_cache_has(struct fr_cache *c, const struct fr_key *key) {
  if (c->mode == FR_CACHE_OFF || fr__is_dropped(c, key))
    return false;
  sqlite3_stmt *s;
  if (fr__prepare(c, "SELECT 1 FROM entries WHERE key=?", &s, NULL))
    return false;
  sqlite3_bind_blob(s, 1, key->b, 16, SQLITE_STATIC);
  bool found = fr__step(s) == SQLITE_ROW;
  sqlite3_finalize(s);
  return found;
}

/* Inside a transaction: deletes least-recently-used entries (never `keep`) until the total size is at
 * most limit. The victims are collected before deleting: changing a table under a running SELECT on
 * the same connection is not something to rely on. Adds what it removed to *n_dropped and
 * *bytes_dropped when given. */
static enum fr_status fr__evict(struct fr_cache *c, int64_t limit, const struct fr_key *keep,
                                int64_t *n_dropped, int64_t *bytes_dropped, struct fr_err *err) {
  if (limit < 0)
    return FR_OK;
  sqlite3_stmt *s;
  if (fr__prepare(c, "SELECT coalesce(sum(size), 0) FROM entries", &s, err))
    return FR_E_CACHE;
  int64_t total = fr__step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
  sqlite3_finalize(s);
  if (total < 0)
    return fr__dberr(c, err, "summing sizes");
  if (total <= limit)
    return FR_OK;
  if (fr__prepare(c, "SELECT key, size FROM entries ORDER BY last_used, rowid", &s, err))
    return FR_E_CACHE;
  struct fr_key *victims = NULL;
  int64_t *sizes = NULL;
  int n = 0, cap = 0, step = SQLITE_ROW;
  enum fr_status rc = FR_OK;
  while (total > limit && (step = fr__step(s)) == SQLITE_ROW) {
    const void *k = sqlite3_column_blob(s, 0);
    if (sqlite3_column_bytes(s, 0) != 16 || (keep && memcmp(k, keep->b, 16) == 0))
      continue; /* malformed keys are gc's business */
    if (n == cap) {
      int nc = cap ? cap * 2 : 16;
      struct fr_key *nv = fr_realloc(victims, sizeof *nv * (size_t)nc);
      if (nv)
        victims = nv;
      int64_t *ns = nv ? fr_realloc(sizes, sizeof *ns * (size_t)nc) : NULL;
      if (ns)
        sizes = ns;
      if (!nv || !ns) {
        rc = fr_errf(err, FR_E_NOMEM, "cache %s: out of memory evicting", c->path);
        break;
      }
      cap = nc;
    }
    memcpy(victims[n].b, k, 16);
    sizes[n] = sqlite3_column_int64(s, 1);
    total -= sizes[n++];
  }
  if (!rc && step != SQLITE_ROW && step != SQLITE_DONE)
    rc = fr__dberr(c, err, "evict scan");
  sqlite3_finalize(s);
  for (int i = 0; !rc && i < n; i++) {
    if ((rc = fr__prepare(c, "DELETE FROM entries WHERE key=?", &s, err)))
      break;
    sqlite3_bind_blob(s, 1, victims[i].b, 16, SQLITE_STATIC);
    if ((rc = fr__write_stmt(c, s, "evict", err)))
      break;
    if (n_dropped)
      (*n_dropped)++;
    if (bytes_dropped)
      *bytes_dropped += sizes[i];
  }
  fr_free(victims);
  fr_free(sizes);
  return rc;
}

/* The put's transaction: pending writes, insert, eviction, commit. */
static enum fr_status fr__put_txn(struct fr_cache *c, const struct fr_key *key, const void *blob, size_t len,
                                  struct fr_err *err) {
  enum fr_status rc = fr__begin(c, err);
  if (rc)
    return rc;
  int code = fr__apply_pending(c);
  if (code != SQLITE_OK) {
    c->last_code = code;
    return fr_errf(err, FR_E_CACHE, "cache %s: put: %s", c->path, sqlite3_errstr(code));
  }
  sqlite3_stmt *s;
  if ((rc = fr__prepare(c,
                        "INSERT OR REPLACE INTO entries(key, blob, size, checksum, created, last_used)"
                        " VALUES(?, ?, ?, ?, ?, ?)",
                        &s, err))) {
    fr__rollback(c);
    return rc;
  }
  int64_t now = fr__now_us(c);
  sqlite3_bind_blob(s, 1, key->b, 16, SQLITE_STATIC);
  sqlite3_bind_blob(s, 2, blob ? blob : "", (int)len, SQLITE_STATIC);
  sqlite3_bind_int64(s, 3, (int64_t)len);
  sqlite3_bind_int64(s, 4, (int64_t)XXH3_64bits(blob, len));
  sqlite3_bind_int64(s, 5, now);
  sqlite3_bind_int64(s, 6, now);
  int64_t evicted = 0;
  if ((rc = fr__write_stmt(c, s, "put", err)) ||
      (rc = fr__evict(c, c->max_bytes, key, &evicted, NULL, err))) {
    fr__rollback(c);
    return rc;
  }
  if ((rc = fr__commit(c, err)) == FR_OK)
    c->evicted += evicted;
  return rc;
}

enum fr_status fr_cache_put(struct fr_cache *c, const struct fr_key *key, const void *blob, size_t len,
                            struct fr_err *err) {
  if (!blob && len)
    return fr_errf(err, FR_E_INVALID, "cache put: NULL blob");
  if (len > (size_t)INT_MAX)
    return fr_errf(err, FR_E_UNSUPPORTED, "cache %s: a %zu-byte entry exceeds SQLite's blob limit", c->path,
                   len);
  if (c->max_bytes >= 0 && (int64_t)len > c->max_bytes) {
    char hex[33];
    fr__hexkey(key, hex);
    fr__warnf(c, "cache entry %s: %zu bytes exceed the cache limit of %lld bytes, not stored", hex, len,
              (long long)c->max_bytes);
    return FR_OK;
  }
  if (c->mode != FR_CACHE_RW)
    return FR_OK; /* read-only or disabled: said once already */
  c->last_code = 0;
  enum fr_status rc = fr__put_txn(c, key, blob, len, err);
  if (rc == FR_E_CACHE && fr__cant_write(c->last_code)) {
    char why[FR_ERR_MAX + 64];
    snprintf(why, sizeof why, "cannot be written (%s: %s)", fr__why_not_writable(c->last_code),
             fr__reason(c, err));
    fr__degrade(c, FR_CACHE_RO, why);
    return FR_OK;
  }
  return rc;
}

/* ---- maintenance ---- */

static int64_t fr__file_size(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 ? (int64_t)sb.st_size : 0;
}

enum fr_status fr_cache_stats(struct fr_cache *c, struct fr_cache_stats *st, struct fr_err *err) {
  memset(st, 0, sizeof *st);
  st->max_bytes = c->max_bytes;
  if (c->mode == FR_CACHE_OFF)
    return FR_OK;
  sqlite3_stmt *s;
  if (fr__prepare(c, "SELECT count(*), coalesce(sum(size), 0) FROM entries", &s, err))
    return FR_E_CACHE;
  int rc = fr__step(s);
  if (rc == SQLITE_ROW) {
    st->entries = sqlite3_column_int64(s, 0);
    st->bytes = sqlite3_column_int64(s, 1);
  }
  sqlite3_finalize(s);
  if (rc != SQLITE_ROW)
    return fr__dberr(c, err, "stats");
  st->max_bytes = c->max_bytes;
  size_t pl = strlen(c->path);
  char *wal = fr_malloc(pl + 5);
  st->file_bytes = fr__file_size(c->path);
  if (wal) {
    memcpy(wal, c->path, pl);
    memcpy(wal + pl, "-wal", 5);
    st->file_bytes += fr__file_size(wal);
    fr_free(wal);
  }
  return FR_OK;
}

/* Gives freed pages back to the file system. Another process reading at the same time makes VACUUM
 * fail with BUSY; the space is then reused by later puts instead, so that is not an error. */
/* clear and gc change the file: refused on a cache that cannot be written. */
static enum fr_status fr__need_writable(struct fr_cache *c, const char *what, struct fr_err *err) {
  if (c->mode == FR_CACHE_RW)
    return FR_OK;
  return fr_errf(err, FR_E_CACHE, "cache %s: cannot %s: the cache is %s", c->path, what,
                 c->mode == FR_CACHE_RO ? "read-only (a read-only file or file system, or a full disk)"
                                        : "disabled (it could not be opened)");
}

static void fr__compact(struct fr_cache *c) {
  sqlite3_exec(c->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
  if (sqlite3_exec(c->db, "VACUUM", NULL, NULL, NULL) == SQLITE_OK)
    sqlite3_exec(c->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
}

enum fr_status fr_cache_clear(struct fr_cache *c, struct fr_err *err) {
  enum fr_status rc = fr__need_writable(c, "clear", err);
  if (rc || (rc = fr__begin(c, err)))
    return rc;
  fr__clear_pending(c);
  const char *sql[] = {"DELETE FROM entries", "DELETE FROM kv"};
  for (int i = 0; i < 2; i++) {
    sqlite3_stmt *s;
    if ((rc = fr__prepare(c, sql[i], &s, err)) || (rc = fr__write_stmt(c, s, "clear", err))) {
      fr__rollback(c);
      return rc;
    }
  }
  if ((rc = fr__commit(c, err)))
    return rc;
  fr__compact(c);
  return FR_OK;
}

enum fr_status fr_cache_gc(struct fr_cache *c, int64_t *dropped, struct fr_err *err) {
  int64_t n_evicted = 0, bytes_evicted = 0, n_bad = 0;
  if (dropped)
    *dropped = 0;
  enum fr_status rc = fr__need_writable(c, "collect garbage", err);
  if (rc)
    return rc;
  /* 1. Verify every entry; collect the bad keys first (deleting while iterating would disturb the
   * cursor), then drop them in one transaction. */
  sqlite3_stmt *s;
  if (fr__prepare(c, "SELECT key, blob, size, checksum FROM entries", &s, err))
    return FR_E_CACHE;
  struct fr_key *bad = NULL;
  int n_bad_cap = 0, step;
  int64_t odd_keys = 0;
  while ((step = fr__step(s)) == SQLITE_ROW) {
    struct fr_key k;
    if (sqlite3_column_bytes(s, 0) != 16) {
      odd_keys++;
      continue;
    }
    memcpy(k.b, sqlite3_column_blob(s, 0), 16);
    const void *p = sqlite3_column_blob(s, 1);
    int64_t got = sqlite3_column_bytes(s, 1);
    if (fr__verify(c, &k, p, got, sqlite3_column_int64(s, 2), sqlite3_column_int64(s, 3)))
      continue;
    if (n_bad == n_bad_cap) {
      int nc = n_bad_cap ? n_bad_cap * 2 : 16;
      struct fr_key *nb = fr_realloc(bad, sizeof *nb * (size_t)nc);
      if (!nb) {
        rc = fr_errf(err, FR_E_NOMEM, "cache %s: out of memory", c->path);
        break;
      }
      bad = nb;
      n_bad_cap = nc;
    }
    bad[n_bad++] = k;
  }
  if (!rc && step != SQLITE_DONE)
    rc = fr__dberr(c, err, "gc scan");
  sqlite3_finalize(s);
  if (!rc && !(rc = fr__begin(c, err))) {
    int code = fr__apply_pending(c);
    if (code != SQLITE_OK)
      rc = fr_errf(err, FR_E_CACHE, "cache %s: gc: %s", c->path, sqlite3_errstr(code));
    if (!rc && odd_keys && !(rc = fr__prepare(c, "DELETE FROM entries WHERE length(key) != 16", &s, err))) {
      fr__warnf(c, "dropped %lld cache entries with malformed keys", (long long)odd_keys);
      rc = fr__write_stmt(c, s, "gc drop", err);
    }
    for (int64_t i = 0; !rc && i < n_bad; i++) {
      if (!(rc = fr__prepare(c, "DELETE FROM entries WHERE key=?", &s, err))) {
        sqlite3_bind_blob(s, 1, bad[i].b, 16, SQLITE_STATIC);
        rc = fr__write_stmt(c, s, "gc drop", err);
      }
    }
    /* 2. Evict down to the limit. */
    if (!rc)
      rc = fr__evict(c, c->max_bytes, NULL, &n_evicted, &bytes_evicted, err);
    if (rc)
      fr__rollback(c);
    else
      rc = fr__commit(c, err);
  }
  fr_free(bad);
  if (rc)
    return rc;
  if (n_evicted)
    fr__warnf(c, "evicted %lld least-recently-used entries (%lld bytes) to fit the limit of %lld bytes",
              (long long)n_evicted, (long long)bytes_evicted, (long long)c->max_bytes);
  fr__compact(c);
  if (dropped)
    *dropped = n_bad + odd_keys + n_evicted;
  return FR_OK;
}

/* ---- key-value table ---- */

enum fr_status fr_cache_kv_get(struct fr_cache *c, const char *key, char *val, size_t n, struct fr_err *err) {
  if (n)
    val[0] = 0;
  if (c->mode == FR_CACHE_OFF)
    return FR_E_NOTFOUND;
  for (int i = c->n_kvs - 1; i >= 0; i--)
    if (strcmp(c->kvs[i].k, key) == 0) {
      if (n)
        snprintf(val, n, "%s", c->kvs[i].v);
      return FR_OK;
    }
  sqlite3_stmt *s;
  if (fr__prepare(c, "SELECT value FROM kv WHERE key=?", &s, err))
    return FR_E_CACHE;
  sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
  int rc = fr__step(s);
  enum fr_status r = FR_OK;
  if (rc == SQLITE_ROW) {
    const char *v = (const char *)sqlite3_column_text(s, 0);
    if (n)
      snprintf(val, n, "%s", v ? v : "");
  } else if (rc == SQLITE_DONE) {
    r = FR_E_NOTFOUND;
  } else {
    r = fr__dberr(c, err, "kv get");
  }
  sqlite3_finalize(s);
  return r;
}

enum fr_status fr_cache_kv_put(struct fr_cache *c, const char *key, const char *val, struct fr_err *err) {
  if (!key || !val)
    return fr_errf(err, FR_E_INVALID, "cache kv put: NULL key or value");
  if (c->mode != FR_CACHE_RW)
    return FR_OK;
  if (!fr__write_allowed(c))
    return fr_errf(err, FR_E_CACHE, "cache %s: kv put: injected failure", c->path);
  sqlite3_stmt *s;
  if (fr__prepare(c, "INSERT OR REPLACE INTO kv(key, value) VALUES(?, ?)", &s, err))
    return FR_E_CACHE;
  sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
  sqlite3_bind_text(s, 2, val, -1, SQLITE_STATIC);
  /* One attempt without waiting: this is called while planning (the read path). */
  sqlite3_busy_timeout(c->db, 0);
  int code = sqlite3_step(s) == SQLITE_DONE ? SQLITE_OK : sqlite3_extended_errcode(c->db);
  sqlite3_finalize(s);
  sqlite3_busy_timeout(c->db, FR__BUSY_TIMEOUT_MS);
  if (code == SQLITE_OK)
    return FR_OK;
  if (fr__busy(code)) {
    /* Kept for the next write transaction; get sees it meanwhile. */
    char *k = fr_strdup(key), *v = fr_strdup(val);
    if (k && v && c->n_kvs < FR__MAX_PENDING &&
        fr__grow((void **)&c->kvs, &c->cap_kvs, c->n_kvs, sizeof *c->kvs)) {
      c->kvs[c->n_kvs++] = (struct fr__kvp){k, v};
      return FR_OK;
    }
    fr_free(k);
    fr_free(v);
    return fr_errf(err, FR_E_CACHE, "cache %s: kv put: the database is busy", c->path);
  }
  if (fr__cant_write(code)) {
    char why[256];
    snprintf(why, sizeof why, "cannot be written (%s: %s)", fr__why_not_writable(code), sqlite3_errstr(code));
    fr__degrade(c, FR_CACHE_RO, why);
    return FR_OK;
  }
  c->last_code = code;
  return fr_errf(err, FR_E_CACHE, "cache %s: kv put: %s", c->path, sqlite3_errstr(code));
}
