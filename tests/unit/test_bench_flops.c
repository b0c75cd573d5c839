/* The analytic FLOP counts flowrun bench divides by (2 x multiply-accumulates of convolutions, linears
 * and attention matmuls), at the benchmark's full-size shapes, against figures worked out independently:
 *
 * 1. The ControlNet's extra work over the UNet encoder (fr_synth_controlnet_flops): the hint network and
 *    the zero convs, written out here layer by layer from control_v11p_sd15's architecture (hint 512x512
 *    -> 64x64 through 8 convs, three of them stride 2; one 1x1 zero conv per skip connection: 4 at 64x64,
 *    3 at 32x32, 3 at 16x16, 2 at 8x8, and one after the middle block).
 * 2. The UNet steps against DESIGN.md's compute floor (SD1.5 step 2.0 ms and SDXL step 17 ms at
 *    ~790 TFLOP/s, batch 2: 1.58 and 13.4 TFLOP per step, so 0.79 and 6.7 per batch-1 forward), and the
 *    SD1.5 batch-1 forward against issue 3's 0.80 TFLOP.
 * 3. CLIP-L over 77 tokens and the VAE decodes against their closed forms: CLIP-L's 12 layers of 4 W^2
 *    projections, a 4W MLP and two 77x77 attention matmuls; the VAE decode's attention term at 1024x1024
 *    (the middle block attends over 128 x 128 = 16384 positions). */
#include <math.h>
#include <stdio.h>

#include "nodes/models/synth.h"
#include "nodes/models/vae.h"
#include "tests/test.h"

static bool near(double a, double b, double rel) {
  return fabs(a - b) <= rel * fabs(b);
}

int main(void) {
  struct fr_err err = {{0}};
  struct fr_synth_arch sd15, sdxl;
  CHECK_OK(fr_synth_arch("sd15", &sd15, &err), &err);
  CHECK_OK(fr_synth_arch("sdxl", &sdxl, &err), &err);

  /* 1. ControlNet = encoder + middle block + hint network + zero convs */
  struct fr_synth_unet enc = sd15.unet;
  enc.controlnet = true;
  double encoder = fr_synth_unet_flops(&enc, 64, 64, 77);
  double cn = fr_synth_controlnet_flops(&sd15.unet, 64, 64, 77);
  /* {cin, cout, output side} of the hint convs (3x3) */
  const double hint[8][3] = {{3, 16, 512},  {16, 16, 512}, {16, 32, 256}, {32, 32, 256},
                             {32, 96, 128}, {96, 96, 128}, {96, 256, 64}, {256, 320, 64}};
  double hf = 0;
  for (int i = 0; i < 8; i++)
    hf += 2.0 * hint[i][0] * hint[i][1] * 9 * hint[i][2] * hint[i][2];
  /* {channels, side, count} of the zero convs (1x1) */
  const double zero[][3] = {{320, 64, 3},  {320, 32, 1}, {640, 32, 2}, {640, 16, 1},
                            {1280, 16, 2}, {1280, 8, 1}, {1280, 8, 2}, {1280, 8, 1}};
  double zf = 0;
  for (int i = 0; i < 8; i++)
    zf += zero[i][2] * 2.0 * zero[i][0] * zero[i][0] * zero[i][1] * zero[i][1];
  printf("controlnet-sd15, batch 1: encoder %.2f + hint %.2f + zero convs %.2f = %.2f GFLOP (counted %.2f)\n",
         encoder * 1e-9, hf * 1e-9, zf * 1e-9, (encoder + hf + zf) * 1e-9, cn * 1e-9);
  CHECKF(near(cn, encoder + hf + zf, 1e-12), "%.6g vs %.6g", cn, encoder + hf + zf);
  CHECK(fabs(hf - 14.72e9) < 0.01e9);

  /* 2. UNet forwards */
  double u15 = fr_synth_unet_flops(&sd15.unet, 64, 64, 77),
         uxl = fr_synth_unet_flops(&sdxl.unet, 128, 128, 77);
  printf("unet-sd15 64x64: %.3f TFLOP per batch-1 forward; unet-sdxl 128x128: %.3f\n", u15 * 1e-12,
         uxl * 1e-12);
  printf("per batch-2 run (the bench rows): unet-sd15 %.1f, unet-sdxl %.1f, controlnet-sd15 %.1f GFLOP\n",
         2 * u15 * 1e-9, 2 * uxl * 1e-9, 2 * cn * 1e-9);
  CHECK(near(u15, 0.80e12, 0.02));
  CHECK(near(u15, 2.0e-3 * 790e12 / 2, 0.03));
  CHECK(near(uxl, 17e-3 * 790e12 / 2, 0.05));
  CHECK(cn < u15); /* the encoder half of the UNet plus a little */

  /* 3. CLIP-L and the VAE decode */
  double T = 77, W = 768, clip = 12 * (4 * 2.0 * T * W * W + 2 * 2.0 * T * T * W + 2 * 2.0 * T * W * 4 * W);
  double cl = fr_synth_clip_flops(&sd15.clip[0], 77);
  printf("clip-l, 77 tokens, batch 1: %.2f GFLOP (closed form %.2f)\n", cl * 1e-9, clip * 1e-9);
  CHECK(near(cl, clip, 1e-12));
  struct fr_vae_config vc = {.ch = 128,
                             .levels = 4,
                             .mult = {1, 2, 4, 4},
                             .num_res_blocks = 2,
                             .in_channels = 3,
                             .out_channels = 3,
                             .z_channels = 4};
  double v512 = fr_vae_decode_flops(&vc, 64, 64), v1024 = fr_vae_decode_flops(&vc, 128, 128);
  double att = 2 * 2.0 * 512 * (4096.0 * 4096.0), att4 = 2 * 2.0 * 512 * (16384.0 * 16384.0);
  printf("vae decode 512: %.1f GFLOP, 1024: %.1f GFLOP\n", v512 * 1e-9, v1024 * 1e-9);
  CHECK(near(v512, 2514.5e9, 1e-3)); /* BENCHMARKS.md's CPU table */
  /* everything but the middle block's QK^T and AV grows with the pixel count */
  CHECK(near(v1024 - att4, 4 * (v512 - att), 1e-9));
  return fr_test_done();
}
