#include "core/pins.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/file.h"
#include "core/sha256.h"

#define FR__PIN_MAX_DEPTH 8

bool fr_pin_parse(const char *text, char out[FR_PIN_FULL_LEN + 1]) {
  size_t n = text ? strlen(text) : 0;
  if (n != FR_PIN_SHORT_LEN && n != FR_PIN_FULL_LEN)
    return false;
  for (size_t i = 0; i < n; i++) {
    char c = text[i];
    if (c >= 'A' && c <= 'F')
      c = (char)(c - 'A' + 'a');
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
      return false;
    out[i] = c;
  }
  out[n] = 0;
  return true;
}

bool fr_pin_matches(const char *pin, const char *sha256) {
  return strncmp(pin, sha256, strlen(pin)) == 0;
}

static void fr__sha256_chunk(void *user, const void *chunk, size_t n) {
  fr_sha256_update(user, chunk, n);
}

static enum fr_status fr__sha256_read(const char *path, char out[FR_PIN_FULL_LEN + 1], struct fr_err *err) {
  struct fr_sha256 s;
  fr_sha256_init(&s);
  enum fr_status rc = fr_read_chunks(path, fr__sha256_chunk, &s, err);
  if (rc == FR_OK)
    fr_sha256_final_hex(&s, out);
  return rc;
}

/* The in-process memo holds 16-byte keys: a SHA-256 takes two entries, "<key>|0" and "<key>|1". */
static bool fr__memo_get2(struct fr_fp_memo *memo, const char *key, char out[FR_PIN_FULL_LEN + 1]) {
  char k[4300];
  const struct fr_key *h[2];
  for (int i = 0; i < 2; i++) {
    snprintf(k, sizeof k, "%s|%d", key, i);
    if (!(h[i] = fr_fp_memo_get(memo, k)))
      return false;
  }
  char a[33], b[33];
  fr_key_hex(h[0], a);
  fr_key_hex(h[1], b);
  snprintf(out, FR_PIN_FULL_LEN + 1, "%s%s", a, b);
  return true;
}

static void fr__memo_put2(struct fr_fp_memo *memo, const char *key, const char *hex) {
  char k[4300];
  for (int i = 0; i < 2; i++) {
    struct fr_key v;
    for (int j = 0; j < 16; j++) {
      unsigned x;
      sscanf(hex + 32 * i + 2 * j, "%2x", &x);
      v.b[j] = (uint8_t)x;
    }
    snprintf(k, sizeof k, "%s|%d", key, i);
    fr_fp_memo_put(memo, k, &v);
  }
}

enum fr_status fr_pin_file_sha256(struct fr_cache *cache, struct fr_fp_memo *memo, const char *path,
                                  char out[FR_PIN_FULL_LEN + 1], struct fr_err *err) {
  struct stat st;
  if (stat(path, &st) != 0)
    return fr_errf(err, FR_E_IO, "%s: cannot read: %s", path, strerror(errno));
  if (!S_ISREG(st.st_mode))
    return fr_errf(err, FR_E_IO, "%s: not a regular file", path);
  char *real = realpath(path, NULL); /* libc malloc */
  if (!real)
    return fr_errf(err, FR_E_IO, "%s: cannot resolve the path: %s", path, strerror(errno));
  long long mtime_ns = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
  long long ctime_ns = (long long)st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec;
  char key[4200];
  /* the inode and the change time too: a file replaced (rename) or rewritten with its size and mtime put
   * back (touch -r, cp -p) is another version; ctime cannot be set back */
  snprintf(key, sizeof key, "sha256|%s|%lld|%lld|%llu|%lld", real, (long long)st.st_size, mtime_ns,
           (unsigned long long)st.st_ino, ctime_ns);
  free(real);
  if (fr__memo_get2(memo, key, out))
    return FR_OK;
  struct fr_err kerr;
  char val[FR_PIN_FULL_LEN + 8];
  if (cache && fr_cache_kv_get(cache, key, val, sizeof val, &kerr) == FR_OK &&
      strlen(val) == FR_PIN_FULL_LEN && fr_pin_parse(val, out)) {
    fr__memo_put2(memo, key, out);
    return FR_OK;
  }
  enum fr_status rc = fr__sha256_read(path, out, err);
  if (rc != FR_OK)
    return rc;
  fr__memo_put2(memo, key, out);
  if (cache)
    (void)fr_cache_kv_put(cache, key, out, &kerr); /* a failed write only means hashing again later */
  return FR_OK;
}

