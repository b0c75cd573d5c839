/* Flash attention for one block of up to 64 queries of one head, in AVX-512 register tiles, laid out
 * transposed: queries along the vector lanes (4 vectors of 16), keys and head dims along the rows. With SD's
 * head sizes (40, 64, 80, 160) both products are thin (QK^T reduces over D only, PV produces D columns),
 * and with the keys or the head dims along the lanes a D of 40 fills 2.5 vectors: PV ran with its last
 * vector half empty and the softmax reduced every score row across lanes. Transposed:
 *   S^T [kb, 64] = K Q^T    tiles of 6 keys x 64 queries (tile512.h): per d, 4 loads of Q^T (packed once
 *                           per block, in L1), 6 broadcasts of K (from where it is), 24 FMAs;
 *   softmax down the rows   the running max m, the sum l and the rescale exp(m_old - m_new) are one vector
 *                           per 16 queries: no reduction across lanes; the scale is applied in the
 *                           exponent, exp(scale s - m) with one rounding (fmsub), and to the block's max;
 *   Y^T [D, 64] += V^T P^T  tiles of 5 (or 4) head dims x 64 queries: per key, 4 loads of P^T, 5
 *                           broadcasts of V (from where it is), 20 FMAs;
 * and Y^T / l is written back into y's rows at the end. Keys are walked in blocks of FR__AKB (P^T of a block
 * is 32 KB: it stays in L1 for the PV tiles that each read all of it). Every sum is fp32 with FMA in the
 * same order as the unblocked definition (d = 0..D-1 for a score, key order for an output): a regrouping
 * of the online softmax only, within the attention rows' GEMM tolerance in test_ops.
 *
 * Used by fr_cpu_attention (gemm.c) when fr_cpu_avx512(); the sgemm path remains for every other CPU. */
#include "kernels/cpu/cpu.h"

#define FR__AQB 64  /* queries per block: 4 vectors */
#define FR__AKB 128 /* keys per block */

size_t fr_cpu_attn512_scratch(int64_t D) {
  /* Q^T [D, 64], Y^T [D, 64], P^T [FR__AKB, 64], 1 / l [64] */
  return (size_t)(2 * D * FR__AQB + FR__AKB * FR__AQB + FR__AQB);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define FR__T __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma")))
#define FR__TI __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma"), always_inline)) static inline

#include "kernels/cpu/exp512.h"
#include "kernels/cpu/tile512.h"

/* Causal: in rows [kb] of S^T (keys k0 + j), lane i (query q0 + i) is -inf where the key is past the
 * query: k0 + j > q0 + i. */
FR__TI void fr__s_mask(float *st, int64_t kb, int64_t first) {
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int64_t j = 0; j < kb; j++) /* first = k0 - q0: lane i of row j sees its key when i >= first + j */
    for (int c = 0; c < 4; c++) {
      __mmask16 hid = _mm512_cmplt_epi32_mask(_mm512_add_epi32(lane, _mm512_set1_epi32(16 * c)),
                                              _mm512_set1_epi32((int)(first + j)));
      _mm512_mask_storeu_ps(st + j * FR__AQB + 16 * c, hid, _mm512_set1_ps(-INFINITY));
    }
}

