/* The fleet's database on PostgreSQL (core/pg/pg.h). Every statement goes through fr__exec, which re-sends
 * it once a lost connection is back (backoff 0.1 s doubling to 5 s, for at most retry_s). Statements that
 * must not run twice are written so that running them twice is harmless (guarded by state and token). */
#include "core/pg/pg.h"

#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>
#include <xxhash.h>

#include "core/alloc.h"
#include "core/cache.h"

struct fr_pg {
  PGconn *c;
  char *url;
  double retry_s;
  char listening[4][32]; /* channels to LISTEN again after a reconnect */
  int n_listening;
  int64_t tier_max;
  int puts;        /* tier puts since the last eviction check */
  atomic_bool *ok; /* fr_pg_watch: false while the connection is lost, true after a statement succeeds */
};

static double fr__now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void fr__sleep(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* The message of libpq's last error on one line. */
static const char *fr__pqmsg(PGconn *c, char *buf, size_t cap) {
  snprintf(buf, cap, "%s", c ? PQerrorMessage(c) : "no connection");
  for (char *q = buf; *q; q++)
    if (*q == '\n')
      *q = *(q + 1) ? ' ' : 0;
  return buf;
}

/* Waits for the connection to come back (a restarted server), with backoff. */
static bool fr__reconnect(struct fr_pg *p) {
  double until = fr__now() + p->retry_s, delay = 0.1;
  if (p->ok)
    atomic_store(p->ok, false);
  while (fr__now() < until) {
    PQreset(p->c);
    if (PQstatus(p->c) == CONNECTION_OK) {
      if (p->ok)
        atomic_store(p->ok, true);
      for (int i = 0; i < p->n_listening; i++) {
        char sql[64];
        snprintf(sql, sizeof sql, "LISTEN %s", p->listening[i]);
        PQclear(PQexec(p->c, sql));
      }
      return true;
    }
    fr__sleep(delay);
    delay = delay * 2 > 5 ? 5 : delay * 2;
  }
  return false;
}

/* Runs sql with text parameters (binary where lens[i] > 0) and the result in text (rfmt 0) or binary (1).
 * A lost connection is re-established and the statement sent again. NULL on failure, err set. */
static PGresult *fr__exec(struct fr_pg *p, const char *sql, int n, const char *const *vals, const int *lens,
                          int rfmt, struct fr_err *err) {
  int fmts[16] = {0};
  for (int i = 0; i < n && i < 16; i++)
    fmts[i] = lens && lens[i] > 0 ? 1 : 0;
  for (int tries = 0;; tries++) {
    PGresult *r = PQexecParams(p->c, sql, n, NULL, vals, lens, fmts, rfmt);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
      if (p->ok)
        atomic_store(p->ok, true);
      return r;
    }
    char m[512];
    if (r && PQresultErrorMessage(r)[0])
      snprintf(m, sizeof m, "%s", PQresultErrorMessage(r));
    else
      fr__pqmsg(p->c, m, sizeof m);
    for (char *q = m; *q; q++)
      if (*q == '\n')
        *q = *(q + 1) ? ' ' : 0;
    PQclear(r);
    if (PQstatus(p->c) != CONNECTION_OK && p->ok)
      atomic_store(p->ok, false);
    if (PQstatus(p->c) != CONNECTION_OK && tries < 3 && fr__reconnect(p))
      continue;
    fr_errf(err, FR_E_IO, "database: %s", m);
    return NULL;
  }
}

static PGresult *fr__exec0(struct fr_pg *p, const char *sql, struct fr_err *err) {
  return fr__exec(p, sql, 0, NULL, NULL, 0, err);
}

/* ---- schema ---- */

