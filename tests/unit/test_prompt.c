/* Prompt syntax, ComfyUI's rules (comfy/sd1_clip.py: escape_important, parse_parentheses, token_weights,
 * tokenize_with_weights, encode_token_weights), and CLIPSetLastLayer:
 *   - the parser against segment/weight lists worked out by hand from those definitions;
 *   - windows: ids and weights of weighted prompts, embeddings as token groups (a word that would cross the
 *     75-token boundary moves whole, one of 8 or more tokens is split), a missing embedding warned about;
 *   - TextEncode (captured by a test node): z' = z_empty + w (z - z_empty) at the weighted positions, with z
 *     and z_empty encoded here from hand-built ids by the plain encoder, for SD1.5 and both SDXL encoders;
 *     a prompt without parentheses equals the plain encoding; an embedding whose vectors are the token
 *     embeddings of "photo of" equals the prompt with those words; a missing one is a warning;
 *   - CLIPSetLastLayer -1 / -2 equal clip_skip 1 / 2, and -3 equals a one-layer encoder's final output. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/flowrun.h"
#include "core/safetensors.h"
#include "nodes/models/prompt.h"
#include "nodes/pipeline/pipeline.h"
#include "nodes/registry.h"
#include "tests/test.h"

static const char *tmp;

/* ---- parser ---- */

struct seg {
  const char *text;
  double w;
};

static void check_parse(const char *prompt, const struct seg *want, int n_want) {
  struct fr_prompt_seg *s = NULL;
  int n = 0;
  struct fr_err err = {{0}};
  CHECK_OK(fr_prompt_parse(prompt, &s, &n, &err), &err);
  bool ok = n == n_want;
  for (int i = 0; ok && i < n; i++)
    ok = !strcmp(s[i].text, want[i].text) && s[i].weight == want[i].w;
  if (!ok) {
    printf("parse '%s': got", prompt);
    for (int i = 0; i < n; i++)
      printf(" ('%s', %.17g)", s[i].text, s[i].weight);
    printf("\n");
  }
  CHECKF(ok, "parse '%s'", prompt);
  fr_prompt_segs_free(s, n);
}

#define PARSE(p, ...)                                                                                        \
  do {                                                                                                       \
    static const struct seg w_[] = {__VA_ARGS__};                                                            \
    check_parse(p, w_, (int)(sizeof w_ / sizeof w_[0]));                                                     \
  } while (0)

static void test_parse(void) {
  /* weights as Python computes them: 1.0 * 1.1, then * 1.1 again for nesting */
  const double w11 = 1.0 * 1.1, w121 = 1.0 * 1.1 * 1.1, w165 = 1.5 * 1.1;
  PARSE("a cat", {"a cat", 1.0});
  PARSE("a (cat:1.3) dog", {"a ", 1.0}, {"cat", 1.3}, {" dog", 1.0});
  PARSE("(cat)", {"cat", w11});
  PARSE("((cat))", {"cat", w121});
  PARSE("((a):1.5)", {"a", w165});                 /* the group's 1.5, then x1.1 inside */
  PARSE("((a:1.5))", {"a", 1.5});                  /* "1.5)" is no number: x1.1, then 1.5 replaces it */
  PARSE("\\(a\\) (b)", {"(a) ", 1.0}, {"b", w11}); /* escapes are literal parentheses */
  PARSE("a (b (c:0.5) d) e", {"a ", 1.0}, {"b ", w11}, {"c", 0.5}, {" d", w11}, {" e", 1.0});
  PARSE("a (b", {"a ", 1.0}, {"(b", 1.0}); /* unclosed: literal */
  PARSE("a) b (c)", {"a) b (c)", 1.0});    /* a stray ')' first: the nesting never returns to 0 */
  PARSE("(a:x)", {"a:x", w11});            /* not a number: x1.1, the text keeps its colon */
  PARSE("(:1.5)", {":1.5", w11});          /* a colon at position 0 is no weight */
  PARSE("(a: 1.5 )", {"a", 1.5});          /* float() allows white space around */
  PARSE("(a:1e-1)", {"a", 0.1});
  PARSE("(a:0x10)", {"a:0x10", w11});        /* float() reads no hex */
  PARSE("a () b", {"a ", 1.0}, {" b", 1.0}); /* an empty group is nothing */
  PARSE("(a:1.2:0.5)", {"a:1.2", 0.5});      /* the last colon */
  PARSE("\\((x:2)\\)", {"(", 1.0}, {"x", 2.0}, {")", 1.0});
  PARSE("(embedding:foo:1.2), b", {"embedding:foo", 1.2}, {", b", 1.0});
  CHECK(!fr_prompt_has_syntax("a photo of a cat"));
  CHECK(fr_prompt_has_syntax("a (cat)") && fr_prompt_has_syntax("a embedding:x"));
}

