#!/usr/bin/env bash
# Issue #7, session 11, third device call (H200): the stage-1 kernel's variants,
# probe_s11.py: the fast exact draw against the float64 draw, the plain steps' reveals on a side stream, and EDLM-AR
# with each draw. Results under $OUT/call3.
set -uo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
D=$OUT/call3
mkdir -p "$D"
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit,clocks.max.sm --format=csv,noheader; } | tee "$D/machine.txt"
timeout ${PROBE_S:-420} python3 benchmarks/gpu/probe_s11.py --out "$D" --sections K > "$D/probe.log" 2>&1 || echo "== probe: exit $?"
grep -E "^([0-9]|\{)" "$D/probe.log" | cut -c1-400
grep -E "Error|error" "$D/probe.log" | head -n 5
