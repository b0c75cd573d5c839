/* A stand-in for OpenBLAS's cblas.h, used ONLY by tests/gpu/run_gpu_checks.sh when the GPU machine has no
 * OpenBLAS development files: it declares the two functions the CPU backend calls. cblas_shim.c beside
 * this implements them plainly (correct, slow), which is enough for the op tests' small shapes. */
#ifndef FR_GPU_SHIM_CBLAS_H
#define FR_GPU_SHIM_CBLAS_H

enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 };
enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112 };

void cblas_sgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int m, int n,
                 int k, float alpha, const float *a, int lda, const float *b, int ldb, float beta, float *c,
                 int ldc);
void openblas_set_num_threads(int n);

#endif
