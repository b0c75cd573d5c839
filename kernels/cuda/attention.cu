/* Scaled dot-product attention with an fp32 online softmax (flash-attention's recurrence) on CUDA cores:
 * the kernel of F32 contexts (fp32 products, so F32 CUDA matches the cpu to ~1e-6) and the fallback of
 * F16/BF16 ones where the tensor-core kernel (attention_tc.cu) does not fit: a head dim that is not a
 * multiple of 8, an unaligned operand, a pre-sm_80 device, or FLOWRUN_CUDA_ATTN=simple.
 *
 * Grid: (query blocks of FR__QB, heads, batch). A block of 4 warps loads a tile of 32 keys and values into
 * shared memory (fp32) and every warp advances FR__QPW queries over it: lane j scores key j (its K row is
 * padded by one float so the 32 lanes hit 32 banks), the warp takes the tile's max and sum with
 * shuffles, rescales its running output, and adds p_j v_j with lane l owning output dims l, l+32, ...
 * Scores, max, sum and output are fp32 whatever the storage dtype; the output is rounded once at the end. */
#include <math.h>

#include "kernels/cuda/internal.cuh"

#define FR__WARPS 4
#define FR__QPW 4                    /* queries per warp */
#define FR__QB (FR__WARPS * FR__QPW) /* queries per block */
#define FR__KT 32                    /* keys per tile: one per lane */
#define FR__MAXD 512                 /* the VAE's single 512-wide head */

/* NACC = output dims per lane (ceil(D / 32)), a compile-time bound so the accumulators stay in registers. */
template <typename T, int NACC>
static __global__ void __launch_bounds__(FR__WARPS * 32)
    fr__attn_kernel(T *y, const T *q, const T *k, const T *v, int64_t Tq, int64_t Tk, int64_t HD, int D,
                    float scale, int causal) {
  extern __shared__ float sh[];
  float *qs = sh;                    /* [QB][D] scaled queries */
  float *ks = qs + FR__QB * D;       /* [KT][D + 1] */
  float *vs = ks + FR__KT * (D + 1); /* [KT][D] */
  int h = blockIdx.y;
  int64_t b = blockIdx.z, q0 = (int64_t)blockIdx.x * FR__QB;
  int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const T *qb = q + b * Tq * HD + (int64_t)h * D;
  const T *kb = k + b * Tk * HD + (int64_t)h * D;
  const T *vb = v + b * Tk * HD + (int64_t)h * D;

  for (int i = tid; i < FR__QB * D; i += blockDim.x) {
    int qi = i / D, d = i % D;
    qs[i] = q0 + qi < Tq ? fr_ld(qb + (q0 + qi) * HD + d) * scale : 0.0f;
  }
  float m[FR__QPW], l[FR__QPW], acc[FR__QPW][NACC];
#pragma unroll
  for (int j = 0; j < FR__QPW; j++) {
    m[j] = -INFINITY;
    l[j] = 0.0f;
#pragma unroll
    for (int a = 0; a < NACC; a++)
      acc[j][a] = 0.0f;
  }
  int64_t kend = Tk;
  if (causal && q0 + FR__QB < kend)
    kend = q0 + FR__QB; /* no query of this block sees keys past its last query */
  for (int64_t k0 = 0; k0 < kend; k0 += FR__KT) {
    __syncthreads(); /* the previous tile is no longer read (and qs is written, on the first pass) */
    for (int i = tid; i < FR__KT * D; i += blockDim.x) {
      int kj = i / D, d = i % D;
      bool in = k0 + kj < Tk;
      ks[kj * (D + 1) + d] = in ? fr_ld(kb + (k0 + kj) * HD + d) : 0.0f;
      vs[kj * D + d] = in ? fr_ld(vb + (k0 + kj) * HD + d) : 0.0f;
    }
    __syncthreads();
    int nk = Tk - k0 < FR__KT ? (int)(Tk - k0) : FR__KT;
#pragma unroll
    for (int j = 0; j < FR__QPW; j++) {
      int qi = warp * FR__QPW + j;
      int64_t qrow = q0 + qi;
      if (qrow >= Tq) /* uniform across the warp */
        continue;
      int64_t key = k0 + lane;
      bool valid = lane < nk && (!causal || key <= qrow);
      float s = -INFINITY;
      if (valid) {
        const float *qr = qs + qi * D, *kr = ks + lane * (D + 1);
        float a0 = 0.0f;
        for (int d = 0; d < D; d++)
          a0 = fmaf(qr[d], kr[d], a0);
        s = a0;
      }
      float mt = s;
      for (int o = 16; o > 0; o >>= 1)
        mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, o));
      float mnew = fmaxf(m[j], mt);
      if (mnew == -INFINITY) /* every key so far masked: nothing to add */
        continue;
      float p = valid ? expf(s - mnew) : 0.0f;
      float corr = m[j] == -INFINITY ? 0.0f : expf(m[j] - mnew);
      float ps = p;
      for (int o = 16; o > 0; o >>= 1)
        ps += __shfl_xor_sync(0xffffffffu, ps, o);
      l[j] = l[j] * corr + ps;
      m[j] = mnew;
#pragma unroll
      for (int a = 0; a < NACC; a++)
        acc[j][a] *= corr;
      for (int kj = 0; kj < nk; kj++) {
        float pj = __shfl_sync(0xffffffffu, p, kj);
        const float *vr = vs + kj * D;
#pragma unroll
        for (int a = 0; a < NACC; a++) {
          int d = lane + 32 * a;
          if (d < D)
            acc[j][a] = fmaf(pj, vr[d], acc[j][a]);
        }
      }
    }
  }
