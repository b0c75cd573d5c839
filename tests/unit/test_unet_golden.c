/* UNet goldens: sd15_unet (single file and the diffusers folder), sdxl_unet and refiner_unet from
 * ../shared/fixtures, made by diffusers in fp32 from the same fp16 weights. Tolerance: max|diff| /
 * max|golden| <= 1e-4, the fixtures README's bound for a correct fp32 implementation (a different
 * summation order in GEMMs and softmax moves results by ~1e-6 relative; a semantic error such as a wrong
 * head count, epsilon or embedding order moves them by 1e-2 or more). FR_TEST_DEVICE / FR_TEST_DTYPE
 * run it on another device or dtype: F32 keeps 1e-4, F16 and BF16 get the looser bounds of
 * fr_test_golden_tol (tests/test.h gives the reasons). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/safetensors.h"
#include "kernels/ops.h"
#include "nodes/models/unet.h"
#include "tests/test.h"

#define TOL32 1e-4

/* Golden tensor name as a host F32 tensor (the caller frees it); NULL, with a failed check, when missing. */
static struct fr_tensor *host_f32(const struct fr_safetensors *g, const char *name) {
  const struct fr_st_entry *e = fr_st_find(g, name);
  CHECKF(e != NULL, "golden tensor %s missing", name);
  struct fr_tensor *v = e ? fr_st_view(e) : NULL, *h = v ? fr_tensor_to_f32(v) : NULL;
  fr_tensor_free(v);
  return h;
}

