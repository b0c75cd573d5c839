/* What the diffusion model predicts, and the zero-terminal-SNR schedule: ComfyUI's ModelSamplingDiscrete.
 *
 * The samplers see the model only as a denoiser D(x, sigma) -> x0 in VE space (x = x0 + sigma * eps, the
 * UNet sees x / sqrt(sigma^2 + 1)). The model's output F becomes x0 as D = c_skip * x + c_out * F:
 *   eps-prediction: F = eps,                            c_skip = 1,                c_out = -sigma;
 *   v-prediction:   F = v = alpha * eps - s_vp * x0     c_skip = 1 / (sigma^2 + 1), c_out = -sigma /
 * sqrt(sigma^2 + 1) (VP space: alpha = 1 / sqrt(1 + sigma^2), s_vp = sigma * alpha; x0 = alpha * x_vp - s_vp
 * * v with x_vp = alpha * x). Classifier-free guidance is linear in F, so it applies to F as to D. */
#ifndef FR_SAMPLING_PREDICTION_H
#define FR_SAMPLING_PREDICTION_H

#include "nodes/sampling/sampling.h"

enum fr_prediction { FR_PRED_EPS, FR_PRED_V };

/* c_skip and c_out of the denoiser for prediction type p at noise level sigma (see above). */
void fr_pred_coeffs(enum fr_prediction p, double sigma, double *c_skip, double *c_out);

/* Rescales a model schedule to zero terminal SNR (Lin et al. 2023; diffusers' rescale_zero_terminal_snr,
 * ComfyUI's rescale_zero_terminal_snr_sigmas): sqrt(alphas_cumprod) is shifted so its last value is 0 and
 * scaled so its first is unchanged; the last alphas_cumprod, then 0, is set to 4.8973451890853435e-08 as
 * ComfyUI does (sigma_max ~ 4519 instead of infinity, so every sampler can start there). sigmas,
 * log_sigmas and alphas_cumprod are all updated. */
void fr_model_sched_zsnr(struct fr_model_sched *m);

#endif
