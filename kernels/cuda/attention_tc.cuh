/* Attention on tensor cores for F16/BF16 contexts: flash-attention's tiling (FlashAttention-2's loop
 * order: a block owns a query tile and streams every key/value tile through shared memory, so the
 * [Tq, Tk] score matrix never exists in memory) with warp-level mma.sync m16n8k16 (fp32 accumulation)
 * and the fp32 online softmax of the simple kernel in attention.cu.
 *
 * This header is the device code; attention_tc.cu launches it. tests/unit/test_cuda_emu.cpp
 * compiles the same kernel on the host with FR_CUDA_EMULATE defined, its own warp-level primitives
 * (mma, ldmatrix, shuffles, cp.async, barriers: written from the PTX ISA's fragment layouts) and one host
 * thread per CUDA thread, so the index arithmetic is checked on machines without a GPU too.
 *
 * Shapes: q [B, Tq, H*D], k and v [B, Tk, H*D] (contiguous; heads split from the last dim), y like q.
 * Grid: (query tiles of FR__TQ = 64, H * output chunks, B); 4 warps, warp w owns query rows 16w..16w+15 of
 * the tile. Per block, shared memory holds
 *   qs [64][DP + 8]          the query tile, head dim zero-padded to DP (a multiple of 16)
 *   ks [2][BK][DP + 8]       two stages of the key tile (cp.async double buffering)
 *   vs [2][BK][DV + 8]       two stages of the value tile, output columns c0 .. c0 + DV of this block
 * (rows padded by 8 elements = 16 bytes: the 8 row addresses of an ldmatrix then fall in distinct banks,
 * and every row stays 16-byte aligned). Per key tile a warp computes S = Q K^T (16 x BK, fp32), masks it
 * (keys past Tk; causal), updates its rows' running max and sum in the exp2 domain, rescales its output
 * accumulators, rounds P to the storage dtype and adds P V (16 x DV, fp32). Only the final output is
 * rounded to the storage dtype, once.
 *
 * Head dims: D must be a multiple of 8 (16-byte rows) and at most 512. DP is the smallest of
 * 16, 32, 48, 64, 80, 96, 128, 160, 256, 512 that holds D (SD's 40, 64, 80 and 160 and the VAE's 512).
 * Up to DP = 160 a block produces the whole head (DV = DP) and the output accumulators, DV / 2 floats a
 * thread, stay in registers; for DP = 256 and 512 (the VAE's single 512-wide head) a block produces a
 * chunk of DV = 128 output columns and the grid has D / 128 chunks per head, each recomputing the full-width
 * scores (the same fp32 arithmetic in every chunk, so all chunks see the same softmax).
 *
 * Register fragments of mma.m16n8k16 (g = lane / 4, t = lane % 4):
 *   A (16 x 16, row-major): a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..)
 *   B (16 x 8, k x n):      b0 = (k 2t..2t+1, n g), b1 = (k 2t+8..2t+9, n g)
 *   C (16 x 8, fp32):       c0, c1 = (g, 2t), (g, 2t+1); c2, c3 = (g+8, 2t), (g+8, 2t+1)
 * The C fragments of two neighbouring 8-key score tiles are exactly the A fragment of the 16 x 16 block
 * of P, so P goes from the softmax to the second product without touching shared memory. */
#ifndef FR_KERNELS_CUDA_ATTENTION_TC_CUH
#define FR_KERNELS_CUDA_ATTENTION_TC_CUH

#include <math.h>
#include <stdint.h>

#define FR__TQ 64 /* queries per block: 4 warps x 16 rows */
#define FR__TC_THREADS 128

#include "kernels/cuda/mma.cuh"

/* Copies rows r0 .. r0 + rows - 1 (of nrows valid), columns c0 .. c0 + width - 1 (of ncols valid) of a
 * row-major [*, ld] global matrix into a shared [rows][width + 8] tile; everything out of range becomes
 * zero. width, c0, ncols and ld are multiples of 8 elements. */
