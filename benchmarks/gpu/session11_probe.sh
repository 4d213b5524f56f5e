#!/usr/bin/env bash
# Issue #7, session 11 (H200): probe_s11.py's SECTIONS (default D,R,E) into $OUT/$NAME (default probe); TUNED_SMOKE=1
# first runs tuned_smoke.py (session 10's last, CPU-only commit checked on the GPU). The calls of session 11:
#   call 1: TUNED_SMOKE=1 NAME=call1 bash benchmarks/gpu/session11_probe.sh
#   call 2: NAME=call2 SECTIONS=B,D,E bash benchmarks/gpu/session11_probe.sh
#   calls 3-4: NAME=call3 SECTIONS=K bash benchmarks/gpu/session11_probe.sh
set -uo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
D=$OUT/${NAME:-probe}
mkdir -p "$D"
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit,clocks.max.sm --format=csv,noheader; } | tee "$D/machine.txt"
if [ "${TUNED_SMOKE:-0}" = 1 ]; then
  timeout 120 python3 benchmarks/gpu/tuned_smoke.py 2>&1 | tee "$D/tuned_smoke.log" | tail -n 8
fi
timeout ${PROBE_S:-420} python3 benchmarks/gpu/probe_s11.py --out "$D" --sections "${SECTIONS:-D,R,E}" > "$D/probe.log" 2>&1 \
  || echo "== probe: exit $?"
grep -E "^(flat|peaked|torch|[0-9]|\{)" "$D/probe.log" | cut -c1-400
grep -E "Error|error" "$D/probe.log" | head -n 5
