/* The image node types: spec tables plus thin run functions over nodes/image/image.h. The run functions
 * read inputs, call the image function, and turn its error into the node's failure message. */
#include <string.h>

#include "core/alloc.h"
#include "nodes/image/image.h"

/* The IMAGE tensor of input name, or a failure naming the input. */
static enum fr_status fr__in_image(struct fr_node_ctx *nc, const char *name, const struct fr_tensor **t) {
  const struct fr_value *v = fr_in(nc, name);
  *t = v ? fr_value_get_tensor(v, "image") : NULL;
  if (!*t)
    return fr_node_fail(nc, FR_E_INVALID, "input '%s': no IMAGE connected", name);
  struct fr_err err;
  if (fr_image_check(*t, name, &err) != FR_OK)
    return fr_node_fail(nc, FR_E_SHAPE, "input %s", err.msg);
  return FR_OK;
}

/* Index of the ENUM input's value among choices (validation guarantees it is one of them). */
static int fr__in_choice(struct fr_node_ctx *nc, const char *name, const char *const *choices) {
  const char *s = fr_in_str(nc, name);
  for (int i = 0; s && choices[i]; i++)
    if (strcmp(s, choices[i]) == 0)
      return i;
  return -1;
}

/* Sets output idx to an IMAGE holding t (taken). */
static enum fr_status fr__out_image(struct fr_node_ctx *nc, int idx, struct fr_tensor *t) {
  struct fr_value *v = fr_value_tensor(FR_T_IMAGE, "image", t);
  if (!v)
    return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
  return fr_out_set(nc, idx, v);
}

static enum fr_status fr__fail(struct fr_node_ctx *nc, enum fr_status rc, const struct fr_err *err) {
  return fr_node_fail(nc, rc, "%s", err->msg);
}

static const struct fr_output_spec fr__image_out[] = {{"image", FR_T_IMAGE, "the resulting image"}};

/* ---- LoadImage ---- */

static enum fr_status fr__load_image_run(struct fr_node_ctx *nc) {
  const char *path = fr_in_path(nc, "image");
  if (!path)
    return fr_node_fail(nc, FR_E_INVALID, "input 'image': no file given");
  struct fr_err err;
  struct fr_tensor *img, *mask;
  enum fr_status rc = fr_image_load_png(path, &img, &mask, &err);
  if (rc)
    return fr__fail(nc, rc, &err);
  rc = fr__out_image(nc, 0, img);
  if (rc) {
    fr_tensor_free(mask);
    return rc;
  }
  struct fr_value *mv = fr_value_tensor(FR_T_MASK, "mask", mask);
  if (!mv)
    return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
  return fr_out_set(nc, 1, mv);
}

static const struct fr_input_spec fr__load_image_in[] = {
    {"image", FR_T_STRING, NULL, 0, -1, NULL, FR_IN_FILE,
     "PNG file (8- or 16-bit), relative to the graph's folder"},
};
static const struct fr_output_spec fr__load_image_out[] = {
    {"image", FR_T_IMAGE, "RGB image [1, H, W, 3]"},
    {"mask", FR_T_MASK, "1 - alpha [1, H, W] (all 0 without alpha), as ComfyUI"},
};
const struct fr_node_spec fr_node_load_image = {
    "LoadImage",
    1,
    "image",
    "Loads a PNG file as an image and its alpha mask.",
    fr__load_image_in,
    FR_COUNT(fr__load_image_in),
    fr__load_image_out,
    FR_COUNT(fr__load_image_out),
    0,
    fr__load_image_run,
};

/* ---- SaveImage ---- */

