/* GEMMs through cuBLASLt: one wrapper (fr_cuda_gemm_run) that caches matmul/layout descriptors and the
 * heuristic's algorithm per (dtype, shape, strides, epilogue, operand alignment), and the two ops built on
 * it, linear and matmul.
 *
 * cuBLASLt is column-major. A row-major matrix X [r, c] is the column-major matrix X^T [c, r] with the same
 * leading dimension, so the row-major products are computed transposed:
 *   linear  y [M, N] = x [M, K] w^T        ->  y^T [N, M] = (w as K x N)^T (x as K x M)
 *   matmul  y [M, N] = a [M, K] b [K, N]   ->  y^T [N, M] = (b as N x K)   (a as K x M)
 * and the bias of linear, per output feature, is per row of y^T: cuBLASLt's BIAS epilogue. */
#include <string.h>

#include "kernels/cuda/internal.cuh"

#define FR__GEMM_CACHE_MAX 256

struct fr__gemm_key {
  int dtype;
  int ta, tb, bias, accumulate;
  int64_t m, n, k, lda, ldb, ldd, batch, sa, sb, sd;
  uint32_t align_a, align_b, align_d;
};

struct fr_cuda_gemm_entry {
  struct fr__gemm_key key;
  cublasLtMatmulDesc_t op;
  cublasLtMatrixLayout_t la, lb, ld;
  cublasLtMatmulAlgo_t algo;
  uint64_t used;
};

static void fr__entry_destroy(struct fr_cuda_gemm_entry *e) {
  if (e->op)
    cublasLtMatmulDescDestroy(e->op);
  if (e->la)
    cublasLtMatrixLayoutDestroy(e->la);
  if (e->lb)
    cublasLtMatrixLayoutDestroy(e->lb);
  if (e->ld)
    cublasLtMatrixLayoutDestroy(e->ld);
  memset(e, 0, sizeof *e);
}

void fr_cuda_gemm_cache_free(struct fr_cuda *cu) {
  for (int i = 0; i < cu->gemm_n; i++)
    fr__entry_destroy(&cu->gemm[i]);
  fr_free(cu->gemm);
  cu->gemm = NULL;
  cu->gemm_n = cu->gemm_cap = 0;
}

/* Largest power of two (<= 256) dividing the address: what cuBLASLt's alignment preferences ask for. */
static uint32_t fr__align(const void *p) {
  uintptr_t a = (uintptr_t)p;
  uint32_t al = 256;
  while (al > 1 && (a % al) != 0)
    al >>= 1;
  return al;
}

/* The alignment every matrix of a strided batch has: base, base + stride, base + 2 stride, ... */
static uint32_t fr__align_batch(const void *base, size_t stride_bytes) {
  uint32_t a = fr__align(base), s = stride_bytes ? fr__align((const void *)(uintptr_t)stride_bytes) : 256;
  return a < s ? a : s;
}

static cudaDataType_t fr__cuda_type(enum fr_dtype dt) {
  return dt == FR_F16 ? CUDA_R_16F : dt == FR_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

static enum fr_status fr__layout(cublasLtMatrixLayout_t *l, cudaDataType_t t, int64_t rows, int64_t cols,
                                 int64_t ld, int64_t batch, int64_t stride, struct fr_err *err) {
  FR_CUDA_TRY(fr_cuda_lt_err(cublasLtMatrixLayoutCreate(l, t, (uint64_t)rows, (uint64_t)cols, ld), err,
                             "cublasLtMatrixLayoutCreate"));
  if (batch > 1) {
    int32_t bc = (int32_t)batch;
    FR_CUDA_TRY(fr_cuda_lt_err(
        cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc), err,
        "cublasLtMatrixLayoutSetAttribute(BATCH_COUNT)"));
    FR_CUDA_TRY(fr_cuda_lt_err(cublasLtMatrixLayoutSetAttribute(
                                   *l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride),
                               err, "cublasLtMatrixLayoutSetAttribute(STRIDED_BATCH_OFFSET)"));
  }
  return FR_OK;
}

/* Builds the descriptors of key k into e and asks the heuristic for the best algorithm. FR_E_UNSUPPORTED
 * when cuBLASLt has no algorithm for it (the caller may try without the bias epilogue). */
