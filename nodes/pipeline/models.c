/* Checkpoint objects and the engine-wide model cache.
 *
 * Loader nodes return objects that only name their file; a component is loaded the first time a node
 * needs it (fr_pipe_get) and kept in the engine's state under "pipeline:<component>:<path>@<version>:
 * <device>:<dtype>:<tokenizer>" (version: fr__file_version), so `flowrun serve` keeps models loaded between
 * runs and a fully cached run opens nothing. The dtype is the component's (fr_pipe_comp_dtype: the run's,
 * except the VAE in bf16 for an f16 run). Every loaded component holds a reference to the compute context of
 * its (device, dtype), one per engine, which therefore lives until the last component using it is freed,
 * whatever order the engine frees its state in. */
#include <malloc.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/alloc.h"
#include "nodes/models/data_files.h"
#include "nodes/models/weights.h"
#include "nodes/pipeline/pipeline.h"

struct fr__pctx {
  int refcount;
  struct fr_ctx *c;
};

static void fr__pctx_unref(struct fr__pctx *p) {
  if (p && --p->refcount == 0) {
    fr_ctx_free(p->c);
    fr_free(p);
  }
}

static void fr__pctx_destroy(void *p) {
  fr__pctx_unref(p);
}

static enum fr_dtype fr__dtype_of(const char *name) {
  enum fr_dtype dt = FR_F32;
  fr_compute_dtype_from_option(name, &dt);
  return dt;
}

const char *fr_pipe_comp_dtype(const char *run_dtype, const char *type) {
  if (!run_dtype || !*run_dtype)
    run_dtype = "f32";
  if (!strcmp(type, FR_T_VAE) && !strcmp(run_dtype, "f16"))
    return "bf16"; /* the SDXL VAE overflows fp16 (inf/NaN in the decoder's mid block) */
  return run_dtype;
}

/* The engine-wide context of (this run's device, dtype): key "pipeline:ctx:<device>:<dtype>". Errors are
 * returned with the message in err (not recorded on the node: the caller may try another dtype). */
static enum fr_status fr__pctx_get(struct fr_node_ctx *nc, const char *dtype, struct fr__pctx **out,
                                   struct fr_err *err) {
  char key[64];
  snprintf(key, sizeof key, "pipeline:ctx:%s:%s", fr_node_device(nc), dtype);
  struct fr__pctx *p = fr_node_engine_get(nc, key);
  if (!p) {
    p = fr_calloc(1, sizeof *p);
    if (!p)
      return fr_errf(err, FR_E_NOMEM, "out of memory");
    struct fr_ctx_opts o = {.device = fr_node_device(nc), .dtype = fr__dtype_of(dtype), .threads = 0};
    enum fr_status rc = fr_ctx_new(&o, &p->c, err);
    if (rc) {
      fr_free(p);
      return rc;
    }
    p->refcount = 1;
    fr_node_engine_set(nc, key, p, fr__pctx_destroy);
    if (fr_node_engine_get(nc, key) != p) /* the engine could not keep it and freed it */
      return fr_errf(err, FR_E_NOMEM, "out of memory");
  }
  *out = p;
  return FR_OK;
}

enum fr_status fr_pipe_ctx(struct fr_node_ctx *nc, struct fr_ctx **out) {
  struct fr__pctx *p = NULL;
  struct fr_err err = {{0}};
  enum fr_status rc = fr__pctx_get(nc, fr_node_dtype(nc), &p, &err);
  *out = rc ? NULL : p->c;
  return rc ? fr_node_fail(nc, rc, "%s", err.msg) : FR_OK;
}

