#!/usr/bin/env bash
# Fills .fixtures-gpu/ in the repository with the subset of ../shared/fixtures that the GPU checks need
# (tests/gpu/run_gpu_checks.sh uses it when it exists), for a GPU machine that has the repository but
# not ../shared: the tiny single-file models, the UNet / ControlNet / text-encoder / VAE / pipeline goldens,
# the tokenizers and the VAE of the sd15-tiny diffusers folder, about 52 MB (50 MiB; the pipelines' graphs
# are in the repository: tests/pipe/, graphs/). The diffusers folders themselves (models/sd15-tiny/,
# models/controlnet-tiny/) are left out; the tests skip those parts with a message. The folder is in
# .gitignore, never committed (the fixtures are not to be copied into the repository's history): a copy of
# the working tree for the GPU machine must carry it.
#
#   bash tests/gpu/pack_fixtures.sh [SRC]     SRC: the fixtures folder (default ../shared/fixtures)
set -eu
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SRC=${1:-$ROOT/../shared/fixtures}
DST=$ROOT/.fixtures-gpu
[ -d "$SRC/models" ] && [ -d "$SRC/golden" ] || { echo "pack_fixtures: no fixtures at $SRC" >&2; exit 1; }

FILES="models/sd15-tiny.safetensors models/sdxl-tiny.safetensors models/sdxl-refiner-tiny.safetensors
  models/controlnet-tiny.safetensors"
for g in sd15_unet sdxl_unet refiner_unet controlnet sd15_text_encoder sdxl_text_encoder_1 sdxl_text_encoder_2 \
  sd15_vae sdxl_vae sd15_pipe_euler sd15_pipe_ddim sd15_pipe_seeded controlnet_pipe sdxl_pipe sdxl_refiner_pipe; do
  FILES="$FILES golden/$g.safetensors golden/$g.json"
done
DIRS="tokenizer tokenizer_2"

rm -rf "$DST"
mkdir -p "$DST/models" "$DST/golden"
for f in $FILES; do
  [ -f "$SRC/$f" ] || { echo "pack_fixtures: $SRC/$f missing" >&2; exit 1; }
  cp "$SRC/$f" "$DST/$f"
done
for d in $DIRS; do
  [ -d "$SRC/$d" ] || { echo "pack_fixtures: $SRC/$d missing" >&2; exit 1; }
  cp -R "$SRC/$d" "$DST/$d"
done
# test_vae_golden also loads the VAE of the sd15-tiny diffusers folder (model_index.json + vae/, 2.8 MB). It is
# kept apart, in diffusers-vae/models/sd15-tiny/: the other goldens take models/sd15-tiny/ to mean the whole
# folder (unet/, text_encoder/, 16 MB). run_gpu_checks.sh gives test_vae_golden a fixtures folder of links
# in which it is models/sd15-tiny/.
mkdir -p "$DST/diffusers-vae/models/sd15-tiny"
for f in model_index.json vae; do
  [ -e "$SRC/models/sd15-tiny/$f" ] || { echo "pack_fixtures: $SRC/models/sd15-tiny/$f missing" >&2; exit 1; }
  cp -R "$SRC/models/sd15-tiny/$f" "$DST/diffusers-vae/models/sd15-tiny/$f"
done
cp "$SRC/README.md" "$DST/README.md" 2>/dev/null || true
chmod -R u+w "$DST" # the shared copy is read-only; this one must be removable

echo "packed $(find "$DST" -type f | wc -l) files, $(du -sh "$DST" | cut -f1), into $DST"
