/* flowrun bench [--device cpu|cuda] [--dtype f32|f16|bf16] [--only ROWS] [--runs N] [--warmup N] ...
 * (nodes/models/bench.h).
 *
 * Built with -DFR_BENCH_MAIN this file is also a program of its own (flowrun-bench), for machines where the
 * whole CLI cannot be built (the lent GPU machines lack libyaml, sqlite and libpng): BENCHMARKS.md has
 * the build line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cli/cli.h"
#include "nodes/models/bench.h"

static void fr__bench_usage(FILE *f) {
  fprintf(f,
          "usage: flowrun bench [--device cpu|cuda] [--dtype f32|f16|bf16] [--only ROW,...] [--runs N]\n"
          "                     [--warmup N] [--threads N] [--batch N] [--ch N] [--size-div K] [--json]\n"
          "                     [--ckpt SD15.safetensors] [--ckpt-sdxl SDXL.safetensors]\n"
          "                     [--ckpt-controlnet CN.safetensors]\n"
          "  Times full-size components on random weights (built in memory from the real key lists; a\n"
          "  --ckpt* file replaces them for its rows) and prints per row the median and min ms of the timed\n"
          "  runs, the analytic GFLOP, the achieved rate and the peak memory.\n"
          "  rows: sgemm (cpu only), clip-l, unet-sd15, unet-sdxl, controlnet-sd15, vae-512, vae-1024,\n"
          "        txt2img, all; or startup alone: `flowrun --version`, validate and a fully cached run of\n"
          "        the image demo as child processes (--runs, default 20), wall time and peak RSS;\n"
          "        --program PATH times another flowrun binary the same way. Default on cpu: "
          "sgemm,clip-l,unet-sd15,vae-512; on cuda: every row but\n"
          "        sgemm and txt2img.\n"
          "  --dtype: f32 on cpu (its only dtype); f16 by default on cuda (VAE rows then run in bf16)\n"
          "  --runs: 10 on cuda, 3 on cpu (txt2img 1); --warmup: 1 (txt2img 0)\n"
          "  --batch N: every model row's batch (default 2 = CFG, VAE rows 1)\n"
          "  --ch N, --size-div K: shrink the in-memory models (model channels N, multiple of 32) and every\n"
          "        row's latent/image side (divided by K = 2, 4, 8): a quick check, not a measurement\n");
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
  struct fr_bench_opts o = {.device = "cpu", .warmup = -1};
  const char *program = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fr__bench_usage(stdout);
      return 0;
    }
    if (strcmp(a, "--json") == 0) {
      o.json = true;
      continue;
    }
    if (!v || a[0] != '-') {
      fprintf(stderr, "flowrun bench: unexpected or incomplete argument %s\n", a);
      fr__bench_usage(stderr);
      return 2;
    }
    i++;
    int ok = 1;
    if (strcmp(a, "--ckpt") == 0)
      o.ckpt = v;
    else if (strcmp(a, "--ckpt-sdxl") == 0)
      o.ckpt_sdxl = v;
    else if (strcmp(a, "--ckpt-controlnet") == 0)
      o.ckpt_controlnet = v;
    else if (strcmp(a, "--device") == 0)
      o.device = v;
    else if (strcmp(a, "--dtype") == 0)
      o.dtype = v;
    else if (strcmp(a, "--only") == 0)
      o.only = v;
    else if (strcmp(a, "--program") == 0)
      program = v;
    else if (strcmp(a, "--threads") == 0)
      ok = fr__int_arg(a, v, 0, &o.threads);
    else if (strcmp(a, "--runs") == 0)
      ok = fr__int_arg(a, v, 1, &o.runs);
    else if (strcmp(a, "--warmup") == 0)
      ok = fr__int_arg(a, v, 0, &o.warmup);
    else if (strcmp(a, "--batch") == 0)
      ok = fr__int_arg(a, v, 1, &o.batch);
    else if (strcmp(a, "--ch") == 0)
      ok = fr__int_arg(a, v, 1, &o.ch);
    else if (strcmp(a, "--size-div") == 0)
      ok = fr__int_arg(a, v, 1, &o.size_div);
    else {
      fprintf(stderr, "flowrun bench: unknown option %s\n", a);
      fr__bench_usage(stderr);
      return 2;
    }
    if (!ok)
      return 2;
  }
#ifndef FR_BENCH_MAIN
  if (o.only && !strcmp(o.only, "startup"))
    return fr_bench_startup(program, o.runs > 0 ? o.runs : 20);
#endif
  if (program) {
    fprintf(stderr, "flowrun bench: --program times startup only (--only startup)\n");
    return 2;
  }
  struct fr_err err = {{0}};
  enum fr_status rc = fr_bench_run(&o, stdout, &err);
  if (rc) {
    fprintf(stderr, "flowrun bench: %s\n", err.msg);
    return rc == FR_E_INVALID ? 2 : 1;
  }
  return 0;
}

#ifdef FR_BENCH_MAIN
int main(int argc, char **argv) {
  return fr_cmd_bench(argc, argv);
}
#endif
