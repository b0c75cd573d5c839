#!/usr/bin/env bash
# graphs/sd15-inpaint.yaml and graphs/sd15-outpaint.yaml on the tiny SD1.5 model with their params: both run,
# the inpainted picture keeps the input's size, the outpainted one is the input padded (64x64 + 64 on the
# right = 128x64; the UNet needs latents in multiples of 8); changing only the inpaint mask's growth re-runs the mask and what follows, not
# the encoder or the prompts. The input is a PNG written here with a transparent (to be repainted) block.
set -u
: "${FLOWRUN:?}" "${FR_SRC:?}"
FX="${FR_FIXTURES:-}"
if [ ! -f "$FX/models/sd15-tiny.safetensors" ]; then echo "skipped: fixtures not found"; exit 77; fi
command -v python3 >/dev/null || { echo "skipped: python3 not found"; exit 77; }
T="${FR_TEST_TMP:-/tmp}/inpaint_graphs.$$"
rm -rf "$T" && mkdir -p "$T"
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
. "$FR_SRC/tests/cli_lib.sh"

python3 - "$T/in.png" <<'PY'
import struct, sys, zlib
w, h = 64, 64
rows = b""
for y in range(h):
    row = b"\0"
    for x in range(w):
        a = 0 if 16 <= x < 40 and 8 <= y < 32 else 255
        row += bytes(((x * 4) % 256, (y * 5) % 256, ((x ^ y) * 3) % 256, a))
    rows += row
chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
png += chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
PY

size() { od -An -tu1 -j16 -N8 "$1" 2>/dev/null |
  awk '{ print ($1 * 16777216 + $2 * 65536 + $3 * 256 + $4) "x" ($5 * 16777216 + $6 * 65536 + $7 * 256 + $8) }'; }
run() { # run NAME GRAPH [--set ...]
  local name=$1 graph=$2
  shift 2
  "$FLOWRUN" run "$FR_SRC/graphs/$graph" --models "$FX/models" --cache "$T/cache.sqlite" --output "$T/out" \
    --events jsonl --set ckpt=sd15-tiny.safetensors --set image="$T/in.png" --set steps=3 "$@" \
    >"$name.jsonl" 2>"$name.err"
  echo $? >"$name.rc"
}

run inpaint sd15-inpaint.yaml --set denoise=0.9
[ "$(cat inpaint.rc)" = 0 ] && ok "sd15-inpaint.yaml runs" || bad "sd15-inpaint.yaml: $(cat inpaint.err)"
[ "$(size out/sd15-inpaint_00001.png)" = 64x64 ] && ok "inpainted picture is 64x64" \
  || bad "inpainted picture: $(size out/sd15-inpaint_00001.png)"
run grow sd15-inpaint.yaml --set denoise=0.9 --set grow=2
if [ "$(started grow.jsonl)" = "ckpt decode grown masked sample save " ]; then
  ok "a new grow re-runs the mask and what follows only"
else
  bad "grow change started: $(started grow.jsonl)"
fi

run outpaint sd15-outpaint.yaml --set right=64 --set bottom=0 --set feathering=8
[ "$(cat outpaint.rc)" = 0 ] && ok "sd15-outpaint.yaml runs" || bad "sd15-outpaint.yaml: $(cat outpaint.err)"
[ "$(size out/sd15-outpaint_00001.png)" = 128x64 ] && ok "outpainted picture is 128x64" \
  || bad "outpainted picture: $(size out/sd15-outpaint_00001.png)"
exit $fail
