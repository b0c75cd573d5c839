/* The fleet on PostgreSQL (core/pg/pg.h, docs/scale-out.md):
 *   flowrun worker --db URL [options]   takes runs from the queue one at a time and runs them here
 *   flowrun submit --db URL GRAPH.yaml|PICTURE.png [--set k=v]... [--wait] [--events jsonl] [--output DIR]
 *   flowrun runs --db URL [--json] [ID]  /  flowrun runs --db URL cancel ID
 * Exit status: worker 0 after SIGINT/SIGTERM (the run in hand may finish for --shutdown-timeout seconds,
 * then is cancelled and goes back to the queue; a second signal cancels at once), 1 when the database
 * cannot be reached, 2 bad usage; submit 0 (queued, or with --wait: done), 1 failed, 130 cancelled, 2 an
 * invalid graph; runs 0, 1 (database, unknown run, already ended), 2 usage. */
#ifdef FLOWRUN_HAVE_PG
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/bundle.h"
#include "core/cli/cli.h"
#include "core/events.h"
#include "core/file.h"
#include "core/flowrun.h"
#include "core/json.h"
#include "core/metrics.h"
#include "core/pg/pg.h"
#include "core/png.h"
#include "nodes/registry.h"
#ifdef FLOWRUN_HAVE_SERVE
#include "web/server/ops.h"
#endif

#define FR__MAX 256

/* ---- shared option parsing ---- */

static const char *fr__val(int argc, char **argv, int *i, const char *flag) {
  if (*i + 1 >= argc) {
    fprintf(stderr, "flowrun: %s needs a value\n", flag);
    return NULL;
  }
  return argv[++*i];
}

/* Params JSON {"name": "value", ...} of --set overrides (strings, parsed by each param's type where the
 * graph loads). */
static void fr__params_json(struct fr_buf *b, const struct fr_override *ov, int n) {
  fr_buf_putc(b, '{');
  for (int i = 0; i < n; i++) {
    if (i)
      fr_buf_putc(b, ',');
    fr_buf_json_str(b, ov[i].name);
    fr_buf_putc(b, ':');
    fr_buf_json_str(b, ov[i].value);
  }
  fr_buf_putc(b, '}');
}

/* Overrides from a params JSON object (numbers, bools, strings), strings in arena a. */
static enum fr_status fr__params_from_json(struct fr_arena *a, const char *json, struct fr_override **ov,
                                           int *n, struct fr_err *err) {
  struct fr_json *root = NULL;
  *ov = NULL;
  *n = 0;
  enum fr_status rc = fr_json_parse(a, json, strlen(json), 0, &root, err);
  if (rc)
    return rc;
  if (root->type != FR_JSON_OBJECT)
    return fr_errf(err, FR_E_FORMAT, "params: not a JSON object");
  *ov = fr_arena_alloc(a, sizeof **ov * (size_t)(root->n + 1));
  if (!*ov)
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  for (int i = 0; i < root->n; i++) {
    const struct fr_json *v = &root->items[i];
    const char *s = v->type == FR_JSON_STRING   ? v->str
                    : v->type == FR_JSON_BOOL   ? (v->b ? "true" : "false")
                    : v->type == FR_JSON_NUMBER ? (v->is_int ? fr_arena_printf(a, "%lld", (long long)v->i)
                                                             : fr_arena_printf(a, "%.17g", v->num))
                                                : NULL;
    if (!s)
      return fr_errf(err, FR_E_FORMAT, "params: %s is not a string, number or bool", root->keys[i]);
    (*ov)[(*n)++] = (struct fr_override){root->keys[i], s};
  }
  return FR_OK;
}

/* ---- worker ---- */

struct fr__worker {
  struct fr_pg *pg, *lease_pg;
  struct fr_engine *e;
  const char *name;
  double lease_s;
  bool quiet;
  struct fr_pg_claim claim;
  bool have_claim;
  /* outputs of the run: the files output events named */
  char *files[FR__MAX];
  int n_files;
  char *done_json;
  /* the lease thread */
  pthread_t th;
  int wake[2];
  atomic_bool stop_lease, lost, cancel;
  /* operations: metrics (served by --http) and the drain's deadline */
  struct fr_metrics *metrics;
  struct fr_metrics_listener ml;
#ifdef FLOWRUN_HAVE_SERVE
  struct fr_ops_seen seen; /* the engine's figures already counted in the metrics */
#endif
  double shutdown_timeout;
  atomic_bool *draining;      /* set when the first signal comes (/readyz then says so); may be NULL */
  struct fr_ops_ready *ready; /* --http's readiness (NULL without libwebsockets) */
  const char *device;
};

static atomic_int fr__stop; /* SIGINT/SIGTERM: how many came (a second one cancels at once) */
static struct fr_engine *_Atomic fr__running;

static void fr__on_signal(int sig) {
  (void)sig;
  int n = atomic_load(&fr__stop);
  atomic_store(&fr__stop, n < 2 ? n + 1 : 2);
  struct fr_engine *e = atomic_load(&fr__running);
  if (n >= 1 && e)
    fr_engine_cancel(e);
}

/* The drain: after the first signal the run in hand may go on for shutdown_timeout seconds, then it is
 * cancelled (and goes back to the queue). Polls ten times a second until told to stop. */
