/* The op test: one table, one row per (op, shapes) case. Each row runs the op through the ops API on
 * every backend this binary has and compares with a naive double-precision reference written here
 * straight from the PyTorch definition (the reference is the spec). Rows that expect an error check the
 * op returns NULL and the context's sticky error names the op.
 *
 * Backends: "cpu" is compared with the reference; any other device that builds (e.g. "cuda") is
 * compared with the reference and with the cpu result, at that device's tolerance. A device that is
 * not built in is reported and skipped, so adding a backend needs no change here beyond its tolerance.
 *
 * The error measure is fr_test_rel_err: max |out - ref| / max |ref| over the output. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "kernels/cpu/cpu.h"
#include "kernels/ops.h"
#include "tests/test.h"

enum kind {
  K_LINEAR,
  K_MATMUL,
  K_CONV2D,
  K_ATTENTION,
  K_GROUP_NORM,
  K_LAYER_NORM,
  K_SOFTMAX,
  K_SILU,
  K_GELU,
  K_GELU_TANH,
  K_QUICK_GELU,
  K_LEAKY_RELU,
  K_GEGLU,
  K_AFFINE,
  K_COPY,
  K_ADD,
  K_SUB,
  K_MUL,
  K_ADD_INPLACE,
  K_CONCAT,
  K_SLICE,
  K_PERMUTE,
  K_PAD2D,
  K_UPSAMPLE,
  K_EMBEDDING,
  K_GATHER_ROWS,
  K_TIMESTEP,
};

struct row {
  const char *op;
  enum kind kind;
  int an;
  int64_t a[FR_MAX_DIMS]; /* main input */
  int bn;
  int64_t b[FR_MAX_DIMS]; /* second input / weight */
  int p[6];               /* op parameters (see make_inputs / run_op) */
  float f;                /* eps, pad value, affine scale, shift */
  bool flag;              /* bias / causal / silu / affine / flip / I32 ids */
  enum fr_dtype wdt;      /* dtype of the weight handed to fr_ctx_weight (F32 when 0) */
  float amp;              /* input amplitude (1 when 0) */
  double tol;             /* cpu tolerance */
  const char *why;        /* reason for the tolerance, or what the error row checks */
  enum fr_status expect;  /* FR_OK, or the error the op must record */
};

#define S(...)                                                                                               \
  { __VA_ARGS__ }
#define GEMM_TOL 2e-5
#define GEMM_WHY "fp32 sums of up to ~3000 products in sgemm's blocked order vs an exact double sum"