template <typename T>
static __device__ __forceinline__ void fr__tile_load(T *dst, const T *src, int64_t ld, int64_t r0,
                                                     int64_t nrows, int c0, int ncols, int rows, int width) {
  int chunks = width / 8;
  for (int i = threadIdx.x; i < rows * chunks; i += FR__TC_THREADS) {
    int r = i / chunks, c = (i % chunks) * 8;
    bool ok = r0 + r < nrows && c0 + c < ncols;
    const T *s = ok ? src + (r0 + r) * ld + c0 + c : src;
    fr__cp16(dst + r * (width + 8) + c, s, ok);
  }
}

template <typename T, int DP, int DV, int BK>
static __global__ void __launch_bounds__(FR__TC_THREADS)
    fr__attn_tc_kernel(T *y, const T *q, const T *k, const T *v, int64_t Tq, int64_t Tk, int64_t HD, int D,
                       int chunks, float scale_log2, int causal) {
  constexpr int QW = DP + 8, VW = DV + 8;
  constexpr int NS = BK / 8; /* 8-key score tiles */
  constexpr int NO = DV / 8; /* 8-column output tiles */
#ifndef FR_CUDA_EMULATE      /* the emulator's block memory is its own global fr__tc_sh */
  extern __shared__ __align__(16) unsigned char fr__tc_sh[];
#endif
  T *qs = reinterpret_cast<T *>(fr__tc_sh); /* [TQ][QW] */
  T *ks = qs + FR__TQ * QW;                 /* [2][BK][QW] */
  T *vs = ks + 2 * BK * QW;                 /* [2][BK][VW] */

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int h = blockIdx.y / chunks, c0 = (blockIdx.y % chunks) * DV;
  const int64_t b = blockIdx.z, q0 = (int64_t)blockIdx.x * FR__TQ;
  const T *qb = q + b * Tq * HD + (int64_t)h * D;
  const T *kb = k + b * Tk * HD + (int64_t)h * D;
  const T *vb = v + b * Tk * HD + (int64_t)h * D;

  int64_t kend = Tk;
  if (causal && q0 + FR__TQ < kend)
    kend = q0 + FR__TQ; /* no query of this tile sees a key past its last query */
  const int ntiles = (int)((kend + BK - 1) / BK);

  fr__tile_load<T>(qs, qb, HD, q0, Tq, 0, D, FR__TQ, DP);
  fr__tile_load<T>(ks, kb, HD, 0, kend, 0, D, BK, DP);
  fr__tile_load<T>(vs, vb, HD, 0, kend, c0, D, BK, DV);
  fr__cp_commit();

  /* this thread's rows of the tile: g and g + 8 of the warp's 16 */
  const int64_t row0 = q0 + warp * 16 + g, row1 = row0 + 8;
  float o[NO][4];
#pragma unroll
  for (int n = 0; n < NO; n++)
    o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY; /* running max (log2 domain), quad-uniform */
  float l0 = 0.0f, l1 = 0.0f;           /* running sums, this thread's columns only (summed at the end) */

  for (int it = 0; it < ntiles; it++) {
    const int st = it & 1;
    if (it + 1 < ntiles) {
      const int64_t k1 = (int64_t)(it + 1) * BK;
      fr__tile_load<T>(ks + (st ^ 1) * BK * QW, kb + k1 * HD, HD, 0, kend - k1, 0, D, BK, DP);
      fr__tile_load<T>(vs + (st ^ 1) * BK * VW, vb + k1 * HD, HD, 0, kend - k1, c0, D, BK, DV);
    }
    fr__cp_commit(); /* possibly empty: keeps "all but the newest group" meaning "tile it is in" */
    fr__cp_wait_all_but_one();
    __syncthreads();

    const T *kt = ks + st * BK * QW, *vt = vs + st * BK * VW;
    const int64_t k0 = (int64_t)it * BK;

    /* S = Q K^T: [16 x BK] per warp */
    float s[NS][4];
#pragma unroll
    for (int j = 0; j < NS; j++)
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < DP / 16; kk++) {
      uint32_t a[4];
      {
        const int mi = lane >> 3, r = warp * 16 + (mi & 1) * 8 + (lane & 7), c = kk * 16 + (mi >> 1) * 8;
        fr__ldsm_x4(a, fr__smem_addr(qs + r * QW + c));
      }
#pragma unroll
      for (int nn = 0; nn < BK / 16; nn++) {
        uint32_t bb[4]; /* b0, b1 of key tile 2nn, then of 2nn + 1 */
        const int mi = lane >> 3, r = nn * 16 + (mi >> 1) * 8 + (lane & 7), c = kk * 16 + (mi & 1) * 8;
        fr__ldsm_x4(bb, fr__smem_addr(kt + r * QW + c));
        fr__mma<T>::run(s[2 * nn], a, bb[0], bb[1]);
        fr__mma<T>::run(s[2 * nn + 1], a, bb[2], bb[3]);
      }
    }

    /* mask, scale to the log2 domain, tile row max */
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int j = 0; j < NS; j++) {
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const int64_t key = k0 + j * 8 + 2 * t + (i & 1), row = i < 2 ? row0 : row1;
        const bool ok = key < kend && (!causal || key <= row);
        s[j][i] = ok ? s[j][i] * scale_log2 : -INFINITY;
      }
      mx0 = fmaxf(mx0, fmaxf(s[j][0], s[j][1]));
      mx1 = fmaxf(mx1, fmaxf(s[j][2], s[j][3]));
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
    /* a row with every key so far masked keeps max -inf: subtract 0 instead (its p are all 0), and its
     * empty accumulators need no correction */
    const float base0 = n0 == -INFINITY ? 0.0f : n0, base1 = n1 == -INFINITY ? 0.0f : n1;
    const float corr0 = exp2f(m0 - base0), corr1 = exp2f(m1 - base1); /* exp2(-inf) = 0 on the first tile */
    m0 = n0;
    m1 = n1;
    float ps0 = 0.0f, ps1 = 0.0f;
