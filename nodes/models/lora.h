/* LoRA add-ons (kohya, PEFT / diffusers, LyCORIS LoHa and LoKr) applied to weights as they load.
 *
 * A LoRA file is a safetensors file of "<module>.<part>" tensors: <module> names a layer of the base
 * model in the trainer's naming, <part> is one piece of its low-rank update (lora_down / lora_up /
 * lora_mid, lora_A / lora_B, lora.down / lora.up, hada_*, lokr_*, alpha). fr_lora_open groups the
 * tensors into modules. The key mapping is data built from the checkpoint's own names: when a loader
 * loads a tensor through a fr_wsrc that carries a LoRA set (weights.h), fr_lora_patch derives every
 * name the trainers give that layer from the tensor's key (and the loader's other names for it, e.g.
 * the UNet's SGM and diffusers names) and looks them up among the modules. A match adds
 * strength x scale x delta to the weight, computed and added in fp32 on the host before the weight is
 * converted to the compute dtype, so the CPU and CUDA see the same merged values. docs/lora.md has the
 * layouts, the names and the math. */
#ifndef FR_MODELS_LORA_H
#define FR_MODELS_LORA_H

#include <stdbool.h>
#include <stddef.h>

#include "core/safetensors.h"
#include "core/status.h"

/* Which part of a checkpoint a module belongs to, from its name's prefix. */
enum fr_lora_space { FR_LORA_UNET, FR_LORA_CLIP_L, FR_LORA_CLIP_G, FR_LORA_UNKNOWN };

struct fr_lora_set; /* opaque: LoRA files with a strength each */

/* An empty set; NULL when out of memory. */
struct fr_lora_set *fr_lora_set_new(void);
void fr_lora_set_free(struct fr_lora_set *s);
/* Opens the LoRA file path (mmapped, kept open by the set) and adds it with strength. Errors: the
 * file cannot be read or is not safetensors (FR_E_IO / FR_E_FORMAT naming path), a tensor of a known
 * part that is not a float type or has a shape the math cannot use (FR_E_SHAPE naming the tensor). */
enum fr_status fr_lora_set_add(struct fr_lora_set *s, const char *path, double strength, struct fr_err *err);
/* Number of files in the set. */
int fr_lora_set_count(const struct fr_lora_set *s);

/* Called by fr_wsrc_load for each tensor it loads: key is the checkpoint's full key, aka the loader's
 * other names of the same tensor without a prefix (may be NULL / 0), e the file's entry, space the
 * component being loaded. When no module of the set names this tensor, *out stays NULL. Otherwise *out
 * is a new host F32 tensor of e's shape holding W + sum over the set's files of strength x scale x delta
 * (owned by the caller). Errors: a delta whose shape does not fit the tensor (FR_E_SHAPE: names the
 * LoRA file, the module, the tensor and both shapes, and says the LoRA is likely for another base
 * model), out of memory. */
enum fr_status fr_lora_patch(struct fr_lora_set *s, enum fr_lora_space space, const char *key,
                             const char *const *aka, int n_aka, const struct fr_st_entry *e,
                             struct fr_tensor **out, struct fr_err *err);

/* After a component of `space` loaded with the set: for each file, its modules of that space that
 * matched no tensor and (when unknown_too) the modules whose names fit no space at all. When most
 * modules of the space went unmatched (a LoRA for another base model) FR_E_INVALID with a message
 * saying so. Otherwise FR_OK, and when some went unmatched *warn holds "LoRA <file>: N of M modules
 * matched nothing in the checkpoint and were not applied: a, b, c (and K more)" (one line per file;
 * "" when nothing to report). */
enum fr_status fr_lora_check(const struct fr_lora_set *s, enum fr_lora_space space, bool unknown_too,
                             char *warn, size_t nwarn, struct fr_err *err);

/* How many complete modules (every part one of the forms needs) of `space` the set's files have. */
int fr_lora_modules(const struct fr_lora_set *s, enum fr_lora_space space);
/* How many modules of `space` matched a tensor, over all files (for messages and tests). */
int fr_lora_applied(const struct fr_lora_set *s, enum fr_lora_space space);

#endif
