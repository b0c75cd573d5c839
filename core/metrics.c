/* The metrics registry (see metrics.h). One mutex for the whole registry: updates are a few per node and
 * per request, far below any contention that would matter. */
#include "core/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"

#define FR__MAX_FAMILIES 64
#define FR__MAX_COLLECTORS 8

struct fr__series {
  char *label;  /* NULL for a family without a label */
  double value; /* counter / gauge; histogram: the sum */
  uint64_t count;
  uint64_t *buckets; /* histogram: per bucket (not cumulative), n_buckets + 1 (the last is +Inf) */
};

struct fr__family {
  char *name, *help, *label;
  enum fr_metric_kind kind;
  double bounds[FR_METRICS_MAX_BUCKETS];
  int n_bounds;
  struct fr__series *series;
  int n_series;
};

struct fr_metrics {
  pthread_mutex_t mu;
  struct fr__family fam[FR__MAX_FAMILIES];
  int n_fam;
  struct {
    fr_metrics_collect_fn fn;
    void *user;
  } coll[FR__MAX_COLLECTORS];
  int n_coll;
};

/* Durations from a few milliseconds (a cached image node) to minutes (a large sampler on the cpu). */
static const double fr__dur_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                         2.5,   5,    10,    30,   60,  120,  300, 600};
#define FR__N_DUR (int)(sizeof fr__dur_buckets / sizeof fr__dur_buckets[0])

static bool fr__name_ok(const char *s, bool label) {
  if (!s || !*s)
    return false;
  for (const char *p = s; *p; p++) {
    char c = *p;
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (!label && c == ':');
    if (!alpha && !(p > s && c >= '0' && c <= '9'))
      return false;
  }
  return !(label && s[0] == '_' && s[1] == '_'); /* __ is reserved for Prometheus' own labels */
}

static void fr__define_builtin(struct fr_metrics *m, const char *name, enum fr_metric_kind kind,
                               const char *help, const char *label, bool *ok) {
  struct fr_err err;
  if (fr_metrics_define(m, name, kind, help, label, kind == FR_METRIC_HISTOGRAM ? fr__dur_buckets : NULL,
                        kind == FR_METRIC_HISTOGRAM ? FR__N_DUR : 0, &err) != FR_OK)
    *ok = false;
}

struct fr_metrics *fr_metrics_new(void) {
  struct fr_metrics *m = fr_calloc(1, sizeof *m);
  if (!m)
    return NULL;
  pthread_mutex_init(&m->mu, NULL);
  bool ok = true;
  fr__define_builtin(m, "flowrun_runs_started_total", FR_METRIC_COUNTER, "Runs that started.", NULL, &ok);
  fr__define_builtin(m, "flowrun_runs_finished_total", FR_METRIC_COUNTER,
                     "Runs that ended, by status (done, error, cancelled).", "status", &ok);
  fr__define_builtin(m, "flowrun_run_duration_seconds", FR_METRIC_HISTOGRAM,
                     "How long runs took from start to end.", NULL, &ok);
  fr__define_builtin(m, "flowrun_node_executions_total", FR_METRIC_COUNTER,
                     "Nodes executed (not from the cache), by node type.", "type", &ok);
  fr__define_builtin(m, "flowrun_node_cache_hits_total", FR_METRIC_COUNTER,
                     "Nodes whose outputs came from the cache, by node type.", "type", &ok);
  fr__define_builtin(m, "flowrun_node_duration_seconds", FR_METRIC_HISTOGRAM,
                     "Execution time of nodes that ran, by node type.", "type", &ok);
  fr__define_builtin(m, "flowrun_sampler_steps_total", FR_METRIC_COUNTER,
                     "Steps reported by nodes with progress (sampler steps), by node type.", "type", &ok);
  fr__define_builtin(m, "flowrun_sampler_steps_per_second", FR_METRIC_GAUGE,
                     "Steps per second of the last finished node of that type that reported steps.", "type",
                     &ok);
  fr__define_builtin(m, "flowrun_process_resident_memory_bytes", FR_METRIC_GAUGE,
                     "Resident set size of the flowrun process.", NULL, &ok);
  if (!ok) {
    fr_metrics_free(m);
    return NULL;
  }
  return m;
}

