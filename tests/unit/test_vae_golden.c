/* VAE golden tests: decode and encode against diffusers' outputs (golden/sd15_vae, golden/sdxl_vae),
 * with the VAE loaded from the single-file checkpoints, the diffusers folder, a copy using the older
 * diffusers attention names (query/key/value/proj_attn), and a bare VAE file without the
 * first_stage_model. prefix. Then bad files and bad inputs: each a clear error naming the thing.
 *
 * Tolerance 1e-4 of the golden's scale (max|diff| / max|golden|): the fixtures README's bound for a
 * correct fp32 implementation; the goldens were computed in fp32 from the same fp16 weights, so only
 * summation order differs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/safetensors.h"
#include "kernels/ops.h"
#include "nodes/models/vae.h"
#include "nodes/models/weights.h"
#include "tests/test.h"

#define TOL 1e-4

static struct fr_ctx *ctx;
static char fx[4096];

static struct fr_tensor *golden(const struct fr_safetensors *g, const char *name) {
  const struct fr_st_entry *e = fr_st_find(g, name);
  CHECKF(e != NULL, "golden tensor %s", name);
  if (!e)
    return NULL;
  struct fr_tensor *v = fr_st_view(e);
  struct fr_tensor *t = v ? fr_ctx_upload(ctx, v) : NULL;
  fr_tensor_free(v);
  return t;
}

static void compare(const char *what, const struct fr_tensor *out, const struct fr_safetensors *g,
                    const char *name) {
  const struct fr_st_entry *e = fr_st_find(g, name);
  struct fr_tensor *host = out ? fr_ctx_download(ctx, out) : NULL;
  CHECKF(e && host, "%s: output and golden %s", what, name);
  if (!e || !host) {
    fr_tensor_free(host);
    return;
  }
  struct fr_tensor *ref = fr_st_view(e);
  bool same = ref && fr_tensor_same_shape(host, ref);
  CHECKF(same, "%s: %s shape", what, name);
  if (same) {
    double rel = fr_test_rel_err(host->data, ref->data, (long)fr_tensor_numel(ref));
    printf("%-34s %-10s max|diff|/max|golden| = %.3g (tolerance %.0e: fp32 vs fp32, summation order only)\n",
           what, name, rel, TOL);
    CHECKF(rel <= TOL, "%s %s: error %.3g > %.0e", what, name, rel, TOL);
  }
  fr_tensor_free(ref);
  fr_tensor_free(host);
}

/* Loads the VAE from path and checks decode and encode against golden file gname. */
static void run_golden(const char *what, const char *path, const char *gname, float want_scale) {
  struct fr_err err = {{0}};
  char gpath[4200];
  snprintf(gpath, sizeof gpath, "%s/golden/%s.safetensors", fx, gname);
  struct fr_safetensors *g = NULL;
  CHECK_OK(fr_st_open(gpath, &g, &err), &err);
  struct fr_checkpoint *ck = NULL;
  CHECK_OK(fr_checkpoint_open(path, &ck, &err), &err);
  struct fr_vae *vae = NULL;
  if (ck)
    CHECK_OK(fr_vae_load(ctx, ck, &vae, &err), &err);
  if (!g || !vae) {
    fr_checkpoint_close(ck);
    fr_st_close(g);
    return;
  }
  const struct fr_vae_config *cfg = fr_vae_config(vae);
  /* the tiny VAE: block_out_channels (32, 32, 64, 64), 2 res blocks, 4 latent channels (config.json) */
  CHECK(cfg->ch == 32 && cfg->levels == 4 && cfg->mult[0] == 1 && cfg->mult[1] == 1 && cfg->mult[2] == 2 &&
        cfg->mult[3] == 2 && cfg->num_res_blocks == 2 && cfg->z_channels == 4 && cfg->has_encoder);
  float sf = fr_vae_scaling_factor(ck);
  CHECKF(sf == want_scale, "%s: scaling factor %g, want %g", what, sf, want_scale);

  struct fr_tensor *z = golden(g, "z"), *img = NULL;
  CHECK_OK(fr_vae_decode(ctx, vae, z, &img, &err), &err);
  compare(what, img, g, "decoded");
  struct fr_tensor *image = golden(g, "image"), *mean = NULL, *logvar = NULL;
  CHECK_OK(fr_vae_encode(ctx, vae, image, &mean, &logvar, &err), &err);
  compare(what, mean, g, "enc_mean");
  compare(what, logvar, g, "enc_logvar");
  fr_tensor_free(z);
  fr_tensor_free(img);
  fr_tensor_free(image);
  fr_tensor_free(mean);
  fr_tensor_free(logvar);
  fr_vae_free(vae);
  fr_checkpoint_close(ck);
  fr_st_close(g);
}

