#include "core/tensor.h"

#include <stdio.h>
#include <string.h>

#include "core/alloc.h"

static const struct {
  const char *name;
  size_t size;
} fr__dtypes[FR_DTYPE_COUNT] = {
    [FR_F32] = {"F32", 4},   [FR_F16] = {"F16", 2}, [FR_BF16] = {"BF16", 2}, [FR_I64] = {"I64", 8},
    [FR_I32] = {"I32", 4},   [FR_I16] = {"I16", 2}, [FR_I8] = {"I8", 1},     [FR_U8] = {"U8", 1},
    [FR_BOOL] = {"BOOL", 1}, [FR_F64] = {"F64", 8},
};

size_t fr_dtype_size(enum fr_dtype dt) {
  return (unsigned)dt < FR_DTYPE_COUNT ? fr__dtypes[dt].size : 0;
}
const char *fr_dtype_name(enum fr_dtype dt) {
  return (unsigned)dt < FR_DTYPE_COUNT ? fr__dtypes[dt].name : "?";
}
bool fr_dtype_from_name(const char *name, size_t len, enum fr_dtype *out) {
  for (int i = 0; i < FR_DTYPE_COUNT; i++) {
    if (strlen(fr__dtypes[i].name) == len && memcmp(fr__dtypes[i].name, name, len) == 0) {
      *out = (enum fr_dtype)i;
      return true;
    }
  }
  return false;
}

bool fr_compute_dtype_from_option(const char *name, enum fr_dtype *out) {
  static const struct {
    const char *name;
    enum fr_dtype dt;
  } opts[] = {{"f32", FR_F32}, {"f16", FR_F16}, {"bf16", FR_BF16}};
  for (size_t i = 0; name && i < sizeof opts / sizeof opts[0]; i++)
    if (strcmp(name, opts[i].name) == 0) {
      *out = opts[i].dt;
      return true;
    }
  return false;
}

int64_t fr_tensor_numel(const struct fr_tensor *t) {
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++)
    n *= t->shape[i];
  return n;
}
size_t fr_tensor_nbytes(const struct fr_tensor *t) {
  return (size_t)fr_tensor_numel(t) * fr_dtype_size(t->dtype);
}

static struct fr_tensor *fr__tensor_header(enum fr_dtype dt, int ndim, const int64_t *shape) {
  if (ndim < 0 || ndim > FR_MAX_DIMS || (unsigned)dt >= FR_DTYPE_COUNT)
    return NULL;
  struct fr_tensor *t = fr_calloc(1, sizeof *t);
  if (!t)
    return NULL;
  t->dtype = dt;
  t->ndim = ndim;
  for (int i = 0; i < FR_MAX_DIMS; i++)
    t->shape[i] = i < ndim ? shape[i] : 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) {
      fr_free(t);
      return NULL;
    }
  }
  return t;
}

struct fr_tensor *fr_tensor_new(enum fr_dtype dt, int ndim, const int64_t *shape) {
  struct fr_tensor *t = fr__tensor_header(dt, ndim, shape);
  if (!t)
    return NULL;
  t->data = fr_calloc(1, fr_tensor_nbytes(t));
  if (!t->data) {
    fr_free(t);
    return NULL;
  }
  t->owns_data = true;
  return t;
}

struct fr_tensor *fr_tensor_f32(int ndim, const int64_t *shape) {
  return fr_tensor_new(FR_F32, ndim, shape);
}

struct fr_tensor *fr_tensor_view(enum fr_dtype dt, int ndim, const int64_t *shape, void *data) {
  struct fr_tensor *t = fr__tensor_header(dt, ndim, shape);
  if (t)
    t->data = data;
  return t;
}

struct fr_tensor *fr_tensor_clone(const struct fr_tensor *src) {
  struct fr_tensor *t = fr_tensor_new(src->dtype, src->ndim, src->shape);
  if (t)
    memcpy(t->data, src->data, fr_tensor_nbytes(src));
  return t;
}

struct fr_tensor *fr_tensor_to_f32(const struct fr_tensor *src) {
  struct fr_tensor *t = fr_tensor_new(FR_F32, src->ndim, src->shape);
  if (t)
    fr_convert_to_f32(t->data, src->data, src->dtype, (size_t)fr_tensor_numel(src));
  return t;
}

