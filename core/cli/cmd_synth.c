/* flowrun synth ARCH OUT.safetensors [--dtype f32|f16|bf16] [--seed N]: a full-size checkpoint with
 * random weights in the real single-file layout (nodes/models/synth.h), for benchmarks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/cli/cli.h"
#include "nodes/models/synth.h"

static void fr__synth_usage(FILE *f) {
  fprintf(f, "usage: flowrun synth ARCH OUT.safetensors [--dtype f32|f16|bf16] [--seed N] [--quiet]\n"
             "  ARCH: sd15, sdxl, sdxl-refiner, controlnet-sd15. Writes the real single-file layout with\n"
             "  random weights (std 0.02, norms 1/0) from a fixed seed; F16 by default.\n");
}

struct fr__synth_progress {
  const struct fr_synth_list *l;
  int64_t done_params, total_params;
  int last_pct;
  bool tty; /* stderr is a terminal: redraw one line; otherwise one line per 10% (a plain log) */
};

static void fr__synth_progress(int done, int total, void *user) {
  struct fr__synth_progress *p = user;
  const struct fr_synth_tensor *t = &p->l->t[done - 1];
  int64_t n = 1;
  for (int d = 0; d < t->ndim; d++)
    n *= t->shape[d];
  p->done_params += n;
  int pct = p->total_params ? (int)(100 * p->done_params / p->total_params) : 100;
  if (pct / 10 != p->last_pct / 10 || done == total) {
    fprintf(stderr, "%ssynth: %3d%% (%d/%d tensors)%s", p->tty ? "\r" : "", pct, done, total,
            !p->tty || done == total ? "\n" : "");
    p->last_pct = pct;
  }
}

int fr_cmd_synth(int argc, char **argv) {
  const char *arch_name = NULL, *out = NULL;
  enum fr_dtype dtype = FR_F16;
  unsigned long long seed = 0;
  int quiet = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--dtype") == 0 && i + 1 < argc) {
      const char *d = argv[++i];
      if (!fr_compute_dtype_from_option(d, &dtype)) {
        fprintf(stderr, "flowrun synth: --dtype %s: expected f32, f16 or bf16\n", d);
        return 2;
      }
    } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
      char *end;
      seed = strtoull(argv[++i], &end, 10);
      if (!*argv[i] || *end) {
        fprintf(stderr, "flowrun synth: --seed %s: expected a non-negative integer\n", argv[i]);
        return 2;
      }
    } else if (strcmp(argv[i], "--quiet") == 0) {
      quiet = 1;
    } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      fr__synth_usage(stdout);
      return 0;
    } else if (argv[i][0] == '-' && argv[i][1]) {
      fprintf(stderr, "flowrun synth: unknown or incomplete option %s\n", argv[i]);
      fr__synth_usage(stderr);
      return 2;
    } else if (!arch_name) {
      arch_name = argv[i];
    } else if (!out) {
      out = argv[i];
    } else {
      fprintf(stderr, "flowrun synth: unexpected argument %s\n", argv[i]);
      return 2;
    }
  }
  if (!arch_name || !out) {
    fr__synth_usage(stderr);
    return 2;
  }
  struct fr_err err = {{0}};
  struct fr_synth_arch arch;
  if (fr_synth_arch(arch_name, &arch, &err)) {
    fprintf(stderr, "flowrun synth: %s\n", err.msg);
    return 2;
  }
  struct fr_synth_list *l = NULL;
  if (fr_synth_list_build(&arch, &l, &err)) {
    fprintf(stderr, "flowrun synth: %s\n", err.msg);
    return 1;
  }
  int64_t params = fr_synth_list_params(l);
  if (!quiet)
    fprintf(stderr, "synth: %s, %d tensors, %.3f G parameters, %s -> %s\n", arch.name, l->n,
            (double)params / 1e9, fr_dtype_name(dtype), out);
  struct fr__synth_progress p = {
      .l = l, .total_params = params, .last_pct = -10, .tty = isatty(fileno(stderr)) != 0};
  enum fr_status rc = fr_synth_write(l, out, dtype, seed, quiet ? NULL : fr__synth_progress, &p, &err);
  fr_synth_list_free(l);
  if (rc) {
    fprintf(stderr, "flowrun synth: %s\n", err.msg);
    return 1;
  }
  return 0;
}