static atomic_bool fr__watch_stop;
static void *fr__watchdog(void *arg) {
  struct fr__worker *w = arg;
  double deadline = -1;
  while (!atomic_load(&fr__watch_stop)) {
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    if (!atomic_load(&fr__stop))
      continue;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double t = (double)now.tv_sec + (double)now.tv_nsec / 1e9;
    if (deadline < 0) {
      deadline = t + w->shutdown_timeout;
      if (w->draining)
        atomic_store(w->draining, true);
    }
    struct fr_engine *e = atomic_load(&fr__running);
    if (e && t >= deadline)
      fr_engine_cancel(e);
  }
  return NULL;
}

static void fr__worker_event(void *user, const struct fr_event *ev) {
  struct fr__worker *w = user;
  if (!w->have_claim)
    return;
  fr_metrics_event(&w->ml, ev);
  struct fr_buf b = {0};
  fr_event_json(&b, ev);
  if (b.oom) {
    fr_buf_free(&b);
    return;
  }
  if (ev->kind == FR_EV_RUN_DONE) { /* written with the final state, in one statement */
    fr_free(w->done_json);
    w->done_json = fr_buf_take(&b, NULL);
    return;
  }
  if (ev->kind == FR_EV_OUTPUT && ev->path && w->n_files < FR__MAX)
    w->files[w->n_files++] = fr_strdup(ev->path);
  struct fr_err err;
  if (fr_pg_event(w->pg, &w->claim, b.data, &err) != FR_OK && !w->quiet)
    fprintf(stderr, "flowrun worker %s: run %lld: event not stored: %s\n", w->name, (long long)w->claim.id,
            err.msg);
  if (!w->quiet && (ev->kind == FR_EV_ERROR || ev->kind == FR_EV_WARNING))
    fprintf(stderr, "flowrun worker %s: run %lld: %s\n", w->name, (long long)w->claim.id, ev->message);
  fr_buf_free(&b);
}

/* Renews the lease every third of its length and listens for cancels: a cancel of this run, or a lost
 * lease, cancels the engine (between nodes or sampler steps). */
static void *fr__lease_thread(void *arg) {
  struct fr__worker *w = arg;
  double every = w->lease_s / 3;
  while (!atomic_load(&w->stop_lease)) {
    bool lost = false, cancel = false;
    struct fr_err err;
    if (fr_pg_renew(w->lease_pg, &w->claim, w->lease_s, &lost, &cancel, &err) == FR_OK) {
      if (lost || cancel) {
        atomic_store(lost ? &w->lost : &w->cancel, true);
        fr_engine_cancel(w->e);
        if (lost)
          break;
      }
    }
    char payload[32];
    if (fr_pg_wait(w->lease_pg, every, w->wake[0], payload, sizeof payload) &&
        strtoll(payload, NULL, 10) != w->claim.id)
      continue; /* another run's cancel: renew on schedule */
  }
  return NULL;
}

static void fr__worker_usage(FILE *f) {
  fprintf(f, "usage: flowrun worker --db URL [--models DIR]... [--device cpu|cuda] [--dtype f32|f16|bf16]\n"
             "                      [--cache PATH] [--threads N] [--name NAME] [--lease SECONDS]\n"
             "                      [--shared-cache-size SIZE] [--max-runs N] [--quiet]\n"
             "                      [--http ADDR:PORT] [--shutdown-timeout SECONDS]\n"
             "  takes runs from the database's queue one at a time and runs them here: local cache first,\n"
             "  then the shared one in the database; --lease: how long a run stays ours without a renewal\n"
             "  (default 30; renewed every third); --max-runs: stop after N runs (default: never)\n"
             "  --http: answer GET /healthz, /readyz and /metrics there (docs/operations.md)\n"
             "  --shutdown-timeout: after SIGTERM/SIGINT the run in hand may finish for this long (default\n"
             "  30), then it is cancelled and goes back to the queue\n");
}

static enum fr_status fr__store_outputs(struct fr__worker *w, struct fr_err *err) {
  for (int i = 0; i < w->n_files; i++) {
    char *data = NULL;
    size_t len = 0;
    enum fr_status rc = fr_read_file(w->files[i], (size_t)1 << 30, &data, &len, err);
    if (rc)
      return fr_err_prefix(err, rc, "output %s: ", w->files[i]);
    const char *base = strrchr(w->files[i], '/') ? strrchr(w->files[i], '/') + 1 : w->files[i];
    rc = fr_pg_output(w->pg, &w->claim, base, data, len, err);
    fr_free(data);
    if (rc)
      return rc;
  }
  return FR_OK;
}

/* The run's output folder holds only what this worker wrote there: emptied before each run. */
static void fr__clear_dir(const char *dir) {
  struct fr_err err;
  if (fr_remove_tree(dir, true, &err) != FR_OK)
    fprintf(stderr, "flowrun worker: %s\n", err.msg);
}

