/* VAELoader, UNETLoader, CLIPLoader: separate files give what the checkpoint's own components give.
 *   - VAELoader on a bare single-file VAE (sd15-tiny's first_stage_model.* tensors written without the
 *     prefix, as vae-ft-mse-840000-ema-pruned.safetensors is), found in a vae/ subfolder by name, decodes a
 *     latent exactly as the checkpoint's VAE (same weights, same code: bit for bit);
 *   - VAELoader on a diffusers-layout file (sd15-tiny/vae/diffusion_pytorch_model.safetensors: the same
 *     values under diffusers' names) decodes it as the checkpoint's VAE, within 1e-5 (only the summation
 *     order could differ; it comes out equal);
 *   - the same bare VAE under an SDXL model's latent (the fixtures' SD1.5 and SDXL VAEs share weights and
 *     differ only in scaling factor) decodes as the SDXL checkpoint's VAE: the latent's model family
 *     gives the factor a bare file lacks;
 *   - UNETLoader + CLIPLoader + VAELoader on sd15-tiny's unet/, text_encoder/ and vae/ files make the same
 *     picture as CheckpointLoader on sd15-tiny.safetensors, bit for bit.
 * (Diffusers *folders* cannot be named by a graph yet: the engine fingerprints files only.) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/flowrun.h"
#include "core/safetensors.h"
#include "nodes/registry.h"
#include "tests/test.h"

static const char *tmp;
static struct fr_engine *eng;

static enum fr_status run_yaml(const char *yaml, struct fr_err *err) {
  struct fr_graph *g = NULL;
  enum fr_status rc = fr_engine_load_string(eng, yaml, strlen(yaml), "loaders.yaml", tmp, NULL, 0, &g, err);
  if (!rc) {
    struct fr_run_summary sum;
    rc = fr_engine_run(eng, g, &sum, err);
  }
  fr_graph_free(g);
  return rc;
}

/* max |a - b| / max |b| of two saved images; -1 when either is missing or the sizes differ */
static double compare(const char *a, const char *b) {
  long na = 0, nb = 0;
  float *x = fr_test_read_saved(tmp, a, "image", &na), *y = fr_test_read_saved(tmp, b, "image", &nb);
  double e = -1;
  if (x && y && na == nb)
    e = fr_test_rel_err(x, y, na);
  free(x), free(y);
  return e;
}

static void write_bare_vae(const char *src, const char *dst) {
  struct fr_safetensors *st = NULL;
  struct fr_err err = {{0}};
  CHECK_OK(fr_st_open(src, &st, &err), &err);
  if (!st)
    return;
  struct fr_st_item *items = calloc((size_t)st->n, sizeof *items);
  int n = 0;
  for (int i = 0; i < st->n; i++)
    if (!strncmp(st->entries[i].name, "first_stage_model.", 18)) {
      items[n].name = st->entries[i].name + 18;
      items[n].t = fr_st_view(&st->entries[i]);
      n++;
    }
  CHECK_OK(fr_st_write_file(dst, items, n, NULL, NULL, 0, &err), &err);
  for (int i = 0; i < n; i++)
    fr_tensor_free((struct fr_tensor *)items[i].t);
  free(items);
  fr_st_close(st);
}

