/* Image-editing operations behind the mask, scaling, crop, composite and outpaint nodes, as plain
 * functions over tensors so they can be tested without an engine (nodes/image/mask.c, scale.c; the node
 * tables are in the same files). Every definition is ComfyUI's (comfy_extras/nodes_mask.py, nodes.py and
 * comfy/utils.py common_upscale / bislerp), named in each comment, so a workflow computes the same numbers.
 *
 * Tensors: IMAGE F32 [B, H, W, C]; MASK F32 [B, H, W]; latent samples F32 [B, C, h, w]; all on the CPU.
 * Every function returns new tensors in *out (fr_tensor_free) and leaves its inputs alone; on failure *out
 * is NULL and err says what was wrong. */
#ifndef FR_NODES_IMAGE_EDIT_H
#define FR_NODES_IMAGE_EDIT_H

#include <stdbool.h>

#include "core/node.h"
#include "core/status.h"
#include "core/tensor.h"

/* ---- masks (ComfyUI nodes_mask.py) ---- */

/* Checks that t is an F32 CPU mask [B, H, W]; what names it in the message. */
enum fr_status fr_mask_check(const struct fr_tensor *t, const char *what, struct fr_err *err);

/* LoadImageMask: one channel of a PNG as a mask [1, H, W]: channel 0..3 = alpha, red, green, blue. The
 * file is taken as RGBA (grey replicated, a missing alpha is opaque); alpha gives 1 - alpha, a colour
 * channel its value. */
enum fr_status fr_mask_load_png(const char *path, int channel, struct fr_tensor **out, struct fr_err *err);
/* ImageToMask: channel 0..3 = red, green, blue, alpha of image [B, H, W, C] -> [B, H, W]. A channel the
 * image does not have is an error naming it. */
enum fr_status fr_image_to_mask(const struct fr_tensor *img, int channel, struct fr_tensor **out,
                                struct fr_err *err);
/* MaskToImage: [B, H, W] -> [B, H, W, 3], the mask in each channel. */
enum fr_status fr_mask_to_image(const struct fr_tensor *mask, struct fr_tensor **out, struct fr_err *err);
/* InvertMask: 1 - mask. */
enum fr_status fr_mask_invert(const struct fr_tensor *mask, struct fr_tensor **out, struct fr_err *err);
/* GrowMask: |expand| passes of scipy.ndimage grey_dilation (expand > 0) or grey_erosion (expand < 0) with
 * the 3x3 cross footprint (tapered_corners) or the 3x3 square, borders reflected (scipy's default, which
 * for a 3x3 footprint repeats the edge pixel). */
enum fr_status fr_mask_grow(const struct fr_tensor *mask, int expand, bool tapered_corners,
                            struct fr_tensor **out, struct fr_err *err);
/* FeatherMask: the first `left` columns multiplied by (x + 1) / left, the last `right` by the same from
 * the right edge, likewise rows for top and bottom (each clamped to the mask's size). */
enum fr_status fr_mask_feather(const struct fr_tensor *mask, int left, int top, int right, int bottom,
                               struct fr_tensor **out, struct fr_err *err);
/* SolidMask: [1, height, width] filled with value. */
enum fr_status fr_mask_solid(double value, int width, int height, struct fr_tensor **out, struct fr_err *err);
/* ThresholdMask: 1 where mask > value, else 0. */
enum fr_status fr_mask_threshold(const struct fr_tensor *mask, double value, struct fr_tensor **out,
                                 struct fr_err *err);

enum fr_mask_op { FR_MASK_MULTIPLY, FR_MASK_ADD, FR_MASK_SUBTRACT, FR_MASK_AND, FR_MASK_OR, FR_MASK_XOR };
/* MaskComposite: source placed with its top-left corner at (x, y) of destination; where they overlap
 * destination = destination op source (and/or/xor on values rounded half to even, as torch.round), the
 * result clamped to [0, 1]; outside the overlap destination is kept. A batch of 1 on either side is
 * repeated to match the other. */
enum fr_status fr_mask_composite(const struct fr_tensor *dst, const struct fr_tensor *src, int x, int y,
                                 enum fr_mask_op op, struct fr_tensor **out, struct fr_err *err);

/* ---- scaling (ComfyUI comfy/utils.py common_upscale) ---- */

enum fr_upscale_method {
  FR_UP_NEAREST_EXACT, /* torch interpolate "nearest-exact": source floor((i + 0.5) in / out) */
  FR_UP_BILINEAR,      /* "bilinear", align_corners False: source (i + 0.5) in / out - 0.5, clamped at 0 */
  FR_UP_AREA,          /* "area": adaptive average pooling */
  FR_UP_BICUBIC,       /* "bicubic", align_corners False, Keys a = -0.75, borders repeated */
  FR_UP_BISLERP,       /* ComfyUI's bislerp: slerp of channel vectors, along x then along y */
  FR_UP_LANCZOS,       /* ComfyUI's lanczos: PIL's LANCZOS resize of the image quantised to 8 bits */
};
/* The ComfyUI names of the methods, in enum order, NULL-terminated ("nearest-exact", "bilinear", "area",
 * "bicubic", "bislerp"): LatentUpscale's choices. */
