/* CUDA kernels run on the host, so their index arithmetic, masks, reductions and fragment bookkeeping are
 * tested on every machine, CI included (no GPU there): the tensor-core attention
 * (kernels/cuda/attention_tc.cuh) and 3x3 conv (conv_tc.cuh), the split GroupNorm (group_norm.cuh), the
 * warp-per-row LayerNorm (layer_norm.cuh), the tiled transpose (transpose.cuh), conv2d's im2col, bias fill
 * and few-outputs kernel (conv2d.cuh), the activations, GEGLU and broadcasting binary ops (eltwise.cuh) and
 * the 2x upsampling (upsample.cuh), with the 16-byte-vector forms against the scalar ones.
 *
 * How: the kernel sources are compiled as plain C++ with FR_CUDA_EMULATE defined. Each CUDA thread of a
 * block is a host thread (blocks one after another); __syncthreads is a barrier of the block, __shared__
 * variables are function statics (one block runs at a time), and the warp-level primitives the kernels use
 * are written here from the PTX ISA's definitions, independently of the kernels:
 *  - mma.sync.m16n8k16 (f16/bf16 in, fp32 accumulate): every lane posts its A, B and C registers, a warp
 *    barrier, then each lane rebuilds the 16x16 A and 16x8 B from the documented fragment layouts and
 *    computes its four D elements;
 *  - ldmatrix .x4 (plain and .trans): lanes 8i..8i+7 post the row addresses of matrix i; lane l receives
 *    (row l/4, cols 2(l%4), 2(l%4)+1) of each matrix, or with .trans (rows 2(l%4), 2(l%4)+1, col l/4);
 *  - __shfl_xor_sync, and cp.async as a plain 16-byte copy (or zero fill), which is what it does once
 *    waited for.
 * Storage types: F16 as IEEE binary16 (_Float16), BF16 as the top 16 bits of a float, both rounded to
 * nearest even. Results are compared with double-precision references on the same rounded inputs; the
 * bounds are stated with the cases. Not checked here: timing, the asynchrony of cp.async, bank conflicts
 * (the GPU runs of test_ops do that).
 *
 * This is C++ only because the kernels are CUDA C++; it links nothing of flowrun. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <functional>
#include <thread>
#include <vector>

/* ---- the CUDA vocabulary the kernel uses ---- */
#define FR_CUDA_EMULATE 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n)
#define __launch_bounds__(...)

struct uint2 {
  uint32_t x, y;
};
struct uint4 {
  uint32_t x, y, z, w;
};
static inline uint2 make_uint2(uint32_t x, uint32_t y) {
  return uint2{x, y};
}
static inline uint4 make_uint4(uint32_t x, uint32_t y, uint32_t z, uint32_t w) {
  return uint4{x, y, z, w};
}

struct fr_dim3 {
  unsigned x, y, z;
};
static thread_local fr_dim3 threadIdx, blockIdx, blockDim, gridDim;

/* 16-bit storage types, constructible from a float as CUDA's are */
static uint16_t fr_emu_f2h(float f) {
  _Float16 h = (_Float16)f; /* round to nearest even */
  uint16_t b;
  memcpy(&b, &h, 2);
  return b;
}
static float fr_emu_h2f(uint16_t b) {
  _Float16 h;
  memcpy(&h, &b, 2);
  return (float)h;
}
static uint16_t fr_emu_f2bf(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return (uint16_t)((u >> 16) | 0x40); /* NaN stays NaN */
  u += 0x7fffu + ((u >> 16) & 1);        /* round to nearest even */
  return (uint16_t)(u >> 16);
}
static float fr_emu_bf2f(uint16_t b) {
  uint32_t u = (uint32_t)b << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
struct __half {
  uint16_t bits;
  __half() = default;
  __half(float f) : bits(fr_emu_f2h(f)) {}
};
struct __nv_bfloat16 {
  uint16_t bits;
  __nv_bfloat16() = default;
  __nv_bfloat16(float f) : bits(fr_emu_f2bf(f)) {}
};
static inline float rsqrtf(float v) {
  return 1.0f / sqrtf(v);
}
static inline float __half2float(__half h) {
  return fr_emu_h2f(h.bits);
}
static inline __half __float2half_rn(float f) {
  return __half(f);
}
static inline float __bfloat162float(__nv_bfloat16 h) {
  return fr_emu_bf2f(h.bits);
}
static inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  return __nv_bfloat16(f);
}

template <typename T> struct fr_emu_type;
template <> struct fr_emu_type<__half> {
  static uint16_t enc(float f) { return fr_emu_f2h(f); }
  static float dec(uint16_t b) { return fr_emu_h2f(b); }
};
template <> struct fr_emu_type<__nv_bfloat16> {
  static uint16_t enc(float f) { return fr_emu_f2bf(f); }
  static float dec(uint16_t b) { return fr_emu_bf2f(b); }
};
template <> struct fr_emu_type<float> {
  static float enc(float f) { return f; }
  static float dec(float f) { return f; }
};

/* ---- the block: barriers and the per-warp exchange area ---- */
#define FR_EMU_MAX_THREADS 1024
static pthread_barrier_t fr_emu_block_bar, fr_emu_warp_bar[FR_EMU_MAX_THREADS / 32];
static struct {
  uint32_t r[32][8];
  float f[32][4];
} fr_emu_warp[FR_EMU_MAX_THREADS / 32];

alignas(16) unsigned char fr__tc_sh[256 * 1024]; /* the block's shared memory */

static inline void __syncthreads(void) {
  pthread_barrier_wait(&fr_emu_block_bar);
}
static inline int fr_emu_lane(void) {
  return (int)(threadIdx.x & 31);
}
static inline void fr_emu_warp_sync(void) {
  pthread_barrier_wait(&fr_emu_warp_bar[threadIdx.x >> 5]);
}
static inline float __shfl_xor_sync(unsigned mask, float v, int o) {
  (void)mask;
  int w = (int)(threadIdx.x >> 5), l = fr_emu_lane();
  fr_emu_warp[w].f[l][0] = v;
  fr_emu_warp_sync();
  float r = fr_emu_warp[w].f[l ^ o][0];
  fr_emu_warp_sync();
  return r;
}