static const char *const fr__schema_v1[] = {
    "CREATE TABLE flowrun_runs ("
    " id bigserial PRIMARY KEY,"
    " state text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued','running','done','failed','cancelled')),"
    " name text NOT NULL, dir text, yaml text NOT NULL, params text NOT NULL DEFAULT '{}',"
    " models text[] NOT NULL DEFAULT '{}',"
    " attempts int NOT NULL DEFAULT 0, max_attempts int NOT NULL DEFAULT 3, done_attempt int,"
    " worker text, lease_until timestamptz, lease_token bigint, cancel_requested bool NOT NULL DEFAULT false,"
    " error text, executed int, cached int, ms double precision,"
    " created timestamptz NOT NULL DEFAULT now(), started timestamptz, finished timestamptz)",
    "CREATE INDEX flowrun_runs_state ON flowrun_runs (state, id)",
    "CREATE SEQUENCE flowrun_lease_tokens",
    "CREATE TABLE flowrun_events (run_id bigint NOT NULL REFERENCES flowrun_runs(id) ON DELETE CASCADE,"
    " seq int NOT NULL, attempt int NOT NULL, event text NOT NULL, PRIMARY KEY (run_id, seq))",
    "CREATE TABLE flowrun_outputs (run_id bigint NOT NULL REFERENCES flowrun_runs(id) ON DELETE CASCADE,"
    " attempt int NOT NULL, name text NOT NULL, data bytea NOT NULL, PRIMARY KEY (run_id, attempt, name))",
    "CREATE TABLE flowrun_cache (key bytea PRIMARY KEY, value bytea NOT NULL, checksum bigint NOT NULL,"
    " bytes bigint NOT NULL, last_used timestamptz NOT NULL DEFAULT now())",
    "CREATE INDEX flowrun_cache_lru ON flowrun_cache (last_used)",
};

static enum fr_status fr__migrate(struct fr_pg *p, struct fr_err *err) {
  PGresult *r = fr__exec0(p, "BEGIN", err);
  if (!r)
    return FR_E_IO;
  PQclear(r);
  enum fr_status rc = FR_OK;
  /* one migrating process at a time (workers starting together) */
  if (!(r = fr__exec0(p, "SELECT pg_advisory_xact_lock(7238561893)", err)) ||
      (PQclear(r),
       !(r = fr__exec0(p, "CREATE TABLE IF NOT EXISTS flowrun_meta (key text PRIMARY KEY, value text)",
                       err)))) {
    rc = FR_E_IO;
    goto out;
  }
  PQclear(r);
  if (!(r = fr__exec0(p, "SELECT value FROM flowrun_meta WHERE key = 'schema_version'", err))) {
    rc = FR_E_IO;
    goto out;
  }
  int have = 0;
  if (PQntuples(r) == 1) {
    const char *v = PQgetvalue(r, 0, 0);
    char *end;
    long n = strtol(v, &end, 10);
    if (!*v || *end || n < 1) {
      rc = fr_errf(err, FR_E_FORMAT, "database: flowrun_meta has a schema_version '%s' that is not a version",
                   v);
      PQclear(r);
      goto out;
    }
    have = (int)n;
  }
  PQclear(r);
  if (have > FR_PG_SCHEMA_VERSION) {
    rc = fr_errf(err, FR_E_UNSUPPORTED,
                 "database: its schema is version %d, newer than this flowrun's %d: upgrade flowrun", have,
                 FR_PG_SCHEMA_VERSION);
    goto out;
  }
  if (have < 1) {
    for (size_t i = 0; i < sizeof fr__schema_v1 / sizeof fr__schema_v1[0]; i++) {
      if (!(r = fr__exec0(p, fr__schema_v1[i], err))) {
        rc = FR_E_IO;
        goto out;
      }
      PQclear(r);
    }
  }
  /* later versions: if (have < 2) { ALTER ... } */
  if (have < FR_PG_SCHEMA_VERSION) {
    char sql[160];
    snprintf(
        sql, sizeof sql,
        "INSERT INTO flowrun_meta VALUES ('schema_version', '%d') ON CONFLICT (key) DO UPDATE SET value = "
        "EXCLUDED.value",
        FR_PG_SCHEMA_VERSION);
    if (!(r = fr__exec0(p, sql, err))) {
      rc = FR_E_IO;
      goto out;
    }
    PQclear(r);
  }
out:
  r = fr__exec0(p, rc == FR_OK ? "COMMIT" : "ROLLBACK", rc == FR_OK ? err : NULL);
  if (!r && rc == FR_OK)
    rc = FR_E_IO;
  PQclear(r);
  return rc;
}

enum fr_status fr_pg_open(const char *url, double retry_s, struct fr_pg **out, struct fr_err *err) {
  *out = NULL;
  struct fr_pg *p = fr_calloc(1, sizeof *p);
  if (!p || !(p->url = fr_strdup(url))) {
    fr_free(p);
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  }
  p->retry_s = retry_s > 0 ? retry_s : 60;
  p->c = PQconnectdb(url);
  if (PQstatus(p->c) != CONNECTION_OK) {
    char m[512];
    fr_errf(err, FR_E_IO, "database %s: cannot connect: %s", url, fr__pqmsg(p->c, m, sizeof m));
    fr_pg_close(p);
    return FR_E_IO;
  }
  PQclear(PQexec(p->c, "SET client_min_messages = warning"));
  enum fr_status rc = fr__migrate(p, err);
  if (rc) {
    fr_pg_close(p);
    return rc;
  }
  *out = p;
  return FR_OK;
}

