/* The SQLite output cache: put/get/has, persistence across processes, corrupt and truncated entries,
 * LRU eviction, two processes at once, fault injection, files that are not flowrun caches, clear, gc,
 * the kv table; readers while another connection holds the write lock; a read-only file system, a
 * full disk and a folder that cannot be created (real mounts in a private mount namespace). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* unshare */
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/cache.h"
#include "tests/test.h"

static char dir[4096];

static struct fr_key key_of(int i) {
  struct fr_key k;
  for (int j = 0; j < 16; j++)
    k.b[j] = (uint8_t)(i * 31 + j * 7 + (i >> 8));
  k.b[0] = (uint8_t)i;
  k.b[1] = (uint8_t)(i >> 8);
  return k;
}

/* A deterministic blob for entry i. */
static void fill(unsigned char *p, size_t n, int i) {
  for (size_t j = 0; j < n; j++)
    p[j] = (unsigned char)(j * 13 + (size_t)i * 101);
}

static bool has_blob(struct fr_cache *c, int i, size_t n) {
  void *b = NULL;
  size_t len = 0;
  struct fr_err err = {{0}};
  struct fr_key k = key_of(i);
  enum fr_status rc = fr_cache_get(c, &k, &b, &len, &err);
  bool ok = rc == FR_OK && len == n;
  if (ok) {
    unsigned char *want = malloc(n ? n : 1);
    fill(want, n, i);
    ok = memcmp(b, want, n) == 0;
    free(want);
  }
  fr_free(b);
  return ok;
}

static enum fr_status put_blob(struct fr_cache *c, int i, size_t n) {
  unsigned char *p = malloc(n ? n : 1);
  fill(p, n, i);
  struct fr_key k = key_of(i);
  struct fr_err err = {{0}};
  enum fr_status rc = fr_cache_put(c, &k, p, n, &err);
  free(p);
  return rc;
}

struct warnings {
  int n;
  char last[512];
};
static void on_warn(void *user, const char *msg) {
  struct warnings *w = user;
  w->n++;
  snprintf(w->last, sizeof w->last, "%s", msg);
}

static void path_in(char *out, size_t n, const char *name) {
  snprintf(out, n, "%s/%s", dir, name);
}

/* Runs SQL on the file with a raw connection (what a user or a bug might do to it). */
static void raw_sql(const char *path, const char *sql) {
  sqlite3 *db;
  CHECK(sqlite3_open(path, &db) == SQLITE_OK);
  char *msg = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
  CHECKF(rc == SQLITE_OK, "%s: %s", sql, msg ? msg : "");
  sqlite3_free(msg);
  sqlite3_close(db);
}

static bool integrity_ok(const char *path) {
  sqlite3 *db;
  if (sqlite3_open(path, &db) != SQLITE_OK)
    return false;
  sqlite3_stmt *s;
  bool ok = false;
  if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &s, NULL) == SQLITE_OK) {
    ok = sqlite3_step(s) == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(s, 0), "ok") == 0;
    sqlite3_finalize(s);
  }
  sqlite3_close(db);
  return ok;
}

static struct fr_cache *open_cache(const char *path, int64_t max, struct warnings *w) {
  struct fr_cache_opts o = {.max_bytes = max, .warn = on_warn, .user = w};
  struct fr_cache *c = NULL;
  struct fr_err err = {{0}};
  CHECK_OK(fr_cache_open(path, &o, &c, &err), &err);
  return c;
}

static void test_basic(void) {
  char path[4200];
  path_in(path, sizeof path, "sub/folder/basic.sqlite"); /* folders are created */
  struct warnings w = {0};
  struct fr_cache *c = open_cache(path, 0, &w);
  if (!c)
    return;
  struct fr_err err = {{0}};
  struct fr_key k = key_of(1);
  void *b = (void *)1;
  size_t len = 7;
  CHECK(!fr_cache_has(c, &k));
  CHECK(fr_cache_get(c, &k, &b, &len, &err) == FR_E_NOTFOUND && b == NULL && len == 0);
  CHECK(put_blob(c, 1, 1000) == FR_OK);
  CHECK(fr_cache_has(c, &k));
  CHECK(has_blob(c, 1, 1000));
  CHECK(put_blob(c, 1, 10) == FR_OK); /* replaces */
  CHECK(has_blob(c, 1, 10));
  CHECK(put_blob(c, 2, 0) == FR_OK); /* empty blob */
  CHECK(has_blob(c, 2, 0));
  struct fr_cache_stats st;
  CHECK_OK(fr_cache_stats(c, &st, &err), &err);
  CHECK(st.entries == 2 && st.bytes == 10 && st.max_bytes == (int64_t)10 << 30 && st.file_bytes > 0);
  CHECK(w.n == 0);
  fr_cache_close(c);
  /* reopen: still there */
  c = open_cache(path, -1, &w);
  CHECK(c && has_blob(c, 1, 10) && has_blob(c, 2, 0));
  CHECK_OK(fr_cache_stats(c, &st, &err), &err);
  CHECK(st.max_bytes < 0);
  fr_cache_close(c);
  CHECK(integrity_ok(path));
}