enum fr_status fr_pipe_engine_mem(struct fr_engine *e, struct fr_ctx_mem *out) {
  memset(out, 0, sizeof *out);
  static const char *const devices[] = {"cpu", "cuda"}, *const dtypes[] = {"f32", "f16", "bf16"};
  bool any = false;
  for (int d = 0; d < 2; d++)
    for (int t = 0; t < 3; t++) {
      char key[64];
      snprintf(key, sizeof key, "pipeline:ctx:%s:%s", devices[d], dtypes[t]);
      struct fr__pctx *p = fr_engine_state_get(e, key);
      struct fr_ctx_mem m;
      struct fr_err err;
      if (p && fr_ctx_mem_stats(p->c, false, &m, &err) == FR_OK) {
        out->in_use += m.in_use;
        out->peak += m.peak;
        out->cached += m.cached;
        any = true;
      }
    }
  return any ? FR_OK : FR_E_NOTFOUND;
}

struct fr__resident_walk {
  void (*fn)(void *user, const char *type, const char *file, int64_t bytes);
  void *user;
};

/* key "pipeline:<TYPE>:<path>@<version>:<device>:<dtype>:<tokenizer>[|lora...]" of a loaded component */
static void fr__resident_one(void *user, const char *key, void *p) {
  (void)p;
  struct fr__resident_walk *w = user;
  static const char *const types[] = {FR_T_MODEL, FR_T_CLIP, FR_T_VAE, FR_T_CONTROL_NET};
  const char *rest = key + strlen("pipeline:");
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
    size_t n = strlen(types[i]);
    if (strncmp(rest, types[i], n) || rest[n] != ':')
      continue;
    const char *path = rest + n + 1,
               *end = strstr(path, ":cpu:") ? strstr(path, ":cpu:") : strstr(path, ":cuda:");
    if (!end)
      return;
    for (const char *q = end; q > path; q--) /* the file's version (fr__file_version) follows its last '@' */
      if (q[-1] == '@') {
        end = q - 1;
        break;
      }
    char file[512], full[4096];
    const char *base = path;
    for (const char *q = path; q < end; q++)
      if (*q == '/')
        base = q + 1;
    snprintf(file, sizeof file, "%.*s", (int)(end - base), base);
    snprintf(full, sizeof full, "%.*s", (int)(end - path), path);
    struct stat st;
    int64_t bytes = stat(full, &st) == 0 && S_ISREG(st.st_mode) ? (int64_t)st.st_size : -1;
    w->fn(w->user, types[i], file, bytes);
    return;
  }
}

void fr_pipe_engine_resident(struct fr_engine *e,
                             void (*fn)(void *user, const char *type, const char *file, int64_t bytes),
                             void *user) {
  struct fr__resident_walk w = {fn, user};
  fr_engine_state_each(e, "pipeline:", fr__resident_one, &w);
}

/* ---- the shared, opened checkpoints ---- */

/* One opened checkpoint per path and engine, key "pipeline:ckpt:<path>@<version>", referenced by every
 * component built from it (their weights may borrow its mapping), so a patched variant is derived without
 * opening the file again. */
struct fr__pckpt {
  int refcount;
  struct fr_checkpoint *ck;
};

static void fr__pckpt_unref(struct fr__pckpt *p) {
  if (p && --p->refcount == 0) {
    fr_checkpoint_close(p->ck);
    fr_free(p);
  }
}

static void fr__pckpt_destroy(void *p) {
  fr__pckpt_unref(p);
}

/* The version of the file (or folder) at path: size, mtime, inode and change time ("-1" when it cannot be
 * stat'ed). A file replaced under the same name, or rewritten with its size and mtime put back (touch -r),
 * is another version: ctime cannot be set back. */
static void fr__file_version(const char *path, char *out, size_t n) {
  struct stat sb;
  if (stat(path, &sb) != 0) {
    snprintf(out, n, "-1");
    return;
  }
  snprintf(out, n, "%lld.%lld.%llu.%lld", (long long)sb.st_size,
           (long long)sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec, (unsigned long long)sb.st_ino,
           (long long)sb.st_ctim.tv_sec * 1000000000LL + sb.st_ctim.tv_nsec);
}

/* The shared checkpoint of path with one more reference for the caller; *opened tells whether it was
 * opened now. pin: checked as the file is read (NULL: none). */
