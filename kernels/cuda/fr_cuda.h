/* The CUDA backend's entry points, declared for kernels/cuda/backend.c (C) and defined in the .cu files
 * (C++ with C linkage). Nothing outside kernels/cuda/ includes this; the rest of flowrun reaches CUDA
 * through kernels/backend.h (the table backend.c returns). No CUDA header is needed to include it. */
#ifndef FR_KERNELS_CUDA_FR_CUDA_H
#define FR_KERNELS_CUDA_FR_CUDA_H

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* context.cu: device context (stream, cuBLASLt handle and workspace, memory pool) and transfers */
enum fr_status fr_cuda_init(const struct fr_ctx_opts *opts, void **bctx, struct fr_err *err);
void fr_cuda_free(void *bctx);
struct fr_tensor *fr_cuda_alloc(void *bctx, enum fr_dtype dt, int ndim, const int64_t *shape);
enum fr_status fr_cuda_weight(void *bctx, const struct fr_tensor *host, bool may_borrow,
                              struct fr_tensor **out, struct fr_err *err);
enum fr_status fr_cuda_upload(void *bctx, const struct fr_tensor *host, struct fr_tensor **out,
                              struct fr_err *err);
enum fr_status fr_cuda_download(void *bctx, const struct fr_tensor *t, struct fr_tensor **out,
                                struct fr_err *err);
enum fr_status fr_cuda_sync(void *bctx, struct fr_err *err);
enum fr_status fr_cuda_mem_stats(void *bctx, bool reset_peak, struct fr_ctx_mem *out, struct fr_err *err);
size_t fr_cuda_reserve(void *bctx, bool release);

/* gemm.cu */
enum fr_status fr_cuda_linear(void *b, struct fr_tensor *y, const struct fr_tensor *x,
                              const struct fr_tensor *w, const struct fr_tensor *bias, struct fr_err *err);
enum fr_status fr_cuda_matmul(void *b, struct fr_tensor *y, const struct fr_tensor *a,
                              const struct fr_tensor *bm, struct fr_err *err);
/* conv2d.cu */
enum fr_status fr_cuda_conv2d(void *b, struct fr_tensor *y, const struct fr_tensor *x,
                              const struct fr_tensor *w, const struct fr_tensor *bias, int stride, int pad,
                              struct fr_err *err);
/* attention.cu */
enum fr_status fr_cuda_attention(void *b, struct fr_tensor *y, const struct fr_tensor *q,
                                 const struct fr_tensor *k, const struct fr_tensor *v, int heads, bool causal,
                                 struct fr_err *err);
/* norm.cu */
enum fr_status fr_cuda_group_norm(void *b, struct fr_tensor *y, const struct fr_tensor *x, int groups,
                                  const struct fr_tensor *gamma, const struct fr_tensor *beta, float eps,
                                  bool silu, struct fr_err *err);
enum fr_status fr_cuda_layer_norm(void *b, struct fr_tensor *y, const struct fr_tensor *x,
                                  const struct fr_tensor *gamma, const struct fr_tensor *beta, float eps,
                                  struct fr_err *err);
enum fr_status fr_cuda_softmax(void *b, struct fr_tensor *y, const struct fr_tensor *x, struct fr_err *err);
/* eltwise.cu */
enum fr_status fr_cuda_unary(void *b, enum fr_unary_op op, struct fr_tensor *y, const struct fr_tensor *x,
                             float p0, float p1, struct fr_err *err);
enum fr_status fr_cuda_geglu(void *b, struct fr_tensor *y, const struct fr_tensor *x, struct fr_err *err);
enum fr_status fr_cuda_binary(void *b, enum fr_binary_op op, struct fr_tensor *y, const struct fr_tensor *a,
                              const struct fr_tensor *bt, const struct fr_bcast *bc, struct fr_err *err);
/* movement.cu */
enum fr_status fr_cuda_concat(void *b, struct fr_tensor *y, const struct fr_tensor *const *xs, int n, int dim,
                              struct fr_err *err);
enum fr_status fr_cuda_slice(void *b, struct fr_tensor *y, const struct fr_tensor *x, int dim, int64_t start,
                             struct fr_err *err);
enum fr_status fr_cuda_permute(void *b, struct fr_tensor *y, const struct fr_tensor *x, const int *perm,
                               struct fr_err *err);
enum fr_status fr_cuda_pad2d(void *b, struct fr_tensor *y, const struct fr_tensor *x, int left, int top,
                             float value, struct fr_err *err);
enum fr_status fr_cuda_upsample_nearest2x(void *b, struct fr_tensor *y, const struct fr_tensor *x,
                                          struct fr_err *err);
enum fr_status fr_cuda_embedding(void *b, struct fr_tensor *y, const struct fr_tensor *ids,
                                 const struct fr_tensor *table, struct fr_err *err);
enum fr_status fr_cuda_gather_rows(void *b, struct fr_tensor *y, const struct fr_tensor *x,
                                   const int64_t *index, struct fr_err *err);
enum fr_status fr_cuda_timestep_embedding(void *b, struct fr_tensor *y, const struct fr_tensor *t,
                                          bool flip_sin_to_cos, float downscale_freq_shift, float max_period,
                                          struct fr_err *err);
/* graph.cu */
enum fr_status fr_cuda_record_begin(void *bctx, struct fr_err *err);
enum fr_status fr_cuda_record_end(void *bctx, void **graph, struct fr_err *err);
enum fr_status fr_cuda_graph_replay(void *bctx, void *graph, struct fr_err *err);
void fr_cuda_graph_free(void *bctx, void *graph);

#ifdef __cplusplus
}
#endif

#endif
