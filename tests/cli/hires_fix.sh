#!/usr/bin/env bash
# graphs/sd15-hires-fix.yaml on the tiny SD1.5 model, observed through --events jsonl: the first run runs
# every node; changing only the second pass's denoise re-runs only that Sampler and what follows it (and the
# loader, whose MODEL object is not cached: it opens nothing until used): the text encoders and the upscaled
# latent come from the cache, so the first pass is not even visited. Changing the upscale factor re-runs the
# upscale too, still not the first pass. The picture is the first pass's size times 1.5.
set -u
: "${FLOWRUN:?}" "${FR_SRC:?}"
FX="${FR_FIXTURES:-}"
if [ ! -f "$FX/models/sd15-tiny.safetensors" ]; then echo "skipped: fixtures not found"; exit 77; fi
T="${FR_TEST_TMP:-/tmp}/hires_fix.$$"
rm -rf "$T" && mkdir -p "$T"
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
. "$FR_SRC/tests/cli_lib.sh"

run() { # run NAME [--set ...]: events in NAME.jsonl, exit status in NAME.rc
  local name=$1
  shift
  "$FLOWRUN" run "$FR_SRC/graphs/sd15-hires-fix.yaml" --models "$FX/models" --cache "$T/cache.sqlite" \
    --output "$T/out" --events jsonl --set ckpt=sd15-tiny.safetensors --set width=128 --set height=128 \
    --set steps=3 --set hires_steps=4 "$@" >"$name.jsonl" 2>"$name.err"
  echo $? >"$name.rc"
}

run first
if [ "$(cat first.rc)" = 0 ]; then ok "first run succeeds"; else bad "first run: $(cat first.err)"; fi
want="ckpt decode empty first_pass negative positive save second_pass upscale "
if [ "$(started first.jsonl)" = "$want" ]; then ok "first run runs every node"; else bad "first run started: $(started first.jsonl)"; fi
# the PNG's IHDR width and height: big-endian 32-bit words at bytes 16 and 20
size=$(od -An -tu1 -j16 -N8 "$T/out/sd15-hires_00001.png" 2>/dev/null |
  awk '{ print ($1 * 16777216 + $2 * 65536 + $3 * 256 + $4), ($5 * 16777216 + $6 * 65536 + $7 * 256 + $8) }')
if [ "$size" = "192 192" ]; then ok "the picture is 128 x 1.5 = 192 pixels a side"; else bad "picture size: '$size'"; fi

run denoise --set hires_denoise=0.4
if [ "$(cat denoise.rc)" = 0 ]; then ok "second-pass denoise change succeeds"; else bad "denoise run: $(cat denoise.err)"; fi
if [ "$(started denoise.jsonl)" = "ckpt decode save second_pass " ]; then
  ok "hires_denoise change re-runs only the second pass, the decode and the save"
else
  bad "hires_denoise change started: $(started denoise.jsonl)"
fi
if grep -q '"event":"node_cached","node":"upscale"' denoise.jsonl && ! grep -q '"node":"first_pass"' denoise.jsonl; then
  ok "the upscaled latent comes from the cache, so the first pass is not even looked up"
else
  bad "upscale not reported cached, or the first pass was visited"
fi

run factor --set upscale=2.0
if [ "$(started factor.jsonl)" = "ckpt decode save second_pass upscale " ]; then
  ok "upscale change re-runs the upscale and the second pass, not the first pass"
else
  bad "upscale change started: $(started factor.jsonl)"
fi

run bad --set upscale_method=lanczos
if [ "$(cat bad.rc)" != 0 ] && grep -q "upscale_method" bad.err; then ok "an unknown upscale_method is refused, naming the input"; else bad "bad method: rc $(cat bad.rc): $(cat bad.err)"; fi
exit $fail
