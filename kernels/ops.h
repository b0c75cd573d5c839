/* The ops API: every tensor operation the models use, behind one backend interface.
 *
 * Models are plain C over these functions (llm.c style). Each op takes an execution context, reads
 * its inputs and returns a NEW tensor that the caller frees with fr_tensor_free; inputs are never
 * modified unless the name ends in _inplace. Errors are sticky in the context: an op that fails
 * (shape mismatch, out of memory, device error) records the first error in the context and returns
 * NULL, and every op given a NULL input returns NULL at once. Once a context has failed, every op
 * (and fr_ctx_weight/upload/download) returns NULL without computing until fr_ctx_clear(), so a
 * failed UNet block costs nothing further. Model code therefore chains ops and checks
 * fr_ctx_status() once at the end of a block:
 *
 *   struct fr_tensor *h = fr_group_norm(c, x, 32, gn_w, gn_b, 1e-5f, true);  // [B, C, H, W]
 *   struct fr_tensor *y = fr_conv2d(c, h, conv_w, conv_b, 1, 1);             // [B, O, H, W]
 *   fr_tensor_free(h);
 *   if (fr_ctx_failed(c)) ...
 *
 * All shapes are outermost first. Floating-point tensors handed to ops are in the context's compute
 * dtype on the context's device: F32 on the CPU backend. Weights are prepared once with
 * fr_ctx_weight() (converted / uploaded), inputs moved with fr_ctx_upload(), results brought back
 * with fr_ctx_download().
 *
 * One op = its declaration here + a CPU reference (kernels/cpu/) + a CUDA kernel (kernels/cuda/) +
 * one row in tests/unit/test_ops.c. */
#ifndef FR_OPS_H
#define FR_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "core/tensor.h"

struct fr_backend; /* kernels/backend.h */

struct fr_ctx_opts {
  const char *device;  /* "cpu" (default) or "cuda" */
  enum fr_dtype dtype; /* compute dtype for activations and matmul weights; F32 on the CPU */
  int threads;         /* CPU worker threads; 0: all cores */
  /* Test hook: the most bytes of tensors (op outputs, uploads, weight copies) the context may hold at
   * once; an allocation past it fails as a full device does (FR_E_NOMEM naming the op and shape), so
   * out-of-memory fallbacks (the VAE's tiled decode) can be tested on the CPU. 0: no limit. The CPU
   * backend implements it and then also counts fr_ctx_mem_stats; a GPU backend is limited by its real
   * memory and ignores it. */
  size_t mem_limit;
};

struct fr_ctx;

/* Creates a context on the requested device. CUDA requested but not built in or not available is
 * FR_E_DEVICE with a message saying which. */
enum fr_status fr_ctx_new(const struct fr_ctx_opts *opts, struct fr_ctx **out, struct fr_err *err);
void fr_ctx_free(struct fr_ctx *c);

/* Sticky error state. fr_ctx_status copies the first error's message into err (if given) and
 * returns its status; FR_OK if no op failed. fr_ctx_clear resets it. */
