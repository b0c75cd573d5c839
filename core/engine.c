/* The engine: plans a graph against the cache and runs what must run.
 *
 * A run goes: signatures for every node (topological order, so upstream signatures are known) → plan
 * (walk back from the output nodes; a node whose needed outputs are available, in memory or in the
 * cache, does not run, and neither does anything only it needed) → execute in topological order
 * (cached values are loaded at their producer's place in the order, computed values are stored in the
 * cache right after their node ran, values are freed when their last consumer has run).
 *
 * A cached entry that turns out to be unreadable (corrupt, evicted by another process between plan and
 * load) is not an error: its node is forced to run and the plan is made again from the current state;
 * everything already computed stays in memory or in the cache, so nothing runs twice. */
#include "core/flowrun.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "core/buf.h"
#include "core/bundle.h"
#include "core/cache.h"
#include "core/file.h"
#include "core/reader.h"
#include "core/roots.h"
#include "core/signature.h"

struct fr__state {
  char *key;
  void *p;
  void (*destroy)(void *);
};

struct fr__hook {
  char *name;
  fr_mem_hook_fn fn;
  void *user;
  void (*destroy)(void *);
};

struct fr_engine {
  const struct fr_registry *registry;
  char **model_dirs;
  int n_model_dirs;
  char **input_dirs, **read_roots; /* copies of fr_engine_opts' lists */
  int n_input_dirs, n_read_roots;
  char *output_dir, *temp_dir, *device;
  const char *dtype;     /* resolved compute dtype: "f32", "f16" or "bf16" (fr_node_dtype) */
  const char *sig_dtype; /* what signatures hold: "" for the cpu's only dtype (f32), else dtype */
  int threads;
  fr_event_fn on_event;
  void *user;
  struct fr_cache *cache;    /* NULL with no_cache */
  struct fr_cache_tier tier; /* the shared second tier (get NULL: none) */
  struct fr_fp_memo memo;
  atomic_int cancelled;
  struct fr__state *states;
  int n_states, cap_states;
  struct fr__hook *hooks; /* memory hooks (fr_node_engine_mem_hook) */
  int n_hooks, cap_hooks;
  /* out-of-memory counters (fr_engine_oom_stats) */
  atomic_ullong oom, oom_retries, oom_recovered, oom_failed, oom_models, oom_bytes;
  uint64_t runs;
};

enum fr__nstate { FR__SKIP, FR__CACHED, FR__RUN };

/* Per-run state, all in one arena. Per-output arrays are indexed [node][output]. */
struct fr__run {
  struct fr_engine *e;
  const struct fr_graph *g;
  struct fr_arena *a;
  struct fr_key *sigs;
  struct fr_key **lsigs; /* [node][output]: what links to the output hash (fr_signature_link) */
  char (*hex)[33];
  struct fr_key **okeys;
  struct fr_value ***mem; /* values held in memory (owned references) */
  int **need;             /* how many planned-to-run consumers still read this output */
  bool **want;            /* some running consumer (or the node being a root) needs this output */
  enum fr__nstate *st;
  bool *forced;    /* must run: a cached entry of it could not be loaded */
  bool *done;      /* ran during this run */
  bool *reported;  /* node_cached was emitted */
  bool *from_tier; /* an output came from the shared tier (node_cached says so) */
  bool *outputs_emitted;
  int executed, cached;
  int fail_node; /* the node an error is about, or -1 */
  const char *params_json;
  const char *graph_dir; /* absolute, resolved on first use */
  const char *bundled;   /* the graph's YAML with its subgraph files inlined (core/bundle.h), on first use */
  const char *out_real;  /* the output folder: absolute, links resolved (made at the start of the run) */
  bool low_memory;       /* the node runs again after running out of memory (fr_node_low_memory) */
  bool had_oom;          /* a node ran out of memory: the hooks trim pools at the end of the run */
};

struct fr_node_ctx {
  struct fr__run *r;
  int node;
  struct fr_value **in;
  struct fr_value **out;
  struct fr_arena *arena;
  bool has_msg;
  char msg[FR_ERR_MAX];
};

static double fr__now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void fr__emit(struct fr_engine *e, const struct fr_event *ev) {
  if (e->on_event)
    e->on_event(e->user, ev);
}

static void fr__warn(void *user, const char *msg) {
  struct fr_engine *e = user;
  struct fr_event ev = {.kind = FR_EV_WARNING, .message = msg};
  fr__emit(e, &ev);
}

/* ---- engine ---- */

/* Copies n strings into *out (fr_free'd by fr__strv_free; NULL when n is 0). False when out of memory. */
static bool fr__strv_dup(const char *const *v, int n, char ***out, int *n_out) {
  *out = NULL;
  *n_out = 0;
  if (n <= 0)
    return true;
  if (!(*out = fr_calloc((size_t)n, sizeof **out)))
    return false;
  for (int i = 0; i < n; i++) {
    if (!((*out)[i] = fr_strdup(v[i] ? v[i] : "")))
      return false;
    *n_out = i + 1;
  }
  return true;
}

static void fr__strv_free(char **v, int n) {
  for (int i = 0; i < n; i++)
    fr_free(v[i]);
  fr_free(v);
}

enum fr_status fr_engine_new(const struct fr_engine_opts *opts, struct fr_engine **out, struct fr_err *err) {
  *out = NULL;
  if (!opts || !opts->registry)
    return fr_errf(err, FR_E_INVALID, "fr_engine_new: a node registry is required");
  const char *device = opts->device ? opts->device : "cpu";
  if (strcmp(device, "cpu") != 0 && strcmp(device, "cuda") != 0)
    return fr_errf(err, FR_E_INVALID, "device '%s': expected cpu or cuda", device);
  if (opts->threads < 0)
    return fr_errf(err, FR_E_INVALID, "threads %d: expected 0 (all cores) or more", opts->threads);
  /* The compute dtype: f32 on the cpu by default, f16 on cuda. Whether the device can do it is the
   * backend's to say (fr_ctx_new, when the first model loads; the CLI asks it up front). */
  static const char *const dtypes[] = {"f32", "f16", "bf16"};
  const char *dtype = strcmp(device, "cpu") == 0 ? "f32" : "f16";
  if (opts->dtype && *opts->dtype) {
    dtype = NULL;
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
      if (strcmp(opts->dtype, dtypes[i]) == 0)
        dtype = dtypes[i];
    if (!dtype)
      return fr_errf(err, FR_E_INVALID, "dtype '%s': expected f32, f16 or bf16", opts->dtype);
  }
  struct fr_engine *e = fr_calloc(1, sizeof *e);
  if (!e)
    return fr_errf(err, FR_E_NOMEM, "out of memory creating the engine");
  atomic_init(&e->cancelled, 0);
  e->registry = opts->registry;
  e->threads = opts->threads;
  e->on_event = opts->on_event;
  e->user = opts->user;
  e->output_dir = fr_strdup(opts->output_dir ? opts->output_dir : ".");
  char tbuf[4096];
  e->temp_dir = fr_strdup(opts->temp_dir ? opts->temp_dir : fr_default_temp_dir(tbuf, sizeof tbuf));
  e->device = fr_strdup(device);
  e->dtype = dtype;
  /* The cpu computes in f32 only, so its signatures keep the "" they always had (no cache entry made
   * before dtypes could be chosen is invalidated); every other (device, dtype) pair is its own key. */
  e->sig_dtype = strcmp(device, "cpu") == 0 && strcmp(dtype, "f32") == 0 ? "" : dtype;
  bool oom = !e->output_dir || !e->temp_dir || !e->device;
  if (!oom && opts->n_model_dirs > 0) {
    e->model_dirs = fr_calloc((size_t)opts->n_model_dirs, sizeof *e->model_dirs);
    oom = !e->model_dirs;
    for (int i = 0; !oom && i < opts->n_model_dirs; i++) {
      e->model_dirs[i] = fr_strdup(opts->model_dirs[i]);
      oom = !e->model_dirs[i];
      e->n_model_dirs = i + 1;
    }
  }
  oom = oom || !fr__strv_dup(opts->input_dirs, opts->n_input_dirs, &e->input_dirs, &e->n_input_dirs) ||
        !fr__strv_dup(opts->read_roots, opts->n_read_roots, &e->read_roots, &e->n_read_roots);
  if (oom) {
    fr_engine_free(e);
    return fr_errf(err, FR_E_NOMEM, "out of memory creating the engine");
  }
  if (!opts->no_cache && opts->tier)
    e->tier = *opts->tier;
  if (!opts->no_cache) {
    char def[4096];
    const char *path = opts->cache_path;
    if (!path) {
      if (!fr_cache_default_path(def, sizeof def)) {
        fr_engine_free(e);
        return fr_errf(err, FR_E_INVALID,
                       "no default cache location (neither XDG_CACHE_HOME nor HOME is set): "
                       "give a cache path (--cache PATH) or run without one (--no-cache)");
      }
      path = def;
    }
    /* A cache that cannot be created or written degrades (read-only or off, one warning): the run goes
     * on without storing, rather than failing on what is only an optimisation. */
    struct fr_cache_opts co = {
        .max_bytes = opts->cache_max_bytes, .warn = fr__warn, .user = e, .degrade = true};
    enum fr_status rc = fr_cache_open(path, &co, &e->cache, err);
    if (rc != FR_OK) {
      fr_engine_free(e);
      return rc;
    }
  }
  *out = e;
  return FR_OK;
}