static void fr__worker_run(struct fr__worker *w, const char *outdir) {
  struct fr_pg_claim *c = &w->claim;
  struct fr_err err = {{0}};
  fr__clear_dir(outdir);
  for (int i = 0; i < w->n_files; i++)
    fr_free(w->files[i]);
  w->n_files = 0;
  fr_free(w->done_json);
  w->done_json = NULL;
  atomic_store(&w->stop_lease, false);
  atomic_store(&w->lost, false);
  atomic_store(&w->cancel, false);
  if (!w->quiet)
    fprintf(stderr, "flowrun worker %s: run %lld (attempt %d): %s\n", w->name, (long long)c->id, c->attempt,
            c->name);
  bool thread = pthread_create(&w->th, NULL, fr__lease_thread, w) == 0;
  fr_metrics_run_started(w->metrics);
  struct fr_arena *a = fr_arena_new(0);
  struct fr_override *ov = NULL;
  int n_ov = 0;
  struct fr_graph *g = NULL;
  struct fr_run_summary sum = {0};
  enum fr_status rc = a ? fr__params_from_json(a, c->params_json, &ov, &n_ov, &err)
                        : fr_errf(&err, FR_E_NOMEM, "out of memory");
  struct stat st;
  const char *dir = c->dir[0] && stat(c->dir, &st) == 0 && S_ISDIR(st.st_mode) ? c->dir : ".";
  if (!rc)
    rc = fr_engine_load_string(w->e, c->yaml, strlen(c->yaml), c->name, dir, ov, n_ov, &g, &err);
  if (rc) { /* the graph does not load here: the run fails with the loader's message */
    struct fr_event ev = {.kind = FR_EV_ERROR, .message = err.msg, .status = rc};
    fr__worker_event(w, &ev);
  } else {
    atomic_store(&fr__running, w->e);
    if (atomic_load(&fr__stop) > 1)
      fr_engine_cancel(w->e);
    rc = fr_engine_run(w->e, g, &sum, &err);
    atomic_store(&fr__running, NULL);
  }
  atomic_store(&w->stop_lease, true);
  if (thread) {
    if (write(w->wake[1], "x", 1) < 0) {
    }
    pthread_join(w->th, NULL);
    char drain[16];
    while (read(w->wake[0], drain, sizeof drain) > 0) {
    }
  }
  fr_graph_free(g);
  fr_arena_free(a);
  fr_metrics_run_finished(w->metrics,
                          rc == FR_OK            ? "done"
                          : rc == FR_E_CANCELLED ? "cancelled"
                                                 : "error",
                          sum.ms / 1000.0);
#ifdef FLOWRUN_HAVE_SERVE
  fr_ops_engine_update(w->metrics, w->ready, w->e, &w->seen); /* cache, models, device memory */
  fr_ops_device_check(w->ready, w->device, rc);
#endif
  bool lost = atomic_load(&w->lost);
  if (lost) {
    if (!w->quiet)
      fprintf(stderr,
              "flowrun worker %s: run %lld: the lease was lost (another worker has it): result dropped\n",
              w->name, (long long)c->id);
    return;
  }
  if (rc == FR_E_CANCELLED && atomic_load(&fr__stop) && !atomic_load(&w->cancel)) {
    struct fr_err rerr;
    fr_pg_release(w->pg, c, &rerr);
    if (!w->quiet)
      fprintf(stderr, "flowrun worker %s: stopping: run %lld goes back to the queue\n", w->name,
              (long long)c->id);
    return;
  }
  const char *state = rc == FR_OK ? "done" : rc == FR_E_CANCELLED ? "cancelled" : "failed";
  if (rc == FR_OK) {
    struct fr_err oerr;
    if (fr__store_outputs(w, &oerr) != FR_OK) {
      state = "failed";
      snprintf(err.msg, sizeof err.msg, "storing the outputs: %.900s", oerr.msg);
      rc = FR_E_IO;
    }
  }
  char fallback[160];
  if (!w->done_json) {
    snprintf(fallback, sizeof fallback,
             "{\"event\":\"run_done\",\"executed\":%d,\"cached\":%d,\"ms\":%.3f,\"status\":\"%s\"}",
             sum.executed, sum.cached, sum.ms, fr_status_str(rc));
  }
  bool lost_at_end = false;
  struct fr_err ferr;
  if (fr_pg_finish(w->pg, c, state, rc == FR_OK ? NULL : err.msg, &sum,
                   w->done_json ? w->done_json : fallback, &lost_at_end, &ferr) != FR_OK)
    fprintf(stderr, "flowrun worker %s: run %lld: %s\n", w->name, (long long)c->id, ferr.msg);
  else if (!w->quiet)
    fprintf(stderr, "flowrun worker %s: run %lld %s%s (%d ran, %d cached, %.0f ms)\n", w->name,
            (long long)c->id, lost_at_end ? "lost its lease: result dropped, not " : "", state, sum.executed,
            sum.cached, sum.ms);
}

