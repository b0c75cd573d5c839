/* The CPU backend and OpenBLAS's threads (kernels/cpu/pool.c, fr_cpu_blas_threads): the first CPU context
 * sets OpenBLAS's worker timeout to its minimum (2^4 cycles) so its idle workers sleep instead of spinning
 * against the pool's threads between GEMMs, and restarts OpenBLAS's thread server to read it; GEMMs then
 * still run threaded and correct. The timeout is read back through OpenBLAS's own openblas_thread_timeout
 * (an exported function: the value its workers use). A user's OPENBLAS_THREAD_TIMEOUT is kept. Skipped
 * when the BLAS linked is not a pthreads OpenBLAS exporting those functions (another BLAS is left alone).
 *
 * The CPU time OpenBLAS's workers burn in a 50 ms pause after a GEMM is printed (not asserted: timings
 * are never test conditions; BENCHMARKS.md has the before/after). */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "kernels/ops.h"
#include "tests/test.h"

static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
         1e-6 * (double)ru.ru_stime.tv_usec;
}

int main(void) {
  int (*timeout)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "openblas_thread_timeout");
  int (*parallel)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "openblas_get_parallel");
  if (!timeout || !parallel || parallel() != 1 || !dlsym(RTLD_DEFAULT, "blas_thread_shutdown_")) {
    fr_test_skip("the BLAS is not a pthreads OpenBLAS exporting openblas_thread_timeout");
    return fr_test_done();
  }
  const char *user = getenv("OPENBLAS_THREAD_TIMEOUT");
  char want[32];
  snprintf(want, sizeof want, "%s", user ? user : "4");
  int before = timeout();

  struct fr_ctx *c = NULL;
  struct fr_err e = {{0}};
  CHECK_OK(fr_ctx_new(&(struct fr_ctx_opts){.device = "cpu", .threads = 2}, &c, &e), &e);
  if (!c)
    return fr_test_done();
  const char *now = getenv("OPENBLAS_THREAD_TIMEOUT");
  CHECKF(now && !strcmp(now, want), "OPENBLAS_THREAD_TIMEOUT is %s, want %s", now ? now : "(unset)", want);
  if (!user)
    CHECKF(timeout() == 4, "OpenBLAS reads a timeout of %d (before the context: %d), want 4", timeout(),
           before);
  printf("OPENBLAS_THREAD_TIMEOUT %s (user's: %s); OpenBLAS's value %d, before %d\n", now ? now : "-",
         user ? user : "none", timeout(), before);

  /* A threaded GEMM after the restart: y [M, N] = x [M, K] w^T, against a double reference. */
  enum { M = 384, N = 256, K = 320 };
  struct fr_tensor *x = fr_tensor_f32(2, (int64_t[]){M, K}), *w = fr_tensor_f32(2, (int64_t[]){N, K});
  CHECK(x && w);
  if (!x || !w)
    return fr_test_done();
  float *xd = x->data, *wd = w->data;
  for (int i = 0; i < M * K; i++)
    xd[i] = (float)sin(0.37 * i);
  for (int i = 0; i < N * K; i++)
    wd[i] = (float)cos(0.11 * i);
  for (int round = 0; round < 3; round++) {
    struct fr_tensor *xu = fr_ctx_upload(c, x), *wu = fr_ctx_upload(c, w);
    struct fr_tensor *y = fr_linear(c, xu, wu, NULL);
    struct fr_tensor *yh = y ? fr_ctx_download(c, y) : NULL;
    CHECKF(yh != NULL, "linear failed: %s", fr_ctx_status(c, &e) ? e.msg : "");
    if (yh) {
      double maxerr = 0, maxref = 0;
      for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
          double r = 0;
          for (int k = 0; k < K; k++)
            r += (double)xd[i * K + k] * (double)wd[j * K + k];
          double d = fabs(r - ((float *)yh->data)[i * N + j]);
          maxerr = d > maxerr ? d : maxerr;
          maxref = fabs(r) > maxref ? fabs(r) : maxref;
        }
      /* fp32 sums of K = 320 products of values <= 1: rounding well under 1e-5 of the largest result */
      CHECKF(maxerr <= 1e-5 * maxref, "round %d: linear error %.3g of max %.3g", round, maxerr, maxref);
    }
    double c0 = cpu_s();
    usleep(50000);
    printf("round %d: CPU time of the process during a 50 ms pause after the GEMM: %.1f ms\n", round,
           (cpu_s() - c0) * 1e3);
    fr_tensor_free(yh), fr_tensor_free(y), fr_tensor_free(xu), fr_tensor_free(wu);
  }
  fr_tensor_free(x), fr_tensor_free(w);
  fr_ctx_free(c);
  return fr_test_done();
}
