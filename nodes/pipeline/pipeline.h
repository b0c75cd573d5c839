/* The pipeline node types (loaders, TextEncode, EmptyLatent, Sampler, Refiner, ControlNet, VAE nodes,
 * latent and image-data files) and the helpers they share: checkpoint objects, the engine-wide model
 * cache, and CONDITIONING values. docs/pipelines.md describes the nodes and the CONDITIONING fields. */
#ifndef FR_PIPELINE_H
#define FR_PIPELINE_H

#include <stdbool.h>

#include "core/node.h"
#include "kernels/ops.h"
#include "nodes/models/clip.h"
#include "nodes/models/controlnet.h"
#include "nodes/models/tokenizer.h"
#include "nodes/models/unet.h"
#include "nodes/models/vae.h"

extern const struct fr_node_spec fr_node_lora_loader, fr_node_lora_loader_model_only;
extern const struct fr_node_spec fr_node_checkpoint_loader, fr_node_controlnet_loader, fr_node_text_encode,
    fr_node_empty_latent, fr_node_sampler, fr_node_refiner, fr_node_controlnet_apply, fr_node_vae_decode,
    fr_node_vae_encode, fr_node_save_latent, fr_node_load_latent, fr_node_save_image_data,
    fr_node_load_image_data;
/* Add-on loaders and model settings (addons.c, model_sampling.c). */
extern const struct fr_node_spec fr_node_model_sampling_discrete, fr_node_vae_loader,
    fr_node_clip_set_last_layer, fr_node_unet_loader, fr_node_clip_loader;
/* inpaint.c and batch.c */
extern const struct fr_node_spec fr_node_vae_encode_for_inpaint, fr_node_set_latent_noise_mask,
    fr_node_inpaint_model_conditioning, fr_node_repeat_latent_batch, fr_node_latent_from_batch,
    fr_node_image_batch, fr_node_image_from_batch;

/* A patch on a model handle: a LoRA file and its strength for this component (LoraLoader). */
struct fr_pipe_patch {
  char *path; /* the LoRA file, as resolved by the engine */
  double strength;
};

/* A MODEL, CLIP, VAE or CONTROL_NET object: nothing but where the weights are and which patches go on
 * them. The weights are loaded on first use through fr_pipe_get, so a run whose consumers are all cached
 * opens no file. */
struct fr_pipe_obj {
  struct fr_object o;
  char *path;      /* checkpoint file or diffusers folder, as resolved by the engine */
  char *tokenizer; /* CLIP: tokenizer file/folder given to the loader, or NULL (searched) */
  /* the loader's pin of path (sha256 hex, fr_in_pin), checked again as the file is read; or NULL */
  char *pin;
  /* MODEL: what the UNet predicts, set by ModelSamplingDiscrete (model_sampling.c): FR_PIPE_SAMPLING_AUTO
   * is what the checkpoint says (eps unless it carries a v-prediction marker) */
  int sampling;
  bool zsnr;      /* MODEL: zero-terminal-SNR rescaled schedule */
  int clip_layer; /* CLIP: CLIPSetLastLayer's stop_at_clip_layer (-1 last, -2 penultimate ...); 0: default */
  int n_patches;   /* applied in order on top of the checkpoint's weights */
  struct fr_pipe_patch *patches;
};
enum { FR_PIPE_SAMPLING_AUTO, FR_PIPE_SAMPLING_EPS, FR_PIPE_SAMPLING_V };

/* Creates an object of socket type type (FR_T_MODEL ...) for path; NULL when out of memory. */
struct fr_pipe_obj *fr_pipe_obj_new(const char *type, const char *path, const char *tokenizer);
/* Sets o's pin (copied; NULL: none). False when out of memory. */
bool fr_pipe_obj_set_pin(struct fr_pipe_obj *o, const char *pin);
/* A copy of o (same file, same settings) for a node that changes one setting; NULL when out of memory. */
struct fr_pipe_obj *fr_pipe_obj_clone(const struct fr_pipe_obj *o);
/* A new object: base plus one more patch (LoRA file lora, strength); NULL when out of memory. */
struct fr_pipe_obj *fr_pipe_obj_patched(const struct fr_pipe_obj *base, const char *lora, double strength);

