/* The kernels of eltwise.cu (activations, GEGLU, broadcasting add/sub/mul), apart so that
 * tests/unit/test_cuda_emu.cpp can run them on the host. Kernels with a bool V template parameter have a
 * 16-byte-vector form (device.cuh's fr_ldv/fr_stv), which the launch picks when the lengths are multiples of
 * FR_VEC(T) and the pointers 16-byte aligned: every SD activation is. */
#ifndef FR_KERNELS_CUDA_ELTWISE_CUH
#define FR_KERNELS_CUDA_ELTWISE_CUH

#include <math.h>
#include <stdint.h>

#include "kernels/cuda/device.cuh"

/* FR_MAX_DIMS (core/tensor.h) and enums fr_binary_op, fr_unary_op (kernels/backend.h) come from the includer:
 * internal.cuh for the backend, the emulator test for the host. */

/* The broadcast as ops.c prepared it, passed by value. y may alias a (fr_add_inplace): each element is read
 * and written by the same thread, so no __restrict__. */
struct fr__bc {
  int nd;
  int64_t shape[FR_MAX_DIMS], sa[FR_MAX_DIMS], sb[FR_MAX_DIMS];
};

__device__ __forceinline__ float fr__binop(int op, float va, float vb) {
  return op == FR_BINARY_ADD ? va + vb : op == FR_BINARY_SUB ? va - vb : va * vb;
}

__device__ __forceinline__ float fr__gelu(float v) {
  return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
}

/* enum fr_unary_op (kernels/backend.h) on one value */
__device__ __forceinline__ float fr__unary_op(int op, float v, float p0, float p1) {
  switch (op) {
  case FR_UNARY_SILU: return v / (1.0f + expf(-v));
  case FR_UNARY_GELU: return fr__gelu(v);
  case FR_UNARY_GELU_TANH:
    return 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
  case FR_UNARY_QUICK_GELU: return v / (1.0f + expf(-1.702f * v));
  case FR_UNARY_AFFINE: return v * p0 + p1;
  case FR_UNARY_LEAKY_RELU: return v > 0.0f ? v : v * p0;
  default: return v;
  }
}

template <typename T, bool V>
static __global__ void fr__unary_kernel(T *y, const T *x, int64_t n, int op, float p0, float p1) {
  constexpr int K = V ? FR_VEC(T) : 1;
  FR_CUDA_LOOP(i, n / K) {
    float v[K];
    fr_ldk<T, V>(x + i * K, v);
#pragma unroll
    for (int k = 0; k < K; k++)
      v[k] = fr__unary_op(op, v[k], p0, p1);
    fr_stk<T, V>(y + i * K, v);
  }
}

/* y [R, N] = x[:, :N] * gelu(x[:, N:]) with x [R, 2N]. I is the index type: int where every index fits
 * (all SD shapes; a 32-bit division costs a fraction of a 64-bit one), int64_t otherwise. V: e counts
 * vectors of K = FR_VEC(T) elements (N a multiple of K). */
template <typename T, typename I, bool V>
static __global__ void fr__geglu_kernel(T *y, const T *x, int64_t rows, int64_t N) {
  constexpr int K = V ? FR_VEC(T) : 1;
  const I total = (I)(rows * N / K), n = (I)(N / K);
  for (I e = (I)(blockIdx.x * blockDim.x + threadIdx.x); e < total; e += (I)(gridDim.x * blockDim.x)) {
    const I r = e / n, j = e - r * n;
    const T *xa = x + ((int64_t)r * 2 * n + j) * K, *xg = xa + (int64_t)n * K;
    float va[K], vg[K];
    fr_ldk<T, V>(xa, va);
    fr_ldk<T, V>(xg, vg);
#pragma unroll
    for (int k = 0; k < K; k++)
      va[k] *= fr__gelu(vg[k]);
    fr_stk<T, V>(y + (int64_t)e * K, va);
  }
}

/* The general broadcast: per element, its index split along the merged dims. I as in fr__geglu_kernel. */
template <typename T, typename I>
static __global__ void fr__binary_kernel(T *y, const T *a, const T *b, int64_t n, struct fr__bc bc, int op) {
  I shape[FR_MAX_DIMS], sa[FR_MAX_DIMS], sb[FR_MAX_DIMS];
  for (int d = 0; d < FR_MAX_DIMS; d++)
    shape[d] = (I)bc.shape[d], sa[d] = (I)bc.sa[d], sb[d] = (I)bc.sb[d];
  for (I e = (I)(blockIdx.x * blockDim.x + threadIdx.x); e < (I)n; e += (I)(gridDim.x * blockDim.x)) {
    I rem = e, oa = 0, ob = 0;
    for (int d = bc.nd - 1; d >= 0; d--) {
      const I q = rem / shape[d], i = rem - q * shape[d];
      rem = q;
      oa += i * sa[d];
      ob += i * sb[d];
    }
    fr_st(y + e, fr__binop(op, fr_ld(a + oa), fr_ld(b + ob)));
  }
}

/* The two broadcasts of a 2-D [R, S] walk with a contiguous (sa = {S, 1}): b one value per row (sb = {sb0,
 * 0}: the time embedding added to every pixel of a channel) or one row per row (sb = {sb0, 1}: a bias [S]
 * added to every token, sb0 = 0). Rows along grid y (strided), the row along x. V: in 16-byte vectors
 * along the row (S a multiple of K = FR_VEC(T); with sb1 = 1 also sb0; pointers aligned). */
template <typename T, bool V>
static __global__ void fr__binary_rows_kernel(T *y, const T *a, const T *b, int64_t R, int64_t S, int64_t sb0,
                                              int sb1, int op) {
  constexpr int K = V ? FR_VEC(T) : 1;
  const int64_t nv = S / K;
  for (int64_t r = blockIdx.y; r < R; r += gridDim.y) {
    const T *ar = a + r * S, *br = b + r * sb0;
    T *yr = y + r * S;
    const float bs = sb1 ? 0.0f : fr_ld(br);
    for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < nv;
         j += (int64_t)gridDim.x * blockDim.x) {
      float va[K], vb[K];
      fr_ldk<T, V>(ar + j * K, va);
      if (sb1)
        fr_ldk<T, V>(br + j * K, vb);
#pragma unroll
      for (int k = 0; k < K; k++)
        va[k] = fr__binop(op, va[k], sb1 ? vb[k] : bs);
      fr_stk<T, V>(yr + j * K, va);
    }
  }
}

/* Same shape, both contiguous (the residual adds): no index arithmetic. */
template <typename T, bool V>
static __global__ void fr__binary_same_kernel(T *y, const T *a, const T *b, int64_t n, int op) {
  constexpr int K = V ? FR_VEC(T) : 1;
  FR_CUDA_LOOP(e, n / K) {
    float va[K], vb[K];
    fr_ldk<T, V>(a + e * K, va);
    fr_ldk<T, V>(b + e * K, vb);
#pragma unroll
    for (int k = 0; k < K; k++)
      va[k] = fr__binop(op, va[k], vb[k]);
    fr_stk<T, V>(y + e * K, va);
  }
}

#endif
