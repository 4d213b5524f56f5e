#!/usr/bin/env bash
# Issue #7, session 5, device calls 2 and 3 (H200): one probe_s5 section, e.g. `bash benchmarks/gpu/session5_probe.sh F`
# (the cached rotary table, add_norm_modulate v1 and inductor without size asserts, one at a time, then CUDA graphs) or
# `... G` (add_norm_modulate v2 and inductor's multi-kernel) or `... H` (multi-kernel against the defaults, with
# kernel profiles; not run yet); NCE B = 32 / 64, DiT and AR B = 32. Results under $OUT.
set -uo pipefail
S=${1:?which probe_s5 section: F or G}
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; } | tee "$OUT/machine.txt"
timeout 540 python3 benchmarks/gpu/probe_s5.py --out "$OUT/$S" --sections "$S" > "$OUT/$S.log" 2>&1 || echo "== $S: exit $?"
grep -E "^(nce|dit|ar)_B" "$OUT/$S.log" | sed -E "s/'[a-z0-9_]+_B[0-9]+_[a-z_0-9]+?_(ms|stream_ms|ms_again|host_dispatch_ms|max_diff|compile_s|error)'/\1/g" | cut -c1-420
grep -E "Traceback|Error" "$OUT/$S.log" | head -5
