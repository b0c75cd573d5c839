#!/usr/bin/env bash
# flowrun worker --http and the drain, on a real PostgreSQL server this test starts itself (as
# tests/cli/fleet.sh does): /healthz, /readyz and /metrics (checked by tests/web/promcheck.py) before and
# after a run; /readyz 503 while the database is stopped (worker and serve --db) and with a cache that
# cannot be opened, 200 again when the database is back; SIGTERM during a run that outlives
# --shutdown-timeout: exit 0, the run's lease released (another worker takes it); SIGTERM during a run that
# ends in time: exit 0 and the run done.
# Skips (77) without PostgreSQL support or server, libwebsockets, curl, python3 or the fixtures.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../cli_lib.sh" # ok, bad, require_fixtures
: "${FLOWRUN:?}" "${FR_SRC:?}" "${FR_FIXTURES:?}" "${FR_TEST_TMP:=/tmp}"
"$FLOWRUN" worker --help > /dev/null 2>&1 || { echo "skipped: this flowrun was built without libpq"; exit 77; }
"$FLOWRUN" worker --help | grep -q -- "--http" && "$FLOWRUN" serve --help > /dev/null 2>&1 \
  || { echo "skipped: this flowrun was built without libwebsockets (no --http)"; exit 77; }
command -v curl > /dev/null || { echo "skipped: curl not found"; exit 77; }
command -v python3 > /dev/null || { echo "skipped: python3 not found"; exit 77; }
. "$(dirname "${BASH_SOURCE[0]}")/../pg_lib.sh" # PGBIN, as_pg, pg_start, pgctl
[ -x "$PGBIN/initdb" ] || { echo "skipped: no PostgreSQL server (apt-get install postgresql)"; exit 77; }
require_fixtures
T=$(mktemp -d "${FR_TEST_TMP:-/tmp}/cli_ops_worker.XXXXXX")
chmod 755 "$T"
cd "$T" || exit 1
pg_start "$T" || { bad "$PG_ERR"; exit 1; }
export TMPDIR="$T"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2> /dev/null; done
  wait 2> /dev/null
  pgctl stop -m immediate
  cd / && rm -rf "$T"
}
trap cleanup EXIT
G="$FR_SRC/graphs/tiny-demo.yaml"
M="$FR_FIXTURES/models"
PC="python3 $FR_SRC/tests/web/promcheck.py"
worker() { # name [extra...]: starts a worker with --http on a free port; sets PID_name and URL_name
  local n=$1 port=""
  shift
  "$FLOWRUN" worker --db "$DB" --models "$M" --cache "$T/$n.sqlite" --name "$n" --threads 1 --lease 3 \
    --http 127.0.0.1:0 "$@" > "$T/$n.log" 2>&1 &
  pids+=($!)
  eval "PID_$n=$!"
  for _ in $(seq 100); do
    port=$(sed -n 's/^flowrun worker: http on port \([0-9]*\)$/\1/p' "$T/$n.log")
    [ -n "$port" ] && grep -q "waiting for runs" "$T/$n.log" && break
    sleep 0.1
  done
  [ -n "$port" ] || { bad "worker $n did not start: $(cat "$T/$n.log")"; exit 1; }
  eval "URL_$n=http://127.0.0.1:$port"
}
code() { # name want url: the HTTP status (body in $T/body)
  local got
  got=$(curl -s -o "$T/body" -w '%{http_code}' --max-time 20 "$3")
  [ "$got" = "$2" ] && ok "$1 ($got: $(head -c 100 "$T/body" | tr -d '\n'))" || bad "$1: want $2, got $got: $(head -c 300 "$T/body")"
}
want() { # name url series value: /metrics checked strictly, then one series' value
  local got
  curl -s --max-time 20 "$2/metrics" > "$T/metrics.txt"
  got=$($PC "$T/metrics.txt" --prefix flowrun_ "$3" 2> "$T/pc.err") || { bad "$1: metrics format: $(cat "$T/pc.err")"; return; }
  [ "$got" = "$4" ] && ok "$1: $3 = $4" || bad "$1: $3 = $got, want $4"
}
state() { "$FLOWRUN" runs --db "$DB" --json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["runs"][0]["state"])'; }
field() { "$FLOWRUN" runs --db "$DB" --json "$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['runs'][0]['$2'])"; }
wait_state() { # id state timeout_s
  for _ in $(seq $(($3 * 10))); do [ "$(state "$1")" = "$2" ] && return 0; sleep 0.1; done
  return 1
}
wait_ready() { # name url want_code timeout_s: polls /readyz
  for _ in $(seq $(($4 * 10))); do
    [ "$(curl -s -o "$T/body" -w '%{http_code}' --max-time 5 "$2/readyz")" = "$3" ] && { ok "$1 ($3: $(tr -d '\n' < "$T/body"))"; return 0; }
    sleep 0.1
  done
  bad "$1: /readyz never answered $3 (last: $(cat "$T/body"))"
}

expect 2 "expected ADDRESS:PORT" "$FLOWRUN" worker --db "$DB" --http nonsense

