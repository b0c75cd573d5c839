/* CLIP text encoders vs the transformers goldens (fixtures/golden/sd15_text_encoder, sdxl_text_encoder_1/2):
 * last hidden state, penultimate, pooled / projected for prompts p0..p3, loaded from the single files and
 * from the diffusers folder; plus renamed keys (no text_model. level), wrong shapes, missing tensors, no
 * encoder, bad ids, and allocation failures. */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/json.h"
#include "core/safetensors.h"
#include "nodes/models/clip.h"
#include "nodes/models/tokenizer.h"
#include "tests/test.h"

/* The fixtures README's bound for a correct fp32 CPU implementation: max|diff| / max|golden| <= 1e-4
 * (summation order differs from torch's; larger errors mean a semantic difference). FR_TEST_DEVICE /
 * FR_TEST_DTYPE run the test on another device or dtype: F32 keeps 1e-4, F16 and BF16 get
 * fr_test_golden_tol's looser bounds (tests/test.h gives the reasons). */
#define TOL32 1e-4
static double tol = TOL32;

static const char *fx;
static struct fr_ctx *ctx;

/* rel err of a context tensor against a golden entry (same element count); -1 when unusable */
static double rel_err(const struct fr_tensor *t, const struct fr_safetensors *g, const char *name) {
  const struct fr_st_entry *e = fr_st_find(g, name);
  if (!t || !e)
    return -1;
  struct fr_tensor *host = fr_ctx_download(ctx, t);
  struct fr_tensor *gv = fr_st_view(e);
  struct fr_tensor *gf = gv ? fr_tensor_to_f32(gv) : NULL;
  double r = -1;
  if (host && gf && fr_tensor_numel(host) == fr_tensor_numel(gf))
    r = fr_test_rel_err(host->data, gf->data, (long)fr_tensor_numel(gf));
  fr_tensor_free(host);
  fr_tensor_free(gv);
  fr_tensor_free(gf);
  return r;
}

/* Golden ids p<i>_ids (stored as F32 [1, 77]) as int32. */
static bool golden_ids(const struct fr_safetensors *g, int p, int32_t ids[FR_CLIP_CTX]) {
  char name[32];
  snprintf(name, sizeof name, "p%d_ids", p);
  const struct fr_st_entry *e = fr_st_find(g, name);
  if (!e || e->dtype != FR_F32 || e->nbytes != FR_CLIP_CTX * sizeof(float))
    return false;
  float v[FR_CLIP_CTX];
  memcpy(v, e->data, sizeof v);
  for (int i = 0; i < FR_CLIP_CTX; i++)
    ids[i] = (int32_t)v[i];
  return true;
}