int fr_cmd_worker(int argc, char **argv) {
  const char *db = NULL, *device = NULL, *dtype = NULL, *cache = NULL, *name = NULL, *http = NULL;
  double shutdown_timeout = 30;
  const char *models[FR__MAX];
  int n_models = 0, threads = 0;
  long max_runs = -1;
  double lease_s = 30;
  int64_t shared_size = 0;
  bool quiet = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = NULL;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fr__worker_usage(stdout);
      return 0;
    } else if (!strcmp(a, "--quiet")) {
      quiet = true;
      continue;
    }
    if (!(v = fr__val(argc, argv, &i, a)))
      return 2;
    if (!strcmp(a, "--db"))
      db = v;
    else if (!strcmp(a, "--models") && n_models < FR__MAX)
      models[n_models++] = v;
    else if (!strcmp(a, "--device"))
      device = v;
    else if (!strcmp(a, "--dtype"))
      dtype = v;
    else if (!strcmp(a, "--cache"))
      cache = v;
    else if (!strcmp(a, "--name"))
      name = v;
    else if (!strcmp(a, "--threads"))
      threads = atoi(v);
    else if (!strcmp(a, "--max-runs"))
      max_runs = atol(v);
    else if (!strcmp(a, "--http"))
      http = v;
    else if (!strcmp(a, "--shutdown-timeout")) {
      char *end;
      shutdown_timeout = strtod(v, &end);
      if (end == v || *end || !(shutdown_timeout >= 0 && shutdown_timeout <= 86400)) {
        fprintf(stderr, "flowrun worker: --shutdown-timeout %s: expected seconds from 0 to 86400\n", v);
        return 2;
      }
    } else if (!strcmp(a, "--lease")) {
      lease_s = atof(v);
      if (!(lease_s >= 1 && lease_s <= 3600)) {
        fprintf(stderr, "flowrun worker: --lease %s: expected seconds from 1 to 3600\n", v);
        return 2;
      }
    } else if (!strcmp(a, "--shared-cache-size")) {
      if (!fr_cli_parse_size(v, &shared_size)) {
        fprintf(stderr, "flowrun worker: --shared-cache-size %s: expected a size such as 10G\n", v);
        return 2;
      }
    } else {
      fprintf(stderr, "flowrun worker: unknown option %s\n", a);
      fr__worker_usage(stderr);
      return 2;
    }
  }
  if (!db) {
    fprintf(stderr, "flowrun worker: --db URL is required\n");
    fr__worker_usage(stderr);
    return 2;
  }
  int st = fr_cli_check_compute("worker: ", device, dtype, threads);
  if (st)
    return st;
  char *env = fr_cli_env_model_dirs(models, &n_models, FR__MAX);
  char host[128] = "worker", defname[200];
  gethostname(host, sizeof host - 1);
  snprintf(defname, sizeof defname, "%s-%ld", host, (long)getpid());
#ifndef FLOWRUN_HAVE_SERVE
  if (http) {
    fprintf(stderr, "flowrun worker: --http: this flowrun was built without libwebsockets\n");
    fr_free(env);
    return 2;
  }
#endif
  struct fr__worker w = {.name = name ? name : defname,
                         .lease_s = lease_s,
                         .quiet = quiet,
                         .wake = {-1, -1},
                         .shutdown_timeout = shutdown_timeout,
                         .device = device};
  w.metrics = fr_metrics_new();
  w.ml.m = w.metrics;
#ifdef FLOWRUN_HAVE_SERVE
  struct fr_ops_ready ready;
  fr_ops_ready_init(&ready, true, true);
  w.draining = &ready.draining;
  w.ready = &ready;
  struct fr_ops_http *hs = NULL;
#endif
  pthread_t watchdog;
  bool have_watchdog = false;
  struct fr_err err = {{0}};
  char outdir[PATH_MAX]; /* the runs' output folder, emptied before each run */
  const char *tmpdir = getenv("TMPDIR");
  snprintf(outdir, sizeof outdir, "%s/flowrun-worker-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
  int code = 0;
  struct fr_cache_tier tier;
  if (!w.metrics) {
    fprintf(stderr, "flowrun worker: out of memory\n");
    code = 1;
    goto out;
  }
#ifdef FLOWRUN_HAVE_SERVE
  if (http) {
    int port = 0;
    if (fr_ops_metrics_init(w.metrics, &err) ||
        fr_ops_http_start(http, w.metrics, &ready, &hs, &port, &err)) {
      fprintf(stderr, "flowrun worker: %s\n", err.msg);
      code = 2;
      goto out;
    }
    /* the port actually bound (port 0: any free one), for scripts and tests */
    fprintf(stderr, "flowrun worker: http on port %d\n", port);
  }
#endif
  if (fr_pg_open(db, 0, &w.pg, &err) || fr_pg_open(db, 0, &w.lease_pg, &err)) {
    fprintf(stderr, "flowrun worker: %s\n", err.msg);
    code = 1;
    goto out;
  }
#ifdef FLOWRUN_HAVE_SERVE
  fr_pg_watch(w.pg, &ready.db_ok);
#endif
  if (pipe(w.wake) != 0 || !mkdtemp(outdir)) {
    fprintf(stderr, "flowrun worker: %s\n", strerror(errno));
    code = 1;
    goto out;
  }
  fcntl(w.wake[0], F_SETFL, O_NONBLOCK);
  fr_pg_tier(w.pg, shared_size, &tier);
  struct fr_engine_opts eo = {.registry = fr_builtin_registry(),
                              .cache_path = cache,
                              .model_dirs = models,
                              .n_model_dirs = n_models,
                              .output_dir = outdir,
                              .device = device,
                              .dtype = dtype,
                              .threads = threads,
                              .on_event = fr__worker_event,
                              .user = &w,
                              .tier = &tier};
  if (fr_engine_new(&eo, &w.e, &err) || fr_pg_listen(w.pg, "flowrun_queue", &err) ||
      fr_pg_listen(w.lease_pg, "flowrun_cancel", &err)) {
    fprintf(stderr, "flowrun worker: %s\n", err.msg);
    code = 1;
    goto out;
  }
#ifdef FLOWRUN_HAVE_SERVE
  fr_ops_engine_update(w.metrics, &ready, w.e, &w.seen);
#endif
  struct sigaction sa = {0};
  sa.sa_handler = fr__on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  atomic_store(&fr__watch_stop, false);
  have_watchdog = pthread_create(&watchdog, NULL, fr__watchdog, &w) == 0;
  if (!quiet)
    fprintf(stderr, "flowrun worker %s: waiting for runs\n", w.name);
  /* the models of the latest runs: runs that use them are taken first */
  char *held[32] = {0};
  int n_held = 0;
  for (long runs = 0; !atomic_load(&fr__stop) && (max_runs < 0 || runs < max_runs);) {
    enum fr_status rc = fr_pg_take(w.pg, w.name, (const char *const *)held, n_held, lease_s, &w.claim, &err);
    if (rc == FR_E_NOTFOUND) {
      fr_pg_wait(w.pg, 1.0, -1, NULL, 0);
      continue;
    }
    if (rc) {
      fprintf(stderr, "flowrun worker %s: %s\n", w.name, err.msg);
      sleep(1);
      continue;
    }
    w.have_claim = true;
    fr__worker_run(&w, outdir);
    w.have_claim = false;
    for (int i = 0; i < w.claim.n_models; i++) {
      bool dup = false;
      for (int k = 0; k < n_held && !dup; k++)
        dup = !strcmp(held[k], w.claim.models[i]);
      if (!dup) {
        fr_free(held[n_held == 32 ? 31 : n_held]);
        memmove(held + 1, held, sizeof *held * (size_t)(n_held == 32 ? 31 : n_held));
        held[0] = fr_strdup(w.claim.models[i]);
        n_held += n_held < 32 && held[0];
      }
    }
    fr_pg_claim_free(&w.claim);
    runs++;
  }
  for (int i = 0; i < n_held; i++)
    fr_free(held[i]);
  if (!quiet)
    fprintf(stderr, "flowrun worker %s: stopped\n", w.name);
out:
  if (have_watchdog) {
    atomic_store(&fr__watch_stop, true);
    pthread_join(watchdog, NULL);
  }
#ifdef FLOWRUN_HAVE_SERVE
  fr_ops_http_stop(hs);
#endif
  for (int i = 0; i < w.n_files; i++)
    fr_free(w.files[i]);
  fr_free(w.done_json);
  fr_engine_free(w.e);
  fr_pg_close(w.pg);
  fr_pg_close(w.lease_pg);
  if (w.wake[0] >= 0) {
    close(w.wake[0]);
    close(w.wake[1]);
  }
  struct fr_err rerr;
  fr_remove_tree(outdir, false, &rerr);
  fr_metrics_free(w.metrics);
  fr_free(env);
  return code;
}

