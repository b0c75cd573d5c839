/* Metrics for operating flowrun as a service: a small thread-safe registry of counters, gauges and
 * histograms, rendered in the Prometheus text exposition format 0.0.4 (docs/operations.md lists every
 * metric). The engine knows nothing of it: an event listener (fr_metrics_event) turns engine events into
 * node counters, and the server or worker that owns the engine adds its own (runs, queue, cache, memory).
 *
 * Labels: a family has at most one label (node type, status, model, reason). Its values are bounded: at
 * most FR_METRICS_MAX_SERIES per family; later values are counted under "other", so a client cannot grow
 * the registry without bound. All functions may be called from any thread; a family that was not defined
 * is ignored (a programmer error that must not crash a server). */
#ifndef FR_METRICS_H
#define FR_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/flowrun.h"

#define FR_METRICS_MAX_SERIES 128
#define FR_METRICS_MAX_BUCKETS 24

enum fr_metric_kind { FR_METRIC_COUNTER, FR_METRIC_GAUGE, FR_METRIC_HISTOGRAM };

struct fr_metrics;

/* A collector is called at the start of every fr_metrics_render (on the rendering thread), to set gauges
 * that are read rather than counted (process memory, device memory). */
typedef void (*fr_metrics_collect_fn)(void *user, struct fr_metrics *m);

/* NULL when out of memory. The families of fr_metrics_event are defined already. */
struct fr_metrics *fr_metrics_new(void);
void fr_metrics_free(struct fr_metrics *m);

/* Defines a family. name: [a-zA-Z_:][a-zA-Z0-9_:]*, unique; label: NULL for none, else a label name;
 * buckets: for a histogram, n_buckets strictly increasing upper bounds (the +Inf bucket is implied).
 * FR_E_INVALID for a bad name, a duplicate, or bad buckets; FR_E_NOMEM. */
enum fr_status fr_metrics_define(struct fr_metrics *m, const char *name, enum fr_metric_kind kind,
                                 const char *help, const char *label, const double *buckets, int n_buckets,
                                 struct fr_err *err);

/* Counter: adds v (>= 0); gauge: adds v (either sign). label_value: NULL for a family without a label. */
void fr_metrics_add(struct fr_metrics *m, const char *name, const char *label_value, double v);
/* Gauge: sets the value. */
void fr_metrics_set(struct fr_metrics *m, const char *name, const char *label_value, double v);
/* Histogram: one observation. */
void fr_metrics_observe(struct fr_metrics *m, const char *name, const char *label_value, double v);
/* Gauge: removes every series (a collector that reports what is resident now sets them again). */
void fr_metrics_reset(struct fr_metrics *m, const char *name);
/* The value of a counter or gauge series (0 when absent); for tests and readiness. */
double fr_metrics_get(struct fr_metrics *m, const char *name, const char *label_value);

/* At most 8 collectors; false when full. */
bool fr_metrics_add_collector(struct fr_metrics *m, fr_metrics_collect_fn fn, void *user);

/* Appends the text format (HELP and TYPE lines, then the samples of each family; histograms as
 * _bucket{le=...} cumulative with +Inf, _sum and _count). Families with a label and no series yet show
 * HELP and TYPE only. */
void fr_metrics_render(struct fr_metrics *m, struct fr_buf *b);

/* An engine listener's state: one per engine (it remembers the running node's steps). */
struct fr_metrics_listener {
  struct fr_metrics *m;
  int steps; /* progress steps of the running node */
};
/* Engine event -> metrics (user: a struct fr_metrics_listener *). Counts node executions, cache hits and
 * durations by node type, sampler steps and the last steps/s by node type. Runs are counted by whoever
 * starts them (fr_metrics_run_started/finished): a graph that fails to load emits no engine events. */
void fr_metrics_event(void *user, const struct fr_event *ev);
void fr_metrics_run_started(struct fr_metrics *m);
/* status: "done", "error" or "cancelled"; seconds: how long it ran. */
void fr_metrics_run_finished(struct fr_metrics *m, const char *status, double seconds);

/* This process's resident set size in bytes (Linux /proc/self/statm), or -1. */
int64_t fr_metrics_process_rss(void);

#endif