/* Runs every prompt of golden `gname` through encoder m; checks all three outputs within tol. */
static void check_encoder(const char *label, const struct fr_clip *m, const char *gname, bool projected) {
  char path[4096];
  struct fr_err err = {{0}};
  snprintf(path, sizeof path, "%s/golden/%s.safetensors", fx, gname);
  struct fr_safetensors *g = NULL;
  CHECK_OK(fr_st_open(path, &g, &err), &err);
  if (!g)
    return;
  /* the golden ids must also be what our tokenizer makes of the prompts (pad 0 for the G encoder) */
  snprintf(path, sizeof path, "%s/golden/%s.json", fx, gname);
  size_t jlen = 0;
  char *jtext = fr_test_read_file(path, &jlen);
  struct fr_arena *a = fr_arena_new(0);
  struct fr_json *j = NULL;
  if (jtext)
    CHECK_OK(fr_json_parse(a, jtext, jlen, 0, &j, &err), &err);
  const struct fr_json *prompts = fr_json_get(j, "prompts");
  snprintf(path, sizeof path, "%s/tokenizer", fx);
  struct fr_tokenizer *tok = NULL;
  if (fr_test_have_fixture(fx, "tokenizer"))
    CHECK_OK(fr_tokenizer_load(path, &tok, &err), &err);

  for (int p = 0; p < 4; p++) {
    int32_t ids[FR_CLIP_CTX], mine[FR_CLIP_CTX];
    CHECKF(golden_ids(g, p, ids), "%s: p%d_ids", gname, p);
    if (tok && prompts && prompts->type == FR_JSON_ARRAY && p < prompts->n) {
      CHECK_OK(fr_tokenizer_window(tok, prompts->items[p].str, projected ? 0 : FR_CLIP_EOS, mine, NULL, &err),
               &err);
      CHECKF(memcmp(ids, mine, sizeof ids) == 0, "%s p%d: tokenizer ids equal the golden's", gname, p);
    }
    struct fr_clip_out o;
    CHECK_OK(fr_clip_encode(ctx, m, ids, 1, FR_CLIP_CTX, &o, &err), &err);
    char n1[32], n2[32], n3[32];
    snprintf(n1, sizeof n1, "p%d_last", p);
    snprintf(n2, sizeof n2, "p%d_penultimate", p);
    snprintf(n3, sizeof n3, "p%d_pooled", p);
    double e1 = rel_err(o.last, g, n1), e2 = rel_err(o.penultimate, g, n2);
    double e3 = rel_err(projected ? o.projected : o.pooled, g, n3);
    printf("%-34s p%d: last %.2e  penultimate %.2e  %s %.2e  (tolerance %.0e, %s)\n", label, p, e1, e2,
           projected ? "projected" : "pooled", e3, tol, fr_test_ctx_label(ctx));
    CHECKF(e1 >= 0 && e1 <= tol, "%s p%d last: %.3e", label, p, e1);
    CHECKF(e2 >= 0 && e2 <= tol, "%s p%d penultimate: %.3e", label, p, e2);
    CHECKF(e3 >= 0 && e3 <= tol, "%s p%d pooled: %.3e", label, p, e3);
    fr_clip_out_free(&o);
  }
  fr_tokenizer_free(tok);
  fr_arena_free(a);
  free(jtext);
  fr_st_close(g);
}

static void check_checkpoint(const char *file, enum fr_clip_role role, const char *gname, int heads, int proj,
                             enum fr_clip_act act) {
  char path[4096], label[256];
  struct fr_err err = {{0}};
  snprintf(path, sizeof path, "models/%s", file);
  if (!fr_test_have_fixture(fx, path))
    return;
  snprintf(path, sizeof path, "%s/models/%s", fx, file);
  struct fr_checkpoint *ck = NULL;
  CHECK_OK(fr_checkpoint_open(path, &ck, &err), &err);
  if (!ck)
    return;
  struct fr_clip *m = NULL;
  CHECK_OK(fr_clip_load(ctx, ck, role, &m, &err), &err);
  if (m) {
    const struct fr_clip_config *c = &m->cfg;
    CHECKF(c->width == 32 && c->layers == 3 && c->mlp == 64 && c->vocab == 49408 && c->ctx == 77,
           "%s: detected width %d layers %d mlp %d vocab %d ctx %d", file, c->width, c->layers, c->mlp,
           c->vocab, c->ctx);
    CHECKF(c->heads == heads && c->proj == proj && c->act == act, "%s: heads %d proj %d act %d", file,
           c->heads, c->proj, (int)c->act);
    snprintf(label, sizeof label, "%s %s", file, role == FR_CLIP_ROLE_L ? "L" : "G");
    if (gname)
      check_encoder(label, m, gname, role == FR_CLIP_ROLE_G);
  }
  fr_clip_free(m);
  fr_checkpoint_close(ck);
}

/* Rewrites sd15-tiny's text encoder into an in-memory file: rename(key) gives the new key (NULL drops the
 * tensor); a tensor named bad_name gets shape bad_shape (same element count). */
struct rewrite {
  const char *from, *to; /* prefix replacement */
  const char *drop;      /* full original key to leave out, or NULL */
  const char *bad_name;  /* full original key to mis-shape, or NULL */
  int64_t bad_shape[2];
};

