/* Launch side of the tensor-core attention kernel (attention_tc.cuh, which explains the tiling). */
#include "kernels/cuda/internal.cuh"

#include "kernels/cuda/attention_tc.cuh"

template <typename T, int DP, int DV, int BK>
static enum fr_status fr__attn_tc_launch(struct fr_cuda *cu, struct fr_tensor *y, const struct fr_tensor *q,
                                         const struct fr_tensor *k, const struct fr_tensor *v, int heads,
                                         int D, bool causal, struct fr_err *err) {
  int64_t B = q->shape[0], Tq = q->shape[1], HD = q->shape[2], Tk = k->shape[1];
  const int chunks = (D + DV - 1) / DV;
  const size_t smem = sizeof(T) * (size_t)(FR__TQ * (DP + 8) + 2 * BK * (DP + 8) + 2 * BK * (DV + 8));
  if (smem > cu->smem_optin)
    return fr_errf(err, FR_E_UNSUPPORTED,
                   "attention: head dim %d needs %zu bytes of shared memory, the device allows %zu", D, smem,
                   cu->smem_optin);
  if (smem > 48 * 1024)
    FR_CUDA_TRY(fr_cuda_err(cudaFuncSetAttribute(fr__attn_tc_kernel<T, DP, DV, BK>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                            err, "attention: cudaFuncSetAttribute"));
  dim3 grid((unsigned)((Tq + FR__TQ - 1) / FR__TQ), (unsigned)(heads * chunks), (unsigned)B);
  const float log2e = 1.4426950408889634f;
  fr__attn_tc_kernel<T, DP, DV, BK><<<grid, FR__TC_THREADS, smem, cu->stream>>>(
      (T *)y->data, (const T *)q->data, (const T *)k->data, (const T *)v->data, Tq, Tk, HD, D, chunks,
      log2e / sqrtf((float)D), causal ? 1 : 0);
  return fr_cuda_launched(err, "attention (tensor cores) kernel");
}

bool fr_cuda_attention_tc_fits(const struct fr_cuda *cu, const struct fr_tensor *y, const struct fr_tensor *q,
                               const struct fr_tensor *k, const struct fr_tensor *v, int heads) {
  if ((cu->dtype != FR_F16 && cu->dtype != FR_BF16) || cu->cc < 80 || cu->attn_simple)
    return false;
  int64_t HD = q->shape[2], D = HD / heads;
  if (D % 8 != 0 || D > 512)
    return false;
  int64_t chunks = D > 160 ? (D + 127) / 128 : 1;
  if (heads * chunks > 65535 || q->shape[0] > 65535 || (q->shape[1] + FR__TQ - 1) / FR__TQ > INT32_MAX)
    return false;
  /* 16-byte rows for cp.async, 4-byte pairs for the output */
  const struct fr_tensor *t4[4] = {y, q, k, v};
  for (int i = 0; i < 4; i++)
    if (((uintptr_t)t4[i]->data & 15) != 0)
      return false;
  return true;
}

enum fr_status fr_cuda_attention_tc(struct fr_cuda *cu, struct fr_tensor *y, const struct fr_tensor *q,
                                    const struct fr_tensor *k, const struct fr_tensor *v, int heads,
                                    bool causal, struct fr_err *err) {
  const int D = (int)(q->shape[2] / heads);
#define FR__TC(DP, DV, BK)                                                                                   \
  do {                                                                                                       \
    if (cu->dtype == FR_F16)                                                                                 \
      return fr__attn_tc_launch<__half, DP, DV, BK>(cu, y, q, k, v, heads, D, causal, err);                  \
    return fr__attn_tc_launch<__nv_bfloat16, DP, DV, BK>(cu, y, q, k, v, heads, D, causal, err);             \
  } while (0)
  if (D <= 16)
    FR__TC(16, 16, 64);
  if (D <= 32)
    FR__TC(32, 32, 64);
  if (D <= 48)
    FR__TC(48, 48, 64);
  if (D <= 64)
    FR__TC(64, 64, 64);
  if (D <= 80)
    FR__TC(80, 80, 64);
  if (D <= 96)
    FR__TC(96, 96, 32);
  if (D <= 128)
    FR__TC(128, 128, 32);
  if (D <= 160)
    FR__TC(160, 160, 32);
  if (D <= 256)
    FR__TC(256, 128, 32);
  FR__TC(512, 128, 32);
#undef FR__TC
}
