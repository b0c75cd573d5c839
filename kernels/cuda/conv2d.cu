/* conv2d as im2col + cuBLASLt GEMMs, for what the tensor-core kernel (conv_tc.cuh: F16/BF16 3x3 convs
 * with stride 1 and padding 1, the bulk of SD's) does not take.
 *
 * For image b and a chunk of output rows [oh0, oh0 + r):  y_b[O, Pc] = w[O, C*kh*kw] cols_b[C*kh*kw, Pc]
 * (row-major, Pc = r * Wo). Column-major that is  y_b^T [Pc, O] = (cols_b as Pc x CK) (w as CK x O),
 * written into y with leading dimension P = Ho * Wo. When whole images fit the column budget, a group of
 * images is one strided-batched GEMM (weights shared: stride 0), so a UNet conv at batch 2 is one im2col
 * and one GEMM launch; larger images (the VAE at 512x512 and up) go a chunk of output rows at a time. The
 * bias is per output channel, i.e. per COLUMN of that product, which cuBLASLt's BIAS epilogue (per row)
 * cannot add: y is pre-filled with the bias and the GEMMs accumulate (beta = 1). 1x1 stride-1 unpadded
 * convolutions use x_b [C, H*W] directly as the columns. */
#include <string.h>

#include "kernels/cuda/internal.cuh"

#include "kernels/cuda/conv2d.cuh"

/* Scratch for the columns of one chunk, in elements: 32M (64 MiB in fp16) bounds the VAE's 512x512 layers. */
#define FR__IM2COL_BUDGET ((int64_t)32 << 20)

/* Weights of a few-output conv in shared memory: at most 48 KiB (no opt-in); the models' conv_out (4 x 320 x
 * 9 floats in the UNets, 3 x 128 x 9 in the VAE) fit. */
#define FR__SMALL_O_SMEM ((int64_t)48 << 10)

