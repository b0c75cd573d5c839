/* Bad UNet / ControlNet files and inputs: each must end in a clear error that names the tensor (and both
 * shapes for a shape mismatch), with nothing leaked and no crash (run under ASan too). The bad files are
 * modified copies of the tiny fixtures written into a temporary folder; the fixtures are never touched. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/safetensors.h"
#include "kernels/ops.h"
#include "nodes/models/controlnet.h"
#include "nodes/models/unet.h"
#include "tests/test.h"

static const char *fx, *tmp;

/* Writes a copy of src into dst keeping the keys that start with keep (all when NULL), without the key
 * drop, and with the key reshape replaced by a zero F16 tensor of shape (ndim, shape). */
static int write_copy(const char *src, const char *dst, const char *keep, const char *drop,
                      const char *reshape, int ndim, const int64_t *shape) {
  struct fr_err err = {{0}};
  struct fr_safetensors *st = NULL;
  CHECK_OK(fr_st_open(src, &st, &err), &err);
  if (!st)
    return -1;
  struct fr_st_item *items = calloc((size_t)st->n, sizeof *items);
  struct fr_tensor **views = calloc((size_t)st->n, sizeof *views);
  int n = 0, rc = -1;
  if (!items || !views)
    goto out;
  for (int i = 0; i < st->n; i++) {
    const struct fr_st_entry *e = &st->entries[i];
    if ((keep && strncmp(e->name, keep, strlen(keep))) || (drop && !strcmp(e->name, drop)))
      continue;
    views[n] = reshape && !strcmp(e->name, reshape) ? fr_tensor_new(FR_F16, ndim, shape) : fr_st_view(e);
    if (!views[n])
      goto out;
    items[n].name = e->name;
    items[n].t = views[n];
    n++;
  }
  rc = fr_st_write_file(dst, items, n, NULL, NULL, 0, &err);
  CHECK_OK(rc, &err);
out:
  for (int i = 0; i < n; i++)
    fr_tensor_free(views[i]);
  free(views);
  free(items);
  fr_st_close(st);
  return rc;
}

/* Loads path's UNet (or ControlNet) and expects failure rc with every needle in the message. */
static void expect_load_error(struct fr_ctx *c, const char *path, bool controlnet, enum fr_status want,
                              const char *needle1, const char *needle2, const char *needle3) {
  struct fr_err err = {{0}};
  struct fr_checkpoint *ck = NULL;
  enum fr_status rc = fr_checkpoint_open(path, &ck, &err);
  if (!rc) {
    if (controlnet) {
      struct fr_controlnet *cn = NULL;
      rc = fr_controlnet_load(c, ck, &cn, &err);
      CHECK(rc != FR_OK && cn == NULL);
      fr_controlnet_free(cn);
    } else {
      struct fr_unet *u = NULL;
      rc = fr_unet_load(c, ck, &u, &err);
      CHECK(rc != FR_OK && u == NULL);
      fr_unet_free(u);
    }
  }
  fr_checkpoint_close(ck);
  printf("%s: status %d (%s): %s\n", strrchr(path, '/') + 1, rc, fr_status_str(rc), err.msg);
  CHECKF(rc == want, "status %d, expected %d", rc, want);
  const char *needles[] = {needle1, needle2, needle3};
  for (int i = 0; i < 3; i++)
    if (needles[i])
      CHECKF(strstr(err.msg, needles[i]) != NULL, "message lacks \"%s\": %s", needles[i], err.msg);
  fr_ctx_clear(c);
}

