/* Synthetic checkpoints: the key lists the architecture tables generate.
 *
 * 1. Full size: tensor counts and parameter counts of each component against the published sizes of
 *    the real models (SD1.5 UNet 859,520,964 parameters, VAE 83,653,863, CLIP-L text 123,060,480;
 *    SDXL UNet 2,567,463,684; OpenCLIP-G text + projection 694,659,840) and some real key shapes; the
 *    ControlNet's count is the UNet encoder's plus the hint block and 13 zero convs (340 tensors)
 * 2. Shrunk to the fixtures' sizes (README: channels and widths scaled down, structure kept), the
 *    generated names and shapes equal the tiny fixture files key for key: the fixtures mirror the real
 *    files, so this checks the layout against data the code did not produce.
 * 3. A small synthetic file is written, read back by the safetensors reader and its VAE loaded and run
 *    (the loaders accept what synth writes); a write into a missing folder fails cleanly.
 * Full-size files (2-7 GB) are written by hand, not here: see BENCHMARKS.md. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/safetensors.h"
#include "kernels/ops.h"
#include "nodes/models/synth.h"
#include "nodes/models/vae.h"
#include "nodes/models/weights.h"
#include "tests/test.h"

static int64_t count_prefix(const struct fr_synth_list *l, const char *prefix, int64_t *params) {
  int64_t n = 0, p = 0;
  for (int i = 0; i < l->n; i++) {
    if (strncmp(l->t[i].name, prefix, strlen(prefix)) != 0)
      continue;
    n++;
    int64_t e = 1;
    for (int d = 0; d < l->t[i].ndim; d++)
      e *= l->t[i].shape[d];
    p += e;
  }
  if (params)
    *params = p;
  return n;
}

static const struct fr_synth_tensor *find(const struct fr_synth_list *l, const char *name) {
  for (int i = 0; i < l->n; i++)
    if (strcmp(l->t[i].name, name) == 0)
      return &l->t[i];
  return NULL;
}

static void check_shape(const struct fr_synth_list *l, const char *name, int ndim, const int64_t *shape) {
  const struct fr_synth_tensor *t = find(l, name);
  CHECKF(t != NULL, "%s missing", name);
  if (!t)
    return;
  bool ok = t->ndim == ndim;
  for (int i = 0; ok && i < ndim; i++)
    ok = t->shape[i] == shape[i];
  char have[96], want[96];
  fr_shape_str_dims(t->ndim, t->shape, have, sizeof have);
  fr_shape_str_dims(ndim, shape, want, sizeof want);
  CHECKF(ok, "%s: %s, real file has %s", name, have, want);
}

static struct fr_synth_list *build(const struct fr_synth_arch *a) {
  struct fr_err err = {{0}};
  struct fr_synth_list *l = NULL;
  CHECK_OK(fr_synth_list_build(a, &l, &err), &err);
  return l;
}

static void full_size(void) {
  struct fr_err err = {{0}};
  struct fr_synth_arch a;
  int64_t p;

  CHECK_OK(fr_synth_arch("sd15", &a, &err), &err);
  struct fr_synth_list *l = build(&a);
  if (l) {
    int64_t nu = count_prefix(l, "model.diffusion_model.", &p);
    printf("sd15: %d tensors; UNet %lld tensors, %lld params\n", l->n, (long long)nu, (long long)p);
    CHECK(nu == 686 && p == 859520964);
    int64_t nv = count_prefix(l, "first_stage_model.", &p);
    printf("sd15: VAE %lld tensors, %lld params\n", (long long)nv, (long long)p);
    CHECK(nv == 248 && p == 83653863);
    int64_t nt = count_prefix(l, "cond_stage_model.", &p);
    printf("sd15: text encoder %lld tensors, %lld params (+77 position ids)\n", (long long)nt, (long long)p);
    CHECK(nt == 197 && p == 123060480 + 77);
    CHECK(l->n == 686 + 248 + 197 + 12 + 2); /* + DDPM schedule buffers + model_ema scalars */
    check_shape(l, "model.diffusion_model.input_blocks.1.1.proj_in.weight", 4, (int64_t[]){320, 320, 1, 1});
    check_shape(l, "model.diffusion_model.input_blocks.4.0.skip_connection.weight", 4,
                (int64_t[]){640, 320, 1, 1});
    check_shape(l, "model.diffusion_model.output_blocks.2.1.conv.weight", 4, (int64_t[]){1280, 1280, 3, 3});
    check_shape(l, "model.diffusion_model.output_blocks.5.2.conv.weight", 4, (int64_t[]){1280, 1280, 3, 3});
    check_shape(l, "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight", 2,
                (int64_t[]){1280, 768});
    check_shape(l, "model.diffusion_model.out.2.weight", 4, (int64_t[]){4, 320, 3, 3});
    check_shape(l, "first_stage_model.decoder.up.1.block.0.nin_shortcut.weight", 4,
                (int64_t[]){256, 512, 1, 1});
    check_shape(l, "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", 2,
                (int64_t[]){49408, 768});
    const struct fr_synth_tensor *ids =
        find(l, "cond_stage_model.transformer.text_model.embeddings.position_ids");
    CHECK(ids && ids->dtype == FR_I64);
    double tf = fr_synth_unet_flops(&a.unet, 64, 64, 77) / 1e12;
    printf("sd15 UNet forward at 64x64, batch 1: %.3f TFLOP (the issue: 0.80)\n", tf);
    CHECK(tf > 0.78 && tf < 0.82);
  }
  fr_synth_list_free(l);

  CHECK_OK(fr_synth_arch("sdxl", &a, &err), &err);
  l = build(&a);
  if (l) {
    int64_t nu = count_prefix(l, "model.diffusion_model.", &p);
    printf("sdxl: %d tensors; UNet %lld tensors, %lld params\n", l->n, (long long)nu, (long long)p);
    CHECK(nu == 1680 && p == 2567463684);
    int64_t ng = count_prefix(l, "conditioner.embedders.1.", &p);
    printf("sdxl: OpenCLIP-G %lld tensors, %lld params\n", (long long)ng, (long long)p);
    CHECK(ng == 390 && p == 694659840 + 1); /* + logit_scale */
    CHECK(l->n == 1680 + 248 + 197 + 390);
    check_shape(l, "model.diffusion_model.label_emb.0.0.weight", 2, (int64_t[]){1280, 2816});
    check_shape(l, "model.diffusion_model.input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight", 2,
                (int64_t[]){1280, 2048});
    check_shape(l, "model.diffusion_model.input_blocks.4.1.proj_in.weight", 2, (int64_t[]){640, 640});
    check_shape(l, "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight", 2,
                (int64_t[]){3840, 1280});
  }
  fr_synth_list_free(l);

  CHECK_OK(fr_synth_arch("sdxl-refiner", &a, &err), &err);
  l = build(&a);
  if (l) {
    int64_t nu = count_prefix(l, "model.diffusion_model.", &p);
    printf("sdxl-refiner: %d tensors; UNet %lld tensors, %lld params\n", l->n, (long long)nu, (long long)p);
    check_shape(l, "model.diffusion_model.label_emb.0.0.weight", 2, (int64_t[]){1536, 2560});
    check_shape(l, "model.diffusion_model.input_blocks.7.1.transformer_blocks.3.attn2.to_k.weight", 2,
                (int64_t[]){1536, 1280});
    check_shape(l, "conditioner.embedders.0.model.text_projection", 2, (int64_t[]){1280, 1280});
  }
  fr_synth_list_free(l);

  CHECK_OK(fr_synth_arch("controlnet-sd15", &a, &err), &err);
  l = build(&a);
  if (l) {
    int64_t n = count_prefix(l, "control_model.", &p);
    printf("controlnet-sd15: %lld tensors, %lld params\n", (long long)n, (long long)p);
    CHECK(n == l->n && n == 340);
    check_shape(l, "control_model.input_hint_block.14.weight", 4, (int64_t[]){320, 256, 3, 3});
    check_shape(l, "control_model.zero_convs.11.0.weight", 4, (int64_t[]){1280, 1280, 1, 1});
  }
  fr_synth_list_free(l);

  CHECK(fr_synth_arch("sd3", &a, &err) == FR_E_INVALID && strstr(err.msg, "sd3"));
}

