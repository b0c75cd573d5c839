/* The planner and executor with node types defined here: pruning, cache re-use across engines (the
 * same file, as across processes), object outputs, output files re-materialised, corrupt entries
 * recomputed, failures, cancellation, non-deterministic nodes, and allocation failures at every point
 * of a run (clean error, no leak under ASan, cache intact). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/cache.h"
#include "core/flowrun.h"
#include "core/signature.h"
#include "tests/test.h"
#include "tests/unit/tgraph.h"

/* ---- node types ---- */

static int runs_num, runs_add, runs_model, runs_use, runs_save, models_alive;

/* The NUM values the test nodes declare (an int with that type name: a cached value must come back
 * with its output's declared type, else the engine drops it as corrupt). */
static struct fr_value *num_value(int64_t i) {
  struct fr_value *v = fr_value_int(i);
  if (v)
    v->type = "NUM";
  return v;
}

static char seen_dtype[16];
static enum fr_status num_run(struct fr_node_ctx *nc) {
  runs_num++;
  snprintf(seen_dtype, sizeof seen_dtype, "%s", fr_node_dtype(nc));
  return fr_out_set(nc, 0, num_value(fr_in_int(nc, "value")));
}
static const struct fr_input_spec num_in[] = {
    {.name = "value", .type = FR_T_INT, .def = "0", .min = 1, .max = 0}};
static const struct fr_output_spec num_out[] = {{.name = "out", .type = "NUM"}};
static const struct fr_node_spec num_spec = {.name = "Num",
                                             .version = 1,
                                             .inputs = num_in,
                                             .n_inputs = 1,
                                             .outputs = num_out,
                                             .n_outputs = 1,
                                             .run = num_run};
static const struct fr_node_spec noise_spec = {.name = "Noise",
                                               .version = 1,
                                               .inputs = num_in,
                                               .n_inputs = 1,
                                               .outputs = num_out,
                                               .n_outputs = 1,
                                               .run = num_run,
                                               .flags = FR_NODE_NONDETERMINISTIC};

static enum fr_status add_run(struct fr_node_ctx *nc) {
  runs_add++;
  const struct fr_value *a = fr_in(nc, "a"), *b = fr_in(nc, "b");
  if (!a || !b || a->kind != FR_V_INT || b->kind != FR_V_INT)
    return fr_node_fail(nc, FR_E_INVALID, "inputs are not numbers");
  return fr_out_set(nc, 0, num_value(a->i + b->i));
}
static const struct fr_input_spec add_in[] = {{.name = "a", .type = "NUM"}, {.name = "b", .type = "NUM"}};
static const struct fr_node_spec add_spec = {.name = "Add",
                                             .version = 1,
                                             .inputs = add_in,
                                             .n_inputs = 2,
                                             .outputs = num_out,
                                             .n_outputs = 1,
                                             .run = add_run};

static void model_destroy(struct fr_object *o) {
  models_alive--;
  fr_free(o->identity);
  fr_free(o);
}
static enum fr_status model_run(struct fr_node_ctx *nc) {
  runs_model++;
  struct fr_object *o = fr_calloc(1, sizeof *o);
  if (!o)
    return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
  o->refcount = 1;
  o->type = "MODEL";
  o->identity = fr_strdup("test-model");
  o->destroy = model_destroy;
  models_alive++;
  if (!o->identity) {
    model_destroy(o);
    return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
  }
  return fr_out_set(nc, 0, fr_value_object(o));
}
static const struct fr_output_spec model_out[] = {{.name = "MODEL", .type = FR_T_MODEL}};
static const struct fr_node_spec model_spec = {
    .name = "Model", .version = 1, .outputs = model_out, .n_outputs = 1, .run = model_run};

static enum fr_status use_run(struct fr_node_ctx *nc) {
  runs_use++;
  const struct fr_value *m = fr_in(nc, "model"), *x = fr_in(nc, "x");
  if (!m || m->kind != FR_V_OBJECT || !x)
    return fr_node_fail(nc, FR_E_INVALID, "no model");
  return fr_out_set(nc, 0, num_value(x->i * 10));
}
static const struct fr_input_spec use_in[] = {{.name = "model", .type = FR_T_MODEL},
                                              {.name = "x", .type = "NUM"}};