static const struct row ROWS[] = {
    /* ---- linear / matmul ---- */
    {"linear", K_LINEAR, 3, S(2, 77, 64), 2, S(320, 64), .flag = true, .tol = GEMM_TOL, .why = GEMM_WHY},
    {"linear nobias", K_LINEAR, 2, S(7, 33), 2, S(5, 33), .tol = GEMM_TOL, .why = GEMM_WHY},
    {"linear f16 w", K_LINEAR, 3, S(1, 16, 40), 2, S(24, 40), .flag = true, .wdt = FR_F16, .tol = GEMM_TOL,
     .why = "F16 weight converted to F32 on load (reference uses the same F16-rounded values)"},
    {"linear bf16 w", K_LINEAR, 2, S(9, 32), 2, S(17, 32), .flag = true, .wdt = FR_BF16, .tol = GEMM_TOL,
     .why = "BF16 weight converted to F32 on load (reference uses the same rounded values)"},
    {"matmul", K_MATMUL, 3, S(4, 13, 40), 3, S(4, 40, 29), .tol = GEMM_TOL, .why = GEMM_WHY},
    {"matmul 4d", K_MATMUL, 4, S(2, 3, 5, 7), 4, S(2, 3, 7, 6), .tol = GEMM_TOL, .why = GEMM_WHY},
    /* ---- conv2d ---- */
    {"conv2d 3x3", K_CONV2D, 4, S(2, 32, 17, 13), 4, S(64, 32, 3, 3), .p = {1, 1}, .flag = true,
     .tol = GEMM_TOL, .why = GEMM_WHY},
    {"conv2d 3x3 s2", K_CONV2D, 4, S(1, 32, 16, 16), 4, S(32, 32, 3, 3), .p = {2, 1}, .flag = true,
     .tol = GEMM_TOL, .why = GEMM_WHY},
    {"conv2d 3x3 s2 odd", K_CONV2D, 4, S(1, 8, 15, 9), 4, S(16, 8, 3, 3), .p = {2, 0}, .tol = GEMM_TOL,
     .why = GEMM_WHY},
    {"conv2d 3x3 s2 batch 3", K_CONV2D, 4, S(3, 8, 15, 9), 4, S(16, 8, 3, 3), .p = {2, 1}, .flag = true,
     .tol = GEMM_TOL, .why = "three images in one batched GEMM on cuda (weights shared, stride 0)"},
    {"conv2d 1x1", K_CONV2D, 4, S(2, 64, 8, 8), 4, S(32, 64, 1, 1), .p = {1, 0}, .flag = true,
     .tol = GEMM_TOL, .why = GEMM_WHY},
    {"conv2d 3x3 32->64", K_CONV2D, 4, S(2, 32, 9, 20), 4, S(64, 32, 3, 3), .p = {1, 1}, .flag = true,
     .tol = GEMM_TOL,
     .why = "on cuda F16/BF16 with FLOWRUN_CUDA_CONV=tc: the tensor-core conv, 32-wide tiles"},
    {"conv2d 3x3 16->128", K_CONV2D, 4, S(1, 16, 5, 64), 4, S(128, 16, 3, 3), .p = {1, 1}, .tol = GEMM_TOL,
     .why = "tensor-core conv (FLOWRUN_CUDA_CONV=tc): 64-wide tiles, 2 channel tiles, no bias"},
    {"conv2d 32->3 out", K_CONV2D, 4, S(2, 32, 12, 10), 4, S(3, 32, 3, 3), .p = {1, 1}, .flag = true,
     .tol = GEMM_TOL, .why = "a conv_out: on cuda the few-outputs kernel (fp32 sums on CUDA cores)"},
    {"conv2d 8->4 s2", K_CONV2D, 4, S(1, 8, 9, 11), 4, S(4, 8, 3, 3), .p = {2, 1}, .tol = GEMM_TOL,
     .why = "few-outputs kernel, stride 2, no bias"},
    {"conv2d 4->32 in", K_CONV2D, 4, S(1, 4, 32, 32), 4, S(32, 4, 3, 3), .p = {1, 1}, .flag = true,
     .tol = GEMM_TOL, .why = GEMM_WHY},
    {"conv2d 5x5 pad2", K_CONV2D, 4, S(1, 3, 11, 12), 4, S(6, 3, 5, 5), .p = {1, 2}, .flag = true,
     .wdt = FR_F16, .tol = GEMM_TOL, .why = GEMM_WHY},
    {"conv2d batch 2 no bias", K_CONV2D, 4, S(2, 8, 6, 5), 4, S(16, 8, 3, 3), .p = {1, 1}, .tol = GEMM_TOL,
     .why = "the CPU's merged-batch path (small outputs, both images in one sgemm) without a bias"},
    /* the CPU's direct path for fewer than 8 output channels at stride 1 (kernels/cpu/gemm.c) */
    {"conv2d 16->2 no bias", K_CONV2D, 4, S(2, 16, 7, 9), 4, S(2, 16, 3, 3), .p = {1, 1}, .tol = GEMM_TOL,
     .why = "few outputs, no bias: the CPU's direct conv zeroes its rows first"},
    {"conv2d 5->7 pad 0", K_CONV2D, 4, S(1, 5, 6, 8), 4, S(7, 5, 3, 3), .p = {1, 0}, .flag = true,
     .tol = GEMM_TOL, .why = "few outputs, no padding: every kernel column has its own valid range"},
    {"conv2d 6->3 1x1", K_CONV2D, 4, S(2, 6, 5, 4), 4, S(3, 6, 1, 1), .p = {1, 0}, .tol = GEMM_TOL,
     .why = "few outputs, 1x1"},
    /* the CPU's AVX-512 direct 3x3 conv (kernels/cpu/conv512.c): 64x64 and up, W a multiple of 32 */
    {"conv2d 3x3 64x64 direct", K_CONV2D, 4, S(1, 16, 64, 64), 4, S(16, 16, 3, 3), .p = {1, 1}, .flag = true,
     .wdt = FR_F16, .tol = GEMM_TOL,
     .why = "AVX-512 register tiles over a packed input window (F16 weights)"},
    {"conv2d 3x3 48x96 direct", K_CONV2D, 4, S(2, 8, 48, 96), 4, S(24, 8, 3, 3), .p = {1, 1}, .tol = GEMM_TOL,
     .why = "two images, three 32-pixel strips per row, no bias"},
    /* the CPU's AVX-512 product with the weight converted block by block (kernels/cpu/gemm512.c): images side
     * by side up to 512 columns, else chunks of output rows; 6-channel tiles, k blocks of 512 at 128 columns
     */
    {"conv2d g512 merged f16", K_CONV2D, 4, S(2, 80, 8, 8), 4, S(20, 80, 3, 3), .p = {1, 1}, .flag = true,
     .wdt = FR_F16, .tol = GEMM_TOL,
     .why = "two 8x8 images side by side; K = 720 in two k blocks (512 + 208); channel tiles 6, 6, 6, 2"},
    {"conv2d g512 bf16 no bias", K_CONV2D, 4, S(1, 40, 16, 16), 4, S(13, 40, 3, 3), .p = {1, 1},
     .wdt = FR_BF16, .tol = GEMM_TOL, .why = "one 16x16 image, BF16 weight, no bias; tiles 6, 6, 1"},
    {"conv2d 2 images of 32", K_CONV2D, 4, S(2, 8, 4, 8), 4, S(16, 8, 3, 3), .p = {1, 1}, .flag = true,
     .tol = GEMM_TOL,
     .why = "64 columns but 32 per image: a 64-column tile would straddle them (not gemm512.c)"},
    {"conv2d 0 channels", K_CONV2D, 4, S(2, 0, 8, 8), 4, S(16, 0, 3, 3), .p = {1, 1}, .flag = true, .tol = 0,
     .why = "no input channel: the bias alone, exactly (64-pixel images that gemm512.c would take)"},
    {"conv2d g512 chunks", K_CONV2D, 4, S(1, 8, 32, 64), 4, S(16, 8, 3, 3), .p = {1, 1}, .flag = true,
     .tol = GEMM_TOL, .why = "2048 columns in 4 chunks of 8 output rows, fp32 weight"},
    {"conv2d g512 chunks s2", K_CONV2D, 4, S(2, 8, 64, 64), 4, S(8, 8, 3, 3), .p = {2, 1}, .wdt = FR_F16,
     .tol = GEMM_TOL, .why = "stride 2 to 32x32: two images, each in 2 chunks of 16 output rows"},
    /* its linear (many rows, 64-feature panels): chunks of rows, 6-row tiles with tails */
    {"linear l512 f16", K_LINEAR, 3, S(1, 1030, 100), 2, S(128, 100), .flag = true, .wdt = FR_F16,
     .tol = GEMM_TOL, .why = "1030 rows in chunks of 654 (the last ends in a 4-row tile), 2 panels"},
    {"linear l512 nobias", K_LINEAR, 3, S(2, 600, 70), 2, S(64, 70), .tol = GEMM_TOL,
     .why = "fp32 weight, no bias, one panel"},
    /* ---- attention: 8 heads, SD head dims, short sequences ---- */
    {"attention d40 self", K_ATTENTION, 3, S(2, 64, 320), 3, S(2, 64, 320), .p = {8}, .tol = GEMM_TOL,
     .why = "fp32 QK^T and PV sums; softmax in fp32 with the row max subtracted"},
    {"attention d64 cross", K_ATTENTION, 3, S(1, 33, 512), 3, S(1, 77, 512), .p = {8}, .amp = 2,
     .tol = GEMM_TOL, .why = "fp32 QK^T and PV sums; softmax in fp32 with the row max subtracted"},
    {"attention d80", K_ATTENTION, 3, S(1, 20, 640), 3, S(1, 77, 640), .p = {8}, .tol = GEMM_TOL,
     .why = "fp32 QK^T and PV sums; softmax in fp32 with the row max subtracted"},
    {"attention d160", K_ATTENTION, 3, S(1, 16, 1280), 3, S(1, 16, 1280), .p = {8}, .tol = GEMM_TOL,
     .why = "fp32 QK^T and PV sums; softmax in fp32 with the row max subtracted"},
    {"attention causal", K_ATTENTION, 3, S(2, 77, 96), 3, S(2, 77, 96), .p = {12}, .flag = true,
     .tol = GEMM_TOL, .why = "CLIP's causal mask; fp32 sums"},
    {"attention 1 head", K_ATTENTION, 3, S(1, 50, 64), 3, S(1, 50, 64), .p = {1}, .amp = 3, .tol = GEMM_TOL,
     .why = "VAE mid-block attention (1 head); large logits test the max subtraction"},
    {"attention d40 tails", K_ATTENTION, 3, S(1, 70, 320), 3, S(1, 100, 320), .p = {8}, .tol = GEMM_TOL,
     .why = "64-query and 64-key tiles of the cuda tensor-core kernel with partial last tiles"},
    {"attention d512", K_ATTENTION, 3, S(1, 96, 512), 3, S(1, 96, 512), .p = {1}, .tol = GEMM_TOL,
     .why = "the VAE's one 512-wide head: 4 output chunks on cuda"},
    {"attention d7", K_ATTENTION, 3, S(2, 65, 56), 3, S(2, 131, 56), .p = {8}, .tol = GEMM_TOL,
     .why =
         "a head size neither 4 nor 5 divides: single-row tiles; 65 queries, 131 keys (CPU blocks 64, 128)"},
    {"attention causal 130", K_ATTENTION, 3, S(1, 130, 64), 3, S(1, 130, 64), .p = {1}, .flag = true,
     .amp = 3, .tol = GEMM_TOL, .why = "causal over 3 key tiles; later tiles masked for early queries"},
    /* CPU flash attention: 64-query and 512-key blocks (kernels/cpu/gemm.c); these cross both edges */
    {"attention d40 2 key blocks + tail", K_ATTENTION, 3, S(1, 70, 320), 3, S(1, 1100, 320), .p = {8},
     .amp = 2, .tol = GEMM_TOL,
     .why = "online softmax over 3 key blocks (512, 512, 76) and a 6-query tail block; the rescaling by "
            "exp(m_old - m_new) is exact up to fp32 rounding"},
    {"attention Tq 1", K_ATTENTION, 3, S(2, 1, 512), 3, S(2, 600, 512), .p = {8}, .tol = GEMM_TOL,
     .why = "one query (a 1-row block) over 2 key blocks; fp32 sums"},
    {"attention d80 513 keys", K_ATTENTION, 3, S(1, 65, 160), 3, S(1, 513, 160), .p = {2}, .amp = 3,
     .tol = GEMM_TOL, .why = "a 1-key last block and a 1-query last block; large logits move the max"},
    {"attention d160 1030 keys", K_ATTENTION, 3, S(1, 3, 320), 3, S(1, 1030, 320), .p = {2}, .tol = GEMM_TOL,
     .why = "SDXL's head size over 3 key blocks; fp32 sums"},
    {"attention causal 600", K_ATTENTION, 3, S(1, 600, 64), 3, S(1, 600, 64), .p = {1}, .flag = true,
     .amp = 3, .tol = GEMM_TOL,
     .why = "causal over 2 key blocks: the second is skipped for query blocks before it and partly "
            "visible in the block that crosses key 512"},
    /* ---- normalisation ---- */
    {"group_norm 32", K_GROUP_NORM, 4, S(2, 64, 9, 7), .p = {32}, .f = 1e-5f, .tol = 1e-5,
     .why = "fp32 output of double statistics; inputs offset by 3 to test mean removal"},
    {"group_norm silu", K_GROUP_NORM, 4, S(1, 32, 16, 16), .p = {32}, .f = 1e-6f, .flag = true, .tol = 1e-5,
     .why = "fused SiLU in fp32 (expf)"},
    {"group_norm 3d", K_GROUP_NORM, 3, S(2, 64, 5), .p = {8}, .f = 1e-5f, .tol = 1e-5,
     .why = "fp32 output of double statistics"},
    {"layer_norm affine", K_LAYER_NORM, 3, S(2, 77, 320), .f = 1e-5f, .flag = true, .tol = 1e-5,
     .why = "fp32 output of double statistics"},
    {"layer_norm plain", K_LAYER_NORM, 2, S(5, 33), .f = 1e-6f, .tol = 1e-5, .why = "no gamma/beta"},
    {"softmax", K_SOFTMAX, 3, S(3, 7, 77), .amp = 30, .tol = 1e-5,
     .why = "logits up to 30: fp32 expf after max"},
    /* ---- activations ---- */
    {"silu", K_SILU, 4, S(2, 32, 7, 9), .amp = 6, .tol = 1e-6, .why = "fp32 expf rounding"},
    {"gelu", K_GELU, 3, S(2, 77, 64), .amp = 4, .tol = 1e-6, .why = "fp32 erff rounding"},
    {"gelu_tanh", K_GELU_TANH, 2, S(33, 65), .amp = 4, .tol = 1e-6, .why = "fp32 tanhf rounding"},
    {"quick_gelu", K_QUICK_GELU, 2, S(77, 48), .amp = 4, .tol = 1e-6, .why = "fp32 expf rounding"},
    {"leaky_relu 0.2", K_LEAKY_RELU, 4, S(1, 16, 9, 7), .amp = 3, .f = 0.2f, .tol = 1e-7,
     .why = "one fp32 multiply on the negative side (ESRGAN's slope)"},
    {"leaky_relu 0 (relu)", K_LEAKY_RELU, 2, S(33, 65), .amp = 3, .f = 0.0f, .tol = 0, .why = "exact"},
    {"geglu", K_GEGLU, 3, S(1, 64, 2 * 80), .amp = 3, .tol = 1e-6, .why = "fp32 erff rounding"},
    {"affine", K_AFFINE, 4, S(1, 4, 8, 8), .f = 0.18215f, .tol = 1e-6, .why = "one fp32 multiply-add"},
    {"copy", K_COPY, 3, S(2, 3, 5), .tol = 0, .why = "exact"},
    /* ---- broadcasting arithmetic ---- */
    {"add same", K_ADD, 4, S(2, 32, 8, 8), 4, S(2, 32, 8, 8), .tol = 1e-7, .why = "one fp32 rounding"},
    {"add chan bias", K_ADD, 4, S(2, 32, 8, 8), 4, S(2, 32, 1, 1), .tol = 1e-7,
     .why = "time embedding [B, C, 1, 1] onto [B, C, H, W]"},
    {"add row", K_ADD, 3, S(2, 77, 64), 1, S(64), .tol = 1e-7, .why = "[D] onto [B, T, D]"},
    {"sub both ways", K_SUB, 3, S(4, 1, 5), 3, S(1, 3, 1), .tol = 1e-7, .why = "both operands broadcast"},
    {"mul scalar", K_MUL, 3, S(2, 3, 4), 1, S(1), .tol = 1e-7, .why = "[1] broadcast to all"},
    {"mul lower rank", K_MUL, 4, S(2, 3, 4, 5), 2, S(4, 1), .tol = 1e-7, .why = "rank-2 b, middle dim"},
    {"add_inplace", K_ADD_INPLACE, 4, S(1, 64, 4, 4), 3, S(64, 1, 1), .tol = 1e-7,
     .why = "residual add, in place"},
    /* ---- data movement ---- */
    {"concat dim1", K_CONCAT, 4, S(2, 32, 4, 4), 4, S(2, 64, 4, 4), .p = {1}, .tol = 0, .why = "exact"},
    {"concat last", K_CONCAT, 3, S(2, 5, 3), 3, S(2, 5, 7), .p = {-1}, .tol = 0,
     .why = "exact, negative dim"},
    {"slice", K_SLICE, 3, S(2, 10, 6), .p = {1, 3, 4}, .tol = 0, .why = "exact"},
    {"slice last", K_SLICE, 3, S(2, 77, 640), .p = {2, 320, 320}, .tol = 0,
     .why = "exact (GEGLU-style half)"},
    {"permute bchw->bhwc", K_PERMUTE, 4, S(2, 32, 5, 7), .p = {0, 2, 3, 1}, .tol = 0, .why = "exact"},
    {"permute heads", K_PERMUTE, 4, S(2, 7, 8, 5), .p = {0, 2, 1, 3}, .tol = 0, .why = "exact"},
    {"pad2d", K_PAD2D, 4, S(1, 3, 5, 6), .p = {0, 1, 0, 1}, .tol = 0, .why = "exact (VAE downsample pad)"},
    {"pad2d value", K_PAD2D, 3, S(2, 4, 3), .p = {2, 1, 1, 3}, .f = -1.5f, .tol = 0, .why = "exact"},
    {"upsample2x", K_UPSAMPLE, 4, S(2, 32, 5, 3), .tol = 0, .why = "exact"},
    {"upsample2x wide", K_UPSAMPLE, 4, S(1, 16, 3, 16), .tol = 0, .why = "exact; 16-byte vectors on cuda"},
    {"embedding i64", K_EMBEDDING, 2, S(2, 77), 2, S(1000, 64), .tol = 0, .why = "exact"},
    {"embedding i32", K_EMBEDDING, 1, S(9), 2, S(50, 8), .flag = true, .tol = 0, .why = "exact"},
    {"gather_rows", K_GATHER_ROWS, 3, S(3, 77, 64), .tol = 0, .why = "exact"},
    {"timestep sd", K_TIMESTEP, 1, S(4), .p = {320}, .flag = true, .f = 0, .tol = 2e-4,
     .why = "t up to 999: fp32 t*freq rounding (as diffusers) vs double reference"},
    {"timestep odd", K_TIMESTEP, 1, S(3), .p = {33}, .flag = false, .f = 1, .tol = 2e-4,
     .why = "sin first, shift 1, odd dim zero-padded"},

    /* ---- error rows: op must return NULL and record the error naming the op ---- */
    {"conv2d bad channels", K_CONV2D, 4, S(2, 8, 16, 16), 4, S(32, 4, 3, 3), .p = {1, 1},
     .expect = FR_E_SHAPE, .why = "weight C != input C"},
    {"conv2d kernel > input", K_CONV2D, 4, S(1, 4, 2, 2), 4, S(4, 4, 5, 5), .p = {1, 0}, .expect = FR_E_SHAPE,
     .why = "no output position"},
    {"linear bad K", K_LINEAR, 2, S(4, 32), 2, S(8, 31), .expect = FR_E_SHAPE,
     .why = "w [N, K] vs x [..., K]"},
    {"matmul bad K", K_MATMUL, 3, S(2, 3, 4), 3, S(2, 5, 6), .expect = FR_E_SHAPE,
     .why = "inner dims differ"},
    {"matmul bad batch", K_MATMUL, 3, S(2, 3, 4), 3, S(3, 4, 6), .expect = FR_E_SHAPE,
     .why = "leading dims differ"},
    {"attention heads", K_ATTENTION, 3, S(1, 4, 30), 3, S(1, 4, 30), .p = {8}, .expect = FR_E_SHAPE,
     .why = "8 heads do not divide 30"},
    {"attention kv dim", K_ATTENTION, 3, S(1, 4, 32), 3, S(1, 4, 64), .p = {8}, .expect = FR_E_SHAPE,
     .why = "k/v embed dim differs from q"},
    {"group_norm groups", K_GROUP_NORM, 4, S(1, 30, 4, 4), .p = {32}, .f = 1e-5f, .expect = FR_E_SHAPE,
     .why = "32 groups do not divide 30 channels"},
    {"add no broadcast", K_ADD, 3, S(2, 3, 4), 3, S(2, 4, 4), .expect = FR_E_SHAPE, .why = "3 vs 4"},
    {"add_inplace grows", K_ADD_INPLACE, 2, S(1, 4), 2, S(3, 4), .expect = FR_E_SHAPE,
     .why = "in-place output cannot grow"},
    {"geglu odd", K_GEGLU, 2, S(3, 5), .expect = FR_E_SHAPE, .why = "last dim must be even"},
    {"concat mismatch", K_CONCAT, 3, S(2, 3, 4), 3, S(2, 4, 4), .p = {2}, .expect = FR_E_SHAPE,
     .why = "dim 1 differs"},
    {"slice past end", K_SLICE, 2, S(4, 6), .p = {1, 4, 3}, .expect = FR_E_SHAPE, .why = "4+3 > 6"},
    {"permute repeat", K_PERMUTE, 3, S(2, 3, 4), .p = {0, 1, 1}, .expect = FR_E_INVALID,
     .why = "not a permutation"},
    {"embedding id range", K_EMBEDDING, 1, S(4), 2, S(10, 8), .p = {1}, .expect = FR_E_INVALID,
     .why = "id 10 >= 10 rows"},
    {"gather_rows index range", K_GATHER_ROWS, 3, S(2, 5, 4), .p = {1}, .expect = FR_E_INVALID,
     .why = "index 5 >= T 5"},
};

