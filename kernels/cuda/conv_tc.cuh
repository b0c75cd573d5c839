/* 3x3 convolution (stride 1, padding 1) on tensor cores for F16/BF16 contexts, without im2col: the
 * columns are never written to memory. Nearly every 3x3 conv of the SD UNets and VAE has this form; the
 * others (strided downsampling, the 4-channel conv_in, F32 contexts) go through conv2d.cu's im2col +
 * cuBLASLt, the 3- or 4-channel conv_out through its few-outputs kernel. By default this kernel only takes
 * the convs it should win (fr_cuda_conv_tc_fits in conv_tc.cu says which and why).
 *
 * As a GEMM per image: y[O, P] = w[O, 9C] cols[9C, P], with the reduction split by tap: for each of the 9
 * taps (ki, kj), the [O, C] slice of w times the input shifted by (ki - 1, kj - 1). A block owns 64 output
 * channels and a tile of 128 output pixels (TH rows x TW columns, TW = 8, 16, 32 or 64 and TH = 128 / TW,
 * chosen by the launch for the image width). It walks the input channels 16 at a time; per step, shared
 * memory holds
 *   ws [9][64][CS]          the weights of the 16 channels for every tap, tap-major (row: 16 channels)
 *   xs [(TH+2)(TW+2)][CS]   the input tile with its one-pixel halo, one row of 16 channels per pixel
 * (CS = 24 elements: 48-byte rows put the 8 row addresses of an ldmatrix in distinct banks). The halo
 * tile is loaded once and serves all 9 taps: tap (ki, kj) only moves the row address of each pixel by
 * ki (TW + 2) + kj. Out-of-image halo pixels are zeros, which is the padding.
 *
 * 8 warps: warp (wo, wn) = (warp / 4, warp % 4) computes output channels 32 wo .. + 31 and tile pixels
 * 32 wn .. + 31, as 2 x 4 mma.m16n8k16 tiles (A = weights, row-major [o][c]; B = pixels, [c][p] held as
 * rows of c per pixel, which is what ldmatrix's plain layout gives), fp32 accumulators in registers.
 * Steps are double-buffered through registers: the global loads of step s + 1 are issued before the
 * products of step s and written to the other stage after them, one barrier a step. The global layouts
 * are the op's own: x [B, C, H, W], w [O, C, 3, 3] (a row of 16 channels x 9 taps is 144 contiguous
 * elements, loaded as 8-byte vectors, 36 elements a thread, and stored tap-major into ws), y [B, O, H, W].
 *
 * Requirements (fr_cuda_conv_tc_fits): C a multiple of 16, O a multiple of 64, w 16-byte aligned, sm_80+.
 * Grid: (pixel tiles of an image, O / 64, B). Accumulation is fp32 over all 9C terms; the bias is added in
 * fp32 and the sum rounded once to the storage dtype. */
#ifndef FR_KERNELS_CUDA_CONV_TC_CUH
#define FR_KERNELS_CUDA_CONV_TC_CUH

#include <stdint.h>

#include "kernels/cuda/device.cuh"
#include "kernels/cuda/mma.cuh"

#define FR__CV_THREADS 256
#define FR__CV_BO 64    /* output channels per block */
#define FR__CV_BP 128   /* output pixels per block */
#define FR__CV_BC 16    /* input channels per step */
#define FR__CV_CS 24    /* shared row stride (elements) of 16 channels */
#define FR__CV_HALO 264 /* most halo pixels of a tile: (2 + 2) x (64 + 2) */
#define FR__CV_WS (9 * FR__CV_BO * FR__CV_CS)
#define FR__CV_XS (FR__CV_HALO * FR__CV_CS)
#define FR__CV_SMEM(es) ((size_t)2 * (FR__CV_WS + FR__CV_XS) * (es)) /* two stages, bytes */

/* Tile width for an image W wide (host code: the launch, and the emulator test): the smallest of 8,
 * 16, 32 that holds a row, else 64 or 32, whichever leaves fewer idle columns in the last tile (64 on a
 * tie). */
static inline int fr__cv_tile_w(int64_t W) {
  if (W <= 32)
    return W <= 8 ? 8 : W <= 16 ? 16 : 32;
  return (W + 31) / 32 * 32 < (W + 63) / 64 * 64 ? 32 : 64;
}

/* One step's global data in flight, in registers. Weights: thread (part, o) = (tid / 64, tid % 64) holds
 * elements 36 part .. + 35 of row o's 144 = (channel 4 part + i / 9, tap i % 9) for i < 36, as 9 8-byte
 * loads. Input: the 16 channels of halo pixels tid and tid + 256 (packed in pairs). */
