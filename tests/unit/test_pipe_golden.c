/* Pipeline goldens: diffusers' SD1.5 (Euler, DDIM, seeded), ControlNet, SDXL base and refiner pipelines on
 * the tiny fixture models, reproduced by running `flowrun` (the CLI, $FLOWRUN) on YAML graphs and
 * comparing the saved final latents (and the decoded image where the golden has one).
 *
 * Tolerance 1e-3 of max|golden| (the fixtures' bound for multi-step pipelines): every step is an fp32 UNet
 * evaluation whose ~1e-6 relative differences from PyTorch (summation order in GEMMs and convolutions)
 * are amplified by CFG (x7.5) and carried through 5-6 steps; a semantic mistake (wrong noise scaling,
 * padding token, time ids, VP/VE space) shows as 1e-2 or more.
 *
 * FR_TEST_DEVICE / FR_TEST_DTYPE (tests/test.h), when set, are passed to flowrun as --device / --dtype, so
 * on a GPU machine the tiny pipelines are compared with the same (CPU fp32) goldens; unset, nothing
 * changes. Bounds: f32 on any device 1e-3 as above (cuda f32 has no TF32 and accumulates in fp32);
 * f16 5e-2 and bf16 1e-1, for the latents and the decoded images alike. Reason: one UNet evaluation on
 * cuda measured 1.8e-3 (f16) and 2.0e-2 (bf16) against its golden (docs/cuda.md); CFG 7.5 multiplies
 * the error of the guided difference, and 5-6 steps carry it (partly cancelling: each step pulls toward
 * the model's x0 estimate), a ~10x (f16) and ~5x (bf16) growth; the VAE then decodes in bf16 for both
 * (its golden bound 3e-2). These two bounds are provisional until measured on the GPU; the latents' own
 * scale is ~1, so a semantic error (>= 0.3 on these latents) still fails. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/safetensors.h"
#include "kernels/ops.h"
#include "tests/test.h"

#define TOL32 1e-3

static double TOL = TOL32;           /* the bound for FR_TEST_DTYPE (see above) */
static const char *dev_arg, *dt_arg; /* --device / --dtype for flowrun, NULL: not passed */

struct pcase {
  const char *name;   /* golden file stem */
  const char *graph;  /* relative to the source root */
  const char *latent; /* file SaveLatent writes */
  const char *sets[12];
  bool image; /* compare image.safetensors with the golden's decoded image */
};

static const struct pcase cases[] = {
    {"sd15_pipe_euler",
     "tests/pipe/sd15.yaml",
     "latent.safetensors",
     {"sampler=euler", "scheduler=linspace"},
     true},
    {"sd15_pipe_ddim",
     "tests/pipe/sd15.yaml",
     "latent.safetensors",
     {"sampler=ddim", "scheduler=leading"},
     true},
    /* seed only: the shared graph as users run it */
    {"sd15_pipe_seeded",
     "graphs/sd15-txt2img.yaml",
     "latent.safetensors",
     {"ckpt=sd15-tiny.safetensors", "width=128", "height=128", "steps=5", "cfg=6", "seed=1234", "negative=",
      "prompt=a photo of a cat", "sampler=euler", "scheduler=linspace", "latent_file=latent.safetensors"},
     false},
    {"controlnet_pipe", "tests/pipe/controlnet.yaml", "latent.safetensors", {NULL}, false},
    {"sdxl_pipe", "tests/pipe/sdxl_base.yaml", "latent.safetensors", {NULL}, false},
    {"sdxl_refiner_pipe", "tests/pipe/sdxl_refiner.yaml", "latent.safetensors", {NULL}, false},
};

static const float *get(const struct fr_safetensors *st, const char *name, int64_t *n) {
  const struct fr_st_entry *e = st ? fr_st_find(st, name) : NULL;
  if (!e || e->dtype != FR_F32)
    return NULL;
  *n = (int64_t)(e->nbytes / 4);
  return e->data;
}

