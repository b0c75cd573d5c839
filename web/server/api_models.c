/* flowrun serve: GET /api/models and POST /api/import/comfy (see api_models.h, docs/protocol.md). */
#include "web/server/api_models.h"

#include <dirent.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/alloc.h"
#include "core/comfy.h"
#include "core/graph.h"
#include "nodes/registry.h"

#define FR__MODELS_DEPTH 4 /* folders below a kind's subfolder that are searched */

/* The kinds the editor asks for: ComfyUI's models/ subfolder names. */
static const char *const fr__kinds[] = {"checkpoints", "loras",          "vae",  "controlnet",
                                        "embeddings",  "upscale_models", "unet", "clip"};

struct fr__mlist {
  char **names;
  bool *supported;
  int n, cap;
  bool truncated, oom;
};

static bool fr__ends(const char *s, const char *ext) {
  size_t n = strlen(s), e = strlen(ext);
  return n > e && !strcasecmp(s + n - e, ext);
}

static void fr__mlist_add(struct fr__mlist *l, const char *name, bool supported) {
  for (int i = 0; i < l->n; i++)
    if (!strcmp(l->names[i], name))
      return; /* the first folder that has it wins, as the loader's search */
  if (l->n == FR__MODELS_MAX) {
    l->truncated = true;
    return;
  }
  if (l->n == l->cap) {
    int cap = l->cap ? 2 * l->cap : 64;
    char **nn = fr_realloc(l->names, (size_t)cap * sizeof *nn);
    if (nn)
      l->names = nn;
    bool *ns = nn ? fr_realloc(l->supported, (size_t)cap * sizeof *ns) : NULL;
    if (!ns) {
      l->oom = true;
      return;
    }
    l->supported = ns;
    l->cap = cap;
  }
  if (!(l->names[l->n] = fr_strdup(name))) {
    l->oom = true;
    return;
  }
  l->supported[l->n++] = supported;
}

/* A diffusers folder: a model made of files (model_index.json for a pipeline, config.json for one
 * component such as a ControlNet). Listed by its folder name and not walked into. */
