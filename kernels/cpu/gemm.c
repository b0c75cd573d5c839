/* GEMM-shaped ops on the CPU: linear, matmul, conv2d (im2col + sgemm) and attention (flash style: QK^T
 * sgemm, online fp32 softmax, PV sgemm, over blocks of queries and keys). OpenBLAS threads the sgemms; the
 * pool threads the rest. On a CPU with AVX-512 (fr_cpu_avx512) most of SD's shapes take register-tiled
 * kernels instead, run on the pool: attention (attn512.c), the wide 3x3 convs (conv512.c), the other convs
 * and the many-row linears (gemm512.c); each is chosen below where the shape fits. */
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "core/alloc.h"
#include "kernels/cpu/cpu.h"

/* OpenBLAS keeps one thread count for the whole process, and attention below sets it to 1 while its pool
 * runs the GEMMs. A GEMM of another context (another engine of the same process: serve
 * --max-concurrent-runs) that runs while the count changes computes wrong numbers (OpenBLAS 0.3.21:
 * two threads doing sgemm while a third sets the count give mismatches within seconds). So the GEMM ops
 * issued from a context's calling thread hold this lock shared (fr_cpu_linear, _matmul, _conv2d wrap their
 * bodies), and changing the count (with the section that relies on it) holds it exclusively. Within one
 * context nothing changes: its ops run one after another. */
static pthread_rwlock_t fr__blas_lock = PTHREAD_RWLOCK_INITIALIZER;

void fr_cpu_blas_set_threads(int n) {
  pthread_rwlock_wrlock(&fr__blas_lock);
  openblas_set_num_threads(n);
  pthread_rwlock_unlock(&fr__blas_lock);
}

/* Scratch budget in floats (48 MB): the im2col columns of one chunk of output rows, or of all B images
 * (fr__conv2d_merged). It holds a whole 64x64 image of SD's 320-channel 3x3 convs (one sgemm of 4096
 * columns, not three of 1408) and both cfg images of its largest 16x16 conv (2560 -> 1280, K = 23040).
 * Measured with tests/bench_ops.c (2 threads, F16 weights, batch 2): 4 M floats -> 12 M took the 16x16
 * convs from 260-275 to 310 GFLOP/s and the 2560 -> 1280 one from 183-191 to 275-296. Smaller chunks sized
 * for the L3 (8 or 16 MB) looked better for the VAE's 512x512 convs in bench_ops' profile but made the whole
 * VAE decode slower (flowrun bench, alternated: 1.64-1.67x and 1.51-1.55x of the floor against 1.37-1.49x
 * with 48 MB). */
#define FR__IM2COL_BUDGET ((size_t)12 << 20)
/* fp32 panel of a 16-bit weight (floats): a weight up to this size is converted whole, once per call;
 * a larger one in panels of output rows. 16 M floats (64 MB) holds SD1.5's 1280x11520 conv kernels (14.7 M)
 * whole and its 1280x23040 ones in two panels: every panel is one more sgemm that packs the whole im2col
 * matrix again (OpenBLAS's oncopy: 6.6% of a 16x16 1280-channel conv's time in four panels). Measured with
 * tests/bench_ops.c (2 threads, batch 2): 4 M -> 16 M took the 16x16 convs from 296-331 to 337-351 GFLOP/s
 * and the 2560 -> 1280 one from 286-298 to 323-325. */
#define FR__WPANEL_BUDGET ((size_t)16 << 20)
#define FR__G512_MAXN 512 /* gemm512.c's columns per product (conv2d) */

/* Rows of a 16-bit weight [R, K] per fp32 panel: all of them when they fit the budget, else a multiple of
 * 16 (at least 16). */
static int64_t fr__panel_rows(int64_t R, int64_t K) {
  int64_t nb = (int64_t)(FR__WPANEL_BUDGET / (size_t)(K ? K : 1));
  if (nb >= R)
    return R;
  nb = nb / 16 * 16;
  return nb < 16 ? (R < 16 ? R : 16) : nb;
}

/* The panel buffer for rows of a 16-bit weight w [R, K] (*wp = NULL for an fp32 weight: its rows are used
 * where they are). */
static enum fr_status fr__wpanel(struct fr_cpu *cpu, const struct fr_tensor *w, int64_t rows, int64_t K,
                                 float **wp, struct fr_err *err) {
  *wp = NULL;
  if (!fr_cpu_is_half(w))
    return FR_OK;
  if (!(*wp = fr_cpu_wscratch(cpu, (size_t)(rows * K))))
    return fr_errf(err, FR_E_NOMEM, "out of memory for a weight panel [%lld, %lld]", (long long)rows,
                   (long long)K);
  return FR_OK;
}

/* fp32 rows [r0, r0 + n) of w [R, K]: where they are (wp NULL), else converted into wp. */
static const float *fr__wrows(struct fr_cpu *cpu, float *wp, const struct fr_tensor *w, int64_t r0, int64_t n,
                              int64_t K) {
  if (!wp)
    return (const float *)w->data + r0 * K;
  fr_cpu_half_rows(cpu, wp, w, r0, r0 + n, K);
  return wp;
}

