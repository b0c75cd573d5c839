/* LayerNorm over the last dim, the device code of norm.cu's fr_cuda_layer_norm, apart so that
 * tests/unit/test_cuda_emu.cpp can run it on the host.
 *
 * One warp per row (8 rows to a block of 256 threads, rows strided over the grid): the transformer blocks'
 * rows are 320 to 1280 wide, too short to spread over a block (whose reductions cost two barriers each),
 * and a warp reduces with shuffles alone. The row is read three times (sum, sum of squared deviations from
 * the mean: two-pass, so a large mean does not cancel the variance; then the output); the later reads hit
 * the caches. Statistics in fp32, the output rounded once. V: in 16-byte vectors (C a multiple of
 * FR_VEC(T), every pointer aligned). */
#ifndef FR_KERNELS_CUDA_LAYER_NORM_CUH
#define FR_KERNELS_CUDA_LAYER_NORM_CUH

#include <stdint.h>

#include "kernels/cuda/device.cuh"

#define FR__LN_ROWS 8 /* rows (warps) per block */

__device__ __forceinline__ float fr__warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T, bool V>
static __global__ void fr__layer_norm_kernel(T *y, const T *x, const T *gamma, const T *beta, int64_t rows,
                                             int64_t C, float eps) {
  constexpr int K = V ? FR_VEC(T) : 1;
  const int lane = threadIdx.x & 31;
  const int64_t nv = C / K;
  for (int64_t r = (int64_t)blockIdx.x * FR__LN_ROWS + (threadIdx.x >> 5); r < rows;
       r += (int64_t)gridDim.x * FR__LN_ROWS) {
    const T *xr = x + r * C;
    T *yr = y + r * C;
    float s = 0.0f;
    for (int64_t j = lane; j < nv; j += 32) {
      float v[K];
      fr_ldk<T, V>(xr + j * K, v);
#pragma unroll
      for (int k = 0; k < K; k++)
        s += v[k];
    }
    const float mean = fr__warp_sum(s) / (float)C;
    s = 0.0f;
    for (int64_t j = lane; j < nv; j += 32) {
      float v[K];
      fr_ldk<T, V>(xr + j * K, v);
#pragma unroll
      for (int k = 0; k < K; k++) {
        const float d = v[k] - mean;
        s = fmaf(d, d, s);
      }
    }
    const float rstd = rsqrtf(fr__warp_sum(s) / (float)C + eps);
    for (int64_t j = lane; j < nv; j += 32) {
      float v[K], g[K], b[K];
      fr_ldk<T, V>(xr + j * K, v);
      if (gamma)
        fr_ldk<T, V>(gamma + j * K, g);
      if (beta)
        fr_ldk<T, V>(beta + j * K, b);
#pragma unroll
      for (int k = 0; k < K; k++)
        v[k] = (v[k] - mean) * rstd * (gamma ? g[k] : 1.0f) + (beta ? b[k] : 0.0f);
      fr_stk<T, V>(yr + j * K, v);
    }
  }
}

#endif
