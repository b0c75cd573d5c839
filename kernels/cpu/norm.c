/* Normalisations and softmax on the CPU. Statistics are accumulated in double (SD's GroupNorm groups
 * hold up to 40 x 128 x 128 values, where a float sum would lose digits); outputs are fp32. */
#include <math.h>

#include "kernels/cpu/cpu.h"

struct fr__gn {
  const float *x, *gamma, *beta;
  float *y;
  int64_t C, S, groups;
  float eps;
  bool silu;
};

static void fr__gn_task(void *argp, int64_t i0, int64_t i1, int part) {
  const struct fr__gn *a = argp;
  int64_t cpg = a->C / a->groups, n = cpg * a->S;
  for (int64_t i = i0; i < i1; i++) { /* i = b * groups + g: one contiguous group */
    const float *x = a->x + i * n;
    float *y = a->y + i * n;
    double mean, var; /* biased, as torch */
    fr_cpu_vec()->mean_var(x, n, &mean, &var);
    float rstd = (float)(1.0 / sqrt(var + a->eps)), fmean = (float)mean;
    int64_t c0 = (i % a->groups) * cpg;
    for (int64_t c = 0; c < cpg; c++) {
      float g = a->gamma ? a->gamma[c0 + c] : 1.0f, bb = a->beta ? a->beta[c0 + c] : 0.0f;
      float sc = rstd * g, sh = bb - fmean * sc; /* y = x * sc + sh */
      const float *xc = x + c * a->S;
      float *yc = y + c * a->S;
      fr_cpu_vec()->affine_silu(yc, xc, a->S, sc, sh, a->silu);
    }
  }
}

enum fr_status fr_cpu_group_norm(void *b, struct fr_tensor *y, const struct fr_tensor *x, int groups,
                                 const struct fr_tensor *gamma, const struct fr_tensor *beta, float eps,
                                 bool silu, struct fr_err *err) {
  struct fr_cpu *cpu = b;
  int64_t B = x->shape[0], C = x->shape[1];
  if (fr_tensor_numel(x) == 0)
    return FR_OK;
  int64_t S = fr_tensor_numel(x) / (B * C);
  struct fr__gn a = {
      x->data, gamma ? gamma->data : NULL, beta ? beta->data : NULL, y->data, C, S, groups, eps, silu};
  fr_cpu_parallel(cpu->pool, B * groups, 1, fr__gn_task, &a);
  return FR_OK;
}

struct fr__ln {
  const float *x, *gamma, *beta;
  float *y;
  int64_t C;
  float eps;
};

static void fr__ln_task(void *argp, int64_t r0, int64_t r1, int part) {
  const struct fr__ln *a = argp;
  const struct fr_cpu_vec *vec = fr_cpu_vec();
  for (int64_t r = r0; r < r1; r++) {
    const float *x = a->x + r * a->C;
    float *y = a->y + r * a->C;
    double mean, var;
    vec->mean_var(x, a->C, &mean, &var);
    float rstd = (float)(1.0 / sqrt(var + a->eps));
    vec->norm_affine(y, x, a->C, (float)mean, rstd, a->gamma, a->beta);
  }
}

enum fr_status fr_cpu_layer_norm(void *b, struct fr_tensor *y, const struct fr_tensor *x,
                                 const struct fr_tensor *gamma, const struct fr_tensor *beta, float eps,
                                 struct fr_err *err) {
  struct fr_cpu *cpu = b;
  int64_t C = x->shape[x->ndim - 1];
  if (C == 0)
    return FR_OK;
  struct fr__ln a = {x->data, gamma ? gamma->data : NULL, beta ? beta->data : NULL, y->data, C, eps};
  fr_cpu_parallel(cpu->pool, fr_tensor_numel(x) / C, 4, fr__ln_task, &a);
  return FR_OK;
}

struct fr__sm {
  float *x;
  int64_t n;
};

static void fr__sm_task(void *argp, int64_t r0, int64_t r1, int part) {
  const struct fr__sm *a = argp;
  for (int64_t r = r0; r < r1; r++) {
    float *x = a->x + r * a->n;
    const struct fr_cpu_vec *vec = fr_cpu_vec();
    float m = vec->max(x, a->n);
    if (m == -INFINITY) { /* a fully masked row: no key to attend to; define it as zeros, never NaN */
      for (int64_t j = 0; j < a->n; j++)
        x[j] = 0.0f;
      continue;
    }
    vec->scale(x, a->n, 1.0f / vec->exp_sum(x, a->n, m));
  }
}

void fr_cpu_softmax_rows(struct fr_cpu *cpu, float *x, int64_t rows, int64_t n) {
  struct fr__sm a = {x, n};
  int64_t min_rows = n >= 4096 ? 1 : 4096 / (n ? n : 1);
  fr_cpu_parallel(cpu->pool, rows, min_rows, fr__sm_task, &a);
}

enum fr_status fr_cpu_softmax(void *b, struct fr_tensor *y, const struct fr_tensor *x, struct fr_err *err) {
  int64_t n = x->shape[x->ndim - 1];
  if (n == 0)
    return FR_OK;
  fr_convert_to_f32(y->data, x->data, FR_F32, (size_t)fr_tensor_numel(x));
  fr_cpu_softmax_rows(b, y->data, fr_tensor_numel(x) / n, n);
  return FR_OK;
}
