/* ComfyUI API-format import and export (core/comfy.h). The mapping is data: fr__maps for types whose
 * names, inputs or outputs differ, fr__same for ComfyUI core types that flowrun provides under the same
 * name with the same inputs and outputs (used only when the registry has them), and two tables of
 * sampler and scheduler names. */
#include "core/comfy.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/json.h"

/* ---- the mapping ---- */

enum fr__cv {
  FR__CV_NONE,
  FR__CV_ENABLE,  /* ComfyUI "enable" / "disable" <-> BOOL */
  FR__CV_SAMPLER, /* sampler names through fr__samplers */
  FR__CV_SCHED,   /* scheduler names through fr__scheds */
};

struct fr__cin {
  const char *comfy, *fr;
  enum fr__cv cv;
};

enum fr__special {
  FR__SP_NONE,
  FR__SP_TEXT,      /* CLIPTextEncode: SDXL sizes from the image, aesthetic score by the prompt's role */
  FR__SP_SDXL_TEXT, /* CLIPTextEncodeSDXL: text_g and text_l must agree (TextEncode takes one prompt) */
  FR__SP_CN_ADV,    /* ControlNetApplyAdvanced: one flowrun ControlNet per conditioning */
};

struct fr__cmap {
  const char *comfy;     /* ComfyUI class_type */
  const char *fr;        /* flowrun node type */
  struct fr__cin in[16]; /* inputs whose name or values differ; any other keeps its name */
  const char *ignore[4]; /* ComfyUI inputs without effect on the result */
  const char *set;       /* flowrun literals the ComfyUI node implies: "a=1,b=2" */
  const char *outs;      /* flowrun output of ComfyUI slot i, comma-separated; NULL: same index */
  enum fr__special special;
};

static const struct fr__cmap fr__maps[] = {
    {"CheckpointLoaderSimple", "CheckpointLoader", {{0}}, {0}, NULL, "model,clip,vae", FR__SP_NONE},
    {"CheckpointLoader", "CheckpointLoader", {{0}}, {"config_name"}, NULL, "model,clip,vae", FR__SP_NONE},
    {"CLIPTextEncode",
     "TextEncode",
     {{0}},
     {0},
     "width=0,height=0,target_width=0,target_height=0",
     NULL,
     FR__SP_TEXT},
    {"CLIPTextEncodeSDXL", "TextEncode", {{0}}, {0}, NULL, NULL, FR__SP_SDXL_TEXT},
    {"CLIPTextEncodeSDXLRefiner",
     "TextEncode",
     {{"ascore", "aesthetic_score", FR__CV_NONE}},
     {0},
     NULL,
     NULL,
     FR__SP_NONE},
    {"KSampler",
     "Sampler",
     {{"latent_image", "latent", FR__CV_NONE},
      {"sampler_name", "sampler", FR__CV_SAMPLER},
      {"scheduler", "scheduler", FR__CV_SCHED}},
     {0},
     NULL,
     NULL,
     FR__SP_NONE},
    {"KSamplerAdvanced",
     "Sampler",
     {{"latent_image", "latent", FR__CV_NONE},
      {"noise_seed", "seed", FR__CV_NONE},
      {"sampler_name", "sampler", FR__CV_SAMPLER},
      {"scheduler", "scheduler", FR__CV_SCHED},
      {"start_at_step", "start_step", FR__CV_NONE},
      {"end_at_step", "end_step", FR__CV_NONE},
      {"add_noise", "add_noise", FR__CV_ENABLE},
      {"return_with_leftover_noise", "return_with_leftover_noise", FR__CV_ENABLE}},
     {0},
     NULL,
     NULL,
     FR__SP_NONE},
    {"EmptyLatentImage", "EmptyLatent", {{"batch_size", "batch", FR__CV_NONE}}, {0}, NULL, NULL, FR__SP_NONE},
    {"ControlNetApply", "ControlNet", {{0}}, {0}, NULL, NULL, FR__SP_NONE},
    {"ControlNetApplyAdvanced", "ControlNet", {{0}}, {"vae"}, NULL, NULL, FR__SP_CN_ADV},
    {"LoadImage", "LoadImage", {{0}}, {"upload"}, NULL, "image,mask", FR__SP_NONE},
    {"ImageBlur", "ImageBlur", {{"blur_radius", "radius", FR__CV_NONE}}, {0}, NULL, NULL, FR__SP_NONE},
    {"PrimitiveInt", "Int", {{0}}, {0}, NULL, NULL, FR__SP_NONE},
    {"PrimitiveFloat", "Float", {{0}}, {0}, NULL, NULL, FR__SP_NONE},
    {"PrimitiveString", "String", {{0}}, {0}, NULL, NULL, FR__SP_NONE},
    {"PrimitiveStringMultiline", "String", {{0}}, {0}, NULL, NULL, FR__SP_NONE},
    {"PrimitiveBoolean", "Boolean", {{0}}, {0}, NULL, NULL, FR__SP_NONE},
};

/* ComfyUI core node types that flowrun has (or will have) under the same name, with ComfyUI's inputs,
 * choices and outputs in ComfyUI's order. Import maps one only when the registry has it. */
static const char *const fr__same[] = {"VAEDecode",
                                       "VAEEncode",
                                       "SaveImage",
                                       "PreviewImage",
                                       "ImageBlend",
                                       "ImageInvert",
                                       "Canny",
                                       "ControlNetLoader",
                                       "LoraLoader",
                                       "LoraLoaderModelOnly",
                                       "VAELoader",
                                       "CLIPSetLastLayer",
                                       "UNETLoader",
                                       "CLIPLoader",
                                       "ModelSamplingDiscrete",
                                       "LoadImageMask",
                                       "ImageToMask",
                                       "MaskToImage",
                                       "InvertMask",
                                       "GrowMask",
                                       "FeatherMask",
                                       "SolidMask",
                                       "ThresholdMask",
                                       "MaskComposite",
                                       "VAEEncodeForInpaint",
                                       "SetLatentNoiseMask",
                                       "InpaintModelConditioning",
                                       "ImagePadForOutpaint",
                                       "LatentUpscale",
                                       "LatentUpscaleBy",
                                       "ImageScale",
                                       "ImageScaleBy",
                                       "ImageCrop",
                                       "LatentCrop",
                                       "LatentComposite",
                                       "UpscaleModelLoader",
                                       "ImageUpscaleWithModel",
                                       "RepeatLatentBatch",
                                       "LatentFromBatch",
                                       "ImageBatch",
                                       "ImageFromBatch",
                                       NULL};

