/* GroupNorm (+SiLU) in two kernels, so that a group is spread over many blocks: SD's 32 groups at batch 1
 * or 2 gave 32 or 64 blocks for 132 SMs, and a VAE group at 512x512 is a million elements.
 *
 *  1. fr__gn_stats_kernel, grid (B * G, splits): block (group, k) reads slice k of its group twice (the
 *     slice's mean, then the sum of squared deviations from it: two-pass, so a large mean does not cancel
 *     the variance; the second read mostly hits L2) and writes {count, mean, M2} to part.
 *  2. fr__gn_apply_kernel, grid (x over a row, y over the B * C rows of [B, C, S]): thread 0 combines its
 *     group's slices (Chan et al.'s pairwise update: n = na + nb, d = mb - ma, mean = ma + d nb / n,
 *     M2 = M2a + M2b + d^2 na nb / n), then every thread normalises, applies gamma/beta and SiLU and stores
 *     once in the storage dtype.
 * Both read (and write) 16-byte vectors where the lengths and pointers allow. All statistics are fp32. Device
 * code only: norm.cu launches it; tests/unit/test_cuda_emu.cpp runs it on the host. */
#ifndef FR_KERNELS_CUDA_GROUP_NORM_CUH
#define FR_KERNELS_CUDA_GROUP_NORM_CUH

#include <stdint.h>

#include "kernels/cuda/device.cuh"

/* x viewed as [B * G, n] (n = channels per group * S); slice k of group g is [k * chunk, min(n, (k + 1) *
 * chunk)); part[(g * splits + k) * 3 + {0, 1, 2}] = count, mean, M2. Every slice is non-empty. V: read in
 * 16-byte vectors (n and chunk multiples of FR_VEC(T), x 16-byte aligned). */
template <typename T, bool V>
static __global__ void fr__gn_stats_kernel(float *part, const T *x, int64_t n, int64_t chunk) {
  constexpr int K = V ? FR_VEC(T) : 1;
  __shared__ float sh[32];
  const int64_t grp = blockIdx.x, k = blockIdx.y;
  const int64_t lo = k * chunk, hi = lo + chunk < n ? lo + chunk : n;
  const T *xg = x + grp * n;
  float s = 0.0f;
  for (int64_t i = lo + (int64_t)threadIdx.x * K; i < hi; i += (int64_t)blockDim.x * K) {
    float v[K];
    fr_ldk<T, V>(xg + i, v);
#pragma unroll
    for (int e = 0; e < K; e++)
      s += v[e];
  }
  const float cnt = (float)(hi - lo);
  const float mean = fr_block_sum(s, sh) / cnt;
  s = 0.0f;
  for (int64_t i = lo + (int64_t)threadIdx.x * K; i < hi; i += (int64_t)blockDim.x * K) {
    float v[K];
    fr_ldk<T, V>(xg + i, v);
#pragma unroll
    for (int e = 0; e < K; e++) {
      const float d = v[e] - mean;
      s = fmaf(d, d, s);
    }
  }
  const float m2 = fr_block_sum(s, sh);
  if (threadIdx.x == 0) {
    float *p = part + (grp * gridDim.y + k) * 3;
    p[0] = cnt;
    p[1] = mean;
    p[2] = m2;
  }
}

/* Rows r = b * C + c of x [B, C, S] (grid y, strided); group b * G + c / cpg. V: the row in 16-byte vectors
 * (S a multiple of FR_VEC(T), x and y 16-byte aligned). */
template <typename T, bool V>
static __global__ void fr__gn_apply_kernel(T *y, const T *x, const float *part, const T *gamma, const T *beta,
                                           int64_t C, int64_t cpg, int64_t G, int64_t S, int splits,
                                           int64_t rows, float eps, int silu) {
  constexpr int K = V ? FR_VEC(T) : 1;
  __shared__ float stat[2];
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const int64_t b = row / C, c = row % C, grp = b * G + c / cpg;
    __syncthreads(); /* stat of the previous row is no longer read */
    if (threadIdx.x == 0) {
      const float *p = part + grp * splits * 3;
      float na = p[0], mean = p[1], m2 = p[2];
      for (int k = 1; k < splits; k++) {
        const float nb = p[3 * k], d = p[3 * k + 1] - mean, nn = na + nb;
        mean += d * (nb / nn);
        m2 += p[3 * k + 2] + d * d * (na * (nb / nn));
        na = nn;
      }
      stat[0] = mean;
      stat[1] = rsqrtf(m2 / na + eps);
    }
    __syncthreads();
    const float mean = stat[0], g = (gamma ? fr_ld(gamma + c) : 1.0f) * stat[1];
    const float bb = beta ? fr_ld(beta + c) : 0.0f;
    const T *xr = x + row * S;
    T *yr = y + row * S;
    for (int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * K; i < S;
         i += (int64_t)gridDim.x * blockDim.x * K) {
      float v[K];
      fr_ldk<T, V>(xr + i, v);
#pragma unroll
      for (int e = 0; e < K; e++) {
        v[e] = (v[e] - mean) * g + bb;
        if (silu)
          v[e] = v[e] / (1.0f + expf(-v[e]));
      }
      fr_stk<T, V>(yr + i, v);
    }
  }
}

/* The launch geometry: how many slices per group (enough blocks to fill the GPU, at least 4096 elements
 * each, at most 64) and the slice length, a multiple of vec (the vector length the kernel reads in, or 1);
 * every slice non-empty. */
static inline void fr__gn_splits(int64_t groups_total, int64_t n, int sm_count, int vec, int64_t *splits,
                                 int64_t *chunk) {
  int64_t s = (2 * (int64_t)sm_count + groups_total - 1) / groups_total;
  if (s > n / 4096)
    s = n / 4096;
  if (s > 64)
    s = 64;
  if (s < 1)
    s = 1;
  *chunk = ((n + s - 1) / s + vec - 1) / vec * vec;
  *splits = (n + *chunk - 1) / *chunk;
}

#endif
