/* Out-of-memory recovery (core/node.h, docs/operations.md, "Out of memory") on the tiny SD1.5 pipeline:
 *  - one allocation failing once inside a node (fr_alloc_fail_once): the engine releases the cached models
 *    the node does not need, retries it, and the run's result is the same as a run that never failed; the
 *    pools are empty afterwards (the next run starts clean) and the counters say one recovery;
 *  - allocations failing for good: the retry fails too and the run fails with a message naming the node
 *    and what to reduce;
 *  - a real host-memory limit (setrlimit RLIMIT_AS, in a forked child): a VAE decode that does not fit
 *    while memory is held by a cache the engine can release, and does fit in tiles once it is released. */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/flowrun.h"
#include "core/safetensors.h"
#include "nodes/registry.h"
#include "tests/test.h"

#if defined(__SANITIZE_ADDRESS__)
#define FR_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FR_TEST_ASAN 1
#endif
#endif

static const char *tmp;

/* ---- events: arm a fault when a chosen node starts, collect warnings ---- */

static const char *arm_node; /* node id whose first start arms the fault */
static long arm_k;           /* the k-th allocation after that start fails */
static bool arm_persist;     /* ... and every later one (fr_alloc_fail_at) instead of only it */
static bool armed;
static int retry_warnings, tile_warnings;
static int load_events;           /* load_progress events of the checkpoint that covered all of it */
static uint64_t load_bytes_total; /* their bytes_total */
static char retry_msg[2048];

static void ballast_fill(void);
static bool fill_on_decode; /* the RLIMIT_AS child: when the decode starts, take every free byte */

static void on_event(void *user, const struct fr_event *ev) {
  (void)user;
  if (ev->kind == FR_EV_NODE_START && fill_on_decode && !strcmp(ev->node, "d")) {
    fill_on_decode = false;
    ballast_fill();
  }
  if (ev->kind == FR_EV_NODE_START && arm_node && !armed && !strcmp(ev->node, arm_node)) {
    armed = true;
    if (arm_persist)
      fr_alloc_fail_at(arm_k);
    else
      fr_alloc_fail_once(arm_k);
  }
  if (ev->kind == FR_EV_WARNING && ev->message && strstr(ev->message, "retrying once with low memory")) {
    retry_warnings++;
    snprintf(retry_msg, sizeof retry_msg, "%s", ev->message);
  }
  if (ev->kind == FR_EV_WARNING && ev->message && strstr(ev->message, "low memory: decoding in"))
    tile_warnings++;
  if (ev->kind == FR_EV_LOAD_PROGRESS && ev->path && strstr(ev->path, "sd15-tiny.safetensors") &&
      ev->bytes == ev->bytes_total) {
    load_events++;
    load_bytes_total = ev->bytes_total;
  }
  if (getenv("FR_TEST_VERBOSE") && (ev->kind == FR_EV_WARNING || ev->kind == FR_EV_INFO))
    printf("event: %s\n", ev->message);
}

static const char *const sd15_yaml =
    "flowrun: 1\n"
    "nodes:\n"
    "  ckpt: {type: CheckpointLoader, inputs: {ckpt_name: sd15-tiny.safetensors}}\n"
    "  pos: {type: TextEncode, inputs: {clip: ckpt.clip, text: a cat}}\n"
    "  empty: {type: EmptyLatent, inputs: {width: 64, height: 64}}\n"
    "  s: {type: Sampler, inputs: {model: ckpt.model, positive: pos, negative: pos, latent: empty,\n"
    "                              seed: 3, steps: 1, cfg: 2}}\n"
    "  d: {type: VAEDecode, inputs: {samples: s, vae: ckpt.vae}}\n"
    "  save: {type: SaveImageData, inputs: {images: d, filename: out.safetensors}}\n";

static struct fr_engine *engine(const char *models, int threads, struct fr_err *err) {
  return fr_test_engine(models, tmp, threads, on_event, NULL, err);
}

static enum fr_status run_yaml(struct fr_engine *e, const char *yaml, struct fr_err *err) {
  return fr_test_run_yaml(e, yaml, "oom.yaml", tmp, err);
}

/* ---- a fault once: recovered, same result, clean pools ---- */

