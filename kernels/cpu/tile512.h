/* The register tile that the AVX-512 products share (attn512.c's P V, gemm512.c's convs and linears): R
 * rows (up to 6) of 64 fp32 columns, 4 R accumulators, summed over k in order with FMA:
 *   c [R, 64] (row stride ldc) = init + sum over k < K of a[r ar + k ak] b[k ldb .. k ldb + 64)
 * a is the broadcast operand (any strides), b the vector one (64 contiguous floats per k); init is c itself
 * when load, else rbias[r] per row, or cbias[0..64) per column, or 0. R is a constant at every call, so
 * each use compiles to its own unrolled loop. Include it where AVX-512F is the target. */
#ifndef FR_KERNELS_CPU_TILE512_H
#define FR_KERNELS_CPU_TILE512_H

#include <immintrin.h>
#include <stdbool.h>
#include <stdint.h>

__attribute__((target("avx512f,fma"), always_inline)) static inline void
fr__tile64(float *c, int64_t ldc, const float *a, int64_t ar, int64_t ak, const float *b, int64_t ldb,
           int64_t K, bool load, const float *rbias, const float *cbias, const int R) {
  __m512 acc[6][4];
#pragma GCC unroll 6
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int v = 0; v < 4; v++)
      acc[r][v] = load    ? _mm512_loadu_ps(c + r * ldc + 16 * v)
                  : rbias ? _mm512_set1_ps(rbias[r])
                  : cbias ? _mm512_loadu_ps(cbias + 16 * v)
                          : _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k++) {
    __m512 bv[4];
#pragma GCC unroll 4
    for (int v = 0; v < 4; v++)
      bv[v] = _mm512_loadu_ps(b + k * ldb + 16 * v);
#pragma GCC unroll 6
    for (int r = 0; r < R; r++) {
      __m512 av = _mm512_set1_ps(a[r * ar + k * ak]);
#pragma GCC unroll 4
      for (int v = 0; v < 4; v++)
        acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int v = 0; v < 4; v++)
      _mm512_storeu_ps(c + r * ldc + 16 * v, acc[r][v]);
}

/* fr__tile64 with R (1..6) known only at run time (the last rows of a matrix): one unrolled copy per R. */
__attribute__((target("avx512f,fma"), always_inline)) static inline void
fr__tile64_n(int R, float *c, int64_t ldc, const float *a, int64_t ar, int64_t ak, const float *b,
             int64_t ldb, int64_t K, bool load, const float *rbias, const float *cbias) {
  switch (R) {
  case 6: fr__tile64(c, ldc, a, ar, ak, b, ldb, K, load, rbias, cbias, 6); break;
  case 5: fr__tile64(c, ldc, a, ar, ak, b, ldb, K, load, rbias, cbias, 5); break;
  case 4: fr__tile64(c, ldc, a, ar, ak, b, ldb, K, load, rbias, cbias, 4); break;
  case 3: fr__tile64(c, ldc, a, ar, ak, b, ldb, K, load, rbias, cbias, 3); break;
  case 2: fr__tile64(c, ldc, a, ar, ak, b, ldb, K, load, rbias, cbias, 2); break;
  default: fr__tile64(c, ldc, a, ar, ak, b, ldb, K, load, rbias, cbias, 1); break;
  }
}

#endif
