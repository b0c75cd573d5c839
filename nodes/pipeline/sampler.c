/* Sampler and Refiner: a UNet (plus ControlNets) wrapped into the denoiser the samplers of
 * nodes/sampling/ integrate, with classifier-free guidance in one batch-2 forward.
 *
 * Latents are in the graph scaled by the VAE factor (ComfyUI's convention), which is the space the UNet
 * works in, so the sampler uses them as they are. State is kept in VE space (x = x0 + sigma * eps), the
 * UNet sees x / sqrt(sigma^2 + 1). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "nodes/pipeline/pipeline.h"
#include "nodes/sampling/prediction.h"
#include "nodes/sampling/sampling.h"

const char *const fr_pipe_sampler_names[] = {
    "euler", "euler_ancestral", "heun",       "dpm_2", "lms", "dpmpp_2m", "dpmpp_2m_sde", "ddim",
    "ddpm",  "uni_pc",          "uni_pc_bh2", "lcm",   NULL};

#define FR__MAX_CTL 8

struct fr__ctl {
  int half; /* 0: uncond (negative), 1: cond (positive) */
  struct fr_pipe_comp *cn;
  struct fr_tensor *hint; /* device [B, 3, H, W] */
  float strength;
  double sigma_hi, sigma_lo; /* active while sigma_lo <= sigma <= sigma_hi */
};

struct fr__den {
  struct fr_node_ctx *nc;
  struct fr_pipe_comp *m;
  struct fr_ctx *c;
  int64_t B, per; /* batch, floats per sample */
  int64_t C, h, w;
  double cfg;
  bool use_cfg;
  int halves;                         /* 2 with CFG (uncond first, as diffusers), else 1 (cond only) */
  struct fr_tensor *ctx[2], *te[2];   /* device, per half [B, ...] */
  struct fr_tensor *tid[2];           /* HOST F32 [B, N]: embedded from fp32 values by the UNet */
  struct fr_tensor *ctx_all, *te_all; /* device, all halves concatenated */
  struct fr_tensor *tid_all;          /* host, all halves concatenated */
  struct fr__ctl ctl[FR__MAX_CTL];
  int n_ctl;
  /* The step (the ControlNets that apply, then the UNet) as a recorded replay (CUDA graph; kernels/ops.h
   * fr_ctx_record_begin): after one eager step (it warms the memory pool and the GEMM plans), the next is
   * recorded with kept input tensors and every later one writes its inputs and replays. A recording holds
   * one set of active ControlNets (mask): when a ControlNet's start or end changes the set, the recording
   * is dropped and the next steps record again (at most FR__MAX_RECORDINGS times a run). Only where the
   * device records, and with ControlNets only when they take the UNet's sinusoid and no added
   * conditioning (SD1.x ones: fr__ctl_recordable); any failure falls back to eager steps for the rest of
   * the run. */
  struct {
    int state;     /* 0: not tried, 1: recorded, -1: eager only */
    int eager;     /* eager steps run since the last recording was dropped */
    unsigned mask; /* the ControlNets the recording runs (bit i: ctl[i]) */
    struct fr_recording *rec;
    struct fr_tensor *x, *t_sin, *y, *eps; /* device: the recording's inputs and output */
  } r;
  int recordings; /* made this run */
  int replays;    /* model evaluations run as a replay */
  int evals;      /* model evaluations (a step of a second-order sampler makes two) */
  int pred;       /* enum fr_prediction: what the UNet predicts (eps or v) */
  bool xl;        /* preview factors */
  int steps;
  /* Inpainting (ComfyUI's KSamplerX0Inpaint): with a noise mask, the model sees x where the mask is 1 and
   * the original latent noised to sigma where it is 0, and its prediction there is the original latent. */
  const float *mask;        /* [B, C, h, w] prepared noise mask, or NULL */
  const float *orig;        /* the latent before noise [B, C, h, w] */
  const float *unit_noise;  /* the noise added at the start, unit variance (zeros without add_noise) */
  float *xin;               /* scratch [B, C, h, w] */
  int64_t cin;              /* the UNet's input channels: C, or C + 5 for an inpainting model */
  struct fr_tensor *cat[2]; /* per half: the inpainting model's extra channels, host [B, 5, h, w] */
  struct fr_tensor *pmask;  /* owns mask */
  struct fr_err err;
};

static struct fr_pipe_observer fr__observer;

void fr_pipe_set_observer(const struct fr_pipe_observer *o) {
  if (o)
    fr__observer = *o;
  else
    memset(&fr__observer, 0, sizeof fr__observer);
}

/* ---- conditioning ---- */

/* Host tensor [B, ...] repeating the first row of t ([1, ...] or [B, ...]) so it has B rows; for the
 * context also T repeated to T_out (a multiple of T) as ComfyUI does for prompts of different lengths. */
static struct fr_tensor *fr__rows(const struct fr_tensor *t, int64_t B, int64_t T_out) {
  int64_t T = t->ndim == 3 ? t->shape[1] : 1, D = t->shape[t->ndim - 1];
  int64_t shape[3] = {B, T_out, D};
  struct fr_tensor *o = t->ndim == 3 ? fr_tensor_f32(3, shape) : fr_tensor_f32(2, (int64_t[]){B, D});
  if (!o)
    return NULL;
  for (int64_t b = 0; b < B; b++) {
    int64_t sb = t->shape[0] == B ? b : 0;
    for (int64_t r = 0; r < T_out; r++)
      memcpy((float *)o->data + (b * T_out + r) * D, (const float *)t->data + (sb * T + r % T) * D,
             (size_t)D * sizeof(float));
  }
  return o;
}

static int64_t fr__gcd(int64_t a, int64_t b) {
  return b ? fr__gcd(b, a % b) : a;
}

static double fr__percent_to_sigma(const struct fr_model_sched *ms, double p) {
  if (p <= 0)
    return 1e30;
  if (p >= 1)
    return 0;
  return fr_t_to_sigma(ms, (1.0 - p) * (FR_TRAIN_STEPS - 1));
}

/* Size conditioning left 0 (TextEncode's width/height/target 0, what ComfyUI's plain CLIPTextEncode gives
 * an SDXL model) takes the sampled image's size, as ComfyUI's encode_model_conds does: original (h, w) =
 * the latent's size x 8, and a 0 target size the original one. Rows of tids: base [h, w, crop_h, crop_w,
 * target_h, target_w], refiner [h, w, crop_h, crop_w, aesthetic score]. */
