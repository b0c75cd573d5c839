/* safetensors: the weight format of every checkpoint flowrun loads, and the encoding of cached values
 * and saved latents.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets:[b,e]},
 * "__metadata__": {str: str}}, then the data. The reader mmaps a file (or takes a memory buffer) and
 * validates everything before handing out a tensor: header length within the file and a sane bound,
 * known dtype names, offsets inside the data area and not overlapping, shape x dtype size = byte
 * length. A bad file is refused with a message naming the file and the tensor. */
#ifndef FR_SAFETENSORS_H
#define FR_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/status.h"
#include "core/tensor.h"

struct fr_st_entry {
  const char *name;
  enum fr_dtype dtype;
  int ndim;
  int64_t shape[FR_MAX_DIMS];
  size_t offset, nbytes; /* within the data area */
  const void *data;      /* points into the mapping or buffer */
};

struct fr_safetensors {
  const char *path;            /* for messages; "<memory>" for buffers */
  int n;                       /* entries, in file order */
  struct fr_st_entry *entries;
  int n_meta;                  /* __metadata__ pairs */
  const char **meta_keys, **meta_values;
  /* private */
  void *map;
  size_t map_size;
  struct fr_arena *arena;
  void *index; /* name lookup */
};

/* Opens path: reads its header through the retrying reader (core/reader.h), validates it against the
 * file's size, reads the data once through the reader (a verifying pass: transient read errors retried,
 * the pages left in the page cache), then mmaps it read-only. FR_E_NOTFOUND / FR_E_IO when it cannot be
 * opened or read ("PATH: read error at offset X after N attempts: ..."), FR_E_FORMAT when it is not a
 * valid safetensors file (err names the file and, where it applies, the tensor and the offset); a file
 * shorter than its header says is "PATH: truncated: tensor NAME ends at offset X, file has Y bytes".
 * Progress of the verifying pass goes to this thread's read listener (fr_read_set_progress). A file
 * truncated by someone else AFTER it was opened can still fault when a mapped page is read. */
enum fr_status fr_st_open(const char *path, struct fr_safetensors **out, struct fr_err *err);
struct fr_st_open_opts {
  /* skip the verifying pass (the data is only mapped; faster for a file read in part) */
  bool no_verify;
  /* a pin (10 or 64 lowercase hex digits): the verifying pass hashes the whole file and it must match
   * (FR_E_INVALID naming both), so the bytes mapped are the bytes checked */
  const char *sha256;
};
enum fr_status fr_st_open_ex(const char *path, const struct fr_st_open_opts *o, struct fr_safetensors **out,
                             struct fr_err *err);
/* The same over a buffer the caller keeps alive while the result is used. */
enum fr_status fr_st_parse(const void *buf, size_t len, const char *what, struct fr_safetensors **out,
                           struct fr_err *err);
void fr_st_close(struct fr_safetensors *st); /* NULL is fine */
/* Tells the kernel this process is done with entry e's bytes for now: the whole pages of a mapped file that
 * lie inside e's data leave the process's resident set (MADV_DONTNEED on a read-only private mapping: a
 * later read faults them in again from the file, so nothing is lost). Called after a loader has copied or
 * converted a tensor, so the file's pages are not kept resident beside the copy. A no-op for buffers
 * (fr_st_parse) and where madvise is unavailable; never fails. */
void fr_st_release(const struct fr_safetensors *st, const struct fr_st_entry *e);

const struct fr_st_entry *fr_st_find(const struct fr_safetensors *st, const char *name);
const char *fr_st_meta(const struct fr_safetensors *st, const char *key); /* NULL if absent */
/* A borrowed view of an entry's data (no copy, not owned): free it with fr_tensor_free. Data that is
 * not aligned to its dtype's size (possible only in files from other writers) is copied into an owned,
 * aligned tensor instead; fr_tensor_free frees either. NULL when out of memory. */
struct fr_tensor *fr_st_view(const struct fr_st_entry *e);

/* Writer. Tensors are CPU tensors in any dtype; metadata may be NULL. Names must be unique and not
 * "__metadata__" (FR_E_INVALID otherwise). fr_st_serialize appends the blob to out; data offsets are
 * 8-byte aligned relative to the blob's start. Strings are written as JSON, so invalid UTF-8 in a name
 * or metadata value becomes U+FFFD. */
struct fr_st_item {
  const char *name;
  const struct fr_tensor *t;
};
enum fr_status fr_st_serialize(const struct fr_st_item *items, int n, const char *const *meta_keys,
                               const char *const *meta_values, int n_meta, struct fr_buf *out,
                               struct fr_err *err);
/* Writes atomically: a temporary file in the same folder, fsync, rename. Nothing half-written stays. */
enum fr_status fr_st_write_file(const char *path, const struct fr_st_item *items, int n,
                                const char *const *meta_keys, const char *const *meta_values, int n_meta,
                                struct fr_err *err);

#endif
