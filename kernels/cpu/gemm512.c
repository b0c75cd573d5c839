/* The AVX-512 products of the CPU backend's convs and linears, in register tiles, for 16-bit (or fp32)
 * weights read where they are; used by gemm.c when fr_cpu_avx512() and the shape fits.
 *
 * fr_cpu_gemm512: y = w x + bias for w [O, K] and an fp32 x [K, N] (im2col columns): the convs of SD's 16x16
 * and 8x8 levels (both cfg images side by side: N = 512 or 128, K = 5760..23040, O = 640..1280) and, in
 * chunks of output rows, of its 32x32 level. Through OpenBLAS each call first converted the whole weight
 * (up to 59 MB of fp32 for a 1280 x 11520 kernel) into a panel that OpenBLAS then read and packed again:
 * three passes over memory per weight element for only 2N flops each, and the reason those convs ran at
 * 250-330 GFLOP/s in the model against 400 for the floor. Here the weight is read once, 16-bit, from where
 * it is: per block of up to FR__GKB reductions x FR__GR output channels its rows are converted into an
 * L1-sized fp32 block, which then runs over all N columns of the block's x rows (kept in L2) in tiles of
 * FR__GR channels x 64 columns: per k, four vector loads of x, FR__GR broadcasts of w, 4 FR__GR FMAs. The
 * sums run over k in order, in fp32 with FMA, with the partial sums kept in y between k blocks.
 * Output channel o, column n goes to y + (n / pc) * ldb + o * ldo + n % pc (pc % 64 == 0): the columns of
 * several images side by side (pc = ldo = P, ldb = O P) or a chunk of one image's (pc = the chunk, ldo = P)
 * go straight to y's [B, O, P] layout.
 *
 * fr_cpu_linear512: y [M, N] = x [M, K] w [N, K]^T + bias with many rows (the 64x64 and 32x32 levels'
 * transformers), described at its section below. */
#include "kernels/cpu/cpu.h"

/* Reductions per block: x's block [kb, N] up to FR__GXB floats (256 KB, a quarter of the L2), between 256 and
 * FR__GKB (longer rows of w per block: fewer passes over the whole weight, each row read in longer runs). */
#define FR__GXB ((int64_t)64 << 10)
#define FR__GKB 2048
#define FR__GR 6 /* output channels per tile */

struct fr__g512 {
  const void *w; /* [O, K], fp32 or 16-bit */
  const float *x, *bias;
  float *y, *wblk; /* wblk: per part, FR__GR * FR__GKB floats */
  int64_t O, K, N, ldx, pc, ldb, ldo;
  enum fr_dtype wdt;
  fr_cpu_half_fn half;
};

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include "kernels/cpu/tile512.h"

/* Output channels [FR__GR t0, FR__GR t1) (clipped to O), all columns. */
__attribute__((target("avx512f,fma"))) static void fr__g512_task(void *argp, int64_t t0, int64_t t1,
                                                                 int part) {
  const struct fr__g512 *a = argp;
  int64_t K = a->K, pc = a->pc, kbl = FR__GXB / a->N / 64 * 64;
  kbl = kbl < 256 ? 256 : kbl > FR__GKB ? FR__GKB : kbl;
  float *wblk = a->wblk + (size_t)part * FR__GR * FR__GKB;
  for (int64_t k0 = 0; k0 < K; k0 += kbl) {
    int64_t kb = K - k0 < kbl ? K - k0 : kbl;
    for (int64_t t = t0; t < t1; t++) {
      int64_t o0 = t * FR__GR, R = a->O - o0 < FR__GR ? a->O - o0 : FR__GR, ldw = kb;
      const float *wr;
      if (a->half) { /* rows o0.. of the block, converted: [R, kb] */
        for (int64_t r = 0; r < R; r++)
          a->half(wblk + r * kb, (const uint16_t *)a->w + (o0 + r) * K + k0, (size_t)kb, a->wdt);
        wr = wblk;
      } else {
        wr = (const float *)a->w + o0 * K + k0;
        ldw = K;
      }
      if (a->half && t + 1 < t1) { /* the next block's rows from memory into L2 while this one computes */
        int64_t o1 = o0 + FR__GR, r1 = a->O - o1 < FR__GR ? a->O - o1 : FR__GR;
        for (int64_t r = 0; r < r1; r++) {
          const char *src = (const char *)((const uint16_t *)a->w + (o1 + r) * K + k0);
          for (int64_t off = 0; off < kb * 2; off += 64)
            _mm_prefetch(src + off, _MM_HINT_T1);
        }
      }
      const float *bias = a->bias ? a->bias + o0 : NULL;
      for (int64_t n0 = 0; n0 < a->N; n0 += 64) {
        float *y = a->y + (n0 / pc) * a->ldb + o0 * a->ldo + n0 % pc;
        const float *x = a->x + k0 * a->ldx + n0;
        fr__tile64_n((int)R, y, a->ldo, wr, ldw, 1, x, a->ldx, kb, k0 > 0, bias, NULL);
      }
    }
  }
}
#else
static void fr__g512_task(void *argp, int64_t t0, int64_t t1, int part) {}
#endif

