/* Batches through the pipeline, on the tiny SD1.5 model (fixtures):
 *   - a batch-4 txt2img run (EmptyLatent batch 4, Sampler with CFG, VAEDecode) equals four batch-1 runs
 *     whose noise is the matching slice of the batch's noise (one torch.randn draw for the whole batch, as
 *     ComfyUI), for the latents and the decoded images;
 *   - LatentFromBatch keeps the batch index, so sampling the third latent alone gives it the third slice
 *     (ComfyUI's prepare_noise);
 *   - RepeatLatentBatch repeats samples and noise mask; ImageBatch and ImageFromBatch join and slice.
 * Tolerance: batch and single runs compute the same numbers, but the CPU GEMMs block differently for
 * different batch sizes, so sums round differently (even identical samples in one batch differ from a
 * single run by ~2e-5), and the tiny random-weight UNet amplifies rounding for some inputs: a 1e-7
 * relative change of one of this test's inputs moves its eps by 2e-3 (measured), i.e. a condition number
 * near 1e4. Hence 2e-3 of the values' scale; a wrong noise slice or a mixed-up sample is O(1). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/flowrun.h"
#include "core/safetensors.h"
#include "nodes/registry.h"
#include "nodes/sampling/torch_rng.h"
#include "tests/test.h"

static const char *tmp;

#define NSLOT 8
static struct fr_value *probes[NSLOT];

static enum fr_status probe_run(struct fr_node_ctx *nc) {
  int slot = (int)fr_in_int(nc, "slot");
  fr_value_unref(probes[slot]);
  const struct fr_value *v = fr_in_has(nc, "latent") || fr_in(nc, "latent") ? fr_in(nc, "latent") : NULL;
  if (!v)
    v = fr_in(nc, "image");
  probes[slot] = v ? fr_value_ref((struct fr_value *)v) : NULL;
  return FR_OK;
}
static const struct fr_input_spec probe_in[] = {
    {"latent", FR_T_LATENT, NULL, 0, -1, NULL, FR_IN_OPTIONAL, "captured"},
    {"image", FR_T_IMAGE, NULL, 0, -1, NULL, FR_IN_OPTIONAL, "captured"},
    {"slot", FR_T_INT, "0", 0, NSLOT - 1, NULL, 0, "where"},
};
static const struct fr_node_spec probe_spec = {
    "Probe",        1,        "test", "Captures a value for the test.", probe_in, FR_COUNT(probe_in), NULL, 0,
    FR_NODE_OUTPUT, probe_run};

static const struct fr_tensor *probe(int slot, const char *field) {
  return probes[slot] ? fr_value_get_tensor(probes[slot], field) : NULL;
}

static struct fr_engine *new_engine(const char *models, struct fr_registry *reg) {
  static const struct fr_node_spec *specs[256];
  const struct fr_registry *b = fr_builtin_registry();
  int n = 0;
  for (int i = 0; i < b->n; i++)
    specs[n++] = b->specs[i];
  specs[n++] = &probe_spec;
  reg->specs = specs;
  reg->n = n;
  const char *dirs[1] = {models};
  struct fr_engine_opts o = {.registry = reg,
                             .no_cache = true,
                             .model_dirs = dirs,
                             .n_model_dirs = 1,
                             .output_dir = tmp,
                             .threads = 2};
  struct fr_engine *e = NULL;
  struct fr_err err = {{0}};
  CHECK_OK(fr_engine_new(&o, &e, &err), &err);
  return e;
}

static enum fr_status run_yaml(struct fr_engine *e, const char *yaml) {
  struct fr_graph *g = NULL;
  struct fr_err err = {{0}};
  enum fr_status rc = fr_engine_load_string(e, yaml, strlen(yaml), "batch.yaml", tmp, NULL, 0, &g, &err);
  if (!rc) {
    struct fr_run_summary sum;
    rc = fr_engine_run(e, g, &sum, &err);
  }
  CHECKF(rc == FR_OK, "run: %s", err.msg);
  fr_graph_free(g);
  return rc;
}

#define PER 256 /* [4, 8, 8]: a 64x64 image's latent */
#define TOL 2e-3