void fr_pg_watch(struct fr_pg *p, atomic_bool *ok) {
  p->ok = ok;
}

void fr_pg_close(struct fr_pg *p) {
  if (!p)
    return;
  PQfinish(p->c);
  fr_free(p->url);
  fr_free(p);
}

/* ---- queue ---- */

/* A text[] literal {"a","b"} of names (quotes and backslashes escaped). */
static void fr__text_array(struct fr_buf *b, const char *const *v, int n) {
  fr_buf_putc(b, '{');
  for (int i = 0; i < n; i++) {
    fr_buf_puts(b, i ? ",\"" : "\"");
    for (const char *q = v[i]; *q; q++) {
      if (*q == '"' || *q == '\\')
        fr_buf_putc(b, '\\');
      fr_buf_putc(b, *q);
    }
    fr_buf_putc(b, '"');
  }
  fr_buf_putc(b, '}');
}

enum fr_status fr_pg_submit(struct fr_pg *p, const struct fr_pg_submit *s, int64_t *id, struct fr_err *err) {
  struct fr_buf models = {0};
  fr__text_array(&models, s->models, s->n_models);
  char att[16];
  snprintf(att, sizeof att, "%d", s->max_attempts > 0 ? s->max_attempts : 3);
  const char *v[6] = {s->name, s->dir, s->yaml, s->params_json ? s->params_json : "{}", models.data, att};
  PGresult *r = models.oom
                    ? NULL
                    : fr__exec(p,
                               "WITH ins AS (INSERT INTO flowrun_runs (name, dir, yaml, params, models, "
                               "max_attempts) VALUES ($1, $2, $3, $4, $5::text[], $6::int) RETURNING id) "
                               "SELECT id, pg_notify('flowrun_queue', id::text) FROM ins",
                               6, v, NULL, 0, err);
  fr_buf_free(&models);
  if (!r)
    return models.oom ? fr_errf(err, FR_E_NOMEM, "out of memory") : FR_E_IO;
  *id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
  PQclear(r);
  return FR_OK;
}

void fr_pg_claim_free(struct fr_pg_claim *c) {
  fr_free(c->yaml);
  fr_free(c->name);
  fr_free(c->dir);
  fr_free(c->params_json);
  for (int i = 0; i < c->n_models; i++)
    fr_free(c->models[i]);
  fr_free(c->models);
  memset(c, 0, sizeof *c);
}

/* Splits a text[] in PostgreSQL's text output ({a,"b c"}) into names. */
static int fr__parse_array(const char *s, char ***out) {
  *out = NULL;
  int n = 0, cap = 0;
  if (*s == '{')
    s++;
  while (*s && *s != '}') {
    char buf[1024];
    size_t k = 0;
    if (*s == '"') {
      for (s++; *s && *s != '"'; s++) {
        if (*s == '\\' && s[1])
          s++;
        if (k + 1 < sizeof buf)
          buf[k++] = *s;
      }
      if (*s == '"')
        s++;
    } else {
      for (; *s && *s != ',' && *s != '}'; s++)
        if (k + 1 < sizeof buf)
          buf[k++] = *s;
    }
    buf[k] = 0;
    if (n == cap) {
      cap = cap ? cap * 2 : 8;
      char **grown = fr_realloc(*out, (size_t)cap * sizeof **out);
      if (!grown)
        break;
      *out = grown;
    }
    (*out)[n] = fr_strdup(buf);
    if ((*out)[n])
      n++;
    if (*s == ',')
      s++;
  }
  return n;
}

static void fr__interval(char *buf, size_t cap, double s) {
  snprintf(buf, cap, "%.3f seconds", s);
}

