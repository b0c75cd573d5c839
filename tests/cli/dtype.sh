#!/usr/bin/env bash
# --dtype on `flowrun run` and `flowrun serve`: listed in --help; a dtype the device does not have (the
# cpu computes in f32 only) or does not exist is a clear error before any work (exit 2, message naming
# the dtype and the device, no file written); an explicit --dtype f32 on the cpu shares the cache keys of
# the default (the second run finds everything cached).
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../cli_lib.sh" # ok, bad, expect, done_field, started
: "${FLOWRUN:?}" "${FR_TEST_TMP:=/tmp}"
T="$FR_TEST_TMP/cli_dtype.$$"
rm -rf "$T" && mkdir -p "$T/out" && cd "$T" || exit 1
trap 'rm -rf "$T"' EXIT

"$FLOWRUN" run --help | grep -q -- "--dtype f32|f16|bf16" && ok "run --help lists --dtype" || bad "run --help: no --dtype"

cat > g.yaml <<'YAML'
flowrun: 1
nodes:
  p: {type: TestPattern, inputs: {width: 32, height: 32}}
  s: {type: SaveImage, inputs: {images: p, filename_prefix: pic}}
YAML
for dt in f16 bf16; do
  expect 2 "--device cpu --dtype $dt: .*$(echo $dt | tr a-z A-Z) is not supported \(cpu computes in F32\)" \
    "$FLOWRUN" g.yaml --device cpu --dtype $dt --cache c.sqlite --output out
done
[ -z "$(ls out)" ] && ok "nothing ran before the dtype error" || bad "files written: $(ls out)"
[ ! -e c.sqlite ] && ok "no cache opened before the dtype error" || bad "the cache was opened"
expect 2 "--dtype f8: expected f32, f16 or bf16" "$FLOWRUN" g.yaml --dtype f8 --no-cache
expect 2 "--dtype needs a value" "$FLOWRUN" g.yaml --dtype

# default vs explicit f32 on the cpu: the same keys, so the second run is all cached
"$FLOWRUN" g.yaml --cache c.sqlite --output out --events jsonl > e1.jsonl 2>/dev/null || bad "default run failed"
"$FLOWRUN" g.yaml --dtype f32 --cache c.sqlite --output out --events jsonl > e2.jsonl 2>/dev/null ||
  bad "--dtype f32 run failed"
grep -q '"event":"node_start"' e1.jsonl && ok "first run executes" || bad "first run: $(cat e1.jsonl)"
if grep -q '"event":"node_start"' e2.jsonl; then bad "--dtype f32 on cpu re-ran nodes: $(cat e2.jsonl)";
else ok "--dtype f32 on cpu = the default's cache keys"; fi

if "$FLOWRUN" serve --help > /dev/null 2>&1; then
  "$FLOWRUN" serve --help | grep -q -- "--dtype" && ok "serve --help lists --dtype" || bad "serve --help: no --dtype"
  expect 2 "serve: --device cpu --dtype f16: .*not supported" "$FLOWRUN" serve --device cpu --dtype f16 --port 0
  expect 2 "serve: --dtype f64: expected f32, f16 or bf16" "$FLOWRUN" serve --dtype f64 --port 0
else
  echo "serve not built: its checks skipped"
fi
exit $fail
