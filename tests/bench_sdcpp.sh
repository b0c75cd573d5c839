#!/usr/bin/env bash
# Side-by-side benchmark: flowrun against stable-diffusion.cpp's sd-cli on the same checkpoint and settings
# (SD1.5 txt2img, euler, cfg 7, 512x512 by default), alternated, each ROUNDS times. Prints one row per run:
# peak RSS (from /usr/bin/time -v), the mean sampler step, the VAE decode and the wall time, then the medians
# and flowrun's ratios to stable-diffusion.cpp. A benchmark program: it prints numbers and asserts nothing.
#
#   tests/bench_sdcpp.sh FLOWRUN SD_CLI CKPT [ROUNDS]
#   env: STEPS (2), SIZE (512), THREADS (2), PROMPT
#
# What each engine's numbers include (read from their own plain logs):
#   step   the last sampler step's time, as each prints it (flowrun: its `step ... M/M T` line; sd-cli: its
#          progress bar's last `M/M - T s/it`): the steady state, after first-touch page faults and lazy
#          weight preparation, which both engines do on the first step or before it.
#   samp   all of sampling: flowrun's Sampler node (includes opening the UNet's weights); sd-cli's
#          "sampling completed, taking T" (its UNet load is logged before it).
#   vae    flowrun: the VAEDecode node's time (includes opening the VAE's weights, a view of the file);
#          sd-cli: "decode_first_stage completed, taking T" (its VAE load is logged before it).
#   wall   the whole process, from /usr/bin/time.
set -u
FLOWRUN=${1:?usage: $0 FLOWRUN SD_CLI CKPT [ROUNDS]}
SDCLI=${2:?usage: $0 FLOWRUN SD_CLI CKPT [ROUNDS]}
CKPT=${3:?usage: $0 FLOWRUN SD_CLI CKPT [ROUNDS]}
ROUNDS=${4:-2}
STEPS=${STEPS:-2} SIZE=${SIZE:-512} THREADS=${THREADS:-2}
PROMPT=${PROMPT:-a photo of a cat sitting on a windowsill, soft light}
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 2; }
CKPT=$(cd "$(dirname "$CKPT")" && pwd)/$(basename "$CKPT")
T=$(mktemp -d "${TMPDIR:-/tmp}/bench_sdcpp.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT

# seconds from "1.5 s" / "850 ms"
secs() { awk -v v="$1" -v u="$2" 'BEGIN { printf "%.3f", (u == "ms") ? v / 1000 : v }'; }
wall() { awk '/Elapsed \(wall clock\)/ { n = split($NF, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; printf "%.2f", s }' "$1"; }
rss_mib() { awk '/Maximum resident set size/ { printf "%.0f", $NF / 1024 }' "$1"; }

run_flowrun() { # $1 log
  /usr/bin/time -v "$FLOWRUN" "$SRC/graphs/sd15-txt2img.yaml" --no-cache --output "$T/fr" --threads "$THREADS" \
    --models "$(dirname "$CKPT")" --set ckpt="$(basename "$CKPT")" --set steps="$STEPS" --set cfg=7 \
    --set sampler=euler --set width="$SIZE" --set height="$SIZE" --set prompt="$PROMPT" \
    --set latent_file=latent.safetensors > /dev/null 2> "$1" || { echo "flowrun failed: $(tail -3 "$1")" >&2; return 1; }
  local step samp vae
  step=$(awk '$1 == "step" && $2 == "sample" { t = ($6 == "ms") ? $5 / 1000 : $5 } END { printf "%.3f", t }' "$1")
  samp=$(awk '$1 == "ran" && $3 == "(Sampler)" { printf "%s %s", $4, $5 }' "$1")
  vae=$(awk '$1 == "ran" && $3 == "(VAEDecode)" { printf "%s %s", $4, $5 }' "$1")
  echo "flowrun $(rss_mib "$1") $step $(secs $samp) $(secs $vae) $(wall "$1")"
}

run_sdcpp() { # $1 log
  /usr/bin/time -v "$SDCLI" -m "$CKPT" -p "$PROMPT" --steps "$STEPS" --cfg-scale 7 --sampling-method euler \
    -W "$SIZE" -H "$SIZE" -t "$THREADS" -s 0 -o "$T/sdcpp.png" > "$1" 2>&1 || { echo "sd-cli failed: $(tail -3 "$1")" >&2; return 1; }
  local step samp vae
  step=$(tr '\r' '\n' < "$1" | grep -Eo '[0-9]+/[0-9]+ - [0-9.]+(s/it|it/s)' | tail -1 |
    awk '{ v = $3; u = v; sub(/[a-z\/]+$/, "", v); printf "%.3f", (u ~ /it\/s$/) ? 1 / v : v }')
  samp=$(sed -n 's/.*sampling completed, taking \([0-9.]*\)s.*/\1/p' "$1" | tail -1)
  vae=$(sed -n 's/.*decode_first_stage completed, taking \([0-9.]*\)s.*/\1/p' "$1" | tail -1)
  echo "sd.cpp $(rss_mib "$1") $step $samp $vae $(wall "$1")"
}

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'); $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'); $(nproc) cpus;" \
  "load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|f16c|fma|avx512f|avx512_bf16|amx_bf16|amx_tile)$' | tr '\n' ' ')"
echo "# ${SIZE}x${SIZE}, euler, $STEPS steps, cfg 7, $THREADS threads, $(basename "$CKPT")"
printf '%-8s %5s %11s %8s %8s %8s %8s\n' engine round peakRSS_MiB step_s samp_s vae_s wall_s
for r in $(seq 1 "$ROUNDS"); do
  for e in flowrun sdcpp; do
    line=$(run_$e "$T/$e.$r.log") || exit 1
    set -- $line
    printf '%-8s %5s %11s %8s %8s %8s %8s\n' "$1" "$r" "$2" "$3" "$4" "$5" "$6"
    echo "$line" >> "$T/rows"
  done
done
echo "# medians (flowrun / sd.cpp)"
awk '{ k[$1] = k[$1] " " $2 "," $3 "," $4 "," $5 "," $6 }
  function med(list, col,   a, n, i, j, t, f) {
    n = split(list, a, " "); for (i = 1; i <= n; i++) { split(a[i], f, ","); a[i] = f[col] + 0 }
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  END { split("peakRSS_MiB step_s samp_s vae_s wall_s", name, " ")
    for (c = 1; c <= 5; c++) { f = med(k["flowrun"], c); s = med(k["sd.cpp"], c)
      printf "%-12s flowrun %9.2f  sd.cpp %9.2f  ratio %.2fx\n", name[c], f, s, s ? f / s : 0 } }' "$T/rows"