static enum fr_status load_rewritten(const char *file, const char *keep_prefix, const struct rewrite *rw,
                                     enum fr_clip_role role, struct fr_clip **out, struct fr_err *err) {
  char path[4096];
  snprintf(path, sizeof path, "%s/models/%s", fx, file);
  struct fr_safetensors *src = NULL;
  enum fr_status rc = fr_st_open(path, &src, err);
  if (rc)
    return rc;
  struct fr_st_item *items = calloc((size_t)src->n, sizeof *items);
  struct fr_tensor **views = calloc((size_t)src->n, sizeof *views);
  char **names = calloc((size_t)src->n, sizeof *names);
  int n = 0;
  for (int i = 0; i < src->n; i++) {
    const struct fr_st_entry *e = &src->entries[i];
    if (strncmp(e->name, keep_prefix, strlen(keep_prefix)) != 0 ||
        (rw->drop && strcmp(e->name, rw->drop) == 0))
      continue;
    const char *rest = e->name;
    char *nm = malloc(strlen(e->name) + 64);
    if (rw->from && strncmp(rest, rw->from, strlen(rw->from)) == 0)
      sprintf(nm, "%s%s", rw->to, rest + strlen(rw->from));
    else
      strcpy(nm, rest);
    views[n] = fr_st_view(e);
    if (rw->bad_name && strcmp(e->name, rw->bad_name) == 0)
      CHECK(fr_tensor_reshape(views[n], 2, rw->bad_shape)); /* same element count, other shape */
    names[n] = nm;
    items[n].name = nm;
    items[n].t = views[n];
    n++;
  }
  struct fr_buf b = {0};
  rc = fr_st_serialize(items, n, NULL, NULL, 0, &b, err);
  struct fr_safetensors *st = NULL;
  if (!rc)
    rc = fr_st_parse(b.data, b.len, "<rewritten>", &st, err);
  if (!rc) {
    struct fr_checkpoint ck = {.layout = FR_LAYOUT_SINGLE, .path = "<rewritten>", .file = st};
    rc = fr_clip_load(ctx, &ck, role, out, err);
  }
  fr_st_close(st);
  fr_buf_free(&b);
  for (int i = 0; i < n; i++) {
    fr_tensor_free(views[i]);
    free(names[i]);
  }
  free(items);
  free(views);
  free(names);
  fr_st_close(src);
  return rc;
}