static void test_processes(void) {
  char path[4200];
  path_in(path, sizeof path, "proc.sqlite");
  pid_t pid = fork();
  if (pid == 0) {
    struct fr_cache *c = NULL;
    struct fr_err err;
    int bad = fr_cache_open(path, NULL, &c, &err) != FR_OK;
    for (int i = 0; !bad && i < 20; i++)
      bad |= put_blob(c, 100 + i, 500 + (size_t)i) != FR_OK;
    fr_cache_close(c);
    _exit(bad);
  }
  int status = -1;
  waitpid(pid, &status, 0);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  struct fr_cache *c = open_cache(path, 0, NULL);
  int found = 0;
  for (int i = 0; c && i < 20; i++)
    found += has_blob(c, 100 + i, 500 + (size_t)i);
  CHECK(found == 20);
  fr_cache_close(c);
}

/* Two processes hammer one file: every operation succeeds and everything written is readable. */
static void test_concurrent(void) {
  char path[4200];
  path_in(path, sizeof path, "concurrent.sqlite");
  enum { PER = 250 };
  pid_t kids[2];
  for (int p = 0; p < 2; p++) {
    kids[p] = fork();
    if (kids[p] == 0) {
      struct fr_cache *c = NULL;
      struct fr_err err;
      int bad = fr_cache_open(path, NULL, &c, &err) != FR_OK;
      if (bad)
        fprintf(stderr, "child %d: %s\n", p, err.msg);
      for (int i = 0; !bad && i < PER; i++) {
        int id = 1000 + p * PER + i;
        if (put_blob(c, id, 64 + (size_t)(i % 50)) != FR_OK) {
          fprintf(stderr, "child %d: put %d failed\n", p, i);
          bad = 1;
        }
        if (!has_blob(c, id, 64 + (size_t)(i % 50))) {
          fprintf(stderr, "child %d: get %d failed\n", p, i);
          bad = 1;
        }
        /* read what the other process wrote so far, and a key both write */
        int other = 1000 + (1 - p) * PER + i / 2;
        void *b = NULL;
        size_t len;
        struct fr_key ko = key_of(other);
        enum fr_status rc = fr_cache_get(c, &ko, &b, &len, &err);
        if (rc != FR_OK && rc != FR_E_NOTFOUND) {
          fprintf(stderr, "child %d: get of the other's entry: %s\n", p, err.msg);
          bad = 1;
        }
        fr_free(b);
        if (put_blob(c, 7, 128) != FR_OK)
          bad = 1;
      }
      fr_cache_close(c);
      _exit(bad);
    }
  }
  for (int p = 0; p < 2; p++) {
    int status = -1;
    waitpid(kids[p], &status, 0);
    CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d status %d", p, status);
  }
  struct fr_cache *c = open_cache(path, 0, NULL);
  int found = 0;
  for (int p = 0; c && p < 2; p++)
    for (int i = 0; i < PER; i++)
      found += has_blob(c, 1000 + p * PER + i, 64 + (size_t)(i % 50));
  CHECKF(found == 2 * PER, "%d of %d entries readable", found, 2 * PER);
  CHECK(c && has_blob(c, 7, 128));
  fr_cache_close(c);
  CHECK(integrity_ok(path));
}

