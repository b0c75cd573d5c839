/* flowrun bench --only startup [--runs N] [--program PATH]: what a command costs before any work, the
 * promise of the fully cached run. Runs PATH (default: this flowrun) as a child N times (default 20) for
 * * each of `flowrun version` (= --version), `validate` of the image demo and a fully cached run of it (its
 * cache filled by one untimed run first, in a temporary folder) and prints per row the median and min wall
 * time of the child (fork to exit) and its peak resident memory (the largest ru_maxrss). --program times
 * another build the same way, so a before/after pair comes from one sitting. */
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/cli/cli.h"
#include "core/file.h"
#include "core/paths.h"

extern char **environ;

static double fr__now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* Runs argv with stdout and stderr to /dev/null; wall ms and peak RSS (KiB) of the child. False when it
 * could not start or did not exit 0. */
static bool fr__spawn(char *const *argv, double *ms, long *rss_kib) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  double t0 = fr__now_ms();
  int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0)
    return false;
  int status = 0;
  struct rusage ru;
  if (wait4(pid, &status, 0, &ru) != pid)
    return false;
  *ms = fr__now_ms() - t0;
  *rss_kib = ru.ru_maxrss;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static int fr__cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int fr_bench_startup(const char *program, int runs) {
  char self[4096], graph[4096];
  if (!program) {
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
      fprintf(stderr, "flowrun bench: cannot find this program (/proc/self/exe)\n");
      return 1;
    }
    self[n] = 0;
    program = self;
  }
  if (!fr_data_path("graphs/image-demo.yaml", "graphs/image-demo.yaml", graph, sizeof graph)) {
    fprintf(stderr, "flowrun bench: graphs/image-demo.yaml not found (installed or in the source tree)\n");
    return 1;
  }
  char tmp[] = "/tmp/flowrun-bench-startup-XXXXXX";
  if (!mkdtemp(tmp)) {
    perror("flowrun bench: mkdtemp");
    return 1;
  }
  char cache[4200], out[4200];
  snprintf(cache, sizeof cache, "%s/cache.sqlite", tmp);
  snprintf(out, sizeof out, "%s/out", tmp);
  char *prog = (char *)program;
  char *version[] = {prog, "version", NULL}; /* = --version; older builds know only this */
  char *validate[] = {prog, "validate", graph, NULL};
  char *cached[] = {prog, graph, "--cache", cache, "--output", out, "--quiet", NULL};
  struct {
    const char *name;
    char *const *argv;
  } rows[] = {{"version", version}, {"validate image-demo", validate}, {"cached run image-demo", cached}};
  double ms;
  long rss;
  int st = 0;
  if (!fr__spawn(cached, &ms, &rss)) { /* fills the cache */
    fprintf(stderr, "flowrun bench: %s %s failed\n", program, graph);
    st = 1;
  }
  printf("startup of %s (%d runs each)\n", program, runs);
  printf("%-24s %10s %10s %12s\n", "row", "median ms", "min ms", "peak RSS MiB");
  double *t = calloc((size_t)runs, sizeof *t);
  for (size_t r = 0; r < sizeof rows / sizeof rows[0] && t && !st; r++) {
    long peak = 0;
    for (int i = 0; i < runs && !st; i++) {
      if (!fr__spawn(rows[r].argv, &t[i], &rss)) {
        fprintf(stderr, "flowrun bench: %s: %s failed\n", rows[r].name, program);
        st = 1;
      }
      peak = rss > peak ? rss : peak;
    }
    if (st)
      break;
    qsort(t, (size_t)runs, sizeof *t, fr__cmp_double);
    double med = runs % 2 ? t[runs / 2] : (t[runs / 2 - 1] + t[runs / 2]) / 2;
    printf("%-24s %10.1f %10.1f %12.1f\n", rows[r].name, med, t[0], peak / 1024.0);
  }
  free(t);
  /* the temporary folder: the cache file (and its WAL/SHM files) and the output PNG */
  struct fr_err err;
  if (fr_remove_tree(tmp, false, &err) != FR_OK)
    fprintf(stderr, "flowrun bench: %s\n", err.msg);
  return st;
}
