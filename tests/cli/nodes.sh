#!/usr/bin/env bash
# `flowrun nodes` lists the node types by category; `--json` prints the editor's schema (docs/schema.md).
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../cli_lib.sh" # ok, bad, expect, done_field, started
: "${FLOWRUN:?}"
txt=$("$FLOWRUN" nodes) || bad "nodes exit $?"
echo "$txt" | grep -q '^image:$' && echo "$txt" | grep -q '^  SaveImage (v[0-9]*) \[output\]' \
  && echo "$txt" | grep -Eq '^ +radius +INT += 1  \[0 \.\. 31\]' && ok "readable listing" || bad "listing: $txt"
json=$("$FLOWRUN" nodes --json) || bad "nodes --json exit $?"
case "$json" in
  '{"flowrun":"'*'"nodes":['*']}') ok "json object with nodes" ;;
  *) bad "json shape: ${json:0:200}" ;;
esac
echo "$json" | grep -q '{"name":"SaveImage","version":[0-9]*,"category":"image"' && ok "SaveImage in the schema" || bad "no SaveImage"
echo "$json" | grep -q '"output_node":true' && ok "output_node flag" || bad "no output_node"
echo "$json" | grep -q '{"name":"radius","type":"INT","socket":false,"required":false,"default":1,"min":0,"max":31' \
  && ok "typed default and range" || bad "radius input"
# the LoRA nodes (ComfyUI's names) with the widgets the editor's palette draws from this schema
echo "$json" | grep -q '{"name":"LoraLoader","version":[0-9]*,"category":"loaders"' \
  && echo "$json" | grep -q '{"name":"lora_name","type":"STRING","socket":false,"required":true,"model_file":true' \
  && echo "$json" | grep -q '{"name":"strength_clip","type":"FLOAT","socket":false,"required":false,"default":1.0,"min":-100,"max":100' \
  && echo "$json" | grep -q '{"name":"LoraLoaderModelOnly"' && ok "LoRA nodes and widgets" || bad "LoRA nodes in the schema"
if command -v python3 > /dev/null; then
  echo "$json" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert len(d["nodes"]) > 5' && ok "valid JSON" || bad "invalid JSON"
fi
"$FLOWRUN" nodes --bogus > /dev/null 2>&1; [ $? = 2 ] && ok "bad argument exits 2" || bad "bad argument"
# A pattern filters by name, category, description and ComfyUI's names for a type.
f=$("$FLOWRUN" nodes ksampler) && echo "$f" | grep -q '^  Sampler (v' && ! echo "$f" | grep -q '^  SaveImage' \
  && ok "nodes ksampler finds Sampler, only" || bad "nodes ksampler: $f"
f=$("$FLOWRUN" nodes BLUR --json) && echo "$f" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert [n["name"] for n in d["nodes"]] == ["ImageBlur"]' \
  && ok "nodes BLUR --json: the schema of ImageBlur alone" || bad "nodes BLUR --json: ${f:0:200}"
echo "$json" | python3 -c 'import json,sys; d=json.load(sys.stdin); s={n["name"]: n["comfy"] for n in d["nodes"]}; assert s["Sampler"] == ["KSampler", "KSamplerAdvanced"] and s["ImageBlur"] == ["ImageBlur"]' \
  && ok "schema carries ComfyUI's names" || bad "comfy aliases in the schema"
"$FLOWRUN" nodes no-such-node-anywhere > /dev/null 2>err.txt; [ $? = 1 ] && grep -q "no node type matches" err.txt \
  && ok "no match exits 1 with a message" || bad "no match"
rm -f err.txt
# Every command answers --help on stdout with exit 0.
cmds=$("$FLOWRUN" --help | sed -nE 's/^         ([a-z]+) .*/\1/p')
[ $(echo "$cmds" | wc -w) -ge 10 ] && ok "commands listed" || bad "command list: $cmds"
for c in $cmds; do
  h=$("$FLOWRUN" "$c" --help 2>/dev/null); rc=$?
  [ $rc = 0 ] && echo "$h" | grep -qi usage && ok "$c --help" || bad "$c --help -> $rc"
done
"$FLOWRUN" --version | grep -q "^flowrun [0-9]" && ok "--version" || bad "--version"
exit $fail
