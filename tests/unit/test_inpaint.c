/* Inpainting: the Sampler honours a latent's noise mask as ComfyUI's KSamplerX0Inpaint does, the mask
 * nodes (VAEEncodeForInpaint, SetLatentNoiseMask), the 9-channel inpainting UNets and
 * InpaintModelConditioning.
 *
 * Helpers (no fixtures): torch's bilinear interpolation, prepare_mask and the concat channels against
 * values worked out by hand or from the definitions in double precision.
 * On the tiny SD1.5 model (fixtures), through the engine with graphs as a user writes them:
 *   - a mask of all zeros gives back the original latent exactly;
 *   - a mask of all ones gives exactly plain img2img at the same denoise and noise;
 *   - a half mask: at every model evaluation (the Sampler's observer) the model's input is x where the mask
 *     is 1 and the original latent re-noised to that sigma where it is 0, its prediction there is the
 *     original, the sampler's own state there stays the original re-noised (euler), the UNet gets the
 *     scaled input in both CFG halves, and the result is the original there, exactly;
 *   - VAEEncodeForInpaint: the latent of the image cropped to multiples of 8 with masked pixels grey, the
 *     noise mask the rounded mask dilated by the grow box (conv2d definition);
 *   - a 9-channel UNet made here from the tiny one by widening conv_in, in both layouts, loads and runs;
 *     its extra input channels equal the mask resized to the latent and rounded, and the latent of the
 *     image with its masked pixels grey (encoded by plain VAEEncode from an image built here).
 * Latents are captured by a probe node added to the registry. Noise is given explicitly (a file written
 * here), so the re-noised values are computed independently of flowrun's RNG. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/flowrun.h"
#include "core/png.h"
#include "core/safetensors.h"
#include "nodes/image/image.h"
#include "nodes/models/unet.h"
#include "nodes/models/weights.h"
#include "nodes/pipeline/pipeline.h"
#include "nodes/registry.h"
#include "tests/test.h"

static const char *tmp;

/* ---- helpers against their definitions ---- */

/* torch's bilinear (align_corners=False) of one plane, in double. */
static double ref_bilinear(const float *in, int H, int W, int h, int w, int y, int x) {
  double ry = fmax(((double)y + 0.5) * H / h - 0.5, 0), rx = fmax(((double)x + 0.5) * W / w - 0.5, 0);
  int y0 = (int)ry, x0 = (int)rx;
  y0 = y0 > H - 1 ? H - 1 : y0;
  x0 = x0 > W - 1 ? W - 1 : x0;
  int y1 = y0 < H - 1 ? y0 + 1 : y0, x1 = x0 < W - 1 ? x0 + 1 : x0;
  double ly = ry - y0, lx = rx - x0;
  return (1 - ly) * ((1 - lx) * in[y0 * W + x0] + lx * in[y0 * W + x1]) +
         ly * ((1 - lx) * in[y1 * W + x0] + lx * in[y1 * W + x1]);
}

static void test_bilinear(void) {
  /* by hand: [0, 1] upscaled x2 is [0, 0.25, 0.75, 1] (source -0.25 clamped to 0, 0.25, 0.75, 1.25 -> 1) */
  const float row[2] = {0, 1};
  float out[4];
  fr_pipe_bilinear(row, 1, 1, 2, 1, 4, out);
  const float want[4] = {0, 0.25f, 0.75f, 1};
  for (int i = 0; i < 4; i++)
    CHECKF(out[i] == want[i], "x2 upscale [%d] = %g, want %g", i, out[i], want[i]);
  /* 8x downscale: source 8 y + 3.5, the mean of pixels 3 and 4 */
  float in[16 * 16], o2[4];
  for (int i = 0; i < 256; i++)
    in[i] = (float)((i * 37) % 11) / 10.0f;
  fr_pipe_bilinear(in, 1, 16, 16, 2, 2, o2);
  for (int y = 0; y < 2; y++)
    for (int x = 0; x < 2; x++) {
      int r = 8 * y + 3, c = 8 * x + 3;
      double m = (in[r * 16 + c] + in[r * 16 + c + 1] + in[(r + 1) * 16 + c] + in[(r + 1) * 16 + c + 1]) / 4;
      CHECKF(fabs(o2[y * 2 + x] - m) < 1e-6, "8x down (%d,%d) = %g, want %g", y, x, o2[y * 2 + x], m);
    }
  /* odd sizes against the definition in double */
  float o3[7 * 5];
  fr_pipe_bilinear(in, 1, 16, 16, 7, 5, o3);
  double worst = 0;
  for (int y = 0; y < 7; y++)
    for (int x = 0; x < 5; x++)
      worst = fmax(worst, fabs(o3[y * 5 + x] - ref_bilinear(in, 16, 16, 7, 5, y, x)));
  CHECKF(worst < 1e-6, "16x16 -> 7x5: max error %g", worst);
}

