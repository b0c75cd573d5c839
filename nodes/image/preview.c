/* PreviewImage: an output node that writes its images to the engine's temporary folder
 * (fr_node_temp_dir), never to the output folder, so a look at an intermediate image leaves nothing in
 * --output. Its files are announced as outputs (the editor shows them; the server serves them from the
 * temporary folder); no workflow is embedded in them. */
#include "core/alloc.h"
#include "nodes/image/image.h"

static enum fr_status fr__preview_run(struct fr_node_ctx *nc) {
  const struct fr_value *v = fr_in(nc, "images");
  const struct fr_tensor *img = v ? fr_value_get_tensor(v, "image") : NULL;
  struct fr_err err = {{0}};
  if (!img)
    return fr_node_fail(nc, FR_E_INVALID, "input 'images': no IMAGE connected");
  if (fr_image_check(img, "images", &err))
    return fr_node_fail(nc, FR_E_SHAPE, "input %s", err.msg);
  char *files = NULL;
  enum fr_status rc = fr_image_save_png(fr_node_temp_dir(nc), "preview", img, NULL, 0, &files, &err);
  if (rc)
    return fr_node_fail(nc, rc, "%s", err.msg);
  struct fr_value *out = fr_value_string(files);
  fr_free(files);
  if (!out)
    return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
  return fr_out_set(nc, 0, out);
}

static const struct fr_input_spec fr__preview_in[] = {
    {"images", FR_T_IMAGE, NULL, 0, -1, NULL, 0, "images to show"},
};
static const struct fr_output_spec fr__preview_out[] = {
    {"files", FR_T_STRING, "the preview files written (in the temporary folder)"}};
const struct fr_node_spec fr_node_preview_image = {
    "PreviewImage",
    1,
    "image",
    "Shows images in the editor: writes them to a temporary folder, not to the output folder.",
    fr__preview_in,
    FR_COUNT(fr__preview_in),
    fr__preview_out,
    FR_COUNT(fr__preview_out),
    FR_NODE_OUTPUT,
    fr__preview_run,
};
