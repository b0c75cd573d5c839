/* A small timing program for the CPU ops at full SD1.5 sizes (not run by ctest: timings are numbers to
 * read, never assertions). Build from a configured build dir:
 *   cc -O2 -I. tests/bench_ops.c build/libfr_kernels.a build/libfr_core.a -lopenblas -lpthread -lm \
 *      $(pkg-config --libs yaml-0.1 sqlite3 libpng libxxhash) -o build/bench_ops
 * Prints ms per call and GFLOP/s (2 flops per multiply-add). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "kernels/ops.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_s(void) { /* CPU seconds of all threads: less disturbed by other processes than wall time */
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
         1e-6 * (double)ru.ru_stime.tv_usec;
}
static const char *only;

/* A random F16 weight kept 16-bit by the context (as a model's): the conv rows below run the panel path. */
static struct fr_tensor *rnd_f16(struct fr_ctx *c, int n, const int64_t *shape) {
  struct fr_tensor *h = fr_tensor_new(FR_F16, n, shape);
  uint16_t *d = h->data;
  for (int64_t i = 0; i < fr_tensor_numel(h); i++)
    d[i] = (uint16_t)(0x2000 + (rand() & 0x0fff) + ((rand() & 1) << 15)); /* |v| in [2^-7, 2^-6) */
  struct fr_tensor *w = fr_ctx_weight(c, h);
  fr_tensor_free(h);
  return w;
}

static struct fr_tensor *rnd(int n, const int64_t *shape) {
  struct fr_tensor *t = fr_tensor_f32(n, shape);
  float *d = t->data;
  for (int64_t i = 0; i < fr_tensor_numel(t); i++)
    d[i] = (float)rand() / (float)RAND_MAX - 0.5f;
  return t;
}

/* Prints the mean over reps calls and the fastest call (on a shared machine the fastest is the steadier
 * figure: other load only ever adds time). */
