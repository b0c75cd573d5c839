#!/usr/bin/env bash
# flowrun import comfy / export comfy: a ComfyUI API-format workflow and a PNG that carries one (a
# "prompt" tEXt chunk, as ComfyUI writes it) convert into graphs that validate and run on the tiny
# models; the picture equals the one of flowrun's own equivalent graph (graphs/tiny-demo.yaml exported to
# ComfyUI's format and imported back); refusals (a PNG without the chunk, unknown node types, the UI
# format) exit 2 with the message; ComfyUI's CLIPTextEncode on SDXL conditions on the image's size.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../cli_lib.sh" # ok, bad, expect, require_fixtures
: "${FLOWRUN:?}" "${FR_SRC:?}" "${FR_FIXTURES:?}" "${FR_TEST_TMP:=/tmp}"
require_fixtures
T="$FR_TEST_TMP/cli_comfy.$$"
rm -rf "$T" && mkdir -p "$T/out" && cd "$T" || exit 1
M=(--models "$FR_FIXTURES/models" --no-cache --output out)

# The pixel data of a PNG (its IDAT chunks, decompressed): two pictures from the same pixels compare equal
# whatever text chunks they carry.
pixels() { python3 - "$1" <<'PY'
import sys, zlib, struct, hashlib
d = open(sys.argv[1], 'rb').read(); i = 8; idat = b''
while i < len(d):
    n, = struct.unpack('>I', d[i:i+4]); t = d[i+4:i+8]
    if t == b'IDAT': idat += d[i+8:i+8+n]
    i += 12 + n
print(hashlib.sha256(zlib.decompress(idat)).hexdigest())
PY
}

cat > api.json <<'JSON'
{
  "3": {"inputs": {"seed": 1, "steps": 8, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
        "denoise": 1, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
        "latent_image": ["5", 0]}, "class_type": "KSampler", "_meta": {"title": "KSampler"}},
  "4": {"inputs": {"ckpt_name": "sd15-tiny.safetensors"}, "class_type": "CheckpointLoaderSimple"},
  "5": {"inputs": {"width": 128, "height": 128, "batch_size": 1}, "class_type": "EmptyLatentImage"},
  "6": {"inputs": {"text": "a photo of a cat", "clip": ["4", 1]}, "class_type": "CLIPTextEncode"},
  "7": {"inputs": {"text": "blurry", "clip": ["4", 1]}, "class_type": "CLIPTextEncode"},
  "8": {"inputs": {"samples": ["3", 0], "vae": ["4", 2]}, "class_type": "VAEDecode"},
  "9": {"inputs": {"filename_prefix": "comfy", "images": ["8", 0]}, "class_type": "SaveImage"}
}
JSON
"$FLOWRUN" import comfy api.json -o api.yaml 2>imp.err && ok "import of API JSON" || bad "import: $(cat imp.err)"
"$FLOWRUN" validate api.yaml >/dev/null 2>&1 && ok "imported graph validates" || bad "validate api.yaml"
"$FLOWRUN" api.yaml "${M[@]}" --quiet 2>run.err && [ -f out/comfy_00001.png ] && ok "imported graph runs" \
  || bad "run imported graph: $(cat run.err)"

# The same workflow from flowrun's side: tiny-demo exported to ComfyUI's format, imported back and run,
# makes the picture tiny-demo itself makes (same seed, steps, cfg, prompts, size, sampler).
"$FLOWRUN" "$FR_SRC/graphs/tiny-demo.yaml" "${M[@]}" --quiet 2>demo.err || bad "tiny-demo: $(cat demo.err)"
"$FLOWRUN" export comfy "$FR_SRC/graphs/tiny-demo.yaml" -o demo.json 2>exp.err && ok "export of tiny-demo" \
  || bad "export: $(cat exp.err)"