static void check_layouts_and_errors(void) {
  struct fr_err err = {{0}};
  struct fr_clip *m = NULL;

  /* keys without the text_model. level load and give the same numbers */
  struct rewrite flat = {
      "cond_stage_model.transformer.text_model.", "cond_stage_model.transformer.", NULL, NULL, {0}};
  CHECK_OK(load_rewritten("sd15-tiny.safetensors", "cond_stage_model.", &flat, FR_CLIP_ROLE_L, &m, &err),
           &err);
  if (m)
    check_encoder("sd15 without text_model.", m, "sd15_text_encoder", false);
  fr_clip_free(m);
  m = NULL;
  /* a standalone CLIP-L file (text_model.* at the top) */
  struct rewrite top = {"cond_stage_model.transformer.", "", NULL, NULL, {0}};
  CHECK_OK(load_rewritten("sd15-tiny.safetensors", "cond_stage_model.", &top, FR_CLIP_ROLE_L, &m, &err),
           &err);
  CHECK(m && m->cfg.layers == 3);
  fr_clip_free(m);
  m = NULL;

  /* a tensor of the wrong shape: the error names it and both shapes */
  struct rewrite bad = {
      NULL, NULL, NULL, "cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc1.weight", {32, 64}};
  enum fr_status rc =
      load_rewritten("sd15-tiny.safetensors", "cond_stage_model.", &bad, FR_CLIP_ROLE_L, &m, &err);
  CHECKF(rc == FR_E_SHAPE && !m && strstr(err.msg, "encoder.layers.1.mlp.fc1.weight") &&
             strstr(err.msg, "[64, 32]") && strstr(err.msg, "[32, 64]"),
         "wrong shape: %s", err.msg);
  printf("wrong shape: %s\n", err.msg);
  /* a missing tensor */
  struct rewrite miss = {NULL,
                         NULL,
                         "cond_stage_model.transformer.text_model.encoder.layers.2.self_attn.v_proj.bias",
                         NULL,
                         {0}};
  rc = load_rewritten("sd15-tiny.safetensors", "cond_stage_model.", &miss, FR_CLIP_ROLE_L, &m, &err);
  CHECKF(rc == FR_E_NOTFOUND && !m && strstr(err.msg, "layers.2.self_attn.v_proj.bias"), "missing: %s",
         err.msg);
  printf("missing tensor: %s\n", err.msg);
  /* OpenCLIP: a fused in_proj of the wrong shape */
  struct rewrite badg = {NULL,
                         NULL,
                         NULL,
                         "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight",
                         {32, 96}};
  rc = load_rewritten("sdxl-tiny.safetensors", "conditioner.embedders.1.", &badg, FR_CLIP_ROLE_G, &m, &err);
  CHECKF(rc == FR_E_SHAPE && !m && strstr(err.msg, "resblocks.0.attn.in_proj_weight") &&
             strstr(err.msg, "[96, 32]"),
         "wrong G shape: %s", err.msg);
  printf("wrong shape (G): %s\n", err.msg);

  /* no such encoder: SD1.5 has no G, the refiner no L, a ControlNet none */
  char path[4096];
  static const struct {
    const char *file;
    enum fr_clip_role role;
  } none[] = {{"sd15-tiny.safetensors", FR_CLIP_ROLE_G},
              {"sdxl-refiner-tiny.safetensors", FR_CLIP_ROLE_L},
              {"controlnet-tiny.safetensors", FR_CLIP_ROLE_L},
              {"sd15-tiny", FR_CLIP_ROLE_G}};
  for (size_t i = 0; i < sizeof none / sizeof none[0]; i++) {
    snprintf(path, sizeof path, "models/%s", none[i].file);
    if (!fr_test_have_fixture(fx, path))
      continue;
    snprintf(path, sizeof path, "%s/models/%s", fx, none[i].file);
    struct fr_checkpoint *ck = NULL;
    CHECK_OK(fr_checkpoint_open(path, &ck, &err), &err);
    if (!ck)
      continue;
    rc = fr_clip_load(ctx, ck, none[i].role, &m, &err);
    CHECKF(rc == FR_E_NOTFOUND && !m, "%s: %s", none[i].file, err.msg);
    printf("no encoder: %s\n", err.msg);
    fr_checkpoint_close(ck);
  }

  /* bad ids and input shapes are errors, not crashes */
  snprintf(path, sizeof path, "%s/models/sd15-tiny.safetensors", fx);
  struct fr_checkpoint *ck = NULL;
  CHECK_OK(fr_checkpoint_open(path, &ck, &err), &err);
  if (ck)
    CHECK_OK(fr_clip_load(ctx, ck, FR_CLIP_ROLE_L, &m, &err), &err);
  if (m) {
    int32_t ids[FR_CLIP_CTX];
    for (int i = 0; i < FR_CLIP_CTX; i++)
      ids[i] = i == 0 ? FR_CLIP_BOS : FR_CLIP_EOS;
    ids[3] = 49408;
    struct fr_clip_out o;
    CHECK(fr_clip_encode(ctx, m, ids, 1, FR_CLIP_CTX, &o, &err) == FR_E_INVALID && !o.last);
    ids[3] = -1;
    CHECK(fr_clip_encode(ctx, m, ids, 1, FR_CLIP_CTX, &o, &err) == FR_E_INVALID);
    CHECK(fr_clip_encode(ctx, m, ids, 1, 78, &o, &err) == FR_E_SHAPE);
    CHECK(fr_clip_encode(ctx, m, ids, 0, 77, &o, &err) == FR_E_SHAPE);
    /* batch 2 gives each row what batch 1 gives */
    int32_t two[2 * FR_CLIP_CTX];
    for (int i = 0; i < 2 * FR_CLIP_CTX; i++)
      two[i] = FR_CLIP_EOS;
    two[0] = two[FR_CLIP_CTX] = FR_CLIP_BOS;
    two[1] = 320, two[2] = 2368; /* a cat */
    two[FR_CLIP_CTX + 1] = 1125; /* photo */
    struct fr_clip_out o2, o1;
    CHECK_OK(fr_clip_encode(ctx, m, two, 2, FR_CLIP_CTX, &o2, &err), &err);
    CHECK_OK(fr_clip_encode(ctx, m, two + FR_CLIP_CTX, 1, FR_CLIP_CTX, &o1, &err), &err);
    if (o2.pooled && o1.pooled) {
      struct fr_tensor *h2 = fr_ctx_download(ctx, o2.pooled), *h1 = fr_ctx_download(ctx, o1.pooled);
      /* fp32: equal to 1e-6 (only GEMM blocking may differ); F16/BF16: within the golden bound (a
       * GEMM of 154 rows may take another kernel than one of 77, rounding differently) */
      double eb = h1 && h2 ? fr_test_rel_err((float *)h2->data + 32, h1->data, 32) : -1;
      double tb = fr_test_golden_tol(ctx, 1e-6);
      printf("batch 2 row 1 vs batch 1: %.2e (tolerance %.0e)\n", eb, tb);
      CHECKF(eb >= 0 && eb < tb, "batch 2 vs batch 1: %.3e", eb);
      fr_tensor_free(h1);
      fr_tensor_free(h2);
    }
    fr_clip_out_free(&o2);
    fr_clip_out_free(&o1);
  }
  fr_clip_free(m);
  m = NULL;

  /* allocation failures while loading and encoding: a clean FR_E_NOMEM every time, nothing leaks */
  int nomem = 0;
  for (long n = 1; n < 100000 && ck; n++) {
    fr_alloc_fail_at(n);
    rc = fr_clip_load(ctx, ck, FR_CLIP_ROLE_L, &m, &err);
    if (!rc) {
      int32_t ids[FR_CLIP_CTX];
      for (int i = 0; i < FR_CLIP_CTX; i++)
        ids[i] = i == 0 ? FR_CLIP_BOS : FR_CLIP_EOS;
      struct fr_clip_out o;
      rc = fr_clip_encode(ctx, m, ids, 1, FR_CLIP_CTX, &o, &err);
      fr_clip_out_free(&o);
      fr_clip_free(m);
      m = NULL;
    }
    fr_alloc_fail_at(0);
    fr_ctx_clear(ctx);
    if (!rc)
      break;
    nomem += rc == FR_E_NOMEM;
    if (rc != FR_E_NOMEM) {
      CHECKF(0, "allocation %ld failing gave %s: %s", n, fr_status_str(rc), err.msg);
      break;
    }
  }
  CHECKF(nomem > 20, "fault injection reached %d allocations", nomem);
  fr_checkpoint_close(ck);
}

