/* Loaders for separate files and CLIP settings, ComfyUI's nodes: VAELoader, UNETLoader, CLIPLoader,
 * CLIPSetLastLayer. Like CheckpointLoader they only name a file (or change a setting of a handle); the
 * weights load when first used, through the same model cache (models.c). */
#include <string.h>

#include "nodes/pipeline/pipeline.h"

static enum fr_status fr__obj_out(struct fr_node_ctx *nc, const char *input, const char *type) {
  const char *path = fr_in_path(nc, input);
  if (!path)
    return fr_node_fail(nc, FR_E_INVALID, "input '%s': no file given", input);
  struct fr_pipe_obj *o = fr_pipe_obj_new(type, path, NULL);
  if (o && !fr_pipe_obj_set_pin(o, fr_in_pin(nc, input))) {
    fr_object_unref(&o->o);
    o = NULL;
  }
  struct fr_value *v = o ? fr_value_object(&o->o) : NULL;
  return v ? fr_out_set(nc, 0, v) : fr_node_fail(nc, FR_E_NOMEM, "out of memory");
}

static const char *const fr__default_only[] = {"default", NULL};
static const char *const fr__clip_types[] = {"stable_diffusion", NULL};

/* ---- VAELoader ---- */

static enum fr_status fr__vae_loader_run(struct fr_node_ctx *nc) {
  return fr__obj_out(nc, "vae_name", FR_T_VAE);
}
static const struct fr_input_spec fr__vae_loader_in[] = {
    {"vae_name", FR_T_STRING, NULL, 0, -1, NULL, FR_IN_MODEL_FILE | FR_IN_KIND(FR_MODEL_VAE),
     "a VAE file (vae-ft-mse-840000-ema-pruned.safetensors, sdxl_vae.safetensors: encoder.*/decoder.* keys, "
     "or first_stage_model.*), a diffusers-layout diffusion_pytorch_model.safetensors, or a checkpoint whose "
     "VAE to use"},
};
static const struct fr_output_spec fr__vae_loader_out[] = {
    {"vae", FR_T_VAE, "the VAE (loaded when first used)"}};
const struct fr_node_spec fr_node_vae_loader = {"VAELoader",
                                                1,
                                                "loaders",
                                                "Names a separate VAE file; it loads when first used.",
                                                fr__vae_loader_in,
                                                FR_COUNT(fr__vae_loader_in),
                                                fr__vae_loader_out,
                                                FR_COUNT(fr__vae_loader_out),
                                                0,
                                                fr__vae_loader_run};

/* ---- UNETLoader ---- */

static enum fr_status fr__unet_loader_run(struct fr_node_ctx *nc) {
  return fr__obj_out(nc, "unet_name", FR_T_MODEL);
}
static const struct fr_input_spec fr__unet_loader_in[] = {
    {"unet_name", FR_T_STRING, NULL, 0, -1, NULL, FR_IN_MODEL_FILE | FR_IN_KIND(FR_MODEL_UNET),
     "a UNet file (model.diffusion_model.* keys, bare SGM input_blocks.* or diffusers down_blocks.* keys), "
     "or a checkpoint"},
    {"weight_dtype", FR_T_ENUM, "default", 0, -1, fr__default_only, 0,
     "ComfyUI's weight dtype: only default here (the run's --dtype decides; no fp8)"},
};
static const struct fr_output_spec fr__unet_loader_out[] = {
    {"model", FR_T_MODEL, "the diffusion UNet (loaded when first used)"}};
const struct fr_node_spec fr_node_unet_loader = {"UNETLoader",
                                                 1,
                                                 "loaders",
                                                 "Names a separate UNet file; it loads when first used.",
                                                 fr__unet_loader_in,
                                                 FR_COUNT(fr__unet_loader_in),
                                                 fr__unet_loader_out,
                                                 FR_COUNT(fr__unet_loader_out),
                                                 0,
                                                 fr__unet_loader_run};

/* ---- CLIPLoader ---- */

static enum fr_status fr__clip_loader_run(struct fr_node_ctx *nc) {
  return fr__obj_out(nc, "clip_name", FR_T_CLIP);
}
static const struct fr_input_spec fr__clip_loader_in[] = {
    {"clip_name", FR_T_STRING, NULL, 0, -1, NULL, FR_IN_MODEL_FILE | FR_IN_KIND(FR_MODEL_TEXT),
     "a CLIP-L text encoder file (text_model.* keys: a diffusers text_encoder/model.safetensors), or a "
     "checkpoint"},
    {"type", FR_T_ENUM, "stable_diffusion", 0, -1, fr__clip_types, 0,
     "ComfyUI's model family: only stable_diffusion (CLIP-L) here"},
    {"device", FR_T_ENUM, "default", 0, -1, fr__default_only, FR_IN_OPTIONAL | FR_IN_HIDDEN,
     "ComfyUI's device choice: only default (the run's --device)"},
};
static const struct fr_output_spec fr__clip_loader_out[] = {
    {"clip", FR_T_CLIP, "the text encoder (loaded when first used)"}};
const struct fr_node_spec fr_node_clip_loader = {
    "CLIPLoader",
    1,
    "loaders",
    "Names a separate text encoder file; it loads when first used.",
    fr__clip_loader_in,
    FR_COUNT(fr__clip_loader_in),
    fr__clip_loader_out,
    FR_COUNT(fr__clip_loader_out),
    0,
    fr__clip_loader_run};

/* ---- CLIPSetLastLayer ---- */

static enum fr_status fr__clip_last_run(struct fr_node_ctx *nc) {
  const struct fr_value *v = fr_in(nc, "clip");
  if (!v || v->kind != FR_V_OBJECT || !v->obj || strcmp(v->obj->type, FR_T_CLIP) != 0)
    return fr_node_fail(nc, FR_E_INVALID, "input 'clip': no CLIP connected");
  struct fr_pipe_obj *o = fr_pipe_obj_clone((const struct fr_pipe_obj *)v->obj);
  if (!o)
    return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
  o->clip_layer = (int)fr_in_int(nc, "stop_at_clip_layer");
  struct fr_value *out = fr_value_object(&o->o);
  return out ? fr_out_set(nc, 0, out) : fr_node_fail(nc, FR_E_NOMEM, "out of memory");
}
static const struct fr_input_spec fr__clip_last_in[] = {
    {"clip", FR_T_CLIP, NULL, 0, -1, NULL, 0, "the text encoder(s)"},
    {"stop_at_clip_layer", FR_T_INT, "-1", -24, -1, NULL, 0,
     "the layer whose output TextEncode uses: -1 the last, -2 the one before (SD1.x's clip skip 2) ...; "
     "replaces TextEncode's clip_skip and SDXL's default -2"},
};
static const struct fr_output_spec fr__clip_last_out[] = {{"clip", FR_T_CLIP, "the text encoder(s), set so"}};
const struct fr_node_spec fr_node_clip_set_last_layer = {
    "CLIPSetLastLayer",
    1,
    "conditioning",
    "Chooses the text encoder layer TextEncode reads (ComfyUI's clip skip: -2 = skip the last layer).",
    fr__clip_last_in,
    FR_COUNT(fr__clip_last_in),
    fr__clip_last_out,
    FR_COUNT(fr__clip_last_out),
    0,
    fr__clip_last_run};