static char head[2048];
static void set_head(const char *ckpt) {
  snprintf(head, sizeof head,
           "flowrun: 1\n"
           "nodes:\n"
           "  ckpt: {type: CheckpointLoader, inputs: {ckpt_name: %s}}\n"
           "  pos: {type: TextEncode, inputs: {clip: ckpt.clip, text: a cat}}\n"
           "  neg: {type: TextEncode, inputs: {clip: ckpt.clip, text: blurry}}\n",
           ckpt);
}

/* extra: more nodes (after the prompts); positive: the Sampler's positive input. */
static void test_batch_vs_single(struct fr_engine *e, const char *ckpt, const char *extra,
                                 const char *positive) {
  char yaml[4096];
  set_head(ckpt);
  size_t hl = strlen(head);
  snprintf(head + hl, sizeof head - hl, "%s", extra);
  printf("%s%s\n", ckpt, *extra ? " with a ControlNet" : "");
  snprintf(yaml, sizeof yaml,
           "%s"
           "  empty: {type: EmptyLatent, inputs: {width: 64, height: 64, batch: 4}}\n"
           "  s: {type: Sampler, inputs: {model: ckpt.model, positive: %s, negative: neg, latent: empty,\n"
           "                              seed: 5, steps: 2, cfg: 2}}\n"
           "  d: {type: VAEDecode, inputs: {samples: s, vae: ckpt.vae}}\n"
           "  third: {type: LatentFromBatch, inputs: {samples: empty, batch_index: 2}}\n"
           "  s3: {type: Sampler, inputs: {model: ckpt.model, positive: %s, negative: neg, latent: third,\n"
           "                               seed: 5, steps: 2, cfg: 2}}\n"
           "  p0: {type: Probe, inputs: {latent: s, slot: 0}}\n"
           "  p1: {type: Probe, inputs: {image: d, slot: 1}}\n"
           "  p2: {type: Probe, inputs: {latent: s3, slot: 2}}\n",
           head, positive, positive);
  if (run_yaml(e, yaml))
    return;
  const struct fr_tensor *bl = probe(0, "samples"), *bi = probe(1, "image"), *l3 = probe(2, "samples");
  CHECKF(bl && bl->shape[0] == 4 && fr_tensor_numel(bl) == 4 * PER, "batch latent");
  CHECKF(bi && bi->shape[0] == 4 && bi->shape[1] == 64 && bi->shape[3] == 3, "batch image");
  CHECKF(l3 && fr_tensor_numel(l3) == PER, "LatentFromBatch's latent");
  if (!bl || !bi || !l3 || fr_tensor_numel(bl) != 4 * PER || fr_tensor_numel(l3) != PER)
    return;
  struct fr_tensor *lat = fr_tensor_clone(bl), *img = fr_tensor_clone(bi);
  double e3 = fr_test_rel_err(l3->data, (const float *)lat->data + 2 * PER, PER);
  CHECKF(e3 < TOL, "LatentFromBatch index 2 sampled alone differs from the batch's third by %g", e3);
  /* the batch's noise: torch.randn([4, 4, 8, 8]) on the CPU generator seeded 5 */
  static float noise[4 * PER];
  struct fr_torch_gen g;
  fr_torch_gen_seed(&g, 5);
  fr_torch_randn(&g, noise, 4 * PER);
  int64_t npx = 64 * 64 * 3;
  for (int i = 0; i < 4; i++) {
    struct fr_tensor *nt = fr_tensor_f32(4, (int64_t[]){1, 4, 8, 8});
    memcpy(nt->data, noise + i * PER, PER * sizeof(float));
    char path[4200];
    snprintf(path, sizeof path, "%s/noise%d.safetensors", tmp, i);
    struct fr_st_item it = {"latent", nt};
    struct fr_err err = {{0}};
    CHECK_OK(fr_st_write_file(path, &it, 1, NULL, NULL, 0, &err), &err);
    fr_tensor_free(nt);
    snprintf(yaml, sizeof yaml,
             "%s"
             "  empty: {type: EmptyLatent, inputs: {width: 64, height: 64, batch: 1}}\n"
             "  noise: {type: LoadLatent, inputs: {file: noise%d.safetensors}}\n"
             "  s: {type: Sampler, inputs: {model: ckpt.model, positive: %s, negative: neg, latent: empty,\n"
             "                              seed: 999, steps: 2, cfg: 2, noise: noise}}\n"
             "  d: {type: VAEDecode, inputs: {samples: s, vae: ckpt.vae}}\n"
             "  p0: {type: Probe, inputs: {latent: s, slot: 0}}\n"
             "  p1: {type: Probe, inputs: {image: d, slot: 1}}\n",
             head, i, positive);
    if (run_yaml(e, yaml))
      continue;
    const struct fr_tensor *sl = probe(0, "samples"), *si = probe(1, "image");
    if (!sl || !si || fr_tensor_numel(sl) != PER || fr_tensor_numel(si) != npx) {
      CHECKF(0, "single run %d: no latent or image", i);
      continue;
    }
    double el = fr_test_rel_err(sl->data, (const float *)lat->data + i * PER, PER);
    double ei = fr_test_rel_err(si->data, (const float *)img->data + i * npx, (long)npx);
    printf("sample %d: latent %.3g, image %.3g\n", i, el, ei);
    CHECKF(el < TOL && ei < TOL, "sample %d: batch vs single differ (latent %g, image %g)", i, el, ei);
  }
  /* the four samples differ from each other (the noise is not one slice repeated) */
  CHECK(fr_test_rel_err(lat->data, (const float *)lat->data + PER, PER) > 1e-2);
  fr_tensor_free(lat);
  fr_tensor_free(img);
}

