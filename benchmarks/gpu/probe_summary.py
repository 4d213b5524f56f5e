"""Prints what a ``probe_s7.py`` run wrote (its probe.json): each variant's timings, output difference and host
dispatch, its kernel profile's total and top kernels, multi-kernel's picks, and the tuned GEMMs' picks. Used by the
session-10 device scripts.

  python3 benchmarks/gpu/probe_summary.py $OUT/N/probe.json
"""

import json
import sys


def main(path: str) -> None:
    res = json.load(open(path))
    for k, v in res.get("Z_freezing", {}).items():
        if k.endswith("_profile"):
            print(k, f"kernels {v['kernel_ms_total']:.3f} ms, {v['kernels_per_call']:.0f} per call")
            for ms, n, name in v["top"][:8]:
                print(f"   {ms:6.3f} {n:5.1f} {name[:100]}")
        elif k.endswith("_multi_kernel_picks"):
            for p in v:
                print(k, p["kept"], [round(t, 4) for t in p["ms"]], [n[:60] for n in p["kernels"]])
        elif k.endswith(("_ms", "_stream_ms", "_ms_again", "_error", "_max_diff", "_host_dispatch_ms")):
            print(k, round(v, 5) if isinstance(v, float) else v)
    for p in res.get("tuned_gemm_picks", []):
        print("pick", p)


if __name__ == "__main__":
    main(sys.argv[1])