struct fr__fill_rows {
  float *y;
  const float *v;
  int64_t cols; /* row r of y (rows x cols) = v[r % period] broadcast, or v[0..cols) when per_col */
  int64_t period;
  int per_col;
};

static void fr__fill_rows_task(void *argp, int64_t r0, int64_t r1, int part) {
  const struct fr__fill_rows *a = argp;
  for (int64_t r = r0; r < r1; r++) {
    float *row = a->y + r * a->cols;
    if (a->per_col) {
      memcpy(row, a->v, (size_t)a->cols * sizeof(float));
    } else {
      float v = a->v[r % a->period];
      for (int64_t j = 0; j < a->cols; j++)
        row[j] = v;
    }
  }
}

#define FR__L512_MINM 1024 /* rows from which a linear takes gemm512.c */
/* gemm512.c's linear: many rows, whole panels of 64 features, a packed weight of at most 4 M floats. */
static bool fr__use_l512(int64_t M, int64_t N, int64_t K) {
  return fr_cpu_avx512() && M >= FR__L512_MINM && N % 64 == 0 && K > 0 && N * K <= ((int64_t)4 << 20);
}

static enum fr_status fr__linear_unlocked(void *b, struct fr_tensor *y, const struct fr_tensor *x,
                                          const struct fr_tensor *w, const struct fr_tensor *bias,
                                          struct fr_err *err) {
  struct fr_cpu *cpu = b;
  int64_t K = w->shape[1], N = w->shape[0], M = fr_tensor_numel(x) / (K ? K : 1);
  if (M == 0 || N == 0)
    return FR_OK;
  if (fr__use_l512(M, N, K)) {
    float *ws = fr_cpu_wscratch(cpu, fr_cpu_linear512_scratch(N, K, cpu->threads));
    if (!ws)
      return fr_errf(err, FR_E_NOMEM, "out of memory for a packed weight [%lld, %lld]", (long long)N,
                     (long long)K);
    fr_cpu_linear512(cpu, y->data, x->data, w, bias ? bias->data : NULL, M, ws);
    return FR_OK;
  }
  float beta = 0.0f;
  if (bias) { /* y = bias, then y += x w^T */
    struct fr__fill_rows f = {y->data, bias->data, N, 0, 1};
    fr_cpu_parallel(cpu->pool, M, 64, fr__fill_rows_task, &f);
    beta = 1.0f;
  }
  if (K == 0) {
    if (!bias)
      memset(y->data, 0, (size_t)(M * N) * sizeof(float));
    return FR_OK;
  }
  if (!fr_cpu_is_half(w)) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, x->data, (int)K,
                w->data, (int)K, beta, y->data, (int)N);
    return FR_OK;
  }
  /* 16-bit weight: y[:, n0:n1] (+)= x w[n0:n1]^T, one fp32 panel of w's rows at a time */
  int64_t nb = fr__panel_rows(N, K);
  float *wp;
  enum fr_status rc = fr__wpanel(cpu, w, nb, K, &wp, err);
  if (rc != FR_OK)
    return rc;
  for (int64_t n0 = 0; n0 < N; n0 += nb) {
    int64_t n = N - n0 < nb ? N - n0 : nb;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)n, (int)K, 1.0f, x->data, (int)K,
                fr__wrows(cpu, wp, w, n0, n, K), (int)K, beta, (float *)y->data + n0, (int)N);
  }
  return FR_OK;
}

enum fr_status fr_cpu_linear(void *b, struct fr_tensor *y, const struct fr_tensor *x,
                             const struct fr_tensor *w, const struct fr_tensor *bias, struct fr_err *err) {
  pthread_rwlock_rdlock(&fr__blas_lock);
  enum fr_status rc = fr__linear_unlocked(b, y, x, w, bias, err);
  pthread_rwlock_unlock(&fr__blas_lock);
  return rc;
}

static enum fr_status fr__matmul_unlocked(void *b, struct fr_tensor *y, const struct fr_tensor *a,
                                          const struct fr_tensor *bm, struct fr_err *err) {
  int nd = a->ndim;
  int64_t M = a->shape[nd - 2], K = a->shape[nd - 1], N = bm->shape[nd - 1];
  if (fr_tensor_numel(y) == 0)
    return FR_OK;
  int64_t batch = fr_tensor_numel(y) / (M * N);
  if (K == 0) {
    memset(y->data, 0, fr_tensor_nbytes(y));
    return FR_OK;
  }
  for (int64_t i = 0; i < batch; i++)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0f,
                (const float *)a->data + i * M * K, (int)K, (const float *)bm->data + i * K * N, (int)N, 0.0f,
                (float *)y->data + i * M * N, (int)N);
  return FR_OK;
}

enum fr_status fr_cpu_matmul(void *b, struct fr_tensor *y, const struct fr_tensor *a,
                             const struct fr_tensor *bm, struct fr_err *err) {
  pthread_rwlock_rdlock(&fr__blas_lock);
  enum fr_status rc = fr__matmul_unlocked(b, y, a, bm, err);
  pthread_rwlock_unlock(&fr__blas_lock);
  return rc;
}

