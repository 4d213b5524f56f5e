#!/usr/bin/env bash
# One command, end to end: train the tiny MDLM and AR models if absent, run the CPU sweep, and copy the
# commit-ready results to benchmarks/results/tiny_cpu/.   Usage (from the repo root):
#     bash benchmarks/run_tiny_cpu_sweep.sh [key=value sweep overrides ...]
# Re-running skips finished cells (an interrupted run resumes where it stopped). ~8 min on 2 CPU cores for the
# sweep, plus ~3 min to train the two models.
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

echo "== sweep -> $OUT   (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
start=$(date +%s)
edlm bench sweep benchmarks/configs/tiny_cpu.yaml --out "$OUT" "$@"
echo "== sweep wall time: $(( $(date +%s) - start )) s   (load average: $(cut -d' ' -f1-3 /proc/loadavg))"

mkdir -p "$RESULTS"
cp "$OUT"/results.jsonl "$OUT"/results.md "$OUT"/*.png "$RESULTS"/
echo "== results copied to $RESULTS (the run's meta.json, with wall time and load, stays in $OUT)"