/* ---- windows ---- */

static int warned;
static char warn_msg[1024];
static enum fr_status fake_lookup(void *user, const char *name, int width, float **vecs, int *n,
                                  struct fr_err *err) {
  (void)user;
  int count = !strcmp(name, "six") ? 6 : !strcmp(name, "ten") ? 10 : 0;
  if (!count)
    return fr_errf(err, FR_E_NOTFOUND, "no file for %s", name);
  *vecs = calloc((size_t)count * (size_t)width, sizeof(float));
  *n = count;
  return FR_OK;
}
static void fake_warn(void *user, const char *msg) {
  (void)user;
  warned++;
  snprintf(warn_msg, sizeof warn_msg, "%s", msg);
}

/* Expected window: BOS, body (ids, weights), EOS, pad to 77. */
static void expect_window(const struct fr_prompt_tokens *t, int w, const int32_t *ids, const float *ws, int n,
                          bool eos, int32_t pad, const char *what) {
  int32_t want[77];
  float wantw[77];
  int k = 0;
  want[k] = 49406, wantw[k++] = 1;
  for (int i = 0; i < n; i++)
    want[k] = ids[i], wantw[k++] = ws[i];
  if (eos)
    want[k] = 49407, wantw[k++] = 1;
  while (k < 77)
    want[k] = pad, wantw[k++] = 1;
  bool ok = w < t->n_windows;
  for (int i = 0; ok && i < 77; i++)
    ok = t->ids[w * 77 + i] == want[i] && t->weights[w * 77 + i] == wantw[i];
  CHECKF(ok, "%s: window %d", what, w);
  if (!ok && w < t->n_windows) {
    for (int i = 0; i < 77; i++)
      printf("%d:%g ", t->ids[w * 77 + i], t->weights[w * 77 + i]);
    printf("\n");
  }
}

