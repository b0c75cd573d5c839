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

/* ---- tensor memory: a size-class pool, and the budget (fr_ctx_opts.mem_limit, a test hook) ----
 * Every device tensor (op outputs, uploads, weight copies) carries a header in front of its data naming
 * its pool and its budget, so its release can give the bytes back even after the context is gone (tensors
 * may outlive it): both are freed with their last reference (the context's or a tensor's).
 *
 * The pool: a block of FR__POOL_MIN bytes or more is rounded up to a size class (8 per doubling: at most
 * 12.5% over) and, when freed, kept on its class's free list for the next tensor of that class (the
 * sampler's steps and the UNet's repeated blocks ask for the same sizes again and again, and reused memory
 * is not page-faulted in again). On a miss, kept blocks (largest first) are handed back to the heap until
 * live + kept + the new block fit in the most ever live at once, so the pool never holds more than the
 * peak of the live set (class-rounded), not the sum of the run's allocations; and the heap is trimmed after
 * a hand-back of 256 MB or more (malloc_trim), so those pages leave the process's resident set rather than
 * staying as free heap (the VAE's 512x512 tensors are 128-256 MB each). Smaller hand-backs stay in the heap:
 * within a UNet step the pool misses on blocks of a few to 84 MB whose pages the same step needs again, and
 * trimming at 32 MB made every step fault about 1.2 GB back in (txt2img 512x512, 2 steps: 1.55 M minor
 * faults -> 0.86 M at 256 MB, the sampler step 6.0 s -> 5.2-5.5 s, peak RSS 2,835 -> 2,899 MiB).
 * fr_ctx_mem_stats reports the pool (in_use: live, cached: kept). */
#define FR__TRIM_BYTES ((size_t)256 << 20)
#define FR__POOL_MIN ((size_t)64 << 10)
#define FR__POOL_CLASSES (64 * 8)

struct fr_cpu_budget {
  atomic_size_t in_use, peak;
  atomic_int refs;
  size_t limit;
};

struct fr_cpu_mem {
  pthread_mutex_t mu;
  void *free[FR__POOL_CLASSES]; /* kept blocks (their headers), linked through fr__hdr.next */
  size_t live, kept, peak; /* bytes: in live tensors (class-rounded), on the free lists, max(live + kept) */
  size_t live_max;         /* max(live): what the pool may hold on a miss */
  int refs;                /* the context's + one per live block */
  bool closed;             /* the context is gone: freed blocks go straight back to the heap */
};

#define FR__HDR 64 /* a multiple of malloc's alignment: the data stays as aligned as fr_malloc's */
struct fr__hdr {
  struct fr_cpu_budget *b; /* or NULL */
  struct fr_cpu_mem *m;
  size_t n;   /* bytes asked for (what the budget counts) */
  size_t cap; /* bytes of data in the block (its class size) */
  int cls;    /* size class, or -1: not pooled (small) */
  void *next; /* on a free list */
};

/* The class of n bytes (>= FR__POOL_MIN) and its size: 2^k * (8..15) / 8, the smallest that holds n. */
static int fr__class(size_t n, size_t *size) {
  int k = 63 - __builtin_clzll((unsigned long long)n);
  size_t step = (size_t)1 << (k - 3);
  size_t m = (n + step - 1) / step; /* 8 .. 16 */
  if (m == 16) {
    k++;
    step <<= 1;
    m = 8;
  }
  *size = m * step;
  return k * 8 + (int)(m - 8);
}

static void fr__budget_unref(struct fr_cpu_budget *b) {
  if (b && atomic_fetch_sub(&b->refs, 1) == 1)
    fr_free(b);
}

static void fr__mem_destroy(struct fr_cpu_mem *m) {
  pthread_mutex_destroy(&m->mu);
  fr_free(m);
}

/* Hands kept blocks back to the heap, largest first, until kept <= keep bytes; returns the bytes handed
 * back. Caller holds m->mu. */
static size_t fr__mem_shrink(struct fr_cpu_mem *m, size_t keep) {
  size_t freed = 0;
  for (int c = FR__POOL_CLASSES - 1; c >= 0 && m->kept > keep; c--) {
    while (m->free[c] && m->kept > keep) {
      struct fr__hdr *h = m->free[c];
      m->free[c] = h->next;
      m->kept -= h->cap;
      freed += h->cap;
      fr_free(h);
    }
  }
  return freed;
}

/* Gives free heap pages back to the system after a large hand-back. */
static void fr__heap_trim(size_t freed) {
#ifdef __GLIBC__
  if (freed >= FR__TRIM_BYTES)
    malloc_trim(0);
#else
  (void)freed;
#endif
}

static void fr__cpu_release(struct fr_tensor *t) {
  struct fr__hdr *h = (struct fr__hdr *)((char *)t->data - FR__HDR);
  struct fr_cpu_budget *b = h->b;
  struct fr_cpu_mem *m = h->m;
  if (b)
    atomic_fetch_sub(&b->in_use, h->n);
  if (h->cls < 0) {
    fr_free(h);
  } else {
    pthread_mutex_lock(&m->mu);
    m->live -= h->cap;
    bool last = --m->refs == 0;
    if (m->closed) {
      fr_free(h);
    } else {
      h->next = m->free[h->cls];
      m->free[h->cls] = h;
      m->kept += h->cap;
    }
    pthread_mutex_unlock(&m->mu);
    if (last)
      fr__mem_destroy(m);
  }
  fr__budget_unref(b);
}

