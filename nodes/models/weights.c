#include "nodes/models/weights.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/alloc.h"
#include "core/file.h"

/* A component's config.json (small text), or NULL when absent or unreadable. */
static char *fr__read_config(const char *path) {
  char *text = NULL;
  size_t len;
  return fr_read_file(path, (size_t)1 << 24, &text, &len, NULL) == FR_OK ? text : NULL;
}

static bool fr__is_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Opens <dir>/<sub>/<one of the usual weight file names> if present. A folder that exists but whose
 * weights are not safetensors (e.g. only .bin) is reported, since flowrun cannot read pickles. */
static enum fr_status fr__open_component(const char *dir, const char *sub, struct fr_safetensors **st,
                                         char **config, struct fr_err *err) {
  static const char *const names[] = {"diffusion_pytorch_model.safetensors", "model.safetensors",
                                      "diffusion_pytorch_model.fp16.safetensors", "model.fp16.safetensors"};
  char path[4096];
  snprintf(path, sizeof path, "%s%s%s", dir, sub[0] ? "/" : "", sub);
  struct stat sb;
  if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
    return FR_OK; /* component absent */
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char file[4200];
    snprintf(file, sizeof file, "%s/%s", path, names[i]);
    if (!fr__is_file(file))
      continue;
    enum fr_status rc = fr_st_open(file, st, err);
    if (rc)
      return rc;
    char cfg[4200];
    snprintf(cfg, sizeof cfg, "%s/config.json", path);
    *config = fr__read_config(cfg);
    return FR_OK;
  }
  char bin[4200];
  snprintf(bin, sizeof bin, "%s/diffusion_pytorch_model.bin", path);
  if (fr__is_file(bin))
    return fr_errf(err, FR_E_UNSUPPORTED, "%s: only .bin (pickle) weights found; flowrun reads safetensors", path);
  return FR_OK;
}

enum fr_status fr_checkpoint_open(const char *path, struct fr_checkpoint **out, struct fr_err *err) {
  return fr_checkpoint_open_pinned(path, NULL, out, err);
}