void fr_tensor_free(struct fr_tensor *t) {
  if (!t)
    return;
  if (t->release)
    t->release(t);
  else if (t->owns_data)
    fr_free(t->data);
  fr_free(t);
}

bool fr_tensor_reshape(struct fr_tensor *t, int ndim, const int64_t *shape) {
  if (ndim < 0 || ndim > FR_MAX_DIMS)
    return false;
  int64_t n = 1;
  for (int i = 0; i < ndim; i++)
    n *= shape[i];
  if (n != fr_tensor_numel(t))
    return false;
  t->ndim = ndim;
  for (int i = 0; i < FR_MAX_DIMS; i++)
    t->shape[i] = i < ndim ? shape[i] : 1;
  return true;
}

bool fr_tensor_same_shape(const struct fr_tensor *a, const struct fr_tensor *b) {
  if (a->ndim != b->ndim)
    return false;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i])
      return false;
  return true;
}

char *fr_shape_str_dims(int ndim, const int64_t *shape, char *buf, size_t n) {
  size_t used = 0;
  buf[0] = 0;
  used += (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < ndim && used < n; i++)
    used += (size_t)snprintf(buf + used, n - used, i ? ", %lld" : "%lld", (long long)shape[i]);
  if (used < n)
    snprintf(buf + used, n - used, "]");
  return buf;
}
char *fr_shape_str(const struct fr_tensor *t, char *buf, size_t n) {
  return fr_shape_str_dims(t->ndim, t->shape, buf, n);
}

float fr_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else { /* subnormal: normalise */
      exp = 127 - 15 + 1;
      while (!(man & 0x400)) {
        man <<= 1;
        exp--;
      }
      man &= 0x3ff;
      bits = sign | (exp << 23) | (man << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

uint16_t fr_f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  int32_t exp = (int32_t)((x >> 23) & 0xff);
  uint32_t man = x & 0x7fffff;
  if (exp == 0xff)
    return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
  int32_t e = exp - 127 + 15;
  if (e >= 31)
    return (uint16_t)(sign | 0x7c00);
  if (e <= 0) {
    if (e < -10)
      return (uint16_t)sign;
    man |= 0x800000;
    uint32_t shift = (uint32_t)(14 - e);
    uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1)))
      half++;
    return (uint16_t)(sign | half);
  }
  uint32_t half = ((uint32_t)e << 10) | (man >> 13), rem = man & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1)))
    half++; /* may carry into the exponent, which is the correct rounding */
  return (uint16_t)(sign | half);
}

float fr_bf16_to_f32(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

uint16_t fr_f32_to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if ((x & 0x7fffffff) > 0x7f800000)
    return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
  x += 0x7fff + ((x >> 16) & 1);
  return (uint16_t)(x >> 16);
}

void fr_convert_to_f32(float *dst, const void *src, enum fr_dtype dt, size_t n) {
  switch (dt) {
  case FR_F32: memmove(dst, src, n * 4); break;
  case FR_F16:
    for (size_t i = 0; i < n; i++)
      dst[i] = fr_f16_to_f32(((const uint16_t *)src)[i]);
    break;
  case FR_BF16:
    for (size_t i = 0; i < n; i++)
      dst[i] = fr_bf16_to_f32(((const uint16_t *)src)[i]);
    break;
  case FR_F64:
    for (size_t i = 0; i < n; i++)
      dst[i] = (float)((const double *)src)[i];
    break;
  case FR_I64:
    for (size_t i = 0; i < n; i++)
      dst[i] = (float)((const int64_t *)src)[i];
    break;
  case FR_I32:
    for (size_t i = 0; i < n; i++)
      dst[i] = (float)((const int32_t *)src)[i];
    break;
  case FR_I16:
    for (size_t i = 0; i < n; i++)
      dst[i] = (float)((const int16_t *)src)[i];
    break;
  case FR_I8:
    for (size_t i = 0; i < n; i++)
      dst[i] = (float)((const int8_t *)src)[i];
    break;
  case FR_U8:
  case FR_BOOL:
    for (size_t i = 0; i < n; i++)
      dst[i] = (float)((const uint8_t *)src)[i];
    break;
  case FR_DTYPE_COUNT: break;
  }
}

