#!/usr/bin/env bash
# Batches of runs from the CLI: --repeat N runs N times with the seed param going up by one each run (as
# ComfyUI's batch count with "increment"), --seed N|random sets the seed param (random: a fresh one, printed).
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../cli_lib.sh" # ok, bad, expect, done_field, require_fixtures
: "${FLOWRUN:?}" "${FR_SRC:?}" "${FR_FIXTURES:?}" "${FR_TEST_TMP:=/tmp}"
require_fixtures
T="$FR_TEST_TMP/cli_repeat.$$"
rm -rf "$T" && mkdir -p "$T" && cd "$T" || exit 1
R=("$FR_SRC/graphs/tiny-demo.yaml" --models "$FR_FIXTURES/models" --cache "$T/c.sqlite" --output out
   --set steps=2 --events jsonl)
skey() { grep '"event":"node_start","node":"sample"' "$1" | sed -E 's/.*"key":"([0-9a-f]+)".*/\1/'; }

"$FLOWRUN" "${R[@]}" --set seed=5 --repeat 3 > rep.jsonl 2> rep.err || bad "repeat: $(cat rep.err)"
[ "$(grep -c '"event":"run_done".*"status":"ok"' rep.jsonl)" = 3 ] && ok "3 runs" || bad "runs: $(cat rep.jsonl)"
[ "$(skey rep.jsonl | sort -u | wc -l)" = 3 ] && ok "3 different Sampler keys" || bad "keys: $(skey rep.jsonl)"
grep -q "run 3 of 3, seed 7" rep.err && ok "seeds 5, 6, 7 said" || bad "stderr: $(cat rep.err)"
[ "$(ls out/*.png | wc -l)" = 3 ] && ok "3 pictures" || bad "pictures: $(ls out)"
# The third run was seed 7: a run with seed 7 is fully cached, one with seed 8 is not.
"$FLOWRUN" "${R[@]}" --seed 7 > s7.jsonl 2>/dev/null
[ "$(done_field s7.jsonl executed)" = 0 ] && ok "--seed 7 = the third repeat" || bad "seed 7: $(tail -1 s7.jsonl)"
"$FLOWRUN" "${R[@]}" --seed 8 --set seed=5 > s8.jsonl 2>/dev/null
[ "$(done_field s8.jsonl executed)" -gt 0 ] && ok "--seed wins over --set and runs seed 8" || bad "seed 8: $(tail -1 s8.jsonl)"

# --seed random: a fresh seed, printed; a run with that seed is then cached.
"$FLOWRUN" "${R[@]}" --seed random > rnd.jsonl 2> rnd.err || bad "random: $(cat rnd.err)"
s=$(sed -nE 's/^flowrun: seed ([0-9]+)$/\1/p' rnd.err)
[ -n "$s" ] && ok "random seed $s printed" || bad "no seed printed: $(cat rnd.err)"
"$FLOWRUN" "${R[@]}" --set seed="$s" > again.jsonl 2>/dev/null
[ "$(done_field again.jsonl executed)" = 0 ] && ok "the printed seed reproduces the run" || bad "$(tail -1 again.jsonl)"
"$FLOWRUN" "${R[@]}" --seed random --repeat 2 > rnd2.jsonl 2> rnd2.err
[ "$(sed -nE 's/^flowrun: run [12] of 2, seed ([0-9]+)$/\1/p' rnd2.err | sort -u | wc -l)" = 2 ] \
  && ok "random seeds differ between runs" || bad "$(cat rnd2.err)"

expect 2 "needs an INT param 'seed'" "$FLOWRUN" "$FR_SRC/graphs/image-demo.yaml" --output out --repeat 2
expect 2 "--seed -1: expected" "$FLOWRUN" "${R[@]}" --seed -1
expect 2 "--seed x: expected" "$FLOWRUN" "${R[@]}" --seed x
expect 2 "--repeat 0: expected" "$FLOWRUN" "${R[@]}" --repeat 0
cd / && rm -rf "$T"
exit $fail