/* ---- deterministic inputs ---- */

static uint64_t rng_state;
static double urand(void) { /* uniform [-1, 1) */
  rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
  return (double)(rng_state >> 11) / (double)(1ULL << 53) * 2.0 - 1.0;
}

static struct fr_tensor *rand_t(int n, const int64_t *shape, double amp, double offset) {
  struct fr_tensor *t = fr_tensor_f32(n, shape);
  float *d = t->data;
  for (int64_t i = 0; i < fr_tensor_numel(t); i++)
    d[i] = (float)(offset + amp * urand());
  return t;
}

/* Rounds an F32 host tensor through dt in place and returns a tensor of dtype dt with the same values. */
static struct fr_tensor *as_dtype(struct fr_tensor *t, enum fr_dtype dt) {
  struct fr_tensor *o = fr_tensor_new(dt, t->ndim, t->shape);
  float *d = t->data;
  for (int64_t i = 0; i < fr_tensor_numel(t); i++) {
    uint16_t h = dt == FR_F16 ? fr_f32_to_f16(d[i]) : fr_f32_to_bf16(d[i]);
    ((uint16_t *)o->data)[i] = h;
    d[i] = dt == FR_F16 ? fr_f16_to_f32(h) : fr_bf16_to_f32(h);
  }
  return o;
}

#define MAXIN 4
struct inputs {
  struct fr_tensor *t[MAXIN]; /* host F32 (ids: I64/I32) values the reference reads */
  struct fr_tensor *w_host;   /* the weight as handed to fr_ctx_weight (t[1] or its F16/BF16 form) */
  int64_t index[16];          /* gather_rows */
  int n;
};

static int64_t fan_in(const struct row *r) {
  int64_t n = 1;
  for (int i = 1; i < r->bn; i++)
    n *= r->b[i];
  return n ? n : 1;
}

static void make_inputs(const struct row *r, struct inputs *in) {
  memset(in, 0, sizeof *in);
  double amp = r->amp ? r->amp : 1.0;
  switch (r->kind) {
  case K_LINEAR:
  case K_CONV2D:
    in->t[0] = rand_t(r->an, r->a, amp, 0);
    /* weights scaled like a default init (1/sqrt(fan_in)) so outputs stay O(1) */
    in->t[1] = rand_t(r->bn, r->b, 1.0 / sqrt((double)fan_in(r)), 0);
    in->t[2] = r->flag ? rand_t(1, (int64_t[]){r->b[0]}, 0.5, 0) : NULL;
    in->n = 3;
    break;
  case K_MATMUL:
  case K_ADD:
  case K_SUB:
  case K_MUL:
  case K_ADD_INPLACE:
  case K_CONCAT:
    in->t[0] = rand_t(r->an, r->a, amp, 0);
    in->t[1] = rand_t(r->bn, r->b, amp, 0);
    in->n = 2;
    break;
  case K_ATTENTION:
    in->t[0] = rand_t(r->an, r->a, amp, 0);
    in->t[1] = rand_t(r->bn, r->b, amp, 0);
    in->t[2] = rand_t(r->bn, r->b, 1.0, 0);
    in->n = 3;
    break;
  case K_GROUP_NORM:
    in->t[0] = rand_t(r->an, r->a, amp, 3.0);
    in->t[1] = rand_t(1, &r->a[1], 0.5, 1.0);
    in->t[2] = rand_t(1, &r->a[1], 0.5, 0.0);
    in->n = 3;
    break;
  case K_LAYER_NORM:
    in->t[0] = rand_t(r->an, r->a, amp, 1.0);
    in->t[1] = r->flag ? rand_t(1, &r->a[r->an - 1], 0.5, 1.0) : NULL;
    in->t[2] = r->flag ? rand_t(1, &r->a[r->an - 1], 0.5, 0.0) : NULL;
    in->n = 3;
    break;
  case K_EMBEDDING: {
    struct fr_tensor *ids = fr_tensor_new(r->flag ? FR_I32 : FR_I64, r->an, r->a);
    for (int64_t i = 0; i < fr_tensor_numel(ids); i++) {
      int64_t id = (int64_t)((urand() + 1.0) / 2.0 * (double)r->b[0]);
      if (r->p[0] && i == fr_tensor_numel(ids) - 1)
        id = r->b[0]; /* error row: one past the end */
      if (r->flag)
        ((int32_t *)ids->data)[i] = (int32_t)id;
      else
        ((int64_t *)ids->data)[i] = id;
    }
    in->t[0] = ids;
    in->t[1] = rand_t(r->bn, r->b, 1.0, 0);
    in->n = 2;
    break;
  }
  case K_GATHER_ROWS:
    in->t[0] = rand_t(r->an, r->a, amp, 0);
    for (int64_t i = 0; i < r->a[0]; i++)
      in->index[i] = r->p[0] ? r->a[1] : (int64_t)((urand() + 1.0) / 2.0 * (double)r->a[1]);
    in->n = 1;
    break;
  case K_TIMESTEP: {
    in->t[0] = fr_tensor_f32(1, r->a);
    static const float ts[] = {999, 1, 0, 500.5f, 261, 17};
    for (int64_t i = 0; i < r->a[0]; i++)
      ((float *)in->t[0]->data)[i] = ts[i % 6];
    in->n = 1;
    break;
  }
  default:
    in->t[0] = rand_t(r->an, r->a, amp, 0);
    in->n = 1;
    break;
  }
  in->w_host = in->t[1];
  if ((r->kind == K_LINEAR || r->kind == K_CONV2D) && r->wdt != FR_F32)
    in->w_host = as_dtype(in->t[1], r->wdt);
}

static void free_inputs(struct inputs *in) {
  if (in->w_host != in->t[1])
    fr_tensor_free(in->w_host);
  for (int i = 0; i < MAXIN; i++)
    fr_tensor_free(in->t[i]);
}

/* ---- the reference: naive loops in double, from the PyTorch definitions ---- */

static double xf(const struct fr_tensor *t, int64_t i) {
  return ((const float *)t->data)[i];
}
static double sigmoid(double v) {
  return 1.0 / (1.0 + exp(-v));
}