/* ---- submit ---- */

static void fr__submit_usage(FILE *f) {
  fprintf(f, "usage: flowrun submit --db URL GRAPH.yaml|PICTURE.png [--set NAME=VALUE]... [--wait]\n"
             "                      [--events jsonl] [--output DIR] [--max-attempts N]\n"
             "  queues a run and prints its id; --wait follows its events (as a local run's; --events jsonl\n"
             "  prints them as JSON lines), writes its output files under --output (default .) and exits\n"
             "  with the run's status: 0 done, 1 failed, 130 cancelled\n");
}

struct fr__follow {
  bool jsonl;
  struct fr_display disp;
  char status[32];
  bool done;
  struct fr_arena *a;
  char *held_done; /* the run_done line, printed after the local output files */
};

static void fr__follow_event(void *u, const char *json) {
  struct fr__follow *f = u;
  struct fr_json *j = NULL;
  struct fr_err err;
  if (fr_json_parse(f->a, json, strlen(json), 0, &j, &err) || j->type != FR_JSON_OBJECT)
    return;
  const char *kind = fr_json_str(j, "event", "");
  if (!strcmp(kind, "run_done")) {
    snprintf(f->status, sizeof f->status, "%s", fr_json_str(j, "status", "?"));
    f->done = true;
    fr_free(f->held_done);
    f->held_done = fr_strdup(json);
    return;
  }
  if (!strcmp(kind, "output")) /* the worker's path: the local copies are said at the end */
    return;
  if (f->jsonl) {
    printf("%s\n", json);
    fflush(stdout);
    return;
  }
  struct fr_event ev = {.node = fr_json_str(j, "node", NULL),
                        .node_type = fr_json_str(j, "type", NULL),
                        .message = fr_json_str(j, "message", NULL),
                        .key = fr_json_str(j, "key", NULL),
                        .from = fr_json_str(j, "from", NULL),
                        .step = (int)fr_json_num(j, "step", 0),
                        .steps = (int)fr_json_num(j, "steps", 0),
                        .ms = fr_json_num(j, "ms", 0),
                        .planned = (int)fr_json_num(j, "nodes", 0),
                        .path = fr_json_str(j, "path", NULL),
                        .bytes = (uint64_t)fr_json_num(j, "bytes", 0),
                        .bytes_total = (uint64_t)fr_json_num(j, "total", 0),
                        .bytes_per_s = fr_json_num(j, "bytes_per_s", 0)};
  if (!strcmp(kind, "run_start"))
    ev.kind = FR_EV_RUN_START;
  else if (!strcmp(kind, "node_cached"))
    ev.kind = FR_EV_NODE_CACHED;
  else if (!strcmp(kind, "node_start"))
    ev.kind = FR_EV_NODE_START;
  else if (!strcmp(kind, "progress"))
    ev.kind = FR_EV_PROGRESS;
  else if (!strcmp(kind, "node_done"))
    ev.kind = FR_EV_NODE_DONE;
  else if (!strcmp(kind, "warning"))
    ev.kind = FR_EV_WARNING;
  else if (!strcmp(kind, "info"))
    ev.kind = FR_EV_INFO;
  else if (!strcmp(kind, "load_progress"))
    ev.kind = FR_EV_LOAD_PROGRESS;
  else if (!strcmp(kind, "error"))
    ev.kind = FR_EV_ERROR;
  else
    return;
  if (ev.node_type == NULL)
    ev.node_type = "";
  fr_events_display(&f->disp, &ev);
}