static enum fr_status fr__pckpt_get(struct fr_node_ctx *nc, const char *path, const char *pin,
                                    struct fr__pckpt **out, bool *opened, struct fr_err *err) {
  /* keyed by the file's version too: a file replaced under the same name is opened anew */
  char ver[128], key[4400];
  fr__file_version(path, ver, sizeof ver);
  snprintf(key, sizeof key, "pipeline:ckpt:%s@%s", path, ver);
  struct fr__pckpt *p = fr_node_engine_get(nc, key);
  *opened = !p;
  if (!p) {
    p = fr_calloc(1, sizeof *p);
    if (!p)
      return fr_errf(err, FR_E_NOMEM, "out of memory");
    enum fr_status rc = fr_checkpoint_open_pinned(path, pin, &p->ck, err);
    if (rc) {
      fr_free(p);
      return rc;
    }
    p->refcount = 1;
    fr_node_engine_set(nc, key, p, fr__pckpt_destroy);
    if (fr_node_engine_get(nc, key) != p)
      return fr_errf(err, FR_E_NOMEM, "out of memory");
  }
  p->refcount++;
  *out = p;
  return FR_OK;
}

/* ---- objects ---- */

static void fr__obj_destroy(struct fr_object *o) {
  struct fr_pipe_obj *p = (struct fr_pipe_obj *)o;
  fr_free(p->o.identity);
  fr_free(p->path);
  fr_free(p->tokenizer);
  fr_free(p->pin);
  for (int i = 0; i < p->n_patches; i++)
    fr_free(p->patches[i].path);
  fr_free(p->patches);
  fr_free(p);
}

struct fr_pipe_obj *fr_pipe_obj_new(const char *type, const char *path, const char *tokenizer) {
  struct fr_pipe_obj *p = fr_calloc(1, sizeof *p);
  if (!p)
    return NULL;
  p->o.refcount = 1;
  p->o.type = type;
  p->o.destroy = fr__obj_destroy;
  size_t n = strlen(type) + strlen(path) + 2;
  p->o.identity = fr_malloc(n);
  p->path = fr_strdup(path);
  p->tokenizer = tokenizer ? fr_strdup(tokenizer) : NULL;
  if (!p->o.identity || !p->path || (tokenizer && !p->tokenizer)) {
    fr__obj_destroy(&p->o);
    return NULL;
  }
  snprintf(p->o.identity, n, "%s:%s", type, path);
  return p;
}

bool fr_pipe_obj_set_pin(struct fr_pipe_obj *o, const char *pin) {
  char *c = pin ? fr_strdup(pin) : NULL;
  if (pin && !c)
    return false;
  fr_free(o->pin);
  o->pin = c;
  return true;
}

struct fr_pipe_obj *fr_pipe_obj_clone(const struct fr_pipe_obj *o) {
  struct fr_pipe_obj *p = fr_pipe_obj_new(o->o.type, o->path, o->tokenizer);
  if (!p)
    return NULL;
  if (!fr_pipe_obj_set_pin(p, o->pin)) {
    fr__obj_destroy(&p->o);
    return NULL;
  }
  p->sampling = o->sampling;
  p->zsnr = o->zsnr;
  p->clip_layer = o->clip_layer;
  /* the LoRA patches travel with every setting (CLIPSetLastLayer or ModelSamplingDiscrete after LoraLoader)
   */
  p->patches = o->n_patches ? fr_calloc((size_t)o->n_patches, sizeof *p->patches) : NULL;
  bool ok = !o->n_patches || p->patches;
  for (int i = 0; ok && i < o->n_patches; i++) {
    p->patches[i].path = fr_strdup(o->patches[i].path);
    p->patches[i].strength = o->patches[i].strength;
    p->n_patches++;
    ok = p->patches[i].path != NULL;
  }
  char *id = ok ? fr_strdup(o->o.identity) : NULL;
  if (!id) {
    fr__obj_destroy(&p->o);
    return NULL;
  }
  fr_free(p->o.identity);
  p->o.identity = id;
  return p;
}