/* im2col of output rows [oh0, oh0 + rows) of one image: cols[(c, ki, kj), (oh - oh0) * Wo + ow]. */
struct fr__im2col {
  const float *x; /* [C, H, W] */
  float *cols;    /* [C*kh*kw, rows*Wo], row stride ld (>= rows*Wo: several images side by side) */
  int64_t C, H, W, kh, kw, Wo, oh0, rows, ld;
  int stride, pad;
};

static void fr__im2col_task(void *argp, int64_t r0, int64_t r1, int part) {
  const struct fr__im2col *a = argp;
  int64_t ld = a->ld;
  for (int64_t r = r0; r < r1; r++) {
    int64_t c = r / (a->kh * a->kw), ki = (r / a->kw) % a->kh, kj = r % a->kw;
    const float *xc = a->x + c * a->H * a->W;
    float *dst = a->cols + r * ld;
    for (int64_t i = 0; i < a->rows; i++, dst += a->Wo) {
      int64_t ih = (a->oh0 + i) * a->stride - a->pad + ki;
      if (ih < 0 || ih >= a->H) {
        memset(dst, 0, (size_t)a->Wo * sizeof(float));
        continue;
      }
      const float *src = xc + ih * a->W;
      if (a->stride == 1) {
        /* iw = ow - pad + kj: valid ow in [lo, hi) */
        int64_t lo = a->pad - kj, hi = a->W + a->pad - kj;
        if (lo < 0)
          lo = 0;
        if (hi > a->Wo)
          hi = a->Wo;
        if (hi < lo)
          hi = lo;
        for (int64_t ow = 0; ow < lo; ow++)
          dst[ow] = 0.0f;
        if (hi > lo)
          memcpy(dst + lo, src + lo - a->pad + kj, (size_t)(hi - lo) * sizeof(float));
        for (int64_t ow = hi; ow < a->Wo; ow++)
          dst[ow] = 0.0f;
      } else {
        for (int64_t ow = 0; ow < a->Wo; ow++) {
          int64_t iw = ow * a->stride - a->pad + kj;
          dst[ow] = iw >= 0 && iw < a->W ? src[iw] : 0.0f;
        }
      }
    }
  }
}

/* The im2col of all B images of x side by side: cols [C kh kw, B P], image b's columns from b P on (P =
 * Ho Wo). */
static void fr__im2col_images(struct fr_cpu *cpu, float *cols, const struct fr_tensor *x, int64_t kh,
                              int64_t kw, int64_t Ho, int64_t Wo, int stride, int pad) {
  int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3], P = Ho * Wo;
  for (int64_t bi = 0; bi < B; bi++) {
    struct fr__im2col a = {(const float *)x->data + bi * C * H * W,
                           cols + bi * P,
                           C,
                           H,
                           W,
                           kh,
                           kw,
                           Wo,
                           0,
                           Ho,
                           B * P,
                           stride,
                           pad};
    fr_cpu_parallel(cpu->pool, C * kh * kw, 8, fr__im2col_task, &a);
  }
}

/* y[b, o0 + i, :] = t[i, b P : (b + 1) P] (+ bias[o0 + i]) for i < on: a product over several images'
 * columns put back into y's [B, O, P] layout. Rows r = b * on + i. */
struct fr__scatter {
  const float *t, *bias; /* bias: [O] or NULL */
  float *y;
  int64_t on, P, B, O, o0;
};

static void fr__scatter_task(void *argp, int64_t r0, int64_t r1, int part) {
  const struct fr__scatter *a = argp;
  for (int64_t r = r0; r < r1; r++) {
    int64_t bi = r / a->on, i = r % a->on;
    const float *src = a->t + (i * a->B + bi) * a->P;
    float *dst = a->y + (bi * a->O + a->o0 + i) * a->P;
    if (a->bias) {
      float v = a->bias[a->o0 + i];
      for (int64_t p = 0; p < a->P; p++)
        dst[p] = src[p] + v;
    } else {
      memcpy(dst, src, (size_t)a->P * sizeof(float));
    }
  }
}

/* The batch merged: the im2col of all B images side by side in one [K, B*P] matrix, each weight panel one
 * sgemm of B*P columns into scratch t [on, B*P], scattered to y. For small outputs (SD's 16x16 and 8x8
 * levels: P = 256, 64) this replaces B sgemms of P columns per panel, thin enough that OpenBLAS ran them at
 * half its rate, and the im2col runs once per call instead of once per panel and image. The caller checks
 * that the columns fit the im2col budget (t, one panel's product, comes on top: at most 1280 x 512 floats for
 * SD). */
