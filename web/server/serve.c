/* flowrun serve (see serve.h and docs/protocol.md).
 *
 * Threads: libwebsockets runs on the main thread and owns every connection; the worker thread owns the
 * engine and runs one graph at a time. They share the run list and the event log under one mutex. The
 * worker appends engine events (already JSON) to the log and wakes the service loop with
 * lws_cancel_service; the loop then asks every websocket for a write and each client sends the log
 * entries it has not seen. Nothing from a connection is touched by the worker, and the engine is touched
 * only by the worker (fr_engine_cancel, which is thread-safe, excepted). POST /api/pin hashes model files
 * (seconds for a multi-GB checkpoint seen for the first time) on a thread of its own, so the loop goes on
 * answering and sending progress meanwhile: the request waits as a job, and is answered from the loop
 * once the job is done (fr__pin_main). */
#include "web/server/serve.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <libwebsockets.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <png.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/cache.h"
#include "core/events.h"
#include "core/file.h"
#include "core/flowrun.h"
#include "core/graph.h"
#include "core/graph_yaml.h"
#include "core/json.h"
#include "core/metrics.h"
#include "core/paths.h"
#include "core/reader.h"
#ifdef FLOWRUN_HAVE_PG
#include "core/pg/pg.h"
#endif
#include "core/schema.h"
#include "core/signature.h"
#include "nodes/registry.h"
#include "web/server/api_models.h"
#include "web/server/api_pin.h"
#include "web/server/ops.h"

/* Bounds: a graph is at most 4 MiB (the loader's limit), so a request body (JSON around the YAML, whose
 * escaping can grow it) is at most 10 MiB; websocket messages from clients are small commands. */
#define FR__MAX_BODY (10u << 20)
#define FR__MAX_WS_MSG (64u << 10)
#define FR__MAX_STATIC (64u << 20)
#define FR__LOG_SIZE 2048                /* events kept for clients that lag behind */
#define FR__MAX_HISTORY 200              /* finished runs kept in the history */
#define FR__HISTORY_YAML_MAX (64u << 20) /* graph texts kept for GET /api/run, newest first */
/* Direct replies to one websocket client wait in a list: above FR__WS_PAUSE bytes the server stops reading
 * that client's requests until they are sent (below FR__WS_RESUME), so every request is answered and a
 * client that never reads cannot grow the list without bound; FR__WS_MAX is a last guard (closes). */
#define FR__WS_PAUSE (256u << 10)
#define FR__WS_RESUME (64u << 10)
#define FR__WS_MAX (64u << 20)
/* /api/graphs walks at most this deep and looks at most at this many directory entries in all; folder
 * links are never followed (a link loop cannot make it slow). */
#define FR__WALK_DEPTH 8
#define FR__WALK_ENTRIES 20000
#define FR__QUEUE_RUNS 64             /* default --max-queue */
#define FR__QUEUE_BYTES (256ll << 20) /* default --max-queue-mb */
/* Token guesses: an address may send FR__GUESS_BURST wrong tokens, then one more every FR__GUESS_REFILL_S
 * seconds; while it has none left, every token it sends (right or wrong) is answered 429. */
#define FR__GUESS_SLOTS 64
#define FR__GUESS_BURST 10
#define FR__GUESS_REFILL_S 6.0
/* Submissions (--rate-limit): one bucket per client address, the least recently used replaced when full */
#define FR__RATE_SLOTS 256
#define FR__MAX_RUNNERS 16
#define FR__MAX_PARAMS 256
#define FR__PREVIEW_MAX 256 /* preview side in pixels (larger previews are subsampled) */

enum fr__run_state { FR__QUEUED, FR__RUNNING, FR__DONE, FR__FAILED, FR__CANCELLED };
static const char *const fr__state_names[] = {"queued", "running", "done", "error", "cancelled"};

struct fr__run {
  int id;
  enum fr__run_state state;
  char *path;             /* graph file relative to the graphs folder ("" for an unsaved graph) */
  char *yaml;             /* the text that runs; kept after the run for GET /api/run (see trim) */
  struct fr_buf params;   /* the run's params as a JSON object's members, for GET /api/run */
  struct fr_arena *arena; /* overrides */
  struct fr_override *ov;
  int n_ov;
  bool cancel_requested;
  struct fr_run_summary sum;
  size_t yaml_bytes;     /* counted in the queue's byte bound while queued */
  char *error;           /* fr_malloc'd message when it failed */
  struct fr_buf outputs; /* JSON array items: "file", ... (relative to the output folder) */
  double queued_at;
  int64_t db_id, db_seq; /* serve --db: the run's id in the fleet's queue, the last event seen */
  bool db_done;          /* its run_done event has come */
  bool cancel_sent;      /* a cancel passed on to the fleet */
  struct fr__run *next;
};

struct fr__msg {
  uint64_t seq;
  char *data; /* LWS_PRE bytes, then the JSON text */
  size_t len;
};

struct fr__guess { /* wrong tokens from one address */
  char addr[64];
  double left; /* wrong tokens it may still send */
  double t;    /* when left was last brought up to date (monotonic seconds) */
};

struct fr__rate { /* submissions from one address (--rate-limit) */
  char addr[64];
  double left; /* submissions it may still make now */
  double t;    /* when left was last brought up to date (monotonic seconds) */
};

struct fr__srv;
/* One runner thread per --max-concurrent-runs, each with its own engine (and model cache), all sharing
 * the cache file: an engine runs one graph at a time, and engines share nothing in memory. */
struct fr__runner {
  struct fr__srv *s;
  struct fr_engine *engine;
  struct fr__run *current; /* the run it is running (under s->mu) */
  pthread_t th;
  bool started;
  struct fr_metrics_listener ml;
  struct fr_ops_seen seen; /* its engine's figures already counted in the metrics */
};

struct fr__srv {
  struct fr_serve_opts o;
  char graphs_real[PATH_MAX], output_real[PATH_MAX], editor_real[PATH_MAX], input_real[PATH_MAX],
      temp_real[PATH_MAX];
  bool have_editor, loopback;
  char bind_addr[64];                             /* the numeric address listened on */
  const char *roots[2 + FR_SERVE_MAX_MODEL_DIRS]; /* what graphs may read: graphs, input, models */
  int n_roots;
  const char *input_dirs[1];
  int n_input_dirs;
  char **hosts; /* Host names answered (lower case, IPv6 in brackets) */
  int n_hosts;
  int max_queue;
  size_t max_queue_bytes;
  struct fr__guess guesses[FR__GUESS_SLOTS]; /* service thread only */
  struct lws_context *ctx;
  struct fr__runner runners[FR__MAX_RUNNERS];
  int n_runners;
  struct fr_metrics *metrics;
  struct fr_ops_ready ready;
  struct fr__rate rates[FR__RATE_SLOTS]; /* service thread only */

  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t worker; /* serve --db: the fleet thread */
  bool worker_started, stopping;
  bool draining; /* SIGTERM/SIGINT: new submissions are refused, the running ones may finish */
  struct fr__run *runs, *runs_tail; /* history and queue, oldest first */
  int next_id, n_runs;
  int n_queued;        /* runs waiting (state queued) */
  size_t queued_bytes; /* their graph texts */
  int n_running;       /* runs the runners are running */
  struct fr__msg log[FR__LOG_SIZE];
  uint64_t log_next; /* seq of the next message */
  int fleet_wake[2]; /* serve --db: wakes the fleet thread (a run to submit or to cancel) */
  /* POST /api/pin: jobs waiting for the pin thread, oldest first, and the ones it has done that the loop
   * has not answered yet (both under mu). The pin thread alone uses the hashes' memo and its own
   * connection to the cache's database (opened at the first pin; NULL with --no-cache or when it cannot
   * be opened, which only means hashing again). */
  struct fr__pin_job *pin_queue, *pin_done;
  pthread_cond_t pin_cv;
  pthread_t pin_th;
  bool pin_started;
  atomic_int pin_cancel; /* set at shutdown: a hash in progress stops at its next chunk */
  struct fr_cache *pin_cache;
  bool pin_cache_tried;
  struct fr_fp_memo pin_memo;
};

/* One POST /api/pin. The loop makes it and answers it; the pin thread fills in status, out and err. */
struct fr__pin_job {
  struct fr__pin_job *next;
  struct lws *wsi;     /* the request's connection (the loop's only) */
  struct fr__pss *pss; /* NULL once the connection has closed: the job is then dropped when done */
  char dir[PATH_MAX];  /* where relative subgraph files are looked up */
  char *req;           /* the request's JSON text */
  size_t req_len;
  bool done;
  int status;
  struct fr_buf out; /* the answer (status 200) */
  struct fr_err err; /* the error (any other status) */
};

static struct fr__srv *fr__g; /* for the signal handler only */
static volatile sig_atomic_t fr__interrupted;

/* Per connection, HTTP or websocket. */
struct fr__pss {
  /* HTTP */
  bool is_post;
  char uri[256];
  struct fr_buf body;
  bool body_too_big;
  bool close_after;
  bool responded; /* an answer is on its way: further body bytes are ignored */
  char *resp;     /* LWS_PRE + body */
  size_t resp_len, resp_sent;
  /* websocket */
  bool is_ws;
  uint64_t next_seq;
  struct fr_buf rx;
  struct fr__reply *rq_head, *rq_tail; /* direct replies not yet sent, oldest first */
  size_t rq_bytes;
  bool rx_paused; /* reading this client's requests is paused until its replies are sent */
  struct fr__pss *next_ws;
  struct fr__pin_job *pin_job; /* POST /api/pin: the job this request waits for */
};

struct fr__reply {
  struct fr__reply *next;
  size_t len;
  char data[]; /* LWS_PRE bytes, then the JSON text */
};

static double fr__now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---- event log ------------------------------------------------------------------------------------- */

/* Appends a JSON message for every websocket client and wakes the service loop. Takes the mutex. */
static void fr__broadcast_len(struct fr__srv *s, const char *json, size_t n) {
  char *d = fr_malloc(LWS_PRE + n + 1);
  if (!d)
    return; /* an event lost to out-of-memory; the run itself goes on */
  memcpy(d + LWS_PRE, json, n);
  d[LWS_PRE + n] = 0;
  pthread_mutex_lock(&s->mu);
  struct fr__msg *m = &s->log[s->log_next % FR__LOG_SIZE];
  fr_free(m->data);
  *m = (struct fr__msg){s->log_next, d, n};
  s->log_next++;
  pthread_mutex_unlock(&s->mu);
  if (s->ctx)
    lws_cancel_service(s->ctx);
}

static void fr__broadcast_buf(struct fr__srv *s, struct fr_buf *b) {
  if (!b->oom && b->len)
    fr__broadcast_len(s, b->data, b->len);
  fr_buf_free(b);
}

/* ---- paths ------------------------------------------------------------------------------------------ */

static bool fr__under(const char *root, const char *real) {
  size_t n = strlen(root);
  return strncmp(real, root, n) == 0 && (real[n] == '/' || real[n] == 0);
}

/* A relative path a client sent: no absolute paths, no ".." components, no empty components or control
 * characters. The realpath check after it is what actually keeps files inside the folder (symlinks). */
static bool fr__rel_ok(const char *rel) {
  if (!rel || !*rel || rel[0] == '/' || strlen(rel) >= 1024)
    return false;
  for (const char *p = rel; *p; p++)
    if ((unsigned char)*p < 0x20 || *p == '\\')
      return false;
  const char *c = rel;
  while (*c) {
    const char *e = strchr(c, '/');
    size_t n = e ? (size_t)(e - c) : strlen(c);
    if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
      return false;
    c += n + (e ? 1 : 0);
    if (e && !*c)
      return false; /* trailing slash */
  }
  return true;
}

/* Resolves rel under root (a realpath) into out: the file must exist (for reading) or its folder must
 * (for writing; an existing file there must also resolve inside root). Returns an HTTP status: 200 ok,
 * 400 a malformed path, 403 outside the folder, 404 missing. */
static int fr__resolve(const char *root, const char *rel, bool for_write, char out[PATH_MAX]) {
  if (!fr__rel_ok(rel))
    return 400;
  char joined[PATH_MAX * 2];
  snprintf(joined, sizeof joined, "%s/%s", root, rel);
  if (strlen(joined) >= PATH_MAX)
    return 400;
  char real[PATH_MAX];
  if (realpath(joined, real)) {
    if (!fr__under(root, real))
      return 403;
    struct stat st;
    if (stat(real, &st) != 0 || !S_ISREG(st.st_mode))
      return for_write ? 403 : 404;
    strcpy(out, for_write ? joined : real);
    return 200;
  }
  if (!for_write)
    return errno == ENOENT ? (lstat(joined, &(struct stat){0}) == 0 ? 403 : 404) : 403;
  /* A new file: its folder must exist and resolve inside root; the name must not be a dangling link. */
  struct stat lst;
  if (lstat(joined, &lst) == 0)
    return 403;
  char dir[PATH_MAX];
  strcpy(dir, joined);
  char *slash = strrchr(dir, '/');
  *slash = 0;
  if (!realpath(dir, real))
    return 404;
  if (!fr__under(root, real))
    return 403;
  if (snprintf(out, PATH_MAX, "%s/%s", real, slash + 1) >= PATH_MAX)
    return 400;
  return 200;
}

static bool fr__has_ext(const char *p, const char *ext) {
  size_t n = strlen(p), m = strlen(ext);
  return n > m && strcasecmp(p + n - m, ext) == 0;
}

static bool fr__is_yaml(const char *p) {
  return fr__has_ext(p, ".yaml") || fr__has_ext(p, ".yml");
}

/* Reads a whole regular file of at most max bytes (fr_free). */
/* Writes atomically: a temporary file beside it, then rename (a reader never sees half a graph). */
static enum fr_status fr__write_file(const char *path, const char *data, size_t n, struct fr_err *err) {
  char tmp[PATH_MAX + 32];
  snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0644);
  if (fd < 0)
    return fr_errf(err, FR_E_IO, "cannot write: %s", strerror(errno));
  size_t off = 0;
  while (off < n) {
    ssize_t w = write(fd, data + off, n - off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      close(fd);
      unlink(tmp);
      return fr_errf(err, FR_E_IO, "cannot write: %s", strerror(errno));
    }
    off += (size_t)w;
  }
  if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
    unlink(tmp);
    return fr_errf(err, FR_E_IO, "cannot write: %s", strerror(errno));
  }
  return FR_OK;
}

/* ---- previews: an F32 [1, h, w, 3] tensor as a small PNG, base64 ------------------------------------- */

static void fr__png_write_cb(png_structp p, png_bytep data, png_size_t n) {
  fr_buf_append((struct fr_buf *)png_get_io_ptr(p), data, n);
}
static void fr__png_flush_cb(png_structp p) {
  (void)p;
}

static void fr__base64(struct fr_buf *out, const unsigned char *d, size_t n) {
  static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (size_t i = 0; i < n; i += 3) {
    unsigned v =
        (unsigned)d[i] << 16 | (i + 1 < n ? (unsigned)d[i + 1] << 8 : 0) | (i + 2 < n ? d[i + 2] : 0);
    char q[4] = {t[v >> 18 & 63], t[v >> 12 & 63], i + 1 < n ? t[v >> 6 & 63] : '=',
                 i + 2 < n ? t[v & 63] : '='};
    fr_buf_append(out, q, 4);
  }
}

