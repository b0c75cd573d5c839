/* Scheduler goldens: 14 diffusers schedulers, each reproduced by one flowrun sampler + schedule, driven
 * by the fixtures' toy model eps = 0.3 tanh(x_in) + 0.001 t cos(x_in), x_in = x / sqrt(sigma^2 + 1).
 * The trajectory (the state after diffusers' step() calls 1..3, and the final latent) must match within
 * 1e-5 relative (max |diff| / max |golden|): the fixtures README's bound for a correct fp32
 * implementation; a wrong schedule or update is off by 1e-2 or more. Samplers that diffusers runs in VP
 * space (x_vp = x_ve / sqrt(1 + sigma^2)) are compared after converting. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/safetensors.h"
#include "nodes/pipeline/pipeline.h"
#include "nodes/sampling/sampling.h"
#include "tests/test.h"

/* Each golden is run from the (sampler, schedule) names a graph's Sampler node takes, through
 * fr_sampling_plan_make (the node's rules), so these rows are what a user writes to reproduce diffusers. */
struct golden_case {
  const char *file, *sampler, *schedule;
  bool vp;     /* diffusers keeps this scheduler's state in VP space */
  bool seeded; /* stochastic: noise from a torch generator seeded 11 */
};

static const struct golden_case cases[] = {
    {"euler_4", "euler", "linspace", false, false},
    /* EulerDiscreteScheduler(use_karras_sigmas=True), default linspace spacing: starts at sigma_max */
    {"euler_karras_4", "euler", "linspace_karras", false, false},
    {"euler_leading_4", "euler", "leading", false, false}, /* steps_offset 1 */
    {"euler_ancestral_4", "euler_ancestral", "linspace", false, true},
    {"heun_4", "heun", "linspace", false, false},
    {"dpm2_4", "dpm_2", "linspace", false, false},
    {"lms_4", "lms", "linspace", false, false},
    {"ddim_4", "ddim", "leading", true, false},          /* steps_offset 1, set_alpha_to_one False */
    {"ddpm_4", "ddpm", "leading_offset0", true, true},   /* DDPMScheduler's default steps_offset 0 */
    {"dpmpp_2m_4", "dpmpp_2m", "linspace", true, false}, /* integer timesteps */
    {"dpmpp_2m_karras_4", "dpmpp_2m", "linspace_karras", true, false},
    {"dpmpp_2m_sde_karras_4", "dpmpp_2m_sde", "linspace_karras", true, true},
    {"unipc_4", "uni_pc_bh2", "linspace", true, false},
    {"lcm_4", "lcm", "lcm", true, true}, /* with LCMScheduler's boundary condition */
};

static enum fr_status toy_denoise(void *user, const float *x, int64_t n, double sigma, double t, float *den) {
  (void)user;
  double s = 1 / sqrt(sigma * sigma + 1);
  for (int64_t k = 0; k < n; k++) {
    double xin = x[k] * s, eps = 0.3 * tanh(xin) + 0.001 * t * cos(xin);
    den[k] = (float)(x[k] - sigma * eps);
  }
  return FR_OK;
}

struct recorder {
  float states[32][256];
  int count;
};
static void record(void *user, int k, const float *x, int64_t n) {
  struct recorder *r = user;
  if (k < 32 && n <= 256)
    memcpy(r->states[k], x, sizeof(float) * (size_t)n);
  r->count = k + 1;
}

static const float *tensor(const struct fr_safetensors *st, const char *name) {
  const struct fr_st_entry *e = fr_st_find(st, name);
  return e && e->dtype == FR_F32 ? e->data : NULL;
}

/* ComfyUI's names keep ComfyUI's numbers next to the diffusers names. Expected values are worked out here
 * in float64 from the definitions (SD's scaled_linear betas; Karras rho 7 between the training sigma
 * min/max; timestep = log-sigma interpolation, as ComfyUI's ModelSamplingDiscrete.timestep and diffusers'
 * _sigma_to_t), not taken from flowrun. */