static void test_corrupt(void) {
  char path[4200];
  path_in(path, sizeof path, "corrupt.sqlite");
  struct warnings w = {0};
  struct fr_cache *c = open_cache(path, 0, &w);
  if (!c)
    return;
  CHECK(put_blob(c, 1, 300) == FR_OK && put_blob(c, 2, 300) == FR_OK && put_blob(c, 3, 300) == FR_OK);
  /* flip bytes of entry 1 (same length), cut entry 2 short */
  char sql[512];
  struct fr_key k1 = key_of(1), k2 = key_of(2), k3 = key_of(3);
  char hex1[33], hex2[33];
  for (int i = 0; i < 16; i++) {
    snprintf(hex1 + 2 * i, 3, "%02x", k1.b[i]);
    snprintf(hex2 + 2 * i, 3, "%02x", k2.b[i]);
  }
  snprintf(sql, sizeof sql,
           "UPDATE entries SET blob = zeroblob(300) WHERE key = x'%s';"
           "UPDATE entries SET blob = substr(blob, 1, 100) WHERE key = x'%s';",
           hex1, hex2);
  raw_sql(path, sql);
  void *b = NULL;
  size_t len;
  struct fr_err err = {{0}};
  CHECK(fr_cache_get(c, &k1, &b, &len, &err) == FR_E_NOTFOUND && b == NULL);
  CHECKF(w.n == 1 && strstr(w.last, hex1) && strstr(w.last, "checksum mismatch, dropped"), "warning: %s",
         w.last);
  CHECK(!fr_cache_has(c, &k1)); /* deleted */
  CHECK(fr_cache_get(c, &k2, &b, &len, &err) == FR_E_NOTFOUND);
  CHECKF(w.n == 2 && strstr(w.last, hex2) && strstr(w.last, "truncated"), "warning: %s", w.last);
  CHECK(!fr_cache_has(c, &k2));
  CHECK(fr_cache_has(c, &k3) && has_blob(c, 3, 300)); /* the others are untouched */

  /* gc finds a bad entry without a get, and reports it */
  CHECK(put_blob(c, 4, 50) == FR_OK);
  snprintf(sql, sizeof sql,
           "UPDATE entries SET checksum = checksum + 1 WHERE size = 50;"
           "INSERT INTO entries VALUES(x'0102', x'00', 1, 0, 0, 0);");
  raw_sql(path, sql);
  int64_t dropped = -1;
  w.n = 0;
  CHECK_OK(fr_cache_gc(c, &dropped, &err), &err);
  CHECKF(dropped == 2 && w.n == 2, "dropped %lld, %d warnings", (long long)dropped, w.n);
  CHECK(has_blob(c, 3, 300));
  struct fr_cache_stats st;
  CHECK_OK(fr_cache_stats(c, &st, &err), &err);
  CHECK(st.entries == 1 && st.bytes == 300);
  fr_cache_close(c);
  CHECK(integrity_ok(path));
}

static void test_lru(void) {
  char path[4200];
  path_in(path, sizeof path, "lru.sqlite");
  struct warnings w = {0};
  struct fr_cache *c = open_cache(path, 3000, &w);
  if (!c)
    return;
  for (int i = 1; i <= 3; i++)
    CHECK(put_blob(c, i, 1000) == FR_OK);
  CHECK(has_blob(c, 1, 1000)); /* touch 1: now 2 is the least recently used */
  CHECK(put_blob(c, 4, 1000) == FR_OK);
  struct fr_key k[5];
  for (int i = 1; i <= 4; i++)
    k[i] = key_of(i);
  CHECK(fr_cache_has(c, &k[1]) && !fr_cache_has(c, &k[2]) && fr_cache_has(c, &k[3]) &&
        fr_cache_has(c, &k[4]));
  /* a put that needs two slots evicts the two oldest: 3, then 1 */
  CHECK(put_blob(c, 5, 2000) == FR_OK);
  struct fr_key k5 = key_of(5);
  CHECK(!fr_cache_has(c, &k[1]) && !fr_cache_has(c, &k[3]) && fr_cache_has(c, &k[4]) && fr_cache_has(c, &k5));
  /* an entry bigger than the whole limit is not stored, and evicts nothing */
  CHECK(put_blob(c, 6, 4000) == FR_OK);
  struct fr_key k6 = key_of(6);
  CHECK(!fr_cache_has(c, &k6) && fr_cache_has(c, &k5) && w.n == 1 && strstr(w.last, "limit"));
  fr_cache_close(c);

  /* gc evicts down to a smaller limit given at open (what `flowrun cache gc --max-size` does) */
  c = open_cache(path, 2000, &w);
  int64_t dropped = 0;
  struct fr_err err = {{0}};
  CHECK_OK(fr_cache_gc(c, &dropped, &err), &err);
  CHECK(dropped == 1 && fr_cache_has(c, &k5) && !fr_cache_has(c, &k[4]));
  CHECK(strstr(w.last, "evicted 1"));
  fr_cache_close(c);
}