static enum fr_status fr__conv_small_o(struct fr_cuda *cu, struct fr_tensor *y, const struct fr_tensor *x,
                                       const struct fr_tensor *w, const struct fr_tensor *bias, int stride,
                                       int pad, struct fr_err *err) {
  const int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
  const int O = (int)w->shape[0], kh = (int)w->shape[2], kw = (int)w->shape[3];
  const int Ho = (int)y->shape[2], Wo = (int)y->shape[3];
  const size_t smem = (size_t)O * (size_t)(C * kh * kw) * sizeof(float);
  unsigned gx = fr_cuda_blocks((int64_t)Ho * Wo, FR_CUDA_THREADS);
  dim3 grid(gx > 4096 ? 4096 : gx, (unsigned)B);
#define FR__SMALL_O(NO)                                                                                      \
  FR_CUDA_DISPATCH(cu->dtype, err, T,                                                                        \
                   fr__conv_small_o_kernel<T, NO><<<grid, FR_CUDA_THREADS, smem, cu->stream>>>(              \
                       (T *)y->data, (const T *)x->data, (const T *)w->data,                                 \
                       bias ? (const T *)bias->data : NULL, (int)C, (int)H, (int)W, kh, kw, Ho, Wo, stride,  \
                       pad))
  switch (O) {
  case 1: FR__SMALL_O(1); break;
  case 2: FR__SMALL_O(2); break;
  case 3: FR__SMALL_O(3); break;
  default: FR__SMALL_O(4); break;
  }
#undef FR__SMALL_O
  return fr_cuda_launched(err, "conv2d (few outputs) kernel");
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
  if (H >= INT32_MAX || W >= INT32_MAX || Wo >= INT32_MAX || K >= INT32_MAX)
    return fr_errf(err, FR_E_UNSUPPORTED, "conv2d: %lld x %lld input, %lld column rows: too large for cuda",
                   (long long)H, (long long)W, (long long)K);
  if (fr_cuda_conv_tc_fits(cu, y, x, w, stride, pad))
    return fr_cuda_conv_tc(cu, y, x, w, bias, err);
  if (O <= 4 && O * K * (int64_t)sizeof(float) <= FR__SMALL_O_SMEM && B <= 65535 && Ho * Wo < INT32_MAX &&
      C * H * W < INT32_MAX && cu->conv_mode != FR_CUDA_CONV_IM2COL)
    return fr__conv_small_o(cu, y, x, w, bias, stride, pad, err);
  size_t es = fr_dtype_size(cu->dtype);
  if (bias) {
    unsigned gx = fr_cuda_blocks(P, FR_CUDA_THREADS);
    dim3 grid(gx > 64 ? 64 : gx, (unsigned)(B * O < 65535 ? B * O : 65535));
    FR_CUDA_DISPATCH(cu->dtype, err, T,
                     fr__bias_fill_kernel<T><<<grid, FR_CUDA_THREADS, 0, cu->stream>>>(
                         (T *)y->data, (const T *)bias->data, O, P, B * O));
    FR_CUDA_TRY(fr_cuda_launched(err, "conv2d bias fill kernel"));
  } else {
    FR_CUDA_TRY(fr_cuda_fill(cu, y->data, n, 0.0f, err));
  }
  if (K == 0)
    return FR_OK;
  bool direct = kh == 1 && kw == 1 && stride == 1 && pad == 0;
  int64_t rows = Ho, group = B; /* output rows per chunk, images per GEMM */
  struct fr_cuda_block *blk = NULL;
  void *cols = NULL;
  if (!direct) {
    if (K * P <= FR__IM2COL_BUDGET) {
      group = FR__IM2COL_BUDGET / (K * P);
      if (group > B)
        group = B;
      if (group > 65535)
        group = 65535; /* grid z */
    } else {
      group = 1;
      rows = FR__IM2COL_BUDGET / (K * Wo);
      if (rows < 1)
        rows = 1;
      if (rows > Ho)
        rows = Ho;
    }
    cols = fr_cuda_pool_alloc(cu, (size_t)(group * K * rows * Wo) * es, &blk);
    if (!cols)
      return fr_errf(err, FR_E_NOMEM, "out of device memory for im2col scratch [%lld, %lld, %lld]",
                     (long long)group, (long long)K, (long long)(rows * Wo));
  }
  enum fr_status rc = FR_OK;
  for (int64_t b0 = 0; b0 < B && rc == FR_OK; b0 += group) {
    int64_t nb = B - b0 < group ? B - b0 : group;
    const char *xb = (const char *)x->data + (size_t)(b0 * C * H * W) * es;
    char *yb = (char *)y->data + (size_t)(b0 * O * P) * es;
    for (int64_t oh0 = 0; oh0 < Ho && rc == FR_OK; oh0 += rows) {
      int64_t r = Ho - oh0 < rows ? Ho - oh0 : rows, pc = r * Wo;
      if (!direct) {
        unsigned gx = fr_cuda_blocks(pc, FR_CUDA_THREADS);
        if (gx > 64)
          gx = 64; /* the row loop covers the rest; K rows along y already fill the GPU */
        dim3 grid(gx, (unsigned)(K < 65535 ? K : 65535), (unsigned)nb);
        FR_CUDA_DISPATCH(cu->dtype, err, T,
                         fr__im2col_kernel<T><<<grid, FR_CUDA_THREADS, 0, cu->stream>>>(
                             (T *)cols, (const T *)xb, (int)C, (int)H, (int)W, (int)kh, (int)kw, (int)Wo,
                             (int)oh0, (int)pc, (int)K, stride, pad));
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
      g.stride_a = direct ? C * H * W : K * pc;
      g.b = w->data;
      g.ldb = K;
      g.stride_b = 0; /* every image of the group: the same weights */
      g.d = yb + (size_t)(oh0 * Wo) * es;
      g.ldd = P;
      g.stride_d = O * P;
      g.batch = nb;
      g.accumulate = true;
      rc = fr_cuda_gemm_run(cu, &g, err);
      if (rc != FR_OK && nb > 1) { /* no batched plan with a shared operand: one GEMM per image */
        struct fr_cuda_gemm g1 = g;
        g1.batch = 1;
        rc = FR_OK;
        for (int64_t i = 0; i < nb && rc == FR_OK; i++) {
          g1.a = (const char *)g.a + (size_t)(i * g.stride_a) * es;
          g1.d = (char *)g.d + (size_t)(i * g.stride_d) * es;
          rc = fr_cuda_gemm_run(cu, &g1, err);
        }
      }
    }
  }
  fr_cuda_pool_release(blk);
  return rc;
}
