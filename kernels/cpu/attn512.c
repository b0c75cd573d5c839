/* Attention's two products in AVX-512 register tiles, for the flash attention in gemm.c (which does the
 * blocking, the online softmax and the threading). With SD's head sizes (40, 64, 80, 160) both products are
 * thin: QK^T reduces over D = 40..160 only and PV produces D columns, so OpenBLAS spends a large part of
 * each small sgemm packing its operands and in its driver (measured: a [4096, 320] 8-head self-attention at
 * 157-185 GFLOP/s on two Zen cores against 414 for a 2048^3 sgemm). Here nothing is packed per block: K is
 * transposed once per call (kt: per batch and head [Tkp / 64, D, 64], Tkp = Tk rounded up to 64, zero
 * padded), so 16 keys of one d are one vector load; Q rows are broadcast from where they are; V rows are
 * loaded from where they are. Every sum is fp32 with FMA, in the order d = 0..D-1 (QK^T) and key order (PV):
 * the regrouping against the sgemm path is within the attention rows' GEMM tolerance in test_ops.
 *
 * Used when fr_cpu_vec() is the AVX-512 table (the CPU has AVX-512F/DQ/BW/VL and FR_CPU_ISA does not ask
 * for less); the sgemm path remains for every other CPU. */
#include "kernels/cpu/cpu.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define FR__T __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma")))
#define FR__TI __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma"), always_inline)) static inline

/* kt = K^T of one head in tiles of 64 keys: [Tkp / 64, D, 64], so the D rows of 64 keys a tile reads are
 * one contiguous run (a plain [D, Tk] transpose puts them Tk floats apart: 16 KB for Tk = 4096, and all D
 * rows then fall into the same few L1 sets). k points at the head's first key row (row stride HD); keys
 * Tk..Tkp-1 are 0. */
FR__T void fr_cpu_attn512_pack_kt(float *kt, const float *k, int64_t Tk, int64_t Tkp, int64_t HD, int64_t D) {
  for (int64_t j0 = 0; j0 < Tkp; j0 += 64) {
    float *tile = kt + j0 * D; /* [D, 64] */
    int64_t nj = Tk - j0 < 64 ? Tk - j0 : 64;
    for (int64_t j = 0; j < 64; j++) {
      float *dst = tile + j;
      if (j < nj) {
        const float *src = k + (j0 + j) * HD;
        for (int64_t d = 0; d < D; d++)
          dst[d * 64] = src[d];
      } else {
        for (int64_t d = 0; d < D; d++)
          dst[d * 64] = 0.0f;
      }
    }
  }
}

/* S rows [R] x 16*C keys, kt pointing at the first of them inside a 64-key tile (row stride 64), over
 * d = 0..D-1; stores scale * sum into s (row stride lds), the last vector masked by mlast. */
FR__TI void fr__qk_tile(float *s, int64_t lds, const float *q, int64_t ldq, const float *kt, int64_t D,
                        float scale, const int R, const int C, __mmask16 mlast) {
  __m512 acc[6][4];
#pragma GCC unroll 6
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int c = 0; c < C; c++)
      acc[r][c] = _mm512_setzero_ps();
  for (int64_t d = 0; d < D; d++) {
    __m512 kv[4];
#pragma GCC unroll 4
    for (int c = 0; c < C; c++)
      kv[c] = _mm512_loadu_ps(kt + d * 64 + 16 * c); /* kt is padded to a multiple of 64 keys */
#pragma GCC unroll 6
    for (int r = 0; r < R; r++) {
      __m512 qv = _mm512_set1_ps(q[r * ldq + d]);
#pragma GCC unroll 4
      for (int c = 0; c < C; c++)
        acc[r][c] = _mm512_fmadd_ps(qv, kv[c], acc[r][c]);
    }
  }
  __m512 sc = _mm512_set1_ps(scale);
#pragma GCC unroll 6
  for (int r = 0; r < R; r++) {
#pragma GCC unroll 4
    for (int c = 0; c < C - 1; c++)
      _mm512_storeu_ps(s + r * lds + 16 * c, _mm512_mul_ps(acc[r][c], sc));
    _mm512_mask_storeu_ps(s + r * lds + 16 * (C - 1), mlast, _mm512_mul_ps(acc[r][C - 1], sc));
  }
}

/* s [n, kb] (row stride lds) = scale * Q K[k0 : k0 + kb]^T, q: [n, D] with row stride ldq, kt as packed;
 * k0 is a multiple of 64. */