/* The n-th write fails: the put reports FR_E_CACHE, the file stays consistent, nothing earlier is
 * lost, and the half-done put left no trace. */
static void test_fault_injection(void) {
  char path[4200];
  path_in(path, sizeof path, "fault.sqlite");
  struct fr_cache *c = open_cache(path, 5000, NULL);
  if (!c)
    return;
  for (int i = 1; i <= 4; i++)
    CHECK(put_blob(c, i, 1000) == FR_OK);
  /* putting 2000 bytes needs: insert, evict entry 1, commit = 3 writes */
  struct fr_key k9 = key_of(9), k1 = key_of(1);
  int failures = 0;
  for (long n = 1; n <= 4; n++) {
    fr_cache_fail_at(c, n);
    enum fr_status rc = put_blob(c, 9, 2000);
    fr_cache_fail_at(c, 0);
    if (n <= 3) {
      CHECKF(rc == FR_E_CACHE, "fail at %ld: rc %d", n, rc);
      failures += rc == FR_E_CACHE;
      CHECK(!fr_cache_has(c, &k9) && fr_cache_has(c, &k1));
    } else {
      CHECK(rc == FR_OK && fr_cache_has(c, &k9) && !fr_cache_has(c, &k1));
    }
    CHECK(integrity_ok(path));
    for (int i = 2; i <= 4; i++)
      CHECKF(has_blob(c, i, 1000), "entry %d after fail at %ld", i, n);
  }
  CHECK(failures == 3);
  /* kv writes and clear go through the same gate */
  struct fr_err err = {{0}};
  fr_cache_fail_at(c, 1);
  CHECK(fr_cache_kv_put(c, "a", "b", &err) == FR_E_CACHE);
  char v[8];
  CHECK(fr_cache_kv_get(c, "a", v, sizeof v, &err) == FR_E_NOTFOUND);
  fr_cache_fail_at(c, 2);
  CHECK(fr_cache_clear(c, &err) == FR_E_CACHE);
  CHECK(has_blob(c, 2, 1000));
  /* allocation failures inside put/get: a clean error, no leak, no crash */
  for (long n = 1; n < 30; n++) {
    fr_alloc_fail_at(n);
    enum fr_status rc = put_blob(c, 20, 100);
    void *b = NULL;
    size_t len;
    struct fr_key k20 = key_of(20);
    enum fr_status rc2 = fr_cache_get(c, &k20, &b, &len, &err);
    fr_alloc_fail_at(0);
    CHECK(rc == FR_OK || rc == FR_E_NOMEM || rc == FR_E_CACHE);
    CHECK(rc2 == FR_OK || rc2 == FR_E_NOMEM || rc2 == FR_E_NOTFOUND || rc2 == FR_E_CACHE);
    fr_free(b);
  }
  fr_cache_close(c);
  CHECK(integrity_ok(path));
}

static bool same_file(const char *path, const void *want, size_t n) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return false;
  char *got = malloc(n + 1);
  size_t r = fread(got, 1, n + 1, f);
  fclose(f);
  bool same = r == n && memcmp(got, want, n) == 0;
  free(got);
  return same;
}