/* Writes the tensors of src whose names start with `from` to path, renamed: prefix `from` replaced
 * by `to`, and each (old, new) substring pair in ren applied. `drop` names a key (after renaming) to
 * leave out and `bad` one to replace by a [1] tensor; either may be NULL. */
static void write_copy(const char *path, const struct fr_safetensors *src, const char *from, const char *to,
                       const char *const (*ren)[2], int n_ren, const char *drop, const char *bad) {
  struct fr_st_item *items = calloc((size_t)src->n, sizeof *items);
  char **names = calloc((size_t)src->n, sizeof *names);
  struct fr_tensor **views = calloc((size_t)src->n, sizeof *views);
  struct fr_tensor *badt = fr_tensor_f32(1, (int64_t[]){1});
  int n = 0;
  for (int i = 0; i < src->n; i++) {
    const char *k = src->entries[i].name;
    if (strncmp(k, from, strlen(from)) != 0)
      continue;
    char name[512];
    snprintf(name, sizeof name, "%s%s", to, k + strlen(from));
    for (int r = 0; r < n_ren; r++) {
      char *p = strstr(name, ren[r][0]);
      if (p) {
        char tail[512];
        snprintf(tail, sizeof tail, "%s", p + strlen(ren[r][0]));
        snprintf(p, sizeof name - (size_t)(p - name), "%s%s", ren[r][1], tail);
      }
    }
    if (drop && strcmp(name, drop) == 0)
      continue;
    names[n] = strdup(name);
    views[n] = fr_st_view(&src->entries[i]);
    items[n].name = names[n];
    items[n].t = bad && strcmp(name, bad) == 0 ? badt : views[n];
    n++;
  }
  struct fr_err err = {{0}};
  CHECK_OK(fr_st_write_file(path, items, n, NULL, NULL, 0, &err), &err);
  for (int i = 0; i < n; i++) {
    free(names[i]);
    fr_tensor_free(views[i]);
  }
  fr_tensor_free(badt);
  free(items);
  free(names);
  free(views);
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  CHECKF(f != NULL, "cannot write %s", path);
  if (f) {
    fputs(text, f);
    fclose(f);
  }
}

/* Expects loading path to fail with rc and a message containing `needle`. */
static void expect_load_error(const char *what, const char *path, enum fr_status want, const char *needle) {
  struct fr_err err = {{0}};
  struct fr_checkpoint *ck = NULL;
  CHECK_OK(fr_checkpoint_open(path, &ck, &err), &err);
  if (!ck)
    return;
  struct fr_vae *vae = NULL;
  enum fr_status rc = fr_vae_load(ctx, ck, &vae, &err);
  printf("%-34s -> %s: %s\n", what, fr_status_str(rc), err.msg);
  CHECKF(rc == want, "%s: status %s, want %s", what, fr_status_str(rc), fr_status_str(want));
  CHECKF(strstr(err.msg, needle) != NULL, "%s: message '%s' should name '%s'", what, err.msg, needle);
  CHECK(vae == NULL);
  fr_vae_free(vae);
  fr_checkpoint_close(ck);
  fr_ctx_clear(ctx);
}