static void test_batch_nodes(struct fr_engine *e) {
  char yaml[4096];
  snprintf(yaml, sizeof yaml,
           "flowrun: 1\n"
           "nodes:\n"
           "  a: {type: SolidImage, inputs: {width: 16, height: 8, batch: 2, color: '#ff0000'}}\n"
           "  b: {type: SolidImage, inputs: {width: 32, height: 16, batch: 1, color: '#0000ff'}}\n"
           "  ab: {type: ImageBatch, inputs: {image1: a, image2: b}}\n"
           "  mid: {type: ImageFromBatch, inputs: {image: ab, batch_index: 1, length: 5}}\n"
           "  empty: {type: EmptyLatent, inputs: {width: 16, height: 16, batch_size: 2}}\n"
           "  rep: {type: RepeatLatentBatch, inputs: {samples: empty, amount: 3}}\n"
           "  p0: {type: Probe, inputs: {image: ab, slot: 0}}\n"
           "  p1: {type: Probe, inputs: {image: mid, slot: 1}}\n"
           "  p2: {type: Probe, inputs: {latent: rep, slot: 2}}\n");
  if (run_yaml(e, yaml))
    return;
  const struct fr_tensor *ab = probe(0, "image"), *mid = probe(1, "image"), *rep = probe(2, "samples");
  CHECKF(ab && ab->shape[0] == 3 && ab->shape[1] == 8 && ab->shape[2] == 16, "ImageBatch: [3, 8, 16, 3]");
  /* batch_index 1, length 5 clamps to the 2 that are left: red then blue (resized: still blue) */
  CHECKF(mid && mid->shape[0] == 2, "ImageFromBatch: %lld images, want 2",
         mid ? (long long)mid->shape[0] : 0LL);
  if (mid && mid->shape[0] == 2) {
    const float *p = mid->data;
    int64_t px = 8 * 16 * 3;
    CHECK(p[0] == 1.0f && p[1] == 0.0f && p[2] == 0.0f);
    CHECK(fabsf(p[px + 0]) < 1e-6f && fabsf(p[px + 2] - 1.0f) < 1e-6f);
  }
  CHECKF(rep && rep->shape[0] == 6 && rep->shape[1] == 4 && rep->shape[2] == 2,
         "RepeatLatentBatch: [6, 4, 2, 2]");
  const struct fr_tensor *bi = probes[2] ? fr_value_get_tensor(probes[2], "batch_index") : NULL;
  CHECK(bi == NULL); /* only latents taken from a batch carry an index */
}

