/* The backend interface: what a device (CPU, CUDA) implements so the ops API (kernels/ops.h) runs on it.
 *
 * A backend is a versioned table of function pointers plus an opaque context (like ggml's backend
 * interface or SQLite's vfs). kernels/ops.c owns everything device-independent: the sticky error state,
 * shape and dtype checks, broadcasting rules, output shapes, and allocation of every output tensor through
 * the backend's alloc. A backend op therefore receives tensors whose shapes are already known to fit and
 * an output tensor of the right shape (contents uninitialised) and only computes. It returns FR_OK, or an
 * error with a message in err (ops.c prefixes the op's name); on error ops.c frees the output.
 *
 * All float tensors handed to an op are in the context's compute dtype on the backend's device; index
 * tensors (embedding ids) are I32 or I64 on the device. Everything is contiguous, row-major.
 *
 * Adding an op: add a pointer here (at the end, so older backends keep their layout), bump
 * FR_BACKEND_VERSION when a pointer's meaning changes, and fill it in every backend. See docs/ops.md. */
#ifndef FR_KERNELS_BACKEND_H
#define FR_KERNELS_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "core/tensor.h"
#include "kernels/ops.h"

#define FR_BACKEND_VERSION 1

/* Elementwise unary ops: y = f(x), same shape. p0/p1 are parameters (affine: scale, shift). */
enum fr_unary_op {
  FR_UNARY_SILU,
  FR_UNARY_GELU,       /* exact: 0.5 x (1 + erf(x / sqrt 2)) */
  FR_UNARY_GELU_TANH,  /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
  FR_UNARY_QUICK_GELU, /* x sigmoid(1.702 x) */
  FR_UNARY_AFFINE,     /* x * p0 + p1 */
  FR_UNARY_COPY,
  FR_UNARY_LEAKY_RELU, /* x > 0 ? x : x * p0 (torch's leaky_relu; p0 = 0 is ReLU) */
};

enum fr_binary_op { FR_BINARY_ADD, FR_BINARY_SUB, FR_BINARY_MUL };

/* A broadcast prepared by ops.c: the output's shape with dims of equal broadcast pattern merged
 * (at most FR_MAX_DIMS, innermost last) and the element strides of a and b in it (0 where that
 * operand is broadcast). Element y[i0..in] = a[sum i_k sa_k] op b[sum i_k sb_k]. */
struct fr_bcast {
  int ndim;
  int64_t shape[FR_MAX_DIMS];
  int64_t sa[FR_MAX_DIMS], sb[FR_MAX_DIMS];
};

struct fr_backend {
  int version;        /* FR_BACKEND_VERSION this table was built against */
  const char *name;   /* "cpu", "cuda": the device name fr_ctx_new matches */
  enum fr_device dev; /* where this backend's tensors live */

  /* Creates the backend context for one fr_ctx (threads, streams, handles, scratch). Returns
   * FR_E_DEVICE when the device is unusable, FR_E_UNSUPPORTED for a compute dtype it cannot do. */
  enum fr_status (*init)(const struct fr_ctx_opts *opts, void **bctx, struct fr_err *err);
  void (*free)(void *bctx);

  /* ---- memory ---- */
  /* New tensor on the device, contents uninitialised; NULL when out of memory. Freed by fr_tensor_free
   * (a device backend sets t->release). */
  struct fr_tensor *(*alloc)(void *bctx, enum fr_dtype dt, int ndim, const int64_t *shape);
  /* Host float tensor (F32/F16/BF16) -> weight in the compute dtype. When may_borrow is true and no
   * conversion or transfer is needed, the result may borrow host's data (caller keeps it alive). */
  enum fr_status (*weight)(void *bctx, const struct fr_tensor *host, bool may_borrow, struct fr_tensor **out,
                           struct fr_err *err);
  /* Host F32/F16/BF16/F64 (converted to the compute dtype) or I32/I64 (kept) -> device tensor. */
  enum fr_status (*upload)(void *bctx, const struct fr_tensor *host, struct fr_tensor **out,
                           struct fr_err *err);
  /* Device tensor -> new host tensor: F32 for float dtypes, the same dtype for integers. */
  enum fr_status (*download)(void *bctx, const struct fr_tensor *t, struct fr_tensor **out,
                             struct fr_err *err);