static inline uint32_t fr__smem_addr(const void *p) {
  return (uint32_t)((const unsigned char *)p - fr__tc_sh);
}
static inline uint16_t fr_emu_sh16(uint32_t addr) {
  uint16_t v;
  memcpy(&v, fr__tc_sh + addr, 2);
  return v;
}
static void fr_emu_ldsm(uint32_t *r, uint32_t addr, bool trans) {
  int w = (int)(threadIdx.x >> 5), l = fr_emu_lane();
  fr_emu_warp[w].r[l][0] = addr;
  fr_emu_warp_sync();
  for (int i = 0; i < 4; i++) { /* matrix i: row j starts at the address lane 8i + j posted */
    uint32_t lo, hi;
    if (!trans) {
      uint32_t row = fr_emu_warp[w].r[8 * i + l / 4][0];
      lo = fr_emu_sh16(row + 2 * (2 * (l % 4)));
      hi = fr_emu_sh16(row + 2 * (2 * (l % 4) + 1));
    } else {
      lo = fr_emu_sh16(fr_emu_warp[w].r[8 * i + 2 * (l % 4)][0] + 2 * (l / 4));
      hi = fr_emu_sh16(fr_emu_warp[w].r[8 * i + 2 * (l % 4) + 1][0] + 2 * (l / 4));
    }
    r[i] = lo | (hi << 16);
  }
  fr_emu_warp_sync();
}
static inline void fr__ldsm_x4(uint32_t *r, uint32_t addr) {
  fr_emu_ldsm(r, addr, false);
}
static inline void fr__ldsm_x4_trans(uint32_t *r, uint32_t addr) {
  fr_emu_ldsm(r, addr, true);
}
static inline void fr__cp16(void *dst, const void *src, bool ok) {
  if (ok)
    memcpy(dst, src, 16);
  else
    memset(dst, 0, 16);
}
static inline void fr__cp_commit(void) {}
static inline void fr__cp_wait_all_but_one(void) {}

template <typename T> struct fr__mma {
  static uint32_t pack(float lo, float hi) {
    return (uint32_t)fr_emu_type<T>::enc(lo) | ((uint32_t)fr_emu_type<T>::enc(hi) << 16);
  }
  /* c += a b, m16n8k16; A row-major 16x16, B 16x8 (k x n) */
  static void run(float *c, const uint32_t *a, uint32_t b0, uint32_t b1) {
    int w = (int)(threadIdx.x >> 5), l = fr_emu_lane();
    uint32_t *mine = fr_emu_warp[w].r[l];
    mine[0] = a[0], mine[1] = a[1], mine[2] = a[2], mine[3] = a[3], mine[4] = b0, mine[5] = b1;
    fr_emu_warp_sync();
    auto half = [&](int lane, int reg, int hi) {
      uint32_t v = fr_emu_warp[w].r[lane][reg];
      return fr_emu_type<T>::dec((uint16_t)(hi ? v >> 16 : v & 0xffffu));
    };
    auto A = [&](int r, int k) { /* a_reg: reg = (r >= 8) + 2 (k >= 8), lane = 4 (r % 8) + (k % 8) / 2 */
                                 return half(4 * (r % 8) + (k % 8) / 2, (r >= 8) + 2 * (k >= 8), k % 2);
    };
    auto B = [&](int k, int n) { /* b_reg: reg = 4 + (k >= 8), lane = 4 n + (k % 8) / 2 */
                                 return half(4 * n + (k % 8) / 2, 4 + (k >= 8), k % 2);
    };
    int g = l / 4, t = l % 4;
    for (int i = 0; i < 4; i++) { /* c0, c1: (g, 2t), (g, 2t+1); c2, c3: (g+8, 2t), (g+8, 2t+1) */
      int r = g + (i >= 2 ? 8 : 0), n = 2 * t + (i & 1);
      float acc = c[i];
      for (int k = 0; k < 16; k++)
        acc += A(r, k) * B(k, n);
      c[i] = acc;
    }
    fr_emu_warp_sync();
  }
};

#include "kernels/cuda/attention_tc.cuh"
#include "kernels/cuda/group_norm.cuh"
#include "kernels/cuda/layer_norm.cuh"
#include "kernels/cuda/transpose.cuh"
extern "C" {
#include "kernels/backend.h" /* FR_MAX_DIMS, enum fr_binary_op: what the binary kernels take */
}
#include "kernels/cuda/conv2d.cuh"
#include "kernels/cuda/conv_tc.cuh"
#include "kernels/cuda/eltwise.cuh"
#include "kernels/cuda/upsample.cuh"

/* ---- running a grid ---- */

/* Runs body once per thread of every block of grid (threads per block a multiple of 32), blocks one after
 * another; body calls the kernel. Shared memory starts poisoned: stale contents must not matter. */
static void fr_emu_launch2(fr_dim3 grid, unsigned bx, unsigned by, const std::function<void()> &body) {
  const unsigned threads = bx * by;
  pthread_barrier_init(&fr_emu_block_bar, NULL, threads);
  for (unsigned z = 0; z < grid.z; z++)
    for (unsigned y = 0; y < grid.y; y++)
      for (unsigned x = 0; x < grid.x; x++) {
        memset(fr__tc_sh, 0xA5, sizeof fr__tc_sh);
        std::vector<std::thread> th;
        th.reserve(threads);
        for (unsigned i = 0; i < threads; i++)
          th.emplace_back([&, i, x, y, z] {
            threadIdx = fr_dim3{i % bx, i / bx, 0};
            blockIdx = fr_dim3{x, y, z};
            blockDim = fr_dim3{bx, by, 1};
            gridDim = grid;
            body();
          });
        for (auto &t : th)
          t.join();
      }
  pthread_barrier_destroy(&fr_emu_block_bar);
}
static void fr_emu_launch(fr_dim3 grid, unsigned threads, const std::function<void()> &body) {
  fr_emu_launch2(grid, threads, 1, body);
}

template <typename T, int DP, int DV, int BK>
static bool fr_emu_run(T *y, const T *q, const T *k, const T *v, int64_t B, int64_t Tq, int64_t Tk, int heads,
                       int D, bool causal) {
  size_t smem = sizeof(T) * (size_t)(FR__TQ * (DP + 8) + 2 * BK * (DP + 8) + 2 * BK * (DV + 8));
  if (smem > sizeof fr__tc_sh) {
    printf("emulator: %zu bytes of shared memory do not fit\n", smem);
    return false;
  }
  const int chunks = (D + DV - 1) / DV;
  const int64_t HD = (int64_t)heads * D;
  const float sl2 = 1.4426950408889634f / sqrtf((float)D);
  fr_dim3 grid{(unsigned)((Tq + FR__TQ - 1) / FR__TQ), (unsigned)(heads * chunks), (unsigned)B};
  fr_emu_launch(grid, FR__TC_THREADS, [&] {
    fr__attn_tc_kernel<T, DP, DV, BK>(y, q, k, v, Tq, Tk, HD, D, chunks, sl2, causal ? 1 : 0);
  });
  return true;
}

/* ---- the cases ---- */

/* Which cases run: all, or (argv[1]) those whose name contains one of its '|'-separated parts; the
 * ThreadSanitizer build (tests/CMakeLists.txt) runs the kernels with barriers that way. */
static const char *fr_emu_only;
static bool fr_emu_want(const char *name) {
  if (!fr_emu_only)
    return true;
  for (const char *p = fr_emu_only; *p;) {
    const char *e = strchr(p, '|');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    for (const char *h = name; n && *h; h++)
      if (strncmp(h, p, n) == 0)
        return true;
    if (!e)
      break;
    p = e + 1;
  }
  return false;
}

static int fr_emu_passed, fr_emu_failed;

