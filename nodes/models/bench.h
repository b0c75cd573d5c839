/* flowrun bench: times full-size model components on a (synthetic or real) checkpoint and prints, per
 * component, the median time over runs, the analytic FLOP count, the achieved GFLOP/s and the process's
 * peak resident memory. A component is one row of the table in bench.c (setup / run / teardown), so
 * the pipeline issue adds its txt2img line as one more row. */
#ifndef FR_MODELS_BENCH_H
#define FR_MODELS_BENCH_H

#include <stdio.h>

#include "core/status.h"

struct fr_bench_opts {
  const char *ckpt;   /* single-file checkpoint (flowrun synth writes one); required for model rows */
  const char *arch;   /* architecture table for FLOP counts: "sd15" (default), "sdxl", "sdxl-refiner" */
  const char *device; /* "cpu" (default) or "cuda" */
  const char *only;   /* comma-separated component names to run (NULL: all but txt2img): sgemm,text,unet,vae,txt2img */
  int threads;        /* 0: all cores */
  int runs;           /* timed runs per component (median printed); 0: 3 */
};

/* Runs the benchmark, printing a table to out. Returns FR_OK, or the first error (with err filled);
 * rows that ran before the error are already printed. */
enum fr_status fr_bench_run(const struct fr_bench_opts *o, FILE *out, struct fr_err *err);

#endif
