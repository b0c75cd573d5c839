/* The CUDA device context: stream, cuBLASLt handle and workspace, memory pool; tensors' allocation and
 * the host <-> device transfers (weights and activations converted to the compute dtype on the device). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/internal.cuh"

/* cuBLASLt workspace: 32 MiB is what NVIDIA recommends for Hopper's best GEMM kernels. */
#define FR__LT_WORKSPACE ((size_t)32 << 20)

enum fr_status fr_cuda_err(cudaError_t e, struct fr_err *err, const char *what) {
  if (e == cudaSuccess)
    return FR_OK;
  return fr_errf(err, FR_E_DEVICE, "%s: CUDA error %s: %s", what, cudaGetErrorName(e), cudaGetErrorString(e));
}

enum fr_status fr_cuda_lt_err(cublasStatus_t s, struct fr_err *err, const char *what) {
  if (s == CUBLAS_STATUS_SUCCESS)
    return FR_OK;
  return fr_errf(err, FR_E_DEVICE, "%s: cuBLASLt status %d", what, (int)s);
}

/* ---- memory pool ---- */

struct fr_cuda_block {
  void *ptr;
  size_t size;
  struct fr_cuda_pool *pool;
  struct fr_cuda_arena *arena; /* the graph that reserves this block, or NULL */
  struct fr_cuda_block *next;  /* in a free list */
};

/* The blocks a recorded graph uses. A replay writes to the addresses the recording saw, so every block
 * allocated or released while recording belongs to the graph until the graph is freed: released ones wait
 * in the arena's own free list (reused only by later allocations of the same recording, which is what the
 * replay does too), never in the pool's. When the graph goes, its free blocks move to the pool and its
 * live ones (the outputs the caller still holds) follow when they are released. */
struct fr_cuda_arena {
  struct fr_cuda_block *free_list;
  long blocks; /* blocks owned (live or free) */
  bool closed; /* the graph is gone: the last block's release frees the arena */
};

struct fr_cuda_pool {
  pthread_mutex_t mu;
  int device;
  struct fr_cuda_block *free_list;
  size_t cached, in_use, peak;     /* bytes */
  long live;                       /* blocks handed out and not yet released */
  bool closing;                    /* the context is gone: the last release destroys the pool */
  struct fr_cuda_arena *recording; /* the arena of the graph being recorded, or NULL */
};

static size_t fr__round_size(size_t n) {
  if (n < 512)
    return 512;
  if (n < ((size_t)1 << 20))
    return (n + 511) & ~(size_t)511;
  return (n + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1); /* 1 MiB granules above 1 MiB */
}

/* Frees every cached block (caller holds the lock). cudaFree synchronises the device. */
static void fr__pool_trim(struct fr_cuda_pool *p) {
  struct fr_cuda_block *b = p->free_list;
  while (b) {
    struct fr_cuda_block *next = b->next;
    cudaFree(b->ptr);
    fr_free(b);
    b = next;
  }
  p->free_list = NULL;
  p->cached = 0;
}

static void fr__pool_destroy(struct fr_cuda_pool *p) {
  fr__pool_trim(p);
  pthread_mutex_unlock(&p->mu);
  pthread_mutex_destroy(&p->mu);
  fr_free(p);
}

/* The smallest block of a free list that holds need bytes and wastes at most limit - need; NULL: none. */
static struct fr_cuda_block **fr__best_fit(struct fr_cuda_block **list, size_t need, size_t limit) {
  struct fr_cuda_block **best = NULL;
  for (struct fr_cuda_block **pp = list; *pp; pp = &(*pp)->next)
    if ((*pp)->size >= need && (*pp)->size <= limit && (!best || (*pp)->size < (*best)->size))
      best = pp;
  return best;
}