enum fr_status fr_pg_take(struct fr_pg *p, const char *worker, const char *const *held, int n_held,
                          double lease_s, struct fr_pg_claim *c, struct fr_err *err) {
  memset(c, 0, sizeof *c);
  /* runs whose lease ran out with no attempt left: failed, with what happened, and their final events */
  PGresult *r = fr__exec0(
      p,
      "WITH dead AS (UPDATE flowrun_runs SET state = 'failed', finished = now(), lease_until = NULL,"
      " error = format('the run was taken %s times and each worker stopped or lost its lease (last: %s)',"
      " attempts, coalesce(worker, '?'))"
      " WHERE state = 'running' AND lease_until < now() AND attempts >= max_attempts RETURNING id, error),"
      " seqs AS (SELECT dead.id, dead.error, coalesce((SELECT max(seq) FROM flowrun_events e WHERE e.run_id ="
      " dead.id), 0) AS s FROM dead),"
      " ev AS (INSERT INTO flowrun_events (run_id, seq, attempt, event)"
      " SELECT id, s + 1, 0, json_build_object('event', 'error', 'node', null, 'message', error, 'status',"
      " 'device')::text FROM seqs UNION ALL SELECT id, s + 2, 0, '{\"event\":\"run_done\",\"executed\":0,"
      "\"cached\":0,\"ms\":0,\"status\":\"device\"}' FROM seqs RETURNING run_id)"
      " SELECT count(*) FROM ev",
      err);
  if (!r)
    return FR_E_IO;
  PQclear(r);
  struct fr_buf held_arr = {0};
  fr__text_array(&held_arr, held, n_held);
  char lease[48];
  fr__interval(lease, sizeof lease, lease_s);
  const char *v[3] = {worker, held_arr.data, lease};
  r = held_arr.oom
          ? NULL
          : fr__exec(
                p,
                "UPDATE flowrun_runs SET state = 'running', worker = $1, attempts = attempts + 1,"
                " lease_until = now() + $3::interval, lease_token = nextval('flowrun_lease_tokens'),"
                " started = coalesce(started, now())"
                " WHERE id = (SELECT id FROM flowrun_runs WHERE (state = 'queued' OR (state = 'running' AND"
                " lease_until < now() AND attempts < max_attempts)) AND NOT cancel_requested"
                " ORDER BY (models && $2::text[]) DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED)"
                " RETURNING id, lease_token, attempts, yaml, name, coalesce(dir, ''), params, models,"
                " (SELECT coalesce(max(seq), 0) FROM flowrun_events e WHERE e.run_id = flowrun_runs.id)",
                3, v, NULL, 0, err);
  fr_buf_free(&held_arr);
  if (!r)
    return held_arr.oom ? fr_errf(err, FR_E_NOMEM, "out of memory") : FR_E_IO;
  if (PQntuples(r) == 0) {
    PQclear(r);
    return FR_E_NOTFOUND;
  }
  c->id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
  c->token = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
  c->attempt = atoi(PQgetvalue(r, 0, 2));
  c->yaml = fr_strdup(PQgetvalue(r, 0, 3));
  c->name = fr_strdup(PQgetvalue(r, 0, 4));
  c->dir = fr_strdup(PQgetvalue(r, 0, 5));
  c->params_json = fr_strdup(PQgetvalue(r, 0, 6));
  c->n_models = fr__parse_array(PQgetvalue(r, 0, 7), &c->models);
  c->seq = atoi(PQgetvalue(r, 0, 8));
  PQclear(r);
  if (!c->yaml || !c->name || !c->dir || !c->params_json) {
    fr_pg_claim_free(c);
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  }
  return FR_OK;
}

enum fr_status fr_pg_renew(struct fr_pg *p, const struct fr_pg_claim *c, double lease_s, bool *lost,
                           bool *cancel, struct fr_err *err) {
  char id[24], tok[24], lease[48];
  snprintf(id, sizeof id, "%lld", (long long)c->id);
  snprintf(tok, sizeof tok, "%lld", (long long)c->token);
  fr__interval(lease, sizeof lease, lease_s);
  const char *v[3] = {id, tok, lease};
  PGresult *r =
      fr__exec(p,
               "UPDATE flowrun_runs SET lease_until = now() + $3::interval WHERE id = $1::bigint AND"
               " lease_token = $2::bigint AND state = 'running' RETURNING cancel_requested",
               3, v, NULL, 0, err);
  if (!r)
    return FR_E_IO;
  *lost = PQntuples(r) == 0;
  *cancel = !*lost && PQgetvalue(r, 0, 0)[0] == 't';
  PQclear(r);
  return FR_OK;
}

