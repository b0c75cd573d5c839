/* TextEncode's encoding of one prompt with one text encoder: ComfyUI's long-prompt windows, prompt
 * weighting and textual-inversion embeddings (nodes/models/prompt.h), and the clip layer
 * (CLIPSetLastLayer). docs/prompts.md describes the syntax. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/alloc.h"
#include "core/safetensors.h"
#include "nodes/models/prompt.h"
#include "nodes/pipeline/pipeline.h"

/* ---- embeddings: <model folder>/embeddings/NAME[.safetensors] ---- */

struct fr__emb_ctx {
  struct fr_node_ctx *nc;
  const char *key; /* "clip_l" or "clip_g": the tensor of an SDXL embedding for this encoder */
};

static bool fr__is_file(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static enum fr_status fr__emb_lookup(void *user, const char *name, int width, float **vecs, int *n_vecs,
                                     struct fr_err *err) {
  struct fr__emb_ctx *ec = user;
  *vecs = NULL;
  *n_vecs = 0;
  if (!name[0] || name[0] == '/' || strstr(name, ".."))
    return fr_errf(err, FR_E_NOTFOUND, "'%s' is not a name inside an embeddings folder", name);
  const char *const *dirs = NULL;
  int nd = fr_node_model_dirs(ec->nc, &dirs);
  char path[4400] = "", looked[2048] = "";
  bool found = false;
  for (int d = 0; d < nd && !found; d++) {
    static const char *const ext[] = {"", ".safetensors"};
    for (int k = 0; k < 2 && !found; k++) {
      snprintf(path, sizeof path, "%s/embeddings/%s%s", dirs[d], name, ext[k]);
      found = fr__is_file(path);
      if (!found && k == 1) {
        size_t l = strlen(looked);
        snprintf(looked + l, sizeof looked - l, "%s%s", l ? ", " : "", path);
      }
    }
  }
  if (!found)
    return fr_errf(err, FR_E_NOTFOUND, "looked at %s", looked[0] ? looked : "no model folder");
  struct fr_safetensors *st = NULL;
  enum fr_status rc = fr_st_open(path, &st, err);
  if (rc) /* not a safetensors file (.pt pickles are not read) */
    return rc == FR_E_NOMEM ? rc : FR_E_FORMAT;
  /* SDXL files: clip_l / clip_g; SD1.x: emb_params (A1111's safetensors) or string_to_param.*; else the
   * only tensor */
  const struct fr_st_entry *e = fr_st_find(st, ec->key);
  if (!e)
    e = fr_st_find(st, "emb_params");
  for (int i = 0; !e && i < st->n; i++)
    if (!strncmp(st->entries[i].name, "string_to_param", 15))
      e = &st->entries[i];
  if (!e && st->n == 1)
    e = &st->entries[0];
  if (!e) {
    fr_st_close(st);
    return fr_errf(err, FR_E_FORMAT, "%s has no %s, emb_params or string_to_param tensor", path, ec->key);
  }
  struct fr_tensor *v = fr_st_view(e), *f = v ? fr_tensor_to_f32(v) : NULL;
  fr_tensor_free(v);
  rc = FR_OK;
  if (!f)
    rc = fr_errf(err, FR_E_NOMEM, "out of memory reading %s", path);
  else if (f->ndim < 1 || f->shape[f->ndim - 1] != width || fr_tensor_numel(f) == 0)
    rc = fr_errf(err, FR_E_SHAPE,
                 "%s: tensor %s has width %lld, this text encoder %d (made for another model)", path, e->name,
                 f->ndim ? (long long)f->shape[f->ndim - 1] : 0LL, width);
  else {
    int64_t n = fr_tensor_numel(f) / width; /* [W] or [N, W] (or [1, N, W]) */
    *vecs = fr_malloc((size_t)n * (size_t)width * sizeof(float));
    if (!*vecs)
      rc = fr_errf(err, FR_E_NOMEM, "out of memory reading %s", path);
    else {
      memcpy(*vecs, f->data, (size_t)n * (size_t)width * sizeof(float));
      *n_vecs = (int)n;
    }
  }
  fr_tensor_free(f);
  fr_st_close(st);
  return rc;
}

static void fr__emb_warn(void *user, const char *msg) {
  struct fr__emb_ctx *ec = user;
  fr_node_warn(ec->nc, "%s", msg);
}

/* ---- encoding ---- */

enum fr_status fr_pipe_encode_prompt(struct fr_node_ctx *nc, struct fr_pipe_comp *m,
                                     const struct fr_clip *enc, const char *text, int32_t pad, int layer,
                                     bool ln, const char *emb_key, struct fr_tensor **hidden,
                                     struct fr_tensor **pooled) {
  struct fr_err err = {{0}};
  *hidden = NULL;
  if (pooled)
    *pooled = NULL;
  struct fr_prompt_tokens pt = {0};
  enum fr_status rc;
  bool syntax = fr_prompt_has_syntax(text);
  if (syntax) {
    struct fr__emb_ctx ec = {nc, emb_key};
    struct fr_prompt_embeddings emb = {fr__emb_lookup, fr__emb_warn, &ec};
    rc = fr_prompt_tokenize(m->tok, text, pad, enc->cfg.vocab, enc->cfg.width, &emb, &pt, &err);
  } else { /* no weights, no embeddings: the windows as they always were */
    rc = fr_tokenizer_chunks(m->tok, text, pad, &pt.ids, &pt.n_windows, &err);
  }
  if (rc)
    return fr_node_fail(nc, rc, "%s", err.msg);
  int nw = pt.n_windows, nb = nw + (pt.has_weights ? 1 : 0);
  if (pt.has_weights) { /* one more window: the empty prompt (BOS, EOS, padding), ComfyUI's z_empty */
    int32_t *ids = fr_realloc(pt.ids, (size_t)nb * FR_CLIP_CTX * sizeof *ids);
    if (!ids) {
      fr_prompt_tokens_free(&pt);
      return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
    }
    pt.ids = ids;
    int32_t *e = ids + (size_t)nw * FR_CLIP_CTX;
    e[0] = FR_CLIP_BOS, e[1] = FR_CLIP_EOS;
    for (int i = 2; i < FR_CLIP_CTX; i++)
      e[i] = pad;
  }
  struct fr_clip_out o = {0};
  if (layer < -enc->cfg.layers) { /* beyond the first layer: ComfyUI falls back to the final output */
    layer = -1;
    ln = true;
  }
  bool use_last = layer == -1 && ln, use_pen = layer == -2;
  struct fr_clip_encode_opts eo = {
      .extra = pt.extra, .n_extra = pt.n_extra, .hidden_layer = use_last || use_pen ? 0 : layer};
  rc = fr_clip_encode_ex(m->c, enc, pt.ids, nb, FR_CLIP_CTX, &eo, &o, &err);
  if (rc) {
    fr_prompt_tokens_free(&pt);
    fr_clip_out_free(&o);
    return fr_node_fail(nc, rc, "%s", err.msg);
  }
  struct fr_tensor *h = use_last ? o.last : use_pen ? o.penultimate : o.hidden, *hl = NULL;
  if (ln && !use_last)
    h = hl = fr_layer_norm(m->c, h, enc->lnf_w, enc->lnf_b, enc->cfg.ln_eps);
  *hidden = fr_ctx_download(m->c, h); /* [nb, 77, W] */
  fr_tensor_free(hl);
  if (pooled) { /* the first window's, unweighted (ComfyUI's first_pooled) */
    struct fr_tensor *p = o.projected ? o.projected : o.pooled;
    struct fr_tensor *first = fr_slice(m->c, p, 0, 0, 1);
    *pooled = fr_ctx_download(m->c, first);
    fr_tensor_free(first);
  }
  fr_clip_out_free(&o);
  rc = fr_ctx_status(m->c, &err);
  if (rc || !*hidden || (pooled && !*pooled)) {
    fr_ctx_clear(m->c);
    fr_tensor_free(*hidden);
    *hidden = NULL;
    if (pooled) {
      fr_tensor_free(*pooled);
      *pooled = NULL;
    }
    fr_prompt_tokens_free(&pt);
    return rc ? fr_node_fail(nc, rc, "%s", err.msg) : fr_node_fail(nc, FR_E_NOMEM, "out of memory");
  }
  int64_t W = (*hidden)->shape[2];
  if (pt.has_weights) { /* z' = z_empty + w (z - z_empty) where w != 1, per position of each window */
    float *z = (*hidden)->data;
    const float *ze = z + (size_t)nw * FR_CLIP_CTX * (size_t)W;
    for (int b = 0; b < nw; b++)
      for (int j = 0; j < FR_CLIP_CTX; j++) {
        double w = pt.weights[b * FR_CLIP_CTX + j];
        if (w == 1.0)
          continue;
        float *zr = z + ((size_t)b * FR_CLIP_CTX + (size_t)j) * (size_t)W;
        for (int64_t k = 0; k < W; k++)
          zr[k] =
              (float)(ze[(size_t)j * (size_t)W + k] + w * ((double)zr[k] - ze[(size_t)j * (size_t)W + k]));
      }
  }
  fr_prompt_tokens_free(&pt);
  int64_t shape[3] = {1, (int64_t)nw * FR_CLIP_CTX, W}; /* the windows side by side, the empty one dropped */
  if (nb != nw) {
    struct fr_tensor *t = fr_tensor_f32(3, shape);
    if (t)
      memcpy(t->data, (*hidden)->data, fr_tensor_nbytes(t));
    fr_tensor_free(*hidden);
    *hidden = t;
    if (!t) {
      if (pooled) {
        fr_tensor_free(*pooled);
        *pooled = NULL;
      }
      return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
    }
  } else {
    fr_tensor_reshape(*hidden, 3, shape);
  }
  return FR_OK;
}
