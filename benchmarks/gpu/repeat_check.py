"""Issue #7, session 7: does a compiled sampler draw the same tokens when run again with the same seed?

In the quick shipped speed run with the default compile (session 7, call 3), the plain re-runs of MDLM T = 128, EDLM-AR and
EDLM-NCE drew other tokens than the timed runs with the same seed (the ✗ in its table); the frozen run in the same call
matched. This script loads edlm/assets/wikipedia_en's denoiser and NCE energy (bf16), compiles them as
``edlm sample --compile`` does (``--freeze``: frozen), and runs MDLM T = 128 (B = 256) three times and EDLM-NCE k = 8
[0, 1] T = 32 twice from one seed, printing per run the seconds and how many tokens differ from the first run.

  PYTHONPATH=. python3 benchmarks/gpu/repeat_check.py [--freeze]
"""

from __future__ import annotations

import json
import sys
import time

import torch

import edlm.energy.nce_energy  # noqa: F401  (registers the "nce_energy" checkpoint type)
from edlm.diffusion.categorical import compile_draws
from edlm.models import compile_networks, from_pretrained, load_denoiser
from edlm.samplers import generate

A = "edlm/assets/wikipedia_en"


def main() -> None:
    freeze = "--freeze" in sys.argv
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    den = load_denoiser(f"{A}/mdlm").to(dev, dt).eval()
    nce = from_pretrained(f"{A}/nce").to(dev, dt).eval()
    compile_networks(den, nce, freeze=freeze)
    compile_draws()
    V, L, mask = den.vocab_size - 1, den.length, den.mask_id
    batch = 256 if dev.type == "cuda" else 4
    for name, kwargs in (("MDLM T=128", dict(steps=128)), ("MDLM T=128", dict(steps=128)), ("MDLM T=128", dict(steps=128)),
                         ("EDLM-NCE k=8 [0,1] T=32", dict(steps=32, energy=nce, k=8, energy_batch_size=batch)),
                         ("EDLM-NCE k=8 [0,1] T=32", dict(steps=32, energy=nce, k=8, energy_batch_size=batch))):
        gen = torch.Generator(device=dev).manual_seed(1234)
        t0 = time.time()
        out = generate(den, L, batch, V, mask, generator=gen, device=dev, **kwargs)
        torch.cuda.synchronize() if dev.type == "cuda" else None
        secs = time.time() - t0
        first = main.__dict__.setdefault(name, out.tokens)
        print(json.dumps({"frozen": freeze, "run": name, "seconds": round(secs, 3),
                          "tokens_differing_from_first": int((out.tokens != first).sum()),
                          "sequences_differing": int((out.tokens != first).any(1).sum())}), flush=True)


if __name__ == "__main__":
    main()
