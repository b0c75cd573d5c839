/* Node types: a spec (data) plus a run function.
 *
 * A node type is one static table: its inputs (name, type, default, range, choices, flags), its
 * outputs, a version that is part of every signature (bump it when the numbers a node computes
 * change), and flags. The table is what `flowrun nodes` prints and what the editor receives as JSON.
 * The run function reads its inputs and sets its outputs through struct fr_node_ctx. */
#ifndef FR_NODE_H
#define FR_NODE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/alloc.h"
#include "core/status.h"
#include "core/value.h"

/* Primitive input types. Anything else in fr_input_spec.type is a socket type name. */
#define FR_T_INT "INT"
#define FR_T_FLOAT "FLOAT"
#define FR_T_BOOL "BOOL"
#define FR_T_STRING "STRING"
#define FR_T_ENUM "ENUM"
#define FR_T_IMAGE "IMAGE"
#define FR_T_MASK "MASK"
#define FR_T_LATENT "LATENT"
#define FR_T_CONDITIONING "CONDITIONING"
#define FR_T_MODEL "MODEL"
#define FR_T_CLIP "CLIP"
#define FR_T_VAE "VAE"
#define FR_T_CONTROL_NET "CONTROL_NET"

/* Number of elements of a static array: node specs give their input and output counts with it. */
#define FR_COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

enum fr_input_flags {
  FR_IN_OPTIONAL = 1 << 0,   /* may be left unset (no default): the run function sees it as absent */
  FR_IN_MULTILINE = 1 << 1,  /* STRING edited as a text area (prompts) */
  FR_IN_FILE = 1 << 2,       /* STRING naming an input file: resolved against the graph's folder (or the
                                model search path) and fingerprinted by content for the signature */
  FR_IN_MODEL_FILE = 1 << 3, /* like FR_IN_FILE but resolved along the model search path */
  FR_IN_SEED = 1 << 4,       /* INT seed: the editor offers "randomise" */
  FR_IN_HIDDEN = 1 << 5,     /* not shown as a widget (advanced) */
  FR_IN_PROMPT = 1 << 6,     /* STRING prompt that may name textual-inversion embeddings ("embedding:NAME",
                                ComfyUI's syntax): the files <model folder>/embeddings/NAME[.safetensors]
                                it may read are fingerprinted into the signature (core/signature.c) */
  FR_IN_SAVE_PATH = 1 << 7,  /* STRING naming a file an output node writes (SaveLatent filename, SaveImage
                                filename_prefix): relative, a name in the output folder; absolute, used as
                                given (fr_node_output_target) */
  /* Only output FR_IN_OUTPUT_OF(flags) depends on this input (set with FR_IN_ONLY_FOR(o)): the other
   * outputs' cache keys, and the keys of the nodes they feed, leave it out, so editing it does not re-run
   * what reads them (LoraLoader: strength_model changes the model, not the clip). */
  FR_IN_ONLY_OUTPUT = 1 << 16, /* high bits, away from the plain flags above */
};
#define FR_IN_ONLY_FOR(o) (FR_IN_ONLY_OUTPUT | ((unsigned)(o) << 24))
#define FR_IN_OUTPUT_OF(flags) ((int)(((unsigned)(flags) >> 24) & 0xff))

/* The kind of file an FR_IN_MODEL_FILE input names, kept in bits 8..11 of its flags (FR_IN_KIND(k)): each
 * model folder is searched as it is and then in the subfolders ComfyUI keeps that kind in
 * (fr_model_kind_folders), so a ComfyUI models/ folder works as a model folder unchanged. */
enum fr_model_kind {
  FR_MODEL_ANY,        /* the model folders themselves only */
  FR_MODEL_CHECKPOINT, /* checkpoints/ */
  FR_MODEL_LORA,       /* loras/ */
  FR_MODEL_VAE,        /* vae/ */
  FR_MODEL_CONTROLNET, /* controlnet/ */
  FR_MODEL_EMBEDDING,  /* embeddings/ */
  FR_MODEL_UPSCALE,    /* upscale_models/ */
  FR_MODEL_UNET,       /* unet/, diffusion_models/ */
  FR_MODEL_TEXT,       /* clip/, text_encoders/ */
  FR_MODEL_KINDS
};
#define FR_IN_KIND_SHIFT 8
#define FR_IN_KIND(k) ((unsigned)(k) << FR_IN_KIND_SHIFT)
#define FR_IN_KIND_OF(flags) ((enum fr_model_kind)(((flags) >> FR_IN_KIND_SHIFT) & 15u))
/* The subfolders of a model folder that hold files of kind k, NULL-terminated (empty for FR_MODEL_ANY and
 * out-of-range kinds): ComfyUI's folder names. */
