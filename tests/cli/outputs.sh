#!/usr/bin/env bash
# Output files and the cache: a cached output node is only "cached" while the file it recorded (absolute
# path and content hash) is still there with those bytes. Numbered names reused after the output folder was
# cleared, and the same relative --output in another working folder, re-make the file under a fresh name
# instead of reporting another picture. A missing --output folder is created for every output node. Every
# expected picture comes from an independent --no-cache run of the same graph into a folder of its own.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../cli_lib.sh" # ok, bad, expect, done_field, started
: "${FLOWRUN:?}" "${FR_TEST_TMP:=/tmp}"
T="$FR_TEST_TMP/cli_outputs.$$"
rm -rf "$T" && mkdir -p "$T" && cd "$T" && T=$(pwd -P) || exit 1
# path of the first output event of a jsonl file; its "written" field
outpath() { grep '"event":"output"' "$1" | head -1 | sed -E 's/.*"path":"([^"]*)".*/\1/'; }
written() { grep '"event":"output"' "$1" | head -1 | sed -E 's/.*"written":(true|false).*/\1/'; }

cat > g.yaml <<'YAML'
flowrun: 1
params:
  radius: 2
nodes:
  pattern: {type: TestPattern, inputs: {width: 48, height: 32}}
  blur: {type: ImageBlur, inputs: {image: pattern, radius: $radius}}
  save: {type: SaveImage, inputs: {images: blur, filename_prefix: s}}
YAML
C=(--cache "$T/cache.sqlite" --events jsonl)

# References: graph A (radius 2) and graph B (radius 5), each run without a cache into its own folder.
"$FLOWRUN" g.yaml --no-cache --output refA --events jsonl > refA.jsonl || bad "reference A"
"$FLOWRUN" g.yaml --no-cache --output refB --events jsonl --set radius=5 > refB.jsonl || bad "reference B"
cmp -s refA/s_00001.png refB/s_00001.png && bad "A and B make the same file: the test cannot tell them apart"

# The stale-output sequence: run A, clear the folder, run B (which gets s_00001.png again), run A again.
"$FLOWRUN" g.yaml "${C[@]}" --output out > a1.jsonl || bad "run A"
[ "$(outpath a1.jsonl)" = "$T/out/s_00001.png" ] && [ "$(written a1.jsonl)" = true ] \
  && ok "A wrote out/s_00001.png, absolute path, written:true" || bad "A: $(grep output a1.jsonl)"