enum fr_status fr_checkpoint_open_pinned(const char *path, const char *pin, struct fr_checkpoint **out,
                                         struct fr_err *err) {
  *out = NULL;
  struct stat sb;
  if (stat(path, &sb) != 0)
    return fr_errf(err, FR_E_NOTFOUND, "%s: no such file or folder", path);
  struct fr_checkpoint *ck = fr_calloc(1, sizeof *ck);
  if (!ck)
    return fr_errf(err, FR_E_NOMEM, "out of memory opening %s", path);
  ck->path = fr_strdup(path);
  if (!ck->path) {
    fr_free(ck);
    return fr_errf(err, FR_E_NOMEM, "out of memory opening %s", path);
  }
  enum fr_status rc = FR_OK;
  if (S_ISREG(sb.st_mode)) {
    ck->layout = FR_LAYOUT_SINGLE;
    struct fr_st_open_opts so = {.sha256 = pin};
    rc = fr_st_open_ex(path, &so, &ck->file, err);
  } else if (S_ISDIR(sb.st_mode)) {
    ck->layout = FR_LAYOUT_DIFFUSERS;
    ck->dir = fr_strdup(path);
    char mi[4200];
    snprintf(mi, sizeof mi, "%s/model_index.json", path);
    if (!ck->dir) {
      rc = fr_errf(err, FR_E_NOMEM, "out of memory opening %s", path);
    } else if (fr__is_file(mi)) { /* a whole pipeline */
      rc = fr__open_component(path, "unet", &ck->unet, &ck->unet_config, err);
      if (!rc)
        rc = fr__open_component(path, "vae", &ck->vae, &ck->vae_config, err);
      if (!rc)
        rc = fr__open_component(path, "text_encoder", &ck->text_encoder, &ck->text_encoder_config, err);
      if (!rc)
        rc = fr__open_component(path, "text_encoder_2", &ck->text_encoder_2, &ck->text_encoder_2_config, err);
      if (!rc)
        rc = fr__open_component(path, "controlnet", &ck->controlnet, &ck->controlnet_config, err);
      if (!rc && !ck->unet && !ck->vae && !ck->text_encoder && !ck->text_encoder_2)
        rc = fr_errf(err, FR_E_NOTFOUND, "%s: model_index.json found but no unet/, vae/ or text_encoder/ weights",
                     path);
    } else { /* a single component folder: config.json says which */
      struct fr_safetensors *st = NULL;
      char *config = NULL;
      rc = fr__open_component(path, "", &st, &config, err);
      if (!rc && !st)
        rc = fr_errf(err, FR_E_NOTFOUND,
                     "%s: neither model_index.json (a diffusers pipeline) nor config.json with "
                     "diffusion_pytorch_model.safetensors (one component)",
                     path);
      if (!rc) {
        const char *cls = config ? strstr(config, "\"_class_name\"") : NULL;
        if (cls && strstr(cls, "ControlNet")) {
          ck->controlnet = st, ck->controlnet_config = config;
        } else if (cls && strstr(cls, "AutoencoderKL")) {
          ck->vae = st, ck->vae_config = config;
        } else if (cls && strstr(cls, "UNet2DConditionModel")) {
          ck->unet = st, ck->unet_config = config;
        } else if (config && strstr(config, "\"CLIPText")) {
          ck->text_encoder = st, ck->text_encoder_config = config;
        } else {
          fr_st_close(st);
          fr_free(config);
          rc = fr_errf(err, FR_E_UNSUPPORTED, "%s/config.json: unknown model class (expected a UNet, VAE, "
                                              "ControlNet or CLIP text encoder)", path);
        }
      }
    }
  } else {
    rc = fr_errf(err, FR_E_INVALID, "%s: not a file or folder", path);
  }
  if (rc) {
    fr_checkpoint_close(ck);
    return rc;
  }
  *out = ck;
  return FR_OK;
}

void fr_checkpoint_close(struct fr_checkpoint *ck) {
  if (!ck)
    return;
  fr_st_close(ck->file);
  fr_st_close(ck->unet);
  fr_st_close(ck->vae);
  fr_st_close(ck->text_encoder);
  fr_st_close(ck->text_encoder_2);
  fr_st_close(ck->controlnet);
  fr_free(ck->unet_config);
  fr_free(ck->vae_config);
  fr_free(ck->text_encoder_config);
  fr_free(ck->text_encoder_2_config);
  fr_free(ck->controlnet_config);
  fr_free(ck->dir);
  fr_free((char *)ck->path);
  fr_free(ck);
}

const struct fr_st_entry *fr_wsrc_find(const struct fr_wsrc *w, const char *name) {
  if (!w->st)
    return NULL;
  char key[1024];
  int n = snprintf(key, sizeof key, "%s%s", w->prefix ? w->prefix : "", name);
  if (n < 0 || (size_t)n >= sizeof key)
    return NULL;
  return fr_st_find(w->st, key);
}

bool fr_wsrc_has(const struct fr_wsrc *w, const char *name) { return fr_wsrc_find(w, name) != NULL; }

/* [C, C] vs [C, C, 1, 1]: the same linear map, stored as a matrix or as a 1x1 convolution. */
static bool fr__same_but_1x1(int ndim, const int64_t *shape, const struct fr_st_entry *e) {
  if (ndim == 2 && e->ndim == 4 && e->shape[2] == 1 && e->shape[3] == 1)
    return (shape[0] < 0 || shape[0] == e->shape[0]) && (shape[1] < 0 || shape[1] == e->shape[1]);
  if (ndim == 4 && e->ndim == 2 && shape[2] == 1 && shape[3] == 1)
    return (shape[0] < 0 || shape[0] == e->shape[0]) && (shape[1] < 0 || shape[1] == e->shape[1]);
  return false;
}