void fr_engine_free(struct fr_engine *e) {
  if (!e)
    return;
  /* Engine state is destroyed newest first: a later entry may use an earlier one. */
  for (int i = e->n_states - 1; i >= 0; i--) {
    if (e->states[i].destroy)
      e->states[i].destroy(e->states[i].p);
    fr_free(e->states[i].key);
  }
  fr_free(e->states);
  for (int i = e->n_hooks - 1; i >= 0; i--) {
    if (e->hooks[i].destroy)
      e->hooks[i].destroy(e->hooks[i].user);
    fr_free(e->hooks[i].name);
  }
  fr_free(e->hooks);
  fr_cache_close(e->cache);
  fr_fp_memo_free(&e->memo);
  for (int i = 0; i < e->n_model_dirs; i++)
    fr_free(e->model_dirs[i]);
  fr_free(e->model_dirs);
  fr__strv_free(e->input_dirs, e->n_input_dirs);
  fr__strv_free(e->read_roots, e->n_read_roots);
  fr_free(e->output_dir);
  fr_free(e->temp_dir);
  fr_free(e->device);
  fr_free(e);
}

void fr_engine_cancel(struct fr_engine *e) {
  atomic_store(&e->cancelled, 1);
}

const struct fr_registry *fr_engine_registry(const struct fr_engine *e) {
  return e->registry;
}

void fr_engine_cache_info(struct fr_engine *e, struct fr_engine_cache_info *out) {
  memset(out, 0, sizeof *out);
  enum fr_cache_mode mode = fr_cache_mode(e->cache);
  out->mode = mode == FR_CACHE_RW ? 0 : mode == FR_CACHE_RO ? 1 : 2;
  struct fr_cache_stats st;
  struct fr_err err;
  if (e->cache && fr_cache_stats(e->cache, &st, &err) == FR_OK) {
    out->entries = st.entries;
    out->bytes = st.bytes;
    out->max_bytes = st.max_bytes;
  }
  out->evictions = fr_cache_evictions(e->cache);
}

static void fr__load_opts(struct fr_engine *e, const struct fr_override *ov, int n_ov,
                          struct fr_load_opts *lo) {
  memset(lo, 0, sizeof *lo);
  lo->registry = e->registry;
  lo->overrides = ov;
  lo->n_overrides = n_ov;
  lo->model_dirs = (const char *const *)e->model_dirs;
  lo->n_model_dirs = e->n_model_dirs;
  lo->input_dirs = (const char *const *)e->input_dirs;
  lo->n_input_dirs = e->n_input_dirs;
  lo->read_roots = (const char *const *)e->read_roots;
  lo->n_read_roots = e->n_read_roots;
  lo->require_files = true;
  lo->cache = e->cache;
  lo->memo = &e->memo;
}

enum fr_status fr_engine_load(struct fr_engine *e, const char *path, const struct fr_override *overrides,
                              int n_overrides, struct fr_graph **out, struct fr_err *err) {
  struct fr_load_opts lo;
  fr__load_opts(e, overrides, n_overrides, &lo);
  return fr_graph_load_file(path, &lo, out, err);
}

enum fr_status fr_engine_load_string(struct fr_engine *e, const char *text, size_t len, const char *name,
                                     const char *dir, const struct fr_override *overrides, int n_overrides,
                                     struct fr_graph **out, struct fr_err *err) {
  struct fr_load_opts lo;
  fr__load_opts(e, overrides, n_overrides, &lo);
  return fr_graph_load_string(text, len, name, dir ? dir : ".", &lo, out, err);
}

/* ---- planning ---- */

static int fr__files_output(const struct fr_node_spec *s) {
  if (!(s->flags & FR_NODE_OUTPUT))
    return -1;
  int i = fr_spec_output_index(s, "files");
  return i >= 0 && strcmp(s->outputs[i].type, FR_T_STRING) == 0 ? i : -1;
}

/* Loads output o of node n from the cache into r->mem. FR_E_NOTFOUND for a miss or an unreadable
 * entry (the caller re-plans), FR_E_NOMEM when out of memory (the run fails). */
static enum fr_status fr__load_cached(struct fr__run *r, int n, int o, struct fr_err *err) {
  if (r->mem[n][o])
    return FR_OK;
  if (!r->e->cache)
    return FR_E_NOTFOUND;
  void *blob = NULL;
  size_t len = 0;
  struct fr_err lerr;
  enum fr_status rc = fr_cache_get(r->e->cache, &r->okeys[n][o], &blob, &len, &lerr);
  if (rc == FR_E_NOTFOUND && r->e->tier.get) {
    /* the shared tier: a hit is kept locally too (best effort) */
    struct fr_err terr;
    rc = r->e->tier.get(r->e->tier.user, &r->okeys[n][o], &blob, &len, &terr);
    if (rc == FR_OK) {
      r->from_tier[n] = true;
      fr_cache_put(r->e->cache, &r->okeys[n][o], blob, len, &terr);
    } else if (rc != FR_E_NOTFOUND && rc != FR_E_NOMEM) {
      char msg[FR_ERR_MAX + 128];
      snprintf(msg, sizeof msg, "node %s: the shared cache failed, recomputing: %s", r->g->nodes[n].id,
               terr.msg);
      fr__warn(r->e, msg);
      rc = FR_E_NOTFOUND;
    } else {
      lerr = terr;
    }
  }
  if (rc == FR_E_NOMEM)
    return fr_errf(err, rc, "loading a cached value: %s", lerr.msg);
  if (rc != FR_OK) {
    if (rc != FR_E_NOTFOUND) {
      char msg[FR_ERR_MAX + 128];
      snprintf(msg, sizeof msg, "node %s: cached output %s unreadable, recomputing: %s", r->g->nodes[n].id,
               r->g->nodes[n].spec->outputs[o].name, lerr.msg);
      fr__warn(r->e, msg);
    }
    return FR_E_NOTFOUND;
  }
  struct fr_value *v = NULL;
  rc = fr_value_deserialize(blob, len, &v, &lerr);
  fr_free(blob);
  if (rc == FR_E_NOMEM)
    return fr_errf(err, rc, "loading a cached value: %s", lerr.msg);
  const struct fr_output_spec *os = &r->g->nodes[n].spec->outputs[o];
  if (rc == FR_OK && (!v->type || strcmp(v->type, os->type) != 0)) {
    /* Intact bytes but the wrong kind of value for this output (a key collision, a stale or
     * tampered entry): corrupt as far as this node is concerned, and never handed downstream. */
    rc = fr_errf(&lerr, FR_E_FORMAT, "it holds a %s value where %s is declared", v->type ? v->type : "?",
                 os->type);
    fr_value_unref(v);
    v = NULL;
  }
  if (rc != FR_OK) {
    char msg[FR_ERR_MAX + 128];
    snprintf(msg, sizeof msg, "node %s: cached output %s is corrupt, dropped and recomputing: %s",
             r->g->nodes[n].id, os->name, lerr.msg);
    fr__warn(r->e, msg);
    fr_cache_drop(r->e->cache, &r->okeys[n][o]);
    return FR_E_NOTFOUND;
  }
  r->mem[n][o] = v;
  return FR_OK;
}