static enum fr_status fr__conv2d_merged(struct fr_cpu *cpu, struct fr_tensor *y, const struct fr_tensor *x,
                                        const struct fr_tensor *w, const float *bias, int stride, int pad,
                                        int64_t ob, struct fr_err *err) {
  int64_t B = x->shape[0], C = x->shape[1];
  int64_t O = w->shape[0], kh = w->shape[2], kw = w->shape[3];
  int64_t Ho = y->shape[2], Wo = y->shape[3], P = Ho * Wo, K = C * kh * kw, N = B * P;
  float *cols = fr_cpu_scratch(cpu, (size_t)((K + ob) * N));
  if (!cols)
    return fr_errf(err, FR_E_NOMEM, "out of memory for im2col scratch [%lld, %lld]", (long long)(K + ob),
                   (long long)N);
  float *t = cols + K * N;
  fr__im2col_images(cpu, cols, x, kh, kw, Ho, Wo, stride, pad);
  float *wp;
  enum fr_status rc = fr__wpanel(cpu, w, ob, K, &wp, err);
  if (rc != FR_OK)
    return rc;
  for (int64_t o0 = 0; o0 < O; o0 += ob) {
    int64_t on = O - o0 < ob ? O - o0 : ob;
    const float *wf = fr__wrows(cpu, wp, w, o0, on, K);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)on, (int)N, (int)K, 1.0f, wf, (int)K, cols,
                (int)N, 0.0f, t, (int)N);
    struct fr__scatter sc = {t, bias, y->data, on, P, B, O, o0};
    fr_cpu_parallel(cpu->pool, B * on, 16, fr__scatter_task, &sc);
  }
  return FR_OK;
}

/* Output rows per chunk of gemm512.c's columns: the most whose columns (rows * Wo) are a multiple of 64,
 * at most FR__G512_MAXN and divide Ho evenly; 0 when there is none. */
static int64_t fr__g512_rows(int64_t Wo, int64_t Ho) {
  for (int64_t r = FR__G512_MAXN / Wo; r >= 1; r--)
    if ((r * Wo) % 64 == 0 && Ho % r == 0)
      return r;
  return 0;
}

/* gemm512.c for a conv of B images [O, K] -> [Ho, Wo], K > 0 (with none it would leave y unwritten; the
 * sgemm path fills in the bias): the images side by side when they fit FR__G512_MAXN columns (each a
 * multiple of 64: a tile never straddles two); else in chunks of output rows, except for 1x1 stride-1
 * convs, whose input already is the product's operand where OpenBLAS reads it (at 64x64, 640 -> 320 and
 * 960 -> 320: 347-367 GFLOP/s in the model against 280-300 as chunks). */
static bool fr__use_g512(int64_t B, int64_t O, int64_t K, int64_t Wo, int64_t Ho, bool plain1x1) {
  int64_t P = Wo * Ho, N = B * P <= FR__G512_MAXN ? (P % 64 ? 0 : B * P)
                           : plain1x1             ? 0
                                                  : fr__g512_rows(Wo, Ho) * Wo;
  return fr_cpu_avx512() && O >= 8 && K > 0 && N > 0 && N % 64 == 0 && (size_t)(K * N) <= FR__IM2COL_BUDGET;
}

/* Convs on the AVX-512 path through gemm512.c (the 16-bit weight converted block by block as it is used,
 * the product written straight into y): the im2col of all B images side by side when they fit in
 * FR__G512_MAXN columns (SD's 16x16 and 8x8 levels), else of chunks of one image's output rows of at most
 * that many columns, each chunk one product (the weight read again per chunk). */
static enum fr_status fr__conv2d_g512(struct fr_cpu *cpu, struct fr_tensor *y, const struct fr_tensor *x,
                                      const struct fr_tensor *w, const struct fr_tensor *bias, int stride,
                                      int pad, struct fr_err *err) {
  int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
  int64_t O = w->shape[0], kh = w->shape[2], kw = w->shape[3];
  int64_t Ho = y->shape[2], Wo = y->shape[3], P = Ho * Wo, K = C * kh * kw;
  bool merged = B * P <= FR__G512_MAXN;
  int64_t rows = merged ? Ho : fr__g512_rows(Wo, Ho), N = merged ? B * P : rows * Wo;
  float *cols = fr_cpu_scratch(cpu, (size_t)(K * N));
  float *wblk = fr_cpu_wscratch(cpu, fr_cpu_gemm512_scratch(cpu->threads));
  if (!cols || !wblk)
    return fr_errf(err, FR_E_NOMEM, "out of memory for im2col scratch [%lld, %lld]", (long long)K,
                   (long long)N);
  const float *bv = bias ? bias->data : NULL;
  if (merged) {
    fr__im2col_images(cpu, cols, x, kh, kw, Ho, Wo, stride, pad);
    fr_cpu_gemm512(cpu, y->data, w, K, cols, N, N, bv, P, O * P, P, wblk);
    return FR_OK;
  }
  for (int64_t bi = 0; bi < B; bi++)
    for (int64_t oh0 = 0; oh0 < Ho; oh0 += rows) {
      struct fr__im2col a = {
          (const float *)x->data + bi * C * H * W, cols, C, H, W, kh, kw, Wo, oh0, rows, N, stride, pad};
      fr_cpu_parallel(cpu->pool, K, 8, fr__im2col_task, &a);
      fr_cpu_gemm512(cpu, (float *)y->data + bi * O * P + oh0 * Wo, w, K, cols, N, N, bv, N, 0, P, wblk);
    }
  return FR_OK;
}