static void test_prepare_mask(void) {
  /* [1, 1, 16, 16], left half 1: a [3, 4, 2, 2] latent's mask is 1 in column 0, 0 in column 1, in every
   * channel and sample */
  struct fr_tensor *m = fr_tensor_f32(4, (int64_t[]){1, 1, 16, 16});
  for (int i = 0; i < 256; i++)
    ((float *)m->data)[i] = (i % 16) < 8 ? 1.0f : 0.0f;
  struct fr_tensor *p = fr_pipe_prepare_mask(m, 3, 4, 2, 2);
  CHECK(p && p->shape[0] == 3 && p->shape[1] == 4 && p->shape[2] == 2 && p->shape[3] == 2);
  for (int i = 0; p && i < 48; i++)
    CHECKF(((float *)p->data)[i] == (i % 2 == 0 ? 1.0f : 0.0f), "prepared mask [%d] = %g", i,
           ((float *)p->data)[i]);
  fr_tensor_free(p);
  /* a batch of 2 masks for a batch of 3 cycles (repeat_to_batch_size): sample 2 has mask 0 */
  struct fr_tensor *m2 = fr_tensor_f32(3, (int64_t[]){2, 4, 4});
  for (int i = 0; i < 32; i++)
    ((float *)m2->data)[i] = i < 16 ? 0.25f : 0.75f;
  p = fr_pipe_prepare_mask(m2, 3, 1, 4, 4);
  CHECK(p && ((float *)p->data)[0] == 0.25f && ((float *)p->data)[16] == 0.75f &&
        ((float *)p->data)[32] == 0.25f);
  fr_tensor_free(p);
  fr_tensor_free(m2);
  /* concat channels: no mask and no conditioning -> ones and ComfyUI's blank latent */
  struct fr_tensor *lat = fr_tensor_f32(4, (int64_t[]){2, 4, 2, 2});
  for (int i = 0; i < 32; i++)
    ((float *)lat->data)[i] = (float)i;
  struct fr_err err = {{0}};
  struct fr_tensor *c = fr_pipe_concat_cond(NULL, NULL, lat, &err);
  const float blank[4] = {0.8223f, -0.6876f, 0.6364f, 0.1380f};
  CHECK(c && c->shape[0] == 2 && c->shape[1] == 5);
  for (int b = 0; c && b < 2; b++)
    for (int ch = 0; ch < 5; ch++)
      for (int i = 0; i < 4; i++) {
        float v = ((float *)c->data)[(b * 5 + ch) * 4 + i];
        CHECKF(v == (ch == 0 ? 1.0f : blank[ch - 1]), "blank concat [%d,%d,%d] = %g", b, ch, i, v);
      }
  fr_tensor_free(c);
  /* with the latent's (prepared) noise mask: that mask rounded (0.5 -> 0, half to even) and the latent */
  struct fr_tensor *pm = fr_tensor_f32(4, (int64_t[]){2, 4, 2, 2});
  for (int i = 0; i < 32; i++)
    ((float *)pm->data)[i] = (i % 4) == 0 ? 0.5f : (i % 4) == 1 ? 0.51f : 1.0f;
  c = fr_pipe_concat_cond(NULL, pm, lat, &err);
  for (int b = 0; c && b < 2; b++)
    for (int i = 0; i < 4; i++) {
      CHECK(((float *)c->data)[(b * 5) * 4 + i] == (i == 0 ? 0.0f : 1.0f));
      for (int ch = 0; ch < 4; ch++)
        CHECK(((float *)c->data)[(b * 5 + 1 + ch) * 4 + i] == ((float *)lat->data)[(b * 4 + ch) * 4 + i]);
    }
  fr_tensor_free(c);
  /* from InpaintModelConditioning's fields: a pixel mask [1, 1, 16, 16] is resized (mean of pixels 3, 4
   * and 11, 12) and rounded; a concat latent of batch 1 serves both samples */
  struct fr_value *cond = fr_value_data(FR_T_CONDITIONING);
  struct fr_tensor *cm = fr_tensor_f32(4, (int64_t[]){1, 1, 16, 16}),
                   *cl = fr_tensor_f32(4, (int64_t[]){1, 4, 2, 2});
  for (int i = 0; i < 256; i++) /* column 3 is 1 and 4 is 0.2: mean 0.6 -> 1; columns 11, 12: 0.2 -> 0 */
    ((float *)cm->data)[i] = (i % 16) == 3 ? 1.0f : 0.2f;
  for (int i = 0; i < 16; i++)
    ((float *)cl->data)[i] = -(float)i;
  fr_value_add_tensor(cond, "concat_mask", cm);
  fr_value_add_tensor(cond, "concat_latent_image", cl);
  c = fr_pipe_concat_cond(cond, pm, lat, &err);
  CHECKF(c != NULL, "%s", err.msg);
  for (int b = 0; c && b < 2; b++)
    for (int i = 0; i < 4; i++) {
      CHECKF(((float *)c->data)[(b * 5) * 4 + i] == ((i % 2) == 0 ? 1.0f : 0.0f), "concat mask [%d,%d]", b,
             i);
      for (int ch = 0; ch < 4; ch++)
        CHECK(((float *)c->data)[(b * 5 + 1 + ch) * 4 + i] == -(float)(ch * 4 + i));
    }
  fr_tensor_free(c);
  fr_value_unref(cond);
  fr_tensor_free(pm);
  fr_tensor_free(lat);
  fr_tensor_free(m);
}

/* ---- through the engine ---- */

#define NSLOT 8
static struct fr_value *probes[NSLOT];

static enum fr_status probe_run(struct fr_node_ctx *nc) {
  int slot = (int)fr_in_int(nc, "slot");
  fr_value_unref(probes[slot]);
  probes[slot] = fr_value_ref((struct fr_value *)fr_in(nc, "latent"));
  return FR_OK;
}
static const struct fr_input_spec probe_in[] = {
    {"latent", FR_T_LATENT, NULL, 0, -1, NULL, 0, "captured"},
    {"slot", FR_T_INT, "0", 0, NSLOT - 1, NULL, 0, "where"},
};
static const struct fr_node_spec probe_spec = {"ProbeLatent",  1,
                                               "test",         "Captures a latent for the test.",
                                               probe_in,       FR_COUNT(probe_in),
                                               NULL,           0,
                                               FR_NODE_OUTPUT, probe_run};

static const float *probe(int slot, int64_t *n) {
  const struct fr_tensor *t = probes[slot] ? fr_value_get_tensor(probes[slot], "samples") : NULL;
  *n = t ? fr_tensor_numel(t) : 0;
  return t ? t->data : NULL;
}

/* The observer's record of every model evaluation (the latents here: [1, 4, 8, 8]). */
#define NREC 16
#define PER 256
struct rec {
  double sigma;
  float x[PER], xin[PER], den[PER];
  float unet[2 * 9 * 64];
  int64_t ushape[4];
};
static struct rec recs[NREC];
static int n_recs;