/* Appends ,"preview":"data:image/png;base64,..." for a CPU F32 [1, h, w, 3] (or [h, w, 3]) tensor. */
static void fr__append_preview(struct fr_buf *b, const struct fr_tensor *t) {
  if (!t || t->dtype != FR_F32 || t->dev != FR_DEV_CPU || !t->data || t->ndim < 3)
    return;
  int64_t h = t->shape[t->ndim - 3], w = t->shape[t->ndim - 2], c = t->shape[t->ndim - 1];
  if (h <= 0 || w <= 0 || (c != 3 && c != 4) || h > 16384 || w > 16384)
    return;
  int64_t step = 1;
  while (h / step > FR__PREVIEW_MAX || w / step > FR__PREVIEW_MAX)
    step++;
  int64_t oh = h / step, ow = w / step;
  unsigned char *rgb = fr_malloc((size_t)(oh * ow * 3));
  struct fr_buf png = {0};
  if (!rgb)
    return;
  const float *px = t->data;
  for (int64_t y = 0; y < oh; y++)
    for (int64_t x = 0; x < ow; x++)
      for (int k = 0; k < 3; k++) {
        float v = px[((y * step) * w + x * step) * c + k];
        v = v < 0 ? 0 : v > 1 ? 1 : v;
        rgb[(y * ow + x) * 3 + k] = (unsigned char)(v * 255.0f + 0.5f);
      }
  png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = p ? png_create_info_struct(p) : NULL;
  png_bytep *rows = fr_malloc((size_t)oh * sizeof *rows);
  if (p && info && rows && !setjmp(png_jmpbuf(p))) {
    png_set_write_fn(p, &png, fr__png_write_cb, fr__png_flush_cb);
    png_set_IHDR(p, info, (png_uint_32)ow, (png_uint_32)oh, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(p, 3);
    for (int64_t y = 0; y < oh; y++)
      rows[y] = rgb + y * ow * 3;
    png_write_info(p, info);
    png_write_image(p, rows);
    png_write_end(p, NULL);
    if (!png.oom) {
      fr_buf_puts(b, ",\"preview\":\"data:image/png;base64,");
      fr__base64(b, (const unsigned char *)png.data, png.len);
      fr_buf_putc(b, '"');
    }
  }
  if (p)
    png_destroy_write_struct(&p, info ? &info : NULL);
  fr_free(rows);
  fr_free(rgb);
  fr_buf_free(&png);
}

/* ---- runs ------------------------------------------------------------------------------------------- */

static void fr__run_free(struct fr__run *r) {
  if (!r)
    return;
  fr_free(r->path);
  fr_free(r->yaml);
  fr_free(r->error);
  fr_arena_free(r->arena);
  fr_buf_free(&r->outputs);
  fr_buf_free(&r->params);
  fr_free(r);
}

/* The run as a JSON object (caller holds the mutex). */
static void fr__run_json(struct fr_buf *b, const struct fr__run *r) {
  fr_buf_printf(b, "{\"id\":%d,\"state\":\"%s\",\"path\":", r->id, fr__state_names[r->state]);
  fr_buf_json_str(b, r->path);
  fr_buf_printf(b, ",\"queued_at\":%.0f,\"executed\":%d,\"cached\":%d,\"ms\":%.1f,\"outputs\":[%s]",
                r->queued_at, r->sum.executed, r->sum.cached, r->sum.ms,
                r->outputs.len ? r->outputs.data : "");
  if (r->error) {
    fr_buf_puts(b, ",\"error\":");
    fr_buf_json_str(b, r->error);
  }
  fr_buf_putc(b, '}');
}

static void fr__runs_json(struct fr__srv *s, struct fr_buf *b) {
  fr_buf_puts(b, "{\"runs\":[");
  pthread_mutex_lock(&s->mu);
  for (struct fr__run *r = s->runs; r; r = r->next) {
    fr__run_json(b, r);
    if (r->next)
      fr_buf_putc(b, ',');
  }
  pthread_mutex_unlock(&s->mu);
  fr_buf_puts(b, "]}");
}

/* A run's new state as an event message (caller holds the mutex; broadcast b after unlocking, since a
 * finished run may leave the history as soon as the mutex is released). */
static void fr__run_event(struct fr_buf *b, const char *event, const struct fr__run *r) {
  fr_buf_printf(b, "{\"event\":\"%s\",\"run\":%d,\"info\":", event, r->id);
  fr__run_json(b, r);
  fr_buf_putc(b, '}');
}

/* Engine listener (worker thread): the event as JSON with the run id, a preview and the output file. */
static void fr__on_event(void *user, const struct fr_event *ev) {
  struct fr__runner *rn = user;
  struct fr__srv *s = rn->s;
  struct fr__run *r = rn->current;
  fr_metrics_event(&rn->ml, ev);
  struct fr_buf one = {0}, b = {0};
  if (ev->kind == FR_EV_RUN_START && r) {
    /* fr_engine_run clears the engine's cancel flag as it starts, so a cancel that came after the
     * worker's last look at cancel_requested and before that reset would be lost: the engine emits
     * run_start after the reset and before the first node, so look again here. */
    pthread_mutex_lock(&s->mu);
    bool cancelled = r->cancel_requested;
    pthread_mutex_unlock(&s->mu);
    if (cancelled)
      fr_engine_cancel(rn->engine);
  }
  fr_event_json(&one, ev);
  if (one.oom || one.len < 2) {
    fr_buf_free(&one);
    return;
  }
  fr_buf_printf(&b, "{\"run\":%d,", r ? r->id : 0);
  fr_buf_append(&b, one.data + 1, one.len - 2); /* the event's members, without its braces */
  if (ev->kind == FR_EV_PROGRESS && ev->preview)
    fr__append_preview(&b, ev->preview);
  if (ev->kind == FR_EV_OUTPUT && ev->path && r) {
    char real[PATH_MAX];
    if (realpath(ev->path, real) && fr__under(s->output_real, real) && real[strlen(s->output_real)] == '/') {
      const char *rel = real + strlen(s->output_real) + 1;
      fr_buf_puts(&b, ",\"file\":");
      fr_buf_json_str(&b, rel);
      pthread_mutex_lock(&s->mu);
      if (r->outputs.len)
        fr_buf_putc(&r->outputs, ',');
      fr_buf_json_str(&r->outputs, rel);
      pthread_mutex_unlock(&s->mu);
    } else if (realpath(ev->path, real) && fr__under(s->temp_real, real) &&
               real[strlen(s->temp_real)] == '/') {
      fr_buf_puts(&b, ",\"file\":"); /* a preview: shown, not kept in the run's outputs */
      fr_buf_json_str(&b, real + strlen(s->temp_real) + 1);
      fr_buf_puts(&b, ",\"temp\":true");
    }
  }
  fr_buf_putc(&b, '}');
  fr_buf_free(&one);
  fr__broadcast_buf(s, &b);
}

/* Drops the oldest finished runs beyond the history bound (caller holds the mutex). */
static void fr__trim_history(struct fr__srv *s) {
  struct fr__run **pp = &s->runs;
  while (s->n_runs > FR__MAX_HISTORY && *pp) {
    struct fr__run *r = *pp;
    if (r->state == FR__QUEUED || r->state == FR__RUNNING) {
      pp = &r->next;
      continue;
    }
    *pp = r->next;
    s->n_runs--;
    fr__run_free(r);
  }
  s->runs_tail = NULL;
  for (struct fr__run *r = s->runs; r; r = r->next)
    s->runs_tail = r;
  /* The graph texts of finished runs, newest first, up to FR__HISTORY_YAML_MAX in all; older ones are
   * dropped (GET /api/run then says so). Count from the newest: walk once for the total, then drop from
   * the oldest until under the bound. */
  size_t total = 0;
  for (struct fr__run *r = s->runs; r; r = r->next)
    total += r->yaml ? strlen(r->yaml) : 0;
  for (struct fr__run *r = s->runs; r && total > FR__HISTORY_YAML_MAX; r = r->next)
    if (r->yaml && r->state != FR__QUEUED && r->state != FR__RUNNING) {
      total -= strlen(r->yaml);
      fr_free(r->yaml);
      r->yaml = NULL;
    }
}

static void *fr__worker_main(void *arg) {
  struct fr__runner *rn = arg;
  struct fr__srv *s = rn->s;
  for (;;) {
    pthread_mutex_lock(&s->mu);
    struct fr__run *r = NULL;
    /* draining: the queued runs are not started (they stay queued and are dropped at exit) */
    while (!s->stopping && !s->draining) {
      for (r = s->runs; r && r->state != FR__QUEUED; r = r->next) {
      }
      if (r)
        break;
      pthread_cond_wait(&s->cv, &s->mu);
    }
    if (s->stopping || s->draining) {
      pthread_mutex_unlock(&s->mu);
      return NULL;
    }
    r->state = FR__RUNNING;
    s->n_queued--;
    s->queued_bytes -= r->yaml_bytes;
    s->n_running++;
    rn->current = r;
    struct fr_buf ev = {0};
    fr__run_event(&ev, "run_state", r);
    pthread_mutex_unlock(&s->mu);
    fr__broadcast_buf(s, &ev);
    double t0 = fr__now_ms();
    fr_metrics_observe(s->metrics, "flowrun_queue_wait_seconds", NULL, (t0 - r->queued_at) / 1000.0);
    fr_metrics_run_started(s->metrics);

    /* Relative subgraphs and file inputs resolve against the graph file's folder. */
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", s->graphs_real);
    if (*r->path) {
      char tmp[PATH_MAX * 2];
      snprintf(tmp, sizeof tmp, "%s/%s", s->graphs_real, r->path);
      char *slash = strrchr(tmp, '/');
      *slash = 0;
      char real[PATH_MAX];
      if (realpath(tmp, real) && fr__under(s->graphs_real, real))
        snprintf(dir, sizeof dir, "%s", real);
    }
    struct fr_err err = {{0}};
    struct fr_graph *g = NULL;
    enum fr_status rc = fr_engine_load_string(rn->engine, r->yaml, strlen(r->yaml),
                                              *r->path ? r->path : "<editor>", dir, r->ov, r->n_ov, &g, &err);
    struct fr_run_summary sum = {0};
    if (rc == FR_OK) {
      pthread_mutex_lock(&s->mu);
      bool cancelled = r->cancel_requested;
      pthread_mutex_unlock(&s->mu);
      rc = cancelled ? fr_errf(&err, FR_E_CANCELLED, "cancelled") : fr_engine_run(rn->engine, g, &sum, &err);
    } else {
      /* The engine never started, so no run_done event came: say what happened in the same shape. */
      struct fr_buf b = {0};
      fr_buf_printf(&b, "{\"run\":%d,\"event\":\"error\",\"node\":null,\"message\":", r->id);
      fr_buf_json_str(&b, err.msg);
      fr_buf_printf(&b, ",\"status\":\"%s\"}", fr_status_str(rc));
      fr__broadcast_buf(s, &b);
    }
    fr_graph_free(g);
    fr_ops_engine_update(s->metrics, &s->ready, rn->engine, &rn->seen);
    fr_ops_device_check(&s->ready, s->o.device, rc);
    pthread_mutex_lock(&s->mu);
    r->sum = sum;
    r->state = rc == FR_OK ? FR__DONE : rc == FR_E_CANCELLED ? FR__CANCELLED : FR__FAILED;
    if (rc != FR_OK)
      r->error = fr_strdup(err.msg);
    enum fr__run_state fin = r->state; /* r may be trimmed by another runner once unlocked */
    rn->current = NULL;
    s->n_running--;
    fr__run_event(&ev, "run_state", r);
    fr__trim_history(s);
    pthread_cond_broadcast(&s->cv); /* a draining server waits for its runs to end */
    pthread_mutex_unlock(&s->mu);
    fr_metrics_run_finished(s->metrics, fr__state_names[fin], (fr__now_ms() - t0) / 1000.0);
    if (s->ctx)
      lws_cancel_service(s->ctx); /* the service loop looks at the drain */
    fr__broadcast_buf(s, &ev);
  }
}

#ifdef FLOWRUN_HAVE_PG
/* ---- serve --db: the fleet's queue instead of the local engine -------------------------------------------
 * One thread (in place of the local worker) submits the runs the editor queues, picks up the runs anyone
 * else queued, follows every unfinished run's events in the database (broadcast with the local run id, as
 * the local engine's are), passes cancels on, and when a run is done copies its output files into the
 * output folder, so /api/output and the editor's gallery work as with local runs. */

struct fr__follow_ctx {
  struct fr__srv *s;
  struct fr__run *r;
  int id;
  bool started, done;
  char status[32];
  struct fr_run_summary sum;
};

static void fr__fleet_event(void *u, const char *json) {
  struct fr__follow_ctx *f = u;
  struct fr_arena *a = fr_arena_new(0);
  struct fr_json *j = NULL;
  struct fr_err err;
  if (!a || fr_json_parse(a, json, strlen(json), 0, &j, &err) || j->type != FR_JSON_OBJECT) {
    fr_arena_free(a);
    return;
  }
  const char *kind = fr_json_str(j, "event", "");
  if (!strcmp(kind, "run_start"))
    f->started = true;
  if (!strcmp(kind, "run_done")) {
    f->done = true;
    snprintf(f->status, sizeof f->status, "%s", fr_json_str(j, "status", "?"));
    f->sum.executed = (int)fr_json_num(j, "executed", 0);
    f->sum.cached = (int)fr_json_num(j, "cached", 0);
    f->sum.ms = fr_json_num(j, "ms", 0);
  }
  bool held = !strcmp(kind, "output") || !strcmp(kind, "run_done");
  fr_arena_free(a); /* kind pointed into it */
  if (held)
    return; /* a worker's path; the local copies and the end are said once the files are here */
  size_t n = strlen(json);
  if (n < 2)
    return;
  struct fr_buf b = {0};
  fr_buf_printf(&b, "{\"run\":%d,", f->id);
  fr_buf_append(&b, json + 1, n - 2);
  fr_buf_putc(&b, '}');
  fr__broadcast_buf(f->s, &b);
}

static enum fr_status fr__fleet_output(void *u, const char *name, const void *data, size_t len,
                                       struct fr_err *err) {
  struct fr__follow_ctx *f = u;
  if (strchr(name, '/') || !*name || name[0] == '.' || strlen(name) > 200)
    return fr_errf(err, FR_E_INVALID, "output file name '%.200s' is not a plain name", name);
  char path[PATH_MAX + 256], *tmp = NULL;
  snprintf(path, sizeof path, "%s/%.200s", f->s->output_real, name);
  enum fr_status rc = fr_write_temp(path, data, len, &tmp, err);
  bool taken = true;
  const char *dot = strrchr(name, '.');
  int stem = dot ? (int)(dot - name) : (int)strlen(name);
  for (int k = 1; !rc && taken && k < 10000; k++) {
    rc = fr_publish_temp(tmp, path, false, &taken, err);
    if (!rc && taken)
      snprintf(path, sizeof path, "%s/%.*s-%d%.20s", f->s->output_real, stem, name, k, dot ? dot : "");
  }
  if (tmp && (rc || taken))
    remove(tmp);
  fr_free(tmp);
  if (rc || taken)
    return rc ? rc : fr_errf(err, FR_E_IO, "no free name for %s", name);
  const char *rel = path + strlen(f->s->output_real) + 1;
  pthread_mutex_lock(&f->s->mu);
  if (f->r->outputs.len)
    fr_buf_putc(&f->r->outputs, ',');
  fr_buf_json_str(&f->r->outputs, rel);
  pthread_mutex_unlock(&f->s->mu);
  struct fr_buf b = {0};
  fr_buf_printf(&b, "{\"run\":%d,\"event\":\"output\",\"path\":", f->id);
  fr_buf_json_str(&b, path);
  fr_buf_puts(&b, ",\"file\":");
  fr_buf_json_str(&b, rel);
  fr_buf_puts(&b, ",\"written\":true}");
  fr__broadcast_buf(f->s, &b);
  return FR_OK;
}

/* The params of a run as a JSON object of strings (what flowrun submit sends). */
static void fr__ov_json(struct fr_buf *b, const struct fr__run *r) {
  fr_buf_putc(b, '{');
  for (int i = 0; i < r->n_ov; i++) {
    if (i)
      fr_buf_putc(b, ',');
    fr_buf_json_str(b, r->ov[i].name);
    fr_buf_putc(b, ':');
    fr_buf_json_str(b, r->ov[i].value);
  }
  fr_buf_putc(b, '}');
}

static void fr__fleet_step(struct fr__srv *s, struct fr_pg *pg, int64_t *max_seen) {
  struct fr_err err = {{0}};
  /* 1. the editor's new runs into the fleet's queue; cancels passed on */
  for (;;) {
    pthread_mutex_lock(&s->mu);
    struct fr__run *r = s->runs;
    while (r && !((r->state == FR__QUEUED && !r->db_id && !r->cancel_requested) ||
                  (r->cancel_requested && r->db_id && !r->db_done && !r->cancel_sent)))
      r = r->next;
    if (!r) {
      pthread_mutex_unlock(&s->mu);
      break;
    }
    if (r->db_id) { /* a cancel to pass on */
      int64_t id = r->db_id;
      r->cancel_sent = true;
      pthread_mutex_unlock(&s->mu);
      fr_pg_cancel(pg, id, &err);
      continue;
    }
    struct fr_buf params = {0};
    fr__ov_json(&params, r);
    char *yaml = fr_strdup(r->yaml), *name = fr_strdup(*r->path ? r->path : "editor.yaml");
    pthread_mutex_unlock(&s->mu);
    struct fr_pg_submit sub = {.yaml = yaml, .name = name, .dir = s->graphs_real, .params_json = params.data};
    int64_t id = 0;
    enum fr_status rc = yaml && name && !params.oom ? fr_pg_submit(pg, &sub, &id, &err) : FR_E_NOMEM;
    fr_free(yaml);
    fr_free(name);
    fr_buf_free(&params);
    pthread_mutex_lock(&s->mu);
    s->n_queued--;
    s->queued_bytes -= r->yaml_bytes;
    struct fr_buf ev = {0};
    if (rc) {
      r->state = FR__FAILED;
      r->error = fr_strdup(rc == FR_E_NOMEM ? "out of memory" : err.msg);
      fr__run_event(&ev, "run_state", r);
    } else {
      r->db_id = id;
      if (id > *max_seen)
        *max_seen = id;
    }
    pthread_mutex_unlock(&s->mu);
    if (ev.len)
      fr__broadcast_buf(s, &ev);
  }
  /* 2. runs anyone else queued */
  struct fr_buf b = {0};
  if (fr_pg_runs_json(pg, 0, 50, &b, &err) == FR_OK) {
    struct fr_arena *a = fr_arena_new(0);
    struct fr_json *root = NULL;
    const struct fr_json *runs =
        a && !fr_json_parse(a, b.data, b.len, 0, &root, &err) ? fr_json_get(root, "runs") : NULL;
    for (int i = runs ? runs->n - 1 : -1; i >= 0; i--) { /* oldest first */
      const struct fr_json *j = &runs->items[i];
      int64_t id = (int64_t)fr_json_num(j, "id", 0);
      if (id <= *max_seen)
        continue;
      *max_seen = id;
      pthread_mutex_lock(&s->mu);
      bool known = false;
      for (struct fr__run *r = s->runs; r && !known; r = r->next)
        known = r->db_id == id;
      struct fr__run *r = known ? NULL : fr_calloc(1, sizeof *r);
      struct fr_buf ev = {0};
      if (r && (r->path = fr_strdup(fr_json_str(j, "name", "")))) {
        r->db_id = id;
        r->id = ++s->next_id;
        r->state = FR__QUEUED;
        r->queued_at = fr__now_ms();
        if (s->runs_tail)
          s->runs_tail->next = r;
        else
          s->runs = r;
        s->runs_tail = r;
        s->n_runs++;
        fr__run_event(&ev, "run_queued", r);
      } else {
        fr_free(r);
      }
      pthread_mutex_unlock(&s->mu);
      if (ev.len)
        fr__broadcast_buf(s, &ev);
    }
    fr_arena_free(a);
  }
  fr_buf_free(&b);
  /* 3. events of the unfinished runs (their records stay in the history while unfinished) */
  struct fr__run *todo[64];
  int n_todo = 0;
  pthread_mutex_lock(&s->mu);
  for (struct fr__run *r = s->runs; r && n_todo < 64; r = r->next)
    if (r->db_id && !r->db_done)
      todo[n_todo++] = r;
  pthread_mutex_unlock(&s->mu);
  for (int k = 0; k < n_todo; k++) {
    struct fr__run *r = todo[k];
    pthread_mutex_lock(&s->mu);
    struct fr__follow_ctx f = {.s = s, .r = r, .id = r->id, .started = r->state == FR__RUNNING};
    int64_t after = r->db_seq, id = r->db_id;
    pthread_mutex_unlock(&s->mu);
    bool was_started = f.started;
    enum fr_status rc = fr_pg_events(pg, id, &after, fr__fleet_event, &f, &err);
    char state[32] = "";
    if (!rc && f.done)
      rc = fr_pg_state(pg, id, state, sizeof state, &err);
    if (!rc && f.done && !strcmp(state, "done"))
      rc = fr_pg_outputs(pg, id, fr__fleet_output, &f, &err);
    pthread_mutex_lock(&s->mu);
    r->db_seq = after;
    struct fr_buf ev = {0};
    if (f.started && !was_started && !f.done) {
      r->state = FR__RUNNING;
      fr__run_event(&ev, "run_state", r);
    }
    if (f.done) {
      r->db_done = true;
      r->sum = f.sum;
      r->state = !strcmp(state, "done") ? FR__DONE : !strcmp(state, "cancelled") ? FR__CANCELLED : FR__FAILED;
      fr_free(r->error);
      r->error = r->state == FR__DONE ? NULL : fr_strdup(rc ? err.msg : f.status);
      /* the graph text stays for GET /api/run, bounded by fr__trim_history as a local run's */
      fr__run_event(&ev, "run_state", r);
    }
    pthread_mutex_unlock(&s->mu);
    if (ev.len)
      fr__broadcast_buf(s, &ev);
    if (f.done) {
      struct fr_buf d = {0};
      fr_buf_printf(
          &d,
          "{\"run\":%d,\"event\":\"run_done\",\"executed\":%d,\"cached\":%d,\"ms\":%.3f,\"status\":", f.id,
          f.sum.executed, f.sum.cached, f.sum.ms);
      fr_buf_json_str(&d, f.status);
      fr_buf_putc(&d, '}');
      fr__broadcast_buf(s, &d);
    }
  }
  pthread_mutex_lock(&s->mu);
  fr__trim_history(s);
  pthread_mutex_unlock(&s->mu);
}

static void *fr__fleet_main(void *arg) {
  struct fr__srv *s = arg;
  struct fr_pg *pg = NULL;
  struct fr_err err = {{0}};
  if (fr_pg_open(s->o.db, 0, &pg, &err) || fr_pg_listen(pg, "flowrun_events", &err) ||
      fr_pg_listen(pg, "flowrun_queue", &err)) {
    fprintf(stderr, "flowrun serve: %s\n", err.msg);
    atomic_store(&s->ready.db_ok, false);
    fr_pg_close(pg);
    return NULL;
  }
  fr_pg_watch(pg, &s->ready.db_ok);
  /* the runs queued before this server started stay in `flowrun runs`; from now on every run shows */
  int64_t max_seen = 0;
  struct fr_buf b = {0};
  if (fr_pg_runs_json(pg, 0, 1, &b, &err) == FR_OK && b.data) {
    const char *p = strstr(b.data, "\"id\":");
    if (p)
      max_seen = strtoll(p + 5, NULL, 10);
  }
  fr_buf_free(&b);
  for (;;) {
    pthread_mutex_lock(&s->mu);
    bool stop = s->stopping;
    pthread_mutex_unlock(&s->mu);
    if (stop)
      break;
    fr__fleet_step(s, pg, &max_seen);
    fr_pg_wait(pg, 0.25, s->fleet_wake[0], NULL, 0);
    char drain[64];
    while (read(s->fleet_wake[0], drain, sizeof drain) > 0) {
    }
  }
  fr_pg_close(pg);
  return NULL;
}

static void fr__fleet_wake(struct fr__srv *s) {
  if (s->o.db && s->fleet_wake[1] >= 0 && write(s->fleet_wake[1], "x", 1) < 0) {
  }
}
#else
static void fr__fleet_wake(struct fr__srv *s) {
  (void)s;
}
#endif

/* Queues a run. params: a JSON object of overrides (numbers, bools, strings) or NULL. yaml: the text, or
 * NULL to read path from the graphs folder. Returns an HTTP status with a message in err; *id on 200. */
static int fr__queue_run(struct fr__srv *s, const char *path, const char *yaml, size_t yaml_len,
                         const struct fr_json *params, int *id, struct fr_err *err) {
  struct fr__run *r = fr_calloc(1, sizeof *r);
  if (!r || !(r->arena = fr_arena_new(0))) {
    fr_free(r);
    fr_errf(err, FR_E_NOMEM, "out of memory");
    return 500;
  }
  int code = 200;
  char full[PATH_MAX];
  if (path && *path) {
    int st = fr__resolve(s->graphs_real, path, false, full);
    if (st != 200 || !fr__is_yaml(path)) {
      fr_errf(err, FR_E_INVALID, "graph %s: %s", path,
              st == 404 ? "no such file in the graphs folder" : "not a .yaml file inside the graphs folder");
      code = st == 200 ? 400 : st;
      goto fail;
    }
  }
  r->path = fr_strdup(path ? path : "");
  if (yaml) {
    r->yaml = fr_strndup(yaml, yaml_len);
  } else if (path && *path) {
    size_t n;
    if (fr_read_file(full, 4u << 20, &r->yaml, &n, err) != FR_OK) {
      fr_err_prefix(err, FR_E_IO, "graph %s", path);
      code = 400;
      goto fail;
    }
  } else {
    fr_errf(err, FR_E_INVALID, "a run needs \"path\" or \"yaml\"");
    code = 400;
    goto fail;
  }
  if (!r->path || !r->yaml) {
    fr_errf(err, FR_E_NOMEM, "out of memory");
    code = 500;
    goto fail;
  }
  if (params && params->type != FR_JSON_NULL) {
    if (params->type != FR_JSON_OBJECT || params->n > FR__MAX_PARAMS) {
      fr_errf(err, FR_E_INVALID, "\"params\" must be an object of at most %d names", FR__MAX_PARAMS);
      code = 400;
      goto fail;
    }
    r->ov = fr_arena_alloc(r->arena, (size_t)(params->n + 1) * sizeof *r->ov);
    for (int i = 0; r->ov && i < params->n; i++) {
      const struct fr_json *v = &params->items[i];
      const char *txt;
      switch (v->type) {
      case FR_JSON_BOOL: txt = v->b ? "true" : "false"; break;
      case FR_JSON_NUMBER:
        txt = v->is_int ? fr_arena_printf(r->arena, "%lld", (long long)v->i)
                        : fr_arena_printf(r->arena, "%.17g", v->num);
        break;
      case FR_JSON_STRING: txt = fr_arena_strdup(r->arena, v->str); break;
      default:
        fr_errf(err, FR_E_INVALID, "param %s: expected a number, a bool or a string", params->keys[i]);
        code = 400;
        goto fail;
      }
      const char *name = fr_arena_strdup(r->arena, params->keys[i]);
      if (!txt || !name) {
        fr_errf(err, FR_E_NOMEM, "out of memory");
        code = 500;
        goto fail;
      }
      r->ov[r->n_ov++] = (struct fr_override){name, txt};
      if (r->params.len)
        fr_buf_putc(&r->params, ',');
      fr_buf_json_str(&r->params, name);
      fr_buf_putc(&r->params, ':');
      if (v->type == FR_JSON_STRING)
        fr_buf_json_str(&r->params, txt);
      else
        fr_buf_puts(&r->params, txt);
    }
  }
  r->queued_at = fr__now_ms();
  r->yaml_bytes = strlen(r->yaml);
  pthread_mutex_lock(&s->mu);
  if (s->draining) {
    pthread_mutex_unlock(&s->mu);
    fr_errf(err, FR_E_INVALID, "the server is shutting down: it takes no new runs");
    fr_metrics_add(s->metrics, "flowrun_submissions_rejected_total", "shutting_down", 1);
    code = 503;
    goto fail;
  }
  if (s->n_queued >= s->max_queue || s->queued_bytes + r->yaml_bytes > s->max_queue_bytes) {
    if (s->n_queued >= s->max_queue)
      fr_errf(err, FR_E_INVALID,
              "the queue is full: %d runs are waiting (at most %d, --max-queue); try again "
              "when one has started",
              s->n_queued, s->max_queue);
    else
      fr_errf(err, FR_E_INVALID,
              "the queue is full: the graphs waiting and this one take %zu bytes (at most "
              "%zu, --max-queue-mb); try again when one has started",
              s->queued_bytes + r->yaml_bytes, s->max_queue_bytes);
    pthread_mutex_unlock(&s->mu);
    fr_metrics_add(s->metrics, "flowrun_submissions_rejected_total", "queue_full", 1);
    code = 429;
    goto fail;
  }
  s->n_queued++;
  s->queued_bytes += r->yaml_bytes;
  r->id = ++s->next_id;
  r->state = FR__QUEUED;
  if (s->runs_tail)
    s->runs_tail->next = r;
  else
    s->runs = r;
  s->runs_tail = r;
  s->n_runs++;
  pthread_cond_signal(&s->cv);
  fr__fleet_wake(s);
  struct fr_buf ev = {0};
  fr__run_event(&ev, "run_queued", r);
  pthread_mutex_unlock(&s->mu);
  *id = r->id;
  fr__broadcast_buf(s, &ev);
  return 200;
fail:
  fr__run_free(r);
  return code;
}

/* Cancels a queued or running run. Returns an HTTP status. */
static int fr__cancel_run(struct fr__srv *s, int id, struct fr_err *err) {
  pthread_mutex_lock(&s->mu);
  struct fr__run *r = s->runs;
  while (r && r->id != id)
    r = r->next;
  if (!r) {
    pthread_mutex_unlock(&s->mu);
    fr_errf(err, FR_E_NOTFOUND, "no run %d", id);
    return 404;
  }
  bool was_queued = r->state == FR__QUEUED && !r->db_id;
  if (r->state != FR__QUEUED && r->state != FR__RUNNING) {
    pthread_mutex_unlock(&s->mu);
    fr_errf(err, FR_E_INVALID, "run %d has already finished (%s)", id, fr__state_names[r->state]);
    return 409;
  }
  r->cancel_requested = true;
  struct fr_buf ev = {0};
  if (was_queued) {
    s->n_queued--;
    s->queued_bytes -= r->yaml_bytes;
    r->state = FR__CANCELLED;
    r->error = fr_strdup("cancelled before it started");
    fr__run_event(&ev, "run_state", r);
  } else {
    for (int i = 0; i < s->n_runners; i++)
      if (s->runners[i].current == r)
        fr_engine_cancel(s->runners[i].engine);
  }
  bool to_fleet = r->db_id != 0;
  pthread_mutex_unlock(&s->mu);
  if (to_fleet)
    fr__fleet_wake(s); /* the fleet thread passes it on */
  if (was_queued)
    fr__broadcast_buf(s, &ev);
  return 200;
}

/* Moves queued run id to just before queued run `before` (0: to the end of the queue). Runs start in
 * list order, so this is the queue's order. Returns an HTTP status. */
static int fr__move_run(struct fr__srv *s, int id, int before, struct fr_err *err) {
  pthread_mutex_lock(&s->mu);
  struct fr__run **pp = &s->runs, *r = NULL;
  while (*pp && (*pp)->id != id)
    pp = &(*pp)->next;
  r = *pp;
  struct fr__run *b = s->runs;
  while (before && b && b->id != before)
    b = b->next;
  int code = 200;
  if (!r || (before && !b)) {
    fr_errf(err, FR_E_NOTFOUND, "no run %d", r ? before : id);
    code = 404;
  } else if (r->state != FR__QUEUED || (b && before && b->state != FR__QUEUED)) {
    fr_errf(err, FR_E_INVALID, "run %d is not waiting in the queue (%s)",
            r->state != FR__QUEUED ? id : before,
            fr__state_names[r->state != FR__QUEUED ? r->state : b->state]);
    code = 409;
  } else if (before != id) {
    *pp = r->next; /* unlink, then insert before b (or at the end) */
    r->next = NULL;
    struct fr__run **q = &s->runs;
    while (*q && (!before || *q != b))
      q = &(*q)->next;
    r->next = *q;
    *q = r;
    s->runs_tail = NULL;
    for (struct fr__run *x = s->runs; x; x = x->next)
      s->runs_tail = x;
  }
  struct fr_buf ev = {0};
  if (code == 200)
    fr__run_event(&ev, "queue_moved", r);
  pthread_mutex_unlock(&s->mu);
  if (code == 200)
    fr__broadcast_buf(s, &ev);
  return code;
}

/* GET /api/run?id=N: the run with the graph text it ran and its params (NULL text when dropped). */
static int fr__run_detail(struct fr__srv *s, int id, struct fr_buf *b) {
  pthread_mutex_lock(&s->mu);
  struct fr__run *r = s->runs;
  while (r && r->id != id)
    r = r->next;
  if (r) {
    fr_buf_puts(b, "{\"run\":");
    fr__run_json(b, r);
    fr_buf_puts(b, ",\"yaml\":");
    if (r->yaml)
      fr_buf_json_str(b, r->yaml);
    else
      fr_buf_puts(b, "null");
    fr_buf_printf(b, ",\"params\":{%s}}", r->params.len ? r->params.data : "");
  }
  pthread_mutex_unlock(&s->mu);
  return r ? 200 : 404;
}

/* ---- HTTP ------------------------------------------------------------------------------------------- */

static const char *fr__mime(const char *p) {
  static const char *const t[][2] = {{".html", "text/html; charset=utf-8"},
                                     {".js", "text/javascript"},
                                     {".mjs", "text/javascript"},
                                     {".css", "text/css"},
                                     {".json", "application/json"},
                                     {".svg", "image/svg+xml"},
                                     {".png", "image/png"},
                                     {".ico", "image/x-icon"},
                                     {".woff2", "font/woff2"},
                                     {".map", "application/json"},
                                     {".yaml", "text/yaml; charset=utf-8"},
                                     {".txt", "text/plain; charset=utf-8"}};
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
    if (fr__has_ext(p, t[i][0]))
      return t[i][1];
  return "application/octet-stream";
}

/* Sends headers now and queues body (taken over: fr_free'd later; it must have LWS_PRE spare bytes in
 * front, as fr__resp_* below arrange). Returns what the callback should return. */
static int fr__respond_raw(struct lws *wsi, struct fr__pss *pss, int status, const char *type, char *data,
                           size_t len, const char *extra_header) {
  unsigned char hdr[LWS_PRE + 2048], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof hdr - 1;
  fr_free(pss->resp);
  pss->responded = true;
  pss->resp = data;
  pss->resp_len = len;
  pss->resp_sent = 0;
  if (lws_add_http_common_headers(wsi, (unsigned)status, type, len, &p, end))
    return 1;
  static const char nosniff[] = "nosniff", nocache[] = "no-store";
  if (lws_add_http_header_by_name(wsi, (const unsigned char *)"x-content-type-options:",
                                  (const unsigned char *)nosniff, (int)strlen(nosniff), &p, end) ||
      lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                  (const unsigned char *)nocache, (int)strlen(nocache), &p, end))
    return 1;
  if (extra_header) {
    const char *colon = strchr(extra_header, ' ');
    char name[64];
    size_t n = (size_t)(colon - extra_header);
    if (n < sizeof name) {
      memcpy(name, extra_header, n);
      name[n] = 0;
      if (lws_add_http_header_by_name(wsi, (const unsigned char *)name, (const unsigned char *)colon + 1,
                                      (int)strlen(colon + 1), &p, end))
        return 1;
    }
  }
  if (lws_finalize_write_http_header(wsi, start, &p, end))
    return 1;
  lws_callback_on_writable(wsi);
  return 0;
}

