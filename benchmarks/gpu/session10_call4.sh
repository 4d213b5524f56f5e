#!/usr/bin/env bash
# Issue #7, session 10, device call 4 (H200): multi-kernel's first-call pick with the persistent versions preferred
# (compiling.PERSISTENT_PREFERENCE = 1.15, probe_s7 variant frozen_graphs) against inductor's own rule
# (frozen_graphs_fair), NCE B = 32 (frozen, CUDA graphs, tuned GEMMs, profiled), one process per order; each
# variant's multi-kernel timings are printed.
set -uo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv,noheader; } | tee "$OUT/machine.txt"
summary() {  # $1: probe.json — timings, profiles' top kernels, multi-kernel picks
  python3 - "$1" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))
for k, v in res.get("Z_freezing", {}).items():
    if k.endswith("_profile"):
        print(k, f"kernels {v['kernel_ms_total']:.3f} ms, {v['kernels_per_call']:.0f} per call")
        for ms, n, name in v["top"][:8]:
            print(f"   {ms:6.3f} {n:5.1f} {name[:100]}")
    elif k.endswith("_multi_kernel_picks"):
        for p in v:
            print(k, p["kept"], [round(t, 4) for t in p["ms"]], [n[:60] for n in p["kernels"]])
    elif k.endswith(("_ms", "_stream_ms", "_ms_again", "_error", "_max_diff")):
        print(k, round(v, 5) if isinstance(v, float) else v)
PY
}
timeout 120 python3 benchmarks/gpu/probe_s7.py --out "$OUT/N" --runs nce:32 \
  --variants frozen_graphs_fair,frozen_graphs > "$OUT/N.log" 2>&1 || echo "== probe_s7 N: exit $?"
summary "$OUT/N/probe.json"
timeout 120 python3 benchmarks/gpu/probe_s7.py --out "$OUT/R" --runs nce:32 \
  --variants frozen_graphs,frozen_graphs_fair > "$OUT/R.log" 2>&1 || echo "== probe_s7 R: exit $?"
summary "$OUT/R/probe.json"
grep -E "Traceback|Error" "$OUT/N.log" "$OUT/R.log" | head -8
tar czf "$OUT/logs.tgz" -C "$OUT" N.log R.log && rm -f "$OUT/N.log" "$OUT/R.log"