/* One loaded component, owned by the engine's model cache (keyed by component + path + device + dtype):
 * valid until the engine is freed. Exactly one of the model pointers is set for the kind asked for,
 * except CLIP where l and/or g are set (SD1.5: l; SDXL: l and g; refiner: g). */
struct fr_pipe_comp {
  struct fr_ctx *c; /* the engine-wide compute context of (device, this component's dtype) */
  struct fr_unet *unet;
  struct fr_vae *vae;
  float vae_scale; /* latent scaling factor (0.18215 SD1.x, 0.13025 SDXL) */
  bool vae_scale_guessed; /* a bare VAE file says nothing: SD1.x's, unless a latent says it is SDXL's */
  struct fr_clip *l, *g;
  struct fr_tokenizer *tok;
  struct fr_controlnet *cn;
  uint64_t bytes; /* host heap + device memory its load took (out-of-memory recovery reports it) */
  /* private */
  struct fr_checkpoint *ck; /* the shared, opened checkpoint (sck) */
  struct fr__pckpt *sck;
  struct fr__pctx *pc;
};

/* The dtype a component computes in for a run in run_dtype ("f32", "f16", "bf16"; NULL or "": f32):
 * the run's for MODEL, CLIP and CONTROL_NET; for the VAE bf16 when the run is f16 (the SDXL VAE
 * overflows in fp16; a device without bf16 then gets f32), else the run's. */
const char *fr_pipe_comp_dtype(const char *run_dtype, const char *type);

/* The component of object value v (of socket type `type`), loading it if this engine has not yet.
 * Loading prints "flowrun: loading <what> from <path>" on stderr (an info event) when it builds the
 * component from the file. A patched component (LoRA) is derived from the checkpoint the engine already
 * holds open when it does ("patching <what> of <path> with ...", no "loading" event), so changing a
 * LoRA or a strength does not open the checkpoint again; one patched variant per component is kept
 * beside the plain one. Unmatched LoRA modules are a warning event, a LoRA for another base an error.
 * Errors are recorded on the node (fr_node_fail) and returned. */
enum fr_status fr_pipe_get(struct fr_node_ctx *nc, const char *input, const char *type,
                           struct fr_pipe_comp **out);
/* The same for a ControlNet file named by path (ControlNet applications inside CONDITIONING). */
enum fr_status fr_pipe_get_controlnet(struct fr_node_ctx *nc, const char *path, struct fr_pipe_comp **out);

/* The compute context of the node's device (created on first use, kept by the engine). */
enum fr_status fr_pipe_ctx(struct fr_node_ctx *nc, struct fr_ctx **out);
/* Device memory of the engine's compute contexts (every dtype) summed, for metrics; from the thread that
 * runs the engine, between runs. FR_E_NOTFOUND: no context yet, or the backend does not count memory. */
enum fr_status fr_pipe_engine_mem(struct fr_engine *e, struct fr_ctx_mem *out);
/* The components resident in the engine's model cache: fn(user, type, file base name, bytes of the file, or
 * -1 for a folder (diffusers) or a file gone) for each. */
void fr_pipe_engine_resident(struct fr_engine *e,
                             void (*fn)(void *user, const char *type, const char *file, int64_t bytes),
                             void *user);

/* Encodes the H x W region at (oy, ox) of image im (host F32 [B, H0, W0, C >= 3] in [0, 1]; H, W multiples
 * of 8) with VAE m: *out = the latent distribution's mean times the VAE's scaling factor, host F32
 * [B, 4, H/8, W/8] (the caller frees it). Errors are recorded on the node. */
enum fr_status fr_pipe_vae_encode(struct fr_node_ctx *nc, struct fr_pipe_comp *m, const struct fr_tensor *im,
                                  int64_t oy, int64_t ox, int64_t H, int64_t W, struct fr_tensor **out);

/* ---- inpainting (inpaint.c) ---- */

/* torch.nn.functional.interpolate(mode="bilinear", align_corners=False) of n planes [n, H, W] to
 * [n, h, w] (half-pixel centres, source index clamped at 0, no antialiasing), in float as torch's CPU
 * kernel. */
void fr_pipe_bilinear(const float *in, int64_t n, int64_t H, int64_t W, int64_t h, int64_t w, float *out);