static const struct fr_node_spec use_spec = {.name = "UseModel",
                                             .version = 1,
                                             .inputs = use_in,
                                             .n_inputs = 2,
                                             .outputs = num_out,
                                             .n_outputs = 1,
                                             .run = use_run};

/* Writes "<x>\n" to <output_dir>/<name> and reports the path in its "files" output. */
static char seen_graph_dir[4096];
static enum fr_status save_run(struct fr_node_ctx *nc) {
  runs_save++;
  snprintf(seen_graph_dir, sizeof seen_graph_dir, "%s", fr_node_graph_dir(nc));
  const struct fr_value *x = fr_in(nc, "x");
  struct fr_arena *a = fr_node_arena(nc);
  char *path = a ? fr_arena_printf(a, "%s/%s", fr_node_output_dir(nc), fr_in_str(nc, "name")) : NULL;
  if (!path)
    return fr_node_fail(nc, FR_E_NOMEM, "out of memory");
  FILE *f = fopen(path, "w");
  if (!f)
    return fr_node_fail(nc, FR_E_IO, "%s: cannot write", path);
  fprintf(f, "%lld\n", (long long)x->i);
  fclose(f);
  return fr_out_set(nc, 0, fr_value_string(path));
}
static const struct fr_input_spec save_in[] = {{.name = "x", .type = "NUM"},
                                               {.name = "name", .type = FR_T_STRING, .def = "out.txt"}};
static const struct fr_output_spec save_out[] = {{.name = "files", .type = FR_T_STRING}};
static const struct fr_node_spec save_spec = {.name = "Save",
                                              .version = 1,
                                              .inputs = save_in,
                                              .n_inputs = 2,
                                              .outputs = save_out,
                                              .n_outputs = 1,
                                              .flags = FR_NODE_OUTPUT,
                                              .run = save_run};

static enum fr_status fail_run(struct fr_node_ctx *nc) {
  return fr_node_fail(nc, FR_E_INVALID, "boom %d", 42);
}
static const struct fr_node_spec fail_spec = {.name = "Fail",
                                              .version = 1,
                                              .inputs = save_in,
                                              .n_inputs = 1,
                                              .outputs = num_out,
                                              .n_outputs = 1,
                                              .run = fail_run};

static enum fr_status slow_run(struct fr_node_ctx *nc) {
  int64_t steps = fr_in_int(nc, "value");
  for (int i = 1; i <= steps; i++) {
    enum fr_status rc = fr_node_progress(nc, i, (int)steps, NULL);
    if (rc != FR_OK)
      return rc;
  }
  return fr_out_set(nc, 0, num_value(steps));
}
static const struct fr_node_spec slow_spec = {.name = "Slow",
                                              .version = 1,
                                              .inputs = num_in,
                                              .n_inputs = 1,
                                              .outputs = num_out,
                                              .n_outputs = 1,
                                              .run = slow_run};

static const struct fr_node_spec *const all_specs[] = {&num_spec, &noise_spec, &add_spec,  &model_spec,
                                                       &use_spec, &save_spec,  &fail_spec, &slow_spec};
static const struct fr_registry reg = {all_specs, 8};

/* ---- events ---- */

struct rec {
  int started, cached, outputs, warnings, errors, progress, run_done;
  char started_ids[64][32];
  char key_of[TG_MAX][33]; /* by node index in the current test graph, filled from node events */
  const struct fr_graph *g;
  char error_node[32];
  enum fr_status done_status;
  char last_warning[512];
  struct fr_engine *cancel_engine;
  int cancel_at_step;
};

static void on_event(void *user, const struct fr_event *ev) {
  struct rec *r = user;
  int idx = r->g && ev->node ? fr_graph_find(r->g, ev->node) : -1;
  switch (ev->kind) {
  case FR_EV_NODE_START:
    if (r->started < 64)
      snprintf(r->started_ids[r->started], 32, "%s", ev->node);
    r->started++;
    /* fall through */
  case FR_EV_NODE_CACHED:
    if (ev->kind == FR_EV_NODE_CACHED)
      r->cached++;
    if (idx >= 0 && ev->key)
      snprintf(r->key_of[idx], 33, "%s", ev->key);
    break;
  case FR_EV_OUTPUT: r->outputs++; break;
  case FR_EV_WARNING:
    r->warnings++;
    snprintf(r->last_warning, sizeof r->last_warning, "%s", ev->message ? ev->message : "");
    break;
  case FR_EV_ERROR:
    r->errors++;
    snprintf(r->error_node, sizeof r->error_node, "%s", ev->node ? ev->node : "");
    break;
  case FR_EV_PROGRESS:
    r->progress++;
    if (r->cancel_engine && ev->step == r->cancel_at_step)
      fr_engine_cancel(r->cancel_engine);
    break;
  case FR_EV_RUN_DONE:
    r->run_done++;
    r->done_status = ev->status;
    break;
  default: break;
  }
}

