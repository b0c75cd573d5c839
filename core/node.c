#include "core/node.h"

#include <string.h>

const struct fr_node_spec *fr_registry_find(const struct fr_registry *r, const char *name) {
  for (int i = 0; i < r->n; i++)
    if (strcmp(r->specs[i]->name, name) == 0)
      return r->specs[i];
  return NULL;
}

int fr_spec_input_index(const struct fr_node_spec *s, const char *name) {
  for (int i = 0; i < s->n_inputs; i++)
    if (strcmp(s->inputs[i].name, name) == 0)
      return i;
  return -1;
}

int fr_spec_output_index(const struct fr_node_spec *s, const char *name) {
  for (int i = 0; i < s->n_outputs; i++)
    if (strcmp(s->outputs[i].name, name) == 0)
      return i;
  return -1;
}

const char *const *fr_model_kind_folders(enum fr_model_kind k) {
  static const char *const none[] = {NULL}, *const ckpt[] = {"checkpoints", NULL},
                           *const lora[] = {"loras", NULL}, *const vae[] = {"vae", NULL},
                           *const cn[] = {"controlnet", NULL}, *const emb[] = {"embeddings", NULL},
                           *const up[] = {"upscale_models", NULL},
                           *const unet[] = {"unet", "diffusion_models", NULL},
                           *const text[] = {"clip", "text_encoders", NULL};
  static const char *const *const by_kind[FR_MODEL_KINDS] = {none, ckpt, lora, vae, cn, emb, up, unet, text};
  return (unsigned)k < FR_MODEL_KINDS ? by_kind[k] : none;
}

bool fr_type_is_primitive(const char *type) {
  static const char *const prim[] = {FR_T_INT, FR_T_FLOAT, FR_T_BOOL, FR_T_STRING, FR_T_ENUM};
  for (size_t i = 0; i < sizeof prim / sizeof prim[0]; i++)
    if (strcmp(type, prim[i]) == 0)
      return true;
  return false;
}

bool fr_input_has_range(const struct fr_input_spec *in) {
  return in->min < in->max && (strcmp(in->type, FR_T_INT) == 0 || strcmp(in->type, FR_T_FLOAT) == 0);
}

bool fr_node_warn_nonfinite(struct fr_node_ctx *nc, const char *what, const struct fr_tensor *t) {
  int64_t first = -1, bad = fr_tensor_count_nonfinite(t, &first);
  if (!bad)
    return false;
  char shape[96];
  fr_node_warn(
      nc,
      "%s %s holds %lld NaN/inf value%s of %lld (the first at flat index %lld); the picture made from "
      "it will be black or broken",
      what, fr_shape_str(t, shape, sizeof shape), (long long)bad, bad == 1 ? "" : "s",
      (long long)fr_tensor_numel(t), (long long)first);
  return true;
}