#pragma unroll
  for (int j = 0; j < FR__QPW; j++) {
    int64_t qrow = q0 + warp * FR__QPW + j;
    if (qrow >= Tq)
      continue;
    float inv = l[j] > 0.0f ? 1.0f / l[j] : 0.0f;
    T *yr = y + (b * Tq + qrow) * HD + (int64_t)h * D;
#pragma unroll
    for (int a = 0; a < NACC; a++) {
      int d = lane + 32 * a;
      if (d < D)
        fr_st(yr + d, acc[j][a] * inv);
    }
  }
}

template <typename T, int NACC>
static enum fr_status fr__attn_launch(struct fr_cuda *cu, struct fr_tensor *y, const struct fr_tensor *q,
                                      const struct fr_tensor *k, const struct fr_tensor *v, int heads, int D,
                                      bool causal, struct fr_err *err) {
  int64_t B = q->shape[0], Tq = q->shape[1], HD = q->shape[2], Tk = k->shape[1];
  size_t smem = (size_t)(FR__QB * D + FR__KT * (D + 1) + FR__KT * D) * sizeof(float);
  if (smem > cu->smem_optin)
    return fr_errf(err, FR_E_UNSUPPORTED,
                   "head dim %d needs %zu bytes of shared memory, the device allows %zu", D, smem,
                   cu->smem_optin);
  if (smem > 48 * 1024)
    FR_CUDA_TRY(fr_cuda_err(cudaFuncSetAttribute(fr__attn_kernel<T, NACC>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                            err, "attention: cudaFuncSetAttribute"));
  dim3 grid((unsigned)((Tq + FR__QB - 1) / FR__QB), (unsigned)heads, (unsigned)B);
  fr__attn_kernel<T, NACC><<<grid, FR__WARPS * 32, smem, cu->stream>>>(
      (T *)y->data, (const T *)q->data, (const T *)k->data, (const T *)v->data, Tq, Tk, HD, D,
      1.0f / sqrtf((float)D), causal ? 1 : 0);
  return fr_cuda_launched(err, "attention kernel");
}

enum fr_status fr_cuda_attention(void *bp, struct fr_tensor *y, const struct fr_tensor *q,
                                 const struct fr_tensor *k, const struct fr_tensor *v, int heads, bool causal,
                                 struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bp;
  int64_t B = q->shape[0], Tq = q->shape[1], HD = q->shape[2];
  if (B == 0 || Tq == 0 || HD == 0)
    return FR_OK;
  int64_t D = HD / heads;
  if (D > FR__MAXD)
    return fr_errf(err, FR_E_UNSUPPORTED, "head dim %lld > %d is not supported on cuda", (long long)D,
                   FR__MAXD);
  if (heads > 65535 || B > 65535 || (Tq + FR__QB - 1) / FR__QB > INT32_MAX)
    return fr_errf(err, FR_E_UNSUPPORTED, "%lld batches x %d heads x %lld queries exceed the launch grid",
                   (long long)B, heads, (long long)Tq);
  if (fr_cuda_attention_tc_fits(cu, y, q, k, v, heads))
    return fr_cuda_attention_tc(cu, y, q, k, v, heads, causal, err);
  int d = (int)D;
  if (d <= 64) {
    FR_CUDA_DISPATCH(cu->dtype, err, T, return fr__attn_launch<T, 2>(cu, y, q, k, v, heads, d, causal, err));
  } else if (d <= 128) {
    FR_CUDA_DISPATCH(cu->dtype, err, T, return fr__attn_launch<T, 4>(cu, y, q, k, v, heads, d, causal, err));
  } else if (d <= 256) {
    FR_CUDA_DISPATCH(cu->dtype, err, T, return fr__attn_launch<T, 8>(cu, y, q, k, v, heads, d, causal, err));
  } else {
    FR_CUDA_DISPATCH(cu->dtype, err, T, return fr__attn_launch<T, 16>(cu, y, q, k, v, heads, d, causal, err));
  }
  return FR_OK;
}
