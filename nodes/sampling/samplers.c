/* Samplers over a sigma schedule, in VE space (x = x0 + sigma * eps).
 *
 * Definitions follow k-diffusion / ComfyUI and, where a diffusers scheduler is the reference, are the
 * same update rewritten for VE space (a VP state x_vp is x_ve / sqrt(1 + sigma^2); DPM-Solver's lambda
 * = log(alpha / sigma_vp) is -log(sigma_ve)). Sources read: k-diffusion sampling.py, ComfyUI
 * comfy/k_diffusion/sampling.py and uni_pc.py, diffusers' scheduling_*.py. No code was copied. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "nodes/sampling/sampling.h"

/* Work buffers and the plumbing every sampler shares. */
struct fr__run {
  const struct fr_sampler_io *io;
  const struct fr_schedule *s;
  int64_t n;
  int evals;
  struct fr_torch_gen gen; /* ComfyUI's convention: a generator seeded with the sampler seed */
  struct fr_err *err;
};

static enum fr_status fr__denoise(struct fr__run *r, const float *x, double sigma, double t, float *out) {
  enum fr_status rc = r->io->denoise(r->io->denoise_user, x, r->n, sigma, t, out);
  if (rc)
    return rc == FR_E_CANCELLED ? rc : fr_err_prefix(r->err, rc, "sampler step at sigma %g: ", sigma);
  return FR_OK;
}

static void fr__substep(struct fr__run *r, const float *x) {
  if (r->io->substep)
    r->io->substep(r->io->substep_user, r->evals, x, r->n);
  r->evals++;
}

static enum fr_status fr__noise(struct fr__run *r, int step, float *out) {
  if (r->io->noise)
    return r->io->noise(r->io->noise_user, step, out, r->n);
  fr_torch_randn(&r->gen, out, r->n);
  return FR_OK;
}

/* End of step i: the test hook sees the state, the caller's progress callback may cancel. */
static enum fr_status fr__step_done(struct fr__run *r, int i, const float *x, const float *den) {
  fr__substep(r, x);
  if (!r->io->progress)
    return FR_OK;
  return r->io->progress(r->io->progress_user, i + 1, r->s->steps, x, den);
}

/* Model timestep for an intermediate sigma. */
static double fr__t_of(struct fr__run *r, double sigma) { return fr_sigma_to_t(r->io->model, sigma); }

/* k work vectors of n floats in one block; NULL (with the error set) when out of memory. */
static float *fr__bufs(struct fr__run *r, int k) {
  float *p = fr_malloc(sizeof(float) * (size_t)r->n * (size_t)k);
  if (!p)
    fr_errf(r->err, FR_E_NOMEM, "out of memory in sampler (%d x %lld floats)", k, (long long)r->n);
  return p;
}

#define FR_TRY(expr)                                                                                      \
  do {                                                                                                    \
    rc = (expr);                                                                                          \
    if (rc)                                                                                               \
      goto done;                                                                                          \
  } while (0)

/* euler (and ddim, which is the same update for eta = 0): x += (x - D) / sigma * (sigma_next - sigma). */
static enum fr_status fr__euler(struct fr__run *r, float *x) {
  const struct fr_schedule *s = r->s;
  enum fr_status rc = FR_OK;
  float *den = fr__bufs(r, 1);
  if (!den)
    return FR_E_NOMEM;
  for (int i = 0; i < s->steps; i++) {
    double sig = s->sigmas[i], next = s->sigmas[i + 1];
    FR_TRY(fr__denoise(r, x, sig, s->timesteps[i], den));
    for (int64_t k = 0; k < r->n; k++)
      x[k] = (float)(x[k] + (x[k] - den[k]) / sig * (next - sig));
    FR_TRY(fr__step_done(r, i, x, den));
  }
done:
  fr_free(den);
  return rc;
}

/* k-diffusion's ancestral step split: go down to sigma_down deterministically, add sigma_up noise. */
static void fr__ancestral(double from, double to, double eta, double *down, double *up) {
  if (eta == 0 || to == 0) {
    *down = to;
    *up = 0;
    return;
  }
  double u = eta * sqrt(to * to * (from * from - to * to) / (from * from));
  *up = u < to ? u : to;
  *down = sqrt(to * to - *up * *up);
}

