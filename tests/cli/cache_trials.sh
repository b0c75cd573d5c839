#!/usr/bin/env bash
# Kill -9 and concurrency trials on one cache file: each trial starts PROCS flowrun processes at once on
# the same cache, each running one of six variants of an image graph (some with a small --cache-size, so
# eviction runs concurrently too), and kills about half of them with SIGKILL at random moments. After
# all trials:
#   - the file passes PRAGMA integrity_check and `flowrun cache gc` finds no bad entry;
#   - every entry whose key a clean single-process run also makes holds exactly the same bytes as that
#     run's entry (every cached node result, bit for bit; needs the sqlite3 command);
#   - every variant run against the trial cache (cached values loaded wherever present) writes, for
#     every stage of the graph, the same picture as a --no-cache run.
# CI runs TRIALS=8 (the default); the full version by hand:
#   TRIALS=150 FLOWRUN=build/flowrun FR_SRC=. bash tests/cli/cache_trials.sh
# SEED picks the random kills (printed, so a failure can be replayed); PROCS the processes per trial.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../cli_lib.sh" # ok, bad, expect, done_field, started
: "${FLOWRUN:?}" "${FR_TEST_TMP:=/tmp}"
TRIALS=${TRIALS:-8}
PROCS=${PROCS:-8}
SEED=${SEED:-$$}
RANDOM=$SEED
echo "cache trials: TRIALS=$TRIALS PROCS=$PROCS SEED=$SEED"
T="$FR_TEST_TMP/cli_cache_trials.$$"
rm -rf "$T" && mkdir -p "$T" && cd "$T" || exit 1

# every stage has its own SaveImage, so every node's cached value is read back and checked
cat > g.yaml <<'YAML'
flowrun: 1
params:
  radius: 1
  low: 0.15
nodes:
  pattern: {type: TestPattern, inputs: {pattern: shapes, width: 256, height: 192}}
  blur: {type: ImageBlur, inputs: {image: pattern, radius: $radius}}
  canny: {type: Canny, inputs: {image: blur, low_threshold: $low, high_threshold: 0.3}}
  overlay: {type: ImageBlend, inputs: {image1: pattern, image2: canny, blend_factor: 1.0, blend_mode: difference}}
  save_pattern: {type: SaveImage, inputs: {images: pattern, filename_prefix: pattern}}
  save_blur: {type: SaveImage, inputs: {images: blur, filename_prefix: blur}}
  save_canny: {type: SaveImage, inputs: {images: canny, filename_prefix: canny}}
  save_overlay: {type: SaveImage, inputs: {images: overlay, filename_prefix: overlay}}
YAML
VARIANTS=("radius=1 low=0.1" "radius=1 low=0.2" "radius=2 low=0.1" "radius=2 low=0.2" "radius=3 low=0.1"
  "radius=3 low=0.2")
sets() { for kv in ${VARIANTS[$1]}; do printf -- '--set %s ' "$kv"; done; }
STAGES="pattern blur canny overlay"

# the --no-cache reference pictures, and a clean single-process cache of every variant
for v in "${!VARIANTS[@]}"; do
  # shellcheck disable=SC2046
  "$FLOWRUN" g.yaml $(sets "$v") --no-cache --output "ref/$v" > "ref$v.log" 2>&1 || bad "reference $v: $(cat "ref$v.log")"
  # shellcheck disable=SC2046
  "$FLOWRUN" g.yaml $(sets "$v") --cache clean.sqlite --output "clean/$v" > "clean$v.log" 2>&1 || bad "clean $v"
done

killed=0 finished=0 failed=0
exec 4>&2 2>> shell.err # the shell's "Killed" notices
for ((t = 0; t < TRIALS; t++)); do
  pids=()
  for ((p = 0; p < PROCS; p++)); do
    v=$((RANDOM % ${#VARIANTS[@]}))
    extra=()
    [ $((RANDOM % 6)) = 0 ] && extra=(--cache-size 4M) # eviction under concurrency (an image is 576 KiB)
    # shellcheck disable=SC2046
    "$FLOWRUN" g.yaml $(sets "$v") "${extra[@]}" --cache trial.sqlite --output "out/p$p" > "log.$t.$p" 2>&1 &
    pids+=($!)
  done
  # kill about half of them, at random moments within the first ~300 ms
  for ((p = 0; p < PROCS; p++)); do
    if [ $((RANDOM % 2)) = 0 ]; then
      sleep "0.$(printf '%03d' $((RANDOM % 80)))"
      kill -9 "${pids[$p]}" 2> /dev/null
    fi
  done
  for ((p = 0; p < PROCS; p++)); do
    wait "${pids[$p]}" 2> /dev/null
    rc=$?
    if [ $rc = 137 ]; then
      killed=$((killed + 1))
    elif [ $rc = 0 ]; then
      finished=$((finished + 1))
    else
      failed=$((failed + 1))
      bad "trial $t process $p: exit $rc: $(tail -3 "log.$t.$p")"
    fi
  done
done
exec 2>&4 4>&-
echo "$((TRIALS * PROCS)) processes: $finished finished, $killed killed, $failed failed"
[ $failed = 0 ] && ok "no process that ran to its end failed" || bad "$failed processes failed"
[ $killed -gt 0 ] || echo "note: no process was killed mid-run (all finished first)"

if command -v sqlite3 > /dev/null; then
  ic=$(sqlite3 trial.sqlite "PRAGMA integrity_check")
  [ "$ic" = ok ] && ok "integrity_check: ok" || bad "integrity_check: $ic"
fi
"$FLOWRUN" cache gc --cache trial.sqlite > gc.out 2>&1 || bad "gc: $(cat gc.out)"
grep -q "^dropped 0 entries" gc.out && ok "gc: no bad entry ($(tail -1 gc.out))" || bad "gc: $(cat gc.out)"

if command -v sqlite3 > /dev/null; then
  # the same key means the same inputs: the bytes must be the same as the clean run's
  q="ATTACH 'clean.sqlite' AS clean;
     SELECT count(*), coalesce(sum(m.blob != c.blob), 0) FROM main.entries m JOIN clean.entries c ON m.key = c.key;"
  IFS='|' read -r common differ < <(sqlite3 trial.sqlite "$q")
  [ "${common:-0}" -gt 0 ] && [ "$differ" = 0 ] && ok "$common entries shared with the clean run, all byte-identical" \
    || bad "$common entries shared with the clean run, $differ differ"
else
  echo "part skipped: no sqlite3 command to compare entries byte for byte"
fi

loaded=0
for v in "${!VARIANTS[@]}"; do
  # shellcheck disable=SC2046
  "$FLOWRUN" g.yaml $(sets "$v") --cache trial.sqlite --output "check/$v" --events jsonl > "check$v.jsonl" 2> "check$v.err" \
    || bad "check run $v: $(cat "check$v.err")"
  loaded=$((loaded + $(grep -c '"event":"node_cached"' "check$v.jsonl")))
  for s in $STAGES; do
    cmp -s "check/$v/${s}_00001.png" "ref/$v/${s}_00001.png" || bad "variant $v (${VARIANTS[$v]}), $s: the picture from the trial cache differs from the --no-cache one"
  done
done
[ $loaded -gt 0 ] && ok "every stage of every variant matches the --no-cache pictures ($loaded node results came from the trial cache)" \
  || bad "the check runs found nothing in the trial cache"
exit $fail