int main(void) {
  tmp = fr_test_tmpdir("test_loaders");
  const char *fx = fr_test_fixtures();
  if (!fx)
    return fr_test_done();
  char models[4200], vae[4300], src[4300], dst[4400];
  snprintf(models, sizeof models, "%s/models", fx);
  snprintf(vae, sizeof vae, "%s/vae", tmp);
  mkdir(vae, 0755);
  snprintf(src, sizeof src, "%s/sd15-tiny.safetensors", models);
  snprintf(dst, sizeof dst, "%s/bare-vae.safetensors", vae);
  write_bare_vae(src, dst);
  /* a fixed latent [1, 4, 8, 8] */
  struct fr_tensor *lt = fr_tensor_f32(4, (int64_t[]){1, 4, 8, 8});
  for (int i = 0; i < 256; i++)
    ((float *)lt->data)[i] = (float)(0.8 * sin(0.41 * i) - 0.3 * cos(0.13 * i));
  snprintf(dst, sizeof dst, "%s/latent.safetensors", tmp);
  struct fr_st_item it = {"latent", lt};
  struct fr_err err = {{0}};
  CHECK_OK(fr_st_write_file(dst, &it, 1, NULL, NULL, 0, &err), &err);
  fr_tensor_free(lt);

  const char *dirs[2] = {models, tmp}; /* tmp/vae/: the bare file found by name (ComfyUI's vae/ folder) */
  struct fr_engine_opts o = {.registry = fr_builtin_registry(),
                             .no_cache = true,
                             .model_dirs = dirs,
                             .n_model_dirs = 2,
                             .output_dir = tmp,
                             .threads = 2};
  CHECK_OK(fr_engine_new(&o, &eng, &err), &err);
  if (!eng)
    return fr_test_done();

  const char *decode_yaml =
      "flowrun: 1\n"
      "nodes:\n"
      "  ckpt: {type: CheckpointLoader, inputs: {ckpt_name: sd15-tiny.safetensors}}\n"
      "  bare: {type: VAELoader, inputs: {vae_name: bare-vae.safetensors}}\n"
      "  diff: {type: VAELoader, inputs: {vae_name: sd15-tiny/vae/diffusion_pytorch_model.safetensors}}\n"
      "  lat: {type: LoadLatent, inputs: {file: latent.safetensors}}\n"
      "  d1: {type: VAEDecode, inputs: {samples: lat, vae: ckpt.vae}}\n"
      "  d2: {type: VAEDecode, inputs: {samples: lat, vae: bare}}\n"
      "  d3: {type: VAEDecode, inputs: {samples: lat, vae: diff}}\n"
      "  s1: {type: SaveImageData, inputs: {images: d1, filename: ckpt.safetensors}}\n"
      "  s2: {type: SaveImageData, inputs: {images: d2, filename: bare.safetensors}}\n"
      "  s3: {type: SaveImageData, inputs: {images: d3, filename: diff.safetensors}}\n";
  CHECK_OK(run_yaml(decode_yaml, &err), &err);
  double e_bare = compare("bare.safetensors", "ckpt.safetensors"),
         e_diff = compare("diff.safetensors", "ckpt.safetensors");
  printf("VAELoader: bare file %.3g, diffusers folder %.3g (vs the checkpoint's VAE)\n", e_bare, e_diff);
  CHECKF(e_bare == 0, "bare VAE file decodes differently: %g", e_bare);
  CHECKF(e_diff >= 0 && e_diff <= 1e-5, "diffusers VAE folder decodes differently: %g", e_diff);

  /* an SDXL model's latent through the bare file: the SDXL factor, as the SDXL checkpoint's own VAE */
  const char *xl_yaml =
      "flowrun: 1\n"
      "nodes:\n"
      "  ckpt: {type: CheckpointLoader, inputs: {ckpt_name: sdxl-tiny.safetensors}}\n"
      "  bare: {type: VAELoader, inputs: {vae_name: bare-vae.safetensors}}\n"
      "  pos: {type: TextEncode, inputs: {clip: ckpt.clip, text: a cat}}\n"
      "  empty: {type: EmptyLatent, inputs: {width: 64, height: 64}}\n"
      "  s: {type: Sampler, inputs: {model: ckpt.model, positive: pos, negative: pos, latent: empty,\n"
      "                              seed: 5, steps: 1, cfg: 1}}\n"
      "  d1: {type: VAEDecode, inputs: {samples: s, vae: ckpt.vae}}\n"
      "  d2: {type: VAEDecode, inputs: {samples: s, vae: bare}}\n"
      "  s1: {type: SaveImageData, inputs: {images: d1, filename: xl_ckpt.safetensors}}\n"
      "  s2: {type: SaveImageData, inputs: {images: d2, filename: xl_bare.safetensors}}\n";
  CHECK_OK(run_yaml(xl_yaml, &err), &err);
  double e_xl = compare("xl_bare.safetensors", "xl_ckpt.safetensors");
  printf("VAELoader under an SDXL latent: %.3g\n", e_xl);
  CHECKF(e_xl == 0, "bare VAE under an SDXL model: %g", e_xl);

  /* SDXL img2img through the bare file: VAEEncode assumes SD1.x's factor, the SDXL Sampler rescales the
   * latent to its own, VAEDecode takes SDXL's from the Sampler's latent: the checkpoint VAE's picture.
   * Tolerance 1e-4: the rescale rounds differently from encoding with 0.13025 directly (~1e-7), which
   * the random-weight tiny UNet amplifies (~1000x, see test_vpred); a wrong factor is off by ~30%. */
  const char *xl_i2i =
      "flowrun: 1\n"
      "nodes:\n"
      "  ckpt: {type: CheckpointLoader, inputs: {ckpt_name: sdxl-tiny.safetensors}}\n"
      "  bare: {type: VAELoader, inputs: {vae_name: bare-vae.safetensors}}\n"
      "  img: {type: TestPattern, inputs: {width: 64, height: 64}}\n"
      "  pos: {type: TextEncode, inputs: {clip: ckpt.clip, text: a cat}}\n"
      "  e1: {type: VAEEncode, inputs: {pixels: img, vae: ckpt.vae}}\n"
      "  e2: {type: VAEEncode, inputs: {pixels: img, vae: bare}}\n"
      "  s1: {type: Sampler, inputs: {model: ckpt.model, positive: pos, negative: pos, latent: e1, seed: 5,\n"
      "                               steps: 2, cfg: 1, denoise: 0.5}}\n"
      "  s2: {type: Sampler, inputs: {model: ckpt.model, positive: pos, negative: pos, latent: e2, seed: 5,\n"
      "                               steps: 2, cfg: 1, denoise: 0.5}}\n"
      "  d1: {type: VAEDecode, inputs: {samples: s1, vae: ckpt.vae}}\n"
      "  d2: {type: VAEDecode, inputs: {samples: s2, vae: bare}}\n"
      "  o1: {type: SaveImageData, inputs: {images: d1, filename: i2i_ckpt.safetensors}}\n"
      "  o2: {type: SaveImageData, inputs: {images: d2, filename: i2i_bare.safetensors}}\n";
  CHECK_OK(run_yaml(xl_i2i, &err), &err);
  double e_i2i = compare("i2i_bare.safetensors", "i2i_ckpt.safetensors");
  printf("VAELoader for SDXL img2img: %.3g\n", e_i2i);
  CHECKF(e_i2i >= 0 && e_i2i <= 1e-4, "bare VAE in SDXL img2img: %g", e_i2i);

  /* split files: unet/, text_encoder/, vae/ of the diffusers folder = the whole folder */
  const char *split_yaml =
      "flowrun: 1\n"
      "nodes:\n"
      "  ckpt: {type: CheckpointLoader, inputs: {ckpt_name: sd15-tiny.safetensors}}\n"
      "  unet: {type: UNETLoader, inputs: {unet_name: sd15-tiny/unet/diffusion_pytorch_model.safetensors}}\n"
      "  clip: {type: CLIPLoader, inputs: {clip_name: sd15-tiny/text_encoder/model.safetensors}}\n"
      "  vae: {type: VAELoader, inputs: {vae_name: sd15-tiny/vae/diffusion_pytorch_model.safetensors}}\n"
      "  empty: {type: EmptyLatent, inputs: {width: 64, height: 64}}\n"
      "  p1: {type: TextEncode, inputs: {clip: ckpt.clip, text: a photo of a cat}}\n"
      "  p2: {type: TextEncode, inputs: {clip: clip, text: a photo of a cat}}\n"
      "  s1: {type: Sampler, inputs: {model: ckpt.model, positive: p1, negative: p1, latent: empty, seed: "
      "9,\n"
      "                               steps: 2, cfg: 1}}\n"
      "  s2: {type: Sampler, inputs: {model: unet, positive: p2, negative: p2, latent: empty, seed: 9,\n"
      "                               steps: 2, cfg: 1}}\n"
      "  d1: {type: VAEDecode, inputs: {samples: s1, vae: ckpt.vae}}\n"
      "  d2: {type: VAEDecode, inputs: {samples: s2, vae: vae}}\n"
      "  o1: {type: SaveImageData, inputs: {images: d1, filename: whole.safetensors}}\n"
      "  o2: {type: SaveImageData, inputs: {images: d2, filename: split.safetensors}}\n";
  CHECK_OK(run_yaml(split_yaml, &err), &err);
  double e_split = compare("split.safetensors", "whole.safetensors");
  printf("UNETLoader + CLIPLoader + VAELoader: %.3g\n", e_split);
  CHECKF(e_split == 0, "split loaders differ from the whole folder: %g", e_split);

  /* a missing file names what it looked for */
  const char *missing = "flowrun: 1\n"
                        "nodes:\n"
                        "  v: {type: VAELoader, inputs: {vae_name: nope.safetensors}}\n";
  memset(&err, 0, sizeof err);
  struct fr_graph *g = NULL;
  enum fr_status rc =
      fr_engine_load_string(eng, missing, strlen(missing), "loaders.yaml", tmp, NULL, 0, &g, &err);
  fr_graph_free(g);
  CHECKF(rc != FR_OK && strstr(err.msg, "nope.safetensors") && strstr(err.msg, "/vae/nope.safetensors"),
         "missing VAE: %s", err.msg);
  fr_engine_free(eng);
  return fr_test_done();
}