#define TIME(label, flops, reps, expr)                                                                       \
  do {                                                                                                       \
    if (only && !strstr(label, only))                                                                        \
      break;                                                                                                 \
    struct fr_tensor *y_ = (expr); /* warm-up */                                                             \
    fr_tensor_free(y_);                                                                                      \
    double t0_ = now(), c0_ = cpu_s(), best_ = 1e30;                                                         \
    for (int r_ = 0; r_ < (reps); r_++) {                                                                    \
      double s_ = now();                                                                                     \
      y_ = (expr);                                                                                           \
      fr_tensor_free(y_);                                                                                    \
      best_ = now() - s_ < best_ ? now() - s_ : best_;                                                       \
    }                                                                                                        \
    double ms_ = (now() - t0_) * 1e3 / (reps), cms_ = (cpu_s() - c0_) * 1e3 / (reps);                        \
    printf("%-44s %9.2f ms  %7.1f GFLOP/s  (cpu %8.2f ms; fastest %8.2f ms, %7.1f GFLOP/s)\n", label, ms_,   \
           (double)(flops) / (ms_ * 1e6), cms_, best_ * 1e3, (double)(flops) / (best_ * 1e9));               \
  } while (0)

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 0;
  int reps = argc > 2 ? atoi(argv[2]) : 3;
  only = argc > 3 ? argv[3] : NULL;
  struct fr_ctx *c;
  struct fr_err e;
  if (fr_ctx_new(&(struct fr_ctx_opts){.device = "cpu", .threads = threads}, &c, &e) != FR_OK) {
    fprintf(stderr, "%s\n", e.msg);
    return 1;
  }
  if (!only || strstr("sgemm", only)) { /* raw sgemm baseline at the conv's GEMM shape */
    int M = 320, N = 4096, K = 2880;
    float *a = calloc((size_t)M * K, 4), *b = calloc((size_t)K * N, 4), *y = calloc((size_t)M * N, 4);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1, a, K, b, N, 0, y, N);
    double t0 = now(), c0 = cpu_s();
    for (int r = 0; r < reps; r++)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1, a, K, b, N, 0, y, N);
    double ms = (now() - t0) * 1e3 / reps, cms = (cpu_s() - c0) * 1e3 / reps;
    printf("%-44s %9.2f ms  %7.1f GFLOP/s  (cpu %8.2f ms)\n", "sgemm 320x4096x2880", ms,
           2.0 * M * N * K / (ms * 1e6), cms);
    free(a), free(b), free(y);
  }
  struct fr_tensor *x = rnd(4, (int64_t[]){1, 320, 64, 64}), *w = rnd(4, (int64_t[]){320, 320, 3, 3});
  struct fr_tensor *bias = rnd(1, (int64_t[]){320});
  TIME("conv2d [1,320,64,64] x [320,320,3,3]", 2.0 * 320 * 4096 * 2880, reps, fr_conv2d(c, x, w, bias, 1, 1));
  struct fr_tensor *x2 = rnd(4, (int64_t[]){1, 640, 32, 32}), *w2 = rnd(4, (int64_t[]){640, 640, 3, 3});
  TIME("conv2d [1,640,32,32] x [640,640,3,3]", 2.0 * 640 * 1024 * 5760, reps,
       fr_conv2d(c, x2, w2, NULL, 1, 1));
  struct fr_tensor *x3 = rnd(4, (int64_t[]){1, 1280, 8, 8}), *w3 = rnd(4, (int64_t[]){1280, 1280, 3, 3});
  TIME("conv2d [1,1280,8,8] x [1280,1280,3,3]", 2.0 * 1280 * 64 * 11520, reps,
       fr_conv2d(c, x3, w3, NULL, 1, 1));
  /* the UNet's own shapes: batch 2 (cfg), F16 weights */
  static const struct {
    const char *label;
    int64_t B, C, H, O, k, stride;
  } convs[] = {
      {"conv f16 B2 320->320 3x3 @64", 2, 320, 64, 320, 3, 1},
      {"conv f16 B2 640->640 3x3 @64", 2, 640, 64, 640, 3, 1},
      {"conv f16 B2 960->320 3x3 @64", 2, 960, 64, 320, 3, 1},
      {"conv f16 B2 640->320 3x3 @64", 2, 640, 64, 320, 3, 1},
      {"conv f16 B2 640->640 3x3 @32", 2, 640, 32, 640, 3, 1},
      {"conv f16 B2 1280->1280 3x3 @32", 2, 1280, 32, 1280, 3, 1},
      {"conv f16 B2 1280->1280 3x3 @16", 2, 1280, 16, 1280, 3, 1},
      {"conv f16 B2 2560->1280 3x3 @16", 2, 2560, 16, 1280, 3, 1},
      {"conv f16 B2 1280->1280 3x3 @8", 2, 1280, 8, 1280, 3, 1},
      {"conv f16 B2 2560->1280 3x3 @8", 2, 2560, 8, 1280, 3, 1},
      {"conv f16 B2 2560->1280 1x1 @8", 2, 2560, 8, 1280, 1, 1},
      /* the VAE decoder's, batch 1 */
      {"conv f16 B1 128->128 3x3 @512", 1, 128, 512, 128, 3, 1},
      {"conv f16 B1 256->128 3x3 @512", 1, 256, 512, 128, 3, 1},
      {"conv f16 B1 256->256 3x3 @512", 1, 256, 512, 256, 3, 1},
      {"conv f16 B1 256->256 3x3 @256", 1, 256, 256, 256, 3, 1},
      {"conv f16 B1 512->512 3x3 @128", 1, 512, 128, 512, 3, 1},
      {"conv f16 B1 128->3 3x3 @512", 1, 128, 512, 3, 3, 1},
  };
  for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++) {
    if (only && !strstr(convs[i].label, only))
      continue;
    int64_t B = convs[i].B, C = convs[i].C, H = convs[i].H, O = convs[i].O, k = convs[i].k;
    struct fr_tensor *xi = rnd(4, (int64_t[]){B, C, H, H}), *wi = rnd_f16(c, 4, (int64_t[]){O, C, k, k});
    struct fr_tensor *bi = rnd(1, (int64_t[]){O});
    TIME(convs[i].label, 2.0 * B * O * C * k * k * H * H, reps, fr_conv2d(c, xi, wi, bi, 1, k / 2));
    fr_tensor_free(xi), fr_tensor_free(wi), fr_tensor_free(bi);
  }
  static const struct {
    const char *label;
    int64_t M, N, K;
    bool bias;
  } lins[] = {
      {"linear f16 8192x320x320 + bias", 8192, 320, 320, true},
      {"linear f16 8192x320x320", 8192, 320, 320, false},
      {"linear f16 8192x2560x320 + bias", 8192, 2560, 320, true},
      {"linear f16 2048x640x640 + bias", 2048, 640, 640, true},
      {"linear f16 512x1280x1280 + bias", 512, 1280, 1280, true},
  };
  for (size_t i = 0; i < sizeof lins / sizeof lins[0]; i++) {
    if (only && !strstr(lins[i].label, only))
      continue;
    struct fr_tensor *xi = rnd(2, (int64_t[]){lins[i].M, lins[i].K});
    struct fr_tensor *wi = rnd_f16(c, 2, (int64_t[]){lins[i].N, lins[i].K});
    struct fr_tensor *bi = lins[i].bias ? rnd(1, (int64_t[]){lins[i].N}) : NULL;
    TIME(lins[i].label, 2.0 * lins[i].M * lins[i].N * lins[i].K, reps, fr_linear(c, xi, wi, bi));
    fr_tensor_free(xi), fr_tensor_free(wi), fr_tensor_free(bi);
  }
  struct fr_tensor *q = rnd(3, (int64_t[]){1, 4096, 320});
  TIME("attention [1,4096,320] 8 heads self", 4.0 * 4096 * 4096 * 320, reps,
       fr_attention(c, q, q, q, 8, false));
  { /* the UNet's own: both cfg images, q, k and v distinct (31 MB together, about the L3) */
    struct fr_tensor *q2 = rnd(3, (int64_t[]){2, 4096, 320}), *k2 = rnd(3, (int64_t[]){2, 4096, 320}),
                     *v2 = rnd(3, (int64_t[]){2, 4096, 320});
    TIME("attention [2,4096,320] q k v 8 heads", 2 * 4.0 * 4096 * 4096 * 320, reps,
         fr_attention(c, q2, k2, v2, 8, false));
    fr_tensor_free(q2), fr_tensor_free(k2), fr_tensor_free(v2);
  }
  { /* the VAE's middle block: one 512-wide head over the 64x64 latent */
    struct fr_tensor *qv = rnd(3, (int64_t[]){1, 4096, 512});
    TIME("attention [1,4096,512] 1 head (VAE)", 4.0 * 4096 * 4096 * 512, reps,
         fr_attention(c, qv, qv, qv, 1, false));
    fr_tensor_free(qv);
  }
  struct fr_tensor *kv = rnd(3, (int64_t[]){1, 77, 320});
  TIME("attention [1,4096,320] x [1,77,320] 8 heads", 4.0 * 4096 * 77 * 320, reps,
       fr_attention(c, q, kv, kv, 8, false));
  struct fr_tensor *lw = rnd(2, (int64_t[]){2560, 320});
  TIME("linear [4096,320] x [2560,320]", 2.0 * 4096 * 2560 * 320, reps, fr_linear(c, q, lw, NULL));
  TIME("group_norm+silu [1,320,64,64]", 0, reps, fr_group_norm(c, x, 32, bias, bias, 1e-5f, true));
  TIME("layer_norm [1,4096,320]", 0, reps, fr_layer_norm(c, q, NULL, NULL, 1e-5f));
  struct fr_tensor *g = rnd(3, (int64_t[]){1, 4096, 2560});
  TIME("geglu [1,4096,2560]", 0, reps, fr_geglu(c, g));
  TIME("add [1,320,64,64]", 0, reps, fr_add(c, x, x));
  TIME("permute [1,320,64,64] -> bhwc", 0, reps, fr_permute(c, x, (int[]){0, 2, 3, 1}));
  fr_tensor_free(x), fr_tensor_free(w), fr_tensor_free(bias), fr_tensor_free(x2), fr_tensor_free(w2);
  fr_tensor_free(x3), fr_tensor_free(w3), fr_tensor_free(q), fr_tensor_free(kv), fr_tensor_free(lw),
      fr_tensor_free(g);
  fr_ctx_free(c);
  return 0;
}
