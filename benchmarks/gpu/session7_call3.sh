#!/usr/bin/env bash
# Issue #7, session 7, device call 3 (H200): the frozen compile end to end on the shipped models.
# (1) `edlm sample --compile` (frozen, multi-kernel) run twice on one machine: the second run loads inductor's on-disk
#     cache (session 6 found multi-kernel failing there); both must succeed and write the same samples.
# (2) the quick speed run on the shipped models with freezing (the default) and with --no-freeze, in one call.
set -uo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv,noheader; } | tee "$OUT/machine.txt"
A=edlm/assets/wikipedia_en
for run in 1 2; do
  /usr/bin/time -f "sample run $run: %e s wall" timeout 150 python3 -m edlm sample --denoiser $A/mdlm --energy nce:$A/nce --k 8 \
    --steps 32 --num-samples 256 --batch-size 256 --seed 0 --compile --no-print --no-progress --out "$OUT/sample_$run.jsonl" \
    > "$OUT/sample_$run.log" 2>&1 || echo "== sample run $run: exit $?"
  grep -E "samples:|Error" "$OUT/sample_$run.log" | head -3
done
cmp -s "$OUT/sample_1.jsonl" "$OUT/sample_2.jsonl" && echo "sample runs 1 and 2: identical JSONL" || echo "sample runs 1 and 2: DIFFER"
for v in frozen no_freeze; do
  flag=$([ $v = no_freeze ] && echo --no-freeze)
  timeout 200 python3 benchmarks/speed.py --quick --shipped $A --compile --compile-draws $flag --out "$OUT/shipped_$v" \
    > "$OUT/shipped_$v.log" 2>&1 || echo "== shipped $v: exit $?"
  grep -E "^\| (DiT|AR|NCE) .*\| (32|256) \||^\| (MDLM|EDLM)" "$OUT/shipped_$v/speed.md" | cut -c1-160 | head -12
done
cd "$OUT" && tar czf call3.tar.gz --remove-files sample_* shipped_*; ls "$OUT"
