/* The CPU backend table: fp32 compute, OpenBLAS for the GEMMs, a worker pool for everything else.
 * Memory is plain host memory from fr_malloc (fault injection applies). */
#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "kernels/cpu/cpu.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

/* Every op returns a fresh output tensor, and activations are 1-50 MB. glibc serves blocks that large with
 * mmap and unmaps them on free, so each op would page-fault its output in again: measured on this VM, a
 * [4096, 2560] linear runs at ~27 GFLOP per CPU-second into fresh memory and ~47 into reused memory. Keeping
 * blocks up to 512 MB in the heap (and up to 1 GB of free heap) lets outputs reuse the pages freed by the
 * previous op. Process-wide and harmless for the rest of flowrun; done once. */
static void fr__cpu_malloc_tune(void) {
#ifdef __GLIBC__
  mallopt(M_MMAP_THRESHOLD, 512 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}
static pthread_once_t fr__cpu_once = PTHREAD_ONCE_INIT;

/* ---- the memory budget (fr_ctx_opts.mem_limit, a test hook) ----
 * Counted tensors carry a header in front of their data naming the budget and their size, so their release
 * can give the bytes back even after the context is gone (tensors may outlive it): the budget is freed
 * with its last reference (the context's or a tensor's). */
struct fr_cpu_budget {
  atomic_size_t in_use, peak;
  atomic_int refs;
  size_t limit;
};
#define FR__HDR 64 /* a multiple of malloc's alignment: the data stays as aligned as fr_malloc's */
struct fr__hdr {
  struct fr_cpu_budget *b;
  size_t n;
};

static void fr__budget_unref(struct fr_cpu_budget *b) {
  if (b && atomic_fetch_sub(&b->refs, 1) == 1)
    fr_free(b);
}

static void fr__cpu_release_counted(struct fr_tensor *t) {
  struct fr__hdr *h = (struct fr__hdr *)((char *)t->data - FR__HDR);
  struct fr_cpu_budget *b = h->b;
  atomic_fetch_sub(&b->in_use, h->n);
  fr_free(h);
  fr__budget_unref(b);
}

/* Data for a counted tensor of n bytes, or NULL when the budget (or the heap) is exhausted. */
static void *fr__budget_alloc(struct fr_cpu_budget *b, size_t n) {
  size_t cur = atomic_fetch_add(&b->in_use, n) + n;
  if (cur > b->limit) {
    atomic_fetch_sub(&b->in_use, n);
    return NULL;
  }
  struct fr__hdr *h = fr_malloc(FR__HDR + n);
  if (!h) {
    atomic_fetch_sub(&b->in_use, n);
    return NULL;
  }
  size_t pk = atomic_load(&b->peak);
  while (cur > pk && !atomic_compare_exchange_weak(&b->peak, &pk, cur)) {
  }
  h->b = b;
  h->n = n;
  atomic_fetch_add(&b->refs, 1);
  return (char *)h + FR__HDR;
}

static enum fr_status fr__cpu_init(const struct fr_ctx_opts *o, void **bctx, struct fr_err *err) {
  if (o->dtype != FR_F32)
    return fr_errf(err, FR_E_UNSUPPORTED,
                   "device cpu: compute dtype %s is not supported (cpu computes in F32)",
                   fr_dtype_name(o->dtype));
  pthread_once(&fr__cpu_once, fr__cpu_malloc_tune);
  int threads = o->threads;
  if (threads <= 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    threads = n > 0 ? (int)n : 1;
  }
  if (threads > 256)
    threads = 256;
  struct fr_cpu *cpu = fr_calloc(1, sizeof *cpu);
  if (!cpu)
    return fr_errf(err, FR_E_NOMEM, "device cpu: out of memory creating the context");
  cpu->pool = fr_cpu_pool_new(threads);
  if (!cpu->pool) {
    fr_free(cpu);
    return fr_errf(err, FR_E_NOMEM, "device cpu: out of memory creating %d worker threads", threads);
  }
  cpu->threads = fr_cpu_pool_threads(cpu->pool);
  if (o->mem_limit > 0) {
    cpu->budget = fr_calloc(1, sizeof *cpu->budget);
    if (!cpu->budget) {
      fr_cpu_pool_free(cpu->pool);
      fr_free(cpu);
      return fr_errf(err, FR_E_NOMEM, "device cpu: out of memory creating the context");
    }
    cpu->budget->limit = o->mem_limit;
    atomic_init(&cpu->budget->refs, 1);
  }
  /* OpenBLAS keeps one process-wide thread count; the GEMMs run on the calling thread's OpenBLAS pool. */
  fr_cpu_blas_set_threads(threads);
  *bctx = cpu;
  return FR_OK;
}

static void fr__cpu_free(void *b) {
  struct fr_cpu *cpu = b;
  if (!cpu)
    return;
  fr_cpu_pool_free(cpu->pool);
  fr_free(cpu->scratch);
  fr__budget_unref(cpu->budget);
  fr_free(cpu);
}

float *fr_cpu_scratch(struct fr_cpu *cpu, size_t n) {
  if (n <= cpu->scratch_n)
    return cpu->scratch;
  fr_free(cpu->scratch);
  cpu->scratch = fr_malloc(n * sizeof(float));
  cpu->scratch_n = cpu->scratch ? n : 0;
  return cpu->scratch;
}

/* An owned host tensor whose data is left uninitialised (outputs are fully written by the op). counted:
 * a tensor of the "device" (not a download), counted against the budget when there is one. */
static struct fr_tensor *fr__cpu_new(struct fr_cpu *cpu, bool counted, enum fr_dtype dt, int ndim,
                                     const int64_t *shape) {
  struct fr_tensor *t = fr_tensor_view(dt, ndim, shape, NULL);
  if (!t)
    return NULL;
  size_t n = fr_tensor_nbytes(t);
  if (counted && cpu->budget) {
    t->data = fr__budget_alloc(cpu->budget, n ? n : 1);
    t->release = t->data ? fr__cpu_release_counted : NULL;
  } else {
    t->data = fr_malloc(n ? n : 1);
    t->owns_data = t->data != NULL;
  }
  if (!t->data) {
    fr_tensor_free(t);
    return NULL;
  }
  return t;
}

static struct fr_tensor *fr__cpu_alloc(void *b, enum fr_dtype dt, int ndim, const int64_t *shape) {
  return fr__cpu_new(b, true, dt, ndim, shape);
}

static enum fr_status fr__cpu_to_f32(void *b, bool counted, const struct fr_tensor *host,
                                     struct fr_tensor **out, struct fr_err *err) {
  struct fr_tensor *t = fr__cpu_new(b, counted, FR_F32, host->ndim, host->shape);
  if (!t) {
    char s[96];
    return fr_errf(err, FR_E_NOMEM, "out of memory for %s F32 copy of a %s tensor",
                   fr_shape_str(host, s, sizeof s), fr_dtype_name(host->dtype));
  }
  fr_convert_to_f32(t->data, host->data, host->dtype, (size_t)fr_tensor_numel(host));
  *out = t;
  return FR_OK;
}

/* F32 that is 4-byte aligned is borrowed when allowed (fr_ctx_weight_view); everything else is converted
 * into one owned F32 copy, the only fp32 working copy of that weight. */
static enum fr_status fr__cpu_weight(void *b, const struct fr_tensor *host, bool may_borrow,
                                     struct fr_tensor **out, struct fr_err *err) {
  if (may_borrow && host->dtype == FR_F32 && ((uintptr_t)host->data % sizeof(float)) == 0) {
    struct fr_tensor *t = fr_tensor_view(FR_F32, host->ndim, host->shape, host->data);
    if (!t)
      return fr_errf(err, FR_E_NOMEM, "out of memory for a weight view");
    *out = t;
    return FR_OK;
  }
  return fr__cpu_to_f32(b, true, host, out, err);
}

static enum fr_status fr__cpu_copy(void *b, bool counted, const struct fr_tensor *host,
                                   struct fr_tensor **out, struct fr_err *err) {
  if (host->dtype == FR_I32 || host->dtype == FR_I64) {
    struct fr_tensor *t = fr__cpu_new(b, counted, host->dtype, host->ndim, host->shape);
    if (!t)
      return fr_errf(err, FR_E_NOMEM, "out of memory for an id tensor copy");
    memcpy(t->data, host->data, fr_tensor_nbytes(host));
    *out = t;
    return FR_OK;
  }
  return fr__cpu_to_f32(b, counted, host, out, err);
}

static enum fr_status fr__cpu_upload(void *b, const struct fr_tensor *host, struct fr_tensor **out,
                                     struct fr_err *err) {
  return fr__cpu_copy(b, true, host, out, err);
}

/* A download is host memory, not the device's: never counted against the budget. */
static enum fr_status fr__cpu_download(void *b, const struct fr_tensor *t, struct fr_tensor **out,
                                       struct fr_err *err) {
  return fr__cpu_copy(b, false, t, out, err);
}

/* Counters exist only with a budget (fr_ctx_opts.mem_limit); otherwise tensors are plain heap memory. */
static enum fr_status fr__cpu_mem_stats(void *b, bool reset_peak, struct fr_ctx_mem *out,
                                        struct fr_err *err) {
  struct fr_cpu *cpu = b;
  if (!cpu->budget)
    return fr_errf(err, FR_E_UNSUPPORTED, "device cpu: no memory counters (no mem_limit)");
  out->in_use = atomic_load(&cpu->budget->in_use);
  out->peak = atomic_load(&cpu->budget->peak);
  out->cached = 0;
  if (reset_peak)
    atomic_store(&cpu->budget->peak, out->in_use);
  return FR_OK;
}

/* The scratch buffer is the CPU context's only reserve: the budget counts tensors, not scratch. */
static size_t fr__cpu_reserve(void *b, bool release) {
  struct fr_cpu *cpu = b;
  size_t n = cpu->scratch_n * sizeof(float);
  if (release) {
    fr_free(cpu->scratch);
    cpu->scratch = NULL;
    cpu->scratch_n = 0;
  }
  return n;
}

const struct fr_backend fr_backend_cpu = {
    .version = FR_BACKEND_VERSION,
    .name = "cpu",
    .dev = FR_DEV_CPU,
    .init = fr__cpu_init,
    .free = fr__cpu_free,
    .alloc = fr__cpu_alloc,
    .weight = fr__cpu_weight,
    .upload = fr__cpu_upload,
    .download = fr__cpu_download,
    .linear = fr_cpu_linear,
    .matmul = fr_cpu_matmul,
    .conv2d = fr_cpu_conv2d,
    .attention = fr_cpu_attention,
    .group_norm = fr_cpu_group_norm,
    .layer_norm = fr_cpu_layer_norm,
    .softmax = fr_cpu_softmax,
    .unary = fr_cpu_unary,
    .geglu = fr_cpu_geglu,
    .binary = fr_cpu_binary,
    .concat = fr_cpu_concat,
    .slice = fr_cpu_slice,
    .permute = fr_cpu_permute,
    .pad2d = fr_cpu_pad2d,
    .upsample_nearest2x = fr_cpu_upsample_nearest2x,
    .embedding = fr_cpu_embedding,
    .gather_rows = fr_cpu_gather_rows,
    .timestep_embedding = fr_cpu_timestep_embedding,
    .mem_stats = fr__cpu_mem_stats,
    .reserve = fr__cpu_reserve,
};