static void fr__fill_sizes(struct fr_tensor *tids, int64_t img_h, int64_t img_w) {
  int64_t rows = tids->shape[0], n = tids->shape[tids->ndim - 1];
  for (int64_t r = 0; r < rows; r++) {
    float *v = (float *)tids->data + r * n;
    if (v[0] == 0)
      v[0] = (float)img_h;
    if (v[1] == 0)
      v[1] = (float)img_w;
    if (n == 6 && v[4] == 0)
      v[4] = v[0];
    if (n == 6 && v[5] == 0)
      v[5] = v[1];
  }
}

/* Uploads one half's conditioning (and its ControlNet applications). */
static enum fr_status fr__setup_half(struct fr__den *d, int half, const struct fr_value *cond,
                                     const char *what, int64_t T_out, const struct fr_model_sched *ms) {
  struct fr_node_ctx *nc = d->nc;
  const struct fr_unet_config *uc = &d->m->unet->cfg;
  const struct fr_tensor *ctx = fr_value_get_tensor(cond, "context");
  const struct fr_tensor *pooled = fr_value_get_tensor(cond, "pooled"),
                         *tids = fr_value_get_tensor(cond, "time_ids");
  if (ctx->shape[2] != uc->context_dim)
    return fr_node_fail(nc, FR_E_SHAPE,
                        "input '%s': text context width %lld does not fit this model (it expects %d): the "
                        "conditioning comes from another checkpoint's text encoder",
                        what, (long long)ctx->shape[2], uc->context_dim);
  if (uc->adm_in_channels > 0 && (!pooled || !tids))
    return fr_node_fail(
        nc, FR_E_INVALID,
        "input '%s': an SDXL model needs pooled text and size conditioning (TextEncode with an "
        "SDXL checkpoint's CLIP)",
        what);
  struct fr_tensor *h = fr__rows(ctx, d->B, T_out);
  d->ctx[half] = h ? fr_ctx_upload(d->c, h) : NULL;
  fr_tensor_free(h);
  if (uc->adm_in_channels > 0) {
    h = fr__rows(pooled, d->B, 1);
    d->te[half] = h ? fr_ctx_upload(d->c, h) : NULL;
    fr_tensor_free(h);
    d->tid[half] = fr__rows(tids, d->B, 1); /* stays on the host in fp32 (fr_unet_forward) */
    if (d->tid[half])
      fr__fill_sizes(d->tid[half], d->h * 8, d->w * 8);
  }
  if (!d->ctx[half] || (uc->adm_in_channels > 0 && (!d->te[half] || !d->tid[half])))
    return fr_node_fail(nc, FR_E_NOMEM, "out of memory uploading the conditioning");
  for (int k = 0;; k++) {
    char name[64];
    snprintf(name, sizeof name, "control.%d.path", k);
    const char *path = fr_value_get_string(cond, name);
    if (!path)
      break;
    if (d->n_ctl == FR__MAX_CTL)
      return fr_node_fail(nc, FR_E_INVALID, "more than %d ControlNet applications", FR__MAX_CTL);
    struct fr__ctl *ct = &d->ctl[d->n_ctl];
    ct->half = half;
    enum fr_status rc = fr_pipe_get_controlnet(nc, path, &ct->cn);
    if (rc)
      return rc;
    snprintf(name, sizeof name, "control.%d.image", k);
    const struct fr_tensor *im = fr_value_get_tensor(cond, name);
    double vals[3] = {1, 0, 1};
    const char *keys[3] = {"strength", "start", "end"};
    for (int i = 0; i < 3; i++) {
      snprintf(name, sizeof name, "control.%d.%s", k, keys[i]);
      const char *s = fr_value_get_string(cond, name);
      if (s)
        sscanf(s, "%lf", &vals[i]);
    }
    if (!im || im->ndim != 4 || im->shape[1] != d->h * 8 || im->shape[2] != d->w * 8)
      return fr_node_fail(nc, FR_E_SHAPE,
                          "input '%s': ControlNet image %lldx%lld must be 8x the latent (%lldx%lld)", what,
                          im ? (long long)im->shape[2] : 0LL, im ? (long long)im->shape[1] : 0LL,
                          (long long)d->w * 8, (long long)d->h * 8);
    int64_t H = im->shape[1], W = im->shape[2];
    struct fr_tensor *hh = fr_tensor_f32(4, (int64_t[]){d->B, 3, H, W});
    if (!hh)
      return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
    for (int64_t b = 0; b < d->B; b++) /* [1, H, W, 3] -> [B, 3, H, W] */
      for (int c = 0; c < 3; c++)
        for (int64_t p = 0; p < H * W; p++)
          ((float *)hh->data)[(b * 3 + c) * H * W + p] = ((const float *)im->data)[p * 3 + c];
    ct->hint = fr_ctx_upload(d->c, hh);
    fr_tensor_free(hh);
    if (!ct->hint)
      return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
    ct->strength = (float)vals[0];
    ct->sigma_hi = fr__percent_to_sigma(ms, vals[1]);
    ct->sigma_lo = fr__percent_to_sigma(ms, vals[2]);
    d->n_ctl++;
  }
  return FR_OK;
}

#define FR__MAX_RECORDINGS 4

static void fr__rec_drop(struct fr__den *d) {
  fr_tensor_free(d->r.x);
  fr_tensor_free(d->r.t_sin);
  fr_tensor_free(d->r.y);
  fr_tensor_free(d->r.eps);
  fr_recording_free(d->r.rec);
  memset(&d->r, 0, sizeof d->r);
}

static void fr__den_free(struct fr__den *d) {
  fr__rec_drop(d);
  for (int i = 0; i < 2; i++) {
    fr_tensor_free(d->ctx[i]);
    fr_tensor_free(d->te[i]);
    fr_tensor_free(d->tid[i]);
  }
  fr_tensor_free(d->ctx_all);
  fr_tensor_free(d->te_all);
  fr_tensor_free(d->tid_all);
  for (int i = 0; i < d->n_ctl; i++)
    fr_tensor_free(d->ctl[i].hint);
  fr_tensor_free(d->cat[0]);
  fr_tensor_free(d->cat[1]);
  fr_tensor_free(d->pmask);
  fr_free(d->xin);
}

static struct fr_tensor *fr__cat2(struct fr_ctx *c, struct fr_tensor *const *t, int n) {
  if (n == 1)
    return fr_copy(c, t[0]);
  return fr_concat(c, (const struct fr_tensor *const *)t, n, 0);
}

/* Host F32 tensors [B, N] (n of them) stacked along dim 0; NULL when out of memory. */
static struct fr_tensor *fr__cat2_host(struct fr_tensor *const *t, int n) {
  int64_t B = 0;
  for (int i = 0; i < n; i++)
    B += t[i]->shape[0];
  struct fr_tensor *o = fr_tensor_f32(2, (int64_t[]){B, t[0]->shape[1]});
  size_t off = 0;
  for (int i = 0; o && i < n; i++) {
    memcpy((char *)o->data + off, t[i]->data, fr_tensor_nbytes(t[i]));
    off += fr_tensor_nbytes(t[i]);
  }
  return o;
}

