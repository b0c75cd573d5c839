/* safetensors reader and writer. See core/safetensors.h for the layout and the promises.
 *
 * The reader validates the whole header before handing anything out, so code that loads weights can
 * trust every entry: the dtype is known, the shape is sane, the byte range lies inside the data area,
 * matches shape x dtype size and overlaps no other tensor. */
#include "core/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/alloc.h"
#include "core/json.h"
#include "core/pins.h"
#include "core/reader.h"
#include "core/sha256.h"

/* A header larger than this is refused before it is parsed: the biggest real checkpoints have headers
 * of a few MiB, so anything larger is a corrupt length field (the reference implementation uses the
 * same bound). */
#define FR__ST_MAX_HEADER (100u * 1024 * 1024)

/* Open-addressing hash table over entry indices, for name look-ups in checkpoints with thousands of
 * tensors. cap is a power of two >= 2 n; a slot holds an entry index or -1. */
struct fr__st_index {
  size_t mask;
  int32_t *slots;
};

static uint64_t fr__name_hash(const char *name) {
  return XXH3_64bits(name, strlen(name));
}

static const char *fr__what(const char *what) {
  return what ? what : "<memory>";
}

/* Builds the index; FR_E_FORMAT on a duplicate name (the JSON reader keeps duplicate keys). */
static enum fr_status fr__st_index_build(struct fr_safetensors *st, struct fr_err *err) {
  size_t cap = 16;
  while (cap < (size_t)st->n * 2)
    cap *= 2;
  struct fr__st_index *ix = fr_arena_alloc(st->arena, sizeof *ix);
  int32_t *slots = ix ? fr_arena_alloc(st->arena, cap * sizeof *slots) : NULL;
  if (!slots)
    return fr_errf(err, FR_E_NOMEM, "%s: out of memory indexing %d tensors", st->path, st->n);
  memset(slots, 0xff, cap * sizeof *slots); /* all -1 */
  ix->mask = cap - 1;
  ix->slots = slots;
  for (int i = 0; i < st->n; i++) {
    size_t h = (size_t)fr__name_hash(st->entries[i].name) & ix->mask;
    while (slots[h] >= 0) {
      if (strcmp(st->entries[slots[h]].name, st->entries[i].name) == 0)
        return fr_errf(err, FR_E_FORMAT, "%s: tensor %s: listed twice in the header", st->path,
                       st->entries[i].name);
      h = (h + 1) & ix->mask;
    }
    slots[h] = i;
  }
  st->index = ix;
  return FR_OK;
}

const struct fr_st_entry *fr_st_find(const struct fr_safetensors *st, const char *name) {
  if (!st || !name || !st->index)
    return NULL;
  const struct fr__st_index *ix = st->index;
  size_t h = (size_t)fr__name_hash(name) & ix->mask;
  while (ix->slots[h] >= 0) {
    if (strcmp(st->entries[ix->slots[h]].name, name) == 0)
      return &st->entries[ix->slots[h]];
    h = (h + 1) & ix->mask;
  }
  return NULL;
}

const char *fr_st_meta(const struct fr_safetensors *st, const char *key) {
  if (!st || !key)
    return NULL;
  for (int i = 0; i < st->n_meta; i++)
    if (strcmp(st->meta_keys[i], key) == 0)
      return st->meta_values[i];
  return NULL;
}

/* An integer JSON value in [0, INT64_MAX], or false. */
static bool fr__json_uint(const struct fr_json *v, int64_t *out) {
  if (!v || v->type != FR_JSON_NUMBER || !v->is_int || v->i < 0)
    return false;
  *out = v->i;
  return true;
}

