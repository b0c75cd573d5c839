/* conv2d as im2col + one cuBLASLt GEMM per image and chunk of output rows (correct first; an implicit-GEMM
 * kernel is later work, see docs/cuda.md).
 *
 * Per image b and chunk of output rows [oh0, oh0 + r):  y_b[O, Pc] = w[O, C*kh*kw] cols[C*kh*kw, Pc]
 * (row-major, Pc = r * Wo). Column-major that is  y_b^T [Pc, O] = (cols as Pc x CK) (w as CK x O), written
 * into y with leading dimension P = Ho * Wo. The bias is per output channel, i.e. per COLUMN of that
 * product, which cuBLASLt's BIAS epilogue (per row) cannot add: y is pre-filled with the bias and the
 * GEMMs accumulate (beta = 1). 1x1 stride-1 unpadded convolutions use x_b [C, H*W] directly as cols. */
#include <string.h>

#include "kernels/cuda/internal.cuh"

/* Scratch for the columns of one chunk, in elements: 32M (64 MiB in fp16) bounds the VAE's 512x512 layers. */
#define FR__IM2COL_BUDGET ((int64_t)32 << 20)

/* cols[r, p] for r = (c, ki, kj) in [0, CK), p = (oh - oh0) * Wo + ow in [0, rows * Wo). */
template <typename T>
static __global__ void fr__im2col_kernel(T *cols, const T *x, int64_t C, int64_t H, int64_t W, int kh, int kw,
                                         int64_t Wo, int64_t oh0, int64_t rows, int stride, int pad) {
  int64_t pc = rows * Wo, total = C * kh * kw * pc;
  FR_CUDA_LOOP(e, total) {
    int64_t p = e % pc, r = e / pc;
    int64_t kj = r % kw, ki = (r / kw) % kh, c = r / ((int64_t)kw * kh);
    int64_t oh = oh0 + p / Wo, ow = p % Wo;
    int64_t ih = oh * stride - pad + ki, iw = ow * stride - pad + kj;
    T v = (T)0.0f;
    if (ih >= 0 && ih < H && iw >= 0 && iw < W)
      v = x[(c * H + ih) * W + iw];
    cols[e] = v;
  }
}

/* y[b, o, p] = bias[o] */
template <typename T>
static __global__ void fr__bias_fill_kernel(T *y, const T *bias, int64_t O, int64_t P, int64_t n) {
  FR_CUDA_LOOP(e, n) y[e] = bias[(e / P) % O];
}

enum fr_status fr_cuda_conv2d(void *bp, struct fr_tensor *y, const struct fr_tensor *x,
                              const struct fr_tensor *w, const struct fr_tensor *bias, int stride, int pad,
                              struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bp;
  int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
  int64_t O = w->shape[0], kh = w->shape[2], kw = w->shape[3];
  int64_t Ho = y->shape[2], Wo = y->shape[3], P = Ho * Wo, K = C * kh * kw;
  int64_t n = fr_tensor_numel(y);
  if (n == 0)
    return FR_OK;
  size_t es = fr_dtype_size(cu->dtype);
  if (bias) {
    FR_CUDA_DISPATCH(cu->dtype, err, T,
                     fr__bias_fill_kernel<T>
                     <<<fr_cuda_blocks(n, FR_CUDA_THREADS), FR_CUDA_THREADS, 0, cu->stream>>>(
                         (T *)y->data, (const T *)bias->data, O, P, n));
    FR_CUDA_TRY(fr_cuda_launched(err, "conv2d bias fill kernel"));
  } else {
    FR_CUDA_TRY(fr_cuda_fill(cu, y->data, n, 0.0f, err));
  }
  if (K == 0)
    return FR_OK;
  bool direct = kh == 1 && kw == 1 && stride == 1 && pad == 0;
  int64_t rows = Ho;
  struct fr_cuda_block *blk = NULL;
  void *cols = NULL;
  if (!direct) {
    rows = FR__IM2COL_BUDGET / (K * Wo);
    if (rows < 1)
      rows = 1;
    if (rows > Ho)
      rows = Ho;
    cols = fr_cuda_pool_alloc(cu, (size_t)(K * rows * Wo) * es, &blk);
    if (!cols)
      return fr_errf(err, FR_E_NOMEM, "out of device memory for im2col scratch [%lld, %lld]", (long long)K,
                     (long long)(rows * Wo));
  }
  enum fr_status rc = FR_OK;
  for (int64_t bi = 0; bi < B && rc == FR_OK; bi++) {
    const char *xb = (const char *)x->data + (size_t)(bi * C * H * W) * es;
    char *yb = (char *)y->data + (size_t)(bi * O * P) * es;
    for (int64_t oh0 = 0; oh0 < Ho && rc == FR_OK; oh0 += rows) {
      int64_t r = Ho - oh0 < rows ? Ho - oh0 : rows, pc = r * Wo;
      if (!direct) {
        int64_t total = K * pc;
        FR_CUDA_DISPATCH(cu->dtype, err, T,
                         fr__im2col_kernel<T>
                         <<<fr_cuda_blocks(total, FR_CUDA_THREADS), FR_CUDA_THREADS, 0, cu->stream>>>(
                             (T *)cols, (const T *)xb, C, H, W, (int)kh, (int)kw, Wo, oh0, r, stride, pad));
        rc = fr_cuda_launched(err, "im2col kernel");
        if (rc != FR_OK)
          break;
      }
      struct fr_cuda_gemm g;
      memset(&g, 0, sizeof g);
      g.m = pc;
      g.n = O;
      g.k = K;
      g.a = direct ? (const void *)xb : cols;
      g.lda = direct ? P : pc;
      g.b = w->data;
      g.ldb = K;
      g.d = yb + (size_t)(oh0 * Wo) * es;
      g.ldd = P;
      g.batch = 1;
      g.accumulate = true;
      rc = fr_cuda_gemm_run(cu, &g, err);
    }
  }
  fr_cuda_pool_release(blk);
  return rc;
}
