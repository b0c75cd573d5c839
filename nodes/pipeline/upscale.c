/* UpscaleModelLoader and ImageUpscaleWithModel (ComfyUI's comfy_extras/nodes_upscale_model.py) over
 * nodes/models/upscale.h. The loader returns an object naming the file; the model is loaded on first use and
 * kept in the engine's state under "upscale:<path>:<device>:<dtype>" with its own compute context, so
 * `flowrun serve` keeps it between runs and a fully cached run opens nothing. */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "nodes/image/image.h"
#include "nodes/models/upscale.h"
#include "nodes/pipeline/pipeline.h"

/* ---- UpscaleModelLoader ---- */

static enum fr_status fr__loader_run(struct fr_node_ctx *nc) {
  const char *path = fr_in_path(nc, "model_name");
  if (!path)
    return fr_node_fail(nc, FR_E_INVALID, "input 'model_name': no file given");
  struct fr_err err;
  enum fr_status rc = fr_upscaler_refuse_pickle(path, &err);
  if (rc)
    return fr_node_fail(nc, rc, "%s", err.msg);
  struct fr_pipe_obj *o = fr_pipe_obj_new(FR_T_UPSCALE_MODEL, path, NULL);
  struct fr_value *v = o ? fr_value_object(&o->o) : NULL;
  if (!v)
    return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
  return fr_out_set(nc, 0, v);
}

static const struct fr_input_spec fr__loader_in[] = {
    {"model_name", FR_T_STRING, NULL, 0, -1, NULL, FR_IN_MODEL_FILE,
     "ESRGAN / Real-ESRGAN (RRDBNet) or SRVGGNetCompact weights as .safetensors, on the model path"},
};
static const struct fr_output_spec fr__loader_out[] = {
    {"upscale_model", FR_T_UPSCALE_MODEL, "the upscale model (loaded when first used)"},
};
const struct fr_node_spec fr_node_upscale_model_loader = {
    "UpscaleModelLoader",
    1,
    "loaders",
    "Names an ESRGAN-family upscale model (safetensors); it loads when first used.",
    fr__loader_in,
    FR_COUNT(fr__loader_in),
    fr__loader_out,
    FR_COUNT(fr__loader_out),
    0,
    fr__loader_run,
};

/* ---- ImageUpscaleWithModel ---- */

struct fr__loaded {
  struct fr_ctx *c;
  struct fr_upscaler *m;
};

static void fr__loaded_destroy(void *p) {
  struct fr__loaded *l = p;
  if (!l)
    return;
  fr_upscaler_free(l->m); /* the weights before their context */
  fr_ctx_free(l->c);
  fr_free(l);
}

/* The memory hook of the loaded upscale models (core/node.h: out-of-memory recovery): each has its own
 * context, trimmed; a model the failing node does not use is dropped. */
struct fr__up_walk {
  struct fr_node_ctx *nc;
  enum fr_mem_mode mode;
  struct fr_mem_report *rep;
  const char *keep; /* "upscale:<path>:" of the failing node's model, or NULL */
};

static void fr__up_mem(void *user, const char *key, void *p) {
  struct fr__up_walk *w = user;
  struct fr__loaded *l = p;
  bool drop = w->mode == FR_MEM_RELEASE && !(w->keep && !strncmp(key, w->keep, strlen(w->keep)));
  if (w->mode == FR_MEM_QUERY || drop)
    w->rep->models++;
  w->rep->reserve_bytes += w->mode == FR_MEM_QUERY ? fr_ctx_reserve_bytes(l->c) : fr_ctx_trim(l->c);
  if (drop)
    fr_node_engine_set(w->nc, key, NULL, NULL);
}

static void fr__up_hook(void *user, struct fr_node_ctx *nc, enum fr_mem_mode mode,
                        struct fr_mem_report *rep) {
  (void)user;
  char keep[4200];
  struct fr__up_walk w = {nc, mode, rep, NULL};
  for (int i = 0; mode == FR_MEM_RELEASE && i < fr_node_input_count(nc); i++) {
    const struct fr_value *v = fr_in_at(nc, i);
    if (v && v->kind == FR_V_OBJECT && v->obj && !strcmp(v->obj->type, FR_T_UPSCALE_MODEL)) {
      snprintf(keep, sizeof keep, "upscale:%s:", ((const struct fr_pipe_obj *)v->obj)->path);
      w.keep = keep;
    }
  }
  fr_node_engine_each(nc, "upscale:", fr__up_mem, &w);
}

