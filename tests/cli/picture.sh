#!/usr/bin/env bash
# `flowrun PICTURE.png` runs the workflow SaveImage embedded in the picture, with the params it was made
# with, then --set overrides; a picture without a workflow (or not a PNG) exits 2.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../cli_lib.sh" # ok, bad, expect, done_field, started
: "${FLOWRUN:?}" "${FR_SRC:?}" "${FR_TEST_TMP:=/tmp}"
T="$FR_TEST_TMP/cli_picture.$$"
rm -rf "$T" && mkdir -p "$T/out" && cd "$T" || exit 1
outpath() { grep '"event":"output"' "$1" | head -1 | sed -E 's/.*"path":"([^"]*)".*/\1/'; }

cat > g.yaml <<'YAML'
flowrun: 1
params:
  radius: 2
nodes:
  pattern: {type: TestPattern, inputs: {width: 40, height: 30}}
  blur: {type: ImageBlur, inputs: {image: pattern, radius: $radius}}
  save: {type: SaveImage, inputs: {images: blur, filename_prefix: pic}}
YAML
R=(--cache "$T/cache.sqlite" --output out --events jsonl)
"$FLOWRUN" g.yaml "${R[@]}" --set radius=4 > r1.jsonl || bad "first run"
pic=$(outpath r1.jsonl)
[ -f "$pic" ] && ok "picture written: $pic" || bad "no picture: $(cat r1.jsonl)"

# The picture re-runs its workflow with radius=4 (its params): everything is cached.
"$FLOWRUN" "$pic" "${R[@]}" > r2.jsonl 2> r2.err; rc=$?
[ $rc = 0 ] && [ "$(done_field r2.jsonl executed)" = 0 ] && ok "picture re-run is fully cached" \
  || bad "picture re-run: exit $rc $(tail -1 r2.jsonl) $(cat r2.err)"
# Without the cache it really runs, and makes the same pixels again.
rm -f "$pic"
"$FLOWRUN" "$(outpath r1.jsonl)" --no-cache --output out --events jsonl > r3.jsonl 2> r3.err
[ $? = 2 ] && grep -q "pic_" r3.err && ok "a missing picture is an error" || bad "missing picture: $(cat r3.err)"
"$FLOWRUN" g.yaml "${R[@]}" --set radius=4 > r4.jsonl || bad "re-make run"
pic=$(outpath r4.jsonl)
"$FLOWRUN" "$pic" --no-cache --output out --events jsonl > r5.jsonl || bad "picture --no-cache"
[ "$(done_field r5.jsonl executed)" = 3 ] && ok "picture runs all 3 nodes without a cache" || bad "r5: $(tail -1 r5.jsonl)"
new=$(outpath r5.jsonl)
[ -f "$new" ] && [ "$new" != "$pic" ] && ok "picture run wrote $new" || bad "r5 output: $new"
# --set on top of the picture's params: only blur and save run.
"$FLOWRUN" "$pic" "${R[@]}" --set radius=1 > r6.jsonl || bad "picture --set"
[ "$(started r6.jsonl)" = "blur save " ] && ok "picture --set radius=1 re-runs blur and save" || bad "r6: $(started r6.jsonl)"
# The run with the picture's own radius=4 and a graph run with radius=4 share keys: cached.
"$FLOWRUN" g.yaml "${R[@]}" --set radius=1 > r7.jsonl
[ "$(done_field r7.jsonl executed)" = 0 ] && ok "graph and picture share the cache" || bad "r7: $(tail -1 r7.jsonl)"

# A picture of a graph that uses a subgraph file (graphs/image-demo.yaml uses blocks/edges.yaml) re-runs
# from another folder: the picture records the graph's folder.
"$FLOWRUN" "$FR_SRC/graphs/image-demo.yaml" "${R[@]}" --set size=64 > d1.jsonl || bad "demo run"
demo=$(outpath d1.jsonl)
"$FLOWRUN" "$demo" "${R[@]}" > d2.jsonl 2> d2.err; rc=$?
[ $rc = 0 ] && [ "$(done_field d2.jsonl executed)" = 0 ] && ok "demo picture (with a subgraph) re-runs, cached" \
  || bad "demo picture re-run: exit $rc $(cat d2.err)"

# Not a flowrun picture / not a PNG at all.
printf '\x89PNG\r\n\x1a\n garbage' > bad.png
"$FLOWRUN" bad.png --no-cache > /dev/null 2> e1; rc=$?
[ $rc = 2 ] && grep -q "bad.png" e1 && ok "corrupt png exits 2" || bad "bad.png: $rc $(cat e1)"

[ $fail = 0 ] && rm -rf "$T"
exit $fail