static void test_windows(const char *fx) {
  char path[4300];
  snprintf(path, sizeof path, "%s/tokenizer", fx);
  struct fr_tokenizer *tok = NULL;
  struct fr_err err = {{0}};
  CHECK_OK(fr_tokenizer_load(path, &tok, &err), &err);
  if (!tok)
    return;
  struct fr_prompt_embeddings emb = {fake_lookup, fake_warn, NULL};
  struct fr_prompt_tokens t;
  const int V = 49408;
  /* "a (cat:1.5) photo": the words a, cat, photo; cat at 1.5 */
  CHECK_OK(fr_prompt_tokenize(tok, "a (cat:1.5) photo", 49407, V, 4, &emb, &t, &err), &err);
  {
    const int32_t ids[] = {320, 2368, 1125};
    const float ws[] = {1, 1.5f, 1};
    CHECK(t.n_windows == 1 && t.has_weights && t.n_extra == 0);
    expect_window(&t, 0, ids, ws, 3, true, 49407, "a (cat:1.5) photo");
  }
  fr_prompt_tokens_free(&t);
  /* SDXL's second encoder pads with 0; nesting multiplies (float of 1.1 * 1.1) */
  CHECK_OK(fr_prompt_tokenize(tok, "((dog)), a", 0, V, 4, &emb, &t, &err), &err);
  {
    const int32_t ids[] = {1929, 267, 320};
    const float ws[] = {(float)(1.1 * 1.1), 1, 1};
    expect_window(&t, 0, ids, ws, 3, true, 0, "((dog)), a");
  }
  fr_prompt_tokens_free(&t);
  /* embeddings: 72 x "a" + a 6-token embedding crosses the boundary: moves whole to window 2 */
  char text[1024] = "";
  for (int i = 0; i < 72; i++)
    strcat(text, "a ");
  char t6[1100], t10[1100];
  snprintf(t6, sizeof t6, "%s(embedding:six:1.2) cat", text);
  snprintf(t10, sizeof t10, "%sembedding:ten", text);
  int32_t ids[80];
  float ws[80];
  for (int i = 0; i < 72; i++)
    ids[i] = 320, ws[i] = 1;
  CHECK_OK(fr_prompt_tokenize(tok, t6, 49407, V, 4, &emb, &t, &err), &err);
  CHECK(t.n_windows == 2 && t.n_extra == 6);
  expect_window(&t, 0, ids, ws, 72, true, 49407, "72 a + six: first");
  {
    int32_t e[7];
    float ew[7];
    for (int i = 0; i < 6; i++)
      e[i] = V + i, ew[i] = 1.2f;
    e[6] = 2368, ew[6] = 1;
    expect_window(&t, 1, e, ew, 7, true, 49407, "72 a + six: second");
  }
  fr_prompt_tokens_free(&t);
  /* a 10-token embedding is split: 3 more fit in the first window (BOS + 72 + 3 + EOS = 77) */
  CHECK_OK(fr_prompt_tokenize(tok, t10, 49407, V, 4, &emb, &t, &err), &err);
  CHECK(t.n_windows == 2 && t.n_extra == 10 && !t.has_weights);
  for (int i = 0; i < 3; i++)
    ids[72 + i] = V + i, ws[72 + i] = 1;
  expect_window(&t, 0, ids, ws, 75, true, 49407, "72 a + ten: first");
  {
    int32_t e[7];
    float ew[7];
    for (int i = 0; i < 7; i++)
      e[i] = V + 3 + i, ew[i] = 1;
    expect_window(&t, 1, e, ew, 7, true, 49407, "72 a + ten: second");
  }
  fr_prompt_tokens_free(&t);
  /* a missing embedding: warned about, no tokens; "embedding:six," = six + "," */
  warned = 0;
  CHECK_OK(fr_prompt_tokenize(tok, "a embedding:nope cat embedding:six,", 49407, V, 4, &emb, &t, &err), &err);
  CHECKF(warned == 1 && strstr(warn_msg, "embedding:nope does not exist"), "warnings %d: %s", warned,
         warn_msg);
  {
    const int32_t e[] = {320, 2368, V, V + 1, V + 2, V + 3, V + 4, V + 5, 267};
    const float ew[] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    expect_window(&t, 0, e, ew, 9, true, 49407, "missing embedding, trailing comma");
  }
  fr_prompt_tokens_free(&t);
  /* no embedding source: "embedding:six" is text */
  CHECK_OK(fr_prompt_tokenize(tok, "(embedding:six)", 49407, V, 4, NULL, &t, &err), &err);
  CHECK(t.n_extra == 0 && t.ids[1] != V && t.weights[1] == (float)1.1);
  fr_prompt_tokens_free(&t);
  fr_tokenizer_free(tok);
}

/* ---- TextEncode, captured ---- */

static struct fr_tensor *captured;
static int warnings;
static char warning_text[2048];
static enum fr_status capture_run(struct fr_node_ctx *nc) {
  const struct fr_value *v = fr_in(nc, "conditioning");
  const struct fr_tensor *t = v ? fr_value_get_tensor(v, "context") : NULL;
  fr_tensor_free(captured);
  captured = t ? fr_tensor_clone(t) : NULL;
  return captured ? FR_OK : fr_node_fail(nc, FR_E_INVALID, "no context");
}
static const struct fr_input_spec capture_in[] = {
    {"conditioning", FR_T_CONDITIONING, NULL, 0, -1, NULL, 0, "captured"}};
static const struct fr_node_spec capture_spec = {
    "CaptureCond", 1, "test", "keeps the context", capture_in, 1, NULL, 0, FR_NODE_OUTPUT, capture_run};

static int text_runs; /* TextEncode node_start events */
static void on_event(void *user, const struct fr_event *ev) {
  (void)user;
  if (ev->kind == FR_EV_NODE_START && ev->node_type && !strcmp(ev->node_type, "TextEncode"))
    text_runs++;
  if (ev->kind == FR_EV_WARNING) {
    warnings++;
    snprintf(warning_text, sizeof warning_text, "%s", ev->message ? ev->message : "");
  }
}

static struct fr_engine *eng;
static struct fr_registry reg;

