#!/usr/bin/env bash
# Issue #7, session 11 (H200): the quick speed run twice, each with one of this session's changes switched off:
# --exact64-draws (IS proposals by the float64 two-level draw of sessions 4-10) and --sync-reveals (the plain steps'
# reveals on the sampling stream). Compare with this session's full run (speed.md). Results under $OUT/q_*.
set -uo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
date -u +%FT%TZ
for variant in exact64-draws sync-reveals; do
  D=$OUT/q_${variant}
  mkdir -p "$D"
  timeout ${SPEED_S:-200} python3 benchmarks/speed.py --quick --compile --compile-draws --no-diagnose --$variant \
    --out "$D" > "$D/quick.log" 2>&1 || echo "== speed --$variant: exit $?"
  echo "== --$variant"
  grep -A12 "Issue #7 targets" "$D/speed.md" | grep -E "MDLM|EDLM" || tail -n 20 "$D/quick.log"
  grep -E "^\| (MDLM T=128|EDLM-AR k=8 \[0,1\] T=32 ebs|EDLM-NCE)" "$D/speed.md" | cut -d'|' -f2-4,10-13
done