int main(void) {
  const char *f = fr_test_fixtures();
  if (!f)
    return fr_test_done();
  snprintf(fx, sizeof fx, "%s", f);
  struct fr_err err = {{0}};
  struct fr_ctx_opts opts = {.device = "cpu", .dtype = FR_F32, .threads = 2};
  CHECK_OK(fr_ctx_new(&opts, &ctx, &err), &err);
  if (!ctx)
    return fr_test_done();

  char p[4200];
  snprintf(p, sizeof p, "%s/models/sd15-tiny.safetensors", fx);
  run_golden("sd15 single-file", p, "sd15_vae", 0.18215f);
  snprintf(p, sizeof p, "%s/models/sdxl-tiny.safetensors", fx);
  run_golden("sdxl single-file", p, "sdxl_vae", 0.13025f);
  snprintf(p, sizeof p, "%s/models/sd15-tiny", fx);
  run_golden("sd15 diffusers folder", p, "sd15_vae", 0.18215f);

  /* older diffusers names, as a single-component folder (config.json + weights) */
  const char *tmp = fr_test_tmpdir("vae_golden");
  char dir[4300], file[4400], cfgp[4400];
  snprintf(dir, sizeof dir, "%s/vae_old", tmp);
  char cmd[4400];
  snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
  CHECK(system(cmd) == 0);
  snprintf(cfgp, sizeof cfgp, "%s/models/sd15-tiny/vae/config.json", fx);
  char *cfg = fr_test_read_file(cfgp, NULL);
  CHECK(cfg != NULL);
  snprintf(file, sizeof file, "%s/config.json", dir);
  write_text(file, cfg ? cfg : "");
  free(cfg);
  snprintf(p, sizeof p, "%s/models/sd15-tiny/vae/diffusion_pytorch_model.safetensors", fx);
  struct fr_safetensors *dv = NULL;
  CHECK_OK(fr_st_open(p, &dv, &err), &err);
  static const char *const old_names[][2] = {
      {".to_q.", ".query."}, {".to_k.", ".key."}, {".to_v.", ".value."}, {".to_out.0.", ".proj_attn."}};
  snprintf(file, sizeof file, "%s/diffusion_pytorch_model.safetensors", dir);
  if (dv)
    write_copy(file, dv, "", "", old_names, 4, NULL, NULL);
  fr_st_close(dv);
  run_golden("sd15 diffusers, old attn names", dir, "sd15_vae", 0.18215f);

  /* a bare VAE file (keys without first_stage_model.): loads, but the scale cannot be told */
  snprintf(p, sizeof p, "%s/models/sd15-tiny.safetensors", fx);
  struct fr_safetensors *sf = NULL;
  CHECK_OK(fr_st_open(p, &sf, &err), &err);
  char bare[4400], missing[4400], badshape[4400], novae[4400];
  snprintf(bare, sizeof bare, "%s/bare_vae.safetensors", tmp);
  snprintf(missing, sizeof missing, "%s/missing.safetensors", tmp);
  snprintf(badshape, sizeof badshape, "%s/badshape.safetensors", tmp);
  snprintf(novae, sizeof novae, "%s/novae.safetensors", tmp);
  if (sf) {
    write_copy(bare, sf, "first_stage_model.", "", NULL, 0, NULL, NULL);
    write_copy(missing, sf, "first_stage_model.", "first_stage_model.", NULL, 0,
               "first_stage_model.encoder.mid.attn_1.k.bias", NULL);
    write_copy(badshape, sf, "first_stage_model.", "", NULL, 0, NULL, "decoder.up.2.block.1.conv2.weight");
    write_copy(novae, sf, "model.diffusion_model.", "model.diffusion_model.", NULL, 0, NULL, NULL);
  }
  fr_st_close(sf);
  run_golden("bare VAE file", bare, "sd15_vae", 0.0f);

  /* bad files: each a clear error naming the tensor */
  expect_load_error("missing tensor", missing, FR_E_NOTFOUND, "first_stage_model.encoder.mid.attn_1.k.bias");
  expect_load_error("mis-shaped tensor", badshape, FR_E_SHAPE, "decoder.up.2.block.1.conv2.weight");
  expect_load_error("checkpoint without a VAE", novae, FR_E_NOTFOUND, "no VAE");

  /* bad inputs and out of memory, on a loaded VAE */
  struct fr_checkpoint *ck = NULL;
  CHECK_OK(fr_checkpoint_open(bare, &ck, &err), &err);
  struct fr_vae *vae = NULL;
  if (ck)
    CHECK_OK(fr_vae_load(ctx, ck, &vae, &err), &err);
  if (vae) {
    struct fr_tensor *z3 = fr_tensor_f32(4, (int64_t[]){1, 3, 4, 4}), *img = NULL;
    enum fr_status rc = fr_vae_decode(ctx, vae, z3, &img, &err);
    printf("decode of a [1, 3, 4, 4] latent -> %s: %s\n", fr_status_str(rc), err.msg);
    CHECK(rc == FR_E_SHAPE && img == NULL && strstr(err.msg, "[1, 3, 4, 4]"));
    struct fr_tensor *odd = fr_tensor_f32(4, (int64_t[]){1, 3, 20, 16}), *m = NULL, *lv = NULL;
    rc = fr_vae_encode(ctx, vae, odd, &m, &lv, &err);
    printf("encode of a [1, 3, 20, 16] image -> %s: %s\n", fr_status_str(rc), err.msg);
    CHECK(rc == FR_E_SHAPE && m == NULL && lv == NULL);
    fr_tensor_free(z3);
    fr_tensor_free(odd);
  }
  fr_vae_free(vae);

  /* allocation failure at every step of loading: a clean FR_E_NOMEM (or an op error), nothing leaked */
  int failures = 0;
  for (long n = 1; n < 2000 && ck; n += 7) {
    vae = NULL;
    fr_alloc_fail_at(n);
    enum fr_status rc = fr_vae_load(ctx, ck, &vae, &err);
    fr_alloc_fail_at(0);
    fr_ctx_clear(ctx);
    if (rc == FR_OK) {
      fr_vae_free(vae);
      break;
    }
    failures++;
    CHECKF(vae == NULL && rc != FR_OK && err.msg[0], "fail at %ld: rc %d", n, rc);
  }
  CHECK(failures > 0);
  fr_checkpoint_close(ck);

  fr_ctx_free(ctx);
  return fr_test_done();
}
