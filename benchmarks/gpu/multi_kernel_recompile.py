"""Issue #7, session 6: does a second compile of the same network with inductor's multi-kernel fail?

In probe_s5 sections R and W, every second compile of an identical graph in one process (after
``torch._dynamo.reset()``) raised ``BackendCompilerFailed: TypeError: 'NoneType' object does not support the
context manager protocol``. This script compiles the shipped NCE's shape (fast to compile) several times, in this
process and in a second one sharing the on-disk cache, with and without inductor's FX graph cache, and prints one
JSON line per attempt (the full traceback when it fails). Session 7: ``--frozen`` does the same for the frozen
compile that sampling uses (``compile_networks(..., freeze=True)``: parameters as graph constants).

  PYTHONPATH=. python3 benchmarks/gpu/multi_kernel_recompile.py [--frozen] [--child]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import traceback

import torch

from edlm.energy.nce_energy import NCEEnergy
from edlm.models.compiling import compile_networks

DEV = "cuda" if torch.cuda.is_available() else "cpu"


FREEZE = "--frozen" in sys.argv


def attempt(tag: str, options: dict) -> dict:
    torch._dynamo.reset()
    torch.manual_seed(0)
    net = NCEEnergy(4096, 128, 256, 6, 4, 128, dropout=0.0)
    if FREEZE:  # random weights, so that the energies compared across attempts are not all 0
        with torch.no_grad():
            for prm in net.parameters():
                prm.copy_(torch.randn_like(prm) * 0.02)
    net = net.to(DEV, torch.bfloat16 if DEV == "cuda" else None).eval()
    g = torch.Generator(device=DEV).manual_seed(0)
    x = torch.randint(0, 4095, (64, 128), device=DEV, generator=g)
    t = torch.full((64,), 0.5, device=DEV)
    try:
        with torch.no_grad():
            compile_networks(net, options=options, freeze=FREEZE)
            e = net(x, x, t).float()
        out = {"tag": tag, "frozen": FREEZE, "ok": True, "energy_sum": float(e.sum())}
    except Exception as exc:  # noqa: BLE001
        out = {"tag": tag, "ok": False, "error": "".join(traceback.format_exception(exc))[-5000:]}
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    multi = {"triton.multi_kernel": 1}
    no_fx_cache = {**multi, "fx_graph_cache": False}
    if "--child" in sys.argv:  # a second process on the same on-disk cache
        attempt("child: multi-kernel, its pick cache off", multi)
        attempt("child: multi-kernel, no FX graph cache", no_fx_cache)
        return
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")  # start from an empty cache
    attempt("first: multi-kernel", multi)
    attempt("again in-process: multi-kernel", multi)
    attempt("again in-process: multi-kernel, no FX graph cache", no_fx_cache)
    os.environ["TORCHINDUCTOR_DISABLE_MULTI_KERNEL_CACHE"] = "1"  # multi-kernel's own cache of its picks
    attempt("again in-process: multi-kernel, its pick cache off", multi)
    subprocess.run([sys.executable, __file__, "--child"] + ["--frozen"] * FREEZE, check=False, env=os.environ.copy())


if __name__ == "__main__":
    main()
