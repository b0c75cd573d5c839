#!/usr/bin/env bash
# The fleet on a real PostgreSQL server that this test starts itself (initdb + pg_ctl in a temporary folder,
# on a Unix socket, as the postgres user: the server refuses to run as root). Three workers with separate
# local caches stand for three hosts:
#   - 20 runs of the tiny SD graph are each done exactly once;
#   - a worker killed with SIGKILL in the middle of a run: another worker finishes it (attempt 2);
#   - a graph run on worker A and submitted again when only B is up: B runs no Sampler (a shared-cache hit);
#   - cancel of a running and of a queued run; submit --wait exit statuses, JSONL and output files;
#   - the database restarted mid-way (pg_ctl restart): everything still completes.
# Skips (77) when this flowrun has no PostgreSQL support or no PostgreSQL server is installed.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../cli_lib.sh" # ok, bad, expect, done_field, started, require_fixtures
: "${FLOWRUN:?}" "${FR_SRC:?}" "${FR_FIXTURES:?}" "${FR_TEST_TMP:=/tmp}"
"$FLOWRUN" worker --help > /dev/null 2>&1 || { echo "skipped: this flowrun was built without libpq"; exit 77; }
. "$(dirname "${BASH_SOURCE[0]}")/../pg_lib.sh" # PGBIN, as_pg, pg_start, pgctl
[ -x "$PGBIN/initdb" ] || { echo "skipped: no PostgreSQL server (apt-get install postgresql)"; exit 77; }
require_fixtures
T=$(mktemp -d "${FR_TEST_TMP:-/tmp}/cli_fleet.XXXXXX")
chmod 755 "$T"
cd "$T" || exit 1
pg_start "$T" || { bad "$PG_ERR"; exit 1; }
export TMPDIR="$T" # the workers' output folders, gone with the test's folder even for killed workers
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
worker() { # name [extra...]: starts a worker with its own local cache
  local n=$1
  shift
  "$FLOWRUN" worker --db "$DB" --models "$M" --cache "$T/$n.sqlite" --name "$n" --threads 1 --lease 3 "$@" \
    > "$T/$n.log" 2>&1 &
  pids+=($!)
  eval "PID_$n=$!"
}
state() { "$FLOWRUN" runs --db "$DB" --json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["runs"][0]["state"])'; }
field() { "$FLOWRUN" runs --db "$DB" --json "$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['runs'][0]['$2'])"; }
wait_state() { # id state timeout_s
  for _ in $(seq $(($3 * 10))); do [ "$(state "$1")" = "$2" ] && return 0; sleep 0.1; done
  return 1
}

# A database that cannot be reached is a clear error.
expect 1 "cannot connect" "$FLOWRUN" runs --db "host=$T/nowhere user=postgres dbname=postgres"
expect 1 "cannot connect" "$FLOWRUN" submit --db "host=$T/nowhere user=postgres" "$G"

# 1. 20 runs, three workers: each done once (8 under the sanitizers, where each run is several times slower).
N=20
[ "${FR_SANITIZED:-0}" = 1 ] && N=8
ids=()
for s in $(seq $N); do ids+=($("$FLOWRUN" submit --db "$DB" "$G" --set seed=$s --set steps=2 --set size=64)); done
[ "${#ids[@]}" = $N ] && ok "$N runs queued" || bad "queued: ${ids[*]}"
worker a; worker b; worker c
for id in "${ids[@]}"; do wait_state "$id" done 120 || bad "run $id: $(state "$id")"; done
n_done=$(for id in "${ids[@]}"; do state "$id"; done | grep -c '^done$')
[ "$n_done" = $N ] && ok "$N runs done" || bad "$n_done of $N done"
attempts=$(for id in "${ids[@]}"; do field "$id" attempts; done | sort -u | tr '\n' ' ')
[ "$attempts" = "1 " ] && ok "each taken once" || bad "attempts: $attempts"
n_ran=$(cat a.log b.log c.log | grep -Ec 'run [0-9]+ done')
[ "$n_ran" = $N ] && ok "$N results written in all" || bad "results written: $n_ran"
for w in a b c; do grep -q 'run [0-9]* done' $w.log || echo "note: worker $w took no run"; done

# 2. SIGKILL mid-run: a slow run, its worker killed; another finishes it.
kill $PID_b $PID_c 2>/dev/null
slow=$("$FLOWRUN" submit --db "$DB" "$G" --set seed=99 --set steps=60)
wait_state "$slow" running 30 || bad "slow run did not start"
sleep 1
kill -9 "$PID_a"
worker d
wait_state "$slow" done 120 && ok "killed worker's run finished by another" || bad "slow run: $(state "$slow")"
[ "$(field "$slow" attempts)" = 2 ] && [ "$(field "$slow" worker)" = d ] && ok "attempt 2 on worker d" \
  || bad "attempts $(field "$slow" attempts) worker $(field "$slow" worker)"

