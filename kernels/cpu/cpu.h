/* CPU backend internals: the backend context, the worker pool and the kernels' entry points.
 * Only the files in kernels/cpu/ include this; everything else reaches the CPU through kernels/backend.h. */
#ifndef FR_KERNELS_CPU_H
#define FR_KERNELS_CPU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/backend.h"

/* ---- worker pool (pool.c) ----
 * A fixed set of threads that run one parallel loop at a time. The calling thread takes part, so a pool
 * of n threads starts n - 1 workers. Not re-entrant: a task must not call fr_cpu_parallel itself. */
struct fr_cpu_pool;
/* Starts up to threads - 1 workers (fewer if pthread_create fails: the pool still works). NULL: no memory. */
struct fr_cpu_pool *fr_cpu_pool_new(int threads);
void fr_cpu_pool_free(struct fr_cpu_pool *p);
int fr_cpu_pool_threads(const struct fr_cpu_pool *p);
/* Calls fn(arg, begin, end, part) over disjoint ranges covering [0, n), in parallel; returns when all are
 * done. part (0 .. threads-1) is unique among the concurrent calls, for per-thread scratch. A range has at
 * least min_chunk items (so small loops run on the caller alone). */
typedef void (*fr_cpu_task_fn)(void *arg, int64_t begin, int64_t end, int part);
void fr_cpu_parallel(struct fr_cpu_pool *p, int64_t n, int64_t min_chunk, fr_cpu_task_fn fn, void *arg);

/* OpenBLAS's thread count for the GEMMs (process-wide), its idle workers made to sleep instead of
 * spinning against the pool's threads (pool.c: once per process, unless OPENBLAS_THREAD_TIMEOUT is set). */
void fr_cpu_blas_threads(int threads);

/* ---- vector math (vec.c): hot fp32 loops, vectorised for the running CPU ---- */
struct fr_cpu_vec {
  float (*exp_sum)(float *x, int64_t n, float m); /* x = exp(x - m) in place; returns the sum */
  float (*max)(const float *x, int64_t n);        /* n >= 1 */
  void (*silu)(float *y, const float *x, int64_t n, float alpha); /* x * sigmoid(alpha x) */
  void (*gelu)(float *y, const float *x, int64_t n);              /* erf GELU */
  void (*geglu)(float *y, const float *h, const float *g, int64_t n);
  void (*affine_silu)(float *y, const float *x, int64_t n, float sc, float sh, int silu);
  void (*scale)(float *x, int64_t n, float s);
  void (*mean_var)(const float *x, int64_t n, double *mean, double *var); /* double, biased; n >= 1 */
  /* y = (x - mean) * rstd [* g] [+ b], g and b per element or NULL (LayerNorm) */
  void (*norm_affine)(float *y, const float *x, int64_t n, float mean, float rstd, const float *g,
                      const float *b);
  void (*axpy)(float *restrict y, const float *restrict x, int64_t n, float a); /* y += a x */
};
/* The fastest implementation this CPU supports (AVX-512, AVX2+FMA or baseline), or the one FR_CPU_ISA
 * names (scalar | f16c | avx512, as for the converters below); never NULL. */
const struct fr_cpu_vec *fr_cpu_vec(void);
/* Every implementation this CPU can run (baseline first), so tests can check each one whatever is picked.
 * Returns the count (1 to 3) and fills out (room for 3) and, when names is not NULL, their names. */
int fr_cpu_vec_all(const struct fr_cpu_vec **out, const char **names);

/* ---- attention in AVX-512 register tiles (attn512.c), for fr_cpu_attention when fr_cpu_avx512() ---- */
/* Floats of per-thread scratch fr_cpu_attn512_block needs for head size D. */
size_t fr_cpu_attn512_scratch(int64_t D);
/* One block of n <= 64 queries of one head: y [n, D] = softmax(scale q k^T) v, where q, y: [n, D] and
 * k, v: [Tk, D], all with row stride ld (pointing at the head's first column); causal: query q0 + i sees
 * keys <= q0 + i. */
void fr_cpu_attn512_block(float *y, const float *q, const float *k, const float *v, int64_t ld, int64_t n,
                          int64_t q0, int64_t Tk, int64_t D, float scale, bool causal, float *scratch);
/* ---- 3x3 stride-1 pad-1 convolution in AVX-512 register tiles, no im2col (conv512.c) ---- */
/* The shape it handles: 3x3, stride 1, pad 1, O % 8 == 0, W % 32 == 0, on an x86-64 GCC/clang build. */
bool fr_cpu_conv512_fits(int64_t C, int64_t O, int64_t kh, int64_t kw, int stride, int pad, int64_t H,
                         int64_t W);
