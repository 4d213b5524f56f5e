"""Session-4 probe (issue #7) on the GPU: the two-level float64 draw against the one-level draw, and the
compiled DiT / NCE forwards under the remaining fusion switches, each timed per call (synchronised) and
back to back. Prints a log and writes probe.json to --out.

  PYTHONPATH=. python3 benchmarks/gpu/probe_s4.py --out $OUT/probe [--sections K,M,P]

Sections: (K) the draw of an IS step at all 32 768 masked positions of a 50 258-id vocabulary (k = 8 and
k = 2) and of a plain T = 128 step (256 rows, one draw each): one-level vs two-level, eager and compiled —
time, peak memory, ids equal to the one-level draw; (M) compiled DiT and NCE forwards at B = 32, L = 1024
for: the defaults, ``DiTBlock.fuse_residual``, inductor's ``aggressive_fusion`` and
``coordinate_descent_tuning``, SDPA without its cuDNN kernel — ms per call, ms back to back, largest output difference to the defaults;
(P) kernel profiles of the compiled NCE and DiT forwards (defaults); (G) graph breaks of the compiled forwards and
their fixes (flash-attn lookup at import, the GELU epilogue as an aten op / an opaque custom op / off): graphs,
break reasons, ms per call and back to back; (L) the loop profile of an EDLM-NCE run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_s3 import RES, kernel_profile, peak, section  # noqa: E402  (session 3's result dict, helpers)

from edlm.diffusion import categorical  # noqa: E402
from edlm.energy.nce_energy import NCEEnergy  # noqa: E402
from edlm.models.ar import ARTransformer  # noqa: E402
from edlm.models.dit import DiT, DiTBlock  # noqa: E402

B, L, C = 32, 1024, 50258
MASK = C - 1


CUDA = torch.cuda.is_available()


def sync():
    if CUDA:
        torch.cuda.synchronize()


class Clock:
    """CUDA events on a GPU, the host clock on CPU (--smoke)."""

    def __init__(self):
        self.a = torch.cuda.Event(enable_timing=True) if CUDA else None
        self.b = torch.cuda.Event(enable_timing=True) if CUDA else None

    def start(self):
        if CUDA:
            self.a.record()
        else:
            self.t = time.perf_counter()

    def ms(self):
        if CUDA:
            self.b.record()
            self.b.synchronize()
            return self.a.elapsed_time(self.b)
        return (time.perf_counter() - self.t) * 1e3


def timed(fn, warmup=2, reps=7):
    """Median ms per call, synchronised around each call."""
    for _ in range(warmup):
        fn()
    sync()
    ts = []
    for _ in range(reps):
        c = Clock()
        c.start()
        fn()
        ts.append(c.ms())
    return statistics.median(ts)


def streamed(fn, calls=10):
    """ms per call of ``calls`` calls back to back (events around them all)."""
    fn()
    sync()
    c = Clock()
    c.start()
    for _ in range(calls):
        fn()
    return c.ms() / calls


def peak_gib(fn):
    """probe_s3's peak memory of ``fn`` on a GPU; None on CPU (--smoke)."""
    return peak(fn) if CUDA else None


def build(name: str, dev):
    """A random-weight MDLM-small ``"dit"``, ``"nce"`` or ``"ar"`` (tiny on CPU), bf16 on a GPU."""
    torch.manual_seed(0)
    D, N = (768, 12) if CUDA else (64, 2)
    if name == "dit":
        net = DiT(C, L, D, N, N, 128, dropout=0.0)
    elif name == "nce":
        net = NCEEnergy(C, L, D, N, N, 128, dropout=0.0, mask_id=MASK)
    elif name == "ar":
        net = ARTransformer(C, L, D, N, N, dropout=0.0, mask_id=MASK)
    else:
        raise ValueError(f"unknown model {name!r}")
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.02)  # never time zero weights
    return net.to(dev, torch.bfloat16 if CUDA else torch.float32).eval()


def network_calls(dev, g) -> dict:
    """How each model is called in the forward sections: half-masked inputs at t = 0.5, B × L, drawn from ``g``."""
    x = torch.randint(0, C - 1, (B, L), device=dev, generator=g)
    xt = torch.where(torch.rand(B, L, device=dev, generator=g) < 0.5, MASK, x)
    sigma, t = torch.zeros(B, device=dev), torch.full((B,), 0.5, device=dev)
    return {"dit": lambda m: m(x, sigma), "nce": lambda m: m(x, xt, t), "ar": lambda m: m(x),
            "ar_score": lambda m: m(x, score=True)}  # the AR energy's call: (B, L) log-probabilities