static int fr__respond(struct lws *wsi, struct fr__pss *pss, int status, const char *type, const char *body,
                       size_t len, const char *extra_header) {
  char *d = fr_malloc(LWS_PRE + len + 1);
  if (!d)
    return -1;
  memcpy(d + LWS_PRE, body, len);
  return fr__respond_raw(wsi, pss, status, type, d, len, extra_header);
}

/* Sends b (JSON) and frees it. */
static int fr__respond_json(struct lws *wsi, struct fr__pss *pss, int status, struct fr_buf *b) {
  if (b->oom) {
    fr_buf_free(b);
    static const char oom[] = "{\"error\":\"out of memory\"}";
    return fr__respond(wsi, pss, 500, "application/json", oom, sizeof oom - 1, NULL);
  }
  int r = fr__respond(wsi, pss, status, "application/json", b->data ? b->data : "", b->len, NULL);
  fr_buf_free(b);
  return r;
}

static int fr__respond_error(struct lws *wsi, struct fr__pss *pss, int status, const char *msg) {
  struct fr_buf b = {0};
  fr_buf_puts(&b, "{\"error\":");
  fr_buf_json_str(&b, msg);
  fr_buf_putc(&b, '}');
  return fr__respond_json(wsi, pss, status, &b);
}

/* The value of the query argument name ("path"), URL-decoded by lws, or NULL. */
static const char *fr__arg(struct lws *wsi, const char *name, char *buf, int len) {
  char key[64];
  snprintf(key, sizeof key, "%s=", name);
  return lws_get_urlarg_by_name(wsi, key, buf, len);
}