/* Validates one header entry and fills e (data pointer set by the caller once offsets are checked). */
static enum fr_status fr__st_entry(struct fr_safetensors *st, const char *name, const struct fr_json *v,
                                   size_t data_len, size_t data_off, bool file, struct fr_st_entry *e,
                                   struct fr_err *err) {
  const char *p = st->path;
  e->name = name;
  if (v->type != FR_JSON_OBJECT)
    return fr_errf(err, FR_E_FORMAT, "%s: tensor %s: header entry is not an object", p, name);
  const struct fr_json *dt = fr_json_get(v, "dtype");
  const struct fr_json *shape = fr_json_get(v, "shape");
  const struct fr_json *offs = fr_json_get(v, "data_offsets");
  if (!dt || dt->type != FR_JSON_STRING)
    return fr_errf(err, FR_E_FORMAT, "%s: tensor %s: missing or non-string \"dtype\"", p, name);
  if (!fr_dtype_from_name(dt->str, dt->len, &e->dtype))
    return fr_errf(err, FR_E_FORMAT,
                   "%s: tensor %s: unknown dtype \"%.32s\" (known: F64 F32 F16 BF16 I64 I32 I16 "
                   "I8 U8 BOOL)",
                   p, name, dt->str);
  if (!shape || shape->type != FR_JSON_ARRAY)
    return fr_errf(err, FR_E_FORMAT, "%s: tensor %s: missing or non-array \"shape\"", p, name);
  if (shape->n > FR_MAX_DIMS)
    return fr_errf(err, FR_E_FORMAT, "%s: tensor %s: %d dimensions, at most %d supported", p, name, shape->n,
                   FR_MAX_DIMS);
  e->ndim = shape->n;
  uint64_t nbytes = fr_dtype_size(e->dtype);
  for (int d = 0; d < FR_MAX_DIMS; d++) {
    if (d >= shape->n) {
      e->shape[d] = 1;
      continue;
    }
    int64_t s;
    if (!fr__json_uint(&shape->items[d], &s))
      return fr_errf(err, FR_E_FORMAT, "%s: tensor %s: shape[%d] is not a non-negative integer", p, name, d);
    e->shape[d] = s;
    if (__builtin_mul_overflow(nbytes, (uint64_t)s, &nbytes) || nbytes > (uint64_t)SIZE_MAX)
      return fr_errf(err, FR_E_FORMAT, "%s: tensor %s: shape overflows the byte size", p, name);
  }
  int64_t begin, end;
  if (!offs || offs->type != FR_JSON_ARRAY || offs->n != 2 || !fr__json_uint(&offs->items[0], &begin) ||
      !fr__json_uint(&offs->items[1], &end))
    return fr_errf(err, FR_E_FORMAT,
                   "%s: tensor %s: \"data_offsets\" must be [begin, end] of non-negative integers", p, name);
  if (begin > end)
    return fr_errf(err, FR_E_FORMAT, "%s: tensor %s: data_offsets begin %lld > end %lld", p, name,
                   (long long)begin, (long long)end);
  if ((uint64_t)end > data_len) {
    if (file) /* a file: the offsets were written for more bytes than there are */
      return fr_errf(err, FR_E_FORMAT,
                     "%s: truncated: tensor %s ends at offset %llu, file has %zu bytes (an interrupted "
                     "download or copy? fetch the file again)",
                     p, name, (unsigned long long)((uint64_t)end + data_off), data_len + data_off);
    return fr_errf(err, FR_E_FORMAT,
                   "%s: tensor %s: data_offsets [%lld, %lld] outside the data area (%zu bytes)", p, name,
                   (long long)begin, (long long)end, data_len);
  }
  if ((uint64_t)(end - begin) != nbytes) {
    char sh[96];
    return fr_errf(err, FR_E_FORMAT,
                   "%s: tensor %s: %s %s needs %llu bytes, data_offsets give %lld (offsets %llu..%llu of the "
                   "file)",
                   p, name, fr_dtype_name(e->dtype), fr_shape_str_dims(e->ndim, e->shape, sh, sizeof sh),
                   (unsigned long long)nbytes, (long long)(end - begin),
                   (unsigned long long)((uint64_t)begin + data_off),
                   (unsigned long long)((uint64_t)end + data_off));
  }
  e->offset = (size_t)begin;
  e->nbytes = (size_t)nbytes;
  return FR_OK;
}

