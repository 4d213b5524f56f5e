"""Session-5 probe (issue #7) on the GPU: where the compiled NCE forward's last 0.7 ms per call are.

  PYTHONPATH=. python3 benchmarks/gpu/probe_s5.py --out $OUT/probe [--sections Q,C,V] [--smoke]

Sections: (Q) the block's GEMMs alone at B · L = 32 768 tokens — cuBLASLt with its GELU epilogue, plain
addmm / mm, and inductor's Triton GEMM templates (max-autotune, GELU fused into the template's epilogue) —
ms and TFLOP/s each; (C) the compiled NCE forward's generated code (written to nce_output_code.py), the host
time of one call's dispatch, and which host calls launch its memsets (profiler stacks); (V) the NCE forward
(B = 32 and 64) per call and back to back under: the defaults, CUDA graphs (``reduce-overhead``, the output
cloned before the next replay), and max-autotune with the GELU left to inductor (``fuse_gelu`` off);
(G) the same for the second version of the kernel and inductor's multi-kernel (persistent and looped
reductions both compiled, the faster kept); (H, session 6) multi-kernel benchmarked and with persistent reductions
forced, against the defaults, with kernel profiles and which of the NCE's reductions are persistent; (T, session 6)
TunableOp (cuBLAS / cuBLASLt candidates timed per GEMM shape); (R, session 6) the rotary step written four ways; (W, session 6) inductor's C++ wrapper
against the Python one, on the MDLM-small NCE (B = 32, 64) and on the shipped NCE's shape (B = 256, host-bound); (F) this session's changes one at a time — the cached rotary table, ``add_norm_modulate`` (``DiTBlock.fuse_norm``),
inductor without its size / alignment asserts, then CUDA graphs — for NCE (B = 32, 64), DiT and AR (B = 32):
ms per call, back to back, host dispatch, largest output difference to the session-4 code.
"""

from __future__ import annotations

import collections
import json
import re
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import probe_s4  # noqa: E402
from probe_s3 import RES, kernel_profile  # noqa: E402
from probe_s4 import build, network_calls, setup, streamed, sync, timed  # noqa: E402

from edlm.models import dit as dit_module  # noqa: E402
from edlm.models.dit import DiTBlock  # noqa: E402

CUDA = torch.cuda.is_available()


def tflops(flop: float, ms: float) -> float:
    return flop / (ms * 1e-3) / 1e12


def call_timings(key: str, fn) -> dict:
    """``fn`` timed four ways, under ``key + "_…"``: ms per synchronised call, ms back to back, ms per call again, and
    the host's time to dispatch one call (median of 7, synchronised before and after)."""
    r = {key + "_ms": timed(fn, 3, 15), key + "_stream_ms": streamed(fn, 15), key + "_ms_again": timed(fn, 2, 15)}
    host = []
    for _ in range(7):
        sync()
        t0 = time.perf_counter()
        fn()
        host.append((time.perf_counter() - t0) * 1e3)
        sync()
    r[key + "_host_dispatch_ms"] = sorted(host)[3]
    return r


def kernel_kinds(codes: list[str]) -> list[list[str]]:
    """(kind, kernel name) of each Triton kernel in inductor's generated code: pointwise, reduction (looped) or
    persistent_reduction, read from the ``@triton_heuristics.<kind>(`` decorator before each ``def triton_``."""
    kinds = []
    for code in codes:
        for m in re.finditer(r"@triton_heuristics\.(\w+)\((?:.|\n)*?def (triton_\w+)\(", code):
            kinds.append([m.group(1), m.group(2)[:90]])
    return kinds