/* Is the name part of a Host header one this server answers to (exactly, ignoring case)? */
static bool fr__host_allowed(const struct fr__srv *s, const char *h, size_t n) {
  for (int i = 0; i < s->n_hosts; i++)
    if (strlen(s->hosts[i]) == n && !strncasecmp(s->hosts[i], h, n))
      return true;
  return false;
}

/* Host name part of "name:port" / "[v6]:port". */
static size_t fr__host_len(const char *h) {
  if (h[0] == '[') {
    const char *e = strchr(h, ']');
    return e ? (size_t)(e - h + 1) : strlen(h);
  }
  const char *c = strchr(h, ':');
  return c ? (size_t)(c - h) : strlen(h);
}

static double fr__mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The wrong-token account of addr, brought up to date (a new one, or the one that has forgotten most,
 * replaced, when the table is full). */
static struct fr__guess *fr__guess_slot(struct fr__srv *s, const char *addr, double now) {
  struct fr__guess *best = NULL;
  double best_left = -1;
  for (int i = 0; i < FR__GUESS_SLOTS; i++) {
    struct fr__guess *g = &s->guesses[i];
    if (g->addr[0]) {
      g->left += (now - g->t) / FR__GUESS_REFILL_S;
      if (g->left > FR__GUESS_BURST)
        g->left = FR__GUESS_BURST;
      g->t = now;
      if (!strcmp(g->addr, addr))
        return g;
    }
    double left = g->addr[0] ? g->left : FR__GUESS_BURST + 1;
    if (left > best_left) {
      best = g;
      best_left = left;
    }
  }
  snprintf(best->addr, sizeof best->addr, "%s", addr);
  best->left = FR__GUESS_BURST;
  best->t = now;
  return best;
}

/* The client's address as text ("unknown" when lws cannot say); IPv4 on an IPv6 socket as plain IPv4. */
static void fr__peer(struct lws *wsi, char addr[64]) {
  if (!lws_get_peer_simple(wsi, addr, 64))
    snprintf(addr, 64, "unknown");
  if (!strncmp(addr, "::ffff:", 7) && strchr(addr + 7, '.'))
    memmove(addr, addr + 7, strlen(addr + 7) + 1);
}

/* --rate-limit: takes one submission from the client's bucket (service thread only). Returns 0 when
 * allowed, else the seconds to wait before the next one is allowed (at least 1, for Retry-After). */
static int fr__rate_take(struct fr__srv *s, struct lws *wsi) {
  if (s->o.rate_per_s <= 0)
    return 0;
  char addr[64];
  fr__peer(wsi, addr);
  double now = fr__mono_s(), burst = s->o.rate_burst > 0 ? s->o.rate_burst : 1;
  struct fr__rate *slot = NULL, *oldest = NULL;
  for (int i = 0; i < FR__RATE_SLOTS && !slot; i++) {
    struct fr__rate *q = &s->rates[i];
    if (q->addr[0] && !strcmp(q->addr, addr))
      slot = q;
    else if (!oldest || !q->addr[0] || (oldest->addr[0] && q->t < oldest->t))
      oldest = q;
  }
  if (!slot) { /* a new address (or one forgotten): a full bucket, in the least recently used slot */
    slot = oldest;
    snprintf(slot->addr, sizeof slot->addr, "%s", addr);
    slot->left = burst;
    slot->t = now;
  }
  slot->left += (now - slot->t) * s->o.rate_per_s;
  if (slot->left > burst)
    slot->left = burst;
  slot->t = now;
  if (slot->left >= 1) {
    slot->left -= 1;
    return 0;
  }
  fr_metrics_add(s->metrics, "flowrun_submissions_rejected_total", "rate_limited", 1);
  int wait = (int)ceil((1 - slot->left) / s->o.rate_per_s);
  return wait < 1 ? 1 : wait;
}

static bool fr__ct_equal(const char *a, const char *b) {
  size_t na = strlen(a), nb = strlen(b);
  unsigned char d = (unsigned char)(na != nb);
  for (size_t i = 0; i < nb; i++)
    d |= (unsigned char)(a[i % (na ? na : 1)] ^ b[i]);
  return d == 0 && na == nb;
}

/* Checks every request and websocket upgrade: the Host (a loopback server answers only to loopback
 * names, against DNS rebinding), the Origin when there is one (same origin only: browsers send it on
 * cross-site requests, and a page elsewhere must not drive the engine), and the token when one is set
 * (Authorization: Bearer, ?token= or the cookie set when the editor was opened with ?token=).
 * Returns NULL when allowed, else the reason (and *status). */
static const char *fr__check_access(struct fr__srv *s, struct lws *wsi, bool state_changing, int *status,
                                    bool *set_cookie) {
  char host[256] = "", origin[512] = "", buf[512];
  *set_cookie = false;
  if (lws_hdr_total_length(wsi, WSI_TOKEN_HOST) >= (int)sizeof host ||
      lws_hdr_copy(wsi, host, sizeof host, WSI_TOKEN_HOST) <= 0) {
    *status = 400;
    return "missing or oversized Host header";
  }
  if (!fr__host_allowed(s, host, fr__host_len(host))) {
    *status = 403;
    return "this server does not answer to that Host name (it answers to its own address, localhost, "
           "127.0.0.1, [::1] and the names given with --allow-host)";
  }
  int olen = lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN);
  if (olen > 0) {
    if (olen >= (int)sizeof origin || lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) <= 0) {
      *status = 403;
      return "oversized Origin";
    }
    char same[300];
    snprintf(same, sizeof same, "http://%s", host);
    if (strcasecmp(origin, same) != 0) {
      *status = 403;
      return "foreign Origin: only pages served by this server may use it";
    }
  } else if (state_changing) {
    /* Non-browser clients (curl, scripts) send no Origin; browsers always do on POST and upgrades. */
  }
  if (s->o.token) {
    bool ok = false, presented = false;
    int alen = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
    if (alen > 0 && alen < (int)sizeof buf &&
        lws_hdr_copy(wsi, buf, sizeof buf, WSI_TOKEN_HTTP_AUTHORIZATION) > 0 && !strncmp(buf, "Bearer ", 7)) {
      presented = true;
      ok = fr__ct_equal(buf + 7, s->o.token);
    }
    const char *q = fr__arg(wsi, "token", buf, sizeof buf);
    if (!ok && q) {
      presented = true;
      ok = fr__ct_equal(q, s->o.token);
      *set_cookie = ok;
    }
    int clen = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_COOKIE);
    if (!ok && clen > 0 && clen < (int)sizeof buf &&
        lws_hdr_copy(wsi, buf, sizeof buf, WSI_TOKEN_HTTP_COOKIE) > 0) {
      for (char *save = NULL, *c = strtok_r(buf, ";", &save); c && !ok; c = strtok_r(NULL, ";", &save)) {
        while (*c == ' ')
          c++;
        if (!strncmp(c, "flowrun_token=", 14)) {
          presented = true;
          ok = fr__ct_equal(c + 14, s->o.token);
        }
      }
    }
    if (presented) {
      /* Guesses are counted per client address; one that has sent too many wrong tokens is refused
       * whatever it sends, so that a right guess cannot be told from a wrong one while it waits. */
      char addr[64] = "";
      if (!lws_get_peer_simple(wsi, addr, sizeof addr))
        snprintf(addr, sizeof addr, "unknown");
      if (!strncmp(addr, "::ffff:", 7) && strchr(addr + 7, '.')) /* IPv4 on an IPv6 socket */
        memmove(addr, addr + 7, strlen(addr + 7) + 1);
      struct fr__guess *g = fr__guess_slot(s, addr, fr__mono_s());
      if (g->left < 1) {
        *status = 429;
        return "too many wrong tokens from this address: it may try once every 6 seconds";
      }
      if (!ok) {
        g->left -= 1;
        if (g->left < 1)
          fprintf(stderr,
                  "flowrun serve: wrong token from %s, too many: its tokens are refused (429) "
                  "until it has waited, one try every %.0f s\n",
                  addr, FR__GUESS_REFILL_S);
        else
          fprintf(stderr, "flowrun serve: wrong token from %s\n", addr);
        fflush(stderr);
      }
    }
    if (!ok) {
      *status = 401;
      return "a token is required (?token=, Authorization: Bearer, or the cookie)";
    }
  }
  return NULL;
}

