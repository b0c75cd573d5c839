/* Data movement: concat, slice, permute, pad2d, nearest upsampling, embedding, row gather, and the
 * sinusoidal timestep embedding. Copies are exact in every dtype. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kernels/cuda/internal.cuh"

#include "kernels/cuda/transpose.cuh"
#include "kernels/cuda/upsample.cuh"

/* y[o * ypitch + i] = x[o * xpitch + i] for o < outer, i < w (element offsets pre-applied to x and y):
 * one 2D copy (rows of w elements at two pitches), queued on the stream like a kernel. */
static enum fr_status fr__rows_copy(struct fr_cuda *cu, void *y, const void *x, int64_t outer, int64_t w,
                                    int64_t ypitch, int64_t xpitch, struct fr_err *err) {
  if (outer == 0 || w == 0)
    return FR_OK;
  size_t es = fr_dtype_size(cu->dtype);
  if (outer == 1 || (ypitch == w && xpitch == w))
    return fr_cuda_err(cudaMemcpyAsync(y, x, (size_t)(outer * w) * es, cudaMemcpyDeviceToDevice, cu->stream),
                       err, "row copy: cudaMemcpyAsync");
  if ((size_t)ypitch * es > INT32_MAX ||
      (size_t)xpitch * es > INT32_MAX) { /* past the 2D copy's pitch limit */
    for (int64_t o = 0; o < outer; o++)
      FR_CUDA_TRY(fr_cuda_err(cudaMemcpyAsync((char *)y + (size_t)(o * ypitch) * es,
                                              (const char *)x + (size_t)(o * xpitch) * es, (size_t)w * es,
                                              cudaMemcpyDeviceToDevice, cu->stream),
                              err, "row copy: cudaMemcpyAsync"));
    return FR_OK;
  }
  return fr_cuda_err(cudaMemcpy2DAsync(y, (size_t)ypitch * es, x, (size_t)xpitch * es, (size_t)w * es,
                                       (size_t)outer, cudaMemcpyDeviceToDevice, cu->stream),
                     err, "row copy: cudaMemcpy2DAsync");
}

enum fr_status fr_cuda_concat(void *bp, struct fr_tensor *y, const struct fr_tensor *const *xs, int n,
                              int dim, struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bp;
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < dim; d++)
    outer *= y->shape[d];
  for (int d = dim + 1; d < y->ndim; d++)
    inner *= y->shape[d];
  int64_t yrow = y->shape[dim] * inner, off = 0;
  size_t es = fr_dtype_size(cu->dtype);
  for (int i = 0; i < n; i++) {
    int64_t row = xs[i]->shape[dim] * inner;
    FR_CUDA_TRY(
        fr__rows_copy(cu, (char *)y->data + (size_t)off * es, xs[i]->data, outer, row, yrow, row, err));
    off += row;
  }
  return FR_OK;
}

enum fr_status fr_cuda_slice(void *bp, struct fr_tensor *y, const struct fr_tensor *x, int dim, int64_t start,
                             struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bp;
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < dim; d++)
    outer *= x->shape[d];
  for (int d = dim + 1; d < x->ndim; d++)
    inner *= x->shape[d];
  int64_t xrow = x->shape[dim] * inner, yrow = y->shape[dim] * inner;
  size_t es = fr_dtype_size(cu->dtype);
  return fr__rows_copy(cu, y->data, (const char *)x->data + (size_t)(start * inner) * es, outer, yrow, yrow,
                       xrow, err);
}

struct fr__perm {
  int nd;
  int64_t shape[FR_MAX_DIMS]; /* output shape */
  int64_t st[FR_MAX_DIMS];    /* input element stride of each output dim */
};

/* I: int where every index fits (a 32-bit division is a fraction of a 64-bit one), else int64_t. */
template <typename T, typename I>
static __global__ void fr__permute_kernel(T *y, const T *x, int64_t n, struct fr__perm p) {
  I shape[FR_MAX_DIMS], st[FR_MAX_DIMS];
  for (int d = 0; d < FR_MAX_DIMS; d++)
    shape[d] = (I)p.shape[d], st[d] = (I)p.st[d];
  for (I e = (I)(blockIdx.x * blockDim.x + threadIdx.x); e < (I)n; e += (I)(gridDim.x * blockDim.x)) {
    I rem = e, off = 0;
    for (int d = p.nd - 1; d >= 0; d--) {
      const I q = rem / shape[d];
      off += (rem - q * shape[d]) * st[d];
      rem = q;
    }
    y[e] = x[off];
  }
}

