/* Noise schedules: ComfyUI's by name, and diffusers' timestep spacings.
 *
 * References for the definitions (read, not copied): ComfyUI comfy/samplers.py (normal, simple,
 * ddim_uniform, sgm_uniform), k-diffusion (karras, exponential), diffusers' EulerDiscreteScheduler,
 * DPMSolverMultistepScheduler, DDIMScheduler, LCMScheduler set_timesteps. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nodes/sampling/sampling.h"

void fr_model_sched_sd(struct fr_model_sched *m) {
  /* scaled_linear: betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2 */
  const double b0 = sqrt(0.00085), b1 = sqrt(0.012);
  double ac = 1.0;
  for (int i = 0; i < FR_TRAIN_STEPS; i++) {
    double b = b0 + (b1 - b0) * i / (FR_TRAIN_STEPS - 1);
    ac *= 1.0 - b * b;
    m->alphas_cumprod[i] = ac;
    m->sigmas[i] = sqrt((1.0 - ac) / ac);
    m->log_sigmas[i] = log(m->sigmas[i]);
  }
}

double fr_sigma_to_t(const struct fr_model_sched *m, double sigma) {
  if (sigma <= m->sigmas[0])
    return 0.0; /* diffusers clamps the interpolation weight to [0, 1] */
  if (sigma >= m->sigmas[FR_TRAIN_STEPS - 1])
    return FR_TRAIN_STEPS - 1;
  double ls = log(sigma);
  int lo = 0, hi = FR_TRAIN_STEPS - 1; /* log_sigmas increase: find lo with ls in [lo, lo+1] */
  while (hi - lo > 1) {
    int mid = (lo + hi) / 2;
    if (m->log_sigmas[mid] <= ls)
      lo = mid;
    else
      hi = mid;
  }
  double w = (m->log_sigmas[lo] - ls) / (m->log_sigmas[lo] - m->log_sigmas[lo + 1]);
  if (w < 0)
    w = 0;
  if (w > 1)
    w = 1;
  return (1 - w) * lo + w * (lo + 1);
}

double fr_t_to_sigma(const struct fr_model_sched *m, double t) {
  if (t <= 0)
    return m->sigmas[0];
  if (t >= FR_TRAIN_STEPS - 1)
    return m->sigmas[FR_TRAIN_STEPS - 1];
  int lo = (int)floor(t);
  double w = t - lo;
  return lo + 1 < FR_TRAIN_STEPS ? (1 - w) * m->sigmas[lo] + w * m->sigmas[lo + 1] : m->sigmas[lo];
}

/* ComfyUI's sigma(t): log-sigma interpolation (its ModelSamplingDiscrete.sigma). */
static double fr__comfy_sigma(const struct fr_model_sched *m, double t) {
  if (t < 0)
    t = 0;
  if (t > FR_TRAIN_STEPS - 1)
    t = FR_TRAIN_STEPS - 1;
  int lo = (int)floor(t), hi = (int)ceil(t);
  double w = t - lo;
  return exp((1 - w) * m->log_sigmas[lo] + w * m->log_sigmas[hi]);
}

const char *const fr_schedule_names[] = {"normal",  "karras",          "exponential", "sgm_uniform",
                                         "simple",  "ddim_uniform",    "linspace",    "linspace_karras",
                                         "leading", "leading_offset0", "trailing",    "lcm",
                                         NULL};

static double fr__linspace(double a, double b, int n, int i) { return n == 1 ? a : a + (b - a) * i / (n - 1); }

/* Fills sig[0..count) (count <= FR_MAX_STEPS + 1) and t[] for `steps` sampling steps; returns the number
 * of sigmas written (steps + 1), or -1 for an unknown name. */
