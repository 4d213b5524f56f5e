#!/usr/bin/env bash
# Issue #7, session 5, device call 3 (H200): probe_s5 section G — the kernel with D fixed at compile time and more configs, and
# inductor multi-kernel (NCE B = 32 / 64, DiT and AR B = 32). Results under $OUT.
set -uo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; } | tee "$OUT/machine.txt"
timeout 540 python3 benchmarks/gpu/probe_s5.py --out "$OUT/g" --sections G > "$OUT/g.log" 2>&1 || echo "== G: exit $?"
grep -E "^(nce|dit|ar)_B" "$OUT/g.log" | sed -E "s/'[a-z0-9_]+_B[0-9]+_[a-z_0-9]+?_(ms|stream_ms|ms_again|host_dispatch_ms|max_diff|compile_s|error)'/\1/g" | cut -c1-420
grep -E "Traceback|Error" "$OUT/g.log" | head -5
