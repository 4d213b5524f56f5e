#!/usr/bin/env bash
# Issue #7, session 8, device call 2 (H200): the MLP's down projection without its bias epilogue (`late_bias_linear`,
# probe_s7.py variant frozen_late_bias) against the frozen default, NCE B = 32 / 64 and DiT B = 32, with kernel profiles
# at NCE B = 32; then the same NCE B = 32 pair with cuBLAS / cuBLASLt given no workspace (do the 61 memsets per call go,
# and what does it cost?), in a second process.
set -uo pipefail
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv,noheader; } | tee "$OUT/machine.txt"
python3 -c "import torch._inductor.config as c; print('keep_addmm_fused_for_half_dtypes:', getattr(c, 'keep_addmm_fused_for_half_dtypes', 'absent'))"
summary() {  # $1: probe.json — each run's timings and the profiles' kernel totals and top kernels
  python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["Z_freezing"]
for k, v in r.items():
    if k.endswith("_profile"):
        print(k, f"kernels {v['kernel_ms_total']:.3f} ms, {v['kernels_per_call']:.0f} per call")
        for ms, n, name in v["top"][:10]:
            print(f"   {ms:6.3f} {n:5.1f} {name[:100]}")
    elif k.endswith(("_ms", "_stream_ms", "_ms_again", "_error")):
        print(k, v)
PY
}
timeout 300 python3 benchmarks/gpu/probe_s7.py --out "$OUT/Z" --runs nce:32,nce:64,dit:32 \
  --variants frozen,frozen_late_bias > "$OUT/Z.log" 2>&1 || echo "== probe_s7: exit $?"
summary "$OUT/Z/probe.json"
CUBLASLT_WORKSPACE_SIZE=0 CUBLAS_WORKSPACE_CONFIG=:0:0 timeout 150 python3 benchmarks/gpu/probe_s7.py --out "$OUT/W" \
  --runs nce:32 --variants frozen,frozen_late_bias > "$OUT/W.log" 2>&1 || echo "== probe_s7 (no workspace): exit $?"
summary "$OUT/W/probe.json"
grep -E "Traceback|Error" "$OUT/Z.log" "$OUT/W.log" | head -5
tar czf "$OUT/logs.tgz" -C "$OUT" Z.log W.log && rm -f "$OUT/Z.log" "$OUT/W.log"
