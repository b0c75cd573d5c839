/* What `flowrun serve` and `flowrun worker` share for operations (docs/operations.md): the readiness state
 * behind /readyz, the metrics an engine's owner sets after each run (cache, device memory), and for the
 * worker a small HTTP listener answering GET /healthz, /readyz and /metrics. */
#ifndef FR_WEB_OPS_H
#define FR_WEB_OPS_H

#include <stdatomic.h>
#include <stdbool.h>

#include "core/buf.h"
#include "core/flowrun.h"
#include "core/metrics.h"

/* Readiness: every field is set by the thread that knows it and read by the HTTP thread. */
struct fr_ops_ready {
  atomic_int cache_mode;    /* fr_engine_cache_info.mode: 0 writable, 1 read-only, 2 off */
  atomic_bool cache_wanted; /* false with --no-cache: an off cache is then what was asked for */
  atomic_bool db_used, db_ok;
  atomic_bool device_ok;
  atomic_bool draining; /* SIGTERM/SIGINT came: finishing, taking nothing new */
};
void fr_ops_ready_init(struct fr_ops_ready *r, bool cache_wanted, bool db_used);

/* 200 "ready" or 503 with the first reason (a sentence naming the part, never a path or data) in b. */
int fr_ops_readyz(const struct fr_ops_ready *r, struct fr_buf *b);

/* Defines the families this file sets (cache, device memory) and the process collector (RSS). */
enum fr_status fr_ops_metrics_init(struct fr_metrics *m, struct fr_err *err);

/* What one engine's cumulative figures were at its last update (so that several engines add up). */
struct fr_ops_seen {
  int64_t evictions;
  struct fr_oom_stats oom;
  uint64_t model_bytes;
};

/* After a run (and once at start), on the thread that runs e: the cache's size, entries, limit and
 * evictions, the out-of-memory recoveries and the bytes of cached models (the engine's memory hooks), and
 * on cuda the device memory of the engine's compute contexts; the cache mode goes into r (may be NULL). */
void fr_ops_engine_update(struct fr_metrics *m, struct fr_ops_ready *r, struct fr_engine *e,
                          struct fr_ops_seen *seen);

/* --rate-limit N/s or N/min (N from 1 to 100000): *per_s the refill rate, *burst = N. */
bool fr_ops_parse_rate(const char *v, double *per_s, int *burst);

/* After a run on device ("cpu", "cuda"; NULL: cpu) that ended with rc: a run that worked proves the device
 * usable; one that failed with FR_E_DEVICE on cuda makes a fresh compute context on it (what a sticky CUDA
 * error breaks for the whole process), and device_ok says whether that worked. */
void fr_ops_device_check(struct fr_ops_ready *r, const char *device, enum fr_status rc);

/* The worker's listener: binds host:port ("127.0.0.1:9100"; port 0: any free one, written to *port) and
 * serves on its own thread until fr_ops_http_stop. FR_E_INVALID a bad address, FR_E_IO cannot listen. */
struct fr_ops_http;
enum fr_status fr_ops_http_start(const char *addr, struct fr_metrics *m, struct fr_ops_ready *r,
                                 struct fr_ops_http **out, int *port, struct fr_err *err);
void fr_ops_http_stop(struct fr_ops_http *h);

#endif