static int fr__make(const struct fr_model_sched *m, const char *name, int steps, const struct fr_schedule_opts *o,
                    double *sig, double *t) {
  const double smin = m->sigmas[0], smax = m->sigmas[FR_TRAIN_STEPS - 1];
  int n = 0;
  bool karras = strcmp(name, "karras") == 0 || strcmp(name, "linspace_karras") == 0;
  if (karras || strcmp(name, "exponential") == 0) {
    /* linspace_karras: diffusers' use_karras_sigmas, the same sigmas between the training sigma min/max
     * (its _convert_to_karras); what differs is the model timestep (rounded for DPM-Solver/UniPC by opts). */
    const double rho = 7.0;
    for (int i = 0; i < steps; i++) {
      double r = fr__linspace(0, 1, steps, i);
      if (karras) {
        double a = pow(smax, 1 / rho), b = pow(smin, 1 / rho);
        sig[n] = pow(a + r * (b - a), rho);
      } else {
        sig[n] = exp(fr__linspace(log(smax), log(smin), steps, i));
      }
      t[n] = fr_sigma_to_t(m, sig[n]);
      n++;
    }
  } else if (strcmp(name, "normal") == 0 || strcmp(name, "sgm_uniform") == 0) {
    double start = fr_sigma_to_t(m, smax), end = fr_sigma_to_t(m, smin);
    if (name[0] == 's') { /* linspace(start, end, steps + 1)[:-1] */
      for (int i = 0; i < steps; i++)
        t[n] = fr__linspace(start, end, steps + 1, i), sig[n] = fr__comfy_sigma(m, t[n]), n++;
    } else {
      for (int i = 0; i < steps; i++)
        t[n] = fr__linspace(start, end, steps, i), sig[n] = fr__comfy_sigma(m, t[n]), n++;
    }
  } else if (strcmp(name, "simple") == 0) {
    double ss = (double)FR_TRAIN_STEPS / steps;
    for (int i = 0; i < steps; i++) {
      int idx = FR_TRAIN_STEPS - 1 - (int)(i * ss);
      sig[n] = m->sigmas[idx], t[n] = idx, n++;
    }
  } else if (strcmp(name, "ddim_uniform") == 0) {
    /* every ss-th training sigma from index 1, highest first */
    int ss = FR_TRAIN_STEPS / steps > 1 ? FR_TRAIN_STEPS / steps : 1;
    int idx[FR_TRAIN_STEPS], k = 0;
    for (int x = 1; x < FR_TRAIN_STEPS; x += ss)
      idx[k++] = x;
    for (int i = k - 1; i >= 0 && n < FR_MAX_STEPS; i--)
      sig[n] = m->sigmas[idx[i]], t[n] = idx[i], n++;
  } else if (strcmp(name, "linspace") == 0) {
    for (int i = 0; i < steps; i++) {
      if (o->round_timesteps) /* DPM-Solver family: linspace(0, 999, steps + 1).round(), reversed, last dropped */
        t[n] = round(fr__linspace(0, FR_TRAIN_STEPS - 1, steps + 1, steps - i));
      else /* Euler family: linspace(0, 999, steps), reversed */
        t[n] = fr__linspace(0, FR_TRAIN_STEPS - 1, steps, steps - 1 - i);
      sig[n] = fr_t_to_sigma(m, t[n]), n++;
    }
  } else if (strcmp(name, "leading") == 0 || strcmp(name, "leading_offset0") == 0) {
    int ratio = FR_TRAIN_STEPS / steps, offset = name[7] ? 0 : o->steps_offset;
    for (int i = 0; i < steps; i++)
      t[n] = (double)((steps - 1 - i) * ratio + offset), sig[n] = fr_t_to_sigma(m, t[n]), n++;
  } else if (strcmp(name, "trailing") == 0) {
    double ratio = (double)FR_TRAIN_STEPS / steps;
    for (int i = 0; i < steps; i++)
      t[n] = round(FR_TRAIN_STEPS - i * ratio) - 1, sig[n] = fr_t_to_sigma(m, t[n]), n++;
  } else if (strcmp(name, "lcm") == 0) {
    /* LCM: the 50 "origin" timesteps 19, 39, ..., 999, sampled at floor(linspace(0, 50, steps)) */
    const int origin = 50, ratio = FR_TRAIN_STEPS / origin;
    for (int i = 0; i < steps; i++) {
      int k = (int)floor((double)origin * i / steps);
      t[n] = (double)((origin - k) * ratio - 1), sig[n] = m->sigmas[(int)t[n]], n++;
    }
  } else {
    return -1;
  }
  return n;
}

