/* Model folders laid out as ComfyUI's models/: a checkpoint in DIR/checkpoints, a ControlNet in
 * DIR/controlnet are found by their plain names with --models DIR (fr_model_kind_folders), a file in
 * another kind's folder is not (the error lists where it looked), and a fresh folder with no tokenizer in
 * it or above it runs TextEncode with the CLIP vocabulary that ships with flowrun: the picture equals the
 * one made with the fixtures' own tokenizer/ folder, bit for bit (same ids, same arithmetic). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/flowrun.h"
#include "core/safetensors.h"
#include "nodes/registry.h"
#include "tests/test.h"

static const char *tmp;

static const char *const graph_yaml =
    "flowrun: 1\n"
    "nodes:\n"
    "  ckpt: {type: CheckpointLoader, inputs: {ckpt_name: sd15-tiny.safetensors}}\n"
    "  pos: {type: TextEncode, inputs: {clip: ckpt.clip, text: a photo of a cat}}\n"
    "  empty: {type: EmptyLatent, inputs: {width: 64, height: 64}}\n"
    "  s: {type: Sampler, inputs: {model: ckpt.model, positive: pos, negative: pos, latent: empty,\n"
    "                              seed: 3, steps: 1, cfg: 1}}\n"
    "  d: {type: VAEDecode, inputs: {samples: s, vae: ckpt.vae}}\n"
    "  save: {type: SaveImageData, inputs: {images: d, filename: %s}}\n";

static struct fr_engine *engine(const char *models, struct fr_err *err) {
  return fr_test_engine(models, tmp, 2, NULL, NULL, err);
}

/* Loads yaml with model folder `models`; runs it when run. Returns the load/run status, message in err. */
static enum fr_status load_run(const char *models, const char *yaml, bool run, struct fr_err *err) {
  struct fr_engine *e = engine(models, err);
  if (!e)
    return FR_E_INVALID;
  struct fr_graph *g = NULL;
  enum fr_status rc = fr_engine_load_string(e, yaml, strlen(yaml), "folders.yaml", tmp, NULL, 0, &g, err);
  if (!rc && run) {
    struct fr_run_summary sum;
    rc = fr_engine_run(e, g, &sum, err);
  }
  fr_graph_free(g);
  fr_engine_free(e);
  return rc;
}

static void link_into(const char *dir, const char *target, const char *name) {
  char p[4300];
  mkdir(dir, 0755);
  snprintf(p, sizeof p, "%s/%s", dir, name);
  CHECKF(symlink(target, p) == 0, "symlink %s", p);
}

int main(void) {
  tmp = fr_test_tmpdir("test_model_folders");
  const char *fx = fr_test_fixtures();
  if (!fx)
    return fr_test_done();
  char models[4200], sub[4400], target[4300], comfy[4096], other[4400], yaml[2048];
  snprintf(models, sizeof models, "%s/models", fx);
  /* a ComfyUI-style folder: models/checkpoints, models/controlnet; no tokenizer anywhere in it */
  snprintf(comfy, sizeof comfy, "%s/comfy", tmp);
  mkdir(comfy, 0755);
  snprintf(sub, sizeof sub, "%s/checkpoints", comfy);
  snprintf(target, sizeof target, "%s/sd15-tiny.safetensors", models);
  link_into(sub, target, "sd15-tiny.safetensors");
  snprintf(sub, sizeof sub, "%s/controlnet", comfy);
  snprintf(target, sizeof target, "%s/controlnet-tiny.safetensors", models);
  link_into(sub, target, "cn.safetensors");

  struct fr_err err = {{0}};
  /* the fixtures folder: its tokenizer one folder up (fixtures/tokenizer) */
  snprintf(yaml, sizeof yaml, graph_yaml, "plain.safetensors");
  CHECK_OK(load_run(models, yaml, true, &err), &err);
  /* the ComfyUI folder: checkpoints/ found by name, the shipped vocabulary */
  snprintf(yaml, sizeof yaml, graph_yaml, "comfy.safetensors");
  CHECK_OK(load_run(comfy, yaml, true, &err), &err);
  long n1 = 0, n2 = 0;
  float *a = fr_test_read_saved(tmp, "plain.safetensors", "image", &n1),
        *b = fr_test_read_saved(tmp, "comfy.safetensors", "image", &n2);
  CHECKF(a && b && n1 == n2 && n1 > 0 && memcmp(a, b, (size_t)n1 * sizeof(float)) == 0,
         "the shipped vocabulary gives another picture than the fixtures' tokenizer (%ld vs %ld floats)", n1,
         n2);
  free(a);
  free(b);

  /* controlnet/ for ControlNetLoader */
  const char *cn_yaml = "flowrun: 1\n"
                        "nodes:\n"
                        "  cn: {type: ControlNetLoader, inputs: {control_net_name: cn.safetensors}}\n";
  CHECK_OK(load_run(comfy, cn_yaml, false, &err), &err);

  /* a checkpoint in another kind's folder (controlnet/) is not a checkpoint: not found, where it looked */
  const char *wrong = "flowrun: 1\n"
                      "nodes:\n"
                      "  ckpt: {type: CheckpointLoader, inputs: {ckpt_name: cn.safetensors}}\n";
  memset(&err, 0, sizeof err);
  enum fr_status rc = load_run(comfy, wrong, false, &err);
  snprintf(other, sizeof other, "%s/checkpoints/cn.safetensors", comfy);
  printf("wrong folder: %s\n", err.msg);
  CHECKF(rc != FR_OK && strstr(err.msg, "not found") && strstr(err.msg, other),
         "a ControlNet file as ckpt_name: status %d, '%s'", rc, err.msg);
  return fr_test_done();
}
