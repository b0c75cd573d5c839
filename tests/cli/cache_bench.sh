#!/usr/bin/env bash
# `flowrun cache bench` prints one row per phase (p50, p99, max ms), including the one where another
# process holds the write lock (which would hang if reads waited for it), removes its temporary file,
# refuses an existing --cache file and bad numbers. Only the shape of the output is checked: timings are
# BENCHMARKS.md's business.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../cli_lib.sh" # ok, bad, expect, done_field, started
: "${FLOWRUN:?}" "${FR_TEST_TMP:=/tmp}"
T="$FR_TEST_TMP/cli_cache_bench.$$"
rm -rf "$T" && mkdir -p "$T" && cd "$T" || exit 1
num='[0-9]+\.[0-9]{3}'
TMPDIR="$T" "$FLOWRUN" cache bench --entries 20 --bytes 1000 --reads 300 > b.out 2> b.err; rc=$?
[ $rc = 0 ] && ok "bench exit 0" || bad "bench exit $rc: $(cat b.err)"
for phase in "no other connection" "another process holds the write lock" "another process putting constantly"; do
  grep -Eq "^$phase +$num +$num +$num$" b.out && ok "row: $phase" || bad "no row for '$phase': $(cat b.out)"
done
[ -z "$(ls "$T" | grep flowrun-cache-bench)" ] && ok "temporary cache removed" || bad "left: $(ls "$T")"
"$FLOWRUN" cache bench --cache mine.sqlite --entries 5 --reads 10 > m.out 2>&1 && [ -f mine.sqlite ] \
  && ok "--cache NEWFILE is filled and kept" || bad "--cache: $(cat m.out)"
expect 2 "mine.sqlite exists" "$FLOWRUN" cache bench --cache mine.sqlite
"$FLOWRUN" cache bench --help > h.out 2>&1 && grep -q "usage: flowrun cache bench" h.out && ok "bench --help: exit 0 and the usage" || bad "bench --help: $(cat h.out)"
expect 2 "--reads x: expected an integer" "$FLOWRUN" cache bench --reads x
expect 2 "--entries .*expected an integer" "$FLOWRUN" cache bench --entries
expect 2 "unexpected or incomplete argument '--fast'" "$FLOWRUN" cache bench --fast
exit $fail