  /* ---- ops: y is allocated by ops.c with the output shape; see kernels/ops.h for each meaning ---- */
  enum fr_status (*linear)(void *bctx, struct fr_tensor *y, const struct fr_tensor *x,
                           const struct fr_tensor *w, const struct fr_tensor *b, struct fr_err *err);
  enum fr_status (*matmul)(void *bctx, struct fr_tensor *y, const struct fr_tensor *a,
                           const struct fr_tensor *b, struct fr_err *err);
  enum fr_status (*conv2d)(void *bctx, struct fr_tensor *y, const struct fr_tensor *x,
                           const struct fr_tensor *w, const struct fr_tensor *b, int stride, int pad,
                           struct fr_err *err);
  enum fr_status (*attention)(void *bctx, struct fr_tensor *y, const struct fr_tensor *q,
                              const struct fr_tensor *k, const struct fr_tensor *v, int heads, bool causal,
                              struct fr_err *err);
  /* x viewed as [B, C, S] (S = product of the dims after C). */
  enum fr_status (*group_norm)(void *bctx, struct fr_tensor *y, const struct fr_tensor *x, int groups,
                               const struct fr_tensor *gamma, const struct fr_tensor *beta, float eps,
                               bool silu, struct fr_err *err);
  enum fr_status (*layer_norm)(void *bctx, struct fr_tensor *y, const struct fr_tensor *x,
                               const struct fr_tensor *gamma, const struct fr_tensor *beta, float eps,
                               struct fr_err *err);
  enum fr_status (*softmax)(void *bctx, struct fr_tensor *y, const struct fr_tensor *x, struct fr_err *err);
  enum fr_status (*unary)(void *bctx, enum fr_unary_op op, struct fr_tensor *y, const struct fr_tensor *x,
                          float p0, float p1, struct fr_err *err);
  enum fr_status (*geglu)(void *bctx, struct fr_tensor *y, const struct fr_tensor *x, struct fr_err *err);
  /* y may be a (fr_add_inplace); then sa is the identity layout of y. */
  enum fr_status (*binary)(void *bctx, enum fr_binary_op op, struct fr_tensor *y, const struct fr_tensor *a,
                           const struct fr_tensor *b, const struct fr_bcast *bc, struct fr_err *err);
  /* dim is already non-negative. */
  enum fr_status (*concat)(void *bctx, struct fr_tensor *y, const struct fr_tensor *const *xs, int n, int dim,
                           struct fr_err *err);
  enum fr_status (*slice)(void *bctx, struct fr_tensor *y, const struct fr_tensor *x, int dim, int64_t start,
                          struct fr_err *err);
  enum fr_status (*permute)(void *bctx, struct fr_tensor *y, const struct fr_tensor *x, const int *perm,
                            struct fr_err *err);
  /* Pads the last two dims; y's shape says how much on the right/bottom. */
  enum fr_status (*pad2d)(void *bctx, struct fr_tensor *y, const struct fr_tensor *x, int left, int top,
                          float value, struct fr_err *err);
  enum fr_status (*upsample_nearest2x)(void *bctx, struct fr_tensor *y, const struct fr_tensor *x,
                                       struct fr_err *err);
  /* Must check every id against the table's row count (FR_E_INVALID naming the id and its position). */
  enum fr_status (*embedding)(void *bctx, struct fr_tensor *y, const struct fr_tensor *ids,
                              const struct fr_tensor *table, struct fr_err *err);
  /* index is a host array of x.shape[0] entries, already checked to lie in [0, T). */
  enum fr_status (*gather_rows)(void *bctx, struct fr_tensor *y, const struct fr_tensor *x,
                                const int64_t *index, struct fr_err *err);
  enum fr_status (*timestep_embedding)(void *bctx, struct fr_tensor *y, const struct fr_tensor *t,
                                       bool flip_sin_to_cos, float downscale_freq_shift, float max_period,
                                       struct fr_err *err);

  /* ---- added after version 1 (NULL where a backend has nothing to do) ---- */
  /* Waits for all queued work of the context. NULL: ops complete in their call (the CPU). */
  enum fr_status (*sync)(void *bctx, struct fr_err *err);
  /* Memory counters of the context's allocator (kernels/ops.h: fr_ctx_mem_stats). NULL: not counted. */
  enum fr_status (*mem_stats)(void *bctx, bool reset_peak, struct fr_ctx_mem *out, struct fr_err *err);
  /* Recorded replays (kernels/ops.h: fr_ctx_record_begin). NULL: the backend cannot record (the CPU).
   * record_end returns the backend's graph object, graph_replay queues it again, graph_free drops it. */
  enum fr_status (*record_begin)(void *bctx, struct fr_err *err);
  enum fr_status (*record_end)(void *bctx, void **graph, struct fr_err *err);
  enum fr_status (*graph_replay)(void *bctx, void *graph, struct fr_err *err);
  void (*graph_free)(void *bctx, void *graph);
  /* Memory the context keeps for reuse but does not use now (kernels/ops.h: fr_ctx_reserve_bytes): the
   * pool's cached blocks, scratch buffers. release: give it back (to the driver, the heap) and return how
   * much was given back. NULL: the backend keeps nothing aside. */
  size_t (*reserve)(void *bctx, bool release);
};

/* The CPU backend is built into every binary. The CUDA one is a module, libflowrun-cuda.so, opened by
 * kernels/ops.c when a CUDA context is first asked for; its one exported function returns its table. */
extern const struct fr_backend fr_backend_cpu;
#define FR_CUDA_MODULE_FILE "libflowrun-cuda.so"
#define FR_CUDA_MODULE_ENTRY "fr_cuda_module_backend"

/* The backend a context runs on (for tests that compare backends). */
const struct fr_backend *fr_ctx_backend(const struct fr_ctx *c);

#endif
