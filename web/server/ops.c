/* Operations endpoints shared by serve and worker (see ops.h and docs/operations.md). */
#include "web/server/ops.h"

#include <libwebsockets.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "kernels/ops.h"
#include "nodes/pipeline/pipeline.h"

void fr_ops_ready_init(struct fr_ops_ready *r, bool cache_wanted, bool db_used) {
  atomic_init(&r->cache_mode, 0);
  atomic_init(&r->cache_wanted, cache_wanted);
  atomic_init(&r->db_used, db_used);
  atomic_init(&r->db_ok, true);
  atomic_init(&r->device_ok, true);
  atomic_init(&r->draining, false);
}

int fr_ops_readyz(const struct fr_ops_ready *r, struct fr_buf *b) {
  const char *why = NULL;
  int mode = atomic_load(&r->cache_mode);
  if (atomic_load(&r->draining))
    why = "shutting down: finishing the current run, taking no new ones";
  else if (atomic_load(&r->db_used) && !atomic_load(&r->db_ok))
    why = "the database cannot be reached";
  else if (atomic_load(&r->cache_wanted) && mode == 1)
    why = "the cache cannot be written (read-only file or file system, or the disk is full)";
  else if (atomic_load(&r->cache_wanted) && mode == 2)
    why = "the cache could not be opened";
  else if (!atomic_load(&r->device_ok))
    why = "the compute device is not usable";
  fr_buf_puts(b, why ? "not ready: " : "ready\n");
  if (why) {
    fr_buf_puts(b, why);
    fr_buf_putc(b, '\n');
  }
  return why ? 503 : 200;
}

static void fr__rss(void *user, struct fr_metrics *m) {
  (void)user;
  int64_t rss = fr_metrics_process_rss();
  if (rss >= 0)
    fr_metrics_set(m, "flowrun_process_resident_memory_bytes", NULL, (double)rss);
}

enum fr_status fr_ops_metrics_init(struct fr_metrics *m, struct fr_err *err) {
  static const struct {
    const char *name, *help, *label;
    enum fr_metric_kind kind;
  } defs[] = {
      {"flowrun_cache_bytes", "Bytes of values in the node cache (SQLite), as of the last run's end.", NULL,
       FR_METRIC_GAUGE},
      {"flowrun_cache_entries", "Entries in the node cache, as of the last run's end.", NULL,
       FR_METRIC_GAUGE},
      {"flowrun_cache_max_bytes", "The node cache's size limit (-1: unlimited).", NULL, FR_METRIC_GAUGE},
      {"flowrun_cache_writable", "1 when the node cache can be written, 0 when read-only or off.", NULL,
       FR_METRIC_GAUGE},
      {"flowrun_cache_evictions_total", "Cache entries evicted to keep the size limit.", NULL,
       FR_METRIC_COUNTER},
      {"flowrun_models_resident", "Model components loaded in the model cache, by component type.", "type",
       FR_METRIC_GAUGE},
      {"flowrun_model_resident_bytes",
       "Size of each model file with a component loaded in the model cache (its weights as stored; held in "
       "device memory on cuda, mapped from the file on the cpu; 0 for a diffusers folder).",
       "model", FR_METRIC_GAUGE},
      {"flowrun_oom_total", "Node runs that ran out of memory (host or device).", NULL, FR_METRIC_COUNTER},
      {"flowrun_oom_recovered_total", "Of those, retried after memory was released and then succeeded.", NULL,
       FR_METRIC_COUNTER},
      {"flowrun_oom_failed_total", "Of those, ran out of memory again on the retry (the run failed).", NULL,
       FR_METRIC_COUNTER},
      {"flowrun_oom_released_bytes_total", "Bytes the out-of-memory recovery released (models, pools).", NULL,
       FR_METRIC_COUNTER},
      {"flowrun_models_cached_bytes",
       "Bytes of the models the engines keep cached (as their memory hooks tell).", NULL, FR_METRIC_GAUGE},
      {"flowrun_device_memory_used_bytes", "Device memory held by tensors now (cuda only).", NULL,
       FR_METRIC_GAUGE},
      {"flowrun_device_pool_cached_bytes", "Device memory the allocator's pool keeps for reuse (cuda only).",
       NULL, FR_METRIC_GAUGE},
      {"flowrun_device_memory_peak_bytes", "Peak device memory in use since start (cuda only).", NULL,
       FR_METRIC_GAUGE},
  };
  for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) {
    enum fr_status rc =
        fr_metrics_define(m, defs[i].name, defs[i].kind, defs[i].help, defs[i].label, NULL, 0, err);
    if (rc)
      return rc;
  }
  if (!fr_metrics_add_collector(m, fr__rss, NULL))
    return fr_errf(err, FR_E_INTERNAL, "too many metric collectors");
  return FR_OK;
}

struct fr__res_count {
  struct fr_metrics *m;
};

