/* flowrun cache stats|clear|gc [--cache PATH] [--cache-size SIZE]: look after the output cache.
 *
 * stats never creates a cache file (asking about a cache that does not exist says so); clear and gc
 * open it as a run would. Exit status: 0 ok, 1 the cache failed (e.g. the file is not a flowrun
 * cache), 2 bad usage. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
             "                    default 10G (the same option as a run's)\n");
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

int fr_cmd_cache(int argc, char **argv) {
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

  struct fr_cache_opts opts = {max_bytes, fr__print_warning, stderr};
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
