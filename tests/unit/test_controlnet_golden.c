/* ControlNet golden (../shared/fixtures/golden/controlnet): residuals down0..down11 and mid for x, ctx and
 * the conditioning image at t = 500 (controlnet.json), from both ControlNet layouts (original
 * control_model.* file and the diffusers folder), and the SD1.5 UNet's eps with those residuals added.
 * Tolerance: max|diff| / max|golden| <= 1e-4 per tensor (fixtures README: fp32 implementations differ by
 * summation order only, ~1e-6; a missing stride, activation or scale gives errors of 1e-2 and more).
 * FR_TEST_DEVICE / FR_TEST_DTYPE run it on another device or dtype: F32 keeps 1e-4, F16 and BF16 get
 * fr_test_golden_tol's looser bounds (tests/test.h gives the reasons). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/safetensors.h"
#include "kernels/ops.h"
#include "nodes/models/controlnet.h"
#include "nodes/models/unet.h"
#include "tests/test.h"

#define TOL32 1e-4
static double tol = TOL32;

static void compare(struct fr_ctx *c, const char *what, const char *name, const struct fr_tensor *got,
                    const struct fr_tensor *want) {
  /* both sides to the host: the golden was uploaded with the inputs (it is on the device under cuda) */
  struct fr_tensor *h = got ? fr_ctx_download(c, got) : NULL;
  struct fr_tensor *hw = !want                     ? NULL
                         : want->dev == FR_DEV_CPU ? fr_tensor_clone(want)
                                                   : fr_ctx_download(c, want);
  CHECKF(h && hw && fr_tensor_same_shape(h, hw), "%s %s: missing or wrong shape", what, name);
  if (h && hw && fr_tensor_same_shape(h, hw)) {
    double e = fr_test_rel_err(h->data, hw->data, (long)fr_tensor_numel(hw));
    printf("%s %s: max|diff|/max|golden| = %.3g (tolerance %g, %s)\n", what, name, e, tol,
           fr_test_ctx_label(c));
    CHECKF(e <= tol, "%s %s: error %.3g > %g (%s)", what, name, e, tol, fr_test_ctx_label(c));
  }
  fr_tensor_free(h);
  fr_tensor_free(hw);
}