/* Sampler and scheduler names: ComfyUI's on the left, flowrun's on the right. A ComfyUI name that flowrun's
 * Sampler lists among its choices maps to itself; these rows are the exceptions. A NULL right side: no
 * counterpart (refused with the reason). note: said when the mapping is used. */
struct fr__name {
  const char *comfy, *fr, *note;
};
static const struct fr__name fr__samplers[] = {
    {"dpmpp_2m_sde", "dpmpp_2m_sde",
     "sampler dpmpp_2m_sde: flowrun draws its noise from the seed step by step, ComfyUI from a Brownian "
     "tree, so the picture differs from ComfyUI's (docs/sampling.md)"},
    {"dpmpp_2m_sde_gpu", "dpmpp_2m_sde",
     "sampler dpmpp_2m_sde_gpu: mapped to dpmpp_2m_sde; flowrun draws its noise from the seed step by step, "
     "ComfyUI from a Brownian tree, so the picture differs from ComfyUI's (docs/sampling.md)"},
    {NULL, NULL, NULL}};
static const struct fr__name fr__scheds[] = {{NULL, NULL, NULL}};
/* The names both sides share (export checks against these: flowrun's own extra names have no ComfyUI
 * counterpart). */
static const char *const fr__comfy_sampler_names[] = {
    "euler", "euler_ancestral", "heun",       "dpm_2", "lms", "dpmpp_2m", "dpmpp_2m_sde", "ddim",
    "ddpm",  "uni_pc",          "uni_pc_bh2", "lcm",   NULL};
static const char *const fr__comfy_sched_names[] = {"normal",      "simple",       "karras", "exponential",
                                                    "sgm_uniform", "ddim_uniform", NULL};

static bool fr__in_list(const char *const *l, const char *s) {
  for (; *l; l++)
    if (!strcmp(*l, s))
      return true;
  return false;
}

static const struct fr__cmap *fr__map_of_comfy(const char *comfy) {
  for (size_t i = 0; i < sizeof fr__maps / sizeof fr__maps[0]; i++)
    if (!strcmp(fr__maps[i].comfy, comfy))
      return &fr__maps[i];
  return NULL;
}

/* Output name list "a,b,c": the name at index slot into buf, false when there is none. */
static bool fr__outs_at(const char *outs, int slot, char *buf, size_t cap) {
  const char *p = outs;
  for (int i = 0; p; i++) {
    const char *e = strchr(p, ',');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    if (i == slot) {
      if (n >= cap)
        return false;
      memcpy(buf, p, n);
      buf[n] = 0;
      return true;
    }
    p = e ? e + 1 : NULL;
  }
  return false;
}

static int fr__outs_index(const char *outs, const char *name) {
  char buf[64];
  for (int i = 0; fr__outs_at(outs, i, buf, sizeof buf); i++)
    if (!strcmp(buf, name))
      return i;
  return -1;
}

int fr_comfy_aliases(const char *fr_type, const char **names, int max) {
  int n = 0;
  for (size_t i = 0; i < sizeof fr__maps / sizeof fr__maps[0] && n < max; i++)
    if (!strcmp(fr__maps[i].fr, fr_type))
      names[n++] = fr__maps[i].comfy;
  bool listed = false;
  for (int i = 0; i < n && !listed; i++)
    listed = !strcmp(names[i], fr_type);
  if (n < max && !listed && fr__in_list(fr__same, fr_type))
    names[n++] = fr_type;
  return n;
}

/* ---- import ---- */

struct fr__inode {
  const char *cid;   /* ComfyUI id */
  const char *ctype; /* class_type */
  const char *title; /* _meta.title or NULL */
  const struct fr_json *inputs;
  const struct fr__cmap *map; /* NULL: same name */
  const struct fr_node_spec *spec;
  const char *id, *id2; /* flowrun ids (id2: the negative half of ControlNetApplyAdvanced) */
  int depth, row;
};

struct fr__imp {
  const struct fr_registry *reg;
  struct fr_arena *a;
  const char *source;
  struct fr__inode *n;
  int count;
  struct fr_buf *notes;
  struct fr_buf body; /* the nodes' YAML */
  struct fr_buf ycomments;
  struct fr_err *err;
};

