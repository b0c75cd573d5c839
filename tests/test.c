#include "tests/test.h"

#include "core/flowrun.h"
#include "core/safetensors.h"
#include "nodes/registry.h"

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

bool fr_test_have_fixture(const char *fx, const char *rel) {
  char path[4096];
  struct stat st;
  snprintf(path, sizeof path, "%s/%s", fx, rel);
  if (stat(path, &st) == 0)
    return true;
  const char *req = getenv("FR_REQUIRE_FIXTURES");
  if (req && strcmp(req, "1") == 0) {
    fprintf(stderr, "FAIL: fixture %s missing and FR_REQUIRE_FIXTURES=1\n", path);
    fr_test_failed++;
  } else {
    printf("part skipped: %s is not in the fixtures folder\n", rel);
  }
  return false;
}

bool fr_test_ctx_opts(struct fr_ctx_opts *out) {
  *out = (struct fr_ctx_opts){.device = "cpu", .dtype = FR_F32, .threads = 0};
  const char *dev = getenv("FR_TEST_DEVICE"), *dt = getenv("FR_TEST_DTYPE");
  bool ok = true;
  if (dev && *dev) {
    if (strcmp(dev, "cpu") == 0 || strcmp(dev, "cuda") == 0) {
      out->device = strcmp(dev, "cpu") == 0 ? "cpu" : "cuda";
    } else {
      fprintf(stderr, "FAIL: FR_TEST_DEVICE=%s: expected cpu or cuda\n", dev);
      ok = false;
    }
  }
  if (dt && *dt) {
    if (strcmp(dt, "f32") == 0)
      out->dtype = FR_F32;
    else if (strcmp(dt, "f16") == 0)
      out->dtype = FR_F16;
    else if (strcmp(dt, "bf16") == 0)
      out->dtype = FR_BF16;
    else {
      fprintf(stderr, "FAIL: FR_TEST_DTYPE=%s: expected f32, f16 or bf16\n", dt);
      ok = false;
    }
  }
  if (!ok)
    fr_test_failed++;
  return ok;
}

struct fr_ctx *fr_test_ctx_new(void) {
  struct fr_ctx_opts o;
  if (!fr_test_ctx_opts(&o))
    return NULL;
  struct fr_err err = {{0}};
  struct fr_ctx *c = NULL;
  enum fr_status rc = fr_ctx_new(&o, &c, &err);
  if (rc == FR_E_DEVICE || (rc == FR_E_UNSUPPORTED && strcmp(o.device, "cpu") != 0)) {
    char why[FR_ERR_MAX + 64];
    snprintf(why, sizeof why, "FR_TEST_DEVICE=%s FR_TEST_DTYPE=%s: %s", o.device, fr_dtype_name(o.dtype),
             err.msg);
    fr_test_skip(why);
    return NULL;
  }
  fr_test_check(rc == FR_OK, __FILE__, __LINE__, "fr_ctx_new", "status %d: %s", (int)rc, err.msg);
  if (c)
    printf("context: %s\n", fr_test_ctx_label(c));
  return c;
}

const char *fr_test_ctx_label(const struct fr_ctx *c) {
  static char buf[64];
  const char *dt = "?";
  switch (fr_ctx_dtype(c)) {
  case FR_F32: dt = "f32"; break;
  case FR_F16: dt = "f16"; break;
  case FR_BF16: dt = "bf16"; break;
  default: dt = fr_dtype_name(fr_ctx_dtype(c));
  }
  snprintf(buf, sizeof buf, "%s %s", fr_ctx_device_name(c), dt);
  return buf;
}

double fr_test_golden_tol(const struct fr_ctx *c, double fp32_tol) {
  double floor = 0; /* see test.h for the reasons */
  if (fr_ctx_dtype(c) == FR_F16)
    floor = 1e-2;
  else if (fr_ctx_dtype(c) == FR_BF16)
    floor = 3e-2;
  return fp32_tol > floor ? fp32_tol : floor;
}

char *fr_test_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  char *s = NULL;
  long n = -1;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
    s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
      free(s);
      s = NULL;
    }
  }
  fclose(f);
  if (!s)
    return NULL;
  s[n] = 0;
  if (len)
    *len = (size_t)n;
  return s;
}

struct fr_tensor *fr_test_golden_upload(struct fr_ctx *c, const struct fr_safetensors *g, const char *name) {
  const struct fr_st_entry *e = fr_st_find(g, name);
  CHECKF(e != NULL, "golden tensor %s missing", name);
  if (!e)
    return NULL;
  struct fr_tensor *v = fr_st_view(e), *h = v ? fr_tensor_to_f32(v) : NULL;
  struct fr_tensor *t = h ? fr_ctx_upload(c, h) : NULL;
  fr_tensor_free(v);
  fr_tensor_free(h);
  return t;
}

float *fr_test_read_saved(const char *dir, const char *name, const char *key, long *n) {
  char path[4300];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  struct fr_safetensors *st = NULL;
  struct fr_err err = {{0}};
  CHECK_OK(fr_st_open(path, &st, &err), &err);
  const struct fr_st_entry *en = st ? fr_st_find(st, key) : NULL;
  struct fr_tensor *t = en ? fr_st_view(en) : NULL;
  float *out = NULL;
  if (t) {
    *n = (long)fr_tensor_numel(t);
    out = malloc((size_t)*n * sizeof(float));
    memcpy(out, t->data, (size_t)*n * sizeof(float));
  }
  fr_tensor_free(t);
  fr_st_close(st);
  CHECKF(out != NULL, "%s: no %s", path, key);
  return out;
}

struct fr_engine *fr_test_engine(const char *models_dir, const char *out_dir, int threads,
                                 void (*on_event)(void *user, const struct fr_event *ev), void *user,
                                 struct fr_err *err) {
  const char *dirs[1] = {models_dir};
  struct fr_engine_opts o = {.registry = fr_builtin_registry(),
                             .no_cache = true,
                             .model_dirs = models_dir ? dirs : NULL,
                             .n_model_dirs = models_dir ? 1 : 0,
                             .output_dir = out_dir,
                             .threads = threads,
                             .on_event = on_event,
                             .user = user};
  struct fr_engine *e = NULL;
  enum fr_status rc = fr_engine_new(&o, &e, err);
  CHECK_OK(rc, err);
  return rc == FR_OK ? e : NULL;
}

enum fr_status fr_test_run_yaml(struct fr_engine *e, const char *yaml, const char *name, const char *dir,
                                struct fr_err *err) {
  struct fr_graph *g = NULL;
  enum fr_status rc = fr_engine_load_string(e, yaml, strlen(yaml), name, dir, NULL, 0, &g, err);
  if (rc == FR_OK)
    rc = fr_engine_run(e, g, NULL, err);
  fr_graph_free(g);
  return rc;
}