static void test_foreign_files(void) {
  char path[4200];
  struct fr_err err = {{0}};
  struct fr_cache *c = NULL;
  /* not a database: refused with the path named, the file unchanged */
  path_in(path, sizeof path, "notes.txt");
  char text[600];
  for (size_t i = 0; i < sizeof text; i++)
    text[i] = (char)('a' + i % 26);
  FILE *f = fopen(path, "wb");
  fwrite(text, 1, sizeof text, f);
  fclose(f);
  CHECK(fr_cache_open(path, NULL, &c, &err) == FR_E_CACHE && c == NULL);
  CHECKF(strstr(err.msg, path) && strstr(err.msg, "not an SQLite database"), "%s", err.msg);
  CHECK(same_file(path, text, sizeof text));
  char side[4300];
  snprintf(side, sizeof side, "%s-wal", path);
  CHECK(access(side, F_OK) != 0);

  /* another program's database */
  path_in(path, sizeof path, "photos.db");
  raw_sql(path,
          "CREATE TABLE photos(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO photos VALUES(1, 'cat');");
  struct stat before, after;
  stat(path, &before);
  CHECK(fr_cache_open(path, NULL, &c, &err) == FR_E_CACHE && c == NULL);
  CHECKF(strstr(err.msg, path) && strstr(err.msg, "not a flowrun cache") && strstr(err.msg, "photos"), "%s",
         err.msg);
  stat(path, &after);
  CHECK(before.st_size == after.st_size && before.st_mtime == after.st_mtime);

  /* a cache from a newer flowrun */
  path_in(path, sizeof path, "newer.sqlite");
  c = open_cache(path, 0, NULL);
  fr_cache_close(c);
  raw_sql(path, "UPDATE flowrun_schema SET version = 2");
  CHECK(fr_cache_open(path, NULL, &c, &err) == FR_E_CACHE && strstr(err.msg, "newer"));

  /* a folder where the file should be */
  path_in(path, sizeof path, "adir");
  mkdir(path, 0755);
  CHECK(fr_cache_open(path, NULL, &c, &err) == FR_E_CACHE && strstr(err.msg, "adir"));
  /* a folder that cannot be created (a file in the way) */
  path_in(path, sizeof path, "notes.txt/cache.sqlite");
  CHECK(fr_cache_open(path, NULL, &c, &err) == FR_E_CACHE && c == NULL);
  /* empty path */
  CHECK(fr_cache_open("", NULL, &c, &err) == FR_E_INVALID);
}

static void test_clear_kv_default(void) {
  char path[4400];
  path_in(path, sizeof path, "kv.sqlite");
  struct fr_cache *c = open_cache(path, 0, NULL);
  if (!c)
    return;
  struct fr_err err = {{0}};
  char v[16];
  CHECK(fr_cache_kv_get(c, "/models/a.safetensors|123|456", v, sizeof v, &err) == FR_E_NOTFOUND && v[0] == 0);
  CHECK_OK(fr_cache_kv_put(c, "/models/a.safetensors|123|456", "xxh3:0123456789abcdef", &err), &err);
  CHECK_OK(fr_cache_kv_get(c, "/models/a.safetensors|123|456", v, sizeof v, &err), &err);
  CHECK(strcmp(v, "xxh3:0123456789") == 0); /* truncated to the buffer */
  CHECK_OK(fr_cache_kv_put(c, "/models/a.safetensors|123|456", "new", &err), &err);
  CHECK_OK(fr_cache_kv_get(c, "/models/a.safetensors|123|456", v, sizeof v, &err), &err);
  CHECK(strcmp(v, "new") == 0);
  for (int i = 0; i < 50; i++)
    CHECK(put_blob(c, i, 2000) == FR_OK);
  struct fr_cache_stats st;
  CHECK_OK(fr_cache_stats(c, &st, &err), &err);
  CHECK(st.entries == 50 && st.bytes == 100000);
  int64_t full = st.file_bytes;
  CHECK_OK(fr_cache_clear(c, &err), &err);
  CHECK_OK(fr_cache_stats(c, &st, &err), &err);
  CHECKF(st.entries == 0 && st.bytes == 0 && st.file_bytes < full,
         "after clear: %lld entries, file %lld of %lld", (long long)st.entries, (long long)st.file_bytes,
         (long long)full);
  CHECK(fr_cache_kv_get(c, "/models/a.safetensors|123|456", v, sizeof v, &err) == FR_E_NOTFOUND);
  CHECK(put_blob(c, 1, 10) == FR_OK && has_blob(c, 1, 10)); /* usable after clear */
  fr_cache_close(c);

  /* default path: XDG_CACHE_HOME, else HOME; open creates the folders */
  char xdg[4200], buf[4400];
  path_in(xdg, sizeof xdg, "xdg");
  setenv("XDG_CACHE_HOME", xdg, 1);
  CHECK(fr_cache_default_path(buf, sizeof buf));
  snprintf(path, sizeof path, "%s/flowrun/cache.sqlite", xdg);
  CHECK(strcmp(buf, path) == 0);
  c = open_cache(buf, 0, NULL);
  CHECK(c && access(path, F_OK) == 0);
  fr_cache_close(c);
  setenv("XDG_CACHE_HOME", "relative/ignored", 1);
  setenv("HOME", dir, 1);
  CHECK(fr_cache_default_path(buf, sizeof buf));
  snprintf(path, sizeof path, "%s/.cache/flowrun/cache.sqlite", dir);
  CHECK(strcmp(buf, path) == 0);
  unsetenv("XDG_CACHE_HOME");
  unsetenv("HOME");
  CHECK(!fr_cache_default_path(buf, sizeof buf));
  CHECK(!fr_cache_default_path(buf, 4)); /* too small */
}