const char *const *fr_model_kind_folders(enum fr_model_kind k);

struct fr_input_spec {
  const char *name;
  const char *type;           /* FR_T_INT ... or a socket type name */
  const char *def;            /* default as literal text ("512", "0.5", "true", "euler"); NULL: none */
  double min, max;            /* INT/FLOAT range, inclusive; none unless min < max (fr_input_has_range) */
  const char *const *choices; /* FR_T_ENUM: NULL-terminated list of allowed strings */
  unsigned flags;             /* enum fr_input_flags */
  const char *help;
};

struct fr_output_spec {
  const char *name;
  const char *type;
  const char *help;
};

/* Output nodes (FR_NODE_OUTPUT) are the roots the planner walks back from. An output node that writes
 * files declares an output named "files" of type STRING and sets it to the paths it wrote (in
 * fr_node_output_dir, which the engine has made), one per line; the engine then replaces that with a
 * record of each file's absolute path and content hash (docs/cache.md, "Output files"), emits an
 * FR_EV_OUTPUT event for each, and re-runs a cached output node when any recorded file is missing or no
 * longer has the recorded bytes (re-materialised from cached inputs; a numbering node such as SaveImage
 * picks a fresh name, never overwriting a file that is not its own). */
enum fr_node_flags {
  FR_NODE_OUTPUT = 1 << 0,           /* an output node (SaveImage): a planning root, produces files */
  FR_NODE_NONDETERMINISTIC = 1 << 1, /* results differ between runs with equal inputs: a fresh nonce
                                        goes into its signature on every run */
};

struct fr_node_ctx; /* opaque, owned by the executor */

/* Runs the node. Returns FR_OK after setting every output, or an error (with fr_node_fail for the
 * message). Must check fr_node_progress regularly in long loops so cancellation is prompt. */
typedef enum fr_status (*fr_node_run_fn)(struct fr_node_ctx *nc);

struct fr_node_spec {
  const char *name;     /* "ImageBlur": the YAML type name */
  int version;          /* part of the signature */
  const char *category; /* palette grouping: "image", "sampling", "loaders", ... */
  const char *help;     /* one sentence */
  const struct fr_input_spec *inputs;
  int n_inputs;
  const struct fr_output_spec *outputs;
  int n_outputs;
  unsigned flags; /* enum fr_node_flags */
  fr_node_run_fn run;
};

/* The set of node types an engine knows. nodes/registry.c provides the built-in one. */
struct fr_registry {
  const struct fr_node_spec *const *specs;
  int n;
};
const struct fr_node_spec *fr_registry_find(const struct fr_registry *r, const char *name);
int fr_spec_input_index(const struct fr_node_spec *s, const char *name);  /* -1 if none */
int fr_spec_output_index(const struct fr_node_spec *s, const char *name); /* -1 if none */
bool fr_type_is_primitive(const char *type);                              /* INT FLOAT BOOL STRING ENUM */
/* Whether an INT/FLOAT input declares a range: min < max. A zero-initialised spec (0, 0) has none. */
bool fr_input_has_range(const struct fr_input_spec *in);

/* ---- what a run function may use ---- */

/* Inputs by name. A primitive input always has a value (literal, param or default) unless it is
 * FR_IN_OPTIONAL; fr_in_has says whether it is set. Socket inputs return the linked value or NULL. */