struct fr__span {
  size_t begin, end;
  int idx;
};
static int fr__cmp_span(const void *a, const void *b) {
  const struct fr__span *x = a, *y = b;
  if (x->begin != y->begin)
    return x->begin < y->begin ? -1 : 1;
  return x->end < y->end ? -1 : x->end > y->end;
}

/* Refuses two tensors sharing bytes. After sorting by begin, an entry overlaps an earlier one exactly
 * when it begins before the furthest end seen so far. Empty tensors occupy no bytes. */
static enum fr_status fr__st_check_overlap(struct fr_safetensors *st, size_t data_off, struct fr_err *err) {
  if (st->n < 2)
    return FR_OK;
  struct fr__span *sp = fr_malloc(sizeof *sp * (size_t)st->n);
  if (!sp)
    return fr_errf(err, FR_E_NOMEM, "%s: out of memory checking %d tensors", st->path, st->n);
  for (int i = 0; i < st->n; i++)
    sp[i] = (struct fr__span){st->entries[i].offset, st->entries[i].offset + st->entries[i].nbytes, i};
  qsort(sp, (size_t)st->n, sizeof *sp, fr__cmp_span);
  enum fr_status rc = FR_OK;
  int far = 0; /* index into sp of the span with the furthest end so far */
  for (int k = 1; k < st->n; k++) {
    if (sp[k].end > sp[k].begin && sp[k].begin < sp[far].end) {
      const struct fr_st_entry *a = &st->entries[sp[far].idx], *b = &st->entries[sp[k].idx];
      rc = fr_errf(err, FR_E_FORMAT,
                   "%s: tensor %s: data [%zu, %zu) overlaps tensor %s [%zu, %zu) (data area from offset %zu)",
                   st->path, b->name, sp[k].begin, sp[k].end, a->name, sp[far].begin, sp[far].end, data_off);
      break;
    }
    if (sp[k].end > sp[far].end)
      far = k;
  }
  fr_free(sp);
  return rc;
}

/* The header length of the first 8 bytes b of a file or buffer of len bytes, checked. */
static enum fr_status fr__st_hlen(const unsigned char *b, size_t len, const char *what, uint64_t *out,
                                  struct fr_err *err) {
  if (len < 8)
    return fr_errf(err, FR_E_FORMAT, "%s: %zu bytes, too short for a safetensors header", what, len);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--)
    hlen = hlen << 8 | b[i];
  if (hlen < 2)
    return fr_errf(err, FR_E_FORMAT, "%s: header length %llu is too small", what, (unsigned long long)hlen);
  if (hlen > FR__ST_MAX_HEADER)
    return fr_errf(err, FR_E_FORMAT, "%s: header length %llu exceeds the %u byte limit (corrupt file?)", what,
                   (unsigned long long)hlen, FR__ST_MAX_HEADER);
  if (hlen > len - 8)
    return fr_errf(err, FR_E_FORMAT,
                   "%s: header length %llu past the end of the file (%zu bytes; truncated?)", what,
                   (unsigned long long)hlen, len);
  *out = hlen;
  return FR_OK;
}

/* Parses and validates the header in b (its first 8 + hlen bytes must be there) of a file or buffer of len
 * bytes in all. data: where the data area is in memory (NULL: not yet; fr__st_set_data later). file: the
 * messages speak of a file (truncation). */
