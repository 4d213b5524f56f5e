#!/usr/bin/env bash
# Issue #7, session 4, last device call (H200): the full speed run with this session's code (two-level draw, one
# compiled graph per network, plain end-to-end runs beside the timed ones, EDLM-AR at 128 / 1024 steps as the budget
# allows), then the quick run of the shipped wikipedia_en models. Results in $OUT/final.tar.gz.
set -uo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
D=$OUT/final
mkdir -p "$D"
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; } | tee "$D/machine.txt"
timeout ${SPEED_S:-440} python3 benchmarks/speed.py --compile --compile-draws --no-diagnose --budget-s ${BUDGET_S:-400} \
  --out "$D/full" > "$D/full.log" 2>&1 || echo "== speed: exit $?"
grep -A14 "Issue #7 targets" "$D/full/speed.md" || tail -n 20 "$D/full.log"
timeout ${SHIPPED_S:-100} python3 benchmarks/speed.py --quick --shipped edlm/assets/wikipedia_en --compile --compile-draws \
  --out "$D/shipped" > "$D/shipped.log" 2>&1 || echo "== shipped: exit $?"
grep -E "^\| (MDLM|EDLM|DiT \| denoiser|AR \| AR fwd|NCE)" "$D/shipped/speed.md" | cut -c1-200
tar czf "$OUT/final.tar.gz" -C "$OUT" final
