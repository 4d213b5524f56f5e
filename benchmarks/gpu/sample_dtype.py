"""Issue #7, session 9: ``edlm.pipeline.sample`` (``edlm sample --compile [--dtype bfloat16]``) on a GPU with the
shipped models (edlm/assets/wikipedia_en), networks as saved (float32) against cast to bf16: EDLM-NCE and EDLM-AR,
k = 8 over [0, 1], T = 32, 256 samples in one batch, compiled (frozen, energies from CUDA graphs, compiled draws).
Each setting loads its own models (they are cast and compiled in place) and runs three times, with seeds 0, 0 and 1:
the first run compiles; the second shows the compiled speed; the third shows what a new seed's draw shapes cost
(session 9 ran seeds 0 and 1 only, so its second runs mixed the two, speed_notes.md row 24).

  PYTHONPATH=. python3 benchmarks/gpu/sample_dtype.py [nce,ar]   (which energies; both by default)
"""

from __future__ import annotations

import json
import sys
import time

from edlm import pipeline

A = "edlm/assets/wikipedia_en"


def main() -> None:
    names = sys.argv[1].split(",") if len(sys.argv) > 1 else ["nce", "ar"]
    for spec in (f"{name}:{A}/{name}" for name in names):
        for dtype in ("checkpoint", "bfloat16"):
            bundle = pipeline.load_denoiser_bundle(f"{A}/mdlm", map_location="cuda")
            energy = pipeline.load_energy(spec, bundle, "cuda")
            for run, seed in enumerate((0, 0, 1)):
                t0 = time.perf_counter()
                records = pipeline.sample(bundle, energy=energy, num_samples=256, batch_size=256, length=None,
                                          steps=32, k=8, seed=seed, device="cuda", progress=False, compile=True,
                                          dtype=dtype)
                print(json.dumps({"energy": spec, "dtype": records[0].settings["dtype"], "run": run, "seed": seed,
                                  "seconds": round(time.perf_counter() - t0, 3),
                                  "text": records[0].text[:60]}), flush=True)


if __name__ == "__main__":
    main()