static const char *tmp;
static char cache_path[4200];

/* Runs g with a fresh engine on cache_path (or none) and returns the status; r is reset first. */
static enum fr_status run(const struct fr_graph *g, bool no_cache, struct rec *r, struct fr_run_summary *sum,
                          struct fr_err *err) {
  memset(r, 0, sizeof *r);
  r->g = g;
  struct fr_engine_opts o = {.registry = &reg,
                             .cache_path = cache_path,
                             .no_cache = no_cache,
                             .output_dir = tmp,
                             .on_event = on_event,
                             .user = r};
  struct fr_engine *e = NULL;
  enum fr_status rc = fr_engine_new(&o, &e, err);
  if (rc != FR_OK)
    return rc;
  rc = fr_engine_run(e, g, sum, err);
  fr_engine_free(e);
  return rc;
}

static long long read_num(const char *name) {
  char p[4300];
  snprintf(p, sizeof p, "%s/%s", tmp, name);
  FILE *f = fopen(p, "r");
  if (!f)
    return -1;
  long long v = -1;
  if (fscanf(f, "%lld", &v) != 1)
    v = -1;
  fclose(f);
  return v;
}

static void rm_out(const char *name) {
  char p[4300];
  snprintf(p, sizeof p, "%s/%s", tmp, name);
  remove(p);
}

static bool hex_key(const char *hex, struct fr_key *k) {
  if (strlen(hex) != 32)
    return false;
  for (int i = 0; i < 16; i++) {
    unsigned v;
    if (sscanf(hex + 2 * i, "%2x", &v) != 1)
      return false;
    k->b[i] = (uint8_t)v;
  }
  return true;
}

/* a = Num(av); b = Num(3); s = Add(a, b); save = Save(s) -> out.txt */
static void build_sum(struct tg *t, int64_t av) {
  tg_init(t);
  int a = tg_node(t, "a", &num_spec);
  tg_lit(t, a, "value", fr_value_int(av));
  int b = tg_node(t, "b", &num_spec);
  tg_lit(t, b, "value", fr_value_int(3));
  int s = tg_node(t, "s", &add_spec);
  tg_link(t, s, "a", a, 0);
  tg_link(t, s, "b", b, 0);
  int v = tg_node(t, "save", &save_spec);
  tg_link(t, v, "x", s, 0);
}

