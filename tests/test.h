/* A minimal test harness. A test program calls CHECK*() and ends with `return fr_test_done();`, which
 * prints "N passed, N failed" and returns 0, 1 (failures) or 77 (skipped). Golden tests call
 * fr_test_fixtures() first: it returns the fixtures folder, or NULL after printing "skipped: fixtures not
 * found" (a failure instead when FR_REQUIRE_FIXTURES=1, as in CI). */
#ifndef FR_TEST_H
#define FR_TEST_H

#include <stdbool.h>
#include <stdio.h>

#include "kernels/ops.h"

extern int fr_test_passed, fr_test_failed;

void fr_test_check(int ok, const char *file, int line, const char *expr, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#define CHECK(cond) fr_test_check(!!(cond), __FILE__, __LINE__, #cond, NULL)
#define CHECKF(cond, ...) fr_test_check(!!(cond), __FILE__, __LINE__, #cond, __VA_ARGS__)
#define CHECK_OK(expr_rc, errp)                                                                              \
  do {                                                                                                       \
    int rc_ = (int)(expr_rc);                                                                                \
    fr_test_check(rc_ == 0, __FILE__, __LINE__, #expr_rc, "status %d: %s", rc_, (errp)->msg);                \
  } while (0)

/* The fixtures folder or NULL (skip). */
const char *fr_test_fixtures(void);
/* A fresh empty temporary folder for this test (under FR_TEST_TMP or /tmp). */
const char *fr_test_tmpdir(const char *name);
/* Marks the whole test skipped (returns 77 from fr_test_done) with a reason printed once. */
void fr_test_skip(const char *why);
int fr_test_done(void);

/* The whole file as a NUL-terminated string (malloc; the caller frees), its length in *len when len is
 * not NULL; NULL when it cannot be read. */
char *fr_test_read_file(const char *path, size_t *len);

/* The F32 tensor `key` of the safetensors file dir/name (what SaveImageData and SaveLatent write) as a
 * malloc'd array of *n floats (the caller frees it); NULL, with a failed check, when it is missing. */
float *fr_test_read_saved(const char *dir, const char *name, const char *key, long *n);

/* max |a - b| / max |b| over n floats (the fixtures' normalised error). */
double fr_test_rel_err(const float *a, const float *b, long n);

/* True when fixtures folder fx has rel (a file or folder). A test that can run without it prints
 * "part skipped: <rel> is not in the fixtures folder" and goes on with the rest (the GPU machine gets a
 * subset of the fixtures); with FR_REQUIRE_FIXTURES=1 (CI) a missing one is a failure instead. */
bool fr_test_have_fixture(const char *fx, const char *rel);

/* ---- the compute context of golden tests ----
 * FR_TEST_DEVICE = cpu (default) | cuda and FR_TEST_DTYPE = f32 (default) | f16 | bf16 choose where a
 * golden test computes; unset, everything is as before (cpu, F32). */

/* The context options from the environment. An unknown value is a test failure (returns false). */
bool fr_test_ctx_opts(struct fr_ctx_opts *out);
/* Makes the context from fr_test_ctx_opts() and prints which one it is. NULL when the test cannot run
 * there: a device not built in, absent, or without that dtype marks the test skipped with the reason
 * (fr_test_done returns 77); any other error is a failure. */
struct fr_ctx *fr_test_ctx_new(void);
/* "cpu f32", "cuda f16", ... */
const char *fr_test_ctx_label(const struct fr_ctx *c);
/* The golden tolerance in context c for a test whose fp32 bound is fp32_tol:
 *  - F32 (any device): fp32_tol itself. cuda F32 has no TF32 and accumulates in fp32, like the CPU.
 *  - F16: max(fp32_tol, 1e-2). Every op stores its output rounded to F16 (unit roundoff u = 2^-11 =
 *    4.9e-4). The fixtures' weights are fp16 values, so they are exact; what moves the result is the
 *    activations' roundings along the network's longest path (40-60 ops for the tiny UNet, ControlNet
 *    and CLIP: convs, norms, attention, residual adds). Independent roundings add up like a random walk,
 *    sqrt(50) * u = 3.5e-3, and normalisations and attention softmax amplify that by a small factor
 *    (~2-3), giving 1e-2. A real error (wrong scale, layout, epsilon) is >= 1e-1 at these sizes.
 *  - BF16: max(fp32_tol, 3e-2). u = 2^-8 = 3.9e-3, 8x F16's, and the weights round too (fp16 values
 *    keep 11 significant bits, BF16 8): sqrt(50) * u = 2.8e-2 before amplification; 3e-2 is the
 *    bound that still separates rounding from a semantic error. Tests print the measured error with
 *    the bound so it can be judged. */
double fr_test_golden_tol(const struct fr_ctx *c, double fp32_tol);

struct fr_engine;
struct fr_err;
struct fr_event;
/* An engine on the built-in nodes for a test: no cache, models from models_dir (NULL: none), outputs into
 * out_dir, `threads` CPU threads, every event to on_event(user, ev) (on_event may be NULL). NULL after a
 * failed check when it cannot be made. */
struct fr_engine *fr_test_engine(const char *models_dir, const char *out_dir, int threads,
                                 void (*on_event)(void *user, const struct fr_event *ev), void *user,
                                 struct fr_err *err);
/* Loads the YAML text (named name in messages, relative files from dir) in e and runs it. */
enum fr_status fr_test_run_yaml(struct fr_engine *e, const char *yaml, const char *name, const char *dir,
                                struct fr_err *err);

struct fr_safetensors;
/* Golden tensor `name` of g, converted to F32 and uploaded to context c (the model inputs and expected
 * outputs of the golden tests); NULL, with a failed check, when it is missing. The caller frees it. */
struct fr_tensor *fr_test_golden_upload(struct fr_ctx *c, const struct fr_safetensors *g, const char *name);

#endif