static uint64_t fr_emu_rng = 0x9E3779B97F4A7C15ull;
static float fr_emu_uniform(void) { /* [-1, 1) */
  fr_emu_rng ^= fr_emu_rng << 13, fr_emu_rng ^= fr_emu_rng >> 7, fr_emu_rng ^= fr_emu_rng << 17;
  return (float)((fr_emu_rng >> 40) * (1.0 / 8388608.0) - 1.0);
}

template <typename T, int DP, int DV, int BK>
static void fr_emu_case(const char *name, int64_t B, int64_t Tq, int64_t Tk, int heads, int D, bool causal,
                        float amp, double tol) {
  if (!fr_emu_want(name))
    return;
  const int64_t HD = (int64_t)heads * D;
  std::vector<T> q(B * Tq * HD), k(B * Tk * HD), v(B * Tk * HD), y(B * Tq * HD);
  std::vector<double> qd(q.size()), kd(k.size()), vd(v.size());
  auto fill = [&](std::vector<T> &s, std::vector<double> &d, float a) {
    for (size_t i = 0; i < s.size(); i++) {
      s[i].bits = fr_emu_type<T>::enc(a * fr_emu_uniform());
      d[i] = fr_emu_type<T>::dec(s[i].bits); /* the reference sees what the device holds */
    }
  };
  fill(q, qd, amp);
  fill(k, kd, amp);
  fill(v, vd, 1.0f);
  const uint16_t poison = fr_emu_type<T>::enc(777.0f);
  for (auto &e : y)
    e.bits = poison;
  if (!fr_emu_run<T, DP, DV, BK>(y.data(), q.data(), k.data(), v.data(), B, Tq, Tk, heads, D, causal)) {
    fr_emu_failed++;
    return;
  }
  double worst = 0, vmax = 0;
  std::vector<double> s(Tk);
  for (int64_t b = 0; b < B; b++)
    for (int h = 0; h < heads; h++)
      for (int64_t i = 0; i < Tq; i++) {
        const double *qr = &qd[(b * Tq + i) * HD + h * D];
        double mx = -INFINITY;
        for (int64_t j = 0; j < Tk; j++) {
          double a = 0;
          const double *kr = &kd[(b * Tk + j) * HD + h * D];
          for (int d = 0; d < D; d++)
            a += qr[d] * kr[d];
          s[j] = causal && j > i ? -INFINITY : a / sqrt((double)D);
          mx = s[j] > mx ? s[j] : mx;
        }
        double sum = 0;
        for (int64_t j = 0; j < Tk; j++)
          sum += s[j] = s[j] == -INFINITY ? 0.0 : exp(s[j] - mx);
        for (int d = 0; d < D; d++) {
          double o = 0;
          for (int64_t j = 0; j < Tk; j++)
            o += s[j] * vd[(b * Tk + j) * HD + h * D + d];
          o = sum > 0 ? o / sum : 0.0;
          double got = fr_emu_type<T>::dec(y[(b * Tq + i) * HD + h * D + d].bits);
          double e = fabs(got - o);
          worst = e > worst || e != e ? e : worst;
          vmax = fabs(o) > vmax ? fabs(o) : vmax;
        }
      }
  bool ok = worst <= tol; /* NaN fails */
  printf("%s %s: B %lld, Tq %lld, Tk %lld, %d heads x %d%s: max |err| %.3g (bound %.3g, max |out| %.3g)\n",
         ok ? "ok  " : "FAIL", name, (long long)B, (long long)Tq, (long long)Tk, heads, D,
         causal ? ", causal" : "", worst, tol, vmax);
  ok ? fr_emu_passed++ : fr_emu_failed++;
}

/* The inputs of a normalisation case: x (n values, offset + [-2, 2)), gamma and beta (C), as stored and as
 * the double reference sees them (gd, bd: 1 and 0 without affine). Stores and loads are device.cuh's, so
 * they round as on the GPU. */
template <typename T> struct fr_emu_norm_in {
  std::vector<T> x, gamma, beta;
  std::vector<double> xd, gd, bd;
  fr_emu_norm_in(int64_t n, int64_t C, bool affine, float offset)
      : x(n), gamma(C), beta(C), xd(n), gd(C, 1.0), bd(C, 0.0) {
    for (int64_t i = 0; i < n; i++) {
      fr_st(&x[i], offset + 2.0f * fr_emu_uniform());
      xd[i] = fr_ld(&x[i]);
    }
    for (int64_t c = 0; c < C; c++) {
      fr_st(&gamma[c], 1.0f + 0.5f * fr_emu_uniform());
      fr_st(&beta[c], 0.5f * fr_emu_uniform());
      if (affine)
        gd[c] = fr_ld(&gamma[c]), bd[c] = fr_ld(&beta[c]);
    }
  }
};

/* GroupNorm: x [B, C, S] with G groups, gamma/beta optional, SiLU optional; the two kernels launched as
 * norm.cu launches them (splits for a GPU of 132 SMs). */
template <typename T, bool V = false>
static void fr_emu_gn_case(const char *name, int64_t B, int64_t C, int64_t S, int G, bool affine, bool silu,
                           float offset, double tol) {
  if (!fr_emu_want(name))
    return;
  const int64_t n = B * C * S, cpg = C / G, gt = B * G, per = cpg * S;
  fr_emu_norm_in<T> in(n, C, affine, offset);
  std::vector<T> y(n);
  int64_t splits, chunk;
  fr__gn_splits(gt, per, 132, V ? FR_VEC(T) : 1, &splits, &chunk);
  std::vector<float> part(gt * splits * 3, NAN);
  const float eps = 1e-5f;
  fr_emu_launch(fr_dim3{(unsigned)gt, (unsigned)splits, 1}, 256,
                [&] { fr__gn_stats_kernel<T, V>(part.data(), in.x.data(), per, chunk); });
  const int64_t rows = B * C;
  fr_emu_launch(fr_dim3{4, (unsigned)(rows < 7 ? rows : 7), 1}, 64,
                [&] { /* fewer blocks than rows: strided */
                      fr__gn_apply_kernel<T, V>(
                          y.data(), in.x.data(), part.data(), affine ? in.gamma.data() : NULL,
                          affine ? in.beta.data() : NULL, C, cpg, G, S, (int)splits, rows, eps, silu ? 1 : 0);
                });
  double worst = 0;
  for (int64_t g = 0; g < gt; g++) {
    const double *xg = &in.xd[g * per];
    double mean = 0, var = 0;
    for (int64_t i = 0; i < per; i++)
      mean += xg[i];
    mean /= (double)per;
    for (int64_t i = 0; i < per; i++)
      var += (xg[i] - mean) * (xg[i] - mean);
    var /= (double)per;
    for (int64_t i = 0; i < per; i++) {
      int64_t c = (g % G) * cpg + i / S;
      double v = (xg[i] - mean) / sqrt(var + eps) * in.gd[c] + in.bd[c];
      if (silu)
        v = v / (1.0 + exp(-v));
      double e = fabs(fr_ld(&y[g * per + i]) - v);
      worst = e > worst || e != e ? e : worst;
    }
  }
  bool ok = worst <= tol;
  printf(
      "%s %s: B %lld, C %lld, S %lld, %d groups, %lld slices%s%s%s, mean %g: max |err| %.3g (bound %.3g)\n",
      ok ? "ok  " : "FAIL", name, (long long)B, (long long)C, (long long)S, G, (long long)splits,
      affine ? ", affine" : "", silu ? ", silu" : "", V ? ", 16-byte vectors" : "", (double)offset, worst,
      tol);
  ok ? fr_emu_passed++ : fr_emu_failed++;
}