struct fr_pipe_obj *fr_pipe_obj_patched(const struct fr_pipe_obj *base, const char *lora, double strength) {
  struct fr_pipe_obj *p = fr_pipe_obj_clone(base);
  if (!p)
    return NULL;
  struct fr_pipe_patch *np = fr_realloc(p->patches, (size_t)(p->n_patches + 1) * sizeof *np);
  if (!np) {
    fr__obj_destroy(&p->o);
    return NULL;
  }
  p->patches = np;
  np[p->n_patches].path = fr_strdup(lora);
  np[p->n_patches].strength = strength;
  if (!np[p->n_patches].path) {
    fr__obj_destroy(&p->o);
    return NULL;
  }
  p->n_patches++;
  size_t n = strlen(base->o.identity) + strlen(lora) + 48;
  char *id = fr_malloc(n);
  if (!id) {
    fr__obj_destroy(&p->o);
    return NULL;
  }
  snprintf(id, n, "%s+lora:%s*%.17g", base->o.identity, lora, strength);
  fr_free(p->o.identity);
  p->o.identity = id;
  return p;
}

/* ---- loaded components ---- */

static void fr__comp_destroy(void *v) {
  struct fr_pipe_comp *m = v;
  if (!m)
    return;
  fr_unet_free(m->unet);
  fr_vae_free(m->vae);
  fr_clip_free(m->l);
  fr_clip_free(m->g);
  fr_tokenizer_free(m->tok);
  fr_controlnet_free(m->cn);
  fr__pckpt_unref(m->sck);
  fr__pctx_unref(m->pc);
  fr_free(m);
}

static bool fr__exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* Finds the CLIP tokenizer: the loader's explicit one, else the diffusers folder's tokenizer/, else a
 * tokenizer/ or bpe_simple_vocab_16e6.txt.gz beside the checkpoint or one folder up. */
static enum fr_status fr__find_tokenizer(const struct fr_pipe_obj *o, const struct fr_checkpoint *ck,
                                         char *out, size_t n, struct fr_err *err) {
  if (o->tokenizer) {
    snprintf(out, n, "%s", o->tokenizer);
    return FR_OK;
  }
  char dir[4096], up[4110];
  if (ck->dir)
    snprintf(dir, sizeof dir, "%s", ck->dir);
  else {
    snprintf(dir, sizeof dir, "%s", o->path);
    char *slash = strrchr(dir, '/');
    if (slash)
      *slash = 0;
    else
      snprintf(dir, sizeof dir, ".");
  }
  snprintf(up, sizeof up, "%s/..", dir);
  const char *dirs[2] = {dir, up};
  enum fr_status rc = fr_tokenizer_find(dirs, 2, out, n, err);
  if (rc == FR_E_NOTFOUND) { /* none beside the checkpoint: the vocabulary that ships with flowrun */
    struct fr_err e2 = {{0}};
    if (!fr_data_file(FR_CLIP_VOCAB_FILE, out, n, &e2))
      return FR_OK;
    fr_err_prefix(err, rc, "%s\n", e2.msg);
  }
  return rc;
}

/* The LoRA files of o's patches, opened (NULL when o has none). */
static enum fr_status fr__patch_set(const struct fr_pipe_obj *o, struct fr_lora_set **out,
                                    struct fr_err *err) {
  *out = NULL;
  if (!o->n_patches)
    return FR_OK;
  struct fr_lora_set *s = fr_lora_set_new();
  if (!s)
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  for (int i = 0; i < o->n_patches; i++) {
    enum fr_status rc = fr_lora_set_add(s, o->patches[i].path, o->patches[i].strength, err);
    if (rc) {
      fr_lora_set_free(s);
      return rc;
    }
  }
  *out = s;
  return FR_OK;
}

