/* The fleet's database: one PostgreSQL database is the queue of runs, their events and output files, and
 * the shared second tier of the node cache (docs/scale-out.md has the design and the schema).
 *
 * Runs are rows taken with SELECT ... FOR UPDATE SKIP LOCKED and held by a lease (lease_until and a
 * lease token) that the worker renews while it runs; no transaction stays open during a run. Everything a
 * worker writes about a run (events, output files, the final state) is guarded by its lease token, so a
 * worker that lost its lease (it stalled, the run went to another worker) writes nothing: one result per
 * run. A lost connection is retried with backoff (a statement is re-sent once the connection is back), so
 * a database restart costs time, not runs.
 *
 * A struct fr_pg is one connection; it is not shared between threads (a worker keeps a second one for its
 * lease thread). */
#ifndef FR_PG_H
#define FR_PG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/flowrun.h"
#include "core/status.h"

#define FR_PG_SCHEMA_VERSION 1

struct fr_pg;

/* Connects (a libpq connection string or URI) and creates or migrates the schema (versioned, under an
 * advisory lock, so workers starting together agree). A database whose schema is newer than this flowrun
 * is an error naming both versions. retry_s: how long a lost connection is retried before a statement
 * fails (0: 60 s); a first connection is not retried (an unreachable database at start is an error). */
enum fr_status fr_pg_open(const char *url, double retry_s, struct fr_pg **out, struct fr_err *err);
void fr_pg_close(struct fr_pg *p);
/* ok (may be read from any thread) becomes false when a statement finds the connection lost (while it is
 * being re-established) and true after each statement that succeeds: a readiness check reads it. */
void fr_pg_watch(struct fr_pg *p, atomic_bool *ok);

/* A run to queue: the graph as YAML text, its name and folder (where relative subgraph and file names
 * resolve; workers use it when it exists on their host), --set overrides as a JSON object of strings,
 * the model file names it uses (workers that hold them are preferred), at most max_attempts takes. */
struct fr_pg_submit {
  const char *yaml, *name, *dir, *params_json;
  const char *const *models;
  int n_models;
  int max_attempts; /* 0: 3 */
};
enum fr_status fr_pg_submit(struct fr_pg *p, const struct fr_pg_submit *s, int64_t *id, struct fr_err *err);

/* A run taken by a worker. */
struct fr_pg_claim {
  int64_t id, token;
  int attempt, seq;                      /* seq: the last event number written for the run */
  char *yaml, *name, *dir, *params_json; /* fr_free'd by fr_pg_claim_free */
  char **models;
  int n_models;
};
void fr_pg_claim_free(struct fr_pg_claim *c);

/* Takes the next run for worker `worker` (queued, or running with an expired lease and attempts left),
 * preferring runs that use one of held[0..n_held) and then the oldest; first fails runs whose lease
 * expired with no attempt left. FR_E_NOTFOUND when there is none. */
enum fr_status fr_pg_take(struct fr_pg *p, const char *worker, const char *const *held, int n_held,
                          double lease_s, struct fr_pg_claim *c, struct fr_err *err);
/* Extends the lease. *lost: the lease is gone (another worker has the run, or it ended); *cancel: a
 * cancel was asked for. */
enum fr_status fr_pg_renew(struct fr_pg *p, const struct fr_pg_claim *c, double lease_s, bool *lost,
                           bool *cancel, struct fr_err *err);
/* Appends an event (one JSON object, as --events jsonl) to the run, if the lease is still ours. */
enum fr_status fr_pg_event(struct fr_pg *p, struct fr_pg_claim *c, const char *json, struct fr_err *err);
/* Stores an output file of this attempt (guarded by the lease). */
enum fr_status fr_pg_output(struct fr_pg *p, const struct fr_pg_claim *c, const char *name, const void *data,
                            size_t len, struct fr_err *err);
/* Ends the run in one statement guarded by the lease: state "done", "failed" or "cancelled", the error
 * message (NULL when done), the summary, and the final run_done event. *lost when the lease was no longer
 * ours (nothing was written). */
enum fr_status fr_pg_finish(struct fr_pg *p, struct fr_pg_claim *c, const char *state, const char *error,
                            const struct fr_run_summary *sum, const char *done_json, bool *lost,
                            struct fr_err *err);
/* Gives a taken run back to the queue (a worker that stops): queued again, the attempt not counted. */
enum fr_status fr_pg_release(struct fr_pg *p, const struct fr_pg_claim *c, struct fr_err *err);

/* Cancels a queued run (it never starts: cancelled at once, with a run_done event) or asks a running one to
 * stop (its worker is told through NOTIFY and cancels within a sampler step). FR_E_NOTFOUND: no such run;
 * FR_E_INVALID: it has already ended (the message says how). */
enum fr_status fr_pg_cancel(struct fr_pg *p, int64_t id, struct fr_err *err);

/* Runs as JSON: one run (id > 0, with its output names) or the newest `limit` (id 0), appended to out as
 * {"runs": [RUN, ...]}. RUN: id, state, name, worker, attempts, max_attempts, created, started, finished
 * (ISO times or null), executed, cached, ms, error, outputs (names). FR_E_NOTFOUND for an unknown id. */
enum fr_status fr_pg_runs_json(struct fr_pg *p, int64_t id, int limit, struct fr_buf *out,
                               struct fr_err *err);

/* The run's state ("queued", "running", "done", "failed", "cancelled"); FR_E_NOTFOUND for an unknown id. */
enum fr_status fr_pg_state(struct fr_pg *p, int64_t id, char *state, size_t cap, struct fr_err *err);
/* Calls fn for each event of run id after seq *after (in order), advancing *after. */
enum fr_status fr_pg_events(struct fr_pg *p, int64_t id, int64_t *after,
                            void (*fn)(void *u, const char *json), void *u, struct fr_err *err);
/* Calls fn for each output file of the run's final attempt. */
enum fr_status fr_pg_outputs(struct fr_pg *p, int64_t id,
                             enum fr_status (*fn)(void *u, const char *name, const void *data, size_t len,
                                                  struct fr_err *err),
                             void *u, struct fr_err *err);

/* LISTEN on channel; fr_pg_wait returns when a notification arrives (its payload copied, when payload is
 * not NULL) or after timeout_s: true when one arrived. wake_fd (-1: none) ends the wait early when it
 * becomes readable. Channels: "flowrun_queue" (a run was queued), "flowrun_cancel" (payload: run id),
 * "flowrun_events" (payload: run id). */
enum fr_status fr_pg_listen(struct fr_pg *p, const char *channel, struct fr_err *err);
bool fr_pg_wait(struct fr_pg *p, double timeout_s, int wake_fd, char *payload, size_t cap);

/* The shared cache tier of an engine (core/flowrun.h struct fr_cache_tier) on this connection, with a size
 * bound: least recently used values are evicted past max_bytes (0: 10 GiB). Values carry a checksum; one
 * that fails it is dropped with an error naming its key, and is a miss. */
void fr_pg_tier(struct fr_pg *p, int64_t max_bytes, struct fr_cache_tier *tier);

#endif