def setup(sections: str):
    """What a probe's main does first: dynamo's recompile limit raised (the sections compile many variants), the
    card and torch version in RES, the device, a seeded generator, and the decorator that runs a section only when
    its letter is in ``sections`` (e.g. "K,M,P")."""
    want = set(sections.split(","))
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    dev = torch.device("cuda" if CUDA else "cpu")
    RES["device"] = torch.cuda.get_device_name() if CUDA else "cpu (smoke)"
    RES["torch"] = torch.__version__

    def section_if(name):
        return section(name) if name.split("_")[0] in want else (lambda fn: fn)

    return dev, torch.Generator(device=dev).manual_seed(0), section_if


def parse_probe_args(sections: str | None, configure=None):
    """The probes' common command line: ``--out`` (created), ``--smoke`` (tiny CPU shapes, set here as this module's
    B, L, C, MASK, which the probes read), ``--sections`` with ``sections`` as its default (None: no such option);
    ``configure(parser)`` adds a probe's own options. Returns (args, out directory)."""
    global B, L, C, MASK
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    if sections is not None:
        ap.add_argument("--sections", default=sections)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU: check that every section runs")
    if configure is not None:
        configure(ap)
    args = ap.parse_args()
    if args.smoke:
        B, L, C = 2, 32, 3000
        MASK = C - 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return args, out