# 1. the endpoints before and after a run
worker a
code "worker /healthz" 200 "$URL_a/healthz"
code "worker /readyz" 200 "$URL_a/readyz"
code "worker: unknown path" 404 "$URL_a/api/runs"
want "before any run" "$URL_a" flowrun_runs_started_total 0
id=$("$FLOWRUN" submit --db "$DB" "$G" --set steps=2 --set size=64 --set seed=1)
wait_state "$id" done 120 || bad "run $id: $(state "$id")"
want "after a run" "$URL_a" flowrun_runs_started_total 1
want "after a run" "$URL_a" 'flowrun_runs_finished_total{status="done"}' 1
want "after a run" "$URL_a" 'flowrun_node_executions_total{type="Sampler"}' 1
want "after a run" "$URL_a" 'flowrun_sampler_steps_total{type="Sampler"}' 2
want "after a run" "$URL_a" flowrun_cache_writable 1

# 2. SIGTERM during a run that outlives --shutdown-timeout: exit 0, the lease released, another worker takes it
kill -9 "$PID_a"; wait "$PID_a" 2> /dev/null
worker b --shutdown-timeout 1
slow=$("$FLOWRUN" submit --db "$DB" "$G" --set steps=1000 --set size=128 --set seed=2)
wait_state "$slow" running 60 || bad "slow run: $(state "$slow")"
kill -TERM "$PID_b"
# until the worker has seen the signal (it exits about 1 s after it, at its deadline)
for _ in $(seq 18); do [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$URL_b/readyz")" = 503 ] && break; sleep 0.05; done
code "worker /readyz while draining" 503 "$URL_b/readyz"
grep -q "shutting down" "$T/body" && ok "it says shutting down" || bad "body: $(cat "$T/body")"
wait "$PID_b"; rc=$?
[ $rc = 0 ] && ok "worker SIGTERM, deadline passed: exit 0" || bad "worker exit $rc: $(tail -3 "$T/b.log")"
grep -q "goes back to the queue" "$T/b.log" && ok "the run goes back to the queue" || bad "log: $(cat "$T/b.log")"
st=$(state "$slow")
[ "$st" = queued ] && ok "its lease is released: queued again" || bad "after the drain the run is $st"
worker c
wait_state "$slow" running 60 && ok "another worker takes it (attempt $(field "$slow" attempts))" || bad "not taken again: $(state "$slow")"
"$FLOWRUN" runs --db "$DB" cancel "$slow" > /dev/null
wait_state "$slow" cancelled 60 || bad "cancel: $(state "$slow")"
kill -9 "$PID_c"; wait "$PID_c" 2> /dev/null

# 3. SIGTERM during a run that ends in time: exit 0, the run done
worker d --shutdown-timeout 120
id=$("$FLOWRUN" submit --db "$DB" "$G" --set steps=40 --set size=128 --set seed=3)
wait_state "$id" running 60 || bad "run: $(state "$id")"
kill -TERM "$PID_d"
wait "$PID_d"; rc=$?
[ $rc = 0 ] && ok "worker SIGTERM, run in time: exit 0" || bad "worker exit $rc"
st=$(state "$id")
[ "$st" = done ] && ok "the run finished before the worker left" || bad "run is $st: $(tail -3 "$T/d.log")"

# 4. /readyz while the database is down (worker and serve --db), and back
worker e
SERVE_OK=0
"$FLOWRUN" serve --port 0 --db "$DB" --graphs "$FR_SRC/graphs" --output "$T/sout" --cache "$T/s.sqlite" > "$T/s.log" 2>&1 &
pids+=($!)
PID_s=$!
for _ in $(seq 100); do
  sport=$(sed -n 's|^flowrun serve: http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$T/s.log")
  [ -n "$sport" ] && { SERVE_OK=1; break; }
  sleep 0.1
done
[ $SERVE_OK = 1 ] || bad "serve --db did not start: $(cat "$T/s.log")"
URL_s="http://127.0.0.1:${sport:-0}"
wait_ready "serve --db /readyz, database up" "$URL_s" 200 20
pgctl stop -m fast && ok "database stopped" || bad "pg_ctl stop"
wait_ready "worker /readyz, database down" "$URL_e" 503 30
grep -q "database" "$T/body" && ok "it names the database" || bad "body: $(cat "$T/body")"
wait_ready "serve --db /readyz, database down" "$URL_s" 503 30
code "worker /healthz, database down" 200 "$URL_e/healthz"
pgctl start && ok "database started" || bad "pg_ctl start"
wait_ready "worker /readyz, database back" "$URL_e" 200 60
wait_ready "serve --db /readyz, database back" "$URL_s" 200 60
kill -TERM "$PID_s"; wait "$PID_s"; rc=$?
[ $rc = 0 ] && ok "serve --db SIGTERM: exit 0" || bad "serve --db exit $rc"
kill -TERM "$PID_e"; wait "$PID_e"; rc=$?
[ $rc = 0 ] && ok "idle worker SIGTERM: exit 0" || bad "idle worker exit $rc"

# 5. a cache that cannot be opened
echo "a file, not a folder" > "$T/afile"
"$FLOWRUN" worker --db "$DB" --models "$M" --cache "$T/afile/cache.sqlite" --name f --http 127.0.0.1:0 > "$T/f.log" 2>&1 &
pids+=($!)
PID_f=$!
for _ in $(seq 100); do grep -q "waiting for runs" "$T/f.log" && break; sleep 0.1; done
URL_f="http://127.0.0.1:$(sed -n 's/^flowrun worker: http on port \([0-9]*\)$/\1/p' "$T/f.log")"
code "worker /readyz, cache that cannot be opened" 503 "$URL_f/readyz"
grep -q "cache" "$T/body" && ok "it names the cache" || bad "body: $(cat "$T/body")"
kill -TERM "$PID_f"; wait "$PID_f"

exit $fail
