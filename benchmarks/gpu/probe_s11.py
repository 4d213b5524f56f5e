"""Session-11 probe (issue #7) on the GPU: the fast exact draw of an IS step's proposals, and the plain steps'
reveals on a side stream. Prints a log and writes probe.json to --out.

  PYTHONPATH=. python3 benchmarks/gpu/probe_s11.py --out $OUT/probe [--sections D,R,E] [--smoke]

Sections: (B) `categorical._block_bounds` (the Triton kernel on a GPU) against the exact float64 block masses, rows of
several spreads in bf16, fp16 and fp32: bound violations (must be 0), the largest and the mass-weighted excess (the
redraw rate). (K) that kernel alone at 32 768 rows: tiles, warps, float64 or float32 sums. (D) the draw of an IS step at all 32 768 masked positions of a 50 258-id vocabulary, k = 8 and k = 2, and
of 1 000 rows (fewer than `categorical._few_rows`: opaque scans), compiled: the float64 two-level inversion
(sessions 4–10) against `categorical._draw_fast` — ms, peak memory, the share of ids that agree, the draws redrawn
exactly, the largest lse difference; on flat (std 0.5, as the random-weight benchmark models give) and peaked
(std 3) logits. (R) MDLM T = 128 at B = 32 with the compiled, frozen denoiser: the plain run with the reveals on
a side stream and on the sampling stream, alternated, same tokens. (E) EDLM-AR k = 8 over [0, 1], T = 32 (the AR
compiled, frozen, replayed from CUDA graphs): the fast draw against the float64 draw, both with the side stream;
seconds, mean ESS, redrawn draws.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import probe_s4  # noqa: E402  (parse_probe_args sets its B, L, C, MASK)
from probe_s3 import kernel_profile  # noqa: E402
from probe_s4 import build, parse_probe_args, peak_gib, setup, sync, timed  # noqa: E402

from edlm.diffusion import categorical  # noqa: E402
from edlm.diffusion.schedules import LogLinearSchedule  # noqa: E402
from edlm.energy.ar_energy import AREnergy  # noqa: E402
from edlm.models import compile_networks  # noqa: E402
from edlm.models.dit import Denoiser  # noqa: E402
from edlm.samplers import loop  # noqa: E402
from edlm.samplers.loop import generate  # noqa: E402

RES = probe_s4.RES


def main():
    args, out = parse_probe_args("D,B,K,R,E")
    B, L, C, MASK = probe_s4.B, probe_s4.L, probe_s4.C, probe_s4.MASK
    dev, g, section_if = setup(args.sections)
    fast_types = categorical.FAST_DEVICE_TYPES if probe_s4.CUDA else ("cpu",)

    def draw_mode(fast: bool):
        categorical.FAST_DEVICE_TYPES = fast_types if fast else ()

    @section_if("D_draw")
    def _():
        r = RES["D_draw"] = {}
        categorical.compile_draws()
        for name, std in (("flat", 0.5), ("peaked", 3.0)):
            logits = (std * torch.randn(B * L, C, device=dev, generator=g)).bfloat16()
            for rows, K in ((B * L, 8), (B * L, 2), (min(1000, B * L), 8)):
                index = torch.arange(rows, device=dev)
                u = torch.rand(rows, K, device=dev, dtype=torch.float64, generator=g)
                row = r[f"{name} {rows}x{K}"] = {}
                got = {}
                for mode in ("exact64", "fast"):
                    draw_mode(mode == "fast")
                    fn = partial(categorical.draw_rows, logits, u, index=index, exclude=MASK)
                    before = dict(categorical.FALLBACK)
                    t = time.time()
                    got[mode] = fn()
                    sync()
                    row[f"{mode}_first_s"] = round(time.time() - t, 2)
                    row[f"{mode}_ms"] = timed(fn, 2, 7)
                    row[f"{mode}_peak_gib"] = peak_gib(fn)
                    row[f"{mode}_redrawn_per_call"] = (categorical.FALLBACK["draws"] - before["draws"]) / 11
                    if probe_s4.CUDA and rows == B * L and K == 8 and name == "flat":
                        row[f"{mode}_profile"] = kernel_profile(fn, top=8)
                a, b = got["exact64"], got["fast"]
                row["ids_equal"] = float((a.ids == b.ids).double().mean())
                row["lse_max_diff"] = float((a.lse - b.lse).abs().max())
                row["fast_excluded_drawn"] = int((b.ids == MASK).sum())
                print(name, rows, K, json.dumps(row), flush=True)
        draw_mode(True)
        categorical.compile_draws(False)

    def mdlm_den():
        den = Denoiser(build("dit", dev), LogLinearSchedule(), MASK)
        compile_networks(den, freeze=True)
        return den

    @section_if("B_bounds")
    def _():  # the Triton kernel's float32 block bounds against the exact float64 block masses, on this GPU
        r = RES["B_bounds"] = {}
        n = 2048 if probe_s4.CUDA else 16
        base = torch.randn(n, C, device=dev, generator=g, dtype=torch.float64)
        cases = {"std 0.5": 0.5 * base, "std 3": 3 * base, "offset 1000": 1000 + 3 * base,
                 "around the floor": -45 * base.abs(), "std 20": 20 * base}
        for dtype in (torch.bfloat16, torch.float16, torch.float32):
            for name, rows in cases.items():
                if dtype == torch.float16 and name == "offset 1000":
                    rows = 60 + 3 * base
                src = rows.to(dtype)
                U, _, lse = categorical._block_bounds(src, None, MASK)
                lp = src.double()
                lp[:, MASK] = float("-inf")
                m = torch.exp(lp - lp.amax(-1, keepdim=True))
                S = torch.nn.functional.pad(m, (0, -C % categorical.BLOCK)).reshape(n, -1, categorical.BLOCK).sum(-1)
                pos = S > 0
                excess = (U - S)[pos] / S[pos]
                r[f"{dtype} {name}"] = {
                    "violations": int((U < S).sum()), "zero_mismatch": int(((U == 0) != (S == 0)).sum()),
                    "max_excess": float(excess.max()), "mass_weighted_excess": float(((U - S).sum(-1) / S.sum(-1)).mean()),
                    "lse_max_err": float((lse - torch.logsumexp(lp, -1)).abs().max())}
                print(dtype, name, r[f"{dtype} {name}"], flush=True)

    @section_if("K_kernel")
    def _():  # the stage-1 kernel alone at 32 768 rows: tile shapes, warps, float64 or float32 sums
        import triton

        from edlm.models._triton_kernels import block_bounds_kernel

        r = RES["K_kernel"] = {}
        n = B * L
        logits = (0.5 * torch.randn(n, C, device=dev, generator=g)).bfloat16()
        nb = triton.cdiv(C, categorical.BLOCK)
        up = torch.empty(n, nb, device=dev, dtype=torch.float64)
        asum, mb = (torch.empty(n, nb, device=dev) for _ in range(2))
        ref = None
        for blocks, warps, sum64 in ((8, 4, True), (4, 2, False), (2, 1, False), (1, 1, False), (2, 2, False),
                                     (4, 1, False), (8, 2, False), (2, 1, True), (4, 2, True), (1, 2, False)):
            def fn(blocks=blocks, warps=warps, sum64=sum64):
                block_bounds_kernel[(n, triton.cdiv(nb, blocks))](
                    logits, logits, up, asum, mb, logits.stride(0), C, nb, MASK, FLOOR=categorical._FLOOR,
                    REL=categorical._REL, SLOPE=categorical._SLOPE, HAS_INDEX=False, BLOCK=categorical.BLOCK,
                    BLOCKS=blocks, SUM64=sum64, SUM_SLACK=2.0 ** -16, num_warps=warps)
            try:
                ms = timed(fn, 2, 7)
            except Exception as exc:  # noqa: BLE001
                r[f"{blocks}x{warps} sum64={sum64}"] = f"{type(exc).__name__}: {exc}"[:200]
                continue
            ref = up.clone() if ref is None else ref
            r[f"{blocks}x{warps} sum64={sum64}"] = {"ms": ms, "GB/s": n * C * 2 / ms / 1e6,
                                                   "up_rel_to_first": float(((up - ref) / ref).abs().max())}
            print(blocks, warps, sum64, r[f"{blocks}x{warps} sum64={sum64}"], flush=True)

    @section_if("R_reveals")
    def _():
        r = RES["R_reveals"] = {"runs": []}
        den = mdlm_den()
        categorical.compile_draws()
        steps = 128 if probe_s4.CUDA else 8
        tokens = None
        for side in (True, False, True, False, True, False):
            loop.SIDE_STREAM = side
            gen = torch.Generator(device=dev).manual_seed(1234)
            sync()
            t = time.perf_counter()
            o = generate(den, L, B, C - 1, MASK, steps, generator=gen, device=dev)
            sync()
            secs = time.perf_counter() - t
            same = None if tokens is None else bool(torch.equal(o.tokens, tokens))
            tokens = o.tokens if tokens is None else tokens
            r["runs"].append({"side_stream": side, "s": round(secs, 4), "nfe": o.nfe_denoiser, "same_tokens": same})
            print(r["runs"][-1], flush=True)
        for side in (True, False):
            r[f"side_{side}_median_s"] = statistics.median(x["s"] for x in r["runs"][2:] if x["side_stream"] == side)
        loop.SIDE_STREAM = True
        categorical.compile_draws(False)

    @section_if("E_edlm")
    def _():
        r = RES["E_edlm"] = {"runs": []}
        den = mdlm_den()
        energy = AREnergy(build("ar", dev), MASK)
        compile_networks(energy, freeze=True, cuda_graphs=probe_s4.CUDA)
        categorical.compile_draws()
        steps = 32 if probe_s4.CUDA else 4
        for fast in (True, False, True, False, True, False):
            draw_mode(fast)
            gen = torch.Generator(device=dev).manual_seed(1234)
            before = dict(categorical.FALLBACK)
            sync()
            t = time.perf_counter()
            o = generate(den, L, B, C - 1, MASK, steps, energy=energy, k=8, window=(0.0, 1.0), generator=gen,
                         energy_batch_size=B, device=dev)
            sync()
            secs = time.perf_counter() - t
            r["runs"].append({"fast_draw": fast, "s": round(secs, 4), "nfe": [o.nfe_denoiser, o.nfe_energy],
                              "mean_ess": statistics.fmean(o.ess) if o.ess else None,
                              "redrawn": categorical.FALLBACK["draws"] - before["draws"]})
            print(r["runs"][-1], flush=True)
        for fast in (True, False):
            r[f"fast_{fast}_median_s"] = statistics.median(x["s"] for x in r["runs"][2:] if x["fast_draw"] == fast)
        draw_mode(True)
        categorical.compile_draws(False)

    (out / "probe.json").write_text(json.dumps(RES, indent=1, default=str))


if __name__ == "__main__":
    main()
