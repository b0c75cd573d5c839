/* Warp-level tensor-core primitives of sm_80 and later, shared by the tensor-core kernels
 * (attention_tc.cuh, conv_tc.cuh): mma.sync m16n8k16 with fp32 accumulation, ldmatrix and cp.async.
 *
 * Register fragments of mma.m16n8k16 (g = lane / 4, t = lane % 4):
 *   A (16 x 16, row-major): a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..)
 *   B (16 x 8, k x n):      b0 = (k 2t..2t+1, n g), b1 = (k 2t+8..2t+9, n g)
 *   C (16 x 8, fp32):       c0, c1 = (g, 2t), (g, 2t+1); c2, c3 = (g+8, 2t), (g+8, 2t+1)
 *
 * With FR_CUDA_EMULATE defined (tests/unit/test_cuda_emu.cpp) nothing here is compiled: the emulator
 * supplies the same names, written from the PTX ISA's definitions. */
#ifndef FR_KERNELS_CUDA_MMA_CUH
#define FR_KERNELS_CUDA_MMA_CUH

#include <stdint.h>

#ifndef FR_CUDA_EMULATE
#include <cuda_bf16.h>
#include <cuda_fp16.h>

/* fr__mma<T>::pack: two floats rounded to T, lo in the low 16 bits (a fragment register);
 * fr__mma<T>::run: c += a b for one m16n8k16 tile. PTX names the input type (f16 or bf16). */
template <typename T> struct fr__mma;
#define FR__MMA(T, T2, TO_T2, PTX)                                                                           \
  template <> struct fr__mma<T> {                                                                            \
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {                                    \
      T2 h = TO_T2(lo, hi); /* .x (the low 16 bits) = lo */                                                  \
      return *reinterpret_cast<uint32_t *>(&h);                                                              \
    }                                                                                                        \
    static __device__ __forceinline__ void run(float *c, const uint32_t *a, uint32_t b0, uint32_t b1) {      \
      FR__MMA_ASM(PTX);                                                                                      \
    }                                                                                                        \
  };
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define FR__MMA_ASM(PTX)                                                                                     \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." PTX "." PTX ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "    \
               "{%8,%9}, {%0,%1,%2,%3};\n"                                                                   \
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])                                              \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1))
#else
#define FR__MMA_ASM(PTX) (void)c, (void)a, (void)b0, (void)b1
#endif
FR__MMA(__half, __half2, __floats2half2_rn, "f16")
FR__MMA(__nv_bfloat16, __nv_bfloat162, __floats2bfloat162_rn, "bf16")
#undef FR__MMA
#undef FR__MMA_ASM

static __device__ __forceinline__ uint32_t fr__smem_addr(const void *p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}

/* Four 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i, which lands in r[i]. Plain:
 * lane gets (row lane/4, cols 2(lane%4)..+1) of each; .trans: (rows 2(lane%4)..+1, col lane/4). */
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define FR__LDSM(NAME, PTX)                                                                                  \
  static __device__ __forceinline__ void NAME(uint32_t *r, uint32_t addr) {                                  \
    asm volatile(PTX " {%0,%1,%2,%3}, [%4];\n"                                                               \
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])                                            \
                 : "r"(addr));                                                                               \
  }
#else
#define FR__LDSM(NAME, PTX)                                                                                  \
  static __device__ __forceinline__ void NAME(uint32_t *r, uint32_t addr) {                                  \
    (void)r, (void)addr;                                                                                     \
  }
#endif
FR__LDSM(fr__ldsm_x4, "ldmatrix.sync.aligned.m8n8.x4.shared.b16")
FR__LDSM(fr__ldsm_x4_trans, "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16")
#undef FR__LDSM

/* 16 bytes global -> shared, asynchronous; with ok false nothing is read and the 16 bytes become zeros
 * (src must still be a valid address). */
static __device__ __forceinline__ void fr__cp16(void *dst, const void *src, bool ok) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(fr__smem_addr(dst)), "l"(src),
               "r"(ok ? 16 : 0));
#endif
}
static __device__ __forceinline__ void fr__cp_commit(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
/* Waits until at most one committed group is still in flight (the newest). */
static __device__ __forceinline__ void fr__cp_wait_all_but_one(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group 1;\n" ::);
#endif
}

#endif /* FR_CUDA_EMULATE */

#endif
