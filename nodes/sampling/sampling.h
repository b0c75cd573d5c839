/* Noise schedules and samplers, k-diffusion style (what ComfyUI runs).
 *
 * A sampler integrates the probability-flow ODE (or SDE) from the highest noise level to the lowest over
 * a schedule of sigmas, in VE space: x = x0 + sigma * eps. It sees the model only through a denoiser
 * D(x, sigma, t) -> x0 prediction; wrapping an eps- or v-prediction UNet into a denoiser (scaling the
 * input by 1/sqrt(sigma^2+1), choosing the model timestep t) is the caller's business (fr_denoise_*
 * helpers below do the arithmetic). Every sampler of diffusers' schedulers that SD users meet is
 * reproduced exactly by one sampler name plus one schedule: see docs/sampling.md and
 * tests/unit/test_sched_golden.c. */
#ifndef FR_SAMPLING_H
#define FR_SAMPLING_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "nodes/sampling/torch_rng.h"

#define FR_TRAIN_STEPS 1000

/* The training noise levels of a discrete-time model (SD 1.x/2.x/XL: scaled_linear betas
 * 0.00085..0.012 over 1000 steps). */
struct fr_model_sched {
  double alphas_cumprod[FR_TRAIN_STEPS];
  double sigmas[FR_TRAIN_STEPS];     /* sqrt((1 - a) / a), increasing with t */
  double log_sigmas[FR_TRAIN_STEPS];
};
void fr_model_sched_sd(struct fr_model_sched *m);

/* Timestep for a sigma by interpolating log-sigma between training steps (diffusers' _sigma_to_t and
 * ComfyUI's timestep()); sigma for a fractional timestep by linear interpolation of sigma (diffusers'
 * np.interp). */
double fr_sigma_to_t(const struct fr_model_sched *m, double sigma);
double fr_t_to_sigma(const struct fr_model_sched *m, double t);

/* A schedule: steps + 1 sigmas (decreasing; the last is the final noise level, usually 0) and, for
 * each of the first `steps` sigmas, the timestep handed to the model there. Samplers that evaluate the
 * model between schedule points (heun's second stage, dpm_2's midpoint) get the timestep for those
 * sigmas from fr_sigma_to_t, except where a sampler's definition says otherwise. */
#define FR_MAX_STEPS 1000
struct fr_schedule {
  int steps;
  double sigmas[FR_MAX_STEPS + 1];
  double timesteps[FR_MAX_STEPS + 1]; /* timesteps[steps] is the final sigma's timestep (ddim/ddpm) */
  bool round_timesteps;               /* model timesteps are rounded to integers (DPM-Solver family) */
};

/* Builds a schedule by name:
 *   ComfyUI's: "normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform";
 *   diffusers' timestep spacings: "linspace", "leading" (steps_offset from opts), "leading_offset0"
 *   (steps_offset 0 whatever opts say: diffusers' default config), "trailing", "linspace_karras" (the karras
 *   sigmas, as diffusers' use_karras_sigmas; which timesteps the model gets is opts' round_timesteps), and
 *   "lcm" (LCMScheduler's timesteps).
 * `final` chooses the last sigma: FR_FINAL_ZERO (default everywhere) or FR_FINAL_SIGMA_MIN (diffusers'
 * DDIM/DDPM with set_alpha_to_one=False end at alphas_cumprod[0]). denoise < 1 keeps the last
 * round(steps) sigmas of a longer schedule (img2img), as ComfyUI does. Errors name the schedule and list
 * the valid ones. */
enum fr_final_sigma { FR_FINAL_ZERO, FR_FINAL_SIGMA_MIN };
struct fr_schedule_opts {
  int steps_offset;            /* diffusers' steps_offset for "leading" (SD: 1) */
  enum fr_final_sigma final;
  bool round_timesteps;        /* DPM-Solver/UniPC round karras timesteps to integers */
};
enum fr_status fr_schedule_make(const struct fr_model_sched *m, const char *name, int steps, double denoise,
                                const struct fr_schedule_opts *opts, struct fr_schedule *out, struct fr_err *err);
/* The schedule names, NULL-terminated (for enum inputs and messages). */
extern const char *const fr_schedule_names[];