static void observe(void *user, int k, double sigma, const float *x, const float *x_in,
                    const struct fr_tensor *unet_in, const float *den, int64_t n) {
  (void)user;
  (void)k;
  if (n_recs == NREC || n != PER)
    return;
  struct rec *r = &recs[n_recs++];
  r->sigma = sigma;
  memcpy(r->x, x, sizeof r->x);
  memcpy(r->xin, x_in, sizeof r->xin);
  memcpy(r->den, den, sizeof r->den);
  memcpy(r->ushape, unet_in->shape, sizeof r->ushape);
  if (fr_tensor_numel(unet_in) <= (int64_t)(sizeof r->unet / sizeof(float)))
    memcpy(r->unet, unet_in->data, fr_tensor_nbytes(unet_in));
}

static struct fr_engine *new_engine(const char *models, struct fr_registry *reg) {
  static const struct fr_node_spec *specs[256];
  const struct fr_registry *b = fr_builtin_registry();
  int n = 0;
  for (int i = 0; i < b->n; i++)
    specs[n++] = b->specs[i];
  specs[n++] = &probe_spec;
  reg->specs = specs;
  reg->n = n;
  const char *dirs[2] = {models, tmp};
  struct fr_engine_opts o = {.registry = reg,
                             .no_cache = true,
                             .model_dirs = dirs,
                             .n_model_dirs = 2,
                             .output_dir = tmp,
                             .threads = 2};
  struct fr_engine *e = NULL;
  struct fr_err err = {{0}};
  CHECK_OK(fr_engine_new(&o, &e, &err), &err);
  return e;
}

static enum fr_status run_yaml(struct fr_engine *e, const char *yaml, struct fr_err *err) {
  struct fr_graph *g = NULL;
  enum fr_status rc = fr_engine_load_string(e, yaml, strlen(yaml), "inpaint.yaml", tmp, NULL, 0, &g, err);
  if (!rc) {
    struct fr_run_summary sum;
    rc = fr_engine_run(e, g, &sum, err);
  }
  fr_graph_free(g);
  return rc;
}

/* A W x H RGBA PNG: colours in 8-bit steps (so the file holds them exactly), alpha 1 - mask(x, y); the
 * same colours in img (F32 [H, W, 3]) when not NULL. mask_kind: 0 none, 1 all, 2 left half (x < W/2),
 * 3 a block with soft edges. */
static double test_mask(int kind, int x, int y, int W) {
  switch (kind) {
  case 1: return 1;
  case 2: return x < W / 2 ? 1 : 0;
  case 3:
    if (x >= 20 && x < 30 && y >= 12 && y < 25)
      return 1;
    return (x == 30 || y == 25) ? 128.0 / 255.0 : (x == 19 ? 127.0 / 255.0 : 0); /* 0.502 rounds to 1 */
  }
  return 0;
}

static void write_png(const char *name, int W, int H, int kind, float *img) {
  struct fr_tensor *t = fr_tensor_f32(3, (int64_t[]){H, W, 4});
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) {
      float *p = (float *)t->data + (y * W + x) * 4;
      int v[3] = {(x * 4 + y) % 256, (y * 3 + 40) % 256, ((x ^ y) * 5) % 256};
      for (int c = 0; c < 3; c++) {
        p[c] = (float)v[c] / 255.0f;
        if (img)
          img[(y * W + x) * 3 + c] = p[c];
      }
      p[3] = (float)(1.0 - test_mask(kind, x, y, W));
    }
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", tmp, name);
  struct fr_err err = {{0}};
  CHECK_OK(fr_png_write(path, t, NULL, 0, &err), &err);
  fr_tensor_free(t);
}

static void write_tensor(const char *name, const char *key, const struct fr_tensor *t) {
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", tmp, name);
  struct fr_st_item it = {key, t};
  struct fr_err err = {{0}};
  CHECK_OK(fr_st_write_file(path, &it, 1, NULL, NULL, 0, &err), &err);
}

/* Unit noise [1, 4, 8, 8] from a fixed formula (any values do; these are not flowrun's RNG). */
static float test_noise[PER];
static void write_noise(void) {
  struct fr_tensor *t = fr_tensor_f32(4, (int64_t[]){1, 4, 8, 8});
  for (int i = 0; i < PER; i++)
    test_noise[i] = ((float *)t->data)[i] = (float)(1.3 * sin(0.7 * i + 0.3) + 0.4 * cos(2.1 * i));
  write_tensor("noise.safetensors", "latent", t);
  fr_tensor_free(t);
}

static const char *const mask_graph =
    "flowrun: 1\n"
    "nodes:\n"
    "  ckpt: {type: CheckpointLoader, inputs: {ckpt_name: sd15-tiny.safetensors}}\n"
    "  img: {type: LoadImage, inputs: {image: %s}}\n"
    "  pos: {type: TextEncode, inputs: {clip: ckpt.clip, text: a cat}}\n"
    "  neg: {type: TextEncode, inputs: {clip: ckpt.clip, text: blurry}}\n"
    "  enc: {type: VAEEncode, inputs: {pixels: img.image, vae: ckpt.vae}}\n"
    "  masked: {type: SetLatentNoiseMask, inputs: {samples: enc, mask: img.mask}}\n"
    "  noise: {type: LoadLatent, inputs: {file: noise.safetensors}}\n"
    "  s: {type: Sampler, inputs: {model: ckpt.model, positive: pos, negative: neg, latent: %s, steps: 3,\n"
    "                              cfg: 2, denoise: 0.75, sampler: %s, noise: noise}}\n"
    "  p0: {type: ProbeLatent, inputs: {latent: enc, slot: 0}}\n"
    "  p1: {type: ProbeLatent, inputs: {latent: s, slot: 1}}\n";

