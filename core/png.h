/* PNG reading and writing (libpng), with the text chunks flowrun uses to embed workflows.
 *
 * Images in memory are F32 [H, W, C] in [0, 1], C = 1 (grey), 3 (RGB) or 4 (RGBA), row-major — the
 * per-image slice of an IMAGE value. 8- and 16-bit files are read (palette and grey expanded); files
 * are written 8-bit. */
#ifndef FR_PNG_H
#define FR_PNG_H

#include <stddef.h>

#include "core/buf.h"
#include "core/status.h"
#include "core/tensor.h"

/* Keys of the tEXt/iTXt chunks SaveImage writes: the workflow YAML and its resolved params (JSON). */
#define FR_PNG_KEY_WORKFLOW "flowrun-workflow"
#define FR_PNG_KEY_PARAMS "flowrun-params"
/* Optional: the absolute folder of the graph file (fr_node_graph_dir), so that `flowrun PICTURE.png`
 * resolves the workflow's relative subgraphs and input files as the original run did. */
#define FR_PNG_KEY_DIR "flowrun-dir"

/* The largest decoded image fr_png_read accepts: width x height x channels x 4 bytes (the F32 tensor; a
 * 16-bit file takes half as much again while it decodes). 1 GiB: an 8192x8192 RGBA or 9459x9459 RGB
 * image, far beyond what diffusion models make; 16384x16384 RGBA (4 GiB) is refused before allocating. */
#define FR_PNG_MAX_DECODED_BYTES (1u << 30)
/* The largest text fr_png_read_text returns (after inflating a zTXt/iTXt): 64 MiB. Workflows are KBs. */
#define FR_PNG_MAX_TEXT_BYTES (64 << 20)

struct fr_png_text {
  const char *key;
  const char *value;
};

/* Reads path into a new F32 tensor [H, W, C] (C as in the file after expansion: 1, 2→4 (grey+alpha
 * becomes RGBA), 3 or 4). FR_E_IO if it cannot be opened, FR_E_FORMAT (naming the file) if it is not a
 * valid PNG, FR_E_UNSUPPORTED (naming the file, the size and FR_PNG_MAX_DECODED_BYTES) for an image over
 * that limit, checked from the header before the image is allocated. */
enum fr_status fr_png_read(const char *path, struct fr_tensor **out, struct fr_err *err);
/* Reads the first text chunk named key (tEXt, zTXt or iTXt, anywhere in the file, after any number of
 * other chunks) into a new NUL-terminated string (fr_free); FR_E_NOTFOUND when the file has none,
 * FR_E_FORMAT for a file that is not a PNG or is truncated before one is found, FR_E_UNSUPPORTED for a
 * text over FR_PNG_MAX_TEXT_BYTES. */
enum fr_status fr_png_read_text(const char *path, const char *key, char **out, struct fr_err *err);
/* Encodes img ([H, W, C], C = 1, 3 or 4, F32 clamped to [0, 1]) as an 8-bit PNG with the given text
 * chunks (UTF-8, written as iTXt), appended to out (which the caller frees). name is for messages. */
enum fr_status fr_png_encode(const struct fr_tensor *img, const struct fr_png_text *texts, int n_texts,
                             struct fr_buf *out, const char *name, struct fr_err *err);
/* fr_png_encode written to path atomically (core/file.h fr_write_file_atomic): a temporary file in the
 * same folder, then rename over path. */
enum fr_status fr_png_write(const char *path, const struct fr_tensor *img, const struct fr_png_text *texts,
                            int n_texts, struct fr_err *err);

#endif