static enum fr_status fr__euler_ancestral(struct fr__run *r, float *x) {
  const struct fr_schedule *s = r->s;
  enum fr_status rc = FR_OK;
  float *den = fr__bufs(r, 2), *noise = den + r->n;
  if (!den)
    return FR_E_NOMEM;
  for (int i = 0; i < s->steps; i++) {
    double sig = s->sigmas[i], down, up;
    fr__ancestral(sig, s->sigmas[i + 1], r->io->eta, &down, &up);
    FR_TRY(fr__denoise(r, x, sig, s->timesteps[i], den));
    for (int64_t k = 0; k < r->n; k++)
      x[k] = (float)(x[k] + (x[k] - den[k]) / sig * (down - sig));
    if (s->sigmas[i + 1] > 0 && up > 0) {
      FR_TRY(fr__noise(r, i, noise));
      for (int64_t k = 0; k < r->n; k++)
        x[k] = (float)(x[k] + noise[k] * up);
    }
    FR_TRY(fr__step_done(r, i, x, den));
  }
done:
  fr_free(den);
  return rc;
}

/* heun (second stage at sigma_next) and dpm_2 (second stage at the log-midpoint); the last step to
 * sigma 0 is a plain Euler step in both. */
static enum fr_status fr__two_stage(struct fr__run *r, float *x, bool midpoint) {
  const struct fr_schedule *s = r->s;
  enum fr_status rc = FR_OK;
  float *den = fr__bufs(r, 3), *d = den + r->n, *x2 = d + r->n;
  if (!den)
    return FR_E_NOMEM;
  for (int i = 0; i < s->steps; i++) {
    double sig = s->sigmas[i], next = s->sigmas[i + 1];
    FR_TRY(fr__denoise(r, x, sig, s->timesteps[i], den));
    for (int64_t k = 0; k < r->n; k++)
      d[k] = (float)((x[k] - den[k]) / sig);
    if (next == 0) {
      for (int64_t k = 0; k < r->n; k++)
        x[k] = (float)(x[k] + d[k] * (next - sig));
      FR_TRY(fr__step_done(r, i, x, den));
      continue;
    }
    double mid = midpoint ? exp(0.5 * (log(sig) + log(next))) : next;
    double t2 = midpoint ? fr__t_of(r, mid) : s->timesteps[i + 1];
    for (int64_t k = 0; k < r->n; k++)
      x2[k] = (float)(x[k] + d[k] * (mid - sig));
    fr__substep(r, x2);
    FR_TRY(fr__denoise(r, x2, mid, t2, den));
    for (int64_t k = 0; k < r->n; k++) {
      double d2 = (x2[k] - den[k]) / mid;
      x[k] = midpoint ? (float)(x[k] + d2 * (next - sig)) : (float)(x[k] + 0.5 * (d[k] + d2) * (next - sig));
    }
    FR_TRY(fr__step_done(r, i, x, den));
  }
done:
  fr_free(den);
  return rc;
}
static enum fr_status fr__heun(struct fr__run *r, float *x) { return fr__two_stage(r, x, false); }
static enum fr_status fr__dpm_2(struct fr__run *r, float *x) { return fr__two_stage(r, x, true); }

/* Integral over [sig[i], sig[i+1]] of the Lagrange basis polynomial j through sig[i], sig[i-1], ...,
 * sig[i-order+1]: the linear multistep coefficient. The polynomial has degree < 4, so it is expanded and
 * integrated exactly (diffusers and k-diffusion use numerical quadrature, equal to ~1e-10). */
static double fr__lms_coeff(int order, const double *sig, int i, int j) {
  double poly[4] = {1, 0, 0, 0}; /* coefficients of tau^0..tau^3 */
  double denom = 1;
  for (int k = 0; k < order; k++) {
    if (k == j)
      continue;
    double root = sig[i - k];
    for (int p = 3; p >= 1; p--) /* poly *= (tau - root) */
      poly[p] = poly[p - 1] - root * poly[p];
    poly[0] = -root * poly[0];
    denom *= sig[i - j] - root;
  }
  double a = sig[i], b = sig[i + 1], integral = 0;
  for (int p = 0; p < 4; p++)
    integral += poly[p] * (pow(b, p + 1) - pow(a, p + 1)) / (p + 1);
  return integral / denom;
}

