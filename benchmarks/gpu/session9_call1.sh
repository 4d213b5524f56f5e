#!/usr/bin/env bash
# Issue #7, session 9, device call 1 (H200): the energies replayed from CUDA graphs (compile_networks(...,
# cuda_graphs=True), probe_s7.py variant frozen_graphs) against the frozen default: MDLM-small NCE B = 32 / 64, the
# AR energy's call (score=True) at B = 32 and the shipped NCE's shape at B = 256, with a kernel profile at NCE B = 32;
# NCE B = 32 once more in the opposite order; then graphs_check.py (shipped models, EDLM-NCE / EDLM-AR: same tokens?).
set -uo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv,noheader; } | tee "$OUT/machine.txt"
summary() {  # $1: probe.json — each run's timings and the profiles' kernel totals and top kernels
  python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["Z_freezing"]
for k, v in r.items():
    if k.endswith("_profile"):
        print(k, f"kernels {v['kernel_ms_total']:.3f} ms, {v['kernels_per_call']:.0f} per call")
        for ms, n, name in v["top"][:6]:
            print(f"   {ms:6.3f} {n:5.1f} {name[:100]}")
    elif k.endswith(("_ms", "_stream_ms", "_ms_again", "_error", "_max_diff", "_extra_mem_mib")):
        print(k, v)
PY
}
timeout 330 python3 benchmarks/gpu/probe_s7.py --out "$OUT/Z" --runs nce:32,nce:64,ar_score:32,shipped_nce:256 \
  --variants frozen,frozen_graphs > "$OUT/Z.log" 2>&1 || echo "== probe_s7: exit $?"
summary "$OUT/Z/probe.json"
timeout 90 python3 benchmarks/gpu/probe_s7.py --out "$OUT/R" --runs nce:32 --variants frozen_graphs,frozen \
  > "$OUT/R.log" 2>&1 || echo "== probe_s7 (reversed): exit $?"
summary "$OUT/R/probe.json"
timeout 150 python3 benchmarks/gpu/graphs_check.py > "$OUT/graphs_check.jsonl" 2> "$OUT/graphs_check.err" \
  || echo "== graphs_check: exit $?"
cat "$OUT/graphs_check.jsonl"; tail -3 "$OUT/graphs_check.err"
grep -E "Traceback|Error|Warning" "$OUT/Z.log" "$OUT/R.log" | head -8
tar czf "$OUT/logs.tgz" -C "$OUT" Z.log R.log graphs_check.err && rm -f "$OUT/Z.log" "$OUT/R.log" "$OUT/graphs_check.err"