/* ---- the denoiser ---- */

/* Whether ctl[i] applies at sigma (its half present: with CFG both are, without it only the cond one). */
static bool fr__ctl_active(const struct fr__den *d, int i, double sigma) {
  const struct fr__ctl *ct = &d->ctl[i];
  int hoff = d->halves == 2 ? 0 : 1;
  return ct->half - hoff >= 0 && sigma <= ct->sigma_hi * (1 + 1e-6) && sigma >= ct->sigma_lo * (1 - 1e-6);
}

/* Whether every ControlNet can run inside a recording: no added conditioning (SDXL ControlNets embed host
 * time ids, which a recording cannot take) and the UNet's timestep width (they share its sinusoid). */
static bool fr__ctl_recordable(const struct fr__den *d) {
  for (int i = 0; i < d->n_ctl; i++) {
    const struct fr_unet_config *cc = &d->ctl[i].cn->cn->cfg;
    if (cc->adm_in_channels != 0 || cc->model_channels != d->m->unet->cfg.model_channels)
      return false;
  }
  return true;
}

static unsigned fr__ctl_mask(const struct fr__den *d, double sigma) {
  unsigned m = 0;
  for (int i = 0; i < d->n_ctl; i++)
    if (fr__ctl_active(d, i, sigma))
      m |= 1u << i;
  return m;
}

/* ControlNet residuals for the whole batch (all halves) at this step, or an empty control. The timestep is
 * tt (a host fp32 [1]) or, in a recording, t_sin (its sinusoid, made beforehand). */
static enum fr_status fr__controls(struct fr__den *d, const struct fr_tensor *xin_half,
                                   const struct fr_tensor *tt, const struct fr_tensor *t_sin, double sigma,
                                   struct fr_unet_control *all) {
  struct fr_unet_control per[2];
  memset(per, 0, sizeof per);
  bool any[2] = {false, false};
  memset(all, 0, sizeof *all);
  int hoff = d->halves == 2 ? 0 : 1;
  for (int i = 0; i < d->n_ctl; i++) {
    struct fr__ctl *ct = &d->ctl[i];
    int hi = ct->half - hoff;
    if (!fr__ctl_active(d, i, sigma))
      continue;
    struct fr_unet_cond cc = {.context = d->ctx[ct->half],
                              .text_embeds = d->te[ct->half],
                              .time_ids = d->tid[ct->half],
                              .t_sin = t_sin};
    struct fr_unet_control r;
    memset(&r, 0, sizeof r);
    enum fr_status rc =
        fr_controlnet_forward(d->c, ct->cn->cn, xin_half, tt, &cc, ct->hint, ct->strength, &r, &d->err);
    if (rc) {
      fr_unet_control_free(&per[0]);
      fr_unet_control_free(&per[1]);
      return rc;
    }
    if (!any[hi]) {
      per[hi] = r;
      any[hi] = true;
      continue;
    }
    for (int k = 0; k < r.n_down; k++)
      fr_add_inplace(d->c, per[hi].down[k], r.down[k]);
    fr_add_inplace(d->c, per[hi].mid, r.mid);
    fr_unet_control_free(&r);
  }
  if (!any[0] && !any[1])
    return FR_OK;
  int ref = any[0] ? 0 : 1;
  int nd = per[ref].n_down;
  all->n_down = nd;
  for (int k = 0; k <= nd; k++) {
    struct fr_tensor *parts[2], *zero[2] = {NULL, NULL};
    for (int h = 0; h < d->halves; h++) {
      struct fr_tensor *src = k < nd ? per[h].down[k] : per[h].mid;
      if (!any[h]) {
        struct fr_tensor *like = k < nd ? per[ref].down[k] : per[ref].mid;
        src = zero[h] = fr_affine(d->c, like, 0.0f, 0.0f);
      }
      parts[h] = src;
    }
    struct fr_tensor *cat = fr__cat2(d->c, parts, d->halves);
    fr_tensor_free(zero[0]);
    fr_tensor_free(zero[1]);
    if (k < nd)
      all->down[k] = cat;
    else
      all->mid = cat;
  }
  fr_unet_control_free(&per[0]);
  fr_unet_control_free(&per[1]);
  return fr_ctx_status(d->c, &d->err);
}

/* The denoised sample from the model's output e (host, [halves * n]; eps or v): classifier-free guidance,
 * then c_skip x + c_out e (eps: x - sigma eps; nodes/sampling/prediction.h). */
static void fr__cfg_out(const struct fr__den *d, const float *x, int64_t n, double sigma, const float *e,
                        float *out) {
  double c_skip, c_out;
  fr_pred_coeffs((enum fr_prediction)d->pred, sigma, &c_skip, &c_out);
  for (int64_t i = 0; i < n; i++) {
    double ep = d->halves == 2 ? e[i] + d->cfg * ((double)e[n + i] - e[i]) : e[i];
    out[i] = (float)(c_skip * x[i] + c_out * ep);
  }
}

/* The ControlNets' input from the UNet's (device [NB, cin, h, w]): the first CFG half's latent channels
 * [B, C, h, w] (without an inpainting model's concat channels, as ComfyUI gives its ControlNets x). */
static struct fr_tensor *fr__ctl_input(struct fr__den *d, const struct fr_tensor *x) {
  struct fr_tensor *xh = d->halves == 2 ? fr_slice(d->c, x, 0, 0, d->B) : fr_copy(d->c, x);
  if (xh && d->cin != d->C) {
    struct fr_tensor *lat = fr_slice(d->c, xh, 1, 0, d->C);
    fr_tensor_free(xh);
    xh = lat;
  }
  return xh;
}

/* One step through the recording: hx the scaled input (host [NB, C, h, w]), t the timestep, sigma its
 * noise level (which ControlNets apply); *he the downloaded eps. Returns FR_OK, an error, or
 * FR_E_UNSUPPORTED when recording is not possible or failed (then the caller runs the step eagerly; a
 * failure is reported once as a warning). */
