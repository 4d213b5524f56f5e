#!/usr/bin/env bash
# Issue #7, session 10, device call 4 (H200): multi-kernel's first-call pick with the persistent versions preferred
# (compiling.PERSISTENT_PREFERENCE = 1.15, probe_s7 variant frozen_graphs) against inductor's own rule
# (frozen_graphs_fair), NCE B = 32 (frozen, CUDA graphs, tuned GEMMs, profiled), one process per order; each
# variant's multi-kernel timings are printed.
set -uo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv,noheader; } | tee "$OUT/machine.txt"
timeout 120 python3 benchmarks/gpu/probe_s7.py --out "$OUT/N" --runs nce:32 \
  --variants frozen_graphs_fair,frozen_graphs > "$OUT/N.log" 2>&1 || echo "== probe_s7 N: exit $?"
python3 benchmarks/gpu/probe_summary.py "$OUT/N/probe.json"
timeout 120 python3 benchmarks/gpu/probe_s7.py --out "$OUT/R" --runs nce:32 \
  --variants frozen_graphs,frozen_graphs_fair > "$OUT/R.log" 2>&1 || echo "== probe_s7 R: exit $?"
python3 benchmarks/gpu/probe_summary.py "$OUT/R/probe.json"
grep -E "Traceback|Error" "$OUT/N.log" "$OUT/R.log" | head -8
tar czf "$OUT/logs.tgz" -C "$OUT" N.log R.log && rm -f "$OUT/N.log" "$OUT/R.log"