static enum fr_status fr__st_parse(const unsigned char *b, size_t len, const unsigned char *data,
                                   const char *what, bool file, struct fr_safetensors **out,
                                   struct fr_err *err) {
  *out = NULL;
  uint64_t hlen = 0;
  enum fr_status hrc = fr__st_hlen(b, len, what, &hlen, err);
  if (hrc)
    return hrc;
  size_t data_len = len - 8 - (size_t)hlen, data_off = 8 + (size_t)hlen;

  struct fr_arena *a = fr_arena_new(0);
  struct fr_safetensors *st = a ? fr_arena_alloc(a, sizeof *st) : NULL;
  if (!st || !(st->path = fr_arena_strdup(a, what))) {
    fr_arena_free(a);
    return fr_errf(err, FR_E_NOMEM, "%s: out of memory", what);
  }
  st->arena = a;
  enum fr_status rc;
  struct fr_json *root = NULL;
  rc = fr_json_parse(a, (const char *)b + 8, (size_t)hlen, 8, &root, err);
  if (rc) {
    fr_err_prefix(err, rc, "%s: header (JSON from file offset 8): ", what);
    goto fail;
  }
  if (root->type != FR_JSON_OBJECT) {
    rc = fr_errf(err, FR_E_FORMAT, "%s: header is not a JSON object", what);
    goto fail;
  }
  st->entries = fr_arena_alloc(a, sizeof *st->entries * (size_t)(root->n ? root->n : 1));
  if (!st->entries) {
    rc = fr_errf(err, FR_E_NOMEM, "%s: out of memory", what);
    goto fail;
  }
  bool seen_meta = false;
  for (int i = 0; i < root->n; i++) {
    const char *name = root->keys[i];
    const struct fr_json *v = &root->items[i];
    if (strcmp(name, "__metadata__") == 0) {
      if (seen_meta || v->type != FR_JSON_OBJECT) {
        rc = fr_errf(err, FR_E_FORMAT, "%s: __metadata__ %s", what,
                     seen_meta ? "appears twice" : "is not an object");
        goto fail;
      }
      seen_meta = true;
      st->n_meta = v->n;
      st->meta_keys = (const char **)v->keys;
      st->meta_values = fr_arena_alloc(a, sizeof *st->meta_values * (size_t)(v->n ? v->n : 1));
      if (!st->meta_values) {
        rc = fr_errf(err, FR_E_NOMEM, "%s: out of memory", what);
        goto fail;
      }
      for (int k = 0; k < v->n; k++) {
        if (v->items[k].type != FR_JSON_STRING) {
          rc = fr_errf(err, FR_E_FORMAT, "%s: __metadata__ key %s: value is not a string", what, v->keys[k]);
          goto fail;
        }
        st->meta_values[k] = v->items[k].str;
      }
      continue;
    }
    struct fr_st_entry *e = &st->entries[st->n];
    rc = fr__st_entry(st, name, v, data_len, data_off, file, e, err);
    if (rc)
      goto fail;
    e->data = data ? data + e->offset : NULL;
    st->n++;
  }
  if ((rc = fr__st_index_build(st, err)) || (rc = fr__st_check_overlap(st, data_off, err)))
    goto fail;
  *out = st;
  return FR_OK;
fail:
  fr_arena_free(a);
  return rc;
}

enum fr_status fr_st_parse(const void *buf, size_t len, const char *what, struct fr_safetensors **out,
                           struct fr_err *err) {
  what = fr__what(what);
  uint64_t hlen = 0;
  enum fr_status rc = fr__st_hlen(buf, len, what, &hlen, err);
  if (rc)
    return rc;
  return fr__st_parse(buf, len, (const unsigned char *)buf + 8 + hlen, what, false, out, err);
}

static void fr__sha_chunk(void *user, const void *data, size_t len) {
  fr_sha256_update(user, data, len);
}