static void run_mask_case(struct fr_engine *e, const char *png, const char *latent, const char *sampler) {
  char yaml[4096];
  snprintf(yaml, sizeof yaml, mask_graph, png, latent, sampler);
  struct fr_err err = {{0}};
  CHECK_OK(run_yaml(e, yaml, &err), &err);
}

static void test_sampler_mask(struct fr_engine *e) {
  write_noise();
  write_png("zero.png", 64, 64, 0, NULL);
  write_png("ones.png", 64, 64, 1, NULL);
  write_png("half.png", 64, 64, 2, NULL);
  int64_t n0, n1;

  /* all zeros: the original latent, bit for bit */
  run_mask_case(e, "zero.png", "masked", "euler_ancestral");
  const float *orig = probe(0, &n0), *out = probe(1, &n1);
  CHECKF(orig && out && n0 == PER && n1 == PER && !memcmp(orig, out, PER * sizeof(float)),
         "mask of zeros: the result differs from the original latent");

  /* all ones: plain img2img with the same noise and denoise, bit for bit */
  float masked[PER], plain[PER];
  run_mask_case(e, "ones.png", "masked", "euler_ancestral");
  out = probe(1, &n1);
  if (out)
    memcpy(masked, out, sizeof masked);
  run_mask_case(e, "ones.png", "enc", "euler_ancestral");
  out = probe(1, &n1);
  CHECKF(out && !memcmp(masked, out, sizeof masked), "mask of ones: differs from plain img2img");
  orig = probe(0, &n0);
  if (out)
    memcpy(plain, out, sizeof plain);
  double moved = 0;
  for (int i = 0; orig && i < PER; i++)
    moved = fmax(moved, fabs(plain[i] - orig[i]));
  CHECKF(moved > 1e-3, "img2img changed nothing (max %g): the comparison would prove nothing", moved);

  /* half: observed at every model evaluation (euler: the state is deterministic) */
  n_recs = 0;
  struct fr_pipe_observer ob = {observe, NULL};
  fr_pipe_set_observer(&ob);
  run_mask_case(e, "half.png", "masked", "euler");
  fr_pipe_set_observer(NULL);
  orig = probe(0, &n0);
  out = probe(1, &n1);
  CHECKF(n_recs == 3, "%d model evaluations observed, want 3", n_recs);
  if (!orig || !out)
    return;
  /* the latent's mask: the 64-px mask's left half, resized to 8x8: columns 0..3 (source 8x + 3.5) */
  int bad_in = 0, bad_keep = 0, bad_den = 0, bad_unet = 0;
  double state_err = 0;
  for (int k = 0; k < n_recs; k++) {
    const struct rec *r = &recs[k];
    float sg = (float)r->sigma, s = (float)(1.0 / sqrt(r->sigma * r->sigma + 1.0));
    CHECKF(r->ushape[0] == 2 && r->ushape[1] == 4 && r->ushape[2] == 8 && r->ushape[3] == 8,
           "UNet input [%lld, %lld, ...], want [2, 4, 8, 8] (CFG halves)", (long long)r->ushape[0],
           (long long)r->ushape[1]);
    for (int i = 0; i < PER; i++) {
      bool m = (i % 8) < 4;
      double renoised = (double)orig[i] + (double)test_noise[i] * sg;
      if (m) {
        bad_keep += r->xin[i] != r->x[i];
      } else {
        bad_in += fabs(r->xin[i] - renoised) > 1e-6 * fmax(1, fabs(renoised));
        bad_den += r->den[i] != orig[i];
        state_err = fmax(state_err, fabs(r->x[i] - renoised) / fmax(1, fabs(renoised)));
      }
      for (int h = 0; h < 2; h++)
        bad_unet += fabs(r->unet[h * PER + i] - r->xin[i] * s) > 1e-6 * fmax(1, fabs(r->xin[i] * s));
    }
  }
  CHECKF(bad_keep == 0, "masked region: %d model inputs differ from the sampler's state", bad_keep);
  CHECKF(bad_in == 0, "unmasked region: %d model inputs are not the original re-noised to sigma", bad_in);
  CHECKF(bad_den == 0, "unmasked region: %d predictions are not the original", bad_den);
  CHECKF(bad_unet == 0, "%d UNet inputs are not the masked input scaled by 1/sqrt(sigma^2+1)", bad_unet);
  /* euler's state stays orig + noise * sigma there up to float rounding of its updates */
  CHECKF(state_err < 1e-5, "unmasked region: the state drifts from the re-noised original by %g", state_err);
  int kept = 0, changed = 0;
  for (int i = 0; i < PER; i++) {
    if ((i % 8) >= 4)
      kept += out[i] == orig[i];
    else
      changed += fabs(out[i] - orig[i]) > 1e-4;
  }
  CHECKF(kept == PER / 2, "unmasked half: %d of %d values are the original", kept, PER / 2);
  CHECKF(changed > PER / 4, "masked half: only %d values changed", changed);
}

/* VAEEncodeForInpaint on a 70x61 image (cropped to 64x56 at (3, 2)) with a soft-edged block mask. */
static const char *const vefi_graph =
    "flowrun: 1\n"
    "nodes:\n"
    "  ckpt: {type: CheckpointLoader, inputs: {ckpt_name: sd15-tiny.safetensors}}\n"
    "  img: {type: LoadImage, inputs: {image: block.png}}\n"
    "  inp: {type: VAEEncodeForInpaint, inputs: {pixels: img.image, vae: ckpt.vae, mask: img.mask, "
    "grow_mask_by: %d}}\n"
    "  grey: {type: LoadImageData, inputs: {file: grey.safetensors}}\n"
    "  enc: {type: VAEEncode, inputs: {pixels: grey, vae: ckpt.vae}}\n"
    "  p0: {type: ProbeLatent, inputs: {latent: inp, slot: 0}}\n"
    "  p1: {type: ProbeLatent, inputs: {latent: enc, slot: 1}}\n";

