#!/usr/bin/env bash
# Issue #7, what session 3 left unmeasured, in one device call (~8 min on an H100; no data to carry):
#  1. probe J: DiTBlock.fuse_residual (gate folded into the attention-output weight, residual as the GEMM's C operand)
#     for the DiT and the NCE forward, compiled, B = 32 — speed and output difference;
#  2. the full speed.py with EDLM-AR also at 128 / 1024 steps (as many as the budget allows).
# Writes $OUT/next.tar.gz (probe.json, speed.json/md, logs). Switch fuse_residual on only if (1) shows a gain.
set -euo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT/next"
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader;
  python3 -c "import torch; print('torch', torch.__version__)"; } > "$OUT/next/machine.txt"
timeout 150 python3 benchmarks/gpu/probe_s3.py --sections J --out "$OUT/next/probe" > "$OUT/next/probe.log" 2>&1 \
  || echo "== probe: exit $?"
grep -E "^J_" "$OUT/next/probe.log" || tail -n 5 "$OUT/next/probe.log"
timeout 420 python3 benchmarks/speed.py --compile --compile-draws --no-diagnose --budget-s ${BUDGET_S:-380} \
  --out "$OUT/next/speed" > "$OUT/next/speed.log" 2>&1 || echo "== speed: exit $?"
grep -A9 "Issue #7 targets" "$OUT/next/speed/speed.md" || tail -n 5 "$OUT/next/speed.log"
grep -E "EDLM-AR .*T=(128|1024)" "$OUT/next/speed/speed.md" || true
tar czf "$OUT/next.tar.gz" -C "$OUT" next
