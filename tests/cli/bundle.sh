#!/usr/bin/env bash
# Inline graphs (a top-level graphs: mapping) and `flowrun bundle` (docs/graph-format.md, "Inline graphs
# and bundles"): a bundle gives the same node keys and the same pixels as the original, and a picture of
# a graph with two levels of subgraph files re-runs from an empty folder (SaveImage embeds the bundle).
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../cli_lib.sh" # ok, bad, expect, done_field, started
: "${FLOWRUN:?}" "${FR_TEST_TMP:=/tmp}"
T="$FR_TEST_TMP/cli_bundle.$$"
rm -rf "$T" && mkdir -p "$T/src/blocks/inner" "$T/out" "$T/empty" && cd "$T" || exit 1
keys() { grep -E '"event":"node_(start|cached)"' "$1" | sed -E 's/.*"node":"([^"]*)".*"key":"([^"]*)".*/\1 \2/' | sort; }
outpath() { grep '"event":"output"' "$1" | head -1 | sed -E 's/.*"path":"([^"]*)".*/\1/'; }
# The decoded pixels of a PNG (its IDAT data inflated), so pictures compare without their text chunks.
pixels() { python3 -c 'import sys,zlib,struct
d=open(sys.argv[1],"rb").read(); i=8; idat=b""
while i < len(d):
    n,=struct.unpack(">I",d[i:i+4]); t=d[i+4:i+8]
    if t==b"IDAT": idat+=d[i+8:i+8+n]
    i+=12+n
sys.stdout.write(zlib.decompress(idat).hex())' "$1" | sha256sum | cut -d' ' -f1; }

# Two levels: main.yaml -> blocks/soft.yaml (params via inputs) -> blocks/inner/blur2.yaml.
cat > src/blocks/inner/blur2.yaml <<'YAML'
flowrun: 1
inputs:
  image: {type: IMAGE}
  r: {type: INT, default: 1}   # inner default
outputs:
  out: b2
nodes:
  b1: {type: ImageBlur, inputs: {image: $image, radius: $r}}
  b2: {type: ImageBlur, inputs: {image: b1, radius: 1}}
YAML
cat > src/blocks/soft.yaml <<'YAML'
flowrun: 1
# a block with a block inside
inputs:
  image: {type: IMAGE}
  radius: {type: INT, default: 2}
outputs:
  soft: twice.out
nodes:
  twice:
    type: inner/blur2.yaml
    inputs: {image: $image, r: $radius}
YAML
cat > src/main.yaml <<'YAML'
flowrun: 1
params:
  size: 40
nodes:
  pattern: {type: TestPattern, inputs: {width: $size, height: 32}}
  a: {type: blocks/soft.yaml, inputs: {image: pattern, radius: 3}}
  b: {type: blocks/soft.yaml, inputs: {image: a.soft}}   # the same file twice
  save: {type: SaveImage, inputs: {images: b, filename_prefix: bun}}
YAML
R=(--no-cache --output out --events jsonl)
"$FLOWRUN" src/main.yaml "${R[@]}" > o1.jsonl 2> o1.err || bad "original run: $(cat o1.err)"

"$FLOWRUN" bundle src/main.yaml -o one.yaml 2> b.err && ok "bundle" || bad "bundle: $(cat b.err)"
[ "$(grep -c '^  [a-z_0-9-]*: # ' one.yaml)" = 2 ] && grep -q "^  soft: # blocks/soft.yaml" one.yaml \
  && grep -q "^  blur2: # blocks/inner/blur2.yaml" one.yaml && grep -q "    # a block with a block inside" one.yaml \
  && ok "bundle holds each subgraph file once, with its comments" || bad "bundle: $(cat one.yaml)"
! grep -q "\.yaml$" <(grep "type:" one.yaml) && ok "no node names a file any more" || bad "file types left"
# Run from another folder with no subgraph file around: same keys, same pixels.
cp one.yaml empty/one.yaml
(cd empty && "$FLOWRUN" one.yaml --no-cache --output ../out --events jsonl) > o2.jsonl 2> o2.err \
  || bad "bundle run: $(cat o2.err)"
[ "$(keys o1.jsonl)" = "$(keys o2.jsonl)" ] && [ "$(keys o1.jsonl | wc -l)" = 6 ] \
  && ok "bundled graph: the same 6 node ids and keys" || bad "keys: $(keys o1.jsonl) / $(keys o2.jsonl)"
[ "$(pixels "$(outpath o1.jsonl)")" = "$(pixels "$(outpath o2.jsonl)")" ] && ok "same picture" || bad "pixels differ"
# Bundling a bundle changes nothing; stdout without -o.
"$FLOWRUN" bundle one.yaml > two.yaml && cmp -s one.yaml two.yaml && ok "a bundle bundles to itself" \
  || bad "re-bundle: $(diff one.yaml two.yaml)"

# The picture of the original embeds the bundle: it re-runs in an empty folder after the sources are gone.
pic=$(outpath o1.jsonl)
cp "$pic" empty/pic.png && rm -rf src
(cd empty && "$FLOWRUN" pic.png --no-cache --output ../out --events jsonl) > o3.jsonl 2> o3.err; rc=$?
[ $rc = 0 ] && [ "$(keys o3.jsonl)" = "$(keys o1.jsonl)" ] \
  && ok "a picture of a graph with two levels of subgraphs re-runs anywhere, same keys" \
  || bad "picture re-run: $rc $(cat o3.err)"
[ "$(pixels "$(outpath o3.jsonl)")" = "$(pixels "$pic")" ] && ok "picture re-run: same pixels" || bad "pixels differ"

# Errors: a missing subgraph file, recursion, inline graph names and placement.
cat > miss.yaml <<'YAML'
flowrun: 1
nodes:
  a: {type: nowhere.yaml}
YAML
expect 2 "miss.yaml:3:.*nowhere.yaml" "$FLOWRUN" bundle miss.yaml -o x.yaml
[ ! -e x.yaml ] && ok "no output on error" || bad "x.yaml written"
cat > rec.yaml <<'YAML'
flowrun: 1
nodes:
  a: {type: rec.yaml}
YAML
expect 2 "recursion" "$FLOWRUN" bundle rec.yaml
cat > inl.yaml <<'YAML'
flowrun: 1
nodes:
  p: {type: TestPattern, inputs: {width: 16, height: 16}}
  g: {type: loop, inputs: {image: p}}
  save: {type: SaveImage, inputs: {images: g}}
graphs:
  loop:
    flowrun: 1
    inputs: {image: {type: IMAGE}}
    outputs: {out: again.out}
    nodes:
      again: {type: loop, inputs: {image: $image}}
YAML
expect 2 "inl.yaml:12:.*inline graph recursion: loop" "$FLOWRUN" validate inl.yaml
sed -i 's/^  loop:/  ImageBlur:/; s/type: loop/type: ImageBlur/' inl.yaml
expect 2 "inl.yaml:7:.*'ImageBlur' has the name of a node type" "$FLOWRUN" validate inl.yaml
cat > nest.yaml <<'YAML'
flowrun: 1
nodes:
  p: {type: TestPattern, inputs: {width: 16, height: 16}}
  g: {type: blk, inputs: {image: p}}
  save: {type: SaveImage, inputs: {images: g}}
graphs:
  blk:
    flowrun: 1
    inputs: {image: {type: IMAGE}}
    outputs: {out: b}
    nodes:
      b: {type: ImageBlur, inputs: {image: $image}}
    graphs: {}
YAML
expect 2 "nest.yaml:13:.*only the top of a file" "$FLOWRUN" validate nest.yaml
sed -i '$d' nest.yaml
"$FLOWRUN" validate nest.yaml > v.out 2>&1 && ok "an inline graph validates" || bad "inline: $(cat v.out)"

[ $fail = 0 ] && rm -rf "$T"
exit $fail
