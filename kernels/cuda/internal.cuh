/* CUDA backend internals shared by the .cu files: the device context, the memory pool, the cuBLASLt
 * wrapper, error checks, dtype dispatch and launch helpers. C++ (nvcc) only.
 *
 * Conventions: every CUDA or cuBLASLt call is checked and a failure becomes FR_E_DEVICE with a message
 * naming the call (never an abort); every kernel launch is followed by one fr_cuda_launched() check;
 * element loops are grid-stride loops over int64 indices with a bounded grid, so any size launches. All
 * work of one context runs on its one stream, in order, which is what makes the pool's reuse of freed
 * blocks safe without events. */
#ifndef FR_KERNELS_CUDA_INTERNAL_CUH
#define FR_KERNELS_CUDA_INTERNAL_CUH

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "core/alloc.h"
#include "core/status.h"
#include "core/tensor.h"
#include "kernels/backend.h"
}
#include "kernels/cuda/device.cuh"
#include "kernels/cuda/fr_cuda.h"

struct fr_cuda_pool;
struct fr_cuda_block;
struct fr_cuda_gemm_entry;

/* FLOWRUN_CUDA_CONV: unset, the tensor-core 3x3 conv where it fits and should be the faster (few output
 * channels, a grid that fills the device: conv_tc.cu); "im2col", every
 * conv through im2col + cuBLASLt; "tc", the tensor-core conv wherever it fits (the tests use it to reach
 * it with small shapes). */
enum fr_cuda_conv_mode { FR_CUDA_CONV_AUTO, FR_CUDA_CONV_IM2COL, FR_CUDA_CONV_TC };

/* One device context (the backend context of one fr_ctx). */
struct fr_cuda {
  int device;
  enum fr_dtype dtype; /* compute/storage dtype of float tensors: F32, F16 or BF16 */
  cudaStream_t stream;
  cublasLtHandle_t lt;
  void *ws; /* cuBLASLt workspace (cudaMalloc'd, ws_size bytes) */
  size_t ws_size;
  struct fr_cuda_pool *pool;
  struct fr_cuda_gemm_entry *gemm; /* descriptor/heuristic cache, gemm_n of gemm_cap entries */
  int gemm_n, gemm_cap;
  uint64_t gemm_tick;
  int sm_count;
  int cc;            /* compute capability, major * 10 + minor */
  size_t smem_optin; /* largest dynamic shared memory a block may opt into */
  bool attn_simple; /* FLOWRUN_CUDA_ATTN=simple: the CUDA-core attention kernel even where tensor cores fit */
  enum fr_cuda_conv_mode conv_mode; /* FLOWRUN_CUDA_CONV */
  struct fr_cuda_arena *recording;  /* graph.cu: the arena of the recording in progress, or NULL */
};

/* ---- errors ---- */

/* FR_E_DEVICE "what: CUDA error <name>: <text>" when e is an error; FR_OK otherwise. */
enum fr_status fr_cuda_err(cudaError_t e, struct fr_err *err, const char *what);
enum fr_status fr_cuda_lt_err(cublasStatus_t s, struct fr_err *err, const char *what);
/* The check after a kernel launch: picks up launch-configuration errors (and earlier asynchronous
 * failures) and names the kernel. */
static inline enum fr_status fr_cuda_launched(struct fr_err *err, const char *kernel) {
  return fr_cuda_err(cudaGetLastError(), err, kernel);
}
#define FR_CUDA_TRY(expr)                                                                                    \
  do {                                                                                                       \
    enum fr_status rc_ = (expr);                                                                             \
    if (rc_ != FR_OK)                                                                                        \
      return rc_;                                                                                            \
  } while (0)

/* ---- memory pool (context.cu) ----
 * Device memory for tensors and temporaries. Freed blocks stay cached and are handed out again for a
 * request of about their size (best fit, at most 25% + 64 KiB larger), so a sampler loop stops calling
 * cudaMalloc after its first step. When cudaMalloc runs out, every cached block is returned to the driver
 * and the allocation tried once more. Thread-safe. */
void *fr_cuda_pool_alloc(struct fr_cuda *cu, size_t n, struct fr_cuda_block **blk);
/* Returns a block to the pool. Work already queued on the stream may still read it: the next user of the
 * block is queued behind it on the same stream. */
void fr_cuda_pool_release(struct fr_cuda_block *blk);
/* Recording (graph.cu): from record_begin to record_end, every block allocated or released belongs to
 * the arena (reserved for the graph's replays) instead of returning to the pool; arena_free gives its
 * free blocks back and the live ones follow when released. At most one recording per context. */
struct fr_cuda_arena;
enum fr_status fr_cuda_pool_record_begin(struct fr_cuda *cu, struct fr_cuda_arena **out, struct fr_err *err);
void fr_cuda_pool_record_end(struct fr_cuda *cu);
void fr_cuda_pool_arena_free(struct fr_cuda *cu, struct fr_cuda_arena *a);