/* TextEncode of text with ckpt (through CLIPSetLastLayer when layer != 0), captured; NULL on failure. */
static struct fr_tensor *encode_node(const char *ckpt, const char *text, int clip_skip, int layer) {
  char yaml[4096];
  snprintf(yaml, sizeof yaml,
           "flowrun: 1\n"
           "nodes:\n"
           "  ckpt: {type: CheckpointLoader, inputs: {ckpt_name: %s}}\n"
           "  last: {type: CLIPSetLastLayer, inputs: {clip: ckpt.clip, stop_at_clip_layer: %d}}\n"
           "  enc: {type: TextEncode, inputs: {clip: %s, text: \"%s\", clip_skip: %d}}\n"
           "  cap: {type: CaptureCond, inputs: {conditioning: enc}}\n",
           ckpt, layer ? layer : -1, layer ? "last" : "ckpt.clip", text, clip_skip);
  struct fr_graph *g = NULL;
  struct fr_err err = {{0}};
  fr_tensor_free(captured);
  captured = NULL;
  enum fr_status rc = fr_engine_load_string(eng, yaml, strlen(yaml), "prompt.yaml", tmp, NULL, 0, &g, &err);
  if (!rc) {
    struct fr_run_summary sum;
    rc = fr_engine_run(eng, g, &sum, &err);
  }
  fr_graph_free(g);
  CHECKF(rc == FR_OK, "TextEncode '%s': %s", text, err.msg);
  struct fr_tensor *t = captured;
  captured = NULL;
  return rc ? NULL : t;
}

/* The plain encoder on hand-built windows: rows [n, 77] -> host [n, 77, W] of `which` (0 last, 1
 * penultimate, 2 penultimate + final LayerNorm); layers_limit > 0 runs only that many layers. */
static struct fr_tensor *encode_ref(struct fr_ctx *c, const struct fr_clip *enc, const int32_t *ids, int n,
                                    int which, int layers_limit) {
  struct fr_clip m = *enc;
  if (layers_limit > 0)
    m.cfg.layers = layers_limit;
  struct fr_clip_out o = {0};
  struct fr_err err = {{0}};
  CHECK_OK(fr_clip_encode(c, &m, ids, n, 77, &o, &err), &err);
  struct fr_tensor *ln =
      which == 2 && o.penultimate ? fr_layer_norm(c, o.penultimate, m.lnf_w, m.lnf_b, m.cfg.ln_eps) : NULL;
  struct fr_tensor *h = o.last ? fr_ctx_download(c, which == 2 ? ln : which ? o.penultimate : o.last) : NULL;
  fr_tensor_free(ln);
  fr_clip_out_free(&o);
  fr_ctx_clear(c);
  return h;
}

static void window(int32_t *w, const int32_t *body, int n, int32_t pad) {
  int k = 0;
  w[k++] = 49406;
  for (int i = 0; i < n; i++)
    w[k++] = body[i];
  w[k++] = 49407;
  while (k < 77)
    w[k++] = pad;
}

/* max |got[off..] - want| over positions (77 x W of want) with got's row stride gw and offset off */
static double diff(const struct fr_tensor *got, int64_t off, const float *want, int64_t W, double *scale) {
  double e = 0, s = 0;
  int64_t gw = got->shape[2];
  for (int p = 0; p < 77; p++)
    for (int64_t k = 0; k < W; k++) {
      double a = ((const float *)got->data)[p * gw + off + k], b = want[p * W + k];
      e = fmax(e, fabs(a - b));
      s = fmax(s, fabs(b));
    }
  *scale = s;
  return e;
}

/* z' = z_empty + w (z - z_empty) at position pos (weight w), z elsewhere: [77, W] */
static float *weighted(const struct fr_tensor *z, const struct fr_tensor *ze, int pos, double w) {
  int64_t W = z->shape[2];
  float *o = malloc(77 * (size_t)W * sizeof(float));
  memcpy(o, z->data, 77 * (size_t)W * sizeof(float));
  for (int64_t k = 0; k < W; k++) {
    double a = ((float *)z->data)[pos * W + k], e = ((float *)ze->data)[pos * W + k];
    o[pos * W + k] = (float)(e + w * (a - e));
  }
  return o;
}

/* Tolerance: the same fp32 encoder run in another batch composition (the node encodes the prompt and
 * the empty prompt together) differs only in summation order, ~1e-6 of the scale. */
#define TOL 1e-5

