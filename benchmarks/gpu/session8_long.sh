#!/usr/bin/env bash
# Issue #7, session 8, device call 3 (H200): the end-to-end rows the full runs' budget left out (MDLM at 1024 steps,
# EDLM-AR k ∈ {2, 8}, windows [0.8, 1] and [0, 1], at 128 and 1024 steps), with the full run's compile settings
# (frozen, compiled draws). `speed.py --long-only` saves each row as it ends, so a run cut by the time limit keeps
# the rows it finished. Results under $OUT.
set -uo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
D=$OUT/long
mkdir -p "$D"
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit,clocks.max.sm --format=csv,noheader; } | tee "$D/machine.txt"
timeout ${SPEED_S:-560} python3 benchmarks/speed.py --long-only --compile --compile-draws --out "$D/run" > "$D/run.log" 2>&1 \
  || echo "== speed --long-only: exit $?"
grep -E "^\[|T=1024|T=128" "$D/run.log" | grep -v warm | tail -n 14
tar czf "$OUT/long.tar.gz" -C "$OUT" long
