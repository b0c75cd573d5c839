/* Elementwise ops: activations, GEGLU and broadcasting add/sub/mul. fp32 arithmetic on loaded values,
 * one rounding on store. */
#include <math.h>

#include "kernels/cuda/internal.cuh"

#include "kernels/cuda/eltwise.cuh"

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
  FR_CUDA_DISPATCH(cu->dtype, err, T, {
    if (fr_cuda_vec_ok(n, FR_VEC(T), y->data, x->data, NULL))
      fr__unary_kernel<T, true>
          <<<fr_cuda_blocks(n / FR_VEC(T), FR_CUDA_THREADS), FR_CUDA_THREADS, 0, cu->stream>>>(
              (T *)y->data, (const T *)x->data, n, (int)op, p0, p1);
    else
      fr__unary_kernel<T, false><<<fr_cuda_blocks(n, FR_CUDA_THREADS), FR_CUDA_THREADS, 0, cu->stream>>>(
          (T *)y->data, (const T *)x->data, n, (int)op, p0, p1);
  });
  return fr_cuda_launched(err, "unary kernel");
}

enum fr_status fr_cuda_geglu(void *bp, struct fr_tensor *y, const struct fr_tensor *x, struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bp;
  int64_t N = y->shape[y->ndim - 1], total = fr_tensor_numel(y);
  if (N == 0 || total == 0)
    return FR_OK;
  FR_CUDA_DISPATCH(cu->dtype, err, T, {
    const bool v = fr_cuda_vec_ok(N, FR_VEC(T), y->data, x->data, NULL);
    const int64_t work = v ? total / FR_VEC(T) : total;
    const unsigned g = fr_cuda_blocks(work, FR_CUDA_THREADS);
    const bool small = 2 * total < INT32_MAX - (int64_t)g * FR_CUDA_THREADS; /* x's indices, the last step */
    T *py = (T *)y->data;
    const T *px = (const T *)x->data;
    if (v && small)
      fr__geglu_kernel<T, int, true><<<g, FR_CUDA_THREADS, 0, cu->stream>>>(py, px, total / N, N);
    else if (v)
      fr__geglu_kernel<T, int64_t, true><<<g, FR_CUDA_THREADS, 0, cu->stream>>>(py, px, total / N, N);
    else if (small)
      fr__geglu_kernel<T, int, false><<<g, FR_CUDA_THREADS, 0, cu->stream>>>(py, px, total / N, N);
    else
      fr__geglu_kernel<T, int64_t, false><<<g, FR_CUDA_THREADS, 0, cu->stream>>>(py, px, total / N, N);
  });
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
    FR_CUDA_DISPATCH(cu->dtype, err, T, {
      if (fr_cuda_vec_ok(n, FR_VEC(T), y->data, a->data, bt->data))
        fr__binary_same_kernel<T, true>
            <<<fr_cuda_blocks(n / FR_VEC(T), FR_CUDA_THREADS), FR_CUDA_THREADS, 0, cu->stream>>>(
                (T *)y->data, (const T *)a->data, (const T *)bt->data, n, (int)op);
      else
        fr__binary_same_kernel<T, false><<<g, FR_CUDA_THREADS, 0, cu->stream>>>(
            (T *)y->data, (const T *)a->data, (const T *)bt->data, n, (int)op);
    });
  } else if (k.nd == 2 && k.sa[1] == 1 && k.sa[0] == k.shape[1] && (k.sb[1] == 0 || k.sb[1] == 1)) {
    const int64_t R = k.shape[0], S = k.shape[1], sb0 = k.sb[0];
    const int sb1 = (int)k.sb[1];
    FR_CUDA_DISPATCH(cu->dtype, err, T, {
      const bool v = fr_cuda_vec_ok(S, FR_VEC(T), y->data, a->data, sb1 ? bt->data : NULL) &&
                     (sb1 == 0 || sb0 % FR_VEC(T) == 0);
      unsigned gx = fr_cuda_blocks(v ? S / FR_VEC(T) : S, FR_CUDA_THREADS);
      dim3 grid(gx > 64 ? 64 : gx, (unsigned)(R < 65535 ? R : 65535));
      if (v)
        fr__binary_rows_kernel<T, true><<<grid, FR_CUDA_THREADS, 0, cu->stream>>>(
            (T *)y->data, (const T *)a->data, (const T *)bt->data, R, S, sb0, sb1, (int)op);
      else
        fr__binary_rows_kernel<T, false><<<grid, FR_CUDA_THREADS, 0, cu->stream>>>(
            (T *)y->data, (const T *)a->data, (const T *)bt->data, R, S, sb0, sb1, (int)op);
    });
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