enum fr_status fr_st_open_ex(const char *path, const struct fr_st_open_opts *o, struct fr_safetensors **out,
                             struct fr_err *err) {
  *out = NULL;
  static const struct fr_st_open_opts defaults = {0};
  if (!o)
    o = &defaults;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return fr_errf(err, errno == ENOENT ? FR_E_NOTFOUND : FR_E_IO, "%s: cannot open: %s", path,
                   strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    int e = errno;
    close(fd);
    return fr_errf(err, FR_E_IO, "%s: cannot stat: %s", path, strerror(e));
  }
  if (!S_ISREG(sb.st_mode)) {
    close(fd);
    return fr_errf(err, FR_E_IO, "%s: not a regular file", path);
  }
  size_t size = (size_t)sb.st_size;
  /* The header through the retrying reader, checked against the file's size before anything is mapped:
   * a truncated file is reported here, never found as a SIGBUS on a mapped page past its end. */
  unsigned char len8[8];
  uint64_t hlen = 0;
  enum fr_status rc =
      size < 8 ? fr_errf(err, FR_E_FORMAT, "%s: %zu bytes, too short for a safetensors header", path, size)
               : fr_read_at(fd, path, len8, 8, 0, err);
  if (!rc)
    rc = fr__st_hlen(len8, size, path, &hlen, err);
  unsigned char *hdr = rc ? NULL : fr_malloc(8 + (size_t)hlen);
  if (!rc && !hdr)
    rc = fr_errf(err, FR_E_NOMEM, "%s: out of memory for a %llu-byte header", path, (unsigned long long)hlen);
  if (!rc) {
    memcpy(hdr, len8, 8);
    rc = fr_read_at(fd, path, hdr + 8, (size_t)hlen, 8, err);
  }
  struct fr_safetensors *st = NULL;
  if (!rc)
    rc = fr__st_parse(hdr, size, NULL, path, true, &st, err);
  /* The verifying pass: every data byte read through the reader (retried where the disk fails
   * transiently; the pages are then in the page cache) and, with a pin, hashed in the same pass. */
  struct fr_sha256 sha;
  if (!rc && o->sha256)
    fr_sha256_init(&sha);
  if (!rc && o->sha256)
    fr_sha256_update(&sha, hdr, 8 + (size_t)hlen);
  fr_free(hdr);
  if (!rc && (!o->no_verify || o->sha256))
    rc = fr_read_pass(fd, path, 8 + hlen, size - 8 - hlen, o->sha256 ? fr__sha_chunk : NULL, &sha, err);
  if (!rc && o->sha256) {
    char hex[65];
    fr_sha256_final_hex(&sha, hex);
    if (!fr_pin_matches(o->sha256, hex))
      rc = fr_errf(err, FR_E_INVALID,
                   "%s: its sha256 is %s, but the graph pins %s: the file changed (or is another file) since "
                   "it was checked",
                   path, hex, o->sha256);
  }
  void *map = MAP_FAILED;
  if (!rc) {
    map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED)
      rc = fr_errf(err, FR_E_IO, "%s: cannot map: %s", path, strerror(errno));
  }
  close(fd); /* the mapping keeps the file alive */
  if (rc) {
    fr_st_close(st);
    return rc;
  }
  const unsigned char *data = (const unsigned char *)map + 8 + hlen;
  for (int i = 0; i < st->n; i++)
    st->entries[i].data = data + st->entries[i].offset;
  st->map = map;
  st->map_size = size;
  *out = st;
  return FR_OK;
}

enum fr_status fr_st_open(const char *path, struct fr_safetensors **out, struct fr_err *err) {
  return fr_st_open_ex(path, NULL, out, err);
}

void fr_st_close(struct fr_safetensors *st) {
  if (!st)
    return;
  if (st->map)
    munmap(st->map, st->map_size);
  fr_arena_free(st->arena); /* st itself lives in the arena */
}