enum fr_status fr_cuda_permute(void *bp, struct fr_tensor *y, const struct fr_tensor *x, const int *perm,
                               struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bp;
  int64_t n = fr_tensor_numel(y);
  if (n == 0)
    return FR_OK;
  if (x->ndim == 0)
    return fr_cuda_err(
        cudaMemcpyAsync(y->data, x->data, fr_tensor_nbytes(y), cudaMemcpyDeviceToDevice, cu->stream), err,
        "permute: cudaMemcpyAsync");
  int64_t A, M, N;
  if (fr__as_transpose(x->ndim, x->shape, perm, &A, &M, &N) && A <= 65535 &&
      (M + FR__TT - 1) / FR__TT <= 65535 && (N + FR__TT - 1) / FR__TT <= INT32_MAX) {
    dim3 grid((unsigned)((N + FR__TT - 1) / FR__TT), (unsigned)((M + FR__TT - 1) / FR__TT), (unsigned)A);
    FR_CUDA_DISPATCH(cu->dtype, err, T,
                     fr__transpose_kernel<T>
                     <<<grid, dim3(FR__TT, FR__TR), 0, cu->stream>>>((T *)y->data, (const T *)x->data, M, N));
    return fr_cuda_launched(err, "transpose kernel");
  }
  int64_t xst[FR_MAX_DIMS], s = 1;
  for (int d = x->ndim - 1; d >= 0; d--) {
    xst[d] = s;
    s *= x->shape[d];
  }
  struct fr__perm p;
  memset(&p, 0, sizeof p);
  p.nd = x->ndim;
  for (int d = 0; d < x->ndim; d++) {
    p.shape[d] = y->shape[d];
    p.st[d] = xst[perm[d]];
  }
  unsigned g = fr_cuda_blocks(n, FR_CUDA_THREADS);
  if (n < INT32_MAX - (int64_t)g * FR_CUDA_THREADS) {
    FR_CUDA_DISPATCH(cu->dtype, err, T,
                     fr__permute_kernel<T, int>
                     <<<g, FR_CUDA_THREADS, 0, cu->stream>>>((T *)y->data, (const T *)x->data, n, p));
  } else {
    FR_CUDA_DISPATCH(cu->dtype, err, T,
                     fr__permute_kernel<T, int64_t>
                     <<<g, FR_CUDA_THREADS, 0, cu->stream>>>((T *)y->data, (const T *)x->data, n, p));
  }
  return fr_cuda_launched(err, "permute kernel");
}

template <typename T>
static __global__ void fr__pad2d_kernel(T *y, const T *x, int64_t n, int64_t H, int64_t W, int64_t Ho,
                                        int64_t Wo, int left, int top, float value) {
  FR_CUDA_LOOP(e, n) {
    int64_t j = e % Wo, i = (e / Wo) % Ho, p = e / (Wo * Ho);
    int64_t si = i - top, sj = j - left;
    if (si >= 0 && si < H && sj >= 0 && sj < W)
      y[e] = x[(p * H + si) * W + sj];
    else
      fr_st(y + e, value);
  }
}

enum fr_status fr_cuda_pad2d(void *bp, struct fr_tensor *y, const struct fr_tensor *x, int left, int top,
                             float value, struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bp;
  int nd = x->ndim;
  int64_t n = fr_tensor_numel(y);
  if (n == 0)
    return FR_OK;
  int64_t H = x->shape[nd - 2], W = x->shape[nd - 1], Ho = y->shape[nd - 2], Wo = y->shape[nd - 1];
  FR_CUDA_DISPATCH(cu->dtype, err, T,
                   fr__pad2d_kernel<T>
                   <<<fr_cuda_blocks(n, FR_CUDA_THREADS), FR_CUDA_THREADS, 0, cu->stream>>>(
                       (T *)y->data, (const T *)x->data, n, H, W, Ho, Wo, left, top, value));
  return fr_cuda_launched(err, "pad2d kernel");
}

enum fr_status fr_cuda_upsample_nearest2x(void *bp, struct fr_tensor *y, const struct fr_tensor *x,
                                          struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bp;
  int64_t n = fr_tensor_numel(y);
  if (n == 0)
    return FR_OK;
  int64_t H = x->shape[x->ndim - 2], W = x->shape[x->ndim - 1];
  int64_t rows = n / (2 * W); /* p * 2H + i */
  FR_CUDA_DISPATCH(cu->dtype, err, T, {
    const bool v = fr_cuda_vec_ok(W, FR_VEC(T), x->data, y->data, NULL);
    unsigned gx = fr_cuda_blocks(v ? W / FR_VEC(T) : 2 * W, FR_CUDA_THREADS);
    dim3 grid(gx > 64 ? 64 : gx, (unsigned)(rows < 65535 ? rows : 65535));
    if (v)
      fr__up2_kernel<T, true>
          <<<grid, FR_CUDA_THREADS, 0, cu->stream>>>((T *)y->data, (const T *)x->data, rows, H, W);
    else
      fr__up2_kernel<T, false>
          <<<grid, FR_CUDA_THREADS, 0, cu->stream>>>((T *)y->data, (const T *)x->data, rows, H, W);
  });
  return fr_cuda_launched(err, "upsample kernel");
}

template <typename T, typename I>
static __global__ void fr__embed_kernel(T *y, const I *ids, const T *table, int64_t n, int64_t D) {
  int64_t total = n * D;
  FR_CUDA_LOOP(e, total) {
    int64_t i = e / D, d = e % D;
    y[e] = table[(int64_t)ids[i] * D + d];
  }
}