static bool fr__available(struct fr__run *r, int n, int o) {
  return r->mem[n][o] ||
         (r->e->cache && (fr_cache_has(r->e->cache, &r->okeys[n][o]) ||
                          (r->e->tier.has && r->e->tier.has(r->e->tier.user, &r->okeys[n][o]))));
}

/* An output node's "files" value, as the engine records it right after the node ran (fr__record_files):
 * one line per file written,
 *   <absolute path, links resolved> TAB <XXH3-128 of the file's bytes, 32 hex digits>
 * so that a later run can tell its file from another one under the same name (numbered names are reused
 * once a folder is cleared) or in another folder (a relative --output from another working folder). */

/* Copies the next line of *p into line (NUL-terminated) and advances *p past it. 1: a line, 0: the end,
 * -1: a line too long for line (then *p is put at the end). */
static int fr__next_line(const char **p, char *line, size_t cap) {
  while (**p == '\n')
    (*p)++;
  if (!**p)
    return 0;
  const char *nl = strchr(*p, '\n');
  size_t n = nl ? (size_t)(nl - *p) : strlen(*p);
  if (n >= cap) {
    *p += strlen(*p);
    return -1;
  }
  memcpy(line, *p, n);
  line[n] = 0;
  *p += n;
  return 1;
}

/* Splits a record line at its last tab: line becomes the path, *hex the hash (NULL: no tab). */
static void fr__split_record(char *line, const char **hex) {
  char *tab = strrchr(line, '\t');
  *hex = NULL;
  if (tab) {
    *tab = 0;
    *hex = tab + 1;
  }
}

/* An absolute output path v (an FR_IN_SAVE_PATH value) split into its folder, lexically normalised, in
 * dir (cap bytes) and its last component (*base, also inside dir's storage). False when v is not absolute,
 * names a folder (ends in '/', or nothing is left after normalising) or does not fit. */
static bool fr__abs_output_split(const char *v, char *dir, size_t cap, const char **base) {
  size_t len = v ? strlen(v) : 0;
  if (len < 2 || v[0] != '/' || v[len - 1] == '/' || cap < 4 || !fr_path_normalize(v, dir, cap - 1))
    return false;
  char *slash = strrchr(dir, '/');
  if (!slash || !slash[1])
    return false;
  if (slash == dir) {                       /* "/name": the folder is "/" */
    memmove(dir + 2, dir + 1, strlen(dir)); /* room checked: cap - 1 above */
    dir[1] = 0;
    *base = dir + 2;
  } else {
    *slash = 0;
    *base = slash + 1;
  }
  return true;
}

/* True when the engine confines the files a graph touches (flowrun serve): then output files stay inside
 * the output folder whatever path a graph gives. */
static bool fr__confined(const struct fr_engine *e) {
  return e->n_read_roots > 0;
}

/* True when file (absolute, links resolved) lies directly in the folder of an absolute path given as a
 * literal in one of node n's output-file inputs (FR_IN_SAVE_PATH): the user named that place
 * explicitly, so a file recorded there is this node's (docs/cache.md, "Output files"). Never when
 * confined: there every output file must be in the output folder. */
static bool fr__in_explicit_dir(struct fr__run *r, int n, const char *file) {
  const struct fr_gnode *gn = &r->g->nodes[n];
  if (fr__confined(r->e))
    return false;
  const char *fslash = strrchr(file, '/');
  for (int i = 0; fslash && i < gn->spec->n_inputs; i++) {
    const struct fr_binding *b = &gn->inputs[i];
    if (!(gn->spec->inputs[i].flags & FR_IN_SAVE_PATH) || b->kind != FR_BIND_LITERAL || !b->literal ||
        b->literal->kind != FR_V_STRING)
      continue;
    char dir[4200];
    const char *base;
    if (!fr__abs_output_split(b->literal->s, dir, sizeof dir, &base))
      continue;
    char *real = realpath(dir, NULL); /* libc malloc */
    bool same =
        real && strlen(real) == (size_t)(fslash - file) && !strncmp(real, file, (size_t)(fslash - file));
    if (real && !strcmp(real, "/"))
      same = fslash == file;
    free(real);
    if (same)
      return true;
  }
  return false;
}

/* True when every file the record v names is still in this run's output folder (or, for previews, the
 * engine's temporary folder, or the folder of an absolute path node n was given: fr__in_explicit_dir)
 * with the recorded bytes:
 * not removed, not replaced by another picture under a reused name, not in another folder. A value
 * without hashes (an older flowrun's) never verifies: the node runs again. */
static bool fr__files_verified(struct fr__run *r, int n, const struct fr_value *v) {
  if (!v || v->kind != FR_V_STRING || !v->s || !r->out_real)
    return false;
  size_t dl = strlen(r->out_real);
  char *temp = realpath(r->e->temp_dir, NULL); /* previews (PreviewImage) are recorded there; libc malloc */
  size_t tl = temp ? strlen(temp) : 0;
  const char *p = v->s;
  char line[4200];
  int got;
  bool ok = true;
  while (ok && (got = fr__next_line(&p, line, sizeof line)) == 1) {
    const char *hex;
    fr__split_record(line, &hex);
    bool in_out = strncmp(line, r->out_real, dl) == 0 && (line[dl] == '/' || dl == 1);
    bool in_temp = temp && strncmp(line, temp, tl) == 0 && (line[tl] == '/' || tl == 1);
    ok = hex && strlen(hex) == 32 && (in_out || in_temp || fr__in_explicit_dir(r, n, line));
    if (!ok)
      break;
    struct stat sb; /* a regular file, not a link put in its place (nor a FIFO that would block a read) */
    struct fr_key k;
    char have[33];
    struct fr_err herr;
    ok = lstat(line, &sb) == 0 && S_ISREG(sb.st_mode) && fr_file_hash(line, &k, &herr) == FR_OK;
    if (ok) {
      fr_key_hex(&k, have);
      ok = strcmp(have, hex) == 0;
    }
  }
  free(temp);
  return ok && got == 0;
}

/* Replaces the paths output node n reported in its "files" output fo with the record described above. */
static enum fr_status fr__record_files(struct fr__run *r, int n, int fo, struct fr_err *err) {
  const struct fr_gnode *gn = &r->g->nodes[n];
  const struct fr_value *v = r->mem[n][fo];
  if (!v || v->kind != FR_V_STRING || !v->s)
    return fr_errf(err, FR_E_INTERNAL, "node %s (%s): its files output is not a string", gn->id,
                   gn->spec->name);
  struct fr_buf b = {0};
  enum fr_status rc = FR_OK;
  const char *p = v->s;
  char line[4200];
  int got = 0;
  while (rc == FR_OK && (got = fr__next_line(&p, line, sizeof line)) == 1) {
    char *real = realpath(line, NULL); /* libc malloc */
    struct fr_key k;
    char hex[33];
    if (!real)
      rc = fr_errf(err, FR_E_IO, "node %s (%s): the file it wrote, %s, cannot be found: %s", gn->id,
                   gn->spec->name, line, strerror(errno));
    else if ((rc = fr_file_hash(real, &k, err)) != FR_OK)
      fr_err_prefix(err, rc, "node %s (%s): the file it wrote: ", gn->id, gn->spec->name);
    if (rc == FR_OK) {
      fr_key_hex(&k, hex);
      fr_buf_printf(&b, "%s%s\t%s", b.len ? "\n" : "", real, hex);
    }
    free(real);
  }
  if (rc == FR_OK && got < 0)
    rc = fr_errf(err, FR_E_INVALID, "node %s (%s): a path it wrote is too long", gn->id, gn->spec->name);
  struct fr_value *rec = NULL;
  if (rc == FR_OK) {
    rec = b.oom ? NULL : fr_value_string(b.len ? b.data : "");
    if (!rec)
      rc = fr_errf(err, FR_E_NOMEM, "node %s (%s): out of memory", gn->id, gn->spec->name);
  }
  fr_buf_free(&b);
  if (rc != FR_OK)
    return rc;
  fr_value_unref(r->mem[n][fo]);
  r->mem[n][fo] = rec;
  return FR_OK;
}

