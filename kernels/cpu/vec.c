/* The CPU backend's vector math, built for AVX2+FMA and for the baseline ISA from one source
 * (vec_body.h); fr_cpu_vec() picks the best the running CPU supports, once. Distribution builds target
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

#define FR__V(name) fr__vgen_##name
#include "kernels/cpu/vec_body.h"
#undef FR__V

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FR__HAVE_AVX2_PATH 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define FR__V(name) fr__vavx2_##name
#include "kernels/cpu/vec_body.h"
#undef FR__V
#pragma GCC pop_options
#endif

#ifdef FR__HAVE_AVX2_PATH
static int fr__avx2;
static pthread_once_t fr__vec_once = PTHREAD_ONCE_INIT;
static void fr__vec_detect(void) {
  __builtin_cpu_init();
  fr__avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

const struct fr_cpu_vec *fr_cpu_vec(void) {
#ifdef FR__HAVE_AVX2_PATH
  pthread_once(&fr__vec_once, fr__vec_detect);
  if (fr__avx2)
    return &fr__vavx2_table;
#endif
  return &fr__vgen_table;
}

int fr_cpu_vec_all(const struct fr_cpu_vec **out) {
  out[0] = &fr__vgen_table;
#ifdef FR__HAVE_AVX2_PATH
  if (fr_cpu_vec() != &fr__vgen_table) {
    out[1] = &fr__vavx2_table;
    return 2;
  }
#endif
  return 1;
}