enum fr_status fr_pg_event(struct fr_pg *p, struct fr_pg_claim *c, const char *json, struct fr_err *err) {
  char id[24], tok[24], seq[16], att[16];
  snprintf(id, sizeof id, "%lld", (long long)c->id);
  snprintf(tok, sizeof tok, "%lld", (long long)c->token);
  snprintf(seq, sizeof seq, "%d", c->seq + 1);
  snprintf(att, sizeof att, "%d", c->attempt);
  const char *v[5] = {id, seq, att, json, tok};
  PGresult *r =
      fr__exec(p,
               "WITH ins AS (INSERT INTO flowrun_events (run_id, seq, attempt, event)"
               " SELECT $1::bigint, $2::int, $3::int, $4 WHERE EXISTS (SELECT 1 FROM flowrun_runs WHERE"
               " id = $1::bigint AND lease_token = $5::bigint AND state = 'running')"
               " ON CONFLICT DO NOTHING RETURNING run_id)"
               " SELECT pg_notify('flowrun_events', run_id::text) FROM ins",
               5, v, NULL, 0, err);
  if (!r)
    return FR_E_IO;
  if (PQntuples(r) == 1)
    c->seq++;
  PQclear(r);
  return FR_OK;
}

enum fr_status fr_pg_output(struct fr_pg *p, const struct fr_pg_claim *c, const char *name, const void *data,
                            size_t len, struct fr_err *err) {
  char id[24], tok[24], att[16];
  snprintf(id, sizeof id, "%lld", (long long)c->id);
  snprintf(tok, sizeof tok, "%lld", (long long)c->token);
  snprintf(att, sizeof att, "%d", c->attempt);
  if (len > 0x7fffffff)
    return fr_errf(err, FR_E_INVALID, "output %s: %zu bytes is too large to store", name, len);
  const char *v[5] = {id, att, name, (const char *)data, tok};
  int lens[5] = {0, 0, 0, (int)len, 0};
  PGresult *r =
      fr__exec(p,
               "INSERT INTO flowrun_outputs (run_id, attempt, name, data) SELECT $1::bigint, $2::int, $3,"
               " $4::bytea WHERE EXISTS (SELECT 1 FROM flowrun_runs WHERE id = $1::bigint AND"
               " lease_token = $5::bigint AND state = 'running') ON CONFLICT DO NOTHING",
               5, v, lens, 0, err);
  if (!r)
    return FR_E_IO;
  PQclear(r);
  return FR_OK;
}

enum fr_status fr_pg_finish(struct fr_pg *p, struct fr_pg_claim *c, const char *state, const char *error,
                            const struct fr_run_summary *sum, const char *done_json, bool *lost,
                            struct fr_err *err) {
  char id[24], tok[24], seq[16], att[16], ex[16], ca[16], ms[32];
  snprintf(id, sizeof id, "%lld", (long long)c->id);
  snprintf(tok, sizeof tok, "%lld", (long long)c->token);
  snprintf(seq, sizeof seq, "%d", c->seq + 1);
  snprintf(att, sizeof att, "%d", c->attempt);
  snprintf(ex, sizeof ex, "%d", sum ? sum->executed : 0);
  snprintf(ca, sizeof ca, "%d", sum ? sum->cached : 0);
  snprintf(ms, sizeof ms, "%.3f", sum ? sum->ms : 0.0);
  const char *v[10] = {id, tok, state, error, ex, ca, ms, seq, att, done_json};
  PGresult *r = fr__exec(
      p,
      "WITH upd AS (UPDATE flowrun_runs SET state = $3, error = $4, executed = $5::int, cached = $6::int,"
      " ms = $7::float8, finished = now(), lease_until = NULL, done_attempt = attempts"
      " WHERE id = $1::bigint AND lease_token = $2::bigint AND state = 'running' RETURNING id),"
      " ev AS (INSERT INTO flowrun_events (run_id, seq, attempt, event) SELECT id, $8::int, $9::int, $10 "
      "FROM upd"
      " ON CONFLICT DO NOTHING RETURNING run_id)"
      " SELECT (SELECT count(*) FROM upd), pg_notify('flowrun_events', $1::text)",
      10, v, NULL, 0, err);
  if (!r)
    return FR_E_IO;
  *lost = strcmp(PQgetvalue(r, 0, 0), "0") == 0;
  PQclear(r);
  if (*lost) {
    /* sent twice over a dropped connection: the first one may have ended it, with our token */
    const char *w[3] = {id, tok, state};
    r = fr__exec(
        p, "SELECT 1 FROM flowrun_runs WHERE id = $1::bigint AND lease_token = $2::bigint AND state = $3", 3,
        w, NULL, 0, err);
    if (r && PQntuples(r) == 1)
      *lost = false;
    PQclear(r);
  }
  if (!*lost)
    c->seq++;
  return FR_OK;
}

