/* A 3x3, stride 1, pad 1 convolution in AVX-512 register tiles, without im2col, for the wide layers where
 * im2col + sgemm is bound by memory traffic rather than arithmetic: the VAE decoder's 128- and 256-channel
 * convs at 512x512. As im2col + sgemm every input value is written nine times into the columns, packed
 * again by OpenBLAS and then used by only O = 128 output channels; OpenBLAS ran those GEMMs at 230-290
 * GFLOP/s on the development machine against 400 for its floor. Here, per output row and 32-pixel strip,
 * the input window [C, 3 rows, 34 pixels] is copied once into a small buffer (zero padded at the image's
 * edges: no masks in the inner loop) and every block of 8 output channels runs over it with 16 fp32
 * accumulators (8 channels x 2 vectors of 16 pixels): per (c, ki, kj) two vector loads, eight weight
 * broadcasts and sixteen FMAs. The sum for one output runs over c, then ki, then kj, in fp32.
 *
 * Weights are packed per call as [O / 8, C, 9, 8] (fr_cpu_conv512_pack_w). Used by gemm.c when the vector
 * path is AVX-512 and the shape fits (fr_cpu_conv512_fits). */
#include "kernels/cpu/cpu.h"

#include <string.h>

#define FR__CTW 32 /* output pixels per strip: two vectors */

bool fr_cpu_conv512_fits(int64_t C, int64_t O, int64_t kh, int64_t kw, int stride, int pad, int64_t H,
                         int64_t W) {
  return kh == 3 && kw == 3 && stride == 1 && pad == 1 && O % 8 == 0 && W % FR__CTW == 0 && C > 0 && H > 0;
}

size_t fr_cpu_conv512_window(int64_t C) {
  return (size_t)(C * 3 * (FR__CTW + 2)) + 16;
}

void fr_cpu_conv512_pack_w(float *wp, const float *w, int64_t O, int64_t C) {
  for (int64_t o = 0; o < O; o++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t k = 0; k < 9; k++)
        wp[(((o / 8) * C + c) * 9 + k) * 8 + o % 8] = w[(o * C + c) * 9 + k];
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

/* Output row oh of one image: y [O, H, W] (+ bias), x [C, H, W], wp packed, win: fr_cpu_conv512_window(C)
 * floats of scratch. */
__attribute__((target("avx512f"))) void fr_cpu_conv512_row(float *y, const float *x, const float *wp,
                                                           const float *bias, int64_t C, int64_t O, int64_t H,
                                                           int64_t W, int64_t oh, float *win) {
  const int64_t ww = FR__CTW + 2;
  for (int64_t w0 = 0; w0 < W; w0 += FR__CTW) {
    for (int64_t c = 0; c < C; c++) /* the window [C, 3, 34]: input columns w0 - 1 .. w0 + 32 */
      for (int64_t ki = 0; ki < 3; ki++) {
        float *d = win + (c * 3 + ki) * ww;
        int64_t ih = oh + ki - 1;
        if (ih < 0 || ih >= H) {
          memset(d, 0, (size_t)ww * sizeof(float));
          continue;
        }
        const float *row = x + (c * H + ih) * W;
        d[0] = w0 > 0 ? row[w0 - 1] : 0.0f;
        memcpy(d + 1, row + w0, FR__CTW * sizeof(float));
        d[ww - 1] = w0 + FR__CTW < W ? row[w0 + FR__CTW] : 0.0f;
      }
    for (int64_t ob = 0; ob < O / 8; ob++) {
      __m512 a0[8], a1[8];
#pragma GCC unroll 8
      for (int r = 0; r < 8; r++) {
        a0[r] = _mm512_set1_ps(bias ? bias[ob * 8 + r] : 0.0f);
        a1[r] = a0[r];
      }
      const float *wc = wp + ob * C * 9 * 8, *pc = win;
      for (int64_t c = 0; c < C; c++)
        for (int ki = 0; ki < 3; ki++, pc += ww)
          for (int kj = 0; kj < 3; kj++, wc += 8) {
            __m512 v0 = _mm512_loadu_ps(pc + kj), v1 = _mm512_loadu_ps(pc + kj + 16);
#pragma GCC unroll 8
            for (int r = 0; r < 8; r++) {
              __m512 b = _mm512_set1_ps(wc[r]);
              a0[r] = _mm512_fmadd_ps(b, v0, a0[r]);
              a1[r] = _mm512_fmadd_ps(b, v1, a1[r]);
            }
          }
#pragma GCC unroll 8
      for (int r = 0; r < 8; r++) {
        float *yr = y + ((ob * 8 + r) * H + oh) * W + w0;
        _mm512_storeu_ps(yr, a0[r]);
        _mm512_storeu_ps(yr + 16, a1[r]);
      }
    }
  }
}
#else
void fr_cpu_conv512_row(float *y, const float *x, const float *wp, const float *bias, int64_t C, int64_t O,
                        int64_t H, int64_t W, int64_t oh, float *win) {}
#endif