FR__T void fr_cpu_attn512_block(float *y, const float *q, const float *k, const float *v, int64_t ld,
                                int64_t n, int64_t q0, int64_t Tk, int64_t D, float scale, bool causal,
                                float *scratch) {
  float *qt = scratch, *yt = qt + D * FR__AQB, *pt = yt + D * FR__AQB;
  float *linv = pt + FR__AKB * FR__AQB;
  for (int64_t d = 0; d < D; d++) /* Q^T, lanes past n zero; Y^T zero */
    for (int64_t i = 0; i < FR__AQB; i++) {
      qt[d * FR__AQB + i] = i < n ? q[i * ld + d] : 0.0f;
      yt[d * FR__AQB + i] = 0.0f;
    }
  int64_t kend = causal && q0 + n < Tk ? q0 + n : Tk; /* the block's last query sees keys < q0 + n */
  __m512 m[4], l[4];
  for (int c = 0; c < 4; c++)
    m[c] = l[c] = _mm512_setzero_ps(); /* set by the first key block */
  for (int64_t k0 = 0; k0 < kend; k0 += FR__AKB) {
    int64_t kb = kend - k0 < FR__AKB ? kend - k0 : FR__AKB, j = 0;
    const float *kp = k + k0 * ld;
    /* causal: a row's first lane sees its key from query index key - q0 on; keys of the block wholly
     * before the block's first query (key <= q0) hide nothing, so only the block's diagonal is masked */
    bool cz = causal && k0 + kb - 1 > q0;
    /* S^T = K Q^T, unscaled: rows of 6 keys, K broadcast, Q^T's rows the vectors */
    for (; j + 6 <= kb; j += 6)
      fr__tile64(pt + j * FR__AQB, FR__AQB, kp + j * ld, ld, 1, qt, FR__AQB, D, false, NULL, NULL, 6);
    for (; j < kb; j++)
      fr__tile64(pt + j * FR__AQB, FR__AQB, kp + j * ld, ld, 1, qt, FR__AQB, D, false, NULL, NULL, 1);
    if (cz)
      fr__s_mask(pt, kb, k0 - q0);
    /* the running max, the rescale of what is summed so far, P = exp(S - m) and its sums, per lane */
    __m512 corr[4], sc = _mm512_set1_ps(scale);
    for (int c = 0; c < 4; c++) {
      __m512 bm = _mm512_loadu_ps(pt + 16 * c);
      for (j = 1; j < kb; j++) /* max_ps(v, acc) keeps acc where v is NaN, as vec.c's max */
        bm = _mm512_max_ps(_mm512_loadu_ps(pt + j * FR__AQB + 16 * c), bm);
      bm = _mm512_mul_ps(bm, sc); /* the max of scale * s: scale > 0 and rounding keep the order */
      __m512 mn = k0 == 0 ? bm : _mm512_max_ps(bm, m[c]);
      corr[c] = k0 == 0 ? _mm512_setzero_ps() : fr__exp512(_mm512_sub_ps(m[c], mn)); /* 1: max unmoved */
      m[c] = mn;
      __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
      for (j = 0; j + 2 <= kb; j += 2) {
        __m512 a = fr__exp512(_mm512_fmsub_ps(_mm512_loadu_ps(pt + j * FR__AQB + 16 * c), sc, mn));
        __m512 b = fr__exp512(_mm512_fmsub_ps(_mm512_loadu_ps(pt + (j + 1) * FR__AQB + 16 * c), sc, mn));
        _mm512_storeu_ps(pt + j * FR__AQB + 16 * c, a);
        _mm512_storeu_ps(pt + (j + 1) * FR__AQB + 16 * c, b);
        s0 = _mm512_add_ps(s0, a);
        s1 = _mm512_add_ps(s1, b);
      }
      if (j < kb) {
        __m512 a = fr__exp512(_mm512_fmsub_ps(_mm512_loadu_ps(pt + j * FR__AQB + 16 * c), sc, mn));
        _mm512_storeu_ps(pt + j * FR__AQB + 16 * c, a);
        s0 = _mm512_add_ps(s0, a);
      }
      __m512 ls = _mm512_add_ps(s0, s1);
      l[c] = k0 == 0 ? ls : _mm512_fmadd_ps(l[c], corr[c], ls);
    }
    if (k0 > 0)
      for (int64_t d = 0; d < D; d++)
        for (int c = 0; c < 4; c++)
          _mm512_storeu_ps(yt + d * FR__AQB + 16 * c,
                           _mm512_mul_ps(_mm512_loadu_ps(yt + d * FR__AQB + 16 * c), corr[c]));
    /* Y^T += V^T P^T: rows of 5 (or 4) head dims, V[key, d] broadcast, P^T's rows the vectors */
    const float *vp = v + k0 * ld;
    int64_t d = 0;
    if (D % 5 == 0)
      for (; d < D; d += 5)
        fr__tile64(yt + d * FR__AQB, FR__AQB, vp + d, 1, ld, pt, FR__AQB, kb, true, NULL, NULL, 5);
    for (; d + 4 <= D; d += 4)
      fr__tile64(yt + d * FR__AQB, FR__AQB, vp + d, 1, ld, pt, FR__AQB, kb, true, NULL, NULL, 4);
    for (; d < D; d++)
      fr__tile64(yt + d * FR__AQB, FR__AQB, vp + d, 1, ld, pt, FR__AQB, kb, true, NULL, NULL, 1);
  }
  for (int c = 0; c < 4; c++) /* Y = (Y^T / l)^T */
    _mm512_storeu_ps(linv + 16 * c, _mm512_div_ps(_mm512_set1_ps(1.0f), l[c]));
  for (int64_t i = 0; i < n; i++)
    for (int64_t dd = 0; dd < D; dd++)
      y[i * ld + dd] = yt[dd * FR__AQB + i] * linv[i];
}

#else /* no AVX-512 build: gemm.c keeps to its sgemm path */
void fr_cpu_attn512_block(float *y, const float *q, const float *k, const float *v, int64_t ld, int64_t n,
                          int64_t q0, int64_t Tk, int64_t D, float scale, bool causal, float *scratch) {}
#endif