static enum fr_status fr__save_image_run(struct fr_node_ctx *nc) {
  const struct fr_tensor *img;
  enum fr_status rc = fr__in_image(nc, "images", &img);
  if (rc)
    return rc;
  fr_node_warn_nonfinite(nc, "input 'images'",
                         img); /* written as 0 (NaN, -inf) or 1 (+inf), never silently */
  /* The workflow, its params, and the folder its relative paths (subgraph files, inputs) resolve
   * against, so `flowrun picture.png` re-runs it from anywhere on this machine. */
  struct fr_png_text texts[3];
  int n = 0;
  const char *yaml = fr_node_graph_yaml(nc), *params = fr_node_graph_params_json(nc);
  const char *dir = fr_node_graph_dir(nc);
  if (yaml)
    texts[n++] = (struct fr_png_text){FR_PNG_KEY_WORKFLOW, yaml};
  if (params)
    texts[n++] = (struct fr_png_text){FR_PNG_KEY_PARAMS, params};
  if (dir)
    texts[n++] = (struct fr_png_text){FR_PNG_KEY_DIR, dir};
  struct fr_err err;
  char *files = NULL;
  char out[4200];
  const char *prefix;
  rc = fr_node_output_target(nc, "filename_prefix", out, sizeof out, &prefix);
  if (rc)
    return rc;
  rc = fr_image_save_png(out, prefix, img, texts, n, &files, &err);
  if (rc)
    return fr__fail(nc, rc, &err);
  struct fr_value *v = fr_value_string(files);
  fr_free(files);
  if (!v)
    return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
  return fr_out_set(nc, 0, v);
}

static const struct fr_input_spec fr__save_image_in[] = {
    {"images", FR_T_IMAGE, NULL, 0, -1, NULL, 0, "images to save, one file each"},
    {"filename_prefix", FR_T_STRING, "flowrun", 0, -1, NULL, FR_IN_SAVE_PATH,
     "files are <output folder>/<prefix>_<NNNNN>.png, numbered on from the highest existing; an absolute "
     "/folder/prefix writes <folder>/<prefix>_<NNNNN>.png"},
};
static const struct fr_output_spec fr__save_image_out[] = {
    {"files", FR_T_STRING, "the files written, one line each: absolute path, a tab, XXH3-128 of its bytes"},
};
const struct fr_node_spec fr_node_save_image = {
    "SaveImage",
    1,
    "image",
    "Saves images as PNG files with the workflow embedded.",
    fr__save_image_in,
    FR_COUNT(fr__save_image_in),
    fr__save_image_out,
    FR_COUNT(fr__save_image_out),
    FR_NODE_OUTPUT,
    fr__save_image_run,
};

/* ---- ImageResize ---- */

static const char *const fr__resize_methods[] = {"nearest", "bilinear", "bicubic", "area", NULL};
static const char *const fr__crop_modes[] = {"disabled", "center", NULL};

static enum fr_status fr__resize_run(struct fr_node_ctx *nc) {
  const struct fr_tensor *img;
  enum fr_status rc = fr__in_image(nc, "image", &img);
  if (rc)
    return rc;
  int m = fr__in_choice(nc, "method", fr__resize_methods);
  int crop = fr__in_choice(nc, "crop", fr__crop_modes);
  if (m < 0 || crop < 0)
    return fr_node_fail(nc, FR_E_INVALID, "unknown method '%s' or crop '%s'", fr_in_str(nc, "method"),
                        fr_in_str(nc, "crop"));
  struct fr_err err;
  struct fr_tensor *out;
  rc = fr_image_resize(img, (int)fr_in_int(nc, "width"), (int)fr_in_int(nc, "height"),
                       (enum fr_resize_method)m, crop == 1, &out, &err);
  if (rc)
    return fr__fail(nc, rc, &err);
  return fr__out_image(nc, 0, out);
}

static const struct fr_input_spec fr__resize_in[] = {
    {"image", FR_T_IMAGE, NULL, 0, -1, NULL, 0, "image to resize"},
    {"width", FR_T_INT, "512", 0, 16384, NULL, 0, "target width; 0 keeps the aspect ratio from height"},
    {"height", FR_T_INT, "512", 0, 16384, NULL, 0, "target height; 0 keeps the aspect ratio from width"},
    {"method", FR_T_ENUM, "bilinear", 0, -1, fr__resize_methods, 0, "interpolation"},
    {"crop", FR_T_ENUM, "disabled", 0, -1, fr__crop_modes, 0,
     "center: cut to the target's aspect ratio first"},
};
const struct fr_node_spec fr_node_image_resize = {
    "ImageResize",
    1,
    "image",
    "Resizes an image (nearest, bilinear, bicubic or area), optionally centre-cropped.",
    fr__resize_in,
    FR_COUNT(fr__resize_in),
    fr__image_out,
    1,
    0,
    fr__resize_run,
};

/* ---- ImageBlur ---- */

