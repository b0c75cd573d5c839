/* One full-size SD1.5 UNet step on the GPU: batch 2 (classifier-free guidance), 64x64 latent (512x512
 * images), 77-token context, fp16, random weights. Not a test (ctest does not run it): a program that
 * prints numbers, run last by tests/gpu/run_gpu_checks.sh.
 *
 *   bench_unet_cuda [--device cuda|cpu] [--dtype f16|bf16|f32] [--runs N] [--warmup N] [--batch B]
 *                   [--latent S] [--ch C] [--profile N]
 *
 * Weights: the key list of the real v1-5-pruned-emaonly UNet (nodes/models/synth.h, built from the
 * architecture table, not typed in), filled with uniform random values of std 0.02 (norm gains 1, shifts
 * 0; each random tensor a slice of one 32M-value random pool) as F16 host tensors, serialised into one
 * in-memory safetensors blob (core/safetensors.h) and loaded through the normal loader (fr_unet_load), so no
 * checkpoint file is written and the timed code is exactly what a real checkpoint runs. Random weights take
 * the same time as real ones.
 *
 * Timing: `warmup` untimed forwards (cuBLASLt heuristics, the pool's first allocations), then `runs`
 * forwards, each timed on the host clock from the call to fr_unet_forward until fr_ctx_sync returns (all
 * queued kernels done), so host launch overhead is included, as it is in a real sampler step. Prints
 * the median and min in ms, the analytic FLOPs (fr_synth_unet_flops, 2 x MACs of convs, linears and
 * attention matmuls) and the achieved TFLOP/s, and the device memory the context held at its peak
 * (weights + activations + the cuBLASLt workspace; fr_ctx_mem_stats), next to PyTorch's figures from
 * DESIGN.md. --ch shrinks model_channels for a smoke test on a machine without a GPU.
 *
 * --profile N (cuda): cudaProfilerStart before the first timed forward and cudaProfilerStop after the N-th,
 * so `ncu --profile-from-start off` (run_gpu_checks.sh's per-kernel summary) sees exactly N UNet steps and
 * none of the loading and warm-up kernels. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/safetensors.h"
#include "kernels/ops.h"
#include "nodes/models/synth.h"
#include "nodes/models/unet.h"

#ifdef FLOWRUN_HAVE_CUDA
/* cuda_profiler_api.h's two functions (cudaError_t is an enum returned as an int), declared here so that
 * the C compile needs no CUDA include path; the program links libcudart through the CUDA backend. */
int cudaProfilerStart(void);
int cudaProfilerStop(void);
#endif

static double fr__now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int fr__cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* xorshift64*: the weights only have to be finite and small */
static uint64_t fr__rng(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1DULL;
}
static float fr__uniform(uint64_t *s) { /* [-1, 1) */
  return (float)(fr__rng(s) >> 40) * (1.0f / 8388608.0f) - 1.0f;
}

/* Random F16 values, uniform with std 0.02; every random weight is a view of a slice of it (at a random
 * offset): drawing 860M values one by one took half a minute on a loaded 2-core machine. 32M values: the
 * largest SD1.5 UNet weight (an up-block 3x3 conv, 1280 x 2560 x 9 = 29.5M) fits. */
#define FR__POOL_N ((int64_t)1 << 25)
static uint16_t *fr__pool;

/* A host tensor for one key of the list: F16 (or a fixed-dtype F32 buffer) with the list's
 * initialisation. */
static struct fr_tensor *fr__make_weight(const struct fr_synth_tensor *st, uint64_t *rng) {
  enum fr_dtype dt = st->fixed_dtype ? st->dtype : FR_F16;
  if (dt != FR_F16 && dt != FR_F32)
    return NULL; /* no integer buffers in a UNet */
  int64_t n = 1;
  for (int i = 0; i < st->ndim; i++)
    n *= st->shape[i];
  if (dt == FR_F16 && st->init == FR_SYNTH_RANDOM && n <= FR__POOL_N) {
    int64_t off = (int64_t)(fr__rng(rng) % (uint64_t)(FR__POOL_N - n + 1));
    return fr_tensor_view(FR_F16, st->ndim, st->shape, fr__pool + off);
  }
  struct fr_tensor *t = fr_tensor_new(dt, st->ndim, st->shape);
  if (!t)
    return NULL;
  const float amp = 0.02f * 1.7320508f; /* uniform on [-a, a] has std a / sqrt(3) = 0.02 */
  for (int64_t i = 0; i < n; i++) {
    float v = st->init == FR_SYNTH_ONES    ? 1.0f
              : st->init == FR_SYNTH_ZEROS ? 0.0f
              : st->init == FR_SYNTH_CONST ? (float)st->value
                                           : fr__uniform(rng) * amp;
    if (dt == FR_F16)
      ((uint16_t *)t->data)[i] = fr_f32_to_f16(v);
    else
      ((float *)t->data)[i] = v;
  }
  return t;
}

