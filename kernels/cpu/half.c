/* 16-bit -> fp32 conversion for the CPU backend's 16-bit weights (F16 / BF16 kept as stored; linear, conv2d
 * and embedding convert panels of them as they go). Three paths, one binary: AVX-512F (16 lanes), F16C with
 * AVX2 (8 lanes) and plain C; the best the running CPU supports is chosen once, or the one named by the
 * environment variable FR_CPU_ISA (scalar | f16c | avx512) so tests and benchmarks can force each in turn.
 * A forced path the CPU lacks falls back to the best one below it. Every path is exact: an F16 or BF16 value
 * is representable in fp32, so all three give bit-identical results (the tests check that). */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/cpu.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FR__HAVE_X86_HALF 1
#include <immintrin.h>
#endif

static void fr__half_scalar(float *dst, const uint16_t *src, size_t n, enum fr_dtype dt) {
  fr_convert_to_f32(dst, src, dt, n);
}

#ifdef FR__HAVE_X86_HALF
__attribute__((target("avx2,f16c"))) static void fr__half_f16c(float *dst, const uint16_t *src, size_t n,
                                                               enum fr_dtype dt) {
  size_t i = 0;
  if (dt == FR_F16) {
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
  } else { /* BF16: the top half of an fp32 */
    for (; i + 8 <= n; i += 8) {
      __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + i)));
      _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    }
  }
  if (i < n)
    fr_convert_to_f32(dst + i, src + i, dt, n - i);
}

__attribute__((target("avx512f"))) static void fr__half_avx512(float *dst, const uint16_t *src, size_t n,
                                                               enum fr_dtype dt) {
  size_t i = 0;
  if (dt == FR_F16) {
    for (; i + 16 <= n; i += 16)
      _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
  } else {
    for (; i + 16 <= n; i += 16) {
      __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src + i)));
      _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
    }
  }
  if (i < n)
    fr_convert_to_f32(dst + i, src + i, dt, n - i);
}
#endif

static const struct {
  const char *name;
  fr_cpu_half_fn fn;
} fr__paths[] = {
    {"scalar", fr__half_scalar},
#ifdef FR__HAVE_X86_HALF
    {"f16c", fr__half_f16c},
    {"avx512", fr__half_avx512},
#endif
};
enum { FR__NPATHS = sizeof fr__paths / sizeof fr__paths[0] };

static int fr__supported(int i) {
#ifdef FR__HAVE_X86_HALF
  __builtin_cpu_init();
  if (i == 1)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  if (i == 2)
    return __builtin_cpu_supports("avx512f");
#endif
  return i == 0;
}

int fr_cpu_isa_pick(const char *const *names, int n, int (*supported)(int)) {
  int best = 0;
  for (int i = 0; i < n; i++)
    if (supported(i))
      best = i;
  const char *want = getenv("FR_CPU_ISA");
  if (want && *want) {
    for (int i = 0; i < n; i++)
      if (strcmp(want, names[i]) == 0) {
        best = i;
        break;
      }
    while (best > 0 && !supported(best))
      best--;
  }
  return best;
}

static int fr__chosen;
static pthread_once_t fr__half_once = PTHREAD_ONCE_INIT;
static void fr__half_pick(void) {
  const char *names[FR__NPATHS];
  for (int i = 0; i < FR__NPATHS; i++)
    names[i] = fr__paths[i].name;
  fr__chosen = fr_cpu_isa_pick(names, FR__NPATHS, fr__supported);
}

fr_cpu_half_fn fr_cpu_half(const char **name) {
  pthread_once(&fr__half_once, fr__half_pick);
  if (name)
    *name = fr__paths[fr__chosen].name;
  return fr__paths[fr__chosen].fn;
}

int fr_cpu_half_all(fr_cpu_half_fn *fns, const char **names, int cap) {
  int n = 0;
  for (int i = 0; i < FR__NPATHS && n < cap; i++) {
    if (!fr__supported(i))
      continue;
    fns[n] = fr__paths[i].fn;
    names[n++] = fr__paths[i].name;
  }
  return n;
}

/* ---- panels: rows [r0, r1) of a 16-bit [R, K] matrix as fp32, converted on the pool ---- */
struct fr__panel {
  float *dst;
  const uint16_t *src;
  int64_t K;
  enum fr_dtype dt;
  fr_cpu_half_fn fn;
};

static void fr__panel_task(void *argp, int64_t a0, int64_t a1, int part) {
  (void)part;
  const struct fr__panel *p = argp;
  p->fn(p->dst + a0 * p->K, p->src + a0 * p->K, (size_t)((a1 - a0) * p->K), p->dt);
}

void fr_cpu_half_rows(struct fr_cpu *cpu, float *dst, const struct fr_tensor *w, int64_t r0, int64_t r1,
                      int64_t K) {
  struct fr__panel p = {dst, (const uint16_t *)w->data + r0 * K, K, w->dtype, fr_cpu_half(NULL)};
  int64_t n = r1 - r0, min_rows = ((int64_t)1 << 15) / (K ? K : 1);
  if (n * K < ((int64_t)1 << 16)) /* too small to be worth waking the pool */
    fr__panel_task(&p, 0, n, 0);
  else
    fr_cpu_parallel(cpu->pool, n, min_rows > 0 ? min_rows : 1, fr__panel_task, &p);
}
