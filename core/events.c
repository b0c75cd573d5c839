#include "core/events.h"

#include <string.h>
#include <time.h>

#include "core/alloc.h"

static void fr__json_node(struct fr_buf *b, const struct fr_event *ev) {
  fr_buf_puts(b, ",\"node\":");
  if (ev->node)
    fr_buf_json_str(b, ev->node);
  else
    fr_buf_puts(b, "null");
  if (ev->node_type) {
    fr_buf_puts(b, ",\"type\":");
    fr_buf_json_str(b, ev->node_type);
  }
}

/* ,"key":"v" (v NULL: an empty string) */
static void fr__json_field(struct fr_buf *b, const char *key, const char *v) {
  fr_buf_printf(b, ",\"%s\":", key);
  fr_buf_json_str(b, v ? v : "");
}

void fr_event_json(struct fr_buf *b, const struct fr_event *ev) {
  switch (ev->kind) {
  case FR_EV_RUN_START: fr_buf_printf(b, "{\"event\":\"run_start\",\"nodes\":%d}", ev->planned); break;
  case FR_EV_NODE_CACHED:
  case FR_EV_NODE_START:
    fr_buf_puts(b,
                ev->kind == FR_EV_NODE_CACHED ? "{\"event\":\"node_cached\"" : "{\"event\":\"node_start\"");
    fr__json_node(b, ev);
    if (ev->key)
      fr__json_field(b, "key", ev->key);
    if (ev->from)
      fr__json_field(b, "from", ev->from);
    fr_buf_putc(b, '}');
    break;
  case FR_EV_PROGRESS:
    fr_buf_puts(b, "{\"event\":\"progress\"");
    fr__json_node(b, ev);
    fr_buf_printf(b, ",\"step\":%d,\"steps\":%d}", ev->step, ev->steps);
    break;
  case FR_EV_NODE_DONE:
    fr_buf_puts(b, "{\"event\":\"node_done\"");
    fr__json_node(b, ev);
    fr_buf_printf(b, ",\"ms\":%.3f}", ev->ms);
    break;
  case FR_EV_OUTPUT:
    fr_buf_puts(b, "{\"event\":\"output\"");
    fr__json_node(b, ev);
    fr__json_field(b, "path", ev->path);
    fr_buf_puts(b, ev->written ? ",\"written\":true}" : ",\"written\":false}");
    break;
  case FR_EV_LOAD_PROGRESS:
    fr_buf_puts(b, "{\"event\":\"load_progress\"");
    fr__json_node(b, ev);
    fr__json_field(b, "path", ev->path);
    fr_buf_printf(b, ",\"bytes\":%llu,\"total\":%llu,\"bytes_per_s\":%.0f}", (unsigned long long)ev->bytes,
                  (unsigned long long)ev->bytes_total, ev->bytes_per_s);
    break;
  case FR_EV_INFO:
    fr_buf_puts(b, "{\"event\":\"info\"");
    fr__json_node(b, ev);
    fr__json_field(b, "message", ev->message);
    fr_buf_putc(b, '}');
    break;
  case FR_EV_WARNING:
    fr_buf_puts(b, "{\"event\":\"warning\"");
    fr__json_field(b, "message", ev->message);
    fr_buf_putc(b, '}');
    break;
  case FR_EV_ERROR:
    fr_buf_puts(b, "{\"event\":\"error\"");
    fr__json_node(b, ev);
    fr__json_field(b, "message", ev->message);
    fr__json_field(b, "status", fr_status_str(ev->status));
    fr_buf_putc(b, '}');
    break;
  case FR_EV_RUN_DONE:
    fr_buf_printf(b, "{\"event\":\"run_done\",\"executed\":%d,\"cached\":%d,\"ms\":%.3f,\"status\":",
                  ev->executed, ev->cached, ev->ms);
    fr_buf_json_str(b, fr_status_str(ev->status));
    fr_buf_putc(b, '}');
    break;
  }
}

void fr_events_jsonl(void *user, const struct fr_event *ev) {
  FILE *f = user;
  struct fr_buf b = {0};
  fr_event_json(&b, ev);
  if (!b.oom && b.len > 0) {
    fwrite(b.data, 1, b.len, f);
    fputc('\n', f);
  } else {
    /* Out of memory: still tell the reader something happened rather than dropping the line. */
    fputs("{\"event\":\"warning\",\"message\":\"out of memory writing an event\"}\n", f);
  }
  fflush(f);
  fr_buf_free(&b);
}

void fr_display_init(struct fr_display *d, FILE *f, bool tty, bool quiet) {
  memset(d, 0, sizeof *d);
  d->f = f;
  d->tty = tty;
  d->quiet = quiet;
}

static void fr__close_line(struct fr_display *d) {
  if (d->line_open) {
    fputs("\r\033[K", d->f);
    d->line_open = false;
  }
}

static void fr__fmt_ms(char *buf, size_t n, double ms) {
  if (ms < 10)
    snprintf(buf, n, "%.1f ms", ms);
  else if (ms < 1000)
    snprintf(buf, n, "%.0f ms", ms);
  else
    snprintf(buf, n, "%.2f s", ms / 1000);
}

static double fr__now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* "2.43 it/s" or, below one step a second as stable-diffusion.cpp and tqdm say it, "4.10 s/it". */
static void fr__fmt_rate(char *buf, size_t n, double steps_per_s) {
  if (steps_per_s >= 1 || steps_per_s <= 0)
    snprintf(buf, n, "%.2f it/s", steps_per_s);
  else
    snprintf(buf, n, "%.2f s/it", 1.0 / steps_per_s);
}

