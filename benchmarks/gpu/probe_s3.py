"""Session-3 probe (issue #7) on the GPU: the pieces a sampler step pays outside the networks, old vs new,
and where the compiled DiT forward spends its time. Prints a log and writes probe.json to --out.

  PYTHONPATH=. python3 benchmarks/gpu/probe_s3.py --out $OUT

Sections: (A) the float64 proposal draw at all 32 768 masked positions of a 50 258-id vocabulary, k = 8:
the old one-shot draw, the chunked draw, the chunked draw compiled; (B) SUBS: the old full float32
log_p_x0 vs the lazy rows the loop now reads; (C) the AR energy's token log-probs, eager vs fused in the
compiled forward; (D) a kernel profile of the compiled DiT forward (B = 32, L = 1024); later sections: (E) the
loop's draw from bf16 logits, (F) compile modes, (G) the loop profile, (H) the GELU epilogue, (I) the compiled AR
profile, (J) the fused attention residual (not run yet).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import traceback
from pathlib import Path

import torch

from edlm.diffusion import categorical
from edlm.diffusion.subs import SubsLogProbs, subs_log_probs
from edlm.models.ar import ARTransformer
from edlm.models.dit import DiT

B, L, C, K = 32, 1024, 50258, 8
MASK = C - 1
RES: dict = {}


def timed(fn, warmup=2, reps=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def peak(fn):
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**30


def old_draw(log_probs, u):  # the draw before this session (one shot, no chunks)
    lp = log_probs.double()
    lp = lp - lp.amax(dim=-1, keepdim=True)
    if torch.isnan(lp).any():
        raise FloatingPointError
    cdf = torch.cumsum(torch.exp(lp), dim=-1)
    total = cdf[..., -1:]
    r = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, r.contiguous(), right=True).clamp_max(log_probs.shape[-1] - 1)


def kernel_profile(fn, top: int, reps: int = 3) -> dict:
    """GPU kernels of ``fn`` (profiled ``reps`` times): total ms per call and the ``top`` kernels
    as (ms per call, launches per call, name)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    rows = []
    for evt in prof.key_averages():
        us = getattr(evt, "self_device_time_total", 0) or 0
        if us and not evt.key.startswith("aten::"):
            rows.append((us / 1e3 / reps, evt.count / reps, evt.key[:110]))
    rows.sort(reverse=True)
    return {"kernel_ms_total": sum(x[0] for x in rows), "kernels_per_call": sum(x[1] for x in rows),
            "top": rows[:top]}