/* Readers never wait for a writer: while another connection holds the write lock (an open write
 * transaction, as a long put of another process would), a second process opens the cache, looks up and
 * reads every entry, records a memo and closes, and says so through a pipe before the lock is let go.
 * Before, each read updated last_used and waited behind the lock (10 s busy timeout, retried). The 60 s
 * are only a guard against hanging forever, not a speed bound. */
static void test_reader_not_blocked(void) {
  char path[4200];
  path_in(path, sizeof path, "busy.sqlite");
  struct fr_cache *c = open_cache(path, 0, NULL);
  for (int i = 1; c && i <= 20; i++)
    CHECK(put_blob(c, i, 5000) == FR_OK);
  fr_cache_close(c);
  sqlite3 *holder;
  CHECK(sqlite3_open(path, &holder) == SQLITE_OK);
  CHECK(sqlite3_exec(holder, "BEGIN IMMEDIATE; INSERT INTO kv VALUES('held', 'by another writer');", NULL,
                     NULL, NULL) == SQLITE_OK);
  int fds[2];
  CHECK(pipe(fds) == 0);
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    struct warnings w = {0};
    struct fr_cache_opts o = {.warn = on_warn, .user = &w};
    struct fr_cache *rc = NULL;
    struct fr_err err;
    int bad = fr_cache_open(path, &o, &rc, &err) != FR_OK;
    for (int round = 0; !bad && round < 3; round++)
      for (int i = 1; i <= 20; i++) {
        struct fr_key k = key_of(i);
        bad |= !fr_cache_has(rc, &k) || !has_blob(rc, i, 5000);
      }
    bad |= !bad && fr_cache_kv_put(rc, "memo", "v", &err) != FR_OK; /* kept in memory, not waited for */
    char v[8];
    bad |= !bad && (fr_cache_kv_get(rc, "memo", v, sizeof v, &err) != FR_OK || strcmp(v, "v") != 0);
    if (!bad)
      fr_cache_flush(rc); /* busy: does nothing, does not wait */
    fr_cache_close(rc);
    bad |= w.n != 0;
    char byte = bad ? 'F' : 'K';
    ssize_t wr = write(fds[1], &byte, 1);
    _exit(wr == 1 ? 0 : 1);
  }
  close(fds[1]);
  struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
  char byte = 0;
  bool before_release = poll(&pfd, 1, 60000) == 1 && read(fds[0], &byte, 1) == 1;
  CHECKF(before_release && byte == 'K', "the reader %s while the write lock was held",
         !before_release ? "did not finish" : "failed");
  if (!before_release)
    kill(pid, SIGKILL); /* stuck behind the lock: do not wait for its retries */
  CHECK(sqlite3_exec(holder, "COMMIT", NULL, NULL, NULL) == SQLITE_OK);
  sqlite3_close(holder);
  close(fds[0]);
  int status = -1;
  waitpid(pid, &status, 0);
  CHECK(!before_release || (WIFEXITED(status) && WEXITSTATUS(status) == 0));
  CHECK(integrity_ok(path));
}

static int64_t last_used_of(const char *path, int i) {
  sqlite3 *db;
  int64_t t = -1;
  struct fr_key k = key_of(i);
  sqlite3_stmt *s;
  if (sqlite3_open(path, &db) == SQLITE_OK &&
      sqlite3_prepare_v2(db, "SELECT last_used FROM entries WHERE key=?", -1, &s, NULL) == SQLITE_OK) {
    sqlite3_bind_blob(s, 1, k.b, 16, SQLITE_STATIC);
    if (sqlite3_step(s) == SQLITE_ROW)
      t = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
  }
  sqlite3_close(db);
  return t;
}

/* The LRU stamps of reads reach the file: not on the read itself, but with fr_cache_flush. */
static void test_stamps_flushed(void) {
  char path[4200];
  path_in(path, sizeof path, "stamps.sqlite");
  struct fr_cache *c = open_cache(path, 0, NULL);
  if (!c)
    return;
  CHECK(put_blob(c, 1, 100) == FR_OK && put_blob(c, 2, 100) == FR_OK);
  int64_t t1 = last_used_of(path, 1), t2 = last_used_of(path, 2);
  CHECK(t1 > 0 && t2 > t1);
  CHECK(has_blob(c, 1, 100));
  CHECK(last_used_of(path, 1) == t1); /* the read wrote nothing */
  fr_cache_flush(c);
  CHECKF(last_used_of(path, 1) > t2, "stamp %lld after the flush, entry 2 %lld",
         (long long)last_used_of(path, 1), (long long)t2);
  fr_cache_close(c);
}

