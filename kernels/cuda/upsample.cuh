/* Nearest-neighbour 2x upsampling, the device code of movement.cu's fr_cuda_upsample_nearest2x, apart so
 * that tests/unit/test_cuda_emu.cpp can run it on the host. */
#ifndef FR_KERNELS_CUDA_UPSAMPLE_CUH
#define FR_KERNELS_CUDA_UPSAMPLE_CUH

#include <stdint.h>

#include "kernels/cuda/device.cuh"

/* Row r = p * 2H + i of the output along grid y (strided), columns along x: no division per element. V:
 * K = FR_VEC(T) input columns in, 2K output columns out as two vectors (W a multiple of K, both 16-byte
 * aligned). */
template <typename T, bool V>
static __global__ void fr__up2_kernel(T *y, const T *x, int64_t rows, int64_t H, int64_t W) {
  constexpr int K = FR_VEC(T);
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const int64_t p = r / (2 * H), i = r % (2 * H);
    const T *xr = x + (p * H + i / 2) * W;
    T *yr = y + r * 2 * W;
    if (V) {
      for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < W / K;
           j += (int64_t)gridDim.x * blockDim.x) {
        float v[K], o[2 * K];
        fr_ldv(xr + j * K, v);
#pragma unroll
        for (int e = 0; e < K; e++)
          o[2 * e] = o[2 * e + 1] = v[e];
        fr_stv(yr + 2 * j * K, o);
        fr_stv(yr + 2 * j * K + K, o + K);
      }
    } else {
      for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < 2 * W;
           j += (int64_t)gridDim.x * blockDim.x)
        yr[j] = xr[j / 2];
    }
  }
}

#endif
