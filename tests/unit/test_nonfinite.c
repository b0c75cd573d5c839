/* NaN and inf are reported, never silently turned into a black picture: fr_tensor_count_nonfinite on
 * hand-made bit patterns of every float dtype, then a run of the tiny SD1.5 checkpoint with one NaN
 * written into a UNet weight (a copy made here from the fixture): the run still succeeds, as ComfyUI's
 * users expect, and warning events name the Sampler and the tensor, the Sampler's NaN latent, VAEDecode's
 * NaN input and SaveImage's NaN pixels; the untouched checkpoint gives no such warning. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/flowrun.h"
#include "core/json.h"
#include "nodes/registry.h"
#include "tests/test.h"

static void test_count(void) {
  float f32[7] = {1, 0, -2.5f, NAN, 3, INFINITY, -INFINITY};
  uint16_t f16[5] = {0x3C00, 0x7C00 /* +inf */, 0x7BFF /* 65504 */, 0xFE00 /* -NaN */, 0x0001};
  uint16_t bf16[4] = {0x3F80, 0x7F7F /* max */, 0xFF80 /* -inf */, 0x0000};
  double f64[4] = {1e300 /* beyond float: loads as inf */, 3.0e38 /* below FLT_MAX */, 0, NAN};
  int32_t i32[3] = {0x7F800000, 0x7FC00000, 1}; /* NaN bit patterns in an integer tensor are integers */
  struct {
    enum fr_dtype dt;
    void *data;
    int64_t n, want, first;
  } rows[] = {
      {FR_F32, f32, 7, 3, 3}, {FR_F16, f16, 5, 2, 1},  {FR_BF16, bf16, 4, 1, 2},
      {FR_F64, f64, 4, 2, 0}, {FR_I32, i32, 3, 0, -1}, {FR_F32, f32, 3, 0, -1},
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    struct fr_tensor *t = fr_tensor_view(rows[i].dt, 1, (int64_t[]){rows[i].n}, rows[i].data);
    int64_t first = -2, got = fr_tensor_count_nonfinite(t, &first);
    CHECKF(got == rows[i].want && first == rows[i].first, "row %zu (%s): %lld non-finite, first %lld", i,
           fr_dtype_name(rows[i].dt), (long long)got, (long long)first);
    fr_tensor_free(t);
  }
  CHECK(fr_tensor_count_nonfinite(NULL, NULL) == 0);
  /* long rows: the vectorised pass (blocks of 16 bytes) and the tail, bad values in both, and the
   * largest finite values next to them (0x7BFF, 0x7F7F, FLT_MAX; FLT_MAX as F64) */
  enum { N = 1001 };
  static uint16_t h[N], b[N];
  static float f[N];
  static double g[N];
  for (int i = 0; i < N; i++) {
    h[i] = i % 2 ? 0x7BFF : 0xFBFF;
    b[i] = i % 2 ? 0x7F7F : 0xFF7F;
    f[i] = i % 2 ? 3.4028235e38f : -3.4028235e38f;
    g[i] = i % 2 ? 3.4028234663852886e38 : 1e-300; /* FLT_MAX */
  }
  h[517] = 0x7C01; /* a signalling NaN */
  h[1000] = 0xFC00;
  b[3] = 0x7FC0;
  b[999] = 0xFF81;
  f[640] = -NAN;
  g[0] = -INFINITY;
  g[700] = 6.8e38; /* beyond the float range */
  struct {
    enum fr_dtype dt;
    void *data;
    int64_t want, first;
  } longs[] = {{FR_F16, h, 2, 517}, {FR_BF16, b, 2, 3}, {FR_F32, f, 1, 640}, {FR_F64, g, 2, 0}};
  for (size_t i = 0; i < sizeof longs / sizeof longs[0]; i++) {
    struct fr_tensor *t = fr_tensor_view(longs[i].dt, 2, (int64_t[]){7, 143}, longs[i].data);
    int64_t first = -2, got = fr_tensor_count_nonfinite(t, &first);
    CHECKF(got == longs[i].want && first == longs[i].first, "long %s: %lld non-finite, first %lld",
           fr_dtype_name(longs[i].dt), (long long)got, (long long)first);
    fr_tensor_free(t);
  }
}

