/* The pipeline's model cache and compute dtypes: which dtype each component computes in for a run's
 * --dtype; weights stay resident across runs of one engine (what `flowrun serve` relies on: the second
 * run opens no checkpoint) and are loaded again by a new engine; a dtype the device does not have is a
 * clean node error naming both, not a crash. Loads are counted from the model cache's info events
 * ("loading <what> from <file>"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/flowrun.h"
#include "nodes/pipeline/pipeline.h"
#include "nodes/registry.h"
#include "tests/test.h"

static const char *tmp;

static void test_comp_dtypes(void) {
  static const struct {
    const char *run, *type, *want;
  } cases[] = {
      {"f32", FR_T_MODEL, "f32"},   {"f32", FR_T_VAE, "f32"},         {"f16", FR_T_MODEL, "f16"},
      {"f16", FR_T_CLIP, "f16"},    {"f16", FR_T_CONTROL_NET, "f16"}, {"f16", FR_T_VAE, "bf16"},
      {"bf16", FR_T_MODEL, "bf16"}, {"bf16", FR_T_VAE, "bf16"},       {NULL, FR_T_VAE, "f32"},
      {"", FR_T_MODEL, "f32"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *got = fr_pipe_comp_dtype(cases[i].run, cases[i].type);
    CHECKF(strcmp(got, cases[i].want) == 0, "run %s, %s: %s (want %s)", cases[i].run ? cases[i].run : "NULL",
           cases[i].type, got, cases[i].want);
  }
}

static int warnings;
static int loads_seen;       /* info events "loading <what> from <file>" of the current run */
static char loads_what[256]; /* their <what>s, space-separated */
static void on_event(void *user, const struct fr_event *ev) {
  (void)user;
  if (ev->kind == FR_EV_WARNING)
    warnings++;
  if (ev->kind == FR_EV_INFO && ev->message && strncmp(ev->message, "loading ", 8) == 0) {
    loads_seen++;
    char w[32] = "";
    sscanf(ev->message + 8, "%31s", w);
    size_t len = strlen(loads_what);
    snprintf(loads_what + len, sizeof loads_what - len, "%s%s", len ? " " : "", w);
  }
}

/* Runs g on e; returns the status, the number of "loading <what>" info events in *loads and their
 * <what>s in what. */
static enum fr_status run_counting(struct fr_engine *e, const struct fr_graph *g, int *loads, char *what,
                                   size_t nwhat, struct fr_err *err) {
  loads_seen = 0;
  loads_what[0] = 0;
  struct fr_run_summary sum;
  enum fr_status rc = fr_engine_run(e, g, &sum, err);
  *loads = loads_seen;
  snprintf(what, nwhat, "%s", loads_what);
  return rc;
}

static const char *const graph_yaml =
    "flowrun: 1\n"
    "params:\n"
    "  seed: {type: INT, default: 1}\n"
    "nodes:\n"
    "  ckpt: {type: CheckpointLoader, inputs: {ckpt_name: sd15-tiny.safetensors}}\n"
    "  pos: {type: TextEncode, inputs: {clip: ckpt.clip, text: a cat}}\n"
    "  empty: {type: EmptyLatent, inputs: {width: 64, height: 64}}\n"
    "  s: {type: Sampler, inputs: {model: ckpt.model, positive: pos, negative: pos, latent: empty,\n"
    "                              seed: $seed, steps: 1, cfg: 1}}\n"
    "  d: {type: VAEDecode, inputs: {samples: s, vae: ckpt.vae}}\n"
    "  save: {type: SaveImageData, inputs: {images: d, filename: image.safetensors}}\n";

static struct fr_engine *engine(const char *models, const char *dtype, struct fr_err *err) {
  const char *dirs[1] = {models};
  struct fr_engine_opts o = {.registry = fr_builtin_registry(),
                             .no_cache = true,
                             .model_dirs = dirs,
                             .n_model_dirs = 1,
                             .output_dir = tmp,
                             .dtype = dtype,
                             .threads = 2,
                             .on_event = on_event};
  struct fr_engine *e = NULL;
  CHECK_OK(fr_engine_new(&o, &e, err), err);
  return e;
}

static void test_resident(const char *fx) {
  char models[4200];
  snprintf(models, sizeof models, "%s/models", fx);
  struct fr_err err = {{0}};
  char what[256];
  int loads = -1;
  for (int pass = 0; pass < 2; pass++) { /* pass 1: a new engine loads everything again */
    struct fr_engine *e = engine(models, pass ? "f32" : NULL, &err);
    if (!e)
      return;
    struct fr_graph *g = NULL;
    struct fr_override ov[1] = {{"seed", "1"}};
    CHECK_OK(fr_engine_load_string(e, graph_yaml, strlen(graph_yaml), "resident.yaml", tmp, ov, 1, &g, &err),
             &err);
    if (g) {
      CHECK_OK(run_counting(e, g, &loads, what, sizeof what, &err), &err);
      printf("engine %d, run 1: %d loads (%s)\n", pass, loads, what);
      CHECKF(loads == 3 && strstr(what, "MODEL") && strstr(what, "CLIP") && strstr(what, "VAE"),
             "first run of an engine: %d loads (%s), want MODEL, CLIP and VAE", loads, what);
      fr_graph_free(g);
    }
    /* a changed seed: the sampler and decoder run again (no cache), with the weights already there */
    ov[0].value = "2";
    g = NULL;
    CHECK_OK(fr_engine_load_string(e, graph_yaml, strlen(graph_yaml), "resident.yaml", tmp, ov, 1, &g, &err),
             &err);
    if (g) {
      CHECK_OK(run_counting(e, g, &loads, what, sizeof what, &err), &err);
      printf("engine %d, run 2: %d loads (%s)\n", pass, loads, what);
      CHECKF(loads == 0, "second run in the same engine reloaded: %s", what);
      fr_graph_free(g);
    }
    fr_engine_free(e);
  }

  /* f16 on the cpu through the C API (the CLI refuses it up front): the first model node fails cleanly */
  struct fr_engine *e = engine(models, "f16", &err);
  struct fr_graph *g = NULL;
  if (e)
    CHECK_OK(
        fr_engine_load_string(e, graph_yaml, strlen(graph_yaml), "resident.yaml", tmp, NULL, 0, &g, &err),
        &err);
  if (g) {
    enum fr_status rc = run_counting(e, g, &loads, what, sizeof what, &err);
    CHECKF(rc == FR_E_UNSUPPORTED && strstr(err.msg, "device cpu") && strstr(err.msg, "F16"),
           "cpu f16: status %d, message '%s'", rc, err.msg);
    CHECKF(loads == 0, "cpu f16: %d checkpoints opened before the context failed", loads);
    fr_graph_free(g);
  }
  fr_engine_free(e);
}

int main(void) {
  tmp = fr_test_tmpdir("test_pipe_models");
  test_comp_dtypes();
  const char *fx = fr_test_fixtures();
  if (fx)
    test_resident(fx);
  return fr_test_done();
}
