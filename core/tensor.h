/* The one tensor type: dtype, shape, contiguous row-major data, and where the data lives.
 *
 * Tensors are always contiguous (strides follow from the shape); ops that permute produce a new
 * tensor. Shapes are written outermost first, as in PyTorch: an image batch is [B, C, H, W].
 * A tensor either owns its data (freed with the tensor) or borrows it (a view into an mmap'd
 * safetensors file or a caller's buffer). fr_tensor_free frees the struct in both cases. */
#ifndef FR_TENSOR_H
#define FR_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

enum fr_dtype {
  FR_F32,
  FR_F16,
  FR_BF16,
  FR_I64,
  FR_I32,
  FR_I16,
  FR_I8,
  FR_U8,
  FR_BOOL,
  FR_F64,
  FR_DTYPE_COUNT
};

#define FR_MAX_DIMS 6

enum fr_device { FR_DEV_CPU = 0, FR_DEV_CUDA = 1 };

struct fr_tensor {
  enum fr_dtype dtype;
  int ndim;                   /* 0 for a scalar */
  int64_t shape[FR_MAX_DIMS]; /* unused dims are 1 */
  void *data;                 /* contiguous; on the device named by dev */
  enum fr_device dev;
  bool owns_data;     /* data is freed with the tensor */
  void *backend_priv; /* for backends (e.g. the CUDA pool block); NULL on the CPU */
  /* When set, fr_tensor_free calls it to release data (device memory); owns_data is then ignored. */
  void (*release)(struct fr_tensor *t);
};

size_t fr_dtype_size(enum fr_dtype dt);
/* Safetensors' names: "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F64". */
const char *fr_dtype_name(enum fr_dtype dt);
/* Returns false when name is not a known dtype. */
bool fr_dtype_from_name(const char *name, size_t len, enum fr_dtype *out);
/* The compute dtypes by the names options use ("f32", "f16", "bf16": --dtype, the run's dtype in the
 * nodes): true with *out set, false for any other name (*out untouched). */
bool fr_compute_dtype_from_option(const char *name, enum fr_dtype *out);

int64_t fr_tensor_numel(const struct fr_tensor *t);
size_t fr_tensor_nbytes(const struct fr_tensor *t);

/* New CPU tensor with owned, zeroed data. NULL when out of memory or the shape is invalid. */
struct fr_tensor *fr_tensor_new(enum fr_dtype dt, int ndim, const int64_t *shape);
/* Convenience for fr_tensor_new(FR_F32, ...) with the shape inline: fr_tensor_f32(4, (int64_t[]){2, 4, 64,
 * 64}). */
struct fr_tensor *fr_tensor_f32(int ndim, const int64_t *shape);
/* New CPU tensor that borrows data (not freed with it). NULL when out of memory. */
struct fr_tensor *fr_tensor_view(enum fr_dtype dt, int ndim, const int64_t *shape, void *data);
/* Deep copy into an owned CPU tensor. */
struct fr_tensor *fr_tensor_clone(const struct fr_tensor *t);
/* Owned F32 copy of an F32/F16/BF16/F64/integer CPU tensor (converted); NULL when out of memory. */
struct fr_tensor *fr_tensor_to_f32(const struct fr_tensor *t);
void fr_tensor_free(struct fr_tensor *t); /* NULL is fine */

/* Changes the shape in place without moving data; false (and no change) if the element count differs. */
bool fr_tensor_reshape(struct fr_tensor *t, int ndim, const int64_t *shape);

/* Same shape (dtype not compared). */
bool fr_tensor_same_shape(const struct fr_tensor *a, const struct fr_tensor *b);
/* Writes "[2, 4, 64, 64]" into buf (always NUL-terminated); returns buf. */
char *fr_shape_str(const struct fr_tensor *t, char *buf, size_t n);
char *fr_shape_str_dims(int ndim, const int64_t *shape, char *buf, size_t n);

/* Scalar conversions (IEEE half with round-to-nearest-even; bfloat16 likewise). */
float fr_f16_to_f32(uint16_t h);
uint16_t fr_f32_to_f16(float f);
float fr_bf16_to_f32(uint16_t h);
uint16_t fr_f32_to_bf16(float f);
/* Bulk conversion of n values from src (dtype dt) to F32 dst. Integer dtypes convert by value. */
void fr_convert_to_f32(float *dst, const void *src, enum fr_dtype dt, size_t n);
/* How many values of a host tensor are NaN or +-inf (F32, F16, BF16; F64 also counts finite values beyond
 * the float range, which load as inf); 0 for integer dtypes and device tensors. *first (may be NULL) gets
 * the flat index of the first one, or -1. Reads the bits, so it is right under any float options. A
 * checkpoint weight or a latent that holds one turns every later output NaN: a black picture. */
int64_t fr_tensor_count_nonfinite(const struct fr_tensor *t, int64_t *first);

#endif
