/* Noise equal to PyTorch's CPU generator, bit for bit.
 *
 * ComfyUI draws a sampler's initial noise as torch.randn(shape, generator=torch.manual_seed(seed)) on
 * the CPU, so a seed means the same image on every device. Reproducing it needs torch's whole path:
 * mt19937 seeded with the low 32 bits of the seed; float uniforms from 24 random bits; and two normal
 * transforms chosen by size:
 *   - fewer than 16 values: one double Box-Muller sample per value (log1p/sin/cos in double), the
 *     generator caching the second (sine) sample for the next call;
 *   - 16 or more: all uniforms drawn first, then Box-Muller over blocks of 16 (8 cosines, 8 sines) in
 *     float with the Cephes-style polynomial log/sincos of torch's AVX2 kernel (avx_mathfun), emulated
 *     here in scalar float arithmetic with the same operation order; a tail that is not a multiple of 16
 *     redraws 16 uniforms into the last 16 slots and transforms them again.
 * x86-64 builds of torch take the AVX2 path; that is what the goldens (and ComfyUI users) have. */
#ifndef FR_TORCH_RNG_H
#define FR_TORCH_RNG_H

#include <stdbool.h>
#include <stdint.h>

struct fr_torch_gen {
  uint32_t state[624];
  int next;                 /* index of the next state word to temper */
  bool has_normal;          /* cached second Box-Muller sample of the double path */
  double normal;
};

/* torch.Generator('cpu').manual_seed(seed) */
void fr_torch_gen_seed(struct fr_torch_gen *g, uint64_t seed);
/* The generator's 32- and 64-bit outputs (random() and random64() in torch). */
uint32_t fr_torch_gen_u32(struct fr_torch_gen *g);
uint64_t fr_torch_gen_u64(struct fr_torch_gen *g);
/* Fills out[0..n) as torch.randn(n-element contiguous float32 tensor, generator=g) does, advancing g
 * exactly as torch would (so consecutive calls match consecutive torch.randn calls). */
void fr_torch_randn(struct fr_torch_gen *g, float *out, int64_t n);

#endif