void *fr_cuda_pool_alloc(struct fr_cuda *cu, size_t n, struct fr_cuda_block **blk) {
  struct fr_cuda_pool *p = cu->pool;
  size_t need = fr__round_size(n), limit = need + need / 4 + ((size_t)64 << 10);
  *blk = NULL;
  pthread_mutex_lock(&p->mu);
  struct fr_cuda_arena *rec = p->recording;
  struct fr_cuda_block **best = fr__best_fit(rec ? &rec->free_list : &p->free_list, need, limit);
  if (!best && rec)
    best = fr__best_fit(&p->free_list, need, limit);
  struct fr_cuda_block *b = NULL;
  if (best) {
    b = *best;
    *best = b->next;
    p->cached -= b->size;
  } else {
    b = (struct fr_cuda_block *)fr_calloc(1, sizeof *b);
    if (b) {
      void *ptr = NULL;
      cudaError_t e = cudaMalloc(&ptr, need);
      /* give the cache back to the driver and try once more; not while recording (cudaFree synchronises
       * the device, which would end the recording) */
      if (e == cudaErrorMemoryAllocation && !rec) {
        cudaGetLastError();
        fr__pool_trim(p);
        e = cudaMalloc(&ptr, need);
      }
      if (e != cudaSuccess) {
        cudaGetLastError(); /* out of memory is not sticky: clear it so later checks do not see it */
        fr_free(b);
        b = NULL;
      } else {
        b->ptr = ptr;
        b->size = need;
        b->pool = p;
      }
    }
  }
  if (b) {
    b->next = NULL;
    if (rec && b->arena != rec) {
      b->arena = rec;
      rec->blocks++;
    }
    p->live++;
    p->in_use += b->size;
    if (p->in_use > p->peak)
      p->peak = p->in_use;
  }
  pthread_mutex_unlock(&p->mu);
  *blk = b;
  return b ? b->ptr : NULL;
}

void fr_cuda_pool_release(struct fr_cuda_block *b) {
  if (!b)
    return;
  struct fr_cuda_pool *p = b->pool;
  pthread_mutex_lock(&p->mu);
  p->in_use -= b->size;
  p->live--;
  if (p->closing) {
    struct fr_cuda_arena *a = b->arena; /* graphs are freed before their context: a is closed */
    if (a && a->closed && --a->blocks == 0)
      fr_free(a);
    cudaFree(b->ptr);
    fr_free(b);
    if (p->live == 0) {
      fr__pool_destroy(p); /* unlocks */
      return;
    }
  } else {
    if (!b->arena && p->recording) { /* the recording may have used it: the graph keeps it */
      b->arena = p->recording;
      b->arena->blocks++;
    }
    struct fr_cuda_arena *a = b->arena;
    if (a && a->closed) { /* its graph is gone: back to the pool */
      b->arena = NULL;
      if (--a->blocks == 0)
        fr_free(a);
      a = NULL;
    }
    struct fr_cuda_block **list = a ? &a->free_list : &p->free_list;
    b->next = *list;
    *list = b;
    p->cached += b->size;
  }
  pthread_mutex_unlock(&p->mu);
}

/* ---- recording (graph.cu) ---- */

enum fr_status fr_cuda_pool_record_begin(struct fr_cuda *cu, struct fr_cuda_arena **out, struct fr_err *err) {
  struct fr_cuda_pool *p = cu->pool;
  struct fr_cuda_arena *a = (struct fr_cuda_arena *)fr_calloc(1, sizeof *a);
  if (!a)
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  pthread_mutex_lock(&p->mu);
  bool busy = p->recording != NULL;
  if (!busy)
    p->recording = a;
  pthread_mutex_unlock(&p->mu);
  if (busy) {
    fr_free(a);
    return fr_errf(err, FR_E_INVALID, "a recording is already in progress on this context");
  }
  *out = a;
  return FR_OK;
}

void fr_cuda_pool_record_end(struct fr_cuda *cu) {
  struct fr_cuda_pool *p = cu->pool;
  pthread_mutex_lock(&p->mu);
  p->recording = NULL;
  pthread_mutex_unlock(&p->mu);
}