/* After a patched component loaded: unmatched modules are a warning, a LoRA for another base an error. */
static enum fr_status fr__patch_report(struct fr_node_ctx *nc, const struct fr_lora_set *s,
                                       enum fr_lora_space sp, bool unknown_too, struct fr_err *err) {
  char warn[2048];
  enum fr_status rc = fr_lora_check(s, sp, unknown_too, warn, sizeof warn, err);
  if (rc)
    return rc;
  for (char *line = warn, *nl; *line; line = nl ? nl + 1 : line + strlen(line)) {
    nl = strchr(line, '\n');
    if (nl)
      *nl = 0;
    fr_node_warn(nc, "%s", line);
  }
  return FR_OK;
}

static enum fr_status fr__load_patched(struct fr_node_ctx *nc, const struct fr_pipe_obj *o, const char *type,
                                       struct fr_pipe_comp *m, struct fr_err *err) {
  struct fr_lora_set *set = NULL;
  enum fr_status rc = fr__patch_set(o, &set, err);
  if (rc)
    return rc;
  char what[1024] = "";
  for (int i = 0; i < o->n_patches; i++) {
    const char *b = strrchr(o->patches[i].path, '/');
    size_t k = strlen(what);
    snprintf(what + k, sizeof what - k, "%s%s (strength %g)", i ? ", " : "", b ? b + 1 : o->patches[i].path,
             o->patches[i].strength);
  }
  fr_node_info(nc, "patching %s of %s with LoRA %s", type, o->path, what);
  struct fr_checkpoint ck = *m->ck; /* the shared checkpoint, seen with the patches */
  ck.lora = set;
  if (!strcmp(type, FR_T_MODEL)) {
    rc = fr_unet_load(m->c, &ck, &m->unet, err);
    if (!rc)
      rc = fr__patch_report(nc, set, FR_LORA_UNET, true, err);
  } else {
    struct fr_err e2 = {{0}};
    enum fr_status rl = fr_clip_load(m->c, &ck, FR_CLIP_ROLE_L, &m->l, err);
    enum fr_status rg = fr_clip_load(m->c, &ck, FR_CLIP_ROLE_G, &m->g, &e2);
    rc = rl && rl != FR_E_NOTFOUND ? rl : FR_OK;
    if (!rc && rg && rg != FR_E_NOTFOUND) {
      *err = e2;
      rc = rg;
    }
    if (!rc)
      rc = fr__patch_report(nc, set, FR_LORA_CLIP_L, false, err);
    if (!rc)
      rc = fr__patch_report(nc, set, FR_LORA_CLIP_G, false, err);
  }
  fr_lora_set_free(set);
  return rc;
}

static enum fr_status fr__load(struct fr_node_ctx *nc, const struct fr_pipe_obj *o, const char *type,
                               struct fr_pipe_comp *m, struct fr_err *err) {
  bool patched = o->n_patches > 0 && (!strcmp(type, FR_T_MODEL) || !strcmp(type, FR_T_CLIP));
  bool opened = false;
  if (!patched)
    fr_node_info(nc, "loading %s from %s", type, o->path);
  enum fr_status rc = fr__pckpt_get(nc, o->path, o->pin, &m->sck, &opened, err);
  if (rc)
    return rc;
  m->ck = m->sck->ck;
  if (patched && opened)
    fr_node_info(nc, "loading %s from %s", type, o->path);
  if (patched && !strcmp(type, FR_T_MODEL))
    return fr__load_patched(nc, o, type, m, err);
  if (!strcmp(type, FR_T_MODEL))
    return fr_unet_load(m->c, m->ck, &m->unet, err);
  if (!strcmp(type, FR_T_CONTROL_NET))
    return fr_controlnet_load(m->c, m->ck, &m->cn, err);
  if (!strcmp(type, FR_T_VAE)) {
    rc = fr_vae_load(m->c, m->ck, &m->vae, err);
    m->vae_scale = fr_vae_scaling_factor(m->ck);
    if (m->vae_scale <= 0) {
      m->vae_scale = 0.18215f; /* a bare VAE file: SD1.x's factor unless the latent says otherwise */
      m->vae_scale_guessed = true;
    }
    return rc;
  }
  /* CLIP: which encoders the checkpoint has tells SD1.5 (L), SDXL base (L + G) and refiner (G). */
  if (patched) {
    rc = fr__load_patched(nc, o, type, m, err);
    if (rc)
      return rc;
  } else {
    struct fr_err e2 = {{0}};
    enum fr_status rl = fr_clip_load(m->c, m->ck, FR_CLIP_ROLE_L, &m->l, err);
    if (rl && rl != FR_E_NOTFOUND)
      return rl;
    enum fr_status rg = fr_clip_load(m->c, m->ck, FR_CLIP_ROLE_G, &m->g, &e2);
    if (rg && rg != FR_E_NOTFOUND) {
      *err = e2;
      return rg;
    }
  }
  if (!m->l && !m->g) {
    return fr_err_prefix(err, FR_E_NOTFOUND, "%s: no text encoder found: ", o->path);
  }
  char tok[4096];
  rc = fr__find_tokenizer(o, m->ck, tok, sizeof tok, err);
  if (rc)
    return rc;
  (void)nc;
  return fr_tokenizer_load(tok, &m->tok, err);
}