static void test_fail_once(const char *models) {
  struct fr_err err = {{0}};
  struct fr_engine *e = engine(models, 2, &err);
  if (!e)
    return;
  arm_node = NULL;
  load_events = 0;
  CHECK_OK(run_yaml(e, sd15_yaml, &err), &err);
  /* the checkpoint's verifying read reported its progress: once done, all its data (file size minus the
   * 8-byte length and the header), by the node that opened it (the first to need a component) */
  char ck[4300];
  snprintf(ck, sizeof ck, "%s/sd15-tiny.safetensors", models);
  FILE *f = fopen(ck, "rb");
  unsigned char l8[8] = {0};
  uint64_t hlen = 0;
  long fsize = -1;
  if (f && fread(l8, 1, 8, f) == 8 && fseek(f, 0, SEEK_END) == 0)
    fsize = ftell(f);
  if (f)
    fclose(f);
  for (int i = 7; i >= 0; i--)
    hlen = hlen << 8 | l8[i];
  CHECKF(load_events == 1 && fsize > 0 && load_bytes_total == (uint64_t)fsize - 8 - hlen,
         "load progress: %d complete events, total %llu, want 1 of %lld", load_events,
         (unsigned long long)load_bytes_total, (long long)fsize - 8 - (long long)hlen);
  long n0 = 0;
  float *want = fr_test_read_saved(tmp, "out.safetensors", "image", &n0);
  struct fr_mem_report q;
  fr_engine_memory(e, &q);
  /* what the checks below rely on: a normal run keeps three models and some scratch */
  CHECKF(q.models == 3 && q.reserve_bytes > 0, "after a normal run: %d models, %llu reserve bytes", q.models,
         (unsigned long long)q.reserve_bytes);
  fr_engine_free(e);

  /* k = 1: the node's first allocation; larger k: deeper inside (loading the weights: 40 in the UNet's
   * tensor table, 2000 and 300 in weight conversions that leave the context's sticky error) */
  static const struct {
    const char *node;
    long k;
  } cases[] = {{"s", 40}, {"s", 2000}, {"d", 1}, {"d", 300}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    e = engine(models, 2, &err);
    if (!e)
      return;
    arm_node = cases[i].node;
    arm_k = cases[i].k;
    arm_persist = false;
    armed = false;
    retry_warnings = 0;
    enum fr_status rc = run_yaml(e, sd15_yaml, &err);
    fr_alloc_fail_once(0);
    arm_node = NULL;
    CHECKF(rc == FR_OK, "fault once in %s at allocation %ld: status %d: %s", cases[i].node, cases[i].k, rc,
           err.msg);
    struct fr_oom_stats st;
    fr_engine_oom_stats(e, &st);
    printf("fault once in %s at %ld: %d retry warning(s): %s\n", cases[i].node, cases[i].k, retry_warnings,
           retry_msg);
    CHECKF(retry_warnings == 1 && st.oom == 1 && st.retries == 1 && st.recovered == 1 && st.failed == 0,
           "fault in %s at %ld: %d warnings, stats oom %llu retries %llu recovered %llu failed %llu",
           cases[i].node, cases[i].k, retry_warnings, (unsigned long long)st.oom,
           (unsigned long long)st.retries, (unsigned long long)st.recovered, (unsigned long long)st.failed);
    long n1 = 0;
    float *got = rc == FR_OK ? fr_test_read_saved(tmp, "out.safetensors", "image", &n1) : NULL;
    /* the retried node computes exactly what it would have (same weights, same order, and at 64 px the
     * low-memory VAE decode is one tile, i.e. the whole decode): bit for bit the same image */
    if (got && want)
      CHECKF(n1 == n0 && memcmp(got, want, (size_t)n0 * sizeof(float)) == 0,
             "fault in %s at %ld: the image differs from the run without a fault", cases[i].node, cases[i].k);
    free(got);
    fr_engine_memory(e, &q);
    /* the decode ran out: CLIP and the UNet were released (only the VAE was needed); every pool and
     * scratch buffer was emptied at the end of the run, so the next run starts clean */
    if (!strcmp(cases[i].node, "d"))
      CHECKF(q.models == 1, "fault in the decode: %d models still loaded, want only the VAE", q.models);
    CHECKF(q.reserve_bytes == 0, "after a recovered run: %llu bytes left in pools/scratch",
           (unsigned long long)q.reserve_bytes);
    fr_engine_free(e);
  }
  free(want);
}