/* A convolution with few output channels (SD's VAE conv_out 128 -> 3 at 512x512, the UNet's 320 -> 4): as
 * an sgemm it has M = O rows, where OpenBLAS runs at 10-20 GFLOP/s, and its im2col is 9x the input. Done
 * directly instead: each output row accumulates weight x input row over (c, ki, kj) with the vector path's
 * axpy, the rows spread over the pool. Stride 1 only. w: fp32 [O, C*kh*kw]. bench_ops, 2 threads: the
 * VAE's 128 -> 3 at 512x512 115-180 ms -> 34 ms. */
struct fr__dconv {
  const float *x, *w, *bias; /* bias: [O] or NULL */
  float *y;
  int64_t C, H, W, O, kh, kw, Ho, Wo;
  int pad;
};

static void fr__dconv_task(void *argp, int64_t r0, int64_t r1, int part) {
  (void)part;
  const struct fr__dconv *a = argp;
  const struct fr_cpu_vec *vec = fr_cpu_vec();
  int64_t KK = a->kh * a->kw, K = a->C * KK;
  /* r = b * Ho + oh: the O output rows oh of image b together, so each input row is read once for all */
  for (int64_t r = r0; r < r1; r++) {
    int64_t oh = r % a->Ho, bi = r / a->Ho;
    float *y0 = a->y + (bi * a->O * a->Ho + oh) * a->Wo; /* output row of channel o: y0 + o * Ho * Wo */
    for (int64_t o = 0; o < a->O; o++) {                 /* each row starts at its bias */
      float *yo = y0 + o * a->Ho * a->Wo, v = a->bias ? a->bias[o] : 0.0f;
      for (int64_t ow = 0; ow < a->Wo; ow++)
        yo[ow] = v;
    }
    for (int64_t c = 0; c < a->C; c++) {
      const float *xc = a->x + (bi * a->C + c) * a->H * a->W;
      for (int64_t ki = 0; ki < a->kh; ki++) {
        int64_t ih = oh - a->pad + ki;
        if (ih < 0 || ih >= a->H)
          continue;
        for (int64_t kj = 0; kj < a->kw; kj++) { /* iw = ow - pad + kj: valid ow in [lo, hi) */
          int64_t lo = a->pad - kj, hi = a->W + a->pad - kj;
          lo = lo < 0 ? 0 : lo;
          hi = hi > a->Wo ? a->Wo : hi;
          if (hi <= lo)
            continue;
          const float *xr = xc + ih * a->W + lo - a->pad + kj;
          for (int64_t o = 0; o < a->O; o++)
            vec->axpy(y0 + o * a->Ho * a->Wo + lo, xr, hi - lo, a->w[o * K + c * KK + ki * a->kw + kj]);
        }
      }
    }
  }
}

/* The wide 3x3 convs on the AVX-512 path (conv512.c): rows r = b * H + oh over the pool. */
struct fr__c512 {
  const float *x, *wp, *bias;
  float *y, *win; /* win: per part, fr_cpu_conv512_window(C) floats */
  int64_t C, O, H, W;
  size_t wn;
};

static void fr__c512_task(void *argp, int64_t r0, int64_t r1, int part) {
  const struct fr__c512 *a = argp;
  for (int64_t r = r0; r < r1; r++) {
    int64_t bi = r / a->H, oh = r % a->H;
    fr_cpu_conv512_row(a->y + bi * a->O * a->H * a->W, a->x + bi * a->C * a->H * a->W, a->wp, a->bias, a->C,
                       a->O, a->H, a->W, oh, a->win + (size_t)part * a->wn);
  }
}

/* Where im2col + sgemm is bound by memory traffic (every input value written nine times into the columns,
 * packed again, used by few output channels): images of 64x64 and up, with weights of at most 3 M floats
 * (12 MB: they are read again for every output row, from the L3). That is every 3x3 conv of SD's VAE
 * decoder and of the UNet's 64x64 level. tests/bench_ops.c, 2 threads, fastest of 3, as im2col + sgemm ->
 * here: VAE 128 -> 128 at 512x512 231-260 -> 324-365 GFLOP/s, 256 -> 256 at 512x512 296-309 -> 400-426,
 * 256 -> 256 at 256x256 285-310 -> 414, 512 -> 512 at 128x128 344-348 -> 357-404; UNet 320 -> 320 at 64x64
 * (batch 2) 300 -> 406. At 32x32 with 640 channels (14.7 M weights) it was no faster. Weights of at most
 * 3 M floats: with more, the rows' passes over them from the L3 lose to gemm512.c's chunks (UNet 640 -> 640
 * at 64x64, 3.7 M: 304-354 GFLOP/s in the model against 400); 960 -> 320 (2.8 M) measured 364-369 here
 * against 321 as chunks. */
static bool fr__use_conv512(int64_t C, int64_t O, int64_t kh, int64_t kw, int stride, int pad, int64_t H,
                            int64_t W) {
  return H * W >= 64 * 64 && O * C * 9 <= ((int64_t)3 << 20) && fr_cpu_avx512() &&
         fr_cpu_conv512_fits(C, O, kh, kw, stride, pad, H, W);
}

