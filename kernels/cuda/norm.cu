/* GroupNorm (+SiLU fused; the kernels are in group_norm.cuh), LayerNorm (one warp per row,
 * layer_norm.cuh) and softmax (one block per row). Statistics are fp32, two-pass (mean, then the mean of
 * squared deviations) so a large mean does not cancel the variance; the output is rounded once to the
 * storage dtype. */
#include <math.h>

#include "kernels/cuda/internal.cuh"

#include "kernels/cuda/group_norm.cuh"
#include "kernels/cuda/layer_norm.cuh"

enum fr_status fr_cuda_group_norm(void *bp, struct fr_tensor *y, const struct fr_tensor *x, int groups,
                                  const struct fr_tensor *gamma, const struct fr_tensor *beta, float eps,
                                  bool silu, struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bp;
  int64_t B = x->shape[0], C = x->shape[1];
  if (fr_tensor_numel(x) == 0)
    return FR_OK;
  int64_t S = fr_tensor_numel(x) / (B * C), cpg = C / groups, gt = B * groups, n = cpg * S, splits, chunk;
  if (gt > INT32_MAX)
    return fr_errf(err, FR_E_UNSUPPORTED, "%lld groups exceed the launch grid", (long long)gt);
  const int vec = 16 / (int)fr_dtype_size(cu->dtype); /* FR_VEC(T): 8 for F16/BF16, 4 for F32 */
  const bool vs = fr_cuda_vec_ok(n, vec, x->data, NULL, NULL),
             va = fr_cuda_vec_ok(S, vec, x->data, y->data, NULL);
  fr__gn_splits(gt, n, cu->sm_count, vs ? vec : 1, &splits, &chunk);
  struct fr_cuda_block *blk;
  float *part = (float *)fr_cuda_pool_alloc(cu, (size_t)(gt * splits * 3) * sizeof(float), &blk);
  if (!part)
    return fr_errf(err, FR_E_NOMEM, "out of device memory for group_norm statistics");
  const int64_t rows = B * C;
  unsigned gx = fr_cuda_blocks(va ? S / vec : S, 256);
  dim3 sgrid((unsigned)gt, (unsigned)splits),
      agrid(gx > 32 ? 32 : gx, (unsigned)(rows < 65535 ? rows : 65535));
  enum fr_status rc = FR_OK;
  FR_CUDA_DISPATCH(cu->dtype, err, T, {
    if (vs)
      fr__gn_stats_kernel<T, true><<<sgrid, 256, 0, cu->stream>>>(part, (const T *)x->data, n, chunk);
    else
      fr__gn_stats_kernel<T, false><<<sgrid, 256, 0, cu->stream>>>(part, (const T *)x->data, n, chunk);
    rc = fr_cuda_launched(err, "group_norm statistics kernel");
    if (rc == FR_OK) {
      T *py = (T *)y->data;
      const T *px = (const T *)x->data, *pg = gamma ? (const T *)gamma->data : NULL,
              *pb = beta ? (const T *)beta->data : NULL;
      if (va)
        fr__gn_apply_kernel<T, true><<<agrid, 256, 0, cu->stream>>>(py, px, part, pg, pb, C, cpg, groups, S,
                                                                    (int)splits, rows, eps, silu ? 1 : 0);
      else
        fr__gn_apply_kernel<T, false><<<agrid, 256, 0, cu->stream>>>(py, px, part, pg, pb, C, cpg, groups, S,
                                                                     (int)splits, rows, eps, silu ? 1 : 0);
      rc = fr_cuda_launched(err, "group_norm kernel");
    }
  });
  fr_cuda_pool_release(blk); /* stream-ordered: the next user of the block queues behind these kernels */
  return rc;
}

enum fr_status fr_cuda_layer_norm(void *bp, struct fr_tensor *y, const struct fr_tensor *x,
                                  const struct fr_tensor *gamma, const struct fr_tensor *beta, float eps,
                                  struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bp;
  int64_t C = x->shape[x->ndim - 1];
  if (C == 0 || fr_tensor_numel(x) == 0)
    return FR_OK;
  int64_t rows = fr_tensor_numel(x) / C, blocks = (rows + FR__LN_ROWS - 1) / FR__LN_ROWS;
  unsigned grid = blocks > (1 << 20) ? (1u << 20) : (unsigned)blocks;
  FR_CUDA_DISPATCH(cu->dtype, err, T, {
    T *py = (T *)y->data;
    const T *px = (const T *)x->data, *pg = gamma ? (const T *)gamma->data : NULL,
            *pb = beta ? (const T *)beta->data : NULL;
    if (fr_cuda_vec_ok(C, FR_VEC(T), py, px, pg) && fr_cuda_vec_ok(C, FR_VEC(T), pb, NULL, NULL))
      fr__layer_norm_kernel<T, true><<<grid, 32 * FR__LN_ROWS, 0, cu->stream>>>(py, px, pg, pb, rows, C, eps);
    else
      fr__layer_norm_kernel<T, false>
          <<<grid, 32 * FR__LN_ROWS, 0, cu->stream>>>(py, px, pg, pb, rows, C, eps);
  });
  return fr_cuda_launched(err, "layer_norm kernel");
}

/* Softmax over rows of n, fp32, max subtracted; a row that is entirely -inf becomes zeros (as the CPU). */
template <typename T> static __global__ void fr__softmax_kernel(T *y, const T *x, int64_t rows, int64_t n) {
  __shared__ float sh[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T *xr = x + r * n;
    T *yr = y + r * n;
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
      m = fmaxf(m, fr_ld(xr + i));
    m = fr_block_max(m, sh);
    if (m == -INFINITY) {
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
        fr_st(yr + i, 0.0f);
      continue;
    }
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
      s += expf(fr_ld(xr + i) - m);
    float inv = 1.0f / fr_block_sum(s, sh);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
      fr_st(yr + i, expf(fr_ld(xr + i) - m) * inv);
  }
}

enum fr_status fr_cuda_softmax(void *bp, struct fr_tensor *y, const struct fr_tensor *x, struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bp;
  int64_t n = x->shape[x->ndim - 1];
  if (n == 0 || fr_tensor_numel(x) == 0)
    return FR_OK;
  int64_t rows = fr_tensor_numel(x) / n;
  unsigned grid = rows > (1 << 20) ? (1u << 20) : (unsigned)rows;
  FR_CUDA_DISPATCH(cu->dtype, err, T,
                   fr__softmax_kernel<T>
                   <<<grid, 256, 0, cu->stream>>>((T *)y->data, (const T *)x->data, rows, n));
  return fr_cuda_launched(err, "softmax kernel");
}