/* Decides for every node whether it runs, comes from the cache (memory or SQLite) or is not needed,
 * walking back from the output nodes in reverse topological order. */
static enum fr_status fr__plan(struct fr__run *r, struct fr_err *err) {
  const struct fr_graph *g = r->g;
  for (int n = 0; n < g->n_nodes; n++) {
    r->st[n] = FR__SKIP;
    for (int o = 0; o < g->nodes[n].spec->n_outputs; o++) {
      r->need[n][o] = 0;
      r->want[n][o] = false;
    }
  }
  for (int k = g->n_nodes - 1; k >= 0; k--) {
    int n = g->order[k];
    const struct fr_gnode *gn = &g->nodes[n];
    const struct fr_node_spec *s = gn->spec;
    bool root = (s->flags & FR_NODE_OUTPUT) != 0;
    bool wanted = root;
    for (int o = 0; o < s->n_outputs; o++)
      wanted = wanted || r->want[n][o];
    if (!wanted)
      continue;
    /* A forced node that already ran in this run has its outputs in memory or in the cache now. */
    bool run = r->forced[n] && !r->done[n];
    if (!run && root && s->n_outputs == 0)
      run = !r->done[n]; /* nothing to cache: its work is its side effect */
    for (int o = 0; !run && o < s->n_outputs; o++)
      if ((root || r->want[n][o]) && !fr__available(r, n, o))
        run = true;
    int fo = fr__files_output(s);
    if (!run && fo >= 0 && !r->done[n]) {
      enum fr_status rc = fr__load_cached(r, n, fo, err);
      if (rc == FR_E_NOMEM)
        return rc;
      /* Re-materialise the file from its (cached) inputs, under a fresh name, unless the file it recorded is
       * still there with the same bytes. */
      if (rc != FR_OK || !fr__files_verified(r, n, r->mem[n][fo]))
        run = true;
    }
    r->st[n] = run ? FR__RUN : FR__CACHED;
    if (!run)
      continue;
    for (int i = 0; i < s->n_inputs; i++) {
      const struct fr_binding *b = &gn->inputs[i];
      if (b->kind != FR_BIND_LINK)
        continue;
      r->want[b->src_node][b->src_output] = true;
      r->need[b->src_node][b->src_output]++;
    }
  }
  /* Nothing left dangling: every input of a running node is produced before it or available. */
  for (int k = 0; k < g->n_nodes; k++) {
    int n = g->order[k];
    if (r->st[n] != FR__RUN)
      continue;
    const struct fr_gnode *gn = &g->nodes[n];
    for (int i = 0; i < gn->spec->n_inputs; i++) {
      const struct fr_binding *b = &gn->inputs[i];
      if (b->kind == FR_BIND_LINK && r->st[b->src_node] == FR__SKIP)
        return fr_errf(err, FR_E_INTERNAL, "plan: node %s input %s has no producer", gn->id,
                       gn->spec->inputs[i].name);
    }
  }
  return FR_OK;
}

/* Drops in-memory values nobody in the current plan still reads (root outputs are kept until their
 * node's output events are out). */
static void fr__release_unneeded(struct fr__run *r) {
  for (int n = 0; n < r->g->n_nodes; n++)
    for (int o = 0; o < r->g->nodes[n].spec->n_outputs; o++)
      if (r->mem[n][o] && r->need[n][o] == 0 &&
          !((r->g->nodes[n].spec->flags & FR_NODE_OUTPUT) && r->st[n] != FR__SKIP &&
            !r->outputs_emitted[n])) {
        fr_value_unref(r->mem[n][o]);
        r->mem[n][o] = NULL;
      }
}

/* ---- executing one node ---- */

/* One output event per recorded file. written: this run wrote it (else it was there, cached). */
static void fr__emit_outputs(struct fr__run *r, int n, bool written) {
  int fo = fr__files_output(r->g->nodes[n].spec);
  r->outputs_emitted[n] = true;
  if (fo < 0 || !r->mem[n][fo] || r->mem[n][fo]->kind != FR_V_STRING || !r->mem[n][fo]->s)
    return;
  const char *p = r->mem[n][fo]->s;
  char line[4200];
  while (fr__next_line(&p, line, sizeof line) == 1) {
    const char *hex;
    fr__split_record(line, &hex);
    struct fr_event ev = {.kind = FR_EV_OUTPUT,
                          .node = r->g->nodes[n].id,
                          .node_type = r->g->nodes[n].spec->name,
                          .path = line,
                          .written = written};
    fr__emit(r->e, &ev);
  }
}

static enum fr_status fr__store(struct fr__run *r, int n, struct fr_err *err) {
  const struct fr_gnode *gn = &r->g->nodes[n];
  if (!r->e->cache)
    return FR_OK;
  for (int o = 0; o < gn->spec->n_outputs; o++) {
    struct fr_value *v = r->mem[n][o];
    if (!fr_value_cacheable(v))
      continue;
    struct fr_buf b = {0};
    enum fr_status rc = fr_value_serialize(v, &b, err);
    if (rc == FR_OK && b.oom)
      rc = fr_errf(err, FR_E_NOMEM, "out of memory");
    if (rc == FR_OK)
      rc = fr_cache_put(r->e->cache, &r->okeys[n][o], b.data, b.len, err);
    if (rc == FR_OK && r->e->tier.put) {
      struct fr_err terr;
      if (r->e->tier.put(r->e->tier.user, &r->okeys[n][o], b.data, b.len, &terr) != FR_OK) {
        char msg[FR_ERR_MAX + 128];
        snprintf(msg, sizeof msg, "node %s: not stored in the shared cache: %s", gn->id, terr.msg);
        fr__warn(r->e, msg);
      }
    }
    fr_buf_free(&b);
    if (rc != FR_OK)
      return fr_err_prefix(err, rc, "node %s (%s): storing output %s in the cache: ", gn->id, gn->spec->name,
                           gn->spec->outputs[o].name);
  }
  return FR_OK;
}

/* A node context for node n with its inputs bound (in the run's arena). */
static enum fr_status fr__node_ctx(struct fr__run *r, int n, struct fr_node_ctx **out, struct fr_err *err) {
  const struct fr_gnode *gn = &r->g->nodes[n];
  const struct fr_node_spec *s = gn->spec;
  struct fr_node_ctx *nc = fr_arena_alloc(r->a, sizeof *nc);
  struct fr_value **in = fr_arena_alloc(r->a, (size_t)(s->n_inputs + 1) * sizeof *in);
  if (!nc || !in)
    return fr_errf(err, FR_E_NOMEM, "node %s (%s): out of memory", gn->id, s->name);
  nc->r = r;
  nc->node = n;
  nc->in = in;
  nc->out = r->mem[n];
  for (int i = 0; i < s->n_inputs; i++) {
    const struct fr_binding *b = &gn->inputs[i];
    if (b->kind == FR_BIND_LITERAL)
      in[i] = b->literal;
    else if (b->kind == FR_BIND_LINK) {
      in[i] = r->mem[b->src_node][b->src_output];
      if (!in[i])
        return fr_errf(err, FR_E_INTERNAL, "node %s (%s): input %s is missing at run time", gn->id, s->name,
                       s->inputs[i].name);
    }
  }
  *out = nc;
  return FR_OK;
}

/* Reads of model files while a node runs report their progress as load_progress events of that node. */
static void fr__load_progress(void *user, const char *path, uint64_t done, uint64_t total, double rate) {
  struct fr_node_ctx *nc = user;
  const struct fr_gnode *gn = &nc->r->g->nodes[nc->node];
  struct fr_event ev = {.kind = FR_EV_LOAD_PROGRESS,
                        .node = gn->id,
                        .node_type = gn->spec->name,
                        .path = path,
                        .bytes = done,
                        .bytes_total = total,
                        .bytes_per_s = rate};
  fr__emit(nc->r->e, &ev);
}

