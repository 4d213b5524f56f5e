"""Session-10 probe (issue #7): every candidate cuBLASLt's heuristic offers for the NCE block's GEMMs, timed.

  PYTHONPATH=. python3 benchmarks/gpu/lt_algos.py --out $OUT/lt [--count 32] [--batches 32,64]

torch runs the heuristic's first candidate. For each GEMM of the MDLM-small block at B·L rows (B = 32: 32 768), bf16
(QKV 768 → 2304, attention out 768 → 768, MLP up 768 → 3072 with tanh-GELU + bias, the same with bias only, MLP down
3072 → 768 with bias), this times what torch runs (``F.linear`` / ``aten._addmm_activation``) and each candidate of
``edlm.models.cublaslt.Gemm`` (ms per call back to back: the median of 3 runs of 20), its largest difference from
torch's output, its tile / stages / cluster ids and the kernel it launches. Writes ``lt_algos.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_s8 import back_to_back  # noqa: E402  (ms per call: median of 3 runs of 20 back to back)

from edlm.models import cublaslt  # noqa: E402

GEMMS = {  # name: (n, k, epilogue)
    "qkv": (2304, 768, "none"),
    "attn_out": (768, 768, "none"),
    "mlp_up_gelu": (3072, 768, "gelu_bias"),
    "mlp_up_bias": (3072, 768, "bias"),
    "mlp_down": (768, 3072, "bias"),
}


def kernels(fn) -> list[str]:
    """Names of the GPU kernels one call of ``fn`` launches (memsets left out)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sorted({e.name for e in prof.events() if e.device_type.name == "CUDA" and "emset" not in e.name})


def probe(m: int, n: int, k: int, epilogue: str, count: int, g) -> dict:
    dt = torch.bfloat16
    x = torch.randn(m, k, device="cuda", dtype=dt, generator=g)
    w = (torch.randn(n, k, device="cuda", dtype=dt, generator=g) / k ** 0.5).contiguous()
    b = torch.randn(n, device="cuda", dtype=dt, generator=g) if epilogue != "none" else None
    flop = 2 * m * n * k

    def ref_fn():  # what torch runs
        return cublaslt.reference(x, w, b, epilogue)

    ref = ref_fn()
    r = {"m": m, "n": n, "k": k, "epilogue": epilogue}
    ms = back_to_back(ref_fn)
    r["torch"] = {"ms": ms, "tflops": flop / ms / 1e9, "kernels": kernels(ref_fn)}
    t0 = time.perf_counter()
    gemm = cublaslt.Gemm(cublaslt.Problem(m, n, k, epilogue, dt), count=count)
    r["heuristic_s"] = time.perf_counter() - t0
    r["candidates"] = []
    out = torch.empty_like(ref)
    for i in range(len(gemm.algos)):
        c = {"index": i, **gemm.describe(i)}
        try:
            def fn(i=i):
                return gemm(x, w, b, algo=i, out=out)
            y = fn()
            torch.cuda.synchronize()
            c["max_diff"] = float((y.float() - ref.float()).abs().max())
            c["ms"] = back_to_back(fn)
            c["tflops"] = flop / c["ms"] / 1e9
            c["kernels"] = kernels(fn)
        except Exception as exc:  # noqa: BLE001 - a candidate that fails is recorded, not fatal
            c["error"] = f"{type(exc).__name__}: {exc}"[:300]
        r["candidates"].append(c)
    timed = [c for c in r["candidates"] if "ms" in c]
    if timed:
        best = min(timed, key=lambda c: c["ms"])
        r["best"] = {"index": best["index"], "ms": best["ms"], "vs_torch": best["ms"] / ms}
        r["first_ms"] = timed[0]["ms"] if timed[0]["index"] == 0 else None
        ms2 = back_to_back(ref_fn)  # torch again, after the candidates: how much the card drifted
        r["torch_again_ms"] = ms2
    print(json.dumps({key: r[key] for key in r if key != "candidates"}), flush=True)
    for c in r["candidates"]:
        print("   ", json.dumps(c), flush=True)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=32)
    ap.add_argument("--batches", default="32,64")
    ap.add_argument("--gemms", default=",".join(GEMMS))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("lt_algos.py needs a CUDA device.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "cublaslt": cublaslt._loaded_path(), "date": time.strftime("%Y-%m-%d"), "runs": {}}
    g = torch.Generator(device="cuda").manual_seed(0)
    with torch.no_grad():
        for batch in (int(b) for b in args.batches.split(",")):
            for name in args.gemms.split(","):
                n, k, epi = GEMMS[name]
                res["runs"][f"{name}_B{batch}"] = probe(batch * 1024, n, k, epi, args.count, g)
                (out / "lt_algos.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