static void test_cache_reuse(void) {
  struct tg t;
  struct rec r;
  struct fr_run_summary sum;
  struct fr_err err = {{0}};
  build_sum(&t, 2);
  CHECK_OK(run(&t.g, false, &r, &sum, &err), &err);
  CHECKF(sum.executed == 4 && sum.cached == 0, "executed %d cached %d", sum.executed, sum.cached);
  CHECK(read_num("out.txt") == 5);
  CHECK(r.outputs == 1 && r.run_done == 1 && r.done_status == FR_OK);
  CHECKF(seen_graph_dir[0] == '/', "graph dir %s", seen_graph_dir); /* the test graph's "." made absolute */

  /* Identical second run, new engine on the same file: nothing runs, only the output node is cached
   * (everything upstream of it is pruned: not even loaded). */
  int before = runs_num + runs_add + runs_save;
  CHECK_OK(run(&t.g, false, &r, &sum, &err), &err);
  CHECKF(sum.executed == 0 && sum.cached == 1, "executed %d cached %d", sum.executed, sum.cached);
  CHECK(runs_num + runs_add + runs_save == before);
  CHECK(r.outputs == 1); /* the file it made earlier is still reported */
  tg_free(&t);

  /* One literal changed: a, s and save run; b comes from the cache. */
  build_sum(&t, 4);
  CHECK_OK(run(&t.g, false, &r, &sum, &err), &err);
  CHECKF(sum.executed == 3 && sum.cached == 1, "executed %d cached %d", sum.executed, sum.cached);
  CHECK(r.started == 3 && strcmp(r.started_ids[0], "a") == 0 && strcmp(r.started_ids[1], "s") == 0 &&
        strcmp(r.started_ids[2], "save") == 0);
  CHECK(read_num("out.txt") == 7);

  /* The output file deleted: only the output node runs again, from the cached sum. */
  rm_out("out.txt");
  CHECK_OK(run(&t.g, false, &r, &sum, &err), &err);
  CHECKF(sum.executed == 1 && sum.cached == 1, "executed %d cached %d", sum.executed, sum.cached);
  CHECK(r.started == 1 && strcmp(r.started_ids[0], "save") == 0);
  CHECK(read_num("out.txt") == 7);

  /* No cache: everything runs, every time. */
  CHECK_OK(run(&t.g, true, &r, &sum, &err), &err);
  CHECK(sum.executed == 4 && sum.cached == 0);
  CHECK_OK(run(&t.g, true, &r, &sum, &err), &err);
  CHECK(sum.executed == 4 && sum.cached == 0);

  /* A corrupt entry for s (a blob that is not a value): recomputed, with a warning, not a crash. */
  struct fr_key sig, okey;
  CHECK(hex_key(r.key_of[2], &sig));
  fr_signature_output(&sig, 0, &okey);
  struct fr_cache *c = NULL;
  struct fr_cache_opts co = {0};
  CHECK_OK(fr_cache_open(cache_path, &co, &c, &err), &err);
  CHECK(c && fr_cache_has(c, &okey));
  CHECK_OK(fr_cache_put(c, &okey, "garbage", 7, &err), &err);
  fr_cache_close(c);
  rm_out("out.txt");
  CHECK_OK(run(&t.g, false, &r, &sum, &err), &err);
  CHECKF(sum.executed == 2 && r.warnings >= 1, "executed %d warnings %d", sum.executed, r.warnings);
  CHECK(r.started == 2 && strcmp(r.started_ids[0], "s") == 0);
  CHECK(read_num("out.txt") == 7);
  CHECK_OK(run(&t.g, false, &r, &sum, &err), &err);
  CHECK(sum.executed == 0);

  /* Every entry corrupt, output file present: each failed load forces one more node, and the re-plans
   * end with everything recomputed exactly once. */
  CHECK_OK(run(&t.g, true, &r, &sum, &err), &err); /* no cache: every node starts, every key is seen */
  CHECK_OK(fr_cache_open(cache_path, &co, &c, &err), &err);
  for (int n = 0; n < 4; n++) {
    CHECK(hex_key(r.key_of[n], &sig));
    fr_signature_output(&sig, 0, &okey);
    CHECKF(fr_cache_has(c, &okey), "node %d", n);
    CHECK_OK(fr_cache_put(c, &okey, "garbage", 7, &err), &err);
  }
  fr_cache_close(c);
  int runs0 = runs_num + runs_add + runs_save;
  CHECK_OK(run(&t.g, false, &r, &sum, &err), &err);
  CHECKF(sum.executed == 4 && runs_num + runs_add + runs_save == runs0 + 4 && r.warnings >= 4,
         "executed %d warnings %d", sum.executed, r.warnings);
  CHECK(read_num("out.txt") == 7);
  CHECK_OK(run(&t.g, false, &r, &sum, &err), &err);
  CHECK(sum.executed == 0);
  tg_free(&t);
}

/* m = Model; u = UseModel(m, a); save = Save(u, "m.txt"). The model is never cached. */
static void build_model(struct tg *t, int64_t av) {
  tg_init(t);
  int m = tg_node(t, "m", &model_spec);
  int a = tg_node(t, "a", &num_spec);
  tg_lit(t, a, "value", fr_value_int(av));
  int u = tg_node(t, "u", &use_spec);
  tg_link(t, u, "model", m, 0);
  tg_link(t, u, "x", a, 0);
  int v = tg_node(t, "save", &save_spec);
  tg_link(t, v, "x", u, 0);
  tg_lit(t, v, "name", fr_value_string("m.txt"));
}

