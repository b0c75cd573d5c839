#include "tests/test.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fr_test_passed, fr_test_failed;
static int fr__skipped;

void fr_test_check(int ok, const char *file, int line, const char *expr, const char *fmt, ...) {
  if (ok) {
    fr_test_passed++;
    return;
  }
  fr_test_failed++;
  fprintf(stderr, "FAIL %s:%d: %s", file, line, expr);
  if (fmt) {
    va_list ap;
    va_start(ap, fmt);
    fputs(": ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
  }
  fputc('\n', stderr);
}

const char *fr_test_fixtures(void) {
  static char path[4096];
  const char *env = getenv("FR_FIXTURES");
  struct stat st;
  if (env && *env && stat(env, &st) == 0 && S_ISDIR(st.st_mode)) {
    snprintf(path, sizeof path, "%s", env);
    return path;
  }
  const char *req = getenv("FR_REQUIRE_FIXTURES");
  if (req && strcmp(req, "1") == 0) {
    fprintf(stderr, "FAIL: fixtures not found (FR_FIXTURES=%s) and FR_REQUIRE_FIXTURES=1\n", env ? env : "");
    fr_test_failed++;
    return NULL;
  }
  fr_test_skip("fixtures not found");
  return NULL;
}

const char *fr_test_tmpdir(const char *name) {
  static char path[4096];
  const char *base = getenv("FR_TEST_TMP");
  if (!base || !*base)
    base = "/tmp";
  mkdir(base, 0755);
  snprintf(path, sizeof path, "%s/%s.%d", base, name, (int)getpid());
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
  if (system(cmd) != 0) { /* best effort */
  }
  mkdir(path, 0755);
  return path;
}

void fr_test_skip(const char *why) {
  if (!fr__skipped)
    printf("skipped: %s\n", why);
  fr__skipped = 1;
}

int fr_test_done(void) {
  if (fr__skipped && fr_test_failed == 0) {
    printf("%d passed, %d failed, 1 skipped\n", fr_test_passed, fr_test_failed);
    return 77;
  }
  printf("%d passed, %d failed\n", fr_test_passed, fr_test_failed);
  return fr_test_failed ? 1 : 0;
}

double fr_test_rel_err(const float *a, const float *b, long n) {
  double maxdiff = 0, maxref = 0;
  for (long i = 0; i < n; i++) {
    double d = fabs((double)a[i] - (double)b[i]);
    if (!(d <= maxdiff)) /* also catches NaN */
      maxdiff = isnan(d) ? INFINITY : d;
    if (fabs((double)b[i]) > maxref)
      maxref = fabs((double)b[i]);
  }
  return maxref > 0 ? maxdiff / maxref : maxdiff;
}
