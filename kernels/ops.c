/* The ops API front end: contexts, sticky errors, shape/dtype checks, broadcasting and dispatch to a
 * backend (kernels/backend.h). Nothing here knows how a device computes; nothing in a backend needs to
 * re-check shapes. Every op follows the same steps:
 *   1. return NULL at once if the context already failed or a required input is NULL;
 *   2. check dtypes, devices and shapes, recording FR_E_SHAPE / FR_E_INVALID naming the op and shapes;
 *   3. allocate the output through the backend (FR_E_NOMEM naming the op and the shape);
 *   4. call the backend; on failure free the output and record the backend's message. */
#include "kernels/ops.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dlfcn.h>
#include <pthread.h>
#include <unistd.h>

#include "core/alloc.h"
#include "kernels/backend.h"

struct fr_ctx {
  const struct fr_backend *be;
  void *bctx;
  enum fr_dtype dtype;
  enum fr_status st; /* first error, FR_OK if none */
  struct fr_err err;
};

/* ---- the CUDA module ----
 * The CUDA backend is a separate shared object (kernels/cuda/CMakeLists.txt), opened the first time a CUDA
 * context is asked for and kept for the life of the process (CUDA's libraries do not unload cleanly). Until
 * then no CUDA library is mapped: a CPU run, `--version` and a cached run pay nothing for CUDA. It is looked
 * for, in order: at $FLOWRUN_CUDA_MODULE (a path); beside the running program (a build tree); in
 * ../lib/flowrun/ from the program's folder (an install: bin/ and lib/flowrun/); one folder up (the build
 * tree's test programs in build/tests/). A module that is there but cannot be opened is a missing CUDA
 * runtime (libcudart, libcublasLt), named in the message; a missing driver or device is the module's own
 * "no CUDA device" when the context is made. */
static pthread_once_t fr__cuda_once = PTHREAD_ONCE_INIT;
static const struct fr_backend *fr__cuda_be;
static enum fr_status fr__cuda_rc;
static char fr__cuda_msg[FR_ERR_MAX];

/* The folder of the running program (/proc/self/exe), or "" when it cannot be read. */
static void fr__exe_dir(char *out, size_t cap) {
  ssize_t n = readlink("/proc/self/exe", out, cap - 1);
  out[n > 0 ? n : 0] = 0;
  char *slash = strrchr(out, '/');
  if (slash)
    *slash = 0;
  else
    out[0] = 0;
}

#ifdef FLOWRUN_CUDA_LINKED
/* A program that links the CUDA objects itself (the direct builds of docs/bench.md and
 * tests/gpu/run_gpu_checks.sh for machines where CMake cannot build) uses the table it links. */
