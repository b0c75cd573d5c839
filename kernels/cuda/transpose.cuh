/* Batched transpose through shared memory: x [A, M, N] -> y [A, N, M], the permutes of the attention blocks
 * (NCHW <-> tokens: [B, C, H*W] <-> [B, H*W, C]). The generic permute kernel reads with a stride of H*W
 * elements between neighbouring threads, 32 sectors per warp for 64 useful bytes; here a block of 32 x 8
 * threads moves a 32 x 32 tile: rows of the tile are read along N and written along M, both coalesced, and
 * the tile is padded to 33 columns so the transposed reads from shared memory hit 32 distinct banks.
 * Grid (tiles along N, tiles along M, A). Device code only: movement.cu launches it;
 * tests/unit/test_cuda_emu.cpp runs it on the host. */
#ifndef FR_KERNELS_CUDA_TRANSPOSE_CUH
#define FR_KERNELS_CUDA_TRANSPOSE_CUH

#include <stdint.h>

#define FR__TT 32 /* tile edge */
#define FR__TR 8  /* thread rows of a block: each thread moves FR__TT / FR__TR elements */

template <typename T> static __global__ void fr__transpose_kernel(T *y, const T *x, int64_t M, int64_t N) {
  __shared__ T tile[FR__TT][FR__TT + 1];
  const int64_t a = blockIdx.z, m0 = (int64_t)blockIdx.y * FR__TT, n0 = (int64_t)blockIdx.x * FR__TT;
  const T *xa = x + a * M * N;
  T *ya = y + a * M * N;
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int r = ty; r < FR__TT; r += FR__TR) { /* tile row r = input row m0 + r, along n */
    const int64_t m = m0 + r, n = n0 + tx;
    if (m < M && n < N)
      tile[r][tx] = xa[m * N + n];
  }
  __syncthreads();
  for (int r = ty; r < FR__TT; r += FR__TR) { /* output row n0 + r, along m */
    const int64_t n = n0 + r, m = m0 + tx;
    if (n < N && m < M)
      ya[n * M + m] = tile[tx][r];
  }
}

/* The permutation perm of an nd-dim tensor of shape `shape` as a transpose [A, M, N] -> [A, N, M], when it
 * is one: input dims that stay adjacent and in order are merged, and what remains must be (A,) M, N ->
 * (A,) N, M. NCHW -> NHWC ({0, 2, 3, 1}) is [B, C, HW] -> [B, HW, C]; {0, 3, 1, 2} the way back; a 2-D
 * {1, 0} has A = 1. Returns false otherwise. */
static inline bool fr__as_transpose(int nd, const int64_t *shape, const int *perm, int64_t *A, int64_t *M,
                                    int64_t *N) {
  int first[8], last[8], g = 0; /* runs of consecutive input dims, in output order */
  if (nd < 2 || nd > 8)
    return false;
  for (int i = 0; i < nd; i++) {
    if (g > 0 && perm[i] == last[g - 1] + 1) {
      last[g - 1] = perm[i];
    } else {
      first[g] = last[g] = perm[i];
      g++;
    }
  }
  int64_t size[8];
  for (int k = 0; k < g; k++) {
    size[k] = 1;
    for (int d = first[k]; d <= last[k]; d++)
      size[k] *= shape[d];
  }
  if (g == 2 && first[0] > first[1]) { /* output (N-run, M-run): input [M, N] */
    *A = 1, *M = size[1], *N = size[0];
    return true;
  }
  if (g == 3 && first[0] == 0 && first[1] > first[2]) { /* output (A, N-run, M-run) */
    *A = size[0], *M = size[2], *N = size[1];
    return true;
  }
  return false;
}

#endif