static void test_encode_sd15(const char *models_dir, struct fr_ctx *c, const struct fr_clip *L) {
  /* "a photo of a (cat:1.5)": cat is at position 5 */
  const int32_t body[] = {320, 1125, 539, 320, 2368};
  int32_t ids[2 * 77];
  window(ids, body, 5, 49407);
  window(ids + 77, NULL, 0, 49407);
  struct fr_tensor *z = encode_ref(c, L, ids, 1, 0, 0), *ze = encode_ref(c, L, ids + 77, 1, 0, 0);
  struct fr_tensor *zp = encode_ref(c, L, ids, 1, 1, 0);
  struct fr_tensor *plain = encode_node("sd15-tiny.safetensors", "a photo of a cat", 1, 0);
  struct fr_tensor *wt = encode_node("sd15-tiny.safetensors", "a photo of a (cat:1.5)", 1, 0);
  if (z && ze && plain && wt) {
    int64_t W = z->shape[2];
    double s, e0 = diff(plain, 0, z->data, W, &s);
    float *want = weighted(z, ze, 5, 1.5);
    double s1, e1 = diff(wt, 0, want, W, &s1), s2, e2 = diff(wt, 0, z->data, W, &s2);
    printf("sd15: plain %.3g, weighted %.3g (of %.3g; the weighting moves it by %.3g)\n", e0, e1, s1, e2);
    CHECKF(e0 <= TOL * s && e1 <= TOL * s1 && e2 > 100 * TOL * s2, "sd15 weighting: %g %g %g", e0, e1, e2);
    free(want);
  }
  /* clip_skip 2 with a weight: the penultimate state after the final LayerNorm, weighted there */
  struct fr_tensor *wt2 = encode_node("sd15-tiny.safetensors", "a photo of a (cat:0.5)", 2, 0);
  struct fr_tensor *skip2 = encode_node("sd15-tiny.safetensors", "a photo of a cat", 2, 0);
  struct fr_tensor *last2 = encode_node("sd15-tiny.safetensors", "a photo of a cat", 1, -2);
  struct fr_tensor *last1 = encode_node("sd15-tiny.safetensors", "a photo of a cat", 2, -1);
  struct fr_tensor *last3 = encode_node("sd15-tiny.safetensors", "a photo of a cat", 1, -3);
  struct fr_tensor *last9 = encode_node("sd15-tiny.safetensors", "a photo of a cat", 2, -9); /* > 3 layers */
  CHECK(last9 && plain && !memcmp(last9->data, plain->data, fr_tensor_nbytes(plain))); /* the final output */
  fr_tensor_free(last9);
  /* layer -3 of 3: the output of layer 0 = the penultimate state of the first two layers, + LN */
  CHECK(L->cfg.layers == 3);
  struct fr_tensor *one = encode_ref(c, L, ids, 1, 2, L->cfg.layers - 1);
  if (skip2 && last2 && last1 && plain && last3 && one && zp) {
    CHECK(fr_tensor_numel(skip2) == fr_tensor_numel(last2) &&
          !memcmp(skip2->data, last2->data, fr_tensor_nbytes(skip2))); /* CLIPSetLastLayer -2 = clip_skip 2 */
    CHECK(fr_tensor_numel(plain) == fr_tensor_numel(last1) &&
          !memcmp(plain->data, last1->data, fr_tensor_nbytes(plain))); /* -1 = the default, over clip_skip */
    double s, e = diff(last3, 0, one->data, one->shape[2], &s), s3,
              e3 = diff(last3, 0, z->data, z->shape[2], &s3);
    printf("CLIPSetLastLayer -3: %.3g of %.3g (differs from the last layer by %.3g)\n", e, s, e3);
    CHECKF(e <= TOL * s && e3 > 100 * TOL * s3, "layer -3: %g", e);
  }
  if (wt2 && skip2) { /* the weighting applies to what the node returns (penultimate + LN here) */
    int64_t W = skip2->shape[2];
    struct fr_tensor *zl = fr_tensor_clone(skip2);
    /* the empty prompt's clip-skip-2 encoding: through the node too (an unweighted prompt) */
    struct fr_tensor *empty2 = encode_node("sd15-tiny.safetensors", "", 2, 0);
    if (empty2) {
      float *want = weighted(zl, empty2, 5, 0.5);
      double s, e = diff(wt2, 0, want, W, &s);
      printf("sd15 clip_skip 2 weighted: %.3g of %.3g\n", e, s);
      CHECKF(e <= TOL * s, "clip_skip 2 weighting %g", e);
      free(want);
    }
    fr_tensor_free(empty2);
    fr_tensor_free(zl);
  }
  /* an embedding whose two vectors are the token embeddings of "photo" and "of": as those words */
  struct fr_tensor *emb = encode_node("sd15-tiny.safetensors", "a embedding:po cat", 1, 0);
  struct fr_tensor *words = encode_node("sd15-tiny.safetensors", "a photo of cat", 1, 0);
  if (emb && words) {
    double e = 0;
    for (int64_t i = 0; i < fr_tensor_numel(emb); i++)
      e = fmax(e, fabs(((float *)emb->data)[i] - ((float *)words->data)[i]));
    printf("embedding = its words: %.3g\n", e);
    CHECKF(e <= 1e-6, "embedding:po differs from 'photo of' by %g", e);
  }
  warnings = 0;
  struct fr_tensor *miss = encode_node("sd15-tiny.safetensors", "a embedding:nothere cat", 1, 0);
  struct fr_tensor *acat = encode_node("sd15-tiny.safetensors", "a cat", 1, 0);
  CHECKF(warnings == 1 && strstr(warning_text, "embedding:nothere does not exist"),
         "missing embedding: %d '%s'", warnings, warning_text);
  CHECK(miss && acat && !memcmp(miss->data, acat->data, fr_tensor_nbytes(acat)));
  fr_tensor_free(miss), fr_tensor_free(acat), fr_tensor_free(emb), fr_tensor_free(words);
  fr_tensor_free(wt2), fr_tensor_free(skip2), fr_tensor_free(last2), fr_tensor_free(last1),
      fr_tensor_free(last3);
  fr_tensor_free(one), fr_tensor_free(zp);
  fr_tensor_free(z), fr_tensor_free(ze), fr_tensor_free(plain), fr_tensor_free(wt);
  (void)models_dir;
}

