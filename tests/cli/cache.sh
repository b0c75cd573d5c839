#!/usr/bin/env bash
# flowrun cache stats|clear|gc: output, exit codes, and files that are not flowrun caches left alone.
set -u
: "${FLOWRUN:?FLOWRUN must name the flowrun binary}"
T="${FR_TEST_TMP:-/tmp}/cli_cache.$$"
rm -rf "$T" && mkdir -p "$T"
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
expect_rc() { # expected-rc description command...
  local want=$1 what=$2; shift 2
  "$@" >"$T/out" 2>"$T/err"
  local rc=$?
  [ "$rc" = "$want" ] || fail "$what: exit $rc, expected $want ($(cat "$T/err"))"
}

C="$T/sub/cache.sqlite"
# stats on a missing cache: says so, creates nothing
expect_rc 0 "stats of a missing cache" "$FLOWRUN" cache stats --cache "$C"
grep -q "no cache file yet" "$T/out" || fail "stats of a missing cache: $(cat "$T/out")"
[ ! -e "$C" ] || fail "stats created the cache file"

# gc creates it (and its folder), stats reads it
expect_rc 0 "gc of a new cache" "$FLOWRUN" cache gc --cache "$C"
[ -f "$C" ] || fail "gc did not create the cache"
expect_rc 0 "stats" "$FLOWRUN" cache stats --cache="$C" --cache-size 2G
grep -q "^entries: 0" "$T/out" || fail "stats entries: $(cat "$T/out")"
grep -q "^limit:   2.0 GiB (2147483648)" "$T/out" || fail "stats limit: $(cat "$T/out")"

# gc reports entries that fail their checksum (needs the sqlite3 shell to plant them)
if command -v sqlite3 >/dev/null; then
  sqlite3 "$C" "INSERT INTO entries VALUES(x'00112233445566778899aabbccddeeff', x'0102', 2, 5, 0, 0);
                INSERT INTO entries VALUES(x'ffeeddccbbaa99887766554433221100', x'03', 1, 7, 0, 0);"
  expect_rc 0 "stats with entries" "$FLOWRUN" cache stats --cache "$C"
  grep -q "^entries: 2" "$T/out" || fail "stats after insert: $(cat "$T/out")"
  expect_rc 0 "gc with bad entries" "$FLOWRUN" cache gc --cache "$C"
  grep -q "cache entry 00112233445566778899aabbccddeeff: checksum mismatch, dropped" "$T/out" ||
    fail "gc did not report the bad entry: $(cat "$T/out")"
  grep -q "dropped 2 entries" "$T/out" || fail "gc summary: $(cat "$T/out")"
  sqlite3 "$C" "INSERT INTO kv VALUES('k', 'v')"
  expect_rc 0 "clear" "$FLOWRUN" cache clear --cache "$C"
  [ "$(sqlite3 "$C" 'SELECT count(*) FROM kv')" = 0 ] || fail "clear left kv rows"
else
  echo "note: sqlite3 shell not found, gc-drop checks skipped"
fi
expect_rc 0 "clear" "$FLOWRUN" cache clear --cache "$C"
grep -q "^cleared" "$T/out" || fail "clear output: $(cat "$T/out")"

# bad usage: exit 2
expect_rc 2 "no action" "$FLOWRUN" cache
expect_rc 2 "unknown action" "$FLOWRUN" cache shrink --cache "$C"
expect_rc 2 "unknown option" "$FLOWRUN" cache stats --cahce "$C"
expect_rc 2 "missing --cache value" "$FLOWRUN" cache stats --cache
expect_rc 2 "bad size" "$FLOWRUN" cache gc --cache "$C" --cache-size 12Q
expect_rc 2 "zero size" "$FLOWRUN" cache gc --cache "$C" --cache-size 0
expect_rc 2 "two actions" "$FLOWRUN" cache stats gc --cache "$C"

# a file that is not a cache: exit 1, the path named, the file unchanged
printf 'my notes, not a database\n%.0s' {1..20} > "$T/notes.txt"
cp "$T/notes.txt" "$T/notes.orig"
for action in stats clear gc; do
  expect_rc 1 "$action on a text file" "$FLOWRUN" cache "$action" --cache "$T/notes.txt"
  grep -q "notes.txt: not an SQLite database" "$T/err" || fail "$action message: $(cat "$T/err")"
done
cmp -s "$T/notes.txt" "$T/notes.orig" || fail "the text file was changed"

rm -rf "$T"
[ "$fails" = 0 ] && echo "cli cache: ok" || echo "cli cache: $fails failures"
[ "$fails" = 0 ]