/* ---- a fault that persists: the run fails saying what to reduce ---- */

static void test_fail_persist(const char *models) {
  struct fr_err err = {{0}};
  struct fr_engine *e = engine(models, 2, &err);
  if (!e)
    return;
  arm_node = "d";
  arm_k = 5;
  arm_persist = true;
  armed = false;
  retry_warnings = 0;
  enum fr_status rc = run_yaml(e, sd15_yaml, &err);
  fr_alloc_fail_at(0);
  arm_node = NULL;
  printf("persistent fault: %s\n", err.msg);
  CHECKF(rc == FR_E_NOMEM, "persistent fault: status %d, want FR_E_NOMEM", rc);
  CHECKF(strstr(err.msg, "node d (VAEDecode)") && strstr(err.msg, "out of memory again") &&
             strstr(err.msg, "image size") && strstr(err.msg, "batch size") &&
             strstr(err.msg, "fewer models"),
         "persistent fault: message '%s'", err.msg);
  struct fr_oom_stats st;
  fr_engine_oom_stats(e, &st);
  CHECKF(retry_warnings == 1 && st.oom == 1 && st.retries == 1 && st.recovered == 0 && st.failed == 1,
         "persistent fault: %d warnings, recovered %llu failed %llu", retry_warnings,
         (unsigned long long)st.recovered, (unsigned long long)st.failed);
  /* the engine is fine afterwards: the same graph runs */
  CHECK_OK(run_yaml(e, sd15_yaml, &err), &err);
  fr_engine_free(e);
}

/* ---- a real host-memory limit, in a child ---- */

/* A cache that holds every byte the limit leaves (blocks chained through their first word), and gives it
 * back when the engine asks (FR_MEM_RELEASE), as the model cache does. */
static void *ballast;
static size_t ballast_n;

static void ballast_fill(void) {
  static const size_t sizes[] = {1 << 20, 64 << 10, 4 << 10, 256, 32};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
    for (void *b; (b = malloc(sizes[i]));) {
      *(void **)b = ballast;
      ballast = b;
      ballast_n += sizes[i];
    }
}

static void ballast_hook(void *user, struct fr_node_ctx *nc, enum fr_mem_mode mode,
                         struct fr_mem_report *rep) {
  (void)user;
  (void)nc;
  if (mode != FR_MEM_RELEASE || !ballast)
    return;
  while (ballast) {
    void *next = *(void **)ballast;
    free(ballast);
    ballast = next;
  }
  rep->models++;
  rep->model_bytes += ballast_n;
}