enum fr_status fr_pg_release(struct fr_pg *p, const struct fr_pg_claim *c, struct fr_err *err) {
  char id[24], tok[24];
  snprintf(id, sizeof id, "%lld", (long long)c->id);
  snprintf(tok, sizeof tok, "%lld", (long long)c->token);
  const char *v[2] = {id, tok};
  PGresult *r =
      fr__exec(p,
               "WITH rel AS (UPDATE flowrun_runs SET state = 'queued', worker = NULL, lease_until = NULL,"
               " attempts = greatest(attempts - 1, 0) WHERE id = $1::bigint AND lease_token = $2::bigint"
               " AND state = 'running' RETURNING id) SELECT pg_notify('flowrun_queue', id::text) FROM rel",
               2, v, NULL, 0, err);
  if (!r)
    return FR_E_IO;
  PQclear(r);
  return FR_OK;
}

enum fr_status fr_pg_cancel(struct fr_pg *p, int64_t id, struct fr_err *err) {
  char ids[24];
  snprintf(ids, sizeof ids, "%lld", (long long)id);
  const char *v[1] = {ids};
  PGresult *r = fr__exec(
      p,
      "WITH cur AS (SELECT id, state FROM flowrun_runs WHERE id = $1::bigint FOR UPDATE),"
      " upd AS (UPDATE flowrun_runs r SET cancel_requested = true,"
      " state = CASE WHEN r.state = 'queued' THEN 'cancelled' ELSE r.state END,"
      " finished = CASE WHEN r.state = 'queued' THEN now() ELSE r.finished END,"
      " error = CASE WHEN r.state = 'queued' THEN 'cancelled before it started' ELSE r.error END"
      " FROM cur WHERE r.id = cur.id AND cur.state IN ('queued', 'running') RETURNING r.id, cur.state AS "
      "was),"
      " ev AS (INSERT INTO flowrun_events (run_id, seq, attempt, event) SELECT id, 1 + coalesce((SELECT "
      "max(seq)"
      " FROM flowrun_events e WHERE e.run_id = upd.id), 0), 0, '{\"event\":\"run_done\",\"executed\":0,"
      "\"cached\":0,\"ms\":0,\"status\":\"cancelled\"}' FROM upd WHERE was = 'queued' RETURNING run_id)"
      " SELECT (SELECT state FROM cur), (SELECT was FROM upd), pg_notify('flowrun_cancel', $1::text),"
      " pg_notify('flowrun_events', $1::text)",
      1, v, NULL, 0, err);
  if (!r)
    return FR_E_IO;
  enum fr_status rc = FR_OK;
  if (PQgetisnull(r, 0, 0))
    rc = fr_errf(err, FR_E_NOTFOUND, "run %lld: no such run", (long long)id);
  else if (PQgetisnull(r, 0, 1))
    rc = fr_errf(err, FR_E_INVALID, "run %lld has already ended (%s)", (long long)id, PQgetvalue(r, 0, 0));
  PQclear(r);
  return rc;
}

enum fr_status fr_pg_state(struct fr_pg *p, int64_t id, char *state, size_t cap, struct fr_err *err) {
  char ids[24];
  snprintf(ids, sizeof ids, "%lld", (long long)id);
  const char *v[1] = {ids};
  PGresult *r = fr__exec(p, "SELECT state FROM flowrun_runs WHERE id = $1::bigint", 1, v, NULL, 0, err);
  if (!r)
    return FR_E_IO;
  enum fr_status rc = FR_OK;
  if (PQntuples(r) == 0)
    rc = fr_errf(err, FR_E_NOTFOUND, "run %lld: no such run", (long long)id);
  else
    snprintf(state, cap, "%s", PQgetvalue(r, 0, 0));
  PQclear(r);
  return rc;
}

enum fr_status fr_pg_events(struct fr_pg *p, int64_t id, int64_t *after,
                            void (*fn)(void *u, const char *json), void *u, struct fr_err *err) {
  char ids[24], aft[24];
  snprintf(ids, sizeof ids, "%lld", (long long)id);
  snprintf(aft, sizeof aft, "%lld", (long long)*after);
  const char *v[2] = {ids, aft};
  PGresult *r = fr__exec(
      p, "SELECT seq, event FROM flowrun_events WHERE run_id = $1::bigint AND seq > $2::int ORDER BY seq", 2,
      v, NULL, 0, err);
  if (!r)
    return FR_E_IO;
  for (int i = 0; i < PQntuples(r); i++) {
    *after = strtoll(PQgetvalue(r, i, 0), NULL, 10);
    fn(u, PQgetvalue(r, i, 1));
  }
  PQclear(r);
  return FR_OK;
}