struct fr__cv_stage {
  uint2 w[9];
  uint32_t x[2][8];
};

template <typename T> static __device__ __forceinline__ uint32_t fr__cv_bits(const T *p) {
  return *reinterpret_cast<const uint16_t *>(p);
}

/* wr: this thread's 36 weights of the step; xc: channel plane 0 of the step at this image; xoff: offsets
 * of this thread's halo pixels in a plane (-1: padding, or past the tile) */
template <typename T>
static __device__ __forceinline__ void fr__cv_load(fr__cv_stage &r, const T *wr, const T *xc, int HW,
                                                   const int *xoff) {
  const uint2 *wv = reinterpret_cast<const uint2 *>(wr); /* 8-byte aligned: 72 part bytes into a row */
#pragma unroll
  for (int j = 0; j < 9; j++)
    r.w[j] = wv[j];
#pragma unroll
  for (int h = 0; h < 2; h++) {
    const T *px = xc + (xoff[h] < 0 ? 0 : xoff[h]);
#pragma unroll
    for (int c = 0; c < FR__CV_BC; c += 2) {
      uint32_t lo = 0, hi = 0;
      if (xoff[h] >= 0) {
        lo = fr__cv_bits(px + c * HW);
        hi = fr__cv_bits(px + (c + 1) * HW);
      }
      r.x[h][c / 2] = lo | (hi << 16);
    }
  }
}

/* element i of this thread's 36 weights */
static __device__ __forceinline__ uint32_t fr__cv_w(const fr__cv_stage &r, int i) {
  const uint32_t q = (i & 2) ? r.w[i >> 2].y : r.w[i >> 2].x;
  return (i & 1) ? q >> 16 : q & 0xffffu;
}

/* ws: this thread's row (tap 0, row o, channel 4 part) of the stage's weights; xs: the stage's halo */
static __device__ __forceinline__ void fr__cv_store(const fr__cv_stage &r, uint16_t *ws, uint16_t *xs,
                                                    int halo) {
#pragma unroll
  for (int tap = 0; tap < 9; tap++) /* channels 4 part .. + 3 of one tap: 8 bytes */
    *reinterpret_cast<uint2 *>(ws + tap * FR__CV_BO * FR__CV_CS) = make_uint2(
        fr__cv_w(r, tap) | fr__cv_w(r, 9 + tap) << 16, fr__cv_w(r, 18 + tap) | fr__cv_w(r, 27 + tap) << 16);
#pragma unroll
  for (int h = 0; h < 2; h++) {
    const int p = threadIdx.x + FR__CV_THREADS * h;
    if (p < halo) {
      uint4 *d = reinterpret_cast<uint4 *>(xs + p * FR__CV_CS); /* 48-byte rows: 16-byte aligned */
      d[0] = make_uint4(r.x[h][0], r.x[h][1], r.x[h][2], r.x[h][3]);
      d[1] = make_uint4(r.x[h][4], r.x[h][5], r.x[h][6], r.x[h][7]);
    }
  }
}

