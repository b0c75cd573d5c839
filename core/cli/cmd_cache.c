/* flowrun cache stats|clear|gc [--cache PATH] [--cache-size SIZE]: look after the output cache.
 * flowrun cache bench [--cache PATH] [--entries N] [--bytes N] [--reads N]: reader latency (p50/p99)
 * with no writer, while another process holds the write lock, and while another process stores
 * entries back to back (BENCHMARKS.md).
 *
 * stats never creates a cache file (asking about a cache that does not exist says so); clear and gc
 * open it as a run would. Exit status: 0 ok, 1 the cache failed (e.g. the file is not a flowrun
 * cache), 2 bad usage. */
#include <inttypes.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"

#include "core/cache.h"
#include "core/cli/cli.h"

static void fr__cache_usage(FILE *f) {
  fprintf(f, "usage: flowrun cache stats|clear|gc [--cache PATH] [--cache-size SIZE]\n"
             "  stats       entries, bytes, limit and file size\n"
             "  clear       drop every entry (and the file fingerprint memos)\n"
             "  gc          verify every entry, drop bad ones, evict least-recently-used entries down to\n"
             "              the limit, compact the file\n"
             "  --cache PATH      the cache file (default: $XDG_CACHE_HOME/flowrun/cache.sqlite or\n"
             "                    ~/.cache/flowrun/cache.sqlite)\n"
             "  --cache-size SIZE the size limit: bytes or with K, M, G, T (binary units), or 'unlimited';\n"
             "                    default 10G (the same option as a run's)\n"
             "usage: flowrun cache bench [--cache PATH] [--entries N] [--bytes N] [--reads N]\n"
             "  Fills a new cache file (default: a temporary one, removed after) with N entries (200) of\n"
             "  --bytes (65536), then times --reads (2000) random look-ups + reads (has, then get) in three\n"
             "  phases: no other connection; another process holding the write lock (an open write\n"
             "  transaction); another process storing entries back to back. Prints p50, p99 and max ms.\n");
}


static const char *fr__human(int64_t n, char *buf, size_t len) {
  static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = (double)n;
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    u++;
  }
  if (u == 0)
    snprintf(buf, len, "%" PRId64 " B", n);
  else
    snprintf(buf, len, "%.1f %s", v, units[u]);
  return buf;
}

static void fr__print_warning(void *user, const char *msg) {
  FILE *f = user;
  fprintf(f, "  %s\n", msg);
}

static void fr__print_stats(const char *path, const struct fr_cache_stats *st) {
  char a[32], b[32], c[32];
  printf("cache:   %s\n", path);
  printf("entries: %" PRId64 "\n", st->entries);
  printf("bytes:   %s (%" PRId64 ")\n", fr__human(st->bytes, a, sizeof a), st->bytes);
  if (st->max_bytes < 0)
    printf("limit:   unlimited\n");
  else
    printf("limit:   %s (%" PRId64 ")\n", fr__human(st->max_bytes, b, sizeof b), st->max_bytes);
  printf("file:    %s on disk\n", fr__human(st->file_bytes, c, sizeof c));
}

/* ---- flowrun cache bench ---- */

static double fr__ms_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static struct fr_key fr__bench_key(int i) {
  struct fr_key k;
  memset(&k, 0, sizeof k);
  memcpy(k.b, "bench", 5);
  memcpy(k.b + 8, &i, sizeof i);
  return k;
}

static int fr__cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* The other process of a phase. mode 1: opens the file with plain SQLite, takes the write lock (BEGIN
 * IMMEDIATE plus a write) and holds it until its stdin pipe closes. mode 2: stores entries with
 * fr_cache_put back to back until killed. Writes one byte to ready once it is in place. */