static void test_encode_sdxl(struct fr_ctx *c, const struct fr_clip *L, const struct fr_clip *G) {
  /* "a (cat:0.5)": cat at position 2, for both encoders (penultimate, no LayerNorm); G pads with 0 */
  const int32_t body[] = {320, 2368};
  int32_t il[2 * 77], ig[2 * 77];
  window(il, body, 2, 49407);
  window(il + 77, NULL, 0, 49407);
  window(ig, body, 2, 0);
  window(ig + 77, NULL, 0, 0);
  struct fr_tensor *zl = encode_ref(c, L, il, 1, 1, 0), *zle = encode_ref(c, L, il + 77, 1, 1, 0);
  struct fr_tensor *zg = encode_ref(c, G, ig, 1, 1, 0), *zge = encode_ref(c, G, ig + 77, 1, 1, 0);
  struct fr_tensor *wt = encode_node("sdxl-tiny.safetensors", "a (cat:0.5)", 1, 0);
  struct fr_tensor *emb = encode_node("sdxl-tiny.safetensors", "a embedding:poxl cat", 1, 0);
  struct fr_tensor *words = encode_node("sdxl-tiny.safetensors", "a photo of cat", 1, 0);
  if (zl && zle && zg && zge && wt) {
    int64_t WL = zl->shape[2], WG = zg->shape[2];
    float *wl = weighted(zl, zle, 2, 0.5), *wg = weighted(zg, zge, 2, 0.5);
    double sl, el = diff(wt, 0, wl, WL, &sl), sg, eg = diff(wt, WL, wg, WG, &sg);
    double sl0, el0 = diff(wt, 0, zl->data, WL, &sl0), sg0, eg0 = diff(wt, WL, zg->data, WG, &sg0);
    printf("sdxl: L %.3g of %.3g, G %.3g of %.3g (the weighting moves them by %.3g, %.3g)\n", el, sl, eg, sg,
           el0, eg0);
    CHECKF(el <= TOL * sl && eg <= TOL * sg && el0 > 100 * TOL * sl0 && eg0 > 100 * TOL * sg0,
           "sdxl weighting");
    free(wl), free(wg);
  }
  if (emb && words) {
    double e = 0;
    for (int64_t i = 0; i < fr_tensor_numel(emb); i++)
      e = fmax(e, fabs(((float *)emb->data)[i] - ((float *)words->data)[i]));
    printf("sdxl embedding (clip_l and clip_g) = its words: %.3g\n", e);
    CHECKF(e <= 1e-6, "sdxl embedding:po differs from 'photo of' by %g", e);
  }
  fr_tensor_free(zl), fr_tensor_free(zle), fr_tensor_free(zg), fr_tensor_free(zge), fr_tensor_free(wt);
  fr_tensor_free(emb), fr_tensor_free(words);
}