/* VAEEncode of a batch of two pictures equals encoding each alone. */
static void test_encode_batch(struct fr_engine *e) {
  char yaml[4096];
  const char *one = "  a: {type: TestPattern, inputs: {width: 64, height: 64}}\n"
                    "  b: {type: TestPattern, inputs: {width: 64, height: 64, pattern: radial}}\n";
  snprintf(yaml, sizeof yaml,
           "flowrun: 1\n"
           "nodes:\n"
           "  ckpt: {type: CheckpointLoader, inputs: {ckpt_name: sd15-tiny.safetensors}}\n"
           "%s"
           "  ab: {type: ImageBatch, inputs: {image1: a, image2: b}}\n"
           "  e2: {type: VAEEncode, inputs: {pixels: ab, vae: ckpt.vae}}\n"
           "  ea: {type: VAEEncode, inputs: {pixels: a, vae: ckpt.vae}}\n"
           "  eb: {type: VAEEncode, inputs: {pixels: b, vae: ckpt.vae}}\n"
           "  p0: {type: Probe, inputs: {latent: e2, slot: 0}}\n"
           "  p1: {type: Probe, inputs: {latent: ea, slot: 1}}\n"
           "  p2: {type: Probe, inputs: {latent: eb, slot: 2}}\n",
           one);
  if (run_yaml(e, yaml))
    return;
  const struct fr_tensor *both = probe(0, "samples"), *a = probe(1, "samples"), *b = probe(2, "samples");
  CHECK(both && a && b && both->shape[0] == 2 && fr_tensor_numel(a) == PER && fr_tensor_numel(b) == PER);
  if (!both || !a || !b || fr_tensor_numel(both) != 2 * PER || fr_tensor_numel(a) != PER ||
      fr_tensor_numel(b) != PER)
    return;
  double ea = fr_test_rel_err(both->data, a->data, PER),
         eb = fr_test_rel_err((const float *)both->data + PER, b->data, PER);
  printf("VAEEncode batch vs single: %.3g, %.3g\n", ea, eb);
  CHECKF(ea < TOL && eb < TOL, "VAEEncode of a batch differs from single encodes (%g, %g)", ea, eb);
}

int main(void) {
  tmp = fr_test_tmpdir("test_batch");
  const char *fx = fr_test_fixtures();
  if (fx) {
    char models[4200];
    snprintf(models, sizeof models, "%s/models", fx);
    struct fr_registry reg;
    struct fr_engine *e = new_engine(models, &reg);
    if (e) {
      test_batch_nodes(e);
      test_batch_vs_single(e, "sd15-tiny.safetensors", "", "pos");
      test_batch_vs_single(e, "sdxl-tiny.safetensors", "", "pos"); /* pooled text and size ids per sample */
      /* a ControlNet on the positive: its hint repeated to the batch */
      test_batch_vs_single(
          e, "sd15-tiny.safetensors",
          "  cnl: {type: ControlNetLoader, inputs: {control_net_name: controlnet-tiny.safetensors}}\n"
          "  hint: {type: TestPattern, inputs: {width: 64, height: 64}}\n"
          "  cn: {type: ControlNet, inputs: {conditioning: pos, control_net: cnl, image: hint}}\n",
          "cn");
      test_encode_batch(e);
      fr_engine_free(e);
    }
  }
  for (int i = 0; i < NSLOT; i++)
    fr_value_unref(probes[i]);
  return fr_test_done();
}
