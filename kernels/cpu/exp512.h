/* exp(x) on 16 fp32 lanes with AVX-512, shared by vec.c's softmax loops and attn512.c: Cody-Waite range
 * reduction by ln 2 (two constants), a degree-7 polynomial in fused multiply-adds and 2^n by vscalefps.
 * The same algorithm, constants, clamps and edge cases as exp1 in vec_body.h: x below -87.3 gives 0
 * (-inf included), above 88.72 gives +inf, NaN stays NaN. Include it where AVX-512F is the target. */
#ifndef FR_KERNELS_CPU_EXP512_H
#define FR_KERNELS_CPU_EXP512_H

#include <immintrin.h>
#include <math.h>

__attribute__((target("avx512f,fma"), always_inline)) static inline __m512 fr__exp512(__m512 x) {
  const __m512 hi = _mm512_set1_ps(88.3f), lo = _mm512_set1_ps(-87.3f);
  __m512 xc = _mm512_max_ps(_mm512_min_ps(x, hi), lo); /* NaN takes the second operand: a clamp */
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
  __m512 r2 = _mm512_mul_ps(r, r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0f));
  __m512 y = _mm512_add_ps(_mm512_scalef_ps(p, n), _mm512_sub_ps(x, x)); /* n in [-126, 127]; NaN stays */
  y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ), _mm512_setzero_ps());
  return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, _mm512_set1_ps(88.7228317f), _CMP_GT_OQ),
                            _mm512_set1_ps(INFINITY));
}

#endif