static enum fr_status fr__execute(struct fr__run *r, int n, struct fr_err *err) {
  const struct fr_gnode *gn = &r->g->nodes[n];
  const struct fr_node_spec *s = gn->spec;
  struct fr_node_ctx *nc = NULL;
  enum fr_status brc = fr__node_ctx(r, n, &nc, err);
  if (brc != FR_OK)
    return brc;
  /* Outputs left from an earlier attempt of this run are replaced. */
  for (int o = 0; o < s->n_outputs; o++) {
    fr_value_unref(r->mem[n][o]);
    r->mem[n][o] = NULL;
  }

  struct fr_event ev = {.kind = FR_EV_NODE_START, .node = gn->id, .node_type = s->name, .key = r->hex[n]};
  fr__emit(r->e, &ev);
  double t0 = fr__now_ms();
  fr_read_set_progress(fr__load_progress, nc);
  enum fr_status rc = s->run ? s->run(nc) : fr_node_fail(nc, FR_E_INTERNAL, "node type has no run function");
  fr_read_set_progress(NULL, NULL);
  double ms = fr__now_ms() - t0;
  if (rc != FR_OK)
    r->fail_node = n;
  fr_arena_free(nc->arena);
  nc->arena = NULL;
  if (rc != FR_OK) {
    if (rc == FR_E_CANCELLED)
      return fr_errf(err, rc, "cancelled during node %s (%s)", gn->id, s->name);
    return fr_errf(err, rc, "node %s (%s): %s", gn->id, s->name, nc->has_msg ? nc->msg : fr_status_str(rc));
  }
  for (int o = 0; o < s->n_outputs; o++)
    if (!r->mem[n][o])
      return fr_errf(err, FR_E_INTERNAL, "node %s (%s): did not set its output %s", gn->id, s->name,
                     s->outputs[o].name);
  r->done[n] = true;
  r->executed++;
  int fo = fr__files_output(s);
  rc = fo >= 0 ? fr__record_files(r, n, fo, err) : FR_OK;
  if (rc == FR_OK)
    rc = fr__store(r, n, err);
  if (rc != FR_OK) {
    r->fail_node = n;
    return rc;
  }
  struct fr_event done = {.kind = FR_EV_NODE_DONE, .node = gn->id, .node_type = s->name, .ms = ms};
  fr__emit(r->e, &done);
  fr__emit_outputs(r, n, true);
  /* Its inputs have one reader less. */
  for (int i = 0; i < s->n_inputs; i++) {
    const struct fr_binding *b = &gn->inputs[i];
    if (b->kind != FR_BIND_LINK)
      continue;
    if (--r->need[b->src_node][b->src_output] <= 0) {
      r->need[b->src_node][b->src_output] = 0;
      if (!(r->g->nodes[b->src_node].spec->flags & FR_NODE_OUTPUT) || r->outputs_emitted[b->src_node]) {
        fr_value_unref(r->mem[b->src_node][b->src_output]);
        r->mem[b->src_node][b->src_output] = NULL;
      }
    }
  }
  return FR_OK;
}

/* Brings the cached outputs of node n that running consumers need into memory. FR_E_NOTFOUND: one is
 * unreadable, re-plan with n forced. */
static enum fr_status fr__use_cached(struct fr__run *r, int n, struct fr_err *err) {
  const struct fr_gnode *gn = &r->g->nodes[n];
  for (int o = 0; o < gn->spec->n_outputs; o++) {
    if (r->need[n][o] == 0)
      continue;
    enum fr_status rc = fr__load_cached(r, n, o, err);
    if (rc != FR_OK)
      return rc;
  }
  if (!r->reported[n] && !r->done[n]) {
    r->reported[n] = true;
    r->cached++;
    struct fr_event ev = {.kind = FR_EV_NODE_CACHED,
                          .node = gn->id,
                          .node_type = gn->spec->name,
                          .key = r->hex[n],
                          .from = r->from_tier[n] ? "shared" : NULL};
    fr__emit(r->e, &ev);
  }
  if ((gn->spec->flags & FR_NODE_OUTPUT) && !r->outputs_emitted[n])
    fr__emit_outputs(r, n, false);
  return FR_OK;
}

/* ---- a run ---- */

static enum fr_status fr__run_alloc(struct fr__run *r, struct fr_err *err) {
  const struct fr_graph *g = r->g;
  int N = g->n_nodes > 0 ? g->n_nodes : 1;
  struct fr_arena *a = r->a;
  r->sigs = fr_arena_alloc(a, (size_t)N * sizeof *r->sigs);
  r->lsigs = fr_arena_alloc(a, (size_t)N * sizeof *r->lsigs);
  r->hex = fr_arena_alloc(a, (size_t)N * sizeof *r->hex);
  r->okeys = fr_arena_alloc(a, (size_t)N * sizeof *r->okeys);
  r->mem = fr_arena_alloc(a, (size_t)N * sizeof *r->mem);
  r->need = fr_arena_alloc(a, (size_t)N * sizeof *r->need);
  r->want = fr_arena_alloc(a, (size_t)N * sizeof *r->want);
  r->st = fr_arena_alloc(a, (size_t)N * sizeof *r->st);
  r->forced = fr_arena_alloc(a, (size_t)N);
  r->done = fr_arena_alloc(a, (size_t)N);
  r->reported = fr_arena_alloc(a, (size_t)N);
  r->from_tier = fr_arena_alloc(a, (size_t)N);
  r->outputs_emitted = fr_arena_alloc(a, (size_t)N);
  if (!r->sigs || !r->lsigs || !r->hex || !r->okeys || !r->mem || !r->need || !r->want || !r->st ||
      !r->forced || !r->done || !r->reported || !r->from_tier || !r->outputs_emitted)
    return fr_errf(err, FR_E_NOMEM, "out of memory planning the run");
  for (int n = 0; n < g->n_nodes; n++) {
    size_t no = (size_t)(g->nodes[n].spec->n_outputs > 0 ? g->nodes[n].spec->n_outputs : 1);
    r->okeys[n] = fr_arena_alloc(a, no * sizeof **r->okeys);
    r->lsigs[n] = fr_arena_alloc(a, no * sizeof **r->lsigs);
    r->mem[n] = fr_arena_alloc(a, no * sizeof **r->mem);
    r->need[n] = fr_arena_alloc(a, no * sizeof **r->need);
    r->want[n] = fr_arena_alloc(a, no * sizeof **r->want);
    if (!r->okeys[n] || !r->lsigs[n] || !r->mem[n] || !r->need[n] || !r->want[n])
      return fr_errf(err, FR_E_NOMEM, "out of memory planning the run");
  }
  return FR_OK;
}

/* Makes the output folder if it is missing (for every output node: SaveImage, SaveLatent, ...) and resolves
 * it to an absolute path without links: the folder output nodes write to and their signatures name, so the
 * same relative --output from another working folder is another folder. */
static enum fr_status fr__output_dir(struct fr__run *r, struct fr_err *err) {
  const char *dir = r->e->output_dir;
  enum fr_status rc = fr_mkdirs(dir, err);
  if (rc != FR_OK)
    return fr_err_prefix(err, rc, "output folder: ");
  char *real = realpath(dir, NULL); /* libc malloc: copied, then freed */
  if (!real)
    return fr_errf(err, FR_E_IO, "output folder %s: %s", dir, strerror(errno));
  r->out_real = fr_arena_strdup(r->a, real);
  free(real);
  return r->out_real ? FR_OK : fr_errf(err, FR_E_NOMEM, "out of memory");
}

