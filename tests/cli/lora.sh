#!/usr/bin/env bash
# graphs/sd15-lora.yaml from the command line on the tiny SD1.5 model with a kohya LoRA written here into
# a ComfyUI-style models/loras/ folder (two modules: a UNet attention projection and a CLIP projection): it
# runs; a second process with only strength_model changed takes both TextEncode nodes from the cache and
# runs the Sampler (in a new process the UNet is read again; within one engine it is not:
# tests/unit/test_lora.c); strength_clip re-runs TextEncode; strength 0 makes the picture of the plain
# checkpoint; an unmatched module is a warning on stderr, and a LoRA file that is not safetensors is a node
# error naming it.
set -u
. "$(dirname "${BASH_SOURCE[0]}")/../cli_lib.sh" # ok, bad, started, require_fixtures
: "${FLOWRUN:?}" "${FR_SRC:?}" "${FR_FIXTURES:?}" "${FR_TEST_TMP:=/tmp}"
require_fixtures
T="$FR_TEST_TMP/cli_lora.$$"
rm -rf "$T" && mkdir -p "$T/models/loras" "$T/out" && cd "$T" || exit 1
trap 'cd / && rm -rf "$T"' EXIT

# A kohya LoRA (F32): lora_down [2, 32], lora_up [32, 2], alpha 1 per module; extra=1 adds a module that
# names nothing in SD1.5.
write_lora() { python3 - "$1" "$2" <<'PY'
import json, struct, sys, random
random.seed(5)
mods = ['lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q',
        'lora_te_text_model_encoder_layers_0_self_attn_q_proj']
if sys.argv[2] == '1':
    mods.append('lora_unet_no_such_layer')
tensors = {}
for m in mods:
    tensors[m + '.lora_down.weight'] = ([2, 32], [random.uniform(-.5, .5) for _ in range(64)])
    tensors[m + '.lora_up.weight'] = ([32, 2], [random.uniform(-.5, .5) for _ in range(64)])
    tensors[m + '.alpha'] = ([], [1.0])
header, data = {}, b''
for k, (shape, vals) in tensors.items():
    b = struct.pack('<%df' % len(vals), *vals)
    header[k] = {'dtype': 'F32', 'shape': shape, 'data_offsets': [len(data), len(data) + len(b)]}
    data += b
h = json.dumps(header).encode()
h += b' ' * (-len(h) % 8)
open(sys.argv[1], 'wb').write(struct.pack('<Q', len(h)) + h + data)
PY
}
write_lora models/loras/style.safetensors 0 || bad "writing the LoRA"
write_lora models/loras/extra.safetensors 1 || bad "writing the second LoRA"
M=(--models "$FR_FIXTURES/models" --models "$T/models" --cache "$T/cache.sqlite" --output out)
S=(--set ckpt=sd15-tiny.safetensors --set width=64 --set height=64 --set steps=2)
G="$FR_SRC/graphs/sd15-lora.yaml"

"$FLOWRUN" run "$G" "${M[@]}" "${S[@]}" --set lora=style.safetensors --events jsonl > a.jsonl 2> a.err \
  && ok "sd15-lora.yaml runs" || bad "first run: $(cat a.err)"
grep -q '"event":"info".*patching MODEL' a.jsonl && grep -q '"event":"info".*patching CLIP' a.jsonl \
  && ok "both components patched" || bad "no patching events: $(grep info a.jsonl)"

"$FLOWRUN" run "$G" "${M[@]}" "${S[@]}" --set lora=style.safetensors --set strength_model=0.5 --events jsonl \
  > b.jsonl 2> b.err || bad "strength_model run: $(cat b.err)"
[ "$(started b.jsonl)" = "ckpt decode lora sample save " ] && ok "strength_model: Sampler and what follows run" \
  || bad "strength_model re-run started: $(started b.jsonl)"
grep -q '"event":"node_cached","node":"positive"' b.jsonl && grep -q '"event":"node_cached","node":"negative"' b.jsonl \
  && ok "strength_model: TextEncode cached" || bad "TextEncode not cached"
grep -q 'loading CLIP' b.jsonl && bad "strength_model re-run loaded the text encoder" || ok "text encoder not loaded"

"$FLOWRUN" run "$G" "${M[@]}" "${S[@]}" --set lora=style.safetensors --set strength_model=0.5 \
  --set strength_clip=0.5 --events jsonl > c.jsonl 2> c.err || bad "strength_clip run: $(cat c.err)"
case "$(started c.jsonl)" in *negative*positive*sample*) ok "strength_clip: TextEncode runs again" ;;
  *) bad "strength_clip re-run started: $(started c.jsonl)" ;; esac

# strength 0 = the plain checkpoint's picture (graphs/sd15-txt2img.yaml with the same settings)
"$FLOWRUN" run "$G" "${M[@]}" "${S[@]}" --set lora=style.safetensors --set strength_model=0 --set strength_clip=0 \
  --set seed=4 -q 2> z.err || bad "strength 0: $(cat z.err)"
"$FLOWRUN" run "$FR_SRC/graphs/sd15-txt2img.yaml" "${M[@]}" "${S[@]}" --set seed=4 -q 2> p.err \
  || bad "plain: $(cat p.err)"
z=$(ls out/sd15-lora_*.png | tail -1); p=$(ls out/sd15_*.png | tail -1)
python3 - "$z" "$p" <<'PY' && ok "strength 0 = no LoRA (same pixels)" || bad "strength 0 differs from the plain checkpoint"
import sys, zlib, struct
def pixels(f):
    d = open(f, 'rb').read(); i = 8; idat = b''
    while i < len(d):
        n, = struct.unpack('>I', d[i:i+4]); t = d[i+4:i+8]
        if t == b'IDAT': idat += d[i+8:i+8+n]
        i += 12 + n
    return zlib.decompress(idat)
sys.exit(0 if pixels(sys.argv[1]) == pixels(sys.argv[2]) else 1)
PY

"$FLOWRUN" run "$G" "${M[@]}" "${S[@]}" --set lora=extra.safetensors > e.out 2> e.err \
  && grep -q "warning.*LoRA extra.safetensors: 1 of 2 modules matched nothing.*lora_unet_no_such_layer" e.err \
  && ok "unmatched module warned" || bad "unmatched: $(cat e.err)"

echo "not a safetensors file" > models/loras/broken.safetensors
"$FLOWRUN" run "$G" "${M[@]}" "${S[@]}" --set lora=broken.safetensors > f.out 2> f.err
rc=$?
[ $rc = 1 ] && grep -q "lora (LoraLoader).*broken.safetensors" f.err && ok "a broken LoRA file fails in LoraLoader naming it" \
  || bad "broken LoRA -> $rc: $(cat f.err)"
exit $fail