def rotary_forms() -> dict:
    """The rotary step x (B, L, H, Dh), cos, sin (L, Dh/2) -> x rotated, in x's dtype, written four ways (session 6)."""
    cat_halves = dit_module.apply_rotary  # edlm's (bound here: section R patches the module attribute; session 6's
    # call 3 looked it up at call time and recursed, so its NCE rows for this form failed)

    def roll_signed(x, cos, sin):  # x·[cos, cos] + roll(x, Dh/2)·[−sin, sin]: one unmasked load of each half
        half = x.shape[-1] // 2
        xf = x.float()
        sign = torch.where(torch.arange(2 * half, device=x.device) < half, -1.0, 1.0)
        c, s_ = cos.repeat(1, 2)[None, :, None], (sin.repeat(1, 2) * sign)[None, :, None]
        return (xf * c + xf.roll(half, -1) * s_).to(x.dtype)

    def stack_pairs(x, cos, sin):  # the two halves as a (2, Dh/2) view, stacked back
        xf = x.float().unflatten(-1, (2, -1))
        x1, x2 = xf[..., 0, :], xf[..., 1, :]
        c, s_ = cos[None, :, None], sin[None, :, None]
        return torch.stack((x1 * c - x2 * s_, x2 * c + x1 * s_), -2).flatten(-2).to(x.dtype)

    def halves_into_slices(x, cos, sin):  # each half computed alone, written into its slice of one buffer
        half = x.shape[-1] // 2
        xf = x.float()
        x1, x2 = xf[..., :half], xf[..., half:]
        c, s_ = cos[None, :, None], sin[None, :, None]
        out = torch.empty_like(x)
        out[..., :half] = (x1 * c - x2 * s_).to(x.dtype)
        out[..., half:] = (x2 * c + x1 * s_).to(x.dtype)
        return out

    return {"cat_halves": cat_halves, "roll_signed": roll_signed, "stack_pairs": stack_pairs,
            "halves_into_slices": halves_into_slices}