enum fr_status fr_schedule_make(const struct fr_model_sched *m, const char *name, int steps, double denoise,
                                const struct fr_schedule_opts *opts, struct fr_schedule *out, struct fr_err *err) {
  static const struct fr_schedule_opts defaults = {0};
  const struct fr_schedule_opts *o = opts ? opts : &defaults;
  if (steps < 1 || steps > FR_MAX_STEPS)
    return fr_errf(err, FR_E_INVALID, "steps %d out of range [1, %d]", steps, FR_MAX_STEPS);
  if (!(denoise > 0 && denoise <= 1))
    return fr_errf(err, FR_E_INVALID, "denoise %g out of range (0, 1]", denoise);
  int total = denoise < 1 ? (int)(steps / denoise) : steps;
  if (total > FR_MAX_STEPS)
    return fr_errf(err, FR_E_INVALID, "steps / denoise = %d exceeds %d", total, FR_MAX_STEPS);
  double s_buf[FR_MAX_STEPS + 1], t_buf[FR_MAX_STEPS + 1];
  int n = fr__make(m, name, total, o, s_buf, t_buf);
  if (n < 0) {
    char list[256] = "";
    for (int i = 0; fr_schedule_names[i]; i++)
      snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", fr_schedule_names[i]);
    return fr_errf(err, FR_E_INVALID, "unknown schedule '%s' (one of: %s)", name, list);
  }
  int skip = n - steps; /* denoise < 1: keep the last `steps` points */
  if (skip < 0)
    skip = 0;
  memset(out, 0, sizeof *out);
  out->steps = n - skip;
  out->round_timesteps = o->round_timesteps;
  for (int i = 0; i < out->steps; i++) {
    out->sigmas[i] = s_buf[skip + i];
    out->timesteps[i] = o->round_timesteps ? round(t_buf[skip + i]) : t_buf[skip + i];
  }
  if (o->final == FR_FINAL_SIGMA_MIN) {
    out->sigmas[out->steps] = m->sigmas[0];
    out->timesteps[out->steps] = 0;
  } else {
    out->sigmas[out->steps] = 0;
    out->timesteps[out->steps] = 0;
  }
  return FR_OK;
}

void fr_sampling_plan_make(const char *sampler, const char *schedule, struct fr_sampling_plan *out) {
  /* "lcm" is diffusers' too, but its sampler rules are its own (the boundary condition below) */
  static const char *const diffusers_names[] = {"linspace", "linspace_karras", "leading", "leading_offset0",
                                                "trailing"};
  memset(out, 0, sizeof *out);
  bool bh2 = strcmp(sampler, "uni_pc_bh2") == 0;
  out->sampler = bh2 ? "uni_pc" : sampler;
  out->uni_pc_variant = bh2 ? 2 : 1;
  for (size_t i = 0; i < sizeof diffusers_names / sizeof diffusers_names[0]; i++)
    out->diffusers = out->diffusers || strcmp(schedule, diffusers_names[i]) == 0;
  const char *s = out->sampler;
  bool dpm_solver = strncmp(s, "dpmpp", 5) == 0 || strcmp(s, "uni_pc") == 0;
  bool k_sampler = !strcmp(s, "euler") || !strcmp(s, "euler_ancestral") || !strcmp(s, "heun") ||
                   !strcmp(s, "lms") || !strcmp(s, "dpm_2");
  bool leading = strncmp(schedule, "leading", 7) == 0;
  out->opts.steps_offset = strcmp(schedule, "leading") == 0 ? 1 : 0; /* SD's scheduler configs */
  out->opts.final = out->diffusers && !strcmp(s, "ddim") ? FR_FINAL_SIGMA_MIN : FR_FINAL_ZERO;
  out->opts.round_timesteps = out->diffusers && dpm_solver;
  out->lcm_boundary = !strcmp(s, "lcm") && !strcmp(schedule, "lcm");
  out->sigma_start = out->diffusers && !leading && k_sampler;
}