/* A host F32 tensor of the given shape with values uniform in [-a, a]. */
static struct fr_tensor *fr__random_input(int ndim, const int64_t *shape, float a, uint64_t *rng) {
  struct fr_tensor *t = fr_tensor_new(FR_F32, ndim, shape);
  if (t)
    for (int64_t i = 0; i < fr_tensor_numel(t); i++)
      ((float *)t->data)[i] = fr__uniform(rng) * a;
  return t;
}

static int fr__usage(void) {
  fprintf(stderr, "usage: bench_unet_cuda [--device cuda|cpu] [--dtype f16|bf16|f32] [--runs N] [--warmup N] "
                  "[--batch B] [--latent S] [--ch C] [--profile N]\n");
  return 2;
}

int main(int argc, char **argv) {
  const char *device = "cuda", *dtname = "f16";
  int runs = 10, warmup = 2, batch = 2, latent = 64, ch = 320, profile = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v)
      return fr__usage();
    if (strcmp(a, "--device") == 0)
      device = v;
    else if (strcmp(a, "--dtype") == 0)
      dtname = v;
    else if (strcmp(a, "--runs") == 0)
      runs = atoi(v);
    else if (strcmp(a, "--warmup") == 0)
      warmup = atoi(v);
    else if (strcmp(a, "--batch") == 0)
      batch = atoi(v);
    else if (strcmp(a, "--latent") == 0)
      latent = atoi(v);
    else if (strcmp(a, "--ch") == 0)
      ch = atoi(v);
    else if (strcmp(a, "--profile") == 0)
      profile = atoi(v);
    else
      return fr__usage();
    i++;
  }
  enum fr_dtype dtype = strcmp(dtname, "f32") == 0    ? FR_F32
                        : strcmp(dtname, "f16") == 0  ? FR_F16
                        : strcmp(dtname, "bf16") == 0 ? FR_BF16
                                                      : FR_DTYPE_COUNT;
  if (dtype == FR_DTYPE_COUNT || runs < 1 || runs > 1000 || warmup < 0 || batch < 1 || batch > 64 ||
      latent < 8 || latent % 8 || ch < 32 || ch % 32 || profile < 0 || profile > runs)
    return fr__usage();

  struct fr_err err = {{0}};
  struct fr_synth_arch arch;
  if (fr_synth_arch("sd15", &arch, &err)) {
    fprintf(stderr, "bench: %s\n", err.msg);
    return 1;
  }
  arch.has_vae = false; /* the UNet's keys only */
  arch.n_clip = 0;
  arch.ldm_extras = false;
  arch.unet.ch = ch;
  struct fr_synth_list *list = NULL;
  if (fr_synth_list_build(&arch, &list, &err)) {
    fprintf(stderr, "bench: %s\n", err.msg);
    return 1;
  }
  struct fr_ctx *c = NULL;
  if (fr_ctx_new(&(struct fr_ctx_opts){.device = device, .dtype = dtype}, &c, &err)) {
    printf("bench: skipped: %s\n", err.msg);
    fr_synth_list_free(list);
    return 77;
  }

  /* 1. random weights -> one in-memory safetensors blob */
  double t0 = fr__now_ms();
  int rc = 1;
  uint64_t rng = 0x5D15u;
  struct fr_st_item *items = calloc((size_t)list->n, sizeof *items);
  struct fr_tensor **host = calloc((size_t)list->n, sizeof *host);
  struct fr_buf blob = {0};
  struct fr_safetensors *st = NULL;
  struct fr_unet *u = NULL;
  struct fr_tensor *x = NULL, *t = NULL, *ctx = NULL;
  double *ms = calloc((size_t)runs, sizeof *ms);
  fr__pool = malloc((size_t)FR__POOL_N * 2);
  if (!items || !host || !ms || !fr__pool)
    goto done;
  for (int64_t i = 0; i < FR__POOL_N; i++)
    fr__pool[i] = fr_f32_to_f16(fr__uniform(&rng) * 0.02f * 1.7320508f);
  for (int i = 0; i < list->n; i++) {
    host[i] = fr__make_weight(&list->t[i], &rng);
    if (!host[i]) {
      fprintf(stderr, "bench: cannot make %s\n", list->t[i].name);
      goto done;
    }
    items[i] = (struct fr_st_item){.name = list->t[i].name, .t = host[i]};
  }
  if (fr_st_serialize(items, list->n, NULL, NULL, 0, &blob, &err) ||
      fr_st_parse(blob.data, blob.len, "<random sd15 unet>", &st, &err)) {
    fprintf(stderr, "bench: %s\n", err.msg);
    goto done;
  }
  for (int i = 0; i < list->n; i++) { /* the blob has its own copy */
    fr_tensor_free(host[i]);
    host[i] = NULL;
  }
  printf("weights: %d tensors, %.1f M parameters, %.2f GiB as F16 (random, std 0.02), made in %.1f s\n",
         list->n, (double)fr_synth_list_params(list) * 1e-6, (double)blob.len / (1 << 30),
         (fr__now_ms() - t0) * 1e-3);

  /* 2. load through the normal loader */
  struct fr_ctx_mem mem0 = {0}, mem_w = {0}, mem = {0};
  bool have_mem = fr_ctx_mem_stats(c, false, &mem0, NULL) == FR_OK;
  t0 = fr__now_ms();
  struct fr_checkpoint ck = {.layout = FR_LAYOUT_SINGLE, .path = "<random sd15 unet>", .file = st};
  if (fr_unet_load(c, &ck, &u, &err) || fr_ctx_sync(c, &err)) {
    fprintf(stderr, "bench: load: %s\n", err.msg);
    goto done;
  }
  fr_st_close(st); /* the weights are context tensors now */
  st = NULL;
  fr_buf_free(&blob);
  if (have_mem)
    fr_ctx_mem_stats(c, true, &mem_w, NULL); /* peak from here: the forwards */
  printf("context: %s %s; UNet loaded in %.2f s: model_channels %d, levels %d, context %d, %d heads%s\n",
         fr_ctx_device_name(c), dtname, (fr__now_ms() - t0) * 1e-3, u->cfg.model_channels, u->cfg.levels,
         u->cfg.context_dim, fr_unet_heads(&u->cfg, 0),
         ch == 320 ? " (full size)" : " (SHRUNK: not full size)");

  /* 3. inputs: latent [B, 4, S, S] ~ N(0,1)-sized, timestep 500, context [B, 77, 768] */
  struct fr_tensor *hx = fr__random_input(4, (const int64_t[]){batch, 4, latent, latent}, 1.7f, &rng);
  struct fr_tensor *hc = fr__random_input(3, (const int64_t[]){batch, 77, arch.unet.ctx_dim}, 1.7f, &rng);
  struct fr_tensor *ht = fr_tensor_new(FR_F32, 1, (const int64_t[]){batch});
  if (ht)
    for (int i = 0; i < batch; i++)
      ((float *)ht->data)[i] = 500.0f;
  x = hx ? fr_ctx_upload(c, hx) : NULL;
  ctx = hc ? fr_ctx_upload(c, hc) : NULL;
  t = ht ? fr_ctx_upload(c, ht) : NULL;
  fr_tensor_free(hx);
  fr_tensor_free(hc);
  fr_tensor_free(ht);
  if (!x || !ctx || !t) {
    fr_ctx_status(c, &err);
    fprintf(stderr, "bench: inputs: %s\n", err.msg);
    goto done;
  }
  struct fr_unet_cond cond = {.context = ctx};

  /* 4. warm-up, then timed forwards */
