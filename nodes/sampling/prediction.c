/* Prediction types and the zero-terminal-SNR schedule (prediction.h). Definitions from the v-prediction
 * paper (Salimans & Ho 2022) and Lin et al. 2023, as diffusers and ComfyUI implement them (read, not
 * copied). */
#include <math.h>

#include "nodes/sampling/prediction.h"

void fr_pred_coeffs(enum fr_prediction p, double sigma, double *c_skip, double *c_out) {
  if (p == FR_PRED_V) {
    double s2 = sigma * sigma + 1.0;
    *c_skip = 1.0 / s2;
    *c_out = -sigma / sqrt(s2);
  } else {
    *c_skip = 1.0;
    *c_out = -sigma;
  }
}

void fr_model_sched_zsnr(struct fr_model_sched *m) {
  double ab[FR_TRAIN_STEPS]; /* sqrt(alphas_cumprod) */
  for (int i = 0; i < FR_TRAIN_STEPS; i++)
    ab[i] = sqrt(1.0 / (m->sigmas[i] * m->sigmas[i] + 1.0));
  double a0 = ab[0], aT = ab[FR_TRAIN_STEPS - 1];
  for (int i = 0; i < FR_TRAIN_STEPS; i++) {
    double a = (ab[i] - aT) * a0 / (a0 - aT);
    double ac = i == FR_TRAIN_STEPS - 1 ? 4.8973451890853435e-08 : a * a;
    m->alphas_cumprod[i] = ac;
    m->sigmas[i] = sqrt((1.0 - ac) / ac);
    m->log_sigmas[i] = log(m->sigmas[i]);
  }
}