static enum fr_status fr__denoise_recorded(struct fr__den *d, const struct fr_tensor *hx, float t,
                                           double sigma, struct fr_tensor **he) {
  struct fr_ctx *c = d->c;
  const struct fr_unet *u = d->m->unet;
  int mc = u->cfg.model_channels;
  *he = NULL;
  struct fr_tensor *hs = fr_tensor_f32(2, (int64_t[]){1, mc}); /* [1, model_channels] */
  if (!hs)
    return fr_errf(&d->err, FR_E_NOMEM, "out of memory");
  fr_timestep_sinusoid(&t, 1, mc, true, 0.0f, 10000.0f, hs->data);
  enum fr_status rc = FR_OK;
  struct fr_err e = {{0}};
  if (d->r.state == 0) {
    d->r.x = fr_ctx_upload(c, hx);
    d->r.t_sin = fr_ctx_upload(c, hs);
    if (u->cfg.adm_in_channels > 0) {
      struct fr_unet_cond parts = {.context = d->ctx_all, .text_embeds = d->te_all, .time_ids = d->tid_all};
      d->r.y = fr_unet_added_cond(c, u, &parts);
    }
    rc = fr_ctx_status(c, &d->err);
    if (!rc) {
      rc = fr_ctx_record_begin(c, &e);
      if (!rc) {
        d->recordings++;
        d->r.mask = fr__ctl_mask(d, sigma);
        struct fr_unet_control ctl;
        memset(&ctl, 0, sizeof ctl);
        enum fr_status crc = FR_OK;
        if (d->r.mask) { /* failures of ops: at record_end; the ControlNet's own checks: crc */
          struct fr_tensor *xh = fr__ctl_input(d, d->r.x);
          if (xh)
            crc = fr__controls(d, xh, NULL, d->r.t_sin, sigma, &ctl);
          fr_tensor_free(xh);
        }
        struct fr_unet_cond cond = {.context = d->ctx_all, .y = d->r.y, .t_sin = d->r.t_sin};
        if (!crc)
          fr_unet_forward(c, u, d->r.x, NULL, &cond, ctl.mid ? &ctl : NULL, &d->r.eps, &e);
        fr_unet_control_free(&ctl);
        rc = fr_ctx_record_end(c, &d->r.rec, &e);
        if (!rc && crc) { /* the eager step reports the ControlNet's error */
          fr_recording_free(d->r.rec);
          d->r.rec = NULL;
          rc = crc;
        } else if (rc) {
          fr_node_warn(d->nc, "recording the sampler step failed (%s); running it eagerly", e.msg);
        }
      }
      if (rc) {
        fr_ctx_clear(c);
        rc = FR_E_UNSUPPORTED;
      }
    }
    d->r.state = rc ? -1 : 1;
  } else {
    rc = fr_ctx_write(c, d->r.x, hx, &d->err);
    if (!rc)
      rc = fr_ctx_write(c, d->r.t_sin, hs, &d->err);
  }
  fr_tensor_free(hs);
  if (!rc && !(rc = fr_recording_replay(d->r.rec, &d->err)))
    d->replays++;
  if (!rc && !(*he = fr_ctx_download(c, d->r.eps)))
    rc = fr_ctx_status(c, &d->err);
  if (rc == FR_E_UNSUPPORTED)
    fr__rec_drop(d), d->r.state = -1;
  return rc;
}

/* One UNet step run op by op (with the ControlNets that apply at sigma): hx the scaled input (host
 * [NB, C, h, w]), t the timestep; *he the downloaded eps. */
static enum fr_status fr__denoise_eager(struct fr__den *d, const struct fr_tensor *hx, float t, double sigma,
                                        struct fr_tensor **he) {
  struct fr_ctx *c = d->c;
  *he = NULL;
  /* t stays a host fp32 tensor: the UNet and ControlNets embed it before any rounding to the compute
   * dtype (in BF16, t = 999 would become 1000). */
  struct fr_tensor *ht = fr_tensor_f32(1, (int64_t[]){1});
  if (!ht)
    return fr_errf(&d->err, FR_E_NOMEM, "out of memory");
  ((float *)ht->data)[0] = t;
  struct fr_tensor *dx = fr_ctx_upload(c, hx), *eps = NULL;
  struct fr_unet_control ctl;
  memset(&ctl, 0, sizeof ctl);
  enum fr_status rc = dx ? FR_OK : fr_ctx_status(c, &d->err);
  if (!rc && d->n_ctl) {
    struct fr_tensor *xh = fr__ctl_input(d, dx);
    rc = xh ? fr__controls(d, xh, ht, NULL, sigma, &ctl) : fr_ctx_status(c, &d->err);
    fr_tensor_free(xh);
  }
  if (!rc) {
    struct fr_unet_cond cond = {.context = d->ctx_all, .text_embeds = d->te_all, .time_ids = d->tid_all};
    rc = fr_unet_forward(c, d->m->unet, dx, ht, &cond, ctl.mid ? &ctl : NULL, &eps, &d->err);
  }
  if (!rc && !(*he = fr_ctx_download(c, eps)))
    rc = fr_ctx_status(c, &d->err);
  fr_unet_control_free(&ctl);
  fr_tensor_free(dx);
  fr_tensor_free(ht);
  fr_tensor_free(eps);
  return rc;
}

/* The model's x0 prediction for x (n floats, VE space) at sigma: one UNet evaluation of every CFG half
 * (recorded or eager), then guidance. *keep (when not NULL) receives the UNet's host input
 * [NB, cin, h, w] (the caller frees it). */
static enum fr_status fr__denoise(struct fr__den *d, const float *x, int64_t n, double sigma, double t,
                                  float *out, struct fr_tensor **keep) {
  struct fr_ctx *c = d->c;
  int64_t NB = d->B * d->halves, hw = d->h * d->w;
  float s = (float)(1.0 / sqrt(sigma * sigma + 1.0));
  struct fr_tensor *hx = fr_tensor_f32(4, (int64_t[]){NB, d->cin, d->h, d->w});
  if (!hx)
    return fr_errf(&d->err, FR_E_NOMEM, "out of memory");
  float *hd = hx->data;
  int h0 = d->halves == 2 ? 0 : 1;
  for (int h = 0; h < d->halves; h++)
    for (int64_t b = 0; b < d->B; b++) { /* [x * s, then the concat channels (not scaled), as ComfyUI] */
      float *dst = hd + (h * d->B + b) * d->cin * hw;
      for (int64_t i = 0; i < d->per; i++)
        dst[i] = x[b * d->per + i] * s;
      if (d->cin > d->C)
        memcpy(dst + d->per, (const float *)d->cat[h0 + h]->data + b * (d->cin - d->C) * hw,
               (size_t)((d->cin - d->C) * hw) * sizeof(float));
    }
  struct fr_tensor *he = NULL;
  enum fr_status rc = FR_E_UNSUPPORTED;
  d->evals++;
  bool rec = d->r.state >= 0 && fr__ctl_recordable(d) && fr_ctx_can_record(c);
  if (rec && d->r.state == 1 && d->r.mask != fr__ctl_mask(d, sigma)) {
    fr__rec_drop(d); /* another set of ControlNets from here on: one eager step, then a new recording */
    if (d->recordings >= FR__MAX_RECORDINGS)
      d->r.state = -1, rec = false;
  }
  if (rec && d->r.eager >= 1)
    rc = fr__denoise_recorded(d, hx, (float)t, sigma, &he);
  if (rc == FR_E_UNSUPPORTED) { /* not recorded (yet, or here at all) */
    d->r.eager++;
    rc = fr__denoise_eager(d, hx, (float)t, sigma, &he);
  }
  if (keep && !rc)
    *keep = hx;
  else
    fr_tensor_free(hx);
  if (rc) {
    fr_tensor_free(he);
    fr_ctx_clear(c);
    return rc;
  }
  fr__cfg_out(d, x, n, sigma, he->data, out);
  fr_tensor_free(he);
  return FR_OK;
}

