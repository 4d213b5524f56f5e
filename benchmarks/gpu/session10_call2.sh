#!/usr/bin/env bash
# Issue #7, session 10, device call 2 (H200): the blocks' GEMMs through edlm.models.cublaslt's tuner
# (DiTBlock.tuned_gemms) against torch's own GEMM calls, in one process per pair (probe_s7.py): the NCE at B = 32 and
# 64 as sampling runs it (frozen, CUDA graphs), with a kernel profile at B = 32, then B = 32 in the opposite order;
# DiT and AR at B = 32 (frozen).
set -uo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv,noheader; } | tee "$OUT/machine.txt"
timeout 200 python3 benchmarks/gpu/probe_s7.py --out "$OUT/N" --runs nce:32,nce:64 \
  --variants frozen_graphs_untuned,frozen_graphs > "$OUT/N.log" 2>&1 || echo "== probe_s7 N: exit $?"
python3 benchmarks/gpu/probe_summary.py "$OUT/N/probe.json"
timeout 90 python3 benchmarks/gpu/probe_s7.py --out "$OUT/R" --runs nce:32 --variants frozen_graphs,frozen_graphs_untuned \
  > "$OUT/R.log" 2>&1 || echo "== probe_s7 R: exit $?"
python3 benchmarks/gpu/probe_summary.py "$OUT/R/probe.json"
timeout 200 python3 benchmarks/gpu/probe_s7.py --out "$OUT/D" --runs dit:32,ar:32 --variants frozen_untuned,frozen \
  > "$OUT/D.log" 2>&1 || echo "== probe_s7 D: exit $?"
python3 benchmarks/gpu/probe_summary.py "$OUT/D/probe.json"
grep -E "Traceback|Error|Warning" "$OUT/N.log" "$OUT/R.log" "$OUT/D.log" | head -8
tar czf "$OUT/logs.tgz" -C "$OUT" N.log R.log D.log && rm -f "$OUT/N.log" "$OUT/R.log" "$OUT/D.log"