def main():
    args, out = probe_s4.parse_probe_args("Q,C,V")
    dev, g, section_if = setup(args.sections)
    dt = torch.bfloat16 if CUDA else torch.float32
    import torch._inductor.config as ic

    @section_if("Q_gemm")
    def _():
        r = RES["Q_gemm"] = {}
        M = probe_s4.B * probe_s4.L
        D = 768 if CUDA else 64
        x = torch.randn(M, D, device=dev, generator=g).to(dt)
        shapes = {"qkv": (3 * D, False), "attn_out": (D, False), "mlp_up": (4 * D, True)}
        for name, (N, bias) in shapes.items():
            w = (torch.randn(N, D, device=dev, generator=g) * 0.02).to(dt)
            b = (torch.randn(N, device=dev, generator=g) * 0.02).to(dt) if bias else None
            flop = 2.0 * M * N * D
            cands = {"mm": lambda w=w: x @ w.t()}
            if bias:
                cands["addmm"] = lambda w=w, b=b: torch.addmm(b, x, w.t())
                if CUDA:
                    cands["cublaslt_gelu_epilogue"] = lambda w=w, b=b: dit_module.addmm_gelu(b, x, w.t())
                cands["addmm_then_gelu_eager"] = lambda w=w, b=b: F.gelu(torch.addmm(b, x, w.t()), approximate="tanh")

            def fused(x, w, b=b):
                y = F.linear(x, w, b)
                return F.gelu(y, approximate="tanh") if b is not None else y

            for mode, backends in (("default", None), ("max_autotune_triton", "TRITON"),
                                   ("max_autotune_any", "ATEN,TRITON")):
                if not CUDA and mode != "default":
                    continue
                torch._dynamo.reset()
                saved = {k: getattr(ic, k) for k in ("max_autotune", "max_autotune_gemm_backends")}
                saved_tma = getattr(ic.triton, "enable_persistent_tma_matmul", None)
                try:
                    if backends:
                        ic.max_autotune, ic.max_autotune_gemm_backends = True, backends
                        if saved_tma is not None:
                            ic.triton.enable_persistent_tma_matmul = True
                    f = torch.compile(fused, dynamic=False)
                    t0 = time.time()
                    ref = f(x, w)
                    r[f"{name}_compiled_{mode}_compile_s"] = time.time() - t0
                    cands[f"compiled_{mode}"] = (lambda f=f, w=w: f(x, w))
                    ms = timed(lambda f=f, w=w: f(x, w), 3, 20)
                    r[f"{name}_compiled_{mode}_ms"] = ms
                    r[f"{name}_compiled_{mode}_tflops"] = tflops(flop, ms)
                    r[f"{name}_compiled_{mode}_max_diff"] = float((ref.float() - fused(x, w).float()).abs().max())
                except Exception as exc:  # noqa: BLE001
                    r[f"{name}_compiled_{mode}_error"] = f"{type(exc).__name__}: {exc}"[:300]
                finally:
                    for k, v in saved.items():
                        setattr(ic, k, v)
                    if saved_tma is not None:
                        ic.triton.enable_persistent_tma_matmul = saved_tma
            for cand, fn in cands.items():
                if cand.startswith("compiled_"):
                    continue
                ms = timed(fn, 3, 20)
                r[f"{name}_{cand}_ms"], r[f"{name}_{cand}_tflops"] = ms, tflops(flop, ms)
            print(name, {k: v for k, v in r.items() if k.startswith(name)}, flush=True)
        if CUDA:
            n = 8192
            a = torch.randn(n, n, device=dev, dtype=dt)
            ms = timed(lambda: a @ a, 3, 20)
            r["square_8192_ms"], r["square_8192_tflops"] = ms, tflops(2.0 * n ** 3, ms)

    @section_if("C_code")
    def _():
        r = RES["C_code"] = {}
        from torch._inductor.utils import run_and_get_code

        call = network_calls(dev, g)["nce"]
        torch._dynamo.reset()
        net = build("nce", dev)
        with torch.no_grad():
            net.compile(dynamic=False)
            _, codes = run_and_get_code(lambda: call(net))
            (out / "nce_output_code.py").write_text("\n\n# ---- next graph ----\n\n".join(codes))
            r["graphs"] = len(codes)
            r["triton_kernels"] = sum(c.count("@triton.jit") for c in codes)
            fn = (lambda: call(net))
            r["ms"], r["stream_ms"] = timed(fn, 3, 10), streamed(fn, 10)
            host = []
            for _ in range(10):  # host time to dispatch one call (no sync inside)
                sync()
                t0 = time.perf_counter()
                fn()
                host.append((time.perf_counter() - t0) * 1e3)
                sync()
            r["host_dispatch_ms"] = sorted(host)[len(host) // 2]
            if CUDA:
                from torch.profiler import ProfilerActivity, profile

                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_stack=True) as prof:
                    for _ in range(2):
                        fn()
                    sync()
                stacks = collections.Counter()
                kernels = []
                for evt in prof.events():
                    if evt.name in ("cudaMemsetAsync", "cuMemsetD8Async", "cuMemsetD32Async"):
                        parent = evt.cpu_parent.name if evt.cpu_parent is not None else "-"
                        stacks[(parent, tuple(s for s in (evt.stack or [])[:3]))] += 1
                    if getattr(evt, "device_type", None) == torch.autograd.DeviceType.CUDA:
                        kernels.append((evt.time_range.start, evt.time_range.end, evt.name))
                r["memset_sources"] = [[n / 2, p, list(s)] for (p, s), n in stacks.most_common(12)]
                kernels.sort()
                gaps = collections.Counter()
                idle = 0.0
                for (_, e0, n0), (s1, _, n1) in zip(kernels, kernels[1:]):
                    gap = max(0.0, s1 - e0)
                    if gap < 2000:  # µs; larger gaps are between the two profiled calls
                        idle += gap
                        gaps[(n0[:40], n1[:40])] += gap
                r["gpu_idle_between_kernels_ms_per_call"] = idle / 2e3
                r["largest_gaps_us_per_call"] = [[round(v / 2, 1), a, b] for (a, b), v in gaps.most_common(15)]
                r["profile"] = kernel_profile(fn, top=14)

    @section_if("V_variants")
    def _():
        r = RES["V_variants"] = {}
        calls = network_calls(dev, g)
        variants = {"defaults": dict(mode=None), "reduce_overhead": dict(mode="reduce-overhead"),
                    "max_autotune_gelu_to_inductor": dict(mode="max-autotune-no-cudagraphs", fuse_gelu=False)}
        batches = (probe_s4.B, 2 * probe_s4.B)
        ref = {}
        for variant, sw in variants.items():
            if not CUDA and variant != "defaults":
                continue
            for batch in batches[:1] if variant.startswith("max_autotune") else batches:
                key = f"{variant}_B{batch}"
                DiTBlock.fuse_gelu = sw.get("fuse_gelu", True)
                saved_b = probe_s4.B
                try:
                    probe_s4.B = batch
                    call = network_calls(dev, torch.Generator(device=dev).manual_seed(1))["nce"]
                    torch._dynamo.reset()
                    net = build("nce", dev)
                    with torch.no_grad():
                        net.compile(dynamic=False, mode=sw["mode"])
                        t0 = time.time()
                        res = call(net).float().clone()
                        r[key + "_compile_s"] = time.time() - t0
                        ref.setdefault(batch, res)
                        r[key + "_max_diff"] = float((res - ref[batch]).abs().max())

                        def fn(net=net, call=call):
                            return call(net).clone()  # a replay overwrites the graph's output buffer

                        r[key + "_ms"] = timed(fn, 3, 15)
                        r[key + "_stream_ms"] = streamed(fn, 15)
                        r[key + "_ms_again"] = timed(fn, 2, 15)
                except Exception as exc:  # noqa: BLE001
                    r[key + "_error"] = f"{type(exc).__name__}: {exc}"[:300]
                finally:
                    probe_s4.B = saved_b
                    DiTBlock.fuse_gelu = True
                print(key, {k: v for k, v in r.items() if k.startswith(key)}, flush=True)
        del calls

    def compare_variants(r: dict, variants: dict, runs: list, profile_variant: str | tuple[str, ...]) -> None:
        """Each (model, batch) of ``runs`` under each variant (rotary table cached, DiTBlock.fuse_norm, inductor's
        size / alignment asserts kept, compile mode, inductor multi-kernel): compile, then ms per call, back to
        back and the host's dispatch time, and the largest output difference to the first variant."""
        asserts = [k for k in ("size_asserts", "alignment_asserts") if hasattr(ic, k)]
        ref = {}
        for name, batch in runs:
            for variant, spec in variants.items():
                table, fuse, keep_asserts, mode, multi = spec[:5]
                tunable = len(spec) > 5 and spec[5]  # session 6: TunableOp on while this variant compiles and runs
                if mode is not None and name != "nce":
                    continue
                key = f"{name}_B{batch}_{variant}"
                saved_b, saved = probe_s4.B, {k: getattr(ic, k) for k in asserts}
                saved_multi = ic.triton.multi_kernel
                try:
                    probe_s4.B = batch
                    DiTBlock.fuse_norm = fuse
                    for k in asserts:
                        setattr(ic, k, keep_asserts)
                    ic.triton.multi_kernel = multi
                    if tunable:
                        torch.cuda.tunable.enable(True)
                        torch.cuda.tunable.tuning_enable(True)
                    call = network_calls(dev, torch.Generator(device=dev).manual_seed(1))[name]
                    torch._dynamo.reset()
                    net = build(name, dev)
                    if not table:
                        net.rotary_emb.max_len, net.rotary_emb._table = 0, None
                    with torch.no_grad():
                        net.compile(dynamic=False, mode=mode)
                        t0 = time.time()
                        if CUDA and name == "nce" and batch == probe_s4.B:  # which reductions are persistent
                            from torch._inductor.utils import run_and_get_code

                            res, codes = run_and_get_code(lambda net=net, call=call: call(net))
                            r[key + "_kernel_kinds"] = kernel_kinds(codes)
                        else:
                            res = call(net)
                        res = res.float().nan_to_num(0.0, posinf=0.0, neginf=0.0)  # AR: [MASK] is −∞
                        r[key + "_compile_s"] = time.time() - t0
                        ref.setdefault((name, batch), res)
                        r[key + "_max_diff"] = float((res - ref[(name, batch)]).abs().max())
                        r[key + "_out_std"] = float(res.std())

                        def fn(net=net, call=call):
                            return call(net).clone()  # a CUDA-graph replay overwrites its output buffer

                        r.update(call_timings(key, fn))
                        if CUDA and name == "nce" and variant in (
                                (profile_variant,) if isinstance(profile_variant, str) else profile_variant):
                            r[key + "_profile"] = kernel_profile(fn, top=14)
                            torch._dynamo.reset()
                            model = build(name, dev)
                            ex = torch._dynamo.explain(lambda m=model, f=call: f(m))()
                            r[key + "_graphs"], r[key + "_breaks"] = ex.graph_count, ex.graph_break_count
                except Exception as exc:  # noqa: BLE001
                    r[key + "_error"] = f"{type(exc).__name__}: {exc}"[:400]
                finally:
                    probe_s4.B = saved_b
                    DiTBlock.fuse_norm = False
                    for k, v in saved.items():
                        setattr(ic, k, v)
                    ic.triton.multi_kernel = saved_multi
                    if tunable:
                        torch.cuda.tunable.enable(False)
                print(key, {k: v for k, v in r.items() if k.startswith(key) and not k.endswith("profile")}, flush=True)
        if CUDA:
            from edlm.models import _triton_kernels

            r["autotuned_config"] = str(getattr(_triton_kernels.add_norm_modulate_kernel, "best_config", None))

    @section_if("F_fused")
    def _():  # this session's changes one at a time: the cached rotary table, add_norm_modulate, no size asserts
        compare_variants(RES.setdefault("F_fused", {}), {
            "session4": (False, False, True, None, 0),
            "rotary_table": (True, False, True, None, 0),
            "fused_norm": (True, True, True, None, 0),
            "fused_norm_no_asserts": (True, True, False, None, 0),
            "fused_norm_no_asserts_cudagraphs": (True, True, False, "reduce-overhead", 0),
        }, [("nce", probe_s4.B), ("nce", 2 * probe_s4.B), ("dit", probe_s4.B), ("ar", probe_s4.B)],
            profile_variant="fused_norm_no_asserts")

    @section_if("G_again")
    def _():  # call 3: the kernel with D fixed at compile time and more configs; inductor's multi-kernel
        compare_variants(RES.setdefault("G_again", {}), {
            "rotary_table": (True, False, True, None, 0),
            "rotary_table_multi_kernel": (True, False, True, None, 1),
            "fused_norm_v2": (True, True, True, None, 0),
            "fused_norm_v2_multi_kernel": (True, True, True, None, 1),
            "rotary_table_again": (True, False, True, None, 0),
        }, [("nce", probe_s4.B), ("nce", 2 * probe_s4.B), ("dit", probe_s4.B), ("ar", probe_s4.B)],
            profile_variant="fused_norm_v2")

    @section_if("H_multi")
    def _():  # session 6: inductor's multi-kernel (B = 64 gained 1.05 ms per call in G), benchmarked (1) and with
        # persistent reductions forced (2), against the defaults; kernel profiles and kernel kinds of the NCE's
        r = RES.setdefault("H_multi", {})
        compare_variants(r, {
            "defaults": (True, False, True, None, 0),
            "multi_kernel": (True, False, True, None, 1),
            "force_persistent": (True, False, True, None, 2),
            "defaults_again": (True, False, True, None, 0),
            "force_persistent_again": (True, False, True, None, 2),
        }, [("nce", probe_s4.B), ("nce", 2 * probe_s4.B)],
            profile_variant=("defaults", "multi_kernel", "force_persistent"))
        compare_variants(r, {
            "defaults": (True, False, True, None, 0),
            "force_persistent": (True, False, True, None, 2),
        }, [("dit", probe_s4.B), ("ar", probe_s4.B)], profile_variant=())

    @section_if("T_tunable")
    def _():  # session 6: TunableOp (each GEMM shape's cuBLAS / cuBLASLt candidates timed on first use) on the NCE
        r = RES.setdefault("T_tunable", {})
        if not CUDA:
            return
        torch.cuda.tunable.set_filename(str(out / "tunableop_results.csv"))
        compare_variants(r, {
            "defaults": (True, False, True, None, 0),
            "tunable": (True, False, True, None, 0, True),
            "tunable_again": (True, False, True, None, 0, True),
            "defaults_again": (True, False, True, None, 0),
        }, [("nce", probe_s4.B), ("nce", 2 * probe_s4.B)], profile_variant=("tunable",))
        r["results"] = [list(map(str, x)) for x in torch.cuda.tunable.get_results()]
        r["validators"] = [list(map(str, x)) for x in torch.cuda.tunable.get_validators()]

    @section_if("R_rotary")
    def _():  # session 6: the rotary step written four ways — its compiled kernel alone, then the NCE with the best
        # (the NCE rows compare across compare_variants calls: their max_diff is each call's own, always 0)
        r = RES.setdefault("R_rotary", {})
        forms = rotary_forms()
        M, D, H = probe_s4.B * probe_s4.L, (768 if CUDA else 64), (12 if CUDA else 2)
        qkv = torch.randn(probe_s4.B, probe_s4.L, 3, H, D // H, device=dev, generator=g).to(dt)
        cos, sin = dit_module.Rotary(D // H, max_len=probe_s4.L).to(dev)(probe_s4.L, dev)
        ref = None
        for name, rot in forms.items():
            def step(rot=rot):
                q, k, _ = qkv.unbind(2)
                return rot(q, cos, sin), rot(k, cos, sin)

            torch._dynamo.reset()
            f = torch.compile(step, dynamic=False)
            q, k = f()
            ref = ref if ref is not None else (q.float(), k.float())
            r[f"{name}_max_diff"] = max(float((q.float() - ref[0]).abs().max()), float((k.float() - ref[1]).abs().max()))
            r[f"{name}_ms"] = timed(f, 3, 30)
            r[f"{name}_tbs"] = 4 * M * D * qkv.element_size() / (r[f"{name}_ms"] * 1e-3) / 1e12  # q, k read + written
            print(name, {k: v for k, v in r.items() if k.startswith(name)}, flush=True)
        best = min((n for n in forms if n != "cat_halves"), key=lambda n: r[f"{n}_ms"])
        r["best"] = best
        saved = dit_module.apply_rotary
        try:
            for variant in ("cat_halves", best, "cat_halves_again", best + "_again"):
                dit_module.apply_rotary = forms[variant.removesuffix("_again")]
                compare_variants(r, {variant: (True, False, True, None, 1)}, [("nce", probe_s4.B), ("nce", 2 * probe_s4.B)],
                                 profile_variant=(best,))
        finally:
            dit_module.apply_rotary = saved

    @section_if("W_wrapper")
    def _():  # session 6: inductor's C++ wrapper (the compiled graph launches its kernels from C++, not Python)
        r = RES.setdefault("W_wrapper", {})
        from edlm.energy.nce_energy import NCEEnergy
        from edlm.models.compiling import INFERENCE_OPTIONS, compile_networks

        big = (probe_s4.C, probe_s4.L, 768, 12, 12) if CUDA else (probe_s4.C, probe_s4.L, 64, 2, 2)
        shipped = (4096, 128, 256, 6, 4) if CUDA else (512, 32, 32, 2, 2)  # edlm/assets/wikipedia_en's NCE
        variants = {"multi": dict(INFERENCE_OPTIONS), "multi_cpp_wrapper": {**INFERENCE_OPTIONS, "cpp_wrapper": True},
                    "multi_again": dict(INFERENCE_OPTIONS)}
        for label, (vocab, length, hidden, blocks, heads), batch in (
                ("nce", big, probe_s4.B), ("nce", big, 2 * probe_s4.B), ("shipped_nce", shipped, 256)):
            x = torch.randint(0, vocab - 1, (batch, length), device=dev, generator=g)
            xt = torch.where(torch.rand(batch, length, device=dev, generator=g) < 0.5, vocab - 1, x)
            t = torch.full((batch,), 0.5, device=dev)
            ref = None
            for variant, options in variants.items():
                key = f"{label}_B{batch}_{variant}"
                try:
                    torch._dynamo.reset()
                    torch.manual_seed(0)
                    net = NCEEnergy(vocab, length, hidden, blocks, heads, 128, dropout=0.0)
                    with torch.no_grad():
                        for prm in net.parameters():
                            prm.copy_(torch.randn_like(prm) * 0.02)
                        net = net.to(dev, dt).eval()
                        compile_networks(net, options=options)
                        t0 = time.time()
                        res = net(x, xt, t).float()
                        r[key + "_compile_s"] = time.time() - t0
                        ref = res if ref is None else ref
                        r[key + "_max_diff"] = float((res - ref).abs().max())

                        def fn(net=net, x=x, xt=xt, t=t):
                            return net(x, xt, t)

                        r.update(call_timings(key, fn))
                except Exception as exc:  # noqa: BLE001
                    r[key + "_error"] = f"{type(exc).__name__}: {exc}"[:400]
                print(key, {k: v for k, v in r.items() if k.startswith(key)}, flush=True)

    (out / "probe.json").write_text(json.dumps(RES, indent=1, default=str))


if __name__ == "__main__":
    main()