static void test_objects(void) {
  struct tg t;
  struct rec r;
  struct fr_run_summary sum;
  struct fr_err err = {{0}};
  build_model(&t, 6);
  int m0 = runs_model;
  CHECK_OK(run(&t.g, false, &r, &sum, &err), &err);
  CHECK(sum.executed == 4 && runs_model == m0 + 1 && read_num("m.txt") == 60);
  CHECK(models_alive == 0); /* released when its last consumer ran */
  /* Fully cached: the model is not loaded at all. */
  CHECK_OK(run(&t.g, false, &r, &sum, &err), &err);
  CHECK(sum.executed == 0 && runs_model == m0 + 1);
  tg_free(&t);
  /* A consumer of the model must run: the model runs too (objects are never in the cache). */
  build_model(&t, 7);
  CHECK_OK(run(&t.g, false, &r, &sum, &err), &err);
  CHECKF(sum.executed == 4 && runs_model == m0 + 2, "executed %d", sum.executed);
  CHECK(read_num("m.txt") == 70 && models_alive == 0);
  tg_free(&t);
}

static void test_failures(void) {
  struct tg t;
  struct rec r;
  struct fr_run_summary sum;
  struct fr_err err = {{0}};

  /* A failing node: its message with its id and type; the error event names the node. */
  tg_init(&t);
  int a = tg_node(&t, "a", &num_spec);
  tg_lit(&t, a, "value", fr_value_int(11));
  int f = tg_node(&t, "broken", &fail_spec);
  tg_link(&t, f, "x", a, 0);
  int v = tg_node(&t, "save", &save_spec);
  tg_link(&t, v, "x", f, 0);
  enum fr_status rc = run(&t.g, false, &r, &sum, &err);
  CHECKF(rc == FR_E_INVALID, "rc %d", rc);
  CHECKF(strcmp(err.msg, "node broken (Fail): boom 42") == 0, "%s", err.msg);
  CHECK(r.errors == 1 && strcmp(r.error_node, "broken") == 0 && r.done_status == FR_E_INVALID);
  CHECK(sum.executed == 1);
  /* What ran before the failure is cached. */
  rc = run(&t.g, false, &r, &sum, &err);
  CHECK(rc == FR_E_INVALID && sum.executed == 0 && sum.cached == 1);
  tg_free(&t);

  /* A graph without an output node is an error, not a silent no-op. */
  tg_init(&t);
  tg_node(&t, "a", &num_spec);
  rc = run(&t.g, false, &r, &sum, &err);
  CHECKF(rc == FR_E_INVALID && strstr(err.msg, "no output node"), "%s", err.msg);
  tg_free(&t);

  /* Cancellation from a listener during a long node: FR_E_CANCELLED, then a normal re-run. */
  tg_init(&t);
  int s = tg_node(&t, "slow", &slow_spec);
  tg_lit(&t, s, "value", fr_value_int(5));
  v = tg_node(&t, "save", &save_spec);
  tg_link(&t, v, "x", s, 0);
  tg_lit(&t, v, "name", fr_value_string("slow.txt"));
  memset(&r, 0, sizeof r);
  r.g = &t.g;
  r.cancel_at_step = 2;
  struct fr_engine_opts o = {
      .registry = &reg, .cache_path = cache_path, .output_dir = tmp, .on_event = on_event, .user = &r};
  struct fr_engine *e = NULL;
  CHECK_OK(fr_engine_new(&o, &e, &err), &err);
  r.cancel_engine = e;
  rc = fr_engine_run(e, &t.g, &sum, &err);
  CHECKF(rc == FR_E_CANCELLED && r.progress == 2 && r.done_status == FR_E_CANCELLED, "rc %d progress %d", rc,
         r.progress);
  CHECK(read_num("slow.txt") == -1);
  r.cancel_engine = NULL;
  rc = fr_engine_run(e, &t.g, &sum, &err); /* the flag is reset for the next run */
  CHECK(rc == FR_OK && read_num("slow.txt") == 5);
  fr_engine_free(e);
  tg_free(&t);

  /* Non-deterministic nodes run every time. */
  tg_init(&t);
  int n = tg_node(&t, "noise", &noise_spec);
  v = tg_node(&t, "save", &save_spec);
  tg_link(&t, v, "x", n, 0);
  tg_lit(&t, v, "name", fr_value_string("noise.txt"));
  CHECK_OK(run(&t.g, false, &r, &sum, &err), &err);
  CHECK(sum.executed == 2);
  CHECK_OK(run(&t.g, false, &r, &sum, &err), &err);
  CHECK(sum.executed == 2);
  tg_free(&t);
}