static void test_bad_files(struct fr_ctx *c) {
  char src[1024], dst[1024];
  snprintf(src, sizeof src, "%s/models/sd15-tiny.safetensors", fx);

  /* a missing key, SGM layout */
  const char *gone = "model.diffusion_model.output_blocks.5.1.proj_out.weight";
  snprintf(dst, sizeof dst, "%s/missing.safetensors", tmp);
  if (!write_copy(src, dst, "model.diffusion_model.", gone, NULL, 0, NULL))
    expect_load_error(c, dst, false, FR_E_NOTFOUND, gone, "missing", NULL);

  /* a tensor whose shape contradicts the detected architecture: out conv stored as 1x1 */
  const char *bad = "model.diffusion_model.out.2.weight";
  snprintf(dst, sizeof dst, "%s/badshape.safetensors", tmp);
  if (!write_copy(src, dst, "model.diffusion_model.", NULL, bad, 4, (const int64_t[]){4, 32, 1, 1}))
    expect_load_error(c, dst, false, FR_E_SHAPE, bad, "[4, 32, 3, 3]", "[4, 32, 1, 1]");

  /* a cross-attention key projection whose width contradicts the context dim detected in the first block */
  const char *k = "model.diffusion_model.output_blocks.9.1.transformer_blocks.0.attn2.to_k.weight";
  snprintf(dst, sizeof dst, "%s/badctx.safetensors", tmp);
  if (!write_copy(src, dst, "model.diffusion_model.", NULL, k, 2, (const int64_t[]){32, 48}))
    expect_load_error(c, dst, false, FR_E_SHAPE, k, "[32, 32]", "[32, 48]");

  /* a truncated file: the safetensors reader refuses it, naming the file */
  snprintf(dst, sizeof dst, "%s/truncated.safetensors", tmp);
  FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
  CHECK(in && out);
  if (in && out) {
    static char buf[1 << 16];
    long total = 0, limit = 4 << 20; /* the first 4 MiB of an 11 MB file: header intact, data cut */
    size_t r;
    while (total < limit && (r = fread(buf, 1, sizeof buf, in)) > 0) {
      fwrite(buf, 1, r, out);
      total += (long)r;
    }
  }
  if (in)
    fclose(in);
  if (out)
    fclose(out);
  expect_load_error(c, dst, false, FR_E_FORMAT, "truncated.safetensors", NULL, NULL);

  /* a missing key in a diffusers-layout UNet file: the message names the diffusers key */
  snprintf(src, sizeof src, "%s/models/sd15-tiny/unet/diffusion_pytorch_model.safetensors", fx);
  const char *dgone = "up_blocks.2.attentions.1.transformer_blocks.0.attn1.to_v.weight";
  snprintf(dst, sizeof dst, "%s/diffusers_missing.safetensors", tmp);
  if (!write_copy(src, dst, NULL, dgone, NULL, 0, NULL))
    expect_load_error(c, dst, false, FR_E_NOTFOUND, dgone, NULL, NULL);

  /* a file without any UNet (the VAE part of the checkpoint only) */
  snprintf(src, sizeof src, "%s/models/sd15-tiny.safetensors", fx);
  snprintf(dst, sizeof dst, "%s/vae_only.safetensors", tmp);
  if (!write_copy(src, dst, "first_stage_model.", NULL, NULL, 0, NULL))
    expect_load_error(c, dst, false, FR_E_NOTFOUND, "no UNet weights", NULL, NULL);

  /* ControlNet: a missing zero conv, and a hint conv of the wrong shape */
  snprintf(src, sizeof src, "%s/models/controlnet-tiny.safetensors", fx);
  const char *zc = "control_model.zero_convs.11.0.weight";
  snprintf(dst, sizeof dst, "%s/cn_missing.safetensors", tmp);
  if (!write_copy(src, dst, NULL, zc, NULL, 0, NULL))
    expect_load_error(c, dst, true, FR_E_NOTFOUND, zc, NULL, NULL);
  const char *hb = "control_model.input_hint_block.14.weight";
  snprintf(dst, sizeof dst, "%s/cn_badhint.safetensors", tmp);
  if (!write_copy(src, dst, NULL, NULL, hb, 4, (const int64_t[]){16, 256, 3, 3}))
    expect_load_error(c, dst, true, FR_E_SHAPE, hb, "[32, 256, 3, 3]", "[16, 256, 3, 3]");
}

static struct fr_tensor *zeros(struct fr_ctx *c, int ndim, const int64_t *shape) {
  struct fr_tensor *h = fr_tensor_f32(ndim, shape), *t = h ? fr_ctx_upload(c, h) : NULL;
  fr_tensor_free(h);
  return t;
}

