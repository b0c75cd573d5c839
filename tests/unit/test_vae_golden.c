/* VAE golden tests: decode and encode against diffusers' outputs (golden/sd15_vae, golden/sdxl_vae),
 * with the VAE loaded from the single-file checkpoints, the diffusers folder, a copy using the older
 * diffusers attention names (query/key/value/proj_attn), and a bare VAE file without the
 * first_stage_model. prefix. Then bad files and bad inputs: each a clear error naming the thing.
 *
 * Tolerance 1e-4 of the golden's scale (max|diff| / max|golden|): the fixtures README's bound for a
 * correct fp32 implementation; the goldens were computed in fp32 from the same fp16 weights, so only
 * summation order differs. FR_TEST_DEVICE / FR_TEST_DTYPE run it on another device or dtype with
 * fr_test_golden_tol's bounds (tests/test.h gives the reasons); FR_TEST_DTYPE=f16 runs the VAE in BF16
 * with the BF16 bound, as the pipeline does for an f16 run (the SDXL VAE overflows in fp16).
 *
 * Then the tiled decode and its out-of-memory fallback (fr_vae_decode_tiled / fr_vae_decode_host): one
 * tile covering the latents is exactly the whole decode; smaller overlapping tiles are close to it but
 * not equal (see test_tiled for the bound); on the cpu, a context memory budget (fr_ctx_opts.mem_limit)
 * that a whole decode exceeds makes fr_vae_decode_host fall back to tiles. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/safetensors.h"
#include "kernels/ops.h"
#include "nodes/models/vae.h"
#include "nodes/models/weights.h"
#include "tests/test.h"

#define TOL32 1e-4

static struct fr_ctx *ctx;
static double TOL = TOL32; /* fr_test_golden_tol of the context */
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
    printf("%-34s %-10s max|diff|/max|golden| = %.3g (tolerance %.0e, %s)\n", what, name, rel, TOL,
           fr_test_ctx_label(ctx));
    CHECKF(rel <= TOL, "%s %s: error %.3g > %.0e (%s)", what, name, rel, TOL, fr_test_ctx_label(ctx));
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

/* Host F32 latents [1, 4, n, n] with a smooth pattern plus the golden z's values (deterministic, no
 * generator needed), like a real latent: structure at several scales. */
static struct fr_tensor *latents(const struct fr_safetensors *g, int n) {
  const struct fr_st_entry *e = fr_st_find(g, "z");
  struct fr_tensor *v = e ? fr_st_view(e) : NULL, *zg = v ? fr_tensor_to_f32(v) : NULL;
  fr_tensor_free(v);
  struct fr_tensor *z = zg ? fr_tensor_f32(4, (int64_t[]){1, 4, n, n}) : NULL;
  for (int c = 0; z && c < 4; c++)
    for (int y = 0; y < n; y++)
      for (int x = 0; x < n; x++)
        ((float *)z->data)[(c * n + y) * n + x] = ((const float *)zg->data)[(c * 16 + y % 16) * 16 + x % 16] +
                                                  0.5f * sinf(0.3f * (float)(x + 2 * y + c));
  fr_tensor_free(zg);
  return z;
}

static double mean_abs(const struct fr_tensor *a) {
  double s = 0;
  int64_t n = fr_tensor_numel(a);
  for (int64_t i = 0; i < n; i++)
    s += fabs(((const float *)a->data)[i]);
  return s / (double)n;
}

static double max_abs(const struct fr_tensor *a, const struct fr_tensor *b, double *mean) {
  double m = 0, s = 0;
  int64_t n = fr_tensor_numel(a);
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)((const float *)a->data)[i] - ((const float *)b->data)[i]);
    m = d > m ? d : m;
    s += d;
  }
  *mean = s / (double)n;
  return m;
}

static bool same_bits(const struct fr_tensor *a, const struct fr_tensor *b) {
  return a && b && fr_tensor_same_shape(a, b) && memcmp(a->data, b->data, fr_tensor_nbytes(a)) == 0;
}

