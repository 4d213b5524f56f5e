#!/usr/bin/env bash
# Issue #7, session 10, device call 3 (H200): call 2's profiles showed the post-attention LayerNorm as multi-kernel's
# looped version (1.13-1.20 ms per NCE call) in some processes and persistent (0.69 ms) in others. Here multi-kernel's
# pick is forced to the persistent versions (triton.multi_kernel = 3; probe_s7 variants *_persistent) against its
# first-call timing (= 1), in one process per pair and in both orders: NCE B = 32 (frozen, CUDA graphs, profiled) and
# B = 64, then DiT and AR at B = 32 (frozen). Both with the tuned GEMMs (DiTBlock.tuned_gemms, call 2).
set -uo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv,noheader; } | tee "$OUT/machine.txt"
timeout 200 python3 benchmarks/gpu/probe_s7.py --out "$OUT/N" --runs nce:32,nce:64 \
  --variants frozen_graphs,frozen_graphs_persistent > "$OUT/N.log" 2>&1 || echo "== probe_s7 N: exit $?"
python3 benchmarks/gpu/probe_summary.py "$OUT/N/probe.json"
timeout 100 python3 benchmarks/gpu/probe_s7.py --out "$OUT/R" --runs nce:32 \
  --variants frozen_graphs_persistent,frozen_graphs > "$OUT/R.log" 2>&1 || echo "== probe_s7 R: exit $?"
python3 benchmarks/gpu/probe_summary.py "$OUT/R/probe.json"
timeout 200 python3 benchmarks/gpu/probe_s7.py --out "$OUT/D" --runs dit:32,ar:32 --variants frozen,frozen_persistent \
  > "$OUT/D.log" 2>&1 || echo "== probe_s7 D: exit $?"
python3 benchmarks/gpu/probe_summary.py "$OUT/D/probe.json"
grep -E "Traceback|Error" "$OUT/N.log" "$OUT/R.log" "$OUT/D.log" | head -8
tar czf "$OUT/logs.tgz" -C "$OUT" N.log R.log D.log && rm -f "$OUT/N.log" "$OUT/R.log" "$OUT/D.log"
