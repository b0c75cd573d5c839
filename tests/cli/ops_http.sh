#!/usr/bin/env bash
# flowrun serve for operations (docs/operations.md): /healthz and /readyz in each state (ready, cache that
# cannot be opened, shutting down), /metrics checked by a strict exposition-format parser
# (tests/web/promcheck.py) before and after runs of the tiny SD graph, with the counts each run must add
# worked out from the graph (7 nodes, 2 TextEncode, one Sampler of N steps); the queue limit and the
# per-client rate limit answered 429; --max-concurrent-runs 2 running two runs at once; SIGTERM during a
# run: the run finishes within --shutdown-timeout (or is cancelled when it passes), exit status 0, the
# cache passes PRAGMA integrity_check and no half-written picture is left.
# Skips (77) without serve (libwebsockets), curl, python3 or the fixtures.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../cli_lib.sh" # ok, bad, expect, require_fixtures
: "${FLOWRUN:?}" "${FR_SRC:?}" "${FR_TEST_TMP:?}" "${FR_FIXTURES:?}"
command -v curl > /dev/null || { echo "skipped: curl not found"; exit 77; }
command -v python3 > /dev/null || { echo "skipped: python3 not found"; exit 77; }
"$FLOWRUN" serve --help > /dev/null 2>&1 || { echo "skipped: this flowrun was built without serve (libwebsockets)"; exit 77; }
require_fixtures

T="$FR_TEST_TMP/ops_http"
rm -rf "$T" && mkdir -p "$T/graphs" "$T/out" && cd "$T" || exit 1
cp "$FR_SRC/graphs/tiny-demo.yaml" "$T/graphs/"
PC="python3 $FR_SRC/tests/web/promcheck.py"
SERVER=""
cleanup() { [ -n "$SERVER" ] && kill -9 "$SERVER" 2> /dev/null; wait 2> /dev/null; }
trap cleanup EXIT

start_server() { # args...: sets SERVER, U
  : > "$T/server.log"
  "$FLOWRUN" serve --port 0 --graphs "$T/graphs" --output "$T/out" --models "$FR_FIXTURES/models" --threads 1 \
    "$@" > "$T/server.log" 2>&1 &
  SERVER=$!
  local port=""
  for _ in $(seq 100); do
    port=$(sed -n 's|^flowrun serve: http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$T/server.log")
    [ -n "$port" ] && break
    kill -0 "$SERVER" 2> /dev/null || break
    sleep 0.1
  done
  [ -n "$port" ] || { bad "server did not start: $(cat "$T/server.log")"; exit 1; }
  U="http://127.0.0.1:$port"
}
stop_server() { kill "$SERVER" 2> /dev/null; wait "$SERVER"; local rc=$?; SERVER=""; return $rc; }
# code NAME WANT curl-args...: the HTTP status (body in $T/body)
code() {
  local name=$1 want=$2 got
  shift 2
  got=$(curl -s -o "$T/body" -D "$T/headers" -w '%{http_code}' --max-time 20 "$@")
  [ "$got" = "$want" ] && ok "$name ($got: $(head -c 100 "$T/body" | tr -d '\n'))" \
    || bad "$name: want $want, got $got: $(head -c 300 "$T/body")"
}
# metrics SERIES...: scrapes /metrics, checks the whole text strictly, prints each series' value
metrics() {
  curl -s --max-time 20 "$U/metrics" > "$T/metrics.txt"
  $PC "$T/metrics.txt" --prefix flowrun_ "$@" 2> "$T/promcheck.err" || { bad "metrics format: $(cat "$T/promcheck.err")"; return 1; }
}
# want NAME SERIES VALUE: one series has the value
want() {
  local got
  got=$(metrics "$2")
  [ "$got" = "$3" ] && ok "$1: $2 = $3" || bad "$1: $2 = $got, want $3"
}
submit() { # params-json-members: prints the run id ("" when refused)
  curl -s --max-time 20 -X POST -d "{\"path\":\"tiny-demo.yaml\",\"params\":{$1}}" "$U/api/run" | sed -n 's/^{"id":\([0-9]*\)}$/\1/p'
}
state() { curl -s --max-time 20 "$U/api/runs" | python3 -c "import json,sys; print({r['id']: r['state'] for r in json.load(sys.stdin)['runs']}.get($1, 'absent'))"; }
wait_state() { # id state timeout_s (an ended run in another state ends the wait)
  local st
  for _ in $(seq $(($3 * 10))); do
    st=$(state "$1")
    [ "$st" = "$2" ] && return 0
    case "$st" in done | error | cancelled | absent) return 1 ;; esac
    sleep 0.1
  done
  return 1
}
cancel() { curl -s --max-time 20 -X POST -d "{\"id\":$1}" "$U/api/cancel" > /dev/null; }
SLOW='"steps":1000,"size":128' # minutes: cancelled long before it ends