static enum fr_status fr__conv2d_512(struct fr_cpu *cpu, struct fr_tensor *y, const struct fr_tensor *x,
                                     const struct fr_tensor *w, const struct fr_tensor *bias,
                                     struct fr_err *err) {
  int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3], O = w->shape[0], K = C * 9;
  bool half = fr_cpu_is_half(w);
  float *ws = fr_cpu_wscratch(cpu, (size_t)(O * K) * (half ? 2 : 1));
  size_t wn = fr_cpu_conv512_window(C);
  float *win = fr_cpu_scratch(cpu, wn * (size_t)cpu->threads);
  if (!ws || !win)
    return fr_errf(err, FR_E_NOMEM, "out of memory for a conv's packed weights [%lld, %lld]", (long long)O,
                   (long long)K);
  fr_cpu_conv512_pack_w(ws, fr__wrows(cpu, half ? ws + O * K : NULL, w, 0, O, K), O, C);
  struct fr__c512 a = {x->data, ws, bias ? bias->data : NULL, y->data, win, C, O, H, W, wn};
  fr_cpu_parallel(cpu->pool, B * H, 1, fr__c512_task, &a);
  return FR_OK;
}

static enum fr_status fr__conv2d_unlocked(void *b, struct fr_tensor *y, const struct fr_tensor *x,
                                          const struct fr_tensor *w, const struct fr_tensor *bias, int stride,
                                          int pad, struct fr_err *err) {
  struct fr_cpu *cpu = b;
  int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
  int64_t O = w->shape[0], kh = w->shape[2], kw = w->shape[3];
  int64_t Ho = y->shape[2], Wo = y->shape[3], P = Ho * Wo, K = C * kh * kw;
  if (B == 0 || O == 0 || P == 0)
    return FR_OK;
  if (fr__use_conv512(C, O, kh, kw, stride, pad, H, W))
    return fr__conv2d_512(cpu, y, x, w, bias, err);
  if (fr__use_g512(B, O, K, Wo, Ho, kh == 1 && kw == 1 && stride == 1 && pad == 0))
    return fr__conv2d_g512(cpu, y, x, w, bias, stride, pad, err);
  struct fr__fill_rows f = {y->data, bias ? bias->data : NULL, P, O, 0}; /* y[b, o, :] = bias[o] */
  if (K == 0) {
    if (bias)
      fr_cpu_parallel(cpu->pool, B * O, 16, fr__fill_rows_task, &f);
    else
      memset(y->data, 0, fr_tensor_nbytes(y));
    return FR_OK;
  }
  bool half = fr_cpu_is_half(w);
  int64_t ob = half ? fr__panel_rows(O, K) : O;
  if (O < 8 && stride == 1) {
    float *wp;
    enum fr_status rc = fr__wpanel(cpu, w, O, K, &wp, err);
    if (rc != FR_OK)
      return rc;
    struct fr__dconv d = {x->data, fr__wrows(cpu, wp, w, 0, O, K), f.v, y->data, C, H, W, O, kh, kw, Ho, Wo,
                          pad};
    fr_cpu_parallel(cpu->pool, B * Ho, 2, fr__dconv_task, &d);
    return FR_OK;
  }
  if (B > 1 && P < 1024 && (size_t)(K * B * P) <= FR__IM2COL_BUDGET) /* columns; + one panel's product */
    return fr__conv2d_merged(cpu, y, x, w, f.v, stride, pad, ob, err);
  float beta = 0.0f;
  if (bias) { /* y = bias, then y += W cols */
    fr_cpu_parallel(cpu->pool, B * O, 16, fr__fill_rows_task, &f);
    beta = 1.0f;
  }
  bool direct = kh == 1 && kw == 1 && stride == 1 && pad == 0; /* x[b] already is [C, H*W] */
  int64_t rows = Ho;
  float *cols = NULL;
  if (!direct) {
    rows = (int64_t)(FR__IM2COL_BUDGET / (size_t)(K * Wo)); /* as many output rows as the budget holds */
    if (rows < 1)
      rows = 1;
    if (rows > Ho)
      rows = Ho;
    cols = fr_cpu_scratch(cpu, (size_t)(K * rows * Wo));
    if (!cols) {
      return fr_errf(err, FR_E_NOMEM, "out of memory for im2col scratch [%lld, %lld]", (long long)K,
                     (long long)(rows * Wo));
    }
  }
  /* A 16-bit kernel [O, K] is used in fp32 panels of ob output channels: the whole kernel at once when it
   * fits the panel budget (converted once per call), else panel by panel with the im2col redone for each
   * (only SD's largest kernels, at small spatial sizes, where im2col is cheap next to the sgemm). */
  float *wp;
  enum fr_status rc = fr__wpanel(cpu, w, ob, K, &wp, err);
  if (rc != FR_OK)
    return rc;
  for (int64_t o0 = 0; o0 < O; o0 += ob) {
    int64_t on = O - o0 < ob ? O - o0 : ob;
    const float *wf = fr__wrows(cpu, wp, w, o0, on, K);
    for (int64_t bi = 0; bi < B; bi++) {
      const float *xb = (const float *)x->data + bi * C * H * W;
      float *yb = (float *)y->data + (bi * O + o0) * P;
      if (direct) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)on, (int)P, (int)C, 1.0f, wf, (int)C, xb,
                    (int)P, beta, yb, (int)P);
        continue;
      }
      for (int64_t oh0 = 0; oh0 < Ho; oh0 += rows) {
        int64_t r = Ho - oh0 < rows ? Ho - oh0 : rows;
        struct fr__im2col a = {xb, cols, C, H, W, kh, kw, Wo, oh0, r, r * Wo, stride, pad};
        fr_cpu_parallel(cpu->pool, K, 8, fr__im2col_task, &a);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)on, (int)(r * Wo), (int)K, 1.0f, wf,
                    (int)K, cols, (int)(r * Wo), beta, yb + oh0 * Wo, (int)P);
      }
    }
  }
  return FR_OK;
}

