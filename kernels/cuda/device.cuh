/* Device-side helpers every kernel uses: loads and stores that widen to / round from fp32, and block-wide
 * reductions. Kept apart from internal.cuh (which needs the CUDA runtime and cuBLASLt headers) so that
 * tests/unit/test_cuda_emu.cpp can compile kernels that use them on the host (FR_CUDA_EMULATE: the emulator
 * supplies the half/bfloat16 types, their conversions, the shuffles and __syncthreads). */
#ifndef FR_KERNELS_CUDA_DEVICE_CUH
#define FR_KERNELS_CUDA_DEVICE_CUH

#include <math.h>
#include <string.h>

#ifndef FR_CUDA_EMULATE
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <vector_types.h>
#endif

/* Grid-stride loop over n items with an int64 index. */
#define FR_CUDA_LOOP(i, n)                                                                                   \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                                  \
       i += (int64_t)gridDim.x * blockDim.x)

template <typename T> __device__ __forceinline__ float fr_ld(const T *p);
template <> __device__ __forceinline__ float fr_ld<float>(const float *p) {
  return *p;
}
template <> __device__ __forceinline__ float fr_ld<__half>(const __half *p) {
  return __half2float(*p);
}
template <> __device__ __forceinline__ float fr_ld<__nv_bfloat16>(const __nv_bfloat16 *p) {
  return __bfloat162float(*p);
}
template <typename T> __device__ __forceinline__ void fr_st(T *p, float v);
template <> __device__ __forceinline__ void fr_st<float>(float *p, float v) {
  *p = v;
}
template <> __device__ __forceinline__ void fr_st<__half>(__half *p, float v) {
  *p = __float2half_rn(v);
}
template <> __device__ __forceinline__ void fr_st<__nv_bfloat16>(__nv_bfloat16 *p, float v) {
  *p = __float2bfloat16_rn(v);
}

/* 16-byte vectors: FR_VEC(T) elements (8 for F16/BF16, 4 for F32) moved by one load or store, so that a
 * thread keeps 16 bytes in flight instead of 2 (memory-bound kernels in F16 otherwise cannot have enough
 * loads outstanding to use the bandwidth). p must be 16-byte aligned. */
#define FR_VEC(T) ((int)(16 / sizeof(T)))
template <typename T> __device__ __forceinline__ void fr_ldv(const T *p, float *v) {
  const uint4 u = *reinterpret_cast<const uint4 *>(p);
  T t[FR_VEC(T)];
  memcpy(t, &u, 16); /* not a pointer cast: no aliasing of the vector's bytes as T (registers either way) */
#pragma unroll
  for (int i = 0; i < FR_VEC(T); i++)
    v[i] = fr_ld(t + i);
}
template <typename T> __device__ __forceinline__ void fr_stv(T *p, const float *v) {
  T t[FR_VEC(T)];
#pragma unroll
  for (int i = 0; i < FR_VEC(T); i++)
    fr_st(t + i, v[i]);
  uint4 u;
  memcpy(&u, t, 16);
  *reinterpret_cast<uint4 *>(p) = u;
}

/* K = V ? FR_VEC(T) : 1 elements at p as floats, and back: the one body of a kernel with a vector form (V:
 * one 16-byte access, p aligned) and a scalar one. */
template <typename T, bool V> __device__ __forceinline__ void fr_ldk(const T *p, float *v) {
  if constexpr (V)
    fr_ldv(p, v);
  else
    v[0] = fr_ld(p);
}
template <typename T, bool V> __device__ __forceinline__ void fr_stk(T *p, const float *v) {
  if constexpr (V)
    fr_stv(p, v);
  else
    fr_st(p, v[0]);
}

/* Block-wide sum of v over blockDim.x threads (a multiple of 32, at most 1024); every thread gets it.
 * sh: 32 floats of shared memory. Contains __syncthreads: call from all threads of the block. */
__device__ __forceinline__ float fr_block_sum(float v, float *sh) {
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads(); /* sh may still be read from a previous call */
  if (lane == 0)
    sh[w] = v;
  __syncthreads();
  v = lane < nw ? sh[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float fr_block_max(float v, float *sh) {
  for (int o = 16; o > 0; o >>= 1)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0)
    sh[w] = v;
  __syncthreads();
  v = lane < nw ? sh[lane] : -INFINITY;
  for (int o = 16; o > 0; o >>= 1)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

#endif