grep -q 'CLIPTextEncode' exp.err && ok "export notes the SDXL size conditioning" || bad "no note: $(cat exp.err)"
python3 -c "
import json,sys
w=json.load(open('demo.json'))
types=sorted(n['class_type'] for n in w.values())
want=sorted(['CheckpointLoaderSimple','CLIPTextEncode','CLIPTextEncode','EmptyLatentImage','KSampler','VAEDecode','SaveImage'])
sys.exit(0 if types==want else 1)" && ok "exported class types" || bad "exported: $(cat demo.json)"
"$FLOWRUN" import comfy demo.json -o back.yaml 2>back.err || bad "re-import: $(cat back.err)"
"$FLOWRUN" back.yaml "${M[@]}" --quiet 2>back.err || bad "run re-imported: $(cat back.err)"
a=$(pixels out/tiny-demo_00001.png); b=$(pixels out/tiny-demo_00002.png)
[ -n "$a" ] && [ "$a" = "$b" ] && ok "round trip through ComfyUI's format: same picture" || bad "pictures differ: $a $b"
[ "$(pixels out/comfy_00001.png)" = "$a" ] && ok "the hand-written ComfyUI workflow makes tiny-demo's picture" \
  || bad "ComfyUI workflow's picture differs from tiny-demo's"

# A PNG as ComfyUI saves it: the API workflow in a "prompt" tEXt chunk (and the UI one in "workflow").
python3 - api.json <<'PY'
import sys, zlib, struct
def chunk(t, d): return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
raw = b''.join(b'\x00' + bytes([200, 100, 50]) * 4 for _ in range(4))
png = b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 4, 4, 8, 2, 0, 0, 0))
png += chunk(b'tEXt', b'prompt\x00' + open(sys.argv[1], 'rb').read())
png += chunk(b'tEXt', b'workflow\x00{"nodes": [], "links": []}')
png += chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b'')
open('ComfyUI_00001_.png', 'wb').write(png)
PY
"$FLOWRUN" import comfy ComfyUI_00001_.png -o png.yaml 2>png.err && cmp -s <(tail -n +2 png.yaml) <(tail -n +2 api.yaml) \
  && ok "a ComfyUI PNG imports as its prompt chunk" || bad "PNG import: $(cat png.err)"
"$FLOWRUN" png.yaml "${M[@]}" --quiet 2>pr.err && ok "the PNG's workflow runs" || bad "PNG run: $(cat pr.err)"

# Refusals, each naming the problem.
"$FLOWRUN" "$FR_SRC/graphs/image-demo.yaml" --output out --no-cache --quiet 2>/dev/null
flowpng=$(ls out/flowrun-demo_*.png | head -1)
expect 2 "holds no ComfyUI workflow" "$FLOWRUN" import comfy "$flowpng"
cat > unknown.json <<'JSON'
{"1": {"class_type": "IPAdapterApply", "inputs": {}}, "2": {"class_type": "KSampler", "inputs": {}},
 "3": {"class_type": "UltimateSDUpscale", "inputs": {}}}
JSON
expect 2 "2 node types without a flowrun counterpart: IPAdapterApply, UltimateSDUpscale" \
  "$FLOWRUN" import comfy unknown.json
echo '{"last_node_id": 9, "nodes": [], "links": []}' > ui.json
expect 2 "UI workflow format" "$FLOWRUN" import comfy ui.json
echo '{"1": {"class_type": ' > broken.json
expect 2 "broken.json: not JSON" "$FLOWRUN" import comfy broken.json
expect 2 "missing.json" "$FLOWRUN" import comfy missing.json
expect 2 "unknown format 'a1111'" "$FLOWRUN" import a1111 api.json
expect 2 "node pattern \\(TestPattern\\) has no ComfyUI counterpart" "$FLOWRUN" export comfy "$FR_SRC/graphs/image-demo.yaml"
"$FLOWRUN" import --help >/dev/null && "$FLOWRUN" export --help >/dev/null && ok "--help exits 0" || bad "--help"

