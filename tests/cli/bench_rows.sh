#!/usr/bin/env bash
# flowrun bench on the cpu with shrunk models (--ch 32: model channels 32 instead of 320; --size-div 8:
# every latent and image side / 8): every row runs through the same code as a full-size GPU run (synth key
# list -> in-memory safetensors -> the normal loader -> warm-up -> timed runs ended by fr_ctx_sync) and
# prints one line (or JSON object) with positive numbers. Bad options fail with exit 2 and a message;
# a device that is not there with exit 1. Takes a few seconds; never a timing assertion.
set -u
fail=0
check() { # check NAME CONDITION...
  local name=$1
  shift
  if "$@"; then echo "ok   $name"; else echo "FAIL $name"; fail=1; fi
}
expect() { # expect CODE NEEDLE -- command...: exit status and a piece of the output
  local code=$1 needle=$2
  shift 3
  local out rc
  out=$("$@" 2>&1)
  rc=$?
  if [ "$rc" != "$code" ] || ! grep -q -- "$needle" <<<"$out"; then
    echo "FAIL: $* -> exit $rc (want $code, '$needle'), output: $out"
    fail=1
  else
    echo "ok   $* -> exit $rc: $(grep -m1 -- "$needle" <<<"$out")"
  fi
}
SMALL=(--ch 32 --size-div 8 --threads 2)