# 3. Shared cache: run on d alone, then submitted again with only e up: e runs no Sampler.
shared=$("$FLOWRUN" submit --db "$DB" "$G" --set seed=777 --set steps=2 --wait --events jsonl --output out1 2> s1.err)
wait_state "$(field 0 id 2> /dev/null || echo 0)" done 1 2> /dev/null
grep -q '"node_start","node":"sample"' <<< "$shared" && ok "first: the Sampler ran on d" || bad "first run: $shared $(cat s1.err)"
kill $PID_d; wait $PID_d 2> /dev/null
worker e
again=$("$FLOWRUN" submit --db "$DB" "$G" --set seed=777 --set steps=2 --wait --events jsonl --output out2 2> s2.err)
rc=$?
[ $rc = 0 ] && ! grep -q '"node_start","node":"sample"' <<< "$again" && grep -q '"from":"shared"' <<< "$again" \
  && ok "second on e: no Sampler, a shared-cache hit" || bad "second run ($rc): $again $(cat s2.err)"
tail -1 <<< "$again" | grep -q '"event":"run_done".*"status":"ok"' && ok "JSONL ends in run_done" || bad "last line: $(tail -1 <<< "$again")"
grep -q '"event":"output","path":".*out2/tiny-demo_00001.png"' <<< "$again" && [ -s out2/tiny-demo_00001.png ] \
  && ok "output file written under --output" || bad "outputs: $(ls out2 2>&1)"
cmp -s out1/tiny-demo_00001.png out2/tiny-demo_00001.png && ok "same picture from both hosts" || bad "pictures differ"

# 4. Cancel a running and a queued run; submit --wait on a cancelled run exits 130, on a done one 0, on a
# failed one 1.
long=$("$FLOWRUN" submit --db "$DB" "$G" --set seed=5 --set steps=400)
wait_state "$long" running 30 || bad "long run did not start"
queued=$("$FLOWRUN" submit --db "$DB" "$G" --set seed=6 --set steps=2)
"$FLOWRUN" submit --db "$DB" "$G" --set seed=7 --set steps=2 --wait > /dev/null 2> waiter.err &
waiter=$!
for _ in $(seq 50); do grep -q 'queued run' waiter.err && break; sleep 0.1; done
wid=$(sed -nE 's/^flowrun submit: queued run ([0-9]+)$/\1/p' waiter.err)
"$FLOWRUN" runs --db "$DB" cancel "$queued" > c.out 2>&1 && grep -q "cancelled $queued" c.out \
  && [ "$(state "$queued")" = cancelled ] && ok "queued run cancelled at once" || bad "queued: $(cat c.out) $(state "$queued")"
"$FLOWRUN" runs --db "$DB" cancel "$wid" > /dev/null 2>&1
wait $waiter; rc=$?
[ $rc = 130 ] && ok "submit --wait of a cancelled run exits 130" || bad "waiter exit $rc: $(cat waiter.err)"
"$FLOWRUN" runs --db "$DB" cancel "$long" > /dev/null
wait_state "$long" cancelled 10 && ok "running run cancelled within seconds" || bad "running: $(state "$long")"
expect 1 "already ended" "$FLOWRUN" runs --db "$DB" cancel "$long"
expect 1 "no such run" "$FLOWRUN" runs --db "$DB" cancel 99999
"$FLOWRUN" submit --db "$DB" "$G" --set seed=10 --set steps=2 --wait > /dev/null 2>&1; rc=$?
[ $rc = 0 ] && ok "submit --wait of a done run exits 0" || bad "exit $rc"
printf 'flowrun: 1\nnodes:\n  p: {type: LoadImage, inputs: {image: missing.png}}\n  s: {type: SaveImage, inputs: {images: p}}\n' > bad.yaml
"$FLOWRUN" submit --db "$DB" bad.yaml --wait 2> bad.err; rc=$?
[ $rc = 1 ] && grep -q "missing.png" bad.err && ok "a failing run: submit --wait exits 1 naming the file" \
  || bad "failing run exit $rc: $(cat bad.err)"
printf 'flowrun: 1\nnodes:\n  p: {type: Nope}\n' > inv.yaml
expect 2 "unknown node type" "$FLOWRUN" submit --db "$DB" inv.yaml
"$FLOWRUN" runs --db "$DB" "$long" | grep -q "state\|run $long: cancelled" && ok "runs ID shows one run" || bad "runs ID"