void fr_cuda_pool_arena_free(struct fr_cuda *cu, struct fr_cuda_arena *a) {
  if (!a)
    return;
  struct fr_cuda_pool *p = cu->pool;
  pthread_mutex_lock(&p->mu);
  while (a->free_list) { /* free blocks: to the pool */
    struct fr_cuda_block *b = a->free_list;
    a->free_list = b->next;
    b->arena = NULL;
    b->next = p->free_list;
    p->free_list = b;
    a->blocks--;
  }
  a->closed = true;
  bool last = a->blocks == 0; /* else live blocks remain: the last one's release frees a */
  pthread_mutex_unlock(&p->mu);
  if (last)
    fr_free(a);
}

/* Called when the context goes: cached blocks are freed now, live ones when their tensors are freed. */
static void fr__pool_close(struct fr_cuda_pool *p) {
  pthread_mutex_lock(&p->mu);
  p->closing = true;
  if (p->live == 0) {
    fr__pool_destroy(p);
    return;
  }
  fr__pool_trim(p);
  pthread_mutex_unlock(&p->mu);
}

/* ---- context ---- */

enum fr_status fr_cuda_init(const struct fr_ctx_opts *o, void **bctx, struct fr_err *err) {
  *bctx = NULL;
  if (o->dtype != FR_F32 && o->dtype != FR_F16 && o->dtype != FR_BF16)
    return fr_errf(err, FR_E_UNSUPPORTED, "device cuda: compute dtype %s is not supported (F32, F16 or BF16)",
                   fr_dtype_name(o->dtype));
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count < 1) {
    const char *why = e != cudaSuccess ? cudaGetErrorString(e) : "the driver reports no device";
    cudaGetLastError();
    return fr_errf(err, FR_E_DEVICE, "device cuda: no CUDA device (%s)", why);
  }
  int dev = 0;
  cudaDeviceProp prop;
  FR_CUDA_TRY(fr_cuda_err(cudaSetDevice(dev), err, "device cuda: cudaSetDevice"));
  FR_CUDA_TRY(fr_cuda_err(cudaGetDeviceProperties(&prop, dev), err, "device cuda: cudaGetDeviceProperties"));
  if (o->dtype == FR_BF16 && prop.major < 8)
    return fr_errf(err, FR_E_UNSUPPORTED, "device cuda: %s (sm_%d%d) has no BF16; use F16 or F32", prop.name,
                   prop.major, prop.minor);
  struct fr_cuda *cu = (struct fr_cuda *)fr_calloc(1, sizeof *cu);
  struct fr_cuda_pool *pool = (struct fr_cuda_pool *)fr_calloc(1, sizeof *pool);
  if (!cu || !pool) {
    fr_free(cu);
    fr_free(pool);
    return fr_errf(err, FR_E_NOMEM, "device cuda: out of memory creating the context");
  }
  pthread_mutex_init(&pool->mu, NULL);
  pool->device = dev;
  cu->pool = pool;
  cu->device = dev;
  cu->dtype = o->dtype;
  cu->sm_count = prop.multiProcessorCount;
  cu->cc = prop.major * 10 + prop.minor;
  cu->smem_optin = prop.sharedMemPerBlockOptin;
  const char *attn = getenv("FLOWRUN_CUDA_ATTN");
  cu->attn_simple = attn && strcmp(attn, "simple") == 0;
  const char *conv = getenv("FLOWRUN_CUDA_CONV");
  cu->conv_mode = !conv                         ? FR_CUDA_CONV_AUTO
                  : strcmp(conv, "im2col") == 0 ? FR_CUDA_CONV_IM2COL
                  : strcmp(conv, "tc") == 0     ? FR_CUDA_CONV_TC
                                                : FR_CUDA_CONV_AUTO;
  enum fr_status rc = fr_cuda_err(cudaStreamCreateWithFlags(&cu->stream, cudaStreamNonBlocking), err,
                                  "device cuda: cudaStreamCreate");
  if (rc == FR_OK)
    rc = fr_cuda_lt_err(cublasLtCreate(&cu->lt), err, "device cuda: cublasLtCreate");
  if (rc == FR_OK) {
    cu->ws_size = FR__LT_WORKSPACE;
    e = cudaMalloc(&cu->ws, cu->ws_size);
    if (e != cudaSuccess) {
      cudaGetLastError();
      cu->ws = NULL;
      rc = fr_errf(err, FR_E_DEVICE, "device cuda: out of device memory for the %zu MiB cuBLASLt workspace",
                   cu->ws_size >> 20);
    }
  }
  if (rc != FR_OK) {
    fr_cuda_free(cu);
    return rc;
  }
  *bctx = cu;
  return FR_OK;
}