/* ---- out-of-memory recovery: the memory hook of the model cache (core/node.h) ---- */

/* Host heap bytes in use (glibc's counters: small blocks + mmap'd large ones) plus the device memory of c,
 * to measure what a load took. */
static uint64_t fr__mem_now(struct fr_ctx *c) {
  uint64_t n = 0;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  struct mallinfo2 mi = mallinfo2();
  n = (uint64_t)mi.uordblks + (uint64_t)mi.hblkhd;
#endif
  struct fr_ctx_mem cm;
  if (c && strcmp(fr_ctx_device_name(c), "cpu") != 0 && fr_ctx_mem_stats(c, false, &cm, NULL) == FR_OK)
    n += cm.in_use;
  return n;
}

struct fr__mem_walk {
  struct fr_node_ctx *nc;
  enum fr_mem_mode mode;
  struct fr_mem_report *rep;
};

/* Whether component state key is one the failing node reads: one of its inputs is an object of that type
 * and file ("pipeline:<type>:<path>@..."). */
static bool fr__needed(struct fr_node_ctx *nc, const char *key) {
  for (int i = 0; i < fr_node_input_count(nc); i++) {
    const struct fr_value *v = fr_in_at(nc, i);
    if (!v || v->kind != FR_V_OBJECT || !v->obj || v->obj->destroy != fr__obj_destroy)
      continue;
    const struct fr_pipe_obj *o = (const struct fr_pipe_obj *)v->obj;
    char pre[4200];
    int n = snprintf(pre, sizeof pre, "pipeline:%s:%s@", o->o.type, o->path);
    if (n > 0 && (size_t)n < sizeof pre && strncmp(key, pre, (size_t)n) == 0)
      return true;
  }
  return false;
}

static void fr__mem_comp(void *user, const char *key, void *p) {
  struct fr__mem_walk *w = user;
  /* components only: not contexts, checkpoints or the patched-variant slots */
  if (!strncmp(key, "pipeline:ctx:", 13) || !strncmp(key, "pipeline:ckpt:", 14) ||
      !strncmp(key, "pipeline:patched:", 17))
    return;
  struct fr_pipe_comp *m = p;
  if (w->mode == FR_MEM_QUERY) {
    w->rep->models++;
    w->rep->model_bytes += m->bytes;
  } else if (w->mode == FR_MEM_RELEASE && !fr__needed(w->nc, key)) {
    w->rep->models++;
    w->rep->model_bytes += m->bytes;
    fr_node_engine_set(w->nc, key, NULL, NULL); /* frees it */
  }
}

static void fr__mem_ckpt(void *user, const char *key, void *p) {
  struct fr__mem_walk *w = user;
  if (((struct fr__pckpt *)p)->refcount == 1) /* no component uses the mapping any more: unmap it */
    fr_node_engine_set(w->nc, key, NULL, NULL);
}

