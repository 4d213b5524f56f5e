"""Issue #7, session 9: the energies replayed from CUDA graphs (``compile_networks(..., cuda_graphs=True)``) against
the same compiled energies launched kernel by kernel: the same tokens, and how long a sampling run takes.

Two model sets, each compiled once, frozen, as ``edlm sample --compile`` does, with ``cuda_graphs=True``:
- ``shipped``: edlm/assets/wikipedia_en's denoiser, NCE and AR energies (6 × 256, L = 128), B = 256;
- ``small``: MDLM-small (12 × 768, L = 1024, vocab 50 258) with random weights (std 0.02), B = 1 and B = 4.
Graphs are switched off by calling the graphed wrapper's inner (compiled) call: the same kernels and the same
multi-kernel picks, so any token difference would come from the replay. EDLM-NCE and EDLM-AR, k = 8 over [0, 1],
T = 32, one seed: a warm-up run per setting (it compiles and captures), then off, on, off, on. One JSON line per
run: seconds, energy calls, tokens differing from the first timed run of that sampler and batch size.

  PYTHONPATH=. python3 benchmarks/gpu/graphs_check.py [--sets shipped,small]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import edlm.energy.nce_energy  # noqa: F401  (registers the "nce_energy" checkpoint type)
from edlm.diffusion.categorical import compile_draws
from edlm.diffusion.schedules import LogLinearSchedule
from edlm.energy import AREnergy, NCEEnergy
from edlm.models import compile_networks, from_pretrained, load_denoiser
from edlm.models.ar import ARTransformer
from edlm.models.compiling import _Graphed, _target
from edlm.models.dit import Denoiser, DiT
from edlm.samplers import generate

A = "edlm/assets/wikipedia_en"


def _random(net, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.02)
    return net


def models(name, dev, dt):
    """(denoiser, {sampler name: energy}, batch sizes) of one model set, on ``dev`` in ``dt``, eval mode."""
    if name == "shipped":
        den = load_denoiser(f"{A}/mdlm")
        nce = from_pretrained(f"{A}/nce")
        ar = from_pretrained(f"{A}/ar", expected_type="ar")
        batches = (256,) if dev.type == "cuda" else (4,)
    else:
        V, L, D, N = (50258, 1024, 768, 12) if dev.type == "cuda" else (61, 32, 32, 2)
        den = Denoiser(_random(DiT(V, L, D, N, N, 128, dropout=0.0), 0), LogLinearSchedule(), V - 1)
        nce = _random(NCEEnergy(V, L, D, N, N, 128, dropout=0.0, mask_id=V - 1), 2)
        ar = _random(ARTransformer(V, L, D, N, N, dropout=0.0, mask_id=V - 1), 1)
        batches = (1, 4)
    den, nce, ar = (m.to(dev, dt).eval() for m in (den, nce, ar))
    return den, {"EDLM-NCE": nce, "EDLM-AR": AREnergy(ar, den.mask_id)}, batches


def use_graphs(energy, graphed: _Graphed, on: bool) -> None:
    """Point the energy's network at its graphed wrapper (on) or at the wrapper's inner compiled call (off)."""
    _target(energy)._compiled_call_impl = graphed if on else graphed.call


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sets", default="shipped,small")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    compile_draws()
    for set_name in args.sets.split(","):
        torch._dynamo.reset()
        den, energies, batches = models(set_name, dev, dt)
        compile_networks(den, *energies.values(), freeze=True, cuda_graphs=True)
        graphed = {name: _target(energy)._compiled_call_impl for name, energy in energies.items()}
        assert all(isinstance(g, _Graphed) for g in graphed.values())
        V, L, mask = den.vocab_size - 1, den.length, den.mask_id
        for batch in batches:
            for name, energy in energies.items():
                first = None
                for run, graphs in enumerate((False, True, False, True, False, True)):
                    use_graphs(energy, graphed[name], graphs)
                    gen = torch.Generator(device=dev).manual_seed(1234)
                    t0 = time.perf_counter()
                    out = generate(den, L, batch, V, mask, 32, energy=energy, k=8, generator=gen, device=dev)
                    secs = time.perf_counter() - t0
                    if run < 2:
                        continue  # warm-up: compiles, multi-kernel picks, captures
                    first = out.tokens if first is None else first
                    print(json.dumps({"set": set_name, "run": f"{name} k=8 [0,1] T=32 B={batch}",
                                      "cuda_graphs": graphs, "seconds": round(secs, 4), "energy_calls": out.nfe_energy,
                                      "tokens_differing_from_first": int((out.tokens != first).sum())}), flush=True)
        den = energies = None


if __name__ == "__main__":
    main()
