#!/usr/bin/env bash
# One command, end to end: train the tiny MDLM and AR models if absent, run the CPU sweep, and copy the
# commit-ready results to benchmarks/results/tiny_cpu/.   Usage (from the repo root):
#     bash benchmarks/run_tiny_cpu_sweep.sh [key=value sweep overrides ...]
# Re-running skips finished cells (an interrupted run resumes where it stopped).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${EDLM_BENCH_OUT:-runs/bench/tiny_cpu}
RESULTS=benchmarks/results/tiny_cpu

for kind in mdlm ar; do
  if [ ! -f "runs/tiny-$kind/model/model.safetensors" ]; then
    echo "== training the tiny $kind model (runs/tiny-$kind)"
    edlm train "$kind" --preset tiny --run-dir "runs/tiny-$kind"
  fi
done

# run_log.txt: one "start" and one "end" line per invocation (a killed run leaves only its "start")
mkdir -p "$RESULTS"
RUNLOG="$RESULTS/run_log.txt"
echo "$(date -u +%FT%TZ) start  load=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)  edlm bench sweep benchmarks/configs/tiny_cpu.yaml --out $OUT $*" >> "$RUNLOG"
echo "== sweep -> $OUT   (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
start=$(date +%s)
edlm bench sweep benchmarks/configs/tiny_cpu.yaml --out "$OUT" "$@"
wall=$(( $(date +%s) - start ))
echo "$(date -u +%FT%TZ) end    load=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)  wall=${wall}s" >> "$RUNLOG"
echo "== sweep wall time: ${wall} s"

cp "$OUT"/results.jsonl "$OUT"/results.md "$OUT"/meta.json "$OUT"/config.yaml "$OUT"/*.png "$RESULTS"/
echo "== results copied to $RESULTS"
