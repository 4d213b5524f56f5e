"""Issue #7, session 7: can a frozen compile (``compile_networks(..., freeze=True)``) reuse a graph compiled with
other weights?

Freezing makes the weights constants of the compiled graph and folds what depends on them alone (an unconditioned
network's σ-map and adaLN modulations). Inductor's FX graph cache keys large frozen constants by shape and dtype
only, so a network of the same shape with other weights could hit a cached graph; this script checks that the
cached graph then runs with the new weights. It compiles the shipped NCE's shape (fast to compile) with random
weights of seed 0, 1, 0 in this process (``probe_s7.shipped_nce``, B = 64; tiny on CPU) (``torch._dynamo.reset()`` between) and seed 1 in a second process on the
same on-disk cache, and prints one JSON line per compile: the largest difference to the eager forward, the sums of
both (a graph run with the other seed's weights would give that seed's sum) and inductor's cache counters.

  PYTHONPATH=. python3 benchmarks/gpu/frozen_cache_check.py [--child]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import torch
from torch._dynamo.utils import counters

from edlm.models.compiling import compile_networks

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from probe_s7 import shipped_nce  # noqa: E402  (the shipped NCE's shape, random weights, half-masked inputs)

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def attempt(tag: str, seed: int) -> dict:
    torch._dynamo.reset()
    counters.clear()
    net, call = shipped_nce(DEV, torch.Generator(device=DEV).manual_seed(0), batch=64, seed=seed, scale=0.05)
    with torch.no_grad():
        eager = call(net).float()
        compile_networks(net, freeze=True)
        out = call(net).float()
    res = {"tag": tag, "seed": seed, "max_diff_to_eager": float((out - eager).abs().max()),
           "eager_sum": float(eager.sum()), "compiled_sum": float(out.sum()), "inductor": {k: v for k, v in counters["inductor"].items() if "cache" in k}}
    print(json.dumps(res), flush=True)
    return res


def main() -> None:
    if "--child" in sys.argv:
        attempt("child process, seed 1", 1)
        return
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")  # start from an empty cache
    attempt("first, seed 0", 0)
    attempt("again in-process, seed 1", 1)
    attempt("again in-process, seed 0", 0)
    subprocess.run([sys.executable, __file__, "--child"], check=False, env=os.environ.copy())


if __name__ == "__main__":
    main()
