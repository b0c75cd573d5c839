/* Loading model weights from checkpoints: single files and diffusers folders.
 *
 * A checkpoint is either one safetensors file with CompVis/SGM keys (model.diffusion_model.*,
 * first_stage_model.*, cond_stage_model.*, conditioner.embedders.N.*) or a diffusers folder
 * (model_index.json, unet/, vae/, text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/), or a
 * ControlNet file (control_model.* or a diffusers controlnet folder / file). Each model's loader
 * (clip.c, unet.c, vae.c, controlnet.c) finds its component's tensors through fr_wsrc, which names
 * the file and the key prefix, and checks every shape against the architecture it detected: a missing
 * or mis-shaped tensor is an error naming the tensor and both shapes. Architecture is detected from
 * keys and shapes, never from file names. */
#ifndef FR_MODELS_WEIGHTS_H
#define FR_MODELS_WEIGHTS_H

#include <stdbool.h>

#include "core/safetensors.h"
#include "core/status.h"
#include "kernels/ops.h"
#include "nodes/models/lora.h"

enum fr_ckpt_layout { FR_LAYOUT_SINGLE, FR_LAYOUT_DIFFUSERS };

struct fr_checkpoint {
  enum fr_ckpt_layout layout;
  const char *path;                 /* file or folder, for messages */
  struct fr_safetensors *file;      /* single-file layout */
  /* diffusers layout: each component's weights (NULL when absent) and config.json text */
  struct fr_safetensors *unet, *vae, *text_encoder, *text_encoder_2, *controlnet;
  char *unet_config, *vae_config, *text_encoder_config, *text_encoder_2_config, *controlnet_config;
  char *dir;                        /* the folder (diffusers), for tokenizer/ look-ups */
  /* LoRA files applied to what the UNet and CLIP loaders load from this checkpoint (NULL: none). A
   * loader copies it into its fr_wsrc; callers set it on a copy of a shared, opened checkpoint. */
  struct fr_lora_set *lora;
};

/* Opens a single .safetensors file or a diffusers folder (model_index.json or config.json +
 * diffusion_pytorch_model.safetensors for a ControlNet folder). Nothing is converted yet. */
enum fr_status fr_checkpoint_open(const char *path, struct fr_checkpoint **out, struct fr_err *err);
/* As fr_checkpoint_open; a single file with a pin (sha256, 10 or 64 lowercase hex digits; NULL: none) is
 * hashed in the pass that reads it (fr_st_open_ex), so a file changed since the pin was checked is refused
 * (FR_E_INVALID naming the file and both hashes). Folders are not pinned. */
enum fr_status fr_checkpoint_open_pinned(const char *path, const char *pin, struct fr_checkpoint **out,
                                         struct fr_err *err);
void fr_checkpoint_close(struct fr_checkpoint *ck);

/* Where one component's tensors are: a file plus a key prefix ("model.diffusion_model." or ""), and the
 * LoRA files to apply to them as they load (lora.h; NULL: none) as names of space. */
struct fr_wsrc {
  const struct fr_safetensors *st;
  const char *prefix;
  struct fr_lora_set *lora;
  enum fr_lora_space space;
};

/* True if prefix+name exists. */
bool fr_wsrc_has(const struct fr_wsrc *w, const char *name);
/* The entry for prefix+name or NULL. */
const struct fr_st_entry *fr_wsrc_find(const struct fr_wsrc *w, const char *name);

/* Loads prefix+name as a context weight (converted to the compute dtype by fr_ctx_weight), checking
 * its shape: ndim/shape given (shape entries < 0 mean "any"). Errors name the full key and both
 * shapes: "tensor model.diffusion_model.out.2.weight: expected [4, 320, 3, 3], file has [4, 320, 1, 1]"
 * and "tensor ...: missing from <file>". A [C, C, 1, 1] tensor is accepted where [C, C] is expected
 * and vice versa (single-file VAEs store attention projections as 1x1 convolutions). */
enum fr_status fr_wsrc_load(struct fr_ctx *c, const struct fr_wsrc *w, const char *name, int ndim,
                            const int64_t *shape, struct fr_tensor **out, struct fr_err *err);
/* The same, with the loader's other names for the tensor (without prefix: the UNet's SGM and diffusers
 * names), which the LoRA key mapping also tries. With w->lora set, a tensor a LoRA module names is
 * merged in fp32 on the host (fr_lora_patch) before fr_ctx_weight converts it. */
enum fr_status fr_wsrc_load_aka(struct fr_ctx *c, const struct fr_wsrc *w, const char *name,
                                const char *const *aka, int n_aka, int ndim, const int64_t *shape,
                                struct fr_tensor **out, struct fr_err *err);

/* Scanning for non-finite weights. Between fr_weights_scan_begin(s) and fr_weights_scan_end() on one
 * thread, every tensor fr_wsrc_load loads is checked for NaN/inf (fr_tensor_count_nonfinite on the file's
 * values, before any dtype conversion) and counted in *s, which also keeps the first bad tensor's full key.
 * Loading goes on either way: ComfyUI users expect the run to continue; the caller warns. Outside a
 * scan nothing is checked (the benchmarks' loads pay nothing). */
struct fr_weights_scan {
  int tensors;          /* tensors holding at least one NaN/inf */
  int64_t values;       /* NaN/inf values in all of them */
  char first[256];      /* the first such tensor's key, "model.diffusion_model.out.2.weight" */
  int64_t first_values; /* and its count */
};
void fr_weights_scan_begin(struct fr_weights_scan *s);
void fr_weights_scan_end(void);

#endif
