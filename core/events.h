/* Event listeners for the CLI (and anyone embedding the engine): a JSON-lines writer and a human
 * display. Both are fr_event_fn callbacks taking their state as `user`. The display shows each node's steps
 * with their time, the rate (it/s, or s/it below one step a second) and, on a terminal, the time left.
 *
 * JSON lines (one object per line, flushed after each, so a pipe reader sees events live):
 *   {"event":"run_start","nodes":N}
 *   {"event":"node_cached","node":ID,"type":T,"key":HEX}            ,"from":"shared": from the shared tier
 *   {"event":"node_start","node":ID,"type":T,"key":HEX}
 *   {"event":"progress","node":ID,"type":T,"step":I,"steps":N}
 *   {"event":"load_progress","node":ID,"type":T,"path":P,"bytes":N,"total":N,"bytes_per_s":R}  model file
 * read
 *   {"event":"node_done","node":ID,"type":T,"ms":MS}
 *   {"event":"output","node":ID,"type":T,"path":P,"written":B}  P absolute; B false: cached, already there
 *   {"event":"warning","message":M}
 *   {"event":"error","node":ID|null,"message":M,"status":S}
 *   {"event":"run_done","executed":N,"cached":N,"ms":MS,"status":S}   S: fr_status_str, "ok" on success */
#ifndef FR_EVENTS_H
#define FR_EVENTS_H

#include <stdbool.h>
#include <stdio.h>

#include "core/buf.h"
#include "core/flowrun.h"

/* Appends the event as one JSON object (no newline). */
void fr_event_json(struct fr_buf *b, const struct fr_event *ev);

/* user: a FILE * (stdout for --events jsonl). */
void fr_events_jsonl(void *user, const struct fr_event *ev);

/* The human display. On a terminal (tty = true) a live view: cached nodes marked, the current node with
 * a step bar redrawn in place, each finished node with its time, the total at the end. Otherwise one
 * plain line per event. quiet: only warnings and errors. */
struct fr_display {
  FILE *f;
  bool tty;
  bool quiet;
  bool line_open; /* a live line without its newline yet */
  int planned, done;
  /* the running node's steps: when it started, when its last step ended (monotonic seconds), that step */
  double t_node, t_step;
  int last_step;
};
void fr_display_init(struct fr_display *d, FILE *f, bool tty, bool quiet);
void fr_events_display(void *user, const struct fr_event *ev);

#endif