static void test_vae_encode_for_inpaint(struct fr_engine *e) {
  enum { W0 = 70, H0 = 61, W = 64, H = 56, OX = 3, OY = 2 };
  write_png("block.png", W0, H0, 3, NULL);
  /* the pixels as LoadImage gives them (its 8-bit to float conversion is not what is tested here) */
  char path[4200];
  snprintf(path, sizeof path, "%s/block.png", tmp);
  struct fr_tensor *li = NULL, *lm = NULL;
  struct fr_err lerr = {{0}};
  CHECK_OK(fr_image_load_png(path, &li, &lm, &lerr), &lerr);
  if (!li)
    return;
  const float *img = li->data;
  /* the reference input: cropped, rounded mask (alpha 127/255 -> mask 0.502 -> 1) pixels set to 0.5 */
  struct fr_tensor *g = fr_tensor_f32(4, (int64_t[]){1, H, W, 3});
  static float rm[H * W];
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) {
      rm[y * W + x] = test_mask(3, x + OX, y + OY, W0) > 0.5 ? 1.0f : 0.0f; /* masks are k/255: exact */
      for (int c = 0; c < 3; c++)
        ((float *)g->data)[(y * W + x) * 3 + c] = /* ComfyUI's (p - 0.5) (1 - m) + 0.5 in fp32 */
            (img[((y + OY) * W0 + x + OX) * 3 + c] - 0.5f) * (1.0f - rm[y * W + x]) + 0.5f;
    }
  write_tensor("grey.safetensors", "image", g);
  fr_tensor_free(g);
  fr_tensor_free(li);
  fr_tensor_free(lm);
  for (int grow = 0; grow <= 6; grow += 3) {
    char yaml[4096];
    snprintf(yaml, sizeof yaml, vefi_graph, grow);
    struct fr_err err = {{0}};
    CHECK_OK(run_yaml(e, yaml, &err), &err);
    int64_t n0, n1;
    const float *a = probe(0, &n0), *b = probe(1, &n1);
    CHECKF(a && b && n0 == 4 * 7 * 8 && n0 == n1, "latents of %lld and %lld values, want 224", (long long)n0,
           (long long)n1);
    if (!a || !b || n0 != n1)
      continue;
    CHECKF(fr_test_rel_err(a, b, (long)n0) < 1e-6,
           "grow %d: latent differs from VAEEncode of the grey image "
           "by %g",
           grow, fr_test_rel_err(a, b, (long)n0));
    const struct fr_tensor *nm = fr_value_get_tensor(probes[0], "noise_mask");
    CHECKF(nm && nm->ndim == 4 && nm->shape[0] == 1 && nm->shape[1] == 1 && nm->shape[2] == H &&
               nm->shape[3] == W,
           "noise_mask shape");
    if (!nm || fr_tensor_numel(nm) != H * W)
      continue;
    /* conv2d(rounded mask, ones(g, g), padding ceil((g - 1) / 2)), clamped, cut to H x W, rounded */
    int p = (grow - 1 + 1) / 2, bad = 0, ones = 0;
    for (int y = 0; y < H; y++)
      for (int x = 0; x < W; x++) {
        double sum = 0;
        if (grow == 0)
          sum = rm[y * W + x];
        for (int i = 0; i < grow; i++)
          for (int j = 0; j < grow; j++) {
            int yy = y - p + i, xx = x - p + j;
            if (yy >= 0 && yy < H && xx >= 0 && xx < W)
              sum += rm[yy * W + xx];
          }
        double want = round(fmin(fmax(sum, 0), 1));
        bad += ((const float *)nm->data)[y * W + x] != want;
        ones += want == 1;
      }
    CHECKF(bad == 0, "grow %d: %d noise-mask pixels differ from the dilation", grow, bad);
    printf("grow %d: %d of %d pixels in the noise mask\n", grow, ones, H * W);
  }
}

/* ---- 9-channel inpainting UNets made from the tiny ones ---- */

/* conv_in widened from [O, 4, 3, 3] to [O, 9, 3, 3]: the first 4 input channels as they were, the mask
 * and masked-image channels small fixed weights. F32 [O, 9, 3, 3]. */
static struct fr_tensor *widen(const struct fr_st_entry *e) {
  struct fr_tensor *v = fr_st_view(e), *f = v ? fr_tensor_to_f32(v) : NULL;
  fr_tensor_free(v);
  if (!f || f->ndim != 4 || f->shape[1] != 4) {
    fr_tensor_free(f);
    return NULL;
  }
  int64_t O = f->shape[0];
  struct fr_tensor *w = fr_tensor_f32(4, (int64_t[]){O, 9, 3, 3});
  for (int64_t o = 0; o < O; o++)
    for (int i = 0; i < 9; i++)
      for (int k = 0; k < 9; k++)
        ((float *)w->data)[(o * 9 + i) * 9 + k] = i < 4 ? ((float *)f->data)[(o * 4 + i) * 9 + k]
                                                        : (float)(0.05 * sin((double)(o * 81 + i * 9 + k)));
  fr_tensor_free(f);
  return w;
}

/* Copies safetensors file src to dst with tensor `conv` widened. */
static bool write_widened(const char *src, const char *dst, const char *conv) {
  struct fr_safetensors *st = NULL;
  struct fr_err err = {{0}};
  CHECK_OK(fr_st_open(src, &st, &err), &err);
  if (!st)
    return false;
  struct fr_st_item *items = calloc((size_t)st->n, sizeof *items);
  struct fr_tensor **own = calloc((size_t)st->n, sizeof *own);
  bool found = false;
  for (int i = 0; i < st->n; i++) {
    const struct fr_st_entry *e = &st->entries[i];
    items[i].name = e->name;
    own[i] = strcmp(e->name, conv) ? fr_st_view(e) : widen(e);
    found |= strcmp(e->name, conv) == 0 && own[i];
    items[i].t = own[i];
  }
  CHECKF(found, "%s: no %s to widen", src, conv);
  CHECK_OK(fr_st_write_file(dst, items, st->n, NULL, NULL, 0, &err), &err);
  for (int i = 0; i < st->n; i++)
    fr_tensor_free(own[i]);
  free(items);
  free(own);
  fr_st_close(st);
  return found;
}