/* Data for a device tensor of n bytes (from the pool when pooled and large enough), counted against the
 * budget b when there is one; NULL when the budget or the heap is exhausted. */
static void *fr__dev_alloc(struct fr_cpu_mem *m, struct fr_cpu_budget *b, size_t n, bool pooled) {
  if (b) {
    size_t cur = atomic_fetch_add(&b->in_use, n) + n;
    if (cur > b->limit) {
      atomic_fetch_sub(&b->in_use, n);
      return NULL;
    }
    size_t pk = atomic_load(&b->peak);
    while (cur > pk && !atomic_compare_exchange_weak(&b->peak, &pk, cur)) {
    }
  }
  struct fr__hdr *h = NULL;
  size_t cap = n, freed = 0;
  int cls = pooled && n >= FR__POOL_MIN ? fr__class(n, &cap) : -1;
  if (cls < 0) {
    h = fr_malloc(FR__HDR + n);
  } else {
    pthread_mutex_lock(&m->mu);
    if ((h = m->free[cls]) != NULL) {
      m->free[cls] = h->next;
      m->kept -= cap;
    } else {
      /* a miss: keep only what fits beside the live set and this block within the most ever live */
      size_t top = m->live + cap > m->live_max ? m->live + cap : m->live_max;
      freed = fr__mem_shrink(m, top - m->live - cap);
      h = fr_malloc(FR__HDR + cap);
    }
    if (h) {
      m->live += cap;
      m->refs++;
      if (m->live > m->live_max)
        m->live_max = m->live;
      if (m->live + m->kept > m->peak)
        m->peak = m->live + m->kept;
    }
    pthread_mutex_unlock(&m->mu);
    fr__heap_trim(freed);
  }
  if (!h) {
    if (b)
      atomic_fetch_sub(&b->in_use, n);
    return NULL;
  }
  h->b = b;
  h->m = m;
  h->n = n;
  h->cap = cap;
  h->cls = cls;
  h->next = NULL;
  if (b)
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
  cpu->mem = fr_calloc(1, sizeof *cpu->mem);
  if (!cpu->mem || pthread_mutex_init(&cpu->mem->mu, NULL) != 0) {
    fr_free(cpu->mem);
    fr_cpu_pool_free(cpu->pool);
    fr_free(cpu);
    return fr_errf(err, FR_E_NOMEM, "device cpu: out of memory creating the context");
  }
  cpu->mem->refs = 1;
  if (o->mem_limit > 0) {
    cpu->budget = fr_calloc(1, sizeof *cpu->budget);
    if (!cpu->budget) {
      fr__mem_destroy(cpu->mem);
      fr_cpu_pool_free(cpu->pool);
      fr_free(cpu);
      return fr_errf(err, FR_E_NOMEM, "device cpu: out of memory creating the context");
    }
    cpu->budget->limit = o->mem_limit;
    atomic_init(&cpu->budget->refs, 1);
  }
  /* OpenBLAS keeps one process-wide thread count; the GEMMs run on the calling thread's OpenBLAS pool. */
  fr_cpu_blas_threads(threads);
  *bctx = cpu;
  return FR_OK;
}