/* rows `a` and `b` of tensor key of file, as F32 [2, W] */
static struct fr_tensor *rows_of(const char *file, const char *key, int a, int b) {
  struct fr_safetensors *st = NULL;
  struct fr_err err = {{0}};
  CHECK_OK(fr_st_open(file, &st, &err), &err);
  const struct fr_st_entry *e = st ? fr_st_find(st, key) : NULL;
  CHECKF(e != NULL, "%s: no %s", file, key);
  struct fr_tensor *v = e ? fr_st_view(e) : NULL, *f = v ? fr_tensor_to_f32(v) : NULL, *o = NULL;
  if (f) {
    int64_t W = f->shape[1];
    o = fr_tensor_f32(2, (int64_t[]){2, W});
    memcpy(o->data, (float *)f->data + a * W, (size_t)W * 4);
    memcpy((float *)o->data + W, (float *)f->data + b * W, (size_t)W * 4);
  }
  fr_tensor_free(v), fr_tensor_free(f);
  fr_st_close(st);
  return o;
}

/* The cache key of a TextEncode that names an embedding follows the embedding file's content: an engine
 * with a cache runs it, then finds it cached, then runs it again once the file changed (and gets another
 * result). */
static void test_embedding_cache(const char *models, const char *emb_file) {
  char cache[4300];
  snprintf(cache, sizeof cache, "%s/cache.sqlite", tmp);
  const char *dirs[1] = {models};
  struct fr_engine_opts o = {.registry = &reg,
                             .cache_path = cache,
                             .model_dirs = dirs,
                             .n_model_dirs = 1,
                             .output_dir = tmp,
                             .threads = 2,
                             .on_event = on_event};
  struct fr_err err = {{0}};
  struct fr_engine *saved = eng;
  CHECK_OK(fr_engine_new(&o, &eng, &err), &err);
  if (!eng) {
    eng = saved;
    return;
  }
  int runs[3];
  struct fr_tensor *out[3];
  for (int pass = 0; pass < 3; pass++) {
    if (pass == 2) { /* the embedding's rows swapped: another file content, same name */
      struct fr_safetensors *st = NULL;
      CHECK_OK(fr_st_open(emb_file, &st, &err), &err);
      struct fr_tensor *v = st ? fr_st_view(&st->entries[0]) : NULL, *f = v ? fr_tensor_to_f32(v) : NULL;
      fr_tensor_free(v);
      fr_st_close(st);
      if (f) {
        int64_t W = f->shape[1];
        for (int64_t k = 0; k < W; k++) {
          float t = ((float *)f->data)[k];
          ((float *)f->data)[k] = ((float *)f->data)[W + k];
          ((float *)f->data)[W + k] = t;
        }
        struct fr_st_item it = {"emb_params", f};
        CHECK_OK(fr_st_write_file(emb_file, &it, 1, NULL, NULL, 0, &err), &err);
        fr_tensor_free(f);
      }
    }
    text_runs = 0;
    out[pass] = encode_node("sd15-tiny.safetensors", "a (embedding:po:1.1) cat", 1, 0);
    runs[pass] = text_runs;
  }
  printf("TextEncode with an embedding, cached engine: runs %d, %d, %d\n", runs[0], runs[1], runs[2]);
  CHECKF(runs[0] == 1 && runs[1] == 0 && runs[2] == 1, "TextEncode runs %d %d %d (want 1 0 1)", runs[0],
         runs[1], runs[2]);
  if (out[0] && out[1] && out[2]) {
    CHECK(!memcmp(out[0]->data, out[1]->data, fr_tensor_nbytes(out[0])));
    CHECK(memcmp(out[0]->data, out[2]->data, fr_tensor_nbytes(out[0])) != 0);
  }
  for (int i = 0; i < 3; i++)
    fr_tensor_free(out[i]);
  fr_engine_free(eng);
  eng = saved;
}