static enum fr_status fr__lms(struct fr__run *r, float *x) {
  enum { ORDER = 4 };
  const struct fr_schedule *s = r->s;
  enum fr_status rc = FR_OK;
  float *den = fr__bufs(r, 1 + ORDER), *ds = den + r->n; /* ds: ring of the last derivatives */
  if (!den)
    return FR_E_NOMEM;
  for (int i = 0; i < s->steps; i++) {
    double sig = s->sigmas[i];
    FR_TRY(fr__denoise(r, x, sig, s->timesteps[i], den));
    float *d = ds + (size_t)(i % ORDER) * (size_t)r->n;
    for (int64_t k = 0; k < r->n; k++)
      d[k] = (float)((x[k] - den[k]) / sig);
    int order = i + 1 < ORDER ? i + 1 : ORDER;
    for (int j = 0; j < order; j++) { /* j = 0: the newest derivative */
      double c = fr__lms_coeff(order, s->sigmas, i, j);
      const float *dj = ds + (size_t)((i - j) % ORDER) * (size_t)r->n;
      for (int64_t k = 0; k < r->n; k++)
        x[k] = (float)(x[k] + c * dj[k]);
    }
    FR_TRY(fr__step_done(r, i, x, den));
  }
done:
  fr_free(den);
  return rc;
}

/* DPM-Solver++(2M): multistep second order in lambda = -log(sigma); first order on the first step and
 * on the final step to sigma 0 (diffusers' lower_order_final). */
static enum fr_status fr__dpmpp_2m(struct fr__run *r, float *x) {
  const struct fr_schedule *s = r->s;
  enum fr_status rc = FR_OK;
  float *den = fr__bufs(r, 2), *old = den + r->n;
  if (!den)
    return FR_E_NOMEM;
  for (int i = 0; i < s->steps; i++) {
    double sig = s->sigmas[i], next = s->sigmas[i + 1];
    FR_TRY(fr__denoise(r, x, sig, s->timesteps[i], den));
    if (next == 0) {
      memcpy(x, den, sizeof(float) * (size_t)r->n);
    } else {
      double h = log(sig) - log(next), ratio = next / sig, c = -expm1(-h);
      if (i == 0) {
        for (int64_t k = 0; k < r->n; k++)
          x[k] = (float)(ratio * x[k] + c * den[k]);
      } else {
        double h_last = log(s->sigmas[i - 1]) - log(sig), q = 1.0 / (2.0 * (h_last / h));
        for (int64_t k = 0; k < r->n; k++)
          x[k] = (float)(ratio * x[k] + c * ((1 + q) * den[k] - q * old[k]));
      }
    }
    memcpy(old, den, sizeof(float) * (size_t)r->n);
    FR_TRY(fr__step_done(r, i, x, den));
  }
done:
  fr_free(den);
  return rc;
}

/* DPM-Solver++(2M) SDE, midpoint variant, eta = io->eta (1 by default). */
static enum fr_status fr__dpmpp_2m_sde(struct fr__run *r, float *x) {
  const struct fr_schedule *s = r->s;
  const double eta = r->io->eta;
  enum fr_status rc = FR_OK;
  float *den = fr__bufs(r, 3), *old = den + r->n, *noise = old + r->n;
  if (!den)
    return FR_E_NOMEM;
  double h_last = 0;
  for (int i = 0; i < s->steps; i++) {
    double sig = s->sigmas[i], next = s->sigmas[i + 1];
    FR_TRY(fr__denoise(r, x, sig, s->timesteps[i], den));
    if (next == 0) {
      memcpy(x, den, sizeof(float) * (size_t)r->n);
    } else {
      double h = log(sig) - log(next), eh = eta * h;
      double a = next / sig * exp(-eh), b = -expm1(-h - eh);
      double corr = i > 0 ? 0.5 * b / (h_last / h) : 0;
      double nz = eta ? next * sqrt(-expm1(-2 * eh)) : 0;
      if (nz)
        FR_TRY(fr__noise(r, i, noise));
      for (int64_t k = 0; k < r->n; k++) {
        double v = a * x[k] + b * den[k];
        if (i > 0)
          v += corr * (den[k] - old[k]);
        if (nz)
          v += nz * noise[k];
        x[k] = (float)v;
      }
      h_last = h;
    }
    memcpy(old, den, sizeof(float) * (size_t)r->n);
    FR_TRY(fr__step_done(r, i, x, den));
  }
done:
  fr_free(den);
  return rc;
}

/* DDPM ancestral step with the "fixed_small" posterior variance, computed in VP space from the two
 * noise levels (alpha_cumprod = 1 / (1 + sigma^2)). No noise on the final step. */
