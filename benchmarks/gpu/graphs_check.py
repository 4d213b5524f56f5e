"""Issue #7, session 9: the energies replayed from CUDA graphs (``compile_networks(..., cuda_graphs=True)``) against
the same compiled energies launched kernel by kernel: the same tokens, and how long a sampling run takes.

Loads edlm/assets/wikipedia_en's denoiser, NCE and AR energies (bf16; host-bound at 6 × 256, L = 128) and compiles
them frozen as ``edlm sample --compile`` does; each energy twice, once per setting. EDLM-NCE and EDLM-AR with k = 8
over [0, 1], T = 32, B = 256 from one seed, each setting twice in the order off, on, off, on. Prints one JSON line
per run: seconds, energy calls, and tokens differing from the first run of that sampler.

  PYTHONPATH=. python3 benchmarks/gpu/graphs_check.py
"""

from __future__ import annotations

import json
import time

import torch

import edlm.energy.nce_energy  # noqa: F401  (registers the "nce_energy" checkpoint type)
from edlm.diffusion.categorical import compile_draws
from edlm.energy import AREnergy
from edlm.models import compile_networks, from_pretrained, load_denoiser
from edlm.samplers import generate

A = "edlm/assets/wikipedia_en"


def main() -> None:
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    den = load_denoiser(f"{A}/mdlm").to(dev, dt).eval()
    compile_networks(den, freeze=True)
    compile_draws()
    energies = {}
    for graphs in (False, True):
        nce = from_pretrained(f"{A}/nce").to(dev, dt).eval()
        ar = AREnergy(from_pretrained(f"{A}/ar", expected_type="ar").to(dev, dt).eval(), den.mask_id)
        compile_networks(nce, ar, freeze=True, cuda_graphs=graphs)
        energies[graphs] = {"EDLM-NCE": nce, "EDLM-AR": ar}
    V, L, mask = den.vocab_size - 1, den.length, den.mask_id
    batch = 256 if dev.type == "cuda" else 4
    first = {}
    for name in ("EDLM-NCE", "EDLM-AR"):
        for graphs in (False, True, False, True):
            gen = torch.Generator(device=dev).manual_seed(1234)
            t0 = time.perf_counter()
            out = generate(den, L, batch, V, mask, 32, energy=energies[graphs][name], k=8, generator=gen, device=dev)
            secs = time.perf_counter() - t0
            ref = first.setdefault(name, out.tokens)
            print(json.dumps({"run": f"{name} k=8 [0,1] T=32 B={batch}", "cuda_graphs": graphs,
                              "seconds": round(secs, 3), "energy_calls": out.nfe_energy,
                              "tokens_differing_from_first": int((out.tokens != ref).sum())}), flush=True)


if __name__ == "__main__":
    main()
