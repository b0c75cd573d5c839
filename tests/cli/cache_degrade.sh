#!/usr/bin/env bash
# A cache that cannot be written never fails a run. On a read-only file system (a tmpfs remounted
# read-only), on a full disk (a small tmpfs) and with a cache folder that cannot be created, the image
# demo completes, says so in exactly one warning, and writes the same picture as a --no-cache run. A
# fully cached run is not held up by another connection holding the cache's write lock. `flowrun serve` on
# the read-only cache answers /healthz 200 and /readyz 503 saying the cache cannot be written. The mounts need
# a private mount namespace (unshare -m, as root; CI runs as root); where none can be made that part
# prints "part skipped".
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../cli_lib.sh" # ok, bad, expect, done_field, started
: "${FLOWRUN:?}" "${FR_SRC:?}" "${FR_TEST_TMP:=/tmp}"
G="$FR_SRC/graphs/image-demo.yaml"
SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
outpath() { grep '"event":"output"' "$1" | head -1 | sed -E 's/.*"path":"([^"]*)".*/\1/'; }
nwarn() { grep -c '"event":"warning"' "$1"; }
# check NAME JSONL REF WARNING_PATTERN: the run ended ok, with exactly one warning matching the pattern,
# and its picture is byte for byte the --no-cache reference (same pixels, same embedded workflow)
check() {
  local name=$1 j=$2 ref=$3 pat=$4
  grep -q '"event":"run_done".*"status":"ok"' "$j" && ok "$name: the run completes" || bad "$name: $(tail -2 "$j")"
  [ "$(nwarn "$j")" = 1 ] && grep '"event":"warning"' "$j" | grep -Eq "$pat" && ok "$name: one warning: $(grep '"event":"warning"' "$j" | cut -c1-160)" \
    || bad "$name: want one warning /$pat/, got: $(grep '"event":"warning"' "$j")"
  local pic
  pic=$(outpath "$j")
  [ -n "$pic" ] && cmp -s "$pic" "$ref" && ok "$name: the picture equals the --no-cache one" || bad "$name: picture $pic differs from $ref"
}

if [ "${1:-}" = "--in-namespace" ]; then
  # Here: a private mount namespace; $T is set by the outer run.
  cd "$T" || exit 1
  R=(--output out --events jsonl --set size=96)
  mkdir -p ro full
  mount -t tmpfs -o size=8m tmpfs ro || { bad "mount tmpfs"; exit 1; }
  "$FLOWRUN" "$G" "${R[@]}" --cache ro/cache.sqlite > fill.jsonl 2> fill.err || bad "filling the cache: $(cat fill.err)"
  mount -o remount,ro ro || bad "remount read-only"
  touch ro/probe 2> /dev/null && bad "ro is writable"
  # radius=2: the pattern comes from the read-only cache, the rest runs and cannot be stored
  "$FLOWRUN" "$G" "${R[@]}" --set radius=2 --cache ro/cache.sqlite > ro.jsonl 2> ro.err; rc=$?
  [ $rc = 0 ] && [ "$(done_field ro.jsonl cached)" -ge 1 ] && ok "read-only cache: exit 0, $(done_field ro.jsonl cached) cached" \
    || bad "read-only cache: exit $rc, $(tail -1 ro.jsonl) $(cat ro.err)"
  check "read-only file system" ro.jsonl ref2.png "read-only"
  # flowrun serve on that cache: alive (/healthz 200) but not ready (/readyz 503, saying why, no path)
  if command -v curl > /dev/null; then
    mkdir -p graphs
    "$FLOWRUN" serve --port 0 --graphs graphs --output out --cache ro/cache.sqlite > serve.log 2>&1 &
    srv=$! port=""
    for _ in $(seq 100); do
      port=$(sed -n 's|^flowrun serve: http://127.0.0.1:\([0-9]*\)/.*|\1|p' serve.log)
      [ -n "$port" ] && break
      kill -0 $srv 2> /dev/null || break
      sleep 0.1
    done
    if [ -n "$port" ]; then
      h=$(curl -s -o healthz.txt -w '%{http_code}' --max-time 20 "http://127.0.0.1:$port/healthz")
      r=$(curl -s -o readyz.txt -w '%{http_code}' --max-time 20 "http://127.0.0.1:$port/readyz")
      [ "$h" = 200 ] && ok "serve, read-only cache: /healthz 200" || bad "serve, read-only cache: /healthz $h"
      [ "$r" = 503 ] && grep -q "cannot be written" readyz.txt && ! grep -q "$T" readyz.txt \
        && ok "serve, read-only cache: /readyz 503: $(cat readyz.txt | tr '\n' ' ')" \
        || bad "serve, read-only cache: /readyz $r: $(cat readyz.txt)"
    else
      bad "serve on the read-only cache did not start: $(cat serve.log)"
    fi
    kill $srv 2> /dev/null
    wait $srv 2> /dev/null
  else
    echo "part skipped: no curl for the /readyz check"
  fi
  "$FLOWRUN" "$G" "${R[@]}" --set radius=2 --cache ro/new/cache.sqlite > nodir.jsonl 2> nodir.err
  check "folder that cannot be created" nodir.jsonl ref2.png "without a cache"
  # a disk with room for the schema and about one image (96x96 RGB floats = 108 KiB)
  mount -t tmpfs -o size=192k tmpfs full || { bad "mount small tmpfs"; exit 1; }
  "$FLOWRUN" "$G" "${R[@]}" --cache full/cache.sqlite > full.jsonl 2> full.err; rc=$?
  [ $rc = 0 ] && ok "full disk: exit 0" || bad "full disk: exit $rc $(cat full.err)"
  check "full disk" full.jsonl ref1.png "disk is full"
  # what did get stored is right: a second run on the full disk reads it and makes the same picture
  "$FLOWRUN" "$G" "${R[@]}" --cache full/cache.sqlite > full2.jsonl 2> full2.err
  grep -q '"event":"run_done".*"status":"ok"' full2.jsonl && cmp -s "$(outpath full2.jsonl)" ref1.png \
    && ok "full disk, second run: same picture ($(done_field full2.jsonl cached) cached)" || bad "full disk second run: $(tail -1 full2.jsonl) $(cat full2.err)"
  exit $fail