/* Tiled decode and the out-of-memory fallback on the sd15 VAE (path). */
static void test_tiled(const char *path) {
  struct fr_err err = {{0}};
  char gpath[4200];
  snprintf(gpath, sizeof gpath, "%s/golden/sd15_vae.safetensors", fx);
  struct fr_safetensors *g = NULL;
  struct fr_checkpoint *ck = NULL;
  struct fr_vae *vae = NULL;
  CHECK_OK(fr_st_open(gpath, &g, &err), &err);
  CHECK_OK(fr_checkpoint_open(path, &ck, &err), &err);
  if (ck)
    CHECK_OK(fr_vae_load(ctx, ck, &vae, &err), &err);
  struct fr_tensor *z = g ? latents(g, 16) : NULL, *whole = NULL, *t = NULL;
  int used = -1;
  if (!vae || !z)
    goto done;
  CHECK_OK(fr_vae_decode_host(ctx, vae, z, 0, &whole, &used, &err), &err);
  CHECK(used == 0 && whole && whole->shape[2] == 128 && whole->shape[3] == 128);
  /* one tile covers the 16x16 latents (tile 16 or more): exactly the whole decode; so is a decode asked
   * for in tiles larger than the image */
  CHECK_OK(fr_vae_decode_tiled(ctx, vae, z, 16, 4, &t, &err), &err);
  CHECKF(same_bits(t, whole), "one 16-latent tile differs from the whole decode");
  fr_tensor_free(t);
  t = NULL;
  CHECK_OK(fr_vae_decode_host(ctx, vae, z, 64, &t, &used, &err), &err);
  CHECKF(same_bits(t, whole) && used == 0, "16x16 latents asked in 64-latent tiles: not the whole decode");
  fr_tensor_free(t);
  t = NULL;
  /* Smaller tiles: not the whole decode, and no bound on "how close" can be tight on this fixture. The tiny
   * random VAE has 32 channels in 32 GroupNorm groups (one channel per group: a per-tile instance norm)
   * and a global mid-block attention, so a tile decoded alone differs from the same region of the whole
   * decode by about the image's own magnitude (measured on the cpu: mean |diff| 0.23 against a mean
   * |image| of 0.22 for one 8x8 tile of the golden latent); a real VAE (16 channels per group, trained)
   * is far less sensitive. So the checks are: (1) the stitching is exact: the result equals the linear
   * blend, computed here independently, of the tiles decoded on their own; (2) loosely, more context is
   * closer: mean |diff| to the whole decode shrinks from 8- to 12-latent tiles and is 0 for 16; and
   * mean |diff| stays below 2x mean |image| (a misplaced or mis-weighted tile is not caught by (2),
   * (1) catches it). */
  double prev = 1e30, mimg = mean_abs(whole);
  for (int ts = 8; ts <= 16; ts += 4) {
    CHECK_OK(fr_vae_decode_tiled(ctx, vae, z, ts, ts / 4, &t, &err), &err);
    if (t) {
      double mean = 0, mx = max_abs(t, whole, &mean);
      printf("tiles of %2d latents (overlap %d) vs whole decode: mean |diff| %.3g (mean |image| %.3g), max "
             "%.3g, "
             "%s\n",
             ts, ts / 4, mean, mimg, mx, fr_test_ctx_label(ctx));
      CHECKF(ts == 16 ? mean == 0 : mean < prev && mean < 2 * mimg,
             "tiles of %d: mean |diff| %.3g (before %.3g)", ts, mean, prev);
      prev = mean;
    }
    fr_tensor_free(t);
    t = NULL;
  }
  /* (1) latents [1, 4, 16, 8] in tiles of 12 overlapping by 8: two tiles, rows 0-11 and 4-15; pixel rows
   * 32-95 are blended with weights (96 - y) / 65 and (y - 31) / 65 (they sum to 1) */
  struct fr_tensor *zs = fr_tensor_f32(4, (int64_t[]){1, 4, 16, 8}),
                   *za = fr_tensor_f32(4, (int64_t[]){1, 4, 12, 8}),
                   *zb = fr_tensor_f32(4, (int64_t[]){1, 4, 12, 8}), *ia = NULL, *ib = NULL;
  for (int c = 0; c < 4; c++)
    for (int y = 0; y < 16; y++)
      for (int x = 0; x < 8; x++) {
        float v = ((const float *)z->data)[(c * 16 + y) * 16 + x];
        ((float *)zs->data)[(c * 16 + y) * 8 + x] = v;
        if (y < 12)
          ((float *)za->data)[(c * 12 + y) * 8 + x] = v;
        if (y >= 4)
          ((float *)zb->data)[(c * 12 + y - 4) * 8 + x] = v;
      }
  CHECK_OK(fr_vae_decode_tiled(ctx, vae, zs, 12, 8, &t, &err), &err);
  CHECK_OK(fr_vae_decode_host(ctx, vae, za, 0, &ia, &used, &err), &err);
  CHECK_OK(fr_vae_decode_host(ctx, vae, zb, 0, &ib, &used, &err), &err);
  if (t && ia && ib) {
    double worst = 0, scale = 0;
    for (int c = 0; c < 3; c++)
      for (int y = 0; y < 128; y++)
        for (int x = 0; x < 64; x++) {
          double a = y < 96 ? ((const float *)ia->data)[(c * 96 + y) * 64 + x] : 0;
          double b = y >= 32 ? ((const float *)ib->data)[(c * 96 + y - 32) * 64 + x] : 0;
          double wa = y < 32   ? 1
                      : y < 96 ? (96.0 - y) / 65
                               : 0,
                 wb = y >= 96   ? 1
                      : y >= 32 ? (y - 31.0) / 65
                                : 0;
          double want = (wa * a + wb * b) / (wa + wb), got = ((const float *)t->data)[(c * 128 + y) * 64 + x];
          worst = fmax(worst, fabs(got - want));
          scale = fmax(scale, fabs(want));
        }
    printf(
        "two 12-latent tiles overlapping by 8: max |tiled - blend of the tiles| = %.3g (max |image| %.3g)\n",
        worst, scale);
    CHECKF(worst <= 1e-5 * scale, "stitching differs from the linear blend of the tiles by %.3g", worst);
  }
  fr_tensor_free(zs);
  fr_tensor_free(za);
  fr_tensor_free(zb);
  fr_tensor_free(ia);
  fr_tensor_free(ib);
  fr_tensor_free(t);
  t = NULL;
  /* bad arguments */
  enum fr_status rc = fr_vae_decode_tiled(ctx, vae, z, 8, 8, &t, &err);
  CHECKF(rc == FR_E_INVALID && !t && strstr(err.msg, "overlap 8"), "overlap = tile: %d %s", rc, err.msg);
  rc = fr_vae_decode_tiled(ctx, vae, z, 0, 0, &t, &err);
  CHECKF(rc == FR_E_INVALID && !t && strstr(err.msg, "tile 0"), "tile 0: %d %s", rc, err.msg);

  /* The fallback, on the cpu (mem_limit is its test hook): measure the peak of a whole 24x24 decode and
   * of one in 16-latent tiles, then give a context a budget between the two. */
  if (strcmp(fr_ctx_device_name(ctx), "cpu") != 0) {
    printf("part skipped: the out-of-memory fallback test needs the cpu's mem_limit hook\n");
    goto done;
  }
  struct fr_tensor *z24 = latents(g, 24), *w24 = NULL, *t24 = NULL, *fb = NULL;
  struct fr_ctx *big = NULL, *small = NULL;
  struct fr_vae *vb = NULL, *vs = NULL;
  struct fr_ctx_mem m0, mw, mt;
  CHECK_OK(fr_ctx_new(&(struct fr_ctx_opts){.device = "cpu", .mem_limit = (size_t)1 << 34}, &big, &err),
           &err);
  if (big)
    CHECK_OK(fr_vae_load(big, ck, &vb, &err), &err);
  if (!vb || !z24)
    goto fb_done;
  CHECK_OK(fr_ctx_mem_stats(big, true, &m0, &err), &err);
  CHECK_OK(fr_vae_decode_host(big, vb, z24, 0, &w24, &used, &err), &err);
  CHECK_OK(fr_ctx_mem_stats(big, true, &mw, &err), &err);
  CHECK_OK(fr_vae_decode_tiled(big, vb, z24, 16, 4, &t24, &err), &err);
  CHECK_OK(fr_ctx_mem_stats(big, true, &mt, &err), &err);
  printf("cpu budget: weights %zu B, whole 24x24 decode peak %zu B, 16-latent tiles peak %zu B\n", m0.in_use,
         mw.peak, mt.peak);
  CHECKF(m0.in_use > 0 && mt.peak < mw.peak && mw.peak > m0.in_use && mt.in_use == m0.in_use,
         "memory counters: weights %zu, whole %zu, tiles %zu, after %zu", m0.in_use, mw.peak, mt.peak,
         mt.in_use);
  size_t limit = mt.peak + (mw.peak - mt.peak) / 2;
  CHECK_OK(fr_ctx_new(&(struct fr_ctx_opts){.device = "cpu", .mem_limit = limit}, &small, &err), &err);
  if (small)
    CHECK_OK(fr_vae_load(small, ck, &vs, &err), &err);
  if (vs) {
    /* the whole decode alone fails cleanly ... */
    struct fr_tensor *dz = fr_ctx_upload(small, z24), *img = NULL;
    rc = dz ? fr_vae_decode(small, vs, dz, &img, &err) : fr_ctx_status(small, &err);
    printf("whole decode under a %zu B budget -> %s: %s\n", limit, fr_status_str(rc), err.msg);
    CHECKF(rc == FR_E_NOMEM && !img && strstr(err.msg, "out of memory"), "budget: %d %s", rc, err.msg);
    fr_tensor_free(dz);
    fr_ctx_clear(small);
    /* ... and the pipeline's decode falls back to 16-latent tiles: the same image as asking for them */
    CHECK_OK(fr_vae_decode_host(small, vs, z24, 0, &fb, &used, &err), &err);
    CHECKF(used == 16 && same_bits(fb, t24), "fallback: tile %d, %s the 16-latent tiled decode", used,
           same_bits(fb, t24) ? "equal to" : "differs from");
    fr_tensor_free(fb);
    fb = NULL;
    /* a budget even one tile does not fit: a clean FR_E_NOMEM, and the context works afterwards */
    struct fr_ctx *tiny = NULL;
    struct fr_vae *vt = NULL;
    CHECK_OK(fr_ctx_new(&(struct fr_ctx_opts){.device = "cpu", .mem_limit = m0.in_use + 4096}, &tiny, &err),
             &err);
    if (tiny)
      CHECK_OK(fr_vae_load(tiny, ck, &vt, &err), &err);
    if (vt) {
      rc = fr_vae_decode_host(tiny, vt, z24, 0, &fb, &used, &err);
      printf("decode under a budget of the weights + 4 KiB -> %s: %s\n", fr_status_str(rc), err.msg);
      CHECKF(rc == FR_E_NOMEM && !fb && !fr_ctx_failed(tiny), "no room at all: %d %s", rc, err.msg);
    }
    fr_vae_free(vt);
    fr_ctx_free(tiny);
  }
fb_done:
  fr_tensor_free(z24);
  fr_tensor_free(w24);
  fr_tensor_free(t24);
  fr_tensor_free(fb);
  fr_vae_free(vb);
  fr_vae_free(vs);
  fr_ctx_free(big);
  fr_ctx_free(small);
done:
  fr_tensor_free(z);
  fr_tensor_free(whole);
  fr_vae_free(vae);
  fr_checkpoint_close(ck);
  fr_st_close(g);
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
  const char *dt = getenv("FR_TEST_DTYPE");
  if (dt && strcmp(dt, "f16") == 0) {
    printf("FR_TEST_DTYPE=f16: the VAE computes in bf16, as in an f16 pipeline run (fp16 overflows in the "
           "SDXL VAE); bf16 bound\n");
    setenv("FR_TEST_DTYPE", "bf16", 1);
  }
  ctx = fr_test_ctx_new(); /* cpu F32 unless FR_TEST_DEVICE / FR_TEST_DTYPE say otherwise */
  if (!ctx)
    return fr_test_done();
  TOL = fr_test_golden_tol(ctx, TOL32);

  char p[4200];
  snprintf(p, sizeof p, "%s/models/sd15-tiny.safetensors", fx);
  run_golden("sd15 single-file", p, "sd15_vae", 0.18215f);
  snprintf(p, sizeof p, "%s/models/sdxl-tiny.safetensors", fx);
  run_golden("sdxl single-file", p, "sdxl_vae", 0.13025f);
  snprintf(p, sizeof p, "%s/models/sd15-tiny", fx);
  run_golden("sd15 diffusers folder", p, "sd15_vae", 0.18215f);

  snprintf(p, sizeof p, "%s/models/sd15-tiny.safetensors", fx);
  test_tiled(p);

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
