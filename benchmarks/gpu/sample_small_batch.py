"""Issue #7, session 9: ``edlm.pipeline.sample`` (what ``edlm sample --compile`` runs) at small batch sizes on a GPU,
with the shipped models (edlm/assets/wikipedia_en): EDLM-NCE and EDLM-AR, k = 8 over [0, 1], T = 32, batch sizes 1
and 4, compiled (frozen, energies from CUDA graphs, compiled draws). One JSON line per run: seconds, and the first
sample's first words. Session 9 found the compiled draw failing to compile at B = 1 with MDLM-small's vocabulary.

  PYTHONPATH=. python3 benchmarks/gpu/sample_small_batch.py
"""

from __future__ import annotations

import json
import time

from edlm import pipeline

A = "edlm/assets/wikipedia_en"


def main() -> None:
    bundle = pipeline.load_denoiser_bundle(f"{A}/mdlm", map_location="cuda")
    for spec in (f"nce:{A}/nce", f"ar:{A}/ar"):
        energy = pipeline.load_energy(spec, bundle, "cuda")
        for batch in (1, 4):
            for run in range(2):  # the first compiles
                t0 = time.perf_counter()
                records = pipeline.sample(bundle, energy=energy, num_samples=batch, batch_size=batch, length=None,
                                          steps=32, k=8, seed=run, device="cuda", progress=False, compile=True)
                print(json.dumps({"energy": spec, "batch": batch, "run": run,
                                  "seconds": round(time.perf_counter() - t0, 3),
                                  "text": records[0].text[:60]}), flush=True)


if __name__ == "__main__":
    main()