size_t fr_cpu_gemm512_scratch(int threads) {
  return (size_t)threads * FR__GR * FR__GKB;
}

void fr_cpu_gemm512(struct fr_cpu *cpu, float *y, const struct fr_tensor *w, int64_t K, const float *x,
                    int64_t N, int64_t ldx, const float *bias, int64_t pc, int64_t ldb, int64_t ldo,
                    float *scratch) {
  int64_t O = w->shape[0];
  struct fr__g512 a = {.w = w->data,
                       .x = x,
                       .bias = bias,
                       .y = y,
                       .wblk = scratch,
                       .O = O,
                       .K = K,
                       .N = N,
                       .ldx = ldx,
                       .pc = pc,
                       .ldb = ldb,
                       .ldo = ldo,
                       .wdt = w->dtype,
                       .half = fr_cpu_is_half(w) ? fr_cpu_half(NULL) : NULL};
  fr_cpu_parallel(cpu->pool, (O + FR__GR - 1) / FR__GR, 1, fr__g512_task, &a);
}

/* ---- y [M, N] = x [M, K] w [N, K]^T + bias, the transformers' linears ----
 * w is first packed, converted to fp32, as panels of 64 output features [N / 64, K, 64] (fr_cpu_linear512's
 * scratch); then per chunk of x's rows (at most FR__LXB floats: it stays in L2) every panel runs over the
 * chunk in tiles of 6 rows x 64 features: per k, four vector loads of the panel, six broadcasts of x, 24
 * FMAs, over the whole K (no partial sums), the bias as the starting value. */
#define FR__LXB ((int64_t)64 << 10)

struct fr__l512 {
  const void *w;
  const float *x, *bias;
  float *y, *wp, *tmp; /* tmp: per part, K floats */
  int64_t M, N, K, rows;
  enum fr_dtype wdt;
  fr_cpu_half_fn half;
};

static void fr__l512_pack_task(void *argp, int64_t p0, int64_t p1, int part) {
  const struct fr__l512 *a = argp;
  int64_t K = a->K;
  float *tmp = a->tmp + (size_t)part * (size_t)K;
  for (int64_t p = p0; p < p1; p++) {
    float *dst = a->wp + p * K * 64;
    for (int64_t j = 0; j < 64; j++) {
      const float *row;
      if (a->half) {
        a->half(tmp, (const uint16_t *)a->w + (p * 64 + j) * K, (size_t)K, a->wdt);
        row = tmp;
      } else {
        row = (const float *)a->w + (p * 64 + j) * K;
      }
      for (int64_t k = 0; k < K; k++)
        dst[k * 64 + j] = row[k];
    }
  }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* Chunks [c0, c1) of a->rows rows of x. */
__attribute__((target("avx512f,fma"))) static void fr__l512_task(void *argp, int64_t c0, int64_t c1,
                                                                 int part) {
  (void)part;
  const struct fr__l512 *a = argp;
  int64_t K = a->K, N = a->N;
  for (int64_t ch = c0; ch < c1; ch++) {
    int64_t m0 = ch * a->rows, m1 = m0 + a->rows < a->M ? m0 + a->rows : a->M;
    for (int64_t p = 0; p < N / 64; p++) {
      const float *wp = a->wp + p * K * 64, *bias = a->bias ? a->bias + p * 64 : NULL;
      for (int64_t m = m0; m < m1; m += 6) {
        float *y = a->y + m * N + p * 64;
        const float *x = a->x + m * K;
        fr__tile64_n(m1 - m < 6 ? (int)(m1 - m) : 6, y, N, x, K, 1, wp, 64, K, false, NULL, bias);
      }
    }
  }
}
#else
static void fr__l512_task(void *argp, int64_t c0, int64_t c1, int part) {}
#endif

size_t fr_cpu_linear512_scratch(int64_t N, int64_t K, int threads) {
  return (size_t)(N * K) + (size_t)threads * (size_t)K;
}

void fr_cpu_linear512(struct fr_cpu *cpu, float *y, const float *x, const struct fr_tensor *w,
                      const float *bias, int64_t M, float *scratch) {
  int64_t N = w->shape[0], K = w->shape[1];
  int64_t rows = FR__LXB / K / 6 * 6;
  rows = rows < 6 ? 6 : rows;
  struct fr__l512 a = {.w = w->data,
                       .x = x,
                       .bias = bias,
                       .y = y,
                       .wp = scratch,
                       .tmp = scratch + N * K,
                       .M = M,
                       .N = N,
                       .K = K,
                       .rows = rows,
                       .wdt = w->dtype,
                       .half = fr_cpu_is_half(w) ? fr_cpu_half(NULL) : NULL};
  fr_cpu_parallel(cpu->pool, N / 64, 1, fr__l512_pack_task, &a);
  fr_cpu_parallel(cpu->pool, (M + rows - 1) / rows, 1, fr__l512_task, &a);
}