static char warnings[8][1024];
static int n_warnings;
static void on_event(void *user, const struct fr_event *ev) {
  (void)user;
  if (ev->kind == FR_EV_WARNING && ev->message && n_warnings < 8)
    snprintf(warnings[n_warnings++], sizeof warnings[0], "%s", ev->message);
}

/* The warning that contains all of a, b, c (c may be NULL), or NULL. */
static const char *find_warning(const char *a, const char *b, const char *c) {
  for (int i = 0; i < n_warnings; i++)
    if (strstr(warnings[i], a) && strstr(warnings[i], b) && (!c || strstr(warnings[i], c)))
      return warnings[i];
  return NULL;
}

/* Copies the fixture checkpoint to dst with value `index` of F16 tensor `key` set to NaN. */
static bool write_nan_checkpoint(const char *src, const char *dst, const char *key, int64_t index) {
  size_t len = 0;
  char *data = fr_test_read_file(src, &len);
  if (!data || len < 8) {
    free(data);
    return false;
  }
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--)
    hlen = hlen << 8 | (unsigned char)data[i];
  struct fr_arena *a = fr_arena_new(0);
  struct fr_json *h = NULL;
  struct fr_err err = {{0}};
  bool ok = hlen < len - 8 && fr_json_parse(a, data + 8, hlen, 0, &h, &err) == FR_OK;
  const struct fr_json *e = ok ? fr_json_get(h, key) : NULL;
  const struct fr_json *off = e ? fr_json_get(e, "data_offsets") : NULL;
  ok = off && off->type == FR_JSON_ARRAY && off->n == 2 && strcmp(fr_json_str(e, "dtype", ""), "F16") == 0;
  if (ok) {
    size_t at = 8 + hlen + (size_t)off->items[0].i + 2 * (size_t)index;
    ok = at + 2 <= len;
    if (ok) { /* F16 quiet NaN 0x7E00, little-endian */
      data[at] = 0x00;
      data[at + 1] = 0x7E;
    }
  }
  FILE *f = ok ? fopen(dst, "wb") : NULL;
  ok = f && fwrite(data, 1, len, f) == len;
  if (f)
    ok = fclose(f) == 0 && ok;
  fr_arena_free(a);
  free(data);
  return ok;
}

/* %s: the checkpoint's name, the SaveImage prefix */
static const char graph_fmt[] =
    "flowrun: 1\n"
    "nodes:\n"
    "  ckpt: {type: CheckpointLoader, inputs: {ckpt_name: %s}}\n"
    "  pos: {type: TextEncode, inputs: {clip: ckpt.clip, text: a cat}}\n"
    "  empty: {type: EmptyLatent, inputs: {width: 64, height: 64}}\n"
    "  s: {type: Sampler, inputs: {model: ckpt.model, positive: pos, negative: pos, latent: empty,\n"
    "                              seed: 1, steps: 1, cfg: 1}}\n"
    "  d: {type: VAEDecode, inputs: {samples: s, vae: ckpt.vae}}\n"
    "  save: {type: SaveImage, inputs: {images: d, filename_prefix: %s}}\n";

/* Runs the graph over checkpoint file `ckpt` (a name on the model path); returns the run's status. */
static enum fr_status run_graph(const char *models, const char *ckpt, const char *prefix, const char *tmp) {
  char yaml[2048];
  snprintf(yaml, sizeof yaml, graph_fmt, ckpt, prefix);
  const char *dirs[1] = {models};
  struct fr_engine_opts o = {.registry = fr_builtin_registry(),
                             .no_cache = true,
                             .model_dirs = dirs,
                             .n_model_dirs = 1,
                             .output_dir = tmp,
                             .threads = 2,
                             .on_event = on_event};
  struct fr_engine *e = NULL;
  struct fr_err err = {{0}};
  enum fr_status rc = fr_engine_new(&o, &e, &err);
  struct fr_graph *g = NULL;
  if (!rc)
    rc = fr_engine_load_string(e, yaml, strlen(yaml), "nan.yaml", tmp, NULL, 0, &g, &err);
  n_warnings = 0;
  struct fr_run_summary sum;
  if (!rc)
    rc = fr_engine_run(e, g, &sum, &err);
  CHECKF(rc == FR_OK, "run over %s: %s", ckpt, err.msg);
  fr_graph_free(g);
  fr_engine_free(e);
  return rc;
}

