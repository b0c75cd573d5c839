/* A minimal test harness. A test program calls CHECK*() and ends with `return fr_test_done();`, which
 * prints "N passed, N failed" and returns 0, 1 (failures) or 77 (skipped). Golden tests call
 * fr_test_fixtures() first: it returns the fixtures folder, or NULL after printing "skipped: fixtures not
 * found" (a failure instead when FR_REQUIRE_FIXTURES=1, as in CI). */
#ifndef FR_TEST_H
#define FR_TEST_H

#include <stdio.h>

extern int fr_test_passed, fr_test_failed;

void fr_test_check(int ok, const char *file, int line, const char *expr, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#define CHECK(cond) fr_test_check(!!(cond), __FILE__, __LINE__, #cond, NULL)
#define CHECKF(cond, ...) fr_test_check(!!(cond), __FILE__, __LINE__, #cond, __VA_ARGS__)
#define CHECK_OK(expr_rc, errp)                                                                        \
  do {                                                                                                 \
    int rc_ = (int)(expr_rc);                                                                          \
    fr_test_check(rc_ == 0, __FILE__, __LINE__, #expr_rc, "status %d: %s", rc_, (errp)->msg);          \
  } while (0)

/* The fixtures folder or NULL (skip). */
const char *fr_test_fixtures(void);
/* A fresh empty temporary folder for this test (under FR_TEST_TMP or /tmp). */
const char *fr_test_tmpdir(const char *name);
/* Marks the whole test skipped (returns 77 from fr_test_done) with a reason printed once. */
void fr_test_skip(const char *why);
int fr_test_done(void);

/* max |a - b| / max |b| over n floats (the fixtures' normalised error). */
double fr_test_rel_err(const float *a, const float *b, long n);

#endif