void fr_cuda_free(void *bctx) {
  struct fr_cuda *cu = (struct fr_cuda *)bctx;
  if (!cu)
    return;
  if (cu->stream)
    cudaStreamSynchronize(cu->stream);
  fr_cuda_gemm_cache_free(cu);
  if (cu->lt)
    cublasLtDestroy(cu->lt);
  if (cu->ws)
    cudaFree(cu->ws);
  if (cu->stream)
    cudaStreamDestroy(cu->stream);
  cudaGetLastError(); /* teardown errors have nowhere to go */
  fr__pool_close(cu->pool);
  fr_free(cu);
}

enum fr_status fr_cuda_sync(void *bctx, struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bctx;
  return fr_cuda_err(cudaStreamSynchronize(cu->stream), err, "cudaStreamSynchronize (a queued op failed)");
}

/* The pool's cached blocks; release frees them (not while a graph is being recorded: cudaFree would
 * synchronise inside the capture). Blocks kept by recorded graphs are theirs, not the pool's. */
size_t fr_cuda_reserve(void *bctx, bool release) {
  struct fr_cuda *cu = (struct fr_cuda *)bctx;
  struct fr_cuda_pool *p = cu->pool;
  pthread_mutex_lock(&p->mu);
  size_t n = p->cached;
  if (release && !p->recording)
    fr__pool_trim(p);
  else if (release)
    n = 0;
  pthread_mutex_unlock(&p->mu);
  return n;
}

/* The pool's counters plus the fixed cuBLASLt workspace, so `peak` is all the device memory this
 * context held at its busiest (what torch.cuda.max_memory_allocated reports for PyTorch, which also
 * allocates cuBLAS workspaces from its caching allocator). */
enum fr_status fr_cuda_mem_stats(void *bctx, bool reset_peak, struct fr_ctx_mem *out, struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bctx;
  struct fr_cuda_pool *p = cu->pool;
  pthread_mutex_lock(&p->mu);
  if (reset_peak)
    p->peak = p->in_use;
  out->in_use = p->in_use + cu->ws_size;
  out->peak = p->peak + cu->ws_size;
  out->cached = p->cached;
  pthread_mutex_unlock(&p->mu);
  return FR_OK;
}

static void fr__tensor_release(struct fr_tensor *t) {
  fr_cuda_pool_release((struct fr_cuda_block *)t->backend_priv);
  t->backend_priv = NULL;
  t->data = NULL;
}

struct fr_tensor *fr_cuda_alloc(void *bctx, enum fr_dtype dt, int ndim, const int64_t *shape) {
  struct fr_cuda *cu = (struct fr_cuda *)bctx;
  struct fr_tensor *t = fr_tensor_view(dt, ndim, shape, NULL);
  if (!t)
    return NULL;
  struct fr_cuda_block *blk;
  t->data = fr_cuda_pool_alloc(cu, fr_tensor_nbytes(t), &blk);
  if (!t->data) {
    fr_tensor_free(t);
    return NULL;
  }
  t->dev = FR_DEV_CUDA;
  t->backend_priv = blk;
  t->release = fr__tensor_release;
  return t;
}

/* ---- conversion on the device ---- */