void fr_metrics_free(struct fr_metrics *m) {
  if (!m)
    return;
  for (int i = 0; i < m->n_fam; i++) {
    struct fr__family *f = &m->fam[i];
    for (int k = 0; k < f->n_series; k++) {
      fr_free(f->series[k].label);
      fr_free(f->series[k].buckets);
    }
    fr_free(f->series);
    fr_free(f->name);
    fr_free(f->help);
    fr_free(f->label);
  }
  pthread_mutex_destroy(&m->mu);
  fr_free(m);
}

static struct fr__family *fr__find(struct fr_metrics *m, const char *name) {
  for (int i = 0; i < m->n_fam; i++)
    if (!strcmp(m->fam[i].name, name))
      return &m->fam[i];
  return NULL;
}

enum fr_status fr_metrics_define(struct fr_metrics *m, const char *name, enum fr_metric_kind kind,
                                 const char *help, const char *label, const double *buckets, int n_buckets,
                                 struct fr_err *err) {
  if (!fr__name_ok(name, false))
    return fr_errf(err, FR_E_INVALID, "metric name '%s': expected [a-zA-Z_:][a-zA-Z0-9_:]*",
                   name ? name : "");
  if (label && (!fr__name_ok(label, true) || !strcmp(label, "le")))
    return fr_errf(err, FR_E_INVALID, "metric %s: label name '%s' is not allowed", name, label);
  if (kind == FR_METRIC_HISTOGRAM) {
    if (n_buckets < 1 || n_buckets > FR_METRICS_MAX_BUCKETS)
      return fr_errf(err, FR_E_INVALID, "metric %s: 1 to %d buckets", name, FR_METRICS_MAX_BUCKETS);
    for (int i = 0; i < n_buckets; i++)
      if (!isfinite(buckets[i]) || (i && !(buckets[i] > buckets[i - 1])))
        return fr_errf(err, FR_E_INVALID, "metric %s: bucket bounds must be finite and increasing", name);
  }
  pthread_mutex_lock(&m->mu);
  enum fr_status rc = FR_OK;
  if (fr__find(m, name)) {
    rc = fr_errf(err, FR_E_INVALID, "metric %s: defined twice", name);
  } else if (m->n_fam == FR__MAX_FAMILIES) {
    rc = fr_errf(err, FR_E_INVALID, "metric %s: too many metric families (at most %d)", name,
                 FR__MAX_FAMILIES);
  } else {
    struct fr__family *f = &m->fam[m->n_fam];
    memset(f, 0, sizeof *f);
    f->name = fr_strdup(name);
    f->help = fr_strdup(help ? help : "");
    f->label = label ? fr_strdup(label) : NULL;
    f->kind = kind;
    f->n_bounds = kind == FR_METRIC_HISTOGRAM ? n_buckets : 0;
    for (int i = 0; i < f->n_bounds; i++)
      f->bounds[i] = buckets[i];
    if (!f->name || !f->help || (label && !f->label)) {
      fr_free(f->name);
      fr_free(f->help);
      fr_free(f->label);
      rc = fr_errf(err, FR_E_NOMEM, "out of memory");
    } else {
      m->n_fam++;
    }
  }
  pthread_mutex_unlock(&m->mu);
  return rc;
}

/* The series of label_value, made when new (caller holds the mutex). Beyond FR_METRICS_MAX_SERIES values
 * the series "other" takes the rest. NULL when out of memory or the label does not fit the family. */
static struct fr__series *fr__series(struct fr__family *f, const char *label_value, bool create) {
  if (!f->label != !label_value)
    return NULL;
  for (int i = 0; i < f->n_series; i++)
    if (!f->label || !strcmp(f->series[i].label, label_value))
      return &f->series[i];
  if (!create)
    return NULL;
  if (f->label && f->n_series >= FR_METRICS_MAX_SERIES && strcmp(label_value, "other") != 0)
    return fr__series(f, "other", true); /* "other" itself is the one series past the bound */
  struct fr__series *ns = fr_realloc(f->series, sizeof *ns * (size_t)(f->n_series + 1));
  if (!ns)
    return NULL;
  f->series = ns;
  struct fr__series *s = &ns[f->n_series];
  memset(s, 0, sizeof *s);
  if (label_value && !(s->label = fr_strdup(label_value)))
    return NULL;
  if (f->kind == FR_METRIC_HISTOGRAM &&
      !(s->buckets = fr_calloc((size_t)f->n_bounds + 1, sizeof(uint64_t)))) {
    fr_free(s->label);
    return NULL;
  }
  f->n_series++;
  return s;
}

