#!/usr/bin/env bash
# Issue #7, session 10, last device call (H200): the quick speed run (B = 32 forwards, MDLM T = 128, EDLM-AR and
# EDLM-NCE k = 8 over [0, 1]) after the tuned GEMMs' host path was trimmed (ctypes arguments made once), with the
# card's clocks logged every 2 s. Results under $OUT/quick. SPEED_ARGS: more speed.py options (session 11: --sync-timers).
set -uo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
D=$OUT/quick
mkdir -p "$D"
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit,clocks.max.sm --format=csv,noheader; } | tee "$D/machine.txt"
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,utilization.gpu,clocks_throttle_reasons.active \
  --format=csv -lms 2000 > "$D/smi_during.csv" 2>&1 &
SMI=$!
timeout ${SPEED_S:-280} python3 benchmarks/speed.py --quick --compile --compile-draws --no-diagnose ${SPEED_ARGS:-} --out "$D" \
  > "$D/quick.log" 2>&1 || echo "== speed: exit $?"
kill $SMI 2>/dev/null
grep -A14 "Issue #7 targets" "$D/speed.md" || tail -n 30 "$D/quick.log"