# 5. The database restarted in the middle: runs still complete.
worker f
more=()
for s in $(seq 30 37); do more+=($("$FLOWRUN" submit --db "$DB" "$G" --set seed=$s --set steps=3 --set size=64)); done
sleep 1
pgctl restart -m fast && ok "database restarted" || bad "pg_ctl restart"
for id in "${more[@]}"; do wait_state "$id" done 120 || bad "after restart, run $id: $(state "$id")"; done
n=$(for id in "${more[@]}"; do state "$id"; done | grep -c '^done$')
[ "$n" = 8 ] && ok "all 8 runs done across the restart" || bad "$n of 8 done"

# Subgraph files travel inside the run (bundled): gone from the submitter's folder, the run still works.
mkdir -p share && cp "$FR_SRC/graphs/image-demo.yaml" share/ && cp -r "$FR_SRC/graphs/blocks" share/
sub=$("$FLOWRUN" submit --db "$DB" share/image-demo.yaml --set radius=3)
rm -rf share
wait_state "$sub" done 60 && ok "a graph with a subgraph file runs without the file (bundled)" \
  || bad "bundled run: $(state "$sub") $("$FLOWRUN" runs --db "$DB" "$sub")"

# 6. serve --db: the editor's runs go to the fleet, and every run of the fleet shows with its outputs.
if "$FLOWRUN" serve --help > /dev/null 2>&1 && command -v curl > /dev/null; then
  mkdir -p sg sout && cp "$G" sg/tiny.yaml
  "$FLOWRUN" serve --db "$DB" --port 0 --graphs sg --output sout --models "$M" --no-cache > serve.log 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do grep -q '^flowrun serve: http' serve.log && break; sleep 0.1; done
  url=$(sed -n 's|^flowrun serve: \(http://[^ ]*\)|\1|p' serve.log | head -1)
  sid=$(curl -s -X POST -H 'Content-Type: application/json' \
        -d '{"path":"tiny.yaml","params":{"seed":41,"steps":2,"size":64}}' "${url}api/run" | sed -nE 's/.*"id": *([0-9]+).*/\1/p')
  cli=$("$FLOWRUN" submit --db "$DB" "$G" --set seed=42 --set steps=2 --set size=64)
  runs_state() { curl -s "${url}api/runs" | python3 -c "
import json,sys
for r in json.load(sys.stdin)['runs']:
    if r['path'] == '$1' and r['state'] == 'done' and r['outputs']: print(r['outputs'][0])"; }
  for _ in $(seq 600); do [ -n "$(runs_state tiny.yaml)" ] && [ -n "$(runs_state tiny-demo.yaml)" ] && break; sleep 0.2; done
  f1=$(runs_state tiny.yaml | head -1); f2=$(runs_state tiny-demo.yaml | head -1)
  [ -n "$sid" ] && [ -n "$f1" ] && ok "serve --db: the editor's run $sid done by a worker, output $f1" \
    || bad "serve --db run: $(curl -s "${url}api/runs") $(tail -5 serve.log)"
  [ -n "$f2" ] && ok "serve --db shows the CLI's run $cli with its output $f2" || bad "foreign run: $(curl -s "${url}api/runs")"
  [ -n "$f1" ] && curl -s "${url}api/output?file=$f1" | head -c 8 | od -c | grep -q 'P   N   G' \
    && ok "its PNG is served" || bad "output $f1 not served"
else
  echo "part skipped: no serve in this build, or no curl"
fi

# 7. A corrupt value in the shared cache: a worker with an empty local cache drops it with a warning naming
# its key, recomputes, and the run is done.
kill $PID_e $PID_f 2> /dev/null
as_pg "$PGBIN/psql -h $PGDIR -U postgres -qc \"UPDATE flowrun_cache SET value = decode('00', 'hex')\"" > /dev/null
worker h
bad_tier=$("$FLOWRUN" submit --db "$DB" "$G" --set seed=777 --set steps=2 --wait --events jsonl --output out3 2> s3.err)
rc=$?
[ $rc = 0 ] && grep -q '"event":"warning".*shared cache entry [0-9a-f]\{32\} failed its checksum' <<< "$bad_tier" \
  && grep -q '"node_start","node":"sample"' <<< "$bad_tier" && ok "a corrupt shared value: warning naming it, recomputed" \
  || bad "corrupt tier ($rc): $(grep -E 'warning|run_done' <<< "$bad_tier") $(cat s3.err)"
cmp -s out1/tiny-demo_00001.png out3/tiny-demo_00001.png && ok "and the same picture" || bad "picture after corrupt tier"

# The schema is versioned: a newer one is refused by name.
as_pg "$PGBIN/psql -h $PGDIR -U postgres -qc \"UPDATE flowrun_meta SET value = '99' WHERE key = 'schema_version'\"" > /dev/null
expect 1 "schema is version 99, newer than this flowrun's 1" "$FLOWRUN" runs --db "$DB"
exit $fail
