/* Node signatures: the cache keys of node outputs.
 *
 * A node's signature is XXH3-128 over a canonical byte encoding of everything that decides its
 * outputs (DESIGN.md, "Execution and the cache"):
 *   format tag "flowrun-sig/1", node type name, spec version,
 *   every input sorted by name, each one of:
 *     literal:  int as int64, float as the IEEE-754 bits of the double (-0 and NaN made canonical),
 *               bool as one byte, string with its length;
 *     link:     the upstream node's signature and output index (the output's link signature instead
 *               when the upstream node has inputs marked FR_IN_ONLY_FOR: fr_signature_link);
 *     file:     (FR_IN_FILE / FR_IN_MODEL_FILE) the XXH3-128 of the file's bytes, not its name, so a
 *               renamed or moved file keeps its cache; a sha256 pin (core/pins.h) is checked here, when
 *               the file is first used, but is not part of the key: pinning changes no key;
 *     unset:    a marker;
 *   the compute context (device, dtype), for output nodes the output folder (absolute, links resolved:
 *   the engine passes it so; their "files" output names files in it), and for non-deterministic nodes a
 *   per-run nonce.
 * Node ids are not in it: renaming a node keeps its cache. An output's key is XXH3-128 of the node
 * signature and the output index. All integers are little-endian; all strings length-prefixed. */
#ifndef FR_SIGNATURE_H
#define FR_SIGNATURE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/cache.h"
#include "core/graph.h"
#include "core/status.h"

/* Memoised file fingerprints: in the cache's kv table under "fp|path|size|mtime_ns|inode|ctime_ns" when a
 * cache is given, otherwise in this in-memory table (so a 7 GB checkpoint is hashed once per process). */
struct fr_fp_memo {
  int n, cap;
  char **keys;
  struct fr_key *fps;
};
void fr_fp_memo_free(struct fr_fp_memo *m);
/* The entry under key, or NULL; adds one (best effort: a memo that cannot grow only costs a second hash
 * later). m may be NULL. */
const struct fr_key *fr_fp_memo_get(const struct fr_fp_memo *m, const char *key);
void fr_fp_memo_put(struct fr_fp_memo *m, const char *key, const struct fr_key *fp);

struct fr_sig_ctx {
  const char *device;     /* "cpu" or "cuda" */
  const char *dtype;      /* "" when the device has no choice */
  const char *output_dir; /* mixed into output nodes' signatures (the engine: absolute, links resolved) */
  uint64_t nonce[2];      /* mixed into non-deterministic nodes' signatures; fresh per run */
  struct fr_cache *cache; /* may be NULL */
  struct fr_fp_memo *memo;
  const char *const *model_dirs; /* for FR_IN_PROMPT inputs: where embeddings/ folders are */
  int n_model_dirs;
  /* Per node, per output: what a link to that output hashes (fr_signature_link); NULL (or a NULL row):
   * the upstream node's signature. */
  struct fr_key *const *link_sigs;
};

/* XXH3-128 of the bytes of the file at path, read now (not memoised). FR_E_IO naming the path. */
enum fr_status fr_file_hash(const char *path, struct fr_key *out, struct fr_err *err);
/* The content fingerprint of a file: XXH3-128 of its bytes, memoised by path, size, mtime, inode and
 * change time (a file rewritten with its size and mtime put back is hashed again).
 * FR_E_IO naming the path when it cannot be read. */
enum fr_status fr_file_fingerprint(struct fr_sig_ctx *ctx, const char *path, struct fr_key *out,
                                   struct fr_err *err);

/* Appends node `idx`'s canonical encoding to b (exposed for tests and debugging). sigs holds the
 * signatures of the nodes it links to (indexed like g->nodes). */
enum fr_status fr_signature_encode(struct fr_sig_ctx *ctx, const struct fr_graph *g, int idx,
                                   const struct fr_key *sigs, struct fr_buf *b, struct fr_err *err);
/* The signature of node idx. Errors: a file input that cannot be fingerprinted (FR_E_IO), FR_E_NOMEM. */
enum fr_status fr_signature_node(struct fr_sig_ctx *ctx, const struct fr_graph *g, int idx,
                                 const struct fr_key *sigs, struct fr_key *out, struct fr_err *err);
/* What a link to output `output` of node idx hashes, given the node signatures sigs: sigs[idx] itself,
 * unless some input of the node is marked FR_IN_ONLY_FOR another output; then a signature that leaves
 * out the inputs marked for other outputs. */
enum fr_status fr_signature_link(struct fr_sig_ctx *ctx, const struct fr_graph *g, int idx, int output,
                                 const struct fr_key *sigs, struct fr_key *out, struct fr_err *err);
/* The cache key of output `output` of a node with signature sig (the engine passes the link signature). */
void fr_signature_output(const struct fr_key *sig, int output, struct fr_key *out);

/* 32 lowercase hex digits and a NUL. */
void fr_key_hex(const struct fr_key *k, char out[33]);
bool fr_key_equal(const struct fr_key *a, const struct fr_key *b);

#endif
