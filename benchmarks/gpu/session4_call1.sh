#!/usr/bin/env bash
# Issue #7, session 4, device call 1 (H200): the probe (two-level draw; fusion switches of the DiT / NCE forward,
# per call and back to back; kernel profiles), then the quick speed run with the session-3 draw (--flat-draw) as
# this card's baseline. No data to carry. Everything lands in $OUT/s4.tar.gz; key lines are printed.
set -uo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
D=$OUT/s4
mkdir -p "$D"
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader;
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } | tee "$D/machine.txt"
timeout ${PROBE_S:-330} python3 benchmarks/gpu/probe_s4.py --out "$D/probe" > "$D/probe.log" 2>&1 || echo "== probe: exit $?"
grep -E "^(is_k|plain_T|nce |dit )" "$D/probe.log" | cut -c1-900
timeout ${SPEED_S:-230} python3 benchmarks/speed.py --quick --compile --compile-draws --flat-draw \
  --out "$D/quick_flat" > "$D/quick_flat.log" 2>&1 || echo "== speed: exit $?"
grep -A12 "Issue #7 targets" "$D/quick_flat/speed.md" || tail -n 20 "$D/quick_flat.log"
tar czf "$OUT/s4.tar.gz" -C "$OUT" s4