/* sd15-inpaint-tiny.safetensors, sdxl-inpaint-tiny.safetensors and the diffusers folder
 * sd15-inpaint-tiny/ (the fixture's parts linked, its unet with conv_in widened and in_channels 9). */
/* Copies file src to dst. */
static bool copy_file(const char *src, const char *dst) {
  size_t len = 0;
  char *d = fr_test_read_file(src, &len);
  FILE *f = d ? fopen(dst, "wb") : NULL;
  bool ok = f && fwrite(d, 1, len, f) == len;
  if (f)
    ok = fclose(f) == 0 && ok;
  free(d);
  CHECKF(ok, "copying %s to %s", src, dst);
  return ok;
}

/* Copies the files of folder src (no subfolders) into a new folder dst. */
static bool copy_dir(const char *src, const char *dst) {
  DIR *dir = opendir(src);
  bool ok = dir && mkdir(dst, 0755) == 0;
  for (struct dirent *de; ok && (de = readdir(dir));) {
    if (de->d_name[0] == '.')
      continue;
    char a[8600], b[8600];
    snprintf(a, sizeof a, "%s/%s", src, de->d_name);
    snprintf(b, sizeof b, "%s/%s", dst, de->d_name);
    ok = copy_file(a, b);
  }
  if (dir)
    closedir(dir);
  return ok;
}

static bool make_inpaint_models(const char *fx, const char *models) {
  char src[8600], dst[8600];
  const char *toks[2] = {"tokenizer", "tokenizer_2"}; /* where the loader looks: one folder up */
  for (int i = 0; i < 2; i++) {
    snprintf(src, sizeof src, "%s/%s", fx, toks[i]);
    snprintf(dst, sizeof dst, "%s/%s", tmp, toks[i]);
    copy_dir(src, dst);
  }
  snprintf(src, sizeof src, "%s/sd15-tiny.safetensors", models);
  snprintf(dst, sizeof dst, "%s/sd15-inpaint-tiny.safetensors", tmp);
  bool ok = write_widened(src, dst, "model.diffusion_model.input_blocks.0.0.weight");
  snprintf(src, sizeof src, "%s/sdxl-tiny.safetensors", models);
  snprintf(dst, sizeof dst, "%s/sdxl-inpaint-tiny.safetensors", tmp);
  ok = ok && write_widened(src, dst, "model.diffusion_model.input_blocks.0.0.weight");
  snprintf(dst, sizeof dst, "%s/sd15-inpaint-tiny", tmp);
  mkdir(dst, 0755);
  const char *parts[] = {"model_index.json", "scheduler", "text_encoder", "tokenizer", "vae"};
  for (int i = 0; i < 5; i++) {
    snprintf(src, sizeof src, "%s/sd15-tiny/%s", models, parts[i]);
    snprintf(dst, sizeof dst, "%s/sd15-inpaint-tiny/%s", tmp, parts[i]);
    ok = ok && (i == 0 ? copy_file(src, dst) : copy_dir(src, dst));
  }
  snprintf(dst, sizeof dst, "%s/sd15-inpaint-tiny/unet", tmp);
  mkdir(dst, 0755);
  snprintf(src, sizeof src, "%s/sd15-tiny/unet/config.json", models);
  char *cfg = fr_test_read_file(src, NULL);
  char *at = cfg ? strstr(cfg, "\"in_channels\": 4") : NULL;
  CHECKF(at != NULL, "%s: no \"in_channels\": 4", src);
  if (at) {
    at[strlen("\"in_channels\": ")] = '9';
    snprintf(dst, sizeof dst, "%s/sd15-inpaint-tiny/unet/config.json", tmp);
    FILE *f = fopen(dst, "w");
    ok = ok && f && fputs(cfg, f) >= 0;
    if (f)
      fclose(f);
  }
  free(cfg);
  snprintf(src, sizeof src, "%s/sd15-tiny/unet/diffusion_pytorch_model.safetensors", models);
  snprintf(dst, sizeof dst, "%s/sd15-inpaint-tiny/unet/diffusion_pytorch_model.safetensors", tmp);
  return ok && write_widened(src, dst, "conv_in.weight");
}

/* The 9-channel UNet from both layouts (the engine's CheckpointLoader fingerprints files, so the diffusers
 * folder is loaded directly): the config says 9 in, 4 out; the same input gives the same eps (the weights
 * are the same numbers); the extra channels are used (changing them changes eps). */