static void fr__resident(void *user, const char *type, const char *file, int64_t bytes) {
  struct fr__res_count *c = user;
  fr_metrics_add(c->m, "flowrun_models_resident", type, 1);
  fr_metrics_set(c->m, "flowrun_model_resident_bytes", file, bytes > 0 ? (double)bytes : 0);
}

void fr_ops_engine_update(struct fr_metrics *m, struct fr_ops_ready *r, struct fr_engine *e,
                          struct fr_ops_seen *seen) {
  struct fr_engine_cache_info ci;
  fr_engine_cache_info(e, &ci);
  if (r)
    atomic_store(&r->cache_mode, ci.mode);
  fr_metrics_set(m, "flowrun_cache_bytes", NULL, (double)ci.bytes);
  fr_metrics_set(m, "flowrun_cache_entries", NULL, (double)ci.entries);
  fr_metrics_set(m, "flowrun_cache_max_bytes", NULL, (double)ci.max_bytes);
  fr_metrics_set(m, "flowrun_cache_writable", NULL, ci.mode == 0 ? 1 : 0);
  if (ci.evictions > seen->evictions) {
    fr_metrics_add(m, "flowrun_cache_evictions_total", NULL, (double)(ci.evictions - seen->evictions));
    seen->evictions = ci.evictions;
  }
  struct fr_oom_stats oom;
  fr_engine_oom_stats(e, &oom);
  fr_metrics_add(m, "flowrun_oom_total", NULL, (double)(oom.oom - seen->oom.oom));
  fr_metrics_add(m, "flowrun_oom_recovered_total", NULL, (double)(oom.recovered - seen->oom.recovered));
  fr_metrics_add(m, "flowrun_oom_failed_total", NULL, (double)(oom.failed - seen->oom.failed));
  fr_metrics_add(m, "flowrun_oom_released_bytes_total", NULL,
                 (double)(oom.released_bytes - seen->oom.released_bytes));
  seen->oom = oom;
  struct fr_mem_report mr = {0};
  fr_engine_memory(e, &mr);
  fr_metrics_add(m, "flowrun_models_cached_bytes", NULL, (double)mr.model_bytes - (double)seen->model_bytes);
  seen->model_bytes = mr.model_bytes;
  /* what is resident now: the families are rebuilt (a model freed since is gone from them) */
  fr_metrics_reset(m, "flowrun_models_resident");
  fr_metrics_reset(m, "flowrun_model_resident_bytes");
  struct fr__res_count c = {m};
  fr_pipe_engine_resident(e, fr__resident, &c);
  struct fr_ctx_mem mem;
  if (fr_pipe_engine_mem(e, &mem) == FR_OK) {
    fr_metrics_set(m, "flowrun_device_memory_used_bytes", NULL, (double)mem.in_use);
    fr_metrics_set(m, "flowrun_device_pool_cached_bytes", NULL, (double)mem.cached);
    fr_metrics_set(m, "flowrun_device_memory_peak_bytes", NULL, (double)mem.peak);
  }
}

void fr_ops_device_check(struct fr_ops_ready *r, const char *device, enum fr_status rc) {
  if (!r)
    return;
  if (rc == FR_OK) {
    atomic_store(&r->device_ok, true);
    return;
  }
  if (rc != FR_E_DEVICE || !device || strcmp(device, "cuda") != 0)
    return;
  struct fr_ctx *c = NULL;
  struct fr_err err;
  bool ok =
      fr_ctx_new(&(struct fr_ctx_opts){.device = "cuda", .dtype = FR_F32, .threads = 1}, &c, &err) == FR_OK;
  fr_ctx_free(c);
  atomic_store(&r->device_ok, ok);
  if (!ok)
    fprintf(stderr, "flowrun: the cuda device is not usable after a failed run: %s\n", err.msg);
}

bool fr_ops_parse_rate(const char *v, double *per_s, int *burst) {
  char *end;
  long n = strtol(v, &end, 10);
  if (end == v || n < 1 || n > 100000)
    return false;
  if (!strcmp(end, "/s"))
    *per_s = (double)n;
  else if (!strcmp(end, "/min"))
    *per_s = (double)n / 60.0;
  else
    return false;
  *burst = (int)n;
  return true;
}

/* ---- the worker's listener ---------------------------------------------------------------------------- */

struct fr_ops_http {
  struct lws_context *ctx;
  struct fr_metrics *m;
  struct fr_ops_ready *r;
  pthread_t th;
  atomic_bool stop;
};

struct fr__opss {
  char *resp; /* LWS_PRE + body */
  size_t len;
};