static enum fr_status fr__ddpm(struct fr__run *r, float *x) {
  const struct fr_schedule *s = r->s;
  enum fr_status rc = FR_OK;
  float *den = fr__bufs(r, 2), *noise = den + r->n;
  if (!den)
    return FR_E_NOMEM;
  for (int i = 0; i < s->steps; i++) {
    double sig = s->sigmas[i], next = s->sigmas[i + 1];
    FR_TRY(fr__denoise(r, x, sig, s->timesteps[i], den));
    double a_t = 1 / (1 + sig * sig), a_prev = 1 / (1 + next * next);
    double cur_alpha = a_t / a_prev, cur_beta = 1 - cur_alpha, beta_t = 1 - a_t, beta_prev = 1 - a_prev;
    double c0 = sqrt(a_prev) * cur_beta / beta_t, c1 = sqrt(cur_alpha) * beta_prev / beta_t;
    double var = beta_prev / beta_t * cur_beta;
    double sd = next > 0 ? sqrt(var > 1e-20 ? var : 1e-20) : 0;
    if (sd > 0)
      FR_TRY(fr__noise(r, i, noise));
    double in_scale = 1 / sqrt(1 + sig * sig), out_scale = sqrt(1 + next * next);
    for (int64_t k = 0; k < r->n; k++) {
      double v = c0 * den[k] + c1 * x[k] * in_scale;
      if (sd > 0)
        v += sd * noise[k];
      x[k] = (float)(v * out_scale);
    }
    FR_TRY(fr__step_done(r, i, x, den));
  }
done:
  fr_free(den);
  return rc;
}

/* LCM: jump to the (boundary-conditioned) x0 estimate, then re-noise to the next level. */
static enum fr_status fr__lcm(struct fr__run *r, float *x) {
  const struct fr_schedule *s = r->s;
  enum fr_status rc = FR_OK;
  float *den = fr__bufs(r, 2), *noise = den + r->n;
  if (!den)
    return FR_E_NOMEM;
  for (int i = 0; i < s->steps; i++) {
    double sig = s->sigmas[i], next = s->sigmas[i + 1];
    FR_TRY(fr__denoise(r, x, sig, s->timesteps[i], den));
    if (r->io->lcm_boundary) { /* c_skip * x_vp + c_out * x0, sigma_data 0.5, timestep scaling 10 */
      double st = s->timesteps[i] * 10.0, c_skip = 0.25 / (st * st + 0.25), c_out = st / sqrt(st * st + 0.25);
      double in_scale = 1 / sqrt(1 + sig * sig);
      for (int64_t k = 0; k < r->n; k++)
        den[k] = (float)(c_out * den[k] + c_skip * x[k] * in_scale);
    }
    memcpy(x, den, sizeof(float) * (size_t)r->n);
    if (next > 0) {
      FR_TRY(fr__noise(r, i, noise));
      for (int64_t k = 0; k < r->n; k++)
        x[k] = (float)(x[k] + next * noise[k]);
    }
    FR_TRY(fr__step_done(r, i, x, den));
  }
done:
  fr_free(den);
  return rc;
}

/* UniPC (predictor UniP + corrector UniC, data prediction), order 2, B(h) = h ("bh1") or e^h - 1
 * ("bh2"); the corrector is applied before every predictor step after the first; the final step is
 * first order (lower_order_final). lambda = -log(sigma); VE form of the VP update divided by alpha_t. */
static enum fr_status fr__uni_pc(struct fr__run *r, float *x) {
  const struct fr_schedule *s = r->s;
  const int bh2 = r->io->uni_pc_variant != 1;
  enum fr_status rc = FR_OK;
  /* den: this step's model output; m0/m1: the last two model outputs; xl: the sample the last predictor
   * started from */
  float *den = fr__bufs(r, 4), *m0 = den + r->n, *m1 = m0 + r->n, *xl = m1 + r->n;
  if (!den)
    return FR_E_NOMEM;
  int last_order = 0;
  for (int i = 0; i < s->steps; i++) {
    double sig = s->sigmas[i];
    FR_TRY(fr__denoise(r, x, sig, s->timesteps[i], den));
    if (i > 0) { /* corrector from sigma[i-1] to sigma[i] with the new model output */
      double lt = -log(sig), ls0 = -log(s->sigmas[i - 1]), h = lt - ls0, hh = -h;
      double phi1 = expm1(hh), bh = bh2 ? expm1(hh) : hh;
      double phik = phi1 / hh - 1, b1 = phik / bh, b2 = (phik / hh - 0.5) * 2 / bh;
      double rho_last, rho0 = 0, rk = 0;
      if (last_order == 1) {
        rho_last = 0.5;
      } else { /* solve [[1, 1], [rk, 1]] rho = [b1, b2] */
        rk = (-log(s->sigmas[i - 2]) - ls0) / h;
        rho0 = (b1 - b2) / (1 - rk);
        rho_last = b1 - rho0;
      }
      double ratio = sig / s->sigmas[i - 1];
      for (int64_t k = 0; k < r->n; k++) {
        double v = ratio * xl[k] - phi1 * m0[k];
        double corr = last_order == 2 ? rho0 * (m1[k] - m0[k]) / rk : 0;
        x[k] = (float)(v - bh * (corr + rho_last * (den[k] - m0[k])));
      }
    }
    memcpy(m1, m0, sizeof(float) * (size_t)r->n);
    memcpy(m0, den, sizeof(float) * (size_t)r->n);
    memcpy(xl, x, sizeof(float) * (size_t)r->n);
    int order = i == 0 || i == s->steps - 1 ? 1 : 2;
    double next = s->sigmas[i + 1];
    if (next == 0) {
      memcpy(x, m0, sizeof(float) * (size_t)r->n);
    } else {
      double lt = -log(next), ls0 = -log(sig), h = lt - ls0, hh = -h;
      double phi1 = expm1(hh), bh = bh2 ? expm1(hh) : hh, ratio = next / sig;
      double rk = order == 2 ? (-log(s->sigmas[i - 1]) - ls0) / h : 1;
      for (int64_t k = 0; k < r->n; k++) {
        double v = ratio * x[k] - phi1 * m0[k];
        if (order == 2)
          v -= bh * 0.5 * (m1[k] - m0[k]) / rk;
        x[k] = (float)v;
      }
    }
    last_order = order;
    FR_TRY(fr__step_done(r, i, x, den));
  }
done:
  fr_free(den);
  return rc;
}