extern const char *const fr_upscale_method_names[];
/* ImageScale's choices: "nearest-exact", "bilinear", "area", "bicubic", "lanczos" (lanczos is
 * FR_UP_LANCZOS, the others their index). */
extern const char *const fr_image_scale_method_names[];

/* common_upscale(samples, width, height, method, crop): x [B, C, H, W] -> [B, C, height, width]; crop_center
 * first narrows x to the centred region with the target's aspect ratio (offsets rounded half to even, as
 * Python's round). */
enum fr_status fr_common_upscale(const struct fr_tensor *x, int width, int height, enum fr_upscale_method m,
                                 bool crop_center, struct fr_tensor **out, struct fr_err *err);

/* ImageScale: width/height 0 follows the other side keeping the aspect ratio (max 1, rounded half to
 * even); both 0 returns a copy. Bislerp is for latents only; lanczos for images only: as ComfyUI, each
 * image is quantised to 8 bits (255 x, clipped, truncated), resized by PIL's LANCZOS (support 3, widened
 * by the scale when shrinking; 22-bit fixed-point coefficients; a horizontal then a vertical pass, each
 * rounded and clipped to 8 bits; an unchanged axis skipped) and divided by 255 (an alpha channel is
 * filtered like the colours: PIL premultiplies RGBA first). Results are clamped to [0, 1] (IMAGE values;
 * ComfyUI leaves bicubic's overshoot for SaveImage to clip). */
enum fr_status fr_image_scale(const struct fr_tensor *img, int width, int height, enum fr_upscale_method m,
                              bool crop_center, struct fr_tensor **out, struct fr_err *err);
/* ImageScaleBy: to round(W scale_by) x round(H scale_by) (half to even). */
enum fr_status fr_image_scale_by(const struct fr_tensor *img, double scale_by, enum fr_upscale_method m,
                                 struct fr_tensor **out, struct fr_err *err);
/* LatentUpscale: width/height are pixels: both 0 copies; one 0 follows the other (aspect kept, rounded
 * half to even); each side at least 64; then the latent size is width // 8 x height // 8. */
enum fr_status fr_latent_upscale(const struct fr_tensor *samples, int width, int height,
                                 enum fr_upscale_method m, bool crop_center, struct fr_tensor **out,
                                 struct fr_err *err);
/* LatentUpscaleBy: to round(w scale_by) x round(h scale_by) latent pixels (half to even). */
enum fr_status fr_latent_upscale_by(const struct fr_tensor *samples, double scale_by,
                                    enum fr_upscale_method m, struct fr_tensor **out, struct fr_err *err);

/* ---- crop, composite, outpaint (ComfyUI nodes.py) ---- */

/* ImageCrop: x = min(x, W - 1), y = min(y, H - 1), then rows y..y+height and columns x..x+width, clipped to
 * the image. */
enum fr_status fr_image_crop(const struct fr_tensor *img, int width, int height, int x, int y,
                             struct fr_tensor **out, struct fr_err *err);
/* LatentCrop: pixel values // 8 to latent units; x and y at most w - 8 and h - 8; then rows y..y+height/8,
 * columns x..x+width/8, clipped to the latent. */
enum fr_status fr_latent_crop(const struct fr_tensor *samples, int width, int height, int x, int y,
                              struct fr_tensor **out, struct fr_err *err);
/* LatentComposite: samples_from pasted into samples_to at (x // 8, y // 8) (clipped), with a linear
 * feather of feather // 8 latent pixels on each side of the pasted region that does not touch the border
 * of samples_to (ComfyUI's mask: row t from an inner edge gets (t + 1) / feather, corners multiply). A
 * batch of 1 in samples_from is repeated. */
enum fr_status fr_latent_composite(const struct fr_tensor *to, const struct fr_tensor *from, int x, int y,
                                   int feather, struct fr_tensor **out, struct fr_err *err);
/* ImagePadForOutpaint: the image placed in a canvas grown by left/top/right/bottom, the new area grey
 * (0.5); mask [1, H', W'] is 1 on the new area and, inside the old image when 0 < 2 feathering < H and
 * < W, ((feathering - d) / feathering)^2 where d (< feathering) is the distance to the nearest padded side
 * (ComfyUI's formula), else 0. */
enum fr_status fr_image_pad_for_outpaint(const struct fr_tensor *img, int left, int top, int right,
                                         int bottom, int feathering, struct fr_tensor **image,
                                         struct fr_tensor **mask, struct fr_err *err);

/* ---- node specs ---- */
extern const struct fr_node_spec fr_node_load_image_mask, fr_node_image_to_mask, fr_node_mask_to_image,
    fr_node_invert_mask, fr_node_grow_mask, fr_node_feather_mask, fr_node_solid_mask, fr_node_threshold_mask,
    fr_node_mask_composite;
extern const struct fr_node_spec fr_node_image_scale, fr_node_image_scale_by, fr_node_latent_upscale,
    fr_node_latent_upscale_by, fr_node_image_crop, fr_node_latent_crop, fr_node_latent_composite,
    fr_node_image_pad_for_outpaint;

#endif