static enum fr_status fr__entry_build(struct fr_cuda *cu, const struct fr__gemm_key *k,
                                      struct fr_cuda_gemm_entry *e, struct fr_err *err) {
  memset(e, 0, sizeof *e);
  e->key = *k;
  cudaDataType_t t = fr__cuda_type((enum fr_dtype)k->dtype);
  FR_CUDA_TRY(fr_cuda_lt_err(cublasLtMatmulDescCreate(&e->op, CUBLAS_COMPUTE_32F, CUDA_R_32F), err,
                             "cublasLtMatmulDescCreate"));
  cublasOperation_t ta = k->ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb = k->tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  FR_CUDA_TRY(
      fr_cuda_lt_err(cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), err,
                     "cublasLtMatmulDescSetAttribute(TRANSA)"));
  FR_CUDA_TRY(
      fr_cuda_lt_err(cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), err,
                     "cublasLtMatmulDescSetAttribute(TRANSB)"));
  if (k->bias) {
    cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
    FR_CUDA_TRY(
        fr_cuda_lt_err(cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep),
                       err, "cublasLtMatmulDescSetAttribute(EPILOGUE)"));
    cudaDataType_t bt = t;
    FR_CUDA_TRY(fr_cuda_lt_err(
        cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt), err,
        "cublasLtMatmulDescSetAttribute(BIAS_DATA_TYPE)"));
  }
  FR_CUDA_TRY(fr__layout(&e->la, t, k->ta ? k->k : k->m, k->ta ? k->m : k->k, k->lda, k->batch, k->sa, err));
  FR_CUDA_TRY(fr__layout(&e->lb, t, k->tb ? k->n : k->k, k->tb ? k->k : k->n, k->ldb, k->batch, k->sb, err));
  FR_CUDA_TRY(fr__layout(&e->ld, t, k->m, k->n, k->ldd, k->batch, k->sd, err));

  cublasLtMatmulPreference_t pref;
  FR_CUDA_TRY(fr_cuda_lt_err(cublasLtMatmulPreferenceCreate(&pref), err, "cublasLtMatmulPreferenceCreate"));
  uint64_t ws = cu->ws_size;
  cublasStatus_t s =
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  if (s == CUBLAS_STATUS_SUCCESS)
    s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &k->align_a,
                                             sizeof k->align_a);
  if (s == CUBLAS_STATUS_SUCCESS)
    s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &k->align_b,
                                             sizeof k->align_b);
  if (s == CUBLAS_STATUS_SUCCESS)
    s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &k->align_d,
                                             sizeof k->align_d);
  if (s == CUBLAS_STATUS_SUCCESS)
    s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &k->align_d,
                                             sizeof k->align_d);
  cublasLtMatmulHeuristicResult_t res;
  int found = 0;
  if (s == CUBLAS_STATUS_SUCCESS)
    s = cublasLtMatmulAlgoGetHeuristic(cu->lt, e->op, e->la, e->lb, e->ld, e->ld, pref, 1, &res, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (s != CUBLAS_STATUS_SUCCESS || found < 1)
    return fr_errf(err, FR_E_UNSUPPORTED,
                   "cuBLASLt has no algorithm for %s m %lld n %lld k %lld batch %lld%s (status %d)",
                   fr_dtype_name((enum fr_dtype)k->dtype), (long long)k->m, (long long)k->n, (long long)k->k,
                   (long long)k->batch, k->bias ? " with bias" : "", (int)s);
  e->algo = res.algo;
  return FR_OK;
}