#define FR_SAMPLER(fn)                                                                                    \
  static enum fr_status fr__run_##fn(const struct fr_sampler_io *io, const struct fr_schedule *s, float *x, \
                                     int64_t n, struct fr_err *err) {                                     \
    struct fr__run r = {io, s, n, 0, {{0}, 0, false, 0}, err};                                            \
    fr_torch_gen_seed(&r.gen, io->seed);                                                                  \
    return fr__##fn(&r, x);                                                                               \
  }
FR_SAMPLER(euler)
FR_SAMPLER(euler_ancestral)
FR_SAMPLER(heun)
FR_SAMPLER(dpm_2)
FR_SAMPLER(lms)
FR_SAMPLER(dpmpp_2m)
FR_SAMPLER(dpmpp_2m_sde)
FR_SAMPLER(ddpm)
FR_SAMPLER(lcm)
FR_SAMPLER(uni_pc)

const struct fr_sampler_info fr_samplers[] = {
    {"euler", false, 1, fr__run_euler, "Euler's method on the probability-flow ODE"},
    {"euler_ancestral", true, 1, fr__run_euler_ancestral, "Euler with ancestral noise (eta)"},
    {"heun", false, 2, fr__run_heun, "Heun's second-order method (two model calls per step)"},
    {"dpm_2", false, 2, fr__run_dpm_2, "DPM-Solver-2 (midpoint in log sigma; two model calls per step)"},
    {"lms", false, 1, fr__run_lms, "linear multistep, order 4"},
    {"dpmpp_2m", false, 1, fr__run_dpmpp_2m, "DPM-Solver++(2M), multistep second order"},
    {"dpmpp_2m_sde", true, 1, fr__run_dpmpp_2m_sde, "DPM-Solver++(2M) SDE, midpoint"},
    {"ddim", false, 1, fr__run_euler, "DDIM (eta 0), the same update as euler"},
    {"ddpm", true, 1, fr__run_ddpm, "DDPM ancestral sampling, fixed_small variance"},
    {"uni_pc", false, 1, fr__run_uni_pc, "UniPC predictor-corrector, order 2 (uni_pc_variant: bh1/bh2)"},
    {"lcm", true, 1, fr__run_lcm, "latent consistency sampling"},
};
const int fr_n_samplers = (int)(sizeof fr_samplers / sizeof fr_samplers[0]);

const struct fr_sampler_info *fr_sampler_find(const char *name) {
  for (int i = 0; i < fr_n_samplers; i++)
    if (strcmp(fr_samplers[i].name, name) == 0)
      return &fr_samplers[i];
  return NULL;
}

enum fr_status fr_sample(const char *name, const struct fr_sampler_io *io, const struct fr_schedule *s, float *x,
                         int64_t n, struct fr_err *err) {
  const struct fr_sampler_info *info = fr_sampler_find(name);
  if (!info) {
    char list[512] = "";
    for (int i = 0; i < fr_n_samplers; i++)
      snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", fr_samplers[i].name);
    return fr_errf(err, FR_E_INVALID, "unknown sampler '%s' (one of: %s)", name, list);
  }
  if (!io->denoise || !io->model)
    return fr_errf(err, FR_E_INTERNAL, "sampler '%s': no denoiser or model schedule", name);
  return info->run(io, s, x, n, err);
}