/* LayerNorm: x [rows, C] with gamma/beta or without, a warp per row, in a grid smaller than the rows.
 * Bounds as GroupNorm's: F32 1e-5 (outputs O(1-3), fp32 two-pass statistics of C elements), F16/BF16 the
 * output's rounding 2u x |y|max: 3e-3 and 2.5e-2. */
template <typename T, bool V>
static void fr_emu_ln_case(const char *name, int64_t rows, int64_t C, bool affine, float offset, double tol) {
  if (!fr_emu_want(name))
    return;
  fr_emu_norm_in<T> in(rows * C, C, affine, offset);
  std::vector<T> y(rows * C);
  for (auto &e : y)
    fr_st(&e, 640.0f);
  const float eps = 1e-5f;
  fr_emu_launch(fr_dim3{1, 1, 1}, 32 * FR__LN_ROWS,
                [&] { /* 8 rows at a time: strided */
                      fr__layer_norm_kernel<T, V>(y.data(), in.x.data(), affine ? in.gamma.data() : NULL,
                                                  affine ? in.beta.data() : NULL, rows, C, eps);
                });
  double worst = 0;
  for (int64_t r = 0; r < rows; r++) {
    double mean = 0, var = 0;
    for (int64_t c = 0; c < C; c++)
      mean += in.xd[r * C + c];
    mean /= (double)C;
    for (int64_t c = 0; c < C; c++)
      var += (in.xd[r * C + c] - mean) * (in.xd[r * C + c] - mean);
    var /= (double)C;
    for (int64_t c = 0; c < C; c++) {
      const double v = (in.xd[r * C + c] - mean) / sqrt(var + eps) * in.gd[c] + in.bd[c];
      const double e = fabs(fr_ld(&y[r * C + c]) - v);
      worst = e > worst || e != e ? e : worst;
    }
  }
  const bool ok = worst <= tol;
  printf("%s %s: [%lld, %lld]%s%s, mean %g: max |err| %.3g (bound %.3g)\n", ok ? "ok  " : "FAIL", name,
         (long long)rows, (long long)C, affine ? ", affine" : "", V ? ", 16-byte vectors" : "",
         (double)offset, worst, tol);
  ok ? fr_emu_passed++ : fr_emu_failed++;
}

/* The tiled transpose and the recognition of permutes as transposes. Exact (a copy). */
template <typename T> static void fr_emu_transpose_case(const char *name, int64_t A, int64_t M, int64_t N) {
  if (!fr_emu_want(name))
    return;
  std::vector<T> x(A * M * N), y(A * M * N);
  for (size_t i = 0; i < x.size(); i++)
    fr_st(&x[i], (float)(i % 2039) - 1000.0f); /* integers: exact in every storage type */
  fr_dim3 grid{(unsigned)((N + FR__TT - 1) / FR__TT), (unsigned)((M + FR__TT - 1) / FR__TT), (unsigned)A};
  fr_emu_launch2(grid, FR__TT, FR__TR, [&] { fr__transpose_kernel<T>(y.data(), x.data(), M, N); });
  int64_t bad = 0;
  for (int64_t a = 0; a < A; a++)
    for (int64_t m = 0; m < M; m++)
      for (int64_t n = 0; n < N; n++)
        bad += fr_ld(&y[(a * N + n) * M + m]) != fr_ld(&x[(a * M + m) * N + n]);
  printf("%s %s: [%lld, %lld, %lld] -> [%lld, %lld, %lld]: %lld wrong elements\n", bad ? "FAIL" : "ok  ",
         name, (long long)A, (long long)M, (long long)N, (long long)A, (long long)N, (long long)M,
         (long long)bad);
  bad ? fr_emu_failed++ : fr_emu_passed++;
}

static void fr_emu_as_transpose_case(int nd, const int64_t *shape, const int *perm, bool want, int64_t wa,
                                     int64_t wm, int64_t wn) {
  if (!fr_emu_want("permute as transpose"))
    return;
  int64_t A = 0, M = 0, N = 0;
  bool got = fr__as_transpose(nd, shape, perm, &A, &M, &N);
  bool ok = got == want && (!want || (A == wa && M == wm && N == wn));
  printf("%s permute of %d dims as a transpose: %s", ok ? "ok  " : "FAIL", nd, got ? "yes" : "no");
  if (got)
    printf(" [%lld, %lld, %lld]", (long long)A, (long long)M, (long long)N);
  printf("\n");
  ok ? fr_emu_passed++ : fr_emu_failed++;
}

/* conv2d's im2col against the definition, in grids smaller than the work (strided loops). Exact. */
static void fr_emu_im2col_case(const char *name, int nb, int C, int H, int W, int k, int stride, int pad,
                               int oh0, int rows) {
  if (!fr_emu_want(name))
    return;
  const int Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1, K = C * k * k;
  const int pc = rows * Wo;
  std::vector<__half> x((size_t)nb * C * H * W), cols((size_t)nb * K * pc);
  for (size_t i = 0; i < x.size(); i++)
    fr_st(&x[i], (float)(i % 1999) - 999.0f);
  for (auto &e : cols)
    fr_st(&e, 12345.0f); /* every element must be written */
  fr_emu_launch(fr_dim3{2, 5, (unsigned)nb}, 64, [&] {
    fr__im2col_kernel<__half>(cols.data(), x.data(), C, H, W, k, k, Wo, oh0, pc, K, stride, pad);
  });
  int64_t bad = 0;
  for (int b = 0; b < nb; b++)
    for (int r = 0; r < K; r++)
      for (int p = 0; p < pc; p++) {
        int c = r / (k * k), ki = r / k % k, kj = r % k, oh = oh0 + p / Wo, ow = p % Wo;
        int ih = oh * stride - pad + ki, iw = ow * stride - pad + kj;
        float want =
            ih >= 0 && ih < H && iw >= 0 && iw < W ? fr_ld(&x[(((size_t)b * C + c) * H + ih) * W + iw]) : 0;
        bad += fr_ld(&cols[((size_t)b * K + r) * pc + p]) != want;
      }
  printf("%s %s: %d images [%d, %d, %d], %dx%d stride %d pad %d, output rows %d..%d of %d: %lld wrong\n",
         bad ? "FAIL" : "ok  ", name, nb, C, H, W, k, k, stride, pad, oh0, oh0 + rows - 1, Ho,
         (long long)bad);
  bad ? fr_emu_failed++ : fr_emu_passed++;
}