static void test_nan_checkpoint(const char *fx) {
  const char *tmp = fr_test_tmpdir("test_nonfinite");
  char models[4200], src[4200], dst[4300], tok[4300], fxtok[4200];
  snprintf(models, sizeof models, "%s/models", tmp);
  mkdir(models, 0755); /* may exist from an earlier run */
  snprintf(src, sizeof src, "%s/models/sd15-tiny.safetensors", fx);
  snprintf(dst, sizeof dst, "%s/nan-unet.safetensors", models);
  const char *key = "model.diffusion_model.out.2.weight";
  CHECKF(write_nan_checkpoint(src, dst, key, 5), "write %s with a NaN in %s", dst, key);
  /* the tokenizer beside the checkpoint, as the loader looks for it */
  snprintf(tok, sizeof tok, "%s/tokenizer", models);
  snprintf(fxtok, sizeof fxtok, "%s/tokenizer", fx);
  unlink(tok);
  CHECK(symlink(fxtok, tok) == 0);
  char orig[4300];
  snprintf(orig, sizeof orig, "%s/sd15-tiny.safetensors", models);
  unlink(orig);
  CHECK(symlink(src, orig) == 0);

  /* the untouched checkpoint: no warning at all */
  run_graph(models, "sd15-tiny.safetensors", "clean", tmp);
  CHECKF(n_warnings == 0, "clean checkpoint: %d warnings, first '%s'", n_warnings, warnings[0]);

  /* one NaN weight: the run succeeds (exit 0 in the CLI), and says so at each step */
  enum fr_status rc = run_graph(models, "nan-unet.safetensors", "nan", tmp);
  CHECKF(rc == FR_OK, "the run goes on with a NaN weight: %s", fr_status_str(rc));
  for (int i = 0; i < n_warnings; i++)
    printf("warning: %s\n", warnings[i]);
  const char *w = find_warning("node s (Sampler)", key, "nan-unet.safetensors");
  CHECKF(w != NULL, "a warning names the Sampler, the tensor %s and the file", key);
  CHECKF(w && strstr(w, "1 NaN/inf value"), "and counts one value: %s", w ? w : "");
  CHECK(find_warning("node s (Sampler)", "sampled latent", "NaN/inf") != NULL);
  CHECK(find_warning("node d (VAEDecode)", "input 'samples'", "NaN/inf") != NULL);
  CHECK(find_warning("node save (SaveImage)", "input 'images'", "NaN/inf") != NULL);
  CHECKF(!find_warning("TextEncode", "NaN", NULL), "the text encoder's weights are clean");

  /* the CLI: exit status 0, the warnings on stderr (--quiet keeps warnings) */
  const char *flowrun = getenv("FLOWRUN");
  CHECKF(flowrun && *flowrun, "FLOWRUN (the CLI under test) is not set");
  char yaml[2048], gpath[4400], log[4400], cmd[16384];
  snprintf(yaml, sizeof yaml, graph_fmt, "nan-unet.safetensors", "cli");
  snprintf(gpath, sizeof gpath, "%s/nan.yaml", tmp);
  snprintf(log, sizeof log, "%s/cli.log", tmp);
  FILE *f = fopen(gpath, "wb");
  if (f) {
    fputs(yaml, f);
    fclose(f);
  }
  if (!flowrun || !*flowrun || !f)
    return;
  snprintf(cmd, sizeof cmd, "'%s' '%s' --no-cache --quiet --models '%s' --output '%s' >'%s' 2>&1", flowrun,
           gpath, models, tmp, log);
  int st = system(cmd);
  size_t len = 0;
  char *out = fr_test_read_file(log, &len);
  CHECKF(st == 0, "flowrun with a NaN weight exits 0 (status %d): %s", st, out ? out : "");
  CHECKF(out && strstr(out, "warning: node s (Sampler)") && strstr(out, key),
         "the CLI prints the warning naming the Sampler and %s: %s", key, out ? out : "");
  free(out);
}

int main(void) {
  test_count();
  const char *fx = fr_test_fixtures();
  if (fx)
    test_nan_checkpoint(fx);
  return fr_test_done();
}