void fr_metrics_add(struct fr_metrics *m, const char *name, const char *label_value, double v) {
  if (!m)
    return;
  pthread_mutex_lock(&m->mu);
  struct fr__family *f = fr__find(m, name);
  /* a counter never goes down: a negative v is ignored */
  bool ok = f && f->kind != FR_METRIC_HISTOGRAM && (f->kind == FR_METRIC_GAUGE || v >= 0);
  struct fr__series *s = ok ? fr__series(f, label_value, true) : NULL;
  if (s)
    s->value += v;
  pthread_mutex_unlock(&m->mu);
}

void fr_metrics_set(struct fr_metrics *m, const char *name, const char *label_value, double v) {
  if (!m)
    return;
  pthread_mutex_lock(&m->mu);
  struct fr__family *f = fr__find(m, name);
  struct fr__series *s = f && f->kind == FR_METRIC_GAUGE ? fr__series(f, label_value, true) : NULL;
  if (s)
    s->value = v;
  pthread_mutex_unlock(&m->mu);
}

void fr_metrics_observe(struct fr_metrics *m, const char *name, const char *label_value, double v) {
  if (!m || isnan(v))
    return;
  pthread_mutex_lock(&m->mu);
  struct fr__family *f = fr__find(m, name);
  struct fr__series *s = f && f->kind == FR_METRIC_HISTOGRAM ? fr__series(f, label_value, true) : NULL;
  if (s) {
    int i = 0;
    while (i < f->n_bounds && v > f->bounds[i]) /* le: the first bound at or above v */
      i++;
    s->buckets[i]++;
    s->count++;
    s->value += v;
  }
  pthread_mutex_unlock(&m->mu);
}

void fr_metrics_reset(struct fr_metrics *m, const char *name) {
  if (!m)
    return;
  pthread_mutex_lock(&m->mu);
  struct fr__family *f = fr__find(m, name);
  if (f && f->kind == FR_METRIC_GAUGE) {
    for (int k = 0; k < f->n_series; k++)
      fr_free(f->series[k].label);
    fr_free(f->series);
    f->series = NULL;
    f->n_series = 0;
  }
  pthread_mutex_unlock(&m->mu);
}

double fr_metrics_get(struct fr_metrics *m, const char *name, const char *label_value) {
  if (!m)
    return 0;
  pthread_mutex_lock(&m->mu);
  struct fr__family *f = fr__find(m, name);
  struct fr__series *s = f ? fr__series(f, label_value, false) : NULL;
  double v = s ? (f->kind == FR_METRIC_HISTOGRAM ? (double)s->count : s->value) : 0;
  pthread_mutex_unlock(&m->mu);
  return v;
}

bool fr_metrics_add_collector(struct fr_metrics *m, fr_metrics_collect_fn fn, void *user) {
  pthread_mutex_lock(&m->mu);
  bool ok = m->n_coll < FR__MAX_COLLECTORS;
  if (ok) {
    m->coll[m->n_coll].fn = fn;
    m->coll[m->n_coll].user = user;
    m->n_coll++;
  }
  pthread_mutex_unlock(&m->mu);
  return ok;
}

/* HELP text escapes backslash and newline; label values also the double quote. */
static void fr__escaped(struct fr_buf *b, const char *s, bool quote) {
  for (; *s; s++) {
    if (*s == '\\')
      fr_buf_puts(b, "\\\\");
    else if (*s == '\n')
      fr_buf_puts(b, "\\n");
    else if (quote && *s == '"')
      fr_buf_puts(b, "\\\"");
    else
      fr_buf_putc(b, *s);
  }
}

/* A sample value: integers without a fraction, others with enough digits to read back the same double;
 * non-finite values as Prometheus spells them. */
static void fr__value(struct fr_buf *b, double v) {
  if (isnan(v))
    fr_buf_puts(b, "NaN");
  else if (isinf(v))
    fr_buf_puts(b, v > 0 ? "+Inf" : "-Inf");
  else if (v == floor(v) && fabs(v) < 9e15)
    fr_buf_printf(b, "%.0f", v);
  else
    fr_buf_printf(b, "%.17g", v);
}

/* name{label="value",le="bound"} value */
static void fr__sample(struct fr_buf *b, const struct fr__family *f, const char *suffix,
                       const struct fr__series *s, const char *le, double v) {
  fr_buf_puts(b, f->name);
  fr_buf_puts(b, suffix);
  if (f->label || le) {
    fr_buf_putc(b, '{');
    if (f->label) {
      fr_buf_printf(b, "%s=\"", f->label);
      fr__escaped(b, s->label, true);
      fr_buf_putc(b, '"');
    }
    if (le)
      fr_buf_printf(b, "%sle=\"%s\"", f->label ? "," : "", le);
    fr_buf_putc(b, '}');
  }
  fr_buf_putc(b, ' ');
  fr__value(b, v);
  fr_buf_putc(b, '\n');
}