static enum fr_status fr__signatures(struct fr__run *r, struct fr_err *err) {
  struct fr_engine *e = r->e;
  struct fr_sig_ctx ctx = {.device = e->device,
                           .dtype = e->sig_dtype,
                           .output_dir = r->out_real,
                           .cache = e->cache,
                           .memo = &e->memo,
                           .model_dirs = (const char *const *)e->model_dirs,
                           .n_model_dirs = e->n_model_dirs,
                           .link_sigs = r->lsigs};
  /* A fresh nonce per run for non-deterministic nodes: time, pid, run counter. */
  struct {
    struct timespec ts;
    pid_t pid;
    uint64_t runs;
    const void *self;
  } seed;
  memset(&seed, 0, sizeof seed);
  clock_gettime(CLOCK_REALTIME, &seed.ts);
  seed.pid = getpid();
  seed.runs = ++e->runs;
  seed.self = (const void *)e;
  XXH128_hash_t h = XXH3_128bits(&seed, sizeof seed);
  ctx.nonce[0] = h.low64;
  ctx.nonce[1] = h.high64;
  for (int k = 0; k < r->g->n_nodes; k++) {
    int n = r->g->order[k];
    const struct fr_gnode *gn = &r->g->nodes[n];
    for (int i = 0; i < gn->spec->n_inputs; i++) {
      const struct fr_binding *b = &gn->inputs[i];
      if (!b->pin_found)
        continue;
      char msg[FR_ERR_MAX];
      snprintf(msg, sizeof msg,
               "node %s (%s): input %s: model file '%s' is not in the model folders under "
               "that name; using %s, which has its pinned sha256 %s",
               gn->id, gn->spec->name, gn->spec->inputs[i].name,
               b->literal && b->literal->s ? b->literal->s : "?", b->path, b->pin);
      struct fr_event ev = {.kind = FR_EV_INFO, .node = gn->id, .node_type = gn->spec->name, .message = msg};
      fr__emit(e, &ev);
    }
    enum fr_status rc = fr_signature_node(&ctx, r->g, n, r->sigs, &r->sigs[n], err);
    if (rc != FR_OK)
      return rc;
    fr_key_hex(&r->sigs[n], r->hex[n]);
    for (int o = 0; o < r->g->nodes[n].spec->n_outputs; o++) {
      rc = fr_signature_link(&ctx, r->g, n, o, r->sigs, &r->lsigs[n][o], err);
      if (rc != FR_OK)
        return rc;
      fr_signature_output(&r->lsigs[n][o], o, &r->okeys[n][o]);
    }
  }
  return FR_OK;
}

/* ---- out-of-memory recovery ---- */

static void fr__mem_hooks(struct fr_engine *e, struct fr_node_ctx *nc, enum fr_mem_mode mode,
                          struct fr_mem_report *rep) {
  memset(rep, 0, sizeof *rep);
  struct fr__run none = {.e = e, .fail_node = -1};
  struct fr_node_ctx nonc = {.r = &none, .node = -1};
  for (int i = 0; i < e->n_hooks; i++)
    e->hooks[i].fn(e->hooks[i].user, nc ? nc : &nonc, mode, rep);
}

static const char *fr__bytes_str(uint64_t b, char *buf, size_t n) {
  if (b >= (uint64_t)1 << 30)
    snprintf(buf, n, "%.1f GB", (double)b / (1 << 30));
  else if (b >= (uint64_t)1 << 20)
    snprintf(buf, n, "%.1f MB", (double)b / (1 << 20));
  else
    snprintf(buf, n, "%.0f KB", (double)b / (1 << 10));
  return buf;
}

/* Node n failed with FR_E_NOMEM (message in err): the hooks release what n does not need, and n runs
 * once more in low-memory mode. A second FR_E_NOMEM fails the run with a message saying what to reduce. */
static enum fr_status fr__retry_oom(struct fr__run *r, int n, struct fr_err *err) {
  struct fr_engine *e = r->e;
  const struct fr_gnode *gn = &r->g->nodes[n];
  r->had_oom = true;
  atomic_fetch_add(&e->oom, 1);
  char first[FR_ERR_MAX];
  snprintf(first, sizeof first, "%s", err ? err->msg : "out of memory");
  struct fr_mem_report rep = {0};
  struct fr_node_ctx *nc = NULL;
  struct fr_err berr;
  if (fr__node_ctx(r, n, &nc, &berr) == FR_OK)
    fr__mem_hooks(e, nc, FR_MEM_RELEASE, &rep);
  atomic_fetch_add(&e->oom_retries, 1);
  atomic_fetch_add(&e->oom_models, (unsigned long long)rep.models);
  atomic_fetch_add(&e->oom_bytes, (unsigned long long)(rep.model_bytes + rep.reserve_bytes));
  char mb[32], rb[32], msg[FR_ERR_MAX + 512];
  snprintf(msg, sizeof msg,
           "%s; released %d cached model%s (%s) and %s of pooled memory, retrying once with low memory "
           "(VAE decode in tiles, smaller upscale tiles)",
           first, rep.models, rep.models == 1 ? "" : "s", fr__bytes_str(rep.model_bytes, mb, sizeof mb),
           fr__bytes_str(rep.reserve_bytes, rb, sizeof rb));
  struct fr_event ev = {.kind = FR_EV_WARNING, .node = gn->id, .node_type = gn->spec->name, .message = msg};
  fr__emit(e, &ev);
  r->low_memory = true;
  enum fr_status rc = fr__execute(r, n, err);
  r->low_memory = false;
  if (rc == FR_OK) {
    atomic_fetch_add(&e->oom_recovered, 1);
    return FR_OK;
  }
  if (rc != FR_E_NOMEM)
    return rc;
  atomic_fetch_add(&e->oom_failed, 1);
  char again[FR_ERR_MAX];
  snprintf(again, sizeof again, "%s", err ? err->msg : "out of memory");
  return fr_errf(err, FR_E_NOMEM,
                 "%s -- out of memory again after releasing %d cached model%s and retrying with low memory. "
                 "Reduce what node %s (%s) needs: a smaller image size or batch size, a tiled decode "
                 "(VAEDecode tile_size), fewer models loaded at once (or a smaller dtype)",
                 again, rep.models, rep.models == 1 ? "" : "s", gn->id, gn->spec->name);
}

void fr_engine_oom_stats(const struct fr_engine *e, struct fr_oom_stats *out) {
  struct fr_engine *m = (struct fr_engine *)e; /* atomics are read, not changed */
  out->oom = atomic_load(&m->oom);
  out->retries = atomic_load(&m->oom_retries);
  out->recovered = atomic_load(&m->oom_recovered);
  out->failed = atomic_load(&m->oom_failed);
  out->released_models = atomic_load(&m->oom_models);
  out->released_bytes = atomic_load(&m->oom_bytes);
}

void fr_engine_memory(struct fr_engine *e, struct fr_mem_report *out) {
  fr__mem_hooks(e, NULL, FR_MEM_QUERY, out);
}

void fr_engine_mem_hook(struct fr_engine *e, const char *name, fr_mem_hook_fn fn, void *user,
                        void (*destroy)(void *)) {
  for (int i = 0; i < e->n_hooks; i++)
    if (strcmp(e->hooks[i].name, name) == 0) {
      if (e->hooks[i].destroy && e->hooks[i].user != user)
        e->hooks[i].destroy(e->hooks[i].user);
      e->hooks[i].fn = fn;
      e->hooks[i].user = user;
      e->hooks[i].destroy = destroy;
      return;
    }
  char *k = fr_strdup(name);
  if (k && e->n_hooks == e->cap_hooks) {
    int cap = e->cap_hooks ? 2 * e->cap_hooks : 4;
    struct fr__hook *nh = fr_realloc(e->hooks, (size_t)cap * sizeof *nh);
    if (nh) {
      e->hooks = nh;
      e->cap_hooks = cap;
    }
  }
  if (!k || e->n_hooks == e->cap_hooks) { /* out of memory: no hook (recovery then frees less) */
    fr_free(k);
    if (destroy)
      destroy(user);
    return;
  }
  e->hooks[e->n_hooks++] = (struct fr__hook){k, fn, user, destroy};
}