FR__T void fr_cpu_attn512_qk(float *s, int64_t lds, const float *q, int64_t ldq, const float *kt, int64_t Tkp,
                             int64_t n, int64_t k0, int64_t kb, int64_t D, float scale) {
  (void)Tkp;
  for (int64_t j = 0; j < kb; j += 64) {
    const float *tile = kt + (k0 + j) * D; /* [D, 64] */
    int64_t w = kb - j < 64 ? kb - j : 64;
    int64_t i = 0;
    if (w == 64) {
      for (; i + 4 <= n; i += 4)
        fr__qk_tile(s + i * lds + j, lds, q + i * ldq, ldq, tile, D, scale, 4, 4, 0xffff);
      for (; i < n; i++)
        fr__qk_tile(s + i * lds + j, lds, q + i * ldq, ldq, tile, D, scale, 1, 4, 0xffff);
      continue;
    }
    for (int64_t c = 0; c < w; c += 16) { /* the last, partial tile: 16 keys at a time */
      int64_t m = w - c < 16 ? w - c : 16;
      __mmask16 ml = (__mmask16)((1u << m) - 1);
      for (i = 0; i + 4 <= n; i += 4)
        fr__qk_tile(s + i * lds + j + c, lds, q + i * ldq, ldq, tile + c, D, scale, 4, 1, ml);
      for (; i < n; i++)
        fr__qk_tile(s + i * lds + j + c, lds, q + i * ldq, ldq, tile + c, D, scale, 1, 1, ml);
    }
  }
}

/* Y rows [R] x columns [16 (V - 1) + popcount(mlast)] (+)= P [R, kb] V [kb, those columns]. */
FR__TI void fr__pv_tile(float *y, int64_t ldy, const float *p, int64_t ldp, const float *v, int64_t ldv,
                        int64_t kb, bool acc_in, const int R, const int V, __mmask16 mlast) {
  __m512 acc[8][5];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 5
    for (int c = 0; c < V; c++) {
      __mmask16 m = c == V - 1 ? mlast : 0xffff;
      acc[r][c] = acc_in ? _mm512_maskz_loadu_ps(m, y + r * ldy + 16 * c) : _mm512_setzero_ps();
    }
  for (int64_t j = 0; j < kb; j++) {
    __m512 vv[5];
#pragma GCC unroll 5
    for (int c = 0; c < V; c++)
      vv[c] = _mm512_maskz_loadu_ps(c == V - 1 ? mlast : 0xffff, v + j * ldv + 16 * c);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
      __m512 pv = _mm512_set1_ps(p[r * ldp + j]);
#pragma GCC unroll 5
      for (int c = 0; c < V; c++)
        acc[r][c] = _mm512_fmadd_ps(pv, vv[c], acc[r][c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 5
    for (int c = 0; c < V; c++)
      _mm512_mask_storeu_ps(y + r * ldy + 16 * c, c == V - 1 ? mlast : 0xffff, acc[r][c]);
}

/* One column chunk (w <= 80 columns, V = ceil(w / 16) vectors) for all n rows: tiles of R rows, then of 4
 * (when R > 4), then single rows. */
#define FR__PV_ROWS(R, V)                                                                                    \
  do {                                                                                                       \
    int64_t i = 0;                                                                                           \
    for (; i + (R) <= n; i += (R))                                                                           \
      fr__pv_tile(y + i * ldy + c0, ldy, p + i * ldp, ldp, v + c0, ldv, kb, acc_in, (R), (V), ml);           \
    for (; (R) > 4 && i + 4 <= n; i += 4)                                                                    \
      fr__pv_tile(y + i * ldy + c0, ldy, p + i * ldp, ldp, v + c0, ldv, kb, acc_in, 4, (V), ml);             \
    for (; i < n; i++)                                                                                       \
      fr__pv_tile(y + i * ldy + c0, ldy, p + i * ldp, ldp, v + c0, ldv, kb, acc_in, 1, (V), ml);             \
  } while (0)

/* y [n, D] (row stride ldy) (+)= p [n, kb] (row stride ldp) v [kb, D] (row stride ldv); accumulates into y
 * when acc_in. */
FR__T void fr_cpu_attn512_pv(float *y, int64_t ldy, const float *p, int64_t ldp, const float *v, int64_t ldv,
                             int64_t n, int64_t kb, int64_t D, bool acc_in) {
  for (int64_t c0 = 0; c0 < D; c0 += 80) {
    int64_t w = D - c0 < 80 ? D - c0 : 80;
    int nv = (int)((w + 15) / 16);
    int rem = (int)(w - 16 * (nv - 1));
    __mmask16 ml = (__mmask16)(rem == 16 ? 0xffff : (1u << rem) - 1);
    switch (nv) { /* rows per tile: 16-24 accumulators where the registers allow (the FMA latency hidden) */
    case 1: FR__PV_ROWS(8, 1); break;
    case 2: FR__PV_ROWS(8, 2); break;
    case 3: FR__PV_ROWS(8, 3); break;
    case 4: FR__PV_ROWS(4, 4); break;
    default: FR__PV_ROWS(4, 5); break;
    }
  }
}

#else /* no AVX-512 build: gemm.c keeps to its sgemm path */
void fr_cpu_attn512_pack_kt(float *kt, const float *k, int64_t Tk, int64_t Tkp, int64_t HD, int64_t D) {}
void fr_cpu_attn512_qk(float *s, int64_t lds, const float *q, int64_t ldq, const float *kt, int64_t Tkp,
                       int64_t n, int64_t k0, int64_t kb, int64_t D, float scale) {}
void fr_cpu_attn512_pv(float *y, int64_t ldy, const float *p, int64_t ldp, const float *v, int64_t ldv,
                       int64_t n, int64_t kb, int64_t D, bool acc_in) {}
#endif