/* Answers 200 with the whole file (already resolved inside an allowed folder) as body. */
static int fr__respond_file(struct lws *wsi, struct fr__pss *pss, const char *full, const char *mime,
                            const char *cookie_header) {
  char *d = NULL;
  size_t n = 0;
  struct fr_err err = {{0}};
  if (fr_read_file(full, FR__MAX_STATIC, &d, &n, &err) != FR_OK)
    return fr__respond_error(wsi, pss, 500, err.msg);
  char *withpre = fr_malloc(LWS_PRE + n + 1);
  if (!withpre) {
    fr_free(d);
    return -1;
  }
  memcpy(withpre + LWS_PRE, d, n);
  fr_free(d);
  return fr__respond_raw(wsi, pss, 200, mime, withpre, n, cookie_header);
}

static int fr__serve_static(struct fr__srv *s, struct lws *wsi, struct fr__pss *pss, const char *uri,
                            const char *cookie_header) {
  if (!s->have_editor) {
    static const char msg[] =
        "<!doctype html><title>flowrun</title><h1>The editor was not built</h1>"
        "<p>flowrun serve found no built editor (web/dist). Build it with "
        "<code>npm ci --prefix web/editor &amp;&amp; npm run build --prefix web/editor</code>, or point "
        "<code>--editor DIR</code> at it. The JSON API (/api/...) and the websocket (/ws) work without "
        "it.</p>";
    return fr__respond(wsi, pss, 503, "text/html; charset=utf-8", msg, sizeof msg - 1, cookie_header);
  }
  const char *rel = uri[0] == '/' ? uri + 1 : uri;
  if (!*rel)
    rel = "index.html";
  char full[PATH_MAX];
  int st = fr__resolve(s->editor_real, rel, false, full);
  if (st == 404 && !strchr(rel, '.')) /* client-side routes get the app */
    st = fr__resolve(s->editor_real, "index.html", false, full);
  if (st != 200)
    return fr__respond_error(wsi, pss, st, st == 404 ? "not found" : "forbidden path");
  return fr__respond_file(wsi, pss, full, fr__mime(full), cookie_header);
}

static int fr__cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lists *.yaml files under the graphs folder (relative names, sorted per folder). Bounded: at most
 * FR__WALK_DEPTH folders deep and FR__WALK_ENTRIES directory entries looked at in all (*left counts them
 * down; at 0 the list is cut short). Links to folders are never followed, so link loops cost nothing; a
 * link to a file is listed when it resolves to a .yaml file inside the folder. */
static void fr__list_graphs(struct fr__srv *s, const char *rel, int depth, int *left, struct fr_buf *b,
                            bool *first) {
  char path[PATH_MAX];
  if (depth > FR__WALK_DEPTH || *left <= 0 ||
      snprintf(path, sizeof path, "%s%s%s", s->graphs_real, *rel ? "/" : "", rel) >= (int)sizeof path)
    return;
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
  if (!d) {
    if (fd >= 0)
      close(fd);
    return;
  }
  struct dirent *e;
  /* Sorted output: collect names first. */
  char **names = NULL;
  int n = 0, cap = 0;
  while (*left > 0 && (e = readdir(d))) {
    --*left;
    if (e->d_name[0] == '.')
      continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 32;
      char **nn = fr_realloc(names, (size_t)cap * sizeof *nn);
      if (!nn)
        break;
      names = nn;
    }
    names[n] = fr_strdup(e->d_name);
    if (names[n])
      n++;
  }
  closedir(d);
  if (n > 1)
    qsort(names, (size_t)n, sizeof *names, fr__cmp_names);
  for (int i = 0; i < n; i++) {
    char sub[PATH_MAX], full[PATH_MAX], real[PATH_MAX];
    struct stat st;
    if (snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", names[i]) < (int)sizeof sub &&
        snprintf(full, sizeof full, "%s/%s", s->graphs_real, sub) < (int)sizeof full &&
        lstat(full, &st) == 0) {
      if (S_ISDIR(st.st_mode)) {
        fr__list_graphs(s, sub, depth + 1, left, b, first);
      } else if (fr__is_yaml(sub) && (S_ISREG(st.st_mode) || (S_ISLNK(st.st_mode) && realpath(full, real) &&
                                                              fr__under(s->graphs_real, real) &&
                                                              stat(real, &st) == 0 && S_ISREG(st.st_mode)))) {
        if (!*first)
          fr_buf_putc(b, ',');
        *first = false;
        fr_buf_json_str(b, sub);
      }
    }
    fr_free(names[i]);
  }
  fr_free(names);
}

/* How the editor's graphs load here: the server's model and input folders, its read roots, files not
 * required (the editor saves and checks graphs whose files may not exist yet). */
static struct fr_load_opts fr__load_opts(const struct fr__srv *s) {
  return (struct fr_load_opts){.registry = fr_builtin_registry(),
                               .model_dirs = s->o.model_dirs,
                               .n_model_dirs = s->o.n_model_dirs,
                               .input_dirs = s->input_dirs,
                               .n_input_dirs = s->n_input_dirs,
                               .read_roots = s->roots,
                               .n_read_roots = s->n_roots,
                               .require_files = false};
}

/* Saving: the YAML must load (with files not required) so that what the editor saves runs with flowrun.
 * With "force": true (the user said "save anyway" to an unfinished graph) it only has to be YAML: it is
 * parsed (syntax and the parser's size limits) and never written when that fails. */
static int fr__save_graph(struct fr__srv *s, struct lws *wsi, struct fr__pss *pss,
                          const struct fr_json *req) {
  const char *path = fr_json_str(req, "path", NULL);
  const struct fr_json *y = fr_json_get(req, "yaml");
  if (!path || !y || y->type != FR_JSON_STRING)
    return fr__respond_error(wsi, pss, 400, "save needs {\"path\": \"name.yaml\", \"yaml\": \"...\"}");
  if (!fr__is_yaml(path))
    return fr__respond_error(wsi, pss, 400, "graph files end in .yaml or .yml");
  char full[PATH_MAX];
  int st = fr__resolve(s->graphs_real, path, true, full);
  if (st != 200)
    return fr__respond_error(wsi, pss, st,
                             st == 404 ? "the folder does not exist in the graphs folder"
                                       : "the path is outside the graphs folder");
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s", full);
  *strrchr(dir, '/') = 0;
  struct fr_load_opts lo = fr__load_opts(s);
  struct fr_graph *g = NULL;
  struct fr_err err = {{0}};
  const struct fr_json *force = fr_json_get(req, "force");
  if (force && force->type != FR_JSON_BOOL)
    return fr__respond_error(wsi, pss, 400, "\"force\" must be true or false");
  if (force && force->b) {
    struct fr_arena *a = fr_arena_new(0);
    struct fr_ynode *root = NULL;
    if (!a)
      return fr__respond_error(wsi, pss, 500, "out of memory");
    enum fr_status ys = fr_yaml_parse(a, y->str, y->len, path, &root, &err);
    fr_arena_free(a);
    if (ys != FR_OK)
      return fr__respond_error(wsi, pss, ys == FR_E_NOMEM ? 500 : 422, err.msg);
  } else {
    if (fr_graph_load_string(y->str, y->len, path, dir, &lo, &g, &err) != FR_OK)
      return fr__respond_error(wsi, pss, 422, err.msg);
    fr_graph_free(g);
  }
  if (fr__write_file(full, y->str, y->len, &err) != FR_OK)
    return fr__respond_error(wsi, pss, 500, err.msg);
  struct fr_buf b = {0};
  fr_buf_puts(&b, "{\"saved\":");
  fr_buf_json_str(&b, path);
  fr_buf_putc(&b, '}');
  return fr__respond_json(wsi, pss, 200, &b);
}

/* Checks YAML without saving or running: {"ok":true} or 422 with the loader's message. */
static int fr__validate(struct fr__srv *s, struct lws *wsi, struct fr__pss *pss, const struct fr_json *req) {
  const struct fr_json *y = fr_json_get(req, "yaml");
  if (!y || y->type != FR_JSON_STRING)
    return fr__respond_error(wsi, pss, 400, "validate needs {\"yaml\": \"...\"}");
  struct fr_load_opts lo = fr__load_opts(s);
  struct fr_graph *g = NULL;
  struct fr_err err = {{0}};
  if (fr_graph_load_string(y->str, y->len, "<editor>", s->graphs_real, &lo, &g, &err) != FR_OK)
    return fr__respond_error(wsi, pss, 422, err.msg);
  fr_graph_free(g);
  static const char ok[] = "{\"ok\":true}";
  return fr__respond(wsi, pss, 200, "application/json", ok, sizeof ok - 1, NULL);
}

static void fr__pin_warn(void *user, const char *msg) {
  (void)user;
  fprintf(stderr, "flowrun serve: warning: %s\n", msg);
}

static void fr__pin_job_free(struct fr__pin_job *j) {
  if (!j)
    return;
  fr_free(j->req);
  fr_buf_free(&j->out);
  fr_free(j);
}

/* The pin thread: one job at a time, oldest first; the loop is woken to answer each. Jobs still waiting
 * at shutdown are dropped with their connections. */
static void *fr__pin_main(void *arg) {
  struct fr__srv *s = arg;
  fr_read_set_cancel(&s->pin_cancel);
  for (;;) {
    pthread_mutex_lock(&s->mu);
    while (!s->pin_queue && !s->stopping)
      pthread_cond_wait(&s->pin_cv, &s->mu);
    struct fr__pin_job *j = s->stopping ? NULL : s->pin_queue;
    if (j)
      s->pin_queue = j->next;
    pthread_mutex_unlock(&s->mu);
    if (!j)
      return NULL;
    char def[4096];
    if (!s->pin_cache_tried && !s->o.no_cache &&
        (s->o.cache_path || fr_cache_default_path(def, sizeof def))) {
      struct fr_cache_opts co = {.warn = fr__pin_warn, .degrade = true};
      struct fr_err cerr;
      if (fr_cache_open(s->o.cache_path ? s->o.cache_path : def, &co, &s->pin_cache, &cerr) != FR_OK)
        s->pin_cache = NULL;
    }
    s->pin_cache_tried = true;
    struct fr_load_opts lo = fr__load_opts(s);
    lo.cache = s->pin_cache;
    lo.memo = &s->pin_memo;
    struct fr_arena *a = fr_arena_new(0);
    struct fr_json *req = NULL;
    if (!a) {
      j->status = 500;
      fr_errf(&j->err, FR_E_NOMEM, "out of memory");
    } else if (fr_json_parse(a, j->req, j->req_len, 32, &req, &j->err) != FR_OK) {
      j->status = 500; /* parsed once already by the loop: only memory can fail here */
    } else {
      j->status = fr__api_pin(req, &lo, j->dir, &j->out, &j->err);
    }
    fr_arena_free(a);
    pthread_mutex_lock(&s->mu);
    j->done = true;
    if (j->pss) {
      j->next = s->pin_done;
      s->pin_done = j;
      j = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    fr__pin_job_free(j); /* its connection has closed */
    lws_cancel_service(s->ctx);
  }
}

/* The loop, woken: asks for a write on each connection whose pin job is done (until it is taken). */
static void fr__pin_wake(struct fr__srv *s) {
  pthread_mutex_lock(&s->mu);
  for (struct fr__pin_job *j = s->pin_done; j; j = j->next)
    lws_callback_on_writable(j->wsi);
  pthread_mutex_unlock(&s->mu);
}

/* Takes j out of the list at *l; false when it is not there. Under mu. */
static bool fr__pin_unlink(struct fr__pin_job **l, struct fr__pin_job *j) {
  for (; *l; l = &(*l)->next)
    if (*l == j) {
      *l = j->next;
      return true;
    }
  return false;
}

/* Takes pss's job when it is done (NULL while it is not) out of the done list. */
static struct fr__pin_job *fr__pin_take(struct fr__srv *s, struct fr__pss *pss) {
  struct fr__pin_job *j = NULL;
  pthread_mutex_lock(&s->mu);
  if (pss->pin_job && pss->pin_job->done) {
    j = pss->pin_job;
    pss->pin_job = NULL;
    fr__pin_unlink(&s->pin_done, j);
  }
  pthread_mutex_unlock(&s->mu);
  return j;
}

/* pss's connection closes: its job is dropped now when done or not started yet; one the pin thread is
 * running is dropped by the thread when done (its pss is cleared). */
static void fr__pin_forget(struct fr__srv *s, struct fr__pss *pss) {
  struct fr__pin_job *j = pss->pin_job;
  if (!j)
    return;
  pss->pin_job = NULL;
  pthread_mutex_lock(&s->mu);
  if (!fr__pin_unlink(j->done ? &s->pin_done : &s->pin_queue, j)) {
    j->pss = NULL;
    j = NULL;
  }
  pthread_mutex_unlock(&s->mu);
  fr__pin_job_free(j);
}

/* POST /api/pin {"yaml": TEXT, "path": P}: the graph with its model files pinned (api_pin.h). Files are
 * looked up as a run's are: in the model folders, inside the read roots; relative subgraph files from
 * P's folder (a file of the graphs folder, as POST /api/run's path), else from the graphs folder. The
 * path is checked here; the rest is the pin thread's job, answered when it is done. */
static int fr__pin(struct fr__srv *s, struct lws *wsi, struct fr__pss *pss, const struct fr_json *req) {
  const struct fr_json *pj = fr_json_get(req, "path");
  struct fr__pin_job *j = fr_calloc(1, sizeof *j);
  if (!j || !(j->req = fr_malloc(pss->body.len + 1))) {
    fr__pin_job_free(j);
    return fr__respond_error(wsi, pss, 500, "out of memory");
  }
  memcpy(j->req, pss->body.data, pss->body.len);
  j->req[pss->body.len] = 0;
  j->req_len = pss->body.len;
  snprintf(j->dir, sizeof j->dir, "%s", s->graphs_real);
  if (pj && pj->type != FR_JSON_NULL) {
    char full[PATH_MAX];
    int st = pj->type == FR_JSON_STRING ? fr__resolve(s->graphs_real, pj->str, false, full) : 400;
    if (st != 200 || !fr__is_yaml(pj->str)) {
      char msg[1200];
      snprintf(msg, sizeof msg, "graph %s: %s", pj->type == FR_JSON_STRING ? pj->str : "(not a string)",
               st == 404 ? "no such file in the graphs folder" : "not a .yaml file inside the graphs folder");
      fr__pin_job_free(j);
      return fr__respond_error(wsi, pss, st == 200 ? 400 : st, msg);
    }
    snprintf(j->dir, sizeof j->dir, "%s", full);
    *strrchr(j->dir, '/') = 0; /* full is a realpath of a file: it has a '/' */
  }
  j->wsi = wsi;
  j->pss = pss;
  pss->pin_job = j;
  pss->responded = true;
  lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0); /* hashing may take a while; the answer will come */
  pthread_mutex_lock(&s->mu);
  struct fr__pin_job **p = &s->pin_queue;
  while (*p)
    p = &(*p)->next;
  *p = j;
  pthread_cond_signal(&s->pin_cv);
  pthread_mutex_unlock(&s->mu);
  return 0;
}