void fr_st_release(const struct fr_safetensors *st, const struct fr_st_entry *e) {
  if (!st || !st->map || !e || !e->nbytes)
    return;
  long pg = sysconf(_SC_PAGESIZE);
  if (pg <= 0)
    return;
  uintptr_t lo = (uintptr_t)e->data, hi = lo + e->nbytes, base = (uintptr_t)st->map;
  if (lo < base || hi > base + st->map_size)
    return;                                                      /* not in this file's mapping */
  lo = (lo + (uintptr_t)pg - 1) / (uintptr_t)pg * (uintptr_t)pg; /* whole pages inside [lo, hi) only: */
  hi = hi / (uintptr_t)pg * (uintptr_t)pg;                       /* neighbours keep theirs */
  if (hi > lo)
    (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

struct fr_tensor *fr_st_view(const struct fr_st_entry *e) {
  size_t align = fr_dtype_size(e->dtype);
  if (((uintptr_t)e->data % align) == 0)
    return fr_tensor_view(e->dtype, e->ndim, e->shape, (void *)e->data);
  /* Files written by flowrun and by the safetensors library keep data 8-byte aligned; for another
   * writer's misaligned data, an aligned owned copy keeps typed reads defined. fr_tensor_free frees
   * both kinds the same way. */
  struct fr_tensor *t = fr_tensor_new(e->dtype, e->ndim, e->shape);
  if (t)
    memcpy(t->data, e->data, e->nbytes);
  return t;
}

/* ---- writer ---- */

static int fr__cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static enum fr_status fr__st_check_items(const struct fr_st_item *items, int n, struct fr_err *err) {
  for (int i = 0; i < n; i++) {
    const char *name = items[i].name;
    const struct fr_tensor *t = items[i].t;
    if (!name || !t)
      return fr_errf(err, FR_E_INVALID, "safetensors item %d: missing name or tensor", i);
    if (strcmp(name, "__metadata__") == 0)
      return fr_errf(err, FR_E_INVALID, "tensor name __metadata__ is reserved");
    if ((unsigned)t->dtype >= FR_DTYPE_COUNT || t->ndim < 0 || t->ndim > FR_MAX_DIMS)
      return fr_errf(err, FR_E_INVALID, "tensor %s: invalid dtype or rank", name);
    if (t->dev != FR_DEV_CPU)
      return fr_errf(err, FR_E_INVALID, "tensor %s: not on the CPU", name);
    for (int d = 0; d < t->ndim; d++)
      if (t->shape[d] < 0)
        return fr_errf(err, FR_E_INVALID, "tensor %s: negative dimension", name);
    if (fr_tensor_nbytes(t) > 0 && !t->data)
      return fr_errf(err, FR_E_INVALID, "tensor %s: no data", name);
  }
  if (n < 2)
    return FR_OK;
  const char **names = fr_malloc(sizeof *names * (size_t)n);
  if (!names)
    return fr_errf(err, FR_E_NOMEM, "out of memory checking tensor names");
  for (int i = 0; i < n; i++)
    names[i] = items[i].name;
  qsort(names, (size_t)n, sizeof *names, fr__cmp_str);
  enum fr_status rc = FR_OK;
  for (int i = 1; i < n; i++)
    if (strcmp(names[i - 1], names[i]) == 0) {
      rc = fr_errf(err, FR_E_INVALID, "tensor %s: name used twice", names[i]);
      break;
    }
  fr_free(names);
  return rc;
}

enum fr_status fr_st_serialize(const struct fr_st_item *items, int n, const char *const *meta_keys,
                               const char *const *meta_values, int n_meta, struct fr_buf *out,
                               struct fr_err *err) {
  if (n < 0 || n_meta < 0 || (n > 0 && !items) || (n_meta > 0 && (!meta_keys || !meta_values)))
    return fr_errf(err, FR_E_INVALID, "fr_st_serialize: bad arguments");
  enum fr_status rc = fr__st_check_items(items, n, err);
  if (rc)
    return rc;
  for (int i = 0; i < n_meta; i++)
    if (!meta_keys[i] || !meta_values[i])
      return fr_errf(err, FR_E_INVALID, "metadata entry %d: NULL key or value", i);

  /* Header: {"__metadata__":{...},"name":{"dtype":..,"shape":[..],"data_offsets":[b,e]},...}, padded
   * with spaces so the data area starts 8-byte aligned; each tensor's begin is 8-byte aligned too. */
  struct fr_buf h = {0};
  fr_buf_putc(&h, '{');
  bool first = true;
  if (n_meta > 0) {
    fr_buf_puts(&h, "\"__metadata__\":{");
    for (int i = 0; i < n_meta; i++) {
      if (i)
        fr_buf_putc(&h, ',');
      fr_buf_json_str(&h, meta_keys[i]);
      fr_buf_putc(&h, ':');
      fr_buf_json_str(&h, meta_values[i]);
    }
    fr_buf_putc(&h, '}');
    first = false;
  }
  size_t off = 0;
  for (int i = 0; i < n; i++) {
    const struct fr_tensor *t = items[i].t;
    size_t nb = fr_tensor_nbytes(t);
    if (!first)
      fr_buf_putc(&h, ',');
    first = false;
    fr_buf_json_str(&h, items[i].name);
    fr_buf_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", fr_dtype_name(t->dtype));
    for (int d = 0; d < t->ndim; d++)
      fr_buf_printf(&h, "%s%lld", d ? "," : "", (long long)t->shape[d]);
    fr_buf_printf(&h, "],\"data_offsets\":[%zu,%zu]}", off, off + nb);
    off = (off + nb + 7) & ~(size_t)7;
  }
  fr_buf_putc(&h, '}');
  while ((8 + h.len) % 8)
    fr_buf_putc(&h, ' ');
  if (h.oom) {
    fr_buf_free(&h);
    return fr_errf(err, FR_E_NOMEM, "out of memory writing a safetensors header");
  }
  unsigned char len8[8];
  for (int i = 0; i < 8; i++)
    len8[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
  fr_buf_append(out, len8, 8);
  fr_buf_append(out, h.data, h.len);
  fr_buf_free(&h);
  static const char zeros[8];
  for (int i = 0; i < n; i++) {
    size_t nb = fr_tensor_nbytes(items[i].t);
    if (nb)
      fr_buf_append(out, items[i].t->data, nb);
    if (i + 1 < n && nb % 8)
      fr_buf_append(out, zeros, 8 - nb % 8);
  }
  if (out->oom)
    return fr_errf(err, FR_E_NOMEM, "out of memory writing safetensors data");
  return FR_OK;
}

/* Writes all of p or fails with errno set. */
static bool fr__write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return false;
    }
    p += w;
    n -= (size_t)w;
  }
  return true;
}

