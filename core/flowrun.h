/* flowrun: the public C API. Load a workflow graph, run it with a persistent output cache, listen
 * to what happens. The CLI (core/cli/) and the server (web/) are thin clients of this header.
 *
 *   struct fr_engine *e;  fr_engine_new(&opts, &e, &err);
 *   struct fr_graph *g;   fr_engine_load(e, "graphs/tiny-demo.yaml", NULL, 0, &g, &err);
 *   fr_engine_run(e, g, &run_opts, &summary, &err);
 *   fr_graph_free(g);     fr_engine_free(e);
 *
 * See examples/ for a complete program. */
#ifndef FLOWRUN_H
#define FLOWRUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/graph.h"
#include "core/node.h"
#include "core/status.h"

#define FLOWRUN_VERSION "0.1.0"

enum fr_event_kind {
  FR_EV_RUN_START,   /* nodes: how many the plan will execute */
  FR_EV_NODE_CACHED, /* node: outputs come from the cache */
  FR_EV_NODE_START,  /* node */
  FR_EV_PROGRESS,    /* node, step, steps, preview (may be NULL) */
  FR_EV_NODE_DONE,   /* node, ms */
  FR_EV_ERROR,       /* node (NULL if not about one node), message, status */
  FR_EV_RUN_DONE,    /* executed, cached, ms, status */
  FR_EV_OUTPUT,      /* node, path (absolute), written: a file of an output node; written is true when
                        this run wrote it, false when the node was cached and its file is still there
                        with the content recorded when it was written */
  FR_EV_WARNING,     /* message: something that is not an error (a corrupt cache entry recomputed) */
  FR_EV_INFO,        /* node, message: what a node is doing that takes a while (loading a model file) */
  /* node, path, bytes, bytes_total, bytes_per_s: reading a model file (core/reader.h), at most every 250 ms
   * and once when the file is read */
  FR_EV_LOAD_PROGRESS,
};

struct fr_event {
  enum fr_event_kind kind;
  const char *node; /* node id */
  const char *node_type;
  int step, steps;
  const struct fr_tensor *preview; /* F32 [1, h, w, 3] in [0, 1], progress only */
  double ms;
  int executed, cached, planned;
  const char *message;
  const char *path;
  enum fr_status status;
  const char *key; /* node_cached / node_start: the node's signature, 32 hex digits */
  const char *from; /* node_cached: "shared" when an output came from the shared tier, else NULL */
  bool written;    /* output: written by this run (see FR_EV_OUTPUT) */
  /* load_progress: bytes of path read so far, of its data in all, and the rate since the read began */
  uint64_t bytes, bytes_total;
  double bytes_per_s;
};

typedef void (*fr_event_fn)(void *user, const struct fr_event *ev);

struct fr_key;
/* A second cache tier behind the local one, shared by the engines of several hosts (flowrun worker --db:
 * a PostgreSQL table). The same 16-byte keys and the same encoded values as the local cache. get: FR_OK
 * with a blob the caller frees (fr_free) or FR_E_NOTFOUND; has: whether get would find it; put: stores.
 * A tier that fails never fails a run: a warning, then a miss (get) or nothing stored (put). A value
 * found there is also stored in the local cache. The engine calls these from the thread that runs. */
struct fr_cache_tier {
  enum fr_status (*get)(void *user, const struct fr_key *key, void **blob, size_t *len, struct fr_err *err);
  bool (*has)(void *user, const struct fr_key *key);
  enum fr_status (*put)(void *user, const struct fr_key *key, const void *blob, size_t len, struct fr_err *err);
  void *user;
};