static int fr__api_post(struct fr__srv *s, struct lws *wsi, struct fr__pss *pss) {
  struct fr_arena *a = fr_arena_new(0);
  struct fr_json *req = NULL;
  struct fr_err err = {{0}};
  if (!a)
    return -1;
  int ret;
  if (fr_json_parse(a, pss->body.data ? pss->body.data : "", pss->body.len, 32, &req, &err) != FR_OK) {
    char msg[sizeof err.msg + 32];
    snprintf(msg, sizeof msg, "malformed JSON: %s", err.msg);
    ret = fr__respond_error(wsi, pss, 400, msg);
  } else if (req->type != FR_JSON_OBJECT) {
    ret = fr__respond_error(wsi, pss, 400, "expected a JSON object");
  } else if (!strcmp(pss->uri, "/api/graph")) {
    ret = fr__save_graph(s, wsi, pss, req);
  } else if (!strcmp(pss->uri, "/api/validate")) {
    ret = fr__validate(s, wsi, pss, req);
  } else if (!strcmp(pss->uri, "/api/pin")) {
    ret = fr__pin(s, wsi, pss, req);
  } else if (!strcmp(pss->uri, "/api/run")) {
    const struct fr_json *y = fr_json_get(req, "yaml");
    int wait = fr__rate_take(s, wsi);
    if (wait) {
      char msg[200], hdr[64];
      snprintf(msg, sizeof msg,
               "too many submissions from this address (at most %d at once, then %.3g a second, "
               "--rate-limit): try again in %d s",
               s->o.rate_burst, s->o.rate_per_s, wait);
      snprintf(hdr, sizeof hdr, "retry-after: %d", wait);
      struct fr_buf b = {0};
      fr_buf_puts(&b, "{\"error\":");
      fr_buf_json_str(&b, msg);
      fr_buf_putc(&b, '}');
      ret = b.oom ? -1 : fr__respond(wsi, pss, 429, "application/json", b.data, b.len, hdr);
      fr_buf_free(&b);
    } else if (y && y->type != FR_JSON_STRING) {
      ret = fr__respond_error(wsi, pss, 400, "\"yaml\" must be a string");
    } else {
      int id = 0;
      int st = fr__queue_run(s, fr_json_str(req, "path", NULL), y ? y->str : NULL, y ? y->len : 0,
                             fr_json_get(req, "params"), &id, &err);
      if (st == 200) {
        struct fr_buf b = {0};
        fr_buf_printf(&b, "{\"id\":%d}", id);
        ret = fr__respond_json(wsi, pss, 200, &b);
      } else {
        ret = fr__respond_error(wsi, pss, st, err.msg);
      }
    }
  } else if (!strcmp(pss->uri, "/api/import/comfy")) {
    struct fr_buf b = {0};
    int st = fr__api_import_comfy(req, &b, &err);
    ret = st == 200 ? fr__respond_json(wsi, pss, 200, &b) : fr__respond_error(wsi, pss, st, err.msg);
  } else if (!strcmp(pss->uri, "/api/queue/move")) {
    const struct fr_json *id = fr_json_get(req, "id"), *before = fr_json_get(req, "before");
    bool ok_before =
        !before || before->type == FR_JSON_NULL ||
        (before->type == FR_JSON_NUMBER && before->is_int && before->i >= 1 && before->i <= INT32_MAX);
    if (!id || id->type != FR_JSON_NUMBER || !id->is_int || id->i < 1 || id->i > INT32_MAX || !ok_before) {
      ret = fr__respond_error(wsi, pss, 400, "move needs {\"id\": RUN_ID, \"before\": RUN_ID or null}");
    } else {
      int st =
          fr__move_run(s, (int)id->i, before && before->type == FR_JSON_NUMBER ? (int)before->i : 0, &err);
      if (st == 200) {
        struct fr_buf b = {0};
        fr__runs_json(s, &b);
        ret = fr__respond_json(wsi, pss, 200, &b);
      } else {
        ret = fr__respond_error(wsi, pss, st, err.msg);
      }
    }
  } else if (!strcmp(pss->uri, "/api/cancel")) {
    const struct fr_json *id = fr_json_get(req, "id");
    if (!id || id->type != FR_JSON_NUMBER || !id->is_int || id->i < 1 || id->i > INT32_MAX) {
      ret = fr__respond_error(wsi, pss, 400, "cancel needs {\"id\": RUN_ID}");
    } else {
      int st = fr__cancel_run(s, (int)id->i, &err);
      if (st == 200) {
        struct fr_buf b = {0};
        fr_buf_printf(&b, "{\"cancelled\":%d}", (int)id->i);
        ret = fr__respond_json(wsi, pss, 200, &b);
      } else {
        ret = fr__respond_error(wsi, pss, st, err.msg);
      }
    }
  } else {
    ret = fr__respond_error(wsi, pss, 404, "unknown API endpoint");
  }
  fr_arena_free(a);
  return ret;
}

static int fr__api_get(struct fr__srv *s, struct lws *wsi, struct fr__pss *pss, const char *uri) {
  char arg[1100];
  if (!strcmp(uri, "/api/schema")) {
    struct fr_buf b = {0};
    fr_schema_json(fr_builtin_registry(), &b);
    return fr__respond_json(wsi, pss, 200, &b);
  }
  if (!strcmp(uri, "/api/info")) {
    struct fr_buf b = {0};
    fr_buf_printf(&b, "{\"flowrun\":\"%s\",\"editor\":%s,\"token\":%s}", FLOWRUN_VERSION,
                  s->have_editor ? "true" : "false", s->o.token ? "true" : "false");
    return fr__respond_json(wsi, pss, 200, &b);
  }
  if (!strcmp(uri, "/api/graphs")) {
    struct fr_buf b = {0};
    bool first = true;
    int left = FR__WALK_ENTRIES;
    fr_buf_puts(&b, "{\"graphs\":[");
    fr__list_graphs(s, "", 0, &left, &b, &first);
    fr_buf_printf(&b, "]%s}", left <= 0 ? ",\"truncated\":true" : "");
    return fr__respond_json(wsi, pss, 200, &b);
  }
  if (!strcmp(uri, "/api/graph")) {
    const char *p = fr__arg(wsi, "path", arg, sizeof arg);
    if (!p)
      return fr__respond_error(wsi, pss, 400, "missing ?path=");
    char full[PATH_MAX];
    int st = fr__resolve(s->graphs_real, p, false, full);
    if (st == 200 && !fr__is_yaml(p))
      st = 400;
    if (st != 200)
      return fr__respond_error(wsi, pss, st,
                               st == 404 ? "no such graph"
                                         : "the path is not a .yaml file inside the graphs folder");
    char *d = NULL;
    size_t n = 0;
    struct fr_err err = {{0}};
    if (fr_read_file(full, 4u << 20, &d, &n, &err) != FR_OK)
      return fr__respond_error(wsi, pss, 500, err.msg);
    struct fr_buf b = {0};
    fr_buf_puts(&b, "{\"path\":");
    fr_buf_json_str(&b, p);
    fr_buf_puts(&b, ",\"yaml\":");
    fr_buf_json_strn(&b, d, n);
    fr_buf_putc(&b, '}');
    fr_free(d);
    return fr__respond_json(wsi, pss, 200, &b);
  }
  if (!strcmp(uri, "/api/runs")) {
    struct fr_buf b = {0};
    fr__runs_json(s, &b);
    return fr__respond_json(wsi, pss, 200, &b);
  }
  if (!strcmp(uri, "/api/run")) {
    const char *p = fr__arg(wsi, "id", arg, sizeof arg);
    char *end = NULL;
    long id = p ? strtol(p, &end, 10) : 0;
    if (!p || !*p || *end || id < 1 || id > INT32_MAX)
      return fr__respond_error(wsi, pss, 400, "missing or bad ?id= (a run id)");
    struct fr_buf b = {0};
    if (fr__run_detail(s, (int)id, &b) != 200) {
      fr_buf_free(&b);
      return fr__respond_error(wsi, pss, 404, "no such run in the history (the last 200 are kept)");
    }
    return fr__respond_json(wsi, pss, 200, &b);
  }
  if (!strcmp(uri, "/api/models")) {
    const char *k = fr__arg(wsi, "kind", arg, sizeof arg);
    struct fr_buf b = {0};
    struct fr_err err = {{0}};
    int st = fr__api_models(s->o.model_dirs, s->o.n_model_dirs, k, &b, &err);
    return st == 200 ? fr__respond_json(wsi, pss, 200, &b) : fr__respond_error(wsi, pss, st, err.msg);
  }
  if (!strcmp(uri, "/api/output")) {
    const char *p = fr__arg(wsi, "file", arg, sizeof arg);
    if (!p)
      return fr__respond_error(wsi, pss, 400, "missing ?file=");
    char full[PATH_MAX], tbuf[16];
    const char *tv = fr__arg(wsi, "temp", tbuf, sizeof tbuf);
    bool temp = tv && !strcmp(tv, "1"); /* a preview */
    int st = fr__resolve(temp ? s->temp_real : s->output_real, p, false, full);
    if (st == 200 && !fr__has_ext(p, ".png"))
      st = 400;
    if (st != 200)
      return fr__respond_error(wsi, pss, st,
                               st == 404 ? "no such output"
                               : temp    ? "the path is not a .png inside the preview folder"
                                         : "the path is not a .png inside the output folder");
    return fr__respond_file(wsi, pss, full, "image/png", NULL);
  }
  return fr__respond_error(wsi, pss, 404, "unknown API endpoint");
}

/* ---- websocket commands ----------------------------------------------------------------------------- */

/* Queues b (JSON, freed) for this client only. Every request gets its reply: when the unsent replies grow
 * past FR__WS_PAUSE bytes, reading the client's next requests waits until they are sent. */
static void fr__ws_reply(struct lws *wsi, struct fr__pss *pss, struct fr_buf *b) {
  struct fr__reply *r = b->oom ? NULL : fr_malloc(sizeof *r + LWS_PRE + b->len + 1);
  if (!r) { /* out of memory: the reply cannot be kept, so the client is told by losing the connection */
    fr_buf_free(b);
    pss->rq_bytes = FR__WS_MAX + 1;
    lws_callback_on_writable(wsi);
    return;
  }
  r->next = NULL;
  r->len = b->len;
  memcpy(r->data + LWS_PRE, b->data ? b->data : "", b->len);
  fr_buf_free(b);
  if (pss->rq_tail)
    pss->rq_tail->next = r;
  else
    pss->rq_head = r;
  pss->rq_tail = r;
  pss->rq_bytes += r->len;
  if (pss->rq_bytes > FR__WS_PAUSE && !pss->rx_paused) {
    pss->rx_paused = true;
    lws_rx_flow_control(wsi, 0);
  }
  lws_callback_on_writable(wsi);
}

static void fr__ws_free_replies(struct fr__pss *pss) {
  while (pss->rq_head) {
    struct fr__reply *r = pss->rq_head;
    pss->rq_head = r->next;
    fr_free(r);
  }
  pss->rq_tail = NULL;
  pss->rq_bytes = 0;
}

static void fr__ws_error(struct lws *wsi, struct fr__pss *pss, const char *msg) {
  struct fr_buf b = {0};
  fr_buf_puts(&b, "{\"event\":\"client_error\",\"message\":");
  fr_buf_json_str(&b, msg);
  fr_buf_putc(&b, '}');
  fr__ws_reply(wsi, pss, &b);
}

static void fr__ws_command(struct fr__srv *s, struct lws *wsi, struct fr__pss *pss) {
  struct fr_arena *a = fr_arena_new(0);
  struct fr_json *m = NULL;
  struct fr_err err = {{0}};
  if (!a)
    return;
  if (fr_json_parse(a, pss->rx.data ? pss->rx.data : "", pss->rx.len, 32, &m, &err) != FR_OK) {
    char msg[sizeof err.msg + 32];
    snprintf(msg, sizeof msg, "malformed JSON: %s", err.msg);
    fr__ws_error(wsi, pss, msg);
  } else if (m->type != FR_JSON_OBJECT || !fr_json_str(m, "type", NULL)) {
    fr__ws_error(wsi, pss, "expected an object with a \"type\"");
  } else {
    const char *t = fr_json_str(m, "type", "");
    struct fr_buf b = {0};
    if (!strcmp(t, "ping")) {
      fr_buf_puts(&b, "{\"event\":\"pong\"}");
      fr__ws_reply(wsi, pss, &b);
    } else if (!strcmp(t, "runs")) {
      fr_buf_puts(&b, "{\"event\":\"runs\",\"info\":");
      fr__runs_json(s, &b);
      fr_buf_putc(&b, '}');
      fr__ws_reply(wsi, pss, &b);
    } else if (!strcmp(t, "run")) {
      const struct fr_json *y = fr_json_get(m, "yaml");
      int id = 0;
      int wait = fr__rate_take(s, wsi);
      int st =
          wait ? (fr_errf(&err, FR_E_INVALID,
                          "too many submissions from this address (--rate-limit): try again in %d s", wait),
                  429)
          : y && y->type != FR_JSON_STRING
              ? (fr_errf(&err, FR_E_INVALID, "\"yaml\" must be a string"), 400)
              : fr__queue_run(s, fr_json_str(m, "path", NULL), y ? y->str : NULL, y ? y->len : 0,
                              fr_json_get(m, "params"), &id, &err);
      if (st == 200) {
        fr_buf_printf(&b, "{\"event\":\"queued\",\"run\":%d}", id);
        fr__ws_reply(wsi, pss, &b);
      } else {
        fr__ws_error(wsi, pss, err.msg);
      }
    } else if (!strcmp(t, "cancel")) {
      const struct fr_json *id = fr_json_get(m, "id");
      if (!id || id->type != FR_JSON_NUMBER || !id->is_int || id->i < 1 || id->i > INT32_MAX)
        fr__ws_error(wsi, pss, "cancel needs {\"type\":\"cancel\",\"id\":RUN_ID}");
      else if (fr__cancel_run(s, (int)id->i, &err) != 200)
        fr__ws_error(wsi, pss, err.msg);
    } else {
      char msg[200];
      snprintf(msg, sizeof msg, "unknown message type '%.64s' (known: ping, runs, run, cancel)", t);
      fr__ws_error(wsi, pss, msg);
    }
  }
  fr_arena_free(a);
}

/* ---- the libwebsockets callback --------------------------------------------------------------------- */

static const struct lws_protocols fr__protocols[2];