#ifdef FLOWRUN_HAVE_CUDA
  const bool profiling = profile > 0 && strcmp(device, "cuda") == 0;
#else
  (void)profile;
#endif
  for (int r = -warmup; r < runs; r++) {
#ifdef FLOWRUN_HAVE_CUDA
    if (profiling && r == 0)
      cudaProfilerStart();
#endif
    double s = fr__now_ms();
    struct fr_tensor *eps = NULL;
    if (fr_unet_forward(c, u, x, t, &cond, NULL, &eps, &err) || fr_ctx_sync(c, &err)) {
      fprintf(stderr, "bench: forward: %s\n", err.msg);
      fr_tensor_free(eps);
      goto done;
    }
    double e = fr__now_ms() - s;
#ifdef FLOWRUN_HAVE_CUDA
    if (profiling && r == profile - 1) {
      cudaProfilerStop();
      printf("profiled: timed forward%s 1 to %d (cudaProfilerStart/Stop)\n", profile > 1 ? "s" : "", profile);
    }
#endif
    if (r == runs - 1) { /* the result must be finite (fp16 overflow would make the timing meaningless) */
      struct fr_tensor *h = fr_ctx_download(c, eps);
      double amax = 0;
      bool finite = h != NULL;
      for (int64_t i = 0; h && i < fr_tensor_numel(h); i++) {
        float v = ((float *)h->data)[i];
        finite = finite && v == v && v - v == 0.0f;
        amax = v > amax ? v : (-v > amax ? -v : amax);
      }
      printf("output [%d, 4, %d, %d]: %s, max |eps| %.3g\n", batch, latent, latent,
             finite ? "finite" : "NOT FINITE", amax);
      fr_tensor_free(h);
      if (!finite) {
        fr_tensor_free(eps);
        goto done;
      }
    }
    fr_tensor_free(eps);
    if (r < 0)
      printf("warm-up %d: %.2f ms\n", r + warmup + 1, e);
    else
      ms[r] = e;
  }
  if (have_mem)
    fr_ctx_mem_stats(c, false, &mem, NULL);
  qsort(ms, (size_t)runs, sizeof *ms, fr__cmp_double);
  double med = runs % 2 ? ms[runs / 2] : 0.5 * (ms[runs / 2 - 1] + ms[runs / 2]);
  double flop = fr_synth_unet_flops(&arch.unet, latent, latent, 77) * batch;
  printf(
      "\nSD1.5 UNet step, batch %d, latent %dx%d, %s on %s: median %.2f ms, min %.2f ms, max %.2f ms over %d "
      "runs\n",
      batch, latent, latent, dtname, device, med, ms[0], ms[runs - 1], runs);
  printf("FLOPs %.3f T per step (analytic; the issue's figure: 0.80 T per batch-1 forward at 64x64) -> "
         "%.1f TFLOP/s achieved\n",
         flop * 1e-12, flop / (med * 1e-3) * 1e-12);
  if (have_mem)
    printf("device memory: peak %.2f GiB = weights %.2f GiB + fixed buffers %.0f MiB + activations at their "
           "peak %.2f GiB\n",
           (double)mem.peak / (1 << 30), (double)(mem_w.in_use - mem0.in_use) / (1 << 30),
           (double)mem0.in_use / (1 << 20), (double)(mem.peak - mem_w.in_use) / (1 << 30));
  else
    printf("device memory: not counted on %s\n", device);
  if (ch == 320 && latent == 64 && batch == 2)
    printf(
        "reference (DESIGN.md, PyTorch 2.11 eager, diffusers fp16 SDPA, H200): 25.6 ms, peak 1.8 GiB; issue "
        "5's target: <= 12 ms\n");
  rc = 0;
done:
  if (rc && c && fr_ctx_failed(c)) {
    fr_ctx_status(c, &err);
    fprintf(stderr, "bench: context error: %s\n", err.msg);
  }
  fr_tensor_free(x);
  fr_tensor_free(t);
  fr_tensor_free(ctx);
  fr_unet_free(u);
  fr_st_close(st);
  fr_buf_free(&blob);
  if (host)
    for (int i = 0; i < list->n; i++)
      fr_tensor_free(host[i]);
  free(host);
  free(items);
  free(ms);
  free(fr__pool);
  fr_ctx_free(c);
  fr_synth_list_free(list);
  return rc;
}