/* Floats of per-thread scratch fr_cpu_conv512_row needs for C input channels. */
size_t fr_cpu_conv512_window(int64_t C);
/* wp [O / 8, C, 9, 8] from the fp32 kernel w [O, C, 3, 3]. */
void fr_cpu_conv512_pack_w(float *wp, const float *w, int64_t O, int64_t C);
/* Output row oh of one image, all O channels: y [O, H, W] = conv(x [C, H, W]) + bias (or none). */
void fr_cpu_conv512_row(float *y, const float *x, const float *wp, const float *bias, int64_t C, int64_t O,
                        int64_t H, int64_t W, int64_t oh, float *win);

/* ---- y = w x + bias in AVX-512 register tiles, the 16-bit weight converted block by block (gemm512.c) ----
 * y's output channel o, column n at y + (n / pc) * ldb + o * ldo + n % pc; w [O, K] (O = w->shape[0]) fp32
 * or 16-bit; x [K, N] with row stride ldx; N % 64 == 0 and pc % 64 == 0; bias [O] or NULL. scratch:
 * fr_cpu_gemm512_scratch(cpu->threads) floats. Runs on the pool; only when fr_cpu_avx512(). */
struct fr_cpu;
size_t fr_cpu_gemm512_scratch(int threads);
void fr_cpu_gemm512(struct fr_cpu *cpu, float *y, const struct fr_tensor *w, int64_t K, const float *x,
                    int64_t N, int64_t ldx, const float *bias, int64_t pc, int64_t ldb, int64_t ldo,
                    float *scratch);
/* y [M, N] = x [M, K] w [N, K]^T + bias (or none), N = w->shape[0] % 64 == 0, w fp32 or 16-bit; scratch:
 * fr_cpu_linear512_scratch(N, K, cpu->threads) floats. Runs on the pool; only when fr_cpu_avx512(). */
size_t fr_cpu_linear512_scratch(int64_t N, int64_t K, int threads);
void fr_cpu_linear512(struct fr_cpu *cpu, float *y, const float *x, const struct fr_tensor *w,
                      const float *bias, int64_t M, float *scratch);

/* The name of the vector path fr_cpu_vec() chose: "scalar", "f16c" (AVX2+FMA) or "avx512". */
const char *fr_cpu_vec_name(void);
/* Whether that path is AVX-512: attention's and the wide 3x3 convs' register tiles are taken then. */
bool fr_cpu_avx512(void);

/* ---- 16-bit weights (half.c) ----
 * On the CPU, F16/BF16 weights of two or more dims stay 16-bit in memory (fr_backend.weight); linear,
 * conv2d and embedding convert panels of them to fp32 as they go and accumulate in fp32. */
struct fr_cpu;
typedef void (*fr_cpu_half_fn)(float *dst, const uint16_t *src, size_t n, enum fr_dtype dt); /* F16/BF16 */
/* The path among n (names[0] the baseline, each later one needing more of the CPU; supported(i) says
 * whether this CPU runs path i) to use: the last supported one, or the one the environment variable
 * FR_CPU_ISA names, falling back to the best supported one below it. Shared by half.c and vec.c. */
int fr_cpu_isa_pick(const char *const *names, int n, int (*supported)(int));
/* The converter in use: the best this CPU supports, or the one FR_CPU_ISA names (scalar | f16c | avx512;
 * a path the CPU lacks falls back to the best below it). *name (if name) gets its name. */
fr_cpu_half_fn fr_cpu_half(const char **name);
/* Every converter this CPU can run, baseline first (at most cap); returns the count. For tests. */
int fr_cpu_half_all(fr_cpu_half_fn *fns, const char **names, int cap);
/* dst [r1 - r0, K] = rows [r0, r1) of the 16-bit matrix w viewed as [R, K], in fp32, on the pool. */
void fr_cpu_half_rows(struct fr_cpu *cpu, float *dst, const struct fr_tensor *w, int64_t r0, int64_t r1,
                      int64_t K);
static inline bool fr_cpu_is_half(const struct fr_tensor *t) {
  return t->dtype == FR_F16 || t->dtype == FR_BF16;
}