static void fr__bench_other(const char *path, int mode, int ready, int hold, size_t bytes) {
  if (mode == 1) {
    sqlite3 *db = NULL;
    int ok = sqlite3_open(path, &db) == SQLITE_OK &&
             sqlite3_exec(db, "BEGIN IMMEDIATE; INSERT OR REPLACE INTO kv VALUES('bench', 'held');", NULL,
                          NULL, NULL) == SQLITE_OK;
    char b = ok ? 'y' : 'n';
    if (write(ready, &b, 1) != 1 || !ok)
      _exit(1);
    char x;
    while (read(hold, &x, 1) > 0) /* until the parent closes its end */
      ;
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(db);
    _exit(0);
  }
  struct fr_cache *c = NULL;
  struct fr_err err;
  struct fr_cache_opts o = {.max_bytes = -1};
  unsigned char *blob = fr_malloc(bytes);
  int ok = blob && fr_cache_open(path, &o, &c, &err) == FR_OK;
  char b = ok ? 'y' : 'n';
  if (write(ready, &b, 1) != 1 || !ok)
    _exit(1);
  for (int i = 1000000;; i++) {
    struct fr_key k = fr__bench_key(i % 1000000 + 1000000);
    memset(blob, i & 0xff, bytes);
    fr_cache_put(c, &k, blob, bytes, &err);
  }
}

/* Times reads random look-ups + reads; fills lat (ms). Returns false if one failed. */
static bool fr__bench_reads(struct fr_cache *c, int entries, int reads, double *lat, unsigned *seed) {
  for (int r = 0; r < reads; r++) {
    struct fr_key k = fr__bench_key((int)(rand_r(seed) % (unsigned)entries));
    void *b = NULL;
    size_t len = 0;
    struct fr_err err;
    double t0 = fr__ms_now();
    bool ok = fr_cache_has(c, &k) && fr_cache_get(c, &k, &b, &len, &err) == FR_OK;
    lat[r] = fr__ms_now() - t0;
    fr_free(b);
    if (!ok) {
      fprintf(stderr, "flowrun cache bench: read %d failed\n", r);
      return false;
    }
  }
  return true;
}

static int fr__cache_bench(const char *path_arg, int entries, size_t bytes, int reads) {
  char tmpl[] = "/tmp/flowrun-cache-bench-XXXXXX";
  char path[4200];
  bool temp = !path_arg;
  if (temp) {
    const char *td = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/flowrun-cache-bench-XXXXXX", td && *td ? td : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) {
      snprintf(path, sizeof path, "%s", tmpl);
      fd = mkstemp(path);
    }
    if (fd < 0) {
      perror("flowrun cache bench: temporary file");
      return 1;
    }
    close(fd);
    remove(path); /* fr_cache_open makes it */
  } else {
    snprintf(path, sizeof path, "%s", path_arg);
    struct stat sb;
    if (stat(path, &sb) == 0) {
      fprintf(stderr, "flowrun cache bench: %s exists; give a new file (the bench fills it)\n", path);
      return 2;
    }
  }
  struct fr_cache *c = NULL;
  struct fr_err err = {{0}};
  struct fr_cache_opts o = {.max_bytes = -1, .warn = fr__print_warning, .user = stderr};
  if (fr_cache_open(path, &o, &c, &err) != FR_OK) {
    fprintf(stderr, "flowrun cache bench: %s\n", err.msg);
    return 1;
  }
  unsigned char *blob = fr_malloc(bytes ? bytes : 1);
  double *lat = fr_malloc(sizeof *lat * (size_t)reads);
  int status = 0;
  for (int i = 0; blob && lat && i < entries && status == 0; i++) {
    memset(blob, i & 0xff, bytes);
    struct fr_key k = fr__bench_key(i);
    if (fr_cache_put(c, &k, blob, bytes, &err) != FR_OK) {
      fprintf(stderr, "flowrun cache bench: filling: %s\n", err.msg);
      status = 1;
    }
  }
  if (!blob || !lat)
    status = 1;
  printf("cache bench: %s, %d entries of %zu bytes, %d random look-ups + reads per phase\n", path, entries,
         bytes, reads);
  printf("%-36s %9s %9s %9s\n", "phase", "p50 ms", "p99 ms", "max ms");
  static const char *const names[3] = {"no other connection", "another process holds the write lock",
                                       "another process putting constantly"};
  unsigned seed = 1;
  for (int phase = 0; phase < 3 && status == 0; phase++) {
    int ready[2] = {-1, -1}, hold[2] = {-1, -1};
    pid_t pid = -1;
    if (phase > 0) {
      if (pipe(ready) != 0 || pipe(hold) != 0) {
        perror("flowrun cache bench: pipe");
        status = 1;
        break;
      }
      fflush(stdout);
      pid = fork();
      if (pid == 0) {
        close(ready[0]);
        close(hold[1]);
        fr__bench_other(path, phase, ready[1], hold[0], bytes);
      }
      close(ready[1]);
      close(hold[0]);
      char b = 'n';
      if (pid < 0 || read(ready[0], &b, 1) != 1 || b != 'y') {
        fprintf(stderr, "flowrun cache bench: the other process of phase %d did not start\n", phase);
        status = 1;
      }
      if (phase == 2 && status == 0) {
        struct timespec ts = {0, 50000000}; /* let it get going */
        nanosleep(&ts, NULL);
      }
    }
    if (status == 0 && fr__bench_reads(c, entries, reads, lat, &seed)) {
      qsort(lat, (size_t)reads, sizeof *lat, fr__cmp_double);
      printf("%-36s %9.3f %9.3f %9.3f\n", names[phase], lat[reads / 2], lat[(int)((long)reads * 99 / 100)],
             lat[reads - 1]);
    } else {
      status = 1;
    }
    if (pid > 0) {
      if (phase == 2)
        kill(pid, SIGKILL);
      close(hold[1]);
      waitpid(pid, NULL, 0);
    }
    if (ready[0] >= 0)
      close(ready[0]);
  }
  fflush(stdout);
  fr_free(blob);
  fr_free(lat);
  fr_cache_close(c);
  if (temp) {
    const char *sfx[3] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
      char p[4300];
      snprintf(p, sizeof p, "%s%s", path, sfx[i]);
      remove(p);
    }
  }
  return status;
}