void fr_events_display(void *user, const struct fr_event *ev) {
  struct fr_display *d = user;
  FILE *f = d->f;
  char t[32];
  if (d->quiet && ev->kind != FR_EV_ERROR && ev->kind != FR_EV_WARNING)
    return;
  switch (ev->kind) {
  case FR_EV_RUN_START:
    d->planned = ev->planned;
    d->done = 0;
    fprintf(f, "flowrun: %d node%s to run\n", ev->planned, ev->planned == 1 ? "" : "s");
    break;
  case FR_EV_NODE_CACHED:
    fr__close_line(d);
    fprintf(f, "  cached  %s (%s)%s\n", ev->node, ev->node_type, ev->from ? " (shared cache)" : "");
    break;
  case FR_EV_NODE_START:
    d->t_node = d->t_step = fr__now();
    d->last_step = 0;
    if (d->tty) {
      fr__close_line(d);
      fprintf(f, "  [%d/%d]   %s (%s) ...", d->done + 1, d->planned, ev->node, ev->node_type);
      d->line_open = true;
    } else {
      fprintf(f, "  start   %s (%s)\n", ev->node, ev->node_type);
    }
    break;
  case FR_EV_PROGRESS: {
    /* steps counted from the node's start (a node that starts its count again, e.g. a second pass,
     * starts the clock again) */
    double now = fr__now();
    if (ev->step <= d->last_step)
      d->t_node = d->t_step = now;
    double step_ms = (now - d->t_step) * 1e3, elapsed = now - d->t_node;
    double rate = elapsed > 0 && ev->step > 0 ? ev->step / elapsed : 0;
    char r[32], s[32];
    fr__fmt_rate(r, sizeof r, rate);
    d->t_step = now;
    d->last_step = ev->step;
    if (d->tty) {
      char bar[21];
      int w = 20, fill = ev->steps > 0 ? ev->step * w / ev->steps : 0;
      if (fill > w)
        fill = w;
      if (fill < 0)
        fill = 0;
      memset(bar, '#', (size_t)fill);
      memset(bar + fill, '-', (size_t)(w - fill));
      bar[w] = 0;
      fprintf(f, "\r\033[K  [%d/%d]   %s (%s) [%s] %d/%d", d->done + 1, d->planned, ev->node, ev->node_type,
              bar, ev->step, ev->steps);
      if (rate > 0) {
        fr__fmt_ms(s, sizeof s, (ev->steps - ev->step) / rate * 1e3);
        fprintf(f, " %s, ETA %s", r, s);
      }
      d->line_open = true;
    } else {
      fr__fmt_ms(s, sizeof s, step_ms);
      fprintf(f, "  step    %s (%s) %d/%d %s (%s)\n", ev->node, ev->node_type, ev->step, ev->steps, s, r);
    }
    break;
  }
  case FR_EV_NODE_DONE:
    d->done++;
    fr__close_line(d);
    fr__fmt_ms(t, sizeof t, ev->ms);
    fprintf(f, "  ran     %s (%s) %s\n", ev->node, ev->node_type, t);
    break;
  case FR_EV_OUTPUT:
    fr__close_line(d);
    fprintf(f, "  %s  %s\n", ev->written ? "wrote " : "exists", ev->path);
    break;
  case FR_EV_LOAD_PROGRESS: {
    const char *base = ev->path ? strrchr(ev->path, '/') : NULL;
    base = base ? base + 1 : ev->path ? ev->path : "?";
    double mb = 1024.0 * 1024.0;
    int pct = ev->bytes_total ? (int)(ev->bytes * 100 / ev->bytes_total) : 100;
    if (d->tty) {
      fprintf(f, "\r\033[K  [%d/%d]   %s (%s) reading %s %d%% of %.1f MB, %.0f MB/s", d->done + 1, d->planned,
              ev->node, ev->node_type, base, pct, (double)ev->bytes_total / mb, ev->bytes_per_s / mb);
      d->line_open = true;
    } else {
      fprintf(f, "  read    %s (%s) %s %.1f/%.1f MB (%.0f MB/s)\n", ev->node, ev->node_type, base,
              (double)ev->bytes / mb, (double)ev->bytes_total / mb, ev->bytes_per_s / mb);
    }
    break;
  }
  case FR_EV_INFO:
    fr__close_line(d);
    fprintf(f, "flowrun: %s\n", ev->message);
    break;
  case FR_EV_WARNING:
    fr__close_line(d);
    fprintf(f, "flowrun: warning: %s\n", ev->message);
    break;
  case FR_EV_ERROR:
    fr__close_line(d);
    fprintf(f, "flowrun: error: %s\n", ev->message);
    break;
  case FR_EV_RUN_DONE:
    fr__close_line(d);
    fr__fmt_ms(t, sizeof t, ev->ms);
    if (d->quiet)
      break;
    if (ev->status == FR_OK)
      fprintf(f, "flowrun: done in %s: %d ran, %d cached\n", t, ev->executed, ev->cached);
    else
      fprintf(f, "flowrun: %s after %s: %d ran, %d cached\n", fr_status_str(ev->status), t, ev->executed,
              ev->cached);
    break;
  }
  fflush(f);
}
