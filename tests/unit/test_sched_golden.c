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
#include "nodes/sampling/sampling.h"
#include "tests/test.h"

struct golden_case {
  const char *file, *sampler, *schedule;
  struct fr_schedule_opts opts;
  bool vp;           /* diffusers keeps this scheduler's state in VP space */
  bool seeded;       /* stochastic: noise from a torch generator seeded 11 */
  int uni_pc_variant;
  bool lcm_boundary;
};

static const struct golden_case cases[] = {
    {"euler_4", "euler", "linspace", {0}, false, false, 0, false},
    {"euler_karras_4", "euler", "karras", {0}, false, false, 0, false},
    {"euler_leading_4", "euler", "leading", {.steps_offset = 1}, false, false, 0, false},
    {"euler_ancestral_4", "euler_ancestral", "linspace", {0}, false, true, 0, false},
    {"heun_4", "heun", "linspace", {0}, false, false, 0, false},
    {"dpm2_4", "dpm_2", "linspace", {0}, false, false, 0, false},
    {"lms_4", "lms", "linspace", {0}, false, false, 0, false},
    {"ddim_4", "ddim", "leading", {.steps_offset = 1, .final = FR_FINAL_SIGMA_MIN}, true, false, 0, false},
    {"ddpm_4", "ddpm", "leading", {0}, true, true, 0, false},
    {"dpmpp_2m_4", "dpmpp_2m", "linspace", {.round_timesteps = true}, true, false, 0, false},
    {"dpmpp_2m_karras_4", "dpmpp_2m", "karras", {.round_timesteps = true}, true, false, 0, false},
    {"dpmpp_2m_sde_karras_4", "dpmpp_2m_sde", "karras", {.round_timesteps = true}, true, true, 0, false},
    {"unipc_4", "uni_pc", "linspace", {.round_timesteps = true}, true, false, 2, false},
    {"lcm_4", "lcm", "lcm", {0}, true, true, 0, true},
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
    CHECK_OK(fr_schedule_make(&m, g->schedule, 4, 1.0, &g->opts, &s, &err), &err);
    /* the model timesteps of the schedule's points equal diffusers' (every other one for 2-stage) */
    int stride = strcmp(g->sampler, "heun") == 0 || strcmp(g->sampler, "dpm_2") == 0 ? 2 : 1;
    double t_err = 0;
    for (int i = 0; i < s.steps; i++)
      t_err = fmax(t_err, fabs(s.timesteps[i] - gold_t[i * stride]));
    CHECKF(t_err < 2e-3, "%s: timesteps differ by %g", g->file, t_err);

    float x[256];
    int64_t n = 256;
    double scale0 = g->vp ? sqrt(1 + s.sigmas[0] * s.sigmas[0]) : 1;
    for (int64_t k = 0; k < n; k++)
      x[k] = (float)(x_init[k] * scale0);
    struct recorder rec = {.count = 0};
    struct fr_sampler_io io = {.denoise = toy_denoise, .seed = 11, .model = &m, .eta = 1.0,
                               .uni_pc_variant = g->uni_pc_variant, .lcm_boundary = g->lcm_boundary,
                               .substep = record, .substep_user = &rec};
    CHECK_OK(fr_sample(g->sampler, &io, &s, x, n, &err), &err);

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
