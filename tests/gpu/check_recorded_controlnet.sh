#!/usr/bin/env bash
# The sampler's recorded replays with ControlNets whose set changes during the run (GPU only; called by
# run_gpu_checks.sh):
#   bash tests/gpu/check_recorded_controlnet.sh FLOWRUN FIXTURES WORKDIR [DTYPE]
# tests/pipe/controlnet.yaml (the tiny SD1.5 + ControlNet golden graph) with the positive prompt's
# ControlNet ending at 50% and the negative one's starting at 30%, so the active set changes twice over the
# 8 steps and the sampler drops its recording and records again. Run on cuda once eagerly
# (FLOWRUN_CUDA_GRAPHS=0) and once with recorded replays; the two latents must agree within 1e-5 of their
# largest value (the same kernels in the same order; only a different GEMM plan for a differently aligned
# buffer could change bits), and the replayed run must say that it replayed (the Sampler's info line).
set -u
FLOWRUN=$1 FX=$(cd "$2" 2>/dev/null && pwd) W=$3 DT=${4:-f32}
G="$FX/golden/controlnet_pipe.safetensors"
[ -f "$FX/models/controlnet-tiny.safetensors" ] && [ -f "$G" ] || {
  echo "skipped: fixtures not found ($FX)"
  exit 77
}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
rm -rf "$W" && mkdir -p "$W/eager" "$W/graphs"
sed -e 's|image: hint, strength: $strength}|image: hint, strength: $strength, @@}|' \
  -e '/^  pos:/,/^  neg:/s|@@|end_percent: 0.5|' -e 's|@@|start_percent: 0.3|' \
  "$SRC/tests/pipe/controlnet.yaml" > "$W/cn-phases.yaml"
grep -q 'end_percent: 0.5' "$W/cn-phases.yaml" && grep -q 'start_percent: 0.3' "$W/cn-phases.yaml" || {
  echo "FAIL: could not set the ControlNets' start and end in the graph"
  cat "$W/cn-phases.yaml"
  exit 1
}
args=(run "$W/cn-phases.yaml" --no-cache --device "${FR_CHECK_DEVICE:-cuda}" --dtype "$DT" --models "$FX/models" --set "golden=$G"
  --set steps=8)
FLOWRUN_CUDA_GRAPHS=0 "$FLOWRUN" "${args[@]}" --output "$W/eager" > "$W/eager.log" 2>&1 || {
  echo "FAIL: the eager run"
  cat "$W/eager.log"
  exit 1
}
"$FLOWRUN" "${args[@]}" --output "$W/graphs" > "$W/graphs.log" 2>&1 || {
  echo "FAIL: the run with recorded replays"
  cat "$W/graphs.log"
  exit 1
}
grep -h "replayed\|recording" "$W/graphs.log" || true
grep -q "replayed from [2-9] recordings" "$W/graphs.log" || {
  echo "FAIL: the sampler did not record again after the ControlNets changed (its log above)"
  exit 1
}
if cmp -s "$W/eager/latent.safetensors" "$W/graphs/latent.safetensors"; then
  echo "ok: the latents are identical"
  exit 0
fi
command -v python3 > /dev/null || {
  echo "FAIL: the latents differ (and no python3 to say by how much)"
  exit 1
}
python3 - "$W/eager/latent.safetensors" "$W/graphs/latent.safetensors" << 'EOF'
import json, struct, sys
def load(p):
    b = open(p, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8 + n])
    k = next(k for k in h if k != '__metadata__')
    s, e = h[k]['data_offsets']
    d = b[8 + n + s:8 + n + e]
    return struct.unpack('<%df' % (len(d) // 4), d)
a, b = load(sys.argv[1]), load(sys.argv[2])
m = max(abs(x) for x in a)
d = max(abs(x - y) for x, y in zip(a, b))
print('eager vs replayed latents: max|diff|/max = %.3g (bound 1e-5)' % (d / m))
sys.exit(0 if len(a) == len(b) and d <= 1e-5 * m else 1)
EOF