static void fr__note(struct fr__imp *im, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fr__note(struct fr__imp *im, const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (im->notes) {
    fr_buf_puts(im->notes, line);
    fr_buf_putc(im->notes, '\n');
  }
  fr_buf_printf(&im->ycomments, "# note: %s\n", line);
}

static int fr__find(const struct fr__imp *im, const char *cid) {
  for (int i = 0; i < im->count; i++)
    if (!strcmp(im->n[i].cid, cid))
      return i;
  return -1;
}

/* "node 3 (KSampler 'My sampler')" for messages. */
static const char *fr__who(const struct fr__inode *n, char *buf, size_t cap) {
  if (n->title && strcmp(n->title, n->ctype))
    snprintf(buf, cap, "node %s (%s '%s')", n->cid, n->ctype, n->title);
  else
    snprintf(buf, cap, "node %s (%s)", n->cid, n->ctype);
  return buf;
}

/* A flowrun id from the type and the ComfyUI id: "sampler_3"; characters outside [A-Za-z0-9_-] become
 * '_'; a clash gets a numeric suffix. */
static const char *fr__make_id(struct fr__imp *im, const char *type, const char *cid, const char *suffix) {
  char base[128];
  size_t k = 0;
  for (const char *p = type; *p && k < 40; p++)
    base[k++] = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
  base[k++] = '_';
  for (const char *p = cid; *p && k < 100; p++) {
    char c = *p;
    bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    base[k++] = ok ? c : '_';
  }
  base[k] = 0;
  if (suffix)
    snprintf(base + k, sizeof base - k, "_%s", suffix);
  char id[160];
  snprintf(id, sizeof id, "%s", base);
  for (int tries = 2;; tries++) {
    bool clash = false;
    for (int i = 0; i < im->count && !clash; i++)
      clash = (im->n[i].id && !strcmp(im->n[i].id, id)) || (im->n[i].id2 && !strcmp(im->n[i].id2, id));
    if (!clash)
      break;
    snprintf(id, sizeof id, "%s_%d", base, tries);
  }
  return fr_arena_strdup(im->a, id);
}

/* A JSON value that is a link: [source_id, slot] with the id a string or integer and slot an integer. */
static bool fr__is_link(const struct fr_json *v, const char **src, int *slot, char *numbuf, size_t cap) {
  if (v->type != FR_JSON_ARRAY || v->n != 2 || v->items[1].type != FR_JSON_NUMBER || !v->items[1].is_int)
    return false;
  const struct fr_json *s = &v->items[0];
  if (s->type == FR_JSON_STRING)
    *src = s->str;
  else if (s->type == FR_JSON_NUMBER && s->is_int) {
    snprintf(numbuf, cap, "%lld", (long long)s->i);
    *src = numbuf;
  } else
    return false;
  if (v->items[1].i < 0 || v->items[1].i > 1000)
    return false;
  *slot = (int)v->items[1].i;
  return true;
}

/* The flowrun node and output of a ComfyUI node's output slot: "id.output". */
static enum fr_status fr__slot_ref(struct fr__imp *im, const struct fr__inode *who, const char *in_name,
                                   const char *src, int slot, char *buf, size_t cap) {
  char w[300];
  int j = fr__find(im, src);
  if (j < 0)
    return fr_errf(im->err, FR_E_INVALID,
                   "%s: %s: input '%s' links to node %s, which the workflow does not have", im->source,
                   fr__who(who, w, sizeof w), in_name, src);
  const struct fr__inode *s = &im->n[j];
  char out[64];
  const char *node = s->id;
  if (s->map && s->map->special == FR__SP_CN_ADV) {
    if (slot > 1)
      goto bad;
    node = slot == 0 ? s->id : s->id2;
    snprintf(out, sizeof out, "conditioning");
  } else if (s->map && s->map->outs) {
    if (!fr__outs_at(s->map->outs, slot, out, sizeof out))
      goto bad;
  } else {
    if (slot >= s->spec->n_outputs)
      goto bad;
    snprintf(out, sizeof out, "%s", s->spec->outputs[slot].name);
  }
  snprintf(buf, cap, "%s.%s", node, out);
  return FR_OK;
bad:;
  char w2[300];
  return fr_errf(im->err, FR_E_INVALID,
                 "%s: %s: input '%s' links to output %d of %s, which has no such output", im->source,
                 fr__who(who, w, sizeof w), in_name, slot, fr__who(s, w2, sizeof w2));
}

/* Shortest decimal text that reads back as d. */
static void fr__put_double(struct fr_buf *b, double d) {
  char t[40];
  for (int p = 6; p <= 17; p++) {
    snprintf(t, sizeof t, "%.*g", p, d);
    if (strtod(t, NULL) == d)
      break;
  }
  fr_buf_puts(b, t);
}

/* A string as a YAML double-quoted scalar (JSON escapes are YAML escapes); a leading '$' is doubled so
 * flowrun reads it as text, not a param. */
static void fr__put_yaml_str(struct fr_buf *b, const char *s) {
  if (s[0] == '$') {
    char *t = fr_malloc(strlen(s) + 2);
    if (!t) {
      b->oom = true;
      return;
    }
    t[0] = '$';
    strcpy(t + 1, s);
    fr_buf_json_str(b, t);
    fr_free(t);
  } else {
    fr_buf_json_str(b, s);
  }
}

static const char *fr__map_name(const struct fr__name *t, const char *comfy, const char **note) {
  for (; t->comfy; t++)
    if (!strcmp(t->comfy, comfy)) {
      *note = t->note;
      return t->fr;
    }
  *note = NULL;
  return comfy;
}

/* Writes one input's literal value, checked against the flowrun input's type. */
static enum fr_status fr__put_literal(struct fr__imp *im, const struct fr__inode *n, const char *cname,
                                      const struct fr_input_spec *in, enum fr__cv cv,
                                      const struct fr_json *v) {
  char w[300];
  const char *t = in->type;
  struct fr_buf *b = &im->body;
  if (cv == FR__CV_ENABLE) {
    if (v->type != FR_JSON_STRING || (strcmp(v->str, "enable") && strcmp(v->str, "disable")))
      goto bad;
    fr_buf_puts(b, !strcmp(v->str, "enable") ? "true" : "false");
    return FR_OK;
  }
  if (!strcmp(t, FR_T_INT)) {
    if (v->type != FR_JSON_NUMBER || v->num != floor(v->num) || fabs(v->num) > 9007199254740992.0)
      goto bad;
    fr_buf_printf(b, "%lld", v->is_int ? (long long)v->i : (long long)v->num);
  } else if (!strcmp(t, FR_T_FLOAT)) {
    if (v->type != FR_JSON_NUMBER)
      goto bad;
    fr__put_double(b, v->num);
  } else if (!strcmp(t, FR_T_BOOL)) {
    if (v->type != FR_JSON_BOOL)
      goto bad;
    fr_buf_puts(b, v->b ? "true" : "false");
  } else if (!strcmp(t, FR_T_ENUM)) {
    if (v->type != FR_JSON_STRING)
      goto bad;
    const char *note = NULL, *name = v->str;
    if (cv == FR__CV_SAMPLER)
      name = fr__map_name(fr__samplers, v->str, &note);
    else if (cv == FR__CV_SCHED)
      name = fr__map_name(fr__scheds, v->str, &note);
    bool ok = name != NULL;
    if (ok && in->choices) {
      ok = false;
      for (const char *const *c = in->choices; *c && !ok; c++)
        ok = !strcmp(*c, name);
    }
    if (!ok) {
      char list[400] = "";
      size_t k = 0;
      for (const char *const *c = in->choices; c && *c && k + 2 < sizeof list; c++)
        k += (size_t)snprintf(list + k, sizeof list - k, "%s%s", k ? ", " : "", *c);
      return fr_errf(im->err, FR_E_UNSUPPORTED, "%s: %s: %s '%s' has no counterpart in flowrun; it has: %s",
                     im->source, fr__who(n, w, sizeof w), cname, v->str, list);
    }
    if (note)
      fr__note(im, "%s: %s", fr__who(n, w, sizeof w), note);
    fr__put_yaml_str(b, name);
  } else if (!strcmp(t, FR_T_STRING)) {
    if (v->type != FR_JSON_STRING)
      goto bad;
    if (in->flags & (FR_IN_MODEL_FILE | FR_IN_FILE)) {
      /* ComfyUI on Windows writes subfolders with backslashes: "SD1.5\\model.safetensors" */
      char *s = fr_arena_strdup(im->a, v->str);
      if (!s)
        return fr_errf(im->err, FR_E_NOMEM, "out of memory");
      for (char *p = s; *p; p++)
        if (*p == '\\')
          *p = '/';
      fr__put_yaml_str(b, s);
    } else {
      fr__put_yaml_str(b, v->str);
    }
  } else {
    goto bad; /* a socket input given a literal */
  }
  return FR_OK;
bad:
  return fr_errf(im->err, FR_E_INVALID,
                 "%s: %s: input '%s' has a value that does not fit flowrun's %s input '%s' (%s)", im->source,
                 fr__who(n, w, sizeof w), cname, n->spec->name, in->name, t);
}

static const struct fr__cin *fr__cin_of(const struct fr__cmap *m, const char *comfy) {
  for (int i = 0; m && i < 16 && m->in[i].comfy; i++)
    if (!strcmp(m->in[i].comfy, comfy))
      return &m->in[i];
  return NULL;
}

static bool fr__ignored(const struct fr__cmap *m, const char *comfy) {
  for (int i = 0; m && i < 4 && m->ignore[i]; i++)
    if (!strcmp(m->ignore[i], comfy))
      return true;
  return false;
}

/* How a CLIPTextEncode's output is used: bit 0 as a positive, bit 1 as a negative prompt. */
static int fr__text_roles(const struct fr__imp *im, const char *cid) {
  int roles = 0;
  char nb[32];
  for (int i = 0; i < im->count; i++) {
    const struct fr_json *ins = im->n[i].inputs;
    for (int k = 0; ins && k < ins->n; k++) {
      const char *src;
      int slot;
      if (!fr__is_link(&ins->items[k], &src, &slot, nb, sizeof nb) || strcmp(src, cid))
        continue;
      if (!strcmp(ins->keys[k], "negative"))
        roles |= 2;
      else
        roles |= 1;
    }
  }
  return roles;
}

/* One flowrun node's YAML: header, type, inputs; skip_in (may be NULL) is a ComfyUI input left out,
 * only_cond: for the halves of ControlNetApplyAdvanced, which conditioning input becomes "conditioning". */
static enum fr_status fr__emit(struct fr__imp *im, const struct fr__inode *n, const char *id,
                               const char *only_cond) {
  char w[300];
  struct fr_buf *b = &im->body;
  fr_buf_printf(b, "  %s:", id);
  if (n->title && strcmp(n->title, n->ctype)) {
    fr_buf_puts(b, "  # ");
    for (const char *p = n->title; *p; p++)
      fr_buf_putc(b, *p == '\n' || *p == '\r' ? ' ' : *p);
  }
  fr_buf_printf(b, "\n    type: %s\n    inputs:\n", n->spec->name);
  const struct fr__cmap *m = n->map;
  const struct fr_json *ins = n->inputs;
  bool given[64] = {false};
  for (int k = 0; ins && k < ins->n; k++) {
    const char *cname = ins->keys[k];
    const struct fr_json *v = &ins->items[k];
    if (fr__ignored(m, cname))
      continue;
    const char *fname = cname;
    enum fr__cv cv = FR__CV_NONE;
    const struct fr__cin *ci = fr__cin_of(m, cname);
    if (ci) {
      fname = ci->fr;
      cv = ci->cv;
    }
    if (m && m->special == FR__SP_SDXL_TEXT && (!strcmp(cname, "text_g") || !strcmp(cname, "text_l"))) {
      if (!strcmp(cname, "text_l"))
        continue; /* checked equal to text_g in fr__check */
      fname = "text";
    }
    if (only_cond) {
      if (!strcmp(cname, "positive") || !strcmp(cname, "negative")) {
        if (strcmp(cname, only_cond))
          continue;
        fname = "conditioning";
      }
    }
    int idx = fr_spec_input_index(n->spec, fname);
    if (idx < 0)
      return fr_errf(im->err, FR_E_UNSUPPORTED, "%s: %s: input '%s' has no counterpart in flowrun's %s",
                     im->source, fr__who(n, w, sizeof w), cname, n->spec->name);
    if (idx < 64)
      given[idx] = true;
    const struct fr_input_spec *in = &n->spec->inputs[idx];
    fr_buf_printf(b, "      %s: ", fname);
    const char *src;
    int slot;
    char nb[32], ref[300];
    if (fr__is_link(v, &src, &slot, nb, sizeof nb)) {
      enum fr_status rc = fr__slot_ref(im, n, cname, src, slot, ref, sizeof ref);
      if (rc)
        return rc;
      if (fr_type_is_primitive(in->type))
        fr_buf_printf(b, "{from: %s}\n", ref);
      else
        fr_buf_printf(b, "%s\n", ref);
      continue;
    }
    enum fr_status rc = fr__put_literal(im, n, cname, in, cv, v);
    if (rc)
      return rc;
    fr_buf_putc(b, '\n');
  }
  /* literals the ComfyUI type implies */
  if (m && m->set) {
    const char *p = m->set;
    while (*p) {
      const char *e = strchr(p, ',');
      size_t len = e ? (size_t)(e - p) : strlen(p);
      char kv[96];
      snprintf(kv, sizeof kv, "%.*s", (int)len, p);
      char *eq = strchr(kv, '=');
      if (eq) {
        *eq = 0;
        int idx = fr_spec_input_index(n->spec, kv);
        if (idx >= 0 && !(idx < 64 && given[idx]))
          fr_buf_printf(b, "      %s: %s\n", kv, eq + 1);
      }
      p = e ? e + 1 : p + len;
    }
  }
  if (m && m->special == FR__SP_TEXT && fr_spec_input_index(n->spec, "aesthetic_score") >= 0) {
    int roles = fr__text_roles(im, n->cid);
    if (roles == 2)
      fr_buf_puts(b, "      aesthetic_score: 2.5\n"); /* ComfyUI's default for a negative refiner prompt */
    else if (roles == 3)
      fr__note(im,
               "%s is used as a positive and a negative prompt: with an SDXL refiner, ComfyUI scores it 6 "
               "as the positive and 2.5 as the negative; flowrun uses 6 for both",
               fr__who(n, w, sizeof w));
  }
  fr_buf_printf(b, "    ui: {x: %d, y: %d}\n", n->depth * 340, n->row * 260);
  return FR_OK;
}

/* Longest-path depth of every node from its sources, and a row within its depth: a readable layout for
 * the editor (the API format has no positions). */
static void fr__layout(struct fr__imp *im) {
  char nb[32];
  for (int round = 0; round < im->count; round++) {
    bool changed = false;
    for (int i = 0; i < im->count; i++) {
      const struct fr_json *ins = im->n[i].inputs;
      for (int k = 0; ins && k < ins->n; k++) {
        const char *src;
        int slot;
        if (!fr__is_link(&ins->items[k], &src, &slot, nb, sizeof nb))
          continue;
        int j = fr__find(im, src);
        if (j >= 0 && im->n[j].depth + 1 > im->n[i].depth && im->n[j].depth + 1 <= im->count) {
          im->n[i].depth = im->n[j].depth + 1;
          changed = true;
        }
      }
    }
    if (!changed)
      break;
  }
  for (int i = 0; i < im->count; i++)
    for (int j = 0; j < i; j++)
      if (im->n[j].depth == im->n[i].depth)
        im->n[i].row = im->n[j].row + 1 > im->n[i].row ? im->n[j].row + 1 : im->n[i].row;
}

/* Structural checks of a node beyond its inputs' names. */
static enum fr_status fr__check(struct fr__imp *im, const struct fr__inode *n) {
  char w[300];
  if (n->map && n->map->special == FR__SP_SDXL_TEXT) {
    const struct fr_json *g = fr_json_get(n->inputs, "text_g"), *l = fr_json_get(n->inputs, "text_l");
    bool same = g && l && g->type == l->type &&
                ((g->type == FR_JSON_STRING && g->len == l->len && !memcmp(g->str, l->str, g->len)) ||
                 (g->type == FR_JSON_ARRAY && g->n == 2 && l->n == 2 &&
                  g->items[0].type == l->items[0].type && g->items[0].type == FR_JSON_STRING &&
                  !strcmp(g->items[0].str, l->items[0].str) && g->items[1].i == l->items[1].i));
    if (!same)
      return fr_errf(
          im->err, FR_E_UNSUPPORTED,
          "%s: %s: text_g and text_l differ; flowrun's TextEncode gives both SDXL encoders one prompt",
          im->source, fr__who(n, w, sizeof w));
  }
  return FR_OK;
}

enum fr_status fr_comfy_import(const struct fr_registry *reg, const char *json, size_t len,
                               const char *source, struct fr_buf *yaml, struct fr_buf *notes,
                               struct fr_err *err) {
  struct fr__imp im = {.reg = reg, .source = source ? source : "<workflow>", .notes = notes, .err = err};
  im.a = fr_arena_new(0);
  if (!im.a)
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  enum fr_status rc = FR_OK;
  struct fr_json *root = NULL;
  struct fr_err jerr = {{0}};
  if (fr_json_parse(im.a, json, len, 64, &root, &jerr)) {
    rc = fr_errf(err, FR_E_FORMAT, "%s: not JSON: %s", im.source, jerr.msg);
    goto done;
  }
  if (root->type != FR_JSON_OBJECT) {
    rc = fr_errf(err, FR_E_FORMAT, "%s: expected ComfyUI's API format, a JSON object of nodes", im.source);
    goto done;
  }
  if (fr_json_get(root, "nodes") && fr_json_get(root, "links")) {
    rc =
        fr_errf(err, FR_E_FORMAT,
                "%s: this is ComfyUI's UI workflow format (nodes and links); flowrun imports the API format: "
                "in ComfyUI use Workflow > Export (API), or give the PNG ComfyUI saved (its prompt chunk)",
                im.source);
    goto done;
  }
  if (root->n == 0) {
    rc = fr_errf(err, FR_E_FORMAT, "%s: the workflow has no nodes", im.source);
    goto done;
  }
  im.n = fr_arena_alloc(im.a, sizeof *im.n * (size_t)root->n);
  if (!im.n) {
    rc = fr_errf(err, FR_E_NOMEM, "out of memory");
    goto done;
  }
  memset(im.n, 0, sizeof *im.n * (size_t)root->n);
  /* nodes, and every type without a counterpart at once */
  struct fr_buf missing = {0};
  int n_missing = 0;
  for (int i = 0; i < root->n; i++) {
    const struct fr_json *o = &root->items[i];
    const char *ct = fr_json_str(o, "class_type", NULL);
    const struct fr_json *ins = fr_json_get(o, "inputs");
    if (o->type != FR_JSON_OBJECT || !ct || (ins && ins->type != FR_JSON_OBJECT)) {
      fr_buf_free(&missing);
      rc = fr_errf(err, FR_E_FORMAT,
                   "%s: node %s is not a ComfyUI API node ({\"class_type\": ..., \"inputs\": {...}})",
                   im.source, root->keys[i]);
      goto done;
    }
    struct fr__inode *n = &im.n[im.count++];
    n->cid = root->keys[i];
    n->ctype = ct;
    n->inputs = ins;
    n->title = fr_json_str(fr_json_get(o, "_meta"), "title", NULL);
    n->map = fr__map_of_comfy(ct);
    const char *fr_type = n->map ? n->map->fr : (fr__in_list(fr__same, ct) ? ct : NULL);
    n->spec = fr_type ? fr_registry_find(reg, fr_type) : NULL;
    if (!n->spec) {
      bool seen = false;
      for (int j = 0; j < im.count - 1 && !seen; j++)
        seen = !im.n[j].spec && !strcmp(im.n[j].ctype, ct);
      if (!seen) {
        fr_buf_printf(&missing, "%s%s", n_missing ? ", " : "", ct);
        n_missing++;
      }
    }
  }
  if (n_missing) {
    rc = fr_errf(err, FR_E_UNSUPPORTED, "%s: %d node type%s without a flowrun counterpart: %s", im.source,
                 n_missing, n_missing == 1 ? "" : "s", missing.data ? missing.data : "");
    fr_buf_free(&missing);
    goto done;
  }
  fr_buf_free(&missing);
  for (int i = 0; i < im.count; i++) {
    struct fr__inode *n = &im.n[i];
    if (n->map && n->map->special == FR__SP_CN_ADV) {
      n->id = fr__make_id(&im, n->spec->name, n->cid, "positive");
      n->id2 = fr__make_id(&im, n->spec->name, n->cid, "negative");
    } else {
      n->id = fr__make_id(&im, n->spec->name, n->cid, NULL);
    }
    if (!n->id || (n->map && n->map->special == FR__SP_CN_ADV && !n->id2)) {
      rc = fr_errf(err, FR_E_NOMEM, "out of memory");
      goto done;
    }
  }
  fr__layout(&im);
  for (int i = 0; i < im.count && !rc; i++) {
    struct fr__inode *n = &im.n[i];
    if ((rc = fr__check(&im, n)))
      break;
    if (n->map && n->map->special == FR__SP_CN_ADV) {
      rc = fr__emit(&im, n, n->id, "positive");
      if (!rc) {
        n->row += 1; /* the negative half just below */
        rc = fr__emit(&im, n, n->id2, "negative");
        n->row -= 1;
      }
    } else {
      rc = fr__emit(&im, n, n->id, NULL);
    }
  }
  if (rc)
    goto done;
  fr_buf_printf(yaml, "# Imported from the ComfyUI workflow %s by flowrun import comfy.\n", im.source);
  if (im.ycomments.len)
    fr_buf_append(yaml, im.ycomments.data, im.ycomments.len);
  fr_buf_puts(yaml, "flowrun: 1\nnodes:\n");
  if (im.body.len)
    fr_buf_append(yaml, im.body.data, im.body.len);
  if (yaml->oom || im.body.oom || im.ycomments.oom || (notes && notes->oom))
    rc = fr_errf(err, FR_E_NOMEM, "out of memory");
done:
  fr_buf_free(&im.body);
  fr_buf_free(&im.ycomments);
  fr_arena_free(im.a);
  return rc;
}

/* ---- export ---- */

struct fr__exp {
  const struct fr_graph *g;
  struct fr_buf *out, *notes;
  struct fr_err *err;
  int next_id;         /* ids for nodes export adds (CLIPSetLastLayer) */
  struct fr_buf extra; /* their JSON members */
  bool first;
};

static void fr__xnote(struct fr__exp *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fr__xnote(struct fr__exp *x, const char *fmt, ...) {
  if (!x->notes)
    return;
  va_list ap;
  va_start(ap, fmt);
  char line[512];
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  fr_buf_puts(x->notes, line);
  fr_buf_putc(x->notes, '\n');
}

static const struct fr_binding *fr__bind(const struct fr_gnode *n, const char *name) {
  int i = fr_spec_input_index(n->spec, name);
  return i < 0 ? NULL : &n->inputs[i];
}

static int64_t fr__lit_i(const struct fr_gnode *n, const char *name) {
  const struct fr_binding *b = fr__bind(n, name);
  return b && b->kind == FR_BIND_LITERAL ? b->literal->i : 0;
}
static double fr__lit_f(const struct fr_gnode *n, const char *name) {
  const struct fr_binding *b = fr__bind(n, name);
  if (!b || b->kind != FR_BIND_LITERAL)
    return 0;
  return b->literal->kind == FR_V_INT ? (double)b->literal->i : b->literal->f;
}
static bool fr__lit_b(const struct fr_gnode *n, const char *name) {
  const struct fr_binding *b = fr__bind(n, name);
  return b && b->kind == FR_BIND_LITERAL && b->literal->b;
}
static const char *fr__lit_s(const struct fr_gnode *n, const char *name) {
  const struct fr_binding *b = fr__bind(n, name);
  return b && b->kind == FR_BIND_LITERAL && b->literal->kind == FR_V_STRING ? b->literal->s : NULL;
}
static bool fr__is_lit(const struct fr_gnode *n, const char *name) {
  const struct fr_binding *b = fr__bind(n, name);
  return b && b->kind == FR_BIND_LITERAL;
}

/* The ComfyUI output slot of flowrun node src's output idx. */
static int fr__export_slot(const struct fr_gnode *src, int idx) {
  const char *t = src->spec->name, *name = src->spec->outputs[idx].name;
  for (size_t i = 0; i < sizeof fr__maps / sizeof fr__maps[0]; i++)
    if (!strcmp(fr__maps[i].fr, t) && fr__maps[i].outs && fr__maps[i].special == FR__SP_NONE)
      return fr__outs_index(fr__maps[i].outs, name);
  return idx;
}

/* Writes "name": value for a flowrun input (a link or a literal) under a ComfyUI name. */
static void fr__xput(struct fr__exp *x, struct fr_buf *b, const struct fr_gnode *n, const char *fname,
                     const char *cname, enum fr__cv cv) {
  const struct fr_binding *bd = fr__bind(n, fname);
  if (!bd || bd->kind == FR_BIND_NONE)
    return;
  fr_buf_printf(b, "%s", b->len && b->data[b->len - 1] != '{' ? ", " : "");
  fr_buf_json_str(b, cname);
  fr_buf_puts(b, ": ");
  if (bd->kind == FR_BIND_LINK) {
    const struct fr_gnode *src = &x->g->nodes[bd->src_node];
    fr_buf_printf(b, "[\"%d\", %d]", bd->src_node + 1, fr__export_slot(src, bd->src_output));
    return;
  }
  const struct fr_value *v = bd->literal;
  switch (v->kind) {
  case FR_V_INT: fr_buf_printf(b, "%lld", (long long)v->i); break;
  case FR_V_FLOAT: fr__put_double(b, v->f); break;
  case FR_V_BOOL:
    if (cv == FR__CV_ENABLE)
      fr_buf_puts(b, v->b ? "\"enable\"" : "\"disable\"");
    else
      fr_buf_puts(b, v->b ? "true" : "false");
    break;
  case FR_V_STRING: fr_buf_json_str(b, v->s); break;
  default: fr_buf_puts(b, "null");
  }
}

static enum fr_status fr__xfail(struct fr__exp *x, const struct fr_gnode *n, const char *why) {
  return fr_errf(x->err, FR_E_UNSUPPORTED, "node %s (%s) has no ComfyUI counterpart: %s", n->id,
                 n->spec->name, why);
}

static enum fr_status fr__export_node(struct fr__exp *x, int i, struct fr_buf *b, const char **ctype) {
  const struct fr_gnode *n = &x->g->nodes[i];
  const char *t = n->spec->name;
  fr_buf_putc(b, '{');
  if (!strcmp(t, "Sampler") || !strcmp(t, "Refiner")) {
    const char *sn = fr__lit_s(n, "sampler"), *sc = fr__lit_s(n, "scheduler");
    if (!sn || !fr__in_list(fr__comfy_sampler_names, sn))
      return fr__xfail(x, n, "its sampler is not one of ComfyUI's");
    if (!sc || !fr__in_list(fr__comfy_sched_names, sc))
      return fr__xfail(x, n,
                       "its scheduler is diffusers' (ComfyUI has normal, simple, karras, exponential, "
                       "sgm_uniform, ddim_uniform)");
    if (!strcmp(sn, "dpmpp_2m_sde"))
      fr__xnote(x,
                "node %s: dpmpp_2m_sde in ComfyUI draws its noise from a Brownian tree: the picture differs",
                n->id);
    bool refiner = !strcmp(t, "Refiner");
    if (!refiner && fr__bind(n, "noise") && fr__bind(n, "noise")->kind != FR_BIND_NONE)
      return fr__xfail(x, n, "its noise input (ComfyUI's samplers draw noise from the seed only)");
    for (int k = 0; k < n->spec->n_inputs; k++)
      if (fr_type_is_primitive(n->spec->inputs[k].type) && n->inputs[k].kind == FR_BIND_LINK)
        return fr__xfail(x, n, "a widget fed by a link (export resolves literals only)");
    int64_t steps = fr__lit_i(n, "steps");
    bool plain = !refiner && fr__lit_i(n, "start_step") == 0 && fr__lit_i(n, "end_step") >= steps &&
                 fr__lit_b(n, "add_noise") && !fr__lit_b(n, "return_with_leftover_noise");
    if (plain) {
      *ctype = "KSampler";
      fr__xput(x, b, n, "seed", "seed", FR__CV_NONE);
      fr__xput(x, b, n, "steps", "steps", FR__CV_NONE);
      fr__xput(x, b, n, "cfg", "cfg", FR__CV_NONE);
      fr__xput(x, b, n, "sampler", "sampler_name", FR__CV_NONE);
      fr__xput(x, b, n, "scheduler", "scheduler", FR__CV_NONE);
      fr__xput(x, b, n, "denoise", "denoise", FR__CV_NONE);
    } else {
      if (!refiner && fr__lit_f(n, "denoise") != 1.0)
        return fr__xfail(x, n, "denoise below 1 together with start/end steps or noise settings");
      *ctype = "KSamplerAdvanced";
      if (refiner) {
        fr_buf_puts(b, "\"add_noise\": \"disable\"");
        fr__xput(x, b, n, "seed", "noise_seed", FR__CV_NONE);
        fr__xput(x, b, n, "switch_step", "start_at_step", FR__CV_NONE);
        fr_buf_puts(b, ", \"end_at_step\": 10000, \"return_with_leftover_noise\": \"disable\"");
      } else {
        fr__xput(x, b, n, "add_noise", "add_noise", FR__CV_ENABLE);
        fr__xput(x, b, n, "seed", "noise_seed", FR__CV_NONE);
        fr__xput(x, b, n, "start_step", "start_at_step", FR__CV_NONE);
        fr__xput(x, b, n, "end_step", "end_at_step", FR__CV_NONE);
        fr__xput(x, b, n, "return_with_leftover_noise", "return_with_leftover_noise", FR__CV_ENABLE);
      }
      fr__xput(x, b, n, "steps", "steps", FR__CV_NONE);
      fr__xput(x, b, n, "cfg", "cfg", FR__CV_NONE);
      fr__xput(x, b, n, "sampler", "sampler_name", FR__CV_NONE);
      fr__xput(x, b, n, "scheduler", "scheduler", FR__CV_NONE);
    }
    fr__xput(x, b, n, "model", "model", FR__CV_NONE);
    fr__xput(x, b, n, "positive", "positive", FR__CV_NONE);
    fr__xput(x, b, n, "negative", "negative", FR__CV_NONE);
    fr__xput(x, b, n, "latent", "latent_image", FR__CV_NONE);
  } else if (!strcmp(t, "TextEncode")) {
    static const char *const sizes[] = {"width", "height", "target_width", "target_height"};
    int zeros = 0, defaults = 0;
    for (int k = 0; k < 4; k++) {
      if (!fr__is_lit(n, sizes[k]))
        return fr__xfail(x, n, "a size widget fed by a link");
      zeros += fr__lit_i(n, sizes[k]) == 0;
      defaults += fr__lit_i(n, sizes[k]) == 1024;
    }
    bool crops = fr__lit_i(n, "crop_w") || fr__lit_i(n, "crop_h");
    const struct fr_binding *clip = fr__bind(n, "clip");
    if (fr__lit_i(n, "clip_skip") == 2 && clip && clip->kind == FR_BIND_LINK) {
      /* ComfyUI sets the layer on the CLIP: a CLIPSetLastLayer (-2 = penultimate) in front */
      int id = x->next_id++;
      fr_buf_printf(&x->extra,
                    ", \"%d\": {\"class_type\": \"CLIPSetLastLayer\", \"inputs\": "
                    "{\"stop_at_clip_layer\": -2, \"clip\": [\"%d\", %d]}}",
                    id, clip->src_node + 1, fr__export_slot(&x->g->nodes[clip->src_node], clip->src_output));
      fr_buf_printf(b, "\"clip\": [\"%d\", 0]", id);
    } else {
      fr__xput(x, b, n, "clip", "clip", FR__CV_NONE);
    }
    if (zeros == 4 && !crops) {
      *ctype = "CLIPTextEncode";
      fr__xput(x, b, n, "text", "text", FR__CV_NONE);
    } else if (defaults == 4 && !crops) {
      *ctype = "CLIPTextEncode";
      fr__xput(x, b, n, "text", "text", FR__CV_NONE);
      fr__xnote(
          x,
          "node %s: TextEncode's SDXL size conditioning 1024x1024 becomes ComfyUI's CLIPTextEncode, which "
          "conditions on the image's size (the same for 1024x1024 pictures and for SD1.x models)",
          n->id);
    } else if (zeros == 0) {
      *ctype = "CLIPTextEncodeSDXL";
      fr__xput(x, b, n, "width", "width", FR__CV_NONE);
      fr__xput(x, b, n, "height", "height", FR__CV_NONE);
      fr__xput(x, b, n, "crop_w", "crop_w", FR__CV_NONE);
      fr__xput(x, b, n, "crop_h", "crop_h", FR__CV_NONE);
      fr__xput(x, b, n, "target_width", "target_width", FR__CV_NONE);
      fr__xput(x, b, n, "target_height", "target_height", FR__CV_NONE);
      fr__xput(x, b, n, "text", "text_g", FR__CV_NONE);
      fr__xput(x, b, n, "text", "text_l", FR__CV_NONE);
    } else {
      return fr__xfail(x, n, "some of its SDXL sizes are 0 (the image's size) and some are not");
    }
  } else if (!strcmp(t, "ControlNet")) {
    if (fr__lit_f(n, "start_percent") == 0.0 && fr__lit_f(n, "end_percent") == 1.0) {
      *ctype = "ControlNetApply";
      fr__xput(x, b, n, "conditioning", "conditioning", FR__CV_NONE);
    } else {
      /* the advanced node applies to two conditionings: give it this one twice and use its first output */
      *ctype = "ControlNetApplyAdvanced";
      fr__xput(x, b, n, "conditioning", "positive", FR__CV_NONE);
      fr__xput(x, b, n, "conditioning", "negative", FR__CV_NONE);
      fr__xput(x, b, n, "start_percent", "start_percent", FR__CV_NONE);
      fr__xput(x, b, n, "end_percent", "end_percent", FR__CV_NONE);
    }
    fr__xput(x, b, n, "control_net", "control_net", FR__CV_NONE);
    fr__xput(x, b, n, "image", "image", FR__CV_NONE);
    fr__xput(x, b, n, "strength", "strength", FR__CV_NONE);
  } else if (!strcmp(t, "VAEDecode") && fr__lit_i(n, "tile_size") != 0) {
    return fr__xfail(x, n, "tile_size (ComfyUI's VAEDecodeTiled blends its tiles differently)");
  } else if (!strcmp(t, "CheckpointLoader") && fr__bind(n, "tokenizer") &&
             fr__bind(n, "tokenizer")->kind != FR_BIND_NONE) {
    return fr__xfail(x, n, "its tokenizer input (ComfyUI brings its own)");
  } else {
    /* a table row (renamed inputs) or the same name */
    const struct fr__cmap *m = NULL;
    for (size_t k = 0; k < sizeof fr__maps / sizeof fr__maps[0] && !m; k++)
      if (!strcmp(fr__maps[k].fr, t) && fr__maps[k].special == FR__SP_NONE)
        m = &fr__maps[k];
    if (m)
      *ctype = m->comfy;
    else if (fr__in_list(fr__same, t))
      *ctype = t;
    else
      return fr__xfail(x, n, "ComfyUI has no node of this kind");
    for (int k = 0; k < n->spec->n_inputs; k++) {
      const char *fname = n->spec->inputs[k].name, *cname = fname;
      enum fr__cv cv = FR__CV_NONE;
      if (!strcmp(t, "VAEDecode") && !strcmp(fname, "tile_size"))
        continue; /* flowrun's own (0 here): ComfyUI's VAEDecode has no such input */
      for (int j = 0; m && j < 16 && m->in[j].comfy; j++)
        if (!strcmp(m->in[j].fr, fname)) {
          cname = m->in[j].comfy;
          cv = m->in[j].cv;
        }
      fr__xput(x, b, n, fname, cname, cv);
    }
  }
  fr_buf_putc(b, '}');
  return FR_OK;
}

enum fr_status fr_comfy_export(const struct fr_graph *g, struct fr_buf *out, struct fr_buf *notes,
                               struct fr_err *err) {
  struct fr__exp x = {.g = g, .out = out, .notes = notes, .err = err, .next_id = g->n_nodes + 1};
  enum fr_status rc = FR_OK;
  fr_buf_putc(out, '{');
  for (int i = 0; i < g->n_nodes && !rc; i++) {
    struct fr_buf b = {0};
    const char *ctype = NULL;
    rc = fr__export_node(&x, i, &b, &ctype);
    if (!rc) {
      fr_buf_printf(out, "%s\"%d\": {\"class_type\": ", i ? ", " : "", i + 1);
      fr_buf_json_str(out, ctype);
      fr_buf_puts(out, ", \"inputs\": ");
      fr_buf_append(out, b.data ? b.data : "{}", b.data ? b.len : 2);
      fr_buf_puts(out, ", \"_meta\": {\"title\": ");
      fr_buf_json_str(out, g->nodes[i].id);
      fr_buf_puts(out, "}}");
    }
    fr_buf_free(&b);
  }
  if (!rc && x.extra.len)
    fr_buf_append(out, x.extra.data, x.extra.len);
  fr_buf_puts(out, "}\n");
  if (!rc && (out->oom || x.extra.oom))
    rc = fr_errf(err, FR_E_NOMEM, "out of memory");
  fr_buf_free(&x.extra);
  return rc;
}