# -- 0. bad values of the new options: exit 2 naming the option ------------------------------------------
expect 2 "--rate-limit 5/hour: expected N/s or N/min" "$FLOWRUN" serve --port 0 --rate-limit 5/hour
expect 2 "--rate-limit 0/s: expected N/s or N/min" "$FLOWRUN" serve --port 0 --rate-limit 0/s
expect 2 "--max-concurrent-runs 0: expected a number from 1 to 16" "$FLOWRUN" serve --port 0 --max-concurrent-runs 0
expect 2 "--shutdown-timeout -1: expected seconds" "$FLOWRUN" serve --port 0 --shutdown-timeout -1

# -- 1. the endpoints, and metrics before and after runs --------------------------------------------------
start_server --cache "$T/c1.sqlite"
code "/healthz" 200 "$U/healthz"
grep -qx ok "$T/body" && ok "/healthz says ok" || bad "/healthz body: $(cat "$T/body")"
code "/readyz" 200 "$U/readyz"
code "/readyz refuses POST like any other route" 404 -X POST -d '{}' "$U/readyz"
want "before any run" flowrun_runs_started_total 0
want "before any run" 'flowrun_runs_finished_total{status="done"}' absent
want "before any run" flowrun_queue_depth 0
want "one runner by default" flowrun_runners 1
want "the cache is writable" flowrun_cache_writable 1
# run 1: everything executes (an empty cache): 2 TextEncode, one Sampler of 3 steps
id=$(submit '"steps":3,"size":64,"seed":1')
wait_state "$id" done 120 || bad "run 1: $(state "$id")"
want "run 1" flowrun_runs_started_total 1
want "run 1" 'flowrun_runs_finished_total{status="done"}' 1
want "run 1" 'flowrun_node_executions_total{type="TextEncode"}' 2
want "run 1" 'flowrun_node_executions_total{type="Sampler"}' 1
want "run 1" 'flowrun_sampler_steps_total{type="Sampler"}' 3
want "run 1" 'flowrun_node_duration_seconds_count{type="Sampler"}' 1
want "run 1" 'flowrun_node_cache_hits_total{type="TextEncode"}' absent
# resident: the checkpoint, by the size of its file (stat, not flowrun)
want "run 1: the checkpoint is resident" 'flowrun_model_resident_bytes{model="sd15-tiny.safetensors"}' "$(stat -c %s "$FR_FIXTURES/models/sd15-tiny.safetensors")"
want "run 1: its three components" 'flowrun_models_resident{type="MODEL"}' 1
want "run 1" flowrun_queue_wait_seconds_count 1
want "run 1: no out-of-memory" flowrun_oom_total 0
entries=$(metrics flowrun_cache_entries)
[ "${entries:-0}" -ge 1 ] 2> /dev/null && ok "the cache holds $entries entries" || bad "cache entries: $entries"
# run 2, the same: fully cached, only the output node is looked at (a cache hit), nothing executes
id=$(submit '"steps":3,"size":64,"seed":1')
wait_state "$id" done 120 || bad "run 2: $(state "$id")"
want "run 2" flowrun_runs_started_total 2
want "run 2" 'flowrun_runs_finished_total{status="done"}' 2
want "run 2: nothing more executed" 'flowrun_node_executions_total{type="Sampler"}' 1
want "run 2: the output node from the cache" 'flowrun_node_cache_hits_total{type="SaveImage"}' 1
want "run 2" flowrun_run_duration_seconds_count 2
# run 3, another seed: the Sampler runs again (3 more steps), both prompts are cache hits
id=$(submit '"steps":3,"size":64,"seed":2')
wait_state "$id" done 120 || bad "run 3: $(state "$id")"
want "run 3" 'flowrun_node_executions_total{type="Sampler"}' 2
want "run 3" 'flowrun_sampler_steps_total{type="Sampler"}' 6
want "run 3: prompts from the cache" 'flowrun_node_cache_hits_total{type="TextEncode"}' 2
want "run 3: TextEncode ran only in run 1" 'flowrun_node_executions_total{type="TextEncode"}' 2
# a graph that fails to load is a finished run with status error
id=$(curl -s -X POST -d '{"yaml":"flowrun: 1\nnodes: {a: {type: NoSuchNode}}\n"}' "$U/api/run" | sed -n 's/^{"id":\([0-9]*\)}$/\1/p')
wait_state "$id" error 60 || bad "bad graph: $(state "$id")"
want "a graph that does not load" 'flowrun_runs_finished_total{status="error"}' 1
want "a graph that does not load" flowrun_runs_started_total 4
stop_server && ok "SIGTERM with nothing running: exit 0" || bad "exit status $? with nothing running"