/* Runs fn in a child process with a private mount namespace (as root; else in a user namespace where
 * that is allowed). Returns false, having said why, when no namespace could be made: the part is
 * skipped then. The child's checks print their failures; its exit status says whether any failed. */
static bool in_mount_namespace(const char *what, void (*fn)(const char *mnt)) {
  char mnt[4200];
  path_in(mnt, sizeof mnt, "mnt");
  mkdir(mnt, 0755);
  int fds[2];
  if (pipe(fds) != 0)
    return false;
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    bool ok = unshare(CLONE_NEWNS) == 0 || unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0;
    ok = ok && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0;
    char byte = ok ? 'y' : 'n';
    if (write(fds[1], &byte, 1) != 1 || !ok)
      _exit(0);
    close(fds[1]);
    fr_test_failed = 0;
    fn(mnt);
    fflush(stdout);
    _exit(fr_test_failed ? 1 : 0);
  }
  close(fds[1]);
  char byte = 'n';
  bool can = read(fds[0], &byte, 1) == 1 && byte == 'y';
  close(fds[0]);
  int status = -1;
  waitpid(pid, &status, 0);
  if (!can) {
    printf("part skipped: %s: no private mount namespace here (needs root or user namespaces)\n", what);
    return false;
  }
  CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: the checks in the namespace failed (status %d)",
         what, status);
  return true;
}

static bool mount_tmpfs(const char *mnt, const char *size) {
  char opts[64];
  snprintf(opts, sizeof opts, "size=%s,mode=0755", size);
  bool ok = mount("tmpfs", mnt, "tmpfs", 0, opts) == 0;
  CHECKF(ok, "mount tmpfs %s on %s: %s", size, mnt, strerror(errno));
  return ok;
}

/* A cache on a file system that is remounted read-only (root ignores file modes, so a chmod would
 * prove nothing): it opens read-only with one warning, reads what is there, stores nothing, and the
 * commands that change it say why they cannot. Without -wal and -shm files (a cleanly closed cache)
 * SQLite can only read it as immutable. A cache whose folder or file cannot be created is disabled
 * (opts.degrade) with one warning, or an error without degrade. */
static void readonly_checks(const char *mnt) {
  if (!mount_tmpfs(mnt, "8m"))
    return;
  char path[4300], other[4300], sub[4300];
  snprintf(path, sizeof path, "%s/cache.sqlite", mnt);
  snprintf(other, sizeof other, "%s/absent.sqlite", mnt);
  snprintf(sub, sizeof sub, "%s/newdir/cache.sqlite", mnt);
  struct fr_cache *c = open_cache(path, 0, NULL);
  for (int i = 1; c && i <= 3; i++)
    CHECK(put_blob(c, i, 1000) == FR_OK);
  fr_cache_close(c);
  char side[4400];
  snprintf(side, sizeof side, "%s-shm", path);
  CHECK(access(side, F_OK) != 0); /* closed cleanly: the hard case */
  CHECKF(mount(NULL, mnt, NULL, MS_REMOUNT | MS_RDONLY, NULL) == 0, "remount ro: %s", strerror(errno));
  CHECK(open(path, O_RDWR) < 0 && errno == EROFS);

  struct warnings w = {0};
  struct fr_cache_opts o = {.warn = on_warn, .user = &w, .degrade = true};
  struct fr_err err = {{0}};
  c = NULL;
  CHECK_OK(fr_cache_open(path, &o, &c, &err), &err);
  if (!c)
    return;
  CHECKF(fr_cache_mode(c) == FR_CACHE_RO && w.n == 1 && strstr(w.last, path) && strstr(w.last, "read-only"),
         "mode %d, %d warnings: %s", fr_cache_mode(c), w.n, w.last);
  for (int i = 1; i <= 3; i++)
    CHECKF(has_blob(c, i, 1000), "entry %d readable", i);
  CHECK(put_blob(c, 4, 1000) == FR_OK); /* not stored, and no second warning */
  struct fr_key k4 = key_of(4);
  CHECK(!fr_cache_has(c, &k4));
  CHECK(fr_cache_kv_put(c, "memo", "x", &err) == FR_OK);
  fr_cache_flush(c);
  CHECK(fr_cache_clear(c, &err) == FR_E_CACHE && strstr(err.msg, "read-only"));
  CHECK(has_blob(c, 1, 1000));
  CHECKF(w.n == 1, "%d warnings, last: %s", w.n, w.last);
  fr_cache_close(c);

  /* a file that does not exist on it, a folder that cannot be created: disabled, one warning each */
  const char *off[2] = {other, sub};
  for (int j = 0; j < 2; j++) {
    w.n = 0;
    c = NULL;
    CHECK_OK(fr_cache_open(off[j], &o, &c, &err), &err);
    CHECKF(c && fr_cache_mode(c) == FR_CACHE_OFF && w.n == 1 && strstr(w.last, "without a cache"),
           "%s: %d warnings: %s", off[j], w.n, w.last);
    if (!c)
      continue;
    CHECK(put_blob(c, 1, 10) == FR_OK && !has_blob(c, 1, 10));
    struct fr_cache_stats st;
    CHECK(fr_cache_stats(c, &st, &err) == FR_OK && st.entries == 0);
    CHECK(w.n == 1);
    fr_cache_close(c);
    struct fr_cache_opts strict = {.warn = on_warn, .user = &w};
    CHECK(fr_cache_open(off[j], &strict, &c, &err) == FR_E_CACHE && c == NULL && strstr(err.msg, off[j]));
  }
}