static void check_comfy_vs_diffusers(const char *fx, const struct fr_model_sched *m) {
  double ac = 1, sig[1000], lsig[1000];
  for (int i = 0; i < 1000; i++) {
    double b = sqrt(0.00085) + (sqrt(0.012) - sqrt(0.00085)) * i / 999.0;
    ac *= 1 - b * b;
    sig[i] = sqrt((1 - ac) / ac);
    lsig[i] = log(sig[i]);
  }
  double t_comfy[4];
  for (int i = 0; i < 4; i++) {
    double a = pow(sig[999], 1 / 7.0), b = pow(sig[0], 1 / 7.0), k = pow(a + i / 3.0 * (b - a), 7.0);
    int lo = 0;
    while (lo < 998 && lsig[lo + 1] <= log(k))
      lo++;
    double w = (lsig[lo] - log(k)) / (lsig[lo] - lsig[lo + 1]);
    w = w < 0 ? 0 : w > 1 ? 1 : w;
    t_comfy[i] = (1 - w) * lo + w * (lo + 1);
  }
  struct fr_err err = {{0}};
  struct fr_sampling_plan pc, pd;
  struct fr_schedule sc, sd;
  fr_sampling_plan_make("dpmpp_2m", "karras", &pc);
  fr_sampling_plan_make("dpmpp_2m", "linspace_karras", &pd);
  CHECK_OK(fr_schedule_make(m, "karras", 4, 1.0, &pc.opts, &sc, &err), &err);
  CHECK_OK(fr_schedule_make(m, "linspace_karras", 4, 1.0, &pd.opts, &sd, &err), &err);
  char path[4096];
  snprintf(path, sizeof path, "%s/golden/sched_dpmpp_2m_karras_4.safetensors", fx);
  struct fr_safetensors *st = NULL;
  CHECK_OK(fr_st_open(path, &st, &err), &err);
  const float *gold_t = st ? tensor(st, "timesteps") : NULL;
  int fractional = 0;
  for (int i = 0; i < 4; i++) {
    /* same sigmas; ComfyUI's fractional timesteps for "karras", diffusers' rounded ones otherwise */
    CHECKF(fabs(sc.sigmas[i] - sd.sigmas[i]) <= 1e-12 * sd.sigmas[i], "karras sigma %d", i);
    CHECKF(fabs(sc.timesteps[i] - t_comfy[i]) <= 1e-6, "dpmpp_2m + karras: t[%d] = %.9g, ComfyUI's %.9g", i,
           sc.timesteps[i], t_comfy[i]);
    CHECKF(sd.timesteps[i] == round(t_comfy[i]), "dpmpp_2m + linspace_karras: t[%d] = %.9g, diffusers' %.0f",
           i, sd.timesteps[i], round(t_comfy[i]));
    CHECKF(!gold_t || gold_t[i] == (float)round(t_comfy[i]), "golden t[%d] %g is round(%g)", i,
           gold_t ? gold_t[i] : 0.0, t_comfy[i]);
    fractional += fabs(t_comfy[i] - round(t_comfy[i])) > 1e-3;
  }
  CHECKF(fractional >= 2, "the karras timesteps are fractional (%d), so the two names differ", fractional);
  fr_st_close(st);
  /* the same for DPM++ 2M SDE */
  fr_sampling_plan_make("dpmpp_2m_sde", "karras", &pc);
  fr_sampling_plan_make("dpmpp_2m_sde", "linspace_karras", &pd);
  CHECK(!pc.opts.round_timesteps && pd.opts.round_timesteps);

  /* leading: (steps - 1 - i) * (1000 // steps) + steps_offset, with SD's 1 or diffusers' default 0 */
  fr_sampling_plan_make("ddpm", "leading", &pc);
  fr_sampling_plan_make("ddpm", "leading_offset0", &pd);
  CHECK_OK(fr_schedule_make(m, "leading", 4, 1.0, &pc.opts, &sc, &err), &err);
  CHECK_OK(fr_schedule_make(m, "leading_offset0", 4, 1.0, &pd.opts, &sd, &err), &err);
  for (int i = 0; i < 4; i++) {
    CHECKF(sc.timesteps[i] == (3 - i) * 250 + 1, "leading t[%d] = %g", i, sc.timesteps[i]);
    CHECKF(sd.timesteps[i] == (3 - i) * 250, "leading_offset0 t[%d] = %g", i, sd.timesteps[i]);
    int t = (3 - i) * 250; /* sigma of an integer timestep is the training sigma */
    CHECKF(fabs(sd.sigmas[i] - sig[t]) <= 1e-9 * sig[t], "leading_offset0 sigma[%d]", i);
  }
  /* steps_offset of the options only applies to "leading" */
  struct fr_schedule_opts one = {.steps_offset = 1};
  CHECK_OK(fr_schedule_make(m, "leading_offset0", 4, 1.0, &one, &sd, &err), &err);
  CHECK(sd.timesteps[0] == 750);

  /* LCM's boundary condition with diffusers' lcm schedule only; ComfyUI's lcm sampler on its schedules
   * has none (there it is a model patch, ModelSamplingDiscrete lcm) */
  fr_sampling_plan_make("lcm", "lcm", &pd);
  fr_sampling_plan_make("lcm", "sgm_uniform", &pc);
  CHECK(pd.lcm_boundary && !pc.lcm_boundary);
  /* Its effect is below the goldens' 1e-5 at 4 steps (c_skip ~ 1e-8 there), so check it where it shows:
   * the last step of a 50-step lcm schedule (timestep 19, to sigma 0), against LCMScheduler.step in float64:
   * x0 = (x - sqrt(1 - a) eps) / sqrt(a), out = c_out x0 + c_skip x, c_skip = 0.25 / (190^2 + 0.25),
   * c_out = 190 / sqrt(190^2 + 0.25) (sigma_data 0.5, timestep_scaling 10), x in VP units. */
  CHECK_OK(fr_schedule_make(m, "lcm", 50, 1.0, &pd.opts, &sd, &err), &err);
  CHECKF(sd.timesteps[49] == 19, "lcm: last timestep %g", sd.timesteps[49]);
  double a19 = 1;
  for (int i = 0; i <= 19; i++) {
    double b = sqrt(0.00085) + (sqrt(0.012) - sqrt(0.00085)) * i / 999.0;
    a19 *= 1 - b * b;
  }
  double s19 = sqrt((1 - a19) / a19), ts = 190, c_skip = 0.25 / (ts * ts + 0.25),
         c_out = ts / sqrt(ts * ts + 0.25);
  float xv[256], with[256], without[256], want[256];
  struct fr_torch_gen gen;
  fr_torch_gen_seed(&gen, 3);
  fr_torch_randn(&gen, xv, 256);
  for (int k = 0; k < 256; k++) {
    double x = xv[k], eps = 0.3 * tanh(x) + 0.001 * 19 * cos(x);
    double x0 = (x - sqrt(1 - a19) * eps) / sqrt(a19);
    want[k] = (float)(c_out * x0 + c_skip * x);
    with[k] = without[k] = (float)(x * sqrt(1 + s19 * s19)); /* VE */
  }
  struct fr_schedule last = {.steps = 1, .sigmas = {sd.sigmas[49], 0}, .timesteps = {19, 0}};
  CHECKF(fabs(sd.sigmas[49] - s19) <= 1e-9 * s19, "lcm sigma at t 19: %.9g, %.9g", sd.sigmas[49], s19);
  struct fr_sampler_io io = {.denoise = toy_denoise, .seed = 11, .model = m, .lcm_boundary = true};
  CHECK_OK(fr_sample("lcm", &io, &last, with, 256, &err), &err);
  io.lcm_boundary = false;
  CHECK_OK(fr_sample("lcm", &io, &last, without, 256, &err), &err);
  double e_with = fr_test_rel_err(with, want, 256), e_without = fr_test_rel_err(without, want, 256);
  printf("lcm boundary condition at t 19: error %.2e with, %.2e without (tolerance 1e-6: float32 state)\n",
         e_with, e_without);
  CHECKF(e_with <= 1e-6 && e_without > 2e-6, "lcm boundary: %.3g with, %.3g without", e_with, e_without);
  /* ComfyUI's names: fractional timesteps, noise * sqrt(1 + sigma_max^2), final sigma 0 */
  static const char *const comfy[] = {"normal",      "karras", "exponential",
                                      "sgm_uniform", "simple", "ddim_uniform"};
  for (size_t i = 0; i < sizeof comfy / sizeof comfy[0]; i++) {
    for (int k = 0; fr_pipe_sampler_names[k]; k++) {
      fr_sampling_plan_make(fr_pipe_sampler_names[k], comfy[i], &pc);
      CHECKF(!pc.diffusers && !pc.sigma_start && !pc.opts.round_timesteps && pc.opts.final == FR_FINAL_ZERO &&
                 !pc.lcm_boundary,
             "%s + %s follows ComfyUI", fr_pipe_sampler_names[k], comfy[i]);
    }
  }
  printf("ComfyUI names (karras: fractional t) and diffusers names (linspace_karras: rounded t, "
         "leading_offset0, lcm boundary) checked against float64 definitions\n");
}

