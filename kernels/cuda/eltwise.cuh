/* The broadcasting add/sub/mul kernels of eltwise.cu, apart so that tests/unit/test_cuda_emu.cpp can run
 * them on the host. */
#ifndef FR_KERNELS_CUDA_ELTWISE_CUH
#define FR_KERNELS_CUDA_ELTWISE_CUH

#include <stdint.h>

#include "kernels/cuda/device.cuh"

/* FR_MAX_DIMS (core/tensor.h) and enum fr_binary_op (kernels/backend.h) come from the includer: internal.cuh
 * for the backend, the emulator test for the host. */

/* The broadcast as ops.c prepared it, passed by value. y may alias a (fr_add_inplace): each element is read
 * and written by the same thread, so no __restrict__. */
struct fr__bc {
  int nd;
  int64_t shape[FR_MAX_DIMS], sa[FR_MAX_DIMS], sb[FR_MAX_DIMS];
};

__device__ __forceinline__ float fr__binop(int op, float va, float vb) {
  return op == FR_BINARY_ADD ? va + vb : op == FR_BINARY_SUB ? va - vb : va * vb;
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

/* Same shape, both contiguous (the residual adds): no index arithmetic. */
template <typename T>
static __global__ void fr__binary_same_kernel(T *y, const T *a, const T *b, int64_t n, int op) {
  FR_CUDA_LOOP(e, n) fr_st(y + e, fr__binop(op, fr_ld(a + e), fr_ld(b + e)));
}

#endif
