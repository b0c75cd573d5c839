/* Plain sgemm for the GPU check build without OpenBLAS (see shim/cblas.h). Row-major only, which is all
 * the CPU backend uses; column-major is computed as the transposed row-major product. Sums in fp32 in
 * k order (i-k-j loops for the common no-transpose B, so the inner loop is contiguous). */
#include <stddef.h>

#include "cblas.h"

void openblas_set_num_threads(int n) {
  (void)n;
}

void cblas_sgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int m, int n,
                 int k, float alpha, const float *a, int lda, const float *b, int ldb, float beta, float *c,
                 int ldc) {
  if (order == CblasColMajor) { /* C^T = B^T A^T in row-major terms */
    cblas_sgemm(CblasRowMajor, tb, ta, n, m, k, alpha, b, ldb, a, lda, beta, c, ldc);
    return;
  }
  for (int i = 0; i < m; i++) {
    float *ci = c + (size_t)i * ldc;
    for (int j = 0; j < n; j++)
      ci[j] = beta == 0.0f ? 0.0f : ci[j] * beta;
    for (int p = 0; p < k; p++) {
      float av = alpha * (ta == CblasNoTrans ? a[(size_t)i * lda + p] : a[(size_t)p * lda + i]);
      if (tb == CblasNoTrans) {
        const float *bp = b + (size_t)p * ldb;
        for (int j = 0; j < n; j++)
          ci[j] += av * bp[j];
      } else {
        for (int j = 0; j < n; j++)
          ci[j] += av * b[(size_t)j * ldb + p];
      }
    }
  }
}
