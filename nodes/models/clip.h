/* CLIP text encoders: CLIP-L (SD1.5's encoder, SDXL's first) and OpenCLIP-G (SDXL's second, the refiner's
 * only one), written once against kernels/ops.h.
 *
 * Both are pre-LayerNorm transformers with causal self-attention over 77 tokens (transformers'
 * CLIPTextModel): token + position embeddings (positions 0..76; stored position_ids are ignored, many
 * community files carry damaged ones), N layers of x += attn(ln1(x)); x += mlp(ln2(x)), a final LayerNorm.
 *
 * Two key layouts are read, and the architecture (width, layers, MLP width, vocabulary, context,
 * projection) is detected from keys and shapes:
 *   - transformers' (HF): <p>text_model.embeddings.token_embedding.weight, ...encoder.layers.N.self_attn.
 *     {q,k,v,out}_proj, mlp.fc1/fc2, final_layer_norm, and <p>text_projection.weight [P, W] when projected;
 *     the variant without the "text_model." level is accepted too;
 *   - OpenCLIP's: <p>token_embedding.weight, positional_embedding,
 * transformer.resblocks.N.attn.in_proj_weight (q, k, v fused [3W, W]), mlp.c_fc/c_proj, ln_final,
 * text_projection stored as [W, P] (x @ proj). Activation: hidden_act from a diffusers config.json; otherwise
 * quick_gelu for the HF layout (SD1.5 and SDXL's CLIP-L are) and exact gelu for the OpenCLIP layout. Heads:
 * config.json's num_attention_heads when there is one; otherwise width / 64 (every real CLIP: 768 -> 12, 1024
 * -> 16, 1280 -> 20). Widths under 256 are the tiny test models, whose head width follows the fixtures'
 * convention: 8 in the HF layout (sd15-tiny's config.json: width 32, 4 heads; the sdxl_text_encoder_1 golden
 * agrees) and 16 in the OpenCLIP layout (the sdxl_text_encoder_2 golden matches 2 heads and no other count).
 */
#ifndef FR_MODELS_CLIP_H
#define FR_MODELS_CLIP_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "kernels/ops.h"
#include "nodes/models/weights.h"

/* Which of a checkpoint's text encoders: by role, as ComfyUI names them. */
enum fr_clip_role {
  FR_CLIP_ROLE_L, /* SD1.5's encoder, SDXL base's first: cond_stage_model.transformer.*,
                     conditioner.embedders.0.transformer.*, diffusers text_encoder/ */
  FR_CLIP_ROLE_G, /* SDXL base's second, the refiner's only: conditioner.embedders.1.model.* (base),
                     conditioner.embedders.0.model.* (refiner), diffusers text_encoder_2/ */
};

enum fr_clip_act { FR_CLIP_ACT_QUICK_GELU, FR_CLIP_ACT_GELU };
enum fr_clip_layout { FR_CLIP_LAYOUT_HF, FR_CLIP_LAYOUT_OPENCLIP };

struct fr_clip_config {
  enum fr_clip_layout layout;
  int width;  /* W: 768 (L), 1280 (G) */
  int layers; /* 12 (L), 32 (G) */
  int heads;  /* 12 (L), 20 (G) */
  int mlp;    /* 3072 (L), 5120 (G) */
  int vocab;  /* 49408 */
  int ctx;    /* 77 */
  int proj;   /* P: text_projection output width, 0 when the file has none */
  enum fr_clip_act act;
  float ln_eps;    /* 1e-5 */
  int32_t eos_id;  /* 49407: the pooled output is taken at its first occurrence */
  bool eos_argmax; /* transformers' legacy rule (configs with eos_token_id 2): argmax of the ids instead */
};

struct fr_clip_layer {
  struct fr_tensor *ln1_w, *ln1_b, *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w, *o_b; /* [W], [W, W], [W] */
  struct fr_tensor *ln2_w, *ln2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b; /* [W], [M, W], [M], [W, M], [W] */
};

struct fr_clip {
  struct fr_clip_config cfg;
  struct fr_tensor *tok_emb;       /* [V, W] */
  struct fr_tensor *pos_emb;       /* [C, W] */
  struct fr_tensor *lnf_w, *lnf_b; /* [W] */
  struct fr_tensor *proj;          /* [P, W] (as a linear weight, whatever the file's layout) or NULL */
  struct fr_clip_layer *layer;
  char where[512]; /* file and key prefix, for messages */
};

/* Finds the encoder for role in ck, detects its architecture and loads its weights into context c
 * (converted to the compute dtype). Errors: FR_E_NOTFOUND when ck has no such encoder (message lists the
 * prefixes tried), FR_E_NOTFOUND / FR_E_SHAPE naming a missing or mis-shaped tensor and both shapes,
 * FR_E_UNSUPPORTED for an unknown hidden_act, FR_E_NOMEM. Free with fr_clip_free. */
enum fr_status fr_clip_load(struct fr_ctx *c, const struct fr_checkpoint *ck, enum fr_clip_role role,
                            struct fr_clip **out, struct fr_err *err);
/* The same from an explicit weight source: w names the file and the key prefix that comes before
 * "text_model." / "token_embedding.weight" (e.g. "conditioner.embedders.0.transformer."); config_json is
 * a diffusers config.json text or NULL. */
enum fr_status fr_clip_load_from(struct fr_ctx *c, const struct fr_wsrc *w, const char *config_json,
                                 struct fr_clip **out, struct fr_err *err);
void fr_clip_free(struct fr_clip *m); /* NULL is fine */

/* Outputs of one forward pass; context tensors owned by the caller (fr_clip_out_free). */
struct fr_clip_out {
  struct fr_tensor *last;        /* [B, T, W] last hidden state, after the final LayerNorm */
  struct fr_tensor *penultimate; /* [B, T, W] hidden_states[-2]: the input of the last layer, no final LN
                                    (what SDXL and clip-skip 2 use) */
  struct fr_tensor *pooled;      /* [B, W] final-LN state at the EOS token (transformers' pooler_output) */
  struct fr_tensor *projected;   /* [B, P] pooled @ text_projection (text_embeds); NULL without projection */
  struct fr_tensor *hidden;      /* [B, T, W] fr_clip_encode_ex's hidden_layer output, else NULL */
};

/* Runs the encoder over ids [B, T] (host, row-major; T <= ctx, normally 77; every id < vocab). */
enum fr_status fr_clip_encode(struct fr_ctx *c, const struct fr_clip *m, const int32_t *ids, int batch,
                              int len, struct fr_clip_out *out, struct fr_err *err);

/* Options of fr_clip_encode_ex. */
struct fr_clip_encode_opts {
  /* Textual-inversion vectors, host F32 [n_extra, W]: an id vocab + k takes row k in place of a token
   * embedding (ComfyUI's embedding:NAME). */
  const float *extra;
  int n_extra;
  /* hidden_layer < 0: also return in out->hidden the output of layer (layers + hidden_layer), before the
   * final LayerNorm (-1: the last layer's output, -2: the penultimate state); ComfyUI's clip layer index.
   * 0: none. */
  int hidden_layer;
};
/* fr_clip_encode with options (NULL: none). Ids may go up to vocab + n_extra - 1. A hidden_layer beyond
 * the model's layers is FR_E_INVALID. out->hidden is set only when asked for. */
enum fr_status fr_clip_encode_ex(struct fr_ctx *c, const struct fr_clip *m, const int32_t *ids, int batch,
                                 int len, const struct fr_clip_encode_opts *opts, struct fr_clip_out *out,
                                 struct fr_err *err);
void fr_clip_out_free(struct fr_clip_out *o);

#endif
