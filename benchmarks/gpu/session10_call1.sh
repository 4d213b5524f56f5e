#!/usr/bin/env bash
# Issue #7, session 10, device call 1 (H200): every cuBLASLt candidate for the NCE block's GEMMs at B = 32 and 64
# (lt_algos.py), then sample_dtype.py for the NCE energy with dynamo's recompile log (session 9's unexplained
# second runs, speed_notes.md row 24).
set -uo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv,noheader; } | tee "$OUT/machine.txt"
timeout 200 python3 benchmarks/gpu/lt_algos.py --out "$OUT" > "$OUT/lt_algos.log" 2>&1 || echo "== lt_algos: exit $?"
grep -v '^    ' "$OUT/lt_algos.log" | cut -c1-600
TORCH_LOGS=recompiles timeout 260 python3 benchmarks/gpu/sample_dtype.py nce > "$OUT/sample_dtype.jsonl" \
  2> "$OUT/sample_dtype.err" || echo "== sample_dtype: exit $?"
cat "$OUT/sample_dtype.jsonl"; grep -ciE "recompil" "$OUT/sample_dtype.err"; grep -iE "recompil|Error" "$OUT/sample_dtype.err" | cut -c1-300 | head -20