/* The noise-mask step before the model (ComfyUI's KSamplerX0Inpaint): x_in = x m + (orig + noise sigma)
 * (1 - m), in float as ComfyUI's fp32 tensors. */
static void fr__mask_in(const struct fr__den *d, const float *x, int64_t n, double sigma, float *xin) {
  float sg = (float)sigma;
  for (int64_t i = 0; i < n; i++) {
    float m = d->mask[i];
    xin[i] = x[i] * m + (d->orig[i] + d->unit_noise[i] * sg) * (1.0f - m);
  }
}

/* ... and after it: the prediction is the original latent where the mask is 0: out m + orig (1 - m). */
static void fr__mask_out(const struct fr__den *d, int64_t n, float *out) {
  for (int64_t i = 0; i < n; i++) {
    float m = d->mask[i];
    out[i] = out[i] * m + d->orig[i] * (1.0f - m);
  }
}

/* The denoiser the samplers call: the noise-mask step around fr__denoise (when the latent has a mask),
 * and the test observer (fr_pipe_set_observer). */
static enum fr_status fr__denoise_cb(void *user, const float *x, int64_t n, double sigma, double t,
                                     float *out) {
  struct fr__den *d = user;
  const float *xin = x;
  if (d->mask) {
    fr__mask_in(d, x, n, sigma, d->xin);
    xin = d->xin;
  }
  struct fr_tensor *hx = NULL;
  enum fr_status rc = fr__denoise(d, xin, n, sigma, t, out, fr__observer.eval ? &hx : NULL);
  if (rc)
    return rc;
  if (d->mask)
    fr__mask_out(d, n, out);
  if (fr__observer.eval)
    fr__observer.eval(fr__observer.user, d->evals - 1, sigma, x, xin, hx, out, n);
  fr_tensor_free(hx);
  return FR_OK;
}

/* Latent -> RGB preview by a linear map of the 4 latent channels (the approximation ComfyUI's previews
 * use; factors fitted for SD1.x and SDXL latents). [1, h, w, 3] of the first sample. */
static const float fr__rgb_sd15[4][3] = {{0.3512f, 0.2297f, 0.3227f},
                                         {0.3250f, 0.4974f, 0.2350f},
                                         {-0.2829f, 0.1762f, 0.2721f},
                                         {-0.2120f, -0.2616f, -0.7177f}};
static const float fr__rgb_sdxl[4][3] = {{0.3651f, 0.4232f, 0.4341f},
                                         {-0.2533f, -0.0042f, 0.1068f},
                                         {0.1076f, 0.1111f, -0.0362f},
                                         {-0.3165f, -0.2492f, -0.2188f}};
static const float fr__bias_sdxl[3] = {0.1084f, -0.0175f, -0.0011f};

static enum fr_status fr__progress(void *user, int step, int steps, const float *x, const float *den) {
  struct fr__den *d = user;
  (void)x;
  struct fr_tensor *p = d->C == 4 ? fr_tensor_f32(4, (int64_t[]){1, d->h, d->w, 3}) : NULL;
  if (p) {
    int64_t hw = d->h * d->w;
    for (int64_t i = 0; i < hw; i++)
      for (int ch = 0; ch < 3; ch++) {
        float v = d->xl ? fr__bias_sdxl[ch] : 0.0f;
        for (int c = 0; c < 4; c++)
          v += den[c * hw + i] * (d->xl ? fr__rgb_sdxl : fr__rgb_sd15)[c][ch];
        v = (v + 1.0f) * 0.5f;
        ((float *)p->data)[i * 3 + ch] = v < 0 ? 0 : v > 1 ? 1 : v;
      }
  }
  enum fr_status rc = fr_node_progress(d->nc, step, steps, p);
  fr_tensor_free(p);
  return rc;
}

/* The seed's unit noise for the latent lv (n floats, B samples): one torch.randn draw of the whole batch,
 * or, for latents taken out of a batch (their "batch_index"), each sample's slice of the batch it came
 * from: ComfyUI's prepare_noise draws one [1, ...] sample after another up to the largest index. */
static enum fr_status fr__draw_noise(struct fr_node_ctx *nc, const struct fr_value *lv, uint64_t seed,
                                     int64_t B, float *noise, int64_t n) {
  struct fr_torch_gen g;
  fr_torch_gen_seed(&g, seed);
  const struct fr_tensor *bi = fr_value_get_tensor(lv, "batch_index");
  if (!bi) {
    fr_torch_randn(&g, noise, n);
    return FR_OK;
  }
  int64_t per = n / B, top = -1;
  if (bi->dtype != FR_F32 || fr_tensor_numel(bi) != B)
    return fr_node_fail(nc, FR_E_SHAPE, "input 'latent': batch_index does not match its batch of %lld",
                        (long long)B);
  for (int64_t b = 0; b < B; b++) {
    float v = ((const float *)bi->data)[b];
    if (!(v >= 0 && v < 65536 && v == floorf(v)))
      return fr_node_fail(nc, FR_E_INVALID, "input 'latent': batch_index %g is not a small whole number", v);
    top = (int64_t)v > top ? (int64_t)v : top;
  }
  float *one = fr_malloc((size_t)per * sizeof(float));
  if (!one)
    return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
  for (int64_t k = 0; k <= top; k++) {
    fr_torch_randn(&g, one, per);
    for (int64_t b = 0; b < B; b++)
      if ((int64_t)((const float *)bi->data)[b] == k)
        memcpy(noise + b * per, one, (size_t)per * sizeof(float));
  }
  fr_free(one);
  return FR_OK;
}

/* Output 0: the latent x (taken) with the input latent's other fields (its noise mask), as ComfyUI's
 * samplers return a copy of the input latent with new samples, and latent_format fmt. */
