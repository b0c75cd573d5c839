#include "core/file.h"

#include <ftw.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/reader.h"

enum fr_status fr_read_file(const char *path, size_t max, char **data, size_t *len, struct fr_err *err) {
  *data = NULL;
  *len = 0;
  FILE *f = fopen(path, "rb");
  if (!f)
    return fr_errf(err, FR_E_IO, "cannot open: %s", strerror(errno));
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > max) {
    fclose(f);
    return fr_errf(err, FR_E_INVALID, "not a regular file of at most %zu bytes", max);
  }
  char *d = fr_malloc((size_t)st.st_size + 1);
  if (!d) {
    fclose(f);
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  }
  size_t n = fread(d, 1, (size_t)st.st_size, f);
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    fr_free(d);
    return fr_errf(err, FR_E_IO, "read error");
  }
  d[n] = 0;
  *data = d;
  *len = n;
  return FR_OK;
}

enum fr_status fr_mkdirs(const char *path, struct fr_err *err) {
  if (!path || !*path)
    return fr_errf(err, FR_E_INVALID, "an empty folder name");
  char *p = fr_strdup(path);
  if (!p)
    return fr_errf(err, FR_E_NOMEM, "%s: out of memory", path);
  enum fr_status rc = FR_OK;
  /* Each parent in turn, then path itself; EEXIST is fine (a file in the way shows in the stat below). */
  for (char *q = p + 1;; q++) {
    bool end = *q == '\0';
    if (!end && *q != '/')
      continue;
    *q = '\0';
    if (mkdir(p, 0755) != 0 && errno != EEXIST) {
      rc = fr_errf(err, FR_E_IO, "%s: cannot create folder: %s", p, strerror(errno));
      break;
    }
    if (end)
      break;
    *q = '/';
  }
  fr_free(p);
  struct stat sb;
  if (rc == FR_OK && (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)))
    rc = fr_errf(err, FR_E_IO, "%s: not a folder", path);
  return rc;
}

static void (*fr__write_hook)(const char *tmp_path);

void fr_write_temp_hook(void (*fn)(const char *tmp_path)) {
  fr__write_hook = fn;
}

static bool fr__write_all(int fd, const unsigned char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return false;
    p += w;
    n -= (size_t)w;
  }
  return true;
}

/* Flushes the folder of path so that a rename or link in it survives a crash (best effort: not every file
 * system lets a folder be fsync'd). */
static void fr__sync_dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  char dir[4096];
  if (!slash)
    snprintf(dir, sizeof dir, ".");
  else if (slash == path)
    snprintf(dir, sizeof dir, "/");
  else if ((size_t)(slash - path) < sizeof dir)
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
  else
    return;
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)fsync(dfd);
    close(dfd);
  }
}

enum fr_status fr_write_temp(const char *target, const void *data, size_t len, char **tmp_path,
                             struct fr_err *err) {
  *tmp_path = NULL;
  size_t plen = strlen(target);
  char *tmp = fr_malloc(plen + 32);
  if (!tmp)
    return fr_errf(err, FR_E_NOMEM, "%s: out of memory", target);
  const char *slash = strrchr(target, '/');
  size_t dirlen = slash ? (size_t)(slash - target) + 1 : 0;
  snprintf(tmp, plen + 32, "%.*s.%s.tmp-XXXXXX", (int)dirlen, target, slash ? slash + 1 : target);
  int fd = mkstemp(tmp);
  if (fd < 0) {
    enum fr_status rc =
        fr_errf(err, FR_E_IO, "%s: cannot create a temporary file beside it: %s", target, strerror(errno));
    fr_free(tmp);
    return rc;
  }
  /* mkstemp creates 0600; a written file should be as readable as any other the user writes (umask is
   * not consulted: reading it means changing it, which is not thread-safe). */
  (void)fchmod(fd, 0644);
  const unsigned char *p = data;
  size_t half = len / 2;
  bool ok = fr__write_all(fd, p, half);
  if (ok && fr__write_hook)
    fr__write_hook(tmp);
  ok = ok && fr__write_all(fd, p + half, len - half) && fsync(fd) == 0;
  int saved = errno;
  if (close(fd) != 0 && ok) {
    ok = false;
    saved = errno;
  }
  if (!ok) {
    unlink(tmp);
    fr_free(tmp);
    return fr_errf(err, FR_E_IO, "%s: write failed: %s", target, strerror(saved));
  }
  *tmp_path = tmp;
  return FR_OK;
}

