/* Elementwise ops: activations, GEGLU and broadcasting add/sub/mul. fp32 arithmetic on loaded values,
 * one rounding on store. */
#include <math.h>

#include "kernels/cuda/internal.cuh"

#include "kernels/cuda/eltwise.cuh"

__device__ __forceinline__ float fr__gelu(float v) {
  return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
}

template <typename T>
static __global__ void fr__unary_kernel(T *y, const T *x, int64_t n, int op, float p0, float p1) {
  FR_CUDA_LOOP(i, n) {
    float v = fr_ld(x + i), r;
    switch (op) {
    case FR_UNARY_SILU: r = v / (1.0f + expf(-v)); break;
    case FR_UNARY_GELU: r = fr__gelu(v); break;
    case FR_UNARY_GELU_TANH:
      r = 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
      break;
    case FR_UNARY_QUICK_GELU: r = v / (1.0f + expf(-1.702f * v)); break;
    case FR_UNARY_AFFINE: r = v * p0 + p1; break;
    default: r = v; break;
    }
    fr_st(y + i, r);
  }
}

enum fr_status fr_cuda_unary(void *bp, enum fr_unary_op op, struct fr_tensor *y, const struct fr_tensor *x,
                             float p0, float p1, struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bp;
  int64_t n = fr_tensor_numel(x);
  if (n == 0)
    return FR_OK;
  if (op == FR_UNARY_COPY)
    return fr_cuda_err(
        cudaMemcpyAsync(y->data, x->data, fr_tensor_nbytes(x), cudaMemcpyDeviceToDevice, cu->stream), err,
        "copy: cudaMemcpyAsync");
  FR_CUDA_DISPATCH(cu->dtype, err, T,
                   fr__unary_kernel<T>
                   <<<fr_cuda_blocks(n, FR_CUDA_THREADS), FR_CUDA_THREADS, 0, cu->stream>>>(
                       (T *)y->data, (const T *)x->data, n, (int)op, p0, p1));
  return fr_cuda_launched(err, "unary kernel");
}

/* y [R, N] = x[:, :N] * gelu(x[:, N:]) with x [R, 2N]. I is the index type: int where every index fits
 * (all SD shapes; a 32-bit division costs a fraction of a 64-bit one), int64_t otherwise. */
template <typename T, typename I>
static __global__ void fr__geglu_kernel(T *y, const T *x, int64_t rows, int64_t N) {
  const I total = (I)(rows * N), n = (I)N;
  for (I e = (I)(blockIdx.x * blockDim.x + threadIdx.x); e < total; e += (I)(gridDim.x * blockDim.x)) {
    const I r = e / n, j = e - r * n;
    const T *xr = x + (int64_t)r * 2 * n;
    fr_st(y + e, fr_ld(xr + j) * fr__gelu(fr_ld(xr + n + j)));
  }
}

enum fr_status fr_cuda_geglu(void *bp, struct fr_tensor *y, const struct fr_tensor *x, struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bp;
  int64_t N = y->shape[y->ndim - 1], total = fr_tensor_numel(y);
  if (N == 0 || total == 0)
    return FR_OK;
  unsigned g = fr_cuda_blocks(total, FR_CUDA_THREADS);
  if (2 * total < INT32_MAX - (int64_t)g * FR_CUDA_THREADS) { /* x's indices too, and the loop's last step */
    FR_CUDA_DISPATCH(cu->dtype, err, T,
                     fr__geglu_kernel<T, int>
                     <<<g, FR_CUDA_THREADS, 0, cu->stream>>>((T *)y->data, (const T *)x->data, total / N, N));
  } else {
    FR_CUDA_DISPATCH(cu->dtype, err, T,
                     fr__geglu_kernel<T, int64_t>
                     <<<g, FR_CUDA_THREADS, 0, cu->stream>>>((T *)y->data, (const T *)x->data, total / N, N));
  }
  return fr_cuda_launched(err, "geglu kernel");
}

enum fr_status fr_cuda_binary(void *bp, enum fr_binary_op op, struct fr_tensor *y, const struct fr_tensor *a,
                              const struct fr_tensor *bt, const struct fr_bcast *bc, struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bp;
  int64_t n = fr_tensor_numel(y);
  if (n == 0)
    return FR_OK;
  if (bc->ndim < 1 || bc->ndim > FR_MAX_DIMS)
    return fr_errf(err, FR_E_INTERNAL, "broadcast with %d dims", bc->ndim);
  struct fr__bc k;
  k.nd = bc->ndim;
  for (int d = 0; d < FR_MAX_DIMS; d++) {
    k.shape[d] = d < bc->ndim ? bc->shape[d] : 1;
    k.sa[d] = d < bc->ndim ? bc->sa[d] : 0;
    k.sb[d] = d < bc->ndim ? bc->sb[d] : 0;
  }
  unsigned g = fr_cuda_blocks(n, FR_CUDA_THREADS);
  if (k.nd == 1 && k.sa[0] == 1 && k.sb[0] == 1) {
    FR_CUDA_DISPATCH(cu->dtype, err, T,
                     fr__binary_same_kernel<T><<<g, FR_CUDA_THREADS, 0, cu->stream>>>(
                         (T *)y->data, (const T *)a->data, (const T *)bt->data, n, (int)op));
  } else if (n < INT32_MAX - (int64_t)g * FR_CUDA_THREADS && fr_tensor_numel(a) < INT32_MAX &&
             fr_tensor_numel(bt) < INT32_MAX) { /* every index and offset fits an int */
    FR_CUDA_DISPATCH(cu->dtype, err, T,
                     fr__binary_kernel<T, int><<<g, FR_CUDA_THREADS, 0, cu->stream>>>(
                         (T *)y->data, (const T *)a->data, (const T *)bt->data, n, k, (int)op));
  } else {
    FR_CUDA_DISPATCH(cu->dtype, err, T,
                     fr__binary_kernel<T, int64_t><<<g, FR_CUDA_THREADS, 0, cu->stream>>>(
                         (T *)y->data, (const T *)a->data, (const T *)bt->data, n, k, (int)op));
  }
  return fr_cuda_launched(err, "binary kernel");
}
