/* Image operations behind the image nodes, as plain functions over tensors so they can be tested (and
 * reused) without an engine. The node run functions (nodes/image/nodes.c) are thin wrappers.
 *
 * Images are IMAGE tensors: F32 [B, H, W, C], C = 3 (RGB) or 4 (RGBA) (1 is accepted where it makes
 * sense), values in [0, 1], CPU. Masks are F32 [B, H, W]. Every function returns a new tensor in *out
 * (fr_tensor_free) and leaves its inputs alone; on failure *out is NULL and err names what was wrong. */
#ifndef FR_NODES_IMAGE_H
#define FR_NODES_IMAGE_H

#include <stdbool.h>

#include "core/node.h"
#include "core/png.h"
#include "core/status.h"
#include "core/tensor.h"

/* Checks that t is an F32 CPU [B, H, W, C] tensor with C in 1..4; what names it in the message. */
enum fr_status fr_image_check(const struct fr_tensor *t, const char *what, struct fr_err *err);

/* ---- generators ---- */

/* Parses "#rrggbb" or "#rgb" (case-insensitive) into rgb in [0, 1]. */
enum fr_status fr_image_parse_color(const char *s, float rgb[3], struct fr_err *err);
/* A [batch, height, width, 3] image of one colour. */
enum fr_status fr_image_solid(int width, int height, int batch, const float rgb[3], struct fr_tensor **out,
                              struct fr_err *err);

enum fr_pattern { FR_PATTERN_SHAPES, FR_PATTERN_RADIAL, FR_PATTERN_CHECKER };
/* A synthetic [batch, height, width, 3] image with structure, for demos and tests that need no input file:
 * SHAPES: a filled disc, square and triangle on a diagonal gradient; RADIAL: a radial gradient, bright in
 * the middle; CHECKER: an 8x8 black and white checkerboard. */
enum fr_status fr_image_pattern(enum fr_pattern p, int width, int height, int batch, struct fr_tensor **out,
                                struct fr_err *err);

/* ---- filters ---- */

/* Gaussian blur with a (2 radius + 1)-tap separable kernel, edges clamped. As in ComfyUI's ImageBlur, the
 * kernel's taps sit at -1 … 1 (the radius maps to 1), so sigma is measured in units of the radius. radius 0
 * returns a copy. Every channel, alpha included, is blurred. */
enum fr_status fr_image_blur(const struct fr_tensor *img, int radius, double sigma, struct fr_tensor **out,
                             struct fr_err *err);

enum fr_resize_method { FR_RESIZE_NEAREST, FR_RESIZE_BILINEAR, FR_RESIZE_BICUBIC, FR_RESIZE_AREA };
/* Resizes to width x height (PyTorch's interpolate conventions: nearest-exact, bilinear and bicubic
 * (a = -0.75) with half-pixel centres and clamped borders, area = adaptive average pooling). A 0 width or
 * height follows the other one keeping the aspect ratio; both 0 is an error. crop_center first cuts the
 * largest centred region with the target's aspect ratio (ComfyUI's crop "center"). Results are clamped to
 * [0, 1]. */
enum fr_status fr_image_resize(const struct fr_tensor *img, int width, int height, enum fr_resize_method m,
                               bool crop_center, struct fr_tensor **out, struct fr_err *err);

/* Canny edge map, following kornia.filters.canny as ComfyUI's Canny node uses it: grey (0.299, 0.587,
 * 0.114), 5-tap Gaussian with sigma 1 (reflected borders), unnormalised Sobel gradient (a blurred unit step
 * reaches about 2.6), non-maximum suppression along the gradient direction rounded to 45 degrees, then
 * pixels above high are edges and pixels above low are edges when 8-connected to an edge (hysteresis).
 * Output [B, H, W, 3]: 1 on edges, 0 elsewhere. Needs 0 <= low <= high. */
enum fr_status fr_image_canny(const struct fr_tensor *img, double low, double high, struct fr_tensor **out,
                              struct fr_err *err);

enum fr_blend_mode {
  FR_BLEND_NORMAL,
  FR_BLEND_MULTIPLY,
  FR_BLEND_SCREEN,
  FR_BLEND_OVERLAY,
  FR_BLEND_SOFT_LIGHT,
  FR_BLEND_DIFFERENCE
};
/* out = a (1 - factor) + mode(a, b) factor, clamped to [0, 1] (ComfyUI's ImageBlend formulas; difference is
 * |a - b|). a and b must have the same height, width and channels; a batch of 1 is repeated to match the
 * other. */
enum fr_status fr_image_blend(const struct fr_tensor *a, const struct fr_tensor *b, double factor,
                              enum fr_blend_mode mode, struct fr_tensor **out, struct fr_err *err);
/* 1 - x on the colour channels; alpha is kept. */
enum fr_status fr_image_invert(const struct fr_tensor *img, struct fr_tensor **out, struct fr_err *err);

/* ---- files ---- */

/* Reads a PNG as LoadImage does: image [1, H, W, 3] RGB (grey replicated) and mask [1, H, W] = 1 - alpha
 * (all zero when the file has no alpha), as ComfyUI. 8- and 16-bit files. */
enum fr_status fr_image_load_png(const char *path, struct fr_tensor **image, struct fr_tensor **mask,
                                 struct fr_err *err);

/* Writes each image of the batch to dir/<prefix>_<NNNNN>.png, numbering on from the highest number already
 * there for that prefix and never replacing an existing file: each PNG is written complete under a hidden
 * temporary name and then linked to the first free number (link fails on an existing name, so two
 * processes saving at once get different numbers, and a process killed mid-write leaves no empty or partial
 * numbered file). Creates dir if missing. The prefix must be a plain file name part (no '/', not starting
 * with '.'). On success *files is a new string (fr_free) with the written paths, one per line. On failure
 * the files of this call already written stay (they are complete). */
enum fr_status fr_image_save_png(const char *dir, const char *prefix, const struct fr_tensor *images,
                                 const struct fr_png_text *texts, int n_texts, char **files,
                                 struct fr_err *err);

/* ---- node specs (nodes/image/nodes.c, nodes/primitives.c) ---- */
extern const struct fr_node_spec fr_node_load_image, fr_node_save_image, fr_node_image_resize,
    fr_node_image_blur, fr_node_canny, fr_node_image_blend, fr_node_solid_image, fr_node_test_pattern,
    fr_node_image_invert;
extern const struct fr_node_spec fr_node_int, fr_node_float, fr_node_string, fr_node_boolean, fr_node_seed;

#endif