/* Compares list l with the fixture file key for key (names, ndim, shape). alias maps names the
 * fixture spells differently (NULL-terminated pairs: generated, fixture). */
static void same_as_fixture(const char *what, const struct fr_synth_list *l, const char *file,
                            const char *const (*alias)[2]) {
  struct fr_err err = {{0}};
  struct fr_safetensors *st = NULL;
  CHECK_OK(fr_st_open(file, &st, &err), &err);
  if (!st || !l)
    return;
  int missing = 0, mismatched = 0;
  for (int i = 0; i < l->n; i++) {
    const struct fr_synth_tensor *t = &l->t[i];
    char name[512];
    snprintf(name, sizeof name, "%s", t->name);
    for (int a = 0; alias && alias[a][0]; a++) {
      char *p = strstr(name, alias[a][0]);
      if (p) {
        char tail[512];
        snprintf(tail, sizeof tail, "%s", p + strlen(alias[a][0]));
        snprintf(p, sizeof name - (size_t)(p - name), "%s%s", alias[a][1], tail);
      }
    }
    const struct fr_st_entry *e = fr_st_find(st, name);
    if (!e) {
      if (missing++ < 5)
        fprintf(stderr, "%s: generated %s, not in the fixture\n", what, name);
      continue;
    }
    bool ok = e->ndim == t->ndim;
    for (int d = 0; ok && d < t->ndim; d++)
      ok = e->shape[d] == t->shape[d];
    if (t->fixed_dtype)
      ok = ok && e->dtype == t->dtype;
    if (!ok && mismatched++ < 5) {
      char a[96], b[96];
      fprintf(stderr, "%s: %s generated %s, fixture %s\n", what, name,
              fr_shape_str_dims(t->ndim, t->shape, a, 96), fr_shape_str_dims(e->ndim, e->shape, b, 96));
    }
  }
  printf("%s: %d generated, %d in the fixture, %d missing there, %d mismatched\n", what, l->n, st->n, missing,
         mismatched);
  CHECKF(missing == 0 && mismatched == 0 && l->n == st->n, "%s: key lists differ", what);
  fr_st_close(st);
}