/* Fills ref (allocated here, numel doubles) and its shape; returns numel. */
static int64_t ref_op(const struct row *r, const struct inputs *in, int *ndim, int64_t *shape,
                      double **refp) {
  const struct fr_tensor *x = in->t[0];
  int64_t n = 0;
  double *ref = NULL;
#define OUT(nd, ...)                                                                                         \
  do {                                                                                                       \
    int64_t s_[] = {__VA_ARGS__};                                                                            \
    *ndim = nd;                                                                                              \
    n = 1;                                                                                                   \
    for (int i_ = 0; i_ < nd; i_++)                                                                          \
      n *= (shape[i_] = s_[i_]);                                                                             \
    ref = calloc((size_t)(n ? n : 1), sizeof(double));                                                       \
  } while (0)
#define SAME()                                                                                               \
  do {                                                                                                       \
    *ndim = x->ndim;                                                                                         \
    memcpy(shape, x->shape, sizeof x->shape);                                                                \
    n = fr_tensor_numel(x);                                                                                  \
    ref = calloc((size_t)(n ? n : 1), sizeof(double));                                                       \
  } while (0)
  switch (r->kind) {
  case K_LINEAR: {
    const struct fr_tensor *w = in->t[1], *b = in->t[2];
    int64_t K = w->shape[1], N = w->shape[0], M = fr_tensor_numel(x) / K;
    *ndim = x->ndim;
    memcpy(shape, x->shape, sizeof x->shape);
    shape[x->ndim - 1] = N;
    n = M * N;
    ref = calloc((size_t)n, sizeof(double));
    for (int64_t m = 0; m < M; m++)
      for (int64_t o = 0; o < N; o++) {
        double s = b ? xf(b, o) : 0;
        for (int64_t k = 0; k < K; k++)
          s += xf(x, m * K + k) * xf(w, o * K + k);
        ref[m * N + o] = s;
      }
    break;
  }
  case K_MATMUL: {
    const struct fr_tensor *b = in->t[1];
    int nd = x->ndim;
    int64_t M = x->shape[nd - 2], K = x->shape[nd - 1], N = b->shape[nd - 1],
            B = fr_tensor_numel(x) / (M * K);
    *ndim = nd;
    memcpy(shape, x->shape, sizeof x->shape);
    shape[nd - 1] = N;
    n = B * M * N;
    ref = calloc((size_t)n, sizeof(double));
    for (int64_t bi = 0; bi < B; bi++)
      for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
          double s = 0;
          for (int64_t k = 0; k < K; k++)
            s += xf(x, (bi * M + i) * K + k) * xf(b, (bi * K + k) * N + j);
          ref[(bi * M + i) * N + j] = s;
        }
    break;
  }
  case K_CONV2D: {
    const struct fr_tensor *w = in->t[1], *b = in->t[2];
    int st = r->p[0], pd = r->p[1];
    int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t O = w->shape[0], kh = w->shape[2], kw = w->shape[3];
    int64_t Ho = (H + 2 * pd - kh) / st + 1, Wo = (W + 2 * pd - kw) / st + 1;
    OUT(4, B, O, Ho, Wo);
    for (int64_t bi = 0; bi < B; bi++)
      for (int64_t o = 0; o < O; o++)
        for (int64_t oh = 0; oh < Ho; oh++)
          for (int64_t ow = 0; ow < Wo; ow++) {
            double s = b ? xf(b, o) : 0;
            for (int64_t c = 0; c < C; c++)
              for (int64_t i = 0; i < kh; i++)
                for (int64_t j = 0; j < kw; j++) {
                  int64_t ih = oh * st - pd + i, iw = ow * st - pd + j;
                  if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                    s += xf(x, ((bi * C + c) * H + ih) * W + iw) * xf(w, ((o * C + c) * kh + i) * kw + j);
                }
            ref[((bi * O + o) * Ho + oh) * Wo + ow] = s;
          }
    break;
  }
  case K_ATTENTION: {
    const struct fr_tensor *k = in->t[1], *v = in->t[2];
    int H = r->p[0];
    int64_t B = x->shape[0], Tq = x->shape[1], HD = x->shape[2], Tk = k->shape[1], D = HD / H;
    SAME();
    double *p = calloc((size_t)Tk, sizeof(double));
    for (int64_t bi = 0; bi < B; bi++)
      for (int h = 0; h < H; h++)
        for (int64_t i = 0; i < Tq; i++) {
          double mx = -INFINITY, sum = 0;
          for (int64_t j = 0; j < Tk; j++) {
            double s = 0;
            for (int64_t d = 0; d < D; d++)
              s += xf(x, (bi * Tq + i) * HD + h * D + d) * xf(k, (bi * Tk + j) * HD + h * D + d);
            p[j] = (r->flag && j > i) ? -INFINITY : s / sqrt((double)D);
            mx = p[j] > mx ? p[j] : mx;
          }
          for (int64_t j = 0; j < Tk; j++)
            sum += (p[j] = exp(p[j] - mx));
          for (int64_t d = 0; d < D; d++) {
            double s = 0;
            for (int64_t j = 0; j < Tk; j++)
              s += p[j] / sum * xf(v, (bi * Tk + j) * HD + h * D + d);
            ref[(bi * Tq + i) * HD + h * D + d] = s;
          }
        }
    free(p);
    break;
  }
  case K_GROUP_NORM: {
    const struct fr_tensor *g = in->t[1], *b = in->t[2];
    int G = r->p[0];
    int64_t B = x->shape[0], C = x->shape[1], S = fr_tensor_numel(x) / (B * C), cpg = C / G;
    SAME();
    for (int64_t bi = 0; bi < B; bi++)
      for (int gi = 0; gi < G; gi++) {
        int64_t base = (bi * C + gi * cpg) * S, m = cpg * S;
        double mean = 0, var = 0;
        for (int64_t j = 0; j < m; j++)
          mean += xf(x, base + j);
        mean /= (double)m;
        for (int64_t j = 0; j < m; j++)
          var += (xf(x, base + j) - mean) * (xf(x, base + j) - mean);
        var /= (double)m;
        for (int64_t j = 0; j < m; j++) {
          int64_t c = gi * cpg + j / S;
          double y = (xf(x, base + j) - mean) / sqrt(var + (double)r->f) * xf(g, c) + xf(b, c);
          ref[base + j] = r->flag ? y * sigmoid(y) : y;
        }
      }
    break;
  }
  case K_LAYER_NORM: {
    const struct fr_tensor *g = in->t[1], *b = in->t[2];
    int64_t C = x->shape[x->ndim - 1], R = fr_tensor_numel(x) / C;
    SAME();
    for (int64_t i = 0; i < R; i++) {
      double mean = 0, var = 0;
      for (int64_t j = 0; j < C; j++)
        mean += xf(x, i * C + j);
      mean /= (double)C;
      for (int64_t j = 0; j < C; j++)
        var += (xf(x, i * C + j) - mean) * (xf(x, i * C + j) - mean);
      var /= (double)C;
      for (int64_t j = 0; j < C; j++)
        ref[i * C + j] =
            (xf(x, i * C + j) - mean) / sqrt(var + (double)r->f) * (g ? xf(g, j) : 1) + (b ? xf(b, j) : 0);
    }
    break;
  }
  case K_SOFTMAX: {
    int64_t C = x->shape[x->ndim - 1], R = fr_tensor_numel(x) / C;
    SAME();
    for (int64_t i = 0; i < R; i++) {
      double mx = -INFINITY, sum = 0;
      for (int64_t j = 0; j < C; j++)
        mx = fmax(mx, xf(x, i * C + j));
      for (int64_t j = 0; j < C; j++)
        sum += exp(xf(x, i * C + j) - mx);
      for (int64_t j = 0; j < C; j++)
        ref[i * C + j] = exp(xf(x, i * C + j) - mx) / sum;
    }
    break;
  }
  case K_SILU:
  case K_GELU:
  case K_GELU_TANH:
  case K_QUICK_GELU:
  case K_LEAKY_RELU:
  case K_AFFINE:
  case K_COPY:
    SAME();
    for (int64_t i = 0; i < n; i++) {
      double v = xf(x, i);
      switch (r->kind) {
      case K_SILU: ref[i] = v * sigmoid(v); break;
      case K_GELU: ref[i] = 0.5 * v * (1 + erf(v / sqrt(2.0))); break;
      case K_GELU_TANH: ref[i] = 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))); break;
      case K_QUICK_GELU: ref[i] = v * sigmoid(1.702 * v); break;
      case K_LEAKY_RELU: ref[i] = v > 0 ? v : v * (double)r->f; break;
      case K_AFFINE: ref[i] = v * (double)r->f + 0.25; break;
      default: ref[i] = v; break;
      }
    }
    break;
  case K_GEGLU: {
    int64_t N2 = x->shape[x->ndim - 1], N = N2 / 2, R = fr_tensor_numel(x) / N2;
    *ndim = x->ndim;
    memcpy(shape, x->shape, sizeof x->shape);
    shape[x->ndim - 1] = N;
    n = R * N;
    ref = calloc((size_t)n, sizeof(double));
    for (int64_t i = 0; i < R; i++)
      for (int64_t j = 0; j < N; j++) {
        double h = xf(x, i * N2 + j), g = xf(x, i * N2 + N + j);
        ref[i * N + j] = h * 0.5 * g * (1 + erf(g / sqrt(2.0)));
      }
    break;
  }
  case K_ADD:
  case K_SUB:
  case K_MUL:
  case K_ADD_INPLACE: {
    const struct fr_tensor *b = in->t[1];
    int nd = x->ndim > b->ndim ? x->ndim : b->ndim;
    int64_t da[FR_MAX_DIMS], db[FR_MAX_DIMS];
    *ndim = nd;
    n = 1;
    for (int i = 0; i < nd; i++) {
      da[i] = i - (nd - x->ndim) >= 0 ? x->shape[i - (nd - x->ndim)] : 1;
      db[i] = i - (nd - b->ndim) >= 0 ? b->shape[i - (nd - b->ndim)] : 1;
      shape[i] = da[i] > db[i] ? da[i] : db[i];
      n *= shape[i];
    }
    ref = calloc((size_t)n, sizeof(double));
    for (int64_t e = 0; e < n; e++) {
      int64_t rem = e, ia = 0, ib = 0, ma = 1, mb = 1;
      for (int d = nd - 1; d >= 0; d--) {
        int64_t idx = rem % shape[d];
        rem /= shape[d];
        ia += (da[d] == 1 ? 0 : idx) * ma;
        ib += (db[d] == 1 ? 0 : idx) * mb;
        ma *= da[d];
        mb *= db[d];
      }
      double va = xf(x, ia), vb = xf(b, ib);
      ref[e] = r->kind == K_SUB ? va - vb : r->kind == K_MUL ? va * vb : va + vb;
    }
    break;
  }
  case K_CONCAT: {
    const struct fr_tensor *b = in->t[1];
    int d = r->p[0] < 0 ? r->p[0] + x->ndim : r->p[0];
    *ndim = x->ndim;
    memcpy(shape, x->shape, sizeof x->shape);
    shape[d] += b->shape[d];
    n = fr_tensor_numel(x) + fr_tensor_numel(b);
    ref = calloc((size_t)n, sizeof(double));
    int64_t inner = 1;
    for (int i = d + 1; i < x->ndim; i++)
      inner *= x->shape[i];
    for (int64_t e = 0; e < n; e++) {
      int64_t in_ = e % inner, k = (e / inner) % shape[d], o = e / inner / shape[d];
      ref[e] = k < x->shape[d] ? xf(x, (o * x->shape[d] + k) * inner + in_)
                               : xf(b, (o * b->shape[d] + k - x->shape[d]) * inner + in_);
    }
    break;
  }
  case K_SLICE: {
    int d = r->p[0];
    *ndim = x->ndim;
    memcpy(shape, x->shape, sizeof x->shape);
    shape[d] = r->p[2];
    n = fr_tensor_numel(x) / x->shape[d] * r->p[2];
    ref = calloc((size_t)(n ? n : 1), sizeof(double));
    int64_t inner = 1;
    for (int i = d + 1; i < x->ndim; i++)
      inner *= x->shape[i];
    for (int64_t e = 0; e < n; e++) {
      int64_t in_ = e % inner, k = (e / inner) % shape[d], o = e / inner / shape[d];
      ref[e] = xf(x, (o * x->shape[d] + k + r->p[1]) * inner + in_);
    }
    break;
  }
  case K_PERMUTE: {
    int nd = x->ndim;
    int64_t xs[FR_MAX_DIMS], s = 1;
    for (int d = nd - 1; d >= 0; d--) {
      xs[d] = s;
      s *= x->shape[d];
    }
    *ndim = nd;
    for (int d = 0; d < nd; d++)
      shape[d] = x->shape[r->p[d]];
    n = fr_tensor_numel(x);
    ref = calloc((size_t)n, sizeof(double));
    for (int64_t e = 0; e < n; e++) {
      int64_t rem = e, off = 0;
      for (int d = nd - 1; d >= 0; d--) {
        off += (rem % shape[d]) * xs[r->p[d]];
        rem /= shape[d];
      }
      ref[e] = xf(x, off);
    }
    break;
  }
  case K_PAD2D: {
    int nd = x->ndim, L = r->p[0], R = r->p[1], T = r->p[2], Bm = r->p[3];
    int64_t H = x->shape[nd - 2], W = x->shape[nd - 1];
    *ndim = nd;
    memcpy(shape, x->shape, sizeof x->shape);
    shape[nd - 2] = H + T + Bm;
    shape[nd - 1] = W + L + R;
    n = fr_tensor_numel(x) / (H * W) * shape[nd - 2] * shape[nd - 1];
    ref = calloc((size_t)n, sizeof(double));
    for (int64_t e = 0; e < n; e++) {
      int64_t j = e % shape[nd - 1], i = (e / shape[nd - 1]) % shape[nd - 2],
              p = e / shape[nd - 1] / shape[nd - 2];
      int64_t si = i - T, sj = j - L;
      ref[e] = si >= 0 && si < H && sj >= 0 && sj < W ? xf(x, (p * H + si) * W + sj) : (double)r->f;
    }
    break;
  }
  case K_UPSAMPLE: {
    int nd = x->ndim;
    int64_t H = x->shape[nd - 2], W = x->shape[nd - 1];
    *ndim = nd;
    memcpy(shape, x->shape, sizeof x->shape);
    shape[nd - 2] *= 2;
    shape[nd - 1] *= 2;
    n = fr_tensor_numel(x) * 4;
    ref = calloc((size_t)n, sizeof(double));
    for (int64_t e = 0; e < n; e++) {
      int64_t j = e % (2 * W), i = (e / (2 * W)) % (2 * H), p = e / (4 * W * H);
      ref[e] = xf(x, (p * H + i / 2) * W + j / 2);
    }
    break;
  }
  case K_EMBEDDING: {
    const struct fr_tensor *tab = in->t[1];
    int64_t D = tab->shape[1], N = fr_tensor_numel(x);
    *ndim = x->ndim + 1;
    memcpy(shape, x->shape, sizeof x->shape);
    shape[x->ndim] = D;
    n = N * D;
    ref = calloc((size_t)n, sizeof(double));
    for (int64_t i = 0; i < N; i++) {
      int64_t id = x->dtype == FR_I32 ? ((const int32_t *)x->data)[i] : ((const int64_t *)x->data)[i];
      for (int64_t d = 0; d < D; d++)
        ref[i * D + d] = id < tab->shape[0] ? xf(tab, id * D + d) : 0;
    }
    break;
  }
  case K_GATHER_ROWS: {
    int64_t B = x->shape[0], T = x->shape[1], D = x->shape[2];
    OUT(2, B, D);
    for (int64_t b = 0; b < B; b++)
      for (int64_t d = 0; d < D; d++)
        ref[b * D + d] = in->index[b] < T ? xf(x, (b * T + in->index[b]) * D + d) : 0;
    break;
  }
  case K_TIMESTEP: {
    int64_t N = x->shape[0], dim = r->p[0], half = dim / 2;
    OUT(2, N, dim);
    for (int64_t i = 0; i < N; i++)
      for (int64_t j = 0; j < half; j++) {
        double arg = xf(x, i) * exp(-log(10000.0) * (double)j / ((double)half - (double)r->f));
        ref[i * dim + j] = r->flag ? cos(arg) : sin(arg);
        ref[i * dim + half + j] = r->flag ? sin(arg) : cos(arg);
      }
    break;
  }
  }
