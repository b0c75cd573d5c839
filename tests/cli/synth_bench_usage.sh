#!/usr/bin/env bash
# flowrun synth: bad usage is exit 2 with a message naming the problem; nothing is written.
# (Full-size synth runs take minutes and gigabytes: they are run by hand, see BENCHMARKS.md. flowrun bench's
# options and rows are checked by bench_rows.sh.)
set -u
fail=0
tmp="${FR_TEST_TMP:-/tmp}/cli_synth.$$"
mkdir -p "$tmp"
expect() { # expect CODE NEEDLE -- command...
  local code=$1 needle=$2; shift 3
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [ "$rc" != "$code" ] || ! grep -q -- "$needle" <<<"$out"; then
    echo "FAIL: $* -> exit $rc (want $code), output: $out"; fail=1
  else
    echo "ok: $* -> exit $rc: $(head -1 <<<"$out")"
  fi
}
expect 2 "unknown architecture 'sd9'" -- "$FLOWRUN" synth sd9 "$tmp/x.safetensors"
expect 2 "usage" -- "$FLOWRUN" synth sd15
expect 2 "expected f32, f16 or bf16" -- "$FLOWRUN" synth sd15 "$tmp/x.safetensors" --dtype f8
expect 2 "non-negative integer" -- "$FLOWRUN" synth sd15 "$tmp/x.safetensors" --seed abc
expect 2 "unknown or incomplete option --bogus" -- "$FLOWRUN" synth sd15 "$tmp/x.safetensors" --bogus
expect 1 "cannot create a temporary file" -- "$FLOWRUN" synth controlnet-sd15 "$tmp/no/dir/x.safetensors" --quiet
# The startup rows: three rows of numbers from child runs of this flowrun, and of another binary with
# --program (here the same one); a program that fails is exit 1.
out=$("$FLOWRUN" bench --only startup --runs 2 2>&1); rc=$?
if [ $rc = 0 ] && [ "$(grep -cE '^(version|validate image-demo|cached run image-demo) +[0-9.]+ +[0-9.]+ +[0-9.]+$' <<<"$out")" = 3 ]; then
  echo "ok: bench --only startup: 3 rows"
else echo "FAIL: bench --only startup -> $rc: $out"; fail=1; fi
expect 0 "startup of $FLOWRUN" -- "$FLOWRUN" bench --only startup --runs 1 --program "$FLOWRUN"
expect 1 "failed" -- "$FLOWRUN" bench --only startup --runs 1 --program /bin/false
expect 2 "--program times startup only" -- "$FLOWRUN" bench --only sgemm --program /bin/true
if ls "$tmp" | grep -q .; then echo "FAIL: files left in $tmp: $(ls "$tmp")"; fail=1; fi
rm -rf "$tmp"
exit $fail
