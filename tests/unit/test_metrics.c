/* core/metrics: the registry and its Prometheus text. Expected texts are written out by hand from the
 * exposition format (cumulative buckets, +Inf, _sum, _count, escapes); the engine listener is fed
 * events made here, so the counts it must reach are known without running anything. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/metrics.h"
#include "tests/test.h"

static bool has_line(const struct fr_buf *b, const char *line) {
  size_t n = strlen(line);
  for (const char *p = b->data; p && (p = strstr(p, line)); p++)
    if ((p == b->data || p[-1] == '\n') && p[n] == '\n')
      return true;
  return false;
}

static void *adder(void *arg) {
  struct fr_metrics *m = arg;
  for (int i = 0; i < 20000; i++) {
    fr_metrics_add(m, "t_total", i % 2 ? "a" : "b", 1);
    fr_metrics_observe(m, "t_seconds", NULL, 0.5);
  }
  return NULL;
}

int main(void) {
  struct fr_err err;
  struct fr_metrics *m = fr_metrics_new();
  CHECK(m);

  /* definitions: names and labels are checked */
  static const double b3[] = {0.01, 0.1, 1};
  CHECK(fr_metrics_define(m, "x_seconds", FR_METRIC_HISTOGRAM, "An \"h\"\\nelp\nline.", "type", b3, 3,
                          &err) == FR_OK);
  CHECK(fr_metrics_define(m, "x_seconds", FR_METRIC_GAUGE, "again", NULL, NULL, 0, &err) == FR_E_INVALID);
  CHECK(fr_metrics_define(m, "9bad", FR_METRIC_GAUGE, "", NULL, NULL, 0, &err) == FR_E_INVALID);
  CHECK(fr_metrics_define(m, "bad-name", FR_METRIC_GAUGE, "", NULL, NULL, 0, &err) == FR_E_INVALID);
  CHECK(fr_metrics_define(m, "g", FR_METRIC_GAUGE, "", "le", NULL, 0, &err) == FR_E_INVALID);
  CHECK(fr_metrics_define(m, "g", FR_METRIC_GAUGE, "", "__x", NULL, 0, &err) == FR_E_INVALID);
  static const double down[] = {1, 0.5};
  CHECK(fr_metrics_define(m, "h2", FR_METRIC_HISTOGRAM, "", NULL, down, 2, &err) == FR_E_INVALID);
  CHECK(fr_metrics_define(m, "c_total", FR_METRIC_COUNTER, "A counter.", "status", NULL, 0, &err) == FR_OK);
  CHECK(fr_metrics_define(m, "g_bytes", FR_METRIC_GAUGE, "A gauge.", NULL, NULL, 0, &err) == FR_OK);

  /* histogram: 0.003 -> le 0.01; 0.01 -> le 0.01 (le is "less or equal"); 0.05 -> 0.1; 7 -> +Inf */
  fr_metrics_observe(m, "x_seconds", "Sampler", 0.003);
  fr_metrics_observe(m, "x_seconds", "Sampler", 0.01);
  fr_metrics_observe(m, "x_seconds", "Sampler", 0.05);
  fr_metrics_observe(m, "x_seconds", "Sampler", 7);
  fr_metrics_add(m, "c_total", "a\"b\\c\nd", 2);
  fr_metrics_add(m, "c_total", "a\"b\\c\nd", 3);
  fr_metrics_add(m, "c_total", "ok", -1);     /* a counter never goes down: ignored */
  fr_metrics_add(m, "nosuch_total", NULL, 1); /* undefined: ignored, no crash */
  fr_metrics_add(m, "c_total", NULL, 1);      /* a labelled family without a label: ignored */
  struct fr_buf b = {0};
  fr_metrics_render(m, &b);
  CHECK(!b.oom && b.data);
  CHECK(has_line(&b, "# HELP x_seconds An \"h\"\\\\nelp\\nline."));
  CHECK(has_line(&b, "# TYPE x_seconds histogram"));
  CHECK(has_line(&b, "x_seconds_bucket{type=\"Sampler\",le=\"0.01\"} 2"));
  CHECK(has_line(&b, "x_seconds_bucket{type=\"Sampler\",le=\"0.1\"} 3"));
  CHECK(has_line(&b, "x_seconds_bucket{type=\"Sampler\",le=\"1\"} 3"));
  CHECK(has_line(&b, "x_seconds_bucket{type=\"Sampler\",le=\"+Inf\"} 4"));
  CHECK(has_line(&b, "x_seconds_count{type=\"Sampler\"} 4"));
  double sum = fr_metrics_get(m, "x_seconds", "Sampler");
  CHECKF(sum == 4, "histogram count %g", sum); /* get on a histogram: its count */
  {
    /* _sum: 0.003 + 0.01 + 0.05 + 7 = 7.063 (to double rounding: the text reads back within 1e-12) */
    const char *p = strstr(b.data, "x_seconds_sum{type=\"Sampler\"} ");
    CHECK(p);
    double v = p ? strtod(p + strlen("x_seconds_sum{type=\"Sampler\"} "), NULL) : 0;
    CHECKF(v > 7.063 - 1e-12 && v < 7.063 + 1e-12, "sum %.17g", v);
  }
  CHECK(has_line(&b, "c_total{status=\"a\\\"b\\\\c\\nd\"} 5"));
  CHECK(!strstr(b.data, "status=\"ok\""));
  CHECK(!strstr(b.data, "# TYPE g_bytes")); /* a gauge never set is not shown */
  /* an unlabelled counter and histogram of the built-ins show 0 before anything happened */
  CHECK(has_line(&b, "flowrun_runs_started_total 0"));
  CHECK(has_line(&b, "flowrun_run_duration_seconds_bucket{le=\"+Inf\"} 0"));
  fr_buf_free(&b);

  fr_metrics_set(m, "g_bytes", NULL, 1.5);
  fr_metrics_set(m, "g_bytes", NULL, 123456789012.0);
  fr_metrics_render(m, &b);
  CHECK(has_line(&b, "g_bytes 123456789012"));
  fr_buf_free(&b);

  /* bounded cardinality: beyond FR_METRICS_MAX_SERIES values, "other" */
  for (int i = 0; i < FR_METRICS_MAX_SERIES + 10; i++) {
    char v[32];
    snprintf(v, sizeof v, "v%d", i);
    fr_metrics_add(m, "c_total", v, 1);
  }
  /* 1 series existed: 127 new ones fit (v0..v126), the 11 others (v127..v137) count under "other" */
  CHECK(fr_metrics_get(m, "c_total", "other") == 11);
  CHECK(fr_metrics_get(m, "c_total", "v126") == 1);
  CHECK(fr_metrics_get(m, "c_total", "v127") == 0);

  /* the engine listener: counts from events made here */
  struct fr_metrics_listener l = {.m = m};
  struct fr_event ev = {.kind = FR_EV_NODE_CACHED, .node = "a", .node_type = "TextEncode"};
  fr_metrics_event(&l, &ev);
  fr_metrics_event(&l, &ev);
  ev = (struct fr_event){.kind = FR_EV_NODE_START, .node = "s", .node_type = "Sampler"};
  fr_metrics_event(&l, &ev);
  for (int i = 1; i <= 20; i++) {
    ev = (struct fr_event){
        .kind = FR_EV_PROGRESS, .node = "s", .node_type = "Sampler", .step = i, .steps = 20};
    fr_metrics_event(&l, &ev);
    if (i == 10)
      fr_metrics_event(&l, &ev); /* the same step twice counts once */
  }
  ev = (struct fr_event){.kind = FR_EV_NODE_DONE, .node = "s", .node_type = "Sampler", .ms = 4000};
  fr_metrics_event(&l, &ev);
  CHECK(fr_metrics_get(m, "flowrun_node_cache_hits_total", "TextEncode") == 2);
  CHECK(fr_metrics_get(m, "flowrun_node_executions_total", "Sampler") == 1);
  CHECK(fr_metrics_get(m, "flowrun_sampler_steps_total", "Sampler") == 20);
  CHECK(fr_metrics_get(m, "flowrun_sampler_steps_per_second", "Sampler") == 5); /* 20 steps in 4 s */
  CHECK(fr_metrics_get(m, "flowrun_node_duration_seconds", "Sampler") == 1);
  fr_metrics_run_started(m);
  fr_metrics_run_finished(m, "done", 1.0);
  CHECK(fr_metrics_get(m, "flowrun_runs_started_total", NULL) == 1);
  CHECK(fr_metrics_get(m, "flowrun_runs_finished_total", "done") == 1);

  /* gauges reset (resident models are rebuilt after each run) */
  CHECK(fr_metrics_define(m, "r", FR_METRIC_GAUGE, "", "model", NULL, 0, &err) == FR_OK);
  fr_metrics_set(m, "r", "a.safetensors", 1);
  fr_metrics_reset(m, "r");
  fr_metrics_set(m, "r", "b.safetensors", 1);
  fr_metrics_render(m, &b);
  CHECK(!strstr(b.data, "a.safetensors") && strstr(b.data, "r{model=\"b.safetensors\"} 1"));
  fr_buf_free(&b);

  /* thread safety: 4 threads x 20000 updates, nothing lost */
  CHECK(fr_metrics_define(m, "t_total", FR_METRIC_COUNTER, "", "k", NULL, 0, &err) == FR_OK);
  CHECK(fr_metrics_define(m, "t_seconds", FR_METRIC_HISTOGRAM, "", NULL, b3, 3, &err) == FR_OK);
  pthread_t th[4];
  for (int i = 0; i < 4; i++)
    pthread_create(&th[i], NULL, adder, m);
  for (int i = 0; i < 4; i++)
    pthread_join(th[i], NULL);
  CHECK(fr_metrics_get(m, "t_total", "a") == 40000 && fr_metrics_get(m, "t_total", "b") == 40000);
  CHECK(fr_metrics_get(m, "t_seconds", NULL) == 80000);

  CHECK(fr_metrics_process_rss() > 0);
  fr_metrics_free(m);
  return fr_test_done();
}
