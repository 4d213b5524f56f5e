#!/usr/bin/env bash
# Issue #7, session 8, device call 1 (H200): the NCE block's large kernels against the alternatives this card offers
# (probe_s8.py: attention backends and FlexAttention at head dimension 64; the block's GEMMs under both weight layouts
# and both BLAS libraries), then the NCE at B = 32 compiled with inductor's persistent TMA GEMM templates, the GELU in
# cuBLASLt's epilogue or in a template's (probe_s7.py, the variants prepared in session 7), with kernel profiles.
set -uo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv,noheader; } | tee "$OUT/machine.txt"
timeout 170 python3 benchmarks/gpu/probe_s8.py --out "$OUT/K" > "$OUT/K.log" 2>&1 || echo "== probe_s8: exit $?"
grep -E "^(sdpa|flex|qkv|attn_out|mlp)_" "$OUT/K.log" | cut -c1-160
timeout 380 python3 benchmarks/gpu/probe_s7.py --out "$OUT/Z" --runs nce:32 \
  --variants frozen,frozen_tma,frozen_tma_gelu_in_template > "$OUT/Z.log" 2>&1 || echo "== probe_s7: exit $?"
grep -E "^nce_B" "$OUT/Z.log" | cut -c1-600
grep -E "Traceback|Error" "$OUT/Z.log" | head -5
tar czf "$OUT/logs.tgz" -C "$OUT" K.log Z.log && rm -f "$OUT/K.log" "$OUT/Z.log"