#undef OUT
#undef SAME
  *refp = ref;
  return n;
}

/* ---- running a row through the ops API ---- */

/* Runs the row's op on c; returns the output downloaded to a host F32 tensor, or NULL when the op failed
 * (the context then holds the error). Frees every context tensor it made. */
static struct fr_tensor *run_op(struct fr_ctx *c, const struct row *r, const struct inputs *in) {
  struct fr_tensor *d[MAXIN] = {0}, *y = NULL;
  bool is_weight[MAXIN] = {false};
  if (r->kind == K_LINEAR || r->kind == K_CONV2D)
    is_weight[1] = is_weight[2] = true;
  if (r->kind == K_GROUP_NORM || r->kind == K_LAYER_NORM || r->kind == K_EMBEDDING)
    is_weight[1] = is_weight[2] = true;
  for (int i = 0; i < in->n; i++) {
    const struct fr_tensor *h = i == 1 ? in->w_host : in->t[i];
    if (h)
      d[i] = is_weight[i] ? fr_ctx_weight(c, h) : fr_ctx_upload(c, h);
  }
  switch (r->kind) {
  case K_LINEAR: y = fr_linear(c, d[0], d[1], d[2]); break;
  case K_MATMUL: y = fr_matmul(c, d[0], d[1]); break;
  case K_CONV2D: y = fr_conv2d(c, d[0], d[1], d[2], r->p[0], r->p[1]); break;
  case K_ATTENTION: y = fr_attention(c, d[0], d[1], d[2], r->p[0], r->flag); break;
  case K_GROUP_NORM: y = fr_group_norm(c, d[0], r->p[0], d[1], d[2], r->f, r->flag); break;
  case K_LAYER_NORM: y = fr_layer_norm(c, d[0], d[1], d[2], r->f); break;
  case K_SOFTMAX: y = fr_softmax(c, d[0]); break;
  case K_SILU: y = fr_silu(c, d[0]); break;
  case K_GELU: y = fr_gelu(c, d[0]); break;
  case K_GELU_TANH: y = fr_gelu_tanh(c, d[0]); break;
  case K_QUICK_GELU: y = fr_quick_gelu(c, d[0]); break;
  case K_LEAKY_RELU: y = fr_leaky_relu(c, d[0], r->f); break;
  case K_GEGLU: y = fr_geglu(c, d[0]); break;
  case K_AFFINE: y = fr_affine(c, d[0], r->f, 0.25f); break;
  case K_COPY: y = fr_copy(c, d[0]); break;
  case K_ADD: y = fr_add(c, d[0], d[1]); break;
  case K_SUB: y = fr_sub(c, d[0], d[1]); break;
  case K_MUL: y = fr_mul(c, d[0], d[1]); break;
  case K_ADD_INPLACE:
    if (fr_add_inplace(c, d[0], d[1]) == d[0]) { /* returns a itself */
      y = d[0];
      d[0] = NULL;
    }
    break;
  case K_CONCAT: y = fr_concat(c, (const struct fr_tensor *const[]){d[0], d[1]}, 2, r->p[0]); break;
  case K_SLICE: y = fr_slice(c, d[0], r->p[0], r->p[1], r->p[2]); break;
  case K_PERMUTE: y = fr_permute(c, d[0], r->p); break;
  case K_PAD2D: y = fr_pad2d(c, d[0], r->p[0], r->p[1], r->p[2], r->p[3], r->f); break;
  case K_UPSAMPLE: y = fr_upsample_nearest2x(c, d[0]); break;
  case K_EMBEDDING: y = fr_embedding(c, d[0], d[1]); break;
  case K_GATHER_ROWS: y = fr_gather_rows(c, d[0], in->index); break;
  case K_TIMESTEP: y = fr_timestep_embedding(c, d[0], r->p[0], r->flag, r->f, 10000.0f); break;
  }
  struct fr_tensor *host = y ? fr_ctx_download(c, y) : NULL;
  fr_tensor_free(y);
  for (int i = 0; i < MAXIN; i++)
    fr_tensor_free(d[i]);
  return host;
}

/* Tolerance of a row on a device other than the cpu, in an F32 context: CUDA computes in fp32 too (cuBLASLt
 * with CUBLAS_COMPUTE_32F, no TF32; fp32 softmax and statistics), so it differs from the reference only by
 * summation order and its libm (expf/erff/tanhf within 2 ulp): twice the cpu tolerance, at least 1e-5.
 * Exact rows (copies) stay exact. Low-precision contexts have their own pass (run_rows_lowp). */
static double device_tol(const struct row *r, const char *dev) {
  if (strcmp(dev, "cpu") == 0 || r->tol == 0)
    return r->tol;
  return 2 * r->tol > 1e-5 ? 2 * r->tol : 1e-5;
}

static const char *const DEVICES[] = {"cpu", "cuda"};
#define NDEV (int)(sizeof DEVICES / sizeof DEVICES[0])

static void row_label(const struct row *r, char *buf, size_t n) {
  char a[96], b[96];
  fr_shape_str_dims(r->an, r->a, a, sizeof a);
  if (r->bn)
    snprintf(buf, n, "%s x %s", a, fr_shape_str_dims(r->bn, r->b, b, sizeof b));
  else
    snprintf(buf, n, "%s", a);
}

static void run_rows(struct fr_ctx **ctx) {
  int nrows = (int)(sizeof ROWS / sizeof ROWS[0]);
  for (int ri = 0; ri < nrows; ri++) {
    const struct row *r = &ROWS[ri];
    rng_state = 0x9e3779b97f4a7c15ULL * (uint64_t)(ri + 1);
    struct inputs in;
    make_inputs(r, &in);
    char shapes[256];
    row_label(r, shapes, sizeof shapes);
    double *ref = NULL;
    int rnd = 0;
    int64_t rshape[FR_MAX_DIMS] = {0};
    int64_t n = r->expect == FR_OK ? ref_op(r, &in, &rnd, rshape, &ref) : 0;
    float *reff = NULL;
    if (ref) {
      reff = malloc((size_t)(n ? n : 1) * sizeof(float));
      for (int64_t i = 0; i < n; i++)
        reff[i] = (float)ref[i];
    }
    struct fr_tensor *cpu_out = NULL;
    for (int di = 0; di < NDEV; di++) {
      struct fr_ctx *c = ctx[di];
      if (!c)
        continue;
      struct fr_tensor *out = run_op(c, r, &in);
      struct fr_err e;
      enum fr_status st = fr_ctx_status(c, &e);
      if (r->expect != FR_OK) {
        char opname[64];
        snprintf(opname, sizeof opname, "fr_%s", r->op);
        char *sp = strchr(opname, ' ');
        if (sp)
          *sp = 0;
        CHECKF(out == NULL && st == r->expect && strstr(e.msg, opname),
               "%s %s on %s: status %d (want %d), message '%s'", r->op, shapes, DEVICES[di], st, r->expect,
               st ? e.msg : "");
        printf("%-5s %-22s %-40s error (%s): %s\n", DEVICES[di], r->op, shapes, r->why, st ? e.msg : "none");
        fr_tensor_free(out);
        fr_ctx_clear(c);
        continue;
      }
      if (!out || st != FR_OK) {
        CHECKF(0, "%s %s on %s failed: %s", r->op, shapes, DEVICES[di], st ? e.msg : "no output");
        fr_tensor_free(out);
        fr_ctx_clear(c);
        continue;
      }
      bool shape_ok = out->ndim == rnd && memcmp(out->shape, rshape, sizeof(int64_t) * (size_t)rnd) == 0;
      char so[96], sr[96];
      CHECKF(shape_ok, "%s on %s: output %s, expected %s", r->op, DEVICES[di],
             fr_shape_str(out, so, sizeof so), fr_shape_str_dims(rnd, rshape, sr, sizeof sr));
      double tol = device_tol(r, DEVICES[di]);
      if (shape_ok) {
        double err = fr_test_rel_err(out->data, reff, (long)n);
        printf("%-5s %-22s %-40s err %.3g (tol %.3g: %s)\n", DEVICES[di], r->op, shapes, err, tol, r->why);
        CHECKF(err <= tol, "%s %s on %s: error %.3g > tolerance %.3g", r->op, shapes, DEVICES[di], err, tol);
        if (di > 0 && cpu_out) {
          double e2 = fr_test_rel_err(out->data, cpu_out->data, (long)n);
          printf("%-5s %-22s %-40s vs cpu %.3g (tol %.3g)\n", DEVICES[di], r->op, shapes, e2, tol);
          CHECKF(e2 <= tol, "%s %s on %s vs cpu: error %.3g > tolerance %.3g", r->op, shapes, DEVICES[di], e2,
                 tol);
        }
      }
      if (di == 0)
        cpu_out = out;
      else
        fr_tensor_free(out);
    }
    fr_tensor_free(cpu_out);
    free(ref);
    free(reff);
    free_inputs(&in);
  }
}

#ifdef FLOWRUN_HAVE_CUDA
/* ---- CUDA in F16 / BF16: every row against a reference on the inputs the device actually holds ----
 *
 * A low-precision context stores every float tensor in F16 or BF16, so the inputs it computes with are the
 * F32 inputs rounded to that dtype (round to nearest even, on upload). Comparing with the F32 reference
 * would mostly measure that input rounding (for the softmax row with logits up to 30, ~1.5% in F16 and
 * ~12% in BF16), so here the reference (double) and the cpu result are computed from the rounded inputs,
 * while the device still gets the original F32 (or F16/BF16 weight) host tensors and rounds them itself.
 * What remains is the device's own error: fp32 arithmetic inside (accumulation, softmax, statistics) plus
 * the rounding of the output to the storage dtype, u = 2^-11 (F16) or 2^-8 (BF16) of max |ref| each time,
 * at most twice (a GEMM whose bias cuBLASLt cannot fuse is rounded, then the bias added and rounded). The
 * tolerance is therefore 2u + 3 x the row's fp32 tolerance (floored at 1e-5): the fp32 part of the cpu
 * result and of the device result may lie on opposite sides. Copies stay exact (tolerance 0). */
