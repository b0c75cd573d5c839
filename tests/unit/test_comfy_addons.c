/* ComfyUI workflows with the add-on nodes import one to one (core/comfy.h maps ComfyUI types of the same
 * name when the registry has them): VAELoader, UNETLoader, CLIPLoader, CLIPSetLastLayer and
 * ModelSamplingDiscrete keep their inputs; choices flowrun lacks (fp8 weights, another CLIP family, lcm
 * sampling) are refused by name. */
#include <string.h>

#include "core/comfy.h"
#include "nodes/registry.h"
#include "tests/test.h"

static const char *const wf =
    "{\"1\": {\"class_type\": \"UNETLoader\", \"inputs\": {\"unet_name\": \"u.safetensors\", "
    "\"weight_dtype\": \"default\"}},"
    "\"2\": {\"class_type\": \"CLIPLoader\", \"inputs\": {\"clip_name\": \"c.safetensors\", \"type\": "
    "\"stable_diffusion\"}},"
    "\"3\": {\"class_type\": \"VAELoader\", \"inputs\": {\"vae_name\": \"v.safetensors\"}},"
    "\"4\": {\"class_type\": \"CLIPSetLastLayer\", \"inputs\": {\"clip\": [\"2\", 0], "
    "\"stop_at_clip_layer\": "
    "-2}},"
    "\"5\": {\"class_type\": \"ModelSamplingDiscrete\", \"inputs\": {\"model\": [\"1\", 0], \"sampling\": "
    "\"v_prediction\", \"zsnr\": true}},"
    "\"6\": {\"class_type\": \"CLIPTextEncode\", \"inputs\": {\"clip\": [\"4\", 0], \"text\": \"a "
    "(cat:1.2)\"}},"
    "\"7\": {\"class_type\": \"EmptyLatentImage\", \"inputs\": {\"width\": 64, \"height\": 64, "
    "\"batch_size\": "
    "1}},"
    "\"8\": {\"class_type\": \"KSampler\", \"inputs\": {\"model\": [\"5\", 0], \"positive\": [\"6\", 0], "
    "\"negative\": [\"6\", 0], \"latent_image\": [\"7\", 0], \"seed\": 1, \"steps\": 2, \"cfg\": 1.0, "
    "\"sampler_name\": \"euler\", \"scheduler\": \"normal\", \"denoise\": 1.0}},"
    "\"9\": {\"class_type\": \"VAEDecode\", \"inputs\": {\"samples\": [\"8\", 0], \"vae\": [\"3\", 0]}},"
    "\"10\": {\"class_type\": \"SaveImage\", \"inputs\": {\"images\": [\"9\", 0], \"filename_prefix\": "
    "\"x\"}}}";

static enum fr_status import(const char *json, struct fr_buf *yaml, struct fr_err *err) {
  return fr_comfy_import(fr_builtin_registry(), json, strlen(json), "addons.json", yaml, NULL, err);
}

static void refused(const char *from, const char *to, const char *word) {
  const char *p = strstr(wf, from);
  CHECK(p != NULL);
  if (!p)
    return;
  char json[4096];
  snprintf(json, sizeof json, "%.*s%s%s", (int)(p - wf), wf, to, p + strlen(from));
  struct fr_buf yaml = {0};
  struct fr_err err = {{0}};
  enum fr_status rc = import(json, &yaml, &err);
  printf("%s: %s\n", to, err.msg);
  CHECKF(rc != FR_OK && strstr(err.msg, word), "%s accepted (%s)", to, err.msg);
  fr_buf_free(&yaml);
}

int main(void) {
  struct fr_buf yaml = {0};
  struct fr_err err = {{0}};
  CHECK_OK(import(wf, &yaml, &err), &err);
  if (yaml.data) {
    struct fr_load_opts lo = {.registry = fr_builtin_registry(), .require_files = false};
    struct fr_graph *g = NULL;
    CHECK_OK(fr_graph_load_string(yaml.data, yaml.len, "addons.yaml", ".", &lo, &g, &err), &err);
    static const char *const want[] = {"UNETLoader", "CLIPLoader", "VAELoader", "CLIPSetLastLayer",
                                       "ModelSamplingDiscrete"};
    for (int k = 0; g && k < 5; k++) {
      bool found = false;
      for (int i = 0; i < g->n_nodes; i++)
        found = found || !strcmp(g->nodes[i].spec->name, want[k]);
      CHECKF(found, "no %s in the imported graph", want[k]);
    }
    CHECKF(strstr(yaml.data, "stop_at_clip_layer: -2") && strstr(yaml.data, "sampling: \"v_prediction\"") &&
               strstr(yaml.data, "zsnr: true") && strstr(yaml.data, "vae_name: \"v.safetensors\""),
           "inputs lost:\n%s", yaml.data);
    fr_graph_free(g);
  }
  fr_buf_free(&yaml);
  refused("\"weight_dtype\": \"default\"", "\"weight_dtype\": \"fp8_e4m3fn\"", "fp8_e4m3fn");
  refused("\"type\": \"stable_diffusion\"", "\"type\": \"sd3\"", "sd3");
  refused("\"sampling\": \"v_prediction\"", "\"sampling\": \"lcm\"", "lcm");
  return fr_test_done();
}
