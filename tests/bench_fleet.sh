#!/usr/bin/env bash
# The fleet's queue overhead (BENCHMARKS.md): a benchmark program, not a test. Starts its own PostgreSQL
# server (as tests/cli/fleet.sh does), then for 1, 4 and 16 workers on this machine submits RUNS fully
# cached runs of the image demo (every worker's local cache warmed first) one after the other with
# `submit --wait`, and prints per worker count the median and p90 of
#   - submit to start: the run row's `started - created` (how long a queued run waits for a worker),
#   - end to end: `flowrun submit --wait` from exec to exit (queue, a worker's cached run, the result back),
# beside the same fully cached run in-process (`flowrun graph.yaml`, a new process each time).
#   bash tests/bench_fleet.sh [build/flowrun] [RUNS]
set -u
FLOWRUN=$(readlink -f "${1:-build/flowrun}")
RUNS=${2:-20}
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$SRC/tests/pg_lib.sh" # PGBIN, as_pg, pg_start, pgctl
[ -x "$PGBIN/initdb" ] || { echo "no PostgreSQL server (apt-get install postgresql)"; exit 1; }
T=$(mktemp -d /tmp/flowrun-bench-fleet.XXXXXX)
chmod 755 "$T"
cd "$T" || exit 1
pg_start "$T" 100 || { echo "$PG_ERR"; exit 1; }
G="$SRC/graphs/image-demo.yaml"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null; done
  wait 2> /dev/null
  pgctl stop -m immediate
  cd / && rm -rf "$T"
}
trap cleanup EXIT
now_ms() { date +%s%3N; }
stats() { sort -n | awk '{a[NR]=$1} END {printf "%8.1f %8.1f", a[int((NR+1)/2)], a[int(NR*0.9+0.5)]}'; }

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "flowrun: $FLOWRUN; PostgreSQL: $("$PGBIN/postgres" --version | awk '{print $3}'); $RUNS runs a row"
# in-process: the same fully cached run, a new process each time
"$FLOWRUN" "$G" --cache "$T/local.sqlite" --output out --quiet
for i in $(seq "$RUNS"); do
  t=$(now_ms); "$FLOWRUN" "$G" --cache "$T/local.sqlite" --output out --quiet; echo $(($(now_ms) - t))
done > local.txt
printf '%-28s %8s %8s   %8s %8s\n' "" "start" "(p90)" "e2e ms" "(p90)"
printf '%-28s %8s %8s   %s\n' "in-process (flowrun run)" "-" "-" "$(stats < local.txt)"
for n in 1 4 16; do
  for i in $(seq "$n"); do
    "$FLOWRUN" worker --db "$DB" --cache "$T/w$n-$i.sqlite" --name "w$n-$i" --threads 1 --quiet &
    pids+=($!)
  done
  # warm every worker's local cache and the shared one
  for i in $(seq $((n * 2))); do "$FLOWRUN" submit --db "$DB" "$G" --wait --output out --quiet > /dev/null; done
  first=$("$FLOWRUN" runs --db "$DB" --json | python3 -c 'import json,sys; print(max(r["id"] for r in json.load(sys.stdin)["runs"]))')
  for i in $(seq "$RUNS"); do
    t=$(now_ms); "$FLOWRUN" submit --db "$DB" "$G" --wait --output out --quiet > /dev/null; echo $(($(now_ms) - t))
  done > e2e.txt
  as_pg "$PGBIN/psql -h $PGDIR -U postgres -Atc \"SELECT extract(epoch FROM started - created) * 1000 FROM flowrun_runs WHERE id > $first\"" > start.txt
  printf '%-28s %s   %s\n' "fleet, $n worker(s)" "$(stats < start.txt)" "$(stats < e2e.txt)"
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null; done
  wait 2> /dev/null
  pids=()
done
