/* Elementwise ops, broadcasting arithmetic and data movement on the CPU. Loops over large tensors are
 * split across the pool in contiguous ranges; small ones run on the caller (min_chunk). */
#include <math.h>
#include <string.h>

#include "kernels/cpu/cpu.h"

#define FR__MIN_CHUNK 16384 /* elements: below this a thread hand-off costs more than it saves */

/* ---- unary ---- */

struct fr__unary {
  enum fr_unary_op op;
  const float *x;
  float *y;
  float p0, p1;
};

static void fr__unary_task(void *argp, int64_t i0, int64_t i1, int part) {
  const struct fr__unary *a = argp;
  const float *x = a->x;
  float *y = a->y;
  switch (a->op) {
  case FR_UNARY_SILU: fr_cpu_vec()->silu(y + i0, x + i0, i1 - i0, 1.0f); break;
  case FR_UNARY_GELU: fr_cpu_vec()->gelu(y + i0, x + i0, i1 - i0); break;
  case FR_UNARY_GELU_TANH:
    for (int64_t i = i0; i < i1; i++) {
      float v = x[i];
      y[i] = 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    }
    break;
  case FR_UNARY_QUICK_GELU: fr_cpu_vec()->silu(y + i0, x + i0, i1 - i0, 1.702f); break;
  case FR_UNARY_AFFINE:
    for (int64_t i = i0; i < i1; i++)
      y[i] = x[i] * a->p0 + a->p1;
    break;
  case FR_UNARY_LEAKY_RELU:
    for (int64_t i = i0; i < i1; i++)
      y[i] = x[i] > 0.0f ? x[i] : x[i] * a->p0;
    break;
  case FR_UNARY_COPY: memcpy(y + i0, x + i0, (size_t)(i1 - i0) * sizeof(float)); break;
  }
}

enum fr_status fr_cpu_unary(void *b, enum fr_unary_op op, struct fr_tensor *y, const struct fr_tensor *x,
                            float p0, float p1, struct fr_err *err) {
  struct fr_cpu *cpu = b;
  struct fr__unary a = {op, x->data, y->data, p0, p1};
  fr_cpu_parallel(cpu->pool, fr_tensor_numel(x), FR__MIN_CHUNK, fr__unary_task, &a);
  return FR_OK;
}

struct fr__geglu {
  const float *x;
  float *y;
  int64_t n; /* output row length N; input rows are 2N */
};

static void fr__geglu_task(void *argp, int64_t r0, int64_t r1, int part) {
  const struct fr__geglu *a = argp;
  for (int64_t r = r0; r < r1; r++) {
    const float *h = a->x + r * 2 * a->n, *g = h + a->n;
    fr_cpu_vec()->geglu(a->y + r * a->n, h, g, a->n);
  }
}

enum fr_status fr_cpu_geglu(void *b, struct fr_tensor *y, const struct fr_tensor *x, struct fr_err *err) {
  struct fr_cpu *cpu = b;
  int64_t n = y->shape[y->ndim - 1];
  if (n == 0)
    return FR_OK;
  struct fr__geglu a = {x->data, y->data, n};
  fr_cpu_parallel(cpu->pool, fr_tensor_numel(y) / n, 1 + FR__MIN_CHUNK / n, fr__geglu_task, &a);
  return FR_OK;
}

/* ---- broadcasting binary ---- */

struct fr__binary {
  enum fr_binary_op op;
  const float *a, *b;
  float *y;
  const struct fr_bcast *bc;
};

static void fr__binary_task(void *argp, int64_t e0, int64_t e1, int part) {
  const struct fr__binary *t = argp;
  const struct fr_bcast *bc = t->bc;
  int nd = bc->ndim;
  int64_t idx[FR_MAX_DIMS], oa = 0, ob = 0, rem = e0;
  for (int d = nd - 1; d >= 0; d--) {
    idx[d] = rem % bc->shape[d];
    rem /= bc->shape[d];
    oa += idx[d] * bc->sa[d];
    ob += idx[d] * bc->sb[d];
  }
  int64_t la = bc->sa[nd - 1], lb = bc->sb[nd - 1], inner = bc->shape[nd - 1];
  for (int64_t e = e0; e < e1;) {
    int64_t run = inner - idx[nd - 1];
    if (run > e1 - e)
      run = e1 - e;
    const float *pa = t->a + oa, *pb = t->b + ob;
    float *py = t->y + e;
    /* The common strides get their own loops so the compiler vectorises them. */
    if (la == 1 && lb == 1) {
      switch (t->op) {
      case FR_BINARY_ADD:
        for (int64_t j = 0; j < run; j++)
          py[j] = pa[j] + pb[j];
        break;
      case FR_BINARY_SUB:
        for (int64_t j = 0; j < run; j++)
          py[j] = pa[j] - pb[j];
        break;
      case FR_BINARY_MUL:
        for (int64_t j = 0; j < run; j++)
          py[j] = pa[j] * pb[j];
        break;
      }
    } else if (la == 1 && lb == 0) {
      float vb = pb[0];
      switch (t->op) {
      case FR_BINARY_ADD:
        for (int64_t j = 0; j < run; j++)
          py[j] = pa[j] + vb;
        break;
      case FR_BINARY_SUB:
        for (int64_t j = 0; j < run; j++)
          py[j] = pa[j] - vb;
        break;
      case FR_BINARY_MUL:
        for (int64_t j = 0; j < run; j++)
          py[j] = pa[j] * vb;
        break;
      }
    } else {
      for (int64_t j = 0; j < run; j++) {
        float va = pa[j * la], vb = pb[j * lb];
        py[j] = t->op == FR_BINARY_ADD ? va + vb : t->op == FR_BINARY_SUB ? va - vb : va * vb;
      }
    }
    e += run;
    oa += run * la;
    ob += run * lb;
    idx[nd - 1] += run;
    /* carry into the outer dims */
    for (int d = nd - 1; d > 0 && idx[d] == bc->shape[d]; d--) {
      oa -= idx[d] * bc->sa[d];
      ob -= idx[d] * bc->sb[d];
      idx[d] = 0;
      idx[d - 1]++;
      oa += bc->sa[d - 1];
      ob += bc->sb[d - 1];
    }
  }
}

