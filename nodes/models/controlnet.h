/* The ControlNet model: a trainable copy of the UNet's encoder and middle block, fed a conditioning image
 * (edges, depth, pose ...) through a small conv "hint" network, whose zero-initialised 1x1 convs give one
 * residual per UNet skip connection plus one for the middle block (fr_unet_control, what fr_unet_forward
 * adds).
 *
 * Layouts: the original file (control_model.input_hint_block / zero_convs.N.0 / middle_block_out.0 plus
 * input_blocks, middle_block, time_embed; the control_model. prefix may be absent) and diffusers
 * (controlnet_cond_embedding / controlnet_down_blocks.N / controlnet_mid_block plus down_blocks, mid_block,
 * time_embedding), as a folder or a bare file. Architecture detection is the UNet's. */
#ifndef FR_MODELS_CONTROLNET_H
#define FR_MODELS_CONTROLNET_H

#include "nodes/models/unet.h"

#define FR_CONTROLNET_MAX_HINT 16

struct fr_controlnet {
  struct fr_unet_config cfg; /* the encoder's (out_channels is 0) */
  int hint_channels;         /* channels of the conditioning image (3) */
  int n_hint;                /* convs of the hint network (8: 3->16 ... 256->model_channels) */
  int hint_downscale;        /* the hint image is this many times the latent size (8) */
  /* private */
  struct fr_unet_impl *impl;
  struct fr_tensor *hw[FR_CONTROLNET_MAX_HINT], *hb[FR_CONTROLNET_MAX_HINT];
  int hstride[FR_CONTROLNET_MAX_HINT];
  struct fr_tensor *zw[FR_UNET_MAX_SKIPS], *zb[FR_UNET_MAX_SKIPS], *mw, *mb;
};

/* Loads a ControlNet from a checkpoint opened with fr_checkpoint_open (a control_model.* file, a diffusers
 * ControlNet folder or file). Errors as fr_unet_load's: a missing or mis-shaped tensor is named. */
enum fr_status fr_controlnet_load(struct fr_ctx *c, const struct fr_checkpoint *ck,
                                  struct fr_controlnet **out, struct fr_err *err);
void fr_controlnet_free(struct fr_controlnet *cn); /* NULL is fine */

/* Residuals for x [B, 4, h, w] at timestep t ([B] or [1]; best a host F32 tensor, embedded from its fp32
 * values as in fr_unet_forward; or NULL with cond->t_sin, the sinusoid made beforehand, as for the UNet)
 * with cond (context, and SDXL's added conditioning for SDXL ControlNets) and the conditioning image hint [B,
 * hint_channels, h*8, w*8] (values 0..1). Each residual is multiplied by scale (the conditioning strength).
 * *out receives new context tensors: free them with fr_unet_control_free. */
enum fr_status fr_controlnet_forward(struct fr_ctx *c, const struct fr_controlnet *cn,
                                     const struct fr_tensor *x, const struct fr_tensor *t,
                                     const struct fr_unet_cond *cond, const struct fr_tensor *hint,
                                     float scale, struct fr_unet_control *out, struct fr_err *err);

#endif
