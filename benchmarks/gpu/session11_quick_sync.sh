#!/usr/bin/env bash
# Issue #7, session 11 (H200): the quick speed run (B = 32 forwards, MDLM T = 128, EDLM-AR and
# EDLM-NCE k = 8 over [0, 1]) timed the way sessions 1-10 timed it (--sync-timers), with the
# card's clocks logged every 2 s. Results under $OUT/quick.
set -uo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
D=$OUT/quick
mkdir -p "$D"
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit,clocks.max.sm --format=csv,noheader; } | tee "$D/machine.txt"
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,utilization.gpu,clocks_throttle_reasons.active \
  --format=csv -lms 2000 > "$D/smi_during.csv" 2>&1 &
SMI=$!
timeout ${SPEED_S:-280} python3 benchmarks/speed.py --quick --compile --compile-draws --no-diagnose --sync-timers --out "$D" \
  > "$D/quick.log" 2>&1 || echo "== speed: exit $?"
kill $SMI 2>/dev/null
grep -A14 "Issue #7 targets" "$D/speed.md" || tail -n 30 "$D/quick.log"