/* A full disk (a 1 MiB tmpfs): the put that does not fit turns the cache read-only with one warning
 * and reports success; what was stored before stays readable and the file stays consistent. A disk
 * full before the schema exists gives a disabled cache. */
static void full_checks(const char *mnt) {
  if (!mount_tmpfs(mnt, "1m"))
    return;
  char path[4300];
  snprintf(path, sizeof path, "%s/cache.sqlite", mnt);
  struct warnings w = {0};
  struct fr_cache *c = open_cache(path, 0, &w);
  if (!c)
    return;
  CHECK(put_blob(c, 1, 20000) == FR_OK && put_blob(c, 2, 20000) == FR_OK);
  CHECK(w.n == 0 && fr_cache_mode(c) == FR_CACHE_RW);
  CHECK(has_blob(c, 1, 20000));
  CHECK(put_blob(c, 3, 2 << 20) == FR_OK); /* 2 MiB on a 1 MiB disk */
  CHECKF(fr_cache_mode(c) == FR_CACHE_RO && w.n == 1 && strstr(w.last, "disk is full"), "mode %d, %d: %s",
         fr_cache_mode(c), w.n, w.last);
  struct fr_key k3 = key_of(3);
  CHECK(!fr_cache_has(c, &k3));
  CHECK(put_blob(c, 4, 100) == FR_OK && w.n == 1);
  CHECK(has_blob(c, 1, 20000) && has_blob(c, 2, 20000));
  fr_cache_close(c);
  CHECK(integrity_ok(path));

  /* nothing fits any more: fill the disk, then open a new cache beside */
  char filler[4300];
  snprintf(filler, sizeof filler, "%s/filler", mnt);
  FILE *f = fopen(filler, "wb");
  static char block[4096];
  while (f && fwrite(block, 1, sizeof block, f) == sizeof block && fflush(f) == 0)
    ;
  if (f)
    fclose(f);
  snprintf(path, sizeof path, "%s/new.sqlite", mnt);
  struct fr_cache_opts o = {.warn = on_warn, .user = &w, .degrade = true};
  struct fr_err err = {{0}};
  w.n = 0;
  c = NULL;
  CHECK_OK(fr_cache_open(path, &o, &c, &err), &err);
  CHECKF(c && fr_cache_mode(c) != FR_CACHE_RW && w.n == 1, "%d warnings: %s", w.n, w.last);
  CHECK(put_blob(c, 1, 100) == FR_OK && w.n == 1);
  fr_cache_close(c);
}

static void test_unwritable(void) {
  in_mount_namespace("read-only file system", readonly_checks);
  in_mount_namespace("full disk", full_checks);
}

int main(void) {
  snprintf(dir, sizeof dir, "%s", fr_test_tmpdir("cache"));
  test_basic();
  test_processes();
  test_concurrent();
  test_corrupt();
  test_lru();
  test_fault_injection();
  test_foreign_files();
  test_clear_kv_default();
  test_reader_not_blocked();
  test_stamps_flushed();
  test_unwritable();
  return fr_test_done();
}