def section(name):
    def deco(fn):
        try:
            t = time.time()
            fn()
            RES.setdefault(name, {})["wall_s"] = time.time() - t
        except Exception as exc:  # noqa: BLE001
            RES.setdefault(name, {})["error"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        print(name, json.dumps(RES.get(name), default=str), flush=True)
    return deco


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--sections", default="A,B,C,D")
    args = ap.parse_args()
    want = set(args.sections.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    RES["device"] = torch.cuda.get_device_name()
    RES["torch"] = torch.__version__
    g = torch.Generator(device=dev).manual_seed(0)
    logits = (2 * torch.randn(B, L, C, device=dev, generator=g)).bfloat16()
    x_t = torch.full((B, L), MASK, device=dev)

    def section_if(name):
        return section(name) if name.split("_")[0] in want else (lambda fn: fn)

    @section_if("A_draw")
    def _():
        r = RES["A_draw"] = {}
        lp = SubsLogProbs(logits, x_t, MASK)[x_t == MASK]  # (32768, C) float32 rows
        u = torch.rand(lp.shape[0], K, device=dev, dtype=torch.float64, generator=g)
        ref = old_draw(lp, u)
        r["old_ms"], r["old_peak_gib"] = timed(lambda: old_draw(lp, u), 1, 3), peak(lambda: old_draw(lp, u))
        categorical.compile_draws(False)
        new = categorical.sample_categorical(lp, u)
        r["chunked_ms"] = timed(lambda: categorical.sample_categorical(lp, u), 1, 3)
        r["chunked_peak_gib"] = peak(lambda: categorical.sample_categorical(lp, u))
        r["chunked_equal_old"] = float((new == ref).double().mean())
        categorical.compile_draws(True)
        t = time.time()
        comp = categorical.sample_categorical(lp, u)
        r["compile_s"] = time.time() - t
        r["compiled_ms"] = timed(lambda: categorical.sample_categorical(lp, u), 1, 3)
        r["compiled_peak_gib"] = peak(lambda: categorical.sample_categorical(lp, u))
        r["compiled_equal_old"] = float((comp == ref).double().mean())
        half = lp[: lp.shape[0] // 2]
        r["compiled_half_rows_ms"] = timed(lambda: categorical.sample_categorical(half, u[: half.shape[0]]), 1, 3)
        categorical.compile_draws(False)
        r["chunked_half_rows_ms"] = timed(lambda: categorical.sample_categorical(half, u[: half.shape[0]]), 1, 3)

    @section_if("B_subs")
    def _():
        r = RES["B_subs"] = {}
        r["old_full_fp32_ms"] = timed(lambda: subs_log_probs(logits, x_t, MASK))
        r["lazy_all_rows_ms"] = timed(lambda: SubsLogProbs(logits, x_t, MASK)[x_t == MASK])
        few = torch.rand(B, L, device=dev, generator=g) < 1 / 128  # a T = 128 plain step reveals ~L/T per row
        r["lazy_reveal_rows_T128_ms"] = timed(lambda: SubsLogProbs(logits, x_t, MASK)[few])
        x0 = torch.randint(0, C - 1, (B * K, L), device=dev, generator=g)
        lazy = SubsLogProbs(logits, x_t, MASK)
        lazy[x_t == MASK]
        rows_of = torch.arange(B * K, device=dev) // K
        r["lazy_gather_256_proposals_ms"] = timed(lambda: lazy[rows_of].gather(-1, x0[..., None]))

    @section_if("C_ar_score")
    def _():
        r = RES["C_ar_score"] = {}
        ar = ARTransformer(C, L, 768, 12, 12, dropout=0.0, mask_id=MASK).to(dev, torch.bfloat16).eval()
        torch.nn.init.normal_(ar.output_layer.linear.weight, std=0.02)
        x = torch.randint(0, C - 1, (16, L), device=dev, generator=g)
        with torch.no_grad():
            r["eager_logits_ms"] = timed(lambda: ar(x))
            r["eager_score_ms"] = timed(lambda: ar.token_log_probs(x))
            ref = ar.token_log_probs(x)
            ar.compile()
            t = time.time()
            got = ar.token_log_probs(x)
            r["compile_s"] = time.time() - t
            r["compiled_score_ms"] = timed(lambda: ar.token_log_probs(x))
            r["compiled_logits_ms"] = timed(lambda: ar(x))
            r["max_abs_diff"] = float((got - ref).abs().max())

    @section_if("D_profile")
    def _():
        r = RES["D_profile"] = {}
        dit = DiT(C, L, 768, 12, 12, 128, dropout=0.0)
        for p in dit.parameters():
            torch.nn.init.normal_(p, std=0.02)
        dit = dit.to(dev, torch.bfloat16).eval()
        dit.compile()
        x = torch.randint(0, C, (B, L), device=dev, generator=g)
        sigma = torch.zeros(B, device=dev)
        with torch.no_grad():
            r["compiled_fwd_ms"] = timed(lambda: dit(x, sigma), 3, 10)
            r.update(kernel_profile(lambda: dit(x, sigma), top=25))

    @section_if("E_lazy_draw")
    def _():  # the loop's IS draw since the lazy SUBS: straight from the bf16 logits, [MASK] excluded
        r = RES["E_lazy_draw"] = {}
        u = torch.rand(B * L, K, device=dev, dtype=torch.float64, generator=g)
        masked = x_t == MASK
        ref = old_draw(subs_log_probs(logits, x_t, MASK)[masked], u)
        for compiled in (False, True):
            categorical.compile_draws(compiled)
            name = "compiled" if compiled else "eager"
            got = SubsLogProbs(logits, x_t, MASK).sample(masked, u)
            r[f"{name}_all_masked_ms"] = timed(lambda: SubsLogProbs(logits, x_t, MASK).sample(masked, u), 1, 3)
            r[f"{name}_peak_gib"] = peak(lambda: SubsLogProbs(logits, x_t, MASK).sample(masked, u))
            r[f"{name}_equal_old_fraction"] = float((got == ref).double().mean())
            half = masked & (torch.rand(B, L, device=dev, generator=g) < 0.5)
            uh = u[: int(half.sum())]
            r[f"{name}_half_masked_ms"] = timed(lambda h=half, uh=uh: SubsLogProbs(logits, x_t, MASK).sample(h, uh), 1, 3)
        categorical.compile_draws(False)

    @section_if("F_modes")
    def _():  # DiT forward under other torch.compile modes
        r = RES["F_modes"] = {}
        x = torch.randint(0, C, (B, L), device=dev, generator=g)
        sigma = torch.zeros(B, device=dev)
        for mode in ("reduce-overhead", "max-autotune-no-cudagraphs"):
            torch._dynamo.reset()
            dit = DiT(C, L, 768, 12, 12, 128, dropout=0.0)
            for p in dit.parameters():
                torch.nn.init.normal_(p, std=0.02)
            dit = dit.to(dev, torch.bfloat16).eval()
            dit.compile(mode=mode)
            with torch.no_grad():
                t = time.time()
                dit(x, sigma)
                torch.cuda.synchronize()
                r[f"{mode}_compile_s"] = time.time() - t
                r[f"{mode}_fwd_ms"] = timed(lambda m=dit: m(x, sigma), 3, 10)
            print(mode, r, flush=True)

    @section_if("G_loop")
    def _():  # where an MDLM step's time outside the DiT goes (host ops, syncs, small kernels)
        from torch.profiler import ProfilerActivity, profile

        from edlm import generate
        from edlm.diffusion.schedules import LogLinearSchedule
        from edlm.models.dit import Denoiser
        r = RES["G_loop"] = {}
        dit = DiT(C, L, 768, 12, 12, 128, dropout=0.0)
        for p in dit.parameters():
            torch.nn.init.normal_(p, std=0.02)
        den = Denoiser(dit, LogLinearSchedule(), MASK).to(dev, torch.bfloat16).eval()
        den.backbone.compile(dynamic=False)
        categorical.compile_draws(True)
        run = lambda T: generate(den, L, B, C - 1, MASK, T, generator=torch.Generator(device=dev).manual_seed(0))  # noqa: E731
        run(8)
        torch.cuda.synchronize()
        t = time.perf_counter()
        o = run(64)
        r["mdlm_T64_s"] = time.perf_counter() - t
        r["nfe"] = o.nfe_denoiser
        fwd = timed(lambda: den(torch.full((B, L), MASK, device=dev), torch.ones(B, device=dev)), 2, 5)
        r["fwd_ms"] = fwd
        r["overhead_ms_per_nfe"] = (r["mdlm_T64_s"] * 1e3 - fwd * o.nfe_denoiser) / o.nfe_denoiser
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            run(16)
            torch.cuda.synchronize()
        rows = []
        for evt in prof.key_averages():
            rows.append((evt.self_cpu_time_total / 1e3, evt.count, getattr(evt, "self_device_time_total", 0) / 1e3,
                         evt.key[:80]))
        rows.sort(reverse=True)
        r["top_cpu_ms"] = rows[:30]
        categorical.compile_draws(False)

    @section_if("H_gelu")
    def _():  # GELU in the GEMM epilogue (DiTBlock.fuse_gelu): speed and difference, compiled, B = 32
        from edlm.models.dit import DiTBlock
        r = RES["H_gelu"] = {}
        x = torch.randint(0, C, (B, L), device=dev, generator=g)
        sigma = torch.zeros(B, device=dev)
        outs = {}
        for fused in (False, True):
            torch._dynamo.reset()
            DiTBlock.fuse_gelu = fused
            torch.manual_seed(0)
            dit = DiT(C, L, 768, 12, 12, 128, dropout=0.0)
            for p in dit.parameters():
                torch.nn.init.normal_(p, std=0.02)
            dit = dit.to(dev, torch.bfloat16).eval()
            with torch.no_grad():
                outs[fused] = dit(x, sigma).float()
                r[f"eager_fused={fused}_ms"] = timed(lambda m=dit: m(x, sigma), 2, 5)
                dit.compile(dynamic=False)
                r[f"compiled_fused={fused}_ms"] = timed(lambda m=dit: m(x, sigma), 3, 10)
                r[f"compiled_fused={fused}_again_ms"] = timed(lambda m=dit: m(x, sigma), 3, 10)
            print(r, flush=True)
        r["max_abs_diff_eager_logits"] = float((outs[True] - outs[False]).abs().max())
        r["logit_std"] = float(outs[False].std())
        DiTBlock.fuse_gelu = True

    @section_if("I_arprof")
    def _():  # kernels of the compiled AR forward (B = 32): why it is slower than the DiT's
        r = RES["I_arprof"] = {}
        ar = ARTransformer(C, L, 768, 12, 12, dropout=0.0, mask_id=MASK)
        for p in ar.parameters():
            torch.nn.init.normal_(p, std=0.02)
        ar = ar.to(dev, torch.bfloat16).eval()
        ar.compile(dynamic=False)
        x = torch.randint(0, C - 1, (B, L), device=dev, generator=g)
        with torch.no_grad():
            r["compiled_fwd_ms"] = timed(lambda: ar(x), 3, 10)
            r.update(kernel_profile(lambda: ar(x), top=16))

    @section_if("J_residual")
    def _():  # DiTBlock.fuse_residual (off by default until measured): DiT and NCE, compiled, B = 32
        from edlm.energy.nce_energy import NCEEnergy
        from edlm.models.dit import DiTBlock
        r = RES["J_residual"] = {}
        x = torch.randint(0, C - 1, (B, L), device=dev, generator=g)
        xt = torch.where(torch.rand(B, L, device=dev, generator=g) < 0.5, MASK, x)
        sigma, t = torch.zeros(B, device=dev), torch.full((B,), 0.5, device=dev)
        outs = {}
        for fused in (False, True):
            DiTBlock.fuse_residual = fused
            for name, make, call in (("dit", lambda: DiT(C, L, 768, 12, 12, 128, dropout=0.0), lambda m: m(x, sigma)),
                                     ("nce", lambda: NCEEnergy(C, L, 768, 12, 12, 128, dropout=0.0, mask_id=MASK),
                                      lambda m: m(x, xt, t))):
                torch._dynamo.reset()
                torch.manual_seed(0)
                net = make()
                for p in net.parameters():
                    torch.nn.init.normal_(p, std=0.02)
                net = net.to(dev, torch.bfloat16).eval()
                with torch.no_grad():
                    outs[(name, fused)] = call(net).float()
                    net.compile(dynamic=False)
                    r[f"{name}_fused={fused}_ms"] = timed(lambda m=net, f=call: f(m), 3, 10)
                print(r, flush=True)
        DiTBlock.fuse_residual = False
        for name in ("dit", "nce"):
            r[f"{name}_max_abs_diff"] = float((outs[(name, True)] - outs[(name, False)]).abs().max())
            r[f"{name}_out_std"] = float(outs[(name, False)].std())

    (out / "probe.json").write_text(json.dumps(RES, indent=1, default=str))


if __name__ == "__main__":
    main()