static bool fr__bench_int(const char *flag, const char *v, long lo, long hi, long *out) {
  char *end;
  long n = v ? strtol(v, &end, 10) : 0;
  if (!v || !*v || *end || n < lo || n > hi) {
    fprintf(stderr, "flowrun cache bench: %s %s: expected an integer in [%ld, %ld]\n", flag, v ? v : "", lo,
            hi);
    return false;
  }
  *out = n;
  return true;
}

static int fr__cmd_cache_bench(int argc, char **argv) {
  const char *path = NULL;
  long entries = 200, bytes = 65536, reads = 2000;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fr__cache_usage(stdout);
      return 0;
    }
    if (strcmp(a, "--cache") == 0 && v)
      path = v;
    else if (strcmp(a, "--entries") == 0) {
      if (!fr__bench_int(a, v, 1, 1000000, &entries))
        return 2;
    } else if (strcmp(a, "--bytes") == 0) {
      if (!fr__bench_int(a, v, 0, 1 << 28, &bytes))
        return 2;
    } else if (strcmp(a, "--reads") == 0) {
      if (!fr__bench_int(a, v, 1, 100000000, &reads))
        return 2;
    } else {
      fprintf(stderr, "flowrun cache bench: unexpected or incomplete argument '%s'\n", a);
      fr__cache_usage(stderr);
      return 2;
    }
    i++;
  }
  return fr__cache_bench(path, (int)entries, (size_t)bytes, (int)reads);
}