static void test_layouts(void) {
  struct fr_ctx_opts co = {.device = "cpu", .dtype = FR_F32};
  struct fr_ctx *c = NULL;
  struct fr_err err = {{0}};
  CHECK_OK(fr_ctx_new(&co, &c, &err), &err);
  if (!c)
    return;
  const char *names[2] = {"sd15-inpaint-tiny.safetensors", "sd15-inpaint-tiny"};
  float eps[3][PER];
  for (int l = 0; l < 2; l++) {
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", tmp, names[l]);
    struct fr_checkpoint *ck = NULL;
    struct fr_unet *u = NULL;
    CHECK_OK(fr_checkpoint_open(path, &ck, &err), &err);
    if (ck)
      CHECK_OK(fr_unet_load(c, ck, &u, &err), &err);
    if (!u) {
      fr_checkpoint_close(ck);
      continue;
    }
    CHECKF(u->cfg.in_channels == 9 && u->cfg.out_channels == 4, "%s: %d in, %d out", names[l],
           u->cfg.in_channels, u->cfg.out_channels);
    for (int v = 0; v < (l ? 1 : 2); v++) {
      struct fr_tensor *hx = fr_tensor_f32(4, (int64_t[]){1, 9, 8, 8}),
                       *ht = fr_tensor_f32(1, (int64_t[]){1});
      struct fr_tensor *hc = fr_tensor_f32(3, (int64_t[]){1, 77, u->cfg.context_dim});
      for (int i = 0; i < 9 * 64; i++)
        ((float *)hx->data)[i] = (float)sin(0.37 * i) * (i >= 4 * 64 && v ? 2.0f : 1.0f);
      for (int64_t i = 0; i < fr_tensor_numel(hc); i++)
        ((float *)hc->data)[i] = (float)cos(0.11 * (double)i);
      ((float *)ht->data)[0] = 500;
      struct fr_tensor *dx = fr_ctx_upload(c, hx), *dc = fr_ctx_upload(c, hc), *de = NULL, *he = NULL;
      struct fr_unet_cond cond = {.context = dc};
      CHECK_OK(fr_unet_forward(c, u, dx, ht, &cond, NULL, &de, &err), &err);
      if (de && (he = fr_ctx_download(c, de)) && fr_tensor_numel(he) == PER)
        memcpy(eps[l ? 2 : v], he->data, sizeof eps[0]);
      else
        CHECKF(0, "%s: no eps [1, 4, 8, 8]", names[l]);
      fr_tensor_free(he);
      fr_tensor_free(de);
      fr_tensor_free(dx);
      fr_tensor_free(dc);
      fr_tensor_free(hx);
      fr_tensor_free(hc);
      fr_tensor_free(ht);
    }
    fr_unet_free(u);
    fr_checkpoint_close(ck);
  }
  CHECKF(fr_test_rel_err(eps[2], eps[0], PER) < 1e-5, "diffusers layout vs single file: %g",
         fr_test_rel_err(eps[2], eps[0], PER));
  CHECKF(fr_test_rel_err(eps[1], eps[0], PER) > 1e-3,
         "the mask and masked-image channels change nothing (%g)", fr_test_rel_err(eps[1], eps[0], PER));
  fr_ctx_free(c);
}

static const char *const imc_graph =
    "flowrun: 1\n"
    "nodes:\n"
    "  ckpt: {type: CheckpointLoader, inputs: {ckpt_name: %s}}\n"
    "  img: {type: LoadImage, inputs: {image: half.png}}\n"
    "  pos: {type: TextEncode, inputs: {clip: ckpt.clip, text: a cat}}\n"
    "  neg: {type: TextEncode, inputs: {clip: ckpt.clip, text: blurry}}\n"
    "%s"
    "  imc: {type: InpaintModelConditioning, inputs: {positive: %s, negative: neg, vae: ckpt.vae,\n"
    "                                                 pixels: img.image, mask: img.mask}}\n"
    "  s: {type: Sampler, inputs: {model: ckpt.model, positive: imc.positive, negative: imc.negative,\n"
    "                              latent: imc.latent, steps: 2, cfg: 2, seed: 3}}\n"
    "  grey: {type: LoadImageData, inputs: {file: grey64.safetensors}}\n"
    "  enc: {type: VAEEncode, inputs: {pixels: grey, vae: ckpt.vae}}\n"
    "  whole: {type: VAEEncode, inputs: {pixels: img.image, vae: ckpt.vae}}\n"
    "  p0: {type: ProbeLatent, inputs: {latent: enc, slot: 0}}\n"
    "  p1: {type: ProbeLatent, inputs: {latent: s, slot: 1}}\n"
    "  p2: {type: ProbeLatent, inputs: {latent: whole, slot: 2}}\n"
    "  p3: {type: ProbeLatent, inputs: {latent: imc.latent, slot: 3}}\n";