static void fr_emu_bias_fill_case(void) {
  if (!fr_emu_want("conv bias fill"))
    return;
  const int64_t B = 2, O = 5, P = 300;
  std::vector<float> y(B * O * P, NAN), bias(O);
  for (int64_t o = 0; o < O; o++)
    bias[o] = (float)(o * 3 + 1);
  fr_emu_launch2(fr_dim3{2, 3, 1}, 64, 1,
                 [&] { fr__bias_fill_kernel<float>(y.data(), bias.data(), O, P, B * O); });
  int64_t bad = 0;
  for (int64_t i = 0; i < B * O * P; i++)
    bad += y[i] != bias[i / P % O];
  printf("%s conv bias fill [%lld, %lld, %lld] in a 2 x 3 grid: %lld wrong\n", bad ? "FAIL" : "ok  ",
         (long long)B, (long long)O, (long long)P, (long long)bad);
  bad ? fr_emu_failed++ : fr_emu_passed++;
}

/* The tensor-core 3x3 conv (stride 1, padding 1) against the definition in double precision on the same
 * rounded inputs, launched as conv_tc.cu launches it. Inputs in [-1, 1), weights scaled by 1/sqrt(9C), so
 * outputs are O(1). Per element the bound is the output's rounding (half an ulp: 2^-11 |y| for F16, 2^-8
 * |y| for BF16) plus 1e-4 for the fp32 accumulation of 9C terms; a wrong tap, channel, halo or fragment
 * index gives errors of 1e-1 and more. y has a guard after it: a write past the image fails the case. */
template <typename T>
static void fr_emu_conv_tc_case(const char *name, int B, int C, int O, int H, int W, bool bias) {
  if (!fr_emu_want(name))
    return;
  const int64_t nx = (int64_t)B * C * H * W, nw = (int64_t)O * C * 9, ny = (int64_t)B * O * H * W;
  const int guard = 4096;
  std::vector<T> x(nx), w(nw), bv(O), y(ny + guard);
  std::vector<double> xd(nx), wd(nw), bd(O, 0.0);
  const float ws = 1.0f / sqrtf(9.0f * (float)C);
  for (int64_t i = 0; i < nx; i++)
    fr_st(&x[i], fr_emu_uniform()), xd[i] = fr_ld(&x[i]);
  for (int64_t i = 0; i < nw; i++)
    fr_st(&w[i], ws * fr_emu_uniform()), wd[i] = fr_ld(&w[i]);
  for (int o = 0; o < O; o++)
    fr_st(&bv[o], 0.5f * fr_emu_uniform()), bd[o] = bias ? fr_ld(&bv[o]) : 0.0;
  for (auto &e : y)
    fr_st(&e, 640.0f); /* exact in F16 and BF16 */
  const int TW = fr__cv_tile_w(W), TH = FR__CV_BP / TW, tiles_w = (W + TW - 1) / TW;
  fr_dim3 grid{(unsigned)((H + TH - 1) / TH * tiles_w), (unsigned)(O / FR__CV_BO), (unsigned)B};
  if (FR__CV_SMEM(sizeof(T)) > sizeof fr__tc_sh) {
    printf("FAIL %s: the emulator's shared memory is too small\n", name);
    fr_emu_failed++;
    return;
  }
  fr_emu_launch(grid, FR__CV_THREADS, [&] {
    fr__conv_tc_kernel<T>(y.data(), x.data(), w.data(), bias ? bv.data() : NULL, C, H, W, O, TW, tiles_w);
  });
  const double u = sizeof(T) == 2 && fr_emu_type<T>::enc(1.0f + 1.0f / 512) == fr_emu_type<T>::enc(1.0f)
                       ? 1.0 / 256   /* BF16: 1 + 2^-9 rounds to 1 */
                       : 1.0 / 2048; /* F16 */
  double worst = 0, ratio = 0;
  for (int b = 0; b < B; b++)
    for (int o = 0; o < O; o++)
      for (int oh = 0; oh < H; oh++)
        for (int ow = 0; ow < W; ow++) {
          double ref = bd[o];
          for (int c = 0; c < C; c++)
            for (int ki = 0; ki < 3; ki++)
              for (int kj = 0; kj < 3; kj++) {
                const int ih = oh - 1 + ki, iw = ow - 1 + kj;
                if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                  ref += xd[(((int64_t)b * C + c) * H + ih) * W + iw] *
                         wd[(((int64_t)o * C + c) * 3 + ki) * 3 + kj];
              }
          const double got = fr_ld(&y[(((int64_t)b * O + o) * H + oh) * W + ow]);
          const double e = fabs(got - ref), bound = u * fabs(ref) + 1e-4;
          worst = e > worst || e != e ? e : worst;
          ratio = e / bound > ratio || e != e ? e / bound : ratio;
        }
  int64_t guarded = 0;
  for (int i = 0; i < guard; i++)
    guarded += fr_ld(&y[ny + i]) != 640.0f;
  const bool ok = ratio <= 1.0 && guarded == 0; /* NaN fails */
  printf("%s %s: [%d, %d, %d, %d] -> %d channels, tiles %dx%d%s: max |err| %.3g, %.2f of the bound%s\n",
         ok ? "ok  " : "FAIL", name, B, C, H, W, O, TH, TW, bias ? ", bias" : "", worst, ratio,
         guarded ? ", WROTE PAST y" : "");
  ok ? fr_emu_passed++ : fr_emu_failed++;
}

/* The 16-byte-vector forms of the elementwise kernels against their scalar forms (the same fp32 arithmetic
 * per element, so equal bits), in grids smaller than the work: unary ops, GEGLU, the same-shape binary op and
 * the 2x upsampling. A wrong vector index or lane shows as wrong elements; the poison checks coverage. */