/* ---- backend context (backend.c) ---- */
struct fr_cpu {
  struct fr_cpu_pool *pool;
  int threads;
  /* Scratch reused across ops (im2col columns, attention scores) so hot loops do not allocate. */
  float *scratch;
  size_t scratch_n;             /* floats */
  float *wscratch;              /* fp32 panels of 16-bit weights (gemm.c) */
  size_t wscratch_n;            /* floats */
  struct fr_cpu_budget *budget; /* fr_ctx_opts.mem_limit > 0: tensor bytes counted against it; else NULL */
  struct fr_cpu_mem *mem;       /* the size-class pool device tensors come from (backend.c) */
};
/* A scratch buffer of at least n floats, valid until the next call; NULL when out of memory. */
float *fr_cpu_scratch(struct fr_cpu *cpu, size_t n);
/* The same for weight panels (a second buffer: a conv uses both at once). */
float *fr_cpu_wscratch(struct fr_cpu *cpu, size_t n);
/* Sets OpenBLAS's process-wide thread count, excluding every GEMM of every context meanwhile (gemm.c says
 * why: a count changed under a running GEMM of another context gives wrong numbers). */
void fr_cpu_blas_set_threads(int n);

/* ---- kernels (gemm.c, norm.c, eltwise.c): the backend's op entry points ---- */
enum fr_status fr_cpu_linear(void *b, struct fr_tensor *y, const struct fr_tensor *x,
                             const struct fr_tensor *w, const struct fr_tensor *bias, struct fr_err *err);
enum fr_status fr_cpu_matmul(void *b, struct fr_tensor *y, const struct fr_tensor *a,
                             const struct fr_tensor *bm, struct fr_err *err);
enum fr_status fr_cpu_conv2d(void *b, struct fr_tensor *y, const struct fr_tensor *x,
                             const struct fr_tensor *w, const struct fr_tensor *bias, int stride, int pad,
                             struct fr_err *err);
enum fr_status fr_cpu_attention(void *b, struct fr_tensor *y, const struct fr_tensor *q,
                                const struct fr_tensor *k, const struct fr_tensor *v, int heads, bool causal,
                                struct fr_err *err);
enum fr_status fr_cpu_group_norm(void *b, struct fr_tensor *y, const struct fr_tensor *x, int groups,
                                 const struct fr_tensor *gamma, const struct fr_tensor *beta, float eps,
                                 bool silu, struct fr_err *err);
enum fr_status fr_cpu_layer_norm(void *b, struct fr_tensor *y, const struct fr_tensor *x,
                                 const struct fr_tensor *gamma, const struct fr_tensor *beta, float eps,
                                 struct fr_err *err);
enum fr_status fr_cpu_softmax(void *b, struct fr_tensor *y, const struct fr_tensor *x, struct fr_err *err);
/* Softmax of `rows` rows of n floats in place (row max subtracted, fp32), on the pool. */
void fr_cpu_softmax_rows(struct fr_cpu *cpu, float *x, int64_t rows, int64_t n);
enum fr_status fr_cpu_unary(void *b, enum fr_unary_op op, struct fr_tensor *y, const struct fr_tensor *x,
                            float p0, float p1, struct fr_err *err);
enum fr_status fr_cpu_geglu(void *b, struct fr_tensor *y, const struct fr_tensor *x, struct fr_err *err);
enum fr_status fr_cpu_binary(void *b, enum fr_binary_op op, struct fr_tensor *y, const struct fr_tensor *a,
                             const struct fr_tensor *bt, const struct fr_bcast *bc, struct fr_err *err);
enum fr_status fr_cpu_concat(void *b, struct fr_tensor *y, const struct fr_tensor *const *xs, int n, int dim,
                             struct fr_err *err);
enum fr_status fr_cpu_slice(void *b, struct fr_tensor *y, const struct fr_tensor *x, int dim, int64_t start,
                            struct fr_err *err);
enum fr_status fr_cpu_permute(void *b, struct fr_tensor *y, const struct fr_tensor *x, const int *perm,
                              struct fr_err *err);
enum fr_status fr_cpu_pad2d(void *b, struct fr_tensor *y, const struct fr_tensor *x, int left, int top,
                            float value, struct fr_err *err);
enum fr_status fr_cpu_upsample_nearest2x(void *b, struct fr_tensor *y, const struct fr_tensor *x,
                                         struct fr_err *err);
enum fr_status fr_cpu_embedding(void *b, struct fr_tensor *y, const struct fr_tensor *ids,
                                const struct fr_tensor *table, struct fr_err *err);
enum fr_status fr_cpu_gather_rows(void *b, struct fr_tensor *y, const struct fr_tensor *x,
                                  const int64_t *index, struct fr_err *err);
enum fr_status fr_cpu_timestep_embedding(void *b, struct fr_tensor *y, const struct fr_tensor *t,
                                         bool flip_sin_to_cos, float downscale_freq_shift, float max_period,
                                         struct fr_err *err);

#endif
