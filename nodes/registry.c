/* The built-in node types, in palette order. A new node type adds its spec here (one line each, so
 * merges stay trivial): include its header or declare it extern, then list it in fr__builtin. */
#include "nodes/registry.h"

#include "nodes/image/edit.h"        /* mask, scaling, crop and outpaint node specs */
#include "nodes/image/image.h"       /* image and primitive node specs */
#include "nodes/pipeline/pipeline.h" /* pipeline node specs */

extern const struct fr_node_spec fr_node_upscale_model_loader, fr_node_image_upscale_with_model;
extern const struct fr_node_spec fr_node_preview_image; /* nodes/image/preview.c */

static const struct fr_node_spec *const fr__builtin[] = {
    /* primitive */
    &fr_node_int, &fr_node_float, &fr_node_string, &fr_node_boolean, &fr_node_seed,
    /* image */
    &fr_node_load_image, &fr_node_save_image, &fr_node_solid_image, &fr_node_test_pattern,
    &fr_node_image_resize, &fr_node_image_blur, &fr_node_canny, &fr_node_image_blend, &fr_node_image_invert,
    /* image editing: masks, scaling, crop, composite, outpaint */
    &fr_node_load_image_mask,
    &fr_node_image_to_mask,
    &fr_node_mask_to_image,
    &fr_node_invert_mask,
    &fr_node_grow_mask,
    &fr_node_feather_mask,
    &fr_node_solid_mask,
    &fr_node_threshold_mask,
    &fr_node_mask_composite,
    &fr_node_image_scale,
    &fr_node_image_scale_by,
    &fr_node_image_crop,
    &fr_node_image_pad_for_outpaint,
    &fr_node_latent_upscale,
    &fr_node_latent_upscale_by,
    &fr_node_latent_crop,
    &fr_node_latent_composite,
    /* upscale models */
    &fr_node_upscale_model_loader,
    &fr_node_image_upscale_with_model,
    /* pipeline */
    &fr_node_checkpoint_loader, &fr_node_controlnet_loader, &fr_node_text_encode, &fr_node_empty_latent,
    &fr_node_sampler, &fr_node_refiner, &fr_node_controlnet_apply, &fr_node_vae_decode, &fr_node_vae_encode,
    &fr_node_save_latent, &fr_node_load_latent, &fr_node_save_image_data, &fr_node_load_image_data,
    &fr_node_model_sampling_discrete,
    &fr_node_vae_loader,
    &fr_node_unet_loader,
    &fr_node_clip_loader,
    &fr_node_clip_set_last_layer,
    &fr_node_lora_loader,
    &fr_node_lora_loader_model_only,
    /* inpainting */
    &fr_node_vae_encode_for_inpaint, &fr_node_set_latent_noise_mask, &fr_node_inpaint_model_conditioning,
    /* batches */
    &fr_node_repeat_latent_batch, &fr_node_latent_from_batch, &fr_node_image_batch, &fr_node_image_from_batch,
    &fr_node_preview_image, /* output */
    NULL,                   /* end marker; keep last */
};

const struct fr_registry *fr_builtin_registry(void) {
  static const struct fr_registry r = {fr__builtin, (int)(sizeof fr__builtin / sizeof fr__builtin[0]) - 1};
  return &r;
}