template <typename T> static void fr_emu_vec_cases(const char *tn) {
  char label[64];
  snprintf(label, sizeof label, "%s 16-byte vectors", tn);
  if (!fr_emu_want(label))
    return;
  const int K = FR_VEC(T);
  auto fill = [](std::vector<T> &v, float amp) {
    for (auto &e : v)
      fr_st(&e, amp * fr_emu_uniform());
  };
  auto same = [](const std::vector<T> &a, const std::vector<T> &b) {
    int64_t bad = 0;
    for (size_t i = 0; i < a.size(); i++)
      bad += memcmp(&a[i], &b[i], sizeof(T)) != 0;
    return bad;
  };
  auto report = [&](const char *what, int64_t bad) {
    printf("%s %s %s, vectors of %d vs scalar: %lld different elements\n", bad ? "FAIL" : "ok  ", tn, what, K,
           (long long)bad);
    bad ? fr_emu_failed++ : fr_emu_passed++;
  };
  const int64_t n = 40 * K; /* 40 vectors in a grid of 2 x 64 threads: strided */
  std::vector<T> x(n), b(n), yv(n), ys(n);
  fill(x, 4.0f);
  fill(b, 1.0f);
  int64_t bad = 0;
  for (int op = FR_UNARY_SILU; op <= FR_UNARY_LEAKY_RELU; op++) {
    if (op == FR_UNARY_COPY) /* a cudaMemcpyAsync, not this kernel */
      continue;
    fr_st(&yv[0], 640.0f), fr_st(&ys[0], -640.0f);
    for (int64_t i = 1; i < n; i++)
      yv[i] = yv[0], ys[i] = ys[0];
    fr_emu_launch(fr_dim3{2, 1, 1}, 64,
                  [&] { fr__unary_kernel<T, true>(yv.data(), x.data(), n, op, 0.5f, 0.25f); });
    fr_emu_launch(fr_dim3{2, 1, 1}, 64,
                  [&] { fr__unary_kernel<T, false>(ys.data(), x.data(), n, op, 0.5f, 0.25f); });
    bad += same(yv, ys);
  }
  report("unary ops", bad);
  for (int64_t i = 0; i < n; i++)
    fr_st(&yv[i], 640.0f), fr_st(&ys[i], -640.0f);
  fr_emu_launch(fr_dim3{2, 1, 1}, 64,
                [&] { fr__binary_same_kernel<T, true>(yv.data(), x.data(), b.data(), n, FR_BINARY_MUL); });
  fr_emu_launch(fr_dim3{2, 1, 1}, 64,
                [&] { fr__binary_same_kernel<T, false>(ys.data(), x.data(), b.data(), n, FR_BINARY_MUL); });
  report("binary same shape", same(yv, ys));
  /* the row broadcasts against the general broadcast kernel: [6, 3K] op [6, 1] and op [3K] */
  for (int sb1 = 0; sb1 < 2; sb1++) {
    const int64_t R = 6, S = 3 * K, m = R * S;
    std::vector<T> bb(sb1 ? S : R), rv(m), rs(m), rg(m);
    fill(bb, 1.0f);
    fr__bc bc = {2, {R, S}, {S, 1}, {sb1 ? 0 : 1, sb1}};
    for (int64_t i = 0; i < m; i++)
      fr_st(&rv[i], 640.0f), fr_st(&rs[i], -640.0f), fr_st(&rg[i], 320.0f);
    fr_emu_launch2(fr_dim3{1, 4, 1}, 32, 1, [&] {
      fr__binary_rows_kernel<T, true>(rv.data(), x.data(), bb.data(), R, S, sb1 ? 0 : 1, sb1, FR_BINARY_SUB);
    });
    fr_emu_launch2(fr_dim3{1, 4, 1}, 32, 1, [&] {
      fr__binary_rows_kernel<T, false>(rs.data(), x.data(), bb.data(), R, S, sb1 ? 0 : 1, sb1, FR_BINARY_SUB);
    });
    fr_emu_launch(fr_dim3{2, 1, 1}, 64,
                  [&] { fr__binary_kernel<T, int>(rg.data(), x.data(), bb.data(), m, bc, FR_BINARY_SUB); });
    report(sb1 ? "binary [R, S] - [S]" : "binary [R, S] - [R, 1]", same(rv, rs) + same(rs, rg));
  }
  { /* GEGLU: x [5, 2N] with N = 4K, y [5, N] */
    const int64_t R = 5, N = 4 * K;
    std::vector<T> gx(R * 2 * N), gv(R * N), gs(R * N);
    fill(gx, 3.0f);
    for (int64_t i = 0; i < R * N; i++)
      fr_st(&gv[i], 640.0f), fr_st(&gs[i], -640.0f);
    fr_emu_launch(fr_dim3{1, 1, 1}, 32, [&] { fr__geglu_kernel<T, int, true>(gv.data(), gx.data(), R, N); });
    fr_emu_launch(fr_dim3{1, 1, 1}, 32,
                  [&] { fr__geglu_kernel<T, int64_t, false>(gs.data(), gx.data(), R, N); });
    int64_t wrong = same(gv, gs);
    for (int64_t r = 0; r < R; r++) /* and the scalar form against the definition */
      for (int64_t j = 0; j < N; j++) {
        T want;
        fr_st(&want, fr_ld(&gx[r * 2 * N + j]) * fr__gelu(fr_ld(&gx[r * 2 * N + N + j])));
        wrong += memcmp(&want, &gs[r * N + j], sizeof(T)) != 0;
      }
    report("geglu", wrong);
  }
  { /* 2x upsampling of [2, 3, 5, 2K] */
    const int64_t P = 6, H = 5, W = 2 * K, rows = P * 2 * H;
    std::vector<T> ux(P * H * W), uv(rows * 2 * W), us(rows * 2 * W);
    fill(ux, 2.0f);
    for (size_t i = 0; i < uv.size(); i++)
      fr_st(&uv[i], 640.0f), fr_st(&us[i], -640.0f);
    fr_emu_launch(fr_dim3{1, 7, 1}, 32, [&] { fr__up2_kernel<T, true>(uv.data(), ux.data(), rows, H, W); });
    fr_emu_launch(fr_dim3{1, 7, 1}, 32, [&] { fr__up2_kernel<T, false>(us.data(), ux.data(), rows, H, W); });
    int64_t wrong = same(uv, us);
    for (int64_t r = 0; r < rows; r++) /* and the scalar form against the definition */
      for (int64_t j = 0; j < 2 * W; j++)
        wrong += memcmp(&us[r * 2 * W + j], &ux[((r / (2 * H)) * H + r % (2 * H) / 2) * W + j / 2],
                        sizeof(T)) != 0;
    report("upsample 2x", wrong);
  }
}

/* The few-outputs conv (conv2d.cuh, the models' conv_out) against the definition in double on the same
 * rounded inputs, in a grid smaller than the pixels. Outputs O(1) (weights scaled by 1/sqrt(C kh kw)); the
 * bound is the output's rounding, half an ulp (2^-11 |y| F16, 2^-8 |y| BF16, 2^-24 |y| F32), plus 1e-5 for
 * the fp32 sums. */