/* The fixture sizes (README "Shapes (real -> tiny)" and the tiny files' config.json). */
static void shrink_clip(struct fr_synth_clip *c) {
  c->width = 32, c->layers = 3, c->ff = 64, c->proj = 32;
}

static void tiny(const char *fx) {
  struct fr_err err = {{0}};
  struct fr_synth_arch a;
  char file[4200];

  fr_synth_arch("sd15", &a, &err);
  a.unet.ch = 32, a.unet.mult[1] = 1, a.unet.mult[2] = 2, a.unet.mult[3] = 2, a.unet.ctx_dim = 32;
  a.vae.ch = 32, a.vae.mult[1] = 1, a.vae.mult[2] = 2, a.vae.mult[3] = 2;
  shrink_clip(&a.clip[0]);
  struct fr_synth_list *l = build(&a);
  snprintf(file, sizeof file, "%s/models/sd15-tiny.safetensors", fx);
  same_as_fixture("sd15 (tiny)", l, file, NULL);
  fr_synth_list_free(l);

  /* ControlNet: the same shrunken UNet, hint block widths as real */
  struct fr_synth_unet small = a.unet;
  fr_synth_arch("controlnet-sd15", &a, &err);
  a.unet = small;
  a.unet.controlnet = true;
  l = build(&a);
  snprintf(file, sizeof file, "%s/models/controlnet-tiny.safetensors", fx);
  same_as_fixture("controlnet-sd15 (tiny)", l, file, NULL);
  fr_synth_list_free(l);

  fr_synth_arch("sdxl", &a, &err);
  a.unet.ch = 32, a.unet.mult[1] = 2, a.unet.mult[2] = 2, a.unet.depth[2] = 2, a.unet.depth_mid = 2;
  a.unet.depth[1] = 1, a.unet.ctx_dim = 64, a.unet.adm_in = 80;
  a.vae.ch = 32, a.vae.mult[1] = 1, a.vae.mult[2] = 2, a.vae.mult[3] = 2;
  shrink_clip(&a.clip[0]);
  shrink_clip(&a.clip[1]);
  l = build(&a);
  snprintf(file, sizeof file, "%s/models/sdxl-tiny.safetensors", fx);
  same_as_fixture("sdxl (tiny)", l, file, NULL);
  fr_synth_list_free(l);

  fr_synth_arch("sdxl-refiner", &a, &err);
  a.unet.ch = 32, a.unet.mult[1] = 2, a.unet.mult[2] = 2, a.unet.mult[3] = 2, a.unet.depth[1] = 2;
  a.unet.depth[2] = 2, a.unet.depth_mid = 2, a.unet.ctx_dim = 32, a.unet.adm_in = 72;
  a.vae.ch = 32, a.vae.mult[1] = 1, a.vae.mult[2] = 2, a.vae.mult[3] = 2;
  shrink_clip(&a.clip[0]);
  l = build(&a);
  /* The tiny refiner spells the aesthetic/size embedding with diffusers' names (add_embedding.linear_1/2)
   * where sd_xl_refiner_1.0 has label_emb.0.0/0.2 like the base; synth writes the real names. */
  static const char *const refiner_alias[][2] = {
      {"label_emb.0.0", "add_embedding.linear_1"}, {"label_emb.0.2", "add_embedding.linear_2"}, {NULL, NULL}};
  snprintf(file, sizeof file, "%s/models/sdxl-refiner-tiny.safetensors", fx);
  same_as_fixture("sdxl-refiner (tiny)", l, file, refiner_alias);
  fr_synth_list_free(l);
}