static enum fr_status fr__out_latent(struct fr_node_ctx *nc, const struct fr_value *in, struct fr_tensor *x,
                                     const char *fmt) {
  struct fr_value *v = fr_value_tensor(FR_T_LATENT, "samples", x);
  if (v && fr_value_add_string(v, "latent_format", fmt)) {
    fr_value_unref(v);
    v = NULL;
  }
  for (int i = 0; v && i < in->n_fields; i++) {
    const struct fr_field *f = &in->fields[i];
    if (!strcmp(f->name, "samples") || !strcmp(f->name, "latent_format"))
      continue;
    struct fr_tensor *t = f->t ? fr_tensor_clone(f->t) : NULL;
    if (f->t ? (!t || fr_value_add_tensor(v, f->name, t))
             : fr_value_add_string(v, f->name, f->str ? f->str : "")) {
      fr_value_unref(v);
      v = NULL;
    }
  }
  return v ? fr_out_set(nc, 0, v) : fr_node_fail(nc, FR_E_NOMEM, "out of memory");
}

/* The noise mask (prepared to the latent's shape: ComfyUI's prepare_mask) and an inpainting model's concat
 * channels per CFG half. nmask: the latent's noise_mask or NULL; orig: the latent before noise (set when
 * either is needed); noise: the unit noise added (zeros without add_noise). */
static enum fr_status fr__inpaint_setup(struct fr__den *d, const struct fr_tensor *nmask,
                                        const struct fr_tensor *orig, const float *noise,
                                        const struct fr_value *pos, const struct fr_value *neg) {
  if (nmask) {
    d->pmask = fr_pipe_prepare_mask(nmask, d->B, d->C, d->h, d->w);
    d->xin = fr_malloc((size_t)(d->B * d->per) * sizeof(float));
    if (!d->pmask || !d->xin)
      return fr_node_fail(d->nc, FR_E_NOMEM, "out of memory");
    d->mask = d->pmask->data;
    d->orig = orig->data;
    d->unit_noise = noise;
  }
  for (int h = d->use_cfg ? 0 : 1; d->cin != d->C && h < 2; h++) {
    struct fr_err err = {{0}};
    if (!(d->cat[h] = fr_pipe_concat_cond(h ? pos : neg, d->pmask, orig, &err)))
      return fr_node_fail(d->nc, err.msg[0] ? FR_E_SHAPE : FR_E_NOMEM, "input '%s': %s",
                          h ? "positive" : "negative", err.msg[0] ? err.msg : "out of memory");
  }
  return FR_OK;
}

enum fr_status fr_pipe_sample(struct fr_node_ctx *nc, const struct fr_pipe_sample_args *a) {
  const struct fr_value *lv = fr_in(nc, "latent"), *pos = fr_in(nc, "positive"), *neg = fr_in(nc, "negative");
  const struct fr_tensor *lat = lv ? fr_value_get_tensor(lv, "samples") : NULL;
  if (!lat || lat->ndim != 4)
    return fr_node_fail(nc, FR_E_INVALID, "input 'latent': expected a LATENT [B, 4, h, w]");
  if (!pos || !fr_value_get_tensor(pos, "context"))
    return fr_node_fail(nc, FR_E_INVALID, "input 'positive': no CONDITIONING connected");
  if (!neg || !fr_value_get_tensor(neg, "context"))
    return fr_node_fail(nc, FR_E_INVALID, "input 'negative': no CONDITIONING connected");
  if (a->noise && !fr_tensor_same_shape(a->noise, lat)) {
    char s1[64], s2[64];
    return fr_node_fail(nc, FR_E_SHAPE, "input 'noise': shape %s differs from the latent's %s",
                        fr_shape_str(a->noise, s1, sizeof s1), fr_shape_str(lat, s2, sizeof s2));
  }
  struct fr_pipe_comp *m;
  enum fr_status rc = fr_pipe_get(nc, "model", FR_T_MODEL, &m);
  if (rc)
    return rc;
  const struct fr_unet_config *uc = &m->unet->cfg;
  if (lat->shape[1] != uc->out_channels)
    return fr_node_fail(nc, FR_E_SHAPE, "input 'latent': %lld channels, the model takes %d",
                        (long long)lat->shape[1], uc->out_channels);
  if (uc->in_channels != uc->out_channels && uc->in_channels != uc->out_channels + 5)
    return fr_node_fail(
        nc, FR_E_UNSUPPORTED,
        "input 'model': a UNet taking %d input channels for %d latent channels (an inpainting "
        "model takes %d: latent, mask and masked image) is not supported",
        uc->in_channels, uc->out_channels, uc->out_channels + 5);
  const struct fr_tensor *nmask = fr_value_get_tensor(lv, "noise_mask");
  if (nmask && !((nmask->ndim == 4 && nmask->shape[1] == 1) || nmask->ndim == 3))
    return fr_node_fail(nc, FR_E_SHAPE, "input 'latent': its noise_mask must be [B, 1, H, W] or [B, H, W]");
  int64_t mult = (int64_t)1 << (uc->levels - 1);
  if (lat->shape[2] % mult || lat->shape[3] % mult)
    return fr_node_fail(nc, FR_E_SHAPE,
                        "input 'latent': %lldx%lld is not a multiple of %lld (the UNet's levels)",
                        (long long)lat->shape[3], (long long)lat->shape[2], (long long)mult);

