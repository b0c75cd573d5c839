/* The Stable Diffusion VAE (AutoencoderKL as in diffusers): encoder image -> latent distribution and
 * decoder latent -> image, written against the ops API.
 *
 * One loader reads both layouts through one mapping table (vae.c): single-file CompVis keys
 * (first_stage_model.encoder.down.N.block.M, mid.attn_1.q/k/v/proj_out stored as 1x1 convolutions,
 * nin_shortcut) — also a bare VAE file with the same keys and no prefix — and diffusers folders (vae/:
 * down_blocks.N.resnets.M, mid_block.attentions.0.to_q/to_k/to_v/to_out.0 or the older
 * query/key/value/proj_attn, conv_shortcut). The configuration (base channels, channel multipliers,
 * res blocks per level, latent channels) is detected from keys and shapes, never from file names;
 * GroupNorm uses 32 groups and eps 1e-6 as every SD/SDXL VAE does.
 *
 * Latents here are NOT scaled: the pipeline multiplies the encoder's sample by the scaling factor and
 * divides before decoding (fr_vae_scaling_factor says which factor a checkpoint wants, when it can). */
#ifndef FR_MODELS_VAE_H
#define FR_MODELS_VAE_H

#include <stdbool.h>

#include "core/status.h"
#include "core/tensor.h"
#include "kernels/ops.h"
#include "nodes/models/weights.h"

#define FR_VAE_MAX_LEVELS 6
#define FR_VAE_MAX_RES 4

struct fr_vae_config {
  int ch;                        /* base channels: 128 for SD1.5/SDXL */
  int levels;                    /* resolution levels: 4 (three 2x down/upsamplings) */
  int mult[FR_VAE_MAX_LEVELS];   /* channel multipliers per level: 1, 2, 4, 4 */
  int num_res_blocks;            /* encoder res blocks per level (decoder has one more): 2 */
  int in_channels, out_channels; /* image channels: 3 */
  int z_channels;                /* latent channels: 4 */
  bool has_encoder;              /* a decoder-only file still loads; encoding it is an error */
};

struct fr_vae;

/* Loads the VAE of checkpoint ck (single file: first_stage_model.* or bare VAE keys; diffusers: vae/)
 * into context c: weights converted once to the compute dtype by fr_ctx_weight. A missing or
 * mis-shaped tensor is an error naming it and both shapes. On success *out is freed with fr_vae_free. */
enum fr_status fr_vae_load(struct fr_ctx *c, const struct fr_checkpoint *ck, struct fr_vae **out,
                           struct fr_err *err);
void fr_vae_free(struct fr_vae *vae); /* NULL is fine */
const struct fr_vae_config *fr_vae_config(const struct fr_vae *vae);

/* Decodes latents z [B, z_channels, h, w] (a context tensor, NOT multiplied by the scaling factor) into
 * an image *img [B, out_channels, 8h, 8w] (for 4 levels) in about [-1, 1]. *img is a new context tensor
 * the caller frees. A wrong shape is FR_E_SHAPE; op failures come back from the context. */
enum fr_status fr_vae_decode(struct fr_ctx *c, const struct fr_vae *vae, const struct fr_tensor *z,
                             struct fr_tensor **img, struct fr_err *err);

/* Decodes HOST F32 latents z [B, z_channels, h, w] (not scaled) in tiles of tile x tile latents whose
 * neighbours overlap by `overlap` latents, blended with weights that ramp linearly across each overlap
 * (so seams do not show), into a new host F32 image *out [B, 3, 8h, 8w]. Peak device memory is one
 * tile's decode. Each tile sees less context than a whole decode (GroupNorm statistics and the mid
 * block's attention are per tile), so the result differs slightly from fr_vae_decode, most near seams;
 * when one tile covers z it IS the whole decode. Errors: FR_E_INVALID (z not a host F32 [B, C, h, w],
 * tile < 1, overlap outside [0, tile)), the decode's own (FR_E_NOMEM when a tile does not fit). */
enum fr_status fr_vae_decode_tiled(struct fr_ctx *c, const struct fr_vae *vae, const struct fr_tensor *z,
                                   int tile, int overlap, struct fr_tensor **out, struct fr_err *err);

/* First tile size (latents) the out-of-memory fallback tries: 64 latents = 512 pixels. */
#define FR_VAE_FALLBACK_TILE 64
/* The pipeline's decode of host F32 latents z into a new host F32 image *out [B, 3, 8h, 8w]: whole when
 * tile is 0 (or z fits one tile), else in tiles of `tile` latents overlapping by tile / 4. When that runs
 * out of device memory (FR_E_NOMEM), it decodes again in tiles of 64, then 32, then 16 latents
 * (overlap a quarter: 16, 8, 4), skipping sizes that would not split z or are not smaller than the
 * failed tiles. *used_tile: the tile size of the result (0: whole); the caller tells the user when it
 * differs from what was asked. Errors as fr_vae_decode_tiled; FR_E_NOMEM when even 16 does not fit. */
enum fr_status fr_vae_decode_host(struct fr_ctx *c, const struct fr_vae *vae, const struct fr_tensor *z,
                                  int tile, struct fr_tensor **out, int *used_tile, struct fr_err *err);

/* Encodes img [B, in_channels, H, W] (H, W multiples of 8; values in [-1, 1]) into the latent
 * distribution's mean and logvar, each [B, z_channels, H/8, W/8] (logvar clamped to [-30, 20] as
 * diffusers' DiagonalGaussianDistribution does). Both are new context tensors the caller frees. */
enum fr_status fr_vae_encode(struct fr_ctx *c, const struct fr_vae *vae, const struct fr_tensor *img,
                             struct fr_tensor **mean, struct fr_tensor **logvar, struct fr_err *err);

/* The latent scaling factor a checkpoint's pipeline uses, when it can be told: a diffusers vae/
 * config.json's scaling_factor; for a single file, 0.13025 when it has SGM conditioner keys
 * (SDXL base/refiner) and 0.18215 when it has cond_stage_model keys (SD1.x/2.x). Returns 0 when it
 * cannot be told (a bare VAE file): the caller (the pipeline node) must then choose. */
float fr_vae_scaling_factor(const struct fr_checkpoint *ck);

/* Multiply-accumulate count ×2 of a decode of latents [1, z, h, w] (convolutions, attention
 * projections and the attention matmuls), for benchmarks. */
double fr_vae_decode_flops(const struct fr_vae_config *cfg, int h, int w);

#endif
