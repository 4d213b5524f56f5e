#!/usr/bin/env bash
# Issue #7, session 9, device call 4 (H200): the compiled draw with few rows per chunk, old rule against new
# (draw_split_scan.py), then graphs_check.py on MDLM-small at B = 1 and 4 (the set that failed in call 3 on it).
set -uo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv,noheader; } | tee "$OUT/machine.txt"
timeout 200 python3 benchmarks/gpu/draw_split_scan.py > "$OUT/draw_split_scan.jsonl" 2> "$OUT/draw_split_scan.err" \
  || echo "== draw_split_scan: exit $?"
cat "$OUT/draw_split_scan.jsonl"
timeout 300 python3 benchmarks/gpu/graphs_check.py --sets small > "$OUT/graphs_check_small.jsonl" \
  2> "$OUT/graphs_check_small.err" || echo "== graphs_check: exit $?"
cat "$OUT/graphs_check_small.jsonl"; grep -E "Error" "$OUT/graphs_check_small.err" | head -3