static double lowp_tol(const struct row *r, enum fr_dtype dt) {
  if (r->tol == 0)
    return 0;
  double u = dt == FR_F16 ? 1.0 / 2048 : 1.0 / 256;
  return 2 * u + 3 * (r->tol > 1e-5 ? r->tol : 1e-5);
}

/* A copy of in whose float tensors hold the values rounded through dt (ids and the host index as they are).
 */
static void round_inputs(const struct inputs *in, struct inputs *out, enum fr_dtype dt) {
  *out = *in;
  for (int i = 0; i < MAXIN; i++) {
    out->t[i] = NULL;
    if (!in->t[i])
      continue;
    out->t[i] = fr_tensor_clone(in->t[i]);
    if (out->t[i]->dtype == FR_F32)
      fr_tensor_free(as_dtype(out->t[i], dt)); /* rounds out->t[i] in place */
  }
  out->w_host = out->t[1];
}

/* only: the rows of one kind, or -1 for all; label: the dtype and how the context was made, for the lines */
static void run_rows_lowp(struct fr_ctx *cpu, struct fr_ctx *dev, enum fr_dtype dt, int only,
                          const char *dn) {
  int nrows = (int)(sizeof ROWS / sizeof ROWS[0]);
  for (int ri = 0; ri < nrows; ri++) {
    const struct row *r = &ROWS[ri];
    if (only >= 0 && r->kind != (enum kind)only)
      continue;
    rng_state = 0x9e3779b97f4a7c15ULL * (uint64_t)(ri + 1);
    struct inputs in, rin;
    make_inputs(r, &in);
    round_inputs(&in, &rin, dt);
    char shapes[256];
    row_label(r, shapes, sizeof shapes);
    struct fr_tensor *out = run_op(dev, r, &in);
    struct fr_err e;
    enum fr_status st = fr_ctx_status(dev, &e);
    if (r->expect != FR_OK) {
      CHECKF(out == NULL && st == r->expect, "%s %s on cuda %s: status %d (want %d), message '%s'", r->op,
             shapes, dn, st, r->expect, st ? e.msg : "");
      printf("cuda %-4s %-22s %-40s error (%s): %s\n", dn, r->op, shapes, r->why, st ? e.msg : "none");
    } else if (!out || st != FR_OK) {
      CHECKF(0, "%s %s on cuda %s failed: %s", r->op, shapes, dn, st ? e.msg : "no output");
    } else {
      double *ref = NULL;
      int rnd = 0;
      int64_t rshape[FR_MAX_DIMS] = {0};
      int64_t n = ref_op(r, &rin, &rnd, rshape, &ref);
      float *reff = malloc((size_t)(n ? n : 1) * sizeof(float));
      for (int64_t i = 0; i < n; i++)
        reff[i] = (float)ref[i];
      struct fr_tensor *cpu_out = run_op(cpu, r, &rin);
      fr_ctx_clear(cpu);
      bool shape_ok = out->ndim == rnd && memcmp(out->shape, rshape, sizeof(int64_t) * (size_t)rnd) == 0;
      CHECKF(shape_ok, "%s on cuda %s: wrong output shape", r->op, dn);
      if (shape_ok) {
        double tol = lowp_tol(r, dt), err = fr_test_rel_err(out->data, reff, (long)n);
        double e2 = cpu_out ? fr_test_rel_err(out->data, cpu_out->data, (long)n) : INFINITY;
        printf("cuda %-4s %-22s %-40s err %.3g, vs cpu %.3g (tol %.3g: 2 %s roundings + 3 x fp32 tol; %s)\n",
               dn, r->op, shapes, err, e2, tol, fr_dtype_name(dt), r->why);
        CHECKF(err <= tol, "%s %s on cuda %s: error %.3g > tolerance %.3g", r->op, shapes, dn, err, tol);
        CHECKF(e2 <= tol, "%s %s on cuda %s vs cpu: error %.3g > tolerance %.3g", r->op, shapes, dn, e2, tol);
      }
      fr_tensor_free(cpu_out);
      free(ref);
      free(reff);
    }
    fr_tensor_free(out);
    fr_ctx_clear(dev);
    free_inputs(&rin);
    free_inputs(&in);
  }
}
#endif

/* ---- context behaviour: NULL propagation, sticky errors, creation errors, out of memory ---- */

static bool failed_with(struct fr_ctx *c, enum fr_status want, const char *needle) {
  struct fr_err e;
  enum fr_status st = fr_ctx_status(c, &e);
  bool ok = st == want && strstr(e.msg, needle) != NULL;
  if (!ok)
    fprintf(stderr, "  status %d (want %d), message '%s' (want '%s')\n", st, want, st ? e.msg : "", needle);
  fr_ctx_clear(c);
  return ok;
}

/* ---- fr_timestep_embedding_f32: the embedding from fp32 host timesteps ----
 * On every device and dtype the result is the fp32 sinusoid of the UNROUNDED t, rounded once to the
 * compute dtype: against the double-precision reference the bound is the op row's fp32 tolerance (2e-4:
 * t * freq rounded in fp32 for t up to 999) plus one rounding, u = 0 (F32), 2^-11 (F16), 2^-8 (BF16). The
 * timesteps include 999 and 981.25, which BF16 cannot hold (they become 1000 and 980): through a context
 * tensor their embedding would be off by O(1). On the cpu the host path and the op agree bit for bit
 * (the UNet goldens stay unchanged). */
static void check_timestep_f32(struct fr_ctx *c) {
  static const float ts[] = {999, 981.25f, 500.5f, 1, 0, 0.125f, 261};
  const int64_t n = (int64_t)(sizeof ts / sizeof ts[0]);
  static const struct {
    int dim;
    bool flip;
    float shift;
  } cfgs[] = {{320, true, 0}, {33, false, 1}, {256, true, 0}};
  enum fr_dtype dt = fr_ctx_dtype(c);
  double u = dt == FR_F16 ? 1.0 / 2048 : dt == FR_BF16 ? 1.0 / 256 : 0;
  const char *dev = fr_ctx_device_name(c);
  for (size_t k = 0; k < sizeof cfgs / sizeof cfgs[0]; k++) {
    int dim = cfgs[k].dim;
    int64_t half = dim / 2;
    struct fr_tensor *y = fr_timestep_embedding_f32(c, ts, n, dim, cfgs[k].flip, cfgs[k].shift, 10000.0f);
    struct fr_tensor *hy = y ? fr_ctx_download(c, y) : NULL;
    CHECKF(hy && hy->ndim == 2 && hy->shape[0] == n && hy->shape[1] == dim, "timestep_f32 dim %d on %s %s",
           dim, dev, fr_dtype_name(dt));
    if (hy) {
      double worst = 0;
      for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < dim; j++) {
          double want = 0;
          if (j < 2 * half) {
            int64_t f = j < half ? j : j - half;
            double arg =
                (double)ts[i] * exp(-log(10000.0) * (double)f / ((double)half - (double)cfgs[k].shift));
            bool first = j < half;
            want = (first == cfgs[k].flip) ? cos(arg) : sin(arg);
          }
          worst = fmax(worst, fabs(((const float *)hy->data)[i * dim + j] - want));
        }
      double tol = 2e-4 + u;
      printf("%-5s timestep_f32 dim %-3d %-4s err %.3g (tol %.3g: fp32 t * freq + one rounding)\n", dev, dim,
             fr_dtype_name(dt), worst, tol);
      CHECKF(worst <= tol, "timestep_f32 dim %d on %s %s: error %.3g > %.3g", dim, dev, fr_dtype_name(dt),
             worst, tol);
    }
    if (hy && strcmp(dev, "cpu") == 0) { /* the op on the same values: the same bits */
      struct fr_tensor *ht = fr_tensor_f32(1, (int64_t[]){n});
      memcpy(ht->data, ts, sizeof ts);
      struct fr_tensor *dt_t = fr_ctx_upload(c, ht);
      struct fr_tensor *yo = fr_timestep_embedding(c, dt_t, dim, cfgs[k].flip, cfgs[k].shift, 10000.0f);
      struct fr_tensor *ho = yo ? fr_ctx_download(c, yo) : NULL;
      CHECKF(ho && memcmp(ho->data, hy->data, (size_t)(n * dim) * sizeof(float)) == 0,
             "timestep_f32 dim %d: not bit-identical to fr_timestep_embedding on the cpu", dim);
      fr_tensor_free(ht);
      fr_tensor_free(dt_t);
      fr_tensor_free(yo);
      fr_tensor_free(ho);
    }
    fr_tensor_free(y);
    fr_tensor_free(hy);
  }
  /* bad arguments: a clear FR_E_INVALID naming the function; a failed context stays failed */
  struct fr_tensor *y = fr_timestep_embedding_f32(c, ts, 0, 320, true, 0, 10000.0f);
  CHECKF(!y && failed_with(c, FR_E_INVALID, "fr_timestep_embedding_f32: 0 timesteps"), "n = 0");
  y = fr_timestep_embedding_f32(c, NULL, 2, 320, true, 0, 10000.0f);
  CHECKF(!y && failed_with(c, FR_E_INVALID, "at NULL"), "t = NULL");
  y = fr_timestep_embedding_f32(c, ts, 2, 1, true, 0, 10000.0f);
  CHECKF(!y && failed_with(c, FR_E_INVALID, "dim 1"), "dim 1");
  fr_ctx_fail(c, FR_E_SHAPE, "an earlier failure");
  y = fr_timestep_embedding_f32(c, ts, 2, 320, true, 0, 10000.0f);
  CHECKF(!y && failed_with(c, FR_E_SHAPE, "an earlier failure"), "failed context: no output, error kept");
}