# ComfyUI's CLIPTextEncode on SDXL: size conditioning from the image (TextEncode width/height/target 0)
# equals writing the image's size (128: a 16x16 latent), and differs from 1024.
sdxl() { # $1: width/height/target value
  cat > sdxl.yaml <<YAML
flowrun: 1
nodes:
  c: {type: CheckpointLoader, inputs: {ckpt_name: sdxl-tiny.safetensors}}
  p: {type: TextEncode, inputs: {clip: c.clip, text: a cat, width: $1, height: $1, target_width: $1, target_height: $1}}
  n: {type: TextEncode, inputs: {clip: c.clip, text: blurry, width: $1, height: $1, target_width: $1, target_height: $1}}
  e: {type: EmptyLatent, inputs: {width: 128, height: 128}}
  s: {type: Sampler, inputs: {model: c.model, positive: p, negative: n, latent: e, steps: 2, cfg: 5, seed: 3}}
  l: {type: SaveLatent, inputs: {samples: s, filename: sdxl-$1.safetensors}}
YAML
  "$FLOWRUN" sdxl.yaml "${M[@]}" --quiet 2>sdxl.err || bad "sdxl $1: $(cat sdxl.err)"
}
sdxl 0; sdxl 128; sdxl 1024
cmp -s out/sdxl-0.safetensors out/sdxl-128.safetensors && ok "SDXL size 0 = the image's size" \
  || bad "SDXL size 0 differs from 128"
cmp -s out/sdxl-0.safetensors out/sdxl-1024.safetensors && bad "SDXL size conditioning has no effect" \
  || ok "SDXL size conditioning matters (1024 differs)"

# ComfyUI's LoraLoader / LoraLoaderModelOnly map one to one, both ways (graphs/sd15-lora.yaml)
"$FLOWRUN" export comfy "$FR_SRC/graphs/sd15-lora.yaml" -o lora.json 2>lexp.err || bad "export sd15-lora: $(cat lexp.err)"
python3 - <<'PY' && ok "LoraLoader exported with ComfyUI's inputs" || bad "LoraLoader export: $(cat lora.json)"
import json, sys
w = json.load(open('lora.json'))
l = [n for n in w.values() if n['class_type'] == 'LoraLoader']
ins = l[0]['inputs'] if l else {}
sys.exit(0 if len(l) == 1 and set(ins) == {'model', 'clip', 'lora_name', 'strength_model', 'strength_clip'} else 1)
PY
cat > lora_only.json <<'JSON'
{"1": {"inputs": {"ckpt_name": "sd15-tiny.safetensors"}, "class_type": "CheckpointLoaderSimple"},
 "2": {"inputs": {"model": ["1", 0], "lora_name": "x.safetensors", "strength_model": 0.5},
       "class_type": "LoraLoaderModelOnly"},
 "3": {"inputs": {"seed": 1, "steps": 2, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
       "denoise": 1, "model": ["2", 0], "positive": ["4", 0], "negative": ["4", 0],
       "latent_image": ["5", 0]}, "class_type": "KSampler"},
 "4": {"inputs": {"text": "a cat", "clip": ["1", 1]}, "class_type": "CLIPTextEncode"},
 "5": {"inputs": {"width": 64, "height": 64, "batch_size": 1}, "class_type": "EmptyLatentImage"},
 "6": {"inputs": {"samples": ["3", 0], "vae": ["1", 2]}, "class_type": "VAEDecode"},
 "7": {"inputs": {"filename_prefix": "l", "images": ["6", 0]}, "class_type": "SaveImage"}}
JSON
"$FLOWRUN" import comfy lora_only.json -o lora_only.yaml 2>limp.err && grep -q "type: LoraLoaderModelOnly" lora_only.yaml \
  && grep -q "strength_model: 0.5" lora_only.yaml && "$FLOWRUN" validate lora_only.yaml > /dev/null 2>&1 \
  && ok "LoraLoaderModelOnly imported" || bad "LoraLoaderModelOnly import: $(cat limp.err lora_only.yaml)"

cd / && rm -rf "$T"
exit $fail