template <typename T, int O>
static void fr_emu_small_o_case(const char *name, int B, int C, int H, int W, int k, int stride, int pad,
                                bool bias) {
  if (!fr_emu_want(name))
    return;
  const int Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1, K = C * k * k;
  std::vector<T> x((size_t)B * C * H * W), w((size_t)O * K), bv(O), y((size_t)B * O * Ho * Wo);
  const float ws = 1.0f / sqrtf((float)K);
  for (auto &e : x)
    fr_st(&e, fr_emu_uniform());
  for (auto &e : w)
    fr_st(&e, ws * fr_emu_uniform());
  for (auto &e : bv)
    fr_st(&e, 0.5f * fr_emu_uniform());
  for (auto &e : y)
    fr_st(&e, 640.0f);
  fr_emu_launch(fr_dim3{2, (unsigned)B, 1}, 64, [&] {
    fr__conv_small_o_kernel<T, O>(y.data(), x.data(), w.data(), bias ? bv.data() : NULL, C, H, W, k, k, Ho,
                                  Wo, stride, pad);
  });
  const double u = sizeof(T) == 4                                                        ? 1.0 / 16777216
                   : fr_emu_type<T>::enc(1.0f + 1.0f / 512) == fr_emu_type<T>::enc(1.0f) ? 1.0 / 256
                                                                                         : 1.0 / 2048;
  double ratio = 0, worst = 0;
  for (int b = 0; b < B; b++)
    for (int o = 0; o < O; o++)
      for (int oh = 0; oh < Ho; oh++)
        for (int ow = 0; ow < Wo; ow++) {
          double ref = bias ? fr_ld(&bv[o]) : 0.0;
          for (int c = 0; c < C; c++)
            for (int ki = 0; ki < k; ki++)
              for (int kj = 0; kj < k; kj++) {
                const int ih = oh * stride - pad + ki, iw = ow * stride - pad + kj;
                if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                  ref += (double)fr_ld(&x[(((size_t)b * C + c) * H + ih) * W + iw]) *
                         fr_ld(&w[(((size_t)o * C + c) * k + ki) * k + kj]);
              }
          const double e = fabs(fr_ld(&y[(((size_t)b * O + o) * Ho + oh) * Wo + ow]) - ref);
          const double bound = u * fabs(ref) + 1e-5;
          worst = e > worst || e != e ? e : worst;
          ratio = e / bound > ratio || e != e ? e / bound : ratio;
        }
  const bool ok = ratio <= 1.0;
  printf(
      "%s %s: [%d, %d, %d, %d] -> %d channels, %dx%d stride %d pad %d%s: max |err| %.3g, %.2f of the bound\n",
      ok ? "ok  " : "FAIL", name, B, C, H, W, O, k, k, stride, pad, bias ? ", bias" : "", worst, ratio);
  ok ? fr_emu_passed++ : fr_emu_failed++;
}

/* Broadcast binary ops as ops.c hands them over (merged dims, element strides), int and int64 index paths. */
template <typename I>
static void fr_emu_binary_case(const char *name, const fr__bc &bc, int64_t na, int64_t nbn) {
  if (!fr_emu_want(name))
    return;
  int64_t n = 1;
  for (int d = 0; d < bc.nd; d++)
    n *= bc.shape[d];
  std::vector<float> a(na), b(nbn), y(n, NAN);
  for (int64_t i = 0; i < na; i++)
    a[i] = (float)(i % 97);
  for (int64_t i = 0; i < nbn; i++)
    b[i] = (float)(i % 89) * 2.0f;
  for (int op = FR_BINARY_ADD; op <= FR_BINARY_MUL; op++) {
    fr_emu_launch(fr_dim3{3, 1, 1}, 64,
                  [&] { fr__binary_kernel<float, I>(y.data(), a.data(), b.data(), n, bc, op); });
    int64_t bad = 0;
    for (int64_t e = 0; e < n; e++) {
      int64_t rem = e, oa = 0, ob = 0;
      for (int d = bc.nd - 1; d >= 0; d--) {
        oa += rem % bc.shape[d] * bc.sa[d];
        ob += rem % bc.shape[d] * bc.sb[d];
        rem /= bc.shape[d];
      }
      float want = op == FR_BINARY_ADD ? a[oa] + b[ob] : op == FR_BINARY_SUB ? a[oa] - b[ob] : a[oa] * b[ob];
      bad += y[e] != want;
    }
    printf("%s binary %s op %d (%s indices): %lld wrong\n", bad ? "FAIL" : "ok  ", name, op,
           sizeof(I) == 4 ? "int" : "int64", (long long)bad);
    bad ? fr_emu_failed++ : fr_emu_passed++;
  }
}