# -- 2. tokens: /healthz and /readyz never need one, /metrics only with --metrics-token -------------------
start_server --cache "$T/c1.sqlite" --token secret-token-1
code "/healthz without the token" 200 "$U/healthz"
code "/readyz without the token" 200 "$U/readyz"
code "the API without the token" 401 "$U/api/runs"
code "/metrics without the token" 200 "$U/metrics"
code "/metrics from a foreign Host" 403 -H "Host: evil.example" "$U/metrics"
stop_server
start_server --cache "$T/c1.sqlite" --token secret-token-1 --metrics-token
code "/metrics without the token, --metrics-token" 401 "$U/metrics"
code "/metrics with the token, --metrics-token" 200 -H "Authorization: Bearer secret-token-1" "$U/metrics"
code "/healthz without the token, --metrics-token" 200 "$U/healthz"
stop_server

# -- 3. the queue limit: 429, counted ------------------------------------------------------------------------
start_server --cache "$T/c3.sqlite" --max-queue 1
a=$(submit "$SLOW,\"seed\":31")
wait_state "$a" running 60 || bad "slow run: $(state "$a")"
b=$(submit "$SLOW,\"seed\":32")
[ -n "$b" ] && ok "second run queued ($b)" || bad "second run refused"
code "a third run: the queue is full" 429 -X POST -d '{"path":"tiny-demo.yaml","params":{"seed":33}}' "$U/api/run"
grep -q -- "--max-queue" "$T/body" && ok "the 429 names --max-queue" || bad "429 body: $(cat "$T/body")"
want "queue full" 'flowrun_submissions_rejected_total{reason="queue_full"}' 1
want "queue full" flowrun_queue_depth 1
want "queue full" flowrun_runs_running 1
cancel "$b"; cancel "$a"
wait_state "$a" cancelled 60 || bad "cancel: $(state "$a")"
want "cancelled while running" 'flowrun_runs_finished_total{status="cancelled"}' 1
want "a run cancelled in the queue never started" flowrun_runs_started_total 1
stop_server