static void fr__mem_ctx(void *user, const char *key, void *p) {
  (void)key;
  struct fr__mem_walk *w = user;
  struct fr__pctx *pc = p;
  if (w->mode != FR_MEM_QUERY) /* the failed attempt's out-of-memory error must not fail the retry */
    fr_ctx_clear(pc->c);
  w->rep->reserve_bytes += w->mode == FR_MEM_QUERY ? fr_ctx_reserve_bytes(pc->c) : fr_ctx_trim(pc->c);
}

static void fr__mem_hook(void *user, struct fr_node_ctx *nc, enum fr_mem_mode mode,
                         struct fr_mem_report *rep) {
  (void)user;
  struct fr__mem_walk w = {nc, mode, rep};
  if (mode != FR_MEM_TRIM)
    fr_node_engine_each(nc, "pipeline:", fr__mem_comp, &w);
  if (mode == FR_MEM_RELEASE)
    fr_node_engine_each(nc, "pipeline:ckpt:", fr__mem_ckpt, &w);
  fr_node_engine_each(nc, "pipeline:ctx:", fr__mem_ctx, &w);
}

struct fr__stale {
  struct fr_node_ctx *nc;
  char keep[4400];   /* "pipeline:<type>:<path>@<version>:" */
  size_t prefix_len; /* of "pipeline:<type>:<path>@" */
};

static void fr__drop_stale(void *user, const char *key, void *p) {
  (void)p;
  struct fr__stale *s = user;
  if (!strncmp(key, s->keep, s->prefix_len) && strncmp(key, s->keep, strlen(s->keep)) != 0)
    fr_node_engine_set(s->nc, key, NULL, NULL);
}

