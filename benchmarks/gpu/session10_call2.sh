#!/usr/bin/env bash
# Issue #7, session 10, device call 2 (H200): the blocks' GEMMs through edlm.models.cublaslt's tuner
# (DiTBlock.tuned_gemms) against torch's own GEMM calls, in one process per pair (probe_s7.py): the NCE at B = 32 and
# 64 as sampling runs it (frozen, CUDA graphs), with a kernel profile at B = 32, then B = 32 in the opposite order;
# DiT and AR at B = 32 (frozen).
set -uo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv,noheader; } | tee "$OUT/machine.txt"
summary() {  # $1: probe.json — timings, output differences, profiles' totals and top kernels, the tuner's picks
  python3 - "$1" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))
for k, v in res.get("Z_freezing", {}).items():
    if k.endswith("_profile"):
        print(k, f"kernels {v['kernel_ms_total']:.3f} ms, {v['kernels_per_call']:.0f} per call")
        for ms, n, name in v["top"][:8]:
            print(f"   {ms:6.3f} {n:5.1f} {name[:100]}")
    elif k.endswith(("_ms", "_stream_ms", "_ms_again", "_error", "_max_diff", "_host_dispatch_ms")):
        print(k, v)
for p in res.get("tuned_gemm_picks", []):
    print("pick", p)
PY
}
timeout 200 python3 benchmarks/gpu/probe_s7.py --out "$OUT/N" --runs nce:32,nce:64 \
  --variants frozen_graphs_untuned,frozen_graphs > "$OUT/N.log" 2>&1 || echo "== probe_s7 N: exit $?"
summary "$OUT/N/probe.json"
timeout 90 python3 benchmarks/gpu/probe_s7.py --out "$OUT/R" --runs nce:32 --variants frozen_graphs,frozen_graphs_untuned \
  > "$OUT/R.log" 2>&1 || echo "== probe_s7 R: exit $?"
summary "$OUT/R/probe.json"
timeout 200 python3 benchmarks/gpu/probe_s7.py --out "$OUT/D" --runs dit:32,ar:32 --variants frozen_untuned,frozen \
  > "$OUT/D.log" 2>&1 || echo "== probe_s7 D: exit $?"
summary "$OUT/D/probe.json"
grep -E "Traceback|Error|Warning" "$OUT/N.log" "$OUT/R.log" "$OUT/D.log" | head -8
tar czf "$OUT/logs.tgz" -C "$OUT" N.log R.log D.log && rm -f "$OUT/N.log" "$OUT/R.log" "$OUT/D.log"
