"""Session-7 probe (issue #7) on the GPU: inductor's freezing for the sampling networks (``compile_networks(...,
freeze=True)``): the parameters become graph constants, so an unconditioned network's σ-map and adaLN modulations
(and the DiT's padded output weight) are computed once at compile time instead of in every forward.

  PYTHONPATH=. python3 benchmarks/gpu/probe_s7.py --out $OUT/probe [--runs nce:32,dit:32] [--variants multi,frozen] [--smoke]

For the MDLM-small NCE (B = 32, 64), DiT and AR (B = 32) and the shipped NCE's shape (6 × 256, L = 128, B = 256,
host-bound), random weights, bf16: each variant compiled on its own (``torch._dynamo.reset()`` between), then
ms per synchronised call, back to back, per call again and the host's dispatch time (``probe_s5.call_timings``),
the compile time, the GPU memory the compiled network holds, and the largest output difference to the first
variant. Variants: ``multi`` (``compile_networks``' defaults), ``frozen`` (``freeze=True``), ``frozen_cpp``
(and inductor's C++ wrapper; NCE only), ``multi_again`` (the defaults once more: the run-to-run spread); not in the
default set, for NCE only: ``frozen_tma`` (every GEMM autotuned against inductor's persistent TMA Triton templates)
and ``frozen_tma_gelu_in_template`` (the same with the MLP's GELU fused into a template's epilogue, not cuBLASLt's).
Kernel profiles of the NCE at B = 32, ``multi`` and ``frozen``. ``--runs`` / ``--variants`` pick a subset (e.g. one
NCE size under several cuBLAS environment settings, one process each).
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import probe_s4  # noqa: E402
from probe_s3 import RES, kernel_profile  # noqa: E402
from probe_s4 import build, network_calls, setup  # noqa: E402
from probe_s5 import call_timings  # noqa: E402

from edlm.energy.nce_energy import NCEEnergy  # noqa: E402
from edlm.models import compiling, cublaslt  # noqa: E402
from edlm.models.compiling import INFERENCE_OPTIONS, compile_networks  # noqa: E402
from edlm.models.dit import DiTBlock  # noqa: E402

CUDA = torch.cuda.is_available()
TMA = {"max_autotune_gemm": True, "max_autotune_gemm_backends": "ATEN,TRITON", "triton.enable_persistent_tma_matmul": True}
VARIANTS = {  # name: (freeze, extra inductor options, models it runs on[, DiTBlock class switches])
    "multi": (False, {}, ("nce", "dit", "ar", "shipped_nce")),
    "frozen": (True, {}, ("nce", "dit", "ar", "ar_score", "shipped_nce")),
    "frozen_cpp": (True, {"cpp_wrapper": True}, ("nce", "shipped_nce")),
    "multi_again": (False, {}, ("nce", "dit", "ar", "shipped_nce")),
    # not run yet (session 8): every GEMM autotuned against inductor's persistent TMA Triton templates, with the MLP's
    # GELU in cuBLASLt's epilogue (fuse_gelu) or left to inductor to fuse into a template's epilogue
    "frozen_tma": (True, TMA, ("nce",)),
    "frozen_tma_gelu_in_template": (True, TMA, ("nce",), {"fuse_gelu": False}),
    # session 8: the MLP's down projection as a GEMM without bias, its bias added in the residual kernel
    "frozen_late_bias": (True, {}, ("nce", "dit", "ar", "shipped_nce"), {"late_bias": True}),
    # session 9: frozen, each no-grad call with small outputs replayed from a CUDA graph (compile_networks(...,
    # cuda_graphs=True)); the DiT's and the AR's logits are too large, so only the energies
    "frozen_graphs": (True, {}, ("nce", "ar_score", "shipped_nce")),
    # session 10: the blocks' GEMMs through edlm.models.cublaslt's tuner (DiTBlock.tuned_gemms, on by default since
    # then, so every variant above runs tuned unless it says otherwise) against torch's own GEMM calls
    "frozen_graphs_untuned": (True, {}, ("nce", "ar_score", "shipped_nce"), {"tuned_gemms": False}),
    "frozen_untuned": (True, {}, ("nce", "dit", "ar", "ar_score", "shipped_nce"), {"tuned_gemms": False}),
    # session 10: multi-kernel's first-call pick forced to the persistent version of every reduction that has one
    # (inductor sorts each multi-kernel's versions looped first, so ``multi_kernel = 3`` picks index 1)
    "frozen_graphs_persistent": (True, {"triton.multi_kernel": 3}, ("nce", "ar_score", "shipped_nce")),
    "frozen_persistent": (True, {"triton.multi_kernel": 3}, ("nce", "dit", "ar", "ar_score", "shipped_nce")),
    # session 10: multi-kernel's pick as inductor makes it (compiling.PERSISTENT_PREFERENCE = 1, before session 10)
    "frozen_graphs_fair": (True, {}, ("nce", "ar_score", "shipped_nce"), {"PERSISTENT_PREFERENCE": 1.0}),
}
GRAPHED = ("frozen_graphs", "frozen_graphs_untuned", "frozen_graphs_persistent", "frozen_graphs_fair")  # compiled with cuda_graphs=True
DEFAULT_VARIANTS = ("multi", "frozen", "frozen_cpp", "multi_again")  # call 1 of session 7
PROFILED = ("multi", "frozen", "frozen_tma", "frozen_tma_gelu_in_template", "frozen_late_bias", "frozen_graphs",
            "frozen_graphs_untuned", "frozen_graphs_persistent", "frozen_graphs_fair")  # at NCE B = 32


def shipped_nce(dev, g, batch: int = 256, seed: int = 0, scale: float = 0.02):
    """A NCE of edlm/assets/wikipedia_en's shape (tiny on CPU) with random weights (``torch.manual_seed(seed)``, std
    ``scale``), bf16 on a GPU, and its call on ``batch`` half-masked sequences drawn from ``g`` at t = 0.5."""
    vocab, length, hidden, blocks, heads = (4096, 128, 256, 6, 4) if CUDA else (512, 32, 32, 2, 2)
    torch.manual_seed(seed)
    net = NCEEnergy(vocab, length, hidden, blocks, heads, 128, dropout=0.0)
    with torch.no_grad():
        for prm in net.parameters():
            prm.copy_(torch.randn_like(prm) * scale)
    net = net.to(dev, torch.bfloat16 if CUDA else torch.float32).eval()
    x = torch.randint(0, vocab - 1, (batch, length), device=dev, generator=g)
    xt = torch.where(torch.rand(batch, length, device=dev, generator=g) < 0.5, vocab - 1, x)
    t = torch.full((batch,), 0.5, device=dev)
    return net, lambda m: m(x, xt, t)


def own_args(ap) -> None:
    ap.add_argument("--runs", default=None, help="model:batch pairs, e.g. nce:32,dit:32 (default: all five)")
    ap.add_argument("--variants", default=None, help=f"a subset of {','.join(VARIANTS)}")


def main():
    args, out = probe_s4.parse_probe_args(None, own_args)
    dev, g, section_if = setup("Z")
    b = probe_s4.B
    runs = [("nce", b), ("nce", 2 * b), ("dit", b), ("ar", b), ("shipped_nce", 256)]
    if args.runs:
        runs = [(name, int(batch)) for name, batch in (item.split(":") for item in args.runs.split(","))]
    variants = {k: VARIANTS[k] for k in (args.variants.split(",") if args.variants else DEFAULT_VARIANTS)}

    @section_if("Z_freezing")
    def _():
        r = RES.setdefault("Z_freezing", {})
        for name, batch in runs:
            ref = None
            for variant, (freeze, extra, models, *switches) in variants.items():
                if name not in models:
                    continue
                switches = dict(switches[0]) if switches else {}
                preference = switches.pop("PERSISTENT_PREFERENCE", compiling.PERSISTENT_PREFERENCE)
                saved_preference, compiling.PERSISTENT_PREFERENCE = compiling.PERSISTENT_PREFERENCE, preference
                picks_before = len(compiling.MULTI_KERNEL_PICKS)
                saved_switches = {k: getattr(DiTBlock, k) for k in switches}
                key = f"{name}_B{batch}_{variant}"
                saved_b = probe_s4.B
                try:
                    probe_s4.B = batch
                    for k, v in switches.items():
                        setattr(DiTBlock, k, v)
                    torch._dynamo.reset()
                    if name == "shipped_nce":
                        net, call = shipped_nce(dev, torch.Generator(device=dev).manual_seed(1))
                    else:
                        net = build("ar" if name == "ar_score" else name, dev)
                        call = network_calls(dev, torch.Generator(device=dev).manual_seed(1))[name]
                    if CUDA:  # the previous variant's network freed first (call 1 read this before it was)
                        gc.collect()
                        torch.cuda.synchronize()
                        held = torch.cuda.memory_allocated()
                    with torch.no_grad():
                        compile_networks(net, options={**INFERENCE_OPTIONS, **extra}, freeze=freeze,
                                         cuda_graphs=variant in GRAPHED)
                        t0 = time.time()
                        res = call(net).float().nan_to_num(0.0, posinf=0.0, neginf=0.0)  # AR: [MASK] is −∞
                        r[key + "_compile_s"] = time.time() - t0
                        if CUDA:
                            r[key + "_extra_mem_mib"] = (torch.cuda.memory_allocated() - held) / 2**20
                        ref = res if ref is None else ref
                        r[key + "_max_diff"] = float((res - ref).abs().max())

                        def fn(net=net, call=call):
                            return call(net)

                        r.update(call_timings(key, fn))
                        if CUDA and name == "nce" and batch == b and variant in PROFILED:
                            r[key + "_profile"] = kernel_profile(fn, top=12)
                except Exception as exc:  # noqa: BLE001
                    r[key + "_error"] = f"{type(exc).__name__}: {exc}"[:400]
                finally:
                    r[key + "_multi_kernel_picks"] = compiling.MULTI_KERNEL_PICKS[picks_before:]
                    compiling.PERSISTENT_PREFERENCE = saved_preference
                    probe_s4.B = saved_b
                    for k, v in saved_switches.items():
                        setattr(DiTBlock, k, v)
                    net = call = fn = None  # noqa: F841  (so that the next variant's memory reading starts clean)
                print(key, {k: v for k, v in r.items() if k.startswith(key) and not k.endswith("profile")}, flush=True)
                (out / "probe.json").write_text(json.dumps(RES, indent=1, default=str))  # kept if the call times out

    RES["tuned_gemm_picks"] = cublaslt.picks()
    (out / "probe.json").write_text(json.dumps(RES, indent=1, default=str))


if __name__ == "__main__":
    main()
