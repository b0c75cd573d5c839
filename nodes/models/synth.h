/* Synthetic full-size checkpoints: the exact key names and shapes of the real single-file checkpoints
 * (v1-5-pruned-emaonly, sd_xl_base_1.0, sd_xl_refiner_1.0, control_v11p_sd15_*) filled with random
 * weights from a fixed seed, so benchmarks run on full-size architectures without a multi-GB download
 * (random weights take the same time as real ones).
 *
 * Key lists are derived from architecture tables (channels, multipliers, depths, widths), not typed in:
 * fr_synth_arch() gives the real tables, and tests shrink them to the fixtures' sizes to check the
 * generated names and shapes against the tiny fixture files, which mirror the real layouts. */
#ifndef FR_MODELS_SYNTH_H
#define FR_MODELS_SYNTH_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "core/tensor.h"

/* The CompVis/SGM UNet (openaimodel.UNetModel) and, with controlnet set, its ControlNet copy. */
struct fr_synth_unet {
  int ch;           /* model_channels: 320 (SD1.5, SDXL), 384 (refiner) */
  int levels;       /* len(channel_mult) */
  int mult[4];      /* channel_mult */
  int nres;         /* num_res_blocks */
  int depth[4];     /* transformer depth per level; 0 = no attention at that level */
  int depth_mid;    /* transformer depth of the middle block */
  int ctx_dim;      /* context_dim: 768, 2048, 1280 */
  bool linear_proj; /* use_linear_projection: proj_in/out as [C, C] linears (SDXL) or 1x1 convs (SD1.5) */
  int adm_in;       /* adm_in_channels (label_emb): 0, 2816 (SDXL), 2560 (refiner) */
  int in_ch, out_ch;
  int heads;       /* attention heads (not in the keys; for FLOP counts and the models) */
  int head_dim;    /* or a fixed head width (SDXL: 64); 0 when heads is used */
  bool controlnet; /* write control_model.* instead (encoder half, hint block, zero convs) */
  int hint_ch[4];  /* ControlNet hint block widths: 16, 32, 96, 256 */
};

struct fr_synth_vae {
  int ch, levels, mult[4], nres, z;
};

/* CLIP text encoder. hf: transformers layout (…text_model.encoder.layers.N.self_attn.q_proj);
 * otherwise OpenCLIP's (…transformer.resblocks.N.attn.in_proj_weight, text_projection [W, P]). */
struct fr_synth_clip {
  bool hf;
  int vocab, width, layers, ff, positions, proj; /* proj: OpenCLIP text_projection columns */
  bool position_ids;                             /* hf: writes the I64 position_ids buffer */
  bool logit_scale;                              /* OpenCLIP: the 0-dim logit_scale */
  const char *prefix; /* "cond_stage_model.transformer.text_model.", "conditioner.embedders.1.model." */
};

struct fr_synth_arch {
  const char *name;
  bool has_unet, has_vae;
  struct fr_synth_unet unet;
  struct fr_synth_vae vae;
  int n_clip;
  struct fr_synth_clip clip[2];
  bool ldm_extras; /* SD1.5: DDPM schedule buffers and model_ema.decay / num_updates */
};

/* The real architecture named "sd15", "sdxl", "sdxl-refiner" or "controlnet-sd15". FR_E_INVALID (with
 * the list of names) for anything else. */
enum fr_status fr_synth_arch(const char *name, struct fr_synth_arch *out, struct fr_err *err);

/* What each tensor is filled with. */
enum fr_synth_init {
  FR_SYNTH_RANDOM,   /* uniform with std 0.02 (weights and biases) */
  FR_SYNTH_ONES,     /* norm gains */
  FR_SYNTH_ZEROS,    /* norm shifts */
  FR_SYNTH_ARANGE,   /* position_ids */
  FR_SYNTH_SCHEDULE, /* an LDM schedule buffer, computed as the real one (see synth.c) */
  FR_SYNTH_CONST,    /* a scalar constant (logit_scale, model_ema.*) */
};

struct fr_synth_tensor {
  char *name;
  enum fr_dtype dtype; /* F32 here means "the float dtype chosen at write time" unless fixed is set */
  bool fixed_dtype;    /* buffers keep their dtype (F32 schedules, I64 ids, I32 counters) */
  int ndim;
  int64_t shape[4];
  enum fr_synth_init init;
  double value; /* FR_SYNTH_CONST */
};

struct fr_synth_list {
  int n, cap;
  struct fr_synth_tensor *t;
  struct fr_arena *names;
};

/* Builds the key list of an architecture in file order. Free with fr_synth_list_free. */
enum fr_status fr_synth_list_build(const struct fr_synth_arch *arch, struct fr_synth_list **out,
                                   struct fr_err *err);
void fr_synth_list_free(struct fr_synth_list *l);            /* NULL is fine */
int64_t fr_synth_list_params(const struct fr_synth_list *l); /* total elements */

/* Writes the checkpoint to path: float tensors in dtype (F32, F16 or BF16), random data from seed,
 * streamed tensor by tensor (memory use is one small buffer, not the file), into a temporary file in
 * the same folder that is fsync'd and renamed over path at the end; on any failure the temporary is
 * removed and path is untouched. progress (may be NULL) is called after each tensor. */
enum fr_status fr_synth_write(const struct fr_synth_list *l, const char *path, enum fr_dtype dtype,
                              uint64_t seed, void (*progress)(int done, int total, void *user), void *user,
                              struct fr_err *err);

/* Analytic FLOPs (2 x multiply-accumulates of convolutions, linears and attention matmuls) of one
 * UNet forward at latent h x w, batch 1, with a ctx_len-token context. */
double fr_synth_unet_flops(const struct fr_synth_unet *u, int h, int w, int ctx_len);
/* The same for a CLIP text encoder over `tokens` tokens, batch 1. */
double fr_synth_clip_flops(const struct fr_synth_clip *c, int tokens);
/* The same for a ControlNet forward (u is the UNet table with hint_ch set; controlnet need not be): the
 * encoder and middle block at latent h x w, the hint network over the 8h x 8w conditioning image and the
 * zero convs (one per skip connection, one after the middle block), batch 1. */
double fr_synth_controlnet_flops(const struct fr_synth_unet *u, int h, int w, int ctx_len);

#endif
