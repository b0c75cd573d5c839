#!/usr/bin/env bash
# `flowrun validate` and the exit statuses of the CLI: invalid graphs exit 2 with file:line:col on
# stderr (validate and run alike), a node failing at run time exits 1 naming the node, bad options exit 2.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../cli_lib.sh" # ok, bad, expect, done_field, started
: "${FLOWRUN:?}" "${FR_TEST_TMP:=/tmp}"
T="$FR_TEST_TMP/cli_validate.$$"
rm -rf "$T" && mkdir -p "$T" && cd "$T" || exit 1

cat > good.yaml <<'YAML'
flowrun: 1
nodes:
  p: {type: TestPattern, inputs: {width: 32, height: 32}}
  s: {type: SaveImage, inputs: {images: p}}
YAML
"$FLOWRUN" validate good.yaml > v.out 2>&1 && [ "$(cat v.out)" = "ok: 2 nodes" ] && ok "valid graph" || bad "valid: $(cat v.out)"

printf 'flowrun: 1\nnodes:\n  p: {type: TestPatern}\n' > typo.yaml
expect 2 "typo.yaml:3:[0-9]+: .*TestPatern" "$FLOWRUN" validate typo.yaml
expect 2 "typo.yaml:3:[0-9]+: .*TestPatern" "$FLOWRUN" typo.yaml --no-cache
printf 'flowrun: 1\nnodes:\n  p: {type: TestPattern, inputs: {width: 0}}\n  s: {type: SaveImage, inputs: {images: p}}\n' > range.yaml
expect 2 "range.yaml:3:[0-9]+:.*width" "$FLOWRUN" validate range.yaml
printf 'flowrun: 1\nnodes:\n  s: {type: SaveImage, inputs: {images: nobody}}\n' > link.yaml
expect 2 "link.yaml:3:[0-9]+:.*nobody" "$FLOWRUN" run link.yaml --no-cache
printf 'flowrun: 1\nnodes:\n  p: [oops\n' > syntax.yaml
expect 2 "syntax.yaml:[0-9]+:[0-9]+" "$FLOWRUN" validate syntax.yaml
printf 'flowrun: 1\nparams: {r: 2}\nnodes:\n  p: {type: TestPattern}\n  b: {type: ImageBlur, inputs: {image: p, radius: $r}}\n  s: {type: SaveImage, inputs: {images: b}}\n' > param.yaml
expect 2 "r|radius" "$FLOWRUN" validate param.yaml --set r=99
expect 2 "missing.yaml" "$FLOWRUN" validate missing.yaml
# Model files: not checked without model folders (the graph may be for another machine); with --models
# (or FLOWRUN_MODELS) a missing one is the error that lists where flowrun looked.
mkdir -p models empty && : > models/m.safetensors
printf 'flowrun: 1\nnodes:\n  c: {type: CheckpointLoader, inputs: {ckpt_name: m.safetensors}}\n' > ckpt.yaml
"$FLOWRUN" validate ckpt.yaml > v.out 2>&1 && ok "model file not checked without --models" || bad "$(cat v.out)"
expect 2 "ckpt.yaml:3:[0-9]+: .*'m.safetensors' not found; looked at: empty/m.safetensors" \
  "$FLOWRUN" validate ckpt.yaml --models empty
FLOWRUN_MODELS=empty "$FLOWRUN" validate ckpt.yaml > v.out 2>&1; [ $? = 2 ] && grep -q "not found" v.out \
  && ok "FLOWRUN_MODELS checks too" || bad "FLOWRUN_MODELS: $(cat v.out)"
"$FLOWRUN" validate ckpt.yaml --models empty --models models > v.out 2>&1 && grep -q "every file found" v.out \
  && ok "found on the second folder" || bad "validate --models models: $(cat v.out)"
expect 2 "unknown option --bogus" "$FLOWRUN" good.yaml --bogus
expect 2 "expected NAME=VALUE" "$FLOWRUN" good.yaml --set novalue
expect 2 "cpu or cuda" "$FLOWRUN" good.yaml --device tpu
expect 2 "cache-size" "$FLOWRUN" good.yaml --cache-size lots
expect 2 "jsonl" "$FLOWRUN" good.yaml --events xml
expect 2 "unknown command" "$FLOWRUN" frobnicate

# A node failing at run time: exit 1, the node named, an error event on stdout, nothing else lost.
printf 'not a png' > fake.png
printf 'flowrun: 1\nnodes:\n  load: {type: LoadImage, inputs: {image: fake.png}}\n  s: {type: SaveImage, inputs: {images: load}}\n' > runfail.yaml
expect 1 "node load \\(LoadImage\\)" "$FLOWRUN" runfail.yaml --cache "$T/c.sqlite" --events jsonl
grep -q '"event":"error","node":"load"' out.txt && ok "error event names the node" || bad "error event: $(cat out.txt)"
grep -q '"event":"run_done".*"status":"' out.txt && ok "run_done after the error" || bad "no run_done"
expect 1 "node load \\(LoadImage\\)" "$FLOWRUN" runfail.yaml --cache "$T/c.sqlite"
# The cache still works after the failure.
"$FLOWRUN" good.yaml --cache "$T/c.sqlite" --output "$T" --quiet && ok "cache usable after a failed run" || bad "after failure"

[ $fail = 0 ] && rm -rf "$T"
exit $fail