enum fr_status fr_cpu_conv2d(void *b, struct fr_tensor *y, const struct fr_tensor *x,
                             const struct fr_tensor *w, const struct fr_tensor *bias, int stride, int pad,
                             struct fr_err *err) {
  pthread_rwlock_rdlock(&fr__blas_lock);
  enum fr_status rc = fr__conv2d_unlocked(b, y, x, w, bias, stride, pad, err);
  pthread_rwlock_unlock(&fr__blas_lock);
  return rc;
}

/* Attention, flash style: tasks of (batch, head, block of QB queries) run in parallel on the pool; a task
 * walks the keys in blocks of KB and keeps, per query row, the running max m and the running sum l of
 * exp(s - m) (online softmax), so no score row longer than KB is ever materialised: per thread a
 * [QB, KB] block of scores (128 KB) that stays in L2 whatever Tk is (4096 for SD's 64x64 self-attention).
 * Per key block: S = scale Q K^T (sgemm), P = exp(S - m_new) with the row sums (vectorised exp), the
 * output rows so far rescaled by exp(m_old - m_new), then O += P V (sgemm, accumulated in y itself);
 * at the end each row is divided by l. Inside a task the sgemms run single-threaded (the parallelism is
 * across tasks), so OpenBLAS is set to one thread for the duration and the pool's threads are the only
 * ones running. Causal (CLIP): query i sees keys <= i; key blocks wholly after a block's last query are
 * skipped, and the first key block always holds key 0, so every row's max is finite from the start.
 * Numerics: the same fp32 products and sums as an unblocked softmax, regrouped; exp(m_old - m_new) <= 1.
 * On a CPU with AVX-512 a task is attn512.c's fr_cpu_attn512_block instead (the same blocks of 64 queries
 * and the same online softmax, laid out transposed in register tiles; no sgemm, no OpenBLAS). */
#define FR__ATTN_QB 64
#define FR__ATTN_KB 512
_Static_assert(FR__ATTN_QB <= 64, "fr_cpu_attn512_block takes blocks of at most 64 queries");

struct fr__attn {
  const float *q, *k, *v;
  float *y, *scratch; /* scratch: per part, QB * KB scores + QB maxima + QB sums (AVX-512: sn floats) */
  size_t sn;
  int64_t Tq, Tk, HD, D, heads, nblk;
  float scale;
  bool causal;
};

static void fr__attn_task(void *argp, int64_t t0, int64_t t1, int part) {
  const struct fr__attn *a = argp;
  const struct fr_cpu_vec *vec = fr_cpu_vec();
  float *s = a->scratch + (size_t)part * (size_t)(FR__ATTN_QB * FR__ATTN_KB + 2 * FR__ATTN_QB);
  float *mx = s + FR__ATTN_QB * FR__ATTN_KB, *sum = mx + FR__ATTN_QB;
  for (int64_t t = t0; t < t1; t++) {
    int64_t blk = t % a->nblk, h = (t / a->nblk) % a->heads, bi = t / a->nblk / a->heads;
    int64_t q0 = blk * FR__ATTN_QB, n = a->Tq - q0 < FR__ATTN_QB ? a->Tq - q0 : FR__ATTN_QB, HD = a->HD;
    const float *qp = a->q + (bi * a->Tq + q0) * HD + h * a->D; /* [n, D], row stride HD */
    const float *kp = a->k + bi * a->Tk * HD + h * a->D;        /* [Tk, D] */
    const float *vp = a->v + bi * a->Tk * HD + h * a->D;        /* [Tk, D] */
    float *yp = a->y + (bi * a->Tq + q0) * HD + h * a->D;       /* [n, D] */
    int64_t kend = a->Tk;
    if (a->causal && q0 + n < kend)
      kend = q0 + n; /* the block's last query, q0 + n - 1, sees keys < q0 + n */
    for (int64_t k0 = 0; k0 < kend; k0 += FR__ATTN_KB) {
      int64_t kb = kend - k0 < FR__ATTN_KB ? kend - k0 : FR__ATTN_KB;
      /* S [n, kb] = scale * Q K[k0 : k0 + kb]^T */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)kb, (int)a->D, a->scale, qp, (int)HD,
                  kp + k0 * HD, (int)HD, 0.0f, s, (int)kb);
      for (int64_t i = 0; i < n; i++) {
        float *row = s + i * kb;
        int64_t valid = kb;
        if (a->causal && q0 + i + 1 - k0 < valid)
          valid = q0 + i + 1 - k0; /* query q0 + i sees keys <= q0 + i; >= 1 when k0 == 0 */
        if (valid <= 0) {          /* nothing of this block is visible: P row = 0, m and l unchanged */
          memset(row, 0, (size_t)kb * sizeof(float));
          continue;
        }
        float mb = vec->max(row, valid);
        float m = k0 == 0 || mb > mx[i] ? mb : mx[i];
        float ls = vec->exp_sum(row, valid, m);
        for (int64_t j = valid; j < kb; j++)
          row[j] = 0.0f;
        if (k0 == 0) {
          sum[i] = ls;
        } else {
          float corr = expf(mx[i] - m); /* 1 when the max did not move */
          sum[i] = sum[i] * corr + ls;
          if (corr != 1.0f)
            vec->scale(yp + i * HD, a->D, corr);
        }
        mx[i] = m;
      }
      /* Y [n, D] (+)= P V[k0 : k0 + kb] */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)a->D, (int)kb, 1.0f, s, (int)kb,
                  vp + k0 * HD, (int)HD, k0 == 0 ? 0.0f : 1.0f, yp, (int)HD);
    }
    for (int64_t i = 0; i < n; i++)
      vec->scale(yp + i * HD, a->D, 1.0f / sum[i]);
  }
}