/* ---- cuBLASLt (gemm.cu) ----
 * D = op(A) op(B) (+ bias) (+ D when accumulate), COLUMN-major as in BLAS, batched with strides, in the
 * context's dtype with fp32 accumulation. Row-major callers swap operands (see gemm.cu). Matmul and
 * layout descriptors and the heuristic's algorithm are cached per (dtype, shape, strides, epilogue,
 * operand alignment). */
struct fr_cuda_gemm {
  bool ta, tb; /* op(A) = A^T, op(B) = B^T */
  int64_t m, n, k;
  const void *a;
  int64_t lda, stride_a; /* A stored (ta ? k x m : m x k), leading dimension lda */
  const void *b;
  int64_t ldb, stride_b; /* B stored (tb ? n x k : k x n) */
  void *d;
  int64_t ldd, stride_d; /* D m x n */
  int64_t batch;         /* >= 1 */
  const void *bias;      /* [m] or NULL: bias[i] added to row i of every column */
  bool accumulate;       /* D += ... instead of D = ... */
};
enum fr_status fr_cuda_gemm_run(struct fr_cuda *cu, const struct fr_cuda_gemm *g, struct fr_err *err);
void fr_cuda_gemm_cache_free(struct fr_cuda *cu);
/* ---- 3x3 convolution on tensor cores (conv_tc.cu) ----
 * Whether the implicit-GEMM kernel takes this conv2d (F16/BF16, 3x3, stride 1, padding 1, C % 16 == 0,
 * O % 64 == 0, sm_80+; and, unless FLOWRUN_CUDA_CONV=tc, O <= 256 and enough blocks to fill the device),
 * and the launch. */
bool fr_cuda_conv_tc_fits(const struct fr_cuda *cu, const struct fr_tensor *y, const struct fr_tensor *x,
                          const struct fr_tensor *w, int stride, int pad);
enum fr_status fr_cuda_conv_tc(struct fr_cuda *cu, struct fr_tensor *y, const struct fr_tensor *x,
                               const struct fr_tensor *w, const struct fr_tensor *bias, struct fr_err *err);

/* ---- attention on tensor cores (attention_tc.cu) ----
 * Whether the tensor-core kernel takes this case (F16/BF16 context on sm_80+, head dim a multiple of 8 and
 * at most 512, 16-byte aligned operands, the grid within limits), and the kernel itself. */
bool fr_cuda_attention_tc_fits(const struct fr_cuda *cu, const struct fr_tensor *y, const struct fr_tensor *q,
                               const struct fr_tensor *k, const struct fr_tensor *v, int heads);
enum fr_status fr_cuda_attention_tc(struct fr_cuda *cu, struct fr_tensor *y, const struct fr_tensor *q,
                                    const struct fr_tensor *k, const struct fr_tensor *v, int heads,
                                    bool causal, struct fr_err *err);

/* Fills n elements of y with value v (compute dtype). */
enum fr_status fr_cuda_fill(struct fr_cuda *cu, void *y, int64_t n, float v, struct fr_err *err);

/* Runs `body` with T the storage type of dtype dt (float, __half, __nv_bfloat16); other dtypes are an
 * internal error (ops.c only hands the compute dtype). Use inside a function returning enum fr_status. */
#define FR_CUDA_DISPATCH(dt, err, T, ...)                                                                    \
  switch (dt) {                                                                                              \
  case FR_F32: {                                                                                             \
    typedef float T;                                                                                         \
    __VA_ARGS__;                                                                                             \
  } break;                                                                                                   \
  case FR_F16: {                                                                                             \
    typedef __half T;                                                                                        \
    __VA_ARGS__;                                                                                             \
  } break;                                                                                                   \
  case FR_BF16: {                                                                                            \
    typedef __nv_bfloat16 T;                                                                                 \
    __VA_ARGS__;                                                                                             \
  } break;                                                                                                   \
  default: return fr_errf(err, FR_E_INTERNAL, "cuda: dtype %s is not a compute dtype", fr_dtype_name(dt));   \
  }

#define FR_CUDA_THREADS 256
/* Blocks for a grid-stride loop over n items: enough to fill the GPU, never past the grid limit. */
/* Whether a kernel may move n elements in 16-byte vectors of vec: n a multiple of vec and every pointer
 * (NULL: none) 16-byte aligned. */
static inline bool fr_cuda_vec_ok(int64_t n, int vec, const void *a, const void *b, const void *c) {
  return n % vec == 0 && ((uintptr_t)a & 15) == 0 && ((uintptr_t)b & 15) == 0 && ((uintptr_t)c & 15) == 0;
}

static inline unsigned fr_cuda_blocks(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1)
    b = 1;
  if (b > (1 << 20))
    b = 1 << 20;
  return (unsigned)b;
}
#endif