struct fr_engine_opts {
  const struct fr_registry *registry; /* required: e.g. fr_builtin_registry() from nodes/registry.h */
  /* NULL: the default path; ignored when no_cache. A cache that cannot be written (read-only, disk
   * full) or created is used read-only or not at all, with one FR_EV_WARNING: never a failed run. */
  const char *cache_path;
  bool no_cache;
  int64_t cache_max_bytes;       /* 0: default */
  const char *const *model_dirs; /* model search path (--models, FLOWRUN_MODELS) */
  int n_model_dirs;
  const char *const *input_dirs; /* searched for input files (LoadImage ...) after the graph's folder */
  int n_input_dirs;
  /* Folders every file a graph reads must resolve under (fr_load_opts.read_roots, core/roots.h); `flowrun
   * serve` confines graphs sent over the network with it. Empty: unrestricted. */
  const char *const *read_roots;
  int n_read_roots;
  const char *output_dir; /* where output nodes write; NULL: "." */
  /* where preview nodes (PreviewImage) write: a temporary folder, never output_dir; NULL:
   * fr_default_temp_dir() */
  const char *temp_dir;
  const char *device;     /* "cpu" (default) or "cuda" */
  /* "f32", "f16" or "bf16"; NULL or "": f32 on cpu, f16 on cuda. Part of every signature. What a device
   * cannot do (f16 on the cpu) fails when the first model loads; the CLI asks fr_ctx_new before any work. */
  const char *dtype;
  int threads;          /* 0: all cores */
  fr_event_fn on_event; /* may be NULL */
  void *user;
  const struct fr_cache_tier *tier; /* NULL: none; ignored with no_cache */
};

struct fr_engine;

/* The default folder for previews: $TMPDIR/flowrun-preview (TMPDIR unset or empty: /tmp). Written into
 * buf (n bytes), which is returned. */
const char *fr_default_temp_dir(char *buf, size_t n);

enum fr_status fr_engine_new(const struct fr_engine_opts *opts, struct fr_engine **out, struct fr_err *err);
void fr_engine_free(struct fr_engine *e);

/* Loads and validates a graph with this engine's registry and model path. */
enum fr_status fr_engine_load(struct fr_engine *e, const char *path, const struct fr_override *overrides,
                              int n_overrides, struct fr_graph **out, struct fr_err *err);

/* Like fr_engine_load for YAML text already in memory (a workflow embedded in a picture). name is
 * used in error messages; dir is the folder relative file inputs resolve against (NULL: "."). */
enum fr_status fr_engine_load_string(struct fr_engine *e, const char *text, size_t len, const char *name,
                                     const char *dir, const struct fr_override *overrides, int n_overrides,
                                     struct fr_graph **out, struct fr_err *err);

struct fr_run_summary {
  int executed, cached, planned;
  double ms;
};

/* Plans and runs the graph: events go to the engine's listener. Returns FR_E_CANCELLED when
 * fr_engine_cancel was called, or the first node error (err: "node <id> (<Type>): message"). */
enum fr_status fr_engine_run(struct fr_engine *e, const struct fr_graph *g, struct fr_run_summary *summary,
                             struct fr_err *err);
/* Thread-safe; checked between nodes and inside long nodes (sampler steps). */
void fr_engine_cancel(struct fr_engine *e);

const struct fr_registry *fr_engine_registry(const struct fr_engine *e);

/* The state of the engine's cache, for health checks and metrics. Call it from the thread that runs, or
 * while no run is going (it reads the database). mode: 0 writable, 1 read-only (read-only file or file
 * system, disk full), 2 off (could not be opened, or no_cache). evictions: entries evicted by this
 * engine's stores since it was made. */
struct fr_engine_cache_info {
  int mode;
  int64_t entries, bytes, max_bytes, evictions;
};
void fr_engine_cache_info(struct fr_engine *e, struct fr_engine_cache_info *out);

/* Out-of-memory recovery counters since the engine was made (core/node.h: "out-of-memory recovery").
 * oom: node failures with FR_E_NOMEM; retries: of those, retried after the memory hooks released memory
 * (each failure is retried once); recovered: retries that succeeded; failed: retries that ran out of
 * memory again (the run failed); released_models / released_bytes: what the hooks reported freeing.
 * Thread-safe: may be read while a run goes on (a metrics endpoint). */
struct fr_oom_stats {
  uint64_t oom, retries, recovered, failed;
  uint64_t released_models, released_bytes;
};
void fr_engine_oom_stats(const struct fr_engine *e, struct fr_oom_stats *out);

/* What the engine's memory hooks hold now (FR_MEM_QUERY): cached models, their bytes, pool and scratch
 * bytes. Not thread-safe with a run: call it between runs or from the engine's event listener. */
void fr_engine_memory(struct fr_engine *e, struct fr_mem_report *out);

/* Registers a memory hook (core/node.h: fr_node_engine_mem_hook) from outside a node: an embedding
 * program holding memory of its own that it can give back when a run runs out. */
void fr_engine_mem_hook(struct fr_engine *e, const char *name, fr_mem_hook_fn fn, void *user,
                        void (*destroy)(void *));

#endif