bool fr_ctx_failed(const struct fr_ctx *c);
enum fr_status fr_ctx_status(const struct fr_ctx *c, struct fr_err *err);
void fr_ctx_clear(struct fr_ctx *c);
/* Records an error from model code (e.g. a bad shape found before any op ran); returns rc. */
enum fr_status fr_ctx_fail(struct fr_ctx *c, enum fr_status rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *fr_ctx_device_name(const struct fr_ctx *c);
enum fr_dtype fr_ctx_dtype(const struct fr_ctx *c);

/* Waits until every op queued on the context has finished (a device backend queues work
 * asynchronously; the CPU computes in the call, so there it returns at once). For timing: a clock read
 * after fr_ctx_sync covers all the work queued before it. A device failure found while waiting is
 * FR_E_DEVICE (also recorded as the context's sticky error). */
enum fr_status fr_ctx_sync(struct fr_ctx *c, struct fr_err *err);

/* Device memory held by the context, in bytes: in_use now and peak since the context was made (or since
 * the last reset_peak), both counting its tensors and fixed buffers (CUDA: the cuBLASLt workspace);
 * cached = freed blocks the pool keeps for reuse (not in in_use). FR_E_UNSUPPORTED where the backend
 * does not count. The CPU counts with a mem_limit (every tensor's bytes, as asked for); without one it
 * reports its size-class pool: in_use = live activations (op outputs, uploads; weights are not pooled)
 * of 64 KiB or more (rounded to their size class), cached = freed blocks kept for reuse, peak = the most
 * both held at once (kernels/cpu/backend.c). */
struct fr_ctx_mem {
  size_t in_use, peak, cached;
};
enum fr_status fr_ctx_mem_stats(struct fr_ctx *c, bool reset_peak, struct fr_ctx_mem *out,
                                struct fr_err *err);
/* Bytes the context keeps aside for reuse without using them now: the CUDA pool's cached blocks, the CPU
 * backend's scratch buffer (im2col, attention scores). fr_ctx_trim gives them back (cudaFree, free) and
 * returns how many bytes that was; the next op that needs them allocates again. Out-of-memory recovery
 * (core/node.h) trims every context so a retried node, and the next run, start from an empty pool. */
size_t fr_ctx_reserve_bytes(struct fr_ctx *c);
size_t fr_ctx_trim(struct fr_ctx *c);

/* ---- recorded replays (CUDA graphs) ----
 * On a device that queues its work (cuda), the ops issued between fr_ctx_record_begin and
 * fr_ctx_record_end are recorded instead of run: nothing is computed until fr_recording_replay, which runs
 * the recorded ops again, on the same tensors, with one launch. Overwrite a recording's inputs in place
 * with fr_ctx_write before a replay and read its outputs (tensors made while recording, kept by the
 * caller) after it. Every tensor made while recording keeps its device memory reserved for the graph,
 * even once freed, until fr_recording_free. While recording, nothing may be downloaded or waited for (the
 * recording then fails), and host data uploaded inside it is read once, when recording. A failed op or
 * recording is reported by fr_ctx_record_end (and stays the context's sticky error: fr_ctx_clear it to
 * go on eagerly). FR_E_UNSUPPORTED where the device cannot record (the CPU, or FLOWRUN_CUDA_GRAPHS=0):
 * callers then simply run the ops. Free graphs before their context. */
struct fr_recording;
/* Whether fr_ctx_record_begin can succeed here at all (the device records and FLOWRUN_CUDA_GRAPHS is not
 * 0), so callers skip preparing a recording that cannot happen. */
bool fr_ctx_can_record(const struct fr_ctx *c);
enum fr_status fr_ctx_record_begin(struct fr_ctx *c, struct fr_err *err);
enum fr_status fr_ctx_record_end(struct fr_ctx *c, struct fr_recording **out, struct fr_err *err);
enum fr_status fr_recording_replay(struct fr_recording *g, struct fr_err *err);
void fr_recording_free(struct fr_recording *g); /* NULL is fine */
/* Overwrites context tensor dst with host tensor src's values (same shape, any float dtype, converted to
 * the compute dtype), in order with the ops queued before and after it. */
enum fr_status fr_ctx_write(struct fr_ctx *c, struct fr_tensor *dst, const struct fr_tensor *src,
                            struct fr_err *err);

/* Prepares a weight for this context from a host tensor of any float dtype (F32/F16/BF16, e.g. a view
 * into an mmap'd file): converted to the compute dtype, uploaded when on a device. The result is
 * owned by the caller. */
struct fr_tensor *fr_ctx_weight(struct fr_ctx *c, const struct fr_tensor *host);
/* As fr_ctx_weight, but when host already is what the context computes with (F32 on the CPU, suitably
 * aligned) the result BORROWS host's data instead of copying it: no second fp32 copy of an F32
 * checkpoint. The caller keeps host's data (the mmap'd file) alive and unchanged for as long as the
 * result is used. Otherwise (conversion or upload needed) it is exactly fr_ctx_weight. */
struct fr_tensor *fr_ctx_weight_view(struct fr_ctx *c, const struct fr_tensor *host);
/* Host F32 (or I32/I64 ids) tensor -> context tensor; context tensor -> new host F32 tensor. */
struct fr_tensor *fr_ctx_upload(struct fr_ctx *c, const struct fr_tensor *host);
struct fr_tensor *fr_ctx_download(struct fr_ctx *c, const struct fr_tensor *t);

/* ---- linear algebra ---- */
/* y = x w^T + b.  x [..., K], w [N, K], b [N] or NULL -> [..., N] */
struct fr_tensor *fr_linear(struct fr_ctx *c, const struct fr_tensor *x, const struct fr_tensor *w,
                            const struct fr_tensor *b);
/* Batched matmul. a [..., M, K], b [..., K, N] with equal leading dims -> [..., M, N] */
struct fr_tensor *fr_matmul(struct fr_ctx *c, const struct fr_tensor *a, const struct fr_tensor *b);
/* 2-D convolution, groups = 1, symmetric zero padding.
 * x [B, C, H, W], w [O, C, kh, kw], b [O] or NULL -> [B, O, (H+2p-kh)/s+1, (W+2p-kw)/s+1] */
struct fr_tensor *fr_conv2d(struct fr_ctx *c, const struct fr_tensor *x, const struct fr_tensor *w,
                            const struct fr_tensor *b, int stride, int pad);
/* Scaled dot-product attention with fp32 softmax, scale 1/sqrt(D), heads split from the last dim.
 * q [B, Tq, H*D], k [B, Tk, H*D], v [B, Tk, H*D] -> [B, Tq, H*D]. causal: query i sees keys <= i. */
struct fr_tensor *fr_attention(struct fr_ctx *c, const struct fr_tensor *q, const struct fr_tensor *k,
                               const struct fr_tensor *v, int heads, bool causal);

/* ---- normalisation ---- */
/* GroupNorm over [B, C, ...] with G groups, per-channel affine, optional SiLU fused after. */
struct fr_tensor *fr_group_norm(struct fr_ctx *c, const struct fr_tensor *x, int groups,
                                const struct fr_tensor *gamma, const struct fr_tensor *beta, float eps,
                                bool silu);
/* LayerNorm over the last dim. x [..., C], gamma [C], beta [C] (either may be NULL) -> [..., C] */
struct fr_tensor *fr_layer_norm(struct fr_ctx *c, const struct fr_tensor *x, const struct fr_tensor *gamma,
                                const struct fr_tensor *beta, float eps);
/* Softmax over the last dim. */
struct fr_tensor *fr_softmax(struct fr_ctx *c, const struct fr_tensor *x);

/* ---- activations (elementwise, same shape) ---- */
struct fr_tensor *fr_silu(struct fr_ctx *c, const struct fr_tensor *x);
struct fr_tensor *fr_gelu(struct fr_ctx *c, const struct fr_tensor *x);       /* exact, erf */
struct fr_tensor *fr_gelu_tanh(struct fr_ctx *c, const struct fr_tensor *x);  /* tanh approximation */
struct fr_tensor *fr_quick_gelu(struct fr_ctx *c, const struct fr_tensor *x); /* x * sigmoid(1.702 x) */
/* torch's leaky_relu: x > 0 ? x : x * slope (slope 0: ReLU). ESRGAN uses 0.2. */
struct fr_tensor *fr_leaky_relu(struct fr_ctx *c, const struct fr_tensor *x, float slope);
/* GEGLU: x [..., 2N] -> [..., N] = x[..., :N] * gelu(x[..., N:]) (diffusers' GEGLU, erf gelu). */
struct fr_tensor *fr_geglu(struct fr_ctx *c, const struct fr_tensor *x);

/* ---- elementwise arithmetic with NumPy broadcasting (shapes aligned from the right) ---- */
struct fr_tensor *fr_add(struct fr_ctx *c, const struct fr_tensor *a, const struct fr_tensor *b);
struct fr_tensor *fr_sub(struct fr_ctx *c, const struct fr_tensor *a, const struct fr_tensor *b);
struct fr_tensor *fr_mul(struct fr_ctx *c, const struct fr_tensor *a, const struct fr_tensor *b);
/* a += b in place (b broadcast to a's shape); returns a, or NULL on error. */
struct fr_tensor *fr_add_inplace(struct fr_ctx *c, struct fr_tensor *a, const struct fr_tensor *b);
/* x * scale + shift */
struct fr_tensor *fr_affine(struct fr_ctx *c, const struct fr_tensor *x, float scale, float shift);

/* ---- shape and data movement ---- */
struct fr_tensor *fr_copy(struct fr_ctx *c, const struct fr_tensor *x);
/* Concatenation of n tensors along dim (other dims equal). */
struct fr_tensor *fr_concat(struct fr_ctx *c, const struct fr_tensor *const *xs, int n, int dim);
/* x[..., start:start+len, ...] along dim. */
struct fr_tensor *fr_slice(struct fr_ctx *c, const struct fr_tensor *x, int dim, int64_t start, int64_t len);
/* Generic permutation: out.shape[i] = x.shape[perm[i]]. [B,C,H,W] -> [B,H*W,C] is perm {0,2,3,1} then
 * fr_tensor_reshape. */
struct fr_tensor *fr_permute(struct fr_ctx *c, const struct fr_tensor *x, const int *perm);
/* Zero (or value) padding of the last two dims: [B, C, H, W] -> [B, C, H+top+bottom, W+left+right]. */
struct fr_tensor *fr_pad2d(struct fr_ctx *c, const struct fr_tensor *x, int left, int right, int top,
                           int bottom, float value);
/* Nearest-neighbour 2x upsampling. [B, C, H, W] -> [B, C, 2H, 2W] */
struct fr_tensor *fr_upsample_nearest2x(struct fr_ctx *c, const struct fr_tensor *x);
/* Embedding lookup. ids [...] (I32 or I64) , table [V, D] -> [..., D]; an id out of range is an error. */
struct fr_tensor *fr_embedding(struct fr_ctx *c, const struct fr_tensor *ids, const struct fr_tensor *table);
/* Row gather: x [B, T, D], index[b] in [0, T) -> [B, D] (CLIP's pooled output at the EOS token). */
struct fr_tensor *fr_gather_rows(struct fr_ctx *c, const struct fr_tensor *x, const int64_t *index);
/* Sinusoidal timestep embedding as diffusers' get_timestep_embedding:
 * t [N] -> [N, dim]; exponent = -ln(max_period) * i / (half - downscale_freq_shift);
 * emb = [sin, cos] (or [cos, sin] when flip_sin_to_cos). SD: flip=true, shift=0 (diffusers' UNet uses
 * freq_shift 0 with flip_sin_to_cos true), max_period 10000. */
struct fr_tensor *fr_timestep_embedding(struct fr_ctx *c, const struct fr_tensor *t, int dim,
                                        bool flip_sin_to_cos, float downscale_freq_shift, float max_period);
/* The same embedding from fp32 HOST values t[0..n) -> context tensor [n, dim]: the sinusoid is computed
 * on the host in fp32 and the result uploaded (rounded once to the compute dtype), as diffusers embeds
 * fp32 timesteps and casts afterwards. Use it where t must not be rounded first: in BF16 a context
 * tensor holding t = 999 is already 1000. Bit-identical to fr_timestep_embedding on the CPU. */
struct fr_tensor *fr_timestep_embedding_f32(struct fr_ctx *c, const float *t, int64_t n, int dim,
                                            bool flip_sin_to_cos, float downscale_freq_shift,
                                            float max_period);
/* The sinusoidal timestep embedding in fp32 on host memory: t[n] -> out[n, dim] (the formula of
 * fr_timestep_embedding). The one definition shared by the CPU backend's op, fr_timestep_embedding_f32 and
 * the sampler's recorded steps (which write it into a kept tensor), so all give the same bits; a device
 * backend's kernel follows it step by step. */
void fr_timestep_sinusoid(const float *t, int64_t n, int64_t dim, bool flip_sin_to_cos,
                          float downscale_freq_shift, float max_period, float *out);

#endif