/* ComfyUI's prepare_mask: the noise mask m (host F32 [Bm, 1, Hm, Wm] or [Bm, Hm, Wm]) resized bilinearly
 * to the latent's h x w, repeated over its C channels and to its batch B (cut to B when Bm > B):
 * *out host F32 [B, C, h, w]. NULL on allocation failure or a mask that is not 3- or 4-D. */
struct fr_tensor *fr_pipe_prepare_mask(const struct fr_tensor *m, int64_t B, int64_t C, int64_t h, int64_t w);

/* The inpainting model's extra input channels (ComfyUI's concat_cond with concat_keys ("mask",
 * "masked_image")): for a UNet whose conv_in takes C + 5 channels, [B, 5, h, w] = the mask (rounded) and
 * the masked image's latent. From cond's "concat_mask" and "concat_latent_image" (InpaintModelConditioning)
 * when present, else the latent's noise mask (prepared, [B, C, h, w]; channel 0 used) and the sampled
 * latent itself, else a mask of ones and ComfyUI's latent of a blank image. Returns NULL and sets err on
 * a shape that does not fit. */
struct fr_tensor *fr_pipe_concat_cond(const struct fr_value *cond, const struct fr_tensor *noise_mask,
                                      const struct fr_tensor *latent, struct fr_err *err);

/* Observing the Sampler from tests: when set, called for every model evaluation of a Sampler/Refiner
 * with k (0, 1, ...), sigma, the state the sampler passed in (x, n floats VE space [B, C, h, w]), the
 * input after the noise-mask step (x_in: x where the mask is 1, the original latent re-noised to sigma
 * where it is 0), the UNet's whole input (host [NB, Cin, h, w]: the scaled x_in per CFG half, plus the
 * inpainting model's concat channels), and the denoised result after the mask step. Not thread-safe:
 * set it before a run, clear it (NULL) after. */
struct fr_pipe_observer {
  void (*eval)(void *user, int k, double sigma, const float *x, const float *x_in,
               const struct fr_tensor *unet_in, const float *denoised, int64_t n);
  void *user;
};
void fr_pipe_set_observer(const struct fr_pipe_observer *o);

/* Encodes a prompt with text encoder enc of component m (prompt_encode.c): ComfyUI's 77-token windows,
 * its (text:1.2) weighting and embedding:NAME (looked for in <model folder>/embeddings/, tensor emb_key
 * "clip_l" / "clip_g" of SDXL files) when the prompt uses that syntax, else the windows exactly as
 * fr_tokenizer_chunks makes them. layer: the clip layer (-1 the last, -2 the penultimate, ...); ln: the
 * final LayerNorm applied to it. *hidden: host [1, windows * 77, W]; *pooled (may be NULL): host [1, P],
 * the first window's projected (else plain) pooled output. Errors are recorded on the node. */
enum fr_status fr_pipe_encode_prompt(struct fr_node_ctx *nc, struct fr_pipe_comp *m,
                                     const struct fr_clip *enc, const char *text, int32_t pad, int layer,
                                     bool ln, const char *emb_key, struct fr_tensor **hidden,
                                     struct fr_tensor **pooled);

/* Sampling shared by Sampler and Refiner (sampler.c). */
struct fr_pipe_sample_args {
  uint64_t seed;
  int steps, start_step, end_step;
  double cfg, denoise;
  const char *sampler, *scheduler;
  bool add_noise, leftover_noise;
  const struct fr_tensor *noise; /* [B, 4, h, w] or NULL: seeded */
};
enum fr_status fr_pipe_sample(struct fr_node_ctx *nc, const struct fr_pipe_sample_args *a);

/* The prediction type (enum fr_prediction, nodes/sampling/prediction.h) and zero-terminal-SNR flag for the
 * MODEL object o whose component is m: ModelSamplingDiscrete's setting, else what the checkpoint says (a
 * `v_pred` / `ztsnr` marker key, a diffusers scheduler_config.json's prediction_type and
 * rescale_betas_zero_snr), else eps. A detected v-prediction is reported as an info event. */
void fr_pipe_model_sampling(struct fr_node_ctx *nc, const struct fr_pipe_obj *o, const struct fr_pipe_comp *m,
                            int *prediction, bool *zsnr);

extern const char *const fr_pipe_sampler_names[];

#endif