  struct fr_model_sched *ms = fr_malloc(sizeof *ms);
  struct fr_schedule *s = fr_malloc(sizeof *s);
  struct fr_tensor *x = fr_tensor_to_f32(lat);
  float *noise = NULL;
  struct fr_tensor *orig = NULL;
  struct fr__den d = {.nc = nc, .m = m, .c = m->c, .cfg = a->cfg, .cin = uc->in_channels};
  if (!ms || !s || !x) {
    rc = fr_node_fail(nc, FR_E_NOMEM, "out of memory");
    goto done;
  }
  fr_model_sched_sd(ms);
  const char *lfmt = fr_value_get_string(lv, "latent_format");
  if (lfmt && !strcmp(lfmt, "sd1-assumed") && uc->adm_in_channels > 0) /* a bare VAE's SDXL latent */
    for (int64_t i = 0; i < fr_tensor_numel(x); i++)
      ((float *)x->data)[i] *= (float)(0.13025 / 0.18215);
  bool zsnr = false;
  fr_pipe_model_sampling(nc, (const struct fr_pipe_obj *)fr_in(nc, "model")->obj, m, &d.pred, &zsnr);
  if (zsnr)
    fr_model_sched_zsnr(ms);
  struct fr_sampling_plan plan; /* ComfyUI's or diffusers' rules by schedule name (sampling.h) */
  fr_sampling_plan_make(a->sampler, a->scheduler, &plan);
  const char *sname = plan.sampler;
  struct fr_err err = {{0}};
  rc = fr_schedule_make(ms, a->scheduler, a->steps, a->denoise, &plan.opts, s, &err);
  if (rc) {
    rc = fr_node_fail(nc, rc, "%s", err.msg);
    goto done;
  }
  int start = a->start_step < 0 ? 0 : a->start_step, end = a->end_step < s->steps ? a->end_step : s->steps;
  if (start >= end) { /* nothing to do: the latent passes through, as ComfyUI's KSamplerAdvanced */
    rc = fr__out_latent(nc, lv, x, uc->adm_in_channels > 0 ? "sdxl" : "sd1"); /* rescaled above if need be */
    x = NULL;
    goto done;
  }
  bool to_end = end == s->steps;
  if (start > 0 || !to_end) {
    int k = end - start;
    memmove(s->sigmas, s->sigmas + start, (size_t)(k + 1) * sizeof(double));
    memmove(s->timesteps, s->timesteps + start, (size_t)(k + 1) * sizeof(double));
    s->steps = k;
    if (!to_end && !a->leftover_noise) {
      s->sigmas[k] = 0; /* finish the denoising early, ComfyUI's force_full_denoise */
      s->timesteps[k] = 0;
      to_end = true;
    }
  }
  int64_t n = fr_tensor_numel(x);
  if (nmask || d.cin != x->shape[1]) { /* the latent before noise: the masked step's original */
    if (!(orig = fr_tensor_clone(x))) {
      rc = fr_node_fail(nc, FR_E_NOMEM, "out of memory");
      goto done;
    }
  }
  if (a->add_noise || nmask) {
    noise = fr_calloc((size_t)n, sizeof(float)); /* zeros without add_noise, as ComfyUI's disable_noise */
    if (!noise) {
      rc = fr_node_fail(nc, FR_E_NOMEM, "out of memory");
      goto done;
    }
  }
  if (a->add_noise) {
    if (a->noise) {
      struct fr_tensor *nf = fr_tensor_to_f32(a->noise);
      if (!nf) {
        rc = fr_node_fail(nc, FR_E_NOMEM, "out of memory");
        goto done;
      }
      memcpy(noise, nf->data, (size_t)n * sizeof(float));
      fr_tensor_free(nf);
    } else if ((rc = fr__draw_noise(nc, lv, a->seed, x->shape[0], noise, n))) {
      goto done;
    }
    /* From the start of a full schedule: noise * sqrt(1 + sigma^2) (ComfyUI's max_denoise; diffusers'
     * init_noise_sigma of its VP-space schedulers: DDIM, DDPM, DPM-Solver, UniPC, LCM, and of the
     * k-diffusion ones with "leading" spacing); otherwise the latent plus noise at the first sigma
     * (img2img, hand-offs). diffusers' Euler/Heun/LMS/KDPM2 schedulers with linspace or trailing spacing
     * start at noise * sigma_max instead (their init_noise_sigma), so those diffusers spacings do too. */
    double s0 = s->sigmas[0];
    double scale = start == 0 && a->denoise >= 1.0 && !plan.sigma_start ? sqrt(1.0 + s0 * s0) : s0;
    for (int64_t i = 0; i < n; i++)
      ((float *)x->data)[i] += (float)(noise[i] * scale);
  }
  d.B = x->shape[0];
  d.C = x->shape[1];
  d.h = x->shape[2];
  d.w = x->shape[3];
  d.per = n / d.B;
  d.use_cfg = a->cfg != 1.0;
  d.halves = d.use_cfg ? 2 : 1;
  d.xl = uc->adm_in_channels > 0;
  if ((rc = fr__inpaint_setup(&d, nmask, orig, noise, pos, neg)))
    goto done;
  {
    const struct fr_tensor *cp = fr_value_get_tensor(pos, "context"),
                           *cn = fr_value_get_tensor(neg, "context");
    int64_t tp = cp->shape[1], tn = cn->shape[1];
    int64_t T = d.use_cfg ? tp / fr__gcd(tp, tn) * tn : tp;
    if (cp->ndim != 3 || cn->ndim != 3 || T > 77 * 64) {
      rc = fr_node_fail(nc, FR_E_SHAPE, "conditioning: contexts of %lld and %lld tokens cannot be combined",
                        (long long)tp, (long long)tn);
      goto done;
    }
    if (d.use_cfg && (rc = fr__setup_half(&d, 0, neg, "negative", T, ms)))
      goto done;
    if ((rc = fr__setup_half(&d, 1, pos, "positive", T, ms)))
      goto done;
  }
  {
    int h0 = d.use_cfg ? 0 : 1;
    d.ctx_all = fr__cat2(d.c, d.ctx + h0, d.halves);
    if (d.te[1]) {
      d.te_all = fr__cat2(d.c, d.te + h0, d.halves);
      d.tid_all = fr__cat2_host(d.tid + h0, d.halves);
      if (!d.tid_all)
        fr_ctx_fail(d.c, FR_E_NOMEM, "out of memory for the size conditioning");
    }
    if ((rc = fr_ctx_status(d.c, &err))) {
      fr_ctx_clear(d.c);
      rc = fr_node_fail(nc, rc, "%s", err.msg);
      goto done;
    }
  }
  struct fr_sampler_io io = {.denoise = fr__denoise_cb,
                             .denoise_user = &d,
                             .seed = a->seed,
                             .progress = fr__progress,
                             .progress_user = &d,
                             .model = ms,
                             .eta = 1.0,
                             .uni_pc_variant = plan.uni_pc_variant,
                             .lcm_boundary = plan.lcm_boundary};
  rc = fr_sample(sname, &io, s, x->data, n, &err);
  if (rc == FR_E_CANCELLED) {
    rc = fr_node_fail(nc, rc, "cancelled");
    goto done;
  }
  if (rc) {
    rc = fr_node_fail(nc, rc, "%s", d.err.msg[0] ? d.err.msg : err.msg);
    goto done;
  }
  /* NaN/inf: say where it came in (the input latent, else the model), the run goes on as in ComfyUI */
  if (!fr_node_warn_nonfinite(nc, "input 'latent'", lat))
    fr_node_warn_nonfinite(nc, "the sampled latent", x);
  /* A schedule that ends above sigma 0 (diffusers' DDIM with set_alpha_to_one=False) ends in VP space, as
   * diffusers' latents do. */
  double last = s->sigmas[s->steps];
  if (to_end && last > 0)
    for (int64_t i = 0; i < n; i++)
      ((float *)x->data)[i] = (float)(((float *)x->data)[i] / sqrt(1.0 + last * last));
  if (d.mask && to_end && last == 0) /* the unmasked region ends exactly at the original */
    fr__mask_out(&d, n, x->data);
  if (d.replays) /* says that the recorded replays worked (tests/gpu/ checks read it) */
    fr_node_info(nc, "%d of %d model evaluations replayed from %d recording%s (CUDA graphs)", d.replays,
                 d.evals, d.recordings, d.recordings == 1 ? "" : "s");
  /* the model family, for VAEDecode with a bare VAE file (which has no scaling factor of its own) */
  rc = fr__out_latent(nc, lv, x, d.xl ? "sdxl" : "sd1");
  x = NULL;
done:
  fr__den_free(&d);
  fr_tensor_free(orig);
  fr_tensor_free(x);
  fr_free(noise);
  fr_free(ms);
  fr_free(s);
  return rc;
}