template <typename S> __device__ __forceinline__ float fr__src(const S *p, int64_t i);
template <> __device__ __forceinline__ float fr__src<float>(const float *p, int64_t i) {
  return p[i];
}
template <> __device__ __forceinline__ float fr__src<double>(const double *p, int64_t i) {
  return (float)p[i];
}
template <> __device__ __forceinline__ float fr__src<__half>(const __half *p, int64_t i) {
  return __half2float(p[i]);
}
template <> __device__ __forceinline__ float fr__src<__nv_bfloat16>(const __nv_bfloat16 *p, int64_t i) {
  return __bfloat162float(p[i]);
}

template <typename S, typename T> static __global__ void fr__convert_kernel(T *y, const S *x, int64_t n) {
  FR_CUDA_LOOP(i, n) fr_st(y + i, fr__src(x, i));
}

template <typename T> static __global__ void fr__fill_kernel(T *y, int64_t n, float v) {
  FR_CUDA_LOOP(i, n) fr_st(y + i, v);
}

enum fr_status fr_cuda_fill(struct fr_cuda *cu, void *y, int64_t n, float v, struct fr_err *err) {
  if (n <= 0)
    return FR_OK;
  FR_CUDA_DISPATCH(cu->dtype, err, T,
                   fr__fill_kernel<T>
                   <<<fr_cuda_blocks(n, FR_CUDA_THREADS), FR_CUDA_THREADS, 0, cu->stream>>>((T *)y, n, v));
  return fr_cuda_launched(err, "fill kernel");
}

template <typename S>
static enum fr_status fr__convert_launch(struct fr_cuda *cu, void *y, const S *x, int64_t n,
                                         struct fr_err *err) {
  unsigned g = fr_cuda_blocks(n, FR_CUDA_THREADS);
  FR_CUDA_DISPATCH(cu->dtype, err, T,
                   fr__convert_kernel<S, T><<<g, FR_CUDA_THREADS, 0, cu->stream>>>((T *)y, x, n));
  return fr_cuda_launched(err, "convert kernel");
}

/* host float tensor (F32/F16/BF16/F64) -> new device tensor in the compute dtype. The raw bytes go up as
 * they are (no host-side conversion pass over a multi-GB checkpoint) and are converted on the device; when
 * the dtypes already match the copy lands in the output directly. */
static enum fr_status fr__to_device(struct fr_cuda *cu, const struct fr_tensor *host, struct fr_tensor **out,
                                    struct fr_err *err) {
  char s[96];
  struct fr_tensor *t = fr_cuda_alloc(cu, cu->dtype, host->ndim, host->shape);
  if (!t)
    return fr_errf(err, FR_E_NOMEM, "out of device memory for %s %s", fr_dtype_name(cu->dtype),
                   fr_shape_str(host, s, sizeof s));
  int64_t n = fr_tensor_numel(host);
  size_t nb = fr_tensor_nbytes(host);
  enum fr_status rc = FR_OK;
  if (n == 0) {
    /* nothing to move */
  } else if (host->dtype == cu->dtype) {
    rc = fr_cuda_err(cudaMemcpyAsync(t->data, host->data, nb, cudaMemcpyHostToDevice, cu->stream), err,
                     "cudaMemcpyAsync host to device");
  } else {
    struct fr_cuda_block *tmp;
    void *raw = fr_cuda_pool_alloc(cu, nb, &tmp);
    if (!raw) {
      fr_tensor_free(t);
      return fr_errf(err, FR_E_NOMEM, "out of device memory staging %s %s", fr_dtype_name(host->dtype),
                     fr_shape_str(host, s, sizeof s));
    }
    rc = fr_cuda_err(cudaMemcpyAsync(raw, host->data, nb, cudaMemcpyHostToDevice, cu->stream), err,
                     "cudaMemcpyAsync host to device");
    if (rc == FR_OK) {
      switch (host->dtype) {
      case FR_F32: rc = fr__convert_launch(cu, t->data, (const float *)raw, n, err); break;
      case FR_F64: rc = fr__convert_launch(cu, t->data, (const double *)raw, n, err); break;
      case FR_F16: rc = fr__convert_launch(cu, t->data, (const __half *)raw, n, err); break;
      case FR_BF16: rc = fr__convert_launch(cu, t->data, (const __nv_bfloat16 *)raw, n, err); break;
      default:
        rc = fr_errf(err, FR_E_UNSUPPORTED, "tensor %s: dtype %s cannot become %s",
                     fr_shape_str(host, s, sizeof s), fr_dtype_name(host->dtype), fr_dtype_name(cu->dtype));
      }
    }
    fr_cuda_pool_release(tmp); /* stream order keeps it alive for the queued conversion */
  }
  if (rc != FR_OK) {
    fr_tensor_free(t);
    return rc;
  }
  *out = t;
  return FR_OK;
}

