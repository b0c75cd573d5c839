#!/usr/bin/env bash
# The executor through the CLI with --events jsonl: an identical second run executes nothing, a changed
# param re-runs exactly that node and its descendants, keys are stable across processes and renames and
# change exactly where a literal changed, deleted outputs are re-made, --no-cache runs everything, a
# corrupt cache is recomputed.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../cli_lib.sh" # ok, bad, expect, done_field, started
: "${FLOWRUN:?}" "${FR_TEST_TMP:=/tmp}"
T="$FR_TEST_TMP/cli_run_cache.$$"
rm -rf "$T" && mkdir -p "$T" && cd "$T" || exit 1
# "id key" lines of node_start/node_cached events, sorted
keys() { grep -E '"event":"node_(start|cached)"' "$1" | sed -E 's/.*"node":"([^"]*)".*"key":"([0-9a-f]{32})".*/\1 \2/' | sort; }
key_of() { awk -v n="$2" '$1 == n {print $2}' "$1"; }

cat > g.yaml <<'YAML'
flowrun: 1
params:
  radius: 2
nodes:
  pattern: {type: TestPattern, inputs: {width: 64, height: 48}}
  blur: {type: ImageBlur, inputs: {image: pattern, radius: $radius}}
  edges: {type: Canny, inputs: {image: pattern, low_threshold: 0.3}}
  save: {type: SaveImage, inputs: {images: blur, filename_prefix: blurred}}
  save2: {type: SaveImage, inputs: {images: edges, filename_prefix: edges}}
YAML
R=(--cache "$T/cache.sqlite" --output out --events jsonl)
mkdir -p out

"$FLOWRUN" g.yaml "${R[@]}" > r1.jsonl 2> r1.err || bad "first run exit $?: $(cat r1.err)"
[ "$(done_field r1.jsonl executed)" = 5 ] && ok "first run executes 5" || bad "first run: $(tail -1 r1.jsonl)"
[ "$(grep -c '"event":"output"' r1.jsonl)" = 2 ] && [ -f out/blurred_00001.png ] && [ -f out/edges_00001.png ] \
  && ok "two files written" || bad "outputs: $(ls out)"
head -1 r1.jsonl | grep -q '^{"event":"run_start","nodes":5}$' && ok "run_start first" || bad "run_start: $(head -1 r1.jsonl)"

"$FLOWRUN" run g.yaml "${R[@]}" > r2.jsonl || bad "second run failed"
[ "$(done_field r2.jsonl executed)" = 0 ] && [ "$(done_field r2.jsonl cached)" = 2 ] \
  && ok "identical second run executes 0 (2 output nodes cached)" || bad "second run: $(tail -1 r2.jsonl)"

# Same keys in another process (without a cache every node starts, so every key is printed).
"$FLOWRUN" g.yaml --no-cache --output out --events jsonl > nc1.jsonl || bad "--no-cache run failed"
[ "$(done_field nc1.jsonl executed)" = 5 ] && ok "--no-cache runs everything" || bad "--no-cache: $(tail -1 nc1.jsonl)"
keys r1.jsonl > k1; keys nc1.jsonl > k2
cmp -s k1 k2 && [ "$(wc -l < k1)" = 5 ] && ok "same keys in two processes" || bad "keys differ: $(diff k1 k2)"
"$FLOWRUN" g.yaml --no-cache --output out --events jsonl > nc2.jsonl
[ "$(done_field nc2.jsonl executed)" = 5 ] && ok "--no-cache runs everything again" || bad "--no-cache twice"

# A changed param: exactly blur and its descendant save run.
"$FLOWRUN" g.yaml "${R[@]}" --set radius=3 > r3.jsonl || bad "--set run failed"
[ "$(started r3.jsonl)" = "blur save " ] && ok "--set radius=3 re-runs blur and save" || bad "started: $(started r3.jsonl)"
grep -q '"event":"node_cached","node":"pattern"' r3.jsonl && ok "pattern from the cache" || bad "pattern not cached"