static bool fr__is_model_dir(const char *dir, bool pipelines_only) {
  char p[PATH_MAX + 32];
  struct stat st;
  snprintf(p, sizeof p, "%s/model_index.json", dir);
  if (stat(p, &st) == 0 && S_ISREG(st.st_mode))
    return true;
  if (pipelines_only)
    return false;
  snprintf(p, sizeof p, "%s/config.json", dir);
  return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Lists dir (rel is its name relative to the searched folder, "" at the top); recurse: also its
 * subfolders (a kind's subfolder), else only files and diffusers pipelines (the flat model folder, whose
 * subfolders are the kinds). Directory links are not followed (a folder cannot lead the walk outside itself);
 * file links are listed as files. */
static void fr__walk(struct fr__mlist *l, const char *dir, const char *rel, int depth, bool recurse) {
  DIR *d = opendir(dir);
  if (!d)
    return;
  struct dirent *e;
  while ((e = readdir(d)) && !l->truncated && !l->oom) {
    if (e->d_name[0] == '.')
      continue;
    char full[PATH_MAX], name[PATH_MAX];
    if (snprintf(full, sizeof full, "%s/%s", dir, e->d_name) >= (int)sizeof full ||
        snprintf(name, sizeof name, "%s%s%s", rel, *rel ? "/" : "", e->d_name) >= (int)sizeof name)
      continue;
    struct stat ls, st;
    if (lstat(full, &ls) != 0)
      continue;
    if (S_ISDIR(ls.st_mode)) {
      if (fr__is_model_dir(full, !recurse))
        fr__mlist_add(l, name, true);
      else if (recurse && depth < FR__MODELS_DEPTH)
        fr__walk(l, full, name, depth + 1, true);
      continue;
    }
    if (S_ISLNK(ls.st_mode) && (stat(full, &st) != 0 || !S_ISREG(st.st_mode)))
      continue; /* a link to a folder or to nothing */
    if (!S_ISLNK(ls.st_mode) && !S_ISREG(ls.st_mode))
      continue;
    if (fr__ends(name, ".safetensors"))
      fr__mlist_add(l, name, true);
    else if (fr__ends(name, ".ckpt") || fr__ends(name, ".pt") || fr__ends(name, ".pth") ||
             fr__ends(name, ".bin"))
      fr__mlist_add(l, name, false); /* pickled weights: flowrun reads safetensors only */
  }
  closedir(d);
}

static int fr__cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

int fr__api_models(const char *const *dirs, int n_dirs, const char *kind, struct fr_buf *b,
                   struct fr_err *err) {
  const char *k = NULL;
  for (size_t i = 0; kind && i < sizeof fr__kinds / sizeof *fr__kinds; i++)
    if (!strcmp(kind, fr__kinds[i]))
      k = fr__kinds[i];
  if (!k) {
    fr_errf(err, FR_E_INVALID,
            "models: ?kind= must be one of checkpoints, loras, vae, controlnet, embeddings, upscale_models, "
            "unet, clip (got '%s')",
            kind ? kind : "");
    return 400;
  }
  struct fr__mlist l = {0};
  for (int i = 0; i < n_dirs; i++) {
    /* the kind's subfolder (ComfyUI's layout), names relative to it; then checkpoints lying in the model
     * folder itself (flowrun's flat layout), names relative to the folder */
    char sub[PATH_MAX];
    snprintf(sub, sizeof sub, "%s/%s", dirs[i], k);
    fr__walk(&l, sub, "", 0, true);
    if (!strcmp(k, "checkpoints"))
      fr__walk(&l, dirs[i], "", 0, false);
  }
  if (!l.oom) {
    /* sort names and their flags together: sort an index of pointers into one block */
    char **order = fr_malloc((size_t)(l.n ? l.n : 1) * sizeof *order);
    if (!order) {
      l.oom = true;
    } else {
      for (int i = 0; i < l.n; i++)
        order[i] = l.names[i];
      qsort(order, (size_t)l.n, sizeof *order, fr__cmp_str);
      fr_buf_puts(b, "{\"kind\":");
      fr_buf_json_str(b, k);
      fr_buf_puts(b, ",\"models\":[");
      for (int i = 0; i < l.n; i++) {
        int j = 0;
        while (l.names[j] != order[i])
          j++;
        fr_buf_puts(b, i ? ",{\"name\":" : "{\"name\":");
        fr_buf_json_str(b, order[i]);
        fr_buf_printf(b, ",\"supported\":%s}", l.supported[j] ? "true" : "false");
      }
      fr_buf_printf(b, "],\"truncated\":%s}", l.truncated ? "true" : "false");
      fr_free(order);
    }
  }
  for (int i = 0; i < l.n; i++)
    fr_free(l.names[i]);
  fr_free(l.names);
  fr_free(l.supported);
  if (l.oom || b->oom) {
    fr_buf_free(b);
    fr_errf(err, FR_E_NOMEM, "out of memory");
    return 500;
  }
  return 200;
}

int fr__api_import_comfy(const struct fr_json *req, struct fr_buf *b, struct fr_err *err) {
  const struct fr_json *j = fr_json_get(req, "json");
  if (!j || j->type != FR_JSON_STRING) {
    fr_errf(err, FR_E_INVALID, "import needs {\"json\": \"<ComfyUI API-format JSON text>\"}");
    return 400;
  }
  const char *source = fr_json_str(req, "source", "workflow.json");
  struct fr_buf yaml = {0}, notes = {0};
  enum fr_status rc = fr_comfy_import(fr_builtin_registry(), j->str, j->len, source, &yaml, &notes, err);
  if (rc == FR_OK) {
    /* what the editor gets must load: the same check as flowrun import comfy */
    struct fr_load_opts lo = {.registry = fr_builtin_registry(), .require_files = false};
    struct fr_graph *g = NULL;
    if (fr_graph_load_string(yaml.data, yaml.len, source, ".", &lo, &g, err) != FR_OK) {
      fr_err_prefix(err, FR_E_INVALID, "%s: the converted graph does not load", source);
      rc = FR_E_INVALID;
    }
    fr_graph_free(g);
  }
  int code = rc == FR_OK ? 200 : rc == FR_E_NOMEM ? 500 : 422;
  if (rc == FR_OK) {
    fr_buf_puts(b, "{\"yaml\":");
    fr_buf_json_strn(b, yaml.data ? yaml.data : "", yaml.len);
    fr_buf_puts(b, ",\"notes\":[");
    const char *p = notes.data ? notes.data : "";
    bool first = true;
    while (*p) {
      const char *e = strchr(p, '\n');
      size_t n = e ? (size_t)(e - p) : strlen(p);
      if (n) {
        if (!first)
          fr_buf_putc(b, ',');
        fr_buf_json_strn(b, p, n);
        first = false;
      }
      p += n + (e ? 1 : 0);
    }
    fr_buf_puts(b, "]}");
  }
  fr_buf_free(&yaml);
  fr_buf_free(&notes);
  return code;
}
