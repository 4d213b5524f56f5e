#!/usr/bin/env bash
# Issue #7, session 7, device call 1 (H200): inductor's freezing for the sampling networks (probe_s7.py: NCE B = 32 / 64,
# DiT and AR B = 32, the shipped NCE's shape at B = 256; with and without freezing, and freezing with the C++ wrapper).
set -uo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv,noheader; } | tee "$OUT/machine.txt"
timeout 540 python3 benchmarks/gpu/probe_s7.py --out "$OUT/Z" > "$OUT/Z.log" 2>&1 || echo "== probe_s7: exit $?"
grep -E "^(nce|dit|ar|shipped_nce)_B" "$OUT/Z.log" | sed -E "s/'[a-z0-9_]+_B[0-9]+_[a-z_]+?_(ms|stream_ms|ms_again|host_dispatch_ms|max_diff|compile_s|extra_mem_mib|error)'/\1/g" | cut -c1-400
grep -E "Traceback|Error" "$OUT/Z.log" | head -5