static enum fr_status fr__run_body(struct fr__run *r, struct fr_err *err) {
  const struct fr_graph *g = r->g;
  bool any_root = false;
  for (int n = 0; n < g->n_nodes; n++)
    any_root = any_root || (g->nodes[n].spec->flags & FR_NODE_OUTPUT);
  if (!any_root)
    return fr_errf(err, FR_E_INVALID, "%s: nothing to do: the graph has no output node (such as SaveImage)",
                   g->path ? g->path : "graph");
  enum fr_status rc = fr__output_dir(r, err);
  if (rc == FR_OK)
    rc = fr__signatures(r, err);
  if (rc != FR_OK)
    return rc;
  /* Each re-plan forces one more node to run, so this ends after at most n_nodes + 1 plans. */
  for (int attempt = 0; attempt <= g->n_nodes; attempt++) {
    rc = fr__plan(r, err);
    if (rc != FR_OK)
      return rc;
    if (attempt == 0) {
      int planned = 0;
      for (int n = 0; n < g->n_nodes; n++)
        planned += r->st[n] == FR__RUN;
      struct fr_event ev = {.kind = FR_EV_RUN_START, .planned = planned};
      fr__emit(r->e, &ev);
    }
    fr__release_unneeded(r);
    bool replan = false;
    for (int k = 0; k < g->n_nodes && !replan; k++) {
      int n = g->order[k];
      if (r->st[n] == FR__SKIP)
        continue;
      if (atomic_load(&r->e->cancelled))
        return fr_errf(err, FR_E_CANCELLED, "cancelled");
      if (r->st[n] == FR__CACHED) {
        rc = fr__use_cached(r, n, err);
        if (rc == FR_E_NOTFOUND) {
          r->forced[n] = true;
          replan = true;
          continue;
        }
      } else {
        rc = fr__execute(r, n, err);
        if (rc == FR_E_NOMEM && r->fail_node == n && !r->done[n] && !atomic_load(&r->e->cancelled))
          rc = fr__retry_oom(r, n, err);
      }
      if (rc != FR_OK)
        return rc;
    }
    if (!replan)
      return FR_OK;
  }
  return fr_errf(err, FR_E_INTERNAL, "plan did not settle");
}

enum fr_status fr_engine_run(struct fr_engine *e, const struct fr_graph *g, struct fr_run_summary *summary,
                             struct fr_err *err) {
  double t0 = fr__now_ms();
  atomic_store(&e->cancelled, 0);
  if (summary)
    memset(summary, 0, sizeof *summary);
  struct fr__run r = {.e = e, .g = g, .fail_node = -1};
  enum fr_status rc = FR_OK;
  r.a = fr_arena_new(0);
  if (!r.a)
    rc = fr_errf(err, FR_E_NOMEM, "out of memory starting the run");
  if (rc == FR_OK)
    rc = fr__run_alloc(&r, err);
  if (rc == FR_OK) {
    r.params_json = fr_graph_params_json(g);
    /* a cancel also stops a file being read for its hash or loaded (fr_read_pass, fr_read_chunks) */
    const atomic_int *outer = fr_read_set_cancel(&e->cancelled);
    rc = fr__run_body(&r, err);
    fr_read_set_cancel(outer);
  }
  int planned = 0;
  if (r.mem)
    for (int n = 0; n < g->n_nodes; n++) {
      planned += r.st && r.st[n] == FR__RUN;
      for (int o = 0; r.mem[n] && o < g->nodes[n].spec->n_outputs; o++)
        fr_value_unref(r.mem[n][o]);
    }
  double ms = fr__now_ms() - t0;
  if (rc != FR_OK && rc != FR_E_CANCELLED) {
    struct fr_event ev = {.kind = FR_EV_ERROR,
                          .node = r.fail_node >= 0 ? g->nodes[r.fail_node].id : NULL,
                          .node_type = r.fail_node >= 0 ? g->nodes[r.fail_node].spec->name : NULL,
                          .message = err ? err->msg : fr_status_str(rc),
                          .status = rc};
    fr__emit(e, &ev);
  }
  fr_arena_free(r.a);
  if (r.had_oom) { /* the next run starts from empty pools */
    struct fr_mem_report rep;
    fr__mem_hooks(e, NULL, FR_MEM_TRIM, &rep);
  }
  /* The LRU stamps of what this run read, in one short transaction if nobody else writes now. */
  fr_cache_flush(e->cache);
  struct fr_event done = {.kind = FR_EV_RUN_DONE,
                          .executed = r.executed,
                          .cached = r.cached,
                          .planned = planned,
                          .ms = ms,
                          .status = rc};
  fr__emit(e, &done);
  if (summary) {
    summary->executed = r.executed;
    summary->cached = r.cached;
    summary->planned = planned;
    summary->ms = ms;
  }
  return rc;
}

/* ---- what run functions use ---- */

static int fr__in_idx(struct fr_node_ctx *nc, const char *name) {
  int i = fr_spec_input_index(nc->r->g->nodes[nc->node].spec, name);
  if (i < 0)
    fprintf(stderr, "flowrun: bug: node type %s asks for an input '%s' it does not declare\n",
            nc->r->g->nodes[nc->node].spec->name, name);
  return i;
}

static const struct fr_value *fr__in_val(struct fr_node_ctx *nc, const char *name) {
  int i = fr__in_idx(nc, name);
  return i < 0 ? NULL : nc->in[i];
}

bool fr_in_has(struct fr_node_ctx *nc, const char *name) {
  return fr__in_val(nc, name) != NULL;
}

int64_t fr_in_int(struct fr_node_ctx *nc, const char *name) {
  const struct fr_value *v = fr__in_val(nc, name);
  if (!v)
    return 0;
  switch (v->kind) {
  case FR_V_INT: return v->i;
  case FR_V_FLOAT: return (int64_t)v->f;
  case FR_V_BOOL: return v->b;
  default: return 0;
  }
}

double fr_in_float(struct fr_node_ctx *nc, const char *name) {
  const struct fr_value *v = fr__in_val(nc, name);
  if (!v)
    return 0;
  switch (v->kind) {
  case FR_V_INT: return (double)v->i;
  case FR_V_FLOAT: return v->f;
  case FR_V_BOOL: return v->b;
  default: return 0;
  }
}

bool fr_in_bool(struct fr_node_ctx *nc, const char *name) {
  const struct fr_value *v = fr__in_val(nc, name);
  if (!v)
    return false;
  switch (v->kind) {
  case FR_V_BOOL: return v->b;
  case FR_V_INT: return v->i != 0;
  case FR_V_FLOAT: return v->f != 0;
  default: return false;
  }
}

const char *fr_in_str(struct fr_node_ctx *nc, const char *name) {
  const struct fr_value *v = fr__in_val(nc, name);
  return v && v->kind == FR_V_STRING ? v->s : NULL;
}

const struct fr_value *fr_in(struct fr_node_ctx *nc, const char *name) {
  return fr__in_val(nc, name);
}

const char *fr_in_path(struct fr_node_ctx *nc, const char *name) {
  int i = fr__in_idx(nc, name);
  if (i < 0)
    return NULL;
  const struct fr_binding *b = &nc->r->g->nodes[nc->node].inputs[i];
  return b->kind == FR_BIND_LITERAL ? b->path : NULL;
}

enum fr_status fr_out_set(struct fr_node_ctx *nc, int idx, struct fr_value *v) {
  const struct fr_node_spec *s = nc->r->g->nodes[nc->node].spec;
  if (idx < 0 || idx >= s->n_outputs) {
    fr_value_unref(v);
    return fr_node_fail(nc, FR_E_INTERNAL, "fr_out_set: output index %d out of range (node has %d)", idx,
                        s->n_outputs);
  }
  if (!v)
    return fr_node_fail(nc, FR_E_NOMEM, "out of memory setting output %s", s->outputs[idx].name);
  fr_value_unref(nc->out[idx]);
  nc->out[idx] = v;
  return FR_OK;
}

enum fr_status fr_node_progress(struct fr_node_ctx *nc, int step, int steps,
                                const struct fr_tensor *preview) {
  const struct fr_gnode *gn = &nc->r->g->nodes[nc->node];
  struct fr_event ev = {.kind = FR_EV_PROGRESS,
                        .node = gn->id,
                        .node_type = gn->spec->name,
                        .step = step,
                        .steps = steps,
                        .preview = preview};
  fr__emit(nc->r->e, &ev);
  return atomic_load(&nc->r->e->cancelled) ? FR_E_CANCELLED : FR_OK;
}

enum fr_status fr_node_fail(struct fr_node_ctx *nc, enum fr_status rc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(nc->msg, sizeof nc->msg, fmt, ap);
  va_end(ap);
  nc->has_msg = true;
  return rc;
}

struct fr_arena *fr_node_arena(struct fr_node_ctx *nc) {
  if (!nc->arena)
    nc->arena = fr_arena_new(0);
  return nc->arena;
}