/* Runs the three timesteps of golden file gname through the UNet of checkpoint model in context c. */
static void run_golden(struct fr_ctx *c, const char *fx, const char *model, const char *gname,
                       const int *channels, int levels, enum fr_unet_arch arch, int heads0) {
  char rel[256], path[1024], gpath[1024];
  snprintf(rel, sizeof rel, "models/%s", model);
  if (!fr_test_have_fixture(fx, rel))
    return;
  snprintf(path, sizeof path, "%s/models/%s", fx, model);
  snprintf(gpath, sizeof gpath, "%s/golden/%s.safetensors", fx, gname);
  const double tol = fr_test_golden_tol(c, TOL32);
  struct fr_err err = {{0}};
  struct fr_checkpoint *ck = NULL;
  struct fr_unet *u = NULL;
  struct fr_safetensors *g = NULL;
  CHECK_OK(fr_checkpoint_open(path, &ck, &err), &err);
  if (ck)
    CHECK_OK(fr_unet_load(c, ck, &u, &err), &err);
  CHECK_OK(fr_st_open(gpath, &g, &err), &err);
  if (!u || !g)
    goto done;
  const struct fr_unet_config *cfg = &u->cfg;
  printf("%s: arch %d, levels %d, channels", model, cfg->arch, cfg->levels);
  for (int l = 0; l < cfg->levels; l++)
    printf(" %d(depth %d, heads %d)", cfg->channels[l], cfg->depth[l], fr_unet_heads(cfg, l));
  printf(", res blocks %d, context %d, linear proj %d, adm %d\n", cfg->num_res_blocks, cfg->context_dim,
         cfg->linear_proj, cfg->adm_in_channels);
  /* expected structure: from the fixtures README and the diffusers configs, not from this code */
  CHECK(cfg->arch == arch);
  CHECK(cfg->levels == levels);
  for (int l = 0; l < levels; l++)
    CHECKF(cfg->channels[l] == channels[l], "level %d: %d channels, expected %d", l, cfg->channels[l],
           channels[l]);
  CHECKF(fr_unet_heads(cfg, levels - 1) == heads0 * (channels[levels - 1] / channels[0]) ||
             (arch == FR_UNET_SD15 && fr_unet_heads(cfg, levels - 1) == 8),
         "heads at the last level: %d", fr_unet_heads(cfg, levels - 1));
  CHECK(fr_unet_heads(cfg, 0) == heads0);
  CHECK(cfg->in_channels == 4 && cfg->out_channels == 4 && cfg->num_res_blocks == 2);
  for (int i = 0; i < 3; i++) {
    char n[64];
#define G(field) (snprintf(n, sizeof n, "t%d_%s", i, field), fr_test_golden_upload(c, g, n))
#define H(field) (snprintf(n, sizeof n, "t%d_%s", i, field), host_f32(g, n))
    /* t and the time ids stay host fp32 tensors, as the sampler passes them: the embedding is computed
     * from fp32 values on every device (diffusers embeds fp32 timesteps and casts afterwards) */
    struct fr_tensor *x = G("x"), *t = H("t"), *ctx = G("ctx"), *want = G("eps");
    struct fr_tensor *te = NULL, *ti = NULL;
    if (cfg->adm_in_channels) {
      te = G("text_embeds");
      ti = H("time_ids");
    }
#undef G
#undef H
    struct fr_unet_cond cond = {.context = ctx, .text_embeds = te, .time_ids = ti};
    struct fr_tensor *eps = NULL;
    if (x && t && ctx && want) {
      CHECK_OK(fr_unet_forward(c, u, x, t, &cond, NULL, &eps, &err), &err);
    }
    if (eps && i == 0 && strcmp(fr_ctx_device_name(c), "cpu") == 0) {
      /* on the cpu, t and time ids given as context tensors (the older way) give the same bits */
      struct fr_tensor *dt = fr_ctx_upload(c, t), *dti = ti ? fr_ctx_upload(c, ti) : NULL, *eps2 = NULL;
      struct fr_unet_cond cond2 = {.context = ctx, .text_embeds = te, .time_ids = dti};
      CHECK_OK(fr_unet_forward(c, u, x, dt, &cond2, NULL, &eps2, &err), &err);
      CHECKF(eps2 && memcmp(eps2->data, eps->data, fr_tensor_nbytes(eps)) == 0,
             "%s: host fp32 t and context t differ on the cpu", model);
      fr_tensor_free(dt);
      fr_tensor_free(dti);
      fr_tensor_free(eps2);
    }
    if (eps && i == 0) {
      /* the way a recorded sampler step passes them: the sinusoid of t made beforehand (t_sin, t NULL)
       * and SDXL's added conditioning made once (fr_unet_added_cond as cond.y): the same ops in the same
       * order, so the same bits on the cpu, and within 1e-6 anywhere */
      struct fr_tensor *ts =
          fr_timestep_embedding_f32(c, t->data, t->shape[0], cfg->model_channels, true, 0.0f, 10000.0f);
      struct fr_tensor *y = cfg->adm_in_channels ? fr_unet_added_cond(c, u, &cond) : NULL, *eps3 = NULL;
      struct fr_unet_cond cond3 = {.context = ctx, .y = y, .t_sin = ts};
      CHECK_OK(fr_unet_forward(c, u, x, NULL, &cond3, NULL, &eps3, &err), &err);
      struct fr_tensor *h1 = eps3 ? fr_ctx_download(c, eps3) : NULL, *h0 = fr_ctx_download(c, eps);
      double e = h1 && h0 ? fr_test_rel_err(h1->data, h0->data, (long)fr_tensor_numel(h0)) : INFINITY;
      bool cpu = strcmp(fr_ctx_device_name(c), "cpu") == 0;
      CHECKF(h1 && h0 && (cpu ? memcmp(h1->data, h0->data, fr_tensor_nbytes(h0)) == 0 : e <= 1e-6),
             "%s: t_sin + added_cond forward differs from the plain one by %.3g", model, e);
      fr_tensor_free(h0);
      fr_tensor_free(h1);
      fr_tensor_free(eps3);
      fr_tensor_free(y);
      fr_tensor_free(ts);
    }
    if (eps) {
      /* both sides to the host: the golden was uploaded with the inputs (on the device under cuda) */
      struct fr_tensor *h = fr_ctx_download(c, eps), *hw = fr_ctx_download(c, want);
      CHECK(h && hw && fr_tensor_same_shape(h, hw));
      if (h && hw && fr_tensor_same_shape(h, hw)) {
        double e = fr_test_rel_err(h->data, hw->data, (long)fr_tensor_numel(hw));
        float tval = ((const float *)t->data)[0];
        printf("%s %s t%d (t=%g): max|diff|/max|golden| = %.3g (tolerance %g, %s)\n", model, gname, i,
               (double)tval, e, tol, fr_test_ctx_label(c));
        CHECKF(e <= tol, "%s %s t%d: error %.3g > %g (%s)", model, gname, i, e, tol, fr_test_ctx_label(c));
      }
      fr_tensor_free(h);
      fr_tensor_free(hw);
    }
    fr_tensor_free(eps);
    fr_tensor_free(x);
    fr_tensor_free(t);
    fr_tensor_free(ctx);
    fr_tensor_free(want);
    fr_tensor_free(te);
    fr_tensor_free(ti);
  }
done:
  fr_unet_free(u);
  fr_st_close(g);
  fr_checkpoint_close(ck);
  fr_ctx_clear(c); /* a failure here must not fail the next model's run */
}

int main(void) {
  const char *fx = fr_test_fixtures();
  if (!fx)
    return fr_test_done();
  struct fr_ctx *c = fr_test_ctx_new(); /* cpu F32 unless FR_TEST_DEVICE / FR_TEST_DTYPE say otherwise */
  if (!c)
    return fr_test_done();
  /* SD1.5: channels (32,32,64,64), 8 heads everywhere */
  run_golden(c, fx, "sd15-tiny.safetensors", "sd15_unet", (const int[]){32, 32, 64, 64}, 4, FR_UNET_SD15, 8);
  run_golden(c, fx, "sd15-tiny", "sd15_unet", (const int[]){32, 32, 64, 64}, 4, FR_UNET_SD15, 8);
  /* SDXL: channels (32,64,64), heads (2,4,4) per the fixtures README */
  run_golden(c, fx, "sdxl-tiny.safetensors", "sdxl_unet", (const int[]){32, 64, 64}, 3, FR_UNET_SDXL, 2);
  /* refiner: channels (32,64,64,64) */
  run_golden(c, fx, "sdxl-refiner-tiny.safetensors", "refiner_unet", (const int[]){32, 64, 64, 64}, 4,
             FR_UNET_SDXL_REFINER, 2);
  fr_ctx_free(c);
  return fr_test_done();
}