int main(void) {
  const char *fx = fr_test_fixtures();
  if (!fx)
    return fr_test_done();
  struct fr_model_sched m;
  fr_model_sched_sd(&m);
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    const struct golden_case *g = &cases[c];
    char path[4096];
    snprintf(path, sizeof path, "%s/golden/sched_%s.safetensors", fx, g->file);
    struct fr_safetensors *st = NULL;
    struct fr_err err = {{0}};
    CHECK_OK(fr_st_open(path, &st, &err), &err);
    if (!st)
      continue;
    const float *x_init = tensor(st, "x_init"), *gold_t = tensor(st, "timesteps");
    CHECKF(x_init && gold_t, "%s: x_init or timesteps missing", g->file);
    if (!x_init || !gold_t) {
      fr_st_close(st);
      continue;
    }
    struct fr_schedule s;
    struct fr_sampling_plan plan;
    fr_sampling_plan_make(g->sampler, g->schedule, &plan);
    CHECK_OK(fr_schedule_make(&m, g->schedule, 4, 1.0, &plan.opts, &s, &err), &err);
    /* the model timesteps of the schedule's points equal diffusers' (every other one for 2-stage) */
    int stride = strcmp(g->sampler, "heun") == 0 || strcmp(g->sampler, "dpm_2") == 0 ? 2 : 1;
    double t_err = 0;
    for (int i = 0; i < s.steps; i++)
      t_err = fmax(t_err, fabs(s.timesteps[i] - gold_t[i * stride]));
    CHECKF(t_err < 2e-3, "%s: timesteps differ by %g", g->file, t_err);

    float x[256];
    int64_t n = 256;
    double scale0 = g->vp ? sqrt(1 + s.sigmas[0] * s.sigmas[0]) : 1;
    /* The node's start for txt2img (noise * sigma_max or noise * sqrt(1 + sigma_max^2)) is diffusers'
     * init_noise_sigma: x_init = randn(seed 7) * init_noise_sigma, in VP units for the VP schedulers. */
    float unit[256];
    struct fr_torch_gen gen;
    fr_torch_gen_seed(&gen, 7);
    fr_torch_randn(&gen, unit, 256);
    double s0 = s.sigmas[0], start = plan.sigma_start ? s0 : sqrt(1 + s0 * s0);
    float x_start[256];
    for (int k = 0; k < 256; k++)
      x_start[k] = (float)(unit[k] * start / scale0);
    double e_start = fr_test_rel_err(x_start, x_init, 256);
    CHECKF(e_start <= 1e-6, "%s: %s + %s starts at %s, not diffusers' init_noise_sigma (error %.3g)", g->file,
           g->sampler, g->schedule, plan.sigma_start ? "noise * sigma_max" : "noise * sqrt(1 + sigma_max^2)",
           e_start);
    for (int64_t k = 0; k < n; k++)
      x[k] = (float)(x_init[k] * scale0);
    struct recorder rec = {.count = 0};
    struct fr_sampler_io io = {.denoise = toy_denoise,
                               .seed = 11,
                               .model = &m,
                               .eta = 1.0,
                               .uni_pc_variant = plan.uni_pc_variant,
                               .lcm_boundary = plan.lcm_boundary,
                               .substep = record,
                               .substep_user = &rec};
    CHECK_OK(fr_sample(plan.sampler, &io, &s, x, n, &err), &err);

    /* sigma at which substep k leaves the state */
    double worst = 0;
    for (int k = 0; k < 4; k++) {
      char name[16];
      snprintf(name, sizeof name, k < 3 ? "x_step%d" : "x_final", k);
      const float *gold = tensor(st, name);
      const float *mine = k < 3 ? rec.states[k] : x;
      double sigma;
      if (k == 3)
        sigma = s.sigmas[s.steps];
      else if (stride == 2) /* substeps alternate: midpoint/next of step k/2 */
        sigma = k % 2 == 0 ? (strcmp(g->sampler, "heun") == 0 ? s.sigmas[k / 2 + 1]
                                                               : exp(0.5 * (log(s.sigmas[k / 2]) + log(s.sigmas[k / 2 + 1]))))
                           : s.sigmas[k / 2 + 1];
      else
        sigma = s.sigmas[k + 1];
      float conv[256];
      double back = g->vp ? 1 / sqrt(1 + sigma * sigma) : 1;
      for (int64_t j = 0; j < n; j++)
        conv[j] = (float)(mine[j] * back);
      double e = gold ? fr_test_rel_err(conv, gold, n) : INFINITY;
      if (e > worst)
        worst = e;
      CHECKF(e <= 1e-5, "%s %s: error %.3g > 1e-5", g->file, name, e);
    }
    printf("sched_%-22s %-16s %-9s max error %.2e (tolerance 1e-5)\n", g->file, g->sampler, g->schedule, worst);
    fr_st_close(st);
  }
  check_comfy_vs_diffusers(fx, &m);
  /* unknown names list the valid ones */
  struct fr_schedule s;
  struct fr_err err = {{0}};
  CHECK(fr_schedule_make(&m, "bogus", 4, 1.0, NULL, &s, &err) == FR_E_INVALID && strstr(err.msg, "karras"));
  struct fr_sampler_io io = {.denoise = toy_denoise, .model = &m};
  float x[4] = {0};
  fr_schedule_make(&m, "normal", 4, 1.0, NULL, &s, &err);
  CHECK(fr_sample("bogus", &io, &s, x, 4, &err) == FR_E_INVALID && strstr(err.msg, "dpmpp_2m"));
  return fr_test_done();
}
