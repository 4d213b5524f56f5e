#!/usr/bin/env bash
# Issue #7, session 4, device call 2 (H200): the loop profile of an EDLM-NCE run (probe section L), then the quick
# speed run with the two-level draw and the plain (untimed) end-to-end runs. Results in $OUT/s4b.tar.gz.
set -uo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
D=$OUT/s4b
mkdir -p "$D"
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; } | tee "$D/machine.txt"
timeout ${PROBE_S:-200} python3 benchmarks/gpu/probe_s4.py --sections L --out "$D/probe" > "$D/probe.log" 2>&1 || echo "== probe: exit $?"
grep -E "^L_loop" "$D/probe.log" | cut -c1-3000
timeout ${SPEED_S:-300} python3 benchmarks/speed.py --quick --compile --compile-draws \
  --out "$D/quick" > "$D/quick.log" 2>&1 || echo "== speed: exit $?"
grep -A12 "Issue #7 targets" "$D/quick/speed.md" || tail -n 20 "$D/quick.log"
grep -E "^\| (MDLM|EDLM)" "$D/quick/speed.md"
tar czf "$OUT/s4b.tar.gz" -C "$OUT" s4b