static void check_null_inputs(struct fr_ctx *c) {
  struct fr_tensor *h = fr_tensor_f32(4, (int64_t[]){1, 4, 4, 4});
  struct fr_tensor *x = fr_ctx_upload(c, h);
  fr_tensor_free(h);
  CHECK(x != NULL);
  const struct fr_tensor *N = NULL;
  int perm[4] = {0, 1, 2, 3};
  int64_t idx[1] = {0};
#define NULL_CASE(call, name)                                                                                \
  do {                                                                                                       \
    struct fr_tensor *y_ = (call);                                                                           \
    CHECKF(y_ == NULL && failed_with(c, FR_E_INVALID, name), "%s with a NULL input", name);                  \
    fr_tensor_free(y_);                                                                                      \
  } while (0)
  NULL_CASE(fr_linear(c, N, x, NULL), "fr_linear");
  NULL_CASE(fr_matmul(c, x, N), "fr_matmul");
  NULL_CASE(fr_conv2d(c, x, N, NULL, 1, 1), "fr_conv2d");
  NULL_CASE(fr_attention(c, x, N, x, 1, false), "fr_attention");
  NULL_CASE(fr_group_norm(c, N, 1, NULL, NULL, 1e-5f, false), "fr_group_norm");
  NULL_CASE(fr_layer_norm(c, N, NULL, NULL, 1e-5f), "fr_layer_norm");
  NULL_CASE(fr_softmax(c, N), "fr_softmax");
  NULL_CASE(fr_silu(c, N), "fr_silu");
  NULL_CASE(fr_gelu(c, N), "fr_gelu");
  NULL_CASE(fr_gelu_tanh(c, N), "fr_gelu_tanh");
  NULL_CASE(fr_quick_gelu(c, N), "fr_quick_gelu");
  NULL_CASE(fr_geglu(c, N), "fr_geglu");
  NULL_CASE(fr_add(c, x, N), "fr_add");
  NULL_CASE(fr_sub(c, N, x), "fr_sub");
  NULL_CASE(fr_mul(c, x, N), "fr_mul");
  NULL_CASE(fr_add_inplace(c, x, N), "fr_add_inplace");
  NULL_CASE(fr_affine(c, N, 1, 0), "fr_affine");
  NULL_CASE(fr_copy(c, N), "fr_copy");
  NULL_CASE(fr_concat(c, (const struct fr_tensor *const[]){x, N}, 2, 0), "fr_concat");
  NULL_CASE(fr_slice(c, N, 0, 0, 1), "fr_slice");
  NULL_CASE(fr_permute(c, N, perm), "fr_permute");
  NULL_CASE(fr_pad2d(c, N, 1, 1, 1, 1, 0), "fr_pad2d");
  NULL_CASE(fr_upsample_nearest2x(c, N), "fr_upsample_nearest2x");
  NULL_CASE(fr_embedding(c, N, x), "fr_embedding");
  NULL_CASE(fr_gather_rows(c, N, idx), "fr_gather_rows");
  NULL_CASE(fr_timestep_embedding(c, N, 8, true, 0, 10000), "fr_timestep_embedding");
  NULL_CASE(fr_ctx_weight(c, N), "fr_ctx_weight");
  NULL_CASE(fr_ctx_upload(c, N), "fr_ctx_upload");
  NULL_CASE(fr_ctx_download(c, N), "fr_ctx_download");

  /* Sticky: the first error is kept, later ops return NULL without running, clear resets. */
  struct fr_tensor *w = fr_ctx_upload(c, h = fr_tensor_f32(4, (int64_t[]){8, 3, 3, 3}));
  fr_tensor_free(h);
  struct fr_tensor *y = fr_conv2d(c, x, w, NULL, 1, 1);
  CHECK(y == NULL && fr_ctx_failed(c));
  struct fr_err e;
  CHECK(fr_ctx_status(c, &e) == FR_E_SHAPE);
  CHECKF(strstr(e.msg, "fr_conv2d: weight [8, 3, 3, 3] does not fit input [1, 4, 4, 4]") != NULL,
         "message: %s", e.msg);
  y = fr_silu(c, x);
  CHECK(y == NULL);
  fr_ctx_fail(c, FR_E_INVALID, "a later error");
  fr_ctx_status(c, &e);
  CHECKF(strstr(e.msg, "fr_conv2d") != NULL, "first error kept: %s", e.msg);
  fr_ctx_clear(c);
  CHECK(!fr_ctx_failed(c) && fr_ctx_status(c, NULL) == FR_OK);
  y = fr_silu(c, x);
  CHECK(y != NULL);
  fr_tensor_free(y);

  /* A tensor of the wrong dtype (an F64 tensor not passed through fr_ctx_weight) names the op. (A host
   * F16/BF16 tensor is a valid weight on the CPU: ops widen it, see 16-bit weights below.) */
  struct fr_tensor *f64 = fr_tensor_new(FR_F64, 4, (int64_t[]){1, 4, 4, 4});
  y = fr_add(c, x, f64);
  CHECK(y == NULL && failed_with(c, FR_E_INVALID, "fr_add: b [1, 4, 4, 4] is F64"));
  fr_tensor_free(f64);

  /* Out of memory inside an op: NULL, FR_E_NOMEM naming the op, nothing leaked (ASan). */
  fr_alloc_fail_at(1);
  y = fr_silu(c, x);
  fr_alloc_fail_at(0);
  CHECK(y == NULL && failed_with(c, FR_E_NOMEM, "fr_silu"));
  fr_alloc_fail_at(1);
  y = fr_conv2d(c, x, w, NULL, 1, 1); /* shape error is found before any allocation */
  fr_alloc_fail_at(0);
  CHECK(y == NULL && failed_with(c, FR_E_SHAPE, "fr_conv2d"));
  /* im2col scratch allocation failing (the output allocation is the 1st, the scratch the 2nd). */
  struct fr_ctx *c2 = NULL;
  CHECK(fr_ctx_new(&(struct fr_ctx_opts){.device = "cpu", .threads = 1}, &c2, &e) == FR_OK);
  if (c2) {
    struct fr_tensor *w3 = fr_ctx_upload(c2, h = fr_tensor_f32(4, (int64_t[]){2, 4, 3, 3}));
    fr_tensor_free(h);
    for (long k = 1; k <= 3; k++) {
      fr_alloc_fail_at(k);
      y = fr_conv2d(c2, x, w3, NULL, 1, 1);
      fr_alloc_fail_at(0);
      CHECKF((y == NULL && failed_with(c2, FR_E_NOMEM, "fr_conv2d")) || (y != NULL && k > 2),
             "conv2d with allocation %ld failing", k);
      fr_tensor_free(y);
    }
    fr_tensor_free(w3);
    fr_ctx_free(c2);
  }
  fr_tensor_free(w);
  fr_tensor_free(x);
}

static void check_ctx_new(void) {
  struct fr_ctx *c = NULL;
  struct fr_err e;
  enum fr_status st = fr_ctx_new(&(struct fr_ctx_opts){.device = "cuda"}, &c, &e);
  if (st == FR_OK)
    fr_ctx_free(c);
  else
    CHECKF(st == FR_E_DEVICE && c == NULL, "cuda: status %d %s", st, e.msg);
#ifndef FLOWRUN_HAVE_CUDA
  CHECKF(st == FR_E_DEVICE && strstr(e.msg, "flowrun was built without CUDA"), "cuda message: %s", e.msg);
#endif
  st = fr_ctx_new(&(struct fr_ctx_opts){.device = "tpu"}, &c, &e);
  CHECKF(st == FR_E_INVALID && c == NULL && strstr(e.msg, "tpu"), "unknown device: %d %s", st, e.msg);
  st = fr_ctx_new(&(struct fr_ctx_opts){.device = "cpu", .dtype = FR_F16}, &c, &e);
  CHECKF(st == FR_E_UNSUPPORTED && c == NULL && strstr(e.msg, "F16"), "cpu f16: %d %s", st, e.msg);
  st = fr_ctx_new(&(struct fr_ctx_opts){.device = "cpu", .threads = -1}, &c, &e);
  CHECKF(st == FR_E_INVALID && c == NULL, "threads -1: %d %s", st, e.msg);
  for (long k = 1; k <= 3; k++) { /* out of memory while creating: clean error, no leak */
    fr_alloc_fail_at(k);
    st = fr_ctx_new(NULL, &c, &e);
    fr_alloc_fail_at(0);
    CHECKF((st == FR_E_NOMEM && c == NULL) || st == FR_OK, "ctx_new with allocation %ld failing: %d", k, st);
    fr_ctx_free(c);
    c = NULL;
  }
  st = fr_ctx_new(NULL, &c, &e);
  CHECK(st == FR_OK && c && strcmp(fr_ctx_device_name(c), "cpu") == 0 && fr_ctx_dtype(c) == FR_F32);
  /* fr_ctx_weight_view borrows an F32 host tensor on the cpu; fr_ctx_weight copies it. */
  struct fr_tensor *h = fr_tensor_f32(2, (int64_t[]){3, 4});
  struct fr_tensor *v = fr_ctx_weight_view(c, h), *w = fr_ctx_weight(c, h);
  CHECK(v && v->data == h->data && !v->owns_data);
  CHECK(w && w->data != h->data);
  fr_tensor_free(v);
  fr_tensor_free(w);
  fr_tensor_free(h);
  fr_ctx_free(c);
}

/* Two floats agree: both NaN, or equal (infinities included), or finite within rel of the reference, or
 * both below 1.26e-38 = exp(-87.3) in magnitude (the fast exp gives 0 below -87.3, where expf returns
 * values at or under FLT_MIN). */
static int same_float(double got, double ref, double rel) {
  if (isnan(ref) || isnan(got))
    return isnan(ref) && isnan(got);
  if (isinf(ref) || isinf(got))
    return got == ref;
  if (fabs(ref) < 1.26e-38)
    return fabs(got) < 1.26e-38;
  return fabs(got - ref) <= rel * fabs(ref);
}

/* The non-finite and extreme inputs a broken checkpoint or latent feeds in: NaN, +-inf, huge and tiny
 * magnitudes, and the edges of exp's range. The reference is libm in double (expf's overflow threshold is
 * 88.7228317, the largest float whose exp is finite; in (88.3, 88.7228317] the fast exp is documented to
 * give exp(88.3)); NaN must come out NaN (never a finite number that would hide the fault from the NaN
 * checks), and none of it may be undefined behaviour (the ASan/UBSan build runs this test: before the
 * clamp took NaN, (int32_t)NaN overflowed in exp). Tolerance 5e-7 relative for finite exp results (the
 * polynomial's ~2 ulp, as above), 1e-6 of max(1, |y|) for the activations. */
static void check_vec_edges(const struct fr_cpu_vec *v, const char *name) {
  static const float in[] = {NAN,     -NAN,     INFINITY, -INFINITY,   1e30f,       -1e30f,
                             FLT_MAX, -FLT_MAX, 88.5f,    88.7228317f, 88.7228394f, 89.0f,
                             1000.0f, -87.29f,  -87.31f,  -103.0f,     -1000.0f,    1e-30f,
                             -1e-30f, 1e-45f,   0.0f,     -0.0f,       2.5f,        -2.5f};
  enum { M = (int)(sizeof in / sizeof in[0]) };
  float y[M], z[M], h[M], g[M], row[M];
  for (int rep = -1; rep < M; rep++) { /* -1: the whole row; then each value 8 times (the 8-wide body) */
    int nrow = rep < 0 ? M : 8;
    for (int j = 0; j < nrow; j++)
      row[j] = rep < 0 ? in[j] : in[rep];
    float s = v->exp_sum(row, nrow, 0.0f);
    double sref = 0;
    for (int j = 0; j < nrow; j++) {
      double x = rep < 0 ? in[j] : in[rep], ref = exp(x);
      ref = ref > FLT_MAX ? INFINITY : ref;              /* expf overflows where double does not */
      if (x > (double)88.3f && x <= (double)88.7228317f) /* documented clamp (vec_body.h): exp(88.3f) there */
        ref = exp((double)88.3f);
      sref += ref;
      CHECKF(same_float(row[j], ref, 5e-7), "%s exp(%.9g) = %.9g, libm %.9g", name, x, (double)row[j], ref);
    }
    sref = sref > FLT_MAX ? INFINITY : sref; /* the float sum overflows too */
    CHECKF(same_float(s, sref, 5e-6) || fabs(s - sref) <= nrow * 1.26e-38,
           "%s exp_sum of %s: %.9g, libm %.9g", name, rep < 0 ? "the row" : "8 copies", (double)s, sref);
  }
  v->silu(y, in, M, 1.0f);
  v->gelu(z, in, M);
  for (int i = 0; i < M; i++)
    g[i] = 1.0f;
  v->geglu(h, g, in, M);
  for (int i = 0; i < M; i++) {
    double x = in[i];
    double rs = x / (1 + exp(-x)); /* -inf / inf: NaN, as torch's silu */
    double rg = 0.5 * x * (1 + erf(x / sqrt(2.0)));
    rs = fabs(rs) > FLT_MAX && !isinf(x) ? copysign(INFINITY, rs) : rs;
    rg = fabs(rg) > FLT_MAX && !isinf(x) ? copysign(INFINITY, rg) : rg;
    CHECKF(same_float(y[i], rs, 1e-6) || (!isnan(rs) && !isinf(rs) && fabs(y[i] - rs) <= 1e-6),
           "%s silu(%.9g) = %.9g, libm %.9g", name, x, (double)y[i], rs);
    CHECKF(same_float(z[i], rg, 1e-6) || (!isnan(rg) && !isinf(rg) && fabs(z[i] - rg) <= 1e-6),
           "%s gelu(%.9g) = %.9g, libm %.9g", name, x, (double)z[i], rg);
    CHECKF(same_float(h[i], rg, 1e-6) || (!isnan(rg) && !isinf(rg) && fabs(h[i] - rg) <= 1e-6),
           "%s geglu(1, %.9g) = %.9g, libm %.9g", name, x, (double)h[i], rg);
  }
  printf("vec %-8s NaN/inf/huge/tiny inputs of exp, silu, gelu, geglu match libm\n", name);
}