#pragma unroll
    for (int j = 0; j < NS; j++) {
      s[j][0] = exp2f(s[j][0] - base0);
      s[j][1] = exp2f(s[j][1] - base0);
      s[j][2] = exp2f(s[j][2] - base1);
      s[j][3] = exp2f(s[j][3] - base1);
      ps0 += s[j][0] + s[j][1];
      ps1 += s[j][2] + s[j][3];
    }
    l0 = l0 * corr0 + ps0;
    l1 = l1 * corr1 + ps1;
#pragma unroll
    for (int n = 0; n < NO; n++) {
      o[n][0] *= corr0;
      o[n][1] *= corr0;
      o[n][2] *= corr1;
      o[n][3] *= corr1;
    }

    /* O += P V: P's A fragments are the score tiles 2kk and 2kk + 1 */
#pragma unroll
    for (int kk = 0; kk < BK / 16; kk++) {
      uint32_t a[4];
      a[0] = fr__mma<T>::pack(s[2 * kk][0], s[2 * kk][1]);
      a[1] = fr__mma<T>::pack(s[2 * kk][2], s[2 * kk][3]);
      a[2] = fr__mma<T>::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      a[3] = fr__mma<T>::pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int nn = 0; nn < DV / 16; nn++) {
        uint32_t bb[4]; /* b0, b1 of output tile 2nn, then of 2nn + 1 */
        const int mi = lane >> 3, r = kk * 16 + (mi & 1) * 8 + (lane & 7), c = nn * 16 + (mi >> 1) * 8;
        fr__ldsm_x4_trans(bb, fr__smem_addr(vt + r * VW + c));
        fr__mma<T>::run(o[2 * nn], a, bb[0], bb[1]);
        fr__mma<T>::run(o[2 * nn + 1], a, bb[2], bb[3]);
      }
    }
    __syncthreads(); /* every warp is done with stage st before it is loaded again */
  }

  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const float inv0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, inv1 = l1 > 0.0f ? 1.0f / l1 : 0.0f;
  T *y0 = y + (b * Tq + row0) * HD + (int64_t)h * D, *y1 = y0 + 8 * HD;
#pragma unroll
  for (int n = 0; n < NO; n++) {
    const int col = c0 + n * 8 + 2 * t; /* D is even: a pair never straddles D */
    if (col >= D)
      continue;
    if (row0 < Tq)
      *reinterpret_cast<uint32_t *>(y0 + col) = fr__mma<T>::pack(o[n][0] * inv0, o[n][1] * inv0);
    if (row1 < Tq)
      *reinterpret_cast<uint32_t *>(y1 + col) = fr__mma<T>::pack(o[n][2] * inv1, o[n][3] * inv1);
  }
}

#endif
