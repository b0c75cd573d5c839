/* flowrun bench: times full-size model components on random weights and prints, per row, the median and
 * min time of the timed runs, the analytic FLOP count, the achieved rate and the peak memory.
 *
 * Rows (bench.c has the table): sgemm (OpenBLAS, cpu only), clip-l, unet-sd15, unet-sdxl, controlnet-sd15,
 * vae-512, vae-1024, txt2img. Each model row builds its component from the synth key list of the real
 * architecture (nodes/models/synth.h), filled with random F16 values and serialised into an in-memory
 * safetensors blob that the normal loader reads, so no multi-GB file is written; a checkpoint file given
 * for the component (one written by `flowrun synth`, or a real one) is used instead. Every row runs in a
 * fresh context; each run is timed from the call into the model until fr_ctx_sync returns. */
#ifndef FR_MODELS_BENCH_H
#define FR_MODELS_BENCH_H

#include <stdbool.h>
#include <stdio.h>

#include "core/status.h"

struct fr_bench_opts {
  const char *ckpt;            /* SD1.5 single file: clip-l, unet-sd15, vae-*, txt2img; NULL: in memory */
  const char *ckpt_sdxl;       /* SDXL base single file: unet-sdxl; NULL: in memory */
  const char *ckpt_controlnet; /* ControlNet file (control_model.* or diffusers): controlnet-sd15 */
  const char *device;          /* "cpu" (default) or "cuda" */
  const char *dtype;           /* "f32", "f16", "bf16"; NULL: f32 on cpu, f16 on cuda (cpu: f32 only) */
  const char *only;            /* comma-separated rows (or "all"); NULL: the device's default rows */
  int threads;                 /* cpu threads; 0: all cores */
  int runs;                    /* timed runs per row; 0: 10 on cuda, 3 on cpu (txt2img: 1) */
  int warmup;                  /* untimed runs before them; < 0: 1 (txt2img: 0) */
  int batch;                   /* 0: each row's own (2: classifier-free guidance; VAE rows 1) */
  int ch;                      /* 0: full size; else the UNet/ControlNet model_channels for in-memory
                                  weights (VAE and CLIP widths scaled alike): a multiple of 32 */
  int size_div;                /* 0 or 1: full size; 2, 4 or 8 divides every row's latent/image side */
  bool json;                   /* one JSON object per row (JSON Lines) instead of the table */
};

/* Runs the selected rows, printing to out. Bad options (unknown row or device, a dtype the device does not
 * compute in, out-of-range sizes) are FR_E_INVALID before any work; an unavailable device is the context's
 * error (FR_E_DEVICE). A row that fails is reported on its line and the next row still runs; the return
 * value is then the first row's error (err filled, prefixed with the row's name). */
enum fr_status fr_bench_run(const struct fr_bench_opts *o, FILE *out, struct fr_err *err);

#endif
