# Helpers of the CLI tests (tests/cli/*.sh source this file; it is not a test itself). A failed check sets
# fail=1; the test ends with `exit $fail`.
fail=0
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }
# expect STATUS PATTERN CMD...: exit status and a stderr line matching PATTERN (stdout in out.txt, stderr in
# err.txt of the current folder)
expect() {
  local want=$1 pat=$2
  shift 2
  "$@" >out.txt 2>err.txt
  local rc=$?
  if [ $rc = "$want" ] && grep -Eq -- "$pat" err.txt; then ok "$* -> $rc"; else bad "$* -> $rc (want $want, /$pat/): $(cat err.txt)"; fi
}
# Of a --events jsonl file: field NAME of the run_done line; the ids of the nodes that started, sorted,
# space-separated
done_field() { grep '"event":"run_done"' "$1" | sed -E "s/.*\"$2\":([0-9]+).*/\\1/"; }
started() { grep '"event":"node_start"' "$1" | sed -E 's/.*"node":"([^"]*)".*/\1/' | sort | tr '\n' ' '; }

# Exits 77 (skipped) when the tiny SD1.5 fixture is missing, or 1 when FR_REQUIRE_FIXTURES=1 (CI) demands it.
require_fixtures() {
  [ -f "$FR_FIXTURES/models/sd15-tiny.safetensors" ] && return 0
  if [ "${FR_REQUIRE_FIXTURES:-0}" = 1 ]; then echo "FAIL: fixtures not found at $FR_FIXTURES"; exit 1; fi
  echo "skipped: fixtures not found at $FR_FIXTURES"; exit 77
}
