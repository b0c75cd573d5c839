/* flowrun bench [--ckpt FILE] [--arch sd15] [--threads N] [--runs N] [--device cpu] [--only LIST]
 * (nodes/models/bench.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cli/cli.h"
#include "nodes/models/bench.h"

static void fr__bench_usage(FILE *f) {
  fprintf(f, "usage: flowrun bench [--ckpt FILE] [--arch sd15|sdxl|sdxl-refiner] [--threads N] [--runs N]\n"
             "                     [--device cpu|cuda] [--only sgemm,text,unet,vae,txt2img]\n"
             "  Times full-size components (make a checkpoint with: flowrun synth sd15 sd15.safetensors)\n"
             "  and prints ms (median of runs), GFLOP, GFLOP/s and the process's peak memory.\n");
}

static int fr__int_arg(const char *flag, const char *s, int lo, int *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (!*s || *end || v < lo || v > 1000000) {
    fprintf(stderr, "flowrun bench: %s %s: expected an integer >= %d\n", flag, s, lo);
    return 0;
  }
  *out = (int)v;
  return 1;
}

int fr_cmd_bench(int argc, char **argv) {
  struct fr_bench_opts o = {.arch = "sd15", .device = "cpu", .runs = 3};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fr__bench_usage(stdout);
      return 0;
    }
    if (!v || a[0] != '-') {
      fprintf(stderr, "flowrun bench: unexpected or incomplete argument %s\n", a);
      fr__bench_usage(stderr);
      return 2;
    }
    i++;
    if (strcmp(a, "--ckpt") == 0)
      o.ckpt = v;
    else if (strcmp(a, "--arch") == 0)
      o.arch = v;
    else if (strcmp(a, "--device") == 0)
      o.device = v;
    else if (strcmp(a, "--only") == 0)
      o.only = v;
    else if (strcmp(a, "--threads") == 0) {
      if (!fr__int_arg(a, v, 0, &o.threads))
        return 2;
    } else if (strcmp(a, "--runs") == 0) {
      if (!fr__int_arg(a, v, 1, &o.runs))
        return 2;
    } else {
      fprintf(stderr, "flowrun bench: unknown option %s\n", a);
      fr__bench_usage(stderr);
      return 2;
    }
  }
  struct fr_err err = {{0}};
  enum fr_status rc = fr_bench_run(&o, stdout, &err);
  if (rc) {
    fprintf(stderr, "flowrun bench: %s\n", err.msg);
    return rc == FR_E_INVALID ? 2 : 1;
  }
  return 0;
}