/* The cached entry for k, built on a miss (the least recently used entry makes room when full). */
static enum fr_status fr__entry_get(struct fr_cuda *cu, const struct fr__gemm_key *k,
                                    struct fr_cuda_gemm_entry **out, struct fr_err *err) {
  for (int i = 0; i < cu->gemm_n; i++) {
    if (memcmp(&cu->gemm[i].key, k, sizeof *k) == 0) {
      cu->gemm[i].used = ++cu->gemm_tick;
      *out = &cu->gemm[i];
      return FR_OK;
    }
  }
  struct fr_cuda_gemm_entry tmp;
  enum fr_status rc = fr__entry_build(cu, k, &tmp, err);
  if (rc != FR_OK) {
    fr__entry_destroy(&tmp);
    return rc;
  }
  int slot;
  if (cu->gemm_n < cu->gemm_cap) {
    slot = cu->gemm_n++;
  } else if (cu->gemm_cap < FR__GEMM_CACHE_MAX) {
    int cap = cu->gemm_cap ? cu->gemm_cap * 2 : 16;
    struct fr_cuda_gemm_entry *g = (struct fr_cuda_gemm_entry *)fr_realloc(cu->gemm, (size_t)cap * sizeof *g);
    if (!g) {
      fr__entry_destroy(&tmp);
      return fr_errf(err, FR_E_NOMEM, "out of memory growing the cuBLASLt descriptor cache");
    }
    cu->gemm = g;
    cu->gemm_cap = cap;
    slot = cu->gemm_n++;
  } else {
    slot = 0;
    for (int i = 1; i < cu->gemm_n; i++)
      if (cu->gemm[i].used < cu->gemm[slot].used)
        slot = i;
    fr__entry_destroy(&cu->gemm[slot]);
  }
  tmp.used = ++cu->gemm_tick;
  cu->gemm[slot] = tmp;
  *out = &cu->gemm[slot];
  return FR_OK;
}

/* D[i + j*ldd + b*sd] += bias[i]: the bias when cuBLASLt has no BIAS epilogue for a case. */
template <typename T>
static __global__ void fr__bias_rows_kernel(T *d, const T *bias, int64_t m, int64_t n, int64_t ldd,
                                            int64_t sd, int64_t batch) {
  int64_t total = m * n * batch;
  FR_CUDA_LOOP(e, total) {
    int64_t i = e % m, j = (e / m) % n, b = e / (m * n);
    T *p = d + b * sd + j * ldd + i;
    fr_st(p, fr_ld(p) + fr_ld(bias + i));
  }
}

enum fr_status fr_cuda_gemm_run(struct fr_cuda *cu, const struct fr_cuda_gemm *g, struct fr_err *err) {
  if (g->m <= 0 || g->n <= 0 || g->batch <= 0)
    return FR_OK;
  if (g->batch > INT32_MAX)
    return fr_errf(err, FR_E_UNSUPPORTED, "gemm batch %lld exceeds cuBLASLt's limit", (long long)g->batch);
  if (g->k <= 0) { /* empty sum: D = bias or 0 (or unchanged when accumulating) */
    if (g->accumulate && !g->bias)
      return FR_OK;
    return fr_errf(err, FR_E_INTERNAL, "gemm with k = 0 must be handled by the caller");
  }
  struct fr__gemm_key k;
  memset(&k, 0, sizeof k); /* padding takes part in memcmp */
  k.dtype = cu->dtype;
  k.ta = g->ta;
  k.tb = g->tb;
  k.bias = g->bias != NULL;
  k.accumulate = g->accumulate;
  k.m = g->m;
  k.n = g->n;
  k.k = g->k;
  k.lda = g->lda;
  k.ldb = g->ldb;
  k.ldd = g->ldd;
  k.batch = g->batch;
  k.sa = g->batch > 1 ? g->stride_a : 0;
  k.sb = g->batch > 1 ? g->stride_b : 0;
  k.sd = g->batch > 1 ? g->stride_d : 0;
  /* every matrix of a batch counts: the base address and the byte stride between matrices */
  size_t es = fr_dtype_size(cu->dtype);
  k.align_a = fr__align_batch(g->a, (size_t)k.sa * es);
  k.align_b = fr__align_batch(g->b, (size_t)k.sb * es);
  k.align_d = fr__align_batch(g->d, (size_t)k.sd * es);
  struct fr_cuda_gemm_entry *e = NULL;
  struct fr_err e1;
  enum fr_status rc = fr__entry_get(cu, &k, &e, &e1);
  bool bias_kernel = false;
  if (rc == FR_E_UNSUPPORTED && k.bias) { /* no fused bias for this case: plain GEMM + bias kernel */
    k.bias = 0;
    bias_kernel = true;
    rc = fr__entry_get(cu, &k, &e, err);
  } else if (rc != FR_OK && err) {
    memcpy(err->msg, e1.msg, sizeof e1.msg);
  }
  if (rc != FR_OK)
    return rc;
  if (k.bias)
    FR_CUDA_TRY(fr_cuda_lt_err(
        cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g->bias, sizeof g->bias),
        err, "cublasLtMatmulDescSetAttribute(BIAS_POINTER)"));
  float alpha = 1.0f, beta = g->accumulate ? 1.0f : 0.0f;
  FR_CUDA_TRY(fr_cuda_lt_err(cublasLtMatmul(cu->lt, e->op, &alpha, g->a, e->la, g->b, e->lb, &beta, g->d,
                                            e->ld, g->d, e->ld, &e->algo, cu->ws, cu->ws_size, cu->stream),
                             err, "cublasLtMatmul"));
  if (bias_kernel) {
    int64_t total = g->m * g->n * g->batch;
    FR_CUDA_DISPATCH(cu->dtype, err, T,
                     fr__bias_rows_kernel<T>
                     <<<fr_cuda_blocks(total, FR_CUDA_THREADS), FR_CUDA_THREADS, 0, cu->stream>>>(
                         (T *)g->d, (const T *)g->bias, g->m, g->n, g->ldd, g->stride_d, g->batch));
    FR_CUDA_TRY(fr_cuda_launched(err, "bias kernel"));
  }
  return FR_OK;
}