/* The scan in progress on this thread (fr_weights_scan_begin), or NULL. Thread-local so that two engines
 * loading at once on two threads each count their own tensors. */
static _Thread_local struct fr_weights_scan *fr__scan;

void fr_weights_scan_begin(struct fr_weights_scan *s) {
  memset(s, 0, sizeof *s);
  fr__scan = s;
}

void fr_weights_scan_end(void) {
  fr__scan = NULL;
}

enum fr_status fr_wsrc_load(struct fr_ctx *c, const struct fr_wsrc *w, const char *name, int ndim,
                            const int64_t *shape, struct fr_tensor **out, struct fr_err *err) {
  return fr_wsrc_load_aka(c, w, name, NULL, 0, ndim, shape, out, err);
}

enum fr_status fr_wsrc_load_aka(struct fr_ctx *c, const struct fr_wsrc *w, const char *name,
                                const char *const *aka, int n_aka, int ndim, const int64_t *shape,
                                struct fr_tensor **out, struct fr_err *err) {
  *out = NULL;
  const char *prefix = w->prefix ? w->prefix : "";
  const struct fr_st_entry *e = fr_wsrc_find(w, name);
  if (!e)
    return fr_errf(err, FR_E_NOTFOUND, "tensor %s%s: missing from %s", prefix, name,
                   w->st ? w->st->path : "(no file)");
  bool ok = e->ndim == ndim;
  for (int i = 0; ok && i < ndim; i++)
    ok = shape[i] < 0 || shape[i] == e->shape[i];
  bool reshape = !ok && fr__same_but_1x1(ndim, shape, e);
  if (!ok && !reshape) {
    char want[128], have[128];
    /* "any" dims print as -1, which reads as a wildcard */
    fr_shape_str_dims(ndim, shape, want, sizeof want);
    fr_shape_str_dims(e->ndim, e->shape, have, sizeof have);
    return fr_errf(err, FR_E_SHAPE, "tensor %s%s: expected %s, file has %s", prefix, name, want, have);
  }
  if (e->dtype != FR_F32 && e->dtype != FR_F16 && e->dtype != FR_BF16 && e->dtype != FR_F64)
    return fr_errf(err, FR_E_UNSUPPORTED, "tensor %s%s: dtype %s is not a float type", prefix, name,
                   fr_dtype_name(e->dtype));
  struct fr_tensor *view = NULL;
  if (w->lora) {
    char full[1024];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    enum fr_status rc = fr_lora_patch(w->lora, w->space, full, aka, n_aka, e, &view, err);
    if (rc)
      return rc;
  }
  if (!view)
    view = fr_st_view(e);
  if (!view)
    return fr_errf(err, FR_E_NOMEM, "out of memory loading tensor %s%s", prefix, name);
  int64_t bad = fr__scan ? fr_tensor_count_nonfinite(view, NULL) : 0;
  if (bad) {
    if (!fr__scan->tensors++) {
      snprintf(fr__scan->first, sizeof fr__scan->first, "%s%s", prefix, name);
      fr__scan->first_values = bad;
    }
    fr__scan->values += bad;
  }
  struct fr_tensor *t = fr_ctx_weight(c, view);
  fr_tensor_free(view);
  /* fr_ctx_weight copied (16-bit kept, or converted) or uploaded it: drop the file's pages, so a model is
   * resident once, not twice (copy + mapping) */
  fr_st_release(w->st, e);
  if (!t) {
    enum fr_status rc = fr_ctx_status(c, err);
    return fr_err_prefix(err, rc ? rc : FR_E_NOMEM, "tensor %s%s: ", prefix, name);
  }
  if (reshape) {
    int64_t dims[4];
    for (int i = 0; i < ndim; i++)
      dims[i] = shape[i] >= 0 ? shape[i] : e->shape[i];
    fr_tensor_reshape(t, ndim, dims);
  }
  *out = t;
  return FR_OK;
}