int main(void) {
  tmp = fr_test_tmpdir("test_prompt");
  test_parse();
  const char *fx = fr_test_fixtures();
  if (!fx)
    return fr_test_done();
  test_windows(fx);

  /* a model folder: the two checkpoints, embeddings/po.safetensors (SD1.x: emb_params) and
   * embeddings/poxl.safetensors (SDXL: clip_l, clip_g), each the token embeddings of "photo" and "of" */
  char models[4200], dir[4300], target[4300], link[4400], src15[4300], srcxl[4300];
  snprintf(models, sizeof models, "%s/models", tmp);
  mkdir(models, 0755);
  snprintf(dir, sizeof dir, "%s/embeddings", models);
  mkdir(dir, 0755);
  snprintf(src15, sizeof src15, "%s/models/sd15-tiny.safetensors", fx);
  snprintf(srcxl, sizeof srcxl, "%s/models/sdxl-tiny.safetensors", fx);
  const char *names[2] = {"sd15-tiny.safetensors", "sdxl-tiny.safetensors"};
  for (int i = 0; i < 2; i++) {
    snprintf(target, sizeof target, "%s/models/%s", fx, names[i]);
    snprintf(link, sizeof link, "%s/%s", models, names[i]);
    CHECK(symlink(target, link) == 0);
  }
  struct fr_tensor *e15 =
      rows_of(src15, "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", 1125, 539);
  struct fr_tensor *el = rows_of(
      srcxl, "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight", 1125, 539);
  struct fr_tensor *eg = rows_of(srcxl, "conditioner.embedders.1.model.token_embedding.weight", 1125, 539);
  if (e15 && el && eg) {
    struct fr_st_item i15[1] = {{"emb_params", e15}}, ixl[2] = {{"clip_l", el}, {"clip_g", eg}};
    struct fr_err err = {{0}};
    snprintf(link, sizeof link, "%s/po.safetensors", dir);
    CHECK_OK(fr_st_write_file(link, i15, 1, NULL, NULL, 0, &err), &err);
    snprintf(link, sizeof link, "%s/poxl.safetensors", dir);
    CHECK_OK(fr_st_write_file(link, ixl, 2, NULL, NULL, 0, &err), &err);
  }
  fr_tensor_free(e15), fr_tensor_free(el), fr_tensor_free(eg);

  const struct fr_registry *b = fr_builtin_registry();
  const struct fr_node_spec *specs[256];
  int n = 0;
  for (int i = 0; i < b->n && n < 255; i++)
    specs[n++] = b->specs[i];
  specs[n++] = &capture_spec;
  reg.specs = specs;
  reg.n = n;
  const char *dirs[1] = {models};
  struct fr_engine_opts o = {.registry = &reg,
                             .no_cache = true,
                             .model_dirs = dirs,
                             .n_model_dirs = 1,
                             .output_dir = tmp,
                             .threads = 2,
                             .on_event = on_event};
  struct fr_err err = {{0}};
  CHECK_OK(fr_engine_new(&o, &eng, &err), &err);
  struct fr_ctx *c = fr_test_ctx_new();
  struct fr_checkpoint *ck15 = NULL, *ckxl = NULL;
  struct fr_clip *L15 = NULL, *L = NULL, *G = NULL;
  if (eng && c) {
    CHECK_OK(fr_checkpoint_open(src15, &ck15, &err), &err);
    CHECK_OK(fr_checkpoint_open(srcxl, &ckxl, &err), &err);
    if (ck15)
      CHECK_OK(fr_clip_load(c, ck15, FR_CLIP_ROLE_L, &L15, &err), &err);
    if (ckxl) {
      CHECK_OK(fr_clip_load(c, ckxl, FR_CLIP_ROLE_L, &L, &err), &err);
      CHECK_OK(fr_clip_load(c, ckxl, FR_CLIP_ROLE_G, &G, &err), &err);
    }
    if (L15)
      test_encode_sd15(models, c, L15);
    if (L && G)
      test_encode_sdxl(c, L, G);
    snprintf(link, sizeof link, "%s/po.safetensors", dir);
    test_embedding_cache(models, link);
  }
  fr_clip_free(L15), fr_clip_free(L), fr_clip_free(G);
  fr_checkpoint_close(ck15), fr_checkpoint_close(ckxl);
  fr_ctx_free(c);
  fr_engine_free(eng);
  return fr_test_done();
}
