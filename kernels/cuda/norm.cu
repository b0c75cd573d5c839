/* GroupNorm (+SiLU fused), LayerNorm and softmax. One block per group / row; statistics are fp32, two-pass
 * (mean, then the mean of squared deviations) so a large mean does not cancel the variance; the output is
 * rounded once to the storage dtype. */
#include <math.h>

#include "kernels/cuda/internal.cuh"

/* One block per (batch, group): x viewed as [B, G, cpg * S]. */
template <typename T>
static __global__ void fr__group_norm_kernel(T *y, const T *x, const T *gamma, const T *beta, int64_t G,
                                             int64_t cpg, int64_t S, float eps, int silu) {
  __shared__ float sh[32];
  int64_t grp = blockIdx.x, n = cpg * S;
  const T *xg = x + grp * n;
  T *yg = y + grp * n;
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
    s += fr_ld(xg + i);
  float mean = fr_block_sum(s, sh) / (float)n;
  s = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    float d = fr_ld(xg + i) - mean;
    s = fmaf(d, d, s);
  }
  float rstd = rsqrtf(fr_block_sum(s, sh) / (float)n + eps);
  int64_t c0 = (grp % G) * cpg;
  for (int64_t cc = 0; cc < cpg; cc++) { /* channel by channel: gamma and beta once, no index division */
    const float g = (gamma ? fr_ld(gamma + c0 + cc) : 1.0f) * rstd, bb = beta ? fr_ld(beta + c0 + cc) : 0.0f;
    const T *xc = xg + cc * S;
    T *yc = yg + cc * S;
    for (int64_t i = threadIdx.x; i < S; i += blockDim.x) {
      float v = (fr_ld(xc + i) - mean) * g + bb;
      if (silu)
        v = v / (1.0f + expf(-v));
      fr_st(yc + i, v);
    }
  }
}

enum fr_status fr_cuda_group_norm(void *bp, struct fr_tensor *y, const struct fr_tensor *x, int groups,
                                  const struct fr_tensor *gamma, const struct fr_tensor *beta, float eps,
                                  bool silu, struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bp;
  int64_t B = x->shape[0], C = x->shape[1];
  if (fr_tensor_numel(x) == 0)
    return FR_OK;
  int64_t S = fr_tensor_numel(x) / (B * C), cpg = C / groups, blocks = B * groups;
  if (blocks > INT32_MAX)
    return fr_errf(err, FR_E_UNSUPPORTED, "%lld groups exceed the launch grid", (long long)blocks);
  FR_CUDA_DISPATCH(cu->dtype, err, T,
                   fr__group_norm_kernel<T><<<(unsigned)blocks, 512, 0, cu->stream>>>(
                       (T *)y->data, (const T *)x->data, gamma ? (const T *)gamma->data : NULL,
                       beta ? (const T *)beta->data : NULL, groups, cpg, S, eps, silu ? 1 : 0));
  return fr_cuda_launched(err, "group_norm kernel");
}

/* Grid-stride over rows of C; one block per row at a time. */
template <typename T>
static __global__ void fr__layer_norm_kernel(T *y, const T *x, const T *gamma, const T *beta, int64_t rows,
                                             int64_t C, float eps) {
  __shared__ float sh[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T *xr = x + r * C;
    T *yr = y + r * C;
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x)
      s += fr_ld(xr + i);
    float mean = fr_block_sum(s, sh) / (float)C;
    s = 0.0f;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
      float d = fr_ld(xr + i) - mean;
      s = fmaf(d, d, s);
    }
    float rstd = rsqrtf(fr_block_sum(s, sh) / (float)C + eps);
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
      float v = (fr_ld(xr + i) - mean) * rstd;
      if (gamma)
        v *= fr_ld(gamma + i);
      if (beta)
        v += fr_ld(beta + i);
      fr_st(yr + i, v);
    }
  }
}

enum fr_status fr_cuda_layer_norm(void *bp, struct fr_tensor *y, const struct fr_tensor *x,
                                  const struct fr_tensor *gamma, const struct fr_tensor *beta, float eps,
                                  struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bp;
  int64_t C = x->shape[x->ndim - 1];
  if (C == 0 || fr_tensor_numel(x) == 0)
    return FR_OK;
  int64_t rows = fr_tensor_numel(x) / C;
  unsigned grid = rows > (1 << 20) ? (1u << 20) : (unsigned)rows;
  FR_CUDA_DISPATCH(cu->dtype, err, T,
                   fr__layer_norm_kernel<T><<<grid, 256, 0, cu->stream>>>(
                       (T *)y->data, (const T *)x->data, gamma ? (const T *)gamma->data : NULL,
                       beta ? (const T *)beta->data : NULL, rows, C, eps));
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