/* The CPU backend's vector math (fast exp/erf) on every implementation built in, at the edges the table
 * rows do not reach: -inf (masked scores), underflow, overflow clamps, large |x| for the activations. */
static void check_vec_math(void) {
  enum { N = 1003 }; /* not a multiple of 8 or 16: the scalar tails run too */
  static float x[N], y[N], h[N];
  for (int i = 0; i < N; i++)
    x[i] = (float)(-100.0 + 200.0 * i / (N - 1)); /* [-100, 100] */
  x[0] = -INFINITY;
  x[1] = -87.0f;
  x[2] = 88.0f;
  x[3] = 0.0f;
  const struct fr_cpu_vec *impl[3];
  const char *names[3];
  int n = fr_cpu_vec_all(impl, names);
  printf("vec paths this CPU runs: %d (%s%s%s%s%s)\n", n, names[0], n > 1 ? ", " : "", n > 1 ? names[1] : "",
         n > 2 ? ", " : "", n > 2 ? names[2] : "");
  for (int k = 0; k < n; k++) {
    const struct fr_cpu_vec *v = impl[k];
    const char *name = names[k];
    double worst = 0;
    for (int i = 0; i < N; i++) { /* exp(x - 0): relative error */
      y[i] = x[i];
    }
    v->exp_sum(y, N, 0.0f);
    for (int i = 0; i < N; i++) {
      if (x[i] > 88.0f)
        continue; /* exp(x) > FLT_MAX: clamped; softmax only feeds x - max <= 0 */
      double ref = exp((double)x[i]);
      double e = ref > 1e-37 ? fabs(y[i] - ref) / ref : fabs((double)y[i]);
      worst = e > worst ? e : worst;
    }
    printf("vec %-8s exp over [-inf, 88]: max rel err %.3g (tol 5e-7: Cephes polynomial, ~2 ulp)\n", name,
           worst);
    CHECKF(worst <= 5e-7, "%s exp: %.3g", name, worst);
    CHECKF(v->max(x, N) == 100.0f && v->max(x, 5) == 88.0f, "%s max", name);
    /* exp_sum's returned sum and max over lengths that end in every kind of tail (vector blocks of 8, 16
     * and 32 and the rest), against double sums; softmax rows: m = the max, so x - m <= 0 */
    for (int len = 1; len <= 70; len += 3) {
      float row[70];
      double ref = 0;
      for (int i = 0; i < len; i++)
        row[i] = (float)(3.0 * sin(1.3 * i + len));
      float m = row[0];
      for (int i = 1; i < len; i++)
        m = row[i] > m ? row[i] : m;
      for (int i = 0; i < len; i++)
        ref += exp((double)row[i] - m);
      CHECKF(v->max(row, len) == m, "%s max of %d", name, len);
      float got = v->exp_sum(row, len, m);
      CHECKF(fabs(got - ref) <= 1e-6 * ref, "%s exp_sum of %d: %.9g, expected %.9g (tol 1e-6 relative)", name,
             len, got, ref);
    }
    double wsilu = 0, wgelu = 0, wgeglu = 0;
    v->silu(y, x, N, 1.0f);
    for (int i = 1; i < N; i++) {
      double r = x[i] / (1 + exp(-(double)x[i]));
      wsilu = fmax(wsilu, fabs(y[i] - r) / fmax(1.0, fabs(r)));
    }
    v->gelu(y, x, N);
    for (int i = 1; i < N; i++) {
      double r = 0.5 * x[i] * (1 + erf(x[i] / sqrt(2.0)));
      wgelu = fmax(wgelu, fabs(y[i] - r) / fmax(1.0, fabs(r)));
    }
    for (int i = 0; i < N; i++)
      h[i] = 0.5f;
    v->geglu(y, h, x + 1, N - 1);
    for (int i = 0; i < N - 1; i++) {
      double g = x[i + 1], r = 0.5 * 0.5 * g * (1 + erf(g / sqrt(2.0)));
      wgeglu = fmax(wgeglu, fabs(y[i] - r) / fmax(1.0, fabs(r)));
    }
    printf("vec %-8s silu %.3g gelu %.3g geglu %.3g (tol 1e-6 of max(1, |y|): A&S erf is 1.5e-7 absolute)\n",
           name, wsilu, wgelu, wgeglu);
    CHECKF(wsilu <= 1e-6 && wgelu <= 1e-6 && wgeglu <= 1e-6, "%s activations: %.3g %.3g %.3g", name, wsilu,
           wgelu, wgeglu);
    check_vec_edges(v, name);
    /* mean_var (GroupNorm / LayerNorm statistics): values far from 0 test the two passes; the
     * reference is a plain long double sum. Tolerance: double sums of <= 1003 terms, ~1e-16 * n. */
    static float xs[N];
    for (int i = 0; i < N; i++)
      xs[i] = (float)(1000.0 + sin(0.7 * i));
    for (int len = 5; len <= N; len += N - 5) { /* 5: the scalar tail only; 1003: 125 blocks + 3 */
      long double ls = 0, lv = 0;
      for (int i = 0; i < len; i++)
        ls += xs[i];
      long double lm = ls / len;
      for (int i = 0; i < len; i++)
        lv += (xs[i] - lm) * (xs[i] - lm);
      lv /= len;
      double m, var;
      v->mean_var(xs, len, &m, &var);
      double em = fabs(m - (double)lm) / (double)lm, ev = fabs(var - (double)lv) / (double)lv;
      CHECKF(em <= 1e-13 && ev <= 1e-10, "%s mean_var n=%d: mean err %.3g, var err %.3g", name, len, em, ev);
    }
    /* norm_affine with and without gamma / beta against the definition in double */
    double wna = 0;
    for (int mode = 0; mode < 4; mode++) {
      const float *g = mode & 1 ? h : NULL, *b = mode & 2 ? x + 4 : NULL;
      for (int i = 0; i < N; i++)
        h[i] = (float)(0.5 + 0.01 * i);
      v->norm_affine(y, xs, N - 4, 1000.0f, 1.5f, g, b);
      for (int i = 0; i < N - 4; i++) {
        double r = ((double)xs[i] - 1000.0) * 1.5 * (g ? g[i] : 1.0) + (b ? b[i] : 0.0);
        wna = fmax(wna, fabs(y[i] - r) / fmax(1.0, fabs(r)));
      }
    }
    printf("vec %-8s norm_affine %.3g (tol 1e-6 of max(1, |y|): fp32, 3 roundings)\n", name, wna);
    CHECKF(wna <= 1e-6, "%s norm_affine: %.3g", name, wna);
  }
}

int main(void) {
  check_vec_math();
  printf("cpu attention: %s (vector path %s, FR_CPU_ISA=%s)\n",
         fr_cpu_avx512() ? "AVX-512 register tiles" : "sgemm blocks", fr_cpu_vec_name(),
         getenv("FR_CPU_ISA") ? getenv("FR_CPU_ISA") : "");
  struct fr_ctx *ctx[NDEV] = {0};
  for (int i = 0; i < NDEV; i++) {
    struct fr_err e;
    enum fr_status st = fr_ctx_new(&(struct fr_ctx_opts){.device = DEVICES[i], .dtype = FR_F32}, &ctx[i], &e);
    if (st != FR_OK) {
      printf("%s: not available (%s), its rows are skipped\n", DEVICES[i], e.msg);
      CHECKF(i > 0, "the cpu backend must always be available: %s", e.msg);
#ifdef FLOWRUN_HAVE_CUDA
      if (strcmp(DEVICES[i], "cuda") == 0) { /* built with CUDA: the only acceptable failure is no device */
        CHECKF(st == FR_E_DEVICE && strstr(e.msg, "no CUDA device"), "cuda: status %d, message '%s'", st,
               e.msg);
        printf("cuda: skipped: no CUDA device\n");
      }
#endif
    }
  }
  if (ctx[0]) {
    run_rows(ctx);
    check_null_inputs(ctx[0]);
  }
  for (int i = 0; i < NDEV; i++)
    if (ctx[i])
      check_timestep_f32(ctx[i]);
#ifdef FLOWRUN_HAVE_CUDA
  for (int k = 0; ctx[0] && ctx[1] && k < 2; k++) { /* ctx[1]: cuda (F32) exists, so a device does */
    enum fr_dtype dt = k == 0 ? FR_F16 : FR_BF16;
    struct fr_ctx *lp = NULL;
    struct fr_err e;
    enum fr_status st = fr_ctx_new(&(struct fr_ctx_opts){.device = "cuda", .dtype = dt}, &lp, &e);
    CHECKF(st == FR_OK, "cuda %s context: %s", fr_dtype_name(dt), e.msg);
    if (st == FR_OK) {
      run_rows_lowp(ctx[0], lp, dt, -1, fr_dtype_name(dt));
      check_timestep_f32(lp);
    }
    fr_ctx_free(lp);
    /* The conv rows again with the tensor-core 3x3 conv wherever it fits: by default it only takes grids
     * that fill the device, which these small rows do not (docs/cuda.md, FLOWRUN_CUDA_CONV). */
    const char *was = getenv("FLOWRUN_CUDA_CONV");
    char *saved = was ? strdup(was) : NULL;
    setenv("FLOWRUN_CUDA_CONV", "tc", 1);
    lp = NULL;
    st = fr_ctx_new(&(struct fr_ctx_opts){.device = "cuda", .dtype = dt}, &lp, &e);
    CHECKF(st == FR_OK, "cuda %s context (FLOWRUN_CUDA_CONV=tc): %s", fr_dtype_name(dt), e.msg);
    if (st == FR_OK)
      run_rows_lowp(ctx[0], lp, dt, K_CONV2D, dt == FR_F16 ? "f16 tc" : "bf16 tc");
    fr_ctx_free(lp);
    if (saved)
      setenv("FLOWRUN_CUDA_CONV", saved, 1);
    else
      unsetenv("FLOWRUN_CUDA_CONV");
    free(saved);
  }
#endif
  check_ctx_new();
  for (int i = 0; i < NDEV; i++)
    fr_ctx_free(ctx[i]);
  return fr_test_done();
}
