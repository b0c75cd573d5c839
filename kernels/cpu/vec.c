/* The CPU backend's vector math, built for AVX-512, for AVX2+FMA and for the baseline ISA from one source
 * (vec_body.h); fr_cpu_vec() picks the best the running CPU supports, once, or the one the environment
 * variable FR_CPU_ISA names (scalar | f16c | avx512, as for the 16-bit converters in half.c: f16c stands for
 * the AVX2 generation; a path the CPU lacks falls back to the best below it). Distribution builds target
 * baseline x86-64, so without this the hot loops (softmax exp, GELU erf, SiLU) would run 4 lanes wide or
 * scalar. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/cpu.h"

/* Nobody reads floating-point exception flags in flowrun; without trapping math the compiler may evaluate
 * both sides of the clamps and selects, which is what lets it vectorise these loops. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#define FR__VW 8
#define FR__V(name) fr__vgen_##name
#include "kernels/cpu/vec_body.h"
#undef FR__V

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FR__HAVE_X86_PATHS 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define FR__V(name) fr__vavx2_##name
#include "kernels/cpu/vec_body.h"
#undef FR__V
#pragma GCC pop_options

/* 16 lanes: the blocks of 16 become one zmm register each (GCC's cost model would otherwise stay at 256
 * bits for part of them). Softmax's two loops, the hottest (attention runs them over every score: 134 M
 * exps per SD 64x64 self-attention), are written out with intrinsics: the same algorithm, constants, clamps
 * and edge cases as exp1 in vec_body.h, with the polynomial in fused multiply-adds (this file is C11, where
 * GCC contracts nothing by itself) and 2^n applied by vscalefps; two vectors per iteration. */
#undef FR__VW
#define FR__VW 16
#pragma GCC push_options
#if defined(__clang__)
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,fma")
#else
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,fma,prefer-vector-width=512")
#endif
#include "kernels/cpu/exp512.h"

static float fr__vavx512_exp_sum(float *x, int64_t n, float m) {
  __m512 mv = _mm512_set1_ps(m), s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 32 <= n; j += 32) {
    __m512 a = fr__exp512(_mm512_sub_ps(_mm512_loadu_ps(x + j), mv));
    __m512 b = fr__exp512(_mm512_sub_ps(_mm512_loadu_ps(x + j + 16), mv));
    _mm512_storeu_ps(x + j, a);
    _mm512_storeu_ps(x + j + 16, b);
    s0 = _mm512_add_ps(s0, a);
    s1 = _mm512_add_ps(s1, b);
  }
  for (; j < n; j += 16) {
    __mmask16 k = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1);
    __m512 a = fr__exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), mv));
    _mm512_mask_storeu_ps(x + j, k, a);
    s0 = _mm512_mask_add_ps(s0, k, s0, a);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

static float fr__vavx512_max(const float *x, int64_t n) {
  __m512 a0 = _mm512_set1_ps(x[0]), a1 = a0; /* max_ps(v, acc) keeps acc where v is NaN, as the others */
  int64_t j = 0;
  for (; j + 32 <= n; j += 32) {
    a0 = _mm512_max_ps(_mm512_loadu_ps(x + j), a0);
    a1 = _mm512_max_ps(_mm512_loadu_ps(x + j + 16), a1);
  }
  for (; j < n; j += 16) {
    __mmask16 k = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1);
    a0 = _mm512_mask_max_ps(a0, k, _mm512_maskz_loadu_ps(k, x + j), a0);
  }
  return _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
}

#define FR__VEC_OWN_SOFTMAX
#define FR__V(name) fr__vavx512_##name
#include "kernels/cpu/vec_body.h"
#undef FR__V
#undef FR__VEC_OWN_SOFTMAX
#pragma GCC pop_options
#endif

static const struct {
  const char *name;
  const struct fr_cpu_vec *table;
} fr__vpaths[] = {
    {"scalar", &fr__vgen_table},
#ifdef FR__HAVE_X86_PATHS
    {"f16c", &fr__vavx2_table},
    {"avx512", &fr__vavx512_table},
#endif
};
enum { FR__NVPATHS = sizeof fr__vpaths / sizeof fr__vpaths[0] };

static int fr__vsupported(int i) {
#ifdef FR__HAVE_X86_PATHS
  __builtin_cpu_init();
  if (i == 1)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (i == 2)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
#endif
  return i == 0;
}

static int fr__vchosen;
static pthread_once_t fr__vec_once = PTHREAD_ONCE_INIT;
static void fr__vec_pick(void) {
  const char *names[FR__NVPATHS];
  for (int i = 0; i < FR__NVPATHS; i++)
    names[i] = fr__vpaths[i].name;
  fr__vchosen = fr_cpu_isa_pick(names, FR__NVPATHS, fr__vsupported);
}

const struct fr_cpu_vec *fr_cpu_vec(void) {
  pthread_once(&fr__vec_once, fr__vec_pick);
  return fr__vpaths[fr__vchosen].table;
}

const char *fr_cpu_vec_name(void) {
  pthread_once(&fr__vec_once, fr__vec_pick);
  return fr__vpaths[fr__vchosen].name;
}

bool fr_cpu_avx512(void) {
#ifdef FR__HAVE_X86_PATHS
  return fr_cpu_vec() == &fr__vavx512_table;
#else
  return false;
#endif
}

int fr_cpu_vec_all(const struct fr_cpu_vec **out, const char **names) {
  int n = 0;
  for (int i = 0; i < FR__NVPATHS; i++) {
    if (!fr__vsupported(i))
      continue;
    if (names)
      names[n] = fr__vpaths[i].name;
    out[n++] = fr__vpaths[i].table;
  }
  return n;
}
