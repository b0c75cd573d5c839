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
exit $fail
