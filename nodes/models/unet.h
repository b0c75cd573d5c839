/* The diffusion UNet of SD1.5, SDXL base and SDXL refiner (and SD2-style models), written once against the
 * ops API, loaded from single-file (CompVis/SGM keys: model.diffusion_model.input_blocks...) and diffusers
 * (unet/diffusion_pytorch_model.safetensors: down_blocks...) checkpoints through one key-mapping table.
 *
 * The architecture is detected from keys and shapes, never from file names (docs/models-unet.md has the
 * rules): model channels, channels per level, residual blocks per level, transformer depth of every
 * attention block, context dim, linear or 1x1-conv projections, the added-conditioning input (SDXL's
 * label_emb), in/out channels and the attention heads. */
#ifndef FR_MODELS_UNET_H
#define FR_MODELS_UNET_H

#include <stdbool.h>

#include "core/status.h"
#include "core/tensor.h"
#include "kernels/ops.h"
#include "nodes/models/weights.h"

#define FR_UNET_MAX_LEVELS 6
/* Skip connections of the encoder: conv_in plus every input block (12 for SD1.5 and SDXL's 3x3 + 3). */
#define FR_UNET_MAX_SKIPS (1 + FR_UNET_MAX_LEVELS * 4)

enum fr_unet_arch {
  FR_UNET_SD15,         /* 1x1-conv projections, 8 heads, no added conditioning */
  FR_UNET_SD2,          /* linear projections, head dim 64, no added conditioning */
  FR_UNET_SDXL,         /* added conditioning: text_embeds + 6 time ids */
  FR_UNET_SDXL_REFINER, /* added conditioning: text_embeds + 5 time ids (aesthetic score) */
};

struct fr_unet_config {
  enum fr_unet_arch arch;
  int in_channels, out_channels;
  int model_channels;               /* conv_in's output channels (320 for SD1.5) */
  int time_embed_dim;               /* 4 x model_channels */
  int levels;                       /* 4 for SD1.5 and the refiner, 3 for SDXL */
  int num_res_blocks;               /* per level in the encoder (the decoder has one more) */
  int channels[FR_UNET_MAX_LEVELS]; /* channels of each level (320, 640, 1280, 1280) */
  int depth[FR_UNET_MAX_LEVELS];    /* transformer blocks per attention block of a level; 0: none */
  int mid_depth;                    /* transformer blocks in the middle block (0: none) */
  int context_dim;                  /* cross-attention key width (768, 1024, 2048, 1280) */
  bool linear_proj;                 /* proj_in/proj_out are linear (SD2, SDXL) not 1x1 convs */
  int heads;                        /* when head_dim is 0: the same head count at every level */
  int head_dim;                     /* when > 0: heads = channels / head_dim */
  int adm_in_channels;              /* label_emb input width (2816 SDXL, 2560 refiner); 0: none */
};

struct fr_unet_impl;
struct fr_unet {
  struct fr_unet_config cfg;
  struct fr_unet_impl *impl; /* the weights, as context tensors */
};

/* Conditioning of one forward call. All tensors are context tensors (on the context's device, F32 on
 * the CPU), except time_ids, which is best a host F32 tensor (embedded from fp32 values, see
 * fr_unet_forward). */
struct fr_unet_cond {
  const struct fr_tensor *context; /* [B, T, context_dim] text embeddings */
  /* Added conditioning (SDXL / refiner), either y directly [B, adm_in_channels] or built from the parts:
   * text_embeds [B, P] (pooled, projected text) and time_ids [B, N] (base: original h, w, crop top, left,
   * target h, w; refiner: original h, w, crop top, left, aesthetic score). Each time id is embedded
   * sinusoidally with (adm_in_channels - P) / N dims (256 in the real models), concatenated after
   * text_embeds. */
  const struct fr_tensor *y;
  const struct fr_tensor *text_embeds;
  const struct fr_tensor *time_ids;
  /* Optional: the sinusoidal embedding of t already made, [N, model_channels] with N = 1 or B, a context
   * tensor (fr_timestep_embedding_f32, or a kept tensor rewritten with fr_ctx_write). t is then not read
   * and may be NULL. A recorded step (fr_ctx_record_begin) takes its timestep this way: host values
   * uploaded inside a recording are read once, when recording. */
  const struct fr_tensor *t_sin;
};

/* ControlNet residuals (diffusers' down_block_additional_residuals / mid_block_additional_residual):
 * down[i] is added to the i-th skip connection (conv_in output first), mid to the middle block's output.
 * n_down must equal the UNet's skip count (levels * (num_res_blocks + 1)). */
struct fr_unet_control {
  struct fr_tensor *down[FR_UNET_MAX_SKIPS];
  int n_down;
  struct fr_tensor *mid;
};
/* Frees the tensors held by a control (from fr_controlnet_forward) and zeroes it. */
void fr_unet_control_free(struct fr_unet_control *ctl);

/* Loads the UNet of a checkpoint: a single file with model.diffusion_model.* keys (or a bare UNet file
 * with SGM or diffusers keys), or a diffusers folder's unet/. Weights are converted once to the
 * context's compute dtype. Errors: FR_E_NOTFOUND (no UNet in the checkpoint, or a missing tensor:
 * the message names it), FR_E_SHAPE (a tensor contradicts the detected architecture: the message names
 * it and both shapes), FR_E_UNSUPPORTED, FR_E_NOMEM. On error *out is NULL. */
enum fr_status fr_unet_load(struct fr_ctx *c, const struct fr_checkpoint *ck, struct fr_unet **out,
                            struct fr_err *err);
/* Number of heads of the attention blocks at a level (or the middle block: level = levels - 1). */
int fr_unet_heads(const struct fr_unet_config *cfg, int level);
/* The added-conditioning vector y [B, adm_in_channels] of an SDXL-type UNet from cond (cond->y copied, or
 * text_embeds ++ the fp32 embedding of time_ids), a new context tensor; NULL with the context's error set
 * when the UNet has none or the parts do not fit. A sampler makes it once per run and passes it as
 * cond->y, so no step embeds the (constant) time ids again. */
struct fr_tensor *fr_unet_added_cond(struct fr_ctx *c, const struct fr_unet *u,
                                     const struct fr_unet_cond *cond);
/* Skip connections (= ControlNet down residuals) of this UNet. */
int fr_unet_num_skips(const struct fr_unet_config *cfg);

/* eps = unet(x, t, cond, control). x [B, in_channels, h, w] with h, w multiples of 2^(levels-1);
 * t [B] or [1] float timesteps (not scaled: 999 ... 0), best a HOST F32 tensor: the sinusoidal embedding
 * is then computed from the fp32 values and cast afterwards, as diffusers does (a context tensor is
 * accepted too, but in F16/BF16 it already holds t rounded: 999 is 1000 in BF16). The same holds for
 * cond->time_ids. control may be NULL. *eps [B, out_channels, h, w]
 * is a new context tensor the caller frees. Intermediates are freed as soon as they are used. */
enum fr_status fr_unet_forward(struct fr_ctx *c, const struct fr_unet *u, const struct fr_tensor *x,
                               const struct fr_tensor *t, const struct fr_unet_cond *cond,
                               const struct fr_unet_control *control, struct fr_tensor **eps,
                               struct fr_err *err);
void fr_unet_free(struct fr_unet *u); /* NULL is fine */

#endif