/* Bad forward inputs: clear FR_E_SHAPE / FR_E_INVALID, nothing returned. */
static void test_bad_inputs(struct fr_ctx *c) {
  char path[1024];
  struct fr_err err = {{0}};
  snprintf(path, sizeof path, "%s/models/sdxl-tiny.safetensors", fx);
  struct fr_checkpoint *ck = NULL;
  struct fr_unet *u = NULL;
  CHECK_OK(fr_checkpoint_open(path, &ck, &err), &err);
  if (ck)
    CHECK_OK(fr_unet_load(c, ck, &u, &err), &err);
  if (!u) {
    fr_checkpoint_close(ck);
    return;
  }
  struct fr_tensor *x = zeros(c, 4, (const int64_t[]){1, 4, 16, 16});
  struct fr_tensor *x3 = zeros(c, 4, (const int64_t[]){1, 3, 16, 16});
  struct fr_tensor *xodd = zeros(c, 4, (const int64_t[]){1, 4, 15, 16});
  struct fr_tensor *t = zeros(c, 1, (const int64_t[]){1});
  struct fr_tensor *ctx = zeros(c, 3, (const int64_t[]){1, 77, 64});
  struct fr_tensor *ctx32 = zeros(c, 3, (const int64_t[]){1, 77, 32});
  struct fr_tensor *te = zeros(c, 2, (const int64_t[]){1, 32});
  struct fr_tensor *ti = zeros(c, 2, (const int64_t[]){1, 6});
  struct fr_tensor *ti7 = zeros(c, 2, (const int64_t[]){1, 7});
  struct fr_tensor *eps = NULL;
  struct {
    const char *what;
    const struct fr_tensor *x, *ctx, *te, *ti;
    enum fr_status want;
    const char *needle;
  } cases[] = {
      {"3-channel x", x3, ctx, te, ti, FR_E_SHAPE, "x is [1, 3, 16, 16]"},
      {"odd size", xodd, ctx, te, ti, FR_E_SHAPE, "multiples of 4"},
      {"context width", x, ctx32, te, ti, FR_E_SHAPE, "context is [1, 77, 32]"},
      {"no time_ids", x, ctx, te, NULL, FR_E_INVALID, "time_ids"},
      {"7 time ids", x, ctx, te, ti7, FR_E_SHAPE, "7 time ids"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct fr_unet_cond cond = {.context = cases[i].ctx, .text_embeds = cases[i].te, .time_ids = cases[i].ti};
    err.msg[0] = 0;
    enum fr_status rc = fr_unet_forward(c, u, cases[i].x, t, &cond, NULL, &eps, &err);
    printf("bad input (%s): status %d: %s\n", cases[i].what, rc, err.msg);
    CHECKF(rc == cases[i].want && eps == NULL, "%s: status %d", cases[i].what, rc);
    CHECKF(strstr(err.msg, cases[i].needle) != NULL, "%s: message lacks \"%s\"", cases[i].what,
           cases[i].needle);
    fr_tensor_free(eps);
    eps = NULL;
    fr_ctx_clear(c);
  }
  /* wrong number of ControlNet residuals */
  struct fr_unet_control ctl = {.n_down = 3};
  struct fr_unet_cond cond = {.context = ctx, .text_embeds = te, .time_ids = ti};
  enum fr_status rc = fr_unet_forward(c, u, x, t, &cond, &ctl, &eps, &err);
  printf("bad control: status %d: %s\n", rc, err.msg);
  CHECK(rc == FR_E_SHAPE && eps == NULL && strstr(err.msg, "9 skip connections"));
  fr_ctx_clear(c);
  /* and a good call still works afterwards */
  CHECK_OK(fr_unet_forward(c, u, x, t, &cond, NULL, &eps, &err), &err);
  CHECK(eps && eps->shape[1] == 4 && eps->shape[2] == 16);
  fr_tensor_free(eps);
  struct fr_tensor *all[] = {x, x3, xodd, t, ctx, ctx32, te, ti, ti7};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    fr_tensor_free(all[i]);
  fr_unet_free(u);
  fr_checkpoint_close(ck);

  /* ControlNet: a hint image at the wrong scale */
  snprintf(path, sizeof path, "%s/models/controlnet-tiny", fx);
  struct fr_controlnet *cn = NULL;
  CHECK_OK(fr_checkpoint_open(path, &ck, &err), &err);
  if (ck)
    CHECK_OK(fr_controlnet_load(c, ck, &cn, &err), &err);
  if (cn) {
    struct fr_tensor *lx = zeros(c, 4, (const int64_t[]){1, 4, 16, 16});
    struct fr_tensor *lt = zeros(c, 1, (const int64_t[]){1});
    struct fr_tensor *lctx = zeros(c, 3, (const int64_t[]){1, 77, 32});
    struct fr_tensor *hint = zeros(c, 4, (const int64_t[]){1, 3, 64, 64});
    struct fr_unet_cond cc = {.context = lctx};
    rc = fr_controlnet_forward(c, cn, lx, lt, &cc, hint, 1.0f, &ctl, &err);
    printf("bad hint: status %d: %s\n", rc, err.msg);
    CHECK(rc == FR_E_SHAPE && ctl.n_down == 0 && strstr(err.msg, "[1, 3, 128, 128]"));
    fr_ctx_clear(c);
    fr_tensor_free(lx);
    fr_tensor_free(lt);
    fr_tensor_free(lctx);
    fr_tensor_free(hint);
  }
  fr_controlnet_free(cn);
  fr_checkpoint_close(ck);
}

/* Out of memory at the n-th allocation while loading: FR_E_NOMEM (or the loader's own clean error), no
 * leak (ASan's leak checker runs at exit). */
static void test_alloc_failures(struct fr_ctx *c) {
  char path[1024];
  snprintf(path, sizeof path, "%s/models/sd15-tiny.safetensors", fx);
  struct fr_err err = {{0}};
  struct fr_checkpoint *ck = NULL;
  CHECK_OK(fr_checkpoint_open(path, &ck, &err), &err);
  if (!ck)
    return;
  int failures = 0, tries = 0;
  bool loaded = false;
  /* every n up to 40, then a stride, until the load gets through with no failure injected in it */
  for (long n = 1; !loaded && n < 1000000; n += n < 40 ? 1 : 97) {
    struct fr_unet *u = NULL;
    fr_alloc_fail_at(n);
    enum fr_status rc = fr_unet_load(c, ck, &u, &err);
    fr_alloc_fail_at(0);
    tries++;
    loaded = rc == FR_OK;
    if (rc) {
      failures++;
      CHECKF(u == NULL && rc == FR_E_NOMEM, "fail at %ld: status %d (%s)", n, rc, err.msg);
    }
    fr_unet_free(u);
    fr_ctx_clear(c);
  }
  printf("load with allocation n failing: %d of %d tries failed cleanly with FR_E_NOMEM\n", failures, tries);
  CHECK(failures > 0 && loaded);

  /* out of memory in the middle of a forward pass: a clean error, no output, no leak; the model still
   * works afterwards */
  struct fr_unet *u = NULL;
  CHECK_OK(fr_unet_load(c, ck, &u, &err), &err);
  struct fr_tensor *x = zeros(c, 4, (const int64_t[]){1, 4, 16, 16});
  struct fr_tensor *t = zeros(c, 1, (const int64_t[]){1});
  struct fr_tensor *ctx = zeros(c, 3, (const int64_t[]){1, 77, 32});
  struct fr_unet_cond cond = {.context = ctx};
  int fwd_fail = 0;
  for (long n = 1; u && n < 4000; n = n * 3 + 1) {
    struct fr_tensor *eps = NULL;
    fr_alloc_fail_at(n);
    enum fr_status rc = fr_unet_forward(c, u, x, t, &cond, NULL, &eps, &err);
    fr_alloc_fail_at(0);
    if (rc) {
      fwd_fail++;
      CHECKF(eps == NULL && rc == FR_E_NOMEM, "forward, fail at %ld: status %d (%s)", n, rc, err.msg);
    }
    fr_tensor_free(eps);
    fr_ctx_clear(c);
  }
  printf("forward with allocation n failing: %d clean FR_E_NOMEM failures\n", fwd_fail);
  CHECK(fwd_fail > 0);
  struct fr_tensor *eps = NULL;
  if (u)
    CHECK_OK(fr_unet_forward(c, u, x, t, &cond, NULL, &eps, &err), &err);
  CHECK(eps != NULL);
  fr_tensor_free(eps);
  fr_tensor_free(x);
  fr_tensor_free(t);
  fr_tensor_free(ctx);
  fr_unet_free(u);
  fr_checkpoint_close(ck);
}

int main(void) {
  fx = fr_test_fixtures();
  if (!fx)
    return fr_test_done();
  tmp = fr_test_tmpdir("unet_load");
  struct fr_err err = {{0}};
  struct fr_ctx *c = NULL;
  CHECK_OK(fr_ctx_new(&(struct fr_ctx_opts){.device = "cpu", .dtype = FR_F32}, &c, &err), &err);
  if (c && tmp) {
    test_bad_files(c);
    test_bad_inputs(c);
    test_alloc_failures(c);
  }
  fr_ctx_free(c);
  return fr_test_done();
}
