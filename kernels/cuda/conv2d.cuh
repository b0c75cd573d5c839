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

/* Convolutions with few output channels (the models' conv_out: 3 or 4), where a GEMM with N = O wastes the
 * tensor cores and im2col's traffic is the whole cost: one thread per output pixel computes all O outputs
 * on the CUDA cores in fp32, with the weights (O x C*kh*kw, fp32) in shared memory; the input is read where
 * it lies (the 9 taps of neighbouring threads hit the caches). Any kernel size, stride and padding. Grid:
 * (pixel blocks, strided; B). Shared memory: O * C * kh * kw floats, behind fr__tc_sh (the emulator's block
 * memory). */
template <typename T, int O>
static __global__ void fr__conv_small_o_kernel(T *y, const T *x, const T *w, const T *bias, int C, int H,
                                               int W, int kh, int kw, int Ho, int Wo, int stride, int pad) {
#ifndef FR_CUDA_EMULATE
  extern __shared__ __align__(16) unsigned char fr__tc_sh[];
#endif
  float *ws = reinterpret_cast<float *>(fr__tc_sh); /* [O][K] */
  const int K = C * kh * kw;
  for (int i = threadIdx.x; i < O * K; i += blockDim.x)
    ws[i] = fr_ld(w + i);
  __syncthreads();
  const int P = Ho * Wo;
  const int64_t b = blockIdx.y;
  const T *xb = x + b * C * H * W;
  for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < P; p += gridDim.x * blockDim.x) {
    const int oh = p / Wo, ow = p % Wo;
    float acc[O];
#pragma unroll
    for (int o = 0; o < O; o++)
      acc[o] = bias ? fr_ld(bias + o) : 0.0f;
    for (int c = 0; c < C; c++) {
      const T *xc = xb + (int64_t)c * H * W;
      for (int ki = 0; ki < kh; ki++) {
        const int ih = oh * stride - pad + ki;
        if (ih < 0 || ih >= H)
          continue;
        for (int kj = 0; kj < kw; kj++) {
          const int iw = ow * stride - pad + kj;
          if (iw < 0 || iw >= W)
            continue;
          const float v = fr_ld(xc + ih * W + iw);
          const float *wk = ws + (c * kh + ki) * kw + kj;
#pragma unroll
          for (int o = 0; o < O; o++)
            acc[o] = fmaf(v, wk[o * K], acc[o]);
        }
      }
    }
#pragma unroll
    for (int o = 0; o < O; o++)
      fr_st(y + (b * O + o) * P + p, acc[o]);
  }
}

#endif