template <typename T>
static __global__ void __launch_bounds__(FR__CV_THREADS, 2)
    fr__conv_tc_kernel(T *y, const T *x, const T *w, const T *bias, int C, int H, int W, int O, int TW,
                       int tiles_w) {
#ifndef FR_CUDA_EMULATE /* the emulator's block memory is its own global fr__tc_sh */
  extern __shared__ __align__(16) unsigned char fr__tc_sh[];
#endif
  uint16_t *wsm = reinterpret_cast<uint16_t *>(fr__tc_sh); /* [2][9][64][CS] */
  uint16_t *xsm = wsm + 2 * FR__CV_WS;                     /* [2][HALO][CS] */

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int wo = warp >> 2, wn = warp & 3;
  const int TH = FR__CV_BP / TW, HW2 = TW + 2, halo = (TH + 2) * HW2;
  const int oh0 = (int)(blockIdx.x / tiles_w) * TH, ow0 = (int)(blockIdx.x % tiles_w) * TW;
  const int o0 = blockIdx.y * FR__CV_BO;
  const int64_t b = blockIdx.z, HW = (int64_t)H * W;

  /* this thread's halo pixels: their offsets in a channel plane, -1 outside the image or the tile */
  int xoff[2];
#pragma unroll
  for (int h = 0; h < 2; h++) {
    const int p = threadIdx.x + FR__CV_THREADS * h;
    const int ih = oh0 - 1 + p / HW2, iw = ow0 - 1 + p % HW2;
    xoff[h] = p < halo && ih >= 0 && ih < H && iw >= 0 && iw < W ? ih * W + iw : -1;
  }
  /* ldmatrix rows of this lane: A, row lane % 16 of an m-tile at channel 8 (lane / 16); B, the pixel of
   * n-tile 2 pair + (lane / 16), row lane % 8, at channel 8 ((lane / 8) % 2), as a halo index at tap 0 */
  const int arow = (wo * 32 + (lane & 15)) * FR__CV_CS + (lane >> 4) * 8;
  int bpix[2];
#pragma unroll
  for (int pr = 0; pr < 2; pr++) {
    const int p = wn * 32 + (2 * pr + (lane >> 4)) * 8 + (lane & 7);
    bpix[pr] = (p / TW) * HW2 + p % TW;
  }
  const int bk = ((lane >> 3) & 1) * 8;

  float acc[2][4][4];
#pragma unroll
  for (int m = 0; m < 2; m++)
#pragma unroll
    for (int n = 0; n < 4; n++)
      acc[m][n][0] = acc[m][n][1] = acc[m][n][2] = acc[m][n][3] = 0.0f;

  /* this thread's share of the weights: row o0 + tid % 64, elements 36 (tid / 64) .. of each step's 144 */
  const int wo_row = threadIdx.x & 63, wpart = threadIdx.x >> 6;
  const T *wr = w + (int64_t)(o0 + wo_row) * C * 9 + wpart * 36;
  const int wdst = wo_row * FR__CV_CS + 4 * wpart;
  const T *xb = x + b * C * HW;
  const int steps = C / FR__CV_BC, hw = (int)HW;
  fr__cv_stage r;
  fr__cv_load<T>(r, wr, xb, hw, xoff);
  fr__cv_store(r, wsm + wdst, xsm, halo);
  __syncthreads();

  for (int s = 0; s < steps; s++) {
    const int st = s & 1;
    if (s + 1 < steps)
      fr__cv_load<T>(r, wr + (s + 1) * FR__CV_BC * 9, xb + (int64_t)(s + 1) * FR__CV_BC * HW, hw, xoff);
    const uint16_t *ws = wsm + st * FR__CV_WS, *xs = xsm + st * FR__CV_XS;
#pragma unroll
    for (int tap = 0; tap < 9; tap++) {
      const int shift = (tap / 3) * HW2 + tap % 3;
      uint32_t a[2][4], bf[2][4];
#pragma unroll
      for (int m = 0; m < 2; m++)
        fr__ldsm_x4(a[m], fr__smem_addr(ws + tap * FR__CV_BO * FR__CV_CS + arow + m * 16 * FR__CV_CS));
#pragma unroll
      for (int pr = 0; pr < 2; pr++)
        fr__ldsm_x4(bf[pr], fr__smem_addr(xs + (bpix[pr] + shift) * FR__CV_CS + bk));
#pragma unroll
      for (int m = 0; m < 2; m++)
#pragma unroll
        for (int n = 0; n < 4; n++) /* n-tile n: matrices 2 (n % 2), +1 of pair n / 2 */
          fr__mma<T>::run(acc[m][n], a[m], bf[n >> 1][2 * (n & 1)], bf[n >> 1][2 * (n & 1) + 1]);
    }
    if (s + 1 < steps)
      fr__cv_store(r, wsm + (st ^ 1) * FR__CV_WS + wdst, xsm + (st ^ 1) * FR__CV_XS, halo);
    __syncthreads();
  }

  /* y[b, o, oh, ow] = acc + bias[o], rounded once; pixels past the image are dropped */
  T *yb = y + b * O * HW;
#pragma unroll
  for (int m = 0; m < 2; m++)
#pragma unroll
    for (int i = 0; i < 4; i += 2) {
      const int o = o0 + wo * 32 + m * 16 + g + (i ? 8 : 0);
      const float bo = bias ? fr_ld(bias + o) : 0.0f;
#pragma unroll
      for (int n = 0; n < 4; n++)
#pragma unroll
        for (int j = 0; j < 2; j++) {
          const int p = wn * 32 + n * 8 + 2 * t + j;
          const int oh = oh0 + p / TW, ow = ow0 + p % TW;
          if (oh < H && ow < W)
            fr_st(yb + (int64_t)o * HW + (int64_t)oh * W + ow, acc[m][n][i + j] + bo);
        }
    }
}

#endif