bool fr_in_has(struct fr_node_ctx *nc, const char *name);
int64_t fr_in_int(struct fr_node_ctx *nc, const char *name);
double fr_in_float(struct fr_node_ctx *nc, const char *name);
bool fr_in_bool(struct fr_node_ctx *nc, const char *name);
const char *fr_in_str(struct fr_node_ctx *nc, const char *name); /* STRING and ENUM */
const struct fr_value *fr_in(struct fr_node_ctx *nc, const char *name);
/* For FR_IN_FILE / FR_IN_MODEL_FILE inputs: the resolved absolute path (NULL if unset). */
const char *fr_in_path(struct fr_node_ctx *nc, const char *name);
/* The pin of a model file input given as {file, sha256} (10 or 64 lowercase hex digits, core/pins.h), or
 * NULL. The engine checked it when it made the run's signatures; a loader that reads the file later passes
 * it on (fr_st_open_ex) so the bytes it uses are the bytes that match. */
const char *fr_in_pin(struct fr_node_ctx *nc, const char *name);

/* The node's inputs by position (its spec's order): how many, and the value of each (NULL when unset). For
 * code that looks at every input without knowing the node type (a memory hook keeping what a node needs). */
int fr_node_input_count(struct fr_node_ctx *nc);
const struct fr_value *fr_in_at(struct fr_node_ctx *nc, int i);
/* Sets output idx; takes the caller's reference to v (also on failure). */
enum fr_status fr_out_set(struct fr_node_ctx *nc, int idx, struct fr_value *v);

/* Reports progress (step of steps, optional preview image F32 [1, h, w, 3]; not taken) and returns
 * FR_E_CANCELLED if the run was cancelled: long loops return that status at once. */