enum fr_status fr_pg_outputs(struct fr_pg *p, int64_t id,
                             enum fr_status (*fn)(void *u, const char *name, const void *data, size_t len,
                                                  struct fr_err *err),
                             void *u, struct fr_err *err) {
  char ids[24];
  snprintf(ids, sizeof ids, "%lld", (long long)id);
  const char *v[1] = {ids};
  PGresult *r =
      fr__exec(p,
               "SELECT o.name, o.data FROM flowrun_outputs o JOIN flowrun_runs r ON r.id = o.run_id AND"
               " o.attempt = r.done_attempt WHERE o.run_id = $1::bigint ORDER BY o.name",
               1, v, NULL, 1, err);
  if (!r)
    return FR_E_IO;
  enum fr_status rc = FR_OK;
  for (int i = 0; i < PQntuples(r) && !rc; i++) {
    char name[1024];
    snprintf(name, sizeof name, "%.*s", PQgetlength(r, i, 0), PQgetvalue(r, i, 0));
    rc = fn(u, name, PQgetvalue(r, i, 1), (size_t)PQgetlength(r, i, 1), err);
  }
  PQclear(r);
  return rc;
}

enum fr_status fr_pg_runs_json(struct fr_pg *p, int64_t id, int limit, struct fr_buf *out,
                               struct fr_err *err) {
  char ids[24], lim[16];
  snprintf(ids, sizeof ids, "%lld", (long long)id);
  snprintf(lim, sizeof lim, "%d", limit > 0 ? limit : 100);
  const char *v[2] = {ids, lim};
  PGresult *r = fr__exec(
      p,
      "SELECT coalesce(json_agg(x ORDER BY x.id), '[]')::text FROM (SELECT id, state, name, worker, attempts,"
      " max_attempts, to_char(created AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS created,"
      " to_char(started AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS started,"
      " to_char(finished AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS finished,"
      " executed, cached, ms, error, coalesce((SELECT json_agg(o.name ORDER BY o.name) FROM flowrun_outputs o"
      " WHERE o.run_id = r.id AND o.attempt = r.done_attempt), '[]') AS outputs"
      " FROM flowrun_runs r WHERE ($1::bigint = 0 OR id = $1::bigint) ORDER BY id DESC LIMIT $2::int) x",
      2, v, NULL, 0, err);
  if (!r)
    return FR_E_IO;
  const char *runs = PQgetvalue(r, 0, 0);
  enum fr_status rc = FR_OK;
  if (id > 0 && !strcmp(runs, "[]"))
    rc = fr_errf(err, FR_E_NOTFOUND, "run %lld: no such run", (long long)id);
  else
    fr_buf_printf(out, "{\"runs\": %s}", runs);
  PQclear(r);
  return rc;
}

/* ---- notifications ---- */

enum fr_status fr_pg_listen(struct fr_pg *p, const char *channel, struct fr_err *err) {
  char sql[64];
  snprintf(sql, sizeof sql, "LISTEN %s", channel);
  PGresult *r = fr__exec0(p, sql, err);
  if (!r)
    return FR_E_IO;
  PQclear(r);
  if (p->n_listening < 4)
    snprintf(p->listening[p->n_listening++], sizeof p->listening[0], "%s", channel);
  return FR_OK;
}

bool fr_pg_wait(struct fr_pg *p, double timeout_s, int wake_fd, char *payload, size_t cap) {
  double until = fr__now() + timeout_s;
  for (;;) {
    PQconsumeInput(p->c);
    PGnotify *n = PQnotifies(p->c);
    if (n) {
      if (payload)
        snprintf(payload, cap, "%s", n->extra);
      PQfreemem(n);
      return true;
    }
    double left = until - fr__now();
    if (left <= 0)
      return false;
    int fd = PQsocket(p->c);
    if (fd < 0) { /* no connection: wait, then try to get it back */
      fr__sleep(left < 0.2 ? left : 0.2);
      if (PQstatus(p->c) != CONNECTION_OK)
        fr__reconnect(p);
      continue;
    }
    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(fd, &rd);
    if (wake_fd >= 0)
      FD_SET(wake_fd, &rd);
    struct timeval tv = {(time_t)left, (suseconds_t)((left - (double)(time_t)left) * 1e6)};
    int k = select((fd > wake_fd ? fd : wake_fd) + 1, &rd, NULL, NULL, &tv);
    if (k > 0 && wake_fd >= 0 && FD_ISSET(wake_fd, &rd))
      return false;
    if (k > 0 && FD_ISSET(fd, &rd) && !PQconsumeInput(p->c) && PQstatus(p->c) != CONNECTION_OK)
      fr__reconnect(p);
  }
}