/* ---- Sampler ---- */

static enum fr_status fr__sampler_run(struct fr_node_ctx *nc) {
  const struct fr_value *nv = fr_in_has(nc, "noise") ? fr_in(nc, "noise") : NULL;
  struct fr_pipe_sample_args a = {
      .seed = (uint64_t)fr_in_int(nc, "seed"),
      .steps = (int)fr_in_int(nc, "steps"),
      .start_step = (int)fr_in_int(nc, "start_step"),
      .end_step = (int)fr_in_int(nc, "end_step"),
      .cfg = fr_in_float(nc, "cfg"),
      .denoise = fr_in_float(nc, "denoise"),
      .sampler = fr_in_str(nc, "sampler"),
      .scheduler = fr_in_str(nc, "scheduler"),
      .add_noise = fr_in_bool(nc, "add_noise"),
      .leftover_noise = fr_in_bool(nc, "return_with_leftover_noise"),
      .noise = nv ? fr_value_get_tensor(nv, "samples") : NULL,
  };
  return fr_pipe_sample(nc, &a);
}

#define FR__COMMON_IN                                                                                          \
  {"model", FR_T_MODEL, NULL, 0, -1, NULL, 0, "UNet from CheckpointLoader"},                                   \
      {"positive", FR_T_CONDITIONING, NULL, 0, -1, NULL, 0, "what the image should show"},                     \
      {"negative", FR_T_CONDITIONING, NULL, 0, -1, NULL, 0, "what it should not (the CFG unconditional)"},     \
      {"latent", FR_T_LATENT, NULL, 0, -1, NULL, 0, "start latent (EmptyLatent, VAEEncode, a base's output)"}, \
      {"seed",                                                                                                 \
       FR_T_INT,                                                                                               \
       "0",                                                                                                    \
       0,                                                                                                      \
       9007199254740991.0,                                                                                     \
       NULL,                                                                                                   \
       FR_IN_SEED,                                                                                             \
       "noise seed: torch.randn on the CPU generator, as ComfyUI"},                                            \
      {"steps", FR_T_INT, "20", 1, FR_MAX_STEPS, NULL, 0, "steps of the schedule"},                            \
      {"cfg", FR_T_FLOAT, "7.0", 0, 100, NULL, 0, "classifier-free guidance scale (1: no guidance)"},          \
      {"sampler", FR_T_ENUM, "euler", 0, -1, fr_pipe_sampler_names, 0, "sampler (ComfyUI's names)"}, {         \
    "scheduler", FR_T_ENUM, "normal", 0, -1, fr_schedule_names, 0,                                             \
        "sigma schedule: ComfyUI's names, or diffusers' (linspace, linspace_karras, leading, ...: "            \
        "docs/sampling.md)"                                                                                    \
  }

static const struct fr_input_spec fr__sampler_in[] = {
    FR__COMMON_IN,
    {"denoise", FR_T_FLOAT, "1.0", 0, 1, NULL, 0, "fraction of the schedule to run (img2img strength)"},
    {"start_step", FR_T_INT, "0", 0, FR_MAX_STEPS, NULL, 0, "first step to run (hand-offs)"},
    {"end_step", FR_T_INT, "10000", 0, 10000, NULL, 0, "step to stop at (exclusive)"},
    {"add_noise", FR_T_BOOL, "true", 0, -1, NULL, 0, "add the seed's noise to the latent first"},
    {"return_with_leftover_noise", FR_T_BOOL, "false", 0, -1, NULL, 0,
     "stopping at end_step: return the still-noisy latent (for a refiner) instead of finishing"},
    {"noise", FR_T_LATENT, NULL, 0, -1, NULL, FR_IN_OPTIONAL,
     "unit-variance noise replacing the seeded draw"},
};
static const struct fr_output_spec fr__latent_out[] = {{"latent", FR_T_LATENT, "sampled latents"}};
const struct fr_node_spec fr_node_sampler = {
    "Sampler",
    3, /* 2: size conditioning 0 = the latent's size (ComfyUI's CLIPTextEncode on SDXL); 3: lcm with the
          lcm schedule applies LCMScheduler's boundary condition */
    "sampling",
    "Denoises a latent with a model, positive and negative conditioning, a sampler and a schedule.",
    fr__sampler_in,
    FR_COUNT(fr__sampler_in),
    fr__latent_out,
    FR_COUNT(fr__latent_out),
    0,
    fr__sampler_run};

/* ---- Refiner ---- */

static enum fr_status fr__refiner_run(struct fr_node_ctx *nc) {
  struct fr_pipe_sample_args a = {
      .seed = (uint64_t)fr_in_int(nc, "seed"),
      .steps = (int)fr_in_int(nc, "steps"),
      .start_step = (int)fr_in_int(nc, "switch_step"),
      .end_step = 10000,
      .cfg = fr_in_float(nc, "cfg"),
      .denoise = 1.0,
      .sampler = fr_in_str(nc, "sampler"),
      .scheduler = fr_in_str(nc, "scheduler"),
      .add_noise = false,
  };
  return fr_pipe_sample(nc, &a);
}
static const struct fr_input_spec fr__refiner_in[] = {
    FR__COMMON_IN,
    {"switch_step", FR_T_INT, "16", 0, FR_MAX_STEPS, NULL, 0,
     "step where the base stopped (its end_step); the refiner runs from here to the end"},
};
const struct fr_node_spec fr_node_refiner = {
    "Refiner",
    3, /* 2, 3: as the Sampler */
    "sampling",
    "Finishes an SDXL base latent (returned with leftover noise) with the refiner from the switch step: "
    "the \"ensemble of experts\" hand-off.",
    fr__refiner_in,
    FR_COUNT(fr__refiner_in),
    fr__latent_out,
    FR_COUNT(fr__latent_out),
    0,
    fr__refiner_run};
