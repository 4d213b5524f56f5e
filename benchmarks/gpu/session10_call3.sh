#!/usr/bin/env bash
# Issue #7, session 10, device call 3 (H200): call 2's profiles showed the post-attention LayerNorm as multi-kernel's
# looped version (1.13-1.20 ms per NCE call) in some processes and persistent (0.69 ms) in others. Here multi-kernel's
# pick is forced to the persistent versions (triton.multi_kernel = 3; probe_s7 variants *_persistent) against its
# first-call timing (= 1), in one process per pair and in both orders: NCE B = 32 (frozen, CUDA graphs, profiled) and
# B = 64, then DiT and AR at B = 32 (frozen). Both with the tuned GEMMs (DiTBlock.tuned_gemms, call 2).
set -uo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv,noheader; } | tee "$OUT/machine.txt"
summary() {  # $1: probe.json — timings, output differences, profiles' totals and top kernels
  python3 - "$1" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))
for k, v in res.get("Z_freezing", {}).items():
    if k.endswith("_profile"):
        print(k, f"kernels {v['kernel_ms_total']:.3f} ms, {v['kernels_per_call']:.0f} per call")
        for ms, n, name in v["top"][:8]:
            print(f"   {ms:6.3f} {n:5.1f} {name[:100]}")
    elif k.endswith(("_ms", "_stream_ms", "_ms_again", "_error", "_max_diff")):
        print(k, round(v, 5) if isinstance(v, float) else v)
PY
}
timeout 200 python3 benchmarks/gpu/probe_s7.py --out "$OUT/N" --runs nce:32,nce:64 \
  --variants frozen_graphs,frozen_graphs_persistent > "$OUT/N.log" 2>&1 || echo "== probe_s7 N: exit $?"
summary "$OUT/N/probe.json"
timeout 100 python3 benchmarks/gpu/probe_s7.py --out "$OUT/R" --runs nce:32 \
  --variants frozen_graphs_persistent,frozen_graphs > "$OUT/R.log" 2>&1 || echo "== probe_s7 R: exit $?"
summary "$OUT/R/probe.json"
timeout 200 python3 benchmarks/gpu/probe_s7.py --out "$OUT/D" --runs dit:32,ar:32 --variants frozen,frozen_persistent \
  > "$OUT/D.log" 2>&1 || echo "== probe_s7 D: exit $?"
summary "$OUT/D/probe.json"
grep -E "Traceback|Error" "$OUT/N.log" "$OUT/R.log" "$OUT/D.log" | head -8
tar czf "$OUT/logs.tgz" -C "$OUT" N.log R.log D.log && rm -f "$OUT/N.log" "$OUT/R.log" "$OUT/D.log"