int fr_cmd_cache(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "bench") == 0)
    return fr__cmd_cache_bench(argc, argv);
  const char *action = NULL, *path = NULL;
  int64_t max_bytes = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fr__cache_usage(stdout);
      return 0;
    }
    const char *val = NULL;
    bool is_cache = strncmp(a, "--cache", 7) == 0 && (a[7] == 0 || a[7] == '=');
    /* --cache-size, as for a run; --max-size is its old name here */
    bool is_max = (strncmp(a, "--cache-size", 12) == 0 && (a[12] == 0 || a[12] == '=')) ||
                  (strncmp(a, "--max-size", 10) == 0 && (a[10] == 0 || a[10] == '='));
    if (is_cache || is_max) {
      const char *eq = strchr(a, '=');
      if (eq)
        val = eq + 1;
      else if (i + 1 < argc)
        val = argv[++i];
      if (!val || !*val) {
        fprintf(stderr, "flowrun cache: %s needs a value\n", is_cache ? "--cache" : "--cache-size");
        return 2;
      }
      if (is_cache) {
        path = val;
      } else if (!fr_cli_parse_size(val, &max_bytes)) {
        fprintf(stderr, "flowrun cache: --cache-size '%s' is not a size (e.g. 2G, 500M, unlimited)\n", val);
        return 2;
      }
    } else if (a[0] == '-') {
      fprintf(stderr, "flowrun cache: unknown option '%s'\n", a);
      fr__cache_usage(stderr);
      return 2;
    } else if (!action) {
      action = a;
    } else {
      fprintf(stderr, "flowrun cache: unexpected argument '%s'\n", a);
      return 2;
    }
  }
  if (!action ||
      (strcmp(action, "stats") != 0 && strcmp(action, "clear") != 0 && strcmp(action, "gc") != 0)) {
    if (action)
      fprintf(stderr, "flowrun cache: unknown action '%s'\n", action);
    fr__cache_usage(stderr);
    return 2;
  }
  char defpath[4096];
  if (!path) {
    if (!fr_cache_default_path(defpath, sizeof defpath)) {
      fprintf(stderr,
              "flowrun cache: no default cache location (set HOME or XDG_CACHE_HOME, or pass --cache)\n");
      return 2;
    }
    path = defpath;
  }
  struct stat sb;
  if (strcmp(action, "stats") == 0 && stat(path, &sb) != 0) {
    printf("cache:   %s (no cache file yet)\nentries: 0\n", path);
    return 0;
  }

  struct fr_cache_opts opts = {.max_bytes = max_bytes, .warn = fr__print_warning, .user = stderr};
  if (strcmp(action, "gc") == 0)
    opts.user = stdout; /* what gc drops is its output */
  struct fr_cache *c = NULL;
  struct fr_err err = {{0}};
  enum fr_status rc = fr_cache_open(path, &opts, &c, &err);
  struct fr_cache_stats st;
  if (rc == FR_OK && strcmp(action, "stats") == 0) {
    if ((rc = fr_cache_stats(c, &st, &err)) == FR_OK)
      fr__print_stats(path, &st);
  } else if (rc == FR_OK && strcmp(action, "clear") == 0) {
    int64_t before = 0;
    if ((rc = fr_cache_stats(c, &st, &err)) == FR_OK) {
      before = st.entries;
      rc = fr_cache_clear(c, &err);
    }
    if (rc == FR_OK) {
      char a[32];
      int64_t bytes = st.bytes;
      printf("cleared %s: dropped %" PRId64 " entries (%s)\n", path, before, fr__human(bytes, a, sizeof a));
    }
  } else if (rc == FR_OK) {
    int64_t dropped = 0;
    printf("gc %s:\n", path);
    if ((rc = fr_cache_gc(c, &dropped, &err)) == FR_OK && (rc = fr_cache_stats(c, &st, &err)) == FR_OK) {
      char a[32], b[32];
      printf("dropped %" PRId64 " entr%s; %" PRId64 " entries (%s) remain; file %s\n", dropped,
             dropped == 1 ? "y" : "ies", st.entries, fr__human(st.bytes, a, sizeof a),
             fr__human(st.file_bytes, b, sizeof b));
    }
  }
  fr_cache_close(c);
  if (rc != FR_OK) {
    fprintf(stderr, "flowrun cache %s: %s\n", action, err.msg);
    return 1;
  }
  return 0;
}
