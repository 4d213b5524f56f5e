"""Issue #7, session 9: the compiled float64 draw (``compile_draws``) when a chunk has few rows.

In session 9's first graphs_check run, sampling MDLM-small (vocab 50 258) at B = 1, k = 8 with ``compile_draws()``
failed while inductor compiled the draw (``InductorError: TypeError: list indices must be integers or slices, not
NoneType``, in the code generation of a ``SplitScan``). Inductor splits a scan across thread blocks when it has
few rows (fewer than 2 · 32 · SMs); since then such chunks run the compiled draw with the cumulative sums as ATen
kernels (``categorical._few_rows``). For each (rows, draws per row): the old rule (``_few_rows`` = 0) and the new one,
each compiled from scratch with that shape first, whether it compiles, whether its ids equal the eager draw's, and
its time per call against the eager draw's.

  PYTHONPATH=. python3 benchmarks/gpu/draw_split_scan.py
"""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_s3 import timed  # noqa: E402

from edlm.diffusion import categorical  # noqa: E402
from edlm.diffusion.categorical import draw_rows, uniform64  # noqa: E402

C = 50259  # MDLM-small's 50 258 ids and [MASK]


def main() -> None:
    dev = torch.device("cuda")
    few = categorical._few_rows(dev)
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "few_rows": few}), flush=True)
    g = torch.Generator(device=dev).manual_seed(0)
    rows = (3 * torch.randn(32768, C, device=dev, generator=g)).bfloat16()
    for n, K in ((1024, 8), (32, 1), (256, 1), (1, 8), (4096, 8), (32768, 8), (32768, 1)):
        index = torch.randperm(32768, device=dev, generator=g)[:n]
        u = uniform64((n, K), g, dev)
        categorical.compile_draws(False)
        draw = partial(draw_rows, rows, u, index=index, exclude=C - 1)
        eager = draw()
        row = {"rows": n, "K": K, "eager_ms": timed(draw, 1, 20)}
        for rule, value in (("old", 0), ("new", None)):
            saved = categorical._few_rows
            if value is not None:
                categorical._few_rows = lambda device, v=value: v
            try:
                torch._dynamo.reset()
                categorical.compile_draws()
                got = draw()
                row[f"{rule}_ids_differing"] = int((got.ids != eager.ids).sum())
                row[f"{rule}_ms"] = timed(draw, 1, 20)
            except Exception as exc:  # noqa: BLE001
                row[f"{rule}_error"] = f"{type(exc).__name__}: {exc}"[:200]
            finally:
                categorical._few_rows = saved
                categorical.compile_draws(False)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