struct fr__save {
  const char *dir;
  bool jsonl, quiet;
};

/* Writes an output file under the --output folder, never over an existing file (a free "-N" name). */
static enum fr_status fr__save_output(void *u, const char *name, const void *data, size_t len,
                                      struct fr_err *err) {
  struct fr__save *s = u;
  if (strchr(name, '/') || !strcmp(name, "..") || !strcmp(name, ".") || !*name)
    return fr_errf(err, FR_E_INVALID, "output file name '%s' is not a plain name", name);
  char path[PATH_MAX], *tmp = NULL;
  snprintf(path, sizeof path, "%s/%s", s->dir, name);
  enum fr_status rc = fr_write_temp(path, data, len, &tmp, err);
  if (rc)
    return rc;
  bool taken = true;
  const char *dot = strrchr(name, '.');
  int stem = dot ? (int)(dot - name) : (int)strlen(name);
  for (int k = 1; taken && k < 10000; k++) {
    rc = fr_publish_temp(tmp, path, false, &taken, err);
    if (rc)
      break;
    if (taken)
      snprintf(path, sizeof path, "%s/%.*s-%d%s", s->dir, stem, name, k, dot ? dot : "");
  }
  if (rc || taken)
    remove(tmp);
  fr_free(tmp);
  if (rc)
    return rc;
  if (taken)
    return fr_errf(err, FR_E_IO, "%s: no free name for %s", s->dir, name);
  char abs[PATH_MAX];
  const char *shown = realpath(path, abs) ? abs : path;
  if (s->jsonl) {
    struct fr_buf b = {0};
    fr_buf_puts(&b, "{\"event\":\"output\",\"path\":");
    fr_buf_json_str(&b, shown);
    fr_buf_puts(&b, ",\"written\":true}");
    if (!b.oom)
      printf("%s\n", b.data);
    fr_buf_free(&b);
  } else if (!s->quiet) {
    fprintf(stderr, "  wrote   %s\n", shown);
  }
  return FR_OK;
}

/* The model file names a graph uses (its FR_IN_MODEL_FILE literals), for the workers' preference. */
static int fr__graph_models(const struct fr_graph *g, const char **out, int max) {
  int n = 0;
  for (int i = 0; i < g->n_nodes; i++)
    for (int k = 0; k < g->nodes[i].spec->n_inputs; k++) {
      const struct fr_binding *b = &g->nodes[i].inputs[k];
      if ((g->nodes[i].spec->inputs[k].flags & FR_IN_MODEL_FILE) && b->kind == FR_BIND_LITERAL &&
          b->literal->kind == FR_V_STRING && n < max) {
        bool dup = false;
        for (int j = 0; j < n && !dup; j++)
          dup = !strcmp(out[j], b->literal->s);
        if (!dup)
          out[n++] = b->literal->s;
      }
    }
  return n;
}