/* Whether value i of raw data of dtype dt is NaN or inf (F64: or beyond the float range). */
static bool fr__nonfinite_at(const unsigned char *d, enum fr_dtype dt, int64_t i) {
  switch (dt) {
  case FR_F32: {
    uint32_t u;
    memcpy(&u, d + 4 * i, 4);
    return (u & 0x7F800000u) == 0x7F800000u;
  }
  case FR_F16: {
    uint16_t u;
    memcpy(&u, d + 2 * i, 2);
    return (u & 0x7C00u) == 0x7C00u;
  }
  case FR_BF16: {
    uint16_t u;
    memcpy(&u, d + 2 * i, 2);
    return (u & 0x7F80u) == 0x7F80u;
  }
  case FR_F64: {
    uint64_t u;
    memcpy(&u, d + 8 * i, 8);
    /* exponent >= 128 (|x| >= 2^128): inf/NaN, or too large for a float (just below 2^128 rounds to
     * FLT_MAX or inf; counted only from 2^128 up, which is always inf) */
    return ((u >> 52) & 0x7FFu) >= 1023u + 128u;
  }
  default: return false;
  }
}

int64_t fr_tensor_count_nonfinite(const struct fr_tensor *t, int64_t *first) {
  if (first)
    *first = -1;
  if (!t || !t->data || t->dev != FR_DEV_CPU)
    return 0;
  if (t->dtype != FR_F32 && t->dtype != FR_F16 && t->dtype != FR_BF16 && t->dtype != FR_F64)
    return 0;
  const unsigned char *d = t->data;
  int64_t n = fr_tensor_numel(t), count = 0;
  /* v = |bits| + add has its top bit set exactly when |bits| >= the inf/NaN threshold. OR-ing those over
   * the tensor is integer and/add/or, written with GCC vector extensions (16-byte vectors, two at a time) so
   * it runs as SIMD on any x86-64 at -O2 (checkpoints are gigabytes). Only when a top bit shows up are the
   * bad values counted. */
#define FR__SCAN(type, absmask, add)                                                                         \
  {                                                                                                          \
    typedef type fr__vt __attribute__((vector_size(16)));                                                    \
    enum { L = 16 / sizeof(type), TOP = 8 * sizeof(type) - 1 };                                              \
    fr__vt va = {0}, vb = {0};                                                                               \
    int64_t i = 0;                                                                                           \
    for (; i + 2 * L <= n; i += 2 * L) {                                                                     \
      fr__vt v, w;                                                                                           \
      memcpy(&v, d + sizeof(type) * (size_t)i, sizeof v);                                                    \
      memcpy(&w, d + sizeof(type) * (size_t)(i + L), sizeof w);                                              \
      va |= (v & (type)(absmask)) + (type)(add);                                                             \
      vb |= (w & (type)(absmask)) + (type)(add);                                                             \
    }                                                                                                        \
    va |= vb;                                                                                                \
    type any = 0;                                                                                            \
    for (int k = 0; k < L; k++)                                                                              \
      any |= va[k];                                                                                          \
    for (; i < n; i++) {                                                                                     \
      type u;                                                                                                \
      memcpy(&u, d + sizeof(type) * (size_t)i, sizeof u);                                                    \
      any |= (type)((type)(u & (type)(absmask)) + (type)(add));                                              \
    }                                                                                                        \
    if (any >> TOP)                                                                                          \
      for (i = 0; i < n; i++) {                                                                              \
        type u;                                                                                              \
        memcpy(&u, d + sizeof(type) * (size_t)i, sizeof u);                                                  \
        count += (type)((type)(u & (type)(absmask)) + (type)(add)) >> TOP;                                   \
      }                                                                                                      \
  }
  switch (t->dtype) {
  case FR_F32: FR__SCAN(uint32_t, 0x7FFFFFFFu, 0x00800000u) break; /* >= 0x7F800000 */
  case FR_F16: FR__SCAN(uint16_t, 0x7FFFu, 0x0400u) break;         /* >= 0x7C00 */
  case FR_BF16: FR__SCAN(uint16_t, 0x7FFFu, 0x0080u) break;        /* >= 0x7F80 */
  default: /* F64: >= (1023 + 128) << 52, |x| >= 2^128 */
    FR__SCAN(uint64_t, 0x7FFFFFFFFFFFFFFFull, 0x3810000000000000ull) break;
  }
#undef FR__SCAN
  if (count && first)
    for (int64_t i = 0; i < n; i++)
      if (fr__nonfinite_at(d, t->dtype, i)) {
        *first = i;
        break;
      }
  return count;
}
