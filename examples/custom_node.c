/* A custom node type: a spec (data) plus a run function, added to the built-in registry, used from a
 * workflow given as text.
 *
 *   example_custom_node [OUTPUT_DIR]
 *
 * Posterize reduces each colour channel to `levels` values. Its version (1) is part of every
 * signature: bump it when the numbers it computes change, so old cache entries are not reused. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/flowrun.h"
#include "nodes/registry.h"

static enum fr_status posterize_run(struct fr_node_ctx *nc) {
  const struct fr_value *in = fr_in(nc, "image");
  const struct fr_tensor *img = in ? fr_value_get_tensor(in, "image") : NULL; /* F32 [B, H, W, C] */
  if (!img || img->dtype != FR_F32)
    return fr_node_fail(nc, FR_E_INVALID, "input image: expected an F32 IMAGE");
  double levels = (double)fr_in_int(nc, "levels");
  struct fr_tensor *out = fr_tensor_clone(img);
  if (!out)
    return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
  float *p = out->data;
  int64_t n = fr_tensor_numel(out);
  for (int64_t i = 0; i < n; i++) {
    if (i % 4096 == 0 && fr_node_progress(nc, (int)(i / 4096), (int)((n + 4095) / 4096), NULL) != FR_OK) {
      fr_tensor_free(out);
      return FR_E_CANCELLED; /* the run was cancelled: stop promptly */
    }
    p[i] = (float)(floor(p[i] * (levels - 1) + 0.5) / (levels - 1));
  }
  /* fr_value_tensor takes the tensor; fr_out_set takes the value (both also on failure). */
  return fr_out_set(nc, 0, fr_value_tensor(FR_T_IMAGE, "image", out));
}

static const struct fr_input_spec posterize_in[] = {
    {.name = "image", .type = FR_T_IMAGE, .help = "image to posterize"},
    {.name = "levels", .type = FR_T_INT, .def = "4", .min = 2, .max = 256, .help = "values per channel"},
};
static const struct fr_output_spec posterize_out[] = {{.name = "image", .type = FR_T_IMAGE}};
static const struct fr_node_spec posterize = {
    .name = "Posterize",
    .version = 1,
    .category = "image",
    .help = "Reduces each colour channel to a few levels.",
    .inputs = posterize_in,
    .n_inputs = 2,
    .outputs = posterize_out,
    .n_outputs = 1,
    .run = posterize_run,
};

static const char *workflow =
    "flowrun: 1\n"
    "nodes:\n"
    "  pattern: {type: TestPattern, inputs: {pattern: radial, width: 64, height: 64}}\n"
    "  poster: {type: Posterize, inputs: {image: pattern, levels: 3}}\n"
    "  save: {type: SaveImage, inputs: {images: poster, filename_prefix: posterized}}\n";

int main(int argc, char **argv) {
  /* The built-in node types plus ours. */
  const struct fr_registry *builtin = fr_builtin_registry();
  const struct fr_node_spec *specs[256];
  int n = 0;
  for (int i = 0; i < builtin->n && n < 255; i++)
    specs[n++] = builtin->specs[i];
  specs[n++] = &posterize;
  struct fr_registry reg = {specs, n};

  struct fr_engine_opts opts = {.registry = &reg, .no_cache = true, .output_dir = argc > 1 ? argv[1] : "."};
  struct fr_err err;
  struct fr_engine *e;
  if (fr_engine_new(&opts, &e, &err) != FR_OK) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  struct fr_graph *g;
  if (fr_engine_load_string(e, workflow, strlen(workflow), "<posterize>", ".", NULL, 0, &g, &err) != FR_OK) {
    fprintf(stderr, "%s\n", err.msg);
    fr_engine_free(e);
    return 2;
  }
  struct fr_run_summary sum;
  enum fr_status rc = fr_engine_run(e, g, &sum, &err);
  if (rc == FR_OK)
    printf("posterized: %d nodes ran in %.1f ms\n", sum.executed, sum.ms);
  else
    fprintf(stderr, "run failed: %s\n", err.msg);
  fr_graph_free(g);
  fr_engine_free(e);
  return rc == FR_OK ? 0 : 1;
}
