/* Helpers the edit nodes' run functions share (nodes/image/mask.c, scale.c): reading an IMAGE, MASK or
 * LATENT input with a failure naming it, an ENUM input's index, and setting a one-tensor output. */
#ifndef FR_NODES_IMAGE_EDIT_UTIL_H
#define FR_NODES_IMAGE_EDIT_UTIL_H

#include <string.h>

#include "core/node.h"
#include "nodes/image/edit.h"
#include "nodes/image/image.h"

/* The tensor `field` of input name, checked as an IMAGE (field "image"), MASK ("mask") or latent
 * samples ("samples": F32 CPU [B, C, h, w]); a failure names the input. */
static inline enum fr_status fr__edit_in(struct fr_node_ctx *nc, const char *name, const char *field,
                                         const struct fr_tensor **t) {
  const struct fr_value *v = fr_in(nc, name);
  *t = v ? fr_value_get_tensor(v, field) : NULL;
  if (!*t)
    return fr_node_fail(nc, FR_E_INVALID, "input '%s': nothing connected (expected a value with '%s')", name,
                        field);
  struct fr_err err;
  enum fr_status rc = FR_OK;
  if (strcmp(field, "image") == 0)
    rc = fr_image_check(*t, name, &err);
  else if (strcmp(field, "mask") == 0)
    rc = fr_mask_check(*t, name, &err);
  else if ((*t)->dtype != FR_F32 || (*t)->dev != FR_DEV_CPU || (*t)->ndim != 4) {
    char s[64];
    return fr_node_fail(nc, FR_E_SHAPE, "input '%s': expected LATENT samples F32 [B, C, h, w], got %s %s",
                        name, fr_dtype_name((*t)->dtype), fr_shape_str(*t, s, sizeof s));
  }
  if (rc)
    return fr_node_fail(nc, rc, "input %s", err.msg);
  return FR_OK;
}

/* Index of the ENUM input's value among choices (validation guarantees it is one of them). */
static inline int fr__edit_choice(struct fr_node_ctx *nc, const char *name, const char *const *choices) {
  const char *s = fr_in_str(nc, name);
  for (int i = 0; s && choices[i]; i++)
    if (strcmp(s, choices[i]) == 0)
      return i;
  return -1;
}

/* Sets output idx to a data value of type `type` holding t (taken) as `field`. */
static inline enum fr_status fr__edit_out(struct fr_node_ctx *nc, int idx, const char *type,
                                          const char *field, struct fr_tensor *t) {
  struct fr_value *v = fr_value_tensor(type, field, t);
  if (!v)
    return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
  return fr_out_set(nc, idx, v);
}

#endif