static enum fr_status fr__blur_run(struct fr_node_ctx *nc) {
  const struct fr_tensor *img;
  enum fr_status rc = fr__in_image(nc, "image", &img);
  if (rc)
    return rc;
  struct fr_err err;
  struct fr_tensor *out;
  rc = fr_image_blur(img, (int)fr_in_int(nc, "radius"), fr_in_float(nc, "sigma"), &out, &err);
  if (rc)
    return fr__fail(nc, rc, &err);
  return fr__out_image(nc, 0, out);
}

static const struct fr_input_spec fr__blur_in[] = {
    {"image", FR_T_IMAGE, NULL, 0, -1, NULL, 0, "image to blur"},
    {"radius", FR_T_INT, "1", 0, 31, NULL, 0, "kernel radius in pixels (2 radius + 1 taps); 0 is no blur"},
    {"sigma", FR_T_FLOAT, "1.0", 0.1, 10.0, NULL, 0, "Gaussian width in units of the radius, as ComfyUI"},
};
const struct fr_node_spec fr_node_image_blur = {
    "ImageBlur",
    1,
    "image",
    "Gaussian blur with clamped edges.",
    fr__blur_in,
    FR_COUNT(fr__blur_in),
    fr__image_out,
    1,
    0,
    fr__blur_run,
};

/* ---- Canny ---- */

static enum fr_status fr__canny_run(struct fr_node_ctx *nc) {
  const struct fr_tensor *img;
  enum fr_status rc = fr__in_image(nc, "image", &img);
  if (rc)
    return rc;
  double lo = fr_in_float(nc, "low_threshold"), hi = fr_in_float(nc, "high_threshold");
  if (lo > hi)
    return fr_node_fail(nc, FR_E_INVALID, "low_threshold %g is above high_threshold %g", lo, hi);
  struct fr_err err;
  struct fr_tensor *out;
  rc = fr_image_canny(img, lo, hi, &out, &err);
  if (rc)
    return fr__fail(nc, rc, &err);
  return fr__out_image(nc, 0, out);
}

static const struct fr_input_spec fr__canny_in[] = {
    {"image", FR_T_IMAGE, NULL, 0, -1, NULL, 0, "image to find edges in"},
    {"low_threshold", FR_T_FLOAT, "0.4", 0.01, 0.99, NULL, 0,
     "gradient magnitude above which a pixel is an edge when connected to a strong one"},
    {"high_threshold", FR_T_FLOAT, "0.8", 0.01, 0.99, NULL, 0,
     "gradient magnitude above which a pixel is an edge"},
};
const struct fr_node_spec fr_node_canny = {
    "Canny",
    1,
    "image",
    "Canny edge map (white edges on black), the control image for ControlNet canny.",
    fr__canny_in,
    FR_COUNT(fr__canny_in),
    fr__image_out,
    1,
    0,
    fr__canny_run,
};

/* ---- ImageBlend ---- */

static const char *const fr__blend_modes[] = {"normal",     "multiply",   "screen", "overlay",
                                              "soft_light", "difference", NULL};

static enum fr_status fr__blend_run(struct fr_node_ctx *nc) {
  const struct fr_tensor *a, *b;
  enum fr_status rc = fr__in_image(nc, "image1", &a);
  if (!rc)
    rc = fr__in_image(nc, "image2", &b);
  if (rc)
    return rc;
  int m = fr__in_choice(nc, "blend_mode", fr__blend_modes);
  if (m < 0)
    return fr_node_fail(nc, FR_E_INVALID, "unknown blend_mode '%s'", fr_in_str(nc, "blend_mode"));
  struct fr_err err;
  struct fr_tensor *out;
  rc = fr_image_blend(a, b, fr_in_float(nc, "blend_factor"), (enum fr_blend_mode)m, &out, &err);
  if (rc)
    return fr__fail(nc, rc, &err);
  return fr__out_image(nc, 0, out);
}

static const struct fr_input_spec fr__blend_in[] = {
    {"image1", FR_T_IMAGE, NULL, 0, -1, NULL, 0, "base image"},
    {"image2", FR_T_IMAGE, NULL, 0, -1, NULL, 0, "image blended onto image1 (same size)"},
    {"blend_factor", FR_T_FLOAT, "0.5", 0.0, 1.0, NULL, 0, "0 gives image1, 1 the full blend"},
    {"blend_mode", FR_T_ENUM, "normal", 0, -1, fr__blend_modes, 0, "how the two images combine"},
};
const struct fr_node_spec fr_node_image_blend = {
    "ImageBlend",
    1,
    "image",
    "Blends two images of the same size with a blend mode.",
    fr__blend_in,
    FR_COUNT(fr__blend_in),
    fr__image_out,
    1,
    0,
    fr__blend_run,
};