void fr_metrics_render(struct fr_metrics *m, struct fr_buf *b) {
  pthread_mutex_lock(&m->mu);
  int n_coll = m->n_coll;
  pthread_mutex_unlock(&m->mu);
  for (int i = 0; i < n_coll; i++) /* outside the lock: collectors set gauges */
    m->coll[i].fn(m->coll[i].user, m);
  static const char *const kinds[] = {"counter", "gauge", "histogram"};
  pthread_mutex_lock(&m->mu);
  for (int i = 0; i < m->n_fam; i++) {
    const struct fr__family *f = &m->fam[i];
    if (!f->label && !f->n_series && f->kind != FR_METRIC_COUNTER && f->kind != FR_METRIC_HISTOGRAM)
      continue; /* a gauge never set (device memory on the cpu): not known, so not shown */
    fr_buf_printf(b, "# HELP %s ", f->name);
    fr__escaped(b, f->help, false);
    fr_buf_printf(b, "\n# TYPE %s %s\n", f->name, kinds[f->kind]);
    struct fr__series zero = {0};
    uint64_t zero_buckets[FR_METRICS_MAX_BUCKETS + 1] = {0};
    zero.buckets = zero_buckets;
    int n = f->n_series;
    if (!f->label && !n)
      n = 1; /* an unlabelled counter or histogram starts at 0 */
    for (int k = 0; k < n; k++) {
      const struct fr__series *s = f->n_series ? &f->series[k] : &zero;
      if (f->kind != FR_METRIC_HISTOGRAM) {
        fr__sample(b, f, "", s, NULL, s->value);
        continue;
      }
      uint64_t cum = 0;
      for (int q = 0; q <= f->n_bounds; q++) {
        cum += s->buckets[q];
        char le[40];
        if (q < f->n_bounds)
          snprintf(le, sizeof le, "%.15g", f->bounds[q]);
        else
          snprintf(le, sizeof le, "+Inf");
        fr__sample(b, f, "_bucket", s, le, (double)cum);
      }
      fr__sample(b, f, "_sum", s, NULL, s->value);
      fr__sample(b, f, "_count", s, NULL, (double)s->count);
    }
  }
  pthread_mutex_unlock(&m->mu);
}

void fr_metrics_event(void *user, const struct fr_event *ev) {
  struct fr_metrics_listener *l = user;
  if (!l || !l->m)
    return;
  const char *type = ev->node_type ? ev->node_type : "unknown";
  switch (ev->kind) {
  case FR_EV_NODE_CACHED: fr_metrics_add(l->m, "flowrun_node_cache_hits_total", type, 1); break;
  case FR_EV_NODE_START: l->steps = 0; break;
  case FR_EV_PROGRESS:
    /* one event per finished step (fr_node_progress); a repeated step number is not a new step */
    if (ev->step > l->steps) {
      fr_metrics_add(l->m, "flowrun_sampler_steps_total", type, ev->step - l->steps);
      l->steps = ev->step;
    }
    break;
  case FR_EV_NODE_DONE:
    fr_metrics_add(l->m, "flowrun_node_executions_total", type, 1);
    fr_metrics_observe(l->m, "flowrun_node_duration_seconds", type, ev->ms / 1000.0);
    if (l->steps > 0 && ev->ms > 0)
      fr_metrics_set(l->m, "flowrun_sampler_steps_per_second", type, l->steps / (ev->ms / 1000.0));
    l->steps = 0;
    break;
  default: break;
  }
}

void fr_metrics_run_started(struct fr_metrics *m) {
  fr_metrics_add(m, "flowrun_runs_started_total", NULL, 1);
}

void fr_metrics_run_finished(struct fr_metrics *m, const char *status, double seconds) {
  fr_metrics_add(m, "flowrun_runs_finished_total", status, 1);
  fr_metrics_observe(m, "flowrun_run_duration_seconds", NULL, seconds);
}

int64_t fr_metrics_process_rss(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f)
    return -1;
  long long size = 0, resident = 0;
  int n = fscanf(f, "%lld %lld", &size, &resident);
  fclose(f);
  long page = sysconf(_SC_PAGESIZE);
  return n == 2 && page > 0 ? (int64_t)resident * page : -1;
}