rm -f out/*
"$FLOWRUN" g.yaml "${C[@]}" --output out --set radius=5 > b1.jsonl || bad "run B"
[ "$(outpath b1.jsonl)" = "$T/out/s_00001.png" ] && ok "B reused the name s_00001.png" || bad "B: $(outpath b1.jsonl)"
"$FLOWRUN" g.yaml "${C[@]}" --output out > a2.jsonl || bad "run A again"
pa=$(outpath a2.jsonl)
[ "$(started a2.jsonl)" = "save " ] && ok "A again: only save re-runs (from the cached image)" \
  || bad "A again started: $(started a2.jsonl) $(tail -1 a2.jsonl)"
[ -n "$pa" ] && cmp -s "$pa" refA/s_00001.png && ok "A again reports a file holding A's picture ($pa)" \
  || bad "A again reports $pa, which is not A's picture"
[ "$pa" = "$T/out/s_00002.png" ] && [ "$(written a2.jsonl)" = true ] && ok "under a fresh name, written:true" \
  || bad "A again: $pa"
cmp -s out/s_00001.png refB/s_00001.png && ok "B's file is left alone" || bad "B's s_00001.png was changed"
# Now A is cached with its file: nothing runs, the event says the file was not written by this run.
"$FLOWRUN" g.yaml "${C[@]}" --output out > a3.jsonl || bad "run A a third time"
[ "$(done_field a3.jsonl executed)" = 0 ] && [ "$(outpath a3.jsonl)" = "$pa" ] && [ "$(written a3.jsonl)" = false ] \
  && ok "A cached: 0 ran, same file, written:false" || bad "A cached: $(grep -E 'output|run_done' a3.jsonl)"
"$FLOWRUN" g.yaml --cache "$T/cache.sqlite" --output out 2> a4.err || bad "plain run"
grep -q "^  exists  $pa\$" a4.err && ! grep -q "wrote" a4.err && ok "plain log says exists, not wrote" \
  || bad "plain log: $(cat a4.err)"
# A file changed in place (same name, other bytes) is not ours any more: re-made under a fresh name.
cp refB/s_00001.png "$pa"
"$FLOWRUN" g.yaml "${C[@]}" --output out > a5.jsonl || bad "run A after the file changed"
p5=$(outpath a5.jsonl)
[ "$(started a5.jsonl)" = "save " ] && [ "$p5" = "$T/out/s_00003.png" ] && cmp -s "$p5" refA/s_00001.png \
  && cmp -s "$pa" refB/s_00001.png && ok "a changed file: A re-made as s_00003.png, the changed file kept" \
  || bad "changed file: started $(started a5.jsonl), $p5"
# The recorded file replaced by a link to a copy of itself elsewhere: not the file written, re-made.
mkdir -p elsewhere && mv "$p5" elsewhere/copy.png && ln -s "$T/elsewhere/copy.png" "$p5"
"$FLOWRUN" g.yaml "${C[@]}" --output out > a6.jsonl || bad "run A after the file became a link"
p6=$(outpath a6.jsonl)
[ "$(started a6.jsonl)" = "save " ] && [ "$p6" = "$T/out/s_00004.png" ] && [ -L "$p5" ] && cmp -s "$p6" refA/s_00001.png \
  && ok "a link in place of the file: re-made as s_00004.png, the link left alone" \
  || bad "link: started $(started a6.jsonl), $p6"

# The same relative output folder (the default ".") in another working folder, which holds its own
# s_00001.png (B's): A's cached record from d1 does not count there.
mkdir d1 d2
(cd d1 && "$FLOWRUN" ../g.yaml "${C[@]}" > ../d1.jsonl) || bad "A in d1"
(cd d2 && "$FLOWRUN" ../g.yaml "${C[@]}" --set radius=5 > ../d2b.jsonl) || bad "B in d2"
(cd d2 && "$FLOWRUN" ../g.yaml "${C[@]}" > ../d2a.jsonl) || bad "A in d2"
p2=$(outpath d2a.jsonl)
[ "$(written d2a.jsonl)" = true ] && [ "${p2#"$T"/d2/}" != "$p2" ] && cmp -s "$p2" refA/s_00001.png \
  && ok "A in another folder writes its own file there ($p2)" || bad "A in d2 reports $p2: $(cat d2a.jsonl)"
cmp -s d2/s_00001.png refB/s_00001.png && cmp -s d1/s_00001.png refA/s_00001.png \
  && ok "d1's and d2's first files untouched" || bad "d1/d2 files changed"

# A missing --output folder (two levels) is created, for SaveImage, SaveLatent and SaveImageData.
cat > lat.yaml <<'YAML'
flowrun: 1
nodes:
  empty: {type: EmptyLatent, inputs: {width: 64, height: 32}}
  keep: {type: SaveLatent, inputs: {samples: empty, filename: l.safetensors}}
  pattern: {type: TestPattern, inputs: {width: 16, height: 16}}
  data: {type: SaveImageData, inputs: {images: pattern, filename: i.safetensors}}
  png: {type: SaveImage, inputs: {images: pattern, filename_prefix: p}}
YAML
"$FLOWRUN" lat.yaml --no-cache --output new/deep > n1.out 2> n1.err; rc=$?
[ $rc = 0 ] && [ -s new/deep/l.safetensors ] && [ -s new/deep/i.safetensors ] && [ -s new/deep/p_00001.png ] \
  && ok "missing --output folder created for SaveLatent, SaveImageData and SaveImage" \
  || bad "missing --output: exit $rc $(cat n1.err); $(ls -R new 2>&1)"
"$FLOWRUN" lat.yaml "${C[@]}" --output new2 > n2.jsonl 2> n2.err; rc=$?
[ $rc = 0 ] && [ -s new2/l.safetensors ] && ok "with the cache too" || bad "new2: exit $rc $(cat n2.err)"
# SaveLatent's fixed name, changed by someone else: re-made (its documented behaviour is to replace).
printf 'not a latent' > new2/l.safetensors
"$FLOWRUN" lat.yaml "${C[@]}" --output new2 > n3.jsonl || bad "re-run after the latent changed"
[ "$(started n3.jsonl)" = "keep " ] && cmp -s new2/l.safetensors new/deep/l.safetensors \
  && ok "a changed SaveLatent file is written again" || bad "latent re-make: $(started n3.jsonl)"
# An output folder that cannot be made is an error naming it (a file is in the way).
printf x > afile
expect 1 "afile" "$FLOWRUN" lat.yaml --no-cache --output afile/sub

# No temporary files left behind by any of these runs.
left=$(find . -name '.*.tmp-*' -o -name '*.tmp.*' | head -3)
[ -z "$left" ] && ok "no temporary files left" || bad "temporary files left: $left"

[ $fail = 0 ] && rm -rf "$T"
exit $fail