static void fr__cpu_free(void *b) {
  struct fr_cpu *cpu = b;
  if (!cpu)
    return;
  fr_cpu_pool_free(cpu->pool);
  fr_free(cpu->scratch);
  fr_free(cpu->wscratch);
  fr__budget_unref(cpu->budget);
  pthread_mutex_lock(&cpu->mem->mu);
  size_t freed = fr__mem_shrink(cpu->mem, 0);
  cpu->mem->closed = true;
  bool last = --cpu->mem->refs == 0;
  pthread_mutex_unlock(&cpu->mem->mu);
  fr__heap_trim(freed);
  if (last)
    fr__mem_destroy(cpu->mem);
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

float *fr_cpu_wscratch(struct fr_cpu *cpu, size_t n) {
  if (n <= cpu->wscratch_n)
    return cpu->wscratch;
  fr_free(cpu->wscratch);
  cpu->wscratch = fr_malloc(n * sizeof(float));
  cpu->wscratch_n = cpu->wscratch ? n : 0;
  return cpu->wscratch;
}

/* What a new tensor is: host memory handed out (a download: not counted), an activation (op output or
 * upload: from the pool, counted against the budget) or a weight (counted, exact size: weights live as
 * long as their model, so the pool's rounding would only waste up to 12.5% of the model). */
enum fr__kind { FR__HOST, FR__ACT, FR__WEIGHT };

/* An owned tensor of that kind whose data is left uninitialised (outputs are fully written by the op). */
static struct fr_tensor *fr__cpu_new(struct fr_cpu *cpu, enum fr__kind kind, enum fr_dtype dt, int ndim,
                                     const int64_t *shape) {
  struct fr_tensor *t = fr_tensor_view(dt, ndim, shape, NULL);
  if (!t)
    return NULL;
  size_t n = fr_tensor_nbytes(t);
  if (kind != FR__HOST) {
    t->data = fr__dev_alloc(cpu->mem, cpu->budget, n ? n : 1, kind == FR__ACT);
    t->release = t->data ? fr__cpu_release : NULL;
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
  return fr__cpu_new(b, FR__ACT, dt, ndim, shape);
}

static enum fr_status fr__cpu_to_f32(void *b, enum fr__kind kind, const struct fr_tensor *host,
                                     struct fr_tensor **out, struct fr_err *err) {
  struct fr_tensor *t = fr__cpu_new(b, kind, FR_F32, host->ndim, host->shape);
  if (!t) {
    char s[96];
    return fr_errf(err, FR_E_NOMEM, "out of memory for %s F32 copy of a %s tensor",
                   fr_shape_str(host, s, sizeof s), fr_dtype_name(host->dtype));
  }
  fr_convert_to_f32(t->data, host->data, host->dtype, (size_t)fr_tensor_numel(host));
  *out = t;
  return FR_OK;
}

/* F32 that is 4-byte aligned is borrowed when allowed (fr_ctx_weight_view). F16/BF16 matrices and
 * convolution kernels (two or more dims) stay 16-bit: one owned copy in the stored dtype, which linear,
 * conv2d and embedding convert in panels as they go (half.c), so a 16-bit checkpoint costs 2 bytes a weight
 * rather than 4. Everything else (vectors: norm weights, biases; F32 that cannot be borrowed) becomes one
 * owned F32 copy. */
static enum fr_status fr__cpu_weight(void *b, const struct fr_tensor *host, bool may_borrow,
                                     struct fr_tensor **out, struct fr_err *err) {
  if (may_borrow && host->dtype == FR_F32 && ((uintptr_t)host->data % sizeof(float)) == 0) {
    struct fr_tensor *t = fr_tensor_view(FR_F32, host->ndim, host->shape, host->data);
    if (!t)
      return fr_errf(err, FR_E_NOMEM, "out of memory for a weight view");
    *out = t;
    return FR_OK;
  }
  if (fr_cpu_is_half(host) && host->ndim >= 2) {
    struct fr_tensor *t = fr__cpu_new(b, FR__WEIGHT, host->dtype, host->ndim, host->shape);
    if (!t) {
      char s[96];
      return fr_errf(err, FR_E_NOMEM, "out of memory for a %s %s weight", fr_shape_str(host, s, sizeof s),
                     fr_dtype_name(host->dtype));
    }
    memcpy(t->data, host->data, fr_tensor_nbytes(host));
    *out = t;
    return FR_OK;
  }
  return fr__cpu_to_f32(b, FR__WEIGHT, host, out, err);
}

static enum fr_status fr__cpu_copy(void *b, enum fr__kind kind, const struct fr_tensor *host,
                                   struct fr_tensor **out, struct fr_err *err) {
  if (host->dtype == FR_I32 || host->dtype == FR_I64) {
    struct fr_tensor *t = fr__cpu_new(b, kind, host->dtype, host->ndim, host->shape);
    if (!t)
      return fr_errf(err, FR_E_NOMEM, "out of memory for an id tensor copy");
    memcpy(t->data, host->data, fr_tensor_nbytes(host));
    *out = t;
    return FR_OK;
  }
  return fr__cpu_to_f32(b, kind, host, out, err);
}

static enum fr_status fr__cpu_upload(void *b, const struct fr_tensor *host, struct fr_tensor **out,
                                     struct fr_err *err) {
  return fr__cpu_copy(b, FR__ACT, host, out, err);
}

/* A download is host memory, not the device's: never counted against the budget. */
static enum fr_status fr__cpu_download(void *b, const struct fr_tensor *t, struct fr_tensor **out,
                                       struct fr_err *err) {
  return fr__cpu_copy(b, FR__HOST, t, out, err);
}

/* With a budget (fr_ctx_opts.mem_limit): its counters, every tensor's bytes as asked for. Otherwise the
 * pool's: in_use = live tensors of FR__POOL_MIN bytes or more (class-rounded), cached = freed blocks kept
 * for reuse, peak = the most both held at once. */
static enum fr_status fr__cpu_mem_stats(void *b, bool reset_peak, struct fr_ctx_mem *out,
                                        struct fr_err *err) {
  (void)err;
  struct fr_cpu *cpu = b;
  if (cpu->budget) {
    out->in_use = atomic_load(&cpu->budget->in_use);
    out->peak = atomic_load(&cpu->budget->peak);
    out->cached = 0;
    if (reset_peak)
      atomic_store(&cpu->budget->peak, out->in_use);
    return FR_OK;
  }
  struct fr_cpu_mem *m = cpu->mem;
  pthread_mutex_lock(&m->mu);
  out->in_use = m->live;
  out->cached = m->kept;
  out->peak = m->peak;
  if (reset_peak)
    m->peak = m->live + m->kept;
  pthread_mutex_unlock(&m->mu);
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