static void run_case(const struct pcase *pc, const char *fx, const char *src) {
  char golden[4096], graph[4096], models[4096], gset[4200];
  snprintf(golden, sizeof golden, "%s/golden/%s.safetensors", fx, pc->name);
  snprintf(graph, sizeof graph, "%s/%s", src, pc->graph);
  snprintf(models, sizeof models, "%s/models", fx);
  snprintf(gset, sizeof gset, "%s", golden);
  const char *out = fr_test_tmpdir(pc->name);
  /* `flowrun GRAPH --no-cache --models DIR --output OUT --quiet --set k=v ...`, as a user would run it */
  const char *flowrun = getenv("FLOWRUN");
  CHECKF(flowrun && *flowrun, "FLOWRUN (the CLI under test) is not set");
  if (!flowrun || !*flowrun)
    return;
  char *argv[48];
  static char sets[16][4400];
  int a = 0, n = 0;
  argv[a++] = (char *)flowrun;
  argv[a++] = graph;
  argv[a++] = "--no-cache";
  argv[a++] = "--quiet";
  argv[a++] = "--models";
  argv[a++] = models;
  argv[a++] = "--output";
  argv[a++] = (char *)out;
  if (dev_arg) {
    argv[a++] = "--device";
    argv[a++] = (char *)dev_arg;
  }
  if (dt_arg) {
    argv[a++] = "--dtype";
    argv[a++] = (char *)dt_arg;
  }
  for (int i = 0; i < 12 && pc->sets[i]; i++) {
    snprintf(sets[n], sizeof sets[n], "%s", pc->sets[i]);
    argv[a++] = "--set";
    argv[a++] = sets[n++];
  }
  if (strcmp(pc->name, "sd15_pipe_seeded") != 0) {
    snprintf(sets[n], sizeof sets[n], "golden=%s", gset);
    argv[a++] = "--set";
    argv[a++] = sets[n++];
  }
  argv[a] = NULL;
  pid_t pid = fork();
  if (pid == 0) {
    execv(flowrun, argv);
    _exit(127);
  }
  int status = -1;
  if (pid > 0)
    waitpid(pid, &status, 0);
  CHECKF(pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: flowrun %s exited with status %d",
         pc->name, pc->graph, WIFEXITED(status) ? WEXITSTATUS(status) : -1);

  struct fr_err err = {{0}};
  struct fr_safetensors *gs = NULL, *ls = NULL, *is = NULL;
  char path[4200];
  CHECK_OK(fr_st_open(golden, &gs, &err), &err);
  snprintf(path, sizeof path, "%s/%s", out, pc->latent);
  CHECK_OK(fr_st_open(path, &ls, &err), &err);
  int64_t ng = 0, nl = 0;
  const float *gl = get(gs, "latents_final", &ng), *ll = get(ls, "latent", &nl);
  CHECKF(gl && ll && ng == nl, "%s: latents missing or of different sizes", pc->name);
  if (gl && ll && ng == nl) {
    double r = fr_test_rel_err(ll, gl, (long)nl);
    printf("%-18s final latent: max|diff|/max|golden| = %.3g (tolerance %g)\n", pc->name, r, TOL);
    CHECKF(r < TOL, "%s: latent error %g", pc->name, r);
  }
  if (pc->image) {
    snprintf(path, sizeof path, "%s/image.safetensors", out);
    CHECK_OK(fr_st_open(path, &is, &err), &err);
    int64_t ngi = 0, ni = 0;
    const float *gi = get(gs, "image", &ngi), *im = get(is, "image", &ni);
    CHECKF(gi && im && ngi == ni, "%s: image missing or of different sizes", pc->name);
    if (gi && im && ngi == ni) {
      /* golden: decode [1, 3, H, W] in [-1, 1]; ours: IMAGE [1, H, W, 3] = clamp((x + 1) / 2) */
      int64_t hw = ni / 3;
      static float ref[3 * 256 * 256];
      if (ni <= (int64_t)(sizeof ref / sizeof ref[0])) {
        for (int64_t p = 0; p < hw; p++)
          for (int c = 0; c < 3; c++) {
            float v = (gi[c * hw + p] + 1.0f) * 0.5f;
            ref[p * 3 + c] = v < 0 ? 0 : v > 1 ? 1 : v;
          }
        double r = fr_test_rel_err(im, ref, (long)ni);
        printf("%-18s decoded image: max|diff|/max|golden| = %.3g (tolerance %g)\n", pc->name, r, TOL);
        CHECKF(r < TOL, "%s: image error %g", pc->name, r);
      }
    }
  }
  fr_st_close(gs);
  fr_st_close(ls);
  fr_st_close(is);
}

int main(void) {
  const char *fx = fr_test_fixtures();
  if (!fx)
    return fr_test_done();
  const char *src = getenv("FR_SRC");
  if (!src)
    src = ".";
  const char *dev = getenv("FR_TEST_DEVICE"), *dt = getenv("FR_TEST_DTYPE");
  if ((dev && *dev) || (dt && *dt)) {
    /* the same checks and skips as the model goldens: a device not built in or absent skips */
    struct fr_ctx *c = fr_test_ctx_new();
    if (!c)
      return fr_test_done();
    fr_ctx_free(c);
    dev_arg = dev && *dev ? dev : NULL;
    dt_arg = dt && *dt ? dt : NULL;
    TOL = dt_arg && !strcmp(dt_arg, "f16") ? 5e-2 : dt_arg && !strcmp(dt_arg, "bf16") ? 1e-1 : TOL32;
    printf("flowrun --device %s --dtype %s: tolerance %g\n", dev_arg ? dev_arg : "cpu",
           dt_arg ? dt_arg : "(default)", TOL);
  }
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    run_case(&cases[i], fx, src);
  return fr_test_done();
}