int fr_cmd_submit(int argc, char **argv) {
  const char *db = NULL, *path = NULL, *events = NULL, *outdir = ".";
  struct fr_override sets[FR__MAX];
  int n_sets = 0, max_attempts = 0;
  bool wait = false, quiet = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = NULL;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fr__submit_usage(stdout);
      return 0;
    } else if (!strcmp(a, "--wait")) {
      wait = true;
    } else if (!strcmp(a, "--quiet")) {
      quiet = true;
    } else if (a[0] == '-' && a[1]) {
      if (!(v = fr__val(argc, argv, &i, a)))
        return 2;
      if (!strcmp(a, "--db"))
        db = v;
      else if (!strcmp(a, "--events") && !strcmp(v, "jsonl"))
        events = v;
      else if (!strcmp(a, "--output"))
        outdir = v;
      else if (!strcmp(a, "--max-attempts") && atoi(v) >= 1 && atoi(v) <= 100)
        max_attempts = atoi(v);
      else if (!strcmp(a, "--set") && strchr(v, '=') && v[0] != '=' && n_sets < FR__MAX) {
        argv[i][strchr(v, '=') - v] = 0;
        sets[n_sets++] = (struct fr_override){argv[i], argv[i] + strlen(argv[i]) + 1};
      } else {
        fprintf(stderr, "flowrun submit: bad option %s %s\n", a, v);
        fr__submit_usage(stderr);
        return 2;
      }
    } else if (!path) {
      path = a;
    } else {
      fprintf(stderr, "flowrun submit: one graph at a time\n");
      return 2;
    }
  }
  if (!db || !path) {
    fr__submit_usage(stderr);
    return 2;
  }
  struct fr_err err = {{0}};
  char *text = NULL, *ptext = NULL;
  size_t len = 0;
  int code = 0;
  struct fr_arena *a = fr_arena_new(0);
  struct fr_override *ov = sets;
  int n_ov = n_sets;
  /* the graph: a YAML file, or the workflow and params a picture carries (--set wins) */
  FILE *pf = fopen(path, "rb");
  unsigned char sig[8] = {0};
  bool png = pf && fread(sig, 1, 8, pf) == 8 && !memcmp(sig, "\x89PNG\r\n\x1a\n", 8);
  if (pf)
    fclose(pf);
  enum fr_status rc;
  if (png) {
    rc = fr_png_read_text(path, FR_PNG_KEY_WORKFLOW, &text, &err);
    if (rc == FR_E_NOTFOUND)
      fr_errf(&err, rc, "%s: this picture holds no flowrun workflow", path);
    if (!rc && fr_png_read_text(path, FR_PNG_KEY_PARAMS, &ptext, NULL) == FR_OK) {
      struct fr_override *pov = NULL;
      int n_pov = 0;
      rc = fr__params_from_json(a, ptext, &pov, &n_pov, &err);
      if (!rc) {
        ov = fr_arena_alloc(a, sizeof *ov * (size_t)(n_pov + n_sets + 1));
        n_ov = 0;
        for (int i = 0; ov && i < n_pov; i++) {
          bool over = false;
          for (int k = 0; k < n_sets && !over; k++)
            over = !strcmp(sets[k].name, pov[i].name);
          if (!over)
            ov[n_ov++] = pov[i];
        }
        for (int k = 0; ov && k < n_sets; k++)
          ov[n_ov++] = sets[k];
      }
    }
    if (text)
      len = strlen(text);
  } else {
    rc = fr_read_file(path, 4u << 20, &text, &len, &err);
    if (rc)
      fr_err_prefix(&err, rc, "%s: ", path);
  }
  if (rc || !a || !ov) {
    fprintf(stderr, "flowrun submit: %s\n", rc ? err.msg : "out of memory");
    code = 2;
    goto out;
  }
  /* checked here first: an invalid graph is refused before it is queued */
  char dir[PATH_MAX] = ".", *slash;
  char *abs = realpath(path, NULL);
  if (abs) {
    snprintf(dir, sizeof dir, "%s", abs);
    free(abs);
    if ((slash = strrchr(dir, '/')))
      *slash = slash == dir ? (slash[1] = 0, '/') : 0;
  }
  struct fr_load_opts lo = {
      .registry = fr_builtin_registry(), .overrides = ov, .n_overrides = n_ov, .require_files = false};
  struct fr_graph *g = NULL;
  rc = fr_graph_load_string(text, len, path, dir, &lo, &g, &err);
  if (rc) {
    fprintf(stderr, "flowrun submit: %s\n", err.msg);
    code = rc == FR_E_NOMEM ? 1 : 2;
    goto out;
  }
  const char *models[64];
  int n_models = fr__graph_models(g, models, 64);
  /* the bundled form: subgraph files travel inside the text, so workers need none of them */
  char *bundled = NULL;
  size_t bundled_len = 0;
  if ((rc = fr_bundle(text, len, path, dir, &bundled, &bundled_len, &err)) != FR_OK) {
    fprintf(stderr, "flowrun submit: %s\n", err.msg);
    fr_graph_free(g);
    code = rc == FR_E_NOMEM || rc == FR_E_IO ? 1 : 2;
    goto out;
  }
  fr_free(text);
  text = bundled;
  struct fr_buf params = {0};
  fr__params_json(&params, ov, n_ov);
  struct fr_pg *pg = NULL;
  int64_t id = 0;
  const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
  struct fr_pg_submit sub = {.yaml = text,
                             .name = base,
                             .dir = dir,
                             .params_json = params.data ? params.data : "{}",
                             .models = models,
                             .n_models = n_models,
                             .max_attempts = max_attempts};
  if ((rc = fr_pg_open(db, 0, &pg, &err)) || (wait && (rc = fr_pg_listen(pg, "flowrun_events", &err))) ||
      (rc = fr_pg_submit(pg, &sub, &id, &err))) {
    fprintf(stderr, "flowrun submit: %s\n", err.msg);
    code = 1;
  }
  fr_graph_free(g);
  fr_buf_free(&params);
  if (!code && !wait)
    printf("%lld\n", (long long)id);
  if (!code && wait) {
    if (!quiet && !events)
      fprintf(stderr, "flowrun submit: queued run %lld\n", (long long)id);
    struct fr__follow f = {.jsonl = events != NULL, .a = fr_arena_new(0)};
    fr_display_init(&f.disp, stderr, false, quiet);
    int64_t after = 0;
    char state[32] = "";
    while (f.a) {
      if ((rc = fr_pg_events(pg, id, &after, fr__follow_event, &f, &err)) ||
          (rc = fr_pg_state(pg, id, state, sizeof state, &err))) {
        fprintf(stderr, "flowrun submit: run %lld: %s\n", (long long)id, err.msg);
        code = 1;
        break;
      }
      bool ended = !strcmp(state, "done") || !strcmp(state, "failed") || !strcmp(state, "cancelled");
      if (ended && f.done) {
        rc = fr_pg_events(pg, id, &after, fr__follow_event, &f, &err); /* anything written with the end */
        break;
      }
      fr_pg_wait(pg, 1.0, -1, NULL, 0);
    }
    if (!code) {
      if (!strcmp(state, "done")) {
        struct fr__save s = {.dir = outdir, .jsonl = f.jsonl, .quiet = quiet};
        if ((rc = fr_mkdirs(outdir, &err)) || (rc = fr_pg_outputs(pg, id, fr__save_output, &s, &err))) {
          fprintf(stderr, "flowrun submit: run %lld: %s\n", (long long)id, err.msg);
          code = 1;
        }
      }
      if (f.jsonl && f.held_done)
        printf("%s\n", f.held_done);
      else if (!quiet && !f.jsonl)
        fprintf(stderr, "flowrun submit: run %lld %s\n", (long long)id, state);
      if (!code)
        code = !strcmp(state, "done") ? 0 : !strcmp(state, "cancelled") ? 130 : 1;
    }
    fflush(stdout);
    fr_free(f.held_done);
    fr_arena_free(f.a);
  }
  fr_pg_close(pg);