int main(void) {
  const char *fx = fr_test_fixtures();
  if (!fx)
    return fr_test_done();
  struct fr_err err = {{0}};
  struct fr_ctx *c = fr_test_ctx_new(); /* cpu F32 unless FR_TEST_DEVICE / FR_TEST_DTYPE say otherwise */
  if (!c)
    return fr_test_done();
  tol = fr_test_golden_tol(c, TOL32);
  char path[1024];
  snprintf(path, sizeof path, "%s/golden/controlnet.safetensors", fx);
  struct fr_safetensors *g = NULL;
  CHECK_OK(fr_st_open(path, &g, &err), &err);
  snprintf(path, sizeof path, "%s/models/sd15-tiny.safetensors", fx);
  struct fr_checkpoint *uck = NULL;
  struct fr_unet *u = NULL;
  CHECK_OK(fr_checkpoint_open(path, &uck, &err), &err);
  if (uck)
    CHECK_OK(fr_unet_load(c, uck, &u, &err), &err);
  if (!g || !u || !c)
    goto done;
  struct fr_tensor *x = fr_test_golden_upload(c, g, "x"), *ctx = fr_test_golden_upload(c, g, "ctx"),
                   *hint = fr_test_golden_upload(c, g, "cond");
  struct fr_tensor *want_eps = fr_test_golden_upload(c, g, "unet_eps_with_control");
  float tv = 500.0f; /* controlnet.json: "t": 500 */
  /* t as a host fp32 tensor, as the sampler passes it: embedded from the fp32 value on every device */
  struct fr_tensor *t = fr_tensor_view(FR_F32, 1, (const int64_t[]){1}, &tv);
  struct fr_unet_cond cond = {.context = ctx};

  /* The UNet with the golden residuals (independent of the ControlNet code). */
  struct fr_unet_control gold = {.n_down = 12};
  for (int i = 0; i < 12; i++) {
    char n[16];
    snprintf(n, sizeof n, "down%d", i);
    gold.down[i] = fr_test_golden_upload(c, g, n);
  }
  gold.mid = fr_test_golden_upload(c, g, "mid");
  struct fr_tensor *eps = NULL;
  CHECK_OK(fr_unet_forward(c, u, x, t, &cond, &gold, &eps, &err), &err);
  compare(c, "unet + golden residuals", "unet_eps_with_control", eps, want_eps);
  fr_tensor_free(eps);

  const char *models[] = {"controlnet-tiny.safetensors", "controlnet-tiny"};
  for (int m = 0; m < 2; m++) {
    snprintf(path, sizeof path, "models/%s", models[m]);
    if (!fr_test_have_fixture(fx, path))
      continue;
    snprintf(path, sizeof path, "%s/models/%s", fx, models[m]);
    struct fr_checkpoint *ck = NULL;
    struct fr_controlnet *cn = NULL;
    CHECK_OK(fr_checkpoint_open(path, &ck, &err), &err);
    if (ck)
      CHECK_OK(fr_controlnet_load(c, ck, &cn, &err), &err);
    if (cn) {
      printf("%s: %d hint convs (hint %dx the latent, %d channels), %d levels, %d skips\n", models[m],
             cn->n_hint, cn->hint_downscale, cn->hint_channels, cn->cfg.levels, fr_unet_num_skips(&cn->cfg));
      CHECK(cn->n_hint == 8 && cn->hint_downscale == 8 && cn->hint_channels == 3);
      struct fr_unet_control ctl;
      CHECK_OK(fr_controlnet_forward(c, cn, x, t, &cond, hint, 1.0f, &ctl, &err), &err);
      CHECK(ctl.n_down == 12);
      for (int i = 0; i < ctl.n_down && i < 12; i++) {
        char n[16];
        snprintf(n, sizeof n, "down%d", i);
        compare(c, models[m], n, ctl.down[i], gold.down[i]);
      }
      compare(c, models[m], "mid", ctl.mid, gold.mid);
      if (ctl.mid) {
        eps = NULL;
        CHECK_OK(fr_unet_forward(c, u, x, t, &cond, &ctl, &eps, &err), &err);
        compare(c, models[m], "unet_eps_with_control", eps, want_eps);
        fr_tensor_free(eps);
      }
      /* the way a recorded sampler step passes t: its sinusoid made beforehand (t_sin, t NULL); the same
       * ops in the same order, so the same bits on the cpu, and within 1e-6 anywhere */
      struct fr_tensor *ts =
          fr_timestep_embedding_f32(c, &tv, 1, cn->cfg.model_channels, true, 0.0f, 10000.0f);
      struct fr_unet_cond cond_ts = {.context = ctx, .t_sin = ts};
      struct fr_unet_control pre;
      CHECK_OK(fr_controlnet_forward(c, cn, x, NULL, &cond_ts, hint, 1.0f, &pre, &err), &err);
      if (pre.mid && ctl.mid) {
        struct fr_tensor *h1 = fr_ctx_download(c, pre.mid), *h0 = fr_ctx_download(c, ctl.mid);
        double e = h1 && h0 ? fr_test_rel_err(h1->data, h0->data, (long)fr_tensor_numel(h0)) : INFINITY;
        bool cpu = strcmp(fr_ctx_device_name(c), "cpu") == 0;
        CHECKF(h1 && h0 && (cpu ? memcmp(h1->data, h0->data, fr_tensor_nbytes(h0)) == 0 : e <= 1e-6),
               "%s: the t_sin forward's mid residual differs from the plain one by %.3g", models[m], e);
        printf("%s: forward with t_sin (t NULL) vs with t: mid residual max|diff|/max = %.3g\n", models[m],
               e);
        fr_tensor_free(h0);
        fr_tensor_free(h1);
      }
      CHECK(pre.mid != NULL);
      fr_unet_control_free(&pre);
      fr_tensor_free(ts);
      /* conditioning scale: residuals scale linearly (0.5 x the golden) */
      struct fr_unet_control half;
      CHECK_OK(fr_controlnet_forward(c, cn, x, t, &cond, hint, 0.5f, &half, &err), &err);
      if (half.mid) {
        struct fr_tensor *h = fr_affine(c, gold.mid, 0.5f, 0.0f), *hh = h ? fr_ctx_download(c, h) : NULL;
        compare(c, models[m], "mid x 0.5", half.mid, hh);
        fr_tensor_free(hh);
        fr_tensor_free(h);
      }
      fr_unet_control_free(&half);
      fr_unet_control_free(&ctl);
    }
    fr_controlnet_free(cn);
    fr_checkpoint_close(ck);
  }
  fr_unet_control_free(&gold);
  fr_tensor_free(x);
  fr_tensor_free(ctx);
  fr_tensor_free(hint);
  fr_tensor_free(want_eps);
  fr_tensor_free(t);
done:
  fr_unet_free(u);
  fr_checkpoint_close(uck);
  fr_st_close(g);
  fr_ctx_free(c);
  return fr_test_done();
}
