"""The shipped NCE energy (edlm/assets/wikipedia_en/nce) compiled, with and without the rotary table that
``Rotary(max_len=...)`` computes once (session 5, issue #7): ms per synchronised call, graphs and breaks, and
optionally the kernel profile. Prints one dict per case.

  PYTHONPATH=. python3 benchmarks/gpu/shipped_nce_check.py [--batches 32,256] [--profile]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import edlm.energy  # noqa: E402,F401  (registers the nce_energy model type)
from edlm.models.checkpoints import from_pretrained  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="32,256")
    ap.add_argument("--profile", action="store_true", help="also the kernels of each case (probe_s3.kernel_profile)")
    args = ap.parse_args()
    dev = torch.device("cuda")
    res = {}
    for table in (True, False):
        torch._dynamo.reset()
        nce = from_pretrained("edlm/assets/wikipedia_en/nce").to(dev, torch.bfloat16).eval()
        if not table:  # the session-4 path: the table computed by the op in every forward
            nce.rotary_emb.max_len, nce.rotary_emb._table = 0, None
        L, V = nce.length, nce.vocab_size
        for B in (int(b) for b in args.batches.split(",")):
            x = torch.randint(0, V - 1, (B, L), device=dev)
            t = torch.full((B,), 0.5, device=dev)
            with torch.no_grad():
                ex = torch._dynamo.explain(lambda x=x, t=t, m=nce: m(x, x, t))()
                torch._dynamo.reset()
                f = torch.compile(nce, dynamic=False)
                for _ in range(3):
                    f(x, x, t)
                torch.cuda.synchronize()
                ts = []
                for _ in range(20):
                    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    a.record()
                    f(x, x, t)
                    b.record()
                    b.synchronize()
                    ts.append(a.elapsed_time(b))
                if args.profile:
                    from probe_s3 import kernel_profile

                    prof = kernel_profile(lambda f=f, x=x, t=t: f(x, x, t), top=8)
                    print(f"table={table} B={B} kernels {prof['kernel_ms_total']:.3f} ms, {prof['kernels_per_call']:.0f} "
                          f"per call: {[(round(a, 3), n, k[:60]) for a, n, k in prof['top']]}", flush=True)
            res[f"table={table} B={B}"] = (round(statistics.median(ts), 3), ex.graph_count, ex.graph_break_count)
            print(res, flush=True)


if __name__ == "__main__":
    main()