static void write_and_load(void) {
  struct fr_err err = {{0}};
  struct fr_synth_arch a;
  fr_synth_arch("sd15", &a, &err);
  /* a small VAE-only checkpoint: 2 levels of 32 channels */
  a.has_unet = false, a.n_clip = 0, a.ldm_extras = false;
  a.vae = (struct fr_synth_vae){.ch = 32, .levels = 2, .mult = {1, 2}, .nres = 1, .z = 4};
  struct fr_synth_list *l = build(&a);
  if (!l)
    return;
  const char *tmp = fr_test_tmpdir("synth");
  char path[4200];
  snprintf(path, sizeof path, "%s/small.safetensors", tmp);
  CHECK_OK(fr_synth_write(l, path, FR_F16, 42, NULL, NULL, &err), &err);
  struct fr_checkpoint *ck = NULL;
  CHECK_OK(fr_checkpoint_open(path, &ck, &err), &err);
  if (ck) {
    CHECK(ck->file->n == l->n);
    const struct fr_st_entry *e = fr_st_find(ck->file, "first_stage_model.decoder.norm_out.weight");
    CHECK(e && e->dtype == FR_F16 && fr_f16_to_f32(((const uint16_t *)e->data)[0]) == 1.0f);
    /* the random weights: mean about 0, std about 0.02 */
    e = fr_st_find(ck->file, "first_stage_model.decoder.up.1.block.0.conv1.weight");
    double s = 0, s2 = 0;
    int64_t n = e ? e->shape[0] * e->shape[1] * 9 : 0;
    for (int64_t i = 0; i < n; i++) {
      double v = fr_f16_to_f32(((const uint16_t *)e->data)[i]);
      s += v, s2 += v * v;
    }
    double mean = n ? s / (double)n : 1, sd = n ? sqrt(s2 / (double)n - mean * mean) : 0;
    printf("synth weights: mean %.5f std %.5f over %lld values (want 0, 0.02)\n", mean, sd, (long long)n);
    CHECK(fabs(mean) < 0.002 && fabs(sd - 0.02) < 0.001);
    struct fr_ctx *c = NULL;
    struct fr_ctx_opts o = {.device = "cpu", .dtype = FR_F32, .threads = 2};
    CHECK_OK(fr_ctx_new(&o, &c, &err), &err);
    struct fr_vae *vae = NULL;
    if (c)
      CHECK_OK(fr_vae_load(c, ck, &vae, &err), &err);
    if (vae) {
      struct fr_tensor *zh = fr_tensor_f32(4, (int64_t[]){1, 4, 8, 8});
      float *zd = zh->data;
      for (int i = 0; i < 256; i++)
        zd[i] = (float)((i * 37) % 17) / 8.0f - 1.0f;
      struct fr_tensor *z = fr_ctx_upload(c, zh), *img = NULL;
      CHECK_OK(fr_vae_decode(c, vae, z, &img, &err), &err);
      struct fr_tensor *ih = img ? fr_ctx_download(c, img) : NULL;
      CHECK(ih && ih->shape[1] == 3 && ih->shape[2] == 16 && ih->shape[3] == 16);
      bool finite = ih != NULL;
      for (int64_t i = 0; ih && i < fr_tensor_numel(ih); i++)
        finite = finite && isfinite(((float *)ih->data)[i]);
      CHECK(finite);
      fr_tensor_free(zh);
      fr_tensor_free(z);
      fr_tensor_free(img);
      fr_tensor_free(ih);
    }
    fr_vae_free(vae);
    fr_ctx_free(c);
  }
  fr_checkpoint_close(ck);

  /* same seed, same bytes; the temporary is gone */
  char path2[4300];
  snprintf(path2, sizeof path2, "%s/again.safetensors", tmp);
  CHECK_OK(fr_synth_write(l, path2, FR_F16, 42, NULL, NULL, &err), &err);
  char cmd[9000];
  snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", path, path2);
  CHECK(system(cmd) == 0);
  snprintf(cmd, sizeof cmd, "ls '%s' | grep -q tmp", tmp);
  CHECK(system(cmd) != 0);

  /* a folder that does not exist: a clear error, nothing written */
  snprintf(path, sizeof path, "%s/no/such/dir/x.safetensors", tmp);
  enum fr_status rc = fr_synth_write(l, path, FR_F16, 42, NULL, NULL, &err);
  printf("write into a missing folder -> %s: %s\n", fr_status_str(rc), err.msg);
  CHECK(rc == FR_E_IO && strstr(err.msg, "x.safetensors"));
  rc = fr_synth_write(l, path2, FR_I32, 42, NULL, NULL, &err);
  CHECK(rc == FR_E_INVALID);
  fr_synth_list_free(l);
}

int main(void) {
  full_size();
  write_and_load();
  const char *fx = fr_test_fixtures();
  if (fx)
    tiny(fx);
  return fr_test_done();
}