int main(int argc, char **argv) {
  fr_emu_only = argc > 1 ? argv[1] : NULL;
  for (int w = 0; w < FR_EMU_MAX_THREADS / 32; w++)
    if (pthread_barrier_init(&fr_emu_warp_bar[w], NULL, 32) != 0)
      return 1;
  /* Bounds. Outputs are convex combinations of v (|v| < 1), so errors are absolute. The kernel rounds P
   * to the storage dtype before P V (relative 2^-11 for F16, 2^-8 for BF16 per term, partly averaging
   * out) and the output once (the same u again); fp32 accumulation adds ~1e-6. Bound: 4u, i.e. 2e-3 for
   * F16 and 1.6e-2 for BF16. A wrong fragment, mask or rescale gives errors of 1e-1 and more. */
  const double f16 = 2e-3, bf16 = 1.6e-2;
  /* SD's head dims, tails in queries (70 = 64 + 6) and keys (100 = 64 + 36), cross attention */
  fr_emu_case<__half, 48, 48, 64>("f16 d40 (padded to 48)", 1, 70, 100, 2, 40, false, 2.0f, f16);
  fr_emu_case<__half, 64, 64, 64>("f16 d64 cross", 2, 33, 77, 1, 64, false, 2.0f, f16);
  fr_emu_case<__half, 80, 80, 64>("f16 d80, three key tiles", 1, 20, 130, 1, 80, false, 2.0f, f16);
  fr_emu_case<__half, 160, 160, 32>("f16 d160", 1, 17, 40, 1, 160, false, 2.0f, f16);
  /* causal (the text encoders), a key tile entirely masked for the first query tile, large logits */
  fr_emu_case<__half, 16, 16, 64>("f16 d8 causal (CLIP-like)", 1, 77, 77, 3, 8, true, 3.0f, f16);
  fr_emu_case<__half, 64, 64, 64>("f16 d64 causal, 3 tiles", 1, 130, 130, 1, 64, true, 3.0f, f16);
  /* the VAE's single 512-wide head: 4 output chunks of 128 */
  fr_emu_case<__half, 512, 128, 32>("f16 d512 chunked", 1, 20, 40, 1, 512, false, 1.0f, f16);
  fr_emu_case<__half, 256, 128, 32>("f16 d200 chunked (padded to 256)", 1, 9, 33, 1, 200, false, 1.0f, f16);
  /* BF16 */
  fr_emu_case<__nv_bfloat16, 64, 64, 64>("bf16 d64", 1, 65, 70, 2, 64, false, 2.0f, bf16);
  fr_emu_case<__nv_bfloat16, 160, 160, 32>("bf16 d160 causal", 1, 40, 40, 1, 160, true, 2.0f, bf16);
  /* GroupNorm. Outputs are O(1-3); fp32 statistics of O(1e4)-element slices combined pairwise: F32 1e-4
   * (the offset-10 case: sums near 1e5 keep ~1e-7 relative), F16/BF16 the output's rounding, 2u x |y|max
   * ~ 3: 3e-3 and 2.5e-2. A wrong slice, group or channel index gives errors of 1e-1 and more. */
  fr_emu_gn_case<float>("gn f32, one slice", 2, 8, 35, 4, true, true, 0.0f, 1e-4);
  fr_emu_gn_case<float>("gn f32, 16 slices, offset", 1, 4, 16384, 1, true, false, 10.0f, 1e-4);
  fr_emu_gn_case<float>("gn f32, 2 slices, no affine", 1, 4, 4096, 2, false, true, 0.0f, 1e-4);
  fr_emu_gn_case<__half>("gn f16, 3 slices, uneven last", 2, 6, 4100, 2, true, true, 0.5f, 3e-3);
  fr_emu_gn_case<__nv_bfloat16>("gn bf16, 8 slices", 1, 8, 8192, 2, true, false, 0.0f, 2.5e-2);
  /* the same statistics and normalisation read in 16-byte vectors (slices a multiple of the vector) */
  fr_emu_gn_case<float, true>("gn f32 vec, 16 slices, offset", 1, 4, 16384, 1, true, false, 10.0f, 1e-4);
  fr_emu_gn_case<__half, true>("gn f16 vec, 3 slices, uneven last", 2, 6, 4104, 2, true, true, 0.5f, 3e-3);
  fr_emu_gn_case<__nv_bfloat16, true>("gn bf16 vec, 8 slices", 1, 8, 8192, 2, true, false, 0.0f, 2.5e-2);
  /* LayerNorm: rows not a multiple of the block's 8, rows longer than a warp's vectors (320 = 40 vectors of
   * 8), the scalar form for an odd width, a large mean */
  fr_emu_ln_case<float, true>("ln f32 vec", 11, 320, true, 0.0f, 1e-5);
  fr_emu_ln_case<float, false>("ln f32 odd width, offset", 3, 77, false, 10.0f, 1e-5);
  fr_emu_ln_case<__half, true>("ln f16 vec", 9, 320, true, 0.5f, 3e-3);
  fr_emu_ln_case<__nv_bfloat16, true>("ln bf16 vec", 5, 640, false, 0.0f, 2.5e-2);
  /* transpose: partial tiles on both edges, a batch, and exactly one tile */
  fr_emu_transpose_case<__half>("transpose f16", 2, 45, 70);
  fr_emu_transpose_case<float>("transpose f32", 1, 32, 32);
  fr_emu_transpose_case<__nv_bfloat16>("transpose bf16", 3, 7, 33);
  const int64_t nchw[4] = {2, 320, 64, 64}, tok[4] = {2, 64, 64, 320}, mat[2] = {77, 768};
  const int64_t odd[4] = {2, 3, 4, 5};
  fr_emu_as_transpose_case(4, nchw, (const int[]){0, 2, 3, 1}, true, 2, 320, 4096); /* NCHW -> NHWC */
  fr_emu_as_transpose_case(4, tok, (const int[]){0, 3, 1, 2}, true, 2, 4096, 320);  /* NHWC -> NCHW */
  fr_emu_as_transpose_case(2, mat, (const int[]){1, 0}, true, 1, 77, 768);
  fr_emu_as_transpose_case(4, odd, (const int[]){0, 2, 1, 3}, false, 0, 0, 0); /* middle swap: generic */
  fr_emu_as_transpose_case(4, odd, (const int[]){1, 0, 2, 3}, false, 0, 0, 0); /* inner dims stay: generic */
  fr_emu_as_transpose_case(4, odd, (const int[]){2, 3, 0, 1}, true, 1, 6, 20); /* [2*3, 4*5] -> [4*5, 2*3] */
  fr_emu_as_transpose_case(4, odd, (const int[]){0, 1, 2, 3}, false, 0, 0, 0); /* identity: not a transpose */
  /* conv2d's im2col (exact copies): a chunk of output rows, stride 2, a 5x5 kernel */
  fr_emu_im2col_case("im2col 3x3 chunk", 2, 3, 9, 11, 3, 1, 1, 3, 4);
  fr_emu_im2col_case("im2col 3x3 s2", 1, 4, 9, 8, 3, 2, 1, 0, 5);
  fr_emu_im2col_case("im2col 5x5 pad 2", 1, 2, 6, 7, 5, 1, 2, 0, 6);
  fr_emu_bias_fill_case();
  /* the few-outputs conv (conv_out): 3 channels as the VAE's, 4 with stride 2, 1 with a 5x5 kernel */
  fr_emu_small_o_case<__half, 3>("conv few outputs f16", 2, 16, 12, 10, 3, 1, 1, true);
  fr_emu_small_o_case<float, 4>("conv few outputs f32 s2", 1, 8, 9, 11, 3, 2, 1, false);
  fr_emu_small_o_case<__nv_bfloat16, 1>("conv few outputs bf16 5x5", 1, 4, 7, 6, 5, 1, 2, true);
  /* the tensor-core 3x3 conv: each tile width (8, 16, 32, 64), partial tiles in rows and columns, the
   * 264-pixel halo of the 64-wide tiles (two halo pixels for some threads), 1 to 3 channel steps (both
   * stages of the double buffer), two output-channel tiles, a batch */
  fr_emu_conv_tc_case<__half>("conv tc f16, 16-wide tiles", 2, 32, 64, 5, 9, true);
  fr_emu_conv_tc_case<__half>("conv tc f16, 64-wide tiles", 1, 16, 128, 3, 64, false);
  fr_emu_conv_tc_case<__half>("conv tc f16, 32-wide tiles", 1, 16, 64, 5, 70, true);
  fr_emu_conv_tc_case<__half>("conv tc f16, 8-wide tiles", 1, 16, 64, 17, 8, true);
  fr_emu_conv_tc_case<__nv_bfloat16>("conv tc bf16, 3 steps", 1, 48, 64, 4, 64, true);
  /* residual add [2, 6, 35] + same; time-embedding add [2*6, 35] + [2*6, 1]; a 3-dim pattern */
  fr__bc same = {1, {420}, {1}, {1}}, emb = {2, {12, 35}, {35, 1}, {1, 0}},
         three = {3, {2, 3, 5}, {15, 5, 1}, {0, 5, 1}};
  fr_emu_binary_case<int>("same shape", same, 420, 420);
  fr_emu_binary_case<int>("[12, 35] + [12, 1]", emb, 420, 12);
  fr_emu_binary_case<int64_t>("[12, 35] + [12, 1]", emb, 420, 12);
  fr_emu_binary_case<int>("[2, 3, 5] + [1, 3, 5]", three, 30, 15);
  if (fr_emu_want("binary same-shape kernel")) { /* the contiguous same-shape kernel (the residual adds) */
    std::vector<float> a(300), b(300), y(300, NAN);
    for (int i = 0; i < 300; i++)
      a[i] = (float)i, b[i] = (float)(7 * i % 13);
    fr_emu_launch(fr_dim3{2, 1, 1}, 64, [&] {
      fr__binary_same_kernel<float, false>(y.data(), a.data(), b.data(), 300, FR_BINARY_SUB);
    });
    int bad = 0;
    for (int i = 0; i < 300; i++)
      bad += y[i] != a[i] - b[i];
    printf("%s binary same-shape kernel, 300 elements: %d wrong\n", bad ? "FAIL" : "ok  ", bad);
    bad ? fr_emu_failed++ : fr_emu_passed++;
  }
  fr_emu_vec_cases<float>("f32");
  fr_emu_vec_cases<__half>("f16");
  fr_emu_vec_cases<__nv_bfloat16>("bf16");
  printf("%d passed, %d failed\n", fr_emu_passed, fr_emu_failed);
  if (fr_emu_passed + fr_emu_failed == 0) {
    printf("FAIL no case matches '%s'\n", fr_emu_only);
    return 1;
  }
  return fr_emu_failed ? 1 : 0;
}