int main(void) {
  fx = fr_test_fixtures();
  if (!fx)
    return fr_test_done();
  ctx = fr_test_ctx_new(); /* cpu F32 unless FR_TEST_DEVICE / FR_TEST_DTYPE say otherwise */
  if (!ctx)
    return fr_test_done();
  tol = fr_test_golden_tol(ctx, TOL32);
  /* tiny heads: 4 for the HF layout (sd15-tiny's config.json), 2 for OpenCLIP (clip.h says why) */
  check_checkpoint("sd15-tiny.safetensors", FR_CLIP_ROLE_L, "sd15_text_encoder", 4, 0,
                   FR_CLIP_ACT_QUICK_GELU);
  check_checkpoint("sd15-tiny", FR_CLIP_ROLE_L, "sd15_text_encoder", 4, 0, FR_CLIP_ACT_QUICK_GELU);
  check_checkpoint("sdxl-tiny.safetensors", FR_CLIP_ROLE_L, "sdxl_text_encoder_1", 4, 0,
                   FR_CLIP_ACT_QUICK_GELU);
  check_checkpoint("sdxl-tiny.safetensors", FR_CLIP_ROLE_G, "sdxl_text_encoder_2", 2, 32, FR_CLIP_ACT_GELU);
  /* the refiner's G: same structure, no golden of its own */
  check_checkpoint("sdxl-refiner-tiny.safetensors", FR_CLIP_ROLE_G, NULL, 2, 32, FR_CLIP_ACT_GELU);
  check_layouts_and_errors();
  fr_ctx_free(ctx);
  return fr_test_done();
}
