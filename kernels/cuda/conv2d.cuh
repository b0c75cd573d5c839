/* The device code of conv2d.cu (im2col and the bias fill), apart so that tests/unit/test_cuda_emu.cpp can
 * run it on the host. */
#ifndef FR_KERNELS_CUDA_CONV2D_CUH
#define FR_KERNELS_CUDA_CONV2D_CUH

#include <stdint.h>

#include "kernels/cuda/device.cuh"

/* cols_b[r, p] for image b = blockIdx.z (of a group), row r = (c, ki, kj) in [0, CK) along grid y, and
 * p = (oh - oh0) * Wo + ow in [0, pc) along grid x. The row's (c, ki, kj) is split once per thread and the
 * pixel's (oh, ow) with one 32-bit division: pc, H, W < 2^31 (pc is bounded by the budget). */
template <typename T>
static __global__ void fr__im2col_kernel(T *cols, const T *x, int C, int H, int W, int kh, int kw, int Wo,
                                         int oh0, int pc, int K, int stride, int pad) {
  const T *xb = x + (int64_t)blockIdx.z * C * H * W;
  T *cb = cols + (int64_t)blockIdx.z * K * pc;
  for (int r = blockIdx.y; r < K; r += gridDim.y) {
    const int c = r / (kh * kw), kk = r % (kh * kw), ki = kk / kw, kj = kk % kw;
    const T *xc = xb + (int64_t)c * H * W;
    T *row = cb + (int64_t)r * pc;
    for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < pc; p += gridDim.x * blockDim.x) {
      const int oh = oh0 + p / Wo, ow = p % Wo;
      const int ih = oh * stride - pad + ki, iw = ow * stride - pad + kj;
      row[p] = ih >= 0 && ih < H && iw >= 0 && iw < W ? xc[(int64_t)ih * W + iw] : (T)0.0f;
    }
  }
}

/* y[b, o, p] = bias[o]: row b * O + o along grid y (strided past 65535 rows), p along x */
template <typename T>
static __global__ void fr__bias_fill_kernel(T *y, const T *bias, int64_t O, int64_t P, int64_t rows) {
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const T v = bias[row % O];
    T *yr = y + row * P;
    for (int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; p < P;
         p += (int64_t)gridDim.x * blockDim.x)
      yr[p] = v;
  }
}

#endif
