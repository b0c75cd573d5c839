/* Launch side of the tensor-core 3x3 convolution (conv_tc.cuh, which explains the tiling). */
#include "kernels/cuda/internal.cuh"

#include "kernels/cuda/conv_tc.cuh"

/* Blocks of the grid for a conv: pixel tiles of an image x output-channel tiles x images. */
static int64_t fr__cv_blocks(int64_t B, int64_t O, int64_t H, int64_t W, int64_t *tiles_w) {
  const int TW = fr__cv_tile_w(W), TH = FR__CV_BP / TW;
  *tiles_w = (W + TW - 1) / TW;
  return (H + TH - 1) / TH * *tiles_w * (O / FR__CV_BO) * B;
}

bool fr_cuda_conv_tc_fits(const struct fr_cuda *cu, const struct fr_tensor *y, const struct fr_tensor *x,
                          const struct fr_tensor *w, int stride, int pad) {
  if ((cu->dtype != FR_F16 && cu->dtype != FR_BF16) || cu->cc < 80 || cu->conv_mode == FR_CUDA_CONV_IM2COL)
    return false;
  if (w->shape[2] != 3 || w->shape[3] != 3 || stride != 1 || pad != 1)
    return false;
  const int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3], O = w->shape[0];
  if (C % FR__CV_BC != 0 || O % FR__CV_BO != 0 || C == 0 || B > 65535 || O / FR__CV_BO > 65535)
    return false;
  if (y->shape[2] != H || y->shape[3] != W || H * W >= INT32_MAX / FR__CV_BC ||
      ((uintptr_t)w->data & 15) != 0)
    return false;
  if (FR__CV_SMEM(fr_dtype_size(cu->dtype)) > cu->smem_optin)
    return false;
  int64_t tiles_w, blocks = fr__cv_blocks(B, O, H, W, &tiles_w);
  if (blocks / (O / FR__CV_BO) / B > INT32_MAX)
    return false;
  if (cu->conv_mode == FR_CUDA_CONV_TC)
    return true;
  /* By default only where it should win, by a model still to be replaced with measurements (docs/cuda.md):
   * im2col + cuBLASLt moves 2 x 9C x P elements through memory besides its GEMM, which runs near the
   * device's tensor peak (wgmma), while this kernel skips that traffic but, feeding mma.sync from shared
   * memory, reaches maybe 40% of the peak. Per output channel the GEMM's work grows and the traffic does
   * not, so the kernel pays off for few output channels: O <= 256 (the VAE's 128- and 256-channel
   * layers at 256x256 and up, where im2col moves GBs), not the UNets' 320 to 1280. And a grid smaller than
   * the device (one block per SM) leaves SMs idle for C / 16 long steps each; cuBLASLt splits those. */
  return O <= 256 && blocks >= cu->sm_count;
}

template <typename T>
static enum fr_status fr__conv_tc_launch(struct fr_cuda *cu, struct fr_tensor *y, const struct fr_tensor *x,
                                         const struct fr_tensor *w, const struct fr_tensor *bias,
                                         struct fr_err *err) {
  const int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3], O = w->shape[0];
  const size_t smem = FR__CV_SMEM(sizeof(T));
  FR_CUDA_TRY(fr_cuda_err(
      cudaFuncSetAttribute(fr__conv_tc_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
      err, "conv2d: cudaFuncSetAttribute"));
  int64_t tiles_w, blocks = fr__cv_blocks(B, O, H, W, &tiles_w);
  const int TW = fr__cv_tile_w(W);
  dim3 grid((unsigned)(blocks / (O / FR__CV_BO) / B), (unsigned)(O / FR__CV_BO), (unsigned)B);
  fr__conv_tc_kernel<T><<<grid, FR__CV_THREADS, smem, cu->stream>>>(
      (T *)y->data, (const T *)x->data, (const T *)w->data, bias ? (const T *)bias->data : NULL, (int)C,
      (int)H, (int)W, (int)O, TW, (int)tiles_w);
  return fr_cuda_launched(err, "conv2d (tensor cores) kernel");
}

enum fr_status fr_cuda_conv_tc(struct fr_cuda *cu, struct fr_tensor *y, const struct fr_tensor *x,
                               const struct fr_tensor *w, const struct fr_tensor *bias, struct fr_err *err) {
  if (cu->dtype == FR_F16)
    return fr__conv_tc_launch<__half>(cu, y, x, w, bias, err);
  return fr__conv_tc_launch<__nv_bfloat16>(cu, y, x, w, bias, err);
}