enum fr_status fr_cpu_binary(void *b, enum fr_binary_op op, struct fr_tensor *y, const struct fr_tensor *a,
                             const struct fr_tensor *bt, const struct fr_bcast *bc, struct fr_err *err) {
  struct fr_cpu *cpu = b;
  struct fr__binary t = {op, a->data, bt->data, y->data, bc};
  fr_cpu_parallel(cpu->pool, fr_tensor_numel(y), FR__MIN_CHUNK, fr__binary_task, &t);
  return FR_OK;
}

/* ---- data movement ---- */

enum fr_status fr_cpu_concat(void *b, struct fr_tensor *y, const struct fr_tensor *const *xs, int n, int dim,
                             struct fr_err *err) {
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < dim; d++)
    outer *= y->shape[d];
  for (int d = dim + 1; d < y->ndim; d++)
    inner *= y->shape[d];
  int64_t yrow = y->shape[dim] * inner;
  int64_t off = 0;
  for (int i = 0; i < n; i++) {
    int64_t row = xs[i]->shape[dim] * inner;
    for (int64_t o = 0; o < outer; o++)
      memcpy((float *)y->data + o * yrow + off, (const float *)xs[i]->data + o * row,
             (size_t)row * sizeof(float));
    off += row;
  }
  return FR_OK;
}

enum fr_status fr_cpu_slice(void *b, struct fr_tensor *y, const struct fr_tensor *x, int dim, int64_t start,
                            struct fr_err *err) {
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < dim; d++)
    outer *= x->shape[d];
  for (int d = dim + 1; d < x->ndim; d++)
    inner *= x->shape[d];
  int64_t xrow = x->shape[dim] * inner, yrow = y->shape[dim] * inner;
  size_t es = fr_dtype_size(x->dtype); /* F32, or a 16-bit weight sliced into a 16-bit y */
  for (int64_t o = 0; o < outer; o++)
    memcpy((char *)y->data + (size_t)(o * yrow) * es,
           (const char *)x->data + (size_t)(o * xrow + start * inner) * es, (size_t)yrow * es);
  return FR_OK;
}

struct fr__permute {
  const float *x;
  float *y;
  int nd;
  int64_t shape[FR_MAX_DIMS]; /* output shape */
  int64_t st[FR_MAX_DIMS];    /* input stride of each output dim */
};

static void fr__permute_task(void *argp, int64_t e0, int64_t e1, int part) {
  const struct fr__permute *a = argp;
  int nd = a->nd;
  int64_t idx[FR_MAX_DIMS], off = 0, rem = e0;
  for (int d = nd - 1; d >= 0; d--) {
    idx[d] = rem % a->shape[d];
    rem /= a->shape[d];
    off += idx[d] * a->st[d];
  }
  int64_t ls = a->st[nd - 1], inner = a->shape[nd - 1];
  for (int64_t e = e0; e < e1;) {
    int64_t run = inner - idx[nd - 1];
    if (run > e1 - e)
      run = e1 - e;
    const float *px = a->x + off;
    float *py = a->y + e;
    for (int64_t j = 0; j < run; j++)
      py[j] = px[j * ls];
    e += run;
    off += run * ls;
    idx[nd - 1] += run;
    for (int d = nd - 1; d > 0 && idx[d] == a->shape[d]; d--) {
      off -= idx[d] * a->st[d];
      idx[d] = 0;
      idx[d - 1]++;
      off += a->st[d - 1];
    }
  }
}

enum fr_status fr_cpu_permute(void *b, struct fr_tensor *y, const struct fr_tensor *x, const int *perm,
                              struct fr_err *err) {
  struct fr_cpu *cpu = b;
  int64_t xst[FR_MAX_DIMS], s = 1;
  for (int d = x->ndim - 1; d >= 0; d--) {
    xst[d] = s;
    s *= x->shape[d];
  }
  if (x->ndim == 0 || fr_tensor_numel(y) == 0) {
    if (fr_tensor_numel(y))
      memcpy(y->data, x->data, fr_tensor_nbytes(y));
    return FR_OK;
  }
  struct fr__permute a = {x->data, y->data, x->ndim, {0}, {0}};
  for (int d = 0; d < x->ndim; d++) {
    a.shape[d] = y->shape[d];
    a.st[d] = xst[perm[d]];
  }
  fr_cpu_parallel(cpu->pool, fr_tensor_numel(y), FR__MIN_CHUNK, fr__permute_task, &a);
  return FR_OK;
}