static int fr__ops_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len) {
  struct fr__opss *ps = user;
  struct fr_ops_http *h = lws_context_user(lws_get_context(wsi));
  switch (reason) {
  case LWS_CALLBACK_HTTP: {
    const char *uri = in ? in : "/";
    struct fr_buf b = {0};
    int status = 200;
    const char *type = "text/plain; charset=utf-8";
    if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) <= 0) {
      status = 405;
      fr_buf_puts(&b, "only GET\n");
    } else if (!strcmp(uri, "/healthz")) {
      fr_buf_puts(&b, "ok\n");
    } else if (!strcmp(uri, "/readyz")) {
      status = fr_ops_readyz(h->r, &b);
    } else if (!strcmp(uri, "/metrics")) {
      fr_metrics_render(h->m, &b);
      type = "text/plain; version=0.0.4; charset=utf-8";
    } else {
      status = 404;
      fr_buf_puts(&b, "not found: this listener answers GET /healthz, /readyz and /metrics\n");
    }
    if (b.oom) {
      fr_buf_free(&b);
      return -1;
    }
    ps->len = b.len;
    ps->resp = fr_malloc(LWS_PRE + b.len + 1);
    if (!ps->resp) {
      fr_buf_free(&b);
      return -1;
    }
    if (b.len)
      memcpy(ps->resp + LWS_PRE, b.data, b.len);
    fr_buf_free(&b);
    unsigned char hdr[LWS_PRE + 512], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof hdr - 1;
    if (lws_add_http_common_headers(wsi, (unsigned)status, type, ps->len, &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
      return 1;
    lws_callback_on_writable(wsi);
    return 0;
  }
  case LWS_CALLBACK_HTTP_WRITEABLE: {
    if (!ps || !ps->resp)
      return 0;
    int w = ps->len ? lws_write(wsi, (unsigned char *)ps->resp + LWS_PRE, ps->len, LWS_WRITE_HTTP_FINAL) : 0;
    fr_free(ps->resp);
    ps->resp = NULL;
    if (w < (int)ps->len || lws_http_transaction_completed(wsi))
      return -1;
    return 0;
  }
  case LWS_CALLBACK_CLOSED_HTTP:
  case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
    if (ps) {
      fr_free(ps->resp);
      ps->resp = NULL;
    }
    return 0;
  default: break;
  }
  return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols fr__ops_protocols[2] = {
    {"flowrun-ops", fr__ops_cb, sizeof(struct fr__opss), 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void *fr__ops_main(void *arg) {
  struct fr_ops_http *h = arg;
  while (!atomic_load(&h->stop) && lws_service(h->ctx, 0) >= 0) {
  }
  return NULL;
}

enum fr_status fr_ops_http_start(const char *addr, struct fr_metrics *m, struct fr_ops_ready *r,
                                 struct fr_ops_http **out, int *port, struct fr_err *err) {
  *out = NULL;
  char host[128];
  const char *colon = addr ? strrchr(addr, ':') : NULL;
  char *end = NULL;
  long p = colon ? strtol(colon + 1, &end, 10) : -1;
  if (!colon || colon == addr || (size_t)(colon - addr) >= sizeof host || !end || *end || end == colon + 1 ||
      p < 0 || p > 65535)
    return fr_errf(err, FR_E_INVALID, "--http %s: expected ADDRESS:PORT, e.g. 127.0.0.1:9100",
                   addr ? addr : "");
  snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
  if (host[0] == '[' && host[strlen(host) - 1] == ']') { /* [::1]:9100 */
    memmove(host, host + 1, strlen(host));
    host[strlen(host) - 1] = 0;
  }
  struct fr_ops_http *h = fr_calloc(1, sizeof *h);
  if (!h)
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  h->m = m;
  h->r = r;
  atomic_init(&h->stop, false);
  struct lws_context_creation_info info;
  memset(&info, 0, sizeof info);
  info.port = (int)p;
  info.iface = host;
  info.protocols = fr__ops_protocols;
  info.user = h;
  info.timeout_secs = 10;
  lws_set_log_level(LLL_ERR, NULL);
  h->ctx = lws_create_context(&info);
  struct lws_vhost *vh = h->ctx ? lws_get_vhost_by_name(h->ctx, "default") : NULL;
  int bound = vh ? lws_get_vhost_listen_port(vh) : 0;
  if (!h->ctx || bound <= 0) {
    if (h->ctx)
      lws_context_destroy(h->ctx);
    fr_free(h);
    return fr_errf(err, FR_E_IO, "--http %s: cannot listen there (in use, or not an address of this machine)",
                   addr);
  }
  if (pthread_create(&h->th, NULL, fr__ops_main, h) != 0) {
    lws_context_destroy(h->ctx);
    fr_free(h);
    return fr_errf(err, FR_E_INTERNAL, "cannot start the HTTP thread");
  }
  *port = bound;
  *out = h;
  return FR_OK;
}

void fr_ops_http_stop(struct fr_ops_http *h) {
  if (!h)
    return;
  atomic_store(&h->stop, true);
  lws_cancel_service(h->ctx);
  pthread_join(h->th, NULL);
  lws_context_destroy(h->ctx);
  fr_free(h);
}
