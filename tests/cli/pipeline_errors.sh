#!/usr/bin/env bash
# Bad inputs to the pipeline nodes: each run must fail with a non-zero exit and a message naming what is
# wrong (no crash, also under ASan), and a later good run must still work.
set -u
: "${FLOWRUN:?}" "${FR_SRC:?}"
FX="${FR_FIXTURES:-}"
if [ ! -f "$FX/models/sd15-tiny.safetensors" ]; then echo "skipped: fixtures not found"; exit 77; fi
T="${FR_TEST_TMP:-/tmp}/pipeline_errors.$$"
rm -rf "$T" && mkdir -p "$T/models"
trap 'rm -rf "$T"' EXIT
fail=0
expect_fail() { # expect_fail "what" "pattern" flowrun-args...
  local what=$1 pat=$2; shift 2
  "$FLOWRUN" run "$@" --no-cache --output "$T" >"$T/out" 2>"$T/err"
  local rc=$?
  if [ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -q -- "$pat" "$T/err"; then echo "ok: $what"
  else echo "FAIL: $what (rc $rc)"; cat "$T/err"; fail=1; fi
}
M="--models $FX/models"

# 1. the real checkpoint is not on the model path: says which file and where it looked
expect_fail "missing checkpoint names the file and the places looked" "looked at" \
  "$FR_SRC/graphs/sd15-txt2img.yaml" --models "$T/models"

# 2. SDXL conditioning fed to an SD1.5 UNet
cat >"$T/mix.yaml" <<'Y'
flowrun: 1
nodes:
  sd: {type: CheckpointLoader, inputs: {ckpt_name: sd15-tiny.safetensors}}
  xl: {type: CheckpointLoader, inputs: {ckpt_name: sdxl-tiny.safetensors}}
  pos: {type: TextEncode, inputs: {clip: xl.clip, text: cat}}
  empty: {type: EmptyLatent, inputs: {width: 64, height: 64}}
  s: {type: Sampler, inputs: {model: sd.model, positive: pos, negative: pos, latent: empty, steps: 1}}
  save: {type: SaveLatent, inputs: {samples: s}}
Y
expect_fail "SDXL conditioning into an SD1.5 model" "context width" "$T/mix.yaml" $M

# 3. LoadLatent with a key the file does not have: lists the keys it has
cat >"$T/key.yaml" <<Y
flowrun: 1
nodes:
  l: {type: LoadLatent, inputs: {file: "$FX/golden/sd15_pipe_seeded.safetensors", key: nope}}
  save: {type: SaveLatent, inputs: {samples: l}}
Y
expect_fail "LoadLatent unknown key lists the tensors" "no tensor 'nope' (it has: " "$T/key.yaml"

# 4. noise of the wrong shape
cat >"$T/noise.yaml" <<Y
flowrun: 1
nodes:
  sd: {type: CheckpointLoader, inputs: {ckpt_name: sd15-tiny.safetensors}}
  pos: {type: TextEncode, inputs: {clip: sd.clip, text: cat}}
  empty: {type: EmptyLatent, inputs: {width: 64, height: 64}}
  n: {type: LoadLatent, inputs: {file: "$FX/golden/sd15_pipe_seeded.safetensors", key: noise}}
  s: {type: Sampler, inputs: {model: sd.model, positive: pos, negative: pos, latent: empty, noise: n, steps: 1}}
  save: {type: SaveLatent, inputs: {samples: s}}
Y
expect_fail "noise of another shape" "input 'noise': shape" "$T/noise.yaml" $M

# 5. a size that is not a multiple of 8
cat >"$T/size.yaml" <<'Y'
flowrun: 1
nodes:
  empty: {type: EmptyLatent, inputs: {width: 100, height: 64}}
  save: {type: SaveLatent, inputs: {samples: empty}}
Y
expect_fail "EmptyLatent size not a multiple of 8" "multiples of 8" "$T/size.yaml"

# 6. a truncated checkpoint: the loader names the file; nothing crashes
head -c 100000 "$FX/models/sd15-tiny.safetensors" >"$T/models/broken.safetensors"
cat >"$T/broken.yaml" <<'Y'
flowrun: 1
nodes:
  sd: {type: CheckpointLoader, inputs: {ckpt_name: broken.safetensors}}
  empty: {type: EmptyLatent, inputs: {width: 64, height: 64}}
  d: {type: VAEDecode, inputs: {samples: empty, vae: sd.vae}}
  save: {type: SaveImageData, inputs: {images: d}}
Y
expect_fail "truncated checkpoint" "broken.safetensors" "$T/broken.yaml" --models "$T/models"

# 7. SaveLatent refuses to write outside the output folder
cat >"$T/escape.yaml" <<'Y'
flowrun: 1
nodes:
  empty: {type: EmptyLatent, inputs: {width: 64, height: 64}}
  save: {type: SaveLatent, inputs: {samples: empty, filename: ../x.safetensors}}
Y
expect_fail "SaveLatent path outside the output folder" "inside the output folder" "$T/escape.yaml"

# 8. a refiner CLIP (no size conditioning for the base) into the SDXL base: clear error
cat >"$T/ref.yaml" <<'Y'
flowrun: 1
nodes:
  xl: {type: CheckpointLoader, inputs: {ckpt_name: sdxl-tiny.safetensors}}
  sd: {type: CheckpointLoader, inputs: {ckpt_name: sd15-tiny.safetensors}}
  pos: {type: TextEncode, inputs: {clip: sd.clip, text: cat}}
  empty: {type: EmptyLatent, inputs: {width: 64, height: 64}}
  s: {type: Sampler, inputs: {model: xl.model, positive: pos, negative: pos, latent: empty, steps: 1}}
  save: {type: SaveLatent, inputs: {samples: s}}
Y
expect_fail "SD1.5 conditioning into the SDXL base" "does not fit this model" "$T/ref.yaml" $M

# a checkpoint cut short (an interrupted download): named with the tensor and offsets before anything is
# mapped (no SIGBUS), from the file's size alone
mkdir -p "$T/cut"
sz=$(stat -c %s "$FX/models/sd15-tiny.safetensors")
head -c $((sz - 5000)) "$FX/models/sd15-tiny.safetensors" >"$T/cut/sd15-tiny.safetensors"
expect_fail "truncated checkpoint: tensor, offset and file size" \
  "sd15-tiny.safetensors: truncated: tensor .* ends at offset [0-9]*, file has $((sz - 5000)) bytes" \
  "$FR_SRC/graphs/tiny-demo.yaml" --models "$T/cut" --set steps=1

# a good run afterwards still works
if "$FLOWRUN" run "$FR_SRC/graphs/tiny-demo.yaml" $M --no-cache --output "$T" --set steps=2 -q 2>/dev/null; then
  echo "ok: a good run after the failures"; else echo "FAIL: good run"; fail=1; fi
exit $fail