static size_t vm_size(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long pages = 0;
  if (!f)
    return 0;
  if (fscanf(f, "%lu", &pages) != 1)
    pages = 0;
  fclose(f);
  return (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
}

/* 48x48 latents -> 384x384 pixels: small enough to decode in a second, big enough that the decoder's
 * full-resolution activations dominate what the decode needs. */
static const char *const vae_yaml =
    "flowrun: 1\n"
    "nodes:\n"
    "  ckpt: {type: CheckpointLoader, inputs: {ckpt_name: sd15-tiny.safetensors}}\n"
    "  empty: {type: EmptyLatent, inputs: {width: 384, height: 384}}\n"
    "  d: {type: VAEDecode, inputs: {samples: empty, vae: ckpt.vae}}\n"
    "  save: {type: SaveImageData, inputs: {images: d, filename: vae.safetensors}}\n";

static int rlimit_child(const char *fx, const char *models) {
  /* large blocks always mmap'd, and unmapped when freed: address space freed is address space back */
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  mallopt(M_TRIM_THRESHOLD, 128 * 1024);
  /* the channels of the decoder's last (full-resolution) level, from the checkpoint itself */
  char path[4200];
  snprintf(path, sizeof path, "%s/models/sd15-tiny.safetensors", fx);
  struct fr_safetensors *st = NULL;
  struct fr_err err = {{0}};
  if (fr_st_open(path, &st, &err) != FR_OK) {
    fprintf(stderr, "child: %s\n", err.msg);
    return 1;
  }
  const struct fr_st_entry *co = fr_st_find(st, "first_stage_model.decoder.conv_out.weight");
  int64_t ch = co && co->ndim == 4 ? co->shape[1] : 0;
  fr_st_close(st);
  if (ch <= 0) {
    fprintf(stderr, "child: no decoder conv_out in %s\n", path);
    return 1;
  }
  struct fr_engine *e = engine(models, 1, &err);
  if (!e)
    return 1;
  /* unlimited: the VAE loads, threads and buffers are made, the decode runs whole */
  if (run_yaml(e, vae_yaml, &err) != FR_OK) {
    fprintf(stderr, "child: first run: %s\n", err.msg);
    return 1;
  }
  /* A: one full-resolution activation [1, ch, 384, 384] F32. A whole decode holds at least two at once (a
   * convolution's input and output), so it cannot fit in 1.5 A; in 32-latent tiles it needs (32/48)^2 of
   * that, in 16-latent tiles (the last fallback) 1/9, plus the blended image (3/ch of A): well inside. */
  size_t A = (size_t)ch * 384 * 384 * sizeof(float), margin = A + A / 2;
  malloc_trim(0);
  size_t base = vm_size();
  if (!base) {
    fprintf(stderr, "child: cannot measure the address space\n");
    return 1;
  }
  fr_engine_mem_hook(e, "test-ballast", ballast_hook, NULL, NULL);
  struct rlimit rl = {.rlim_cur = base + margin, .rlim_max = RLIM_INFINITY};
  printf("child: decoder channels %lld, activation %zu bytes, address space %zu, limit %zu (+%zu)\n",
         (long long)ch, A, base, (size_t)rl.rlim_cur, margin);
  fflush(stdout);
  if (setrlimit(RLIMIT_AS, &rl) != 0) {
    perror("child: setrlimit");
    return 1;
  }
  retry_warnings = tile_warnings = 0;
  fill_on_decode = true; /* when the decode starts, the ballast takes all that is left under the limit */
  enum fr_status rc = run_yaml(e, vae_yaml, &err);
  struct rlimit off = {.rlim_cur = RLIM_INFINITY, .rlim_max = RLIM_INFINITY};
  setrlimit(RLIMIT_AS, &off);
  struct fr_oom_stats s;
  fr_engine_oom_stats(e, &s);
  printf("child: limited run: status %d (%s); %d retry warning(s): %s; %d tile warning(s)\n", rc,
         rc ? err.msg : "ok", retry_warnings, retry_msg, tile_warnings);
  int bad = 0;
  if (rc != FR_OK || s.recovered != 1 || retry_warnings != 1 || tile_warnings != 1 || ballast) {
    fprintf(stderr, "child: FAILED: the limited run did not recover by releasing memory\n");
    bad = 1;
  }
  if (!strstr(retry_msg, "released 1 cached model")) {
    fprintf(stderr, "child: FAILED: the retry warning does not say what was released\n");
    bad = 1;
  }
  long n = 0;
  float *img = rc == FR_OK ? fr_test_read_saved(tmp, "vae.safetensors", "image", &n) : NULL;
  if (rc == FR_OK && n != 384L * 384 * 3) {
    fprintf(stderr, "child: FAILED: image of %ld values, want 384x384x3\n", n);
    bad = 1;
  }
  free(img);
  fr_engine_free(e);
  return bad;
}

static void test_rlimit(const char *fx, const char *models) {
#ifdef FR_TEST_ASAN
  (void)fx;
  (void)models;
  (void)rlimit_child;
  printf("skipped: the RLIMIT_AS case (ASan reserves terabytes of shadow address space)\n");
#else
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    int bad = rlimit_child(fx, models);
    fflush(stdout);
    _exit(bad);
  }
  int status = 0;
  CHECKF(pid > 0 && waitpid(pid, &status, 0) == pid, "fork/wait failed");
  CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the RLIMIT_AS child failed (status %d)", status);
#endif
}

int main(void) {
  tmp = fr_test_tmpdir("test_oom");
  const char *fx = fr_test_fixtures();
  if (!fx)
    return fr_test_done();
  char models[4200];
  snprintf(models, sizeof models, "%s/models", fx);
  test_rlimit(fx, models); /* first: fork before this process has threads */
  test_fail_once(models);
  test_fail_persist(models);
  return fr_test_done();
}