# 1. every row, JSON Lines: one object per row, all ok, positive times, FLOPs and rates, finite outputs
out=$("$FLOWRUN" bench --only all "${SMALL[@]}" --runs 1 --json)
rc=$?
check "all rows: exit 0" [ "$rc" = 0 ]
if command -v python3 >/dev/null; then
  report=$(python3 -c '
import json, sys
want = ["sgemm", "clip-l", "unet-sd15", "unet-sdxl", "controlnet-sd15", "vae-512", "vae-1024", "txt2img"]
rows = [json.loads(l) for l in sys.stdin if l.strip()]
bad = []
if [r["row"] for r in rows] != want:
    bad.append("rows %s" % [r["row"] for r in rows])
for r in rows:
    ok = r.get("ok") and r["median_ms"] > 0 and r["min_ms"] > 0 and r["min_ms"] <= r["median_ms"] \
        and r["gflop"] > 0 and r["tflops"] > 0 and r["finite"] and r["runs"] == 1 \
        and r.get("peak_rss_mib", 0) > 0
    if r["row"] != "sgemm":
        ok = ok and not r["full_size"] and r["weights"] == "in-memory" and r["dtype"] == "F32"
    # cpu model rows: each timed run paired with a floor sgemm; the txt2img row and the floor itself have none
    if r["row"] in ("sgemm", "txt2img"):
        ok = ok and "floor_ratio" not in r
    else:
        ok = ok and r.get("floor_ratio", 0) > 0
    if r["row"] == "txt2img":
        ok = ok and r["warmup"] == 0 and "per sampler step" in r.get("note", "")
    elif r["warmup"] != 1:
        ok = False
    if not ok:
        bad.append(json.dumps(r))
print("\n".join(bad) if bad else "fine")
' <<<"$out")
  check "all rows: 8 JSON rows with positive numbers ($report)" [ "$report" = fine ]
else
  check "all rows: 8 JSON rows" [ "$(grep -c '"ok":true' <<<"$out")" = 8 ]
fi

# 2. the cpu's default rows as a table: sgemm, clip-l, unet-sd15, vae-512, each with positive numbers
out=$("$FLOWRUN" bench "${SMALL[@]}" --runs 1)
rc=$?
check "default rows: exit 0" [ "$rc" = 0 ]
rows=$(awk '$1 ~ /^(sgemm|clip-l|unet-sd15|unet-sdxl|controlnet-sd15|vae-512|vae-1024|txt2img)$/ {print $1}' \
  <<<"$out" | tr '\n' ' ')
check "default rows: sgemm clip-l unet-sd15 vae-512 (got: $rows)" [ "$rows" = "sgemm clip-l unet-sd15 vae-512 " ]
# the six columns after the dtype: load s, median ms, min ms, GFLOP, GFLOP/s, RSS MiB; model rows then "N.NNx",
# their time over the time of their FLOPs at the rate of a floor sgemm run just before each timed run
positive=$(awk '$1 ~ /^(sgemm|clip-l|unet-sd15|vae-512)$/ {
  last = NF; if ($NF ~ /x$/) { if ($NF + 0 <= 0) { print "no"; exit } last = NF - 1 }
  else if ($1 != "sgemm") { print "no"; exit }
  for (i = last - 5; i <= last; i++) if ($i + 0 <= 0 && i != last - 5) { print "no"; exit } } END { print "yes" }' \
  <<<"$out" | head -1)
check "default rows: positive numbers, a floor ratio on each model row" [ "$positive" = yes ]
check "default rows: says what peak means" grep -q "peak resident memory" <<<"$out"

# 3. weights from files (the tiny fixture models) instead of memory, when the fixtures are there
fx=${FR_FIXTURES:-}/models
if [ -f "$fx/sd15-tiny.safetensors" ] && [ -f "$fx/sdxl-tiny.safetensors" ] &&
  [ -f "$fx/controlnet-tiny.safetensors" ]; then
  out=$("$FLOWRUN" bench --ckpt "$fx/sd15-tiny.safetensors" --ckpt-sdxl "$fx/sdxl-tiny.safetensors" \
    --ckpt-controlnet "$fx/controlnet-tiny.safetensors" --size-div 8 --threads 2 --runs 1 --warmup 0 --json \
    --only clip-l,unet-sd15,unet-sdxl,controlnet-sd15,vae-512,vae-1024)
  rc=$?
  check "files: exit 0" [ "$rc" = 0 ]
  check "files: 6 rows read from the files" [ "$(grep -c '"ok":true.*' <<<"$out" | head -1)" = 6 ]
  check "files: no in-memory row" [ "$(grep -c '"weights":"in-memory"' <<<"$out")" = 0 ]
  # a file of the wrong architecture for its row: that row fails clearly, the others still run
  out=$("$FLOWRUN" bench --ckpt-sdxl "$fx/sd15-tiny.safetensors" --only clip-l,unet-sdxl "${SMALL[@]}" --runs 1 2>&1)
  rc=$?
  check "wrong file: exit 2" [ "$rc" = 2 ]
  check "wrong file: the row says so" grep -qE "^unet-sdxl .*FAILED: .*not an SDXL base UNet" <<<"$out"
  check "wrong file: the clip-l row still ran" grep -qE "^clip-l .*F32 +[0-9.]+ +[0-9.]+" <<<"$out"
else
  echo "skipped: fixture models not found (part 3)"
fi

# 4. bad options: exit 2 and a message naming the problem, before any work
expect 2 "unknown row 'gpu'" -- "$FLOWRUN" bench --only gpu
expect 2 "unknown row 'unet-sd14'" -- "$FLOWRUN" bench --only clip-l,unet-sd14
expect 2 "computes in f32 only" -- "$FLOWRUN" bench --dtype f16
expect 2 "computes in f32 only" -- "$FLOWRUN" bench --device cpu --dtype bf16 --only clip-l
expect 2 "expected f32, f16 or bf16" -- "$FLOWRUN" bench --dtype f8
expect 2 "device 'nonsense': unknown" -- "$FLOWRUN" bench --device nonsense
expect 2 "cpu-only row" -- "$FLOWRUN" bench --device cuda --only sgemm
expect 2 "multiple of 32" -- "$FLOWRUN" bench --ch 33
expect 2 "expected 1, 2, 4 or 8" -- "$FLOWRUN" bench --size-div 3
expect 2 "expected an integer >= 1" -- "$FLOWRUN" bench --runs 0
expect 2 "unknown option --bogus" -- "$FLOWRUN" bench --bogus 1
expect 2 "unknown option --arch" -- "$FLOWRUN" bench --arch sd15
expect 1 "no such file" -- "$FLOWRUN" bench --ckpt "${FR_TEST_TMP:-/tmp}/missing-$$.safetensors" --only vae

# 5. cuda: without a device (or a CUDA build) a clean exit 1 naming it; with one, a shrunk row runs
out=$("$FLOWRUN" bench --device cuda --only clip-l,unet-sd15 "${SMALL[@]}" --runs 1 2>&1)
rc=$?
if [ "$rc" = 0 ]; then
  check "cuda: rows ran on the device" grep -qE "^unet-sd15 .*F16" <<<"$out"
  check "cuda: device peak memory printed" grep -q "held before the runs" <<<"$out"
else
  check "cuda unavailable: exit 1 and says why ($(tail -1 <<<"$out"))" \
    bash -c '[ "$1" = 1 ] && grep -qE "device cuda: (no CUDA device|flowrun was built without CUDA)" <<<"$2"' _ "$rc" "$out"
fi
exit $fail