static void test_inpaint_model(struct fr_engine *e, const char *fx, const char *models) {
  if (!make_inpaint_models(fx, models))
    return;
  /* the masked image as the model should see it: half.png's pixels, left half grey */
  char path[4200];
  snprintf(path, sizeof path, "%s/half.png", tmp);
  struct fr_tensor *li = NULL, *lm = NULL;
  struct fr_err err = {{0}};
  CHECK_OK(fr_image_load_png(path, &li, &lm, &err), &err);
  if (!li)
    return;
  float pm[64 * 64];
  for (int i = 0; i < 64 * 64; i++) {
    pm[i] = (float)test_mask(2, i % 64, i / 64, 64);
    for (int c = 0; c < 3; c++)
      ((float *)li->data)[i * 3 + c] = (((float *)li->data)[i * 3 + c] - 0.5f) * (1.0f - pm[i]) + 0.5f;
  }
  write_tensor("grey64.safetensors", "image", li);
  fr_tensor_free(li);
  fr_tensor_free(lm);
  /* the mask channel: the pixel mask bilinearly resized to 8x8 (definition in double), rounded */
  float lmask[64];
  for (int i = 0; i < 64; i++)
    lmask[i] = (float)round(ref_bilinear(pm, 64, 64, 8, 8, i / 8, i % 8));
  const char *ckpts[2] = {"sd15-inpaint-tiny.safetensors", "sdxl-inpaint-tiny.safetensors"};
  for (int m = 0; m < 2; m++) {
    char yaml[4096];
    /* SD1.5: with a ControlNet on the positive too (it gets the latent channels only, as in ComfyUI) */
    const char *cn =
        "  cnl: {type: ControlNetLoader, inputs: {control_net_name: controlnet-tiny.safetensors}}\n"
        "  cn: {type: ControlNet, inputs: {conditioning: pos, control_net: cnl, image: img.image}}\n";
    snprintf(yaml, sizeof yaml, imc_graph, ckpts[m], m == 0 ? cn : "", m == 0 ? "cn" : "pos");
    n_recs = 0;
    struct fr_pipe_observer ob = {observe, NULL};
    fr_pipe_set_observer(&ob);
    enum fr_status rc = run_yaml(e, yaml, &err);
    fr_pipe_set_observer(NULL);
    CHECKF(rc == FR_OK, "%s: %s", ckpts[m], err.msg);
    int64_t n0, n1, n2, n3;
    const float *enc = probe(0, &n0), *out = probe(1, &n1), *whole = probe(2, &n2), *lat = probe(3, &n3);
    if (rc || !enc || !out || !whole || !lat || n1 != PER)
      continue;
    CHECKF(n_recs == 2, "%s: %d evaluations", ckpts[m], n_recs);
    int bad_mask = 0, bad_lat = 0, bad_x = 0;
    for (int k = 0; k < n_recs; k++) {
      const struct rec *r = &recs[k];
      CHECKF(r->ushape[0] == 2 && r->ushape[1] == 9 && r->ushape[2] == 8 && r->ushape[3] == 8,
             "%s: UNet input [%lld, %lld, %lld, %lld], want [2, 9, 8, 8]", ckpts[m], (long long)r->ushape[0],
             (long long)r->ushape[1], (long long)r->ushape[2], (long long)r->ushape[3]);
      float s = (float)(1.0 / sqrt(r->sigma * r->sigma + 1.0));
      for (int h = 0; h < 2; h++) {
        const float *u = r->unet + h * 9 * 64;
        for (int i = 0; i < 64; i++) {
          bad_mask += u[4 * 64 + i] != lmask[i];
          for (int c = 0; c < 4; c++) {
            bad_lat += fabs(u[(5 + c) * 64 + i] - enc[c * 64 + i]) > 1e-6 * fmax(1, fabs(enc[c * 64 + i]));
            float want = r->xin[c * 64 + i] * s;
            bad_x += fabs(u[c * 64 + i] - want) > 1e-6 * fmax(1, fabs(want));
          }
        }
      }
    }
    CHECKF(bad_mask == 0, "%s: %d mask-channel values differ from the resized, rounded mask", ckpts[m],
           bad_mask);
    CHECKF(bad_lat == 0, "%s: %d masked-image channels differ from VAEEncode of the grey image", ckpts[m],
           bad_lat);
    CHECKF(bad_x == 0, "%s: %d latent channels are not the scaled input", ckpts[m], bad_x);
    CHECKF(n3 == PER && !memcmp(lat, whole, PER * sizeof(float)),
           "%s: InpaintModelConditioning's latent is not the whole image's", ckpts[m]);
    CHECK(probes[3] && fr_value_get_tensor(probes[3], "noise_mask"));
    int kept = 0, finite = 0;
    for (int i = 0; i < PER; i++) {
      finite += isfinite(out[i]);
      kept += (i % 8) >= 4 && out[i] == whole[i];
    }
    CHECKF(finite == PER && kept == PER / 2, "%s: %d finite, %d of %d kept", ckpts[m], finite, kept, PER / 2);
  }
  test_layouts();
}

/* Bad input: a clear node error naming what is wrong, no crash. */
static void test_errors(struct fr_engine *e) {
  static const struct {
    const char *nodes, *needle;
  } cases[] = {
      /* the concat latent from a 64x64 picture, sampled at 128x128 */
      {"  imc: {type: InpaintModelConditioning, inputs: {positive: pos, negative: pos, vae: ckpt.vae,\n"
       "                                                 pixels: img.image, mask: img.mask}}\n"
       "  big: {type: EmptyLatent, inputs: {width: 128, height: 128}}\n"
       "  s: {type: Sampler, inputs: {model: ckpt.model, positive: imc.positive, negative: imc.negative,\n"
       "                              latent: big, steps: 1}}\n",
       "concat_latent_image"},
      /* a batch of 2 masks for 3 pictures */
      {"  three: {type: ImageBatch, inputs: {image1: img.image, image2: img.image}}\n"
       "  three2: {type: ImageBatch, inputs: {image1: three, image2: img.image}}\n"
       "  img2: {type: ImageBatch, inputs: {image1: img.image, image2: img.image}}\n"
       "  mm: {type: ImageToMask, inputs: {image: img2}}\n"
       "  s: {type: VAEEncodeForInpaint, inputs: {pixels: three2, vae: ckpt.vae, mask: mm}}\n",
       "input 'mask': a batch of 2 masks for 3 images"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char yaml[4096];
    snprintf(yaml, sizeof yaml,
             "flowrun: 1\n"
             "nodes:\n"
             "  ckpt: {type: CheckpointLoader, inputs: {ckpt_name: sd15-inpaint-tiny.safetensors}}\n"
             "  img: {type: LoadImage, inputs: {image: half.png}}\n"
             "  pos: {type: TextEncode, inputs: {clip: ckpt.clip, text: a cat}}\n"
             "%s"
             "  p: {type: ProbeLatent, inputs: {latent: s, slot: 7}}\n",
             cases[i].nodes);
    struct fr_err err = {{0}};
    enum fr_status rc = run_yaml(e, yaml, &err);
    printf("error case %zu: %s\n", i, err.msg);
    CHECKF(rc != FR_OK && strstr(err.msg, cases[i].needle), "case %zu: status %d, message '%s' (want '%s')",
           i, rc, err.msg, cases[i].needle);
  }
}

int main(void) {
  tmp = fr_test_tmpdir("test_inpaint");
  test_bilinear();
  test_prepare_mask();
  const char *fx = fr_test_fixtures();
  if (fx) {
    char models[4200];
    snprintf(models, sizeof models, "%s/models", fx);
    struct fr_registry reg;
    struct fr_engine *e = new_engine(models, &reg);
    if (e) {
      test_sampler_mask(e);
      test_vae_encode_for_inpaint(e);
      test_inpaint_model(e, fx, models);
      test_errors(e);
      fr_engine_free(e);
    }
  }
  for (int i = 0; i < NSLOT; i++)
    fr_value_unref(probes[i]);
  return fr_test_done();
}