enum fr_status fr_node_progress(struct fr_node_ctx *nc, int step, int steps, const struct fr_tensor *preview);
/* Records a message for the node's failure and returns rc: return fr_node_fail(nc, FR_E_INVALID, ...). */
enum fr_status fr_node_fail(struct fr_node_ctx *nc, enum fr_status rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Memory freed when the node finishes. */
struct fr_arena *fr_node_arena(struct fr_node_ctx *nc);
/* The node's id in the graph, the graph file's path and its YAML text (SaveImage embeds them) in bundled
 * form (core/bundle.h: every subgraph file inlined, so the text alone re-runs), the output folder for
 * files, and the run's compute options. */
const char *fr_node_id(struct fr_node_ctx *nc);
const char *fr_node_graph_yaml(struct fr_node_ctx *nc);
const char *fr_node_graph_params_json(struct fr_node_ctx *nc); /* resolved params as a JSON object */
/* The output folder: absolute, links resolved, existing (made at the start of the run). */
const char *fr_node_output_dir(struct fr_node_ctx *nc);
/* Where the output-file input `input` (FR_IN_SAVE_PATH) points, as the folder to write in (dir, cap
 * bytes) and the name there (*name, pointing into the input's value or into dir's storage: valid while the
 * node runs). A relative value is a name inside the output folder (dir = fr_node_output_dir, *name = the
 * value as given). An absolute value is used as the user gave it: dir = its folder (lexically normalised,
 * made when missing), *name = its last component; the engine's output-file check accepts files written
 * there (docs/cache.md). When the engine confines files (fr_engine_opts.read_roots set: flowrun serve), an
 * absolute value must resolve (links included) under the output folder, else FR_E_INVALID. Errors name the
 * input and the path (set with fr_node_fail). */
enum fr_status fr_node_output_target(struct fr_node_ctx *nc, const char *input, char *dir, size_t cap,
                                     const char **name);
/* The folder for previews (PreviewImage): temporary, never the output folder; may not exist yet. */
const char *fr_node_temp_dir(struct fr_node_ctx *nc);
/* The absolute folder of the graph file (where its relative subgraphs and files resolve); "." when it
 * cannot be resolved. SaveImage embeds it (FR_PNG_KEY_DIR) so a picture re-runs from anywhere. */
const char *fr_node_graph_dir(struct fr_node_ctx *nc);
const char *fr_node_device(struct fr_node_ctx *nc); /* "cpu" or "cuda" */
/* The engine's model folders (--models, FLOWRUN_MODELS), in search order; returns their count. For files a
 * node finds by itself (textual-inversion embeddings named in a prompt), not through a file input. */
int fr_node_model_dirs(struct fr_node_ctx *nc, const char *const **dirs);
/* The run's compute dtype, resolved: "f32", "f16" or "bf16" (--dtype; default f32 on cpu, f16 on cuda).
 * Model nodes map it per component (nodes/pipeline: the VAE never computes in f16). */
const char *fr_node_dtype(struct fr_node_ctx *nc);
/* Emits a warning event ("node <id> (<Type>): message"): something the user should know that is not a
 * failure, e.g. a decode that fell back to tiles because the device ran out of memory. */
void fr_node_warn(struct fr_node_ctx *nc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* When host tensor t (F32/F16/BF16/F64) holds NaN or inf values, emits one warning naming `what` (an input
 * or output of the node), the count and the first one's position, and returns true; else returns false
 * and emits nothing. For latents and images, where such values silently become a black picture. */
bool fr_node_warn_nonfinite(struct fr_node_ctx *nc, const char *what, const struct fr_tensor *t);
/* Emits an info event: what the node is doing that takes a while ("loading MODEL from ..."). The CLI
 * prints it unless --quiet; --events jsonl and the server pass it on. */
void fr_node_info(struct fr_node_ctx *nc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Engine-wide state a node type keeps across runs (e.g. loaded models), by key; NULL if absent. */
void *fr_node_engine_get(struct fr_node_ctx *nc, const char *key);
void fr_node_engine_set(struct fr_node_ctx *nc, const char *key, void *p, void (*destroy)(void *));
struct fr_engine;
/* The same state from outside a run (what the engine's owner reports: device memory, resident models):
 * call it from the thread that runs the engine, between runs. each: every state whose key starts with
 * prefix, in the order they were made. */
void *fr_engine_state_get(struct fr_engine *e, const char *key);
void fr_engine_state_each(struct fr_engine *e, const char *prefix,
                          void (*fn)(void *user, const char *key, void *p), void *user);

/* Calls fn(user, key, p) for every engine-wide state whose key starts with prefix and whose value is not
 * NULL, in the order they were first set. fn may replace the value of the key it is given (with
 * fr_node_engine_set, e.g. to NULL to drop a cached model) but must not set other keys. */
void fr_node_engine_each(struct fr_node_ctx *nc, const char *prefix,
                         void (*fn)(void *user, const char *key, void *p), void *user);

/* ---- out-of-memory recovery (docs/operations.md, "Out of memory") ----
 * When a node fails with FR_E_NOMEM (host or device memory), the engine asks every memory hook to
 * release what it can (FR_MEM_RELEASE: cached models the failing node does not need, and the pools and
 * scratch buffers of the compute contexts), then runs the node once more with fr_node_low_memory true.
 * A node that can work in less memory does so then (VAEDecode decodes in tiles). A second failure fails
 * the run with a message saying what to reduce. After a run that ran out of memory the hooks are asked to
 * FR_MEM_TRIM (empty pools and scratch, keep models), so the next run starts from a clean pool. */
enum fr_mem_mode {
  FR_MEM_QUERY,   /* report what is held (models, model_bytes, reserve_bytes); change nothing */
  FR_MEM_RELEASE, /* drop cached models nc's node does not need, empty pools; report what was freed */
  FR_MEM_TRIM,    /* empty pools and scratch (keep models); report what was freed */
};
struct fr_mem_report {
  int models;             /* cached models held (QUERY) or dropped (RELEASE) */
  uint64_t model_bytes;   /* their size in bytes, as far as the hook can tell (host heap + device) */
  uint64_t reserve_bytes; /* pool caches and scratch buffers held (QUERY) or emptied */
};
/* A hook adds its numbers to *rep. For FR_MEM_RELEASE nc is the failing node (its inputs are readable
 * with fr_in). In every mode nc reaches the engine's state (fr_node_engine_get/set/each); for QUERY and
 * TRIM it stands for no node, so only those three may be called with it. */
typedef void (*fr_mem_hook_fn)(void *user, struct fr_node_ctx *nc, enum fr_mem_mode mode,
                               struct fr_mem_report *rep);
/* Registers a memory hook for this engine under name; registering a name again replaces its fn and user.
 * The hook stays until the engine is freed (destroy, when not NULL, is then called on user). */
void fr_node_engine_mem_hook(struct fr_node_ctx *nc, const char *name, fr_mem_hook_fn fn, void *user,
                             void (*destroy)(void *));
/* True while the node runs again after running out of memory: use less memory than usual, even if
 * slower or slightly different (VAEDecode decodes in tiles, upscalers use smaller tiles). */
bool fr_node_low_memory(struct fr_node_ctx *nc);

#endif