/* The ids are checked on the host first (they are few: token ids), so an id out of range is FR_E_INVALID
 * naming it and its position, never an out-of-bounds read on the device. */
enum fr_status fr_cuda_embedding(void *bp, struct fr_tensor *y, const struct fr_tensor *ids,
                                 const struct fr_tensor *table, struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bp;
  int64_t n = fr_tensor_numel(ids), V = table->shape[0], D = table->shape[1];
  if (n == 0)
    return FR_OK;
  size_t nb = fr_tensor_nbytes(ids);
  void *h = fr_malloc(nb);
  if (!h)
    return fr_errf(err, FR_E_NOMEM, "out of host memory checking %lld ids", (long long)n);
  enum fr_status rc = fr_cuda_err(cudaMemcpyAsync(h, ids->data, nb, cudaMemcpyDeviceToHost, cu->stream), err,
                                  "cudaMemcpyAsync ids");
  if (rc == FR_OK)
    rc = fr_cuda_err(cudaStreamSynchronize(cu->stream), err, "cudaStreamSynchronize (a queued op failed)");
  for (int64_t i = 0; rc == FR_OK && i < n; i++) {
    int64_t id = ids->dtype == FR_I64 ? ((const int64_t *)h)[i] : ((const int32_t *)h)[i];
    if (id < 0 || id >= V)
      rc = fr_errf(err, FR_E_INVALID, "id %lld at position %lld is outside the table's %lld rows",
                   (long long)id, (long long)i, (long long)V);
  }
  fr_free(h);
  if (rc != FR_OK || D == 0)
    return rc;
  unsigned g = fr_cuda_blocks(n * D, FR_CUDA_THREADS);
  if (ids->dtype == FR_I64) {
    FR_CUDA_DISPATCH(cu->dtype, err, T,
                     fr__embed_kernel<T, int64_t><<<g, FR_CUDA_THREADS, 0, cu->stream>>>(
                         (T *)y->data, (const int64_t *)ids->data, (const T *)table->data, n, D));
  } else {
    FR_CUDA_DISPATCH(cu->dtype, err, T,
                     fr__embed_kernel<T, int32_t><<<g, FR_CUDA_THREADS, 0, cu->stream>>>(
                         (T *)y->data, (const int32_t *)ids->data, (const T *)table->data, n, D));
  }
  return fr_cuda_launched(err, "embedding kernel");
}

/* index is on the host and already checked by ops.c: one device-to-device copy per row. */
enum fr_status fr_cuda_gather_rows(void *bp, struct fr_tensor *y, const struct fr_tensor *x,
                                   const int64_t *index, struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bp;
  int64_t B = x->shape[0], T = x->shape[1], D = x->shape[2];
  size_t es = fr_dtype_size(cu->dtype), row = (size_t)D * es;
  if (row == 0)
    return FR_OK;
  for (int64_t i = 0; i < B; i++)
    FR_CUDA_TRY(fr_cuda_err(cudaMemcpyAsync((char *)y->data + (size_t)i * row,
                                            (const char *)x->data + (size_t)(i * T + index[i]) * row, row,
                                            cudaMemcpyDeviceToDevice, cu->stream),
                            err, "gather_rows: cudaMemcpyAsync"));
  return FR_OK;
}

/* Same fp32 steps as the CPU and diffusers: exponent, exp, t * freq, sin/cos (precise sinf/cosf, whose
 * range reduction handles t * freq up to ~1000). */
template <typename T>
static __global__ void fr__timestep_kernel(T *y, const T *t, int64_t N, int64_t dim, int flip, float shift,
                                           float lnp) {
  int64_t half = dim / 2, total = N * dim;
  FR_CUDA_LOOP(e, total) {
    int64_t n = e / dim, j = e % dim;
    float v = 0.0f; /* odd dim: the last column is zero padding */
    if (j < 2 * half) {
      int64_t i = j < half ? j : j - half;
      float ex = (-lnp * (float)i) / ((float)half - shift);
      float arg = fr_ld(t + n) * expf(ex);
      bool first = j < half; /* first half: cos when flipped, sin otherwise */
      v = (first == (flip != 0)) ? cosf(arg) : sinf(arg);
    }
    fr_st(y + e, v);
  }
}

enum fr_status fr_cuda_timestep_embedding(void *bp, struct fr_tensor *y, const struct fr_tensor *t,
                                          bool flip_sin_to_cos, float downscale_freq_shift, float max_period,
                                          struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bp;
  int64_t N = t->shape[0], dim = y->shape[1], total = N * dim;
  if (total == 0)
    return FR_OK;
  FR_CUDA_DISPATCH(cu->dtype, err, T,
                   fr__timestep_kernel<T>
                   <<<fr_cuda_blocks(total, FR_CUDA_THREADS), FR_CUDA_THREADS, 0, cu->stream>>>(
                       (T *)y->data, (const T *)t->data, N, dim, flip_sin_to_cos ? 1 : 0,
                       downscale_freq_shift, logf(max_period)));
  return fr_cuda_launched(err, "timestep embedding kernel");
}