/* ---- SolidImage ---- */

static enum fr_status fr__solid_run(struct fr_node_ctx *nc) {
  struct fr_err err;
  float rgb[3];
  enum fr_status rc = fr_image_parse_color(fr_in_str(nc, "color"), rgb, &err);
  struct fr_tensor *out = NULL;
  if (!rc)
    rc = fr_image_solid((int)fr_in_int(nc, "width"), (int)fr_in_int(nc, "height"),
                        (int)fr_in_int(nc, "batch"), rgb, &out, &err);
  if (rc)
    return fr__fail(nc, rc, &err);
  return fr__out_image(nc, 0, out);
}

static const struct fr_input_spec fr__solid_in[] = {
    {"width", FR_T_INT, "512", 1, 16384, NULL, 0, "width in pixels"},
    {"height", FR_T_INT, "512", 1, 16384, NULL, 0, "height in pixels"},
    {"batch", FR_T_INT, "1", 1, 4096, NULL, 0, "number of images"},
    {"color", FR_T_STRING, "#000000", 0, -1, NULL, 0, "colour as \"#rrggbb\" or \"#rgb\""},
};
const struct fr_node_spec fr_node_solid_image = {
    "SolidImage",
    1,
    "image",
    "An image of one colour.",
    fr__solid_in,
    FR_COUNT(fr__solid_in),
    fr__image_out,
    1,
    0,
    fr__solid_run,
};

/* ---- TestPattern ---- */

static const char *const fr__patterns[] = {"shapes", "radial", "checker", NULL};

static enum fr_status fr__pattern_run(struct fr_node_ctx *nc) {
  int p = fr__in_choice(nc, "pattern", fr__patterns);
  if (p < 0)
    return fr_node_fail(nc, FR_E_INVALID, "unknown pattern '%s'", fr_in_str(nc, "pattern"));
  struct fr_err err;
  struct fr_tensor *out;
  enum fr_status rc = fr_image_pattern((enum fr_pattern)p, (int)fr_in_int(nc, "width"),
                                       (int)fr_in_int(nc, "height"), (int)fr_in_int(nc, "batch"), &out, &err);
  if (rc)
    return fr__fail(nc, rc, &err);
  return fr__out_image(nc, 0, out);
}

static const struct fr_input_spec fr__pattern_in[] = {
    {"pattern", FR_T_ENUM, "shapes", 0, -1, fr__patterns, 0,
     "shapes: disc, square and triangle on a gradient; radial: radial gradient; checker: 8x8 checkerboard"},
    {"width", FR_T_INT, "512", 1, 16384, NULL, 0, "width in pixels"},
    {"height", FR_T_INT, "512", 1, 16384, NULL, 0, "height in pixels"},
    {"batch", FR_T_INT, "1", 1, 4096, NULL, 0, "number of (identical) images"},
};
const struct fr_node_spec fr_node_test_pattern = {
    "TestPattern",
    1,
    "image",
    "A synthetic image with structure, for demos and tests without input files.",
    fr__pattern_in,
    FR_COUNT(fr__pattern_in),
    fr__image_out,
    1,
    0,
    fr__pattern_run,
};

/* ---- ImageInvert ---- */

static enum fr_status fr__invert_run(struct fr_node_ctx *nc) {
  const struct fr_tensor *img;
  enum fr_status rc = fr__in_image(nc, "image", &img);
  if (rc)
    return rc;
  struct fr_err err;
  struct fr_tensor *out;
  rc = fr_image_invert(img, &out, &err);
  if (rc)
    return fr__fail(nc, rc, &err);
  return fr__out_image(nc, 0, out);
}

static const struct fr_input_spec fr__invert_in[] = {
    {"image", FR_T_IMAGE, NULL, 0, -1, NULL, 0, "image to invert"},
};
const struct fr_node_spec fr_node_image_invert = {
    "ImageInvert",
    1,
    "image",
    "1 - x on the colour channels (alpha kept).",
    fr__invert_in,
    FR_COUNT(fr__invert_in),
    fr__image_out,
    1,
    0,
    fr__invert_run,
};
