#!/usr/bin/env bash
# Incremental re-execution on a real pipeline (graphs/tiny-demo.yaml on the tiny SD1.5 model), observed
# through --events jsonl (which nodes ran / came from the cache, and the lazy loader's info event
# "loading <component> from <file>", emitted only when a checkpoint is opened). The CLI's display prints
# that event as "flowrun: loading ..." unless --quiet.
set -u
: "${FLOWRUN:?}" "${FR_SRC:?}"
FX="${FR_FIXTURES:-}"
if [ ! -f "$FX/models/sd15-tiny.safetensors" ]; then echo "skipped: fixtures not found"; exit 77; fi
T="${FR_TEST_TMP:-/tmp}/pipeline_incremental.$$"
rm -rf "$T" && mkdir -p "$T"
trap 'rm -rf "$T"' EXIT
fail=0
check() { if eval "$1"; then echo "ok: $2"; else echo "FAIL: $2"; fail=1; fi; }

run() { # run NAME [--set ...]: events in $T/NAME.jsonl, stderr in $T/NAME.err
  local name=$1; shift
  "$FLOWRUN" run "$FR_SRC/graphs/tiny-demo.yaml" --models "$FX/models" --cache "$T/cache.sqlite" \
    --output "$T/out" --events jsonl "$@" >"$T/$name.jsonl" 2>"$T/$name.err"
  echo $? >"$T/$name.rc"
}
ran() { grep -q "\"event\":\"node_start\",\"node\":\"$2\"" "$T/$1.jsonl"; }
cached() { grep -q "\"event\":\"node_cached\",\"node\":\"$2\"" "$T/$1.jsonl"; }
loaded() { grep "\"event\":\"info\"" "$T/$1.jsonl" | grep -q "loading $2 from"; }

run full
check '[ "$(cat $T/full.rc)" = 0 ]' "full run succeeds"
for n in positive negative empty sample decode save; do check "ran full $n" "full run executes $n"; done
check 'loaded full CLIP && loaded full MODEL && loaded full VAE' "full run loads CLIP, MODEL and VAE"
check 'grep -q "\"event\":\"progress\",\"node\":\"sample\"" $T/full.jsonl' "the Sampler reports progress per step"
check '[ "$(grep -c "\"event\":\"progress\",\"node\":\"sample\"" $T/full.jsonl)" = 8 ]' "one progress event per step (8)"

run same
check '[ "$(cat $T/same.rc)" = 0 ]' "unchanged re-run succeeds"
check 'grep -q "\"executed\":0" $T/same.jsonl' "unchanged re-run executes nothing"
check '! ran same ckpt' "unchanged re-run does not run the loader"
check '! grep -q "loading" $T/same.jsonl $T/same.err' "unchanged re-run opens no checkpoint"

run seed --set seed=2
check '[ "$(cat $T/seed.rc)" = 0 ]' "seed change succeeds"
check 'cached seed positive && cached seed negative' "seed change: both TextEncodes come from the cache"
check 'ran seed sample && ran seed decode && ran seed save' "seed change: Sampler, VAEDecode and SaveImage re-run"
check '! loaded seed CLIP' "seed change: the text encoder is not loaded"
check 'loaded seed MODEL' "seed change: the UNet is loaded (by the Sampler, lazily)"

run neg --set seed=2 --set negative=grainy
check '[ "$(cat $T/neg.rc)" = 0 ]' "negative prompt change succeeds"
check 'ran neg negative && cached neg positive' "negative change: only the negative TextEncode re-runs"
check 'ran neg sample && ran neg decode' "negative change: the Sampler and what follows re-run"

# the display: the loader's line without --events, and nothing but warnings and errors with --quiet
"$FLOWRUN" run "$FR_SRC/graphs/tiny-demo.yaml" --models "$FX/models" --no-cache --output "$T/out" \
  --set seed=3 >/dev/null 2>"$T/plain.err"
check 'grep -q "^flowrun: loading MODEL from" $T/plain.err' "the display prints the loader line"
"$FLOWRUN" run "$FR_SRC/graphs/tiny-demo.yaml" --models "$FX/models" --no-cache --output "$T/out" \
  --set seed=3 --quiet >/dev/null 2>"$T/quiet.err"
check '[ ! -s $T/quiet.err ]' "--quiet prints nothing (no loader line) for a run without warnings"

exit $fail