enum fr_status fr_publish_temp(const char *tmp, const char *path, bool replace, bool *taken,
                               struct fr_err *err) {
  if (taken)
    *taken = false;
  if (replace) {
    if (rename(tmp, path) != 0)
      return fr_errf(err, FR_E_IO, "%s: cannot move the finished file into place: %s", path, strerror(errno));
    fr__sync_dir_of(path);
    return FR_OK;
  }
  if (link(tmp, path) == 0) {
    unlink(tmp);
    fr__sync_dir_of(path);
    return FR_OK;
  }
  if (errno == EEXIST) {
    if (taken)
      *taken = true;
    return taken ? FR_OK : fr_errf(err, FR_E_IO, "%s: already exists", path);
  }
  if (errno != EPERM && errno != ENOTSUP && errno != EOPNOTSUPP && errno != EMLINK && errno != ENOSYS)
    return fr_errf(err, FR_E_IO, "%s: cannot create: %s", path, strerror(errno));
  /* No hard links here (FAT, some network file systems): claim the name, then rename over the claim. */
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    if (errno == EEXIST && taken) {
      *taken = true;
      return FR_OK;
    }
    return fr_errf(err, FR_E_IO, "%s: cannot create: %s", path, strerror(errno));
  }
  close(fd);
  if (rename(tmp, path) != 0) {
    enum fr_status rc =
        fr_errf(err, FR_E_IO, "%s: cannot move the finished file into place: %s", path, strerror(errno));
    unlink(path); /* our own empty claim */
    return rc;
  }
  fr__sync_dir_of(path);
  return FR_OK;
}

enum fr_status fr_write_file_atomic(const char *path, const void *data, size_t len, struct fr_err *err) {
  char *tmp = NULL;
  enum fr_status rc = fr_write_temp(path, data, len, &tmp, err);
  if (rc != FR_OK)
    return rc;
  rc = fr_publish_temp(tmp, path, true, NULL, err);
  if (rc != FR_OK)
    unlink(tmp);
  fr_free(tmp);
  return rc;
}

/* nftw's callback has no user pointer: what the walk in progress keeps and its first failure (one walk at a
 * time per thread). */
static _Thread_local bool fr__rm_keep;
static _Thread_local char fr__rm_failed[512];

static int fr__rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  if (ftw->level == 0 && fr__rm_keep)
    return 0;
  if (remove(path) != 0 && !fr__rm_failed[0])
    snprintf(fr__rm_failed, sizeof fr__rm_failed, "%s: %s", path, strerror(errno));
  return 0;
}

enum fr_status fr_remove_tree(const char *path, bool keep_root, struct fr_err *err) {
  struct stat st;
  if (lstat(path, &st) != 0)
    return errno == ENOENT ? FR_OK : fr_errf(err, FR_E_IO, "%s: %s", path, strerror(errno));
  fr__rm_keep = keep_root;
  fr__rm_failed[0] = 0;
  int rc = nftw(path, fr__rm_one, 16, FTW_DEPTH | FTW_PHYS);
  if (rc != 0 && !fr__rm_failed[0])
    snprintf(fr__rm_failed, sizeof fr__rm_failed, "%s: %s", path, strerror(errno));
  return fr__rm_failed[0] ? fr_errf(err, FR_E_IO, "cannot remove %s", fr__rm_failed) : FR_OK;
}

enum fr_status fr_read_chunks(const char *path, void (*fn)(void *user, const void *chunk, size_t n),
                              void *user, struct fr_err *err) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return fr_errf(err, FR_E_IO, "%s: cannot open: %s", path, strerror(errno));
  enum { CHUNK = 1 << 20 };
  char *buf = fr_malloc(CHUNK);
  if (!buf) {
    close(fd);
    return fr_errf(err, FR_E_NOMEM, "%s: out of memory hashing the file", path);
  }
  enum fr_status rc = FR_OK;
  for (;;) {
    if ((rc = fr_read_check_cancel(path, err)))
      break;
    ssize_t n = read(fd, buf, CHUNK);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      rc = fr_errf(err, FR_E_IO, "%s: read failed: %s", path, strerror(errno));
      break;
    }
    if (n == 0)
      break;
    fn(user, buf, (size_t)n);
  }
  fr_free(buf);
  close(fd);
  return rc;
}