/* What a graph's (sampler, schedule) pair runs: the Sampler and Refiner nodes' rules in one place, so
 * tests check the pairs a user writes. ComfyUI's schedule names give ComfyUI's KSampler (model timesteps
 * as sigma_to_t gives them, fractional); diffusers' names give the diffusers scheduler of docs/sampling.md:
 *   - DPM-Solver (dpmpp_*) and UniPC hand integer timesteps to the model (diffusers rounds
 *     _sigma_to_t(sigma) in set_timesteps), so "linspace_karras" with dpmpp_2m is
 *     DPMSolverMultistepScheduler(use_karras_sigmas=True) while "karras" stays ComfyUI's;
 *   - "leading" uses steps_offset 1 (SD's shipped scheduler configs), "leading_offset0" diffusers' default 0;
 *   - ddim with a diffusers spacing ends at alphas_cumprod[0] (set_alpha_to_one=False);
 *   - lcm with the "lcm" schedule applies LCMScheduler's boundary condition;
 *   - the initial noise: noise * sigma_max for diffusers' Euler/Heun/LMS/KDPM2 with linspace or trailing
 *     spacing (their init_noise_sigma), noise * sqrt(1 + sigma_max^2) otherwise (ComfyUI's max_denoise).
 * `sampler` must be a name of fr_pipe_sampler_names ("uni_pc_bh2" runs "uni_pc" with bh2). */
struct fr_sampling_plan {
  const char *sampler; /* the fr_samplers entry to run */
  int uni_pc_variant;  /* for fr_sampler_io */
  bool lcm_boundary;   /* for fr_sampler_io */
  bool diffusers;      /* the schedule is one of diffusers' timestep spacings (not "lcm") */
  bool sigma_start;    /* a fresh txt2img start is noise * sigma_max, not noise * sqrt(1 + sigma_max^2) */
  struct fr_schedule_opts opts; /* for fr_schedule_make */
};
void fr_sampling_plan_make(const char *sampler, const char *schedule, struct fr_sampling_plan *out);

/* ---- samplers ---- */

/* Denoiser: writes the x0 prediction for x (n floats, VE space) at noise level sigma with model
 * timestep t. Returns FR_OK or an error (also FR_E_CANCELLED). */
typedef enum fr_status (*fr_denoiser_fn)(void *user, const float *x, int64_t n, double sigma, double t,
                                         float *denoised);
/* Fills out[0..n) with standard normal noise for step `step` (stochastic samplers). */
typedef enum fr_status (*fr_noise_fn)(void *user, int step, float *out, int64_t n);
/* Called after each step; returns FR_E_CANCELLED to stop. x is the current latent. */
typedef enum fr_status (*fr_progress_fn)(void *user, int step, int steps, const float *x, const float *denoised);

struct fr_sampler_io {
  fr_denoiser_fn denoise;
  void *denoise_user;
  fr_noise_fn noise;          /* NULL: a torch generator seeded with `seed` (ComfyUI's convention) */
  void *noise_user;
  uint64_t seed;
  fr_progress_fn progress;    /* may be NULL */
  void *progress_user;
  /* For tests: called after every model evaluation with the state a diffusers scheduler would hold after
   * the matching step() call (two per step for heun and dpm_2). May be NULL. */
  void (*substep)(void *user, int k, const float *x, int64_t n);
  void *substep_user;
  const struct fr_model_sched *model; /* for sigma -> t of intermediate evaluations */
  double eta;                 /* ancestral / SDE noise amount; ComfyUI's default 1 */
  int uni_pc_variant;         /* 1: bh1 (ComfyUI's uni_pc), 2: bh2 (diffusers' default, ComfyUI's uni_pc_bh2) */
  bool lcm_boundary;          /* lcm: apply LCM's c_skip/c_out boundary condition (diffusers' LCMScheduler) */
};

struct fr_sampler_info {
  const char *name;
  bool stochastic;
  int evals_per_step; /* model evaluations per step (heun, dpm_2: 2) */
  enum fr_status (*run)(const struct fr_sampler_io *io, const struct fr_schedule *s, float *x, int64_t n,
                        struct fr_err *err);
  const char *help;
};
extern const struct fr_sampler_info fr_samplers[];
extern const int fr_n_samplers;
const struct fr_sampler_info *fr_sampler_find(const char *name);

/* Runs sampler `name` over schedule s: x (n floats, VE space, already noised to sigmas[0]) is
 * overwritten with the result at sigmas[steps]. Errors: unknown sampler (lists valid ones), allocation,
 * or whatever the denoiser/noise/progress callbacks return. */
enum fr_status fr_sample(const char *name, const struct fr_sampler_io *io, const struct fr_schedule *s, float *x,
                         int64_t n, struct fr_err *err);

#endif