static void fr__attn512_task(void *argp, int64_t t0, int64_t t1, int part) {
  const struct fr__attn *a = argp;
  for (int64_t t = t0; t < t1; t++) {
    int64_t blk = t % a->nblk, h = (t / a->nblk) % a->heads, bi = t / a->nblk / a->heads, HD = a->HD;
    int64_t q0 = blk * FR__ATTN_QB, n = a->Tq - q0 < FR__ATTN_QB ? a->Tq - q0 : FR__ATTN_QB;
    fr_cpu_attn512_block(a->y + (bi * a->Tq + q0) * HD + h * a->D, a->q + (bi * a->Tq + q0) * HD + h * a->D,
                         a->k + bi * a->Tk * HD + h * a->D, a->v + bi * a->Tk * HD + h * a->D, HD, n, q0,
                         a->Tk, a->D, a->scale, a->causal, a->scratch + (size_t)part * a->sn);
  }
}

enum fr_status fr_cpu_attention(void *b, struct fr_tensor *y, const struct fr_tensor *q,
                                const struct fr_tensor *k, const struct fr_tensor *v, int heads, bool causal,
                                struct fr_err *err) {
  struct fr_cpu *cpu = b;
  int64_t B = q->shape[0], Tq = q->shape[1], HD = q->shape[2], Tk = k->shape[1], D = HD / heads;
  if (B == 0 || Tq == 0 || HD == 0)
    return FR_OK;
  if (Tk == 0) { /* no key to attend to: zeros, as a fully masked softmax row (fr_cpu_softmax) */
    memset(y->data, 0, fr_tensor_nbytes(y));
    return FR_OK;
  }
  int64_t nblk = (Tq + FR__ATTN_QB - 1) / FR__ATTN_QB, tasks = B * heads * nblk;
  int parts = cpu->threads;
  bool t512 = fr_cpu_avx512();
  size_t sn = t512 ? fr_cpu_attn512_scratch(D) : (size_t)(FR__ATTN_QB * FR__ATTN_KB + 2 * FR__ATTN_QB);
  float *s = fr_cpu_scratch(cpu, (size_t)parts * sn);
  if (!s)
    return fr_errf(err, FR_E_NOMEM, "out of memory for attention's scratch: %d x %zu floats", parts, sn);
  struct fr__attn a = {.q = q->data,
                       .k = k->data,
                       .v = v->data,
                       .y = y->data,
                       .scratch = s,
                       .sn = sn,
                       .Tq = Tq,
                       .Tk = Tk,
                       .HD = HD,
                       .D = D,
                       .heads = heads,
                       .nblk = nblk,
                       .scale = 1.0f / sqrtf((float)D),
                       .causal = causal};
  if (t512) {
    fr_cpu_parallel(cpu->pool, tasks, 1, fr__attn512_task, &a); /* no sgemm: OpenBLAS is not involved */
    return FR_OK;
  }
  if (parts > 1 && tasks > 1) {
    pthread_rwlock_wrlock(&fr__blas_lock); /* the pool's GEMMs rely on the count of 1: held exclusively */
    openblas_set_num_threads(1);
    fr_cpu_parallel(cpu->pool, tasks, 1, fr__attn_task, &a);
    openblas_set_num_threads(cpu->threads);
    pthread_rwlock_unlock(&fr__blas_lock);
  } else {
    pthread_rwlock_rdlock(&fr__blas_lock);
    fr__attn_task(&a, 0, tasks, 0);
    pthread_rwlock_unlock(&fr__blas_lock);
  }
  return FR_OK;
}