const struct fr_backend *fr_cuda_module_backend(void);
static void fr__cuda_load(void) {
  fr__cuda_be = fr_cuda_module_backend();
}
#else
static void fr__cuda_load(void) {
  char dir[2048], cand[4][2400], looked[800] = "";
  int n = 0;
  const char *env = getenv("FLOWRUN_CUDA_MODULE");
  fr__exe_dir(dir, sizeof dir);
  if (env && *env)
    snprintf(cand[n++], sizeof cand[0], "%s", env);
  if (dir[0]) {
    snprintf(cand[n++], sizeof cand[0], "%s/%s", dir, FR_CUDA_MODULE_FILE);
    snprintf(cand[n++], sizeof cand[0], "%s/../lib/flowrun/%s", dir, FR_CUDA_MODULE_FILE);
    snprintf(cand[n++], sizeof cand[0], "%s/../%s", dir, FR_CUDA_MODULE_FILE);
  }
  for (int i = 0; i < n; i++) {
    size_t k = strlen(looked);
    snprintf(looked + k, sizeof looked - k, "%s%.190s", k ? ", " : "", cand[i]);
    if (access(cand[i], F_OK) != 0)
      continue;
    void *h = dlopen(cand[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char *why = dlerror();
      fr__cuda_rc = FR_E_DEVICE;
      snprintf(
          fr__cuda_msg, sizeof fr__cuda_msg,
          "device cuda: the CUDA module %.300s cannot be loaded: %.400s (is the CUDA runtime, libcudart and "
          "libcublasLt, installed and on the library path?)",
          cand[i], why ? why : "unknown error");
      return;
    }
    const struct fr_backend *(*entry)(void) = NULL;
    *(void **)&entry = dlsym(h, FR_CUDA_MODULE_ENTRY);
    const struct fr_backend *be = entry ? entry() : NULL;
    if (!be || be->version != FR_BACKEND_VERSION) {
      fr__cuda_rc = FR_E_DEVICE;
      snprintf(fr__cuda_msg, sizeof fr__cuda_msg,
               "device cuda: %.300s is not a CUDA module of this flowrun (%s)", cand[i],
               !be ? "no " FR_CUDA_MODULE_ENTRY : "another backend interface version");
      dlclose(h);
      return;
    }
    fr__cuda_be = be;
    return;
  }
  fr__cuda_rc = FR_E_DEVICE;
#ifdef FLOWRUN_HAVE_CUDA
  snprintf(fr__cuda_msg, sizeof fr__cuda_msg,
           "device cuda: the CUDA module %s is not installed (looked at: %s); install flowrun's CUDA package "
           "(flowrun-cuda) or set FLOWRUN_CUDA_MODULE",
           FR_CUDA_MODULE_FILE, looked);
#else
  snprintf(fr__cuda_msg, sizeof fr__cuda_msg,
           "device cuda: flowrun was built without CUDA, and no CUDA module %s was found (looked at: %s)",
           FR_CUDA_MODULE_FILE, looked);
#endif
}
#endif

/* The backend named device: the CPU's, or the CUDA module's (opened on first use). */
static enum fr_status fr__backend(const char *device, const struct fr_backend **out, struct fr_err *err) {
  if (strcmp(device, fr_backend_cpu.name) == 0) {
    *out = &fr_backend_cpu;
    return FR_OK;
  }
  if (strcmp(device, "cuda") == 0) {
    pthread_once(&fr__cuda_once, fr__cuda_load);
    if (!fr__cuda_be)
      return fr_errf(err, fr__cuda_rc, "%s", fr__cuda_msg);
    *out = fr__cuda_be;
    return FR_OK;
  }
  return fr_errf(err, FR_E_INVALID, "device '%s': unknown (expected cpu or cuda)", device);
}

enum fr_status fr_ctx_new(const struct fr_ctx_opts *opts, struct fr_ctx **out, struct fr_err *err) {
  *out = NULL;
  struct fr_ctx_opts o = {.device = "cpu", .dtype = FR_F32, .threads = 0};
  if (opts) {
    o = *opts;
    if (!o.device || !*o.device)
      o.device = "cpu";
  }
  const struct fr_backend *be = NULL;
  enum fr_status brc = fr__backend(o.device, &be, err);
  if (brc != FR_OK)
    return brc;
  if (be->version != FR_BACKEND_VERSION)
    return fr_errf(err, FR_E_INTERNAL, "backend %s: interface version %d, flowrun expects %d", be->name,
                   be->version, FR_BACKEND_VERSION);
  if (o.threads < 0)
    return fr_errf(err, FR_E_INVALID, "threads %d: must be >= 0 (0: all cores)", o.threads);
  struct fr_ctx *c = fr_calloc(1, sizeof *c);
  if (!c)
    return fr_errf(err, FR_E_NOMEM, "out of memory creating a %s context", be->name);
  c->be = be;
  c->dtype = o.dtype;
  enum fr_status rc = be->init(&o, &c->bctx, err);
  if (rc != FR_OK) {
    fr_free(c);
    return rc;
  }
  *out = c;
  return FR_OK;
}

void fr_ctx_free(struct fr_ctx *c) {
  if (!c)
    return;
  c->be->free(c->bctx);
  fr_free(c);
}

bool fr_ctx_failed(const struct fr_ctx *c) {
  return c->st != FR_OK;
}

enum fr_status fr_ctx_status(const struct fr_ctx *c, struct fr_err *err) {
  if (c->st != FR_OK && err)
    memcpy(err->msg, c->err.msg, sizeof err->msg);
  return c->st;
}

void fr_ctx_clear(struct fr_ctx *c) {
  c->st = FR_OK;
  c->err.msg[0] = 0;
}

static void fr__vfail(struct fr_ctx *c, enum fr_status rc, const char *fmt, va_list ap) {
  if (c->st != FR_OK)
    return; /* the first error is the one worth reading */
  c->st = rc;
  vsnprintf(c->err.msg, sizeof c->err.msg, fmt, ap);
}

enum fr_status fr_ctx_fail(struct fr_ctx *c, enum fr_status rc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fr__vfail(c, rc, fmt, ap);
  va_end(ap);
  return rc;
}

const char *fr_ctx_device_name(const struct fr_ctx *c) {
  return c->be->name;
}
enum fr_dtype fr_ctx_dtype(const struct fr_ctx *c) {
  return c->dtype;
}
const struct fr_backend *fr_ctx_backend(const struct fr_ctx *c) {
  return c->be;
}

enum fr_status fr_ctx_sync(struct fr_ctx *c, struct fr_err *err) {
  if (!c->be->sync)
    return FR_OK;
  struct fr_err e = {{0}};
  enum fr_status rc = c->be->sync(c->bctx, &e);
  if (rc != FR_OK) {
    fr_ctx_fail(c, rc, "sync: %s", e.msg);
    return fr_errf(err, rc, "sync: %s", e.msg);
  }
  return FR_OK;
}

enum fr_status fr_ctx_mem_stats(struct fr_ctx *c, bool reset_peak, struct fr_ctx_mem *out,
                                struct fr_err *err) {
  memset(out, 0, sizeof *out);
  if (!c->be->mem_stats)
    return fr_errf(err, FR_E_UNSUPPORTED, "device %s: no memory counters", c->be->name);
  return c->be->mem_stats(c->bctx, reset_peak, out, err);
}

size_t fr_ctx_reserve_bytes(struct fr_ctx *c) {
  return c && c->be->reserve ? c->be->reserve(c->bctx, false) : 0;
}

size_t fr_ctx_trim(struct fr_ctx *c) {
  return c && c->be->reserve ? c->be->reserve(c->bctx, true) : 0;
}

/* ---- recorded replays ---- */

struct fr_recording {
  struct fr_ctx *c;
  void *g; /* the backend's */
};

static bool fr__graphs_off(void) {
  const char *v = getenv("FLOWRUN_CUDA_GRAPHS");
  return v && strcmp(v, "0") == 0;
}

bool fr_ctx_can_record(const struct fr_ctx *c) {
  return c->be->record_begin && !fr__graphs_off();
}

enum fr_status fr_ctx_record_begin(struct fr_ctx *c, struct fr_err *err) {
  if (!c->be->record_begin || fr__graphs_off())
    return fr_errf(err, FR_E_UNSUPPORTED, "device %s: no recorded replays%s", c->be->name,
                   c->be->record_begin ? " (FLOWRUN_CUDA_GRAPHS=0)" : "");
  if (c->st != FR_OK)
    return fr_ctx_status(c, err);
  return c->be->record_begin(c->bctx, err);
}

enum fr_status fr_ctx_record_end(struct fr_ctx *c, struct fr_recording **out, struct fr_err *err) {
  *out = NULL;
  if (!c->be->record_end)
    return fr_errf(err, FR_E_UNSUPPORTED, "device %s: no recorded replays", c->be->name);
  void *g = NULL;
  struct fr_err e = {{0}};
  enum fr_status rc = c->be->record_end(c->bctx, &g, &e); /* always ends the capture */
  if (c->st != FR_OK) { /* an op failed while recording: that is the error to report */
    if (g)
      c->be->graph_free(c->bctx, g);
    return fr_ctx_status(c, err);
  }
  if (rc != FR_OK) {
    fr_ctx_fail(c, rc, "%s", e.msg);
    return fr_errf(err, rc, "%s", e.msg);
  }
  struct fr_recording *gr = fr_calloc(1, sizeof *gr);
  if (!gr) {
    c->be->graph_free(c->bctx, g);
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  }
  gr->c = c;
  gr->g = g;
  *out = gr;
  return FR_OK;
}

enum fr_status fr_recording_replay(struct fr_recording *g, struct fr_err *err) {
  struct fr_ctx *c = g->c;
  if (c->st != FR_OK)
    return fr_ctx_status(c, err);
  struct fr_err e = {{0}};
  enum fr_status rc = c->be->graph_replay(c->bctx, g->g, &e);
  if (rc != FR_OK) {
    fr_ctx_fail(c, rc, "%s", e.msg);
    return fr_errf(err, rc, "%s", e.msg);
  }
  return FR_OK;
}

void fr_recording_free(struct fr_recording *g) {
  if (!g)
    return;
  g->c->be->graph_free(g->c->bctx, g->g);
  fr_free(g);
}

enum fr_status fr_ctx_write(struct fr_ctx *c, struct fr_tensor *dst, const struct fr_tensor *src,
                            struct fr_err *err) {
  char s1[96], s2[96];
  if (c->st != FR_OK)
    return fr_ctx_status(c, err);
  if (!dst || !src || dst->dev != c->be->dev || dst->dtype != c->dtype || src->dev != FR_DEV_CPU ||
      !fr_tensor_same_shape(dst, src))
    return fr_errf(
        err, FR_E_INVALID, "fr_ctx_write: %s into %s: expected a host tensor of the destination's shape",
        src ? fr_shape_str(src, s1, sizeof s1) : "NULL", dst ? fr_shape_str(dst, s2, sizeof s2) : "NULL");
  struct fr_tensor *tmp = fr_ctx_upload(c, src);
  if (!tmp)
    return fr_ctx_status(c, err);
  struct fr_err e = {{0}};
  enum fr_status rc = c->be->unary(c->bctx, FR_UNARY_COPY, dst, tmp, 0.0f, 0.0f, &e);
  fr_tensor_free(tmp);
  if (rc != FR_OK) {
    fr_ctx_fail(c, rc, "fr_ctx_write: %s", e.msg);
    return fr_errf(err, rc, "fr_ctx_write: %s", e.msg);
  }
  return FR_OK;
}

/* ---- helpers ---- */

#define FR__SHAPE(t, buf) fr_shape_str((t), (buf), sizeof(buf))

/* Records "op: <backend message>" for a failed backend call and frees y. */
static struct fr_tensor *fr__backend_failed(struct fr_ctx *c, const char *op, enum fr_status rc,
                                            struct fr_err *e, struct fr_tensor *y) {
  fr_tensor_free(y);
  fr_ctx_fail(c, rc, "%s: %s", op, e->msg);
  return NULL;
}

/* Step 1: true when the op must return NULL (failed context or a missing required input). */
static bool fr__skip(struct fr_ctx *c, const char *op, int n, const struct fr_tensor *const *ts,
                     const char *const *names) {
  if (c->st != FR_OK)
    return true;
  for (int i = 0; i < n; i++) {
    if (!ts[i]) {
      fr_ctx_fail(c, FR_E_INVALID, "%s: input %s is NULL", op, names[i]);
      return true;
    }
  }
  return false;
}
#define FR__SKIP(c, op, ...)                                                                                 \
  fr__skip((c), #op, (int)(sizeof((const struct fr_tensor *[]){__VA_ARGS__}) / sizeof(void *)),              \
           (const struct fr_tensor *const[]){__VA_ARGS__}, fr__names_##op)

/* A float input must be in the compute dtype on the context's device. */
static bool fr__check_float(struct fr_ctx *c, const char *op, const char *name, const struct fr_tensor *t) {
  if (!t)
    return true;
  if (t->dtype != c->dtype || t->dev != c->be->dev) {
    char s[96];
    fr_ctx_fail(c, FR_E_INVALID, "%s: %s %s is %s on %s, expected %s on %s (use fr_ctx_weight/fr_ctx_upload)",
                op, name, FR__SHAPE(t, s), fr_dtype_name(t->dtype), t->dev == FR_DEV_CPU ? "cpu" : "cuda",
                fr_dtype_name(c->dtype), c->be->name);
    return false;
  }
  return true;
}

/* True for a weight the CPU backend keeps 16-bit (fr_backend.weight: F16/BF16 matrices and kernels). */
static bool fr__half_weight(const struct fr_ctx *c, const struct fr_tensor *t) {
  return c->be->dev == FR_DEV_CPU && t->dev == FR_DEV_CPU && c->dtype == FR_F32 &&
         (t->dtype == FR_F16 || t->dtype == FR_BF16);
}

/* A weight operand (linear and conv2d w, the embedding table, a slice's input): the compute dtype, or a
 * 16-bit weight on the CPU, which these ops convert in panels as they go. */
static bool fr__check_weight(struct fr_ctx *c, const char *op, const char *name, const struct fr_tensor *t) {
  return (t && fr__half_weight(c, t)) || fr__check_float(c, op, name, t);
}

/* For ops without a 16-bit path: a 16-bit CPU weight as a temporary F32 copy in *tmp (caller frees it),
 * anything else as it is. NULL (context failed) when out of memory. */
static const struct fr_tensor *fr__widen(struct fr_ctx *c, const struct fr_tensor *t,
                                         struct fr_tensor **tmp) {
  *tmp = NULL;
  if (!t || !fr__half_weight(c, t))
    return t;
  return *tmp = fr_ctx_upload(c, t);
}

static struct fr_tensor *fr__alloc(struct fr_ctx *c, const char *op, enum fr_dtype dt, int ndim,
                                   const int64_t *shape) {
  struct fr_tensor *y = c->be->alloc(c->bctx, dt, ndim, shape);
  if (!y) {
    char s[96];
    fr_ctx_fail(c, FR_E_NOMEM, "%s: out of memory for output %s %s", op, fr_dtype_name(dt),
                fr_shape_str_dims(ndim, shape, s, sizeof s));
  }
  return y;
}

static bool fr__is_vec(const struct fr_tensor *t, int64_t n) {
  return t->ndim == 1 && t->shape[0] == n;
}

/* ---- context memory ---- */

static struct fr_tensor *fr__weight(struct fr_ctx *c, const struct fr_tensor *host, bool borrow) {
  if (c->st != FR_OK)
    return NULL;
  if (!host) {
    fr_ctx_fail(c, FR_E_INVALID, "fr_ctx_weight: host tensor is NULL");
    return NULL;
  }
  if (host->dev != FR_DEV_CPU || (host->dtype != FR_F32 && host->dtype != FR_F16 && host->dtype != FR_BF16)) {
    char s[96];
    fr_ctx_fail(
        c, FR_E_UNSUPPORTED, "fr_ctx_weight: weight %s is %s%s; expected a host F32, F16 or BF16 tensor",
        FR__SHAPE(host, s), fr_dtype_name(host->dtype), host->dev != FR_DEV_CPU ? " on a device" : "");
    return NULL;
  }
  struct fr_tensor *out = NULL;
  struct fr_err e = {{0}};
  enum fr_status rc = c->be->weight(c->bctx, host, borrow, &out, &e);
  if (rc != FR_OK)
    return fr__backend_failed(c, "fr_ctx_weight", rc, &e, NULL);
  return out;
}

struct fr_tensor *fr_ctx_weight(struct fr_ctx *c, const struct fr_tensor *host) {
  return fr__weight(c, host, false);
}
struct fr_tensor *fr_ctx_weight_view(struct fr_ctx *c, const struct fr_tensor *host) {
  return fr__weight(c, host, true);
}

struct fr_tensor *fr_ctx_upload(struct fr_ctx *c, const struct fr_tensor *host) {
  if (c->st != FR_OK)
    return NULL;
  if (!host) {
    fr_ctx_fail(c, FR_E_INVALID, "fr_ctx_upload: host tensor is NULL");
    return NULL;
  }
  enum fr_dtype dt = host->dtype;
  if (host->dev != FR_DEV_CPU ||
      !(dt == FR_F32 || dt == FR_F16 || dt == FR_BF16 || dt == FR_F64 || dt == FR_I32 || dt == FR_I64)) {
    char s[96];
    fr_ctx_fail(c, FR_E_UNSUPPORTED,
                "fr_ctx_upload: tensor %s is %s%s; expected a host float or I32/I64 tensor",
                FR__SHAPE(host, s), fr_dtype_name(dt), host->dev != FR_DEV_CPU ? " on a device" : "");
    return NULL;
  }
  struct fr_tensor *out = NULL;
  struct fr_err e = {{0}};
  enum fr_status rc = c->be->upload(c->bctx, host, &out, &e);
  if (rc != FR_OK)
    return fr__backend_failed(c, "fr_ctx_upload", rc, &e, NULL);
  return out;
}

struct fr_tensor *fr_ctx_download(struct fr_ctx *c, const struct fr_tensor *t) {
  if (c->st != FR_OK)
    return NULL;
  if (!t) {
    fr_ctx_fail(c, FR_E_INVALID, "fr_ctx_download: tensor is NULL");
    return NULL;
  }
  if (t->dev != c->be->dev) {
    char s[96];
    fr_ctx_fail(c, FR_E_INVALID, "fr_ctx_download: tensor %s is not on %s", FR__SHAPE(t, s), c->be->name);
    return NULL;
  }
  struct fr_tensor *out = NULL;
  struct fr_err e = {{0}};
  enum fr_status rc = c->be->download(c->bctx, t, &out, &e);
  if (rc != FR_OK)
    return fr__backend_failed(c, "fr_ctx_download", rc, &e, NULL);
  return out;
}

/* ---- linear algebra ---- */

static const char *const fr__names_fr_linear[] = {"x", "w"};
struct fr_tensor *fr_linear(struct fr_ctx *c, const struct fr_tensor *x, const struct fr_tensor *w,
                            const struct fr_tensor *b) {
  const char *op = "fr_linear";
  if (FR__SKIP(c, fr_linear, x, w))
    return NULL;
  if (!fr__check_float(c, op, "x", x) || !fr__check_weight(c, op, "w", w) || !fr__check_float(c, op, "b", b))
    return NULL;
  char s1[96], s2[96];
  if (x->ndim < 1 || w->ndim != 2 || w->shape[1] != x->shape[x->ndim - 1]) {
    fr_ctx_fail(c, FR_E_SHAPE, "fr_linear: weight %s does not fit input %s (expected [N, %lld])",
                FR__SHAPE(w, s1), FR__SHAPE(x, s2), x->ndim ? (long long)x->shape[x->ndim - 1] : 0LL);
    return NULL;
  }
  if (b && !fr__is_vec(b, w->shape[0])) {
    fr_ctx_fail(c, FR_E_SHAPE, "fr_linear: bias %s does not fit weight %s (expected [%lld])",
                FR__SHAPE(b, s1), FR__SHAPE(w, s2), (long long)w->shape[0]);
    return NULL;
  }
  int64_t shape[FR_MAX_DIMS];
  memcpy(shape, x->shape, sizeof shape);
  shape[x->ndim - 1] = w->shape[0];
  struct fr_tensor *y = fr__alloc(c, op, c->dtype, x->ndim, shape);
  if (!y)
    return NULL;
  struct fr_err e = {{0}};
  enum fr_status rc = c->be->linear(c->bctx, y, x, w, b, &e);
  return rc == FR_OK ? y : fr__backend_failed(c, op, rc, &e, y);
}

static const char *const fr__names_fr_matmul[] = {"a", "b"};
struct fr_tensor *fr_matmul(struct fr_ctx *c, const struct fr_tensor *a, const struct fr_tensor *b) {
  const char *op = "fr_matmul";
  if (FR__SKIP(c, fr_matmul, a, b))
    return NULL;
  if (!fr__check_float(c, op, "a", a) || !fr__check_float(c, op, "b", b))
    return NULL;
  bool ok = a->ndim >= 2 && b->ndim == a->ndim && a->shape[a->ndim - 1] == b->shape[b->ndim - 2];
  for (int i = 0; ok && i < a->ndim - 2; i++)
    ok = a->shape[i] == b->shape[i];
  if (!ok) {
    char s1[96], s2[96];
    fr_ctx_fail(c, FR_E_SHAPE, "fr_matmul: b %s does not fit a %s (expected [..., M, K] x [..., K, N])",
                FR__SHAPE(b, s1), FR__SHAPE(a, s2));
    return NULL;
  }
  int64_t shape[FR_MAX_DIMS];
  memcpy(shape, a->shape, sizeof shape);
  shape[a->ndim - 1] = b->shape[b->ndim - 1];
  struct fr_tensor *y = fr__alloc(c, op, c->dtype, a->ndim, shape);
  if (!y)
    return NULL;
  struct fr_err e = {{0}};
  enum fr_status rc = c->be->matmul(c->bctx, y, a, b, &e);
  return rc == FR_OK ? y : fr__backend_failed(c, op, rc, &e, y);
}

static const char *const fr__names_fr_conv2d[] = {"x", "w"};
struct fr_tensor *fr_conv2d(struct fr_ctx *c, const struct fr_tensor *x, const struct fr_tensor *w,
                            const struct fr_tensor *b, int stride, int pad) {
  const char *op = "fr_conv2d";
  if (FR__SKIP(c, fr_conv2d, x, w))
    return NULL;
  if (!fr__check_float(c, op, "x", x) || !fr__check_weight(c, op, "w", w) || !fr__check_float(c, op, "b", b))
    return NULL;
  char s1[96], s2[96];
  if (x->ndim != 4 || w->ndim != 4 || w->shape[1] != x->shape[1]) {
    fr_ctx_fail(c, FR_E_SHAPE,
                "fr_conv2d: weight %s does not fit input %s (expected [O, C, kh, kw] x [B, C, H, W])",
                FR__SHAPE(w, s1), FR__SHAPE(x, s2));
    return NULL;
  }
  if (stride < 1 || pad < 0) {
    fr_ctx_fail(c, FR_E_INVALID, "fr_conv2d: stride %d / pad %d: need stride >= 1 and pad >= 0", stride, pad);
    return NULL;
  }
  int64_t ho = (x->shape[2] + 2 * pad - w->shape[2]) / stride + 1;
  int64_t wo = (x->shape[3] + 2 * pad - w->shape[3]) / stride + 1;
  if (x->shape[2] + 2 * pad < w->shape[2] || x->shape[3] + 2 * pad < w->shape[3] || ho < 1 || wo < 1) {
    fr_ctx_fail(c, FR_E_SHAPE,
                "fr_conv2d: weight %s does not fit input %s: kernel larger than padded input (pad %d)",
                FR__SHAPE(w, s1), FR__SHAPE(x, s2), pad);
    return NULL;
  }
  if (b && !fr__is_vec(b, w->shape[0])) {
    fr_ctx_fail(c, FR_E_SHAPE, "fr_conv2d: bias %s does not fit weight %s (expected [%lld])",
                FR__SHAPE(b, s1), FR__SHAPE(w, s2), (long long)w->shape[0]);
    return NULL;
  }
  struct fr_tensor *y = fr__alloc(c, op, c->dtype, 4, (int64_t[]){x->shape[0], w->shape[0], ho, wo});
  if (!y)
    return NULL;
  struct fr_err e = {{0}};
  enum fr_status rc = c->be->conv2d(c->bctx, y, x, w, b, stride, pad, &e);
  return rc == FR_OK ? y : fr__backend_failed(c, op, rc, &e, y);
}

static const char *const fr__names_fr_attention[] = {"q", "k", "v"};
struct fr_tensor *fr_attention(struct fr_ctx *c, const struct fr_tensor *q, const struct fr_tensor *k,
                               const struct fr_tensor *v, int heads, bool causal) {
  const char *op = "fr_attention";
  if (FR__SKIP(c, fr_attention, q, k, v))
    return NULL;
  if (!fr__check_float(c, op, "q", q) || !fr__check_float(c, op, "k", k) || !fr__check_float(c, op, "v", v))
    return NULL;
  char s1[96], s2[96], s3[96];
  if (q->ndim != 3 || k->ndim != 3 || !fr_tensor_same_shape(k, v) || k->shape[0] != q->shape[0] ||
      k->shape[2] != q->shape[2] || k->shape[1] < 1) {
    fr_ctx_fail(
        c, FR_E_SHAPE,
        "fr_attention: q %s, k %s, v %s do not fit (expected [B, Tq, H*D], [B, Tk, H*D], [B, Tk, H*D])",
        FR__SHAPE(q, s1), FR__SHAPE(k, s2), FR__SHAPE(v, s3));
    return NULL;
  }
  if (heads < 1 || q->shape[2] % heads != 0) {
    fr_ctx_fail(c, FR_E_SHAPE, "fr_attention: %d heads do not divide q %s's last dim", heads,
                FR__SHAPE(q, s1));
    return NULL;
  }
  struct fr_tensor *y = fr__alloc(c, op, c->dtype, 3, q->shape);
  if (!y)
    return NULL;
  struct fr_err e = {{0}};
  enum fr_status rc = c->be->attention(c->bctx, y, q, k, v, heads, causal, &e);
  return rc == FR_OK ? y : fr__backend_failed(c, op, rc, &e, y);
}

/* ---- normalisation ---- */

static const char *const fr__names_fr_group_norm[] = {"x"};
struct fr_tensor *fr_group_norm(struct fr_ctx *c, const struct fr_tensor *x, int groups,
                                const struct fr_tensor *gamma, const struct fr_tensor *beta, float eps,
                                bool silu) {
  const char *op = "fr_group_norm";
  if (FR__SKIP(c, fr_group_norm, x))
    return NULL;
  if (!fr__check_float(c, op, "x", x) || !fr__check_float(c, op, "gamma", gamma) ||
      !fr__check_float(c, op, "beta", beta))
    return NULL;
  char s1[96], s2[96];
  if (x->ndim < 2 || groups < 1 || x->shape[1] % groups != 0) {
    fr_ctx_fail(c, FR_E_SHAPE,
                "fr_group_norm: %d groups do not divide the channels of input %s (expected [B, C, ...])",
                groups, FR__SHAPE(x, s1));
    return NULL;
  }
  if ((gamma && !fr__is_vec(gamma, x->shape[1])) || (beta && !fr__is_vec(beta, x->shape[1]))) {
    const struct fr_tensor *bad = gamma && !fr__is_vec(gamma, x->shape[1]) ? gamma : beta;
    fr_ctx_fail(c, FR_E_SHAPE, "fr_group_norm: %s %s does not fit input %s (expected [%lld])",
                bad == gamma ? "gamma" : "beta", FR__SHAPE(bad, s1), FR__SHAPE(x, s2),
                (long long)x->shape[1]);
    return NULL;
  }
  struct fr_tensor *y = fr__alloc(c, op, c->dtype, x->ndim, x->shape);
  if (!y)
    return NULL;
  struct fr_err e = {{0}};
  enum fr_status rc = c->be->group_norm(c->bctx, y, x, groups, gamma, beta, eps, silu, &e);
  return rc == FR_OK ? y : fr__backend_failed(c, op, rc, &e, y);
}

static const char *const fr__names_fr_layer_norm[] = {"x"};
struct fr_tensor *fr_layer_norm(struct fr_ctx *c, const struct fr_tensor *x, const struct fr_tensor *gamma,
                                const struct fr_tensor *beta, float eps) {
  const char *op = "fr_layer_norm";
  if (FR__SKIP(c, fr_layer_norm, x))
    return NULL;
  if (!fr__check_float(c, op, "x", x) || !fr__check_float(c, op, "gamma", gamma) ||
      !fr__check_float(c, op, "beta", beta))
    return NULL;
  char s1[96], s2[96];
  if (x->ndim < 1) {
    fr_ctx_fail(c, FR_E_SHAPE, "fr_layer_norm: input %s has no last dim", FR__SHAPE(x, s1));
    return NULL;
  }
  int64_t C = x->shape[x->ndim - 1];
  if ((gamma && !fr__is_vec(gamma, C)) || (beta && !fr__is_vec(beta, C))) {
    const struct fr_tensor *bad = gamma && !fr__is_vec(gamma, C) ? gamma : beta;
    fr_ctx_fail(c, FR_E_SHAPE, "fr_layer_norm: %s %s does not fit input %s (expected [%lld])",
                bad == gamma ? "gamma" : "beta", FR__SHAPE(bad, s1), FR__SHAPE(x, s2), (long long)C);
    return NULL;
  }
  struct fr_tensor *y = fr__alloc(c, op, c->dtype, x->ndim, x->shape);
  if (!y)
    return NULL;
  struct fr_err e = {{0}};
  enum fr_status rc = c->be->layer_norm(c->bctx, y, x, gamma, beta, eps, &e);
  return rc == FR_OK ? y : fr__backend_failed(c, op, rc, &e, y);
}

static const char *const fr__names_fr_softmax[] = {"x"};
struct fr_tensor *fr_softmax(struct fr_ctx *c, const struct fr_tensor *x) {
  const char *op = "fr_softmax";
  if (FR__SKIP(c, fr_softmax, x))
    return NULL;
  if (!fr__check_float(c, op, "x", x))
    return NULL;
  if (x->ndim < 1) {
    char s1[96];
    fr_ctx_fail(c, FR_E_SHAPE, "fr_softmax: input %s has no last dim", FR__SHAPE(x, s1));
    return NULL;
  }
  struct fr_tensor *y = fr__alloc(c, op, c->dtype, x->ndim, x->shape);
  if (!y)
    return NULL;
  struct fr_err e = {{0}};
  enum fr_status rc = c->be->softmax(c->bctx, y, x, &e);
  return rc == FR_OK ? y : fr__backend_failed(c, op, rc, &e, y);
}

/* ---- activations ---- */

static struct fr_tensor *fr__unary(struct fr_ctx *c, const char *op, enum fr_unary_op u,
                                   const struct fr_tensor *x, float p0, float p1) {
  if (c->st != FR_OK)
    return NULL;
  if (!x) {
    fr_ctx_fail(c, FR_E_INVALID, "%s: input x is NULL", op);
    return NULL;
  }
  if (!fr__check_float(c, op, "x", x))
    return NULL;
  struct fr_tensor *y = fr__alloc(c, op, c->dtype, x->ndim, x->shape);
  if (!y)
    return NULL;
  struct fr_err e = {{0}};
  enum fr_status rc = c->be->unary(c->bctx, u, y, x, p0, p1, &e);
  return rc == FR_OK ? y : fr__backend_failed(c, op, rc, &e, y);
}

struct fr_tensor *fr_silu(struct fr_ctx *c, const struct fr_tensor *x) {
  return fr__unary(c, "fr_silu", FR_UNARY_SILU, x, 0, 0);
}
struct fr_tensor *fr_gelu(struct fr_ctx *c, const struct fr_tensor *x) {
  return fr__unary(c, "fr_gelu", FR_UNARY_GELU, x, 0, 0);
}
struct fr_tensor *fr_gelu_tanh(struct fr_ctx *c, const struct fr_tensor *x) {
  return fr__unary(c, "fr_gelu_tanh", FR_UNARY_GELU_TANH, x, 0, 0);
}
struct fr_tensor *fr_quick_gelu(struct fr_ctx *c, const struct fr_tensor *x) {
  return fr__unary(c, "fr_quick_gelu", FR_UNARY_QUICK_GELU, x, 0, 0);
}
struct fr_tensor *fr_leaky_relu(struct fr_ctx *c, const struct fr_tensor *x, float slope) {
  return fr__unary(c, "fr_leaky_relu", FR_UNARY_LEAKY_RELU, x, slope, 0);
}

struct fr_tensor *fr_affine(struct fr_ctx *c, const struct fr_tensor *x, float scale, float shift) {
  return fr__unary(c, "fr_affine", FR_UNARY_AFFINE, x, scale, shift);
}
struct fr_tensor *fr_copy(struct fr_ctx *c, const struct fr_tensor *x) {
  return fr__unary(c, "fr_copy", FR_UNARY_COPY, x, 0, 0);
}

static const char *const fr__names_fr_geglu[] = {"x"};
struct fr_tensor *fr_geglu(struct fr_ctx *c, const struct fr_tensor *x) {
  const char *op = "fr_geglu";
  if (FR__SKIP(c, fr_geglu, x))
    return NULL;
  if (!fr__check_float(c, op, "x", x))
    return NULL;
  if (x->ndim < 1 || x->shape[x->ndim - 1] % 2 != 0) {
    char s1[96];
    fr_ctx_fail(c, FR_E_SHAPE, "fr_geglu: input %s: last dim must be even ([..., 2N])", FR__SHAPE(x, s1));
    return NULL;
  }
  int64_t shape[FR_MAX_DIMS];
  memcpy(shape, x->shape, sizeof shape);
  shape[x->ndim - 1] /= 2;
  struct fr_tensor *y = fr__alloc(c, op, c->dtype, x->ndim, shape);
  if (!y)
    return NULL;
  struct fr_err e = {{0}};
  enum fr_status rc = c->be->geglu(c->bctx, y, x, &e);
  return rc == FR_OK ? y : fr__backend_failed(c, op, rc, &e, y);
}

/* ---- elementwise arithmetic with broadcasting ---- */

/* NumPy broadcasting of a and b: output shape (ndim = max) and the merged description the backend walks.
 * Returns false when a dim pair is neither equal nor 1. */
static bool fr__broadcast(const struct fr_tensor *a, const struct fr_tensor *b, int *ndim, int64_t *shape,
                          struct fr_bcast *bc) {
  int n = a->ndim > b->ndim ? a->ndim : b->ndim;
  int64_t da[FR_MAX_DIMS], db[FR_MAX_DIMS];
  for (int i = 0; i < n; i++) {
    int ia = i - (n - a->ndim), ib = i - (n - b->ndim);
    da[i] = ia >= 0 ? a->shape[ia] : 1;
    db[i] = ib >= 0 ? b->shape[ib] : 1;
    if (da[i] != db[i] && da[i] != 1 && db[i] != 1)
      return false;
    shape[i] = da[i] == 1 ? db[i] : da[i];
  }
  *ndim = n;
  /* Element strides of each operand in its own contiguous layout, 0 where broadcast. */
  int64_t sa[FR_MAX_DIMS], sb[FR_MAX_DIMS], ra = 1, rb = 1;
  for (int i = n - 1; i >= 0; i--) {
    sa[i] = da[i] == 1 ? 0 : ra;
    sb[i] = db[i] == 1 ? 0 : rb;
    ra *= da[i];
    rb *= db[i];
  }
  /* Merge neighbouring dims that walk both operands contiguously (or both broadcast the same way), and drop
   * dims of size 1, so the common cases become 1-3 dims with a long inner loop. */
  bc->ndim = 0;
  for (int i = 0; i < n; i++) {
    if (shape[i] == 1)
      continue;
    int k = bc->ndim;
    if (k > 0 && bc->sa[k - 1] == sa[i] * shape[i] && bc->sb[k - 1] == sb[i] * shape[i]) {
      bc->shape[k - 1] *= shape[i];
      bc->sa[k - 1] = sa[i];
      bc->sb[k - 1] = sb[i];
      continue;
    }
    bc->shape[k] = shape[i];
    bc->sa[k] = sa[i];
    bc->sb[k] = sb[i];
    bc->ndim++;
  }
  if (bc->ndim == 0) { /* all ones: one element */
    bc->ndim = 1;
    bc->shape[0] = 1;
    bc->sa[0] = bc->sb[0] = 1;
  }
  return true;
}

static struct fr_tensor *fr__binary_run(struct fr_ctx *c, const char *op, enum fr_binary_op bop,
                                        struct fr_tensor *inplace, const struct fr_tensor *a,
                                        const struct fr_tensor *b);
static struct fr_tensor *fr__binary(struct fr_ctx *c, const char *op, enum fr_binary_op bop,
                                    struct fr_tensor *inplace, const struct fr_tensor *a,
                                    const struct fr_tensor *b) {
  if (c->st != FR_OK)
    return NULL;
  if (!a || !b) {
    fr_ctx_fail(c, FR_E_INVALID, "%s: input %s is NULL", op, !a ? "a" : "b");
    return NULL;
  }
  struct fr_tensor *wa = NULL, *wb = NULL; /* F32 copies of 16-bit weight operands (a position table) */
  if (!inplace && !(a = fr__widen(c, a, &wa)))
    return NULL;
  if (!(b = fr__widen(c, b, &wb))) {
    fr_tensor_free(wa);
    return NULL;
  }
  struct fr_tensor *y = fr__binary_run(c, op, bop, inplace, a, b);
  fr_tensor_free(wa);
  fr_tensor_free(wb);
  return y;
}

static struct fr_tensor *fr__binary_run(struct fr_ctx *c, const char *op, enum fr_binary_op bop,
                                        struct fr_tensor *inplace, const struct fr_tensor *a,
                                        const struct fr_tensor *b) {
  if (!fr__check_float(c, op, "a", a) || !fr__check_float(c, op, "b", b))
    return NULL;
  int ndim;
  int64_t shape[FR_MAX_DIMS];
  struct fr_bcast bc;
  char s1[96], s2[96];
  if (!fr__broadcast(a, b, &ndim, shape, &bc)) {
    fr_ctx_fail(c, FR_E_SHAPE, "%s: shapes %s and %s do not broadcast", op, FR__SHAPE(a, s1),
                FR__SHAPE(b, s2));
    return NULL;
  }
  struct fr_tensor *y;
  if (inplace) {
    if (ndim != a->ndim || memcmp(shape, a->shape, sizeof(int64_t) * (size_t)ndim) != 0) {
      fr_ctx_fail(c, FR_E_SHAPE, "%s: b %s does not broadcast to a %s", op, FR__SHAPE(b, s1),
                  FR__SHAPE(a, s2));
      return NULL;
    }
    y = inplace;
  } else {
    y = fr__alloc(c, op, c->dtype, ndim, shape);
    if (!y)
      return NULL;
  }
  struct fr_err e = {{0}};
  enum fr_status rc = c->be->binary(c->bctx, bop, y, a, b, &bc, &e);
  if (rc != FR_OK)
    return fr__backend_failed(c, op, rc, &e, inplace ? NULL : y);
  return y;
}

struct fr_tensor *fr_add(struct fr_ctx *c, const struct fr_tensor *a, const struct fr_tensor *b) {
  return fr__binary(c, "fr_add", FR_BINARY_ADD, NULL, a, b);
}
struct fr_tensor *fr_sub(struct fr_ctx *c, const struct fr_tensor *a, const struct fr_tensor *b) {
  return fr__binary(c, "fr_sub", FR_BINARY_SUB, NULL, a, b);
}
struct fr_tensor *fr_mul(struct fr_ctx *c, const struct fr_tensor *a, const struct fr_tensor *b) {
  return fr__binary(c, "fr_mul", FR_BINARY_MUL, NULL, a, b);
}
struct fr_tensor *fr_add_inplace(struct fr_ctx *c, struct fr_tensor *a, const struct fr_tensor *b) {
  if (c->st == FR_OK && !a) {
    fr_ctx_fail(c, FR_E_INVALID, "fr_add_inplace: input a is NULL");
    return NULL;
  }
  return fr__binary(c, "fr_add_inplace", FR_BINARY_ADD, a, a, b);
}

/* ---- shape and data movement ---- */

/* Resolves a possibly negative dim against ndim; -1 when out of range. */
static int fr__dim(int dim, int ndim) {
  if (dim < 0)
    dim += ndim;
  return dim >= 0 && dim < ndim ? dim : -1;
}

struct fr_tensor *fr_concat(struct fr_ctx *c, const struct fr_tensor *const *xs, int n, int dim) {
  const char *op = "fr_concat";
  if (c->st != FR_OK)
    return NULL;
  if (!xs || n < 1) {
    fr_ctx_fail(c, FR_E_INVALID, "fr_concat: needs at least one tensor (n = %d)", n);
    return NULL;
  }
  for (int i = 0; i < n; i++) {
    if (!xs[i]) {
      fr_ctx_fail(c, FR_E_INVALID, "fr_concat: input %d is NULL", i);
      return NULL;
    }
  }
  /* 16-bit weights (a token table with textual-inversion rows appended) are widened to F32 first */
  bool widen = false;
  for (int i = 0; i < n; i++)
    widen = widen || fr__half_weight(c, xs[i]);
  if (widen) {
    const struct fr_tensor **ws = fr_calloc((size_t)n, sizeof *ws);
    struct fr_tensor **tmp = fr_calloc((size_t)n, sizeof *tmp);
    struct fr_tensor *y = NULL;
    bool ok = ws && tmp;
    if (!ok)
      fr_ctx_fail(c, FR_E_NOMEM, "fr_concat: out of memory");
    for (int i = 0; ok && i < n; i++)
      ok = (ws[i] = fr__widen(c, xs[i], &tmp[i])) != NULL;
    if (ok)
      y = fr_concat(c, ws, n, dim);
    for (int i = 0; tmp && i < n; i++)
      fr_tensor_free(tmp[i]);
    fr_free(tmp);
    fr_free((void *)ws);
    return y;
  }
  for (int i = 0; i < n; i++)
    if (!fr__check_float(c, op, "input", xs[i]))
      return NULL;
  char s1[96], s2[96];
  int d = fr__dim(dim, xs[0]->ndim);
  if (d < 0) {
    fr_ctx_fail(c, FR_E_SHAPE, "fr_concat: dim %d out of range for %s", dim, FR__SHAPE(xs[0], s1));
    return NULL;
  }
  int64_t shape[FR_MAX_DIMS];
  memcpy(shape, xs[0]->shape, sizeof shape);
  for (int i = 1; i < n; i++) {
    bool ok = xs[i]->ndim == xs[0]->ndim;
    for (int j = 0; ok && j < xs[0]->ndim; j++)
      ok = j == d || xs[i]->shape[j] == xs[0]->shape[j];
    if (!ok) {
      fr_ctx_fail(c, FR_E_SHAPE, "fr_concat: input %d %s does not fit input 0 %s along dim %d", i,
                  FR__SHAPE(xs[i], s1), FR__SHAPE(xs[0], s2), d);
      return NULL;
    }
    shape[d] += xs[i]->shape[d];
  }
  struct fr_tensor *y = fr__alloc(c, op, c->dtype, xs[0]->ndim, shape);
  if (!y)
    return NULL;
  struct fr_err e = {{0}};
  enum fr_status rc = c->be->concat(c->bctx, y, xs, n, d, &e);
  return rc == FR_OK ? y : fr__backend_failed(c, op, rc, &e, y);
}

static const char *const fr__names_fr_slice[] = {"x"};
struct fr_tensor *fr_slice(struct fr_ctx *c, const struct fr_tensor *x, int dim, int64_t start, int64_t len) {
  const char *op = "fr_slice";
  if (FR__SKIP(c, fr_slice, x))
    return NULL;
  if (!fr__check_weight(c, op, "x", x))
    return NULL;
  char s1[96];
  int d = fr__dim(dim, x->ndim);
  if (d < 0 || start < 0 || len < 0 || start + len > x->shape[d]) {
    fr_ctx_fail(c, FR_E_SHAPE, "fr_slice: [%lld:%lld] along dim %d is outside input %s", (long long)start,
                (long long)(start + len), dim, FR__SHAPE(x, s1));
    return NULL;
  }
  int64_t shape[FR_MAX_DIMS];
  memcpy(shape, x->shape, sizeof shape);
  shape[d] = len;
  /* a slice of a 16-bit weight (OpenCLIP's fused in_proj) is a 16-bit weight */
  struct fr_tensor *y = fr__alloc(c, op, fr__half_weight(c, x) ? x->dtype : c->dtype, x->ndim, shape);
  if (!y)
    return NULL;
  struct fr_err e = {{0}};
  enum fr_status rc = c->be->slice(c->bctx, y, x, d, start, &e);
  return rc == FR_OK ? y : fr__backend_failed(c, op, rc, &e, y);
}

static const char *const fr__names_fr_permute[] = {"x"};
static struct fr_tensor *fr__permute(struct fr_ctx *c, const struct fr_tensor *x, const int *perm) {
  const char *op = "fr_permute";
  if (FR__SKIP(c, fr_permute, x))
    return NULL;
  if (!fr__check_float(c, op, "x", x))
    return NULL;
  char s1[96];
  bool seen[FR_MAX_DIMS] = {false};
  bool ok = perm != NULL;
  for (int i = 0; ok && i < x->ndim; i++) {
    ok = perm[i] >= 0 && perm[i] < x->ndim && !seen[perm[i]];
    if (ok)
      seen[perm[i]] = true;
  }
  if (!ok) {
    fr_ctx_fail(c, FR_E_INVALID, "fr_permute: perm is not a permutation of the %d dims of %s", x->ndim,
                FR__SHAPE(x, s1));
    return NULL;
  }
  int64_t shape[FR_MAX_DIMS];
  for (int i = 0; i < x->ndim; i++)
    shape[i] = x->shape[perm[i]];
  struct fr_tensor *y = fr__alloc(c, op, c->dtype, x->ndim, shape);
  if (!y)
    return NULL;
  struct fr_err e = {{0}};
  enum fr_status rc = c->be->permute(c->bctx, y, x, perm, &e);
  return rc == FR_OK ? y : fr__backend_failed(c, op, rc, &e, y);
}

struct fr_tensor *fr_permute(struct fr_ctx *c, const struct fr_tensor *x, const int *perm) {
  if (c->st != FR_OK)
    return NULL;
  struct fr_tensor *wx = NULL; /* a 16-bit weight (a stored-transposed projection) permutes as F32 */
  const struct fr_tensor *in = fr__widen(c, x, &wx);
  struct fr_tensor *y = c->st == FR_OK ? fr__permute(c, in, perm) : NULL;
  fr_tensor_free(wx);
  return y;
}

static const char *const fr__names_fr_pad2d[] = {"x"};
struct fr_tensor *fr_pad2d(struct fr_ctx *c, const struct fr_tensor *x, int left, int right, int top,
                           int bottom, float value) {
  const char *op = "fr_pad2d";
  if (FR__SKIP(c, fr_pad2d, x))
    return NULL;
  if (!fr__check_float(c, op, "x", x))
    return NULL;
  char s1[96];
  if (x->ndim < 2 || left < 0 || right < 0 || top < 0 || bottom < 0) {
    fr_ctx_fail(c, FR_E_INVALID, "fr_pad2d: pads (%d, %d, %d, %d) on input %s: need >= 2 dims and pads >= 0",
                left, right, top, bottom, FR__SHAPE(x, s1));
    return NULL;
  }
  int64_t shape[FR_MAX_DIMS];
  memcpy(shape, x->shape, sizeof shape);
  shape[x->ndim - 2] += top + bottom;
  shape[x->ndim - 1] += left + right;
  struct fr_tensor *y = fr__alloc(c, op, c->dtype, x->ndim, shape);
  if (!y)
    return NULL;
  struct fr_err e = {{0}};
  enum fr_status rc = c->be->pad2d(c->bctx, y, x, left, top, value, &e);
  return rc == FR_OK ? y : fr__backend_failed(c, op, rc, &e, y);
}

static const char *const fr__names_fr_upsample_nearest2x[] = {"x"};
struct fr_tensor *fr_upsample_nearest2x(struct fr_ctx *c, const struct fr_tensor *x) {
  const char *op = "fr_upsample_nearest2x";
  if (FR__SKIP(c, fr_upsample_nearest2x, x))
    return NULL;
  if (!fr__check_float(c, op, "x", x))
    return NULL;
  if (x->ndim < 2) {
    char s1[96];
    fr_ctx_fail(c, FR_E_SHAPE, "fr_upsample_nearest2x: input %s needs [..., H, W]", FR__SHAPE(x, s1));
    return NULL;
  }
  int64_t shape[FR_MAX_DIMS];
  memcpy(shape, x->shape, sizeof shape);
  shape[x->ndim - 2] *= 2;
  shape[x->ndim - 1] *= 2;
  struct fr_tensor *y = fr__alloc(c, op, c->dtype, x->ndim, shape);
  if (!y)
    return NULL;
  struct fr_err e = {{0}};
  enum fr_status rc = c->be->upsample_nearest2x(c->bctx, y, x, &e);
  return rc == FR_OK ? y : fr__backend_failed(c, op, rc, &e, y);
}

static const char *const fr__names_fr_embedding[] = {"ids", "table"};
struct fr_tensor *fr_embedding(struct fr_ctx *c, const struct fr_tensor *ids, const struct fr_tensor *table) {
  const char *op = "fr_embedding";
  if (FR__SKIP(c, fr_embedding, ids, table))
    return NULL;
  if (!fr__check_weight(c, op, "table", table))
    return NULL;
  char s1[96], s2[96];
  if ((ids->dtype != FR_I32 && ids->dtype != FR_I64) || ids->dev != c->be->dev) {
    fr_ctx_fail(c, FR_E_INVALID, "fr_embedding: ids %s are %s, expected I32 or I64 on %s", FR__SHAPE(ids, s1),
                fr_dtype_name(ids->dtype), c->be->name);
    return NULL;
  }
  if (table->ndim != 2 || ids->ndim + 1 > FR_MAX_DIMS) {
    fr_ctx_fail(c, FR_E_SHAPE, "fr_embedding: table %s does not fit ids %s (expected table [V, D])",
                FR__SHAPE(table, s1), FR__SHAPE(ids, s2));
    return NULL;
  }
  int64_t shape[FR_MAX_DIMS];
  memcpy(shape, ids->shape, sizeof shape);
  shape[ids->ndim] = table->shape[1];
  struct fr_tensor *y = fr__alloc(c, op, c->dtype, ids->ndim + 1, shape);
  if (!y)
    return NULL;
  struct fr_err e = {{0}};
  enum fr_status rc = c->be->embedding(c->bctx, y, ids, table, &e);
  return rc == FR_OK ? y : fr__backend_failed(c, op, rc, &e, y);
}

static const char *const fr__names_fr_gather_rows[] = {"x"};
struct fr_tensor *fr_gather_rows(struct fr_ctx *c, const struct fr_tensor *x, const int64_t *index) {
  const char *op = "fr_gather_rows";
  if (FR__SKIP(c, fr_gather_rows, x))
    return NULL;
  if (!fr__check_float(c, op, "x", x))
    return NULL;
  char s1[96];
  if (x->ndim != 3) {
    fr_ctx_fail(c, FR_E_SHAPE, "fr_gather_rows: input %s is not [B, T, D]", FR__SHAPE(x, s1));
    return NULL;
  }
  if (!index) {
    fr_ctx_fail(c, FR_E_INVALID, "fr_gather_rows: index is NULL");
    return NULL;
  }
  for (int64_t i = 0; i < x->shape[0]; i++) {
    if (index[i] < 0 || index[i] >= x->shape[1]) {
      fr_ctx_fail(c, FR_E_INVALID, "fr_gather_rows: index[%lld] = %lld is outside [0, %lld) of input %s",
                  (long long)i, (long long)index[i], (long long)x->shape[1], FR__SHAPE(x, s1));
      return NULL;
    }
  }
  struct fr_tensor *y = fr__alloc(c, op, c->dtype, 2, (int64_t[]){x->shape[0], x->shape[2]});
  if (!y)
    return NULL;
  struct fr_err e = {{0}};
  enum fr_status rc = c->be->gather_rows(c->bctx, y, x, index, &e);
  return rc == FR_OK ? y : fr__backend_failed(c, op, rc, &e, y);
}

static const char *const fr__names_fr_timestep_embedding[] = {"t"};
struct fr_tensor *fr_timestep_embedding(struct fr_ctx *c, const struct fr_tensor *t, int dim,
                                        bool flip_sin_to_cos, float downscale_freq_shift, float max_period) {
  const char *op = "fr_timestep_embedding";
  if (FR__SKIP(c, fr_timestep_embedding, t))
    return NULL;
  if (!fr__check_float(c, op, "t", t))
    return NULL;
  char s1[96];
  if (t->ndim != 1 || dim < 2 || (float)(dim / 2) - downscale_freq_shift == 0.0f) {
    fr_ctx_fail(c, FR_E_INVALID, "fr_timestep_embedding: t %s (expected [N]) with dim %d and shift %g",
                FR__SHAPE(t, s1), dim, (double)downscale_freq_shift);
    return NULL;
  }
  struct fr_tensor *y = fr__alloc(c, op, c->dtype, 2, (int64_t[]){t->shape[0], dim});
  if (!y)
    return NULL;
  struct fr_err e = {{0}};
  enum fr_status rc =
      c->be->timestep_embedding(c->bctx, y, t, flip_sin_to_cos, downscale_freq_shift, max_period, &e);
  return rc == FR_OK ? y : fr__backend_failed(c, op, rc, &e, y);
}

/* The one fp32 definition of the sinusoid (kernels/backend.h): diffusers' get_timestep_embedding step by
 * step in fp32 (exponent, exp, t * freq, sin/cos), so the rounding of the large sin/cos arguments (t up to
 * 999) is the reference's. The CPU backend's op and fr_timestep_embedding_f32 both call it, so the two
 * paths are bit-identical on the CPU. */
void fr_timestep_sinusoid(const float *t, int64_t n, int64_t dim, bool flip_sin_to_cos,
                          float downscale_freq_shift, float max_period, float *out) {
  int64_t half = dim / 2;
  float lnp = logf(max_period);
  for (int64_t k = 0; k < n; k++) {
    float tv = t[k];
    float *row = out + k * dim;
    for (int64_t i = 0; i < half; i++) {
      float ex = (-lnp * (float)i) / ((float)half - downscale_freq_shift);
      float arg = tv * expf(ex);
      float sv = sinf(arg), cv = cosf(arg);
      row[i] = flip_sin_to_cos ? cv : sv;
      row[half + i] = flip_sin_to_cos ? sv : cv;
    }
    if (dim % 2)
      row[dim - 1] = 0.0f; /* odd dim: zero padding column, as diffusers */
  }
}

struct fr_tensor *fr_timestep_embedding_f32(struct fr_ctx *c, const float *t, int64_t n, int dim,
                                            bool flip_sin_to_cos, float downscale_freq_shift,
                                            float max_period) {
  if (c->st != FR_OK)
    return NULL;
  if (!t || n < 1 || dim < 2 || (float)(dim / 2) - downscale_freq_shift == 0.0f) {
    fr_ctx_fail(c, FR_E_INVALID,
                "fr_timestep_embedding_f32: %lld timesteps%s (expected at least 1) with dim %d and shift %g",
                (long long)n, t ? "" : " at NULL", dim, (double)downscale_freq_shift);
    return NULL;
  }
  /* [n, dim] computed on the host in fp32, then uploaded: rounded once to the compute dtype, as diffusers
   * casts its fp32 embedding to the model's dtype. */
  struct fr_tensor *h = fr_tensor_f32(2, (int64_t[]){n, dim});
  if (!h) {
    fr_ctx_fail(c, FR_E_NOMEM, "fr_timestep_embedding_f32: out of memory for [%lld, %d]", (long long)n, dim);
    return NULL;
  }
  fr_timestep_sinusoid(t, n, dim, flip_sin_to_cos, downscale_freq_shift, max_period, h->data);
  struct fr_tensor *y = fr_ctx_upload(c, h);
  fr_tensor_free(h);
  return y;
}
