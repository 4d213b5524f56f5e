#!/usr/bin/env bash
# Issue #7, the last device call of sessions 5, 6 and 7 (H200): the full speed run with the code of the day (session 5: the rotary table computed
# once per model; session 6: inductor multi-kernel in compile_networks; session 7: frozen compile), with the card's clocks, power, temperature and throttle reasons logged every 2 s during it
# (the probe calls of this session ran 10-20 % slower than session 4's on the same kind of card). Results under $OUT.
set -uo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
D=$OUT/final
mkdir -p "$D"
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit,clocks.max.sm --format=csv,noheader; } | tee "$D/machine.txt"
nvidia-smi -q -d PERFORMANCE,CLOCK,POWER,TEMPERATURE > "$D/smi_idle.txt" 2>&1
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,utilization.gpu,clocks_throttle_reasons.active \
  --format=csv -lms 2000 > "$D/smi_during.csv" 2>&1 &
SMI=$!
timeout ${SPEED_S:-450} python3 benchmarks/speed.py --compile --compile-draws --no-diagnose --budget-s ${BUDGET_S:-380} \
  --out "$D/full" > "$D/full.log" 2>&1 || echo "== speed: exit $?"
kill $SMI 2>/dev/null
nvidia-smi -q -d PERFORMANCE,CLOCK,POWER,TEMPERATURE > "$D/smi_after.txt" 2>&1
grep -A14 "Issue #7 targets" "$D/full/speed.md" || tail -n 20 "$D/full.log"
python3 - "$D/smi_during.csv" <<'PY'
import csv, sys, statistics
rows = list(csv.reader(open(sys.argv[1])))[1:]
sm = [float(r[1].split()[0]) for r in rows if len(r) > 4 and r[1].strip()[0].isdigit()]
pw = [float(r[3].split()[0]) for r in rows if len(r) > 4 and r[3].strip()[0].isdigit()]
reasons = sorted({r[6].strip() for r in rows if len(r) > 6})
print(f"smi samples {len(sm)}: SM clock median {statistics.median(sm):.0f} MHz (min {min(sm):.0f}, max {max(sm):.0f}); "
      f"power median {statistics.median(pw):.0f} W (max {max(pw):.0f}); throttle reasons seen {reasons}")
PY
tar czf "$OUT/final.tar.gz" -C "$OUT" final