static enum fr_status fr__get(struct fr_node_ctx *nc, const struct fr_pipe_obj *o, const char *type,
                              struct fr_pipe_comp **out) {
  *out = NULL;
  const char *dtype = fr_pipe_comp_dtype(fr_node_dtype(nc), type);
  char key[8200], ver[128];
  /* keyed by the file's version: a checkpoint replaced or rewritten under the same name (`flowrun serve`
   * between runs) is loaded anew, and the old version's components are dropped below */
  fr__file_version(o->path, ver, sizeof ver);
  int kl = snprintf(key, sizeof key, "pipeline:%s:%s@%s:%s:%s:%s", type, o->path, ver, fr_node_device(nc),
                    dtype, o->tokenizer ? o->tokenizer : "");
  size_t base_len = (size_t)kl;
  /* a patched component: the LoRA files (by path, size and mtime, so a replaced file is seen) and strengths
   */
  bool patched = o->n_patches > 0 && (!strcmp(type, FR_T_MODEL) || !strcmp(type, FR_T_CLIP));
  for (int i = 0; patched && i < o->n_patches && (size_t)kl < sizeof key; i++) {
    struct stat st;
    long long size = -1, mt = 0;
    if (stat(o->patches[i].path, &st) == 0)
      size = (long long)st.st_size, mt = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    kl += snprintf(key + kl, sizeof key - (size_t)kl, "|lora:%s:%lld:%lld*%.17g", o->patches[i].path, size,
                   mt, o->patches[i].strength);
  }
  if ((size_t)kl >= sizeof key)
    return fr_node_fail(nc, FR_E_INVALID, "%s: too many LoRA files on one model", type);
  struct fr_pipe_comp *m = fr_node_engine_get(nc, key);
  if (m) {
    *out = m;
    return FR_OK;
  }
  /* components of another version of the file are stale: free them */
  struct fr__stale st = {nc, {0}, 0};
  int pl = snprintf(st.keep, sizeof st.keep, "pipeline:%s:%s@%s:", type, o->path, ver);
  st.prefix_len = (size_t)pl - strlen(ver) - 1; /* "pipeline:<type>:<path>@" */
  if ((size_t)pl < sizeof st.keep)
    fr_node_engine_each(nc, "pipeline:", fr__drop_stale, &st);
  /* keep one patched variant per component: free the previous one (another LoRA or strength) */
  char slot[8300];
  snprintf(slot, sizeof slot, "pipeline:patched:%.*s", (int)base_len - 9, key + 9); /* after "pipeline:" */
  if (patched) {
    char *prev = fr_node_engine_get(nc, slot);
    if (prev)
      fr_node_engine_set(nc, prev, NULL, NULL);
    fr_node_engine_set(nc, slot, NULL, NULL);
  }
  if (!fr__exists(o->path))
    return fr_node_fail(nc, FR_E_NOTFOUND, "%s file %s no longer exists", type, o->path);
  struct fr__pctx *pc = NULL;
  struct fr_err err = {{0}};
  enum fr_status rc = fr__pctx_get(nc, dtype, &pc, &err);
  if (rc == FR_E_UNSUPPORTED && strcmp(dtype, fr_node_dtype(nc)) != 0) {
    /* the VAE's bf16 for an f16 run, on a GPU without bf16 (before sm_80): f32 instead, never f16 */
    fr_node_warn(nc, "%s: this device has no bf16, so it computes in f32 (an f16 run never puts it in f16)",
                 type);
    rc = fr__pctx_get(nc, "f32", &pc, &err);
  }
  if (rc)
    return fr_node_fail(nc, rc, "%s", err.msg);
  m = fr_calloc(1, sizeof *m);
  if (!m)
    return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
  pc->refcount++;
  m->pc = pc;
  m->c = pc->c;
  fr_node_engine_mem_hook(nc, "pipeline", fr__mem_hook, NULL, NULL);
  struct fr_weights_scan scan; /* NaN/inf weights: warn once per load, naming the first tensor */
  fr_weights_scan_begin(&scan);
  uint64_t before = fr__mem_now(m->c);
  rc = fr__load(nc, o, type, m, &err);
  uint64_t after = fr__mem_now(m->c);
  m->bytes = after > before ? after - before : 0;
  fr_weights_scan_end();
  if (rc) {
    /* the context is the engine's, shared by every component: a failed load's sticky error must not fail
     * the next node or run that uses it */
    fr_ctx_clear(m->c);
    fr__comp_destroy(m);
    return fr_node_fail(nc, rc, "%s", err.msg);
  }
  if (scan.tensors)
    fr_node_warn(nc,
                 "%s from %s: tensor %s holds %lld NaN/inf value%s (%d tensor%s with %lld in all); "
                 "everything computed with it will be NaN (a black picture)",
                 type, o->path, scan.first, (long long)scan.first_values, scan.first_values == 1 ? "" : "s",
                 scan.tensors, scan.tensors == 1 ? "" : "s", (long long)scan.values);
  fr_node_engine_set(nc, key, m, fr__comp_destroy);
  if (fr_node_engine_get(nc, key) != m)
    return fr_node_fail(nc, FR_E_NOMEM, "out of memory keeping the loaded %s", type);
  if (patched) {
    char *k = fr_strdup(key);
    if (k)
      fr_node_engine_set(nc, slot, k, fr_free);
  }
  *out = m;
  return FR_OK;
}

enum fr_status fr_pipe_get(struct fr_node_ctx *nc, const char *input, const char *type,
                           struct fr_pipe_comp **out) {
  const struct fr_value *v = fr_in(nc, input);
  if (!v || v->kind != FR_V_OBJECT || !v->obj || strcmp(v->obj->type, type) != 0) {
    *out = NULL;
    return fr_node_fail(nc, FR_E_INVALID, "input '%s': no %s connected", input, type);
  }
  return fr__get(nc, (const struct fr_pipe_obj *)v->obj, type, out);
}

enum fr_status fr_pipe_get_controlnet(struct fr_node_ctx *nc, const char *path, struct fr_pipe_comp **out) {
  struct fr_pipe_obj o = {.o = {.type = FR_T_CONTROL_NET}, .path = (char *)path};
  return fr__get(nc, &o, FR_T_CONTROL_NET, out);
}