static int fr__callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len) {
  struct fr__pss *pss = user;
  struct fr__srv *s = lws_context_user(lws_get_context(wsi));
  /* Connections that close before their headers are complete have no per-session data. */
  if (!pss && reason != LWS_CALLBACK_EVENT_WAIT_CANCELLED)
    return lws_callback_http_dummy(wsi, reason, user, in, len);
  switch (reason) {
  case LWS_CALLBACK_HTTP: {
    const char *uri = in;
    int status;
    bool cookie;
    pss->is_post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
    pss->body_too_big = false;
    pss->responded = false;
    pss->close_after = pss->is_post; /* until the body is read, an early answer ends the connection */
    fr_buf_free(&pss->body);
    bool is_get = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0;
    snprintf(pss->uri, sizeof pss->uri, "%s", uri ? uri : "/");
    /* For load balancers and monitoring: /healthz and /readyz answer anyone (a status and a sentence,
     * never data); /metrics passes the Host and Origin checks, and the token only with --metrics-token. */
    if (is_get && (!strcmp(pss->uri, "/healthz") || !strcmp(pss->uri, "/readyz"))) {
      struct fr_buf b = {0};
      int code = 200;
      if (!strcmp(pss->uri, "/healthz"))
        fr_buf_puts(&b, "ok\n");
      else
        code = fr_ops_readyz(&s->ready, &b);
      int r = b.oom ? -1 : fr__respond(wsi, pss, code, "text/plain; charset=utf-8", b.data, b.len, NULL);
      fr_buf_free(&b);
      return r;
    }
    if (is_get && !strcmp(pss->uri, "/metrics")) {
      struct fr_serve_opts o = s->o;
      if (!s->o.metrics_token)
        s->o.token = NULL; /* the Host and Origin checks, without the token */
      const char *why = fr__check_access(s, wsi, false, &status, &cookie);
      s->o = o;
      if (why)
        return fr__respond_error(wsi, pss, status, why);
      struct fr_buf b = {0};
      fr_metrics_render(s->metrics, &b);
      int r = b.oom ? -1
                    : fr__respond(wsi, pss, 200, "text/plain; version=0.0.4; charset=utf-8",
                                  b.data ? b.data : "", b.len, NULL);
      fr_buf_free(&b);
      return r;
    }
    const char *why = fr__check_access(s, wsi, pss->is_post, &status, &cookie);
    if (why)
      return fr__respond_error(wsi, pss, status, why);
    if (!pss->is_post && !is_get)
      return fr__respond_error(wsi, pss, 405, "only GET and POST");
    if (pss->is_post) {
      char cl[32] = "";
      /* A body without a Content-Length (Transfer-Encoding: chunked) is not read by this libwebsockets:
       * refuse it at once rather than leave the request unanswered. */
      if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0 ||
          lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0)
        return fr__respond_error(
            wsi, pss, 411, "a POST body needs a Content-Length (chunked transfer encoding is not accepted)");
      if (strtoull(cl, NULL, 10) > FR__MAX_BODY)
        return fr__respond_error(wsi, pss, 413, "request body too large (at most 10 MiB)");
      if (strncmp(pss->uri, "/api/", 5) != 0)
        return fr__respond_error(wsi, pss, 404, "POST goes to /api/...");
      return 0; /* the body comes in LWS_CALLBACK_HTTP_BODY */
    }
    if (!strncmp(pss->uri, "/api/", 5) || !strcmp(pss->uri, "/api"))
      return fr__api_get(s, wsi, pss, pss->uri);
    char cookie_hdr[300];
    if (cookie && s->o.token)
      snprintf(cookie_hdr, sizeof cookie_hdr,
               "set-cookie: flowrun_token=%s; Path=/; HttpOnly; SameSite=Strict", s->o.token);
    return fr__serve_static(s, wsi, pss, pss->uri, cookie && s->o.token ? cookie_hdr : NULL);
  }
  case LWS_CALLBACK_HTTP_BODY:
    if (pss->body_too_big || pss->responded)
      return 0;
    if (pss->body.len + len > FR__MAX_BODY) {
      pss->body_too_big = true;
      fr_buf_free(&pss->body);
      return 0;
    }
    fr_buf_append(&pss->body, in, len);
    return 0;
  case LWS_CALLBACK_HTTP_BODY_COMPLETION: {
    int r;
    if (pss->responded)
      return 0;
    pss->close_after = false;
    if (pss->body_too_big)
      r = fr__respond_error(wsi, pss, 413, "request body too large (at most 10 MiB)");
    else if (pss->body.oom)
      r = fr__respond_error(wsi, pss, 500, "out of memory");
    else
      r = fr__api_post(s, wsi, pss);
    fr_buf_free(&pss->body);
    return r;
  }
  case LWS_CALLBACK_HTTP_WRITEABLE: {
    if (pss->pin_job) { /* POST /api/pin: its answer, once the pin thread is done */
      struct fr__pin_job *j = fr__pin_take(s, pss);
      if (!j)
        return 0;
      int r = j->status == 200 ? fr__respond_json(wsi, pss, 200, &j->out)
                               : fr__respond_error(wsi, pss, j->status, j->err.msg);
      fr__pin_job_free(j);
      return r;
    }
    if (!pss->resp)
      return 0;
    size_t left = pss->resp_len - pss->resp_sent, n = left > 32768 ? 32768 : left;
    bool last = n == left;
    /* lws_write may use the LWS_PRE bytes before what it sends: the spare head or bytes already sent. */
    unsigned char *chunk = (unsigned char *)pss->resp + LWS_PRE + pss->resp_sent;
    if (n && lws_write(wsi, chunk, n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) != (int)n)
      return -1;
    pss->resp_sent += n;
    if (!last) {
      lws_callback_on_writable(wsi);
      return 0;
    }
    fr_free(pss->resp);
    pss->resp = NULL;
    if (pss->close_after) /* an answer before the request body was read: the connection cannot go on */
      return -1;
    if (lws_http_transaction_completed(wsi))
      return -1;
    return 0;
  }
  case LWS_CALLBACK_CLOSED_HTTP:
  case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    fr__pin_forget(s, pss);
    fr_free(pss->resp);
    pss->resp = NULL;
    fr_buf_free(&pss->body);
    return 0;

  case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
    char uri[64] = "";
    int status;
    bool cookie;
    if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) <= 0 || strcmp(uri, "/ws") != 0)
      return 1;
    const char *why = fr__check_access(s, wsi, true, &status, &cookie);
    if (why) {
      lwsl_user("flowrun serve: websocket refused: %s\n", why);
      return 1;
    }
    return 0;
  }
  case LWS_CALLBACK_ESTABLISHED: {
    memset(pss, 0, sizeof *pss);
    pss->is_ws = true;
    pthread_mutex_lock(&s->mu);
    pss->next_seq = s->log_next; /* new clients get the current state from the hello, then live events */
    pthread_mutex_unlock(&s->mu);
    struct fr_buf b = {0};
    fr_buf_printf(&b, "{\"event\":\"hello\",\"flowrun\":\"%s\",\"info\":", FLOWRUN_VERSION);
    fr__runs_json(s, &b);
    fr_buf_putc(&b, '}');
    fr__ws_reply(wsi, pss, &b);
    return 0;
  }
  case LWS_CALLBACK_RECEIVE: {
    if (pss->rx.len + len > FR__MAX_WS_MSG) {
      static const char why[] = "message too large";
      lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, (unsigned char *)why, sizeof why - 1);
      return -1;
    }
    fr_buf_append(&pss->rx, in, len);
    if (lws_is_final_fragment(wsi) && !lws_remaining_packet_payload(wsi)) {
      if (lws_frame_is_binary(wsi))
        fr__ws_error(wsi, pss, "binary messages are not understood; send JSON text");
      else
        fr__ws_command(s, wsi, pss);
      fr_buf_free(&pss->rx);
    }
    return 0;
  }
  case LWS_CALLBACK_SERVER_WRITEABLE: {
    if (pss->rq_bytes > FR__WS_MAX) {
      static const char why[] = "too many unread replies";
      lws_close_reason(wsi, LWS_CLOSE_STATUS_POLICY_VIOLATION, (unsigned char *)why, sizeof why - 1);
      return -1;
    }
    if (pss->rq_head) {
      struct fr__reply *r = pss->rq_head;
      if (!(pss->rq_head = r->next))
        pss->rq_tail = NULL;
      pss->rq_bytes -= r->len;
      size_t n = r->len;
      int w = lws_write(wsi, (unsigned char *)r->data + LWS_PRE, n, LWS_WRITE_TEXT);
      fr_free(r);
      if (w < (int)n)
        return -1;
      if (pss->rx_paused && pss->rq_bytes < FR__WS_RESUME) {
        pss->rx_paused = false;
        lws_rx_flow_control(wsi, 1);
      }
      lws_callback_on_writable(wsi);
      return 0;
    }
    pthread_mutex_lock(&s->mu);
    uint64_t oldest = s->log_next > FR__LOG_SIZE ? s->log_next - FR__LOG_SIZE : 0;
    if (pss->next_seq < oldest)
      pss->next_seq = oldest; /* a client too slow for the log skips what it missed */
    if (pss->next_seq >= s->log_next) {
      pthread_mutex_unlock(&s->mu);
      return 0;
    }
    struct fr__msg *m = &s->log[pss->next_seq % FR__LOG_SIZE];
    size_t n = m->len;
    char *copy = fr_malloc(LWS_PRE + n);
    if (copy)
      memcpy(copy + LWS_PRE, m->data + LWS_PRE, n);
    pss->next_seq++;
    bool more = pss->next_seq < s->log_next;
    pthread_mutex_unlock(&s->mu);
    if (copy) {
      int w = lws_write(wsi, (unsigned char *)copy + LWS_PRE, n, LWS_WRITE_TEXT);
      fr_free(copy);
      if (w < (int)n)
        return -1;
    }
    if (more)
      lws_callback_on_writable(wsi);
    return 0;
  }
  case LWS_CALLBACK_CLOSED:
    fr__ws_free_replies(pss);
    fr_buf_free(&pss->rx);
    return 0;
  case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
    lws_callback_on_writable_all_protocol(lws_get_context(wsi), &fr__protocols[0]);
    fr__pin_wake(s);
    return 0;
  default: break;
  }
  return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols fr__protocols[2] = {
    {"flowrun", fr__callback, sizeof(struct fr__pss), 4096, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* Metrics read at each scrape: the queue and what runs. */
static void fr__collect(void *user, struct fr_metrics *m) {
  struct fr__srv *s = user;
  pthread_mutex_lock(&s->mu);
  int queued = s->n_queued, running = s->n_running;
  pthread_mutex_unlock(&s->mu);
  fr_metrics_set(m, "flowrun_queue_depth", NULL, queued);
  fr_metrics_set(m, "flowrun_runs_running", NULL, running);
  fr_metrics_set(m, "flowrun_runners", NULL, s->n_runners);
}

/* While draining, wakes the service loop a few times a second so that it sees the deadline. */
static void *fr__ticker(void *arg) {
  struct fr__srv *s = arg;
  for (;;) {
    pthread_mutex_lock(&s->mu);
    bool stop = s->stopping;
    pthread_mutex_unlock(&s->mu);
    if (stop)
      return NULL;
    lws_cancel_service(s->ctx);
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

static void fr__on_signal(int sig) {
  (void)sig;
  fr__interrupted = fr__interrupted < 2 ? fr__interrupted + 1 : 2; /* a second signal: cancel now */
  if (fr__g && fr__g->ctx)
    lws_cancel_service(fr__g->ctx);
}

/* Adds a name the Host header may carry (lower case; an IPv6 address in brackets), once. */
static void fr__add_host(struct fr__srv *s, const char *name) {
  char h[300];
  if (!name || !*name || strlen(name) > 255)
    return;
  snprintf(h, sizeof h, strchr(name, ':') && name[0] != '[' ? "[%s]" : "%s", name);
  for (char *c = h; *c; c++)
    *c = (char)tolower((unsigned char)*c);
  for (int i = 0; i < s->n_hosts; i++)
    if (!strcmp(s->hosts[i], h))
      return;
  char **nh = fr_realloc(s->hosts, (size_t)(s->n_hosts + 1) * sizeof *nh);
  if (!nh)
    return;
  s->hosts = nh;
  if ((s->hosts[s->n_hosts] = fr_strdup(h)))
    s->n_hosts++;
}

/* The Host names answered: localhost, 127.0.0.1, [::1], --host as given and as the address bound,
 * --allow-host, and for a wildcard bind (0.0.0.0, ::) this machine's addresses and name. */
static void fr__build_hosts(struct fr__srv *s, bool wildcard) {
  fr__add_host(s, "localhost");
  fr__add_host(s, "127.0.0.1");
  fr__add_host(s, "::1");
  fr__add_host(s, s->o.host);
  fr__add_host(s, s->bind_addr);
  for (int i = 0; i < s->o.n_allow_hosts; i++)
    fr__add_host(s, s->o.allow_hosts[i]);
  if (!wildcard)
    return;
  struct ifaddrs *ifs = NULL;
  if (getifaddrs(&ifs) == 0) {
    for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
      char a[INET6_ADDRSTRLEN + 8];
      if (!i->ifa_addr || (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6))
        continue;
      socklen_t n =
          i->ifa_addr->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
      if (getnameinfo(i->ifa_addr, n, a, sizeof a, NULL, 0, NI_NUMERICHOST) == 0 && !strchr(a, '%'))
        fr__add_host(s, a);
    }
    freeifaddrs(ifs);
  }
  char me[256];
  if (gethostname(me, sizeof me) == 0) {
    me[sizeof me - 1] = 0;
    fr__add_host(s, me);
  }
}

/* Resolves --host to the numeric address to listen on (s->bind_addr), sets s->loopback, and makes sure
 * this machine can listen there, so that a bad --host fails now rather than giving a server that prints a
 * URL and never answers. Shorthand numbers that inet_aton would take (127.1, 0x7f000001, 2130706433) are
 * refused: they are no address a browser puts in its Host header, and libwebsockets cannot bind them. */
static enum fr_status fr__resolve_host(struct fr__srv *s, bool *wildcard, struct fr_err *err) {
  const char *h = s->o.host;
  unsigned char tmp[16];
  bool numeric = inet_pton(AF_INET, h, tmp) == 1 || inet_pton(AF_INET6, h, tmp) == 1;
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (!numeric) {
    hints.ai_flags = AI_NUMERICHOST;
    if (getaddrinfo(h, NULL, &hints, &res) == 0) {
      freeaddrinfo(res);
      return fr_errf(
          err, FR_E_INVALID,
          "--host %s: not an address in full form (an IPv4 address is four numbers, e.g. 127.0.0.1)", h);
    }
    hints.ai_flags = 0;
  }
  int gai = getaddrinfo(h, NULL, &hints, &res);
  if (gai != 0)
    return fr_errf(err, FR_E_INVALID, "--host %s: does not resolve to an address (%s)", h, gai_strerror(gai));
  struct addrinfo *pick = res; /* IPv4 first: what "localhost" means to most clients */
  for (struct addrinfo *a = res; a; a = a->ai_next)
    if (a->ai_family == AF_INET) {
      pick = a;
      break;
    }
  enum fr_status rc = FR_OK;
  if (getnameinfo(pick->ai_addr, pick->ai_addrlen, s->bind_addr, sizeof s->bind_addr, NULL, 0,
                  NI_NUMERICHOST) != 0) {
    rc = fr_errf(err, FR_E_INVALID, "--host %s: cannot use its address", h);
  } else {
    if (pick->ai_family == AF_INET) {
      const struct sockaddr_in *in = (const void *)pick->ai_addr;
      uint32_t a = ntohl(in->sin_addr.s_addr);
      s->loopback = (a >> 24) == 127;
      *wildcard = a == 0;
    } else {
      const struct sockaddr_in6 *in = (const void *)pick->ai_addr;
      s->loopback = IN6_IS_ADDR_LOOPBACK(&in->sin6_addr);
      *wildcard = IN6_IS_ADDR_UNSPECIFIED(&in->sin6_addr);
    }
    /* A trial bind on any port: EADDRNOTAVAIL means the address is not one of this machine's. */
    int fd = socket(pick->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_storage sa;
    memcpy(&sa, pick->ai_addr, pick->ai_addrlen);
    if (pick->ai_family == AF_INET)
      ((struct sockaddr_in *)&sa)->sin_port = 0;
    else
      ((struct sockaddr_in6 *)&sa)->sin6_port = 0;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, pick->ai_addrlen) != 0)
      rc = fr_errf(err, FR_E_IO, "--host %s (%s): cannot listen there: %s", h, s->bind_addr,
                   errno == EADDRNOTAVAIL ? "not an address of this machine" : strerror(errno));
    if (fd >= 0)
      close(fd);
  }
  freeaddrinfo(res);
  return rc;
}

/* Makes dir if missing, then its realpath into out. */
static enum fr_status fr__folder(const char *what, const char *dir, bool create, char out[PATH_MAX],
                                 struct fr_err *err) {
  if (create)
    mkdir(dir, 0755);
  struct stat st;
  if (!realpath(dir, out) || stat(out, &st) != 0 || !S_ISDIR(st.st_mode))
    return fr_errf(err, FR_E_NOTFOUND, "%s folder %s: %s", what, dir,
                   errno ? strerror(errno) : "not a folder");
  return FR_OK;
}

/* The built editor: --editor, else $FLOWRUN_EDITOR, else web/dist in the current folder, else the installed
 * one (PREFIX/share/flowrun/editor beside PREFIX/bin) or the source tree's web/dist (core/paths.h). */
static bool fr__find_editor(struct fr__srv *s) {
  const char *cands[4] = {s->o.editor_dir, s->o.editor_dir ? NULL : getenv("FLOWRUN_EDITOR"), NULL, NULL};
  char data[PATH_MAX] = "";
  if (!s->o.editor_dir) {
    cands[2] = "web/dist";
    if (fr_data_path("editor/index.html", "web/dist/index.html", data, sizeof data)) {
      data[strlen(data) - strlen("/index.html")] = 0;
      cands[3] = data;
    }
  }
  for (int i = 0; i < 4; i++) {
    char idx[PATH_MAX + 16];
    if (!cands[i])
      continue;
    snprintf(idx, sizeof idx, "%s/index.html", cands[i]);
    if (access(idx, R_OK) == 0 && realpath(cands[i], s->editor_real))
      return true;
    if (i == 0)
      return false; /* an explicit --editor that is not there: say so rather than guess */
  }
  return false;
}

enum fr_status fr_serve(const struct fr_serve_opts *opts, struct fr_err *err) {
  struct fr__srv *s = fr_calloc(1, sizeof *s);
  if (!s)
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  s->o = *opts;
  bool ticker = false; /* the drain's ticker thread runs */
  pthread_t ticker_th;
  if (!s->o.host)
    s->o.host = "127.0.0.1";
  if (!s->o.graphs_dir)
    s->o.graphs_dir = "graphs";
  if (!s->o.output_dir)
    s->o.output_dir = "output";
  s->max_queue = s->o.max_queue > 0 ? s->o.max_queue : FR__QUEUE_RUNS;
  s->max_queue_bytes = (size_t)(s->o.max_queue_bytes > 0 ? s->o.max_queue_bytes : FR__QUEUE_BYTES);
  bool wildcard = false;
  enum fr_status rc = fr__resolve_host(s, &wildcard, err);
  if (rc != FR_OK)
    goto out;
  fr__build_hosts(s, wildcard);
  if (!s->loopback && (!s->o.token || !*s->o.token)) {
    rc = fr_errf(err, FR_E_INVALID, "--host %s is not a loopback address: --token is required", s->o.host);
    goto out;
  }
  if (s->o.token &&
      (strlen(s->o.token) < 8 || strlen(s->o.token) > 200 || strpbrk(s->o.token, " ;,\"\r\n"))) {
    rc = fr_errf(err, FR_E_INVALID, "--token: 8 to 200 characters, without spaces, quotes, ';' or ','");
    goto out;
  }
  if ((rc = fr__folder("graphs", s->o.graphs_dir, false, s->graphs_real, err)) != FR_OK ||
      (rc = fr__folder("output", s->o.output_dir, true, s->output_real, err)) != FR_OK ||
      (s->o.input_dir && (rc = fr__folder("input", s->o.input_dir, false, s->input_real, err)) != FR_OK))
    goto out;
  /* What a graph sent here may read: the graphs folder, the input folder, the model folders. */
  s->roots[s->n_roots++] = s->graphs_real;
  if (s->o.input_dir) {
    s->roots[s->n_roots++] = s->input_real;
    s->input_dirs[s->n_input_dirs++] = s->input_real;
  }
  for (int i = 0; i < s->o.n_model_dirs && s->n_roots < (int)(sizeof s->roots / sizeof *s->roots); i++)
    s->roots[s->n_roots++] = s->o.model_dirs[i];
  char tdir[PATH_MAX];
  if ((rc = fr__folder("temp", s->o.temp_dir ? s->o.temp_dir : fr_default_temp_dir(tdir, sizeof tdir), true,
                       s->temp_real, err)) != FR_OK)
    goto out;
  s->have_editor = fr__find_editor(s);
  if (s->o.editor_dir && !s->have_editor) {
    rc = fr_errf(err, FR_E_NOTFOUND, "--editor %s: no index.html there (build the editor first)",
                 s->o.editor_dir);
    goto out;
  }

  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  pthread_cond_init(&s->pin_cv, NULL);
  atomic_init(&s->pin_cancel, 0);
  fr_ops_ready_init(&s->ready, !s->o.no_cache, s->o.db != NULL);
  static const double wait_buckets[] = {0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800};
  if (!(s->metrics = fr_metrics_new())) {
    rc = fr_errf(err, FR_E_NOMEM, "out of memory");
    goto out_sync;
  }
  if ((rc = fr_ops_metrics_init(s->metrics, err)) != FR_OK ||
      (rc = fr_metrics_define(s->metrics, "flowrun_queue_depth", FR_METRIC_GAUGE,
                              "Runs waiting in the queue.", NULL, NULL, 0, err)) != FR_OK ||
      (rc = fr_metrics_define(s->metrics, "flowrun_runs_running", FR_METRIC_GAUGE, "Runs running now.", NULL,
                              NULL, 0, err)) != FR_OK ||
      (rc = fr_metrics_define(s->metrics, "flowrun_runners", FR_METRIC_GAUGE,
                              "Runs that may run at once (--max-concurrent-runs).", NULL, NULL, 0, err)) !=
          FR_OK ||
      (rc = fr_metrics_define(s->metrics, "flowrun_queue_wait_seconds", FR_METRIC_HISTOGRAM,
                              "Time runs waited in the queue before they started.", NULL, wait_buckets,
                              (int)(sizeof wait_buckets / sizeof wait_buckets[0]), err)) != FR_OK ||
      (rc = fr_metrics_define(s->metrics, "flowrun_submissions_rejected_total", FR_METRIC_COUNTER,
                              "Submissions refused, by reason (queue_full, rate_limited, shutting_down).",
                              "reason", NULL, 0, err)) != FR_OK)
    goto out_sync;
  fr_metrics_add_collector(s->metrics, fr__collect, s);
  s->n_runners = s->o.db ? 0 : s->o.max_concurrent_runs > 0 ? s->o.max_concurrent_runs : 1;
  if (s->n_runners > FR__MAX_RUNNERS) {
    rc = fr_errf(err, FR_E_INVALID, "--max-concurrent-runs %d: at most %d", s->n_runners, FR__MAX_RUNNERS);
    goto out_sync;
  }
  for (int i = 0; i < s->n_runners; i++) {
    struct fr__runner *rn = &s->runners[i];
    rn->s = s;
    rn->ml.m = s->metrics;
    struct fr_engine_opts eo = {
        .registry = fr_builtin_registry(),
        .cache_path = s->o.cache_path,
        .no_cache = s->o.no_cache,
        .model_dirs = s->o.model_dirs,
        .n_model_dirs = s->o.n_model_dirs,
        .input_dirs = s->input_dirs,
        .n_input_dirs = s->n_input_dirs,
        .read_roots = s->roots,
        .n_read_roots = s->n_roots,
        .output_dir = s->output_real,
        .temp_dir = s->temp_real,
        .device = s->o.device,
        .dtype = s->o.dtype,
        .threads = s->o.threads,
        .on_event = fr__on_event,
        .user = rn,
    };
    if ((rc = fr_engine_new(&eo, &rn->engine, err)) != FR_OK)
      goto out_engine;
    fr_ops_engine_update(s->metrics, &s->ready, rn->engine, &rn->seen);
  }
  if (s->o.db && s->o.no_cache)
    atomic_store(&s->ready.cache_wanted, false);

  lws_set_log_level(LLL_ERR, NULL);
  struct lws_context_creation_info info;
  memset(&info, 0, sizeof info);
  info.port = s->o.port;
  info.iface = wildcard ? NULL : s->bind_addr;
  info.protocols = fr__protocols;
  info.user = s;
  info.max_http_header_data = 8192;
  info.timeout_secs = 30;
  info.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
  s->ctx = lws_create_context(&info);
  if (!s->ctx) {
    rc = fr_errf(err, FR_E_IO, "cannot listen on %s:%d (in use, or not an address of this machine)",
                 s->o.host, s->o.port);
    goto out_engine;
  }
  struct lws_vhost *vh = lws_get_vhost_by_name(s->ctx, "default");
  int port = vh ? lws_get_vhost_listen_port(vh) : 0;
  if (port <= 0) { /* libwebsockets made the context but could not listen */
    rc = fr_errf(err, FR_E_IO, "cannot listen on %s:%d", s->bind_addr, s->o.port);
    goto out_ctx;
  }
  s->fleet_wake[0] = s->fleet_wake[1] = -1;
  if (s->o.db) {
#ifdef FLOWRUN_HAVE_PG
    if (pipe(s->fleet_wake) != 0) {
      rc = fr_errf(err, FR_E_IO, "cannot make a pipe: %s", strerror(errno));
      goto out_ctx;
    }
    fcntl(s->fleet_wake[0], F_SETFL, O_NONBLOCK);
    if (pthread_create(&s->worker, NULL, fr__fleet_main, s) != 0) {
      rc = fr_errf(err, FR_E_INTERNAL, "cannot start the fleet thread");
      goto out_threads;
    }
    s->worker_started = true;
#else
    rc = fr_errf(err, FR_E_UNSUPPORTED, "--db: this flowrun was built without PostgreSQL support (libpq)");
    goto out_ctx;
#endif
  }
  for (int i = 0; i < s->n_runners; i++) {
    if (pthread_create(&s->runners[i].th, NULL, fr__worker_main, &s->runners[i]) != 0) {
      rc = fr_errf(err, FR_E_INTERNAL, "cannot start the worker thread");
      goto out_threads;
    }
    s->runners[i].started = true;
  }
  if (pthread_create(&s->pin_th, NULL, fr__pin_main, s) != 0) {
    rc = fr_errf(err, FR_E_INTERNAL, "cannot start the pin thread");
    goto out_threads;
  }
  s->pin_started = true;

  printf("flowrun serve: http://%s%s%s:%d/%s%s\n", strchr(s->o.host, ':') ? "[" : "", s->o.host,
         strchr(s->o.host, ':') ? "]" : "", port, s->o.token ? "?token=" : "", s->o.token ? s->o.token : "");
  if (!s->have_editor)
    printf("flowrun serve: the editor was not built (npm ci --prefix web/editor && npm run build --prefix "
           "web/editor); the API and /ws work without it\n");
  fflush(stdout);

  fr__g = s;
  struct sigaction sa, old_int, old_term;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = fr__on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  signal(SIGPIPE, SIG_IGN);
  /* Serve until a signal; then drain: refuse new runs, let the running ones finish until the deadline,
   * cancel them then (or at a second signal), and leave when none is running. */
  double timeout = s->o.shutdown_timeout == 0 ? 30 : s->o.shutdown_timeout, deadline = 0;
  bool cancelled = false;
  while (lws_service(s->ctx, 0) >= 0) {
    if (!fr__interrupted)
      continue;
    if (!deadline) {
      deadline = fr__mono_s() + (timeout > 0 ? timeout : 0);
      pthread_mutex_lock(&s->mu);
      s->draining = true;
      int running = s->n_running;
      pthread_cond_broadcast(&s->cv);
      pthread_mutex_unlock(&s->mu);
      atomic_store(&s->ready.draining, true);
      ticker = pthread_create(&ticker_th, NULL, fr__ticker, s) == 0;
      fprintf(stderr,
              "flowrun serve: shutting down: taking no new runs; %d running, cancelled in %.0f s if not "
              "done\n",
              running, timeout > 0 ? timeout : 0);
      fflush(stderr);
    }
    pthread_mutex_lock(&s->mu);
    int running = s->n_running;
    if (running && !cancelled && (fr__interrupted > 1 || fr__mono_s() >= deadline)) {
      cancelled = true;
      for (int i = 0; i < s->n_runners; i++)
        if (s->runners[i].current)
          fr_engine_cancel(s->runners[i].engine);
      fprintf(stderr, "flowrun serve: shutting down: cancelling the %d running run%s\n", running,
              running == 1 ? "" : "s");
      fflush(stderr);
    }
    pthread_mutex_unlock(&s->mu);
    if (!running)
      break;
  }
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);

out_threads:
  /* Shut down: stop the running graphs, let the threads finish, then drop the connections. */
  pthread_mutex_lock(&s->mu);
  s->stopping = true;
  for (int i = 0; i < s->n_runners; i++)
    if (s->runners[i].current)
      fr_engine_cancel(s->runners[i].engine);
  pthread_cond_broadcast(&s->cv);
  atomic_store(&s->pin_cancel, 1);
  pthread_cond_broadcast(&s->pin_cv);
  pthread_mutex_unlock(&s->mu);
  fr__fleet_wake(s);
  if (s->pin_started)
    pthread_join(s->pin_th, NULL);
  for (int i = 0; i < s->n_runners; i++)
    if (s->runners[i].started)
      pthread_join(s->runners[i].th, NULL);
  if (s->worker_started)
    pthread_join(s->worker, NULL);
  if (ticker)
    pthread_join(ticker_th, NULL);
  if (s->fleet_wake[0] >= 0) {
    close(s->fleet_wake[0]);
    close(s->fleet_wake[1]);
  }
out_ctx:
  lws_context_destroy(s->ctx);
  s->ctx = NULL;
  fr__g = NULL;
out_engine:
  for (int i = 0; i < s->n_runners; i++)
    fr_engine_free(s->runners[i].engine); /* closes each cache connection cleanly */
out_sync:
  fr_metrics_free(s->metrics);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
  pthread_cond_destroy(&s->pin_cv);
out:
  fr_cache_close(s->pin_cache);
  fr_fp_memo_free(&s->pin_memo);
  for (struct fr__pin_job **l = &s->pin_queue; l; l = l == &s->pin_queue ? &s->pin_done : NULL)
    while (*l) { /* jobs left at shutdown */
      struct fr__pin_job *j = *l;
      *l = j->next;
      fr__pin_job_free(j);
    }
  while (s->runs) {
    struct fr__run *r = s->runs;
    s->runs = r->next;
    fr__run_free(r);
  }
  for (int i = 0; i < FR__LOG_SIZE; i++)
    fr_free(s->log[i].data);
  for (int i = 0; i < s->n_hosts; i++)
    fr_free(s->hosts[i]);
  fr_free(s->hosts);
  fr_free(s);
  return rc;
}