fi

T="$FR_TEST_TMP/cli_cache_degrade.$$"
rm -rf "$T" && mkdir -p "$T" && cd "$T" || exit 1
export T
R=(--output out --events jsonl --set size=96)
for r in 1 2; do
  "$FLOWRUN" "$G" "${R[@]}" --set radius=$r --no-cache > ref$r.jsonl || bad "reference radius=$r"
  cp "$(outpath ref$r.jsonl)" ref$r.png || bad "reference picture radius=$r"
  rm -f out/*
done

if unshare -m true 2> /dev/null; then
  unshare -m bash "$SELF" --in-namespace || fail=1
else
  echo "part skipped: no private mount namespace (unshare -m needs root): read-only and full disk not tried"
fi

# Another connection holds the write lock (an open write transaction) for as long as we like; a fully
# cached run must complete while it is still held (it used to wait behind it: each hit wrote its LRU
# stamp).
if command -v sqlite3 > /dev/null; then
  "$FLOWRUN" "$G" "${R[@]}" --cache lock.sqlite > l1.jsonl 2> l1.err || bad "filling: $(cat l1.err)"
  mkfifo lockfifo
  sqlite3 lock.sqlite < lockfifo > holder.out 2>&1 &
  holder=$!
  exec 3> lockfifo
  echo "BEGIN IMMEDIATE; INSERT INTO kv VALUES('held', 'by another writer'); SELECT 'locked';" >&3
  for _ in $(seq 100); do grep -q locked holder.out && break; sleep 0.1; done
  grep -q locked holder.out && ok "another connection holds the write lock" || bad "holder: $(cat holder.out)"
  "$FLOWRUN" "$G" "${R[@]}" --cache lock.sqlite > l2.jsonl 2> l2.err; rc=$?
  kill -0 $holder 2> /dev/null && still=1 || still=0
  [ $rc = 0 ] && [ "$(done_field l2.jsonl executed)" = 0 ] && [ $still = 1 ] \
    && ok "a fully cached run completes while the lock is held" || bad "locked run: exit $rc, holder alive $still, $(tail -1 l2.jsonl) $(cat l2.err)"
  [ "$(nwarn l2.jsonl)" = 0 ] && ok "no warnings" || bad "warnings: $(grep warning l2.jsonl)"
  echo "COMMIT;" >&3
  exec 3>&-
  wait $holder
else
  echo "part skipped: no sqlite3 command to hold a write lock"
fi
exit $fail