enum fr_status fr_cuda_weight(void *bctx, const struct fr_tensor *host, bool may_borrow,
                              struct fr_tensor **out, struct fr_err *err) {
  /* Never borrowed: a device weight is always its own resident copy. */
  return fr__to_device((struct fr_cuda *)bctx, host, out, err);
}

enum fr_status fr_cuda_upload(void *bctx, const struct fr_tensor *host, struct fr_tensor **out,
                              struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bctx;
  if (host->dtype != FR_I32 && host->dtype != FR_I64)
    return fr__to_device(cu, host, out, err);
  char s[96];
  struct fr_tensor *t = fr_cuda_alloc(cu, host->dtype, host->ndim, host->shape);
  if (!t)
    return fr_errf(err, FR_E_NOMEM, "out of device memory for ids %s", fr_shape_str(host, s, sizeof s));
  size_t nb = fr_tensor_nbytes(host);
  enum fr_status rc =
      nb ? fr_cuda_err(cudaMemcpyAsync(t->data, host->data, nb, cudaMemcpyHostToDevice, cu->stream), err,
                       "cudaMemcpyAsync host to device")
         : FR_OK;
  if (rc != FR_OK) {
    fr_tensor_free(t);
    return rc;
  }
  *out = t;
  return FR_OK;
}

/* Device tensor -> host: the raw bytes come down (the stream is synchronised, so any asynchronous kernel
 * failure of earlier ops surfaces here as FR_E_DEVICE) and are widened to F32 on the host. */
enum fr_status fr_cuda_download(void *bctx, const struct fr_tensor *t, struct fr_tensor **out,
                                struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bctx;
  char s[96];
  bool is_int = t->dtype == FR_I32 || t->dtype == FR_I64;
  size_t nb = fr_tensor_nbytes(t);
  struct fr_tensor *h = fr_tensor_new(is_int ? t->dtype : FR_F32, t->ndim, t->shape);
  void *raw = NULL;
  if (h && !is_int && t->dtype != FR_F32)
    raw = fr_malloc(nb ? nb : 1);
  if (!h || (!is_int && t->dtype != FR_F32 && !raw)) {
    fr_tensor_free(h);
    return fr_errf(err, FR_E_NOMEM, "out of host memory downloading %s", fr_shape_str(t, s, sizeof s));
  }
  void *dst = raw ? raw : h->data;
  enum fr_status rc = FR_OK;
  if (nb)
    rc = fr_cuda_err(cudaMemcpyAsync(dst, t->data, nb, cudaMemcpyDeviceToHost, cu->stream), err,
                     "cudaMemcpyAsync device to host");
  if (rc == FR_OK)
    rc = fr_cuda_err(cudaStreamSynchronize(cu->stream), err, "cudaStreamSynchronize (a queued op failed)");
  if (rc == FR_OK && raw)
    fr_convert_to_f32((float *)h->data, raw, t->dtype, (size_t)fr_tensor_numel(t));
  fr_free(raw);
  if (rc != FR_OK) {
    fr_tensor_free(h);
    return rc;
  }
  *out = h;
  return FR_OK;
}