/* Every allocation of a run fails in turn: the run ends with an error (never a crash or a leak, which
 * ASan checks), and the cache is intact afterwards: a clean run gives the right answer and gc finds
 * no bad entry. */
static void test_alloc_faults(void) {
  struct tg t;
  struct rec r;
  struct fr_run_summary sum;
  struct fr_err err = {{0}};
  build_model(&t, 9);
  int failures = 0, n;
  for (n = 1; n < 2000; n++) {
    snprintf(cache_path, sizeof cache_path, "%s/fault.sqlite", tmp);
    remove(cache_path);
    rm_out("m.txt");
    memset(&r, 0, sizeof r);
    r.g = &t.g;
    struct fr_engine_opts o = {
        .registry = &reg, .cache_path = cache_path, .output_dir = tmp, .on_event = on_event, .user = &r};
    struct fr_engine *e = NULL;
    fr_alloc_fail_at(n);
    enum fr_status rc = fr_engine_new(&o, &e, &err);
    if (rc == FR_OK)
      rc = fr_engine_run(e, &t.g, &sum, &err);
    fr_engine_free(e);
    fr_alloc_fail_at(0);
    if (rc == FR_OK)
      break;
    failures++;
    if (rc != FR_E_NOMEM)
      CHECKF(rc == FR_E_NOMEM, "allocation %d: status %d (%s)", n, rc, err.msg);
    CHECKF(models_alive == 0, "allocation %d: a model leaked", n);
    /* The cache is intact: a clean run computes the right file and gc drops nothing. */
    rc = run(&t.g, false, &r, &sum, &err);
    CHECKF(rc == FR_OK && read_num("m.txt") == 90, "allocation %d: clean re-run %d: %s", n, rc, err.msg);
    struct fr_cache *c = NULL;
    struct fr_cache_opts co = {0};
    int64_t dropped = -1;
    if (fr_cache_open(cache_path, &co, &c, &err) == FR_OK) {
      CHECK_OK(fr_cache_gc(c, &dropped, &err), &err);
      CHECKF(dropped == 0, "allocation %d: %lld bad entries", n, (long long)dropped);
      fr_cache_close(c);
    }
  }
  printf("allocation faults: %d injected, run succeeds from allocation %d on\n", failures, n);
  CHECK(failures > 10 && n < 2000);
  snprintf(cache_path, sizeof cache_path, "%s/cache.sqlite", tmp);
  tg_free(&t);
}

/* Runs g without a cache on (device, dtype) and returns the signature of node idx (hex) in out. */
static enum fr_status run_on(const struct fr_graph *g, const char *device, const char *dtype, int idx,
                             char *out, struct fr_err *err) {
  struct rec r;
  memset(&r, 0, sizeof r);
  r.g = g;
  struct fr_engine_opts o = {.registry = &reg,
                             .no_cache = true,
                             .output_dir = tmp,
                             .device = device,
                             .dtype = dtype,
                             .on_event = on_event,
                             .user = &r};
  struct fr_engine *e = NULL;
  struct fr_run_summary sum;
  enum fr_status rc = fr_engine_new(&o, &e, err);
  if (rc == FR_OK)
    rc = fr_engine_run(e, g, &sum, err);
  fr_engine_free(e);
  snprintf(out, 33, "%s", r.key_of[idx]);
  return rc;
}

/* The compute dtype is in every signature: the same graph on cpu f32 (default or explicit, the keys the
 * cpu always had), cuda f16 (its default), cuda bf16 and cuda f32 gives four different keys, and nodes
 * see the resolved dtype. None of these test nodes makes a compute context, so no GPU is needed. */
