/* Internals shared by the UNet (unet.c, unet_load.c) and the ControlNet (controlnet.c), which is a copy of
 * the UNet's encoder. Not a public interface. */
#ifndef FR_MODELS_UNET_IMPL_H
#define FR_MODELS_UNET_IMPL_H

#include "core/alloc.h"
#include "nodes/models/unet.h"

/* ResBlock: GN+SiLU, conv3x3, + Linear(SiLU(emb)), GN+SiLU, conv3x3, + x or a 1x1 skip conv. */
struct fr__ures {
  struct fr_tensor *n1w, *n1b, *c1w, *c1b, *ew, *eb, *n2w, *n2b, *c2w, *c2b;
  struct fr_tensor *skw, *skb; /* NULL when in and out channels are equal */
};

struct fr__uattn {
  struct fr_tensor *q, *k, *v, *o, *ob;
};

/* BasicTransformerBlock: self-attention, cross-attention, GEGLU feed-forward, each pre-LayerNorm. */
struct fr__utblock {
  struct fr_tensor *n1w, *n1b, *n2w, *n2b, *n3w, *n3b;
  struct fr__uattn a1, a2;
  struct fr_tensor *ff0w, *ff0b, *ff2w, *ff2b;
};

/* SpatialTransformer / Transformer2DModel. proj_in/proj_out are held as [C, C] matrices in both
 * layouts (a 1x1 convolution is the same linear map per pixel). */
struct fr__uxf {
  int ch, depth, heads;
  struct fr_tensor *nw, *nb, *piw, *pib, *pow, *pob;
  struct fr__utblock *blk; /* [depth] */
};

/* One input or output block: a ResBlock, optionally a transformer, optionally a down/up sampling conv. */
struct fr__ublock {
  struct fr__ures *res;
  struct fr__uxf *xf;
  struct fr_tensor *sw, *sb; /* Downsample (stride 2) or Upsample conv; NULL if none */
};

struct fr_unet_impl {
  struct fr_arena *arena;   /* the structs above */
  struct fr_tensor **owned; /* every loaded weight, freed with the model */
  int n_owned, cap_owned;
  struct fr_tensor *te0w, *te0b, *te2w, *te2b; /* time_embed */
  struct fr_tensor *le0w, *le0b, *le2w, *le2b; /* label_emb (SDXL); NULL otherwise */
  struct fr_tensor *cinw, *cinb;               /* input_blocks.0.0 */
  struct fr__ublock in[FR_UNET_MAX_SKIPS];     /* in[1 .. n_in-1]; in[0] is conv_in */
  int n_in;
  struct fr__ures *mres0, *mres1;
  struct fr__uxf *mxf;                      /* NULL when the middle block has no attention */
  struct fr__ublock out[FR_UNET_MAX_SKIPS]; /* decoder; n_out = 0 in a ControlNet */
  int n_out;
  struct fr_tensor *onw, *onb, *ocw, *ocb; /* out.0 (GroupNorm), out.2 (conv) */
};

/* Where the weights come from: a file + prefix, and whether the keys are diffusers' (down_blocks...) or
 * CompVis/SGM (input_blocks...). Model code names every tensor by its SGM name; fr__unet_key maps it. */
struct fr__usrc {
  struct fr_wsrc w;
  bool diffusers;
  int nr; /* res blocks per level, needed to map block indices */
  struct fr_ctx *c;
  struct fr_unet_impl *im;
  struct fr_err *err;
};

/* Maps an SGM name ("input_blocks.4.1.proj_in.weight") to the file's key (without the prefix). Returns
 * false when the name has no counterpart. */
bool fr__unet_key(const struct fr__usrc *s, const char *sgm, char *out, size_t n);
const struct fr_st_entry *fr__unet_find(const struct fr__usrc *s, const char *sgm);
/* Loads a tensor by SGM name, shape-checked (entries < 0: any), registered in s->im->owned. */
enum fr_status fr__unet_load_t(struct fr__usrc *s, const char *sgm, int ndim, const int64_t *shape,
                               struct fr_tensor **out);
/* Detects the key layout and res-block count of the weights under s->w (sets s->diffusers, s->nr). */
enum fr_status fr__unet_detect_layout(struct fr__usrc *s);
/* Detects the encoder's architecture (everything in the config but out_channels). */
enum fr_status fr__unet_detect(struct fr__usrc *s, struct fr_unet_config *cfg);
/* Loads time/label embeddings, conv_in, the input blocks and the middle block. */
enum fr_status fr__unet_load_encoder(struct fr__usrc *s, const struct fr_unet_config *cfg);
/* Channels of each skip connection in push order (conv_in first); returns their count. */
int fr__unet_skip_channels(const struct fr_unet_config *cfg, int *out);
struct fr_unet_impl *fr__unet_impl_new(void);
void fr__unet_impl_free(struct fr_unet_impl *im);

/* The timestep of a forward at batch B: cond->t_sin [B or 1, model_channels] when given, else t [B] or [1].
 * FR_OK, or FR_E_SHAPE with "<who>: t_sin is ..." / "<who>: t is ..." in err. */
enum fr_status fr__unet_check_t(const char *who, const struct fr_unet_config *cfg, const struct fr_tensor *t,
                                const struct fr_unet_cond *cond, int64_t B, struct fr_err *err);
/* SiLU(time embedding [+ label embedding]) [B or 1, time_embed_dim], what every ResBlock consumes. */
struct fr_tensor *fr__unet_embed(struct fr_ctx *c, const struct fr_unet_impl *im,
                                 const struct fr_unet_config *cfg, const struct fr_tensor *t,
                                 const struct fr_unet_cond *cond);
/* Encoder + middle block. hs[0 .. n_skips-1] receive the skip tensors (owned by the caller), *mid the
 * middle block's output. hint (ControlNet) is added to conv_in's output, NULL for the UNet. On failure
 * (sticky context error) every output is NULL. */
void fr__unet_encode(struct fr_ctx *c, const struct fr_unet_impl *im, const struct fr_unet_config *cfg,
                     const struct fr_tensor *x, const struct fr_tensor *emb, const struct fr_tensor *context,
                     const struct fr_tensor *hint, struct fr_tensor **hs, struct fr_tensor **mid);

#endif