# -- 4. the per-client rate limit: 429 with Retry-After ------------------------------------------------------
start_server --cache "$T/c1.sqlite" --rate-limit 2/min
for s in 41 42; do [ -n "$(submit "\"steps\":1,\"size\":64,\"seed\":$s")" ] && ok "submission $s within the limit" || bad "submission $s refused"; done
code "a third submission in the minute" 429 -X POST -d '{"path":"tiny-demo.yaml"}' "$U/api/run"
ra=$(sed -n 's/^retry-after: *\([0-9]*\).*/\1/Ip' "$T/headers" | tr -d '\r')
# 2/min: one submission every 30 s; the bucket was full a moment ago, so the wait is at most 30 s
[ -n "$ra" ] && [ "$ra" -ge 1 ] && [ "$ra" -le 30 ] && ok "Retry-After: $ra" || bad "Retry-After: '$ra' ($(cat "$T/headers"))"
grep -q "too many submissions" "$T/body" && ok "the 429 says why" || bad "429 body: $(cat "$T/body")"
want "rate limited" 'flowrun_submissions_rejected_total{reason="rate_limited"}' 1
code "other routes are not rate limited" 200 "$U/api/runs"
# the websocket's run shares the address's bucket (empty now): refused with the same reason
port=${U##*:}
if out=$(python3 "$FR_SRC/tests/web/wsclient.py" "$port" --send '{"type":"run","path":"tiny-demo.yaml"}' \
  --expect 'too many submissions from this address' --timeout 20 2>&1); then ok "websocket run rate limited"; else bad "websocket run: $out"; fi
want "rate limited, websocket too" 'flowrun_submissions_rejected_total{reason="rate_limited"}' 2
stop_server

# -- 5. /readyz when the cache cannot be opened (its folder is a file) -------------------------------------
echo "a file, not a folder" > "$T/afile"
start_server --cache "$T/afile/cache.sqlite"
code "/readyz, cache that cannot be opened" 503 "$U/readyz"
grep -q "cache could not be opened" "$T/body" && ok "/readyz says the cache" || bad "/readyz body: $(cat "$T/body")"
grep -q "$T" "$T/body" && bad "/readyz shows a path: $(cat "$T/body")"
code "/healthz is still 200" 200 "$U/healthz"
want "cache off" flowrun_cache_writable 0
stop_server
start_server --no-cache
code "/readyz with --no-cache (asked for)" 200 "$U/readyz"
stop_server

# -- 6. --max-concurrent-runs 2: two runs at once, each on its own engine ----------------------------------
start_server --cache "$T/c6.sqlite" --max-concurrent-runs 2
a=$(submit "$SLOW,\"seed\":61")
b=$(submit "$SLOW,\"seed\":62")
wait_state "$a" running 60 && wait_state "$b" running 60 && ok "two runs running at once" \
  || bad "states: $(state "$a") $(state "$b")"
want "two running" flowrun_runs_running 2
want "two runners" flowrun_runners 2
cancel "$a"; cancel "$b"
wait_state "$a" cancelled 60 && wait_state "$b" cancelled 60 && ok "both cancelled" || bad "cancel: $(state "$a") $(state "$b")"
# two runs at once compute what each computes alone: the pixels equal those of a separate CLI run each
pixels() { python3 -c 'import sys, zlib, struct, hashlib
d = open(sys.argv[1], "rb").read(); i = 8; idat = b""
while i < len(d):
    n, = struct.unpack(">I", d[i:i+4]); t = d[i+4:i+8]
    if t == b"IDAT": idat += d[i+8:i+8+n]
    i += 12 + n
print(hashlib.sha256(zlib.decompress(idat)).hexdigest())' "$1"; }
output_of() { curl -s "$U/api/runs" | python3 -c "import json,sys; print([r for r in json.load(sys.stdin)['runs'] if r['id'] == $1][0]['outputs'][0])"; }
a=$(submit '"steps":4,"size":64,"seed":63')
b=$(submit '"steps":4,"size":64,"seed":64')
wait_state "$a" done 120 && wait_state "$b" done 120 || bad "concurrent runs: $(state "$a") $(state "$b")"
for s in 63 64; do
  id=$a; [ $s = 64 ] && id=$b
  mkdir -p "$T/ref$s"
  "$FLOWRUN" "$T/graphs/tiny-demo.yaml" --models "$FR_FIXTURES/models" --no-cache --threads 1 --output "$T/ref$s" \
    --set steps=4 --set size=64 --set seed=$s --quiet > /dev/null 2>&1 || bad "reference run seed $s"
  [ "$(pixels "$T/out/$(output_of "$id")")" = "$(pixels "$(ls "$T/ref$s"/*.png)")" ] \
    && ok "seed $s run concurrently: the same pixels as alone" || bad "seed $s: concurrent run differs from the run alone"
done
stop_server

# -- 7. SIGTERM during a run -------------------------------------------------------------------------------
png_ok() { python3 -c 'import sys; d=open(sys.argv[1],"rb").read(); sys.exit(0 if d[:8]==b"\x89PNG\r\n\x1a\n" and d[-8:-4]==b"IEND" else 1)' "$1"; }
integrity() { # cache file: PRAGMA integrity_check says ok (sqlite3 is in the README's install line)
  if command -v sqlite3 > /dev/null; then
    [ "$(sqlite3 "$1" 'PRAGMA integrity_check')" = ok ] && ok "$2: the cache passes integrity_check" || bad "$2: integrity_check: $(sqlite3 "$1" 'PRAGMA integrity_check' 2>&1 | head -3)"
  else echo "note: sqlite3 not installed, integrity not checked"; fi
}
progressed() { # id: the run has made at least one sampler step
  for _ in $(seq 600); do
    [ "$(metrics 'flowrun_sampler_steps_total{type="Sampler"}')" != absent ] && return 0
    sleep 0.1
  done
  return 1
}
# 7a. the run finishes within the deadline: exit 0 after it, its picture whole
rm -rf "$T/out" && mkdir "$T/out"
start_server --cache "$T/c7.sqlite" --shutdown-timeout 120
a=$(submit '"steps":60,"size":128,"seed":71') # about 8 s here
q=$(submit '"steps":1,"size":64,"seed":72')
wait_state "$a" running 60 && progressed "$a" || bad "run did not start: $(state "$a")"
kill -TERM "$SERVER"
# the signal is handled by the service loop: wait for it (a loaded machine takes its time), then check
for _ in $(seq 200); do [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$U/readyz")" = 503 ] && break; sleep 0.05; done
code "/readyz while draining" 503 "$U/readyz"
grep -q "shutting down" "$T/body" && ok "/readyz says shutting down" || bad "/readyz body: $(cat "$T/body")"
code "a submission while draining" 503 -X POST -d '{"path":"tiny-demo.yaml"}' "$U/api/run"
grep -q "shutting down" "$T/body" && ok "the 503 says shutting down" || bad "503 body: $(cat "$T/body")"
want "draining" 'flowrun_submissions_rejected_total{reason="shutting_down"}' 1
wait "$SERVER"; rc=$?; SERVER=""
[ $rc = 0 ] && ok "SIGTERM during a run: exit 0" || bad "SIGTERM during a run: exit $rc: $(tail -3 "$T/server.log")"
grep -q "shutting down" "$T/server.log" && ok "the log says it drains" || bad "log: $(cat "$T/server.log")"
n=$(find "$T/out" -name '*.png' | wc -l)
[ "$n" = 1 ] && png_ok "$(find "$T/out" -name '*.png')" && ok "the running run finished: one whole picture (the queued run did not start)" \
  || bad "pictures after the drain: $n: $(ls -la "$T/out")"
[ -z "$(find "$T/out" -type f ! -name '*.png')" ] && ok "no temporary files left" || bad "left: $(find "$T/out" -type f ! -name '*.png')"
integrity "$T/c7.sqlite" "drained"
# 7b. the run outlives the deadline: cancelled, exit 0, no picture
rm -rf "$T/out" && mkdir "$T/out"
start_server --cache "$T/c7.sqlite" --shutdown-timeout 1
a=$(submit "$SLOW,\"seed\":73")
wait_state "$a" running 60 && progressed "$a" || bad "slow run did not start: $(state "$a")"
t0=$(date +%s)
kill -TERM "$SERVER"
wait "$SERVER"; rc=$?; SERVER=""
t1=$(date +%s)
[ $rc = 0 ] && ok "SIGTERM, deadline passed: exit 0 after $((t1 - t0)) s" || bad "deadline: exit $rc: $(tail -3 "$T/server.log")"
grep -q "cancelling the 1 running run" "$T/server.log" && ok "the log says the run was cancelled" || bad "log: $(cat "$T/server.log")"
[ -z "$(find "$T/out" -type f)" ] && ok "no picture, no half-written file" || bad "left: $(find "$T/out" -type f)"
integrity "$T/c7.sqlite" "cancelled at the deadline"
# 7c. a second signal cancels at once
start_server --cache "$T/c7.sqlite" --shutdown-timeout 600
a=$(submit "$SLOW,\"seed\":74")
wait_state "$a" running 60 || bad "slow run did not start: $(state "$a")"
kill -TERM "$SERVER"; sleep 0.3; kill -INT "$SERVER"
wait "$SERVER"; rc=$?; SERVER=""
[ $rc = 0 ] && ok "a second signal: cancelled at once, exit 0" || bad "second signal: exit $rc"

exit $fail