out:
  fr_free(text);
  fr_free(ptext);
  fr_arena_free(a);
  return code;
}

/* ---- runs ---- */

static void fr__runs_usage(FILE *f) {
  fprintf(f, "usage: flowrun runs --db URL [--json] [ID]     the newest runs, or one\n"
             "       flowrun runs --db URL cancel ID          cancel a queued or running run\n");
}

static const char *fr__s(const struct fr_json *o, const char *k) {
  const char *s = fr_json_str(o, k, NULL);
  return s ? s : "-";
}

int fr_cmd_runs(int argc, char **argv) {
  const char *db = NULL;
  bool json = false, cancel = false;
  int64_t id = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fr__runs_usage(stdout);
      return 0;
    } else if (!strcmp(a, "--json")) {
      json = true;
    } else if (!strcmp(a, "--db")) {
      if (!(db = fr__val(argc, argv, &i, a)))
        return 2;
    } else if (!strcmp(a, "cancel") && !cancel) {
      cancel = true;
    } else if (a[0] >= '1' && a[0] <= '9' && !id) {
      char *end;
      id = strtoll(a, &end, 10);
      if (*end)
        id = 0;
    } else {
      fprintf(stderr, "flowrun runs: unexpected argument %s\n", a);
      fr__runs_usage(stderr);
      return 2;
    }
  }
  if (!db || (cancel && !id)) {
    fr__runs_usage(stderr);
    return 2;
  }
  struct fr_err err = {{0}};
  struct fr_pg *pg = NULL;
  if (fr_pg_open(db, 0, &pg, &err)) {
    fprintf(stderr, "flowrun runs: %s\n", err.msg);
    return 1;
  }
  int code = 0;
  if (cancel) {
    if (fr_pg_cancel(pg, id, &err)) {
      fprintf(stderr, "flowrun runs: %s\n", err.msg);
      code = 1;
    } else {
      printf("cancelled %lld\n", (long long)id);
    }
    fr_pg_close(pg);
    return code;
  }
  struct fr_buf b = {0};
  if (fr_pg_runs_json(pg, id, 100, &b, &err)) {
    fprintf(stderr, "flowrun runs: %s\n", err.msg);
    code = 1;
  } else if (json) {
    printf("%s\n", b.data);
  } else {
    struct fr_arena *a = fr_arena_new(0);
    struct fr_json *root = NULL;
    if (a && !fr_json_parse(a, b.data, b.len, 0, &root, &err)) {
      const struct fr_json *runs = fr_json_get(root, "runs");
      if (!id)
        printf("%-6s %-9s %-8s %-20s %-24s %s\n", "ID", "STATE", "ATTEMPTS", "WORKER", "CREATED", "GRAPH");
      for (int i = 0; runs && i < runs->n; i++) {
        const struct fr_json *r = &runs->items[i];
        if (!id) {
          char att[16];
          snprintf(att, sizeof att, "%d/%d", (int)fr_json_num(r, "attempts", 0),
                   (int)fr_json_num(r, "max_attempts", 0));
          printf("%-6lld %-9s %-8s %-20s %-24s %s\n", (long long)fr_json_num(r, "id", 0), fr__s(r, "state"),
                 att, fr__s(r, "worker"), fr__s(r, "created"), fr__s(r, "name"));
          continue;
        }
        printf("run %lld: %s\n  graph:    %s\n  worker:   %s\n  attempts: %d of %d\n  created:  %s\n"
               "  started:  %s\n  finished: %s\n",
               (long long)fr_json_num(r, "id", 0), fr__s(r, "state"), fr__s(r, "name"), fr__s(r, "worker"),
               (int)fr_json_num(r, "attempts", 0), (int)fr_json_num(r, "max_attempts", 0),
               fr__s(r, "created"), fr__s(r, "started"), fr__s(r, "finished"));
        if (fr_json_get(r, "executed") && fr_json_get(r, "executed")->type == FR_JSON_NUMBER)
          printf("  nodes:    %d ran, %d cached, %.0f ms\n", (int)fr_json_num(r, "executed", 0),
                 (int)fr_json_num(r, "cached", 0), fr_json_num(r, "ms", 0));
        if (fr_json_str(r, "error", NULL))
          printf("  error:    %s\n", fr_json_str(r, "error", ""));
        const struct fr_json *outs = fr_json_get(r, "outputs");
        for (int k = 0; outs && k < outs->n; k++)
          printf("  output:   %s\n", outs->items[k].str);
      }
    }
    fr_arena_free(a);
  }
  fr_buf_free(&b);
  fr_pg_close(pg);
  return code;
}
#endif