enum fr_status fr_cpu_pad2d(void *b, struct fr_tensor *y, const struct fr_tensor *x, int left, int top,
                            float value, struct fr_err *err) {
  int nd = x->ndim;
  int64_t H = x->shape[nd - 2], W = x->shape[nd - 1], Ho = y->shape[nd - 2], Wo = y->shape[nd - 1];
  if (Ho == 0 || Wo == 0)
    return FR_OK;
  int64_t planes = fr_tensor_numel(y) / (Ho * Wo);
  for (int64_t p = 0; p < planes; p++) {
    const float *xp = (const float *)x->data + p * H * W;
    float *yp = (float *)y->data + p * Ho * Wo;
    for (int64_t i = 0; i < Ho; i++) {
      float *row = yp + i * Wo;
      int64_t si = i - top;
      if (si < 0 || si >= H) {
        for (int64_t j = 0; j < Wo; j++)
          row[j] = value;
        continue;
      }
      for (int64_t j = 0; j < left; j++)
        row[j] = value;
      memcpy(row + left, xp + si * W, (size_t)W * sizeof(float));
      for (int64_t j = left + W; j < Wo; j++)
        row[j] = value;
    }
  }
  return FR_OK;
}

struct fr__up {
  const float *x;
  float *y;
  int64_t H, W;
};

static void fr__up_task(void *argp, int64_t r0, int64_t r1, int part) {
  const struct fr__up *a = argp;
  for (int64_t r = r0; r < r1; r++) { /* r = plane * H + i: one input row -> two output rows */
    const float *src = a->x + r * a->W;
    float *dst = a->y + r * 4 * a->W;
    for (int64_t j = 0; j < a->W; j++)
      dst[2 * j] = dst[2 * j + 1] = src[j];
    memcpy(dst + 2 * a->W, dst, (size_t)(2 * a->W) * sizeof(float));
  }
}

enum fr_status fr_cpu_upsample_nearest2x(void *b, struct fr_tensor *y, const struct fr_tensor *x,
                                         struct fr_err *err) {
  struct fr_cpu *cpu = b;
  int64_t W = x->shape[x->ndim - 1], H = x->shape[x->ndim - 2];
  if (W == 0 || H == 0)
    return FR_OK;
  struct fr__up a = {x->data, y->data, H, W};
  fr_cpu_parallel(cpu->pool, fr_tensor_numel(x) / W, 1 + FR__MIN_CHUNK / (4 * W), fr__up_task, &a);
  return FR_OK;
}

enum fr_status fr_cpu_embedding(void *b, struct fr_tensor *y, const struct fr_tensor *ids,
                                const struct fr_tensor *table, struct fr_err *err) {
  int64_t n = fr_tensor_numel(ids), V = table->shape[0], D = table->shape[1];
  for (int64_t i = 0; i < n; i++) {
    int64_t id = ids->dtype == FR_I64 ? ((const int64_t *)ids->data)[i] : ((const int32_t *)ids->data)[i];
    if (id < 0 || id >= V)
      return fr_errf(err, FR_E_INVALID, "id %lld at position %lld is outside the table's %lld rows",
                     (long long)id, (long long)i, (long long)V);
    if (fr_cpu_is_half(table)) /* a 16-bit weight table (fr_backend.weight keeps those 16-bit) */
      fr_cpu_half(NULL)((float *)y->data + i * D, (const uint16_t *)table->data + id * D, (size_t)D,
                        table->dtype);
    else
      memcpy((float *)y->data + i * D, (const float *)table->data + id * D, (size_t)D * sizeof(float));
  }
  return FR_OK;
}

enum fr_status fr_cpu_gather_rows(void *b, struct fr_tensor *y, const struct fr_tensor *x,
                                  const int64_t *index, struct fr_err *err) {
  int64_t B = x->shape[0], T = x->shape[1], D = x->shape[2];
  for (int64_t i = 0; i < B; i++)
    memcpy((float *)y->data + i * D, (const float *)x->data + (i * T + index[i]) * D,
           (size_t)D * sizeof(float));
  return FR_OK;
}

/* The shared fp32 definition (kernels/ops.c), so the op and fr_timestep_embedding_f32 agree bit for bit. */
enum fr_status fr_cpu_timestep_embedding(void *b, struct fr_tensor *y, const struct fr_tensor *t,
                                         bool flip_sin_to_cos, float downscale_freq_shift, float max_period,
                                         struct fr_err *err) {
  fr_timestep_sinusoid(t->data, t->shape[0], y->shape[1], flip_sin_to_cos, downscale_freq_shift, max_period,
                       y->data);
  return FR_OK;
}