def main():
    args, out = parse_probe_args("K,M,P")
    dev, g, section_if = setup(args.sections)

    @section_if("K_draw")
    def _():
        r = RES["K_draw"] = {}
        logits = (2 * torch.randn(B * L, C, device=dev, generator=g)).bfloat16()  # a denoiser call's rows
        flat_block = 1 << 40
        cases = {"is_k8": (torch.arange(B * L, device=dev), 8), "is_k2": (torch.arange(B * L, device=dev), 2),
                 "plain_T128": (torch.randperm(B * L, device=dev, generator=g)[:256], 1)}
        for case, (index, K) in cases.items():
            u = torch.rand(index.numel(), K, device=dev, dtype=torch.float64, generator=g)
            ids = {}
            for compiled in (False, True):
                for blocked in (False, True):
                    categorical.BLOCK = 256 if blocked else flat_block
                    categorical.compile_draws(compiled)
                    key = f"{case}_{'compiled' if compiled else 'eager'}_{'two_level' if blocked else 'flat'}"

                    def draw(u=u, index=index):
                        return categorical.draw_rows(logits, u, index=index, exclude=MASK)

                    t0 = time.time()
                    res = draw()
                    sync()
                    r[key + "_first_s"] = time.time() - t0
                    ids[(compiled, blocked)] = res
                    r[key + "_ms"] = timed(draw)
                    r[key + "_peak_gib"] = peak_gib(draw)
            ref = ids[(False, False)]
            for (compiled, blocked), res in ids.items():
                key = f"{case}_{'compiled' if compiled else 'eager'}_{'two_level' if blocked else 'flat'}"
                r[key + "_ids_equal_flat_eager"] = float((res.ids == ref.ids).double().mean())
                r[key + "_lse_max_diff"] = float((res.lse - ref.lse).abs().max())
            print(case, {k: v for k, v in r.items() if k.startswith(case)}, flush=True)
        categorical.BLOCK = 256
        categorical.compile_draws(False)

    @section_if("M_forward")
    def _():
        r = RES["M_forward"] = {}
        import torch._inductor.config as ic

        calls = network_calls(dev, g)
        variants = {
            "defaults": {},
            "fuse_residual": {"fuse_residual": True},
            "aggressive_fusion": {"aggressive_fusion": True},
            "coordinate_descent": {"coordinate_descent_tuning": True},
            "sdpa_without_cudnn": {"cudnn_sdp": False},  # SDPA then picks its flash kernel
        }
        ref = {}
        for name in ("nce", "dit"):
            for variant, switches in variants.items():
                DiTBlock.fuse_residual = switches.get("fuse_residual", False)
                if CUDA:
                    torch.backends.cuda.enable_cudnn_sdp(switches.get("cudnn_sdp", True))
                saved = {k: getattr(ic, k) for k in switches if hasattr(ic, k)}
                for k in saved:
                    setattr(ic, k, switches[k])
                try:
                    torch._dynamo.reset()
                    net = build(name, dev)
                    with torch.no_grad():
                        eager = calls[name](net).float()
                        net.compile(dynamic=False)
                        t0 = time.time()
                        out = calls[name](net).float()
                        r[f"{name}_{variant}_compile_s"] = time.time() - t0
                        if variant == "defaults":
                            ref[name] = out
                            r[f"{name}_compiled_vs_eager_max_diff"] = float((out - eager).abs().max())
                            r[f"{name}_out_std"] = float(out.std())
                        r[f"{name}_{variant}_max_diff"] = float((out - ref[name]).abs().max())
                        fn = (lambda m=net, f=calls[name]: f(m))
                        r[f"{name}_{variant}_ms"] = timed(fn, 3, 10)
                        r[f"{name}_{variant}_stream_ms"] = streamed(fn, 10)
                        r[f"{name}_{variant}_ms_again"] = timed(fn, 1, 10)
                finally:
                    for k, v in saved.items():
                        setattr(ic, k, v)
                    DiTBlock.fuse_residual = False
                    if CUDA:
                        torch.backends.cuda.enable_cudnn_sdp(True)
                print(name, variant, {k: v for k, v in r.items() if k.startswith(f"{name}_{variant}")}, flush=True)

    @section_if("P_profile")
    def _():
        r = RES["P_profile"] = {}
        calls = network_calls(dev, g)
        for name in ("nce", "dit"):
            call = calls[name]
            torch._dynamo.reset()
            net = build(name, dev)
            with torch.no_grad():
                net.compile(dynamic=False)
                fn = (lambda m=net, f=call: f(m))
                r[f"{name}_ms"] = timed(fn, 3, 10)
                r[f"{name}_stream_ms"] = streamed(fn, 10)
                if CUDA:
                    r[name] = kernel_profile(fn, top=24)

    @section_if("G_graphs")
    def _():  # graph breaks of the compiled forwards (session 3's code: ~3 graphs per block) and their fixes
        from edlm.models import dit as dit_module
        r = RES["G_graphs"] = {}
        calls = network_calls(dev, g)

        def private_binding(b, a, w):  # session 3: the private torch binding
            return torch._addmm_activation(b, a, w, use_gelu=True)

        def aten_op(b, a, w):
            return torch.ops.aten._addmm_activation.default(b, a, w, use_gelu=True)

        def inline_rotary(positions, head_dim, base):  # session 3: the table traced into the graph
            inv_freq = dit_module.rotary_inv_freq(head_dim, base, positions.device)
            angles = positions.float()[:, None] * inv_freq[None]
            return angles.cos(), angles.sin()

        import torch._inductor.config as ic

        # name: (_HAS_FLASH_ATTN, _gelu_epilogue, fuse_gelu, rotary_cos_sin, coordinate_descent_tuning)
        variants = {
            "session3": (True, private_binding, True, inline_rotary, False),
            "one_graph": (False, dit_module.addmm_gelu, True, dit_module.rotary_cos_sin, False),
            "one_graph_no_gelu_epilogue": (False, dit_module.addmm_gelu, False, dit_module.rotary_cos_sin, False),
            "one_graph_aten_gelu_op": (False, aten_op, True, dit_module.rotary_cos_sin, False),
            "one_graph_coordinate_descent": (False, dit_module.addmm_gelu, True, dit_module.rotary_cos_sin, True),
        }
        only = {"ar": ("session3", "one_graph"), "dit": ("session3", "one_graph", "one_graph_no_gelu_epilogue")}
        saved = (dit_module._HAS_FLASH_ATTN, dit_module._gelu_epilogue, DiTBlock.fuse_gelu, dit_module.rotary_cos_sin,
                 ic.coordinate_descent_tuning)

        def switch(flash, gelu, fuse, rotary, cdt):
            dit_module._HAS_FLASH_ATTN, dit_module._gelu_epilogue, DiTBlock.fuse_gelu = flash, gelu, fuse
            dit_module.rotary_cos_sin, ic.coordinate_descent_tuning = rotary, cdt

        models = {name: (lambda name=name: build(name, dev), calls[name]) for name in ("nce", "dit", "ar")}
        ref = {}
        for name, (make, call) in models.items():
            for variant, switches in variants.items():
                if variant not in only.get(name, variants):
                    continue
                switch(*switches)
                key = f"{name}_{variant}"
                try:
                    torch._dynamo.reset()
                    net = make()
                    with torch.no_grad():
                        ex = torch._dynamo.explain(lambda m=net, f=call: f(m))()
                        r[key + "_graphs"] = ex.graph_count
                        r[key + "_breaks"] = ex.graph_break_count
                        r[key + "_break_reasons"] = sorted({b.reason[:160] for b in ex.break_reasons})[:3]
                        torch._dynamo.reset()
                        net.compile(dynamic=False)
                        out = call(net).float()
                        ref.setdefault(name, out)
                        r[key + "_max_diff_vs_session3"] = float((out - ref[name]).abs().nan_to_num(0.0).max())
                        fn = (lambda m=net, f=call: f(m))
                        r[key + "_ms"] = timed(fn, 3, 10)
                        r[key + "_stream_ms"] = streamed(fn, 10)
                        r[key + "_ms_again"] = timed(fn, 1, 10)
                except Exception as exc:  # noqa: BLE001
                    r[key + "_error"] = f"{type(exc).__name__}: {exc}"[:300]
                finally:
                    switch(*saved)
                print(key, {k: v for k, v in r.items() if k.startswith(key)}, flush=True)
        torch._dynamo.reset()
        net = build("nce", dev)
        with torch.no_grad():
            net.compile(dynamic=False)
            fn = (lambda m=net, f=calls["nce"]: f(m))
            timed(fn, 3, 3)
            if CUDA:
                r["nce_one_graph_profile"] = kernel_profile(fn, top=20)

    @section_if("L_loop")
    def _():  # where an EDLM-NCE run's time outside the networks goes: GPU kernels by name, syncs, host ops
        from torch.profiler import ProfilerActivity, profile

        from edlm.diffusion.schedules import LogLinearSchedule
        from edlm.models.dit import Denoiser
        from edlm.samplers.loop import generate

        r = RES["L_loop"] = {}
        den = Denoiser(build("dit", dev), LogLinearSchedule(), MASK)
        nce = build("nce", dev)
        den.backbone.compile(dynamic=False)
        nce.compile(dynamic=False)
        categorical.compile_draws()
        steps = 32 if CUDA else 4

        def run():
            gen = torch.Generator(device=dev).manual_seed(1234)
            return generate(den, L, B, C - 1, MASK, steps, energy=nce, k=8, window=(0.0, 1.0), generator=gen,
                            energy_batch_size=B, device=dev)

        with torch.no_grad():
            run()  # compiles every shape
            t0 = time.perf_counter()
            out = run()
            sync()
            r["plain_s"] = time.perf_counter() - t0
            r["nfe"] = [out.nfe_denoiser, out.nfe_energy]
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if CUDA else [])
            with profile(activities=acts) as prof:
                run()
                sync()
        net_marks = ("nvjet", "cudnn", "sdpa", "gemm", "fused__to_copy__unsafe_view_add", "fused__unsafe_view_add_mul",
                     "native_layer_norm", "gelu", "flash")
        gpu, cpu = [], []
        for evt in prof.key_averages():
            dev_us = getattr(evt, "self_device_time_total", 0) or 0
            if dev_us and not evt.key.startswith("aten::"):
                gpu.append((dev_us / 1e3, evt.count, evt.key[:100]))
            cpu_us = getattr(evt, "self_cpu_time_total", 0) or 0
            if cpu_us:
                cpu.append((cpu_us / 1e3, evt.count, evt.key[:100]))
        gpu.sort(reverse=True)
        cpu.sort(reverse=True)
        net = sum(g[0] for g in gpu if any(m in g[2] for m in net_marks))
        r["gpu_kernel_ms_total"] = sum(g[0] for g in gpu)
        r["gpu_network_like_ms"] = net
        r["gpu_other_top"] = [g for g in gpu if not any(m in g[2] for m in net_marks)][:25]
        r["cpu_top"] = cpu[:30]
        r["syncs"] = [c for c in cpu if "Synchronize" in c[2] or "Memcpy" in c[2] or "item" in c[2]
                      or "nonzero" in c[2] or "is_nonzero" in c[2]][:12]
        categorical.compile_draws(False)

    (out / "probe.json").write_text(json.dumps(RES, indent=1, default=str))


if __name__ == "__main__":
    main()