const char *fr_node_id(struct fr_node_ctx *nc) {
  return nc->r->g->nodes[nc->node].id;
}
const char *fr_node_graph_yaml(struct fr_node_ctx *nc) {
  struct fr__run *r = nc->r;
  const char *yaml = r->g->yaml ? r->g->yaml : "";
  if (!r->bundled) {
    char *text = NULL;
    size_t len = 0;
    struct fr_err err;
    if (fr_bundle(yaml, strlen(yaml), r->g->path, r->g->dir, &text, &len, &err) == FR_OK) {
      r->bundled = fr_arena_strndup(r->a, text, len);
    } else {
      /* The subgraph files loaded a moment ago; if one changed since, the graph as written is kept. */
      fr_node_warn(nc, "the workflow is embedded without its subgraph files: %s", err.msg);
      r->bundled = yaml;
    }
    fr_free(text);
  }
  return r->bundled ? r->bundled : yaml;
}
const char *fr_node_graph_params_json(struct fr_node_ctx *nc) {
  return nc->r->params_json ? nc->r->params_json : "{}";
}
const char *fr_node_output_dir(struct fr_node_ctx *nc) {
  return nc->r->out_real ? nc->r->out_real : nc->r->e->output_dir;
}
enum fr_status fr_node_output_target(struct fr_node_ctx *nc, const char *input, char *dir, size_t cap,
                                     const char **name) {
  const char *v = fr_in_str(nc, input);
  const char *out = fr_node_output_dir(nc);
  *name = "";
  if (!v || v[0] != '/') {
    *name = v ? v : "";
    if ((size_t)snprintf(dir, cap, "%s", out) >= cap)
      return fr_node_fail(nc, FR_E_INVALID, "the output folder %s: path too long", out);
    return FR_OK;
  }
  if (!fr__abs_output_split(v, dir, cap, name))
    return fr_node_fail(nc, FR_E_INVALID, "input '%s': '%s' does not name a file (or is too long)", input, v);
  struct fr_err err = {{0}};
  if (fr__confined(nc->r->e)) {
    /* The lexical check first, so nothing outside is made or looked at; then the real one (links). */
    char real[4200];
    const char *const roots[1] = {nc->r->out_real};
    if (!roots[0] || !fr_path_is_under(roots[0], dir) ||
        fr_roots_check(roots, 1, dir, real) != FR_ROOT_INSIDE)
      return fr_node_fail(
          nc, FR_E_INVALID,
          "input '%s': '%s' is not inside the output folder (this server writes nowhere else; "
          "the folder must exist there)",
          input, v);
    return FR_OK;
  }
  enum fr_status rc = fr_mkdirs(dir, &err);
  if (rc != FR_OK)
    return fr_node_fail(nc, rc, "input '%s': %s", input, err.msg);
  return FR_OK;
}
const char *fr_node_temp_dir(struct fr_node_ctx *nc) {
  return nc->r->e->temp_dir;
}
const char *fr_default_temp_dir(char *buf, size_t n) {
  const char *t = getenv("TMPDIR");
  snprintf(buf, n, "%s/flowrun-preview", t && *t ? t : "/tmp");
  return buf;
}
const char *fr_node_graph_dir(struct fr_node_ctx *nc) {
  struct fr__run *r = nc->r;
  if (!r->graph_dir) {
    char *real = realpath(r->g->dir ? r->g->dir : ".", NULL); /* libc malloc: copied, then freed */
    r->graph_dir = real ? fr_arena_strdup(r->a, real) : NULL;
    free(real);
  }
  return r->graph_dir ? r->graph_dir : ".";
}
int fr_node_model_dirs(struct fr_node_ctx *nc, const char *const **dirs) {
  *dirs = (const char *const *)nc->r->e->model_dirs;
  return nc->r->e->n_model_dirs;
}
const char *fr_node_device(struct fr_node_ctx *nc) {
  return nc->r->e->device;
}
const char *fr_node_dtype(struct fr_node_ctx *nc) {
  return nc->r->e->dtype;
}

void fr_node_warn(struct fr_node_ctx *nc, const char *fmt, ...) {
  char msg[FR_ERR_MAX], full[FR_ERR_MAX + 128];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const struct fr_gnode *gn = &nc->r->g->nodes[nc->node];
  snprintf(full, sizeof full, "node %s (%s): %s", gn->id, gn->spec->name, msg);
  struct fr_event ev = {.kind = FR_EV_WARNING, .node = gn->id, .node_type = gn->spec->name, .message = full};
  fr__emit(nc->r->e, &ev);
}

void fr_node_info(struct fr_node_ctx *nc, const char *fmt, ...) {
  char msg[FR_ERR_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const struct fr_gnode *gn = &nc->r->g->nodes[nc->node];
  struct fr_event ev = {.kind = FR_EV_INFO, .node = gn->id, .node_type = gn->spec->name, .message = msg};
  fr__emit(nc->r->e, &ev);
}

void *fr_node_engine_get(struct fr_node_ctx *nc, const char *key) {
  struct fr_engine *e = nc->r->e;
  for (int i = 0; i < e->n_states; i++)
    if (strcmp(e->states[i].key, key) == 0)
      return e->states[i].p;
  return NULL;
}

void *fr_engine_state_get(struct fr_engine *e, const char *key) {
  for (int i = 0; i < e->n_states; i++)
    if (strcmp(e->states[i].key, key) == 0)
      return e->states[i].p;
  return NULL;
}

void fr_engine_state_each(struct fr_engine *e, const char *prefix,
                          void (*fn)(void *user, const char *key, void *p), void *user) {
  size_t n = strlen(prefix);
  for (int i = 0; i < e->n_states; i++)
    if (e->states[i].p && strncmp(e->states[i].key, prefix, n) == 0)
      fn(user, e->states[i].key, e->states[i].p);
}

void fr_node_engine_set(struct fr_node_ctx *nc, const char *key, void *p, void (*destroy)(void *)) {
  struct fr_engine *e = nc->r->e;
  for (int i = 0; i < e->n_states; i++)
    if (strcmp(e->states[i].key, key) == 0) {
      if (e->states[i].destroy && e->states[i].p != p)
        e->states[i].destroy(e->states[i].p);
      e->states[i].p = p;
      e->states[i].destroy = destroy;
      return;
    }
  char *k = fr_strdup(key);
  if (k && e->n_states == e->cap_states) {
    int cap = e->cap_states ? 2 * e->cap_states : 8;
    struct fr__state *ns = fr_realloc(e->states, (size_t)cap * sizeof *ns);
    if (ns) {
      e->states = ns;
      e->cap_states = cap;
    }
  }
  if (!k || e->n_states == e->cap_states) {
    /* Cannot keep it: release it now rather than leak it; the node finds nothing next time. */
    fr_free(k);
    if (destroy)
      destroy(p);
    return;
  }
  e->states[e->n_states++] = (struct fr__state){k, p, destroy};
}

void fr_node_engine_each(struct fr_node_ctx *nc, const char *prefix,
                         void (*fn)(void *user, const char *key, void *p), void *user) {
  struct fr_engine *e = nc->r->e;
  size_t pl = strlen(prefix);
  for (int i = 0; i < e->n_states; i++)
    if (e->states[i].p && strncmp(e->states[i].key, prefix, pl) == 0)
      fn(user, e->states[i].key, e->states[i].p);
}

void fr_node_engine_mem_hook(struct fr_node_ctx *nc, const char *name, fr_mem_hook_fn fn, void *user,
                             void (*destroy)(void *)) {
  fr_engine_mem_hook(nc->r->e, name, fn, user, destroy);
}

bool fr_node_low_memory(struct fr_node_ctx *nc) {
  return nc->r->low_memory;
}

int fr_node_input_count(struct fr_node_ctx *nc) {
  return nc->node < 0 ? 0 : nc->r->g->nodes[nc->node].spec->n_inputs;
}

const struct fr_value *fr_in_at(struct fr_node_ctx *nc, int i) {
  return i < 0 || i >= fr_node_input_count(nc) ? NULL : nc->in[i];
}

const char *fr_in_pin(struct fr_node_ctx *nc, const char *name) {
  int i = fr__in_idx(nc, name);
  if (i < 0)
    return NULL;
  const struct fr_binding *b = &nc->r->g->nodes[nc->node].inputs[i];
  return b->kind == FR_BIND_LITERAL ? b->pin : NULL;
}
