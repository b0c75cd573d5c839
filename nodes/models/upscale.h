/* Image upscale models (super-resolution): the ESRGAN family as ComfyUI runs them through spandrel.
 *
 *  - RRDBNet (ESRGAN, Real-ESRGAN x4plus / x2plus, BSRGAN ...): conv_first, nb residual-in-residual dense
 *    blocks (3 dense blocks of 5 convs, leaky ReLU 0.2, residuals scaled by 0.2), conv_body, then per 2x
 *    step a nearest 2x upsample + conv + leaky ReLU, conv_hr + leaky ReLU, conv_last. Real-ESRGAN's x2 (and
 *    x1) models first fold the image with pixel_unshuffle (2 or 4), so conv_first takes 4x (16x) channels.
 *    Both key layouts load: the new one (conv_first, body.N.rdb1.conv1, conv_body, conv_up1, conv_hr,
 *    conv_last) and the old ESRGAN one (model.0, model.1.sub.N.RDB1.conv1.0, model.1.sub.<nb>, model.3,
 *    model.6, model.8, model.10); a "params_ema." / "params." / "module." prefix is read past.
 *  - SRVGGNetCompact (Real-ESRGAN's realesr-general / animevideo "compact"): body.0 conv, body.1 PReLU,
 *    (conv, PReLU) x num_conv, a last conv to out * scale^2 channels, pixel_shuffle(scale), plus the input
 *    upsampled by nearest-neighbour.
 * Architecture, channel counts, block count and scale are read from the tensor shapes, never the file name.
 * Only safetensors files load: a PyTorch pickle (.pth, .pt, .ckpt, or a file starting as a zip/pickle) is
 * refused with the one-line command that converts it (pickles can run code when loaded).
 *
 * Everything runs through the ops API (conv2d, leaky_relu, upsample_nearest2x, permute ...), so the same
 * code runs on the CPU and on CUDA. */
#ifndef FR_MODELS_UPSCALE_H
#define FR_MODELS_UPSCALE_H

#include "core/status.h"
#include "core/tensor.h"
#include "kernels/ops.h"

/* The socket type of UpscaleModelLoader's output (ComfyUI's name). */
#define FR_T_UPSCALE_MODEL "UPSCALE_MODEL"

enum fr_upscaler_arch { FR_UPSCALER_RRDB, FR_UPSCALER_SRVGG };

/* FR_E_UNSUPPORTED with the conversion command when path names a PyTorch pickle by its extension (.pth,
 * .pt, .ckpt, .bin), else FR_OK: a check that opens nothing, for the loader node. */
enum fr_status fr_upscaler_refuse_pickle(const char *path, struct fr_err *err);

struct fr_upscaler; /* opaque: the weights on context c */

/* Loads path onto context c (weights converted to its compute dtype). FR_E_FORMAT naming the file and
 * the tensor for a file that is not one of the supported architectures or has a tensor of the wrong
 * shape; FR_E_UNSUPPORTED for a pickle. */
enum fr_status fr_upscaler_load(struct fr_ctx *c, const char *path, struct fr_upscaler **out,
                                struct fr_err *err);
void fr_upscaler_free(struct fr_upscaler *m); /* NULL is fine */
enum fr_upscaler_arch fr_upscaler_arch(const struct fr_upscaler *m);
int fr_upscaler_scale(const struct fr_upscaler *m);    /* 1, 2, 4 or 8 */
int fr_upscaler_channels(const struct fr_upscaler *m); /* input (= output) channels, 3 for RGB */
/* A one-line description for messages and logs: "RRDBNet x4, 23 blocks, 64 features". */
const char *fr_upscaler_describe(const struct fr_upscaler *m);

/* The network on a context tensor x [1, C, h, w] -> [1, C, h s, w s] (NULL with the context's sticky
 * error on failure). */
struct fr_tensor *fr_upscaler_forward(struct fr_ctx *c, const struct fr_upscaler *m,
                                      const struct fr_tensor *x);

/* ImageUpscaleWithModel on a host IMAGE [B, H, W, C] (the first `channels` channels are used): each image
 * is cut into tiles of at most tile x tile pixels overlapping by `overlap` (ComfyUI's tiled_scale
 * positions: every tile - overlap pixels, the last ones moved back to end at the border; an image that fits
 * one tile runs whole), each tile is upscaled, and the results are blended: every tile's output is
 * weighted by a ramp (t + 1) / f at its t-th pixel from each edge, f = overlap x scale, and the sum is
 * divided by the sum of weights (a pixel that one tile covers gets that tile's value exactly). The result
 * [B, H s, W s, channels] is clamped to [0, 1]. progress (may be NULL) is called after every tile with
 * (done, total); a non-OK return stops the run with that status. Memory: one tile's activations on c plus
 * the [H s, W s] output and weight sums on the host. FR_E_NOMEM from the device is returned as is (the
 * caller may retry with smaller tiles; the context is cleared for that). */
typedef enum fr_status (*fr_upscale_progress_fn)(void *user, int done, int total);
enum fr_status fr_upscaler_run_tiled(struct fr_ctx *c, const struct fr_upscaler *m,
                                     const struct fr_tensor *img, int tile, int overlap,
                                     fr_upscale_progress_fn progress, void *user, struct fr_tensor **out,
                                     struct fr_err *err);

#endif
