/* LoraLoader and LoraLoaderModelOnly (ComfyUI's names, inputs and outputs): each returns its MODEL / CLIP
 * handles plus (LoRA file, strength); the weights are patched when a consumer loads them (models.c,
 * nodes/models/lora.c). docs/lora.md describes the layouts and what is warned. */
#include <stdbool.h>
#include <string.h>

#include "core/alloc.h"
#include "nodes/pipeline/pipeline.h"

/* Checks that path is a LoRA file flowrun can apply (so a wrong file fails here, not in the Sampler). */
static enum fr_status fr__lora_check_file(struct fr_node_ctx *nc, const char *path) {
  struct fr_lora_set *s = fr_lora_set_new();
  if (!s)
    return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
  struct fr_err err = {{0}};
  enum fr_status rc = fr_lora_set_add(s, path, 1, &err);
  int n = rc ? 0
             : fr_lora_modules(s, FR_LORA_UNET) + fr_lora_modules(s, FR_LORA_CLIP_L) +
                   fr_lora_modules(s, FR_LORA_CLIP_G);
  fr_lora_set_free(s);
  if (rc)
    return fr_node_fail(nc, rc, "input 'lora_name': %s", err.msg);
  if (n == 0)
    return fr_node_fail(
        nc, FR_E_FORMAT,
        "input 'lora_name': %s holds no LoRA module flowrun knows (lora_unet_* / lora_te*_* / "
        "unet.* / text_encoder*.* keys with lora_down+lora_up, lora_A+lora_B, hada_* or lokr_* "
        "parts)",
        path);
  return FR_OK;
}

/* Output idx = the handle on input `in` plus (path, strength); strength 0 passes the handle on as it is. */
static enum fr_status fr__lora_out(struct fr_node_ctx *nc, const char *in, const char *type, int idx,
                                   const char *path, double strength) {
  const struct fr_value *v = fr_in(nc, in);
  if (!v || v->kind != FR_V_OBJECT || !v->obj || strcmp(v->obj->type, type) != 0)
    return fr_node_fail(nc, FR_E_INVALID, "input '%s': no %s connected", in, type);
  if (strength == 0)
    return fr_out_set(nc, idx, fr_value_ref((struct fr_value *)v));
  struct fr_pipe_obj *o = fr_pipe_obj_patched((const struct fr_pipe_obj *)v->obj, path, strength);
  struct fr_value *nv = o ? fr_value_object(&o->o) : NULL;
  if (!nv)
    return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
  return fr_out_set(nc, idx, nv);
}

static enum fr_status fr__lora_common(struct fr_node_ctx *nc, bool with_clip) {
  const char *path = fr_in_path(nc, "lora_name");
  if (!path)
    return fr_node_fail(nc, FR_E_INVALID, "input 'lora_name': no LoRA file given");
  enum fr_status rc = fr__lora_check_file(nc, path);
  if (!rc)
    rc = fr__lora_out(nc, "model", FR_T_MODEL, 0, path, fr_in_float(nc, "strength_model"));
  if (!rc && with_clip)
    rc = fr__lora_out(nc, "clip", FR_T_CLIP, 1, path, fr_in_float(nc, "strength_clip"));
  return rc;
}

static enum fr_status fr__lora_run(struct fr_node_ctx *nc) {
  return fr__lora_common(nc, true);
}

static enum fr_status fr__lora_mo_run(struct fr_node_ctx *nc) {
  return fr__lora_common(nc, false);
}

#define FR__LORA_NAME                                                                                        \
  {                                                                                                          \
    "lora_name", FR_T_STRING, NULL, 0, -1, NULL, FR_IN_MODEL_FILE | FR_IN_KIND(FR_MODEL_LORA),               \
        "LoRA .safetensors on the model path: kohya (lora_unet_*, lora_te*_*), diffusers / PEFT (unet.*, "   \
        "text_encoder*.*), LyCORIS LoCon / LoHa / LoKr"                                                      \
  }
#define FR__STRENGTH(name, what, flags)                                                                      \
  {                                                                                                          \
    name, FR_T_FLOAT, "1.0", -100, 100, NULL, flags,                                                         \
        "how strongly the LoRA changes the " what " (0: not at all)"                                         \
  }

static const struct fr_input_spec fr__lora_in[] = {
    /* each output depends only on its own handle and strength: a change of strength_model re-runs the
     * Sampler but not TextEncode */
    {"model", FR_T_MODEL, NULL, 0, -1, NULL, FR_IN_ONLY_FOR(0), "the diffusion model to patch"},
    {"clip", FR_T_CLIP, NULL, 0, -1, NULL, FR_IN_ONLY_FOR(1), "the text encoder(s) to patch"},
    FR__LORA_NAME,
    FR__STRENGTH("strength_model", "UNet", FR_IN_ONLY_FOR(0)),
    FR__STRENGTH("strength_clip", "text encoder(s)", FR_IN_ONLY_FOR(1)),
};
static const struct fr_output_spec fr__lora_out_spec[] = {
    {"model", FR_T_MODEL, "the model with the LoRA (patched when first used)"},
    {"clip", FR_T_CLIP, "the text encoder(s) with the LoRA"},
};
const struct fr_node_spec fr_node_lora_loader = {
    "LoraLoader",
    1,
    "loaders",
    "Adds a LoRA to a model and its text encoders (stacks with other LoRAs).",
    fr__lora_in,
    FR_COUNT(fr__lora_in),
    fr__lora_out_spec,
    FR_COUNT(fr__lora_out_spec),
    0,
    fr__lora_run};

static const struct fr_input_spec fr__lora_mo_in[] = {
    {"model", FR_T_MODEL, NULL, 0, -1, NULL, 0, "the diffusion model to patch"},
    FR__LORA_NAME,
    FR__STRENGTH("strength_model", "UNet", 0),
};
static const struct fr_output_spec fr__lora_mo_out[] = {
    {"model", FR_T_MODEL, "the model with the LoRA (patched when first used)"},
};
const struct fr_node_spec fr_node_lora_loader_model_only = {
    "LoraLoaderModelOnly",
    1,
    "loaders",
    "Adds a LoRA to a model only (its text-encoder part is not used).",
    fr__lora_mo_in,
    FR_COUNT(fr__lora_mo_in),
    fr__lora_mo_out,
    FR_COUNT(fr__lora_mo_out),
    0,
    fr__lora_mo_run};