# One literal changed (edges' threshold): exactly edges and save2 get new keys.
sed 's/low_threshold: 0.3/low_threshold: 0.35/' g.yaml > g2.yaml
"$FLOWRUN" g2.yaml --no-cache --output out --events jsonl > nc3.jsonl
keys nc3.jsonl > k3
changed=""
for n in pattern blur edges save save2; do
  [ "$(key_of k1 $n)" = "$(key_of k3 $n)" ] || changed="$changed$n "
done
[ "$changed" = "edges save2 " ] && ok "a changed literal changes exactly edges, save2" || bad "changed keys: $changed"

# Renaming a node keeps its key (and its cache).
sed -e 's/^  blur:/  soft:/' -e 's/images: blur,/images: soft,/' g.yaml > g3.yaml
"$FLOWRUN" g3.yaml --no-cache --output out --events jsonl > nc4.jsonl
keys nc4.jsonl > k4
[ -n "$(key_of k4 soft)" ] && [ "$(key_of k1 blur)" = "$(key_of k4 soft)" ] && [ "$(key_of k1 save)" = "$(key_of k4 save)" ] \
  && ok "renamed node keeps its key" || bad "rename: $(cat k4)"
"$FLOWRUN" g3.yaml "${R[@]}" > r4.jsonl
[ "$(done_field r4.jsonl executed)" = 0 ] && ok "renamed graph runs nothing" || bad "renamed run: $(tail -1 r4.jsonl)"

# A deleted output file is written again from cached inputs; nothing else runs.
rm -f out/edges_*.png
"$FLOWRUN" g.yaml "${R[@]}" > r5.jsonl
made=$(grep '"event":"output","node":"save2"' r5.jsonl | sed -E 's/.*"path":"([^"]*)".*/\1/')
[ "$(started r5.jsonl)" = "save2 " ] && [ -n "$made" ] && [ -f "$made" ] && ok "deleted output re-made by save2 alone" \
  || bad "re-make: started $(started r5.jsonl), files $(ls out)"

# A corrupt cache (every blob overwritten): reported, recomputed, never a crash.
if command -v sqlite3 > /dev/null; then
  sqlite3 "$T/cache.sqlite" "UPDATE entries SET blob = zeroblob(length(blob));" || bad "sqlite3 update"
  "$FLOWRUN" g.yaml "${R[@]}" > r6.jsonl 2> r6.err; rc=$?
  [ $rc = 0 ] && [ "$(done_field r6.jsonl executed)" = 5 ] && ok "corrupt entries recomputed" \
    || bad "corrupt: exit $rc $(tail -1 r6.jsonl) $(cat r6.err)"
  grep -q '"event":"warning"' r6.jsonl && ok "corruption reported as a warning" || bad "no warning"
  "$FLOWRUN" g.yaml "${R[@]}" > r7.jsonl
  [ "$(done_field r7.jsonl executed)" = 0 ] && ok "then fully cached again" || bad "after corrupt: $(tail -1 r7.jsonl)"
else
  echo "note: sqlite3 CLI not installed, corrupt-entry check left to test_engine and test_cache"
fi

# Without --events and not on a terminal: plain lines on stderr, nothing on stdout.
"$FLOWRUN" g.yaml --cache "$T/cache.sqlite" --output out > plain.out 2> plain.err
[ ! -s plain.out ] && grep -q "cached  save (SaveImage)" plain.err && grep -q "done in" plain.err \
  && ok "plain log on stderr" || bad "plain log: $(cat plain.err)"
"$FLOWRUN" g.yaml --cache "$T/cache.sqlite" --output out --quiet > q.out 2> q.err
[ ! -s q.out ] && [ ! -s q.err ] && ok "--quiet prints nothing on success" || bad "--quiet: $(cat q.err)"

[ $fail = 0 ] && rm -rf "$T"
exit $fail
