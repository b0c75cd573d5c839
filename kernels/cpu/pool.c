/* A small fixed worker pool for the CPU backend's parallel loops (elementwise ops, norms, softmax,
 * im2col). One loop runs at a time: the caller publishes (fn, arg, n, parts) under the mutex, bumps a
 * generation counter and does part 0 itself; worker i does part i and counts itself done. Static
 * contiguous partitioning keeps each thread on its own cache lines. */
#include <cblas.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "core/alloc.h"
#include "kernels/cpu/cpu.h"

struct fr_cpu_worker {
  struct fr_cpu_pool *pool;
  pthread_t tid;
  int index; /* 1..n-1; the caller is part 0 */
};

struct fr_cpu_pool {
  pthread_mutex_t mu;
  pthread_cond_t wake, done;
  int threads; /* workers started + 1 */
  struct fr_cpu_worker *workers;
  /* the current loop */
  unsigned long gen;
  bool quit;
  fr_cpu_task_fn fn;
  void *arg;
  int64_t n;
  int parts;
  int pending; /* workers that have not finished this generation */
};

static void fr__run_part(struct fr_cpu_pool *p, int part) {
  if (part >= p->parts)
    return;
  int64_t b = p->n * part / p->parts, e = p->n * (part + 1) / p->parts;
  if (e > b)
    p->fn(p->arg, b, e, part);
}

static void *fr__worker_main(void *argp) {
  struct fr_cpu_worker *w = argp;
  struct fr_cpu_pool *p = w->pool;
  unsigned long seen = 0;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (p->gen == seen && !p->quit)
      pthread_cond_wait(&p->wake, &p->mu);
    if (p->quit)
      break;
    seen = p->gen;
    pthread_mutex_unlock(&p->mu);
    fr__run_part(p, w->index);
    pthread_mutex_lock(&p->mu);
    if (--p->pending == 0)
      pthread_cond_signal(&p->done);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

struct fr_cpu_pool *fr_cpu_pool_new(int threads) {
  if (threads < 1)
    threads = 1;
  struct fr_cpu_pool *p = fr_calloc(1, sizeof *p);
  if (!p)
    return NULL;
  p->workers = threads > 1 ? fr_calloc((size_t)threads - 1, sizeof *p->workers) : NULL;
  if (threads > 1 && !p->workers) {
    fr_free(p);
    return NULL;
  }
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->wake, NULL);
  pthread_cond_init(&p->done, NULL);
  p->threads = 1;
  for (int i = 1; i < threads; i++) {
    struct fr_cpu_worker *w = &p->workers[i - 1];
    w->pool = p;
    w->index = i;
    if (pthread_create(&w->tid, NULL, fr__worker_main, w) != 0)
      break; /* run with the workers we have */
    p->threads++;
  }
  return p;
}

void fr_cpu_pool_free(struct fr_cpu_pool *p) {
  if (!p)
    return;
  pthread_mutex_lock(&p->mu);
  p->quit = true;
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->mu);
  for (int i = 1; i < p->threads; i++)
    pthread_join(p->workers[i - 1].tid, NULL);
  pthread_cond_destroy(&p->done);
  pthread_cond_destroy(&p->wake);
  pthread_mutex_destroy(&p->mu);
  fr_free(p->workers);
  fr_free(p);
}

int fr_cpu_pool_threads(const struct fr_cpu_pool *p) {
  return p->threads;
}

void fr_cpu_parallel(struct fr_cpu_pool *p, int64_t n, int64_t min_chunk, fr_cpu_task_fn fn, void *arg) {
  if (n <= 0)
    return;
  if (min_chunk < 1)
    min_chunk = 1;
  int64_t parts = n / min_chunk;
  if (parts > p->threads)
    parts = p->threads;
  if (parts <= 1) {
    fn(arg, 0, n, 0);
    return;
  }
  pthread_mutex_lock(&p->mu);
  p->fn = fn;
  p->arg = arg;
  p->n = n;
  p->parts = (int)parts;
  p->pending = p->threads - 1;
  p->gen++;
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->mu);
  fr__run_part(p, 0);
  pthread_mutex_lock(&p->mu);
  while (p->pending > 0)
    pthread_cond_wait(&p->done, &p->mu);
  pthread_mutex_unlock(&p->mu);
}

/* OpenBLAS's pthreads build keeps each of its worker threads spinning (sched_yield in a loop) for 2^28
 * cycles, about 0.1 s, after every threaded call before it sleeps. Between two GEMMs of a model the pool
 * runs the norms, activations and im2col on every core, so that spinner is one thread too many: measured
 * on the 2-core development machine, 11-18 ms of CPU burnt in a 50 ms pause after one sgemm, and 14% of
 * all samples of a UNet step in sched_yield (BENCHMARKS.md). OPENBLAS_THREAD_TIMEOUT=4 (2^4 cycles, its
 * minimum) makes the workers sleep as soon as a GEMM is done, and a GEMM wakes them again (a condition
 * variable: microseconds against the milliseconds of a model's GEMM). The variable is read when OpenBLAS
 * loads, before main, so it is set here and OpenBLAS's thread server is restarted to read it: both through
 * functions it exports (openblas_read_env, blas_thread_shutdown_), looked up at run time so another BLAS
 * (or an OpenMP OpenBLAS, parallel != 1) is left alone. A timeout the user set is kept. Once per process,
 * from the first CPU context, before this process has any GEMM in flight. */
static void fr__blas_quiet_once(void) {
  if (getenv("OPENBLAS_THREAD_TIMEOUT") || openblas_get_parallel() != 1)
    return;
  void (*read_env)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "openblas_read_env");
  int (*shutdown)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "blas_thread_shutdown_");
  if (!read_env || !shutdown)
    return;
  setenv("OPENBLAS_THREAD_TIMEOUT", "4", 0);
  read_env();
  shutdown(); /* the next threaded call starts the workers again, with the new timeout */
}
static pthread_once_t fr__blas_once = PTHREAD_ONCE_INIT;

void fr_cpu_blas_threads(int threads) {
  pthread_once(&fr__blas_once, fr__blas_quiet_once);
  fr_cpu_blas_set_threads(threads); /* under the GEMM lock (gemm.c) */
}