/* y [M, N] = x [M, K] w [N, K]^T + b */
enum fr_status fr_cuda_linear(void *bp, struct fr_tensor *y, const struct fr_tensor *x,
                              const struct fr_tensor *w, const struct fr_tensor *bias, struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bp;
  int64_t K = w->shape[1], N = w->shape[0], M = K ? fr_tensor_numel(x) / K : fr_tensor_numel(y) / (N ? N : 1);
  if (M == 0 || N == 0)
    return FR_OK;
  if (K == 0) { /* y = bias broadcast, or 0 */
    FR_CUDA_TRY(fr_cuda_fill(cu, y->data, M * N, 0.0f, err));
    if (!bias)
      return FR_OK;
  }
  struct fr_cuda_gemm g;
  memset(&g, 0, sizeof g);
  g.ta = true;
  g.tb = false;
  g.m = N;
  g.n = M;
  g.k = K;
  g.a = w->data;
  g.lda = K;
  g.b = x->data;
  g.ldb = K;
  g.d = y->data;
  g.ldd = N;
  g.batch = 1;
  g.bias = bias ? bias->data : NULL;
  if (K == 0) { /* only the bias: D += bias through the bias kernel path */
    int64_t total = M * N;
    FR_CUDA_DISPATCH(cu->dtype, err, T,
                     fr__bias_rows_kernel<T>
                     <<<fr_cuda_blocks(total, FR_CUDA_THREADS), FR_CUDA_THREADS, 0, cu->stream>>>(
                         (T *)y->data, (const T *)bias->data, N, M, N, 0, 1));
    return fr_cuda_launched(err, "bias kernel");
  }
  return fr_cuda_gemm_run(cu, &g, err);
}

/* y [..., M, N] = a [..., M, K] b [..., K, N], one strided-batched GEMM */
enum fr_status fr_cuda_matmul(void *bp, struct fr_tensor *y, const struct fr_tensor *a,
                              const struct fr_tensor *bm, struct fr_err *err) {
  struct fr_cuda *cu = (struct fr_cuda *)bp;
  int nd = a->ndim;
  int64_t M = a->shape[nd - 2], K = a->shape[nd - 1], N = bm->shape[nd - 1];
  if (fr_tensor_numel(y) == 0)
    return FR_OK;
  if (K == 0)
    return fr_cuda_fill(cu, y->data, fr_tensor_numel(y), 0.0f, err);
  struct fr_cuda_gemm g;
  memset(&g, 0, sizeof g);
  g.m = N;
  g.n = M;
  g.k = K;
  g.a = bm->data;
  g.lda = N;
  g.stride_a = K * N;
  g.b = a->data;
  g.ldb = K;
  g.stride_b = M * K;
  g.d = y->data;
  g.ldd = N;
  g.stride_d = M * N;
  g.batch = fr_tensor_numel(y) / (M * N);
  return fr_cuda_gemm_run(cu, &g, err);
}