static void test_dtype_keys(void) {
  struct tg t;
  struct fr_err err = {{0}};
  build_sum(&t, 2);
  static const struct {
    const char *device, *dtype, *seen;
  } cases[] = {{"cpu", NULL, "f32"},   {"cpu", "f32", "f32"},    {"cuda", NULL, "f16"},
               {"cuda", "f16", "f16"}, {"cuda", "bf16", "bf16"}, {"cuda", "f32", "f32"}};
  char key[6][33];
  for (int i = 0; i < 6; i++) {
    seen_dtype[0] = 0;
    CHECK_OK(run_on(&t.g, cases[i].device, cases[i].dtype, 0, key[i], &err), &err);
    CHECKF(strcmp(seen_dtype, cases[i].seen) == 0, "%s %s: node saw dtype '%s', want %s", cases[i].device,
           cases[i].dtype ? cases[i].dtype : "(default)", seen_dtype, cases[i].seen);
    CHECKF(strlen(key[i]) == 32, "%s %s: no signature seen", cases[i].device, cases[i].seen);
  }
  CHECKF(strcmp(key[0], key[1]) == 0, "cpu default and cpu f32 must share keys");
  CHECKF(strcmp(key[2], key[3]) == 0, "cuda default and cuda f16 must share keys");
  CHECKF(strcmp(key[0], key[2]) && strcmp(key[2], key[4]) && strcmp(key[4], key[5]) && strcmp(key[0], key[5]),
         "(device, dtype) pairs must have different keys: %s %s %s %s", key[0], key[2], key[4], key[5]);
  /* a dtype name that does not exist: FR_E_INVALID naming it, no engine */
  struct fr_engine *e = NULL;
  struct fr_engine_opts o = {.registry = &reg, .no_cache = true, .dtype = "fp8"};
  enum fr_status rc = fr_engine_new(&o, &e, &err);
  CHECKF(rc == FR_E_INVALID && !e && strstr(err.msg, "dtype 'fp8'") && strstr(err.msg, "f32, f16 or bf16"),
         "bad dtype: status %d, message '%s'", rc, err.msg);
  fr_engine_free(e);
  tg_free(&t);
}

/* A cached value that decodes fine but is not of its output's declared type (an INT where the Add node
 * declares NUM: a key collision, a stale or tampered entry) is corrupt: dropped with a warning and
 * recomputed, never handed downstream (the save would write 1000 instead of 5). */
static void test_wrong_type(void) {
  struct tg t;
  struct rec r;
  struct fr_run_summary sum;
  struct fr_err err = {{0}};
  build_sum(&t, 2);
  CHECK_OK(run(&t.g, true, &r, &sum, &err), &err); /* every node starts: every key is seen */
  struct fr_key sig, okey;
  CHECK(hex_key(r.key_of[2], &sig));
  fr_signature_output(&sig, 0, &okey);
  CHECK_OK(run(&t.g, false, &r, &sum, &err), &err);
  struct fr_value *wrong = fr_value_int(1000); /* type INT, where s's output is NUM */
  struct fr_buf b = {0};
  CHECK_OK(fr_value_serialize(wrong, &b, &err), &err);
  fr_value_unref(wrong);
  struct fr_cache *c = NULL;
  struct fr_cache_opts co = {0};
  CHECK_OK(fr_cache_open(cache_path, &co, &c, &err), &err);
  CHECK(c && fr_cache_has(c, &okey));
  CHECK_OK(fr_cache_put(c, &okey, b.data, b.len, &err), &err);
  fr_buf_free(&b);
  fr_cache_close(c);
  rm_out("out.txt");
  int adds = runs_add;
  CHECK_OK(run(&t.g, false, &r, &sum, &err), &err);
  CHECKF(runs_add == adds + 1 && r.started == 2 && strcmp(r.started_ids[0], "s") == 0, "started %d",
         r.started);
  CHECKF(r.warnings == 1 && strstr(r.last_warning, "node s") && strstr(r.last_warning, "INT") &&
             strstr(r.last_warning, "NUM") && strstr(r.last_warning, "dropped"),
         "%d warnings: %s", r.warnings, r.last_warning);
  CHECKF(read_num("out.txt") == 5, "out.txt holds %lld", read_num("out.txt"));
  /* the recomputed value replaced the bad one */
  rm_out("out.txt");
  CHECK_OK(run(&t.g, false, &r, &sum, &err), &err);
  CHECK(sum.executed == 1 && r.warnings == 0 && read_num("out.txt") == 5);
  tg_free(&t);
}

int main(void) {
  tmp = fr_test_tmpdir("test_engine");
  snprintf(cache_path, sizeof cache_path, "%s/cache.sqlite", tmp);
  test_cache_reuse();
  test_objects();
  test_failures();
  test_alloc_faults();
  test_dtype_keys();
  test_wrong_type();
  return fr_test_done();
}