enum fr_status fr_pin_check(struct fr_cache *cache, struct fr_fp_memo *memo, const char *path,
                            const char *pin, struct fr_err *err) {
  char sha[FR_PIN_FULL_LEN + 1];
  enum fr_status rc = fr_pin_file_sha256(cache, memo, path, sha, err);
  if (rc != FR_OK)
    return rc;
  if (fr_pin_matches(pin, sha))
    return FR_OK;
  return fr_errf(err, FR_E_INVALID,
                 "%s: its sha256 is %s, but the graph pins %s: these are other weights than the graph was "
                 "made with",
                 path, sha, pin);
}

static enum fr_status fr__walk(const char *dir, int depth, bool hash, struct fr_cache *cache,
                               struct fr_fp_memo *memo, fr_pin_index_fn fn, void *user, bool *stop,
                               struct fr_err *err) {
  struct dirent **ents = NULL;
  int n = scandir(dir, &ents, NULL, alphasort);
  if (n < 0)
    return FR_OK; /* a folder that is not there (or not readable) holds nothing to find */
  enum fr_status rc = FR_OK;
  for (int i = 0; i < n; i++) {
    const char *name = ents[i]->d_name;
    if (rc != FR_OK || *stop || name[0] == '.')
      continue;
    size_t len = strlen(dir) + strlen(name) + 2;
    char *p = fr_malloc(len);
    if (!p) {
      rc = fr_errf(err, FR_E_NOMEM, "out of memory listing %s", dir);
      continue;
    }
    snprintf(p, len, "%s%s%s", dir, dir[0] && dir[strlen(dir) - 1] == '/' ? "" : "/", name);
    struct stat st;
    if (stat(p, &st) == 0 && S_ISDIR(st.st_mode) && depth < FR__PIN_MAX_DEPTH) {
      rc = fr__walk(p, depth + 1, hash, cache, memo, fn, user, stop, err);
    } else if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
      char sha[FR_PIN_FULL_LEN + 1];
      rc = hash ? fr_pin_file_sha256(cache, memo, p, sha, err) : FR_OK;
      if (rc == FR_OK && !fn(user, p, hash ? sha : NULL, (long long)st.st_size))
        *stop = true;
    }
    fr_free(p);
  }
  for (int i = 0; i < n; i++)
    free(ents[i]);
  free(ents);
  return rc;
}

enum fr_status fr_pin_index(const char *const *dirs, int n_dirs, bool hash, struct fr_cache *cache,
                            struct fr_fp_memo *memo, fr_pin_index_fn fn, void *user, struct fr_err *err) {
  bool stop = false;
  for (int i = 0; i < n_dirs && !stop; i++) {
    enum fr_status rc = fr__walk(dirs[i], 0, hash, cache, memo, fn, user, &stop, err);
    if (rc != FR_OK)
      return rc;
  }
  return FR_OK;
}

struct fr__find {
  const char *pin;
  char *found;
  bool oom;
};

static bool fr__find_fn(void *user, const char *path, const char *sha256, long long size) {
  (void)size;
  struct fr__find *f = user;
  if (!fr_pin_matches(f->pin, sha256))
    return true;
  f->found = fr_strdup(path);
  f->oom = !f->found;
  return false;
}

enum fr_status fr_pin_find(const char *const *dirs, int n_dirs, struct fr_cache *cache,
                           struct fr_fp_memo *memo, const char *pin, char **out, struct fr_err *err) {
  *out = NULL;
  struct fr__find f = {.pin = pin};
  enum fr_status rc = fr_pin_index(dirs, n_dirs, true, cache, memo, fr__find_fn, &f, err);
  if (rc != FR_OK)
    return rc;
  if (f.oom)
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  if (!f.found)
    return fr_errf(err, FR_E_NOTFOUND, "no file in the model folders has sha256 %s", pin);
  *out = f.found;
  return FR_OK;
}