static enum fr_status fr__get_model(struct fr_node_ctx *nc, const char *path, struct fr__loaded **out) {
  char key[4200];
  snprintf(key, sizeof key, "upscale:%s:%s:%s", path, fr_node_device(nc), fr_node_dtype(nc));
  struct fr__loaded *l = fr_node_engine_get(nc, key);
  if (l) {
    *out = l;
    return FR_OK;
  }
  l = fr_calloc(1, sizeof *l);
  if (!l)
    return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
  enum fr_dtype dt = FR_F32;
  fr_compute_dtype_from_option(fr_node_dtype(nc), &dt);
  struct fr_err err = {{0}};
  struct fr_ctx_opts o = {.device = fr_node_device(nc), .dtype = dt, .threads = 0};
  enum fr_status rc = fr_ctx_new(&o, &l->c, &err);
  if (!rc) {
    fr_node_info(nc, "loading UPSCALE_MODEL from %s", path);
    rc = fr_upscaler_load(l->c, path, &l->m, &err);
  }
  if (rc) {
    fr__loaded_destroy(l);
    return fr_node_fail(nc, rc, "%s", err.msg);
  }
  fr_node_engine_mem_hook(nc, "upscale", fr__up_hook, NULL, NULL);
  fr_node_engine_set(nc, key, l, fr__loaded_destroy);
  if (fr_node_engine_get(nc, key) != l) /* the engine could not keep it and freed it */
    return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
  *out = l;
  return FR_OK;
}

static enum fr_status fr__tile_progress(void *user, int done, int total) {
  return fr_node_progress(user, done, total, NULL);
}

static enum fr_status fr__upscale_run(struct fr_node_ctx *nc) {
  const struct fr_value *mv = fr_in(nc, "upscale_model"), *iv = fr_in(nc, "image");
  if (!mv || mv->kind != FR_V_OBJECT || strcmp(mv->obj->type, FR_T_UPSCALE_MODEL) != 0)
    return fr_node_fail(nc, FR_E_INVALID, "input 'upscale_model': no UPSCALE_MODEL connected");
  const struct fr_tensor *img = iv ? fr_value_get_tensor(iv, "image") : NULL;
  struct fr_err err = {{0}};
  enum fr_status rc = fr_image_check(img, "image", &err);
  if (rc)
    return fr_node_fail(nc, rc, "input %s", err.msg);
  struct fr__loaded *l = NULL;
  rc = fr__get_model(nc, ((const struct fr_pipe_obj *)mv->obj)->path, &l);
  if (rc)
    return rc;
  if (img->shape[3] < fr_upscaler_channels(l->m))
    return fr_node_fail(nc, FR_E_SHAPE, "input 'image': %lld channels, the model (%s) needs %d",
                        (long long)img->shape[3], fr_upscaler_describe(l->m), fr_upscaler_channels(l->m));
  int tile = (int)fr_in_int(nc, "tile"), overlap = (int)fr_in_int(nc, "overlap");
  if (fr_node_low_memory(nc) && tile / 2 >= 128 && overlap * 2 < tile / 2) {
    fr_node_warn(nc, "low memory: %d-pixel tiles instead of %d", tile / 2, tile);
    tile /= 2; /* run again after running out of memory: smaller tiles from the start */
  }
  struct fr_tensor *out = NULL;
  /* As ComfyUI: out of memory halves the tile and tries again, down to 128 pixels. */
  for (;;) {
    rc = fr_upscaler_run_tiled(l->c, l->m, img, tile, overlap, fr__tile_progress, nc, &out, &err);
    if (rc != FR_E_NOMEM || tile / 2 < 128 || overlap * 2 >= tile / 2)
      break;
    fr_node_warn(nc, "out of memory with %d-pixel tiles; trying %d", tile, tile / 2);
    tile /= 2;
  }
  if (rc)
    return fr_node_fail(nc, rc, "%s", err.msg);
  struct fr_value *v = fr_value_tensor(FR_T_IMAGE, "image", out);
  if (!v)
    return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
  return fr_out_set(nc, 0, v);
}

static const struct fr_input_spec fr__upscale_in[] = {
    {"upscale_model", FR_T_UPSCALE_MODEL, NULL, 0, -1, NULL, 0, "from UpscaleModelLoader"},
    {"image", FR_T_IMAGE, NULL, 0, -1, NULL, 0, "image to upscale (RGB)"},
    {"tile", FR_T_INT, "512", 64, 4096, NULL, FR_IN_HIDDEN,
     "tile side in input pixels (ComfyUI: 512, halved on out-of-memory)"},
    {"overlap", FR_T_INT, "32", 0, 512, NULL, FR_IN_HIDDEN,
     "tile overlap in input pixels, blended with a linear ramp (ComfyUI: 32)"},
};
static const struct fr_output_spec fr__upscale_out[] = {
    {"image", FR_T_IMAGE, "[B, H s, W s, 3], clamped to [0, 1]"},
};
const struct fr_node_spec fr_node_image_upscale_with_model = {
    "ImageUpscaleWithModel",
    1,
    "image",
    "Upscales an image with an ESRGAN-family model, in overlapping tiles.",
    fr__upscale_in,
    FR_COUNT(fr__upscale_in),
    fr__upscale_out,
    FR_COUNT(fr__upscale_out),
    0,
    fr__upscale_run,
};
