/* Times ImageUpscaleWithModel's work (fr_upscaler_run_tiled) with full-size upscale models on random weights:
 * RRDBNet x4 as RealESRGAN_x4plus (23 blocks, 64 features, growth 32) and SRVGGNetCompact x4 as
 * realesr-general-x4v3 (32 convs, 64 features), on a 512x512 image, ComfyUI's tile 512 / overlap 32 (one
 * tile) and 256 / 32 (9 tiles, run first so the peak memory printed after it is its own). Not run by ctest:
 * timings are numbers to read, never assertions. Build from a configured build dir (CPU build):
 *   cc -O2 -I. tests/bench_upscale.c build/libfr_nodes.a build/libfr_kernels.a build/libfr_core.a \
 *      -lopenblas -lpthread -lm $(pkg-config --libs yaml-0.1 sqlite3 libpng libxxhash) -o build/bench_upscale
 *   build/bench_upscale [rrdb|srvgg] [tile ...]
 * Prints wall and CPU seconds and the peak resident memory of the process. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "core/safetensors.h"
#include "nodes/models/upscale.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
         1e-6 * (double)ru.ru_stime.tv_usec;
}
static double peak_gib(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_maxrss / (1024.0 * 1024.0);
}

#define MAXT 1024
static struct fr_st_item items[MAXT];
static char names[MAXT][64];
static int n_items;
static unsigned rs = 12345u;

static void add(const char *name, int ndim, const int64_t *shape, double std) {
  struct fr_tensor *t = fr_tensor_new(FR_F16, ndim, shape);
  uint16_t *p = t->data;
  for (int64_t i = 0; i < fr_tensor_numel(t); i++) {
    rs = rs * 1664525u + 1013904223u;
    p[i] = fr_f32_to_f16((float)(((double)(rs >> 8) / (1 << 24) - 0.5) * 2 * std));
  }
  snprintf(names[n_items], sizeof names[0], "%s", name);
  items[n_items] = (struct fr_st_item){names[n_items], t};
  n_items++;
}
static void conv(const char *base, int64_t o, int64_t i) {
  char n[64];
  snprintf(n, sizeof n, "%s.weight", base);
  add(n, 4, (int64_t[]){o, i, 3, 3}, 0.02);
  snprintf(n, sizeof n, "%s.bias", base);
  add(n, 1, (int64_t[]){o}, 0.01);
}

int main(int argc, char **argv) {
  const char *arch = argc > 1 ? argv[1] : "rrdb";
  const char *path = "/tmp/bench_upscale.safetensors";
  if (strcmp(arch, "srvgg") == 0) {
    conv("body.0", 64, 3);
    for (int i = 0; i <= 32; i++) {
      char n[32];
      snprintf(n, sizeof n, "body.%d.weight", 2 * i + 1);
      add(n, 1, (int64_t[]){64}, 0.25);
      if (i < 32) {
        snprintf(n, sizeof n, "body.%d", 2 * i + 2);
        conv(n, 64, 64);
      }
    }
    conv("body.66", 48, 64);
  } else {
    conv("conv_first", 64, 3);
    for (int b = 0; b < 23; b++)
      for (int k = 1; k <= 3; k++)
        for (int j = 1; j <= 5; j++) {
          char n[64];
          snprintf(n, sizeof n, "body.%d.rdb%d.conv%d", b, k, j);
          conv(n, j == 5 ? 64 : 32, 64 + (j - 1) * 32);
        }
    conv("conv_body", 64, 64);
    conv("conv_up1", 64, 64);
    conv("conv_up2", 64, 64);
    conv("conv_hr", 64, 64);
    conv("conv_last", 3, 64);
  }
  struct fr_err err = {{0}};
  if (fr_st_write_file(path, items, n_items, NULL, NULL, 0, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  for (int i = 0; i < n_items; i++)
    fr_tensor_free((struct fr_tensor *)items[i].t);
  struct fr_ctx *c = NULL;
  struct fr_upscaler *m = NULL;
  if (fr_ctx_new(&(struct fr_ctx_opts){.device = "cpu"}, &c, &err) || fr_upscaler_load(c, path, &m, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  remove(path);
  struct fr_tensor *img = fr_tensor_f32(4, (int64_t[]){1, 512, 512, 3});
  for (int64_t i = 0; i < fr_tensor_numel(img); i++)
    ((float *)img->data)[i] = 0.5f + 0.4f * sinf(0.01f * (float)i);
  int tiles[8] = {256, 512}, nt = 2; /* the smaller first: its peak memory is then its own */
  if (argc > 2) {
    nt = 0;
    for (int i = 2; i < argc && nt < 8; i++)
      tiles[nt++] = atoi(argv[i]);
  }
  printf("%s, 512x512 -> 2048x2048, cpu f32\n", fr_upscaler_describe(m));
  for (int i = 0; i < nt; i++) {
    struct fr_tensor *out = NULL;
    double t0 = now(), c0 = cpu_s();
    if (fr_upscaler_run_tiled(c, m, img, tiles[i], 32, NULL, NULL, &out, &err)) {
      fprintf(stderr, "%s\n", err.msg);
      return 1;
    }
    printf("tile %4d overlap 32: %.1f s wall, %.1f CPU s, peak RSS so far %.2f GiB\n", tiles[i], now() - t0,
           cpu_s() - c0, peak_gib());
    fflush(stdout);
    fr_tensor_free(out);
  }
  fr_tensor_free(img);
  fr_upscaler_free(m);
  fr_ctx_free(c);
  return 0;
}
