#!/usr/bin/env bash
# Issue #7, session 5, device call 1 (H200): probe_s5 sections C (generated code, host dispatch, memsets, gaps),
# Q (the block's GEMMs alone, cuBLASLt vs inductor's Triton templates) and V (NCE variants). Results under $OUT.
set -uo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; } | tee "$OUT/machine.txt"
timeout 300 python3 benchmarks/gpu/probe_s5.py --out "$OUT/cq" --sections C,Q > "$OUT/cq.log" 2>&1 || echo "== C,Q: exit $?"
grep -E "^(C_code|Q_gemm|qkv|attn_out|mlp_up)" "$OUT/cq.log" | cut -c1-1500
timeout 270 python3 benchmarks/gpu/probe_s5.py --out "$OUT/v" --sections V > "$OUT/v.log" 2>&1 || echo "== V: exit $?"
grep -E "^(defaults|reduce|max_auto)" "$OUT/v.log" | cut -c1-600