/* ---- the shared cache tier ---- */

static enum fr_status fr__tier_get(void *user, const struct fr_key *key, void **blob, size_t *len,
                                   struct fr_err *err) {
  struct fr_pg *p = user;
  const char *v[1] = {(const char *)key->b};
  int lens[1] = {16};
  PGresult *r =
      fr__exec(p, "UPDATE flowrun_cache SET last_used = now() WHERE key = $1 RETURNING value, checksum", 1, v,
               lens, 1, err);
  if (!r)
    return FR_E_IO;
  if (PQntuples(r) == 0) {
    PQclear(r);
    return FR_E_NOTFOUND;
  }
  size_t n = (size_t)PQgetlength(r, 0, 0);
  const char *cs = PQgetvalue(r, 0, 1);
  uint64_t want = 0;
  for (int i = 0; i < 8; i++)
    want = want << 8 | (uint8_t)cs[i];
  if (XXH3_64bits(PQgetvalue(r, 0, 0), n) != want) {
    PQclear(r);
    char hex[33];
    for (int i = 0; i < 16; i++)
      snprintf(hex + 2 * i, 3, "%02x", key->b[i]);
    PQclear(fr__exec(p, "DELETE FROM flowrun_cache WHERE key = $1", 1, v, lens, 0, NULL));
    return fr_errf(err, FR_E_CACHE, "shared cache entry %s failed its checksum: dropped", hex);
  }
  *blob = fr_malloc(n ? n : 1);
  if (!*blob) {
    PQclear(r);
    return fr_errf(err, FR_E_NOMEM, "out of memory");
  }
  memcpy(*blob, PQgetvalue(r, 0, 0), n);
  *len = n;
  PQclear(r);
  return FR_OK;
}

static bool fr__tier_has(void *user, const struct fr_key *key) {
  struct fr_pg *p = user;
  const char *v[1] = {(const char *)key->b};
  int lens[1] = {16};
  PGresult *r = fr__exec(p, "SELECT 1 FROM flowrun_cache WHERE key = $1", 1, v, lens, 0, NULL);
  bool has = r && PQntuples(r) == 1;
  PQclear(r);
  return has;
}

static enum fr_status fr__tier_put(void *user, const struct fr_key *key, const void *blob, size_t len,
                                   struct fr_err *err) {
  struct fr_pg *p = user;
  if ((int64_t)len > p->tier_max || len > 0x7fffffff)
    return FR_OK; /* larger than the whole bound: not kept */
  char cs[8], bytes[24];
  uint64_t h = XXH3_64bits(blob, len);
  for (int i = 0; i < 8; i++)
    cs[i] = (char)(h >> (56 - 8 * i));
  snprintf(bytes, sizeof bytes, "%zu", len);
  const char *v[4] = {(const char *)key->b, (const char *)blob, cs, bytes};
  int lens[4] = {16, (int)len, 8, 0};
  PGresult *r =
      fr__exec(p,
               "INSERT INTO flowrun_cache (key, value, checksum, bytes) VALUES ($1, $2,"
               " ('x' || encode($3, 'hex'))::bit(64)::bigint, $4::bigint)"
               " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, checksum = EXCLUDED.checksum,"
               " bytes = EXCLUDED.bytes, last_used = now()",
               4, v, lens, 0, err);
  if (!r)
    return FR_E_IO;
  PQclear(r);
  if (++p->puts >= 16) { /* least recently used out, past the bound */
    p->puts = 0;
    char max[24];
    snprintf(max, sizeof max, "%lld", (long long)p->tier_max);
    const char *w[1] = {max};
    r = fr__exec(
        p,
        "DELETE FROM flowrun_cache WHERE key IN (SELECT key FROM (SELECT key, sum(bytes) OVER (ORDER BY"
        " last_used DESC, key) AS acc FROM flowrun_cache) t WHERE acc > $1::bigint)",
        1, w, NULL, 0, err);
    if (!r)
      return FR_E_IO;
    PQclear(r);
  }
  return FR_OK;
}

void fr_pg_tier(struct fr_pg *p, int64_t max_bytes, struct fr_cache_tier *tier) {
  p->tier_max = max_bytes > 0 ? max_bytes : (int64_t)10 << 30;
  p->puts = 15; /* the first put checks the bound */
  *tier = (struct fr_cache_tier){.get = fr__tier_get, .has = fr__tier_has, .put = fr__tier_put, .user = p};
}
