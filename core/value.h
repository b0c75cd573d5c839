/* Values that flow along the graph's edges, and how they are cached.
 *
 * A value has a type name (a socket type such as "IMAGE", "LATENT", "CONDITIONING", "MODEL", or a
 * primitive "INT", "FLOAT", "BOOL", "STRING") and one of three payloads:
 *   - a primitive (i, f, b, s);
 *   - data: named tensors plus string attributes (IMAGE, LATENT, MASK, CONDITIONING). Data values are
 *     cacheable: they serialise to a safetensors blob (strings in __metadata__).
 *   - an object: a refcounted handle to something that lives in memory (a lazily loaded checkpoint,
 *     a model on the GPU). Objects are never written to the cache; their identity string (e.g. the
 *     checkpoint's content fingerprint) feeds the signatures of nodes that use them.
 *
 * Conventions for data values (what every node producing or consuming them assumes):
 *   IMAGE:  tensor "image" F32 [B, H, W, C], C = 3 (RGB) or 4 (RGBA), values in [0, 1].
 *   MASK:   tensor "mask"  F32 [B, H, W], values in [0, 1].
 *   LATENT: tensor "samples" F32 [B, 4, h, w] (unscaled VAE space x scaling factor, as ComfyUI);
 *           optional "noise_mask".
 *   CONDITIONING: defined by the pipeline nodes (nodes/), e.g. "context" [B, T, D], "pooled" [B, P].
 *
 * Values are refcounted so one output can feed many inputs: fr_value_ref / fr_value_unref. */
#ifndef FR_VALUE_H
#define FR_VALUE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/status.h"
#include "core/tensor.h"

enum fr_vkind { FR_V_INT, FR_V_FLOAT, FR_V_BOOL, FR_V_STRING, FR_V_DATA, FR_V_OBJECT };

struct fr_object {
  int refcount;
  const char *type;            /* socket type, e.g. "MODEL" */
  char *identity;              /* stable description for signatures, owned (fr_malloc) */
  void (*destroy)(struct fr_object *o); /* frees the object itself and identity */
};

struct fr_field {
  char *name;
  struct fr_tensor *t; /* NULL for a string field */
  char *str;
};

struct fr_value {
  int refcount;
  const char *type; /* interned / static type name */
  enum fr_vkind kind;
  int64_t i;
  double f;
  bool b;
  char *s;
  int n_fields; /* FR_V_DATA */
  struct fr_field *fields;
  struct fr_object *obj; /* FR_V_OBJECT: one reference owned by the value */
};

/* Constructors return a value with refcount 1, or NULL when out of memory. type must outlive the
 * value (a string literal or an interned name). */
struct fr_value *fr_value_int(int64_t i);
struct fr_value *fr_value_float(double f);
struct fr_value *fr_value_bool(bool b);
struct fr_value *fr_value_string(const char *s); /* copies s */
struct fr_value *fr_value_data(const char *type);
struct fr_value *fr_value_object(struct fr_object *o); /* takes o's reference (released on failure) */
/* A data value of one tensor field (takes ownership of t, freed even on failure). */
struct fr_value *fr_value_tensor(const char *type, const char *field, struct fr_tensor *t);

/* Adds a field to a data value. The value takes ownership of t (freed even on failure). */
enum fr_status fr_value_add_tensor(struct fr_value *v, const char *name, struct fr_tensor *t);
enum fr_status fr_value_add_string(struct fr_value *v, const char *name, const char *s);
const struct fr_tensor *fr_value_get_tensor(const struct fr_value *v, const char *name);
const char *fr_value_get_string(const struct fr_value *v, const char *name);

/* The one process-wide copy of a type name (static for the built-in types, else kept for the life of
 * the process), suitable for fr_value.type. NULL when out of memory. Thread-safe. */
const char *fr_type_intern(const char *name);

struct fr_value *fr_value_ref(struct fr_value *v);
void fr_value_unref(struct fr_value *v); /* NULL is fine */
void fr_object_unref(struct fr_object *o);

bool fr_value_cacheable(const struct fr_value *v); /* everything but objects */
/* Serialises a cacheable value to a self-describing blob (safetensors with the type and primitives in
 * __metadata__) and back. Deserialising checks the blob fully: a bad blob is FR_E_FORMAT. */
enum fr_status fr_value_serialize(const struct fr_value *v, struct fr_buf *out, struct fr_err *err);
enum fr_status fr_value_deserialize(const void *blob, size_t len, struct fr_value **out, struct fr_err *err);

#endif