enum fr_status fr_st_write_file(const char *path, const struct fr_st_item *items, int n,
                                const char *const *meta_keys, const char *const *meta_values, int n_meta,
                                struct fr_err *err) {
  struct fr_buf b = {0};
  enum fr_status rc = fr_st_serialize(items, n, meta_keys, meta_values, n_meta, &b, err);
  if (rc) {
    fr_buf_free(&b);
    return fr_err_prefix(err, rc, "%s: ", path);
  }
  size_t plen = strlen(path);
  char *tmp = fr_malloc(plen + 16);
  if (!tmp) {
    fr_buf_free(&b);
    return fr_errf(err, FR_E_NOMEM, "%s: out of memory", path);
  }
  memcpy(tmp, path, plen);
  memcpy(tmp + plen, ".tmp.XXXXXX", 12);
  int fd = mkstemp(tmp);
  if (fd < 0) {
    rc = fr_errf(err, FR_E_IO, "%s: cannot create a temporary file beside it: %s", path, strerror(errno));
    goto out;
  }
  /* mkstemp creates 0600; a written file should be as readable as any other the user writes (umask is
   * not consulted: reading it means changing it, which is not thread-safe). */
  (void)fchmod(fd, 0644);
  if (!fr__write_all(fd, b.data, b.len) || fsync(fd) != 0) {
    rc = fr_errf(err, FR_E_IO, "%s: write failed: %s", path, strerror(errno));
    close(fd);
    unlink(tmp);
    goto out;
  }
  if (close(fd) != 0 || rename(tmp, path) != 0) {
    rc = fr_errf(err, FR_E_IO, "%s: cannot replace the file: %s", path, strerror(errno));
    unlink(tmp);
    goto out;
  }
  /* Make the rename itself durable (best effort: not every file system lets a folder be fsync'd). */
  char *slash = strrchr(tmp, '/');
  if (slash) {
    *slash = 0;
    int dfd = open(slash == tmp ? "/" : tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      (void)fsync(dfd);
      close(dfd);
    }
  }
out:
  fr_free(tmp);
  fr_buf_free(&b);
  return rc;
}
